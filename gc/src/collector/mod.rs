//! Collector layer: the per-thread generation lists, CPython's trial-deletion
//! cycle detection (`Python/gc.c`), thresholds and the 25 % rule, promotion of
//! survivors, freezing, and the PEP 442 destruction order for garbage. The
//! list primitives are in `list`, trial deletion in `trial`, what the API
//! above shares with the collector (flags, stats, callbacks, saved garbage)
//! in `events`. Acts on boxes only through the header (counts word, vtable):
//! it imports neither the pointer types nor introspection, which sit above.
//! [`collect_lists`] is the main function: read it first.
//!
//! # Lists
//!
//! Every tracked object is in exactly one circular doubly-linked list with a
//! sentinel head: generation 0, 1 or 2, the permanent (frozen) generation, or
//! a scratch list of the collection in progress. Sentinels are leaked once
//! per thread so that objects outliving the thread's other thread-locals can
//! still unlink themselves.
//!
//! # Cost
//!
//! The first phase walks the list once and gathers the nodes into a scratch
//! array (kept per thread between collections); every later phase iterates
//! that array, so the loads of successive nodes are independent instead of a
//! chain of dependent `next` loads. Marking reachable nodes and rebuilding
//! the lists is one sweep in list order (see `trial::mark_and_partition`), and
//! claiming the garbage (step 1 below) is folded into it. Freed garbage
//! boxes go to per-thread free lists (`freelist`) that the next tracked
//! allocations take them from.
//!
//! A young collection is skipped (everything promoted without tracing, the
//! collection still counted) while no object of the collected generations
//! is `PURPLE`, i.e. had its strong count decremented to a non-zero value
//! since a collection last examined it: such generations hold no garbage
//! (see [`note_decrement`]). Structures that are built without dropping
//! handles (a tree with parent pointers) are then never traced while young.
//!
//! Objects that can never be part of a cycle are not tracked at all (see
//! `Trace::INTERIOR_MUTABLE`); trial deletion treats them like any
//! reference from outside the collected set, so at worst they keep things
//! alive, never the other way round.
//!
//! # Destruction order (PEP 442)
//!
//! 1. take a strong reference to every unreachable object (so nothing in the
//!    set is freed while user code runs), mark weak references dead (those
//!    that exist now stay dead even if the object survives; see
//!    `header::WEAK_EPOCHS`);
//! 2. run `Finalize::finalize` once per object (flag `FINALIZED`);
//! 3. re-run trial deletion inside the set: objects a finalizer made
//!    reachable again are resurrected into the old generation, and weak
//!    references made since step 1 upgrade again;
//! 4. mark the rest `DROPPED`, drop their values (boxes stay allocated so
//!    cycles break safely), then release our strong references, which frees
//!    the boxes nobody else holds.
//!
//! When no object of the set has a finalizer left to run
//! (`Finalize::NEEDS_FINALIZE`), steps 2 and 3 are skipped: no user code
//! runs before step 4, so nothing can be resurrected.

use std::any::Any;
use std::cell::Cell;
use std::ptr;
use std::time::Instant;

use crate::collector::events::{CallbackInfo, DebugFlags, GenerationStats, Phase};
use crate::collector::list::{
    for_each, head, len, link_last, merge, push_back, sentinel, set_prev, unlink,
};
use crate::collector::trial::{find_unreachable, link_all, Partition};
use crate::header::{
    links, node_counts, release_strong_dropped, reopen_weak_refs, Links, NodePtr, DROPPED,
    FINALIZED, HEIGHT_BITS, PURPLE, TRACKED,
};

pub(crate) mod control;
pub(crate) mod events;
mod list;
mod trial;

pub(crate) use crate::collector::trial::visit_node;

/// Number of generations (as in CPython).
pub(crate) const NUM_GENERATIONS: usize = 3;
/// CPython's default thresholds: 700 net allocations of tracked objects
/// trigger a generation-0 collection; every 10 of those a generation-1 one;
/// every 10 of those a full one (subject to the 25 % rule).
pub(crate) const DEFAULT_THRESHOLDS: [usize; NUM_GENERATIONS] = [700, 10, 10];

