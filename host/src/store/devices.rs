//! Devices: creation from a resolved profile, credentials, password rotation and use (each replaced password revoked with its change), config properties.

use sqlx::Row;

use super::accounts::parse_expiration;
use super::tenants::lock_quotas;
use super::{Expiration, InsertFailure, Quota, Store, StoreError, now, now_ms};

/// A device to create, its credentials generated and its topics resolved from a
/// profile by the caller.
pub struct NewDevice<'a> {
    /// The account it belongs to.
    pub account_id: &'a str,
    /// Unique within the account.
    pub device_id: &'a str,
    /// The SIM that created it and fetches its credentials.
    pub iccid: &'a str,
    /// Broker-wide unique, random.
    pub client_id: &'a str,
    /// Broker-wide unique, random.
    pub username: &'a str,
    /// Its first MQTT password, sealed.
    pub sealed_password: &'a [u8],
    /// The profile it was made from; `None`: the default topics.
    pub profile: Option<&'a str>,
    /// Topics with the account prefix and device id already in place.
    pub publish: &'a [String],
    /// Topics it may subscribe to, resolved like `publish`.
    pub subscribe: &'a [String],
    /// Initial config properties: name and JSON text.
    pub config: &'a [(String, String)],
}

/// A device as a credential answer needs it.
pub struct DeviceRow {
    /// The SIM that owns it.
    pub iccid: String,
    /// Its broker client id.
    pub client_id: String,
    /// Its broker username.
    pub username: String,
    /// Its current MQTT password, sealed.
    pub sealed_password: Vec<u8>,
    /// The profile it was made from, if any.
    pub profile: Option<String>,
    /// Unix milliseconds: a strategy of a few seconds needs more than whole seconds.
    pub password_set_at: i64,
    /// Credential answers sent since the password was set.
    pub served: i64,
    /// Bumped by every password change: what a claim compares.
    pub revision: i64,
    /// The strategy in force: the device profile's, else the account's.
    pub expiration: Expiration,
    /// Topics it may publish on; the first is its sensor topic.
    pub publish: Vec<String>,
}

/// The password a rotation replaced, kept so a rotation whose answer never left can be undone.
pub struct PreviousPassword {
    /// The replaced password, sealed.
    pub sealed_password: Vec<u8>,
    /// When the replaced password was set, Unix milliseconds.
    pub password_set_at: i64,
    /// Credential answers the replaced password had been sent in.
    pub served: i64,
}

/// A credential answer counted in the store: the device's state right after it.
pub struct Claim {
    /// The device's revision after this answer.
    pub revision: i64,
    /// Credential answers sent with the current password, this one included.
    pub served: i64,
    /// Some when this answer carries a fresh password.
    pub previous: Option<PreviousPassword>,
}

/// Why a device was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateDeviceError {
    /// The account has a device by that id.
    #[error("device exists")]
    Exists,
    /// The generated client id or username is taken: retry with fresh ones.
    #[error("generated client id or username is taken")]
    NameClash,
    /// The store failed, or a quota was reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn topics(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn topics_json(topics: &[String]) -> String {
    serde_json::Value::from(topics.to_vec()).to_string()
}

async fn insert_device(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    device: &NewDevice<'_>,
) -> Result<(), CreateDeviceError> {
    let inserted = sqlx::query(
        "INSERT INTO devices (account_id, device_id, iccid, client_id, username, password, created_at,
                              profile, publish, subscribe, password_set_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(device.account_id)
    .bind(device.device_id)
    .bind(device.iccid)
    .bind(device.client_id)
    .bind(device.username)
    .bind(device.sealed_password)
    .bind(now())
    .bind(device.profile)
    .bind(topics_json(device.publish))
    .bind(topics_json(device.subscribe))
    .bind(now_ms())
    .execute(&mut **tx)
    .await;
    inserted.map_err(|e| match InsertFailure::from(e) {
        InsertFailure::NameClash => CreateDeviceError::NameClash,
        InsertFailure::Exists => CreateDeviceError::Exists,
        InsertFailure::Store(e) => CreateDeviceError::Store(e),
    })?;
    // Kept with the row it counts, so the account's device quota reads one value.
    sqlx::query("UPDATE accounts SET device_count = device_count + 1 WHERE id = $1")
        .bind(device.account_id)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from)?;
    for (name, value) in device.config {
        sqlx::query("INSERT INTO device_config (account_id, device_id, name, value) VALUES ($1, $2, $3, $4)")
            .bind(device.account_id)
            .bind(device.device_id)
            .bind(name)
            .bind(value)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::from)?;
    }
    Ok(())
}

