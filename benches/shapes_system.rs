//! `benches/common/shapes_body.rs` with system as `#[global_allocator]`.
//!
//! Run every shape under every allocator: `python3 benches/shapes.py`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

const ALLOCATOR: &str = "system";

include!("common/shapes_body.rs");
