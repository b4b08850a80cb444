//! What psk-edge-bench and psk-edge-bare share: the bench identities and their keys.

pub mod ids;
