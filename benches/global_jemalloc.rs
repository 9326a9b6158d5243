//! `benches/common/global_body.rs` with jemalloc as `#[global_allocator]`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = "jemalloc";

include!("common/global_body.rs");
