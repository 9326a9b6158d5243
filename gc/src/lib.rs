//! Single-threaded reference-counted pointers with a generational cycle
//! collector, modelled on CPython's `gc` module.
//!
//! The type [`Gc<T>`] provides shared ownership of a value of type `T`,
//! allocated in the heap, exactly like [`std::rc::Rc`]: [`Clone`] produces a
//! new pointer to the same allocation, and when the last `Gc` to a value is
//! dropped the value is dropped and its memory freed immediately. Unlike
//! `Rc`, reference cycles do not leak: a per-thread collector finds groups of
//! objects that only reference each other and frees them.
//!
//! `Gc` is neither [`Send`] nor [`Sync`]; each thread has its own collector,
//! which runs a last full collection when the thread exits (unless
//! [`disable`]d or in [`DebugFlags::SAVEALL`] mode), so garbage cycles a
//! thread leaves behind are freed; cycles that a later thread-local
//! destructor leaves behind get one more collection after it.
//! Shared references only: use [`RefCell`](std::cell::RefCell) (or
//! [`Cell`](std::cell::Cell)) inside a `Gc` for mutation, as with `Rc`.
//! For data shared between threads, [`sync::Gc`] is the `Arc` of this
//! crate, with a concurrent collector of its own.
//!
//! # Tracing
//!
//! The collector needs to enumerate the `Gc`s each object owns. Types
//! implement [`Trace`], usually with `#[derive(Trace)]`, which also gives
//! them an empty [`Finalize`]; a type with a finalizer is marked
//! `#[trace(finalize)]` and implements `Finalize` by hand. A type whose
//! [`Trace::MAY_CONTAIN_GC`] is `false` — `String`, integers, `Vec<u8>`, ... —
//! can never be part of a cycle: a `Gc` of it is never tracked and costs what
//! an `Rc` costs (an 8-byte header holding both counts). Other objects carry
//! a 32-byte header including the intrusive generation-list links.
//!
//! Like CPython, which untracks tuples of untracked objects, an object whose
//! type cannot change its own `Gc`s through a shared reference
//! ([`Trace::INTERIOR_MUTABLE`] is `false`: no `RefCell` around them) and
//! whose referents are all untracked is left untracked: nothing it reaches
//! can ever be mutated into a cycle. Immutable trees and lists then cost no
//! collector work at all; [`Gc::get_mut`] tracks such an object again.
//! [`is_tracked`] tells which objects the collector sees.
//!
//! ```
//! use std::cell::RefCell;
//! use strata_gc::{Gc, Trace};
//!
//! #[derive(Trace)]
//! struct Node {
//!     name: String,
//!     next: RefCell<Option<Gc<Node>>>,
//! }
//!
//! let a = Gc::new(Node { name: "a".into(), next: RefCell::new(None) });
//! let b = Gc::new(Node { name: "b".into(), next: RefCell::new(Some(a.clone())) });
//! *a.next.borrow_mut() = Some(b.clone()); // a -> b -> a
//! drop((a, b));
//! assert_eq!(strata_gc::collect(), 2); // the cycle is found and freed
//! ```
//!
//! # Weak pointers
//!
//! [`Gc::downgrade`] creates a [`Weak`] pointer that does not keep the value
//! alive. When the collector finds an object unreachable, weak pointers to it
//! stop upgrading *before* any finalizer runs, so no code can observe an
//! object that is about to be destroyed through a weak pointer. As in
//! PEP 442, only the weak pointers of that moment are cleared: if a
//! finalizer resurrects the object, they stay dead, and weak pointers made
//! afterwards upgrade. (An object resurrected with weak pointers more than
//! six times, two on 32-bit targets, fails closed: no weak pointer to it
//! upgrades again.)
//!
//! # The collector
//!
//! Collection is CPython's trial deletion: for the objects of the collected
//! generations, copy each strong count, subtract the references found by
//! tracing those objects; what keeps a positive count is referenced from
//! outside (a local variable, an untracked object, an older generation), and
//! everything reachable from it is alive; the rest is garbage. Three
//! generations with thresholds `(700, 10, 10)`: allocating more than 700
//! tracked objects (net) triggers a generation-0 collection, every 10th of
//! those a generation-1 one, and every 10th of those a full one, unless fewer
//! than 25 % of the long-lived objects are new since the last full
//! collection. Survivors are promoted to the next generation.
//!
//! Garbage is destroyed in PEP 442 order: weak pointers are cleared,
//! [`Finalize::finalize`] runs once per object while the whole graph is
//! intact, objects a finalizer resurrected survive, then all values are
//! dropped and finally the memory is freed. A `Gc` that a `Drop` impl copied
//! out of garbage panics on dereference ([`Gc::is_dropped`] tells); it is
//! never undefined behaviour.
//!
//! The free functions mirror Python's `gc` module: [`collect`],
//! [`collect_generation`], [`enable`]/[`disable`], [`count`],
//! [`set_threshold`], [`freeze`], [`stats`], [`add_callback`],
//! [`set_debug`] with [`DebugFlags::SAVEALL`] and [`garbage`], and
//! objgraph-like [`objects_by_type`], [`growth`], [`referrers`],
//! [`referents`] and [`dot`].
//!
//! ```
//! use std::cell::RefCell;
//! use strata_gc::{Gc, Trace};
//!
//! #[derive(Trace, Default)]
//! struct Obj(RefCell<Vec<Gc<Obj>>>);
//!
//! strata_gc::collect();
//! let o = Gc::new(Obj::default());
//! o.0.borrow_mut().push(o.clone()); // self-loop
//! assert!(strata_gc::is_tracked(&o));
//! drop(o);
//! assert_eq!(strata_gc::collect_generation(0), Ok(1));
//! assert!(strata_gc::collect_generation(3).is_err());
//! ```
//!
//! # Trait objects
//!
//! `Gc<dyn Trait>` works for traits with [`DynTrace`] as a supertrait, after
//! [`impl_dyn_trace!`]; convert with [`Gc::unsize`]. `Box<dyn Trait>` fields
//! are traced the same way.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// Lets `#[derive(Trace)]` (which names `::strata_gc`) work inside this crate.
extern crate self as strata_gc;

