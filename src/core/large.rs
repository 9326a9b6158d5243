//! Large blocks: requests too big (or too aligned) for any pool, mapped
//! straight from the OS and unmapped on free.
//!
//! Each block has a header in the first OS page of its mapping. For
//! alignments below `ARENA_SIZE` the mapping starts `ARENA_SIZE`-aligned
//! and the data at `max(page, align)`, so masking a data pointer finds the
//! header exactly as it finds an arena's (this is what lets `usable_size`
//! take a bare pointer). For larger alignments the data itself is
//! `ARENA_SIZE` aligned — an address no small block or ordinary large
//! block can have — and the mapping starts one page before it, with the
//! header there: the mapping is a page plus the size, whatever the
//! alignment. `realloc` resizes the mapping with `mremap`, in place when
//! the address space after it is free, else by moving the pages (no copy).
//!
//! Freed mappings of up to `CACHE_MAX_BLOCK` bytes are kept in a small
//! cache for the purge delay: a program that frees and re-allocates big
//! buffers (a growing `Vec`, a per-request buffer) then reuses pages that
//! are already faulted in instead of paying `mmap`, `munmap` and a page
//! fault per page every time.

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::arena::ARENA_SIZE;
use crate::core::os::{self, round_to_page};
use crate::core::sync::{AtomicU64, Ordering, RawLock};
// Plain core atomics even under loom: these are relaxed statistics
// counters, not part of any protocol, and must be const-initialisable.
use core::sync::atomic::AtomicUsize;

/// Largest mapping the cache keeps: bigger buffers are rare enough that
/// their `mmap` cost is small against their use.
const CACHE_MAX_BLOCK: usize = 16 << 20;
/// Cache capacity in mappings and bytes: bounds what a burst of frees can
/// keep out of the OS's hands for the purge delay.
const CACHE_SLOTS: usize = 16;
const CACHE_MAX_BYTES: usize = 64 << 20;

const LARGE_MAGIC: usize = 0x5354_5241_5441_4c47; // "STRATALG"

#[repr(C)]
struct Header {
    magic: usize,
    /// Bytes from the mapping start to the data.
    data_offset: usize,
    /// Size of the whole mapping, and its placement: `map_at` bytes into
    /// it is aligned to `map_align` (see [`os::reserve_block`]).
    map_size: usize,
    map_align: usize,
    map_at: usize,
}

/// Large blocks and their mapped bytes, for stats.
pub(crate) static LARGE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static LARGE_MAPPED: AtomicUsize = AtomicUsize::new(0);
pub(crate) static LARGE_USABLE: AtomicUsize = AtomicUsize::new(0);

/// Where a block of alignment `align` starts in its mapping, and how the
/// mapping is placed: `(data_offset, map_align, map_at)`.
fn placement(align: usize) -> (usize, usize, usize) {
    let page = os::page_size();
    if align < ARENA_SIZE {
        (align.max(page), ARENA_SIZE, 0)
    } else {
        (page, align, page)
    }
}

/// The header of the large block at `p`: the first page of its mapping.
fn header_of(p: *const u8) -> *mut Header {
    if p.addr() % ARENA_SIZE == 0 {
        p.wrapping_sub(os::page_size()).cast_mut().cast()
    } else {
        crate::core::arena::arena_of(p).cast()
    }
}

/// Whether `p`, an allocator pointer, is a large block.
///
/// # Safety
/// `p` must be a live block of this allocator.
pub(crate) unsafe fn is_large(p: *const u8) -> bool {
    // SAFETY: the header candidate of a live block is mapped (an arena
    // header, or this block's own header); both kinds start with a magic.
    p.addr() % ARENA_SIZE == 0
        || !unsafe { crate::core::arena::is_arena(crate::core::arena::arena_of(p).cast()) }
}

