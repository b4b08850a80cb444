//! The one decision every broker asks for: is this client who it says (username, client id, password), and what may it publish and subscribe to.
//!
//! Answers come from the store, the only source of truth, on every question: a
//! rotation, a deleted device or application is refused by the next question on any
//! node. Passwords are checked against the sealed copy the store keeps anyway (the
//! SIM's `GET` must hand out the same password again, so it cannot be a one-way
//! hash): opened under the master key and compared in constant time. Brokers never
//! receive a password or a verifier, only the verdict and the client's rules.

use broker_policy::{
    Access, AclRequest, Action, AuthRequest, MAX_CREDENTIAL, Rule, Verdict, allows,
};
use zeroize::Zeroizing;

use super::{BROKER_KEY_LABEL, PLATFORM_PASSWORD_LABEL, PLATFORM_USER};
use crate::secrets::{Sealer, app_password_context, device_password_context, same_secret};
use crate::store::{Principal, PrincipalKind, Store, StoreError};

/// Answers a broker's questions (may this client connect, may it subscribe or publish)
/// from the store, and holds the platform's derived broker password and key.
pub struct Authority {
    store: Store,
    sealer: Sealer,
    platform_password: Zeroizing<String>,
    broker_key: Zeroizing<String>,
}

/// Why a question was refused before any lookup: logged, never echoing a secret.
fn malformed(value: &str, secret: bool) -> Option<&'static str> {
    if value.is_empty() {
        return Some("empty");
    }
    if value.len() > MAX_CREDENTIAL {
        return Some("too long");
    }
    // A password may be any printable text; names are what the platform issues.
    let bad = if secret {
        value.contains('\0')
    } else {
        value.chars().any(char::is_control)
    };
    bad.then_some("contains control characters")
}

/// What a device or an application may do, as rules every broker evaluates alike.
pub fn rules(principal: &Principal) -> Vec<Rule> {
    match principal.kind {
        PrincipalKind::Device => principal
            .publish
            .iter()
            .map(|topic| Rule::allow(Action::Publish, topic.clone()))
            .chain(
                principal
                    .subscribe
                    .iter()
                    .map(|topic| Rule::allow(Action::Subscribe, topic.clone())),
            )
            .collect(),
        // An application reads its whole account and commands its devices.
        PrincipalKind::App => vec![
            Rule::allow(Action::Subscribe, format!("{}/#", principal.account_id)),
            Rule::allow(
                Action::Publish,
                format!("{}/command/#", principal.account_id),
            ),
        ],
    }
}

impl Authority {
    /// Derives the platform password and the broker key from the sealer's key, so every
    /// node with the same key derives the same ones.
    pub fn new(store: Store, sealer: Sealer) -> Self {
        let platform_password = sealer.derive(PLATFORM_PASSWORD_LABEL);
        let broker_key = sealer.derive(BROKER_KEY_LABEL);
        Authority {
            store,
            sealer,
            platform_password,
            broker_key,
        }
    }

    /// The password the platform's own connection presents at its broker.
    pub fn platform_password(&self) -> Zeroizing<String> {
        self.platform_password.clone()
    }

    /// The key a broker presents to ask (`Authorization: Bearer …`).
    pub fn broker_key(&self) -> Zeroizing<String> {
        self.broker_key.clone()
    }

    /// Whether `presented` is the broker key, compared in constant time.
    pub fn is_broker_key(&self, presented: &str) -> bool {
        same_secret(presented.as_bytes(), self.broker_key.as_bytes())
    }

    /// May this client connect? An allowed device or application gets its rules with
    /// the answer; the platform itself is the superuser.
    pub async fn authenticate(&self, asked: &AuthRequest) -> Result<Verdict, StoreError> {
        let checks = [
            ("username", asked.username.as_str(), false),
            ("password", asked.password.as_str(), true),
            ("client id", asked.clientid.as_str(), false),
        ];
        if let Some((what, why)) = checks
            .iter()
            .find_map(|(what, value, secret)| malformed(value, *secret).map(|why| (*what, why)))
        {
            tracing::info!(target: "broker", "connect refused: the {what} is {why}");
            return Ok(Verdict::deny());
        }
        if asked.username == PLATFORM_USER {
            if same_secret(asked.password.as_bytes(), self.platform_password.as_bytes()) {
                return Ok(Verdict {
                    is_superuser: true,
                    ..Verdict::allow()
                });
            }
            tracing::warn!(target: "broker", client_id = asked.clientid, "connect refused: wrong password for the platform user");
            return Ok(Verdict::deny());
        }
        let Some(principal) = self.principal(&asked.username).await? else {
            tracing::debug!(target: "broker", "connect refused: unknown username");
            return Ok(Verdict::deny());
        };
        if principal.client_id != asked.clientid {
            tracing::info!(
                target: "broker",
                account = principal.account_id,
                name = principal.name,
                "connect refused: not the client id issued with the username"
            );
            return Ok(Verdict::deny());
        }
        let context = match principal.kind {
            PrincipalKind::Device => {
                device_password_context(&principal.account_id, &principal.name)
            }
            PrincipalKind::App => app_password_context(&principal.account_id, &principal.name),
        };
        let stored = self
            .sealer
            .open(&context, &principal.sealed_password)
            .map_err(|e| StoreError::Corrupt(format!("a broker password does not open: {e}")))?;
        if !same_secret(asked.password.as_bytes(), &stored) {
            tracing::info!(
                target: "broker",
                account = principal.account_id,
                name = principal.name,
                "connect refused: wrong password"
            );
            return Ok(Verdict::deny());
        }
        Ok(Verdict {
            acl: Some(rules(&principal)),
            ..Verdict::allow()
        })
    }

    /// May this (already connected) client publish or subscribe to this topic?
    pub async fn authorize(&self, asked: &AclRequest) -> Result<Verdict, StoreError> {
        if asked.username == PLATFORM_USER {
            // The broker authenticated the connection; only the platform holds that name.
            return Ok(Verdict::allow());
        }
        if malformed(&asked.username, false).is_some()
            || asked.topic.is_empty()
            || asked.topic.len() > broker_policy::MAX_TOPIC
        {
            return Ok(Verdict::deny());
        }
        let Some(principal) = self.principal(&asked.username).await? else {
            return Ok(Verdict::deny());
        };
        if !asked.clientid.is_empty() && asked.clientid != principal.client_id {
            return Ok(Verdict::deny());
        }
        let rules = rules(&principal);
        let allowed = match asked.action {
            Action::Publish => allows(&rules, Access::Publish, &asked.topic),
            Action::Subscribe => allows(&rules, Access::Subscribe, &asked.topic),
            Action::All => {
                allows(&rules, Access::Publish, &asked.topic)
                    && allows(&rules, Access::Subscribe, &asked.topic)
            }
        };
        if !allowed {
            tracing::info!(
                target: "broker",
                account = principal.account_id,
                name = principal.name,
                action = ?asked.action,
                topic = asked.topic,
                "refused: outside the client's rules"
            );
        }
        Ok(if allowed {
            Verdict::allow()
        } else {
            Verdict::deny()
        })
    }

    /// The one device or application holding `username`; a name held twice (a clash
    /// of generated names across devices and applications) is refused, not guessed.
    async fn principal(&self, username: &str) -> Result<Option<Principal>, StoreError> {
        let mut found = self.store.principals(username).await?;
        if found.len() > 1 {
            tracing::error!(target: "broker", "a broker username is held by {} clients; refusing it", found.len());
            return Ok(None);
        }
        Ok(found.pop())
    }
}
