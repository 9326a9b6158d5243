//! Collector layer, events: what the collector shares with the API above
//! it — its debug flags, per-generation statistics, the collection
//! callbacks and what they are told, and the `SAVEALL` garbage list. The
//! collector calls the callbacks and fills the list; `lib.rs` registers
//! callbacks, `introspect` reads the list. The list releases its holds
//! through the header's vtable, so nothing here imports the pointer layer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::header::{links, value_address, NodePtr};

/// Debug flags, like the `DEBUG_*` constants of Python's `gc` module.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DebugFlags(u32);

impl DebugFlags {
    /// Print statistics to stderr during collections.
    pub const STATS: DebugFlags = DebugFlags(1);
    /// Keep unreachable objects in [`garbage`](crate::garbage) instead of
    /// freeing them (their weak references are still cleared).
    pub const SAVEALL: DebugFlags = DebugFlags(1 << 5);

    /// No flag set.
    pub const fn empty() -> DebugFlags {
        DebugFlags(0)
    }

    /// Are all flags of `other` set in `self`?
    pub const fn contains(self, other: DebugFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl std::ops::BitOr for DebugFlags {
    type Output = DebugFlags;
    fn bitor(self, rhs: DebugFlags) -> DebugFlags {
        DebugFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for DebugFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.contains(DebugFlags::STATS) {
            names.push("STATS");
        }
        if self.contains(DebugFlags::SAVEALL) {
            names.push("SAVEALL");
        }
        write!(f, "DebugFlags({})", names.join(" | "))
    }
}

/// Statistics of one generation since the thread started (Python's
/// `gc.get_stats()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    /// Number of collections of this generation.
    pub collections: usize,
    /// Objects found unreachable by those collections (including resurrected
    /// ones and ones saved by `SAVEALL`).
    pub collected: usize,
    /// Objects kept in [`garbage`](crate::garbage) by `SAVEALL`.
    pub uncollectable: usize,
    /// Total time spent in those collections.
    pub duration: Duration,
}

impl GenerationStats {
    pub(crate) const ZERO: GenerationStats = GenerationStats {
        collections: 0,
        collected: 0,
        uncollectable: 0,
        duration: Duration::ZERO,
    };
}

/// Phase of a collection reported to callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The collection is about to start.
    Start,
    /// The collection has finished.
    Stop,
}

/// Information passed to collection callbacks (Python's `info` dict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackInfo {
    /// The generation being collected.
    pub generation: usize,
    /// Objects found unreachable (0 at [`Phase::Start`]).
    pub collected: usize,
    /// Objects saved by `SAVEALL` (0 at [`Phase::Start`]).
    pub uncollectable: usize,
}

pub(crate) type Callback = Rc<dyn Fn(Phase, &CallbackInfo)>;

/// Removes its callback when [`remove`](CallbackHandle::remove) is called.
/// Dropping the handle keeps the callback registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "keep the handle to be able to remove the callback"]
pub struct CallbackHandle(u64);

impl CallbackHandle {
    /// Unregister the callback; returns whether it was still registered.
    pub fn remove(self) -> bool {
        EXTRAS
            .try_with(|e| {
                let mut cbs = e.callbacks.borrow_mut();
                let before = cbs.len();
                cbs.retain(|(id, _)| *id != self.0);
                cbs.len() != before
            })
            .unwrap_or(false)
    }
}

/// A strong reference held by the garbage list.
struct SavedGarbage(NodePtr);

impl Drop for SavedGarbage {
    fn drop(&mut self) {
        // SAFETY: the garbage list owns one strong reference to the node,
        // which the vtable's `release_strong` (the pointer layer's release
        // path) gives up.
        unsafe { (links(self.0).vtable.release_strong)(self.0) }
    }
}

/// The per-thread state of the API above the collector: callbacks, saved
/// garbage and the baseline of `introspect::growth`. One thread-local, so
/// it is created at the first of any of these uses (or collections): where
/// its destructor runs among the thread's others decides what is still
/// there during the collection at thread exit.
#[derive(Default)]
struct Extras {
    callbacks: RefCell<Vec<(u64, Callback)>>,
    next_id: RefCell<u64>,
    garbage: RefCell<Vec<SavedGarbage>>,
    last_counts: RefCell<HashMap<&'static str, usize>>,
}

thread_local! {
    static EXTRAS: Extras = Extras::default();
}

/// Register `f` for every collection of this thread.
pub(crate) fn add_callback(f: impl Fn(Phase, &CallbackInfo) + 'static) -> CallbackHandle {
    EXTRAS.with(|e| {
        let mut id = e.next_id.borrow_mut();
        *id += 1;
        e.callbacks.borrow_mut().push((*id, Rc::new(f)));
        CallbackHandle(*id)
    })
}

/// The callbacks registered now (a copy: a callback may add or remove
/// callbacks while they run).
pub(crate) fn callbacks() -> Vec<Callback> {
    EXTRAS
        .try_with(|e| {
            e.callbacks
                .borrow()
                .iter()
                .map(|(_, c)| c.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Keep `node` in the garbage list, taking over one strong reference.
///
/// # Safety
///
/// The caller transfers one strong reference to `node` to the list.
pub(crate) unsafe fn save_garbage(node: NodePtr) {
    let saved = SavedGarbage(node);
    // If the thread is tearing down, dropping `saved` releases the reference.
    let _ = EXTRAS.try_with(move |e| e.garbage.borrow_mut().push(saved));
}

/// One object kept by `SAVEALL` (see [`garbage`](crate::garbage)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GarbageEntry {
    /// `std::any::type_name` of the value.
    pub type_name: &'static str,
    /// Address of the value (compare with `Gc::as_ptr`).
    pub address: usize,
}

/// The objects kept by `SAVEALL`.
pub(crate) fn garbage() -> Vec<GarbageEntry> {
    EXTRAS
        .try_with(|e| {
            e.garbage
                .borrow()
                .iter()
                .map(|g| GarbageEntry {
                    // SAFETY: the list holds a strong reference to g.0.
                    type_name: (unsafe { links(g.0) }.vtable.type_name)(),
                    address: value_address(g.0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Call `f` on every object kept by `SAVEALL` (the list keeps each alive).
pub(crate) fn for_each_garbage(mut f: impl FnMut(NodePtr)) {
    let _ = EXTRAS.try_with(|e| {
        for g in e.garbage.borrow().iter() {
            f(g.0)
        }
    });
}

/// Release the saved garbage; returns how many objects were released.
pub(crate) fn clear_garbage() -> usize {
    let taken = EXTRAS
        .try_with(|e| std::mem::take(&mut *e.garbage.borrow_mut()))
        .unwrap_or_default();
    let n = taken.len();
    drop(taken);
    n
}

/// Run `f` on the type counts that `introspect::growth` last reported.
pub(crate) fn with_growth_baseline<R>(
    f: impl FnOnce(&mut HashMap<&'static str, usize>) -> R,
) -> Option<R> {
    EXTRAS.try_with(|e| f(&mut e.last_counts.borrow_mut())).ok()
}
