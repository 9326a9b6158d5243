//! Box/header layer: what a `Gc` allocation is made of — the counts word
//! and its bits, the [`Links`] record of a tracked box with the vtable of
//! its type-erased operations, and the [`Visitor`] that vtable's `trace` is
//! handed — plus the count and deallocation operations through which every
//! layer above acts on a box. Imports nothing of the crate.
//!
//! # Memory layout
//!
//! Every allocation holds a `GcBox<T>`: the 8-byte [`Counts`] header
//! followed by the value. Types that may own a `Gc` (`T::MAY_CONTAIN_GC`)
//! are *tracked*: their allocation also holds a [`Links`] record (CPython's
//! `PyGC_Head`) placed immediately before the counts, so a node is always
//! found at `counts - size_of::<Links>()` whatever `T` is (also for
//! `Gc<dyn Trait>`).
//!
//! ```text
//! untracked:  [strong u32][word u32][value T]                          8 B header
//! tracked:    [pad?][prev|flags][next][vtable][strong][word][value]   32 B header
//! ```
//!
//! The strong count has a 32-bit word of its own, as `Rc`'s has, so that
//! clones and drops that are not the last touch nothing else. The *counts
//! word* packs the weak count (bits 0..22, including one implicit weak
//! reference held collectively by the strong references, as in
//! `std::rc`), the height of an untracked object (bits 22..27, see
//! [`HEIGHT_BITS`]; bits 22..25 are the weak epoch of a tracked object,
//! which has no height, see [`WEAK_EPOCHS`]), and five flags: `TRACKED`
//! (the object is in a generation list), `NO_UPGRADE` (weak references
//! were cleared by the collector), `DROPPED` (the collector dropped the
//! value; the box is kept only for outstanding handles), `HAS_LINKS` (the
//! allocation carries a [`Links`] record) and [`PURPLE`] (a decrement
//! need not be told to the collector).
//!
//! A box with links is not necessarily tracked: a value that can never be
//! part of a cycle (see `Trace::INTERIOR_MUTABLE`) is left out of the
//! generation lists, like CPython's untracked tuples, and costs what an
//! `Rc` costs apart from its header.
//!
//! # Why the visitor is here
//!
//! [`NodeVTable::trace`] takes a [`Visitor`], and one of the visitor's
//! modes is the collector's stack of [`NodePtr`]s: the three types name each
//! other, so they live in one file. How a visited `Gc` is handled
//! (`Visitor::visit`) is defined beside `Gc`, in the pointer layer.

use std::alloc::Layout;
use std::any::TypeId;
use std::cell::Cell;
use std::mem::{self, MaybeUninit};

// ---------------------------------------------------------------------------
// The counts: the strong count, and the word of the weak count and flags
// ---------------------------------------------------------------------------

/// The 8-byte header of every box: the strong count in a word of its own
/// (like `Rc`'s, so that a clone or a drop that is not the last is one
/// increment or decrement and one test, which LLVM treats as it treats
/// `Rc`'s), and the *counts word*: the weak count, the height or the weak
/// epoch, and the flags. Aligned to 8 so that the low bits of a box
/// address are free for the weak epochs (see [`WEAK_EPOCHS`]).
#[repr(C, align(8))]
pub(crate) struct Counts {
    /// Strong (`Gc`) references; up to `u32::MAX`.
    pub(crate) strong: Cell<u32>,
    /// Weak count, height or epoch, flags (see the module docs).
    pub(crate) word: Cell<u32>,
}

impl Counts {
    #[inline]
    pub(crate) const fn new(strong: u32, word: u32) -> Counts {
        Counts {
            strong: Cell::new(strong),
            word: Cell::new(word),
        }
    }
}