struct Generation {
    head: Links,
    threshold: Cell<usize>,
    count: Cell<usize>,
}

impl Generation {
    const fn new(threshold: usize) -> Self {
        Generation {
            head: sentinel(),
            threshold: Cell::new(threshold),
            count: Cell::new(0),
        }
    }
}

/// Per-thread collector state. Only `Cell`s of `Copy` data, const
/// initialised and without a destructor: it is usable at any point of thread
/// teardown, and never borrowed across user code.
pub(crate) struct Core {
    gens: [Generation; NUM_GENERATIONS],
    permanent: Links,
    unreachable: Links,
    /// Generation-0 count above which an allocation considers collecting:
    /// the threshold, or `usize::MAX` when automatic collection is off, so
    /// the allocation fast path tests one word.
    trigger: Cell<usize>,
    enabled: Cell<bool>,
    collecting: Cell<bool>,
    debug: Cell<DebugFlags>,
    long_lived_total: Cell<usize>,
    long_lived_pending: Cell<usize>,
    /// Bit `g` set: an object of generations `0..=g` may be
    /// [`PURPLE`]; see [`note_decrement`]. Also holds [`EXITED`].
    purple_gens: Cell<u8>,
    stats: Cell<[GenerationStats; NUM_GENERATIONS]>,
}

thread_local! {
    static CORE: Core = const {
        Core {
            gens: [
                Generation::new(DEFAULT_THRESHOLDS[0]),
                Generation::new(DEFAULT_THRESHOLDS[1]),
                Generation::new(DEFAULT_THRESHOLDS[2]),
            ],
            permanent: sentinel(),
            unreachable: sentinel(),
            trigger: Cell::new(DEFAULT_THRESHOLDS[0]),
            enabled: Cell::new(true),
            collecting: Cell::new(false),
            debug: Cell::new(DebugFlags::empty()),
            long_lived_total: Cell::new(0),
            long_lived_pending: Cell::new(0),
            purple_gens: Cell::new(0),
            stats: Cell::new([GenerationStats::ZERO; NUM_GENERATIONS]),
        }
    };
}

/// Runs one full collection when its thread exits (unless the collector is
/// disabled or in SAVEALL mode), as CPython collects once more at
/// interpreter shutdown: garbage cycles the thread left behind are
/// freed instead of leaking with its generation lists. Registered when the
/// thread first uses generation 0 (its first tracked object, at the
/// latest), so thread-locals made before it are destroyed after it (their
/// destructors run in reverse order): `Gc`s they hold are still outside
/// references then.
///
/// Such a later destructor can leave garbage cycles behind as it drops its
/// `Gc`s. Their first decrement registers [`LATE_EXIT_COLLECTION`] (see
/// [`EXITED`]), which runs once that destructor is done. Cycles that become
/// garbage after the late collection still leak.
struct ExitCollection;

impl Drop for ExitCollection {
    fn drop(&mut self) {
        // SAVEALL would keep the garbage in a list that dies with the
        // thread: nothing to gain.
        let run = CORE.with(|c| {
            c.purple_gens.set(c.purple_gens.get() | EXITED);
            c.enabled.get() && !c.debug.get().contains(DebugFlags::SAVEALL)
        });
        if !run {
            return;
        }
        // A panic escaping a thread-local destructor aborts the process.
        if std::panic::catch_unwind(|| collect(NUM_GENERATIONS - 1)).is_err() {
            eprintln!(
                "strata_gc: a finalizer or Drop impl panicked in the collection at thread exit"
            );
        }
    }
}

thread_local! {
    static EXIT_COLLECTION: ExitCollection = const { ExitCollection };
    /// The second exit collection, for cycles that later thread-local
    /// destructors leave behind.
    static LATE_EXIT_COLLECTION: ExitCollection = const { ExitCollection };
}

/// [`Core::purple_gens`] bit: an exit collection has started, so the next
/// object to turn [`PURPLE`] registers [`LATE_EXIT_COLLECTION`] (once:
/// turning purple clears the bit).
const EXITED: u8 = 1 << 7;

