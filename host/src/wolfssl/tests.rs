//! End-to-end tests on 127.0.0.1: the wolfSSL server against `openssl s_client` and
//! `gnutls-cli`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::*;

const ICCID: &[u8] = b"049305930495403";
const KEY: &[u8] = b"@ABCDEFGHIJKLMNO"; // 404142434445464748494a4b4c4d4e4f
const KEY_HEX: &str = "404142434445464748494a4b4c4d4e4f";
const CCM: &str = "TLS13-AES128-CCM-SHA256";
const GCM: &str = "TLS13-AES128-GCM-SHA256";
const REQUEST: &[u8] = b"GET /v1/dev/d1?iccid=049305930495403 HTTP/1.1\r\nHost: x\r\n\r\n";
const LIMIT: Duration = Duration::from_secs(10);

/// Keys by raw identity; unknown identities get a decoy derived from the identity.
#[derive(Default)]
struct Table {
    keys: HashMap<Vec<u8>, Vec<u8>>,
}

impl Table {
    fn with(entries: &[(&[u8], &[u8])]) -> Arc<Self> {
        Arc::new(Self {
            keys: entries
                .iter()
                .map(|(id, key)| (id.to_vec(), key.to_vec()))
                .collect(),
        })
    }
}

impl PskLookup for Table {
    fn key_for(&self, identity: &[u8]) -> Zeroizing<Vec<u8>> {
        let key = self.keys.get(identity).cloned().unwrap_or_else(|| {
            Sha256::new()
                .chain_update(b"decoy")
                .chain_update(identity)
                .finalize()[..16]
                .to_vec()
        });
        Zeroizing::new(key)
    }
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Seen {
    identity: Vec<u8>,
    cipher: String,
    request: Vec<u8>,
}

/// Serves until the test ends: reads one request (up to a blank line or EOF), answers
/// `200 OK` echoing its first line, sends close_notify. Reports every outcome.
async fn serve(
    cfg: ServerConfig,
    lookup: Arc<dyn PskLookup>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<Seen, String>>) {
    let server = Arc::new(Server::new(cfg, lookup).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (server, tx) = (Arc::clone(&server), tx.clone());
            tokio::spawn(async move {
                let outcome = match server.accept(tcp).await {
                    Ok(mut tls) => answer(&mut tls).await.map(|request| Seen {
                        identity: tls.identity().to_vec(),
                        cipher: tls.cipher_name().to_owned(),
                        request,
                    }),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(outcome);
            });
        }
    });
    (addr, rx)
}

async fn answer(tls: &mut TlsStream) -> Result<Vec<u8>, String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf).await.map_err(|e| e.to_string())? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let first_line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let body = [b"echo:".as_slice(), first_line].concat();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    tls.write_all(&response).await.map_err(|e| e.to_string())?;
    tls.shutdown().await;
    Ok(request)
}

fn server_config(key_exchange: KeyExchange) -> ServerConfig {
    ServerConfig {
        key_exchange,
        handshake_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Result<Seen, String>>) -> Result<Seen, String> {
    timeout(LIMIT, rx.recv())
        .await
        .expect("server outcome in time")
        .expect("server task alive")
}

#[tokio::test]
async fn garbage_is_refused_promptly_and_silence_times_out() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_millis(1500),
        ..ServerConfig::default()
    };
    let (addr, mut seen) = serve(cfg, Table::with(&[(ICCID, KEY)])).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer),
    )
    .await
    .unwrap()
    .ok();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "refused before the timeout"
    );
    assert!(next(&mut seen).await.is_err());

    let _silent = TcpStream::connect(addr).await.unwrap();
    let outcome = next(&mut seen).await.unwrap_err();
    assert_eq!(outcome, TlsError::Timeout.to_string());
}

#[test]
fn server_is_shareable_and_streams_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Server>();
    send::<TlsStream>();
}

