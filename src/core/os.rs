//! Core layer: the platform.
//!
//! The OS layer: the only code in strata-alloc that talks to the operating
//! system (and the only user of `libc`).
//!
//! It knows the page size, reserves and releases address space, decommits
//! pages, moves large mappings, reads the clock, and registers the
//! thread-exit and `fork` hooks. Nothing here allocates.
//!
//! Under `cfg(miri)` and `cfg(loom)` the memory calls go to a fake backend
//! over `std::alloc::System` (which both tools understand), so the layers
//! above run unchanged; `madvise` becomes "fill whole pages with zeros"
//! and `mremap` becomes "allocate, copy, free". The fake has 16 KiB pages
//! (as many aarch64 kernels do), so the tests catch code that assumes
//! 4 KiB.

use core::ptr;
// A core atomic even under loom: the page size is a constant of the
// process that we read once, not part of any protocol.
use core::sync::atomic::{AtomicUsize, Ordering};

/// The OS page size, 0 until first asked for.
static CACHED_PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The size of an OS page: the unit of every `madvise`, `munmap` and
/// `mremap` range. 4 KiB on x86_64, often 16 or 64 KiB on aarch64. Read
/// from the OS on first use (`sysconf` returns a value the kernel passed at
/// exec, without allocating) and cached; slow paths only.
#[inline]
pub(crate) fn page_size() -> usize {
    match CACHED_PAGE_SIZE.load(Ordering::Relaxed) {
        0 => init_page_size(),
        page => page,
    }
}

#[cold]
fn init_page_size() -> usize {
    let page = backend::page_size();
    // Racing first calls store the same value.
    CACHED_PAGE_SIZE.store(page, Ordering::Relaxed);
    page
}

/// `n` rounded up to a whole number of pages; `None` on overflow.
pub(crate) fn round_to_page(n: usize) -> Option<usize> {
    let page = page_size();
    Some(n.checked_add(page - 1)? & !(page - 1))
}

/// Reserves `size` bytes of zeroed, readable and writable memory aligned to
/// `align` (a power of two, at least the page size; `size` a multiple of
/// the page size), for an arena. Pages are committed by the kernel on
/// first touch and the reservation is not charged against the overcommit
/// limit (`MAP_NORESERVE`): an arena is committed lazily, pool by pool.
/// Returns null when the OS refuses.
pub(crate) fn reserve_aligned(size: usize, align: usize) -> *mut u8 {
    let page = page_size();
    debug_assert!(align.is_power_of_two() && align >= page && size % page == 0);
    backend::reserve(size, align, 0, false)
}

/// Returns a region obtained from [`reserve_aligned`] (or a prefix/suffix
/// of one, on the real OS) to the OS.
///
/// # Safety
/// `[base, base + size)` must be a region this module handed out, and no
/// live reference may point into it.
pub(crate) unsafe fn release(base: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded contract.
    unsafe { backend::release(base, size, align, 0) }
}

/// Reserves `size` bytes of zeroed, readable and writable memory for one
/// large block, placed so that `base + at` is aligned to `align` (a power
/// of two, at least the page size; `at < align` and `size` multiples of
/// the page size). Returns null when the OS refuses.
///
/// Only about `size` bytes stay mapped, whatever the alignment: the
/// padding needed to find an aligned point is unmapped at once, so a
/// program keeping many blocks with 64 MiB alignment pays for their sizes,
/// not for their alignments.
///
/// Unlike an arena, the padded reservation is charged against the
/// overcommit limit (no `MAP_NORESERVE`): the kernel then judges an absurd
/// request exactly as it judges glibc's `mmap` of the same request. In
/// Linux's default heuristic mode a single mapping larger than RAM + swap
/// is refused, so `aligned_alloc(1 << 40, 10)` or `malloc(1 << 40)` fail
/// with `ENOMEM` as they do under glibc, instead of succeeding as a sparse
/// terabyte that a later touch would turn into an OOM kill; with
/// `vm.overcommit_memory = 1` both succeed, again like glibc.
pub(crate) fn reserve_block(size: usize, align: usize, at: usize) -> *mut u8 {
    let page = page_size();
    debug_assert!(align.is_power_of_two() && align >= page && at < align);
    debug_assert!(size % page == 0 && at % page == 0 && at < size);
    backend::reserve(size, align, at, true)
}

/// Returns a mapping from [`reserve_block`] or [`relocate_block`] (with the
/// same `align` and `at`, and its current size) to the OS.
///
/// # Safety
/// `[base, base + size)` must be such a mapping, and no live reference may
/// point into it.
pub(crate) unsafe fn release_block(base: *mut u8, size: usize, align: usize, at: usize) {
    // SAFETY: forwarded contract.
    unsafe { backend::release(base, size, align, at) }
}

