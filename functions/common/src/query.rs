//! Raw query-string access, without percent-decoding (names are matched as sent).

/// A query parameter as the SIM sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    Absent,
    One(&'a str),
    /// Sent more than once: refused, so no two readers can pick different values.
    Repeated,
}

/// Looks up `key` in a raw query string (`a=1&b=2`). A key without `=` has the
/// empty value; empty pairs (`a=1&&b=2`) are skipped.
pub fn param<'a>(query: Option<&'a str>, key: &str) -> Param<'a> {
    let mut found = Param::Absent;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            found = match found {
                Param::Absent => Param::One(v),
                _ => Param::Repeated,
            };
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let q = Some("iccid=049305930495403&profile=p1");
        assert_eq!(param(q, "iccid"), Param::One("049305930495403"));
        assert_eq!(param(q, "profile"), Param::One("p1"));
        assert_eq!(param(q, "config"), Param::Absent);
        assert_eq!(param(None, "iccid"), Param::Absent);
        assert_eq!(param(Some(""), "iccid"), Param::Absent);
        assert_eq!(param(Some("iccid"), "iccid"), Param::One(""));
        assert_eq!(param(Some("iccid="), "iccid"), Param::One(""));
        assert_eq!(param(Some("&&iccid=1&"), "iccid"), Param::One("1"));
        assert_eq!(param(Some("iccid=1&iccid=1"), "iccid"), Param::Repeated);
        assert_eq!(param(Some("iccid=1=2"), "iccid"), Param::One("1=2"));
        // No decoding: the value is exactly what was sent.
        assert_eq!(param(Some("iccid=%30"), "iccid"), Param::One("%30"));
        assert_eq!(param(Some("ICCID=1"), "iccid"), Param::Absent);
    }
}
