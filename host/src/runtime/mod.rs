//! The WebAssembly runtime: compiles each component once, and runs every request in a fresh instance with a deadline and a memory cap.

//!
//! By concern: [`engine`] (pooling, epochs), [`cache`] (compiled components on disk),
//! [`tenants`] (accounts' own functions and limits), [`validation`] (what an upload
//! must be), [`state`] (a request's store), [`p2`] and [`p3`] (the two wasi:http
//! handler generations).

mod cache;
mod engine;
mod p2;
mod p3;
mod state;
mod tenants;
mod validation;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

pub use crate::capabilities::World;
use crate::capabilities::{self, Caller, CapabilityCtx, Effect, Platform};
use engine::EPOCH_TICK;
use state::{DenyOutbound, RequestState};
use tenants::Tenant;
pub use tenants::TenantSync;

/// What one function call may use; the SIM and admin ports each have their own.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Guest execution deadline (epoch interruption): an endless loop traps here.
    pub deadline: Duration,
    /// Linear memory a single instance may grow to.
    pub memory_bytes: usize,
    /// Largest response body collected from the guest.
    pub max_response: usize,
}

/// How the runtime is set up at start: instance pool, memory reservation, compile cache.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances that may run at once; requests beyond it wait for a slot.
    pub concurrency: u32,
    /// Upper bound of any [`CallLimits::memory_bytes`]: the pool reserves this much
    /// address space per slot (not memory), so it can be generous.
    pub max_memory_bytes: usize,
    /// Where compiled components are kept, keyed by content and engine.
    pub cache_dir: Option<PathBuf>,
}

/// Why a function call gave no answer; each kind is counted in `/metrics`.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No component is loaded under that id.
    #[error("no component {0}")]
    NoComponent(String),
    /// The guest ran past its deadline and was interrupted.
    #[error("deadline exceeded")]
    Deadline,
    /// The response body was over this many bytes.
    #[error("response body over {0} bytes")]
    ResponseTooLarge(usize),
    /// The guest returned an error, or its response body failed.
    #[error("the function answered with an error: {0}")]
    Guest(String),
    /// The guest trapped (other than at the deadline).
    #[error("trap: {0:#}")]
    Trap(wasmtime::Error),
}

/// A component ready to instantiate; requests in flight keep theirs alive through a swap.
pub struct Loaded {
    id: Arc<str>,
    handler: Handler,
}

/// The two wasi:http handler generations a component may export.
enum Handler {
    /// `wasi:http/handler@0.3.x` (spin-sdk 7).
    P3(ServicePre<RequestState>),
    /// The stable `wasi:http/incoming-handler@0.2.x` (spin-sdk 5, the `wasi` crate, jco…).
    P2(ProxyPre<RequestState>),
}

/// A validated tenant component.
pub struct Prepared {
    /// The component, ready to instantiate.
    pub loaded: Arc<Loaded>,
    /// The wasi:http handler interface it exports.
    pub interface: String,
}

