//! Loom model checks of strata-alloc live in `tests/`; they run only with
//! `--cfg loom` (see `ci/loom.sh`). This library holds their shared helpers.

#[cfg(loom)]
pub use strata_alloc::loom_api as api;

/// A raw block pointer that a model may move between threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SendPtr(pub *mut u8);

// SAFETY: the pointer is an allocator block; the models hand each block to
// exactly one thread at a time, as a program would.
unsafe impl Send for SendPtr {}
// SAFETY: as above; shared references only read the address.
unsafe impl Sync for SendPtr {}

/// Runs `f` under loom with the bounds from the environment
/// (`LOOM_MAX_PREEMPTIONS`, ...), raising the default branch limit: the
/// allocator's slow paths scan all size classes, each scan step being an
/// atomic load that loom counts as a branch.
#[cfg(loom)]
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 100_000;
    }
    builder.check(f);
}

/// [`model`] with at most `bound` preemptions (or `LOOM_MAX_PREEMPTIONS`
/// if that is lower), for models whose threads run long slow paths.
#[cfg(loom)]
pub fn model_with_preemptions<F>(bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 100_000;
    }
    builder.preemption_bound = Some(builder.preemption_bound.map_or(bound, |b| b.min(bound)));
    builder.check(f);
}
