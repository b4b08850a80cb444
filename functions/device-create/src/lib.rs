//! device-create: `POST /v1/dev/{DEVICE_ID}?iccid=…[&profile=…]` creates a device for the calling SIM.

use common::sim::{self, Error, registry};
use common::sim_request::{Action, Refusal, device_request};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

const FUNCTION: &str = "device-create";

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let sim = registry::current_sim();
    let uri = req.uri();
    // The raw path rather than the spin-path-match-device-id header: the name rule is
    // defined on the bytes as sent, and the URI is what carries them undecoded.
    let target = match device_request(uri.path(), uri.query(), sim.caller(), Action::Create) {
        Ok(target) => target,
        Err(refusal) => return sim::refuse(FUNCTION, None, refusal),
    };
    let id = target.device_id;
    match registry::create_device(id, target.profile) {
        Ok(credentials) => sim::credentials_reply(&credentials),
        Err(e @ Error::NotFound) => sim::refuse_registry(FUNCTION, id, e, Refusal::UnknownProfile),
        // Already there: the same SIM retrying after a lost response gets the device
        // it created, as it is now. Not through serve-credentials: a repeated POST is
        // not a credential GET, so it neither counts nor rotates.
        Err(Error::Conflict) => match registry::device(id) {
            Ok(device) => sim::credentials_reply(&device.credentials),
            Err(e @ Error::Foreign) => sim::refuse_registry(FUNCTION, id, e, Refusal::DeviceTaken),
            Err(e) => sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
        },
        Err(e @ Error::Foreign) => sim::refuse_registry(FUNCTION, id, e, Refusal::DeviceTaken),
        // The registry denies a creation only when it would exceed a device quota.
        Err(e @ Error::Denied) => sim::refuse_registry(FUNCTION, id, e, Refusal::QuotaDevices),
        Err(e) => sim::refuse_registry(FUNCTION, id, e, sim::refusal_for(e)),
    }
}
