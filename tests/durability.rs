//! Durability: `kill -9` in the middle of a loop of admin PSK writes and SIM device
//! creations, then a restart on the same data: every acknowledged write is there and works.
//!
//! Runs on the suite's backend: SQLite, or PostgreSQL with `PSK_EDGE_TEST_BACKEND=postgres`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use psk_edge::admin_client::{AdminArgs, AdminClient};
use sha2::{Digest, Sha256};
use support::*;
use tokio::sync::watch;
use zeroize::Zeroizing;

/// The SIM that creates devices, registered before the loop starts.
const SIM_ICCID: &str = "8944990000000000001";
const SIM_KEY: &[u8; 16] = b"durability-sim-k";
const ACCOUNT: &str = "durable";

/// Concurrent operators writing PSKs, and concurrent SIM connections creating devices.
const ADMIN_WORKERS: usize = 3;
const SIM_WORKERS: usize = 3;
/// Bounds on the loop: requests per worker, and how long it runs before the kill.
const MAX_PER_WORKER: usize = 300;
const LOAD: Duration = Duration::from_millis(1500);
/// The kill comes earlier once both kinds of write have this many acknowledgements.
const ENOUGH: usize = 400;
/// Bound on any single request, so a hung node fails the test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Default, Debug)]
struct Progress {
    psk_acked: usize,
    dev_acked: usize,
    in_flight: usize,
}

struct Shared {
    stop: AtomicBool,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn begin(&self) {
        self.progress.send_modify(|p| p.in_flight += 1);
    }

    fn end(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(|p| {
            p.in_flight -= 1;
            f(p);
        });
    }
}

/// What one worker's requests came to.
struct Tally<T> {
    /// Answered with success: these must survive.
    acked: Vec<T>,
    /// Sent, or possibly sent, and never answered (the kill cut them off): their names.
    unanswered: Vec<String>,
    /// Never reached the node (connection refused after the kill).
    not_sent: usize,
    /// Answered with anything but success: the loop itself is wrong.
    refused: Vec<String>,
}

impl<T> Default for Tally<T> {
    fn default() -> Self {
        Tally {
            acked: Vec::new(),
            unanswered: Vec::new(),
            not_sent: 0,
            refused: Vec::new(),
        }
    }
}

impl<T> Tally<T> {
    fn merge(mut self, other: Tally<T>) -> Self {
        self.acked.extend(other.acked);
        self.unanswered.extend(other.unanswered);
        self.not_sent += other.not_sent;
        self.refused.extend(other.refused);
        self
    }
}

/// A PSK identity (ICCID digits) and its key.
type Psk = (String, [u8; 16]);

/// Each identity's key derives from it, so an unanswered write can be checked too.
fn psk_of(identity: String) -> Psk {
    let digest = Sha256::digest(identity.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    (identity, key)
}

fn psk_for(worker: usize, i: usize) -> Psk {
    psk_of(format!("8949{worker:02}{i:013}"))
}

fn admin_client(admin: &str, data_dir: &Path) -> anyhow::Result<AdminClient> {
    let port = admin.rsplit(':').next().context("admin address")?;
    AdminClient::new(&AdminArgs {
        admin_url: format!("https://127.0.0.1:{port}"),
        admin_ca: None,
        data_dir: data_dir.to_path_buf(),
    })
}

async fn write_psk(client: &AdminClient, (identity, key): &Psk) -> anyhow::Result<String> {
    let body = serde_json::json!({"identity": identity, "psk": key, "accountId": ACCOUNT});
    let (status, answer) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.request(
            "POST",
            "/v3/sys/security/psk",
            Bytes::from(body.to_string()),
        ),
    )
    .await
    .context("admin request timed out")??;
    Ok(format!(
        "{} {}",
        status.as_u16(),
        String::from_utf8_lossy(&answer).trim()
    ))
}

fn refused_connection(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    })
}

/// One operator: new identities, one per request, each on a fresh connection.
async fn psk_writer(client: Arc<AdminClient>, worker: usize, shared: Arc<Shared>) -> Tally<Psk> {
    let mut tally = Tally::default();
    for i in 0..MAX_PER_WORKER {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let psk = psk_for(worker, i);
        shared.begin();
        let answer = write_psk(&client, &psk).await;
        let acked = matches!(&answer, Ok(a) if a == "200 1");
        shared.end(|p| p.psk_acked += usize::from(acked));
        match answer {
            Ok(_) if acked => tally.acked.push(psk),
            Ok(other) => tally.refused.push(format!("{}: {other}", psk.0)),
            Err(e) if refused_connection(&e) => tally.not_sent += 1,
            Err(_) => tally.unanswered.push(psk.0),
        }
    }
    tally
}

