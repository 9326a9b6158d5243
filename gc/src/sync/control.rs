//! Sync layer: the settings, statistics and callbacks of the sync
//! collector (the `gc` module's `enable`, thresholds, `get_stats`,
//! `callbacks`), shared by every thread.

use std::sync::Arc;
use std::time::Duration;

use super::shim::{global, lock, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::collector::events::{CallbackInfo, Phase};

/// Candidates that trigger an automatic collection (CPython's first
/// threshold is 700 tracked allocations; a candidate is rarer than an
/// allocation, and a collection here also pays for its locks).
pub(crate) const DEFAULT_THRESHOLD: usize = 1000;

/// Statistics of the sync collector since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Collections run (automatic and explicit).
    pub collections: usize,
    /// Of those, full ones (all candidates, old objects included).
    pub full_collections: usize,
    /// Objects found unreachable (including ones a finalizer resurrected).
    pub collected: usize,
    /// Objects the collections looked at.
    pub scanned: usize,
    /// Total time spent collecting.
    pub duration: Duration,
    /// The longest time a collection held the locks of the objects it
    /// scanned: the longest a mutator could wait on such a lock.
    pub longest_lock_hold: Duration,
    /// The longest decision phase: the longest a `Weak::upgrade` of an
    /// object being decided could wait.
    pub longest_decision: Duration,
}

type SyncCallback = Arc<dyn Fn(Phase, &CallbackInfo) + Send + Sync>;

pub(crate) struct Control {
    enabled: AtomicBool,
    threshold: AtomicUsize,
    /// Objects the last collection scanned and kept alive.
    survivors: AtomicUsize,
    stats: Mutex<Stats>,
    callbacks: Mutex<Vec<(u64, SyncCallback)>>,
    next_callback: AtomicU64,
}

global! {
    static CONTROL: Control = Control {
        enabled: AtomicBool::new(true),
        threshold: AtomicUsize::new(DEFAULT_THRESHOLD),
        survivors: AtomicUsize::new(0),
        stats: Mutex::new(Stats {
            collections: 0,
            full_collections: 0,
            collected: 0,
            scanned: 0,
            duration: Duration::ZERO,
            longest_lock_hold: Duration::ZERO,
            longest_decision: Duration::ZERO,
        }),
        callbacks: Mutex::new(Vec::new()),
        next_callback: AtomicU64::new(0),
    };
}

pub(crate) fn set_enabled(on: bool) {
    CONTROL.enabled.store(on, Ordering::Relaxed);
}

pub(crate) fn is_enabled() -> bool {
    CONTROL.enabled.load(Ordering::Relaxed)
}

pub(crate) fn threshold() -> usize {
    CONTROL.threshold.load(Ordering::Relaxed)
}

pub(crate) fn set_threshold(t: usize) {
    CONTROL.threshold.store(t, Ordering::Relaxed);
}

/// Candidates that trigger the next automatic collection: the threshold,
/// or as many as the objects the last collection scanned and found alive
/// if that is more (0 if automatic collections are off). A program whose
/// candidates mostly lead into live data (a shared tree walked by cloning
/// handles) then pays each collection with as many pushes as it scans,
/// which bounds the collector's share of the work; one that makes garbage
/// keeps the threshold.
pub(crate) fn trigger() -> usize {
    match threshold() {
        0 => 0,
        t => t.max(CONTROL.survivors.load(Ordering::Relaxed)),
    }
}

/// Record what the last collection kept alive, for [`trigger`]: a
/// collection that finds less than the one before halves the estimate
/// instead of replacing it, so that collections of candidates already
/// gone (which scan nothing) do not bring the trigger back down at once.
pub(crate) fn set_survivors(n: usize) {
    let before = CONTROL.survivors.load(Ordering::Relaxed);
    CONTROL
        .survivors
        .store(n.max(before / 2), Ordering::Relaxed);
}

pub(crate) fn stats() -> Stats {
    *lock(&CONTROL.stats)
}

/// Fold one collection into the statistics.
pub(crate) fn record(one: &Stats) {
    let mut s = lock(&CONTROL.stats);
    s.collections += one.collections;
    s.full_collections += one.full_collections;
    s.collected += one.collected;
    s.scanned += one.scanned;
    s.duration += one.duration;
    s.longest_lock_hold = s.longest_lock_hold.max(one.longest_lock_hold);
    s.longest_decision = s.longest_decision.max(one.longest_decision);
}

/// Removes its callback when [`remove`](CallbackHandle::remove) is called.
/// Dropping the handle keeps the callback registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "keep the handle to be able to remove the callback"]
pub struct CallbackHandle(u64);

impl CallbackHandle {
    /// Unregister the callback; returns whether it was still registered.
    pub fn remove(self) -> bool {
        let mut cbs = lock(&CONTROL.callbacks);
        let before = cbs.len();
        cbs.retain(|(id, _)| *id != self.0);
        cbs.len() != before
    }
}

pub(crate) fn add_callback(f: SyncCallback) -> CallbackHandle {
    let id = CONTROL.next_callback.fetch_add(1, Ordering::Relaxed);
    lock(&CONTROL.callbacks).push((id, f));
    CallbackHandle(id)
}

/// The callbacks registered now (called without the registry locked, so a
/// callback may add or remove callbacks).
pub(crate) fn callbacks() -> Vec<SyncCallback> {
    lock(&CONTROL.callbacks)
        .iter()
        .map(|(_, f)| f.clone())
        .collect()
}
