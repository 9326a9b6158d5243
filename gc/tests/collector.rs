//! Behaviours of CPython's Lib/test/test_gc.py, ported to strata-gc.
//! Each test runs on its own thread, hence with its own collector.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use strata_gc::{
    collect, collect_generation, impl_dyn_trace, DebugFlags, DynTrace, Finalize, Gc, GcError,
    Phase, Trace, Weak,
};

/// A node with a list of children, like a Python list.
#[derive(Trace, Finalize, Default)]
struct List(RefCell<Vec<Gc<List>>>);

fn list() -> Gc<List> {
    Gc::new(List::default())
}

#[test]
fn self_loop_list() {
    collect();
    let l = list();
    l.0.borrow_mut().push(l.clone());
    drop(l);
    assert_eq!(collect(), 1);
}

#[test]
fn two_cycle() {
    collect();
    let a = list();
    let b = list();
    a.0.borrow_mut().push(b.clone());
    b.0.borrow_mut().push(a.clone());
    drop((a, b));
    assert_eq!(collect(), 2);
    assert_eq!(collect(), 0);
}

#[test]
fn reachable_cycle_is_kept() {
    collect();
    let a = list();
    let b = list();
    a.0.borrow_mut().push(b.clone());
    b.0.borrow_mut().push(a.clone());
    drop(b);
    assert_eq!(collect(), 0);
    assert_eq!(Gc::strong_count(&a), 2);
    a.0.borrow_mut().clear();
}

/// A cycle held only through its newest object, whose edges point back in
/// allocation order: the marking sweep passes the older objects before it
/// finds them reachable, so they must be marked from its stack.
#[test]
fn cycle_reached_through_backward_edges_is_kept() {
    collect();
    let a = list();
    let b = list();
    let c = list();
    b.0.borrow_mut().push(a.clone());
    c.0.borrow_mut().push(b.clone());
    a.0.borrow_mut().push(c.clone());
    let weak_a = Gc::downgrade(&a);
    drop((a, b));
    assert_eq!(collect(), 0);
    assert!(weak_a.upgrade().is_some());
    assert_eq!(Gc::strong_count(&c), 2);
    drop(c);
    assert_eq!(collect(), 3);
    assert!(weak_a.upgrade().is_none());
}

#[derive(Trace, Finalize)]
struct Dict(RefCell<HashMap<u32, Gc<Dict>>>);

#[test]
fn cycle_through_hashmap() {
    collect();
    let d = Gc::new(Dict(RefCell::new(HashMap::new())));
    d.0.borrow_mut().insert(1, d.clone());
    drop(d);
    assert_eq!(collect(), 1);
}

trait Shape: DynTrace {
    fn name(&self) -> &'static str;
}
impl_dyn_trace!(Shape);

#[derive(Trace, Finalize)]
struct Holder {
    other: RefCell<Option<Box<dyn Shape>>>,
    back: RefCell<Option<Gc<Holder>>>,
}
impl Shape for Holder {
    fn name(&self) -> &'static str {
        "holder"
    }
}

#[derive(Trace, Finalize)]
struct Link(Gc<Holder>);
impl Shape for Link {
    fn name(&self) -> &'static str {
        "link"
    }
}

#[test]
fn cycle_through_box_dyn() {
    collect();
    let h = Gc::new(Holder {
        other: RefCell::new(None),
        back: RefCell::new(None),
    });
    *h.other.borrow_mut() = Some(Box::new(Link(h.clone())));
    assert_eq!(h.other.borrow().as_ref().unwrap().name(), "link");
    drop(h);
    assert_eq!(collect(), 1);
}

#[test]
fn cycle_through_gc_dyn() {
    collect();
    let h = Gc::new(Holder {
        other: RefCell::new(None),
        back: RefCell::new(None),
    });
    let as_dyn: Gc<dyn Shape> = Gc::unsize(h.clone(), |x| x as &dyn Shape);
    assert_eq!(as_dyn.name(), "holder");
    assert!(strata_gc::is_tracked(&as_dyn));
    *h.back.borrow_mut() = Some(h.clone());
    drop(h);
    assert_eq!(collect(), 0, "the Gc<dyn Shape> keeps it alive");
    drop(as_dyn);
    assert_eq!(collect(), 1);
}

