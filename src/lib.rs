//! # strata-alloc
//!
//! A global allocator in the shape of CPython's pymalloc — big **arenas**
//! from `mmap`, cut into **pools**, each serving one **size class** — with
//! mimalloc's per-thread heaps and sharded free lists, so the allocation
//! and free fast paths take no lock and no atomic instruction.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v[999], 999);
//! let stats = strata_alloc::stats();
//! assert!(stats.in_use_bytes() >= 8000);
//! ```
//!
//! ## How memory flows
//!
//! ```text
//!  Strata (GlobalAlloc)
//!    |-- size <= 128 KiB --> thread heap --> pool of the size class --> arena (4 MiB) --> os (mmap)
//!    `-- larger / aligned > 64 KiB ------------------------------> large block ------> os (mmap)
//! ```
//!
//! - Requests up to 128 KiB are rounded to one of 88 size classes (16-byte
//!   steps to 128 B, then eight per power of two: at most 12.5 % waste).
//!   Aligned requests round the size to a multiple of the alignment: the
//!   class blocks are naturally aligned, so alignment costs nothing.
//! - Each thread allocates from its own pools; other threads' frees go to
//!   an atomic per-pool list the owner collects. A thread's pools are
//!   handed over at thread exit and reused by other threads.
//! - Empty pools return to their arena; free arena slots are decommitted
//!   (`MADV_DONTNEED`) once the arena has been quiet for
//!   `STRATA_PURGE_DELAY` ms (default 10), and empty arenas are unmapped
//!   after the same delay. Free blocks of 16 KiB and more give their
//!   inner pages back while they wait in a partly used pool.
//!   Freed large blocks are unmapped after the same delay (up to 16 MiB
//!   each and 64 MiB in all are kept for reuse meanwhile), bigger ones at
//!   once.
//!
//! ## Where did my memory go?
//!
//! While asked to (a [`profile::Counting`] guard or a [`profile::Scope`]),
//! each thread counts the blocks and bytes it allocates and frees; when
//! not, the fast paths pay one thread-local flag test. [`profile`] turns
//! the counts and the per-class
//! [`stats`] into `tracemalloc`-style snapshot diffs
//! ([`profile::Snapshot`]) and `memory_profiler`-style scope reports
//! ([`profile::measure`]).
//!
//! ## Configuration
//!
//! `STRATA_PURGE_DELAY=<ms>` and `STRATA_SHOW_STATS=1` (print the report at
//! exit), read once at process start.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod core;
mod insight;
mod owned;
mod typed;

#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api;

use ::core::alloc::{GlobalAlloc, Layout};
use ::core::ptr;

pub use crate::core::os::resident_bytes;
pub use crate::core::size_class::{MAX_SMALL_ALIGN, MAX_SMALL_SIZE, NUM_CLASSES};
#[cfg(feature = "plot")]
pub use crate::insight::plot;
pub use crate::insight::profile;
pub use crate::insight::stats::{ClassStats, Stats};
pub use owned::{Heap, HeapStats};
pub use typed::{PoolBox, TypedPool, TypedPoolStats};

use crate::core::size_class::{class_for, CLASS_SIZES};
use crate::core::{arena, heap, large, pool, purge};
use crate::insight::stats;

/// The strata allocator. Install it with `#[global_allocator]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strata;

