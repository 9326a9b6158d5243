//! Thread-safe reference counting with a concurrent cycle collector: the
//! [`Arc`](std::sync::Arc) of `strata_gc`.
//!
//! [`Gc<T>`] is `Send` and `Sync` when `T` is, and costs what `Arc` costs:
//! one atomic increment per clone, one atomic decrement per drop, the value
//! dropped at once by whichever thread drops the last handle. Cycles do not
//! leak: a process-wide collector finds groups of objects that only
//! reference each other and frees them, while the other threads go on
//! running; no thread is ever stopped.
//!
//! Mutation goes through [`Mutex`](std::sync::Mutex),
//! [`RwLock`](std::sync::RwLock) or [`OnceLock`](std::sync::OnceLock)
//! inside the value, which implement [`Trace`](crate::Trace):
//!
//! ```
//! use std::sync::Mutex;
//! use strata_gc::sync::{self, Gc};
//! use strata_gc::Trace;
//!
//! #[derive(Trace)]
//! struct Node {
//!     next: Mutex<Option<Gc<Node>>>,
//! }
//!
//! let a = Gc::new(Node { next: Mutex::new(None) });
//! let b = Gc::new(Node { next: Mutex::new(Some(a.clone())) });
//! *a.next.lock().unwrap() = Some(b.clone()); // a -> b -> a
//! std::thread::spawn(move || drop(b)).join().unwrap();
//! drop(a);
//! assert_eq!(sync::collect(), 2);
//! ```
//!
//! # What the collector does
//!
//! A cycle becomes garbage only when a handle into it is dropped and
//! others remain (in safe code, moving the last outside handle into the
//! cycle needs another handle to borrow through, which is then dropped),
//! so a drop that leaves the count above zero makes the box a *candidate*
//! (Bacon and Rajan's possible roots; a lock-free stack, a box at most
//! once). A collection — when [`threshold`] candidates have
//! piled up, on a background thread the collector starts for itself, or
//! when [`collect`] is called — looks at the subgraph the candidates reach
//! and runs CPython's trial deletion on it: an object whose strong count is
//! not explained by the edges from scanned objects is referenced from
//! outside and alive, as is everything it reaches; the rest is garbage.
//! The garbage is destroyed in PEP 442 order, as the single-threaded
//! collector does: weak handles stop upgrading, finalizers run, the
//! garbage is scanned again (a finalizer may have resurrected some of it),
//! then the values are dropped (a `Drop` impl that reaches another object
//! of the same garbage panics instead of reading a dropped value).
//!
//! Objects that survive a collection become old; later automatic
//! collections leave them out, and a full one (every explicit
//! [`collect`], or an automatic one once the objects that became old
//! since the last full collection reach a quarter of those that survived
//! it, CPython's rule) looks at them again. The cost of an automatic
//! collection is then that of the young part of the graph, however many
//! long-lived objects there are.
//!
//! # Why no garbage cycle is missed
//!
//! A collection takes a box off the candidate list only when it has shown
//! the box alive (a later drop makes it a candidate again) or freed it.
//! Three cases are not shown alive and stay candidates: a box whose lock
//! was taken during the scan (its edges are unknown), one whose `trace`
//! panicked, and one that a young collection kept because it reaches an
//! old box it left out (the old part may close a cycle through it; it
//! waits for the next full collection). The candidate bit lives in the
//! strong word: a drop sets it in the same compare-exchange that gives up
//! its reference, and the collector clears it in the compare-exchange that
//! holds the box, so a drop either lands before the hold (and the
//! collector counts it) or makes the box a candidate again.
//!
//! # Why it is sound while threads keep running
//!
//! The collector holds a strong reference to every box it scans, with the
//! `COLLECTING` flag, so nothing it looks at is freed under it. It traces
//! every scanned value with the locks inside kept (`try_lock`; a lock some
//! thread holds makes its object a root: its edges are unknown), so the
//! edges it saw cannot change until it has read every count. Every
//! operation on a strong word is sequentially consistent, and the argument
//! runs in their one total order:
//!
//! 1. When the collector reads the count of a box it later calls garbage,
//!    every handle to the box is in a field of another such box: the count
//!    is exact at that instant, the handles in scanned fields are the edges
//!    subtracted, and any other handle would have made the box a root.
//! 2. After that instant a thread can get a new handle to the box only by
//!    cloning one it has (which sets `DIRTY`, the box being `COLLECTING`,
//!    and first moves the count), by upgrading a `Weak` (the same), or by
//!    taking one out of a field of another box of the garbage, which needs
//!    a handle to that box, got the same ways. Safe code cannot move a
//!    handle out of a `Mutex` it cannot lock, and the collector holds the
//!    locks of the fields that matter until the last count is read.
//! 3. The decision seals each box of the garbage (an `upgrade` waits on
//!    the seal) and compares its strong word with the count it read: a box
//!    that gained a handle shows `DIRTY` or a changed count, and it and all
//!    it reached in the traced graph are taken out of the garbage. The
//!    first handle any thread made to the garbage is caught so: the
//!    handles made from it can only reach what the traced graph reaches
//!    from its box, since the garbage's fields hold only handles of the
//!    garbage until someone with a new handle changes them.
//! 4. What stays garbage gets `NO_UPGRADE` before it is unsealed, so from
//!    then on no handle to it can be made: its only handles are its own
//!    fields, the collector's holds, and what its finalizers make.
//!
//! A `Trace` impl of a lock type must follow the same rule: try-lock,
//! trace through the guard, hand the guard to
//! [`Visitor::keep_locked`](crate::Visitor::keep_locked), or report
//! [`Visitor::locked_out`](crate::Visitor::locked_out).
//!
//! # What the other threads wait for
//!
//! A thread waits for a collection only when it touches an object the
//! collection is looking at, or when it outruns the collector: locking a field of a scanned object waits until
//! the counts are read (a phase that runs no user code beyond `trace`, as
//! long as the objects scanned: [`Stats::longest_lock_hold`]), and upgrading
//! a `Weak` to an object being decided waits for the decision (no user
//! code at all: [`Stats::longest_decision`]). Clones never wait, and drops
//! do only when a thread makes garbage faster than the collector thread
//! frees it: past 16 triggers' worth of candidates waiting, each further
//! candidate waits for a collection to end, at most a millisecond (so the garbage a program can pile up is bounded,
//! and a finalizer waiting for a lock the thread holds only delays it).
//! Finalizers and the `Drop` impls of garbage run on the collecting thread.
//!
//! # Differences from `Arc`
//!
//! - [`Gc::get_mut`] and [`Gc::try_unwrap`] also fail while a collection
//!   holds the box or while it is a candidate that no collection has looked
//!   at yet (the candidate stack may reach it).
//! - Dereferencing a handle that a `Drop` impl of garbage kept, after the
//!   collector dropped its value, panics.
//! - A strong handle cannot be turned into a raw pointer and back.

