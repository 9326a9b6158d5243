//! Introspection layer: objgraph-like views of the live tracked objects
//! (counts by type, growth, referrers and referents, Graphviz DOT of an
//! object's neighbourhood) and typed handles to the saved garbage. Sits
//! above the collector, whose lists it walks (`collector::control::for_each_tracked`)
//! and whose `events` keep the garbage list, and above the pointer types.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use crate::collector::{self, events};
use crate::gc::Gc;
use crate::header::{
    links, node_counts, value_address, Edge, NodePtr, VisitMode, Visitor, DROPPED, MUT_BORROWED,
};
use crate::trace::Trace;

/// Strong handles to the saved garbage objects of type `T`.
pub(crate) fn garbage_of<T: Trace + 'static>() -> Vec<Gc<T>> {
    let mut out = Vec::new();
    events::for_each_garbage(|n| {
        // SAFETY: the list holds a strong reference to `n`; the TypeId check
        // proves the value's type.
        if (unsafe { links(n) }.vtable.type_id)() == std::any::TypeId::of::<T>() {
            // SAFETY: as above.
            out.push(unsafe { Gc::from_node(n) });
        }
    });
    out
}

/// Live tracked objects by type name, most numerous first (objgraph's
/// `most_common_types`).
pub(crate) fn objects_by_type() -> Vec<(&'static str, usize)> {
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    collector::control::for_each_tracked(|n| {
        // SAFETY: for_each_tracked only yields live tracked nodes.
        let name = (unsafe { links(n) }.vtable.type_name)();
        *counts.entry(name).or_insert(0) += 1;
    });
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// Change in live tracked objects by type since the previous call
/// (objgraph's `growth`), largest increase first; unchanged types omitted.
pub(crate) fn growth() -> Vec<(&'static str, usize, isize)> {
    let now: HashMap<&'static str, usize> = objects_by_type().into_iter().collect();
    events::with_growth_baseline(|last| {
        let mut out: Vec<(&'static str, usize, isize)> = Vec::new();
        for (name, &n) in &now {
            let before = last.get(name).copied().unwrap_or(0);
            if n != before {
                out.push((name, n, n as isize - before as isize));
            }
        }
        for (name, &before) in last.iter() {
            if !now.contains_key(name) {
                out.push((name, 0, -(before as isize)));
            }
        }
        *last = now;
        out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        out
    })
    .unwrap_or_default()
}

/// [`growth`] as objgraph's `show_growth` prints it: one line per type,
/// the name padded, the count now and the change, at most `limit` lines.
pub(crate) fn growth_table(limit: usize) -> String {
    let rows = growth();
    let rows = &rows[..rows.len().min(limit)];
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (name, count, delta) in rows {
        let _ = writeln!(s, "{name:<width$} {count:>9} {delta:>+9}");
    }
    s
}

// ---------------------------------------------------------------------------
// Object graph: referrers, referents, DOT
// ---------------------------------------------------------------------------

/// One object of the object graph (see [`referrers`](crate::referrers),
/// [`referents`](crate::referents)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectInfo {
    /// `std::any::type_name` of the value (the concrete type for tracked
    /// objects, also behind `Gc<dyn Trait>`).
    pub type_name: &'static str,
    /// Address of the value (compare with `Gc::as_ptr`).
    pub address: usize,
}

impl ObjectInfo {
    fn of_edge(e: &Edge) -> ObjectInfo {
        ObjectInfo {
            type_name: e.type_name,
            address: e.address,
        }
    }

    /// # Safety
    ///
    /// `node` is a live tracked box.
    unsafe fn of_node(node: NodePtr) -> ObjectInfo {
        ObjectInfo {
            // SAFETY: guaranteed by the caller.
            type_name: (unsafe { links(node) }.vtable.type_name)(),
            address: value_address(node),
        }
    }
}

/// The `Gc`s the value of `node` owns, as its `trace` reports them; nothing
/// if the value was dropped by the collector or is mutably borrowed through
/// a `GcMut` guard.
///
/// # Safety
///
/// `node` is a live tracked box.
unsafe fn node_edges(node: NodePtr) -> Vec<Edge> {
    // SAFETY: guaranteed by the caller.
    let (l, c) = unsafe { (links(node), node_counts(node)) };
    if c.word.get() & DROPPED != 0 || l.prev_bits() & MUT_BORROWED != 0 {
        return Vec::new();
    }
    let mut v = Visitor::new(VisitMode::Record(Vec::new()));
    // SAFETY: the value is alive and not mutably borrowed (checked above);
    // a Record visitor only reads the visited handles.
    unsafe { (l.vtable.trace)(node, &mut v) };
    match v.mode {
        VisitMode::Record(edges) => edges,
        _ => Vec::new(),
    }
}

/// The `Gc`s the value behind `gc` owns.
fn gc_edges<T: ?Sized + Trace>(gc: &Gc<T>) -> Vec<Edge> {
    match gc.node() {
        // SAFETY: `gc` keeps its box alive.
        Some(n) => unsafe { node_edges(n) },
        None => {
            let Some(value) = Gc::try_deref(gc) else {
                return Vec::new();
            };
            let mut v = Visitor::new(VisitMode::Record(Vec::new()));
            value.trace(&mut v);
            match v.mode {
                VisitMode::Record(edges) => edges,
                _ => Vec::new(),
            }
        }
    }
}

fn gc_info<T: ?Sized>(gc: &Gc<T>) -> ObjectInfo {
    match gc.node() {
        // SAFETY: `gc` keeps its box alive.
        Some(n) => unsafe { ObjectInfo::of_node(n) },
        None => ObjectInfo {
            type_name: std::any::type_name::<T>(),
            address: Gc::as_ptr(gc) as *const u8 as usize,
        },
    }
}

/// Every strong edge between tracked objects: `(from, to address)`.
fn all_edges() -> Vec<(NodePtr, Edge)> {
    let mut nodes = Vec::new();
    collector::control::for_each_tracked(|n| nodes.push(n));
    let mut out = Vec::new();
    for n in nodes {
        // SAFETY: tracing runs no code that can free a tracked object (Trace
        // impls must not create, clone or drop Gcs), so every node listed
        // above is still alive.
        for e in unsafe { node_edges(n) } {
            out.push((n, e));
        }
    }
    out
}

pub(crate) fn referents<T: ?Sized + Trace>(gc: &Gc<T>) -> Vec<ObjectInfo> {
    let mut seen = HashSet::new();
    gc_edges(gc)
        .iter()
        .filter(|e| seen.insert(e.address))
        .map(ObjectInfo::of_edge)
        .collect()
}

pub(crate) fn referrers<T: ?Sized>(gc: &Gc<T>) -> Vec<ObjectInfo> {
    let target = Gc::as_ptr(gc) as *const u8 as usize;
    let mut seen = HashSet::new();
    all_edges()
        .into_iter()
        .filter(|(from, e)| e.address == target && seen.insert(*from))
        // SAFETY: `from` was yielded by for_each_tracked and nothing freed
        // it since (see all_edges).
        .map(|(from, _)| unsafe { ObjectInfo::of_node(from) })
        .collect()
}

/// Escape `s` for a double-quoted DOT string.
fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Which edges [`neighbourhood_dot`] follows out of the root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Referents and referrers: the whole neighbourhood.
    Both,
    /// Referrers only, transitively: what keeps the root alive
    /// (objgraph's `show_backrefs`).
    Referrers,
}

