//! Credentials that work: a real Mosquitto, per-device topic policy, expiration strategies, profiles, config, data.

mod support;

use std::time::{Duration, Instant};

use psk_edge::broker::ManagedMosquitto;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use support::mqtt::Mqtt;
use support::*;

/// A broker the test owns (so it can stop it), handed to the node with --mqtt-url.
struct Setup {
    node: Node,
    broker: ManagedMosquitto,
    mqtt_url: String,
    _dir: tempfile::TempDir,
}

/// A node whose first reconcile with the broker is done, so the broker is reachable.
async fn node_for(data_dir: &std::path::Path, mqtt_url: &str) -> Node {
    let node = NodeBuilder::new(data_dir)
        .mqtt(&["--mqtt-url", mqtt_url])
        .start()
        .await;
    node.wait_log(|l| l.contains("broker reconciled")).await;
    node
}

async fn with_broker() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let broker = ManagedMosquitto::start(&dir.path().join("broker"))
        .await
        .unwrap();
    let url = broker.url();
    let mqtt_url = format!(
        "mqtt://{}:{}@127.0.0.1:{}",
        url.username, *url.password, url.port
    );
    let node = node_for(&dir.path().join("node"), &mqtt_url).await;
    Setup {
        node,
        broker,
        mqtt_url,
        _dir: dir,
    }
}

impl Setup {
    /// Stops the node and starts it again on the same data and broker.
    async fn restart(&mut self) {
        let data_dir = self.node.data_dir.clone();
        let fresh = node_for(&data_dir, &self.mqtt_url).await;
        let old = std::mem::replace(&mut self.node, fresh);
        old.stop().await;
    }
}

