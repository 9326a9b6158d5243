//! The protocols of `strata_gc::sync`: a collection running while other
//! threads clone, drop, upgrade and re-wire the graph it scans. The models
//! run the real collector (its atomics, mutexes and thread-locals come from
//! loom under `--cfg loom`, see `gc/src/sync/shim.rs`); graph fields use
//! loom's mutex so that loom sees every lock the collector tries.
//!
//! Every model checks the two halves of soundness: nothing a thread can
//! still reach is dropped (each node's drop counter is read while a handle
//! is held, and dereferencing a node the collector dropped panics), and
//! nothing is leaked (once the threads are done and a last collection ran,
//! every node was dropped exactly once).
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use loom::sync::Mutex;
use loom::thread;
use strata_gc::sync::{self, Gc, Weak};
use strata_gc::{Finalize, Trace, Visitor};

/// Counts drops of the nodes of one execution.
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

fn node(c: &Arc<AtomicUsize>) -> Gc<Node> {
    Gc::new(Node {
        next: Mutex::new(None),
        drops: Drops(c.clone()),
    })
}

fn link(from: &Gc<Node>, to: &Gc<Node>) {
    *from.next.lock().unwrap() = Some(to.clone());
}

/// Two nodes in a cycle `a <-> b`, and the execution's drop counter.
fn cycle() -> (Gc<Node>, Gc<Node>, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    let (a, b) = (node(&c), node(&c));
    link(&a, &b);
    link(&b, &a);
    (a, b, c)
}

