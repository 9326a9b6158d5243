//! Arena slot runs acquired and released by concurrent threads (the real
//! `Registry`).
#![cfg(loom)]

use loom::sync::{Arc, Mutex};
use loom::thread;
use loom_tests::api::{self, Run};

/// Runs currently held by model threads: (arena, first slot, slot count).
type Live = Arc<Mutex<Vec<(usize, usize, usize)>>>;

/// Records `run` as held, asserting it overlaps no run held by another
/// thread. Any two runs that are live at the same time are both recorded
/// before either is removed, so an overlap is always caught.
fn hold(live: &Live, run: &Run) {
    let mut live = live.lock().unwrap();
    for &(arena, first, count) in live.iter() {
        let disjoint = arena != run.arena()
            || first + count <= run.first()
            || run.first() + run.count() <= first;
        assert!(disjoint, "two live slot runs overlap");
    }
    assert!(run.first() >= 1, "slot 0 is the arena header");
    assert!(run.first() + run.count() <= api::SLOTS_PER_ARENA);
    live.push((run.arena(), run.first(), run.count()));
}

fn drop_hold(live: &Live, run: &Run) {
    let mut live = live.lock().unwrap();
    let i = live
        .iter()
        .position(|&r| r == (run.arena(), run.first(), run.count()))
        .expect("held run");
    live.swap_remove(i);
}

/// The bitmaps agree with themselves: every slot of every arena is either
/// free or in exactly one run, and the runs are the ones we hold.
fn assert_bitmaps(expect_runs: usize, expect_used: usize) {
    let c = api::arena_counts();
    assert_eq!(c.runs, expect_runs);
    assert_eq!(c.used_slots, expect_used);
    assert_eq!(
        c.free_slots + c.used_slots,
        c.arenas * (api::SLOTS_PER_ARENA - 1)
    );
    assert!(c.dirty_slots <= c.free_slots);
}

/// Property: two threads acquire and release slot runs (one of them also
/// purging, which decommits dirty slots and may unmap an empty arena)
/// while the other holds a run. Runs held at the same time never overlap;
/// the bitmaps account for every slot at the end; a forced purge then
/// unmaps the arena.
#[test]
fn acquire_release_purge_race() {
    loom_tests::model(|| {
        let live: Live = Arc::new(Mutex::new(Vec::new()));
        let l1 = live.clone();
        let t1 = thread::spawn(move || {
            let run = api::acquire(2).expect("arena");
            hold(&l1, &run);
            // SAFETY: the run is ours: write to its memory.
            unsafe { run.start().write(1) };
            drop_hold(&l1, &run);
            // SAFETY: the run holds no block and is not used again.
            unsafe { api::release(run) };
            api::purge(true);
        });
        let run = api::acquire(1).expect("arena");
        hold(&live, &run);
        // SAFETY: the run is ours: its memory is still mapped and writable.
        unsafe { run.start().write(2) };
        t1.join().unwrap();
        assert_bitmaps(1, 1);
        drop_hold(&live, &run);
        // SAFETY: the run holds no block and is not used again.
        unsafe { api::release(run) };
        assert_bitmaps(0, 0);
        api::purge(true);
        assert_eq!(api::arena_counts(), api::ArenaCounts::default());
    });
}

/// Property: with 48 of an arena's 63 pool slots taken, two threads each
/// ask for 15 slots: one gets the rest of the first arena, the other must
/// map a second arena, and the lock keeps them from both taking the same
/// slots or both mapping. Exactly two arenas exist afterwards, and the
/// bitmaps are consistent.
#[test]
fn acquire_when_arena_fills_up() {
    loom_tests::model(|| {
        let base: Vec<Run> = (0..3).map(|_| api::acquire(16).expect("arena")).collect();
        let live: Live = Arc::new(Mutex::new(Vec::new()));
        for run in &base {
            hold(&live, run);
        }
        let l1 = live.clone();
        let t1 = thread::spawn(move || {
            let run = api::acquire(15).expect("arena");
            hold(&l1, &run);
            run
        });
        let mine = api::acquire(15).expect("arena");
        hold(&live, &mine);
        let theirs = t1.join().unwrap();
        assert_ne!(mine.arena(), theirs.arena(), "15 slots fit once in arena 1");
        assert_eq!(api::arena_counts().arenas, 2);
        assert_bitmaps(5, 48 + 30);
        for run in base.into_iter().chain([mine, theirs]) {
            // SAFETY: the runs hold no block and are not used again.
            unsafe { api::release(run) };
        }
        assert_bitmaps(0, 0);
        api::purge(true);
        assert_eq!(api::arena_counts(), api::ArenaCounts::default());
    });
}
