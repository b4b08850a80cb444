//! The checks every SIM-port device request passes before the registry is asked anything.

use crate::json;
use crate::query::{Param, param};
use crate::rules::{iccid_names_sim, is_name};

const DEVICE_PREFIX: &str = "/v1/dev/";
const DATA_SUFFIX: &str = "/data";
/// Pod Group's SIM tools send data as `POST /v1/data/{DEVICE_ID}`.
const DATA_PREFIX: &str = "/v1/data/";

/// Why a SIM request is answered 404. The code rides along as `{"err":"code"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a path this component serves.
    NoRoute,
    BadName,
    /// A parameter sent twice.
    BadQuery,
    IccidMissing,
    IccidMismatch,
    /// The id belongs to another SIM of the account.
    DeviceTaken,
    UnknownDevice,
    UnknownProfile,
    UnknownConfig,
    /// The data a SIM sends is not one JSON value.
    BadBody,
    Denied,
    /// A device creation over one of the account's device quotas (the node's log names which).
    QuotaDevices,
    Unavailable,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::BadName => "bad_name",
            Refusal::BadQuery => "bad_query",
            Refusal::IccidMissing => "iccid_missing",
            Refusal::IccidMismatch => "iccid_mismatch",
            Refusal::DeviceTaken => "device_taken",
            Refusal::UnknownDevice => "unknown_device",
            Refusal::UnknownProfile => "unknown_profile",
            Refusal::UnknownConfig => "unknown_config",
            Refusal::BadBody => "bad_body",
            Refusal::Denied => "denied",
            Refusal::QuotaDevices => "quota_devices",
            Refusal::Unavailable => "unavailable",
        }
    }

    pub fn body(self) -> String {
        json::error(self.code())
    }

    /// Refusals an operator should notice: a SIM naming someone else, reaching for
    /// another SIM's device, or the store failing. The rest are ordinary client mistakes.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Refusal::IccidMismatch | Refusal::DeviceTaken | Refusal::Denied | Refusal::Unavailable
        )
    }
}

/// Which device route is asking: they read different optional parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// POST: `profile` is honoured, so it must be a valid name.
    Create,
    /// GET: `profile` is ignored, `config` is honoured.
    Fetch,
    /// POST `/v1/dev/{DEVICE_ID}/data` or `/v1/data/{DEVICE_ID}`: neither is read.
    Data,
}

/// The SIM that the TLS handshake authenticated, as the registry reports it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub iccid: &'a str,
    pub identity_hex: Option<&'a str>,
}

/// A device request that passed the contract's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRequest<'a> {
    pub device_id: &'a str,
    pub profile: Option<&'a str>,
    pub config: Option<&'a str>,
}

