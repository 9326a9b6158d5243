//! The stats snapshot: accounting identity and figures against known
//! allocations.

use std::alloc::{GlobalAlloc, Layout};

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

#[test]
fn stats_count_known_allocations_and_balance() {
    // Class of 3000-byte blocks: nothing else in this test uses it.
    let layout = Layout::from_size_align(3000, 8).unwrap();
    let before = strata_alloc::stats();
    let class = before
        .classes
        .iter()
        .position(|c| c.block_size >= 3000)
        .unwrap();
    // SAFETY: blocks allocated and freed with the same layout.
    let blocks: Vec<*mut u8> = (0..500).map(|_| unsafe { Strata.alloc(layout) }).collect();
    let during = strata_alloc::stats();
    assert_eq!(
        during.classes[class].blocks_in_use,
        before.classes[class].blocks_in_use + 500
    );
    assert_eq!(
        during.mapped_bytes(),
        during.accounted_bytes(),
        "accounting identity"
    );
    let big = vec![7u8; 3 << 20];
    let with_large = strata_alloc::stats();
    assert!(with_large.large_blocks > during.large_blocks);
    assert!(with_large.large_bytes >= during.large_bytes + (3 << 20));
    drop(big);
    for p in blocks {
        // SAFETY: live block of `layout`.
        unsafe { Strata.dealloc(p, layout) };
    }
    let after = strata_alloc::stats();
    assert_eq!(
        after.classes[class].blocks_in_use,
        before.classes[class].blocks_in_use
    );
    assert_eq!(
        after.mapped_bytes(),
        after.accounted_bytes(),
        "accounting identity"
    );
    let report = format!("{after}");
    assert!(report.contains("blocks in use") && report.contains("RSS"));
}
