//! The sim-function world's imports and the replies shared by the SIM-port components.

use serde_json::value::RawValue;
use spin_sdk::http::StatusCode;

use crate::expiration::Expiration;
use crate::http::{Reply, reply};
use crate::json;
use crate::sim_request::{Caller, Refusal};

spin_sdk::wit_bindgen::generate!({
    runtime_path: "spin_sdk::wit_bindgen::rt",
    path: "../../wit",
    world: "psk-edge:platform/sim-function",
});

pub use psk_edge::platform::log::{self, Level};
pub use psk_edge::platform::registry::{self, Sim};
pub use psk_edge::platform::types::{Credentials, Error};

impl From<psk_edge::platform::types::Expiration> for Expiration {
    fn from(e: psk_edge::platform::types::Expiration) -> Self {
        use psk_edge::platform::types::Expiration as Wit;
        match e {
            Wit::OnDemand => Expiration::OnDemand,
            Wit::AtEveryRequest => Expiration::AtEveryRequest,
            Wit::AfterXRequests(n) => Expiration::AfterXRequests(n),
            Wit::TimeBased(n) => Expiration::TimeBased(n),
        }
    }
}

impl Sim {
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            iccid: &self.iccid,
            identity_hex: self.identity_hex.as_deref(),
        }
    }
}

/// 200 with `{"cli":…,"usr":…,"pwd":…}`.
pub fn credentials_reply(c: &Credentials) -> Reply {
    credentials_config_reply(c, None)
}

/// 200 with `{"cli":…,"usr":…,"pwd":…[,"config":{"NAME":value}]}`.
pub fn credentials_config_reply(c: &Credentials, config: Option<(&str, &RawValue)>) -> Reply {
    reply(
        StatusCode::OK,
        json::CONTENT_TYPE,
        json::credentials_with_config(&c.client_id, &c.username, &c.password, config),
    )
}

/// 404 with the refusal's code, logged: the SIM contract answers every error the
/// same way, so the log is where an operator sees why.
pub fn refuse(function: &str, device_id: Option<&str>, refusal: Refusal) -> Reply {
    let level = if refusal.is_warning() {
        Level::Warn
    } else {
        Level::Info
    };
    // Only an id that passed the name rule is echoed: anything else is caller bytes.
    let message = match device_id {
        Some(id) => format!("{function} refused device {id}: {}", refusal.code()),
        None => format!("{function} refused: {}", refusal.code()),
    };
    log::write(level, &message);
    reply(StatusCode::NOT_FOUND, json::CONTENT_TYPE, refusal.body())
}

/// The registry's error as a SIM sees it. `not-found` and `foreign` read the same
/// to a SIM asking for credentials, so nobody learns which ids another SIM uses.
pub fn refusal_for(error: Error) -> Refusal {
    match error {
        Error::NotFound | Error::Foreign => Refusal::UnknownDevice,
        Error::Conflict => Refusal::DeviceTaken,
        Error::Invalid => Refusal::BadName,
        Error::Denied => Refusal::Denied,
        Error::Unavailable => Refusal::Unavailable,
    }
}

/// [`refuse`] for a registry error: the log keeps the registry's own word, which the
/// SIM's code may blur (a `foreign` device is `unknown_device` on the wire).
pub fn refuse_registry(function: &str, device_id: &str, error: Error, refusal: Refusal) -> Reply {
    let (level, cause) = match error {
        Error::NotFound => (Level::Info, "not-found"),
        Error::Foreign => (Level::Warn, "foreign"),
        Error::Conflict => (Level::Info, "conflict"),
        Error::Invalid => (Level::Info, "invalid"),
        Error::Denied => (Level::Warn, "denied"),
        Error::Unavailable => (Level::Error, "unavailable"),
    };
    let code = refusal.code();
    log::write(
        level,
        &format!("{function} refused device {device_id}: {code} (registry: {cause})"),
    );
    reply(StatusCode::NOT_FOUND, json::CONTENT_TYPE, refusal.body())
}
