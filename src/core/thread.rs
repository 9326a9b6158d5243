//! Core layer: the thread heap — the calling thread's [`Heap`] and
//! [`Counters`] in one record (`thread_store`'s, reached through the TLS
//! slot of `tls`; a `const`-initialised thread-local on targets without
//! the slot), how the heap starts (id, exit destructor, listed counters)
//! and how it ends.
//!
//! A heap starts (gets its id, registers the exit destructor, lists its
//! counters) on its thread's first slow path, outside any `&mut Heap`:
//! registering may call `calloc`, which re-enters the allocator.

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::counters::{live_counters, Counters};
use crate::core::heap::{self, Freed, Heap};
use crate::core::os;
use crate::core::pool::Pool;
use crate::core::sync::Ordering;
use crate::core::thread_store::{self, RECORD_ALIGN, RECORD_SIZE};
use crate::core::tls;

/// A thread's allocator state: its heap, and its counters beside it (not
/// inside it, so that other threads may read the counters while the owner
/// holds `&mut Heap`). `repr(C)`, heap first: the pointer to the thread's
/// state is then the heap's, which the free fast path would otherwise
/// compute for its cold calls alone.
#[repr(C)]
struct ThreadHeap {
    heap: UnsafeCell<Heap>,
    counters: Counters,
}

impl ThreadHeap {
    const fn new() -> Self {
        ThreadHeap {
            heap: UnsafeCell::new(Heap::new()),
            counters: Counters::new(),
        }
    }
}

// A thread's state fits a record of the store.
const _: () = assert!(
    core::mem::size_of::<ThreadHeap>() <= RECORD_SIZE
        && core::mem::align_of::<ThreadHeap>() <= RECORD_ALIGN
);

/// The slot's value once the thread's exit destructor has given its
/// record back: later calls use the store's shared record.
const EXITED: usize = 1;

#[cfg(all(
    not(loom),
    not(all(target_arch = "x86_64", target_os = "linux", not(miri)))
))]
std::thread_local! {
    static HEAP: ThreadHeap = const { ThreadHeap::new() };
}

#[cfg(loom)]
loom::thread_local! {
    static HEAP: ThreadHeap = ThreadHeap::new();
}

/// The calling thread's state where there is no TLS slot.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom)))))]
#[inline(always)]
fn local_state() -> *const ThreadHeap {
    HEAP.with(|t| t as *const ThreadHeap)
}

/// Where the slot exists, the state is in a record and there is no
/// thread-local to return: never called ([`tls::ENABLED`] is true).
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom))))]
#[inline(always)]
fn local_state() -> *const ThreadHeap {
    ptr::null()
}

/// The calling thread's state, for the fast paths: in slot builds, null
/// before the thread's first slow path and [`EXITED`] after its exit, both
/// of which fail the one test `is_state` and take the slow path.
#[inline(always)]
fn state_or_none() -> *const ThreadHeap {
    if tls::ENABLED {
        tls::get().cast::<ThreadHeap>().cast_const()
    } else {
        local_state()
    }
}

/// Whether [`state_or_none`] gave a state.
#[inline(always)]
fn is_state(t: *const ThreadHeap) -> bool {
    t.addr() > EXITED
}

/// Allocates a block of `class` from the calling thread's heap (null when
/// out of memory), and says whether the thread counts its allocations.
#[inline(always)]
pub(crate) fn alloc(class: usize) -> (*mut u8, bool) {
    let (p, counting) = with_counted_heap(|heap, c| (heap.alloc(class), c.enabled()));
    if p.is_null() {
        return alloc_unstarted(class);
    }
    (p, counting)
}

