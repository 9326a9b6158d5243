//! `benches/common/shapes_body.rs` with mimalloc as `#[global_allocator]`.
//!
//! Run every shape under every allocator: `python3 benches/shapes.py`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOCATOR: &str = "mimalloc";

include!("common/shapes_body.rs");