fn dropped(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// Property: a thread clones a handle into a candidate cycle and drops the
/// original while a collection scans it; the cycle stays alive as long as
/// the clone, and is freed after.
#[test]
fn clone_and_drop_racing_a_collection() {
    loom_tests::model(|| {
        let (a, b, c) = cycle();
        drop(b); // b is a candidate
        let collector = thread::spawn(|| {
            sync::collect();
        });
        let a2 = a.clone();
        drop(a);
        let b = a2.next.lock().unwrap().clone().unwrap();
        drop(a2);
        // Only `b`, cloned out of a's field while the collection ran, keeps
        // the cycle now.
        collector.join().unwrap();
        assert_eq!(dropped(&c), 0, "the cycle is reachable from b");
        assert!(b.next.lock().unwrap().is_some());
        drop(b);
        sync::collect();
        assert_eq!(dropped(&c), 2);
    });
}

/// Property: a thread moves the only outside handle into the cycle's own
/// field and another out of it while a collection scans (the edges change
/// under the scan only through locks it may hold); nothing reachable is
/// dropped, and the cycle is freed once unreachable.
#[test]
fn edges_rewired_under_a_collection() {
    loom_tests::model(|| {
        let (a, b, c) = cycle();
        drop(b);
        let collector = thread::spawn(|| {
            sync::collect();
        });
        // Take b out of a's field, then drop a: a is now reachable only
        // through b, which this thread holds.
        let b = a.next.lock().unwrap().take().unwrap();
        drop(a);
        let a = b.next.lock().unwrap().clone().unwrap();
        assert_eq!(dropped(&c), 0);
        drop(a);
        collector.join().unwrap();
        drop(b);
        sync::collect();
        assert_eq!(dropped(&c), 2);
    });
}

/// Property: a weak handle is upgraded, and a handle cloned out of the
/// upgraded node's field, while the collection decides their fate: the
/// upgrade either fails or gives a live value that stays alive while held
/// (held here until the collection is over); the cycle is freed either way.
#[test]
fn upgrade_racing_the_decision() {
    loom_tests::model(|| {
        let (a, b, c) = cycle();
        let w = Gc::downgrade(&a);
        drop((a, b));
        let collector = thread::spawn(|| {
            sync::collect();
        });
        let a = w.upgrade();
        let b = a.as_ref().map(|a| a.next.lock().unwrap().clone().unwrap());
        collector.join().unwrap();
        if let (Some(a), Some(b)) = (&a, &b) {
            assert_eq!(dropped(&c), 0, "an upgraded node and its cycle live");
            assert!(a.next.lock().unwrap().is_some());
            assert!(b.next.lock().unwrap().is_some());
        }
        drop((a, b));
        sync::collect();
        assert_eq!(dropped(&c), 2);
        assert!(w.upgrade().is_none());
    });
}

/// Property: two threads collect the same garbage at once; each node is
/// dropped exactly once.
#[test]
fn two_collections_at_once() {
    loom_tests::model(|| {
        let (a, b, c) = cycle();
        drop((a, b));
        let other = thread::spawn(|| {
            sync::collect();
        });
        sync::collect();
        other.join().unwrap();
        assert_eq!(dropped(&c), 2);
    });
}

/// Property: a release that finds its box already a candidate and one that
/// makes it one, both racing the collection that takes the candidates: no
/// release is lost between the push and the collector's hold, so the cycle
/// is found by the next collection at the latest. (Before the candidate
/// bit moved into the strong word, a drop that saw the box buffered could
/// land after the collector read the count, and the cycle leaked.)
#[test]
fn no_release_is_lost_between_push_and_hold() {
    loom_tests::model(|| {
        let (a, b, c) = cycle();
        let a2 = a.clone();
        drop(a2); // a is a candidate; a and b's field still hold it
        drop(b);
        let collector = thread::spawn(|| {
            sync::collect();
        });
        drop(a);
        collector.join().unwrap();
        sync::collect();
        assert_eq!(dropped(&c), 2, "the cycle leaked");
    });
}

/// Property: a weak handle is upgraded while another thread drops the last
/// strong handle (no collection involved): the upgrade fails, or it wins
/// and the value lives until the upgraded handle goes; dropped once.
#[test]
fn upgrade_racing_the_last_drop() {
    loom_tests::model(|| {
        let c = Arc::new(AtomicUsize::new(0));
        let a = node(&c);
        let w: Weak<Node> = Gc::downgrade(&a);
        let dropper = thread::spawn(move || drop(a));
        if let Some(a) = w.upgrade() {
            assert_eq!(dropped(&c), 0, "an upgraded value lives");
            assert!(a.next.lock().unwrap().is_none());
        }
        dropper.join().unwrap();
        assert_eq!(dropped(&c), 1);
        assert!(w.upgrade().is_none());
    });
}

/// LOCAL REPLICA, FOR THIS DEMONSTRATION ONLY: the last-release protocol
/// of `sync::Gc` (as of `Arc`) over loom's `UnsafeCell`, which loom tracks
/// (the real value is behind raw pointers loom cannot see). Each of two
/// handles writes its part of the value (as through a `Mutex` of its own)
/// and gives up its reference; the last one reads both parts to drop the
/// value. With the real orderings (Release decrement,
/// Acquire fence before the drop) the model passes; with a Relaxed
/// decrement and no fence, loom finds the drop reading a write it is not
/// ordered after.
mod last_release_replica {
    use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release};

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{fence, AtomicUsize};
    use loom::sync::Arc;
    use loom::thread;

    struct Shared {
        count: AtomicUsize,
        parts: [UnsafeCell<usize>; 2],
    }

    // SAFETY: the value is written by a handle's owner and read by the last
    // release; whether those are ordered is what the model checks.
    unsafe impl Sync for Shared {}

    fn release(s: &Shared, me: usize, decrement: Ordering, fence_before_drop: bool) {
        // SAFETY: see `Sync` above.
        s.parts[me].with_mut(|v| unsafe { *v = 1 });
        if s.count.fetch_sub(1, decrement) == 1 {
            if fence_before_drop {
                fence(Acquire);
            }
            // The drop: reads what every handle wrote.
            // SAFETY: see `Sync` above.
            let sum: usize = s.parts.iter().map(|p| p.with(|v| unsafe { *v })).sum();
            assert_eq!(sum, 2);
        }
    }

    fn run(decrement: Ordering, fence_before_drop: bool) {
        loom_tests::model(move || {
            let s = Arc::new(Shared {
                count: AtomicUsize::new(2),
                parts: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            let other = {
                let s = s.clone();
                thread::spawn(move || release(&s, 1, decrement, fence_before_drop))
            };
            release(&s, 0, decrement, fence_before_drop);
            other.join().unwrap();
        });
    }

    #[test]
    fn with_release_and_acquire_the_drop_sees_every_write() {
        run(Release, true);
    }

    #[test]
    #[should_panic(expected = "Causality violation")]
    fn with_relaxed_loom_finds_the_unordered_drop() {
        run(Relaxed, false);
    }
}
