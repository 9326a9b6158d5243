//! Pointer layer, tracking decision: whether a new object must be tracked
//! (linked into generation 0) or may be left untracked, and then its
//! height, from what its value's `trace` reports. Like CPython's untracked
//! tuples: an object that cannot change its own `Gc`s while shared and
//! references only untracked objects can never be part of a cycle.

use crate::header::{height_above, VisitMode, Visitor, DROPPED, PURPLE, TRACKED};
use crate::trace::Trace;

/// `None` if a new object holding `value` must be tracked (linked into
/// generation 0); otherwise its height. It need not be tracked if its type
/// cannot change its own edges while shared and everything it references
/// is untracked: then no cycle can ever pass through it (see
/// [`referents_height`]). The box still carries its `Links` so that
/// `Gc::get_mut` can track it again.
#[inline]
pub(crate) fn untracked_height<T: ?Sized + Trace>(value: &T) -> Option<u32> {
    if T::INTERIOR_MUTABLE {
        None
    } else {
        referents_height(value)
    }
}

/// Counts-word bits of a new object: `TRACKED`, or its height and
/// `PURPLE` (the decrements of an untracked object concern nobody).
#[inline]
pub(crate) fn tracking_bits(height: Option<u32>) -> u32 {
    match height {
        None => TRACKED,
        Some(h) => h | PURPLE,
    }
}

/// `None` if `value` owns a `Gc` to a tracked object (or to one the
/// collector dropped, to keep it simple); otherwise the height bits of an
/// object holding it (see [`HEIGHT_BITS`](crate::header::HEIGHT_BITS)).
///
/// If no referent is tracked and the type is not
/// [`Trace::INTERIOR_MUTABLE`], no cycle can ever run through the object:
/// everything it reaches is untracked, hence immutable and acyclic, and
/// stays so (an untracked object is only re-tracked through `Gc::get_mut`,
/// which needs the only handle, so its holders are re-tracked first).
#[inline]
fn referents_height<T: ?Sized + Trace>(value: &T) -> Option<u32> {
    let mut v = Visitor::new(VisitMode::Untrackable { counts: 0 });
    value.trace(&mut v);
    let out = match v.mode {
        VisitMode::Untrackable { counts } if counts & (TRACKED | DROPPED) == 0 => {
            Some(height_above(counts))
        }
        _ => None,
    };
    // The mode owns no heap memory: skip the drop glue of the other modes.
    std::mem::forget(v);
    out
}
