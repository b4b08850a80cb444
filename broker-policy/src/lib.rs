//! What an MQTT client of psk-edge may do: the rules the platform hands out, the EMQX-shaped auth and authorization messages, and how a topic is checked against the rules.
//!
//! One decision path serves every broker: the node decides who a client is and which
//! rules it gets; the Mosquitto plugin and the node's own HTTP endpoint both evaluate
//! those rules with [`allows`]. The shapes follow EMQX's HTTP authenticator and
//! authorizer (`{"result":"allow"}`, rules with `permission`, `action`, `topic`), so an
//! EMQX or VerneMQ cluster can ask the node without a plugin.

use serde::{Deserialize, Serialize};

/// The longest topic MQTT can carry.
pub const MAX_TOPIC: usize = 65_535;
/// Usernames, client ids and passwords the platform issues are at most 24 characters
/// and its own password is 64: anything far longer is refused before any lookup.
pub const MAX_CREDENTIAL: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

/// What a rule is about, in EMQX's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Subscribe,
    All,
}

/// One rule; `topic` is an MQTT filter (`+` and `#` allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub permission: Permission,
    pub action: Action,
    pub topic: String,
}

impl Rule {
    pub fn allow(action: Action, topic: impl Into<String>) -> Self {
        Rule {
            permission: Permission::Allow,
            action,
            topic: topic.into(),
        }
    }
}

/// What a broker asks about: a publish the client sends, a subscription it asks for,
/// or a message about to be delivered to it (Mosquitto's READ check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Publish,
    Subscribe,
    Receive,
}

/// The first rule whose action and topic fit decides; none fits: deny. Rules never
/// reach `$` topics (the broker's own, `$CONTROL` among them), whatever they say.
pub fn allows(rules: &[Rule], access: Access, topic: &str) -> bool {
    if topic.starts_with('$') {
        return false;
    }
    let valid = match access {
        Access::Publish | Access::Receive => valid_topic_name(topic),
        Access::Subscribe => valid_filter(topic),
    };
    if !valid {
        return false;
    }
    rules
        .iter()
        .find(|rule| {
            let action_fits = matches!(
                (rule.action, access),
                (Action::All, _)
                    | (Action::Publish, Access::Publish)
                    | (Action::Subscribe, Access::Subscribe | Access::Receive)
            );
            action_fits
                && valid_filter(&rule.topic)
                && match access {
                    Access::Publish | Access::Receive => filter_matches(&rule.topic, topic),
                    Access::Subscribe => filter_covers(&rule.topic, topic),
                }
        })
        .is_some_and(|rule| rule.permission == Permission::Allow)
}

/// A topic a client may publish on: not empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC && !topic.contains(['+', '#', '\0'])
}

/// An MQTT filter: `+` only as a whole level, `#` only as the whole last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        level => !level.contains(['+', '#']),
    })
}

/// Does `filter` match the topic name `topic` (MQTT 5 §4.7)?
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    // A filter starting with a wildcard never matches a `$` topic.
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            // `a/#` also matches `a` itself.
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Does every topic that `inner` matches also match `outer`? What a subscription
/// may ask for: a device allowed `a/command/device/d` may not subscribe to
/// `a/command/device/+`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with(['+', '#']) && !outer.starts_with(['+', '#']) {
        return false;
    }
    let mut inner_levels = inner.split('/');
    for level in outer.split('/') {
        match (level, inner_levels.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            (_, Some("#")) => return false,
            ("+", Some(_)) => {}
            (exact, Some(asked)) => {
                if exact != asked {
                    return false;
                }
            }
        }
    }
    inner_levels.next().is_none()
}

/// A broker asking whether a client may connect (EMQX's HTTP authenticator body).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthRequest {
    #[serde(default)]
    pub clientid: String,
    pub username: String,
    pub password: String,
}

/// A broker asking whether a client may publish or subscribe (EMQX's HTTP authorizer body).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclRequest {
    #[serde(default)]
    pub clientid: String,
    pub username: String,
    pub topic: String,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
}

/// The node's answer to either request. An allowed connect carries the client's
/// rules, so a broker that keeps them needs no further question per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub result: Outcome,
    /// The platform's own client: every topic, `$CONTROL` included.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_superuser: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<Rule>>,
}

impl Verdict {
    pub fn deny() -> Self {
        Verdict {
            result: Outcome::Deny,
            is_superuser: false,
            acl: None,
        }
    }

    pub fn allow() -> Self {
        Verdict {
            result: Outcome::Allow,
            is_superuser: false,
            acl: None,
        }
    }
}

/// The topic the platform tells its brokers about revocations on, and what it says there.
pub const CONTROL_TOPIC: &str = "$CONTROL/psk-edge/v1";

