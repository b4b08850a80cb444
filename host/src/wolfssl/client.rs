//! A small native TLS 1.3 PSK client (RFC 8446), for tests and load generation.
//!
//! It exists because wolfSSL's client measures the PSK identity with `strlen`, so a BCD
//! ICCID containing 0x00 cannot be sent through it. Scope: external PSK only (no
//! certificates, no resumption, no early data, no HelloRetryRequest), SHA-256 suites
//! (AES-128-GCM and AES-128-CCM), X25519 for psk_dhe_ke. It sends what a SIM applet
//! sends: an empty legacy session id and no middlebox-compatibility records.

use aes_gcm::Aes128Gcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes128;
use bytes::{Buf, BytesMut};
use hmac::{Hmac, Mac};
use rustls::crypto::ActiveKeyExchange;
use sha2::{Digest, Sha256};
use std::io;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::{ClientConfig, Engine, KeyExchange, TlsError, TlsStream};

type Aes128Ccm = ccm::Ccm<Aes128, ccm::consts::U16, ccm::consts::U12>;
type HmacSha256 = Hmac<Sha256>;
type Secret = Zeroizing<[u8; 32]>;

const MAX_PLAINTEXT: usize = 16 * 1024;
/// Ciphertext may exceed the plaintext limit by 256 bytes (RFC 8446 §5.2).
const MAX_RECORD_BODY: usize = MAX_PLAINTEXT + 256;
const TAG_LEN: usize = 16;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const NEW_SESSION_TICKET: u8 = 4;
const ENCRYPTED_EXTENSIONS: u8 = 8;
const FINISHED: u8 = 20;
const KEY_UPDATE: u8 = 24;

const EXT_SUPPORTED_GROUPS: u16 = 10;
const EXT_PRE_SHARED_KEY: u16 = 41;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_PSK_KEY_EXCHANGE_MODES: u16 = 45;
const EXT_KEY_SHARE: u16 = 51;
const X25519: u16 = 0x001d;
const PSK_KE: u8 = 0;
const PSK_DHE_KE: u8 = 1;

/// The ServerHello.random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Aes128GcmSha256,
    Aes128CcmSha256,
}

impl Suite {
    fn code(self) -> u16 {
        match self {
            Suite::Aes128GcmSha256 => 0x1301,
            Suite::Aes128CcmSha256 => 0x1304,
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        [Suite::Aes128GcmSha256, Suite::Aes128CcmSha256]
            .into_iter()
            .find(|s| s.code() == code)
    }

    /// Accepts wolfSSL's names (what the server config uses) and the IANA ones.
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "TLS13-AES128-GCM-SHA256" | "TLS_AES_128_GCM_SHA256" => Some(Suite::Aes128GcmSha256),
            "TLS13-AES128-CCM-SHA256" | "TLS_AES_128_CCM_SHA256" => Some(Suite::Aes128CcmSha256),
            _ => None,
        }
    }

    fn wolf_name(self) -> &'static str {
        match self {
            Suite::Aes128GcmSha256 => "TLS13-AES128-GCM-SHA256",
            Suite::Aes128CcmSha256 => "TLS13-AES128-CCM-SHA256",
        }
    }
}

