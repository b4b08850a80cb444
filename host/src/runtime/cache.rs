//! The on-disk cache of compiled components, keyed by the component's bytes and the engine.
//!
//! wasmtime's own `cache` feature would do the same with a TOML configuration file, a
//! background cleanup worker and zstd compression; a node needs none of them: one
//! content-addressed file per component, written once and shared by nodes through an
//! atomic rename.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::Runtime;

impl Runtime {
    /// Compiles `bytes`, or loads what an earlier compile of the same bytes left in the
    /// cache directory.
    pub(super) fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = self.cache_dir.as_deref() else {
            return Component::new(&self.engine, bytes);
        };
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let name = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            engine_hash.finish()
        );
        let path = dir.join(name);
        if path.exists() {
            match load_compiled(&self.engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "recompiling: cached component unusable: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        std::fs::create_dir_all(dir)?;
        // Nodes sharing a cache may compile the same component at once: each writes
        // its own temporary file and the rename makes one of them win whole.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, component.serialize()?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(component)
    }
}

/// A component compiled earlier by this node, from the compile cache.
#[allow(unsafe_code)] // wasmtime trusts a compiled artifact as native code
fn load_compiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `serialize` into the data directory, which only
    // this user can write; its name binds it to the component's bytes and this engine.
    unsafe { Component::deserialize_file(engine, path) }
}
