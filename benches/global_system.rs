//! `benches/common/global_body.rs` with system as `#[global_allocator]`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

const ALLOCATOR: &str = "system";

include!("common/global_body.rs");
