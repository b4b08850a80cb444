//! `psk-edge up`'s command line: every option, its default and what it bounds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::broker::BrokerUrl;

/// The ICCID of the seed document's example SIM, which `--demo` creates.
pub const DEMO_ICCID: &str = "049305930495403";
/// The account `--demo` creates the example SIM in.
pub const DEMO_ACCOUNT: &str = "demo";
/// The PSK of the seed document's example SIM: bytes 64..=79 ("@ABCDEFGHIJKLMNO").
pub fn demo_psk() -> Vec<u8> {
    (64u8..80).collect()
}

/// `--psk-kex`: which PSK key exchange modes the SIM port accepts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KexArg {
    /// psk_ke (SIM applets) and psk_dhe_ke (OpenSSL clients)
    Both,
    /// pure PSK only
    PskKe,
    /// PSK with (EC)DHE only
    PskDheKe,
}

/// Everything `psk-edge up` is started with.
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

/// Where the node keeps its files unless told: `$XDG_DATA_HOME/psk-edge`, else
/// `~/.local/share/psk-edge`, else `./psk-edge`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("psk-edge")
}