/// Shift of the weak count in the counts word.
const WEAK_SHIFT: u32 = 0;
/// Width of the weak count (~4 million).
const WEAK_BITS: u32 = 22;
/// One weak reference in the counts word.
pub(crate) const WEAK_ONE: u32 = 1 << WEAK_SHIFT;
/// Bits of the counts word that hold the weak count.
pub(crate) const WEAK_MASK: u32 = ((1 << WEAK_BITS) - 1) << WEAK_SHIFT;
/// Shift of the height of an untracked object in the counts word.
const HEIGHT_SHIFT: u32 = WEAK_SHIFT + WEAK_BITS;
/// Number of height bits (see [`HEIGHT_BITS`]): up to the first flag.
pub(crate) const HEIGHT_WIDTH: u32 = TRACKED.trailing_zeros() - HEIGHT_SHIFT;
/// The height bits of the counts word. The height of an untracked object
/// is one more than that of the highest object it holds (all untracked
/// too, and immutable, so the height recorded at creation stays true);
/// boxes without links count as 0, so a box that holds no linked box is at
/// height 1.
///
/// It is kept as a thermometer code (height `h` is `h` low ones),
/// saturating at [`HEIGHT_WIDTH`] ([`TALL`]): the OR of codes is the code
/// of the highest, so a new object's height costs a few operations (see
/// [`height_above`]) instead of a maximum per field. Dropping an object
/// that is not tall recurses at most [`HEIGHT_WIDTH`] deep, so it is
/// released without the trashcan. Meaningless for a tracked object.
pub(crate) const HEIGHT_BITS: u32 = ((1 << HEIGHT_WIDTH) - 1) << HEIGHT_SHIFT;
/// The highest height bit: the height of the object saturated (it may be
/// any higher); its release goes through the trashcan.
pub(crate) const TALL: u32 = 1 << (HEIGHT_SHIFT + HEIGHT_WIDTH - 1);
/// Counts-word bits that send the release of an object down the slow path
/// (`Gc::drop_slow`): tracked, already dropped, or tall.
pub(crate) const SLOW_RELEASE: u32 = TRACKED | DROPPED | TALL;
/// The object is in a generation list (or a list of the collection in
/// progress). Kept in the counts word, which every last release reads.
pub(crate) const TRACKED: u32 = 1 << 27;
/// A decrement of the strong count to a non-zero value need not be told
/// to the collector. Set on every untracked box (from its creation) and on
/// tracked objects whose strong count dropped to a non-zero value since a
/// collection last looked at them (Bacon and Rajan's "purple" candidate
/// roots). The first such decrement of a tracked object tells the
/// collector (see `collector::note_decrement`) and sets the flag; a young
/// generation none of whose objects is purple holds no garbage. One flag
/// for both, so the test of a decrement that is not the last is one bit.
/// (Boxes the collector dropped may or may not have it: their decrements
/// do not matter.)
pub(crate) const PURPLE: u32 = 1 << 31;
/// The collector cleared weak references to this object: `upgrade` fails.
/// Set when the collector claims the object as garbage; cleared again if
/// it survives (a finalizer resurrected it, or `SAVEALL` kept it), after
/// the weak references of that time were retired by its [weak
/// epoch](WEAK_EPOCHS).
pub(crate) const NO_UPGRADE: u32 = 1 << 28;

/// Shift of the weak epoch in the counts word of a tracked object (which
/// has no height, so those bits are free).
const EPOCH_SHIFT: u32 = HEIGHT_SHIFT;
/// Number of weak epochs: as many as the low bits of a box address that
/// its alignment leaves free (the header's), at most 8 (the three
/// epoch bits of the counts word).
///
/// # Weak epochs
///
/// PEP 442 clears the weak references that exist when an object is found
/// unreachable, and only those: a `Weak` made after a finalizer resurrected
/// the object must upgrade, one made before must stay dead. Both point at
/// the same box, so each `Weak` carries the epoch of the object at its
/// creation in the low bits of its pointer (no extra word), and upgrades
/// only while that is still the object's epoch. Claiming an object that
/// has weak references moves it to the next epoch ([`clear_weak_refs`]);
/// when it survives, [`reopen_weak_refs`] lets the new epoch's weak
/// references upgrade again. The last epoch, [`POISONED_EPOCH`], is never
/// reopened: an object that survives with weak references more often
/// than there are epochs fails closed (no weak reference to it upgrades
/// again), it never lets a retired one upgrade. Objects that are not
/// tracked are never claimed and are always in epoch 0.
pub(crate) const WEAK_EPOCHS: usize = {
    let a = mem::align_of::<Counts>();
    if a < 8 {
        a
    } else {
        8
    }
};
/// Low bits of a `Weak`'s pointer that hold its epoch.
pub(crate) const WEAK_EPOCH_MASK: usize = WEAK_EPOCHS - 1;
/// The epoch bits of the counts word.
const EPOCH_BITS: u32 = (WEAK_EPOCH_MASK as u32) << EPOCH_SHIFT;
/// The last epoch: its weak references never upgrade.
const POISONED_EPOCH: usize = WEAK_EPOCHS - 1;

