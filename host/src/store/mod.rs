//! The store: accounts, SIM PSKs (sealed), devices and their MQTT credentials, tenant functions, in SQLite or PostgreSQL through sqlx.
//!
//! One set of queries serves both backends through sqlx's `Any` driver: every query is
//! written with `$n` placeholders, which SQLite and PostgreSQL both read. The store only
//! ever sees sealed secrets; sealing and opening happen in the callers that hold the
//! master key. Every change to the PSK table, and every change to which tenant function
//! serves a route, bumps a global revision: the numbers other nodes follow.

mod accounts;
mod credentials;
mod devices;
pub mod follow;
mod reader;
mod tenants;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// A secret could not be sealed before it was written.
    #[error("sealing failed: {0}")]
    Sealing(String),
    /// A stored value does not parse or open (damaged, or sealed under another key), or
    /// a value to store does not serialize.
    #[error("stored value unreadable: {0}")]
    Corrupt(String),
    /// An in-place SQLite read failed, or what it needed was missing.
    #[error("store unavailable: {0}")]
    Read(String),
    /// The write would take the account past this quota; nothing was changed.
    #[error("quota {0} reached")]
    Quota(Quota),
}

/// Why an insert of broker credentials (a device's or an application's) failed.
pub(crate) enum InsertFailure {
    /// The random, broker-wide client id or username is taken: the caller retries.
    NameClash,
    /// Another unique key (the device id or application name) is taken.
    Exists,
    Store(StoreError),
}

impl From<sqlx::Error> for InsertFailure {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                if db.message().contains("client_id") || db.message().contains("username") {
                    InsertFailure::NameClash
                } else {
                    InsertFailure::Exists
                }
            }
            e => InsertFailure::Store(e.into()),
        }
    }
}

/// A PSK change as the store applies it; the key is already sealed.
pub enum PskWrite {
    /// Store the SIM's sealed PSK under its account, adding or replacing it.
    Upsert {
        /// The SIM's ICCID.
        iccid: String,
        /// The account the SIM belongs to.
        account_id: String,
        /// The PSK, sealed bound to this ICCID.
        sealed_psk: Vec<u8>,
    },
    /// Delete the SIM.
    Remove {
        /// The SIM's ICCID.
        iccid: String,
    },
}

/// A SIM as of `revision`; no sealed key when it was deleted then.
pub struct PskRow {
    /// The SIM's ICCID.
    pub iccid: String,
    /// The account the SIM belongs to.
    pub account_id: String,
    /// The sealed PSK; `None` when the SIM was deleted.
    pub sealed_psk: Option<Vec<u8>>,
    /// The revision of the SIM's last change.
    pub revision: i64,
}

/// The global counters in `meta`, and the NOTIFY topic each one's changes are announced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Any change to the SIM table.
    Psk,
    /// Any change to tenant activations or limits.
    Functions,
    /// A broker credential that stopped working (see [`Store::revocations_since`]).
    Credentials,
}

impl Counter {
    fn key(self) -> &'static str {
        match self {
            Counter::Psk => "psk_revision",
            Counter::Functions => "function_revision",
            Counter::Credentials => "credential_revision",
        }
    }

    fn topic(self) -> &'static str {
        match self {
            Counter::Psk => "psk",
            Counter::Functions => "fn",
            Counter::Credentials => "cred",
        }
    }
}

/// Which database the store runs on; a few queries and the change feed differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file: one node.
    Sqlite,
    /// PostgreSQL: any number of nodes sharing it.
    Postgres,
}

/// A handle to the database (a connection pool), cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// Where to LISTEN (PostgreSQL only).
    url: Option<String>,
    /// In-place readers of the SQLite file, for the lookups brokers wait on.
    readers: Option<std::sync::Arc<reader::Readers>>,
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

/// The URL with its password masked, for messages: a log line must not carry it. A
/// string whose password `url` cannot find (not a URL, or an `@` outside an authority)
/// is not repeated at all, since where a password in it ends is anyone's guess.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_authority() => {
            if parsed.password().is_some() {
                // Only a URL that cannot have a password refuses one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.into()
        }
        Ok(_) if !url.contains('@') => url.to_owned(),
        _ => "(a database URL that does not parse)".to_owned(),
    }
}

/// The channel every node LISTENs on; payloads are `psk:<revision>`, `fn:<revision>` or `cred:<revision>`.
pub const CHANNEL: &str = "psk_edge";

