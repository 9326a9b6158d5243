//! Unit tests of internal layout and list invariants.

use std::cell::RefCell;
use std::mem::size_of;

use crate::gc::{GcBox, Links, LINKS_SIZE};
use crate::{collect, Finalize, Gc, Trace};

#[test]
fn header_sizes() {
    // Untracked: the counts word only (Rc: 16 bytes); tracked: plus links.
    assert_eq!(size_of::<GcBox<()>>(), 8);
    assert_eq!(size_of::<GcBox<u64>>(), 16);
    assert_eq!(LINKS_SIZE + 8, 4 * size_of::<usize>().max(8));
    assert_eq!(size_of::<Links>(), LINKS_SIZE);
    assert_eq!(size_of::<Gc<String>>(), size_of::<usize>());
    assert_eq!(size_of::<Option<Gc<String>>>(), size_of::<usize>());
}

#[derive(Trace, Finalize)]
struct N(RefCell<Option<Gc<N>>>);

#[test]
fn tracked_flag_and_list_membership() {
    collect();
    let s = Gc::new(String::from("x"));
    assert!(!crate::is_tracked(&s));
    assert!(s.node().is_none());
    let n = Gc::new(N(RefCell::new(None)));
    assert!(crate::is_tracked(&n));
    assert_eq!(crate::generation_of(&n), Some(0));
    collect();
    assert_eq!(crate::generation_of(&n), Some(2));
}

#[test]
fn over_aligned_tracked_values() {
    #[derive(Trace, Finalize)]
    #[repr(align(64))]
    struct Big(RefCell<Option<Gc<Big>>>, #[trace(skip)] u8);
    let a = Gc::new(Big(RefCell::new(None), 7));
    assert_eq!(Gc::as_ptr(&a) as usize % 64, 0);
    assert_eq!(a.1, 7);
    *a.0.borrow_mut() = Some(a.clone());
    drop(a);
    assert_eq!(collect(), 1);
}

/// Freed by reference counting (the statically typed release path), also
/// when the last handle is a `Gc<dyn ...>`: the allocation's layout is
/// recomputed from the value's dynamic size and alignment (Miri checks it).
#[test]
fn refcount_release_of_over_aligned_and_dyn_values() {
    #[derive(Trace, Finalize)]
    #[repr(align(32))]
    struct Wide(RefCell<Option<Gc<Wide>>>, #[trace(skip)] [u8; 40]);
    let a = Gc::new(Wide(RefCell::new(None), [1; 40]));
    let b = Gc::new(Wide(RefCell::new(Some(a.clone())), [2; 40]));
    assert_eq!(b.1[0] + a.1[39], 3);
    drop(a);
    drop(b);
    let c = Gc::new(Wide(RefCell::new(None), [3; 40]));
    let d: Gc<dyn crate::DynTrace> = Gc::unsize(c.clone(), |x| x as &dyn crate::DynTrace);
    drop(c);
    assert!(crate::is_tracked(&d));
    drop(d);
    assert_eq!(crate::generation_sizes(), [0, 0, 0]);
}
