//! The bench's measurements beside the load run: idle connections, upload to first served request, dispatch cost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use psk_client::{ClientConfig, KeyExchange, TlsStream};
use psk_edge::admin_client::{AdminArgs, AdminClient};
use psk_edge::capabilities::{Caller, Platform, SimCaller};
use psk_edge::psk_cache::PskCache;
use psk_edge::runtime::{CallLimits, Runtime, RuntimeConfig, World};
use psk_edge::secrets::Sealer;
use psk_edge::store::Store;
use zeroize::Zeroizing;

use crate::broker;
use crate::{Failure, Method, exchange, parse_duration, request};
use psk_edge_bench::ids::{self, iccid, psk};

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Open N keep-alive connections (handshake + one request each) and hold them idle.
    Hold(Hold),
    /// Upload a tenant function and time until the SIM port serves it.
    Upload(Upload),
    /// The runtime's cost per request (fresh instance + call), in-process, no sockets.
    Dispatch(Dispatch),
    /// A markdown table of load-run summaries (`--json` output), each as a ratio to the first.
    Report(Report),
    /// Print the bench identities as `ICCID:HEXKEY` lines (stunnel's PSKsecrets format).
    PskTable {
        #[arg(long, default_value_t = 1000)]
        identities: u64,
    },
    /// Write N devices with known MQTT credentials straight into a node's store, in bulk.
    SeedDevices(broker::Seed),
    /// Cold-cache MQTT CONNECT rate at the broker: each connect a device never seen.
    MqttConnect(broker::ConnectRate),
    /// Devices created through the SIM port, their credentials tried at the broker at once.
    FreshCredentials(broker::Fresh),
    /// Rotations or deletions through the admin API: until the live session ends and the old password is refused.
    Revoke(broker::Revoke),
}

pub async fn run(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Hold(args) => hold(args).await,
        Mode::Upload(args) => upload(args).await,
        Mode::Dispatch(args) => dispatch(args).await,
        Mode::Report(args) => report(args),
        Mode::SeedDevices(args) => broker::seed(args).await,
        Mode::MqttConnect(args) => broker::connect_rate(args).await,
        Mode::FreshCredentials(args) => broker::fresh(args).await,
        Mode::Revoke(args) => broker::revoke(args).await,
        Mode::PskTable { identities } => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for i in 0..identities {
                writeln!(out, "{}:{}", iccid(i), hex::encode(psk(i)))?;
            }
            out.flush()?;
            Ok(())
        }
    }
}

/// What the server processes used during a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerUse {
    pub cpu_us_per_request: f64,
    /// Of one core, over the run's wall time.
    pub cpu_percent: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    cpu_seconds: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

/// The unit of /proc's CPU times.
#[allow(unsafe_code)] // sysconf: std has no safe form of it
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time and memory of `pids`, summed (Linux /proc); None without pids.
pub fn sample(pids: &[u32]) -> anyhow::Result<Option<Sample>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let ticks = clock_ticks_per_second();
    let mut out = Sample {
        at: Instant::now(),
        cpu_seconds: 0.0,
        rss_kib: 0,
        hwm_kib: 0,
    };
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("server process {pid}"))?;
        // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        out.cpu_seconds += (tick(11) + tick(12)) / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.rss_kib += kib("VmRSS:");
        out.hwm_kib += kib("VmHWM:");
    }
    Ok(Some(out))
}

pub fn server_use(
    before: Option<Sample>,
    after: Option<Sample>,
    requests: u64,
) -> Option<ServerUse> {
    let (before, after) = (before?, after?);
    let cpu = after.cpu_seconds - before.cpu_seconds;
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    Some(ServerUse {
        cpu_us_per_request: cpu * 1e6 / requests.max(1) as f64,
        cpu_percent: cpu * 100.0 / wall,
        rss_kib: after.rss_kib,
        hwm_kib: after.hwm_kib,
    })
}

#[derive(Debug, Args)]
pub struct Hold {
    #[arg(long, default_value = "127.0.0.1:11111")]
    sim: SocketAddr,
    /// Connections to open and hold.
    #[arg(long)]
    connections: usize,
    /// Registered identities to spread them over.
    #[arg(long, default_value_t = 1000)]
    identities: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Hold them this long, or until interrupted (whichever comes first).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    hold: Duration,
    /// Server processes whose memory growth per held connection is reported.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
}