/// `malloc`'s fast path: a block for a request of `size <= DIRECT_MAX`
/// bytes aligned to at most 16, popped from the head pool the heap's
/// direct table gives for `size`; or null when the request needs the slow
/// path ([`alloc`]): the thread's first call, counting on, or an empty
/// `free` list. Calls nothing, so the caller's fast path needs no stack
/// frame.
#[inline(always)]
pub(crate) fn alloc_direct(size: usize) -> *mut u8 {
    let t = state_or_none();
    if !is_state(t) {
        return ptr::null_mut();
    }
    // SAFETY: `t` is the calling thread's, live while the thread runs; the
    // heap is not re-entered (see `with_counted_heap`).
    unsafe {
        if (*t).counters.enabled() {
            return ptr::null_mut();
        }
        (*(*t).heap.get()).pop_direct(size)
    }
}

/// [`alloc`] after a null: starts the heap if it had not started, and
/// tries again (else the null means out of memory).
#[cold]
#[inline(never)]
fn alloc_unstarted(class: usize) -> (*mut u8, bool) {
    if !start_thread() {
        return (ptr::null_mut(), false);
    }
    with_counted_heap(|heap, c| (heap.alloc(class), c.enabled()))
}

/// Frees small block `p` through the calling thread's heap, counting it
/// first if the thread counts (`bytes` gives its size, only read then).
///
/// Every path off the fast one is a tail call (a thread's first call,
/// counting on, the heap's own cold paths), so the fast path keeps no
/// value across a call and saves no register (with the TLS-descriptor
/// model, its one call is the resolver).
///
/// # Safety
/// `p` must be a live small block of this allocator.
#[inline(always)]
pub(crate) unsafe fn free_counted(p: *mut u8, bytes: impl FnOnce() -> usize) {
    // Straight-line rather than through `with_counted_heap`: LLVM keeps
    // that closure out of line here, and the free fast path is a few
    // instructions.
    let t = state_or_none();
    if !is_state(t) {
        // SAFETY: forwarded contract.
        return unsafe { free_first(p, bytes) };
    }
    // SAFETY: the calling thread's state, live while it runs.
    let key = unsafe { &(*t).counters }.free_key();
    // One compare of the pool's owner with the key finds the owner's
    // free; a remote free, counting, or a heap not started yet take the
    // slow path.
    // SAFETY: as in `with_counted_heap`: nothing else borrows the heap
    // while this runs; `p` is a live small block (caller).
    if let Freed::NotKey(pool) = unsafe { (*(*t).heap.get()).free_keyed(p, key) } {
        // SAFETY: forwarded contract; `p` is a checked block of `pool`,
        // not freed yet.
        unsafe { free_not_key(t, pool, p, bytes) };
    }
}

/// [`free_counted`] on a thread's first call (its TLS slot not yet
/// filled) or after its exit: out of line, whole.
///
/// # Safety
/// As for [`free_counted`].
#[cold]
#[inline(never)]
unsafe fn free_first(p: *mut u8, bytes: impl FnOnce() -> usize) {
    with_thread_counters(|counters| {
        if counters.enabled() {
            count_free_of(counters, p, bytes);
        }
    });
    // SAFETY: forwarded contract.
    if with_heap(|heap| unsafe { heap.free(p) }) {
        start_thread();
    }
}

/// [`free_counted`] of a block whose pool's owner is not the free key
/// (`t`'s): another thread's block, or the thread counts, or its heap has
/// not started. Out of line.
///
/// # Safety
/// As for [`free_counted`]; `t` is the calling thread's state, and `p`
/// passed [`Heap::free_keyed`]'s checks, which found its pool `pool`.
#[inline(never)]
unsafe fn free_not_key(
    t: *const ThreadHeap,
    pool: *const Pool,
    p: *mut u8,
    bytes: impl FnOnce() -> usize,
) {
    // SAFETY: the calling thread's state (caller).
    let counters = unsafe { &(*t).counters };
    if counters.enabled() {
        // Before the free, as `count_free` requires; counting a free never
        // allocates, so it may run before the heap is borrowed.
        count_free_of(counters, p, bytes);
    }
    // SAFETY: as in `free_counted`; `p` is a checked block of the live
    // `pool` (caller).
    if unsafe { (*(*t).heap.get()).free_not_key(&*pool, p) } {
        start_thread();
    }
}

