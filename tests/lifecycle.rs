//! A node's life: first start, restart with its data, a wrong master key, SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn data_survives_a_restart_and_sigterm_stops_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).start().await;
    assert_eq!(
        node.add_psk("777000000000001", &[9u8; 20], "keep").await,
        "1"
    );
    let run = demo(&node, CCM, &closing(&post("keep-1", DEMO_ICCID))).await;
    let before = creds(&responses(&run.stdout)[0].1);
    let (took, status) = node.stop().await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");

    let node = NodeBuilder::new(dir.path()).start().await;
    let run = demo(&node, GCM, &closing(&get("keep-1", DEMO_ICCID))).await;
    assert_eq!(creds(&responses(&run.stdout)[0].1), before);
    let run = openssl(
        node.sim_port(),
        "777000000000001",
        &"09".repeat(20),
        CCM,
        &[],
        &closing(&post("k2", "777000000000001")),
    )
    .await;
    assert_eq!(responses(&run.stdout)[0].0, 200, "{}", run.stderr);
    // Secrets stay out of the log and out of the database file in the clear.
    let log = node.log();
    assert!(!log.contains(&before.pwd) && !log.contains(OPERATOR_SECRET));
    let db = database_bytes(&node);
    assert!(
        !db.windows(before.pwd.len())
            .any(|w| w == before.pwd.as_bytes())
    );
    assert!(!db.windows(16).any(|w| w == (64u8..80).collect::<Vec<_>>()));
    // pg_dump writes bytea as hex.
    let demo_hex = DEMO_PSK_HEX.as_bytes();
    assert!(!db.windows(demo_hex.len()).any(|w| w == demo_hex));
}

#[tokio::test]
async fn first_start_generates_private_secrets_and_prints_the_openssl_line() {
    use std::os::unix::fs::PermissionsExt;
    // Without the env pair the node generates one into a 0600 file and never prints the secret.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cmd = NodeBuilder::new(dir2.path()).sqlite().command();
    cmd.env_remove("PSK_EDGE_OPERATOR_KEY")
        .env_remove("PSK_EDGE_OPERATOR_SECRET");
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut seen = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let done = line.contains(" ready sim=");
        seen.push(line);
        if done {
            break;
        }
    }
    let text = seen.join("\n");
    for file in ["operator.secret", "master.key", "admin-key.pem"] {
        let mode = std::fs::metadata(dir2.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let secret = std::fs::read_to_string(dir2.path().join("operator.secret")).unwrap();
    let (_key, secret) = secret.trim().split_once(':').unwrap();
    assert!(!text.contains(secret), "secret printed");
    assert!(text.contains("operator.secret"));
    assert!(
        text.contains(&format!("-psk_identity {DEMO_ICCID} -psk {DEMO_PSK_HEX}")),
        "{text}"
    );
    assert_eq!(seen.iter().filter(|l| l.contains(" ready sim=")).count(), 1);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_wrong_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = "11".repeat(32);
    let node = NodeBuilder::new(dir.path())
        .env("PSK_EDGE_MASTER_KEY", &key)
        .start()
        .await;
    node.stop().await;
    let out = NodeBuilder::new(dir.path())
        .env("PSK_EDGE_MASTER_KEY", &"22".repeat(32))
        .command()
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("master key") && !text.contains(" ready sim="),
        "{text}"
    );
    // A key that is not 64 hex characters is refused with a reason too.
    let out = NodeBuilder::new(dir.path())
        .env("PSK_EDGE_MASTER_KEY", "abc")
        .command()
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("64 hex"));
    // The right key still works.
    NodeBuilder::new(dir.path())
        .env("PSK_EDGE_MASTER_KEY", &key)
        .start()
        .await
        .stop()
        .await;
}

#[tokio::test]
async fn the_banner_shows_the_demo_key_only_for_the_demo_sim() {
    let dir = tempfile::tempdir().unwrap();
    let with_demo = NodeBuilder::new(dir.path()).start().await;
    assert!(
        with_demo.log().contains(DEMO_PSK_HEX),
        "{}",
        with_demo.log()
    );
    with_demo.stop().await;

    // No demo, then the demo's ICCID registered with a key of the operator's own:
    // the public demo key must not be offered as this SIM's.
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path()).arg("--no-demo").start().await;
    assert!(!node.log().contains(DEMO_PSK_HEX), "{}", node.log());
    assert_eq!(node.add_psk(DEMO_ICCID, &[9u8; 16], "mine").await, "1");
    node.stop().await;
    let node = NodeBuilder::new(dir.path()).arg("--no-demo").start().await;
    let log = node.log();
    assert!(
        !log.contains(DEMO_PSK_HEX) && !log.contains("Demo SIM"),
        "{log}"
    );
}
