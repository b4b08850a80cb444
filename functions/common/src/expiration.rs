//! Credential expiration strategies (docs/protocol.md, Credentials and expiration): when a SIM's GET gets a fresh password, and their admin JSON.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::admin::{Bad, field, known_members, member};

/// Most answers one password may be handed out in before it is replaced.
pub const REQUESTS_MAX: u32 = 1_000_000;
/// Oldest a password may be allowed to get: ten years of 365.25 days.
pub const SECONDS_MAX: u64 = 315_576_000;

/// The WIT `expiration` variant, mirrored so that the rules are testable natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiration {
    OnDemand,
    AtEveryRequest,
    AfterXRequests(u32),
    TimeBased(u64),
}

impl Expiration {
    /// The strategy's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Expiration::OnDemand => "ON-DEMAND",
            Expiration::AtEveryRequest => "AT-EVERY-REQUEST",
            Expiration::AfterXRequests(_) => "AFTER-X-REQUESTS",
            Expiration::TimeBased(_) => "TIME-BASED",
        }
    }
}

/// Whether this credential GET hands out a fresh password. `served` counts the answers
/// that carried the current password, `password_age` its age in seconds.
pub fn should_rotate(strategy: Expiration, served: u32, password_age: u64) -> bool {
    match strategy {
        Expiration::OnDemand => false,
        Expiration::AtEveryRequest => true,
        // Handed out x times already: this answer is the first of the next password.
        Expiration::AfterXRequests(x) => served >= x,
        Expiration::TimeBased(seconds) => password_age >= seconds,
    }
}

/// `{"strategy":"ON-DEMAND"}`, `{"strategy":"AFTER-X-REQUESTS","requests":N}`,
/// `{"strategy":"TIME-BASED","seconds":N}`.
impl Serialize for Expiration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("strategy", self.name())?;
        match self {
            Expiration::AfterXRequests(n) => map.serialize_entry("requests", n)?,
            Expiration::TimeBased(n) => map.serialize_entry("seconds", n)?,
            Expiration::OnDemand | Expiration::AtEveryRequest => {}
        }
        map.end()
    }
}

/// The strategy as JSON text.
pub fn to_json(strategy: Expiration) -> String {
    // A map of a string and an integer always serialises.
    serde_json::to_string(&strategy).unwrap_or_default()
}

