//! MQTT topic templates of a device profile: checked here so that an operator hears what is wrong before the host guards it.

use crate::admin::Bad;

/// The only placeholder a template may carry; the host replaces it with the device id.
pub const PLACEHOLDER: &str = "{DEVICE_ID}";
/// Entries per list.
pub const TOPICS_MAX: usize = 8;
/// Bytes per template, before the host adds the account prefix and the device id.
pub const TOPIC_MAX: usize = 200;

/// What a device of a profile without its own lists may publish to and subscribe to.
pub const DEFAULT_PUBLISH: &[&str] = &["sensor/device/{DEVICE_ID}"];
pub const DEFAULT_SUBSCRIBE: &[&str] = &["command/device/{DEVICE_ID}", "command/device/all"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Topic names: no wildcard.
    Publish,
    /// Topic filters: `+` and `#` as MQTT allows them.
    Subscribe,
}

/// Checks one template; the error is the problem, worded for a 400 answer.
pub fn check(template: &str, kind: Kind) -> Result<(), &'static str> {
    if template.is_empty() || template.len() > TOPIC_MAX {
        return Err("needs 1-200 bytes");
    }
    // Graphic ASCII only: no control bytes, no non-ASCII, and no spaces, which MQTT
    // allows but which break too many tools downstream to be worth it.
    if !template.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces");
    }
    if template.starts_with('/') {
        return Err("must not start with /");
    }
    // `$` topics are the broker's own ($SYS, $share): no device reaches them.
    if template.contains('$') {
        return Err("must not contain $");
    }
    let expanded = template.replace(PLACEHOLDER, "x");
    if expanded.contains(['{', '}']) {
        return Err("the only placeholder is {DEVICE_ID}");
    }
    let levels: Vec<&str> = expanded.split('/').collect();
    // The host prefixes `{account}/`; an empty level there or anywhere is a typo,
    // not a topic anyone means.
    if levels.iter().any(|l| l.is_empty()) {
        return Err("has an empty level (// or a trailing /)");
    }
    match kind {
        Kind::Publish if expanded.contains(['+', '#']) => {
            Err("a publish topic has no wildcards + or #")
        }
        Kind::Publish => Ok(()),
        Kind::Subscribe => {
            let last = levels.len() - 1;
            for (i, level) in levels.iter().enumerate() {
                if level.contains('+') && *level != "+" {
                    return Err("+ must be a whole level");
                }
                if level.contains('#') && (*level != "#" || i != last) {
                    return Err("# must be the whole last level");
                }
            }
            Ok(())
        }
    }
}

/// Checks a list (1–8 templates); the error names the entry (`publish[2]`).
pub fn check_list(templates: &[String], kind: Kind, field: &str) -> Result<(), Bad> {
    if templates.is_empty() || templates.len() > TOPICS_MAX {
        return Err(Bad::new(field, "needs 1-8 topics"));
    }
    for (i, t) in templates.iter().enumerate() {
        check(t, kind).map_err(|problem| Bad::new(format!("{field}[{i}]"), problem))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass() {
        for t in DEFAULT_PUBLISH {
            assert_eq!(check(t, Kind::Publish), Ok(()), "{t}");
        }
        for t in DEFAULT_SUBSCRIBE {
            assert_eq!(check(t, Kind::Subscribe), Ok(()), "{t}");
        }
    }

    #[test]
    fn good_templates() {
        for t in [
            "a",
            "sensor/{DEVICE_ID}/temp",
            "dev-{DEVICE_ID}.x/{DEVICE_ID}",
            "a_b-c.d/~!@%^&*()=;:'\",<>?|`",
        ] {
            assert_eq!(check(t, Kind::Publish), Ok(()), "{t}");
            assert_eq!(check(t, Kind::Subscribe), Ok(()), "{t}");
        }
        for t in ["+", "#", "a/+/b", "a/#", "+/+/#", "command/{DEVICE_ID}/+"] {
            assert_eq!(check(t, Kind::Subscribe), Ok(()), "{t}");
        }
        assert_eq!(check(&"a".repeat(200), Kind::Publish), Ok(()));
    }

    #[test]
    fn bad_templates() {
        let cases: &[(&str, Kind, &str)] = &[
            ("", Kind::Publish, "needs 1-200 bytes"),
            ("a b", Kind::Publish, "only printable ASCII without spaces"),
            (
                "a\tb",
                Kind::Subscribe,
                "only printable ASCII without spaces",
            ),
            (
                "a\u{0}",
                Kind::Publish,
                "only printable ASCII without spaces",
            ),
            (
                "tempé",
                Kind::Publish,
                "only printable ASCII without spaces",
            ),
            ("/a", Kind::Publish, "must not start with /"),
            ("/a", Kind::Subscribe, "must not start with /"),
            ("$SYS/x", Kind::Subscribe, "must not contain $"),
            ("a/$x", Kind::Publish, "must not contain $"),
            (
                "a/{ID}",
                Kind::Publish,
                "the only placeholder is {DEVICE_ID}",
            ),
            (
                "a/{device_id}",
                Kind::Publish,
                "the only placeholder is {DEVICE_ID}",
            ),
            (
                "a/{DEVICE_ID",
                Kind::Subscribe,
                "the only placeholder is {DEVICE_ID}",
            ),
            (
                "a/DEVICE_ID}",
                Kind::Subscribe,
                "the only placeholder is {DEVICE_ID}",
            ),
            (
                "a/{{DEVICE_ID}}",
                Kind::Publish,
                "the only placeholder is {DEVICE_ID}",
            ),
            (
                "a//b",
                Kind::Publish,
                "has an empty level (// or a trailing /)",
            ),
            (
                "a/",
                Kind::Subscribe,
                "has an empty level (// or a trailing /)",
            ),
            (
                "a/+",
                Kind::Publish,
                "a publish topic has no wildcards + or #",
            ),
            (
                "a/#",
                Kind::Publish,
                "a publish topic has no wildcards + or #",
            ),
            (
                "a+b",
                Kind::Publish,
                "a publish topic has no wildcards + or #",
            ),
            ("a/b+", Kind::Subscribe, "+ must be a whole level"),
            ("+a/b", Kind::Subscribe, "+ must be a whole level"),
            ("a/#/b", Kind::Subscribe, "# must be the whole last level"),
            ("a/b#", Kind::Subscribe, "# must be the whole last level"),
            ("#/#", Kind::Subscribe, "# must be the whole last level"),
        ];
        for (t, kind, why) in cases {
            assert_eq!(check(t, *kind), Err(*why), "{t:?} {kind:?}");
        }
        assert_eq!(
            check(&"a".repeat(201), Kind::Publish),
            Err("needs 1-200 bytes")
        );
    }

    #[test]
    fn lists() {
        let list = |n: usize| (0..n).map(|i| format!("t/{i}")).collect::<Vec<_>>();
        assert_eq!(check_list(&list(1), Kind::Publish, "publish"), Ok(()));
        assert_eq!(check_list(&list(8), Kind::Subscribe, "subscribe"), Ok(()));
        assert_eq!(
            check_list(&list(0), Kind::Publish, "publish"),
            Err(Bad::new("publish", "needs 1-8 topics"))
        );
        assert_eq!(
            check_list(&list(9), Kind::Subscribe, "subscribe"),
            Err(Bad::new("subscribe", "needs 1-8 topics"))
        );
        let mut l = list(3);
        l[2] = "a/#".to_owned();
        assert_eq!(
            check_list(&l, Kind::Publish, "publish"),
            Err(Bad::new(
                "publish[2]",
                "a publish topic has no wildcards + or #"
            ))
        );
    }
}
