//! Large blocks: requests too big (or too aligned) for any pool, mapped
//! straight from the OS and unmapped on free.
//!
//! Each block has a one-page header. For alignments below `ARENA_SIZE` the
//! mapping starts `ARENA_SIZE`-aligned with the header there and the data
//! at `max(PAGE_SIZE, align)`, so masking a data pointer finds the header
//! exactly as it finds an arena's (this is what lets `usable_size` take a
//! bare pointer). For larger alignments the data itself is `ARENA_SIZE`
//! aligned — an address no small block or ordinary large block can have —
//! and the header sits in the page before it. `realloc` resizes the mapping
//! with `mremap`, in place when the address space after it is free, else
//! by moving the pages (no copy).

use core::ptr;

use crate::arena::ARENA_SIZE;
use crate::os::{self, PAGE_SIZE};
use crate::sync::Ordering;
// Plain core atomics even under loom: these are relaxed statistics
// counters, not part of any protocol, and must be const-initialisable.
use core::sync::atomic::AtomicUsize;

const LARGE_MAGIC: usize = 0x5354_5241_5441_4c47; // "STRATALG"

#[repr(C)]
struct Header {
    magic: usize,
    /// Bytes from the mapping start to the data.
    data_offset: usize,
    /// Size and alignment of the whole mapping.
    map_size: usize,
    map_align: usize,
}

/// Large blocks and their mapped bytes, for stats.
pub(crate) static LARGE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static LARGE_MAPPED: AtomicUsize = AtomicUsize::new(0);
pub(crate) static LARGE_USABLE: AtomicUsize = AtomicUsize::new(0);

fn round_to_page(n: usize) -> Option<usize> {
    Some(n.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

/// Where the data starts in a mapping, and the mapping's alignment.
fn placement(align: usize) -> (usize, usize) {
    if align < ARENA_SIZE {
        (align.max(PAGE_SIZE), ARENA_SIZE)
    } else {
        (align, align)
    }
}

/// The header of the large block at `p`.
fn header_of(p: *const u8) -> *mut Header {
    if p.addr() % ARENA_SIZE == 0 {
        p.wrapping_sub(PAGE_SIZE).cast_mut().cast()
    } else {
        crate::arena::arena_of(p).cast()
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
        || !unsafe { crate::arena::is_arena(crate::arena::arena_of(p).cast()) }
}

/// Maps a block of at least `size` bytes aligned to `align`; null on
/// failure. The memory is zeroed (fresh pages).
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    let (offset, map_align) = placement(align);
    let Some(map_size) = offset.checked_add(size).and_then(round_to_page) else {
        return ptr::null_mut();
    };
    let base = os::reserve_aligned(map_size, map_align);
    if base.is_null() {
        return base;
    }
    // SAFETY: `offset < map_size`, the header page lies inside the mapping.
    let data = unsafe { base.add(offset) };
    // SAFETY: the header location is in the fresh mapping and aligned.
    unsafe {
        header_of(data).write(Header {
            magic: LARGE_MAGIC,
            data_offset: offset,
            map_size,
            map_align,
        })
    };
    LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    LARGE_MAPPED.fetch_add(map_size, Ordering::Relaxed);
    LARGE_USABLE.fetch_add(map_size - offset, Ordering::Relaxed);
    crate::arena::registry().maybe_purge();
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
    unsafe { os::release(p.sub(h.data_offset), h.map_size, h.map_align) };
    crate::arena::registry().maybe_purge();
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
    if new_map == h.map_size {
        return p;
    }
    // SAFETY: the mapping is this block's own.
    let base = unsafe { p.sub(h.data_offset) };
    // SAFETY: `base` is a whole reservation with alignment `map_align`.
    let new_base = if unsafe { os::resize_in_place(base, h.map_size, new_map) } {
        base
    } else {
        // SAFETY: as above.
        let moved = unsafe { os::relocate(base, h.map_size, new_map, h.map_align) };
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

fn check_magic(h: &Header, p: *const u8) {
    if h.magic != LARGE_MAGIC {
        crate::report::abort_with_pointer(
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
        let p = alloc(300_000, 16);
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

    #[test]
    fn huge_alignment() {
        for align in [1 << 20, ARENA_SIZE, 2 * ARENA_SIZE] {
            let p = alloc(1000, align);
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
