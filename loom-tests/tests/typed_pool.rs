//! `TypedPool`'s shared free list: boxes dropped on another thread (the
//! atomic `remote_free` push) racing with the pool's thread allocating,
//! which takes the list back (the real `TypedPool` code).
#![cfg(loom)]

use loom::thread;
use loom_tests::model;
use strata_alloc::TypedPool;

/// Property: one thread drops two boxes while the pool's thread allocates
/// two more (taking remote blocks back whenever its free list runs dry)
/// and drops a third. Whatever the interleaving, no block is handed out
/// twice (the live boxes have distinct addresses and keep their values),
/// and once the dropper is joined every block is accounted for: nothing
/// live but what the test holds, nothing lost.
#[test]
fn remote_drops_race_with_allocation() {
    model(|| {
        // The pool must outlive the boxes the other thread drops.
        let pool: &'static TypedPool<u64> = Box::leak(Box::new(TypedPool::with_cache_limit(1)));
        let a = pool.alloc(1);
        let b = pool.alloc(2);
        let c = pool.alloc(3);
        let dropper = thread::spawn(move || {
            drop(a);
            drop(b);
        });
        let d = pool.alloc(4);
        let e = pool.alloc(5);
        drop(c);
        let f = pool.alloc(6);
        let live = [&d, &e, &f].map(|x| &**x as *const u64);
        assert!(live[0] != live[1] && live[1] != live[2] && live[0] != live[2]);
        assert_eq!((*d, *e, *f), (4, 5, 6));
        dropper.join().unwrap();
        assert_eq!(pool.stats().live, 3);
        drop((d, e, f));
        // Allocating again takes the remote blocks back: six blocks were
        // ever needed at most, so five more fit without a second chunk.
        let again: Vec<_> = (0..5).map(|i| pool.alloc(i)).collect();
        assert_eq!(pool.stats().live, 5);
        let bytes = pool.stats().bytes;
        drop(again);
        assert_eq!(pool.stats().live, 0);
        assert_eq!(pool.stats().bytes, bytes, "no chunk was added or lost");
    });
}