/// Tells the OS the whole pages inside `[base, base + size)` are unused:
/// their physical memory is freed now (they stop counting in RSS) and they
/// read as zero when touched again. Partial pages at either end are left
/// alone (the kernel would round the length up into the next page, which
/// may hold live data). Returns the bytes decommitted.
///
/// # Safety
/// The range must lie inside a reservation and hold no live data.
pub(crate) unsafe fn decommit(base: *mut u8, size: usize) -> usize {
    let page = page_size();
    let start = base.addr().next_multiple_of(page);
    let end = (base.addr() + size) & !(page - 1);
    if end <= start {
        return 0;
    }
    // SAFETY: forwarded contract; `[start, end)` is the whole pages inside
    // the caller's range.
    unsafe { backend::decommit(base.with_addr(start), end - start) };
    end - start
}

/// Tries to grow or shrink the mapping at `base` in place (page-multiple
/// sizes). Returns false when the neighbouring address space is taken.
///
/// # Safety
/// `[base, base + old_size)` must be a whole mapping of this module.
pub(crate) unsafe fn resize_in_place(base: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: forwarded contract.
    unsafe { backend::resize_in_place(base, old_size, new_size) }
}

/// Moves the pages of the large-block mapping `[old, old + old_size)` to a
/// new one of `new_size` bytes placed like [`reserve_block`] places it,
/// without copying data where the OS can remap pages. Returns null (and
/// leaves `old` intact) when the OS refuses.
///
/// # Safety
/// `old` must be a whole mapping from [`reserve_block`] or
/// [`relocate_block`] with the same `align` and `at`.
pub(crate) unsafe fn relocate_block(
    old: *mut u8,
    old_size: usize,
    new_size: usize,
    align: usize,
    at: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { backend::relocate(old, old_size, new_size, align, at) }
}

/// Makes the whole pages `[base, base + size)` inaccessible (`PROT_NONE`:
/// a guard, any access faults) or read-write again. Returns false when the
/// OS refuses (the pages keep their protection). The fake OS of Miri and
/// loom has no protections: a no-op that succeeds.
///
/// # Safety
/// The range must be whole pages of a mapping of this module, holding no
/// live data when made inaccessible.
pub(crate) unsafe fn protect(base: *mut u8, size: usize, accessible: bool) -> bool {
    // SAFETY: forwarded contract.
    unsafe { backend::protect(base, size, accessible) }
}

/// Milliseconds on a monotonic clock (coarse: a few ms resolution is fine
/// for purge delays, and the coarse clock is a vDSO read).
pub(crate) fn now_ms() -> u64 {
    backend::now_ms()
}

/// Eight random bytes from the OS (`getrandom(2)`, never blocking), or
/// `None` if it has none to give (an old kernel, entropy not yet ready at
/// boot, a seccomp filter); never allocates.
pub(crate) fn random_u64() -> Option<u64> {
    backend::random_u64()
}

/// Reads environment variable `name` without allocating, like glibc's
/// `secure_getenv`: `None` in a setuid or setgid program (`AT_SECURE`),
/// whose environment its caller controls. The value's bytes live for the
/// whole program as long as nobody calls `setenv`; we read each variable
/// once, at process start.
pub(crate) fn secure_env_var(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    #[cfg(any(miri, loom))]
    {
        let _ = name;
        None
    }
    #[cfg(not(any(miri, loom)))]
    {
        // SAFETY: getauxval has no preconditions and does not allocate.
        if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
            return None;
        }
        // SAFETY: `name` is NUL-terminated; getenv returns null or a
        // pointer to a NUL-terminated string owned by the environment.
        let value = unsafe { libc::getenv(name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: non-null result of getenv is a valid C string.
        Some(unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes())
    }
}

/// Writes `bytes` to standard error with `write(2)`: diagnostics must not
/// go through `std`, whose printing may allocate.
pub(crate) fn write_stderr(bytes: &[u8]) {
    #[cfg(any(miri, loom))]
    {
        let _ = bytes;
    }
    #[cfg(not(any(miri, loom)))]
    {
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid readable buffer of its length.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                return;
            }
            rest = &rest[n as usize..];
        }
    }
}

