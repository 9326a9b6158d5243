//! Sync layer: automatic collections. When enough candidates have piled
//! up (the trigger), a collection runs on a background thread that the
//! first trigger starts, so no mutator ever runs finalizers or `Drop` impls
//! of garbage it did not drop itself, and a `Drop` of a `Gc` never
//! re-enters the collector.
//!
//! A program can make garbage faster than one collector thread frees it.
//! Once [`BACKLOG`] times the trigger candidates wait, each further
//! candidate makes its thread wait for a collection to end, at most a
//! millisecond per candidate: the garbage a program can
//! pile up is then bounded, and a collection stuck in a finalizer that
//! waits for a lock the thread holds delays it, never deadlocks it.

use super::control;

/// Candidates waiting, in triggers, beyond which drops wait for the
/// collector.
const BACKLOG: usize = 16;

#[cfg(not(any(loom, miri)))]
mod background {
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::thread;
    use std::time::Duration;

    use super::super::collect::{collect, Trigger};
    use super::super::shim::lock;

    /// The collector thread's doorbell and the end-of-collection signal.
    struct Doorbell {
        state: Mutex<State>,
        /// A collection was asked for.
        ring: Condvar,
        /// A collection ended.
        done: Condvar,
    }

    struct State {
        rung: bool,
        /// Collections the thread has run.
        finished: u64,
    }

    static DOORBELL: OnceLock<Option<Doorbell>> = OnceLock::new();

    /// The doorbell, starting the collector thread the first time. If the
    /// thread cannot be started, automatic collections stay off (explicit
    /// ones still run).
    fn doorbell() -> Option<&'static Doorbell> {
        DOORBELL
            .get_or_init(|| {
                let spawned = thread::Builder::new()
                    .name("strata-gc-sync".into())
                    .spawn(serve);
                spawned.ok().map(|_| Doorbell {
                    state: Mutex::new(State {
                        rung: false,
                        finished: 0,
                    }),
                    ring: Condvar::new(),
                    done: Condvar::new(),
                })
            })
            .as_ref()
    }

    /// Ask the collector thread for a collection.
    pub(super) fn ring() {
        if let Some(bell) = doorbell() {
            lock(&bell.state).rung = true;
            bell.ring.notify_one();
        }
    }

    /// The longest a drop waits for the collector.
    const THROTTLE: Duration = Duration::from_millis(1);

    /// Wait, at most [`THROTTLE`], for a collection to end: the one
    /// running, or one asked for now if the collector thread is between
    /// two (descheduled, say).
    pub(super) fn wait_for_collection() {
        let Some(bell) = doorbell() else { return };
        let mut state = lock(&bell.state);
        if !state.rung {
            state.rung = true;
            bell.ring.notify_one();
        }
        let seen = state.finished;
        let _ = bell
            .done
            .wait_timeout_while(state, THROTTLE, |s| s.finished == seen);
    }

    /// The collector thread: wait for the doorbell, collect, repeat.
    fn serve() {
        // The doorbell is set by the `get_or_init` that spawned this thread.
        let bell = loop {
            match DOORBELL.get() {
                Some(Some(bell)) => break bell,
                Some(None) => return,
                None => thread::yield_now(),
            }
        };
        loop {
            let mut state = lock(&bell.state);
            while !state.rung {
                state = match bell.ring.wait(state) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            state.rung = false;
            drop(state);
            // A panicking finalizer must not end automatic collections.
            let _ = std::panic::catch_unwind(|| collect(Trigger::Automatic));
            lock(&bell.state).finished += 1;
            bell.done.notify_all();
        }
    }
}

/// A drop made a candidate; `pushed` candidates are waiting. Rings the
/// collector thread each time they reach a multiple of the trigger (the
/// threshold, or more after a collection that found much alive: see
/// `control::trigger`), and past the backlog waits for the collection in
/// progress. None of it under loom and Miri, whose runs collect explicitly
/// (and must end with no thread running).
#[inline]
pub(crate) fn candidate_pushed(pushed: usize) {
    let trigger = control::trigger();
    if trigger == 0 || !control::is_enabled() {
        return;
    }
    if pushed % trigger == 0 {
        #[cfg(not(any(loom, miri)))]
        background::ring();
    }
    // Not on the collecting thread (a finalizer's drops), which would wait
    // for itself.
    if pushed > BACKLOG * trigger && !super::collect::collecting_here() {
        #[cfg(not(any(loom, miri)))]
        background::wait_for_collection();
    }
}
