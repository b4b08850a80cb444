//! Test harness: starts real `psk-edge up` processes on free loopback ports and talks to them with real clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use psk_client::{self, ClientConfig, KeyExchange};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

pub const DEMO_ICCID: &str = "049305930495403";
pub const DEMO_PSK_HEX: &str = "404142434445464748494a4b4c4d4e4f";
pub const OPERATOR_KEY: &str = "test-operator";
pub const OPERATOR_SECRET: &str = "test-operator-secret-0123456789";
pub mod broker;
pub mod fixtures;
pub mod mqtt;
pub mod postgres;

pub const CCM: &str = "TLS_AES_128_CCM_SHA256";
pub const GCM: &str = "TLS_AES_128_GCM_SHA256";

/// A running `psk-edge up`; stopped with SIGTERM when dropped.
pub struct Node {
    child: Option<Child>,
    pub sim: String,
    pub admin: String,
    /// host:port of the broker, or `none`.
    pub mqtt: String,
    /// host:port where brokers ask this node.
    pub broker_endpoint: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL database's URL; None: DATA_DIR/psk-edge.db.
    pub database: Option<String>,
    pub output: Arc<Mutex<Vec<String>>>,
}

pub struct NodeBuilder {
    data_dir: PathBuf,
    args: Vec<String>,
    mqtt: Option<Vec<String>>,
    envs: Vec<(String, String)>,
    sqlite: bool,
    database_url: Option<String>,
    open_files: Option<u64>,
}

/// The master key test nodes of a shared database use unless a test gives its own.
pub const TEST_MASTER_KEY: &str =
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The database a data directory's node uses when the suite runs on PostgreSQL: one
/// per directory, so a restarted node finds its data again.
pub fn database_for(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    postgres::shared().create_database(&format!("node_{}", &hex::encode(digest)[..16]))
}

/// Every stored byte of the node's database, for checks that a secret is not in it.
pub fn database_bytes(node: &Node) -> Vec<u8> {
    match &node.database {
        None => std::fs::read(node.data_dir.join("psk-edge.db")).unwrap(),
        Some(url) => {
            let name = url.rsplit('/').next().unwrap();
            postgres::shared().dump(name)
        }
    }
}

/// Compiled components are shared by all test nodes so each start does not recompile.
fn compile_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-components")
}

impl NodeBuilder {
    pub fn new(data_dir: &Path) -> Self {
        NodeBuilder {
            data_dir: data_dir.to_path_buf(),
            args: Vec::new(),
            mqtt: None,
            envs: vec![
                ("PSK_EDGE_OPERATOR_KEY".into(), OPERATOR_KEY.into()),
                ("PSK_EDGE_OPERATOR_SECRET".into(), OPERATOR_SECRET.into()),
            ],
            sqlite: !postgres::postgres_mode(),
            database_url: None,
            open_files: None,
        }
    }

    /// This node shares the PostgreSQL database at `url` (with other nodes).
    pub fn shared_database(mut self, url: &str) -> Self {
        self.sqlite = false;
        self.database_url = Some(url.to_owned());
        self
    }

    /// This node keeps its own SQLite file whichever backend the suite runs on (for
    /// what only a single node does: a managed broker, generated keys).
    pub fn sqlite(mut self) -> Self {
        self.sqlite = true;
        self
    }

    /// The shared database this node will use, if any.
    pub fn database(&self) -> Option<String> {
        if self.sqlite {
            return None;
        }
        Some(
            self.database_url
                .clone()
                .unwrap_or_else(|| database_for(&self.data_dir)),
        )
    }

