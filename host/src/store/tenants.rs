//! Accounts as tenants: creation, API keys, uploaded function versions, which one is active, and per-account limits.

use sqlx::Row;

use super::{Counter, Store, StoreError, now};

/// A stored version of a tenant function, without its bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionVersion {
    pub version: String,
    pub interface: String,
    pub size: i64,
    pub uploaded_by: String,
    pub uploaded_at: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountLimits {
    pub deadline_ms: Option<u32>,
    pub memory_mib: Option<u32>,
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

    pub async fn account_exists(&self, account_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    pub async fn accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

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

    /// Stores a version (idempotent: the same bytes are the same version).
    pub async fn put_function_version(
        &self,
        account_id: &str,
        route: &str,
        version: &str,
        interface: &str,
        component: &[u8],
        uploaded_by: &str,
    ) -> Result<(), StoreError> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

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
        let set = sqlx::query(
            "UPDATE accounts SET fn_deadline_ms = $1, fn_memory_mib = $2 WHERE id = $3",
        )
        .bind(limits.deadline_ms.map(i64::from))
        .bind(limits.memory_mib.map(i64::from))
        .bind(account_id);
        self.change_announced(Counter::Functions, set).await
    }

    /// Every account with limits of its own.
    pub async fn account_limits(&self) -> Result<Vec<(String, AccountLimits)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, fn_deadline_ms, fn_memory_mib FROM accounts
             WHERE fn_deadline_ms IS NOT NULL OR fn_memory_mib IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let limit = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    AccountLimits {
                        deadline_ms: limit(r.try_get(1)?),
                        memory_mib: limit(r.try_get(2)?),
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
