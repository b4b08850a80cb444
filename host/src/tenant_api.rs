//! The admin API the host answers itself: accounts, tenant keys and limits, and tenant functions (upload, activate, roll back).
//!
//! These handle component bytes and compilation, which are the host's business; the
//! decisions about devices and profiles stay in the admin components.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wire::identity::is_name;

use crate::capabilities::Caller;
use crate::node::Node;
use crate::runtime::{Loaded, Prepared};
use crate::secrets::random_token;
use crate::store::{AccountLimits, Counter, StoreError};

/// Largest component a tenant may upload.
pub const MAX_COMPONENT: usize = 16 << 20;

/// One of the host's own admin endpoints.
pub enum Api {
    /// `/v3/accounts`: list (GET) or create (POST) accounts.
    Accounts,
    /// `/v3/accounts/{account}/keys`: create a tenant key (POST).
    Keys {
        /// The account's id.
        account: String,
    },
    /// `/v3/accounts/{account}/limits`: set the account's limits (PUT, operator only).
    Limits {
        /// The account's id.
        account: String,
    },
    /// `/v3/accounts/{account}/functions/{route}`: upload (PUT) or list (GET) a route's
    /// versions, or stop serving the account's own (DELETE: the platform's serves again).
    Functions {
        /// The account's id.
        account: String,
        /// The SIM-port route the function serves.
        route: String,
    },
    /// `/v3/accounts/{account}/functions/{route}/activate`: serve a stored version (POST).
    Activate {
        /// The account's id.
        account: String,
        /// The SIM-port route the function serves.
        route: String,
    },
    /// `/v3/accounts/{account}/functions/{route}/versions/{version}`: delete an inactive
    /// version (DELETE).
    Version {
        /// The account's id.
        account: String,
        /// The SIM-port route the function serves.
        route: String,
        /// The version's hex SHA-256.
        version: String,
    },
    /// `/metrics`: the node's counters and caps (GET).
    Metrics,
}

impl Api {
    /// The endpoint `path` names, or None when it is none of these.
    pub fn parse(path: &str) -> Option<Api> {
        if path == "/metrics" {
            return Some(Api::Metrics);
        }
        let rest = path.strip_prefix("/v3/accounts")?;
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        let owned = |s: &str| s.to_owned();
        Some(match parts[..] {
            [] => Api::Accounts,
            [a, "keys"] => Api::Keys { account: owned(a) },
            [a, "limits"] => Api::Limits { account: owned(a) },
            [a, "functions", r] => Api::Functions {
                account: owned(a),
                route: owned(r),
            },
            [a, "functions", r, "activate"] => Api::Activate {
                account: owned(a),
                route: owned(r),
            },
            [a, "functions", r, "versions", v] => Api::Version {
                account: owned(a),
                route: owned(r),
                version: owned(v),
            },
            _ => return None,
        })
    }

    /// What only the operator may do; a tenant key acts on its own account's functions.
    pub fn operator_only(&self) -> bool {
        matches!(self, Api::Accounts | Api::Keys { .. } | Api::Metrics)
    }
}

/// An admin API answer, turned into a JSON response by the admin port.
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body; `{"error": …}` on a refusal.
    pub body: Value,
}

fn answer(status: StatusCode, body: Value) -> Answer {
    Answer { status, body }
}

fn error(status: StatusCode, reason: impl Into<String>) -> Answer {
    answer(status, json!({ "error": reason.into() }))
}

/// A body over [`MAX_COMPONENT`]: refused like any other bad upload.
pub fn too_large() -> Answer {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("larger than {} MiB", MAX_COMPONENT >> 20),
    )
}

/// The body did not arrive within the admin port's body deadline.
pub fn too_slow() -> Answer {
    error(StatusCode::REQUEST_TIMEOUT, "body too slow".to_owned())
}

/// A write the account's quota refuses: 409, naming the quota and its bound's field
/// in the limits body (the same name).
fn over_quota(account: &str, quota: crate::store::Quota) -> Answer {
    tracing::info!(
        account,
        quota = quota.name(),
        "write refused: quota reached"
    );
    quota_refused(quota)
}

