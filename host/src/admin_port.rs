//! The admin port: HTTPS (rustls, TLS 1.3) for the operator, HTTP Basic, the `/v3/sys/` allow-list, dispatch to functions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Digest as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::ndjson::{Line, Lines};
use wire::routes::{Listener, Lookup};

use crate::capabilities::Caller;
use crate::guard::{Deadline, RequestBody};
use crate::node::{Node, accept_loop, serve_http1};
use crate::tenant_api;

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body outside the streaming routes.
const MAX_BODY: usize = 1 << 20;
/// Longest NDJSON line a streaming route accepts; longer ones answer `0`.
const MAX_LINE: usize = 64 << 10;

/// Accepts admin port connections (HTTPS) until `shutdown`, each one admitted by the
/// admin gate and served on `tasks`.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    node: Arc<Node>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let limits = node.limits.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // Also bounds the wait for the next request on a kept-alive connection: hyper
        // starts this timer as soon as it waits for a request head.
        .header_read_timeout(limits.admin_header_timeout)
        // Request heads are a line and a few headers; hyper's default lets one
        // connection buffer ~400 KB before refusing.
        .max_buf_size(64 << 10);
    let builder = Arc::new(builder.http1_only());
    accept_loop(
        "admin",
        listener,
        limits.admin.clone(),
        shutdown.clone(),
        tasks,
        move |tcp, peer| {
            let (tls, node, shutdown) = (tls.clone(), node.clone(), shutdown.clone());
            let builder = builder.clone();
            async move {
                let timeout = node.limits.admin_header_timeout;
                let stream = match tokio::time::timeout(timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(%peer, "admin handshake failed: {e}"),
                    Err(_) => return tracing::debug!(%peer, "admin handshake timed out"),
                };
                let body_timeout = node.limits.admin_body_timeout;
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let node = node.clone();
                    let req = req.map(|body| Deadline::new(body, body_timeout));
                    async move { Ok::<_, Infallible>(handle(&node, peer, req).await) }
                });
                let served = serve_http1(&builder, TokioIo::new(stream), service, &shutdown).await;
                if let Err(e) = served {
                    tracing::debug!(%peer, "admin connection: {e}");
                }
            }
        },
    )
    .await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

async fn handle(node: &Arc<Node>, peer: SocketAddr, req: Request<RequestBody>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" && req.method() == Method::GET {
        return text(StatusCode::OK, "ok");
    }
    // Brokers elsewhere (EMQX, VerneMQ) ask over HTTPS here, with the broker key.
    if crate::broker::endpoint::is_broker_path(&path) {
        return crate::broker::endpoint::handle(&node.authority, req)
            .await
            .map(|body| body.boxed());
    }
    let Some(caller) = principal(node, &req).await else {
        let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"psk-edge\", charset=\"UTF-8\""),
        );
        return response;
    };
    if path.starts_with("/v3/sys/") && !node.admin.allows(peer.ip()) {
        tracing::warn!(%peer, path, "refused: address not on the /v3/sys/ allow-list");
        return text(StatusCode::FORBIDDEN, "forbidden");
    }
    let api = tenant_api::Api::parse(&path);
    if !may_access(&caller, &path, api.as_ref()) {
        return text(StatusCode::FORBIDDEN, "forbidden");
    }
    if let Some(api) = api {
        if length_over(req.headers(), tenant_api::MAX_COMPONENT) {
            return closing(json_answer(tenant_api::too_large()));
        }
        // Everything the head decides comes before the body (up to 16 MiB) is read.
        if let Some(answer) = tenant_api::decide_before_body(node, &api).await {
            return closing(json_answer(answer));
        }
        let method = req.method().clone();
        let query = req.uri().query().unwrap_or("").to_owned();
        let answer = match Limited::new(req.into_body(), tenant_api::MAX_COMPONENT)
            .collect()
            .await
        {
            Ok(body) => {
                tenant_api::handle(node, &caller, api, &method, &query, body.to_bytes()).await
            }
            Err(e) if crate::guard::timed_out(&*e) => tenant_api::too_slow(),
            Err(_) => tenant_api::too_large(),
        };
        return json_answer(answer);
    }
    let matched = match node
        .routes
        .lookup(Listener::Admin, req.method().as_str(), &path)
    {
        Lookup::Found(matched) => matched,
        Lookup::MethodNotAllowed => {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        Lookup::NotFound => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let component = matched.route.component.clone();
    // The operator contract answers 200 with `0` for anything that went wrong.
    let contract = path.starts_with("/v3/sys/");
    let (mut parts, body) = req.into_parts();
    matched.set_spin_headers(&mut parts.headers);
    if let Some(batch) = matched.route.ndjson_batch {
        return ndjson(node, component, parts, body, batch);
    }
    if length_over(&parts.headers, MAX_BODY) {
        return closing(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if crate::guard::timed_out(&*e) => {
            return text(StatusCode::REQUEST_TIMEOUT, "body too slow");
        }
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    match node
        .runtime
        .invoke(
            &component,
            caller,
            Request::from_parts(parts, body),
            node.admin_limits,
        )
        .await
    {
        Ok(response) => {
            node.platform.commit(response.effects);
            // A function refused by a quota could only hear `denied`: the answer names
            // the quota, as the tenant API's own refusals do.
            if let Some(quota) = response.quota
                && !contract
                && !response.status.is_success()
            {
                return json_answer(tenant_api::quota_refused(quota));
            }
            let mut out = Response::new(Full::new(response.body).boxed());
            *out.status_mut() = response.status;
            if let Some(content_type) = response.content_type {
                out.headers_mut().insert(header::CONTENT_TYPE, content_type);
            }
            out
        }
        Err(e) => {
            tracing::error!(component, "admin function failed: {e}");
            if contract {
                text(StatusCode::OK, "0")
            } else {
                text(StatusCode::INTERNAL_SERVER_ERROR, "function failed")
            }
        }
    }
}

fn json_answer(answer: tenant_api::Answer) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body.to_string())).boxed());
    *response.status_mut() = answer.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Does the request announce a body over `limit`? Answering before the body is read
