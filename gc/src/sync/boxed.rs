//! Sync layer: what a `sync::Gc` allocation is made of — the [`Header`]
//! with its strong and weak words, their bits, the vtable of the value's
//! type-erased operations — and the count operations every other file of
//! the sync module acts through (the collector's hold and release, the
//! guarded upgrade, the last release with its trashcan).
//!
//! # The two words
//!
//! ```text
//! strong: [epoch 3][.. flags ..][count 32]   strong handles, plus one while the collector holds the box
//! weak:   [count 32]                         weak handles, + 1 for all the strong ones (as in std::sync::Arc),
//!                                            + 1 while the box is on the candidate stack
//! ```
//!
//! Every flag a mutator must react to lives in the strong word, so the one
//! read-modify-write that `clone`, `upgrade` or `drop` does anyway also
//! tells it whether a collection is looking at the box. Whoever makes the
//! weak word zero frees the box.

use std::alloc::{dealloc, Layout};
use std::cell::Cell;
use std::mem;
use std::ptr::{self, NonNull};

use super::shim::{yield_now, AtomicPtr, AtomicU64, Ordering};
use crate::header::Visitor;
use crate::trace::Trace;

/// Bits of the strong word holding the count.
pub(crate) const COUNT: u64 = (1 << 32) - 1;
/// A count this high means a reference count overflow is near: abort, as
/// `Arc` does, before the count can wrap.
pub(crate) const COUNT_LIMIT: u64 = 1 << 31;
/// The collection in progress holds one strong reference to the box and
/// has it in its scan: `clone` and `upgrade` must set [`DIRTY`].
pub(crate) const COLLECTING: u64 = 1 << 32;
/// A strong handle was created (cloned or upgraded) since the collection
/// began looking at the box: the box is reachable, whatever its counts say.
pub(crate) const DIRTY: u64 = 1 << 33;
/// The collection is deciding whether the box is garbage: `upgrade` waits
/// (a pause bounded by the decision, which runs no user code).
pub(crate) const SEALING: u64 = 1 << 34;
/// The collector found the box unreachable: weak handles of its current
/// epoch no longer upgrade.
pub(crate) const NO_UPGRADE: u64 = 1 << 35;
/// The collector dropped the value; only the box remains, for handles that
/// a `Drop` impl of the garbage kept. Dereferencing panics.
pub(crate) const DROPPED: u64 = 1 << 36;
/// `finalize` ran (it runs at most once per object).
pub(crate) const FINALIZED: u64 = 1 << 37;
/// The box survived a collection: young collections leave it out (it
/// waits for a full one, CPython's oldest generation).
pub(crate) const OLD: u64 = 1 << 38;
/// The box is on the candidate stack, or taken off it by a collection that
/// has not held it yet (see `buffer`).
pub(crate) const CANDIDATE: u64 = 1 << 39;
/// Shift of the weak epoch (see `Weak`): bumped when a finalizer resurrects
/// a box whose weak handles were cleared, so those stay dead while new ones
/// upgrade.
pub(crate) const EPOCH_SHIFT: u32 = 40;
/// The epoch bits of the strong word.
pub(crate) const EPOCH: u64 = (EPOCHS as u64 - 1) << EPOCH_SHIFT;
/// Number of weak epochs: as many as the low bits of a `Header` address
/// that its alignment leaves free, where a `Weak` keeps the epoch it was
/// made in.
pub(crate) const EPOCHS: usize = mem::align_of::<Header>();

// The epochs fit the strong word above its flags.
const _: () = assert!(EPOCHS.is_power_of_two() && (EPOCHS as u64) < 1 << (64 - EPOCH_SHIFT));
// The decision claims a sealed box (and may mark it dropped) with one
// addition (`sync::collect`).
const _: () = assert!(NO_UPGRADE == SEALING << 1 && DROPPED == NO_UPGRADE << 1);

