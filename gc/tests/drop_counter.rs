//! Drop-counter harness: every object is dropped exactly once — no leak, no
//! double drop, no premature drop — across random graphs, random mutation,
//! random thresholds and random collections (proptest). Graphs mix mutable
//! nodes (`Obj`, always tracked) with immutable ones (`Imm`, untracked when
//! they reference only untracked nodes, re-tracked by `Gc::get_mut`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use proptest::prelude::*;
use strata_gc::{Finalize, Gc, Trace};

/// Per-object drop counts, indexed by object id.
#[derive(Default)]
struct Ledger {
    drops: RefCell<Vec<u32>>,
    finalized: RefCell<Vec<u32>>,
}

thread_local! {
    /// Objects resurrected by finalizers.
    static STASH: RefCell<Vec<Gc<Obj>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Trace)]
#[trace(finalize)]
struct Obj {
    edges: RefCell<Vec<Gc<Obj>>>,
    imms: RefCell<Vec<Gc<Imm>>>,
    #[trace(skip)]
    id: usize,
    #[trace(skip)]
    ledger: Rc<Ledger>,
    #[trace(skip)]
    resurrect: Cell<bool>,
}

impl Finalize for Obj {
    fn finalize(&self) {
        self.ledger.finalized.borrow_mut()[self.id] += 1;
        // Every edge must still be intact while finalizers run.
        for e in self.edges.borrow().iter() {
            assert!(!Gc::is_dropped(e), "finalizer saw a dropped object");
            let _ = e.id;
        }
        if self.resurrect.replace(false) {
            if let Some(me) = self.edges.borrow().iter().find(|e| e.id == self.id) {
                STASH.with(|s| s.borrow_mut().push(me.clone()));
            }
        }
    }
}

/// An immutable node: its edges are fixed at creation (or changed through
/// `Gc::get_mut`).
#[derive(Trace, Finalize)]
struct Imm {
    objs: Vec<Gc<Obj>>,
    imms: Vec<Gc<Imm>>,
    #[trace(skip)]
    id: usize,
    #[trace(skip)]
    ledger: Rc<Ledger>,
}

impl Drop for Imm {
    fn drop(&mut self) {
        let mut d = self.ledger.drops.borrow_mut();
        d[self.id] += 1;
        assert_eq!(d[self.id], 1, "object {} dropped twice", self.id);
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        let mut d = self.ledger.drops.borrow_mut();
        d[self.id] += 1;
        assert_eq!(d[self.id], 1, "object {} dropped twice", self.id);
    }
}

#[derive(Clone, Debug)]
enum Op {
    New {
        resurrect: bool,
    },
    Edge {
        from: usize,
        to: usize,
    },
    SelfEdge {
        at: usize,
    },
    ClearEdges {
        at: usize,
    },
    DropRoot {
        at: usize,
    },
    CloneRoot {
        at: usize,
    },
    Collect {
        generation: usize,
    },
    Threshold {
        t0: usize,
    },
    ReleaseStash,
    NewImm {
        obj: Option<usize>,
        imm: Option<usize>,
    },
    ObjToImm {
        from: usize,
        to: usize,
    },
    MutateImm {
        at: usize,
        to: usize,
    },
    DropImm {
        at: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(|r| Op::New { resurrect: r }),
        5 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::Edge { from, to }),
        1 => any::<usize>().prop_map(|at| Op::SelfEdge { at }),
        1 => any::<usize>().prop_map(|at| Op::ClearEdges { at }),
        3 => any::<usize>().prop_map(|at| Op::DropRoot { at }),
        1 => any::<usize>().prop_map(|at| Op::CloneRoot { at }),
        1 => (0..3_usize).prop_map(|generation| Op::Collect { generation }),
        1 => (0..12_usize).prop_map(|t0| Op::Threshold { t0 }),
        1 => Just(Op::ReleaseStash),
        3 => (any::<Option<usize>>(), any::<Option<usize>>())
            .prop_map(|(obj, imm)| Op::NewImm { obj, imm }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::ObjToImm { from, to }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(at, to)| Op::MutateImm { at, to }),
        2 => any::<usize>().prop_map(|at| Op::DropImm { at }),
    ]
}

/// Dereference everything reachable from the roots: panics if the collector
/// dropped anything still reachable.
fn check_reachable(roots: &[Gc<Obj>], imm_roots: &[Gc<Imm>], ledger: &Ledger) {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<Gc<Obj>> = roots.to_vec();
    let mut imm_stack: Vec<Gc<Imm>> = imm_roots.to_vec();
    let alive = |id: usize| {
        assert_eq!(
            ledger.drops.borrow()[id],
            0,
            "reachable object {id} was dropped"
        )
    };
    while !stack.is_empty() || !imm_stack.is_empty() {
        if let Some(o) = stack.pop() {
            if seen.insert(Gc::as_ptr(&o) as usize) {
                alive(o.id);
                stack.extend(o.edges.borrow().iter().cloned());
                imm_stack.extend(o.imms.borrow().iter().cloned());
            }
        }
        if let Some(i) = imm_stack.pop() {
            if seen.insert(Gc::as_ptr(&i) as usize) {
                alive(i.id);
                // An immutable node is tracked exactly when it may be part
                // of a cycle: when it references a tracked node.
                let refs_tracked = !i.objs.is_empty() || i.imms.iter().any(strata_gc::is_tracked);
                if refs_tracked {
                    assert!(strata_gc::is_tracked(&i), "imm {} not tracked", i.id);
                }
                stack.extend(i.objs.iter().cloned());
                imm_stack.extend(i.imms.iter().cloned());
            }
        }
    }
}

