//! Unit tests of the sync collector, small enough for Miri. The collector
//! is process-wide, so each test takes `SERIAL`, automatic collections are
//! off (each test decides when a collection runs), and tests check what
//! they made through drop counters, not through totals other tests could
//! add to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::{collect, Gc, Weak};
use crate::collector::events::Phase;
use crate::header::Visitor;
use crate::trace::{Finalize, Trace};
use strata_gc_derive::Trace;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    super::set_threshold(0);
    guard
}

/// Counts its drops in a shared counter.
struct Drops(Arc<AtomicUsize>);

impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: owns no `Gc`.
unsafe impl Trace for Drops {
    const MAY_CONTAIN_GC: bool = false;
    fn trace(&self, _: &mut Visitor) {}
}
impl Finalize for Drops {
    const NEEDS_FINALIZE: bool = false;
}

#[derive(Trace)]
struct Node {
    next: Mutex<Option<Gc<Node>>>,
    drops: Drops,
}

fn node(counter: &Arc<AtomicUsize>) -> Gc<Node> {
    Gc::new(Node {
        next: Mutex::new(None),
        drops: Drops(counter.clone()),
    })
}

fn link(from: &Gc<Node>, to: &Gc<Node>) {
    *from.next.lock().unwrap() = Some(to.clone());
}

/// Two nodes in a cycle `a <-> b`.
fn cycle(c: &Arc<AtomicUsize>) -> (Gc<Node>, Gc<Node>) {
    let (a, b) = (node(c), node(c));
    link(&a, &b);
    link(&b, &a);
    (a, b)
}

fn dropped(c: &Arc<AtomicUsize>) -> usize {
    c.load(Ordering::SeqCst)
}

#[test]
fn acyclic_values_drop_with_their_last_handle() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let a = node(&c);
    let b = node(&c);
    link(&a, &b);
    drop(b);
    assert_eq!(dropped(&c), 0, "a still owns b");
    drop(a);
    assert_eq!(dropped(&c), 2, "a chain goes with its head, no collection");
}

#[test]
fn a_two_node_cycle_is_collected_and_its_weak_handles_cleared() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let (a, b) = cycle(&c);
    let w = Gc::downgrade(&a);
    drop((a, b));
    assert_eq!(
        dropped(&c),
        0,
        "a cycle outlives its handles until collected"
    );
    assert!(collect() >= 2);
    assert_eq!(dropped(&c), 2);
    assert!(w.upgrade().is_none());
    assert_eq!(w.strong_count(), 0);
}

#[test]
fn a_cycle_reachable_from_a_handle_survives_collection() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let (a, b) = cycle(&c);
    drop(b);
    collect();
    assert_eq!(dropped(&c), 0, "a is held by the test, b by a");
    assert_eq!(Gc::strong_count(&a), 2, "the collector's hold is gone");
    let b = a.next.lock().unwrap().clone().unwrap();
    drop(a);
    drop(b);
    collect();
    assert_eq!(dropped(&c), 2);
}

#[test]
fn a_cycle_whose_lock_is_held_is_kept_until_the_next_collection() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let a = node(&c);
    link(&a, &a);
    // SAFETY: the self-edge keeps the value alive until the collector frees
    // it, which must not happen while the guard below borrows it (Miri
    // would report the use after free).
    let value: &Node = unsafe { &*Gc::as_ptr(&a) };
    let guard = value.next.lock().unwrap();
    drop(a);
    collect();
    assert_eq!(dropped(&c), 0, "an object whose lock is taken is a root");
    assert!(guard.is_some());
    drop(guard);
    collect();
    assert_eq!(dropped(&c), 1);
}