impl Store {
    /// The node's own SQLite file, created if missing.
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Self> {
        install_default_drivers();
        let path = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        // The URL is taken as a path; `?` and `#` would start a query or fragment.
        if path.contains(['?', '#']) {
            anyhow::bail!("the database path {path} may not contain '?' or '#'");
        }
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            // A file connection cannot go stale, and the ping would cost every query a
            // second hand-off to the connection's worker thread and back.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL + NORMAL: a commit survives a crash of the process; only an OS
                    // crash can lose the last transactions, the usual trade for SQLite
                    // servers. sqlx turns foreign keys on and waits 5 s on a busy file.
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
                        .await?;
                    Ok(())
                })
            })
            .connect(&format!("sqlite://{path}?mode=rwc"))
            .await
            .with_context(|| format!("opening {path}"))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            url: None,
            readers: Some(std::sync::Arc::new(reader::Readers::new(Path::new(path)))),
        })
    }

    /// A PostgreSQL database shared by many nodes. Migrations take an advisory lock,
    /// so nodes started together on an empty database apply them once.
    pub async fn open_postgres(url: &str) -> anyhow::Result<Self> {
        install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Store {
            pool,
            backend: Backend::Postgres,
            url: Some(url.to_owned()),
            readers: None,
        })
    }

    /// `postgres://…` or `postgresql://…`: PostgreSQL; `sqlite://PATH` or a path: SQLite.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else {
            Self::open_sqlite(Path::new(url.strip_prefix("sqlite://").unwrap_or(url))).await
        }
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The value of `key` in the `meta` table, if set.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sets `key` only if it has no value yet; returns whether this call set it, so
    /// one-time work (seeding, the key check) happens exactly once.
    pub async fn set_meta_once(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The current value of a global counter; 0 before its first change.
    pub async fn revision(&self, counter: Counter) -> Result<i64, StoreError> {
        Ok(self
            .meta(counter.key())
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The PSK table's revision: what a node's cache compares against.
    pub async fn psk_revision(&self) -> Result<i64, StoreError> {
        self.revision(Counter::Psk).await
    }

    /// The SIM changes after revision `after`, oldest first, streamed into `each` so a
    /// million rows never sit in one Vec. From 0: every SIM (deletions need not be told
    /// to an empty table). Returns the revision the table is at with them applied.
    pub async fn psk_changes_since(
        &self,
        after: i64,
        mut each: impl FnMut(PskRow),
    ) -> Result<i64, StoreError> {
        // Read first: every change up to it has committed (revisions are taken under
        // the counter's row lock, so they commit in order) and shows in the rows below.
        let mut at = self.psk_revision().await?.max(after);
        let sql = if after == 0 {
            "SELECT iccid, account_id, psk, revision FROM sims WHERE revision > $1"
        } else {
            // Within one revision (one batch may delete and re-add a SIM) the
            // deletions come first: the SIM still in `sims` is the one that stays.
            "SELECT iccid, account_id, psk, revision, 1 FROM sims WHERE revision > $1
             UNION ALL
             SELECT iccid, '', NULL, revision, 0 FROM sim_tombstones WHERE revision > $1
             ORDER BY 4, 5"
        };
        let mut rows = sqlx::query(sql).bind(after).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let row = PskRow {
                iccid: row.try_get(0)?,
                account_id: row.try_get(1)?,
                sealed_psk: row.try_get(2)?,
                revision: row.try_get(3)?,
            };
            at = at.max(row.revision);
            each(row);
        }
        Ok(at)
    }

    /// Takes the next value of `counter` inside `tx` and announces it to the other nodes
    /// when `tx` commits. Holding the counter's row until then orders the commits.
    pub(crate) async fn bump(
        &self,
        tx: &mut Transaction<'static, Any>,
        counter: Counter,
    ) -> Result<i64, StoreError> {
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO meta (key, value) VALUES ($1, '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)
             RETURNING CAST(value AS BIGINT)",
        )
        .bind(counter.key())
        .fetch_one(&mut **tx)
        .await?;
        if self.backend == Backend::Postgres {
            // PostgreSQL delivers it on commit, once per transaction: a bulk import
            // of a thousand lines is one notification.
            sqlx::query("SELECT pg_notify($1, $2) IS NULL")
                .bind(CHANNEL)
                .bind(format!("{}:{revision}", counter.topic()))
                .execute(&mut **tx)
                .await?;
        }
        Ok(revision)
    }

    /// Runs `change` in a transaction and, if it touched a row, takes the next revision
    /// of `counter` with it. Returns whether it touched a row; nothing is announced
    /// when it did not.
    async fn change_announced(
        &self,
        counter: Counter,
        change: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if change.execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        self.bump(&mut tx, counter).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Applies the writes in one transaction under one new revision. Per write:
    /// whether it took effect (removing an unknown identity does not).
    pub async fn apply_psk_writes(
        &self,
        writes: &[PskWrite],
    ) -> Result<(i64, Vec<bool>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.bump(&mut tx, Counter::Psk).await?;
        let at = now();
        let mut applied = Vec::with_capacity(writes.len());
        for write in writes {
            let done = match write {
                PskWrite::Upsert {
                    iccid,
                    account_id,
                    sealed_psk,
                } => {
                    sqlx::query("INSERT INTO accounts (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                        .bind(account_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    // A tombstone of an earlier deletion may stay: followers apply
                    // changes in revision order, so the newer row wins.
                    sqlx::query(
                        "INSERT INTO sims (iccid, account_id, psk, revision, updated_at) VALUES ($1, $2, $3, $4, $5)
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
                    .rows_affected()
                        > 0
                }
                PskWrite::Remove { iccid } => {
                    let removed = sqlx::query("DELETE FROM sims WHERE iccid = $1")
                        .bind(iccid)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        > 0;
                    if removed {
                        sqlx::query(
                            "INSERT INTO sim_tombstones (iccid, revision) VALUES ($1, $2)
                             ON CONFLICT (iccid) DO UPDATE SET revision = excluded.revision",
                        )
                        .bind(iccid)
                        .bind(revision)
                        .execute(&mut *tx)
                        .await?;
                    }
                    removed
                }
            };
            applied.push(done);
        }
        tx.commit().await?;
        Ok((revision, applied))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub use accounts::{Expiration, ProfileRow};
pub use credentials::{AppRow, CreateAppError, Principal, PrincipalKind};
pub use devices::{Claim, CreateDeviceError, DeviceRow, NewDevice, PreviousPassword};
pub use tenants::{AccountLimits, FunctionVersion, Quota};

#[cfg(test)]
#[path = "../../../tests/support/postgres.rs"]
pub(crate) mod test_postgres;

#[cfg(test)]
pub(crate) mod tests {
    use super::test_postgres::{self, postgres_mode, unique_name};
    use super::*;

    /// A fresh store on the backend the suite runs against.
    pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = if postgres_mode() {
            temp_postgres().await
        } else {
            Store::open_sqlite(&dir.path().join("t.db")).await.unwrap()
        };
        (store, dir)
    }

    async fn temp_postgres() -> Store {
        let cluster = test_postgres::shared();
        let url = cluster.create_database(&unique_name("store"));
        Store::open_postgres(&url).await.unwrap()
    }

    /// (table, column, type, not null) and the index names, the same for both backends.
    type Schema = (Vec<(String, String, String, bool)>, Vec<String>);

    async fn sqlite_schema(store: &Store) -> Schema {
        let rows = sqlx::query(
            "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk FROM sqlite_master m
             JOIN pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let mut columns: Vec<_> = rows
            .iter()
            .map(|r| {
                let ty: String = r.get(2);
                let ty = match ty.as_str() {
                    "INTEGER" => "bigint",
                    "BLOB" => "bytea",
                    "TEXT" => "text",
                    other => panic!("unexpected SQLite type {other}"),
                };
                // A PRIMARY KEY column is NOT NULL in PostgreSQL, not in SQLite.
                let not_null = r.get::<i64, _>(3) != 0 || r.get::<i64, _>(4) != 0;
                (r.get(0), r.get(1), ty.to_owned(), not_null)
            })
            .collect();
        columns.sort();
        let mut indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        indexes.sort();
        (columns, indexes)
    }

    async fn postgres_schema(store: &Store) -> Schema {
        let rows = sqlx::query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
             FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let mut columns: Vec<_> = rows
            .iter()
            .map(|r| {
                let nullable: String = r.get(3);
                (r.get(0), r.get(1), r.get(2), nullable == "NO")
            })
            .collect();
        columns.sort();
        // Constraint indexes (keys, unique) are SQLite's autoindexes: left out on both sides.
        let mut indexes: Vec<String> = sqlx::query_scalar(
            "SELECT i.indexname::text FROM pg_indexes i
             WHERE i.schemaname = 'public' AND i.tablename NOT LIKE '\\_sqlx%'
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        indexes.sort();
        (columns, indexes)
    }

    #[tokio::test]
    async fn both_backends_have_the_same_schema() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let postgres = temp_postgres().await;
        let (sqlite_columns, sqlite_indexes) = sqlite_schema(&sqlite).await;
        let (postgres_columns, postgres_indexes) = postgres_schema(&postgres).await;
        assert!(sqlite_columns.len() > 30, "{sqlite_columns:?}");
        assert_eq!(sqlite_columns, postgres_columns);
        assert_eq!(sqlite_indexes, postgres_indexes);
        // Pairs of migrations: the same versions and names on both sides.
        let names = |dir: &str| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let root = env!("CARGO_MANIFEST_DIR");
        assert_eq!(
            names(&format!("{root}/migrations/sqlite")),
            names(&format!("{root}/migrations/postgres"))
        );
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

    #[test]
    fn a_redacted_url_keeps_all_but_the_password() {
        assert_eq!(
            redact("postgres://edge:s%40cret@db.internal:5432/psk?sslmode=require"),
            "postgres://edge:***@db.internal:5432/psk?sslmode=require"
        );
        assert_eq!(redact("postgres://db/psk"), "postgres://db/psk");
        assert_eq!(
            redact("sqlite:///var/lib/psk.db"),
            "sqlite:///var/lib/psk.db"
        );
        // Not a URL: nothing of it is repeated, since the password could be anywhere.
        assert!(!redact("edge:secret@db psk").contains("secret"));
        assert!(!redact("postgres://edge:secret@db:notaport/x").contains("secret"));
        assert_eq!(redact("sqlite:psk.db"), "sqlite:psk.db");
    }
}
