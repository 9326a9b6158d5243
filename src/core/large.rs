//! Core layer: large blocks.
//!
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
//!
//! At the secure level (the `secure` feature, level 1 and up) the last
//! page of each mapping is a `PROT_NONE` guard ([`secure::guards`]), left
//! out of the usable size: a linear overflow past the block faults at
//! once. The guard is lifted before the mapping is resized or cached
//! (an `mremap` must see one uniform mapping, and a cached mapping is
//! reused at other sizes) and set again at the new end.
//!
//! Freed mappings wait in the [`large_cache`] for reuse.

use core::ptr;

use crate::core::arena::ARENA_SIZE;
use crate::core::chunk_map;
use crate::core::large_cache::cache;
use crate::core::os::{self, round_to_page};
use crate::core::secure;
use crate::core::sync::Ordering;
// Plain core atomics even under loom: these are relaxed statistics
// counters, not part of any protocol, and must be const-initialisable.
use core::sync::atomic::AtomicUsize;

const LARGE_MAGIC: usize = 0x5354_5241_5441_4c47; // "STRATALG"
/// The magic of a freed large block whose mapping waits in the cache.
const FREED_MAGIC: usize = 0x5354_5241_5441_4644; // "STRATAFD"

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
    /// The size last asked for (`alloc`, `realloc`): tells a `realloc`
    /// that grows into the mapping's slack from one that shrinks.
    requested: usize,
    /// Bytes of `PROT_NONE` guard at the end of the mapping (a page at the
    /// secure level, else 0), part of `map_size`, not of the usable size.
    guard: usize,
}

/// The guard after each large block: a page at the secure level, else 0.
#[inline]
fn guard_size() -> usize {
    if secure::guards() {
        os::page_size()
    } else {
        0
    }
}

/// Sets (`on`) or lifts the guard of `guard` bytes at the end of the
/// mapping `[base, base + map_size)`. A guard the OS refuses to set (too
/// many mappings) is left off: the page is then slack, never handed out.
///
/// # Safety
/// The range must be a whole mapping of a large block, its last `guard`
/// bytes holding no live data.
unsafe fn set_guard(base: *mut u8, map_size: usize, guard: usize, on: bool) {
    if guard != 0 {
        // SAFETY: whole pages at the end of our mapping (caller), outside
        // the usable size.
        unsafe { os::protect(base.add(map_size - guard), guard, !on) };
    }
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

/// A block of at least `size` bytes aligned to `align`, from the cache or a
/// fresh mapping; null on failure. With `zeroed`, the memory reads as
/// zero (free for fresh mappings, a memset for cached ones).
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let (offset, map_align, map_at) = placement(align);
    let guard = guard_size();
    let Some(map_size) = offset
        .checked_add(size)
        .and_then(round_to_page)
        .and_then(|n| n.checked_add(guard))
    else {
        return ptr::null_mut();
    };
    let cached = cache().take(map_size, map_align, map_at);
    // SAFETY: a cached mapping is ours, placed by `map_align` and `map_at`,
    // and holds no live data.
    let reused = cached.and_then(|(base, cached_size)| unsafe {
        fit_cached(base, cached_size, map_size, map_align, map_at)
    });
    let (base, map_size) = match reused {
        Some((base, map_size, resident)) => {
            if zeroed {
                // The guard page is not set yet, and not zeroed (never read).
                let end = resident.min(map_size - guard);
                // SAFETY: the mapping is ours and holds no live data; past
                // `resident`, pages are fresh and read as zero.
                unsafe { ptr::write_bytes(base.add(offset), 0, end - offset) };
            }
            (base, map_size)
        }
        None => {
            crate::core::purge::maybe_purge();
            let base = os::reserve_block(map_size, map_align, map_at);
            if base.is_null() {
                return base;
            }
            mark(base, map_at);
            (base, map_size)
        }
    };
    // SAFETY: the whole mapping is this new block's; its last `guard`
    // bytes are past the usable size.
    unsafe { set_guard(base, map_size, guard, true) };
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
            requested: size,
            guard,
        })
    };
    LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    LARGE_MAPPED.fetch_add(map_size, Ordering::Relaxed);
    LARGE_USABLE.fetch_add(map_size - guard - offset, Ordering::Relaxed);
    data
}

