//! Core layer: the entry points — allocate, free, resize and measure a
//! block, by `Layout` (Rust's `GlobalAlloc`) or by pointer alone (the C
//! interface, where `free` gets no size) — and the counting of each. The
//! crate's face (`lib.rs`) calls only these.

use core::alloc::Layout;
use core::ptr;

use crate::core::size_class::{class_for, class_index, CLASS_SIZES, DIRECT_MAX};
use crate::core::{abandoned, arena, chunk_map, diag, large, pool, purge, thread};

/// A block for `layout` (non-zero size); null when out of memory.
#[inline]
pub(crate) fn alloc(layout: Layout) -> *mut u8 {
    if layout.size() <= DIRECT_MAX && layout.align() <= 16 {
        return alloc_direct(layout.size());
    }
    match class_for(layout.size(), layout.align()) {
        Some(class) => alloc_small(class),
        None => alloc_large(layout.size(), layout.align(), false),
    }
}

/// A block of `size` bytes (at least 1) with `malloc`'s 16-byte
/// alignment; null when out of memory. [`alloc`] without the `Layout`
/// checks, which a constant alignment makes moot.
#[inline(always)]
pub(crate) fn malloc(size: usize) -> *mut u8 {
    if size <= DIRECT_MAX {
        // Size 0 shares the 16-byte class: a unique pointer, as C wants.
        return alloc_direct(size);
    }
    match class_for(size, 16) {
        Some(class) => alloc_small(class),
        // `large::alloc` refuses sizes that overflow a mapping.
        None => alloc_large(size, 16, false),
    }
}

/// [`malloc`]'s fast path alone: a block from the thread's direct table
/// for `size <= DIRECT_MAX`, or null when [`malloc`] must run (it then
/// takes its slow path). Calls nothing: a caller can tail-call the rest.
#[inline(always)]
pub(crate) fn malloc_fast(size: usize) -> *mut u8 {
    if size <= DIRECT_MAX {
        thread::alloc_direct(size)
    } else {
        ptr::null_mut()
    }
}

/// [`alloc`], zeroed.
#[inline]
pub(crate) fn alloc_zeroed(layout: Layout) -> *mut u8 {
    let p = if layout.size() <= DIRECT_MAX && layout.align() <= 16 {
        alloc_direct(layout.size())
    } else {
        match class_for(layout.size(), layout.align()) {
            Some(class) => alloc_small(class),
            // Fresh mappings are already zero: no memset.
            None => return alloc_large(layout.size(), layout.align(), true),
        }
    };
    if !p.is_null() {
        // SAFETY: the block holds at least `layout.size()` bytes.
        unsafe { ptr::write_bytes(p, 0, layout.size()) };
    }
    p
}

/// Frees `ptr`, allocated with `layout`.
///
/// # Safety
/// `ptr` must be a live block allocated with `layout`.
#[inline]
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    // The layout tells small from large without reading metadata.
    if class_for(layout.size(), layout.align()).is_some() {
        // SAFETY: `ptr` is a live small block (caller).
        unsafe { free_small(ptr) }
    } else {
        // SAFETY: `ptr` is a live large block (caller).
        unsafe { free_large(ptr) }
    }
}

/// Resizes `ptr` (allocated with `layout`) to `new_size` bytes; null,
/// with `ptr` untouched, when out of memory.
///
/// # Safety
/// As `GlobalAlloc::realloc`.
#[inline]
pub(crate) unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    let align = layout.align();
    match (class_for(layout.size(), align), class_for(new_size, align)) {
        (Some(old), Some(new))
            if old == new || stays_in_place(CLASS_SIZES[old] as usize, new_size) =>
        {
            return ptr;
        }
        // SAFETY: `ptr` is a live large block; the new size is large too.
        (None, None) => return unsafe { realloc_large(ptr, new_size) },
        _ => {}
    }
    // SAFETY: `new_size` with the old alignment is a valid layout
    // (GlobalAlloc contract).
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
    let new = alloc(new_layout);
    if !new.is_null() {
        // SAFETY: both blocks are live, disjoint and large enough.
        unsafe {
            ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            dealloc(ptr, layout);
        }
    }
    new
}

/// Frees `ptr`, whatever its size.
///
/// # Safety
/// `ptr` must be a live block of this allocator.
#[inline]
pub(crate) unsafe fn free(ptr: *mut u8) {
    // SAFETY: a live block (caller).
    unsafe {
        if is_large(ptr) {
            free_large(ptr);
        } else {
            free_small(ptr);
        }
    }
}

