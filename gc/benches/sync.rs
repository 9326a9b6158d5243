//! `strata_gc::sync::Gc` against `std::sync::Arc` and the thread-safe
//! cycle-collecting peers (`dumpster::sync::Gc`, gcmodule's `ThreadedCc`),
//! on the shapes of issue 19. Every node keeps its edges in
//! `Mutex<Option<P<Node>>>`, as users write; every GC contender frees its
//! garbage inside the measured closure (it calls its collector after
//! dropping). `Arc` uses a `Weak` back edge where a cycle would leak.
//!
//! - `sync_tree_shared_walk`: acyclic. A binary tree of 2^14 - 1 nodes is
//!   built, its root shared with 2 spawned threads that each walk the whole
//!   tree (lock each field, clone the child handle), joined, dropped. The
//!   cost of clone/drop and of the candidates such walks leave behind.
//! - `sync_cycles_threads/<crate>/<T>`: T threads (2, 8, 32) make and drop
//!   20 000 two-node cycles in total, then one explicit collection. The
//!   cost of cyclic garbage made concurrently.
//! - `peak_rss_sync_cycles/<crate>` (printed, not criterion): one thread
//!   makes 1 000 000 two-node cycles, dropping each at once, with automatic
//!   collection only; the growth of `VmHWM` over the `VmRSS` before, each
//!   crate in a fresh child process of this binary. What the automatic
//!   trigger lets pile up.
//! - `sync_pause/<crate>/<what>` (printed): a live 1 000 000-node cycle and
//!   a 1 000 000-node garbage cycle; while the main thread runs the
//!   collector, a mutator thread clones and drops its own small pointer
//!   (`unrelated`), and locks a field of a live node then upgrades a `Weak`
//!   to it (`lock_live`, `upgrade_live`); the longest single operation of
//!   each, the collection's duration and, for strata, `sync::stats()`'s
//!   `longest_lock_hold` / `longest_decision`. dumpster has no `Weak`: its
//!   `upgrade_live` row clones a handle to the live node instead. Each crate
//!   runs in a fresh child process, so the stats are this collection's.
//!
//! gcmodule's `ThreadedCc` lives in one process-wide `ThreadedObjectSpace`;
//! it has no automatic collection (its peak-RSS row is what never
//! collecting costs) and no pause row (its collector takes a write lock
//! that every `borrow()` waits on, so every mutator operation on a
//! `ThreadedCc` waits for the whole collection).
//!
//! `benches/ratios.py` prints the medians and ratios to `Arc`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};

/// Depth of the shared tree: 2^14 - 1 nodes.
const TREE_DEPTH: u32 = 13;
const CYCLES: usize = 20_000;
const THREADS: [usize; 3] = [2, 8, 32];
const RSS_CYCLES: usize = 1_000_000;
const PAUSE_NODES: usize = 1_000_000;

/// Criterion's test mode runs every bench once: small sizes keep it fast.
/// `cargo bench` passes `--bench`; `cargo test --benches` passes nothing,
/// which criterion 0.5 takes for test mode (`--test` is never passed).
fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn scaled(full: usize, test: usize) -> usize {
    if test_mode() {
        test
    } else {
        full
    }
}

/// Shapes over `P` (pointer), `new`, `with` (run a closure on the value:
/// gcmodule's values are reached through `borrow()`) and the crate's
/// collector call.
macro_rules! tree_shapes {
    (collect = $collect:expr) => {
        /// Built top-down: each child is stored through `lock()`.
        pub fn build_tree(depth: u32) -> P<Node> {
            let n = new(Node {
                left: Mutex::new(None),
                right: Mutex::new(None),
                value: depth,
            });
            if depth > 0 {
                let (l, r) = (build_tree(depth - 1), build_tree(depth - 1));
                with(&n, |n| {
                    *n.left.lock().unwrap() = Some(l);
                    *n.right.lock().unwrap() = Some(r);
                });
            }
            n
        }

        /// Walked by locking each field and cloning the child handle.
        pub fn walk_tree(node: &P<Node>) -> u64 {
            let (l, r, v) = with(node, |n| {
                let l = n.left.lock().unwrap().clone();
                let r = n.right.lock().unwrap().clone();
                (l, r, n.value)
            });
            let mut sum = u64::from(v);
            if let Some(l) = l {
                sum += walk_tree(&l);
            }
            if let Some(r) = r {
                sum += walk_tree(&r);
            }
            sum
        }

        pub fn run_tree_shared_walk(depth: u32) {
            let root = build_tree(depth);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let mine = root.clone();
                    s.spawn(move || black_box(walk_tree(&mine)));
                }
            });
            drop(root);
            $collect;
        }

        pub fn run_cycles_threads(threads: usize, cycles: usize) {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(move || {
                        for _ in 0..cycles / threads {
                            make_cycle();
                        }
                    });
                }
            });
            $collect;
        }
    };
}

