//! Collector layer, trial deletion (CPython's `deduce_unreachable`): over one
//! list, copy each strong count into `gc_refs`, subtract the references
//! found by tracing inside the set, mark what is referenced from outside and
//! everything reachable from it, and rebuild the list from the reachable
//! nodes; the rest is left in an array as the garbage.
//!
//! # `prev` during a collection
//!
//! # `prev` during a collection
//!
//! As in CPython, the `prev` word of every node in the collected set is
//! reused while no user code can run: bits 3..62 hold `gc_refs`, bit 63 marks
//! nodes proven reachable, bit 62 nodes the marking sweep has passed, and
//! the low [`PREV_FLAGS`](crate::header::PREV_FLAGS) keep their meaning. The lists are rebuilt
//! (restoring `prev`) before any user code runs.

use std::ptr;

use crate::collector::list::{push_back, set_prev};
use crate::header::{
    acquire_strong_node, clear_weak_refs, links, node_counts, NodePtr, VisitMode, Visitor,
    FINALIZED, MUT_BORROWED, PERSISTENT_FLAGS, PREV_FLAGS, PURPLE,
};

/// `prev` bit: the node is in the set being collected.
const COLLECTING: usize = 0b100;
/// `prev` bit (collection only): the node was proven reachable.
const REACHABLE: usize = 1 << (usize::BITS - 1);
/// `prev` bit (collection only): [`mark_and_partition`]'s sweep has passed
/// the node, so if it is found reachable later it must be traced from the
/// stack.
const SCANNED: usize = 1 << (usize::BITS - 2);
/// `prev` shift of `gc_refs` during a collection.
const REFS_SHIFT: u32 = 3;
/// `prev` mask of `gc_refs` during a collection.
const REFS_MASK: usize = !(REACHABLE | SCANNED | PREV_FLAGS);

#[inline]
fn refs_of(prev: usize) -> usize {
    (prev & REFS_MASK) >> REFS_SHIFT
}

/// Visitor callback: `child` is referenced from a node of the collected set.
///
/// # Safety
///
/// `child` is a live tracked node.
#[inline]
pub(crate) unsafe fn visit_node(mode: &mut VisitMode, child: NodePtr) {
    // SAFETY: guaranteed by the caller.
    let l = unsafe { links(child) };
    let p = l.prev_bits();
    if p & COLLECTING == 0 {
        return;
    }
    match mode {
        VisitMode::SubtractRefs => {
            debug_assert!(
                refs_of(p) > 0,
                "gc_refs underflow: a Trace impl over-reports"
            );
            if refs_of(p) > 0 {
                l.set_prev_bits(p - (1 << REFS_SHIFT));
            }
        }
        VisitMode::MarkReachable(stack) => {
            if p & REACHABLE == 0 {
                l.set_prev_bits(p | REACHABLE);
                if p & SCANNED != 0 {
                    stack.push(child);
                }
            }
        }
        VisitMode::Record(_) | VisitMode::Untrackable { .. } | VisitMode::Sync(_) => {}
    }
}

/// Phase 1: gather the nodes of list `h` into `nodes` (so later phases
/// iterate an array instead of chasing `next` pointers), set
/// `gc_refs = strong - hold`, flag each as collecting and clear its
/// [`PURPLE`] flag (this collection examines it).
///
/// # Safety
///
/// `h` is a valid list; from here until [`mark_and_partition`] no user code
/// may run.
pub(super) unsafe fn update_refs(h: NodePtr, hold: u32, nodes: &mut Vec<NodePtr>) {
    nodes.clear();
    // SAFETY: guaranteed by the caller; `next` is untouched by this phase.
    unsafe {
        let mut n = links(h).next.get();
        while !ptr::eq(n, h) {
            nodes.push(n);
            let c = node_counts(n);
            c.word.set(c.word.get() & !PURPLE);
            let strong = c.strong.get() - hold;
            let l = links(n);
            l.set_prev_bits(
                ((strong as usize) << REFS_SHIFT) | (l.prev_bits() & PERSISTENT_FLAGS) | COLLECTING,
            );
            n = l.next.get();
        }
    }
}

/// Phase 2: subtract references internal to the set.
///
/// # Safety
///
/// After [`update_refs`] gathered `nodes`.
pub(super) unsafe fn subtract_refs(nodes: &[NodePtr]) {
    let mut v = Visitor::new(VisitMode::SubtractRefs);
    // SAFETY: guaranteed by the caller; values of listed nodes are alive and
    // nodes with a live GcMut guard are skipped.
    unsafe {
        for &n in nodes {
            let l = links(n);
            if l.prev_bits() & MUT_BORROWED == 0 {
                (l.vtable.trace)(n, &mut v);
            }
        }
    }
}

/// Result of [`find_unreachable`].
pub(super) struct Partition {
    /// Nodes left in the list (reachable).
    pub(super) kept: usize,
    /// Does an unreachable node still need `Finalize::finalize`?
    pub(super) needs_finalize: bool,
}

