//! Pointer layer: [`Gc<T>`], [`Weak<T>`], [`GcMut<T>`], the `GcBox` header
//! they point at, and the release path (including the "trashcan" that flattens
//! deep drop chains).
//!
//! # Memory layout
//!
//! Every allocation holds a `GcBox<T>`: one 8-byte *counts word* followed by
//! the value. Types that may own a `Gc` (`T::MAY_CONTAIN_GC`) are *tracked*:
//! their allocation also holds a [`Links`] record (CPython's `PyGC_Head`)
//! placed immediately before the counts word, so a node is always found at
//! `counts - size_of::<Links>()` whatever `T` is (also for `Gc<dyn Trait>`).
//!
//! ```text
//! untracked:  [counts u64][value T]                          8 B header
//! tracked:    [pad?][prev|flags][next][vtable][counts][value] 32 B header
//! ```
//!
//! The counts word packs the strong count (bits 0..30), the weak count
//! (bits 30..54, including one implicit weak reference held collectively by
//! the strong references, as in `std::rc`), the height of an untracked
//! object (bits 54..60, see [`HEIGHT_BITS`]; bit 54 is the [`PURPLE`] flag of
//! a tracked object, which has no height), and four flags: `TRACKED` (the
//! object is in a generation list), `NO_UPGRADE` (weak references were
//! cleared by the collector), `DROPPED` (the collector dropped the value;
//! the box is kept only for outstanding handles) and `HAS_LINKS` (the
//! allocation carries a [`Links`] record).
//!
//! A box with links is not necessarily tracked: a value that can never be
//! part of a cycle (see `Trace::INTERIOR_MUTABLE`) is left out of the
//! generation lists, like CPython's untracked tuples, and costs what an
//! `Rc` costs apart from its header.

use std::alloc::{self, Layout};
use std::any::TypeId;
use std::borrow::Borrow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::ops::{Deref, DerefMut};
use std::ptr::{self, addr_of, addr_of_mut, NonNull};

use crate::collector;
use crate::freelist;
use crate::trace::{Trace, Visitor};

/// Bits of the counts word that hold the strong count.
const STRONG_BITS: u32 = 30;
/// One strong reference in the counts word.
pub(crate) const STRONG_ONE: u64 = 1;
/// Bits of the counts word that hold the strong count (about a billion).
pub(crate) const STRONG_MASK: u64 = (1 << STRONG_BITS) - 1;
/// Shift of the weak count in the counts word.
const WEAK_SHIFT: u32 = STRONG_BITS;
/// Width of the weak count (~16 million).
const WEAK_BITS: u32 = 24;
/// One weak reference in the counts word.
pub(crate) const WEAK_ONE: u64 = 1 << WEAK_SHIFT;
/// Bits of the counts word that hold the weak count.
pub(crate) const WEAK_MASK: u64 = ((1 << WEAK_BITS) - 1) << WEAK_SHIFT;
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
pub(crate) const HEIGHT_BITS: u64 = ((1 << HEIGHT_WIDTH) - 1) << HEIGHT_SHIFT;
/// The highest height bit: the height of the object saturated (it may be
/// any higher); its release goes through the trashcan.
const TALL: u64 = 1 << (HEIGHT_SHIFT + HEIGHT_WIDTH - 1);
/// Counts-word bits that send the release of an object down the slow path
/// ([`Gc::drop_slow`]): tracked, already dropped, or tall.
const SLOW_RELEASE: u64 = TRACKED | DROPPED | TALL;
/// The object is in a generation list (or a list of the collection in
/// progress). Kept in the counts word, which every release reads anyway.
pub(crate) const TRACKED: u64 = 1 << 60;
/// Tracked objects only (whose height bits are otherwise unused): the
/// strong count dropped to a non-zero value since a collection last looked
/// at the object (Bacon and Rajan's "purple" candidate roots). The first
/// such decrement tells the collector (see [`collector::note_decrement`]);
/// a young generation none of whose objects is purple holds no garbage.
pub(crate) const PURPLE: u64 = 1 << HEIGHT_SHIFT;
/// The collector cleared weak references to this object: `upgrade` fails.
pub(crate) const NO_UPGRADE: u64 = 1 << 61;
/// The collector dropped the value; dereferencing panics.
pub(crate) const DROPPED: u64 = 1 << 62;
/// The allocation carries a [`Links`] record just before the counts word.
pub(crate) const HAS_LINKS: u64 = 1 << 63;

/// Low bits of [`Links::prev`] that are flags, not address bits.
pub(crate) const PREV_FLAGS: usize = 0b111;
/// `Finalize::finalize` already ran for this object (PEP 442: at most once).
pub(crate) const FINALIZED: usize = 0b001;
/// A [`GcMut`] guard is alive: the collector must not read the value.
pub(crate) const MUT_BORROWED: usize = 0b010;
/// Flags that survive a collection (the others are collection-local).
pub(crate) const PERSISTENT_FLAGS: usize = FINALIZED | MUT_BORROWED;

/// Message of the panic raised when a `Gc` to a collected object is used.
pub(crate) const DROPPED_MSG: &str =
    "strata_gc: dereferenced a Gc whose value was already dropped by the cycle collector \
     (a Drop impl or finalizer kept a handle to garbage); check `Gc::is_dropped` first";

/// The counts word followed by the value.
#[repr(C)]
pub(crate) struct GcBox<T: ?Sized> {
    pub(crate) counts: Cell<u64>,
    pub(crate) value: T,
}

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
    /// `std::any::type_name` of the value.
    pub(crate) type_name: fn() -> &'static str,
    /// `TypeId` of the value.
    pub(crate) type_id: fn() -> TypeId,
    /// Offset of the value from the counts word.
    pub(crate) value_offset: usize,
    /// `Finalize::NEEDS_FINALIZE` of the value's type.
    pub(crate) needs_finalize: bool,
}

