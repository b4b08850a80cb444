//! `psk-edge up`: opens the store, seeds a first start, loads the functions, and serves both ports until SIGTERM.
//!
//! [`args`] holds the command line, [`bootstrap`] the steps `run` sequences, [`banner`]
//! what it prints once it serves.

mod args;
mod banner;
mod bootstrap;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::admin_port;
use crate::broker::authority::Authority;
use crate::broker::{endpoint, revocations};
use crate::capabilities::Platform;
use crate::node::Node;
use crate::psk_cache::PskCache;
use crate::runtime::{CallLimits, Runtime, RuntimeConfig, World};
use crate::secrets::{self, OperatorCredentials, Sealer};
use crate::settings::{AdminAccess, SimPortConfig};
use crate::sim_port;
use crate::store::Store;
use crate::wolfssl;

pub use args::{DEMO_ACCOUNT, DEMO_ICCID, KexArg, UpArgs, default_data_dir, demo_psk};
use banner::{Banner, print_banner};
pub use bootstrap::DEFAULT_BROKER_PORT;
use bootstrap::{
    admin_certificate, bind_broker_endpoint, check_master_key, component_bytes, connection_limits,
    create_private_dir, follow_other_nodes, load_routes, seed_demo, start_broker, stop_signal,
    wasm_error,
};

