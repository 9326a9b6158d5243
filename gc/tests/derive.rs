//! `#[derive(Trace)]` (alone, with `#[trace(finalize)]`, or beside the no-op
//! `#[derive(Finalize)]`): generics, enums, skip, recursion, and
//! compile-fail cases (trybuild).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;

use strata_gc::{collect, Finalize, Gc, Trace};

#[derive(Trace, Finalize)]
struct Plain {
    a: u32,
    b: String,
}

#[derive(Trace, Finalize)]
struct Generic<T, U> {
    item: T,
    #[trace(skip)]
    _marker: PhantomData<U>,
}

/// `U` is only used by a skipped field, so it needs no `Trace` bound.
struct NotTrace;

#[derive(Trace, Finalize)]
enum Tree<T> {
    Leaf(T),
    Node {
        left: Gc<Tree<T>>,
        right: Gc<Tree<T>>,
    },
    Empty,
}

#[derive(Trace, Finalize)]
struct Owned {
    kids: Vec<Owned>,
    boxed: Option<Box<Owned>>,
}

#[derive(Trace, Finalize)]
#[trace(tracked)]
struct MutualA(Vec<MutualB>);

#[derive(Trace, Finalize)]
#[trace(tracked)]
struct MutualB(Vec<MutualA>);

#[derive(Trace, Finalize)]
struct Unit;

#[derive(Trace, Finalize)]
struct Cyclic {
    edges: RefCell<VecDeque<Gc<Cyclic>>>,
    by_name: RefCell<BTreeMap<String, Gc<Cyclic>>>,
    tuple: (u8, Option<Gc<Cyclic>>),
}

// MAY_CONTAIN_GC is computed at compile time; checked at compile time.
const _: () = {
    assert!(!Plain::MAY_CONTAIN_GC);
    assert!(!Generic::<u8, NotTrace>::MAY_CONTAIN_GC);
    assert!(Generic::<Gc<u8>, NotTrace>::MAY_CONTAIN_GC);
    assert!(Tree::<u8>::MAY_CONTAIN_GC);
    assert!(
        Owned::MAY_CONTAIN_GC,
        "self-referential fields count as tracked"
    );
    assert!(MutualA::MAY_CONTAIN_GC && MutualB::MAY_CONTAIN_GC);
    assert!(!Unit::MAY_CONTAIN_GC);
    assert!(Cyclic::MAY_CONTAIN_GC);
};

#[test]
fn may_contain_gc_is_computed() {
    let p = Gc::new(Plain {
        a: 1,
        b: "x".into(),
    });
    assert!(!strata_gc::is_tracked(&p));
    assert_eq!(p.a + p.b.len() as u32, 2);
    let g = Gc::new(Generic::<u8, NotTrace> {
        item: 3,
        _marker: PhantomData,
    });
    assert_eq!(g.item, 3);
    let _ = Gc::new(Unit);
    let o = Gc::new(Owned {
        kids: vec![],
        boxed: None,
    });
    assert!(o.kids.is_empty() && o.boxed.is_none());
    let _ = Gc::new(MutualA(vec![MutualB(vec![])]));
}

#[test]
fn enum_tree_traced() {
    collect();
    let leaf = Gc::new(Tree::Leaf(1_u32));
    let t = Gc::new(Tree::Node {
        left: leaf.clone(),
        right: leaf,
    });
    if let Tree::Node { left, right } = &*t {
        assert!(Gc::ptr_eq(left, right));
    }
    let _ = Gc::new(Tree::<u32>::Empty);
    drop(t);
    assert_eq!(collect(), 0);
}

#[test]
fn struct_with_many_containers_cycles() {
    collect();
    let c = Gc::new(Cyclic {
        edges: RefCell::new(VecDeque::new()),
        by_name: RefCell::new(BTreeMap::new()),
        tuple: (0, None),
    });
    let d = Gc::new(Cyclic {
        edges: RefCell::new(VecDeque::new()),
        by_name: RefCell::new(BTreeMap::new()),
        tuple: (1, Some(c.clone())),
    });
    c.edges.borrow_mut().push_back(d.clone());
    c.by_name.borrow_mut().insert("self".into(), c.clone());
    assert_eq!(d.tuple.0, 1);
    drop((c, d));
    assert_eq!(collect(), 2);
}

#[test]
#[cfg_attr(miri, ignore)]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// Only `#[derive(Trace)]`: the derive also implements an empty `Finalize`.
#[derive(Trace)]
struct TraceOnly {
    peer: RefCell<Option<Gc<TraceOnly>>>,
}

/// Only `#[derive(Trace)]` on a generic type whose parameter is not
/// `Trace`: the empty `Finalize` holds for every instance.
#[derive(Trace)]
struct TraceOnlyGeneric<T> {
    #[trace(skip)]
    _marker: PhantomData<T>,
}

const _: () = {
    assert!(!<TraceOnly as Finalize>::NEEDS_FINALIZE);
    assert!(!<TraceOnlyGeneric<NotTrace> as Finalize>::NEEDS_FINALIZE);
};

