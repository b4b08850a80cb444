//! psk-edge: the native host that terminates the SIM and admin ports and runs WebAssembly functions.
pub mod broker;
pub mod components;