/// The answer to a write over `quota`, wherever in the admin API it was refused.
pub fn quota_refused(quota: crate::store::Quota) -> Answer {
    answer(
        StatusCode::CONFLICT,
        json!({ "error": "quota", "quota": quota.name() }),
    )
}

fn unavailable(e: impl std::fmt::Display) -> Answer {
    tracing::error!("admin API: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
}

/// `uploaded_by` and log lines name the caller, never a secret.
fn who(caller: &Caller) -> String {
    caller.label()
}

/// What can be decided from the head alone (the account exists, the route is one a
/// tenant may replace): answered before the body is read, so a refused upload costs
/// the node no buffer. None: read the body. Quotas wait for the bytes, since the same
/// bytes again are the same version and take no room.
pub async fn decide_before_body(node: &Arc<Node>, api: &Api) -> Option<Answer> {
    let store = &node.platform.store;
    let account = match api {
        Api::Keys { account }
        | Api::Limits { account }
        | Api::Functions { account, .. }
        | Api::Activate { account, .. }
        | Api::Version { account, .. } => Some(account.as_str()),
        Api::Accounts | Api::Metrics => None,
    };
    if let Some(account) = account {
        match store.account_exists(account).await {
            Ok(true) => {}
            Ok(false) => return Some(error(StatusCode::NOT_FOUND, "no such account")),
            Err(e) => return Some(unavailable(e)),
        }
    }
    match api {
        Api::Functions { route, .. } | Api::Activate { route, .. } | Api::Version { route, .. }
            if !node.tenant_routes.contains(route) =>
        {
            Some(error(
                StatusCode::NOT_FOUND,
                format!(
                    "no tenant route {route}; routes: {}",
                    node.tenant_routes.join(", ")
                ),
            ))
        }
        _ => None,
    }
}

/// Answers one admin API request whose body has been read, as `caller` may.
pub async fn handle(
    node: &Arc<Node>,
    caller: &Caller,
    api: Api,
    method: &Method,
    query: &str,
    body: Bytes,
) -> Answer {
    let store = &node.platform.store;
    match (api, method) {
        (Api::Metrics, &Method::GET) => answer(StatusCode::OK, node.metrics()),
        (Api::Accounts, &Method::GET) => match store.accounts().await {
            Ok(accounts) => answer(StatusCode::OK, json!({ "accounts": accounts })),
            Err(e) => unavailable(e),
        },
        (Api::Accounts, &Method::POST) => create_account(node, &body).await,
        (Api::Keys { account }, &Method::POST) => create_key(node, &account).await,
        (Api::Limits { account }, &Method::PUT) if matches!(caller, Caller::Operator) => {
            set_limits(node, &account, &body).await
        }
        (Api::Limits { .. }, &Method::PUT) => {
            error(StatusCode::FORBIDDEN, "limits are set by the operator")
        }
        (
            Api::Version {
                account,
                route,
                version,
            },
            &Method::DELETE,
        ) => match store
            .delete_function_version(&account, &route, &version)
            .await
        {
            Ok(true) => {
                tracing::info!(account, route, version, by = who(caller), "version deleted");
                answer(
                    StatusCode::OK,
                    json!({ "account": account, "route": route, "deleted": version }),
                )
            }
            Ok(false) => error(StatusCode::NOT_FOUND, "no such inactive version"),
            Err(e) => unavailable(e),
        },
        (Api::Functions { account, route }, &Method::PUT) => {
            let activate = !query.split('&').any(|p| p == "activate=false");
            upload(node, caller, &account, &route, body, activate).await
        }
        (Api::Functions { account, route }, &Method::GET) => {
            match store.function_versions(&account, &route).await {
                Ok((versions, active)) => answer(
                    StatusCode::OK,
                    json!({ "account": account, "route": route, "active": active, "versions": versions }),
                ),
                Err(e) => unavailable(e),
            }
        }
        (Api::Functions { account, route }, &Method::DELETE) => {
            match store.deactivate_function(&account, &route).await {
                Ok(_) => {
                    follow_store(node, None).await;
                    now_serving(caller, &account, &route, None)
                }
                Err(e) => unavailable(e),
            }
        }
        (Api::Activate { account, route }, &Method::POST) => {
            let version = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_owned));
            match version {
                Some(version) => activate(node, caller, &account, &route, &version).await,
                None => error(StatusCode::BAD_REQUEST, "body must be {\"version\":\"…\"}"),
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

async fn create_account(node: &Node, body: &[u8]) -> Answer {
    let Some(account) = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("accountId")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be {\"accountId\":\"…\"}",
        );
    };
    if !is_name(&account) {
        return error(
            StatusCode::BAD_REQUEST,
            "accountId must match [A-Za-z0-9._-]{1,64}",
        );
    }
    match node.platform.store.create_account(&account).await {
        Ok(created) => {
            if created {
                tracing::info!(account, "account created");
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            answer(status, json!({ "accountId": account, "created": created }))
        }
        Err(e) => unavailable(e),
    }
}

async fn create_key(node: &Node, account: &str) -> Answer {
    let (key, secret) = match (random_token(16), random_token(32)) {
        (Ok(key), Ok(secret)) => (format!("tk-{key}"), secret),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let digest = Sha256::digest(secret.as_bytes());
    match node
        .platform
        .store
        .add_tenant_key(&key, account, &digest)
        .await
    {
        Ok(()) => {
            tracing::info!(account, key, "tenant key created");
            // The one and only time the secret leaves the node.
            answer(
                StatusCode::CREATED,
                json!({ "accountId": account, "key": key, "secret": secret }),
            )
        }
        Err(e) => unavailable(e),
    }
}

async fn set_limits(node: &Arc<Node>, account: &str, body: &[u8]) -> Answer {
    let Ok(limits) = serde_json::from_slice::<AccountLimits>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be {\"deadline_ms\":N,\"memory_mib\":N,\"function_versions\":N,\"function_bytes\":N,\"devices_per_sim\":N,\"devices\":N,\"profiles\":N,\"config_per_device\":N} (any may be null or left out)",
        );
    };
    if !limits.valid() {
        return error(StatusCode::BAD_REQUEST, "limits must be positive");
    }
    match node
        .platform
        .store
        .set_account_limits(account, limits)
        .await
    {
        Ok(_) => {
            follow_store(node, None).await;
            tracing::info!(account, ?limits, "function limits set");
            answer(
                StatusCode::OK,
                json!({ "accountId": account, "limits": limits }),
            )
        }
        Err(e) => unavailable(e),
    }
}

async fn upload(
    node: &Arc<Node>,
    caller: &Caller,
    account: &str,
    route: &str,
    bytes: Bytes,
    activate: bool,
) -> Answer {
    let version = hex::encode(Sha256::digest(&bytes));
    let started = std::time::Instant::now();
    let prepared = prepare(node, account, route, &version, bytes.to_vec()).await;
    let prepared = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(reason)) => {
            tracing::warn!(account, route, by = who(caller), "upload refused: {reason}");
            return error(StatusCode::UNPROCESSABLE_ENTITY, reason);
        }
        Err(e) => return unavailable(e),
    };
    let compile_ms = started.elapsed().as_millis();
    let store = &node.platform.store;
    if let Err(e) = store
        .put_function_version(
            account,
            route,
            &version,
            &prepared.interface,
            &bytes,
            &who(caller),
        )
        .await
    {
        return match e {
            StoreError::Quota(quota) => over_quota(account, quota),
            e => unavailable(e),
        };
    }
    if activate {
        if let Err(e) = store.activate_function(account, route, &version).await {
            return unavailable(e);
        }
        follow_store(node, Some((account, route, &version, prepared.loaded))).await;
    }
    tracing::info!(
        account,
        route,
        version,
        by = who(caller),
        activate,
        compile_ms,
        "tenant function uploaded"
    );
    answer(
        StatusCode::OK,
        json!({
            "account": account, "route": route, "version": version, "interface": prepared.interface,
            "size": bytes.len(), "active": activate, "compile_ms": compile_ms,
        }),
    )
}

async fn activate(
    node: &Arc<Node>,
    caller: &Caller,
    account: &str,
    route: &str,
    version: &str,
) -> Answer {
    let store = &node.platform.store;
    let bytes = match store.function_component(account, route, version).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such version"),
        Err(e) => return unavailable(e),
    };
    let prepared = match prepare(node, account, route, version, bytes).await {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(reason)) => return error(StatusCode::UNPROCESSABLE_ENTITY, reason),
        Err(e) => return unavailable(e),
    };
    match store.activate_function(account, route, version).await {
        Ok(_) => {
            follow_store(node, Some((account, route, version, prepared.loaded))).await;
            now_serving(caller, account, route, Some(version))
        }
        Err(e) => unavailable(e),
    }
}

