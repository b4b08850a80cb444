//! The SIM port's HTTP/1.1 framing: where one request ends in the bytes received, and the request it makes.
//!
//! A SIM's request is a few hundred bytes at most, so framing is strict rather than
//! forgiving: one plain `Content-Length`, no transfer coding, nothing past the message
//! limit. Anything two HTTP parsers could frame differently is refused, not guessed.

use std::str::FromStr;

use bytes::Bytes;

/// Headers a SIM request may carry; a request with more is refused as malformed.
pub const MAX_HEADERS: usize = 16;

/// Where the first request in a buffer stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A whole request: its head is `head_len` bytes and it ends at `total`.
    Request { head_len: usize, total: usize },
    /// Not complete yet: read more.
    Incomplete,
    /// Not a request this port serves; the reason names it in logs and metrics.
    Refused(&'static str),
}

/// Frames the first request of `buf`, which holds the bytes received so far.
pub fn frame(buf: &[u8], limit: usize) -> Framed {
    if buf.is_empty() {
        return Framed::Incomplete;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let mut content_length = None;
            for h in req.headers.iter() {
                // SIMs send bodies with a length; any transfer coding (chunked or not)
                // is a framing this port does not speak.
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Framed::Refused("chunked");
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    // Two lengths, even equal ones, are a request two parsers may
                    // frame differently; refused rather than guessed.
                    match (content_length, parse_content_length(h.value)) {
                        (None, Some(n)) => content_length = Some(n),
                        _ => return Framed::Refused("bad_content_length"),
                    }
                }
            }
            let content_length = content_length.unwrap_or(0);
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

/// RFC 9110's `1*DIGIT`, nothing else: no sign, no inner space, not empty, no list.
/// Surrounding blanks are the header's optional whitespace, not part of the value.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// A framed request's head, parsed once: what the port routes on, and what the request
/// a component gets is built from.
#[derive(Debug)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target as sent: path and query.
    pub target: &'a str,
    /// The target without its query: what the route table matches.
    pub path: &'a str,
    /// Whether the connection stays open after the answer.
    pub keep_open: bool,
    headers: [httparse::Header<'a>; MAX_HEADERS],
    header_count: usize,
}

/// Why a framed request cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest {
    /// The connection may still carry the next request (the framing itself held).
    pub keep_open: bool,
}

/// Reads the head of a request that [`frame`] found whole in `raw` (`raw[..total]`).
pub fn head(raw: &[u8]) -> Result<Head<'_>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (method, target, keep_open, header_count) = {
        let mut req = httparse::Request::new(&mut headers);
        // `frame` parsed these same bytes; a failure here would be a bug, answered like
        // bad input.
        let (Ok(_), Some(method), Some(target)) = (req.parse(raw), req.method, req.path) else {
            return Err(BadRequest { keep_open: false });
        };
        (method, target, keeps_open(&req), req.headers.len())
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Head {
        method,
        target,
        path,
        keep_open,
        headers,
        header_count,
    })
}

impl Head<'_> {
    /// The `http::Request` a component gets: the SIM's headers as sent and `body` (what
    /// follows the head in the framed request).
    pub fn request(&self, body: &[u8]) -> Result<http::Request<Bytes>, BadRequest> {
        let bad = BadRequest {
            keep_open: self.keep_open,
        };
        let Ok(uri) = http::Uri::from_str(self.target) else {
            return Err(bad);
        };
        let mut builder = http::Request::builder().method(self.method).uri(uri);
        for h in &self.headers[..self.header_count] {
            builder = builder.header(h.name, h.value);
        }
        builder.body(Bytes::copy_from_slice(body)).map_err(|_| bad)
    }
}

/// Does the request leave the connection open? HTTP/1.1 unless `close`; HTTP/1.0
/// only with `keep-alive`. `Connection` is a list, and may come more than once.
fn keeps_open(req: &httparse::Request) -> bool {
    let tokens = || {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    };
    if tokens().any(|t| t.eq_ignore_ascii_case(b"close")) {
        return false;
    }
    req.version == Some(1) || tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
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
    fn content_length_is_one_plain_number() {
        let with = |headers: &str| format!("POST /v1/dev/a HTTP/1.1\r\n{headers}\r\nhello");
        for good in [
            "Content-Length: 5\r\n",
            "Content-Length:  5 \r\n",
            "Content-Length: 005\r\n",
        ] {
            let req = with(good);
            assert!(
                matches!(frame(req.as_bytes(), 250), Framed::Request { total, .. } if total == req.len()),
                "{good:?}"
            );
        }
        for bad in [
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 0\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -5\r\n",
            "Content-Length: 5 5\r\n",
            "Content-Length: 5,5\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999999\r\n",
        ] {
            assert!(
                matches!(
                    frame(with(bad).as_bytes(), 250),
                    Framed::Refused("bad_content_length")
                ),
                "{bad:?}"
            );
        }
        for coding in ["chunked", "gzip", "identity"] {
            let req = with(&format!(
                "Transfer-Encoding: {coding}\r\nContent-Length: 5\r\n"
            ));
            assert!(
                matches!(frame(req.as_bytes(), 250), Framed::Refused("chunked")),
                "{coding}"
            );
        }
    }

    #[test]
    fn only_http_1_1_or_keep_alive_keeps_the_connection_open() {
        let open = |raw: &str| head(raw.as_bytes()).unwrap().keep_open;
        assert!(open("GET / HTTP/1.1\r\n\r\n"));
        assert!(!open("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!open("GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n"));
        assert!(!open("GET / HTTP/1.0\r\n\r\n"));
        assert!(open("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!open(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
        ));
    }

    #[test]
    fn a_framed_request_keeps_its_headers_body_and_query() {
        let raw = b"POST /v1/dev/a?iccid=1 HTTP/1.1\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi";
        let Framed::Request { head_len, total } = frame(raw, 250) else {
            panic!("not framed")
        };
        let h = head(&raw[..total]).unwrap();
        assert_eq!(
            (h.method, h.target, h.path),
            ("POST", "/v1/dev/a?iccid=1", "/v1/dev/a")
        );
        let r = h.request(&raw[head_len..total]).unwrap();
        assert_eq!(r.uri().query(), Some("iccid=1"));
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.body().as_ref(), b"hi");
        // A target httparse takes but `http` does not: framed, refused, connection kept.
        let odd = b"GET /a<b HTTP/1.1\r\n\r\n";
        let Framed::Request { head_len, total } = frame(odd, 250) else {
            panic!("not framed")
        };
        let h = head(&odd[..total]).unwrap();
        assert_eq!(
            h.request(&odd[head_len..total]).unwrap_err(),
            BadRequest { keep_open: true }
        );
    }
}
