//! The WebAssembly runtime: compiles each component once, and runs every request in a fresh instance with a deadline and a memory cap.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::capabilities::{self, Caller, CapabilityCtx, Effect, Platform};
use crate::store::AccountLimits;

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Guest execution deadline (epoch interruption): an endless loop traps here.
    pub deadline: Duration,
    /// Linear memory a single instance may grow to.
    pub memory_bytes: usize,
    /// Largest response body collected from the guest.
    pub max_response: usize,
}

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

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no component {0}")]
    NoComponent(String),
    #[error("deadline exceeded")]
    Deadline,
    #[error("response body over {0} bytes")]
    ResponseTooLarge(usize),
    #[error("the function answered with an error: {0}")]
    Guest(String),
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

/// What an account has changed for itself: its functions (by route) and limits.
#[derive(Default, Clone)]
struct Tenant {
    functions: HashMap<String, Arc<Loaded>>,
    limits: AccountLimits,
}

/// A validated tenant component.
pub struct Prepared {
    pub loaded: Arc<Loaded>,
    /// The wasi:http handler interface it exports.
    pub interface: String,
}

/// Interfaces a tenant component may not import, and why.
const FORBIDDEN_IMPORTS: &[(&str, &str)] = &[
    ("wasi:filesystem/", "no filesystem"),
    ("wasi:sockets/", "no sockets"),
    ("psk-edge:platform/psk-admin", "psk-admin is the operator's"),
    (
        "psk-edge:platform/accounts-admin",
        "accounts-admin is not for functions",
    ),
];

