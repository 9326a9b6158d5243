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
//! A pool that becomes empty goes back to the arena registry, except that
//! a heap keeps its most recently emptied small pools (up to 16) for reuse. When a
//! thread exits, a `pthread` key destructor abandons its heap: empty pools
//! go back to the registry, the others to the abandoned lists, from which
//! any thread needing a pool of that class reclaims them. A thread freeing
//! a block of an abandoned pool adopts the pool, and returns it to the
//! registry once it is empty: no memory is stranded by dead threads. Code
//! that runs after the destructor (later key destructors, glibc's own
//! thread cleanup) still allocates and frees, but owns no pool: its frees
//! are remote frees and each of its allocations hands its pool straight
//! back to the abandoned lists.
//!
//! A heap starts (gets its id, registers the exit destructor, lists its
//! counters) on its thread's first slow path, outside any `&mut Heap`:
//! registering may call `calloc`, which re-enters the allocator.
//!
//! Each thread also keeps its allocation [`Counters`] (blocks and bytes it
//! allocated and freed, and its peak net bytes) beside its heap, counted
//! only while `profile` asks. Only the owner writes the counts, with plain
//! loads and stores; a process-wide table of live threads' counters
//! (claimed at heap init, released at thread exit into an "exited threads"
//! total) lets `profile` sum them, and switch every thread's counting flag
//! on and off, without a data race and without allocating.

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::arena::{self, registry, Registry};
use crate::core::os;
use crate::core::pool::{Block, Pool, ABANDONED, TYPED_OWNER};
use crate::core::size_class::{pool_slots, NUM_CLASSES};
use crate::core::sync::{AtomicUsize, Ordering, RawLock};

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

/// How many empty pools a heap keeps committed before returning the
/// oldest: enough for a thread freeing and re-allocating a batch of a few
/// thousand blocks, small enough (1 MiB of single-slot pools) to bound
/// what an idle heap holds.
const HOT_EMPTY_POOLS: usize = 16;

/// The first class whose free blocks [`Heap::sweep_big_pools`] purges:
/// blocks of 16 KiB and more span three whole pages or more besides the
/// one holding their free-list link.
const FIRST_PURGED_CLASS: usize = crate::core::purge::FIRST_PURGED_CLASS;

/// A thread's heap.
pub(crate) struct Heap {
    /// Owner id written into this heap's pools (0 until first use).
    id: usize,
    /// Pools per size class; the head is allocated from.
    queues: [Queue; NUM_CLASSES],
    /// Empty head pools kept for reuse, oldest replaced first; an entry is
    /// cleared when its pool leaves our queues.
    hot_empty: [*mut Pool; HOT_EMPTY_POOLS],
    hot_next: usize,
    /// An owned heap (`strata_alloc::Heap`) rather than a thread's: it never
    /// adopts abandoned pools, whose other blocks it must not free on reset.
    owned: bool,
    /// This thread's slot in the live-counters table, or `NO_SLOT`.
    counters_slot: usize,
    /// The thread-exit destructor has run: the heap owns no pool from then
    /// on (see `alloc_after_exit` and `free_abandoned`).
    exiting: bool,
    /// When the next [`Heap::sweep_big_pools`] is due (ms, `os::now_ms`).
    next_sweep_ms: u64,
}

impl Heap {
    pub(crate) const fn new() -> Self {
        Heap {
            id: 0,
            queues: [EMPTY_QUEUE; NUM_CLASSES],
            hot_empty: [ptr::null_mut(); HOT_EMPTY_POOLS],
            hot_next: 0,
            owned: false,
            counters_slot: NO_SLOT,
            exiting: false,
            next_sweep_ms: 0,
        }
    }

