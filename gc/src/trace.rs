//! Tracing layer: the [`Trace`] and [`Finalize`] traits, the [`Visitor`]
//! the collector hands to `trace`, [`DynTrace`] for trait objects, and the
//! implementations for std types.

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::collector;
use crate::gc::{Gc, NodePtr, Weak, DROPPED, TRACKED};

/// Code to run when the cycle collector has found an object unreachable,
/// while every object of the garbage is still intact (PEP 442).
///
/// `finalize` runs at most once per object, before any value of the garbage
/// is dropped; it may resurrect objects (store a clone of a `Gc` somewhere
/// reachable), in which case they survive and are never finalized again.
/// Objects freed by reference counting are not finalized: their `Drop` runs
/// while everything they reference is still alive anyway.
///
/// Implement it with `#[derive(Finalize)]` (no-op) or by hand.
pub trait Finalize {
    /// Whether [`finalize`](Finalize::finalize) does anything. `false` lets
    /// the collector skip the finalization pass and the resurrection re-check
    /// when no object of the garbage needs finalizing (it is what
    /// `#[derive(Finalize)]` and the std impls set). Defaults to `true`; a
    /// wrong `false` only means `finalize` is not called.
    const NEEDS_FINALIZE: bool = true;

    /// Called once by the collector before the object's garbage is dropped.
    fn finalize(&self) {}
}

/// Types whose owned [`Gc`] pointers the collector can enumerate.
///
/// Use `#[derive(Trace)]`; fields that hold no `Gc` may be marked
/// `#[trace(skip)]`.
///
/// # Safety
///
/// `trace` must call [`Visitor::visit`] at most once for each `Gc` that
/// `self` owns (directly or through owned containers), and never for a `Gc`
/// it does not own (e.g. one behind an `Rc` or a reference). Visiting fewer
/// only leaks; visiting more lets the collector free live objects. `trace`
/// must not create, clone or drop `Gc`s, must not panic, and must not
/// mutate `self`, not even through a cell (the collector reads the contents
/// of a `RefCell` without borrowing it).
///
/// `MAY_CONTAIN_GC = false` promises the type can never own a `Gc`; such
/// values are never tracked and cost what `Rc` costs. (A wrong `false` only
/// leaks cycles.)
///
/// `INTERIOR_MUTABLE = false` promises that the `Gc`s a value owns cannot
/// change while it is shared (no `RefCell` or other cell around them). A
/// `Gc` of such a value whose referents are all untracked is itself left
/// untracked, like CPython's untracked tuples. (A wrong `false` only leaks
/// cycles, since an untracked object counts as a reference from outside,
/// and may let dropping a long chain of such values recurse as deep as the
/// chain, as `Rc` does.)
///
/// The `#[doc(hidden)]` items belong to the crate: implementations must not
/// override them ([`Gc::unsize`] relies on them to tell types apart).
pub unsafe trait Trace: Finalize {
    /// Whether a value of this type can own a `Gc` (and thus be part of a
    /// cycle). Defaults to `true`.
    const MAY_CONTAIN_GC: bool = true;

    /// Whether the `Gc`s this value owns *itself* can change through a
    /// shared reference (`RefCell<Option<Gc<_>>>`: yes; `Option<Gc<_>>`,
    /// `Vec<Gc<_>>`: no). Shallow: a `Gc<U>` field is `false` whatever `U`
    /// is, since its pointee is a separate object with its own flag.
    /// Defaults to [`MAY_CONTAIN_GC`](Trace::MAY_CONTAIN_GC), so that a
    /// hand-written impl of a type that may hold a `Gc` is always tracked.
    const INTERIOR_MUTABLE: bool = Self::MAY_CONTAIN_GC;

    /// Call `visitor.visit(gc)` for every `Gc` owned by `self`.
    fn trace(&self, visitor: &mut Visitor);

    /// What [`Gc::unsize`] compares: the value's type, except that an array
    /// and a slice give the slice type and their length (so `[E; N]` and
    /// the `[E]` it unsizes to agree), and a trait object gives that of
    /// the value behind it.
    #[doc(hidden)]
    #[inline]
    fn __unsize_key(&self) -> (TypeId, usize)
    where
        Self: 'static,
    {
        (TypeId::of::<Self>(), 0)
    }
}

/// What the collector does with each visited edge.
pub(crate) enum VisitMode {
    /// Trial deletion: decrement `gc_refs` of referenced collecting objects.
    SubtractRefs,
    /// Propagate reachability: mark and push referenced collecting objects.
    MarkReachable(Vec<NodePtr>),
    /// Introspection: record every visited edge.
    Record(Vec<Edge>),
    /// `Gc::new`: the OR of the visited objects' counts words (is one
    /// tracked? how high is the highest? see `gc::HEIGHT_BITS`).
    Untrackable { counts: u64 },
}

