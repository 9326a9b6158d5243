//! Core layer: the large-mapping cache.
//!
//! Freed large mappings of up to `CACHE_MAX_BLOCK` bytes are kept in a small
//! cache for the purge delay: a program that frees and re-allocates big
//! buffers (a growing `Vec`, a per-request buffer) then reuses pages that
//! are already faulted in instead of paying `mmap`, `munmap` and a page
//! fault per page every time.

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::chunk_map;
use crate::core::os;
use crate::core::sync::{AtomicU64, Ordering, RawLock};
// Plain core atomics even under loom: relaxed statistics, as in `large`.
use core::sync::atomic::AtomicUsize;

/// Largest mapping the cache keeps: bigger buffers are rare enough that
/// their `mmap` cost is small against their use. (Buffers of 5 to 25 MiB
/// replaced in a loop, mimalloc-bench's `malloc-large`, page-faulted 30 GB
/// in 2000 iterations with a 16 MiB bound.)
const CACHE_MAX_BLOCK: usize = 64 << 20;
/// Cache capacity in mappings and bytes: bounds what a burst of frees can
/// keep out of the OS's hands for the purge delay.
const CACHE_SLOTS: usize = 16;
const CACHE_MAX_BYTES: usize = 128 << 20;

/// A freed mapping waiting for reuse.
#[derive(Clone, Copy)]
struct CachedMapping {
    base: *mut u8,
    size: usize,
    /// Its placement (see [`os::reserve_block`]).
    align: usize,
    at: usize,
    freed_ms: u64,
}

const NO_MAPPING: CachedMapping = CachedMapping {
    base: ptr::null_mut(),
    size: 0,
    align: 0,
    at: 0,
    freed_ms: 0,
};

/// Recently freed large mappings (see the module docs).
pub(crate) struct LargeCache {
    lock: RawLock,
    entries: UnsafeCell<[CachedMapping; CACHE_SLOTS]>,
    /// Bytes cached; read without the lock to skip empty-cache work.
    bytes: AtomicUsize,
    /// 0, or when the oldest entry is due to be unmapped (`os::now_ms`).
    deadline: AtomicU64,
}

// SAFETY: `entries` is only touched with `lock` held; the rest are atomics.
unsafe impl Sync for LargeCache {}

impl LargeCache {
    #[cfg(not(loom))]
    const fn new() -> Self {
        LargeCache {
            lock: RawLock::new(),
            entries: UnsafeCell::new([NO_MAPPING; CACHE_SLOTS]),
            bytes: AtomicUsize::new(0),
            deadline: AtomicU64::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        LargeCache {
            lock: RawLock::new(),
            entries: UnsafeCell::new([NO_MAPPING; CACHE_SLOTS]),
            bytes: AtomicUsize::new(0),
            deadline: AtomicU64::new(0),
        }
    }

    fn with_entries<R>(&self, f: impl FnOnce(&mut [CachedMapping; CACHE_SLOTS]) -> R) -> R {
        // SAFETY: the lock serialises every access to `entries`.
        self.lock.with(|| f(unsafe { &mut *self.entries.get() }))
    }

    /// The lock, for the `fork` handlers.
    pub(crate) fn lock(&self) -> &RawLock {
        &self.lock
    }

    /// Takes the cached mapping placed by `align` and `at` that best serves
    /// a block of `size` bytes: the smallest that holds it, else the largest
    /// (the caller grows it: its resident pages still save page faults);
    /// returns its base and real size.
    pub(crate) fn take(&self, size: usize, align: usize, at: usize) -> Option<(*mut u8, usize)> {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.with_entries(|entries| {
            let placed = |i: &usize| {
                let e = &entries[*i];
                !e.base.is_null() && (e.align, e.at) == (align, at)
            };
            let holding = (0..CACHE_SLOTS)
                .filter(placed)
                .filter(|&i| entries[i].size >= size)
                .min_by_key(|&i| entries[i].size);
            let slot = holding.or_else(|| {
                (0..CACHE_SLOTS)
                    .filter(placed)
                    .max_by_key(|&i| entries[i].size)
            })?;
            let entry = core::mem::replace(&mut entries[slot], NO_MAPPING);
            self.bytes.fetch_sub(entry.size, Ordering::Relaxed);
            Some((entry.base, entry.size))
        })
    }

    /// Keeps a freed mapping if it fits; returns false if the caller must
    /// unmap it.
    pub(crate) fn put(&self, base: *mut u8, size: usize, align: usize, at: usize) -> bool {
        if size > CACHE_MAX_BLOCK || self.bytes.load(Ordering::Relaxed) + size > CACHE_MAX_BYTES {
            return false;
        }
        let now = os::now_ms();
        let kept = self.with_entries(|entries| {
            if self.bytes.load(Ordering::Relaxed) + size > CACHE_MAX_BYTES {
                return false;
            }
            let Some(slot) = entries.iter().position(|e| e.base.is_null()) else {
                return false;
            };
            entries[slot] = CachedMapping {
                base,
                size,
                align,
                at,
                freed_ms: now,
            };
            self.bytes.fetch_add(size, Ordering::Relaxed);
            true
        });
        if kept {
            let delay = crate::core::arena::registry()
                .purge_delay_ms
                .load(Ordering::Relaxed);
            let _ = self.deadline.compare_exchange(
                0,
                now.saturating_add(delay),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        kept
    }

    /// Unmaps entries older than the purge delay, if any is due.
    pub(crate) fn maybe_purge(&self) {
        let deadline = self.deadline.load(Ordering::Relaxed);
        if deadline != 0 && os::now_ms() >= deadline {
            self.purge(false);
        }
    }

    /// Unmaps entries older than the purge delay (all of them if `force`).
    pub(crate) fn purge(&self, force: bool) {
        let now = os::now_ms();
        let delay = crate::core::arena::registry()
            .purge_delay_ms
            .load(Ordering::Relaxed);
        self.with_entries(|entries| {
            let mut next = u64::MAX;
            for e in entries.iter_mut().filter(|e| !e.base.is_null()) {
                if force || now >= e.freed_ms.saturating_add(delay) {
                    // Cleared before the OS may reuse the range.
                    chunk_map::set(e.base.addr() + e.at, chunk_map::NONE);
                    // SAFETY: a cached mapping is ours and holds no live data.
                    unsafe { os::release_block(e.base, e.size, e.align, e.at) };
                    self.bytes.fetch_sub(e.size, Ordering::Relaxed);
                    *e = NO_MAPPING;
                } else {
                    next = next.min(e.freed_ms.saturating_add(delay));
                }
            }
            self.deadline
                .store(if next == u64::MAX { 0 } else { next }, Ordering::Relaxed);
        });
    }

    /// Bytes cached now.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The process-wide large-mapping cache.
#[cfg(not(loom))]
pub(crate) fn cache() -> &'static LargeCache {
    static CACHE: LargeCache = LargeCache::new();
    &CACHE
}

/// The large-mapping cache of the current loom execution.
#[cfg(loom)]
pub(crate) fn cache() -> &'static LargeCache {
    loom::lazy_static! {
        static ref CACHE: LargeCache = LargeCache::new();
    }
    &CACHE
}