/// The counts word of a tracked node.
///
/// # Safety
///
/// `node` must point to the [`Links`] of a live (allocated) tracked box.
#[inline]
pub(crate) unsafe fn node_counts<'a>(node: NodePtr) -> &'a Cell<u64> {
    // SAFETY: the caller guarantees `node` is the Links record of an allocated
    // tracked box, and the counts word is laid out right after it; `node`
    // carries the provenance of the whole allocation.
    unsafe { &*node.cast::<u8>().add(LINKS_SIZE).cast::<Cell<u64>>() }
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
fn tracked_layout(inner: Layout) -> Option<(Layout, usize)> {
    let offset = LINKS_SIZE.div_ceil(inner.align()) * inner.align();
    let align = inner.align().max(mem::align_of::<Links>());
    let size = offset.checked_add(inner.size())?;
    let layout = Layout::from_size_align(size, align).ok()?;
    Some((layout.pad_to_align(), offset))
}

/// Free a box whose counts word is `v` (which says whether it has links).
///
/// # Safety
///
/// `inner` is an allocated box (its pointer metadata describes the value)
/// with no handle left; its value was dropped or moved out.
#[inline]
unsafe fn dealloc_box<T: ?Sized>(inner: *mut GcBox<T>, v: u64) {
    // SAFETY: the box is still allocated, so its layout can be read. A box
    // with links was allocated with `tracked_layout` of that layout (what
    // `Tracked::<T>::layout` computes for the concrete type), starting
    // `offset` bytes before the GcBox; one without is a `Box<GcBox<T>>`.
    unsafe {
        let layout = Layout::for_value(&*inner);
        if v & HAS_LINKS == 0 {
            alloc::dealloc(inner.cast(), layout);
        } else if let Some((l, offset)) = tracked_layout(layout) {
            alloc::dealloc(inner.cast::<u8>().sub(offset), l);
        }
    }
}

/// Per-type vtable and layout for tracked boxes.
struct Tracked<T>(PhantomData<T>);

impl<T: Trace + 'static> Tracked<T> {
    /// Offset of the `GcBox<T>` from the start of the allocation.
    const INNER_OFFSET: usize = {
        let align = mem::align_of::<GcBox<T>>();
        LINKS_SIZE.div_ceil(align) * align
    };
    /// Alignment of the allocation.
    const ALIGN: usize = {
        let a = mem::align_of::<GcBox<T>>();
        if a > mem::align_of::<Links>() {
            a
        } else {
            mem::align_of::<Links>()
        }
    };
    const VTABLE: &'static NodeVTable = &NodeVTable {
        trace: Self::trace,
        finalize: Self::finalize,
        drop_value: Self::drop_value,
        dealloc: Self::dealloc,
        type_name: std::any::type_name::<T>,
        type_id: TypeId::of::<T>,
        value_offset: mem::offset_of!(GcBox<T>, value),
        needs_finalize: T::NEEDS_FINALIZE,
    };

    fn layout() -> Layout {
        match tracked_layout(Layout::new::<GcBox<T>>()) {
            Some((l, offset)) => {
                debug_assert!(offset == Self::INNER_OFFSET && l.align() == Self::ALIGN);
                l
            }
            None => panic!(
                "strata_gc: value of {} too large",
                std::any::type_name::<T>()
            ),
        }
    }

    /// # Safety
    ///
    /// `node` must be the Links record of a live tracked `GcBox<T>`.
    unsafe fn value(node: NodePtr) -> *mut T {
        // SAFETY: the caller guarantees `node` belongs to a tracked GcBox<T>,
        // whose counts word is LINKS_SIZE bytes after it.
        unsafe {
            let inner = node
                .cast::<u8>()
                .add(LINKS_SIZE)
                .cast_mut()
                .cast::<GcBox<T>>();
            addr_of_mut!((*inner).value)
        }
    }

    /// # Safety
    ///
    /// `node` must be the Links record of a tracked `GcBox<T>` whose value is
    /// alive and not mutably borrowed.
    unsafe fn trace(node: NodePtr, visitor: &mut Visitor) {
        // SAFETY: guaranteed by the caller (the collector skips MUT_BORROWED
        // nodes and only traces nodes whose value is alive).
        unsafe { (*Self::value(node)).trace(visitor) }
    }

    /// # Safety
    ///
    /// As for [`Self::trace`].
    unsafe fn finalize(node: NodePtr) {
        // SAFETY: guaranteed by the caller.
        unsafe { (*Self::value(node)).finalize() }
    }

    /// # Safety
    ///
    /// `node` must be a tracked `GcBox<T>` whose value is alive and that no
    /// reference points into; the value must never be used again.
    unsafe fn drop_value(node: NodePtr) {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr::drop_in_place(Self::value(node)) }
    }

    /// # Safety
    ///
    /// `node` must be a tracked `GcBox<T>` whose value was dropped or moved
    /// out and to which no handle remains.
    unsafe fn dealloc(node: NodePtr) {
        // SAFETY: the allocation starts INNER_OFFSET bytes before the counts
        // word (LINKS_SIZE after `node`) and was made with `Self::layout()`.
        unsafe {
            let base = node
                .cast::<u8>()
                .add(LINKS_SIZE)
                .sub(Self::INNER_OFFSET)
                .cast_mut();
            freelist::deallocate(base, Self::layout());
        }
    }

    /// Allocate and initialise a box with links; returns (node, inner).
    /// `height` is `None` for a box that will be linked (tracked), which
    /// comes from the free lists that collected garbage fills; an untracked
    /// box (freed by reference counting) skips the lookup and records its
    /// height.
    #[inline]
    fn allocate(value: T, height: Option<u64>) -> (NodePtr, NonNull<GcBox<T>>) {
        let linked = height.is_none();
        let layout = Self::layout();
        // SAFETY: layout has non-zero size (it holds at least Links + counts).
        let base = unsafe {
            if linked {
                freelist::allocate(layout)
            } else {
                alloc::alloc(layout)
            }
        };
        if base.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: `base` is a fresh allocation of `layout`, which has room for
        // Links at INNER_OFFSET - LINKS_SIZE (8-aligned, see module docs) and
        // GcBox<T> at INNER_OFFSET (aligned to align_of::<GcBox<T>>()).
        unsafe {
            let inner = base.add(Self::INNER_OFFSET).cast::<GcBox<T>>();
            let node = base.add(Self::INNER_OFFSET - LINKS_SIZE).cast::<Links>();
            node.write(Links {
                prev: Cell::new(ptr::null()),
                next: Cell::new(ptr::null()),
                vtable: Self::VTABLE,
            });
            inner.write(GcBox {
                counts: Cell::new(HAS_LINKS | WEAK_ONE | STRONG_ONE | tracking_bits(height)),
                value,
            });
            (node, NonNull::new_unchecked(inner))
        }
    }
}

