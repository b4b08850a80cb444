//! The wolfSSL server: CTX and SSL ownership, the C callbacks, and the tokio I/O pump.
//!
//! wolfSSL never touches the socket. Its I/O callbacks read from and append to
//! buffers in [`Io`]; after each wolfSSL call the output is flushed to the socket, and
//! on WANT_READ more socket bytes are awaited. So a refused client gets its alert
//! instead of a hang, and the raw ClientHello can be read before wolfSSL sees it.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_ulong, c_void};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::hello::{self, Policy, Scan};
use wolfssl_sys as ffi;
use zeroize::Zeroizing;

use super::{KeyExchange, PskLookup, ServerConfig, TlsError, TlsStream};

// `Server` is shared between tasks on several threads; that needs wolfSSL's own locking.
const _: () = assert!(!ffi::SINGLE_THREADED, "wolfSSL must be built with threads");

const SUCCESS: c_int = ffi::WOLFSSL_SUCCESS as c_int;
const ERROR_WANT_READ: c_int = ffi::WOLFSSL_ERROR_WANT_READ as c_int;
const ERROR_ZERO_RETURN: c_int = ffi::WOLFSSL_ERROR_ZERO_RETURN as c_int;
const SOCKET_PEER_CLOSED: c_int = ffi::wolfSSL_ErrorCodes_SOCKET_PEER_CLOSED_E;
const CBIO_ERR_GENERAL: c_int = ffi::IOerrors_WOLFSSL_CBIO_ERR_GENERAL;
const CBIO_ERR_WANT_READ: c_int = ffi::IOerrors_WOLFSSL_CBIO_ERR_WANT_READ;
const CBIO_ERR_CONN_CLOSE: c_int = ffi::IOerrors_WOLFSSL_CBIO_ERR_CONN_CLOSE;
/// Largest plaintext handed to one `wolfSSL_write`, to bound the output buffer.
const WRITE_CHUNK: usize = 64 * 1024;

static INIT: Once = Once::new();

pub(super) fn init() {
    INIT.call_once(|| {
        // SAFETY: no preconditions; `Once` keeps it to one call per process. A failure
        // shows up as `wolfSSL_CTX_new` returning NULL.
        unsafe { ffi::wolfSSL_Init() };
    });
}

/// The TLS 1.3 PSK-only server: one `WOLFSSL_CTX`, shared by all connections.
pub struct Server {
    ctx: Ctx,
    lookup: Arc<dyn PskLookup>,
    handshake_timeout: Duration,
    policy: Policy,
}

struct Ctx(NonNull<ffi::WOLFSSL_CTX>);

// SAFETY: the CTX is only configured in `Server::new`; afterwards wolfSSL only reads it
// and counts its references under its own mutex (guaranteed by the assert above).
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: we own this reference; live SSL objects hold their own.
        unsafe { ffi::wolfSSL_CTX_free(self.0.as_ptr()) };
    }
}

