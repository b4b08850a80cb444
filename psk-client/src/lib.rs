//! A small native TLS 1.3 PSK client (RFC 8446), for psk-edge's tests and load generation.
//!
//! It exists because no Rust TLS crate offers an external-PSK client, and wolfSSL's
//! client measures the PSK identity with `strlen`, so a BCD ICCID containing 0x00
//! cannot be sent through it. Scope: external PSK only (no certificates, no resumption,
//! no early data, no HelloRetryRequest), SHA-256 suites (AES-128-GCM and AES-128-CCM),
//! X25519 for psk_dhe_ke. It sends what a SIM applet sends: an empty legacy session id
//! and no middlebox-compatibility records.
//!
//! [`codec`] frames and builds messages, [`key_schedule`] derives secrets stage by
//! stage, [`record`] protects records, [`handshake`] runs the handshake and
//! [`session`] the connection after it.

mod codec;
mod handshake;
mod key_schedule;
mod record;
mod session;

use std::fmt;

use zeroize::Zeroizing;

pub use handshake::connect;
pub use wire::hello::KeyExchange;

/// What the client offers.
#[derive(Clone)]
pub struct ClientConfig {
    /// Raw identity bytes, sent as they are (may contain 0x00).
    pub identity: Vec<u8>,
    pub key: Zeroizing<Vec<u8>>,
    /// Suites to offer, in preference order, in wolfSSL's names (IANA names work too).
    pub cipher_list: String,
    /// `PskKe` offers psk_ke only and no key share, like a SIM applet.
    pub key_exchange: KeyExchange,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("identity", &hex::encode(&self.identity))
            .field("cipher_list", &self.cipher_list)
            .field("key_exchange", &self.key_exchange)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS I/O: {0}")]
    Io(#[from] std::io::Error),
    /// `code`: the alert the server sent, or 0 when the client itself gave up.
    #[error("TLS handshake failed ({code}): {reason}")]
    Handshake { code: i32, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

pub(crate) fn fail(reason: impl Into<String>) -> TlsError {
    TlsError::Handshake {
        code: 0,
        reason: reason.into(),
    }
}

/// An established client connection.
///
/// `Send`, so it can move between tasks; used by one task at a time (`&mut self`).
pub struct TlsStream {
    identity: Vec<u8>,
    cipher: String,
    session: Box<session::Session>,
}

impl TlsStream {
    /// The raw PSK identity bytes this connection authenticated with.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The negotiated suite in wolfSSL's naming, e.g. `TLS13-AES128-CCM-SHA256`.
    pub fn cipher_name(&self) -> &str {
        &self.cipher
    }

    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.session.tcp.peer_addr()
    }

    /// Reads application data; `Ok(0)` once the peer sent close_notify or closed the
    /// socket. Data that came before a close_notify is always returned first.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.session.read(buf).await
    }

    /// Writes all of `data`.
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
