//! Shared monthly caps. Each node keeps counting and refusing on its own atomics (the hot path
//! does not change); every `usage.flush_ms` the control plane writes, for every capped key, this
//! node's absolute count for the month into the hash `cluster:usage:<YYYY-MM>:<key>` (field: the
//! node's name), reads every node's back, and tells the key how much the rest of the fleet has
//! counted beyond this node's own. One script call per 500 keys, all in one pipeline: one round
//! trip per window whatever the request rate.
//!
//! Absolute counts, not increments, make a retried or lost write harmless: writing the same
//! figure twice changes nothing, and a Redis that lost its data is rebuilt by the next window's
//! writes. A node's figure is its ledger history for the month (its own journal's, or what Redis
//! held for it when it started) plus what this process admitted since.
//!
//! Overshoot: a node sees another's count as of that node's last write, at most one window old,
//! and uses what it read for up to one more window; past the cap, each node can admit at most
//! `burst + qps × 2 × flush window` more before it refuses. The fleet's total stays within
//! `cap + nodes × (burst + qps × 2 × flush_ms)`. It never refuses before the cap: every figure
//! read is one the fleet really counted.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::clock::{Month, Now};
use crate::cluster::redis::{Redis, RedisError};
use crate::control::{Every, Stop};
use crate::keys::{KeyEntry, KeyStore, Tier};
use crate::state::Shared;

pub const USAGE_PREFIX: &str = "cluster:usage:";

/// Keys per script call: bounds the work Redis does in one go (a script blocks it) while
/// keeping the whole sync one round trip.
const KEYS_PER_CALL: usize = 500;

