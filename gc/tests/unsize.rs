//! `Gc::unsize`: genuine unsizings (array to slice, value to trait object)
//! work on both release paths; anything else the closure may return — a
//! field at the same address and size, a sub-slice, another object — is
//! rejected, since the box would then be dropped with the wrong type's glue.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use strata_gc::{collect, impl_dyn_trace, DynTrace, Finalize, Gc, Trace};

/// The message of the panic `f` raises (it must panic).
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn assert_rejected(f: impl FnOnce()) {
    let msg = panic_message(f);
    assert!(
        msg.contains("Gc::unsize") && msg.contains("coerced"),
        "unexpected panic message: {msg}"
    );
}

/// Counts how often it was dropped.
#[derive(Trace, Finalize)]
struct Counted(#[trace(skip)] Rc<Cell<u32>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Same address and size as its only field (even guaranteed so); its own
/// `Drop` must run.
#[derive(Trace, Finalize)]
#[repr(transparent)]
struct Outer {
    inner: Counted,
}

impl Drop for Outer {
    fn drop(&mut self) {
        // Marks the drop of the outer value apart from its field's.
        self.inner.0.set(self.inner.0.get() + 100);
    }
}

#[test]
fn projection_to_a_field_is_rejected() {
    let n = Rc::new(Cell::new(0));
    let outer = Gc::new(Outer {
        inner: Counted(n.clone()),
    });
    assert_rejected(|| drop(Gc::unsize(outer, |o| &o.inner)));
    assert_eq!(n.get(), 101, "Outer::drop and Counted::drop run once each");
}

#[test]
fn projection_to_a_field_as_dyn_is_rejected() {
    let n = Rc::new(Cell::new(0));
    let outer = Gc::new(Outer {
        inner: Counted(n.clone()),
    });
    assert_rejected(|| drop(Gc::unsize(outer, |o| &o.inner as &dyn DynTrace)));
    assert_eq!(n.get(), 101);
}

/// A tracked outer value whose only field is tracked too.
#[derive(Trace, Finalize)]
struct TrackedOuter {
    inner: TrackedInner,
}

#[derive(Trace, Finalize)]
struct TrackedInner {
    next: RefCell<Option<Gc<TrackedOuter>>>,
    #[trace(skip)]
    drops: Rc<Cell<u32>>,
}

impl Drop for TrackedOuter {
    fn drop(&mut self) {
        self.inner.drops.set(self.inner.drops.get() + 1);
    }
}

#[test]
fn projection_of_a_tracked_value_is_rejected_on_both_paths() {
    collect();
    let n = Rc::new(Cell::new(0));
    let new = || {
        Gc::new(TrackedOuter {
            inner: TrackedInner {
                next: RefCell::new(None),
                drops: n.clone(),
            },
        })
    };
    // Reference counting: the rejected handle is the last one.
    let a = new();
    assert_rejected(|| drop(Gc::unsize(a, |o| &o.inner)));
    assert_eq!(n.get(), 1);
    // Collector: the value is a self-loop, freed by `collect`.
    let b = new();
    *b.inner.next.borrow_mut() = Some(b.clone());
    assert_rejected(|| drop(Gc::unsize(b, |o| &o.inner as &dyn DynTrace)));
    assert_eq!(n.get(), 1);
    assert_eq!(collect(), 1);
    assert_eq!(n.get(), 2);
}

/// An array field seen as a slice has the value's address and size.
#[derive(Trace, Finalize)]
struct Bytes {
    data: [u8; 4],
}

impl Drop for Bytes {
    fn drop(&mut self) {}
}

#[test]
fn projection_to_an_array_field_as_slice_is_rejected() {
    let b = Gc::new(Bytes { data: *b"abcd" });
    assert_rejected(|| drop(Gc::unsize(b, |b| &b.data[..])));
}

#[test]
fn projection_to_str_is_rejected() {
    // No sized type unsizes to `str`: a `&str` into the value is a view.
    let b = Gc::new(*b"abcd");
    assert_rejected(|| drop(Gc::unsize(b, |b| std::str::from_utf8(b).unwrap())));
}

#[test]
fn sub_slice_is_rejected() {
    let a = Gc::new([1_u32, 2, 3]);
    assert_rejected(|| drop(Gc::unsize(a, |a| &a[..2])));
    // Zero-sized elements: every sub-slice has the array's address and size.
    #[derive(Trace, Finalize)]
    struct Unit;
    thread_local!(static UNITS: Cell<u32> = const { Cell::new(0) });
    impl Drop for Unit {
        fn drop(&mut self) {
            UNITS.with(|u| u.set(u.get() + 1));
        }
    }
    let z = Gc::new([Unit, Unit, Unit]);
    assert_rejected(|| drop(Gc::unsize(z, |z| &z[1..])));
    assert_eq!(UNITS.with(Cell::get), 3, "every element dropped once");
}

static OTHER: u32 = 7;

#[test]
fn reference_to_another_object_is_rejected() {
    let g = Gc::new(7_u32);
    assert_rejected(|| drop(Gc::unsize(g, |_| &OTHER)));
    let g = Gc::new(7_u32);
    assert_rejected(|| drop(Gc::unsize(g, |_| &OTHER as &dyn DynTrace)));
}

#[test]
fn identity_is_accepted() {
    let g = Gc::new(7_u32);
    let h: Gc<u32> = Gc::unsize(g, |x| x);
    assert_eq!(*h, 7);
}

#[test]
fn array_to_slice_on_both_paths() {
    let n = Rc::new(Cell::new(0));
    // Reference counting, untracked.
    let a = Gc::new([Counted(n.clone()), Counted(n.clone()), Counted(n.clone())]);
    let s: Gc<[Counted]> = Gc::unsize(a, |a| a as &[Counted]);
    assert_eq!(s.len(), 3);
    drop(s);
    assert_eq!(n.get(), 3);

    // Collector: a slice that holds itself.
    #[derive(Trace, Finalize)]
    struct Elem {
        next: RefCell<Option<Gc<[Elem]>>>,
        #[trace(skip)]
        drops: Rc<Cell<u32>>,
    }
    impl Drop for Elem {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }
    collect();
    n.set(0);
    let elem = || Elem {
        next: RefCell::new(None),
        drops: n.clone(),
    };
    let s: Gc<[Elem]> = Gc::unsize(Gc::new([elem(), elem()]), |a| a as &[Elem]);
    *s[1].next.borrow_mut() = Some(s.clone());
    drop(s);
    assert_eq!(n.get(), 0);
    assert_eq!(collect(), 1);
    assert_eq!(n.get(), 2);
}

trait Shape: DynTrace {
    fn sides(&self) -> u32;
}
impl_dyn_trace!(Shape);

impl Shape for Counted {
    fn sides(&self) -> u32 {
        0
    }
}

#[derive(Trace, Finalize)]
struct Loop {
    me: RefCell<Option<Gc<dyn Shape>>>,
    #[trace(skip)]
    drops: Rc<Cell<u32>>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

impl Shape for Loop {
    fn sides(&self) -> u32 {
        1
    }
}

#[test]
fn value_to_trait_object_on_both_paths() {
    let n = Rc::new(Cell::new(0));
    // Reference counting, untracked.
    let d: Gc<dyn Shape> = Gc::unsize(Gc::new(Counted(n.clone())), |c| c as &dyn Shape);
    assert_eq!(d.sides(), 0);
    let w = Gc::downgrade(&d);
    drop(d);
    assert_eq!(n.get(), 1);
    assert!(w.upgrade().is_none());
    drop(w);

    // Collector: a value that holds itself as a trait object.
    collect();
    n.set(0);
    let l = Gc::new(Loop {
        me: RefCell::new(None),
        drops: n.clone(),
    });
    *l.me.borrow_mut() = Some(Gc::unsize(l.clone(), |l| l as &dyn Shape));
    let d: Gc<dyn DynTrace> = Gc::unsize(l, |l| l as &dyn DynTrace);
    assert!(strata_gc::is_tracked(&d));
    drop(d);
    assert_eq!(n.get(), 0);
    assert_eq!(collect(), 1);
    assert_eq!(n.get(), 1);
}