mod auto;
mod boxed;
mod buffer;
mod collect;
mod control;
mod handles;
mod shim;

pub use self::control::{CallbackHandle, Stats};
pub use self::handles::{Gc, Weak};

use crate::collector::events::{CallbackInfo, Phase};

/// Run a full collection now, on this thread, after any collection in
/// progress; returns the number of unreachable objects found (including
/// any a finalizer resurrected). A finalizer or `Drop` impl that calls it
/// during a collection gets 0.
pub fn collect() -> usize {
    collect::collect(collect::Trigger::Explicit)
}

/// Turn automatic collections on (the default).
pub fn enable() {
    control::set_enabled(true)
}

/// Turn automatic collections off; [`collect`] still runs.
pub fn disable() {
    control::set_enabled(false)
}

/// Whether automatic collections are on.
pub fn is_enabled() -> bool {
    control::is_enabled()
}

/// Whether a collection is running on some thread.
pub fn is_collecting() -> bool {
    collect::is_running()
}

/// Candidates waiting for the next collection (boxes that lost a handle
/// and kept others).
pub fn count() -> usize {
    buffer::pending()
}

/// Candidates that trigger an automatic collection (default 1000). After
/// a collection that scanned more live objects than that, the next one
/// waits for as many candidates as it found alive, so that walking a large
/// live graph (each clone-and-drop makes a candidate) does not rescan it
/// every `threshold` steps.
pub fn threshold() -> usize {
    control::threshold()
}

/// Set the automatic trigger; 0 turns automatic collections off, as in
/// CPython.
pub fn set_threshold(candidates: usize) {
    control::set_threshold(candidates)
}

/// Statistics since the process started.
pub fn stats() -> Stats {
    control::stats()
}

/// Call `f` at the start and the end of every collection, on the thread
/// running it (CPython's `gc.callbacks`). `CallbackInfo::generation` is 1
/// for a full collection, 0 otherwise. A panic in `f` is resumed once the
/// collection has finished.
pub fn add_callback(f: impl Fn(Phase, &CallbackInfo) + Send + Sync + 'static) -> CallbackHandle {
    control::add_callback(std::sync::Arc::new(f))
}

#[cfg(test)]
mod tests;
