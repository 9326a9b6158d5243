// Workload shapes as users write them (issue 15): graphs of interior-mutable
// `RefCell` nodes, the `Rc<RefCell<..>>` code a cycle-collecting pointer
// replaces. Included into `mod shapes` by `body.rs`, so `gc.rs` (system
// allocator) and `gc_on_strata.rs` (strata-alloc) run the same shapes.
//
// Every bench id names its shape; the function id names the crate. The `Rc`
// rows are the baseline of each ratio; every GC variant frees its garbage
// inside the measured closure (it calls the crate's collector after
// dropping), as in `body.rs`.
//
// Peers that cannot express a shape are skipped for it:
// - `Weak` shapes (weak parent tree, upgrade walk, list with weak back
//   links): `gc` 0.5 and `dumpster` 1 have no weak pointer; rust-cc has one
//   only behind its `weak-ptrs` feature, which this crate's dev-dependency
//   does not enable (enabling it changes rust-cc's box for every other
//   bench), so rust-cc is skipped too.
// - Strong back links: `Rc` cannot collect them; its row runs the same list
//   with `Weak` back links (`rc_weak_back`) as the baseline.
// - Old-young: no `Rc` row (it would leak the cycles; the ratio is within
//   each crate: with old objects / without).
// - Fan-in: rust-cc's strong count tops out at 16 382, below 100 000.
// - gcmodule is not a dev-dependency (see `gc.rs`): tried on these shapes
//   (2026-12-03, gcmodule 0.3.3), it overflowed the main thread's stack on
//   the `RefCell` tree, the strong-back list and fan-in alike.

use criterion::{BenchmarkId, Criterion};

/// Depth of the `RefCell` tree: 2^15 - 1 nodes.
const TREE_DEPTH: u32 = 14;
/// Depth of the `Weak`-parent tree: 2^13 - 1 nodes, 2^12 leaves.
const PARENT_TREE_DEPTH: u32 = 12;
const LIST_LEN: u32 = 10_000;
const FAN_IN: usize = 100_000;
/// Old-young at full size: long-lived tracked objects and young cycles.
const OLD_FULL: usize = 1_000_000;
const YOUNG_FULL: usize = 20_000;
/// Crates without automatic collection (bacon_rajan_cc) collect every
/// this many young cycles.
const MANUAL_COLLECT_EVERY: usize = 350;
/// Depth of the tree whose peak RSS is measured: 2^21 - 1 nodes.
const RSS_TREE_DEPTH: u32 = 20;

/// Shapes every crate can express, over `P` (pointer), `C` (cell) and the
/// crate's collector call.
macro_rules! strong_shapes {
    (auto_collect = $auto:expr, collect = $collect:expr) => {
        /// Built top-down: each child is assigned through `borrow_mut()`.
        pub fn build_tree(depth: u32) -> P<Node> {
            let n = P::new(Node {
                left: C::new(None),
                right: C::new(None),
                value: depth,
            });
            if depth > 0 {
                *n.left.borrow_mut() = Some(build_tree(depth - 1));
                *n.right.borrow_mut() = Some(build_tree(depth - 1));
            }
            n
        }

        /// Walked by cloning child handles out of the cells.
        pub fn walk_tree(node: &P<Node>) -> u64 {
            let l = node.left.borrow().clone();
            let r = node.right.borrow().clone();
            let mut sum = u64::from(node.value);
            if let Some(l) = l {
                sum += walk_tree(&l);
            }
            if let Some(r) = r {
                sum += walk_tree(&r);
            }
            sum
        }

        pub fn run_refcell_tree() {
            let root = build_tree(super::TREE_DEPTH);
            std::hint::black_box(walk_tree(&root));
            drop(root);
            $collect;
        }

        pub fn run_fan_in() {
            let one = build_tree(0);
            let handles: Vec<P<Node>> = (0..super::FAN_IN).map(|_| one.clone()).collect();
            drop(one);
            drop(std::hint::black_box(handles));
            $collect;
        }

        pub fn old_objects(n: usize) -> Vec<P<Node>> {
            (0..n).map(|_| build_tree(0)).collect()
        }

        /// One young two-node cycle of `RefCell` nodes, dropped at once.
        pub fn make_cycle() {
            let a = build_tree(0);
            let b = build_tree(0);
            *b.left.borrow_mut() = Some(a.clone());
            *a.left.borrow_mut() = Some(b);
        }

        pub fn young_churn(n: usize) {
            for i in 0..n {
                make_cycle();
                if !$auto && i % super::MANUAL_COLLECT_EVERY == 0 {
                    $collect;
                }
            }
        }
    };
}

