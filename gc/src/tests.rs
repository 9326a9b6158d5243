//! Unit tests of internal layout and list invariants.

use std::cell::RefCell;
use std::mem::size_of;

use crate::gc::{GcBox, Links, LINKS_SIZE};
use crate::{collect, Finalize, Gc, Trace};

#[test]
fn header_sizes() {
    // Untracked: the strong count and the counts word only (Rc: 16
    // bytes); tracked: plus links.
    assert_eq!(size_of::<GcBox<()>>(), 8);
    assert_eq!(std::mem::align_of::<GcBox<u8>>(), 8);
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

/// Immutable node: untracked while it references only untracked nodes.
#[derive(Trace, Finalize)]
struct Imm {
    kid: Option<Gc<Imm>>,
    cell: Option<Gc<N>>,
}

#[test]
fn untracked_boxes_keep_their_links_and_get_mut_retracks() {
    collect();
    let leaf = Gc::new(Imm {
        kid: None,
        cell: None,
    });
    let mut top = Gc::new(Imm {
        kid: Some(leaf),
        cell: None,
    });
    assert!(!crate::is_tracked(&top));
    assert!(top.node().is_some(), "the header keeps room for the links");
    let n = Gc::new(N(RefCell::new(None)));
    Gc::get_mut(&mut top).unwrap().cell = Some(n.clone());
    assert_eq!(crate::generation_of(&top), Some(0));
    *n.0.borrow_mut() = None;
    drop(n);
    // top -> n is not a cycle; dropping top frees everything by counting.
    drop(top);
    assert_eq!(crate::generation_sizes(), [0, 0, 0]);
}

fn height<T: ?Sized>(g: &Gc<T>) -> u64 {
    u64::from((g.counts_word() & crate::gc::HEIGHT_BITS).count_ones())
}

#[test]
fn deep_untracked_chain_goes_through_the_trashcan() {
    let mut head = Gc::new(Imm {
        kid: None,
        cell: None,
    });
    for _ in 0..200 {
        head = Gc::new(Imm {
            kid: Some(head),
            cell: None,
        });
    }
    assert!(!crate::is_tracked(&head));
    assert_eq!(
        height(&head),
        u64::from(crate::gc::HEIGHT_WIDTH),
        "saturated"
    );
    let leaf = Gc::new(Imm {
        kid: None,
        cell: None,
    });
    assert_eq!(height(&leaf), 1);
    let pair = Gc::new(Imm {
        kid: Some(leaf),
        cell: None,
    });
    assert_eq!(height(&pair), 2);
    drop(head);
}

/// Garbage boxes go to the per-thread free lists and are reused; a thread
/// that exits returns its lists (Miri's leak check sees it).
#[test]
fn freed_garbage_is_reused_and_returned_at_thread_exit() {
    fn cycles(n: usize) {
        for _ in 0..n {
            let a = Gc::new(N(RefCell::new(None)));
            *a.0.borrow_mut() = Some(a.clone());
        }
        assert_eq!(collect(), n);
    }
    cycles(8);
    let a = Gc::new(N(RefCell::new(None)));
    assert!(crate::is_tracked(&a));
    drop(a);
    std::thread::spawn(|| cycles(8)).join().unwrap();
}

/// An untracked object carries the `PURPLE` flag (its decrements concern
/// nobody): `get_mut` clears it when it tracks the object again, so the
/// next decrement still tells the collector.
#[test]
fn retracked_object_starts_not_purple() {
    use crate::gc::PURPLE;
    collect();
    let leaf = Gc::new(Imm {
        kid: None,
        cell: None,
    });
    let mut top = Gc::new(Imm {
        kid: Some(leaf),
        cell: None,
    });
    assert_eq!(height(&top), 2);
    assert_ne!(top.counts_word() & PURPLE, 0, "untracked objects have it");
    drop(Gc::get_mut(&mut top).unwrap());
    assert!(crate::is_tracked(&top));
    assert_eq!(top.counts_word() & PURPLE, 0);
    let other = top.clone();
    drop(other);
    assert_ne!(top.counts_word() & PURPLE, 0, "a decrement flags it");
    collect();
    assert_eq!(top.counts_word() & PURPLE, 0, "a collection clears it");
}