/// The counting part of the free paths, out of line.
#[cold]
#[inline(never)]
fn count_free_of(counters: &Counters, p: *mut u8, bytes: impl FnOnce() -> usize) {
    counters.count_free(p, bytes());
}

/// Starts the calling thread's heap if it has not started: gives it an id,
/// then registers the thread-exit destructor and lists the thread's
/// counters. Returns whether it started the heap now.
///
/// Runs with no `&mut Heap` alive: `pthread_setspecific` may `calloc`,
/// and that allocation re-enters the allocator, which finds the heap
/// already started.
#[cold]
#[inline(never)]
pub(crate) fn start_thread() -> bool {
    let starting = with_heap(|heap| {
        if heap.id != 0 {
            return None;
        }
        heap.id = heap::NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed);
        Some(heap.id)
    });
    let Some(id) = starting else {
        return false;
    };
    with_thread_counters(|c| c.set_heap_id(id));
    crate::core::init::ensure();
    // A second heap: the program runs threads, which may go idle holding
    // freed memory. (Heap ids are process-wide, not per loom execution, so
    // loom, which starts no OS thread anyway, skips this.)
    if id >= 2 && !cfg!(loom) {
        crate::core::purge::start_thread();
    }
    // Counters are listed only if the exit destructor will unlist them
    // (never under Miri and loom, which have no thread-exit key).
    if register_exit() {
        let slot = live_counters().claim(thread_counters());
        with_heap(|heap| heap.counters_slot = slot);
    }
    true
}

/// The key whose destructor abandons a thread's heap.
static THREAD_EXIT: os::ThreadExitKey = os::ThreadExitKey::new();

/// Creates the thread-exit key (at process start, so that it is one of the
/// first keys: `pthread_setspecific` allocates for keys past the first 32).
#[cfg_attr(any(miri, loom), allow(dead_code))]
pub(crate) fn create_exit_key() {
    THREAD_EXIT.create(on_thread_exit);
}

/// Arranges for [`on_thread_exit`] to run when the calling thread exits;
/// returns false if it cannot.
fn register_exit() -> bool {
    let heap = thread_state();
    #[cfg(test)]
    if tests::NO_EXIT_KEY.load(Ordering::Relaxed) {
        return register_exit_fallback();
    }
    THREAD_EXIT.set(heap.cast_mut().cast(), on_thread_exit) || register_exit_fallback()
}

/// When the OS has no `pthread` key left (or no memory for its value), a
/// `thread_local!` destructor runs [`on_thread_exit`] instead (it registers
/// through `__cxa_thread_atexit_impl`, which may `calloc`: fine here, no
/// heap is borrowed).
#[cfg(not(any(miri, loom)))]
fn register_exit_fallback() -> bool {
    struct ExitGuard;
    impl Drop for ExitGuard {
        fn drop(&mut self) {
            // SAFETY: the thread is exiting; the destructor ignores its argument.
            unsafe { on_thread_exit(ptr::null_mut()) }
        }
    }
    std::thread_local! {
        static EXIT_GUARD: ExitGuard = const { ExitGuard };
    }
    EXIT_GUARD.try_with(|_| ()).is_ok()
}

#[cfg(any(miri, loom))]
fn register_exit_fallback() -> bool {
    false
}

/// Runs `f` on the calling thread's heap.
#[inline(always)]
pub(crate) fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R) -> R {
    with_counted_heap(|heap, _| f(heap))
}

/// Runs `f` on the calling thread's heap and counters.
#[inline(always)]
pub(crate) fn with_counted_heap<R>(f: impl FnOnce(&mut Heap, &Counters) -> R) -> R {
    let t = state_or_none();
    if !is_state(t) {
        return with_shared_heap(f);
    }
    // SAFETY: `t` is the calling thread's, live while the thread runs; the
    // heap is only reached through this function, which is not re-entered
    // while `f` runs (the allocator never allocates inside itself), so the
    // `&mut` is unique.
    unsafe { f(&mut *(*t).heap.get(), &(*t).counters) }
}