pub(crate) fn dot<T: ?Sized + Trace>(gc: &Gc<T>, depth: usize) -> String {
    neighbourhood_dot(gc, depth, Direction::Both)
}

pub(crate) fn backrefs_dot<T: ?Sized + Trace>(gc: &Gc<T>, depth: usize) -> String {
    neighbourhood_dot(gc, depth, Direction::Referrers)
}

/// A DOT graph of the objects within `depth` edges of `gc`'s, following
/// `direction`, and of the strong edges between them.
fn neighbourhood_dot<T: ?Sized + Trace>(gc: &Gc<T>, depth: usize, direction: Direction) -> String {
    // The whole tracked heap's strong edges (plus the root's own, in case it
    // is untracked), with a label for every object seen.
    let root = gc_info(gc);
    let mut labels: HashMap<usize, (&'static str, Option<usize>)> = HashMap::new();
    labels.insert(root.address, (root.type_name, Some(Gc::strong_count(gc))));
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let note = |labels: &mut HashMap<_, _>, e: &Edge| {
        labels.entry(e.address).or_insert((e.type_name, None));
    };
    // The root's own edges: also needed when it is untracked, or in no
    // generation list (a collection in progress holds it).
    for e in gc_edges(gc) {
        note(&mut labels, &e);
        edges.push((root.address, e.address));
    }
    for (from, e) in all_edges() {
        // SAFETY: as in all_edges: `from` is alive.
        let (i, strong) = unsafe { (ObjectInfo::of_node(from), node_counts(from).strong.get()) };
        labels.insert(i.address, (i.type_name, Some(strong as usize)));
        note(&mut labels, &e);
        edges.push((i.address, e.address));
    }
    let mut adjacent: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(from, to) in &edges {
        if direction == Direction::Both {
            adjacent.entry(from).or_default().push(to);
        }
        adjacent.entry(to).or_default().push(from);
    }
    // Breadth-first, up to `depth` hops.
    let mut dist: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::new();
    dist.insert(root.address, 0);
    queue.push_back(root.address);
    while let Some(a) = queue.pop_front() {
        let d = dist[&a];
        if d == depth {
            continue;
        }
        for &b in adjacent.get(&a).into_iter().flatten() {
            dist.entry(b).or_insert_with(|| {
                queue.push_back(b);
                d + 1
            });
        }
    }
    let mut nodes: Vec<usize> = dist.keys().copied().collect();
    nodes.sort_unstable();
    let mut s =
        String::from("digraph strata_gc {\n    node [shape=box, fontname=\"monospace\"];\n");
    for a in &nodes {
        let (name, strong) = labels.get(a).copied().unwrap_or(("?", None));
        let strong = strong.map_or(String::new(), |n| format!("\\nstrong={n}"));
        let root_mark = if *a == root.address {
            ", penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "    \"{a:#x}\" [label=\"{}\\n{a:#x}{strong}\"{root_mark}];",
            dot_escape(name)
        );
    }
    let mut drawn = HashSet::new();
    for (from, to) in edges {
        if dist.contains_key(&from) && dist.contains_key(&to) && drawn.insert((from, to)) {
            let _ = writeln!(s, "    \"{from:#x}\" -> \"{to:#x}\";");
        }
    }
    s.push_str("}\n");
    s
}
