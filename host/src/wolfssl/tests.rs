//! End-to-end tests on 127.0.0.1: the wolfSSL server against the native client,
//! `openssl s_client` and `gnutls-cli`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zeroize::Zeroizing;

use super::*;
use psk_client::{ClientConfig, TlsError as ClientError, connect};

const ICCID: &[u8] = b"049305930495403";
const KEY: &[u8] = b"@ABCDEFGHIJKLMNO"; // 404142434445464748494a4b4c4d4e4f
const KEY_HEX: &str = "404142434445464748494a4b4c4d4e4f";
/// A SIM's nibble-swapped BCD ICCID; note the 0x00 bytes.
const BCD: &[u8] = &[0x98, 0x44, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0xf3];
const CCM: &str = "TLS13-AES128-CCM-SHA256";
const GCM: &str = "TLS13-AES128-GCM-SHA256";
const REQUEST: &[u8] = b"GET /v1/dev/d1?iccid=049305930495403 HTTP/1.1\r\nHost: x\r\n\r\n";
const LIMIT: Duration = Duration::from_secs(10);

/// Keys by raw identity; unknown identities get a decoy derived from the identity.
#[derive(Default)]
struct Table {
    keys: HashMap<Vec<u8>, Vec<u8>>,
    asked: Mutex<Vec<Vec<u8>>>,
}

impl Table {
    fn with(entries: &[(&[u8], &[u8])]) -> Arc<Self> {
        Arc::new(Self {
            keys: entries
                .iter()
                .map(|(id, key)| (id.to_vec(), key.to_vec()))
                .collect(),
            ..Self::default()
        })
    }

    fn asked(&self) -> Vec<Vec<u8>> {
        self.asked.lock().unwrap().clone()
    }
}

impl PskLookup for Table {
    fn key_for(&self, identity: &[u8]) -> Zeroizing<Vec<u8>> {
        self.asked.lock().unwrap().push(identity.to_vec());
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

fn client_config(identity: &[u8], key: &[u8], suite: &str, kx: KeyExchange) -> ClientConfig {
    ClientConfig {
        identity: identity.to_vec(),
        key: Zeroizing::new(key.to_vec()),
        cipher_list: suite.to_owned(),
        key_exchange: kx,
    }
}

/// Connects, sends `REQUEST`, reads the response until the server closes.
async fn exchange(addr: SocketAddr, cfg: &ClientConfig) -> Result<(String, Vec<u8>), ClientError> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connect(tcp, cfg).await?;
    tls.write_all(REQUEST).await?;
    let mut response = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tls.read(&mut buf).await? {
            0 => break,
            n => response.extend_from_slice(&buf[..n]),
        }
    }
    Ok((tls.cipher_name().to_owned(), response))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Result<Seen, String>>) -> Result<Seen, String> {
    timeout(LIMIT, rx.recv())
        .await
        .expect("server outcome in time")
        .expect("server task alive")
}

