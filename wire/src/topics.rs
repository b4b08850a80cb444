//! A device's MQTT topics: the templates of a profile, the one rule host and components check them by, and the topic each makes.
//!
//! A device's topics are exact names, for subscribing as for publishing: a wildcard
//! in a device's own list would let it read other devices' topics, and the broker
//! grants a device exactly the topics its credentials carry.

/// The only placeholder a template carries; the device's id takes its place.
pub const DEVICE_ID: &str = "{DEVICE_ID}";
/// Bytes per template, before the account prefix and the device id are added.
pub const MAX_TEMPLATE_LEN: usize = 200;
/// Templates per list (publish, subscribe).
pub const MAX_TEMPLATES: usize = 8;

/// What a device of a profile without its own lists may publish to and subscribe to.
pub const DEFAULT_PUBLISH: &[&str] = &["sensor/device/{DEVICE_ID}"];
pub const DEFAULT_SUBSCRIBE: &[&str] = &["command/device/{DEVICE_ID}", "command/device/all"];

/// Checks one template; the error is the problem, worded for a 400 answer.
pub fn check(template: &str) -> Result<(), &'static str> {
    if template.is_empty() || template.len() > MAX_TEMPLATE_LEN {
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
    let expanded = template.replace(DEVICE_ID, "x");
    if expanded.contains(['{', '}']) {
        return Err("the only placeholder is {DEVICE_ID}");
    }
    // The host prefixes `{account}/`; an empty level there or anywhere is a typo,
    // not a topic anyone means.
    if expanded.split('/').any(str::is_empty) {
        return Err("has an empty level (// or a trailing /)");
    }
    if expanded.contains(['+', '#']) {
        return Err("a device's topics are exact: no wildcards + or #");
    }
    Ok(())
}

/// Whether the host stores `template`: [`check`] passes.
pub fn valid_template(template: &str) -> bool {
    check(template).is_ok()
}

/// The topic a template names for one device of an account.
pub fn expand(account_id: &str, template: &str, device_id: &str) -> String {
    format!("{account_id}/{}", template.replace(DEVICE_ID, device_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass() {
        for t in DEFAULT_PUBLISH.iter().chain(DEFAULT_SUBSCRIBE) {
            assert_eq!(check(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn exact_templates_inside_the_namespace_pass() {
        for t in [
            "a",
            "sensor/{DEVICE_ID}/temp",
            "dev-{DEVICE_ID}.x/{DEVICE_ID}",
            "a_b-c.d/~!@%^&*()=;:'\",<>?|`",
        ] {
            assert_eq!(check(t), Ok(()), "{t}");
        }
        assert_eq!(check(&"a".repeat(200)), Ok(()));
        assert_eq!(
            expand("acme", "sensor/device/{DEVICE_ID}", "d-1"),
            "acme/sensor/device/d-1"
        );
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "needs 1-200 bytes"),
            ("a b", "only printable ASCII without spaces"),
            ("a\tb", "only printable ASCII without spaces"),
            ("a\u{0}", "only printable ASCII without spaces"),
            ("a\nb", "only printable ASCII without spaces"),
            ("tempé", "only printable ASCII without spaces"),
            ("/a", "must not start with /"),
            ("$SYS/x", "must not contain $"),
            ("a/$x", "must not contain $"),
            ("a/{ID}", "the only placeholder is {DEVICE_ID}"),
            ("a/{ACCOUNT}", "the only placeholder is {DEVICE_ID}"),
            ("a/{DEVICE_ID", "the only placeholder is {DEVICE_ID}"),
            ("a//b", "has an empty level (// or a trailing /)"),
            ("a/", "has an empty level (// or a trailing /)"),
            ("a/+/b", "a device's topics are exact: no wildcards + or #"),
            ("a/#", "a device's topics are exact: no wildcards + or #"),
            ("+", "a device's topics are exact: no wildcards + or #"),
            ("a+b", "a device's topics are exact: no wildcards + or #"),
        ];
        for (t, why) in cases {
            assert_eq!(check(t), Err(*why), "{t:?}");
            assert!(!valid_template(t));
        }
        assert_eq!(check(&"a".repeat(201)), Err("needs 1-200 bytes"));
    }
}
