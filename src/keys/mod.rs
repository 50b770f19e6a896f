//! API keys: the table every shard reads (swapped whole on reload, so lookups never lock), and the
//! per-key state (rate limiter, monthly usage) that outlives any one table.

pub mod file;
pub mod secret;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;

pub use file::{KeysFile, KeysFileError, Tier};
pub use secret::KeyHash;

use crate::ratelimit::{Gcra, GcraState};
use crate::usage::MonthlyUsage;

/// A public key's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicLimits {
    pub gcra: Gcra,
    pub qps: u32,
    pub monthly_cap: u64,
}

/// State that must survive a reload: a key keeps its limiter and its month's count.
#[derive(Debug, Default)]
pub struct KeyState {
    pub rate: GcraState,
    pub usage: MonthlyUsage,
    /// WebSocket streams the key holds open, across every shard.
    pub streams: std::sync::atomic::AtomicU32,
    /// The ledger's count for the month has been added to `usage` (once per key and process).
    pub restored: std::sync::atomic::AtomicBool,
}

/// One key as the hot path sees it.
#[derive(Debug)]
pub struct KeyEntry {
    pub name: Box<str>,
    /// The key's SHA-256: what a streaming session remembers it by.
    pub hash: KeyHash,
    pub tier: Tier,
    /// `None` for partner keys.
    pub limits: Option<PublicLimits>,
    pub revoked: bool,
    pub state: Arc<KeyState>,
}

/// A profile's QPS and burst for the keys marked `stress`.
pub type StressLimits = Option<(u32, u32)>;

/// Keys by hash. Immutable once built.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: FxHashMap<KeyHash, KeyEntry>,
    /// The checked keys it was built from, to rebuild it with other stress limits.
    source: Vec<file::ParsedKey>,
    stress: StressLimits,
}

impl KeyTable {
    /// Builds a table from checked keys, carrying over the state of keys already in `previous`
    /// and the stress limits in force there.
    pub fn build(keys: Vec<file::ParsedKey>, previous: &KeyTable) -> Self {
        Self::build_with(keys, previous, previous.stress)
    }

    /// [`KeyTable::build`], with `stress` as the QPS and burst of the keys marked `stress`.
    pub fn build_with(keys: Vec<file::ParsedKey>, previous: &KeyTable, stress: StressLimits) -> Self {
        let by_hash = keys
            .iter()
            .map(|key| {
                let before = previous.by_hash.get(&key.hash);
                let state = before.map_or_else(Arc::default, |e| Arc::clone(&e.state));
                let limits = key.limits.map(|(qps, burst, cap)| match stress {
                    Some((stress_qps, stress_burst)) if key.stress => (stress_qps, stress_burst, cap),
                    _ => (qps, burst, cap),
                });
                let limits = limits.map(|(qps, burst, monthly_cap)| PublicLimits {
                    gcra: Gcra::new(qps, burst),
                    qps,
                    monthly_cap,
                });
                // The limiter's state is a time measured in the old limit's steps: a key made
                // faster would wait out its old backlog first. New limits start a full burst.
                let old_gcra = before.and_then(|e| e.limits.as_ref().map(|l| l.gcra));
                if old_gcra.is_some() && old_gcra != limits.as_ref().map(|l| l.gcra) {
                    state.rate.reset();
                }
                let entry = KeyEntry {
                    name: key.name.as_str().into(),
                    hash: key.hash,
                    tier: key.tier,
                    limits,
                    revoked: key.revoked,
                    state,
                };
                (key.hash, entry)
            })
            .collect();
        Self { by_hash, source: keys, stress }
    }

    /// The stress limits its stress keys have.
    pub fn stress(&self) -> StressLimits {
        self.stress
    }

    /// The entry for a presented key: one SHA-256 and one hash-map probe, no allocation.
    pub fn lookup(&self, presented: &[u8]) -> Option<&KeyEntry> {
        self.by_hash.get(&secret::hash(presented))
    }

    /// The entry for a key already hashed (a session remembers its key this way).
    pub fn entry(&self, hash: &KeyHash) -> Option<&KeyEntry> {
        self.by_hash.get(hash)
    }

    /// Every key, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.by_hash.values()
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The live key table and the file it comes from.
pub struct KeyStore {
    table: ArcSwap<KeyTable>,
    path: PathBuf,
}

impl KeyStore {
    /// Loads `path` (missing: no keys yet).
    pub fn open(path: &Path) -> Result<Self, KeysFileError> {
        let keys = KeysFile::load(path)?.parse(path)?;
        let table = KeyTable::build(keys, &KeyTable::default());
        Ok(Self { table: ArcSwap::from_pointee(table), path: path.to_owned() })
    }

    /// The current table: lock-free, allocation-free. Do not hold across an await.
    pub fn table(&self) -> Guard<Arc<KeyTable>> {
        self.table.load()
    }

    /// The current table, owned (for the control plane, which holds it across awaits).
    pub fn current(&self) -> Arc<KeyTable> {
        self.table.load_full()
    }

    /// Re-reads the file and swaps the table in. On error the old table stays in force.
    pub fn reload(&self) -> Result<usize, KeysFileError> {
        let keys = KeysFile::load(&self.path)?.parse(&self.path)?;
        let table = KeyTable::build(keys, &self.table.load());
        let count = table.len();
        self.table.store(Arc::new(table));
        Ok(count)
    }

