//! The SIM port's JSON bodies, kept compact because a whole response must fit in 250 bytes.

use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/json";

/// Field order is the wire order (`cli`, `usr`, `pwd`): serde keeps declaration order.
#[derive(Serialize)]
struct CredentialsBody<'a> {
    cli: &'a str,
    usr: &'a str,
    pwd: &'a str,
}

/// `{"cli":"…","usr":"…","pwd":"…"}`, escaped properly whatever the host hands us.
pub fn credentials(client_id: &str, username: &str, password: &str) -> String {
    let body = CredentialsBody {
        cli: client_id,
        usr: username,
        pwd: password,
    };
    // Serialising three strings into a String cannot fail; the fallback keeps the
    // request path free of panics all the same.
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

    #[test]
    fn error_body() {
        assert_eq!(error("unknown_device"), r#"{"err":"unknown_device"}"#);
    }
}