/// Phase 3: everything with `gc_refs > 0` is referenced from outside: mark
/// it and everything reachable from it, tracing each reachable node once,
/// and rebuild the lists: reachable nodes go back into `h`, the others stay
/// in `nodes` (in list order), in no list and with the collection bits
/// still in their `prev` (see [`link_all`] and `destroy`). With
/// `claim = Some(flags)`, also takes a strong reference to each unreachable
/// node, clears its weak references (`clear_weak_refs`) and sets `flags`
/// in its counts word (saves a pass over the garbage).
///
/// One sweep in list order relinks and traces each node already marked or
/// referenced from outside; relinking restores its `prev` address, which
/// takes it out of the collected set (its collection bits are gone), so no
/// later visit looks at it again. A node the sweep passed unmarked is
/// remembered as tentatively unreachable; if it is marked later it goes on
/// a stack and is relinked and traced from there (no recursion). Edges
/// mostly point forward in allocation order, so the sweep reads memory in
/// order instead of chasing one edge after another, and when everything
/// survives (most young collections) it is the only pass after
/// [`subtract_refs`]. Nodes found late end up at the end of `h`.
///
/// # Safety
///
/// After [`subtract_refs`] on `nodes`, gathered from `h`.
pub(super) unsafe fn mark_and_partition(
    h: NodePtr,
    nodes: &mut Vec<NodePtr>,
    claim: Option<u32>,
) -> Partition {
    let mut v = Visitor::new(VisitMode::MarkReachable(Vec::new()));
    let (mut kept, mut tentative) = (0, 0);
    // SAFETY: guaranteed by the caller; as in subtract_refs. `nodes` is
    // exactly the old content of `h`; kept nodes are chained after `last`,
    // whose `prev` was already restored. Tentative nodes are stored over
    // entries the sweep has passed (`tentative <= i`).
    unsafe {
        let mut last = h;
        let mut relink_and_trace = |n: NodePtr, v: &mut Visitor| {
            set_prev(n, last);
            links(last).next.set(n);
            last = n;
            kept += 1;
            let l = links(n);
            if l.prev_bits() & MUT_BORROWED == 0 {
                (l.vtable.trace)(n, v);
            }
        };
        for i in 0..nodes.len() {
            let n = nodes[i];
            let l = links(n);
            let p = l.prev_bits();
            if p & REACHABLE == 0 && refs_of(p) == 0 {
                l.set_prev_bits(p | SCANNED);
                nodes[tentative] = n;
                tentative += 1;
                continue;
            }
            relink_and_trace(n, &mut v);
            while let Some(m) = match &mut v.mode {
                VisitMode::MarkReachable(stack) => stack.pop(),
                _ => None,
            } {
                relink_and_trace(m, &mut v);
            }
        }
        links(last).next.set(h);
        set_prev(h, last);
    }
    nodes.truncate(tentative);
    let (mut found, mut needs_finalize) = (0, false);
    // SAFETY: as above; a tentative node still in the collected set is
    // unreachable.
    unsafe {
        for i in 0..nodes.len() {
            let n = nodes[i];
            let l = links(n);
            if l.prev_bits() & COLLECTING == 0 {
                continue;
            }
            needs_finalize |= l.vtable.needs_finalize && l.prev_bits() & FINALIZED == 0;
            if let Some(flags) = claim {
                acquire_strong_node(n);
                let c = node_counts(n);
                c.word.set(clear_weak_refs(c.word.get()) | flags);
            }
            nodes[found] = n;
            found += 1;
        }
    }
    nodes.truncate(found);
    Partition {
        kept,
        needs_finalize,
    }
}

/// Trial deletion over list `h`: afterwards `h` holds the reachable nodes,
/// and the garbage is left in `nodes`, in no list (see
/// [`mark_and_partition`]). `hold` is subtracted from every strong count;
/// `claim` as for [`mark_and_partition`].
///
/// # Safety
///
/// `h` is a valid list; the values of all its nodes are alive.
pub(super) unsafe fn find_unreachable(
    h: NodePtr,
    hold: u32,
    nodes: &mut Vec<NodePtr>,
    claim: Option<u32>,
) -> Partition {
    // SAFETY: guaranteed by the caller; no user code runs in between.
    unsafe {
        update_refs(h, hold, nodes);
        subtract_refs(nodes);
        mark_and_partition(h, nodes, claim)
    }
}

/// Put the garbage that [`find_unreachable`] left in `nodes` into `list`
/// (restoring `prev`), before user code that might look at it runs.
///
/// # Safety
///
/// `list` is a valid list; `nodes` are the garbage of the last
/// [`find_unreachable`].
pub(super) unsafe fn link_all(list: NodePtr, nodes: &[NodePtr]) {
    for &n in nodes {
        // SAFETY: guaranteed by the caller; the nodes are in no list.
        unsafe { push_back(list, n) };
    }
}
