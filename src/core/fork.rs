//! Core layer: `fork`.
//!
//! `fork` safety: the child of a multi-threaded program must find every
//! allocator lock free. Before `fork`, the forking thread takes every lock
//! (in the one order used everywhere: the thread store, abandoned lists,
//! arena registry, large-mapping cache); after it, the parent and the child each release them. Heaps
//! of threads that do not exist in the child keep their pools, which the
//! child never frees (as with every thread-caching allocator).

/// Registers the handlers (once per process, from `init`: `pthread_atfork`
/// must never be called inside `malloc`).
pub(crate) fn register() {
    crate::core::os::register_fork_handlers(prepare, release, child);
}

pub(crate) extern "C" fn prepare() {
    crate::core::thread_store::store().lock_all();
    crate::core::abandoned::abandoned().lock().lock();
    crate::core::arena::registry().lock().lock();
    crate::core::large_cache::cache().lock().lock();
}

/// In the child: the locks, and the purge thread, which `fork` does not
/// copy (the child's second heap starts one again).
extern "C" fn child() {
    release();
    crate::core::purge_thread::forget_after_fork();
}

pub(crate) extern "C" fn release() {
    crate::core::large_cache::cache().lock().unlock();
    crate::core::arena::registry().lock().unlock();
    crate::core::abandoned::abandoned().lock().unlock();
    crate::core::thread_store::store().unlock_all();
}
