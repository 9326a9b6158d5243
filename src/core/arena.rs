//! Core layer: arenas.
//!
//! Arenas: big aligned OS reservations cut into fixed slots.
//!
//! An arena is `ARENA_SIZE` bytes aligned to `ARENA_SIZE`, so masking any
//! pointer inside it finds its header in O(1) (no radix tree). Slot 0 holds
//! the header: the slot bitmaps, the slot -> pool map and a fixed metadata
//! area per slot that the pool layer fills in. The other slots are handed
//! out in runs of 1..=16 to become pools.
//!
//! The registry (one per process, behind a spin lock taken only on slow
//! paths) owns the list of arenas. It hands out slot runs from the fullest
//! arena that fits, preferring slots that are still committed, so lightly
//! used arenas drain and can be returned (pymalloc's "sort arenas by
//! fullness"). Freed slots stay committed ("dirty") until the arena has
//! been quiet for the purge delay; then they are decommitted with
//! `MADV_DONTNEED`, and an arena with no pool left is unmapped.

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::chunk_map;
use crate::core::os;
use crate::core::secure;
use crate::core::sync::{AtomicU64, AtomicUsize, Ordering, RawLock};

/// Arena size and alignment. 4 MiB: big enough that `mmap` calls are rare
/// and one bitmap word covers all slots, small enough that one lightly used
/// arena pins little address space.
pub const ARENA_SIZE: usize = 4 << 20;
/// Size of one slot, the unit a pool is made of. 64 KiB: a pool of small
/// blocks holds ~1000 of them, so pools are fetched rarely.
pub const POOL_SIZE: usize = 64 << 10;
/// Slots per arena (slot 0 is the header).
pub const SLOTS_PER_ARENA: usize = ARENA_SIZE / POOL_SIZE;
/// Bytes of metadata reserved per slot for the pool layer.
pub const SLOT_META_SIZE: usize = if cfg!(loom) { 256 } else { 128 };

const POOL_SHIFT: u32 = POOL_SIZE.trailing_zeros();
/// Bitmap of the slots that can hold pools.
const ALL_POOL_SLOTS: u64 = !1;
/// The last slot, kept `PROT_NONE` at the secure level: a guard between
/// the last pool of an arena and whatever is mapped after it.
const GUARD_SLOT: usize = SLOTS_PER_ARENA - 1;

/// The slots of an arena that can hold pools: all but the header's, and
/// at the secure level ([`secure::guards`]) all but [`GUARD_SLOT`] too.
#[inline]
fn pool_slots() -> u64 {
    if secure::guards() {
        ALL_POOL_SLOTS & !(1 << GUARD_SLOT)
    } else {
        ALL_POOL_SLOTS
    }
}
/// First word of every arena header; large-block headers use another.
pub(crate) const ARENA_MAGIC: usize = 0x5354_5241_5441_4152; // "STRATAAR"

const _: () = assert!(SLOTS_PER_ARENA == 64);

/// The header at the start of every arena.
#[repr(C, align(128))]
pub(crate) struct Arena {
    magic: usize,
    /// Registry list links (registry lock).
    next: *mut Arena,
    prev: *mut Arena,
    /// Bit i set: slot i is free (registry lock).
    free_slots: u64,
    /// Bit i set: slot i is free but its pages may still be committed.
    dirty_slots: u64,
    /// When a slot was last freed, in `os::now_ms` (registry lock).
    last_release_ms: u64,
    /// For each slot, the first slot of the pool covering it. Written under
    /// the registry lock when a pool is created, before any block of it is
    /// handed out; read by `free` of a block of that pool.
    slot_head: [u8; SLOTS_PER_ARENA],
    /// Pool metadata, one record per slot (only the first slot of a pool is
    /// used). Owned by the pool layer.
    meta: [SlotMeta; SLOTS_PER_ARENA],
}

/// One slot's metadata record, cache-line aligned.
#[repr(C, align(64))]
struct SlotMeta([u8; SLOT_META_SIZE]);

