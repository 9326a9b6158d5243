//! Sync layer: the concurrent cycle collector — scan, decision,
//! finalization and destruction of one collection (the algorithm and why
//! it is sound are in the `sync` module's documentation).

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::Instant;

use super::boxed::{
    count_overflow, epoch_of, header, release_last, release_weak, Header, CANDIDATE, COLLECTING,
    COUNT, COUNT_LIMIT, DIRTY, DROPPED, EPOCH, EPOCHS, EPOCH_SHIFT, FINALIZED, NO_UPGRADE, OLD,
    SEALING, STRONG,
};
use super::buffer;
use super::control::{self, Stats};
use super::shim::{global, lock, Mutex, Ordering};
use crate::collector::events::{CallbackInfo, Phase};
use crate::header::{HeldGuard, SyncSink, VisitMode, Visitor};

/// What survives from one collection to the next: the candidates that are
/// old (they wait for a full collection, still `CANDIDATE`) and the
/// long-lived counts of CPython's rule for full collections.
struct Generations {
    old_candidates: Vec<NonNull<Header>>,
    /// Objects that survived the last full collection.
    long_lived_total: usize,
    /// Objects that became old since.
    long_lived_pending: usize,
}

// SAFETY: the candidates are boxes kept allocated by the candidate stack's
// weak reference; only the collector (holding the mutex) touches them.
unsafe impl Send for Generations {}

global! {
    /// Held for the whole of a collection: one at a time.
    static COLLECTION: Mutex<Generations> = Mutex::new(Generations {
        old_candidates: Vec::new(),
        long_lived_total: 0,
        long_lived_pending: 0,
    });
}

#[cfg(not(loom))]
thread_local! {
    /// This thread runs a collection (a finalizer or `Drop` impl calling
    /// `collect` gets 0 instead of a deadlock).
    static COLLECTING_HERE: Cell<bool> = const { Cell::new(false) };
}

#[cfg(loom)]
loom::thread_local! {
    static COLLECTING_HERE: Cell<bool> = Cell::new(false);
}

/// Whether a collection is running on any thread.
pub(crate) fn is_running() -> bool {
    matches!(
        COLLECTION.try_lock(),
        Err(std::sync::TryLockError::WouldBlock)
    )
}

/// Whether this thread is running a sync collection.
pub(crate) fn collecting_here() -> bool {
    COLLECTING_HERE.try_with(Cell::get).unwrap_or(false)
}

/// How a collection was asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// `sync::collect()`: full, waits for a collection in progress.
    Explicit,
    /// The candidate threshold: young (full by CPython's rule), skipped if
    /// another collection is running.
    Automatic,
}

/// Run a collection; returns the number of unreachable objects found.
pub(crate) fn collect(trigger: Trigger) -> usize {
    if collecting_here() {
        return 0;
    }
    let mut gens = match trigger {
        Trigger::Explicit => lock(&COLLECTION),
        Trigger::Automatic => match COLLECTION.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return 0,
        },
    };
    let full = trigger == Trigger::Explicit || gens.long_lived_pending > gens.long_lived_total / 4;
    let _here = CollectingHere::enter();
    let start = Instant::now();
    let mut panics = PanicSlot(None);
    let info = CallbackInfo {
        generation: if full { 1 } else { 0 },
        collected: 0,
        uncollectable: 0,
    };
    let callbacks = control::callbacks();
    for cb in &callbacks {
        panics.run(|| cb(Phase::Start, &info));
    }
    let mut stats = Stats {
        collections: 1,
        full_collections: full as usize,
        ..Stats::default()
    };
    let collected = collect_once(&mut gens, full, &mut stats, &mut panics);
    stats.collected = collected;
    stats.duration = start.elapsed();
    control::set_survivors(stats.scanned - collected);
    drop(gens);
    control::record(&stats);
    let info = CallbackInfo { collected, ..info };
    for cb in &callbacks {
        panics.run(|| cb(Phase::Stop, &info));
    }
    if let Some(p) = panics.0 {
        resume_unwind(p);
    }
    collected
}

