//! Std collections, every alignment, realloc chains and zeroed memory,
//! with Strata as the global allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

#[test]
fn std_collections_work() {
    let mut map = HashMap::new();
    let mut tree = BTreeMap::new();
    let mut deque = VecDeque::new();
    for i in 0..20_000u64 {
        map.insert(i, format!("value {i}"));
        tree.insert(i.to_string(), vec![i; (i % 17) as usize]);
        deque.push_back(Box::new(i));
    }
    for i in 0..20_000u64 {
        assert_eq!(map[&i], format!("value {i}"));
        assert_eq!(tree[&i.to_string()].len(), (i % 17) as usize);
        assert_eq!(*deque.pop_front().unwrap(), i);
    }
    let text: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(text.len(), 10_000);
}

#[test]
fn every_alignment_is_honoured() {
    let mut align = 1;
    while align <= 8 << 20 {
        for size in [1, 7, 64, 1000, 5000, 70_000, 200_000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size; freed with the same layout.
            unsafe {
                let p = Strata.alloc(layout);
                assert!(!p.is_null(), "size {size} align {align}");
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                assert!(strata_alloc::usable_size(p) >= size);
                p.write_bytes(0x5a, size);
                assert_eq!(*p.add(size - 1), 0x5a);
                Strata.dealloc(p, layout);
            }
        }
        align *= 2;
    }
}

#[test]
fn aligned_blocks_do_not_overlap() {
    for align in [32, 64, 256, 4096, 65536] {
        let layout = Layout::from_size_align(align, align).unwrap();
        // SAFETY: non-zero size; each block is freed once with its layout.
        unsafe {
            let blocks: Vec<*mut u8> = (0..64).map(|_| Strata.alloc(layout)).collect();
            for (i, &p) in blocks.iter().enumerate() {
                assert_eq!(p as usize % align, 0);
                p.write_bytes(i as u8, align);
            }
            for (i, &p) in blocks.iter().enumerate() {
                assert!(std::slice::from_raw_parts(p, align)
                    .iter()
                    .all(|&b| b == i as u8));
                Strata.dealloc(p, layout);
            }
        }
    }
}

fn pattern(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

/// Checks the pattern at the ends of `[0, len)` and at a stride between.
///
/// # Safety
/// `p` must be readable for `len` bytes.
unsafe fn check_pattern(p: *const u8, len: usize) {
    let stride = (len / 64).max(1);
    for i in (0..len).step_by(stride).chain([len - 1]) {
        // SAFETY: `i < len` (caller).
        assert_eq!(unsafe { *p.add(i) }, pattern(i), "byte {i} of {len}");
    }
}

#[test]
fn realloc_growth_and_shrink_chains_keep_contents() {
    for align in [8, 64, 4096] {
        let mut size = 1;
        let mut layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: each step reallocates the live block with its current layout.
        unsafe {
            let mut p = Strata.alloc(layout);
            *p = pattern(0);
            while size < 16 << 20 {
                let new_size = size * 3 / 2 + 1;
                p = Strata.realloc(p, layout, new_size);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                check_pattern(p, size);
                for i in size..new_size {
                    *p.add(i) = pattern(i);
                }
                size = new_size;
                layout = Layout::from_size_align(size, align).unwrap();
            }
            while size > 1 {
                let new_size = size / 3 + 1;
                p = Strata.realloc(p, layout, new_size);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                check_pattern(p, new_size);
                size = if new_size == size { 1 } else { new_size };
                layout = Layout::from_size_align(new_size, align).unwrap();
            }
            Strata.dealloc(p, layout);
        }
    }
}

#[test]
fn zeroed_memory_is_zero_even_when_reused() {
    for size in [8, 100, 4000, 100_000, 1 << 20] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero size; freed with the same layout.
        unsafe {
            // Dirty a block, free it, then ask for zeroed memory of the same class.
            let dirty = Strata.alloc(layout);
            dirty.write_bytes(0xff, size);
            Strata.dealloc(dirty, layout);
            let p = Strata.alloc_zeroed(layout);
            assert!(
                std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0),
                "size {size}"
            );
            Strata.dealloc(p, layout);
        }
    }
}

#[test]
fn realloc_within_a_class_keeps_the_pointer() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: live block reallocated within its class, then freed.
    unsafe {
        let p = Strata.alloc(layout);
        let q = Strata.realloc(p, layout, 110);
        assert_eq!(p, q, "100 and 110 bytes share the 112-byte class");
        Strata.dealloc(q, Layout::from_size_align(110, 8).unwrap());
    }
}

#[test]
fn huge_requests_fail_with_null() {
    let layout = Layout::from_size_align(isize::MAX as usize - 4096 * 4, 8).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { Strata.alloc(layout) };
    assert!(p.is_null());
}

#[test]
fn raw_api_frees_without_a_size() {
    use strata_alloc::raw;
    // SAFETY: every block is live until freed once.
    unsafe {
        raw::free(std::ptr::null_mut());
        let mut p = raw::alloc(0, 16, false);
        assert!(!p.is_null());
        *p = 42;
        for size in [24, 500, 100_000, 3 << 20, 70, 1] {
            p = raw::realloc(p, size);
            assert!(!p.is_null());
            assert_eq!(*p, 42, "contents kept through realloc to {size}");
            assert!(strata_alloc::usable_size(p) >= size);
        }
        raw::free(p);
        let z = raw::alloc(5000, 64, true);
        assert_eq!(z as usize % 64, 0);
        assert!(std::slice::from_raw_parts(z, 5000).iter().all(|&b| b == 0));
        raw::free(z);
        let q = raw::realloc(std::ptr::null_mut(), 10);
        raw::free(q);
    }
}