#[test]
fn untracked_types_are_not_tracked() {
    let s = Gc::new(String::from("hello"));
    assert!(!strata_gc::is_tracked(&s));
    let v = Gc::new(vec![1_u8, 2, 3]);
    assert!(!strata_gc::is_tracked(&v));
    let w: Gc<Weak<List>> = Gc::new(Weak::new());
    assert!(!strata_gc::is_tracked(&w));
    assert!(strata_gc::is_tracked(&list()));
}

#[test]
fn collect_generation_counts_and_stats() {
    collect();
    let before = strata_gc::stats();
    assert_eq!(strata_gc::count(), (0, 0, 0));
    let _keep = list();
    assert_eq!(strata_gc::count(), (1, 0, 0));
    collect_generation(0).unwrap();
    assert_eq!(strata_gc::count(), (0, 1, 0));
    assert_eq!(strata_gc::generation_of(&_keep), Some(1));
    collect_generation(1).unwrap();
    assert_eq!(strata_gc::count(), (0, 0, 1));
    assert_eq!(strata_gc::generation_of(&_keep), Some(2));
    collect_generation(2).unwrap();
    assert_eq!(strata_gc::count(), (0, 0, 0));
    let after = strata_gc::stats();
    for g in 0..3 {
        assert_eq!(after[g].collections, before[g].collections + 1);
    }
    assert_eq!(collect_generation(3), Err(GcError::InvalidGeneration(3)));
    assert!(GcError::InvalidGeneration(3)
        .to_string()
        .contains("0, 1 and 2"));
}

#[test]
fn stats_count_collected() {
    collect();
    let before = strata_gc::stats()[2].collected;
    let l = list();
    l.0.borrow_mut().push(l.clone());
    drop(l);
    collect();
    assert_eq!(strata_gc::stats()[2].collected, before + 1);
}

#[test]
fn automatic_collection_on_threshold() {
    collect();
    strata_gc::set_threshold(10, 10, 10);
    assert_eq!(strata_gc::threshold(), (10, 10, 10));
    let before = strata_gc::stats()[0].collections;
    let keep: Vec<_> = (0..25).map(|_| list()).collect();
    assert_eq!(strata_gc::stats()[0].collections, before + 2);
    // Threshold 0 disables automatic collection.
    strata_gc::set_threshold(0, 10, 10);
    let more: Vec<_> = (0..100).map(|_| list()).collect();
    assert_eq!(strata_gc::stats()[0].collections, before + 2);
    strata_gc::set_threshold(700, 10, 10);
    drop((keep, more));
}

#[test]
fn disable_stops_automatic_collection() {
    collect();
    strata_gc::set_threshold(5, 10, 10);
    strata_gc::disable();
    assert!(!strata_gc::is_enabled());
    let before = strata_gc::stats()[0].collections;
    let keep: Vec<_> = (0..50).map(|_| list()).collect();
    assert_eq!(strata_gc::stats()[0].collections, before);
    strata_gc::enable();
    let _one = list();
    assert_eq!(strata_gc::stats()[0].collections, before + 1);
    drop(keep);
}

#[test]
fn full_collection_respects_25_percent_rule() {
    collect();
    // Many long-lived objects from a full collection...
    let long_lived: Vec<_> = (0..400).map(|_| list()).collect();
    collect();
    strata_gc::set_threshold(1, 1, 1);
    let before = strata_gc::stats();
    // ...then a few young ones: gen2's count exceeds its threshold but fewer
    // than 25 % of long-lived objects are pending, so no full collection.
    let young: Vec<_> = (0..20).map(|_| list()).collect();
    let after = strata_gc::stats();
    assert!(after[0].collections > before[0].collections);
    assert!(after[1].collections > before[1].collections);
    assert_eq!(after[2].collections, before[2].collections);
    strata_gc::set_threshold(700, 10, 10);
    drop((long_lived, young));
}