    /// Rebuilds the table with `stress` as its stress keys' limits (a profile switch); every
    /// key keeps its usage, and a key whose limits change starts them with a full burst.
    pub fn set_stress(&self, stress: StressLimits) {
        let current = self.table.load_full();
        if current.stress != stress {
            let table = KeyTable::build_with(current.source.clone(), &current, stress);
            self.table.store(Arc::new(table));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::file::KeyRecord;
    use std::sync::atomic::Ordering;

    fn public_record(name: &str, key: &str) -> KeyRecord {
        KeyRecord {
            name: name.into(),
            tier: Tier::Public,
            sha256: hex::encode(secret::hash(key.as_bytes())),
            qps: Some(1),
            burst: Some(1),
            monthly_cap: Some(10),
            created_unix_s: 0,
            revoked: false,
            stress: false,
        }
    }

    #[test]
    fn reload_keeps_state_and_applies_revocation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.toml");
        let mut file = KeysFile { keys: vec![public_record("alice", "pb_alice_secret_123")] };
        file.save(&path).expect("saved");
        let store = KeyStore::open(&path).expect("opened");
        let month = crate::clock::Month(1);
        {
            let table = store.table();
            let entry = table.lookup(b"pb_alice_secret_123").expect("known key");
            assert!(entry.state.usage.consume(month, Some(10), crate::usage::Channel::Http).is_ok());
            assert!(table.lookup(b"pb_wrong").is_none());
        }
        file.keys[0].revoked = true;
        file.save(&path).expect("saved");
        assert_eq!(store.reload().expect("reloaded"), 1);
        let table = store.table();
        let entry = table.lookup(b"pb_alice_secret_123").expect("still listed");
        assert!(entry.revoked);
        assert_eq!(entry.state.usage.used(month), 1, "usage survives the reload");
    }

    /// A store of two public keys at 1 QPS, burst 1: alice's, and `load`'s marked stress.
    fn alice_and_a_stress_key() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.toml");
        let mut stress = public_record("load", "pb_load_secret_1234");
        stress.stress = true;
        KeysFile { keys: vec![public_record("alice", "pb_alice_secret_123"), stress] }.save(&path).expect("saved");
        let store = KeyStore::open(&path).expect("opened");
        (dir, store)
    }

    #[test]
    fn stress_keys_take_the_profiles_limits_and_keep_their_state() {
        let (_dir, store) = alice_and_a_stress_key();
        let limits = |key: &[u8]| store.table().lookup(key).and_then(|e| e.limits).map(|l| (l.qps, l.gcra.burst()));
        assert_eq!(limits(b"pb_load_secret_1234"), Some((1, 1)));
        store.table().lookup(b"pb_load_secret_1234").expect("known").state.streams.store(3, Ordering::Relaxed);
        store.set_stress(Some((500, 900)));
        assert_eq!(limits(b"pb_load_secret_1234"), Some((500, 900)));
        assert_eq!(limits(b"pb_alice_secret_123"), Some((1, 1)), "other keys keep their own");
        let monthly = store.table().lookup(b"pb_load_secret_1234").and_then(|e| e.limits).map(|l| l.monthly_cap);
        assert_eq!(monthly, Some(10), "the cap is the key's own");
        assert_eq!(store.reload().expect("reloaded"), 2);
        assert_eq!(limits(b"pb_load_secret_1234"), Some((500, 900)), "a reload keeps the profile's limits");
        let entry = store.table();
        assert_eq!(entry.lookup(b"pb_load_secret_1234").expect("known").state.streams.load(Ordering::Relaxed), 3);
        drop(entry);
        store.set_stress(None);
        assert_eq!(limits(b"pb_load_secret_1234"), Some((1, 1)));
    }

    #[test]
    fn a_key_made_faster_is_not_held_to_its_old_backlog() {
        let (_dir, store) = alice_and_a_stress_key();
        let check = |key: &[u8], now_ns: u64| {
            let table = store.table();
            let entry = table.lookup(key).expect("known");
            let limits = entry.limits.expect("public");
            matches!(limits.gcra.check(&entry.state.rate, now_ns), crate::ratelimit::Decision::Allowed { .. })
        };
        let now = 50_000_000_000;
        assert!(check(b"pb_load_secret_1234", now) && check(b"pb_alice_secret_123", now));
        assert!(!check(b"pb_load_secret_1234", now) && !check(b"pb_alice_secret_123", now), "1 QPS, burst 1");
        store.set_stress(Some((1000, 1000)));
        assert!((0..1000).all(|_| check(b"pb_load_secret_1234", now)), "the new burst, at once");
        assert!(!check(b"pb_alice_secret_123", now), "a key whose limits did not change keeps its state");
    }

    #[test]
    fn a_bad_file_keeps_the_old_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.toml");
        KeysFile { keys: vec![public_record("alice", "pb_alice_secret_123")] }.save(&path).expect("saved");
        let store = KeyStore::open(&path).expect("opened");
        std::fs::write(&path, "not = [valid").expect("write");
        assert!(store.reload().is_err());
        assert!(store.table().lookup(b"pb_alice_secret_123").is_some());
    }
}