/// Opens a TLS 1.3 PSK connection over `tcp`, offering exactly `cfg.identity`.
///
/// Not bounded in time: wrap it in `tokio::time::timeout`.
pub async fn connect(tcp: TcpStream, cfg: &ClientConfig) -> Result<TlsStream, TlsError> {
    let suites = cfg
        .cipher_list
        .split(':')
        .filter(|name| !name.is_empty())
        .map(|name| {
            Suite::from_name(name)
                .ok_or_else(|| TlsError::Config(format!("unsupported cipher suite {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if suites.is_empty() {
        return Err(TlsError::Config("empty cipher list".into()));
    }
    if cfg.identity.is_empty() || cfg.key.is_empty() {
        return Err(TlsError::Config(
            "PSK identity and key must not be empty".into(),
        ));
    }
    let key_share = match cfg.key_exchange {
        KeyExchange::PskKe => None,
        KeyExchange::Both | KeyExchange::PskDheKe => Some(
            rustls::crypto::ring::kx_group::X25519
                .start()
                .map_err(|e| TlsError::Config(format!("X25519 key generation failed: {e}")))?,
        ),
    };

    let early_secret = extract(&[0; 32], &cfg.key);
    let hello = client_hello(cfg, &suites, key_share.as_deref(), &early_secret)?;
    let mut transcript = Sha256::new();
    transcript.update(&hello);

    let mut hs = Handshake {
        tcp,
        rx: BytesMut::with_capacity(4096),
        messages: Vec::new(),
    };
    hs.tcp.write_all(&plain_record(HANDSHAKE, &hello)).await?;

    let server_hello = hs.next_message(None).await?;
    let chosen = parse_server_hello(&server_hello, &suites)?;
    transcript.update(&server_hello);
    let dhe = match (key_share, chosen.key_share) {
        (Some(ours), Some(theirs)) => Zeroizing::new(
            ours.complete(&theirs)
                .map_err(|e| fail(format!("bad server key share: {e}")))?
                .secret_bytes()
                .to_vec(),
        ),
        (None, Some(_)) => return Err(fail("server sent a key share we did not ask for")),
        (Some(_), None) if cfg.key_exchange == KeyExchange::PskDheKe => {
            return Err(fail("server chose psk_ke, only psk_dhe_ke was offered"));
        }
        (_, None) => Zeroizing::new(vec![0; 32]),
    };

    let handshake_secret = extract(&derive_secret(&early_secret, "derived", &[])[..], &dhe);
    let hello_hash = transcript.clone().finalize();
    let client_hs = derive_secret(&handshake_secret, "c hs traffic", &hello_hash);
    let server_hs = derive_secret(&handshake_secret, "s hs traffic", &hello_hash);
    let mut server_hs_keys = Direction::new(chosen.suite, &server_hs);
    let mut client_hs_keys = Direction::new(chosen.suite, &client_hs);

    let extensions = hs.next_message(Some(&mut server_hs_keys)).await?;
    if extensions.first() != Some(&ENCRYPTED_EXTENSIONS) {
        return Err(fail(format!(
            "expected EncryptedExtensions, got message {:?} (certificates are not supported)",
            extensions.first()
        )));
    }
    transcript.update(&extensions);

    let finished = hs.next_message(Some(&mut server_hs_keys)).await?;
    let expected = finished_message(&server_hs, &transcript.clone().finalize());
    if !bool::from(finished[..].ct_eq(&expected[..])) {
        return Err(fail("server Finished does not verify"));
    }
    transcript.update(&finished);

    let master_secret = extract(
        &derive_secret(&handshake_secret, "derived", &[])[..],
        &[0; 32],
    );
    let server_finished_hash = transcript.clone().finalize();
    let client_ap = derive_secret(&master_secret, "c ap traffic", &server_finished_hash);
    let server_ap = derive_secret(&master_secret, "s ap traffic", &server_finished_hash);

    let client_finished = finished_message(&client_hs, &server_finished_hash);
    let record = client_hs_keys.seal(HANDSHAKE, &client_finished)?;
    hs.tcp.write_all(&record).await?;

    let session = Session {
        tcp: hs.tcp,
        rx: hs.rx,
        suite: chosen.suite,
        read: Direction::new(chosen.suite, &server_ap),
        write: Direction::new(chosen.suite, &client_ap),
        read_secret: server_ap,
        write_secret: client_ap,
        plain: Vec::new(),
        plain_pos: 0,
        post_handshake: hs.messages,
        peer_closed: false,
    };
    Ok(TlsStream {
        identity: cfg.identity.clone(),
        cipher: chosen.suite.wolf_name().to_owned(),
        engine: Engine::Native(Box::new(session)),
    })
}

fn fail(reason: impl Into<String>) -> TlsError {
    TlsError::Handshake {
        code: 0,
        reason: reason.into(),
    }
}

/// The ClientHello handshake message with its PSK binder filled in.
fn client_hello(
    cfg: &ClientConfig,
    suites: &[Suite],
    key_share: Option<&dyn ActiveKeyExchange>,
    early_secret: &Secret,
) -> Result<Vec<u8>, TlsError> {
    let identity_len = u16::try_from(cfg.identity.len())
        .map_err(|_| TlsError::Config("PSK identity longer than 65535 bytes".into()))?;

    let mut ext = Vec::new();
    push_extension(&mut ext, EXT_SUPPORTED_VERSIONS, &[2, 0x03, 0x04]);
    let modes: &[u8] = match cfg.key_exchange {
        KeyExchange::Both => &[2, PSK_DHE_KE, PSK_KE],
        KeyExchange::PskKe => &[1, PSK_KE],
        KeyExchange::PskDheKe => &[1, PSK_DHE_KE],
    };
    push_extension(&mut ext, EXT_PSK_KEY_EXCHANGE_MODES, modes);
    if let Some(share) = key_share {
        push_extension(&mut ext, EXT_SUPPORTED_GROUPS, &[0, 2, 0, 0x1d]);
        let public = share.pub_key();
        let mut entry = Vec::with_capacity(6 + public.len());
        entry.extend_from_slice(&((public.len() + 4) as u16).to_be_bytes());
        entry.extend_from_slice(&X25519.to_be_bytes());
        entry.extend_from_slice(&(public.len() as u16).to_be_bytes());
        entry.extend_from_slice(public);
        push_extension(&mut ext, EXT_KEY_SHARE, &entry);
    }
    // pre_shared_key must come last; its binder is appended once the rest is hashed.
    let identities_len = 2 + cfg.identity.len() + 4;
    let binders_len = 2 + 1 + 32;
    ext.extend_from_slice(&EXT_PRE_SHARED_KEY.to_be_bytes());
    ext.extend_from_slice(&u16_len(2 + identities_len + binders_len)?);
    ext.extend_from_slice(&u16_len(identities_len)?);
    ext.extend_from_slice(&identity_len.to_be_bytes());
    ext.extend_from_slice(&cfg.identity);
    ext.extend_from_slice(&0u32.to_be_bytes());

    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| TlsError::Config(format!("no randomness available: {e}")))?;
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&random);
    body.push(0); // empty legacy_session_id
    body.extend_from_slice(&u16_len(2 * suites.len())?);
    for suite in suites {
        body.extend_from_slice(&suite.code().to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    body.extend_from_slice(&u16_len(ext.len() + binders_len)?);
    body.extend_from_slice(&ext);

    let total = body.len() + binders_len;
    if 4 + total > MAX_PLAINTEXT {
        return Err(TlsError::Config(
            "ClientHello would not fit one record".into(),
        ));
    }
    let mut hello = vec![CLIENT_HELLO];
    hello.extend_from_slice(&(total as u32).to_be_bytes()[1..]);
    hello.extend_from_slice(&body);

    // RFC 8446 §4.2.11.2: HMAC over the ClientHello truncated before the binders.
    let binder_key = derive_secret(early_secret, "ext binder", &[]);
    let binder = finished_mac(&binder_key, &Sha256::digest(&hello));
    hello.extend_from_slice(&[0, 33, 32]);
    hello.extend_from_slice(&binder[..]);
    Ok(hello)
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn u16_len(len: usize) -> Result<[u8; 2], TlsError> {
    u16::try_from(len)
        .map(u16::to_be_bytes)
        .map_err(|_| TlsError::Config("ClientHello field over 65535 bytes".into()))
}

fn plain_record(content_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut record = vec![content_type, 0x03, 0x01];
    record.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    record.extend_from_slice(payload);
    record
}

struct ServerHello {
    suite: Suite,
    key_share: Option<Vec<u8>>,
}

fn parse_server_hello(msg: &[u8], offered: &[Suite]) -> Result<ServerHello, TlsError> {
    let mut r = Reader(msg);
    if r.u8()? != SERVER_HELLO {
        return Err(fail("expected ServerHello"));
    }
    let body_len = r.u24()?;
    let mut r = Reader(r.take(body_len)?);
    r.take(2)?; // legacy_version
    if r.take(32)? == HRR_RANDOM {
        return Err(fail("HelloRetryRequest is not supported"));
    }
    let session_id_len = r.u8()? as usize;
    r.take(session_id_len)?;
    let suite = Suite::from_code(r.u16()?)
        .filter(|s| offered.contains(s))
        .ok_or_else(|| fail("server chose a suite we did not offer"))?;
    r.u8()?; // legacy_compression_method
    let ext_len = r.u16()? as usize;
    let mut exts = Reader(r.take(ext_len)?);

    let (mut tls13, mut psk, mut key_share) = (false, false, None);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = exts.u16()? as usize;
        let mut data = Reader(exts.take(len)?);
        match kind {
            EXT_SUPPORTED_VERSIONS => tls13 = data.u16()? == 0x0304,
            EXT_PRE_SHARED_KEY => psk = data.u16()? == 0,
            EXT_KEY_SHARE => {
                if data.u16()? != X25519 {
                    return Err(fail("server chose a group we did not offer"));
                }
                let key_len = data.u16()? as usize;
                key_share = Some(data.take(key_len)?.to_vec());
            }
            _ => {}
        }
    }
    if !tls13 {
        return Err(fail("server did not negotiate TLS 1.3"));
    }
    if !psk {
        return Err(fail("server did not accept the PSK"));
    }
    Ok(ServerHello { suite, key_share })
}

/// A cursor over a handshake message; running out is a malformed message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TlsError> {
        if self.0.len() < n {
            return Err(fail("malformed handshake message"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TlsError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TlsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, TlsError> {
        let b = self.take(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize)
    }
}

/// Splits one whole handshake message off the front of `buf`, if there is one.
fn take_message(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let header = buf.get(..4)?;
    let len = 4 + u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    if buf.len() < len {
        return None;
    }
    let rest = buf.split_off(len);
    Some(std::mem::replace(buf, rest))
}

struct Handshake {
    tcp: TcpStream,
    rx: BytesMut,
    /// Handshake bytes received but not yet consumed (messages may span records).
    messages: Vec<u8>,
}

impl Handshake {
    /// The next handshake message, read in plaintext or under `keys`.
    async fn next_message(
        &mut self,
        mut keys: Option<&mut Direction>,
    ) -> Result<Vec<u8>, TlsError> {
        loop {
            if let Some(msg) = take_message(&mut self.messages) {
                return Ok(msg);
            }
            if self.messages.len() > 64 * 1024 {
                return Err(fail("handshake message too large"));
            }
            let (header, body) = read_record(&mut self.tcp, &mut self.rx)
                .await?
                .ok_or_else(|| fail("server closed the connection during the handshake"))?;
            let (content_type, data) = match (header[0], keys.as_deref_mut()) {
                (CHANGE_CIPHER_SPEC, _) => continue,
                (APPLICATION_DATA, Some(k)) => k.open(&header, body)?,
                // A server that gives up early may still alert in plaintext.
                (ALERT, _) | (HANDSHAKE, None) => (header[0], body),
                (t, _) => return Err(fail(format!("unexpected record type {t}"))),
            };
            match content_type {
                HANDSHAKE => self.messages.extend_from_slice(&data),
                ALERT => {
                    let description = data.get(1).copied().unwrap_or(0);
                    return Err(TlsError::Handshake {
                        code: i32::from(description),
                        reason: format!("server sent alert {description}"),
                    });
                }
                t => return Err(fail(format!("unexpected content type {t}"))),
            }
        }
    }
}

/// Reads one whole record: its header and body. `None` on a clean EOF between records.
async fn read_record(
    tcp: &mut TcpStream,
    rx: &mut BytesMut,
) -> io::Result<Option<([u8; 5], Vec<u8>)>> {
    loop {
        if rx.len() >= 5 {
            let len = u16::from_be_bytes([rx[3], rx[4]]) as usize;
            if len > MAX_RECORD_BODY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS record too large",
                ));
            }
            if rx.len() >= 5 + len {
                let mut header = [0u8; 5];
                header.copy_from_slice(&rx[..5]);
                rx.advance(5);
                return Ok(Some((header, rx.split_to(len).to_vec())));
            }
        }
        if tcp.read_buf(rx).await? == 0 {
            return if rx.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

enum Aead {
    Gcm(Box<Aes128Gcm>),
    Ccm(Box<Aes128Ccm>),
}

/// One direction's record protection: key, static IV and sequence number.
struct Direction {
    aead: Aead,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(suite: Suite, secret: &Secret) -> Self {
        let key = expand_label(&secret[..], "key", &[], 16);
        let iv = expand_label(&secret[..], "iv", &[], 12);
        let aead = match suite {
            Suite::Aes128GcmSha256 => Aead::Gcm(Box::new(Aes128Gcm::new(
                GenericArray::from_slice(&key[..16]),
            ))),
            Suite::Aes128CcmSha256 => Aead::Ccm(Box::new(Aes128Ccm::new(
                GenericArray::from_slice(&key[..16]),
            ))),
        };
        let mut iv_bytes = [0u8; 12];
        iv_bytes.copy_from_slice(&iv[..12]);
        Self {
            aead,
            iv: iv_bytes,
            seq: 0,
        }
    }

    fn next_nonce(&mut self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        nonce
    }

    /// A whole encrypted record carrying `payload` of `content_type`.
    fn seal(&mut self, content_type: u8, payload: &[u8]) -> io::Result<Vec<u8>> {
        let body_len = payload.len() + 1 + TAG_LEN;
        let mut record = Vec::with_capacity(5 + body_len);
        record.extend_from_slice(&[APPLICATION_DATA, 0x03, 0x03]);
        record.extend_from_slice(&(body_len as u16).to_be_bytes());
        record.extend_from_slice(payload);
        record.push(content_type);
        let nonce = self.next_nonce();
        let (header, body) = record.split_at_mut(5);
        let nonce = GenericArray::from_slice(&nonce);
        let tag = match &self.aead {
            Aead::Gcm(c) => c.encrypt_in_place_detached(nonce, header, body),
            Aead::Ccm(c) => c.encrypt_in_place_detached(nonce, header, body),
        }
        .map_err(|_| io::Error::other("record encryption failed"))?;
        record.extend_from_slice(&tag);
        Ok(record)
    }

    /// Decrypts a record body; returns the inner content type and plaintext.
    fn open(&mut self, header: &[u8; 5], mut body: Vec<u8>) -> io::Result<(u8, Vec<u8>)> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad record MAC");
        if body.len() < TAG_LEN {
            return Err(bad());
        }
        let tag = body.split_off(body.len() - TAG_LEN);
        let nonce = self.next_nonce();
        let nonce = GenericArray::from_slice(&nonce);
        let tag = GenericArray::from_slice(&tag);
        match &self.aead {
            Aead::Gcm(c) => c.decrypt_in_place_detached(nonce, header, &mut body, tag),
            Aead::Ccm(c) => c.decrypt_in_place_detached(nonce, header, &mut body, tag),
        }
        .map_err(|_| bad())?;
        // The content type is the last non-zero byte; zeros after it are padding.
        let end = body.iter().rposition(|b| *b != 0).ok_or_else(bad)?;
        let content_type = body[end];
        body.truncate(end);
        Ok((content_type, body))
    }
}

/// An established client connection.
pub(super) struct Session {
    tcp: TcpStream,
    rx: BytesMut,
    suite: Suite,
    read: Direction,
    write: Direction,
    read_secret: Secret,
    write_secret: Secret,
    plain: Vec<u8>,
    plain_pos: usize,
    post_handshake: Vec<u8>,
    peer_closed: bool,
}

impl Session {
    pub(super) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plain_pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_pos);
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                return Ok(n);
            }
            if self.peer_closed || buf.is_empty() {
                return Ok(0);
            }
            let Some((header, body)) = read_record(&mut self.tcp, &mut self.rx).await? else {
                self.peer_closed = true;
                return Ok(0);
            };
            if header[0] != APPLICATION_DATA {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected record type {}", header[0]),
                ));
            }
            let (content_type, data) = self.read.open(&header, body)?;
            match content_type {
                APPLICATION_DATA => {
                    self.plain = data;
                    self.plain_pos = 0;
                }
                ALERT if data.get(1) == Some(&0) => self.peer_closed = true,
                ALERT => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("peer sent alert {:?}", data.get(1)),
                    ));
                }
                HANDSHAKE => {
                    self.post_handshake.extend_from_slice(&data);
                    self.post_handshake_messages().await?;
                }
                t => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected content type {t}"),
                    ));
                }
            }
        }
    }

    async fn post_handshake_messages(&mut self) -> io::Result<()> {
        while let Some(msg) = take_message(&mut self.post_handshake) {
            match msg[0] {
                // Resumption is not used: tickets are dropped.
                NEW_SESSION_TICKET => {}
                KEY_UPDATE => {
                    self.read_secret = next_traffic_secret(&self.read_secret);
                    self.read = Direction::new(self.suite, &self.read_secret);
                    if msg.get(4) == Some(&1) {
                        let record = self.write.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0])?;
                        self.tcp.write_all(&record).await?;
                        self.write_secret = next_traffic_secret(&self.write_secret);
                        self.write = Direction::new(self.suite, &self.write_secret);
                    }
                }
                t => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected post-handshake message {t}"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(data.len() + 32);
        for chunk in data.chunks(MAX_PLAINTEXT) {
            out.extend_from_slice(&self.write.seal(APPLICATION_DATA, chunk)?);
        }
        self.tcp.write_all(&out).await
    }

    pub(super) async fn shutdown(&mut self) {
        if let Ok(record) = self.write.seal(ALERT, &[1, 0]) {
            let _ = self.tcp.write_all(&record).await;
        }
        let _ = self.tcp.shutdown().await;
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Secret {
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    for part in parts {
        mac.update(part);
    }
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn extract(salt: &[u8], ikm: &[u8]) -> Secret {
    hmac_sha256(salt, &[ikm])
}

/// HKDF-Expand-Label (RFC 8446 §7.1); every length used here fits one SHA-256 block.
fn expand_label(secret: &[u8], label: &str, context: &[u8], len: usize) -> Secret {
    debug_assert!(len <= 32);
    let mut info = Vec::with_capacity(10 + label.len() + context.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push((6 + label.len()) as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label.as_bytes());
    info.push(context.len() as u8);
    info.extend_from_slice(context);
    hmac_sha256(secret, &[&info, &[1]])
}

/// Derive-Secret with a transcript hash (empty `hash` means the hash of nothing).
fn derive_secret(secret: &Secret, label: &str, hash: &[u8]) -> Secret {
    let empty;
    let hash = if hash.is_empty() {
        empty = Sha256::digest([]);
        &empty[..]
    } else {
        hash
    };
    expand_label(&secret[..], label, hash, 32)
}

fn finished_mac(base_key: &Secret, transcript_hash: &[u8]) -> Secret {
    let finished_key = expand_label(&base_key[..], "finished", &[], 32);
    hmac_sha256(&finished_key[..], &[transcript_hash])
}

fn finished_message(base_key: &Secret, transcript_hash: &[u8]) -> Vec<u8> {
    let mut msg = vec![FINISHED, 0, 0, 32];
    msg.extend_from_slice(&finished_mac(base_key, transcript_hash)[..]);
    msg
}

fn next_traffic_secret(secret: &Secret) -> Secret {
    expand_label(&secret[..], "traffic upd", &[], 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 ("Simple 1-RTT Handshake"): early secret with no PSK and the
    /// derived secret that seeds the handshake secret.
    #[test]
    fn key_schedule_matches_rfc8448() {
        let early = extract(&[0; 32], &[0; 32]);
        assert_eq!(
            hex::encode(&early[..]),
            "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"
        );
        let derived = derive_secret(&early, "derived", &[]);
        assert_eq!(
            hex::encode(&derived[..]),
            "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"
        );
    }

    #[test]
    fn records_round_trip_and_reject_tampering() {
        for suite in [Suite::Aes128GcmSha256, Suite::Aes128CcmSha256] {
            let secret = Zeroizing::new([7u8; 32]);
            let mut tx = Direction::new(suite, &secret);
            let mut rx = Direction::new(suite, &secret);
            let record = tx.seal(APPLICATION_DATA, b"hello").unwrap();
            let header: [u8; 5] = record[..5].try_into().unwrap();
            let (t, data) = rx.open(&header, record[5..].to_vec()).unwrap();
            assert_eq!((t, &data[..]), (APPLICATION_DATA, &b"hello"[..]));

            let mut record = tx.seal(APPLICATION_DATA, b"hello").unwrap();
            record[6] ^= 1;
            let header: [u8; 5] = record[..5].try_into().unwrap();
            assert!(rx.open(&header, record[5..].to_vec()).is_err());
        }
    }
}
