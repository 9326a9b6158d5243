//! Typed pools and owned heaps against their alternatives, in one run:
//!
//! - `TypedPool<T>` alloc+drop pairs against `Box<T>`-style alloc/free
//!   through strata, mimalloc, jemalloc and snmalloc, against a real
//!   `Box::new` under mimalloc (this binary's global allocator), and
//!   against `slab`;
//! - 1000 allocations then freeing them all: `TypedPool`, `Box` under
//!   mimalloc, `typed-arena`, `bumpalo`;
//! - `Heap::reset` of 1M objects against freeing them one by one.
//!
//! The `box_*` rows call each allocator's `GlobalAlloc` directly, which
//! is what `Box` ends in minus the `__rust_alloc` shim: a little faster
//! than a real `Box`, so the comparison favours them. `box_new_mimalloc`
//! is the real `Box<T>` under mimalloc.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Duration;

use allocator_api2::alloc::Allocator;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use strata_alloc::{Heap, Strata, TypedPool};

/// `Box<T>` and the arenas' own chunks get mimalloc, the allocator the
/// issue's target compares against.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Item = [u64; 4];

include!("common/configure.rs");

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
    // Same shape as `box_pairs`: write, let the reference escape, free.
    g.bench_function("typed_pool", |b| {
        b.iter(|| {
            for i in 0..1000u64 {
                let item = pool.alloc([i; 4]);
                black_box(&*item);
                drop(item);
            }
        })
    });
    g.bench_function("box_new_mimalloc", |b| {
        b.iter(|| {
            for i in 0..1000u64 {
                let item = Box::new([i; 4]);
                black_box(&*item);
                drop(item);
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
    g.bench_function("box_snmalloc", |b| {
        b.iter(|| box_pairs(&snmalloc_rs::SnMalloc))
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

/// Each pattern as its users write it: the pool and `Box` keep a handle
/// per object (in a reused `Vec`) and free each one; the arenas hand out
/// references and free everything at once.
fn bench_batches(c: &mut Criterion) {
    let mut g = configure(c, "alloc_1000_then_free_all_32B");
    let pool = TypedPool::<Item>::new();
    let mut handles = Vec::with_capacity(1000);
    g.bench_function("typed_pool", |b| {
        b.iter(|| {
            handles.extend((0..1000u64).map(|i| pool.alloc([i; 4])));
            black_box(&handles);
            handles.clear();
        })
    });
    drop(handles);
    let mut boxes = Vec::with_capacity(1000);
    g.bench_function("box_new_mimalloc", |b| {
        b.iter(|| {
            boxes.extend((0..1000u64).map(|i| Box::new([i; 4])));
            black_box(&boxes);
            boxes.clear();
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
    let mut bump = bumpalo::Bump::new();
    g.bench_function("bumpalo_reset", |b| {
        b.iter(|| {
            for i in 0..1000u64 {
                black_box(bump.alloc([i; 4]));
            }
            bump.reset();
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
