//! The SIM port's JSON bodies, kept compact because a whole response must fit in 250 bytes.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::value::Object;

pub const CONTENT_TYPE: &str = "application/json";

/// Field order is the wire order (`cli`, `usr`, `pwd`, `config`): serde keeps
/// declaration order.
#[derive(Serialize)]
struct CredentialsBody<'a> {
    cli: &'a str,
    usr: &'a str,
    pwd: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<Object<'a>>,
}

/// `{"cli":"…","usr":"…","pwd":"…"}`, escaped properly whatever the host hands us.
pub fn credentials(client_id: &str, username: &str, password: &str) -> String {
    credentials_with_config(client_id, username, password, None)
}

/// [`credentials`] plus `"config":{"NAME":value}` when a property was asked for; the
/// value is JSON text, already validated, and goes out as it is.
pub fn credentials_with_config(
    client_id: &str,
    username: &str,
    password: &str,
    config: Option<(&str, &RawValue)>,
) -> String {
    let body = CredentialsBody {
        cli: client_id,
        usr: username,
        pwd: password,
        config: config.map(|property| Object(vec![property])),
    };
    // Serialising strings and validated JSON into a String cannot fail; the fallback
    // keeps the request path free of panics all the same.
    serde_json::to_string(&body).unwrap_or_else(|_| error("internal"))
}

/// `{"err":"code"}`. Codes are fixed identifiers, never caller input.
pub fn error(code: &'static str) -> String {
    format!("{{\"err\":\"{code}\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_body() {
        assert_eq!(
            credentials("c-1", "u-1", "p@ss"),
            r#"{"cli":"c-1","usr":"u-1","pwd":"p@ss"}"#
        );
        assert_eq!(
            credentials("c", "u", "a\"b\\"),
            r#"{"cli":"c","usr":"u","pwd":"a\"b\\"}"#
        );
    }

    /// The whole response as the host frames it on the SIM port.
    fn response_len(body: &str) -> usize {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        head.len() + body.len()
    }

    fn raw(text: &str) -> &RawValue {
        crate::value::embed(text).expect("valid JSON")
    }

    #[test]
    fn credentials_with_a_config_property() {
        assert_eq!(
            credentials_with_config("c", "u", "p", Some(("interval", raw("60")))),
            r#"{"cli":"c","usr":"u","pwd":"p","config":{"interval":60}}"#
        );
        assert_eq!(
            credentials_with_config(
                "c",
                "u",
                "p",
                Some(("o", raw(r#"{"b":1,"a":[true,null]}"#)))
            ),
            r#"{"cli":"c","usr":"u","pwd":"p","config":{"o":{"b":1,"a":[true,null]}}}"#
        );
        assert_eq!(
            credentials_with_config("c", "u", "p", None),
            credentials("c", "u", "p")
        );
    }

    #[test]
    fn answers_fit_the_sim_limit() {
        let (cli, usr, pwd) = ("c".repeat(20), "u".repeat(20), "p".repeat(24));
        let plain = credentials(&cli, &usr, &pwd);
        assert_eq!(plain.len(), 92);
        assert_eq!(response_len(&plain), 163);
        let host = credentials_with_config(
            &cli,
            &usr,
            &pwd,
            Some(("broker-host", raw("\"mqtt.example.com\""))),
        );
        assert_eq!(response_len(&host), 208);
        // The envelope `,"config":{"":}` costs 15 bytes, which leaves 71 for the
        // property's name and compact value together at these credential lengths.
        let name = "n".repeat(20);
        let fits = format!("\"{}\"", "v".repeat(49));
        let body = credentials_with_config(&cli, &usr, &pwd, Some((&name, raw(&fits))));
        assert_eq!(response_len(&body), 250);
        let over = format!("\"{}\"", "v".repeat(50));
        let body = credentials_with_config(&cli, &usr, &pwd, Some((&name, raw(&over))));
        assert_eq!(response_len(&body), 251);
    }

    #[test]
    fn error_body() {
        assert_eq!(error("unknown_device"), r#"{"err":"unknown_device"}"#);
    }
}
