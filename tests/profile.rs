//! `strata_alloc::profile` through the global allocator: snapshot diffs per
//! size class, scope reports (allocated, freed, net, peak), frees on other
//! threads, nested scopes.

use std::alloc::{alloc, dealloc, Layout};
use std::sync::Mutex;

use strata_alloc::profile::{self, Scope, Snapshot};
use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// The tests measure process-wide figures: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: usize = 1 << 20;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The size class serving `size`-byte, 8-aligned requests, found from the
/// stats: the class whose block size is the smallest at least `size`.
fn class_of(size: usize) -> (usize, usize) {
    strata_alloc::stats()
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.block_size))
        .find(|&(_, block)| block >= size)
        .expect("a small size")
}

#[test]
fn snapshot_diff_shows_new_blocks_in_their_class() {
    let _guard = serial();
    const N: usize = 300;
    const S: usize = 3000; // an uncommon size: nothing else in the test uses it
    let (class, block) = class_of(S);
    let layout = Layout::from_size_align(S, 8).unwrap();
    let mut ptrs = Vec::with_capacity(N);
    let counting = profile::Counting::start();
    let before = Snapshot::take();
    for _ in 0..N {
        // SAFETY: non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        ptrs.push(p);
    }
    let after = Snapshot::take();
    let diff = before.diff(&after);
    let row = diff.class(class).expect("the class changed");
    assert_eq!(row.blocks_diff, N as isize, "{diff}");
    assert_eq!(row.bytes_diff, (N * block) as isize);
    assert_eq!(row.block_size, block);
    assert!(diff.between.allocated_blocks >= N);
    assert!(diff.between.allocated_bytes >= N * block);
    // The biggest change comes first.
    assert!(diff.rows[0].bytes_diff.unsigned_abs() >= N * block);
    let text = diff.to_string();
    assert!(text.contains(&format!("{block}")), "{text}");

    for p in ptrs {
        // SAFETY: allocated above with `layout`.
        unsafe { dealloc(p, layout) };
    }
    let freed = after.diff(&Snapshot::take());
    assert_eq!(freed.class(class).unwrap().blocks_diff, -(N as isize));
    assert!(freed.between.freed_blocks >= N, "{freed}");
    drop(counting);
}

#[test]
fn counting_is_off_unless_asked_for() {
    let _guard = serial();
    assert!(!profile::is_counting());
    let before = profile::Totals::now();
    let idle: Vec<Box<[u8; 100]>> = (0..100).map(|_| Box::new([0u8; 100])).collect();
    drop(idle);
    assert_eq!(profile::Totals::now(), before, "nothing counted while off");

    let outer = profile::Counting::start();
    let inner = profile::Counting::start();
    drop(inner);
    assert!(profile::is_counting(), "guards nest");
    let counted: Vec<Box<[u8; 100]>> = (0..100).map(|_| Box::new([0u8; 100])).collect();
    let during = profile::Totals::now();
    assert!(during.allocated_blocks >= before.allocated_blocks + 100);
    drop(counted);
    assert!(profile::Totals::now().freed_blocks >= before.freed_blocks + 100);
    drop(outer);
    assert!(!profile::is_counting());

    let scope = Scope::begin();
    assert!(profile::is_counting(), "a scope counts");
    drop(scope);
    assert!(!profile::is_counting(), "a dropped scope stops counting");
}

#[test]
fn measure_reports_allocated_freed_net_and_peak() {
    let _guard = serial();
    let (kept, report) = profile::measure(|| {
        let mut blocks: Vec<Vec<u8>> = (0..10).map(|_| vec![1u8; MIB]).collect();
        blocks.truncate(5);
        blocks
    });
    assert!(report.allocated_bytes >= 10 * MIB, "{report}");
    assert!(report.freed_bytes >= 5 * MIB, "{report}");
    assert!(report.allocations >= 10 && report.frees >= 5, "{report}");
    // Net ~5 MiB: the five kept blocks (counted at their usable size: a
    // reused cached mapping may be larger) plus the outer vector.
    let kept_bytes: usize = kept
        .iter()
        // SAFETY: live blocks of the global allocator.
        .map(|b| unsafe { strata_alloc::usable_size(b.as_ptr()) })
        .sum();
    let net = report.net_bytes;
    assert!(kept_bytes >= 5 * MIB);
    assert!(net >= kept_bytes as isize, "{report}");
    assert!(net < (kept_bytes + 64 * 1024) as isize, "{report}");
    assert!(report.peak_bytes >= 10 * MIB, "{report}");
    assert!(report.to_string().contains("MiB"));
    drop(kept);
}