fn expected_response() -> Vec<u8> {
    let body = b"echo:GET /v1/dev/d1?iccid=049305930495403 HTTP/1.1";
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn both_suites_with_every_key_exchange_mode() {
    let modes = [KeyExchange::Both, KeyExchange::PskKe, KeyExchange::PskDheKe];
    // (server mode, client mode): equal modes, and a default server with either client.
    let pairs = modes.iter().map(|m| (*m, *m)).chain([
        (KeyExchange::Both, KeyExchange::PskKe),
        (KeyExchange::Both, KeyExchange::PskDheKe),
    ]);
    for (server_mode, client_mode) in pairs {
        let table = Table::with(&[(ICCID, KEY)]);
        let (addr, mut seen) = serve(server_config(server_mode), table).await;
        for suite in [CCM, GCM] {
            let cfg = client_config(ICCID, KEY, suite, client_mode);
            let (cipher, response) = timeout(LIMIT, exchange(addr, &cfg))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{server_mode:?}/{client_mode:?}/{suite}: {e}"));
            assert_eq!(cipher, suite);
            assert_eq!(response, expected_response());
            let s = next(&mut seen).await.unwrap();
            assert_eq!(s.identity, ICCID);
            assert_eq!(s.cipher, suite);
            assert_eq!(s.request, REQUEST);
        }
    }
}

#[tokio::test]
async fn forced_key_exchange_refuses_the_other_mode() {
    for (server_mode, client_mode) in [
        (KeyExchange::PskKe, KeyExchange::PskDheKe),
        (KeyExchange::PskDheKe, KeyExchange::PskKe),
    ] {
        let (addr, mut seen) =
            serve(server_config(server_mode), Table::with(&[(ICCID, KEY)])).await;
        let cfg = client_config(ICCID, KEY, CCM, client_mode);
        let result = timeout(LIMIT, exchange(addr, &cfg)).await.unwrap();
        assert!(
            result.is_err(),
            "{server_mode:?}/{client_mode:?}: {result:?}"
        );
        assert!(next(&mut seen).await.is_err());
    }
}

#[tokio::test]
async fn wrong_key_fails_on_both_sides() {
    let (addr, mut seen) = serve(
        server_config(KeyExchange::Both),
        Table::with(&[(ICCID, KEY)]),
    )
    .await;
    for kx in [KeyExchange::PskKe, KeyExchange::PskDheKe] {
        let cfg = client_config(ICCID, b"0123456789abcdef", CCM, kx);
        let result = timeout(LIMIT, exchange(addr, &cfg)).await.unwrap();
        assert!(
            matches!(result, Err(ClientError::Handshake { .. })),
            "{result:?}"
        );
        let server_side = next(&mut seen).await;
        assert!(server_side.is_err(), "{server_side:?}");
    }
}

#[tokio::test]
async fn unknown_identity_fails_like_a_wrong_key() {
    let table = Table::with(&[(ICCID, KEY)]);
    let (addr, mut seen) = serve(server_config(KeyExchange::Both), table.clone()).await;
    let unknown = client_config(b"999999999999999", KEY, CCM, KeyExchange::PskKe);
    let wrong = client_config(ICCID, b"0123456789abcdef", CCM, KeyExchange::PskKe);

    let unknown_result = timeout(LIMIT, exchange(addr, &unknown)).await.unwrap();
    let unknown_server = next(&mut seen).await.unwrap_err();
    let wrong_result = timeout(LIMIT, exchange(addr, &wrong)).await.unwrap();
    let wrong_server = next(&mut seen).await.unwrap_err();

    // Same alert to the client, same error on the server.
    assert_eq!(format!("{unknown_result:?}"), format!("{wrong_result:?}"));
    assert_eq!(unknown_server, wrong_server);
    assert!(table.asked().contains(&b"999999999999999".to_vec()));
}

#[tokio::test]
async fn bcd_identity_with_zero_bytes_reaches_the_lookup_intact() {
    // Same bytes up to the first 0x00, different after: only exact bytes can tell them apart.
    let twin: &[u8] = &[0x98, 0x44, 0x05, 0x00, 0x11, 0x00, 0x00, 0x00, 0x21, 0xf3];
    let table = Table::with(&[(twin, b"another key 1234"), (BCD, KEY)]);
    let (addr, mut seen) = serve(server_config(KeyExchange::Both), table.clone()).await;
    for kx in [KeyExchange::PskKe, KeyExchange::PskDheKe] {
        let cfg = client_config(BCD, KEY, CCM, kx);
        let (_, response) = timeout(LIMIT, exchange(addr, &cfg)).await.unwrap().unwrap();
        assert_eq!(response, expected_response());
        assert_eq!(next(&mut seen).await.unwrap().identity, BCD);
    }
    assert!(
        table.asked().iter().all(|id| id == BCD),
        "{:?}",
        table.asked()
    );
}

#[tokio::test]
async fn request_then_close_notify_still_gets_its_response() {
    let server = Server::new(server_config(KeyExchange::Both), Table::with(&[(BCD, KEY)])).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connect(tcp, &client_config(BCD, KEY, CCM, KeyExchange::PskKe)).await?;
        tls.write_all(REQUEST).await?;
        tls.shutdown().await; // close_notify right behind the request
        let mut response = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match tls.read(&mut buf).await? {
                0 => return Ok::<_, ClientError>(response),
                n => response.extend_from_slice(&buf[..n]),
            }
        }
    });

    let (tcp, _) = listener.accept().await.unwrap();
    let mut tls = timeout(LIMIT, server.accept(tcp)).await.unwrap().unwrap();
    // Let the close_notify arrive, so it sits right behind the request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut request = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        match timeout(LIMIT, tls.read(&mut buf)).await.unwrap().unwrap() {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(request, REQUEST, "all data before close_notify, then Ok(0)");
    // Also a later read stays at EOF.
    assert_eq!(tls.read(&mut buf).await.unwrap(), 0);
    tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    tls.shutdown().await;

    let response = timeout(LIMIT, client).await.unwrap().unwrap().unwrap();
    assert_eq!(response, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
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

#[tokio::test]
async fn a_client_hello_trickling_in_is_reassembled() {
    let (addr, mut seen) =
        serve(server_config(KeyExchange::Both), Table::with(&[(BCD, KEY)])).await;
    // Relays client bytes to the server a few at a time, so the ClientHello arrives in pieces.
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = relay.accept().await.unwrap();
        let server = TcpStream::connect(addr).await.unwrap();
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut server_rx, &mut client_tx).await });
        let mut buf = [0u8; 5];
        loop {
            match tokio::io::AsyncReadExt::read(&mut client_rx, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut server_tx, &buf[..n]).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut server_tx).await;
    });
    let cfg = client_config(BCD, KEY, GCM, KeyExchange::PskDheKe);
    let (_, response) = timeout(LIMIT, exchange(relay_addr, &cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response, expected_response());
    assert_eq!(next(&mut seen).await.unwrap().identity, BCD);
}

#[test]
fn server_is_shareable_and_streams_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Server>();
    send::<TlsStream>();
}

struct Panicking;

impl PskLookup for Panicking {
    fn key_for(&self, _identity: &[u8]) -> Zeroizing<Vec<u8>> {
        panic!("lookup failed");
    }
}

#[tokio::test]
async fn a_panicking_lookup_fails_the_handshake_not_the_process() {
    let (addr, mut seen) = serve(server_config(KeyExchange::Both), Arc::new(Panicking)).await;
    let cfg = client_config(ICCID, KEY, CCM, KeyExchange::PskKe);
    let result = timeout(LIMIT, exchange(addr, &cfg)).await.unwrap();
    assert!(result.is_err());
    assert!(next(&mut seen).await.is_err());
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
    // A missing client is a failure, not a pass: this is the only pure psk_ke client here.
    Command::new("gnutls-cli")
        .arg("--version")
        .output()
        .expect("gnutls-cli is not installed (Debian package `gnutls-bin`): this test needs it");
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
