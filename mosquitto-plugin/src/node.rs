//! Asking the node: the two requests of the contract, what counts as an answer, and the
//! circuit breaker that keeps an unreachable node from stalling every CONNECT.
//!
//! Contract: `POST {url}/broker/v1/auth` and `/broker/v1/acl` with
//! `Authorization: Bearer <key>`; only a 200 whose body parses as a
//! [`broker_policy::Verdict`] is an answer. Anything else denies (fail closed).
//!
//! Breaker: a call that fails because of the node (no connection, timeout, broken or
//! unparsable response, 5xx) opens it for [`BREAKER_OPEN`]; while open, calls fail at once
//! without touching the network. The first call after that is a probe. So with the node
//! gone, the broker loop loses at most one timeout per `BREAKER_OPEN + timeout`.
//! A 4xx does not open it: it is about the request, not the node's health.

use std::time::{Duration, Instant};

use broker_policy::{AclRequest, AuthRequest, Outcome, Verdict};
use zeroize::Zeroizing;

use crate::http::{HttpClient, HttpError};
use crate::options::NodeUrl;

pub const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// During a long outage, how often to remind the log that the node is still failing.
const OUTAGE_REMINDER: Duration = Duration::from_secs(60);
/// At most one line per this interval for 4xx answers, which do not open the breaker.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum NodeError {
    /// The breaker is open: not asked.
    BreakerOpen,
    Http(HttpError),
    Status(u16),
    BadJson(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::BreakerOpen => write!(f, "not asked: node failing"),
            NodeError::Http(err) => write!(f, "{err}"),
            NodeError::Status(status) => write!(f, "answered HTTP {status}"),
            NodeError::BadJson(err) => write!(f, "unparsable answer: {err}"),
        }
    }
}

/// What the caller should log after a call, if anything (the caller logs outside its
/// borrow of the plugin state, see `ffi::log`).
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// Warning: the node just started failing, or is still failing (periodic reminder).
    Failing(String),
    /// Notice: the node answers again.
    Recovered(String),
    /// Warning: the node refused a request (4xx), rate-limited.
    Rejected(String),
}

struct Outage {
    since: Instant,
    last_logged: Instant,
    /// Calls answered by the open breaker since the last log line.
    refused: u64,
}

#[derive(Default)]
pub struct Breaker {
    open_until: Option<Instant>,
    outage: Option<Outage>,
    last_reject_log: Option<Instant>,
    rejects_unlogged: u64,
}

impl Breaker {
    /// Whether a call may go out now.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.open_until {
            Some(until) if now < until => {
                if let Some(outage) = &mut self.outage {
                    outage.refused += 1;
                }
                false
            }
            _ => true,
        }
    }

    pub fn failure(&mut self, now: Instant, why: &NodeError) -> Option<Notice> {
        self.open_until = Some(now + BREAKER_OPEN);
        match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    since: now,
                    last_logged: now,
                    refused: 0,
                });
                Some(Notice::Failing(format!(
                    "node failing ({why}); denying clients not in the cache, retrying every {}s",
                    BREAKER_OPEN.as_secs()
                )))
            }
            Some(outage) if now.duration_since(outage.last_logged) >= OUTAGE_REMINDER => {
                let line = format!(
                    "node still failing after {}s ({why}); {} calls not made since the last report",
                    now.duration_since(outage.since).as_secs(),
                    outage.refused
                );
                outage.last_logged = now;
                outage.refused = 0;
                Some(Notice::Failing(line))
            }
            Some(_) => None,
        }
    }

    pub fn success(&mut self, now: Instant) -> Option<Notice> {
        self.open_until = None;
        self.outage.take().map(|outage| {
            Notice::Recovered(format!(
                "node answers again after {} ms",
                now.duration_since(outage.since).as_millis()
            ))
        })
    }

    fn rejected(&mut self, now: Instant, status: u16) -> Option<Notice> {
        self.rejects_unlogged += 1;
        if self
            .last_reject_log
            .is_some_and(|last| now.duration_since(last) < REJECT_LOG_INTERVAL)
        {
            return None;
        }
        self.last_reject_log = Some(now);
        let count = std::mem::take(&mut self.rejects_unlogged);
        Some(Notice::Rejected(format!(
            "node refused a request with HTTP {status} ({count} such answers since the last report); check plugin_opt_key_file and the node's broker key"
        )))
    }
}

pub struct Node {
    http: HttpClient,
    auth_path: String,
    acl_path: String,
    pub breaker: Breaker,
}

