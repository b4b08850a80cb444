//! The HTTP/1.1 client that talks to the node: one persistent keep-alive connection, one
//! request at a time, every call bounded by one deadline.
//!
//! Why not `ureq`: it is not in the workspace (new crates to vet and build), it brings its
//! own pool, TLS and proxy machinery the loopback hop does not need, and its timeouts are
//! per phase, whereas the broker loop needs one budget for connect + write + read across a
//! reconnect. This client is a non-blocking `std::net::TcpStream`, `ppoll` for the waits
//! and `httparse` for the answer: a call on a live connection costs four syscalls (a
//! `peek` to spot a connection the node closed while idle, `write`, `ppoll`, `read`).
//! Measured per-call latency: see `BENCH.md`.
//!
//! Bounds: response head ≤ 8 KiB, body ≤ 1 MiB, `Content-Length` required (no chunked
//! bodies). A response that breaks any of them poisons the connection; it is dropped.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

pub const MAX_HEAD: usize = 8 * 1024;
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEADERS: usize = 32;

#[derive(Debug)]
pub enum HttpError {
    /// The deadline passed (connecting, writing or waiting for the answer).
    Timeout,
    Connect(io::Error),
    Io(io::Error),
    /// The node closed the connection before answering.
    Closed,
    HeadTooLarge,
    BodyTooLarge,
    NoContentLength,
    Malformed(&'static str),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Connect(err) => write!(f, "cannot connect: {err}"),
            HttpError::Io(err) => write!(f, "i/o error: {err}"),
            HttpError::Closed => write!(f, "connection closed before the answer"),
            HttpError::HeadTooLarge => write!(f, "response head over {MAX_HEAD} bytes"),
            HttpError::BodyTooLarge => write!(f, "response body over {MAX_BODY} bytes"),
            HttpError::NoContentLength => write!(f, "response without Content-Length"),
            HttpError::Malformed(what) => write!(f, "malformed response: {what}"),
        }
    }
}

impl HttpError {
    /// A reused connection that fails like this was most likely closed by the node while
    /// idle: worth one retry on a fresh connection.
    fn is_stale(&self) -> bool {
        match self {
            HttpError::Closed => true,
            HttpError::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct HttpClient {
    addrs: Vec<SocketAddr>,
    authority: String,
    /// `Bearer <key>`, ready for the header.
    authorization: Zeroizing<String>,
    timeout: Duration,
    conn: Option<TcpStream>,
    /// Connections opened so far; tests and the benchmark note read it.
    pub connects: u64,
}

impl HttpClient {
    pub fn new(
        addrs: Vec<SocketAddr>,
        authority: String,
        key: &str,
        timeout: Duration,
    ) -> HttpClient {
        HttpClient {
            addrs,
            authority,
            authorization: Zeroizing::new(format!("Bearer {key}")),
            timeout,
            conn: None,
            connects: 0,
        }
    }

    /// POSTs a JSON body; returns whatever status the node answered. The whole call, a
    /// reconnect included, ends within the configured timeout (plus scheduling slack).
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        let deadline = Instant::now() + self.timeout;
        // The request holds the key and, for auth, a password: wiped when dropped.
        let mut request = Zeroizing::new(Vec::with_capacity(256 + body.len()));
        request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.authority,
                self.authorization.as_str(),
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);

        if let Some(conn) = self.conn.take().filter(still_open) {
            match exchange(&conn, &request, deadline) {
                Ok((response, keep)) => {
                    if keep {
                        self.conn = Some(conn);
                    }
                    return Ok(response);
                }
                Err(err) if err.is_stale() => {}
                Err(err) => return Err(err),
            }
        }
        let conn = self.connect(deadline)?;
        let (response, keep) = exchange(&conn, &request, deadline)?;
        if keep {
            self.conn = Some(conn);
        }
        Ok(response)
    }

    fn connect(&mut self, deadline: Instant) -> Result<TcpStream, HttpError> {
        let mut last = None;
        for addr in &self.addrs {
            let remaining = remaining(deadline)?;
            match TcpStream::connect_timeout(addr, remaining) {
                Ok(conn) => {
                    self.connects += 1;
                    // Request and answer are one segment each; Nagle would only add delay.
                    conn.set_nodelay(true).map_err(HttpError::Io)?;
                    // Every wait goes through `wait`, which keeps the deadline.
                    conn.set_nonblocking(true).map_err(HttpError::Io)?;
                    return Ok(conn);
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    return Err(HttpError::Timeout);
                }
                Err(err) => last = Some(err),
            }
        }
        Err(HttpError::Connect(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no address")
        })))
    }
}

fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or(HttpError::Timeout)
}

/// An idle keep-alive connection the node has closed reads as EOF; one with unread bytes
/// is out of step with us. Either way: do not reuse it. (Sockets are non-blocking.)
fn still_open(conn: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.peek(&mut byte), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
}

/// Waits until `conn` is ready for `events` or the deadline passes.
///
/// `ppoll` rather than `SO_RCVTIMEO`/`SO_SNDTIMEO`: socket timeouts run on the kernel's
/// jiffy clock and were measured here overshooting 250 ms by 5-30 ms under load; `ppoll`
/// sleeps on a high-resolution timer and ends within a fraction of a millisecond.
fn wait(conn: &TcpStream, events: libc::c_short, deadline: Instant) -> Result<(), HttpError> {
    loop {
        let left = remaining(deadline)?;
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        let mut fd = libc::pollfd {
            fd: conn.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one pollfd for a socket we own, a valid timespec, and no signal mask
        // (NULL keeps the caller's); ppoll touches nothing else.
        let ready = unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
        match ready {
            // Readable, writable, or an error/hang-up the next read or write reports.
            1.. => return Ok(()),
            0 => return Err(HttpError::Timeout),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(HttpError::Io(err));
                }
            }
        }
    }
}

/// Sends one request and reads one response. Returns whether the connection may be reused.
fn exchange(
    mut conn: &TcpStream,
    request: &[u8],
    deadline: Instant,
) -> Result<(Response, bool), HttpError> {
    let mut sent = 0;
    while sent < request.len() {
        match conn.write(&request[sent..]) {
            Ok(0) => return Err(HttpError::Closed),
            Ok(n) => sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                wait(conn, libc::POLLOUT, deadline)?
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(HttpError::Io(err)),
        }
    }

    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    let mut head: Option<Head> = None;
    loop {
        if let Some(head) = &head {
            let total = head.len + head.content_length;
            if buf.len() >= total {
                // Bytes past the body mean we lost track of the message boundary.
                let keep = head.keep_alive && buf.len() == total;
                let body = buf[head.len..total].to_vec();
                return Ok((
                    Response {
                        status: head.status,
                        body,
                    },
                    keep,
                ));
            }
        }
        // The answer is never there yet right after the request: wait first, then read.
        wait(conn, libc::POLLIN, deadline)?;
        let n = match conn.read(&mut chunk) {
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => return Err(HttpError::Io(err)),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                HttpError::Closed
            } else {
                HttpError::Malformed("connection closed mid-response")
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            head = parse_head(&buf)?;
        }
    }
}