/// `Arc<Mutex>` baseline: the same code, a `Weak` back edge in the cycle.
mod arc {
    use super::*;
    use std::sync::{Arc as P, Weak};

    fn new<T>(v: T) -> P<T> {
        P::new(v)
    }
    fn with<T, R>(p: &P<T>, f: impl FnOnce(&T) -> R) -> R {
        f(p)
    }

    pub struct Node {
        left: Mutex<Option<P<Node>>>,
        right: Mutex<Option<P<Node>>>,
        value: u32,
    }
    pub struct Pair {
        other: Mutex<Option<P<Pair>>>,
        back: Mutex<Option<Weak<Pair>>>,
    }

    /// a -> b strong, b -> a weak: no leak, nothing to collect.
    pub fn make_cycle() {
        let a = new(Pair {
            other: Mutex::new(None),
            back: Mutex::new(None),
        });
        let b = new(Pair {
            other: Mutex::new(None),
            back: Mutex::new(Some(P::downgrade(&a))),
        });
        *a.other.lock().unwrap() = Some(b);
        black_box(&a.back);
    }

    tree_shapes!(collect = black_box(()));
}

mod strata {
    use super::*;
    pub use strata_gc::sync::{Gc as P, Weak as W};
    use strata_gc::Trace;

    pub fn new<T: Trace + Send + Sync + 'static>(v: T) -> P<T> {
        P::new(v)
    }
    fn with<T: Trace + Send + Sync + 'static, R>(p: &P<T>, f: impl FnOnce(&T) -> R) -> R {
        f(p)
    }

    #[derive(Trace)]
    pub struct Node {
        left: Mutex<Option<P<Node>>>,
        right: Mutex<Option<P<Node>>>,
        value: u32,
    }
    /// A node of the pause test's rings.
    #[derive(Trace)]
    pub struct Ring {
        pub next: Mutex<Option<P<Ring>>>,
    }
    #[derive(Trace)]
    pub struct Pair {
        other: Mutex<Option<P<Pair>>>,
    }

    pub fn make_cycle() {
        let a = new(Pair {
            other: Mutex::new(None),
        });
        let b = new(Pair {
            other: Mutex::new(Some(a.clone())),
        });
        *a.other.lock().unwrap() = Some(b);
    }

    tree_shapes!(collect = strata_gc::sync::collect());
}

mod dumpster_impl {
    use super::*;
    pub use dumpster::sync::Gc as P;
    use dumpster::Trace;

    pub fn new<T: Trace + Send + Sync + 'static>(v: T) -> P<T> {
        P::new(v)
    }
    fn with<T: Trace + Send + Sync + 'static, R>(p: &P<T>, f: impl FnOnce(&T) -> R) -> R {
        f(p)
    }

    // Written out: dumpster's derive does not accept fields that come from
    // a `macro_rules!` expansion (see `common/shapes.rs`).
    #[derive(Trace)]
    pub struct Node {
        left: Mutex<Option<P<Node>>>,
        right: Mutex<Option<P<Node>>>,
        value: u32,
    }
    #[derive(Trace)]
    pub struct Ring {
        pub next: Mutex<Option<P<Ring>>>,
    }
    #[derive(Trace)]
    pub struct Pair {
        other: Mutex<Option<P<Pair>>>,
    }

    pub fn make_cycle() {
        let a = new(Pair {
            other: Mutex::new(None),
        });
        let b = new(Pair {
            other: Mutex::new(Some(a.clone())),
        });
        *a.other.lock().unwrap() = Some(b);
    }

    tree_shapes!(collect = dumpster::sync::collect());
}

