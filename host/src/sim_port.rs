//! The SIM port: TLS 1.3 PSK-only connections from SIMs, HTTP/1.1 framing under the message limit, dispatch to functions.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capabilities::{Caller, Effect, SimCaller};
use crate::identity::Identity;
use crate::node::{Node, accept_loop};
use crate::router::{Listener, Lookup};
use crate::wolfssl::{self, TlsStream};

const MAX_HEADERS: usize = 16;

#[derive(Debug, Clone)]
pub struct SimPortConfig {
    /// No message between SIM and platform may exceed this many bytes (the contract says 250).
    pub message_limit: usize,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
}

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

enum Framed {
    Request { head_len: usize, total: usize },
    Incomplete,
    Refused(&'static str),
}

/// Serves requests on one connection until the SIM closes it, idles, or breaks the contract.
async fn requests(stream: &mut TlsStream, caller: &SimCaller, node: &Node) {
    let cfg = &node.sim_port;
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.message_limit);
    let mut chunk = [0u8; 512];
    let mut peer_closed = false;
    loop {
        match frame(&buf, cfg.message_limit) {
            Framed::Request { head_len, total } => {
                let raw: Vec<u8> = buf.drain(..total).collect();
                let (response, keep_open) = handle(&raw, head_len, caller, node).await;
                if let Some((bytes, effects)) = response {
                    if stream.write_all(&bytes).await.is_err() {
                        node.platform.undo(effects).await;
                        return;
                    }
                    node.platform.commit(effects);
                }
                if !keep_open {
                    return;
                }
                continue;
            }
            Framed::Refused(reason) => {
                tracing::info!(iccid = caller.iccid, reason, "request refused");
                let _ = stream.write_all(&error_response(reason)).await;
                return;
            }
            Framed::Incomplete if peer_closed => return,
            Framed::Incomplete => {}
        }
        let room = (cfg.message_limit + 1 - buf.len()).min(chunk.len());
        match tokio::time::timeout(cfg.idle_timeout, stream.read(&mut chunk[..room])).await {
            Ok(Ok(0)) => peer_closed = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn frame(buf: &[u8], limit: usize) -> Framed {
    if buf.is_empty() {
        return Framed::Incomplete;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let mut content_length = 0usize;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Framed::Refused("chunked");
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    match std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                    {
                        Some(n) => content_length = n,
                        None => return Framed::Refused("bad_request"),
                    }
                }
            }
            let total = head_len.saturating_add(content_length);
            if total > limit {
                Framed::Refused("too_large")
            } else if buf.len() >= total {
                Framed::Request { head_len, total }
            } else {
                Framed::Incomplete
            }
        }
        Ok(httparse::Status::Partial) if buf.len() > limit => Framed::Refused("too_large"),
        Ok(httparse::Status::Partial) => Framed::Incomplete,
        Err(_) => Framed::Refused("bad_request"),
    }
}

/// What to send (None: nothing) with what it commits once sent.
type Answer = Option<(Vec<u8>, Vec<Effect>)>;

/// Returns the response to send and whether the connection stays open.
async fn handle(raw: &[u8], head_len: usize, caller: &SimCaller, node: &Node) -> (Answer, bool) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // `frame` parsed these same bytes; a failure here would be a bug, answered like bad input.
    let (Ok(_), Some(method), Some(target)) = (req.parse(raw), req.method, req.path) else {
        return (refusal("bad_request"), false);
    };
    let close = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
    });
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let matched = match node.routes.lookup(Listener::Sim, method, path) {
        Lookup::Found(matched) => matched,
        Lookup::MethodNotAllowed | Lookup::NotFound => {
            return (refusal("no_route"), !close);
        }
    };
    let mut builder = http::Request::builder().method(method);
    let Ok(uri) = http::Uri::from_str(target) else {
        return (refusal("bad_request"), !close);
    };
    builder = builder.uri(uri);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    for (name, value) in matched.spin_headers() {
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(Bytes::copy_from_slice(&raw[head_len..])) else {
        return (refusal("bad_request"), !close);
    };
    let component = &matched.route.component;
    let caller_for_fn = Caller::Sim(caller.clone());
    let response = match node
        .runtime
        .invoke(component, caller_for_fn, request, node.sim_limits)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(
                account = &*caller.account_id,
                iccid = caller.iccid,
                component,
                "function failed: {e}"
            );
            return (refusal("function_failed"), !close);
        }
    };
    let ok = response.status == http::StatusCode::OK;
    let content_type = response
        .content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let bytes = serialize(ok, content_type, &response.body);
    if bytes.len() > node.sim_port.message_limit {
        // The contract: an oversized answer is not sent at all, the connection closes,
        // and the incident is a WARNING with the route and size.
        tracing::warn!(
            iccid = caller.iccid,
            route = %format!("{method} {path}"),
            size = bytes.len(),
            limit = node.sim_port.message_limit,
            "response over the SIM message limit not sent"
        );
        node.platform.undo(response.effects).await;
        return (None, false);
    }
    (Some((bytes, response.effects)), !close)
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
    fn framing_respects_the_limit_and_content_length() {
        let req = b"POST /v1/dev/a?iccid=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
        assert!(matches!(frame(req, 250), Framed::Request { total, .. } if total == req.len()));
        assert!(matches!(
            frame(&req[..req.len() - 1], 250),
            Framed::Incomplete
        ));
        assert!(matches!(frame(req, 40), Framed::Refused("too_large")));
        let big_body = b"POST / HTTP/1.1\r\nContent-Length: 500\r\n\r\n";
        assert!(matches!(frame(big_body, 250), Framed::Refused("too_large")));
        assert!(matches!(
            frame(&[b'G'; 251], 250),
            Framed::Refused("bad_request") | Framed::Refused("too_large")
        ));
        assert!(matches!(
            frame(b"\x00\x01garbage\r\n\r\n", 250),
            Framed::Refused("bad_request")
        ));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(frame(chunked, 250), Framed::Refused("chunked")));
    }

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