/// Marks this thread as collecting for as long as it lives.
struct CollectingHere;

impl CollectingHere {
    fn enter() -> Self {
        let _ = COLLECTING_HERE.try_with(|c| c.set(true));
        CollectingHere
    }
}

impl Drop for CollectingHere {
    fn drop(&mut self) {
        let _ = COLLECTING_HERE.try_with(|c| c.set(false));
    }
}

/// Keeps the first panic raised by user code during a collection; the
/// collection finishes and then resumes it.
struct PanicSlot(Option<Box<dyn std::any::Any + Send>>);

impl PanicSlot {
    /// Run `f`; returns whether it returned without panicking.
    fn run(&mut self, f: impl FnOnce()) -> bool {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => true,
            Err(p) => {
                self.0.get_or_insert(p);
                false
            }
        }
    }
}

/// Per-object state of a scan.
const ROOT: u8 = 1;
const REACHED: u8 = 2;
/// A root only because its edges are unknown (a lock was taken, or its
/// `trace` panicked): it goes back on the candidate stack, young.
const UNKNOWN: u8 = 4;
/// Has an edge to an old box that a young collection left out: the old
/// part may close a cycle through it, so it waits, a candidate, for the
/// next full collection.
const REACHES_OLD: u8 = 8;
/// Already claimed (`NO_UPGRADE`) when a re-scan decides it again.
const CLAIMED: u8 = 16;

/// The subgraph one collection looks at: the boxes it holds (each with a
/// strong reference and `COLLECTING`), the edges its trace found between
/// them, and the guards keeping those edges in place.
struct Scan {
    /// Whether old boxes are scanned too (a full collection).
    full: bool,
    objects: Vec<NonNull<Header>>,
    /// `edges[starts[i]..starts[i + 1]]` are the targets of object `i`.
    starts: Vec<usize>,
    edges: Vec<usize>,
    marks: Vec<u8>,
    /// The strong count of each object when [`find_roots`](Scan::find_roots)
    /// read it, which the decision compares with the count it finds.
    counts: Vec<u64>,
    held: Vec<HeldGuard>,
    /// The object being traced reported a lock it could not take.
    locked_out: bool,
    /// The object being traced has an edge this young collection left out.
    reaches_old: bool,
    /// A re-scan of held objects only: edges to boxes outside it (whose
    /// slot is [`OUTSIDE`]) are left out and nothing new is held.
    within: bool,
}

/// The slot of a held box that a re-scan leaves out.
const OUTSIDE: usize = usize::MAX;

impl SyncSink for Scan {
    fn edge(&mut self, node: NonNull<u8>) {
        if let Some(i) = self.adopt_edge(node.cast()) {
            self.edges.push(i);
        }
    }

    fn keep(&mut self, guard: HeldGuard) {
        self.held.push(guard);
    }

    fn locked_out(&mut self) {
        self.locked_out = true;
    }
}

impl Scan {
    fn new(full: bool) -> Self {
        Scan {
            full,
            objects: Vec::new(),
            starts: Vec::new(),
            edges: Vec::new(),
            marks: Vec::new(),
            counts: Vec::new(),
            held: Vec::new(),
            locked_out: false,
            reaches_old: false,
            within: false,
        }
    }

    /// Hold `h` (a strong reference plus `COLLECTING`; `DIRTY` and the bits
    /// of `clear` cleared) and give it the next index.
    fn hold(&mut self, h: NonNull<Header>, cur: u64, clear: u64) -> Result<usize, u64> {
        let hd = header(h);
        if cur & COUNT >= COUNT_LIMIT {
            count_overflow();
        }
        // Acquire (in `STRONG`): what the handles' owners wrote into the
        // value happens before the trace reads it.
        hd.strong
            .compare_exchange_weak(
                cur,
                ((cur + 1) | COLLECTING) & !(DIRTY | clear),
                STRONG,
                Ordering::Relaxed,
            )
            .map(|_| {
                let i = self.objects.len();
                hd.set_index(i);
                self.objects.push(h);
                self.marks.push(0);
                i
            })
    }

