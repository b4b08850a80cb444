//! `psk-edge up`: opens the store, seeds a first start, loads the functions, and serves both ports until SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::routes::RouteTable;
use zeroize::Zeroizing;

use crate::admin_port;
use crate::broker::authority::Authority;
use crate::broker::managed::PluginSetup;
use crate::broker::{
    BrokerClient, BrokerUrl, ManagedMosquitto, PLATFORM_USER, endpoint, revocations,
};
use crate::capabilities::{Platform, PskChange};
use crate::components;
use crate::guard::{self, Budget, Gate, Limits};
use crate::node::Node;
use crate::psk_cache::PskCache;
use crate::runtime::{CallLimits, Runtime, RuntimeConfig, World};
use crate::secrets::{self, OperatorCredentials, Sealer};
use crate::settings::{AdminAccess, SimPortConfig};
use crate::sim_port;
use crate::store::Store;
use crate::store::follow;
use crate::wolfssl;

pub const DEMO_ICCID: &str = "049305930495403";
pub const DEMO_ACCOUNT: &str = "demo";
/// The PSK of the seed document's example SIM: bytes 64..=79 ("@ABCDEFGHIJKLMNO").
pub fn demo_psk() -> Vec<u8> {
    (64u8..80).collect()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KexArg {
    /// psk_ke (SIM applets) and psk_dhe_ke (OpenSSL clients)
    Both,
    /// pure PSK only
    PskKe,
    /// PSK with (EC)DHE only
    PskDheKe,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the node's own files live: the SQLite database (unless --database-url),
    /// keys, certificate and compiled functions.
    #[arg(long, env = "PSK_EDGE_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// The SIM port (TLS 1.3 PSK-only). Pass 0.0.0.0:11111 to expose it.
    #[arg(long, default_value = "127.0.0.1:11111")]
    pub sim_listen: SocketAddr,
    /// The admin port (HTTPS with a certificate).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub admin_listen: SocketAddr,
    /// A Spin manifest to serve instead of the built-in one.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// A PostgreSQL database that many nodes share (postgres://USER:PASSWORD@HOST/DB),
    /// on a session connection: LISTEN/NOTIFY does not pass transaction-mode poolers.
    /// Default: DATA_DIR/psk-edge.db, the node's own SQLite file.
    #[arg(long, env = "PSK_EDGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the 64-hex-character master key (else PSK_EDGE_MASTER_KEY, else
    /// generated in DATA_DIR; with --database-url one of the two is required, the same on
    /// every node).
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// PEM certificate chain for the admin port (else a self-signed one is generated).
    #[arg(long, requires = "admin_key")]
    pub admin_cert: Option<PathBuf>,
    /// PEM private key for --admin-cert.
    #[arg(long, requires = "admin_cert")]
    pub admin_key: Option<PathBuf>,
    /// Addresses (CIDR) allowed to call /v3/sys/; repeat or comma-separate. Default: any.
    #[arg(long, value_delimiter = ',')]
    pub admin_allow: Vec<ipnet::IpNet>,
    /// Key exchange modes the SIM port accepts.
    #[arg(long, value_enum, default_value_t = KexArg::Both)]
    pub psk_kex: KexArg,
    /// TLS 1.3 suites of the SIM port, in wolfSSL's names.
    #[arg(
        long,
        default_value = "TLS13-AES128-CCM-SHA256:TLS13-AES128-GCM-SHA256"
    )]
    pub ciphers: String,
    /// Largest message, request or response, between SIM and platform.
    #[arg(long, default_value_t = 250)]
    pub message_limit: usize,
    /// A SIM handshake not finished after this many milliseconds is dropped.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// A SIM connection idle this many milliseconds between requests is closed.
    #[arg(long, default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// A SIM request must arrive whole within this many milliseconds of its first byte.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Deadline for a function serving a SIM request.
    #[arg(long, default_value_t = 500)]
    pub fn_deadline_ms: u64,
    /// Deadline for a function serving an admin request (one bulk batch counts as one).
    #[arg(long, default_value_t = 30_000)]
    pub admin_fn_deadline_ms: u64,
    /// Linear memory one function instance may use, in MiB.
    #[arg(long, default_value_t = 64)]
    pub fn_memory_mib: usize,
    /// Function instances that may run at once.
    #[arg(long, default_value_t = 128)]
    pub fn_concurrency: u32,
    /// Where compiled functions are cached (keyed by content and engine); several
    /// nodes or data directories may share one. Default: DATA_DIR/compiled.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The platform's MQTT broker, whose plugin (or HTTP authenticator) asks a node of
    /// this deployment: mqtt://HOST:PORT. The node connects there as the platform user
    /// to publish devices' data and tell the broker what was revoked. Default: a
    /// Mosquitto that `up` starts and stops itself, when `mosquitto` is installed.
    #[arg(
        long,
        env = "PSK_EDGE_MQTT_URL",
        hide_env_values = true,
        conflicts_with = "no_mqtt"
    )]
    pub mqtt_url: Option<BrokerUrl>,
    /// No broker: devices get credentials that no broker is told about.
    #[arg(long)]
    pub no_mqtt: bool,
    /// Where brokers ask this node who a client is (plain HTTP: keep it on loopback).
    /// Default: 127.0.0.1:11112, or a free loopback port when that one is taken.
    #[arg(long)]
    pub broker_listen: Option<SocketAddr>,
    /// The Mosquitto plugin the managed broker loads. Default: libpsk_edge_mosquitto.so
    /// beside this executable.
    #[arg(long)]
    pub mqtt_plugin: Option<PathBuf>,
    /// Connections the SIM and admin ports may have waiting to be accepted (the kernel
    /// caps it at net.core.somaxconn): room for a cell's SIMs reconnecting at once.
    #[arg(long, default_value_t = 4096)]
    pub listen_backlog: u32,
    /// SIM connections at once. Default: what the open-file limit leaves after the
    /// reserve and the admin and broker ports' shares.
    #[arg(long)]
    pub max_sim_connections: Option<usize>,
    /// SIM handshakes in progress at once (connections not yet authenticated).
    #[arg(long, default_value_t = 4096)]
    pub max_sim_handshakes: usize,
    /// SIM handshakes in progress from one address (an IPv6 /64); many SIMs may share
    /// one carrier gateway address, so not too low. Default: 256, at most a quarter of
    /// the total.
    #[arg(long)]
    pub max_sim_handshakes_per_addr: Option<usize>,
    /// Admin connections at once. Default: an eighth of the open-file limit, at most 1024.
    #[arg(long)]
    pub max_admin_connections: Option<usize>,
    /// Admin connections from one address (an IPv6 /64). Default: 64, at most a
    /// quarter of the total.
    #[arg(long)]
    pub max_admin_connections_per_addr: Option<usize>,
    /// An admin connection must finish its TLS handshake, and send each request head,
    /// within this; also how long a kept-alive admin connection may sit idle.
    #[arg(long, default_value_t = 10_000)]
    pub admin_header_timeout_ms: u64,
    /// An admin request body must arrive within this, plus one second per 16 KiB
    /// received (so large uploads at a modest rate go through and a drip does not).
    #[arg(long, default_value_t = 30_000)]
    pub admin_body_timeout_ms: u64,
    /// Do not create the demo account and SIM on first start (SQLite).
    #[arg(long, conflicts_with = "demo")]
    pub no_demo: bool,
    /// Create the demo account and SIM on a shared database too. Its key is public:
    /// never on a production database.
    #[arg(long)]
    pub demo: bool,
}

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("psk-edge")
}

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

