//! Bounds on what peers on the network can hold: connections per port and per address, pending handshakes, descriptors.
//!
//! Every listener admits a connection through a [`Gate`] before it costs more than its
//! socket. The ports' caps are carved out of the process's descriptor limit with a
//! reserve left over, so a flood on one port can never take the descriptors another
//! port, the database or the broker connection need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::wolfssl::Refusal;

/// Caps on what one port holds at once: in total and per source address.
pub struct Gate {
    /// What is held, in words for the log ("admin connections").
    what: &'static str,
    max_total: usize,
    max_per_addr: usize,
    held: parking_lot::Mutex<Held>,
    /// Turned away at a cap, for `/metrics`.
    refused: AtomicU64,
    /// One warning per interval however fast refusals come.
    warn: Throttle,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_addr: HashMap<IpAddr, usize>,
}

/// One admitted connection (or handshake); gives its place back when dropped.
pub struct Permit {
    gate: Arc<Gate>,
    addr: IpAddr,
}

impl Gate {
    /// A gate for `what` (in words for the log), admitting `max_total` connections in
    /// all and `max_per_addr` from one source (`usize::MAX`: no cap per address).
    pub fn new(what: &'static str, max_total: usize, max_per_addr: usize) -> Arc<Self> {
        Arc::new(Self {
            what,
            max_total,
            max_per_addr,
            held: parking_lot::Mutex::default(),
            refused: AtomicU64::new(0),
            warn: Throttle::new(Duration::from_secs(10)),
        })
    }

    /// A place for a connection from `ip`, or None at either cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let addr = source(ip);
        {
            let mut held = self.held.lock();
            let here = held.by_addr.get(&addr).copied().unwrap_or(0);
            if held.total < self.max_total && here < self.max_per_addr {
                held.total += 1;
                *held.by_addr.entry(addr).or_default() += 1;
                return Some(Permit {
                    gate: self.clone(),
                    addr,
                });
            }
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.warn.fire() {
            tracing::warn!(
                refused = count,
                max_total = self.max_total,
                max_per_addr = self.max_per_addr,
                "{} at a cap: refusing more (counted in /metrics)",
                self.what
            );
        }
        None
    }

    /// Connections admitted now.
    pub fn held(&self) -> usize {
        self.held.lock().total
    }

    /// Connections turned away at a cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The cap on connections held at once.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// What is held, the caps and the refusals, as this gate's part of `/metrics`.
    pub fn metrics(&self) -> serde_json::Value {
        serde_json::json!({
            "held": self.held(),
            "max": self.max_total,
            // null: no cap per address.
            "max_per_address": (self.max_per_addr != usize::MAX).then_some(self.max_per_addr),
            "refused": self.refused(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.gate.held.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_addr.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                held.by_addr.remove(&self.addr);
            }
        }
    }
}

/// The address a cap counts against: an IPv4 address, or an IPv6 /64 (one host's
/// usual allocation, so rotating through it buys nothing).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Lets an event through at most once per interval and says how many happened since.
pub struct Throttle {
    interval: Duration,
    state: parking_lot::Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// Lets the first event through, then at most one per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: parking_lot::Mutex::new((None, 0)),
        }
    }

    /// Counts one event; Some(events since the last one let through) when this one is.
    pub fn fire(&self) -> Option<u64> {
        let mut state = self.state.lock();
        state.1 += 1;
        let now = Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}

/// Connection caps for every listener, derived from the descriptor limit unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Cap on established SIM connections.
    pub sim_connections: usize,
    /// Cap on admin port connections.
    pub admin_connections: usize,
    /// Cap on broker endpoint connections.
    pub broker_connections: usize,
    /// Descriptors the process has, and those kept out of every port's reach.
    pub nofile: u64,
    /// Of `nofile`, the descriptors no port may take.
    pub reserve: u64,
}

/// Descriptors no port may take: the database pool, the broker client, compiled
/// functions, logs, a managed Mosquitto's pipes, and accept()'s own headroom.
const RESERVE_MIN: u64 = 128;

