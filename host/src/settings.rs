//! What a node is configured with for its ports: the SIM port's limits and the admin port's access rules.
//!
//! Plain settings, built by `up` and held by the node, so that the node and the port
//! modules that read them do not import each other.

use std::net::IpAddr;
use std::time::Duration;

/// The SIM port's limits on message size and on time.
#[derive(Debug, Clone)]
pub struct SimPortConfig {
    /// No message between SIM and platform may exceed this many bytes (the contract says 250).
    pub message_limit: usize,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request must arrive whole within this long of its first byte: a SIM sends
    /// ≤ 250 bytes at once, and a drip of a byte every few seconds must not hold a slot.
    pub request_timeout: Duration,
}

/// Admin-port settings: the operator pair and the `/v3/sys/` allow-list.
pub struct AdminAccess {
    /// The operator key and secret the admin API accepts.
    pub operator: crate::secrets::OperatorCredentials,
    /// Empty: every address may call `/v3/sys/`.
    pub allow: Vec<ipnet::IpNet>,
}

impl AdminAccess {
    /// Whether `ip` may call `/v3/sys/`; an IPv4-mapped IPv6 address is its IPv4 one.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_v4_and_mapped_addresses() {
        let access = AdminAccess {
            operator: crate::secrets::OperatorCredentials::new("k".into(), "s"),
            allow: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(access.allows("10.1.2.3".parse().unwrap()));
        assert!(access.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!access.allows("127.0.0.1".parse().unwrap()));
        let open = AdminAccess {
            allow: vec![],
            ..access
        };
        assert!(open.allows("127.0.0.1".parse().unwrap()));
    }
}
