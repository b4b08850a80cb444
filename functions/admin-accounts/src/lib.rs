//! admin-accounts: an account's expiration strategy, profiles, device config, rotation and deletion, and application credentials (`/v3/accounts/…`).
//!
//! The host has already authenticated the caller and checks, per call, that it may act
//! on the account. JSON in and out; every refusal is a status with `{"error":"reason"}`.
//! An application's password leaves only in the answer that created it, never in a log.

use common::admin::{self, Bad, Route, RouteError};
use common::expiration::{self, Expiration};
use common::http::{Reply, method_not_allowed, reply};
use common::json;
use common::profile::{self, Profile};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::http_service;

spin_sdk::wit_bindgen::generate!({
    runtime_path: "spin_sdk::wit_bindgen::rt",
    path: "../../wit",
    world: "psk-edge:platform/admin-function",
});

use psk_edge::platform::accounts_admin;
use psk_edge::platform::log::{self, Level};
use psk_edge::platform::types::{Error, Expiration as WitExpiration};

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let method = req.method().as_str().to_owned();
    // The raw path: names are matched as sent, never percent-decoded.
    let path = req.uri().path().to_owned();
    let route = match admin::route(&method, &path) {
        Ok(route) => route,
        Err(RouteError::NotFound) => return error(StatusCode::NOT_FOUND, "not-found"),
        Err(RouteError::Method(allow)) => {
            return method_not_allowed(
                allow,
                admin::CONTENT_TYPE,
                admin::error_body("method-not-allowed"),
            );
        }
        Err(RouteError::Bad(bad)) => return refuse("request", bad),
    };
    let body = match route {
        Route::PutExpiration { .. }
        | Route::PutProfile { .. }
        | Route::PutConfig { .. }
        | Route::CreateApp { .. } => match req.into_body().bytes().await {
            Ok(body) => body,
            Err(e) => {
                log::write(
                    Level::Warn,
                    &format!("{method} {path}: body unreadable: {e:?}"),
                );
                return refuse("request", Bad::new("body", "unreadable"));
            }
        },
        // Nothing else reads a body: whatever was sent is ignored.
        _ => Default::default(),
    };
    match route {
        Route::GetExpiration { account } => get_expiration(account),
        Route::PutExpiration { account } => put_expiration(account, &body),
        Route::ListProfiles { account } => list_profiles(account),
        Route::PutProfile { account, profile } => put_profile(account, profile, &body),
        Route::ListConfig { account, device } => list_config(account, device),
        Route::PutConfig {
            account,
            device,
            name,
        } => put_config(account, device, name, &body),
        Route::DeleteConfig {
            account,
            device,
            name,
        } => delete_config(account, device, name),
        Route::Rotate { account, device } => rotate(account, device),
        Route::DeleteDevice { account, device } => delete_device(account, device),
        Route::CreateApp { account } => create_app(account, &body),
        Route::ListApps { account } => list_apps(account),
        Route::DeleteApp { account, name } => delete_app(account, name),
    }
}

fn ok(body: String) -> Reply {
    reply(StatusCode::OK, admin::CONTENT_TYPE, body)
}

fn error(status: StatusCode, reason: &str) -> Reply {
    reply(status, admin::CONTENT_TYPE, admin::error_body(reason))
}

/// 400 for input that breaks the contract; the reason names the field, never its value.
fn refuse(what: &str, bad: Bad) -> Reply {
    log::write(Level::Info, &format!("{what} refused: {bad}"));
    error(StatusCode::BAD_REQUEST, &bad.to_string())
}

/// The host's refusal as a status. `foreign` concerns a SIM's own devices and means
/// nothing to an operator: outside the caller's reach is not found.
fn failed(what: &str, e: Error) -> Reply {
    let (status, reason, level) = match e {
        Error::NotFound => (StatusCode::NOT_FOUND, "not-found", Level::Info),
        Error::Foreign => (StatusCode::NOT_FOUND, "not-found", Level::Warn),
        Error::Conflict => (StatusCode::CONFLICT, "conflict", Level::Info),
        Error::Invalid => (StatusCode::BAD_REQUEST, "invalid", Level::Info),
        Error::Denied => (StatusCode::FORBIDDEN, "denied", Level::Warn),
        Error::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Level::Error),
    };
    log::write(level, &format!("{what} failed: {reason}"));
    error(status, reason)
}