impl Server {
    /// Builds the CTX: TLS 1.3 server method, no certificate, PSK via the TLS 1.3
    /// callback, no session tickets.
    pub fn new(cfg: ServerConfig, lookup: Arc<dyn PskLookup>) -> Result<Self, TlsError> {
        init();
        let policy = Policy {
            suites: hello::suite_numbers(&cfg.cipher_list),
            kex_modes: match cfg.key_exchange {
                KeyExchange::Both => None,
                KeyExchange::PskKe => Some(vec![hello::PSK_KE]),
                KeyExchange::PskDheKe => Some(vec![hello::PSK_DHE_KE]),
            },
        };
        let cipher_list = CString::new(cfg.cipher_list)
            .map_err(|_| TlsError::Config("cipher list contains a NUL byte".into()))?;
        // SAFETY: `wolfSSL_CTX_new` takes ownership of the method (and frees it on failure).
        let raw = unsafe { ffi::wolfSSL_CTX_new(ffi::wolfTLSv1_3_server_method()) };
        let ctx =
            Ctx(NonNull::new(raw)
                .ok_or_else(|| TlsError::Config("wolfSSL_CTX_new failed".into()))?);
        let c = ctx.0.as_ptr();

        // SAFETY: `c` is a valid CTX we own exclusively; `cipher_list` outlives the call.
        if unsafe { ffi::wolfSSL_CTX_set_cipher_list(c, cipher_list.as_ptr()) } != SUCCESS {
            return Err(TlsError::Config(format!(
                "wolfSSL rejected cipher list {cipher_list:?}"
            )));
        }
        // The TLS 1.3 callback lets wolfSSL try each candidate suite; the TLS 1.2-style
        // one pins GCM and breaks CCM-only SIMs.
        // SAFETY: `c` is valid; the callback is a plain function.
        unsafe { ffi::wolfSSL_CTX_set_psk_server_tls13_callback(c, Some(psk_server_callback)) };
        // Neither call in `Both`: SIM applets send psk_ke, OpenSSL psk_dhe_ke.
        // (`wolfSSL_CTX_require_psk` is never used: it rejects psk_ke.)
        // SAFETY: `c` is a valid TLS 1.3 CTX; these only set flags (0 means success).
        let rc = unsafe {
            match cfg.key_exchange {
                KeyExchange::Both => 0,
                KeyExchange::PskKe => ffi::wolfSSL_CTX_no_dhe_psk(c),
                KeyExchange::PskDheKe => ffi::wolfSSL_CTX_only_dhe_psk(c),
            }
        };
        if rc != 0 {
            return Err(TlsError::Config(format!(
                "wolfSSL key exchange setting failed ({rc})"
            )));
        }
        // Tickets would cost a SIM bytes and are never used for resumption.
        // SAFETY: `c` is a valid TLS 1.3 server CTX.
        let rc = unsafe { ffi::wolfSSL_CTX_no_ticket_TLSv13(c) };
        if rc != 0 {
            return Err(TlsError::Config(format!("disabling tickets failed ({rc})")));
        }
        // SAFETY: `c` is valid; the callbacks are plain functions that only use the
        // context pointer each SSL object gets in `Session::new`.
        unsafe {
            ffi::wolfSSL_CTX_SetIORecv(c, Some(io_recv));
            ffi::wolfSSL_CTX_SetIOSend(c, Some(io_send));
        }
        Ok(Self {
            ctx,
            lookup,
            handshake_timeout: cfg.handshake_timeout,
            policy,
        })
    }

    /// Runs the server handshake on `tcp`, bounded by the configured handshake timeout.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream, TlsError> {
        tokio::time::timeout(self.handshake_timeout, self.handshake(tcp))
            .await
            .unwrap_or(Err(TlsError::Timeout))
    }

    async fn handshake(&self, mut tcp: TcpStream) -> Result<TlsStream, TlsError> {
        let hello = read_client_hello(&mut tcp, &self.policy).await?;
        let mut session = Session::new(&self.ctx, tcp, Arc::clone(&self.lookup), hello)?;
        // SAFETY: `ssl` is the session's live SSL object (see `Session::drive`).
        let accepted = session
            .drive(|ssl| unsafe { ffi::wolfSSL_accept(ssl) })
            .await;
        match accepted {
            Ok(ret) if ret == SUCCESS => {}
            Ok(ret) => return Err(handshake_error(ret)),
            Err(Fail::Io(e)) => return Err(TlsError::Io(e)),
            Err(Fail::Wolf(code)) => return Err(handshake_error(code)),
        }
        let identity = session
            .take_identity()
            .ok_or_else(|| handshake_error(ffi::wolfSSL_ErrorCodes_PSK_KEY_ERROR))?;
        let cipher = session.cipher_name();
        Ok(TlsStream {
            identity,
            cipher,
            session,
        })
    }
}

/// A plaintext fatal `handshake_failure` alert record (RFC 8446 §6): nothing was
/// negotiated yet, so it goes out unencrypted.
const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 40];

/// What was read of a connection before wolfSSL takes it over.
struct Hello {
    /// Every byte read so far: the ClientHello and whatever followed it.
    input: BytesMut,
    /// The peer closed its sending side.
    eof: bool,
    /// Raw identities from the ClientHello's `pre_shared_key` extension.
    offered: Vec<Vec<u8>>,
}

