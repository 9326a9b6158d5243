//! Core layer: the chunk map — what each `ARENA_SIZE` (4 MiB) chunk of the
//! address space holds for this allocator, read without touching the
//! chunk itself.
//!
//! `free`, `realloc` and `malloc_usable_size` get a bare pointer. Before
//! they read the arena or large-block header that the pointer's chunk
//! would start with, they look the chunk up here, so a pointer strata
//! never handed out (the stack, a static, another allocator's memory, an
//! address in no mapping) is reported instead of faulting inside the
//! allocator (snmalloc's pagemap does the same).
//!
//! The map is one byte per chunk over the user address space (47 bits on
//! x86_64, 48 elsewhere): 2^25 chunks in 32 MiB of zeroed static memory,
//! of which only the pages covering the chunks in use are ever touched
//! (one 4 KiB page of the map covers 16 GiB of address space). A byte
//! keeps the lookup on `free` to a shift and one load (two bits per chunk
//! cost four more instructions per `free`, four bits three). Miri, which
//! would hold the 32 MiB for real, gets a map of its own addresses' range
//! (its allocations sit far below 2^40). A chunk is marked before any block in
//! it is handed out and cleared only after its last block is gone, so the
//! hand-over of a block (which orders its allocation before its free)
//! also orders the mark before any lookup of it: relaxed atomics suffice,
//! and `core`'s atomics are used under loom too (no protocol to model).

use core::sync::atomic::{AtomicU8, Ordering};

/// No mapping of this allocator starts in the chunk.
pub(crate) const NONE: u8 = 0;
/// An arena: the chunk starts with its header.
pub(crate) const ARENA: u8 = 1;
/// A large block whose mapping starts at the chunk, header first.
pub(crate) const LARGE: u8 = 2;
/// A huge-aligned large block: its data starts at the chunk, its header
/// is the page before.
pub(crate) const HUGE: u8 = 3;

/// log2 of the chunk size (`arena::ARENA_SIZE`).
const CHUNK_SHIFT: u32 = 22;
/// Address bits covered; higher addresses are in no chunk.
const ADDRESS_BITS: u32 = if cfg!(miri) {
    40
} else if cfg!(target_arch = "x86_64") {
    47
} else {
    48
};
const CHUNKS: usize = 1 << (ADDRESS_BITS - CHUNK_SHIFT);

static MAP: [AtomicU8; CHUNKS] = [const { AtomicU8::new(NONE) }; CHUNKS];

/// What the chunk holding `addr` holds.
#[inline(always)]
pub(crate) fn kind(addr: usize) -> u8 {
    match MAP.get(addr >> CHUNK_SHIFT) {
        Some(entry) => entry.load(Ordering::Relaxed),
        None => NONE,
    }
}

/// Marks the chunk holding `addr` as holding `kind` (`NONE` clears it).
pub(crate) fn set(addr: usize, kind: u8) {
    if let Some(entry) = MAP.get(addr >> CHUNK_SHIFT) {
        entry.store(kind, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_kept_per_chunk() {
        let chunk = 1usize << CHUNK_SHIFT;
        // Far from any mapping of the tests, inside the map under Miri too.
        let a = 0xf0_0000_0000usize + 40 * chunk;
        assert_eq!(kind(a), NONE);
        set(a, LARGE);
        set(a + chunk, HUGE);
        assert_eq!(
            (kind(a), kind(a + chunk - 1), kind(a + chunk)),
            (LARGE, LARGE, HUGE)
        );
        set(a, NONE);
        assert_eq!((kind(a), kind(a + chunk)), (NONE, HUGE));
        set(a + chunk, NONE);
        assert_eq!(kind(usize::MAX), NONE);
    }
}
