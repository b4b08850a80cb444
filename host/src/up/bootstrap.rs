//! The steps of a node's start that `run` sequences: the store's directory and key, the demo seed, the admin certificate, the routes and components, the connection caps, the managed broker, following other nodes, the stop signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::routes::RouteTable;
use zeroize::Zeroizing;

use crate::broker::authority::Authority;
use crate::broker::managed::PluginSetup;
use crate::broker::{BrokerClient, BrokerUrl, ManagedMosquitto, PLATFORM_USER};
use crate::capabilities::{Platform, PskChange};
use crate::components;
use crate::guard::{self, Budget, Gate, Limits};
use crate::node::Node;
use crate::secrets::{self, Sealer};
use crate::store::Store;
use crate::store::follow;

use super::args::{DEMO_ACCOUNT, DEMO_ICCID, UpArgs, demo_psk};

/// The listeners' caps: raises the open-file limit as far as allowed and shares it
/// out, keeping a reserve no port can take.
pub(super) fn connection_limits(args: &UpArgs) -> Limits {
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
pub(super) fn follow_other_nodes(
    node: &Arc<Node>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
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
pub(super) fn wasm_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

pub(super) struct BrokerSetup {
    pub(super) client: Option<Arc<BrokerClient>>,
    pub(super) managed: Option<ManagedMosquitto>,
    /// For the banner.
    pub(super) description: String,
    /// host:port, or `none`.
    pub(super) address: String,
}

/// The port brokers ask on: the one given, else the usual one, else any free one
/// (several nodes on one machine need not configure it).
pub(super) async fn bind_broker_endpoint(given: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
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

/// The loopback port of the broker endpoint when `--broker-listen` is not given and
/// it is free.
pub const DEFAULT_BROKER_PORT: u16 = 11112;

/// The broker named by `--mqtt-url`, else a managed Mosquitto when installed, else
/// none. Never fails `up`: without a broker the node serves, and says once that no
/// broker hears from it.
pub(super) async fn start_broker(
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
pub(super) fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
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

pub(super) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
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
pub(super) async fn check_master_key(
    store: &Store,
    sealer: &Sealer,
    source: &str,
) -> anyhow::Result<()> {
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

pub(super) async fn seed_demo(platform: &Platform) -> anyhow::Result<bool> {
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

pub(super) fn admin_certificate(
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

pub(super) fn load_routes(manifest: Option<&Path>) -> anyhow::Result<(RouteTable, String)> {
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
pub(super) fn component_bytes(
    id: &str,
    path: &Path,
) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
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