mod gcmodule_impl {
    use super::*;
    use gcmodule::{ThreadedCc as P, ThreadedObjectSpace, Trace, Tracer};
    use std::sync::OnceLock;

    /// Every `ThreadedCc` of the bench lives in this one space.
    fn space() -> &'static ThreadedObjectSpace {
        static SPACE: OnceLock<ThreadedObjectSpace> = OnceLock::new();
        SPACE.get_or_init(ThreadedObjectSpace::default)
    }
    fn new<T: Trace + Send + Sync>(v: T) -> P<T> {
        space().create(v)
    }
    fn with<T: Trace, R>(p: &P<T>, f: impl FnOnce(&T) -> R) -> R {
        f(&p.borrow())
    }
    pub fn collect() -> usize {
        space().collect_cycles()
    }

    pub struct Node {
        left: Mutex<Option<P<Node>>>,
        right: Mutex<Option<P<Node>>>,
        value: u32,
    }
    pub struct Pair {
        other: Mutex<Option<P<Pair>>>,
    }

    // Written out: gcmodule's derive makes `is_type_tracked` ask each
    // field's type, which for a self-referential node asks the node again
    // and overflows the stack on the first `create`.
    impl Trace for Node {
        fn trace(&self, t: &mut Tracer) {
            self.left.trace(t);
            self.right.trace(t);
        }
        fn is_type_tracked() -> bool {
            true
        }
    }
    impl Trace for Pair {
        fn trace(&self, t: &mut Tracer) {
            self.other.trace(t);
        }
        fn is_type_tracked() -> bool {
            true
        }
    }

    /// A two-node cycle, dropped at once.
    pub fn make_cycle() {
        let a = new(Pair {
            other: Mutex::new(None),
        });
        let b = new(Pair {
            other: Mutex::new(Some(a.clone())),
        });
        *a.borrow().other.lock().unwrap() = Some(b);
    }

    tree_shapes!(collect = collect());
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

fn tree_shared_walk(c: &mut Criterion) {
    let depth = if test_mode() { 7 } else { TREE_DEPTH };
    let mut g = c.benchmark_group("sync_tree_shared_walk");
    g.bench_function("arc", |b| b.iter(|| arc::run_tree_shared_walk(depth)));
    g.bench_function("strata_gc", |b| {
        b.iter(|| strata::run_tree_shared_walk(depth))
    });
    g.bench_function("dumpster", |b| {
        b.iter(|| dumpster_impl::run_tree_shared_walk(depth))
    });
    g.bench_function("gcmodule", |b| {
        b.iter(|| gcmodule_impl::run_tree_shared_walk(depth))
    });
    g.finish();
}

fn cycles_threads(c: &mut Criterion) {
    let cycles = scaled(CYCLES, 640);
    let mut g = c.benchmark_group("sync_cycles_threads");
    for threads in THREADS {
        macro_rules! row {
            ($label:literal, $m:ident) => {
                g.bench_with_input(BenchmarkId::new($label, threads), &threads, |b, &t| {
                    b.iter(|| $m::run_cycles_threads(t, cycles))
                });
            };
        }
        row!("arc_weak_back", arc);
        row!("strata_gc", strata);
        row!("dumpster", dumpster_impl);
        row!("gcmodule", gcmodule_impl);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = tree_shared_walk, cycles_threads
}

/// Environment variables of the child processes: which measurement, which
/// crate, what size.
const CHILD_VAR: &str = "STRATA_GC_SYNC_BENCH_CHILD";
const CRATE_VAR: &str = "STRATA_GC_SYNC_BENCH_CRATE";
const SIZE_VAR: &str = "STRATA_GC_SYNC_BENCH_SIZE";
const RSS_ID: &str = "peak_rss_sync_cycles";
const PAUSE_ID: &str = "sync_pause";

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child: make `n` cycles of one crate, automatic collection only; print
/// the growth of peak RSS in bytes, then what the churn took (and, for
/// strata, what its automatic collections freed by then).
fn rss_child(which: &str, n: usize) {
    let before = status_kib("VmRSS:");
    let churn: fn() = match which {
        "arc_weak_back" => arc::make_cycle,
        "strata_gc" => strata::make_cycle,
        "dumpster" => dumpster_impl::make_cycle,
        "gcmodule" => gcmodule_impl::make_cycle,
        _ => return,
    };
    let start = Instant::now();
    for _ in 0..n {
        churn();
    }
    let took = start.elapsed();
    let peak = status_kib("VmHWM:");
    println!("{}", peak.saturating_sub(before) * 1024);
    print!("churn {:.0} ms", took.as_secs_f64() * 1e3);
    if which == "strata_gc" {
        let st = strata_gc::sync::stats();
        print!(
            "; {} automatic collections ({:.0} ms) freed {} of {} objects, {} candidates pending",
            st.collections,
            st.duration.as_secs_f64() * 1e3,
            st.collected,
            2 * n,
            strata_gc::sync::count(),
        );
    }
    println!();
}

/// The longest single operation seen, and how many ran.
#[derive(Default)]
struct Longest {
    max: Duration,
    ops: u64,
}

impl Longest {
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.max = self.max.max(t.elapsed());
        self.ops += 1;
        r
    }
}

