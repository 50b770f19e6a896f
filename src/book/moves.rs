//! Which shards watch which symbols, and waking a shard when one of them moves.
//!
//! Feeds write the book on their own threads; each shard pushes its streams' frames on its own.
//! A write of a symbol that some shard's streams watch marks it moved for that shard (one bit
//! per symbol in the shard's moved set) and rings the shard's bell: one byte on a socket pair
//! the shard reads, and only when no ring is pending, so a burst of writes costs the writer one
//! system call per shard and the shard one wake-up. A write nobody watches costs one atomic
//! load more than the cell's own write.
//!
//! Ordering: the writer sets the moved bit, then swaps `pending` to true and rings if it was
//! false; the shard reads its bell, swaps `pending` to false, then takes the moved bits. Either
//! the shard's swap reads the writer's (and then the shard's take sees the bit), or the writer's
//! swap comes after the shard's and rings again.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::book::SymbolId;

/// The most shards the book can wake (`server.shards` is at most this).
pub const SHARDS_MAX: usize = 1024;
const SHARD_WORDS_MAX: usize = SHARDS_MAX / 64;

/// One shard's side of the book: what moved since it last looked, and its bell.
#[repr(align(128))]
struct Bell {
    pending: AtomicBool,
    /// One bit per symbol row.
    moved: Box<[AtomicU64]>,
    /// The writers' end of the shard's socket pair (non-blocking).
    ring: UnixStream,
}

/// The book's record of who watches what, and of when each symbol last moved.
pub struct Moves {
    /// Per symbol row, `words` words: bit `s` set while shard `s` has a stream watching it.
    watched_by: Box<[AtomicU64]>,
    words: usize,
    /// Per symbol row: the monotonic time (`clock::mono_ns`) of its last write while watched,
    /// where a stream's push latency starts.
    moved_ns: Box<[AtomicU64]>,
    bells: Box<[OnceLock<Bell>]>,
}

/// The shards a burst of writes must ring, rung when it is dropped (`PriceBook::batch`).
pub struct Rings {
    shards: [u64; SHARD_WORDS_MAX],
}

impl Rings {
    pub const fn new() -> Self {
        Self { shards: [0; SHARD_WORDS_MAX] }
    }
}

impl Default for Rings {
    fn default() -> Self {
        Self::new()
    }
}