/// One `Gc` reported by a `trace` call in [`VisitMode::Record`].
pub(crate) struct Edge {
    /// Address of the referenced value (as `Gc::as_ptr`).
    pub(crate) address: usize,
    /// Type name of the referenced value (the concrete type if tracked).
    pub(crate) type_name: &'static str,
}

/// Handed to [`Trace::trace`]; only the collector can create one.
pub struct Visitor {
    pub(crate) mode: VisitMode,
}

impl Visitor {
    pub(crate) fn new(mode: VisitMode) -> Self {
        Visitor { mode }
    }

    /// Report one owned `Gc`.
    #[inline]
    pub fn visit<T: ?Sized>(&mut self, gc: &Gc<T>) {
        match &mut self.mode {
            VisitMode::Record(edges) => record_edge(edges, gc),
            // Branch-free: boxes without links have none of the bits set.
            VisitMode::Untrackable { counts } => *counts |= gc.counts_word(),
            mode => {
                if let Some(node) = gc.node() {
                    // SAFETY: `gc` keeps its box allocated and `node` is its
                    // Links.
                    unsafe { collector::visit_node(mode, node) }
                }
            }
        }
    }
}

/// `None` if `value` owns a `Gc` to a tracked object (or to one the
/// collector dropped, to keep it simple); otherwise the height bits of an
/// object holding it (see `gc::HEIGHT_BITS`).
///
/// If no referent is tracked and the type is not
/// [`Trace::INTERIOR_MUTABLE`], no cycle can ever run through the object:
/// everything it reaches is untracked, hence immutable and acyclic, and
/// stays so (an untracked object is only re-tracked through `Gc::get_mut`,
/// which needs the only handle, so its holders are re-tracked first).
#[inline]
pub(crate) fn untracked_height<T: ?Sized + Trace>(value: &T) -> Option<u64> {
    let mut v = Visitor::new(VisitMode::Untrackable { counts: 0 });
    value.trace(&mut v);
    let out = match v.mode {
        VisitMode::Untrackable { counts } if counts & (TRACKED | DROPPED) == 0 => {
            Some(crate::gc::height_above(counts))
        }
        _ => None,
    };
    // The mode owns no heap memory: skip the drop glue of the other modes.
    std::mem::forget(v);
    out
}

#[inline(never)]
fn record_edge<T: ?Sized>(edges: &mut Vec<Edge>, gc: &Gc<T>) {
    let type_name = match gc.node() {
        // SAFETY: `gc` keeps its box (and so its Links record) alive.
        Some(n) => (unsafe { crate::gc::links(n) }.vtable.type_name)(),
        None => std::any::type_name::<T>(),
    };
    edges.push(Edge {
        address: Gc::as_ptr(gc) as *const u8 as usize,
        type_name,
    });
}

impl std::fmt::Debug for Visitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Visitor")
    }
}

mod private {
    pub trait Sealed {}
    impl<T: super::Trace> Sealed for T {}
}

/// Object-safe form of [`Trace`] + [`Finalize`], implemented for every
/// `T: Trace`. Use it as a supertrait of your own traits to put them in a
/// `Gc<dyn YourTrait>` or `Box<dyn YourTrait>` field, and implement `Trace`
/// for the trait object with [`impl_dyn_trace!`](crate::impl_dyn_trace).
pub trait DynTrace: private::Sealed {
    /// Forwards to [`Trace::trace`].
    fn dyn_trace(&self, visitor: &mut Visitor);
    /// Forwards to [`Finalize::finalize`].
    fn dyn_finalize(&self);
    /// Forwards to the concrete type's `Trace::__unsize_key` (sealed, so
    /// a trait object always reports the type of the value behind it).
    #[doc(hidden)]
    fn __dyn_unsize_key(&self) -> (TypeId, usize)
    where
        Self: 'static;
}

impl<T: Trace> DynTrace for T {
    fn dyn_trace(&self, visitor: &mut Visitor) {
        self.trace(visitor)
    }
    fn dyn_finalize(&self) {
        self.finalize()
    }
    fn __dyn_unsize_key(&self) -> (TypeId, usize)
    where
        Self: 'static,
    {
        self.__unsize_key()
    }
}