/// A ring of `n` nodes; returns its first and its middle node.
macro_rules! ring {
    ($m:ident, $n:expr) => {{
        let first = $m::new($m::Ring {
            next: Mutex::new(None),
        });
        let mut prev = first.clone();
        let mut middle = None;
        for i in 1..$n {
            let n = $m::new($m::Ring {
                next: Mutex::new(None),
            });
            *prev.next.lock().unwrap() = Some(n.clone());
            if i == $n / 2 {
                middle = Some(n.clone());
            }
            prev = n;
        }
        *prev.next.lock().unwrap() = Some(first.clone());
        (first, middle.unwrap())
    }};
}

/// Child: the pause test for one crate; prints its rows. The process exits
/// without dropping the live ring (a recursive drop of 10^6 nodes).
fn pause_child(which: &str, n: usize) {
    let done = AtomicBool::new(false);
    // Runs `collect` on this thread while a mutator loops on `unrelated`,
    // `lock_live` and `upgrade_live`; prints the rows.
    macro_rules! measure {
        ($label:literal, $collect:expr, $unrelated:expr, $lock_live:expr, $upgrade_live:expr) => {{
            let mut took = Duration::ZERO;
            let mut seen = None;
            std::thread::scope(|s| {
                let mutator = s.spawn(|| {
                    let (mut a, mut lock, mut up) =
                        (Longest::default(), Longest::default(), Longest::default());
                    while !done.load(Ordering::Relaxed) {
                        a.time($unrelated);
                        lock.time($lock_live);
                        up.time($upgrade_live);
                    }
                    (a, lock, up)
                });
                // Let the mutator start before the collection does.
                std::thread::sleep(Duration::from_millis(20));
                let t = Instant::now();
                black_box($collect);
                took = t.elapsed();
                done.store(true, Ordering::Relaxed);
                seen = Some(mutator.join().unwrap());
            });
            let (a, lock, up) = seen.unwrap();
            let row = |what: &str, d: Duration, extra: String| {
                println!(
                    "{PAUSE_ID}/{}/{what:<22} {:>10.3} ms{extra}",
                    $label,
                    d.as_secs_f64() * 1e3
                )
            };
            let ops = |l: &Longest| format!("  ({} ops)", l.ops);
            row("collection", took, String::new());
            row("unrelated_clone_drop", a.max, ops(&a));
            row("lock_live", lock.max, ops(&lock));
            row("upgrade_live", up.max, ops(&up));
        }};
    }
    match which {
        "strata_gc" => {
            use strata::{new, Ring, P, W};
            strata_gc::sync::disable();
            let (live, middle) = ring!(strata, n);
            let (garbage, _) = ring!(strata, n);
            drop(garbage);
            let weak: W<Ring> = P::downgrade(&middle);
            let mine = new(Ring {
                next: Mutex::new(None),
            });
            let before = strata_gc::sync::stats();
            measure!(
                "strata_gc",
                strata_gc::sync::collect(),
                || drop(mine.clone()),
                || drop(middle.next.lock().unwrap()),
                || drop(weak.upgrade())
            );
            let after = strata_gc::sync::stats();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "{PAUSE_ID}/strata_gc/stats_duration          {:>10.3} ms  ({} scanned, {} collected)",
                ms(after.duration - before.duration),
                after.scanned - before.scanned,
                after.collected - before.collected,
            );
            println!(
                "{PAUSE_ID}/strata_gc/longest_lock_hold       {:>10.3} ms",
                ms(after.longest_lock_hold)
            );
            println!(
                "{PAUSE_ID}/strata_gc/longest_decision        {:>10.3} ms",
                ms(after.longest_decision)
            );
            std::mem::forget(live);
            std::process::exit(0);
        }
        // dumpster's sync collector walks the graph recursively: 10^5
        // ring nodes overflow the main thread's 8 MiB stack, so its
        // collection runs on a thread with a 4 GiB (lazily committed) one.
        "dumpster" => std::thread::Builder::new()
            .stack_size(4 << 30)
            .spawn(move || {
                use dumpster_impl::{new, Ring};
                dumpster::sync::set_collect_condition(|_| false);
                let (live, middle) = ring!(dumpster_impl, n);
                let (garbage, _) = ring!(dumpster_impl, n);
                drop(garbage);
                let mine = new(Ring {
                    next: Mutex::new(None),
                });
                measure!(
                    "dumpster",
                    dumpster::sync::collect(),
                    || drop(mine.clone()),
                    || drop(middle.next.lock().unwrap()),
                    || drop(middle.clone())
                );
                std::mem::forget(live);
                std::process::exit(0);
            })
            .unwrap()
            .join()
            .unwrap(),
        _ => {}
    }
}

