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
use wire::identity::Identity;
use zeroize::Zeroizing;

use crate::wolfssl::PskLookup;

/// Kept small on purpose: a million SIMs are a million of these. The account is an
/// index into [`Table::accounts`] rather than an `Arc` per SIM, and the ICCID is the
/// packed map key rather than a `String` (see [`Packed`]).
struct Entry {
    key: Zeroizing<Box<[u8]>>,
    /// The cache revision of the last change to this identity.
    revision: u64,
    account: u32,
}

/// An ICCID as the table's key: its digit count, then its digits two per byte. 12
/// bytes inline instead of a 24-byte `String` plus its heap block.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Packed([u8; 12]);

impl Packed {
    /// None for anything but 1–22 ASCII digits (those go to [`Table::other`]).
    fn new(iccid: &str) -> Option<Self> {
        let digits = iccid.as_bytes();
        if digits.is_empty() || digits.len() > 22 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut packed = [0u8; 12];
        packed[0] = digits.len() as u8;
        for (i, d) in digits.iter().enumerate() {
            packed[1 + i / 2] |= (d - b'0') << (4 * (i % 2));
        }
        Some(Packed(packed))
    }
}

/// The identities and the accounts they belong to.
#[derive(Default)]
struct Table {
    entries: HashMap<Packed, Entry>,
    /// Identities that are not plain ICCIDs; the store's validation keeps this empty.
    other: HashMap<String, Entry>,
    /// Account names, interned: accounts are few, SIMs many.
    accounts: Vec<Arc<str>>,
    account_index: HashMap<Arc<str>, u32>,
}

impl Table {
    fn get(&self, iccid: &str) -> Option<&Entry> {
        match Packed::new(iccid) {
            Some(packed) => self.entries.get(&packed),
            None => self.other.get(iccid),
        }
    }

    fn insert(&mut self, iccid: &str, entry: Entry) {
        match Packed::new(iccid) {
            Some(packed) => {
                self.entries.insert(packed, entry);
            }
            None => {
                self.other.insert(iccid.to_owned(), entry);
            }
        }
    }

    fn remove(&mut self, iccid: &str) {
        match Packed::new(iccid) {
            Some(packed) => self.entries.remove(&packed),
            None => self.other.remove(iccid),
        };
    }

    fn intern(&mut self, account_id: Arc<str>) -> u32 {
        if let Some(&index) = self.account_index.get(&account_id) {
            return index;
        }
        let index = u32::try_from(self.accounts.len()).unwrap_or(u32::MAX);
        self.accounts.push(account_id.clone());
        self.account_index.insert(account_id, index);
        index
    }

    fn account(&self, index: u32) -> Arc<str> {
        self.accounts
            .get(index as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    fn len(&self) -> usize {
        self.entries.len() + self.other.len()
    }
}

/// What a connection learns about its SIM once the handshake has succeeded.
#[derive(Clone, Debug)]
pub struct SimInfo {
    /// The account the SIM belongs to.
    pub account_id: Arc<str>,
    /// The cache revision of the last change to its PSK.
    pub revision: u64,
}

/// The PSK of every SIM identity, held whole in memory, and the SIMs' live
/// connections, which a change to their PSK closes.
pub struct PskCache {
    entries: RwLock<Table>,
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
    /// An empty cache with a fresh random decoy secret.
    pub fn new() -> anyhow::Result<Self> {
        Ok(PskCache {
            entries: RwLock::new(Table::default()),
            revision: AtomicU64::new(0),
            decoy_secret: Zeroizing::new(crate::secrets::random_bytes()?),
            live: Mutex::new(LiveConnections::default()),
        })
    }

    /// Identities held.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no identity is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision a connection notes before its handshake; see [`Self::changed_since`].
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Adds or replaces the PSK of `iccid` and closes the SIM's live connections, which
    /// were made with the old key.
    pub fn insert(&self, iccid: String, account_id: Arc<str>, key: Zeroizing<Vec<u8>>) {
        let revision = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        let key = Zeroizing::new(key.as_slice().into());
        {
            let mut table = self.entries.write();
            let account = table.intern(account_id);
            table.insert(
                &iccid,
                Entry {
                    key,
                    revision,
                    account,
                },
            );
        }
        self.close_connections(&iccid);
    }

    /// Forgets `iccid` and closes its live connections.
    pub fn remove(&self, iccid: &str) {
        self.revision.fetch_add(1, Ordering::AcqRel);
        self.entries.write().remove(iccid);
        self.close_connections(iccid);
    }

    /// The account and revision of `iccid`, if it is held.
    pub fn sim(&self, iccid: &str) -> Option<SimInfo> {
        let table = self.entries.read();
        table.get(iccid).map(|e| SimInfo {
            account_id: table.account(e.account),
            revision: e.revision,
        })
    }

    /// Does `iccid` exist with exactly this key? (The start banner prints the demo
    /// SIM's public key only while it is still the demo's.)
    pub fn holds(&self, iccid: &str, key: &[u8]) -> bool {
        self.entries
            .read()
            .get(iccid)
            .is_some_and(|e| bool::from(subtle::ConstantTimeEq::ct_eq(&e.key[..], key)))
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
        let known = Identity::decode(identity).and_then(|id| {
            self.entries
                .read()
                .get(id.iccid())
                .map(|e| Zeroizing::new(e.key.to_vec()))
        });
        known.unwrap_or_else(|| self.decoy_key(identity))
    }
}

/// One live SIM connection's registration; see [`PskCache::register`].
pub struct LiveGuard {
    cache: Arc<PskCache>,
    iccid: String,
    id: u64,
    token: CancellationToken,
}

impl LiveGuard {
    /// Cancelled when the SIM's PSK is changed or deleted: the connection must close.
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
    fn packed_iccids_keep_leading_zeros_and_length_apart() {
        let cache = PskCache::new().unwrap();
        cache.insert(
            "049305930495403".into(),
            "a".into(),
            Zeroizing::new(vec![1; 16]),
        );
        cache.insert(
            "49305930495403".into(),
            "b".into(),
            Zeroizing::new(vec![2; 16]),
        );
        cache.insert(
            "0493059304954030".into(),
            "a".into(),
            Zeroizing::new(vec![3; 16]),
        );
        cache.insert("not-digits".into(), "c".into(), Zeroizing::new(vec![4; 16]));
        assert_eq!(cache.len(), 4);
        assert_eq!(&*cache.sim("049305930495403").unwrap().account_id, "a");
        assert_eq!(&*cache.sim("49305930495403").unwrap().account_id, "b");
        assert_eq!(&*cache.sim("not-digits").unwrap().account_id, "c");
        assert_eq!(&cache.key_for(b"0493059304954030")[..], &[3; 16]);
        assert!(cache.sim("0493059304954").is_none());
        cache.remove("49305930495403");
        cache.remove("not-digits");
        assert_eq!(cache.len(), 2);
        assert_eq!(&cache.key_for(b"049305930495403")[..], &[1; 16]);
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