/// Reads a strategy object strictly: a known strategy, exactly the count it needs,
/// integers in range, no other field. `prefix` names the object in reasons.
pub fn parse(bytes: &[u8], prefix: &str) -> Result<Expiration, Bad> {
    let members = known_members(bytes, prefix, &["strategy", "requests", "seconds"])?;
    let strategy = member(&members, "strategy")
        .ok_or_else(|| Bad::new(field(prefix, "strategy"), "missing"))?;
    let strategy: String = serde_json::from_str(strategy.get())
        .map_err(|_| Bad::new(field(prefix, "strategy"), "not a string"))?;
    let requests = member(&members, "requests");
    let seconds = member(&members, "seconds");
    let unused = |key| Bad::new(field(prefix, key), "not used by this strategy");
    let parsed = match strategy.as_str() {
        "ON-DEMAND" => Expiration::OnDemand,
        "AT-EVERY-REQUEST" => Expiration::AtEveryRequest,
        "AFTER-X-REQUESTS" => {
            let n = requests
                .and_then(|v| serde_json::from_str::<u32>(v.get()).ok())
                .filter(|n| (1..=REQUESTS_MAX).contains(n))
                .ok_or_else(|| Bad::new(field(prefix, "requests"), "needs an integer 1-1000000"))?;
            Expiration::AfterXRequests(n)
        }
        "TIME-BASED" => {
            let n = seconds
                .and_then(|v| serde_json::from_str::<u64>(v.get()).ok())
                .filter(|n| (1..=SECONDS_MAX).contains(n))
                .ok_or_else(|| {
                    Bad::new(
                        field(prefix, "seconds"),
                        "needs an integer 1-315576000 (ten years)",
                    )
                })?;
            Expiration::TimeBased(n)
        }
        _ => {
            return Err(Bad::new(
                field(prefix, "strategy"),
                "not ON-DEMAND, AT-EVERY-REQUEST, AFTER-X-REQUESTS or TIME-BASED",
            ));
        }
    };
    match parsed {
        Expiration::AfterXRequests(_) if seconds.is_some() => Err(unused("seconds")),
        Expiration::TimeBased(_) if requests.is_some() => Err(unused("requests")),
        Expiration::OnDemand | Expiration::AtEveryRequest if requests.is_some() => {
            Err(unused("requests"))
        }
        Expiration::OnDemand | Expiration::AtEveryRequest if seconds.is_some() => {
            Err(unused("seconds"))
        }
        _ => Ok(parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_never_rotates() {
        assert!(!should_rotate(Expiration::OnDemand, 0, 0));
        assert!(!should_rotate(Expiration::OnDemand, u32::MAX, u64::MAX));
    }

    #[test]
    fn at_every_request_always_rotates() {
        assert!(should_rotate(Expiration::AtEveryRequest, 0, 0));
        assert!(should_rotate(Expiration::AtEveryRequest, 1, 1));
    }

    #[test]
    fn after_x_requests_rotates_once_handed_out_x_times() {
        let s = Expiration::AfterXRequests(3);
        assert!(!should_rotate(s, 0, u64::MAX));
        assert!(!should_rotate(s, 2, 0));
        assert!(should_rotate(s, 3, 0));
        assert!(should_rotate(s, 4, 0));
        assert!(should_rotate(Expiration::AfterXRequests(1), 1, 0));
        assert!(!should_rotate(Expiration::AfterXRequests(1), 0, 0));
        assert!(!should_rotate(
            Expiration::AfterXRequests(u32::MAX),
            u32::MAX - 1,
            0
        ));
        assert!(should_rotate(
            Expiration::AfterXRequests(u32::MAX),
            u32::MAX,
            0
        ));
    }

    #[test]
    fn time_based_rotates_at_the_age() {
        let s = Expiration::TimeBased(3600);
        assert!(!should_rotate(s, u32::MAX, 0));
        assert!(!should_rotate(s, 0, 3599));
        assert!(should_rotate(s, 0, 3600));
        assert!(should_rotate(s, 0, 3601));
        assert!(should_rotate(Expiration::TimeBased(1), 0, 1));
    }

    #[test]
    fn json_round_trip() {
        for (s, text) in [
            (Expiration::OnDemand, r#"{"strategy":"ON-DEMAND"}"#),
            (
                Expiration::AtEveryRequest,
                r#"{"strategy":"AT-EVERY-REQUEST"}"#,
            ),
            (
                Expiration::AfterXRequests(3),
                r#"{"strategy":"AFTER-X-REQUESTS","requests":3}"#,
            ),
            (
                Expiration::TimeBased(86400),
                r#"{"strategy":"TIME-BASED","seconds":86400}"#,
            ),
        ] {
            assert_eq!(to_json(s), text);
            assert_eq!(parse(text.as_bytes(), ""), Ok(s));
        }
        // Field order and whitespace are free; null reads as absent.
        assert_eq!(
            parse(
                br#" { "requests" : 1000000 , "strategy" : "AFTER-X-REQUESTS" } "#,
                ""
            ),
            Ok(Expiration::AfterXRequests(REQUESTS_MAX))
        );
        assert_eq!(
            parse(br#"{"strategy":"ON-DEMAND","seconds":null}"#, ""),
            Ok(Expiration::OnDemand)
        );
        assert_eq!(
            parse(br#"{"strategy":"TIME-BASED","seconds":315576000}"#, ""),
            Ok(Expiration::TimeBased(SECONDS_MAX))
        );
        assert_eq!(
            parse(br#"{"strategy":"TIME-BASED","seconds":1}"#, ""),
            Ok(Expiration::TimeBased(1))
        );
    }

    #[test]
    fn json_validation() {
        let requests = Bad::new("requests", "needs an integer 1-1000000");
        for n in [
            "0",
            "1000001",
            "-1",
            "3.0",
            "1e2",
            "\"3\"",
            "true",
            "[3]",
            "99999999999999999999",
        ] {
            let body = format!(r#"{{"strategy":"AFTER-X-REQUESTS","requests":{n}}}"#);
            assert_eq!(parse(body.as_bytes(), ""), Err(requests.clone()), "{n}");
        }
        assert_eq!(
            parse(br#"{"strategy":"AFTER-X-REQUESTS"}"#, ""),
            Err(requests.clone())
        );
        assert_eq!(
            parse(br#"{"strategy":"AFTER-X-REQUESTS","requests":null}"#, ""),
            Err(requests)
        );
        let seconds = Bad::new("seconds", "needs an integer 1-315576000 (ten years)");
        for n in ["0", "315576001", "-5", "60.5", "\"60\""] {
            let body = format!(r#"{{"strategy":"TIME-BASED","seconds":{n}}}"#);
            assert_eq!(parse(body.as_bytes(), ""), Err(seconds.clone()), "{n}");
        }
        let unknown = Bad::new(
            "strategy",
            "not ON-DEMAND, AT-EVERY-REQUEST, AFTER-X-REQUESTS or TIME-BASED",
        );
        for s in ["\"on-demand\"", "\"NEVER\"", "\"\""] {
            let body = format!(r#"{{"strategy":{s}}}"#);
            assert_eq!(parse(body.as_bytes(), ""), Err(unknown.clone()), "{s}");
        }
        assert_eq!(
            parse(br#"{"strategy":1}"#, ""),
            Err(Bad::new("strategy", "not a string"))
        );
        assert_eq!(parse(b"{}", ""), Err(Bad::new("strategy", "missing")));
        assert_eq!(
            parse(br#"{"strategy":"ON-DEMAND","requests":3}"#, ""),
            Err(Bad::new("requests", "not used by this strategy"))
        );
        assert_eq!(
            parse(br#"{"strategy":"AT-EVERY-REQUEST","seconds":3}"#, ""),
            Err(Bad::new("seconds", "not used by this strategy"))
        );
        assert_eq!(
            parse(
                br#"{"strategy":"AFTER-X-REQUESTS","requests":3,"seconds":3}"#,
                ""
            ),
            Err(Bad::new("seconds", "not used by this strategy"))
        );
        assert_eq!(
            parse(br#"{"strategy":"TIME-BASED","seconds":3,"requests":3}"#, ""),
            Err(Bad::new("requests", "not used by this strategy"))
        );
        assert_eq!(
            parse(br#"{"strategy":"ON-DEMAND","every":3}"#, ""),
            Err(Bad::new("every", "unknown field"))
        );
        assert_eq!(
            parse(br#"{"strategy":"X"}"#, "expiration"),
            Err(Bad::new(
                "expiration.strategy",
                "not ON-DEMAND, AT-EVERY-REQUEST, AFTER-X-REQUESTS or TIME-BASED"
            ))
        );
        assert_eq!(
            parse(b"\"ON-DEMAND\"", "expiration"),
            Err(Bad::new("expiration", "not a JSON object"))
        );
        assert_eq!(parse(b"", ""), Err(Bad::new("body", "not JSON")));
    }
}