/// [`with_counted_heap`] of a thread with no record in its slot: on its
/// first call, claims one; after its exit, or when no record can be
/// mapped, runs `f` on the store's shared record, under its lock.
#[cold]
#[inline(never)]
fn with_shared_heap<R>(f: impl FnOnce(&mut Heap, &Counters) -> R) -> R {
    let t = claim_if_first();
    if !t.is_null() {
        // SAFETY: as in `with_counted_heap`.
        return unsafe { f(&mut *(*t).heap.get(), &(*t).counters) };
    }
    thread_store::store().with_shared(init_shared_state, |record| {
        let t = record.cast::<ThreadHeap>();
        // SAFETY: the shared record holds a state (`init_shared_state`);
        // its lock, held, makes the `&mut` unique.
        unsafe { f(&mut *(*t).heap.get(), &(*t).counters) }
    })
}

/// The calling thread's state, claiming its record on its first call; for
/// what touches only the counters (atomics) and the state's address: after
/// the thread's exit it is the shared record, whose heap needs the lock
/// ([`with_counted_heap`]).
#[inline(always)]
fn thread_state() -> *const ThreadHeap {
    let t = state_or_none();
    if is_state(t) {
        return t;
    }
    thread_state_off_slot()
}

/// [`thread_state`] of a thread with no record in its slot.
#[cold]
#[inline(never)]
fn thread_state_off_slot() -> *const ThreadHeap {
    let t = claim_if_first();
    if !t.is_null() {
        return t;
    }
    thread_store::store()
        .shared(init_shared_state)
        .cast::<ThreadHeap>()
}

/// On the calling thread's first call (its slot null), claims a record
/// for its state, fills it and puts it in the slot. Null after the
/// thread's exit, or when the OS has no memory for a record.
fn claim_if_first() -> *const ThreadHeap {
    if !tls::get().is_null() {
        return ptr::null();
    }
    let t = thread_store::store().claim().cast::<ThreadHeap>();
    if !t.is_null() {
        // SAFETY: a claimed record is ours alone and large and aligned
        // enough (checked at compile time).
        unsafe { t.write(ThreadHeap::new()) };
        tls::set(t.cast());
    }
    t
}

/// Fills the shared record: a heap that is started (it has an id) and
/// exiting from the start, so it never keeps a pool between calls
/// (`Heap::alloc_after_exit`), and whose counters are never listed.
fn init_shared_state(record: *mut u8) {
    let t = record.cast::<ThreadHeap>();
    let id = heap::NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the shared record, large and aligned enough, with its lock
    // held (`ThreadStore::with_shared`).
    unsafe {
        t.write(ThreadHeap::new());
        let heap = &mut *(*t).heap.get();
        heap.id = id;
        heap.exit();
        (*t).counters.set_heap_id(id);
    }
}

/// Gives the calling thread's record back to the store, once its exit
/// destructor has emptied it; the slot then says [`EXITED`].
fn release_state() {
    let t = tls::get();
    if t.addr() > EXITED {
        tls::set(ptr::without_provenance_mut(EXITED));
        // SAFETY: the thread's record: its heap gave every pool back and
        // its counters are unlisted, and the slot no longer leads to it.
        unsafe { thread_store::store().release(t) };
    }
}

/// The calling thread's counters (for `profile`, outside the allocator).
#[inline(always)]
pub(crate) fn with_thread_counters<R>(f: impl FnOnce(&Counters) -> R) -> R {
    // SAFETY: the calling thread's, live while it runs; counters are only
    // read and written through atomics.
    f(unsafe { &(*thread_state()).counters })
}

/// The calling thread's counters, for the live-counters table. The pointer
/// stays valid until the thread's exit destructor has unlisted it (it then
/// gives the record back).
fn thread_counters() -> *const Counters {
    with_thread_counters(|c| c as *const Counters)
}

/// Whether allocations and frees are being counted (a `profile::Counting`
/// or `profile::Scope` is alive).
pub(crate) fn counting() -> bool {
    live_counters().reasons() != 0
}

