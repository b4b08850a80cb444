//! Broker credentials as the broker asks about them: who a username is (a device or an application), applications' credentials, and the revocation log other nodes follow.
//!
//! Every credential that stops working (a rotated password, a deleted device or
//! application) leaves one row in `revocations` under the next `Credentials`
//! revision, written in the same transaction as the change itself: a node that
//! follows the log by revision tells its brokers about every one of them, even after
//! a lost notification or a restart, and no revocation exists without its change.

use sqlx::Row;

use super::{Counter, InsertFailure, Store, StoreError, now};

/// What a broker username belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A device, its username handed to its SIM.
    Device,
    /// An application, its credentials created through the admin API.
    App,
}

/// A broker username's owner and what decides about it.
pub struct Principal {
    /// A device's or an application's.
    pub kind: PrincipalKind,
    /// The account it belongs to: its topics are under `{account}/`.
    pub account_id: String,
    /// The device id or the application's name.
    pub name: String,
    /// The only client id it may connect with.
    pub client_id: String,
    /// Its MQTT password, sealed: what a presented password is checked against.
    pub sealed_password: Vec<u8>,
    /// A device's topics (exact names); empty for an application.
    pub publish: Vec<String>,
    /// A device's topics it may subscribe to (exact names); empty for an application.
    pub subscribe: Vec<String>,
}