impl Store {
    /// `Exists` when the (account, device id) is taken. A clash of the random
    /// broker-wide client id or username is a different error the caller retries.
    /// Within the account's quotas (devices per SIM, devices, config properties):
    /// `Store(StoreError::Quota)` names the one it would exceed, and nothing is stored.
    pub async fn create_device(&self, device: &NewDevice<'_>) -> Result<(), CreateDeviceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let quotas = [Quota::DevicesPerSim, Quota::Devices, Quota::ConfigPerDevice];
        let Some([per_sim, devices, config]) =
            lock_quotas(&mut tx, device.account_id, quotas).await?
        else {
            return Err(StoreError::Read(format!("no account {}", device.account_id)).into());
        };
        if i64::try_from(device.config.len()).unwrap_or(i64::MAX) > config {
            return Err(StoreError::Quota(Quota::ConfigPerDevice).into());
        }
        // Inserted first, counted after: an existing id stays `Exists` (a SIM's retry
        // gets its device back) even when the account is full.
        insert_device(&mut tx, device).await?;
        // Both counts cost the same at a million devices as at ten: the account's is a
        // counter, the SIM's an index range.
        let row = sqlx::query(
            "SELECT (SELECT device_count FROM accounts WHERE id = $1),
                    (SELECT COUNT(*) FROM devices WHERE account_id = $1 AND iccid = $2)",
        )
        .bind(device.account_id)
        .bind(device.iccid)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let (in_account, of_sim): (i64, i64) = (
            row.try_get(0).map_err(StoreError::from)?,
            row.try_get(1).map_err(StoreError::from)?,
        );
        if of_sim > per_sim {
            return Err(StoreError::Quota(Quota::DevicesPerSim).into());
        }
        if in_account > devices {
            return Err(StoreError::Quota(Quota::Devices).into());
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Creates every device in one transaction, all or none: how a fleet is seeded in
    /// bulk (`psk-edge-bench seed-devices`) at a fraction of a commit per device. An
    /// operator's tool: the account's quotas, which bound what SIMs create, do not apply.
    pub async fn create_devices(&self, devices: &[NewDevice<'_>]) -> Result<(), CreateDeviceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        for device in devices {
            insert_device(&mut tx, device).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// A device of an account with the expiration strategy in force, if it exists.
    pub async fn device(
        &self,
        account_id: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRow>, StoreError> {
        let row = sqlx::query(
            // One round trip for everything a credential answer decides on.
            "SELECT d.iccid, d.client_id, d.username, d.password, d.profile, d.password_set_at,
                    d.served, d.revision, COALESCE(p.expiration, a.expiration), d.publish
             FROM devices d JOIN accounts a ON a.id = d.account_id
             LEFT JOIN profiles p ON p.account_id = d.account_id AND p.name = d.profile
             WHERE d.account_id = $1 AND d.device_id = $2",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DeviceRow {
                iccid: row.try_get(0)?,
                client_id: row.try_get(1)?,
                username: row.try_get(2)?,
                sealed_password: row.try_get(3)?,
                profile: row.try_get(4)?,
                password_set_at: row.try_get(5)?,
                served: row.try_get(6)?,
                revision: row.try_get(7)?,
                expiration: parse_expiration(row.try_get::<&str, _>(8)?)?,
                publish: topics(row.try_get(9)?),
            })
        })
        .transpose()
    }

    /// Counts one more credential answer, with a fresh password when `rotate_to` gives
    /// one, but only if the device is still as the caller saw it: the same password
    /// (`seen.0`, its revision) and, when the caller's decision depended on it, the same
    /// count (`seen.1`). None when it is not: another answer came first, and the caller
    /// decides again on what the device is now. One conditional UPDATE, so two nodes
    /// serving the same SIM at once can neither hand a password out once too often
    /// nor rotate twice.
    pub async fn claim_serve(
        &self,
        account_id: &str,
        device_id: &str,
        seen: (i64, Option<i64>),
        rotate_to: Option<(&[u8], PreviousPassword)>,
    ) -> Result<Option<Claim>, StoreError> {
        let (revision, served) = seen;
        let Some((sealed, previous)) = rotate_to else {
            let served: Option<i64> = sqlx::query_scalar(
                "UPDATE devices SET served = served + 1
                 WHERE account_id = $1 AND device_id = $2 AND revision = $3
                 AND ($4 IS NULL OR served = $4)
                 RETURNING served",
            )
            .bind(account_id)
            .bind(device_id)
            .bind(revision)
            .bind(served)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(served.map(|served| Claim {
                revision,
                served,
                previous: None,
            }));
        };
        // The answer carrying the new password is its first use; the old password is
        // revoked with it, so every broker drops it.
        let mut tx = self.pool.begin().await?;
        let rotated = sqlx::query(
            "UPDATE devices SET password = $5, password_set_at = $6, served = 1, revision = revision + 1
             WHERE account_id = $1 AND device_id = $2 AND revision = $3
             AND ($4 IS NULL OR served = $4)
             RETURNING revision, username",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(revision)
        .bind(served)
        .bind(sealed)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = rotated else {
            return Ok(None);
        };
        let (revision, username): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        self.revoke_and_commit(tx, &username).await?;
        Ok(Some(Claim {
            revision,
            served: 1,
            previous: Some(previous),
        }))
    }

    /// Takes back a claimed answer that never reached the SIM, if its password is
    /// still the current one. Returns whether it did; a rotation undone is a new
    /// revision, so the broker follows back to the old password.
    pub async fn undo_serve(
        &self,
        account_id: &str,
        device_id: &str,
        claim: &Claim,
    ) -> Result<bool, StoreError> {
        let done = match &claim.previous {
            // Counts commute: whatever else was counted meanwhile, this one is removed.
            None => {
                sqlx::query(
                    "UPDATE devices SET served = served - 1
                     WHERE account_id = $1 AND device_id = $2 AND revision = $3 AND served > 0",
                )
                .bind(account_id)
                .bind(device_id)
                .bind(claim.revision)
                .execute(&self.pool)
                .await?
            }
            // Only while nothing else used the new password; the new one is revoked
            // again (nobody should hold it, but a broker may have seen it).
            Some(previous) => {
                let mut tx = self.pool.begin().await?;
                let username: Option<String> = sqlx::query_scalar(
                    "UPDATE devices SET password = $5, password_set_at = $6, served = $7, revision = revision + 1
                     WHERE account_id = $1 AND device_id = $2 AND revision = $3 AND served = $4
                     RETURNING username",
                )
                .bind(account_id)
                .bind(device_id)
                .bind(claim.revision)
                .bind(claim.served)
                .bind(&previous.sealed_password)
                .bind(previous.password_set_at)
                .bind(previous.served)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(username) = username else {
                    return Ok(false);
                };
                self.revoke_and_commit(tx, &username).await?;
                return Ok(true);
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the password; `served` says how many answers carried it already.
    /// Returns the device's new revision, None when the device does not exist. The
    /// old password is revoked with it.
    pub async fn set_password(
        &self,
        account_id: &str,
        device_id: &str,
        sealed_password: &[u8],
        served: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE devices SET password = $1, password_set_at = $2, served = $3, revision = revision + 1
             WHERE account_id = $4 AND device_id = $5 RETURNING revision, username",
        )
        .bind(sealed_password)
        .bind(now_ms())
        .bind(served)
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (revision, username): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        self.revoke_and_commit(tx, &username).await?;
        Ok(Some(revision))
    }

    /// The JSON text of one of a device's config properties, if set.
    pub async fn config(
        &self,
        account_id: &str,
        device_id: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT value FROM device_config WHERE account_id = $1 AND device_id = $2 AND name = $3",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// None when the device does not exist.
    pub async fn list_config(
        &self,
        account_id: &str,
        device_id: &str,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        if !self.device_exists(account_id, device_id).await? {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT name, value FROM device_config WHERE account_id = $1 AND device_id = $2 ORDER BY name",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?,
        ))
    }

    /// False when the device does not exist; `StoreError::Quota` when a new property
    /// would take the device past the account's `config_per_device`.
    pub async fn set_config(
        &self,
        account_id: &str,
        device_id: &str,
        name: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some([bound]) = lock_quotas(&mut tx, account_id, [Quota::ConfigPerDevice]).await?
        else {
            return Ok(false);
        };
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_config WHERE account_id = $1 AND device_id = $2 AND name <> $3",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if others + 1 > bound {
            return Err(StoreError::Quota(Quota::ConfigPerDevice));
        }
        let done = sqlx::query(
            "INSERT INTO device_config (account_id, device_id, name, value)
             SELECT account_id, device_id, $3, $4 FROM devices WHERE account_id = $1 AND device_id = $2
             ON CONFLICT (account_id, device_id, name) DO UPDATE SET value = excluded.value",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes one of a device's config properties; whether it existed.
    pub async fn delete_config(
        &self,
        account_id: &str,
        device_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM device_config WHERE account_id = $1 AND device_id = $2 AND name = $3",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn device_exists(&self, account_id: &str, device_id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PskWrite;
    use super::super::tests::temp_store;
    use super::*;

    fn dev<'a>(
        account_id: &'a str,
        client_id: &'a str,
        username: &'a str,
        config: &'a [(String, String)],
    ) -> NewDevice<'a> {
        NewDevice {
            account_id,
            device_id: "d",
            iccid: "1",
            client_id,
            username,
            sealed_password: b"x",
            profile: None,
            publish: &[],
            subscribe: &[],
            config,
        }
    }

    async fn with_accounts() -> (Store, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        let sim = |iccid: &str, account: &str| PskWrite::Upsert {
            iccid: iccid.into(),
            account_id: account.into(),
            sealed_psk: vec![1],
        };
        store
            .apply_psk_writes(&[sim("1", "a"), sim("2", "b")])
            .await
            .unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn device_ids_are_unique_per_account_and_names_per_broker() {
        let (store, _dir) = with_accounts().await;
        store
            .create_device(&dev("a", "c1", "u1", &[]))
            .await
            .unwrap();
        assert!(matches!(
            store.create_device(&dev("a", "c2", "u2", &[])).await,
            Err(CreateDeviceError::Exists)
        ));
        assert!(matches!(
            store.create_device(&dev("b", "c1", "u3", &[])).await,
            Err(CreateDeviceError::NameClash)
        ));
        store
            .create_device(&dev("b", "c3", "u3", &[]))
            .await
            .unwrap();
        assert_eq!(
            store.device("a", "d").await.unwrap().unwrap().client_id,
            "c1"
        );
        assert!(store.device("c", "d").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_account_device_count_follows_creations_and_deletions() {
        let (store, _dir) = with_accounts().await;
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT device_count FROM accounts WHERE id = 'a'")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        store
            .create_device(&dev("a", "c1", "u1", &[]))
            .await
            .unwrap();
        assert!(matches!(
            store.create_device(&dev("a", "c2", "u2", &[])).await,
            Err(CreateDeviceError::Exists)
        ));
        let seeded = NewDevice {
            device_id: "e",
            ..dev("a", "c3", "u3", &[])
        };
        store.create_devices(&[seeded]).await.unwrap();
        assert_eq!(count().await, 2);
        assert!(store.delete_device("a", "d").await.unwrap());
        assert!(!store.delete_device("a", "d").await.unwrap());
        assert_eq!(count().await, 1);
    }

    #[tokio::test]
    async fn devices_created_together_are_all_or_none() {
        let (store, _dir) = with_accounts().await;
        let second = NewDevice {
            device_id: "e",
            ..dev("a", "c2", "u2", &[])
        };
        store
            .create_devices(&[dev("a", "c1", "u1", &[]), second])
            .await
            .unwrap();
        assert_eq!(store.principals("u2").await.unwrap().len(), 1);
        // The batch's second clashes with a stored username: its first must not stay.
        let fresh = NewDevice {
            device_id: "f",
            ..dev("a", "c4", "u4", &[])
        };
        let clash = NewDevice {
            device_id: "g",
            ..dev("a", "c5", "u1", &[])
        };
        assert!(matches!(
            store.create_devices(&[fresh, clash]).await,
            Err(CreateDeviceError::NameClash)
        ));
        assert!(store.device("a", "f").await.unwrap().is_none());
        assert!(store.principals("u4").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rotation_bumps_the_revision_and_revokes_the_old_password() {
        let (store, _dir) = with_accounts().await;
        store
            .create_device(&dev("a", "c1", "u1", &[]))
            .await
            .unwrap();
        let before = store.device("a", "d").await.unwrap().unwrap();
        assert_eq!(before.revision, 1);
        store
            .claim_serve("a", "d", (1, Some(0)), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.device("a", "d").await.unwrap().unwrap().served, 1);
        assert!(store.revocations_since(0, 10).await.unwrap().0.is_empty());
        let revision = store
            .set_password("a", "d", b"y", 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revision, 2);
        let after = store.device("a", "d").await.unwrap().unwrap();
        assert_eq!((after.revision, after.sealed_password), (2, b"y".to_vec()));
        assert_eq!(store.revocations_since(0, 10).await.unwrap().0, ["u1"]);
        assert!(
            store
                .set_password("a", "nope", b"z", 0)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn claims_hold_only_on_what_was_seen_and_undo_only_what_nothing_followed() {
        let (store, _dir) = with_accounts().await;
        store
            .create_device(&dev("a", "c1", "u1", &[]))
            .await
            .unwrap();
        let first = store
            .claim_serve("a", "d", (1, Some(0)), None)
            .await
            .unwrap();
        assert_eq!(first.as_ref().map(|c| (c.revision, c.served)), Some((1, 1)));
        // A second answer decided on the same view comes too late.
        assert!(
            store
                .claim_serve("a", "d", (1, Some(0)), None)
                .await
                .unwrap()
                .is_none()
        );
        let previous = PreviousPassword {
            sealed_password: b"x".to_vec(),
            password_set_at: 7,
            served: 1,
        };
        let rotated = store
            .claim_serve("a", "d", (1, Some(1)), Some((b"y", previous)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((rotated.revision, rotated.served), (2, 1));
        let row = store.device("a", "d").await.unwrap().unwrap();
        assert_eq!((row.sealed_password, row.served), (b"y".to_vec(), 1));
        // Without a count to compare, only the password must be the same.
        let plain = store
            .claim_serve("a", "d", (2, None), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(plain.served, 2);
        assert!(store.undo_serve("a", "d", &plain).await.unwrap());
        // The plain answer before the rotation can no longer be taken back.
        assert!(!store.undo_serve("a", "d", &first.unwrap()).await.unwrap());
        assert!(store.undo_serve("a", "d", &rotated).await.unwrap());
        let row = store.device("a", "d").await.unwrap().unwrap();
        assert_eq!(
            (
                row.sealed_password,
                row.served,
                row.password_set_at,
                row.revision
            ),
            (b"x".to_vec(), 1, 7, 3)
        );
    }

    #[tokio::test]
    async fn config_belongs_to_an_existing_device() {
        let (store, _dir) = with_accounts().await;
        let initial = [("broker-port".to_owned(), "8883".to_owned())];
        store
            .create_device(&dev("a", "c1", "u1", &initial))
            .await
            .unwrap();
        assert_eq!(
            store
                .config("a", "d", "broker-port")
                .await
                .unwrap()
                .as_deref(),
            Some("8883")
        );
        assert!(store.set_config("a", "d", "ca", "\"pem\"").await.unwrap());
        assert!(store.set_config("a", "d", "ca", "\"pem2\"").await.unwrap());
        assert!(!store.set_config("a", "ghost", "ca", "1").await.unwrap());
        let all = store.list_config("a", "d").await.unwrap().unwrap();
        assert_eq!(
            all,
            vec![
                ("broker-port".into(), "8883".into()),
                ("ca".into(), "\"pem2\"".into())
            ]
        );
        assert!(store.list_config("a", "ghost").await.unwrap().is_none());
        assert!(store.delete_config("a", "d", "ca").await.unwrap());
        assert!(!store.delete_config("a", "d", "ca").await.unwrap());
    }
}
