//! `TypedPool<T>`: exact-size blocks, a bounded free list, zero-sized and
//! over-aligned types, boxes dropped on other threads.

use std::cell::Cell;
use std::rc::Rc;

use strata_alloc::{PoolBox, Strata, TypedPool};

#[global_allocator]
static GLOBAL: Strata = Strata;

/// Serialises the tests: one of them reads the process-wide typed-pool
/// figures, which every other test's pools change.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn blocks_are_exact_and_recycled() {
    let _serial = serial();
    let pool = TypedPool::<[u8; 24]>::with_cache_limit(8);
    assert_eq!(TypedPool::<[u8; 24]>::BLOCK_SIZE, 24);
    let boxes: Vec<PoolBox<'_, [u8; 24]>> = (0..100).map(|i| pool.alloc([i as u8; 24])).collect();
    let addrs: Vec<usize> = boxes.iter().map(|b| &**b as *const _ as usize).collect();
    assert!(
        addrs.windows(2).any(|w| w[1].abs_diff(w[0]) == 24),
        "blocks are packed 24 bytes apart"
    );
    assert!(boxes
        .iter()
        .enumerate()
        .all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    let stats = pool.stats();
    assert_eq!((stats.live, stats.cached, stats.bytes), (100, 0, 64 << 10));
    // Vec drops in order: each freed block goes on top of the free list;
    // under it, the free list keeps boxes 0..7 (the first to arrive) and
    // the displaced others go back to their chunk.
    drop(boxes);
    let stats = pool.stats();
    assert_eq!(
        (stats.live, stats.cached),
        (0, 8),
        "the free list is bounded"
    );
    // The most recently freed block comes back first, then the free list
    // in LIFO order.
    let again = pool.alloc([7; 24]);
    assert_eq!(&*again as *const _ as usize, addrs[99]);
    let next = pool.alloc([6; 24]);
    assert_eq!(&*next as *const _ as usize, addrs[6]);
    drop((again, next));
    pool.shrink();
    assert_eq!(pool.stats().cached, 0);
}

#[test]
fn values_are_dropped_exactly_once() {
    let _serial = serial();
    struct Counted(Rc<Cell<usize>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Rc::new(Cell::new(0));
    let pool = TypedPool::new();
    let boxes: Vec<_> = (0..1000)
        .map(|_| pool.alloc(Counted(drops.clone())))
        .collect();
    drop(boxes);
    assert_eq!(drops.get(), 1000);
    let kept = PoolBox::into_inner(pool.alloc(Counted(drops.clone())));
    assert_eq!(
        drops.get(),
        1000,
        "into_inner moves the value out without dropping it"
    );
    drop(kept);
    assert_eq!(drops.get(), 1001);
    assert_eq!(pool.stats().live, 0);
}

#[test]
fn zero_sized_and_over_aligned_types() {
    let _serial = serial();
    let units = TypedPool::<()>::new();
    let many: Vec<_> = (0..10).map(|_| units.alloc(())).collect();
    assert_eq!(units.stats().live, 10);
    assert_eq!(units.stats().bytes, 0);
    drop(many);
    assert_eq!(units.stats().live, 0);

    #[repr(align(4096))]
    struct Page([u8; 100]);
    let pages = TypedPool::<Page>::new();
    assert_eq!(TypedPool::<Page>::BLOCK_SIZE, 4096);
    let ps: Vec<_> = (0..40).map(|i| pages.alloc(Page([i; 100]))).collect();
    for (i, p) in ps.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert_eq!(p.0[99], i as u8);
    }
}

