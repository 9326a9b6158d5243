//! strata-gc against `Rc` and other cycle-collecting pointers: binary trees
//! (acyclic), parent-pointer trees, doubly linked lists, many two-node
//! cycles, and the old-young test (churning young cycles while many
//! long-lived objects sit in the heap).
//!
//! Every GC variant frees its garbage inside the measured closure (it calls
//! the crate's collector after dropping). `Rc` uses `Weak` back edges.
//! Crates without automatic collection (bacon_rajan_cc) collect every
//! `MANUAL_COLLECT_EVERY` cycles in the old-young test. `gcmodule` 0.3 was
//! dropped: its binary-tree run overflowed the stack.
//!
//! `common/shapes.rs` adds the shapes users write (issue 15): trees of
//! `RefCell` nodes, `Weak` parent trees walked leaf-to-root, doubly linked
//! `RefCell` lists with weak or strong back links, 100 000 clones of one
//! pointer, old-young at two sizes, and the peak RSS of a tree (printed as
//! `peak_rss_refcell_tree/<crate>`). `benches/ratios.py` prints their
//! medians and ratios to `Rc` from criterion's output.

// The `gc` crate's derive expands to impls inside consts.
#![allow(non_local_definitions)]

include!("common/body.rs");
