//! `benches/common/global_body.rs` with strata as `#[global_allocator]`.

#[global_allocator]
static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;

const ALLOCATOR: &str = "strata";

include!("common/global_body.rs");