/// Shapes with `Weak` edges, over `P`, `C`, `W` (weak pointer), and the
/// crate's `downgrade` / `upgrade` in scope.
macro_rules! weak_shapes {
    (collect = $collect:expr) => {
        pub fn build_parent_tree(
            parent: Option<&P<WNode>>,
            depth: u32,
            leaves: &mut Vec<P<WNode>>,
        ) -> P<WNode> {
            let n = P::new(WNode {
                left: C::new(None),
                right: C::new(None),
                parent: C::new(parent.map(downgrade)),
                value: depth,
            });
            if depth == 0 {
                leaves.push(n.clone());
            } else {
                *n.left.borrow_mut() = Some(build_parent_tree(Some(&n), depth - 1, leaves));
                *n.right.borrow_mut() = Some(build_parent_tree(Some(&n), depth - 1, leaves));
            }
            n
        }

        /// From every leaf to the root, upgrading the parent at each step.
        pub fn walk_leaves_to_root(leaves: &[P<WNode>]) -> u64 {
            let mut sum = 0;
            for leaf in leaves {
                let mut cur = leaf.clone();
                loop {
                    sum += u64::from(cur.value);
                    let up = cur.parent.borrow().as_ref().and_then(upgrade);
                    match up {
                        Some(p) => cur = p,
                        None => break,
                    }
                }
            }
            sum
        }

        pub fn parent_tree() -> (P<WNode>, Vec<P<WNode>>) {
            let mut leaves = Vec::new();
            let root = build_parent_tree(None, super::PARENT_TREE_DEPTH, &mut leaves);
            (root, leaves)
        }

        pub fn run_weak_parent_tree() {
            let (root, leaves) = parent_tree();
            std::hint::black_box(walk_leaves_to_root(&leaves));
            drop(leaves);
            drop(root);
            $collect;
        }

        /// Push back; walk forward by cloned `next`, back by upgraded
        /// `prev`; unlink from the head (as `Rc` code must: its recursive
        /// drop overflows on long lists), then collect.
        pub fn run_dlist_weak_back() {
            let head = P::new(WDNode {
                prev: C::new(None),
                next: C::new(None),
                value: 0,
            });
            let mut tail = head.clone();
            for i in 1..super::LIST_LEN {
                let n = P::new(WDNode {
                    prev: C::new(Some(downgrade(&tail))),
                    next: C::new(None),
                    value: i,
                });
                *tail.next.borrow_mut() = Some(n.clone());
                tail = n;
            }
            let mut sum = 0u64;
            let mut cur = Some(head.clone());
            while let Some(n) = cur {
                sum += u64::from(n.value);
                cur = n.next.borrow().clone();
            }
            let mut cur = Some(tail);
            while let Some(n) = cur {
                sum += u64::from(n.value);
                cur = n.prev.borrow().as_ref().and_then(upgrade);
            }
            std::hint::black_box(sum);
            let mut cur = Some(head);
            while let Some(n) = cur {
                cur = n.next.borrow_mut().take();
            }
            $collect;
        }
    };
}

/// A list with strong back links, for the crates that collect cycles.
macro_rules! strong_back_shapes {
    (collect = $collect:expr) => {
        /// Push back; walk forward by cloned `next` and back by cloned
        /// `prev`; drop both ends and let the collector free the list.
        pub fn run_dlist_strong_back() {
            let head = P::new(SDNode {
                prev: C::new(None),
                next: C::new(None),
                value: 0,
            });
            let mut tail = head.clone();
            for i in 1..super::LIST_LEN {
                let n = P::new(SDNode {
                    prev: C::new(Some(tail.clone())),
                    next: C::new(None),
                    value: i,
                });
                *tail.next.borrow_mut() = Some(n.clone());
                tail = n;
            }
            let mut sum = 0u64;
            let mut cur = Some(head.clone());
            while let Some(n) = cur {
                sum += u64::from(n.value);
                cur = n.next.borrow().clone();
            }
            let mut cur = Some(tail.clone());
            while let Some(n) = cur {
                sum += u64::from(n.value);
                cur = n.prev.borrow().clone();
            }
            std::hint::black_box(sum);
            drop((head, tail));
            $collect;
        }
    };
}

