//! Floods and slow peers on loopback: refused ClientHellos, a connection storm, idle connections and drips on each port, with the valid SIM answered within a second throughout.
//!
//! The hostile client connects from 127.0.0.2, the valid SIM from 127.0.0.1, so the
//! per-address caps tell them apart as they would tell a stranger from a carrier's
//! gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where the hostile client connects from.
const HOSTILE: &str = "127.0.0.2";
/// What "answered throughout" means for the valid SIM.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// The flood tests would skew each other's timings on a small machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Thousands of sockets need more than the usual 1,024 descriptors; the node inherits
/// the raised limit (and raises its own anyway).
fn raise_nofile() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= 10_000,
        "open-file limit {limit} too low for the flood tests"
    );
}

async fn hostile_connect(addr: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{HOSTILE}:0").parse().unwrap())?;
    socket.connect(addr.parse().unwrap()).await
}

fn rss_kib(node: &Node) -> u64 {
    let pid = node.pid().expect("node running");
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn metrics(node: &Node) -> serde_json::Value {
    let (status, body) = node.admin("GET", "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["connections"].clone()
}

/// The demo SIM asks once from 127.0.0.1; how long until it has its answer.
async fn probe(node: &Node) -> Duration {
    let started = Instant::now();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), demo_wolf(node))
        .await
        .expect("valid SIM's handshake within 5 s");
    let answers = exchange(&mut stream, &closing(&get("probe", DEMO_ICCID))).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    started.elapsed()
}

/// Runs `work` while the valid SIM asks every 100 ms; returns its output and the
/// slowest answer.
async fn probing<F: Future>(node: &Node, work: F) -> (F::Output, Duration) {
    let done = AtomicBool::new(false);
    let work = async {
        let out = work.await;
        done.store(true, Ordering::Relaxed);
        out
    };
    let probes = async {
        let mut slowest = Duration::ZERO;
        let mut count = 0;
        while !done.load(Ordering::Relaxed) || count < 3 {
            slowest = slowest.max(probe(node).await);
            count += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (slowest, count)
    };
    let (out, (slowest, count)) = tokio::join!(work, probes);
    println!("valid SIM: {count} probes, slowest {slowest:?}");
    (out, slowest)
}

/// Reads until the peer closes (or errors); what it sent and when it closed.
async fn until_closed(mut reader: impl AsyncRead + Unpin, since: Instant) -> (Duration, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read_all)
        .await
        .expect("peer never closed");
    (since.elapsed(), got)
}

