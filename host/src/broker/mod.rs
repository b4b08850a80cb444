//! The MQTT broker side of device credentials: what a device may do at the broker, the `Broker` interface, and its Mosquitto implementations.
//!
//! The platform hands every device an MQTT client id, username and password; they
//! must work at a real broker, limited to the device's own topics. Today that broker
//! is Mosquitto with its dynamic-security plugin ([`DynSec`]), optionally started and
//! stopped by the platform itself ([`ManagedMosquitto`]). The plugin rewrites its whole
//! JSON file on every change, which is fine for thousands of devices and not for
//! millions, so callers only see the [`Broker`] trait and a scalable auth path can
//! replace it later.

mod dynsec;
mod managed;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use zeroize::Zeroizing;

pub use dynsec::DynSec;
pub use managed::ManagedMosquitto;

/// What one device may do at the broker.
///
/// Device ids are unique only within an account while the broker's topics, client
/// ids and usernames are global, so topics carry the account and the platform makes
/// `client_id` and `username` unique broker-wide.
#[derive(Clone)]
pub struct DeviceAccess {
    pub client_id: String,
    pub username: String,
    pub password: Zeroizing<String>,
    /// Topics the device may publish on (exact names, no wildcards).
    pub publish: Vec<String>,
    /// Topics the device may subscribe to and receive from (exact names, no wildcards).
    pub subscribe: Vec<String>,
}

impl DeviceAccess {
    /// Checks what the broker would otherwise take the wrong way: a wildcard in a
    /// topic would widen the grant, an empty name would address nobody.
    pub fn validate(&self) -> Result<(), BrokerError> {
        check_name("client id", &self.client_id)?;
        check_name("username", &self.username)?;
        if self.password.is_empty() || self.password.contains('\0') {
            return Err(BrokerError::Invalid(
                "the password is empty or contains NUL".into(),
            ));
        }
        for topic in self.publish.iter().chain(&self.subscribe) {
            check_topic(topic)?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAccess")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &"***")
            .field("publish", &self.publish)
            .field("subscribe", &self.subscribe)
            .finish()
    }
}

fn check_name(what: &str, name: &str) -> Result<(), BrokerError> {
    // MQTT strings are at most 65535 bytes; the platform's names are far shorter.
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(BrokerError::Invalid(format!(
            "{what} {name:?} is empty, too long or has control characters"
        )));
    }
    Ok(())
}

/// An exact topic name: what a device is granted must never match more than itself.
pub(crate) fn check_topic(topic: &str) -> Result<(), BrokerError> {
    if topic.is_empty()
        || topic.len() > 4096
        || topic.starts_with('$')
        || topic.contains(['+', '#'])
        || topic.chars().any(char::is_control)
    {
        return Err(BrokerError::Invalid(format!(
            "{topic:?} is not an exact topic name"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// Not connected, connection lost or no answer in time: worth retrying later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered and said no (the plugin's error, a refused publish).
    #[error("broker refused: {0}")]
    Refused(String),
    /// The request itself is wrong (a wildcard in a topic, the admin's username): retrying won't help.
    #[error("invalid broker request: {0}")]
    Invalid(String),
}

pub type BrokerFuture<'a, T> = BoxFuture<'a, Result<T, BrokerError>>;

/// The broker behind a small interface, so a scalable auth path can replace dynsec later.
pub trait Broker: Send + Sync {
    /// Creates or updates the client (password, client id) and its own role with
    /// exactly these ACLs. Idempotent. Updating a client disconnects its live sessions.
    fn provision<'a>(&'a self, device: &'a DeviceAccess) -> BrokerFuture<'a, ()>;

    /// Removes the client and its role, disconnecting live sessions; Ok if absent.
    fn remove<'a>(&'a self, username: &'a str) -> BrokerFuture<'a, ()>;

    /// Usernames of the clients this platform manages (for reconcile by difference).
    fn managed_clients(&self) -> BrokerFuture<'_, Vec<String>>;

    /// Publishes on behalf of the platform (QoS 1); Ok once the broker acknowledged it.
    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BrokerFuture<'a, ()>;
}

/// Where the broker is and who the platform is there: `mqtt://USER:PASSWORD@HOST:PORT`.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Zeroizing<String>,
}

impl BrokerUrl {
    pub const DEFAULT_PORT: u16 = 1883;

    pub fn new(
        host: impl Into<String>,
        port: u16,
        username: impl Into<String>,
        password: Zeroizing<String>,
    ) -> Self {
        BrokerUrl {
            host: host.into(),
            port,
            username: username.into(),
            password,
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
        write!(f, "mqtt://{}:***@{}:{}", self.username, host, self.port)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a broker URL (mqtt://USER:PASSWORD@HOST[:PORT]): {0}")]
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
        let (userinfo, hostport) = rest
            .rsplit_once('@')
            .ok_or(BrokerUrlError("no USER:PASSWORD@"))?;
        let (user, password) = userinfo
            .split_once(':')
            .ok_or(BrokerUrlError("no :PASSWORD after the user"))?;
        let username =
            percent_decode(user).ok_or(BrokerUrlError("bad percent-encoding in the user"))?;
        let password = Zeroizing::new(
            percent_decode(password)
                .ok_or(BrokerUrlError("bad percent-encoding in the password"))?,
        );
        if username.is_empty() {
            return Err(BrokerUrlError("empty user"));
        }
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
            username,
            password,
        })
    }
}

/// Hex of fresh random bytes from the OS.
pub(crate) fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut buf)?;
    Ok(hex::encode(&*buf))
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
