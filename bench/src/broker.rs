//! The broker side of the bench: a fleet of devices seeded in bulk, the cold-cache CONNECT rate, how soon fresh credentials work, and how soon a revoked one stops.
//!
//! MQTT is spoken with rumqttc's v5 packet codec over a plain socket rather than its
//! event loop: a CONNECT, its CONNACK and a DISCONNECT are all a connect-rate run
//! needs, and the event loop's task and channels would cost the load generator more
//! CPU than the broker spends on the same connect (both share two cores).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use psk_edge::admin_client::{AdminArgs, AdminClient};
use psk_edge::secrets::{Sealer, device_password_context, load_master_key};
use psk_edge::store::{NewDevice, Store};
use rumqttc::v5::mqttbytes::Error as MqttError;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode, Login, Packet,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::modes::{ServerUse, connect as sim_connect, sample, server_use};
use crate::{latency, parse_duration};
use psk_edge_bench::ids::iccid;

/// A CONNACK or DISCONNECT is a few bytes; anything longer is not the broker.
const MAX_PACKET: u32 = 4096;

/// A device `seed-devices` writes: its names and password follow from the index, so
/// the runs below find a million of them without a list on disk.
pub struct Seeded {
    pub device_id: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
}

pub fn seeded(index: u64) -> Seeded {
    let digest = Sha256::new()
        .chain_update(b"psk-edge-bench-mqtt")
        .chain_update(index.to_be_bytes())
        .finalize();
    Seeded {
        device_id: format!("seed-{index}"),
        client_id: format!("seed-cli-{index:015}"),
        username: format!("seed-usr-{index:015}"),
        // 24 characters, like the passwords the platform issues.
        password: hex::encode(&digest[..12]),
    }
}

#[derive(Debug, Args)]
pub struct Seed {
    /// The node's data directory: its SQLite file and master key.
    #[arg(long)]
    data_dir: PathBuf,
    /// A shared PostgreSQL store instead of DATA_DIR's SQLite file (the master key then
    /// comes from PSK_EDGE_MASTER_KEY, as for the nodes).
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value = "bench")]
    account: String,
    /// Devices to write: indices FROM .. FROM+DEVICES.
    #[arg(long)]
    devices: u64,
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Devices per transaction.
    #[arg(long, default_value_t = 5000)]
    batch: u64,
}

/// A device with its sealed password, its publish and subscribe topics and its ICCID.
type SeedRow = (Seeded, Vec<u8>, [Vec<String>; 2], String);

