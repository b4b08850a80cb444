//! Calling a component that exports the stable `wasi:http/incoming-handler@0.2` (spin-sdk 5, the `wasi` crate, jco…).

use bytes::Bytes;
use http_body_util::Full;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::state::RequestState;
use super::{FnResponse, InvokeError, classify_trap, collect};

/// The 0.2 handler answers through an out-parameter and may keep running (streaming
/// its body) after it set the response, so the call and the collection run together.
pub(super) async fn call(
    pre: &ProxyPre<RequestState>,
    store: &mut Store<RequestState>,
    request: http::Request<Bytes>,
    max_response: usize,
) -> Result<FnResponse, InvokeError> {
    let proxy = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(InvokeError::Trap)?;
    let (mut parts, body) = request.into_parts();
    // wasi:http 0.2 wants an authority; SIMs may omit Host.
    parts
        .headers
        .entry(http::header::HOST)
        .or_insert(http::HeaderValue::from_static("localhost"));
    let request = http::Request::from_parts(parts, Full::new(body));
    let http = store.data_mut();
    let mut view = http.http();
    let incoming = view
        .new_incoming_request(Scheme::Http, request)
        .map_err(InvokeError::Trap)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let out = view.new_response_outparam(tx).map_err(InvokeError::Trap)?;
    let call = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, incoming, out);
    let answer = async {
        match rx.await {
            Ok(Ok(response)) => {
                let (parts, body) = response.into_parts();
                collect(parts, body, max_response).await
            }
            Ok(Err(code)) => Err(InvokeError::Guest(format!("{code:?}"))),
            // The guest returned (or trapped) without setting a response.
            Err(_) => Err(InvokeError::Guest("no response".into())),
        }
    };
    let (called, answered) = tokio::join!(call, answer);
    called.map_err(classify_trap)?;
    answered
}