// The modules' layers, bottom-up, are listed in `ci/layers.txt`; each
// module imports only its own layer and those below.
mod collector;
mod freelist;
mod gc;
mod gc_mut;
mod header;
mod introspect;
mod release;
#[cfg(feature = "svg")]
mod render;
mod slice;
pub mod sync;
mod trace;
mod trace_impls;
mod tracking;
mod visit;
mod weak;

pub use crate::collector::events::{
    CallbackHandle, CallbackInfo, DebugFlags, GarbageEntry, GenerationStats, Phase,
};
pub use crate::gc::Gc;
pub use crate::gc_mut::GcMut;
pub use crate::header::Visitor;
pub use crate::introspect::ObjectInfo;
pub use crate::trace::{DynTrace, Finalize, Trace};
pub use crate::weak::Weak;
pub use strata_gc_derive::{Finalize, Trace};

#[cfg(feature = "svg")]
pub use crate::render::{svg, RenderError};

use std::fmt;

/// Number of generations.
pub const NUM_GENERATIONS: usize = collector::NUM_GENERATIONS;

/// Errors of the control API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcError {
    /// `collect_generation` was given a generation that does not exist.
    InvalidGeneration(usize),
}

impl fmt::Display for GcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcError::InvalidGeneration(g) => write!(
                f,
                "invalid generation {g}: strata_gc has generations 0, 1 and 2; \
                 use 2 (or `collect()`) for a full collection"
            ),
        }
    }
}

impl std::error::Error for GcError {}

/// Run a full collection; returns the number of unreachable objects found.
///
/// Returns 0 without collecting when called while a collection is running
/// (from a finalizer, a `Drop` impl of garbage, or a callback).
pub fn collect() -> usize {
    collector::collect(NUM_GENERATIONS - 1)
}

/// Collect generations `0..=generation`; returns the number of unreachable
/// objects found.
///
/// # Errors
///
/// [`GcError::InvalidGeneration`] if `generation > 2`.
pub fn collect_generation(generation: usize) -> Result<usize, GcError> {
    if generation >= NUM_GENERATIONS {
        return Err(GcError::InvalidGeneration(generation));
    }
    Ok(collector::collect(generation))
}

/// Enable automatic collection (the default).
pub fn enable() {
    collector::control::set_enabled(true)
}

/// Disable automatic collection; [`collect`] still works.
pub fn disable() {
    collector::control::set_enabled(false)
}

/// Is automatic collection enabled?
pub fn is_enabled() -> bool {
    collector::control::is_enabled()
}

/// Is a collection running on this thread right now?
pub fn is_collecting() -> bool {
    collector::control::is_collecting()
}

/// The collection counters `(gen0, gen1, gen2)`: net tracked allocations since
/// the last collection, and the number of collections of the younger
/// generation since the last collection of generations 1 and 2.
pub fn count() -> (usize, usize, usize) {
    collector::control::get_count()
}

/// Alias of [`count`] (Python's `gc.get_count`).
pub fn get_count() -> (usize, usize, usize) {
    collector::control::get_count()
}

/// The collection thresholds (default `(700, 10, 10)`).
pub fn threshold() -> (usize, usize, usize) {
    collector::control::threshold()
}

