//! Tenant components for the black-box tests, built from `functions/fixtures` and `functions/examples` on first use.
//!
//! They are built by a nested `cargo build` for wasm32-wasip2, once per test process
//! and workspace, into the test target's scratch directory: not embedded in the
//! binary, and never sharing the outer build's target directory (whose lock the
//! running `cargo test` may hold).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

const WASM_TARGET: &str = "wasm32-wasip2";

/// The repository root: the tests belong to the `host` package.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The component `functions/fixtures/{name}` (e.g. `tenant-a`, `spin-loop`) as bytes.
/// Builds the whole fixtures workspace the first time; panics with cargo's output if
/// that fails or the name is not a fixture.
pub fn fixture(name: &str) -> Vec<u8> {
    static RELEASE_DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = RELEASE_DIR.get_or_init(|| {
        let manifest = repo_root().join("functions/fixtures/Cargo.toml");
        build(&manifest, "fixtures")
    });
    read_component(dir, name)
}

/// The component of the example `functions/examples/{name}` (e.g. `iccid-profile`),
/// built as a tenant would build it.
pub fn example(name: &str) -> Vec<u8> {
    static RELEASE_DIRS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    // Held across the build: a second caller waits for it rather than racing it.
    let mut built = RELEASE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = built
        .get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_insert_with(|| {
            let manifest = repo_root()
                .join("functions/examples")
                .join(name)
                .join("Cargo.toml");
            assert!(
                manifest.is_file(),
                "no example {name}: {manifest:?} missing"
            );
            // All examples share one target directory, so common dependencies build once.
            build(&manifest, "examples")
        })
        .clone();
    drop(built);
    read_component(&dir, name)
}

/// Runs `cargo build --release` for wasm32-wasip2 on `manifest` into
/// `CARGO_TARGET_TMPDIR/{target_name}` and returns the directory of the `.wasm` files.
fn build(manifest: &Path, target_name: &str) -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(target_name);
    // The cargo that runs the tests, so the same toolchain builds the components.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let output = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // Meant for the outer build (flags for the host's target, its target
        // directory): passed on, they would rebuild or break the components.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build {manifest:?}: {e}"));
    if !output.status.success() {
        panic!(
            "building {manifest:?} for {WASM_TARGET} failed ({}); is the target installed \
             (`rustup target add {WASM_TARGET}`)?\n--- stderr\n{}\n--- stdout\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        );
    }
    target_dir.join(WASM_TARGET).join("release")
}

/// A cdylib's file is its package name with `-` turned into `_`.
fn read_component(release_dir: &Path, name: &str) -> Vec<u8> {
    let path = release_dir.join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("no component {name} at {path:?}: {e}"))
}
