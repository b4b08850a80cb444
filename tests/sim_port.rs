//! The SIM port end to end: real TLS clients (OpenSSL, GnuTLS, wolfSSL) against a real `psk-edge up`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::time::Duration;

use support::*;

async fn node() -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (NodeBuilder::new(dir.path()).start().await, dir)
}

#[tokio::test]
async fn openssl_creates_and_fetches_with_both_suites_and_both_kex_offers() {
    let (node, _dir) = node().await;
    let mut seen = None;
    for (i, suite) in [CCM, GCM].into_iter().enumerate() {
        for extra in [&[][..], &["-allow_no_dhe_kex"][..]] {
            let input = format!(
                "{}{}",
                post("dev-1", DEMO_ICCID),
                closing(&get("dev-1", DEMO_ICCID))
            );
            let run = openssl(
                node.sim_port(),
                DEMO_ICCID,
                DEMO_PSK_HEX,
                suite,
                extra,
                &input,
            )
            .await;
            let answers = responses(&run.stdout);
            assert_eq!(
                answers.len(),
                2,
                "{suite} {extra:?}: {}\n{}",
                run.stdout,
                run.stderr
            );
            assert!(answers.iter().all(|(code, _)| *code == 200), "{answers:?}");
            let (create, fetch) = (creds(&answers[0].1), creds(&answers[1].1));
            // The first POST creates; every later POST is a retry that returns the same device.
            assert_eq!(create, fetch);
            assert_eq!(seen.get_or_insert(create.clone()), &create, "run {i}");
            for field in [&create.cli, &create.usr, &create.pwd] {
                assert!(!field.is_empty() && field.len() <= 24, "{create:?}");
            }
        }
    }
    // Only Content-Type and Content-Length ride along.
    let run = demo(&node, CCM, &closing(&get("dev-1", DEMO_ICCID))).await;
    let head = run.stdout.split("\r\n\r\n").next().unwrap();
    let names: Vec<&str> = head
        .lines()
        .skip(1)
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(names, ["Content-Type", "Content-Length"]);
}

#[tokio::test]
async fn gnutls_pure_psk_ke_gets_its_answer_after_close_notify() {
    let (node, _dir) = node().await;
    let run = gnutls(
        node.sim_port(),
        DEMO_ICCID,
        DEMO_PSK_HEX,
        &post("g-1", DEMO_ICCID),
    )
    .await;
    let answers = responses(&run.stdout);
    assert_eq!(answers.len(), 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(answers[0].0, 200);
    creds(&answers[0].1);
}

#[tokio::test]
async fn unknown_identity_fails_exactly_like_a_wrong_key() {
    let (node, _dir) = node().await;
    let wrong_key = openssl(
        node.sim_port(),
        DEMO_ICCID,
        "00112233445566778899aabbccddeeff",
        CCM,
        &[],
        &post("x", DEMO_ICCID),
    )
    .await;
    let unknown = openssl(
        node.sim_port(),
        "999999999999999",
        DEMO_PSK_HEX,
        CCM,
        &[],
        &post("x", "999999999999999"),
    )
    .await;
    for run in [&wrong_key, &unknown] {
        assert!(!run.success);
        assert!(!run.stdout.contains("HTTP/1.1"), "{}", run.stdout);
    }
    assert_eq!(alert_line(&wrong_key), alert_line(&unknown));
}

#[tokio::test]
async fn tls12_and_certificate_clients_get_an_alert_not_a_hang() {
    let (node, _dir) = node().await;
    let started = std::time::Instant::now();
    let tls12 = openssl(
        node.sim_port(),
        DEMO_ICCID,
        DEMO_PSK_HEX,
        CCM,
        &["-tls1_2", "-cipher", "PSK-AES128-CCM"],
        "",
    )
    .await;
    assert!(!tls12.success);
    assert!(tls12.stderr.contains("alert"), "{}", tls12.stderr);
    let mut no_psk = tokio::process::Command::new("openssl");
    no_psk
        .args(["s_client", "-quiet", "-tls1_3", "-connect", &node.sim])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(10), no_psk.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("alert"));
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(dir.path(), &["--handshake-timeout-ms", "300"]).await;
    let mut tcp = tokio::net::TcpStream::connect(&node.sim).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "connection not closed: {read:?}"
    );
}