// ---------------------------------------------------------------------------
// Release path and trashcan
// ---------------------------------------------------------------------------

/// Nesting depth at which the release path stops recursing and queues boxes
/// instead (CPython's `Py_TRASHCAN` uses 50 as well).
const TRASHCAN_DEPTH: usize = 50;

/// Per-thread deferred-destruction queue (CPython's trashcan). Const
/// initialised and without a destructor, so it works during thread teardown.
struct Trashcan {
    depth: Cell<usize>,
    /// Intrusive stack of nodes whose value still has to be dropped, chained
    /// through `Links::next`.
    pending: Cell<NodePtr>,
}

thread_local! {
    static TRASHCAN: Trashcan = const {
        Trashcan { depth: Cell::new(0), pending: Cell::new(ptr::null()) }
    };
}

/// Restores the trashcan depth even if a `Drop` impl unwinds.
struct DepthGuard<'a>(&'a Cell<usize>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Take one trashcan level to destroy `node` now; if the nesting is already
/// deep, queue `node` instead and return `false`.
///
/// # Safety
///
/// As for [`destroy_now`].
#[inline]
unsafe fn trashcan_enter(node: NodePtr) -> bool {
    TRASHCAN.with(|t| {
        let d = t.depth.get();
        if d >= TRASHCAN_DEPTH {
            // SAFETY: node is in no list, so its `next` link is free to
            // chain it.
            unsafe { links(node).next.set(t.pending.get()) };
            t.pending.set(node);
            false
        } else {
            t.depth.set(d + 1);
            true
        }
    })
}

/// Give back the level taken by [`trashcan_enter`]; at the outermost level,
/// destroy what was queued.
#[inline]
fn trashcan_leave() {
    TRASHCAN.with(|t| {
        let d = t.depth.get() - 1;
        t.depth.set(d);
        if d == 0 && !t.pending.get().is_null() {
            drain_trashcan(t);
        }
    });
}

/// Destroy the queued nodes (at depth 0).
#[cold]
#[inline(never)]
fn drain_trashcan(t: &Trashcan) {
    loop {
        let n = t.pending.get();
        if n.is_null() {
            break;
        }
        // SAFETY: queued nodes satisfy destroy_now's contract; the chain
        // link is cleared before the value is dropped.
        unsafe {
            t.pending.set(links(n).next.get());
            links(n).next.set(ptr::null());
        }
        t.depth.set(t.depth.get() + 1);
        let _g = DepthGuard(&t.depth);
        // SAFETY: as above.
        unsafe { destroy_now(n) };
    }
}

/// Drop the value of an untracked-from-lists node and release its box.
///
/// # Safety
///
/// `node` is a tracked box with strong count 0, not in any list, value alive.
unsafe fn destroy_now(node: NodePtr) {
    // SAFETY: guaranteed by the caller; nobody else can reach the value
    // (strong count is 0, weak upgrades fail).
    unsafe {
        (links(node).vtable.drop_value)(node);
        let c = node_counts(node);
        c.set(c.get() | DROPPED);
        release_weak_node(node);
    }
}

/// Destroy `node` through the trashcan: directly if the nesting is shallow,
/// deferred otherwise, so dropping a long chain never overflows the stack.
///
/// # Safety
///
/// As for [`destroy_now`].
unsafe fn destroy_via_trashcan(node: NodePtr) {
    // SAFETY: forwarded from the caller.
    if !unsafe { trashcan_enter(node) } {
        return;
    }
    let guard = TrashcanLevel;
    // SAFETY: forwarded from the caller.
    unsafe { destroy_now(node) };
    mem::forget(guard);
    trashcan_leave();
}

/// Gives back a trashcan level if a `Drop` impl unwinds (queued nodes are
/// then destroyed by the next outermost release).
struct TrashcanLevel;

impl Drop for TrashcanLevel {
    fn drop(&mut self) {
        let _ = TRASHCAN.try_with(|t| t.depth.set(t.depth.get() - 1));
    }
}

/// Give up one strong reference to a tracked node.
///
/// # Safety
///
/// `node` is a live tracked box and the caller owns one strong reference.
pub(crate) unsafe fn release_strong_node(node: NodePtr) {
    // SAFETY: the caller owns a strong reference, so the box is allocated.
    let c = unsafe { node_counts(node) };
    let v = c.get() - STRONG_ONE;
    c.set(v);
    if v & STRONG_MASK == 0 {
        // SAFETY: the last strong reference is gone.
        unsafe { last_strong_gone(node, v) }
    } else if v & (TRACKED | PURPLE | DROPPED) == TRACKED {
        turn_purple(c, v);
    }
}

/// First decrement to a non-zero count of a tracked object since a
/// collection last looked at it: flag it and tell the collector, which may
/// then no longer skip young collections. Later decrements see the flag and
/// stay on the fast path. (Decrements of objects the collector already
/// dropped do not matter: they are in no generation.)
#[inline]
fn turn_purple(c: &Cell<u64>, v: u64) {
    c.set(v | PURPLE);
    collector::note_decrement();
}

/// The strong count of a tracked node just reached zero.
///
/// # Safety
///
/// `node` is a live tracked box whose strong count is 0; `v` is its counts.
#[inline]
unsafe fn last_strong_gone(node: NodePtr, v: u64) {
    if v & DROPPED != 0 {
        // The collector already dropped the value and unlinked the node.
        // SAFETY: forwarded; the implicit weak reference is ours to release.
        unsafe { release_weak_node(node) };
        return;
    }
    // SAFETY: the node is a live tracked box; unlinking keeps lists valid.
    unsafe { collector::untrack(node) };
    // SAFETY: strong count is 0 and the node is now in no list.
    unsafe { destroy_via_trashcan(node) };
}