const _: () = assert!(WEAK_EPOCHS >= 2 && EPOCH_BITS & !HEIGHT_BITS == 0 && EPOCH_BITS & TALL == 0);
/// The collector dropped the value; dereferencing panics.
pub(crate) const DROPPED: u32 = 1 << 29;
/// The allocation carries a [`Links`] record just before the counts.
pub(crate) const HAS_LINKS: u32 = 1 << 30;

/// Low bits of [`Links::prev`] that are flags, not address bits.
pub(crate) const PREV_FLAGS: usize = 0b111;
/// `Finalize::finalize` already ran for this object (PEP 442: at most once).
pub(crate) const FINALIZED: usize = 0b001;
/// A `GcMut` guard is alive: the collector must not read the value.
pub(crate) const MUT_BORROWED: usize = 0b010;
/// Flags that survive a collection (the others are collection-local).
pub(crate) const PERSISTENT_FLAGS: usize = FINALIZED | MUT_BORROWED;

// ---------------------------------------------------------------------------
// Links and the vtable
// ---------------------------------------------------------------------------

/// Intrusive generation-list record of a tracked object (CPython's
/// `PyGC_Head`), plus the type-erased operations the collector needs.
///
/// Outside a collection `prev` is the address of the previous node with
/// [`PREV_FLAGS`] in its low bits; during a collection the collector reuses it
/// for `gc_refs` (see `collector`). `next` is null when the node is in no
/// generation list (untracked).
#[repr(C, align(8))]
pub(crate) struct Links {
    pub(crate) prev: Cell<NodePtr>,
    pub(crate) next: Cell<NodePtr>,
    pub(crate) vtable: &'static NodeVTable,
}

impl Links {
    /// The `prev` word as an integer (address and flag bits).
    #[inline]
    pub(crate) fn prev_bits(&self) -> usize {
        self.prev.get() as usize
    }

    /// Replace the integer value of `prev`, keeping its provenance (the
    /// strict-provenance way to store flags in pointer bits).
    #[inline]
    pub(crate) fn set_prev_bits(&self, bits: usize) {
        let p = self.prev.get();
        self.prev
            .set(p.wrapping_byte_offset((bits as isize).wrapping_sub(p as usize as isize)));
    }
}

/// Size of the [`Links`] record; the counts word sits this far after a node.
pub(crate) const LINKS_SIZE: usize = mem::size_of::<Links>();

/// A raw pointer to a tracked object's [`Links`] (or a list sentinel).
pub(crate) type NodePtr = *const Links;

/// Type-erased operations on a tracked object, one static table per type.
pub(crate) struct NodeVTable {
    /// Visit every `Gc` the value owns.
    pub(crate) trace: unsafe fn(NodePtr, &mut Visitor),
    /// Run `Finalize::finalize` on the value.
    pub(crate) finalize: unsafe fn(NodePtr),
    /// Drop the value in place (the box stays allocated).
    pub(crate) drop_value: unsafe fn(NodePtr),
    /// Free the allocation (the value must already be dropped or moved out).
    pub(crate) dealloc: unsafe fn(NodePtr),
    /// Give up one strong reference through the pointer layer's release
    /// path (`release::release_strong_node`), for holders below that layer:
    /// the `SAVEALL` garbage list of `collector::events`.
    pub(crate) release_strong: unsafe fn(NodePtr),
    /// `std::any::type_name` of the value.
    pub(crate) type_name: fn() -> &'static str,
    /// `TypeId` of the value.
    pub(crate) type_id: fn() -> TypeId,
    /// Offset of the value from the counts word.
    pub(crate) value_offset: usize,
    /// `Finalize::NEEDS_FINALIZE` of the value's type.
    pub(crate) needs_finalize: bool,
}

