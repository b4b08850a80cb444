//! The command line's commands besides `up`: each one a call to a running node's admin API.

use bytes::Bytes;
use clap::Subcommand;

use crate::admin_client::{AdminArgs, AdminClient};

/// Names go into the URL path as they are: one outside the name rule (a `?`, a `/`)
/// would address something else, so it is refused before anything is sent.
fn path_name(s: &str) -> Result<String, String> {
    if wire::identity::is_name(s) {
        Ok(s.to_owned())
    } else {
        Err("not a name: 1 to 64 of A-Z a-z 0-9 . _ -".to_owned())
    }
}

/// `psk-edge device`: acts on one device of an account.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Give a device a fresh MQTT password now (the ON-DEMAND strategy): the old one
    /// stops working at the broker, the SIM gets the new one with its next request.
    Rotate {
        /// The device's account.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// The device's id.
        #[arg(long, value_parser = path_name)]
        device: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a device and its config: its MQTT credentials stop working at the broker
    /// and its live sessions are disconnected.
    Delete {
        /// The device's account.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// The device's id.
        #[arg(long, value_parser = path_name)]
        device: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `psk-edge app`: an account's applications and their MQTT credentials.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an application's MQTT credentials (it may subscribe to the account's
    /// `{account}/#` and publish to `{account}/command/#`); the password is shown once.
    Create {
        /// The application's account.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// [A-Za-z0-9._-]{1,64}, unique within the account.
        #[arg(long, value_parser = path_name)]
        name: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List an account's applications and when each was created.
    List {
        /// The account whose applications to list.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke an application's credentials now; its live sessions are disconnected.
    Delete {
        /// The application's account.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// The application's name.
        #[arg(long, value_parser = path_name)]
        name: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `psk-edge function`: an account's own functions for its SIM routes.
#[derive(Debug, Subcommand)]
pub enum FunctionCommand {
    /// Upload a component for one of an account's SIM routes and (unless
    /// --no-activate) serve it from the next request on.
    Deploy {
        /// The account whose route the function serves.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// device-create, device-credentials or device-data.
        #[arg(long, value_parser = path_name)]
        route: String,
        /// Store the version without serving it.
        #[arg(long)]
        no_activate: bool,
        /// The component (.wasm).
        file: std::path::PathBuf,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Serve a stored version (a rollback is activating an earlier one).
    Activate {
        /// The route's account.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// device-create, device-credentials or device-data.
        #[arg(long, value_parser = path_name)]
        route: String,
        /// The version to serve: its hex SHA-256, as `function list` shows it.
        #[arg(long)]
        version: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List a route's versions and the active one.
    List {
        /// The route's account.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// device-create, device-credentials or device-data.
        #[arg(long, value_parser = path_name)]
        route: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `psk-edge account`: accounts and their tenant keys.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account (idempotent).
    Create {
        /// The account's id.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create a tenant API key for an account; the secret is shown once.
    Key {
        /// The account the key acts for.
        #[arg(long, value_parser = path_name)]
        account: String,
        /// How to reach the node.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Sends one request and prints the JSON answer; a non-2xx status is an error.
async fn call(admin: &AdminArgs, method: &str, path: &str, body: Bytes) -> anyhow::Result<()> {
    let (status, answer) = AdminClient::new(admin)?.request(method, path, body).await?;
    let text = String::from_utf8_lossy(&answer);
    if !status.is_success() {
        anyhow::bail!("{status}: {}", text.trim());
    }
    println!("{}", text.trim());
    Ok(())
}

/// A call whose answer says only that it was done: `done` is printed instead.
async fn act(admin: &AdminArgs, method: &str, path: &str, done: String) -> anyhow::Result<()> {
    let (status, body) = AdminClient::new(admin)?
        .request(method, path, Bytes::new())
        .await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
    }
    println!("{done}");
    Ok(())
}

/// Runs a `function` command against the node's admin API.
pub async fn function(command: FunctionCommand) -> anyhow::Result<()> {
    match command {
        FunctionCommand::Deploy {
            account,
            route,
            no_activate,
            file,
            admin,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let query = if no_activate { "?activate=false" } else { "" };
            let path = format!("/v3/accounts/{account}/functions/{route}{query}");
            call(&admin, "PUT", &path, bytes.into()).await
        }
        FunctionCommand::Activate {
            account,
            route,
            version,
            admin,
        } => {
            let body = serde_json::json!({ "version": version }).to_string();
            let path = format!("/v3/accounts/{account}/functions/{route}/activate");
            call(&admin, "POST", &path, body.into()).await
        }
        FunctionCommand::List {
            account,
            route,
            admin,
        } => {
            call(
                &admin,
                "GET",
                &format!("/v3/accounts/{account}/functions/{route}"),
                Bytes::new(),
            )
            .await
        }
    }
}

/// Runs an `account` command against the node's admin API.
pub async fn account(command: AccountCommand) -> anyhow::Result<()> {
    match command {
        AccountCommand::Create { account, admin } => {
            let body = serde_json::json!({ "accountId": account }).to_string();
            call(&admin, "POST", "/v3/accounts", body.into()).await
        }
        AccountCommand::Key { account, admin } => {
            call(
                &admin,
                "POST",
                &format!("/v3/accounts/{account}/keys"),
                Bytes::new(),
            )
            .await
        }
    }
}

/// Runs a `device` command against the node's admin API.
pub async fn device(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Rotate {
            account,
            device,
            admin,
        } => {
            act(
                &admin,
                "POST",
                &format!("/v3/accounts/{account}/devices/{device}/rotate"),
                format!("rotated the password of device {device} in account {account}"),
            )
            .await
        }
        DeviceCommand::Delete {
            account,
            device,
            admin,
        } => {
            act(
                &admin,
                "DELETE",
                &format!("/v3/accounts/{account}/devices/{device}"),
                format!("deleted device {device} in account {account}"),
            )
            .await
        }
    }
}

/// Runs an `app` command against the node's admin API.
pub async fn app(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Create {
            account,
            name,
            admin,
        } => {
            let body = serde_json::json!({ "name": name }).to_string();
            call(
                &admin,
                "POST",
                &format!("/v3/accounts/{account}/apps"),
                body.into(),
            )
            .await?;
            // Only after a 201: a refusal printed no password to warn about.
            eprintln!("the password is shown this once: store it now");
            Ok(())
        }
        AppCommand::List { account, admin } => {
            call(
                &admin,
                "GET",
                &format!("/v3/accounts/{account}/apps"),
                Bytes::new(),
            )
            .await
        }
        AppCommand::Delete {
            account,
            name,
            admin,
        } => {
            act(
                &admin,
                "DELETE",
                &format!("/v3/accounts/{account}/apps/{name}"),
                format!("deleted app {name} in account {account}"),
            )
            .await
        }
    }
}
