//! Configuration from `STRATA_*` environment variables, read once at the
//! first allocation of the first thread, without allocating.
//!
//! - `STRATA_PURGE_DELAY`: milliseconds freed pool memory stays committed
//!   before it is returned to the OS (default 10; 0 returns it at once).
//! - `STRATA_SHOW_STATS`: `1` prints the stats report to stderr at exit.
//!
//! A malformed value gets one warning line on stderr and the default.

use crate::arena::registry;
use crate::os;
use crate::sync::Ordering;

static INITIALISED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Reads the environment once per process.
pub(crate) fn init() {
    if INITIALISED.swap(true, Ordering::Relaxed) {
        return;
    }
    if let Some(value) = os::env_var(c"STRATA_PURGE_DELAY") {
        match os::parse_decimal(value) {
            Some(ms) => registry().purge_delay_ms.store(ms as u64, Ordering::Relaxed),
            None => os::write_stderr(
                b"strata-alloc: STRATA_PURGE_DELAY must be a whole number of milliseconds; using 10\n",
            ),
        }
    }
    if let Some(value) = os::env_var(c"STRATA_SHOW_STATS") {
        match value {
            b"1" | b"true" | b"yes" => crate::stats::print_at_exit(),
            b"0" | b"false" | b"no" | b"" => {}
            _ => os::write_stderr(
                b"strata-alloc: STRATA_SHOW_STATS must be 1 or 0; not printing stats\n",
            ),
        }
    }
}