/// A block of at least `size` bytes aligned to `align`, from the cache or a
/// fresh mapping; null on failure. With `zeroed`, the memory reads as
/// zero (free for fresh mappings, a memset for cached ones).
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let (offset, map_align, map_at) = placement(align);
    let Some(map_size) = offset.checked_add(size).and_then(round_to_page) else {
        return ptr::null_mut();
    };
    let (base, map_size) = match cache().take(map_size, map_align, map_at) {
        Some((base, cached_size)) => {
            if zeroed {
                // SAFETY: the cached mapping is ours and holds no live data.
                unsafe { ptr::write_bytes(base.add(offset), 0, cached_size - offset) };
            }
            (base, cached_size)
        }
        None => {
            crate::core::purge::maybe_purge();
            let base = os::reserve_block(map_size, map_align, map_at);
            if base.is_null() {
                return base;
            }
            (base, map_size)
        }
    };
    // SAFETY: `offset < map_size`, the header page lies inside the mapping.
    let data = unsafe { base.add(offset) };
    // SAFETY: the header location is in the mapping and aligned.
    unsafe {
        header_of(data).write(Header {
            magic: LARGE_MAGIC,
            data_offset: offset,
            map_size,
            map_align,
            map_at,
        })
    };
    LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    LARGE_MAPPED.fetch_add(map_size, Ordering::Relaxed);
    LARGE_USABLE.fetch_add(map_size - offset, Ordering::Relaxed);
    data
}

/// Unmaps large block `p`.
///
/// # Safety
/// `p` must be a live large block.
pub(crate) unsafe fn free(p: *mut u8) {
    // SAFETY: a live large block has a valid header.
    let h = unsafe { header_of(p).read() };
    check_magic(&h, p);
    LARGE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    LARGE_MAPPED.fetch_sub(h.map_size, Ordering::Relaxed);
    LARGE_USABLE.fetch_sub(h.map_size - h.data_offset, Ordering::Relaxed);
    // SAFETY: the whole mapping belongs to this block, which dies now.
    let base = unsafe { p.sub(h.data_offset) };
    if !cache().put(base, h.map_size, h.map_align, h.map_at) {
        // SAFETY: as above.
        unsafe { os::release_block(base, h.map_size, h.map_align, h.map_at) };
    }
    crate::core::purge::maybe_purge();
}

/// Usable bytes of large block `p`.
///
/// # Safety
/// `p` must be a live large block.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: a live large block has a valid header.
    let h = unsafe { header_of(p).read() };
    check_magic(&h, p);
    h.map_size - h.data_offset
}

