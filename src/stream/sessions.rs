//! Streaming sessions: the short-lived, single-use credential a `POST /v1/sessions` makes and a
//! WebSocket upgrade on any shard redeems.
//!
//! A fixed table of slots, allocated at start, so a flood of creations costs a 503 and never
//! memory. Each slot's state and generation share one atomic word: creating is a CAS from free to
//! filling, redeeming a CAS from pending to taking, so two shards can never both redeem one
//! session and no lock is ever taken. The id names its slot and generation (so redeeming is one
//! probe, not a search) and carries 128 random bits, compared before the slot is touched.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::book::SymbolId;
use crate::counters::{CounterBlock, Gauge, StreamCounter};
use crate::keys::KeyHash;
use crate::stream::symbols::Fields;

/// Most symbols one session (and so one stream) watches.
pub const SESSION_SYMBOLS_MAX: usize = 100;
/// Characters of a session id: slot and generation (8 hex digits each), 128 random bits (32).
pub const SESSION_ID_CHARS: usize = 48;

const FREE: u64 = 0;
const FILLING: u64 = 1;
const PENDING: u64 = 2;
const TAKING: u64 = 3;

const fn word(generation: u32, state: u64) -> u64 {
    (generation as u64) << 2 | state
}

struct Slot {
    /// Generation (bits 2..34) and state (bits 0..2).
    word: AtomicU64,
    expires_ms: AtomicU64,
    secret: [AtomicU64; 2],
    key: [AtomicU64; 4],
    len: AtomicU32,
    /// [`Fields::bits`].
    fields: AtomicU32,
    symbols: [AtomicU32; SESSION_SYMBOLS_MAX],
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            word: AtomicU64::new(word(0, FREE)),
            expires_ms: AtomicU64::new(0),
            secret: Default::default(),
            key: Default::default(),
            len: AtomicU32::new(0),
            fields: AtomicU32::new(0),
            symbols: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// A session as its creator receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionId {
    slot: u32,
    generation: u32,
    secret: u128,
}

impl SessionId {
    /// The id as clients see it: 48 lower-case hex digits.
    pub fn text(&self) -> [u8; SESSION_ID_CHARS] {
        let mut out = [0u8; SESSION_ID_CHARS];
        // 24 bytes always fit 48 digits.
        let _ = hex::encode_to_slice(self.bytes(), &mut out);
        out
    }

    /// Reads an id back; `None` for anything that is not 48 hex digits.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let mut value = [0u8; 24];
        hex::decode_to_slice(text, &mut value).ok()?;
        let (slot, rest) = value.split_at(4);
        let (generation, secret) = rest.split_at(4);
        Some(Self {
            slot: u32::from_be_bytes(slot.try_into().ok()?),
            generation: u32::from_be_bytes(generation.try_into().ok()?),
            secret: u128::from_be_bytes(secret.try_into().ok()?),
        })
    }

    fn bytes(&self) -> [u8; 24] {
        let mut value = [0u8; 24];
        value[..4].copy_from_slice(&self.slot.to_be_bytes());
        value[4..8].copy_from_slice(&self.generation.to_be_bytes());
        value[8..].copy_from_slice(&self.secret.to_be_bytes());
        value
    }
}

/// What a redeemed session hands its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redeemed {
    pub key: KeyHash,
    /// What the stream's price objects carry besides the price.
    pub fields: Fields,
    len: usize,
    symbols: [SymbolId; SESSION_SYMBOLS_MAX],
}

impl Redeemed {
    pub fn symbols(&self) -> &[SymbolId] {
        &self.symbols[..self.len]
    }
}

/// Why a session could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// Every slot holds a pending session.
    Full,
    /// The operating system gave no randomness.
    NoRandomness,
}

/// Why a session id was refused at the upgrade. Unknown, already used and forged ids look the
/// same to the client on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedeemError {
    Unknown,
    Expired,
}

/// The node's pending sessions.
pub struct SessionTable {
    slots: Box<[Slot]>,
    /// Where the next creation starts looking, so creations spread over the table instead of
    /// all contending for its first free slot.
    cursor: AtomicUsize,
    ttl_ms: u64,
}

