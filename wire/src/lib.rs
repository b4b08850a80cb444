//! What psk-edge reads from the network and from its manifest, parsed without I/O, and the contract's rules for names and topics.
//!
//! Every parser here takes untrusted bytes and nothing else, so each is unit-tested and
//! fuzzed on its own (`fuzz/`), without wolfSSL, wasmtime or a database in the build.
//! `identity` and `topics` are the rules host and components both apply; without the
//! default `parsers` feature they are all a component links.

#[cfg(feature = "parsers")]
pub mod hello;
pub mod identity;
#[cfg(feature = "parsers")]
pub mod ndjson;
#[cfg(feature = "parsers")]
pub mod routes;
#[cfg(feature = "parsers")]
pub mod sim_http;
pub mod topics;
