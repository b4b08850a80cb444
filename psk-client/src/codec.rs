//! The bytes of the handshake: record and message framing, the ClientHello this client sends, the ServerHello it accepts.

use rustls::crypto::ActiveKeyExchange;
use sha2::{Digest, Sha256};

use crate::key_schedule::{EarlySecret, finished_mac};
use crate::{ClientConfig, KeyExchange, TlsError, fail};

pub(crate) const MAX_PLAINTEXT: usize = 16 * 1024;
/// Ciphertext may exceed the plaintext limit by 256 bytes (RFC 8446 §5.2).
pub(crate) const MAX_RECORD_BODY: usize = MAX_PLAINTEXT + 256;
pub(crate) const TAG_LEN: usize = 16;

pub(crate) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(crate) const ALERT: u8 = 21;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;

pub(crate) const CLIENT_HELLO: u8 = 1;
pub(crate) const SERVER_HELLO: u8 = 2;
pub(crate) const NEW_SESSION_TICKET: u8 = 4;
pub(crate) const ENCRYPTED_EXTENSIONS: u8 = 8;
pub(crate) const FINISHED: u8 = 20;
pub(crate) const KEY_UPDATE: u8 = 24;

pub(crate) const EXT_SUPPORTED_GROUPS: u16 = 10;
pub(crate) const EXT_PRE_SHARED_KEY: u16 = 41;
pub(crate) const EXT_SUPPORTED_VERSIONS: u16 = 43;
pub(crate) const EXT_PSK_KEY_EXCHANGE_MODES: u16 = 45;
pub(crate) const EXT_KEY_SHARE: u16 = 51;
pub(crate) const X25519: u16 = 0x001d;
pub(crate) const PSK_KE: u8 = 0;
pub(crate) const PSK_DHE_KE: u8 = 1;

/// The ServerHello.random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
pub(crate) const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The suites this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Suite {
    Aes128GcmSha256,
    Aes128CcmSha256,
}

impl Suite {
    pub(crate) fn code(self) -> u16 {
        match self {
            Suite::Aes128GcmSha256 => 0x1301,
            Suite::Aes128CcmSha256 => 0x1304,
        }
    }

    pub(crate) fn from_code(code: u16) -> Option<Self> {
        [Suite::Aes128GcmSha256, Suite::Aes128CcmSha256]
            .into_iter()
            .find(|s| s.code() == code)
    }

    /// Accepts wolfSSL's names (what the server config uses) and the IANA ones.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "TLS13-AES128-GCM-SHA256" | "TLS_AES_128_GCM_SHA256" => Some(Suite::Aes128GcmSha256),
            "TLS13-AES128-CCM-SHA256" | "TLS_AES_128_CCM_SHA256" => Some(Suite::Aes128CcmSha256),
            _ => None,
        }
    }

    pub(crate) fn wolf_name(self) -> &'static str {
        match self {
            Suite::Aes128GcmSha256 => "TLS13-AES128-GCM-SHA256",
            Suite::Aes128CcmSha256 => "TLS13-AES128-CCM-SHA256",
        }
    }
}

/// The ClientHello handshake message with its PSK binder filled in.
pub(crate) fn client_hello(
    cfg: &ClientConfig,
    suites: &[Suite],
    key_share: Option<&dyn ActiveKeyExchange>,
    early_secret: &EarlySecret,
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
    let binder = finished_mac(&early_secret.binder_key(), &Sha256::digest(&hello));
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

pub(crate) fn plain_record(content_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut record = vec![content_type, 0x03, 0x01];
    record.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    record.extend_from_slice(payload);
    record
}

pub(crate) struct ServerHello {
    pub(crate) suite: Suite,
    pub(crate) key_share: Option<Vec<u8>>,
}

pub(crate) fn parse_server_hello(msg: &[u8], offered: &[Suite]) -> Result<ServerHello, TlsError> {
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
pub(crate) fn take_message(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let header = buf.get(..4)?;
    let len = 4 + u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    if buf.len() < len {
        return None;
    }
    let rest = buf.split_off(len);
    Some(std::mem::replace(buf, rest))
}