/// Checks `/v1/dev/{DEVICE_ID}[/data]?iccid=…[&profile=…|&config=…]` (or, for data,
/// `/v1/data/{DEVICE_ID}?iccid=…`) on the raw path and query.
pub fn device_request<'a>(
    path: &'a str,
    query: Option<&'a str>,
    caller: Caller<'_>,
    action: Action,
) -> Result<DeviceRequest<'a>, Refusal> {
    let device_id = match action {
        Action::Data => match path.strip_prefix(DATA_PREFIX) {
            Some(id) => id,
            None => path
                .strip_prefix(DEVICE_PREFIX)
                .and_then(|rest| rest.strip_suffix(DATA_SUFFIX))
                .ok_or(Refusal::NoRoute)?,
        },
        Action::Create | Action::Fetch => {
            path.strip_prefix(DEVICE_PREFIX).ok_or(Refusal::NoRoute)?
        }
    };
    if !is_name(device_id) {
        return Err(Refusal::BadName);
    }
    match param(query, "iccid") {
        Param::Absent => return Err(Refusal::IccidMissing),
        Param::Repeated => return Err(Refusal::BadQuery),
        Param::One(iccid) if !iccid_names_sim(iccid, caller.iccid, caller.identity_hex) => {
            return Err(Refusal::IccidMismatch);
        }
        Param::One(_) => {}
    }
    let name_param = |key| match param(query, key) {
        Param::Absent => Ok(None),
        Param::Repeated => Err(Refusal::BadQuery),
        Param::One(v) if is_name(v) => Ok(Some(v)),
        Param::One(_) => Err(Refusal::BadName),
    };
    let (profile, config) = match action {
        Action::Create => (name_param("profile")?, None),
        Action::Fetch => (None, name_param("config")?),
        Action::Data => (None, None),
    };
    Ok(DeviceRequest {
        device_id,
        profile,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGITS: Caller<'static> = Caller {
        iccid: "049305930495403",
        identity_hex: None,
    };
    const BCD: Caller<'static> = Caller {
        iccid: "8944502500000000005",
        identity_hex: Some("984405520000000000f5"),
    };

    fn check(path: &str, query: &str, caller: Caller, action: Action) -> Result<(), Refusal> {
        device_request(path, Some(query), caller, action).map(|_| ())
    }

    #[test]
    fn accepts_the_contract_forms() {
        let ok = device_request(
            "/v1/dev/dev-1",
            Some("iccid=049305930495403"),
            DIGITS,
            Action::Create,
        );
        assert_eq!(
            ok,
            Ok(DeviceRequest {
                device_id: "dev-1",
                profile: None,
                config: None
            })
        );
        let ok = device_request(
            "/v1/dev/dev.1_x",
            Some("profile=sensor_v2&iccid=049305930495403"),
            DIGITS,
            Action::Create,
        );
        assert_eq!(ok.map(|r| r.profile), Ok(Some("sensor_v2")));
        for q in [
            "iccid=8944502500000000005",
            "iccid=984405520000000000f5",
            "iccid=984405520000000000F5",
        ] {
            assert_eq!(check("/v1/dev/d", q, BCD, Action::Fetch), Ok(()));
        }
        let ok = device_request(
            "/v1/dev/d",
            Some("iccid=049305930495403&config=interval"),
            DIGITS,
            Action::Fetch,
        );
        assert_eq!(ok.map(|r| r.config), Ok(Some("interval")));
    }

    #[test]
    fn device_id_rule_on_the_raw_path() {
        let q = "iccid=049305930495403";
        assert_eq!(
            check("/v1/dev/", q, DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
        assert_eq!(
            check("/v1/dev/dev%2D1", q, DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
        assert_eq!(
            check("/v1/dev/a/b", q, DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
        let long = format!("/v1/dev/{}", "d".repeat(65));
        assert_eq!(
            check(&long, q, DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
        let max = format!("/v1/dev/{}", "d".repeat(64));
        assert_eq!(check(&max, q, DIGITS, Action::Create), Ok(()));
        assert_eq!(
            check("/v2/dev/d", q, DIGITS, Action::Create),
            Err(Refusal::NoRoute)
        );
    }

    #[test]
    fn iccid_must_name_the_caller() {
        let p = "/v1/dev/d";
        assert_eq!(
            device_request(p, None, DIGITS, Action::Create),
            Err(Refusal::IccidMissing)
        );
        assert_eq!(
            check(p, "profile=x", DIGITS, Action::Create),
            Err(Refusal::IccidMissing)
        );
        assert_eq!(
            check(p, "iccid=", DIGITS, Action::Create),
            Err(Refusal::IccidMismatch)
        );
        assert_eq!(
            check(p, "iccid=049305930495404", DIGITS, Action::Create),
            Err(Refusal::IccidMismatch)
        );
        // A digits-identity SIM has no hex form.
        assert_eq!(
            check(p, "iccid=984405520000000000f5", DIGITS, Action::Create),
            Err(Refusal::IccidMismatch)
        );
        // A BCD SIM: its digits or its own identity hex, nothing near either.
        for q in [
            "iccid=984405520000000000f6",
            "iccid=8944502500000000006",
            "iccid=984405520000000000",
        ] {
            assert_eq!(
                check(p, q, BCD, Action::Fetch),
                Err(Refusal::IccidMismatch),
                "{q}"
            );
        }
        assert_eq!(
            check(p, "iccid=%30%34", DIGITS, Action::Create),
            Err(Refusal::IccidMismatch)
        );
        assert_eq!(
            check(
                p,
                "iccid=049305930495403&iccid=049305930495403",
                DIGITS,
                Action::Create
            ),
            Err(Refusal::BadQuery)
        );
    }

    #[test]
    fn optional_names() {
        let p = "/v1/dev/d";
        let q = "iccid=049305930495403";
        assert_eq!(
            check(p, &format!("{q}&profile=a%20b"), DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
        assert_eq!(
            check(p, &format!("{q}&profile="), DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
        assert_eq!(
            check(
                p,
                &format!("{q}&profile=a&profile=b"),
                DIGITS,
                Action::Create
            ),
            Err(Refusal::BadQuery)
        );
        // GET ignores profile entirely; POST ignores config.
        assert_eq!(
            check(p, &format!("{q}&profile=a%20b"), DIGITS, Action::Fetch),
            Ok(())
        );
        assert_eq!(
            check(p, &format!("{q}&config=a%20b"), DIGITS, Action::Create),
            Ok(())
        );
        assert_eq!(
            check(p, &format!("{q}&config=a%20b"), DIGITS, Action::Fetch),
            Err(Refusal::BadName)
        );
        assert_eq!(
            check(p, &format!("{q}&other=%%"), DIGITS, Action::Fetch),
            Ok(())
        );
    }

    #[test]
    fn data_route() {
        let q = "iccid=049305930495403";
        let ok = device_request("/v1/dev/dev-1/data", Some(q), DIGITS, Action::Data);
        assert_eq!(
            ok,
            Ok(DeviceRequest {
                device_id: "dev-1",
                profile: None,
                config: None
            })
        );
        // Neither optional name is read, so neither can refuse the request.
        assert_eq!(
            check(
                "/v1/dev/d/data",
                &format!("{q}&profile=a%20b&config=%%"),
                DIGITS,
                Action::Data
            ),
            Ok(())
        );
        assert_eq!(
            check("/v1/dev/d", q, DIGITS, Action::Data),
            Err(Refusal::NoRoute)
        );
        assert_eq!(
            check("/v1/dev/d/data/", q, DIGITS, Action::Data),
            Err(Refusal::NoRoute)
        );
        for bad in ["/v1/dev//data", "/v1/dev/a/b/data", "/v1/dev/d%41/data"] {
            assert_eq!(
                check(bad, q, DIGITS, Action::Data),
                Err(Refusal::BadName),
                "{bad}"
            );
        }
        assert_eq!(
            check(
                "/v1/dev/d/data",
                "iccid=049305930495404",
                DIGITS,
                Action::Data
            ),
            Err(Refusal::IccidMismatch)
        );
        assert_eq!(
            device_request("/v1/dev/d/data", None, DIGITS, Action::Data),
            Err(Refusal::IccidMissing)
        );
        // The data suffix is not a device id on the other routes.
        assert_eq!(
            check("/v1/dev/d/data", q, DIGITS, Action::Create),
            Err(Refusal::BadName)
        );
    }

    #[test]
    fn pod_group_data_route() {
        let q = "iccid=049305930495403";
        let ok = device_request("/v1/data/dev-1", Some(q), DIGITS, Action::Data);
        assert_eq!(
            ok,
            Ok(DeviceRequest {
                device_id: "dev-1",
                profile: None,
                config: None
            })
        );
        // Both shapes name the same device the same way.
        assert_eq!(
            device_request("/v1/data/d.1_x", Some(q), DIGITS, Action::Data),
            device_request("/v1/dev/d.1_x/data", Some(q), DIGITS, Action::Data)
        );
        let max = format!("/v1/data/{}", "d".repeat(64));
        assert_eq!(check(&max, q, DIGITS, Action::Data), Ok(()));
        // Pod Group's tools name a BCD SIM by its identity hex, in either case.
        for q in [
            "iccid=984405520000000000f5",
            "iccid=984405520000000000F5",
            "iccid=8944502500000000005",
        ] {
            assert_eq!(check("/v1/data/d", q, BCD, Action::Data), Ok(()), "{q}");
        }
        assert_eq!(
            check(
                "/v1/data/d",
                &format!("{q}&profile=a%20b&config=%%"),
                DIGITS,
                Action::Data
            ),
            Ok(())
        );
        let long = format!("/v1/data/{}", "d".repeat(65));
        for bad in [
            "/v1/data/",
            "/v1/data/x/y",
            "/v1/data/d/",
            "/v1/data//d",
            "/v1/data/d%41",
            "/v1/data/a b",
            "/v1/data/d/data",
            long.as_str(),
        ] {
            assert_eq!(
                check(bad, q, DIGITS, Action::Data),
                Err(Refusal::BadName),
                "{bad}"
            );
        }
        for other in ["/v1/data", "/v1/datas/d", "/v2/data/d", "/v1/Data/d"] {
            assert_eq!(
                check(other, q, DIGITS, Action::Data),
                Err(Refusal::NoRoute),
                "{other}"
            );
        }
        assert_eq!(
            device_request("/v1/data/d", None, DIGITS, Action::Data),
            Err(Refusal::IccidMissing)
        );
        assert_eq!(
            check("/v1/data/d", "iccid=049305930495404", DIGITS, Action::Data),
            Err(Refusal::IccidMismatch)
        );
        assert_eq!(
            check(
                "/v1/data/d",
                "iccid=984405520000000000f6",
                BCD,
                Action::Data
            ),
            Err(Refusal::IccidMismatch)
        );
        assert_eq!(
            check("/v1/data/d", &format!("{q}&{q}"), DIGITS, Action::Data),
            Err(Refusal::BadQuery)
        );
        // Only the data route has this shape.
        for action in [Action::Create, Action::Fetch] {
            assert_eq!(
                check("/v1/data/d", q, DIGITS, action),
                Err(Refusal::NoRoute),
                "{action:?}"
            );
        }
    }

    #[test]
    fn refusal_bodies_are_short() {
        for r in [
            Refusal::NoRoute,
            Refusal::BadName,
            Refusal::BadQuery,
            Refusal::IccidMissing,
            Refusal::IccidMismatch,
            Refusal::DeviceTaken,
            Refusal::UnknownDevice,
            Refusal::UnknownProfile,
            Refusal::UnknownConfig,
            Refusal::BadBody,
            Refusal::Denied,
            Refusal::QuotaDevices,
            Refusal::Unavailable,
        ] {
            assert!(r.body().len() <= 32, "{}", r.body());
        }
        assert_eq!(Refusal::IccidMismatch.body(), r#"{"err":"iccid_mismatch"}"#);
    }
}