/// Reads until the whole ClientHello is buffered (or it is clearly not one) and
/// records the raw PSK identities it offers; wolfSSL then reads the same bytes. Runs
/// before any wolfSSL object exists, so a peer that connects and stalls holds only
/// its socket and at most a few KiB here (see `hello::MAX_HELLO_BYTES`).
async fn read_client_hello(tcp: &mut TcpStream, policy: &Policy) -> Result<Hello, TlsError> {
    let mut input = BytesMut::new();
    let mut eof = false;
    loop {
        let refused = match hello::scan(&input, policy) {
            Scan::Done(offered) => {
                return Ok(Hello {
                    input,
                    eof,
                    offered,
                });
            }
            Scan::NeedMore if eof => {
                return Ok(Hello {
                    input,
                    eof,
                    offered: Vec::new(),
                });
            }
            Scan::NeedMore => {
                // A SIM's whole hello fits the first read.
                input.reserve(1024);
                if tcp.read_buf(&mut input).await? == 0 {
                    eof = true;
                }
                continue;
            }
            Scan::NoPsk => TlsError::Handshake {
                code: 0,
                reason: "the client offered no PSK".into(),
            },
            Scan::Refused(refusal) => TlsError::Refused(refusal),
        };
        tcp.write_all(&HANDSHAKE_FAILURE_ALERT).await?;
        return Err(refused);
    }
}

fn handshake_error(code: c_int) -> TlsError {
    TlsError::Handshake {
        code,
        reason: error_string(code),
    }
}