/// A message on [`CONTROL_TOPIC`]: usernames whose cached verdicts go and whose live
/// sessions are disconnected, or (after the platform lost track) every cached password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kick: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flush: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Vec<Rule> {
        vec![
            Rule::allow(Action::Publish, "a/sensor/device/d"),
            Rule::allow(Action::Subscribe, "a/command/device/d"),
            Rule::allow(Action::Subscribe, "a/command/device/all"),
        ]
    }

    fn app() -> Vec<Rule> {
        vec![
            Rule::allow(Action::Subscribe, "a/#"),
            Rule::allow(Action::Publish, "a/command/#"),
        ]
    }

    #[test]
    fn a_device_reaches_exactly_its_topics() {
        let rules = device();
        assert!(allows(&rules, Access::Publish, "a/sensor/device/d"));
        for topic in [
            "a/sensor/device/e",
            "b/sensor/device/d",
            "a/sensor/device/d/x",
            "a/sensor/device/+",
            "a/command/device/d",
            "",
        ] {
            assert!(!allows(&rules, Access::Publish, topic), "{topic}");
        }
        assert!(allows(&rules, Access::Subscribe, "a/command/device/d"));
        assert!(allows(&rules, Access::Receive, "a/command/device/all"));
        for filter in [
            "a/command/device/+",
            "#",
            "a/#",
            "+/command/device/d",
            "a/command/device/d/#",
        ] {
            assert!(!allows(&rules, Access::Subscribe, filter), "{filter}");
        }
    }

    #[test]
    fn an_app_reaches_its_account_and_nothing_else() {
        let rules = app();
        for filter in [
            "a/#",
            "a/sensor/device/+",
            "a/sensor/device/d",
            "a/+/device/#",
        ] {
            assert!(allows(&rules, Access::Subscribe, filter), "{filter}");
        }
        for filter in [
            "#",
            "+/#",
            "b/#",
            "+/sensor/device/d",
            "$SYS/#",
            "$CONTROL/#",
        ] {
            assert!(!allows(&rules, Access::Subscribe, filter), "{filter}");
        }
        assert!(allows(&rules, Access::Receive, "a/sensor/device/d"));
        assert!(!allows(&rules, Access::Receive, "b/sensor/device/d"));
        assert!(allows(&rules, Access::Publish, "a/command/device/d"));
        assert!(allows(&rules, Access::Publish, "a/command/device/all"));
        assert!(!allows(&rules, Access::Publish, "a/sensor/device/d"));
        assert!(!allows(&rules, Access::Publish, "$CONTROL/psk-edge/v1"));
    }

    #[test]
    fn nothing_grants_a_dollar_topic() {
        let rules = vec![Rule::allow(Action::All, "#")];
        assert!(allows(&rules, Access::Publish, "x"));
        assert!(!allows(&rules, Access::Publish, "$CONTROL/psk-edge/v1"));
        assert!(!allows(&rules, Access::Subscribe, "$SYS/#"));
    }

    #[test]
    fn the_first_fitting_rule_decides() {
        let rules = vec![
            Rule {
                permission: Permission::Deny,
                action: Action::Publish,
                topic: "a/secret".into(),
            },
            Rule::allow(Action::Publish, "a/#"),
        ];
        assert!(!allows(&rules, Access::Publish, "a/secret"));
        assert!(allows(&rules, Access::Publish, "a/open"));
    }

    #[test]
    fn filters() {
        assert!(valid_filter("a/+/b/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/+", "a/b"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(filter_covers("a/+/c", "a/+/c"));
        assert!(!filter_covers("a/b/c", "a/+/c"));
        assert!(!filter_covers("a/+", "a/#"));
    }

    #[test]
    fn messages_have_the_emqx_shape() {
        let verdict = Verdict {
            acl: Some(device()[..1].to_vec()),
            ..Verdict::allow()
        };
        assert_eq!(
            serde_json::to_string(&verdict).unwrap(),
            r#"{"result":"allow","acl":[{"permission":"allow","action":"publish","topic":"a/sensor/device/d"}]}"#
        );
        assert_eq!(
            serde_json::to_string(&Verdict::deny()).unwrap(),
            r#"{"result":"deny"}"#
        );
        let asked: AclRequest = serde_json::from_str(
            r#"{"clientid":"c","username":"u","topic":"t","action":"subscribe"}"#,
        )
        .unwrap();
        assert_eq!(asked.action, Action::Subscribe);
        assert_eq!(
            serde_json::to_string(&Control {
                kick: vec!["u".into()],
                flush: false
            })
            .unwrap(),
            r#"{"kick":["u"]}"#
        );
    }
}