/// The listeners' caps: raises the open-file limit as far as allowed and shares it
/// out, keeping a reserve no port can take.
fn connection_limits(args: &UpArgs) -> Limits {
    let nofile = guard::raise_nofile_limit();
    let budget = Budget::split(
        nofile,
        args.max_sim_connections,
        args.max_admin_connections,
        None,
    );
    if !budget.fits() {
        tracing::warn!(
            nofile,
            sim = budget.sim_connections,
            admin = budget.admin_connections,
            "the connection caps given exceed the open-file limit: a flood may exhaust descriptors"
        );
    }
    tracing::debug!(?budget, "connection caps");
    let sim_handshakes = args.max_sim_handshakes.min(budget.sim_connections);
    Limits::new(
        Gate::new("sim connections", budget.sim_connections, usize::MAX),
        Gate::new(
            "sim handshakes",
            sim_handshakes,
            args.max_sim_handshakes_per_addr
                .unwrap_or_else(|| per_address(256, sim_handshakes)),
        ),
        Gate::new(
            "admin connections",
            budget.admin_connections,
            args.max_admin_connections_per_addr
                .unwrap_or_else(|| per_address(64, budget.admin_connections)),
        ),
        // Brokers ask from a few addresses, usually one loopback address.
        Gate::new("broker connections", budget.broker_connections, usize::MAX),
        Duration::from_millis(args.admin_header_timeout_ms),
        Duration::from_millis(args.admin_body_timeout_ms),
    )
}

/// The default per-address cap: `usual`, but never more than a quarter of the port's
/// slots, however low the descriptor limit made them, so the operator and a valid SIM
/// still get in while one stranger holds all it may.
fn per_address(usual: usize, total: usize) -> usize {
    usual.min((total / 4).max(1))
}

