//! Test door (top layer, `cfg(loom)` only).
//!
//! A thin, hidden API over the real internals, for the loom models in
//! `loom-tests/` (compiled only under `cfg(loom)`).
//!
//! Nothing here re-implements allocator logic: every function forwards to
//! the code the allocator runs (`pool`, `heap`, `arena`, `sync`, `fork`),
//! so a model exercises exactly the orderings and locks of the real paths.
//! Under loom the globals (arena registry, abandoned lists, thread heaps)
//! are per-execution, so each model iteration starts from an empty
//! allocator.

use crate::core::abandoned;
use crate::core::arena::{self, SlotRun};
use crate::core::heap::Heap;
use crate::core::pool::{Pool, ABANDONED};
use crate::core::size_class;
use crate::core::sync::RawLock;
use crate::core::thread;

pub use crate::core::arena::{ARENA_SIZE, POOL_SIZE, SLOTS_PER_ARENA};
pub use crate::core::size_class::NUM_CLASSES;

/// The size class serving `size`-byte blocks with default alignment.
pub fn class_of(size: usize) -> usize {
    size_class::class_for(size, 1).expect("loom_api::class_of: not a small size")
}

/// Block size of `class`.
pub fn block_size(class: usize) -> usize {
    size_class::class_size(class)
}

/// Slots a pool of `class` spans.
pub fn pool_slots(class: usize) -> usize {
    size_class::pool_slots(class)
}

// ---------------------------------------------------------------- pools --

/// A handle on a pool's metadata record (inside its arena header).
///
/// The handle is `Send + Sync` so models can hand it to other threads; the
/// owner-only operations are `unsafe` and say who may call them, exactly
/// as the pool layer requires.
#[derive(Clone, Copy, Debug)]
pub struct PoolRef {
    pool: *const Pool,
}

// SAFETY: a `PoolRef` is a pointer; every operation through it documents
// (and, being `unsafe` where needed, makes the caller uphold) the pool
// layer's threading rules: owner-only lists for the owner, the atomic
// `thread_free` list for anyone.
unsafe impl Send for PoolRef {}
// SAFETY: as above.
unsafe impl Sync for PoolRef {}

impl PoolRef {
    /// Takes a slot run from `arena::registry()` and turns it into an empty
    /// pool of `class` owned by heap id `owner` (`Pool::init`).
    pub fn create(class: usize, owner: usize) -> Option<PoolRef> {
        let run = arena::registry().acquire(size_class::pool_slots(class))?;
        // SAFETY: a fresh run from the registry holds no live block.
        let pool = unsafe { Pool::init(&run, class, owner) };
        Some(PoolRef { pool })
    }

    /// The pool holding block `p`, found by masking (`arena::pool_meta_of`).
    ///
    /// # Safety
    /// `p` must be a live small block of the allocator.
    pub unsafe fn of_block(p: *const u8) -> PoolRef {
        // SAFETY: `p` is a live small block (caller), so its arena is live.
        let pool = unsafe { arena::pool_meta_of(p) }.cast::<Pool>();
        PoolRef { pool }
    }

    fn get(&self) -> &Pool {
        // SAFETY: handles are only made from live pools; the models keep a
        // pool live (not released) while they use its handle.
        unsafe { &*self.pool }
    }

    /// Carves fresh blocks onto `free` (`Pool::carve`).
    ///
    /// # Safety
    /// Only the pool's owner may call this, with `free` empty.
    pub unsafe fn carve(&self) -> bool {
        self.get().carve()
    }

    /// Pops a block from `free`, or null (`Pool::pop`).
    ///
    /// # Safety
    /// Only the pool's owner may call this.
    pub unsafe fn pop(&self) -> *mut u8 {
        self.get().pop().cast()
    }