#[test]
fn boxes_dropped_on_other_threads_come_back() {
    let _serial = serial();
    let pool = TypedPool::<u64>::with_capacity(10_000);
    let boxes: Vec<_> = (0..10_000u64).map(|i| pool.alloc(i)).collect();
    let chunks_before = pool.stats().bytes;
    std::thread::scope(|s| {
        let (left, right) = {
            let mut boxes = boxes;
            let right = boxes.split_off(5_000);
            (boxes, right)
        };
        s.spawn(move || assert_eq!(left.iter().map(|b| **b).sum::<u64>(), 4_999 * 5_000 / 2));
        s.spawn(move || drop(right));
    });
    assert_eq!(
        pool.stats().live,
        0,
        "remote drops are counted once collected"
    );
    // Their blocks are reused: no new chunk for the next 10 000 values.
    let again: Vec<_> = (0..10_000u64).map(|i| pool.alloc(i)).collect();
    assert_eq!(pool.stats().bytes, chunks_before);
    assert_eq!(*again[9_999], 9_999);
}

#[test]
fn dropping_the_pool_returns_its_chunks() {
    let _serial = serial();
    let before = strata_alloc::stats().typed_pool_bytes;
    {
        let pool = TypedPool::<[u64; 8]>::new();
        let boxes: Vec<_> = (0..5_000).map(|i| pool.alloc([i; 8])).collect();
        assert!(strata_alloc::stats().typed_pool_bytes >= before + 5_000 * 64);
        drop(boxes);
    }
    assert_eq!(strata_alloc::stats().typed_pool_bytes, before);
    let stats = strata_alloc::stats();
    assert_eq!(stats.mapped_bytes(), stats.accounted_bytes());
}

#[test]
#[should_panic(expected = "not supported")]
fn too_large_types_are_refused_with_a_clear_message() {
    let _ = TypedPool::<[u8; 100_000]>::new();
}

#[test]
fn the_default_free_list_holds_one_chunk_of_blocks() {
    let _serial = serial();
    // 32-byte blocks: 2048 to a 64 KiB chunk.
    let pool = TypedPool::<[u64; 4]>::new();
    let boxes: Vec<_> = (0..3_000u64).map(|i| pool.alloc([i; 4])).collect();
    drop(boxes);
    let stats = pool.stats();
    assert_eq!((stats.live, stats.cached), (0, 2_048));
    // Big blocks keep the floor of 256.
    let pages = TypedPool::<[u8; 4096]>::new();
    drop((0..300).map(|_| pages.alloc([0; 4096])).collect::<Vec<_>>());
    assert_eq!(pages.stats().cached, 256);
    // A limit of 0 still keeps the block freed last.
    let tiny = TypedPool::<u64>::with_cache_limit(0);
    drop((0..10u64).map(|i| tiny.alloc(i)).collect::<Vec<_>>());
    assert_eq!(tiny.stats().cached, 1);
}

#[test]
fn boxes_dropped_concurrently_while_the_owner_allocates() {
    let _serial = serial();
    let pool = TypedPool::<(u64, u64)>::with_cache_limit(64);
    // Bounded channels keep the boxes in flight, hence the blocks the
    // pool needs at once, to a few hundred.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..3)
        .map(|_| std::sync::mpsc::sync_channel::<PoolBox<'_, (u64, u64)>>(16))
        .unzip();
    std::thread::scope(|s| {
        for rx in receivers {
            s.spawn(move || {
                for b in rx {
                    assert_eq!(b.0 * 2, b.1);
                }
            });
        }
        let mut kept = Vec::new();
        for i in 0..30_000u64 {
            let b = pool.alloc((i, 2 * i));
            if i % 4 == 0 {
                kept.push(b); // freed on this thread, below
            } else {
                senders[i as usize % 3].send(b).unwrap();
            }
            if kept.len() > 100 {
                kept.clear();
            }
        }
        drop(kept);
        drop(senders);
    });
    let stats = pool.stats();
    assert_eq!(stats.live, 0);
    assert!(stats.cached <= 64);
    // Remote frees came back: 30 000 blocks fit in at most two 64 KiB
    // chunks (4096 blocks each) because they were reused.
    assert!(stats.bytes <= 2 * (64 << 10), "{stats:?}");
}
