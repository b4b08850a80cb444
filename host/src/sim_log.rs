//! What authenticated SIMs make the node log: refusals counted by reason, and lines per SIM and reason thinned to one per window.
//!
//! A SIM that passed the handshake can still send a bad request as fast as its link
//! allows; one line each would let it fill the disk. The count of every refusal goes to
//! `/metrics`; the log keeps the first line of each SIM and reason per window, and says
//! how many it left out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most one line per SIM and reason in this much time.
pub const WINDOW: Duration = Duration::from_secs(10);
/// SIM and reason pairs remembered at once; past this the oldest quiet ones go, and
/// a flood from more SIMs than this is only counted.
const MAX_KEYS: usize = 4096;

/// Counts SIM refusals by reason and thins log lines per SIM and reason to one per window.
pub struct SimLog {
    window: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Refusals by reason since the start, for `/metrics`.
    refused: HashMap<String, u64>,
    lines: HashMap<(String, String), Slot>,
    last_sweep: Option<Instant>,
}

struct Slot {
    since: Instant,
    /// Lines left out since `since`.
    suppressed: u64,
}

impl Default for SimLog {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

impl SimLog {
    /// A log that admits one line per SIM and reason per `window`.
    pub fn new(window: Duration) -> Self {
        SimLog {
            window,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Counts one refusal of `reason` for `/metrics`.
    pub fn count(&self, reason: &str) {
        let mut inner = self.inner.lock();
        match inner.refused.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                inner.refused.insert(reason.to_owned(), 1);
            }
        }
    }

    /// May a line about `iccid` and `reason` be written now? `Some(n)`: yes, and `n`
    /// earlier lines of that pair were left out since the last one written.
    pub fn admit(&self, iccid: &str, reason: &str) -> Option<u64> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        self.sweep(&mut inner, now);
        let key = (iccid.to_owned(), reason.to_owned());
        if let Some(slot) = inner.lines.get_mut(&key) {
            if now.duration_since(slot.since) < self.window {
                slot.suppressed += 1;
                return None;
            }
            let left_out = slot.suppressed;
            *slot = Slot {
                since: now,
                suppressed: 0,
            };
            return Some(left_out);
        }
        if inner.lines.len() >= MAX_KEYS {
            return None;
        }
        inner.lines.insert(
            key,
            Slot {
                since: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Refusals by reason, for `/metrics`.
    pub fn metrics(&self) -> serde_json::Value {
        let inner = self.inner.lock();
        let mut reasons: Vec<_> = inner.refused.iter().collect();
        reasons.sort();
        serde_json::Value::Array(
            reasons
                .into_iter()
                .map(|(reason, count)| serde_json::json!({ "reason": reason, "count": count }))
                .collect(),
        )
    }

    /// Once per window: pairs whose window has passed are forgotten, each with a
    /// summary line if lines were left out, so a flood that stops is still reported.
    fn sweep(&self, inner: &mut Inner, now: Instant) {
        if inner
            .last_sweep
            .is_some_and(|last| now.duration_since(last) < self.window)
            && inner.lines.len() < MAX_KEYS
        {
            return;
        }
        inner.last_sweep = Some(now);
        let window = self.window;
        inner.lines.retain(|(iccid, reason), slot| {
            if now.duration_since(slot.since) < window {
                return true;
            }
            if slot.suppressed > 0 {
                tracing::info!(
                    iccid,
                    reason,
                    left_out = slot.suppressed,
                    window_s = window.as_secs(),
                    "more lines like the last one were left out"
                );
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_sim_and_reason_per_window() {
        let log = SimLog::new(Duration::from_millis(200));
        assert_eq!(log.admit("1", "no_route"), Some(0));
        for _ in 0..50 {
            assert_eq!(log.admit("1", "no_route"), None);
        }
        // Another reason, another SIM: each its own line.
        assert_eq!(log.admit("1", "bad_request"), Some(0));
        assert_eq!(log.admit("2", "no_route"), Some(0));
        std::thread::sleep(Duration::from_millis(250));
        // The next window's first line carries the count of what was left out, unless
        // a sweep reported it first.
        assert!(matches!(log.admit("1", "no_route"), Some(0 | 50)));
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let log = SimLog::default();
        for _ in 0..3 {
            log.count("no_route");
        }
        log.count("chunked");
        assert_eq!(
            log.metrics(),
            serde_json::json!([
                {"reason": "chunked", "count": 1},
                {"reason": "no_route", "count": 3},
            ])
        );
    }

    #[test]
    fn memory_stays_bounded_under_many_sims() {
        let log = SimLog::default();
        for i in 0..(MAX_KEYS + 100) {
            log.admit(&i.to_string(), "no_route");
        }
        assert!(log.inner.lock().lines.len() <= MAX_KEYS);
    }
}
