//! Untracking of objects that can never be part of a cycle (CPython's
//! untracked tuples): immutable values (`Trace::INTERIOR_MUTABLE = false`)
//! whose referents are all untracked are never linked into a generation.

use std::cell::RefCell;

use strata_gc::{collect, is_tracked, DynTrace, Finalize, Gc, Trace, Visitor, Weak};

/// Immutable binary tree node.
#[derive(Trace, Finalize)]
struct Tree {
    l: Option<Gc<Tree>>,
    r: Option<Gc<Tree>>,
}

/// Mutable node.
#[derive(Trace, Finalize)]
struct Cell {
    next: RefCell<Option<Gc<Cell>>>,
    tree: RefCell<Option<Gc<Imm>>>,
}

/// Immutable node that may point at mutable ones.
#[derive(Trace, Finalize)]
struct Imm {
    cell: Option<Gc<Cell>>,
    tree: Option<Gc<Tree>>,
}

fn tree(depth: u32) -> Gc<Tree> {
    if depth == 0 {
        Gc::new(Tree { l: None, r: None })
    } else {
        Gc::new(Tree {
            l: Some(tree(depth - 1)),
            r: Some(tree(depth - 1)),
        })
    }
}

fn cell() -> Gc<Cell> {
    Gc::new(Cell {
        next: RefCell::new(None),
        tree: RefCell::new(None),
    })
}

// The constant is computed at compile time.
#[derive(Trace, Finalize)]
struct Boxed {
    kids: Vec<Boxed>,
    next: Option<Box<Boxed>>,
    leaf: Option<Gc<Tree>>,
}

#[derive(Trace, Finalize)]
struct BoxedCell {
    next: Option<Box<BoxedCell>>,
    cell: RefCell<Vec<Gc<Tree>>>,
}

#[derive(Trace, Finalize)]
struct Generic<T> {
    item: T,
    kids: Vec<Gc<Generic<T>>>,
}

#[derive(Trace, Finalize)]
#[trace(tracked)]
struct Forced(Option<Gc<Tree>>);

struct Manual(Option<Gc<Tree>>);
impl Finalize for Manual {}
// SAFETY: visits its one Gc.
unsafe impl Trace for Manual {
    fn trace(&self, v: &mut Visitor) {
        self.0.trace(v)
    }
}

const _: () = {
    assert!(!Tree::INTERIOR_MUTABLE && Tree::MAY_CONTAIN_GC);
    assert!(Cell::INTERIOR_MUTABLE);
    assert!(!Imm::INTERIOR_MUTABLE);
    assert!(!Boxed::INTERIOR_MUTABLE);
    assert!(BoxedCell::INTERIOR_MUTABLE);
    assert!(!Generic::<u8>::INTERIOR_MUTABLE);
    assert!(Generic::<RefCell<Option<Gc<Tree>>>>::INTERIOR_MUTABLE);
    assert!(!Generic::<RefCell<String>>::INTERIOR_MUTABLE);
    assert!(Forced::INTERIOR_MUTABLE);
    assert!(Manual::INTERIOR_MUTABLE, "hand-written impls stay tracked");
    assert!(!<Gc<Cell> as Trace>::INTERIOR_MUTABLE, "Gc is shallow");
    assert!(<Box<dyn DynTrace> as Trace>::INTERIOR_MUTABLE);
    assert!(!<String as Trace>::INTERIOR_MUTABLE);
};

#[test]
fn trees_of_immutable_nodes_are_untracked() {
    collect();
    let before = strata_gc::count();
    let t = tree(6);
    assert!(!is_tracked(&t));
    assert!(!is_tracked(t.l.as_ref().unwrap()));
    assert_eq!(strata_gc::generation_of(&t), None);
    assert_eq!(
        strata_gc::count(),
        before,
        "untracked objects are not counted"
    );
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
    let b = Gc::new(Boxed {
        kids: Vec::new(),
        next: None,
        leaf: Some(t.clone()),
    });
    assert!(!is_tracked(&b));
    let m = Gc::new(Manual(Some(t)));
    assert!(is_tracked(&m));
}

#[test]
fn mutable_nodes_and_holders_of_tracked_nodes_are_tracked() {
    collect();
    let c = cell();
    assert!(is_tracked(&c));
    let i = Gc::new(Imm {
        cell: Some(c.clone()),
        tree: None,
    });
    assert!(is_tracked(&i), "points to a tracked node");
    let j = Gc::new(Imm {
        cell: None,
        tree: Some(tree(2)),
    });
    assert!(!is_tracked(&j));
    let k = Gc::new(Imm {
        cell: None,
        tree: None,
    });
    assert!(!is_tracked(&k));
    // An immutable node above a tracked immutable node is tracked too.
    let outer = Gc::new(Generic {
        item: Some(i.clone()),
        kids: Vec::new(),
    });
    assert!(is_tracked(&outer));
    let top = Gc::new(Generic {
        item: None,
        kids: vec![outer],
    });
    assert!(is_tracked(&top));
    let g = Gc::new(Generic {
        item: RefCell::new(None::<Gc<Tree>>),
        kids: Vec::new(),
    });
    assert!(is_tracked(&g));
}