impl Budget {
    /// Splits `nofile` descriptors: a reserve, then up to an eighth each for the admin
    /// port and the broker endpoint (at most 1,024: operators and brokers are few), and
    /// the rest for the SIM port. A cap given explicitly is kept, and the SIM port
    /// gets what is left after it.
    pub fn split(
        nofile: u64,
        sim: Option<usize>,
        admin: Option<usize>,
        broker: Option<usize>,
    ) -> Self {
        let reserve = RESERVE_MIN.max(nofile / 16);
        let usable = usize::try_from(nofile.saturating_sub(reserve)).unwrap_or(usize::MAX);
        let side = (usable / 8).clamp(1, 1024);
        let admin_connections = admin.unwrap_or(side);
        let broker_connections = broker.unwrap_or(side);
        let sim_connections = sim.unwrap_or_else(|| {
            usable
                .saturating_sub(admin_connections)
                .saturating_sub(broker_connections)
                .max(1)
        });
        Self {
            sim_connections,
            admin_connections,
            broker_connections,
            nofile,
            reserve,
        }
    }

    /// Whether the caps together fit the descriptors, with the reserve left.
    pub fn fits(&self) -> bool {
        let held = self.sim_connections as u64
            + self.admin_connections as u64
            + self.broker_connections as u64;
        held + self.reserve <= self.nofile
    }
}

/// Raises the soft descriptor limit to the hard one, as a server holding one socket
/// per SIM needs (Go's runtime does the same at start), and returns the limit in force.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Every cap and count the listeners share; `/metrics` shows them.
pub struct Limits {
    /// Established SIM connections. No per-address cap beyond the total: many SIMs
    /// reach the node through one carrier gateway address.
    pub sim: Arc<Gate>,
    /// SIM connections still in their handshake, per address and in total: what a
    /// stranger can hold without a key.
    pub sim_handshakes: Arc<Gate>,
    /// Admin port connections, per address and in total.
    pub admin: Arc<Gate>,
    /// Broker endpoint connections; no per-address cap beyond the total: brokers ask
    /// from a few addresses.
    pub broker: Arc<Gate>,
    /// Bounds the admin port's TLS handshake, each request head, and the idle time
    /// between requests (hyper starts its head timer as soon as it waits for one).
    pub admin_header_timeout: Duration,
    /// Base deadline of an admin request body (see [`Deadline`]).
    pub admin_body_timeout: Duration,
    /// ClientHellos refused before wolfSSL, by reason.
    refused_hellos: [AtomicU64; 3],
}

impl Limits {
    /// Gathers the listeners' gates and the admin port's timeouts; no ClientHello is
    /// counted as refused yet.
    pub fn new(
        sim: Arc<Gate>,
        sim_handshakes: Arc<Gate>,
        admin: Arc<Gate>,
        broker: Arc<Gate>,
        admin_header_timeout: Duration,
        admin_body_timeout: Duration,
    ) -> Self {
        Self {
            sim,
            sim_handshakes,
            admin,
            broker,
            admin_header_timeout,
            admin_body_timeout,
            refused_hellos: Default::default(),
        }
    }

    fn slot(refusal: Refusal) -> usize {
        match refusal {
            Refusal::NoSharedSuite => 0,
            Refusal::KexNotAllowed => 1,
            Refusal::HelloTooLarge => 2,
        }
    }

    /// Counts a ClientHello the SIM port refused before wolfSSL, by reason.
    pub fn count_refused_hello(&self, refusal: Refusal) {
        self.refused_hellos[Self::slot(refusal)].fetch_add(1, Ordering::Relaxed);
    }

    /// Every gate's counts and the refused ClientHellos by reason, for `/metrics`.
    pub fn metrics(&self) -> serde_json::Value {
        let refused: serde_json::Map<String, serde_json::Value> = [
            Refusal::NoSharedSuite,
            Refusal::KexNotAllowed,
            Refusal::HelloTooLarge,
        ]
        .into_iter()
        .map(|r| {
            let count = self.refused_hellos[Self::slot(r)].load(Ordering::Relaxed);
            (r.reason().to_owned(), count.into())
        })
        .collect();
        serde_json::json!({
            "sim_connections": self.sim.metrics(),
            "sim_handshakes": self.sim_handshakes.metrics(),
            "admin_connections": self.admin.metrics(),
            "broker_connections": self.broker.metrics(),
            "sim_handshakes_refused": refused,
        })
    }
}

/// The body type both HTTP listeners hand their handlers.
pub type RequestBody = Deadline<Incoming>;

/// Each byte received moves a body's deadline this much later, so a client sending
/// at 16 KiB/s or faster never meets it (a 16 MiB upload over a slow link, a long
/// NDJSON stream), while a drip of a byte every few seconds meets it at the base
/// timeout, as does a client that sends a head and then nothing.
const BYTES_PER_SECOND_OF_GRACE: u64 = 16 << 10;

