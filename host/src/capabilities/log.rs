//! `log`: a function's log lines, tagged with the function and its caller.

use super::bindings::psk_edge::platform::log::{Host, Level};
use super::{Caller, CapabilityCtx};

/// Long enough for a reason, short enough that a function cannot flood the log.
const MAX_MESSAGE: usize = 512;

impl Host for CapabilityCtx {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level_name = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // A SIM decides how often its requests make a function write, so its lines are
        // thinned per SIM, function and level; debug lines are off in production.
        let mut left_out = 0;
        if let (Caller::Sim(sim), false) = (&self.caller, matches!(level, Level::Debug)) {
            let reason = format!("{}:{level_name}", self.component);
            match self.platform.sim_log.admit(&sim.iccid, &reason) {
                Some(n) => left_out = n,
                None => return Ok(()),
            }
        }
        let mut end = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = message[..end].escape_debug().to_string();
        let (function, caller) = (&*self.component, self.caller.label());
        match level {
            Level::Debug => tracing::debug!(function, caller, "{message}"),
            Level::Info => tracing::info!(function, caller, left_out, "{message}"),
            Level::Warn => tracing::warn!(function, caller, left_out, "{message}"),
            Level::Error => tracing::error!(function, caller, left_out, "{message}"),
        }
        Ok(())
    }
}
