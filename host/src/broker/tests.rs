//! Tests against a real Mosquitto started per test on a free loopback port (skipped with a note when it is not installed).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use zeroize::Zeroizing;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

// The platform's default topic layout (the device profiles own it in production).
/// The topic a device publishes its data on.
fn sensor_topic(account: &str, device: &str) -> String {
    format!("{account}/sensor/device/{device}")
}

/// The topic the platform sends one device its commands on.
fn command_topic(account: &str, device: &str) -> String {
    format!("{account}/command/device/{device}")
}

/// The topic the platform sends every device of an account a command on.
fn broadcast_topic(account: &str) -> String {
    format!("{account}/command/device/all")
}

impl DeviceAccess {
    /// The standard access of a device: publish on its sensor topic, subscribe to its
    /// own command topic and to the account's broadcast topic.
    fn for_device(
        account: &str,
        device: &str,
        client_id: impl Into<String>,
        username: impl Into<String>,
        password: Zeroizing<String>,
    ) -> Self {
        DeviceAccess {
            client_id: client_id.into(),
            username: username.into(),
            password,
            publish: vec![sensor_topic(account, device)],
            subscribe: vec![command_topic(account, device), broadcast_topic(account)],
        }
    }
}

fn mosquitto_missing() -> bool {
    if ManagedMosquitto::available() {
        return false;
    }
    eprintln!(
        "skipped: mosquitto with the dynamic-security plugin is not installed (Debian package `mosquitto`)"
    );
    true
}

struct Env {
    tmp: TempDir,
    broker: ManagedMosquitto,
    dynsec: DynSec,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

async fn env() -> Env {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let broker = ManagedMosquitto::start(tmp.path()).await.unwrap();
    let dynsec = DynSec::connect(&broker.url());
    assert!(
        dynsec.wait_connected(Duration::from_secs(10)).await,
        "dynsec did not connect"
    );
    Env {
        tmp,
        broker,
        dynsec,
    }
}

fn device(account: &str, id: &str, password: &str) -> DeviceAccess {
    DeviceAccess::for_device(
        account,
        id,
        format!("cli-{account}-{id}"),
        format!("usr-{account}-{id}"),
        Zeroizing::new(password.to_owned()),
    )
}

#[path = "../../../tests/support/mqtt.rs"]
mod mqtt_client;
use mqtt_client::Mqtt;

async fn connect_device(port: u16, d: &DeviceAccess) -> Result<Mqtt, String> {
    Mqtt::connect(port, &d.client_id, &d.username, &d.password).await
}

fn refused(result: Result<Mqtt, String>) -> String {
    match result {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => e,
    }
}

/// A bare MQTT v5 client: rumqttc cannot show the reason code of Mosquitto's short DISCONNECT.
struct RawSession(TcpStream);

impl RawSession {
    async fn connect(
        port: u16,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> (Option<RawSession>, u8) {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u16).to_be_bytes());
            out.extend(s.as_bytes());
        }
        let mut body = Vec::new();
        string(&mut body, "MQTT");
        body.extend([5, 0x80 | 0x40 | 0x02]); // v5; username, password, clean start
        body.extend(60u16.to_be_bytes());
        body.push(0); // no properties
        string(&mut body, client_id);
        string(&mut body, username);
        string(&mut body, password);
        let mut packet = vec![0x10];
        encode_length(&mut packet, body.len());
        packet.extend(body);
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(&packet).await.unwrap();
        let (kind, body) = read_packet(&mut stream).await.expect("no CONNACK");
        assert_eq!(kind, 0x20, "expected CONNACK");
        let reason = body[1];
        ((reason == 0).then_some(RawSession(stream)), reason)
    }

    /// The DISCONNECT reason code the broker sends, or None if it just closes.
    async fn disconnect_reason(&mut self) -> Option<u8> {
        let (kind, body) = tokio::time::timeout(WAIT, read_packet(&mut self.0))
            .await
            .expect("still connected")?;
        assert_eq!(kind, 0xE0, "expected DISCONNECT");
        Some(body.first().copied().unwrap_or(0))
    }
}