fn error_string(code: c_int) -> String {
    let mut buf = [0 as c_char; 96];
    // SAFETY: wolfSSL writes at most `buf.len()` bytes, NUL-terminated. Negative error
    // codes are passed as their two's complement, as wolfSSL expects.
    unsafe { ffi::wolfSSL_ERR_error_string_n(code as c_ulong, buf.as_mut_ptr(), buf.len() as _) };
    // SAFETY: NUL-terminated by wolfSSL (and the buffer was zeroed).
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Everything the C callbacks of one connection touch, behind one stable address.
struct Io {
    /// Socket bytes not yet consumed by wolfSSL.
    input: BytesMut,
    /// Bytes wolfSSL produced, not yet written to the socket.
    output: Vec<u8>,
    /// The peer closed its sending side.
    eof: bool,
    lookup: Arc<dyn PskLookup>,
    /// Raw identities from the ClientHello's `pre_shared_key` extension.
    offered: Vec<Vec<u8>>,
    /// The identity (and its key) last handed to wolfSSL: the one in use if the
    /// handshake succeeds. Kept so repeated callbacks (one per suite) look up once.
    last: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

enum Fail {
    Io(io::Error),
    /// wolfSSL error code from `wolfSSL_get_error`.
    Wolf(c_int),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

/// One server connection: the SSL object, its callback state and the socket.
pub(super) struct Session {
    ssl: NonNull<ffi::WOLFSSL>,
    /// Owned (from `Box::into_raw`); freed in `Drop` after `ssl`, which points into it.
    io: NonNull<Io>,
    tcp: TcpStream,
}

// SAFETY: the SSL object and its `Io` belong to this session alone, wolfSSL keeps no
// thread-bound state for them, and every use goes through `&mut self`.
unsafe impl Send for Session {}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: `ssl` is ours; it is freed before the `Io` its callbacks point into,
        // and `io` came from `Box::into_raw` and is not referenced anywhere else.
        unsafe {
            ffi::wolfSSL_free(self.ssl.as_ptr());
            drop(Box::from_raw(self.io.as_ptr()));
        }
    }
}

impl Session {
    fn new(
        ctx: &Ctx,
        tcp: TcpStream,
        lookup: Arc<dyn PskLookup>,
        hello: Hello,
    ) -> Result<Self, TlsError> {
        let io = NonNull::from(Box::leak(Box::new(Io {
            input: hello.input,
            output: Vec::with_capacity(1024),
            eof: hello.eof,
            lookup,
            offered: hello.offered,
            last: None,
        })));
        // SAFETY: the CTX is valid for the duration of the call; the SSL takes a reference.
        let Some(ssl) = NonNull::new(unsafe { ffi::wolfSSL_new(ctx.0.as_ptr()) }) else {
            // SAFETY: `io` came from `Box::leak` above and nothing else refers to it.
            drop(unsafe { Box::from_raw(io.as_ptr()) });
            return Err(TlsError::Config("wolfSSL_new failed".into()));
        };
        // Constructed before the calls below so every error path frees both.
        let session = Self { ssl, io, tcp };
        let s = ssl.as_ptr();
        let ctx_ptr = io.as_ptr().cast::<c_void>();
        // SAFETY: `s` is valid; `io` lives until after `wolfSSL_free` (see `Drop`).
        let rc = unsafe {
            ffi::wolfSSL_SetIOReadCtx(s, ctx_ptr);
            ffi::wolfSSL_SetIOWriteCtx(s, ctx_ptr);
            ffi::wolfSSL_set_psk_callback_ctx(s, ctx_ptr)
        };
        if rc != SUCCESS {
            return Err(TlsError::Config(format!(
                "wolfSSL_set_psk_callback_ctx failed ({rc})"
            )));
        }
        Ok(session)
    }

    pub(super) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket and the callback state, borrowed together. Never held across a
    /// wolfSSL call (the callbacks make their own reference then).
    fn parts(&mut self) -> (&mut TcpStream, &mut Io) {
        // SAFETY: `io` is valid until `Drop`; `&mut self` excludes any other Rust
        // reference, and no wolfSSL call runs while this borrow lives.
        (&mut self.tcp, unsafe { self.io.as_mut() })
    }

    /// Reads whatever the socket has into the input buffer; notes EOF.
    async fn fill(&mut self) -> io::Result<()> {
        let (tcp, io) = self.parts();
        io.input.reserve(4096);
        if tcp.read_buf(&mut io.input).await? == 0 {
            io.eof = true;
        }
        Ok(())
    }

    /// Writes out what wolfSSL produced. Progress is kept in the buffer, so a cancelled
    /// flush resumes where it stopped.
    async fn flush(&mut self) -> io::Result<()> {
        let (tcp, io) = self.parts();
        while !io.output.is_empty() {
            let n = tcp.write(&io.output).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io.output.drain(..n);
        }
        Ok(())
    }

    /// Repeats one wolfSSL call until it stops asking for input: flushes after every
    /// attempt (alerts included) and feeds socket bytes on WANT_READ. Returns the
    /// call's non-negative result.
    async fn drive(
        &mut self,
        mut call: impl FnMut(*mut ffi::WOLFSSL) -> c_int,
    ) -> Result<c_int, Fail> {
        loop {
            let ret = call(self.ssl.as_ptr());
            self.flush().await?;
            if ret >= 0 {
                return Ok(ret);
            }
            // SAFETY: `ssl` is valid; reads the error of the call that just returned.
            let err = unsafe { ffi::wolfSSL_get_error(self.ssl.as_ptr(), ret) };
            if err != ERROR_WANT_READ {
                return Err(Fail::Wolf(err));
            }
            if self.parts().1.eof {
                // The callback reports CONN_CLOSE at EOF, so this is not expected.
                return Err(Fail::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.fill().await?;
        }
    }

    fn take_identity(&mut self) -> Option<Vec<u8>> {
        let (_, io) = self.parts();
        io.offered.clear();
        io.last.take().map(|(identity, _key)| identity)
    }

    fn cipher_name(&self) -> String {
        // SAFETY: `ssl` is valid; the name is a static string inside wolfSSL.
        let name = unsafe { ffi::wolfSSL_get_cipher_name(self.ssl.as_ptr()) };
        if name.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated and static.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }

    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `buf` is valid for `len` bytes for the whole call.
        let ret = self
            .drive(|ssl| unsafe { ffi::wolfSSL_read(ssl, buf.as_mut_ptr().cast(), len) })
            .await;
        match ret {
            // 0: close_notify, or the peer closed the socket. wolfSSL reports the same
            // as an error on the next read, hence the codes below.
            Ok(n) => Ok(n as usize),
            Err(Fail::Wolf(ERROR_ZERO_RETURN | SOCKET_PEER_CLOSED)) => Ok(0),
            Err(Fail::Io(e)) => Err(e),
            Err(Fail::Wolf(code)) => Err(io::Error::other(format!(
                "TLS read failed ({code}): {}",
                error_string(code)
            ))),
        }
    }

    pub(super) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(WRITE_CHUNK) {
            let len = chunk.len() as c_int;
            // wolfSSL writes the whole chunk or fails: partial writes are not enabled
            // and the send callback never pushes back.
            // SAFETY: `chunk` is valid for `len` bytes for the whole call.
            let written = self
                .drive(|ssl| unsafe { ffi::wolfSSL_write(ssl, chunk.as_ptr().cast(), len) })
                .await;
            match written {
                Ok(n) if n == len => {}
                Ok(_) => return Err(io::Error::other("TLS write incomplete")),
                Err(Fail::Io(e)) => return Err(e),
                Err(Fail::Wolf(code)) => {
                    return Err(io::Error::other(format!(
                        "TLS write failed ({code}): {}",
                        error_string(code)
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn shutdown(&mut self) {
        // Sends close_notify without waiting for the peer's (that would need a read).
        // SAFETY: `ssl` is valid.
        unsafe { ffi::wolfSSL_shutdown(self.ssl.as_ptr()) };
        let _ = self.flush().await;
        let _ = self.tcp.shutdown().await;
    }
}

/// wolfSSL asks for input: hand it buffered socket bytes, or say to wait.
unsafe extern "C" fn io_recv(
    _ssl: *mut ffi::WOLFSSL,
    buf: *mut c_char,
    sz: c_int,
    ctx: *mut c_void,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the session's `Io`, alive until after `wolfSSL_free`; no Rust
        // reference to it exists while wolfSSL runs.
        let io = unsafe { &mut *ctx.cast::<Io>() };
        if io.input.is_empty() {
            return if io.eof {
                CBIO_ERR_CONN_CLOSE
            } else {
                CBIO_ERR_WANT_READ
            };
        }
        let n = io.input.len().min(usize::try_from(sz).unwrap_or(0));
        // SAFETY: wolfSSL provides `sz` writable bytes at `buf`; `n <= sz`.
        unsafe { ptr::copy_nonoverlapping(io.input.as_ptr(), buf.cast::<u8>(), n) };
        io.input.advance(n);
        n as c_int
    }))
    .unwrap_or(CBIO_ERR_GENERAL)
}

/// wolfSSL has output: keep it for the next flush.
unsafe extern "C" fn io_send(
    _ssl: *mut ffi::WOLFSSL,
    buf: *mut c_char,
    sz: c_int,
    ctx: *mut c_void,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(len) = usize::try_from(sz) else {
            return CBIO_ERR_GENERAL;
        };
        // SAFETY: as in `io_recv`.
        let io = unsafe { &mut *ctx.cast::<Io>() };
        // SAFETY: wolfSSL provides `sz` readable bytes at `buf`.
        io.output
            .extend_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) });
        sz
    }))
    .unwrap_or(CBIO_ERR_GENERAL)
}