/// Other nodes' PSK and tenant-function changes reach this node's cache and runtime.
fn follow_other_nodes(node: &Arc<Node>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let changes = node.platform.changes.clone();
    tasks.spawn(follow::listen(
        node.platform.store.clone(),
        changes.clone(),
        shutdown.clone(),
    ));
    let (psk_node, psk_changes, psk_shutdown) = (node.clone(), changes.clone(), shutdown.clone());
    tasks.spawn(async move {
        follow::apply("PSK", &psk_changes.psk, psk_shutdown, || {
            let node = &psk_node;
            async move { node.platform.sync_psks().await.map(drop) }
        })
        .await;
    });
    let (fn_node, shutdown) = (node.clone(), shutdown.clone());
    tasks.spawn(async move {
        follow::apply("tenant function", &changes.functions, shutdown, || {
            let node = &fn_node;
            async move { crate::tenant_api::sync_tenants(node, None).await.map(drop) }
        })
        .await;
    });
}

/// wasmtime has its own error type; keep its whole chain in the message.
fn wasm_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

struct BrokerSetup {
    client: Option<Arc<BrokerClient>>,
    managed: Option<ManagedMosquitto>,
    /// For the banner.
    description: String,
    /// host:port, or `none`.
    address: String,
}

/// The port brokers ask on: the one given, else the usual one, else any free one
/// (several nodes on one machine need not configure it).
async fn bind_broker_endpoint(given: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
    if let Some(addr) = given {
        return TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the broker endpoint {addr}"));
    }
    let usual = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, DEFAULT_BROKER_PORT));
    match TcpListener::bind(usual).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
            tracing::info!(
                "{usual} is taken; brokers ask this node on {}",
                listener.local_addr()?
            );
            Ok(listener)
        }
        Err(e) => Err(e).with_context(|| format!("binding the broker endpoint {usual}")),
    }
}

pub const DEFAULT_BROKER_PORT: u16 = 11112;

/// The broker named by `--mqtt-url`, else a managed Mosquitto when installed, else
/// none. Never fails `up`: without a broker the node serves, and says once that no
/// broker hears from it.
async fn start_broker(
    args: &UpArgs,
    data_dir: &Path,
    authority: &Authority,
    endpoint: SocketAddr,
) -> BrokerSetup {
    let none = |why: &str| {
        tracing::warn!(
            "{why}: device credentials are issued, but this node publishes no data and tells no broker of revocations"
        );
        BrokerSetup {
            client: None,
            managed: None,
            description: format!("none ({why})"),
            address: "none".into(),
        }
    };
    let connect = |url: &BrokerUrl| {
        let (username, password) = match &url.credentials {
            Some((user, password)) => (user.clone(), password.clone()),
            None => (PLATFORM_USER.to_owned(), authority.platform_password()),
        };
        Arc::new(BrokerClient::connect(url, &username, password))
    };
    if args.no_mqtt {
        return none("--no-mqtt");
    }
    if let Some(url) = &args.mqtt_url {
        return BrokerSetup {
            client: Some(connect(url)),
            managed: None,
            description: url.to_string(),
            address: format!("{}:{}", url.host, url.port),
        };
    }
    if args.database_url.is_some() {
        return none("nodes of a shared database name their broker with --mqtt-url");
    }
    if !ManagedMosquitto::available() {
        return none("no mosquitto installed and no --mqtt-url given");
    }
    let Some(plugin) = args
        .mqtt_plugin
        .clone()
        .or_else(ManagedMosquitto::plugin_beside_executable)
    else {
        return none(
            "the broker plugin libpsk_edge_mosquitto.so is not beside this executable \
             (build it with `cargo build -p psk-edge-mosquitto`, or give --mqtt-plugin)",
        );
    };
    let node_url = format!("http://{endpoint}");
    let broker_key = authority.broker_key();
    let setup = PluginSetup {
        plugin: &plugin,
        node_url: &node_url,
        broker_key: &broker_key,
    };
    match tokio::time::timeout(
        Duration::from_secs(5),
        ManagedMosquitto::start(&data_dir.join("mosquitto"), &setup),
    )
    .await
    {
        Ok(Ok(managed)) => BrokerSetup {
            client: Some(connect(&managed.url())),
            description: format!(
                "managed Mosquitto on 127.0.0.1:{} ({}, plugin {})",
                managed.port(),
                managed.dir().display(),
                plugin.display()
            ),
            address: format!("127.0.0.1:{}", managed.port()),
            managed: Some(managed),
        },
        Ok(Err(e)) => none(&format!("the managed Mosquitto did not start: {e:#}")),
        Err(_) => none("the managed Mosquitto did not start within 5 s"),
    }
}

/// SIGTERM or SIGINT, caught from the moment this returns: called before the node says
/// it is ready, so a stop sent right after that line still stops it gracefully.
fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    Ok(())
}

