//! Load generator for the SIM port: registers bench identities, then drives TLS 1.3 PSK requests and reports latency.
//!
//! The default mode is the load run. It sends the same request bytes to any TLS 1.3
//! PSK endpoint, so with `--skip-register` it drives the baselines too (the bare
//! responder, stunnel in front of `wasmtime serve`). The subcommands measure what a
//! load run cannot: idle connections held open (`hold`), tenant upload to first
//! served request (`upload`), and the runtime's dispatch cost in-process (`dispatch`).

mod broker;
mod modes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use psk_client::{ClientConfig, KeyExchange, TlsError, TlsStream};
use psk_edge::admin_client::{AdminArgs, AdminClient};
use zeroize::Zeroizing;

use psk_edge_bench::ids::{iccid, psk};
/// Lines per bulk request: bounds the memory a million identities need.
const BULK_CHUNK: usize = 100_000;
/// A SIM response is at most 250 bytes; anything far beyond means a broken stream.
const MAX_RESPONSE: usize = 16 << 10;

#[derive(Debug, Parser)]
#[command(
    name = "psk-edge-bench",
    about = "Load generator for the psk-edge SIM port",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<modes::Mode>,
    /// The node's SIM port (or any TLS 1.3 PSK endpoint answering HTTP/1.1).
    #[arg(long, default_value = "127.0.0.1:11111")]
    sim: SocketAddr,
    /// The node's admin port, used to register the identities.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    admin: String,
    /// The certificate (PEM) to trust for the admin port. Default: DATA_DIR/admin-cert.pem.
    #[arg(long)]
    admin_ca: Option<PathBuf>,
    /// The node's data directory (admin certificate, operator.secret); needed to register.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many distinct SIM identities to register and use.
    #[arg(long, default_value_t = 1000)]
    identities: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to generate load, e.g. `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Share of requests sent on a kept-alive connection; the rest each open a new one.
    #[arg(long, default_value_t = 0.5)]
    keepalive_share: f64,
    /// Share of requests, once a SIM's device exists, that POST (create it again: the
    /// contract answers the current credentials) rather than GET. A SIM's first request
    /// always POSTs.
    #[arg(long, default_value_t = 0.25)]
    post_share: f64,
    /// Handshakes only: connect, authenticate, close, no HTTP request. Isolates the
    /// PSK lookup from the rest of the path (the identity-table scale curve).
    #[arg(long)]
    handshake_only: bool,
    /// Register the identities, print how long it took, and exit.
    #[arg(long)]
    register_only: bool,
    /// Register only identities from this index on (the ones below are already there).
    #[arg(long, default_value_t = 0)]
    register_from: u64,
    /// Server processes (on this machine) whose CPU time and memory the summary reports;
    /// repeat for a server made of several processes (stunnel + wasmtime serve).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// A name for this run in the summary (e.g. `bare`, `psk-edge`).
    #[arg(long, default_value = "")]
    label: String,
    #[arg(long, value_enum, default_value_t = Suite::Ccm)]
    suite: Suite,
    #[arg(long, value_enum, default_value_t = Kex::PskKe)]
    kex: Kex,
    /// Account the identities are registered under.
    #[arg(long, default_value = "bench")]
    account: String,
    /// The identities are already registered (a previous run).
    #[arg(long)]
    skip_register: bool,
    /// Bound on one request, handshake included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Also print the summary as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Suite {
    Ccm,
    Gcm,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kex {
    /// Pure PSK, no key share, like a SIM applet.
    PskKe,
    /// psk_ke and psk_dhe_ke offered.
    Both,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |at| s.split_at(at));
    let value: f64 = number.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("bad duration {s:?}: {e}"))
}

async fn register(cli: &Cli) -> anyhow::Result<()> {
    let client = AdminClient::new(&AdminArgs {
        admin_url: cli.admin.clone(),
        admin_ca: cli.admin_ca.clone(),
        data_dir: cli
            .data_dir
            .clone()
            .context("--data-dir is needed to register identities (or --skip-register)")?,
    })?;
    let account = serde_json::to_string(&cli.account)?;
    let started = Instant::now();
    let mut accepted = 0u64;
    let mut start = cli.register_from;
    while start < cli.identities {
        let end = (start + BULK_CHUNK as u64).min(cli.identities);
        let mut body = String::with_capacity((end - start) as usize * 110);
        for i in start..end {
            body.push_str(&format!(
                "{{\"identity\":\"{}\",\"psk\":{:?},\"accountId\":{account}}}\n",
                iccid(i),
                psk(i)
            ));
        }
        let (status, answer) = client
            .request("POST", "/v3/sys/security/psk/bulk", Bytes::from(body))
            .await
            .context("bulk PSK registration")?;
        if !status.is_success() {
            bail!(
                "bulk PSK registration answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let text = String::from_utf8_lossy(&answer);
        let ones = text.lines().filter(|l| l.trim() == "1").count() as u64;
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        if lines != end - start || ones != lines {
            bail!(
                "bulk PSK registration of identities {start}..{end}: {ones} accepted of {} sent ({lines} answers)",
                end - start
            );
        }
        accepted += ones;
        start = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "registered {accepted} identities in {seconds:.1}s ({:.0}/s)",
        accepted as f64 / seconds
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    New,
    KeepAlive,
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Handshake,
    Status,
    Io,
    Timeout,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

#[derive(Default)]
struct WorkerStats {
    new_micros: Vec<u32>,
    keepalive_micros: Vec<u32>,
    /// The same requests again, by class: (new, keep-alive) × (GET, POST).
    new_get: Vec<u32>,
    new_post: Vec<u32>,
    keepalive_get: Vec<u32>,
    keepalive_post: Vec<u32>,
    handshake_failed: u64,
    non_200: u64,
    io: u64,
    timeout: u64,
}

struct Shared {
    cli: Cli,
    cipher_list: String,
    key_exchange: KeyExchange,
    counters: Counters,
    stop: AtomicBool,
}

/// splitmix64: enough randomness to pick the request kind, without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct KeptAlive {
    stream: TlsStream,
    index: u64,
}

/// One worker's identities: `worker, worker + C, …`; a worker beyond N shares one.
struct Share {
    indices: Vec<u64>,
    created: Vec<bool>,
    next: usize,
}

impl Share {
    fn new(worker: usize, concurrency: usize, identities: u64) -> Self {
        let mut indices: Vec<u64> = (worker as u64..identities).step_by(concurrency).collect();
        if indices.is_empty() {
            indices.push(worker as u64 % identities);
        }
        let created = vec![false; indices.len()];
        Share {
            indices,
            created,
            next: 0,
        }
    }

    /// The next identity's slot, round-robin.
    fn advance(&mut self) -> usize {
        let slot = self.next;
        self.next = (self.next + 1) % self.indices.len();
        slot
    }
}

async fn open(shared: &Shared, index: u64) -> Result<TlsStream, Failure> {
    let tcp = tokio::net::TcpStream::connect(shared.cli.sim)
        .await
        .map_err(|_| Failure::Io)?;
    // Small requests: without this, Nagle would add delayed-ACK stalls to every exchange.
    tcp.set_nodelay(true).map_err(|_| Failure::Io)?;
    let config = ClientConfig {
        identity: iccid(index).into_bytes(),
        key: Zeroizing::new(psk(index).to_vec()),
        cipher_list: shared.cipher_list.clone(),
        key_exchange: shared.key_exchange,
    };
    psk_client::connect(tcp, &config)
        .await
        .map_err(|e| match e {
            TlsError::Io(_) => Failure::Io,
            TlsError::Handshake { .. } | TlsError::Config(_) => Failure::Handshake,
        })
}

/// Sends one request and reads exactly one response: headers, then Content-Length bytes.
async fn exchange(stream: &mut TlsStream, request: &[u8]) -> Result<(), Failure> {
    let (status, _) = exchange_body(stream, request).await?;
    if status == 200 {
        Ok(())
    } else {
        Err(Failure::Status)
    }
}

/// One request, one response: its status and body.
async fn exchange_body(stream: &mut TlsStream, request: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
    stream.write_all(request).await.map_err(|_| Failure::Io)?;
    let mut got = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await.map_err(|_| Failure::Io)?;
        if n == 0 {
            return Err(Failure::Io);
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&got[..end]).map_err(|_| Failure::Io)?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head
                    .strip_prefix("HTTP/1.1 ")
                    .and_then(|rest| rest.get(..3))
                    .and_then(|code| code.parse().ok())
                    .ok_or(Failure::Io)?;
                return Ok((status, got[end + 4..end + 4 + length].to_vec()));
            }
        }
        if got.len() > MAX_RESPONSE {
            return Err(Failure::Io);
        }
    }
}

/// A SIM's first request creates its device; later ones mostly fetch credentials.
fn pick(created: bool, rng: &mut Rng, post_share: f64) -> Method {
    if !created || rng.next_f64() < post_share {
        Method::Post
    } else {
        Method::Get
    }
}

fn request(method: Method, index: u64, close: bool) -> Vec<u8> {
    let method = match method {
        Method::Get => "GET",
        Method::Post => "POST",
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "{method} /v1/dev/bench-{index}?iccid={} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{connection}\r\n",
        iccid(index)
    )
    .into_bytes()
}

async fn worker(shared: Arc<Shared>, id: usize, deadline: Instant) -> WorkerStats {
    let cli = &shared.cli;
    let mut stats = WorkerStats::default();
    let mut share = Share::new(id, cli.concurrency, cli.identities);
    let mut rng = Rng(0xB5AD_4ECE_DA1C_E2A9 ^ id as u64);
    let mut kept: Option<(KeptAlive, usize)> = None;
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        let kind = if rng.next_f64() < cli.keepalive_share {
            Kind::KeepAlive
        } else {
            Kind::New
        };
        let started = Instant::now();
        let slot;
        let mut method = Method::Get;
        let outcome = match kind {
            Kind::KeepAlive => {
                let reuse = kept.take();
                let attempt = async {
                    let (mut conn, s) = match reuse {
                        Some(k) => k,
                        None => {
                            let s = share.advance();
                            let index = share.indices[s];
                            (
                                KeptAlive {
                                    stream: open(&shared, index).await?,
                                    index,
                                },
                                s,
                            )
                        }
                    };
                    let method = pick(share.created[s], &mut rng, cli.post_share);
                    let result =
                        exchange(&mut conn.stream, &request(method, conn.index, false)).await;
                    Ok::<_, Failure>((conn, s, result, method))
                };
                match tokio::time::timeout(cli.timeout, attempt).await {
                    Err(_) => {
                        slot = None;
                        Err(Failure::Timeout)
                    }
                    Ok(Err(e)) => {
                        slot = None;
                        Err(e)
                    }
                    Ok(Ok((conn, s, result, m))) => {
                        slot = Some(s);
                        method = m;
                        match result {
                            Ok(()) => {
                                kept = Some((conn, s));
                                Ok(started.elapsed())
                            }
                            // A broken or refused exchange: start afresh next time.
                            Err(e) => Err(e),
                        }
                    }
                }
            }
            Kind::New => {
                let s = share.advance();
                slot = Some(s);
                let index = share.indices[s];
                method = pick(share.created[s], &mut rng, cli.post_share);
                let handshake_only = cli.handshake_only;
                let attempt = async {
                    let mut stream = open(&shared, index).await?;
                    let result = if handshake_only {
                        Ok(())
                    } else {
                        exchange(&mut stream, &request(method, index, true)).await
                    };
                    Ok::<_, Failure>((stream, result))
                };
                match tokio::time::timeout(cli.timeout, attempt).await {
                    Err(_) => Err(Failure::Timeout),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok((mut stream, result))) => {
                        let elapsed = started.elapsed();
                        // Closing politely is outside the measured request.
                        stream.shutdown().await;
                        result.map(|()| elapsed)
                    }
                }
            }
        };
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(elapsed) => {
                if let Some(s) = slot {
                    share.created[s] = true;
                }
                let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
                match kind {
                    Kind::New => stats.new_micros.push(micros),
                    Kind::KeepAlive => stats.keepalive_micros.push(micros),
                }
                match (kind, method) {
                    (Kind::New, Method::Get) => stats.new_get.push(micros),
                    (Kind::New, Method::Post) => stats.new_post.push(micros),
                    (Kind::KeepAlive, Method::Get) => stats.keepalive_get.push(micros),
                    (Kind::KeepAlive, Method::Post) => stats.keepalive_post.push(micros),
                }
            }
            Err(failure) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                match failure {
                    Failure::Handshake => stats.handshake_failed += 1,
                    Failure::Status => stats.non_200 += 1,
                    Failure::Io => stats.io += 1,
                    Failure::Timeout => stats.timeout += 1,
                }
            }
        }
    }
    if let Some((mut conn, _)) = kept {
        conn.stream.shutdown().await;
    }
    stats
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Latency {
    count: u64,
    throughput: f64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    max_us: u32,
}

fn latency(sorted: &[u32], seconds: f64) -> Latency {
    let at = |q: f64| {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    Latency {
        count: sorted.len() as u64,
        throughput: sorted.len() as f64 / seconds,
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: sorted.last().copied().unwrap_or(0),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Errors {
    handshake_failed: u64,
    non_200: u64,
    io: u64,
    timeout: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Summary {
    label: String,
    suite: String,
    kex: String,
    identities: u64,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    throughput: f64,
    ok: Latency,
    new_connection: Latency,
    keepalive: Latency,
    new_get: Latency,
    new_post: Latency,
    keepalive_get: Latency,
    keepalive_post: Latency,
    handshake_only: bool,
    errors: Errors,
    /// Present when `--server-pid` was given.
    server: Option<modes::ServerUse>,
}

fn print(summary: &Summary) {
    println!(
        "{}suite={} kex={} identities={} concurrency={} duration={:.2}s",
        if summary.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", summary.label)
        },
        summary.suite,
        summary.kex,
        summary.identities,
        summary.concurrency,
        summary.seconds
    );
    println!(
        "requests: {} ({:.0} req/s)",
        summary.requests, summary.throughput
    );
    let new_label = if summary.handshake_only {
        "handshake only"
    } else {
        "new connection"
    };
    for (name, l) in [
        ("ok", &summary.ok),
        (new_label, &summary.new_connection),
        ("  GET", &summary.new_get),
        ("  POST", &summary.new_post),
        ("keep-alive", &summary.keepalive),
        ("  GET", &summary.keepalive_get),
        ("  POST", &summary.keepalive_post),
    ] {
        if l.count == 0 && name.starts_with(' ') {
            continue;
        }
        println!(
            "  {name:<15} {:>9} ({:>8.0} req/s)  p50 {:>7} us  p99 {:>7} us  p99.9 {:>7} us  max {:>7} us",
            l.count, l.throughput, l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
    }
    let e = &summary.errors;
    println!(
        "errors: handshake failed {}, non-200 {}, I/O {}, timeout {}",
        e.handshake_failed, e.non_200, e.io, e.timeout
    );
    if let Some(server) = &summary.server {
        println!(
            "server: {:.0} us CPU per request, {:.0}% of one core; RSS {} KiB (peak {} KiB)",
            server.cpu_us_per_request, server.cpu_percent, server.rss_kib, server.hwm_kib
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(mode) = cli.mode.take() {
        return modes::run(mode).await;
    }
    if cli.identities == 0 || cli.concurrency == 0 {
        bail!("--identities and --concurrency must be at least 1");
    }
    if !(0.0..=1.0).contains(&cli.keepalive_share) || !(0.0..=1.0).contains(&cli.post_share) {
        bail!("--keepalive-share and --post-share must be between 0 and 1");
    }
    if cli.handshake_only {
        cli.keepalive_share = 0.0;
    }
    if !cli.skip_register {
        register(&cli).await?;
    }
    if cli.register_only {
        return Ok(());
    }
    let (cipher_list, suite) = match cli.suite {
        Suite::Ccm => ("TLS13-AES128-CCM-SHA256", "ccm"),
        Suite::Gcm => ("TLS13-AES128-GCM-SHA256", "gcm"),
    };
    let (key_exchange, kex) = match cli.kex {
        Kex::PskKe => (KeyExchange::PskKe, "psk-ke"),
        Kex::Both => (KeyExchange::Both, "both"),
    };
    let shared = Arc::new(Shared {
        cipher_list: cipher_list.to_owned(),
        key_exchange,
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        cli,
    });
    // Fail fast, with the underlying reason, on a wrong port or key before starting the clock.
    let sim = shared.cli.sim;
    let tcp = tokio::net::TcpStream::connect(sim)
        .await
        .with_context(|| format!("connecting to the SIM port {sim}"))?;
    let config = ClientConfig {
        identity: iccid(0).into_bytes(),
        key: Zeroizing::new(psk(0).to_vec()),
        cipher_list: shared.cipher_list.clone(),
        key_exchange: shared.key_exchange,
    };
    let mut probe = tokio::time::timeout(shared.cli.timeout, psk_client::connect(tcp, &config))
        .await
        .map_err(|_| anyhow::anyhow!("first handshake with {sim} timed out"))?
        .with_context(|| format!("first handshake with {sim} as {}", iccid(0)))?;
    probe.shutdown().await;

    let before = modes::sample(&shared.cli.server_pids)?;
    let started = Instant::now();
    let deadline = started + shared.cli.duration;
    let workers: Vec<_> = (0..shared.cli.concurrency)
        .map(|id| tokio::spawn(worker(shared.clone(), id, deadline)))
        .collect();
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let requests = shared.counters.requests.load(Ordering::Relaxed);
                eprintln!(
                    "{:>6.1}s  requests {requests:>9}  {:>7} req/s  errors {}",
                    started.elapsed().as_secs_f64(),
                    requests - last,
                    shared.counters.errors.load(Ordering::Relaxed)
                );
                last = requests;
            }
        })
    };
    let interrupted = {
        let shared = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.stop.store(true, Ordering::Relaxed);
            }
        })
    };
    let mut all = WorkerStats::default();
    for handle in workers {
        let stats = handle.await.context("a worker panicked")?;
        all.new_micros.extend(stats.new_micros);
        all.keepalive_micros.extend(stats.keepalive_micros);
        all.new_get.extend(stats.new_get);
        all.new_post.extend(stats.new_post);
        all.keepalive_get.extend(stats.keepalive_get);
        all.keepalive_post.extend(stats.keepalive_post);
        all.handshake_failed += stats.handshake_failed;
        all.non_200 += stats.non_200;
        all.io += stats.io;
        all.timeout += stats.timeout;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    interrupted.abort();
    let after = modes::sample(&shared.cli.server_pids)?;

    for v in [
        &mut all.new_micros,
        &mut all.keepalive_micros,
        &mut all.new_get,
        &mut all.new_post,
        &mut all.keepalive_get,
        &mut all.keepalive_post,
    ] {
        v.sort_unstable();
    }
    let mut ok: Vec<u32> = all
        .new_micros
        .iter()
        .chain(&all.keepalive_micros)
        .copied()
        .collect();
    ok.sort_unstable();
    let requests = shared.counters.requests.load(Ordering::Relaxed);
    let ok_count = ok.len() as u64;
    let summary = Summary {
        label: shared.cli.label.clone(),
        server: modes::server_use(before, after, ok_count),
        suite: suite.to_owned(),
        kex: kex.to_owned(),
        identities: shared.cli.identities,
        concurrency: shared.cli.concurrency,
        seconds,
        requests,
        throughput: requests as f64 / seconds,
        ok: latency(&ok, seconds),
        new_connection: latency(&all.new_micros, seconds),
        keepalive: latency(&all.keepalive_micros, seconds),
        new_get: latency(&all.new_get, seconds),
        new_post: latency(&all.new_post, seconds),
        keepalive_get: latency(&all.keepalive_get, seconds),
        keepalive_post: latency(&all.keepalive_post, seconds),
        handshake_only: shared.cli.handshake_only,
        errors: Errors {
            handshake_failed: all.handshake_failed,
            non_200: all.non_200,
            io: all.io,
            timeout: all.timeout,
        },
    };
    print(&summary);
    if shared.cli.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
