//! One running node: everything a request needs, shared by both listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::routes::RouteTable;

use crate::capabilities::Platform;
use crate::guard::{Gate, Throttle};
use crate::psk_cache::PskCache;
use crate::runtime::{CallLimits, Runtime, TenantSync};
use crate::settings::{AdminAccess, SimPortConfig};

/// Everything a request needs, built once by `up` and shared by every listener's tasks.
pub struct Node {
    /// The SIM port's PSKs, looked up during the handshake.
    pub psks: Arc<PskCache>,
    /// The services behind the capabilities functions call.
    pub platform: Arc<Platform>,
    /// Which component serves each path of the SIM port.
    pub routes: RouteTable,
    /// Runs the platform's and the tenants' components.
    pub runtime: Runtime,
    /// The SIM port's message size and timeouts.
    pub sim_port: SimPortConfig,
    /// Deadline, memory and response size of a function called on the SIM port.
    pub sim_limits: CallLimits,
    /// Deadline, memory and response size of a function called on the admin port.
    pub admin_limits: CallLimits,
    /// The operator pair and the `/v3/sys/` allow-list.
    pub admin: AdminAccess,
    /// The SIM-port functions an account may replace with its own.
    pub tenant_routes: Vec<String>,
    /// What of the tenants' functions this node runs; one sync at a time.
    pub tenant_sync: tokio::sync::Mutex<TenantSync>,
    /// Answers brokers' questions (on the broker endpoint and the admin port).
    pub authority: Arc<crate::broker::authority::Authority>,
    /// Connection caps, timeouts and refusal counts of every listener.
    pub limits: Arc<crate::guard::Limits>,
}

impl Node {
    /// The admin port's `/metrics`: function counters and the listeners' caps.
    pub fn metrics(&self) -> serde_json::Value {
        let mut metrics = self.runtime.metrics();
        if let Some(all) = metrics.as_object_mut() {
            all.insert("connections".into(), self.limits.metrics());
            all.insert("sim_refusals".into(), self.platform.sim_log.metrics());
        }
        metrics
    }
}

/// Binds a listener with room for `backlog` connections not yet accepted. A cell's
/// SIMs reconnect together after an outage; with the usual 128 some of them would
/// wait for a SYN retransmit (a second or more). The kernel caps the queue at
/// net.core.somaxconn.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts connections until `shutdown` is cancelled, each served by its own tracked
/// task while it holds a place at `gate`; one over a cap is closed at once, so the
/// accept queue keeps draining in a storm.
pub async fn accept_loop<F, Fut>(
    port: &'static str,
    listener: TcpListener,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let failures = Throttle::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Some(permit) = gate.admit(peer.ip()) else {
                        continue;
                    };
                    let served = serve(tcp, peer);
                    tasks.spawn(async move {
                        served.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    if let Some(count) = failures.fire() {
                        tracing::warn!(failures = count, "{port} port accept failed: {e}");
                    }
                    // Out of descriptors or memory: back off instead of spinning; the
                    // connections waiting in the queue wait a little longer.
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
        }
    }
}

/// Serves one HTTP/1.1 connection with `builder` until it ends. On `shutdown` a request
/// in flight finishes first; `up` bounds the wait.
pub async fn serve_http1<I, S, B>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    io: I,
    service: S,
    shutdown: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