/// Writes one byte of `bytes` every `every` until they run out or the write fails.
async fn drip(mut writer: impl AsyncWrite + Unpin, bytes: &[u8], every: Duration) {
    for b in bytes {
        if writer.write_all(&[*b]).await.is_err() || writer.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

async fn hostile_admin(
    node: &Node,
    tls: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = hostile_connect(&node.admin).await.unwrap();
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// The first `len` bytes of a ClientHello record that claims `body` bytes.
fn hello_start(body: u32, len: usize) -> Vec<u8> {
    let record = body + 4;
    let mut wire = vec![22, 3, 1];
    wire.extend_from_slice(&(record as u16).to_be_bytes());
    wire.push(1);
    wire.extend_from_slice(&body.to_be_bytes()[1..]);
    wire.resize(len, 0);
    wire
}

const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 40];

#[tokio::test]
async fn a_port_narrower_than_the_sim_says_handshake_failure_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path())
        .arg("--ciphers")
        .arg("TLS13-AES128-GCM-SHA256")
        .arg("--psk-kex")
        .arg("psk-dhe-ke")
        .env("RUST_LOG", "psk_edge=debug,info")
        .start()
        .await;
    let port = node.sim_port();
    let input = closing(&get("d", DEMO_ICCID));

    // A CCM-only SIM: no shared suite. Before, a bad binder ("decrypt error").
    let ccm = openssl(port, DEMO_ICCID, DEMO_PSK_HEX, CCM, &[], &input).await;
    assert!(!ccm.success);
    assert!(
        alert_line(&ccm).contains("handshake failure"),
        "{}",
        ccm.stderr
    );
    // Refused on what is offered, not on who asks: an unknown identity and a wrong
    // key are told exactly the same.
    let unknown = openssl(port, "999999999999999", DEMO_PSK_HEX, CCM, &[], &input).await;
    let wrong = openssl(
        port,
        DEMO_ICCID,
        "00112233445566778899aabbccddeeff",
        CCM,
        &[],
        &input,
    )
    .await;
    assert_eq!(alert_line(&unknown), alert_line(&wrong));
    assert!(alert_line(&wrong).contains("handshake failure"));

    // A psk_ke-only SIM on a psk_dhe_ke port: before, illegal_parameter and a
    // "psk key callback error" in the log.
    let psk_ke = wolf_with(&node, GCM_WOLF, KeyExchange::PskKe).await;
    assert!(
        matches!(
            psk_ke,
            Err(psk_client::TlsError::Handshake { code: 40, .. })
        ),
        "{psk_ke:?}"
    );
    let gnutls_run = gnutls(port, DEMO_ICCID, DEMO_PSK_HEX, &input).await;
    assert!(!gnutls_run.success);
    // gnutls-cli names the alert on stdout ("Received alert [40]: Handshake failed").
    let said = format!("{}\n{}", gnutls_run.stdout, gnutls_run.stderr);
    assert!(said.contains("[40]"), "{said}");

    // What the port serves still works.
    let gcm = openssl(port, DEMO_ICCID, DEMO_PSK_HEX, GCM, &[], &input).await;
    assert_eq!(responses(&gcm.stdout).len(), 1, "{}", gcm.stderr);

    node.wait_log(|l| l.contains("sim handshake refused") && l.contains("no_shared_suite"))
        .await;
    node.wait_log(|l| l.contains("sim handshake refused") && l.contains("kex_mode_not_allowed"))
        .await;
    let refused = &metrics(&node).await["sim_handshakes_refused"];
    assert_eq!(refused["no_shared_suite"], 3, "{refused}");
    assert_eq!(refused["kex_mode_not_allowed"], 2, "{refused}");
    assert!(!node.log().contains("binder does not verify"));
    assert!(!node.log().contains("psk key callback"));
}

#[tokio::test]
async fn a_psk_ke_port_refuses_a_dhe_only_client_with_handshake_failure() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(dir.path(), &["--psk-kex", "psk-ke"]).await;
    let input = closing(&get("d", DEMO_ICCID));
    // OpenSSL offers psk_dhe_ke alone unless told otherwise.
    let dhe = openssl(node.sim_port(), DEMO_ICCID, DEMO_PSK_HEX, CCM, &[], &input).await;
    assert!(!dhe.success);
    assert!(
        alert_line(&dhe).contains("handshake failure"),
        "{}",
        dhe.stderr
    );
    let both = openssl(
        node.sim_port(),
        DEMO_ICCID,
        DEMO_PSK_HEX,
        CCM,
        &["-allow_no_dhe_kex"],
        &input,
    )
    .await;
    assert_eq!(responses(&both.stdout).len(), 1, "{}", both.stderr);
    assert_eq!(
        metrics(&node).await["sim_handshakes_refused"]["kex_mode_not_allowed"],
        1
    );
}

const GCM_WOLF: &str = "TLS13-AES128-GCM-SHA256";

async fn wolf_with(
    node: &Node,
    suite: &str,
    kex: KeyExchange,
) -> Result<psk_client::TlsStream, psk_client::TlsError> {
    let tcp = TcpStream::connect(&node.sim).await.unwrap();
    psk_client::connect(
        tcp,
        &ClientConfig {
            identity: DEMO_ICCID.as_bytes().to_vec(),
            key: zeroize::Zeroizing::new(hex::decode(DEMO_PSK_HEX).unwrap()),
            cipher_list: suite.into(),
            key_exchange: kex,
        },
    )
    .await
}

