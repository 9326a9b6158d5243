//! Tracing layer: the [`Trace`] and [`Finalize`] impls of std types (leaves,
//! pointers that do not own their pointee, cells, containers, tuples).

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, RwLock, TryLockError};

use crate::header::Visitor;
use crate::trace::{Finalize, Trace};

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

/// `Trace` for a lock type: try-lock with `$try`, trace through the guard,
/// hand the guard to the visitor, which keeps it while the sync collector
/// needs the value unchanged (see `Visitor::keep_locked`). If another
/// thread holds the lock, the value is reported locked out (the collector
/// keeps it and everything it may own alive). A poisoned lock is traced all
/// the same: its value is intact as far as its `Gc`s go.
macro_rules! trace_through_lock {
    ($($(#[$attr:meta])* $($lock:ident)::+ => $try:ident;)*) => {$(
        $(#[$attr])*
        impl<T> Finalize for $($lock)::+<T> {
            const NEEDS_FINALIZE: bool = false;
        }
        $(#[$attr])*
        // SAFETY: reports the `Gc`s of the owned value, read through a guard
        // the collector keeps until it no longer needs them in place, or
        // reports that they could not be read.
        unsafe impl<T: Trace> Trace for $($lock)::+<T> {
            const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
            const INTERIOR_MUTABLE: bool = T::MAY_CONTAIN_GC;
            fn trace(&self, visitor: &mut Visitor) {
                let guard = match self.$try() {
                    Ok(g) => g,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => return visitor.locked_out(),
                };
                guard.trace(visitor);
                // SAFETY: the guard borrows `self`, the value being traced.
                unsafe { visitor.keep_locked(guard) }
            }
        }
    )*};
}

trace_through_lock! {
    Mutex => try_lock;
    // A read guard: other readers go on.
    RwLock => try_read;
    /// The loom models of `strata_gc::sync` (loom-tests/) build graphs with
    /// loom's mutex, whose waits loom can see.
    #[cfg(loom)]
    loom::sync::Mutex => try_lock;
}

impl<T> Finalize for OnceLock<T> {
    const NEEDS_FINALIZE: bool = false;
}
// SAFETY: owns its content once set. Through a shared reference it can only
// go from empty to set: a `Gc` it gains after being traced is one the
// collector did not subtract, which only keeps its referent alive.
unsafe impl<T: Trace> Trace for OnceLock<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    const INTERIOR_MUTABLE: bool = T::MAY_CONTAIN_GC;
    fn trace(&self, visitor: &mut Visitor) {
        if let Some(v) = self.get() {
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
