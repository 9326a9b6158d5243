//! Per-thread heaps: the allocation and free fast paths, and the life of a
//! pool between threads.
//!
//! Each thread owns a heap: for every size class, a queue of pools whose
//! head is the pool it allocates from. `alloc` pops the head pool's `free`
//! list; `free` finds the block's pool by masking the pointer and, if this
//! thread owns it, pushes to `local_free` — no atomics, no locks on either
//! fast path. Frees from other threads push onto the pool's atomic
//! `thread_free` stack.
//!
//! A pool that becomes empty goes back to the arena registry unless it is
//! the pool its class allocates from (so a churning thread keeps it hot). When a
//! thread exits, a `pthread` key destructor abandons its heap: empty pools
//! go back to the registry, the others to the abandoned lists, from which
//! any thread needing a pool of that class reclaims them. Frees into an
//! abandoned pool are done under the abandoned-list lock by the freeing
//! thread itself, which returns the pool to the registry once it is empty:
//! no memory is stranded by dead threads.

use core::cell::UnsafeCell;
use core::ptr;

use crate::arena::{self, registry, Registry};
use crate::os;
use crate::pool::{Block, Pool, ABANDONED};
use crate::size_class::{pool_slots, NUM_CLASSES};
use crate::sync::{AtomicUsize, Ordering, RawLock};

/// How many pools of a class the allocation slow path inspects before
/// taking a new one: bounds the slow path while still finding pools
/// refilled by remote frees.
const SCAN_LIMIT: u32 = 8;

/// Heap ids: 0 means "not initialised", `ABANDONED` is reserved.
static NEXT_HEAP_ID: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);

#[derive(Clone, Copy)]
struct Queue {
    head: *mut Pool,
    tail: *mut Pool,
    len: u32,
}

const EMPTY_QUEUE: Queue = Queue {
    head: ptr::null_mut(),
    tail: ptr::null_mut(),
    len: 0,
};

/// A thread's heap.
pub(crate) struct Heap {
    /// Owner id written into this heap's pools (0 until first use).
    id: usize,
    /// Pools per size class; the head is allocated from.
    queues: [Queue; NUM_CLASSES],
}

impl Heap {
    pub(crate) const fn new() -> Self {
        Heap {
            id: 0,
            queues: [EMPTY_QUEUE; NUM_CLASSES],
        }
    }

