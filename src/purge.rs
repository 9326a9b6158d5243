//! Giving memory back to the OS: one place that decides when.
//!
//! Two kinds of free memory wait for the purge delay (`STRATA_PURGE_DELAY`
//! ms, default 10) before they go back: free arena slots (decommitted with
//! `MADV_DONTNEED`, empty arenas unmapped) and cached large mappings
//! (unmapped). The delay lets a program that frees and re-allocates reuse
//! committed pages instead of faulting fresh ones in. There is no
//! background thread: allocator slow paths of any thread (pool fetch or
//! release, large allocation or free, thread exit) run a due purge, which
//! costs one atomic load when none is due. [`crate::release_memory`] purges
//! everything at once.

use crate::arena::registry;
use crate::large;

/// Runs the purges that are due.
#[inline]
pub(crate) fn maybe_purge() {
    registry().maybe_purge();
    large::cache().maybe_purge();
}

/// Purges everything now, regardless of the delay.
pub(crate) fn purge_all() {
    registry().purge(true);
    large::cache().purge(true);
}
