//! TLS 1.3 PSK-only connections for the SIM port; every `unsafe` call into wolfSSL lives here.
//!
//! The server is wolfSSL driven through in-memory I/O callbacks: tokio owns the socket,
//! wolfSSL only sees buffers. That lets the server read the raw ClientHello before wolfSSL
//! does and recover PSK identities containing 0x00, which wolfSSL cuts at the first zero.
//! wolfSSL still writes after it has read the peer's close_notify (TLS 1.3 half-close),
//! so a response to a request followed at once by close_notify goes out as usual.
//!
//! The client the tests and the bench talk to it with is the `psk-client` crate, not
//! wolfSSL's: every wolfSSL client path measures the identity with `strlen`, so it could
//! never send a 10-byte BCD ICCID such as `98 44 05 00 …`.

mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

pub use server::Server;
pub use wire::hello::{KeyExchange, Refusal};

/// Initialises wolfSSL once per process; the constructors call it too.
pub fn init() {
    server::init();
}

/// Resolves a PSK identity to its key.
pub trait PskLookup: Send + Sync + 'static {
    /// Given the raw identity bytes the client offered, returns the key to use.
    ///
    /// For an unknown identity return a decoy key (e.g. derived from a server secret and
    /// the identity) so that it fails exactly like a wrong key: same alert, same work.
    /// Called on a runtime worker in the middle of the handshake, so it must not block.
    fn key_for(&self, identity: &[u8]) -> Zeroizing<Vec<u8>>;
}

/// The two suites the SIM port offers by default, in wolfSSL's names.
pub const DEFAULT_CIPHER_LIST: &str = "TLS13-AES128-CCM-SHA256:TLS13-AES128-GCM-SHA256";

/// How the SIM port's TLS server is set up: suites, key exchange, handshake bound.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// wolfSSL cipher list, e.g. `TLS13-AES128-CCM-SHA256:TLS13-AES128-GCM-SHA256`.
    pub cipher_list: String,
    /// Which PSK key exchange modes a ClientHello may offer (plain PSK, PSK with
    /// (EC)DHE, or both).
    pub key_exchange: KeyExchange,
    /// Bound on the whole handshake, from the first byte read to the client's Finished.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            cipher_list: DEFAULT_CIPHER_LIST.to_owned(),
            key_exchange: KeyExchange::Both,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a TLS connection on the SIM port did not come up or broke.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The handshake took longer than [`ServerConfig::handshake_timeout`].
    #[error("TLS handshake timed out")]
    Timeout,
    /// The socket failed.
    #[error("TLS I/O: {0}")]
    Io(#[from] std::io::Error),
    /// `code`: wolfSSL's error code (e.g. -423, binder does not verify).
    #[error("TLS handshake failed ({code}): {reason}")]
    Handshake {
        /// wolfSSL's error code; 0 when the client offered no PSK at all.
        code: i32,
        /// What failed: wolfSSL's text for the code, or ours for code 0.
        reason: String,
    },
    /// The server could not be set up (a bad cipher list, wolfSSL out of memory).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Refused from the ClientHello alone, with a `handshake_failure` alert; never
    /// because of the identity or the key, so it tells nothing about either.
    #[error("TLS handshake refused: {}", .0.reason())]
    Refused(Refusal),
}

/// An established TLS 1.3 connection, server side.
///
/// `Send`, so it can move between tasks; used by one task at a time (`&mut self`).
pub struct TlsStream {
    identity: Vec<u8>,
    cipher: String,
    session: server::Session,
}

impl TlsStream {
    /// The raw PSK identity bytes that authenticated this connection.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The negotiated suite in wolfSSL's naming, e.g. `TLS13-AES128-CCM-SHA256`.
    pub fn cipher_name(&self) -> &str {
        &self.cipher
    }

    /// The SIM's address as the TCP socket sees it.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.session.tcp().peer_addr()
    }

    /// Reads application data; `Ok(0)` once the peer sent close_notify or closed the
    /// socket. Data that came before a close_notify is always returned first.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.session.read(buf).await
    }

    /// Writes all of `data`; still works after the peer's close_notify (half-close).
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.session.write_all(data).await
    }

    /// Best effort: sends close_notify, flushes, and closes the sending half of the socket.
    pub async fn shutdown(&mut self) {
        self.session.shutdown().await
    }
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("identity", &hex::encode(&self.identity))
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}