/// Writes the devices through the store's own insert, a batch per transaction: the
/// rows are exactly what a SIM's device creation leaves (sealed password, topics).
pub async fn seed(args: Seed) -> anyhow::Result<()> {
    let env_key = std::env::var("PSK_EDGE_MASTER_KEY").ok();
    if env_key.is_none() && !args.data_dir.join("master.key").exists() {
        bail!(
            "{} has no master.key (start the node there once, or set PSK_EDGE_MASTER_KEY)",
            args.data_dir.display()
        );
    }
    let (key, _) = load_master_key(env_key.as_deref(), None, &args.data_dir)?;
    let sealer = Sealer::new(&key);
    drop(key);
    let store = match &args.database_url {
        Some(url) => Store::open(url).await?,
        None => Store::open_sqlite(&args.data_dir.join("psk-edge.db")).await?,
    };
    store.create_account(&args.account).await?;
    let account = args.account.as_str();
    let started = Instant::now();
    let end = args.from + args.devices;
    let mut next = args.from;
    let mut reported = Instant::now();
    while next < end {
        let batch_end = (next + args.batch.max(1)).min(end);
        let owned: Vec<SeedRow> = (next..batch_end)
            .map(|i| {
                let device = seeded(i);
                let sealed = sealer.seal(
                    &device_password_context(account, &device.device_id),
                    device.password.as_bytes(),
                )?;
                let topics = [
                    vec![format!("{account}/sensor/device/{}", device.device_id)],
                    vec![
                        format!("{account}/command/device/{}", device.device_id),
                        format!("{account}/command/device/all"),
                    ],
                ];
                Ok((device, sealed, topics, iccid(i)))
            })
            .collect::<anyhow::Result<_>>()?;
        let rows: Vec<NewDevice<'_>> = owned
            .iter()
            .map(|(device, sealed, [publish, subscribe], iccid)| NewDevice {
                account_id: account,
                device_id: &device.device_id,
                iccid,
                client_id: &device.client_id,
                username: &device.username,
                sealed_password: sealed,
                profile: None,
                publish,
                subscribe,
                config: &[],
            })
            .collect();
        store
            .create_devices(&rows)
            .await
            .with_context(|| format!("writing devices {next}..{batch_end}"))?;
        next = batch_end;
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            eprintln!(
                "  {} of {} devices written ({:.0}/s)",
                next - args.from,
                args.devices,
                (next - args.from) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "seeded {} devices ({}..{end}) in {seconds:.1}s ({:.0}/s)",
        args.devices,
        args.from,
        args.devices as f64 / seconds
    );
    store.close().await;
    Ok(())
}

/// How a CONNECT ended.
enum Connack {
    Accepted(TcpStream),
    Refused(ConnectReturnCode),
}

/// Connects as one MQTT v5 client and reads the broker's CONNACK.
async fn mqtt_connect(
    broker: SocketAddr,
    client_id: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<Connack> {
    let mut stream = TcpStream::connect(broker).await?;
    stream.set_nodelay(true)?;
    let connect = Connect {
        keep_alive: 60,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties: None,
    };
    let mut out = BytesMut::with_capacity(128);
    connect
        .write(&None, &Some(Login::new(username, password)), &mut out)
        .map_err(|e| anyhow::anyhow!("encoding CONNECT: {e:?}"))?;
    stream.write_all(&out).await?;
    match read_packet(&mut stream).await? {
        Some(Packet::ConnAck(ConnAck { code, .. })) => Ok(match code {
            ConnectReturnCode::Success => Connack::Accepted(stream),
            refused => Connack::Refused(refused),
        }),
        Some(other) => bail!("the broker answered CONNECT with {other:?}"),
        None => bail!("the broker closed the connection before CONNACK"),
    }
}

/// The next packet, or None when the broker closed the connection.
async fn read_packet(stream: &mut TcpStream) -> anyhow::Result<Option<Packet>> {
    let mut buf = BytesMut::with_capacity(64);
    loop {
        match Packet::read(&mut buf, Some(MAX_PACKET)) {
            Ok(packet) => return Ok(Some(packet)),
            Err(MqttError::InsufficientBytes(_)) => {}
            Err(e) => bail!("a malformed packet from the broker: {e:?}"),
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn mqtt_disconnect(mut stream: TcpStream) {
    let mut out = BytesMut::with_capacity(8);
    if Disconnect::new(DisconnectReasonCode::NormalDisconnection)
        .write(&mut out)
        .is_ok()
    {
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
}

/// Index k of a run → a seeded device, spread over the whole table rather than in
/// insertion order (a stride coprime with the table size visits each index once).
fn spread(k: u64, seeded: u64) -> u64 {
    const STRIDE: u64 = 999_983;
    let stride = if gcd(STRIDE, seeded) == 1 { STRIDE } else { 1 };
    (k % seeded) * stride % seeded
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn percentiles(mut micros: Vec<u32>, seconds: f64) -> crate::Latency {
    micros.sort_unstable();
    latency(&micros, seconds)
}

fn print_latency(name: &str, l: &crate::Latency) {
    println!(
        "  {name:<22} {:>8} ({:>8.0}/s)  p50 {:>8} us  p99 {:>8} us  p99.9 {:>8} us  max {:>8} us",
        l.count, l.throughput, l.p50_us, l.p99_us, l.p999_us, l.max_us
    );
}

fn print_use(
    pids: &[(String, u32)],
    before: &[Option<crate::modes::Sample>],
    count: u64,
) -> anyhow::Result<Vec<(String, ServerUse)>> {
    let mut out = Vec::new();
    for ((name, pid), before) in pids.iter().zip(before) {
        if let Some(used) = server_use(*before, sample(&[*pid])?, count) {
            println!(
                "  {name:<22} {:>8.1} us CPU each  {:>5.1}% of a core  RSS {} MiB (peak {} MiB)",
                used.cpu_us_per_request,
                used.cpu_percent,
                used.rss_kib / 1024,
                used.hwm_kib / 1024
            );
            out.push((name.clone(), used));
        }
    }
    Ok(out)
}

/// `--broker-pid` and `--node-pid`, named for the summary.
fn named_pids(broker: Option<u32>, node: Option<u32>) -> Vec<(String, u32)> {
    broker
        .map(|p| ("broker".to_owned(), p))
        .into_iter()
        .chain(node.map(|p| ("node".to_owned(), p)))
        .collect()
}

fn samples(pids: &[(String, u32)]) -> anyhow::Result<Vec<Option<crate::modes::Sample>>> {
    pids.iter().map(|(_, pid)| sample(&[*pid])).collect()
}

#[derive(Debug, Args)]
pub struct ConnectRate {
    /// The MQTT broker (the managed one's port is in DATA_DIR/mosquitto/port).
    #[arg(long)]
    mqtt: SocketAddr,
    /// The seeded devices to connect as: indices LOWEST..SEEDED.
    #[arg(long)]
    seeded: u64,
    #[arg(long, default_value_t = 0)]
    lowest: u64,
    /// The run's first connect number: a later run with a higher --from meets devices
    /// the broker has never seen, so its cache stays cold.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Connects to make, each as a different device (at most SEEDED).
    #[arg(long, default_value_t = 20_000)]
    connects: u64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Bound on the whole run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long)]
    broker_pid: Option<u32>,
    #[arg(long)]
    node_pid: Option<u32>,
    /// What the summary calls this run, e.g. `cold cache`.
    #[arg(long, default_value = "")]
    label: String,
}

/// Each connect: TCP, CONNECT with a device's credentials, CONNACK, DISCONNECT.
pub async fn connect_rate(args: ConnectRate) -> anyhow::Result<()> {
    if args.seeded <= args.lowest || args.concurrency == 0 {
        bail!("--seeded must be above --lowest, and --concurrency at least 1");
    }
    let range = args.seeded - args.lowest;
    let connects = args.connects.min(range);
    let pids = named_pids(args.broker_pid, args.node_pid);
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + args.duration;
    let before = samples(&pids)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (next, refused, failed) = (next.clone(), refused.clone(), failed.clone());
        let (mqtt, from, lowest) = (args.mqtt, args.from, args.lowest);
        workers.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            while Instant::now() < deadline {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= connects {
                    break;
                }
                let device = seeded(lowest + spread(from + k, range));
                let at = Instant::now();
                match mqtt_connect(mqtt, &device.client_id, &device.username, &device.password)
                    .await
                {
                    Ok(Connack::Accepted(stream)) => {
                        micros.push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        mqtt_disconnect(stream).await;
                    }
                    Ok(Connack::Refused(_)) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            micros
        }));
    }
    let mut micros = Vec::new();
    for worker in workers {
        micros.extend(worker.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let accepted = micros.len() as u64;
    println!(
        "MQTT CONNECT, {label}: {accepted} accepted, {} refused, {} failed in {seconds:.2}s, {} in flight",
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        args.concurrency,
        label = args.label,
    );
    print_latency("connect → CONNACK", &percentiles(micros, seconds));
    print_use(&pids, &before, accepted)?;
    if refused.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) > 0 {
        bail!("some seeded devices could not connect");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct Fresh {
    /// The node's SIM port.
    #[arg(long, default_value = "127.0.0.1:11111")]
    sim: SocketAddr,
    #[arg(long)]
    mqtt: SocketAddr,
    /// Bench identities registered (psk-edge-bench --register-only): devices are
    /// created by SIMs 0..IDENTITIES in turn.
    #[arg(long, default_value_t = 1000)]
    identities: u64,
    /// Devices to create.
    #[arg(long, default_value_t = 1000)]
    devices: u64,
    /// Creations started per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Device ids are PREFIX-N; default: one no earlier run used.
    #[arg(long)]
    prefix: Option<String>,
    /// How long to keep trying a refused credential before counting it lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    give_up: Duration,
}

#[derive(serde::Deserialize)]
struct Credentials {
    cli: String,
    usr: String,
    pwd: String,
}

/// What one fresh device measured.
struct FreshOutcome {
    /// The SIM's request, new connection to answer.
    create_us: u32,
    /// The SIM holding its answer → the broker's CONNACK accepting it.
    accepted_us: u32,
    attempts: u32,
}

/// SIMs create devices at a steady rate; each answer's credentials go to the broker
/// at once, and again every 5 ms while it refuses them.
pub async fn fresh(args: Fresh) -> anyhow::Result<()> {
    if args.identities == 0 || args.concurrency == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--identities, --concurrency and --rate must be positive");
    }
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("fresh{now}")
    });
    let args = Arc::new(args);
    let next = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (args, next, prefix) = (args.clone(), next.clone(), prefix.clone());
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut lost = 0u64;
            let mut last_answer = Duration::ZERO;
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= args.devices {
                    break;
                }
                tokio::time::sleep_until(started + Duration::from_secs_f64(j as f64 / args.rate))
                    .await;
                match fresh_one(&args, &prefix, j).await {
                    Ok((outcome, answered)) => {
                        last_answer = last_answer.max(answered.duration_since(started.into_std()));
                        outcomes.push(outcome);
                    }
                    Err(e) => {
                        eprintln!("  device {prefix}-{j}: {e:#}");
                        lost += 1;
                    }
                }
            }
            (outcomes, lost, last_answer)
        }));
    }
    let (mut outcomes, mut lost, mut last) = (Vec::new(), 0, Duration::ZERO);
    for worker in workers {
        let (o, l, t) = worker.await?;
        outcomes.extend(o);
        lost += l;
        last = last.max(t);
    }
    let seconds = last.as_secs_f64().max(1e-9);
    let first_try = outcomes.iter().filter(|o| o.attempts == 1).count();
    println!(
        "fresh credentials: {} devices created in {seconds:.2}s ({:.0}/s), {} accepted at the broker on the first try, {lost} lost",
        outcomes.len(),
        outcomes.len() as f64 / seconds,
        first_try
    );
    print_latency(
        "SIM create request",
        &percentiles(outcomes.iter().map(|o| o.create_us).collect(), seconds),
    );
    print_latency(
        "answer → broker accepts",
        &percentiles(outcomes.iter().map(|o| o.accepted_us).collect(), seconds),
    );
    if lost > 0 {
        bail!("{lost} devices were not created or never accepted");
    }
    Ok(())
}

