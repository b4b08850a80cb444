//! The Spin manifest: routes, components and their sources, and the lookups both ports make.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wire::routes::{Listener, Lookup, RouteTable};

const PATHS: &[(&str, &str)] = &[
    ("GET", "/v1/dev/d-1"),
    ("POST", "/v1/dev/d-1"),
    ("POST", "/v3/sys/security/psk"),
    ("POST", "/v3/sys/security/psk/bulk"),
    ("GET", "/"),
    ("GET", "//"),
    ("PUT", "/v3/accounts/a/profiles/p"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = RouteTable::parse(text, Path::new("/m")) else {
        return;
    };
    for listener in [Listener::Sim, Listener::Admin] {
        let _ = table.components_on(listener);
        for (method, path) in PATHS {
            if let Lookup::Found(matched) = table.lookup(listener, method, path) {
                assert_eq!(matched.route.listener, listener);
                assert!(matched.route.ndjson_batch != Some(0));
                let mut headers = http_headers();
                matched.set_spin_headers(&mut headers);
                for (name, _) in matched.spin_headers() {
                    assert_eq!(headers.get_all(&name).iter().count(), 1);
                }
            }
        }
    }
});

fn http_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "spin-path-match-device-id",
        "forged".parse().expect("ascii"),
    );
    headers
}
