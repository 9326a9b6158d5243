//! Weak references across resurrection (PEP 442): those that existed when
//! the collector found an object unreachable stay cleared even if a
//! finalizer resurrects it; those made afterwards upgrade. Each test runs
//! on its own thread, hence with its own collector.

use std::cell::RefCell;

use strata_gc::{collect, DebugFlags, Finalize, Gc, Trace, Weak};

/// A tracked object (it could be part of a cycle) without a finalizer.
#[derive(Trace, Default)]
struct Target(RefCell<Vec<Gc<Target>>>);

thread_local! {
    /// Where finalizers put what they resurrect.
    static SAVED: RefCell<Vec<Gc<Target>>> = const { RefCell::new(Vec::new()) };
    /// Weak pointers that finalizers make while the collector runs.
    static MADE_IN_FINALIZER: RefCell<Vec<Weak<Target>>> = const { RefCell::new(Vec::new()) };
}

/// In a self-cycle of its own; its finalizer resurrects `target` and makes
/// a weak pointer to it.
#[derive(Trace)]
#[trace(finalize)]
struct Saver {
    me: RefCell<Option<Gc<Saver>>>,
    target: Gc<Target>,
}

impl Finalize for Saver {
    fn finalize(&self) {
        let t = self.target.clone();
        let w = Gc::downgrade(&t);
        // Still being collected: nothing upgrades yet.
        assert!(w.upgrade().is_none());
        MADE_IN_FINALIZER.with(|m| m.borrow_mut().push(w));
        SAVED.with(|s| s.borrow_mut().push(t));
    }
}

/// Make `target` garbage together with a `Saver` that resurrects it, and
/// collect; returns `target` back from `SAVED`.
fn resurrect(target: Gc<Target>) -> Gc<Target> {
    let s = Gc::new(Saver {
        me: RefCell::new(None),
        target,
    });
    *s.me.borrow_mut() = Some(s.clone());
    drop(s);
    assert_eq!(collect(), 2, "the saver and its target are found");
    SAVED.with(|s| s.borrow_mut().pop()).expect("resurrected")
}

#[test]
fn weak_made_after_resurrection_upgrades_and_old_one_stays_cleared() {
    collect();
    let t = Gc::new(Target::default());
    let old = Gc::downgrade(&t);
    let t = resurrect(t);
    assert_eq!(Gc::strong_count(&t), 1);
    assert!(old.upgrade().is_none(), "cleared when found unreachable");
    assert_eq!(old.strong_count(), 0);
    let new = Gc::downgrade(&t);
    let up = new
        .upgrade()
        .expect("a weak pointer made after resurrection upgrades");
    assert!(Gc::ptr_eq(&up, &t));
    assert_eq!(new.strong_count(), 2);
    assert!(
        old.clone().upgrade().is_none(),
        "a clone of a cleared one too"
    );
    assert!(old.ptr_eq(&new));
    // The one the finalizer made, after the claim, upgrades as well.
    let during = MADE_IN_FINALIZER.with(|m| m.borrow_mut().pop()).unwrap();
    assert!(during.upgrade().is_some());
    drop(up);
    drop(t);
    assert!(new.upgrade().is_none() && during.upgrade().is_none());
    drop((old, new, during));
    assert_eq!(collect(), 0);
}

#[test]
fn object_without_weak_pointers_keeps_its_epoch() {
    collect();
    let t = resurrect(Gc::new(Target::default()));
    let w = Gc::downgrade(&t);
    assert!(w.upgrade().is_some());
    MADE_IN_FINALIZER.with(|m| m.borrow_mut().clear());
}

/// Each survival retires the weak pointers of the time; after as many
/// survivals with weak pointers as there are epochs, the object fails
/// closed: no weak pointer to it upgrades any more, and none that was
/// cleared ever comes back.
#[test]
fn repeated_resurrection_retires_each_generation_of_weak_pointers() {
    collect();
    // One epoch per free low bit of a box address, at most 8 (as in the
    // crate); the last one is never reopened.
    let epochs = std::mem::align_of::<u64>().min(8);
    let rounds = if cfg!(miri) { 3 } else { epochs + 1 };
    let mut t = Gc::new(Target::default());
    let mut retired: Vec<Weak<Target>> = Vec::new();
    for round in 1..=rounds {
        retired.push(Gc::downgrade(&t));
        t = resurrect(t);
        MADE_IN_FINALIZER.with(|m| m.borrow_mut().clear());
        assert!(
            retired.iter().all(|w| w.upgrade().is_none()),
            "round {round}"
        );
        let fresh = Gc::downgrade(&t);
        assert_eq!(
            fresh.upgrade().is_some(),
            round < epochs - 1,
            "round {round} of {epochs} epochs"
        );
    }
    drop(t);
    assert_eq!(collect(), 0);
}

#[test]
fn saveall_garbage_gets_new_weak_pointers_not_old_ones() {
    collect();
    strata_gc::set_debug(DebugFlags::SAVEALL);
    let t = Gc::new(Target::default());
    t.0.borrow_mut().push(t.clone());
    let old = Gc::downgrade(&t);
    drop(t);
    assert_eq!(collect(), 1);
    strata_gc::set_debug(DebugFlags::empty());
    assert!(old.upgrade().is_none(), "weak refs to garbage are cleared");
    let kept = strata_gc::garbage_of::<Target>().pop().unwrap();
    let new = Gc::downgrade(&kept);
    assert!(new.upgrade().is_some());
    assert!(old.upgrade().is_none());
    drop(kept);
    assert_eq!(strata_gc::clear_garbage(), 1);
    assert_eq!(collect(), 1);
    assert!(new.upgrade().is_none());
}