/// A SIM's TLS 1.3 PSK connection through the project's own client (psk_ke, like an applet).
async fn sim_connect(addr: &str, identity: &str, key: &[u8]) -> io::Result<psk_client::TlsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let config = ClientConfig {
        identity: identity.as_bytes().to_vec(),
        key: Zeroizing::new(key.to_vec()),
        cipher_list: "TLS13-AES128-CCM-SHA256".into(),
        key_exchange: KeyExchange::PskKe,
    };
    tokio::time::timeout(REQUEST_TIMEOUT, psk_client::connect(tcp, &config))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
        .map_err(io::Error::other)
}

/// One request on `stream`, and its answer (status, body).
async fn ask(stream: &mut psk_client::TlsStream, request: &str) -> io::Result<(u16, String)> {
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
        if got.len() >= end + 4 + len {
            return responses(&text)
                .into_iter()
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no response"));
        }
    }
}

/// One SIM connection creating new devices, keep-alive, reconnecting if it must.
async fn device_creator(sim: String, worker: usize, shared: Arc<Shared>) -> Tally<(String, Creds)> {
    let mut tally = Tally::default();
    let mut conn: Option<psk_client::TlsStream> = None;
    for i in 0..MAX_PER_WORKER {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let device = format!("dur-{worker}-{i}");
        shared.begin();
        let stream = match conn.take() {
            Some(stream) => Ok(stream),
            None => sim_connect(&sim, SIM_ICCID, SIM_KEY).await,
        };
        let Ok(mut stream) = stream else {
            shared.end(|_| {});
            tally.not_sent += 1;
            continue;
        };
        let answer = ask(&mut stream, &post(&device, SIM_ICCID)).await;
        let acked = matches!(&answer, Ok((200, _)));
        shared.end(|p| p.dev_acked += usize::from(acked));
        match answer {
            Ok((200, body)) => {
                tally.acked.push((device, creds(&body)));
                conn = Some(stream);
            }
            Ok((code, body)) => tally.refused.push(format!("{device}: {code} {body}")),
            Err(_) => tally.unanswered.push(device),
        }
    }
    tally
}

/// Whether `identity` completes a handshake with `key` on `node`: a GET for a device
/// that does not exist answers 404 `unknown_device` only after the handshake worked.
async fn psk_works(node: &Node, (identity, key): &Psk) -> Result<(), String> {
    let mut stream = sim_connect(&node.sim, identity, key)
        .await
        .map_err(|e| format!("{identity}: handshake: {e}"))?;
    match ask(&mut stream, &closing(&get("none", identity))).await {
        Ok((404, body)) if body.contains("unknown_device") => Ok(()),
        Ok((code, body)) => Err(format!("{identity}: {code} {body}")),
        Err(e) => Err(format!("{identity}: {e}")),
    }
}

/// How many of `psks` complete a handshake, and what failed.
async fn check_psks(node: &Node, psks: &[Psk]) -> Vec<String> {
    futures_util::stream::iter(psks)
        .map(|psk| psk_works(node, psk))
        .buffer_unordered(4)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

/// Every device answers GET with the credentials it was given; what differs.
async fn check_devices(node: &Node, devices: &[(String, Creds)]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut conn: Option<psk_client::TlsStream> = None;
    for (device, given) in devices {
        let stream = match conn.take() {
            Some(stream) => Ok(stream),
            None => sim_connect(&node.sim, SIM_ICCID, SIM_KEY).await,
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                failures.push(format!("{device}: SIM handshake: {e}"));
                continue;
            }
        };
        match ask(&mut stream, &get(device, SIM_ICCID)).await {
            Ok((200, body)) => {
                let now = creds(&body);
                if now != *given {
                    failures.push(format!("{device}: credentials changed"));
                }
                conn = Some(stream);
            }
            Ok((code, body)) => failures.push(format!("{device}: {code} {body}")),
            Err(e) => failures.push(format!("{device}: {e}")),
        }
    }
    failures
}

