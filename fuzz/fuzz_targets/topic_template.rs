//! A profile's topic templates: the one rule host and components check them by, and the topics they make.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::topics::{check, expand, valid_template};

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let accepted = check(template).is_ok();
    assert_eq!(valid_template(template), accepted);
    // The component's list check says the same of a one-entry list.
    let listed = common::topics::check_list(&[template.to_owned()], "publish").is_ok();
    assert_eq!(listed, accepted);
    if accepted {
        // What the host stores names one exact topic inside the account's namespace,
        // whatever device id (a name: `[A-Za-z0-9._-]{1,64}`) fills it in.
        for device in ["d-1", "x", "A.b_c"] {
            let topic = expand("acme", template, device);
            assert!(topic.starts_with("acme/"));
            assert!(!topic.contains(['+', '#', '$', '{', '}']));
            assert!(topic.bytes().all(|b| b.is_ascii_graphic()));
            assert!(topic.split('/').all(|level| !level.is_empty()));
        }
    }
});