/// Register the thread's [`ExitCollection`] (first use of generation 0).
#[cold]
#[inline(never)]
fn register_exit_collection() {
    // Fails only if the thread is already being torn down: then nothing is
    // collected at exit.
    let _ = EXIT_COLLECTION.try_with(|_| ());
}

/// Register the late exit collection (a decrement after the first one
/// started). Registering a thread-local destructor while destructors run
/// is allowed: it runs after the current one. Fails harmlessly once the
/// late collection itself has run.
#[cold]
#[inline(never)]
fn register_late_exit_collection() {
    let _ = LATE_EXIT_COLLECTION.try_with(|_| ());
}

impl Core {
    #[inline]
    fn gen_head(&self, g: usize) -> NodePtr {
        let l = &self.gens[g].head;
        // The same first-use test as `head`'s, so it costs nothing after.
        if g == 0 && l.next.get().is_null() {
            register_exit_collection();
        }
        head(l)
    }
}

// ---------------------------------------------------------------------------
// Hooks used by the pointer layer
// ---------------------------------------------------------------------------

/// Count one more tracked allocation in generation 0, collect if the
/// thresholds say so, then link the new object into generation 0.
///
/// # Safety
///
/// `node` is a live, initialised tracked box in no list and without `prev`
/// flags, to which the caller holds the only strong reference, and whose
/// counts word already carries `TRACKED` (written with the rest of the
/// word: setting the bit here would be a narrow store that stalls the next
/// full read of the word; until the node is linked nobody can look at it).
#[inline]
pub(crate) unsafe fn track_new(node: NodePtr) {
    CORE.with(|core| {
        let g0 = &core.gens[0];
        let count = g0.count.get() + 1;
        g0.count.set(count);
        if count > core.trigger.get() {
            // `node` is in no list yet: the collection treats it (and what
            // it references) as outside the collected set.
            collect_on_alloc(core);
        }
        // SAFETY: generation 0 is a valid list whenever user code can run;
        // the caller guarantees `node` is live and unlinked, and a new
        // object has no `prev` flags.
        unsafe { link_last(core.gen_head(0), node, 0) }
    });
}

/// Link an untracked object into generation 0 again (see `Gc::get_mut`),
/// counting it as a new tracked object; the next allocation may collect.
///
/// # Safety
///
/// `node` is a live, initialised tracked box in no list.
pub(crate) unsafe fn retrack(node: NodePtr) {
    CORE.with(|core| {
        let g0 = &core.gens[0];
        g0.count.set(g0.count.get() + 1);
        // SAFETY: generation 0 is a valid list whenever user code can run;
        // the caller guarantees `node` is live and unlinked.
        unsafe {
            push_back(core.gen_head(0), node);
            // The height bits of an untracked object become the (clear)
            // weak epoch of a tracked one, and it is not purple: its next
            // decrement must tell the collector.
            let c = node_counts(node);
            c.word
                .set((c.word.get() & !(HEIGHT_BITS | PURPLE)) | TRACKED);
        }
    });
}

/// The allocation counter crossed the threshold: collect unless a
/// collection is already running.
#[cold]
#[inline(never)]
fn collect_on_alloc(core: &Core) {
    if !core.collecting.get() {
        collect_generations(core);
    }
}

/// Recompute [`Core::trigger`] after the threshold or `enabled` changed.
fn update_trigger(core: &Core) {
    let t = core.gens[0].threshold.get();
    core.trigger.set(if t != 0 && core.enabled.get() {
        t
    } else {
        usize::MAX
    });
}

/// Remove a dying object (strong count 0, or moved out by `try_unwrap`)
/// from whatever list holds it (if any). Its `TRACKED` bit is left as it
/// is: nobody can ask a dying object, and [`is_linked`] ignores the bit
/// once `DROPPED` is set.
///
/// # Safety
///
/// `node` is a live tracked box that no strong handle can reach any more;
/// no collection phase that reuses `prev` is running (true whenever user
/// code runs).
#[inline]
pub(crate) unsafe fn untrack(node: NodePtr) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if node_counts(node).word.get() & TRACKED == 0 {
            return;
        }
        unlink(node);
    }
    CORE.with(|core| {
        let g0 = &core.gens[0];
        g0.count.set(g0.count.get().saturating_sub(1));
    });
}