/// Answers with what now serves the route (None: the platform's component).
fn now_serving(caller: &Caller, account: &str, route: &str, version: Option<&str>) -> Answer {
    tracing::info!(
        account,
        route,
        version = version.unwrap_or("the platform's"),
        by = who(caller),
        "tenant function now serving"
    );
    answer(
        StatusCode::OK,
        json!({ "account": account, "route": route, "active": version }),
    )
}

/// This node's own change reaches its runtime the way another node's does (by the
/// store's revision), with the version it just compiled as a head start.
async fn follow_store(node: &Arc<Node>, compiled: Option<(&str, &str, &str, Arc<Loaded>)>) {
    if let Err(e) = sync_tenants(node, compiled).await {
        tracing::warn!("tenant change stored, this node follows on its next resync: {e:#}");
    }
}

/// Validates and compiles a version off the async runtime: compiling takes a while.
async fn prepare(
    node: &Arc<Node>,
    account: &str,
    route: &str,
    version: &str,
    bytes: Vec<u8>,
) -> Result<Result<Prepared, String>, tokio::task::JoinError> {
    let label = format!("{account}/{route}@{}", &version[..version.len().min(12)]);
    let node = node.clone();
    tokio::task::spawn_blocking(move || node.runtime.prepare(&label, &bytes)).await
}

