// The body of the strata-gc benchmarks, shared by `gc.rs` (system
// allocator) and `gc_on_strata.rs` (strata-alloc as global allocator).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};

const TREE_DEPTH: u32 = 14;
const PARENT_TREE_DEPTH: u32 = 12;
const LIST_LEN: usize = 10_000;
const PAIRS: usize = 1_000_000;
const OLD_OBJECTS: usize = 1_000_000;
const YOUNG_PAIRS: usize = 20_000;
const MANUAL_COLLECT_EVERY: usize = 350;

/// Shared bench bodies for a pointer `P`, cell `C`, and collector call.
macro_rules! scenarios {
    (auto_collect = $auto:expr, collect = $collect:expr) => {
        pub fn binary_tree(depth: u32) -> P<Tree> {
            if depth == 0 {
                P::new(Tree { l: None, r: None })
            } else {
                P::new(Tree {
                    l: Some(binary_tree(depth - 1)),
                    r: Some(binary_tree(depth - 1)),
                })
            }
        }

        pub fn parent_tree(parent: &P<PNode>, depth: u32) {
            if depth == 0 {
                return;
            }
            for _ in 0..2 {
                let kid = P::new(PNode {
                    parent: C::new(Some(parent.clone())),
                    kids: C::new(Vec::new()),
                });
                parent_tree(&kid, depth - 1);
                parent.kids.borrow_mut().push(kid);
            }
        }

        pub fn run_binary_tree() {
            drop(std::hint::black_box(binary_tree(super::TREE_DEPTH)));
            $collect;
        }

        pub fn run_parent_tree() {
            let root = P::new(PNode {
                parent: C::new(None),
                kids: C::new(Vec::new()),
            });
            parent_tree(&root, super::PARENT_TREE_DEPTH);
            drop(root);
            $collect;
        }

        pub fn run_dlist() {
            let head = P::new(DNode {
                prev: C::new(None),
                next: C::new(None),
            });
            let mut tail = head.clone();
            for _ in 0..super::LIST_LEN {
                let n = P::new(DNode {
                    prev: C::new(Some(tail.clone())),
                    next: C::new(None),
                });
                *tail.next.borrow_mut() = Some(n.clone());
                tail = n;
            }
            drop((head, tail));
            $collect;
        }

        pub fn make_pair() {
            let a = P::new(Pair {
                other: C::new(None),
            });
            let b = P::new(Pair {
                other: C::new(Some(a.clone())),
            });
            *a.other.borrow_mut() = Some(b);
        }

        pub fn run_pairs() {
            for _ in 0..super::PAIRS {
                make_pair();
            }
            $collect;
        }

        pub fn old_objects(n: usize) -> Vec<P<Pair>> {
            (0..n)
                .map(|_| {
                    P::new(Pair {
                        other: C::new(None),
                    })
                })
                .collect()
        }

        pub fn run_young_churn() {
            for i in 0..super::YOUNG_PAIRS {
                make_pair();
                if !$auto && i % super::MANUAL_COLLECT_EVERY == 0 {
                    $collect;
                }
            }
        }
    };
}

mod strata {
    use std::cell::RefCell as C;
    use strata_gc::{Finalize, Gc as P, Trace};

    #[derive(Trace, Finalize)]
    pub struct Tree {
        l: Option<P<Tree>>,
        r: Option<P<Tree>>,
    }
    #[derive(Trace, Finalize)]
    pub struct PNode {
        parent: C<Option<P<PNode>>>,
        kids: C<Vec<P<PNode>>>,
    }
    #[derive(Trace, Finalize)]
    pub struct DNode {
        prev: C<Option<P<DNode>>>,
        next: C<Option<P<DNode>>>,
    }
    #[derive(Trace, Finalize)]
    pub struct Pair {
        other: C<Option<P<Pair>>>,
    }
    scenarios!(auto_collect = true, collect = strata_gc::collect());
}

mod rust_cc_impl {
    use rust_cc::{Cc as P, Finalize, Trace};
    use std::cell::RefCell as C;

    #[derive(Trace, Finalize)]
    pub struct Tree {
        l: Option<P<Tree>>,
        r: Option<P<Tree>>,
    }
    #[derive(Trace, Finalize)]
    pub struct PNode {
        parent: C<Option<P<PNode>>>,
        kids: C<Vec<P<PNode>>>,
    }
    #[derive(Trace, Finalize)]
    pub struct DNode {
        prev: C<Option<P<DNode>>>,
        next: C<Option<P<DNode>>>,
    }
    #[derive(Trace, Finalize)]
    pub struct Pair {
        other: C<Option<P<Pair>>>,
    }
    scenarios!(auto_collect = true, collect = rust_cc::collect_cycles());
}

mod dumpster_impl {
    use dumpster::unsync::Gc as P;
    use dumpster::Trace;
    use std::cell::RefCell as C;

