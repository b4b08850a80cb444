//! Calling a component that exports `wasi:http/handler@0.3` (spin-sdk 7).

use bytes::Bytes;
use http_body_util::Full;
use wasmtime::Store;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::state::RequestState;
use super::{FnResponse, InvokeError, classify_trap, collect};

pub(super) async fn call(
    pre: &ServicePre<RequestState>,
    store: &mut Store<RequestState>,
    request: http::Request<Bytes>,
    max_response: usize,
) -> Result<FnResponse, InvokeError> {
    let service = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(InvokeError::Trap)?;
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Full::new(body));
    let (request, _io) =
        wasmtime_wasi_http::p3::Request::from_http(&mut store.data_mut().hooks, request);
    store
        .run_concurrent(async move |store| {
            let response = match service.handle(store, request).await? {
                Ok(response) => response,
                Err(code) => return Ok(Err(InvokeError::Guest(format!("{code:?}")))),
            };
            let response = store.with(|s| response.into_http(s, async { Ok(()) }))?;
            let (parts, body) = response.into_parts();
            Ok(collect(parts, body, max_response).await)
        })
        .await
        .and_then(|r: wasmtime::Result<_>| r)
        .map_err(classify_trap)?
}
