//! The bench's SIM identities and answer, shared by the load generator and the bare responder.
//!
//! Both sides derive the same ICCID and PSK from an index, so a peer that is not
//! psk-edge (the bare responder, stunnel) can be given the same table without any
//! registration protocol.

use sha2::{Digest, Sha256};

/// Base of the bench ICCIDs: the 89 999 prefix keeps them clear of real issuers.
pub const ICCID_BASE: u128 = 89_990_000_000_000_000_000;

/// The credential-shaped body every baseline answers, the size of a real
/// `{"cli","usr","pwd"}` answer. functions/fixtures/bench-static answers the same bytes.
pub const BODY: &str = r#"{"cli":"bench-static-000000001","usr":"bench-static-000000001","pwd":"bench-static-pwd-000001"}"#;

pub fn iccid(index: u64) -> String {
    (ICCID_BASE + u128::from(index)).to_string()
}

/// Deterministic, so a later run with `--skip-register` finds the same keys.
pub fn psk(index: u64) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(b"psk-edge-bench")
        .chain_update(index.to_be_bytes())
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}
