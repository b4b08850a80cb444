//! One running node: everything a request needs, shared by both listeners.

use std::sync::Arc;

use crate::admin_port::AdminAccess;
use crate::capabilities::Platform;
use crate::psk_cache::PskCache;
use crate::router::RouteTable;
use crate::runtime::{CallLimits, Runtime};
use crate::sim_port::SimPortConfig;

pub struct Node {
    pub psks: Arc<PskCache>,
    pub platform: Arc<Platform>,
    pub routes: RouteTable,
    pub runtime: Runtime,
    pub sim_port: SimPortConfig,
    pub sim_limits: CallLimits,
    pub admin_limits: CallLimits,
    pub admin: AdminAccess,
}
