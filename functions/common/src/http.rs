//! Responses as the host frames them: a status, one Content-Type, a small fixed body.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use spin_sdk::http::FullBody;

pub type Reply = Response<FullBody<Bytes>>;

/// Built field by field rather than through `Response::builder()`, whose `Result`
/// would need an unwrap on the request path.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(FullBody::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// 405 with the `Allow` header that HTTP requires of it.
pub fn method_not_allowed(
    allow: &'static str,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, content_type, body);
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