#[test]
fn frees_on_another_thread_are_counted() {
    let _guard = serial();
    let blocks: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; MIB]).collect();
    let small: Vec<Box<[u8; 3000]>> = (0..100).map(|_| Box::new([0u8; 3000])).collect();
    let scope = Scope::begin();
    std::thread::spawn(move || {
        drop(blocks);
        drop(small);
    })
    .join()
    .unwrap();
    let report = scope.end();
    assert!(report.frees >= 104, "{report}");
    assert!(report.freed_bytes >= 4 * MIB + 100 * 3000, "{report}");
    assert!(report.net_bytes <= -(4 * MIB as isize), "{report}");
    // The calling thread allocated almost nothing itself.
    assert!(report.peak_bytes < MIB, "{report}");
}

#[test]
fn frees_on_a_live_thread_are_counted() {
    let _guard = serial();
    let (to_worker, from_main) = std::sync::mpsc::channel::<Vec<u8>>();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        for block in from_main {
            drop(block);
            done.send(()).unwrap();
        }
    });
    let block = vec![0u8; 2 * MIB];
    let scope = Scope::begin();
    to_worker.send(block).unwrap();
    wait.recv().unwrap();
    let report = scope.end();
    assert!(report.freed_bytes >= 2 * MIB, "{report}");
    drop(to_worker);
    worker.join().unwrap();
}

#[test]
fn scopes_nest() {
    let _guard = serial();
    let outer = Scope::begin();
    let first = vec![0u8; 3 * MIB];
    drop(first);
    let (kept, inner) = profile::measure(|| vec![0u8; MIB]);
    let outer = outer.end();
    // SAFETY: a live block of the global allocator.
    let kept_bytes = unsafe { strata_alloc::usable_size(kept.as_ptr()) };
    let near = |x: usize| x >= kept_bytes && x < kept_bytes + 64 * 1024;
    // The inner scope saw only its own block and peak...
    assert!(near(inner.allocated_bytes), "{inner}");
    assert!(near(inner.peak_bytes), "{inner}");
    // ...the outer one saw both, and keeps the peak from before the inner.
    assert!(outer.allocated_bytes >= 4 * MIB, "{outer}");
    assert!(outer.freed_bytes >= 3 * MIB, "{outer}");
    assert!(outer.peak_bytes >= 3 * MIB, "{outer}");
    assert!(
        outer.net_bytes.unsigned_abs().abs_diff(kept_bytes) < 64 * 1024,
        "{outer}"
    );
    drop(kept);
}

/// A `realloc` that shrinks a block in place keeps the bigger block; its
/// later free must be counted at that block's size, not at the smaller
/// layout's class (1000 such cycles once reported +384 000 net bytes).
#[test]
fn in_place_shrink_then_free_nets_to_zero() {
    let _guard = serial();
    let big = Layout::from_size_align(1000, 8).unwrap();
    let scope = Scope::begin();
    for _ in 0..1000 {
        // SAFETY: non-zero sizes; the block is freed with the layout of its
        // current size, as the `GlobalAlloc` contract asks.
        unsafe {
            let p = alloc(big);
            assert!(!p.is_null());
            let q = std::alloc::realloc(p, big, 600);
            assert_eq!(q, p, "a shrink to 60 % stays in place");
            dealloc(q, Layout::from_size_align(600, 8).unwrap());
        }
    }
    let report = scope.end();
    assert!(report.allocations >= 1000, "{report}");
    // The test harness may allocate a little meanwhile; a drift of a block
    // per cycle would be hundreds of KiB.
    assert!(report.net_bytes.unsigned_abs() < 16 << 10, "{report}");
}