#[test]
fn survivors_are_promoted() {
    collect();
    let a = list();
    assert_eq!(strata_gc::generation_of(&a), Some(0));
    collect_generation(0).unwrap();
    assert_eq!(strata_gc::generation_of(&a), Some(1));
    collect_generation(0).unwrap();
    assert_eq!(strata_gc::generation_of(&a), Some(1));
    collect_generation(1).unwrap();
    assert_eq!(strata_gc::generation_of(&a), Some(2));
}

#[test]
fn freeze_and_unfreeze() {
    collect();
    let a = list();
    a.0.borrow_mut().push(a.clone());
    let weak = Gc::downgrade(&a);
    drop(a);
    strata_gc::freeze();
    assert!(strata_gc::freeze_count() >= 1);
    assert_eq!(collect(), 0, "frozen objects are never collected");
    assert!(weak.upgrade().is_some());
    strata_gc::unfreeze();
    assert_eq!(strata_gc::freeze_count(), 0);
    assert_eq!(collect(), 1);
    assert!(weak.upgrade().is_none());
}

#[test]
fn saveall_keeps_garbage() {
    collect();
    strata_gc::set_debug(DebugFlags::SAVEALL);
    let l = list();
    l.0.borrow_mut().push(l.clone());
    let addr = Gc::as_ptr(&l) as usize;
    let weak = Gc::downgrade(&l);
    drop(l);
    assert_eq!(collect(), 1);
    strata_gc::set_debug(DebugFlags::empty());
    let garbage = strata_gc::garbage();
    assert_eq!(garbage.len(), 1);
    assert_eq!(garbage[0].address, addr);
    assert!(garbage[0].type_name.ends_with("List"));
    assert!(weak.upgrade().is_none(), "weak refs to garbage are cleared");
    let handles = strata_gc::garbage_of::<List>();
    assert_eq!(handles.len(), 1);
    assert_eq!(handles[0].0.borrow().len(), 1);
    drop(handles);
    assert_eq!(strata_gc::stats()[2].uncollectable, 1);
    assert_eq!(strata_gc::clear_garbage(), 1);
    assert_eq!(collect(), 1);
    assert!(strata_gc::garbage().is_empty());
}

/// Counts finalizer calls and resurrects itself into `SAVED` once.
#[derive(Trace)]
#[trace(finalize)]
struct Lazarus {
    me: RefCell<Option<Gc<Lazarus>>>,
    #[trace(skip)]
    finalized: Rc<Cell<u32>>,
    #[trace(skip)]
    resurrect: bool,
}

thread_local! {
    static SAVED: RefCell<Vec<Gc<Lazarus>>> = const { RefCell::new(Vec::new()) };
}

impl Finalize for Lazarus {
    fn finalize(&self) {
        self.finalized.set(self.finalized.get() + 1);
        if self.resurrect {
            let me = self
                .me
                .borrow()
                .clone()
                .expect("cycle intact during finalize");
            SAVED.with(|s| s.borrow_mut().push(me));
        }
    }
}

#[test]
fn finalizer_resurrects_and_runs_once() {
    collect();
    let count = Rc::new(Cell::new(0));
    let l = Gc::new(Lazarus {
        me: RefCell::new(None),
        finalized: count.clone(),
        resurrect: true,
    });
    *l.me.borrow_mut() = Some(l.clone());
    drop(l);
    assert_eq!(collect(), 1);
    assert_eq!(count.get(), 1);
    let back = SAVED.with(|s| s.borrow_mut().pop()).expect("resurrected");
    assert!(!Gc::is_dropped(&back));
    assert!(back.me.borrow().is_some());
    drop(back);
    // Garbage again: found, but the finalizer does not run a second time.
    assert_eq!(collect(), 1);
    assert_eq!(count.get(), 1);
    assert!(SAVED.with(|s| s.borrow().is_empty()));
    assert_eq!(collect(), 0);
}

#[test]
fn finalizer_without_resurrection() {
    collect();
    let count = Rc::new(Cell::new(0));
    let l = Gc::new(Lazarus {
        me: RefCell::new(None),
        finalized: count.clone(),
        resurrect: false,
    });
    *l.me.borrow_mut() = Some(l.clone());
    drop(l);
    assert_eq!(collect(), 1);
    assert_eq!(count.get(), 1);
}