    /// A heap owned by a value rather than a thread (see `owned.rs`).
    pub(crate) fn new_owned() -> Self {
        crate::core::init::ensure();
        Heap {
            id: NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed),
            owned: true,
            ..Heap::new()
        }
    }

    /// Gives every pool back to the registry, live blocks included, and
    /// starts over empty (owned heaps: their blocks all die at once).
    ///
    /// # Safety
    /// No block of this heap may be used afterwards.
    pub(crate) unsafe fn release_all(&mut self) {
        let mut batch = [None; 64];
        for class in 0..NUM_CLASSES {
            let mut pool = self.queues[class].head;
            while !pool.is_null() {
                // Gather a batch, reading each `next` before any pool of the
                // batch is released (a released record may be reused at once).
                let mut n = 0;
                while !pool.is_null() && n < batch.len() {
                    // SAFETY: pools in our queues are live and ours.
                    unsafe {
                        batch[n] = Some((*pool).slot_run());
                        pool = (*pool).next.get();
                    }
                    n += 1;
                }
                // SAFETY: the heap's blocks are dead (caller); each run once.
                unsafe { registry().release_all(batch[..n].iter().flatten().copied()) };
            }
        }
        self.queues = [EMPTY_QUEUE; NUM_CLASSES];
        self.hot_empty = [ptr::null_mut(); HOT_EMPTY_POOLS];
    }

    /// Pools, blocks in use and bytes in use of this heap.
    pub(crate) fn usage(&self) -> (usize, usize, usize) {
        let (mut pools, mut blocks, mut bytes) = (0, 0, 0);
        for q in &self.queues {
            let mut pool = q.head;
            while !pool.is_null() {
                // SAFETY: pools in our queues are live and ours.
                let p = unsafe { &*pool };
                pools += 1;
                blocks += p.used() as usize;
                bytes += p.used() as usize * p.block_size as usize;
                pool = p.next.get();
            }
        }
        (pools, blocks, bytes)
    }

    /// Allocates a block of `class`, or returns null when out of memory.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, class: usize) -> *mut u8 {
        let pool = self.queues[class].head;
        if !pool.is_null() {
            // SAFETY: pools in our queues are live and owned by us.
            let pool = unsafe { &*pool };
            let block = pool.pop();
            if !block.is_null() {
                return block.cast();
            }
            // The owner's recent frees: reuse them (cache-warm) without a
            // trip through the slow path, but run a due purge (two loads
            // when none is): a thread that only churns its own pools still
            // returns what other threads freed.
            if pool.take_local_free() {
                crate::core::purge::maybe_purge();
                return pool.pop().cast();
            }
        }
        self.alloc_slow(class)
    }

    /// Frees block `p` of any thread's pool. Returns true when this heap
    /// has not started: the caller then runs [`start_thread`] (outside the
    /// heap borrow), so a thread whose first act is a free lists its
    /// counters.
    ///
    /// # Safety
    /// `p` must be a live small block of this allocator.
    #[inline(always)]
    #[must_use]
    pub(crate) unsafe fn free(&mut self, p: *mut u8) -> bool {
        // SAFETY: `p` is a live small block, so its arena and pool are live.
        let pool = unsafe { &*arena::pool_meta_of(p).cast::<Pool>() };
        if cfg!(debug_assertions) {
            check_free(pool, p, self.id);
        }
        if pool.owner.load(Ordering::Relaxed) == self.id {
            // SAFETY: we own the pool and the block is live (caller).
            let emptied = unsafe { pool.push_local(p.cast()) };
            // A hot pool emptied again stays as it is: skip the call.
            if emptied && !pool.hot.get() {
                self.pool_emptied(pool);
            }
            false
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.free_not_owned(pool, p.cast()) };
            self.id == 0
        }
    }

    /// Frees a block of a pool this heap does not own: into an abandoned
    /// pool, or onto the owner's `thread_free` list.
    ///
    /// # Safety
    /// `block` must be a live block of `pool`.
    #[inline(always)]
    unsafe fn free_not_owned(&mut self, pool: &Pool, block: *mut Block) {
        match pool.owner.load(Ordering::Relaxed) {
            // SAFETY: forwarded contract.
            ABANDONED => unsafe { self.free_abandoned(pool, block) },
            // Slot 0 (the arena header) and unused records have no owner:
            // a wild pointer, whose free would write into the header.
            0 => crate::core::diag::abort_with_pointer(
                b"free of a pointer into no pool: ",
                block.cast(),
            ),
            TYPED_OWNER => crate::core::diag::abort_with_pointer(
                b"free of a TypedPool block through malloc/dealloc: ",
                block.cast(),
            ),
            // SAFETY: forwarded contract.
            _ => unsafe { pool.push_thread_free(block) },
        }
    }

    /// Frees a block of a pool whose thread exited: this heap adopts the
    /// pool (mimalloc's reclaim-on-free), so the rest of its blocks are
    /// freed without the abandoned-list lock, and the pool returns to its
    /// arena as soon as it is empty.
    ///
    /// # Safety
    /// `block` must be a live block of `pool`.
    #[cold]
    #[inline(never)]
    unsafe fn free_abandoned(&mut self, pool: &Pool, block: *mut Block) {
        // A heap that has not started, or whose thread is exiting, owns no
        // pool and takes none: a pool it adopted would outlive the thread
        // with no destructor left to abandon it again.
        let adopts = self.id != 0 && !self.exiting && !self.owned;
        if !adopts || !abandoned().claim(pool, self.id) {
            // Another thread reclaimed it first, or we may not: an ordinary
            // remote free (a later sweep or reclaim takes it in).
            // SAFETY: forwarded contract.
            unsafe { pool.push_thread_free(block) };
            return;
        }
        let raw = pool as *const Pool as *mut Pool;
        self.push_back(pool.class as usize, raw);
        pool.collect();
        // SAFETY: the pool is ours now and the block is live (caller).
        if unsafe { pool.push_local(block) } {
            self.pool_emptied(pool);
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&mut self, class: usize) -> *mut u8 {
        if self.id == 0 {
            // Not started: the caller starts the heap outside this borrow
            // (`start_thread`) and asks again.
            return ptr::null_mut();
        }
        if self.exiting {
            return self.alloc_after_exit(class);
        }
        crate::core::purge::maybe_purge();
        self.maybe_sweep_big_pools();
        let registry = registry();
        if let Some(block) = self.alloc_from_queue(class) {
            return block;
        }
        loop {
            let reclaimed = if self.owned {
                None
            } else {
                abandoned().reclaim(class, self.id)
            };
            let pool = match reclaimed {
                Some(pool) => pool,
                None => {
                    let id = self.id;
                    // SAFETY: a fresh run from the registry.
                    let init = |run: &_| unsafe { Pool::init(run, class, id) };
                    match registry.acquire_with(pool_slots(class), init) {
                        Some(pool) => pool,
                        None => return ptr::null_mut(),
                    }
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

    /// A pool of ours has no live block. Single-slot pools (and the pool a
    /// class allocates from) are kept, up to `HOT_EMPTY_POOLS` per heap, so
    /// a thread that frees a batch and allocates it again does not return
    /// and fetch its pools each time; the oldest kept pool is returned when
    /// a new one comes in. Other pools go back to the registry at once.
    fn pool_emptied(&mut self, pool: &Pool) {
        if pool.hot.get() {
            return;
        }
        let raw = pool as *const Pool as *mut Pool;
        if pool.slots > 1 && self.queues[pool.class as usize].head != raw {
            self.release_from_queue(pool);
            return;
        }
        pool.hot.set(true);
        let oldest = core::mem::replace(&mut self.hot_empty[self.hot_next], raw);
        self.hot_next = (self.hot_next + 1) % HOT_EMPTY_POOLS;
        if !oldest.is_null() {
            // SAFETY: entries are cleared when their pool leaves our queues,
            // so `oldest` is a live pool of ours.
            let oldest = unsafe { &*oldest };
            oldest.hot.set(false);
            oldest.collect();
            if oldest.used() == 0 {
                self.release_from_queue(oldest);
            }
        }
    }

    /// Unlinks an empty pool of ours and gives it back to the registry.
    fn release_from_queue(&mut self, pool: &Pool) {
        self.unlink(pool.class as usize, pool as *const Pool as *mut Pool);
        // SAFETY: the pool is empty and unlinked: nobody uses it.
        unsafe { release_pool(registry(), pool) };
    }

    /// An allocation by code that runs after the thread-exit destructor
    /// (later `pthread` key destructors, glibc's own thread cleanup): the
    /// block comes from a pool that goes straight back to the abandoned
    /// lists, so the heap never again owns a pool that nothing would
    /// abandon. Rare, so a lock round trip per call is fine.
    #[cold]
    fn alloc_after_exit(&mut self, class: usize) -> *mut u8 {
        self.exiting = false;
        let block = self.alloc_slow(class);
        self.exiting = true;
        self.give_back_pools();
        block
    }

    /// The thread is exiting: unlists its counters and folds them into the
    /// exited-threads total.
    fn retire_counters(&mut self, counters: &Counters) {
        live_counters().retire(self.counters_slot, counters);
        self.counters_slot = NO_SLOT;
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
        // SAFETY: `pool` is in this queue, so it is live and ours.
        if unsafe { (*pool).hot.replace(false) } {
            for hot in &mut self.hot_empty {
                if *hot == pool {
                    *hot = ptr::null_mut();
                }
            }
        }
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
    /// abandoned lists, then sweeps those. The heap stays usable (it starts
    /// over empty).
    pub(crate) fn abandon(&mut self) {
        self.give_back_pools();
        abandoned().sweep(registry());
        crate::core::purge::maybe_purge();
    }

    /// The pools part of [`Heap::abandon`].
    fn give_back_pools(&mut self) {
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
        self.hot_empty = [ptr::null_mut(); HOT_EMPTY_POOLS];
    }

    /// The thread is exiting: gives every pool back ([`Heap::abandon`]);
    /// later allocations and frees of the thread own no pool.
    pub(crate) fn exit(&mut self) {
        self.exiting = true;
        self.abandon();
    }

    /// Runs [`Heap::sweep_big_pools`] at most once per purge delay (the
    /// clock is read on allocation slow paths only).
    fn maybe_sweep_big_pools(&mut self) {
        let now = os::now_ms();
        if now < self.next_sweep_ms {
            return;
        }
        let delay = registry().purge_delay_ms.load(Ordering::Relaxed);
        self.next_sweep_ms = now.saturating_add(delay.max(1));
        self.sweep_big_pools();
    }

    /// Gives back what this heap's pools of big blocks hold for nothing:
    /// it takes in the blocks other threads freed, returns pools left
    /// empty to the registry (whose purge then returns their slots), and
    /// returns the inner pages of free blocks to the OS. A thread that
    /// allocates a few big blocks of many classes would otherwise keep a
    /// resident, mostly free pool per class (jemalloc purges free pages of
    /// its large classes the same way).
    fn sweep_big_pools(&mut self) {
        self.sweep(FIRST_PURGED_CLASS..NUM_CLASSES, true);
    }

    /// Takes other threads' frees into this heap's pools of `classes` and
    /// returns the pools left empty (even one kept hot) to the registry;
    /// with `purge`, returns the free blocks' inner pages of the others.
    fn sweep(&mut self, classes: core::ops::Range<usize>, purge: bool) {
        for class in classes {
            let mut pool = self.queues[class].head;
            while !pool.is_null() {
                // SAFETY: pools in our queues are live and ours.
                let p = unsafe { &*pool };
                let next = p.next.get();
                p.collect();
                if p.used() == 0 {
                    self.release_from_queue(p);
                } else if purge {
                    crate::core::purge::purge_free_blocks(p);
                }
                pool = next;
            }
        }
    }

    /// Returns this heap's empty pools to the registry (even the one kept
    /// hot per class).
    pub(crate) fn release_empty_pools(&mut self) {
        self.sweep(0..NUM_CLASSES, false);
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

/// Debug-build check of a pointer about to be freed: it must be the start
/// of a carved block, and not among the most recently freed blocks of the
/// pool's local lists (a bounded look, so debug builds stay usable).
fn check_free(pool: &Pool, p: *mut u8, heap_id: usize) {
    const LOOK: usize = 64;
    if pool.owner.load(Ordering::Relaxed) == 0 {
        crate::core::diag::abort_with_pointer(b"free of a pointer into no pool: ", p);
    }
    if !pool.is_block_start(p) {
        crate::core::diag::abort_with_pointer(b"free of a pointer that is not a block start: ", p);
    }
    if pool.owner.load(Ordering::Relaxed) == heap_id {
        for list in [pool.free.get(), pool.local_free.get()] {
            let mut block = list;
            for _ in 0..LOOK {
                if block.is_null() {
                    break;
                }
                if block.cast::<u8>() == p {
                    crate::core::diag::abort_with_pointer(b"double free of ", p);
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

    /// Hands abandoned `pool` to heap `owner` if it is still abandoned;
    /// returns false if another thread claimed it first.
    fn claim(&self, pool: &Pool, owner: usize) -> bool {
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

/// A thread's allocator state: its heap, and its counters beside it (not
/// inside it, so that other threads may read the counters while the owner
/// holds `&mut Heap`).
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

#[cfg(not(loom))]
std::thread_local! {
    static HEAP: ThreadHeap = const { ThreadHeap::new() };
}

#[cfg(loom)]
loom::thread_local! {
    static HEAP: ThreadHeap = ThreadHeap::new();
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

/// Frees small block `p` through the calling thread's heap.
///
/// # Safety
/// `p` must be a live small block of this allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded contract.
    if with_heap(|heap| unsafe { heap.free(p) }) {
        start_thread();
    }
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
            return false;
        }
        heap.id = NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed);
        true
    });
    if !starting {
        return false;
    }
    crate::core::init::ensure();
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
pub(crate) fn create_exit_key() {
    THREAD_EXIT.create(on_thread_exit);
}

/// Arranges for [`on_thread_exit`] to run when the calling thread exits;
/// returns false if it cannot.
fn register_exit() -> bool {
    let heap = HEAP.with(|t| t.heap.get());
    #[cfg(test)]
    if tests::NO_EXIT_KEY.load(Ordering::Relaxed) {
        return register_exit_fallback();
    }
    THREAD_EXIT.set(heap.cast(), on_thread_exit) || register_exit_fallback()
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
    // SAFETY: the heap is only reached through this function, which is not
    // re-entered while `f` runs (the allocator never allocates inside
    // itself), so the `&mut` is unique.
    HEAP.with(|t| f(unsafe { &mut *t.heap.get() }, &t.counters))
}

/// The calling thread's counters (for `profile`, outside the allocator).
pub(crate) fn with_thread_counters<R>(f: impl FnOnce(&Counters) -> R) -> R {
    HEAP.with(|t| f(&t.counters))
}

/// The calling thread's counters, for the live-counters table. The pointer
/// stays valid until the thread's TLS is freed, after its exit destructor
/// has unlisted it.
fn thread_counters() -> *const Counters {
    HEAP.with(|t| &t.counters as *const Counters)
}

/// Whether allocations and frees are being counted (a `profile::Counting`
/// or `profile::Scope` is alive).
pub(crate) fn counting() -> bool {
    live_counters().reasons() != 0
}

/// Adds a reason to count (`profile::Counting`, `profile::Scope`).
pub(crate) fn start_counting() {
    live_counters().add_reason(1);
}

/// Removes a reason to count, added by [`start_counting`].
pub(crate) fn stop_counting() {
    live_counters().add_reason(-1);
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
}

/// `Heap::counters_slot` of a thread whose counters are not listed.
const NO_SLOT: usize = usize::MAX;

/// Threads whose counters can be listed at once; the counters of threads
/// beyond that are seen only once they exit. 1024 slots are 8 KiB of
/// zeroed static memory, touched as far as threads have used them.
const MAX_COUNTED_THREADS: usize = 1024;

/// Totals of [`Counters`]: blocks and bytes allocated and freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub alloc_blocks: usize,
    pub alloc_bytes: usize,
    pub free_blocks: usize,
    pub free_bytes: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.alloc_blocks = self.alloc_blocks.wrapping_add(other.alloc_blocks);
        self.alloc_bytes = self.alloc_bytes.wrapping_add(other.alloc_bytes);
        self.free_blocks = self.free_blocks.wrapping_add(other.free_blocks);
        self.free_bytes = self.free_bytes.wrapping_add(other.free_bytes);
    }
}

/// One thread's allocation counters. Written only by the owning thread, on
/// the allocation and free paths, with a relaxed load and store each (plain
/// `mov`s, no locked instruction); read by any thread through the
/// live-counters table. Bytes are block sizes (usable sizes for large
/// blocks), not requested sizes.
pub(crate) struct Counters {
    alloc_blocks: core::sync::atomic::AtomicUsize,
    alloc_bytes: core::sync::atomic::AtomicUsize,
    free_blocks: core::sync::atomic::AtomicUsize,
    free_bytes: core::sync::atomic::AtomicUsize,
    /// Highest `alloc_bytes - free_bytes` since `profile` last reset it.
    peak_net: core::sync::atomic::AtomicIsize,
    /// The owner's sampling state (countdown to the next sample, PRNG,
    /// re-entrancy flag): see `sample.rs`.
    #[cfg(feature = "sampling")]
    sampler: crate::insight::sample::ThreadSampler,
    /// Count at all: set for every listed thread by `profile` (under the
    /// table lock), read by the owner on each allocation and free. Kept per
    /// thread so that the fast paths test a thread-local byte rather than
    /// load a global.
    enabled: core::sync::atomic::AtomicBool,
}

/// Adds `n` to an owner-only counter without a read-modify-write
/// instruction; returns the new value.
#[inline(always)]
fn bump(counter: &core::sync::atomic::AtomicUsize, n: usize) -> usize {
    let value = counter.load(Ordering::Relaxed).wrapping_add(n);
    counter.store(value, Ordering::Relaxed);
    value
}

impl Counters {
    const fn new() -> Self {
        use core::sync::atomic::{AtomicIsize, AtomicUsize};
        Counters {
            alloc_blocks: AtomicUsize::new(0),
            alloc_bytes: AtomicUsize::new(0),
            free_blocks: AtomicUsize::new(0),
            free_bytes: AtomicUsize::new(0),
            peak_net: AtomicIsize::new(0),
            #[cfg(feature = "sampling")]
            sampler: crate::insight::sample::ThreadSampler::new(),
            enabled: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the owner counts its allocations and frees now.
    #[inline(always)]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counts the block at `ptr`, of `bytes`, allocated by the owner (off
    /// the fast path: only while [`Counters::enabled`]); with the
    /// `sampling` feature, may also sample it (see `sample.rs`).
    #[cold]
    #[inline(never)]
    pub(crate) fn count_alloc(&self, ptr: *mut u8, bytes: usize) {
        bump(&self.alloc_blocks, 1);
        let allocated = bump(&self.alloc_bytes, bytes);
        let net = allocated.wrapping_sub(self.free_bytes.load(Ordering::Relaxed)) as isize;
        if net > self.peak_net.load(Ordering::Relaxed) {
            self.peak_net.store(net, Ordering::Relaxed);
        }
        #[cfg(feature = "sampling")]
        self.sampler.on_alloc(ptr, bytes);
        #[cfg(not(feature = "sampling"))]
        let _ = ptr;
    }

    /// Counts the block at `ptr`, of `bytes`, freed by the owner (off the
    /// fast path); with the `sampling` feature, forgets it if it was
    /// sampled. Call it before the block is actually freed, so that its
    /// address cannot have been reused yet.
    #[cold]
    #[inline(never)]
    pub(crate) fn count_free(&self, ptr: *mut u8, bytes: usize) {
        bump(&self.free_blocks, 1);
        bump(&self.free_bytes, bytes);
        #[cfg(feature = "sampling")]
        crate::insight::sample::on_free(ptr);
        #[cfg(not(feature = "sampling"))]
        let _ = ptr;
    }

    /// Runs `f` with this (the calling thread's) sampler paused: what `f`
    /// allocates is counted but never sampled.
    #[cfg(feature = "sampling")]
    pub(crate) fn without_sampling<R>(&self, f: impl FnOnce() -> R) -> R {
        self.sampler.paused(f)
    }

    pub(crate) fn read(&self) -> Counts {
        Counts {
            alloc_blocks: self.alloc_blocks.load(Ordering::Relaxed),
            alloc_bytes: self.alloc_bytes.load(Ordering::Relaxed),
            free_blocks: self.free_blocks.load(Ordering::Relaxed),
            free_bytes: self.free_bytes.load(Ordering::Relaxed),
        }
    }

    /// Bytes allocated minus bytes freed by this thread (negative when it
    /// freed other threads' blocks).
    pub(crate) fn net(&self) -> isize {
        self.alloc_bytes
            .load(Ordering::Relaxed)
            .wrapping_sub(self.free_bytes.load(Ordering::Relaxed)) as isize
    }

    /// The highest [`Counters::net`] since the last [`Counters::set_peak`].
    pub(crate) fn peak(&self) -> isize {
        self.peak_net.load(Ordering::Relaxed)
    }

    /// Sets the running peak (owner only).
    pub(crate) fn set_peak(&self, peak: isize) {
        self.peak_net.store(peak, Ordering::Relaxed);
    }

    /// Starts over from zero (owner only, with the table lock held).
    fn reset(&self) {
        for c in [
            &self.alloc_blocks,
            &self.alloc_bytes,
            &self.free_blocks,
            &self.free_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.peak_net.store(0, Ordering::Relaxed);
    }
}

/// The live threads' counters and the total of exited threads, guarded by
/// the abandoned-lists lock (which the `fork` handlers already take).
struct LiveCounters {
    slots: UnsafeCell<[*const Counters; MAX_COUNTED_THREADS]>,
    /// Slots below this index may be in use.
    high: UnsafeCell<usize>,
    exited: UnsafeCell<Counts>,
    /// Open reasons to count (`profile::Counting` guards and scopes).
    reasons: UnsafeCell<usize>,
}

// SAFETY: every field is only touched with the abandoned-lists lock held;
// listed counters are atomics, valid until their thread unlists them.
unsafe impl Sync for LiveCounters {}

impl LiveCounters {
    fn lock(&self) -> &RawLock {
        abandoned().lock()
    }

    /// Lists `counters`; returns its slot, or `NO_SLOT` when all are taken.
    fn claim(&self, counters: *const Counters) -> usize {
        self.lock().with(|| {
            // SAFETY: we hold the lock.
            let (slots, high) = unsafe { (&mut *self.slots.get(), &mut *self.high.get()) };
            let Some(i) = slots.iter().position(|s| s.is_null()) else {
                return NO_SLOT;
            };
            slots[i] = counters;
            *high = (*high).max(i + 1);
            // SAFETY: we hold the lock; `counters` is live (caller).
            unsafe {
                (*counters)
                    .enabled
                    .store(*self.reasons.get() != 0, Ordering::Relaxed)
            };
            i
        })
    }

    /// Open reasons to count.
    fn reasons(&self) -> usize {
        // SAFETY: we hold the lock.
        self.lock().with(|| unsafe { *self.reasons.get() })
    }

    /// Adds `delta` (1 or -1) to the open reasons to count; on a change
    /// between none and some, turns counting on or off for every listed
    /// thread and for the calling one (listed or not). Other threads see
    /// the change within a moment (a relaxed flag).
    fn add_reason(&self, delta: isize) {
        let on = self.lock().with(|| {
            // SAFETY: we hold the lock.
            let (slots, high, reasons) = unsafe {
                (
                    &*self.slots.get(),
                    *self.high.get(),
                    &mut *self.reasons.get(),
                )
            };
            let was_on = *reasons != 0;
            *reasons = reasons.wrapping_add_signed(delta);
            let on = *reasons != 0;
            if on != was_on {
                for &c in slots[..high].iter().filter(|c| !c.is_null()) {
                    // SAFETY: listed counters are live until their thread
                    // unlists them, which needs the lock we hold.
                    unsafe { (*c).enabled.store(on, Ordering::Relaxed) };
                }
            }
            on
        });
        with_thread_counters(|c| c.enabled.store(on, Ordering::Relaxed));
    }

    /// Unlists slot `slot` (if any) and folds `counters` into the exited
    /// total, then zeroes them: sums taken under the lock see each count
    /// exactly once.
    fn retire(&self, slot: usize, counters: &Counters) {
        self.lock().with(|| {
            // SAFETY: we hold the lock.
            let (slots, exited) = unsafe { (&mut *self.slots.get(), &mut *self.exited.get()) };
            if slot != NO_SLOT {
                slots[slot] = ptr::null();
            }
            exited.add(counters.read());
            counters.reset();
        })
    }

    /// Counts of every thread: the live ones and those that exited.
    fn totals(&self) -> Counts {
        self.lock().with(|| {
            // SAFETY: we hold the lock.
            let (slots, high, exited) =
                unsafe { (&*self.slots.get(), *self.high.get(), *self.exited.get()) };
            let mut sum = exited;
            for &c in &slots[..high] {
                if !c.is_null() {
                    // SAFETY: listed counters are live until their thread
                    // unlists them, which needs the lock we hold.
                    sum.add(unsafe { (*c).read() });
                }
            }
            sum
        })
    }
}

fn live_counters() -> &'static LiveCounters {
    static LIVE_COUNTERS: LiveCounters = LiveCounters {
        slots: UnsafeCell::new([ptr::null(); MAX_COUNTED_THREADS]),
        high: UnsafeCell::new(0),
        exited: UnsafeCell::new(Counts {
            alloc_blocks: 0,
            alloc_bytes: 0,
            free_blocks: 0,
            free_bytes: 0,
        }),
        reasons: UnsafeCell::new(0),
    };
    &LIVE_COUNTERS
}

/// Blocks and bytes allocated and freed so far by all threads (live
/// threads whose counters did not fit in the table are missing until they
/// exit).
pub(crate) fn counter_totals() -> Counts {
    live_counters().totals()
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
        unsafe { free(block.0) };
    }
}