/// For each key: sets this node's figure (or, on first contact, only reads what Redis holds for
/// the node: a write whose answer was lost must not be mistaken for history), then returns the
/// sum of every node's figure and what the node's own field held.
const SYNC: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local figure = ARGV[2 + i]
  local mine = -1
  if figure == '?' then
    local held = redis.call('HGET', key, ARGV[1])
    if held then mine = tonumber(held) end
  else
    redis.call('HSET', key, ARGV[1], figure)
    redis.call('EXPIREAT', key, ARGV[2])
  end
  local total = 0
  for _, v in ipairs(redis.call('HVALS', key)) do total = total + (tonumber(v) or 0) end
  out[#out + 1] = total
  out[#out + 1] = mine
end
return out
";

/// Where a key's month is kept in Redis.
pub fn usage_key(month: Month, key_id: &str) -> String {
    format!("{USAGE_PREFIX}{}:{key_id}", month.label())
}

/// What this node knows about a key's month in Redis.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    month: u32,
    /// What Redis held for this node when it first looked (0: nothing); `None` until it has.
    held: Option<u64>,
}

/// The sync's state across windows.
pub struct Caps {
    node: String,
    /// True when the ledger is this node's own (SQLite, memory): what it restored is this node's
    /// history. With PostgreSQL it is the whole fleet's, already in the other nodes' figures.
    own_ledger: bool,
    known: FxHashMap<Box<str>, Known>,
}

/// A key's figures at the moment of the sync: every entry that carries its name (a key replaced
/// under the same name keeps counting on the old entry until the shards let it go).
struct Figure<'t> {
    name: &'t str,
    /// Each entry with its count when the figures were taken.
    entries: Vec<(&'t KeyEntry, u64)>,
    used: u64,
    restored: u64,
}

impl Caps {
    pub fn new(node: String, own_ledger: bool) -> Self {
        Self { node, own_ledger, known: FxHashMap::default() }
    }

    /// One window: writes and reads every capped key's month, and sets each key's figure for the
    /// rest of the fleet. On an error nothing changes: the keys go on with the last figures.
    pub async fn sync(&mut self, redis: &Redis, keys: &KeyStore, now_ms: u64) -> Result<usize, RedisError> {
        let month = Month::of_unix_ms(now_ms);
        let table = keys.table();
        let mut figures: Vec<Figure<'_>> = Vec::new();
        let mut by_name: FxHashMap<&str, usize> = FxHashMap::default();
        for entry in table.entries().filter(|e| e.tier == Tier::Public && e.limits.is_some()) {
            let at = *by_name.entry(&entry.name).or_insert_with(|| {
                figures.push(Figure { name: &entry.name, entries: Vec::new(), used: 0, restored: 0 });
                figures.len() - 1
            });
            let figure = &mut figures[at];
            let used = entry.state.usage.used(month);
            figure.entries.push((entry, used));
            figure.used += used;
            figure.restored += entry.state.usage.restored(month);
        }
        self.known.retain(|name, known| known.month == month.0 && by_name.contains_key(name.as_ref()));
        if figures.is_empty() {
            return Ok(0);
        }
        // Kept a week past the month's end, for reports and late readers.
        let expire_at = Month(month.0 + 1).start_unix_ms() / 1000 + 7 * 86_400;
        let mut pipeline = redis::pipe();
        for chunk in figures.chunks(KEYS_PER_CALL) {
            let call = pipeline.cmd("EVAL").arg(SYNC).arg(chunk.len());
            for figure in chunk {
                call.arg(usage_key(month, figure.name));
            }
            call.arg(&self.node).arg(expire_at);
            for figure in chunk {
                match self.figure_of(figure, month) {
                    Some(ours) => call.arg(ours),
                    None => call.arg("?"),
                };
            }
        }
        let answers: Vec<Vec<i64>> = redis.query(&pipeline).await?;
        for (chunk, answer) in figures.chunks(KEYS_PER_CALL).zip(answers) {
            for (figure, pair) in chunk.iter().zip(answer.chunks_exact(2)) {
                let (total, mine) = (pair[0].max(0) as u64, pair[1]);
                let known = self.known.entry(figure.name.into()).or_insert(Known { month: month.0, held: None });
                if known.held.is_none() {
                    known.held = Some(mine.max(0) as u64);
                }
                // Against the count each entry had when the figures were taken: what it admitted
                // since is not in `total`, and is added on top by the entry itself.
                for &(entry, used) in &figure.entries {
                    entry.state.usage.set_fleet(month, total.saturating_sub(used));
                }
            }
        }
        Ok(figures.len())
    }

    /// This node's figure for a key's month, or `None` before it knows what Redis held for it.
    fn figure_of(&self, figure: &Figure<'_>, month: Month) -> Option<u64> {
        let known = self.known.get(figure.name).filter(|k| k.month == month.0)?;
        let held = known.held?;
        let history = if self.own_ledger { held.max(figure.restored) } else { held };
        Some(history + figure.used.saturating_sub(figure.restored))
    }
}

/// Syncs every `usage.flush_ms` until `stop`, then once more, so that the fleet has this node's
/// last counts. Redis being down is the connection's to log; the keys go on with the fleet's
/// last figures, plus what this node counts itself.
pub async fn run(redis: Arc<Redis>, shared: Arc<Shared>, mut caps: Caps, stop: Stop) {
    let period = || Duration::from_millis(shared.tuning.settings().settings.usage_flush_ms);
    let mut every = Every::new(period(), stop);
    while every.tick().await {
        every.retime(period());
        let _ = caps.sync(&redis, &shared.keys, Now::read().unix_ms).await;
    }
    let _ = caps.sync(&redis, &shared.keys, Now::read().unix_ms).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(used: u64, restored: u64) -> Figure<'static> {
        Figure { name: "k", entries: Vec::new(), used, restored }
    }

    #[test]
    fn a_node_figure_is_its_history_plus_what_it_admitted() {
        let month = Month(24_323);
        let mut caps = Caps::new("a".into(), true);
        assert_eq!(caps.figure_of(&figure(50, 40), month), None, "nothing is written before Redis is read");
        caps.known.insert("k".into(), Known { month: month.0, held: Some(30) });
        // Its own journal restored 40 (more than the 30 Redis held: the last write was lost).
        assert_eq!(caps.figure_of(&figure(50, 40), month), Some(50));
        // A PostgreSQL ledger restored the fleet's 40: only Redis knows this node's share.
        caps.own_ledger = false;
        assert_eq!(caps.figure_of(&figure(50, 40), month), Some(40));
        // A new month is unknown until read.
        assert_eq!(caps.figure_of(&figure(50, 40), Month(month.0 + 1)), None);
    }
}
