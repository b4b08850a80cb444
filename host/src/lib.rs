//! psk-edge: the native host that terminates the SIM and admin ports and runs WebAssembly functions.
#![deny(missing_docs)]

pub mod admin_client;
pub mod admin_port;
pub mod broker;
pub mod capabilities;
pub mod commands;
pub mod components;
pub mod guard;
pub mod node;
pub mod psk_cache;
pub mod runtime;
pub mod secrets;
pub mod settings;
pub mod sim_log;
pub mod sim_port;
pub mod store;
pub mod tenant_api;
pub mod up;
#[allow(unsafe_code)] // wolfSSL's C API: every call into it lives in this module.
pub mod wolfssl;