/// Brings the runtime to the tenants' functions and limits the store has now: at
/// start, after this node's own changes, and when another node announces one. A
/// version that does not load (e.g. after an engine change) is reported and its route
/// falls back to the platform's component. Returns how many functions are active.
pub async fn sync_tenants(
    node: &Arc<Node>,
    compiled: Option<(&str, &str, &str, Arc<Loaded>)>,
) -> anyhow::Result<usize> {
    let mut state = node.tenant_sync.lock().await;
    let store = &node.platform.store;
    let revision = store.revision(Counter::Functions).await?;
    if state.revision == Some(revision) {
        return Ok(state.versions.len());
    }
    let limits = store.account_limits().await?;
    let limited: HashSet<String> = limits.iter().map(|(a, _)| a.clone()).collect();
    for (account, limits) in limits {
        node.runtime.set_tenant_limits(&account, limits);
    }
    for account in state.limited.difference(&limited) {
        node.runtime
            .set_tenant_limits(account, AccountLimits::default());
    }
    state.limited = limited;

    let active = store.active_versions().await?;
    let mut wanted = HashMap::with_capacity(active.len());
    for (account, route, version) in active {
        let key = (account, route);
        if state.versions.get(&key) != Some(&version) {
            let (account, route) = (&key.0, &key.1);
            let loaded = match &compiled {
                Some((a, r, v, loaded)) if (*a, *r, *v) == (account, route, &version) => {
                    Some(loaded.clone())
                }
                _ => load_version(node, account, route, &version).await?,
            };
            node.runtime.set_tenant_function(account, route, loaded);
        }
        wanted.insert(key, version);
    }
    for (account, route) in state.versions.keys() {
        if !wanted.contains_key(&(account.clone(), route.clone())) {
            node.runtime.set_tenant_function(account, route, None);
        }
    }
    state.versions = wanted;
    state.revision = Some(revision);
    Ok(state.versions.len())
}

/// A stored version compiled for this node; None (the platform's serves) when it
/// no longer loads.
async fn load_version(
    node: &Arc<Node>,
    account: &str,
    route: &str,
    version: &str,
) -> anyhow::Result<Option<Arc<Loaded>>> {
    let Some(bytes) = node
        .platform
        .store
        .function_component(account, route, version)
        .await?
    else {
        return Ok(None);
    };
    Ok(match prepare(node, account, route, version, bytes).await? {
        Ok(prepared) => Some(prepared.loaded),
        Err(reason) => {
            tracing::error!(
                account,
                route,
                version,
                "active tenant function does not load, the platform's serves instead: {reason}"
            );
            None
        }
    })
}
