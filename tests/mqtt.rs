//! Credentials that work: a real Mosquitto whose psk-edge plugin asks the node, per-device and per-application topic rules, every revocation path, data, brokers of one's own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use support::broker::{TestBroker, free_port};
use support::mqtt::Mqtt;
use support::*;

/// How soon a revoked credential must stop working and its session end (the issue's bound).
const REVOKED_WITHIN: Duration = Duration::from_secs(1);

/// A node with its managed broker (`up` starts it with the plugin).
async fn with_managed_broker(dir: &std::path::Path) -> (Node, u16) {
    // Without Mosquitto or the plugin `up` runs broker-less and says so; these tests
    // must fail then, and say why.
    support::broker::mosquitto();
    support::broker::plugin();
    let node = NodeBuilder::new(dir).sqlite().mqtt(&[]).start().await;
    let port: u16 = node.mqtt.rsplit(':').next().unwrap().parse().unwrap();
    let saved = std::fs::read_to_string(dir.join("mosquitto/port")).unwrap();
    assert_eq!(saved.trim().parse::<u16>().unwrap(), port);
    node.wait_log(|l| l.contains("connected to the broker as the platform"))
        .await;
    (node, port)
}

/// A node whose broker the test owns (so it can stop it), started with README's lines.
async fn with_own_broker(dir: &std::path::Path) -> (Node, TestBroker) {
    let port = free_port();
    let node = NodeBuilder::new(&dir.join("node"))
        .mqtt(&["--mqtt-url", &format!("mqtt://127.0.0.1:{port}")])
        .start()
        .await;
    let broker = TestBroker::start(
        &dir.join("broker"),
        port,
        &node.broker_endpoint,
        &node.data_dir.join("broker.key"),
    )
    .await;
    node.wait_log(|l| l.contains("connected to the broker as the platform"))
        .await;
    (node, broker)
}

/// A credential just handed out works at once: no retry loop.
async fn session(port: u16, c: &Creds) -> Mqtt {
    Mqtt::connect(port, &c.cli, &c.usr, &c.pwd)
        .await
        .unwrap_or_else(|e| panic!("{c:?} refused: {e}"))
}

async fn refused(port: u16, c: &Creds) {
    assert!(
        Mqtt::connect(port, &c.cli, &c.usr, &c.pwd).await.is_err(),
        "{c:?} still works"
    );
}

