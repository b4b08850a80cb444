//! admin-psk: the operator's PSK table (`POST`/`DELETE /v3/sys/security/psk`, NDJSON `…/psk/bulk`).
//!
//! The host has already authenticated the operator. Every answer is HTTP 200 with `1`
//! or `0` (one line each for bulk): the contract's callers read the body, not the status.

use common::http::{Reply, reply};
use common::psk::{self, Invalid, Upsert};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
use spin_sdk::http_service;

spin_sdk::wit_bindgen::generate!({
    runtime_path: "spin_sdk::wit_bindgen::rt",
    path: "../../wit",
    world: "psk-edge:platform/admin-function",
});

use psk_edge::platform::log::{self, Level};
use psk_edge::platform::psk_admin::{self, Change, PskEntry};
use psk_edge::platform::types::Error;

const PSK_PATH: &str = "/v3/sys/security/psk";
const BULK_PATH: &str = "/v3/sys/security/psk/bulk";
const TEXT: &str = "text/plain";

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let route = (req.method().clone(), req.uri().path());
    let op = match route {
        (Method::POST, PSK_PATH) => Op::Upsert,
        (Method::DELETE, PSK_PATH) => Op::Remove,
        (Method::POST, BULK_PATH) => Op::Bulk,
        _ => return Ok(reply(StatusCode::NOT_FOUND, TEXT, "")),
    };
    let body = match req.into_body().bytes().await {
        Ok(body) => body,
        Err(e) => {
            log::write(Level::Error, &format!("psk request body unreadable: {e:?}"));
            // A bulk answer must have one line per input line, which are unknown now.
            return match op {
                Op::Bulk => Err(e),
                _ => Ok(answer(false)),
            };
        }
    };
    Ok(match op {
        Op::Upsert => answer(upsert(&body)),
        Op::Remove => answer(remove(&body)),
        Op::Bulk => bulk(&body),
    })
}

enum Op {
    Upsert,
    Remove,
    Bulk,
}

fn answer(ok: bool) -> Reply {
    reply(StatusCode::OK, TEXT, if ok { "1" } else { "0" })
}

fn entry(u: Upsert) -> Change {
    Change::Upsert(PskEntry {
        identity: u.identity,
        psk: u.psk,
        account_id: u.account_id,
    })
}

fn error_name(e: Error) -> &'static str {
    match e {
        Error::NotFound => "not-found",
        Error::Foreign => "foreign",
        Error::Conflict => "conflict",
        Error::Invalid => "invalid",
        Error::Denied => "denied",
        Error::Unavailable => "unavailable",
    }
}

fn refused(what: &str, reason: Invalid) -> bool {
    log::write(Level::Warn, &format!("{what} refused: {reason}"));
    false
}

/// Applies one change and reports whether it took effect, logging why not.
fn apply_one(what: &str, identity: &str, change: Change) -> bool {
    match psk_admin::apply(&[change]).as_deref() {
        Ok([true]) => true,
        Ok([false]) => {
            log::write(Level::Info, &format!("{what} {identity}: no effect"));
            false
        }
        Ok(other) => {
            let n = other.len();
            log::write(
                Level::Error,
                &format!("{what} {identity}: host answered {n} results for 1 change"),
            );
            false
        }
        Err(e) => {
            log::write(
                Level::Error,
                &format!("{what} {identity} failed: {}", error_name(*e)),
            );
            false
        }
    }
}

fn upsert(body: &[u8]) -> bool {
    match psk::parse_upsert(body) {
        Ok(u) => {
            let identity = u.identity.clone();
            apply_one("psk upsert", &identity, entry(u))
        }
        Err(reason) => refused("psk upsert", reason),
    }
}

fn remove(body: &[u8]) -> bool {
    match psk::parse_remove(body) {
        Ok(identity) => apply_one("psk delete", &identity, Change::Remove(identity.clone())),
        Err(reason) => refused("psk delete", reason),
    }
}

/// One batch of NDJSON lines: every valid line goes into a single `apply`, so the
/// batch costs one transaction; each non-blank line gets its own `1`/`0` line, in order.
fn bulk(batch: &[u8]) -> Reply {
    let mut changes = Vec::new();
    // Per non-blank line: the index of its change, or None when it was refused.
    let mut slots = Vec::new();
    for (n, line) in psk::ndjson_lines(batch).enumerate() {
        match psk::parse_upsert(line) {
            Ok(u) => {
                slots.push(Some(changes.len()));
                changes.push(entry(u));
            }
            Err(reason) => {
                refused(&format!("psk bulk line {}", n + 1), reason);
                slots.push(None);
            }
        }
    }
    let results = if changes.is_empty() {
        Vec::new()
    } else {
        match psk_admin::apply(&changes) {
            Ok(results) if results.len() == changes.len() => results,
            Ok(results) => {
                let (got, want) = (results.len(), changes.len());
                log::write(
                    Level::Error,
                    &format!(
                        "psk bulk: host answered {got} results for {want} changes; batch refused"
                    ),
                );
                vec![false; changes.len()]
            }
            Err(e) => {
                let n = changes.len();
                log::write(
                    Level::Error,
                    &format!("psk bulk of {n} changes failed: {}", error_name(e)),
                );
                vec![false; n]
            }
        }
    };
    let mut out = Vec::with_capacity(slots.len() * 2);
    for slot in slots {
        let ok = slot.and_then(|i| results.get(i).copied()).unwrap_or(false);
        out.extend_from_slice(if ok { b"1\n" } else { b"0\n" });
    }
    reply(StatusCode::OK, TEXT, out)
}
