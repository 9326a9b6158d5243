//! The `Rc` API that `Gc` mirrors: slices and strings (`From<Vec<T>>`,
//! `From<&[T]>`, `FromIterator`, `From<&str>`, `From<String>`, boxes),
//! `into_raw`/`from_raw` and `make_mut`. Each test runs on its own thread,
//! hence with its own collector.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use strata_gc::{collect, is_tracked, DynTrace, Gc, Trace};

/// Counts its drops (and clones) in a shared ledger.
#[derive(Trace)]
struct Counted {
    #[trace(skip)]
    drops: Rc<Cell<usize>>,
    #[trace(skip)]
    clones: Rc<Cell<usize>>,
    #[trace(skip)]
    value: u32,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.set(self.clones.get() + 1);
        Counted {
            drops: self.drops.clone(),
            clones: self.clones.clone(),
            value: self.value,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

fn counted(n: u32, drops: &Rc<Cell<usize>>, clones: &Rc<Cell<usize>>) -> Vec<Counted> {
    (0..n)
        .map(|value| Counted {
            drops: drops.clone(),
            clones: clones.clone(),
            value,
        })
        .collect()
}

#[test]
fn slices_from_vec_slice_box_and_iterator() {
    let (drops, clones) = (Rc::default(), Rc::default());
    let g: Gc<[Counted]> = Gc::from(counted(3, &drops, &clones));
    assert_eq!(g.len(), 3);
    assert_eq!(g[2].value, 2);
    assert_eq!(clones.get(), 0, "moved, not cloned");
    assert!(!is_tracked(&g), "elements hold no Gc");
    let h: Gc<[Counted]> = Gc::from(&g[..]);
    assert_eq!(clones.get(), 3);
    assert_eq!(h.iter().map(|c| c.value).sum::<u32>(), 3);
    drop((g, h));
    assert_eq!(drops.get(), 6, "every element dropped once");
    let b: Gc<[u8]> = Gc::from(vec![1_u8, 2].into_boxed_slice());
    assert_eq!(&b[..], [1, 2]);
    let it: Gc<[String]> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    assert_eq!(it.join(""), "ab");
    let empty: Gc<[u64]> = Gc::from(Vec::new());
    assert!(empty.is_empty());
    let w = Gc::downgrade(&it);
    assert_eq!(w.upgrade().unwrap()[1], "b");
    drop(it);
    assert!(w.upgrade().is_none());
}

/// A node whose edges are the cells of a `Gc` slice.
#[derive(Trace)]
struct Node {
    slots: Gc<[RefCell<Option<Gc<Node>>>]>,
    #[trace(skip)]
    drops: Rc<Cell<usize>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

fn node(drops: &Rc<Cell<usize>>, slots: usize) -> Gc<Node> {
    Gc::new(Node {
        slots: (0..slots).map(|_| RefCell::new(None)).collect(),
        drops: drops.clone(),
    })
}

#[test]
fn cycle_through_tracked_slices_is_collected() {
    collect();
    let drops = Rc::new(Cell::new(0));
    let a = node(&drops, 2);
    let b = node(&drops, 3);
    assert!(is_tracked(&a.slots), "cells of Gc are tracked");
    *a.slots[1].borrow_mut() = Some(b.clone());
    *b.slots[0].borrow_mut() = Some(a.clone());
    *b.slots[2].borrow_mut() = Some(b.clone());
    let referents = strata_gc::referents(&a.slots);
    assert_eq!(referents.len(), 1);
    assert_eq!(referents[0].address, Gc::as_ptr(&b) as usize);
    assert!(referents[0].type_name.ends_with("Node"));
    drop((a, b));
    // Two nodes and their two slices.
    assert_eq!(collect(), 4);
    assert_eq!(drops.get(), 2);
    // Freed by reference counting too (the statically typed release).
    let c = node(&drops, 1);
    drop(c);
    assert_eq!(drops.get(), 3);
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}

#[test]
fn over_aligned_tracked_slices() {
    #[derive(Trace)]
    #[repr(align(64))]
    struct Wide(RefCell<Option<Gc<Wide>>>);
    collect();
    let s: Gc<[Wide]> = Gc::from(vec![Wide(RefCell::new(None)), Wide(RefCell::new(None))]);
    assert_eq!(s.as_ptr() as usize % 64, 0);
    let t = Gc::new(Wide(RefCell::new(None)));
    *s[0].0.borrow_mut() = Some(t.clone());
    drop(t);
    drop(s);
    let u: Gc<[Wide]> = Gc::from(vec![Wide(RefCell::new(None))]);
    let back = Gc::new(Wide(RefCell::new(None)));
    *u[0].0.borrow_mut() = Some(back.clone());
    drop(u);
    drop(back);
    assert_eq!(collect(), 0);
    assert_eq!(strata_gc::generation_sizes(), [0, 0, 0]);
}

#[test]
fn immutable_slice_of_untracked_objects_is_untracked_until_get_mut() {
    collect();
    let leaf = Gc::new(1_u32);
    let mut s: Gc<[Option<Gc<u32>>]> = Gc::from(vec![Some(leaf.clone()), None]);
    assert!(!is_tracked(&s));
    Gc::get_mut(&mut s).unwrap()[1] = Some(leaf);
    assert!(is_tracked(&s));
    assert_eq!(s.iter().flatten().count(), 2);
}

#[test]
fn strings() {
    let a: Gc<str> = Gc::from("héllo");
    let b: Gc<str> = Gc::from(String::from("héllo"));
    let c: Gc<str> = Gc::from(Box::<str>::from("héllo"));
    assert_eq!(a, b);
    assert_eq!(&*c, "héllo");
    assert_eq!(format!("{a} {b:?}"), "héllo \"héllo\"");
    assert_eq!(a.len(), 6);
    assert!(!is_tracked(&a));
    let e: Gc<str> = Gc::from("");
    assert!(e.is_empty());
}

#[test]
fn from_box() {
    let (drops, clones) = (Rc::default(), Rc::default());
    let mut v = counted(1, &drops, &clones);
    let g: Gc<Counted> = Gc::from(Box::new(v.pop().unwrap()));
    assert_eq!(g.value, 0);
    drop(g);
    assert_eq!(drops.get(), 1);
    let n: Gc<Node> = Gc::from(Box::new(Node {
        slots: Gc::from(Vec::new()),
        drops: drops.clone(),
    }));
    assert!(is_tracked(&n));
}

#[test]
fn into_raw_and_from_raw() {
    let g = Gc::new(String::from("x"));
    let keep = g.clone();
    let p = Gc::into_raw(g);
    assert_eq!(Gc::strong_count(&keep), 2);
    // SAFETY: `p` is dereferenced while `keep` holds the value.
    assert_eq!(unsafe { &*p }, "x");
    // SAFETY: from `into_raw`, taken back once.
    let g = unsafe { Gc::from_raw(p) };
    assert!(Gc::ptr_eq(&g, &keep));
    drop(g);
    assert_eq!(Gc::strong_count(&keep), 1);

    // Tracked, over-aligned, unsized.
    #[derive(Trace)]
    #[repr(align(32))]
    struct Wide(RefCell<Option<Gc<Wide>>>);
    let w = Gc::new(Wide(RefCell::new(None)));
    *w.0.borrow_mut() = Some(w.clone());
    let weak = Gc::downgrade(&w);
    let p = Gc::into_raw(w);
    assert_eq!(collect(), 0, "the raw reference keeps it alive");
    // SAFETY: as above.
    let w = unsafe { Gc::from_raw(p) };
    drop(w);
    assert_eq!(collect(), 1);
    assert!(weak.upgrade().is_none());

    let s: Gc<[u16]> = Gc::from(vec![1, 2, 3]);
    // SAFETY: as above.
    let s = unsafe { Gc::from_raw(Gc::into_raw(s)) };
    assert_eq!(&s[..], [1, 2, 3]);
    let t: Gc<str> = Gc::from("str");
    // SAFETY: as above.
    let t = unsafe { Gc::from_raw(Gc::into_raw(t)) };
    assert_eq!(&*t, "str");
    let d: Gc<dyn DynTrace> = Gc::unsize(Gc::new(Wide(RefCell::new(None))), |x| x as &dyn DynTrace);
    // SAFETY: as above.
    let d = unsafe { Gc::from_raw(Gc::into_raw(d)) };
    assert!(is_tracked(&d));
}

#[test]
fn make_mut_is_clone_on_write() {
    let (drops, clones) = (Rc::default(), Rc::default());
    let mut v = counted(1, &drops, &clones);
    let mut a = Gc::new(v.pop().unwrap());
    let before = Gc::as_ptr(&a);
    Gc::make_mut(&mut a).value = 5;
    assert_eq!(Gc::as_ptr(&a), before, "unique: in place");
    assert_eq!(clones.get(), 0);
    let b = a.clone();
    Gc::make_mut(&mut a).value = 6;
    assert_eq!(clones.get(), 1, "shared: cloned");
    assert_eq!((a.value, b.value), (6, 5));
    assert!(!Gc::ptr_eq(&a, &b));
    drop(b);
    assert_eq!(drops.get(), 1);
    // Only weak pointers left: moved, not cloned, and they are cut off.
    let w = Gc::downgrade(&a);
    Gc::make_mut(&mut a).value = 7;
    assert_eq!(clones.get(), 1);
    assert!(w.upgrade().is_none());
    assert_eq!(a.value, 7);
    assert_eq!(Gc::weak_count(&a), 0);
    drop(w);
    drop(a);
    assert_eq!(drops.get(), 2);
}

/// The guard keeps the collector out of the value while its edges change.
#[test]
fn make_mut_on_tracked_values() {
    #[derive(Trace, Clone, Default)]
    struct Edges(Vec<Gc<RefCell<Option<Gc<Edges>>>>>);
    collect();
    let cell: Gc<RefCell<Option<Gc<Edges>>>> = Gc::new(RefCell::new(None));
    let mut e = Gc::new(Edges::default());
    let shared = e.clone();
    {
        let mut guard = Gc::make_mut(&mut e);
        guard.0.push(cell.clone());
        assert_eq!(collect(), 0);
    }
    assert_eq!(e.0.len(), 1);
    assert!(shared.0.is_empty());
    // e -> cell -> e: a cycle, collected once the handles are gone.
    *cell.borrow_mut() = Some(e.clone());
    drop((e, shared, cell));
    assert_eq!(collect(), 2);
}
