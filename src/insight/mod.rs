//! Insight layer: what the allocator can tell about memory — the stats
//! snapshot, counting and profiling scopes, line-by-line profiles, sampled
//! call sites and the memory plot. Built on the core; the core never
//! imports it.

pub(crate) mod lines;
#[cfg(feature = "plot")]
pub mod plot;
pub mod profile;
#[cfg(feature = "sampling")]
pub(crate) mod sample;
pub(crate) mod stats;