/// The ordering of every read-modify-write of the strong word, and of the
/// collector's reads of it: sequentially consistent, so that the proof of
/// the collector (the `sync` module's documentation) can reason about one
/// total order of them. On x86-64 a `SeqCst` read-modify-write is the same
/// instruction as a `Relaxed` one.
pub(crate) const STRONG: Ordering = Ordering::SeqCst;

/// Type-erased operations on the value of a box.
pub(crate) struct VTable {
    /// Report the value's `sync::Gc`s to the visitor.
    pub(crate) trace: unsafe fn(NonNull<Header>, &mut Visitor),
    /// Run the value's `Finalize::finalize`.
    pub(crate) finalize: unsafe fn(NonNull<Header>),
    /// Drop the value in place.
    pub(crate) drop_value: unsafe fn(NonNull<Header>),
    /// Free the allocation (the value is already dropped or moved out).
    pub(crate) dealloc: unsafe fn(NonNull<Header>),
    /// `T::NEEDS_FINALIZE`.
    pub(crate) needs_finalize: bool,
}

/// The header of every `sync::Gc` allocation, followed by the value.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) strong: AtomicU64,
    pub(crate) weak: AtomicU64,
    /// Link of the candidate stack while `CANDIDATE`.
    pub(crate) next: AtomicPtr<Header>,
    /// The collector's index of the box in its scan, touched only by the
    /// collector (holding the collection lock) while it holds the box; once
    /// the count is zero, the link of the trashcan queue.
    slot: AtomicPtr<Header>,
    pub(crate) vtable: &'static VTable,
}

impl Header {
    /// The collector's index of the box (see `slot`).
    pub(crate) fn index(&self) -> usize {
        self.slot.load(Ordering::Relaxed).addr()
    }

    pub(crate) fn set_index(&self, i: usize) {
        self.slot
            .store(ptr::without_provenance_mut(i), Ordering::Relaxed);
    }
}

/// A `sync::Gc` allocation.
#[repr(C)]
pub(crate) struct GcBox<T> {
    pub(crate) header: Header,
    pub(crate) value: T,
}

impl<T: Trace + Send + Sync> GcBox<T> {
    pub(crate) const VTABLE: &'static VTable = &VTable {
        trace: trace_value::<T>,
        finalize: finalize_value::<T>,
        drop_value: drop_value::<T>,
        dealloc: dealloc_box::<T>,
        needs_finalize: T::NEEDS_FINALIZE,
    };

    /// Allocate a box holding `value` with one strong handle.
    pub(crate) fn allocate(value: T) -> NonNull<Header> {
        let b = Box::new(GcBox {
            header: Header {
                strong: AtomicU64::new(1),
                weak: AtomicU64::new(1),
                next: AtomicPtr::new(ptr::null_mut()),
                slot: AtomicPtr::new(ptr::null_mut()),
                vtable: Self::VTABLE,
            },
            value,
        });
        NonNull::from(Box::leak(b)).cast()
    }
}

/// The value of the box `h`.
///
/// # Safety
///
/// `h` is the header of a live `GcBox<T>`.
#[inline(always)]
pub(crate) unsafe fn value<'a, T>(h: NonNull<Header>) -> &'a T {
    // SAFETY: guaranteed by the caller; `GcBox` is `repr(C)` with the header
    // first, so the header pointer is the box pointer.
    unsafe { &(*h.cast::<GcBox<T>>().as_ptr()).value }
}

unsafe fn trace_value<T: Trace>(h: NonNull<Header>, v: &mut Visitor) {
    // SAFETY: the vtable of a `GcBox<T>` is only called on its value, which
    // the collector keeps alive (it holds a strong reference).
    unsafe { value::<T>(h) }.trace(v)
}

unsafe fn finalize_value<T: Trace>(h: NonNull<Header>) {
    // SAFETY: as in `trace_value`.
    unsafe { value::<T>(h) }.finalize()
}

