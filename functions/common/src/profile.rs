//! Device profiles (the Connio "Device Profile"): the admin PUT body, checked strictly, and the profile as JSON.

use serde::Serialize;

use crate::admin::{Bad, config_value, field, known_members, member};
use crate::expiration::{self, Expiration};
use crate::rules::is_name;
use crate::topics::{self, DEFAULT_PUBLISH, DEFAULT_SUBSCRIBE};
use crate::value::{self, NotObject, Object};

/// Config properties a profile may give its devices.
pub const CONFIG_MAX: usize = 32;

/// A profile as the admin API shows it and the host stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Property name and its value as compact JSON text, in the order given.
    pub config: Vec<(String, String)>,
    /// `None`: devices follow the account's strategy.
    pub expiration: Option<Expiration>,
}

fn topic_list(
    members: &[(String, &serde_json::value::RawValue)],
    key: &str,
    default: &[&str],
) -> Result<Vec<String>, Bad> {
    let Some(raw) = member(members, key) else {
        return Ok(default.iter().map(|t| (*t).to_owned()).collect());
    };
    let list: Vec<String> =
        serde_json::from_str(raw.get()).map_err(|_| Bad::new(key, "not an array of strings"))?;
    topics::check_list(&list, key)?;
    Ok(list)
}

fn config(raw: Option<&serde_json::value::RawValue>) -> Result<Vec<(String, String)>, Bad> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let members = value::members(raw.get().as_bytes()).map_err(|e| match e {
        NotObject::NotJson | NotObject::OtherValue => Bad::new("config", "not a JSON object"),
        NotObject::Repeated(key) => Bad::new(field("config", &key), "appears twice"),
    })?;
    if members.len() > CONFIG_MAX {
        return Err(Bad::new("config", "at most 32 properties"));
    }
    members
        .into_iter()
        .map(|(name, value)| {
            if !is_name(&name) {
                return Err(Bad::new(
                    "config",
                    "a property name is not [A-Za-z0-9._-]{1,64}",
                ));
            }
            let text = config_value(value.get().as_bytes(), &field("config", &name))?;
            Ok((name, text))
        })
        .collect()
}

/// The body of `PUT /v3/accounts/{a}/profiles/{name}`; `name` comes from the path
/// and passed the name rule. Every field is optional; topics default to the
/// platform's, config to none, expiration to the account's. Unknown fields are
/// refused: a misspelt `subcribe` must not silently become the default.
pub fn parse(name: &str, body: &[u8]) -> Result<Profile, Bad> {
    let members = known_members(
        body,
        "",
        &["name", "publish", "subscribe", "config", "expiration"],
    )?;
    // A profile read from the GET may be PUT back as it is, name included.
    if let Some(raw) = member(&members, "name")
        && serde_json::from_str::<String>(raw.get()).ok().as_deref() != Some(name)
    {
        return Err(Bad::new("name", "differs from the name in the path"));
    }
    let expiration = match member(&members, "expiration") {
        Some(raw) => Some(expiration::parse(raw.get().as_bytes(), "expiration")?),
        None => None,
    };
    Ok(Profile {
        name: name.to_owned(),
        publish: topic_list(&members, "publish", DEFAULT_PUBLISH)?,
        subscribe: topic_list(&members, "subscribe", DEFAULT_SUBSCRIBE)?,
        config: config(member(&members, "config"))?,
        expiration,
    })
}

/// `{"name":…,"publish":[…],"subscribe":[…],"config":{…},"expiration":…|null}`.
#[derive(Serialize)]
pub struct ProfileJson<'a> {
    name: &'a str,
    publish: &'a [String],
    subscribe: &'a [String],
    config: Object<'a>,
    expiration: Option<Expiration>,
}

impl Profile {
    /// The JSON shape; `Err` names a stored config value that is not JSON.
    pub fn json(&self) -> Result<ProfileJson<'_>, &str> {
        Ok(ProfileJson {
            name: &self.name,
            publish: &self.publish,
            subscribe: &self.subscribe,
            config: value::object(&self.config)?,
            expiration: self.expiration,
        })
    }
}