/// A tracked object just turned [`PURPLE`]: some generation may now hold
/// garbage.
///
/// # Why young collections may be skipped
///
/// A set of young objects that is garbage has no reference from outside
/// itself, although each member had one when it was created (the handle
/// `Gc::new` returned) or when a collection last found it reachable. The
/// last such outside reference cannot have been moved into the set (that
/// needs a borrow of a member, rooted in yet another outside reference), so
/// it was dropped: a decrement to a non-zero count of a member, after the
/// member was last examined. That member is purple. So while no object of
/// generations `0..=g` is purple, a collection of generation `g` would find
/// nothing and just promotes everything: [`collect_lists`] does that
/// without tracing. (Code that builds a cycle through raw pointers, with no
/// decrement at all, gets it collected by the next full collection, which is
/// never skipped.)
#[inline]
pub(crate) fn note_decrement() {
    CORE.with(|core| {
        if core.purple_gens.replace(ALL_GENS) & EXITED != 0 {
            register_late_exit_collection();
        }
    });
}

/// Every bit of [`Core::purple_gens`].
const ALL_GENS: u8 = (1 << NUM_GENERATIONS) - 1;

/// Is `node` in a generation list?
///
/// # Safety
///
/// `node` is a live tracked box.
pub(crate) unsafe fn is_linked(node: NodePtr) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { node_counts(node) }.word.get() & (TRACKED | DROPPED) == TRACKED
}

/// Scratch array of nodes reused across collections (a `Cell` so that it is
/// simply taken and put back; during thread teardown a fresh one is used).
struct Scratch(Cell<Vec<NodePtr>>);

thread_local! {
    static SCRATCH: Scratch = const { Scratch(Cell::new(Vec::new())) };
}

/// Largest scratch array kept between collections (64 Ki nodes, 512 KiB):
/// enough for young collections, without pinning the memory of a big full
/// collection.
const SCRATCH_KEEP: usize = 1 << 16;

fn take_scratch() -> Vec<NodePtr> {
    SCRATCH.try_with(|s| s.0.take()).unwrap_or_default()
}

fn put_scratch(mut v: Vec<NodePtr>) {
    v.clear();
    if v.capacity() <= SCRATCH_KEEP {
        let _ = SCRATCH.try_with(move |s| s.0.set(v));
    }
}

// ---------------------------------------------------------------------------
// Collection driver
// ---------------------------------------------------------------------------

/// Keeps the first panic raised by user code during a collection.
#[derive(Default)]
pub(crate) struct PanicSlot(Option<Box<dyn Any + Send>>);

impl PanicSlot {
    pub(crate) fn run(&mut self, f: impl FnOnce()) {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            if self.0.is_none() {
                self.0 = Some(p);
            }
        }
    }
}

/// CPython's `gc_collect_generations`: collect the oldest generation whose
/// count exceeds its threshold, skipping full collections while fewer than
/// 25 % of the long-lived objects are new since the last full one.
fn collect_generations(core: &Core) -> usize {
    for g in (0..NUM_GENERATIONS).rev() {
        let gen = &core.gens[g];
        if gen.count.get() > gen.threshold.get() {
            if g == NUM_GENERATIONS - 1
                && core.long_lived_pending.get() < core.long_lived_total.get() / 4
            {
                continue;
            }
            return collect_with_callbacks(core, g);
        }
    }
    0
}

/// Run a collection of generation `g` (and younger), with callbacks; returns
/// the number of unreachable objects found. Does nothing (returns 0) while a
/// collection is already running.
pub(crate) fn collect(g: usize) -> usize {
    CORE.with(|core| collect_with_callbacks(core, g))
}