#[tokio::test]
async fn an_oversized_client_hello_is_refused_from_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).start().await;
    // The nine bytes that claim a 16 MiB hello are enough to refuse it.
    let mut tcp = hostile_connect(&node.sim).await.unwrap();
    let mut claim = vec![22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff];
    tcp.write_all(&claim).await.unwrap();
    let (_, got) = until_closed(&mut tcp, Instant::now()).await;
    assert_eq!(got, HANDSHAKE_FAILURE_ALERT);
    // One that stays under the record limit but claims more than 4 KiB, and keeps sending.
    claim = hello_start(5000, 1000);
    let tcp = hostile_connect(&node.sim).await.unwrap();
    let (reader, writer) = tcp.into_split();
    let started = Instant::now();
    let sending = async {
        let mut writer = writer;
        let _ = writer.write_all(&claim).await;
        for _ in 0..64 {
            if writer.write_all(&[0u8; 1024]).await.is_err() {
                break;
            }
        }
    };
    let ((closed, _), ()) = tokio::join!(until_closed(reader, started), sending);
    assert!(closed < Duration::from_secs(2), "{closed:?}");
    assert_eq!(
        metrics(&node).await["sim_handshakes_refused"]["client_hello_too_large"],
        2
    );
    // A real SIM's hello is nowhere near the bound.
    assert!(probe(&node).await < ANSWER_WITHIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_2000_connections_leaves_the_sim_answered() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).start().await;
    let sim = node.sim.clone();
    // As a cell's SIMs after an outage: everyone connects at once, then says hello
    // (with keys this node does not know). Connects are timed apart from the
    // handshakes, whose client-side crypto would otherwise delay noticing them.
    let storm = async {
        let connects = (0..2000).map(|_| {
            let sim = sim.clone();
            async move {
                let started = Instant::now();
                let tcp = hostile_connect(&sim).await.expect("connect");
                (started.elapsed(), tcp)
            }
        });
        let connected = futures_util::future::join_all(connects).await;
        let hellos = connected
            .into_iter()
            .enumerate()
            .map(|(i, (connect, tcp))| async move {
                let config = ClientConfig {
                    identity: format!("8944{i:011}").into_bytes(),
                    key: zeroize::Zeroizing::new(vec![7; 16]),
                    cipher_list: "TLS13-AES128-CCM-SHA256".into(),
                    key_exchange: KeyExchange::PskKe,
                };
                let outcome = tokio::time::timeout(
                    Duration::from_secs(15),
                    psk_client::connect(tcp, &config),
                )
                .await;
                (connect, outcome.is_ok())
            });
        futures_util::future::join_all(hellos).await
    };
    let started = Instant::now();
    let (results, slowest) = probing(&node, storm).await;
    let connects: Vec<Duration> = results.iter().map(|(c, _)| *c).collect();
    let max_connect = connects.iter().max().copied().unwrap_or_default();
    let retransmits = connects
        .iter()
        .filter(|c| **c > Duration::from_millis(500))
        .count();
    println!(
        "storm: 2000 connections in {:?}, slowest connect {max_connect:?}, {retransmits} over 500 ms, {} ended within 15 s",
        started.elapsed(),
        results.iter().filter(|(_, ended)| *ended).count()
    );
    // A SYN retransmit (the accept queue overflowing) would cost a second.
    assert_eq!(retransmits, 0, "slowest connect {max_connect:?}");
    assert!(slowest < ANSWER_WITHIN, "valid SIM waited {slowest:?}");
    assert!(results.iter().all(|(_, ended)| *ended));
}

