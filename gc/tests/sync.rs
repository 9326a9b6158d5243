//! `strata_gc::sync` under real threads: graphs shared and mutated by
//! several threads while collections run, automatic collections, deep
//! graphs. Every node counts its drop in a per-test ledger, so a node
//! dropped twice, dropped while reachable (its value read after the drop)
//! or never dropped fails the test.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;

use proptest::prelude::*;
use strata_gc::sync::{self, Gc, Weak};
use strata_gc::{Finalize, Trace};

/// One entry per node made: `true` once dropped.
#[derive(Default)]
struct Ledger {
    dropped: Mutex<Vec<bool>>,
    alive: AtomicUsize,
}

impl Ledger {
    fn enter(self: &Arc<Self>) -> Entry {
        let mut d = self.dropped.lock().unwrap();
        d.push(false);
        self.alive.fetch_add(1, Ordering::SeqCst);
        Entry {
            id: d.len() - 1,
            ledger: self.clone(),
            live: AtomicBool::new(true),
        }
    }

    fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

/// A node's ledger entry; reading it after its drop fails the test.
struct Entry {
    id: usize,
    ledger: Arc<Ledger>,
    live: AtomicBool,
}

impl Entry {
    fn check(&self) {
        assert!(
            self.live.load(Ordering::SeqCst),
            "node {} read after its drop",
            self.id
        );
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.live.store(false, Ordering::SeqCst);
        let mut d = self.ledger.dropped.lock().unwrap();
        assert!(!d[self.id], "node {} dropped twice", self.id);
        d[self.id] = true;
        self.ledger.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: owns no `Gc`.
unsafe impl Trace for Entry {
    const MAY_CONTAIN_GC: bool = false;
    fn trace(&self, _: &mut strata_gc::Visitor) {}
}
impl Finalize for Entry {
    const NEEDS_FINALIZE: bool = false;
}

#[derive(Trace)]
struct Node {
    edges: Mutex<Vec<Gc<Node>>>,
    back: RwLock<Option<Weak<Node>>>,
    entry: Entry,
}

fn node(ledger: &Arc<Ledger>) -> Gc<Node> {
    Gc::new(Node {
        edges: Mutex::new(Vec::new()),
        back: RwLock::new(None),
        entry: ledger.enter(),
    })
}

/// A small deterministic generator (no test dependency needed for it).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Collect until the ledger says everything is dropped (a background
/// collection may hold some nodes for a moment), at most a few rounds.
fn collect_all(ledger: &Ledger) {
    for _ in 0..10 {
        sync::collect();
        if ledger.alive() == 0 {
            return;
        }
    }
    panic!("{} nodes outlived their last handle", ledger.alive());
}

const THREADS: usize = 4;

/// The shared pool through which threads pass handles to each other.
type Pool = Arc<Vec<Mutex<Option<Gc<Node>>>>>;

fn pool() -> Pool {
    Arc::new((0..16).map(|_| Mutex::new(None)).collect())
}

/// One step of a mutator: `kind` picks the operation, `x` and `y` the
/// nodes (of this thread's handles) or the pool slot it applies to.
fn step(kind: u8, x: usize, y: usize, mine: &mut Vec<Gc<Node>>, pool: &Pool, ledger: &Arc<Ledger>) {
    if mine.is_empty() || kind < 2 {
        mine.push(node(ledger));
        return;
    }
    let (a, b) = (x % mine.len(), y % mine.len());
    match kind {
        // A strong edge between two of mine (cycles too).
        2 => {
            let to = mine[b].clone();
            mine[a].edges.lock().unwrap().push(to);
        }
        // Walk an edge, keeping what it leads to.
        3 => {
            mine[a].entry.check();
            let next = mine[a].edges.lock().unwrap().last().cloned();
            if let Some(n) = next {
                n.entry.check();
                mine.push(n);
            }
        }
        // Publish to, or take from, the shared pool.
        4 => {
            let slot = &pool[y % pool.len()];
            let old = slot.lock().unwrap().replace(mine.swap_remove(a));
            mine.extend(old);
        }
        // A weak back edge, and an upgrade of one.
        5 => {
            *mine[a].back.write().unwrap() = Some(Gc::downgrade(&mine[b]));
            let back = mine[b].back.read().unwrap().clone();
            if let Some(up) = back.and_then(|w| w.upgrade()) {
                up.entry.check();
                mine.push(up);
            }
        }
        // Cut an edge.
        6 => drop(mine[a].edges.lock().unwrap().pop()),
        _ => drop(mine.swap_remove(a)),
    }
    if mine.len() > 64 {
        mine.truncate(32);
    }
}

/// Runs `THREADS` mutators, each applying its steps, while another thread
/// collects in a loop; then checks that every node was dropped exactly
/// once after the last handle went.
fn run_mutators(steps: Vec<Vec<(u8, usize, usize)>>) {
    let ledger = Arc::new(Ledger::default());
    let pool = pool();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n == 0 {
                sync::collect();
                n += 1;
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = steps
        .into_iter()
        .map(|steps| {
            let (ledger, pool) = (ledger.clone(), pool.clone());
            thread::spawn(move || {
                let mut mine = Vec::new();
                for (kind, x, y) in steps {
                    step(kind, x, y, &mut mine, &pool, &ledger);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    collector.join().unwrap();
    for slot in pool.iter() {
        slot.lock().unwrap().take();
    }
    collect_all(&ledger);
    assert!(ledger.dropped.lock().unwrap().iter().all(|&d| d));
}

/// A long stress: threads share a pool of nodes and keep re-wiring them
/// (adding and removing strong edges, setting weak back edges, upgrading
/// them, passing handles to each other through the shared pool) while
/// another thread collects in a loop. No node may be read after its drop,
/// none dropped twice, and all are dropped once the last handle is gone.
#[test]
fn threads_rewiring_a_shared_graph_while_collections_run() {
    let rounds = if cfg!(miri) { 30 } else { 200_000 };
    let steps = (0..THREADS as u64)
        .map(|t| {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
            (0..rounds)
                .map(|_| (rng.below(8) as u8, rng.below(64), rng.below(64)))
                .collect()
        })
        .collect();
    run_mutators(steps);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The drop-counter property across threads, on generated programs:
    /// no node leaks, none is dropped twice or read after its drop.
    #[test]
    fn every_node_dropped_exactly_once_across_threads(
        steps in prop::collection::vec(
            prop::collection::vec((0..8u8, 0..64usize, 0..64usize), 0..if cfg!(miri) { 20 } else { 400 }),
            THREADS,
        )
    ) {
        run_mutators(steps);
    }
}

/// Automatic collections start by themselves once enough candidates pile
/// up, on the collector's own thread.
#[test]
#[cfg_attr(miri, ignore = "no automatic collections under Miri")]
fn cycles_are_collected_without_asking() {
    let ledger = Arc::new(Ledger::default());
    let before = sync::stats().collections;
    let n = 20 * sync::threshold().max(1);
    for _ in 0..n {
        let a = node(&ledger);
        let b = node(&ledger);
        a.edges.lock().unwrap().push(b.clone());
        b.edges.lock().unwrap().push(a);
    }
    // Each cycle made one candidate; the collector thread was rung.
    let mut waited = 0;
    while sync::stats().collections == before && waited < 500 {
        thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    assert!(
        sync::stats().collections > before,
        "no automatic collection ran"
    );
    assert!(
        ledger.alive() < 2 * n,
        "automatic collections freed nothing"
    );
    collect_all(&ledger);
}

/// A million-node list and a million-node cycle are freed without deep
/// recursion on any thread.
#[test]
fn deep_graphs_are_freed_without_recursion() {
    let ledger = Arc::new(Ledger::default());
    let n = if cfg!(miri) { 300 } else { 1_000_000 };
    let mut head = node(&ledger);
    let last = head.clone();
    for _ in 1..n {
        let new = node(&ledger);
        new.edges.lock().unwrap().push(head);
        head = new;
    }
    // As a list: dropped by the last handle, on another thread.
    let list_head = head.clone();
    drop(last);
    thread::spawn(move || drop(list_head)).join().unwrap();
    assert_eq!(ledger.alive(), n, "`head` still owns the list");
    drop(head);
    collect_all(&ledger);

    // As a cycle: freed by the collector.
    let first = node(&ledger);
    let mut head = first.clone();
    for _ in 1..n {
        let new = node(&ledger);
        new.edges.lock().unwrap().push(head);
        head = new;
    }
    first.edges.lock().unwrap().push(head);
    drop(first);
    collect_all(&ledger);
}

/// Threads upgrade weak handles to a cycle while it becomes garbage: each
/// upgrade either fails or gives a live value.
#[test]
fn upgrades_racing_the_collection_of_their_target() {
    let rounds = if cfg!(miri) { 3 } else { 300 };
    for _ in 0..rounds {
        let ledger = Arc::new(Ledger::default());
        let a = node(&ledger);
        let b = node(&ledger);
        a.edges.lock().unwrap().push(b.clone());
        b.edges.lock().unwrap().push(a.clone());
        let weak = Gc::downgrade(&b);
        drop((a, b));
        let upgraders: Vec<_> = (0..2)
            .map(|_| {
                let weak = weak.clone();
                thread::spawn(move || {
                    for _ in 0..50 {
                        match weak.upgrade() {
                            Some(b) => b.entry.check(),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        sync::collect();
        for u in upgraders {
            u.join().unwrap();
        }
        collect_all(&ledger);
        assert!(weak.upgrade().is_none());
    }
}