/// Instantiates and calls components, one pooled instance per request, each linked
/// with only what its WIT world grants.
pub struct Runtime {
    engine: Engine,
    /// One linker per WIT world: a component gets only what its world grants.
    sim_linker: Linker<RequestState>,
    admin_linker: Linker<RequestState>,
    components: HashMap<String, Arc<Loaded>>,
    /// Swapped whole on every change, so a request sees one consistent table.
    tenants: ArcSwap<HashMap<String, Arc<Tenant>>>,
    /// Serialises changes to `tenants` (read-copy-update).
    tenant_changes: parking_lot::Mutex<()>,
    platform: Arc<Platform>,
    slots: Semaphore,
    cache_dir: Option<PathBuf>,
    max_memory_bytes: usize,
    /// Failed calls by (account, function, kind), for `/metrics`.
    failures: parking_lot::Mutex<std::collections::BTreeMap<(String, String, &'static str), u64>>,
    calls: std::sync::atomic::AtomicU64,
}

/// A function's answer, body collected.
pub struct FnResponse {
    /// The HTTP status the function answered with.
    pub status: http::StatusCode,
    /// Its `Content-Type`, if it set one.
    pub content_type: Option<http::HeaderValue>,
    /// The response body, at most the call's `max_response` bytes.
    pub body: Bytes,
    /// To commit once the answer reached the caller, or drop when it is not sent.
    pub effects: Vec<Effect>,
    /// A quota the function's writes ran into (see `CapabilityCtx::quota`).
    pub quota: Option<crate::store::Quota>,
}

impl Runtime {
    /// Sets up the engine, the instance pool and one linker per world; components are
    /// added with [`Runtime::load`].
    pub fn new(config: &RuntimeConfig, platform: Arc<Platform>) -> wasmtime::Result<Self> {
        let engine = engine::new(config)?;
        let n = config.concurrency;
        Ok(Runtime {
            sim_linker: linker(&engine, World::SimFunction)?,
            admin_linker: linker(&engine, World::AdminFunction)?,
            engine,
            components: HashMap::new(),
            tenants: ArcSwap::default(),
            tenant_changes: parking_lot::Mutex::new(()),
            platform,
            slots: Semaphore::new(n as usize),
            cache_dir: config.cache_dir.clone(),
            max_memory_bytes: config.max_memory_bytes,
            failures: parking_lot::Mutex::default(),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Compiles (or loads from the cache) and pre-instantiates one of the platform's
    /// components against `world`. Fails if it is not a wasi:http handler or imports
    /// anything the world does not grant.
    pub fn load(&mut self, id: &str, bytes: &[u8], world: World) -> wasmtime::Result<()> {
        let component = self.compile(bytes)?;
        let loaded = self.pre_instantiate(id, &component, world)?;
        self.components.insert(id.to_owned(), Arc::new(loaded));
        Ok(())
    }

    fn pre_instantiate(
        &self,
        id: &str,
        component: &Component,
        world: World,
    ) -> wasmtime::Result<Loaded> {
        let linker = match world {
            World::SimFunction => &self.sim_linker,
            World::AdminFunction => &self.admin_linker,
        };
        let pre = linker.instantiate_pre(component).with_context(|| {
            format!(
                "component {id} imports what the {} world does not grant",
                world.name()
            )
        })?;
        let handler = match ServicePre::new(pre.clone()) {
            Ok(service) => Handler::P3(service),
            Err(_) => Handler::P2(ProxyPre::new(pre).with_context(|| {
                format!(
                    "component {id} exports neither wasi:http/handler@0.3 nor wasi:http/incoming-handler@0.2"
                )
            })?),
        };
        Ok(Loaded {
            id: Arc::from(id),
            handler,
        })
    }

    /// Runs `request` in a fresh instance of component `id` on behalf of `caller`;
    /// a failure is counted per account and function.
    pub async fn invoke(
        &self,
        id: &str,
        caller: Caller,
        request: http::Request<Bytes>,
        limits: CallLimits,
    ) -> Result<FnResponse, InvokeError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let account = match &caller {
            Caller::Sim(sim) => sim.account_id.to_string(),
            Caller::Tenant(account) => account.to_string(),
            Caller::Operator => "-".into(),
        };
        let result = self.run(id, caller, request, limits).await;
        if let Err(e) = &result {
            let kind = match e {
                InvokeError::NoComponent(_) => "no_component",
                InvokeError::Deadline => "deadline",
                InvokeError::ResponseTooLarge(_) => "response_too_large",
                InvokeError::Guest(_) => "guest_error",
                InvokeError::Trap(_) => "trap",
            };
            *self
                .failures
                .lock()
                .entry((account, id.to_owned(), kind))
                .or_default() += 1;
        }
        result
    }

    /// Counters for the admin port's `/metrics`.
    pub fn metrics(&self) -> serde_json::Value {
        let failures: Vec<serde_json::Value> = self
            .failures
            .lock()
            .iter()
            .map(|((account, function, kind), count)| {
                serde_json::json!({ "account": account, "function": function, "kind": kind, "count": count })
            })
            .collect();
        serde_json::json!({
            "function_calls": self.calls.load(std::sync::atomic::Ordering::Relaxed),
            "function_failures": failures,
        })
    }

    async fn run(
        &self,
        id: &str,
        caller: Caller,
        request: http::Request<Bytes>,
        limits: CallLimits,
    ) -> Result<FnResponse, InvokeError> {
        let loaded = self
            .resolve(id, &caller)
            .ok_or_else(|| InvokeError::NoComponent(id.to_owned()))?;
        let limits = self.limits_for(&caller, limits);
        // The pool has `concurrency` slots; waiting here beats failing an instantiation.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| InvokeError::Trap(e.into()))?;
        let state = RequestState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            hooks: DenyOutbound,
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .build(),
            caps: CapabilityCtx {
                caller,
                platform: self.platform.clone(),
                component: loaded.id.clone(),
                effects: Vec::new(),
                seen: Default::default(),
                quota: Default::default(),
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = limits
            .deadline
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();

        // Host awaits (the store) do not advance guest code, so the epoch deadline
        // alone cannot bound them; the wall clock does.
        let wall = limits.deadline * 4 + Duration::from_secs(1);
        let run = async {
            match &loaded.handler {
                Handler::P3(pre) => p3::call(pre, &mut store, request, limits.max_response).await,
                Handler::P2(pre) => p2::call(pre, &mut store, request, limits.max_response).await,
            }
        };
        let outcome = tokio::time::timeout(wall, run).await;
        let effects = std::mem::take(&mut store.data_mut().caps.effects);
        match outcome {
            Ok(Ok(mut response)) => {
                response.effects = effects;
                response.quota = store.data().caps.quota.get().copied();
                Ok(response)
            }
            // What the function claimed before it failed never reaches the caller.
            Ok(Err(e)) => {
                self.platform.undo(effects).await;
                Err(e)
            }
            Err(_) => {
                self.platform.undo(effects).await;
                Err(InvokeError::Deadline)
            }
        }
    }
}

/// WASI, wasi:http and the capabilities of `world`.
fn linker(engine: &Engine, world: World) -> wasmtime::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    // Rust guests built for wasm32-wasip2 import WASI 0.2 from std and 0.3 from spin-sdk.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    capabilities::add_to_linker(&mut linker, world, |s: &mut RequestState| &mut s.caps)?;
    Ok(linker)
}

async fn collect(
    parts: http::response::Parts,
    body: impl hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>,
    max_response: usize,
) -> Result<FnResponse, InvokeError> {
    match Limited::new(body, max_response).collect().await {
        Ok(body) => Ok(FnResponse {
            content_type: parts.headers.get(http::header::CONTENT_TYPE).cloned(),
            status: parts.status,
            body: body.to_bytes(),
            effects: Vec::new(),
            quota: None,
        }),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(InvokeError::ResponseTooLarge(max_response))
        }
        Err(e) => Err(InvokeError::Guest(e.to_string())),
    }
}

fn classify_trap(e: wasmtime::Error) -> InvokeError {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => InvokeError::Deadline,
        _ => InvokeError::Trap(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::SimCaller;
    use crate::psk_cache::PskCache;
    use crate::secrets::Sealer;
    use crate::store::Store;

    const LIMITS: CallLimits = CallLimits {
        deadline: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        max_response: 1 << 16,
    };

    async fn runtime() -> (Runtime, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("db")).await.unwrap();
        let psks = Arc::new(PskCache::new().unwrap());
        let platform = Arc::new(Platform::new(store, Sealer::new(&[1; 32]), psks, None));
        let mut runtime = Runtime::new(
            &RuntimeConfig {
                concurrency: 4,
                max_memory_bytes: 64 << 20,
                cache_dir: None,
            },
            platform,
        )
        .unwrap();
        let routes = wire::routes::RouteTable::parse(
            crate::components::DEFAULT_MANIFEST,
            std::path::Path::new("."),
        )
        .unwrap();
        for embedded in crate::components::PLATFORM {
            let world = World::of(&routes, embedded.name);
            runtime.load(embedded.name, embedded.bytes, world).unwrap();
        }
        (runtime, dir)
    }

    fn request(method: &str, uri: &str, body: &str) -> http::Request<Bytes> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn functions_decide_through_scoped_capabilities() {
        let (runtime, _dir) = runtime().await;
        let psk: Vec<u8> = (64..80).collect();
        let body =
            serde_json::json!({"identity": "42", "psk": psk, "accountId": "acc"}).to_string();
        let r = runtime
            .invoke(
                "admin-psk",
                Caller::Operator,
                request("POST", "/v3/sys/security/psk", &body),
                LIMITS,
            )
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (http::StatusCode::OK, &b"1"[..]));
        assert!(runtime.platform.psks.sim("42").is_some());

        let sim = Caller::Sim(SimCaller {
            iccid: "42".into(),
            identity_hex: None,
            account_id: "acc".into(),
        });
        let r = runtime
            .invoke(
                "device-create",
                sim.clone(),
                request("POST", "/v1/dev/d1?iccid=42", ""),
                LIMITS,
            )
            .await
            .unwrap();
        assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);
        let created: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let r = runtime
            .invoke(
                "device-credentials",
                sim.clone(),
                request("GET", "/v1/dev/d1?iccid=42", ""),
                LIMITS,
            )
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
            created
        );

        // The registry is not there for the operator, and psk-admin not for a SIM.
        let err = runtime
            .invoke(
                "device-credentials",
                Caller::Operator,
                request("GET", "/v1/dev/d1?iccid=42", ""),
                LIMITS,
            )
            .await;
        assert!(matches!(err, Err(InvokeError::Trap(_))), "{:?}", err.err());
        let r = runtime
            .invoke(
                "admin-psk",
                sim,
                request("POST", "/v3/sys/security/psk", &body),
                LIMITS,
            )
            .await;
        assert!(matches!(r, Err(InvokeError::Trap(_))));
    }
}