/// Opens `count` connections from the hostile address to `addr`, each sending `first`,
/// and keeps them open.
async fn hold(addr: &str, count: usize, first: &[u8]) -> Vec<TcpStream> {
    let opened = (0..count).map(|_| async move {
        let mut tcp = hostile_connect(addr).await.expect("connect");
        let _ = tcp.write_all(first).await;
        tcp
    });
    futures_util::future::join_all(opened).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_little_memory_each() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    // Caps out of the way: every hostile connection is held, so its cost shows.
    let node = start_with(
        dir.path(),
        &[
            "--max-sim-handshakes",
            "5000",
            "--max-sim-handshakes-per-addr",
            "5000",
            "--max-admin-connections",
            "5000",
            "--max-admin-connections-per-addr",
            "5000",
        ],
    )
    .await;
    probe(&node).await;
    let before = rss_kib(&node);
    // The most a pending SIM handshake can make the node buffer: 3 KiB of a hello
    // that claims the largest body allowed.
    let partial_hello = hello_start(4000, 3 << 10);
    let ((sim_held, admin_held), slowest) = probing(&node, async {
        let sim = hold(&node.sim, 2000, &partial_hello).await;
        let admin = hold(&node.admin, 2000, b"").await;
        // Let the node accept and read all of them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        (sim, admin)
    })
    .await;
    let after = rss_kib(&node);
    let held = metrics(&node).await;
    assert_eq!(held["sim_handshakes"]["held"], 2000, "{held}");
    // And the operator's own connection asking for these figures.
    assert_eq!(held["admin_connections"]["held"], 2001, "{held}");
    let per_connection = (after.saturating_sub(before)) * 1024 / 4000;
    println!(
        "idle: node RSS {before} KiB -> {after} KiB with 2000 pending SIM handshakes (3 KiB of hello each) \
         and 2000 idle admin connections: {per_connection} bytes per hostile connection"
    );
    assert!(
        per_connection < 48 << 10,
        "{per_connection} bytes per hostile connection"
    );
    assert!(slowest < ANSWER_WITHIN, "valid SIM waited {slowest:?}");
    let (status, body) = node.admin("GET", "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    drop((sim_held, admin_held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_floods_on_each_port_stop_at_the_caps() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).start().await;
    let ((sim_held, admin_held), slowest) = probing(&node, async {
        let sim = hold(&node.sim, 2000, b"").await;
        let admin = hold(&node.admin, 2000, b"").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        (sim, admin)
    })
    .await;
    let held = metrics(&node).await;
    println!("caps under 2000 idle connections on each port: {held}");
    // The defaults: 256 handshakes and 64 admin connections per address.
    assert_eq!(held["sim_handshakes"]["held"], 256, "{held}");
    assert_eq!(held["sim_handshakes"]["refused"], 2000 - 256, "{held}");
    // The 65th is the operator's, asking for these figures from 127.0.0.1.
    assert_eq!(held["admin_connections"]["held"], 65, "{held}");
    assert_eq!(held["admin_connections"]["refused"], 2000 - 64, "{held}");
    assert!(slowest < ANSWER_WITHIN, "valid SIM waited {slowest:?}");
    // The operator, on another address, is still served.
    let (status, body) = node.admin("GET", "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Refusals are summed up in the log, not one line each.
    let warnings = node
        .log()
        .lines()
        .filter(|l| l.contains("at a cap"))
        .count();
    assert!((1..=4).contains(&warnings), "{warnings} cap warnings");
    drop((sim_held, admin_held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drips_on_each_port_are_cut_off() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(
        dir.path(),
        &[
            "--handshake-timeout-ms",
            "1500",
            "--admin-header-timeout-ms",
            "1500",
            "--admin-body-timeout-ms",
            "1500",
        ],
    )
    .await;
    let tls = admin_connector(&node);
    let every = Duration::from_millis(300);
    let limit = Duration::from_millis(3500);
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{OPERATOR_KEY}:{OPERATOR_SECRET}"))
    };
    let drips = async {
        // A SIM handshake, a byte at a time.
        let sim_hello = async {
            let (reader, writer) = hostile_connect(&node.sim).await.unwrap().into_split();
            let started = Instant::now();
            let hello = hello_start(300, 300);
            tokio::select! {
                closed = until_closed(reader, started) => closed.0,
                () = drip(writer, &hello, every) => panic!("drip outlived the SIM handshake"),
            }
        };
        // The admin port's TLS handshake, a byte at a time.
        let admin_tls_drip = async {
            let (reader, writer) = hostile_connect(&node.admin).await.unwrap().into_split();
            let started = Instant::now();
            let hello = hello_start(300, 300);
            tokio::select! {
                closed = until_closed(reader, started) => closed.0,
                () = drip(writer, &hello, every) => panic!("drip outlived the admin handshake"),
            }
        };
        // A request head, a byte at a time.
        let head = async {
            let stream = hostile_admin(&node, &tls).await;
            let (reader, writer) = tokio::io::split(stream);
            let started = Instant::now();
            let head = format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: {}",
                "a".repeat(100)
            );
            tokio::select! {
                closed = until_closed(reader, started) => closed.0,
                () = drip(writer, head.as_bytes(), every) => panic!("drip outlived the head timeout"),
            }
        };
        // A body, a byte at a time, behind valid credentials.
        let body = async {
            let stream = hostile_admin(&node, &tls).await;
            let (reader, mut writer) = tokio::io::split(stream);
            let head = format!(
                "POST /v3/sys/security/psk HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
                 Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            );
            writer.write_all(head.as_bytes()).await.unwrap();
            let started = Instant::now();
            let (closed, got) = tokio::select! {
                closed = until_closed(reader, started) => closed,
                () = drip(writer, &[b' '; 200], every) => panic!("drip outlived the body deadline"),
            };
            let answer = String::from_utf8_lossy(&got).into_owned();
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            closed
        };
        // A kept-alive connection that asks once and then says nothing.
        let idle = async {
            let mut stream = hostile_admin(&node, &tls).await;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let started = Instant::now();
            let (closed, got) = until_closed(&mut stream, started).await;
            assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
            closed
        };
        tokio::join!(sim_hello, admin_tls_drip, head, body, idle)
    };
    let ((sim_hello, admin_handshake, head, body, idle), slowest) = probing(&node, drips).await;
    println!(
        "drips cut off after: SIM handshake {sim_hello:?}, admin handshake {admin_handshake:?}, \
         admin head {head:?}, admin body {body:?}, idle keep-alive {idle:?}"
    );
    for (what, after) in [
        ("SIM handshake", sim_hello),
        ("admin handshake", admin_handshake),
        ("admin head", head),
        ("admin body", body),
        ("admin idle", idle),
    ] {
        assert!(after < limit, "{what} drip held {after:?}");
        assert!(
            after >= Duration::from_millis(1000),
            "{what} cut at {after:?}"
        );
    }
    assert!(slowest < ANSWER_WITHIN, "valid SIM waited {slowest:?}");
}

/// Uploads with the wrong key are refused from their head: twenty 15 MB bodies at
/// once leave the node's memory where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_uploads_are_refused_before_their_bodies_are_read() {
    const UPLOADS: usize = 20;
    const BODY: usize = 15 << 20;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(dir.path(), &[]).await;
    let (code, _) = node
        .admin("POST", "/v3/accounts", Some(r#"{"accountId":"acme"}"#))
        .await;
    assert_eq!(code, 201);
    let before = rss_kib(&node);
    let tls = admin_connector(&node);
    let wrong = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("acme:not-the-key")
    };
    let chunk = vec![0u8; 64 << 10];
    let upload = |_| {
        let (tls, node, chunk, wrong) = (&tls, &node, &chunk, &wrong);
        async move {
            let mut stream = hostile_admin(node, tls).await;
            let head = format!(
                "PUT /v3/accounts/acme/functions/device-credentials HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Basic {wrong}\r\nContent-Length: {BODY}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // Push the body until the node stops taking it (it answered and closed).
            let mut sent = 0;
            while sent < BODY && stream.write_all(chunk).await.is_ok() {
                sent += chunk.len();
            }
            let (_, answer) = until_closed(stream, Instant::now()).await;
            (sent, String::from_utf8_lossy(&answer).into_owned())
        }
    };
    let results = futures_util::future::join_all((0..UPLOADS).map(upload)).await;
    let after = rss_kib(&node);
    for (sent, answer) in &results {
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "after {sent} bytes: {answer:?}"
        );
    }
    let sent: usize = results.iter().map(|(sent, _)| sent).sum();
    println!(
        "wrong-key uploads: node RSS {before} KiB -> {after} KiB with {UPLOADS} bodies of {BODY} bytes \
         offered, {sent} bytes written before the node closed"
    );
    assert!(
        after.saturating_sub(before) < 16 << 10,
        "RSS grew {before} -> {after} KiB"
    );
}

/// Under a 300-descriptor limit, 400 idle connections to each port from one address
/// take only that address's share: the valid SIM is answered, the operator's
/// `/healthz` too, and no accept ever fails for want of a descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_descriptor_limit_keeps_one_port_from_starving_the_other() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).open_files(300).start().await;
    let ((sim_held, admin_held), slowest) = probing(&node, async {
        let admin = hold(&node.admin, 400, b"").await;
        let sim = hold(&node.sim, 400, b"").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        (sim, admin)
    })
    .await;
    let held = metrics(&node).await;
    println!("caps under 400 idle connections on each port at 300 descriptors: {held}");
    assert!(slowest < ANSWER_WITHIN, "valid SIM waited {slowest:?}");
    let (status, body) = node.admin("GET", "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    for gate in ["sim_handshakes", "admin_connections"] {
        let refused = held[gate]["refused"].as_u64().unwrap();
        assert!(refused >= 300, "{gate}: {held}");
    }
    assert!(
        !node.log().contains("Too many open files"),
        "{}",
        node.log()
    );
    drop((sim_held, admin_held));
}
