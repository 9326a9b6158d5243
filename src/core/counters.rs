//! Core layer: allocation counters — per thread, the blocks and bytes it
//! allocated and freed and its peak net bytes, and the process-wide table
//! of live threads' counters that `profile` sums.
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

use crate::core::abandoned::abandoned;
use crate::core::hooks;
use crate::core::secure;
use crate::core::sync::{Ordering, RawLock};

/// `Heap::counters_slot` of a thread whose counters are not listed.
pub(crate) const NO_SLOT: usize = usize::MAX;

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
    /// Count at all: set for every listed thread by `profile` (under the
    /// table lock), read by the owner on each allocation and free. Kept per
    /// thread so that the fast paths test a thread-local byte rather than
    /// load a global.
    enabled: core::sync::atomic::AtomicBool,
    /// The owner's heap id (0 until its heap starts).
    heap_id: core::sync::atomic::AtomicUsize,
    /// `heap_id` while the owner does not count (and frees do not zero
    /// blocks, secure level 2), else [`NO_FREE_KEY`]:
    /// what the owner's free fast path compares a pool's owner with, so
    /// that one compare both finds its own pools and leaves the fast path
    /// while counting. Written with `enabled`.
    free_key: core::sync::atomic::AtomicUsize,
}

/// [`Counters::free_key`] while counting (or before the heap starts): the
/// owner of no pool (heap ids count up from 1; `ABANDONED` and
/// `TYPED_OWNER` are the two highest values).
pub(crate) const NO_FREE_KEY: usize = usize::MAX - 2;

/// Adds `n` to an owner-only counter without a read-modify-write
/// instruction; returns the new value.
#[inline(always)]
fn bump(counter: &core::sync::atomic::AtomicUsize, n: usize) -> usize {
    let value = counter.load(Ordering::Relaxed).wrapping_add(n);
    counter.store(value, Ordering::Relaxed);
    value
}

impl Counters {
    pub(crate) const fn new() -> Self {
        use core::sync::atomic::{AtomicIsize, AtomicUsize};
        Counters {
            alloc_blocks: AtomicUsize::new(0),
            alloc_bytes: AtomicUsize::new(0),
            free_blocks: AtomicUsize::new(0),
            free_bytes: AtomicUsize::new(0),
            peak_net: AtomicIsize::new(0),
            enabled: core::sync::atomic::AtomicBool::new(false),
            heap_id: AtomicUsize::new(0),
            free_key: AtomicUsize::new(NO_FREE_KEY),
        }
    }

    /// What the owner's free fast path compares a pool's owner with (see
    /// `free_key`).
    #[inline(always)]
    pub(crate) fn free_key(&self) -> usize {
        self.free_key.load(Ordering::Relaxed)
    }

    /// Records the owner's heap id, once its heap starts (before the
    /// counters are listed, so no other thread writes them meanwhile).
    pub(crate) fn set_heap_id(&self, id: usize) {
        self.heap_id.store(id, Ordering::Relaxed);
        self.set_enabled(self.enabled());
    }

    /// Turns counting on or off, with the free key.
    fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        let id = self.heap_id.load(Ordering::Relaxed);
        // At secure level 2 the owner's frees all take the slow path,
        // which zeroes blocks: the fast path stays as it is at level 1.
        let key = if on || id == 0 || secure::zeroes() {
            NO_FREE_KEY
        } else {
            id
        };
        self.free_key.store(key, Ordering::Relaxed);
    }

    /// Whether the owner counts its allocations and frees now.
    #[inline(always)]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counts the block at `ptr`, of `bytes`, allocated by the owner (off
    /// the fast path: only while [`Counters::enabled`]), and tells the
    /// sampler, if one is installed.
    #[cold]
    #[inline(never)]
    pub(crate) fn count_alloc(&self, ptr: *mut u8, bytes: usize) {
        bump(&self.alloc_blocks, 1);
        let allocated = bump(&self.alloc_bytes, bytes);
        let net = allocated.wrapping_sub(self.free_bytes.load(Ordering::Relaxed)) as isize;
        if net > self.peak_net.load(Ordering::Relaxed) {
            self.peak_net.store(net, Ordering::Relaxed);
        }
        if let Some(sampler) = hooks::sampler() {
            (sampler.on_alloc)(ptr, bytes);
        }
    }

    /// Counts the block at `ptr`, of `bytes`, freed by the owner (off the
    /// fast path), and tells the sampler, if one is installed. Call it
    /// before the block is actually freed, so that its address cannot have
    /// been reused yet.
    #[cold]
    #[inline(never)]
    pub(crate) fn count_free(&self, ptr: *mut u8, bytes: usize) {
        bump(&self.free_blocks, 1);
        bump(&self.free_bytes, bytes);
        if let Some(sampler) = hooks::sampler() {
            (sampler.on_free)(ptr);
        }
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
pub(crate) struct LiveCounters {
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
    pub(crate) fn claim(&self, counters: *const Counters) -> usize {
        self.lock().with(|| {
            // SAFETY: we hold the lock.
            let (slots, high) = unsafe { (&mut *self.slots.get(), &mut *self.high.get()) };
            let Some(i) = slots.iter().position(|s| s.is_null()) else {
                return NO_SLOT;
            };
            slots[i] = counters;
            *high = (*high).max(i + 1);
            // SAFETY: we hold the lock; `counters` is live (caller).
            unsafe { (*counters).set_enabled(*self.reasons.get() != 0) };
            i
        })
    }

    /// Open reasons to count.
    pub(crate) fn reasons(&self) -> usize {
        // SAFETY: we hold the lock.
        self.lock().with(|| unsafe { *self.reasons.get() })
    }

    /// Adds `delta` (1 or -1) to the open reasons to count; on a change
    /// between none and some, turns counting on or off for every listed
    /// thread and for the calling one, whose counters are `own` (listed or
    /// not). Other threads see the change within a moment (a relaxed flag).
    pub(crate) fn add_reason(&self, delta: isize, own: &Counters) {
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
                    unsafe { (*c).set_enabled(on) };
                }
            }
            on
        });
        own.set_enabled(on);
    }

    /// Unlists slot `slot` (if any) and folds `counters` into the exited
    /// total, then zeroes them: sums taken under the lock see each count
    /// exactly once.
    pub(crate) fn retire(&self, slot: usize, counters: &Counters) {
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
    pub(crate) fn totals(&self) -> Counts {
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

/// The process-wide table of live threads' counters.
pub(crate) fn live_counters() -> &'static LiveCounters {
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