/// Ends the process at once with a one-line reason, without unwinding or
/// allocating: used when the allocator finds its own invariants broken
/// (a corrupted heap must not keep running).
pub(crate) fn abort_with(reason: &[u8]) -> ! {
    write_stderr(b"strata-alloc: ");
    write_stderr(reason);
    write_stderr(b"\n");
    #[cfg(any(miri, loom))]
    panic!("strata-alloc abort");
    #[cfg(not(any(miri, loom)))]
    // SAFETY: abort has no preconditions.
    unsafe {
        libc::abort()
    }
}

/// A key whose destructor runs `on_exit(value)` when a thread that set a
/// non-null value exits: how a heap learns its thread is gone without a
/// `thread_local!` destructor (those register through
/// `__cxa_thread_atexit_impl`, which calls `calloc`).
pub(crate) struct ThreadExitKey {
    #[cfg(not(any(miri, loom)))]
    key: crate::core::sync::AtomicUsize,
}

/// `pthread_key_t` is an unsigned int; we store key + 1 so 0 means "none".
impl ThreadExitKey {
    pub(crate) const fn new() -> Self {
        ThreadExitKey {
            #[cfg(not(any(miri, loom)))]
            key: crate::core::sync::AtomicUsize::new(0),
        }
    }

    /// Creates the key with destructor `on_exit`, unless it exists.
    /// Returns false if the OS has no keys left.
    pub(crate) fn create(&self, on_exit: unsafe extern "C" fn(*mut core::ffi::c_void)) -> bool {
        #[cfg(any(miri, loom))]
        {
            let _ = on_exit;
            false
        }
        #[cfg(not(any(miri, loom)))]
        {
            use crate::core::sync::Ordering;
            if self.key.load(Ordering::Acquire) != 0 {
                return true;
            }
            let mut new_key: libc::pthread_key_t = 0;
            // SAFETY: `new_key` is a valid out-pointer; the destructor is an
            // `extern "C"` fn taking the stored value.
            if unsafe { libc::pthread_key_create(&mut new_key, Some(on_exit)) } != 0 {
                return false;
            }
            let won = self.key.compare_exchange(
                0,
                new_key as usize + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if won.is_err() {
                // SAFETY: the key we created is unused.
                unsafe { libc::pthread_key_delete(new_key) };
            }
            true
        }
    }

    /// Sets this thread's value (the key's destructor then runs at the
    /// thread's exit). Returns false if the key could not be created or the
    /// value not stored; `pthread_setspecific` may call `calloc`, so the
    /// caller must hold no allocator state.
    pub(crate) fn set(
        &self,
        value: *mut u8,
        on_exit: unsafe extern "C" fn(*mut core::ffi::c_void),
    ) -> bool {
        if !self.create(on_exit) {
            return false;
        }
        #[cfg(any(miri, loom))]
        {
            let _ = value;
            false
        }
        #[cfg(not(any(miri, loom)))]
        {
            let key = self.key.load(crate::core::sync::Ordering::Acquire);
            // SAFETY: `key - 1` is a key created by `create`.
            unsafe {
                libc::pthread_setspecific((key - 1) as libc::pthread_key_t, value.cast()) == 0
            }
        }
    }
}

/// Starts a detached thread running `body` with a small stack (64 KiB,
/// `name` for `top` and debuggers); false if the OS refuses. Runs
/// `pthread_create`, which allocates (its thread descriptor's TLS
/// vectors): the caller must hold no allocator state. Miri and loom
/// start no threads here.
pub(crate) fn spawn_detached(
    body: extern "C" fn(*mut core::ffi::c_void) -> *mut core::ffi::c_void,
    name: &core::ffi::CStr,
) -> bool {
    #[cfg(any(miri, loom))]
    {
        let _ = (body, name);
        false
    }
    #[cfg(not(any(miri, loom)))]
    // SAFETY: `attr` is initialised before use and destroyed after; the
    // thread id is a valid out-pointer; `body` is a plain function that
    // lives for the whole program and takes no argument it reads.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setstacksize(&mut attr, 64 << 10);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut thread: libc::pthread_t = core::mem::zeroed();
        let started = libc::pthread_create(&mut thread, &attr, body, ptr::null_mut()) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if started {
            libc::pthread_setname_np(thread, name.as_ptr());
        }
        started
    }
}

/// Sleeps while `word` holds `expected`, for at most `timeout_ms`, or until
/// [`wake`] (a futex wait: it may also return early, spuriously).
pub(crate) fn wait(word: &crate::core::sync::AtomicU32, expected: u32, timeout_ms: u64) {
    #[cfg(any(miri, loom))]
    let _ = (word, expected, timeout_ms);
    #[cfg(not(any(miri, loom)))]
    {
        let timeout = libc::timespec {
            tv_sec: (timeout_ms / 1000) as libc::time_t,
            tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
        };
        // SAFETY: `word` is a live, aligned 32-bit atomic; the timeout is a
        // valid relative `timespec`; the kernel only reads both.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                &timeout as *const libc::timespec,
            )
        };
    }
}

