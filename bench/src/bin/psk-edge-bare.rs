//! The bare TLS 1.3 PSK responder: the limit psk-edge's SIM path is measured against.
//!
//! The same wolfSSL server wrapper as the SIM port (`psk_edge::wolfssl::Server`), the
//! same PSK table size, the same answer bytes, but no routing, no WebAssembly and no
//! store: it frames one request, answers a fixed credential-shaped response, and
//! honours `Connection: close`. The ratio psk-edge / this isolates what the platform
//! adds on top of TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use psk_edge::wolfssl::{self, KeyExchange, PskLookup, ServerConfig, TlsStream};
use psk_edge_bench::ids;
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(
    name = "psk-edge-bare",
    about = "Bare wolfSSL TLS 1.3 PSK responder (benchmark baseline)"
)]
struct Cli {
    /// Where to listen; loopback unless you mean otherwise.
    #[arg(long, default_value = "127.0.0.1:11112")]
    listen: SocketAddr,
    /// How many bench identities the PSK table holds (psk-edge-bench's derivation).
    #[arg(long, default_value_t = 1000)]
    identities: u64,
    #[arg(long, value_enum, default_value_t = Kex::Both)]
    kex: Kex,
    /// wolfSSL cipher list, as the SIM port's `--ciphers`.
    #[arg(long, default_value = wolfssl::DEFAULT_CIPHER_LIST)]
    ciphers: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kex {
    Both,
    PskKe,
    PskDheKe,
}

/// The same shape as the node's PSK cache: ICCID string → key.
struct Table {
    keys: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl PskLookup for Table {
    fn key_for(&self, identity: &[u8]) -> Zeroizing<Vec<u8>> {
        std::str::from_utf8(identity)
            .ok()
            .and_then(|iccid| self.keys.get(iccid).cloned())
            // An unknown identity must still cost a binder check and fail.
            .unwrap_or_else(|| Zeroizing::new(vec![0; 16]))
    }
}

fn response() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        ids::BODY.len(),
        ids::BODY
    )
    .into_bytes()
}

/// Answers every complete request on the connection; stops at `Connection: close` or EOF.
async fn serve(mut stream: TlsStream, answer: &[u8]) {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let mut length = 0usize;
                let mut close = false;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                if buf.len() >= head + length {
                    buf.drain(..head + length);
                    if stream.write_all(answer).await.is_err() || close {
                        break;
                    }
                    continue;
                }
            }
            Ok(httparse::Status::Partial) if buf.len() <= 250 => {}
            Ok(httparse::Status::Partial) | Err(_) => break,
        }
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    stream.shutdown().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let keys = (0..cli.identities)
        .map(|i| (ids::iccid(i), Zeroizing::new(ids::psk(i).to_vec())))
        .collect();
    let config = ServerConfig {
        cipher_list: cli.ciphers.clone(),
        key_exchange: match cli.kex {
            Kex::Both => KeyExchange::Both,
            Kex::PskKe => KeyExchange::PskKe,
            Kex::PskDheKe => KeyExchange::PskDheKe,
        },
        handshake_timeout: Duration::from_secs(10),
    };
    let server = Arc::new(wolfssl::Server::new(config, Arc::new(Table { keys }))?);
    let answer: Arc<[u8]> = response().into();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    eprintln!(
        "psk-edge-bare ready on {} with {} identities",
        listener.local_addr()?,
        cli.identities
    );
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors under a connection storm: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (server, answer) = (server.clone(), answer.clone());
        tokio::spawn(async move {
            if let Ok(stream) = server.accept(tcp).await {
                serve(stream, &answer).await;
            }
        });
    }
}
