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
//! ([`profile::measure`]). With the `line-profile` feature,
//! `#[strata_alloc::profile]` on a function gives `memory_profiler`'s
//! line-by-line table for each call ([`profile::lines`]).
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
/// The attribute: `#[strata_alloc::profile]` gives a function a
/// line-by-line memory table per call (see [`profile::lines`]). It shares
/// its name with the [`profile`] module: macros and modules live in
/// different namespaces.
pub use strata_alloc_macros::profile;
pub use typed::{PoolBox, TypedPool, TypedPoolStats};

use crate::core::entry;
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
        entry::alloc(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block allocated with `layout` (GlobalAlloc contract).
        unsafe { entry::dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        entry::alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded GlobalAlloc contract.
        unsafe { entry::realloc(ptr, layout, new_size) }
    }
}

/// Bytes usable in the block at `ptr` (at least the size it was allocated
/// with), like `malloc_usable_size`.
///
/// # Safety
/// `ptr` must be a live block allocated by [`Strata`].
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: forwarded contract.
    unsafe { entry::usable_size(ptr) }
}

/// Allocation for C-style interfaces (`malloc`, `free`, `realloc`), where
/// freeing gets no size: a block's size class is found from its pool or
/// header, as [`usable_size`] does. The `capi` crate builds `libstrata.so`
/// on these.
pub mod raw {
    use super::*;

    /// A block of at least `size` bytes (at least 1) aligned to `align` (a
    /// power of two); null when out of memory or when the size overflows.
    /// (Inlined, so that a constant `align` folds the layout checks away.)
    #[inline]
    pub fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
        let size = size.max(1);
        let Ok(layout) = Layout::from_size_align(size, align) else {
            return ptr::null_mut();
        };
        if zeroed {
            entry::alloc_zeroed(layout)
        } else {
            entry::alloc(layout)
        }
    }

    /// `alloc(size, 16, false)`, `malloc` itself: a block of at least
    /// `size` bytes (at least 1), 16-byte aligned; null when out of memory.
    #[inline]
    pub fn malloc(size: usize) -> *mut u8 {
        entry::malloc(size)
    }

    /// [`malloc`]'s fast path alone: a block of at least `size` bytes from
    /// the calling thread's cache, or null when [`malloc`] has to run
    /// (requests above 1 KiB, the thread's first allocation, counting on,
    /// or a refill; null never means out of memory here). It calls
    /// nothing, so a C `malloc` built as "fast path, else a tail call to
    /// the slow one" needs no stack frame.
    #[inline(always)]
    pub fn malloc_fast(size: usize) -> *mut u8 {
        entry::malloc_fast(size)
    }

    /// Frees `ptr` (null is allowed and ignored).
    ///
    /// # Safety
    /// `ptr` must be null or a live block of this allocator.
    #[inline]
    pub unsafe fn free(ptr: *mut u8) {
        if !ptr.is_null() {
            // SAFETY: a live block (caller).
            unsafe { entry::free(ptr) }
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
        // SAFETY: a live block (caller).
        unsafe { entry::realloc_unsized(ptr, new_size.max(1)) }
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
    entry::release_memory()
}

/// Process start, when the program (or `libstrata.so`) is loaded: installs
/// the exit report into the core's hooks, runs the core's start steps and
/// creates the thread-exit key early (see `core::init`).
#[cfg(all(target_os = "linux", not(any(miri, loom))))]
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = {
    extern "C" fn at_load() {
        crate::core::hooks::install_exit_report(stats::print);
        crate::core::init::ensure();
        crate::core::thread::create_exit_key();
    }
    at_load
};
