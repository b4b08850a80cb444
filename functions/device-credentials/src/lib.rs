//! device-credentials: `GET /v1/dev/{DEVICE_ID}?iccid=…[&config=…]` returns the device's MQTT credentials to its SIM.

use common::expiration::should_rotate;
use common::sim::{self, Error, Level, log, registry};
use common::sim_request::{Action, Refusal, device_request};
use common::value;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

const FUNCTION: &str = "device-credentials";
/// How often to decide again when other answers for the same device keep coming first.
const CLAIM_ATTEMPTS: usize = 32;

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let sim = registry::current_sim();
    let uri = req.uri();
    let target = match device_request(uri.path(), uri.query(), sim.caller(), Action::Fetch) {
        Ok(target) => target,
        Err(refusal) => return sim::refuse(FUNCTION, None, refusal),
    };
    let id = target.device_id;
    let mut device = match registry::device(id) {
        Ok(device) => device,
        Err(e) => return sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
    };
    // The property comes first: a request for one that does not exist must neither
    // count as a credential answer nor rotate the password.
    let config_text = match target.config {
        None => None,
        Some(name) => match registry::config(id, name) {
            Ok(text) => Some((name, text)),
            Err(e @ Error::NotFound) => {
                return sim::refuse_registry(FUNCTION, id, e, Refusal::UnknownConfig);
            }
            Err(e) => return sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
        },
    };
    let config = match &config_text {
        None => None,
        Some((name, text)) => match value::embed(text) {
            Some(raw) => Some((*name, raw)),
            // The host stores what the admin API checked; anything else is a broken
            // store, and a broken body must not reach the SIM.
            None => {
                log::write(
                    Level::Error,
                    &format!("{FUNCTION}: config {name} of device {id} is not JSON"),
                );
                return sim::refuse(FUNCTION, Some(id), Refusal::Unavailable);
            }
        },
    };
    let mut attempt = 1;
    loop {
        let rotate = should_rotate(device.expiration.into(), device.served, device.password_age);
        match registry::serve_credentials(id, rotate) {
            Ok(credentials) => return sim::credentials_config_reply(&credentials, config),
            // Another answer for this device (maybe on another node) was counted since
            // `device` read it: decide again on what it is now.
            Err(Error::Conflict) if attempt < CLAIM_ATTEMPTS => {
                attempt += 1;
                device = match registry::device(id) {
                    Ok(device) => device,
                    Err(e) => return sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
                };
            }
            Err(e) => return sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
        }
    }
}
