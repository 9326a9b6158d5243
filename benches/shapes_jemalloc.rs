//! `benches/common/shapes_body.rs` with jemalloc as `#[global_allocator]`.
//!
//! Run every shape under every allocator: `python3 benches/shapes.py`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = "jemalloc";

include!("common/shapes_body.rs");
