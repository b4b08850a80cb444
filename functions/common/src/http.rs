//! Responses as the host frames them: a status, one Content-Type, a small fixed body.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
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