/// Calls `collect()` from its finalizer and its Drop.
#[derive(Trace)]
#[trace(finalize)]
struct Collector(
    RefCell<Option<Gc<Collector>>>,
    #[trace(skip)] Rc<Cell<usize>>,
);

impl Finalize for Collector {
    fn finalize(&self) {
        assert!(strata_gc::is_collecting());
        self.1.set(self.1.get() + collect() + 100);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.1.set(self.1.get() + collect() + 1000);
    }
}

#[test]
fn finalizer_and_drop_calling_collect_is_skipped() {
    collect();
    let out = Rc::new(Cell::new(0));
    let c = Gc::new(Collector(RefCell::new(None), out.clone()));
    *c.0.borrow_mut() = Some(c.clone());
    drop(c);
    assert_eq!(collect(), 1);
    assert_eq!(out.get(), 1100, "nested collect() returned 0 both times");
    assert!(!strata_gc::is_collecting());
}

/// Observes a weak reference to its partner from its finalizer.
#[derive(Trace)]
#[trace(finalize)]
struct Observer {
    partner: RefCell<Option<Gc<Observer>>>,
    #[trace(skip)]
    weak_to_partner: RefCell<Weak<Observer>>,
    #[trace(skip)]
    saw: Rc<Cell<Option<bool>>>,
}

impl Finalize for Observer {
    fn finalize(&self) {
        self.saw
            .set(Some(self.weak_to_partner.borrow().upgrade().is_some()));
    }
}

#[test]
fn weakrefs_cleared_before_finalizers() {
    collect();
    let saw_a = Rc::new(Cell::new(None));
    let saw_b = Rc::new(Cell::new(None));
    let mk = |saw: &Rc<Cell<Option<bool>>>| {
        Gc::new(Observer {
            partner: RefCell::new(None),
            weak_to_partner: RefCell::new(Weak::new()),
            saw: saw.clone(),
        })
    };
    let a = mk(&saw_a);
    let b = mk(&saw_b);
    *a.partner.borrow_mut() = Some(b.clone());
    *b.partner.borrow_mut() = Some(a.clone());
    *a.weak_to_partner.borrow_mut() = Gc::downgrade(&b);
    *b.weak_to_partner.borrow_mut() = Gc::downgrade(&a);
    let outside = Gc::downgrade(&a);
    drop((a, b));
    assert_eq!(collect(), 2);
    assert_eq!(saw_a.get(), Some(false));
    assert_eq!(saw_b.get(), Some(false));
    assert!(outside.upgrade().is_none());
}

/// Its Drop copies a handle to its (also garbage) partner out to a global.
#[derive(Trace, Finalize, Debug)]
struct Leaker(RefCell<Option<Gc<Leaker>>>);

thread_local! {
    static LEAKED: RefCell<Option<Gc<Leaker>>> = const { RefCell::new(None) };
}

impl Drop for Leaker {
    fn drop(&mut self) {
        if let Some(p) = self.0.borrow().as_ref() {
            LEAKED.with(|l| *l.borrow_mut() = Some(p.clone()));
        }
    }
}

#[test]
fn deref_of_dropped_value_panics() {
    collect();
    let a = Gc::new(Leaker(RefCell::new(None)));
    let b = Gc::new(Leaker(RefCell::new(Some(a.clone()))));
    *a.0.borrow_mut() = Some(b);
    drop(a);
    assert_eq!(collect(), 2);
    let leaked = LEAKED.with(|l| l.borrow_mut().take()).expect("leaked");
    assert!(Gc::is_dropped(&leaked));
    assert!(Gc::try_deref(&leaked).is_none());
    assert_eq!(format!("{leaked:?}"), "<dropped Gc>");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| leaked.0.borrow().is_some()));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("already dropped by the cycle collector"),
        "{msg}"
    );
    drop(leaked); // frees the box without dropping the value again
}