/// Wakes a thread in [`wait`] on `word`.
pub(crate) fn wake(word: &crate::core::sync::AtomicU32) {
    #[cfg(any(miri, loom))]
    let _ = word;
    #[cfg(not(any(miri, loom)))]
    // SAFETY: `word` is a live, aligned 32-bit atomic.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
}

/// Registers `fork` handlers (prepare, parent, child).
pub(crate) fn register_fork_handlers(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) {
    #[cfg(any(miri, loom))]
    let _ = (prepare, parent, child);
    #[cfg(not(any(miri, loom)))]
    // SAFETY: the handlers are plain `extern "C"` functions that live for
    // the whole program.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}

/// Runs `f` at normal process exit (`atexit`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    #[cfg(any(miri, loom))]
    let _ = f;
    #[cfg(not(any(miri, loom)))]
    // SAFETY: `f` is a plain function that lives for the whole program.
    unsafe {
        libc::atexit(f);
    }
}

/// Reads this process's resident set size in bytes from
/// `/proc/self/statm`, without allocating. Returns 0 if unavailable.
pub fn resident_bytes() -> usize {
    #[cfg(any(miri, loom))]
    {
        0
    }
    #[cfg(not(any(miri, loom)))]
    {
        let mut buf = [0u8; 128];
        // SAFETY: the path is NUL-terminated; the fd is closed below.
        let fd = unsafe { libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return 0;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: `fd` is open.
        unsafe { libc::close(fd) };
        if n <= 0 {
            return 0;
        }
        // statm: "size resident shared ..." in pages.
        let mut fields = buf[..n as usize].split(|&b| b == b' ');
        let _size = fields.next();
        let resident = fields.next().and_then(parse_decimal).unwrap_or(0);
        resident * page_size()
    }
}

/// Parses an unsigned decimal number (no sign, no spaces).
pub(crate) fn parse_decimal(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() {
        return None;
    }
    let mut value: usize = 0;
    for &b in bytes {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)? as usize;
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    Some(value)
}

#[cfg(not(any(miri, loom)))]
mod backend {
    use super::*;

    pub(super) fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions and does not allocate.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        match usize::try_from(n) {
            Ok(n) if n >= 4096 && n.is_power_of_two() => n,
            // Not expected on Linux; the smallest page it has.
            _ => 4096,
        }
    }

    /// An anonymous read-write mapping; `accounted` ones are charged
    /// against the overcommit limit (see [`super::reserve_block`]).
    fn map(size: usize, accounted: bool) -> *mut u8 {
        let noreserve = if accounted { 0 } else { libc::MAP_NORESERVE };
        // SAFETY: an anonymous private mapping has no preconditions.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | noreserve,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            p.cast()
        }
    }

    fn unmap(base: *mut u8, size: usize) {
        if size != 0 {
            // SAFETY: callers pass ranges of their own mappings.
            unsafe { libc::munmap(base.cast(), size) };
        }
    }

    pub(super) fn reserve(size: usize, align: usize, at: usize, accounted: bool) -> *mut u8 {
        // The kernel only promises page alignment: over-reserve by
        // `align - page` and trim both ends, keeping `size` bytes.
        let Some(padded) = size.checked_add(align - page_size()) else {
            return ptr::null_mut();
        };
        let raw = map(padded, accounted);
        if raw.is_null() {
            return raw;
        }
        // `raw + at` is page aligned, so the next aligned point is at most
        // `align - page` further.
        let offset = (raw.addr() + at).next_multiple_of(align) - (raw.addr() + at);
        // SAFETY: `offset <= align - page`, so `[base, base + size)` lies
        // inside the padded mapping.
        let base = unsafe { raw.add(offset) };
        unmap(raw, offset);
        // SAFETY: as above; the tail after `base + size` is in the mapping.
        unmap(unsafe { base.add(size) }, padded - offset - size);
        base
    }

    pub(super) unsafe fn release(base: *mut u8, size: usize, _align: usize, _at: usize) {
        unmap(base, size);
    }

    pub(super) unsafe fn decommit(base: *mut u8, size: usize) {
        // MADV_DONTNEED (not MADV_FREE): the pages leave RSS at once, which
        // is what users see in `top`.
        // SAFETY: the caller guarantees the range is ours, unused and
        // whole pages.
        unsafe { libc::madvise(base.cast(), size, libc::MADV_DONTNEED) };
    }

    pub(super) unsafe fn protect(base: *mut u8, size: usize, accessible: bool) -> bool {
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: the caller guarantees whole pages of our mapping, with
        // no live data when they become inaccessible.
        unsafe { libc::mprotect(base.cast(), size, prot) == 0 }
    }

    pub(super) unsafe fn resize_in_place(base: *mut u8, old_size: usize, new_size: usize) -> bool {
        // SAFETY: without MREMAP_MAYMOVE the mapping stays where it is or
        // the call fails.
        let p = unsafe { libc::mremap(base.cast(), old_size, new_size, 0) };
        p != libc::MAP_FAILED
    }

    pub(super) unsafe fn relocate(
        old: *mut u8,
        old_size: usize,
        new_size: usize,
        align: usize,
        at: usize,
    ) -> *mut u8 {
        let target = reserve(new_size, align, at, true);
        if target.is_null() {
            return target;
        }
        // SAFETY: MREMAP_FIXED moves the old pages over our fresh target
        // reservation (replacing it) and unmaps the old range.
        let p = unsafe {
            libc::mremap(
                old.cast(),
                old_size,
                new_size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.cast::<libc::c_void>(),
            )
        };
        if p == libc::MAP_FAILED {
            unmap(target, new_size);
            return ptr::null_mut();
        }
        p.cast()
    }

    pub(super) fn random_u64() -> Option<u64> {
        let mut bytes = [0u8; 8];
        // SAFETY: `bytes` is a valid out-buffer of its length; getrandom
        // neither allocates nor, with GRND_NONBLOCK, blocks.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
        (n == 8).then(|| u64::from_ne_bytes(bytes))
    }

    pub(super) fn now_ms() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }
}

