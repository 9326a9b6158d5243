//! Many threads allocating and freeing across threads, threads exiting
//! while others free their blocks, producer/consumer hand-offs.

use std::sync::mpsc;
use std::thread;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// A boxed buffer whose bytes all equal `tag`, so corruption is detected.
fn tagged(tag: u8, len: usize) -> Vec<u8> {
    vec![tag; len]
}

fn check(buf: &[u8], tag: u8) {
    assert!(buf.iter().all(|&b| b == tag), "block corrupted (tag {tag})");
}

#[test]
fn producer_consumer_frees_on_the_other_thread() {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1024);
    let producer = thread::spawn(move || {
        for i in 0..200_000usize {
            let len = 1 + (i * 37) % 700;
            tx.send(tagged((i % 251) as u8, len)).unwrap();
        }
    });
    for i in 0..200_000usize {
        let buf = rx.recv().unwrap();
        assert_eq!(buf.len(), 1 + (i * 37) % 700);
        check(&buf, (i % 251) as u8);
    }
    producer.join().unwrap();
}

#[test]
fn blocks_outlive_the_threads_that_allocated_them() {
    let mut survivors = Vec::new();
    for round in 0..8u8 {
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                thread::spawn(move || {
                    let tag = round.wrapping_mul(16).wrapping_add(t);
                    (0..5_000)
                        .map(|i| tagged(tag, 8 + i % 300))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let blocks = h.join().unwrap();
            check(&blocks[0], round.wrapping_mul(16).wrapping_add(t as u8));
            survivors.push((round.wrapping_mul(16).wrapping_add(t as u8), blocks));
        }
        // Free half of what dead threads left behind, keep the rest.
        if round % 2 == 1 {
            survivors.drain(..survivors.len() / 2);
        }
    }
    for (tag, blocks) in &survivors {
        for b in blocks {
            check(b, *tag);
        }
    }
    drop(survivors);
    // Abandoned pools are reclaimed by later threads: allocate again.
    let again: Vec<_> = (0..20_000).map(|i| tagged(3, 8 + i % 300)).collect();
    again.iter().for_each(|b| check(b, 3));
    strata_alloc::release_memory();
    let stats = strata_alloc::stats();
    assert_eq!(stats.mapped_bytes(), stats.accounted_bytes());
}

#[test]
fn threads_exit_while_others_free_their_blocks() {
    for _ in 0..20 {
        let (tx, rx) = mpsc::channel::<Vec<Box<[u8; 48]>>>();
        let freer = thread::spawn(move || {
            for batch in rx {
                for b in batch {
                    assert!(b.iter().all(|&x| x == 9));
                }
            }
        });
        let makers: Vec<_> = (0..3)
            .map(|_| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for _ in 0..20 {
                        tx.send((0..200).map(|_| Box::new([9u8; 48])).collect())
                            .unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for m in makers {
            m.join().unwrap();
        }
        freer.join().unwrap();
    }
}

#[test]
fn many_threads_mixed_sizes_all_to_all() {
    const THREADS: usize = 8;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Vec<u8>>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(me, rx)| {
            let txs = txs.clone();
            thread::spawn(move || {
                for i in 0..3_000usize {
                    let len = [16, 100, 1000, 5000, 40_000, 200_000][i % 6];
                    txs[(me + i) % THREADS].send(tagged(me as u8, len)).unwrap();
                    if let Ok(buf) = rx.try_recv() {
                        check(&buf, buf[0]);
                    }
                }
                drop(txs);
                rx
            })
        })
        .collect();
    drop(txs);
    let inboxes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in inboxes {
        for buf in rx.try_iter() {
            check(&buf, buf[0]);
        }
    }
}

/// Blocks that late `pthread` key destructors allocate: they run after
/// strata's own exit destructor (its key is created at start-up, and glibc
/// runs destructors in key order), when the thread's heap is gone.
static LATE_BLOCKS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A key destructor that frees the thread's block and allocates new
/// ones, small and large, after the thread's heap was given back.
unsafe extern "C" fn late_destructor(block: *mut libc::c_void) {
    // SAFETY: the value is the `Box<Vec<u8>>` the thread leaked below.
    let block = unsafe { Box::from_raw(block.cast::<Vec<u8>>()) };
    let tag = block[0];
    check(&block, tag);
    drop(block);
    let late: Vec<Vec<u8>> = [24, 700, 9000, 300_000]
        .iter()
        .map(|&len| tagged(tag, len))
        .collect();
    LATE_BLOCKS.lock().unwrap().extend(late);
}

/// Frees and allocations after a thread's exit destructor (through the
/// record all exited threads share) stay correct, from several exiting
/// threads at once, and their blocks outlive the thread.
#[test]
fn key_destructors_after_the_heaps_exit_allocate_and_free() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: a valid out-pointer and an `extern "C"` destructor.
    assert_eq!(
        unsafe { libc::pthread_key_create(&mut key, Some(late_destructor)) },
        0
    );
    for round in 0..50u8 {
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let tag = round.wrapping_mul(4).wrapping_add(t);
                thread::spawn(move || {
                    // A few allocations first, so the thread's heap starts.
                    let warm: Vec<Vec<u8>> = (0..64).map(|i| tagged(tag, 8 + i * 24)).collect();
                    drop(warm);
                    let block = Box::into_raw(Box::new(tagged(tag, 100)));
                    // SAFETY: a key created above; the destructor frees
                    // the value.
                    assert_eq!(unsafe { libc::pthread_setspecific(key, block.cast()) }, 0);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    let late = std::mem::take(&mut *LATE_BLOCKS.lock().unwrap());
    assert_eq!(late.len(), 50 * 4 * 4);
    for block in &late {
        check(block, block[0]);
    }
    // SAFETY: no thread uses the key any more.
    unsafe { libc::pthread_key_delete(key) };
}