    /// The index of the box an edge of a scanned object points to, holding
    /// it first if new; `None` for a box left out (old in a young
    /// collection, or already dropped by the collector).
    fn adopt_edge(&mut self, h: NonNull<Header>) -> Option<usize> {
        let strong = &header(h).strong;
        let mut cur = strong.load(Ordering::Relaxed);
        loop {
            if cur & COLLECTING != 0 {
                let slot = header(h).index();
                return (slot != OUTSIDE).then_some(slot);
            }
            if !self.within && !self.full && cur & OLD != 0 {
                self.reaches_old = true;
                return None;
            }
            if self.within || cur & DROPPED != 0 {
                return None;
            }
            // The count is not zero: the scanned object's field holds a
            // strong reference, and the scan holds that object.
            match self.hold(h, cur, 0) {
                Ok(i) => return Some(i),
                Err(now) => cur = now,
            }
        }
    }

    /// Adopt a candidate taken off the stack: hold it unless its value is
    /// gone, clearing `CANDIDATE` in the same step (see `buffer`), then
    /// give up the stack's weak reference (which may free the box). An old
    /// candidate in a young collection waits, still a candidate, for a
    /// full one.
    fn adopt_candidate(&mut self, h: NonNull<Header>, gens: &mut Generations) {
        let strong = &header(h).strong;
        let mut cur = strong.load(Ordering::Relaxed);
        loop {
            let gone = cur & COUNT == 0 || cur & DROPPED != 0;
            if !gone && !self.full && cur & OLD != 0 {
                gens.old_candidates.push(h);
                return;
            }
            let done = if gone || cur & COLLECTING != 0 {
                strong
                    .compare_exchange_weak(cur, cur & !CANDIDATE, STRONG, Ordering::Relaxed)
                    .map(drop)
            } else {
                self.hold(h, cur, CANDIDATE).map(drop)
            };
            match done {
                Ok(()) => break,
                Err(now) => cur = now,
            }
        }
        // SAFETY: the stack's weak reference, which `take_all` handed over.
        unsafe { release_weak(h) };
    }

    /// Trace every held object, in the order held, holding what they reach.
    /// An object whose `trace` panics is a root (the edges it did not
    /// report only make their targets look referenced from outside).
    fn trace_all(&mut self, panics: &mut PanicSlot) {
        // The visitor reaches the scan through this pointer while `trace`
        // runs, so between calls the scan is used through it too (a use of
        // `self` would invalidate it).
        let this: *mut Scan = self;
        let sink: *mut dyn SyncSink = this;
        // SAFETY: `this` is `self`, borrowed mutably for the whole loop; no
        // other reference to the scan is live where the loop uses it (the
        // visitor's uses end when `trace` returns). The scan holds each `h`,
        // so its value is alive, and `trace` reaches the scan only through
        // the visitor (the `Trace` contract).
        unsafe {
            let mut i = 0;
            loop {
                let scan = &mut *this;
                let Some(&h) = scan.objects.get(i) else { break };
                scan.starts.push(scan.edges.len());
                scan.locked_out = false;
                scan.reaches_old = false;
                let mut v = Visitor::new(VisitMode::Sync(sink));
                let traced = panics.run(|| (header(h).vtable.trace)(h, &mut v));
                let scan = &mut *this;
                if scan.locked_out || !traced {
                    scan.marks[i] |= ROOT | UNKNOWN;
                }
                if scan.reaches_old {
                    scan.marks[i] |= REACHES_OLD;
                }
                i += 1;
            }
        }
        self.starts.push(self.edges.len());
    }

