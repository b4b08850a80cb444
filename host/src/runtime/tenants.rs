//! The tenant overlay: which account runs its own function on which route, with which limits; swapped whole on every change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::{CallLimits, Loaded, Runtime};
use crate::capabilities::Caller;
use crate::store::AccountLimits;

/// What an account has changed for itself: its functions (by route) and limits.
#[derive(Default, Clone)]
pub(super) struct Tenant {
    functions: HashMap<String, Arc<Loaded>>,
    limits: AccountLimits,
}

/// What this node runs of the tenants' functions, and the store revision that is.
#[derive(Default)]
pub struct TenantSync {
    pub(crate) revision: Option<i64>,
    /// The version each (account, route) runs.
    pub(crate) versions: HashMap<(String, String), String>,
    /// Accounts with limits of their own.
    pub(crate) limited: HashSet<String>,
}

impl Runtime {
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

    /// Applies an account's function limits to its next calls.
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
    pub(super) fn resolve(&self, id: &str, caller: &Caller) -> Option<Arc<Loaded>> {
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
    pub(super) fn limits_for(&self, caller: &Caller, mut limits: CallLimits) -> CallLimits {
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
}
