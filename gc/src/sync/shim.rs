//! Sync layer: the synchronisation primitives of `strata_gc::sync`, in one
//! place so that loom can replace them.
//!
//! Under `cfg(loom)` the atomics, the mutex and `yield_now` come from loom,
//! which explores every interleaving the memory model allows, so the models
//! in `loom-tests/` exercise the real collector. Code of the sync module
//! never names `std::sync::atomic` directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

pub(crate) use std::sync::atomic::Ordering;

/// Lock `m`, ignoring poison: the collector's state is consistent at every
/// point where user code (which may panic) runs.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The process-wide state of the sync collector: a plain `static` normally,
/// one per loom execution under loom (whose atomics are not const).
macro_rules! global {
    ($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        $(#[$m])*
        static $name: $t = $init;

        #[cfg(loom)]
        loom::lazy_static! {
            $(#[$m])*
            static ref $name: $t = $init;
        }
    };
}
pub(crate) use global;
