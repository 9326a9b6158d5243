//! Insight layer: profiling.
//!
//! Profiling: "where did my memory go?" — the answers Python users get from
//! `tracemalloc` and `memory_profiler`, for programs using [`Strata`].
//!
//! This layer owns the user-facing view of the heap layer's allocation
//! counters (kept per thread in `heap.rs`, summed across threads) and of
//! the per-class [`crate::stats`] figures.
//!
//! Counting is off until asked for, like `tracemalloc.start()`: while a
//! [`Counting`] guard or a [`Scope`] is alive, every thread counts the
//! blocks and bytes it allocates and frees (a few plain adds per call).
//! When nothing asks, the allocator's fast paths pay one relaxed load of
//! a global flag and an untaken branch.
//!
//! - [`Snapshot::take`] records bytes and blocks in use per size class and
//!   process-wide allocation totals; [`Snapshot::diff`] compares two
//!   snapshots like `tracemalloc`'s `compare_to`, biggest change first.
//! - [`measure`] (or a [`Scope`]) reports what a piece of code allocated,
//!   freed, kept, and its peak, like `memory_profiler`'s increment column.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;
//!
//! use strata_alloc::profile::{self, Snapshot};
//!
//! let _counting = profile::Counting::start();
//! let before = Snapshot::take();
//! let (kept, report) = profile::measure(|| vec![0u8; 1 << 20]);
//! let diff = before.diff(&Snapshot::take());
//! assert!(report.allocated_bytes >= 1 << 20 && report.peak_bytes >= 1 << 20);
//! assert!(diff.in_use_bytes_diff() >= 1 << 20);
//! println!("{report}\n{diff}");
//! # drop(kept);
//! ```
//!
//! - With the `sampling` feature, [`sampling`] attributes allocations to
//!   their call sites by sampling them with backtraces, like jemalloc's
//!   heap profiler and `tracemalloc`'s tracebacks.
//!
//! Counted bytes are block sizes (a request is rounded up to its size
//! class; a large block counts its usable size), so they match
//! [`crate::stats`]. Blocks of owned [`crate::Heap`]s are not counted
//! (see [`crate::Heap::stats`]). A thread's counts are summed as soon as it
//! has allocated or freed once, for up to 1024 threads at a time; counts
//! of further threads appear when they exit. Under Miri and loom, which
//! have no thread-exit hook, live threads' counts are not summed.
//!
//! [`Strata`]: crate::Strata

use core::cmp::Reverse;
use core::fmt;
use core::marker::PhantomData;

use crate::core::counters::{self, Counts};
use crate::core::size_class::{class_size, NUM_CLASSES};
use crate::core::thread;
use crate::insight::stats::Bytes;

/// Sampled call-site profiling with backtraces (feature `sampling`): which
/// lines of the program allocated the memory that is live, estimated from
/// samples the way jemalloc's heap profiler does it.
///
/// While a [`Sampling`](sampling::Sampling) guard is alive, each thread
/// samples about one allocation per `interval` bytes it allocates
/// (default 512 KiB, jemalloc's `lg_prof_sample:19`), at intervals drawn
/// from an exponential distribution; a sample records the stack's return
/// addresses (no symbols, no allocation, inside `malloc`) and stands for
/// `size / p` bytes, `p` being the block's chance of being sampled, so
/// that estimates are unbiased for every size. Freeing a sampled block
/// takes its weight off its site. A [`Report`](sampling::Report) resolves
/// the stacks (outside the allocator), drops the allocator's own frames,
/// and lists sites by estimated live bytes; [`Report::diff`] compares two
/// reports site by site, like `tracemalloc`'s `compare_to(..,
/// 'traceback')`. A report also exports as collapsed stacks
/// ([`Report::collapsed`]), as an interactive flamegraph SVG (feature
/// `flamegraph`) and as a pprof profile for `pprof -http` (feature `pprof`).
///
/// [`Report::diff`]: sampling::Report::diff
/// [`Report::collapsed`]: sampling::Report::collapsed
///
/// ```
/// #[global_allocator]
/// static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;
///
/// use strata_alloc::profile::sampling::{Report, Sampling};
///
/// #[inline(never)]
/// fn load_table() -> Vec<u64> {
///     vec![7; 1 << 20]
/// }
///
/// let sampling = Sampling::with_interval(64 << 10);
/// let table = load_table();
/// let report = Report::take();
/// drop(sampling);
/// assert!(report.sites[0].live_bytes >= 4 << 20);
/// println!("{report}");
/// # drop(table);
/// ```
///
/// Bounds (fixed tables in static memory, resident only as far as used):
/// [`MAX_SITES`](sampling::MAX_SITES) distinct stacks (samples of further
/// stacks count in one "other" site), [`MAX_FRAMES`](sampling::MAX_FRAMES)
/// frames per stack (allocator frames included), and
/// [`LIVE_BUCKETS`](sampling::LIVE_BUCKETS) x
/// [`BUCKET_SLOTS`](sampling::BUCKET_SLOTS) live sampled blocks (a sample
/// finding its bucket full is counted as allocated, not as live, and
/// reported as untracked). Frees by threads beyond the 1024 whose
/// counters are listed (see above) and frees while no counting is on are
/// not seen.
#[cfg(feature = "sampling")]
pub mod sampling {
    /// The pprof profile format (feature `pprof`): [`Report::pprof`]
    /// writes it, [`pprof::decode`] reads it back.
    #[cfg(feature = "pprof")]
    pub use crate::insight::sample::pprof;
    pub use crate::insight::sample::{
        Frame, Report, ReportDiff, Sampling, Site, SiteDiff, Weight, BUCKET_SLOTS,
        DEFAULT_INTERVAL, LIVE_BUCKETS, MAX_FRAMES, MAX_SITES,
    };
}

