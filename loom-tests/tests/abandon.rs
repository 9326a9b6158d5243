//! Pool abandonment at thread exit, racing with late remote frees and with
//! reclaim by another thread (the real `Heap` / `Abandoned` code).
//!
//! Under loom the `pthread` exit key is not registered, so each model
//! thread calls `api::thread_exit()` (what the key destructor runs) as its
//! last action — including threads that only free: a free into an
//! abandoned pool may adopt it (reclaim-on-free). `ci/loom.sh` builds with debug assertions and overflow
//! checks, so a pool released twice (`Registry::release` asserts it) or a
//! free into a released pool (its `used` count underflows) fails the model.
#![cfg(loom)]

use loom::thread;
use loom_tests::api;
use loom_tests::{model, SendPtr};

/// After every thread has exited: one sweep (as `release_memory` does) and
/// a forced purge must leave no pool, no abandoned pool and no arena.
fn assert_all_memory_returned() {
    api::sweep_abandoned();
    api::purge(true);
    assert_eq!(api::abandoned_pools(), 0, "no pool stays abandoned");
    let counts = api::arena_counts();
    if counts.runs != 0 {
        let st = api::stats();
        for (i, c) in st.classes.iter().enumerate().filter(|(_, c)| c.pools > 0) {
            eprintln!("DEBUG class {i}: {c:?} abandoned={}", st.abandoned_pools);
        }
    }
    assert_eq!(counts.runs, 0, "every pool went back to the registry");
    assert_eq!(counts.arenas, 0, "the empty arena was unmapped");
    assert_eq!(api::stats().pools, 0);
}

/// Property: the owner frees one block and exits (abandoning its pool)
/// while another thread frees the pool's last live block. Whichever comes
/// first — the remote free landing in `thread_free` before, during or
/// after the owner's `adopt`, or in the abandoned pool under the lock —
/// the block is returned, the pool is released exactly once, and nothing
/// touches it after its release.
#[test]
fn late_remote_free_races_with_abandon() {
    model(|| {
        let class = api::class_of(48);
        let a = api::alloc(class);
        let b = SendPtr(api::alloc(class));
        assert!(!a.is_null() && !b.0.is_null() && a != b.0);
        let remote = thread::spawn(move || {
            // SAFETY: `b` is live and freed once, here.
            unsafe { api::free(b.0) };
            api::thread_exit();
        });
        // SAFETY: `a` is live and freed once, here.
        unsafe { api::free(a) };
        api::thread_exit();
        remote.join().unwrap();
        assert_all_memory_returned();
    });
}

/// Property: while the owner exits with a live block in its pool, another
/// thread allocates a block of the same class — reclaiming the abandoned
/// pool if it is already listed, taking a fresh pool otherwise — then
/// frees the owner's leftover block and its own, and exits. No block is
/// handed out twice (the two live blocks differ), the pool changes hands
/// at most once at a time, and all memory is returned at the end.
#[test]
fn reclaim_races_with_abandon() {
    model(|| {
        let class = api::class_of(48);
        let a = api::alloc(class);
        let b = SendPtr(api::alloc(class));
        let other = thread::spawn(move || {
            let x = api::alloc(class);
            assert!(!x.is_null());
            assert_ne!(x, b.0, "a live block is never handed out again");
            // SAFETY: `b` and `x` are live and each freed once, here.
            unsafe {
                api::free(b.0);
                api::free(x);
            }
            api::thread_exit();
        });
        // SAFETY: `a` is live and freed once, here.
        unsafe { api::free(a) };
        api::thread_exit();
        other.join().unwrap();
        assert_all_memory_returned();
    });
}

/// Property: the three-way race — owner exit, a reclaiming allocator, a
/// late remote free into the (abandoned or reclaimed) pool, and a free by
/// the exited owner's fresh heap — still hands out no live block twice,
/// returns every block, and releases the pool once.
#[test]
fn reclaim_and_remote_free_race_with_abandon() {
    // Three threads each running the exit path: one preemption keeps the
    // search to about a minute (the two-thread models above use the
    // default bound).
    loom_tests::model_with_preemptions(1, || {
        let class = api::class_of(48);
        let a = SendPtr(api::alloc(class));
        let b = SendPtr(api::alloc(class));
        // Stays live until both threads are joined.
        let c = SendPtr(api::alloc(class));
        let reclaimer = thread::spawn(move || {
            let x = api::alloc(class);
            assert!(!x.is_null());
            assert_ne!(x, c.0, "a live block is never handed out again");
            // SAFETY: `x` is live and freed once, here.
            unsafe { api::free(x) };
            api::thread_exit();
        });
        let remote = thread::spawn(move || {
            // SAFETY: `b` is live and freed once, here.
            unsafe { api::free(b.0) };
            api::thread_exit();
        });
        api::thread_exit();
        // This thread's fresh heap frees `a`: a remote free from the pool's
        // point of view (its owner is gone, or is the reclaimer).
        // SAFETY: `a` is live and freed once, here.
        unsafe { api::free(a.0) };
        reclaimer.join().unwrap();
        remote.join().unwrap();
        // SAFETY: `c` is live and freed once, here.
        unsafe { api::free(c.0) };
        api::thread_exit();
        assert_all_memory_returned();
    });
}

/// Property: code that runs after a thread's exit destructor (later key
/// destructors, glibc's own thread cleanup) frees a block of the thread's
/// abandoned pool and allocates again, while another thread allocates and
/// frees blocks of the same class. The exited heap adopts no pool (nothing
/// would abandon it again: that was a leak per thread), no live block is
/// handed out twice, and all memory returns.
#[test]
fn frees_and_allocations_after_thread_exit() {
    model(|| {
        let class = api::class_of(48);
        let exiting = thread::spawn(move || {
            let a = api::alloc(class);
            let b = api::alloc(class);
            api::thread_exit();
            // SAFETY: `a` is live and freed once, here.
            unsafe { api::free(a) };
            let x = api::alloc(class);
            assert!(!x.is_null());
            assert_ne!(x, b, "a live block is never handed out again");
            assert_eq!(api::heap_pools(), 0, "an exited heap owns no pool");
            // SAFETY: `x` and `b` are live and each freed once, here.
            unsafe {
                api::free(x);
                api::free(b);
            }
            assert_eq!(api::heap_pools(), 0, "an exited heap owns no pool");
        });
        let y = api::alloc(class);
        assert!(!y.is_null());
        // SAFETY: `y` is live and freed once, here.
        unsafe { api::free(y) };
        exiting.join().unwrap();
        api::thread_exit();
        assert_all_memory_returned();
    });
}