// SAFETY: every method upholds the `GlobalAlloc` contract: blocks are at
// least `layout.size()` bytes aligned to `layout.align()`, disjoint while
// live, and null is returned on failure; no method unwinds.
unsafe impl GlobalAlloc for Strata {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_for(layout.size(), layout.align()) {
            Some(class) => alloc_small(class),
            None => alloc_large(layout.size(), layout.align(), false),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The layout tells small from large without reading metadata.
        if class_for(layout.size(), layout.align()).is_some() {
            // Counted by the block's own size, not the layout's: a block
            // shrunk in place by `realloc` is bigger than its layout says.
            // SAFETY: `ptr` is a live small block (GlobalAlloc contract).
            heap::count_free(ptr, || unsafe { small_block_size(ptr) });
            // SAFETY: as above.
            unsafe { heap::free(ptr) };
        } else {
            // SAFETY: `ptr` is a live large block (GlobalAlloc contract).
            unsafe { free_large(ptr) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_for(layout.size(), layout.align()) {
            Some(class) => {
                let p = alloc_small(class);
                if !p.is_null() {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { ptr::write_bytes(p, 0, layout.size()) };
                }
                p
            }
            // Fresh mappings are already zero: no memset.
            None => alloc_large(layout.size(), layout.align(), true),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match (class_for(layout.size(), align), class_for(new_size, align)) {
            (Some(old), Some(new)) => {
                let block = CLASS_SIZES[old] as usize;
                // Same class, or a shrink that keeps at least half the block.
                if old == new || (new_size <= block && new_size >= block / 2) {
                    return ptr;
                }
            }
            // SAFETY: `ptr` is a live large block; the new size is large too.
            (None, None) => return unsafe { realloc_large(ptr, new_size) },
            _ => {}
        }
        // SAFETY: `new_size` with the old alignment is a valid layout
        // (GlobalAlloc contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: non-zero size (contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, disjoint and large enough.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Allocates a block of `class` from the thread heap, counting it.
#[inline(always)]
fn alloc_small(class: usize) -> *mut u8 {
    let (p, counting) = heap::alloc(class);
    if counting && !p.is_null() {
        heap::count_alloc(p, CLASS_SIZES[class] as usize);
    }
    p
}

/// Maps a large block, counting it.
fn alloc_large(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let p = large::alloc(size, align, zeroed);
    if !p.is_null() {
        // SAFETY: `p` is a live large block.
        heap::count_large_alloc(p, unsafe { large::usable_size(p) });
    }
    p
}

/// Frees a large block, counting it.
///
/// # Safety
/// `ptr` must be a live large block.
unsafe fn free_large(ptr: *mut u8) {
    // SAFETY: a live large block (caller).
    let bytes = unsafe { large::usable_size(ptr) };
    heap::count_large_free(ptr, bytes);
    // SAFETY: as above.
    unsafe { large::free(ptr) };
}

/// Resizes a large block to a large size, counting it as a free and an
/// allocation.
///
/// # Safety
/// `ptr` must be a live large block.
unsafe fn realloc_large(ptr: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: a live large block (caller).
    let old = unsafe { large::usable_size(ptr) };
    // SAFETY: as above.
    let new = unsafe { large::realloc(ptr, new_size) };
    if !new.is_null() {
        heap::count_large_free(ptr, old);
        // SAFETY: `new` is a live large block.
        heap::count_large_alloc(new, unsafe { large::usable_size(new) });
    }
    new
}

/// Bytes usable in the block at `ptr` (at least the size it was allocated
/// with), like `malloc_usable_size`.
///
/// # Safety
/// `ptr` must be a live block allocated by [`Strata`].
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: `ptr` is a live block (caller).
    unsafe {
        if large::is_large(ptr) {
            large::usable_size(ptr)
        } else {
            small_block_size(ptr)
        }
    }
}

/// The size of small block `ptr`, read from its pool.
///
/// # Safety
/// `ptr` must be a live small block.
unsafe fn small_block_size(ptr: *const u8) -> usize {
    // SAFETY: a live small block's pool record is initialised (caller).
    unsafe { (*arena::pool_meta_of(ptr).cast::<pool::Pool>()).block_size as usize }
}

/// Allocation for C-style interfaces (`malloc`, `free`, `realloc`), where
/// freeing gets no size: a block's size class is found from its pool or
/// header, as [`usable_size`] does. The `capi` crate builds `libstrata.so`
/// on these.
pub mod raw {
    use super::*;

    /// A block of at least `size` bytes (at least 1) aligned to `align` (a
    /// power of two); null when out of memory or when the size overflows.
    pub fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
        let size = size.max(1);
        let Ok(layout) = Layout::from_size_align(size, align) else {
            return ptr::null_mut();
        };
        // SAFETY: the layout has a non-zero size.
        unsafe {
            if zeroed {
                Strata.alloc_zeroed(layout)
            } else {
                Strata.alloc(layout)
            }
        }
    }

    /// Frees `ptr` (null is allowed and ignored).
    ///
    /// # Safety
    /// `ptr` must be null or a live block of this allocator.
    pub unsafe fn free(ptr: *mut u8) {
        if ptr.is_null() {
            return;
        }
        // SAFETY: a live block (caller).
        unsafe {
            if large::is_large(ptr) {
                free_large(ptr);
            } else {
                heap::count_free(ptr, || small_block_size(ptr));
                heap::free(ptr);
            }
        }
    }

    /// Resizes `ptr` to `new_size` bytes (at least 1) keeping its contents
    /// and at least 16-byte alignment; null (with `ptr` untouched) when out
    /// of memory. A null `ptr` allocates.
    ///
    /// # Safety
    /// `ptr` must be null or a live block of this allocator.
    pub unsafe fn realloc(ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return alloc(new_size, 16, false);
        }
        let new_size = new_size.max(1);
        // SAFETY: a live block (caller).
        let (is_large, usable) = unsafe { (large::is_large(ptr), usable_size(ptr)) };
        let stays_small = class_for(new_size, 16).is_some();
        if !is_large && stays_small && new_size <= usable && new_size >= usable / 2 {
            return ptr;
        }
        if is_large && !stays_small {
            // SAFETY: a live large block.
            return unsafe { realloc_large(ptr, new_size) };
        }
        let new = alloc(new_size, 16, false);
        if !new.is_null() {
            // SAFETY: both blocks are live and disjoint; `usable` bytes of
            // the old block are readable.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, usable.min(new_size));
                free(ptr);
            }
        }
        new
    }
}

/// A snapshot of the allocator's memory: per size class, arenas, pools,
/// large blocks, committed and returned bytes, RSS.
pub fn stats() -> Stats {
    stats::snapshot()
}

/// Prints the stats report to stderr (without allocating).
pub fn print_stats() {
    stats::print()
}

/// Returns all free memory to the OS now, like `malloc_trim(0)` or
/// `mi_collect(true)`: the calling thread's empty pools, empty pools left
/// by exited threads, and every free arena slot; empty arenas are unmapped.
pub fn release_memory() {
    heap::with_heap(|heap| heap.release_empty_pools());
    heap::abandoned().sweep(arena::registry());
    purge::purge_all();
}
