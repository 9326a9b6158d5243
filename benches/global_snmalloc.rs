//! `benches/common/global_body.rs` with snmalloc as `#[global_allocator]`.

#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

const ALLOCATOR: &str = "snmalloc";

include!("common/global_body.rs");