unsafe fn drop_value<T>(h: NonNull<Header>) {
    // SAFETY: the caller drops each value exactly once, when no handle can
    // reach it any more (count zero) or after marking it `DROPPED`.
    unsafe { ptr::drop_in_place(&raw mut (*h.cast::<GcBox<T>>().as_ptr()).value) }
}

unsafe fn dealloc_box<T>(h: NonNull<Header>) {
    // SAFETY: the box was allocated by `Box::new` as a `GcBox<T>`; its
    // value is dropped or moved out, so only the memory is freed.
    unsafe { dealloc(h.as_ptr().cast(), Layout::new::<GcBox<T>>()) }
}

/// The header of the box `h`.
#[inline(always)]
pub(crate) fn header<'a>(h: NonNull<Header>) -> &'a Header {
    // SAFETY: every `NonNull<Header>` of this module points at a box that
    // is allocated while the pointer is in use (a handle, a hold or the
    // candidate stack keeps it).
    unsafe { h.as_ref() }
}

#[cold]
#[inline(never)]
pub(crate) fn count_overflow() -> ! {
    // As `Arc`: an overflowing count would free a live value; the program
    // has leaked billions of handles.
    eprintln!("strata_gc::sync: reference count overflow");
    std::process::abort()
}

/// Add a strong reference for a handle being cloned from a live one. The
/// new handle is visible to a collection looking at the box: it sets
/// [`DIRTY`] (safe to touch the box after the increment: the handle cloned
/// from keeps it alive).
#[inline]
pub(crate) fn inc_strong(h: NonNull<Header>) {
    let old = header(h).strong.fetch_add(1, STRONG);
    if old & (COUNT_LIMIT | COLLECTING) != 0 {
        inc_strong_slow(h, old);
    }
}

#[cold]
#[inline(never)]
fn inc_strong_slow(h: NonNull<Header>, old: u64) {
    if old & COUNT >= COUNT_LIMIT {
        count_overflow();
    }
    header(h).strong.fetch_or(DIRTY, STRONG);
}

/// Outcome of [`try_upgrade`].
pub(crate) enum Upgrade {
    /// A strong reference was added.
    Done,
    /// The value is gone (count zero) or the collector cleared weak
    /// references of `epoch`.
    Dead,
}

/// Add a strong reference if the box's value is alive and weak handles of
/// `epoch` still upgrade. Waits while a collection decides the box's fate.
pub(crate) fn try_upgrade(h: NonNull<Header>, epoch: u64) -> Upgrade {
    let strong = &header(h).strong;
    let mut cur = strong.load(Ordering::Relaxed);
    loop {
        if cur & COUNT == 0 || cur & (NO_UPGRADE | DROPPED) != 0 || epoch_of(cur) != epoch {
            return Upgrade::Dead;
        }
        if cur & SEALING != 0 {
            // The decision runs no user code and ends soon; an upgrade
            // now must not return before it knows the answer.
            yield_now();
            cur = strong.load(Ordering::Relaxed);
            continue;
        }
        if cur & COUNT >= COUNT_LIMIT {
            count_overflow();
        }
        let dirty = if cur & COLLECTING != 0 { DIRTY } else { 0 };
        // Acquire (in `STRONG`): the value this handle will read was
        // written before the strong reference it is made from was released.
        match strong.compare_exchange_weak(cur, (cur + 1) | dirty, STRONG, Ordering::Relaxed) {
            Ok(_) => return Upgrade::Done,
            Err(now) => cur = now,
        }
    }
}

/// The weak epoch recorded in a strong word.
#[inline]
pub(crate) fn epoch_of(strong: u64) -> u64 {
    (strong & EPOCH) >> EPOCH_SHIFT
}

