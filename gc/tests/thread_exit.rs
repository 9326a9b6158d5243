//! The collection a thread runs when it exits: garbage cycles it leaves
//! behind are freed, as CPython collects once more at shutdown.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strata_gc::{Finalize, Gc, Trace};

/// A node that counts its drops into a counter shared across threads.
#[derive(Trace, Finalize)]
struct Node {
    next: RefCell<Option<Gc<Node>>>,
    #[trace(skip)]
    drops: Arc<AtomicUsize>,
    #[trace(skip)]
    panic_on_drop: bool,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_drop {
            panic!("Node::drop panics on purpose");
        }
    }
}

/// Leave `n` garbage two-node cycles behind, fewer than the threshold, so
/// no automatic collection frees them.
fn leave_cycles(n: usize, drops: &Arc<AtomicUsize>, panic_on_drop: bool) {
    let node = || {
        Gc::new(Node {
            next: RefCell::new(None),
            drops: drops.clone(),
            panic_on_drop,
        })
    };
    for _ in 0..n {
        let a = node();
        let b = node();
        *a.next.borrow_mut() = Some(b.clone());
        *b.next.borrow_mut() = Some(a);
    }
}

#[test]
fn garbage_cycles_are_collected_when_their_thread_exits() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || {
        leave_cycles(10, &d, false);
        assert_eq!(d.load(Ordering::SeqCst), 0, "below the threshold");
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 20);
}

#[test]
fn a_panicking_drop_at_thread_exit_does_not_abort() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || leave_cycles(1, &d, true))
        .join()
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 2, "both values were dropped");
}

#[test]
#[cfg_attr(miri, ignore = "leaks the cycle on purpose")]
fn a_disabled_collector_collects_nothing_at_thread_exit() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || {
        strata_gc::disable();
        leave_cycles(1, &d, false);
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
}

#[test]
#[cfg_attr(miri, ignore = "leaks the cycle on purpose")]
fn saveall_at_thread_exit_keeps_the_garbage_alive() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || {
        leave_cycles(1, &d, false);
        strata_gc::set_debug(strata_gc::DebugFlags::SAVEALL);
        // The garbage list is made after the exit collection was set up,
        // so it is destroyed first.
        assert!(strata_gc::garbage().is_empty());
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
}

#[test]
fn cycles_left_by_a_later_thread_local_destructor_are_collected() {
    thread_local! {
        static HOLDER: RefCell<Option<Gc<Node>>> = const { RefCell::new(None) };
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || {
        // First use before the first tracked object: HOLDER's destructor
        // runs after the exit collection, and only then do `a` and `b`
        // become garbage.
        HOLDER.with(|_| ());
        let node = || {
            Gc::new(Node {
                next: RefCell::new(None),
                drops: d.clone(),
                panic_on_drop: false,
            })
        };
        let (a, b) = (node(), node());
        *a.next.borrow_mut() = Some(b.clone());
        *b.next.borrow_mut() = Some(a.clone());
        HOLDER.with(|h| *h.borrow_mut() = Some(a));
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}