/// Give up one weak reference (possibly the implicit one) to a tracked node.
///
/// # Safety
///
/// `node` is a live tracked box and the caller owns the weak reference.
pub(crate) unsafe fn release_weak_node(node: NodePtr) {
    // SAFETY: the caller owns a weak reference, so the box is allocated.
    let c = unsafe { node_counts(node) };
    let v = c.get() - WEAK_ONE;
    c.set(v);
    if v & WEAK_MASK == 0 {
        // SAFETY: no strong or weak reference remains and the value is gone.
        unsafe { (links(node).vtable.dealloc)(node) }
    }
}

#[cold]
#[inline(never)]
fn refcount_overflow() -> ! {
    // Like std::rc: overflowing a count would be unsound, aborting is not.
    eprintln!("strata_gc: reference count overflow");
    std::process::abort()
}

#[inline]
fn inc_strong(c: &Cell<u64>) {
    let v = c.get();
    if v & STRONG_MASK == STRONG_MASK {
        refcount_overflow();
    }
    c.set(v + STRONG_ONE);
}

#[inline]
fn inc_weak(c: &Cell<u64>) {
    let v = c.get();
    if v & WEAK_MASK == WEAK_MASK {
        refcount_overflow();
    }
    c.set(v + WEAK_ONE);
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

/// `None` if a new object holding `value` must be tracked (linked into
/// generation 0); otherwise its height. It need not be tracked if its type
/// cannot change its own edges while shared and everything it references
/// is untracked: then no cycle can ever pass through it (see
/// [`untracked_height`](crate::trace::untracked_height)). The box still
/// carries its [`Links`] so that [`Gc::get_mut`] can track it again.
#[inline]
fn untracked_height<T: Trace>(value: &T) -> Option<u64> {
    if T::INTERIOR_MUTABLE {
        None
    } else {
        crate::trace::untracked_height(value)
    }
}

/// Counts-word bits of a new object: `TRACKED`, or its height.
#[inline]
fn tracking_bits(height: Option<u64>) -> u64 {
    height.unwrap_or(TRACKED)
}

/// The user's weak references in counts word `v` (without the implicit one
/// the strong references hold together).
#[inline]
fn weak_refs(v: u64) -> usize {
    (((v & WEAK_MASK) >> WEAK_SHIFT) - 1) as usize
}

/// Height bits of a new object whose referents' counts words OR to `v`.
#[inline]
pub(crate) fn height_above(v: u64) -> u64 {
    ((v & HEIGHT_BITS) << 1 | (1 << HEIGHT_SHIFT)) & HEIGHT_BITS
}

// ---------------------------------------------------------------------------
// Gc<T>
// ---------------------------------------------------------------------------

/// A single-threaded reference-counted pointer whose reference cycles are
/// reclaimed by a generational cycle collector. See the [crate docs](crate).
///
/// One object can have up to 2^30 - 1 strong and 2^24 - 2 weak references
/// (both counts share one word with the collector's flags); like `Rc` on
/// overflow, the process aborts rather than risk a use after free.
pub struct Gc<T: ?Sized> {
    ptr: NonNull<GcBox<T>>,
    _owns: PhantomData<GcBox<T>>,
}

impl<T: Trace + 'static> Gc<T> {
    /// Allocates `value` and returns the first strong reference to it.
    ///
    /// If `T` may contain a `Gc` the object is tracked by the collector, and
    /// the allocation may first trigger an automatic collection.
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let five = Gc::new(5);
    /// assert_eq!(*five, 5);
    /// ```
    #[inline]
    pub fn new(value: T) -> Gc<T> {
        if T::MAY_CONTAIN_GC {
            let height = untracked_height(&value);
            let (node, inner) = Tracked::<T>::allocate(value, height);
            if height.is_none() {
                // SAFETY: `node` is a freshly initialised, unlinked tracked
                // box flagged TRACKED, and we hold its only handle. A
                // collection `track_new` may start before linking it sees
                // the box as outside the collected set, so everything it
                // references counts as externally reachable.
                unsafe { collector::track_new(node) };
            }
            Gc::from_inner(inner)
        } else {
            let b = Box::new(GcBox {
                counts: Cell::new(WEAK_ONE | STRONG_ONE),
                value,
            });
            // SAFETY: Box::into_raw never returns null.
            Gc::from_inner(unsafe { NonNull::new_unchecked(Box::into_raw(b)) })
        }
    }

    /// Creates a new `Gc` to a value built from a weak reference to itself
    /// (like `Rc::new_cyclic`). Upgrading the weak reference inside `f` fails.
    ///
    /// ```
    /// use strata_gc::{Finalize, Gc, Trace, Weak};
    /// #[derive(Trace, Finalize)]
    /// struct Me { me: Weak<Me> }
    /// let m = Gc::new_cyclic(|w| Me { me: w.clone() });
    /// assert!(Gc::ptr_eq(&m.me.upgrade().unwrap(), &m));
    /// ```
    pub fn new_cyclic(f: impl FnOnce(&Weak<T>) -> T) -> Gc<T> {
        // Build with a placeholder-free approach: allocate the value first into
        // an `Option` box is not possible without MaybeUninit in the header, so
        // we create the weak pointer from a box whose strong count is 0.
        let uninit = UninitGc::<T>::new();
        let weak = uninit.weak();
        let value = f(&weak);
        drop(weak);
        uninit.init(value)
    }

    /// Returns the inner value if this is the only strong reference;
    /// otherwise returns `Err(this)`. Outstanding weak references can no
    /// longer be upgraded afterwards.
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let x = Gc::new(3);
    /// assert_eq!(Gc::try_unwrap(x), Ok(3));
    /// ```
    pub fn try_unwrap(this: Self) -> Result<T, Self> {
        let v = this.counts().get();
        if v & STRONG_MASK != 1 || v & DROPPED != 0 {
            return Err(this);
        }
        let this = ManuallyDrop::new(this);
        let c = this.counts();
        let inner = this.ptr.as_ptr();
        c.set(v - STRONG_ONE);
        // SAFETY: we held the only strong reference, so nobody else can read
        // the value; it is moved out exactly once and then marked DROPPED so
        // the box is only ever deallocated, never dropped again.
        unsafe {
            let value = ptr::read(addr_of!((*inner).value));
            c.set(c.get() | DROPPED);
            if v & HAS_LINKS != 0 {
                let node = this.node_unchecked();
                collector::untrack(node);
                release_weak_node(node);
            } else {
                let cw = c.get() - WEAK_ONE;
                c.set(cw);
                if cw & WEAK_MASK == 0 {
                    dealloc_box(inner, cw);
                }
            }
            Ok(value)
        }
    }

    /// Like [`Gc::try_unwrap`] but returns `None` instead of the pointer.
    pub fn into_inner(this: Self) -> Option<T> {
        Gc::try_unwrap(this).ok()
    }

    /// Converts to a `Gc` of an unsized type: a trait object or a slice.
    ///
    /// `CoerceUnsized` is unstable, so the caller writes the coercion: `f`
    /// gets the value and must return that same value coerced, as in
    /// `|x| x as &dyn Trait` or `|a| a as &[E]`. The result shares the
    /// allocation and the counts of `this`.
    ///
    /// Accepted results are the value itself, either unchanged (`U = T`),
    /// an array `[E; N]` as the slice `[E]` of all `N` elements, or the
    /// value as a trait object whose `Trace` comes from
    /// [`impl_dyn_trace!`](crate::impl_dyn_trace) (or is `dyn DynTrace`).
    /// The check is what makes the result sound: the box is dropped,
    /// freed and lent out mutably through `U`, so `U` must describe
    /// exactly the `T` it holds.
    ///
    /// # Panics
    ///
    /// Panics if `f` returns anything else: another object, or a part of
    /// the value (a field, even one at the same address with the same size
    /// such as the field of a `#[repr(transparent)]` wrapper; a sub-slice;
    /// a `str` view), whether or not it is seen as a trait object; dropping
    /// that `Gc<U>` would run the part's drop glue instead of `T`'s.
    /// Unsizing through a struct's last field (`Wrapper<[E; N]>` to
    /// `Wrapper<[E]>`) is not supported either. Also panics if the value is
    /// tracked and `U` claims it cannot contain a `Gc`.
    ///
    /// ```
    /// use strata_gc::{Gc, DynTrace};
    /// let g: Gc<dyn DynTrace> = Gc::unsize(Gc::new(7_u32), |x| x as &dyn DynTrace);
    /// assert_eq!(Gc::strong_count(&g), 1);
    /// let s: Gc<[u8]> = Gc::unsize(Gc::new([1_u8, 2, 3]), |a| a as &[u8]);
    /// assert_eq!(s.len(), 3);
    /// ```
    ///
    /// ```should_panic
    /// use strata_gc::{Finalize, Gc, Trace};
    /// #[derive(Trace, Finalize)]
    /// struct Meters(u32);
    /// // A field is not the value, even at the same address and size.
    /// let _: Gc<u32> = Gc::unsize(Gc::new(Meters(3)), |m| &m.0);
    /// ```
    pub fn unsize<U: ?Sized + Trace + 'static>(this: Self, f: impl FnOnce(&T) -> &U) -> Gc<U> {
        let value: &T = &this;
        let u: &U = f(value);
        // Same address, and the same type (trait objects report the value
        // behind them; arrays and slices their element type and length):
        // then `u` is `value` unsized, and `U`'s drop glue, size and
        // alignment are `T`'s. Address and size alone would let a field
        // through.
        assert!(
            ptr::addr_eq(u, value) && u.__unsize_key() == value.__unsize_key(),
            "strata_gc: Gc::unsize: the closure must return its whole argument coerced, \
             e.g. `|x| x as &dyn Trait` or `|a| a as &[T]`, not a part of it or another value"
        );
        debug_assert!(
            mem::size_of_val(u) == mem::size_of::<T>()
                && mem::align_of_val(u) == mem::align_of::<T>()
        );
        assert!(
            U::MAY_CONTAIN_GC || !T::MAY_CONTAIN_GC,
            "strata_gc: Gc::unsize: target type must be traceable for a tracked value"
        );
        let fat = u as *const U as *const GcBox<U>;
        let this = ManuallyDrop::new(this);
        let data = this.ptr.as_ptr().cast::<u8>();
        let mut out = fat.cast_mut();
        // SAFETY: a (possibly wide) raw pointer stores its data address in its
        // first word; overwriting it with our box's address keeps U's metadata
        // (which describes the value, as checked above) and gives the pointer
        // the provenance of the whole allocation. GcBox<U> and GcBox<T> have
        // the same layout because `U` is `T` unsized.
        unsafe {
            ptr::write(ptr::addr_of_mut!(out).cast::<*mut u8>(), data);
            Gc::from_inner(NonNull::new_unchecked(out))
        }
    }
}