/// Provisioning follows the answer by milliseconds (or a reconcile): retry briefly.
async fn device_session(port: u16, c: &Creds) -> Mqtt {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Mqtt::connect(port, &c.cli, &c.usr, &c.pwd).await {
            Ok(session) => return session,
            Err(e) if Instant::now() > deadline => panic!("{c:?} never got in: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn refused(port: u16, c: &Creds) {
    assert!(
        Mqtt::connect(port, &c.cli, &c.usr, &c.pwd).await.is_err(),
        "{c:?} still works"
    );
}

async fn sim(node: &Node, request: &str) -> (u16, String) {
    let run = demo(node, CCM, &closing(request)).await;
    responses(&run.stdout)
        .into_iter()
        .next()
        .unwrap_or((0, String::new()))
}

async fn sim_creds(node: &Node, request: &str) -> Creds {
    let (code, body) = sim(node, request).await;
    assert_eq!(code, 200, "{body}");
    creds(&body)
}

fn config_get(device: &str, name: &str) -> String {
    get(device, DEMO_ICCID).replacen(" HTTP/1.1", &format!("&config={name} HTTP/1.1"), 1)
}

fn with_profile(device: &str, profile: &str) -> String {
    post(device, DEMO_ICCID).replacen(" HTTP/1.1", &format!("&profile={profile} HTTP/1.1"), 1)
}

async fn put_profile(node: &Node, name: &str, body: &str) {
    let (code, answer) = node
        .admin(
            "PUT",
            &format!("/v3/accounts/demo/profiles/{name}"),
            Some(body),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
}

#[tokio::test]
async fn issued_credentials_reach_exactly_the_devices_topics() {
    let s = with_broker().await;
    let port = s.broker.port();
    let mine = sim_creds(&s.node, &post("dev-1", DEMO_ICCID)).await;
    let mut session = device_session(port, &mine).await;
    assert_eq!(
        session.publish("demo/sensor/device/dev-1", "{}").await,
        PubAckReason::Success
    );
    for topic in [
        "demo/sensor/device/dev-2",
        "acme/sensor/device/dev-1",
        "demo/command/device/dev-1",
    ] {
        assert_eq!(
            session.publish(topic, "{}").await,
            PubAckReason::NotAuthorized,
            "{topic}"
        );
    }
    for filter in ["demo/command/device/dev-1", "demo/command/device/all"] {
        assert_eq!(
            session.subscribe(filter).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
    }
    for filter in [
        "demo/command/device/dev-2",
        "demo/sensor/device/dev-1",
        "#",
        "demo/+/device/dev-1",
    ] {
        assert_eq!(
            session.subscribe(filter).await,
            SubscribeReasonCode::NotAuthorized,
            "{filter}"
        );
    }

    // The same device id in another account is another client with its own topics.
    let acme_iccid = "8988000000000000042";
    let acme_key = [42u8; 16];
    assert_eq!(s.node.add_psk(acme_iccid, &acme_key, "acme").await, "1");
    let run = openssl(
        s.node.sim_port(),
        acme_iccid,
        &hex::encode(acme_key),
        GCM,
        &[],
        &closing(&post("dev-1", acme_iccid)),
    )
    .await;
    let theirs = creds(&responses(&run.stdout)[0].1);
    assert_ne!((&theirs.cli, &theirs.usr), (&mine.cli, &mine.usr));
    let mut other = device_session(port, &theirs).await;
    assert_eq!(
        other.publish("acme/sensor/device/dev-1", "{}").await,
        PubAckReason::Success
    );
    assert_eq!(
        other.publish("demo/sensor/device/dev-1", "{}").await,
        PubAckReason::NotAuthorized
    );
    // ...and both stay connected side by side.
    assert_eq!(
        session.publish("demo/sensor/device/dev-1", "{}").await,
        PubAckReason::Success
    );
}

#[tokio::test]
async fn every_expiration_strategy_end_to_end() {
    let mut s = with_broker().await;
    let port = s.broker.port();
    put_profile(
        &s.node,
        "every",
        r#"{"expiration":{"strategy":"AT-EVERY-REQUEST"}}"#,
    )
    .await;
    put_profile(
        &s.node,
        "after2",
        r#"{"expiration":{"strategy":"AFTER-X-REQUESTS","requests":2}}"#,
    )
    .await;
    put_profile(
        &s.node,
        "timed",
        r#"{"expiration":{"strategy":"TIME-BASED","seconds":1}}"#,
    )
    .await;

    // AT-EVERY-REQUEST: each GET a fresh password; the previous one stops working.
    let a = sim_creds(&s.node, &with_profile("e-1", "every")).await;
    let b = sim_creds(&s.node, &get("e-1", DEMO_ICCID)).await;
    let c = sim_creds(&s.node, &get("e-1", DEMO_ICCID)).await;
    assert!(a.pwd != b.pwd && b.pwd != c.pwd && (a.cli == c.cli && a.usr == c.usr));
    device_session(port, &c).await;
    refused(port, &b).await;
    refused(port, &a).await;

    // AFTER-X-REQUESTS 2: a password is handed out twice, then replaced. A repeated POST does not count.
    let a = sim_creds(&s.node, &with_profile("x-1", "after2")).await;
    assert_eq!(sim_creds(&s.node, &with_profile("x-1", "after2")).await, a);
    assert_eq!(sim_creds(&s.node, &get("x-1", DEMO_ICCID)).await.pwd, a.pwd);
    // The count survives a restart.
    s.restart().await;
    assert_eq!(sim_creds(&s.node, &get("x-1", DEMO_ICCID)).await.pwd, a.pwd);
    let b = sim_creds(&s.node, &get("x-1", DEMO_ICCID)).await;
    assert_ne!(b.pwd, a.pwd);
    assert_eq!(sim_creds(&s.node, &get("x-1", DEMO_ICCID)).await.pwd, b.pwd);
    device_session(port, &b).await;
    refused(port, &a).await;

    // TIME-BASED 1 s: the same password until it is older than that.
    let a = sim_creds(&s.node, &with_profile("t-1", "timed")).await;
    assert_eq!(sim_creds(&s.node, &get("t-1", DEMO_ICCID)).await.pwd, a.pwd);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let b = sim_creds(&s.node, &get("t-1", DEMO_ICCID)).await;
    assert_ne!(b.pwd, a.pwd);
    device_session(port, &b).await;
    refused(port, &a).await;

    // ON-DEMAND (the default): the same password until someone asks, here through the CLI.
    let a = sim_creds(&s.node, &post("o-1", DEMO_ICCID)).await;
    assert_eq!(sim_creds(&s.node, &get("o-1", DEMO_ICCID)).await, a);
    let mut live = device_session(port, &a).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_psk-edge"))
        .args(["device", "rotate", "--account", "demo", "--device", "o-1"])
        .arg("--admin-url")
        .arg(format!(
            "https://127.0.0.1:{}",
            s.node.admin.rsplit(':').next().unwrap()
        ))
        .arg("--data-dir")
        .arg(&s.node.data_dir)
        .env("PSK_EDGE_OPERATOR_KEY", OPERATOR_KEY)
        .env("PSK_EDGE_OPERATOR_SECRET", OPERATOR_SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    live.ended().await;
    refused(port, &a).await;
    let b = sim_creds(&s.node, &get("o-1", DEMO_ICCID)).await;
    assert_ne!(b.pwd, a.pwd);
    device_session(port, &b).await;

    // The account's own strategy applies to devices without a profile that says otherwise.
    let body = r#"{"strategy":"AT-EVERY-REQUEST"}"#;
    assert_eq!(
        s.node
            .admin("PUT", "/v3/accounts/demo/expiration", Some(body))
            .await
            .0,
        200
    );
    let c = sim_creds(&s.node, &get("o-1", DEMO_ICCID)).await;
    assert_ne!(c.pwd, b.pwd);
}

#[tokio::test]
async fn an_answer_not_sent_rotates_nothing() {
    let s = with_broker().await;
    let port = s.broker.port();
    let blob = "x".repeat(150);
    let profile = format!(
        r#"{{"config":{{"blob":"{blob}"}},"expiration":{{"strategy":"AT-EVERY-REQUEST"}}}}"#
    );
    put_profile(&s.node, "big", &profile).await;
    let a = sim_creds(&s.node, &with_profile("big-1", "big")).await;
    device_session(port, &a).await;

    // Credentials plus a 150-byte config value are over 250 bytes: not sent, not rotated.
    assert_eq!(
        sim(&s.node, &config_get("big-1", "blob")).await,
        (0, String::new())
    );
    let warning = s
        .node
        .wait_log(|l| l.contains("WARN") && l.contains("over the SIM message limit"))
        .await;
    assert!(warning.contains("GET /v1/dev/big-1"), "{warning}");
    device_session(port, &a).await;

    let b = sim_creds(&s.node, &get("big-1", DEMO_ICCID)).await;
    assert_ne!(a.pwd, b.pwd);
    device_session(port, &b).await;
    refused(port, &a).await;
}

#[tokio::test]
async fn profiles_and_config_shape_the_device() {
    let s = with_broker().await;
    let port = s.broker.port();
    let meter = r#"{"publish":["meters/{DEVICE_ID}/reading"],"subscribe":["meters/{DEVICE_ID}/set"],"config":{"broker-port":8883}}"#;
    put_profile(&s.node, "meter", meter).await;
    let (code, list) = s
        .node
        .admin("GET", "/v3/accounts/demo/profiles", None)
        .await;
    assert_eq!(code, 200);
    assert!(list.contains("meters/{DEVICE_ID}/reading"), "{list}");

    let c = sim_creds(&s.node, &with_profile("m-1", "meter")).await;
    let mut session = device_session(port, &c).await;
    assert_eq!(
        session.publish("demo/meters/m-1/reading", "1").await,
        PubAckReason::Success
    );
    assert_eq!(
        session.publish("demo/sensor/device/m-1", "1").await,
        PubAckReason::NotAuthorized
    );

    let (code, body) = sim(&s.node, &config_get("m-1", "broker-port")).await;
    assert_eq!(code, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["config"], serde_json::json!({"broker-port": 8883}));
    assert_eq!(answer["pwd"], c.pwd);
    assert_eq!(sim(&s.node, &config_get("m-1", "nope")).await.0, 404);
    assert_eq!(sim(&s.node, &with_profile("m-2", "nope")).await.0, 404);

    // Config set per device through the admin API.
    let path = "/v3/accounts/demo/devices/m-1/config/broker-host";
    assert_eq!(
        s.node
            .admin("PUT", path, Some(r#""mqtt.example.com""#))
            .await
            .0,
        200
    );
    let (_, body) = sim(&s.node, &config_get("m-1", "broker-host")).await;
    assert!(
        body.ends_with(r#","config":{"broker-host":"mqtt.example.com"}}"#),
        "{body}"
    );
    let (code, all) = s
        .node
        .admin("GET", "/v3/accounts/demo/devices/m-1/config", None)
        .await;
    assert_eq!(code, 200);
    assert!(all.contains("broker-host") && all.contains("8883"), "{all}");
    assert_eq!(s.node.admin("DELETE", path, None).await.0, 200);
    assert_eq!(sim(&s.node, &config_get("m-1", "broker-host")).await.0, 404);
    assert_eq!(
        s.node
            .admin("GET", "/v3/accounts/nobody/profiles", None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn data_written_for_a_device_reaches_a_subscriber() {
    let s = with_broker().await;
    let url = s.broker.url();
    let mut watcher = Mqtt::connect(s.broker.port(), "watcher", &url.username, &url.password)
        .await
        .unwrap();
    assert!(matches!(
        watcher.subscribe("demo/sensor/device/d-1").await,
        SubscribeReasonCode::Success(_)
    ));
    sim_creds(&s.node, &post("d-1", DEMO_ICCID)).await;
    let body = r#"{"t":21.5}"#;
    let request = format!(
        "POST /v1/dev/d-1/data?iccid={DEMO_ICCID} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let run = demo(&s.node, CCM, &request).await;
    assert_eq!(
        responses(&run.stdout),
        vec![(200, "1".to_owned())],
        "{}",
        run.stderr
    );
    assert_eq!(
        &watcher.received("demo/sensor/device/d-1").await[..],
        body.as_bytes()
    );
    // Not for a device of another SIM, nor for one that does not exist.
    let request = request.replace("/d-1/", "/ghost/");
    assert_eq!(
        responses(&demo(&s.node, CCM, &request).await.stdout)[0].0,
        404
    );
}

#[tokio::test]
async fn a_device_created_while_the_broker_is_down_works_once_it_is_back() {
    let s = with_broker().await;
    let before = sim_creds(&s.node, &post("early", DEMO_ICCID)).await;
    device_session(s.broker.port(), &before).await;
    let dir = s.broker.dir().to_path_buf();
    let port = s.broker.port();
    s.broker.stop().await;

    let started = Instant::now();
    let late = sim_creds(&s.node, &post("late", DEMO_ICCID)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the SIM waited for a dead broker"
    );

    let broker = ManagedMosquitto::start(&dir).await.unwrap();
    assert_eq!(broker.port(), port);
    device_session(port, &late).await;
    device_session(port, &before).await;
    s.node
        .wait_log(|l| l.contains("broker reconciled") && l.contains("provisioned=1"))
        .await;
}

#[tokio::test]
async fn up_runs_its_own_broker_or_says_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    // A managed broker is a single node's: nodes of a shared database share one.
    let node = NodeBuilder::new(dir.path())
        .sqlite()
        .mqtt(&[])
        .start()
        .await;
    let port: u16 = node.mqtt.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 1883);
    let c = sim_creds(&node, &post("own", DEMO_ICCID)).await;
    device_session(port, &c).await;
    node.stop().await;
    // The managed broker stops with `up`.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).start().await;
    assert_eq!(node.mqtt, "none");
    let said = node
        .log()
        .lines()
        .filter(|l| l.contains("not provisioned at any MQTT broker"))
        .count();
    assert_eq!(said, 1);
}