#[test]
fn counts_and_unique_access_follow_arc() {
    let _s = serial();
    let mut a = Gc::new(Mutex::new(5_u32));
    assert_eq!(Gc::strong_count(&a), 1);
    *Gc::get_mut(&mut a).unwrap().get_mut().unwrap() = 6;
    let b = a.clone();
    assert!(Gc::get_mut(&mut a).is_none(), "two handles");
    assert_eq!(Gc::strong_count(&a), 2);
    let w: Weak<Mutex<u32>> = Gc::downgrade(&a);
    assert_eq!(Gc::weak_count(&a), 1);
    drop(b);
    assert!(Gc::get_mut(&mut a).is_none(), "a weak handle exists");
    drop(w);
    let a = match Gc::try_unwrap(a) {
        Ok(m) => m,
        Err(_) => panic!("the only handle unwraps"),
    };
    assert_eq!(a.into_inner().unwrap(), 6);
}

#[test]
fn try_unwrap_refuses_a_shared_value_and_weak_handles_then_fail() {
    let _s = serial();
    let a = Gc::new(RwLock::new(String::from("x")));
    let b = a.clone();
    let a = Gc::try_unwrap(a).unwrap_err();
    drop(b);
    let w = Gc::downgrade(&a);
    let inner = Gc::into_inner(a).unwrap();
    assert_eq!(*inner.read().unwrap(), "x");
    assert!(w.upgrade().is_none());
}

/// A finalizer that checks PEP 442's order and may resurrect its object.
#[derive(Trace)]
#[trace(finalize)]
struct Phoenix {
    me: Mutex<Option<Gc<Phoenix>>>,
    weak_seen_in_finalizer: Mutex<Option<Weak<Phoenix>>>,
    resurrect: bool,
    drops: Drops,
}

static SAVED: Mutex<Vec<Gc<Phoenix>>> = Mutex::new(Vec::new());
static UPGRADED_IN_FINALIZER: AtomicUsize = AtomicUsize::new(0);

impl Finalize for Phoenix {
    fn finalize(&self) {
        let w = self.weak_seen_in_finalizer.lock().unwrap().take();
        if w.and_then(|w| w.upgrade()).is_some() {
            UPGRADED_IN_FINALIZER.fetch_add(1, Ordering::SeqCst);
        }
        if self.resurrect {
            let me = self.me.lock().unwrap().clone().unwrap();
            SAVED.lock().unwrap().push(me);
        }
    }
}

fn phoenix(c: &Arc<AtomicUsize>, resurrect: bool) -> (Gc<Phoenix>, Weak<Phoenix>) {
    let p = Gc::new(Phoenix {
        me: Mutex::new(None),
        weak_seen_in_finalizer: Mutex::new(None),
        resurrect,
        drops: Drops(c.clone()),
    });
    *p.me.lock().unwrap() = Some(p.clone());
    let w = Gc::downgrade(&p);
    *p.weak_seen_in_finalizer.lock().unwrap() = Some(w.clone());
    (p, w)
}

#[test]
fn weak_handles_are_cleared_before_finalizers_run() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let before = UPGRADED_IN_FINALIZER.load(Ordering::SeqCst);
    let (p, w) = phoenix(&c, false);
    drop(p);
    collect();
    assert_eq!(dropped(&c), 1);
    assert_eq!(UPGRADED_IN_FINALIZER.load(Ordering::SeqCst), before);
    assert!(w.upgrade().is_none());
}

#[test]
fn a_resurrected_object_lives_and_only_new_weak_handles_upgrade() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let (p, old_weak) = phoenix(&c, true);
    drop(p);
    collect();
    assert_eq!(dropped(&c), 0, "the finalizer saved it");
    assert!(
        old_weak.upgrade().is_none(),
        "weak handles of the collection stay dead"
    );
    let saved = SAVED.lock().unwrap().pop().unwrap();
    let new_weak = Gc::downgrade(&saved);
    assert!(new_weak.upgrade().is_some());
    // Finalizers run once: the next collection frees it for good.
    drop(saved);
    collect();
    assert_eq!(dropped(&c), 1);
    assert!(new_weak.upgrade().is_none());
}

/// Reaches another object of its garbage from `Drop`.
#[derive(Trace)]
struct Peeker {
    other: Mutex<Option<Gc<Peeker>>>,
}

