//! Strata vs mimalloc, jemalloc, snmalloc and the system allocator, all in
//! one run. Every allocator is called through `GlobalAlloc` directly (the
//! bench functions are generic over `A: GlobalAlloc`), so no
//! `#[global_allocator]` swapping is needed; the harness itself (criterion,
//! the `Vec`s holding pointers, thread spawning) uses `System`, identically
//! for every allocator.
//!
//! Run: `CARGO_TARGET_DIR=target/bench cargo bench --bench alloc`, then
//! `python3 benches/report.py target/bench` for a ratio table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use mimalloc::MiMalloc;
use snmalloc_rs::SnMalloc;
use strata_alloc::Strata;
use tikv_jemallocator::Jemalloc;

static STRATA: Strata = Strata;
static MIMALLOC: MiMalloc = MiMalloc;
static JEMALLOC: Jemalloc = Jemalloc;
static SNMALLOC: SnMalloc = SnMalloc;
static SYSTEM: System = System;

/// Runs `$f::<A>(bencher, &'static A, $args..)` once per allocator inside
/// `$group`, each under the benchmark id `<allocator>/<$param>`.
macro_rules! for_all_allocators {
    ($group:expr, $param:expr, $f:ident $(, $arg:expr)*) => {{
        let param = $param;
        $group.bench_function(BenchmarkId::new("strata", &param), |b| $f(b, &STRATA $(, $arg)*));
        $group.bench_function(BenchmarkId::new("mimalloc", &param), |b| $f(b, &MIMALLOC $(, $arg)*));
        $group.bench_function(BenchmarkId::new("jemalloc", &param), |b| $f(b, &JEMALLOC $(, $arg)*));
        $group.bench_function(BenchmarkId::new("snmalloc", &param), |b| $f(b, &SNMALLOC $(, $arg)*));
        $group.bench_function(BenchmarkId::new("system", &param), |b| $f(b, &SYSTEM $(, $arg)*));
    }};
}

type Bencher<'a> = criterion::Bencher<'a, WallTime>;

include!("common/configure.rs");

#[inline]
fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

/// Allocates, panicking on null so a failure cannot be mistaken for speed.
#[inline]
fn alloc_checked<A: GlobalAlloc>(a: &A, l: Layout) -> *mut u8 {
    // SAFETY: every layout used in this file has a non-zero size.
    let p = unsafe { a.alloc(l) };
    assert!(!p.is_null(), "allocation of {l:?} failed");
    p
}