pub async fn connect(sim: SocketAddr, index: u64) -> Result<TlsStream, Failure> {
    let tcp = tokio::net::TcpStream::connect(sim)
        .await
        .map_err(|_| Failure::Io)?;
    tcp.set_nodelay(true).map_err(|_| Failure::Io)?;
    let config = ClientConfig {
        identity: iccid(index).into_bytes(),
        key: Zeroizing::new(psk(index).to_vec()),
        cipher_list: "TLS13-AES128-CCM-SHA256".into(),
        key_exchange: KeyExchange::PskKe,
    };
    psk_client::connect(tcp, &config)
        .await
        .map_err(|_| Failure::Handshake)
}

async fn hold(args: Hold) -> anyhow::Result<()> {
    if args.identities == 0 {
        bail!("--identities must be at least 1");
    }
    let before = sample(&args.server_pids)?;
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for n in 0..args.connections {
        let gate = gate.clone();
        let (sim, index) = (args.sim, n as u64 % args.identities);
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|_| Failure::Io)?;
            let mut stream = connect(sim, index).await?;
            // Any answer will do (a 404 for a device never created keeps the connection
            // open too): what counts is that the server has served on it and now idles.
            match exchange(&mut stream, &request(Method::Get, index, false)).await {
                Ok(()) | Err(Failure::Status) => Ok(stream),
                Err(e) => Err(e),
            }
        });
    }
    let mut held = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    while let Some(joined) = opening.join_next().await {
        match joined {
            Ok(Ok(stream)) => held.push(stream),
            _ => failed += 1,
        }
        let done = held.len() + failed;
        if done.is_multiple_of(1000) {
            eprintln!("opened {} of {}", held.len(), args.connections);
        }
    }
    println!(
        "holding {} connections ({failed} failed) after {:.1}s",
        held.len(),
        started.elapsed().as_secs_f64()
    );
    // Let the server finish the last answers and settle before sampling it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let (Some(before), Some(after)) = (before, sample(&args.server_pids)?) {
        let grown = after.rss_kib.saturating_sub(before.rss_kib);
        println!(
            "server RSS {} KiB -> {} KiB with {} idle connections: {:.1} KiB per connection",
            before.rss_kib,
            after.rss_kib,
            held.len(),
            grown as f64 / held.len().max(1) as f64
        );
    }
    tokio::select! {
        () = tokio::time::sleep(args.hold) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(held);
    Ok(())
}

#[derive(Debug, Args)]
pub struct Upload {
    #[arg(long, default_value = "127.0.0.1:11111")]
    sim: SocketAddr,
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    admin: String,
    #[arg(long)]
    admin_ca: Option<PathBuf>,
    #[arg(long)]
    data_dir: PathBuf,
    /// The account whose function is replaced; bench identity `--index` must belong to it.
    #[arg(long, default_value = "bench")]
    account: String,
    /// The SIM route it serves (GET /v1/dev/{id} is device-credentials).
    #[arg(long, default_value = "device-credentials")]
    route: String,
    /// Bench identity whose GET is expected to be answered by the new function.
    #[arg(long, default_value_t = 0)]
    index: u64,
    /// The component: it must answer the bench body (functions/fixtures/bench-static).
    wasm: PathBuf,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long)]
    json: bool,
}

/// One request on a fresh connection; the body of the answer.
async fn fetch(sim: SocketAddr, index: u64) -> Result<Vec<u8>, Failure> {
    let mut stream = connect(sim, index).await?;
    stream
        .write_all(&request(Method::Get, index, true))
        .await
        .map_err(|_| Failure::Io)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await.map_err(|_| Failure::Io)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    stream.shutdown().await;
    let body = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(Vec::new(), |at| got[at + 4..].to_vec());
    Ok(body)
}

