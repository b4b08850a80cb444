//! Strict validation of the operator's PSK requests (docs/protocol.md, PSK management and Bulk PSK import). No reason ever carries key bytes.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::rules::{is_iccid, is_name};

pub const PSK_MIN: usize = 16;
pub const PSK_MAX: usize = 64;

/// A validated `POST /v3/sys/security/psk` body.
#[derive(Clone, PartialEq, Eq)]
pub struct Upsert {
    pub identity: String,
    pub psk: Vec<u8>,
    pub account_id: String,
}

// Hand-written so that a stray `{:?}` can never put a key into a log.
impl fmt::Debug for Upsert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upsert")
            .field("identity", &self.identity)
            .field("psk", &format_args!("<{} bytes>", self.psk.len()))
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// Why a body was refused, worded for the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON; the position, not the content, is reported.
    Json {
        line: usize,
        column: usize,
    },
    NotAnObject,
    RepeatedField,
    Identity,
    /// Absent or `null` (serde reads both as `None`; neither gives a value).
    Missing(&'static str),
    /// `psk` is not an array.
    PskNotArray,
    PskLength(usize),
    /// The element at this index is not an integer 0–255.
    PskByte(usize),
    AccountId,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Json { line, column } => {
                write!(f, "not JSON (line {line}, column {column})")
            }
            Invalid::NotAnObject => f.write_str("not a JSON object"),
            Invalid::RepeatedField => f.write_str("a field appears twice"),
            Invalid::Missing(field) => write!(f, "missing (or null) field {field}"),
            Invalid::Identity => f.write_str("identity is not a string of 1-22 digits"),
            Invalid::PskNotArray => f.write_str("psk is not an array of byte values"),
            Invalid::PskLength(n) => {
                write!(f, "psk has {n} bytes, not {PSK_MIN}-{PSK_MAX}")
            }
            Invalid::PskByte(i) => write!(f, "psk[{i}] is not an integer 0-255"),
            Invalid::AccountId => f.write_str("accountId is not a name [A-Za-z0-9._-]{1,64}"),
        }
    }
}

/// Every field as loose JSON, so each gets our own check and our own reason
/// (serde's messages would quote the offending value, which may be key material).
#[derive(Deserialize)]
struct Fields {
    identity: Option<Value>,
    psk: Option<Value>,
    #[serde(rename = "accountId")]
    account_id: Option<Value>,
}

fn fields(body: &[u8]) -> Result<Fields, Invalid> {
    // serde would also read a struct from a JSON array: only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Invalid::NotAnObject,
                Err(e) => Invalid::Json {
                    line: e.line(),
                    column: e.column(),
                },
            },
        );
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        // With every field optional, a data error inside an object is a repeated field.
        serde_json::error::Category::Data => Invalid::RepeatedField,
        _ => Invalid::Json {
            line: e.line(),
            column: e.column(),
        },
    })
}

fn identity(value: Option<Value>) -> Result<String, Invalid> {
    match value {
        None => Err(Invalid::Missing("identity")),
        Some(Value::String(s)) if is_iccid(&s) => Ok(s),
        Some(_) => Err(Invalid::Identity),
    }
}

