//! A shard's spare connection buffers, one pool per size: a connection takes one when it has
//! bytes to read or a response to write, and gives it back as soon as it no longer needs it, so
//! an idle keep-alive connection holds none. Bounded, and trimmed after a peak, so the memory a
//! burst of connections took comes back.

use std::cell::{Cell, RefCell};

/// Spare buffers a pool keeps after a trim, whatever the last interval needed: enough that a
/// few connections waking at once are served without allocating.
pub const SPARE_FLOOR: usize = 32;

pub struct BufferPool {
    spare: RefCell<Vec<Vec<u8>>>,
    /// Every buffer of this pool has exactly this capacity.
    capacity: usize,
    /// Most spare buffers kept at once; more given back are freed.
    spare_max: usize,
    /// The fewest spare buffers since the last trim: that many were not needed all interval.
    low_water: Cell<usize>,
}

impl BufferPool {
    pub fn new(capacity: usize, spare_max: usize) -> Self {
        Self { spare: RefCell::new(Vec::new()), capacity, spare_max, low_water: Cell::new(0) }
    }

    /// An empty buffer of the pool's capacity: a spare one, or allocated once.
    pub fn take(&self) -> Vec<u8> {
        let mut spare = self.spare.borrow_mut();
        let buf = spare.pop().unwrap_or_else(|| Vec::with_capacity(self.capacity));
        self.low_water.set(self.low_water.get().min(spare.len()));
        buf
    }

    /// Keeps a buffer for the next taker (freed instead when it is not whole or the pool is full).
    pub fn give(&self, mut buf: Vec<u8>) {
        let mut spare = self.spare.borrow_mut();
        if buf.capacity() == self.capacity && spare.len() < self.spare_max {
            buf.clear();
            spare.push(buf);
        }
    }

    /// Frees the buffers that stayed spare since the last trim, keeping at least `SPARE_FLOOR`:
    /// after a peak the pool shrinks to what the traffic since needs. Returns how many it freed.
    pub fn trim(&self) -> usize {
        let mut spare = self.spare.borrow_mut();
        let unused = self.low_water.get().min(spare.len());
        let keep = (spare.len() - unused).max(SPARE_FLOOR.min(spare.len()));
        let freed = spare.len() - keep;
        // Only frees: the list's own storage (a pointer per buffer, at most `spare_max`) stays, so
        // a trim never allocates, even on a shard serving a stream that must not.
        spare.truncate(keep);
        self.low_water.set(spare.len());
        freed
    }

    #[cfg(test)]
    pub fn spare(&self) -> usize {
        self.spare.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let pool = BufferPool::new(64, 4);
        let a = pool.take();
        let pointer = a.as_ptr();
        assert_eq!(a.capacity(), 64);
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), pointer, "a given buffer is the next one taken");
        pool.give(b);
        // Not whole (grown or shrunk elsewhere): freed, never pooled.
        pool.give(Vec::with_capacity(8));
        assert_eq!(pool.spare(), 1);
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = BufferPool::new(16, 3);
        let taken: Vec<_> = (0..10).map(|_| pool.take()).collect();
        for buf in taken {
            pool.give(buf);
        }
        assert_eq!(pool.spare(), 3);
    }

    #[test]
    fn a_trim_frees_what_a_whole_interval_did_not_need() {
        let pool = BufferPool::new(16, 1000);
        let peak: Vec<_> = (0..500).map(|_| pool.take()).collect();
        for buf in peak {
            pool.give(buf);
        }
        // The interval of the peak itself: its low water was 0, nothing is freed yet.
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.spare(), 500);
        // A quiet interval that took at most 10 at once: all but those (and the floor) go.
        let some: Vec<_> = (0..10).map(|_| pool.take()).collect();
        for buf in some {
            pool.give(buf);
        }
        assert_eq!(pool.trim(), 500 - SPARE_FLOOR);
        assert_eq!(pool.spare(), SPARE_FLOOR);
        // Idle from here on: the floor stays.
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.spare(), SPARE_FLOOR);
    }
}
