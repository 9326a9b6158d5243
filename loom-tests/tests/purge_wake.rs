//! The purge thread's wake protocol: a deadline announced while the
//! thread goes to sleep is never lost.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::api;

/// Property: when an announcer stores a deadline and announces it while
/// the purge thread prepares to sleep, then either the thread read the
/// deadline (and sleeps only until it), or the futex word it waits on has
/// changed (so its wait returns at once, or the announcer's wake ends it).
#[test]
fn a_deadline_set_while_the_thread_goes_idle_is_not_lost() {
    loom_tests::model(|| {
        let deadline = Arc::new(AtomicU64::new(0));
        let announcer = {
            let deadline = deadline.clone();
            thread::spawn(move || {
                deadline.store(7, Ordering::Relaxed);
                api::purge_deadline_set();
            })
        };
        let (seen, due) = api::purge_prepare_sleep(|| deadline.load(Ordering::Relaxed));
        announcer.join().unwrap();
        assert!(
            due == 7 || api::purge_wake_word() != seen,
            "the thread would sleep without the deadline: read {due}, word still {seen}"
        );
    });
}