    /// Objects whose strong references are not all explained by the edges
    /// the scan saw, or that gained a handle since the scan held them.
    /// Called with every guard still kept: the edges are as traced.
    fn find_roots(&mut self) {
        let mut refs: Vec<i64> = Vec::with_capacity(self.objects.len());
        self.counts.clear();
        for &h in &self.objects {
            let w = header(h).strong.load(STRONG);
            self.counts.push(w & COUNT);
            // Minus the scan's own hold.
            refs.push(if w & DIRTY != 0 {
                i64::MAX
            } else {
                (w & COUNT) as i64 - 1
            });
        }
        for &t in &self.edges {
            refs[t] = refs[t].saturating_sub(1);
        }
        for (m, r) in self.marks.iter_mut().zip(&refs) {
            // A negative count means a `Trace` impl visited a `Gc` twice:
            // keep the object rather than trust it.
            if *r != 0 {
                *m |= ROOT;
            }
        }
    }

    /// Mark everything reachable from the objects marked `ROOT`, or from
    /// `from` only if given.
    fn mark_from(&mut self, from: Option<&[usize]>) {
        let mut stack: Vec<usize> = match from {
            Some(f) => f.to_vec(),
            None => (0..self.objects.len())
                .filter(|&i| self.marks[i] & ROOT != 0)
                .collect(),
        };
        for &i in &stack {
            self.marks[i] |= REACHED;
        }
        while let Some(i) = stack.pop() {
            for &t in &self.edges[self.starts[i]..self.starts[i + 1]] {
                if self.marks[t] & REACHED == 0 {
                    self.marks[t] |= REACHED;
                    stack.push(t);
                }
            }
        }
    }

    fn unreached(&self) -> Vec<usize> {
        (0..self.objects.len())
            .filter(|&i| self.marks[i] & REACHED == 0)
            .collect()
    }

    /// Decide the fate of `garbage` (the unreached objects) and return what
    /// stays garbage, its weak handles cleared. Each box is sealed (an
    /// `upgrade` waits) and its strong word compared with what
    /// [`find_roots`](Scan::find_roots) read: one that gained a handle
    /// (`DIRTY`) or whose count moved since is reachable after all, and so
    /// is everything it reaches; the rest is claimed (`NO_UPGRADE`) and
    /// unsealed, and marked `DROPPED` in the same step if `drop_now` (no
    /// finalizer will run: nothing can reach the values before they are
    /// dropped). Runs no user code: this is the only wait an `upgrade` can
    /// have on the collector.
    fn decide(&mut self, mut garbage: Vec<usize>, drop_now: bool) -> Vec<usize> {
        let mut changed = Vec::new();
        for &i in &garbage {
            let old = header(self.objects[i]).strong.fetch_or(SEALING, STRONG);
            if old & DIRTY != 0 || old & COUNT != self.counts[i] {
                changed.push(i);
            }
            if old & NO_UPGRADE != 0 {
                self.marks[i] |= CLAIMED;
            }
        }
        if !changed.is_empty() {
            self.mark_from(Some(&changed));
            for &i in &garbage {
                if self.marks[i] & REACHED != 0 {
                    header(self.objects[i]).strong.fetch_and(!SEALING, STRONG);
                }
            }
            garbage.retain(|&i| self.marks[i] & REACHED == 0);
        }
        let dropped = if drop_now { DROPPED } else { 0 };
        for &i in &garbage {
            let strong = &header(self.objects[i]).strong;
            // Claim and unseal in one step: an upgrade that waited sees
            // `NO_UPGRADE` as `SEALING` goes. With `SEALING` set and
            // `NO_UPGRADE` and `DROPPED` clear, adding their difference
            // carries the one bit into the other.
            if self.marks[i] & CLAIMED == 0 {
                strong.fetch_add(NO_UPGRADE - SEALING + dropped, STRONG);
            } else {
                strong.fetch_and(!SEALING, STRONG);
            }
        }
        garbage
    }
}

