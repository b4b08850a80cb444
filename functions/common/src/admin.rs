//! The accounts admin API's routes, input checks and JSON bodies (admin port, `/v3/accounts/…`).

use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::rules::is_name;
use crate::value::{self, NotObject};

pub const CONTENT_TYPE: &str = "application/json";

const ACCOUNTS_PREFIX: &str = "/v3/accounts/";

/// Largest body `POST /v3/accounts/{a}/apps` reads: `{"name":…}` needs under 100
/// bytes, and anything far beyond that is not a client following the contract.
pub const APP_BODY_MAX: usize = 1024;

/// Why input was refused with 400: which field, and what is wrong with it. Never
/// carries a value the caller sent, only names that passed the name rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub field: String,
    pub problem: &'static str,
}

impl Bad {
    pub fn new(field: impl Into<String>, problem: &'static str) -> Self {
        Bad {
            field: field.into(),
            problem,
        }
    }
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// `prefix.key`, or `key` at the top level. A key that is not a name is not echoed.
pub fn field(prefix: &str, key: &str) -> String {
    let key = if is_name(key) { key } else { "(unnamed)" };
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The members of an object whose fields must all be in `known`. `prefix` names the
/// object in reasons (`""` for the body itself).
pub fn known_members<'a>(
    bytes: &'a [u8],
    prefix: &str,
    known: &[&str],
) -> Result<Vec<(String, &'a RawValue)>, Bad> {
    let whole = if prefix.is_empty() { "body" } else { prefix };
    let members = value::members(bytes).map_err(|e| match e {
        NotObject::NotJson => Bad::new(whole, "not JSON"),
        NotObject::OtherValue => Bad::new(whole, "not a JSON object"),
        NotObject::Repeated(key) => Bad::new(field(prefix, &key), "appears twice"),
    })?;
    if let Some((key, _)) = members.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(Bad::new(field(prefix, key), "unknown field"));
    }
    Ok(members)
}

/// A member's value, with JSON `null` read as absent (as for every optional field).
pub fn member<'a>(members: &[(String, &'a RawValue)], key: &str) -> Option<&'a RawValue> {
    members
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .filter(|v| v.get() != "null")
}

/// A config value as the admin API stores it: one JSON value, compact, at most
/// [`value::VALUE_MAX`] bytes.
pub fn config_value(bytes: &[u8], name: &str) -> Result<String, Bad> {
    let text = value::compact(bytes).ok_or_else(|| Bad::new(name, "not a JSON value"))?;
    if text.len() > value::VALUE_MAX {
        return Err(Bad::new(name, "longer than 200 bytes as compact JSON"));
    }
    Ok(text)
}

/// `{"error":"reason"}`.
pub fn error_body(reason: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
    }
    serde_json::to_string(&Body { error: reason })
        .unwrap_or_else(|_| r#"{"error":"internal"}"#.to_owned())
}

/// `{"config":{"NAME":value,…}}`; `Err` names a stored value that is not JSON.
pub fn config_list_json(pairs: &[(String, String)]) -> Result<String, &str> {
    #[derive(Serialize)]
    struct Body<'a> {
        config: value::Object<'a>,
    }
    let config = value::object(pairs)?;
    Ok(serde_json::to_string(&Body { config }).unwrap_or_default())
}

/// `{"name":"NAME","value":value}` for a value [`config_value`] accepted.
pub fn config_set_json(name: &str, text: &str) -> Option<String> {
    #[derive(Serialize)]
    struct Body<'a> {
        name: &'a str,
        value: &'a RawValue,
    }
    let value = value::embed(text)?;
    serde_json::to_string(&Body { name, value }).ok()
}

/// `{"deleted":"NAME"}`.
pub fn config_deleted_json(name: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        deleted: &'a str,
    }
    serde_json::to_string(&Body { deleted: name }).unwrap_or_default()
}

