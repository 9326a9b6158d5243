//! Core layer: configuration.
//!
//! Configuration from `STRATA_*` environment variables, read once at
//! process start (`init`), without allocating.
//!
//! - `STRATA_PURGE_DELAY`: milliseconds freed pool memory stays committed
//!   before it is returned to the OS (default 100; 0 returns it at once; at
//!   most [`MAX_PURGE_DELAY_MS`]).
//! - `STRATA_PURGE_THREAD`: `0` starts no background purge thread
//!   ([`purge_thread`]; default `1`): freed memory then goes back only on
//!   the allocator's slow paths.
//! - `STRATA_SHOW_STATS`: `1` prints the stats report to stderr at exit
//!   (the report the crate installs in [`hooks`]).
//! - `STRATA_SECURE`: `0`, `1` or `2`, the secure level of a build with the
//!   `secure` feature (default 1: free-list links encoded and checked; 0:
//!   plain). Read by [`secure`] itself, before the first pool is made,
//!   since the level may never change once a link is written; ignored,
//!   with a warning, without the feature.
//!
//! A malformed value gets one warning line on stderr and the default. In a
//! setuid or setgid program (`AT_SECURE`) the variables are ignored, as
//! glibc ignores `MALLOC_*` there.

use crate::core::arena::registry;
use crate::core::hooks;
use crate::core::os;
use crate::core::purge_thread;
use crate::core::secure;
use crate::core::sync::Ordering;

/// The longest purge delay accepted: one hour. Longer delays would keep
/// memory from the OS for no measurable gain, and a bound keeps every
/// `now + delay` deadline far from overflow.
pub(crate) const MAX_PURGE_DELAY_MS: u64 = 3_600_000;

/// What `STRATA_PURGE_DELAY=value` means: the delay in ms, clamped, and
/// whether the value was outside the accepted range; `None` if malformed.
fn parse_purge_delay(value: &[u8]) -> Option<(u64, bool)> {
    let ms = match os::parse_decimal(value) {
        Some(ms) => ms as u64,
        // All digits but too long for a number: clamp, like a big number.
        None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => u64::MAX,
        None => return None,
    };
    Some((ms.min(MAX_PURGE_DELAY_MS), ms > MAX_PURGE_DELAY_MS))
}

/// Reads the environment (once per process, from `init::ensure`).
pub(crate) fn init() {
    if let Some(value) = os::secure_env_var(c"STRATA_PURGE_DELAY") {
        match parse_purge_delay(value) {
            Some((ms, clamped)) => {
                if clamped {
                    os::write_stderr(
                        b"strata-alloc: STRATA_PURGE_DELAY is at most 3600000 ms (one hour); using 3600000\n",
                    );
                }
                registry().purge_delay_ms.store(ms, Ordering::Relaxed);
            }
            None => os::write_stderr(
                b"strata-alloc: STRATA_PURGE_DELAY must be a whole number of milliseconds; using 100\n",
            ),
        }
    }
    if secure::COMPILED {
        // Fixes the level now if no pool did yet (a bad value warns once).
        secure::ensure();
    } else if let Some(value) = os::secure_env_var(c"STRATA_SECURE") {
        if value != b"0" {
            os::write_stderr(
                b"strata-alloc: STRATA_SECURE needs a build with the secure feature; ignored\n",
            );
        }
    }
    if let Some(value) = os::secure_env_var(c"STRATA_PURGE_THREAD") {
        match value {
            b"0" | b"false" | b"no" => purge_thread::turn_off(),
            b"1" | b"true" | b"yes" | b"" => {}
            _ => os::write_stderr(
                b"strata-alloc: STRATA_PURGE_THREAD must be 1 or 0; starting the purge thread\n",
            ),
        }
    }
    if let Some(value) = os::secure_env_var(c"STRATA_SHOW_STATS") {
        match value {
            b"1" | b"true" | b"yes" => os::at_exit(hooks::exit_report),
            b"0" | b"false" | b"no" | b"" => {}
            _ => os::write_stderr(
                b"strata-alloc: STRATA_SHOW_STATS must be 1 or 0; not printing stats\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_clamped_to_an_hour() {
        assert_eq!(parse_purge_delay(b"0"), Some((0, false)));
        assert_eq!(parse_purge_delay(b"250"), Some((250, false)));
        assert_eq!(
            parse_purge_delay(b"3600000"),
            Some((MAX_PURGE_DELAY_MS, false))
        );
        assert_eq!(
            parse_purge_delay(b"3600001"),
            Some((MAX_PURGE_DELAY_MS, true))
        );
        assert_eq!(
            parse_purge_delay(b"18446744073709551615"),
            Some((MAX_PURGE_DELAY_MS, true))
        );
        assert_eq!(
            parse_purge_delay(b"999999999999999999999999"),
            Some((MAX_PURGE_DELAY_MS, true))
        );
    }

    #[test]
    fn malformed_purge_delay_is_rejected() {
        for bad in [&b""[..], b"-1", b"10ms", b" 10", b"1e3"] {
            assert_eq!(parse_purge_delay(bad), None, "{bad:?}");
        }
    }
}