/// One collection, with the collection lock held.
fn collect_once(
    gens: &mut Generations,
    full: bool,
    stats: &mut Stats,
    panics: &mut PanicSlot,
) -> usize {
    let mut scan = Scan::new(full);
    if full {
        for h in std::mem::take(&mut gens.old_candidates) {
            scan.adopt_candidate(h, gens);
        }
    }
    for h in buffer::take_all() {
        scan.adopt_candidate(h, gens);
    }
    if scan.objects.is_empty() {
        return 0;
    }

    // Scan: trace with the locks kept, read the counts, release the locks.
    let locked = Instant::now();
    scan.trace_all(panics);
    scan.find_roots();
    scan.held.clear();
    stats.longest_lock_hold = locked.elapsed();
    stats.scanned = scan.objects.len();

    scan.mark_from(None);
    let deciding = Instant::now();
    let unreached = scan.unreached();
    let finalizers = unreached
        .iter()
        .any(|&i| header(scan.objects[i]).vtable.needs_finalize);
    let garbage = scan.decide(unreached, !finalizers);
    stats.longest_decision = deciding.elapsed();

    let found = garbage.len();
    let garbage = if finalizers {
        let garbage = finalize_and_recheck(&mut scan, garbage, panics);
        mark_dropped(&scan, &garbage);
        garbage
    } else {
        garbage
    };
    destroy(&scan, &garbage, panics);

    // Release the holds of the survivors (reached, or resurrected); those
    // of the garbage were released by `destroy`.
    let mut promoted = 0;
    for (i, &h) in scan.objects.iter().enumerate() {
        let mark = scan.marks[i];
        if mark & REACHED == 0 {
            continue;
        }
        // Not shown alive: a later collection looks again.
        if mark & UNKNOWN != 0 {
            if buffer::claim_held(h) {
                buffer::link(h);
            }
        } else if mark & REACHES_OLD != 0 && buffer::claim_held(h) {
            gens.old_candidates.push(h);
        }
        promoted += release_hold(h, mark & UNKNOWN == 0) as usize;
    }
    if full {
        gens.long_lived_total = scan.objects.len() - garbage.len();
        gens.long_lived_pending = 0;
    } else {
        gens.long_lived_pending += promoted;
    }
    found
}

/// Give up the scan's hold on a survivor: clear `COLLECTING` and `DIRTY`,
/// make it old if `promote`, and drop one strong reference (the last one,
/// if every handle went away meanwhile: the value is dropped here).
/// Returns whether the box became old.
fn release_hold(h: NonNull<Header>, promote: bool) -> bool {
    let strong = &header(h).strong;
    let mut cur = strong.load(Ordering::Relaxed);
    loop {
        let mut new = (cur - 1) & !(COLLECTING | DIRTY);
        if promote {
            new |= OLD;
        }
        // Release: our reads of the value happen before whoever frees it.
        match strong.compare_exchange_weak(cur, new, STRONG, Ordering::Relaxed) {
            Ok(_) => {
                if new & COUNT == 0 {
                    // SAFETY: the count is zero: ours was the last strong
                    // reference.
                    unsafe { release_last(h, cur) };
                    return false;
                }
                return promote && cur & OLD == 0;
            }
            Err(now) => cur = now,
        }
    }
}

