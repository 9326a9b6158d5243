//! Freed memory goes back to the OS: after a multi-threaded program frees
//! most of a large working set, RSS falls to near what is still live,
//! without any call to strata by the program.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

const MIB: usize = 1 << 20;

#[test]
fn rss_follows_the_live_heap_after_a_multithreaded_free() {
    let baseline = strata_alloc::resident_bytes();
    assert!(baseline > 0, "this test needs /proc/self/statm");
    // What the program keeps: 32 MiB of mixed small blocks.
    let kept: Vec<Box<[u8]>> = (0..40_000)
        .map(|i| vec![7u8; 24 + (i * 97) % 1650].into_boxed_slice())
        .collect();
    // Live bytes as the allocator must hold them: each kept block's usable
    // size (its size class) and the vector of boxes.
    // SAFETY: every kept box is a live block of the global allocator.
    let live: usize = kept
        .iter()
        .map(|b| unsafe { strata_alloc::usable_size(b.as_ptr()) })
        .sum::<usize>()
        + kept.capacity() * std::mem::size_of::<Box<[u8]>>();
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                // 64 MiB per thread in blocks of 24..2000 bytes.
                let mut made = 0;
                let mut batch = Vec::with_capacity(4096);
                let mut i = t;
                while made < 64 * MIB {
                    let len = 24 + (i * 131) % 1976;
                    batch.push(vec![t as u8; len].into_boxed_slice());
                    made += len;
                    i += 1;
                    if batch.len() == 4096 {
                        tx.send(std::mem::take(&mut batch)).unwrap();
                    }
                }
                tx.send(batch).unwrap();
            })
        })
        .collect();
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    let mut all: Vec<Vec<Box<[u8]>>> = rx.into_iter().collect();
    assert_eq!(all.iter().flatten().map(|b| b[0] as usize).max(), Some(3));
    let peak = strata_alloc::resident_bytes();
    assert!(peak >= baseline + 200 * MIB, "the working set was resident");
    // Free the working set, allocated by threads that have exited.
    all.clear();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut rss;
    loop {
        // The program goes on with ordinary work: a little allocation.
        let scratch: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        drop(scratch);
        rss = strata_alloc::resident_bytes().saturating_sub(baseline);
        if rss <= live + live / 10 || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let stats = strata_alloc::stats();
    eprintln!(
        "RSS above baseline: peak {} MiB, after free {} MiB; live {} MiB\n{stats}",
        (peak - baseline) / MIB,
        rss / MIB,
        live / MIB
    );
    assert!(
        rss <= live + live / 10,
        "RSS above baseline {} MiB, live {} MiB, peak {} MiB\n{stats}",
        rss / MIB,
        live / MIB,
        (peak - baseline) / MIB
    );
    assert!(kept.iter().all(|b| b.iter().all(|&x| x == 7)));
}
