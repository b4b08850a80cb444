//! Accounts as tenants: creation, API keys, uploaded function versions, which one is active, and per-account limits.

use sqlx::Row;

use super::{Counter, Store, StoreError, now};

/// A stored version of a tenant function, without its bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionVersion {
    /// The hex SHA-256 of the component: the same bytes are the same version.
    pub version: String,
    /// The wasi:http handler interface it exports.
    pub interface: String,
    /// The component's size in bytes.
    pub size: i64,
    /// Who uploaded it, as log lines name a caller (never a secret).
    pub uploaded_by: String,
    /// Unix seconds.
    pub uploaded_at: i64,
}

/// What the operator set for an account; None: the node's default. The function
/// limits bound one call; the quotas bound what the account keeps in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountLimits {
    /// Deadline of one function call, in milliseconds.
    pub deadline_ms: Option<u32>,
    /// Linear memory one function instance may grow to, in MiB.
    pub memory_mib: Option<u32>,
    /// See [`Quota::FunctionVersions`].
    #[serde(default)]
    pub function_versions: Option<u64>,
    /// See [`Quota::FunctionBytes`].
    #[serde(default)]
    pub function_bytes: Option<u64>,
    /// See [`Quota::DevicesPerSim`].
    #[serde(default)]
    pub devices_per_sim: Option<u64>,
    /// See [`Quota::Devices`].
    #[serde(default)]
    pub devices: Option<u64>,
    /// See [`Quota::Profiles`].
    #[serde(default)]
    pub profiles: Option<u64>,
    /// See [`Quota::ConfigPerDevice`].
    #[serde(default)]
    pub config_per_device: Option<u64>,
}

impl AccountLimits {
    fn quota(&self, quota: Quota) -> Option<u64> {
        match quota {
            Quota::FunctionVersions => self.function_versions,
            Quota::FunctionBytes => self.function_bytes,
            Quota::DevicesPerSim => self.devices_per_sim,
            Quota::Devices => self.devices,
            Quota::Profiles => self.profiles,
            Quota::ConfigPerDevice => self.config_per_device,
        }
    }

    /// Quotas of zero would refuse every write; the operator means "none" by null.
    pub fn valid(&self) -> bool {
        self.deadline_ms != Some(0)
            && self.memory_mib != Some(0)
            && Quota::ALL.iter().all(|q| {
                self.quota(*q)
                    .is_none_or(|n| n > 0 && i64::try_from(n).is_ok())
            })
    }
}

/// A bound on what an account stores, named as a refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Stored function versions, over all routes.
    FunctionVersions,
    /// Bytes of stored function versions, over all routes.
    FunctionBytes,
    /// Devices one SIM created.
    DevicesPerSim,
    /// Devices in the account.
    Devices,
    /// Device profiles in the account.
    Profiles,
    /// Config properties of one device.
    ConfigPerDevice,
}

impl Quota {
    /// Every quota, for checks that must cover them all.
    pub const ALL: [Quota; 6] = [
        Quota::FunctionVersions,
        Quota::FunctionBytes,
        Quota::DevicesPerSim,
        Quota::Devices,
        Quota::Profiles,
        Quota::ConfigPerDevice,
    ];

    /// The name in the limits body and in a refusal.
    pub fn name(self) -> &'static str {
        match self {
            Quota::FunctionVersions => "function_versions",
            Quota::FunctionBytes => "function_bytes",
            Quota::DevicesPerSim => "devices_per_sim",
            Quota::Devices => "devices",
            Quota::Profiles => "profiles",
            Quota::ConfigPerDevice => "config_per_device",
        }
    }

    /// The bound when the operator set none: room for an ordinary fleet, not for
    /// one tenant or SIM to fill the store.
    pub fn default_limit(self) -> i64 {
        match self {
            Quota::FunctionVersions => 20,
            Quota::FunctionBytes => 64 << 20,
            Quota::DevicesPerSim => 10,
            Quota::Devices => 1_000_000,
            Quota::Profiles => 100,
            Quota::ConfigPerDevice => 32,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Quota::FunctionVersions => "q_function_versions",
            Quota::FunctionBytes => "q_function_bytes",
            Quota::DevicesPerSim => "q_devices_per_sim",
            Quota::Devices => "q_devices",
            Quota::Profiles => "q_profiles",
            Quota::ConfigPerDevice => "q_config_per_device",
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Takes the account's row lock for the rest of `tx` and reads the account's bounds
/// for `quotas`: writes counted against one account's quotas run one at a time (in
/// SQLite every write does anyway), so a count taken after this holds until commit.
/// None when the account does not exist.
pub(crate) async fn lock_quotas<const N: usize>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account_id: &str,
    quotas: [Quota; N],
) -> Result<Option<[i64; N]>, StoreError> {
    // A no-op update of a non-key column: PostgreSQL's row lock that does not block
    // foreign-key checks, SQLite's write lock, with one statement for both.
    let locked = sqlx::query("UPDATE accounts SET created_at = created_at WHERE id = $1")
        .bind(account_id)
        .execute(&mut **tx)
        .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT q_function_versions, q_function_bytes, q_devices_per_sim, q_devices,
                q_profiles, q_config_per_device FROM accounts WHERE id = $1",
    )
    .bind(account_id)
    .fetch_one(&mut **tx)
    .await?;
    let mut bounds = [0; N];
    for (bound, quota) in bounds.iter_mut().zip(quotas) {
        *bound = row
            .try_get::<Option<i64>, _>(quota.column())?
            .unwrap_or_else(|| quota.default_limit());
    }
    Ok(Some(bounds))
}