const _: () = assert!(core::mem::size_of::<Arena>() <= POOL_SIZE);

/// A run of slots handed out to become a pool.
#[derive(Clone, Copy)]
pub(crate) struct SlotRun {
    pub arena: *mut Arena,
    pub first: usize,
    pub count: usize,
}

impl SlotRun {
    /// Start of the run's memory.
    pub fn start(&self) -> *mut u8 {
        // SAFETY: `first < SLOTS_PER_ARENA`, so the offset stays inside the
        // arena's reservation.
        unsafe { self.arena.cast::<u8>().add(self.first * POOL_SIZE) }
    }

    /// The metadata record of the run (its first slot's).
    pub fn meta(&self) -> *mut u8 {
        slot_meta(self.arena, self.first)
    }
}

/// The arena containing `p`, which must point into an arena block (small
/// blocks only: large blocks have their own header kind).
#[inline(always)]
pub(crate) fn arena_of(p: *const u8) -> *mut Arena {
    p.map_addr(|a| a & !(ARENA_SIZE - 1)).cast_mut().cast()
}

/// The metadata record of the pool containing block `p`.
///
/// # Safety
/// `p` must point into a pool of a live arena.
#[inline(always)]
pub(crate) unsafe fn pool_meta_of(p: *const u8) -> *mut u8 {
    let arena = arena_of(p);
    let slot = (p.addr() & (ARENA_SIZE - 1)) >> POOL_SHIFT;
    // SAFETY: the arena is live (caller) and `slot < SLOTS_PER_ARENA`; the
    // slot's head entry was written before the block was handed out.
    let head = unsafe { (*arena).slot_head[slot] } as usize;
    slot_meta(arena, head)
}

fn slot_meta(arena: *mut Arena, slot: usize) -> *mut u8 {
    // SAFETY: only computes an address inside the header; `slot` is in range.
    unsafe {
        ptr::addr_of_mut!((*arena).meta)
            .cast::<u8>()
            .add(slot * SLOT_META_SIZE)
    }
}

/// Bits set where a run of `n` consecutive set bits of `mask` starts.
fn run_starts(mask: u64, n: usize) -> u64 {
    let mut starts = mask;
    for k in 1..n {
        starts &= mask >> k;
    }
    starts
}

/// Mask of `n` bits starting at bit `first`.
fn run_mask(first: usize, n: usize) -> u64 {
    let bits = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    bits << first
}

/// Marks a run's slots free and dirty (released at `now`).
///
/// # Safety
/// The registry lock must be held and the run must be in use (so its arena
/// is mapped).
unsafe fn mark_free(run: &SlotRun, now: u64) {
    // SAFETY: the arena is mapped and the lock serialises header access.
    let a = unsafe { &mut *run.arena };
    let mask = run_mask(run.first, run.count);
    debug_assert!(a.free_slots & mask == 0, "slot run released twice");
    a.free_slots |= mask;
    a.dirty_slots |= mask;
    a.last_release_ms = now;
}

/// Totals the registry keeps for [`crate::stats`].
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct ArenaTotals {
    pub arenas: usize,
    /// Slots that never hold a pool: the headers, and the guard slots at
    /// the secure level.
    pub reserved_slots: usize,
    pub free_slots: usize,
    pub dirty_slots: usize,
    pub arenas_unmapped: usize,
    pub purged_bytes: usize,
}

struct RegistryState {
    first: *mut Arena,
    arenas: usize,
    arenas_unmapped: usize,
    purged_bytes: usize,
}

/// The process-wide list of arenas.
pub(crate) struct Registry {
    lock: RawLock,
    state: UnsafeCell<RegistryState>,
    /// 0 if nothing waits for a purge, else the earliest `now_ms` at which
    /// some dirty slots may be decommitted. Read without the lock on slow
    /// paths to decide whether taking it is worth it.
    purge_deadline: AtomicU64,
    /// How long freed slots stay committed, in ms (from `STRATA_PURGE_DELAY`).
    pub purge_delay_ms: AtomicU64,
    /// Bytes of arenas currently mapped (for stats without the lock).
    pub mapped_bytes: AtomicUsize,
}

