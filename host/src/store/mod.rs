//! The store: accounts, SIM PSKs (sealed), devices and their MQTT credentials, in SQLite through sqlx.
//!
//! The store only ever sees sealed secrets; sealing and opening happen in the
//! callers that hold the master key. Every change to the PSK table bumps one
//! global revision, the number other caches follow.

mod accounts;
mod devices;
mod tenants;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("sealing failed: {0}")]
    Sealing(String),
    #[error("stored value unreadable: {0}")]
    Corrupt(String),
}

/// A PSK change as the store applies it; the key is already sealed.
pub enum PskWrite {
    Upsert {
        iccid: String,
        account_id: String,
        sealed_psk: Vec<u8>,
    },
    Remove {
        iccid: String,
    },
}

pub struct PskRow {
    pub iccid: String,
    pub account_id: String,
    pub sealed_psk: Vec<u8>,
    pub revision: i64,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Store {
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a crash of the process; only an OS crash
            // can lose the last transactions, which is the usual trade for SQLite servers.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Store { pool })
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sets `key` only if it has no value yet; returns whether this call set it, so
    /// one-time work (seeding, the key check) happens exactly once.
    pub async fn set_meta_once(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn psk_revision(&self) -> Result<i64, StoreError> {
        Ok(self
            .meta("psk_revision")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Every SIM, streamed into `each` so a million rows never sit in one Vec.
    pub async fn for_each_psk(&self, mut each: impl FnMut(PskRow)) -> Result<(), StoreError> {
        let mut rows =
            sqlx::query("SELECT iccid, account_id, psk, revision FROM sims").fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            each(PskRow {
                iccid: row.try_get(0)?,
                account_id: row.try_get(1)?,
                sealed_psk: row.try_get(2)?,
                revision: row.try_get(3)?,
            });
        }
        Ok(())
    }

    /// Applies the writes in one transaction under one new revision. Per write:
    /// whether it took effect (removing an unknown identity does not).
    pub async fn apply_psk_writes(
        &self,
        writes: &[PskWrite],
    ) -> Result<(i64, Vec<bool>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO meta (key, value) VALUES ('psk_revision', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
             RETURNING CAST(value AS INTEGER)",
        )
        .fetch_one(&mut *tx)
        .await?;
        let at = now();
        let mut applied = Vec::with_capacity(writes.len());
        for write in writes {
            let done = match write {
                PskWrite::Upsert {
                    iccid,
                    account_id,
                    sealed_psk,
                } => {
                    sqlx::query("INSERT INTO accounts (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
                        .bind(account_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO sims (iccid, account_id, psk, revision, updated_at) VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT (iccid) DO UPDATE SET account_id = excluded.account_id, psk = excluded.psk,
                         revision = excluded.revision, updated_at = excluded.updated_at",
                    )
                    .bind(iccid)
                    .bind(account_id)
                    .bind(sealed_psk)
                    .bind(revision)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                }
                PskWrite::Remove { iccid } => {
                    sqlx::query("DELETE FROM sims WHERE iccid = ?")
                        .bind(iccid)
                        .execute(&mut *tx)
                        .await?
                }
            };
            applied.push(done.rows_affected() > 0);
        }
        tx.commit().await?;
        Ok((revision, applied))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub use accounts::{Expiration, ProfileRow};
pub use devices::{BrokerDevice, CreateDeviceError, DeviceRow, NewDevice};
pub use tenants::{AccountLimits, ActiveFunction, FunctionVersion};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn psk_writes_share_one_revision_and_report_effect() {
        let (store, _dir) = temp_store().await;
        let (rev, applied) = store
            .apply_psk_writes(&[
                PskWrite::Upsert {
                    iccid: "1".into(),
                    account_id: "a".into(),
                    sealed_psk: vec![1],
                },
                PskWrite::Remove { iccid: "2".into() },
            ])
            .await
            .unwrap();
        assert_eq!((rev, applied), (1, vec![true, false]));
        let (rev, applied) = store
            .apply_psk_writes(&[PskWrite::Remove { iccid: "1".into() }])
            .await
            .unwrap();
        assert_eq!((rev, applied), (2, vec![true]));
        assert_eq!(store.psk_revision().await.unwrap(), 2);
    }
}