impl<T: ?Sized> Gc<T> {
    #[inline]
    pub(crate) fn from_inner(ptr: NonNull<GcBox<T>>) -> Self {
        Gc {
            ptr,
            _owns: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn counts(&self) -> &Cell<u64> {
        // SAFETY: a live Gc keeps its box allocated; the counts word is the
        // first field and only accessed through Cell.
        unsafe { &*addr_of!((*self.ptr.as_ptr()).counts) }
    }

    /// The counts word (for `Gc::new`'s look at the referents).
    #[inline]
    pub(crate) fn counts_word(&self) -> u64 {
        self.counts().get()
    }

    /// The tracked node of this box, if it has one.
    #[inline]
    pub(crate) fn node(&self) -> Option<NodePtr> {
        if self.counts().get() & HAS_LINKS != 0 {
            // SAFETY: HAS_LINKS says the Links record precedes the counts.
            Some(unsafe { self.node_unchecked() })
        } else {
            None
        }
    }

    /// # Safety
    ///
    /// The box must carry a Links record (`HAS_LINKS`).
    #[inline]
    pub(crate) unsafe fn node_unchecked(&self) -> NodePtr {
        // SAFETY: the Links record sits LINKS_SIZE bytes before the counts word
        // of a tracked box; `ptr` has the provenance of the whole allocation.
        unsafe {
            self.ptr
                .as_ptr()
                .cast::<u8>()
                .sub(LINKS_SIZE)
                .cast::<Links>()
        }
    }

    /// Wraps a node in a new strong handle (increments the strong count).
    ///
    /// # Safety
    ///
    /// `node` must be a live tracked box whose value has type `T` (sized).
    pub(crate) unsafe fn from_node(node: NodePtr) -> Gc<T>
    where
        T: Sized,
    {
        // SAFETY: guaranteed by the caller.
        unsafe {
            acquire_strong_node(node);
            let inner = node
                .cast::<u8>()
                .add(LINKS_SIZE)
                .cast_mut()
                .cast::<GcBox<T>>();
            Gc::from_inner(NonNull::new_unchecked(inner))
        }
    }

    /// Has the cycle collector already dropped this value? Dereferencing such
    /// a `Gc` panics. Only possible for handles that a `Drop` impl or
    /// finalizer copied out of garbage.
    #[inline]
    pub fn is_dropped(this: &Self) -> bool {
        this.counts().get() & DROPPED != 0
    }

    /// Returns a reference to the value, or `None` if the collector dropped it.
    #[inline]
    pub fn try_deref(this: &Self) -> Option<&T> {
        if Gc::is_dropped(this) {
            None
        } else {
            // SAFETY: the value is alive and shared access is always allowed.
            Some(unsafe { &(*this.ptr.as_ptr()).value })
        }
    }

    /// Creates a new weak pointer to this allocation.
    pub fn downgrade(this: &Self) -> Weak<T> {
        inc_weak(this.counts());
        Weak {
            ptr: Some(this.ptr),
        }
    }

    /// Number of strong (`Gc`) pointers to this allocation.
    pub fn strong_count(this: &Self) -> usize {
        (this.counts().get() & STRONG_MASK) as usize
    }

    /// Number of [`Weak`] pointers to this allocation.
    pub fn weak_count(this: &Self) -> usize {
        weak_refs(this.counts().get())
    }

    /// Do both pointers point to the same allocation (like `Rc::ptr_eq`)?
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        ptr::eq(
            this.ptr.as_ptr() as *const u8,
            other.ptr.as_ptr() as *const u8,
        )
    }

    /// Raw pointer to the value (valid while a strong reference exists and
    /// the collector has not dropped it).
    pub fn as_ptr(this: &Self) -> *const T {
        // SAFETY: computing a field address of a live box reads nothing.
        unsafe { addr_of!((*this.ptr.as_ptr()).value) }
    }

    /// Returns a mutable guard to the value if there are no other `Gc` or
    /// `Weak` pointers to it. While the guard lives, the collector does not
    /// look inside the value (everything it references stays alive). An
    /// untracked object is tracked again, since its edges may now change.
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let mut x = Gc::new(3);
    /// *Gc::get_mut(&mut x).unwrap() = 4;
    /// assert_eq!(*x, 4);
    /// let _y = x.clone();
    /// assert!(Gc::get_mut(&mut x).is_none());
    /// ```
    pub fn get_mut(this: &mut Self) -> Option<GcMut<'_, T>> {
        let v = this.counts().get();
        if v & STRONG_MASK != 1 || (v & WEAK_MASK) != WEAK_ONE || v & DROPPED != 0 {
            return None;
        }
        let node = this.node();
        if let Some(n) = node {
            // SAFETY: tracked box, alive, strong count 1 and not dropped, so
            // an unlinked node is one `Gc::new` left untracked (not one
            // being destroyed): the `&mut T` handed out can change its
            // edges, so it must be tracked again.
            unsafe {
                if !collector::is_linked(n) {
                    collector::retrack(n);
                }
            }
            // SAFETY: tracked box, alive; only the flag bit is touched.
            let l = unsafe { links(n) };
            l.set_prev_bits(l.prev_bits() | MUT_BORROWED);
        }
        Some(GcMut {
            // SAFETY: unique: strong == 1, no weak pointers, and `this` is
            // borrowed mutably for the guard's lifetime; the collector skips
            // the value while MUT_BORROWED is set.
            value: unsafe { &mut *addr_of_mut!((*this.ptr.as_ptr()).value) },
            node,
        })
    }

