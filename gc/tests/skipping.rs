//! Young collections are skipped (everything promoted without tracing) while
//! no young object has had its strong count decremented to a non-zero value
//! since a collection last examined it: such a generation holds no garbage.
//! A skipped collection still counts as a collection.
//! Each test runs on its own thread, hence with its own collector.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use strata_gc::{collect, collect_generation, Finalize, Gc, Phase, Trace, Visitor};

thread_local! {
    /// Number of `Node::trace` calls on this thread.
    static TRACES: Cell<usize> = const { Cell::new(0) };
}

fn traces() -> usize {
    TRACES.with(Cell::get)
}

/// A node with a parent and children (like the parent-pointer tree) that
/// counts how often the collector traces it.
#[derive(Default)]
struct Node {
    parent: RefCell<Option<Gc<Node>>>,
    kids: RefCell<Vec<Gc<Node>>>,
}

impl Finalize for Node {
    const NEEDS_FINALIZE: bool = false;
}

// SAFETY: visits each owned Gc once, like the derive.
unsafe impl Trace for Node {
    fn trace(&self, v: &mut Visitor) {
        TRACES.with(|t| t.set(t.get() + 1));
        self.parent.trace(v);
        self.kids.trace(v);
    }
}

fn node(parent: Option<&Gc<Node>>) -> Gc<Node> {
    Gc::new(Node {
        parent: RefCell::new(parent.cloned()),
        kids: RefCell::default(),
    })
}

/// A parent-pointer tree built without dropping any handle.
fn tree(root: &Gc<Node>, depth: u32) {
    if depth == 0 {
        return;
    }
    for _ in 0..2 {
        let kid = node(Some(root));
        tree(&kid, depth - 1);
        root.kids.borrow_mut().push(kid);
    }
}

#[test]
fn young_collection_without_decrements_is_skipped_but_counted() {
    collect();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let cb = strata_gc::add_callback(move |phase, info| {
        if info.generation == 0 && phase == Phase::Stop {
            assert_eq!(info.collected, 0);
            c.set(c.get() + 1);
        }
    });
    let before = strata_gc::stats();
    let root = node(None);
    tree(&root, 4);
    let t = traces();
    assert_eq!(collect_generation(0), Ok(0));
    assert_eq!(traces(), t, "nothing traced");
    assert_eq!(strata_gc::stats()[0].collections, before[0].collections + 1);
    assert_eq!(calls.get(), 1);
    assert_eq!(strata_gc::count(), (0, 1, 0));
    assert_eq!(strata_gc::generation_sizes(), [0, 31, 0]);
    assert_eq!(strata_gc::generation_of(&root), Some(1));
    // The same for generation 1.
    assert_eq!(collect_generation(1), Ok(0));
    assert_eq!(traces(), t);
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 31]);
    // Full collections always trace; dropping the root makes the tree
    // garbage.
    drop(root);
    assert_eq!(collect(), 31);
    assert!(traces() > t);
    cb.remove();
}

#[test]
fn automatic_young_collections_are_skipped_while_building() {
    collect();
    strata_gc::set_threshold(10, 10, 10);
    let before = strata_gc::stats()[0].collections;
    let t = traces();
    let root = node(None);
    tree(&root, 6);
    assert!(strata_gc::stats()[0].collections >= before + 10);
    assert_eq!(traces(), t);
    strata_gc::set_threshold(700, 10, 10);
    drop(root);
    assert_eq!(collect(), 127);
}

#[test]
fn young_cycle_is_collected_once_a_member_is_decremented() {
    collect();
    let a = node(None);
    let b = node(Some(&a));
    a.kids.borrow_mut().push(b.clone());
    drop(b); // 2 -> 1: b turns purple
    drop(a);
    let t = traces();
    assert_eq!(collect_generation(0), Ok(2));
    assert!(traces() > t);
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}

#[test]
fn survivors_decremented_after_promotion_are_collected() {
    collect();
    let a = node(None);
    let b = node(Some(&a));
    a.kids.borrow_mut().push(b.clone());
    drop(a.clone()); // a turns purple: the next collection traces
    let t = traces();
    assert_eq!(collect_generation(0), Ok(0));
    assert!(traces() > t);
    assert_eq!(strata_gc::generation_of(&a), Some(1));
    // That collection unflagged what it examined: a new object created
    // without decrements makes the next one skip again.
    let c = node(None);
    let t = traces();
    assert_eq!(collect_generation(0), Ok(0));
    assert_eq!(traces(), t);
    // Dropping the handles now flags a and b; generation 1 finds the cycle.
    drop((a, b));
    assert_eq!(collect_generation(1), Ok(2));
    assert!(traces() > t);
    drop(c);
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}

#[test]
fn old_garbage_waits_for_its_generation() {
    // A cycle that becomes garbage in generation 2 is only found by a full
    // collection, skipped young collections or not.
    collect();
    let a = node(None);
    let b = node(Some(&a));
    a.kids.borrow_mut().push(b.clone());
    collect();
    drop((a, b));
    assert_eq!(collect_generation(0), Ok(0));
    assert_eq!(collect_generation(1), Ok(0));
    assert_eq!(collect(), 2);
}

#[test]
fn resurrected_objects_are_collected_by_a_young_collection_later() {
    thread_local! {
        static STASH: RefCell<Vec<Gc<Phoenix>>> = const { RefCell::new(Vec::new()) };
    }
    #[derive(Trace)]
    #[trace(finalize)]
    struct Phoenix {
        me: RefCell<Option<Gc<Phoenix>>>,
        #[trace(skip)]
        rose: Cell<bool>,
    }
    impl Finalize for Phoenix {
        fn finalize(&self) {
            if !self.rose.replace(true) {
                let me = self.me.borrow().clone().unwrap();
                STASH.with(|s| s.borrow_mut().push(me));
            }
        }
    }
    collect();
    let p = Gc::new(Phoenix {
        me: RefCell::new(None),
        rose: Cell::new(false),
    });
    *p.me.borrow_mut() = Some(p.clone());
    drop(p);
    assert_eq!(collect_generation(0), Ok(1));
    assert_eq!(strata_gc::generation_sizes(), [0, 1, 0]);
    // Releasing the stash leaves the (finalized) cycle as garbage again.
    STASH.with(|s| s.borrow_mut().clear());
    assert_eq!(collect_generation(1), Ok(1));
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}