fn collect_with_callbacks(core: &Core, g: usize) -> usize {
    if core.collecting.replace(true) {
        return 0;
    }
    let mut panics = PanicSlot::default();
    let mut info = CallbackInfo {
        generation: g,
        collected: 0,
        uncollectable: 0,
    };
    run_callbacks(Phase::Start, &info, &mut panics);
    let start = Instant::now();
    let (collected, uncollectable) = collect_main(core, g, &mut panics);
    let elapsed = start.elapsed();
    let mut stats = core.stats.get();
    stats[g].collections += 1;
    stats[g].collected += collected;
    stats[g].uncollectable += uncollectable;
    stats[g].duration += elapsed;
    core.stats.set(stats);
    if core.debug.get().contains(DebugFlags::STATS) {
        eprintln!(
            "strata_gc: done, {collected} unreachable, {uncollectable} uncollectable, {:.4}s elapsed",
            elapsed.as_secs_f64()
        );
    }
    info.collected = collected;
    info.uncollectable = uncollectable;
    run_callbacks(Phase::Stop, &info, &mut panics);
    core.collecting.set(false);
    if let Some(p) = panics.0 {
        std::panic::resume_unwind(p);
    }
    collected
}

/// CPython's `gc_collect_main`; returns (unreachable found, saved by SAVEALL).
fn collect_main(core: &Core, g: usize, panics: &mut PanicSlot) -> (usize, usize) {
    let debug = core.debug.get();
    if debug.contains(DebugFlags::STATS) {
        let (a, b, c) = counts(core);
        eprintln!("strata_gc: collecting generation {g}...");
        eprintln!("strata_gc: objects in each generation: {a} {b} {c}");
    }
    if g + 1 < NUM_GENERATIONS {
        let next = &core.gens[g + 1];
        next.count.set(next.count.get() + 1);
    }
    for gen in &core.gens[..=g] {
        gen.count.set(0);
    }
    let young = core.gen_head(g);
    let old = if g + 1 < NUM_GENERATIONS {
        core.gen_head(g + 1)
    } else {
        young
    };
    let mut nodes = take_scratch();
    let out = collect_lists(core, g, young, old, &mut nodes, panics);
    put_scratch(nodes);
    out
}

/// Run the callbacks registered in `events` for `phase`; a panic is kept in
/// `panics` and the next callback still runs.
fn run_callbacks(phase: Phase, info: &CallbackInfo, panics: &mut PanicSlot) {
    for cb in events::callbacks() {
        panics.run(|| cb(phase, info));
    }
}

/// The body of [`collect_main`] once the lists to collect are known
/// (CPython's `gc_collect_region`): the PEP 442 steps of the module docs,
/// one function each, in order. Returns (unreachable found, saved by
/// SAVEALL).
fn collect_lists(
    core: &Core,
    g: usize,
    young: NodePtr,
    old: NodePtr,
    nodes: &mut Vec<NodePtr>,
    panics: &mut PanicSlot,
) -> (usize, usize) {
    let unreachable = head(&core.unreachable);
    let saveall = core.debug.get().contains(DebugFlags::SAVEALL);
    if g + 1 < NUM_GENERATIONS && core.purple_gens.get() & (1 << g) == 0 {
        promote_untraced(core, g, young, old);
        return (0, 0);
    }
    // Step 1: trial deletion; the garbage is left in `nodes`, claimed.
    let part = deduce_unreachable(core, g, young, old, nodes, saveall);
    let found = nodes.len();
    if found == 0 {
        return (0, 0);
    }
    if !saveall && !part.needs_finalize {
        // No finalizer to run: no user code runs before the values are
        // dropped, so nothing can be resurrected; go straight to destruction.
        // SAFETY: every node in `nodes` is claimed by `deduce_unreachable`
        // and marked DROPPED.
        unsafe { destroy(nodes, panics) };
        return (found, 0);
    }
    // SAFETY: `unreachable` is empty and valid; `nodes` is the garbage.
    unsafe { link_all(unreachable, nodes) };
    if saveall {
        // SAFETY: `nodes` is the claimed garbage, now linked in `unreachable`.
        unsafe { save_all_garbage(nodes, unreachable, old) };
        return (found, found);
    }
    // Step 2. SAFETY: `nodes` is the claimed garbage, linked in `unreachable`.
    unsafe { finalize_garbage(nodes, panics) };
    // Step 3. SAFETY: `unreachable` still holds exactly the garbage (nothing
    // unlinks a claimed node), each with our hold of 1 and its value alive.
    unsafe { handle_resurrected_objects(core, unreachable, old, nodes) };
    // Step 4. SAFETY: `nodes` is the final garbage, in no list, each held
    // by us.
    unsafe { delete_garbage(nodes, panics) };
    (found, 0)
}