/// Drop a weak reference (a `Weak`, or the one all strong handles share);
/// frees the box when the weak word reaches zero.
///
/// # Safety
///
/// The caller owns the weak reference it gives up, and the value is dropped
/// or moved out if this may be the last one.
pub(crate) unsafe fn release_weak(h: NonNull<Header>) {
    let weak = &header(h).weak;
    if weak.fetch_sub(1, Ordering::Release) == 1 {
        // Acquire: pairs with the Release decrements of the other weak
        // references (a load rather than a fence, which ThreadSanitizer
        // does not model; `Arc` does the same under it).
        weak.load(Ordering::Acquire);
        // SAFETY: the weak word is zero: no handle, no hold and not the
        // candidate stack refer to the box, and the value is gone.
        unsafe { (header(h).vtable.dealloc)(h) }
    }
}

/// Give up a strong reference whose release made the count zero (`old` is
/// the strong word before it): drop the value unless the collector did,
/// then the weak reference the strong ones shared. Values released while
/// another release is already dropping values on this thread deeper than
/// [`TRASHCAN_DEPTH`] are queued and dropped by the outermost one, so a
/// long chain is freed without recursion (CPython's trashcan).
///
/// # Safety
///
/// The caller's decrement made the count zero. It was a read-modify-write
/// with [`STRONG`] ordering, whose Acquire half pairs with the Release
/// decrements of the other handles: their uses of the value happen before
/// its drop.
pub(crate) unsafe fn release_last(h: NonNull<Header>, old: u64) {
    if old & DROPPED != 0 {
        // SAFETY: the collector dropped the value; the strong references'
        // weak reference is ours to give up.
        unsafe { release_weak(h) };
        return;
    }
    let depth = TRASHCAN.try_with(|t| {
        let d = t.depth.get();
        if d >= TRASHCAN_DEPTH {
            let pending = t.pending.get();
            header(h).slot.store(pending, Ordering::Relaxed);
            t.pending.set(h.as_ptr());
            None
        } else {
            t.depth.set(d + 1);
            Some(d)
        }
    });
    match depth {
        // Queued: the outermost release drops it.
        Ok(None) => {}
        Ok(Some(d)) => {
            // SAFETY: the count is zero: nothing else reaches the value.
            unsafe { destroy(h) };
            if d == 0 {
                // SAFETY: each queued box had its count reach zero.
                unsafe { drain_trashcan() };
            }
            let _ = TRASHCAN.try_with(|t| t.depth.set(t.depth.get() - 1));
        }
        // Thread teardown: no trashcan, recurse.
        // SAFETY: as above.
        Err(_) => unsafe { destroy(h) },
    }
}

/// Drop the value of `h` and give up the strong handles' weak reference.
///
/// # Safety
///
/// The count of `h` is zero and its value not dropped.
unsafe fn destroy(h: NonNull<Header>) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (header(h).vtable.drop_value)(h);
        release_weak(h);
    }
}

/// Drop the values queued by nested releases, one at a time (each may queue
/// more).
///
/// # Safety
///
/// Every queued box had its count reach zero.
unsafe fn drain_trashcan() {
    loop {
        let next = TRASHCAN.try_with(|t| {
            let p = t.pending.get();
            if let Some(h) = NonNull::new(p) {
                t.pending.set(header(h).slot.load(Ordering::Relaxed));
            }
            p
        });
        match next.ok().and_then(NonNull::new) {
            // SAFETY: queued boxes have a count of zero.
            Some(h) => unsafe { destroy(h) },
            None => return,
        }
    }
}

/// Nesting depth at which releases stop recursing and queue boxes instead.
const TRASHCAN_DEPTH: usize = 50;

/// Per-thread queue of boxes whose value still has to be dropped, chained
/// through `Header::slot`. Const-initialised and without a destructor.
struct Trashcan {
    depth: Cell<usize>,
    pending: Cell<*mut Header>,
}

#[cfg(not(loom))]
thread_local! {
    static TRASHCAN: Trashcan = const {
        Trashcan { depth: Cell::new(0), pending: Cell::new(ptr::null_mut()) }
    };
}

#[cfg(loom)]
loom::thread_local! {
    static TRASHCAN: Trashcan = Trashcan { depth: Cell::new(0), pending: Cell::new(ptr::null_mut()) };
}