impl SessionTable {
    /// A table of `capacity` slots (at least 1), each session living `ttl_ms`.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        let slots = (0..capacity.clamp(1, u32::MAX as usize)).map(|_| Slot::default()).collect();
        Self { slots, cursor: AtomicUsize::new(0), ttl_ms }
    }

    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Creates a session for `key` watching `symbols` (at most [`SESSION_SYMBOLS_MAX`]; extra
    /// ones are ignored). Counted in `counters`: created, and the pending gauge.
    pub fn create(
        &self,
        key: &KeyHash,
        symbols: &[SymbolId],
        fields: Fields,
        now_ms: u64,
        counters: &CounterBlock,
    ) -> Result<SessionId, CreateError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|_| CreateError::NoRandomness)?;
        let secret = u128::from_le_bytes(random);
        let n = self.slots.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            let index = (start + k) % n;
            let slot = &self.slots[index];
            let mut current = slot.word.load(Ordering::Acquire);
            if current & 3 == PENDING && now_ms > slot.expires_ms.load(Ordering::Relaxed) {
                // An expired session nobody swept yet: reclaim it rather than refuse.
                if self.expire(index, current, counters) {
                    current = slot.word.load(Ordering::Acquire);
                }
            }
            if current & 3 != FREE {
                continue;
            }
            let generation = (current >> 2) as u32;
            if slot
                .word
                .compare_exchange(current, word(generation, FILLING), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            slot.expires_ms.store(now_ms.saturating_add(self.ttl_ms), Ordering::Relaxed);
            slot.secret[0].store(secret as u64, Ordering::Relaxed);
            slot.secret[1].store((secret >> 64) as u64, Ordering::Relaxed);
            for (word, chunk) in slot.key.iter().zip(key.chunks_exact(8)) {
                word.store(u64::from_le_bytes(chunk.try_into().unwrap_or_default()), Ordering::Relaxed);
            }
            let symbols = &symbols[..symbols.len().min(SESSION_SYMBOLS_MAX)];
            for (cell, id) in slot.symbols.iter().zip(symbols) {
                cell.store(id.raw(), Ordering::Relaxed);
            }
            slot.len.store(symbols.len() as u32, Ordering::Relaxed);
            slot.fields.store(fields.bits(), Ordering::Relaxed);
            // Release: a redeemer that sees PENDING sees every field above.
            slot.word.store(word(generation, PENDING), Ordering::Release);
            counters.stream_add(StreamCounter::SessionsCreated, 1);
            counters.gauge_add(Gauge::PendingSessions, 1);
            return Ok(SessionId { slot: index as u32, generation, secret });
        }
        Err(CreateError::Full)
    }

    /// Redeems a session id: succeeds once, on any shard, before the session expires.
    pub fn redeem(&self, text: &[u8], now_ms: u64, counters: &CounterBlock) -> Result<Redeemed, RedeemError> {
        let id = SessionId::parse(text).ok_or(RedeemError::Unknown)?;
        let slot = self.slots.get(id.slot as usize).ok_or(RedeemError::Unknown)?;
        let pending = word(id.generation, PENDING);
        if slot.word.load(Ordering::Acquire) != pending {
            return Err(if swept(slot, &id, now_ms) { RedeemError::Expired } else { RedeemError::Unknown });
        }
        // Read before the CAS: a wrong guess must not consume someone else's session. If the slot
        // changed hands meanwhile, the CAS below fails on the generation.
        if secret_of(slot) != id.secret {
            return Err(RedeemError::Unknown);
        }
        if slot
            .word
            .compare_exchange(pending, word(id.generation, TAKING), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(RedeemError::Unknown);
        }
        let expired = now_ms > slot.expires_ms.load(Ordering::Relaxed);
        let mut redeemed = Redeemed {
            key: [0; 32],
            fields: Fields::from_bits(slot.fields.load(Ordering::Relaxed)),
            len: 0,
            symbols: [SymbolId::from_raw(0); SESSION_SYMBOLS_MAX],
        };
        for (chunk, word) in redeemed.key.chunks_exact_mut(8).zip(&slot.key) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        redeemed.len = (slot.len.load(Ordering::Relaxed) as usize).min(SESSION_SYMBOLS_MAX);
        for (id, cell) in redeemed.symbols.iter_mut().zip(&slot.symbols).take(redeemed.len) {
            *id = SymbolId::from_raw(cell.load(Ordering::Relaxed));
        }
        // A redeemed id is spent: wiping its secret keeps `swept` from calling it expired later.
        slot.secret[0].store(0, Ordering::Relaxed);
        slot.secret[1].store(0, Ordering::Relaxed);
        slot.word.store(word(id.generation.wrapping_add(1), FREE), Ordering::Release);
        counters.gauge_add(Gauge::PendingSessions, -1);
        if expired {
            counters.stream_add(StreamCounter::SessionsExpired, 1);
            return Err(RedeemError::Expired);
        }
        counters.stream_add(StreamCounter::SessionsRedeemed, 1);
        Ok(redeemed)
    }

    /// Frees every expired pending session, so the pending gauge falls back without waiting for
    /// a creation to reuse the slot. Returns how many expired.
    pub fn sweep(&self, now_ms: u64, counters: &CounterBlock) -> usize {
        let mut expired = 0;
        for (index, slot) in self.slots.iter().enumerate() {
            let current = slot.word.load(Ordering::Acquire);
            if current & 3 == PENDING
                && now_ms > slot.expires_ms.load(Ordering::Relaxed)
                && self.expire(index, current, counters)
            {
                expired += 1;
            }
        }
        expired
    }

    /// Moves slot `index` from `pending` (its word as last read) to free; false if someone else
    /// took it first.
    fn expire(&self, index: usize, pending: u64, counters: &CounterBlock) -> bool {
        let slot = &self.slots[index];
        let generation = (pending >> 2) as u32;
        if slot.word.compare_exchange(pending, word(generation, TAKING), Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return false;
        }
        slot.word.store(word(generation.wrapping_add(1), FREE), Ordering::Release);
        counters.gauge_add(Gauge::PendingSessions, -1);
        counters.stream_add(StreamCounter::SessionsExpired, 1);
        true
    }
}

