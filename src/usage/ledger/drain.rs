//! The drain: takes what every key admitted since the last drain and packs it into batches of at
//! most `usage.batch_max` rows. Runs on the control plane; the shards never wait on it (taking a
//! key's counts is an atomic swap beside the one they add to).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::keys::{KeyState, KeyTable};
use crate::usage::ledger::batch::{Batch, Row};
use crate::usage::CHANNELS;

/// Why a drain stopped before every key was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every key with counts was taken.
    Done,
    /// The writer's queue had no room: the counts not taken stay on their keys (nothing is lost)
    /// and go with the next drain.
    QueueFull,
}

/// What one drain did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    pub batches: u64,
    pub rows: u64,
    pub requests: u64,
    pub stopped: Stopped,
}

/// Builds batches from the key tables, numbering them from the journal's next sequence number.
pub struct Drainer {
    node: Arc<str>,
    next_seq: u64,
    batch_max: usize,
    /// The table drained last, and the one before it when the keys file changed since: a key
    /// removed from the file may still hold counts a shard made just before the swap.
    current: Option<Arc<KeyTable>>,
    previous: Option<Arc<KeyTable>>,
}

impl Drainer {
    pub fn new(node: Arc<str>, next_seq: u64, batch_max: usize) -> Self {
        Self { node, next_seq, batch_max: batch_max.max(1), current: None, previous: None }
    }

    /// The most rows of the batches drained from now on.
    pub fn set_batch_max(&mut self, batch_max: usize) {
        self.batch_max = batch_max.max(1);
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes every key's counts into batches of `hour_s` and hands each to `deliver`, which
    /// gives the batch back when it cannot take it (a full queue); its counts then go back to
    /// their keys and the drain stops.
    pub fn drain(
        &mut self,
        table: &Arc<KeyTable>,
        hour_s: i64,
        mut deliver: impl FnMut(Batch) -> Result<(), Batch>,
    ) -> Drained {
        if !self.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, table)) {
            self.previous = self.current.replace(Arc::clone(table));
        }
        let mut drained = Drained { batches: 0, rows: 0, requests: 0, stopped: Stopped::Done };
        let mut pack = Pack::default();
        let previous = self.previous.clone();
        let tables = std::iter::once(table).chain(previous.as_ref());
        for entry in tables.flat_map(|t| t.entries()) {
            let counts = entry.state.usage.take_unflushed();
            if counts == [0; CHANNELS] {
                continue;
            }
            pack.add(entry.name.as_ref(), entry.tier.as_str(), hour_s, counts, &entry.state);
            if pack.rows.len() >= self.batch_max && !self.send(&mut pack, &mut drained, &mut deliver) {
                return drained;
            }
        }
        if !pack.rows.is_empty() {
            self.send(&mut pack, &mut drained, &mut deliver);
        }
        drained
    }

    fn send(
        &mut self,
        pack: &mut Pack,
        drained: &mut Drained,
        deliver: &mut impl FnMut(Batch) -> Result<(), Batch>,
    ) -> bool {
        let batch = Batch { node: Arc::clone(&self.node), seq: self.next_seq, rows: std::mem::take(&mut pack.rows) };
        let (rows, requests) = (batch.rows.len() as u64, batch.requests());
        let taken = std::mem::take(&mut pack.taken);
        pack.index.clear();
        match deliver(batch) {
            Ok(()) => {
                self.next_seq += 1;
                drained.batches += 1;
                drained.rows += rows;
                drained.requests += requests;
                true
            }
            Err(_) => {
                for (state, counts) in taken {
                    state.usage.give_back(counts);
                }
                drained.stopped = Stopped::QueueFull;
                false
            }
        }
    }
}

/// The batch being filled: one row per key name (a name held by two keys, as when a key is
/// replaced under the same name, is merged) and what was taken from which key, to give back.
#[derive(Default)]
struct Pack {
    rows: Vec<Row>,
    index: FxHashMap<String, usize>,
    taken: Vec<(Arc<KeyState>, [u64; CHANNELS])>,
}

