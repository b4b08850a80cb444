//! A Mosquitto 2.0 plugin (API v5) that answers CONNECT and topic checks by asking a
//! psk-edge node over HTTP, caches the answers, and takes revocations on
//! `$CONTROL/psk-edge/v1`.
//!
//! Configuration (`mosquitto.conf`):
//!
//! ```text
//! plugin /usr/lib/psk-edge/libpsk_edge_mosquitto.so
//! plugin_opt_url http://127.0.0.1:8443          # required, plain http
//! plugin_opt_key_file /etc/psk-edge/broker.key  # required; root:mosquitto 0640, see below
//! plugin_opt_timeout_ms 250                     # one whole call to the node, 1..=5000
//! plugin_opt_cache_seconds 300                  # reuse of a verified password, 0 = never
//! plugin_opt_cache_size 100000                  # entries kept for disconnected clients
//! ```
//!
//! Mosquitto 2.0.11 drops privileges *before* it loads plugins, so both this library and
//! the key file must be readable by the broker's unprivileged `user` (default `mosquitto`).
//!
//! Mosquitto 2.0 has no delayed authentication, so every question to the node blocks the
//! broker loop: see `src/node.rs` for how long it can, and `BENCH.md` for how long it does.

mod cache;
#[allow(unsafe_code)] // the broker's C API: bindings and the calls through them
mod ffi;
#[allow(unsafe_code)] // ppoll on the socket, the one call std has no safe form of
mod http;
mod node;
mod options;
#[allow(unsafe_code)] // the callbacks the broker calls and the pointers it hands them
mod plugin;

use std::ffi::{c_int, c_void};

/// Picks plugin API 5, the only one this plugin speaks.
///
/// # Safety
/// `supported_versions` points at `supported_version_count` ints (the broker's list).
#[allow(unsafe_code)] // an entry point the broker finds by name
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_version(
    supported_version_count: c_int,
    supported_versions: *const c_int,
) -> c_int {
    plugin::guarded("plugin version", -1, || {
        if supported_versions.is_null() || supported_version_count <= 0 {
            return -1;
        }
        // SAFETY: the broker's array of `supported_version_count` versions.
        let offered = unsafe {
            std::slice::from_raw_parts(supported_versions, supported_version_count as usize)
        };
        if offered.contains(&ffi::PLUGIN_VERSION) {
            ffi::PLUGIN_VERSION
        } else {
            -1
        }
    })
}

/// # Safety
/// Called once by the broker, on its main thread, with the arguments of `mosquitto_plugin.h`.
#[allow(unsafe_code)] // an entry point the broker finds by name
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut ffi::mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    options: *mut ffi::mosquitto_opt,
    option_count: c_int,
) -> c_int {
    // SAFETY: forwarded as the broker passed them.
    plugin::guarded("init", ffi::MOSQ_ERR_UNKNOWN, || unsafe {
        plugin::init(identifier, userdata, options, option_count)
    })
}

/// # Safety
/// Called once by the broker with the userdata `mosquitto_plugin_init` stored.
#[allow(unsafe_code)] // an entry point the broker finds by name
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _options: *mut ffi::mosquitto_opt,
    _option_count: c_int,
) -> c_int {
    // SAFETY: forwarded as the broker passed it.
    plugin::guarded("cleanup", ffi::MOSQ_ERR_SUCCESS, || unsafe {
        plugin::cleanup(userdata)
    })
}