impl Drop for Peeker {
    fn drop(&mut self) {
        if let Some(o) = self.other.get_mut().unwrap().as_ref() {
            // Panics if the collector already dropped `o`'s value.
            let _ = o.other.try_lock().is_ok();
        }
    }
}

#[test]
fn a_drop_reaching_dropped_garbage_panics_instead_of_reading_it() {
    let _s = serial();
    let a = Gc::new(Peeker {
        other: Mutex::new(None),
    });
    let b = Gc::new(Peeker {
        other: Mutex::new(Some(a.clone())),
    });
    *a.other.lock().unwrap() = Some(b.clone());
    drop((a, b));
    let outcome = std::panic::catch_unwind(collect);
    let message = outcome.expect_err("the second drop reaches a dropped value");
    let message = message
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| message.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("already dropped"), "{message}");
    // The collection finished: nothing is left to collect.
    assert_eq!(collect(), 0);
}

#[test]
fn a_long_chain_drops_without_recursing() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let n = if cfg!(miri) { 200 } else { 200_000 };
    let pending = super::count();
    let mut head = node(&c);
    for _ in 1..n {
        let new = node(&c);
        *new.next.lock().unwrap() = Some(head);
        head = new;
    }
    assert_eq!(super::count(), pending, "moving handles makes no candidate");
    drop(head);
    assert_eq!(dropped(&c), n);
}

#[test]
fn a_long_cycle_is_collected() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let n = if cfg!(miri) { 100 } else { 100_000 };
    let head = node(&c);
    let mut tail = head.clone();
    for _ in 1..n {
        let next = node(&c);
        link(&tail, &next);
        tail = next;
    }
    link(&tail, &head);
    drop((head, tail));
    collect();
    assert_eq!(dropped(&c), n);
}

#[test]
fn a_cycle_freed_across_threads_is_collected() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let (a, b) = cycle(&c);
    let t = std::thread::spawn(move || {
        drop(b);
        collect()
    });
    t.join().unwrap();
    drop(a);
    collect();
    assert_eq!(dropped(&c), 2);
}

#[test]
fn survivors_become_old_and_wait_for_a_full_collection() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let (a, b) = cycle(&c);
    drop(b);
    collect(); // a, b survive and become old
    drop(a);
    assert_eq!(
        super::collect::collect(super::collect::Trigger::Automatic),
        0,
        "a young collection leaves old candidates for a full one"
    );
    assert_eq!(dropped(&c), 0);
    collect();
    assert_eq!(dropped(&c), 2);
}

#[test]
fn a_young_cycle_closed_through_an_old_object_is_found_by_the_next_full_collection() {
    let _s = serial();
    let c = Arc::new(AtomicUsize::new(0));
    let y = node(&c);
    drop(y.clone());
    collect(); // y survives (the test holds it): old, and no candidate
    let x = node(&c);
    link(&y, &x);
    *x.next.lock().unwrap() = Some(y); // moved: y is still no candidate
    drop(x); // x, young, is the only candidate of the cycle x <-> y
    super::collect::collect(super::collect::Trigger::Automatic);
    assert_eq!(
        dropped(&c),
        0,
        "a young collection leaves y out, so x looks referenced"
    );
    collect();
    assert_eq!(
        dropped(&c),
        2,
        "x waited, a candidate, for the full collection"
    );
}

#[test]
fn callbacks_see_each_collection_and_stats_add_up() {
    let _s = serial();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let handle = super::add_callback(move |phase, info| {
        if phase == Phase::Stop {
            s2.fetch_add(info.collected, Ordering::SeqCst);
        }
    });
    let before = super::stats();
    let c = Arc::new(AtomicUsize::new(0));
    let a = node(&c);
    link(&a, &a);
    drop(a);
    let found = collect();
    assert!(handle.remove());
    assert_eq!(seen.load(Ordering::SeqCst), found);
    let after = super::stats();
    assert_eq!(after.collections, before.collections + 1);
    assert_eq!(after.full_collections, before.full_collections + 1);
    assert_eq!(after.collected, before.collected + found);
    assert!(after.scanned > before.scanned);
}