/// xorshift64*: a tiny deterministic RNG that never allocates.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[inline]
    fn range(&mut self, lo: usize, hi_incl: usize) -> usize {
        lo + (self.next() % (hi_incl - lo + 1) as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// 1. malloc/free pairs by size

const SIZES: [usize; 6] = [16, 64, 256, 1024, 4096, 32768];
const BATCH: usize = 1000;

/// Allocates `BATCH` blocks of `size`, touching each, then frees them all.
fn batch<A: GlobalAlloc>(b: &mut Bencher, a: &'static A, size: usize) {
    let l = layout(size, 8);
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(BATCH);
    b.iter(|| {
        for _ in 0..BATCH {
            let p = alloc_checked(a, l);
            // SAFETY: `p` is a live block of at least one byte.
            unsafe { p.write(1) };
            ptrs.push(p);
        }
        for p in ptrs.drain(..) {
            // SAFETY: `p` was allocated by `a` with layout `l` and is live.
            unsafe { a.dealloc(black_box(p), l) };
        }
    });
}

/// `BATCH` immediate alloc+free pairs of `size`.
fn pairs<A: GlobalAlloc>(b: &mut Bencher, a: &'static A, size: usize) {
    let l = layout(size, 8);
    b.iter(|| {
        for _ in 0..BATCH {
            let p = black_box(alloc_checked(a, l));
            // SAFETY: `p` is a live block of at least one byte.
            unsafe { p.write(1) };
            // SAFETY: `p` was allocated by `a` with layout `l` and is live.
            unsafe { a.dealloc(p, l) };
        }
    });
}

fn bench_malloc_free(c: &mut Criterion) {
    let mut g = configure(c, "malloc_free_batch1000");
    for size in SIZES {
        for_all_allocators!(g, size, batch, size);
    }
    g.finish();
    let mut g = configure(c, "malloc_free_pairs1000");
    for size in SIZES {
        for_all_allocators!(g, size, pairs, size);
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 2. realloc growth

/// Grows one buffer from 16 B to at least 1 MiB by `num/den`, touching the
/// last byte after each step, then frees it.
fn realloc_growth<A: GlobalAlloc>(b: &mut Bencher, a: &'static A, num: usize, den: usize) {
    b.iter(|| {
        let mut size = 16;
        let mut p = alloc_checked(a, layout(size, 8));
        // SAFETY: `p` holds `size` bytes.
        unsafe { p.add(size - 1).write(1) };
        while size < (1 << 20) {
            let new_size = (size * num / den).max(size + 16);
            // SAFETY: `p` is live with layout (size, 8); new_size is non-zero
            // and does not overflow isize when rounded to 8.
            p = unsafe { a.realloc(p, layout(size, 8), new_size) };
            assert!(!p.is_null(), "realloc to {new_size} failed");
            size = new_size;
            // SAFETY: `p` now holds `size` bytes.
            unsafe { p.add(size - 1).write(1) };
        }
        // SAFETY: `p` is live with layout (size, 8).
        unsafe { a.dealloc(black_box(p), layout(size, 8)) };
    });
}

fn bench_realloc(c: &mut Criterion) {
    let mut g = configure(c, "realloc_growth_16B_to_1MiB");
    for_all_allocators!(g, "x2", realloc_growth, 2, 1);
    for_all_allocators!(g, "x1.5", realloc_growth, 3, 2);
    g.finish();
}

// ---------------------------------------------------------------------------
// 3. aligned allocation

const ALIGNED_BATCH: usize = 256;

/// Allocates `ALIGNED_BATCH` blocks of (size, align), checks and touches
/// each, then frees them.
fn aligned<A: GlobalAlloc>(b: &mut Bencher, a: &'static A, size: usize, align: usize) {
    let l = layout(size, align);
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(ALIGNED_BATCH);
    b.iter(|| {
        for _ in 0..ALIGNED_BATCH {
            let p = alloc_checked(a, l);
            assert_eq!(p as usize % align, 0, "misaligned block");
            // SAFETY: `p` is a live block of at least one byte.
            unsafe { p.write(1) };
            ptrs.push(p);
        }
        for p in ptrs.drain(..) {
            // SAFETY: `p` was allocated by `a` with layout `l` and is live.
            unsafe { a.dealloc(black_box(p), l) };
        }
    });
}

fn bench_aligned(c: &mut Criterion) {
    let mut g = configure(c, "aligned_batch256");
    for align in [64usize, 256, 1024, 4096] {
        for mult in [1usize, 3] {
            let size = align * mult;
            for_all_allocators!(g, format!("a{align}_s{size}"), aligned, size, align);
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Single-producer single-consumer ring of raw pointers (no allocation).

const RING: usize = 1024;

struct Ring {
    head: AtomicUsize,
    tail: AtomicUsize,
    slots: [AtomicPtr<u8>; RING],
}

impl Ring {
    fn new() -> Self {
        Ring {
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// Producer side; returns false when full.
    #[inline]
    fn try_push(&self, p: *mut u8) -> bool {
        let t = self.tail.load(Ordering::Relaxed);
        if t - self.head.load(Ordering::Acquire) >= RING {
            return false;
        }
        self.slots[t % RING].store(p, Ordering::Relaxed);
        self.tail.store(t + 1, Ordering::Release);
        true
    }

    /// Consumer side.
    #[inline]
    fn pop(&self) -> Option<*mut u8> {
        let h = self.head.load(Ordering::Relaxed);
        if h == self.tail.load(Ordering::Acquire) {
            return None;
        }
        let p = self.slots[h % RING].load(Ordering::Relaxed);
        self.head.store(h + 1, Ordering::Release);
        Some(p)
    }
}

/// Spins briefly, then yields (2 cores, noisy machine).
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Blocks carry their own size in the first word so any thread can free
/// them with the right layout.
const HDR_ALIGN: usize = 8;

#[inline]
fn alloc_sized<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    let p = alloc_checked(a, layout(size, HDR_ALIGN));
    // SAFETY: size >= 16, so the block holds one aligned usize.
    unsafe { p.cast::<usize>().write(size) };
    p
}

/// # Safety
/// `p` must come from `alloc_sized(a, _)` and be live.
#[inline]
unsafe fn free_sized<A: GlobalAlloc>(a: &A, p: *mut u8) {
    // SAFETY: the block's first word is its size (caller), and it was
    // allocated by `a` with (size, HDR_ALIGN).
    unsafe {
        let size = p.cast::<usize>().read();
        a.dealloc(p, layout(size, HDR_ALIGN));
    }
}

// ---------------------------------------------------------------------------
// 4. producer/consumer cross-thread

const PC_BLOCKS: usize = 10_000;

/// The bench thread allocates `PC_BLOCKS` blocks (16..=256 B) and hands them
/// through an SPSC ring to a persistent consumer thread that frees them.
/// One iteration ends when the consumer has freed them all.
fn producer_consumer<A: GlobalAlloc + Sync>(b: &mut Bencher, a: &'static A) {
    let ring = Ring::new();
    let freed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut spins = 0;
            loop {
                if let Some(p) = ring.pop() {
                    // SAFETY: the producer sends only live `alloc_sized` blocks.
                    unsafe { free_sized(a, p) };
                    freed.fetch_add(1, Ordering::Release);
                    spins = 0;
                } else if stop.load(Ordering::Acquire) {
                    break;
                } else {
                    backoff(&mut spins);
                }
            }
        });
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let target = freed.load(Ordering::Acquire) + PC_BLOCKS;
                for _ in 0..PC_BLOCKS {
                    let p = alloc_sized(a, rng.range(16, 256));
                    let mut spins = 0;
                    while !ring.try_push(p) {
                        backoff(&mut spins);
                    }
                }
                let mut spins = 0;
                while freed.load(Ordering::Acquire) < target {
                    backoff(&mut spins);
                }
            }
            start.elapsed()
        });
        stop.store(true, Ordering::Release);
    });
}

fn bench_producer_consumer(c: &mut Criterion) {
    let mut g = configure(c, "producer_consumer");
    for_all_allocators!(g, "10k_16-256B", producer_consumer);
    g.finish();
}

// ---------------------------------------------------------------------------
// 5. larson-style server workload

const LARSON_SLOTS: usize = 1000;
const LARSON_ROUNDS: usize = 20_000;

/// One larson worker: replaces random slots with new random-size blocks;
/// every 4th evicted block goes to the peer thread to free; frees what the
/// peer sends; drains until both workers are done.
fn larson_worker<A: GlobalAlloc>(
    a: &A,
    slots: &mut [*mut u8],
    inbox: &Ring,
    outbox: &Ring,
    done: &AtomicUsize,
    seed: u64,
) {
    let mut rng = Rng(seed);
    for _ in 0..LARSON_ROUNDS {
        let i = rng.range(0, slots.len() - 1);
        let old = std::mem::replace(&mut slots[i], alloc_sized(a, rng.range(16, 1024)));
        if rng.next() % 4 != 0 || !outbox.try_push(old) {
            // SAFETY: `old` is a live `alloc_sized` block evicted from a slot.
            unsafe { free_sized(a, old) };
        }
        while let Some(p) = inbox.pop() {
            // SAFETY: the peer sends only live `alloc_sized` blocks.
            unsafe { free_sized(a, p) };
        }
    }
    done.fetch_add(1, Ordering::AcqRel);
    let mut spins = 0;
    loop {
        let both = done.load(Ordering::Acquire) == 2;
        while let Some(p) = inbox.pop() {
            // SAFETY: as above.
            unsafe { free_sized(a, p) };
        }
        if both {
            break;
        }
        backoff(&mut spins);
    }
}

/// Two fresh threads per iteration (like larson's thread turnover) over
/// slot arrays that persist across iterations.
fn larson<A: GlobalAlloc + Sync>(b: &mut Bencher, a: &'static A) {
    let mut rng = Rng(42);
    let mut slots: [Vec<*mut u8>; 2] = std::array::from_fn(|_| {
        (0..LARSON_SLOTS)
            .map(|_| alloc_sized(a, rng.range(16, 1024)))
            .collect()
    });
    let rings = [Ring::new(), Ring::new()];
    let mut gen = 0u64;
    b.iter(|| {
        gen += 1;
        let done = AtomicUsize::new(0);
        let [s0, s1] = &mut slots;
        let s0 = SendSlots(s0.as_mut_slice());
        let s1 = SendSlots(s1.as_mut_slice());
        let (r, d) = (&rings, &done);
        std::thread::scope(|s| {
            s.spawn(move || {
                let s0 = s0;
                larson_worker(a, s0.0, &r[0], &r[1], d, gen * 2 + 1)
            });
            s.spawn(move || {
                let s1 = s1;
                larson_worker(a, s1.0, &r[1], &r[0], d, gen * 2 + 2)
            });
        });
    });
    for p in slots.iter().flatten() {
        // SAFETY: every slot holds a live `alloc_sized` block.
        unsafe { free_sized(a, *p) };
    }
}

/// A slot array moved to a worker thread.
struct SendSlots<'a>(&'a mut [*mut u8]);
// SAFETY: the blocks are plain memory from a `Sync` allocator; exactly one
// thread uses the slice at a time (it is a unique borrow).
unsafe impl Send for SendSlots<'_> {}