/// A skipped young collection: no young object is purple, so there is no
/// young garbage (see [`note_decrement`]); promote everything without
/// tracing.
fn promote_untraced(core: &Core, g: usize, young: NodePtr, old: NodePtr) {
    // SAFETY: all lists are valid and no user code runs here.
    unsafe {
        for i in 0..g {
            merge(core.gen_head(i), young);
        }
        if g == NUM_GENERATIONS - 2 {
            core.long_lived_pending
                .set(core.long_lived_pending.get() + len(young));
        }
        merge(young, old);
    }
}

/// Step 1 (CPython's `deduce_unreachable`): merge generations `0..=g` into
/// `young`, run trial deletion over it and promote the survivors into
/// `old`; the garbage is left in `nodes`, in no list.
///
/// Every unreachable node is claimed right away: a strong reference of
/// ours keeps it allocated while user code runs, and weak references stop
/// upgrading (those of the time for good: see `header::WEAK_EPOCHS`). Unless SAVEALL keeps them, the nodes are also marked DROPPED
/// tentatively, undone by [`finalize_garbage`] if a finalizer has to run
/// first (the nodes are then put in `unreachable`: only a strong count
/// reaching 0 or try_unwrap, which needs strong == 1, unlinks a node, and
/// neither touches a DROPPED one).
fn deduce_unreachable(
    core: &Core,
    g: usize,
    young: NodePtr,
    old: NodePtr,
    nodes: &mut Vec<NodePtr>,
    saveall: bool,
) -> Partition {
    // Claiming also clears the weak references (`clear_weak_refs`).
    let claim = if saveall { 0 } else { DROPPED };
    // SAFETY: all lists are valid (no collection is running, user code is not
    // running inside this function until `mark_and_partition` has rebuilt the
    // lists).
    unsafe {
        for i in 0..g {
            merge(core.gen_head(i), young);
        }
        let part = find_unreachable(young, 0, nodes, Some(claim));
        // Every object of generations 0..=g was examined and unflagged
        // (objects that user code decrements from here on flag themselves
        // again).
        core.purple_gens
            .set(core.purple_gens.get() & !((2 << g) - 1));
        if !ptr::eq(young, old) {
            if g == NUM_GENERATIONS - 2 {
                core.long_lived_pending
                    .set(core.long_lived_pending.get() + part.kept);
            }
            merge(young, old);
        } else {
            core.long_lived_pending.set(0);
            core.long_lived_total.set(part.kept);
        }
        part
    }
}

/// SAVEALL instead of steps 2 to 4: hand our hold on each garbage object
/// over to the garbage list and keep the objects in the old generation.
///
/// # Safety
///
/// `nodes` is the claimed garbage of [`deduce_unreachable`], linked into
/// `unreachable` (a valid list); `old` is a valid list.
unsafe fn save_all_garbage(nodes: &[NodePtr], unreachable: NodePtr, old: NodePtr) {
    // SAFETY: guaranteed by the caller; each hold is handed over to the
    // garbage list.
    unsafe {
        for &n in nodes.iter() {
            // Kept alive by the list: weak references made from now on
            // upgrade, those cleared at the claim stay dead.
            let c = node_counts(n);
            c.word.set(reopen_weak_refs(c.word.get()));
            events::save_garbage(n);
        }
        merge(unreachable, old);
    }
}

