//! Introspection layer: per-generation statistics, collection callbacks,
//! debug flags and the save-all `garbage` list, and objgraph-like views of
//! the live tracked objects (counts by type, growth, referrers and
//! referents, Graphviz DOT of an object's neighbourhood).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::rc::Rc;
use std::time::Duration;

use crate::collector::{self, PanicSlot};
use crate::gc::{
    links, node_counts, release_strong_node, Gc, NodePtr, DROPPED, LINKS_SIZE, MUT_BORROWED,
    STRONG_MASK,
};
use crate::trace::{Edge, Trace, VisitMode, Visitor};

/// Debug flags, like the `DEBUG_*` constants of Python's `gc` module.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DebugFlags(u32);

impl DebugFlags {
    /// Print statistics to stderr during collections.
    pub const STATS: DebugFlags = DebugFlags(1);
    /// Keep unreachable objects in [`garbage`](crate::garbage) instead of
    /// freeing them (their weak references are still cleared).
    pub const SAVEALL: DebugFlags = DebugFlags(1 << 5);

    /// No flag set.
    pub const fn empty() -> DebugFlags {
        DebugFlags(0)
    }

    /// Are all flags of `other` set in `self`?
    pub const fn contains(self, other: DebugFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl std::ops::BitOr for DebugFlags {
    type Output = DebugFlags;
    fn bitor(self, rhs: DebugFlags) -> DebugFlags {
        DebugFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for DebugFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.contains(DebugFlags::STATS) {
            names.push("STATS");
        }
        if self.contains(DebugFlags::SAVEALL) {
            names.push("SAVEALL");
        }
        write!(f, "DebugFlags({})", names.join(" | "))
    }
}

/// Statistics of one generation since the thread started (Python's
/// `gc.get_stats()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    /// Number of collections of this generation.
    pub collections: usize,
    /// Objects found unreachable by those collections (including resurrected
    /// ones and ones saved by `SAVEALL`).
    pub collected: usize,
    /// Objects kept in [`garbage`](crate::garbage) by `SAVEALL`.
    pub uncollectable: usize,
    /// Total time spent in those collections.
    pub duration: Duration,
}

impl GenerationStats {
    pub(crate) const ZERO: GenerationStats = GenerationStats {
        collections: 0,
        collected: 0,
        uncollectable: 0,
        duration: Duration::ZERO,
    };
}

/// Phase of a collection reported to callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The collection is about to start.
    Start,
    /// The collection has finished.
    Stop,
}

/// Information passed to collection callbacks (Python's `info` dict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackInfo {
    /// The generation being collected.
    pub generation: usize,
    /// Objects found unreachable (0 at [`Phase::Start`]).
    pub collected: usize,
    /// Objects saved by `SAVEALL` (0 at [`Phase::Start`]).
    pub uncollectable: usize,
}

type Callback = Rc<dyn Fn(Phase, &CallbackInfo)>;

/// Removes its callback when [`remove`](CallbackHandle::remove) is called.
/// Dropping the handle keeps the callback registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "keep the handle to be able to remove the callback"]
pub struct CallbackHandle(u64);

impl CallbackHandle {
    /// Unregister the callback; returns whether it was still registered.
    pub fn remove(self) -> bool {
        EXTRAS
            .try_with(|e| {
                let mut cbs = e.callbacks.borrow_mut();
                let before = cbs.len();
                cbs.retain(|(id, _)| *id != self.0);
                cbs.len() != before
            })
            .unwrap_or(false)
    }
}

/// A strong reference held by the garbage list.
struct SavedGarbage(NodePtr);

impl Drop for SavedGarbage {
    fn drop(&mut self) {
        // SAFETY: the garbage list owns one strong reference to the node.
        unsafe { release_strong_node(self.0) }
    }
}

#[derive(Default)]
struct Extras {
    callbacks: RefCell<Vec<(u64, Callback)>>,
    next_id: RefCell<u64>,
    garbage: RefCell<Vec<SavedGarbage>>,
    last_counts: RefCell<HashMap<&'static str, usize>>,
}

