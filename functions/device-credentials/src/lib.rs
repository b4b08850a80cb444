//! device-credentials: `GET /v1/dev/{DEVICE_ID}?iccid=…` returns the device's MQTT credentials to its SIM.

use common::sim::{self, registry};
use common::sim_request::{Action, Refusal, device_request};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

const FUNCTION: &str = "device-credentials";

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let sim = registry::current_sim();
    let uri = req.uri();
    let target = match device_request(uri.path(), uri.query(), sim.caller(), Action::Fetch) {
        Ok(target) => target,
        Err(refusal) => return sim::refuse(FUNCTION, None, refusal),
    };
    let id = target.device_id;
    // No config properties exist yet, so any one named is unknown; checked before the
    // registry so such a request reveals nothing about the device.
    if target.config.is_some() {
        return sim::refuse(FUNCTION, Some(id), Refusal::UnknownConfig);
    }
    match registry::device_credentials(id) {
        Ok(credentials) => sim::credentials_reply(&credentials),
        Err(e) => sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
    }
}