// SAFETY: `state` is only accessed with `lock` held; the rest are atomics.
unsafe impl Sync for Registry {}

/// Default purge delay: long enough that a program freeing a wave of
/// objects and allocating the next one (hundreds of MiB, tens of ms each
/// way) reuses its committed pages instead of faulting them in again
/// (10 ms, mimalloc's delay, refaulted 64-byte waves three times in four),
/// short enough that RSS follows the live heap within a fraction of a
/// second.
pub const DEFAULT_PURGE_DELAY_MS: u64 = 100;

impl Registry {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Registry {
            lock: RawLock::new(),
            state: UnsafeCell::new(RegistryState {
                first: ptr::null_mut(),
                arenas: 0,
                arenas_unmapped: 0,
                purged_bytes: 0,
            }),
            purge_deadline: AtomicU64::new(0),
            purge_delay_ms: AtomicU64::new(DEFAULT_PURGE_DELAY_MS),
            mapped_bytes: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Registry {
            lock: RawLock::new(),
            state: UnsafeCell::new(RegistryState {
                first: ptr::null_mut(),
                arenas: 0,
                arenas_unmapped: 0,
                purged_bytes: 0,
            }),
            purge_deadline: AtomicU64::new(0),
            purge_delay_ms: AtomicU64::new(DEFAULT_PURGE_DELAY_MS),
            mapped_bytes: AtomicUsize::new(0),
        }
    }

    /// The lock, for the `fork` handlers.
    pub(crate) fn lock(&self) -> &RawLock {
        &self.lock
    }

