//! `benches/common/shapes_body.rs` with snmalloc as `#[global_allocator]`.
//!
//! Run every shape under every allocator: `python3 benches/shapes.py`.

#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

const ALLOCATOR: &str = "snmalloc";

include!("common/shapes_body.rs");