/// Implement [`Trace`] and [`Finalize`] for `dyn YourTrait` where
/// `YourTrait: DynTrace`, so `Gc<dyn YourTrait>` and `Box<dyn YourTrait>`
/// can be traced.
///
/// ```
/// use strata_gc::{impl_dyn_trace, DynTrace, Finalize, Gc, Trace};
/// trait Shape: DynTrace { fn area(&self) -> f64; }
/// impl_dyn_trace!(Shape);
/// #[derive(Trace, Finalize)]
/// struct Square(f64);
/// impl Shape for Square { fn area(&self) -> f64 { self.0 * self.0 } }
/// let s: Gc<dyn Shape> = Gc::unsize(Gc::new(Square(2.0)), |s| s as &dyn Shape);
/// assert_eq!(s.area(), 4.0);
/// ```
#[macro_export]
macro_rules! impl_dyn_trace {
    ($($tr:tt)+) => {
        impl $crate::Finalize for dyn $($tr)+ {
            fn finalize(&self) {
                $crate::DynTrace::dyn_finalize(self)
            }
        }
        // SAFETY: forwards to the Trace impl of the concrete type behind the
        // trait object (DynTrace is sealed and only implemented via Trace).
        unsafe impl $crate::Trace for dyn $($tr)+ {
            fn trace(&self, visitor: &mut $crate::Visitor) {
                $crate::DynTrace::dyn_trace(self, visitor)
            }
            fn __unsize_key(&self) -> (::core::any::TypeId, usize) {
                $crate::DynTrace::__dyn_unsize_key(self)
            }
        }
    };
}

impl Finalize for dyn DynTrace {
    fn finalize(&self) {
        self.dyn_finalize()
    }
}

// SAFETY: forwards to the concrete type's Trace impl.
unsafe impl Trace for dyn DynTrace {
    fn trace(&self, visitor: &mut Visitor) {
        self.dyn_trace(visitor)
    }
    fn __unsize_key(&self) -> (TypeId, usize) {
        self.__dyn_unsize_key()
    }
}

// ---------------------------------------------------------------------------
// Pointers
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

impl<T: ?Sized> Finalize for Weak<T> {
    const NEEDS_FINALIZE: bool = false;
}

// SAFETY: weak references are not edges for trial deletion.
unsafe impl<T: ?Sized> Trace for Weak<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

// ---------------------------------------------------------------------------
// Leaves
// ---------------------------------------------------------------------------

macro_rules! leaf {
    ($($t:ty),* $(,)?) => {$(
        impl Finalize for $t {
    const NEEDS_FINALIZE: bool = false;
}
        // SAFETY: this type never owns a Gc.
        unsafe impl Trace for $t {
            const MAY_CONTAIN_GC: bool = false;
            #[inline]
            fn trace(&self, _: &mut Visitor) {}
        }
    )*};
}

leaf!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    str,
    String,
    std::ffi::OsStr,
    std::ffi::OsString,
    std::ffi::CStr,
    std::ffi::CString,
    std::path::Path,
    std::path::PathBuf,
    std::time::Duration,
    std::time::Instant,
    std::time::SystemTime,
    std::num::NonZeroU8,
    std::num::NonZeroU16,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroUsize,
    std::num::NonZeroI32,
    std::num::NonZeroI64,
    std::any::TypeId,
);

impl<T: ?Sized> Finalize for PhantomData<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: owns nothing.
unsafe impl<T: ?Sized> Trace for PhantomData<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

impl<T: ?Sized> Finalize for &'static T {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: a shared reference owns nothing.
unsafe impl<T: ?Sized> Trace for &'static T {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

impl<T: ?Sized> Finalize for Rc<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: the pointee is shared, not owned: tracing through it could count
// the same Gc twice. A Gc cycle through an Rc is therefore never collected.
unsafe impl<T: ?Sized> Trace for Rc<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

impl<T: ?Sized> Finalize for Arc<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: as for Rc.
unsafe impl<T: ?Sized> Trace for Arc<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

impl<T: Copy> Finalize for Cell<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: `Copy` types cannot own a Gc (Gc is not Copy).
unsafe impl<T: Copy + Trace> Trace for Cell<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

impl<T: ?Sized> Finalize for RefCell<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: traces the owned value. If it is mutably borrowed right now it is
// skipped in every phase of the collection alike, so everything it references
// stays alive (only a leak of this round's cycles, never a premature free).
unsafe impl<T: ?Sized + Trace> Trace for RefCell<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::MAY_CONTAIN_GC;
    #[inline(always)]
    fn trace(&self, visitor: &mut Visitor) {
        // SAFETY: the reference lives only during this call, and nothing
        // borrows the cell mutably meanwhile: `trace` must not mutate
        // `self` (the trait's contract), and the visitor runs no user code
        // that could reach the cell. Leaving the borrow flag alone saves two
        // writes per cell and phase.
        if let Ok(v) = unsafe { self.try_borrow_unguarded() } {
            v.trace(visitor)
        }
    }
}