fn encode_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

async fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let kind = stream.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await.ok()?;
        len |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((kind & 0xF0, body))
}

fn saved_file(env: &Env) -> String {
    std::fs::read_to_string(env.tmp.path().join("state/dynsec.json")).unwrap()
}

#[test]
fn broker_url_parses_and_hides_the_password() {
    let url: BrokerUrl = "mqtt://admin:s%40cret:x@broker.example:1884"
        .parse()
        .unwrap();
    assert_eq!(
        (url.host.as_str(), url.port, url.username.as_str()),
        ("broker.example", 1884, "admin")
    );
    assert_eq!(url.password.as_str(), "s@cret:x");
    assert_eq!(
        format!("{url:?}"),
        "BrokerUrl(mqtt://admin:***@broker.example:1884)"
    );
    assert_eq!(url.to_string(), "mqtt://admin:***@broker.example:1884");

    let url: BrokerUrl = "mqtt://a:p@w@[::1]".parse().unwrap();
    assert_eq!(
        (url.host.as_str(), url.port, url.password.as_str()),
        ("::1", 1883, "p@w")
    );
    for bad in [
        "http://a:b@h:1",
        "mqtt://h:1",
        "mqtt://a@h:1",
        "mqtt://a:b@h:0",
        "mqtt://a:b@h:x",
        "mqtt://a:%zz@h",
        "mqtt://:b@h",
    ] {
        assert!(bad.parse::<BrokerUrl>().is_err(), "{bad} parsed");
    }
}

