//! A PSK identity's bytes to the SIM's ICCID: ASCII digits or the 10-byte nibble-swapped BCD form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::identity::{Identity, is_iccid, is_name};

fuzz_target!(|data: &[u8]| {
    let decoded = Identity::decode(data);
    match &decoded {
        None => {}
        Some(Identity::Ascii(iccid)) => {
            assert_eq!(iccid.as_bytes(), data);
            assert!(is_iccid(iccid));
        }
        Some(id @ Identity::Bcd { iccid, raw }) => {
            assert!(is_iccid(iccid));
            assert_eq!(&raw[..], data);
            // Encoding the digits again (low nibble first, 0xf padding) gives the bytes back.
            let mut nibbles: Vec<u8> = iccid.bytes().map(|d| d - b'0').collect();
            nibbles.resize(20, 0xf);
            let again: Vec<u8> = nibbles.chunks(2).map(|p| p[0] | (p[1] << 4)).collect();
            assert_eq!(&again[..], data);
            assert_eq!(id.bcd_hex().map(|h| h.len()), Some(20));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if is_name(text) {
            assert!(!text.contains(['/', '%', '?', '#', ' ']));
        }
        if is_iccid(text) {
            assert!(matches!(Identity::decode(data), Some(Identity::Ascii(_))));
        }
    }
});