/// Line-by-line profiles (`memory_profiler`'s `@profile`): put
/// `#[strata_alloc::profile]` on a function, and each call gives a table
/// of its statements — bytes in use after each, the increment, bytes
/// allocated and freed, how often it ran, and its source line.
///
/// The attribute instruments only with the `line-profile` feature; without
/// it the function is left unchanged. It goes on free functions, methods,
/// generic and `async` functions. Statements of nested blocks (`if`,
/// `for`, `while`, `loop`, `match` arm blocks, ...) get rows of their own,
/// so a loop body's rows count its iterations; closures, `async` blocks
/// and macro arguments count to the statement holding them.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;
///
/// use strata_alloc::profile::lines::{self, Output};
///
/// #[strata_alloc::profile]
/// fn build(n: usize) -> usize {
///     let mut words = Vec::new();
///     for i in 0..n {
///         words.push(format!("word {i}"));
///     }
///     words.len()
/// }
///
/// lines::set_output(Output::Collect); // the default prints to stderr
/// assert_eq!(build(100), 100);
/// let report = &lines::take_reports()[0];
/// let push = report.rows.iter().find(|r| r.contents.contains("push")).unwrap();
/// assert_eq!(push.occurrences, 100);
/// assert!(push.allocated >= 100 * "word 99".len());
/// println!("{report}\n{}", report.to_json());
/// ```
///
/// How the figures are taken: counting (see [`Counting`]) is on from the
/// call's entry to its end, and each statement's start reads the calling
/// thread's counters: what was allocated and freed since the previous
/// statement started goes to that statement. So a statement's figures
/// include the drops at the end of the block it ends (the last statement
/// of a loop body carries the drops of each iteration), and the last
/// statement run carries the drops of the function's locals when it
/// returns. The bytes are the calling thread's only. The probes' own
/// bookkeeping (their rows, the reports, delivering them) is not counted,
/// so a profiled function called by another (or recursively: each call has
/// its own report) shows in its caller's row only with what it really
/// allocates.
///
/// In an `async fn`, counting runs from the first poll to completion (or
/// the future's drop) and an await point is inside its statement: what
/// other tasks allocate on the same thread while this one waits counts to
/// the awaiting statement. When the future is resumed on another thread,
/// the next statement starts over from that thread's counters, and what
/// happened on the first thread since the last statement started is lost.
///
/// Reports go to stderr by default; [`set_output`](lines::set_output)
/// collects them for [`take_reports`](lines::take_reports) or hands them
/// to a function. A row's `contents` is the source line, read when the
/// first report of its file is made (cached, like Python's `linecache`);
/// when the file cannot be read (a program run away from its sources) or
/// has changed, it is the statement as the macro saw its tokens.
///
/// What it costs is in `docs/performance.md` ("Line profiles").
pub mod lines {
    #[doc(hidden)]
    pub use crate::insight::lines::{__Meta, __Probe, __Stmt};
    pub use crate::insight::lines::{set_output, take_reports, LineReport, LineRow, Output};
}

