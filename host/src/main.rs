//! The `psk-edge` command line.
fn main() {}