#[tokio::test]
async fn kill_9_during_psk_writes_and_device_creations_loses_no_acknowledged_write() {
    let backend = if postgres::postgres_mode() {
        "postgres"
    } else {
        "sqlite"
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path())
        .operator_from_file()
        .start()
        .await;
    let client = Arc::new(admin_client(&node.admin, dir.path()).unwrap());
    let sim_psk = (SIM_ICCID.to_owned(), *SIM_KEY);
    assert_eq!(write_psk(&client, &sim_psk).await.unwrap(), "200 1");
    psk_works(&node, &sim_psk).await.unwrap();
    // One SIM creates every device here, far past the default devices-per-SIM quota.
    let (status, answer) = client
        .request(
            "PUT",
            &format!("/v3/accounts/{ACCOUNT}/limits"),
            Bytes::from(r#"{"devices_per_sim":1000000}"#),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "{answer:?}");

    let (progress, mut watcher) = watch::channel(Progress::default());
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        progress,
    });
    let psk_tasks: Vec<_> = (0..ADMIN_WORKERS)
        .map(|w| tokio::spawn(psk_writer(client.clone(), w, shared.clone())))
        .collect();
    let dev_tasks: Vec<_> = (0..SIM_WORKERS)
        .map(|w| tokio::spawn(device_creator(node.sim.clone(), w, shared.clone())))
        .collect();

    // Both loops are under way: each kind of write has been acknowledged at least once.
    let load_started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        watcher.wait_for(|p| p.psk_acked > 0 && p.dev_acked > 0),
    )
    .await
    .expect("no write acknowledged within 30 s")
    .unwrap();
    // Let the loop run (the load, not a synchronisation), then kill it mid-request.
    let _ = tokio::time::timeout(
        LOAD.saturating_sub(load_started.elapsed()),
        watcher.wait_for(|p| p.psk_acked >= ENOUGH && p.dev_acked >= ENOUGH),
    )
    .await;
    let at_kill = *tokio::time::timeout(
        Duration::from_secs(10),
        watcher.wait_for(|p| p.in_flight > 0),
    )
    .await
    .expect("nothing in flight")
    .unwrap();
    let status = node.kill().await;
    shared.stop.store(true, Ordering::SeqCst);
    let loop_ran = load_started.elapsed();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");

    let mut psks = Tally::default();
    for task in psk_tasks {
        psks = psks.merge(task.await.unwrap());
    }
    let mut devices = Tally::default();
    for task in dev_tasks {
        devices = devices.merge(task.await.unwrap());
    }
    assert!(
        psks.refused.is_empty(),
        "PSK writes refused: {:?}",
        psks.refused
    );
    assert!(
        devices.refused.is_empty(),
        "device creations refused: {:?}",
        devices.refused
    );

    // The same data directory, and on PostgreSQL the same database and master key.
    let node = NodeBuilder::new(dir.path())
        .operator_from_file()
        .start()
        .await;
    let lost_psks = check_psks(&node, &psks.acked).await;
    let lost_devices = check_devices(&node, &devices.acked).await;
    // Not a requirement either way: how many writes cut off before their answer were kept.
    let unanswered: Vec<Psk> = psks.unanswered.iter().cloned().map(psk_of).collect();
    let kept_unanswered = unanswered.len() - check_psks(&node, &unanswered).await.len();

    eprintln!(
        "durability on {backend}: load ran {loop_ran:?}, {} requests in flight at the kill; \
         PSK writes acknowledged {} (all checked), unanswered {} ({kept_unanswered} of them kept), \
         not sent (node gone) {}; devices acknowledged {} (all checked), unanswered {}, \
         not sent (node gone) {}; lost: {} PSKs, {} devices; whole test {:?}",
        at_kill.in_flight,
        psks.acked.len(),
        psks.unanswered.len(),
        psks.not_sent,
        devices.acked.len(),
        devices.unanswered.len(),
        devices.not_sent,
        lost_psks.len(),
        lost_devices.len(),
        started.elapsed(),
    );
    assert!(
        lost_psks.is_empty(),
        "acknowledged PSKs lost: {lost_psks:?}"
    );
    assert!(
        lost_devices.is_empty(),
        "acknowledged devices lost or changed: {lost_devices:?}"
    );
    assert!(!psks.acked.is_empty() && !devices.acked.is_empty());
}
