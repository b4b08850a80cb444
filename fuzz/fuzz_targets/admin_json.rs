//! The operator's and tenants' JSON bodies, as the platform components parse them.
#![no_main]

use common::{admin, expiration, profile, psk, value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(upsert) = psk::parse_upsert(data) {
        assert!((psk::PSK_MIN..=psk::PSK_MAX).contains(&upsert.psk.len()));
        assert_eq!(psk::parse_remove(data).ok(), Some(upsert.identity));
    }
    let _ = psk::parse_remove(data);
    // What the admin API stores it must read back the same.
    if let Ok(p) = profile::parse("p", data) {
        let json = profile::to_json(&p).expect("a parsed profile has JSON config");
        assert_eq!(profile::parse("p", json.as_bytes()).ok(), Some(p));
    }
    if let Ok(strategy) = expiration::parse(data, "expiration") {
        let json = expiration::to_json(strategy);
        assert_eq!(
            expiration::parse(json.as_bytes(), "expiration").ok(),
            Some(strategy)
        );
    }
    let _ = admin::app_name(data);
    let _ = admin::config_value(data, "x");
    let _ = value::members(data);
    if let Some(compact) = value::compact(data) {
        assert!(value::is_json(compact.as_bytes()));
        assert_eq!(
            value::compact(compact.as_bytes()).as_deref(),
            Some(&*compact)
        );
    }
});
