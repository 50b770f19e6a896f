//! The allocator's side of giving memory back: the binary allocates through mimalloc, which keeps
//! freed pages for reuse; after a peak of connections the shards ask it to return them, so the
//! resident size comes back near its idle figure.

// Links mimalloc's C library into every binary of this crate (tests and benches that install
// another allocator included), so the symbol below always resolves.
use mimalloc as _;

#[allow(unsafe_code)]
mod ffi {
    extern "C" {
        // mimalloc's own C library, linked by the `mimalloc` crate (libmimalloc-sys), whichever
        // allocator the process installed: with another one this collects an empty heap.
        pub fn mi_collect(force: bool);
    }
}

/// Returns the calling thread's freed pages to the operating system. Costs a walk of that
/// thread's heap: called after the shard's buffer pools shed a peak, at most once a second.
#[allow(unsafe_code)]
pub fn give_back_freed_pages() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time; it
    // only walks and releases the calling thread's mimalloc heap.
    unsafe { ffi::mi_collect(true) }
}
