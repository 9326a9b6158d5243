//! `benches/common/global_body.rs` with mimalloc as `#[global_allocator]`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOCATOR: &str = "mimalloc";

include!("common/global_body.rs");
