//! Core layer: a heap — the allocation and free fast paths over its pools,
//! and the life of a pool between threads.
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

use core::ptr;

use crate::core::abandoned::abandoned;
use crate::core::arena::{self, registry};
use crate::core::counters::{live_counters, Counters, NO_FREE_KEY, NO_SLOT};
use crate::core::os;
use crate::core::pool::{
    is_tagged_free, release_pool, tag_free, Block, Pool, ABANDONED, TYPED_OWNER,
};
use crate::core::secure;
use crate::core::size_class::{
    direct_index, direct_slots, pool_slots, DIRECT_LAST_CLASS, DIRECT_MAX, DIRECT_SLOTS,
    NUM_CLASSES,
};
use crate::core::sync::Ordering;

/// How many pools of a class the allocation slow path inspects before
/// taking a new one: bounds the slow path while still finding pools
/// refilled by remote frees.
const SCAN_LIMIT: u32 = 8;

/// Heap ids: 0 means "not initialised", `ABANDONED` is reserved.
pub(crate) static NEXT_HEAP_ID: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(1);

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

/// What [`Heap::free_keyed`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Freed {
    /// Freed.
    Done,
    /// Not freed: the block's pool (this one) is not the key's.
    NotKey(*const Pool),
}

/// A thread's heap.
pub(crate) struct Heap {
    /// Owner id written into this heap's pools (0 until first use).
    pub(crate) id: usize,
    /// Pools per size class; the head is allocated from.
    queues: [Queue; NUM_CLASSES],
    /// The head pool of each request size up to `DIRECT_MAX`, by 16-byte
    /// step (see `size_class::direct_index`): kept equal to the queue
    /// heads by [`Heap::sync_direct`].
    direct: [*mut Pool; DIRECT_SLOTS],
    /// Empty head pools kept for reuse, oldest replaced first; an entry is
    /// cleared when its pool leaves our queues.
    hot_empty: [*mut Pool; HOT_EMPTY_POOLS],
    hot_next: usize,
    /// An owned heap (`strata_alloc::Heap`) rather than a thread's: it never
    /// adopts abandoned pools, whose other blocks it must not free on reset.
    owned: bool,
    /// This thread's slot in the live-counters table, or `NO_SLOT`.
    pub(crate) counters_slot: usize,
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
            direct: [ptr::null_mut(); DIRECT_SLOTS],
            hot_empty: [ptr::null_mut(); HOT_EMPTY_POOLS],
            hot_next: 0,
            owned: false,
            counters_slot: NO_SLOT,
            exiting: false,
            next_sweep_ms: 0,
        }
    }

    /// A heap owned by a value rather than a thread (see `owned.rs`,
    /// which runs the process-start steps first).
    pub(crate) fn new_owned() -> Self {
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
        self.direct = [ptr::null_mut(); DIRECT_SLOTS];
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
            let block = pool.pop_untagged();
            if !block.is_null() {
                return block.cast();
            }
        }
        self.alloc_refill(class)
    }

    /// A block for a request of `size <= DIRECT_MAX` bytes aligned to at
    /// most 16, popped from the head pool of its class (through the direct
    /// table); null when that pool's `free` list is empty or there is none:
    /// then [`Heap::alloc`] refills.
    #[inline(always)]
    pub(crate) fn pop_direct(&mut self, size: usize) -> *mut u8 {
        debug_assert!(size <= DIRECT_MAX);
        let pool = self.direct[direct_index(size)];
        if pool.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: the direct table holds our queue heads, which are live
        // and owned by us.
        unsafe { (*pool).pop_untagged() }.cast()
    }

    /// Copies the head of `class`'s queue into its direct-table slots;
    /// called wherever a queue head changes.
    #[inline]
    fn sync_direct(&mut self, class: usize) {
        if class <= DIRECT_LAST_CLASS {
            let head = self.queues[class].head;
            for slot in direct_slots(class) {
                self.direct[slot] = head;
            }
        }
    }

    /// [`Heap::alloc`] when the head pool's `free` list is empty.
    #[cold]
    #[inline(never)]
    fn alloc_refill(&mut self, class: usize) -> *mut u8 {
        let pool = self.queues[class].head;
        // SAFETY: pools in our queues are live and owned by us.
        if !pool.is_null() && unsafe { (*pool).take_local_free() } {
            // The owner's recent frees: reuse them (cache-warm) without a
            // trip through the slow path, but run a due purge (two loads
            // when none is): a thread that only churns its own pools still
            // returns what other threads freed.
            crate::core::purge::maybe_purge();
            // SAFETY: as above.
            return unsafe { (*pool).pop_untagged() }.cast();
        }
        self.alloc_slow(class)
    }

    /// Frees block `p` of any thread's pool. Returns true when this heap
    /// has not started: the caller then runs [`start_thread`] (outside the
    /// heap borrow), so a thread whose first act is a free lists its
    /// counters.
    ///
    /// Two checks in every build, a few instructions together, each
    /// leaving the fast path only on misuse: `p` must be a block start
    /// (a multiply by the pool's reciprocal, [`Pool::is_block_offset`]),
    /// and must not carry the free tag (one load; [`is_tagged_free`]).
    /// The owner confirms a tagged block on its lists before it aborts
    /// ([`Heap::confirm_double_free`]).
    ///
    /// # Safety
    /// `p` must be a live small block of this allocator.
    #[inline(always)]
    #[must_use]
    pub(crate) unsafe fn free(&mut self, p: *mut u8) -> bool {
        // At secure level 2, every free takes the path that zeroes.
        let key = if secure::zeroes() {
            NO_FREE_KEY
        } else {
            self.id
        };
        // SAFETY: forwarded contract.
        match unsafe { self.free_keyed(p, key) } {
            Freed::Done => false,
            // SAFETY: forwarded contract; `p` is checked, not freed yet.
            Freed::NotKey(pool) => unsafe { self.free_not_key(&*pool, p) },
        }
    }

    /// [`Heap::free`]'s checks and the owner's fast path, for a pool whose
    /// owner is `key` (the thread heap's `Counters::free_key`: its id, or
    /// no pool's owner while it counts); any other pool is left alone
    /// (`NotKey` with the pool, `p` not freed) for the caller's slow path.
    ///
    /// # Safety
    /// `p` must be a live small block of this allocator.
    #[inline(always)]
    #[must_use]
    pub(crate) unsafe fn free_keyed(&mut self, p: *mut u8, key: usize) -> Freed {
        // SAFETY: `p` is a live small block, so its arena and pool are live.
        let pool = unsafe { &*arena::pool_meta_of(p).cast::<Pool>() };
        if cfg!(debug_assertions) {
            check_free(pool, p);
        }
        if !pool.is_block_offset(p) {
            not_a_block_start(pool, p);
        }
        let block = p.cast::<Block>();
        if pool.owner.load(Ordering::Relaxed) != key {
            return Freed::NotKey(pool);
        }
        // SAFETY: a block start of a pool of ours: of a size class.
        if unsafe { is_tagged_free(block) } {
            // A tail call: no value lives across it, so the fast path
            // saves no extra register.
            // SAFETY: forwarded contract.
            unsafe { self.free_tagged(pool, block) };
            return Freed::Done;
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_local(pool, block) };
        Freed::Done
    }

    /// [`Heap::free`] of a block that [`Heap::free_keyed`] left alone, of
    /// `pool`: a pool of ours (the caller counts) or of another thread.
    /// Returns as [`Heap::free`].
    ///
    /// # Safety
    /// `p` must be a live small block of `pool`, checked by
    /// [`Heap::free_keyed`], not yet freed.
    #[inline(always)]
    pub(crate) unsafe fn free_not_key(&mut self, pool: &Pool, p: *mut u8) -> bool {
        // At secure level 2 every free comes here (the free key is the one
        // of no pool): a tail call before anything is live, so level 1
        // pays only the test.
        if secure::zeroes_set() {
            // SAFETY: forwarded contract.
            return unsafe { self.free_zeroing(pool, p) };
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_not_key_plain(pool, p) }
    }

    /// [`Heap::free_not_key`] at secure level 2: zeroes the block (but its
    /// link and tag words) once it is known to be a heap's block and not
    /// tagged free, then frees it. A tagged block goes on unzeroed to the
    /// double-free checks (a live block that holds the tag by chance is
    /// zeroed by [`Heap::free_tagged`]).
    ///
    /// # Safety
    /// As for [`Heap::free_not_key`].
    #[cold]
    #[inline(never)]
    unsafe fn free_zeroing(&mut self, pool: &Pool, p: *mut u8) -> bool {
        let block = p.cast::<Block>();
        let owner = pool.owner.load(Ordering::Relaxed);
        // SAFETY: a block start (checked) of a pool: of a size class.
        if owner != 0 && owner != TYPED_OWNER && !unsafe { is_tagged_free(block) } {
            // SAFETY: a live block of a heap's pool (caller), checked.
            unsafe { zero_freed(pool, block) };
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_not_key_plain(pool, p) }
    }

    /// [`Heap::free_not_key`] without the zeroing.
    ///
    /// # Safety
    /// As for [`Heap::free_not_key`].
    #[inline(always)]
    unsafe fn free_not_key_plain(&mut self, pool: &Pool, p: *mut u8) -> bool {
        let block = p.cast::<Block>();
        if self.id != 0 && pool.owner.load(Ordering::Relaxed) == self.id {
            // SAFETY: a block start (checked) of a pool of ours.
            if unsafe { is_tagged_free(block) } {
                // SAFETY: forwarded contract.
                unsafe { self.free_tagged(pool, block) };
                return false;
            }
            // SAFETY: forwarded contract.
            unsafe { self.free_local(pool, block) };
            false
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.free_not_owned(pool, block) }
        }
    }

    /// The owner's free: tags the block, pushes it onto `local_free`.
    ///
    /// # Safety
    /// `block` must be a live block, of a size class, of `pool`, ours.
    #[inline(always)]
    unsafe fn free_local(&mut self, pool: &Pool, block: *mut Block) {
        // SAFETY: forwarded contract.
        let emptied = unsafe {
            tag_free(block);
            pool.push_local(block)
        };
        // A hot pool emptied again stays as it is: skip the call.
        if emptied && !pool.hot.get() {
            self.pool_emptied(pool);
        }
    }

    /// The owner's free of a block that carries the free tag: aborts if it
    /// is a double free ([`Heap::confirm_double_free`]), else frees it.
    ///
    /// # Safety
    /// `block` must be a block, of a size class, of `pool`, ours.
    #[cold]
    #[inline(never)]
    unsafe fn free_tagged(&mut self, pool: &Pool, block: *mut Block) {
        self.confirm_double_free(pool, block.cast());
        // SAFETY: not on our lists, so live (the program stored the tag).
        unsafe {
            zero_if_secure(pool, block);
            self.free_local(pool, block)
        };
    }

    /// A block of ours being freed carries the free tag: it is freed a
    /// second time, unless the program happened to store the tag in it.
    /// Looks for it on the pool's lists, all of them ours to walk once
    /// `collect` took in the other threads' frees; aborts if it is there,
    /// else returns (a live block: the free goes on). Each walk is bounded
    /// by the pool's capacity, so a list that a missed double free turned
    /// into a cycle aborts too instead of looping.
    fn confirm_double_free(&mut self, pool: &Pool, p: *mut u8) {
        let on = |list: *mut Block| {
            let mut block = list;
            for _ in 0..=pool.capacity {
                if block.is_null() {
                    return false;
                }
                if block.cast::<u8>() == p {
                    return true;
                }
                // SAFETY: blocks on our own lists are free blocks of the
                // pool, linked through their first word.
                block = unsafe { pool.next_free(block) };
            }
            crate::core::diag::abort_with_pointer(
                b"free list corrupted (a double free went unseen) in the pool of ",
                p,
            )
        };
        if on(pool.local_free.get()) || on(pool.free.get()) {
            crate::core::diag::abort_with_pointer(b"double free of ", p);
        }
        if !pool.thread_free.load(Ordering::Relaxed).is_null() {
            pool.collect();
            if on(pool.free.get()) {
                crate::core::diag::abort_with_pointer(b"double free of ", p);
            }
        }
    }

    /// Frees a block of a pool this heap does not own: into an abandoned
    /// pool, or onto the owner's `thread_free` list. Out of line, so that
    /// the owner's free stays a few instructions.
    ///
    /// A tagged block aborts as a double free without the owner's
    /// confirmation: the lists are the owner's (or the abandoned-list lock
    /// holder's) and cannot be walked from here. The tag is all the
    /// evidence, and a live block holds it only if the program stored it.
    ///
    /// Returns true when this heap has not started, as [`Heap::free`]:
    /// read here, so that the fast path keeps nothing across the call.
    ///
    /// # Safety
    /// `block` must be a live block of `pool`.
    #[inline(always)]
    unsafe fn free_not_owned(&mut self, pool: &Pool, block: *mut Block) -> bool {
        match pool.owner.load(Ordering::Relaxed) {
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
            owner => {
                // SAFETY: a block start of a heap's pool: of a size class.
                if unsafe { is_tagged_free(block) } {
                    crate::core::diag::abort_with_pointer(b"double free of ", block.cast());
                }
                // SAFETY: as above; the block is live (caller).
                unsafe { tag_free(block) };
                if owner == ABANDONED {
                    // SAFETY: forwarded contract.
                    unsafe { self.free_abandoned(pool, block) }
                } else {
                    // SAFETY: forwarded contract.
                    unsafe { pool.push_thread_free(block) }
                }
            }
        }
        self.id == 0
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
            let block = p.pop_untagged();
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
                return Some(p.pop_untagged().cast());
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
    pub(crate) fn retire_counters(&mut self, counters: &Counters) {
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
        self.sync_direct(class);
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
        self.sync_direct(class);
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
        self.sync_direct(class);
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
        self.direct = [ptr::null_mut(); DIRECT_SLOTS];
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

/// [`Heap::free`] of a pointer that is no block start of its pool: says
/// why, naming the pointer. A record no pool was made in (the arena
/// header's, or one never used) has a zero reciprocal, so its pointers end
/// here too.
#[cold]
#[inline(never)]
fn not_a_block_start(pool: &Pool, p: *mut u8) -> ! {
    let message: &[u8] = match pool.owner.load(Ordering::Relaxed) {
        0 => b"free of a pointer into no pool: ",
        TYPED_OWNER => b"free of a TypedPool block through malloc/dealloc: ",
        _ => b"free of a pointer that is not a block start: ",
    };
    crate::core::diag::abort_with_pointer(message, p)
}

/// Debug-build check of a pointer about to be freed, beyond those of every
/// build: it must be the start of a block carved so far (a block-aligned
/// pointer past them was never handed out).
fn check_free(pool: &Pool, p: *mut u8) {
    let owner = pool.owner.load(Ordering::Relaxed);
    if owner != 0 && owner != TYPED_OWNER && !pool.is_block_start(p) {
        crate::core::diag::abort_with_pointer(b"free of a pointer that is not a block start: ", p);
    }
}

/// At secure level 2 ([`secure::zeroes`]), zeroes the freed `block` but
/// its first two words (the link and the tag, written next by the free),
/// so a use after free reads zeros; else does nothing.
///
/// # Safety
/// `block` must be a live block of `pool`, of a size class (at least 16
/// bytes), being freed.
#[inline(always)]
unsafe fn zero_if_secure(pool: &Pool, block: *mut Block) {
    // The pool exists: the level is set.
    if secure::zeroes_set() {
        // SAFETY: forwarded contract.
        unsafe { zero_freed(pool, block) };
    }
}

/// [`zero_if_secure`]'s work, out of line: level 1 pays only the test.
///
/// # Safety
/// As for [`zero_if_secure`].
#[cold]
#[inline(never)]
unsafe fn zero_freed(pool: &Pool, block: *mut Block) {
    let size = pool.block_size as usize;
    // SAFETY: the block's own bytes past its two words (caller); no one
    // else reads a block while it is being freed.
    unsafe { ptr::write_bytes(block.cast::<u8>().add(16), 0, size - 16) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::size_class::class_for;

    /// The owner's confirming walk (under Miri too): live blocks holding
    /// the free tag are on no list, so they are freed normally, and every
    /// block is handed out again, once.
    #[test]
    fn live_blocks_holding_the_tag_are_freed() {
        crate::core::init::ensure();
        let mut heap = Heap::new_owned();
        let class = class_for(48, 8).unwrap();
        let blocks: Vec<_> = (0..8).map(|_| heap.alloc(class)).collect();
        // SAFETY: live blocks of 48 bytes of this heap, each freed once; the
        // tag is what the program could have stored there.
        unsafe {
            for &b in &blocks[..4] {
                assert!(!heap.free(b));
            }
            for &b in &blocks[4..] {
                tag_free(b.cast());
                assert!(is_tagged_free(b.cast()));
                assert!(!heap.free(b));
            }
        }
        // Past the rest of the carved run, the freed blocks come back.
        let mut again: Vec<_> = (0..200).map(|_| heap.alloc(class)).collect();
        for &b in &again {
            // SAFETY: a block just handed out: its tag is gone.
            assert!(!unsafe { is_tagged_free(b.cast()) });
        }
        again.sort();
        again.dedup();
        assert_eq!(again.len(), 200, "no block handed out twice");
        assert!(blocks.iter().all(|b| again.binary_search(b).is_ok()));
        // SAFETY: no block of the heap is used afterwards.
        unsafe { heap.release_all() };
    }
}
