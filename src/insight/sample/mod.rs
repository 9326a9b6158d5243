//! Insight layer: sampled call-site profiling (feature `sampling`), the
//! machinery behind [`crate::profile::sampling`]: the session guard here,
//! the tables in `sites`, the per-thread sampler and stack capture in
//! `stack`, reports in `report`, their export formats in `export`.
//!
//! Like jemalloc's heap profiler (`prof.c`, `lg_prof_sample`), a thread
//! samples one allocation about every `interval` bytes it allocates: its
//! sampler keeps a countdown of bytes until the next sample, drawn from an
//! exponential distribution of mean `interval` by a small per-thread PRNG,
//! so that the samples are a Poisson process over allocated bytes and
//! periodic allocation patterns are not aliased. An allocation of `s`
//! bytes is then sampled with probability `p = 1 - exp(-s / interval)`,
//! and a sample stands for `s / p` bytes and `1 / p` blocks: unbiased
//! estimates for small and large blocks alike (jemalloc's "unbiasing").
//!
//! Sampling rides on counting: a [`Sampling`] guard also turns counting
//! on, and the out-of-line `Counters::count_alloc` / `count_free` call
//! the sampler's hooks (`stack.rs`). When sampling is on and no
//! sample is due, an allocation costs a few relaxed loads and a
//! subtraction; a free, one load from an 8 KiB table of bucket counts.
//!
//! Taking a sample runs inside `malloc`, so it never allocates and never
//! locks: the raw return addresses of the stack are captured with
//! `backtrace::trace_unsynchronized` (no symbol resolution) into a stack
//! array, and recorded in two fixed-size tables in static memory, updated
//! with atomics only (so a `fork` in the middle leaves nothing locked):
//!
//! - the **site table** ([`MAX_SITES`] stacks of up to [`MAX_FRAMES`]
//!   frames, open addressing keyed by the stack): per site, samples and
//!   estimated bytes and blocks allocated and freed. When it is full, new
//!   stacks count in one "other" site, so totals are never lost;
//! - the **live table** ([`LIVE_BUCKETS`] buckets of [`BUCKET_SLOTS`]
//!   sampled blocks, keyed by address), so that freeing a sampled block
//!   subtracts its weight from its site. A sample whose bucket is full is
//!   counted as allocated but not as live ("untracked").
//!
//! Both tables are about 1.8 MiB of zeroed static memory, touched (made
//! resident) only as far as they are used. Symbols are resolved when a
//! [`Report`] is taken, outside the allocator, where allocating is fine.
//! A per-thread flag keeps allocations made while sampling (or while a
//! report is built) from being sampled.

use crate::core::hooks;
use crate::core::sync::{AtomicUsize, Ordering, RawLock};
use crate::core::thread;

/// `const fn` items, plain `fn`s under `cfg(loom)` (loom's atomics have no
/// `const` constructor): the tables are built the same way in both, the
/// process's in a `static`, a loom model's per execution.
macro_rules! const_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $($rest)*
        #[cfg(loom)]
        $(#[$attr])* $vis fn $($rest)*
    };
}

/// `[value; N]` for a non-`Copy` atomic `value`: an inline-`const` array
/// (zeroed static memory), or under `cfg(loom)` one built element by
/// element.
#[cfg(not(loom))]
macro_rules! atomic_array {
    ($value:expr; $n:expr) => {
        [const { $value }; $n]
    };
}

#[cfg(loom)]
macro_rules! atomic_array {
    ($value:expr; $n:expr) => {
        core::array::from_fn(|_| $value)
    };
}

mod export;
mod report;
mod sites;
mod stack;

#[cfg(feature = "pprof")]
pub use export::pprof;
pub use export::Weight;
pub use report::{Frame, Report, ReportDiff, Site, SiteDiff};
use sites::profiler;
#[cfg(loom)]
pub(crate) use sites::Profiler;
#[cfg(loom)]
pub use sites::SiteCounts;
pub use sites::{BUCKET_SLOTS, DEFAULT_INTERVAL, LIVE_BUCKETS, MAX_FRAMES, MAX_SITES};
use stack::HOOKS;

/// Starting and stopping sessions: the lock serialising them (never taken
/// in `malloc`), and the open [`Sampling`] guards, counted under it.
struct Control {
    lock: RawLock,
    active: AtomicUsize,
}

impl Control {
    const_unless_loom! {
        fn new() -> Self {
            Control {
                lock: RawLock::new(),
                active: AtomicUsize::new(0),
            }
        }
    }
}

#[cfg(not(loom))]
fn control() -> &'static Control {
    static CONTROL: Control = Control::new();
    &CONTROL
}

/// The session control of the current loom execution.
#[cfg(loom)]
fn control() -> &'static Control {
    loom::lazy_static! {
        static ref CONTROL: Control = Control::new();
    }
    &CONTROL
}

// ---------------------------------------------------------------------------
// The public API
// ---------------------------------------------------------------------------

/// Samples allocations by call site while alive (and counts them, like a
/// [`crate::profile::Counting`] guard).
///
/// The first guard starts a new session, forgetting the previous one's
/// sites; guards started while one is alive join its session (and its
/// interval). Sampling stops when the last one drops; take the
/// [`Report`] before, since frees are no longer seen afterwards.
#[derive(Debug)]
#[must_use = "sampling stops when the guard is dropped"]
pub struct Sampling(());

impl Sampling {
    /// Samples one allocation per [`DEFAULT_INTERVAL`] (512 KiB) on
    /// average.
    pub fn start() -> Sampling {
        Sampling::with_interval(DEFAULT_INTERVAL)
    }

    /// Samples one allocation per `mean_bytes` allocated on average
    /// (smaller: more precise, slower).
    pub fn with_interval(mean_bytes: usize) -> Sampling {
        let control = control();
        hooks::install_sampler(&HOOKS);
        control.lock.with(|| {
            if control.active.load(Ordering::Relaxed) == 0 {
                profiler().begin(mean_bytes);
            }
            control.active.fetch_add(1, Ordering::Relaxed);
        });
        thread::start_counting();
        Sampling(())
    }

    /// The mean sampling interval of the running session, if any.
    pub fn interval() -> Option<usize> {
        match profiler().interval.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Samples taken since the process started (all sessions).
    pub fn samples_taken() -> u64 {
        profiler().samples.load(Ordering::Relaxed)
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        thread::stop_counting();
        let control = control();
        control.lock.with(|| {
            if control.active.fetch_sub(1, Ordering::Relaxed) == 1 {
                profiler().end();
            }
        });
    }
}