#[test]
fn bad_configs_are_refused() {
    let lookup = Table::with(&[]);
    let bad_list = ServerConfig {
        cipher_list: "NOT-A-SUITE".into(),
        ..ServerConfig::default()
    };
    assert!(matches!(
        Server::new(bad_list, lookup),
        Err(TlsError::Config(_))
    ));
}

/// Runs a command-line TLS client with `input` on stdin (then closed), killing it after
/// `limit`. Returns its exit status (None if it was killed) and stdout.
async fn run_tool(cmd: &mut Command, input: &[u8], limit: Duration) -> (Option<bool>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tool starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = reader.join().unwrap();
    (status, String::from_utf8_lossy(&out).into_owned())
}

fn s_client(addr: SocketAddr, extra: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()])
        .args([
            "-psk_identity",
            "049305930495403",
            "-psk",
            KEY_HEX,
            "-quiet",
        ])
        .args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_interop() {
    let cases: [(KeyExchange, &[&str], &str); 4] = [
        (
            KeyExchange::Both,
            &["-ciphersuites", "TLS_AES_128_CCM_SHA256"],
            CCM,
        ),
        (
            KeyExchange::Both,
            &["-ciphersuites", "TLS_AES_128_GCM_SHA256"],
            GCM,
        ),
        (
            KeyExchange::Both,
            &[
                "-ciphersuites",
                "TLS_AES_128_CCM_SHA256",
                "-allow_no_dhe_kex",
            ],
            CCM,
        ),
        // Only psk_ke is acceptable here, so this really is OpenSSL without (EC)DHE.
        (
            KeyExchange::PskKe,
            &[
                "-ciphersuites",
                "TLS_AES_128_CCM_SHA256",
                "-allow_no_dhe_kex",
            ],
            CCM,
        ),
    ];
    for (mode, args, suite) in cases {
        let (addr, mut seen) = serve(server_config(mode), Table::with(&[(ICCID, KEY)])).await;
        let mut cmd = s_client(addr, &[&["-tls1_3"], args].concat());
        let (_, stdout) = run_tool(&mut cmd, REQUEST, LIMIT).await;
        assert!(stdout.contains("200 OK"), "{args:?}: {stdout:?}");
        assert!(stdout.contains("echo:GET /v1/dev/d1"), "{stdout:?}");
        let s = next(&mut seen).await.unwrap();
        assert_eq!((s.identity.as_slice(), s.cipher.as_str()), (ICCID, suite));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_tls12_is_refused_promptly() {
    let (addr, mut seen) = serve(
        server_config(KeyExchange::Both),
        Table::with(&[(ICCID, KEY)]),
    )
    .await;
    let started = Instant::now();
    let mut cmd = s_client(addr, &["-tls1_2"]);
    let (status, stdout) = run_tool(&mut cmd, REQUEST, LIMIT).await;
    assert_eq!(status, Some(false), "exits non-zero: {stdout:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(next(&mut seen).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnutls_cli_pure_psk_ke_with_close_notify_after_request() {
    if Command::new("gnutls-cli")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("gnutls-cli not installed: skipped");
        return;
    }
    let (addr, mut seen) = serve(
        server_config(KeyExchange::Both),
        Table::with(&[(ICCID, KEY)]),
    )
    .await;
    let mut cmd = Command::new("gnutls-cli");
    cmd.args([
        "--priority",
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+PSK:-ECDHE-PSK:-DHE-PSK",
        "--pskusername",
        "049305930495403",
        "--pskkey",
        KEY_HEX,
        "-p",
        &addr.port().to_string(),
        "127.0.0.1",
    ]);
    let (_, stdout) = run_tool(&mut cmd, REQUEST, LIMIT).await;
    assert!(stdout.contains("echo:GET /v1/dev/d1"), "{stdout:?}");
    let s = next(&mut seen).await.unwrap();
    assert_eq!(s.identity, ICCID);
    assert_eq!(s.request, REQUEST);
}
