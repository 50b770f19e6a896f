//! A shard's open connections by slot: what each one waits for and until when, so that one sweep
//! per shard enforces every deadline (no timer armed per request) and takes the read buffer back
//! from a connection whose client has gone quiet.

use monoio::io::{CancelHandle, Canceller};

/// How often a shard sweeps its connections: the precision of the header and idle deadlines.
pub const SWEEP_MS: u64 = 100;

/// What a connection is doing, as the sweep sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Answering or writing: nothing to enforce until it waits again.
    Busy,
    /// A read with a buffer, begun at `since_ns`. `partial`: the buffer holds the start of a
    /// request, so it is kept until the head deadline.
    Reading { since_ns: u64, partial: bool },
    /// Waiting for the client to send, holding no buffer.
    Parked,
    /// A WebSocket stream: its deadlines are the fan-out tick's; only draining wakes it.
    Stream,
}

struct Slot {
    /// The connection's socket; `None` while the slot is free.
    fd: Option<i32>,
    wait: Wait,
    /// When the current wait must end (monotonic ns).
    deadline_ns: u64,
    /// Cancels the slot's read. Kept with the slot across connections, so churn allocates none;
    /// a cancelled one is replaced.
    canceller: Option<Canceller>,
}

/// What the sweep does to a connection; carried out by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Its read was cancelled: it gives its buffer back, or finds its deadline passed.
    Cancelled,
    /// Parked past its deadline: its read side is shut, so its wait ends in end-of-file.
    Shut(i32),
}

#[derive(Default)]
pub struct ConnTable {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

impl ConnTable {
    /// Registers an accepted connection; returns its slot.
    pub fn open(&mut self, fd: i32) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { fd: None, wait: Wait::Busy, deadline_ns: u64::MAX, canceller: None });
            self.slots.len() - 1
        });
        let entry = &mut self.slots[slot];
        entry.fd = Some(fd);
        entry.wait = Wait::Busy;
        entry.deadline_ns = u64::MAX;
        slot
    }

    /// Frees a slot; called before its socket is closed.
    pub fn close(&mut self, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot) {
            if entry.fd.take().is_some() {
                entry.wait = Wait::Busy;
                self.free.push(slot);
            }
        }
    }

    /// The connection starts a read with a buffer; the handle lets the sweep cancel it.
    pub fn reading(&mut self, slot: usize, now_ns: u64, deadline_ns: u64, partial: bool) -> CancelHandle {
        let entry = &mut self.slots[slot];
        entry.wait = Wait::Reading { since_ns: now_ns, partial };
        entry.deadline_ns = deadline_ns;
        entry.canceller.get_or_insert_with(Canceller::new).handle()
    }

    pub fn parked(&mut self, slot: usize, deadline_ns: u64) {
        let entry = &mut self.slots[slot];
        entry.wait = Wait::Parked;
        entry.deadline_ns = deadline_ns;
    }

    pub fn busy(&mut self, slot: usize) {
        self.slots[slot].wait = Wait::Busy;
    }

    pub fn stream(&mut self, slot: usize) {
        self.slots[slot].wait = Wait::Stream;
    }

    /// The open connections' sockets, for draining.
    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.slots.iter().filter_map(|s| s.fd)
    }

    /// Finds every wait that must end at `now_ns`: a read past its deadline, a read without a
    /// partial request older than `release_after_ns` (its buffer goes back), a parked connection
    /// past its deadline. Cancels those reads and reports each connection to `act`.
    pub fn sweep(&mut self, now_ns: u64, release_after_ns: u64, mut act: impl FnMut(Action)) {
        for entry in &mut self.slots {
            if entry.fd.is_none() {
                continue;
            }
            let expired = now_ns >= entry.deadline_ns;
            match entry.wait {
                Wait::Reading { since_ns, partial } => {
                    let quiet = !partial && now_ns.saturating_sub(since_ns) >= release_after_ns;
                    if expired || quiet {
                        if let Some(canceller) = entry.canceller.take() {
                            entry.canceller = Some(canceller.cancel());
                        }
                        // Until the connection says what it waits for next.
                        entry.wait = Wait::Busy;
                        act(Action::Cancelled);
                    }
                }
                Wait::Parked if expired => {
                    entry.wait = Wait::Busy;
                    if let Some(fd) = entry.fd {
                        act(Action::Shut(fd));
                    }
                }
                Wait::Parked | Wait::Busy | Wait::Stream => {}
            }
        }
    }

    /// Open connections in each wait: (reading, parked, streams).
    #[cfg(test)]
    pub fn census(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for entry in self.slots.iter().filter(|s| s.fd.is_some()) {
            match entry.wait {
                Wait::Reading { .. } => counts.0 += 1,
                Wait::Parked => counts.1 += 1,
                Wait::Stream => counts.2 += 1,
                Wait::Busy => {}
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn swept(table: &mut ConnTable, now_ns: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        table.sweep(now_ns, 1000 * MS, |a| actions.push(a));
        actions
    }

    #[test]
    fn slots_are_reused_after_close() {
        let mut table = ConnTable::default();
        let a = table.open(10);
        let b = table.open(11);
        table.close(a);
        table.close(a);
        assert_eq!(table.open(12), a, "a freed slot is taken first, once");
        assert_ne!(table.open(13), b);
        assert_eq!(table.fds().collect::<Vec<_>>(), [12, 11, 13]);
    }

    #[test]
    fn a_quiet_read_is_cancelled_once_and_a_partial_one_only_at_its_deadline() {
        let mut table = ConnTable::default();
        let quiet = table.open(10);
        let partial = table.open(11);
        let _h1 = table.reading(quiet, 0, 60_000 * MS, false);
        let _h2 = table.reading(partial, 0, 3000 * MS, true);
        assert!(swept(&mut table, 999 * MS).is_empty());
        assert_eq!(swept(&mut table, 1000 * MS), [Action::Cancelled]);
        assert_eq!(table.census(), (1, 0, 0), "only the partial read is still reading");
        assert!(swept(&mut table, 2000 * MS).is_empty(), "cancelled once, not every sweep");
        assert_eq!(swept(&mut table, 3000 * MS), [Action::Cancelled]);
    }

    #[test]
    fn a_parked_connection_is_shut_at_its_deadline() {
        let mut table = ConnTable::default();
        let slot = table.open(42);
        table.parked(slot, 5000 * MS);
        assert!(swept(&mut table, 4999 * MS).is_empty());
        assert_eq!(swept(&mut table, 5000 * MS), [Action::Shut(42)]);
        assert!(swept(&mut table, 6000 * MS).is_empty());
        table.stream(slot);
        assert!(swept(&mut table, u64::MAX).is_empty(), "streams keep their own deadlines");
    }
}
