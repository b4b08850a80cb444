//! What the plugin remembers about clients: the rules of live sessions, and for a while
//! a salted digest of each password the node verified, so a reconnect need not ask again.
//!
//! Keyed by username (unique broker-wide on this platform). An entry is *live* while at
//! least one broker session authenticated through it is connected; live entries keep
//! their rules whatever else happens, so their traffic never waits on the node. An entry
//! with no live session is *offline*: it is only worth keeping while its digest may still
//! be reused, i.e. until `verified_at + cache_seconds`, and at most `cache_size` of them
//! are kept (the soonest to expire go first). Offline entries sit in a map ordered by
//! expiry, so sweeping and evicting are O(log n) per entry and never scan the cache.
//!
//! Sessions are identified by the broker's client pointer: the DISCONNECT event of
//! Mosquitto 2.0.11 fires for every context that leaves (clients that failed auth
//! included), and a session taken over by a reconnect with the same client id leaves
//! through it too, after the new session authenticated, so counting pointers stays right.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use broker_policy::Rule;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type Session = usize;

struct Entry {
    client_id: String,
    /// SHA-256(salt ‖ client id ‖ 0 ‖ password); `None` once it must not be reused.
    digest: Option<[u8; 32]>,
    verified_at: Instant,
    rules: Vec<Rule>,
    is_superuser: bool,
    live: u32,
    /// Where this entry sits in `Cache::offline`, when it has no live session.
    offline_key: Option<(Instant, u64)>,
}

pub struct Cache {
    salt: [u8; 32],
    ttl: Option<Duration>,
    max_offline: usize,
    entries: HashMap<String, Entry>,
    /// Which username each live session authenticated as.
    sessions: HashMap<Session, String>,
    /// Offline entries by (expiry, tie-breaker).
    offline: BTreeMap<(Instant, u64), String>,
    next_seq: u64,
}

/// What a live or cached client may do.
pub struct Grants<'a> {
    pub rules: &'a [Rule],
    pub is_superuser: bool,
}