    /// Adds `bytes` returned to the OS outside the registry (free blocks
    /// purged inside pools) to the purge total.
    pub(crate) fn count_purged(&self, bytes: usize) {
        self.with_state(|state| state.purged_bytes += bytes);
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut RegistryState) -> R) -> R {
        // SAFETY: the lock serialises every access to `state`.
        self.lock.with(|| f(unsafe { &mut *self.state.get() }))
    }

    /// Hands out `count` consecutive free slots (1..=16), mapping a new
    /// arena if none has room. Returns `None` when the OS refuses memory.
    #[cfg(any(test, loom))]
    pub(crate) fn acquire(&self, count: usize) -> Option<SlotRun> {
        self.acquire_with(count, |run| *run)
    }

    /// Like [`Registry::acquire`], running `init` on the run before the
    /// lock is released, so [`Registry::for_each_pool`] never sees a slot
    /// run whose pool metadata is not written yet.
    pub(crate) fn acquire_with<R>(
        &self,
        count: usize,
        init: impl FnOnce(&SlotRun) -> R,
    ) -> Option<R> {
        debug_assert!((1..SLOTS_PER_ARENA).contains(&count));
        let run = self.with_state(|state| {
            let mut best: *mut Arena = ptr::null_mut();
            let mut best_free = u32::MAX;
            let mut arena = state.first;
            while !arena.is_null() {
                // SAFETY: arenas in the list are mapped; we hold the lock.
                let a = unsafe { &*arena };
                let free = a.free_slots.count_ones();
                if free < best_free && run_starts(a.free_slots, count) != 0 {
                    best = arena;
                    best_free = free;
                }
                arena = a.next;
            }
            if best.is_null() {
                best = Self::map_arena(state, &self.mapped_bytes);
                if best.is_null() {
                    return None;
                }
            }
            // SAFETY: `best` is a mapped arena; we hold the lock.
            let a = unsafe { &mut *best };
            // Prefer a run of committed slots: no page faults to refill it.
            let dirty = run_starts(a.dirty_slots, count);
            let starts = if dirty != 0 {
                dirty
            } else {
                run_starts(a.free_slots, count)
            };
            let first = starts.trailing_zeros() as usize;
            let mask = run_mask(first, count);
            a.free_slots &= !mask;
            a.dirty_slots &= !mask;
            for slot in first..first + count {
                a.slot_head[slot] = first as u8;
            }
            Some(init(&SlotRun {
                arena: best,
                first,
                count,
            }))
        });
        if run.is_none() {
            os::write_stderr(b"strata-alloc: the OS refused a new arena (out of memory)\n");
        }
        run
    }

    fn map_arena(state: &mut RegistryState, mapped: &AtomicUsize) -> *mut Arena {
        let base = os::reserve_aligned(ARENA_SIZE, ARENA_SIZE).cast::<Arena>();
        if base.is_null() {
            return base;
        }
        chunk_map::set(base.addr(), chunk_map::ARENA);
        let slots = pool_slots();
        if slots & (1 << GUARD_SLOT) == 0 {
            // Refused (too many mappings): the slot stays unused, unguarded.
            // SAFETY: the last slot of the fresh reservation, never handed
            // out, holds no data.
            unsafe {
                os::protect(
                    base.cast::<u8>().add(GUARD_SLOT * POOL_SIZE),
                    POOL_SIZE,
                    false,
                )
            };
        }
        // SAFETY: `base` is a fresh zeroed reservation big enough for the
        // header; we initialise the fields the registry reads.
        unsafe {
            ptr::addr_of_mut!((*base).magic).write(ARENA_MAGIC);
            ptr::addr_of_mut!((*base).free_slots).write(slots);
            ptr::addr_of_mut!((*base).dirty_slots).write(0);
            ptr::addr_of_mut!((*base).last_release_ms).write(0);
            ptr::addr_of_mut!((*base).prev).write(ptr::null_mut());
            ptr::addr_of_mut!((*base).next).write(state.first);
            if !state.first.is_null() {
                (*state.first).prev = base;
            }
        }
        state.first = base;
        state.arenas += 1;
        mapped.fetch_add(ARENA_SIZE, Ordering::Relaxed);
        base
    }

    /// Returns a run of slots whose pool holds no live block. Its pages stay
    /// committed until the arena has been quiet for the purge delay.
    ///
    /// # Safety
    /// The run must come from [`Registry::acquire`] and hold no live block;
    /// nobody may touch its memory afterwards.
    pub(crate) unsafe fn release(&self, run: SlotRun) {
        let now = os::now_ms();
        let delay = self.purge_delay_ms.load(Ordering::Relaxed);
        // An arena left with no pool waits for the purge delay like any
        // free slot (as in mimalloc): a program that frees a working set
        // and builds it again (a batch, a request) reuses it without
        // mapping and faulting it in anew; the purge unmaps it otherwise.
        self.with_state(|_| {
            // SAFETY: the run is ours, so its arena is mapped; lock held.
            unsafe { mark_free(&run, now) };
        });
        self.set_deadline(now.saturating_add(delay));
        if delay == 0 {
            self.purge(false);
        } else {
            self.maybe_purge();
        }
    }

    /// Returns many slot runs under one lock: for an owned heap's `reset`,
    /// whose memory the next cycle of the program usually wants back at
    /// once (the purge delay applies, as for [`Registry::release`]).
    ///
    /// # Safety
    /// As for [`Registry::release`], for every run.
    pub(crate) unsafe fn release_all(&self, runs: impl Iterator<Item = SlotRun>) {
        let now = os::now_ms();
        let delay = self.purge_delay_ms.load(Ordering::Relaxed);
        self.with_state(|_| {
            for run in runs {
                // SAFETY: the run is ours, so its arena is mapped; lock held.
                unsafe { mark_free(&run, now) };
            }
        });
        self.set_deadline(now.saturating_add(delay));
    }

    /// Runs a purge pass if one is due. Cheap when none is: one atomic load
    /// and, only then, a clock read.
    /// Sets the purge deadline to `at` unless one is pending (the earliest
    /// is kept; a later one is found by the purge pass itself).
    fn set_deadline(&self, at: u64) {
        let set = self
            .purge_deadline
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        if set.is_ok() {
            crate::core::purge_thread::deadline_set();
        }
    }

    /// When the next purge is due, or 0 if no slot waits for one.
    pub(crate) fn purge_deadline(&self) -> u64 {
        self.purge_deadline.load(Ordering::Relaxed)
    }

    pub(crate) fn maybe_purge(&self) {
        let deadline = self.purge_deadline.load(Ordering::Relaxed);
        if deadline != 0 && os::now_ms() >= deadline {
            self.purge(false);
        }
    }

    /// Decommits the dirty slots of arenas quiet for the purge delay (all of
    /// them if `force`) and unmaps arenas with no pool left.
    pub(crate) fn purge(&self, force: bool) {
        let now = os::now_ms();
        let delay = self.purge_delay_ms.load(Ordering::Relaxed);
        self.with_state(|state| {
            let mut next_deadline = u64::MAX;
            let mut arena = state.first;
            while !arena.is_null() {
                // SAFETY: listed arenas are mapped; we hold the lock.
                let a = unsafe { &mut *arena };
                let next = a.next;
                if a.dirty_slots != 0 {
                    if force || now >= a.last_release_ms.saturating_add(delay) {
                        if a.free_slots == pool_slots() {
                            Self::unmap_arena(state, arena, &self.mapped_bytes);
                        } else {
                            // The raw list pointer, not `a`: its provenance
                            // covers the whole arena, a `&mut Arena` only the
                            // header (Miri: Stacked Borrows).
                            state.purged_bytes += Self::decommit_dirty(arena);
                        }
                    } else {
                        next_deadline = next_deadline.min(a.last_release_ms.saturating_add(delay));
                    }
                }
                arena = next;
            }
            let next = if next_deadline == u64::MAX {
                0
            } else {
                next_deadline
            };
            self.purge_deadline.store(next, Ordering::Relaxed);
        });
    }

    /// Decommits every run of dirty slots of `arena` (listed, registry lock
    /// held); returns the bytes decommitted.
    fn decommit_dirty(arena: *mut Arena) -> usize {
        // SAFETY: listed arenas are mapped; we hold the lock.
        let mut dirty = unsafe { (*arena).dirty_slots };
        let mut bytes = 0;
        while dirty != 0 {
            let first = dirty.trailing_zeros() as usize;
            let len = (!(dirty >> first)).trailing_zeros() as usize;
            // SAFETY: the run is free (no live block) and inside the arena;
            // `arena` carries the provenance of the whole reservation.
            unsafe { os::decommit(arena.cast::<u8>().add(first * POOL_SIZE), len * POOL_SIZE) };
            bytes += len * POOL_SIZE;
            dirty &= !run_mask(first, len);
        }
        // SAFETY: as above.
        unsafe { (*arena).dirty_slots = 0 };
        bytes
    }

    fn unmap_arena(state: &mut RegistryState, arena: *mut Arena, mapped: &AtomicUsize) {
        // SAFETY: `arena` is listed and mapped, we hold the lock, and it has
        // no pool, so nothing points into it.
        unsafe {
            let (prev, next) = ((*arena).prev, (*arena).next);
            if prev.is_null() {
                state.first = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            chunk_map::set(arena.addr(), chunk_map::NONE);
            os::release(arena.cast(), ARENA_SIZE, ARENA_SIZE);
        }
        state.arenas -= 1;
        state.arenas_unmapped += 1;
        mapped.fetch_sub(ARENA_SIZE, Ordering::Relaxed);
    }

    /// Calls `f` with each pool's metadata record and slot count, under the
    /// registry lock (pools cannot be created or released meanwhile), then
    /// returns the arena totals.
    pub(crate) fn for_each_pool(&self, mut f: impl FnMut(*mut u8, usize)) -> ArenaTotals {
        self.with_state(|state| {
            let mut totals = ArenaTotals {
                arenas: state.arenas,
                reserved_slots: state.arenas * (!pool_slots()).count_ones() as usize,
                arenas_unmapped: state.arenas_unmapped,
                purged_bytes: state.purged_bytes,
                ..ArenaTotals::default()
            };
            let mut arena = state.first;
            while !arena.is_null() {
                // SAFETY: listed arenas are mapped; we hold the lock.
                let a = unsafe { &*arena };
                totals.free_slots += a.free_slots.count_ones() as usize;
                totals.dirty_slots += a.dirty_slots.count_ones() as usize;
                let mut used = pool_slots() & !a.free_slots;
                while used != 0 {
                    let first = used.trailing_zeros() as usize;
                    let mut count = 1;
                    while first + count < SLOTS_PER_ARENA
                        && used & (1 << (first + count)) != 0
                        && a.slot_head[first + count] as usize == first
                    {
                        count += 1;
                    }
                    f(slot_meta(arena, first), count);
                    used &= !run_mask(first, count);
                }
                arena = a.next;
            }
            totals
        })
    }
}