    /// Frees a block as the owner (`Pool::push_local`); true if the pool
    /// became empty.
    ///
    /// # Safety
    /// Only the owner may call this, with a live block of this pool.
    pub unsafe fn push_local(&self, p: *mut u8) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.get().push_local(p.cast()) }
    }

    /// Frees a block from another thread (`Pool::push_thread_free`).
    ///
    /// # Safety
    /// `p` must be a live block of this pool, freed once.
    pub unsafe fn push_thread_free(&self, p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { self.get().push_thread_free(p.cast()) }
    }

    /// Moves `local_free` and `thread_free` into `free` (`Pool::collect`).
    ///
    /// # Safety
    /// Only the owner may call this.
    pub unsafe fn collect(&self) {
        self.get().collect()
    }

    /// Blocks handed out and not yet collected back.
    pub fn used(&self) -> u32 {
        self.get().used()
    }

    /// Blocks the pool can hold.
    pub fn capacity(&self) -> u32 {
        self.get().capacity
    }

    /// The pool's size class.
    pub fn class(&self) -> usize {
        self.get().class as usize
    }

    /// Heap id of the owner.
    pub fn owner(&self) -> usize {
        self.get().owner.load(crate::core::sync::Ordering::Relaxed)
    }

    /// Whether the pool's thread exited and nobody reclaimed it.
    pub fn is_abandoned(&self) -> bool {
        self.owner() == ABANDONED
    }

    /// Whether `p` is a carved block start of this pool.
    pub fn is_block_start(&self, p: *const u8) -> bool {
        self.get().is_block_start(p)
    }

    /// Gives the pool's slots back to the registry.
    ///
    /// # Safety
    /// The pool must hold no live block, be in no list, and not be used
    /// again.
    pub unsafe fn release(self) {
        let run = self.get().slot_run();
        // SAFETY: forwarded contract.
        unsafe { arena::registry().release(run) }
    }
}

// ---------------------------------------------------------------- heaps --

/// Allocates a block of `class` from the calling thread's heap (the path
/// `Strata::alloc` takes).
pub fn alloc(class: usize) -> *mut u8 {
    thread::alloc(class).0
}

/// Frees `p` through the calling thread's heap (the path `Strata::dealloc`
/// takes: local push, remote push, or free into an abandoned pool).
///
/// # Safety
/// `p` must be a live small block of the allocator.
pub unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe { thread::free_counted(p, || crate::core::entry::small_block_size(p)) }
}

/// What the thread-exit key destructor does (`Heap::exit`): under loom
/// the `pthread` key is not registered, so a model calls this at the end
/// of a thread.
pub fn thread_exit() {
    thread::with_heap(Heap::exit)
}

/// Pools the calling thread's heap owns.
pub fn heap_pools() -> usize {
    thread::with_heap(|h| h.usage().0)
}

/// Returns the calling thread's empty pools to the registry.
pub fn release_empty_pools() {
    thread::with_heap(Heap::release_empty_pools)
}

/// Collects remote frees into abandoned pools and releases the empty ones
/// (`Abandoned::sweep`).
pub fn sweep_abandoned() {
    abandoned::abandoned().sweep(arena::registry())
}

/// Pools on the abandoned lists.
pub fn abandoned_pools() -> usize {
    abandoned::abandoned().count()
}

// -------------------------------------------------------------- arenas --

/// A run of arena slots from the registry.
pub struct Run {
    run: SlotRun,
}

// SAFETY: a run is an exclusive claim on its slots; moving it to another
// thread moves the claim.
unsafe impl Send for Run {}

impl Run {
    /// Address of the arena the run belongs to.
    pub fn arena(&self) -> usize {
        self.run.arena.addr()
    }

    /// First slot of the run.
    pub fn first(&self) -> usize {
        self.run.first
    }

    /// Slots in the run.
    pub fn count(&self) -> usize {
        self.run.count
    }

    /// Start of the run's memory.
    pub fn start(&self) -> *mut u8 {
        self.run.start()
    }
}

/// `Registry::acquire` on the process registry.
pub fn acquire(count: usize) -> Option<Run> {
    arena::registry().acquire(count).map(|run| Run { run })
}

/// `Registry::release` on the process registry.
///
/// # Safety
/// The run must hold no live block and not be used afterwards.
pub unsafe fn release(run: Run) {
    // SAFETY: forwarded contract.
    unsafe { arena::registry().release(run.run) }
}

/// `Registry::purge`: decommit dirty slots (all if `force`), unmap empty
/// arenas.
pub fn purge(force: bool) {
    arena::registry().purge(force)
}

/// What the registry's bitmaps say, read under its lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaCounts {
    /// Arenas mapped.
    pub arenas: usize,
    /// Free slots over all arenas.
    pub free_slots: usize,
    /// Free slots not yet decommitted.
    pub dirty_slots: usize,
    /// Slot runs in use (pools, or raw runs).
    pub runs: usize,
    /// Slots covered by those runs.
    pub used_slots: usize,
}