    #[cold]
    #[inline(never)]
    fn dropped_panic() -> ! {
        panic!("{}", DROPPED_MSG)
    }
}

impl<T: ?Sized + Trace> Deref for Gc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // Untracked types are never dropped by the collector (and `unsize`
        // refuses to erase a tracked value into an untracked type).
        if T::MAY_CONTAIN_GC && self.counts().get() & DROPPED != 0 {
            Self::dropped_panic();
        }
        // SAFETY: the box is alive while `self` is, the value is not dropped
        // (checked above) and only shared references to it are handed out
        // (GcMut requires `&mut self`).
        unsafe { &(*self.ptr.as_ptr()).value }
    }
}

impl<T: ?Sized> Clone for Gc<T> {
    #[inline]
    fn clone(&self) -> Self {
        inc_strong(self.counts());
        Gc::from_inner(self.ptr)
    }
}

impl<T: ?Sized> Drop for Gc<T> {
    #[inline]
    fn drop(&mut self) {
        let c = self.counts();
        let v = c.get() - STRONG_ONE;
        c.set(v);
        // One test picks the common last release.
        if v & (STRONG_MASK | SLOW_RELEASE) == 0 {
            // SAFETY: this was the last strong reference to an untracked box
            // whose value is alive and low enough to drop directly.
            unsafe { self.drop_value_and_box() }
        } else if v & STRONG_MASK == 0 {
            // SAFETY: this was the last strong reference.
            unsafe { self.drop_slow(v) }
        } else if v & TRACKED != 0 && v & (PURPLE | DROPPED) == 0 {
            turn_purple(c, v);
        }
    }
}