thread_local! {
    static EXTRAS: Extras = Extras::default();
}

pub(crate) fn add_callback(f: impl Fn(Phase, &CallbackInfo) + 'static) -> CallbackHandle {
    EXTRAS.with(|e| {
        let mut id = e.next_id.borrow_mut();
        *id += 1;
        e.callbacks.borrow_mut().push((*id, Rc::new(f)));
        CallbackHandle(*id)
    })
}

pub(crate) fn invoke_callbacks(phase: Phase, info: &CallbackInfo, panics: &mut PanicSlot) {
    let cbs: Vec<Callback> = EXTRAS
        .try_with(|e| {
            e.callbacks
                .borrow()
                .iter()
                .map(|(_, c)| c.clone())
                .collect()
        })
        .unwrap_or_default();
    for cb in cbs {
        panics.run(|| cb(phase, info));
    }
}

/// Keep `node` in the garbage list, taking over one strong reference.
///
/// # Safety
///
/// The caller transfers one strong reference to `node` to the list.
pub(crate) unsafe fn save_garbage(node: NodePtr) {
    let saved = SavedGarbage(node);
    // If the thread is tearing down, dropping `saved` releases the reference.
    let _ = EXTRAS.try_with(move |e| e.garbage.borrow_mut().push(saved));
}

/// One object kept by `SAVEALL` (see [`garbage`](crate::garbage)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GarbageEntry {
    /// `std::any::type_name` of the value.
    pub type_name: &'static str,
    /// Address of the value (compare with `Gc::as_ptr`).
    pub address: usize,
}

fn value_address(node: NodePtr) -> usize {
    // SAFETY: callers pass nodes they hold a strong reference to.
    node as usize + LINKS_SIZE + unsafe { links(node) }.vtable.value_offset
}

pub(crate) fn garbage() -> Vec<GarbageEntry> {
    EXTRAS
        .try_with(|e| {
            e.garbage
                .borrow()
                .iter()
                .map(|g| GarbageEntry {
                    // SAFETY: the list holds a strong reference to g.0.
                    type_name: (unsafe { links(g.0) }.vtable.type_name)(),
                    address: value_address(g.0),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn garbage_of<T: Trace + 'static>() -> Vec<Gc<T>> {
    EXTRAS
        .try_with(|e| {
            e.garbage
                .borrow()
                .iter()
                // SAFETY: the list holds a strong reference; the TypeId check
                // proves the value's type.
                .filter(|g| (unsafe { links(g.0) }.vtable.type_id)() == std::any::TypeId::of::<T>())
                // SAFETY: as above.
                .map(|g| unsafe { Gc::from_node(g.0) })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn clear_garbage() -> usize {
    let taken = EXTRAS
        .try_with(|e| std::mem::take(&mut *e.garbage.borrow_mut()))
        .unwrap_or_default();
    let n = taken.len();
    drop(taken);
    n
}

/// Live tracked objects by type name, most numerous first (objgraph's
/// `most_common_types`).
pub(crate) fn objects_by_type() -> Vec<(&'static str, usize)> {
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    collector::for_each_tracked(|n| {
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
    EXTRAS
        .try_with(|e| {
            let mut last = e.last_counts.borrow_mut();
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
    if c.get() & DROPPED != 0 || l.prev_bits() & MUT_BORROWED != 0 {
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
    collector::for_each_tracked(|n| nodes.push(n));
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

pub(crate) fn dot<T: ?Sized + Trace>(gc: &Gc<T>, depth: usize) -> String {
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
        let (i, strong) = unsafe { (ObjectInfo::of_node(from), node_counts(from).get()) };
        labels.insert(
            i.address,
            (i.type_name, Some((strong & STRONG_MASK) as usize)),
        );
        note(&mut labels, &e);
        edges.push((i.address, e.address));
    }
    let mut adjacent: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(from, to) in &edges {
        adjacent.entry(from).or_default().push(to);
        adjacent.entry(to).or_default().push(from);
    }
    // Breadth-first over both directions, up to `depth` hops.
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
