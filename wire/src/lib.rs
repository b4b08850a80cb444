//! What psk-edge reads from the network and from its manifest, parsed without I/O.
//!
//! Every parser here takes untrusted bytes and nothing else, so each is unit-tested and
//! fuzzed on its own (`fuzz/`), without wolfSSL, wasmtime or a database in the build.

pub mod hello;
pub mod identity;
pub mod ndjson;
pub mod routes;
pub mod sim_http;
pub mod topics;