/// A stored value that is not JSON: the store is broken, and a broken body must not go out.
fn corrupt(what: &str, property: &str) -> Reply {
    log::write(
        Level::Error,
        &format!("{what}: stored config {property} is not JSON"),
    );
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
}

fn from_wit(e: WitExpiration) -> Expiration {
    match e {
        WitExpiration::OnDemand => Expiration::OnDemand,
        WitExpiration::AtEveryRequest => Expiration::AtEveryRequest,
        WitExpiration::AfterXRequests(n) => Expiration::AfterXRequests(n),
        WitExpiration::TimeBased(n) => Expiration::TimeBased(n),
    }
}

fn to_wit(e: Expiration) -> WitExpiration {
    match e {
        Expiration::OnDemand => WitExpiration::OnDemand,
        Expiration::AtEveryRequest => WitExpiration::AtEveryRequest,
        Expiration::AfterXRequests(n) => WitExpiration::AfterXRequests(n),
        Expiration::TimeBased(n) => WitExpiration::TimeBased(n),
    }
}

fn get_expiration(account: &str) -> Reply {
    match accounts_admin::get_expiration(account) {
        Ok(e) => ok(expiration::to_json(from_wit(e))),
        Err(e) => failed(&format!("account {account}: get expiration"), e),
    }
}

fn put_expiration(account: &str, body: &[u8]) -> Reply {
    let what = format!("account {account}: set expiration");
    let strategy = match expiration::parse(body, "") {
        Ok(strategy) => strategy,
        Err(bad) => return refuse(&what, bad),
    };
    match accounts_admin::set_expiration(account, to_wit(strategy)) {
        Ok(()) => {
            let json = expiration::to_json(strategy);
            log::write(
                Level::Info,
                &format!("account {account}: expiration set to {json}"),
            );
            ok(json)
        }
        Err(e) => failed(&what, e),
    }
}

fn list_profiles(account: &str) -> Reply {
    let what = format!("account {account}: list profiles");
    let stored = match accounts_admin::list_profiles(account) {
        Ok(stored) => stored,
        Err(e) => return failed(&what, e),
    };
    let profiles: Vec<Profile> = stored
        .into_iter()
        .map(|p| Profile {
            name: p.name,
            publish: p.publish,
            subscribe: p.subscribe,
            config: p.config,
            expiration: p.expiration.map(from_wit),
        })
        .collect();
    match profile::list_json(&profiles) {
        Ok(json) => ok(json),
        Err((name, property)) => corrupt(&what, &format!("{property} of profile {name}")),
    }
}

fn put_profile(account: &str, name: &str, body: &[u8]) -> Reply {
    let what = format!("account {account}: put profile {name}");
    let p = match profile::parse(name, body) {
        Ok(p) => p,
        Err(bad) => return refuse(&what, bad),
    };
    let stored = accounts_admin::Profile {
        name: p.name.clone(),
        publish: p.publish.clone(),
        subscribe: p.subscribe.clone(),
        config: p.config.clone(),
        expiration: p.expiration.map(to_wit),
    };
    if let Err(e) = accounts_admin::put_profile(account, &stored) {
        return failed(&what, e);
    }
    let strategy = p.expiration.map_or("the account's", |e| e.name());
    log::write(
        Level::Info,
        &format!(
            "account {account}: profile {name} stored ({} publish, {} subscribe, {} config, expiration {strategy})",
            p.publish.len(),
            p.subscribe.len(),
            p.config.len(),
        ),
    );
    match profile::to_json(&p) {
        Ok(json) => ok(json),
        Err(property) => corrupt(&what, property),
    }
}

