//! Free blocks of the big size classes (16 KiB and more) hand their inner
//! pages back to the OS while they wait in a partly used pool: a thread
//! that keeps one block of a pool alive does not keep the pool resident.

use std::alloc::{alloc, dealloc, Layout};
use std::thread;
use std::time::Duration;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// The OS page size: 4 KiB on x86_64, often 16 or 64 KiB on aarch64.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[test]
fn free_big_blocks_are_purged_inside_their_pools() {
    const SIZE: usize = 40 * 1024;
    const N: usize = 64;
    let layout = Layout::from_size_align(SIZE, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..N)
        .map(|_| {
            // SAFETY: non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: a fresh block of SIZE bytes.
            unsafe { p.write_bytes(0xA5, SIZE) };
            p
        })
        .collect();
    let before = strata_alloc::stats().purged_bytes;
    // Keep one block in eight (one per pool of this class) alive.
    let (kept, freed): (Vec<_>, Vec<_>) = blocks.iter().enumerate().partition(|(i, _)| i % 8 == 0);
    for (_, &p) in &freed {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { dealloc(p, layout) };
    }
    // Past the purge delay (100 ms by default), this thread's next
    // allocation slow path (a class it has not used yet) sweeps its pools.
    thread::sleep(Duration::from_millis(150));
    let other = Layout::from_size_align(100 * 1024, 8).unwrap();
    // SAFETY: non-zero size.
    let q = std::hint::black_box(unsafe { alloc(other) });
    assert!(!q.is_null());
    let purged = strata_alloc::stats().purged_bytes - before;
    // Every freed block has whole inner pages past its first two words:
    // at least one page fewer than fit in that length.
    let page = page_size();
    let expected = freed.len() * ((SIZE - 16) / page).saturating_sub(1) * page;
    assert!(
        purged >= expected,
        "purged {purged} bytes, expected at least {expected}"
    );
    for (_, &p) in &kept {
        // SAFETY: a live block of SIZE bytes written above.
        let bytes = unsafe { std::slice::from_raw_parts(p, SIZE) };
        assert!(bytes.iter().all(|&b| b == 0xA5), "a live block was touched");
    }
    // Purged blocks are handed out again and usable.
    let again: Vec<*mut u8> = (0..freed.len())
        .map(|_| {
            // SAFETY: non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: a fresh block of SIZE bytes.
            unsafe { p.write_bytes(0x5A, SIZE) };
            p
        })
        .collect();
    for p in again.into_iter().chain(kept.into_iter().map(|(_, &p)| p)) {
        // SAFETY: live blocks of `layout`, freed once.
        unsafe { dealloc(p, layout) };
    }
    // SAFETY: allocated above with `other`.
    unsafe { dealloc(q, other) };
}
