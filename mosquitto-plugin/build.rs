//! Generates the Mosquitto FFI from the installed headers, so every struct the broker
//! hands us is laid out the way the broker that loads us compiled it.

use std::env;
use std::path::PathBuf;

/// `mosquitto_plugin.h` uses `mosquitto_plugin_id_t` from `mosquitto_broker.h` without
/// including it, so the order matters.
const WRAPPER: &str = "#include <mosquitto_broker.h>\n#include <mosquitto_plugin.h>\n";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let include = env::var("MOSQUITTO_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    println!("cargo::rerun-if-env-changed=MOSQUITTO_INCLUDE_DIR");
    for header in ["mosquitto_broker.h", "mosquitto_plugin.h"] {
        println!("cargo::rerun-if-changed={include}/{header}");
    }

    let bindings = bindgen::Builder::default()
        .header_contents("psk_edge_mosquitto.h", WRAPPER)
        .clang_arg(format!("-I{include}"))
        .rust_edition(bindgen::RustEdition::Edition2024)
        // Only what the plugin touches: a smaller surface to keep in step with the broker.
        .allowlist_type("mosquitto_evt_basic_auth")
        .allowlist_type("mosquitto_evt_acl_check")
        .allowlist_type("mosquitto_evt_control")
        .allowlist_type("mosquitto_evt_tick")
        .allowlist_type("mosquitto_evt_disconnect")
        .allowlist_type("mosquitto_opt")
        .allowlist_type("mosquitto_plugin_event")
        .allowlist_type("MOSQ_FUNC_generic_callback")
        .allowlist_function("mosquitto_callback_register")
        .allowlist_function("mosquitto_callback_unregister")
        .allowlist_function("mosquitto_log_printf")
        .allowlist_function("mosquitto_client_id")
        .allowlist_function("mosquitto_client_username")
        .allowlist_function("mosquitto_kick_client_by_username")
        .allowlist_var("MOSQ_PLUGIN_VERSION")
        .allowlist_var("MOSQ_ACL_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|err| {
            panic!("bindgen failed on {include}/mosquitto_broker.h and mosquitto_plugin.h (install mosquitto-dev): {err}")
        });

    let Some(out_dir) = env::var_os("OUT_DIR") else {
        panic!("cargo sets OUT_DIR for build scripts");
    };
    let out = PathBuf::from(out_dir).join("mosquitto.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|err| panic!("writing {}: {err}", out.display()));
}
