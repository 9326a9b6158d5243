//! The strata-gc benchmarks of `gc.rs` with strata-alloc as the global
//! allocator, so every pointer type's boxes come from strata's size classes.

// The `gc` crate's derive expands to impls inside consts.
#![allow(non_local_definitions)]

#[global_allocator]
static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;

include!("common/body.rs");