impl Node {
    pub fn new(url: &NodeUrl, key: &str, timeout: Duration) -> Node {
        Node {
            http: HttpClient::new(url.addrs.clone(), url.authority.clone(), key, timeout),
            auth_path: format!("{}/broker/v1/auth", url.base_path),
            acl_path: format!("{}/broker/v1/acl", url.base_path),
            breaker: Breaker::default(),
        }
    }

    /// Asks whether a client may connect. `Ok` is the node's verdict; `Err` denies.
    pub fn auth(&mut self, request: &AuthRequest) -> (Result<Verdict, NodeError>, Option<Notice>) {
        let body = match serde_json::to_vec(request) {
            Ok(body) => Zeroizing::new(body),
            Err(err) => return (Err(NodeError::BadJson(err.to_string())), None),
        };
        call(&mut self.http, &mut self.breaker, &self.auth_path, &body)
    }

    /// Asks whether a client the plugin holds no rules for may use a topic.
    pub fn acl(&mut self, request: &AclRequest) -> (Result<bool, NodeError>, Option<Notice>) {
        let body = match serde_json::to_vec(request) {
            Ok(body) => body,
            Err(err) => return (Err(NodeError::BadJson(err.to_string())), None),
        };
        let (result, notice) = call(&mut self.http, &mut self.breaker, &self.acl_path, &body);
        (
            result.map(|verdict| verdict.result == Outcome::Allow),
            notice,
        )
    }

    pub fn connects(&self) -> u64 {
        self.http.connects
    }
}

