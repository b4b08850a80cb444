//! A device's MQTT topics: the templates of a profile, as the host accepts them, and the topic each makes.

/// The only placeholder a template carries; the device's id takes its place.
pub const DEVICE_ID: &str = "{DEVICE_ID}";
/// Bytes per template, before the account prefix and the device id are added.
pub const MAX_TEMPLATE_LEN: usize = 200;

/// Exact topics inside the account's namespace: wildcards would let a device reach
/// other devices' topics, `$` the broker's own.
pub fn valid_template(template: &str) -> bool {
    let rest = template.replace(DEVICE_ID, "");
    (1..=MAX_TEMPLATE_LEN).contains(&template.len())
        && !template.starts_with('/')
        && rest
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !b"$+#{}".contains(&b))
}

/// The topic a template names for one device of an account.
pub fn expand(account_id: &str, template: &str, device_id: &str) -> String {
    format!("{account_id}/{}", template.replace(DEVICE_ID, device_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_stay_exact_and_inside_the_namespace() {
        assert!(valid_template("sensor/device/{DEVICE_ID}"));
        assert!(valid_template("command/device/all"));
        for bad in [
            "",
            "/abs",
            "a/+/b",
            "a/#",
            "$SYS/x",
            "a/{ACCOUNT}",
            "a\nb",
            &"x".repeat(201),
        ] {
            assert!(!valid_template(bad), "{bad:?}");
        }
        assert_eq!(
            expand("acme", "sensor/device/{DEVICE_ID}", "d-1"),
            "acme/sensor/device/d-1"
        );
    }
}
