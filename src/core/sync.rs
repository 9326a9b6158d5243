//! Core layer: synchronisation.
//!
//! Synchronisation primitives, in one place so that loom can replace them.
//!
//! Under `cfg(loom)` the atomics come from `loom`, which explores every
//! interleaving the memory model allows; otherwise from `core`. Code in this
//! crate never names `core::sync::atomic` directly: it uses this module, so a
//! loom model exercises the real allocator code.
//!
//! [`RawLock`] is the allocator's only lock: a test-and-test-and-set spin
//! lock with backoff. It is used on slow paths only (arena bookkeeping,
//! abandoned pools), is const-constructible, never allocates, and — unlike a
//! `std::sync::Mutex` guard — can be taken in a `pthread_atfork` prepare
//! handler and released in the parent and the child.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
};

/// Only the sampling profiler's live table uses 16-bit counters.
#[cfg(all(loom, feature = "sampling"))]
pub(crate) use loom::sync::atomic::AtomicU16;

#[cfg(all(not(loom), feature = "sampling"))]
pub(crate) use core::sync::atomic::AtomicU16;

pub(crate) use core::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use crossbeam_utils::Backoff;

/// A spin lock for short critical sections on slow paths.
pub(crate) struct RawLock {
    locked: AtomicBool,
}

impl RawLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        RawLock {
            locked: AtomicBool::new(false),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        RawLock {
            locked: AtomicBool::new(false),
        }
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    pub(crate) fn lock(&self) {
        #[cfg(not(loom))]
        let backoff = Backoff::new();
        loop {
            // Acquire pairs with the Release in `unlock`: everything the
            // previous holder wrote is visible to us.
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            while self.locked.load(Ordering::Relaxed) {
                #[cfg(not(loom))]
                backoff.snooze();
                #[cfg(loom)]
                loom::thread::yield_now();
            }
        }
    }

    /// Releases the lock. Only the holder calls this (or the child of a fork
    /// whose parent held it).
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Runs `f` with the lock held.
    pub(crate) fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        self.lock();
        let result = f();
        self.unlock();
        result
    }
}
