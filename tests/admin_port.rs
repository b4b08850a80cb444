//! The operator's admin port over real HTTPS (curl): authentication, the PSK contract, bulk import, live effect on the SIM port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::time::Duration;

use psk_client::{self, ClientConfig, KeyExchange};
use support::*;
use zeroize::Zeroizing;

async fn node() -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (NodeBuilder::new(dir.path()).start().await, dir)
}

async fn handshake(node: &Node, identity: &str, key: &[u8]) -> Option<psk_client::TlsStream> {
    let tcp = tokio::net::TcpStream::connect(&node.sim).await.unwrap();
    let cfg = ClientConfig {
        identity: identity.as_bytes().to_vec(),
        key: Zeroizing::new(key.to_vec()),
        cipher_list: "TLS13-AES128-GCM-SHA256".into(),
        key_exchange: KeyExchange::PskKe,
    };
    psk_client::connect(tcp, &cfg).await.ok()
}

#[tokio::test]
async fn authentication_and_health() {
    let (node, _dir) = node().await;
    assert_eq!(
        node.admin_as("GET", "/healthz", None, None).await,
        (200, "ok".into())
    );
    let body = r#"{"identity":"1","psk":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"accountId":"a"}"#;
    for auth in [
        None,
        Some((OPERATOR_KEY, "wrong")),
        Some(("wrong", OPERATOR_SECRET)),
    ] {
        let (code, _) = node
            .admin_as("POST", "/v3/sys/security/psk", Some(body), auth)
            .await;
        assert_eq!(code, 401, "{auth:?}");
    }
    // The challenge tells clients how to authenticate.
    let port = node.admin.rsplit(':').next().unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "-k",
            &format!("https://127.0.0.1:{port}/v3/sys/security/psk"),
            "-X",
            "POST",
        ])
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("www-authenticate: basic"), "{head}");
    assert_eq!(node.admin("GET", "/nothing", None).await.0, 404);
}

#[tokio::test]
async fn allow_list_guards_sys_routes() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(dir.path(), &["--admin-allow", "10.0.0.0/8"]).await;
    let (code, _) = node
        .admin(
            "DELETE",
            "/v3/sys/security/psk",
            Some(r#"{"identity":"1"}"#),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(node.admin_as("GET", "/healthz", None, None).await.0, 200);
}

#[tokio::test]
async fn create_override_delete_take_effect_on_the_next_handshake() {
    let (node, _dir) = node().await;
    let iccid = "8931000000000000001";
    let (k1, k2) = (vec![1u8; 16], vec![2u8; 32]);
    assert!(
        handshake(&node, iccid, &k1).await.is_none(),
        "unknown SIM got in"
    );

    assert_eq!(node.add_psk(iccid, &k1, "acct-a").await, "1");
    let mut live = handshake(&node, iccid, &k1)
        .await
        .expect("created SIM handshake");

    // Override: the old key stops working, the new one works, the live connection closes.
    assert_eq!(node.add_psk(iccid, &k2, "acct-b").await, "1");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), live.read(&mut buf))
        .await
        .expect("live connection not closed");
    assert_eq!(closed.unwrap_or(0), 0);
    assert!(handshake(&node, iccid, &k1).await.is_none());
    assert!(handshake(&node, iccid, &k2).await.is_some());

    // Delete: gone at once; deleting again is `0`.
    let del = format!(r#"{{"identity":"{iccid}"}}"#);
    assert_eq!(
        node.admin("DELETE", "/v3/sys/security/psk", Some(&del))
            .await,
        (200, "1".into())
    );
    assert!(handshake(&node, iccid, &k2).await.is_none());
    assert_eq!(
        node.admin("DELETE", "/v3/sys/security/psk", Some(&del))
            .await,
        (200, "0".into())
    );
}

