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
#[allow(unsafe_code)]
// process control of the managed broker: uid lookup, signals, parent-death signal.
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

/// Why a request through the platform's broker connection failed.
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
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The user and password the platform presents; `None` for the platform user and its
    /// derived password.
    pub credentials: Option<(String, Zeroizing<String>)>,
}

impl BrokerUrl {
    /// The MQTT port over plain TCP, used when the URL gives none.
    pub const DEFAULT_PORT: u16 = 1883;

    /// The broker at `host:port`, with the default credentials.
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

/// A broker URL that does not parse; the text says what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("not a broker URL (mqtt://[USER:PASSWORD@]HOST[:PORT]): {0}")]
pub struct BrokerUrlError(&'static str);

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|_| BrokerUrlError("not a URL"))?;
        if !matches!(url.scheme(), "mqtt" | "tcp") {
            return Err(BrokerUrlError("the scheme must be mqtt://"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(BrokerUrlError("nothing may follow the host and port"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(BrokerUrlError("bad host")),
        };
        let port = url.port().unwrap_or(Self::DEFAULT_PORT);
        if port == 0 {
            return Err(BrokerUrlError("bad port"));
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(BrokerUrlError("empty user")),
            (_, None) => return Err(BrokerUrlError("no :PASSWORD after the user")),
            (user, Some(password)) => {
                let username =
                    decode(user).ok_or(BrokerUrlError("bad percent-encoding in the user"))?;
                let password = decode(password)
                    .ok_or(BrokerUrlError("bad percent-encoding in the password"))?;
                Some((username.to_string(), password))
            }
        };
        Ok(BrokerUrl {
            host,
            port,
            credentials,
        })
    }
}

/// Percent-decodes a URL's user or password, refusing a `%` not followed by two hex
/// digits: `url` keeps such a `%` as it is, and a password taken wrongly would fail
/// at the broker with a reason nobody could see.
fn decode(part: &str) -> Option<Zeroizing<String>> {
    let bytes = part.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .ok()?;
    Some(Zeroizing::new(decoded.into_owned()))
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