/// keeps hyper from sending `100 Continue` to a client that sent `Expect`, so it never
/// starts an upload that would be refused anyway.
fn length_over(headers: &http::HeaderMap, limit: usize) -> bool {
    // hyper has already refused a malformed or ambiguous Content-Length with a 400.
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// The body stays unread, so the connection cannot carry another request.
fn closing(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Who the request's HTTP Basic credentials name: the operator pair, or one of an
/// account's tenant keys. None: missing or wrong.
async fn principal(node: &Node, req: &Request<RequestBody>) -> Option<Caller> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?,
    );
    let (key, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    if node.admin.operator.verify(key, secret) {
        return Some(Caller::Operator);
    }
    let (account, digest) = match node.platform.store.tenant_key(key).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!("tenant key lookup failed: {e}");
            return None;
        }
    };
    let given = sha2::Sha256::digest(secret.as_bytes());
    bool::from(subtle::ConstantTimeEq::ct_eq(&given[..], &digest[..]))
        .then(|| Caller::Tenant(account.into()))
}

/// The operator reaches everything; a tenant key only its own account's resources
/// under `/v3/accounts/{account}/`, and not what the operator hands out (keys).
fn may_access(caller: &Caller, path: &str, api: Option<&tenant_api::Api>) -> bool {
    match caller {
        Caller::Operator => true,
        Caller::Tenant(account) => {
            let own = path
                .strip_prefix("/v3/accounts/")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|a| a == &**account);
            own && !api.is_some_and(tenant_api::Api::operator_only)
        }
        Caller::Sim(_) => false,
    }
}

/// Streams an NDJSON body through the component in batches of `batch` lines and
/// streams the answers back, so memory stays bounded whatever the body's size.
fn ndjson(
    node: &Arc<Node>,
    component: String,
    parts: http::request::Parts,
    mut body: RequestBody,
    batch: usize,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let node = node.clone();
    tokio::spawn(async move {
        let mut input = Lines::new(MAX_LINE);
        let mut lines: Vec<Bytes> = Vec::with_capacity(batch);
        let mut input_done = false;
        while !input_done {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        input.push(&data);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("bulk body aborted: {e}");
                    return;
                }
                None => input_done = true,
            }
            loop {
                let line = if input_done {
                    input.next_line_at_end()
                } else {
                    input.next_line()
                };
                match line {
                    None => break,
                    Some(Line::Overlong) => {
                        // Answers stay in input order: flush what came before, then refuse this line.
                        if !lines.is_empty()
                            && !run_batch(&node, &component, &parts, &mut lines, &tx).await
                        {
                            return;
                        }
                        tracing::warn!("bulk line over {MAX_LINE} bytes refused");
                        if tx.send(Bytes::from_static(b"0\n")).await.is_err() {
                            return;
                        }
                    }
                    Some(Line::Data(line)) if line.iter().all(u8::is_ascii_whitespace) => {}
                    Some(Line::Data(line)) => {
                        lines.push(line);
                        if lines.len() == batch
                            && !run_batch(&node, &component, &parts, &mut lines, &tx).await
                        {
                            return;
                        }
                    }
                }
            }
        }
        if !lines.is_empty() {
            run_batch(&node, &component, &parts, &mut lines, &tx).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Runs one batch; returns false when the client has gone away.
async fn run_batch(
    node: &Node,
    component: &str,
    parts: &http::request::Parts,
    lines: &mut Vec<Bytes>,
    tx: &mpsc::Sender<Bytes>,
) -> bool {
    let count = lines.len();
    let mut body = BytesMut::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines.drain(..) {
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\n");
    }
    let body = body.freeze();
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone());
    for (name, value) in &parts.headers {
        request = request.header(name, value);
    }
    let answers = match request.body(body) {
        Ok(request) => match node
            .runtime
            .invoke(component, Caller::Operator, request, node.admin_limits)
            .await
        {
            Ok(response) if response.status == StatusCode::OK => response.body,
            Ok(response) => {
                tracing::error!(component, status = %response.status, "bulk batch refused");
                Bytes::from("0\n".repeat(count))
            }
            Err(e) => {
                tracing::error!(component, "bulk batch failed: {e}");
                Bytes::from("0\n".repeat(count))
            }
        },
        Err(_) => Bytes::from("0\n".repeat(count)),
    };
    tx.send(answers).await.is_ok()
}

/// The admin port's TLS: TLS 1.3 only, ring as the one crypto provider.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
