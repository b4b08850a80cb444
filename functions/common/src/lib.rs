//! Logic shared by psk-edge's platform components: the wire contract's rules, query parsing and JSON bodies.
//!
//! Everything outside the `spin` and `sim` features is plain Rust with no WebAssembly
//! dependency, so `cargo test -p common` checks the contract natively.

pub mod admin;
pub mod expiration;
pub mod json;
pub mod profile;
pub mod psk;
pub mod query;
pub mod rules;
pub mod sim_request;
pub mod topics;
pub mod value;

#[cfg(feature = "spin")]
pub mod http;
#[cfg(feature = "sim")]
pub mod sim;