/// The process-wide registry.
#[cfg(not(loom))]
pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: Registry = Registry::new();
    &REGISTRY
}

/// The registry of the current loom execution.
#[cfg(loom)]
pub(crate) fn registry() -> &'static Registry {
    loom::lazy_static! {
        static ref REGISTRY: Registry = Registry::new();
    }
    &REGISTRY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_arithmetic() {
        assert_eq!(run_starts(0b0111_0110, 2), 0b0011_0010);
        assert_eq!(run_starts(0b0111_0110, 3), 0b0001_0000);
        assert_eq!(run_starts(0b0111_0110, 4), 0);
        assert_eq!(run_mask(3, 2), 0b11000);
        assert_eq!(run_mask(0, 64), u64::MAX);
    }

    #[test]
    fn acquire_release_and_purge() {
        let registry = Registry::new();
        let a = registry.acquire(1).expect("arena");
        let b = registry.acquire(16).expect("arena");
        assert_eq!(a.arena, b.arena, "second run comes from the same arena");
        assert_ne!(a.first, 0, "slot 0 holds the header");
        assert!(b.first + 16 <= SLOTS_PER_ARENA && (b.first > a.first || b.first + 16 <= a.first));
        // SAFETY: the runs are ours and hold nothing.
        unsafe {
            *a.start() = 7;
            assert_eq!(pool_meta_of(b.start().add(5 * POOL_SIZE + 3)), b.meta());
            let arena = a.arena;
            registry.release(a);
            assert!(registry.purge_deadline.load(Ordering::Relaxed) != 0);
            registry.purge(true);
            assert_eq!((*arena).dirty_slots, 0);
            registry.release(b);
        }
        registry.purge(true);
        let totals = registry.for_each_pool(|_, _| panic!("no pool is left"));
        assert_eq!(totals.arenas, 0, "an empty arena is unmapped by a purge");
        assert_eq!(totals.arenas_unmapped, 1);
    }

    #[test]
    fn fullest_arena_is_preferred() {
        let registry = Registry::new();
        let big: Vec<SlotRun> = (0..4)
            .map(|_| registry.acquire(15).expect("arena"))
            .collect();
        // 60 slots used: 3 free in the first arena. A 4-slot run needs a new one.
        let second = registry.acquire(4).expect("arena");
        assert_ne!(second.arena, big[0].arena);
        // A 2-slot run fits in both; the fuller first arena wins.
        let small = registry.acquire(2).expect("arena");
        assert_eq!(small.arena, big[0].arena);
        // SAFETY: all runs are ours and hold nothing.
        unsafe {
            for run in big.into_iter().chain([second, small]) {
                registry.release(run);
            }
        }
        registry.purge(true);
        assert_eq!(registry.for_each_pool(|_, _| ()).arenas, 0);
    }
}
