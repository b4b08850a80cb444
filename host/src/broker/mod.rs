//! The MQTT broker side of credentials: the broker asks the platform who a client is and what it may do, and the platform tells the broker what stopped working.
//!
//! Nothing is provisioned per device. A broker (Mosquitto with this workspace's
//! plugin, or EMQX/VerneMQ with their HTTP authenticators) asks a node over HTTP
//! ([`endpoint`]); [`authority`] decides from the store, with one answer shape
//! (`broker-policy`) for every broker. The node keeps one MQTT connection to its
//! broker as the platform ([`client`]) to publish data on devices' behalf and to
//! send revocations on `$CONTROL/psk-edge/v1` ([`revocations`]), which the plugin
//! turns into dropped cache entries and kicked sessions. [`ManagedMosquitto`] is the
//! broker `up` starts itself.

pub mod authority;
pub mod client;
pub mod endpoint;
pub mod managed;
pub mod revocations;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

pub use client::BrokerClient;
pub use managed::ManagedMosquitto;

/// The platform's own broker username: every topic, `$CONTROL` included.
pub const PLATFORM_USER: &str = "psk-edge";
/// What the platform's broker password is derived from (see `Sealer::derive`): every
/// node of a deployment computes the same one, and no broker file holds it.
pub const PLATFORM_PASSWORD_LABEL: &str = "psk-edge mqtt platform password";
/// What the broker key is derived from: the bearer token a broker presents to ask.
pub const BROKER_KEY_LABEL: &str = "psk-edge broker key";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// Not connected, connection lost or no answer in time: worth retrying later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered and said no (a refused publish).
    #[error("broker refused: {0}")]
    Refused(String),
    /// The request itself is wrong (a wildcard in a topic): retrying won't help.
    #[error("invalid broker request: {0}")]
    Invalid(String),
}

/// Where the platform's broker is: `mqtt://HOST[:PORT]`, or with the credentials the
/// platform presents there, `mqtt://USER:PASSWORD@HOST[:PORT]` (default: the platform
/// user and its derived password, which a broker asking a node accepts).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, Zeroizing<String>)>,
}

impl BrokerUrl {
    pub const DEFAULT_PORT: u16 = 1883;

    pub fn new(host: impl Into<String>, port: u16) -> Self {
        BrokerUrl {
            host: host.into(),
            port,
            credentials: None,
        }
    }
}

// The password stays out of every rendering, so a URL can go into a log line.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.credentials {
            Some((user, _)) => write!(f, "mqtt://{user}:***@{host}:{}", self.port),
            None => write!(f, "mqtt://{host}:{}", self.port),
        }
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a broker URL (mqtt://[USER:PASSWORD@]HOST[:PORT]): {0}")]
pub struct BrokerUrlError(&'static str);

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or(BrokerUrlError("the scheme must be mqtt://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // The last '@' ends the credentials: a password with an unencoded '@' still parses.
        let (credentials, hostport) = match rest.rsplit_once('@') {
            None => (None, rest),
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or(BrokerUrlError("no :PASSWORD after the user"))?;
                let username = percent_decode(user)
                    .ok_or(BrokerUrlError("bad percent-encoding in the user"))?;
                let password = Zeroizing::new(
                    percent_decode(password)
                        .ok_or(BrokerUrlError("bad percent-encoding in the password"))?,
                );
                if username.is_empty() {
                    return Err(BrokerUrlError("empty user"));
                }
                (Some((username, password)), hostport)
            }
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or(BrokerUrlError("unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(BrokerUrlError("bad host"));
        }
        let port = match port {
            None => Self::DEFAULT_PORT,
            Some(port) => port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(BrokerUrlError("bad port"))?,
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(std::mem::take(&mut *out)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_parses_and_hides_the_password() {
        let url: BrokerUrl = "mqtt://admin:s%40cret:x@broker.example:1884"
            .parse()
            .unwrap();
        assert_eq!((url.host.as_str(), url.port), ("broker.example", 1884));
        let (user, password) = url.credentials.clone().unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("admin", "s@cret:x"));
        assert_eq!(
            format!("{url:?}"),
            "BrokerUrl(mqtt://admin:***@broker.example:1884)"
        );
        assert_eq!(url.to_string(), "mqtt://admin:***@broker.example:1884");

        let url: BrokerUrl = "mqtt://a:p@w@[::1]".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 1883));
        assert_eq!(url.credentials.unwrap().1.as_str(), "p@w");

        let url: BrokerUrl = "mqtt://127.0.0.1:4000".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 4000));
        assert!(url.credentials.is_none());
        assert_eq!(url.to_string(), "mqtt://127.0.0.1:4000");
        for bad in [
            "http://a:b@h:1",
            "mqtt://a@h:1",
            "mqtt://a:b@h:0",
            "mqtt://a:b@h:x",
            "mqtt://a:%zz@h",
            "mqtt://:b@h",
            "mqtt://",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad} parsed");
        }
    }
}