/// The counts of a tracked node.
///
/// # Safety
///
/// `node` must point to the [`Links`] of a live (allocated) tracked box.
#[inline]
pub(crate) unsafe fn node_counts<'a>(node: NodePtr) -> &'a Counts {
    // SAFETY: the caller guarantees `node` is the Links record of an allocated
    // tracked box, and the counts are laid out right after it; `node`
    // carries the provenance of the whole allocation.
    unsafe { &*node.cast::<u8>().add(LINKS_SIZE).cast::<Counts>() }
}

/// Shared view of a node's links.
///
/// # Safety
///
/// `node` must point to a live [`Links`] record (a tracked box or a sentinel).
#[inline]
pub(crate) unsafe fn links<'a>(node: NodePtr) -> &'a Links {
    // SAFETY: guaranteed by the caller; Links only holds Cells and a shared
    // reference, so a shared reference to it never conflicts with writes.
    unsafe { &*node }
}

/// Layout of a tracked allocation whose `GcBox` has layout `inner`, and the
/// offset of the `GcBox` in it: the [`Links`] record sits right before the
/// `GcBox`, which keeps its own alignment. `None` if the size overflows.
#[inline]
pub(crate) fn tracked_layout(inner: Layout) -> Option<(Layout, usize)> {
    let offset = LINKS_SIZE.div_ceil(inner.align()) * inner.align();
    let align = inner.align().max(mem::align_of::<Links>());
    let size = offset.checked_add(inner.size())?;
    let layout = Layout::from_size_align(size, align).ok()?;
    Some((layout.pad_to_align(), offset))
}

/// Address of the value of the tracked box `node` (what `Gc::as_ptr` gives).
pub(crate) fn value_address(node: NodePtr) -> usize {
    // SAFETY: callers pass nodes they hold a strong reference to.
    node as usize + LINKS_SIZE + unsafe { links(node) }.vtable.value_offset
}

// ---------------------------------------------------------------------------
// Count operations
// ---------------------------------------------------------------------------

#[cold]
#[inline(never)]
fn refcount_overflow() -> ! {
    // Like std::rc: overflowing a count would be unsound, aborting is not.
    eprintln!("strata_gc: reference count overflow");
    std::process::abort()
}

/// One more strong reference. Written as `Rc`'s increment (wrap, then
/// test for 0): one read-modify-write and one branch.
#[inline]
pub(crate) fn inc_strong(c: &Counts) {
    let s = c.strong.get().wrapping_add(1);
    c.strong.set(s);
    if s == 0 {
        refcount_overflow();
    }
}

#[inline]
pub(crate) fn inc_weak(c: &Counts) {
    let v = c.word.get();
    if v & WEAK_MASK == WEAK_MASK {
        refcount_overflow();
    }
    c.word.set(v + WEAK_ONE);
}

/// Take a new strong reference to a tracked node (used by the collector).
///
/// # Safety
///
/// `node` is a live tracked box.
pub(crate) unsafe fn acquire_strong_node(node: NodePtr) {
    // SAFETY: guaranteed by the caller.
    inc_strong(unsafe { node_counts(node) });
}

/// The user's weak references in counts word `v` (without the implicit one
/// the strong references hold together).
#[inline]
pub(crate) fn weak_refs(v: u32) -> usize {
    (((v & WEAK_MASK) >> WEAK_SHIFT) - 1) as usize
}

/// The weak epoch of the object with counts word `v` (see [`WEAK_EPOCHS`]).
#[inline]
pub(crate) fn weak_epoch(v: u32) -> usize {
    if v & TRACKED != 0 {
        ((v & EPOCH_BITS) >> EPOCH_SHIFT) as usize
    } else {
        0
    }
}

