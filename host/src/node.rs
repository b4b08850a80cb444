//! One running node: everything a request needs, shared by both listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin_port::AdminAccess;
use crate::capabilities::Platform;
use crate::psk_cache::PskCache;
use crate::router::RouteTable;
use crate::runtime::{CallLimits, Runtime};
use crate::sim_port::SimPortConfig;
use crate::tenant_api::TenantSync;

pub struct Node {
    pub psks: Arc<PskCache>,
    pub platform: Arc<Platform>,
    pub routes: RouteTable,
    pub runtime: Runtime,
    pub sim_port: SimPortConfig,
    pub sim_limits: CallLimits,
    pub admin_limits: CallLimits,
    pub admin: AdminAccess,
    /// The SIM-port functions an account may replace with its own.
    pub tenant_routes: Vec<String>,
    /// What of the tenants' functions this node runs; one sync at a time.
    pub tenant_sync: tokio::sync::Mutex<TenantSync>,
    /// Answers brokers' questions (on the broker endpoint and the admin port).
    pub authority: Arc<crate::broker::authority::Authority>,
}

/// Accepts connections until `shutdown` is cancelled, each served by its own tracked task.
pub async fn accept_loop<F, Fut>(
    port: &'static str,
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tasks.spawn(serve(tcp, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("{port} port accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