/// The TLS 1.3 server PSK callback; 0 refuses the identity.
///
/// Runs once per candidate suite. wolfSSL passes the identity as a C string, so the
/// raw bytes come from the ClientHello read earlier.
unsafe extern "C" fn psk_server_callback(
    ssl: *mut ffi::WOLFSSL,
    identity: *const c_char,
    key: *mut u8,
    key_max_len: c_uint,
    cipher_suite: *mut *const c_char,
) -> c_uint {
    catch_unwind(AssertUnwindSafe(|| {
        if identity.is_null() || key.is_null() || cipher_suite.is_null() {
            return 0;
        }
        // SAFETY: `ssl` is the live SSL object calling us.
        let io = unsafe { ffi::wolfSSL_get_psk_callback_ctx(ssl) }.cast::<Io>();
        if io.is_null() {
            return 0;
        }
        // SAFETY: set in `Session::new` to the session's `Io`; no other reference to it
        // exists while wolfSSL runs.
        let io = unsafe { &mut *io };
        // SAFETY: wolfSSL passes a NUL-terminated identity.
        let cut = unsafe { CStr::from_ptr(identity) }.to_bytes();

        let raw = io
            .offered
            .iter()
            .find(|raw| raw.split(|b| *b == 0).next() == Some(cut))
            .cloned()
            // ClientHello not parsed by us but by wolfSSL: the C string is all there is.
            .unwrap_or_else(|| cut.to_vec());
        let psk = match io.last.take() {
            Some((id, psk)) if id == raw => psk,
            _ => io.lookup.key_for(&raw),
        };
        if psk.is_empty() || psk.len() > key_max_len as usize {
            return 0;
        }
        // The suite wolfSSL is trying right now: a fixed name would break CCM.
        // SAFETY: `ssl` is valid; the name returned is static inside wolfSSL.
        let suite = unsafe { ffi::wolfSSL_get_cipher_name_by_hash(ssl, c"SHA256".as_ptr()) };
        if suite.is_null() {
            return 0;
        }
        // SAFETY: `key` has room for `key_max_len` bytes and `psk.len()` is within it;
        // `cipher_suite` is a valid out-pointer.
        unsafe {
            ptr::copy_nonoverlapping(psk.as_ptr(), key, psk.len());
            *cipher_suite = suite;
        }
        let len = psk.len() as c_uint;
        io.last = Some((raw, psk));
        len
    }))
    .unwrap_or(0)
}