impl<T: ?Sized> Gc<T> {
    /// Drop the value and free the box (unless weak references remain).
    /// The common release, kept apart from [`Self::drop_slow`] so that this
    /// small function is what recursive drops of acyclic data run.
    ///
    /// # Safety
    ///
    /// The strong count just reached 0; the box is in no generation list
    /// and its value is alive. The caller bounds the recursion: by the
    /// height of an untracked object (it only holds lower untracked
    /// objects) or by a trashcan level.
    #[inline(never)]
    unsafe fn drop_value_and_box(&mut self) {
        let inner = self.ptr.as_ptr();
        // SAFETY: strong count 0, so nobody else can reach the value (weak
        // upgrades fail); it is dropped exactly once here.
        unsafe { ptr::drop_in_place(addr_of_mut!((*inner).value)) };
        let c = self.counts();
        let w = c.get() - WEAK_ONE;
        if w & WEAK_MASK == 0 {
            // SAFETY: no strong or weak reference remains.
            unsafe { dealloc_box(inner, w) }
        } else {
            c.set(w | DROPPED);
        }
    }

    /// # Safety
    ///
    /// The strong count just reached 0 (`v` is the counts word).
    #[inline(never)]
    unsafe fn drop_slow(&mut self, v: u64) {
        if v & HAS_LINKS != 0 {
            // SAFETY: tracked box, strong count 0.
            unsafe { self.drop_tracked(v) };
            return;
        }
        if v & DROPPED == 0 {
            // SAFETY: strong count 0 and the value alive; a box without
            // links holds no Gc, so nothing recurses.
            unsafe { self.drop_value_and_box() };
            return;
        }
        let c = self.counts();
        let w = c.get() - WEAK_ONE;
        c.set(w);
        if w & WEAK_MASK == 0 {
            // SAFETY: no strong or weak reference remains and the value is
            // gone.
            unsafe { dealloc_box(self.ptr.as_ptr(), w) }
        }
    }
}

impl<T: ?Sized> Gc<T> {
    /// [`last_strong_gone`] with the value's type known statically: the
    /// value is dropped and the box freed without going through the vtable
    /// (unless the trashcan defers it).
    ///
    /// # Safety
    ///
    /// The box is tracked and its strong count just reached 0 (`v` is the
    /// counts word).
    #[inline]
    unsafe fn drop_tracked(&mut self, v: u64) {
        // SAFETY: tracked box (caller).
        let node = unsafe { self.node_unchecked() };
        if v & DROPPED != 0 {
            // The collector already dropped the value and unlinked the node.
            // SAFETY: the implicit weak reference is ours to release.
            unsafe { release_weak_node(node) };
            return;
        }
        if v & TRACKED != 0 {
            // SAFETY: the node is a live tracked box in a list.
            unsafe { collector::untrack(node) };
        } else if v & TALL == 0 {
            // SAFETY: strong count 0, in no list, value alive. An untracked
            // object only holds untracked objects lower than itself, so this
            // release recurses at most HEIGHT_WIDTH deep on its own.
            unsafe { self.drop_value_and_box() };
            return;
        }
        // SAFETY: the node is in no list now and its strong count is 0, as
        // trashcan_enter requires.
        if !unsafe { trashcan_enter(node) } {
            return;
        }
        let guard = TrashcanLevel;
        // SAFETY: the node is in no list, strong count 0, value alive; the
        // trashcan bounds the recursion and the level is ours.
        unsafe { self.drop_value_and_box() };
        mem::forget(guard);
        trashcan_leave();
    }
}

/// Mutable access to a uniquely owned `Gc` value; see [`Gc::get_mut`].
pub struct GcMut<'a, T: ?Sized> {
    value: &'a mut T,
    node: Option<NodePtr>,
}

impl<T: ?Sized> Deref for GcMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: ?Sized> DerefMut for GcMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: ?Sized> Drop for GcMut<'_, T> {
    fn drop(&mut self) {
        if let Some(n) = self.node {
            // SAFETY: the guard borrows the only strong handle, so the box is
            // alive; only the flag bit is touched.
            let l = unsafe { links(n) };
            l.set_prev_bits(l.prev_bits() & !MUT_BORROWED);
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for GcMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.value, f)
    }
}

// ---------------------------------------------------------------------------
// Trait forwarding (like Rc)
// ---------------------------------------------------------------------------

impl<T: ?Sized + Trace + fmt::Debug> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Gc::try_deref(self) {
            Some(v) => fmt::Debug::fmt(v, f),
            None => f.write_str("<dropped Gc>"),
        }
    }
}

impl<T: ?Sized + Trace + fmt::Display> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized> fmt::Pointer for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Gc::as_ptr(self), f)
    }
}

impl<T: ?Sized + Trace + PartialEq> PartialEq for Gc<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Trace + Eq> Eq for Gc<T> {}

impl<T: ?Sized + Trace + PartialOrd> PartialOrd for Gc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: ?Sized + Trace + Ord> Ord for Gc<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: ?Sized + Trace + Hash> Hash for Gc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl<T: ?Sized + Trace> Borrow<T> for Gc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: ?Sized + Trace> AsRef<T> for Gc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: Trace + Default + 'static> Default for Gc<T> {
    fn default() -> Self {
        Gc::new(T::default())
    }
}

impl<T: Trace + 'static> From<T> for Gc<T> {
    fn from(value: T) -> Self {
        Gc::new(value)
    }
}

// ---------------------------------------------------------------------------
// Weak<T>
// ---------------------------------------------------------------------------

/// A non-owning pointer to a `Gc` allocation; see [`Gc::downgrade`].
///
/// Upgrading fails once the value has been dropped — and, for objects the
/// cycle collector found unreachable, as soon as the collector has decided
/// so, before any finalizer runs.
pub struct Weak<T: ?Sized> {
    ptr: Option<NonNull<GcBox<T>>>,
}

impl<T> Weak<T> {
    /// A weak pointer to nothing; `upgrade` always returns `None`.
    pub const fn new() -> Weak<T> {
        Weak { ptr: None }
    }
}

impl<T> Default for Weak<T> {
    fn default() -> Self {
        Weak::new()
    }
}

impl<T: ?Sized> Weak<T> {
    fn counts(&self) -> Option<&Cell<u64>> {
        // SAFETY: a weak reference keeps the box allocated.
        self.ptr
            .map(|p| unsafe { &*addr_of!((*p.as_ptr()).counts) })
    }

