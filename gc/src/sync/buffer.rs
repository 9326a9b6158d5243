//! Sync layer: the candidate stack — boxes whose strong count dropped to a
//! non-zero value (Bacon and Rajan's "purple" roots), the only places a
//! garbage cycle can start from — and the release of a strong handle that
//! feeds it.
//!
//! A lock-free intrusive stack through `Header::next`: threads push with a
//! CAS on the head, the collector takes the whole stack with one swap, so
//! there is no single-element pop and no ABA. A box is on the stack at most
//! once: the `CANDIDATE` bit of its strong word, which the releasing
//! handle sets in the same compare-exchange that gives up its reference,
//! and which the collector clears in the same compare-exchange that holds
//! the box. So a release either happened before the collector's hold (and
//! the collector counts it) or sees the bit clear and pushes the box again:
//! no release is lost between the two. The stack owns a weak reference to
//! each box on it, which keeps the box allocated (not its value alive).

use std::ptr::{self, NonNull};

use super::boxed::{header, release_last, release_weak, Header, CANDIDATE, COUNT, DROPPED, STRONG};
use super::shim::{global, AtomicPtr, AtomicUsize, Ordering};

struct Candidates {
    head: AtomicPtr<Header>,
    /// Candidates pushed since the collector last took the stack.
    pushed: AtomicUsize,
}

global! {
    static CANDIDATES: Candidates = Candidates {
        head: AtomicPtr::new(ptr::null_mut()),
        pushed: AtomicUsize::new(0),
    };
}

/// Give up the strong reference of a handle to a box whose value may own
/// `Gc`s: the last one drops the value; one that leaves others makes the
/// box a candidate. Returns the number of candidates pushed since the last
/// collection if this release pushed one.
///
/// # Safety
///
/// The caller owns the strong reference and gives it up.
#[inline]
pub(crate) unsafe fn release(h: NonNull<Header>) -> Option<usize> {
    let strong = &header(h).strong;
    let mut cur = strong.load(Ordering::Relaxed);
    // Whether this release took a weak reference for the stack.
    let mut for_stack = false;
    loop {
        let last = cur & COUNT == 1;
        // A box whose value the collector dropped is never a candidate:
        // nothing of it is left to form a cycle (this is the collector
        // dropping the garbage's own handles to each other).
        let push = !last && cur & (CANDIDATE | DROPPED) == 0;
        if push && !for_stack {
            // Safe to touch the box: our strong reference keeps it.
            header(h).weak.fetch_add(1, Ordering::Relaxed);
            for_stack = true;
        }
        let new = if push { (cur - 1) | CANDIDATE } else { cur - 1 };
        // Release (in `STRONG`): our uses of the value happen before its
        // drop.
        match strong.compare_exchange_weak(cur, new, STRONG, Ordering::Relaxed) {
            Ok(_) if push => {
                // The stack's weak reference keeps the box allocated.
                return Some(link(h));
            }
            Ok(_) => {
                if last {
                    // SAFETY: ours was the last strong reference.
                    unsafe { release_last(h, cur) };
                }
                if for_stack {
                    // SAFETY: the weak reference taken above, unused.
                    unsafe { release_weak(h) };
                }
                return None;
            }
            Err(now) => cur = now,
        }
    }
}

/// Make a box the collector holds a candidate again, with a weak
/// reference for wherever the caller keeps it (the stack, with [`link`],
/// or the old candidates); false if it already is one.
pub(crate) fn claim_held(h: NonNull<Header>) -> bool {
    let hd = header(h);
    hd.weak.fetch_add(1, Ordering::Relaxed);
    if hd.strong.fetch_or(CANDIDATE, STRONG) & CANDIDATE == 0 {
        return true;
    }
    // SAFETY: the weak reference just taken; the collector's hold keeps
    // the shared one, so this is not the last.
    unsafe { release_weak(h) };
    false
}

/// Put `h`, just marked `CANDIDATE`, on the stack.
#[cold]
#[inline(never)]
pub(crate) fn link(h: NonNull<Header>) -> usize {
    let mut top = CANDIDATES.head.load(Ordering::Relaxed);
    loop {
        header(h).next.store(top, Ordering::Relaxed);
        // Release: the collector's Acquire swap sees `next`.
        match CANDIDATES.head.compare_exchange_weak(
            top,
            h.as_ptr(),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => top = now,
        }
    }
    CANDIDATES.pushed.fetch_add(1, Ordering::Relaxed) + 1
}

/// Take every candidate off the stack (the collector only). Each keeps its
/// `CANDIDATE` bit and the stack's weak reference, which the caller owns
/// once the iterator has yielded the box (its link is read first, so the
/// caller may free it).
pub(crate) fn take_all() -> Taken {
    CANDIDATES.pushed.store(0, Ordering::Relaxed);
    // Acquire: pairs with the pushes' Release, so their `next` links are
    // visible.
    Taken(CANDIDATES.head.swap(ptr::null_mut(), Ordering::Acquire))
}

/// The candidates [`take_all`] took, walked in one pass with their
/// adoption (each header is touched while it is in cache).
pub(crate) struct Taken(*mut Header);

impl Iterator for Taken {
    type Item = NonNull<Header>;

    fn next(&mut self) -> Option<NonNull<Header>> {
        let h = NonNull::new(self.0)?;
        self.0 = header(h).next.load(Ordering::Relaxed);
        Some(h)
    }
}

/// Candidates pushed since the last collection (`sync::count`).
pub(crate) fn pending() -> usize {
    CANDIDATES.pushed.load(Ordering::Relaxed)
}
