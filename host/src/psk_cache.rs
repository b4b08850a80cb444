//! The in-memory PSK table the SIM handshake reads, and the registry of live SIM connections a change must close.
//!
//! A full copy of every identity, not an LRU: an LRU would make unknown identities
//! answer in a different time than known ones, and could not serve handshakes while
//! the store is down. Keys are zeroized when dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use parking_lot::{Mutex, RwLock};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::wolfssl::PskLookup;

struct Entry {
    account_id: Arc<str>,
    key: Zeroizing<Vec<u8>>,
    /// The cache revision of the last change to this identity.
    revision: u64,
}

/// What a connection learns about its SIM once the handshake has succeeded.
#[derive(Clone, Debug)]
pub struct SimInfo {
    pub account_id: Arc<str>,
    pub revision: u64,
}

pub struct PskCache {
    entries: RwLock<HashMap<String, Entry>>,
    revision: AtomicU64,
    /// Unknown identities get a key derived from this, so they fail like a wrong key.
    decoy_secret: Zeroizing<[u8; 32]>,
    live: Mutex<LiveConnections>,
}

#[derive(Default)]
struct LiveConnections {
    next_id: u64,
    by_iccid: HashMap<String, HashMap<u64, CancellationToken>>,
}

impl PskCache {
    pub fn new() -> anyhow::Result<Self> {
        Ok(PskCache {
            entries: RwLock::new(HashMap::new()),
            revision: AtomicU64::new(0),
            decoy_secret: Zeroizing::new(crate::secrets::random_bytes()?),
            live: Mutex::new(LiveConnections::default()),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision a connection notes before its handshake; see [`Self::changed_since`].
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    pub fn insert(&self, iccid: String, account_id: Arc<str>, key: Zeroizing<Vec<u8>>) {
        let revision = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        self.entries.write().insert(
            iccid.clone(),
            Entry {
                account_id,
                key,
                revision,
            },
        );
        self.close_connections(&iccid);
    }

    pub fn remove(&self, iccid: &str) {
        self.revision.fetch_add(1, Ordering::AcqRel);
        self.entries.write().remove(iccid);
        self.close_connections(iccid);
    }

    pub fn sim(&self, iccid: &str) -> Option<SimInfo> {
        self.entries.read().get(iccid).map(|e| SimInfo {
            account_id: e.account_id.clone(),
            revision: e.revision,
        })
    }

    /// Registers a live connection of `iccid`; the token is cancelled when the SIM's
    /// PSK is changed or deleted. The registration ends when the guard drops.
    pub fn register(self: &Arc<Self>, iccid: &str) -> LiveGuard {
        let token = CancellationToken::new();
        let mut live = self.live.lock();
        live.next_id += 1;
        let id = live.next_id;
        live.by_iccid
            .entry(iccid.to_owned())
            .or_default()
            .insert(id, token.clone());
        LiveGuard {
            cache: self.clone(),
            iccid: iccid.to_owned(),
            id,
            token,
        }
    }

    fn close_connections(&self, iccid: &str) {
        if let Some(conns) = self.live.lock().by_iccid.remove(iccid) {
            for token in conns.into_values() {
                token.cancel();
            }
        }
    }

    fn decoy_key(&self, identity: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.decoy_secret[..]) {
            Ok(mac) => mac,
            // HMAC accepts any key length; this arm only satisfies the type.
            Err(_) => return Zeroizing::new(vec![0; 16]),
        };
        mac.update(identity);
        Zeroizing::new(mac.finalize().into_bytes()[..16].to_vec())
    }
}

impl PskLookup for PskCache {
    fn key_for(&self, identity: &[u8]) -> Zeroizing<Vec<u8>> {
        let known = Identity::decode(identity)
            .and_then(|id| self.entries.read().get(id.iccid()).map(|e| e.key.clone()));
        known.unwrap_or_else(|| self.decoy_key(identity))
    }
}

pub struct LiveGuard {
    cache: Arc<PskCache>,
    iccid: String,
    id: u64,
    token: CancellationToken,
}

impl LiveGuard {
    pub fn closed(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = self.cache.live.lock();
        if let Some(conns) = live.by_iccid.get_mut(&self.iccid) {
            conns.remove(&self.id);
            if conns.is_empty() {
                live.by_iccid.remove(&self.iccid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_identities_get_a_stable_decoy() {
        let cache = PskCache::new().unwrap();
        cache.insert("123".into(), "a".into(), Zeroizing::new(vec![1; 16]));
        assert_eq!(&cache.key_for(b"123")[..], &[1; 16]);
        let decoy = cache.key_for(b"999");
        assert_eq!(decoy.len(), 16);
        assert_eq!(decoy, cache.key_for(b"999"));
        assert_ne!(decoy, cache.key_for(b"998"));
    }

    #[test]
    fn a_change_closes_live_connections_of_that_sim_only() {
        let cache = Arc::new(PskCache::new().unwrap());
        cache.insert("1".into(), "a".into(), Zeroizing::new(vec![1; 16]));
        let one = cache.register("1");
        let two = cache.register("2");
        let before = cache.revision();
        cache.insert("1".into(), "b".into(), Zeroizing::new(vec![2; 16]));
        assert!(one.closed().is_cancelled());
        assert!(!two.closed().is_cancelled());
        assert!(cache.sim("1").unwrap().revision > before);
        cache.remove("2");
        assert!(two.closed().is_cancelled());
        drop((one, two));
        assert!(cache.live.lock().by_iccid.is_empty());
    }
}
