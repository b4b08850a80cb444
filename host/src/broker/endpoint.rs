//! The node's answer to brokers over HTTP: `POST /broker/v1/auth` and `/broker/v1/acl` in EMQX's shape, behind a broker key, on a plain loopback listener of its own and on the admin port.
//!
//! The Mosquitto plugin asks here on the broker's single thread, so answers must be
//! quick and bounded: small bodies only, one store lookup per question, no waiting
//! on anything else. Any failure answers 503 and the broker fails closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_policy::{AclRequest, AuthRequest};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use super::authority::Authority;
use crate::guard::{Deadline, Gate, RequestBody};
use crate::node::{accept_loop, serve_http1};

/// Where a broker asks whether a client may connect.
pub const AUTH_PATH: &str = "/broker/v1/auth";
/// Where a broker asks whether a client may subscribe or publish to a topic.
pub const ACL_PATH: &str = "/broker/v1/acl";
/// A question is a few short strings; a topic may be longer, never this long.
const MAX_BODY: usize = 16 << 10;
/// A broker's connection idle this long between questions (or one sending a request
/// head this slowly) is closed; the plugin reconnects on its next question.
const READ_HEADER: Duration = Duration::from_secs(60);
/// A question's body is sent in one go right behind its head.
const READ_BODY: Duration = Duration::from_secs(10);

/// Is this request for the broker endpoint (and so answered by [`handle`])?
pub fn is_broker_path(path: &str) -> bool {
    path.starts_with("/broker/")
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"result": "deny", "error": reason}).to_string(),
    )
}

fn bearer(req: &Request<RequestBody>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn body<T: DeserializeOwned>(req: Request<RequestBody>) -> Result<T, Response<Full<Bytes>>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Zeroizing::new(collected.to_bytes().to_vec()),
        Err(_) => return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
    };
    serde_json::from_slice(&bytes).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "body is not the expected JSON object",
        )
    })
}

/// Answers one broker question.
pub async fn handle(authority: &Authority, req: Request<RequestBody>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != AUTH_PATH && path != ACL_PATH {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::POST {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    if !bearer(&req).is_some_and(|key| authority.is_broker_key(key)) {
        tracing::warn!(target: "broker", path, "broker question refused: missing or wrong broker key");
        return error(StatusCode::UNAUTHORIZED, "broker key missing or wrong");
    }
    let verdict = if path == AUTH_PATH {
        let asked: AuthRequest = match body(req).await {
            Ok(asked) => asked,
            Err(response) => return response,
        };
        // The presented password lives only as long as this question.
        let asked = Asked(asked);
        authority.authenticate(&asked.0).await
    } else {
        let asked: AclRequest = match body(req).await {
            Ok(asked) => asked,
            Err(response) => return response,
        };
        authority.authorize(&asked).await
    };
    match verdict {
        Ok(verdict) => match serde_json::to_vec(&verdict) {
            Ok(text) => json(StatusCode::OK, text),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        },
        Err(e) => {
            tracing::error!(target: "broker", "broker question not answered: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

/// Zeroizes the presented password when the question is done.
struct Asked(AuthRequest);

impl Drop for Asked {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.password.zeroize();
    }
}

/// Serves broker questions in plain HTTP/1.1 with keep-alive on `listener` (a
/// loopback address: the key and the passwords cross it unencrypted).
pub async fn serve(
    listener: TcpListener,
    authority: Arc<Authority>,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    accept_loop(
        "broker",
        listener,
        gate,
        shutdown.clone(),
        tasks,
        move |tcp, peer: SocketAddr| {
            let (authority, shutdown) = (authority.clone(), shutdown.clone());
            async move {
                let _ = tcp.set_nodelay(true);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let authority = authority.clone();
                    let req = req.map(|body| Deadline::new(body, READ_BODY));
                    async move { Ok::<_, Infallible>(handle(&authority, req).await) }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(READ_HEADER)
                    .max_buf_size(64 << 10);
                let builder = builder.http1_only();
                let served = serve_http1(&builder, TokioIo::new(tcp), service, &shutdown).await;
                if let Err(e) = served {
                    tracing::debug!(%peer, "broker connection: {e}");
                }
            }
        },
    )
    .await;
}