/// Fits a cached mapping of `cached_size` bytes to a block needing
/// `map_size`: grown (in place, else by moving its pages) when too small,
/// its tail unmapped when more than eight times too big (up to that,
/// its resident pages are the price of skipping `mmap` and page faults, and
/// a later `realloc` grows into them for free). Returns the mapping,
/// its size and how many of its leading bytes were in use before (the
/// rest reads as zero); `None`, with the mapping unmapped, if the OS
/// refuses to grow it.
///
/// # Safety
/// `[base, base + cached_size)` must be a cached mapping placed by `align`
/// and `at`, holding no live data.
unsafe fn fit_cached(
    base: *mut u8,
    cached_size: usize,
    map_size: usize,
    align: usize,
    at: usize,
) -> Option<(*mut u8, usize, usize)> {
    if cached_size >= map_size {
        // SAFETY: a whole mapping of ours (caller); shrinking unmaps only
        // pages past `map_size`, which hold no live data.
        if cached_size / 8 > map_size && unsafe { os::resize_in_place(base, cached_size, map_size) }
        {
            return Some((base, map_size, map_size));
        }
        return Some((base, cached_size, cached_size));
    }
    // SAFETY: as above; growing keeps the resident pages and their data.
    if unsafe { os::resize_in_place(base, cached_size, map_size) } {
        return Some((base, map_size, cached_size));
    }
    // Cleared first: once moved, the OS may hand the old range to another
    // thread's new arena, whose mark must not be cleared after it is set.
    unmark(base, at);
    // SAFETY: as above.
    let moved = unsafe { os::relocate_block(base, cached_size, map_size, align, at) };
    if moved.is_null() {
        // SAFETY: the mapping is intact and ours (caller).
        unsafe { os::release_block(base, cached_size, align, at) };
        return None;
    }
    mark(moved, at);
    Some((moved, map_size, cached_size))
}