/// Starts a node and serves until a stop signal: opens the store, loads the
/// components, binds every port and follows other nodes' changes.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    create_private_dir(data_dir)?;

    let master_env = std::env::var("PSK_EDGE_MASTER_KEY")
        .ok()
        .map(Zeroizing::new);
    let shared = args.database_url.is_some();
    if shared && master_env.is_none() && args.master_key_file.is_none() {
        bail!(
            "with --database-url every node needs the deployment's master key: \
             set PSK_EDGE_MASTER_KEY (64 hex characters) or --master-key-file, the same on every node"
        );
    }
    let (master_key, key_source) = secrets::load_master_key(
        master_env.as_deref().map(String::as_str),
        args.master_key_file.as_deref(),
        data_dir,
    )?;
    let sealer = Sealer::new(&master_key);
    drop(master_key);

    let store = match &args.database_url {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open_sqlite(&data_dir.join("psk-edge.db")).await?,
    };
    check_master_key(&store, &sealer, &key_source).await?;

    let authority = Arc::new(Authority::new(store.clone(), sealer.clone()));
    // Derived, so the same on every start: written only when missing or different.
    let key_path = data_dir.join("broker.key");
    let broker_key = authority.broker_key();
    if std::fs::read(&key_path).ok().as_deref() != Some(broker_key.as_bytes()) {
        let _ = std::fs::remove_file(&key_path);
        secrets::write_private(&key_path, &broker_key)?;
    }
    let limits = Arc::new(connection_limits(&args));
    let broker_listener = bind_broker_endpoint(args.broker_listen).await?;
    let broker_addr = broker_listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(endpoint::serve(
        broker_listener,
        authority.clone(),
        limits.broker.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));
    let broker = start_broker(&args, data_dir, &authority, broker_addr).await;

    let psks = Arc::new(PskCache::new()?);
    let platform = Arc::new(Platform::new(
        store.clone(),
        sealer,
        psks.clone(),
        broker.client.clone(),
    ));
    let loaded = platform.sync_psks().await?;
    // A shared database is production's: a SIM whose key is public only on request.
    let demo_wanted = if shared { args.demo } else { !args.no_demo };
    let demo_created = demo_wanted && seed_demo(&platform).await?;

    let (operator, operator_file) = OperatorCredentials::load(
        std::env::var("PSK_EDGE_OPERATOR_KEY").ok(),
        std::env::var("PSK_EDGE_OPERATOR_SECRET")
            .ok()
            .map(Zeroizing::new),
        data_dir,
    )?;
    let operator_key = operator.key.clone();

    let (cert_pem, key_pem, cert_path) = admin_certificate(&args, data_dir)?;
    let admin_tls =
        admin_port::tls_acceptor(&cert_pem, &key_pem).context("admin port certificate")?;

    let (routes, manifest_name) = load_routes(args.manifest.as_deref())?;
    let memory_bytes = args.fn_memory_mib << 20;
    let mut runtime = Runtime::new(
        &RuntimeConfig {
            concurrency: args.fn_concurrency,
            // Per-call caps are enforced per store; the pool only needs room for the largest.
            max_memory_bytes: memory_bytes.max(1 << 30),
            cache_dir: Some(
                args.cache_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("compiled")),
            ),
        },
        platform.clone(),
    )
    .map_err(wasm_error)?;
    for source in &routes.components {
        let bytes = component_bytes(&source.id, &source.path)?;
        runtime
            .load(&source.id, &bytes, World::of(&routes, &source.id))
            .map_err(wasm_error)
            .with_context(|| format!("loading component {}", source.id))?;
    }

    let sim_tls = Arc::new(wolfssl::Server::new(
        wolfssl::ServerConfig {
            cipher_list: args.ciphers.clone(),
            key_exchange: match args.psk_kex {
                KexArg::Both => wolfssl::KeyExchange::Both,
                KexArg::PskKe => wolfssl::KeyExchange::PskKe,
                KexArg::PskDheKe => wolfssl::KeyExchange::PskDheKe,
            },
            handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        },
        psks.clone(),
    )?);

    let tenant_routes = routes.components_on(wire::routes::Listener::Sim);
    let node = Arc::new(Node {
        tenant_routes,
        psks,
        platform,
        routes,
        runtime,
        sim_port: SimPortConfig {
            message_limit: args.message_limit,
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        },
        sim_limits: CallLimits {
            deadline: Duration::from_millis(args.fn_deadline_ms),
            memory_bytes,
            max_response: 64 << 10,
        },
        admin_limits: CallLimits {
            deadline: Duration::from_millis(args.admin_fn_deadline_ms),
            memory_bytes,
            max_response: 4 << 20,
        },
        admin: AdminAccess {
            operator,
            allow: args.admin_allow.clone(),
        },
        tenant_sync: Default::default(),
        authority,
        limits,
    });

    let tenant_functions = crate::tenant_api::sync_tenants(&node, None).await?;
    let sim_listener = crate::node::bind(args.sim_listen, args.listen_backlog)
        .with_context(|| format!("binding the SIM port {}", args.sim_listen))?;
    let admin_listener = crate::node::bind(args.admin_listen, args.listen_backlog)
        .with_context(|| format!("binding the admin port {}", args.admin_listen))?;
    let sim_addr = sim_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    if let Some(client) = &broker.client {
        tasks.spawn(revocations::run(
            node.platform.store.clone(),
            client.clone(),
            node.platform.changes.clone(),
            shutdown.clone(),
        ));
    }
    follow_other_nodes(&node, &tasks, &shutdown);
    tasks.spawn(sim_port::serve(
        sim_listener,
        sim_tls,
        node.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));
    tasks.spawn(admin_port::serve(
        admin_listener,
        admin_tls,
        node.clone(),
        shutdown.clone(),
        tasks.clone(),
    ));

    let stop = stop_signal()?;
    print_banner(&Banner {
        data_dir,
        sim_addr,
        admin_addr,
        operator_key: &operator_key,
        operator_file: operator_file.as_deref(),
        cert_path: &cert_path,
        // Only while the demo SIM is there with its public key: an operator who put
        // a real key on that ICCID, or a node that made no demo, prints no demo key.
        demo: node.psks.holds(DEMO_ICCID, &demo_psk())
            && node
                .psks
                .sim(DEMO_ICCID)
                .is_some_and(|sim| &*sim.account_id == DEMO_ACCOUNT),
        broker: &broker.description,
        broker_endpoint: broker_addr,
    });
    tracing::info!(
        sim = %sim_addr,
        admin = %admin_addr,
        mqtt = %broker.address,
        broker_endpoint = %broker_addr,
        database = if shared { "postgres" } else { "sqlite" },
        sims = node.psks.len(),
        tenant_functions,
        loaded_at_start = loaded,
        demo_created,
        manifest = manifest_name,
        master_key = key_source,
        "ready"
    );

    stop.await;
    tracing::info!("stopping");
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(3), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 3 s; closing them");
    }
    if let Some(managed) = broker.managed {
        managed.stop().await;
    }
    // A task still holding a connection past the grace period would make close wait
    // for it forever; the process ends either way, and SQLite's WAL needs no goodbye.
    if tokio::time::timeout(Duration::from_secs(2), node.platform.store.close())
        .await
        .is_err()
    {
        tracing::warn!("store connections still in use after 2 s; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}
