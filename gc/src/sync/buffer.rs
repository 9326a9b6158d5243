//! Sync layer: the candidate stack — boxes whose strong count dropped to a
//! non-zero value (Bacon and Rajan's "purple" roots), the only places a
//! garbage cycle can start from.
//!
//! A lock-free intrusive stack through `Header::next`: threads push with a
//! CAS on the head, the collector takes the whole stack with one swap, so
//! there is no single-element pop and no ABA. Being on the stack is the
//! `BUFFERED` bit of the weak word, set once per box until a collection takes
//! it off, and it keeps the box allocated (not its value alive: the value of
//! a candidate whose count reaches zero is dropped at once).

use std::ptr::{self, NonNull};

use super::boxed::{header, Header, BUFFERED};
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

/// Make `h` a candidate unless it already is one; returns the number of
/// candidates pushed since the last collection if it was pushed.
///
/// Called by a handle about to give up a strong reference that is not the
/// last (the handle keeps the box alive during the call).
#[inline]
pub(crate) fn push(h: NonNull<Header>) -> Option<usize> {
    let weak = &header(h).weak;
    if weak.load(Ordering::Relaxed) & BUFFERED != 0 {
        return None;
    }
    push_slow(h)
}

#[cold]
#[inline(never)]
fn push_slow(h: NonNull<Header>) -> Option<usize> {
    // Relaxed: the bit is only a claim; the stack's CAS below publishes the
    // link, and the collector clears the bit with a read-modify-write of the
    // same word.
    if header(h).weak.fetch_or(BUFFERED, Ordering::Relaxed) & BUFFERED != 0 {
        return None;
    }
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
    Some(CANDIDATES.pushed.fetch_add(1, Ordering::Relaxed) + 1)
}

/// Take every candidate off the stack (the collector only); they stay
/// `BUFFERED` until the caller clears the bit.
pub(crate) fn take_all() -> Vec<NonNull<Header>> {
    CANDIDATES.pushed.store(0, Ordering::Relaxed);
    // Acquire: pairs with the pushes' Release, so their `next` links are
    // visible.
    let mut p = CANDIDATES.head.swap(ptr::null_mut(), Ordering::Acquire);
    let mut all = Vec::new();
    while let Some(h) = NonNull::new(p) {
        p = header(h).next.load(Ordering::Relaxed);
        all.push(h);
    }
    all
}

/// Candidates pushed since the last collection (`sync::count`).
pub(crate) fn pending() -> usize {
    CANDIDATES.pushed.load(Ordering::Relaxed)
}
