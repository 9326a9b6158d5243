//! Sync layer: automatic collections. When enough candidates have piled
//! up (the threshold), a collection runs on a background thread that the
//! first trigger starts, so no mutator ever runs finalizers or `Drop` impls
//! of garbage it did not drop itself, and a `Drop` of a `Gc` never
//! re-enters the collector.

#[cfg(not(any(loom, miri)))]
mod background {
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::thread;

    use super::super::collect::{collect, Trigger};
    use super::super::shim::lock;

    /// The collector thread's doorbell: a collection was asked for.
    pub(super) struct Doorbell {
        rung: Mutex<bool>,
        ring: Condvar,
    }

    static DOORBELL: OnceLock<Option<Doorbell>> = OnceLock::new();

    /// Ring the doorbell, starting the collector thread the first time.
    /// If the thread cannot be started, automatic collections stay off
    /// (explicit ones still run).
    pub(super) fn ring() {
        let bell = DOORBELL.get_or_init(|| {
            let spawned = thread::Builder::new()
                .name("strata-gc-sync".into())
                .spawn(serve);
            spawned.ok().map(|_| Doorbell {
                rung: Mutex::new(false),
                ring: Condvar::new(),
            })
        });
        if let Some(bell) = bell {
            *lock(&bell.rung) = true;
            bell.ring.notify_one();
        }
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
            let mut rung = lock(&bell.rung);
            while !*rung {
                rung = match bell.ring.wait(rung) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            *rung = false;
            drop(rung);
            // A panicking finalizer must not end automatic collections.
            let _ = std::panic::catch_unwind(|| collect(Trigger::Automatic));
        }
    }
}

use super::control;

/// A drop made a candidate; `pushed` candidates are waiting. Rings the
/// collector thread each time they reach a multiple of the trigger (the
/// threshold, or more after a collection that found much alive: see
/// `control::trigger`). None under loom and
/// Miri, whose runs collect explicitly (and must end with no thread
/// running).
#[inline]
pub(crate) fn candidate_pushed(pushed: usize) {
    let trigger = control::trigger();
    if trigger != 0 && pushed % trigger == 0 && control::is_enabled() {
        #[cfg(not(any(loom, miri)))]
        background::ring();
    }
}