impl Moves {
    pub fn new(symbols_max: usize, shards: usize) -> Self {
        let shards = shards.clamp(1, SHARDS_MAX);
        let words = shards.div_ceil(64);
        Self {
            watched_by: (0..symbols_max * words).map(|_| AtomicU64::new(0)).collect(),
            words,
            moved_ns: (0..symbols_max).map(|_| AtomicU64::new(0)).collect(),
            bells: (0..shards).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn shards(&self) -> usize {
        self.bells.len()
    }

    /// A write of `symbol`: marks it moved for every shard watching it and adds those shards to
    /// `rings`. No system call here.
    #[inline]
    pub fn moved(&self, symbol: SymbolId, rings: &mut Rings) {
        let row = symbol.index();
        let Some(words) = self.watched_by.get(row * self.words..(row + 1) * self.words) else { return };
        let mut stamped = false;
        for (w, word) in words.iter().enumerate() {
            let mut mask = word.load(Ordering::Acquire);
            if mask == 0 {
                continue;
            }
            if !stamped {
                self.moved_ns[row].store(crate::clock::mono_ns(), Ordering::Relaxed);
                stamped = true;
            }
            while mask != 0 {
                let shard = w * 64 + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if let Some(bell) = self.bells.get(shard).and_then(OnceLock::get) {
                    bell.moved[row / 64].fetch_or(1 << (row % 64), Ordering::Release);
                    rings.shards[w] |= 1 << (shard % 64);
                }
            }
        }
    }

    /// Rings every shard in `rings` that has no ring pending.
    pub fn ring(&self, rings: &Rings) {
        for (w, &word) in rings.shards.iter().enumerate().take(self.words) {
            let mut mask = word;
            while mask != 0 {
                let shard = w * 64 + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let Some(bell) = self.bells.get(shard).and_then(OnceLock::get) else { continue };
                if !bell.pending.swap(true, Ordering::AcqRel) {
                    // A full socket (never, with one byte per pending ring) or a shard that is
                    // gone: either way there is nobody to wake now.
                    let _ = (&bell.ring).write(&[1]);
                }
            }
        }
    }

    /// When `symbol` last moved while watched (`clock::mono_ns`), 0 if never.
    pub fn moved_ns(&self, symbol: SymbolId) -> u64 {
        self.moved_ns.get(symbol.index()).map_or(0, |t| t.load(Ordering::Relaxed))
    }

    /// Gives shard `shard` its bell: returns the end of the socket pair the shard reads (a
    /// byte there means "something you watch moved"). Once per shard; a second call fails.
    pub fn register(&self, shard: usize) -> io::Result<UnixStream> {
        let slot = self.bells.get(shard).ok_or_else(|| {
            io::Error::other(format!("shard {shard}: the book was built for {} shards", self.shards()))
        })?;
        let (ring, listen) = UnixStream::pair()?;
        ring.set_nonblocking(true)?;
        listen.set_nonblocking(true)?;
        let words = self.moved_ns.len().div_ceil(64);
        let bell =
            Bell { pending: AtomicBool::new(false), moved: (0..words).map(|_| AtomicU64::new(0)).collect(), ring };
        slot.set(bell).map_err(|_| io::Error::other(format!("shard {shard} registered twice")))?;
        Ok(listen)
    }

    /// Starts (`true`) or stops telling shard `shard` when `symbol` moves.
    pub fn watch(&self, shard: usize, symbol: SymbolId, on: bool) {
        let Some(word) = self.watched_by.get(symbol.index() * self.words + shard / 64) else { return };
        let bit = 1u64 << (shard % 64);
        if on {
            word.fetch_or(bit, Ordering::AcqRel);
        } else {
            word.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// For shard `shard`, after its bell was read: clears the pending ring, then calls `each` for
    /// every symbol marked moved since the last call (one unwatched meanwhile may be among them).
    pub fn take(&self, shard: usize, mut each: impl FnMut(SymbolId)) {
        let Some(bell) = self.bells.get(shard).and_then(OnceLock::get) else { return };
        bell.pending.swap(false, Ordering::AcqRel);
        for (w, word) in bell.moved.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut mask = word.swap(0, Ordering::Acquire);
            while mask != 0 {
                let row = w * 64 + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                each(SymbolId::from_raw(row as u32));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn id(row: u32) -> SymbolId {
        SymbolId::from_raw(row)
    }

    fn taken(moves: &Moves, shard: usize) -> Vec<u32> {
        let mut rows = Vec::new();
        moves.take(shard, |s| rows.push(s.index() as u32));
        rows
    }

    /// Bytes waiting on a shard's bell.
    fn rung(listener: &mut UnixStream) -> usize {
        let mut buf = [0u8; 64];
        listener.read(&mut buf).unwrap_or(0)
    }

    #[test]
    fn only_watching_shards_are_marked_and_a_burst_rings_once() {
        let moves = Moves::new(200, 70);
        let mut bell0 = moves.register(0).expect("shard 0");
        let mut bell69 = moves.register(69).expect("shard 69");
        moves.watch(0, id(3), true);
        moves.watch(0, id(130), true);
        moves.watch(69, id(130), true);

        let mut rings = Rings::new();
        for _ in 0..100 {
            moves.moved(id(3), &mut rings);
            moves.moved(id(130), &mut rings);
            moves.moved(id(7), &mut rings);
        }
        moves.ring(&rings);
        moves.ring(&rings);
        assert_eq!((rung(&mut bell0), rung(&mut bell69)), (1, 1), "one ring per shard while pending");
        assert_eq!(taken(&moves, 0), [3, 130]);
        assert_eq!(taken(&moves, 69), [130]);
        assert!(moves.moved_ns(id(3)) > 0 && moves.moved_ns(id(7)) == 0, "unwatched symbols are not stamped");

        // Taking cleared the pending ring: the next burst rings again.
        let mut rings = Rings::new();
        moves.moved(id(3), &mut rings);
        moves.ring(&rings);
        assert_eq!(rung(&mut bell0), 1);
        assert_eq!(taken(&moves, 0), [3]);
        assert!(taken(&moves, 69).is_empty());

        moves.watch(0, id(3), false);
        let mut rings = Rings::new();
        moves.moved(id(3), &mut rings);
        moves.ring(&rings);
        assert!(taken(&moves, 0).is_empty(), "unwatched");
        assert_eq!(rung(&mut bell0), 0, "nobody to wake");
    }

    #[test]
    fn registration_is_once_per_shard_and_within_bounds() {
        let moves = Moves::new(8, 2);
        assert!(moves.register(0).is_ok());
        assert!(moves.register(0).is_err());
        assert!(moves.register(2).is_err());
    }

    #[test]
    fn a_move_racing_a_take_is_never_lost() {
        // A writer thread numbers its writes and rings after each; the shard only ever sleeps on
        // its bell. If a wake-up were lost, the shard would sleep through the last write and the
        // read would time out.
        let moves = std::sync::Arc::new(Moves::new(64, 1));
        let mut bell = moves.register(0).expect("shard");
        bell.set_nonblocking(false).expect("blocking");
        bell.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        moves.watch(0, id(5), true);
        let writes = 50_000u64;
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let writer = {
            let (moves, written) = (std::sync::Arc::clone(&moves), std::sync::Arc::clone(&written));
            std::thread::spawn(move || {
                for i in 1..=writes {
                    written.store(i, Ordering::Release);
                    let mut rings = Rings::new();
                    moves.moved(id(5), &mut rings);
                    moves.ring(&rings);
                }
            })
        };
        let (mut wakes, mut newest) = (0u64, 0u64);
        while newest < writes {
            let mut buf = [0u8; 64];
            let n = bell.read(&mut buf).expect("woken before the timeout: no wake-up lost");
            assert!(n > 0);
            wakes += 1;
            if !taken(&moves, 0).is_empty() {
                newest = newest.max(written.load(Ordering::Acquire));
            }
        }
        writer.join().expect("writer");
        assert!(wakes <= writes, "coalesced: {wakes} wake-ups for {writes} writes");
    }
}
