//! A profile's topic templates: the component's check and the host's, and the topics they make.
#![no_main]

use common::topics::{self, Kind};
use libfuzzer_sys::fuzz_target;
use wire::topics::{expand, valid_template};

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let host = valid_template(template);
    if host {
        // What the host stores names one exact topic inside the account's namespace.
        let topic = expand("acme", template, "d-1");
        assert!(topic.starts_with("acme/"));
        assert!(!topic[5..].is_empty());
        assert!(!topic.contains(['+', '#', '$', '\0']));
        assert!(topic.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    // Nothing the component accepts as a topic name is refused by the host.
    if topics::check(template, Kind::Publish).is_ok() {
        assert!(host, "{template:?}");
    }
    let _ = topics::check(template, Kind::Subscribe);
});
