//! Pointer layer: [`Gc<T>`] and the `GcBox` it points at (the counts
//! of `header` followed by the value): the layout, vtable and allocation
//! of tracked boxes ([`Tracked<T>`]), `Gc`'s methods and its statically
//! typed release, its trait impls and its `Trace` impl. Releasing a tracked
//! box goes through `release`; [`GcMut`] is in `gc_mut`, `Visitor::visit`
//! in `visit`, [`Gc::downgrade`] and [`Gc::new_cyclic`] in `weak`.

use std::alloc::{self, Layout};
use std::any::TypeId;
use std::borrow::Borrow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::ops::Deref;
use std::ptr::{self, addr_of, addr_of_mut, NonNull};

use crate::collector;
use crate::freelist;
use crate::gc_mut::GcMut;
use crate::header::{
    acquire_strong_node, inc_strong, links, release_weak_node, tracked_layout, weak_refs, Counts,
    NodePtr, NodeVTable, Visitor, DROPPED, HAS_LINKS, MUT_BORROWED, SLOW_RELEASE, TALL, TRACKED,
    WEAK_MASK, WEAK_ONE,
};
use crate::release::{
    release_strong_node, trashcan_enter, trashcan_leave, turn_purple, TrashcanLevel,
};
use crate::trace::{Finalize, Trace};
use crate::tracking::{tracking_bits, untracked_height};

// Also named by the unit tests (`tests.rs`) through this module's path.
pub(crate) use crate::header::{Links, LINKS_SIZE, PURPLE};

// Named only by the unit tests (`tests.rs`), through this module's path.
#[cfg(test)]
pub(crate) use crate::header::{HEIGHT_BITS, HEIGHT_WIDTH};

/// Message of the panic raised when a `Gc` to a collected object is used.
pub(crate) const DROPPED_MSG: &str =
    "strata_gc: dereferenced a Gc whose value was already dropped by the cycle collector \
     (a Drop impl or finalizer kept a handle to garbage); check `Gc::is_dropped` first";

/// The counts (strong count, counts word) followed by the value.
#[repr(C)]
pub(crate) struct GcBox<T: ?Sized> {
    pub(crate) counts: Counts,
    pub(crate) value: T,
}

/// Free a box whose counts word is `v` (which says whether it has links).
///
/// # Safety
///
/// `inner` is an allocated box (its pointer metadata describes the value)
/// with no handle left; its value was dropped or moved out.
#[inline]
pub(crate) unsafe fn dealloc_box<T: ?Sized>(inner: *mut GcBox<T>, v: u32) {
    if v & HAS_LINKS != 0 && mem::size_of::<*const T>() != mem::size_of::<*const u8>() {
        // An unsized value's box with links may have more in front of its
        // Links than a sized one (a slice box keeps its length there: see
        // `slice::TrackedSlice`); the vtable of the box knows its layout.
        // SAFETY: the Links record sits LINKS_SIZE bytes before the counts
        // word; no handle remains and the value is gone, as `dealloc`
        // requires.
        unsafe {
            let node = inner.cast::<u8>().sub(LINKS_SIZE).cast::<Links>();
            (links(node).vtable.dealloc)(node);
        }
        return;
    }
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

// ---------------------------------------------------------------------------
// Tracked boxes: vtable, layout, allocation
// ---------------------------------------------------------------------------

/// Per-type vtable and layout for tracked boxes.
pub(crate) struct Tracked<T>(PhantomData<T>);

impl<T: Trace + 'static> Tracked<T> {
    /// Offset of the `GcBox<T>` from the start of the allocation.
    pub(crate) const INNER_OFFSET: usize = {
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
    pub(crate) const VTABLE: &'static NodeVTable = &NodeVTable {
        trace: Self::trace,
        finalize: Self::finalize,
        drop_value: Self::drop_value,
        dealloc: Self::dealloc,
        release_strong: release_strong_node,
        type_name: std::any::type_name::<T>,
        type_id: TypeId::of::<T>,
        value_offset: mem::offset_of!(GcBox<T>, value),
        needs_finalize: T::NEEDS_FINALIZE,
    };

    pub(crate) fn layout() -> Layout {
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
        // whose counts are LINKS_SIZE bytes after it.
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
    pub(crate) fn allocate(value: T, height: Option<u32>) -> (NodePtr, NonNull<GcBox<T>>) {
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
                counts: Counts::new(1, HAS_LINKS | WEAK_ONE | tracking_bits(height)),
                value,
            });
            (node, NonNull::new_unchecked(inner))
        }
    }
}

// ---------------------------------------------------------------------------
// Gc<T>
// ---------------------------------------------------------------------------

