//! # strata-capi — strata as a drop-in `malloc`
//!
//! This crate builds `libstrata.so`, a shared library that exports the C
//! allocation interface (`malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`,
//! `pvalloc`, `malloc_usable_size`, `cfree`, plus `malloc_trim` and
//! `malloc_stats`) on top of [`strata_alloc::raw`], with glibc's semantics.
//! Preload it to run any dynamically linked Linux program on strata:
//!
//! ```sh
//! cargo build --release -p strata-capi
//! LD_PRELOAD=$PWD/target/release/libstrata.so python3 script.py
//! STRATA_SHOW_STATS=1 LD_PRELOAD=$PWD/target/release/libstrata.so git gc
//! ```
//!
//! (CPython keeps small objects in its own pymalloc unless run with
//! `PYTHONMALLOC=malloc`.) The `STRATA_*` variables of `strata-alloc` apply
//! as usual; they are read once, when the library is loaded.
//!
//! Semantics, where C leaves room:
//!
//! - `malloc(0)` (and `calloc` of zero bytes, `posix_memalign` of size 0)
//!   returns a unique pointer that must be freed; `free(NULL)` does nothing.
//! - `realloc(p, 0)` with a non-null `p` frees `p` and returns `NULL`, as
//!   glibc does (`REALLOC_ZERO_BYTES_FREES`): this library replaces glibc's
//!   allocator, so programs must see the behaviour they were tested with
//!   (a leak-free `realloc(p, 0)` is what glibc users rely on).
//!   `realloc(NULL, n)` is `malloc(n)`.
//! - Every failure returns `NULL` and sets `errno`: `ENOMEM` when out of
//!   memory or when a size computation overflows, `EINVAL` for an
//!   alignment no power of two can serve. `posix_memalign` returns the
//!   error number instead and, like glibc's, leaves `errno` alone for a
//!   bad alignment but sets `ENOMEM` when out of memory.
//! - `posix_memalign` needs a power of two multiple of `sizeof(void *)`.
//!   `memalign` and `aligned_alloc` take any alignment, as glibc 2.36 does:
//!   one below 16 gives a plain `malloc` block, any other is rounded up to
//!   the next power of two; only one above `SIZE_MAX / 2 + 1` fails
//!   (`EINVAL`). (glibc 2.38 makes `aligned_alloc` refuse a non-power of
//!   two; serving it is the choice that breaks no program built against
//!   either.) Every block is at least 16-byte aligned (glibc's
//!   `MALLOC_ALIGNMENT`).
//!
//! None of these functions allocates while serving a request: they call
//! `strata_alloc::raw`, which never allocates inside itself, and set
//! `errno` through `__errno_location`. The crate also installs [`Strata`]
//! as the Rust global allocator, so Rust code inside the library shares
//! the same heap.
//!
//! [`Strata`]: strata_alloc::Strata

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

use core::ffi::c_void;
use core::ptr;

use strata_alloc::raw;

#[global_allocator]
static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;

/// The alignment of every block `malloc` returns (glibc's on 64-bit).
const MALLOC_ALIGN: usize = 16;

/// Sets the calling thread's `errno`.
#[inline]
fn set_errno(code: libc::c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's lifetime.
    unsafe { *libc::__errno_location() = code };
}

/// `p`, or `NULL` with `errno = ENOMEM` when `p` is null.
#[inline]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A block of `size` bytes aligned to `align` (a power of two), or `NULL`
/// with `errno` set.
#[inline]
fn aligned(align: usize, size: usize) -> *mut c_void {
    or_enomem(raw::alloc(size, align.max(MALLOC_ALIGN), false))
}

/// The power of two glibc's `memalign` serves for `align`: at least
/// `MALLOC_ALIGN`, else `align` rounded up (glibc's `_mid_memalign`);
/// `None` (`EINVAL`) when no power of two is that large.
fn memalign_alignment(align: usize) -> Option<usize> {
    if align > usize::MAX / 2 + 1 {
        return None;
    }
    Some(align.max(MALLOC_ALIGN).next_power_of_two())
}

/// Allocates `size` bytes, 16-byte aligned. `malloc(0)` returns a unique
/// pointer.
///
/// # Safety
/// Always safe to call; the result must be released with [`free`].
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let p = raw::malloc_fast(size);
    if !p.is_null() {
        return p.cast();
    }
    malloc_slow(size)
}

