//! The `fork` handlers against concurrent allocator traffic.
//!
//! (The once-only registration of the fork handlers and the `STRATA_*`
//! configuration use process-wide `core` atomics by design — they must be
//! const statics that survive across loom executions — so loom cannot
//! model them; they are plain swap-once flags.)
#![cfg(loom)]

use loom::thread;
use loom_tests::api;

/// Property: a thread running the `pthread_atfork` prepare handler (take
/// the abandoned-list lock, then the registry lock) and then the
/// parent/child handler (release both), while another thread allocates,
/// frees and exits (which takes the same locks, in the same order, on its
/// slow paths), never deadlocks, and leaves the allocator consistent: all
/// memory is returned afterwards.
#[test]
fn fork_handlers_vs_allocation() {
    loom_tests::model(|| {
        let worker = thread::spawn(|| {
            let class = api::class_of(64);
            let p = api::alloc(class);
            assert!(!p.is_null());
            // SAFETY: `p` is live and freed once, here.
            unsafe { api::free(p) };
            api::thread_exit();
        });
        api::fork_prepare();
        // ... `fork` would run here; the child finds every lock held by
        // its only thread and releases them like the parent does.
        api::fork_release();
        worker.join().unwrap();
        api::sweep_abandoned();
        api::purge(true);
        assert_eq!(api::arena_counts(), api::ArenaCounts::default());
        assert_eq!(api::abandoned_pools(), 0);
    });
}
