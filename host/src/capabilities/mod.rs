//! The WIT capabilities the host gives to functions, each scoped to the caller the request authenticated as.
//!
//! Functions decide; these implementations only do what the caller may do: a SIM
//! reaches devices of its own account, only the operator reaches the PSK table.

mod accounts_admin;
mod log;
mod psk_admin;
mod registry;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::broker::BrokerClient;
use crate::psk_cache::PskCache;
use crate::secrets::Sealer;
use crate::store::follow::Changes;
use crate::store::{Counter, Store};

pub use psk_admin::PskChange;
pub use registry::Effect;

// Generated from wit/platform.wit: items take their docs from the WIT, and the helper
// methods bindgen adds have none, so the crate's missing_docs cannot hold here.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "psk-edge:platform/capabilities",
        imports: { default: async | trappable },
    });
}

pub use bindings::psk_edge::platform::types::{
    Credentials, Error as CapError, Expiration as WitExpiration,
};

/// Who the host authenticated for this request.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A SIM on the SIM port, in its own account.
    Sim(SimCaller),
    /// The operator on the admin port: every account, and the PSK table.
    Operator,
    /// Someone holding one of the account's tenant keys.
    Tenant(Arc<str>),
}

/// The SIM a SIM-port request came from, as its handshake authenticated it.
#[derive(Clone, Debug)]
pub struct SimCaller {
    /// The SIM's ICCID.
    pub iccid: String,
    /// Hex of the BCD identity bytes, when the SIM authenticated that way.
    pub identity_hex: Option<String>,
    /// The account the SIM belongs to: the only one its functions reach.
    pub account_id: Arc<str>,
}

impl Caller {
    /// How the caller appears in log lines (never a secret).
    pub fn label(&self) -> String {
        match self {
            Caller::Sim(sim) => format!("sim:{}", sim.iccid),
            Caller::Operator => "operator".into(),
            Caller::Tenant(account) => format!("tenant:{account}"),
        }
    }
}

/// The services behind the capabilities, shared by all requests.
pub struct Platform {
    /// Accounts, devices, credentials and the PSK table.
    pub store: Store,
    /// Seals and opens the secrets the store holds.
    pub sealer: Sealer,
    /// The live PSK table the SIM port's handshakes read.
    pub psks: Arc<PskCache>,
    /// The platform's connection to its broker, for data published on devices'
    /// behalf; None without a broker (`--no-mqtt`, or no Mosquitto on this machine).
    pub broker: Option<Arc<BrokerClient>>,
    /// Wakes whoever follows each counter: local changes announce themselves here
    /// at once, other nodes' through the database.
    pub changes: Arc<Changes>,
    /// Refusals and function log lines of SIM requests: counted, and thinned per SIM.
    pub sim_log: crate::sim_log::SimLog,
    /// The store's PSK revision the cache holds; one sync at a time.
    psk_sync: tokio::sync::Mutex<i64>,
}

impl Platform {
    /// The shared services around `store`; the PSK cache counts as never synced (revision
    /// 0) until the first sync.
    pub fn new(
        store: Store,
        sealer: Sealer,
        psks: Arc<PskCache>,
        broker: Option<Arc<BrokerClient>>,
    ) -> Self {
        Platform {
            store,
            sealer,
            psks,
            broker,
            changes: Arc::default(),
            sim_log: crate::sim_log::SimLog::default(),
            psk_sync: tokio::sync::Mutex::new(0),
        }
    }

    /// A credential was revoked in the store: this node's broker hears of it now.
    fn revoked(&self) {
        self.changes.announce(Counter::Credentials);
    }
}

/// The per-request view of the platform that the WIT imports run against.
pub struct CapabilityCtx {
    /// Who the request authenticated as: what every capability scopes to.
    pub caller: Caller,
    /// The shared services.
    pub platform: Arc<Platform>,
    /// The id of the component serving the request, for log lines.
    pub component: Arc<str>,
    /// What must happen only if the response reaches the caller (see [`Effect`]).
    pub effects: Vec<Effect>,
    /// What this request's `device` read of each device: what `serve-credentials`
    /// claims against.
    pub seen: std::collections::HashMap<String, Seen>,
    /// The first quota a write of this request ran into: the WIT error can only say
    /// `denied`, so the admin port names the quota in its answer from here.
    pub quota: std::sync::OnceLock<crate::store::Quota>,
}

/// A device as a request last saw it.
pub struct Seen {
    /// The password's revision.
    pub revision: i64,
    /// The count, when the strategy decides on it (AFTER-X-REQUESTS).
    pub count: Option<i64>,
    /// The row itself, until a claim changes it: `serve-credentials` needs not read it again.
    pub row: Option<crate::store::DeviceRow>,
}

impl CapabilityCtx {
    /// The SIM behind this request. Only `sim-function` components reach the registry,
    /// and only SIM requests reach them; this check keeps that true should a request
    /// of another caller ever be routed to one.
    fn sim(&self) -> wasmtime::Result<&SimCaller> {
        match &self.caller {
            Caller::Sim(sim) => Ok(sim),
            Caller::Operator | Caller::Tenant(_) => {
                wasmtime::bail!("the registry is only available to SIM requests")
            }
        }
    }
}

impl bindings::psk_edge::platform::types::Host for CapabilityCtx {}

/// The WIT worlds a component is linked against; which one follows from the port its
/// routes are on (spin.toml's `listener`), so a component importing what its world does
/// not grant fails when it is loaded or uploaded, before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `sim-function`: `registry` and `log`.
    SimFunction,
    /// `admin-function`: `psk-admin`, `accounts-admin` and `log`.
    AdminFunction,
}

impl World {
    /// The world of one of `routes`' components: that of the port its routes are on.
    pub fn of(routes: &wire::routes::RouteTable, component: &str) -> World {
        match routes.listener_of(component) {
            Some(wire::routes::Listener::Admin) => World::AdminFunction,
            Some(wire::routes::Listener::Sim) | None => World::SimFunction,
        }
    }

    /// The world's name in `wit/platform.wit`.
    pub fn name(self) -> &'static str {
        match self {
            World::SimFunction => "sim-function",
            World::AdminFunction => "admin-function",
        }
    }
}

/// Adds the interfaces `world` grants, and only those.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    world: World,
    get: fn(&mut T) -> &mut CapabilityCtx,
) -> wasmtime::Result<()> {
    use bindings::psk_edge::platform as wit;
    wit::types::add_to_linker::<T, HasSelf<CapabilityCtx>>(linker, get)?;
    wit::log::add_to_linker::<T, HasSelf<CapabilityCtx>>(linker, get)?;
    match world {
        World::SimFunction => {
            wit::registry::add_to_linker::<T, HasSelf<CapabilityCtx>>(linker, get)
        }
        World::AdminFunction => {
            wit::psk_admin::add_to_linker::<T, HasSelf<CapabilityCtx>>(linker, get)?;
            wit::accounts_admin::add_to_linker::<T, HasSelf<CapabilityCtx>>(linker, get)
        }
    }
}
