//! Tenant functions end to end: upload, validation, activation, rollback, isolation, and swaps under load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fixtures::{example, fixture};
use support::*;

const ACME_ICCID: &str = "8944000000000000777";
const ACME_KEY: [u8; 16] = [0x77; 16];

async fn node_with_acme(dir: &std::path::Path, args: &[&str]) -> Node {
    let node = start_with(dir, args).await;
    let (code, _) = node
        .admin("POST", "/v3/accounts", Some(r#"{"accountId":"acme"}"#))
        .await;
    assert_eq!(code, 201);
    assert_eq!(node.add_psk(ACME_ICCID, &ACME_KEY, "acme").await, "1");
    node
}

/// The route's stored versions and the active one, as the tenant API lists them.
async fn versions(node: &Node) -> Value {
    let (code, list) = node
        .admin(
            "GET",
            "/v3/accounts/acme/functions/device-credentials",
            None,
        )
        .await;
    assert_eq!(code, 200, "{list}");
    serde_json::from_str(&list).unwrap()
}

async fn upload(node: &Node, name_or_bytes: &[u8], query: &str) -> (u16, Value) {
    let path = format!("/v3/accounts/acme/functions/device-credentials{query}");
    let (code, body) = node
        .admin_raw(
            "PUT",
            &path,
            Some(name_or_bytes),
            Some((OPERATOR_KEY, OPERATOR_SECRET)),
        )
        .await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn activate(node: &Node, version: &str) {
    let body = serde_json::json!({ "version": version }).to_string();
    let (code, answer) = node
        .admin(
            "POST",
            "/v3/accounts/acme/functions/device-credentials/activate",
            Some(&body),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
}

async fn acme_session(node: &Node) -> psk_client::TlsStream {
    wolf(node, ACME_ICCID.as_bytes(), &ACME_KEY, KeyExchange::PskKe)
        .await
        .unwrap()
}

/// The `v` field a tenant fixture adds, or None for the platform's own answer.
fn served_by(answer: &(u16, String)) -> Option<String> {
    let json: Value = serde_json::from_str(&answer.1).ok()?;
    json.get("v").and_then(Value::as_str).map(str::to_owned)
}

#[tokio::test]
async fn upload_activate_roll_back_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let mut sim = acme_session(&node).await;
    assert_eq!(exchange(&mut sim, &post("d", ACME_ICCID)).await[0].0, 200);
    assert_eq!(
        served_by(&exchange(&mut sim, &get("d", ACME_ICCID)).await[0]),
        None
    );

    let started = Instant::now();
    let (code, a) = upload(&node, &fixture("tenant-a"), "").await;
    assert_eq!(code, 200, "{a}");
    let first = exchange(&mut sim, &get("d", ACME_ICCID)).await[0].clone();
    println!(
        "upload to first served request: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(served_by(&first).as_deref(), Some("a"), "{first:?}");
    let version_a = a["version"].as_str().unwrap().to_owned();
    assert_eq!(version_a.len(), 64);
    assert_eq!(a["interface"], "wasi:http/handler@0.3.0");

    // Stored but not served, then served, then rolled back.
    let (code, b) = upload(&node, &fixture("tenant-b"), "?activate=false").await;
    assert_eq!((code, &b["active"]), (200, &Value::Bool(false)));
    assert_eq!(
        served_by(&exchange(&mut sim, &get("d", ACME_ICCID)).await[0]).as_deref(),
        Some("a")
    );
    activate(&node, b["version"].as_str().unwrap()).await;
    assert_eq!(
        served_by(&exchange(&mut sim, &get("d", ACME_ICCID)).await[0]).as_deref(),
        Some("b")
    );
    activate(&node, &version_a).await;
    assert_eq!(
        served_by(&exchange(&mut sim, &get("d", ACME_ICCID)).await[0]).as_deref(),
        Some("a")
    );

    let list = versions(&node).await;
    assert_eq!(list["active"], version_a.as_str());
    assert_eq!(list["versions"].as_array().unwrap().len(), 2);
    assert_eq!(list["versions"][0]["uploaded_by"], "operator");

    // Other accounts are untouched.
    let mut demo = demo_wolf(&node).await;
    assert_eq!(exchange(&mut demo, &post("d", DEMO_ICCID)).await[0].0, 200);
    assert_eq!(
        served_by(&exchange(&mut demo, &get("d", DEMO_ICCID)).await[0]),
        None
    );

    // Removing returns the route to the platform's component; a restart keeps what is active.
    let (code, _) = node
        .admin(
            "DELETE",
            "/v3/accounts/acme/functions/device-credentials",
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        served_by(&exchange(&mut sim, &get("d", ACME_ICCID)).await[0]),
        None
    );
    activate(&node, &version_a).await;
    node.stop().await;
    let node = start_with(dir.path(), &[]).await;
    let mut sim = acme_session(&node).await;
    assert_eq!(
        served_by(&exchange(&mut sim, &get("d", ACME_ICCID)).await[0]).as_deref(),
        Some("a")
    );
    assert!(node.log().contains("tenant_functions=1"));
}

#[tokio::test]
async fn a_stable_wasi_http_0_2_handler_is_served_too() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let (code, answer) = upload(&node, &fixture("p2-credentials"), "").await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["interface"]
            .as_str()
            .unwrap()
            .starts_with("wasi:http/incoming-handler@0.2"),
        "{answer}"
    );
    let mut sim = acme_session(&node).await;
    assert_eq!(exchange(&mut sim, &post("d", ACME_ICCID)).await[0].0, 200);
    let got = exchange(&mut sim, &get("d", ACME_ICCID)).await;
    assert_eq!(served_by(&got[0]).as_deref(), Some("p2"), "{got:?}");
    assert_eq!(
        exchange(&mut sim, &get("ghost", ACME_ICCID)).await[0].0,
        404
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("too large", vec![0u8; (16 << 20) + 1], "larger than 16 MiB"),
        (
            "garbage",
            b"not wasm at all".to_vec(),
            "not a WebAssembly component",
        ),
        ("core module", core_module, "not a WebAssembly component"),
        ("psk-admin import", fixture("forbidden-import"), "psk-admin"),
        ("empty", Vec::new(), "not a WebAssembly component"),
    ];
    for (what, bytes, reason) in cases {
        let (code, answer) = upload(&node, &bytes, "").await;
        assert_eq!(code, 422, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(reason),
            "{what}: {answer}"
        );
    }
    let list = versions(&node).await;
    assert_eq!(
        (
            list["active"].clone(),
            list["versions"].as_array().unwrap().len()
        ),
        (Value::Null, 0)
    );
    let (code, _) = node
        .admin_raw(
            "PUT",
            "/v3/accounts/acme/functions/psk-admin",
            Some(b"x"),
            Some((OPERATOR_KEY, OPERATOR_SECRET)),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = node
        .admin_raw(
            "PUT",
            "/v3/accounts/nobody/functions/device-create",
            Some(b"x"),
            Some((OPERATOR_KEY, OPERATOR_SECRET)),
        )
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn tenant_keys_reach_only_their_own_account() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let (code, key) = node.admin("POST", "/v3/accounts/acme/keys", None).await;
    assert_eq!(code, 201);
    let key: Value = serde_json::from_str(&key).unwrap();
    let auth = (
        key["key"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );

    let own = "/v3/accounts/acme/functions/device-credentials";
    let (code, answer) = node
        .admin_raw("PUT", own, Some(&fixture("tenant-a")), Some(auth))
        .await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("\"active\":true"));
    let (_, list) = node.admin_as("GET", own, None, Some(auth)).await;
    assert!(list.contains("tenant:acme"), "{list}");
    assert_eq!(
        node.admin_as("GET", "/v3/accounts/acme/profiles", None, Some(auth))
            .await
            .0,
        200
    );

    for (method, path) in [
        ("GET", "/v3/accounts/demo/functions/device-credentials"),
        ("GET", "/v3/accounts/demo/profiles"),
        ("POST", "/v3/accounts/acme/keys"),
        ("GET", "/v3/accounts"),
        ("DELETE", "/v3/sys/security/psk"),
    ] {
        assert_eq!(
            node.admin_as(method, path, Some("{}"), Some(auth)).await.0,
            403,
            "{method} {path}"
        );
    }
    assert_eq!(
        node.admin_as("GET", own, None, Some((auth.0, "wrong")))
            .await
            .0,
        401
    );
    assert_eq!(node.admin_as("GET", own, None, None).await.0, 401);
}

/// Keeps the demo account's SIM busy; counts answers that were not 200.
fn background_load(node: &Node, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize)> {
    let sim = node.sim.clone();
    tokio::spawn(async move {
        let psk = hex::decode(DEMO_PSK_HEX).unwrap();
        let tcp = tokio::net::TcpStream::connect(&sim).await.unwrap();
        let cfg = ClientConfig {
            identity: DEMO_ICCID.as_bytes().to_vec(),
            key: zeroize::Zeroizing::new(psk),
            cipher_list: "TLS13-AES128-GCM-SHA256".into(),
            key_exchange: KeyExchange::PskKe,
        };
        let mut s = psk_client::connect(tcp, &cfg).await.unwrap();
        exchange(&mut s, &post("bg", DEMO_ICCID)).await;
        let (mut ok, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match exchange(&mut s, &get("bg", DEMO_ICCID)).await.first() {
                Some((200, _)) => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    })
}

#[tokio::test]
async fn hostile_functions_are_cut_off_without_touching_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let limits = r#"{"deadline_ms":100,"memory_mib":32}"#;
    assert_eq!(
        node.admin("PUT", "/v3/accounts/acme/limits", Some(limits))
            .await
            .0,
        200
    );
    let mut sim = acme_session(&node).await;
    assert_eq!(exchange(&mut sim, &post("d", ACME_ICCID)).await[0].0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let load = background_load(&node, stop.clone());
    // Failures so far by kind: each hostile function adds exactly one.
    let mut expected: std::collections::HashMap<&str, u64> = Default::default();
    for (name, kind) in [
        ("spin-loop", "deadline"),
        ("memory-bomb", "trap"),
        ("trap", "trap"),
        ("big-response", "response_too_large"),
    ] {
        let (code, answer) = upload(&node, &fixture(name), "").await;
        assert_eq!(code, 200, "{name}: {answer}");
        let started = Instant::now();
        let mut sim = acme_session(&node).await;
        let got = exchange(&mut sim, &get("d", ACME_ICCID)).await;
        assert_eq!(got[0].0, 404, "{name}: {got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
        *expected.entry(kind).or_default() += 1;
        let (_, metrics) = node.admin("GET", "/metrics", None).await;
        let metrics: Value = serde_json::from_str(&metrics).unwrap();
        let count = metrics["function_failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                f["account"] == "acme" && f["function"] == "device-credentials" && f["kind"] == kind
            })
            .and_then(|f| f["count"].as_u64());
        assert_eq!(count, Some(expected[kind]), "{name}: {metrics}");
        // Nothing of it is counted against the account that behaved.
        assert!(
            !metrics["function_failures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["account"] == "demo"),
            "{name}: {metrics}"
        );
    }
    // Outbound requests are denied, whatever the guest tries.
    upload(&node, &fixture("outbound-http"), "").await;
    let mut sim = acme_session(&node).await;
    let got = exchange(&mut sim, &get("d", ACME_ICCID)).await;
    assert_eq!(got[0], (404, r#"{"err":"outbound_denied"}"#.to_owned()));

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "the demo account saw failures while acme misbehaved"
    );
    assert!(ok > 0);
    node.wait_log(|l| l.contains("function failed") && l.contains("device-credentials"))
        .await;
}

#[tokio::test]
async fn twenty_swaps_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let (_, a) = upload(&node, &fixture("tenant-a"), "").await;
    let (_, b) = upload(&node, &fixture("tenant-b"), "?activate=false").await;
    let versions = [
        a["version"].as_str().unwrap().to_owned(),
        b["version"].as_str().unwrap().to_owned(),
    ];
    let mut setup = acme_session(&node).await;
    assert_eq!(exchange(&mut setup, &post("d", ACME_ICCID)).await[0].0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (served, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for _ in 0..8 {
        let (stop, served, lost) = (stop.clone(), served.clone(), lost.clone());
        let mut sim = acme_session(&node).await;
        loops.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let got = exchange(&mut sim, &get("d", ACME_ICCID)).await;
                match got.first().map(|answer| (answer.0, served_by(answer))) {
                    Some((200, Some(v))) => {
                        seen.insert(v);
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        }));
    }
    for swap in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        activate(&node, &versions[(swap + 1) % 2]).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for l in loops {
        seen.extend(l.await.unwrap());
    }
    println!(
        "swaps under load: {} requests served, {} lost",
        served.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed)
    );
    assert_eq!(lost.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 20);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[tokio::test]
async fn the_worked_example_picks_a_profile_from_the_iccid() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let (code, answer) = node
        .admin(
            "PUT",
            "/v3/accounts/acme/profiles/uk-meter",
            Some(r#"{"publish":["uk/{DEVICE_ID}"]}"#),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let path = "/v3/accounts/acme/functions/device-create";
    let (code, answer) = node
        .admin_raw(
            "PUT",
            path,
            Some(&example("iccid-profile")),
            Some((OPERATOR_KEY, OPERATOR_SECRET)),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let mut sim = acme_session(&node).await;
    let got = exchange(&mut sim, &post("meter-1", ACME_ICCID)).await;
    assert_eq!(got[0].0, 200, "{got:?}");
    let body: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["site"], "uk-meter", "{body}");
    assert!(body["pwd"].as_str().is_some_and(|p| p.len() == 24));
}

#[tokio::test]
async fn a_sims_spin_headers_never_reach_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let (code, answer) = upload(&node, &fixture("echo-headers"), "").await;
    assert_eq!(code, 200, "{answer}");
    let mut sim = acme_session(&node).await;
    // Forged in every spelling, before and after where the host's would go.
    let request = format!(
        "GET /v1/dev/real?iccid={ACME_ICCID} HTTP/1.1\r\nspin-path-match-device-id: forged\r\n\
         Spin-Path-Match-Device-Id: forged2\r\nspin-full-url: http://evil/\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        exchange(&mut sim, &request).await,
        vec![(200, "spin-path-match-device-id=real".to_owned())]
    );
}

/// Each quota, set small through the limits route, refuses the write that would
/// exceed it by name, and the refused write changes nothing.
#[tokio::test]
async fn quotas_refuse_by_name_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let limits =
        r#"{"function_versions":1,"devices_per_sim":1,"profiles":1,"config_per_device":1}"#;
    let (code, answer) = node
        .admin("PUT", "/v3/accounts/acme/limits", Some(limits))
        .await;
    assert_eq!(code, 200, "{answer}");

    // Function versions: the first fits, the same bytes again take no room, a second is refused.
    let (code, first) = upload(&node, &fixture("tenant-a"), "?activate=false").await;
    assert_eq!(code, 200, "{first}");
    let (code, _) = upload(&node, &fixture("tenant-a"), "?activate=false").await;
    assert_eq!(code, 200);
    let (code, refused) = upload(&node, &fixture("tenant-b"), "").await;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["quota"], "function_versions", "{refused}");
    let list = versions(&node).await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["active"], Value::Null);
    // Deleting the inactive version frees its room.
    let version = first["version"].as_str().unwrap();
    let path = format!("/v3/accounts/acme/functions/device-credentials/versions/{version}");
    assert_eq!(node.admin("DELETE", &path, None).await.0, 200);
    let (code, answer) = upload(&node, &fixture("tenant-b"), "?activate=false").await;
    assert_eq!(code, 200, "{answer}");

    // Function bytes: a bound below the next component's size.
    let (code, _) = node
        .admin(
            "PUT",
            "/v3/accounts/acme/limits",
            Some(r#"{"function_versions":5,"function_bytes":1000}"#),
        )
        .await;
    assert_eq!(code, 200);
    let (code, refused) = upload(&node, &fixture("tenant-a"), "").await;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["quota"], "function_bytes", "{refused}");

    // Devices per SIM: the SIM's second device is refused, its first still answers.
    let (code, _) = node
        .admin("PUT", "/v3/accounts/acme/limits", Some(limits))
        .await;
    assert_eq!(code, 200);
    let mut sim = acme_session(&node).await;
    let answers = exchange(&mut sim, &post("one", ACME_ICCID)).await;
    assert_eq!(answers[0].0, 200, "{answers:?}");
    let answers = exchange(&mut sim, &post("two", ACME_ICCID)).await;
    assert_eq!(
        answers[0],
        (404, r#"{"err":"quota_devices"}"#.into()),
        "{answers:?}"
    );
    let answers = exchange(&mut sim, &post("one", ACME_ICCID)).await;
    assert_eq!(answers[0].0, 200, "a retry gets its device: {answers:?}");
    let answers = exchange(&mut sim, &get("two", ACME_ICCID)).await;
    assert_eq!(answers[0].0, 404, "nothing was created: {answers:?}");
    assert!(
        node.log().contains("quota=\"devices_per_sim\"") || node.log().contains("devices_per_sim")
    );

    // Devices per account, with room per SIM.
    let (code, _) = node
        .admin(
            "PUT",
            "/v3/accounts/acme/limits",
            Some(r#"{"devices_per_sim":5,"devices":1}"#),
        )
        .await;
    assert_eq!(code, 200);
    let answers = exchange(&mut sim, &post("three", ACME_ICCID)).await;
    assert_eq!(
        answers[0],
        (404, r#"{"err":"quota_devices"}"#.into()),
        "{answers:?}"
    );

    // Profiles and config properties through the operator's admin component.
    let (code, _) = node
        .admin("PUT", "/v3/accounts/acme/limits", Some(limits))
        .await;
    assert_eq!(code, 200);
    let (code, answer) = node
        .admin("PUT", "/v3/accounts/acme/profiles/p1", Some("{}"))
        .await;
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = node
        .admin("PUT", "/v3/accounts/acme/profiles/p1", Some("{}"))
        .await;
    assert_eq!(code, 200, "replacing takes no room: {answer}");
    let (code, answer) = node
        .admin("PUT", "/v3/accounts/acme/profiles/p2", Some("{}"))
        .await;
    assert_eq!(code, 409, "{answer}");
    assert_eq!(answer, r#"{"error":"quota","quota":"profiles"}"#);
    let (_, profiles) = node.admin("GET", "/v3/accounts/acme/profiles", None).await;
    assert!(!profiles.contains("p2"), "{profiles}");
    let config = "/v3/accounts/acme/devices/one/config";
    assert_eq!(
        node.admin("PUT", &format!("{config}/a"), Some("1")).await.0,
        200
    );
    assert_eq!(
        node.admin("PUT", &format!("{config}/a"), Some("2")).await.0,
        200
    );
    let (code, answer) = node.admin("PUT", &format!("{config}/b"), Some("1")).await;
    assert_eq!(code, 409, "{answer}");
    assert_eq!(answer, r#"{"error":"quota","quota":"config_per_device"}"#);
    let (_, listed) = node.admin("GET", config, None).await;
    assert!(!listed.contains("\"b\""), "{listed}");
    let log = node.log();
    for quota in ["devices", "profiles", "config_per_device"] {
        assert!(log.contains(quota), "the log names {quota}");
    }

    // Zero is refused: null means the default.
    let (code, _) = node
        .admin("PUT", "/v3/accounts/acme/limits", Some(r#"{"devices":0}"#))
        .await;
    assert_eq!(code, 400);
}

/// Concurrent creations cannot overshoot a quota: the count is taken under the
/// account's row lock in the insert's transaction, on either store.
#[tokio::test]
async fn concurrent_creations_stop_exactly_at_the_quota() {
    const SIMS: usize = 12;
    const QUOTA: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_acme(dir.path(), &[]).await;
    let limits = format!(r#"{{"devices_per_sim":100,"devices":{QUOTA}}}"#);
    let (code, answer) = node
        .admin("PUT", "/v3/accounts/acme/limits", Some(&limits))
        .await;
    assert_eq!(code, 200, "{answer}");
    // Every session is up before any request goes, so the creations race.
    let mut sessions = Vec::new();
    for _ in 0..SIMS {
        sessions.push(acme_session(&node).await);
    }
    let answers = futures_util::future::join_all(sessions.iter_mut().enumerate().map(
        |(i, sim)| async move { exchange(sim, &post(&format!("race-{i}"), ACME_ICCID)).await },
    ))
    .await;
    let created = answers.iter().filter(|a| a[0].0 == 200).count();
    let refused = answers
        .iter()
        .filter(|a| a[0] == (404, r#"{"err":"quota_devices"}"#.to_owned()))
        .count();
    assert_eq!((created, refused), (QUOTA, SIMS - QUOTA), "{answers:?}");
    // What exists is what was answered 200, no more.
    let mut sim = acme_session(&node).await;
    for (i, answer) in answers.iter().enumerate() {
        let now = exchange(&mut sim, &get(&format!("race-{i}"), ACME_ICCID)).await;
        assert_eq!(now[0].0, answer[0].0, "race-{i}: {now:?} after {answer:?}");
    }
}
