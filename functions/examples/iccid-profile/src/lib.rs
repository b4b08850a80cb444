//! iccid-profile: a tenant's `POST /v1/dev/{DEVICE_ID}?iccid=…` that picks the device profile from the SIM's ICCID.
//!
//! How psk-edge runs this: a SIM opens a TLS 1.3 PSK connection (its ICCID is the
//! PSK identity) and sends a tiny HTTP request. The host has already checked the
//! handshake, framed the request and found the SIM's account when it calls this
//! component's HTTP handler, once per request, in a fresh sandbox. Everything the
//! component may do to the platform goes through the `registry` import, which the
//! host scopes to that SIM and its account: there is no way to name another one.
//!
//! This one replaces the platform's device creation for one account: UK SIMs
//! (ICCIDs `8944…`) get the account's `uk-meter` profile, German ones (`8949…`)
//! `de-meter`, every other SIM the account's default; the answer says which, in a
//! `site` field next to the MQTT credentials the SIM expects.
//!
//! The SIM contract to keep (it is what the SIMs' applets understand):
//! - success is `200` with `{"cli":…,"usr":…,"pwd":…}` (extra fields are fine);
//! - every error is `404`, optionally with a short `{"err":"…"}`;
//! - the whole response, status line and headers included, fits in 250 bytes, or
//!   the host does not send it at all.

use serde::Serialize;
use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::http_service;

// Bindings for the platform's WIT (`wit/platform.wit` in the psk-edge repository).
// `sim-function` is the world a SIM-port function may import: `registry` and `log`.
// Copying this example elsewhere? Copy `platform.wit` too and change `path`.
spin_sdk::wit_bindgen::generate!({
    runtime_path: "spin_sdk::wit_bindgen::rt",
    path: "../../../wit",
    world: "psk-edge:platform/sim-function",
});

use psk_edge::platform::log::{self, Level};
use psk_edge::platform::registry::{self, Sim};
use psk_edge::platform::types::{Credentials, Error};

/// ICCID prefixes and the profile a device of such a SIM is created from. An ICCID
/// starts with `89` (telecommunications) and the country calling code, so the first
/// four digits say where the SIM was issued. The profiles themselves (topics, config,
/// password expiration) are the account's, created through the admin API.
const PROFILES_BY_PREFIX: &[(&str, &str)] = &[("8944", "uk-meter"), ("8949", "de-meter")];

/// What `site` says for a device created from the account's default profile.
const DEFAULT_SITE: &str = "default";

/// The profile for a SIM, or `None` for the account's default.
pub fn profile_for(iccid: &str) -> Option<&'static str> {
    PROFILES_BY_PREFIX
        .iter()
        .find(|(prefix, _)| iccid.starts_with(prefix))
        .map(|(_, profile)| *profile)
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    // The SIM the TLS handshake authenticated: its ICCID is known to be genuine,
    // unlike anything in the request line.
    let sim = registry::current_sim();
    let uri = req.uri();

    let Some(device_id) = device_id(uri.path()) else {
        return refuse("bad_name");
    };
    // The contract says `iccid=` must name the SIM itself; a request naming another
    // SIM is refused, even though the registry would only ever act for this one.
    if !iccid_names_sim(uri.query(), &sim) {
        return refuse("iccid_mismatch");
    }

    // Decided on the authenticated ICCID, never on the query string: a SIM cannot
    // talk its way into another country's profile. Any `&profile=` is ignored.
    let profile = profile_for(&sim.iccid);

    match registry::create_device(device_id, profile) {
        Ok(credentials) => answer(&credentials, profile),
        // The profile does not exist in the account: the operator has not created it.
        Err(Error::NotFound) => refuse("unknown_profile"),
        // The id is taken. Usually this is the same SIM retrying after its answer was
        // lost on a bad radio link: give it the device it already created.
        Err(Error::Conflict) => match registry::device(device_id) {
            Ok(device) => answer(&device.credentials, device.profile.as_deref()),
            // Another SIM of the account created it.
            Err(Error::Foreign) => refuse("device_taken"),
            Err(e) => refuse(code(e)),
        },
        Err(e) => refuse(code(e)),
    }
}

/// The success body. Field order is the order on the wire.
#[derive(Serialize)]
struct Answer<'a> {
    cli: &'a str,
    usr: &'a str,
    pwd: &'a str,
    /// Ours, not the platform's: SIM firmware that does not know it ignores it.
    site: &'a str,
}

/// `200 {"cli":…,"usr":…,"pwd":…,"site":…}`. With the headers that is 172 bytes plus
/// the profile name for the platform's 20/20/24-character credentials: any name the
/// platform allows (64 characters at most) fits in 250, but not much else would.
fn answer(
    credentials: &Credentials,
    profile: Option<&str>,
) -> http::Result<http::Response<String>> {
    let body = Answer {
        cli: &credentials.client_id,
        usr: &credentials.username,
        pwd: &credentials.password,
        site: profile.unwrap_or(DEFAULT_SITE),
    };
    match serde_json::to_string(&body) {
        Ok(json) => respond(StatusCode::OK, json),
        Err(_) => refuse("internal"),
    }
}