fn list_config(account: &str, device: &str) -> Reply {
    let what = format!("account {account} device {device}: list config");
    match accounts_admin::list_config(account, device) {
        Ok(pairs) => match admin::config_list_json(&pairs) {
            Ok(json) => ok(json),
            Err(property) => corrupt(&what, property),
        },
        Err(e) => failed(&what, e),
    }
}

fn put_config(account: &str, device: &str, name: &str, body: &[u8]) -> Reply {
    let what = format!("account {account} device {device}: set config {name}");
    let text = match admin::config_value(body, "body") {
        Ok(text) => text,
        Err(bad) => return refuse(&what, bad),
    };
    if let Err(e) = accounts_admin::set_config(account, device, name, &text) {
        return failed(&what, e);
    }
    log::write(
        Level::Info,
        &format!(
            "account {account} device {device}: config {name} set ({} bytes)",
            text.len()
        ),
    );
    match admin::config_set_json(name, &text) {
        Some(json) => ok(json),
        None => corrupt(&what, name),
    }
}

fn delete_config(account: &str, device: &str, name: &str) -> Reply {
    let what = format!("account {account} device {device}: delete config {name}");
    match accounts_admin::delete_config(account, device, name) {
        Ok(()) => {
            log::write(
                Level::Info,
                &format!("account {account} device {device}: config {name} deleted"),
            );
            ok(admin::config_deleted_json(name))
        }
        Err(e) => failed(&what, e),
    }
}

fn rotate(account: &str, device: &str) -> Reply {
    let what = format!("account {account} device {device}: rotate password");
    match accounts_admin::rotate_password(account, device) {
        Ok(()) => {
            log::write(
                Level::Info,
                &format!("account {account} device {device}: password rotated"),
            );
            ok(r#"{"rotated":true}"#.to_owned())
        }
        Err(e) => failed(&what, e),
    }
}

/// The answer of a delete that removed a device or an application.
const DELETED: &str = r#"{"deleted":true}"#;

fn delete_device(account: &str, device: &str) -> Reply {
    let what = format!("account {account} device {device}: delete");
    match accounts_admin::delete_device(account, device) {
        Ok(()) => {
            log::write(
                Level::Info,
                &format!("account {account} device {device}: deleted"),
            );
            ok(DELETED.to_owned())
        }
        Err(e) => failed(&what, e),
    }
}

fn create_app(account: &str, body: &[u8]) -> Reply {
    let what = format!("account {account}: create app");
    let name = match admin::app_name(body) {
        Ok(name) => name,
        Err(bad) => return refuse(&what, bad),
    };
    let what = format!("account {account}: create app {name}");
    match accounts_admin::create_app(account, &name) {
        Ok(c) => {
            log::write(
                Level::Info,
                &format!("account {account}: app {name} created"),
            );
            // The SIM's credential body, so an application reads the same fields.
            reply(
                StatusCode::CREATED,
                admin::CONTENT_TYPE,
                json::credentials(&c.client_id, &c.username, &c.password),
            )
        }
        // The name is the conflict here, so the answer says so rather than `conflict`.
        Err(Error::Conflict) => {
            log::write(Level::Info, &format!("{what} failed: exists"));
            error(StatusCode::CONFLICT, "exists")
        }
        Err(e) => failed(&what, e),
    }
}

fn list_apps(account: &str) -> Reply {
    match accounts_admin::list_apps(account) {
        Ok(apps) => {
            let apps: Vec<(String, u64)> = apps
                .into_iter()
                .map(|app| (app.name, app.created_at))
                .collect();
            ok(admin::apps_json(&apps))
        }
        Err(e) => failed(&format!("account {account}: list apps"), e),
    }
}

fn delete_app(account: &str, name: &str) -> Reply {
    let what = format!("account {account}: delete app {name}");
    match accounts_admin::delete_app(account, name) {
        Ok(()) => {
            log::write(
                Level::Info,
                &format!("account {account}: app {name} deleted"),
            );
            ok(DELETED.to_owned())
        }
        Err(e) => failed(&what, e),
    }
}