    /// Nodes run without a broker unless a test asks for one.
    pub fn mqtt(mut self, args: &[&str]) -> Self {
        self.mqtt = Some(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// The node runs with this open-file limit, soft and hard (it cannot raise it).
    pub fn open_files(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// No operator pair in the node's environment: the node generates
    /// DATA_DIR/operator.secret on first start and reads it on the next, and the
    /// project's `AdminClient` finds it there.
    pub fn operator_from_file(mut self) -> Self {
        self.envs
            .retain(|(k, _)| !k.starts_with("PSK_EDGE_OPERATOR_"));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn command(&self) -> Command {
        let node = env!("CARGO_BIN_EXE_psk-edge");
        let mut cmd = match self.open_files {
            // util-linux's prlimit sets the limit and execs the node: same process.
            Some(limit) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(node);
                cmd
            }
            None => Command::new(node),
        };
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--sim-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(
                (!self.args.iter().any(|a| a == "--broker-listen"))
                    .then_some(["--broker-listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--cache-dir")
            .arg(compile_cache())
            .args(&self.args)
            .args(
                self.mqtt
                    .clone()
                    .unwrap_or_else(|| vec!["--no-mqtt".into()]),
            )
            .args(self.database_args())
            .env("RUST_LOG", "info")
            .env_remove("PSK_EDGE_MASTER_KEY")
            .env_remove("PSK_EDGE_MQTT_URL")
            .env_remove("PSK_EDGE_OPERATOR_KEY")
            .env_remove("PSK_EDGE_OPERATOR_SECRET")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !self.sqlite
            && !self.envs.iter().any(|(k, _)| k == "PSK_EDGE_MASTER_KEY")
            && !self.args.iter().any(|a| a == "--master-key-file")
        {
            cmd.env("PSK_EDGE_MASTER_KEY", TEST_MASTER_KEY);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// On PostgreSQL: the node's database, and the demo SIM the tests use (a shared
    /// database gets it only on request).
    fn database_args(&self) -> Vec<String> {
        let Some(url) = self.database() else {
            return Vec::new();
        };
        let mut args = vec!["--database-url".to_owned(), url];
        // Nodes a test puts on a shared database say themselves what they want.
        if self.database_url.is_none() && !self.args.iter().any(|a| a == "--no-demo") {
            args.push("--demo".into());
        }
        args
    }

    pub async fn start(self) -> Node {
        // The first node of a test binary may have to compile every component; the
        // others wait for it and then load the compiled copies instead of all
        // compiling at once on a small machine.
        static FIRST: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        static WARMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let warming = if FIRST.initialized() {
            None
        } else {
            Some(WARMING.lock().await)
        };
        let node = self.spawn().await;
        let _ = FIRST.set(());
        drop(warming);
        node
    }

    /// Starts without waiting for other first starts (for starts that must overlap).
    pub async fn start_now(self) -> Node {
        self.spawn().await
    }

    async fn spawn(self) -> Node {
        let database = self.database();
        let mut child = self.command().spawn().expect("spawn psk-edge");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let ready_tx = ready_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(" ready sim=") {
                        let _ = ready_tx.send(line.clone());
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let ready = tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "node not ready in time:\n{}",
                    output.lock().unwrap().join("\n")
                )
            })
            .unwrap_or_else(|| panic!("node exited:\n{}", output.lock().unwrap().join("\n")));
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {ready}"))
                .to_owned()
        };
        Node {
            sim: field("sim="),
            admin: field("admin="),
            mqtt: field("mqtt="),
            broker_endpoint: field("broker_endpoint="),
            child: Some(child),
            data_dir: self.data_dir,
            database,
            output,
        }
    }
}

/// A node on a fresh data directory with extra `up` arguments.
pub async fn start_with(dir: &Path, args: &[&str]) -> Node {
    args.iter()
        .fold(NodeBuilder::new(dir), |b, a| b.arg(a))
        .start()
        .await
}

/// The demo SIM talking through `openssl s_client`.
pub async fn demo(node: &Node, suite: &str, input: &str) -> ClientRun {
    openssl(node.sim_port(), DEMO_ICCID, DEMO_PSK_HEX, suite, &[], input).await
}

impl Node {
    pub fn sim_port(&self) -> u16 {
        self.sim.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits until the log has a line matching `pred`.
    pub async fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            if let Some(line) = self.output.lock().unwrap().iter().find(|l| pred(l)) {
                return line.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no such log line in:\n{}", self.log());
    }

    /// SIGTERM, and how long the node took to exit.
    #[allow(unsafe_code)] // a signal to the node process
    pub async fn stop(mut self) -> (Duration, std::process::ExitStatus) {
        let mut child = self.child.take().unwrap();
        let started = std::time::Instant::now();
        let pid = child.id().unwrap() as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("node did not stop within 10 s")
            .unwrap();
        (started.elapsed(), status)
    }

    /// SIGKILL: no shutdown path runs, as when the machine's OOM killer or an operator's
    /// `kill -9` ends the process. Returns once the process is gone.
    #[allow(unsafe_code)] // a signal to the node process
    pub async fn kill(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id().unwrap() as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("node did not die within 10 s of SIGKILL")
            .unwrap()
    }

    /// `curl` against the admin port, trusting the node's own certificate.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.admin_as(method, path, body, Some((OPERATOR_KEY, OPERATOR_SECRET)))
            .await
    }

    pub async fn admin_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<(&str, &str)>,
    ) -> (u16, String) {
        self.admin_raw(method, path, body.map(str::as_bytes), auth)
            .await
    }

    /// Any bytes as the body (component uploads).
    pub async fn admin_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        auth: Option<(&str, &str)>,
    ) -> (u16, String) {
        let port = self.admin.rsplit(':').next().unwrap();
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "60",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(self.data_dir.join("admin-cert.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}{path}"));
        if let Some((k, s)) = auth {
            cmd.args(["-u", &format!("{k}:{s}")]);
        }
        if body.is_some() {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.unwrap_or_default()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    pub async fn add_psk(&self, identity: &str, psk: &[u8], account: &str) -> String {
        let body =
            serde_json::json!({"identity": identity, "psk": psk, "accountId": account}).to_string();
        self.admin("POST", "/v3/sys/security/psk", Some(&body))
            .await
            .1
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- node output ---\n{}", self.log());
        }
    }
}

/// What a TLS client run printed and how it ended.
pub struct ClientRun {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

/// One `openssl s_client` connection sending `input`, then waiting for the server to close.
pub async fn openssl(
    port: u16,
    identity: &str,
    psk_hex: &str,
    suite: &str,
    extra: &[&str],
    input: &str,
) -> ClientRun {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-quiet",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ])
    .args([
        "-psk_identity",
        identity,
        "-psk",
        psk_hex,
        "-ciphersuites",
        suite,
    ])
    .args(extra);
    if !extra.contains(&"-tls1_2") {
        cmd.arg("-tls1_3");
    }
    run_client(cmd, input).await
}

/// GnuTLS as the pure psk_ke client a SIM applet is: it sends close_notify right after its input.
pub async fn gnutls(port: u16, identity: &str, psk_hex: &str, input: &str) -> ClientRun {
    let mut cmd = Command::new("gnutls-cli");
    cmd.args([
        "--priority",
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+PSK:-ECDHE-PSK:-DHE-PSK",
    ])
    .args([
        "--pskusername",
        identity,
        "--pskkey",
        psk_hex,
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]);
    run_client(cmd, input).await
}

async fn run_client(mut cmd: Command, input: &str) -> ClientRun {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn TLS client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("TLS client hung")
        .unwrap();
    ClientRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        success: out.status.success(),
    }
}

pub fn post(device: &str, iccid: &str) -> String {
    format!("POST /v1/dev/{device}?iccid={iccid} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
}

pub fn get(device: &str, iccid: &str) -> String {
    format!("GET /v1/dev/{device}?iccid={iccid} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
}

/// Marks the last request so the server closes after answering (s_client waits for that).
pub fn closing(request: &str) -> String {
    request.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
}

/// The JSON bodies of the HTTP responses in `text`, with their status codes.
pub fn responses(text: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("HTTP/1.1 ") {
        rest = &rest[start..];
        let code: u16 = rest[9..12].parse().unwrap();
        let len: usize = rest
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let body_start = rest.find("\r\n\r\n").unwrap() + 4;
        out.push((code, rest[body_start..body_start + len].to_owned()));
        rest = &rest[body_start + len..];
    }
    out
}

#[derive(Debug, serde::Deserialize, PartialEq, Eq, Clone)]
pub struct Creds {
    pub cli: String,
    pub usr: String,
    pub pwd: String,
}

pub fn creds(body: &str) -> Creds {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not credentials: {body}: {e}"))
}

/// A SIM over the Rust-side TLS client (it can send any identity bytes).
pub async fn wolf(
    node: &Node,
    identity: &[u8],
    key: &[u8],
    kex: KeyExchange,
) -> Result<psk_client::TlsStream, psk_client::TlsError> {
    let tcp = tokio::net::TcpStream::connect(&node.sim).await.unwrap();
    psk_client::connect(
        tcp,
        &ClientConfig {
            identity: identity.to_vec(),
            key: Zeroizing::new(key.to_vec()),
            cipher_list: "TLS13-AES128-CCM-SHA256".into(),
            key_exchange: kex,
        },
    )
    .await
}

pub async fn exchange(stream: &mut psk_client::TlsStream, request: &str) -> Vec<(u16, String)> {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                break;
            }
        }
    }
    responses(&String::from_utf8_lossy(&got))
}

/// The demo SIM over the wolfSSL-side test client.
pub async fn demo_wolf(node: &Node) -> psk_client::TlsStream {
    let psk = hex::decode(DEMO_PSK_HEX).unwrap();
    wolf(node, DEMO_ICCID.as_bytes(), &psk, KeyExchange::Both)
        .await
        .unwrap()
}

/// A TLS 1.3 client trusting only the node's own admin certificate.
pub fn admin_connector(node: &Node) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(node.data_dir.join("admin-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A raw TLS 1.3 connection to the admin port, trusting the node's own certificate:
/// for bytes curl would not send (ambiguous lengths, forged headers).
pub async fn admin_tls(node: &Node) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(&node.admin).await.unwrap();
    admin_connector(node)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// The TLS alert a client run reports (OpenSSL's line without its thread id prefix).
pub fn alert_line(run: &ClientRun) -> String {
    run.stderr
        .lines()
        .find(|l| l.contains("alert"))
        .map(|l| {
            l.split(':')
                .filter(|p| p.contains("alert"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_else(|| panic!("no alert in {}", run.stderr))
}

/// What the admin port answered to `request` on a fresh connection, and whether it
/// closed the connection within `wait` afterwards.
pub async fn admin_raw_exchange(node: &Node, request: &[u8], wait: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut tls = admin_tls(node).await;
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// The Basic credentials header value of the operator pair.
pub fn operator_basic() -> String {
    use base64::Engine as _;
    let pair = format!("{OPERATOR_KEY}:{OPERATOR_SECRET}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}