async fn upload(args: Upload) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.wasm).with_context(|| format!("reading {}", args.wasm.display()))?;
    let client = AdminClient::new(&AdminArgs {
        admin_url: args.admin.clone(),
        admin_ca: args.admin_ca.clone(),
        data_dir: args.data_dir.clone(),
    })?;
    if fetch(args.sim, args.index).await.ok().as_deref() == Some(ids::BODY.as_bytes()) {
        bail!("the route already answers the bench body: upload to a fresh node");
    }
    let path = format!("/v3/accounts/{}/functions/{}", args.account, args.route);
    let started = Instant::now();
    let (status, answer) = client
        .request("PUT", &path, Bytes::from(bytes))
        .await
        .context("uploading the function")?;
    let put = started.elapsed();
    if !status.is_success() {
        bail!(
            "upload answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let compile_ms = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("compile_ms").and_then(serde_json::Value::as_f64));
    let mut attempts = 0u32;
    let served = loop {
        attempts += 1;
        if let Ok(body) = fetch(args.sim, args.index).await
            && body == ids::BODY.as_bytes()
        {
            break started.elapsed();
        }
        if started.elapsed() > args.timeout {
            bail!("the new function did not answer within {:?}", args.timeout);
        }
    };
    println!(
        "upload: PUT answered in {:.1} ms (compile {} ms); first request served by the new function {:.1} ms after the upload began ({attempts} request(s))",
        put.as_secs_f64() * 1e3,
        compile_ms.map_or_else(|| "?".into(), |ms| format!("{ms:.0}")),
        served.as_secs_f64() * 1e3,
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "put_ms": put.as_secs_f64() * 1e3,
                "compile_ms": compile_ms,
                "first_served_ms": served.as_secs_f64() * 1e3,
                "size": ids::BODY.len(),
            })
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct Dispatch {
    /// Timed calls per component.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Also time this component (served as the account's device-credentials), e.g. the
    /// bench-static fixture: the runtime's own cost without the store.
    #[arg(long)]
    wasm: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

const DISPATCH_LIMITS: CallLimits = CallLimits {
    deadline: Duration::from_millis(500),
    memory_bytes: 64 << 20,
    max_response: 64 << 10,
};

/// Removes the scratch store when the measurement ends, however it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sim_request(method: &str, device: &str, iccid: &str) -> anyhow::Result<http::Request<Bytes>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(format!("/v1/dev/{device}?iccid={iccid}"))
        .header("host", "x")
        .body(Bytes::new())?)
}

async fn dispatch(args: Dispatch) -> anyhow::Result<()> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("psk-edge-dispatch-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    let store = Store::open_sqlite(&scratch.0.join("psk-edge.db")).await?;
    let psks = Arc::new(PskCache::new()?);
    let platform = Arc::new(Platform::new(store, Sealer::new(&[7; 32]), psks, None));
    // The node's defaults: 128 instances at once, a 1 GiB pool bound.
    let mut runtime = Runtime::new(
        &RuntimeConfig {
            concurrency: 128,
            max_memory_bytes: 1 << 30,
            cache_dir: None,
        },
        platform,
    )
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let routes = wire::routes::RouteTable::parse(
        psk_edge::components::DEFAULT_MANIFEST,
        std::path::Path::new("."),
    )?;
    for embedded in psk_edge::components::PLATFORM {
        runtime
            .load(
                embedded.name,
                embedded.bytes,
                World::of(&routes, embedded.name),
            )
            .map_err(|e| anyhow::anyhow!("loading {}: {e:#}", embedded.name))?;
    }
    let iccid = iccid(0);
    let key: Vec<u8> = psk(0).to_vec();
    let body = serde_json::json!({"identity": iccid, "psk": key, "accountId": "bench"});
    let registered = runtime
        .invoke(
            "admin-psk",
            Caller::Operator,
            http::Request::builder()
                .method("POST")
                .uri("/v3/sys/security/psk")
                .body(Bytes::from(body.to_string()))?,
            DISPATCH_LIMITS,
        )
        .await?;
    if &registered.body[..] != b"1" {
        bail!("registering the bench SIM failed");
    }
    let sim = Caller::Sim(SimCaller {
        iccid: iccid.clone(),
        identity_hex: None,
        account_id: "bench".into(),
    });
    let created = runtime
        .invoke(
            "device-create",
            sim.clone(),
            sim_request("POST", "bench-0", &iccid)?,
            DISPATCH_LIMITS,
        )
        .await?;
    if created.status != http::StatusCode::OK {
        bail!("creating the bench device failed: {:?}", created.body);
    }
    let runtime = Arc::new(runtime);
    let mut results = Vec::new();
    results.push((
        "device-credentials (platform, store read)",
        time_calls(&runtime, &sim, &iccid, &args).await?,
    ));
    if let Some(path) = &args.wasm {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let prepared = runtime
            .prepare("bench-static", &bytes)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        runtime.set_tenant_function("bench", "device-credentials", Some(prepared.loaded));
        results.push((
            "bench-static (no imports beyond WASI)",
            time_calls(&runtime, &sim, &iccid, &args).await?,
        ));
    }
    for (name, t) in &results {
        println!(
            "dispatch {name}: p50 {} us  p99 {} us  p99.9 {} us  ({:.0} calls/s at {} in flight)",
            t.p50_us, t.p99_us, t.p999_us, t.throughput, args.concurrency
        );
    }
    if args.json {
        let all: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(name, t)| {
                (
                    name.to_string(),
                    serde_json::to_value(t).unwrap_or_default(),
                )
            })
            .collect();
        println!("{}", serde_json::Value::Object(all));
    }
    Ok(())
}