/// Set the collection thresholds; `t0 = 0` disables automatic collection.
pub fn set_threshold(t0: usize, t1: usize, t2: usize) {
    collector::control::set_threshold(t0, t1, t2)
}

/// Move every tracked object to a permanent generation that is never
/// collected (Python's `gc.freeze`, e.g. before forking workers).
pub fn freeze() {
    collector::control::freeze()
}

/// Move the permanent generation back into the oldest generation.
pub fn unfreeze() {
    collector::control::unfreeze()
}

/// Number of objects in the permanent generation.
pub fn freeze_count() -> usize {
    collector::control::freeze_count()
}

/// Statistics per generation.
pub fn stats() -> [GenerationStats; NUM_GENERATIONS] {
    collector::control::stats()
}

/// Register `f` to be called at the start and stop of every collection.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// let seen = Rc::new(Cell::new(0));
/// let s = seen.clone();
/// let h = strata_gc::add_callback(move |_phase, _info| s.set(s.get() + 1));
/// strata_gc::collect();
/// assert_eq!(seen.get(), 2);
/// assert!(h.remove());
/// ```
pub fn add_callback(f: impl Fn(Phase, &CallbackInfo) + 'static) -> CallbackHandle {
    collector::events::add_callback(f)
}

/// Is this `Gc`'s object tracked by the collector (in a generation)?
pub fn is_tracked<T: ?Sized>(gc: &Gc<T>) -> bool {
    // SAFETY: `gc` keeps its box alive.
    gc.node()
        .is_some_and(|n| unsafe { collector::is_linked(n) })
}

/// Which generation holds this object: `Some(0..=2)`, `Some(3)` for the
/// permanent generation, `None` if untracked. Walks the lists: for tests and
/// debugging.
pub fn generation_of<T: ?Sized>(gc: &Gc<T>) -> Option<usize> {
    // SAFETY: `gc` keeps its box alive.
    gc.node()
        .and_then(|n| unsafe { collector::control::generation_of(n) })
}

/// Number of tracked objects in each generation list.
pub fn generation_sizes() -> [usize; NUM_GENERATIONS] {
    collector::control::generation_sizes()
}

/// Set the debug flags.
pub fn set_debug(flags: DebugFlags) {
    collector::control::set_debug_flags(flags)
}

/// The debug flags.
pub fn debug() -> DebugFlags {
    collector::control::debug_flags()
}

/// Objects kept by [`DebugFlags::SAVEALL`] instead of being freed.
pub fn garbage() -> Vec<GarbageEntry> {
    collector::events::garbage()
}

/// Strong handles to the saved garbage objects of type `T`.
pub fn garbage_of<T: Trace + 'static>() -> Vec<Gc<T>> {
    introspect::garbage_of::<T>()
}

/// Release the saved garbage (a later collection frees it); returns how many
/// objects were released.
pub fn clear_garbage() -> usize {
    collector::events::clear_garbage()
}

/// Live tracked objects by type name, most numerous first.
pub fn objects_by_type() -> Vec<(&'static str, usize)> {
    introspect::objects_by_type()
}

/// Change of the live tracked objects per type since the previous call:
/// `(type name, count now, delta)`, largest increase first.
pub fn growth() -> Vec<(&'static str, usize, isize)> {
    introspect::growth()
}

/// objgraph's `show_growth`: [`growth`] as a printable table, at most
/// `limit` types, largest increase first (`name  count  +delta`). Each
/// call is a new baseline, as in objgraph: call it once before the code
/// under suspicion and print it after.
///
/// ```
/// use std::cell::RefCell;
/// use strata_gc::{Gc, Trace};
/// #[derive(Trace, Default)]
/// struct Leaky(RefCell<Option<Gc<Leaky>>>);
/// strata_gc::show_growth(10);
/// let kept: Vec<Gc<Leaky>> = (0..3).map(|_| Gc::new(Leaky::default())).collect();
/// let table = strata_gc::show_growth(10);
/// assert!(table.lines().any(|l| l.contains("Leaky") && l.trim_end().ends_with("+3")), "{table}");
/// # drop(kept);
/// ```
pub fn show_growth(limit: usize) -> String {
    introspect::growth_table(limit)
}

/// The tracked objects whose value holds a strong reference to `gc`'s
/// object (each listed once), found by tracing every tracked object: O(heap).
/// Local variables and untracked holders are not objects and never listed;
/// a strong count above the number of referrers' edges points at them.
///
/// ```
/// use std::cell::RefCell;
/// use strata_gc::{Gc, Trace};
/// #[derive(Trace, Default)]
/// struct Obj(RefCell<Vec<Gc<Obj>>>);
/// let child = Gc::new(Obj::default());
/// let parent = Gc::new(Obj::default());
/// parent.0.borrow_mut().push(child.clone());
/// let r = strata_gc::referrers(&child);
/// assert_eq!(r.len(), 1);
/// assert_eq!(r[0].address, Gc::as_ptr(&parent) as usize);
/// ```
pub fn referrers<T: ?Sized>(gc: &Gc<T>) -> Vec<ObjectInfo> {
    introspect::referrers(gc)
}