include!("common/filter.rs");

/// Run `kind` for `which` in a fresh child process of this binary; its
/// stdout, or why it failed.
fn child(kind: &str, which: &str, size: usize) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .env(CHILD_VAR, kind)
        .env(CRATE_VAR, which)
        .env(SIZE_VAR, size.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!("child failed: {} ({last})", out.status))
    }
}

fn peak_rss_report() {
    if !selected(RSS_ID) {
        return;
    }
    let n = scaled(RSS_CYCLES, 10_000);
    let mut arc_bytes = 0u64;
    for which in ["arc_weak_back", "strata_gc", "dumpster", "gcmodule"] {
        match child("rss", which, n) {
            Ok(out) => {
                let mut lines = out.lines();
                let bytes: u64 = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
                let note = lines.next().unwrap_or("");
                if which == "arc_weak_back" {
                    arc_bytes = bytes;
                }
                let ratio = if arc_bytes > 0 {
                    format!("{:.1}x arc", bytes as f64 / arc_bytes as f64)
                } else {
                    "n/a".to_string()
                };
                println!(
                    "{RSS_ID}/{which:<14} peak RSS growth {:>8.1} MiB  {:>7.1} B/cycle  {ratio}  ({note})",
                    bytes as f64 / (1024.0 * 1024.0),
                    bytes as f64 / n as f64,
                );
            }
            Err(e) => println!("{RSS_ID}/{which:<14} {e}"),
        }
    }
}

fn pause_report() {
    if !selected(PAUSE_ID) {
        return;
    }
    let n = scaled(PAUSE_NODES, 10_000);
    for which in ["strata_gc", "dumpster"] {
        match child("pause", which, n) {
            Ok(out) => print!("{out}"),
            Err(e) => println!("{PAUSE_ID}/{which} {e}"),
        }
    }
}

// `criterion_main!` plus the printed rows, whose children are this binary
// with `STRATA_GC_SYNC_BENCH_CHILD` set.
fn main() {
    if let Ok(kind) = std::env::var(CHILD_VAR) {
        let which = std::env::var(CRATE_VAR).unwrap_or_default();
        let size = std::env::var(SIZE_VAR)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match kind.as_str() {
            "rss" => rss_child(&which, size),
            "pause" => pause_child(&which, size),
            _ => {}
        }
        return;
    }
    benches();
    peak_rss_report();
    pause_report();
    Criterion::default().configure_from_args().final_summary();
}
