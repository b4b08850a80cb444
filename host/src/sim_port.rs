//! The SIM port: TLS 1.3 PSK-only connections from SIMs, HTTP/1.1 framing under the message limit, dispatch to functions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::identity::Identity;
use wire::routes::{Listener, Lookup};
use wire::sim_http::{self, Framed};

use crate::capabilities::{Caller, Effect, SimCaller};
use crate::node::{Node, accept_loop};
use crate::wolfssl::{self, TlsStream};

/// A connection whose requests are refused this many times in a row is closed: a SIM
/// that works sends few requests, and one that does not should not keep a slot busy.
const MAX_REFUSED_IN_A_ROW: u32 = 8;

/// Accepts SIM connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<wolfssl::Server>,
    node: Arc<Node>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    accept_loop(
        "sim",
        listener,
        node.limits.sim.clone(),
        shutdown.clone(),
        tasks,
        move |tcp, peer| {
            let (tls, node, shutdown) = (tls.clone(), node.clone(), shutdown.clone());
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = connection(tcp, peer, &tls, &node) => {}
                }
            }
        },
    )
    .await;
}

async fn connection(tcp: TcpStream, peer: SocketAddr, tls: &wolfssl::Server, node: &Node) {
    let _ = tcp.set_nodelay(true);
    // A handshake costs a stranger nothing: cap them per address and in total, and
    // close the connection over a cap at once rather than queue it.
    let Some(pending) = node.limits.sim_handshakes.admit(peer.ip()) else {
        return;
    };
    let revision_before = node.psks.revision();
    let accepted = tls.accept(tcp).await;
    drop(pending);
    let mut stream = match accepted {
        Ok(stream) => stream,
        Err(wolfssl::TlsError::Refused(refusal)) => {
            // What the client offers, not who it is: safe to say, and the operator's
            // clue when the port is configured narrower than the SIMs.
            node.limits.count_refused_hello(refusal);
            tracing::debug!(%peer, reason = refusal.reason(), "sim handshake refused");
            return;
        }
        Err(e) => {
            tracing::debug!(%peer, "sim handshake failed: {e}");
            return;
        }
    };
    // The decoy key for undecodable identities never completes a handshake.
    let Some(identity) = Identity::decode(stream.identity()) else {
        return;
    };
    let iccid = identity.iccid().to_owned();
    let live = node.psks.register(&iccid);
    // A change between the key lookup and the registration above closes the connection
    // just like a change after it would.
    let Some(sim) = node
        .psks
        .sim(&iccid)
        .filter(|sim| sim.revision <= revision_before)
    else {
        stream.shutdown().await;
        return;
    };
    tracing::debug!(%peer, iccid, cipher = stream.cipher_name(), "sim connected");
    let caller = SimCaller {
        iccid,
        identity_hex: identity.bcd_hex(),
        account_id: sim.account_id,
    };
    tokio::select! {
        () = live.closed().cancelled() => tracing::info!(iccid = caller.iccid, "closing connection: the SIM's PSK changed"),
        () = requests(&mut stream, &caller, node) => {}
    }
    stream.shutdown().await;
}

/// Serves requests on one connection until the SIM closes it, idles, or breaks the contract.
async fn requests(stream: &mut TlsStream, caller: &SimCaller, node: &Node) {
    let cfg = &node.sim_port;
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.message_limit);
    let mut chunk = [0u8; 512];
    let mut peer_closed = false;
    let mut refused_in_a_row = 0;
    // When the request now arriving began (its first byte), if one is.
    let mut began: Option<Instant> = None;
    loop {
        match sim_http::frame(&buf, cfg.message_limit) {
            Framed::Request { head_len, total } => {
                let raw: Vec<u8> = buf.drain(..total).collect();
                // A pipelined next request began no later than now.
                began = (!buf.is_empty()).then(Instant::now);
                let served = handle(&raw, head_len, caller, node).await;
                if let Some((bytes, effects)) = served.answer {
                    if stream.write_all(&bytes).await.is_err() {
                        node.platform.undo(effects).await;
                        return;
                    }
                    node.platform.commit(effects);
                }
                if !served.keep_open {
                    return;
                }
                refused_in_a_row = if served.refused {
                    refused_in_a_row + 1
                } else {
                    0
                };
                if refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
                    note(node, caller, "refused_in_a_row");
                    return;
                }
                continue;
            }
            Framed::Refused(reason) => {
                note(node, caller, reason);
                let _ = stream.write_all(&error_response(reason)).await;
                return;
            }
            Framed::Incomplete if peer_closed => return,
            Framed::Incomplete => {}
        }
        let room = (cfg.message_limit + 1 - buf.len()).min(chunk.len());
        let wait = match began {
            Some(at) => cfg.request_timeout.saturating_sub(at.elapsed()),
            None => cfg.idle_timeout,
        };
        match tokio::time::timeout(wait, stream.read(&mut chunk[..room])).await {
            Ok(Ok(0)) => peer_closed = true,
            Ok(Ok(n)) => {
                began.get_or_insert_with(Instant::now);
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok(Err(_)) => return,
            Err(_) => {
                if began.is_some() {
                    note(node, caller, "request_too_slow");
                }
                return;
            }
        }
    }
}