fn bench_larson(c: &mut Criterion) {
    let mut g = configure(c, "larson_2threads");
    for_all_allocators!(g, "1000slots_20k_rounds", larson);
    g.finish();
}

// ---------------------------------------------------------------------------
// 6. binary trees

#[repr(C)]
struct Node {
    left: *mut Node,
    right: *mut Node,
    val: u64,
}

const NODE: Layout = Layout::new::<Node>();
const TREE_DEPTH: u32 = 16;

fn build<A: GlobalAlloc>(a: &A, depth: u32, val: u64) -> *mut Node {
    let n = alloc_checked(a, NODE).cast::<Node>();
    let (left, right) = if depth == 0 {
        (ptr::null_mut(), ptr::null_mut())
    } else {
        (
            build(a, depth - 1, 2 * val),
            build(a, depth - 1, 2 * val + 1),
        )
    };
    // SAFETY: `n` is a live, suitably aligned block for a `Node`.
    unsafe { n.write(Node { left, right, val }) };
    n
}

fn walk(n: *const Node) -> u64 {
    if n.is_null() {
        return 0;
    }
    // SAFETY: `n` is a live node built by `build`.
    let n = unsafe { &*n };
    n.val.wrapping_add(walk(n.left)).wrapping_add(walk(n.right))
}

/// # Safety
/// `n` must be null or a tree built by `build(a, ..)` not yet freed.
unsafe fn free_tree<A: GlobalAlloc>(a: &A, n: *mut Node) {
    if n.is_null() {
        return;
    }
    // SAFETY: `n` is a live node (caller); its children are live subtrees.
    unsafe {
        free_tree(a, (*n).left);
        free_tree(a, (*n).right);
        a.dealloc(n.cast(), NODE);
    }
}

fn binary_trees<A: GlobalAlloc>(b: &mut Bencher, a: &'static A) {
    b.iter(|| {
        let t = build(a, TREE_DEPTH, 1);
        black_box(walk(t));
        // SAFETY: `t` was just built by `a` and is freed once.
        unsafe { free_tree(a, t) };
    });
}

fn bench_binary_trees(c: &mut Criterion) {
    let mut g = configure(c, "binary_trees");
    for_all_allocators!(g, format!("depth{TREE_DEPTH}"), binary_trees);
    g.finish();
}

criterion_group!(
    benches,
    bench_malloc_free,
    bench_realloc,
    bench_aligned,
    bench_producer_consumer,
    bench_larson,
    bench_binary_trees
);
criterion_main!(benches);
