//! Core layer: process start — what the allocator sets up once per
//! process: the `STRATA_*` configuration and the `fork` handlers. The
//! crate's ELF constructor (`lib.rs`) runs it before `main` and outside
//! any allocation, then creates the thread-exit key (`thread`).
//!
//! None of it may run inside `malloc`: `pthread_atfork` and `atexit` take
//! glibc locks that glibc also holds while it calls `malloc` to grow their
//! tables, so the first allocation of a program that registers many
//! handlers would wait for itself forever. [`ensure`] runs the same steps
//! on first use for the rare program that bypasses constructors (a static
//! binary loaded by hand); it is called only where no allocator state is
//! borrowed, so whatever it allocates re-enters the allocator safely.

use core::sync::atomic::{AtomicBool, Ordering};

static DONE: AtomicBool = AtomicBool::new(false);

/// Runs the process-start steps if no one has yet.
pub(crate) fn ensure() {
    // Set before the steps run: an allocation they make must not start them again.
    if !DONE.swap(true, Ordering::Relaxed) {
        crate::core::config::init();
        crate::core::fork::register();
    }
}