#[tokio::test]
async fn bcd_identity_with_zero_bytes_maps_to_its_iccid() {
    let (node, _dir) = node().await;
    let iccid = "8944500000000000123";
    let bcd = [0x98, 0x44, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0xf3];
    let key: Vec<u8> = (1..=32).collect();
    assert_eq!(node.add_psk(iccid, &key, "acct-bcd").await, "1");

    let mut s = wolf(&node, &bcd, &key, KeyExchange::PskKe)
        .await
        .expect("BCD handshake");
    let created = exchange(&mut s, &post("b-1", iccid)).await;
    assert_eq!(created[0].0, 200, "{created:?}");
    // Pod Group's tools name the SIM by the hex of its identity bytes, in either case.
    let by_hex = exchange(&mut s, &get("b-1", "984405000000000021F3")).await;
    assert_eq!(by_hex[0], created[0]);
    // ASCII digits of the same ICCID are the same SIM.
    let mut ascii = wolf(&node, iccid.as_bytes(), &key, KeyExchange::Both)
        .await
        .expect("ASCII handshake");
    assert_eq!(
        exchange(&mut ascii, &get("b-1", iccid)).await[0],
        created[0]
    );
    // ...but an ASCII-authenticated SIM cannot use the hex form.
    assert_eq!(
        exchange(&mut ascii, &get("b-1", "984405000000000021f3")).await[0].0,
        404
    );
}

#[tokio::test]
async fn the_message_limit_holds_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    // Credentials answers are ~160 bytes: a 150-byte limit makes them oversized.
    let node = start_with(dir.path(), &["--message-limit", "150"]).await;
    let mut s = demo_wolf(&node).await;
    let dropped = exchange(&mut s, &post("lim-1", DEMO_ICCID)).await;
    assert!(dropped.is_empty(), "oversized answer was sent: {dropped:?}");
    let warning = node
        .wait_log(|l| l.contains("WARN") && l.contains("over the SIM message limit"))
        .await;
    assert!(
        warning.contains("POST /v1/dev/lim-1") && warning.contains("size="),
        "{warning}"
    );

    let (node, _dir2) = self::node().await;
    let mut s = demo_wolf(&node).await;
    let padded = format!(
        "POST /v1/dev/d?iccid={DEMO_ICCID} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nContent-Length: 0\r\n\r\n",
        "p".repeat(200)
    );
    let refused = exchange(&mut s, &padded).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 404);
    // ...and the connection is closed after it.
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
}