fn psk(value: Option<Value>) -> Result<Vec<u8>, Invalid> {
    let items = match value {
        None => return Err(Invalid::Missing("psk")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(Invalid::PskNotArray),
    };
    if !(PSK_MIN..=PSK_MAX).contains(&items.len()) {
        return Err(Invalid::PskLength(items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // as_u64 is None for floats (`64.0`, `1e2`) and negatives: only integers pass.
            v.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(Invalid::PskByte(i))
        })
        .collect()
}

fn account_id(value: Option<Value>) -> Result<String, Invalid> {
    match value {
        None => Err(Invalid::Missing("accountId")),
        Some(Value::String(s)) if is_name(&s) => Ok(s),
        Some(_) => Err(Invalid::AccountId),
    }
}

/// `{"identity":"…","psk":[…],"accountId":"…"}`; all three required, others ignored.
pub fn parse_upsert(body: &[u8]) -> Result<Upsert, Invalid> {
    let f = fields(body)?;
    Ok(Upsert {
        identity: identity(f.identity)?,
        psk: psk(f.psk)?,
        account_id: account_id(f.account_id)?,
    })
}

/// `{"identity":"…"}`; other fields ignored.
pub fn parse_remove(body: &[u8]) -> Result<String, Invalid> {
    identity(fields(body)?.identity)
}

/// The non-blank lines of an NDJSON batch, in order, without their line ending.
/// Blank lines (empty or only whitespace) get no answer, so they are skipped here.
pub fn ndjson_lines(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    batch
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> String {
        let bytes: Vec<String> = (0..n).map(|i| (64 + i % 192).to_string()).collect();
        format!("[{}]", bytes.join(","))
    }

    fn body(identity: &str, psk: &str, account: &str) -> Vec<u8> {
        format!(r#"{{"identity":{identity},"psk":{psk},"accountId":{account}}}"#).into_bytes()
    }

    #[test]
    fn accepts_the_contract_example() {
        let b = br#"{"identity":"049305930495403","psk":[64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79],"accountId":"acc-1"}"#;
        let u = parse_upsert(b).expect("valid");
        assert_eq!(u.identity, "049305930495403");
        assert_eq!(u.psk, (64..80).collect::<Vec<u8>>());
        assert_eq!(u.account_id, "acc-1");
        // Unknown fields and surrounding whitespace are fine, order is free.
        let b = br#" {"note":{"x":[1]},"accountId":"a","psk":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,255],"identity":"1"} "#;
        assert!(parse_upsert(b).is_ok());
        assert!(parse_upsert(&body("\"1\"", &key(64), "\"a\"")).is_ok());
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            parse_upsert(br#"{"psk":[],"accountId":"a"}"#),
            Err(Invalid::Missing("identity"))
        );
        let no_psk = br#"{"identity":"1","accountId":"a"}"#;
        assert_eq!(parse_upsert(no_psk), Err(Invalid::Missing("psk")));
        let no_account = format!(r#"{{"identity":"1","psk":{}}}"#, key(16));
        assert_eq!(
            parse_upsert(no_account.as_bytes()),
            Err(Invalid::Missing("accountId"))
        );
        assert_eq!(parse_upsert(b"{}"), Err(Invalid::Missing("identity")));
        let null_psk = br#"{"identity":"1","psk":null,"accountId":"a"}"#;
        assert_eq!(parse_upsert(null_psk), Err(Invalid::Missing("psk")));
    }

    #[test]
    fn identity_rule() {
        let k = key(16);
        for bad in [
            "\"\"",
            "\"12a\"",
            "\"-1\"",
            "49305930495403",
            "[\"1\"]",
            &format!("\"{}\"", "1".repeat(23)),
        ] {
            assert_eq!(
                parse_upsert(&body(bad, &k, "\"a\"")),
                Err(Invalid::Identity),
                "{bad}"
            );
        }
        let max = format!("\"{}\"", "1".repeat(22));
        assert!(parse_upsert(&body(&max, &k, "\"a\"")).is_ok());
    }

    #[test]
    fn psk_rule() {
        let id = "\"1\"";
        let acc = "\"a\"";
        assert_eq!(
            parse_upsert(&body(id, &key(15), acc)),
            Err(Invalid::PskLength(15))
        );
        assert_eq!(
            parse_upsert(&body(id, &key(65), acc)),
            Err(Invalid::PskLength(65))
        );
        assert_eq!(
            parse_upsert(&body(id, "[]", acc)),
            Err(Invalid::PskLength(0))
        );
        for not_array in ["\"40414243\"", "{}", "64"] {
            assert_eq!(
                parse_upsert(&body(id, not_array, acc)),
                Err(Invalid::PskNotArray)
            );
        }
        let fifteen = "1,".repeat(15);
        for bad in [
            "256",
            "-1",
            "64.0",
            "1e2",
            "\"64\"",
            "null",
            "true",
            "[1]",
            "1000000000000000000000",
        ] {
            let psk = format!("[{fifteen}{bad}]");
            assert_eq!(
                parse_upsert(&body(id, &psk, acc)),
                Err(Invalid::PskByte(15)),
                "{bad}"
            );
        }
        let psk = format!("[{fifteen}0]");
        assert_eq!(parse_upsert(&body(id, &psk, acc)).map(|u| u.psk[15]), Ok(0));
    }

    #[test]
    fn account_rule() {
        let k = key(16);
        for bad in [
            "\"\"",
            "\"a b\"",
            "\"a/b\"",
            "7",
            &format!("\"{}\"", "a".repeat(65)),
        ] {
            assert_eq!(
                parse_upsert(&body("\"1\"", &k, bad)),
                Err(Invalid::AccountId),
                "{bad}"
            );
        }
    }

    #[test]
    fn shape() {
        assert_eq!(parse_upsert(br#"["1",[1],"a"]"#), Err(Invalid::NotAnObject));
        assert_eq!(parse_upsert(b"1"), Err(Invalid::NotAnObject));
        assert_eq!(parse_upsert(b" null "), Err(Invalid::NotAnObject));
        let at = |line, column| Err(Invalid::Json { line, column });
        assert_eq!(parse_upsert(b"not json"), at(1, 2));
        assert_eq!(parse_upsert(b""), at(1, 0));
        assert_eq!(parse_upsert(b"  "), at(1, 2));
        assert!(matches!(
            parse_upsert(b"{\"identity\":"),
            Err(Invalid::Json { .. })
        ));
        assert!(matches!(parse_upsert(b"{} {}"), Err(Invalid::Json { .. })));
        assert!(matches!(parse_upsert(b"\xff"), Err(Invalid::Json { .. })));
        assert_eq!(
            parse_upsert(br#"{"identity":"1","identity":"2"}"#),
            Err(Invalid::RepeatedField)
        );
    }

    #[test]
    fn reasons_never_show_key_bytes() {
        let secret = format!("[{}4242]", "1,".repeat(15));
        let err = parse_upsert(&body("\"1\"", &secret, "\"a\"")).expect_err("256+");
        assert!(!err.to_string().contains("4242"), "{err}");
        let u = parse_upsert(&body("\"1\"", &key(16), "\"a\"")).expect("valid");
        assert!(!format!("{u:?}").contains("64"), "{u:?}");
    }

    #[test]
    fn remove() {
        assert_eq!(parse_remove(br#"{"identity":"123"}"#), Ok("123".to_owned()));
        assert_eq!(
            parse_remove(br#"{"identity":"123","psk":"ignored"}"#),
            Ok("123".to_owned())
        );
        assert_eq!(parse_remove(b"{}"), Err(Invalid::Missing("identity")));
        assert_eq!(parse_remove(br#"{"identity":123}"#), Err(Invalid::Identity));
    }

    #[test]
    fn ndjson() {
        let batch = b"a\n\n  \r\nb\r\n\tc\nd";
        let lines: Vec<&[u8]> = ndjson_lines(batch).collect();
        assert_eq!(lines, vec![&b"a"[..], b"b", b"\tc", b"d"]);
        assert_eq!(ndjson_lines(b"").count(), 0);
        assert_eq!(ndjson_lines(b"\n\n").count(), 0);
        assert_eq!(ndjson_lines(b"x\n").count(), 1);
    }
}