impl<T: ?Sized> Finalize for Box<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: a Box owns its pointee.
unsafe impl<T: ?Sized + Trace> Trace for Box<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
    #[inline(always)]
    fn trace(&self, visitor: &mut Visitor) {
        (**self).trace(visitor)
    }
}

impl<T> Finalize for Option<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: owns its content.
unsafe impl<T: Trace> Trace for Option<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
    #[inline(always)]
    fn trace(&self, visitor: &mut Visitor) {
        if let Some(v) = self {
            v.trace(visitor)
        }
    }
}

impl<T, E> Finalize for Result<T, E> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: owns its content.
unsafe impl<T: Trace, E: Trace> Trace for Result<T, E> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC || E::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE || E::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        match self {
            Ok(v) => v.trace(visitor),
            Err(e) => e.trace(visitor),
        }
    }
}

impl<T> Finalize for std::cmp::Reverse<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: owns its content.
unsafe impl<T: Trace> Trace for std::cmp::Reverse<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        self.0.trace(visitor)
    }
}

impl<T> Finalize for [T] {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: a slice owns its elements.
unsafe impl<T: Trace> Trace for [T] {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        if T::MAY_CONTAIN_GC {
            for v in self {
                v.trace(visitor)
            }
        }
    }
    fn __unsize_key(&self) -> (TypeId, usize)
    where
        Self: 'static,
    {
        (TypeId::of::<[T]>(), self.len())
    }
}

impl<T, const N: usize> Finalize for [T; N] {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: an array owns its elements.
unsafe impl<T: Trace, const N: usize> Trace for [T; N] {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        self[..].trace(visitor)
    }
    fn __unsize_key(&self) -> (TypeId, usize)
    where
        Self: 'static,
    {
        (TypeId::of::<[T]>(), N)
    }
}

macro_rules! seq {
    ($($name:ident;)*) => {$(
        impl<T> Finalize for $name<T> {
    const NEEDS_FINALIZE: bool = false;
}
        // SAFETY: the collection owns its elements; each is visited once.
        unsafe impl<T: Trace> Trace for $name<T> {
            const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
            const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
            #[inline]
            fn trace(&self, visitor: &mut Visitor) {
                if T::MAY_CONTAIN_GC {
                    for v in self.iter() {
                        v.trace(visitor)
                    }
                }
            }
        }
    )*};
}

seq! {
    Vec;
    VecDeque;
    LinkedList;
    BTreeSet;
    BinaryHeap;
}

impl<T, S> Finalize for HashSet<T, S> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: the set owns its elements.
unsafe impl<T: Trace, S> Trace for HashSet<T, S> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        if T::MAY_CONTAIN_GC {
            for v in self.iter() {
                v.trace(visitor)
            }
        }
    }
}

impl<K, V, S> Finalize for HashMap<K, V, S> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: the map owns its keys and values.
unsafe impl<K: Trace, V: Trace, S> Trace for HashMap<K, V, S> {
    const MAY_CONTAIN_GC: bool = K::MAY_CONTAIN_GC || V::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = K::INTERIOR_MUTABLE || V::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        if Self::MAY_CONTAIN_GC {
            for (k, v) in self.iter() {
                k.trace(visitor);
                v.trace(visitor);
            }
        }
    }
}

impl<K, V> Finalize for BTreeMap<K, V> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: the map owns its keys and values.
unsafe impl<K: Trace, V: Trace> Trace for BTreeMap<K, V> {
    const MAY_CONTAIN_GC: bool = K::MAY_CONTAIN_GC || V::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = K::INTERIOR_MUTABLE || V::INTERIOR_MUTABLE;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        if Self::MAY_CONTAIN_GC {
            for (k, v) in self.iter() {
                k.trace(visitor);
                v.trace(visitor);
            }
        }
    }
}

macro_rules! tuple {
    ($(($($n:tt $t:ident),+))*) => {$(
        impl<$($t),+> Finalize for ($($t,)+) {
    const NEEDS_FINALIZE: bool = false;
}
        // SAFETY: a tuple owns its fields.
        unsafe impl<$($t: Trace),+> Trace for ($($t,)+) {
            const MAY_CONTAIN_GC: bool = false $(|| $t::MAY_CONTAIN_GC)+;
            const INTERIOR_MUTABLE: bool = false $(|| $t::INTERIOR_MUTABLE)+;
            #[inline]
            fn trace(&self, visitor: &mut Visitor) {
                $(self.$n.trace(visitor);)+
            }
        }
    )*};
}

tuple! {
    (0 A)
    (0 A, 1 B)
    (0 A, 1 B, 2 C)
    (0 A, 1 B, 2 C, 3 D)
    (0 A, 1 B, 2 C, 3 D, 4 E)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L)
}