#[test]
fn get_mut_retracks_and_the_cycle_it_closes_is_collected() {
    collect();
    let mut i = Gc::new(Imm {
        cell: None,
        tree: None,
    });
    assert!(!is_tracked(&i));
    let c = cell();
    Gc::get_mut(&mut i).unwrap().cell = Some(c.clone());
    assert!(is_tracked(&i));
    assert_eq!(strata_gc::generation_of(&i), Some(0));
    *c.tree.borrow_mut() = Some(i.clone()); // i -> c -> i
    let wi = Gc::downgrade(&i);
    drop((i, c));
    assert_eq!(collect(), 2);
    assert!(wi.upgrade().is_none());
}

#[test]
fn get_mut_through_dyn_retracks() {
    collect();
    let t = tree(1);
    let mut d: Gc<dyn DynTrace> = Gc::unsize(t, |x| x as &dyn DynTrace);
    assert!(!is_tracked(&d));
    drop(Gc::get_mut(&mut d).unwrap());
    assert!(is_tracked(&d));
    assert_eq!(strata_gc::objects_by_type().len(), 1);
    drop(d);
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}

#[test]
fn cycles_reached_from_immutable_nodes_are_collected() {
    collect();
    // untracked tree <- a <-> b, and a tracked immutable holder -> a.
    let t = tree(3);
    let wt = Gc::downgrade(&t);
    let a = cell();
    let b = cell();
    *a.next.borrow_mut() = Some(b.clone());
    *b.next.borrow_mut() = Some(a.clone());
    *a.tree.borrow_mut() = Some(Gc::new(Imm {
        cell: None,
        tree: Some(t),
    }));
    let holder = Gc::new(Imm {
        cell: Some(a.clone()),
        tree: None,
    });
    assert!(is_tracked(&holder));
    drop((a, b));
    assert_eq!(collect(), 0, "held by the immutable holder");
    drop(holder);
    // The holder goes by reference counting; the cycle needs the collector,
    // and the untracked tree it owns goes with it.
    assert!(wt.upgrade().is_some());
    assert_eq!(collect(), 2);
    assert!(wt.upgrade().is_none());
}

#[test]
fn new_cyclic_and_weak_back_edges_stay_untracked() {
    #[derive(Trace, Finalize)]
    struct Me {
        me: Weak<Me>,
        kid: Option<Gc<Tree>>,
    }
    let m = Gc::new_cyclic(|w| Me {
        me: w.clone(),
        kid: Some(tree(1)),
    });
    assert!(!is_tracked(&m));
    assert!(Gc::ptr_eq(&m.me.upgrade().unwrap(), &m));
    let c = Gc::new_cyclic(|_| Imm {
        cell: Some(cell()),
        tree: None,
    });
    assert!(is_tracked(&c));
}

#[test]
fn untracked_objects_are_not_in_introspection_or_freeze() {
    collect();
    let t = tree(2);
    assert!(strata_gc::objects_by_type().is_empty());
    assert!(strata_gc::referrers(t.l.as_ref().unwrap()).is_empty());
    assert_eq!(strata_gc::referents(&t).len(), 2);
    strata_gc::freeze();
    assert_eq!(strata_gc::freeze_count(), 0);
    strata_gc::unfreeze();
}

#[test]
fn long_untracked_chain_drops_without_recursion() {
    #[derive(Trace, Finalize)]
    struct Link(Option<Gc<Link>>);
    let n = if cfg!(miri) { 1_000 } else { 200_000 };
    let mut head = Gc::new(Link(None));
    for _ in 0..n {
        head = Gc::new(Link(Some(head)));
    }
    assert!(!is_tracked(&head));
    drop(head);
}

#[test]
fn weak_references_outlive_untracked_trees_of_any_height() {
    // Low objects are released on the fast path, tall ones (a few levels
    // up) through the trashcan; weak references to either must keep only
    // the box.
    thread_local!(static DROPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
    #[derive(Trace, Finalize)]
    struct Counted {
        l: Option<Gc<Counted>>,
        r: Option<Gc<Counted>>,
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.with(|d| d.set(d.get() + 1));
        }
    }
    fn counted(depth: u32) -> Gc<Counted> {
        let kid = || (depth > 0).then(|| counted(depth - 1));
        Gc::new(Counted { l: kid(), r: kid() })
    }
    let root = counted(10);
    assert!(!is_tracked(&root));
    let tall = Gc::downgrade(root.l.as_ref().unwrap().l.as_ref().unwrap());
    let mut leaf = &root;
    while let Some(l) = &leaf.l {
        leaf = l;
    }
    let leaf = Gc::downgrade(leaf);
    let root_weak = Gc::downgrade(&root);
    drop(root);
    assert_eq!(DROPS.with(|d| d.get()), (1 << 11) - 1);
    assert!(leaf.upgrade().is_none());
    assert!(tall.upgrade().is_none());
    assert!(root_weak.upgrade().is_none());
}
