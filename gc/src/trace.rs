//! Tracing layer: the [`Trace`] and [`Finalize`] traits and their contract,
//! and [`DynTrace`] for trait objects. The [`Visitor`] handed to `trace` is
//! the header's; the std impls are in `trace_impls`, those of `Gc` and
//! `Weak` beside the types.

use std::any::TypeId;

use crate::header::Visitor;

/// Code to run when the cycle collector has found an object unreachable,
/// while every object of the garbage is still intact (PEP 442).
///
/// `finalize` runs at most once per object, before any value of the garbage
/// is dropped; it may resurrect objects (store a clone of a `Gc` somewhere
/// reachable), in which case they survive and are never finalized again.
/// Objects freed by reference counting are not finalized: their `Drop` runs
/// while everything they reference is still alive anyway.
///
/// `#[derive(Trace)]` implements it as a no-op, so a type without a
/// finalizer needs nothing more. To write a finalizer, mark the type
/// `#[trace(finalize)]` (the derive then leaves `Finalize` to you) and
/// implement it by hand:
///
/// ```
/// use std::cell::Cell;
/// use strata_gc::{Finalize, Trace};
///
/// #[derive(Trace)]
/// #[trace(finalize)]
/// struct Resource {
///     #[trace(skip)]
///     closed: Cell<bool>,
/// }
///
/// impl Finalize for Resource {
///     fn finalize(&self) {
///         self.closed.set(true);
///     }
/// }
/// ```
///
/// A hand-written `unsafe impl Trace` needs a hand-written `Finalize` too,
/// `impl Finalize for T { const NEEDS_FINALIZE: bool = false; }` when it
/// has nothing to do. `#[derive(Finalize)]` expands to nothing: it only
/// keeps `#[derive(Trace, Finalize)]`, the form of rust-gc and rust-cc,
/// compiling (two derives cannot see each other, so only `Trace`'s may
/// emit the impl).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement `Finalize`",
    note = "`#[derive(Trace)]` implements an empty `Finalize`; a hand-written \
            `unsafe impl Trace` needs `impl Finalize for {Self} {{ const NEEDS_FINALIZE: bool = false; }}` \
            (`#[derive(Finalize)]` expands to nothing)"
)]
pub trait Finalize {
    /// Whether [`finalize`](Finalize::finalize) does anything. `false` lets
    /// the collector skip the finalization pass and the resurrection re-check
    /// when no object of the garbage needs finalizing (it is what
    /// `#[derive(Trace)]` and the std impls set). Defaults to `true`, so a
    /// hand-written `finalize` is never skipped; a wrong `false` only
    /// means `finalize` is not called.
    const NEEDS_FINALIZE: bool = true;

    /// Called once by the collector before the object's garbage is dropped.
    fn finalize(&self) {}
}

/// Types whose owned [`Gc`](crate::Gc) pointers the collector can enumerate.
///
/// Use `#[derive(Trace)]`, which also implements [`Finalize`] as a no-op
/// unless the type is marked `#[trace(finalize)]`; fields that hold no
/// `Gc` may be marked `#[trace(skip)]`, and so may enum variants (none of
/// their fields is traced). Skipping something that does hold a `Gc` only
/// leaks the cycles through it. Any other `#[trace(...)]` option is a
/// compile error.
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
/// override them ([`Gc::unsize`](crate::Gc::unsize) relies on them to tell types apart).
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

    /// What [`Gc::unsize`](crate::Gc::unsize) compares: the value's type, except that an array
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
