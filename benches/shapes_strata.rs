//! `benches/common/shapes_body.rs` with strata as `#[global_allocator]`.
//!
//! Run every shape under every allocator: `python3 benches/shapes.py`.

#[global_allocator]
static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;

const ALLOCATOR: &str = "strata";

include!("common/shapes_body.rs");
