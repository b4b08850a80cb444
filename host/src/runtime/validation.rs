//! What a tenant's upload must be: a component this host can run, a wasi:http handler, importing nothing its world does not grant.

use std::sync::Arc;

use super::{Prepared, Runtime, World};

/// WASI interfaces a component may not import, and why. The platform's capabilities
/// need no such list: the `sim-function` linker has none but `registry` and `log`, so
/// an upload importing `psk-admin` fails at pre-instantiation. WASI, though, is linked
/// whole (std imports cli, io, clocks and random from it); a request's WASI context has
/// no directory and no socket, so these would only fail once called. Refusing them at
/// upload tells the tenant now.
const FORBIDDEN_IMPORTS: &[(&str, &str)] = &[
    ("wasi:filesystem/", "no filesystem"),
    ("wasi:sockets/", "no sockets"),
];

impl Runtime {
    /// Validates a tenant's upload (a `sim-function`: tenants replace SIM routes) and
    /// makes it ready to serve; the error is the reason, for the tenant. Compiling takes
    /// a while: call it off the async runtime.
    pub fn prepare(&self, label: &str, bytes: &[u8]) -> Result<Prepared, String> {
        let component = self.compile(bytes).map_err(|e| {
            format!(
                "not a WebAssembly component this host can run: {}",
                root_cause(&e)
            )
        })?;
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if let Some((_, why)) = FORBIDDEN_IMPORTS
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
            {
                return Err(format!("imports {name}: {why}"));
            }
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let handler = |prefix: &str| exports.iter().find(|e| e.starts_with(prefix));
        let Some(interface) =
            handler("wasi:http/handler@0.3").or_else(|| handler("wasi:http/incoming-handler@0.2"))
        else {
            return Err(format!(
                "exports no wasi:http handler (exports: {})",
                exports.join(", ")
            ));
        };
        let loaded = self
            .pre_instantiate(label, &component, World::SimFunction)
            .map_err(|e| format!("{e:#}"))?;
        Ok(Prepared {
            loaded: Arc::new(loaded),
            interface: interface.clone(),
        })
    }
}

/// The innermost cause: wasmtime's outer contexts say "failed to parse", the inner one why.
fn root_cause(e: &wasmtime::Error) -> String {
    e.chain()
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string)
}