    #[derive(Trace)]
    pub struct Tree {
        l: Option<P<Tree>>,
        r: Option<P<Tree>>,
    }
    #[derive(Trace)]
    pub struct PNode {
        parent: C<Option<P<PNode>>>,
        kids: C<Vec<P<PNode>>>,
    }
    #[derive(Trace)]
    pub struct DNode {
        prev: C<Option<P<DNode>>>,
        next: C<Option<P<DNode>>>,
    }
    #[derive(Trace)]
    pub struct Pair {
        other: C<Option<P<Pair>>>,
    }
    scenarios!(auto_collect = true, collect = dumpster::unsync::collect());
}

mod bacon_impl {
    use bacon_rajan_cc::{Cc as P, Trace, Tracer};
    use std::cell::RefCell as C;

    pub struct Tree {
        l: Option<P<Tree>>,
        r: Option<P<Tree>>,
    }
    impl Trace for Tree {
        fn trace(&self, t: &mut Tracer) {
            self.l.trace(t);
            self.r.trace(t);
        }
    }
    pub struct PNode {
        parent: C<Option<P<PNode>>>,
        kids: C<Vec<P<PNode>>>,
    }
    impl Trace for PNode {
        fn trace(&self, t: &mut Tracer) {
            self.parent.trace(t);
            self.kids.trace(t);
        }
    }
    pub struct DNode {
        prev: C<Option<P<DNode>>>,
        next: C<Option<P<DNode>>>,
    }
    impl Trace for DNode {
        fn trace(&self, t: &mut Tracer) {
            self.prev.trace(t);
            self.next.trace(t);
        }
    }
    pub struct Pair {
        other: C<Option<P<Pair>>>,
    }
    impl Trace for Pair {
        fn trace(&self, t: &mut Tracer) {
            self.other.trace(t);
        }
    }
    scenarios!(
        auto_collect = false,
        collect = bacon_rajan_cc::collect_cycles()
    );
}

mod gc_impl {
    use gc::{Finalize, Gc as P, GcCell as C, Trace};

    #[derive(Trace, Finalize)]
    pub struct Tree {
        l: Option<P<Tree>>,
        r: Option<P<Tree>>,
    }
    #[derive(Trace, Finalize)]
    pub struct PNode {
        parent: C<Option<P<PNode>>>,
        kids: C<Vec<P<PNode>>>,
    }
    #[derive(Trace, Finalize)]
    pub struct DNode {
        prev: C<Option<P<DNode>>>,
        next: C<Option<P<DNode>>>,
    }
    #[derive(Trace, Finalize)]
    pub struct Pair {
        other: C<Option<P<Pair>>>,
    }
    scenarios!(auto_collect = true, collect = gc::force_collect());
}

/// `Rc` baseline: back edges are `Weak`, so nothing needs collecting.
#[allow(dead_code)]
mod rc {
    use std::cell::RefCell as C;
    use std::rc::{Rc as P, Weak};

    pub struct Tree {
        l: Option<P<Tree>>,
        r: Option<P<Tree>>,
    }
    pub struct PNode {
        parent: C<Option<Weak<PNode>>>,
        kids: C<Vec<P<PNode>>>,
    }
    pub struct DNode {
        prev: C<Option<Weak<DNode>>>,
        next: C<Option<P<DNode>>>,
    }
    pub struct Pair {
        other: C<Option<Weak<Pair>>>,
    }

    pub fn binary_tree(depth: u32) -> P<Tree> {
        if depth == 0 {
            P::new(Tree { l: None, r: None })
        } else {
            P::new(Tree {
                l: Some(binary_tree(depth - 1)),
                r: Some(binary_tree(depth - 1)),
            })
        }
    }
    pub fn run_binary_tree() {
        drop(std::hint::black_box(binary_tree(super::TREE_DEPTH)));
    }
    fn parent_tree(parent: &P<PNode>, depth: u32) {
        if depth == 0 {
            return;
        }
        for _ in 0..2 {
            let kid = P::new(PNode {
                parent: C::new(Some(P::downgrade(parent))),
                kids: C::new(Vec::new()),
            });
            parent_tree(&kid, depth - 1);
            parent.kids.borrow_mut().push(kid);
        }
    }
    pub fn run_parent_tree() {
        let root = P::new(PNode {
            parent: C::new(None),
            kids: C::new(Vec::new()),
        });
        parent_tree(&root, super::PARENT_TREE_DEPTH);
        let _ = root.parent.borrow().is_some();
    }
    pub fn run_dlist() {
        let head = P::new(DNode {
            prev: C::new(None),
            next: C::new(None),
        });
        let mut tail = head.clone();
        for _ in 0..super::LIST_LEN {
            let n = P::new(DNode {
                prev: C::new(Some(P::downgrade(&tail))),
                next: C::new(None),
            });
            *tail.next.borrow_mut() = Some(n.clone());
            tail = n;
        }
        let _ = tail.prev.borrow().is_some();
        // Unlink iteratively: Rc's recursive drop would overflow on long lists.
        let mut cur = Some(head);
        while let Some(n) = cur {
            cur = n.next.borrow_mut().take();
        }
    }
    pub fn make_pair() {
        let a = P::new(Pair {
            other: C::new(None),
        });
        let b = P::new(Pair {
            other: C::new(Some(P::downgrade(&a))),
        });
        *a.other.borrow_mut() = Some(P::downgrade(&b));
        let _ = b.other.borrow().is_some();
    }
    pub fn run_pairs() {
        for _ in 0..super::PAIRS {
            make_pair();
        }
    }
    pub fn old_objects(n: usize) -> Vec<P<Pair>> {
        (0..n)
            .map(|_| {
                P::new(Pair {
                    other: C::new(None),
                })
            })
            .collect()
    }
    pub fn run_young_churn() {
        for _ in 0..super::YOUNG_PAIRS {
            make_pair();
        }
    }
}