/// Blocks and bytes allocated and freed by all threads while counting was
/// on (see [`Counting`]). Bytes are block sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Blocks allocated.
    pub allocated_blocks: usize,
    /// Bytes of the blocks allocated.
    pub allocated_bytes: usize,
    /// Blocks freed.
    pub freed_blocks: usize,
    /// Bytes of the blocks freed.
    pub freed_bytes: usize,
}

impl Totals {
    /// The totals now.
    pub fn now() -> Totals {
        Totals::from(counters::counter_totals())
    }

    /// Bytes allocated and not freed (as counted; blocks allocated and
    /// freed before counting began do not exist, so this is exact).
    pub fn net_bytes(&self) -> isize {
        self.allocated_bytes.wrapping_sub(self.freed_bytes) as isize
    }

    /// What happened between `self` and `later`.
    fn since(&self, later: &Totals) -> Totals {
        Totals {
            allocated_blocks: later.allocated_blocks.wrapping_sub(self.allocated_blocks),
            allocated_bytes: later.allocated_bytes.wrapping_sub(self.allocated_bytes),
            freed_blocks: later.freed_blocks.wrapping_sub(self.freed_blocks),
            freed_bytes: later.freed_bytes.wrapping_sub(self.freed_bytes),
        }
    }
}

impl From<Counts> for Totals {
    fn from(c: Counts) -> Totals {
        Totals {
            allocated_blocks: c.alloc_blocks,
            allocated_bytes: c.alloc_bytes,
            freed_blocks: c.free_blocks,
            freed_bytes: c.free_bytes,
        }
    }
}

/// Counts allocations while alive (`tracemalloc.start()` ... `stop()`):
/// the [`Totals`] of snapshots taken meanwhile, and so the "meanwhile"
/// line of [`SnapshotDiff`], cover what happened between them. Guards
/// nest; counting stops when the last one drops. [`Scope`]s count on
/// their own.
#[derive(Debug)]
#[must_use = "counting stops when the guard is dropped"]
pub struct Counting(());

impl Counting {
    /// Turns counting on until the guard drops.
    pub fn start() -> Counting {
        thread::start_counting();
        Counting(())
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        thread::stop_counting();
    }
}

/// Whether allocations are being counted (a [`Counting`] or [`Scope`] is
/// alive).
pub fn is_counting() -> bool {
    thread::counting()
}

/// What is in use at one moment: per size class and for large blocks,
/// plus the allocation [`Totals`] so far. The per-class figures come from
/// the pools and need no counting. Taking one does not allocate.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Blocks in use per size class, indexed by class (blocks freed by
    /// another thread and not yet collected by their pool's owner still
    /// count, as in [`crate::Stats`]).
    pub blocks_in_use: [usize; NUM_CLASSES],
    /// Large blocks (mapped on their own) in use.
    pub large_blocks: usize,
    /// Usable bytes of the large blocks in use.
    pub large_bytes: usize,
    /// Allocation totals when the snapshot was taken.
    pub totals: Totals,
}

impl Snapshot {
    /// Takes a snapshot (walks the arenas under the registry lock, like
    /// [`crate::stats`]).
    pub fn take() -> Snapshot {
        let totals = Totals::now();
        let stats = crate::insight::stats::snapshot();
        Snapshot {
            blocks_in_use: stats.classes.map(|c| c.blocks_in_use),
            large_blocks: stats.large_blocks,
            large_bytes: stats.large_bytes,
            totals,
        }
    }

    /// Bytes of the blocks in use, small and large.
    pub fn in_use_bytes(&self) -> usize {
        self.blocks_in_use
            .iter()
            .enumerate()
            .map(|(class, &n)| n * class_size(class))
            .sum::<usize>()
            + self.large_bytes
    }

    /// What changed from `self` to `later` (`tracemalloc`'s `compare_to`):
    /// one row per size class whose blocks in use changed (and one for
    /// large blocks), biggest change in bytes first.
    pub fn diff(&self, later: &Snapshot) -> SnapshotDiff {
        let mut rows: Vec<ClassDiff> = (0..NUM_CLASSES)
            .map(|class| {
                let size = class_size(class);
                ClassDiff::new(
                    Some(class),
                    size,
                    (self.blocks_in_use[class], self.blocks_in_use[class] * size),
                    (
                        later.blocks_in_use[class],
                        later.blocks_in_use[class] * size,
                    ),
                )
            })
            .chain(core::iter::once(ClassDiff::new(
                None,
                0,
                (self.large_blocks, self.large_bytes),
                (later.large_blocks, later.large_bytes),
            )))
            .filter(|row| row.blocks_diff != 0 || row.bytes_diff != 0)
            .collect();
        rows.sort_by_key(|row| (Reverse(row.bytes_diff.unsigned_abs()), row.class));
        SnapshotDiff {
            rows,
            between: self.totals.since(&later.totals),
        }
    }
}