/// Counts a refusal and logs it, at most once per SIM and reason per window.
fn note(node: &Node, caller: &SimCaller, reason: &str) {
    let log = &node.platform.sim_log;
    log.count(reason);
    if let Some(left_out) = log.admit(&caller.iccid, reason) {
        tracing::info!(iccid = caller.iccid, reason, left_out, "request refused");
    }
}

/// What to send (None: nothing) with what it commits once sent.
type Answer = Option<(Vec<u8>, Vec<Effect>)>;

/// What one request came to.
struct Served {
    answer: Answer,
    keep_open: bool,
    /// Answered with a 404 (by the host or the function).
    refused: bool,
}

impl Served {
    fn refused(node: &Node, caller: &SimCaller, reason: &'static str, keep_open: bool) -> Self {
        note(node, caller, reason);
        Served {
            answer: refusal(reason),
            keep_open,
            refused: true,
        }
    }
}

async fn handle(raw: &[u8], head_len: usize, caller: &SimCaller, node: &Node) -> Served {
    let Ok(head) = sim_http::head(raw) else {
        return Served::refused(node, caller, "bad_request", false);
    };
    let (method, path, keep_open) = (head.method, head.path, head.keep_open);
    let matched = match node.routes.lookup(Listener::Sim, method, path) {
        Lookup::Found(matched) => matched,
        Lookup::MethodNotAllowed | Lookup::NotFound => {
            return Served::refused(node, caller, "no_route", keep_open);
        }
    };
    let mut request = match head.request(raw.get(head_len..).unwrap_or_default()) {
        Ok(request) => request,
        Err(bad) => return Served::refused(node, caller, "bad_request", bad.keep_open),
    };
    matched.set_spin_headers(request.headers_mut());
    let component = &matched.route.component;
    let caller_for_fn = Caller::Sim(caller.clone());
    let response = match node
        .runtime
        .invoke(component, caller_for_fn, request, node.sim_limits)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            let log = &node.platform.sim_log;
            log.count("function_failed");
            if let Some(left_out) = log.admit(&caller.iccid, "function_failed") {
                tracing::warn!(
                    account = &*caller.account_id,
                    iccid = caller.iccid,
                    component,
                    left_out,
                    "function failed: {e}"
                );
            }
            return Served {
                answer: refusal("function_failed"),
                keep_open,
                refused: true,
            };
        }
    };
    let ok = response.status == http::StatusCode::OK;
    if !ok {
        // The function logged its own reason (thinned by the log capability).
        node.platform.sim_log.count("function_refused");
    }
    let content_type = response
        .content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let bytes = serialize(ok, content_type, &response.body);
    if bytes.len() > node.sim_port.message_limit {
        // The contract: an oversized answer is not sent at all, the connection closes,
        // and the incident is a WARNING with the route and size (once per SIM and
        // window: the SIM can ask again as often as it likes).
        let log = &node.platform.sim_log;
        log.count("response_too_large");
        if let Some(left_out) = log.admit(&caller.iccid, "response_too_large") {
            tracing::warn!(
                iccid = caller.iccid,
                route = %format!("{method} {path}"),
                size = bytes.len(),
                limit = node.sim_port.message_limit,
                left_out,
                "response over the SIM message limit not sent"
            );
        }
        node.platform.undo(response.effects).await;
        return Served {
            answer: None,
            keep_open: false,
            refused: true,
        };
    }
    Served {
        answer: Some((bytes, response.effects)),
        keep_open,
        refused: !ok,
    }
}

fn refusal(reason: &str) -> Answer {
    Some((error_response(reason), Vec::new()))
}

fn serialize(ok: bool, content_type: &str, body: &[u8]) -> Vec<u8> {
    let status = if ok { "200 OK" } else { "404 Not Found" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The host's own 404s; short enough to fit any sane message limit.
fn error_response(reason: &str) -> Vec<u8> {
    serialize(
        false,
        "application/json",
        format!("{{\"err\":\"{reason}\"}}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_only_type_and_length() {
        let r = serialize(true, "application/json", b"{}");
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert!(error_response("no_route").starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }
}
