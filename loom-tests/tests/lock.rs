//! Mutual exclusion of `sync::RawLock`, the allocator's only lock.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use loom_tests::api::Lock;

struct Guarded {
    lock: Lock,
    value: UnsafeCell<usize>,
}

// SAFETY: `value` is only accessed with `lock` held — which is what the
// model checks: loom's `UnsafeCell` fails the model on any two accesses
// not ordered by happens-before.
unsafe impl Sync for Guarded {}
// SAFETY: as above.
unsafe impl Send for Guarded {}

/// Property: two threads do a non-atomic read-modify-write of a shared
/// cell inside the lock (one with `lock`/`unlock`, one with `with`). Loom
/// reports any pair of accesses not ordered by the lock's Release/Acquire
/// (no mutual exclusion or no happens-before), and no increment is lost.
#[test]
fn raw_lock_gives_mutual_exclusion() {
    loom_tests::model(|| {
        let g = Arc::new(Guarded {
            lock: Lock::new(),
            value: UnsafeCell::new(0),
        });
        let bump = |g: &Guarded| {
            // SAFETY: the lock is held (the property under test).
            g.value.with_mut(|v| unsafe { *v += 1 });
        };
        let threads: Vec<_> = (0..1)
            .map(|_| {
                let g = g.clone();
                thread::spawn(move || {
                    g.lock.lock();
                    bump(&g);
                    g.lock.unlock();
                })
            })
            .collect();
        g.lock.with(|| bump(&g));
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: all other threads are joined.
        assert_eq!(g.lock.with(|| g.value.with(|v| unsafe { *v })), 2);
    });
}