impl Cache {
    pub fn new(salt: [u8; 32], ttl: Option<Duration>, max_offline: usize) -> Cache {
        Cache {
            salt,
            ttl,
            max_offline,
            entries: HashMap::new(),
            sessions: HashMap::new(),
            offline: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn digest(&self, client_id: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(client_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// A reconnect the cache can answer: same username, client id and password as one the
    /// node verified no more than `cache_seconds` ago. On a hit the session is live.
    pub fn hit(
        &mut self,
        session: Session,
        username: &str,
        client_id: &str,
        password: &str,
        now: Instant,
    ) -> bool {
        let Some(ttl) = self.ttl else { return false };
        let Some(entry) = self.entries.get(username) else {
            return false;
        };
        let Some(stored) = entry.digest else {
            return false;
        };
        // The digest covers the client id too; comparing it first spares a hash.
        if entry.client_id != client_id || now.saturating_duration_since(entry.verified_at) > ttl {
            return false;
        }
        let offered = self.digest(client_id, password);
        if !bool::from(stored.ct_eq(&offered)) {
            return false;
        }
        self.attach(session, username);
        true
    }

    /// The node allowed this connect: remember its rules, and its password for reuse.
    #[allow(clippy::too_many_arguments)]
    pub fn allowed(
        &mut self,
        session: Session,
        username: &str,
        client_id: &str,
        password: &str,
        rules: Vec<Rule>,
        is_superuser: bool,
        now: Instant,
    ) {
        let digest = self.ttl.map(|_| self.digest(client_id, password));
        // Other live sessions of this username (a takeover in progress) stay counted.
        let live = match self.entries.remove(username) {
            Some(old) => {
                if let Some(key) = old.offline_key {
                    self.offline.remove(&key);
                }
                old.live
            }
            None => 0,
        };
        self.entries.insert(
            username.to_owned(),
            Entry {
                client_id: client_id.to_owned(),
                digest,
                verified_at: now,
                rules,
                is_superuser,
                live,
                offline_key: None,
            },
        );
        self.attach(session, username);
    }

    /// The node denied a connect for this username: its password is no longer to be
    /// reused. Live sessions keep their rules (revoking them is what a `kick` is for), so a
    /// stranger guessing at a username cannot push a device's traffic onto the node.
    pub fn denied(&mut self, username: &str) {
        let Some(entry) = self.entries.get_mut(username) else {
            return;
        };
        entry.digest = None;
        if entry.live == 0 {
            self.remove(username);
        }
    }

    pub fn grants(&self, username: &str) -> Option<Grants<'_>> {
        self.entries.get(username).map(|entry| Grants {
            rules: &entry.rules,
            is_superuser: entry.is_superuser,
        })
    }

    /// Whether a broker session authenticated as `username` is connected.
    pub fn is_live(&self, username: &str) -> bool {
        self.entries
            .get(username)
            .is_some_and(|entry| entry.live > 0)
    }

    fn attach(&mut self, session: Session, username: &str) {
        if let Some(previous) = self.sessions.get(&session) {
            // The broker reuses a pointer only after its DISCONNECT; should one ever be
            // missed, do not count the old session twice.
            if previous == username {
                return;
            }
            self.detach(session, Instant::now());
        }
        let Some(entry) = self.entries.get_mut(username) else {
            return;
        };
        entry.live += 1;
        if let Some(key) = entry.offline_key.take() {
            self.offline.remove(&key);
        }
        self.sessions.insert(session, username.to_owned());
    }

    /// A broker session ended (any session: ones we never allowed are ignored).
    pub fn disconnected(&mut self, session: Session, now: Instant) {
        self.detach(session, now);
    }

    fn detach(&mut self, session: Session, now: Instant) {
        let Some(username) = self.sessions.remove(&session) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(&username) else {
            return;
        };
        entry.live = entry.live.saturating_sub(1);
        if entry.live > 0 {
            return;
        }
        let expiry = match (self.ttl, entry.digest) {
            (Some(ttl), Some(_)) => entry.verified_at + ttl,
            _ => now,
        };
        if expiry <= now || self.max_offline == 0 {
            self.remove(&username);
            return;
        }
        let key = (expiry, self.next_seq);
        self.next_seq += 1;
        entry.offline_key = Some(key);
        self.offline.insert(key, username);
        while self.offline.len() > self.max_offline {
            let Some((_, oldest)) = self.offline.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Revocation: forget the username entirely. Its sessions are about to be
    /// disconnected by the broker; until then their checks go to the node.
    pub fn kick(&mut self, username: &str) -> bool {
        self.remove(username)
    }

    /// The platform lost track of what it handed out: no cached password is trusted any
    /// more. Live sessions keep their rules; their next CONNECT asks the node.
    pub fn flush(&mut self) {
        for entry in self.entries.values_mut() {
            entry.digest = None;
        }
        // Offline entries held nothing but a reusable password.
        for (_, username) in std::mem::take(&mut self.offline) {
            self.entries.remove(&username);
        }
    }

    /// Drops offline entries whose password may no longer be reused; at most `budget`
    /// per call, so one tick never does much.
    pub fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let mut swept = 0;
        while swept < budget {
            match self.offline.first_key_value() {
                Some((&(expiry, _), _)) if expiry <= now => {}
                _ => break,
            }
            let Some((_, username)) = self.offline.pop_first() else {
                break;
            };
            self.entries.remove(&username);
            swept += 1;
        }
        swept
    }

    fn remove(&mut self, username: &str) -> bool {
        match self.entries.remove(username) {
            Some(entry) => {
                if let Some(key) = entry.offline_key {
                    self.offline.remove(&key);
                }
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn offline_len(&self) -> usize {
        self.offline.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_policy::Action;

    const TTL: Duration = Duration::from_secs(300);

    fn cache() -> Cache {
        Cache::new([7; 32], Some(TTL), 100)
    }

    fn rules() -> Vec<Rule> {
        vec![Rule::allow(Action::Publish, "a/sensor/device/d")]
    }

    #[test]
    fn hit_after_a_verified_connect() {
        let mut cache = cache();
        let t0 = Instant::now();
        assert!(!cache.hit(1, "u", "c", "p", t0), "empty cache");
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        cache.disconnected(1, t0 + Duration::from_secs(1));
        assert!(cache.hit(2, "u", "c", "p", t0 + Duration::from_secs(2)));
        assert_eq!(cache.grants("u").unwrap().rules, &rules()[..]);
        assert_eq!(cache.offline_len(), 0, "live again");
    }

    #[test]
    fn misses() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        assert!(!cache.hit(2, "u", "c", "wrong", t0), "wrong password");
        assert!(!cache.hit(2, "u", "other", "p", t0), "wrong client id");
        assert!(!cache.hit(2, "v", "c", "p", t0), "other username");
        // The separator keeps (client id, password) pairs apart.
        cache.allowed(3, "w", "ab", "c", rules(), false, t0);
        assert!(!cache.hit(4, "w", "a", "bc", t0));
    }

    #[test]
    fn expiry() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        assert!(cache.hit(2, "u", "c", "p", t0 + TTL));
        assert!(!cache.hit(3, "u", "c", "p", t0 + TTL + Duration::from_millis(1)));
    }

    #[test]
    fn cache_seconds_zero_never_reuses() {
        let mut cache = Cache::new([0; 32], None, 100);
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        assert!(!cache.hit(2, "u", "c", "p", t0));
        assert!(
            cache.grants("u").is_some(),
            "the live session keeps its rules"
        );
        cache.disconnected(1, t0);
        assert_eq!(cache.len(), 0, "nothing left to reuse");
    }

    #[test]
    fn offline_entries_are_swept_when_their_password_expires() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        cache.allowed(
            2,
            "v",
            "c2",
            "p",
            rules(),
            false,
            t0 + Duration::from_secs(10),
        );
        cache.disconnected(1, t0 + Duration::from_secs(20));
        cache.disconnected(2, t0 + Duration::from_secs(20));
        assert_eq!(cache.sweep(t0 + TTL - Duration::from_secs(1), 10), 0);
        assert_eq!(cache.sweep(t0 + TTL, 10), 1);
        assert!(cache.grants("u").is_none());
        assert!(cache.grants("v").is_some());
        assert_eq!(cache.sweep(t0 + TTL + Duration::from_secs(10), 10), 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_long_session_leaves_nothing_behind() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        cache.disconnected(1, t0 + TTL * 10);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn sweeping_is_bounded() {
        let mut cache = Cache::new([0; 32], Some(TTL), 1000);
        let t0 = Instant::now();
        for i in 0..50 {
            cache.allowed(i, &format!("u{i}"), "c", "p", rules(), false, t0);
            cache.disconnected(i, t0);
        }
        assert_eq!(cache.sweep(t0 + TTL, 20), 20);
        assert_eq!(cache.sweep(t0 + TTL, 20), 20);
        assert_eq!(cache.sweep(t0 + TTL, 20), 10);
    }

    #[test]
    fn offline_entries_are_capped_oldest_first() {
        let mut cache = Cache::new([0; 32], Some(TTL), 2);
        let t0 = Instant::now();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            cache.allowed(i, name, name, "p", rules(), false, at);
            cache.disconnected(i, at);
        }
        assert_eq!(cache.offline_len(), 2);
        assert!(cache.grants("a").is_none(), "soonest to expire goes first");
        assert!(cache.grants("b").is_some() && cache.grants("c").is_some());
        // Live sessions do not count against the cap.
        for i in 10..20 {
            cache.allowed(i, &format!("live{i}"), "x", "p", rules(), false, t0);
        }
        assert_eq!(cache.len(), 12);
    }

    #[test]
    fn deny_forgets_the_password_but_not_a_live_session() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        cache.denied("u");
        assert!(
            !cache.hit(2, "u", "c", "p", t0),
            "password no longer reusable"
        );
        assert!(
            cache.grants("u").is_some(),
            "the live session keeps its rules"
        );
        cache.disconnected(1, t0);
        assert!(cache.grants("u").is_none());

        cache.allowed(3, "v", "c", "p", rules(), false, t0);
        cache.disconnected(3, t0);
        cache.denied("v");
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.offline_len(), 0);
    }

    #[test]
    fn flush_drops_passwords_and_keeps_live_rules() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "live", "c1", "p", rules(), false, t0);
        cache.allowed(2, "gone", "c2", "p", rules(), false, t0);
        cache.disconnected(2, t0);
        cache.flush();
        assert!(cache.grants("live").is_some());
        assert!(cache.grants("gone").is_none());
        assert_eq!(cache.offline_len(), 0);
        assert!(!cache.hit(3, "live", "c1", "p", t0));
        // After its session ends nothing of it stays.
        cache.disconnected(1, t0);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn kick_forgets_the_username() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        assert!(cache.kick("u"));
        assert!(cache.grants("u").is_none());
        assert!(!cache.hit(2, "u", "c", "p", t0));
        assert!(!cache.kick("u"));
        // The broker then disconnects the session: nothing to undo.
        cache.disconnected(1, t0);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_takeover_keeps_the_entry_live() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        // Same client reconnects: new session authenticates, then the old one leaves.
        assert!(cache.hit(2, "u", "c", "p", t0));
        cache.disconnected(1, t0);
        assert_eq!(cache.offline_len(), 0);
        assert!(cache.grants("u").is_some());
        // A fresh verification while another session is live keeps counting both.
        cache.allowed(3, "u", "c", "p2", rules(), true, t0);
        cache.disconnected(2, t0);
        assert!(cache.grants("u").unwrap().is_superuser);
        assert_eq!(cache.offline_len(), 0);
        cache.disconnected(3, t0);
        assert_eq!(cache.offline_len(), 1);
    }

    #[test]
    fn sessions_we_never_allowed_are_ignored() {
        let mut cache = cache();
        let t0 = Instant::now();
        cache.allowed(1, "u", "c", "p", rules(), false, t0);
        cache.disconnected(99, t0);
        cache.disconnected(99, t0);
        assert_eq!(cache.offline_len(), 0);
        assert!(cache.grants("u").is_some());
    }
}