async fn time_calls(
    runtime: &Arc<Runtime>,
    sim: &Caller,
    iccid: &str,
    args: &Dispatch,
) -> anyhow::Result<crate::Latency> {
    let one = |runtime: Arc<Runtime>, sim: Caller, request: http::Request<Bytes>| async move {
        let started = Instant::now();
        let response = runtime
            .invoke("device-credentials", sim, request, DISPATCH_LIMITS)
            .await;
        (started.elapsed(), response.map(|r| r.status))
    };
    // Warm-up: the first calls fault in the pool's memory and the code.
    for _ in 0..200 {
        let (_, status) = one(
            runtime.clone(),
            sim.clone(),
            sim_request("GET", "bench-0", iccid)?,
        )
        .await;
        if status.is_err() {
            bail!("the warm-up call failed");
        }
    }
    let per_worker = args.requests.div_ceil(args.concurrency.max(1));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (runtime, sim, iccid) = (runtime.clone(), sim.clone(), iccid.to_owned());
        workers.spawn(async move {
            let mut micros = Vec::with_capacity(per_worker);
            let mut failed = 0u64;
            for _ in 0..per_worker {
                let Ok(request) = sim_request("GET", "bench-0", &iccid) else {
                    failed += 1;
                    continue;
                };
                let (took, status) = one(runtime.clone(), sim.clone(), request).await;
                match status {
                    Ok(http::StatusCode::OK) => {
                        micros.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    }
                    _ => failed += 1,
                }
            }
            (micros, failed)
        });
    }
    let mut all = Vec::with_capacity(args.requests);
    let mut failed = 0;
    while let Some(joined) = workers.join_next().await {
        let (micros, f) = joined.context("a dispatch worker panicked")?;
        all.extend(micros);
        failed += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    if failed > 0 {
        bail!("{failed} dispatch calls failed");
    }
    all.sort_unstable();
    Ok(crate::latency(&all, seconds))
}

#[derive(Debug, Args)]
pub struct Report {
    /// `LABEL=FILE` pairs; each FILE's last line is a load run's `--json` summary. The
    /// first is the baseline the others are a ratio of.
    runs: Vec<String>,
}

fn report(args: Report) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for run in &args.runs {
        let (label, path) = run
            .split_once('=')
            .with_context(|| format!("{run:?} is not LABEL=FILE"))?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let last = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("no JSON summary in {path}"))?;
        let summary: crate::Summary =
            serde_json::from_str(last).with_context(|| format!("summary in {path}"))?;
        rows.push((label.to_owned(), summary));
    }
    let Some((_, base)) = rows.first() else {
        bail!("no runs to report");
    };
    let base_rate = base.ok.throughput.max(1e-9);
    let base_cpu = base.server.as_ref().map(|u| u.cpu_us_per_request);
    println!(
        "| run | TLS | req/s | ratio to the first | p50 | p99 | p99.9 | server CPU per request | ratio per server CPU | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, s) in &rows {
        let errors = s.errors.handshake_failed + s.errors.non_200 + s.errors.io + s.errors.timeout;
        let cpu = s.server.as_ref().map(|u| u.cpu_us_per_request);
        println!(
            "| {label} | 1.3 {} {} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {errors} |",
            s.suite,
            s.kex,
            s.ok.throughput,
            s.ok.throughput / base_rate,
            f64::from(s.ok.p50_us) / 1e3,
            f64::from(s.ok.p99_us) / 1e3,
            f64::from(s.ok.p999_us) / 1e3,
            cpu.map_or_else(|| "-".into(), |us| format!("{us:.0} µs")),
            match (base_cpu, cpu) {
                (Some(base), Some(us)) if us > 0.0 => format!("{:.2}", base / us),
                _ => "-".into(),
            },
        );
    }
    Ok(())
}
