//! The purge thread: memory freed by threads that then go idle goes back
//! to the OS although no thread calls the allocator again. One test in its
//! own binary, so no other test allocates (and purges) meanwhile.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use strata_alloc::{resident_bytes, Strata};

#[global_allocator]
static GLOBAL: Strata = Strata;

#[test]
fn memory_freed_by_idle_threads_goes_back() {
    const PER_THREAD: usize = 48 << 20;
    let before = resident_bytes();
    let freed = Arc::new(Barrier::new(3));
    let done = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (freed, done) = (freed.clone(), done.clone());
            thread::spawn(move || {
                // Blocks of 1 to 64 KiB: pools, not large mappings.
                let blocks: Vec<Vec<u8>> = (0..)
                    .map(|i| vec![(i + t) as u8; 1024 << (i % 7)])
                    .scan(0, |bytes, v| {
                        *bytes += v.len();
                        (*bytes <= PER_THREAD).then_some(v)
                    })
                    .collect();
                drop(blocks);
                freed.wait();
                // Idle, alive, until the main thread has measured.
                done.wait();
            })
        })
        .collect();
    freed.wait();
    let at_free = resident_bytes();
    // From here until `done`, no thread allocates: only the purge thread
    // can give the memory back. The deadline only turns a broken purge
    // thread into a failure instead of a hang.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = at_free;
    while now > before + (8 << 20) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        now = resident_bytes();
    }
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        at_free >= before + PER_THREAD,
        "the freed blocks were never resident: {at_free} bytes after, {before} before"
    );
    assert!(
        now <= before + (8 << 20),
        "idle threads kept their freed memory: {now} bytes resident, {before} before they allocated"
    );
}
