//! Record protection: AES-128-GCM or AES-128-CCM with a per-direction key, static IV and sequence number, and reading whole records off the socket.

use std::io;

use aes_gcm::Aes128Gcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes128;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::codec::{APPLICATION_DATA, MAX_RECORD_BODY, Suite, TAG_LEN};
use crate::key_schedule::{Secret, expand_label};

type Aes128Ccm = ccm::Ccm<Aes128, ccm::consts::U16, ccm::consts::U12>;

/// Reads one whole record: its header and body. `None` on a clean EOF between records.
pub(crate) async fn read_record(
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
pub(crate) struct Direction {
    aead: Aead,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    pub(crate) fn new(suite: Suite, secret: &Secret) -> Self {
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
    pub(crate) fn seal(&mut self, content_type: u8, payload: &[u8]) -> io::Result<Vec<u8>> {
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
    pub(crate) fn open(
        &mut self,
        header: &[u8; 5],
        mut body: Vec<u8>,
    ) -> io::Result<(u8, Vec<u8>)> {
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

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

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