    /// Attempts to get a strong pointer; `None` if the value is gone or the
    /// collector has found it unreachable.
    pub fn upgrade(&self) -> Option<Gc<T>> {
        let c = self.counts()?;
        let v = c.get();
        if v & STRONG_MASK == 0 || v & (NO_UPGRADE | DROPPED) != 0 {
            return None;
        }
        inc_strong(c);
        self.ptr.map(Gc::from_inner)
    }

    /// Number of strong pointers (0 if the value is gone).
    pub fn strong_count(&self) -> usize {
        self.counts()
            .map_or(0, |c| (c.get() & STRONG_MASK) as usize)
    }

    /// Number of weak pointers (0 for `Weak::new()` or if no strong remains).
    pub fn weak_count(&self) -> usize {
        match self.counts() {
            None => 0,
            Some(c) => {
                let v = c.get();
                if v & STRONG_MASK == 0 {
                    0
                } else {
                    weak_refs(v)
                }
            }
        }
    }

    /// Do both point to the same allocation (or both to nothing)?
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (self.ptr, other.ptr) {
            (None, None) => true,
            (Some(a), Some(b)) => ptr::eq(a.as_ptr() as *const u8, b.as_ptr() as *const u8),
            _ => false,
        }
    }
}

impl<T: ?Sized> Clone for Weak<T> {
    fn clone(&self) -> Self {
        if let Some(c) = self.counts() {
            inc_weak(c);
        }
        Weak { ptr: self.ptr }
    }
}

impl<T: ?Sized> Drop for Weak<T> {
    fn drop(&mut self) {
        let Some(p) = self.ptr else { return };
        // SAFETY: a weak reference keeps the box allocated.
        let c = unsafe { &*addr_of!((*p.as_ptr()).counts) };
        let v = c.get();
        if v & HAS_LINKS != 0 {
            // SAFETY: tracked box; we own one weak reference.
            unsafe { release_weak_node(p.as_ptr().cast::<u8>().sub(LINKS_SIZE).cast()) };
            return;
        }
        let w = v - WEAK_ONE;
        c.set(w);
        if w & WEAK_MASK == 0 {
            // SAFETY: no strong reference (the implicit weak is gone) and no
            // other weak one remain; the value was dropped already.
            unsafe { dealloc_box(p.as_ptr(), w) }
        }
    }
}

impl<T: ?Sized> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(Weak)")
    }
}

// ---------------------------------------------------------------------------
// new_cyclic support
// ---------------------------------------------------------------------------

/// A box whose value slot is not yet initialised (strong count 0), used by
/// [`Gc::new_cyclic`]. Weak pointers to it cannot upgrade.
struct UninitGc<T: Trace + 'static> {
    node: Option<NodePtr>,
    inner: NonNull<GcBox<mem::MaybeUninit<T>>>,
}

impl<T: Trace + 'static> UninitGc<T> {
    fn new() -> Self {
        if T::MAY_CONTAIN_GC {
            let layout = Tracked::<T>::layout();
            // SAFETY: non-zero size layout.
            let base = unsafe { freelist::allocate(layout) };
            if base.is_null() {
                alloc::handle_alloc_error(layout);
            }
            // SAFETY: same layout reasoning as Tracked::allocate; the value
            // slot is left uninitialised (MaybeUninit has T's layout).
            unsafe {
                let inner = base
                    .add(Tracked::<T>::INNER_OFFSET)
                    .cast::<GcBox<mem::MaybeUninit<T>>>();
                let node = base
                    .add(Tracked::<T>::INNER_OFFSET - LINKS_SIZE)
                    .cast::<Links>();
                node.write(Links {
                    prev: Cell::new(ptr::null()),
                    next: Cell::new(ptr::null()),
                    vtable: Tracked::<T>::VTABLE,
                });
                addr_of_mut!((*inner).counts).write(Cell::new(HAS_LINKS | WEAK_ONE));
                UninitGc {
                    node: Some(node),
                    inner: NonNull::new_unchecked(inner),
                }
            }
        } else {
            let b: Box<GcBox<mem::MaybeUninit<T>>> = Box::new(GcBox {
                counts: Cell::new(WEAK_ONE),
                value: mem::MaybeUninit::uninit(),
            });
            UninitGc {
                node: None,
                // SAFETY: Box::into_raw never returns null.
                inner: unsafe { NonNull::new_unchecked(Box::into_raw(b)) },
            }
        }
    }

    fn weak(&self) -> Weak<T> {
        // SAFETY: the box is allocated; only the counts word is touched.
        let c = unsafe { &*addr_of!((*self.inner.as_ptr()).counts) };
        inc_weak(c);
        Weak {
            ptr: Some(self.inner.cast()),
        }
    }

    fn init(self, value: T) -> Gc<T> {
        let height = untracked_height(&value);
        let this = ManuallyDrop::new(self);
        // SAFETY: the slot is uninitialised and ours; after writing it the
        // box is a valid GcBox<T> with one strong reference.
        unsafe {
            let inner = this.inner.as_ptr();
            addr_of_mut!((*inner).value).cast::<T>().write(value);
            let c = &*addr_of!((*inner).counts);
            match this.node {
                Some(node) => {
                    c.set(c.get() + STRONG_ONE + tracking_bits(height));
                    if height.is_none() {
                        collector::track_new(node);
                    }
                }
                None => c.set(c.get() + STRONG_ONE),
            }
            Gc::from_inner(this.inner.cast())
        }
    }
}

impl<T: Trace + 'static> Drop for UninitGc<T> {
    fn drop(&mut self) {
        // Reached only if the closure of new_cyclic panicked: release the
        // implicit weak reference; the value slot was never initialised.
        // SAFETY: the box is allocated and its value slot holds no value;
        // DROPPED makes later weak drops only deallocate.
        unsafe {
            let c = &*addr_of!((*self.inner.as_ptr()).counts);
            c.set(c.get() | DROPPED);
            match self.node {
                Some(node) => release_weak_node(node),
                None => {
                    let w = c.get() - WEAK_ONE;
                    c.set(w);
                    if w & WEAK_MASK == 0 {
                        alloc::dealloc(
                            self.inner.as_ptr().cast(),
                            Layout::new::<GcBox<mem::MaybeUninit<T>>>(),
                        );
                    }
                }
            }
        }
    }
}
