//! Pointer layer, release path: giving up a strong reference to a tracked
//! box (unlinking it from the collector's lists when it dies, turning it
//! `PURPLE` when it does not), and the per-thread "trashcan" that flattens
//! the destruction of deep chains (CPython's `Py_TRASHCAN`). The statically
//! typed releases of `Gc::drop` use the same trashcan; weak releases and
//! the freeing of a box are the header's.

use std::cell::Cell;
use std::mem;
use std::ptr;

use crate::collector;
use crate::header::{links, node_counts, release_weak_node, Counts, NodePtr, DROPPED, PURPLE};

/// Nesting depth at which the release path stops recursing and queues boxes
/// instead (CPython's `Py_TRASHCAN` uses 50 as well).
const TRASHCAN_DEPTH: usize = 50;

/// Per-thread deferred-destruction queue (CPython's trashcan). Const
/// initialised and without a destructor, so it works during thread teardown.
struct Trashcan {
    depth: Cell<usize>,
    /// Intrusive stack of nodes whose value still has to be dropped, chained
    /// through `Links::next`.
    pending: Cell<NodePtr>,
}

thread_local! {
    static TRASHCAN: Trashcan = const {
        Trashcan { depth: Cell::new(0), pending: Cell::new(ptr::null()) }
    };
}

/// Restores the trashcan depth even if a `Drop` impl unwinds.
struct DepthGuard<'a>(&'a Cell<usize>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Take one trashcan level to destroy `node` now; if the nesting is already
/// deep, queue `node` instead and return `false`.
///
/// # Safety
///
/// As for [`destroy_now`].
#[inline]
pub(crate) unsafe fn trashcan_enter(node: NodePtr) -> bool {
    TRASHCAN.with(|t| {
        let d = t.depth.get();
        if d >= TRASHCAN_DEPTH {
            // SAFETY: node is in no list, so its `next` link is free to
            // chain it.
            unsafe { links(node).next.set(t.pending.get()) };
            t.pending.set(node);
            false
        } else {
            t.depth.set(d + 1);
            true
        }
    })
}

/// Give back the level taken by [`trashcan_enter`]; at the outermost level,
/// destroy what was queued.
#[inline]
pub(crate) fn trashcan_leave() {
    TRASHCAN.with(|t| {
        let d = t.depth.get() - 1;
        t.depth.set(d);
        if d == 0 && !t.pending.get().is_null() {
            drain_trashcan(t);
        }
    });
}

/// Destroy the queued nodes (at depth 0).
#[cold]
#[inline(never)]
fn drain_trashcan(t: &Trashcan) {
    loop {
        let n = t.pending.get();
        if n.is_null() {
            break;
        }
        // SAFETY: queued nodes satisfy destroy_now's contract; the chain
        // link is cleared before the value is dropped.
        unsafe {
            t.pending.set(links(n).next.get());
            links(n).next.set(ptr::null());
        }
        t.depth.set(t.depth.get() + 1);
        let _g = DepthGuard(&t.depth);
        // SAFETY: as above.
        unsafe { destroy_now(n) };
    }
}

/// Drop the value of an untracked-from-lists node and release its box.
///
/// # Safety
///
/// `node` is a tracked box with strong count 0, not in any list, value alive.
unsafe fn destroy_now(node: NodePtr) {
    // SAFETY: guaranteed by the caller; nobody else can reach the value
    // (strong count is 0, weak upgrades fail).
    unsafe {
        (links(node).vtable.drop_value)(node);
        let c = node_counts(node);
        c.word.set(c.word.get() | DROPPED);
        release_weak_node(node);
    }
}

/// Destroy `node` through the trashcan: directly if the nesting is shallow,
/// deferred otherwise, so dropping a long chain never overflows the stack.
///
/// # Safety
///
/// As for [`destroy_now`].
unsafe fn destroy_via_trashcan(node: NodePtr) {
    // SAFETY: forwarded from the caller.
    if !unsafe { trashcan_enter(node) } {
        return;
    }
    let guard = TrashcanLevel;
    // SAFETY: forwarded from the caller.
    unsafe { destroy_now(node) };
    mem::forget(guard);
    trashcan_leave();
}

/// Gives back a trashcan level if a `Drop` impl unwinds (queued nodes are
/// then destroyed by the next outermost release).
pub(crate) struct TrashcanLevel;

impl Drop for TrashcanLevel {
    fn drop(&mut self) {
        let _ = TRASHCAN.try_with(|t| t.depth.set(t.depth.get() - 1));
    }
}

/// Give up one strong reference to a tracked node.
///
/// # Safety
///
/// `node` is a live tracked box and the caller owns one strong reference.
pub(crate) unsafe fn release_strong_node(node: NodePtr) {
    // SAFETY: the caller owns a strong reference, so the box is allocated.
    let c = unsafe { node_counts(node) };
    let s = c.strong.get() - 1;
    c.strong.set(s);
    let v = c.word.get();
    if s == 0 {
        // SAFETY: the last strong reference is gone.
        unsafe { last_strong_gone(node, v) }
    } else if v & PURPLE == 0 {
        turn_purple(c, v);
    }
}

/// First decrement to a non-zero count of a tracked object since a
/// collection last looked at it (`v` is its counts word): flag it and tell
/// the collector, which may then no longer skip young collections. Later
/// decrements see the flag and stay on the fast path. (Decrements of
/// objects the collector already dropped do not matter: they are in no
/// generation; telling the collector is only a wasted young collection.)
#[inline]
pub(crate) fn turn_purple(c: &Counts, v: u32) {
    c.word.set(v | PURPLE);
    collector::note_decrement();
}

/// The strong count of a tracked node just reached zero.
///
/// # Safety
///
/// `node` is a live tracked box whose strong count is 0; `v` is its counts.
#[inline]
unsafe fn last_strong_gone(node: NodePtr, v: u32) {
    if v & DROPPED != 0 {
        // The collector already dropped the value and unlinked the node.
        // SAFETY: forwarded; the implicit weak reference is ours to release.
        unsafe { release_weak_node(node) };
        return;
    }
    // SAFETY: the node is a live tracked box; unlinking keeps lists valid.
    unsafe { collector::untrack(node) };
    // SAFETY: strong count is 0 and the node is now in no list.
    unsafe { destroy_via_trashcan(node) };
}