/// An application of an account, as listed (without its credentials).
pub struct AppRow {
    /// Unique within the account.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Why an application's credentials were not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateAppError {
    /// The account does not exist.
    #[error("no such account")]
    NoAccount,
    /// The account has an application by that name.
    #[error("the account has an application by that name")]
    Exists,
    /// The generated client id or username is taken: retry with fresh ones.
    #[error("generated client id or username is taken")]
    NameClash,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long revocations stay in the log: far longer than any node takes to follow
/// it, short enough that the table stays small.
pub const REVOCATIONS_KEPT_SECS: i64 = 3600;

fn topics(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Who holds a username: both backends run this text (`$1` is a parameter to both).
const PRINCIPALS: &str =
    "SELECT 'device', account_id, device_id, client_id, password, publish, subscribe
     FROM devices WHERE username = $1
     UNION ALL
     SELECT 'app', account_id, name, client_id, password, '[]', '[]'
     FROM apps WHERE username = $1";

fn principal(
    kind: &str,
    account_id: String,
    name: String,
    client_id: String,
    sealed_password: Vec<u8>,
    publish: &str,
    subscribe: &str,
) -> Principal {
    Principal {
        kind: match kind {
            "device" => PrincipalKind::Device,
            _ => PrincipalKind::App,
        },
        account_id,
        name,
        client_id,
        sealed_password,
        publish: topics(publish),
        subscribe: topics(subscribe),
    }
}

impl Store {
    /// Every device or application holding `username` (more than one only if a
    /// generated name clashed across the two tables, which callers refuse). On SQLite
    /// read in place, see [`super::reader`].
    pub async fn principals(&self, username: &str) -> Result<Vec<Principal>, StoreError> {
        if let Some(readers) = &self.readers {
            return readers.read(|conn| {
                let mut query = conn.prepare_cached(PRINCIPALS)?;
                let rows = query.query_map([username], |row| {
                    Ok(principal(
                        row.get_ref(0)?.as_str()?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get_ref(5)?.as_str()?,
                        row.get_ref(6)?.as_str()?,
                    ))
                })?;
                rows.collect()
            });
        }
        let rows = sqlx::query(PRINCIPALS)
            .bind(username)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(principal(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                    row.try_get(5)?,
                    row.try_get(6)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Logs that `username` stopped working, under a new revision, inside `tx`.
    async fn revoke(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        username: &str,
    ) -> Result<i64, StoreError> {
        let revision = self.bump(tx, Counter::Credentials).await?;
        sqlx::query("INSERT INTO revocations (revision, username, created_at) VALUES ($1, $2, $3)")
            .bind(revision)
            .bind(username)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        Ok(revision)
    }

    /// Revokes `username` inside `tx` and commits: every change that stops a
    /// credential ends this way, so no revocation exists without its change.
    pub(crate) async fn revoke_and_commit(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        username: &str,
    ) -> Result<(), StoreError> {
        self.revoke(&mut tx, username).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Usernames revoked after `after`, oldest first, at most `limit`; with the
    /// revision the last one has (or `after`).
    pub async fn revocations_since(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<String>, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT revision, username FROM revocations WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut at = after;
        let mut usernames = Vec::with_capacity(rows.len());
        for row in &rows {
            at = at.max(row.try_get(0)?);
            usernames.push(row.try_get(1)?);
        }
        Ok((usernames, at))
    }

    /// Drops log rows older than [`REVOCATIONS_KEPT_SECS`].
    pub async fn prune_revocations(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM revocations WHERE created_at < $1")
            .bind(now() - REVOCATIONS_KEPT_SECS)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Deletes the device (its config goes with it) and revokes its username.
    /// False when there was no such device.
    pub async fn delete_device(
        &self,
        account_id: &str,
        device_id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM device_config WHERE account_id = $1 AND device_id = $2")
            .bind(account_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        let username: Option<String> = sqlx::query_scalar(
            "DELETE FROM devices WHERE account_id = $1 AND device_id = $2 RETURNING username",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(username) = username else {
            return Ok(false);
        };
        sqlx::query("UPDATE accounts SET device_count = device_count - 1 WHERE id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        self.revoke_and_commit(tx, &username).await?;
        Ok(true)
    }

    /// Stores an application's credentials (password already sealed); the broker-wide
    /// `client_id` and `username` must be free.
    pub async fn create_app(
        &self,
        account_id: &str,
        name: &str,
        client_id: &str,
        username: &str,
        sealed_password: &[u8],
    ) -> Result<(), CreateAppError> {
        // Accounts are never deleted, and the foreign key holds anyway.
        if !self.account_exists(account_id).await? {
            return Err(CreateAppError::NoAccount);
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        // Names are unique broker-wide: devices hold them too.
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM devices WHERE username = $1 OR client_id = $2 OR username = $2 OR client_id = $1",
        )
        .bind(username)
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if taken.is_some() {
            return Err(CreateAppError::NameClash);
        }
        let inserted = sqlx::query(
            "INSERT INTO apps (account_id, name, client_id, username, password, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account_id)
        .bind(name)
        .bind(client_id)
        .bind(username)
        .bind(sealed_password)
        .bind(now())
        .execute(&mut *tx)
        .await;
        inserted.map_err(|e| match InsertFailure::from(e) {
            InsertFailure::NameClash => CreateAppError::NameClash,
            InsertFailure::Exists => CreateAppError::Exists,
            InsertFailure::Store(e) => CreateAppError::Store(e),
        })?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// None when the account does not exist.
    pub async fn list_apps(&self, account_id: &str) -> Result<Option<Vec<AppRow>>, StoreError> {
        if !self.account_exists(account_id).await? {
            return Ok(None);
        }
        let rows =
            sqlx::query("SELECT name, created_at FROM apps WHERE account_id = $1 ORDER BY name")
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(Some(
            rows.iter()
                .map(|row| {
                    Ok(AppRow {
                        name: row.try_get(0)?,
                        created_at: row.try_get(1)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?,
        ))
    }

    /// Deletes the application and revokes its username. False when there was none.
    pub async fn delete_app(&self, account_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let username: Option<String> = sqlx::query_scalar(
            "DELETE FROM apps WHERE account_id = $1 AND name = $2 RETURNING username",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(username) = username else {
            return Ok(false);
        };
        sqlx::query("UPDATE accounts SET device_count = device_count - 1 WHERE id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        self.revoke_and_commit(tx, &username).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_store;
    use super::super::{NewDevice, PskWrite};
    use super::*;

    async fn with_device() -> (Store, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        store
            .apply_psk_writes(&[PskWrite::Upsert {
                iccid: "1".into(),
                account_id: "a".into(),
                sealed_psk: vec![1],
            }])
            .await
            .unwrap();
        store
            .create_device(&NewDevice {
                account_id: "a",
                device_id: "d",
                iccid: "1",
                client_id: "c1",
                username: "u1",
                sealed_password: b"x",
                profile: None,
                publish: &["a/sensor/device/d".to_owned()],
                subscribe: &[],
                config: &[("k".to_owned(), "1".to_owned())],
            })
            .await
            .unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn usernames_name_devices_and_apps() {
        let (store, _dir) = with_device().await;
        store
            .create_app("a", "backend", "c2", "u2", b"y")
            .await
            .unwrap();
        let device = store.principals("u1").await.unwrap();
        assert_eq!(device.len(), 1);
        assert_eq!(
            (
                device[0].kind,
                device[0].name.as_str(),
                device[0].client_id.as_str()
            ),
            (PrincipalKind::Device, "d", "c1")
        );
        assert_eq!(device[0].publish, ["a/sensor/device/d"]);
        let app = store.principals("u2").await.unwrap();
        assert_eq!(
            (app[0].kind, app[0].name.as_str()),
            (PrincipalKind::App, "backend")
        );
        assert!(store.principals("nobody").await.unwrap().is_empty());

        assert!(matches!(
            store.create_app("a", "backend", "c3", "u3", b"y").await,
            Err(CreateAppError::Exists)
        ));
        assert!(matches!(
            store.create_app("a", "other", "c1", "u4", b"y").await,
            Err(CreateAppError::NameClash)
        ));
        assert!(matches!(
            store.create_app("nope", "x", "c5", "u5", b"y").await,
            Err(CreateAppError::NoAccount)
        ));
        let apps = store.list_apps("a").await.unwrap().unwrap();
        assert_eq!(
            apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["backend"]
        );
        assert!(store.list_apps("nope").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn every_revocation_is_logged_with_its_change() {
        let (store, _dir) = with_device().await;
        store
            .create_app("a", "backend", "c2", "u2", b"y")
            .await
            .unwrap();
        let (none, start) = store.revocations_since(0, 100).await.unwrap();
        assert!(none.is_empty());
        store
            .set_password("a", "d", b"z", 0)
            .await
            .unwrap()
            .unwrap();
        assert!(store.delete_app("a", "backend").await.unwrap());
        assert!(!store.delete_app("a", "backend").await.unwrap());
        assert!(store.delete_device("a", "d").await.unwrap());
        assert!(!store.delete_device("a", "d").await.unwrap());
        assert!(store.principals("u1").await.unwrap().is_empty());
        assert!(store.config("a", "d", "k").await.unwrap().is_none());
        let (revoked, at) = store.revocations_since(start, 100).await.unwrap();
        assert_eq!(revoked, ["u1", "u2", "u1"]);
        let (later, same) = store.revocations_since(at, 100).await.unwrap();
        assert!(later.is_empty());
        assert_eq!(same, at);
        let (first, first_at) = store.revocations_since(start, 1).await.unwrap();
        assert_eq!(first, ["u1"]);
        assert!(first_at < at);
        assert_eq!(store.prune_revocations().await.unwrap(), 0);
    }
}