    /// Allocates a block of `class`, or returns null when out of memory.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, class: usize) -> *mut u8 {
        let pool = self.queues[class].head;
        if !pool.is_null() {
            // SAFETY: pools in our queues are live and owned by us.
            let block = unsafe { (*pool).pop() };
            if !block.is_null() {
                return block.cast();
            }
        }
        self.alloc_slow(class)
    }

    /// Frees block `p` of any thread's pool.
    ///
    /// # Safety
    /// `p` must be a live small block of this allocator.
    #[inline(always)]
    pub(crate) unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: `p` is a live small block, so its arena and pool are live.
        let pool = unsafe { &*arena::pool_meta_of(p).cast::<Pool>() };
        if cfg!(debug_assertions) {
            check_free(pool, p, self.id);
        }
        if pool.owner.load(Ordering::Relaxed) == self.id {
            // SAFETY: we own the pool and the block is live (caller).
            if unsafe { pool.push_local(p.cast()) } {
                self.pool_emptied(pool);
            }
        } else {
            // SAFETY: forwarded contract.
            unsafe { free_remote(pool, p.cast()) };
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&mut self, class: usize) -> *mut u8 {
        if self.id == 0 {
            self.init();
        }
        crate::purge::maybe_purge();
        let registry = registry();
        if let Some(block) = self.alloc_from_queue(class) {
            return block;
        }
        loop {
            let pool = match abandoned().reclaim(class, self.id) {
                Some(pool) => pool,
                None => {
                    let Some(run) = registry.acquire(pool_slots(class)) else {
                        return ptr::null_mut();
                    };
                    // SAFETY: a fresh run from the registry.
                    unsafe { Pool::init(&run, class, self.id) }
                }
            };
            // SAFETY: the pool is live and now ours.
            let p = unsafe { &*pool };
            p.collect();
            if p.free.get().is_null() {
                p.carve();
            }
            let block = p.pop();
            if block.is_null() {
                // A reclaimed pool that is still full: keep it for later.
                self.push_back(class, pool);
            } else {
                self.push_front(class, pool);
                return block.cast();
            }
        }
    }

    /// Looks through the class queue for a pool with a free block,
    /// refilling lists on the way; full pools rotate to the back.
    fn alloc_from_queue(&mut self, class: usize) -> Option<*mut u8> {
        let mut pool = self.queues[class].head;
        let mut budget = SCAN_LIMIT.min(self.queues[class].len);
        while budget > 0 && !pool.is_null() {
            // SAFETY: pools in our queues are live and owned by us.
            let p = unsafe { &*pool };
            let next = p.next.get();
            p.collect();
            if p.free.get().is_null() {
                p.carve();
            }
            if !p.free.get().is_null() {
                self.unlink(class, pool);
                self.push_front(class, pool);
                return Some(p.pop().cast());
            }
            self.unlink(class, pool);
            self.push_back(class, pool);
            pool = next;
            budget -= 1;
        }
        None
    }

    /// A pool of ours has no live block: give it back unless it is the one
    /// the class allocates from (so a thread churning around a pool
    /// boundary does not fetch and return a pool on every call).
    fn pool_emptied(&mut self, pool: &Pool) {
        let class = pool.class as usize;
        let raw = pool as *const Pool as *mut Pool;
        if self.queues[class].head != raw {
            self.unlink(class, raw);
            // SAFETY: the pool is empty and unlinked: nobody uses it.
            unsafe { release_pool(registry(), pool) };
        }
    }

    fn init(&mut self) {
        self.id = NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed);
        crate::config::init();
        crate::fork::register_once();
        self.register_exit();
    }

    fn register_exit(&mut self) {
        static THREAD_EXIT: os::ThreadExitKey = os::ThreadExitKey::new();
        THREAD_EXIT.set((self as *mut Heap).cast(), on_thread_exit);
    }

    fn push_front(&mut self, class: usize, pool: *mut Pool) {
        let q = &mut self.queues[class];
        // SAFETY: `pool` and the queue's pools are live and ours.
        unsafe {
            (*pool).prev.set(ptr::null_mut());
            (*pool).next.set(q.head);
            if q.head.is_null() {
                q.tail = pool;
            } else {
                (*q.head).prev.set(pool);
            }
        }
        q.head = pool;
        q.len += 1;
    }

    fn push_back(&mut self, class: usize, pool: *mut Pool) {
        let q = &mut self.queues[class];
        // SAFETY: `pool` and the queue's pools are live and ours.
        unsafe {
            (*pool).next.set(ptr::null_mut());
            (*pool).prev.set(q.tail);
            if q.tail.is_null() {
                q.head = pool;
            } else {
                (*q.tail).next.set(pool);
            }
        }
        q.tail = pool;
        q.len += 1;
    }

    fn unlink(&mut self, class: usize, pool: *mut Pool) {
        let q = &mut self.queues[class];
        // SAFETY: `pool` is in this queue; its neighbours are live and ours.
        unsafe {
            let (prev, next) = ((*pool).prev.get(), (*pool).next.get());
            if prev.is_null() {
                q.head = next;
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                q.tail = prev;
            } else {
                (*next).prev.set(prev);
            }
        }
        q.len -= 1;
    }

    /// Gives every pool back: empty ones to the registry, the rest to the
    /// abandoned lists. The heap stays usable (it starts over empty).
    pub(crate) fn abandon(&mut self) {
        let registry = registry();
        for class in 0..NUM_CLASSES {
            let mut pool = self.queues[class].head;
            while !pool.is_null() {
                // SAFETY: pools in our queues are live and ours.
                let p = unsafe { &*pool };
                let next = p.next.get();
                abandoned().adopt(registry, p);
                pool = next;
            }
            self.queues[class] = EMPTY_QUEUE;
        }
        abandoned().sweep(registry);
        crate::purge::maybe_purge();
        // Allocations by later thread-exit code start a fresh heap, which
        // registers for the next round of key destructors.
        self.id = 0;
    }

    /// Returns this heap's empty pools to the registry (even the one kept
    /// hot per class).
    pub(crate) fn release_empty_pools(&mut self) {
        let registry = registry();
        for class in 0..NUM_CLASSES {
            let mut pool = self.queues[class].head;
            while !pool.is_null() {
                // SAFETY: pools in our queues are live and ours.
                let p = unsafe { &*pool };
                let next = p.next.get();
                p.collect();
                if p.used() == 0 {
                    self.unlink(class, pool);
                    // SAFETY: empty and unlinked.
                    unsafe { release_pool(registry, p) };
                }
                pool = next;
            }
        }
    }
}