/// [`malloc`] past its fast path, out of line so that the fast path pushes
/// no registers. `extern "C"`, so that it cannot unwind: `malloc` then
/// needs no abort guard around the call and jumps to it (a tail call), with
/// no stack frame of its own.
#[inline(never)]
extern "C" fn malloc_slow(size: usize) -> *mut c_void {
    or_enomem(raw::malloc(size))
}

/// Frees a block from this library; `NULL` is ignored.
///
/// # Safety
/// `p` must be null or a live block returned by this library.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: `p` is null or a live block of ours (caller).
    unsafe { raw::free(p.cast()) }
}

/// The old name of [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: as for `free` (caller).
    unsafe { raw::free(p.cast()) }
}

/// Allocates `n * size` zeroed bytes; `NULL` with `ENOMEM` if the product
/// overflows.
///
/// # Safety
/// Always safe to call; the result must be released with [`free`].
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => or_enomem(raw::alloc(total, MALLOC_ALIGN, true)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// Resizes `p` to `size` bytes keeping its contents. `realloc(NULL, n)` is
/// `malloc(n)`; `realloc(p, 0)` frees `p` and returns `NULL` (glibc). On
/// failure returns `NULL` with `ENOMEM` and leaves `p` untouched.
///
/// # Safety
/// `p` must be null or a live block returned by this library; on success
/// `p` must not be used again.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return or_enomem(raw::alloc(size, MALLOC_ALIGN, false));
    }
    if size == 0 {
        // SAFETY: a live block of ours (caller).
        unsafe { raw::free(p.cast()) };
        return ptr::null_mut();
    }
    // SAFETY: a live block of ours (caller).
    or_enomem(unsafe { raw::realloc(p.cast(), size) })
}

/// `realloc(p, n * size)`, failing with `ENOMEM` (and `p` untouched) when
/// the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: as for `realloc` (caller).
        Some(total) => unsafe { realloc(p, total) },
        None => or_enomem(ptr::null_mut()),
    }
}

/// Stores in `*out` a block of `size` bytes aligned to `align`, which must
/// be a power of two multiple of `sizeof(void *)`. Returns 0, `EINVAL` for
/// a bad alignment (`errno` untouched) or `ENOMEM` (`errno` set too, as
/// glibc does); `*out` is unchanged on failure.
///
/// # Safety
/// `out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> libc::c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = aligned(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `out` is writable (caller).
    unsafe { *out = p };
    0
}

/// A block of `size` bytes aligned to `align`, or to the next power of two
/// above it (see the crate docs; `NULL` with `EINVAL` past
/// `SIZE_MAX / 2 + 1`). `size` need not be a multiple of `align`.
///
/// # Safety
/// Always safe to call; the result must be released with [`free`].
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    match memalign_alignment(align) {
        Some(align) => aligned(align, size),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// The obsolete form of [`aligned_alloc`], the same function in glibc.
///
/// # Safety
/// Always safe to call; the result must be released with [`free`].
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: no preconditions.
    unsafe { aligned_alloc(align, size) }
}

/// A page-aligned block of `size` bytes.
///
/// # Safety
/// Always safe to call; the result must be released with [`free`].
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(page_size(), size)
}

/// A page-aligned block of `size` rounded up to whole pages (one page for
/// 0); `NULL` with `ENOMEM` if the rounding overflows.
///
/// # Safety
/// Always safe to call; the result must be released with [`free`].
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.max(1).checked_add(page - 1) {
        Some(n) => aligned(page, n & !(page - 1)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// Usable bytes of block `p` (at least what was asked for); 0 for `NULL`.
///
/// # Safety
/// `p` must be null or a live block returned by this library.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: a live block of ours (caller).
    unsafe { strata_alloc::usable_size(p.cast()) }
}

/// Returns free memory to the OS ([`strata_alloc::release_memory`]); the
/// padding argument is ignored. Returns 1 (memory may have been released).
///
/// # Safety
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> libc::c_int {
    strata_alloc::release_memory();
    1
}

/// Prints strata's stats report to stderr ([`strata_alloc::print_stats`]).
///
/// # Safety
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats() {
    strata_alloc::print_stats();
}