fn secret_of(slot: &Slot) -> u128 {
    u128::from(slot.secret[0].load(Ordering::Relaxed)) | u128::from(slot.secret[1].load(Ordering::Relaxed)) << 64
}

/// Whether `id`, no longer pending, was freed by the sweep (or a creation reclaiming it) after it
/// expired, rather than redeemed: its slot, not reused since, still holds its secret and a past
/// expiry. So a client late with its id is told it expired whenever the sweep happened to run.
/// A slot reused meanwhile reads as unknown, which is what the id then is.
fn swept(slot: &Slot, id: &SessionId, now_ms: u64) -> bool {
    slot.word.load(Ordering::Acquire) == word(id.generation.wrapping_add(1), FREE)
        && id.secret != 0
        && secret_of(slot) == id.secret
        && now_ms > slot.expires_ms.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use proptest::prelude::*;

    fn ids(raw: &[u32]) -> Vec<SymbolId> {
        raw.iter().map(|&r| SymbolId::from_raw(r)).collect()
    }

    #[test]
    fn a_session_is_redeemed_once_with_its_key_and_symbols() {
        let counters = Counters::new(2);
        let table = SessionTable::new(4, 60_000);
        let key = [7u8; 32];
        let id = table.create(&key, &ids(&[3, 1, 4]), Fields { spread: true }, 1_000, counters.shard(0)).expect("room");
        assert_eq!(counters.snapshot().gauge(Gauge::PendingSessions), 1);
        let text = id.text();
        // Redeemed on another shard.
        let got = table.redeem(&text, 2_000, counters.shard(1)).expect("pending");
        assert_eq!((got.key, got.symbols(), got.fields), (key, &ids(&[3, 1, 4])[..], Fields { spread: true }));
        assert_eq!(table.redeem(&text, 2_000, counters.shard(1)), Err(RedeemError::Unknown));
        let snap = counters.snapshot();
        assert_eq!(snap.gauge(Gauge::PendingSessions), 0);
        assert_eq!(snap.stream(StreamCounter::SessionsCreated), 1);
        assert_eq!(snap.stream(StreamCounter::SessionsRedeemed), 1);
    }

    #[test]
    fn forged_and_malformed_ids_do_not_consume_the_session() {
        let counters = Counters::new(1);
        let table = SessionTable::new(2, 60_000);
        let id = table.create(&[1; 32], &ids(&[0]), Fields::default(), 0, counters.shard(0)).expect("room");
        let mut forged = id;
        forged.secret ^= 1;
        assert_eq!(table.redeem(&forged.text(), 0, counters.shard(0)), Err(RedeemError::Unknown));
        for bad in [&b""[..], b"zz", &[b'g'; SESSION_ID_CHARS], &[b'f'; SESSION_ID_CHARS]] {
            assert_eq!(table.redeem(bad, 0, counters.shard(0)), Err(RedeemError::Unknown));
        }
        assert!(table.redeem(&id.text(), 0, counters.shard(0)).is_ok());
    }

    #[test]
    fn expiry_refuses_then_frees_the_slot() {
        let counters = Counters::new(1);
        let block = counters.shard(0);
        let table = SessionTable::new(2, 1_000);
        let a = table.create(&[0; 32], &ids(&[0]), Fields::default(), 0, block).expect("room");
        assert_eq!(table.redeem(&a.text(), 1_001, block), Err(RedeemError::Expired));
        table.create(&[0; 32], &ids(&[0]), Fields::default(), 0, block).expect("room");
        table.create(&[0; 32], &ids(&[0]), Fields::default(), 0, block).expect("room");
        assert_eq!(table.create(&[0; 32], &ids(&[0]), Fields::default(), 500, block), Err(CreateError::Full));
        assert_eq!(table.sweep(999, block), 0);
        assert_eq!(table.sweep(1_001, block), 2);
        let snap = counters.snapshot();
        assert_eq!(snap.gauge(Gauge::PendingSessions), 0);
        assert_eq!(snap.stream(StreamCounter::SessionsExpired), 3);
    }

    #[test]
    fn an_id_swept_after_expiry_is_still_told_it_expired() {
        let counters = Counters::new(1);
        let block = counters.shard(0);
        let table = SessionTable::new(2, 1_000);
        let late = table.create(&[0; 32], &ids(&[0]), Fields::default(), 0, block).expect("room");
        let used = table.create(&[0; 32], &ids(&[1]), Fields::default(), 0, block).expect("room");
        table.redeem(&used.text(), 10, block).expect("pending");
        assert_eq!(table.sweep(1_001, block), 1);
        assert_eq!(table.redeem(&late.text(), 1_002, block), Err(RedeemError::Expired), "swept, then asked for");
        assert_eq!(table.redeem(&used.text(), 1_002, block), Err(RedeemError::Unknown), "spent, not expired");
        let mut forged = late;
        forged.secret ^= 1;
        assert_eq!(table.redeem(&forged.text(), 1_002, block), Err(RedeemError::Unknown));
        assert_eq!(counters.snapshot().stream(StreamCounter::SessionsExpired), 1, "counted once, by the sweep");
        table.create(&[0; 32], &ids(&[0]), Fields::default(), 1_003, block).expect("room");
        table.create(&[0; 32], &ids(&[0]), Fields::default(), 1_003, block).expect("room");
        assert_eq!(table.redeem(&late.text(), 1_004, block), Err(RedeemError::Unknown), "its slot reused");
    }

    #[test]
    fn a_full_table_reclaims_expired_sessions_on_create() {
        let counters = Counters::new(1);
        let table = SessionTable::new(1, 10);
        table.create(&[0; 32], &ids(&[0]), Fields::default(), 0, counters.shard(0)).expect("room");
        table.create(&[0; 32], &ids(&[1]), Fields::default(), 11, counters.shard(0)).expect("expired slot reused");
        assert_eq!(counters.snapshot().gauge(Gauge::PendingSessions), 1);
    }

    #[test]
    fn concurrent_redeems_succeed_exactly_once() {
        let counters = Counters::new(8);
        let table = SessionTable::new(64, 60_000);
        let texts: Vec<_> = (0..64)
            .map(|_| table.create(&[0; 32], &ids(&[0]), Fields::default(), 0, counters.control()).expect("room").text())
            .collect();
        let wins = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for shard in 0..8 {
                let (table, texts, counters, wins) = (&table, &texts, &counters, &wins);
                s.spawn(move || {
                    for text in texts {
                        if table.redeem(text, 1, counters.shard(shard)).is_ok() {
                            wins.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::Relaxed), 64);
        assert_eq!(counters.snapshot().gauge(Gauge::PendingSessions), 0);
    }

    proptest! {
        #[test]
        fn ids_round_trip_and_arbitrary_text_never_panics(
            slot in any::<u32>(), generation in any::<u32>(), secret in any::<u128>(),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let id = SessionId { slot, generation, secret };
            prop_assert_eq!(SessionId::parse(&id.text()), Some(id));
            let counters = Counters::new(1);
            let table = SessionTable::new(2, 1);
            prop_assert!(table.redeem(&junk, 0, counters.shard(0)).is_err());
        }
    }
}
