//! `fork` in a multi-threaded program leaves the child a working allocator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

#[test]
fn child_of_a_busy_multithreaded_parent_can_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    // Threads churning through pools, arenas and the abandoned lists, so a
    // fork is likely to land while some allocator lock is held.
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let v: Vec<Vec<u8>> = (0..2000).map(|i| vec![t; 16 + i % 9000]).collect();
                    drop(v);
                    thread::spawn(|| vec![0u8; 1 << 20]).join().unwrap();
                }
            })
        })
        .collect();
    for _ in 0..50 {
        // SAFETY: the child only allocates, checks and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(|| {
                let v: Vec<String> = (0..10_000).map(|i| format!("child {i}")).collect();
                let big = vec![1u8; 8 << 20];
                v[9_999] == "child 9999" && big.iter().all(|&b| b == 1)
            })
            .unwrap_or(false);
            // SAFETY: `_exit` skips atexit handlers and never returns.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: status {status}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
}
