//! `psk-admin`: the operator's PSK table; every change reaches the store first, then the live cache.

use std::sync::Arc;

use wire::identity::{is_iccid, is_name};
use zeroize::Zeroizing;

use super::bindings::psk_edge::platform::psk_admin::{Change, Host};
use super::{Caller, CapError, CapabilityCtx, Platform};
use crate::store::{PskWrite, StoreError};

/// A PSK change with the key in the clear (zeroized on drop); sealed before it is stored.
pub enum PskChange {
    /// Add the SIM or replace its PSK.
    Upsert {
        /// The SIM's ICCID.
        iccid: String,
        /// The account the SIM belongs to.
        account_id: String,
        /// The PSK in the clear.
        psk: Zeroizing<Vec<u8>>,
    },
    /// Delete the SIM.
    Remove {
        /// The SIM's ICCID.
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
    /// Brings the PSK cache to the store's latest revision: everything on the first
    /// call, then only what changed since (from this node or any other). Returns how
    /// many SIMs the cache holds. Keys that do not open under this node's master key
    /// are left out and reported.
    pub async fn sync_psks(&self) -> anyhow::Result<usize> {
        let mut applied = self.psk_sync.lock().await;
        let mut failed = 0usize;
        let mut changed = 0usize;
        let at = self
            .store
            .psk_changes_since(*applied, |row| {
                changed += 1;
                match row.sealed_psk {
                    None => self.psks.remove(&row.iccid),
                    Some(sealed) => match self.sealer.open(&psk_context(&row.iccid), &sealed) {
                        Ok(key) => self.psks.insert(row.iccid, Arc::from(row.account_id), key),
                        Err(_) => {
                            failed += 1;
                            tracing::error!(
                                iccid = row.iccid,
                                "stored PSK does not open under this master key; SIM left out"
                            );
                        }
                    },
                }
            })
            .await?;
        if *applied == 0 && failed > 0 {
            anyhow::bail!("{failed} stored PSKs do not open under this master key");
        }
        if changed > 0 {
            tracing::debug!(
                from = *applied,
                to = at,
                changed,
                "psk cache followed the store"
            );
        }
        *applied = at;
        Ok(self.psks.len())
    }

    /// Applies the changes in one transaction, then brings the cache up to it (closing
    /// the live connections of every SIM whose key changed). Per change: whether it
    /// took effect.
    pub async fn apply_psk_changes(
        &self,
        changes: Vec<PskChange>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut writes = Vec::with_capacity(changes.len());
        for change in changes {
            writes.push(match change {
                PskChange::Upsert {
                    iccid,
                    account_id,
                    psk,
                } => PskWrite::Upsert {
                    sealed_psk: self
                        .sealer
                        .seal(&psk_context(&iccid), &psk)
                        .map_err(|e| StoreError::Sealing(e.to_string()))?,
                    iccid,
                    account_id,
                },
                PskChange::Remove { iccid } => PskWrite::Remove { iccid },
            });
        }
        let (revision, applied) = self.store.apply_psk_writes(&writes).await?;
        // The cache takes the change the way it takes another node's: by revision,
        // in store order. If the store fails right after the commit, the change is
        // acknowledged and the follower's next resync brings it.
        if let Err(e) = self.sync_psks().await {
            tracing::warn!(revision, "psk change stored, cache follows later: {e:#}");
        }
        tracing::debug!(revision, changes = applied.len(), "psk table changed");
        Ok(applied)
    }
}