/// One profile as JSON text; `Err` names the config property that is not JSON.
pub fn to_json(profile: &Profile) -> Result<String, &str> {
    let json = profile.json()?;
    Ok(serde_json::to_string(&json).unwrap_or_default())
}

/// `{"profiles":[…]}`; `Err` names the profile and the property that is not JSON.
pub fn list_json(profiles: &[Profile]) -> Result<String, (&str, &str)> {
    #[derive(Serialize)]
    struct List<'a> {
        profiles: Vec<ProfileJson<'a>>,
    }
    let profiles = profiles
        .iter()
        .map(|p| p.json().map_err(|prop| (p.name.as_str(), prop)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::to_string(&List { profiles }).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"publish":["sensor/device/{DEVICE_ID}"],"subscribe":["command/device/{DEVICE_ID}","command/device/all"],"config":{"broker-host":"mqtt.example.com","broker-port":8883},"expiration":{"strategy":"AFTER-X-REQUESTS","requests":3}}"#;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn the_brief_example() {
        let p = parse("sensor_v2", EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(
            p,
            Profile {
                name: "sensor_v2".into(),
                publish: strings(&["sensor/device/{DEVICE_ID}"]),
                subscribe: strings(&["command/device/{DEVICE_ID}", "command/device/all"]),
                config: vec![
                    ("broker-host".into(), "\"mqtt.example.com\"".into()),
                    ("broker-port".into(), "8883".into()),
                ],
                expiration: Some(Expiration::AfterXRequests(3)),
            }
        );
        let json = to_json(&p).expect("valid config");
        assert_eq!(json, format!(r#"{{"name":"sensor_v2",{}"#, &EXAMPLE[1..]));
        // What the GET shows can be PUT back unchanged.
        assert_eq!(parse("sensor_v2", json.as_bytes()), Ok(p));
    }

    #[test]
    fn defaults() {
        let p = parse("p", b"{}").expect("valid");
        assert_eq!(p.publish, strings(DEFAULT_PUBLISH));
        assert_eq!(p.subscribe, strings(DEFAULT_SUBSCRIBE));
        assert!(p.config.is_empty());
        assert_eq!(p.expiration, None);
        let nulls = br#"{"publish":null,"subscribe":null,"config":null,"expiration":null}"#;
        assert_eq!(parse("p", nulls), Ok(p.clone()));
        assert_eq!(
            to_json(&p).as_deref(),
            Ok(
                r#"{"name":"p","publish":["sensor/device/{DEVICE_ID}"],"subscribe":["command/device/{DEVICE_ID}","command/device/all"],"config":{},"expiration":null}"#
            )
        );
    }

    #[test]
    fn config_is_kept_as_written() {
        let p = parse(
            "p",
            br#"{"config":{"z":{ "b" : 1, "a" : 2 },"a":1.50,"big":123456789012345678901234}}"#,
        )
        .expect("valid");
        assert_eq!(
            p.config,
            vec![
                ("z".into(), r#"{"b":1,"a":2}"#.into()),
                ("a".into(), "1.50".into()),
                ("big".into(), "123456789012345678901234".into()),
            ]
        );
        let thirty_two: Vec<String> = (0..32).map(|i| format!("\"p{i}\":{i}")).collect();
        let body = format!(r#"{{"config":{{{}}}}}"#, thirty_two.join(","));
        assert_eq!(parse("p", body.as_bytes()).map(|p| p.config.len()), Ok(32));
    }

    #[test]
    fn bad_bodies() {
        let thirty_three: Vec<String> = (0..33).map(|i| format!("\"p{i}\":{i}")).collect();
        let too_many = format!(r#"{{"config":{{{}}}}}"#, thirty_three.join(","));
        let long_value = format!(r#"{{"config":{{"a":"{}"}}}}"#, "x".repeat(199));
        let cases: Vec<(&[u8], Bad)> = vec![
            (b"", Bad::new("body", "not JSON")),
            (b"[]", Bad::new("body", "not a JSON object")),
            (
                br#"{"subcribe":["a"]}"#,
                Bad::new("subcribe", "unknown field"),
            ),
            (
                br#"{"publish":["a"],"publish":["b"]}"#,
                Bad::new("publish", "appears twice"),
            ),
            (
                br#"{"name":"other"}"#,
                Bad::new("name", "differs from the name in the path"),
            ),
            (
                br#"{"name":7}"#,
                Bad::new("name", "differs from the name in the path"),
            ),
            (
                br#"{"publish":"a/b"}"#,
                Bad::new("publish", "not an array of strings"),
            ),
            (
                br#"{"publish":["a",1]}"#,
                Bad::new("publish", "not an array of strings"),
            ),
            (
                br#"{"publish":[]}"#,
                Bad::new("publish", "needs 1-8 topics"),
            ),
            (
                br#"{"subscribe":["a","b","c","d","e","f","g","h","i"]}"#,
                Bad::new("subscribe", "needs 1-8 topics"),
            ),
            (
                br#"{"publish":["a/+"]}"#,
                Bad::new(
                    "publish[0]",
                    "a device's topics are exact: no wildcards + or #",
                ),
            ),
            (
                br#"{"subscribe":["a","a/#"]}"#,
                Bad::new(
                    "subscribe[1]",
                    "a device's topics are exact: no wildcards + or #",
                ),
            ),
            (
                br#"{"subscribe":["$SYS/#"]}"#,
                Bad::new("subscribe[0]", "must not contain $"),
            ),
            (
                br#"{"publish":["/a"]}"#,
                Bad::new("publish[0]", "must not start with /"),
            ),
            (
                br#"{"publish":["a/{ACCOUNT}"]}"#,
                Bad::new("publish[0]", "the only placeholder is {DEVICE_ID}"),
            ),
            (
                br#"{"config":[1]}"#,
                Bad::new("config", "not a JSON object"),
            ),
            (
                br#"{"config":"x"}"#,
                Bad::new("config", "not a JSON object"),
            ),
            (
                br#"{"config":{"a b":1}}"#,
                Bad::new("config", "a property name is not [A-Za-z0-9._-]{1,64}"),
            ),
            (
                br#"{"config":{"a":1,"a":2}}"#,
                Bad::new("config.a", "appears twice"),
            ),
            (
                too_many.as_bytes(),
                Bad::new("config", "at most 32 properties"),
            ),
            (
                long_value.as_bytes(),
                Bad::new("config.a", "longer than 200 bytes as compact JSON"),
            ),
            (
                br#"{"expiration":{"strategy":"SOMETIMES"}}"#,
                Bad::new(
                    "expiration.strategy",
                    "not ON-DEMAND, AT-EVERY-REQUEST, AFTER-X-REQUESTS or TIME-BASED",
                ),
            ),
            (
                br#"{"expiration":{"strategy":"AFTER-X-REQUESTS","requests":0}}"#,
                Bad::new("expiration.requests", "needs an integer 1-1000000"),
            ),
            (
                br#"{"expiration":"ON-DEMAND"}"#,
                Bad::new("expiration", "not a JSON object"),
            ),
        ];
        for (body, bad) in cases {
            assert_eq!(
                parse("p", body),
                Err(bad),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn listing() {
        let a = parse("a", b"{}").expect("valid");
        let mut b = parse("b", br#"{"config":{"k":[1]}}"#).expect("valid");
        let list = list_json(&[a.clone(), b.clone()]).expect("valid");
        let v: serde_json::Value = serde_json::from_str(&list).expect("JSON");
        assert_eq!(v["profiles"][0]["name"], "a");
        assert_eq!(v["profiles"][1]["config"]["k"][0], 1);
        assert_eq!(list_json(&[]).as_deref(), Ok(r#"{"profiles":[]}"#));
        b.config.push(("broken".into(), "{".into()));
        assert_eq!(list_json(&[a, b]), Err(("b", "broken")));
    }
}
