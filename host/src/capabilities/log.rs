//! `log`: a function's log lines, tagged with the function and its caller.

use super::CapabilityCtx;
use super::bindings::psk_edge::platform::log::{Host, Level};

/// Long enough for a reason, short enough that a function cannot flood the log.
const MAX_MESSAGE: usize = 512;

impl Host for CapabilityCtx {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut end = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = message[..end].escape_debug().to_string();
        let (function, caller) = (&*self.component, self.caller.label());
        match level {
            Level::Debug => tracing::debug!(function, caller, "{message}"),
            Level::Info => tracing::info!(function, caller, "{message}"),
            Level::Warn => tracing::warn!(function, caller, "{message}"),
            Level::Error => tracing::error!(function, caller, "{message}"),
        }
        Ok(())
    }
}