/// Resizes large block `p` to at least `new_size` bytes, keeping its
/// contents; returns the (possibly moved) block or null, in which case `p`
/// is untouched.
///
/// # Safety
/// `p` must be a live large block.
pub(crate) unsafe fn realloc(p: *mut u8, new_size: usize) -> *mut u8 {
    let header = header_of(p);
    // SAFETY: a live large block has a valid header.
    let h = unsafe { header.read() };
    check_magic(&h, p);
    let Some(new_map) = h.data_offset.checked_add(new_size).and_then(round_to_page) else {
        return ptr::null_mut();
    };
    // Growing within the mapping, or shrinking by less than half: in place.
    if new_map <= h.map_size && new_map >= h.map_size / 2 {
        return p;
    }
    // SAFETY: the mapping is this block's own.
    let base = unsafe { p.sub(h.data_offset) };
    // SAFETY: `base` is a whole mapping placed by `map_align`, `map_at`.
    let new_base = if unsafe { os::resize_in_place(base, h.map_size, new_map) } {
        base
    } else {
        // SAFETY: as above.
        let moved = unsafe { os::relocate_block(base, h.map_size, new_map, h.map_align, h.map_at) };
        if moved.is_null() {
            return moved;
        }
        moved
    };
    // SAFETY: the data offset lies inside the new mapping.
    let data = unsafe { new_base.add(h.data_offset) };
    // SAFETY: the header moved with the mapping; update its size.
    unsafe { (*header_of(data)).map_size = new_map };
    LARGE_MAPPED.fetch_add(new_map.wrapping_sub(h.map_size), Ordering::Relaxed);
    LARGE_USABLE.fetch_add(new_map.wrapping_sub(h.map_size), Ordering::Relaxed);
    data
}

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

    /// Takes the smallest cached mapping placed by `align` and `at` holding
    /// `size` bytes and at most eight times that (its resident pages are the
    /// price of skipping `mmap` and page faults; a later `realloc` grows
    /// into them for free); returns its base and real size.
    fn take(&self, size: usize, align: usize, at: usize) -> Option<(*mut u8, usize)> {
        if self.bytes.load(Ordering::Relaxed) < size {
            return None;
        }
        self.with_entries(|entries| {
            let fits = |e: &CachedMapping| {
                !e.base.is_null()
                    && (e.align, e.at) == (align, at)
                    && e.size >= size
                    && e.size / 8 <= size
            };
            let slot = (0..CACHE_SLOTS)
                .filter(|&i| fits(&entries[i]))
                .min_by_key(|&i| entries[i].size)?;
            let entry = core::mem::replace(&mut entries[slot], NO_MAPPING);
            self.bytes.fetch_sub(entry.size, Ordering::Relaxed);
            Some((entry.base, entry.size))
        })
    }

    /// Keeps a freed mapping if it fits; returns false if the caller must
    /// unmap it.
    fn put(&self, base: *mut u8, size: usize, align: usize, at: usize) -> bool {
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

fn check_magic(h: &Header, p: *const u8) {
    if h.magic != LARGE_MAGIC {
        crate::core::diag::abort_with_pointer(
            b"free or realloc of a pointer this allocator does not own: ",
            p.cast_mut(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_usable_realloc_free() {
        let p = alloc(300_000, 16, false);
        assert!(!p.is_null());
        // SAFETY: `p` is a live large block for the whole test.
        unsafe {
            assert!(is_large(p));
            assert!(usable_size(p) >= 300_000);
            p.write_bytes(0xAB, 300_000);
            let q = realloc(p, 5_000_000);
            assert!(!q.is_null());
            assert_eq!(*q.add(299_999), 0xAB);
            assert!(usable_size(q) >= 5_000_000);
            let r = realloc(q, 200_000);
            assert_eq!(*r.add(199_999), 0xAB);
            free(r);
        }
    }

    /// Alignments of `ARENA_SIZE` and more map a header page plus the
    /// size: the padding that found the aligned address is not kept.
    #[test]
    fn huge_alignment_maps_only_the_size() {
        let page = os::page_size();
        let aligns = if cfg!(miri) {
            &[ARENA_SIZE, 2 * ARENA_SIZE][..]
        } else {
            &[ARENA_SIZE, 16 * ARENA_SIZE, 1 << 28][..]
        };
        for &align in aligns {
            let p = alloc(1000, align, false);
            assert!(!p.is_null());
            assert_eq!(p.addr() % align, 0);
            // SAFETY: `p` is a live large block until freed below.
            unsafe {
                let h = header_of(p).read();
                // Two pages, or up to 8 times that from the cache: never
                // the alignment.
                assert!(h.map_size <= 16 * page, "align {align}: {}", h.map_size);
                assert_eq!(h.data_offset, page);
                p.write_bytes(0x5A, 1000);
                // Moved or grown in place, the block keeps its alignment.
                let q = realloc(p, 3 * ARENA_SIZE);
                assert!(!q.is_null());
                assert_eq!(q.addr() % align, 0);
                assert!(is_large(q) && usable_size(q) >= 3 * ARENA_SIZE);
                assert_eq!(*q.add(999), 0x5A);
                q.add(3 * ARENA_SIZE - 1).write(1);
                let r = realloc(q, 100);
                assert_eq!(r.addr() % align, 0);
                assert_eq!(*r.add(99), 0x5A);
                free(r);
            }
        }
    }

    /// A cached mapping of a huge-aligned block is not handed to an
    /// ordinary block of the same size, nor the other way round.
    #[test]
    fn cache_keeps_placements_apart() {
        for _ in 0..4 {
            let huge = alloc(1000, ARENA_SIZE, false);
            let plain = alloc(1000, 16, false);
            assert_eq!(huge.addr() % ARENA_SIZE, 0);
            assert_ne!(plain.addr() % ARENA_SIZE, 0);
            // SAFETY: live large blocks, each freed once.
            unsafe {
                // Other tests share the cache: sizes may be bigger.
                assert!(usable_size(huge) >= 1000 && usable_size(plain) >= 1000);
                assert_eq!((*header_of(huge)).map_at, os::page_size());
                assert_eq!((*header_of(plain)).map_at, 0);
                free(huge);
                free(plain);
            }
        }
    }

    #[test]
    fn huge_alignment() {
        for align in [1 << 20, ARENA_SIZE, 2 * ARENA_SIZE] {
            let p = alloc(1000, align, false);
            assert!(!p.is_null());
            assert_eq!(p.addr() % align, 0);
            // SAFETY: live block.
            unsafe {
                assert!(is_large(p));
                assert!(usable_size(p) >= 1000);
                free(p);
            }
        }
    }
}