/// Adds a reason to count (`profile::Counting`, `profile::Scope`).
pub(crate) fn start_counting() {
    with_thread_counters(|own| live_counters().add_reason(1, own));
}

/// Removes a reason to count, added by [`start_counting`].
pub(crate) fn stop_counting() {
    with_thread_counters(|own| live_counters().add_reason(-1, own));
}

/// Counts the block at `ptr`, of `bytes`, allocated by the calling thread
/// (which is counting). Runs outside any `&mut Heap`: a sample may unwind
/// the stack, and the unwinder may allocate.
#[inline(never)]
pub(crate) fn count_alloc(ptr: *mut u8, bytes: usize) {
    with_thread_counters(|c| c.count_alloc(ptr, bytes));
}

/// Counts the block at `ptr` freed by the calling thread, if it is
/// counting; `bytes` gives its size (only read then). Call it before the
/// block is freed: a sampled block leaves the live table before another
/// thread can get its address again.
#[inline(always)]
pub(crate) fn count_free(ptr: *mut u8, bytes: impl FnOnce() -> usize) {
    if with_thread_counters(|c| c.enabled()) {
        let bytes = bytes();
        with_thread_counters(|c| c.count_free(ptr, bytes));
    }
}

/// Counts the large block at `ptr`, of `bytes` usable bytes, allocated by
/// the calling thread, if it is counting.
pub(crate) fn count_large_alloc(ptr: *mut u8, bytes: usize) {
    start_thread_if_new();
    if with_thread_counters(|c| c.enabled()) {
        count_alloc(ptr, bytes);
    }
}

/// Starts the heap of a thread whose first act is a large allocation or
/// free (those paths count into the thread's counters without the heap).
#[inline(always)]
fn start_thread_if_new() {
    if with_heap(|heap| heap.id == 0) {
        start_thread();
    }
}

/// Counts the large block at `ptr`, of `bytes` usable bytes, freed by the
/// calling thread, if it is counting (call it before the block is
/// unmapped: only its address is used).
pub(crate) fn count_large_free(ptr: *mut u8, bytes: usize) {
    start_thread_if_new();
    count_free(ptr, || bytes);
}

/// The `pthread` key destructor: the thread is exiting.
unsafe extern "C" fn on_thread_exit(_heap: *mut core::ffi::c_void) {
    with_counted_heap(|heap, counters| {
        heap.exit();
        heap.retire_counters(counters);
    });
    if tls::ENABLED {
        release_state();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes [`register_exit`] behave as if the OS had no `pthread` key left.
    pub(super) static NO_EXIT_KEY: core::sync::atomic::AtomicBool =
        core::sync::atomic::AtomicBool::new(false);

    /// Without a `pthread` key, the `thread_local!` fallback still abandons
    /// an exiting thread's heap: its pool with a live block is listed as
    /// abandoned, not left owned by a dead thread.
    #[test]
    #[cfg(not(any(miri, loom)))]
    fn heaps_are_abandoned_when_no_exit_key_is_left() {
        use crate::core::arena;
        use crate::core::pool::{Pool, ABANDONED};
        struct Block(*mut u8);
        // SAFETY: the block is only handed from the exiting thread to us.
        unsafe impl Send for Block {}
        let class = crate::core::size_class::class_for(48, 8).unwrap();
        NO_EXIT_KEY.store(true, Ordering::Relaxed);
        let block = std::thread::spawn(move || Block(alloc(class).0))
            .join()
            .unwrap();
        NO_EXIT_KEY.store(false, Ordering::Relaxed);
        assert!(!block.0.is_null());
        // SAFETY: a live small block: its pool record is initialised.
        let pool = unsafe { &*arena::pool_meta_of(block.0).cast::<Pool>() };
        assert_eq!(pool.owner.load(Ordering::Relaxed), ABANDONED);
        // SAFETY: live, freed once.
        unsafe { free_counted(block.0, || 48) };
    }
}