struct Head {
    len: usize,
    status: u16,
    content_length: usize,
    keep_alive: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed("bad status line or header")),
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let status = response.code.ok_or(HttpError::Malformed("no status"))?;
    let mut content_length = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(HttpError::Malformed("bad Content-Length"))?;
            if content_length.is_some_and(|seen| seen != value) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::NoContentLength);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let content_length = content_length.ok_or(HttpError::NoContentLength)?;
    if content_length > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    let keep_alive = !close && (response.version == Some(1) || keep_alive_token);
    Ok(Some(Head {
        len,
        status,
        content_length,
        keep_alive,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex, mpsc};
    use std::thread;

    /// What the test responder does with one request.
    #[derive(Clone)]
    pub(crate) enum Reply {
        /// Status and body, with a correct Content-Length, keeping the connection.
        Json(u16, String),
        /// Bytes written as they are, then the connection is closed.
        Raw(Vec<u8>),
        /// Wait this long, then answer with the inner reply.
        Slow(Duration, Box<Reply>),
        /// Answer, then close the connection.
        ThenClose(Box<Reply>),
    }

    /// A request as the responder saw it.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub path: String,
        pub authorization: String,
        pub body: String,
        /// Which accepted connection (0, 1, ...) carried it.
        pub connection: usize,
    }

    /// A loopback HTTP server on a free port whose answers come from `answer`.
    pub(crate) struct Responder {
        pub addr: SocketAddr,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Responder {
        pub(crate) fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Responder {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let answer = Arc::new(answer);
            let record = seen.clone();
            thread::spawn(move || {
                for (connection, stream) in listener.incoming().enumerate() {
                    let Ok(stream) = stream else { return };
                    let answer = answer.clone();
                    let record = record.clone();
                    thread::spawn(move || serve(stream, connection, &*answer, &record));
                }
            });
            Responder { addr, seen }
        }

        pub(crate) fn client(&self, timeout: Duration) -> HttpClient {
            HttpClient::new(vec![self.addr], self.addr.to_string(), "test-key", timeout)
        }

        pub(crate) fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn serve(
        stream: TcpStream,
        connection: usize,
        answer: &dyn Fn(&Seen) -> Reply,
        record: &Mutex<Vec<Seen>>,
    ) {
        let mut reader = io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            let mut length = 0;
            let mut authorization = String::new();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => authorization = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let seen = Seen {
                path,
                authorization,
                body: String::from_utf8(body).unwrap(),
                connection,
            };
            record.lock().unwrap().push(seen.clone());
            if !write_reply(&mut writer, answer(&seen)) {
                return;
            }
        }
    }

    /// Returns whether the connection stays open.
    fn write_reply(writer: &mut TcpStream, reply: Reply) -> bool {
        match reply {
            Reply::Json(status, body) => {
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                writer.write_all(response.as_bytes()).is_ok()
            }
            Reply::Raw(bytes) => {
                let _ = writer.write_all(&bytes);
                false
            }
            Reply::Slow(delay, reply) => {
                thread::sleep(delay);
                write_reply(writer, *reply)
            }
            Reply::ThenClose(reply) => {
                write_reply(writer, *reply);
                false
            }
        }
    }

    fn json(status: u16, body: &str) -> Reply {
        Reply::Json(status, body.to_owned())
    }

    const TIMEOUT: Duration = Duration::from_millis(250);

    #[test]
    fn sends_the_contract_and_reads_the_answer() {
        let node = Responder::start(|_| json(200, r#"{"result":"allow"}"#));
        let mut client = node.client(TIMEOUT);
        let response = client.post_json("/broker/v1/auth", br#"{"a":1}"#).unwrap();
        assert_eq!(
            response,
            Response {
                status: 200,
                body: br#"{"result":"allow"}"#.to_vec()
            }
        );
        let seen = node.seen();
        assert_eq!(seen[0].path, "/broker/v1/auth");
        assert_eq!(seen[0].authorization, "Bearer test-key");
        assert_eq!(seen[0].body, r#"{"a":1}"#);
    }

    #[test]
    fn other_statuses_come_back_as_they_are() {
        let node = Responder::start(|_| json(503, "busy"));
        let mut client = node.client(TIMEOUT);
        assert_eq!(client.post_json("/x", b"{}").unwrap().status, 503);
        // The connection stays usable after a non-200 with a proper length.
        assert_eq!(client.post_json("/x", b"{}").unwrap().status, 503);
        assert_eq!(client.connects, 1);
    }

    #[test]
    fn keeps_one_connection_alive() {
        let node = Responder::start(|_| json(200, "{}"));
        let mut client = node.client(TIMEOUT);
        for _ in 0..5 {
            client.post_json("/x", b"{}").unwrap();
        }
        assert_eq!(client.connects, 1);
        assert!(node.seen().iter().all(|seen| seen.connection == 0));
    }

    #[test]
    fn reconnects_after_the_server_closes() {
        let node = Responder::start(|_| Reply::ThenClose(Box::new(json(200, "{}"))));
        let mut client = node.client(TIMEOUT);
        for _ in 0..3 {
            assert_eq!(client.post_json("/x", b"{}").unwrap().status, 200);
            // Let the FIN arrive so the idle check sees it, as it would between CONNECTs.
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(client.connects, 3);
    }

    #[test]
    fn retries_once_when_a_reused_connection_turns_out_dead() {
        // The server keeps the connection after the first answer but drops the second
        // request unanswered: the client cannot know beforehand and must retry.
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let node = Responder::start(move |seen| {
            if seen.connection == 0 && rx.lock().unwrap().try_recv().is_ok() {
                Reply::Raw(Vec::new())
            } else {
                json(200, "{}")
            }
        });
        let mut client = node.client(TIMEOUT);
        client.post_json("/x", b"{}").unwrap();
        tx.send(()).unwrap();
        assert_eq!(client.post_json("/x", b"{}").unwrap().status, 200);
        assert_eq!(client.connects, 2);
    }

    #[test]
    fn a_slow_node_costs_no_more_than_the_timeout() {
        let node =
            Responder::start(|_| Reply::Slow(Duration::from_secs(2), Box::new(json(200, "{}"))));
        let mut client = node.client(Duration::from_millis(100));
        let started = Instant::now();
        assert!(matches!(
            client.post_json("/x", b"{}"),
            Err(HttpError::Timeout)
        ));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(150),
            "{took:?}"
        );
    }

    #[test]
    fn the_deadline_covers_a_reconnect() {
        // First answer fast, then close; the retry on a fresh connection meets a slow node:
        // the whole second call still ends at the deadline.
        let node = Responder::start(|seen| {
            if seen.connection == 0 {
                Reply::ThenClose(Box::new(json(200, "{}")))
            } else {
                Reply::Slow(Duration::from_secs(2), Box::new(json(200, "{}")))
            }
        });
        let mut client = node.client(Duration::from_millis(100));
        client.post_json("/x", b"{}").unwrap();
        let started = Instant::now();
        assert!(matches!(
            client.post_json("/x", b"{}"),
            Err(HttpError::Timeout)
        ));
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn refused_connect_fails_fast() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let mut client = HttpClient::new(vec![addr], addr.to_string(), "k", TIMEOUT);
        let started = Instant::now();
        assert!(matches!(
            client.post_json("/x", b"{}"),
            Err(HttpError::Connect(_))
        ));
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn garbage_and_oversize_are_refused() {
        type Expected = fn(&HttpError) -> bool;
        let cases: Vec<(Reply, Expected)> = vec![
            (Reply::Raw(b"hello there\r\n\r\n".to_vec()), |e| {
                matches!(e, HttpError::Malformed(_))
            }),
            (Reply::Raw(b"HTTP/1.1 200 OK\r\n\r\n{}".to_vec()), |e| {
                matches!(e, HttpError::NoContentLength)
            }),
            (
                Reply::Raw(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                        .to_vec(),
                ),
                |e| matches!(e, HttpError::NoContentLength),
            ),
            (
                Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}".to_vec()),
                |e| matches!(e, HttpError::Malformed(_)),
            ),
            (
                Reply::Raw(
                    format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD)).into_bytes(),
                ),
                |e| matches!(e, HttpError::HeadTooLarge),
            ),
            (
                Reply::Raw(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        MAX_BODY + 1
                    )
                    .into_bytes(),
                ),
                |e| matches!(e, HttpError::BodyTooLarge),
            ),
            (Reply::Raw(Vec::new()), |e| matches!(e, HttpError::Closed)),
        ];
        for (reply, expected) in cases {
            let node = Responder::start(move |_| reply.clone());
            let mut client = node.client(TIMEOUT);
            let err = client.post_json("/x", b"{}").unwrap_err();
            assert!(expected(&err), "{err}");
        }
    }

    #[test]
    fn a_body_at_the_limit_is_read() {
        let body = format!("\"{}\"", "a".repeat(MAX_BODY - 2));
        let node = Responder::start(move |_| Reply::Json(200, body.clone()));
        let mut client = node.client(Duration::from_secs(2));
        assert_eq!(client.post_json("/x", b"{}").unwrap().body.len(), MAX_BODY);
    }

    #[test]
    fn http_1_0_and_connection_close_are_not_reused() {
        let node = Responder::start(|seen| {
            if seen.connection % 2 == 0 {
                Reply::Raw(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec())
            } else {
                Reply::Raw(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
                )
            }
        });
        let mut client = node.client(TIMEOUT);
        for _ in 0..4 {
            assert_eq!(client.post_json("/x", b"{}").unwrap().body, b"{}");
        }
        assert_eq!(client.connects, 4);
    }
}