#[tokio::test]
async fn sims_act_only_for_themselves() {
    let (node, _dir) = node().await;
    let other = "111111111111111";
    let other_key = vec![7u8; 16];
    assert_eq!(node.add_psk(other, &other_key, "demo").await, "1");
    let mut demo = demo_wolf(&node).await;
    let mut sim2 = wolf(&node, other.as_bytes(), &other_key, KeyExchange::Both)
        .await
        .unwrap();

    assert_eq!(
        exchange(&mut demo, &post("shared", DEMO_ICCID)).await[0].0,
        200
    );
    // Each refusal for its own reason: a 404 for any other reason would hide a hole.
    let refused = |reason: &str| vec![(404, format!(r#"{{"err":"{reason}"}}"#))];
    // iccid naming another SIM
    assert_eq!(
        exchange(&mut demo, &get("shared", other)).await,
        refused("iccid_mismatch")
    );
    // same account, other SIM: neither create nor fetch someone else's device
    assert_eq!(
        exchange(&mut sim2, &post("shared", other)).await,
        refused("device_taken")
    );
    assert_eq!(
        exchange(&mut sim2, &get("shared", other)).await,
        refused("unknown_device")
    );
    // unknown device, bad names, unknown routes, the admin API
    assert_eq!(
        exchange(&mut demo, &get("nope", DEMO_ICCID)).await,
        refused("unknown_device")
    );
    assert_eq!(
        exchange(&mut demo, &get("a%20b", DEMO_ICCID)).await,
        refused("bad_name")
    );
    let admin = "POST /v3/sys/security/psk HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(exchange(&mut demo, admin).await, refused("no_route"));
    assert_eq!(
        exchange(
            &mut demo,
            "DELETE /v1/dev/shared HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        .await,
        refused("no_route")
    );
    let missing_iccid = "GET /v1/dev/shared HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        exchange(&mut demo, missing_iccid).await,
        refused("iccid_missing")
    );
    // still the same keep-alive connection, still served
    assert_eq!(
        exchange(&mut demo, &get("shared", DEMO_ICCID)).await[0].0,
        200
    );
}

#[tokio::test]
async fn a_function_over_its_memory_cap_is_a_404_and_a_log_line_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    // A Rust component starts with more than 1 MiB of linear memory: every call fails.
    let node = start_with(dir.path(), &["--fn-memory-mib", "1"]).await;
    let run = demo(&node, CCM, &closing(&post("m-1", DEMO_ICCID))).await;
    let answers = responses(&run.stdout);
    assert_eq!(
        answers,
        vec![(404, r#"{"err":"function_failed"}"#.to_owned())]
    );
    node.wait_log(|l| l.contains("function failed") && l.contains("device-create"))
        .await;
    // The node still serves.
    assert_eq!(node.admin_as("GET", "/healthz", None, None).await.0, 200);
}

/// Reads until the node closes the connection; false if it is still open after `wait`.
async fn closed_within(stream: &mut psk_client::TlsStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn ambiguous_lengths_and_any_transfer_coding_are_refused_and_close() {
    let (node, _dir) = node().await;
    let cases = [
        (
            "Content-Length: 5\r\nContent-Length: 0\r\n",
            "bad_content_length",
        ),
        (
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "bad_content_length",
        ),
        ("Content-Length: +5\r\n", "bad_content_length"),
        ("Content-Length: 5 5\r\n", "bad_content_length"),
        ("Content-Length: 5,5\r\n", "bad_content_length"),
        ("Content-Length: \r\n", "bad_content_length"),
        ("Transfer-Encoding: chunked\r\n", "chunked"),
        (
            "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
            "chunked",
        ),
        (
            "Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
            "chunked",
        ),
    ];
    for (headers, reason) in cases {
        let request = format!(
            "POST /v1/dev/cl-1/data?iccid={DEMO_ICCID} HTTP/1.1\r\nHost: x\r\n{headers}\r\n{{\"a\"}}"
        );
        let mut s = demo_wolf(&node).await;
        assert_eq!(
            exchange(&mut s, &request).await,
            vec![(404, format!(r#"{{"err":"{reason}"}}"#))],
            "{headers:?}"
        );
        assert!(
            closed_within(&mut s, Duration::from_secs(3)).await,
            "{headers:?}: connection left open"
        );
    }
    // The same through OpenSSL: the answer, then the close s_client waits for.
    let run = demo(
        &node,
        CCM,
        &format!("POST /v1/dev/cl-2?iccid={DEMO_ICCID} HTTP/1.1\r\nContent-Length: +0\r\n\r\n"),
    )
    .await;
    assert_eq!(
        responses(&run.stdout),
        vec![(404, r#"{"err":"bad_content_length"}"#.to_owned())]
    );
    // Nothing of the refused requests was created.
    let mut s = demo_wolf(&node).await;
    assert_eq!(
        exchange(&mut s, &get("cl-2", DEMO_ICCID)).await,
        vec![(404, r#"{"err":"unknown_device"}"#.to_owned())]
    );
}

#[tokio::test]
async fn http_1_0_closes_after_its_answer_unless_keep_alive() {
    let (node, _dir) = node().await;
    let mut s = demo_wolf(&node).await;
    let request = format!("POST /v1/dev/old-1?iccid={DEMO_ICCID} HTTP/1.0\r\n\r\n");
    let answers = exchange(&mut s, &request).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].0, 200);
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "HTTP/1.0 connection left open"
    );
    // With keep-alive it stays open for the next request.
    let mut s = demo_wolf(&node).await;
    let keep =
        format!("GET /v1/dev/old-1?iccid={DEMO_ICCID} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(exchange(&mut s, &keep).await[0].0, 200);
    assert_eq!(exchange(&mut s, &keep).await[0].0, 200);
}

#[tokio::test]
async fn a_sim_sending_refused_requests_is_cut_off_and_the_log_stays_short() {
    let (node, _dir) = node().await;
    let lines_before = node.output.lock().unwrap().len();
    let unknown_route = "GET /nothing HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    let unknown_device = get("nope", DEMO_ICCID);
    let connections = 6;
    for _ in 0..connections {
        let mut s = demo_wolf(&node).await;
        // Seven refusals in a row are answered; the eighth is answered and closes.
        for i in 0..8 {
            let request: &str = if i % 2 == 0 {
                unknown_route
            } else {
                &unknown_device
            };
            let got = exchange(&mut s, request).await;
            assert_eq!(got.len(), 1, "request {i}: {got:?}");
            assert_eq!(got[0].0, 404);
        }
        assert!(
            closed_within(&mut s, Duration::from_secs(3)).await,
            "a connection of refused requests stayed open"
        );
    }
    // A success in between resets the count.
    let mut s = demo_wolf(&node).await;
    assert_eq!(exchange(&mut s, &post("fine", DEMO_ICCID)).await[0].0, 200);
    for _ in 0..7 {
        assert_eq!(exchange(&mut s, unknown_route).await[0].0, 404);
    }
    assert_eq!(exchange(&mut s, &get("fine", DEMO_ICCID)).await[0].0, 200);
    assert_eq!(exchange(&mut s, unknown_route).await[0].0, 404);

    // 48 + 8 refusals, yet one line per reason: the host's two, the function's one,
    // the cut-off's one (the window is 10 s, longer than this test).
    let log = node.output.lock().unwrap()[lines_before..].join("\n");
    let lines = log.lines().count();
    assert!(lines <= 6, "the log grew by {lines} lines:\n{log}");
    assert!(
        log.contains("reason=\"no_route\"") || log.contains("reason=no_route"),
        "{log}"
    );
    assert!(log.contains("refused_in_a_row"), "{log}");
    // ...and every refusal is counted.
    let (_, metrics) = node.admin("GET", "/metrics", None).await;
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let count = |reason: &str| {
        metrics["sim_refusals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == reason)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert_eq!(count("no_route"), 4 * connections + 8, "{metrics}");
    assert_eq!(count("function_refused"), 4 * connections, "{metrics}");
    assert_eq!(count("refused_in_a_row"), connections, "{metrics}");
}

#[tokio::test]
async fn a_request_dripped_byte_by_byte_is_cut_off_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path())
        .arg("--request-timeout-ms")
        .arg("1500")
        .start()
        .await;
    let request = get("drip", DEMO_ICCID);
    let mut s = demo_wolf(&node).await;
    let started = std::time::Instant::now();
    // One byte every 200 ms: each read comes well within the idle timeout (30 s), yet
    // the whole request would take ~12 s.
    let mut cut_after = None;
    for byte in request.as_bytes() {
        if s.write_all(&[*byte]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        if closed_within(&mut s, Duration::from_millis(200)).await {
            cut_after = Some(started.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the dripped request was never cut off");
    assert!(
        cut_after >= Duration::from_millis(1400) && cut_after < Duration::from_millis(3000),
        "cut off after {cut_after:?}, not at the 1.5 s deadline"
    );
    // A request sent whole on a fresh connection is served as before, and the drip counted.
    let mut s = demo_wolf(&node).await;
    assert_eq!(exchange(&mut s, &post("drip", DEMO_ICCID)).await[0].0, 200);
    let (_, metrics) = node.admin("GET", "/metrics", None).await;
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let slow = metrics["sim_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "request_too_slow")
        .map_or(0, |r| r["count"].as_u64().unwrap());
    assert_eq!(slow, 1, "{metrics}");
}