#[tokio::test]
async fn bad_input_answers_zero_and_changes_nothing() {
    let (node, _dir) = node().await;
    let psk16 = "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]";
    let cases = [
        "not json".to_owned(),
        "{}".to_owned(),
        format!(r#"{{"identity":"123","psk":{psk16}}}"#),
        format!(r#"{{"psk":{psk16},"accountId":"a"}}"#),
        r#"{"identity":"123","accountId":"a"}"#.to_owned(),
        format!(r#"{{"identity":123,"psk":{psk16},"accountId":"a"}}"#),
        format!(r#"{{"identity":"12a","psk":{psk16},"accountId":"a"}}"#),
        format!(r#"{{"identity":"","psk":{psk16},"accountId":"a"}}"#),
        format!(
            r#"{{"identity":"{}","psk":{psk16},"accountId":"a"}}"#,
            "1".repeat(23)
        ),
        r#"{"identity":"123","psk":[1,2,3],"accountId":"a"}"#.to_owned(),
        format!(
            r#"{{"identity":"123","psk":[{}],"accountId":"a"}}"#,
            vec!["1"; 65].join(",")
        ),
        r#"{"identity":"123","psk":[256,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"accountId":"a"}"#
            .to_owned(),
        r#"{"identity":"123","psk":[-1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"accountId":"a"}"#
            .to_owned(),
        r#"{"identity":"123","psk":[1.5,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"accountId":"a"}"#
            .to_owned(),
        r#"{"identity":"123","psk":"0102030405060708090a0b0c0d0e0f10","accountId":"a"}"#.to_owned(),
        format!(r#"{{"identity":"123","psk":{psk16},"accountId":"a b"}}"#),
        format!(r#"{{"identity":"123","psk":{psk16},"accountId":7}}"#),
    ];
    for body in &cases {
        assert_eq!(
            node.admin("POST", "/v3/sys/security/psk", Some(body)).await,
            (200, "0".into()),
            "{body}"
        );
    }
    assert_eq!(
        node.admin(
            "DELETE",
            "/v3/sys/security/psk",
            Some(r#"{"identity":"x"}"#)
        )
        .await
        .1,
        "0"
    );
    // Nothing was half-written: identity 123 never came to exist with any key.
    assert!(
        handshake(&node, "123", &(1..=16).collect::<Vec<u8>>())
            .await
            .is_none()
    );
    // A reason is logged, never the key.
    node.wait_log(|l| l.contains("WARN") && l.contains("admin-psk"))
        .await;
    assert!(!node.log().contains("1,2,3,4,5,6,7,8,9,10"));
}

#[tokio::test]
async fn bulk_ndjson_answers_line_by_line() {
    let (node, _dir) = node().await;
    let line = |id: &str, byte: u8| {
        format!(
            r#"{{"identity":"{id}","psk":{:?},"accountId":"bulk"}}"#,
            vec![byte; 16]
        )
    };
    let body = [
        line("5000000000000000001", 1),
        "garbage".into(),
        String::new(),
        line("5000000000000000002", 2),
    ]
    .join("\n");
    let (code, answer) = node
        .admin("POST", "/v3/sys/security/psk/bulk", Some(&body))
        .await;
    assert_eq!((code, answer.as_str()), (200, "1\n0\n1\n"));
    assert!(
        handshake(&node, "5000000000000000002", &[2u8; 16])
            .await
            .is_some()
    );

    // Enough lines for several batches, answered in order.
    let many: String = (0..2500u32)
        .map(|i| {
            if i % 1000 == 7 {
                "{}\n".to_owned()
            } else {
                line(&format!("6{i:018}"), 3) + "\n"
            }
        })
        .collect();
    let (code, answer) = node
        .admin("POST", "/v3/sys/security/psk/bulk", Some(&many))
        .await;
    assert_eq!(code, 200);
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.len(), 2500);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, if i % 1000 == 7 { "0" } else { "1" }, "line {i}");
    }
    assert!(
        handshake(&node, &format!("6{:018}", 2499), &[3u8; 16])
            .await
            .is_some()
    );
}

#[tokio::test]
async fn ambiguous_lengths_and_unknown_codings_get_400_and_close() {
    let (node, _dir) = node().await;
    let auth = operator_basic();
    // hyper refuses these itself; two equal lengths it reads as one (RFC 9110 §8.6).
    for headers in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 5,6\r\n",
        "Content-Length: \r\n",
        "Content-Length: 0x5\r\n",
        "Transfer-Encoding: gzip\r\n",
    ] {
        let request = format!(
            "POST /v3/sys/security/psk HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n{headers}\r\n{{}}xx"
        );
        let (answer, closed) =
            admin_raw_exchange(&node, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{headers:?}: {answer:?}"
        );
        assert!(closed, "{headers:?}: connection left open");
    }
    // HTTP/1.0 without keep-alive: answered, then closed.
    let (answer, closed) = admin_raw_exchange(
        &node,
        b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
    assert!(closed, "HTTP/1.0 connection left open");
}

#[tokio::test]
async fn an_announced_oversized_body_gets_its_refusal_before_100_continue() {
    let (node, _dir) = node().await;
    let auth = operator_basic();
    for (path, status) in [
        // A function route: 1 MiB at most.
        ("/v3/accounts/acme/profiles/p", "413"),
        // A component upload: 16 MiB at most, refused like any bad upload.
        ("/v3/accounts/acme/functions/device-credentials", "422"),
    ] {
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            64 << 20
        );
        let (answer, closed) =
            admin_raw_exchange(&node, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer:?}"
        );
        assert!(!answer.contains("100 Continue"), "{path}: {answer:?}");
        assert!(closed, "{path}: connection left open");
    }
    // Without Expect the refusal is the same.
    let request = format!(
        "PUT /v3/accounts/acme/profiles/p HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\
         Content-Length: {}\r\n\r\n{{}}",
        2 << 20
    );
    let (answer, _) = admin_raw_exchange(&node, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
}

#[tokio::test]
async fn a_clients_spin_headers_never_reach_an_admin_function() {
    let dir = tempfile::tempdir().unwrap();
    // The platform's manifest plus one admin route served by a component that echoes
    // the spin-* headers it receives.
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spin.toml")).unwrap();
    let manifest = format!(
        "{base}\n[[trigger.http]]\nroute = \"/v3/echo/:device_id\"\ncomponent = \"echo\"\n\
         listener = \"admin\"\n\n[component.echo]\nsource = \"echo.wasm\"\n"
    );
    let manifest_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        manifest_dir.path().join("echo.wasm"),
        support::fixtures::fixture("echo-headers"),
    )
    .unwrap();
    let manifest_path = manifest_dir.path().join("spin.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let node = start_with(dir.path(), &["--manifest", manifest_path.to_str().unwrap()]).await;
    let request = format!(
        "GET /v3/echo/real HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\
         spin-path-match-device-id: forged\r\nSpin-Full-Url: http://evil/\r\nConnection: close\r\n\r\n",
        operator_basic()
    );
    let (answer, _) = admin_raw_exchange(&node, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(body, "spin-path-match-device-id=real", "{answer:?}");
}

#[tokio::test]
async fn an_overlong_bulk_line_answers_zero_in_its_place() {
    let (node, _dir) = node().await;
    let line = |id: &str| {
        format!(
            r#"{{"identity":"{id}","psk":{:?},"accountId":"bulk"}}"#,
            [4u8; 16]
        )
    };
    // Far longer than one read of the body, so the line is dropped while it streams in.
    let overlong = format!(r#"{{"identity":"{}"}}"#, "9".repeat(1 << 20));
    let body = [
        line("7000000000000000001"),
        overlong,
        line("7000000000000000002"),
        "garbage".to_owned(),
    ]
    .join("\n");
    let (code, answer) = node
        .admin("POST", "/v3/sys/security/psk/bulk", Some(&body))
        .await;
    assert_eq!((code, answer.as_str()), (200, "1\n0\n1\n0\n"));
    node.wait_log(|l| l.contains("bulk line over 65536 bytes refused"))
        .await;
    for id in ["7000000000000000001", "7000000000000000002"] {
        assert!(handshake(&node, id, &[4u8; 16]).await.is_some(), "{id}");
    }
}

/// A wrong key is answered from the head: 401 arrives while the client is still far
/// from done sending a 15 MB upload, so the node never reads (or buffers) the body.
#[tokio::test]
async fn a_wrong_key_is_refused_before_the_body_is_read() {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(dir.path(), &[]).await;
    let (code, _) = node
        .admin("POST", "/v3/accounts", Some(r#"{"accountId":"acme"}"#))
        .await;
    assert_eq!(code, 201);
    let wrong = base64::engine::general_purpose::STANDARD.encode("tk-nobody:wrong");
    let len = 15_000_000;
    let head = format!(
        "PUT /v3/accounts/acme/functions/device-credentials HTTP/1.1\r\nHost: x\r\n\
         Authorization: Basic {wrong}\r\nContent-Length: {len}\r\n\r\n"
    );
    let mut tls = admin_tls(&node).await;
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![0u8; 64 << 10]).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut got))
        .await
        .expect("answered while the body is still coming")
        .unwrap();
    let answer = String::from_utf8_lossy(&got[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