/// A request body that must arrive by a deadline; its error ([`BodyTimeout`]) ends the
/// request, and hyper does not reuse a connection whose body was not read to the end.
/// Only time spent waiting on the client counts: while the handler works on what it
/// has (a bulk batch in a function), the deadline moves along.
pub struct Deadline<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
    /// Bytes received not yet turned into grace (less than a millisecond's worth).
    credit: u64,
    /// When the last frame went to the handler, until it asks for the next one.
    handed_out: Option<tokio::time::Instant>,
}

impl<B> Deadline<B> {
    /// Wraps `inner`, due `timeout` from now plus the grace its bytes and the handler's
    /// own time earn.
    pub fn new(inner: B, timeout: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + timeout;
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
            credit: 0,
            // The clock starts when the handler first asks for the body.
            handed_out: Some(tokio::time::Instant::now()),
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow")]
pub struct BodyTimeout;

/// Whether a body read failed on the deadline (rather than a size limit or the socket).
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl<B> Body for Deadline<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(handed_out) = this.handed_out.take() {
            this.deadline += handed_out.elapsed();
            let deadline = this.deadline;
            this.sleep.as_mut().reset(deadline);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.handed_out = Some(tokio::time::Instant::now());
            if let Some(Ok(frame)) = &frame
                && let Some(data) = frame.data_ref()
            {
                this.credit += data.remaining() as u64;
                let millis = this.credit * 1000 / BYTES_PER_SECOND_OF_GRACE;
                if millis > 0 {
                    this.credit -= millis * BYTES_PER_SECOND_OF_GRACE / 1000;
                    this.deadline += Duration::from_millis(millis);
                    let deadline = this.deadline;
                    this.sleep.as_mut().reset(deadline);
                }
            }
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_caps_per_address_and_in_total_and_gives_places_back() {
        let gate = Gate::new("test connections", 3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none());
        let _third = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "total cap");
        assert_eq!(gate.refused(), 2);
        drop(first);
        assert!(gate.admit(a).is_some());
        assert_eq!(gate.held(), 2);
    }

    #[test]
    fn ipv6_addresses_count_per_slash_64() {
        let gate = Gate::new("test connections", 10, 1);
        let _held = gate.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(gate.admit("2001:db8::2".parse().unwrap()).is_none());
        assert!(gate.admit("2001:db8:0:1::2".parse().unwrap()).is_some());
        assert_eq!(
            source("::ffff:127.0.0.2".parse().unwrap()),
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_budget_keeps_a_reserve_and_never_overcommits() {
        for nofile in [300, 1024, 20_000, 1 << 20] {
            let budget = Budget::split(nofile, None, None, None);
            assert!(budget.fits(), "{budget:?}");
            assert!(budget.reserve >= RESERVE_MIN);
            assert!(budget.admin_connections >= 1 && budget.admin_connections <= 1024);
        }
        let given = Budget::split(20_000, None, Some(50), Some(10));
        assert_eq!(given.admin_connections, 50);
        assert_eq!(given.sim_connections, 20_000 - 1_250 - 60);
        assert!(!Budget::split(1024, Some(5000), None, None).fits());
    }

    #[tokio::test]
    async fn a_dripping_body_meets_its_deadline_and_a_steady_one_does_not() {
        use futures_util::StreamExt as _;
        use http_body_util::{BodyExt as _, StreamBody};
        let tick = Duration::from_millis(100);
        let drip = futures_util::stream::repeat(()).then(move |()| async move {
            tokio::time::sleep(tick).await;
            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(b"x")))
        });
        let started = Instant::now();
        let err = Deadline::new(StreamBody::new(Box::pin(drip)), 3 * tick)
            .collect()
            .await
            .err()
            .unwrap();
        assert!(timed_out(&*err), "{err}");
        assert!(started.elapsed() < 6 * tick, "{:?}", started.elapsed());

        // 80 KiB/s for a second, past the base timeout and never past the deadline.
        let steady = futures_util::stream::iter(0..10).then(move |_| async move {
            tokio::time::sleep(tick).await;
            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from(vec![0u8; 8 << 10])))
        });
        let body = Deadline::new(StreamBody::new(Box::pin(steady)), 3 * tick)
            .collect()
            .await
            .unwrap();
        assert_eq!(body.to_bytes().len(), 10 * (8 << 10));
    }

    #[test]
    fn the_throttle_lets_one_through_per_interval_with_the_count() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.fire(), Some(1));
        assert_eq!(throttle.fire(), None);
        assert_eq!(throttle.fire(), None);
        let state = throttle.state.lock().1;
        assert_eq!(state, 2);
    }
}