/// Resizes `ptr`, whatever its size, to `new_size` bytes (at least 1)
/// with at least 16-byte alignment; null, with `ptr` untouched, when out
/// of memory.
///
/// # Safety
/// `ptr` must be a live block of this allocator.
#[inline]
pub(crate) unsafe fn realloc_unsized(ptr: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: a live block (caller).
    let (is_large, usable) = unsafe { (is_large(ptr), usable_size(ptr)) };
    let stays_small = class_for(new_size, 16).is_some();
    if !is_large && stays_small && stays_in_place(usable, new_size) {
        return ptr;
    }
    if is_large && !stays_small {
        // SAFETY: a live large block.
        return unsafe { realloc_large(ptr, new_size) };
    }
    let Ok(new_layout) = Layout::from_size_align(new_size, 16) else {
        return ptr::null_mut();
    };
    let new = alloc(new_layout);
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

/// Whether a small block of `block` bytes serves `new_size` bytes in
/// place: it fits, and keeps at least half the block in use.
#[inline]
fn stays_in_place(block: usize, new_size: usize) -> bool {
    new_size <= block && new_size >= block / 2
}

/// Bytes usable in the block at `ptr` (at least the size it was allocated
/// with), like `malloc_usable_size`.
///
/// # Safety
/// `ptr` must be a live block of this allocator.
#[inline]
pub(crate) unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: `ptr` is a live block (caller).
    unsafe {
        if is_large(ptr) {
            large::usable_size(ptr)
        } else {
            small_block_size(ptr)
        }
    }
}

/// Whether `ptr`, given to `free`, `realloc` or `malloc_usable_size`
/// without a size, is a large block rather than a small one. Found from
/// the chunk map without reading the pointer's chunk: a pointer in no
/// chunk of ours aborts here, naming it, instead of faulting on a header
/// that is not there.
#[inline(always)]
fn is_large(ptr: *const u8) -> bool {
    let kind = chunk_map::kind(ptr.addr());
    if kind == chunk_map::ARENA {
        return false;
    }
    if kind == chunk_map::NONE {
        not_ours(ptr);
    }
    true
}

#[cold]
#[inline(never)]
fn not_ours(ptr: *const u8) -> ! {
    diag::abort_with_pointer(
        b"free, realloc or malloc_usable_size of a pointer strata never handed out: ",
        ptr.cast_mut(),
    )
}

/// Returns all free memory to the OS now: the calling thread's empty
/// pools, empty pools left by exited threads, and every free arena slot;
/// empty arenas are unmapped.
pub(crate) fn release_memory() {
    thread::with_heap(|heap| heap.release_empty_pools());
    abandoned::abandoned().sweep(arena::registry());
    purge::purge_all();
}

/// Allocates a block of `class` from the thread heap, counting it.
#[inline(always)]
fn alloc_small(class: usize) -> *mut u8 {
    let (p, counting) = thread::alloc(class);
    if counting {
        count_small_alloc(p, class);
    }
    p
}

/// [`alloc_small`] of a request of `size <= DIRECT_MAX` bytes aligned to
/// at most 16: the fast path finds the pool through the heap's direct
/// table without computing the class; anything else is a tail call.
#[inline(always)]
fn alloc_direct(size: usize) -> *mut u8 {
    let p = thread::alloc_direct(size);
    if !p.is_null() {
        return p;
    }
    alloc_direct_slow(size)
}

/// [`alloc_direct`] when the fast path declined: the thread's first
/// allocation, counting, or a refill.
#[inline(never)]
fn alloc_direct_slow(size: usize) -> *mut u8 {
    alloc_small(class_index(size))
}

/// The counting part of [`alloc_small`], out of line.
#[cold]
#[inline(never)]
fn count_small_alloc(p: *mut u8, class: usize) {
    if !p.is_null() {
        thread::count_alloc(p, CLASS_SIZES[class] as usize);
    }
}

/// Frees small block `ptr` through the thread heap, counting it.
///
/// # Safety
/// `ptr` must be a live small block.
#[inline(always)]
unsafe fn free_small(ptr: *mut u8) {
    // Counted by the block's own size, not the layout's: a block shrunk
    // in place by `realloc` is bigger than its layout says.
    // SAFETY: `ptr` is a live small block (caller).
    unsafe { thread::free_counted(ptr, move || small_block_size(ptr)) };
}

/// Maps a large block, counting it.
fn alloc_large(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let p = large::alloc(size, align, zeroed);
    if !p.is_null() {
        // SAFETY: `p` is a live large block.
        thread::count_large_alloc(p, unsafe { large::usable_size(p) });
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
    thread::count_large_free(ptr, bytes);
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
        thread::count_large_free(ptr, old);
        // SAFETY: `new` is a live large block.
        thread::count_large_alloc(new, unsafe { large::usable_size(new) });
    }
    new
}

/// The size of small block `ptr`, read from its pool.
///
/// # Safety
/// `ptr` must be a live small block.
pub(crate) unsafe fn small_block_size(ptr: *const u8) -> usize {
    // SAFETY: a live small block's pool record is initialised (caller).
    unsafe { (*arena::pool_meta_of(ptr).cast::<pool::Pool>()).block_size as usize }
}
