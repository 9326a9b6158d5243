// Workloads that reach the allocator through `#[global_allocator]`, the
// path programs use (`Box`, `Vec` and `String` call `__rust_alloc`), unlike
// `alloc.rs`, which calls each allocator's `GlobalAlloc` methods from
// generic code. A binary has one global allocator, so each allocator has
// its own bench target that sets `ALLOCATOR` and includes this file; the
// results share criterion groups, so `benches/report.py` puts them in one
// table.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

include!("configure.rs");

/// Allocates through the global allocator; null is an error, not speed.
#[inline]
fn checked_alloc(l: Layout) -> *mut u8 {
    // SAFETY: every layout used here has a non-zero size.
    let p = unsafe { alloc(l) };
    if p.is_null() {
        handle_alloc_error(l);
    }
    p
}

/// 1000 malloc+free pairs.
fn pairs(c: &mut Criterion) {
    let mut g = configure(c, "global_pairs1000");
    for size in [16usize, 256, 4096] {
        let l = Layout::from_size_align(size, 8).expect("layout");
        g.bench_function(BenchmarkId::new(ALLOCATOR, size), |b| {
            b.iter(|| {
                for _ in 0..1000 {
                    let p = black_box(checked_alloc(l));
                    // SAFETY: `p` was just allocated with `l`.
                    unsafe { dealloc(p, l) };
                }
            })
        });
    }
    g.finish();
}

/// 1000 mallocs, then 1000 frees.
fn batch(c: &mut Criterion) {
    let mut g = configure(c, "global_batch1000");
    let mut held: Vec<*mut u8> = Vec::with_capacity(1000);
    for size in [16usize, 256, 4096] {
        let l = Layout::from_size_align(size, 8).expect("layout");
        g.bench_function(BenchmarkId::new(ALLOCATOR, size), |b| {
            b.iter(|| {
                for _ in 0..1000 {
                    held.push(checked_alloc(l));
                }
                for p in held.drain(..) {
                    // SAFETY: every `p` was allocated with `l` above.
                    unsafe { dealloc(black_box(p), l) };
                }
            })
        });
    }
    g.finish();
}

/// A node of 24 bytes, as in the binary-trees benchmark game.
struct Node {
    kids: Option<(Box<Node>, Box<Node>)>,
    value: u64,
}

fn build(depth: u32, value: u64) -> Box<Node> {
    let kids = (depth > 0).then(|| (build(depth - 1, 2 * value), build(depth - 1, 2 * value + 1)));
    Box::new(Node { kids, value })
}

fn walk(n: &Node) -> u64 {
    n.kids
        .as_ref()
        .map_or(0, |(l, r)| walk(l).wrapping_add(walk(r)))
        .wrapping_add(n.value)
}

/// Build, walk and drop a binary tree of `Box`es, depth 16 (131071 nodes).
fn binary_trees(c: &mut Criterion) {
    let mut g = configure(c, "global_binary_trees");
    g.bench_function(BenchmarkId::new(ALLOCATOR, "depth16"), |b| {
        b.iter(|| {
            let t = build(16, 1);
            black_box(walk(&t));
        })
    });
    g.finish();
}

/// Format 10 000 numbers into `String`s in a `Vec`, then drop them all.
fn strings(c: &mut Criterion) {
    let mut g = configure(c, "global_strings");
    g.bench_function(BenchmarkId::new(ALLOCATOR, "10000"), |b| {
        b.iter(|| {
            let v: Vec<String> = (0..10_000u64).map(|i| (i * 7919).to_string()).collect();
            black_box(v)
        })
    });
    g.finish();
}

criterion_group!(benches, pairs, batch, binary_trees, strings);
criterion_main!(benches);