#[test]
fn callbacks_see_start_and_stop() {
    collect();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let h = strata_gc::add_callback(move |phase, info| {
        l2.borrow_mut()
            .push((phase, info.generation, info.collected));
        // Collecting from a callback is skipped.
        assert_eq!(collect(), 0);
    });
    let l = list();
    l.0.borrow_mut().push(l.clone());
    drop(l);
    collect_generation(1).unwrap();
    assert_eq!(
        *log.borrow(),
        vec![(Phase::Start, 1, 0), (Phase::Stop, 1, 1)]
    );
    assert!(h.remove());
    assert!(!h.remove());
    collect();
    assert_eq!(log.borrow().len(), 2);
}

#[test]
fn objects_by_type_and_growth() {
    collect();
    let _ = strata_gc::growth();
    let keep: Vec<_> = (0..5).map(|_| list()).collect();
    let by_type = strata_gc::objects_by_type();
    let n = by_type
        .iter()
        .find(|(t, _)| t.ends_with("List"))
        .map(|x| x.1)
        .unwrap();
    assert!(n >= 5);
    let g = strata_gc::growth();
    assert!(g.iter().any(|(t, _, d)| t.ends_with("List") && *d == 5));
    drop(keep);
}

#[derive(Trace, Finalize)]
struct Chain(Option<Gc<Chain>>);

#[test]
fn dropping_a_long_chain_does_not_overflow() {
    let n = if cfg!(miri) { 500 } else { 10_000_000 };
    let mut head = Gc::new(Chain(None));
    strata_gc::disable();
    for _ in 0..n {
        head = Gc::new(Chain(Some(head)));
    }
    strata_gc::enable();
    drop(head);
    assert_eq!(strata_gc::generation_sizes().iter().sum::<usize>(), 0);
}

#[test]
fn collecting_a_long_cycle_does_not_overflow() {
    let n = if cfg!(miri) { 500 } else { 2_000_000 };
    collect();
    let first = list();
    let mut cur = first.clone();
    strata_gc::disable();
    for _ in 0..n {
        let next = list();
        cur.0.borrow_mut().push(next.clone());
        cur = next;
    }
    strata_gc::enable();
    cur.0.borrow_mut().push(first.clone());
    drop((first, cur));
    assert_eq!(collect(), n + 1);
}

#[test]
fn deep_reachable_chain_survives() {
    let n = if cfg!(miri) { 300 } else { 1_000_000 };
    collect();
    let first = list();
    let mut cur = first.clone();
    strata_gc::disable();
    for _ in 0..n {
        let next = list();
        cur.0.borrow_mut().push(next.clone());
        cur = next;
    }
    strata_gc::enable();
    drop(cur);
    assert_eq!(collect(), 0);
    drop(first);
}

#[test]
fn collection_while_borrowed_mut_is_safe() {
    collect();
    let a = list();
    a.0.borrow_mut().push(a.clone());
    {
        let mut b = a.0.borrow_mut();
        // The value is mutably borrowed: the collector must not look inside.
        assert_eq!(collect(), 0);
        b.push(list());
    }
    drop(a);
    assert_eq!(collect(), 2);
}

#[test]
fn get_mut_guard_blocks_tracing() {
    collect();
    let mut a = list();
    {
        let mut g = Gc::get_mut(&mut a).unwrap();
        let child = list();
        child.0.borrow_mut().push(child.clone());
        g.0.get_mut().push(child);
        assert_eq!(collect(), 0);
    }
    drop(a);
    assert_eq!(collect(), 1, "child self-loop");
}

#[test]
fn rc_like_api() {
    let a = Gc::new(5);
    let b = a.clone();
    assert!(Gc::ptr_eq(&a, &b));
    assert_eq!(Gc::strong_count(&a), 2);
    let w = Gc::downgrade(&a);
    assert_eq!(Gc::weak_count(&a), 1);
    assert_eq!(a, b);
    assert!(a <= b);
    assert_eq!(format!("{a} {b:?}"), "5 5");
    let a = Gc::try_unwrap(a).unwrap_err();
    drop(b);
    drop(a);
    assert!(w.upgrade().is_none());
    let a = Gc::new(5);
    let w = Gc::downgrade(&a);
    let c = w.upgrade().unwrap();
    drop(a);
    assert_eq!(Gc::try_unwrap(c), Ok(5));
    assert!(w.upgrade().is_none());
    let mut h = std::collections::HashSet::new();
    h.insert(Gc::new(String::from("x")));
    assert!(h.contains(&Gc::new(String::from("x"))));
    let t = list();
    let t2 = t.clone();
    assert!(Gc::try_unwrap(t).is_err());
    assert!(Gc::try_unwrap(t2).is_ok());
}