impl Store {
    /// Creates the account; false when it exists.
    pub async fn create_account(&self, account_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO accounts (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(account_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the account exists.
    pub async fn account_exists(&self, account_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Every account's id, sorted.
    pub async fn accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Stores a tenant API key of an account; only the secret's digest is kept.
    pub async fn add_tenant_key(
        &self,
        key: &str,
        account_id: &str,
        secret_digest: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenant_keys (key, account_id, secret_digest, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key)
            .bind(account_id)
            .bind(secret_digest)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The account and secret digest of a tenant key.
    pub async fn tenant_key(&self, key: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT account_id, secret_digest FROM tenant_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?)
    }

    /// Stores a version (idempotent: the same bytes are the same version), within the
    /// account's function quotas: `StoreError::Quota` when it would exceed one.
    pub async fn put_function_version(
        &self,
        account_id: &str,
        route: &str,
        version: &str,
        interface: &str,
        component: &[u8],
        uploaded_by: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some([versions, bytes]) = lock_quotas(
            &mut tx,
            account_id,
            [Quota::FunctionVersions, Quota::FunctionBytes],
        )
        .await?
        else {
            return Err(StoreError::Read(format!("no account {account_id}")));
        };
        let stored = sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM function_versions WHERE account_id = $1 AND route = $2 AND version = $3",
        )
        .bind(account_id)
        .bind(route)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        if stored.is_some() {
            return Ok(());
        }
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(length(component)), 0) AS BIGINT)
             FROM function_versions WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
        let (count, used): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if count + 1 > versions {
            return Err(StoreError::Quota(Quota::FunctionVersions));
        }
        let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
        if used.saturating_add(size) > bytes {
            return Err(StoreError::Quota(Quota::FunctionBytes));
        }
        sqlx::query(
            "INSERT INTO function_versions (account_id, route, version, interface, component, uploaded_by, uploaded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(account_id)
        .bind(route)
        .bind(version)
        .bind(interface)
        .bind(component)
        .bind(uploaded_by)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a stored version that is not active, freeing its share of the function
    /// quotas; false when there is no such inactive version.
    pub async fn delete_function_version(
        &self,
        account_id: &str,
        route: &str,
        version: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM function_versions WHERE account_id = $1 AND route = $2 AND version = $3
             AND NOT EXISTS (SELECT 1 FROM active_functions a WHERE a.account_id = $1
                             AND a.route = $2 AND a.version = $3)",
        )
        .bind(account_id)
        .bind(route)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The bytes of one stored version of an account's function, if it exists.
    pub async fn function_component(
        &self,
        account_id: &str,
        route: &str,
        version: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT component FROM function_versions WHERE account_id = $1 AND route = $2 AND version = $3",
        )
        .bind(account_id)
        .bind(route)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The versions of a route, newest first, and the active one.
    pub async fn function_versions(
        &self,
        account_id: &str,
        route: &str,
    ) -> Result<(Vec<FunctionVersion>, Option<String>), StoreError> {
        let rows = sqlx::query(
            "SELECT version, interface, length(component), uploaded_by, uploaded_at FROM function_versions
             WHERE account_id = $1 AND route = $2 ORDER BY uploaded_at DESC, version",
        )
        .bind(account_id)
        .bind(route)
        .fetch_all(&self.pool)
        .await?;
        let versions = rows
            .iter()
            .map(|r| {
                Ok(FunctionVersion {
                    version: r.try_get(0)?,
                    interface: r.try_get(1)?,
                    size: r.try_get(2)?,
                    uploaded_by: r.try_get(3)?,
                    uploaded_at: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let active = sqlx::query_scalar(
            "SELECT version FROM active_functions WHERE account_id = $1 AND route = $2",
        )
        .bind(account_id)
        .bind(route)
        .fetch_optional(&self.pool)
        .await?;
        Ok((versions, active))
    }

    /// Makes `version` the active one; false when no such version is stored.
    pub async fn activate_function(
        &self,
        account_id: &str,
        route: &str,
        version: &str,
    ) -> Result<bool, StoreError> {
        let activate = sqlx::query(
            "INSERT INTO active_functions (account_id, route, version, activated_at)
             SELECT account_id, route, version, $4 FROM function_versions
             WHERE account_id = $1 AND route = $2 AND version = $3
             ON CONFLICT (account_id, route) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at",
        )
        .bind(account_id)
        .bind(route)
        .bind(version)
        .bind(now());
        self.change_announced(Counter::Functions, activate).await
    }

    /// Back to the platform's component; false when none was active.
    pub async fn deactivate_function(
        &self,
        account_id: &str,
        route: &str,
    ) -> Result<bool, StoreError> {
        let deactivate =
            sqlx::query("DELETE FROM active_functions WHERE account_id = $1 AND route = $2")
                .bind(account_id)
                .bind(route);
        self.change_announced(Counter::Functions, deactivate).await
    }

    /// Which version serves each (account, route), without the bytes: what a node
    /// compares with what it runs.
    pub async fn active_versions(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT account_id, route, version FROM active_functions")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// False when the account does not exist.
    pub async fn set_account_limits(
        &self,
        account_id: &str,
        limits: AccountLimits,
    ) -> Result<bool, StoreError> {
        let quota = |q: Option<u64>| q.and_then(|n| i64::try_from(n).ok());
        let set = sqlx::query(
            "UPDATE accounts SET fn_deadline_ms = $1, fn_memory_mib = $2, q_function_versions = $3,
               q_function_bytes = $4, q_devices_per_sim = $5, q_devices = $6, q_profiles = $7,
               q_config_per_device = $8
             WHERE id = $9",
        )
        .bind(limits.deadline_ms.map(i64::from))
        .bind(limits.memory_mib.map(i64::from))
        .bind(quota(limits.function_versions))
        .bind(quota(limits.function_bytes))
        .bind(quota(limits.devices_per_sim))
        .bind(quota(limits.devices))
        .bind(quota(limits.profiles))
        .bind(quota(limits.config_per_device))
        .bind(account_id);
        self.change_announced(Counter::Functions, set).await
    }

    /// Every account with limits of its own.
    pub async fn account_limits(&self) -> Result<Vec<(String, AccountLimits)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, fn_deadline_ms, fn_memory_mib, q_function_versions, q_function_bytes,
               q_devices_per_sim, q_devices, q_profiles, q_config_per_device FROM accounts
             WHERE fn_deadline_ms IS NOT NULL OR fn_memory_mib IS NOT NULL
               OR q_function_versions IS NOT NULL OR q_function_bytes IS NOT NULL
               OR q_devices_per_sim IS NOT NULL OR q_devices IS NOT NULL
               OR q_profiles IS NOT NULL OR q_config_per_device IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let limit = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let quota = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    AccountLimits {
                        deadline_ms: limit(r.try_get(1)?),
                        memory_mib: limit(r.try_get(2)?),
                        function_versions: quota(r.try_get(3)?),
                        function_bytes: quota(r.try_get(4)?),
                        devices_per_sim: quota(r.try_get(5)?),
                        devices: quota(r.try_get(6)?),
                        profiles: quota(r.try_get(7)?),
                        config_per_device: quota(r.try_get(8)?),
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_store;

    #[tokio::test]
    async fn versions_activate_and_roll_back() {
        let (store, _dir) = temp_store().await;
        assert!(store.create_account("acme").await.unwrap());
        assert!(!store.create_account("acme").await.unwrap());
        for v in ["v1", "v2"] {
            store
                .put_function_version(
                    "acme",
                    "device-create",
                    v,
                    "wasi:http/handler@0.3.0",
                    v.as_bytes(),
                    "operator",
                )
                .await
                .unwrap();
        }
        assert!(
            !store
                .activate_function("acme", "device-create", "v3")
                .await
                .unwrap()
        );
        assert!(
            store
                .activate_function("acme", "device-create", "v2")
                .await
                .unwrap()
        );
        assert!(
            store
                .activate_function("acme", "device-create", "v1")
                .await
                .unwrap()
        );
        let (versions, active) = store
            .function_versions("acme", "device-create")
            .await
            .unwrap();
        assert_eq!((versions.len(), active.as_deref()), (2, Some("v1")));
        assert_eq!(
            store.active_versions().await.unwrap(),
            [("acme".into(), "device-create".into(), "v1".into())]
        );
        assert_eq!(
            store
                .function_component("acme", "device-create", "v1")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"v1"[..])
        );
        assert!(
            store
                .deactivate_function("acme", "device-create")
                .await
                .unwrap()
        );
        assert!(store.active_versions().await.unwrap().is_empty());
    }
}