#[test]
fn derive_trace_alone_is_enough_for_a_collected_cycle() {
    collect();
    let a = Gc::new(TraceOnly {
        peer: RefCell::new(None),
    });
    let b = Gc::new(TraceOnly {
        peer: RefCell::new(Some(a.clone())),
    });
    *a.peer.borrow_mut() = Some(b.clone());
    let w = Gc::downgrade(&a);
    drop((a, b));
    assert_eq!(collect(), 2);
    assert!(w.upgrade().is_none());
    let _ = TraceOnlyGeneric::<NotTrace> {
        _marker: PhantomData,
    };
}

thread_local! {
    static FINALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A hand-written finalizer next to `#[derive(Trace)]`, marked
/// `#[trace(finalize)]`.
#[derive(Trace)]
#[trace(finalize)]
struct HandFinalized {
    peer: RefCell<Option<Gc<HandFinalized>>>,
    /// Where the finalizer puts the object back (resurrection).
    #[trace(skip)]
    keep: std::rc::Rc<RefCell<Vec<Gc<HandFinalized>>>>,
}

impl Finalize for HandFinalized {
    fn finalize(&self) {
        FINALIZED.with(|f| f.set(f.get() + 1));
        if let Some(p) = self.peer.borrow().as_ref() {
            self.keep.borrow_mut().push(p.clone());
        }
    }
}

#[test]
fn hand_finalizer_beside_derive_trace_runs_once() {
    const { assert!(<HandFinalized as Finalize>::NEEDS_FINALIZE) };
    collect();
    let keep = std::rc::Rc::new(RefCell::new(Vec::new()));
    let a = Gc::new(HandFinalized {
        peer: RefCell::new(None),
        keep: keep.clone(),
    });
    *a.peer.borrow_mut() = Some(a.clone());
    drop(a);
    // The finalizer resurrects the object: it survives, finalized once.
    assert_eq!(collect(), 1);
    assert_eq!(FINALIZED.with(|f| f.get()), 1);
    assert_eq!(keep.borrow().len(), 1);
    // Garbage again: freed without a second finalization.
    keep.borrow_mut().clear();
    assert_eq!(collect(), 1);
    assert_eq!(FINALIZED.with(|f| f.get()), 1);
}

/// rust-gc's and rust-cc's form still compiles: `#[derive(Finalize)]`
/// adds nothing beside `#[derive(Trace)]`.
#[derive(Trace, Finalize)]
struct BothDerives(RefCell<Option<Gc<BothDerives>>>);

#[test]
fn both_derives_still_compile_and_collect() {
    collect();
    let a = Gc::new(BothDerives(RefCell::new(None)));
    *a.0.borrow_mut() = Some(a.clone());
    drop(a);
    assert_eq!(collect(), 1);
}

/// An edge whose `Hidden` variant is not traced.
#[derive(Trace)]
enum Link {
    Traced(Gc<Holder>),
    // Held, never read: only `trace` would read it, and it skips it.
    #[allow(dead_code)]
    #[trace(skip)]
    Hidden(Gc<Holder>),
    Nothing,
}

#[derive(Trace)]
struct Holder {
    link: RefCell<Link>,
}

/// A variant's fields are skipped whatever their types: no `Trace` bound
/// for them, and no part in `MAY_CONTAIN_GC`.
#[derive(Trace)]
enum OnlyHidden<U> {
    #[allow(dead_code)]
    #[trace(skip)]
    Hidden(Gc<Holder>, NotTrace, PhantomData<U>),
    Plain(u8),
}

const _: () = {
    assert!(Link::MAY_CONTAIN_GC);
    assert!(!OnlyHidden::<NotTrace>::MAY_CONTAIN_GC);
};

fn holder(link: Link) -> Gc<Holder> {
    Gc::new(Holder {
        link: RefCell::new(link),
    })
}

#[test]
fn skipped_variant_is_not_visited() {
    let target = holder(Link::Nothing);
    let traced = holder(Link::Traced(target.clone()));
    let hidden = holder(Link::Hidden(target.clone()));
    let seen = strata_gc::referents(&traced);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].address, Gc::as_ptr(&target) as usize);
    assert!(strata_gc::referents(&hidden).is_empty());
    // The collector does not see the edge either.
    assert_eq!(strata_gc::referrers(&target).len(), 1);
    let _ = OnlyHidden::<NotTrace>::Plain(0);
    let _ = OnlyHidden::<NotTrace>::Hidden(target, NotTrace, PhantomData);
}

#[test]
fn cycle_through_skipped_variant_leaks_and_through_traced_one_is_collected() {
    collect();
    let a = holder(Link::Nothing);
    *a.link.borrow_mut() = Link::Hidden(a.clone());
    let w = Gc::downgrade(&a);
    drop(a);
    // The hidden edge counts as a reference from outside: the cycle is
    // kept (a leak, never a premature free).
    assert_eq!(collect(), 0);
    let a = w
        .upgrade()
        .expect("a cycle through a skipped variant is kept");
    // Break it by hand, then the same cycle through a traced variant.
    *a.link.borrow_mut() = Link::Traced(a.clone());
    drop(a);
    assert_eq!(collect(), 1);
    assert!(w.upgrade().is_none());
}