/// The live session ends, and a new connection with the same credentials is refused,
/// both within [`REVOKED_WITHIN`] of `since`.
async fn revoked(port: u16, live: &mut Mqtt, c: &Creds, since: Instant) {
    let ended = tokio::time::timeout_at((since + REVOKED_WITHIN).into(), live.ended()).await;
    assert!(
        ended.is_ok(),
        "the live session of {c:?} was not disconnected within {REVOKED_WITHIN:?}"
    );
    refused(port, c).await;
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

/// `psk-edge ARGS…` against the node's admin port as the operator; stdout on success.
async fn cli(node: &Node, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_psk-edge"))
        .args(args)
        .arg("--admin-url")
        .arg(format!(
            "https://127.0.0.1:{}",
            node.admin.rsplit(':').next().unwrap()
        ))
        .arg("--data-dir")
        .arg(&node.data_dir)
        .env("PSK_EDGE_OPERATOR_KEY", OPERATOR_KEY)
        .env("PSK_EDGE_OPERATOR_SECRET", OPERATOR_SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "psk-edge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn new_app(node: &Node, account: &str, name: &str) -> Creds {
    let (code, body) = node
        .admin(
            "POST",
            &format!("/v3/accounts/{account}/apps"),
            Some(&format!(r#"{{"name":"{name}"}}"#)),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    creds(&body)
}

fn data_request(path: &str, body: &str) -> String {
    format!(
        "POST {path}?iccid={DEMO_ICCID} HTTP/1.1\r\nHost: pod.iot.platform\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Every file under `dir`, for checks that a secret is not in any of them.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

#[tokio::test]
async fn issued_credentials_reach_exactly_the_devices_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    let mine = sim_creds(&node, &post("dev-1", DEMO_ICCID)).await;
    let mut live = session(port, &mine).await;
    assert_eq!(
        live.publish("demo/sensor/device/dev-1", "{}").await,
        PubAckReason::Success
    );
    for topic in [
        "demo/sensor/device/dev-2",
        "acme/sensor/device/dev-1",
        "demo/command/device/dev-1",
        "$CONTROL/psk-edge/v1",
        "$SYS/x",
    ] {
        assert_eq!(
            live.publish(topic, "{}").await,
            PubAckReason::NotAuthorized,
            "{topic}"
        );
    }
    for filter in ["demo/command/device/dev-1", "demo/command/device/all"] {
        assert_eq!(
            live.subscribe(filter).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
    }
    for filter in [
        "demo/command/device/dev-2",
        "demo/sensor/device/dev-1",
        "#",
        "demo/#",
        "demo/+/device/dev-1",
        "demo/command/device/+",
        "$CONTROL/#",
        "$SYS/#",
    ] {
        assert_eq!(
            live.subscribe(filter).await,
            SubscribeReasonCode::NotAuthorized,
            "{filter}"
        );
    }
    // Another client id, or another device's password, does not get in.
    let other_client = Creds {
        cli: "someone-else".into(),
        ..mine.clone()
    };
    refused(port, &other_client).await;
    let wrong = Creds {
        pwd: "x".repeat(24),
        ..mine.clone()
    };
    refused(port, &wrong).await;

    // The same device id in another account is another client with its own topics.
    let acme_iccid = "8988000000000000042";
    let acme_key = [42u8; 16];
    assert_eq!(node.add_psk(acme_iccid, &acme_key, "acme").await, "1");
    let run = openssl(
        node.sim_port(),
        acme_iccid,
        &hex::encode(acme_key),
        GCM,
        &[],
        &closing(&post("dev-1", acme_iccid)),
    )
    .await;
    let theirs = creds(&responses(&run.stdout)[0].1);
    assert_ne!((&theirs.cli, &theirs.usr), (&mine.cli, &mine.usr));
    let mut other = session(port, &theirs).await;
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
        live.publish("demo/sensor/device/dev-1", "{}").await,
        PubAckReason::Success
    );

    // The broker's directory holds no issued password, in any form it could be read as.
    for (path, bytes) in files_under(&dir.path().join("mosquitto")) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in [&mine.pwd, &theirs.pwd] {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a password",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn every_revocation_path_ends_the_session_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    put_profile(
        &node,
        "every",
        r#"{"expiration":{"strategy":"AT-EVERY-REQUEST"}}"#,
    )
    .await;
    put_profile(
        &node,
        "after2",
        r#"{"expiration":{"strategy":"AFTER-X-REQUESTS","requests":2}}"#,
    )
    .await;
    put_profile(
        &node,
        "timed",
        r#"{"expiration":{"strategy":"TIME-BASED","seconds":1}}"#,
    )
    .await;

    // AT-EVERY-REQUEST: each GET a fresh password; the previous one stops working.
    let a = sim_creds(&node, &with_profile("e-1", "every")).await;
    let mut live = session(port, &a).await;
    let since = Instant::now();
    let b = sim_creds(&node, &get("e-1", DEMO_ICCID)).await;
    assert!(a.pwd != b.pwd && (a.cli == b.cli && a.usr == b.usr));
    revoked(port, &mut live, &a, since).await;
    session(port, &b).await;

    // AFTER-X-REQUESTS 2: a password is handed out twice, then replaced. A repeated POST does not count.
    let a = sim_creds(&node, &with_profile("x-1", "after2")).await;
    assert_eq!(sim_creds(&node, &with_profile("x-1", "after2")).await, a);
    assert_eq!(sim_creds(&node, &get("x-1", DEMO_ICCID)).await.pwd, a.pwd);
    assert_eq!(sim_creds(&node, &get("x-1", DEMO_ICCID)).await.pwd, a.pwd);
    let mut live = session(port, &a).await;
    let since = Instant::now();
    let b = sim_creds(&node, &get("x-1", DEMO_ICCID)).await;
    assert_ne!(b.pwd, a.pwd);
    revoked(port, &mut live, &a, since).await;
    assert_eq!(sim_creds(&node, &get("x-1", DEMO_ICCID)).await.pwd, b.pwd);
    session(port, &b).await;

    // TIME-BASED 1 s: the same password until it is older than that.
    let a = sim_creds(&node, &with_profile("t-1", "timed")).await;
    assert_eq!(sim_creds(&node, &get("t-1", DEMO_ICCID)).await.pwd, a.pwd);
    let mut live = session(port, &a).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let since = Instant::now();
    let b = sim_creds(&node, &get("t-1", DEMO_ICCID)).await;
    assert_ne!(b.pwd, a.pwd);
    revoked(port, &mut live, &a, since).await;
    session(port, &b).await;

    // ON-DEMAND (the default): the same password until someone asks: the admin API…
    let a = sim_creds(&node, &post("o-1", DEMO_ICCID)).await;
    assert_eq!(sim_creds(&node, &get("o-1", DEMO_ICCID)).await, a);
    let mut live = session(port, &a).await;
    let since = Instant::now();
    let (code, body) = node
        .admin("POST", "/v3/accounts/demo/devices/o-1/rotate", None)
        .await;
    assert_eq!((code, body.as_str()), (200, r#"{"rotated":true}"#));
    revoked(port, &mut live, &a, since).await;
    let b = sim_creds(&node, &get("o-1", DEMO_ICCID)).await;
    assert_ne!(b.pwd, a.pwd);
    // …or the CLI.
    let mut live = session(port, &b).await;
    let since = Instant::now();
    cli(
        &node,
        &["device", "rotate", "--account", "demo", "--device", "o-1"],
    )
    .await;
    revoked(port, &mut live, &b, since).await;
    let c = sim_creds(&node, &get("o-1", DEMO_ICCID)).await;
    session(port, &c).await;

    // Deleting the device: through the admin API with the account's tenant key…
    let (code, key) = node.admin("POST", "/v3/accounts/demo/keys", None).await;
    assert_eq!(code, 201, "{key}");
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let tenant = (
        key["key"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );
    let mut live = session(port, &c).await;
    let since = Instant::now();
    let (code, body) = node
        .admin_as(
            "DELETE",
            "/v3/accounts/demo/devices/o-1",
            None,
            Some(tenant),
        )
        .await;
    assert_eq!((code, body.as_str()), (200, r#"{"deleted":true}"#));
    revoked(port, &mut live, &c, since).await;
    assert_eq!(sim(&node, &get("o-1", DEMO_ICCID)).await.0, 404);
    assert_eq!(
        node.admin("DELETE", "/v3/accounts/demo/devices/o-1", None)
            .await
            .0,
        404
    );
    // …another account's key may not…
    let acme = node
        .admin("POST", "/v3/accounts", Some(r#"{"accountId":"acme"}"#))
        .await;
    assert!(acme.0 == 201 || acme.0 == 200, "{acme:?}");
    let (_, other_key) = node.admin("POST", "/v3/accounts/acme/keys", None).await;
    let other_key: serde_json::Value = serde_json::from_str(&other_key).unwrap();
    let other = (
        other_key["key"].as_str().unwrap(),
        other_key["secret"].as_str().unwrap(),
    );
    assert_eq!(
        node.admin_as("DELETE", "/v3/accounts/demo/devices/e-1", None, Some(other))
            .await
            .0,
        403
    );
    // …and the CLI.
    let e = sim_creds(&node, &get("e-1", DEMO_ICCID)).await;
    let mut live = session(port, &e).await;
    let since = Instant::now();
    cli(
        &node,
        &["device", "delete", "--account", "demo", "--device", "e-1"],
    )
    .await;
    revoked(port, &mut live, &e, since).await;
    // The same id can be created again, with new credentials that work.
    let again = sim_creds(&node, &post("e-1", DEMO_ICCID)).await;
    assert_ne!(again.usr, e.usr);
    session(port, &again).await;
}

#[tokio::test]
async fn an_answer_not_sent_rotates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    let blob = "x".repeat(150);
    let profile = format!(
        r#"{{"config":{{"blob":"{blob}"}},"expiration":{{"strategy":"AT-EVERY-REQUEST"}}}}"#
    );
    put_profile(&node, "big", &profile).await;
    let a = sim_creds(&node, &with_profile("big-1", "big")).await;
    session(port, &a).await;

    // Credentials plus a 150-byte config value are over 250 bytes: not sent, not rotated.
    assert_eq!(
        sim(&node, &config_get("big-1", "blob")).await,
        (0, String::new())
    );
    let warning = node
        .wait_log(|l| l.contains("WARN") && l.contains("over the SIM message limit"))
        .await;
    assert!(warning.contains("GET /v1/dev/big-1"), "{warning}");
    session(port, &a).await;

    let b = sim_creds(&node, &get("big-1", DEMO_ICCID)).await;
    assert_ne!(a.pwd, b.pwd);
    session(port, &b).await;
    refused(port, &a).await;
}

#[tokio::test]
async fn profiles_and_config_shape_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    let meter = r#"{"publish":["meters/{DEVICE_ID}/reading"],"subscribe":["meters/{DEVICE_ID}/set"],"config":{"broker-port":8883}}"#;
    put_profile(&node, "meter", meter).await;
    let (code, list) = node.admin("GET", "/v3/accounts/demo/profiles", None).await;
    assert_eq!(code, 200);
    assert!(list.contains("meters/{DEVICE_ID}/reading"), "{list}");

    let c = sim_creds(&node, &with_profile("m-1", "meter")).await;
    let mut live = session(port, &c).await;
    assert_eq!(
        live.publish("demo/meters/m-1/reading", "1").await,
        PubAckReason::Success
    );
    assert_eq!(
        live.publish("demo/sensor/device/m-1", "1").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        live.subscribe("demo/meters/m-1/set").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    let (code, body) = sim(&node, &config_get("m-1", "broker-port")).await;
    assert_eq!(code, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["config"], serde_json::json!({"broker-port": 8883}));
    assert_eq!(answer["pwd"], c.pwd);
    assert_eq!(sim(&node, &config_get("m-1", "nope")).await.0, 404);
    assert_eq!(sim(&node, &with_profile("m-2", "nope")).await.0, 404);

    // Config set per device through the admin API.
    let path = "/v3/accounts/demo/devices/m-1/config/broker-host";
    assert_eq!(
        node.admin("PUT", path, Some(r#""mqtt.example.com""#))
            .await
            .0,
        200
    );
    let (_, body) = sim(&node, &config_get("m-1", "broker-host")).await;
    assert!(
        body.ends_with(r#","config":{"broker-host":"mqtt.example.com"}}"#),
        "{body}"
    );
    assert_eq!(node.admin("DELETE", path, None).await.0, 200);
    assert_eq!(sim(&node, &config_get("m-1", "broker-host")).await.0, 404);
}

#[tokio::test]
async fn applications_read_their_account_and_command_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    let app = new_app(&node, "demo", "backend").await;
    assert_eq!(
        node.admin(
            "POST",
            "/v3/accounts/demo/apps",
            Some(r#"{"name":"backend"}"#)
        )
        .await
        .0,
        409
    );
    let (code, list) = node.admin("GET", "/v3/accounts/demo/apps", None).await;
    assert_eq!(code, 200);
    assert!(
        list.contains(r#""name":"backend""#) && !list.contains(&app.pwd),
        "{list}"
    );

    // Narrower filters of the account are allowed too (on another session, so the
    // watcher below gets each message once).
    let mut probe = session(port, &app).await;
    for filter in ["demo/sensor/device/+", "demo/+/device/#"] {
        assert_eq!(
            probe.subscribe(filter).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            "{filter}"
        );
    }
    drop(probe);
    let mut watcher = session(port, &app).await;
    assert_eq!(
        watcher.subscribe("demo/#").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    for filter in ["#", "acme/#", "+/sensor/device/+", "$CONTROL/#", "$SYS/#"] {
        assert_eq!(
            watcher.subscribe(filter).await,
            SubscribeReasonCode::NotAuthorized,
            "{filter}"
        );
    }

    // A device's own publish reaches the application.
    let device = sim_creds(&node, &post("d-1", DEMO_ICCID)).await;
    let mut dev = session(port, &device).await;
    assert!(matches!(
        dev.subscribe("demo/command/device/d-1").await,
        SubscribeReasonCode::Success(_)
    ));
    assert_eq!(
        dev.publish("demo/sensor/device/d-1", "{\"t\":1}").await,
        PubAckReason::Success
    );
    assert_eq!(
        &watcher.received("demo/sensor/device/d-1").await[..],
        b"{\"t\":1}"
    );

    // Data a SIM writes through the platform, both ways Pod Group's tools send it.
    for path in ["/v1/dev/d-1/data", "/v1/data/d-1"] {
        let body = r#"{"temperature": 36.70}"#;
        let run = demo(&node, CCM, &data_request(path, body)).await;
        assert_eq!(
            responses(&run.stdout),
            vec![(200, "1".to_owned())],
            "{path}: {}",
            run.stderr
        );
        assert_eq!(
            &watcher.received("demo/sensor/device/d-1").await[..],
            body.as_bytes(),
            "{path}"
        );
    }
    // Not for a device that does not exist, nor beyond the 250-byte limit.
    let run = demo(&node, CCM, &data_request("/v1/data/ghost", "{}")).await;
    assert_eq!(responses(&run.stdout)[0].0, 404);
    let run = demo(
        &node,
        CCM,
        &data_request("/v1/data/d-1", &format!("[{}]", "1,".repeat(120) + "1")),
    )
    .await;
    assert!(responses(&run.stdout).first().is_none_or(|r| r.0 == 404));

    // The application commands the device, and nothing outside its account.
    assert_eq!(
        watcher.publish("demo/command/device/d-1", "reboot").await,
        PubAckReason::Success
    );
    assert_eq!(
        &dev.received("demo/command/device/d-1").await[..],
        b"reboot"
    );
    for topic in [
        "demo/sensor/device/d-1",
        "acme/command/device/d-1",
        "$CONTROL/psk-edge/v1",
    ] {
        assert_eq!(
            watcher.publish(topic, "x").await,
            PubAckReason::NotAuthorized,
            "{topic}"
        );
    }

    // Deleting the application ends its session at once; the CLI lists and deletes too.
    let since = Instant::now();
    let (code, body) = node
        .admin("DELETE", "/v3/accounts/demo/apps/backend", None)
        .await;
    assert_eq!((code, body.as_str()), (200, r#"{"deleted":true}"#));
    revoked(port, &mut watcher, &app, since).await;
    assert_eq!(
        node.admin("DELETE", "/v3/accounts/demo/apps/backend", None)
            .await
            .0,
        404
    );
    let made = cli(
        &node,
        &["app", "create", "--account", "demo", "--name", "ops"],
    )
    .await;
    let ops = creds(made.trim());
    let mut live = session(port, &ops).await;
    assert!(
        cli(&node, &["app", "list", "--account", "demo"])
            .await
            .contains("ops")
    );
    let since = Instant::now();
    cli(
        &node,
        &["app", "delete", "--account", "demo", "--name", "ops"],
    )
    .await;
    revoked(port, &mut live, &ops, since).await;
}

#[tokio::test]
async fn a_broker_of_your_own_loaded_with_the_readme_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut broker) = with_own_broker(dir.path()).await;
    let port = broker.port;
    let known = sim_creds(&node, &post("known", DEMO_ICCID)).await;
    let mut live = session(port, &known).await;
    assert_eq!(
        live.publish("demo/sensor/device/known", "1").await,
        PubAckReason::Success
    );
    drop(live);

    // A restarted broker needs nothing pushed: it asks again.
    broker.restart().await;
    session(port, &known).await;

    // The node's platform publishes (data) authenticate as the platform there too.
    let app = new_app(&node, "demo", "watch").await;
    let mut watcher = session(port, &app).await;
    assert!(matches!(
        watcher.subscribe("demo/#").await,
        SubscribeReasonCode::Success(_)
    ));
    node.wait_log(|l| l.contains("connected to the broker as the platform"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = demo(&node, CCM, &data_request("/v1/data/known", "{}")).await;
        if responses(&run.stdout).first().map(|r| r.0) == Some(200) {
            break;
        }
        // The platform's own connection comes back after the broker's restart.
        assert!(
            Instant::now() < deadline,
            "data not accepted: {}",
            run.stderr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        &watcher.received("demo/sensor/device/known").await[..],
        b"{}"
    );

    // The node unreachable: the broker fails closed for what it never verified, and
    // keeps what it verified (for its cache time) so live fleets ride out a restart.
    let unseen = sim_creds(&node, &post("unseen", DEMO_ICCID)).await;
    // Verified once more after the platform's reconnection told the broker to forget
    // what it had verified.
    session(port, &known).await;
    let data_dir = node.data_dir.clone();
    node.stop().await;
    let started = Instant::now();
    refused(port, &unseen).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the broker stalled on a dead node"
    );
    session(port, &known).await;
    assert!(
        !broker.log().contains(&unseen.pwd) && !broker.log().contains(&known.pwd),
        "the broker logged a password"
    );

    // The node back: the unseen device gets in.
    let node = NodeBuilder::new(&data_dir)
        .mqtt(&["--mqtt-url", &format!("mqtt://127.0.0.1:{port}")])
        .arg("--broker-listen")
        .arg(&node_endpoint_of(&data_dir))
        .start()
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Mqtt::connect(port, &unseen.cli, &unseen.usr, &unseen.pwd)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the broker never asked the node again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop().await;
}

/// The broker endpoint the first node of `data_dir` used (the test broker is bound to it).
fn node_endpoint_of(data_dir: &std::path::Path) -> String {
    let config =
        std::fs::read_to_string(data_dir.parent().unwrap().join("broker/mosquitto.conf")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("plugin_opt_url http://"))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_http_endpoint_answers_like_emqx_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _port) = with_managed_broker(dir.path()).await;
    let c = sim_creds(&node, &post("h-1", DEMO_ICCID)).await;
    let key = std::fs::read_to_string(dir.path().join("broker.key")).unwrap();
    let ask = |path: &str, body: String, key: Option<String>| {
        let url = format!("http://{}{path}", node.broker_endpoint);
        async move {
            let mut cmd = tokio::process::Command::new("curl");
            cmd.args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "-H",
                "Content-Type: application/json",
            ]);
            if let Some(key) = key {
                cmd.args(["-H", &format!("Authorization: Bearer {key}")]);
            }
            let out = cmd
                .args(["--data-binary", &body, &url])
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (code.parse::<u16>().unwrap(), body.to_owned())
        }
    };
    let auth = |cli: &str, usr: &str, pwd: &str| {
        serde_json::json!({"clientid": cli, "username": usr, "password": pwd}).to_string()
    };
    let k = || Some(key.trim().to_owned());

    let (code, body) = ask("/broker/v1/auth", auth(&c.cli, &c.usr, &c.pwd), k()).await;
    assert_eq!(code, 200);
    let verdict: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(verdict["result"], "allow");
    assert_eq!(
        verdict["acl"][0],
        serde_json::json!({"permission": "allow", "action": "publish", "topic": "demo/sensor/device/h-1"})
    );
    assert!(!body.contains(&c.pwd));
    for (what, body) in [
        ("wrong password", auth(&c.cli, &c.usr, "nope")),
        ("wrong client id", auth("other", &c.usr, &c.pwd)),
        ("unknown user", auth(&c.cli, "nobody", &c.pwd)),
        ("empty user", auth(&c.cli, "", &c.pwd)),
        ("empty password", auth(&c.cli, &c.usr, "")),
        ("oversized user", auth(&c.cli, &"u".repeat(300), &c.pwd)),
        ("oversized password", auth(&c.cli, &c.usr, &"p".repeat(300))),
        ("NUL in user", auth(&c.cli, &format!("{}\0", c.usr), &c.pwd)),
        (
            "NUL in password",
            auth(&c.cli, &c.usr, &format!("{}\0", c.pwd)),
        ),
        ("platform user", auth("x", "psk-edge", &c.pwd)),
    ] {
        let (code, answer) = ask("/broker/v1/auth", body, k()).await;
        assert_eq!(
            (code, answer.as_str()),
            (200, r#"{"result":"deny"}"#),
            "{what}"
        );
    }
    // No key, a wrong key, garbage: no verdict at all.
    assert_eq!(
        ask("/broker/v1/auth", auth(&c.cli, &c.usr, &c.pwd), None)
            .await
            .0,
        401
    );
    assert_eq!(
        ask(
            "/broker/v1/auth",
            auth(&c.cli, &c.usr, &c.pwd),
            Some("x".into())
        )
        .await
        .0,
        401
    );
    assert_eq!(ask("/broker/v1/auth", "{".into(), k()).await.0, 400);
    assert_eq!(ask("/broker/v1/auth", "x".repeat(20_000), k()).await.0, 413);

    let acl = |topic: &str, action: &str| {
        serde_json::json!({"clientid": c.cli, "username": c.usr, "topic": topic, "action": action})
            .to_string()
    };
    for (topic, action, result) in [
        ("demo/sensor/device/h-1", "publish", "allow"),
        ("demo/sensor/device/h-2", "publish", "deny"),
        ("demo/command/device/h-1", "subscribe", "allow"),
        ("demo/command/device/+", "subscribe", "deny"),
        ("#", "subscribe", "deny"),
        ("$CONTROL/psk-edge/v1", "publish", "deny"),
    ] {
        let (code, answer) = ask("/broker/v1/acl", acl(topic, action), k()).await;
        assert_eq!(code, 200);
        assert_eq!(
            answer,
            format!(r#"{{"result":"{result}"}}"#),
            "{action} {topic}"
        );
    }

    // The same endpoint on the admin port, over HTTPS, for brokers elsewhere.
    let port = node.admin.rsplit(':').next().unwrap();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.path().join("admin-cert.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("Authorization: Bearer {}", key.trim())])
        .args(["--data-binary", &auth(&c.cli, &c.usr, &c.pwd)])
        .arg(format!("https://localhost:{port}/broker/v1/auth"))
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(r#"{"result":"allow""#));
    // Nothing secret in the log.
    let log = node.log();
    assert!(!log.contains(&c.pwd) && !log.contains(key.trim()));
}

#[tokio::test]
async fn a_device_cannot_speak_for_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    let victim = sim_creds(&node, &post("victim", DEMO_ICCID)).await;
    let attacker = sim_creds(&node, &post("attacker", DEMO_ICCID)).await;
    let mut target = session(port, &victim).await;
    let mut evil = session(port, &attacker).await;
    let kick = format!(r#"{{"kick":["{}"],"flush":true}}"#, victim.usr);
    assert_eq!(
        evil.publish("$CONTROL/psk-edge/v1", &kick).await,
        PubAckReason::NotAuthorized
    );
    // The victim is still connected and served.
    assert_eq!(
        target.publish("demo/sensor/device/victim", "1").await,
        PubAckReason::Success
    );
}

#[tokio::test]
async fn up_runs_its_own_broker_or_says_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let (node, port) = with_managed_broker(dir.path()).await;
    assert_ne!(port, 1883);
    let c = sim_creds(&node, &post("own", DEMO_ICCID)).await;
    session(port, &c).await;
    node.stop().await;
    // The managed broker stops with `up`.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    // Started again, it reuses its port and needs nothing pushed.
    let (node, again) = with_managed_broker(dir.path()).await;
    assert_eq!(again, port);
    session(port, &c).await;
    node.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).start().await;
    assert_eq!(node.mqtt, "none");
    let said = node
        .log()
        .lines()
        .filter(|l| l.contains("tells no broker of revocations"))
        .count();
    assert_eq!(said, 1);
}