/// Step 2 (CPython's `finalize_garbage`): run `Finalize::finalize` once per
/// object while the graph is fully intact.
///
/// # Safety
///
/// `nodes` is the claimed garbage of [`deduce_unreachable`], linked into a
/// list; the values are alive.
unsafe fn finalize_garbage(nodes: &[NodePtr], panics: &mut PanicSlot) {
    // SAFETY: nodes stay in their list (see `deduce_unreachable`);
    // `FINALIZED` guarantees at most one call per object; the values are
    // alive.
    unsafe {
        for &n in nodes.iter() {
            let c = node_counts(n);
            c.word.set(c.word.get() & !DROPPED);
        }
        for &n in nodes.iter() {
            let l = links(n);
            if l.prev_bits() & FINALIZED == 0 {
                l.set_prev_bits(l.prev_bits() | FINALIZED);
                if l.vtable.needs_finalize {
                    panics.run(|| (l.vtable.finalize)(n));
                }
            }
        }
    }
}

/// Step 3 (CPython's `handle_resurrected_objects`): re-check reachability
/// inside the garbage, since finalizers may have resurrected objects.
/// Afterwards `nodes` is the final garbage (in no list), and the resurrected
/// objects are in `old`, our holds on them dropped.
///
/// # Safety
///
/// `unreachable` is a valid list holding exactly the garbage of
/// [`deduce_unreachable`], each node with our hold of 1 and a live value;
/// `old` is a valid list.
unsafe fn handle_resurrected_objects(
    core: &Core,
    unreachable: NodePtr,
    old: NodePtr,
    nodes: &mut Vec<NodePtr>,
) {
    // SAFETY: guaranteed by the caller; no user code runs during
    // find_unreachable.
    unsafe {
        find_unreachable(unreachable, 1, nodes, None);
        // Now `unreachable` holds the resurrected objects, and `nodes` the
        // final garbage.
        // Dropping our holds is a decrement like any other: the
        // resurrected objects are purple. They live on, so weak references
        // made since the claim (or from now on) upgrade; those that existed
        // at the claim belong to the previous epoch and stay dead, as
        // PEP 442 clears only the weak references of that time.
        for_each(unreachable, |n| {
            let c = node_counts(n);
            debug_assert!(c.strong.get() > 1);
            c.strong.set(c.strong.get() - 1);
            c.word.set(reopen_weak_refs(c.word.get()) | PURPLE);
        });
        core.purple_gens.set(core.purple_gens.get() | ALL_GENS);
        merge(unreachable, old);
    }
}

/// Step 4 (CPython's `delete_garbage`): mark the final garbage `DROPPED`,
/// then [`destroy`] it.
///
/// # Safety
///
/// `nodes` is the final garbage of [`handle_resurrected_objects`]: in no
/// list, each held by one strong reference of ours, values alive.
unsafe fn delete_garbage(nodes: &[NodePtr], panics: &mut PanicSlot) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        for &n in nodes.iter() {
            let c = node_counts(n);
            c.word.set(c.word.get() | DROPPED);
        }
        destroy(nodes, panics);
    }
}

/// Drop the values of the garbage (all boxes stay allocated, so cycles break
/// safely), then release our holds, which frees the boxes nobody else holds.
///
/// # Safety
///
/// `nodes` are in no list (as `find_unreachable` leaves its garbage),
/// each marked `DROPPED` and held by one strong reference of ours; their
/// values are alive.
unsafe fn destroy(nodes: &[NodePtr], panics: &mut PanicSlot) {
    // SAFETY: guaranteed by the caller. Nothing unlinks or relinks a
    // DROPPED node, so user code leaves the nodes' links alone.
    unsafe {
        // One unwind guard for the whole loop, re-entered after a panic at
        // the next node.
        let mut i = 0;
        while i < nodes.len() {
            panics.run(|| {
                while let Some(&n) = nodes.get(i) {
                    i += 1;
                    (links(n).vtable.drop_value)(n);
                }
            });
        }
        for &n in nodes {
            let l = links(n);
            l.next.set(ptr::null());
            set_prev(n, ptr::null());
            release_strong_dropped(n);
        }
    }
}

pub(crate) fn counts(core: &Core) -> (usize, usize, usize) {
    (
        core.gens[0].count.get(),
        core.gens[1].count.get(),
        core.gens[2].count.get(),
    )
}
