//! The command line's commands besides `up`: each one a call to a running node's admin API.

use bytes::Bytes;
use clap::Subcommand;

use crate::admin_client::{AdminArgs, AdminClient};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Give a device a fresh MQTT password now (the ON-DEMAND strategy): the old one
    /// stops working at the broker, the SIM gets the new one with its next request.
    Rotate {
        #[arg(long)]
        account: String,
        #[arg(long)]
        device: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub async fn device(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Rotate {
            account,
            device,
            admin,
        } => {
            let path = format!("/v3/accounts/{account}/devices/{device}/rotate");
            let (status, body) = AdminClient::new(&admin)?
                .request("POST", &path, Bytes::new())
                .await?;
            if !status.is_success() {
                anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
            }
            println!("rotated the password of device {device} in account {account}");
            Ok(())
        }
    }
}