/// PEP 442: run the finalizers of the garbage (weak references are already
/// cleared), then scan the garbage again, since a finalizer may have stored
/// a handle somewhere reachable; what it reaches is resurrected (marked
/// `REACHED`, weak epoch bumped) and the rest returned.
fn finalize_and_recheck(
    scan: &mut Scan,
    garbage: Vec<usize>,
    panics: &mut PanicSlot,
) -> Vec<usize> {
    let mut ran = false;
    for &i in &garbage {
        let h = scan.objects[i];
        let hd = header(h);
        if hd.vtable.needs_finalize && hd.strong.fetch_or(FINALIZED, STRONG) & FINALIZED == 0 {
            ran = true;
            // SAFETY: the scan holds `h`; its value is intact (nothing of
            // the garbage is dropped before every finalizer ran).
            panics.run(|| unsafe { (hd.vtable.finalize)(h) });
        }
    }
    if !ran {
        return garbage;
    }
    // A new scan of the garbage alone, exactly like the first: anything
    // outside it is alive this round, and a handle cloned by a finalizer set
    // `DIRTY` (`COLLECTING` is still set on every object of the garbage).
    let mut again = Scan::new(true);
    again.within = true;
    for (i, &h) in scan.objects.iter().enumerate() {
        if scan.marks[i] & REACHED != 0 {
            header(h).set_index(OUTSIDE);
        }
    }
    for &i in &garbage {
        let h = scan.objects[i];
        // The second scan reuses the first's holds.
        header(h).set_index(again.objects.len());
        again.objects.push(h);
        again.marks.push(0);
    }
    again.trace_all(panics);
    again.find_roots();
    again.held.clear();
    again.mark_from(None);
    let unreached = again.unreached();
    again.decide(unreached, false);
    let mut rest = Vec::new();
    for (j, &i) in garbage.iter().enumerate() {
        if again.marks[j] & REACHED != 0 {
            resurrect(scan.objects[i]);
            scan.marks[i] |= REACHED;
        } else {
            rest.push(i);
        }
    }
    // The first scan's slots are back for the survivors' release.
    for (i, &h) in scan.objects.iter().enumerate() {
        header(h).set_index(i);
    }
    rest
}

/// Let weak handles made from now on upgrade: clear `NO_UPGRADE` and move
/// to the next weak epoch if there are weak handles of this one (which
/// stay dead). After the last epoch the box fails closed: no weak handle
/// upgrades again.
fn resurrect(h: NonNull<Header>) {
    let hd = header(h);
    // Minus the strong handles' weak reference and the candidate stack's.
    let stack = (hd.strong.load(Ordering::Relaxed) & CANDIDATE != 0) as u64;
    let has_weak = hd.weak.load(Ordering::Relaxed) > 1 + stack;
    let strong = &hd.strong;
    let mut cur = strong.load(Ordering::Relaxed);
    loop {
        let epoch = epoch_of(cur);
        let new = if !has_weak {
            cur & !NO_UPGRADE
        } else if epoch + 1 < EPOCHS as u64 {
            (cur & !(NO_UPGRADE | EPOCH)) | (epoch + 1) << EPOCH_SHIFT
        } else {
            cur
        };
        match strong.compare_exchange_weak(cur, new, STRONG, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// Mark the garbage `DROPPED` before any value of it is dropped, so that
/// a `Drop` impl reaching another object of it panics instead of reading
/// a dropped value (done by the decision when no finalizer runs).
fn mark_dropped(scan: &Scan, garbage: &[usize]) {
    for &i in garbage {
        header(scan.objects[i]).strong.fetch_or(DROPPED, STRONG);
    }
}

/// Drop the values of the garbage (all already marked `DROPPED`), then give
/// up the scan's holds, which frees the boxes no weak handle refers to.
fn destroy(scan: &Scan, garbage: &[usize], panics: &mut PanicSlot) {
    for &i in garbage {
        let h = scan.objects[i];
        // SAFETY: the value is unreachable (the decision) and marked
        // `DROPPED`, so this is its only drop; the hold keeps the box.
        panics.run(|| unsafe { (header(h).vtable.drop_value)(h) });
    }
    for &i in garbage {
        let h = scan.objects[i];
        let old = header(h).strong.fetch_sub(1 + COLLECTING, STRONG);
        if old & COUNT == 1 {
            // SAFETY: that was the last strong reference; the value is
            // dropped (`DROPPED` in `old`), so only the weak one goes.
            unsafe { release_last(h, old) };
        }
    }
}