pub struct Runtime {
    engine: Engine,
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

/// What one request's store holds: WASI with no files, no sockets and no
/// environment, wasi:http that refuses outbound requests, and the capabilities.
struct RequestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    limits: StoreLimits,
    caps: CapabilityCtx,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasi:http's default hooks would send any request a guest makes; functions get none.
struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// What this node runs of the tenants' functions, and the store revision that is.
#[derive(Default)]
pub struct TenantSync {
    pub(crate) revision: Option<i64>,
    /// The version each (account, route) runs.
    pub(crate) versions: std::collections::HashMap<(String, String), String>,
    /// Accounts with limits of their own.
    pub(crate) limited: std::collections::HashSet<String>,
}

/// A function's answer, body collected.
pub struct FnResponse {
    pub status: http::StatusCode,
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
    /// To commit once the answer reached the caller, or drop when it is not sent.
    pub effects: Vec<Effect>,
    /// A quota the function's writes ran into (see `CapabilityCtx::quota`).
    pub quota: Option<crate::store::Quota>,
}

impl Runtime {
    pub fn new(config: &RuntimeConfig, platform: Arc<Platform>) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.concurrency;
        // A Rust component is one core module plus a few shims; these bounds leave room.
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes)
            // Keeping the first pages resident and letting the kernel tell which pages
            // were touched cuts the per-request reset that dominates instantiation.
            .linear_memory_keep_resident(1 << 20)
            .pagemap_scan(Enabled::Auto);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Runtime {
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

    fn linker(&self) -> wasmtime::Result<Linker<RequestState>> {
        let mut linker = Linker::new(&self.engine);
        // Rust guests built for wasm32-wasip2 import WASI 0.2 from std and 0.3 from spin-sdk.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        capabilities::add_to_linker(&mut linker, |s: &mut RequestState| &mut s.caps)?;
        Ok(linker)
    }

    /// Compiles (or loads from the cache) and pre-instantiates one of the platform's
    /// components. Fails if it is not a wasi:http handler or imports anything the host
    /// does not provide.
    pub fn load(&mut self, id: &str, bytes: &[u8]) -> wasmtime::Result<()> {
        let component = self.compile(bytes)?;
        let loaded = self.pre_instantiate(id, &component)?;
        self.components.insert(id.to_owned(), Arc::new(loaded));
        Ok(())
    }

    fn pre_instantiate(&self, id: &str, component: &Component) -> wasmtime::Result<Loaded> {
        let pre = self.linker()?.instantiate_pre(component).with_context(|| {
            format!("component {id} imports something the host does not provide")
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

    /// Validates a tenant's upload and makes it ready to serve; the error is the
    /// reason, for the tenant. Compiling takes a while: call it off the async runtime.
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
            .pre_instantiate(label, &component)
            .map_err(|e| format!("{e:#}"))?;
        Ok(Prepared {
            loaded: Arc::new(loaded),
            interface: interface.clone(),
        })
    }

    /// Serves `route` of `account` with `function` from the next request on (None:
    /// the platform's component again). Requests already running finish on the old one.
    pub fn set_tenant_function(&self, account: &str, route: &str, function: Option<Arc<Loaded>>) {
        self.update_tenant(account, |tenant| match function {
            Some(loaded) => {
                tenant.functions.insert(route.to_owned(), loaded);
            }
            None => {
                tenant.functions.remove(route);
            }
        });
    }

    pub fn set_tenant_limits(&self, account: &str, limits: AccountLimits) {
        self.update_tenant(account, |tenant| tenant.limits = limits);
    }

    fn update_tenant(&self, account: &str, change: impl FnOnce(&mut Tenant)) {
        let _one_at_a_time = self.tenant_changes.lock();
        let mut table = HashMap::clone(&self.tenants.load());
        let mut tenant = table
            .get(account)
            .map(|t| Tenant::clone(t))
            .unwrap_or_default();
        change(&mut tenant);
        table.insert(account.to_owned(), Arc::new(tenant));
        self.tenants.store(Arc::new(table));
    }

    /// The component a call runs: the account's own function for the route if it
    /// has one, else the platform's.
    fn resolve(&self, id: &str, caller: &Caller) -> Option<Arc<Loaded>> {
        let account = match caller {
            Caller::Sim(sim) => Some(&sim.account_id),
            _ => None,
        };
        account
            .and_then(|a| {
                self.tenants
                    .load()
                    .get(&**a)
                    .and_then(|t| t.functions.get(id).cloned())
            })
            .or_else(|| self.components.get(id).cloned())
    }

    /// The account's own limits where it has them.
    fn limits_for(&self, caller: &Caller, mut limits: CallLimits) -> CallLimits {
        if let Caller::Sim(sim) = caller
            && let Some(tenant) = self.tenants.load().get(&*sim.account_id)
        {
            if let Some(ms) = tenant.limits.deadline_ms {
                limits.deadline = Duration::from_millis(u64::from(ms));
            }
            if let Some(mib) = tenant.limits.memory_mib {
                limits.memory_bytes =
                    (usize::try_from(mib).unwrap_or(usize::MAX) << 20).min(self.max_memory_bytes);
            }
        }
        limits
    }

    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
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
                Handler::P3(pre) => call_p3(pre, &mut store, request, limits.max_response).await,
                Handler::P2(pre) => call_p2(pre, &mut store, request, limits.max_response).await,
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

/// A component compiled earlier by this node, from the compile cache.
#[allow(unsafe_code)] // wasmtime trusts a compiled artifact as native code
fn load_compiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `serialize` into the data directory, which only
    // this user can write; its name binds it to the component's bytes and this engine.
    unsafe { Component::deserialize_file(engine, path) }
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

async fn call_p3(
    pre: &ServicePre<RequestState>,
    store: &mut Store<RequestState>,
    request: http::Request<Bytes>,
    max_response: usize,
) -> Result<FnResponse, InvokeError> {
    let service = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(InvokeError::Trap)?;
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Full::new(body));
    let (request, _io) =
        wasmtime_wasi_http::p3::Request::from_http(&mut store.data_mut().hooks, request);
    store
        .run_concurrent(async move |store| {
            let response = match service.handle(store, request).await? {
                Ok(response) => response,
                Err(code) => return Ok(Err(InvokeError::Guest(format!("{code:?}")))),
            };
            let response = store.with(|s| response.into_http(s, async { Ok(()) }))?;
            let (parts, body) = response.into_parts();
            Ok(collect(parts, body, max_response).await)
        })
        .await
        .and_then(|r: wasmtime::Result<_>| r)
        .map_err(classify_trap)?
}

/// The 0.2 handler answers through an out-parameter and may keep running (streaming
/// its body) after it set the response, so the call and the collection run together.
async fn call_p2(
    pre: &ProxyPre<RequestState>,
    store: &mut Store<RequestState>,
    request: http::Request<Bytes>,
    max_response: usize,
) -> Result<FnResponse, InvokeError> {
    let proxy = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(InvokeError::Trap)?;
    let (mut parts, body) = request.into_parts();
    // wasi:http 0.2 wants an authority; SIMs may omit Host.
    parts
        .headers
        .entry(http::header::HOST)
        .or_insert(http::HeaderValue::from_static("localhost"));
    let request = http::Request::from_parts(parts, Full::new(body));
    let http = store.data_mut();
    let mut view = http.http();
    let incoming = view
        .new_incoming_request(Scheme::Http, request)
        .map_err(InvokeError::Trap)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let out = view.new_response_outparam(tx).map_err(InvokeError::Trap)?;
    let call = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, incoming, out);
    let answer = async {
        match rx.await {
            Ok(Ok(response)) => {
                let (parts, body) = response.into_parts();
                collect(parts, body, max_response).await
            }
            Ok(Err(code)) => Err(InvokeError::Guest(format!("{code:?}"))),
            // The guest returned (or trapped) without setting a response.
            Err(_) => Err(InvokeError::Guest("no response".into())),
        }
    };
    let (called, answered) = tokio::join!(call, answer);
    called.map_err(classify_trap)?;
    answered
}

/// The innermost cause: wasmtime's outer contexts say "failed to parse", the inner one why.
fn root_cause(e: &wasmtime::Error) -> String {
    e.chain()
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string)
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
        for embedded in crate::components::PLATFORM {
            runtime.load(embedded.name, embedded.bytes).unwrap();
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
