//! What an accepted stream (a WebSocket upgrade, or an event stream) hands the shard.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::keys::KeyState;
use crate::stream::frames::Framing;
use crate::stream::sessions::Redeemed;

/// One of a key's open streams. Taken at the upgrade, given back when dropped, so no path out of
/// a stream (close, error, shutdown, a failed 101) can leak it.
#[derive(Debug)]
pub struct KeySlot {
    state: Arc<KeyState>,
}

impl KeySlot {
    /// Takes one of `limit` stream slots of a key; `None` when it holds them all.
    pub fn take(state: &Arc<KeyState>, limit: u32) -> Option<Self> {
        let taken = state
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1))
            .is_ok();
        taken.then(|| Self { state: Arc::clone(state) })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.state.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted stream: the symbols to stream, the key's slot, and the wire it speaks.
#[derive(Debug)]
pub struct Grant {
    /// Boxed: a grant travels through return values (up to 100 symbols of it), and the stream
    /// frees it at start.
    pub session: Box<Redeemed>,
    pub slot: KeySlot,
    pub framing: Framing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back_on_drop() {
        let state = Arc::new(KeyState::default());
        let a = KeySlot::take(&state, 2).expect("first");
        let b = KeySlot::take(&state, 2).expect("second");
        assert!(KeySlot::take(&state, 2).is_none());
        drop(a);
        let c = KeySlot::take(&state, 2).expect("freed");
        drop((b, c));
        assert_eq!(state.streams.load(Ordering::Relaxed), 0);
    }
}
