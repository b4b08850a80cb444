//! `psk-admin`: the operator's PSK table; every change reaches the store first, then the live cache.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::bindings::psk_edge::platform::psk_admin::{Change, Host};
use super::{Caller, CapError, CapabilityCtx, Platform};
use crate::identity::{is_iccid, is_name};
use crate::store::{PskWrite, StoreError};

/// A PSK change with the key in the clear (zeroized on drop); sealed before it is stored.
pub enum PskChange {
    Upsert {
        iccid: String,
        account_id: String,
        psk: Zeroizing<Vec<u8>>,
    },
    Remove {
        iccid: String,
    },
}

impl PskChange {
    fn is_valid(&self) -> bool {
        match self {
            PskChange::Upsert {
                iccid,
                account_id,
                psk,
            } => is_iccid(iccid) && is_name(account_id) && (16..=64).contains(&psk.len()),
            PskChange::Remove { iccid } => is_iccid(iccid),
        }
    }
}

impl Host for CapabilityCtx {
    async fn apply(
        &mut self,
        changes: Vec<Change>,
    ) -> wasmtime::Result<Result<Vec<bool>, CapError>> {
        if !matches!(self.caller, Caller::Operator) {
            wasmtime::bail!("psk-admin is only available to the operator");
        }
        let changes: Vec<PskChange> = changes
            .into_iter()
            .map(|change| match change {
                Change::Upsert(entry) => PskChange::Upsert {
                    iccid: entry.identity,
                    account_id: entry.account_id,
                    psk: Zeroizing::new(entry.psk),
                },
                Change::Remove(iccid) => PskChange::Remove { iccid },
            })
            .collect();
        // The component validates and explains; this only guards the store's invariants.
        if !changes.iter().all(PskChange::is_valid) {
            return Ok(Err(CapError::Invalid));
        }
        Ok(self.platform.apply_psk_changes(changes).await.map_err(|e| {
            tracing::error!("psk-admin: {e}");
            CapError::Unavailable
        }))
    }
}

fn psk_context(iccid: &str) -> Vec<u8> {
    format!("psk:{iccid}").into_bytes()
}

impl Platform {
    /// Fills the PSK cache from the store; returns how many SIMs it holds.
    pub async fn load_psk_cache(&self) -> anyhow::Result<usize> {
        let mut failed = 0usize;
        self.store
            .for_each_psk(
                |row| match self.sealer.open(&psk_context(&row.iccid), &row.sealed_psk) {
                    Ok(key) => self.psks.insert(row.iccid, Arc::from(row.account_id), key),
                    Err(_) => failed += 1,
                },
            )
            .await?;
        if failed > 0 {
            anyhow::bail!("{failed} stored PSKs do not open under this master key");
        }
        Ok(self.psks.len())
    }

    /// Applies the changes in one transaction, then to the cache (closing the live
    /// connections of every SIM whose key changed). Per change: whether it took effect.
    pub async fn apply_psk_changes(
        &self,
        changes: Vec<PskChange>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut writes = Vec::with_capacity(changes.len());
        for change in &changes {
            writes.push(match change {
                PskChange::Upsert {
                    iccid,
                    account_id,
                    psk,
                } => PskWrite::Upsert {
                    iccid: iccid.clone(),
                    account_id: account_id.clone(),
                    sealed_psk: self
                        .sealer
                        .seal(&psk_context(iccid), psk)
                        .map_err(|e| StoreError::Sealing(e.to_string()))?,
                },
                PskChange::Remove { iccid } => PskWrite::Remove {
                    iccid: iccid.clone(),
                },
            });
        }
        let _order = self.psk_writes.lock().await;
        let (revision, applied) = self.store.apply_psk_writes(&writes).await?;
        for (change, took_effect) in changes.into_iter().zip(&applied) {
            match change {
                PskChange::Upsert {
                    iccid,
                    account_id,
                    psk,
                } => self.psks.insert(iccid, Arc::from(account_id), psk),
                PskChange::Remove { iccid } if *took_effect => self.psks.remove(&iccid),
                PskChange::Remove { .. } => {}
            }
        }
        tracing::debug!(revision, changes = applied.len(), "psk table changed");
        Ok(applied)
    }
}