fn run(ops: Vec<Op>) {
    strata_gc::collect();
    let ledger = Rc::new(Ledger::default());
    let mut roots: Vec<Gc<Obj>> = Vec::new();
    let mut imm_roots: Vec<Gc<Imm>> = Vec::new();
    let mut created = 0;
    for op in ops {
        match op {
            Op::New { resurrect } => {
                ledger.drops.borrow_mut().push(0);
                ledger.finalized.borrow_mut().push(0);
                roots.push(Gc::new(Obj {
                    edges: RefCell::new(Vec::new()),
                    imms: RefCell::new(Vec::new()),
                    id: created,
                    ledger: ledger.clone(),
                    resurrect: Cell::new(resurrect),
                }));
                created += 1;
            }
            Op::Edge { from, to } if !roots.is_empty() => {
                let to = roots[to % roots.len()].clone();
                roots[from % roots.len()].edges.borrow_mut().push(to);
            }
            Op::SelfEdge { at } if !roots.is_empty() => {
                let r = roots[at % roots.len()].clone();
                r.edges.borrow_mut().push(r.clone());
            }
            Op::ClearEdges { at } if !roots.is_empty() => {
                let r = roots[at % roots.len()].clone();
                let old = std::mem::take(&mut *r.edges.borrow_mut());
                drop(old);
            }
            Op::DropRoot { at } if !roots.is_empty() => {
                let i = at % roots.len();
                roots.swap_remove(i);
            }
            Op::CloneRoot { at } if !roots.is_empty() => {
                let r = roots[at % roots.len()].clone();
                roots.push(r);
            }
            Op::Collect { generation } => {
                strata_gc::collect_generation(generation).unwrap();
            }
            Op::Threshold { t0 } => strata_gc::set_threshold(t0, 2, 2),
            Op::ReleaseStash => {
                let s = STASH.with(|s| std::mem::take(&mut *s.borrow_mut()));
                drop(s);
            }
            Op::NewImm { obj, imm } => {
                ledger.drops.borrow_mut().push(0);
                ledger.finalized.borrow_mut().push(0);
                let pick = |i: Option<usize>, len: usize| i.filter(|_| len > 0).map(|i| i % len);
                imm_roots.push(Gc::new(Imm {
                    objs: pick(obj, roots.len())
                        .map(|i| roots[i].clone())
                        .into_iter()
                        .collect(),
                    imms: pick(imm, imm_roots.len())
                        .map(|i| imm_roots[i].clone())
                        .into_iter()
                        .collect(),
                    id: created,
                    ledger: ledger.clone(),
                }));
                created += 1;
            }
            Op::ObjToImm { from, to } if !roots.is_empty() && !imm_roots.is_empty() => {
                let to = imm_roots[to % imm_roots.len()].clone();
                roots[from % roots.len()].imms.borrow_mut().push(to);
            }
            Op::MutateImm { at, to } if !roots.is_empty() && !imm_roots.is_empty() => {
                let at = at % imm_roots.len();
                if let Some(mut m) = Gc::get_mut(&mut imm_roots[at]) {
                    m.objs.push(roots[to % roots.len()].clone());
                }
            }
            Op::DropImm { at } if !imm_roots.is_empty() => {
                let i = at % imm_roots.len();
                imm_roots.swap_remove(i);
            }
            _ => {}
        }
        check_reachable(&roots, &imm_roots, &ledger);
    }
    strata_gc::set_threshold(700, 10, 10);
    drop(roots);
    drop(imm_roots);
    // Resurrected objects come back once at most (finalizers run once).
    for _ in 0..3 {
        strata_gc::collect();
        let s = STASH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        drop(s);
    }
    strata_gc::collect();
    let drops = ledger.drops.borrow();
    for (id, &d) in drops.iter().enumerate() {
        assert_eq!(d, 1, "object {id} dropped {d} times (leak if 0)");
    }
    for (id, &f) in ledger.finalized.borrow().iter().enumerate() {
        assert!(f <= 1, "object {id} finalized {f} times");
    }
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        // Miri's isolation has no current directory to persist failures in.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            ProptestConfig::default().failure_persistence
        },
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_object_dropped_exactly_once(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 300 })) {
        run(ops);
    }
}

#[test]
fn fixed_scenario_with_resurrection() {
    run(vec![
        Op::New { resurrect: true },
        Op::New { resurrect: false },
        Op::SelfEdge { at: 0 },
        Op::Edge { from: 0, to: 1 },
        Op::Edge { from: 1, to: 0 },
        Op::DropRoot { at: 0 },
        Op::DropRoot { at: 0 },
        Op::Collect { generation: 2 },
        Op::ReleaseStash,
        Op::Collect { generation: 2 },
    ]);
}

/// An immutable node re-tracked by `get_mut` closes a cycle through a
/// mutable node; the cycle is still collected.
#[test]
fn fixed_scenario_with_retracked_immutable_node() {
    run(vec![
        Op::New { resurrect: false },
        Op::NewImm {
            obj: None,
            imm: None,
        },
        Op::MutateImm { at: 0, to: 0 },
        Op::ObjToImm { from: 0, to: 0 },
        Op::DropRoot { at: 0 },
        Op::DropImm { at: 0 },
        Op::Collect { generation: 0 },
    ]);
}