fn call(
    http: &mut HttpClient,
    breaker: &mut Breaker,
    path: &str,
    body: &[u8],
) -> (Result<Verdict, NodeError>, Option<Notice>) {
    if !breaker.admit(Instant::now()) {
        return (Err(NodeError::BreakerOpen), None);
    }
    let result = match http.post_json(path, body) {
        Ok(response) if response.status == 200 => serde_json::from_slice::<Verdict>(&response.body)
            .map_err(|err| NodeError::BadJson(err.to_string())),
        Ok(response) => Err(NodeError::Status(response.status)),
        Err(err) => Err(NodeError::Http(err)),
    };
    let now = Instant::now();
    let notice = match &result {
        Ok(_) => breaker.success(now),
        Err(NodeError::Status(status @ 400..=499)) => {
            // The node is up and said no to this request: no reason to stop asking.
            let notice = breaker.rejected(now, *status);
            breaker.success(now).or(notice)
        }
        Err(err) => breaker.failure(now, err),
    };
    (result, notice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::{Reply, Responder};
    use broker_policy::{Action, Rule};

    fn node_for(responder: &Responder, timeout: Duration) -> Node {
        let url = NodeUrl::parse(&format!("http://{}", responder.addr)).unwrap();
        Node::new(&url, "test-key", timeout)
    }

    fn auth_request() -> AuthRequest {
        AuthRequest {
            clientid: "c".into(),
            username: "u".into(),
            password: "p".into(),
        }
    }

    #[test]
    fn allow_with_rules_and_deny() {
        let responder = Responder::start(|seen| {
            if seen.body.contains("\"username\":\"u\"") {
                Reply::Json(
                    200,
                    r#"{"result":"allow","is_superuser":false,"acl":[{"permission":"allow","action":"publish","topic":"a/sensor/device/d"}]}"#.into(),
                )
            } else {
                Reply::Json(200, r#"{"result":"deny"}"#.into())
            }
        });
        let mut node = node_for(&responder, Duration::from_millis(250));
        let (verdict, notice) = node.auth(&auth_request());
        let verdict = verdict.unwrap();
        assert_eq!(verdict.result, Outcome::Allow);
        assert_eq!(
            verdict.acl,
            Some(vec![Rule::allow(Action::Publish, "a/sensor/device/d")])
        );
        assert_eq!(notice, None);
        let (verdict, _) = node.auth(&AuthRequest {
            username: "other".into(),
            ..auth_request()
        });
        assert_eq!(verdict.unwrap().result, Outcome::Deny);

        let seen = responder.seen();
        assert_eq!(seen[0].path, "/broker/v1/auth");
        assert_eq!(
            seen[0].body,
            r#"{"clientid":"c","username":"u","password":"p"}"#
        );
        assert_eq!(seen[0].authorization, "Bearer test-key");
    }

    #[test]
    fn acl_request_shape() {
        let responder = Responder::start(|_| Reply::Json(200, r#"{"result":"allow"}"#.into()));
        let mut node = node_for(&responder, Duration::from_millis(250));
        let (allowed, _) = node.acl(&AclRequest {
            clientid: "c".into(),
            username: "u".into(),
            topic: "a/b".into(),
            action: Action::Subscribe,
        });
        assert!(allowed.unwrap());
        let seen = responder.seen();
        assert_eq!(seen[0].path, "/broker/v1/acl");
        assert_eq!(
            seen[0].body,
            r#"{"clientid":"c","username":"u","topic":"a/b","action":"subscribe"}"#
        );
    }

    #[test]
    fn non_200_and_garbage_deny() {
        for reply in [
            Reply::Json(500, r#"{"result":"allow"}"#.into()),
            Reply::Json(401, r#"{"result":"allow"}"#.into()),
            Reply::Json(200, "not json".into()),
            Reply::Json(200, r#"{"result":"maybe"}"#.into()),
        ] {
            let responder = Responder::start(move |_| reply.clone());
            let mut node = node_for(&responder, Duration::from_millis(250));
            assert!(node.auth(&auth_request()).0.is_err());
        }
    }

    #[test]
    fn the_breaker_opens_on_failure_and_logs_once() {
        let responder = Responder::start(|_| Reply::Json(503, "{}".into()));
        let mut node = node_for(&responder, Duration::from_millis(250));
        let (result, notice) = node.auth(&auth_request());
        assert!(matches!(result, Err(NodeError::Status(503))));
        assert!(matches!(notice, Some(Notice::Failing(_))), "{notice:?}");
        for _ in 0..10 {
            let (result, notice) = node.auth(&auth_request());
            assert!(matches!(result, Err(NodeError::BreakerOpen)));
            assert_eq!(notice, None);
        }
        assert_eq!(responder.seen().len(), 1, "an open breaker must not call");
    }

    #[test]
    fn the_breaker_probes_after_a_second_and_closes_on_success() {
        let mut breaker = Breaker::default();
        let t0 = Instant::now();
        let failing = NodeError::Http(HttpError::Timeout);
        assert!(breaker.admit(t0));
        assert!(matches!(
            breaker.failure(t0, &failing),
            Some(Notice::Failing(_))
        ));
        assert!(!breaker.admit(t0 + Duration::from_millis(999)));
        assert!(breaker.admit(t0 + BREAKER_OPEN));
        // A failed probe re-opens it without a new log line.
        assert_eq!(breaker.failure(t0 + BREAKER_OPEN, &failing), None);
        assert!(!breaker.admit(t0 + BREAKER_OPEN + Duration::from_millis(10)));
        // A minute into the outage there is a reminder.
        assert!(matches!(
            breaker.failure(t0 + OUTAGE_REMINDER, &failing),
            Some(Notice::Failing(_))
        ));
        assert!(matches!(
            breaker.success(t0 + OUTAGE_REMINDER + BREAKER_OPEN),
            Some(Notice::Recovered(_))
        ));
        assert!(breaker.admit(t0 + OUTAGE_REMINDER + BREAKER_OPEN));
        assert_eq!(breaker.success(t0 + OUTAGE_REMINDER + BREAKER_OPEN), None);
    }

    #[test]
    fn a_4xx_does_not_open_the_breaker_and_logs_rarely() {
        let responder = Responder::start(|_| Reply::Json(401, "{}".into()));
        let mut node = node_for(&responder, Duration::from_millis(250));
        let (_, first) = node.auth(&auth_request());
        assert!(matches!(first, Some(Notice::Rejected(_))), "{first:?}");
        let (result, second) = node.auth(&auth_request());
        assert!(matches!(result, Err(NodeError::Status(401))));
        assert_eq!(second, None);
        assert_eq!(responder.seen().len(), 2);
    }

    #[test]
    fn an_unreachable_node_opens_the_breaker() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let url = NodeUrl::parse(&format!("http://{addr}")).unwrap();
        let mut node = Node::new(&url, "k", Duration::from_millis(250));
        let (result, notice) = node.auth(&auth_request());
        assert!(matches!(
            result,
            Err(NodeError::Http(HttpError::Connect(_)))
        ));
        assert!(matches!(notice, Some(Notice::Failing(_))));
        assert!(matches!(
            node.auth(&auth_request()).0,
            Err(NodeError::BreakerOpen)
        ));
    }
}
