//! Core layer: purging.
//!
//! Giving memory back to the OS: one place that decides when.
//!
//! Two kinds of free memory wait for the purge delay (`STRATA_PURGE_DELAY`
//! ms, default 100) before they go back: free arena slots (decommitted with
//! `MADV_DONTNEED`, empty arenas unmapped) and cached large mappings
//! (unmapped). The delay lets a program that frees and re-allocates reuse
//! committed pages instead of faulting fresh ones in. Allocator slow paths
//! of any thread (pool fetch or release, large allocation or free, thread
//! exit) run a due purge, which costs one atomic load when none is due; in
//! a multi-threaded program the purge thread ([`purge_thread`]) runs it
//! when no thread calls the allocator. [`crate::release_memory`] purges
//! everything at once.
//!
//! Free blocks of 16 KiB and more are purged page by page inside their
//! pools, by the owning thread's heap sweep (`Heap::sweep_big_pools`, at
//! most once per delay): they are big enough that a few free ones cost
//! more resident memory than a whole pool of small blocks.

use crate::core::arena::registry;
use crate::core::os;
use crate::core::pool::{Block, Pool};
use crate::core::purge_thread;
use crate::core::size_class::{class_size, NUM_CLASSES};

/// The first size class whose free blocks are purged in place: 16 KiB.
pub(crate) const FIRST_PURGED_CLASS: usize = {
    let mut class = 0;
    while class < NUM_CLASSES && class_size(class) < 16 * 1024 {
        class += 1;
    }
    class
};

/// Written into the third word of a purged free block (xor its address),
/// so later sweeps skip it (the first two hold the free-list link and the
/// free tag of `pool.rs`). The first page of a block stays resident, so the
/// mark survives the purge. A block reallocated and freed again with its
/// third word untouched keeps the mark and is not purged again: the cost is
/// resident pages, never data.
const PURGED_MARK: usize = 0x5354_5241_5441_5055; // "STRATAPU"

/// Runs the purges that are due.
#[inline]
pub(crate) fn maybe_purge() {
    registry().maybe_purge();
    crate::core::large_cache::cache().maybe_purge();
}

/// When the next purge is due (`os::now_ms`), or 0 if nothing waits.
pub(crate) fn next_deadline() -> u64 {
    let arenas = registry().purge_deadline();
    let large = crate::core::large_cache::cache().deadline();
    match (arenas, large) {
        (0, d) | (d, 0) => d,
        (a, l) => a.min(l),
    }
}

/// Starts the purge thread ([`purge_thread`]) unless it runs, is off, or
/// would have nothing to do (a purge delay of 0 purges at once). The
/// caller must hold no allocator state.
pub(crate) fn start_thread() {
    if registry()
        .purge_delay_ms
        .load(core::sync::atomic::Ordering::Relaxed)
        != 0
    {
        purge_thread::start(run_thread);
    }
}

/// The purge thread: sleep until the next deadline, purge, again.
extern "C" fn run_thread(_: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    loop {
        purge_thread::sleep_until(next_deadline);
        maybe_purge();
    }
}

/// Purges everything now, regardless of the delay.
pub(crate) fn purge_all() {
    registry().purge(true);
    crate::core::large_cache::cache().purge(true);
}

/// Returns the inner pages of `pool`'s free blocks (on its `free` and
/// `local_free` lists) to the OS, skipping blocks already purged.
/// Owner only: the lists are the owner's.
pub(crate) fn purge_free_blocks(pool: &Pool) {
    let size = pool.block_size as usize;
    let mut purged = 0;
    for list in [pool.free.get(), pool.local_free.get()] {
        let mut block = list;
        while !block.is_null() {
            let mark_at = block.cast::<usize>().wrapping_add(2);
            let mark = PURGED_MARK ^ block.addr();
            // SAFETY: `block` is a free block of `pool` (owner's list), at
            // least 16 KiB; its first three words are the allocator's.
            if unsafe { mark_at.read() } != mark {
                // The whole OS pages past the link, tag and mark, inside the
                // block (`decommit` leaves partial pages alone: with 16 KiB
                // pages a block's last page may be shared with a live
                // neighbour).
                let head = 3 * size_of::<usize>();
                // SAFETY: the range is inside a free block of a live pool
                // (no live data past its first three words), in an arena
                // reservation.
                purged += unsafe { os::decommit(block.cast::<u8>().add(head), size - head) };
                // SAFETY: as above.
                unsafe { mark_at.write(mark) };
            }
            // SAFETY: as above; the link stays valid (first page kept).
            block = unsafe { pool.next_free(block) };
        }
    }
    if purged != 0 {
        registry().count_purged(purged);
    }
}

/// A free block's link, for [`purge_free_blocks`].
const _: () = assert!(size_of::<Block>() == size_of::<usize>());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::arena::Registry;
    use crate::core::size_class::pool_slots;

    /// Blocks that end inside an OS page share it with their neighbour:
    /// purging a free block must leave that page alone. The fake OS has
    /// 16 KiB pages and zeroes what `madvise` would.
    #[test]
    fn purge_spares_live_neighbours() {
        let page = os::page_size();
        let step = if cfg!(miri) { 3 } else { 1 };
        for class in (FIRST_PURGED_CLASS..NUM_CLASSES).step_by(step) {
            let size = class_size(class);
            if size % page == 0 {
                continue;
            }
            let registry = Registry::new();
            let run = registry.acquire(pool_slots(class)).expect("arena");
            // SAFETY: a fresh run.
            let pool = unsafe { &*Pool::init(&run, class, 1) };
            let mut blocks = Vec::new();
            loop {
                let block = pool.pop();
                if !block.is_null() {
                    blocks.push(block.cast::<u8>());
                } else if !pool.carve() {
                    break;
                }
            }
            let pattern = |i: usize| vec![i as u8 | 1; size];
            for (i, &b) in blocks.iter().enumerate() {
                // SAFETY: a live block of `size` bytes.
                unsafe { b.write_bytes(i as u8 | 1, size) };
            }
            for &b in blocks.iter().skip(1).step_by(2) {
                // SAFETY: a live block of this pool, freed once.
                unsafe { pool.push_local(b.cast()) };
            }
            purge_free_blocks(pool);
            for (i, &b) in blocks.iter().enumerate() {
                // SAFETY: `b` is a block of the pool, `size` bytes.
                let bytes = unsafe { core::slice::from_raw_parts(b, size) };
                if i % 2 == 0 {
                    assert!(bytes == pattern(i), "live block {i} of {size} B touched");
                } else {
                    // The whole pages inside a free block are purged.
                    let first = (b.addr() + 3 * size_of::<usize>()).next_multiple_of(page);
                    if first + page <= b.addr() + size {
                        assert_eq!(bytes[first - b.addr()], 0, "free block {i} not purged");
                    }
                }
            }
            // SAFETY: the test uses none of the pool's blocks any more.
            unsafe { registry.release(pool.slot_run()) };
            registry.purge(true);
        }
    }
}