/// `404 {"err":"code"}`: the SIM contract's only error status. The reason goes to the
/// host's log too (tagged with the account and this function); never log secrets.
fn refuse(code: &str) -> http::Result<http::Response<String>> {
    log::write(Level::Info, &format!("iccid-profile refused: {code}"));
    respond(StatusCode::NOT_FOUND, format!("{{\"err\":\"{code}\"}}"))
}

/// Only `Content-Type`: the host adds `Content-Length`, and every other header would
/// cost bytes of the 250.
fn respond(status: StatusCode, json: String) -> http::Result<http::Response<String>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(json)
}

/// The SIM-facing error code for what the registry said.
fn code(error: Error) -> &'static str {
    match error {
        // One answer for both, so a SIM cannot find out which ids other SIMs use.
        Error::NotFound | Error::Foreign => "unknown_device",
        Error::Conflict => "device_taken",
        Error::Invalid => "bad_name",
        Error::Denied => "denied",
        Error::Unavailable => "unavailable",
    }
}

/// `{DEVICE_ID}` from `/v1/dev/{DEVICE_ID}`, if it follows the platform's name rule
/// `[A-Za-z0-9._-]{1,64}`. The path is raw (not percent-decoded): one name, one spelling.
fn device_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/v1/dev/")?;
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then_some(id)
}

/// Whether the query has exactly one `iccid=` and it names this SIM: its ICCID
/// digits, or, for a SIM that authenticated with the 10-byte BCD identity, the hex of
/// those bytes in either case (what some SIM vendors' tools send).
fn iccid_names_sim(query: Option<&str>, sim: &Sim) -> bool {
    let mut values = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("iccid="));
    let (Some(iccid), None) = (values.next(), values.next()) else {
        return false;
    };
    !iccid.is_empty()
        && (iccid == sim.iccid
            || sim
                .identity_hex
                .as_deref()
                .is_some_and(|hex| iccid.eq_ignore_ascii_case(hex)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_from_the_iccid_prefix() {
        assert_eq!(profile_for("8944500000000000123"), Some("uk-meter"));
        assert_eq!(profile_for("89441000000000000005"), Some("uk-meter"));
        assert_eq!(profile_for("8949012345678901234"), Some("de-meter"));
        // Neither country: the account's default profile.
        assert_eq!(profile_for("8933000000000000001"), None);
        assert_eq!(profile_for("049305930495403"), None);
        // A prefix of a prefix is not enough.
        assert_eq!(profile_for("894"), None);
        assert_eq!(profile_for(""), None);
        // The digits must lead, not merely appear.
        assert_eq!(profile_for("1894412345"), None);
    }

    #[test]
    fn answers_fit_the_sim_limit() {
        let credentials = Credentials {
            client_id: "c".repeat(20),
            username: "u".repeat(20),
            password: "p".repeat(24),
        };
        let longest_name = "p".repeat(64);
        for profile in [Some("uk-meter"), None, Some(longest_name.as_str())] {
            let Ok(response) = answer(&credentials, profile) else {
                panic!("answer not built");
            };
            let body = response.body();
            // What the host sends around it.
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            assert!(head.len() + body.len() <= 250, "{head}{body}");
        }
    }

    #[test]
    fn device_ids() {
        assert_eq!(device_id("/v1/dev/meter-1"), Some("meter-1"));
        assert_eq!(device_id("/v1/dev/a.b_C-9"), Some("a.b_C-9"));
        assert_eq!(device_id("/v1/dev/"), None);
        assert_eq!(device_id("/v1/dev/a/b"), None);
        assert_eq!(device_id("/v1/dev/a%2Db"), None);
        assert_eq!(device_id(&format!("/v1/dev/{}", "d".repeat(65))), None);
        assert_eq!(device_id("/v2/dev/x"), None);
    }

    #[test]
    fn iccid_parameter() {
        let digits = Sim {
            iccid: "8944500000000000123".into(),
            identity_hex: None,
            account_id: "acme".into(),
        };
        assert!(iccid_names_sim(Some("iccid=8944500000000000123"), &digits));
        assert!(iccid_names_sim(
            Some("profile=x&iccid=8944500000000000123"),
            &digits
        ));
        assert!(!iccid_names_sim(Some("iccid=8944500000000000124"), &digits));
        assert!(!iccid_names_sim(Some("iccid="), &digits));
        assert!(!iccid_names_sim(None, &digits));
        assert!(!iccid_names_sim(
            Some("iccid=8944500000000000123&iccid=8944500000000000123"),
            &digits
        ));
        let bcd = Sim {
            iccid: "8944502500000000005".into(),
            identity_hex: Some("984405520000000000f5".into()),
            account_id: "acme".into(),
        };
        assert!(iccid_names_sim(Some("iccid=984405520000000000F5"), &bcd));
        assert!(iccid_names_sim(Some("iccid=8944502500000000005"), &bcd));
        assert!(!iccid_names_sim(
            Some("iccid=984405520000000000f5"),
            &digits
        ));
    }
}
