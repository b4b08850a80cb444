//! The naming rules of the wire contract (docs/protocol.md, Names and the `iccid` parameter; PSK management).

pub use wire::identity::{is_iccid, is_name};

/// Whether the `iccid=` value names the authenticated SIM. Its ICCID digits always
/// do; a SIM that authenticated with the BCD form may also send the hex of its
/// identity bytes, in either case, because that is what Pod Group's tools send.
pub fn iccid_names_sim(param: &str, sim_iccid: &str, sim_identity_hex: Option<&str>) -> bool {
    if param.is_empty() {
        return false;
    }
    param == sim_iccid || sim_identity_hex.is_some_and(|hex| param.eq_ignore_ascii_case(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("dev-1"));
        assert!(is_name("A.b_c-9"));
        assert!(is_name(&"x".repeat(64)));
        assert!(!is_name(&"x".repeat(65)));
        assert!(!is_name(""));
        assert!(!is_name("dev%2D1"));
        assert!(!is_name("dev/1"));
        assert!(!is_name("dev 1"));
        assert!(!is_name("dév"));
        assert!(!is_name("a+b"));
    }

    #[test]
    fn iccid_digits() {
        assert!(is_iccid("049305930495403"));
        assert!(is_iccid("1"));
        assert!(is_iccid(&"9".repeat(22)));
        assert!(!is_iccid(&"9".repeat(23)));
        assert!(!is_iccid(""));
        assert!(!is_iccid("12a"));
        assert!(!is_iccid(" 12"));
        assert!(!is_iccid("１２"));
    }

    #[test]
    fn iccid_param() {
        let hex = Some("98440552000000000000");
        assert!(iccid_names_sim("049305930495403", "049305930495403", None));
        assert!(!iccid_names_sim("049305930495404", "049305930495403", None));
        assert!(!iccid_names_sim("", "", None));
        // The hex form is only for a SIM that authenticated with BCD bytes.
        assert!(!iccid_names_sim(
            "98440552000000000000",
            "8944502500000000000",
            None
        ));
        assert!(iccid_names_sim(
            "98440552000000000000",
            "8944502500000000000",
            hex
        ));
        assert!(iccid_names_sim(
            "98440552000000000000",
            "8944502500000000000",
            Some("98440552000000000000")
        ));
        let upper = Some("9844055200000000000F");
        assert!(iccid_names_sim(
            "9844055200000000000f",
            "8944502500000000000",
            upper
        ));
        assert!(iccid_names_sim(
            "8944502500000000000",
            "8944502500000000000",
            hex
        ));
        assert!(!iccid_names_sim(
            "98440552000000000001",
            "8944502500000000000",
            hex
        ));
    }
}