#[test]
fn device_access_keeps_the_account_in_topics_and_refuses_wildcards() {
    let d = device("acct", "dev-1", "pw");
    assert_eq!(d.publish, ["acct/sensor/device/dev-1"]);
    assert_eq!(
        d.subscribe,
        ["acct/command/device/dev-1", "acct/command/device/all"]
    );
    assert!(d.validate().is_ok());
    assert!(!format!("{d:?}").contains("pw\""));
    for topic in ["acct/+/x", "acct/#", "", "$SYS/x"] {
        let mut bad = d.clone();
        bad.publish = vec![topic.into()];
        assert!(
            matches!(bad.validate(), Err(BrokerError::Invalid(_))),
            "{topic:?} accepted"
        );
    }
    let mut bad = d.clone();
    bad.password = Zeroizing::new(String::new());
    assert!(bad.validate().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reaches_exactly_its_own_topics() {
    if mosquitto_missing() {
        return;
    }
    let env = env().await;
    let port = env.broker.port();
    let (a, b) = (device("acct1", "d1", "pw-a"), device("acct1", "d2", "pw-b"));
    env.dynsec.provision(&a).await.unwrap();
    env.dynsec.provision(&b).await.unwrap();
    assert!(
        saved_file(&env).contains(&a.username),
        "the plugin did not save its file"
    );

    let admin = env.broker.url();
    let mut watcher = Mqtt::connect(port, "test-watcher", &admin.username, &admin.password)
        .await
        .unwrap();
    assert_eq!(
        watcher.subscribe("acct1/sensor/device/+").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    let mut dev = connect_device(port, &a).await.unwrap();
    assert_eq!(
        dev.publish("acct1/sensor/device/d1", "21.5").await,
        PubAckReason::Success
    );
    assert_eq!(watcher.received("acct1/sensor/device/d1").await, "21.5");
    assert_eq!(
        dev.publish("acct1/sensor/device/d2", "spoof").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        dev.publish("elsewhere/topic", "x").await,
        PubAckReason::NotAuthorized
    );

    assert_eq!(
        dev.subscribe("acct1/command/device/d1").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        dev.subscribe("acct1/command/device/all").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        dev.subscribe("acct1/command/device/d2").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(
        dev.subscribe("acct1/command/device/+").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(dev.subscribe("#").await, SubscribeReasonCode::NotAuthorized);

    // The platform publishes for devices and sends them commands.
    env.dynsec
        .publish(
            "acct1/sensor/device/d2",
            Bytes::from_static(b"via-platform"),
        )
        .await
        .unwrap();
    assert_eq!(
        watcher.received("acct1/sensor/device/d2").await,
        "via-platform"
    );
    env.dynsec
        .publish("acct1/command/device/d1", Bytes::from_static(b"reboot"))
        .await
        .unwrap();
    assert_eq!(dev.received("acct1/command/device/d1").await, "reboot");
    env.dynsec
        .publish("acct1/command/device/all", Bytes::from_static(b"all"))
        .await
        .unwrap();
    assert_eq!(dev.received("acct1/command/device/all").await, "all");
    assert!(matches!(
        env.dynsec.publish("acct1/#", Bytes::new()).await,
        Err(BrokerError::Invalid(_))
    ));
    // Outside the platform role: the broker itself says no.
    assert!(matches!(
        env.dynsec.publish("other/topic", Bytes::new()).await,
        Err(BrokerError::Refused(_))
    ));

    let wrong_password = refused(Mqtt::connect(port, &a.client_id, &a.username, "nope").await);
    println!("wrong password: {wrong_password}");
    assert!(
        wrong_password.contains("BadUserNamePassword") || wrong_password.contains("NotAuthorized")
    );
    let wrong_client_id =
        refused(Mqtt::connect(port, "someone-else", &a.username, &a.password).await);
    println!("wrong client id: {wrong_client_id}");
    let unknown = refused(Mqtt::connect(port, "x", "nobody", "nope").await);
    assert!(unknown.contains("BadUserNamePassword") || unknown.contains("NotAuthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_device_id_in_two_accounts_stays_apart() {
    if mosquitto_missing() {
        return;
    }
    let env = env().await;
    let port = env.broker.port();
    let (one, two) = (
        device("acct1", "meter", "pw-1"),
        device("acct2", "meter", "pw-2"),
    );
    env.dynsec.provision(&one).await.unwrap();
    env.dynsec.provision(&two).await.unwrap();

    let mut c1 = connect_device(port, &one).await.unwrap();
    let mut c2 = connect_device(port, &two).await.unwrap();
    assert_eq!(
        c1.publish("acct1/sensor/device/meter", "1").await,
        PubAckReason::Success
    );
    assert_eq!(
        c2.publish("acct2/sensor/device/meter", "2").await,
        PubAckReason::Success
    );
    assert_eq!(
        c1.publish("acct2/sensor/device/meter", "x").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        c2.publish("acct1/sensor/device/meter", "x").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        c1.subscribe("acct2/command/device/meter").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(
        c1.subscribe("acct2/command/device/all").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(
        c2.subscribe("acct2/command/device/all").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    // Each account's broadcast reaches only that account.
    assert_eq!(
        c1.subscribe("acct1/command/device/all").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    env.dynsec
        .publish("acct2/command/device/all", Bytes::from_static(b"two"))
        .await
        .unwrap();
    env.dynsec
        .publish("acct1/command/device/all", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(c2.received("acct2/command/device/all").await, "two");
    assert_eq!(c1.received("acct1/command/device/all").await, "one");

    let mut listed = env.dynsec.managed_clients().await.unwrap();
    listed.sort();
    assert_eq!(listed, [one.username.clone(), two.username.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_disconnects_the_old_session() {
    if mosquitto_missing() {
        return;
    }
    let env = env().await;
    let port = env.broker.port();
    let old = device("acct1", "d1", "old-password");
    env.dynsec.provision(&old).await.unwrap();
    // Re-provisioning unchanged is fine (idempotent).
    env.dynsec.provision(&old).await.unwrap();

    let (raw, code) = RawSession::connect(port, &old.client_id, &old.username, &old.password).await;
    assert_eq!(code, 0);
    let mut raw = raw.unwrap();

    let mut new = old.clone();
    new.password = Zeroizing::new("new-password".into());
    env.dynsec.provision(&new).await.unwrap();
    let reason = raw.disconnect_reason().await;
    println!("live session with the old password: DISCONNECT reason {reason:02x?}");
    assert_eq!(
        reason,
        Some(0x98),
        "expected DISCONNECT 0x98 (administrative action)"
    );

    let (_, code) = RawSession::connect(port, &old.client_id, &old.username, &old.password).await;
    println!("old password on a new connection: CONNACK reason 0x{code:02x}");
    assert!(code == 0x86 || code == 0x87);
    let mut session = connect_device(port, &new).await.unwrap();
    assert_eq!(
        session.publish("acct1/sensor/device/d1", "ok").await,
        PubAckReason::Success
    );

    // What rumqttc makes of the same kick.
    env.dynsec.provision(&new).await.unwrap();
    println!("rumqttc sees the kick as: {}", session.ended().await);
    assert_eq!(
        env.dynsec.managed_clients().await.unwrap(),
        [new.username.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_again_replaces_the_grants() {
    if mosquitto_missing() {
        return;
    }
    let env = env().await;
    let port = env.broker.port();
    let mut d = device("acct", "d1", "pw");
    env.dynsec.provision(&d).await.unwrap();
    d.publish = vec!["acct/sensor/device/d1-moved".into()];
    d.client_id = "cli-moved".into();
    env.dynsec.provision(&d).await.unwrap();
    let mut session = connect_device(port, &d).await.unwrap();
    assert_eq!(
        session.publish("acct/sensor/device/d1-moved", "x").await,
        PubAckReason::Success
    );
    assert_eq!(
        session.publish("acct/sensor/device/d1", "x").await,
        PubAckReason::NotAuthorized
    );
    assert!(
        Mqtt::connect(port, "cli-acct-d1", &d.username, "pw")
            .await
            .is_err()
    );

    // A device named "all": its own command topic is the broadcast topic.
    let all = device("acct", "all", "pw");
    env.dynsec.provision(&all).await.unwrap();
    let mut session = connect_device(port, &all).await.unwrap();
    assert_eq!(
        session.subscribe("acct/command/device/all").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_revokes_and_only_managed_clients_are_listed() {
    if mosquitto_missing() {
        return;
    }
    let env = env().await;
    let port = env.broker.port();
    let devices: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| device("acct", id, "pw"))
        .collect();
    for d in &devices {
        env.dynsec.provision(d).await.unwrap();
    }
    let (raw, _) =
        RawSession::connect(port, &devices[1].client_id, &devices[1].username, "pw").await;
    let mut live = raw.unwrap();

    env.dynsec.remove(&devices[1].username).await.unwrap();
    let reason = live.disconnect_reason().await;
    println!("live session of a removed client: DISCONNECT reason {reason:02x?}");
    assert_eq!(reason, Some(0x98));
    let (_, code) =
        RawSession::connect(port, &devices[1].client_id, &devices[1].username, "pw").await;
    assert!(
        code == 0x86 || code == 0x87,
        "a removed client connected (0x{code:02x})"
    );
    assert!(!saved_file(&env).contains(&format!("psk-edge:{}", devices[1].username)));
    // Absent is fine, twice or never provisioned.
    env.dynsec.remove(&devices[1].username).await.unwrap();
    env.dynsec.remove("never-provisioned").await.unwrap();

    // A client someone else created: neither listed nor touched.
    let created = env
        .dynsec
        .raw_commands(vec![
            serde_json::json!({"command": "createClient", "username": "foreign", "password": "x"}),
        ])
        .await
        .unwrap();
    assert!(created[0]["error"].is_null(), "{created:?}");
    let mut listed = env.dynsec.managed_clients().await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [devices[0].username.clone(), devices[2].username.clone()]
    );
    assert!(matches!(
        env.dynsec.remove("foreign").await,
        Err(BrokerError::Refused(_))
    ));
    let mut taken = device("acct", "f", "pw");
    taken.username = "foreign".into();
    assert!(matches!(
        env.dynsec.provision(&taken).await,
        Err(BrokerError::Refused(_))
    ));
    let admin = env.broker.url().username;
    assert!(matches!(
        env.dynsec.remove(&admin).await,
        Err(BrokerError::Invalid(_))
    ));
    taken.username = admin.clone();
    assert!(matches!(
        env.dynsec.provision(&taken).await,
        Err(BrokerError::Invalid(_))
    ));
    assert!(
        Mqtt::connect(
            port,
            "admin-still-works",
            &admin,
            &env.broker.url().password
        )
        .await
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_fails_fast_and_recovers() {
    if mosquitto_missing() {
        return;
    }
    let Env {
        tmp,
        broker,
        dynsec,
    } = env().await;
    let port = broker.port();
    let before = device("acct", "before", "pw");
    dynsec.provision(&before).await.unwrap();
    let mut connections = dynsec.connections();
    let count = *connections.borrow_and_update();
    // Setting up access on a fresh broker must not kick the admin's own connection.
    assert_eq!(count, 1);

    broker.stop().await;
    let during = device("acct", "during", "pw");
    for _ in 0..3 {
        let started = Instant::now();
        let result = dynsec.provision(&during).await;
        let took = started.elapsed();
        println!("provision during the outage: {result:?} after {took:?}");
        assert!(
            matches!(result, Err(BrokerError::Unavailable(_))),
            "{result:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        let started = Instant::now();
        assert!(matches!(
            dynsec.managed_clients().await,
            Err(BrokerError::Unavailable(_))
        ));
        assert!(matches!(
            dynsec.publish("acct/sensor/device/x", Bytes::new()).await,
            Err(BrokerError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let broker = ManagedMosquitto::start(tmp.path()).await.unwrap();
    assert_eq!(
        broker.port(),
        port,
        "the port kept in the directory was not reused"
    );
    tokio::time::timeout(Duration::from_secs(10), connections.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*connections.borrow() > count);
    dynsec.provision(&during).await.unwrap();
    let mut listed = dynsec.managed_clients().await.unwrap();
    listed.sort();
    assert_eq!(listed, [before.username.clone(), during.username.clone()]);
    // What was provisioned before the outage survived it.
    assert!(connect_device(port, &before).await.is_ok());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_state_is_writable_by_the_user_it_runs_as() {
    if mosquitto_missing() {
        return;
    }
    // A parent closed to other users (like a 0700 data directory).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("private/broker");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tmp.path().join("private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    for dir in [tmp.path().to_owned(), dir] {
        let broker = ManagedMosquitto::start(&dir).await.unwrap();
        let dynsec = DynSec::connect(&broker.url());
        assert!(dynsec.wait_connected(Duration::from_secs(10)).await);
        let d = device("acct", "writable", "pw");
        dynsec.provision(&d).await.unwrap();
        let saved = std::fs::read_to_string(dir.join("state/dynsec.json")).unwrap();
        assert!(
            saved.contains(&d.username),
            "the plugin could not save its file under {}",
            dir.display()
        );
        let secret = std::fs::metadata(dir.join("admin.secret")).unwrap();
        assert_eq!(secret.permissions().mode() & 0o777, 0o600);
        use std::os::unix::fs::MetadataExt;
        let state = std::fs::metadata(dir.join("state")).unwrap();
        println!("{}: state/ belongs to uid {}", dir.display(), state.uid());
        broker.stop().await;
    }
}

/// Writes `count` devices straight into a stopped broker's dynsec.json, shaped as
/// `provision` makes them (sharing the admin's password hash: only the size matters).
fn seed_devices(dynsec_file: &std::path::Path, count: usize) {
    use serde_json::{Value, json};
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dynsec_file).unwrap()).unwrap();
    let admin = config["clients"][0].clone();
    let clients = config["clients"].as_array_mut().unwrap();
    let mut roles = Vec::with_capacity(count);
    for i in 0..count {
        let d = device("seed", &format!("d{i}"), "unused");
        let role = format!("psk-edge:{}", d.username);
        clients.push(json!({
            "username": d.username, "clientid": d.client_id, "textname": "psk-edge device",
            "password": admin["password"], "salt": admin["salt"], "iterations": admin["iterations"],
            "roles": [{"rolename": role}],
        }));
        let mut acls =
            vec![json!({"acltype": "publishClientSend", "topic": d.publish[0], "allow": true})];
        for topic in &d.subscribe {
            acls.push(json!({"acltype": "subscribeLiteral", "topic": topic, "allow": true}));
            acls.push(json!({"acltype": "publishClientReceive", "topic": topic, "allow": true}));
        }
        roles.push(json!({"rolename": role, "acls": acls}));
    }
    config["roles"].as_array_mut().unwrap().extend(roles);
    std::fs::write(dynsec_file, serde_json::to_vec(&config).unwrap()).unwrap();
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Prints how provisioning and listing scale with the number of devices the plugin
/// holds (it rewrites its whole file on every change). Run with
/// `cargo test --release --lib broker::tests::measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, takes a minute"]
async fn measure_provisioning_at_scale() {
    if mosquitto_missing() {
        return;
    }
    init_tracing();
    const NEW: usize = 100;
    for total in [1_000, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let broker = ManagedMosquitto::start(tmp.path()).await.unwrap();
        let dynsec = DynSec::connect(&broker.url());
        assert!(dynsec.wait_connected(Duration::from_secs(10)).await);
        broker.stop().await;
        let file = tmp.path().join("state/dynsec.json");
        seed_devices(&file, total - NEW);

        let started = Instant::now();
        let broker = ManagedMosquitto::start(tmp.path()).await.unwrap();
        let load = started.elapsed();
        assert!(dynsec.wait_connected(Duration::from_secs(30)).await);

        let mut times = Vec::with_capacity(NEW);
        let mut devices = Vec::with_capacity(NEW);
        for i in 0..NEW {
            let d = device("new", &format!("d{i}"), "pw");
            let started = Instant::now();
            dynsec.provision(&d).await.unwrap();
            times.push(started.elapsed());
            devices.push(d);
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / NEW as u32;

        let mut updates = Duration::ZERO;
        for d in devices.iter_mut().take(20) {
            d.password = Zeroizing::new("rotated".into());
            let started = Instant::now();
            dynsec.provision(d).await.unwrap();
            updates += started.elapsed();
        }

        let started = Instant::now();
        let managed = dynsec.managed_clients().await.unwrap();
        let list = started.elapsed();
        assert_eq!(managed.len(), total);
        let started = Instant::now();
        let verbose = dynsec
            .raw_commands(vec![
                serde_json::json!({"command": "listClients", "verbose": true, "count": -1}),
            ])
            .await
            .unwrap();
        let verbose_list = started.elapsed();
        assert!(verbose[0]["error"].is_null());

        let size = std::fs::metadata(&file).unwrap().len();
        println!(
            "{total} devices (dynsec.json {:.1} MB, broker start {}): provision new mean {} / median {} / max {}; \
             update (password rotation) mean {}; managed_clients {}; verbose listClients {}",
            size as f64 / 1e6,
            millis(load),
            millis(mean),
            millis(times[NEW / 2]),
            millis(times[NEW - 1]),
            millis(updates / 20),
            millis(list),
            millis(verbose_list),
        );
        broker.stop().await;
    }
}