/// A single-threaded reference-counted pointer whose reference cycles are
/// reclaimed by a generational cycle collector. See the [crate docs](crate).
///
/// One object can have up to 2^32 - 1 strong and 2^22 - 2 weak references
/// (the weak count shares a word with the collector's flags); like `Rc` on
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
                counts: Counts::new(1, WEAK_ONE | tracking_bits(Some(0))),
                value,
            });
            // SAFETY: Box::into_raw never returns null.
            Gc::from_inner(unsafe { NonNull::new_unchecked(Box::into_raw(b)) })
        }
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
        let c = this.counts();
        let v = c.word.get();
        if c.strong.get() != 1 || v & DROPPED != 0 {
            return Err(this);
        }
        let this = ManuallyDrop::new(this);
        let c = this.counts();
        let inner = this.ptr.as_ptr();
        c.strong.set(0);
        // SAFETY: we held the only strong reference, so nobody else can read
        // the value; it is moved out exactly once and then marked DROPPED so
        // the box is only ever deallocated, never dropped again.
        unsafe {
            let value = ptr::read(addr_of!((*inner).value));
            c.word.set(c.word.get() | DROPPED);
            if v & HAS_LINKS != 0 {
                let node = this.node_unchecked();
                collector::untrack(node);
                release_weak_node(node);
            } else {
                let cw = c.word.get() - WEAK_ONE;
                c.word.set(cw);
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

    /// Clone-on-write, like `Rc::make_mut`: a mutable guard to the value,
    /// which is first cloned into a new allocation if other `Gc` pointers
    /// share it, or moved into one if only `Weak` pointers do (they are
    /// then disassociated: `upgrade` returns `None`). The guard is
    /// [`Gc::get_mut`]'s: while it lives the collector does not look
    /// inside the value, so its edges may change.
    ///
    /// # Panics
    ///
    /// If the collector already dropped the value ([`Gc::is_dropped`]).
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let mut a = Gc::new(1);
    /// let b = a.clone();
    /// *Gc::make_mut(&mut a) += 1; // clones: `b` is shared
    /// *Gc::make_mut(&mut a) += 1; // unique now: in place
    /// assert_eq!((*a, *b), (3, 1));
    /// ```
    pub fn make_mut(this: &mut Self) -> GcMut<'_, T>
    where
        T: Clone,
    {
        let c = this.counts();
        let v = c.word.get();
        if c.strong.get() != 1 || v & DROPPED != 0 {
            // A panic in `clone` or `new` leaves `this` as it was.
            *this = Gc::new((**this).clone());
        } else if v & WEAK_MASK != WEAK_ONE {
            // SAFETY: `this` is the only strong reference and the value is
            // alive.
            let value = unsafe { this.take_value() };
            // `this` is a valid handle to a dropped box meanwhile, so a
            // panic in `new` (a finalizer of an automatic collection) only
            // loses the value.
            *this = Gc::new(value);
        }
        match Gc::get_mut(this) {
            Some(guard) => guard,
            None => unreachable!("strata_gc: make_mut: the Gc was made unique"),
        }
    }

    /// Move the value out of its box, which is left `DROPPED` and in no
    /// list with this handle's strong reference: the handle stays valid
    /// (dropping it frees the box as for any dropped value) and weak
    /// pointers no longer upgrade.
    ///
    /// # Safety
    ///
    /// `self` is the only strong reference and the value is alive.
    unsafe fn take_value(&self) -> T {
        let c = self.counts();
        // SAFETY: nobody else can read the value (the only strong handle is
        // `self`, weak upgrades fail once DROPPED is set); it is moved out
        // once and the box is only ever deallocated after. A DROPPED node
        // is never linked again, so it leaves its list for good.
        unsafe {
            let value = ptr::read(addr_of!((*self.ptr.as_ptr()).value));
            c.word.set(c.word.get() | DROPPED);
            if let Some(node) = self.node() {
                collector::untrack(node);
            }
            value
        }
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
    /// use strata_gc::{Gc, Trace};
    /// #[derive(Trace)]
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

    /// The box this handle points at.
    #[inline]
    pub(crate) fn inner(&self) -> NonNull<GcBox<T>> {
        self.ptr
    }

    #[inline]
    pub(crate) fn counts(&self) -> &Counts {
        // SAFETY: a live Gc keeps its box allocated; the counts are the
        // first field and only accessed through Cells.
        unsafe { &*addr_of!((*self.ptr.as_ptr()).counts) }
    }

    /// The counts word (for `Gc::new`'s look at the referents).
    #[inline]
    pub(crate) fn counts_word(&self) -> u32 {
        self.counts().word.get()
    }

    /// The tracked node of this box, if it has one.
    #[inline]
    pub(crate) fn node(&self) -> Option<NodePtr> {
        if self.counts().word.get() & HAS_LINKS != 0 {
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
        // SAFETY: the Links record sits LINKS_SIZE bytes before the counts
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
        this.counts().word.get() & DROPPED != 0
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

    /// Number of strong (`Gc`) pointers to this allocation.
    pub fn strong_count(this: &Self) -> usize {
        this.counts().strong.get() as usize
    }

    /// Number of [`Weak`](crate::Weak) pointers to this allocation.
    pub fn weak_count(this: &Self) -> usize {
        weak_refs(this.counts().word.get())
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

    /// Consumes the `Gc`, returning the pointer to its value (as
    /// [`Gc::as_ptr`]); the strong reference it held is kept until
    /// [`Gc::from_raw`] takes it back. Like `Rc::into_raw`: to the
    /// collector that reference comes from outside the heap, so it keeps
    /// the object and what it reaches alive.
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let p = Gc::into_raw(Gc::new(7));
    /// // SAFETY: `p` comes from `into_raw` and is taken back once.
    /// let g = unsafe { Gc::from_raw(p) };
    /// assert_eq!(*g, 7);
    /// ```
    pub fn into_raw(this: Self) -> *const T {
        let p = Gc::as_ptr(&this);
        mem::forget(this);
        p
    }

    /// Takes back the strong reference of a pointer that
    /// [`Gc::into_raw`] returned.
    ///
    /// # Safety
    ///
    /// As for `Rc::from_raw`: `ptr` must have been returned by
    /// `Gc::<T>::into_raw` (for this same `T`), on this thread, and each
    /// such pointer may be passed to `from_raw` once for each `into_raw`
    /// that returned it (otherwise the count is decremented too often, a
    /// use after free). For an unsized `T` its metadata (length, vtable)
    /// must be the one `into_raw` returned.
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        // SAFETY: guaranteed by the caller: `ptr` points to the value of a
        // box our reference keeps allocated, `value_offset` bytes after
        // its counts; `align_of_val` only reads the metadata (a
        // length or a vtable) and the memory stays allocated. The offset
        // is that of a `repr(C)` field after the 8-byte `Counts`.
        unsafe {
            let align = mem::align_of_val(&*ptr);
            let offset = mem::size_of::<Counts>().next_multiple_of(align);
            let inner = ptr.byte_sub(offset) as *mut GcBox<T>;
            Gc::from_inner(NonNull::new_unchecked(inner))
        }
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
        let c = this.counts();
        let v = c.word.get();
        if c.strong.get() != 1 || (v & WEAK_MASK) != WEAK_ONE || v & DROPPED != 0 {
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
        if T::MAY_CONTAIN_GC && self.counts().word.get() & DROPPED != 0 {
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
        let s = c.strong.get() - 1;
        c.strong.set(s);
        let v = c.word.get();
        // Not the last reference (walks and fan-in drop these by the
        // million): one bit test more than `Rc`, set on every box but the
        // tracked ones that have not turned purple yet.
        if s != 0 {
            if v & PURPLE == 0 {
                turn_purple(c, v);
            }
        } else if v & SLOW_RELEASE == 0 {
            // SAFETY: this was the last strong reference to an untracked box
            // whose value is alive and low enough to drop directly.
            unsafe { self.drop_value_and_box() }
        } else {
            // SAFETY: this was the last strong reference.
            unsafe { self.drop_slow(v) }
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
        let w = c.word.get() - WEAK_ONE;
        if w & WEAK_MASK == 0 {
            // SAFETY: no strong or weak reference remains.
            unsafe { dealloc_box(inner, w) }
        } else {
            c.word.set(w | DROPPED);
        }
    }

    /// # Safety
    ///
    /// The strong count just reached 0 (`v` is the counts word).
    #[inline(never)]
    unsafe fn drop_slow(&mut self, v: u32) {
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
        let w = c.word.get() - WEAK_ONE;
        c.word.set(w);
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
    unsafe fn drop_tracked(&mut self, v: u32) {
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

/// Moves the value out of the `Box` (sized values only: `Box<[T]>` and
/// `Box<str>` have impls of their own in `slice`).
impl<T: Trace + 'static> From<Box<T>> for Gc<T> {
    fn from(b: Box<T>) -> Self {
        Gc::new(*b)
    }
}

// ---------------------------------------------------------------------------
// Tracing
// ---------------------------------------------------------------------------

impl<T: ?Sized> Finalize for Gc<T> {
    const NEEDS_FINALIZE: bool = false;
}

// SAFETY: a Gc owns exactly one strong reference: itself.
unsafe impl<T: ?Sized + Trace> Trace for Gc<T> {
    // The pointee is another object with its own flag.
    const INTERIOR_MUTABLE: bool = false;
    #[inline(always)]
    fn trace(&self, visitor: &mut Visitor) {
        visitor.visit(self)
    }
}