/// One row of a [`SnapshotDiff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassDiff {
    /// The size class, or `None` for large blocks.
    pub class: Option<usize>,
    /// Bytes per block (0 for large blocks, whose sizes vary).
    pub block_size: usize,
    /// Blocks in use in the later snapshot.
    pub blocks: usize,
    /// Change in blocks in use.
    pub blocks_diff: isize,
    /// Bytes in use in the later snapshot.
    pub bytes: usize,
    /// Change in bytes in use.
    pub bytes_diff: isize,
}

impl ClassDiff {
    fn new(
        class: Option<usize>,
        block_size: usize,
        (blocks0, bytes0): (usize, usize),
        (blocks, bytes): (usize, usize),
    ) -> ClassDiff {
        ClassDiff {
            class,
            block_size,
            blocks,
            blocks_diff: blocks.wrapping_sub(blocks0) as isize,
            bytes,
            bytes_diff: bytes.wrapping_sub(bytes0) as isize,
        }
    }
}

/// The difference between two [`Snapshot`]s, from [`Snapshot::diff`].
/// `Display` renders it as a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Classes (and large blocks) whose use changed, sorted by the absolute
    /// change in bytes, largest first.
    pub rows: Vec<ClassDiff>,
    /// Allocations and frees between the two snapshots, by all threads.
    pub between: Totals,
}

impl SnapshotDiff {
    /// The row of size class `class`, if its use changed.
    pub fn class(&self, class: usize) -> Option<&ClassDiff> {
        self.rows.iter().find(|row| row.class == Some(class))
    }

    /// The change in bytes in use (all classes and large blocks).
    pub fn in_use_bytes_diff(&self) -> isize {
        self.rows.iter().map(|row| row.bytes_diff).sum()
    }
}

/// A signed byte count as a short human figure ("+1.5 MiB").
struct SignedBytes(isize);

impl fmt::Display for SignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "+" };
        let text = format!("{sign}{}", Bytes(self.0.unsigned_abs()));
        f.pad(&text)
    }
}

/// Pads a byte count to the formatter's width.
struct PaddedBytes(usize);

impl fmt::Display for PaddedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&Bytes(self.0).to_string())
    }
}

impl fmt::Display for SnapshotDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "class  block size     blocks       +/-        bytes         +/-"
        )?;
        for row in &self.rows {
            match row.class {
                Some(class) => write!(f, "{class:>5}  {:>10}", row.block_size)?,
                None => write!(f, "large  {:>10}", "-")?,
            }
            writeln!(
                f,
                "  {:>9}  {:>+8}  {:>11}  {:>10}",
                row.blocks,
                row.blocks_diff,
                PaddedBytes(row.bytes),
                SignedBytes(row.bytes_diff)
            )?;
        }
        let b = &self.between;
        write!(
            f,
            "in use {}; meanwhile {} allocated in {} blocks, {} freed in {} blocks",
            SignedBytes(self.in_use_bytes_diff()),
            Bytes(b.allocated_bytes),
            b.allocated_blocks,
            Bytes(b.freed_bytes),
            b.freed_blocks
        )
    }
}

/// A measured stretch of code: what was allocated and freed between
/// [`Scope::begin`] and [`Scope::end`]. Scopes nest (end them in reverse
/// order of beginning, as blocks do). Not `Send`: its peak is the calling
/// thread's.
#[derive(Debug)]
pub struct Scope {
    start: Totals,
    /// The calling thread's net bytes at the start.
    start_net: isize,
    /// The thread's running peak before this scope reset it (an enclosing
    /// scope's), restored at the end.
    outer_peak: isize,
    ended: bool,
    _not_send: PhantomData<*const ()>,
}

