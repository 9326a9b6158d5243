//! Core layer: the abandoned lists — pools of exited threads, per size
//! class, from which any heap reclaims pools and whose blocks a freeing
//! thread adopts.

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::arena::Registry;
use crate::core::pool::{release_pool, Pool, ABANDONED};
use crate::core::size_class::NUM_CLASSES;
use crate::core::sync::{AtomicUsize, Ordering, RawLock};

/// Pools whose threads have exited, per class.
pub(crate) struct Abandoned {
    lock: RawLock,
    heads: UnsafeCell<[*mut Pool; NUM_CLASSES]>,
    counts: [AtomicUsize; NUM_CLASSES],
}

// SAFETY: `heads` and the pools on the lists are only touched with `lock`
// held; `counts` are atomics.
unsafe impl Sync for Abandoned {}

impl Abandoned {
    #[cfg(not(loom))]
    const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: AtomicUsize = AtomicUsize::new(0);
        Abandoned {
            lock: RawLock::new(),
            heads: UnsafeCell::new([ptr::null_mut(); NUM_CLASSES]),
            counts: [ZERO; NUM_CLASSES],
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Abandoned {
            lock: RawLock::new(),
            heads: UnsafeCell::new([ptr::null_mut(); NUM_CLASSES]),
            counts: core::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    /// The lock, for the `fork` handlers.
    pub(crate) fn lock(&self) -> &RawLock {
        &self.lock
    }

    /// Takes over a pool of a heap that is going away: returns it to the
    /// registry if empty, else lists it as abandoned.
    pub(crate) fn adopt(&self, registry: &Registry, pool: &Pool) {
        pool.collect();
        if pool.used() == 0 {
            // SAFETY: empty and in no list (its heap is dropping it).
            unsafe { release_pool(registry, pool) };
            return;
        }
        self.lock.with(|| {
            pool.owner.store(ABANDONED, Ordering::Relaxed);
            // Remote frees that raced with the store above landed in
            // `thread_free`; take them now (later ones: see `sweep`).
            pool.collect();
            if pool.used() == 0 {
                // SAFETY: empty, unlisted; frees of its blocks are over.
                unsafe { release_pool(registry, pool) };
            } else {
                // SAFETY: we hold the lock.
                unsafe { self.push(pool) };
            }
        });
    }

    /// Hands abandoned `pool` to heap `owner` if it is still abandoned;
    /// returns false if another thread claimed it first.
    pub(crate) fn claim(&self, pool: &Pool, owner: usize) -> bool {
        self.lock.with(|| {
            if pool.owner.load(Ordering::Relaxed) != ABANDONED {
                return false;
            }
            // SAFETY: we hold the lock and the pool is listed.
            unsafe { self.unlink(pool) };
            pool.owner.store(owner, Ordering::Relaxed);
            true
        })
    }

    /// Hands an abandoned pool of `class` to heap `owner`, if there is one.
    pub(crate) fn reclaim(&self, class: usize, owner: usize) -> Option<*mut Pool> {
        if self.counts[class].load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lock.with(|| {
            // SAFETY: we hold the lock.
            let head = unsafe { (*self.heads.get())[class] };
            if head.is_null() {
                return None;
            }
            // SAFETY: listed pools are live; we hold the lock.
            unsafe {
                self.unlink(&*head);
                (*head).owner.store(owner, Ordering::Relaxed);
            }
            Some(head)
        })
    }

    /// Collects remote frees into every abandoned pool and returns the
    /// pools that became empty to the registry.
    pub(crate) fn sweep(&self, registry: &Registry) {
        if self.counts.iter().all(|c| c.load(Ordering::Relaxed) == 0) {
            return;
        }
        self.lock.with(|| {
            for class in 0..NUM_CLASSES {
                // SAFETY: we hold the lock.
                let mut pool = unsafe { (*self.heads.get())[class] };
                while !pool.is_null() {
                    // SAFETY: listed pools are live; we hold the lock.
                    let p = unsafe { &*pool };
                    pool = p.next.get();
                    p.collect();
                    if p.used() == 0 {
                        // SAFETY: empty and listed; we hold the lock.
                        unsafe {
                            self.unlink(p);
                            release_pool(registry, p);
                        }
                    }
                }
            }
        });
    }

    /// Visits every abandoned pool (lock held), for stats.
    pub(crate) fn count(&self) -> usize {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// # Safety
    /// The lock must be held and `pool` in no list.
    unsafe fn push(&self, pool: &Pool) {
        let class = pool.class as usize;
        // SAFETY: lock held (caller).
        let heads = unsafe { &mut *self.heads.get() };
        let head = heads[class];
        pool.prev.set(ptr::null_mut());
        pool.next.set(head);
        if !head.is_null() {
            // SAFETY: listed pools are live.
            unsafe { (*head).prev.set(pool as *const Pool as *mut Pool) };
        }
        heads[class] = pool as *const Pool as *mut Pool;
        self.counts[class].fetch_add(1, Ordering::Relaxed);
    }

    /// # Safety
    /// The lock must be held and `pool` on its class list.
    unsafe fn unlink(&self, pool: &Pool) {
        let class = pool.class as usize;
        // SAFETY: lock held (caller).
        let heads = unsafe { &mut *self.heads.get() };
        let (prev, next) = (pool.prev.get(), pool.next.get());
        if prev.is_null() {
            heads[class] = next;
        } else {
            // SAFETY: listed pools are live.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: listed pools are live.
            unsafe { (*next).prev.set(prev) };
        }
        self.counts[class].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The process-wide abandoned lists.
#[cfg(not(loom))]
pub(crate) fn abandoned() -> &'static Abandoned {
    static ABANDONED_POOLS: Abandoned = Abandoned::new();
    &ABANDONED_POOLS
}

/// The abandoned lists of the current loom execution.
#[cfg(loom)]
pub(crate) fn abandoned() -> &'static Abandoned {
    loom::lazy_static! {
        static ref ABANDONED_POOLS: Abandoned = Abandoned::new();
    }
    &ABANDONED_POOLS
}