/// Gives an empty pool's slots back to the registry.
///
/// # Safety
/// The pool must hold no live block and be in no list.
unsafe fn release_pool(registry: &Registry, pool: &Pool) {
    debug_assert_eq!(pool.used(), 0);
    let run = pool.slot_run();
    // SAFETY: forwarded contract; the pool record is not used afterwards.
    unsafe { registry.release(run) };
}

/// Frees a block of a pool owned by another (or no) thread.
///
/// # Safety
/// `block` must be a live block of `pool`.
unsafe fn free_remote(pool: &Pool, block: *mut Block) {
    if pool.owner.load(Ordering::Relaxed) == ABANDONED {
        // SAFETY: forwarded contract.
        if unsafe { abandoned().free_into(pool, block) } {
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { pool.push_thread_free(block) };
}

/// Debug-build check of a pointer about to be freed: it must be the start
/// of a carved block, and not among the most recently freed blocks of the
/// pool's local lists (a bounded look, so debug builds stay usable).
fn check_free(pool: &Pool, p: *mut u8, heap_id: usize) {
    const LOOK: usize = 64;
    if !pool.is_block_start(p) {
        crate::report::abort_with_pointer(b"free of a pointer that is not a block start: ", p);
    }
    if pool.owner.load(Ordering::Relaxed) == heap_id {
        for list in [pool.free.get(), pool.local_free.get()] {
            let mut block = list;
            for _ in 0..LOOK {
                if block.is_null() {
                    break;
                }
                if block.cast::<u8>() == p {
                    crate::report::abort_with_pointer(b"double free of ", p);
                }
                // SAFETY: blocks on our own lists are free blocks of the pool.
                block = unsafe { (*block).next };
            }
        }
    }
}

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
    fn new() -> Self {
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
    fn adopt(&self, registry: &Registry, pool: &Pool) {
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

    /// Frees `block` into `pool` if the pool is (still) abandoned; returns
    /// false if a thread reclaimed it meanwhile (the caller then frees it
    /// as a remote block).
    ///
    /// # Safety
    /// `block` must be a live block of `pool`.
    unsafe fn free_into(&self, pool: &Pool, block: *mut Block) -> bool {
        let registry = registry();
        self.lock.with(|| {
            if pool.owner.load(Ordering::Relaxed) != ABANDONED {
                return false;
            }
            pool.collect();
            // SAFETY: with the lock held we act as the pool's owner.
            if unsafe { pool.push_local(block) } {
                // SAFETY: we hold the lock; the pool is listed.
                unsafe {
                    self.unlink(pool);
                    release_pool(registry, pool);
                }
            }
            true
        })
    }

    /// Hands an abandoned pool of `class` to heap `owner`, if there is one.
    fn reclaim(&self, class: usize, owner: usize) -> Option<*mut Pool> {
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

#[cfg(not(loom))]
std::thread_local! {
    static HEAP: UnsafeCell<Heap> = const { UnsafeCell::new(Heap::new()) };
}

#[cfg(loom)]
loom::thread_local! {
    static HEAP: UnsafeCell<Heap> = UnsafeCell::new(Heap::new());
}

/// Runs `f` on the calling thread's heap.
#[inline(always)]
pub(crate) fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R) -> R {
    // SAFETY: the heap is only reached through this function, which is not
    // re-entered while `f` runs (the allocator never allocates inside
    // itself), so the `&mut` is unique.
    HEAP.with(|heap| f(unsafe { &mut *heap.get() }))
}

/// The `pthread` key destructor: the thread is exiting.
unsafe extern "C" fn on_thread_exit(_heap: *mut core::ffi::c_void) {
    with_heap(|heap| heap.abandon());
}