/// The node types, with the crate's derives.
macro_rules! strong_types {
    ($(#[$m:meta])*) => {
        $(#[$m])*
        pub struct Node {
            left: C<Option<P<Node>>>,
            right: C<Option<P<Node>>>,
            value: u32,
        }
        $(#[$m])*
        pub struct SDNode {
            prev: C<Option<P<SDNode>>>,
            next: C<Option<P<SDNode>>>,
            value: u32,
        }
    };
}

macro_rules! weak_types {
    ($(#[$m:meta])*) => {
        $(#[$m])*
        pub struct WNode {
            left: C<Option<P<WNode>>>,
            right: C<Option<P<WNode>>>,
            parent: C<Option<W<WNode>>>,
            value: u32,
        }
        $(#[$m])*
        pub struct WDNode {
            prev: C<Option<W<WDNode>>>,
            next: C<Option<P<WDNode>>>,
            value: u32,
        }
    };
}

mod strata {
    use std::cell::RefCell as C;
    use strata_gc::{Finalize, Gc as P, Trace, Weak as W};

    fn downgrade<T: Trace>(p: &P<T>) -> W<T> {
        P::downgrade(p)
    }
    fn upgrade<T: Trace>(w: &W<T>) -> Option<P<T>> {
        w.upgrade()
    }

    strong_types!(#[derive(Trace, Finalize)]);
    weak_types!(#[derive(Trace, Finalize)]);
    strong_shapes!(auto_collect = true, collect = strata_gc::collect());
    weak_shapes!(collect = strata_gc::collect());
    strong_back_shapes!(collect = strata_gc::collect());
}

/// `Rc<RefCell>` baseline: the same code, nothing to collect.
#[allow(dead_code)]
mod rc {
    use std::cell::RefCell as C;
    use std::rc::{Rc as P, Weak as W};

    fn downgrade<T>(p: &P<T>) -> W<T> {
        P::downgrade(p)
    }
    fn upgrade<T>(w: &W<T>) -> Option<P<T>> {
        w.upgrade()
    }

    strong_types!();
    weak_types!();
    strong_shapes!(auto_collect = true, collect = std::hint::black_box(()));
    weak_shapes!(collect = std::hint::black_box(()));
}

#[allow(dead_code)]
mod rust_cc_impl {
    use rust_cc::{Cc as P, Finalize, Trace};
    use std::cell::RefCell as C;

    strong_types!(#[derive(Trace, Finalize)]);
    strong_shapes!(auto_collect = true, collect = rust_cc::collect_cycles());
    strong_back_shapes!(collect = rust_cc::collect_cycles());
}

#[allow(dead_code)]
mod dumpster_impl {
    use dumpster::unsync::Gc as P;
    use dumpster::Trace;
    use std::cell::RefCell as C;

    // Written out: dumpster's derive does not accept fields that come from
    // a `macro_rules!` expansion.
    #[derive(Trace)]
    pub struct Node {
        left: C<Option<P<Node>>>,
        right: C<Option<P<Node>>>,
        value: u32,
    }
    #[derive(Trace)]
    pub struct SDNode {
        prev: C<Option<P<SDNode>>>,
        next: C<Option<P<SDNode>>>,
        value: u32,
    }
    strong_shapes!(auto_collect = true, collect = dumpster::unsync::collect());
    strong_back_shapes!(collect = dumpster::unsync::collect());
}

#[allow(dead_code)]
mod gc_impl {
    use gc::{Finalize, Gc as P, GcCell as C, Trace};

    strong_types!(#[derive(Trace, Finalize)]);
    strong_shapes!(auto_collect = true, collect = gc::force_collect());
    strong_back_shapes!(collect = gc::force_collect());
}

#[allow(dead_code)]
mod bacon_impl {
    use bacon_rajan_cc::{Cc as P, Trace, Tracer, Weak as W};
    use std::cell::RefCell as C;

    fn downgrade<T: Trace>(p: &P<T>) -> W<T> {
        p.downgrade()
    }
    fn upgrade<T: Trace>(w: &W<T>) -> Option<P<T>> {
        w.upgrade()
    }

    strong_types!();
    weak_types!();
    impl Trace for Node {
        fn trace(&self, t: &mut Tracer) {
            self.left.trace(t);
            self.right.trace(t);
        }
    }
    impl Trace for SDNode {
        fn trace(&self, t: &mut Tracer) {
            self.prev.trace(t);
            self.next.trace(t);
        }
    }
    impl Trace for WNode {
        fn trace(&self, t: &mut Tracer) {
            self.left.trace(t);
            self.right.trace(t);
        }
    }
    impl Trace for WDNode {
        fn trace(&self, t: &mut Tracer) {
            self.next.trace(t);
        }
    }
    strong_shapes!(
        auto_collect = false,
        collect = bacon_rajan_cc::collect_cycles()
    );
    weak_shapes!(collect = bacon_rajan_cc::collect_cycles());
    strong_back_shapes!(collect = bacon_rajan_cc::collect_cycles());
}

/// One group per shape, one function per crate that can express it.
macro_rules! group {
    ($c:ident, $name:literal, $f:ident, [$(($label:literal, $m:ident)),* $(,)?]) => {{
        let mut g = $c.benchmark_group($name);
        $(g.bench_function($label, |b| b.iter($m::$f));)*
        g.finish();
    }};
}

const ALL: &str = "rc, strata_gc, rust_cc, dumpster, bacon_rajan_cc, gc";

pub fn refcell_shapes(c: &mut Criterion) {
    group!(c, "refcell_tree_build_walk_drop", run_refcell_tree, [
        ("rc_refcell", rc),
        ("strata_gc", strata),
        ("rust_cc", rust_cc_impl),
        ("dumpster", dumpster_impl),
        ("bacon_rajan_cc", bacon_impl),
        ("gc", gc_impl),
    ]);
    group!(c, "weak_parent_tree_build_walk_up_drop", run_weak_parent_tree, [
        ("rc_refcell", rc),
        ("strata_gc", strata),
        ("bacon_rajan_cc", bacon_impl),
    ]);
    {
        // Upgrade-heavy: the tree is built once; only the leaf-to-root
        // walks (2^12 leaves x 13 upgrades) are measured.
        let mut g = c.benchmark_group("weak_upgrade_walk_leaf_to_root");
        macro_rules! walk {
            ($label:literal, $m:ident) => {{
                let (root, leaves) = $m::parent_tree();
                g.bench_function($label, |b| {
                    b.iter(|| $m::walk_leaves_to_root(std::hint::black_box(&leaves)))
                });
                drop((root, leaves));
            }};
        }
        walk!("rc_refcell", rc);
        walk!("strata_gc", strata);
        walk!("bacon_rajan_cc", bacon_impl);
        strata_gc::collect();
        bacon_rajan_cc::collect_cycles();
        g.finish();
    }
    group!(c, "refcell_dlist_weak_back", run_dlist_weak_back, [
        ("rc_refcell", rc),
        ("strata_gc", strata),
        ("bacon_rajan_cc", bacon_impl),
    ]);
    {
        let mut g = c.benchmark_group("refcell_dlist_strong_back");
        g.bench_function("rc_weak_back", |b| b.iter(rc::run_dlist_weak_back));
        g.bench_function("strata_gc", |b| b.iter(strata::run_dlist_strong_back));
        g.bench_function("rust_cc", |b| b.iter(rust_cc_impl::run_dlist_strong_back));
        g.bench_function("dumpster", |b| {
            b.iter(dumpster_impl::run_dlist_strong_back)
        });
        g.bench_function("bacon_rajan_cc", |b| {
            b.iter(bacon_impl::run_dlist_strong_back)
        });
        g.bench_function("gc", |b| b.iter(gc_impl::run_dlist_strong_back));
        g.finish();
    }
    // No rust-cc row: its strong count is 14 bits, so the 16 383rd clone
    // panics ("Too many references has been created to a single Cc").
    group!(c, "fan_in_100k_clones_of_one", run_fan_in, [
        ("rc_refcell", rc),
        ("strata_gc", strata),
        ("dumpster", dumpster_impl),
        ("bacon_rajan_cc", bacon_impl),
        ("gc", gc_impl),
    ]);
}

/// Young two-node `RefCell` cycles churned with `old` long-lived tracked
/// nodes in the heap vs none, at full size and at a tenth (old objects and
/// churn both scaled). The ratio old/none should not depend on the size.
pub fn old_young_refcell(c: &mut Criterion) {
    for (size, old_n, young_n) in [
        ("full", OLD_FULL, YOUNG_FULL),
        ("tenth", OLD_FULL / 10, YOUNG_FULL / 10),
    ] {
        let mut g = c.benchmark_group(format!("old_young_refcell_{size}"));
        macro_rules! pair {
            ($label:literal, $m:ident, $collect:expr) => {
                for old in [0, old_n] {
                    let keep = $m::old_objects(old);
                    $collect;
                    g.bench_with_input(
                        BenchmarkId::new(concat!($label, "/old"), old),
                        &young_n,
                        |b, &n| b.iter(|| $m::young_churn(n)),
                    );
                    drop(std::hint::black_box(keep));
                    $collect;
                }
            };
        }
        pair!("strata_gc", strata, strata_gc::collect());
        pair!("rust_cc", rust_cc_impl, rust_cc::collect_cycles());
        pair!("dumpster", dumpster_impl, dumpster::unsync::collect());
        pair!("bacon_rajan_cc", bacon_impl, bacon_rajan_cc::collect_cycles());
        pair!("gc", gc_impl, gc::force_collect());
        g.finish();
    }
}

/// Environment variable naming the crate whose tree a child process builds
/// for the peak-RSS measurement.
const RSS_CHILD_VAR: &str = "STRATA_GC_BENCH_RSS_CHILD";
const RSS_BENCH_ID: &str = "peak_rss_refcell_tree";

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In a child process (the variable is set): build, walk and keep the
/// tree of one crate, print the growth of peak RSS in bytes, and return
/// true so `main` exits without running criterion.
pub fn rss_child() -> bool {
    let Ok(which) = std::env::var(RSS_CHILD_VAR) else {
        return false;
    };
    let depth: u32 = std::env::var("STRATA_GC_BENCH_RSS_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(RSS_TREE_DEPTH);
    let before = status_kib("VmRSS:");
    macro_rules! measure {
        ($m:ident) => {{
            let t = $m::build_tree(depth);
            std::hint::black_box($m::walk_tree(&t));
            let peak = status_kib("VmHWM:");
            drop(std::hint::black_box(t));
            peak
        }};
    }
    let peak = match which.as_str() {
        "rc_refcell" => measure!(rc),
        "strata_gc" => measure!(strata),
        "rust_cc" => measure!(rust_cc_impl),
        "dumpster" => measure!(dumpster_impl),
        "bacon_rajan_cc" => measure!(bacon_impl),
        "gc" => measure!(gc_impl),
        _ => 0,
    };
    println!("{}", peak.saturating_sub(before) * 1024);
    true
}

include!("filter.rs");

/// Peak RSS of a `RefCell` tree (2^21 - 1 nodes, built and walked as in
/// `refcell_tree_build_walk_drop`) per crate, each built in a fresh child
/// process of this bench binary: growth of `VmHWM` over the `VmRSS` before
/// building, and the ratio to `Rc<RefCell>`. Not a criterion bench (a
/// size, not a time); printed as `peak_rss_refcell_tree/<crate>`.
pub fn peak_rss_report() {
    if !selected(RSS_BENCH_ID) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let depth = if std::env::args().any(|a| a == "--test") {
        10
    } else {
        RSS_TREE_DEPTH
    };
    let nodes = (1u64 << (depth + 1)) - 1;
    let mut rc_bytes = 0u64;
    for which in ALL.split(", ") {
        let label = if which == "rc" { "rc_refcell" } else { which };
        let out = std::process::Command::new(&exe)
            .env(RSS_CHILD_VAR, label)
            .env("STRATA_GC_BENCH_RSS_DEPTH", depth.to_string())
            .output();
        let bytes: u64 = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            _ => 0,
        };
        if label == "rc_refcell" {
            rc_bytes = bytes;
        }
        let ratio = if rc_bytes > 0 {
            format!("{:.3}x rc_refcell", bytes as f64 / rc_bytes as f64)
        } else {
            "n/a".to_string()
        };
        println!(
            "{RSS_BENCH_ID}/{label:<16} peak RSS growth {:>8.1} MiB  {:>6.1} B/node  {ratio}",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / nodes as f64,
        );
    }
}