/// The objects `gc`'s value holds a strong reference to (as its
/// [`Trace`] impl reports them, each listed once). Empty if the value was
/// dropped by the collector or is borrowed through [`Gc::get_mut`].
pub fn referents<T: ?Sized + Trace>(gc: &Gc<T>) -> Vec<ObjectInfo> {
    introspect::referents(gc)
}

/// A Graphviz DOT graph of `gc`'s neighbourhood: every object within
/// `depth` strong edges of it, following edges in both directions (what it
/// references and what references it), and the strong edges between them.
/// Nodes are labelled with type name, value address and strong count (a
/// count above the node's drawn in-edges means references from outside the
/// tracked heap, e.g. local variables: that is what keeps a cycle alive).
/// O(heap): it traces every tracked object once. Render with `dot -Tsvg`.
///
/// ```
/// use std::cell::RefCell;
/// use strata_gc::{Gc, Trace};
/// #[derive(Trace, Default)]
/// struct Obj(RefCell<Vec<Gc<Obj>>>);
/// let a = Gc::new(Obj::default());
/// a.0.borrow_mut().push(a.clone());
/// let g = strata_gc::dot(&a, 1);
/// assert!(g.starts_with("digraph"));
/// assert_eq!(g.matches(" -> ").count(), 1);
/// ```
pub fn dot<T: ?Sized + Trace>(gc: &Gc<T>, depth: usize) -> String {
    introspect::dot(gc, depth)
}

/// objgraph's `show_backrefs`: a Graphviz DOT graph of what keeps `gc`'s
/// object alive — its referrers, their referrers, and so on up to `depth`
/// strong edges back, with the edges between them. Labels are those of
/// [`dot`]: a node whose strong count exceeds its drawn in-edges is held
/// from outside the tracked heap (a local variable, an untracked holder).
/// O(heap), like [`dot`].
///
/// ```
/// use std::cell::RefCell;
/// use strata_gc::{Gc, Trace};
/// #[derive(Trace, Default)]
/// struct Obj(RefCell<Vec<Gc<Obj>>>);
/// let leaf = Gc::new(Obj::default());
/// let holder = Gc::new(Obj::default());
/// holder.0.borrow_mut().push(leaf.clone());
/// let other = Gc::new(Obj::default());
/// leaf.0.borrow_mut().push(other.clone());
/// let g = strata_gc::backrefs_dot(&leaf, 3);
/// // The holder is drawn; what the leaf itself references is not.
/// assert_eq!(g.matches(" -> ").count(), 1);
/// assert!(g.contains(&format!("{:p}", Gc::as_ptr(&holder))));
/// assert!(!g.contains(&format!("{:p}", Gc::as_ptr(&other))));
/// ```
pub fn backrefs_dot<T: ?Sized + Trace>(gc: &Gc<T>, depth: usize) -> String {
    introspect::backrefs_dot(gc, depth)
}

/// Implement [`Trace`] and [`Finalize`] for `dyn YourTrait` where
/// `YourTrait: DynTrace`, so `Gc<dyn YourTrait>` and `Box<dyn YourTrait>`
/// can be traced.
///
/// ```
/// use strata_gc::{impl_dyn_trace, DynTrace, Gc, Trace};
/// trait Shape: DynTrace { fn area(&self) -> f64; }
/// impl_dyn_trace!(Shape);
/// #[derive(Trace)]
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

/// Items used by the code `#[derive(Trace)]` generates; not public API.
#[doc(hidden)]
pub mod __private {
    use crate::{Finalize, Trace, Visitor};

    /// Stands for the deriving type inside its own fields when computing
    /// `INTERIOR_MUTABLE` (see the derive crate's docs). Never instantiated;
    /// common traits are implemented so that wrappers bounded on them accept
    /// it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct SelfPlaceholder;

    impl Finalize for SelfPlaceholder {
        const NEEDS_FINALIZE: bool = false;
    }

    // SAFETY: owns nothing. `MAY_CONTAIN_GC` keeps the conservative `true`
    // of the type it stands for; `INTERIOR_MUTABLE` is the fixed-point seed.
    unsafe impl Trace for SelfPlaceholder {
        const INTERIOR_MUTABLE: bool = false;
        fn trace(&self, _: &mut Visitor) {}
    }
}

#[cfg(test)]
mod tests;