/// Unmaps large block `p`.
///
/// # Safety
/// `p` must be a live large block.
pub(crate) unsafe fn free(p: *mut u8) {
    // SAFETY: a live large block has a valid header.
    let h = unsafe { header_of(p).read() };
    check_magic(&h, p);
    // A cached mapping keeps its header: marked freed, a second free of
    // the block aborts instead of caching the mapping twice (which would
    // hand it out twice).
    // SAFETY: the header page is mapped until the mapping is released.
    unsafe { (*header_of(p)).magic = FREED_MAGIC };
    LARGE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    LARGE_MAPPED.fetch_sub(h.map_size, Ordering::Relaxed);
    LARGE_USABLE.fetch_sub(h.map_size - h.guard - h.data_offset, Ordering::Relaxed);
    // SAFETY: the whole mapping belongs to this block, which dies now.
    let base = unsafe { p.sub(h.data_offset) };
    // Lifted: the cache hands the mapping out again at any size.
    // SAFETY: as above.
    unsafe { set_guard(base, h.map_size, h.guard, false) };
    if !cache().put(base, h.map_size, h.map_align, h.map_at) {
        unmark(base, h.map_at);
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
    h.map_size - h.guard - h.data_offset
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
    let Some(new_map) = h
        .data_offset
        .checked_add(new_size)
        .and_then(round_to_page)
        .and_then(|n| n.checked_add(h.guard))
    else {
        return ptr::null_mut();
    };
    // Growing within the mapping (a cached mapping may be up to eight
    // times what was asked for), or shrinking by less than half: in place.
    let grows = new_size >= h.requested;
    if new_map <= h.map_size && (grows || new_map >= h.map_size / 2) {
        // SAFETY: the header of a live block, ours to update.
        unsafe { (*header).requested = new_size };
        return p;
    }
    // SAFETY: the mapping is this block's own.
    let base = unsafe { p.sub(h.data_offset) };
    // Lifted first: `mremap` moves one uniform mapping.
    // SAFETY: as above; the guard holds no data.
    unsafe { set_guard(base, h.map_size, h.guard, false) };
    // SAFETY: `base` is a whole mapping placed by `map_align`, `map_at`.
    let new_base = if unsafe { os::resize_in_place(base, h.map_size, new_map) } {
        base
    } else {
        // Cleared first, as in `fit_cached`; marked again if the block
        // stays where it is.
        unmark(base, h.map_at);
        // SAFETY: as above.
        let moved = unsafe { os::relocate_block(base, h.map_size, new_map, h.map_align, h.map_at) };
        if moved.is_null() {
            mark(base, h.map_at);
            // SAFETY: the block's mapping, intact; its guard set again.
            unsafe { set_guard(base, h.map_size, h.guard, true) };
            return moved;
        }
        mark(moved, h.map_at);
        moved
    };
    // SAFETY: the block's new mapping; its last `guard` bytes are past
    // the new usable size.
    unsafe { set_guard(new_base, new_map, h.guard, true) };
    // SAFETY: the data offset lies inside the new mapping.
    let data = unsafe { new_base.add(h.data_offset) };
    // SAFETY: the header moved with the mapping; update its sizes.
    unsafe {
        let header = header_of(data);
        (*header).map_size = new_map;
        (*header).requested = new_size;
    }
    LARGE_MAPPED.fetch_add(new_map.wrapping_sub(h.map_size), Ordering::Relaxed);
    LARGE_USABLE.fetch_add(new_map.wrapping_sub(h.map_size), Ordering::Relaxed);
    data
}

/// Marks the chunk map for the mapping at `base` placed with `at`: the
/// chunk a pointer into the block's first chunk finds its header from.
fn mark(base: *mut u8, at: usize) {
    let kind = if at == 0 {
        chunk_map::LARGE
    } else {
        chunk_map::HUGE
    };
    chunk_map::set(base.addr() + at, kind);
}

/// Clears what [`mark`] set, before the mapping goes back to the OS.
fn unmark(base: *mut u8, at: usize) {
    chunk_map::set(base.addr() + at, chunk_map::NONE);
}

/// Aborts, naming `p`, unless `h` (read at `header_of(p)`) is the header
/// of a live large block that starts at `p`.
fn check_magic(h: &Header, p: *const u8) {
    if h.magic == FREED_MAGIC {
        crate::core::diag::abort_with_pointer(
            b"double free (or use after free) of large block ",
            p.cast_mut(),
        );
    }
    if h.magic != LARGE_MAGIC {
        crate::core::diag::abort_with_pointer(
            b"free or realloc of a pointer this allocator does not own: ",
            p.cast_mut(),
        );
    }
    if header_of(p).addr() + h.data_offset != p.addr() {
        crate::core::diag::abort_with_pointer(
            b"free or realloc of a pointer inside a large block, not at its start: ",
            p.cast_mut(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `entry` asks of the chunk map for a bare pointer.
    fn is_large(p: *const u8) -> bool {
        matches!(
            chunk_map::kind(p.addr()),
            chunk_map::LARGE | chunk_map::HUGE
        )
    }

    #[test]
    fn alloc_usable_realloc_free() {
        let p = alloc(300_000, 16, false);
        assert!(!p.is_null());
        // SAFETY: `p` is a live large block for the whole test.
        unsafe {
            assert!(is_large(p.cast_const()));
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

    /// A block handed a cached mapping bigger than it asked for grows into
    /// the slack in place: a `realloc` chain pays no `mremap` per step.
    #[test]
    fn growth_into_a_cached_mappings_slack_stays_in_place() {
        let page = os::page_size();
        let p = alloc(64 * page, 16, false);
        assert!(!p.is_null());
        // SAFETY: `p` is a live large block until freed below.
        unsafe {
            // As if `alloc(8 pages)` had been given this cached mapping.
            (*header_of(p)).requested = 8 * page;
            let map_size = (*header_of(p)).map_size;
            let q = realloc(p, 16 * page);
            assert_eq!(q, p);
            assert_eq!((*header_of(q)).map_size, map_size);
            assert_eq!((*header_of(q)).requested, 16 * page);
            free(q);
        }
    }

    /// A cached mapping too small for a request grows and keeps its data
    /// pages; one more than eight times too big gives its tail back.
    #[test]
    fn cached_mappings_are_fitted_to_the_request() {
        let page = os::page_size();
        let (_, align, at) = placement(16);
        let base = os::reserve_block(4 * page, align, at);
        assert!(!base.is_null());
        // SAFETY: a fresh mapping of ours, with no live data.
        unsafe {
            base.add(4 * page - 1).write(7);
            let (grown, size, resident) = fit_cached(base, 4 * page, 16 * page, align, at).unwrap();
            assert_eq!((size, resident), (16 * page, 4 * page));
            assert_eq!(*grown.add(4 * page - 1), 7);
            assert_eq!(*grown.add(16 * page - 1), 0);
            let (shrunk, size, resident) = fit_cached(grown, 16 * page, page, align, at).unwrap();
            assert_eq!((shrunk, resident), (grown, size));
            // The fake OS of Miri and loom never resizes in place.
            assert!(size == page || cfg!(any(miri, loom)) && size == 16 * page);
            let (kept, kept_size, _) = fit_cached(shrunk, size, size / 8, align, at).unwrap();
            assert_eq!((kept, kept_size), (shrunk, size));
            os::release_block(kept, size, align, at);
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
                assert!(is_large(q.cast_const()) && usable_size(q) >= 3 * ARENA_SIZE);
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
                assert!(is_large(p.cast_const()));
                assert!(usable_size(p) >= 1000);
                free(p);
            }
        }
    }
}