/// Counts word `v` of a tracked object the collector claims as garbage,
/// with its weak references cleared: `NO_UPGRADE`, and if it has any, the
/// next epoch, so that they stay dead if it survives.
#[inline]
pub(crate) fn clear_weak_refs(v: u32) -> u32 {
    debug_assert!(v & TRACKED != 0);
    if weak_refs(v) != 0 && weak_epoch(v) < POISONED_EPOCH {
        (v + (1 << EPOCH_SHIFT)) | NO_UPGRADE
    } else {
        v | NO_UPGRADE
    }
}

/// Counts word `v` of a claimed object that survives the collection:
/// weak references made since it was claimed may upgrade again (unless
/// its epoch is the poisoned one).
#[inline]
pub(crate) fn reopen_weak_refs(v: u32) -> u32 {
    if weak_epoch(v) == POISONED_EPOCH {
        v
    } else {
        v & !NO_UPGRADE
    }
}

/// Height bits of a new object whose referents' counts words OR to `v`.
#[inline]
pub(crate) fn height_above(v: u32) -> u32 {
    ((v & HEIGHT_BITS) << 1 | (1 << HEIGHT_SHIFT)) & HEIGHT_BITS
}

/// Give up one weak reference (possibly the implicit one) to a tracked node.
///
/// # Safety
///
/// `node` is a live tracked box and the caller owns the weak reference.
pub(crate) unsafe fn release_weak_node(node: NodePtr) {
    // SAFETY: the caller owns a weak reference, so the box is allocated.
    let c = unsafe { node_counts(node) };
    let v = c.word.get() - WEAK_ONE;
    c.word.set(v);
    if v & WEAK_MASK == 0 {
        // SAFETY: no strong or weak reference remains and the value is gone.
        unsafe { (links(node).vtable.dealloc)(node) }
    }
}

/// Give up one strong reference to a tracked node whose value the collector
/// already dropped (`DROPPED`): such a node is in no list and no collector
/// state depends on it, so its last strong reference only releases the
/// implicit weak one (what the full release path does for it too).
///
/// # Safety
///
/// `node` is a live tracked box marked `DROPPED`, in no list, and the
/// caller owns one strong reference.
pub(crate) unsafe fn release_strong_dropped(node: NodePtr) {
    // SAFETY: the caller owns a strong reference, so the box is allocated.
    let c = unsafe { node_counts(node) };
    debug_assert!(c.word.get() & DROPPED != 0);
    let s = c.strong.get() - 1;
    c.strong.set(s);
    if s == 0 {
        // SAFETY: the last strong reference is gone; the implicit weak
        // reference is ours to release.
        unsafe { release_weak_node(node) }
    }
}

// ---------------------------------------------------------------------------
// Visitor
// ---------------------------------------------------------------------------

/// What the collector does with each visited edge.
pub(crate) enum VisitMode {
    /// Trial deletion: decrement `gc_refs` of referenced collecting objects.
    SubtractRefs,
    /// Propagate reachability: mark and push referenced collecting objects.
    MarkReachable(Vec<NodePtr>),
    /// Introspection: record every visited edge.
    Record(Vec<Edge>),
    /// `Gc::new`: the OR of the visited objects' counts words (is one
    /// tracked? how high is the highest? see [`HEIGHT_BITS`]).
    Untrackable { counts: u32 },
    /// The sync collector's scan (`strata_gc::sync`): `sync::Gc` edges and
    /// the lock guards it keeps go to its sink. The sink outlives the
    /// visitor (the collector creates both).
    Sync(*mut dyn SyncSink),
}

/// Where the sync collector's scan receives what a `trace` call reports.
/// Declared here, beside the visitor's other modes; implemented by the
/// sync collector.
pub(crate) trait SyncSink {
    /// A `sync::Gc` owned by the object being traced; `node` is its box.
    fn edge(&mut self, node: std::ptr::NonNull<u8>);
    /// A lock guard over part of the object being traced, to be released
    /// only once the collector has read the counts of everything it scans.
    fn keep(&mut self, guard: HeldGuard);
    /// Part of the object could not be locked: its edges are unknown.
    fn locked_out(&mut self);
}

