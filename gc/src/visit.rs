//! Pointer layer: [`Visitor::visit`], where a `Gc` that a `trace` call
//! reports meets the visitor's mode: the collector's trial deletion and
//! marking (`collector::visit_node`), the introspection record of edges, or
//! `Gc::new`'s look at the referents' counts words.

use crate::collector;
use crate::gc::Gc;
use crate::header::{links, Edge, VisitMode, Visitor};

impl Visitor {
    /// Report one owned `Gc`.
    #[inline]
    pub fn visit<T: ?Sized>(&mut self, gc: &Gc<T>) {
        match &mut self.mode {
            VisitMode::Record(edges) => record_edge(edges, gc),
            // Branch-free: boxes without links have none of the bits set.
            VisitMode::Untrackable { counts } => *counts |= gc.counts_word(),
            // A `Gc` is not `Send`, so no `sync::Gc` value holds one.
            VisitMode::Sync(_) => {}
            mode => {
                if let Some(node) = gc.node() {
                    // SAFETY: `gc` keeps its box allocated and `node` is its
                    // Links.
                    unsafe { collector::visit_node(mode, node) }
                }
            }
        }
    }
}

#[inline(never)]
fn record_edge<T: ?Sized>(edges: &mut Vec<Edge>, gc: &Gc<T>) {
    let type_name = match gc.node() {
        // SAFETY: `gc` keeps its box (and so its Links record) alive.
        Some(n) => (unsafe { links(n) }.vtable.type_name)(),
        None => std::any::type_name::<T>(),
    };
    edges.push(Edge {
        address: Gc::as_ptr(gc) as *const u8 as usize,
        type_name,
    });
}