async fn fresh_one(
    args: &Fresh,
    prefix: &str,
    j: u64,
) -> anyhow::Result<(FreshOutcome, std::time::Instant)> {
    let sim = j % args.identities;
    let asked = Instant::now();
    let mut stream = sim_connect(args.sim, sim)
        .await
        .map_err(|e| anyhow::anyhow!("SIM handshake: {e:?}"))?;
    let request = format!(
        "POST /v1/dev/{prefix}-{j}?iccid={} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        iccid(sim)
    );
    let (status, body) = crate::exchange_body(&mut stream, request.as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("SIM request: {e:?}"))?;
    let answered = Instant::now();
    if status != 200 {
        bail!(
            "the SIM port answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let credentials: Credentials =
        serde_json::from_slice(&body).context("the answer is not {cli, usr, pwd}")?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Ok(Connack::Accepted(session)) = mqtt_connect(
            args.mqtt,
            &credentials.cli,
            &credentials.usr,
            &credentials.pwd,
        )
        .await
        {
            let accepted_us = micros(answered.elapsed());
            mqtt_disconnect(session).await;
            return Ok((
                FreshOutcome {
                    create_us: micros(answered.duration_since(asked)),
                    accepted_us,
                    attempts,
                },
                answered,
            ));
        }
        if answered.elapsed() > args.give_up {
            bail!("the broker still refused it after {attempts} tries");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum How {
    /// `POST /v3/accounts/A/devices/D/rotate`: a new password, the old one revoked.
    Rotate,
    /// `DELETE /v3/accounts/A/devices/D`.
    Delete,
}

#[derive(Debug, Args)]
pub struct Revoke {
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    admin: String,
    #[arg(long)]
    admin_ca: Option<PathBuf>,
    /// The node's data directory (operator.secret, admin certificate).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    mqtt: SocketAddr,
    #[arg(long, default_value = "bench")]
    account: String,
    /// Seeded devices to revoke, from index FROM on: each can be revoked once, so a
    /// later run takes a higher FROM.
    #[arg(long, default_value_t = 0)]
    from: u64,
    #[arg(long, default_value_t = 200)]
    devices: u64,
    #[arg(long, value_enum, default_value_t = How::Rotate)]
    how: How,
    /// How long a live session or the old password may outlive its revocation before
    /// the run counts it a failure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    give_up: Duration,
}

/// Per device: a live session with the seeded credentials, the revocation through
/// the admin API, then the time until the session ends and until a CONNECT with the
/// old password is refused, both counted from the admin API's answer.
pub async fn revoke(args: Revoke) -> anyhow::Result<()> {
    let client = AdminClient::new(&AdminArgs {
        admin_url: args.admin.clone(),
        admin_ca: args.admin_ca.clone(),
        data_dir: args.data_dir.clone(),
    })?;
    let (mut change, mut kicked, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0u64;
    let started = Instant::now();
    for i in args.from..args.from + args.devices {
        let device = seeded(i);
        let session = match mqtt_connect(
            args.mqtt,
            &device.client_id,
            &device.username,
            &device.password,
        )
        .await?
        {
            Connack::Accepted(session) => session,
            Connack::Refused(code) => {
                bail!(
                    "seeded device {i} was refused ({code:?}) before its revocation: was it seeded, or revoked by an earlier run?"
                )
            }
        };
        let ended = tokio::spawn(async move {
            let mut session = session;
            // A DISCONNECT from the broker or the socket closing: either ends it.
            let _ = read_packet(&mut session).await;
            Instant::now()
        });
        let path = format!("/v3/accounts/{}/devices/{}", args.account, device.device_id);
        let asked = Instant::now();
        let (status, body) = match args.how {
            How::Rotate => {
                client
                    .request("POST", &format!("{path}/rotate"), Bytes::new())
                    .await?
            }
            How::Delete => client.request("DELETE", &path, Bytes::new()).await?,
        };
        let answered = Instant::now();
        if !status.is_success() {
            bail!(
                "the admin API answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        change.push(micros(answered - asked));
        match tokio::time::timeout(args.give_up, ended).await {
            Ok(Ok(at)) => kicked.push(micros(at.saturating_duration_since(answered))),
            _ => {
                eprintln!(
                    "  device {i}: its live session outlived the revocation by {:?}",
                    args.give_up
                );
                failures += 1;
            }
        }
        loop {
            match mqtt_connect(
                args.mqtt,
                &device.client_id,
                &device.username,
                &device.password,
            )
            .await?
            {
                Connack::Refused(_) => {
                    refused.push(micros(answered.elapsed()));
                    break;
                }
                Connack::Accepted(session) => {
                    mqtt_disconnect(session).await;
                    if answered.elapsed() > args.give_up {
                        eprintln!("  device {i}: the old password still works");
                        failures += 1;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "revocations ({:?}): {} devices, {failures} failures",
        args.how, args.devices
    );
    print_latency("admin API call", &percentiles(change, seconds));
    print_latency("answer → session ended", &percentiles(kicked, seconds));
    print_latency("answer → old refused", &percentiles(refused, seconds));
    if failures > 0 {
        bail!("{failures} revocations were late");
    }
    Ok(())
}
