//! Core layer: the calls the core makes into the features above it — the
//! sampler, told of every counted allocation and free, and the report
//! printed at exit. The core owns the interface; a feature installs its
//! functions here, so no core file imports a feature.
//!
//! An installed hook stays installed (features never uninstall, they go
//! quiet instead: the sampler with no session samples nothing). A hook is
//! one relaxed load on paths that already run only while counting or at
//! exit; the fast paths never look here.

// Not a concurrent protocol (a write-once pointer to a `'static` table), so
// no `crate::core::sync` shim: these are `core`'s atomics under loom too.
use core::sync::atomic::{AtomicPtr, Ordering};

/// What the sampler does with counted allocations and frees.
pub(crate) struct SamplerHooks {
    /// A block of `bytes` at `ptr` was allocated by the calling thread,
    /// which is counting.
    pub on_alloc: fn(ptr: *mut u8, bytes: usize),
    /// The block at `ptr` is about to be freed by the calling thread,
    /// which is counting.
    pub on_free: fn(ptr: *mut u8),
}

static SAMPLER: AtomicPtr<SamplerHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the sampler's hooks (idempotent).
#[cfg_attr(not(feature = "sampling"), allow(dead_code))]
pub(crate) fn install_sampler(hooks: &'static SamplerHooks) {
    // Release pairs with the Acquire of `sampler`: whoever sees the
    // pointer sees the table (a `static`, so this is belt and braces).
    SAMPLER.store((hooks as *const SamplerHooks).cast_mut(), Ordering::Release);
}

/// The installed sampler hooks, if any.
#[inline]
pub(crate) fn sampler() -> Option<&'static SamplerHooks> {
    // SAFETY: the pointer is null or a `&'static SamplerHooks`.
    unsafe { SAMPLER.load(Ordering::Acquire).as_ref() }
}

/// The report printed at exit when `STRATA_SHOW_STATS=1`.
static EXIT_REPORT: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function that prints the exit report (idempotent; by the
/// crate's ELF constructor, which Miri and loom do not run).
#[cfg_attr(any(miri, loom), allow(dead_code))]
pub(crate) fn install_exit_report(report: fn()) {
    EXIT_REPORT.store(report as *mut (), Ordering::Release);
}

/// The `atexit` handler `config` registers: prints the report, if one is
/// installed.
pub(crate) extern "C" fn exit_report() {
    let report = EXIT_REPORT.load(Ordering::Acquire);
    if !report.is_null() {
        // SAFETY: a non-null value was stored from a `fn()` by
        // `install_exit_report`.
        let report: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(report) };
        report();
    }
}