impl Pack {
    fn add(&mut self, key_id: &str, tier: &str, hour_s: i64, counts: [u64; CHANNELS], state: &Arc<KeyState>) {
        self.taken.push((Arc::clone(state), counts));
        if let Some(&at) = self.index.get(key_id) {
            let row = &mut self.rows[at];
            for (sum, count) in row.counts.iter_mut().zip(counts) {
                *sum += count;
            }
            return;
        }
        self.index.insert(key_id.to_owned(), self.rows.len());
        self.rows.push(Row { key_id: key_id.to_owned(), tier: tier.to_owned(), hour_s, counts });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Month;
    use crate::keys::file::ParsedKey;
    use crate::keys::{secret, Tier};
    use crate::usage::Channel;

    fn table(names: &[&str], previous: &KeyTable) -> Arc<KeyTable> {
        let keys = names
            .iter()
            .map(|name| ParsedKey {
                name: (*name).into(),
                tier: Tier::Partner,
                hash: secret::hash(name.as_bytes()),
                limits: None,
                revoked: false,
                stress: false,
            })
            .collect();
        Arc::new(KeyTable::build(keys, previous))
    }

    fn count(table: &KeyTable, name: &str, n: usize, channel: Channel) {
        let entry = table.lookup(name.as_bytes()).expect("known key");
        for _ in 0..n {
            entry.state.usage.consume(Month(1), None, channel).expect("uncapped");
        }
    }

    #[test]
    fn every_count_lands_in_one_batch_row_per_key() {
        let keys = table(&["a", "b", "c"], &KeyTable::default());
        count(&keys, "a", 3, Channel::Http);
        count(&keys, "a", 1, Channel::Udp);
        count(&keys, "c", 2, Channel::Sessions);
        let mut drainer = Drainer::new("n1".into(), 7, 2);
        let mut got = Vec::new();
        let drained = drainer.drain(&keys, 3600, |b| {
            got.push(b);
            Ok(())
        });
        assert_eq!(drained, Drained { batches: 1, rows: 2, requests: 6, stopped: Stopped::Done });
        assert_eq!(got[0].seq, 7);
        let mut rows = got[0].rows.clone();
        rows.sort_by(|x, y| x.key_id.cmp(&y.key_id));
        assert_eq!(rows[0].counts, [3, 1, 0]);
        assert_eq!(rows[1].counts, [0, 0, 2]);
        assert_eq!(drainer.next_seq(), 8);
        // Nothing new: nothing sent.
        assert_eq!(drainer.drain(&keys, 3600, |_| panic!("no batch expected")).batches, 0);
    }

    #[test]
    fn batches_hold_at_most_batch_max_rows() {
        let names: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let keys = table(&names.iter().map(String::as_str).collect::<Vec<_>>(), &KeyTable::default());
        for name in &names {
            count(&keys, name, 1, Channel::Http);
        }
        let mut drainer = Drainer::new("n1".into(), 0, 2);
        let mut sizes = Vec::new();
        drainer.drain(&keys, 0, |b| {
            sizes.push(b.rows.len());
            Ok(())
        });
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn a_full_queue_gives_the_counts_back() {
        let keys = table(&["a", "b", "c"], &KeyTable::default());
        for name in ["a", "b", "c"] {
            count(&keys, name, 2, Channel::Udp);
        }
        let mut drainer = Drainer::new("n1".into(), 0, 1);
        let mut accepted = 0;
        let drained = drainer.drain(&keys, 0, |b| {
            if accepted == 1 {
                return Err(b);
            }
            accepted += 1;
            Ok(())
        });
        assert_eq!(drained.stopped, Stopped::QueueFull);
        assert_eq!((drained.batches, drained.requests), (1, 2));
        // The refused batch's seq is reused, and what it held comes with the next drain.
        let mut total = 0;
        let drained = drainer.drain(&keys, 0, |b| {
            total += b.requests();
            assert!(b.seq >= 1);
            Ok(())
        });
        assert_eq!((drained.batches, total), (2, 4));
    }

    #[test]
    fn a_key_removed_from_the_file_is_drained_once_more() {
        let before = table(&["a", "b"], &KeyTable::default());
        let mut drainer = Drainer::new("n1".into(), 0, 10);
        drainer.drain(&before, 0, |_| Ok(()));
        count(&before, "b", 4, Channel::Http);
        let after = table(&["a"], &before);
        let mut got = 0;
        drainer.drain(&after, 0, |b| {
            got += b.requests();
            Ok(())
        });
        assert_eq!(got, 4, "b's last counts were drained from the previous table");
    }
}