/// A type-erased lock guard kept by the sync collector's scan: stored in
/// place when it fits three words (the guards of `std`'s locks take two),
/// boxed otherwise, so that a scan does not allocate per lock it keeps.
pub(crate) struct HeldGuard {
    inline: MaybeUninit<[usize; 3]>,
    /// Drops the guard: in `inline`, or boxed behind the pointer stored
    /// there.
    drop: unsafe fn(*mut MaybeUninit<[usize; 3]>),
}

impl HeldGuard {
    /// Erase `guard`.
    ///
    /// # Safety
    ///
    /// Whatever `guard` borrows outlives the `HeldGuard`.
    unsafe fn new<G>(guard: G) -> HeldGuard {
        unsafe fn drop_inline<G>(p: *mut MaybeUninit<[usize; 3]>) {
            // SAFETY: `new` wrote a `G` at `p` (it fits and is aligned).
            unsafe { std::ptr::drop_in_place(p.cast::<G>()) }
        }
        unsafe fn drop_boxed<G>(p: *mut MaybeUninit<[usize; 3]>) {
            // SAFETY: `new` wrote the `Box::<G>::into_raw` pointer at `p`.
            drop(unsafe { Box::from_raw(p.cast::<*mut G>().read()) })
        }
        let mut held = HeldGuard {
            inline: MaybeUninit::uninit(),
            drop: drop_inline::<G>,
        };
        let at = held.inline.as_mut_ptr();
        if size_of::<G>() <= size_of::<[usize; 3]>() && align_of::<G>() <= align_of::<usize>() {
            // SAFETY: `G` fits the buffer and its alignment; moving a guard
            // is allowed (a guard does not point into itself).
            unsafe { at.cast::<G>().write(guard) }
        } else {
            held.drop = drop_boxed::<G>;
            // SAFETY: a pointer fits the buffer.
            unsafe { at.cast::<*mut G>().write(Box::into_raw(Box::new(guard))) }
        }
        held
    }
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        // SAFETY: `drop` matches what `new` stored, dropped once, while what
        // the guard borrows is alive (`new`'s contract).
        unsafe { (self.drop)(&mut self.inline) }
    }
}

/// One `Gc` reported by a `trace` call in [`VisitMode::Record`].
pub(crate) struct Edge {
    /// Address of the referenced value (as `Gc::as_ptr`).
    pub(crate) address: usize,
    /// Type name of the referenced value (the concrete type if tracked).
    pub(crate) type_name: &'static str,
}

/// Handed to [`Trace::trace`](crate::Trace::trace); only the collector can
/// create one.
pub struct Visitor {
    pub(crate) mode: VisitMode,
}

impl Visitor {
    pub(crate) fn new(mode: VisitMode) -> Self {
        Visitor { mode }
    }

    /// Keep `guard`, a lock guard over part of the value being traced, until
    /// the collection no longer needs that part unchanged.
    ///
    /// The sync collector's scan keeps every guard it is given until it has
    /// read the counts of all the objects it scans, so that the `Gc`s it saw
    /// stay where it saw them (see `strata_gc::sync`); the other modes drop
    /// the guard at once. A `Trace` impl of a lock type that is `Sync`
    /// (`Mutex`, `RwLock`, or a third-party lock) try-locks, traces through
    /// the guard, then hands the guard here, or calls
    /// [`locked_out`](Visitor::locked_out) if the lock was taken.
    ///
    /// # Safety
    ///
    /// `guard` borrows only from the value whose `trace` is running (the
    /// collector keeps that value alive while it keeps the guard).
    pub unsafe fn keep_locked<G>(&mut self, guard: G) {
        match self.mode {
            VisitMode::Sync(sink) => {
                // SAFETY: the caller's contract; the sink outlives the visitor.
                unsafe { (*sink).keep(HeldGuard::new(guard)) }
            }
            _ => drop(guard),
        }
    }

    /// Report that part of the value being traced is locked by someone else,
    /// so its `Gc`s could not be visited: the collection treats the value as
    /// reachable, and so everything it may own.
    pub fn locked_out(&mut self) {
        if let VisitMode::Sync(sink) = self.mode {
            // SAFETY: the sink outlives the visitor.
            unsafe { (*sink).locked_out() }
        }
    }
}

impl std::fmt::Debug for Visitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Visitor")
    }
}