macro_rules! for_all {
    ($group:ident, $name:literal, $f:ident) => {{
        let mut g = $group.benchmark_group($name);
        g.bench_function("rc", |b| b.iter(rc::$f));
        g.bench_function("strata_gc", |b| b.iter(strata::$f));
        g.bench_function("rust_cc", |b| b.iter(rust_cc_impl::$f));
        g.bench_function("dumpster", |b| b.iter(dumpster_impl::$f));
        g.bench_function("bacon_rajan_cc", |b| b.iter(bacon_impl::$f));
        g.bench_function("gc", |b| b.iter(gc_impl::$f));
        g.finish();
    }};
}

/// Untracked values (`MAY_CONTAIN_GC = false`): `Gc<String>` must cost what
/// `Rc<String>` costs. Create, clone and drop `UNTRACKED_N` strings.
const UNTRACKED_N: usize = 10_000;

macro_rules! untracked_body {
    ($p:ty, $new:path) => {{
        let v: Vec<$p> = (0..UNTRACKED_N).map(|i| $new(i.to_string())).collect();
        let w: Vec<$p> = v.iter().cloned().collect();
        drop(black_box(v));
        drop(black_box(w));
    }};
}

fn untracked(c: &mut Criterion) {
    let mut g = c.benchmark_group("untracked_string");
    // Run last (see `criterion_group!`): the first functions of a run
    // measure a cold process and skew a ratio this close to 1.
    g.bench_function("strata_gc", |b| {
        b.iter(|| untracked_body!(strata_gc::Gc<String>, strata_gc::Gc::new))
    });
    g.bench_function("rc", |b| {
        b.iter(|| untracked_body!(std::rc::Rc<String>, std::rc::Rc::new))
    });
    g.finish();
}

fn structures(c: &mut Criterion) {
    for_all!(c, "binary_tree", run_binary_tree);
    for_all!(c, "parent_pointer_tree", run_parent_tree);
    for_all!(c, "doubly_linked_list", run_dlist);
    for_all!(c, "two_node_cycles", run_pairs);
}

macro_rules! old_young {
    ($g:ident, $label:literal, $m:ident, $collect:expr) => {
        for old in [0, OLD_OBJECTS] {
            let keep = $m::old_objects(old);
            $collect;
            $g.bench_with_input(BenchmarkId::new($label, old), &old, |b, _| {
                b.iter($m::run_young_churn)
            });
            drop(black_box(keep));
            $collect;
        }
    };
}

fn old_young(c: &mut Criterion) {
    let mut g = c.benchmark_group("old_young");
    old_young!(g, "rc", rc, black_box(()));
    old_young!(g, "strata_gc", strata, strata_gc::collect());
    old_young!(g, "rust_cc", rust_cc_impl, rust_cc::collect_cycles());
    old_young!(g, "dumpster", dumpster_impl, dumpster::unsync::collect());
    old_young!(
        g,
        "bacon_rajan_cc",
        bacon_impl,
        bacon_rajan_cc::collect_cycles()
    );
    old_young!(g, "gc", gc_impl, gc::force_collect());
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

/// The shapes of issue 15 (`RefCell` graphs as users write them).
mod shapes {
    include!("shapes.rs");
}

criterion_group! {
    name = benches;
    config = config();
    targets = structures, old_young, shapes::refcell_shapes, shapes::old_young_refcell, untracked
}

// `criterion_main!` plus the peak-RSS report, whose children are this
// binary with `STRATA_GC_BENCH_RSS_CHILD` set.
fn main() {
    if shapes::rss_child() {
        return;
    }
    benches();
    shapes::peak_rss_report();
    Criterion::default().configure_from_args().final_summary();
}
