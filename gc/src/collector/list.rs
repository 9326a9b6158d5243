//! Collector layer, lists: the circular doubly-linked lists with a sentinel
//! head that hold every tracked object (CPython's `gc_list_*`), valid only
//! while `prev` holds addresses (not inside the phases of trial deletion
//! that reuse it).

use std::cell::Cell;
use std::ptr;

use crate::header::{links, Links, NodePtr, NodeVTable, Visitor, PERSISTENT_FLAGS, PREV_FLAGS};

// ---------------------------------------------------------------------------
// Sentinels
// ---------------------------------------------------------------------------

/// Vtable of list sentinels; never called (sentinels are skipped by walks).
const SENTINEL_VTABLE: NodeVTable = NodeVTable {
    trace: sentinel_trace,
    finalize: sentinel_node_op,
    drop_value: sentinel_node_op,
    dealloc: sentinel_node_op,
    release_strong: sentinel_node_op,
    type_name: || "<sentinel>",
    type_id: std::any::TypeId::of::<()>,
    value_offset: 0,
    needs_finalize: false,
};

/// # Safety
///
/// Never called; exists to fill the sentinel vtable.
unsafe fn sentinel_trace(_: NodePtr, _: &mut Visitor) {}

/// # Safety
///
/// Never called; exists to fill the sentinel vtable.
unsafe fn sentinel_node_op(_: NodePtr) {}

/// An uninitialised sentinel; [`head`] links it to itself on first use.
pub(super) const fn sentinel() -> Links {
    Links {
        prev: Cell::new(ptr::null()),
        next: Cell::new(ptr::null()),
        vtable: &SENTINEL_VTABLE,
    }
}

/// The sentinel `l` as a list head (an empty list the first time). Sentinels
/// live in the thread-local `Core`, which has no destructor, so they stay
/// valid until the thread's storage is gone.
#[inline]
pub(super) fn head(l: &Links) -> NodePtr {
    let p: NodePtr = l;
    if l.next.get().is_null() {
        l.next.set(p);
        l.prev.set(p);
    }
    p
}

// ---------------------------------------------------------------------------
// List primitives (valid only while `prev` holds addresses)
// ---------------------------------------------------------------------------

/// # Safety
///
/// `n` is a live node whose `prev` holds an address.
pub(super) unsafe fn prev_of(n: NodePtr) -> NodePtr {
    // SAFETY: guaranteed by the caller.
    let p = unsafe { links(n) }.prev.get();
    p.wrapping_byte_sub(p as usize & PREV_FLAGS)
}

/// # Safety
///
/// `n` is a live node.
pub(super) unsafe fn set_prev(n: NodePtr, p: NodePtr) {
    // SAFETY: guaranteed by the caller.
    let l = unsafe { links(n) };
    l.prev
        .set(p.wrapping_byte_add(l.prev_bits() & PERSISTENT_FLAGS));
}

/// # Safety
///
/// `head` is a sentinel of a valid list; `n` is a live node in no list.
pub(super) unsafe fn push_back(head: NodePtr, n: NodePtr) {
    // SAFETY: guaranteed by the caller.
    unsafe { link_last(head, n, links(n).prev_bits() & PERSISTENT_FLAGS) }
}

/// Append `n` to the list of `head`, with `flags` as the flags of its
/// `prev` (a new object has none, so it need not be read).
///
/// # Safety
///
/// As for [`push_back`].
#[inline]
pub(super) unsafe fn link_last(head: NodePtr, n: NodePtr, flags: usize) {
    // SAFETY: guaranteed by the caller; all touched nodes are live.
    unsafe {
        let last = prev_of(head);
        links(n).prev.set(last.wrapping_byte_add(flags));
        links(n).next.set(head);
        links(last).next.set(n);
        // Sentinels carry no flags.
        links(head).prev.set(n);
    }
}

/// # Safety
///
/// `n` is a live node in a valid list.
pub(super) unsafe fn unlink(n: NodePtr) {
    // SAFETY: guaranteed by the caller; neighbours are live list members.
    unsafe {
        let p = prev_of(n);
        let nx = links(n).next.get();
        links(p).next.set(nx);
        set_prev(nx, p);
        links(n).next.set(ptr::null());
        set_prev(n, ptr::null());
    }
}

/// # Safety
///
/// `h` is a live sentinel.
pub(super) unsafe fn is_empty(h: NodePtr) -> bool {
    // SAFETY: guaranteed by the caller.
    ptr::eq(unsafe { links(h) }.next.get(), h)
}

/// Move every node of list `from` to the end of list `to`.
///
/// # Safety
///
/// Both are sentinels of valid lists.
pub(super) unsafe fn merge(from: NodePtr, to: NodePtr) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if is_empty(from) {
            return;
        }
        let first = links(from).next.get();
        let last = prev_of(from);
        let tail = prev_of(to);
        links(tail).next.set(first);
        set_prev(first, tail);
        links(last).next.set(to);
        set_prev(to, last);
        links(from).next.set(from);
        set_prev(from, from);
    }
}

/// # Safety
///
/// `h` is a sentinel of a valid list.
pub(super) unsafe fn len(h: NodePtr) -> usize {
    let mut n = 0;
    // SAFETY: guaranteed by the caller; walking `next` visits live nodes.
    unsafe {
        let mut p = links(h).next.get();
        while !ptr::eq(p, h) {
            n += 1;
            p = links(p).next.get();
        }
    }
    n
}

/// Call `f` on every node of list `h`.
///
/// # Safety
///
/// `h` is a sentinel of a valid list and `f` does not change the list.
pub(super) unsafe fn for_each(h: NodePtr, mut f: impl FnMut(NodePtr)) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let mut p = links(h).next.get();
        while !ptr::eq(p, h) {
            let next = links(p).next.get();
            f(p);
            p = next;
        }
    }
}