/// The fake OS for Miri and loom: regions come from the system allocator.
#[cfg(any(miri, loom))]
mod backend {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};

    /// Bigger than x86_64's 4 KiB, as on many aarch64 kernels: code that
    /// assumes 4 KiB pages fails the tests.
    const PAGE: usize = 16 << 10;

    pub(super) fn page_size() -> usize {
        PAGE
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("fake OS: bad region layout")
    }

    /// Bytes allocated before a region so that `base + at` is aligned.
    fn padding(align: usize, at: usize) -> usize {
        (align - at) % align
    }

    pub(super) fn reserve(size: usize, align: usize, at: usize, _accounted: bool) -> *mut u8 {
        let pad = padding(align, at);
        // SAFETY: the layout has non-zero size.
        let raw = unsafe { System.alloc_zeroed(layout(pad + size, align)) };
        if raw.is_null() {
            return raw;
        }
        // SAFETY: `pad` is inside the allocation; `raw + pad + at` is
        // `raw + align` (or `raw` when `at` is 0), aligned.
        unsafe { raw.add(pad) }
    }

    pub(super) unsafe fn release(base: *mut u8, size: usize, align: usize, at: usize) {
        let pad = padding(align, at);
        // SAFETY: `base` came from `reserve(size, align, at)`, `pad` bytes
        // into the system allocation.
        unsafe { System.dealloc(base.sub(pad), layout(pad + size, align)) }
    }

    pub(super) unsafe fn decommit(base: *mut u8, size: usize) {
        // `madvise` fails on a start inside a page, and rounds the length
        // up to whole pages: zero what the kernel would.
        assert!(
            base.addr() % PAGE == 0,
            "fake OS: decommit from inside a page"
        );
        // SAFETY: the caller guarantees the range is ours and unused; the
        // rounded-up end is what a real kernel would discard too.
        unsafe { ptr::write_bytes(base, 0, size.next_multiple_of(PAGE)) }
    }

    pub(super) unsafe fn protect(_base: *mut u8, _size: usize, _accessible: bool) -> bool {
        true
    }

    pub(super) unsafe fn resize_in_place(
        _base: *mut u8,
        _old_size: usize,
        _new_size: usize,
    ) -> bool {
        false
    }

    pub(super) unsafe fn relocate(
        old: *mut u8,
        old_size: usize,
        new_size: usize,
        align: usize,
        at: usize,
    ) -> *mut u8 {
        let target = reserve(new_size, align, at, true);
        if !target.is_null() {
            // SAFETY: both regions are ours and distinct.
            unsafe {
                ptr::copy_nonoverlapping(old, target, old_size.min(new_size));
                release(old, old_size, align, at);
            }
        }
        target
    }

    pub(super) fn now_ms() -> u64 {
        0
    }

    /// No OS to ask: callers take their fallback.
    pub(super) fn random_u64() -> Option<u64> {
        None
    }
}
