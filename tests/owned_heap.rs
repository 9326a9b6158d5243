//! `strata_alloc::Heap`: an owned heap serving `allocator_api2` and
//! hashbrown collections, freed at once by `reset` or drop.

use allocator_api2::boxed::Box as HeapBox;
use allocator_api2::vec::Vec as HeapVec;
use strata_alloc::{Heap, Strata};

#[global_allocator]
static GLOBAL: Strata = Strata;

#[test]
fn collections_live_in_the_heap_and_reset_frees_them() {
    let mut heap = Heap::new();
    {
        let mut v = HeapVec::new_in(&heap);
        v.extend(0..100_000u64);
        let mut map = hashbrown::HashMap::new_in(&heap);
        for i in 0..10_000u64 {
            map.insert(i, HeapBox::new_in([i; 4], &heap));
        }
        assert_eq!(v.iter().sum::<u64>(), 99_999 * 100_000 / 2);
        assert_eq!(map[&9_999][3], 9_999);
        let stats = heap.stats();
        assert!(stats.blocks_in_use >= 10_002, "{stats:?}");
        assert!(stats.bytes_in_use >= 800_000 + 10_000 * 32);
        assert!(stats.pools >= 1, "the heap owns arena pools");
        // Leak on purpose: reset reclaims the memory anyway.
        std::mem::forget(map);
    }
    heap.reset();
    assert_eq!(heap.stats(), strata_alloc::HeapStats::default());
    // The heap is usable again after a reset.
    let mut again = HeapVec::new_in(&heap);
    again.push(1u8);
    assert_eq!(again[0], 1);
}

#[test]
fn a_heap_moves_to_another_thread() {
    let heap = Heap::new();
    let handle = std::thread::spawn(move || {
        let mut v = HeapVec::new_in(&heap);
        v.extend(0..1000u32);
        let total: u32 = v.iter().sum();
        drop(v);
        (total, heap)
    });
    let (total, heap) = handle.join().unwrap();
    assert_eq!(total, 999 * 1000 / 2);
    assert_eq!(heap.stats().blocks_in_use, 0);
}

#[test]
fn global_allocations_are_untouched_by_a_reset() {
    let global: Vec<String> = (0..5000).map(|i| format!("global {i}")).collect();
    let mut heap = Heap::new();
    for _ in 0..3 {
        let v: HeapVec<String, &Heap> = {
            let mut v = HeapVec::new_in(&heap);
            v.extend((0..5000).map(|i| i.to_string()));
            v
        };
        assert_eq!(v.len(), 5000);
        drop(v);
        heap.reset();
    }
    assert!(global
        .iter()
        .enumerate()
        .all(|(i, s)| *s == format!("global {i}")));
}
