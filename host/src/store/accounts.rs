//! Accounts' settings: the credential expiration strategy and device profiles.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;

use super::tenants::lock_quotas;
use super::{Quota, Store, StoreError};

/// When a device's MQTT password is replaced; stored as text, e.g. `AFTER-X-REQUESTS:3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiration {
    /// Only when an operator or tenant asks (the default).
    #[default]
    OnDemand,
    /// Every credential answer carries a fresh password.
    AtEveryRequest,
    /// A fresh password once the current one was handed out this many times.
    AfterXRequests(u32),
    /// Seconds.
    TimeBased(u64),
}

impl fmt::Display for Expiration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expiration::OnDemand => f.write_str("ON-DEMAND"),
            Expiration::AtEveryRequest => f.write_str("AT-EVERY-REQUEST"),
            Expiration::AfterXRequests(n) => write!(f, "AFTER-X-REQUESTS:{n}"),
            Expiration::TimeBased(secs) => write!(f, "TIME-BASED:{secs}"),
        }
    }
}

impl FromStr for Expiration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = s.split_once(':').map_or((s, None), |(n, a)| (n, Some(a)));
        let bad = || format!("unknown expiration strategy {s:?}");
        match (name, arg) {
            ("ON-DEMAND", None) => Ok(Expiration::OnDemand),
            ("AT-EVERY-REQUEST", None) => Ok(Expiration::AtEveryRequest),
            ("AFTER-X-REQUESTS", Some(n)) => {
                n.parse().map(Expiration::AfterXRequests).map_err(|_| bad())
            }
            ("TIME-BASED", Some(secs)) => {
                secs.parse().map(Expiration::TimeBased).map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }
}

/// A device template of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    /// Unique within the account.
    pub name: String,
    /// Topic templates relative to the account's namespace, `{DEVICE_ID}` not yet replaced.
    pub publish: Vec<String>,
    /// Topic templates to subscribe to, relative like `publish`.
    pub subscribe: Vec<String>,
    /// Name and JSON text.
    pub config: Vec<(String, String)>,
    /// Overrides the account's strategy for devices of this profile; `None`: the
    /// account's.
    pub expiration: Option<Expiration>,
}

pub(super) fn parse_expiration(text: &str) -> Result<Expiration, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

impl Store {
    /// None when the account does not exist.
    pub async fn account_expiration(
        &self,
        account_id: &str,
    ) -> Result<Option<Expiration>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT expiration FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
        text.as_deref().map(parse_expiration).transpose()
    }

    /// False when the account does not exist.
    pub async fn set_account_expiration(
        &self,
        account_id: &str,
        expiration: Expiration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE accounts SET expiration = $1 WHERE id = $2")
            .bind(expiration.to_string())
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates or replaces; false when the account does not exist.
    pub async fn put_profile(
        &self,
        account_id: &str,
        profile: &ProfileRow,
    ) -> Result<bool, StoreError> {
        let config: Vec<[&str; 2]> = profile
            .config
            .iter()
            .map(|(n, v)| [n.as_str(), v.as_str()])
            .collect();
        let mut tx = self.pool.begin().await?;
        let Some([bound]) = lock_quotas(&mut tx, account_id, [Quota::Profiles]).await? else {
            return Ok(false);
        };
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM profiles WHERE account_id = $1 AND name <> $2",
        )
        .bind(account_id)
        .bind(&profile.name)
        .fetch_one(&mut *tx)
        .await?;
        if others + 1 > bound {
            return Err(StoreError::Quota(Quota::Profiles));
        }
        let done = sqlx::query(
            "INSERT INTO profiles (account_id, name, publish, subscribe, config, expiration)
             SELECT id, $2, $3, $4, $5, $6 FROM accounts WHERE id = $1
             ON CONFLICT (account_id, name) DO UPDATE SET publish = excluded.publish,
               subscribe = excluded.subscribe, config = excluded.config, expiration = excluded.expiration",
        )
        .bind(account_id)
        .bind(&profile.name)
        .bind(serde_json::Value::from(profile.publish.clone()).to_string())
        .bind(serde_json::Value::from(profile.subscribe.clone()).to_string())
        .bind(serde_json::to_string(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(profile.expiration.map(|e| e.to_string()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// The profile `name` of an account, if it exists.
    pub async fn profile(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<ProfileRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, publish, subscribe, config, expiration FROM profiles WHERE account_id = $1 AND name = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| profile_row(&row)).transpose()
    }

    /// An account's profiles, by name.
    pub async fn profiles(&self, account_id: &str) -> Result<Vec<ProfileRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, publish, subscribe, config, expiration FROM profiles WHERE account_id = $1 ORDER BY name",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(profile_row).collect()
    }
}

fn profile_row(row: &sqlx::any::AnyRow) -> Result<ProfileRow, StoreError> {
    let json = |i: usize| -> Result<String, StoreError> { Ok(row.try_get(i)?) };
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let config: Vec<(String, String)> = serde_json::from_str(&json(3)?).map_err(corrupt)?;
    let expiration: Option<String> = row.try_get(4)?;
    Ok(ProfileRow {
        name: row.try_get(0)?,
        publish: serde_json::from_str(&json(1)?).map_err(corrupt)?,
        subscribe: serde_json::from_str(&json(2)?).map_err(corrupt)?,
        config,
        expiration: expiration.as_deref().map(parse_expiration).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::PskWrite;
    use super::super::tests::temp_store;
    use super::*;

    #[test]
    fn strategies_round_trip_as_text() {
        for e in [
            Expiration::OnDemand,
            Expiration::AtEveryRequest,
            Expiration::AfterXRequests(3),
            Expiration::TimeBased(3600),
        ] {
            assert_eq!(e.to_string().parse::<Expiration>(), Ok(e));
        }
        assert!("AFTER-X-REQUESTS".parse::<Expiration>().is_err());
        assert!("SOMETIMES".parse::<Expiration>().is_err());
    }

    #[tokio::test]
    async fn profiles_and_strategy_belong_to_an_existing_account() {
        let (store, _dir) = temp_store().await;
        store
            .apply_psk_writes(&[PskWrite::Upsert {
                iccid: "1".into(),
                account_id: "a".into(),
                sealed_psk: vec![1],
            }])
            .await
            .unwrap();
        assert_eq!(
            store.account_expiration("a").await.unwrap(),
            Some(Expiration::OnDemand)
        );
        assert!(
            store
                .set_account_expiration("a", Expiration::TimeBased(5))
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_account_expiration("zz", Expiration::TimeBased(5))
                .await
                .unwrap()
        );
        assert_eq!(
            store.account_expiration("a").await.unwrap(),
            Some(Expiration::TimeBased(5))
        );
        let profile = ProfileRow {
            name: "meter".into(),
            publish: vec!["sensor/device/{DEVICE_ID}".into()],
            subscribe: vec!["command/device/all".into()],
            config: vec![("broker-port".into(), "8883".into())],
            expiration: Some(Expiration::AtEveryRequest),
        };
        assert!(store.put_profile("a", &profile).await.unwrap());
        assert!(!store.put_profile("zz", &profile).await.unwrap());
        assert_eq!(
            store.profile("a", "meter").await.unwrap(),
            Some(profile.clone())
        );
        assert_eq!(store.profiles("a").await.unwrap(), vec![profile]);
        assert!(store.profile("a", "other").await.unwrap().is_none());
    }
}
