//! Typed pools and owned heaps against their alternatives, in one run:
//!
//! - `TypedPool<T>` alloc+drop pairs against `Box<T>`-style alloc/free
//!   through strata, mimalloc and jemalloc, and against `slab`;
//! - 1000 allocations then freeing them all: `TypedPool`, `typed-arena`,
//!   `bumpalo`;
//! - `Heap::reset` of 1M objects against freeing them one by one.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Duration;

use allocator_api2::alloc::Allocator;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use strata_alloc::{Heap, Strata, TypedPool};

type Item = [u64; 4];

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    g
}

/// 1000 `Box<Item>`-like alloc, write, free pairs through `a`.
fn box_pairs<A: GlobalAlloc>(a: &A) {
    let layout = Layout::new::<Item>();
    for i in 0..1000u64 {
        // SAFETY: non-zero size; the block is written, read and freed once.
        unsafe {
            let p = a.alloc(layout).cast::<Item>();
            p.write([i; 4]);
            black_box(&*p);
            a.dealloc(p.cast(), layout);
        }
    }
}

fn bench_pairs(c: &mut Criterion) {
    let mut g = configure(c, "alloc_drop_pairs_1000x32B");
    let pool = TypedPool::<Item>::new();
    g.bench_function("typed_pool", |b| {
        b.iter(|| {
            for i in 0..1000u64 {
                black_box(pool.alloc([i; 4]));
            }
        })
    });
    g.bench_function("box_strata", |b| b.iter(|| box_pairs(&Strata)));
    g.bench_function("box_mimalloc", |b| {
        b.iter(|| box_pairs(&mimalloc::MiMalloc))
    });
    g.bench_function("box_jemalloc", |b| {
        b.iter(|| box_pairs(&tikv_jemallocator::Jemalloc))
    });
    let mut slab = slab::Slab::<Item>::with_capacity(16);
    g.bench_function("slab", |b| {
        b.iter(|| {
            for i in 0..1000u64 {
                let key = slab.insert([i; 4]);
                black_box(&slab[key]);
                slab.remove(key);
            }
        })
    });
    g.finish();
}

fn bench_batches(c: &mut Criterion) {
    let mut g = configure(c, "alloc_1000_then_free_all_32B");
    let pool = TypedPool::<Item>::new();
    g.bench_function("typed_pool", |b| {
        b.iter(|| {
            let v: Vec<_> = (0..1000u64).map(|i| pool.alloc([i; 4])).collect();
            black_box(&v);
        })
    });
    g.bench_function("typed_arena", |b| {
        b.iter(|| {
            let arena = typed_arena::Arena::<Item>::with_capacity(16);
            for i in 0..1000u64 {
                black_box(arena.alloc([i; 4]));
            }
        })
    });
    g.bench_function("bumpalo", |b| {
        b.iter(|| {
            let bump = bumpalo::Bump::new();
            for i in 0..1000u64 {
                black_box(bump.alloc([i; 4]));
            }
        })
    });
    g.finish();
}

const OBJECTS: usize = 1_000_000;

fn bench_reset(c: &mut Criterion) {
    let layout = Layout::from_size_align(32, 8).unwrap();
    let mut g = configure(c, "free_1M_32B_objects");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("heap_reset", |b| {
        b.iter_batched(
            || {
                let heap = Heap::new();
                for _ in 0..OBJECTS {
                    black_box(heap.allocate(layout).unwrap());
                }
                heap
            },
            |mut heap| heap.reset(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("free_one_by_one", |b| {
        b.iter_batched(
            // SAFETY: non-zero size; every block is freed once in the routine.
            || {
                (0..OBJECTS)
                    .map(|_| unsafe { Strata.alloc(layout) })
                    .collect::<Vec<_>>()
            },
            |blocks| {
                for p in blocks {
                    // SAFETY: live block of `layout`.
                    unsafe { Strata.dealloc(p, layout) };
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_pairs, bench_batches, bench_reset);
criterion_main!(benches);