/// Counts from the registry bitmaps (`Registry::for_each_pool`).
pub fn arena_counts() -> ArenaCounts {
    let mut runs = 0;
    let mut used_slots = 0;
    let totals = arena::registry().for_each_pool(|_, slots| {
        runs += 1;
        used_slots += slots;
    });
    ArenaCounts {
        arenas: totals.arenas,
        free_slots: totals.free_slots,
        dirty_slots: totals.dirty_slots,
        runs,
        used_slots,
    }
}

/// A stats snapshot (`crate::stats`).
pub fn stats() -> crate::Stats {
    crate::insight::stats::snapshot()
}

// ---------------------------------------------------------------- locks --

/// The allocator's spin lock (`sync::RawLock`).
pub struct Lock(RawLock);

impl Lock {
    /// An unlocked lock.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Lock(RawLock::new())
    }

    /// Takes the lock.
    pub fn lock(&self) {
        self.0.lock()
    }

    /// Releases the lock (holder only).
    pub fn unlock(&self) {
        self.0.unlock()
    }

    /// Runs `f` with the lock held.
    pub fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        self.0.with(f)
    }
}

// ----------------------------------------------------------------- fork --

/// The `pthread_atfork` prepare handler: takes every allocator lock.
pub fn fork_prepare() {
    crate::core::fork::prepare()
}

/// The parent/child handler: releases every allocator lock.
pub fn fork_release() {
    crate::core::fork::release()
}

// ------------------------------------------------------------- sampling --

/// A profile of the sampling profiler (`sample::Profiler`): `S` sites of
/// up to `F` frames, `B` live-table buckets (of
/// [`BUCKET_SLOTS`](crate::profile::sampling::BUCKET_SLOTS) entries). Built
/// per model execution; every method forwards to the code `malloc` and
/// `free` run when sampling, or to the reader a report uses.
#[cfg(feature = "sampling")]
pub struct Profiler<const S: usize, const F: usize, const B: usize> {
    inner: crate::insight::sample::Profiler<S, F, B>,
}

/// A small profile: 4 sites of 4 frames, 2 live buckets.
#[cfg(feature = "sampling")]
pub type SmallProfiler = Profiler<4, 4, 2>;

#[cfg(feature = "sampling")]
pub use crate::insight::sample::SiteCounts;

#[cfg(feature = "sampling")]
impl<const S: usize, const F: usize, const B: usize> Profiler<S, F, B> {
    /// An empty profile (`Profiler::new`).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Profiler {
            inner: crate::insight::sample::Profiler::new(),
        }
    }

    /// What a sample taken in `malloc` does (`Profiler::record`): finds or
    /// claims the site of `stack`, records the block at `addr` (non-zero,
    /// 16-byte aligned) in the live table, and counts the sample.
    pub fn record(&self, addr: usize, bytes: usize, interval: usize, stack: &[usize]) {
        self.inner.record(addr, bytes, interval, stack)
    }

    /// What `free` does while sampling (`Profiler::free`): takes the block
    /// at `addr` off the live table and its weight off its site.
    pub fn free(&self, addr: usize) {
        self.inner.free(addr)
    }

    /// The site table as a report reads it (`SiteTable::read`).
    pub fn sites(&self) -> Vec<SiteCounts> {
        self.inner.loom_sites()
    }

    /// Estimated live bytes over all sites, as a report sums them.
    pub fn live_bytes(&self) -> u64 {
        self.sites().iter().map(SiteCounts::live_bytes).sum()
    }

    /// Entries in the live table.
    pub fn live_blocks(&self) -> usize {
        self.inner.loom_live_blocks()
    }

    /// The live-table bucket of `addr`.
    pub fn bucket_of(addr: usize) -> usize {
        crate::insight::sample::Profiler::<S, F, B>::loom_bucket_of(addr)
    }
}

// ---------------------------------------------------------- purge wake --

/// A purge deadline was set: the announcer's half of the purge thread's
/// wake protocol (`purge_thread::deadline_set`).
pub fn purge_deadline_set() {
    crate::core::purge_thread::deadline_set();
}

/// The purge thread's half before it waits: the futex word's value it
/// would wait on, and the deadline it read through `next_deadline`.
pub fn purge_prepare_sleep(next_deadline: impl Fn() -> u64) -> (u32, u64) {
    crate::core::purge_thread::wake().prepare(next_deadline)
}

/// The purge thread's futex word now.
pub fn purge_wake_word() -> u32 {
    crate::core::purge_thread::wake().word()
}
