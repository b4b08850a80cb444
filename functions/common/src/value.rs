//! Caller JSON kept as text: validated once, compacted, and embedded in answers verbatim.
//!
//! Config values are stored as JSON text. Going through `serde_json::Value` would sort
//! object keys and round integers beyond 64 bits, so a value is only ever validated and
//! stripped of insignificant whitespace: what the operator wrote is what the SIM reads.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// Longest config value, compact: a SIM answer (credentials, one property and the
/// headers) must fit 250 bytes, so anything near this is already too big to deliver.
pub const VALUE_MAX: usize = 200;

/// `text` as one JSON value (surrounding whitespace allowed), borrowed for embedding.
pub fn embed(text: &str) -> Option<&RawValue> {
    serde_json::from_str(text).ok()
}

/// Whether `bytes` hold exactly one JSON value (surrounding whitespace allowed).
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok()
}

/// One JSON value without insignificant whitespace; `None` when `bytes` are not
/// exactly one JSON value. Strings, numbers and key order stay as written.
pub fn compact(bytes: &[u8]) -> Option<String> {
    let raw: &RawValue = serde_json::from_slice(bytes).ok()?;
    let text = raw.get();
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            // The only whitespace JSON allows between tokens; inside strings it is data.
            continue;
        }
        out.push(c);
    }
    Some(out)
}

/// Why a body is not an object whose members can be read one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotObject {
    NotJson,
    /// JSON, but an array, string, number, boolean or null.
    OtherValue,
    /// This key appears twice (serde would silently keep the last one).
    Repeated(String),
}

/// The members of a JSON object, in order, values still as text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Collect<'a>(PhantomData<&'a ()>);
        impl<'de> Visitor<'de> for Collect<'de> {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Collect(PhantomData))
    }
}

/// The members of the JSON object in `bytes`, in order, each value as text.
pub fn members(bytes: &[u8]) -> Result<Vec<(String, &RawValue)>, NotObject> {
    let Members(members) = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() && is_json(bytes) {
            NotObject::OtherValue
        } else {
            NotObject::NotJson
        }
    })?;
    let mut seen = BTreeSet::new();
    for (key, _) in &members {
        if !seen.insert(key.as_str()) {
            return Err(NotObject::Repeated(key.clone()));
        }
    }
    Ok(members)
}

/// Serialises `(name, JSON text)` pairs as one object, in the given order.
pub struct Object<'a>(pub Vec<(&'a str, &'a RawValue)>);

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The pairs as an [`Object`], or `None` (naming the first bad one) when a stored
/// text is not JSON: a store that hands back garbage must not produce a broken answer.
pub fn object(pairs: &[(String, String)]) -> Result<Object<'_>, &str> {
    pairs
        .iter()
        .map(|(name, text)| match embed(text) {
            Some(raw) => Ok((name.as_str(), raw)),
            None => Err(name.as_str()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_without_touching_data() {
        assert_eq!(compact(b" 42 ").as_deref(), Some("42"));
        assert_eq!(
            compact(b"{ \"b\" : [1, 2.50, 1e2],\n\t\"a\" : \"x y\\\" z\" }").as_deref(),
            Some(r#"{"b":[1,2.50,1e2],"a":"x y\" z"}"#)
        );
        assert_eq!(
            compact(b"123456789012345678901234567890").as_deref(),
            Some("123456789012345678901234567890")
        );
        assert_eq!(compact(br#""a\\" "#).as_deref(), Some(r#""a\\""#));
        assert_eq!(compact("\"é ü\"".as_bytes()).as_deref(), Some("\"é ü\""));
        for bad in [&b""[..], b"  ", b"{", b"1 2", b"nul", b"'a'", b"\xff"] {
            assert_eq!(compact(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_json_value() {
        for good in [&b"1"[..], b" {\"t\":21.5}\n", b"\"x\"", b"[]", b"null"] {
            assert!(is_json(good), "{good:?}");
        }
        for bad in [
            &b""[..],
            b" ",
            b"{",
            b"1 2",
            b"{\"a\":1}x",
            b"\"\xff\"",
            b"\xef\xbb\xbf1",
        ] {
            assert!(!is_json(bad), "{bad:?}");
        }
    }

    #[test]
    fn reads_members_in_order() {
        let m = members(br#"{"z":1,"a":{"k":[ 1 ]},"m":null}"#).expect("object");
        let got: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
        assert_eq!(
            got,
            vec![("z", "1"), ("a", r#"{"k":[ 1 ]}"#), ("m", "null")]
        );
        assert_eq!(members(b" {} ").map(|m| m.len()), Ok(0));
        let err = |bytes: &[u8]| members(bytes).err();
        assert_eq!(err(b"[1]"), Some(NotObject::OtherValue));
        assert_eq!(err(b"null"), Some(NotObject::OtherValue));
        assert_eq!(err(b"\"x\""), Some(NotObject::OtherValue));
        assert_eq!(err(b""), Some(NotObject::NotJson));
        assert_eq!(err(b"{\"a\":}"), Some(NotObject::NotJson));
        assert_eq!(err(b"{} {}"), Some(NotObject::NotJson));
        assert_eq!(
            err(br#"{"a":1,"b":2,"a":3}"#),
            Some(NotObject::Repeated("a".into()))
        );
    }

    #[test]
    fn embeds_verbatim() {
        let pairs = vec![
            ("b".to_owned(), "{\"y\":1,\"x\":2}".to_owned()),
            ("a".to_owned(), "1e2".to_owned()),
        ];
        let obj = object(&pairs).expect("valid");
        assert_eq!(
            serde_json::to_string(&obj).ok().as_deref(),
            Some(r#"{"b":{"y":1,"x":2},"a":1e2}"#)
        );
        let broken = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "{".to_owned()),
        ];
        assert_eq!(object(&broken).err(), Some("b"));
    }
}