#[test]
fn new_cyclic_builds_self_reference() {
    #[derive(Trace, Finalize)]
    struct Me {
        me: Weak<Me>,
        kids: RefCell<Vec<Gc<Me>>>,
    }
    let m = Gc::new_cyclic(|w| {
        assert!(w.upgrade().is_none());
        Me {
            me: w.clone(),
            kids: RefCell::new(Vec::new()),
        }
    });
    assert!(Gc::ptr_eq(&m.me.upgrade().unwrap(), &m));
    m.kids.borrow_mut().push(m.clone());
    drop(m);
    assert_eq!(collect(), 1);
}

#[test]
fn finalizer_panic_propagates_after_collection() {
    #[derive(Trace)]
    #[trace(finalize)]
    struct Bomb(RefCell<Option<Gc<Bomb>>>);
    impl Finalize for Bomb {
        fn finalize(&self) {
            panic!("boom");
        }
    }
    collect();
    let b = Gc::new(Bomb(RefCell::new(None)));
    *b.0.borrow_mut() = Some(b.clone());
    drop(b);
    let r = std::panic::catch_unwind(collect);
    assert!(r.is_err());
    assert!(!strata_gc::is_collecting());
    assert_eq!(collect(), 0, "the garbage was still freed");
}

/// A cycle mixing a type with a no-op (derived) finalizer and one with a
/// real finalizer: the finalizer still runs, once, before anything is
/// dropped, and every `Drop` sees the whole garbage already marked dropped.
#[test]
fn mixed_finalizers_in_one_cycle() {
    thread_local! {
        static FINALIZED: Cell<usize> = const { Cell::new(0) };
        static DROPS_SEEING_DROPPED: Cell<usize> = const { Cell::new(0) };
    }
    #[derive(Trace, Finalize)]
    struct Plain(RefCell<Option<Gc<Fancy>>>);
    impl Drop for Plain {
        fn drop(&mut self) {
            if let Some(f) = self.0.borrow().as_ref() {
                if Gc::is_dropped(f) {
                    DROPS_SEEING_DROPPED.with(|c| c.set(c.get() + 1));
                }
            }
        }
    }
    #[derive(Trace)]
    #[trace(finalize)]
    struct Fancy(RefCell<Option<Gc<Plain>>>);
    impl Finalize for Fancy {
        fn finalize(&self) {
            assert!(!Gc::is_dropped(self.0.borrow().as_ref().unwrap()));
            FINALIZED.with(|c| c.set(c.get() + 1));
        }
    }
    collect();
    for _ in 0..2 {
        let p = Gc::new(Plain(RefCell::new(None)));
        let f = Gc::new(Fancy(RefCell::new(Some(p.clone()))));
        *p.0.borrow_mut() = Some(f);
        drop(p);
    }
    assert_eq!(collect(), 4);
    assert_eq!(FINALIZED.with(Cell::get), 2);
    assert_eq!(DROPS_SEEING_DROPPED.with(Cell::get), 2);
    assert_eq!(collect(), 0);
}

/// Garbage of types without finalizers skips the finalization pass but
/// still clears weak references first and drops everything.
#[test]
fn no_finalizer_garbage_clears_weaks_and_drops() {
    collect();
    let a = list();
    let b = list();
    a.0.borrow_mut().push(b.clone());
    b.0.borrow_mut().push(a.clone());
    let (wa, wb) = (Gc::downgrade(&a), Gc::downgrade(&b));
    drop((a, b));
    assert_eq!(collect(), 2);
    assert!(wa.upgrade().is_none() && wb.upgrade().is_none());
    assert_eq!(wa.strong_count(), 0);
}
