//! The TLS 1.3 key schedule (RFC 8446 §7.1) for SHA-256 suites, as the stages it goes through: early secret, handshake secret, master secret.
//!
//! Each stage is a type that can only be made from the one before, so the order of
//! derivations (and the `derived` step between stages) is the compiler's to check.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::codec::FINISHED;

type HmacSha256 = Hmac<Sha256>;
/// A 32-byte secret, wiped when dropped.
pub(crate) type Secret = Zeroizing<[u8; 32]>;

/// The client's and the server's traffic secrets of one stage.
pub(crate) struct TrafficSecrets {
    pub(crate) client: Secret,
    pub(crate) server: Secret,
}

/// HKDF-Extract of the PSK: the schedule's first stage.
pub(crate) struct EarlySecret(Secret);

impl EarlySecret {
    pub(crate) fn from_psk(psk: &[u8]) -> Self {
        EarlySecret(extract(&[0; 32], psk))
    }

    /// The key of the ClientHello's PSK binder (an external PSK: `ext binder`).
    pub(crate) fn binder_key(&self) -> Secret {
        derive_secret(&self.0, "ext binder", &[])
    }

    /// The next stage, with the (EC)DHE shared secret (zeros for psk_ke).
    pub(crate) fn handshake(self, dhe: &[u8]) -> HandshakeSecret {
        HandshakeSecret(extract(&derive_secret(&self.0, "derived", &[])[..], dhe))
    }
}

/// The stage that protects the rest of the handshake.
pub(crate) struct HandshakeSecret(Secret);

impl HandshakeSecret {
    /// Handshake traffic secrets, over the transcript through ServerHello.
    pub(crate) fn traffic(&self, hello_hash: &[u8]) -> TrafficSecrets {
        TrafficSecrets {
            client: derive_secret(&self.0, "c hs traffic", hello_hash),
            server: derive_secret(&self.0, "s hs traffic", hello_hash),
        }
    }

    /// The last stage.
    pub(crate) fn master(self) -> MasterSecret {
        MasterSecret(extract(
            &derive_secret(&self.0, "derived", &[])[..],
            &[0; 32],
        ))
    }
}

/// The stage that protects application data.
pub(crate) struct MasterSecret(Secret);

impl MasterSecret {
    /// Application traffic secrets, over the transcript through the server's Finished.
    pub(crate) fn traffic(&self, server_finished_hash: &[u8]) -> TrafficSecrets {
        TrafficSecrets {
            client: derive_secret(&self.0, "c ap traffic", server_finished_hash),
            server: derive_secret(&self.0, "s ap traffic", server_finished_hash),
        }
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
pub(crate) fn expand_label(secret: &[u8], label: &str, context: &[u8], len: usize) -> Secret {
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

pub(crate) fn finished_mac(base_key: &Secret, transcript_hash: &[u8]) -> Secret {
    let finished_key = expand_label(&base_key[..], "finished", &[], 32);
    hmac_sha256(&finished_key[..], &[transcript_hash])
}

pub(crate) fn finished_message(base_key: &Secret, transcript_hash: &[u8]) -> Vec<u8> {
    let mut msg = vec![FINISHED, 0, 0, 32];
    msg.extend_from_slice(&finished_mac(base_key, transcript_hash)[..]);
    msg
}

pub(crate) fn next_traffic_secret(secret: &Secret) -> Secret {
    expand_label(&secret[..], "traffic upd", &[], 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 ("Simple 1-RTT Handshake"): early secret with no PSK and the
    /// derived secret that seeds the handshake secret.
    #[test]
    fn key_schedule_matches_rfc8448() {
        let early = EarlySecret::from_psk(&[0; 32]);
        assert_eq!(
            hex::encode(&early.0[..]),
            "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"
        );
        let derived = derive_secret(&early.0, "derived", &[]);
        assert_eq!(
            hex::encode(&derived[..]),
            "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"
        );
    }
}
