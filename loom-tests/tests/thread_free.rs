//! Remote frees racing with the owner's `collect` (the real `Pool` code).
#![cfg(loom)]

use loom::thread;
use loom_tests::api::{self, PoolRef};
use loom_tests::{model, SendPtr};

/// A heap id no real heap has: the model thread plays the owner itself.
const OWNER: usize = 1 << 40;

/// Pops every block on the pool's `free` list into `out` (owner only).
fn drain(pool: PoolRef, out: &mut Vec<SendPtr>) {
    // SAFETY: the calling thread is the pool's owner.
    unsafe {
        pool.collect();
        loop {
            let p = pool.pop();
            if p.is_null() {
                break;
            }
            out.push(SendPtr(p));
        }
    }
}

/// Property: two threads push three blocks onto `thread_free` while the
/// owner frees a fourth block locally and collects/pops twice. Whatever the
/// interleaving, after the pushers are joined and a final collect, the
/// blocks the owner popped are exactly the four freed blocks, each once:
/// no block is lost by a CAS racing with the swap, none is handed out
/// twice, and `used` is back to zero so the pool can be released.
#[test]
fn remote_frees_race_with_collect() {
    model(|| {
        let pool = PoolRef::create(api::class_of(1024), OWNER).expect("arena");
        let mut blocks = Vec::new();
        // SAFETY: this thread owns the pool.
        unsafe {
            assert!(pool.carve());
        }
        drain(pool, &mut blocks);
        assert_eq!(blocks.len(), 4, "one carve of 1 KiB blocks gives 4");
        assert_eq!(pool.used(), 4);

        let (b0, b1, b2, b3) = (blocks[0], blocks[1], blocks[2], blocks[3]);
        let t1 = thread::spawn(move || {
            // SAFETY: b0 and b1 are live blocks of `pool`, freed once here.
            unsafe {
                pool.push_thread_free(b0.0);
                pool.push_thread_free(b1.0);
            }
        });
        let t2 = thread::spawn(move || {
            // SAFETY: b2 is a live block of `pool`, freed once here.
            unsafe { pool.push_thread_free(b2.0) };
        });

        let mut back = Vec::new();
        drain(pool, &mut back);
        // SAFETY: we own the pool; b3 is live and freed once.
        // Popped blocks count as used again, so the pool is not empty.
        assert!(!unsafe { pool.push_local(b3.0) });
        drain(pool, &mut back);
        t1.join().unwrap();
        t2.join().unwrap();
        drain(pool, &mut back);

        let mut expected = blocks.clone();
        expected.sort();
        back.sort();
        assert_eq!(back, expected, "every freed block comes back exactly once");
        assert_eq!(pool.used(), 4, "the four blocks are handed out again");

        // Hand the blocks back and return the pool: the arena drains.
        for b in &back {
            // SAFETY: we own the pool and popped `b` above.
            unsafe { pool.push_local(b.0) };
        }
        assert_eq!(pool.used(), 0);
        // SAFETY: the pool holds no live block and is in no list.
        unsafe { pool.release() };
        api::purge(true);
        assert_eq!(api::arena_counts(), api::ArenaCounts::default());
    });
}
