//! device-data: `POST /v1/dev/{DEVICE_ID}/data?iccid=…` (or Pod Group's `POST /v1/data/{DEVICE_ID}?iccid=…`) publishes the SIM's JSON on its device's sensor topic.

use common::http::reply;
use common::sim::{self, Error, Level, log, registry};
use common::sim_request::{Action, Refusal, device_request};
use common::value;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::http_service;

const FUNCTION: &str = "device-data";

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let sim = registry::current_sim();
    let uri = req.uri();
    let target = match device_request(uri.path(), uri.query(), sim.caller(), Action::Data) {
        Ok(target) => target,
        Err(refusal) => return sim::refuse(FUNCTION, None, refusal),
    };
    // Owned before the request is consumed for its body.
    let id = target.device_id.to_owned();
    let body = match req.into_body().bytes().await {
        Ok(body) => body,
        Err(e) => {
            log::write(
                Level::Warn,
                &format!("{FUNCTION}: body of device {id} unreadable: {e:?}"),
            );
            return sim::refuse(FUNCTION, Some(&id), Refusal::BadBody);
        }
    };
    // Checked before the registry is asked, so a malformed body learns nothing about
    // the device. The payload is published exactly as sent, whitespace and all.
    if !value::is_json(&body) {
        return sim::refuse(FUNCTION, Some(&id), Refusal::BadBody);
    }
    match registry::publish_data(&id, &body) {
        Ok(()) => reply(StatusCode::OK, "text/plain", "1"),
        Err(e @ (Error::NotFound | Error::Foreign)) => {
            sim::refuse_registry(FUNCTION, &id, e, Refusal::UnknownDevice)
        }
        Err(e) => sim::refuse_registry(FUNCTION, &id, e, sim::refusal_for(e)),
    }
}