impl Scope {
    /// Starts measuring (and counting, until the scope ends).
    pub fn begin() -> Scope {
        thread::start_counting();
        let (start_net, outer_peak) = thread::with_thread_counters(|c| {
            let net = c.net();
            let outer = c.peak();
            c.set_peak(net);
            (net, outer)
        });
        Scope {
            start: Totals::now(),
            start_net,
            outer_peak,
            ended: false,
            _not_send: PhantomData,
        }
    }

    /// Stops measuring and reports.
    pub fn end(mut self) -> ScopeReport {
        let totals = Totals::now();
        let peak = self.finish();
        let d = self.start.since(&totals);
        ScopeReport {
            allocated_bytes: d.allocated_bytes,
            freed_bytes: d.freed_bytes,
            net_bytes: d.net_bytes(),
            allocations: d.allocated_blocks,
            frees: d.freed_blocks,
            peak_bytes: peak.wrapping_sub(self.start_net).max(0) as usize,
        }
    }

    /// Restores the enclosing scope's peak; returns this scope's.
    fn finish(&mut self) -> isize {
        self.ended = true;
        let peak = thread::with_thread_counters(|c| {
            let peak = c.peak();
            c.set_peak(peak.max(self.outer_peak));
            peak
        });
        thread::stop_counting();
        peak
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.ended {
            self.finish();
        }
    }
}

/// Runs `f` and reports what it allocated and freed (`memory_profiler`'s
/// increment, for one closure).
///
/// ```
/// #[global_allocator]
/// static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;
///
/// let (len, report) = strata_alloc::profile::measure(|| vec![1u64; 1000].len());
/// assert_eq!(len, 1000);
/// assert!(report.allocated_bytes >= 8000);
/// ```
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, ScopeReport) {
    let scope = Scope::begin();
    let result = f();
    (result, scope.end())
}

/// What a [`Scope`] saw. `allocated`, `freed` and `net` cover every thread
/// (other threads' work during the scope included); `peak_bytes` covers the
/// calling thread only. `Display` renders one `memory_profiler`-style line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeReport {
    /// Bytes of the blocks allocated, by all threads.
    pub allocated_bytes: usize,
    /// Bytes of the blocks freed, by all threads.
    pub freed_bytes: usize,
    /// Allocated minus freed bytes (negative when the scope freed memory
    /// allocated before it).
    pub net_bytes: isize,
    /// Blocks allocated, by all threads.
    pub allocations: usize,
    /// Blocks freed, by all threads.
    pub frees: usize,
    /// The highest the calling thread's net bytes (its allocations minus
    /// its frees) rose above their value at the start of the scope.
    pub peak_bytes: usize,
}

impl fmt::Display for ScopeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "increment {:>10}  peak {:>10}  allocated {} in {} blocks, freed {} in {} blocks",
            SignedBytes(self.net_bytes),
            SignedBytes(self.peak_bytes as isize),
            Bytes(self.allocated_bytes),
            self.allocations,
            Bytes(self.freed_bytes),
            self.frees
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(blocks: &[(usize, usize)], large: (usize, usize)) -> Snapshot {
        let mut s = Snapshot {
            blocks_in_use: [0; NUM_CLASSES],
            large_blocks: large.0,
            large_bytes: large.1,
            totals: Totals::default(),
        };
        for &(class, n) in blocks {
            s.blocks_in_use[class] = n;
        }
        s
    }

    #[test]
    fn diff_sorts_by_absolute_bytes_and_skips_unchanged() {
        let a = snapshot(&[(0, 10), (5, 3), (40, 2)], (1, 1 << 20));
        let b = snapshot(&[(0, 10), (5, 1), (40, 5)], (0, 0));
        let d = a.diff(&b);
        let order: Vec<_> = d.rows.iter().map(|r| r.class).collect();
        assert_eq!(order, [None, Some(40), Some(5)]);
        assert_eq!(d.class(40).unwrap().blocks_diff, 3);
        assert_eq!(d.class(5).unwrap().bytes_diff, -2 * class_size(5) as isize);
        assert!(d.class(0).is_none());
        let text = d.to_string();
        assert!(
            text.contains("large") && text.contains("-1.0 MiB"),
            "{text}"
        );
    }

    #[test]
    fn report_line() {
        let r = ScopeReport {
            allocated_bytes: 10 << 20,
            freed_bytes: 5 << 20,
            net_bytes: 5 << 20,
            allocations: 10,
            frees: 5,
            peak_bytes: 10 << 20,
        };
        let line = r.to_string();
        assert!(
            line.contains("+5.0 MiB") && line.contains("+10.0 MiB"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
