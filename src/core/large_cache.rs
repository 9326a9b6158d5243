//! Core layer: the large-mapping cache.
//!
//! Freed large mappings of up to `CACHE_MAX_BLOCK` bytes are kept for the
//! purge delay: a program that frees and re-allocates big buffers (a
//! growing `Vec`, a per-request buffer, a wave of 1 MiB objects) then
//! reuses pages that are already faulted in instead of paying `mmap`,
//! `munmap` and a page fault per page every time.
//!
//! The delay, not the capacity, is what bounds the cache: it holds only
//! what the program freed in the last purge delay, memory that was resident
//! and in use just before. The capacity is generous (a wave of hundreds of
//! blocks freed and allocated again must fit, or every wave faults its
//! pages in afresh) and only caps what a burst of frees can keep.

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
/// keep out of the OS's hands for the purge delay. (Fewer under loom, whose
/// executions build the cache on a small coroutine stack.)
const CACHE_SLOTS: usize = if cfg!(loom) { 64 } else { 512 };
const CACHE_MAX_BYTES: usize = 1 << 30;
/// Words of the bitmap of occupied slots.
const USED_WORDS: usize = CACHE_SLOTS / 64;

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

/// The cached mappings and which slots hold one (lock held).
struct Slots {
    entries: [CachedMapping; CACHE_SLOTS],
    /// Bit `i % 64` of word `i / 64` set: `entries[i]` holds a mapping.
    used: [u64; USED_WORDS],
}

impl Slots {
    const EMPTY: Slots = Slots {
        entries: [NO_MAPPING; CACHE_SLOTS],
        used: [0; USED_WORDS],
    };

    /// The indices of the occupied slots, in order.
    fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        self.used.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + bit)
            })
        })
    }

    fn remove(&mut self, i: usize) -> CachedMapping {
        self.used[i / 64] &= !(1 << (i % 64));
        core::mem::replace(&mut self.entries[i], NO_MAPPING)
    }

    /// Stores `entry` in a free slot; false if there is none.
    fn insert(&mut self, entry: CachedMapping) -> bool {
        let Some(w) = self.used.iter().position(|&word| word != u64::MAX) else {
            return false;
        };
        let bit = (!self.used[w]).trailing_zeros() as usize;
        self.used[w] |= 1 << bit;
        self.entries[w * 64 + bit] = entry;
        true
    }
}

/// Recently freed large mappings (see the module docs).
pub(crate) struct LargeCache {
    lock: RawLock,
    slots: UnsafeCell<Slots>,
    /// Bytes cached; read without the lock to skip empty-cache work.
    bytes: AtomicUsize,
    /// 0, or when the oldest entry is due to be unmapped (`os::now_ms`).
    deadline: AtomicU64,
}

// SAFETY: `slots` is only touched with `lock` held; the rest are atomics.
unsafe impl Sync for LargeCache {}

impl LargeCache {
    #[cfg(not(loom))]
    const fn new() -> Self {
        LargeCache {
            lock: RawLock::new(),
            slots: UnsafeCell::new(Slots::EMPTY),
            bytes: AtomicUsize::new(0),
            deadline: AtomicU64::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        LargeCache {
            lock: RawLock::new(),
            slots: UnsafeCell::new(Slots::EMPTY),
            bytes: AtomicUsize::new(0),
            deadline: AtomicU64::new(0),
        }
    }

    fn with_slots<R>(&self, f: impl FnOnce(&mut Slots) -> R) -> R {
        // SAFETY: the lock serialises every access to `slots`.
        self.lock.with(|| f(unsafe { &mut *self.slots.get() }))
    }

    /// The lock, for the `fork` handlers.
    pub(crate) fn lock(&self) -> &RawLock {
        &self.lock
    }

    /// Takes the cached mapping placed by `align` and `at` that best serves
    /// a block of `size` bytes: one of exactly that size, else the smallest
    /// that holds it, else the largest (the caller grows it: its resident
    /// pages still save page faults); returns its base and real size.
    pub(crate) fn take(&self, size: usize, align: usize, at: usize) -> Option<(*mut u8, usize)> {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.with_slots(|slots| {
            let mut holding: Option<usize> = None;
            let mut largest: Option<usize> = None;
            for i in slots.occupied() {
                let e = &slots.entries[i];
                if (e.align, e.at) != (align, at) {
                    continue;
                }
                if e.size == size {
                    holding = Some(i);
                    break;
                }
                let size_of = |j: Option<usize>| j.map(|j| slots.entries[j].size);
                if e.size > size && size_of(holding).is_none_or(|h| e.size < h) {
                    holding = Some(i);
                }
                if size_of(largest).is_none_or(|l| e.size > l) {
                    largest = Some(i);
                }
            }
            let entry = slots.remove(holding.or(largest)?);
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
        let kept = self.with_slots(|slots| {
            if self.bytes.load(Ordering::Relaxed) + size > CACHE_MAX_BYTES {
                return false;
            }
            let kept = slots.insert(CachedMapping {
                base,
                size,
                align,
                at,
                freed_ms: now,
            });
            if kept {
                self.bytes.fetch_add(size, Ordering::Relaxed);
            }
            kept
        });
        if kept {
            let delay = crate::core::arena::registry()
                .purge_delay_ms
                .load(Ordering::Relaxed);
            let set = self.deadline.compare_exchange(
                0,
                now.saturating_add(delay),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if set.is_ok() {
                crate::core::purge_thread::deadline_set();
            }
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
        self.with_slots(|slots| {
            let mut next = u64::MAX;
            for i in 0..CACHE_SLOTS {
                if slots.used[i / 64] & (1 << (i % 64)) == 0 {
                    continue;
                }
                let e = slots.entries[i];
                if force || now >= e.freed_ms.saturating_add(delay) {
                    slots.remove(i);
                    // Cleared before the OS may reuse the range.
                    chunk_map::set(e.base.addr() + e.at, chunk_map::NONE);
                    // SAFETY: a cached mapping is ours and holds no live data.
                    unsafe { os::release_block(e.base, e.size, e.align, e.at) };
                    self.bytes.fetch_sub(e.size, Ordering::Relaxed);
                } else {
                    next = next.min(e.freed_ms.saturating_add(delay));
                }
            }
            self.deadline
                .store(if next == u64::MAX { 0 } else { next }, Ordering::Relaxed);
        });
    }

    /// When the oldest entry is due to be unmapped, or 0 if none is cached.
    pub(crate) fn deadline(&self) -> u64 {
        self.deadline.load(Ordering::Relaxed)
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