/// The application name in a `POST /v3/accounts/{a}/apps` body: exactly
/// `{"name":"NAME"}`, at most [`APP_BODY_MAX`] bytes.
pub fn app_name(body: &[u8]) -> Result<String, Bad> {
    if body.len() > APP_BODY_MAX {
        return Err(Bad::new("body", "longer than 1024 bytes"));
    }
    let members = known_members(body, "", &["name"])?;
    let raw = member(&members, "name").ok_or_else(|| Bad::new("name", "missing"))?;
    let name: String =
        serde_json::from_str(raw.get()).map_err(|_| Bad::new("name", "not a string"))?;
    if !is_name(&name) {
        return Err(Bad::new("name", "not a name [A-Za-z0-9._-]{1,64}"));
    }
    Ok(name)
}

/// `{"apps":[{"name":"NAME","createdAt":SECONDS},…]}`, in the order given.
pub fn apps_json(apps: &[(String, u64)]) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct App<'a> {
        name: &'a str,
        created_at: u64,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        apps: Vec<App<'a>>,
    }
    let apps = apps
        .iter()
        .map(|(name, created_at)| App {
            name,
            created_at: *created_at,
        })
        .collect();
    serde_json::to_string(&Body { apps }).unwrap_or_default()
}

/// What an admin request asks for; every name passed the name rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    GetExpiration {
        account: &'a str,
    },
    PutExpiration {
        account: &'a str,
    },
    ListProfiles {
        account: &'a str,
    },
    PutProfile {
        account: &'a str,
        profile: &'a str,
    },
    ListConfig {
        account: &'a str,
        device: &'a str,
    },
    PutConfig {
        account: &'a str,
        device: &'a str,
        name: &'a str,
    },
    DeleteConfig {
        account: &'a str,
        device: &'a str,
        name: &'a str,
    },
    Rotate {
        account: &'a str,
        device: &'a str,
    },
    DeleteDevice {
        account: &'a str,
        device: &'a str,
    },
    CreateApp {
        account: &'a str,
    },
    ListApps {
        account: &'a str,
    },
    DeleteApp {
        account: &'a str,
        name: &'a str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such path in this API.
    NotFound,
    /// The path exists; these methods (an `Allow` header value) are what it answers.
    Method(&'static str),
    Bad(Bad),
}

/// Matches the raw path (no percent-decoding: a name has one spelling) and method.
pub fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, RouteError> {
    let rest = path
        .strip_prefix(ACCOUNTS_PREFIX)
        .ok_or(RouteError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let name = |field: &'static str, s: &'a str| {
        if is_name(s) {
            Ok(s)
        } else {
            Err(RouteError::Bad(Bad::new(
                field,
                "not a name [A-Za-z0-9._-]{1,64}",
            )))
        }
    };
    let allow = |allowed: &'static str| {
        if allowed.split(", ").any(|m| m == method) {
            Ok(())
        } else {
            Err(RouteError::Method(allowed))
        }
    };
    match segments[..] {
        [a, "expiration"] => {
            allow("GET, PUT")?;
            let account = name("account", a)?;
            Ok(if method == "GET" {
                Route::GetExpiration { account }
            } else {
                Route::PutExpiration { account }
            })
        }
        [a, "profiles"] => {
            allow("GET")?;
            Ok(Route::ListProfiles {
                account: name("account", a)?,
            })
        }
        [a, "profiles", p] => {
            allow("PUT")?;
            Ok(Route::PutProfile {
                account: name("account", a)?,
                profile: name("profile", p)?,
            })
        }
        [a, "devices", d, "config"] => {
            allow("GET")?;
            Ok(Route::ListConfig {
                account: name("account", a)?,
                device: name("device", d)?,
            })
        }
        [a, "devices", d, "config", n] => {
            allow("PUT, DELETE")?;
            let (account, device, name) =
                (name("account", a)?, name("device", d)?, name("name", n)?);
            Ok(if method == "PUT" {
                Route::PutConfig {
                    account,
                    device,
                    name,
                }
            } else {
                Route::DeleteConfig {
                    account,
                    device,
                    name,
                }
            })
        }
        [a, "devices", d, "rotate"] => {
            allow("POST")?;
            Ok(Route::Rotate {
                account: name("account", a)?,
                device: name("device", d)?,
            })
        }
        [a, "devices", d] => {
            allow("DELETE")?;
            Ok(Route::DeleteDevice {
                account: name("account", a)?,
                device: name("device", d)?,
            })
        }
        [a, "apps"] => {
            allow("GET, POST")?;
            let account = name("account", a)?;
            Ok(if method == "GET" {
                Route::ListApps { account }
            } else {
                Route::CreateApp { account }
            })
        }
        [a, "apps", n] => {
            allow("DELETE")?;
            Ok(Route::DeleteApp {
                account: name("account", a)?,
                name: name("name", n)?,
            })
        }
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(field: &str) -> Result<Route<'static>, RouteError> {
        Err(RouteError::Bad(Bad::new(
            field,
            "not a name [A-Za-z0-9._-]{1,64}",
        )))
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET", "/v3/accounts/acc-1/expiration"),
            Ok(Route::GetExpiration { account: "acc-1" })
        );
        assert_eq!(
            route("PUT", "/v3/accounts/acc-1/expiration"),
            Ok(Route::PutExpiration { account: "acc-1" })
        );
        assert_eq!(
            route("GET", "/v3/accounts/a/profiles"),
            Ok(Route::ListProfiles { account: "a" })
        );
        assert_eq!(
            route("PUT", "/v3/accounts/a/profiles/p.1"),
            Ok(Route::PutProfile {
                account: "a",
                profile: "p.1"
            })
        );
        assert_eq!(
            route("GET", "/v3/accounts/a/devices/d/config"),
            Ok(Route::ListConfig {
                account: "a",
                device: "d"
            })
        );
        assert_eq!(
            route("PUT", "/v3/accounts/a/devices/d/config/interval"),
            Ok(Route::PutConfig {
                account: "a",
                device: "d",
                name: "interval"
            })
        );
        assert_eq!(
            route("DELETE", "/v3/accounts/a/devices/d/config/interval"),
            Ok(Route::DeleteConfig {
                account: "a",
                device: "d",
                name: "interval"
            })
        );
        assert_eq!(
            route("POST", "/v3/accounts/a/devices/d/rotate"),
            Ok(Route::Rotate {
                account: "a",
                device: "d"
            })
        );
        assert_eq!(
            route("DELETE", "/v3/accounts/a/devices/dev-1"),
            Ok(Route::DeleteDevice {
                account: "a",
                device: "dev-1"
            })
        );
        assert_eq!(
            route("POST", "/v3/accounts/a/apps"),
            Ok(Route::CreateApp { account: "a" })
        );
        assert_eq!(
            route("GET", "/v3/accounts/a/apps"),
            Ok(Route::ListApps { account: "a" })
        );
        assert_eq!(
            route("DELETE", "/v3/accounts/a/apps/backend.v2"),
            Ok(Route::DeleteApp {
                account: "a",
                name: "backend.v2"
            })
        );
    }

    #[test]
    fn device_and_app_route_refusals() {
        for method in ["GET", "PUT", "POST", "PATCH"] {
            assert_eq!(
                route(method, "/v3/accounts/a/devices/d"),
                Err(RouteError::Method("DELETE")),
                "{method}"
            );
            assert_eq!(
                route(method, "/v3/accounts/a/apps/x"),
                Err(RouteError::Method("DELETE")),
                "{method}"
            );
        }
        for method in ["PUT", "DELETE", "PATCH", "get"] {
            assert_eq!(
                route(method, "/v3/accounts/a/apps"),
                Err(RouteError::Method("GET, POST")),
                "{method}"
            );
        }
        // The method is checked before the names, as on every other route.
        assert_eq!(
            route("GET", "/v3/accounts/a b/devices/d"),
            Err(RouteError::Method("DELETE"))
        );
        assert_eq!(
            route("DELETE", "/v3/accounts/a/devices/d%2D1"),
            bad("device")
        );
        assert_eq!(route("DELETE", "/v3/accounts/a/devices/"), bad("device"));
        assert_eq!(route("DELETE", "/v3/accounts//devices/d"), bad("account"));
        assert_eq!(route("POST", "/v3/accounts/a+b/apps"), bad("account"));
        assert_eq!(route("GET", "/v3/accounts//apps"), bad("account"));
        assert_eq!(route("DELETE", "/v3/accounts/a/apps/"), bad("name"));
        let long = format!("/v3/accounts/a/apps/{}", "n".repeat(65));
        assert_eq!(route("DELETE", &long), bad("name"));
        let max = format!("/v3/accounts/a/apps/{}", "n".repeat(64));
        assert!(route("DELETE", &max).is_ok());
        for path in [
            "/v3/accounts/a/apps/x/y",
            "/v3/accounts/a/apps/x/",
            "/v3/accounts/a/app",
            "/v3/accounts/a/devices/d/",
            "/v3/accounts/a/devices",
        ] {
            assert_eq!(route("DELETE", path), Err(RouteError::NotFound), "{path}");
        }
    }

    #[test]
    fn app_bodies() {
        assert_eq!(app_name(br#"{"name":"backend"}"#).as_deref(), Ok("backend"));
        assert_eq!(
            app_name(b" {\n \"name\" : \"a.b_c-9\" }\n").as_deref(),
            Ok("a.b_c-9")
        );
        let max = format!(r#"{{"name":"{}"}}"#, "n".repeat(64));
        assert_eq!(app_name(max.as_bytes()), Ok("n".repeat(64)));
        let refused = |body: &[u8], field: &str, problem: &'static str| {
            assert_eq!(
                app_name(body),
                Err(Bad::new(field, problem)),
                "{}",
                String::from_utf8_lossy(body)
            );
        };
        let not_a_name = "not a name [A-Za-z0-9._-]{1,64}";
        refused(b"", "body", "not JSON");
        refused(b"{", "body", "not JSON");
        refused(b"[\"backend\"]", "body", "not a JSON object");
        refused(b"\"backend\"", "body", "not a JSON object");
        refused(b"{}", "name", "missing");
        refused(br#"{"name":null}"#, "name", "missing");
        refused(br#"{"name":"a","name":"b"}"#, "name", "appears twice");
        refused(br#"{"name":"a","extra":1}"#, "extra", "unknown field");
        refused(br#"{"Name":"a"}"#, "Name", "unknown field");
        refused(br#"{"name":"a","a b":1}"#, "(unnamed)", "unknown field");
        refused(br#"{"name":42}"#, "name", "not a string");
        refused(br#"{"name":["a"]}"#, "name", "not a string");
        refused(br#"{"name":""}"#, "name", not_a_name);
        refused(br#"{"name":"a b"}"#, "name", not_a_name);
        refused(br#"{"name":"a/b"}"#, "name", not_a_name);
        refused(br#"{"name":"caf\u00e9"}"#, "name", not_a_name);
        let long = format!(r#"{{"name":"{}"}}"#, "n".repeat(65));
        refused(long.as_bytes(), "name", not_a_name);
        // The size bound comes first, whatever the body holds.
        let padded = format!(r#"{{"name":"a"{}}}"#, " ".repeat(APP_BODY_MAX - 12));
        assert_eq!(padded.len(), APP_BODY_MAX);
        assert_eq!(app_name(padded.as_bytes()).as_deref(), Ok("a"));
        let over = format!(r#"{{"name":"a"{}}}"#, " ".repeat(APP_BODY_MAX - 11));
        refused(over.as_bytes(), "body", "longer than 1024 bytes");
        refused(&[b'x'; 4096], "body", "longer than 1024 bytes");
    }

    #[test]
    fn app_lists() {
        let apps = vec![
            ("backend".to_owned(), 1_733_000_000),
            ("a\"b".to_owned(), 0),
        ];
        assert_eq!(
            apps_json(&apps),
            r#"{"apps":[{"name":"backend","createdAt":1733000000},{"name":"a\"b","createdAt":0}]}"#
        );
        assert_eq!(apps_json(&[]), r#"{"apps":[]}"#);
    }

    #[test]
    fn route_refusals() {
        assert_eq!(
            route("POST", "/v3/accounts/a/expiration"),
            Err(RouteError::Method("GET, PUT"))
        );
        assert_eq!(
            route("GET", "/v3/accounts/a/devices/d/rotate"),
            Err(RouteError::Method("POST"))
        );
        assert_eq!(
            route("GET", "/v3/accounts/a/devices/d/config/x"),
            Err(RouteError::Method("PUT, DELETE"))
        );
        assert_eq!(route("GET", "/v3/accounts/a%2Db/profiles"), bad("account"));
        assert_eq!(route("GET", "/v3/accounts//profiles"), bad("account"));
        assert_eq!(route("PUT", "/v3/accounts/a/profiles/"), bad("profile"));
        let long = format!("/v3/accounts/a/devices/{}/config", "d".repeat(65));
        assert_eq!(route("GET", &long), bad("device"));
        assert_eq!(
            route("PUT", "/v3/accounts/a/devices/d/config/a b"),
            bad("name")
        );
        for path in [
            "/v3/accounts/a",
            "/v3/accounts/a/",
            "/v3/accounts/a/profiles/p/x",
            "/v3/accounts/a/devices",
            "/v3/sys/security/psk",
            "/v3/accounts/a/b/expiration",
        ] {
            assert_eq!(route("GET", path), Err(RouteError::NotFound), "{path}");
        }
    }

    #[test]
    fn config_values() {
        assert_eq!(
            config_value(b" { \"a\" : [1, 2] } ", "x").as_deref(),
            Ok(r#"{"a":[1,2]}"#)
        );
        assert_eq!(
            config_value(b"\"mqtt.example.com\"", "x").as_deref(),
            Ok("\"mqtt.example.com\"")
        );
        let max = format!("\"{}\"", "a".repeat(198));
        assert_eq!(config_value(max.as_bytes(), "x"), Ok(max.clone()));
        let over = format!("\"{}\"", "a".repeat(199));
        assert_eq!(
            config_value(over.as_bytes(), "x"),
            Err(Bad::new("x", "longer than 200 bytes as compact JSON"))
        );
        // Whitespace does not count against the limit.
        let spaced = format!("[{}1]", "1, ".repeat(66));
        assert!(spaced.len() > 200);
        assert!(config_value(spaced.as_bytes(), "x").is_ok());
        for bad in [&b""[..], b"{", b"1 2", b"undefined"] {
            assert_eq!(
                config_value(bad, "x"),
                Err(Bad::new("x", "not a JSON value"))
            );
        }
    }

    #[test]
    fn config_bodies() {
        let pairs = vec![
            ("interval".to_owned(), "60".to_owned()),
            ("host".to_owned(), "\"mqtt.example.com\"".to_owned()),
        ];
        assert_eq!(
            config_list_json(&pairs).as_deref(),
            Ok(r#"{"config":{"interval":60,"host":"mqtt.example.com"}}"#)
        );
        assert_eq!(config_list_json(&[]).as_deref(), Ok(r#"{"config":{}}"#));
        let broken = vec![("x".to_owned(), "[".to_owned())];
        assert_eq!(config_list_json(&broken), Err("x"));
        assert_eq!(
            config_set_json("interval", r#"{"s":[1,2]}"#).as_deref(),
            Some(r#"{"name":"interval","value":{"s":[1,2]}}"#)
        );
        assert_eq!(config_set_json("x", "{"), None);
        assert_eq!(config_deleted_json("interval"), r#"{"deleted":"interval"}"#);
    }

    #[test]
    fn errors() {
        assert_eq!(error_body("not-found"), r#"{"error":"not-found"}"#);
        assert_eq!(
            error_body(&Bad::new("publish[0]", "must not contain $").to_string()),
            r#"{"error":"publish[0]: must not contain $"}"#
        );
        assert_eq!(field("", "strategy"), "strategy");
        assert_eq!(field("expiration", "requests"), "expiration.requests");
        assert_eq!(field("", "a b\""), "(unnamed)");
    }

    #[test]
    fn object_bodies() {
        let known = ["a", "b"];
        let m = known_members(br#"{"b":1,"a":null}"#, "", &known).expect("valid");
        assert_eq!(member(&m, "b").map(|v| v.get()), Some("1"));
        assert!(member(&m, "a").is_none());
        assert_eq!(
            known_members(br#"{"a":1,"c":2}"#, "", &known).err(),
            Some(Bad::new("c", "unknown field"))
        );
        assert_eq!(
            known_members(br#"{"a":1,"a":2}"#, "x", &known).err(),
            Some(Bad::new("x.a", "appears twice"))
        );
        assert_eq!(
            known_members(b"[]", "x", &known).err(),
            Some(Bad::new("x", "not a JSON object"))
        );
        assert_eq!(
            known_members(b"", "", &known).err(),
            Some(Bad::new("body", "not JSON"))
        );
    }
}
