//! SIM identities: decoding the PSK identity bytes a SIM offers into its ICCID, and the name rules of the wire contract.

/// An ICCID as the platform stores it: 1–22 ASCII digits.
pub fn is_iccid(s: &str) -> bool {
    (1..=22).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Device ids, profile names, config properties and account ids: `[A-Za-z0-9._-]{1,64}`,
/// checked on the raw bytes: a percent-encoded name is refused rather than decoded, so
/// one name has exactly one spelling.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The forms in which a SIM can present its ICCID as TLS PSK identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The identity bytes were the ICCID's ASCII digits.
    Ascii(String),
    /// The identity was the SIM's 10-byte nibble-swapped BCD form.
    Bcd { iccid: String, raw: [u8; 10] },
}

impl Identity {
    /// Decodes raw identity bytes; `None` means no ICCID can be read from them,
    /// which the handshake treats exactly like an unknown ICCID.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if !raw.is_empty() && raw.iter().all(u8::is_ascii_digit) {
            let digits = String::from_utf8_lossy(raw).into_owned();
            return is_iccid(&digits).then_some(Identity::Ascii(digits));
        }
        let bytes: [u8; 10] = raw.try_into().ok()?;
        let mut digits = String::with_capacity(20);
        let mut padded = false;
        // Nibble-swapped: the low nibble of each byte is the earlier digit.
        for nibble in bytes.iter().flat_map(|b| [b & 0x0f, b >> 4]) {
            match (nibble, padded) {
                (0..=9, false) => digits.push(char::from(b'0' + nibble)),
                (0xf, _) => padded = true,
                _ => return None,
            }
        }
        is_iccid(&digits).then_some(Identity::Bcd {
            iccid: digits,
            raw: bytes,
        })
    }

    pub fn iccid(&self) -> &str {
        match self {
            Identity::Ascii(iccid) | Identity::Bcd { iccid, .. } => iccid,
        }
    }

    /// Lower-case hex of the BCD bytes: the other way such a SIM may name itself in `iccid=`.
    pub fn bcd_hex(&self) -> Option<String> {
        match self {
            Identity::Ascii(_) => None,
            Identity::Bcd { raw, .. } => Some(hex::encode(raw)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_identity_is_its_digits() {
        let id = Identity::decode(b"049305930495403").unwrap();
        assert_eq!(id, Identity::Ascii("049305930495403".into()));
        assert_eq!(id.bcd_hex(), None);
    }

    #[test]
    fn bcd_identity_with_zero_bytes_decodes() {
        let raw = [0x98, 0x44, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0xf3];
        let id = Identity::decode(&raw).unwrap();
        assert_eq!(id.iccid(), "8944500000000000123");
        assert_eq!(id.bcd_hex().as_deref(), Some("984405000000000021f3"));
    }

    #[test]
    fn bcd_twenty_digits_has_no_padding() {
        let raw = [0x98, 0x44, 0x05, 0x52, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
        assert_eq!(
            Identity::decode(&raw).unwrap().iccid(),
            "89445025112233445566"
        );
    }

    #[test]
    fn digit_after_padding_is_refused() {
        let raw = [0x98, 0x44, 0x05, 0x52, 0x11, 0x22, 0x33, 0x44, 0xf5, 0x66];
        assert_eq!(Identity::decode(&raw), None);
    }

    #[test]
    fn other_lengths_and_bytes_are_unknown() {
        assert_eq!(Identity::decode(b""), None);
        assert_eq!(Identity::decode(&[0x98, 0x44, 0x05]), None);
        assert_eq!(Identity::decode(&[0xaa; 10]), None);
        assert_eq!(Identity::decode(&[b'1'; 23]), None);
        assert_eq!(Identity::decode(b"12a4"), None);
    }

    #[test]
    fn names_follow_the_contract() {
        assert!(is_name("dev-1.A_b"));
        assert!(!is_name(""));
        assert!(!is_name(&"a".repeat(65)));
        assert!(!is_name("a%20b"));
        assert!(!is_name("a/b"));
        assert!(is_iccid("1"));
        assert!(!is_iccid(&"1".repeat(23)));
    }
}