/// A stored check value makes a wrong master key fail here, not as garbage later.
async fn check_master_key(store: &Store, sealer: &Sealer, source: &str) -> anyhow::Result<()> {
    const CONTEXT: &[u8] = b"master-key-check";
    let fresh = hex::encode(sealer.seal(CONTEXT, b"psk-edge")?);
    if store.set_meta_once("master_key_check", &fresh).await? {
        return Ok(());
    }
    let stored = store.meta("master_key_check").await?.unwrap_or_default();
    let opens = hex::decode(&stored)
        .ok()
        .is_some_and(|sealed| sealer.open(CONTEXT, &sealed).is_ok());
    if !opens {
        bail!(
            "the master key from {source} is not the key this database was created with; \
             start with the original key (PSK_EDGE_MASTER_KEY or --master-key-file)"
        );
    }
    Ok(())
}

async fn seed_demo(platform: &Platform) -> anyhow::Result<bool> {
    if !platform.store.set_meta_once("demo_seeded", "1").await? {
        return Ok(false);
    }
    platform
        .apply_psk_changes(vec![PskChange::Upsert {
            iccid: DEMO_ICCID.into(),
            account_id: DEMO_ACCOUNT.into(),
            psk: Zeroizing::new(demo_psk()),
        }])
        .await?;
    Ok(true)
}

fn admin_certificate(
    args: &UpArgs,
    data_dir: &Path,
) -> anyhow::Result<(Vec<u8>, Zeroizing<Vec<u8>>, PathBuf)> {
    if let (Some(cert), Some(key)) = (&args.admin_cert, &args.admin_key) {
        let cert_pem =
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key_pem = Zeroizing::new(
            std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        );
        return Ok((cert_pem, key_pem, cert.clone()));
    }
    let cert_path = data_dir.join("admin-cert.pem");
    let key_path = data_dir.join("admin-key.pem");
    if !cert_path.exists() {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)?;
        secrets::write_private(&key_path, &certified.signing_key.serialize_pem())?;
        std::fs::write(&cert_path, certified.cert.pem())?;
    }
    let cert_pem = std::fs::read(&cert_path)?;
    let key_pem = Zeroizing::new(
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?,
    );
    Ok((cert_pem, key_pem, cert_path))
}

fn load_routes(manifest: Option<&Path>) -> anyhow::Result<(RouteTable, String)> {
    match manifest {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            Ok((RouteTable::parse(&text, base)?, path.display().to_string()))
        }
        None => Ok((
            RouteTable::parse(components::DEFAULT_MANIFEST, Path::new("."))?,
            "built-in".into(),
        )),
    }
}

/// A source file wins; a missing one that names a platform component is served from the binary.
fn component_bytes(id: &str, path: &Path) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    if path.is_file() {
        return Ok(std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into());
    }
    path.file_name()
        .and_then(|name| components::by_file_name(&name.to_string_lossy()))
        .map(|embedded| embedded.bytes.into())
        .with_context(|| {
            format!(
                "component {id}: {} does not exist and is not built in",
                path.display()
            )
        })
}

struct Banner<'a> {
    data_dir: &'a Path,
    sim_addr: SocketAddr,
    admin_addr: SocketAddr,
    operator_key: &'a str,
    operator_file: Option<&'a Path>,
    cert_path: &'a Path,
    demo: bool,
    broker: &'a str,
    broker_endpoint: SocketAddr,
}

fn print_banner(b: &Banner) {
    // A node listening on every address is still reached on loopback from this machine.
    let sim_host = if b.sim_addr.ip().is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        b.sim_addr.ip()
    };
    let sim_port = b.sim_addr.port();
    let secret_hint = match b.operator_file {
        Some(path) => format!("the text after ':' in {} (mode 0600)", path.display()),
        None => "from PSK_EDGE_OPERATOR_SECRET".into(),
    };
    println!("psk-edge");
    println!("  data directory  {}", b.data_dir.display());
    println!("  SIM port        {} (TLS 1.3 PSK-only)", b.sim_addr);
    println!(
        "  admin port      https://{} (certificate {})",
        b.admin_addr,
        b.cert_path.display()
    );
    println!("  operator key    {}", b.operator_key);
    println!("  operator secret {secret_hint}");
    println!("  MQTT broker     {}", b.broker);
    println!(
        "  broker endpoint http://{} (brokers ask here; key in {})",
        b.broker_endpoint,
        b.data_dir.join("broker.key").display()
    );
    if b.demo {
        let psk_hex = hex::encode(demo_psk());
        println!();
        println!(
            "Demo SIM {DEMO_ICCID} (account {DEMO_ACCOUNT}). Create a device and get its MQTT credentials:"
        );
        println!(
            "  printf 'POST /v1/dev/dev-1?iccid={DEMO_ICCID} HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' | \\\n    openssl s_client -quiet -connect {sim_host}:{sim_port} -tls1_3 -psk_identity {DEMO_ICCID} -psk {psk_hex} -ciphersuites TLS_AES_128_CCM_SHA256"
        );
    }
    println!();
}
