//! Core layer: size classes.
//!
//! Size classes: request size -> class -> block size, and the shape of the
//! pool that serves each class.
//!
//! Classes step by 16 bytes up to 128 B, then eight classes per power of
//! two, so a block wastes at most 1/8 of itself (12.5 %) above 128 B. Every
//! class size `s` is a multiple of the largest power of two `p <= s/8`
//! (or of `s` itself when `s` is a power of two), and pools start 64 KiB
//! aligned, so a block of a class is aligned to that power: an aligned
//! request is served by rounding its size up to a multiple of its alignment
//! (see [`class_for`]), with no extra work on the allocation path.
//!
//! The tables are computed by `const fn` at compile time; the lookup is a
//! few instructions of leading-zero arithmetic, without loops or division.

use crate::core::arena::{POOL_SIZE, SLOTS_PER_ARENA};

/// Largest block served by pools; bigger requests go to `large`.
/// 128 KiB: pools of that class span 16 slots (1 MiB), still a quarter of
/// an arena, while requests above it are rare enough to pay for `mmap`.
pub const MAX_SMALL_SIZE: usize = 128 * 1024;

/// Largest alignment pools can honour: pools start `POOL_SIZE` aligned.
pub const MAX_SMALL_ALIGN: usize = POOL_SIZE;

/// Classes with 16-byte steps: 16, 32, ..., 128.
const LINEAR_CLASSES: usize = 8;
/// Classes per power of two above 128 B.
const CLASSES_PER_DOUBLING: usize = 8;
/// log2(128): where the geometric classes start.
const FIRST_GEOMETRIC_SHIFT: u32 = 7;

/// Number of size classes.
pub const NUM_CLASSES: usize = class_index(MAX_SMALL_SIZE) + 1;

/// Index of the smallest class whose blocks hold `size` bytes
/// (`size <= MAX_SMALL_SIZE`).
#[inline(always)]
pub const fn class_index(size: usize) -> usize {
    if size <= 128 {
        // 0..=16 -> 0, 17..=32 -> 1, ...
        (size.saturating_sub(1)) >> 4
    } else {
        let w = size - 1;
        // 2^shift <= w < 2^(shift+1), shift >= 7.
        let shift = usize::BITS - 1 - w.leading_zeros();
        let step_shift = shift - 3;
        LINEAR_CLASSES
            + ((shift - FIRST_GEOMETRIC_SHIFT) as usize) * CLASSES_PER_DOUBLING
            + ((w >> step_shift) - CLASSES_PER_DOUBLING)
    }
}

/// Block size of class `index`.
pub const fn class_size(index: usize) -> usize {
    if index < LINEAR_CLASSES {
        (index + 1) * 16
    } else {
        let g = (index - LINEAR_CLASSES) / CLASSES_PER_DOUBLING;
        let m = (index - LINEAR_CLASSES) % CLASSES_PER_DOUBLING;
        let base = 1usize << (FIRST_GEOMETRIC_SHIFT as usize + g);
        base + (m + 1) * (base / CLASSES_PER_DOUBLING)
    }
}

/// How many consecutive arena slots a pool of class `index` spans: enough
/// for at least 8 blocks, so the unusable tail of a pool stays under 1/8.
pub const fn pool_slots(index: usize) -> usize {
    let size = class_size(index);
    let slots = (size * 8).div_ceil(POOL_SIZE);
    if slots == 0 {
        1
    } else {
        slots
    }
}

/// Blocks of class `index` that fit in its pool.
pub const fn pool_capacity(index: usize) -> usize {
    pool_slots(index) * POOL_SIZE / class_size(index)
}

const fn build_sizes() -> [u32; NUM_CLASSES] {
    let mut table = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        table[i] = class_size(i) as u32;
        i += 1;
    }
    table
}

/// Block size per class, for the hot paths (a table load beats the
/// arithmetic of [`class_size`]).
pub static CLASS_SIZES: [u32; NUM_CLASSES] = build_sizes();

/// The class serving a request of `size` bytes aligned to `align`, or
/// `None` if it must go to the large-block path. `align` must be a power
/// of two.
#[inline(always)]
pub const fn class_for(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        if size <= MAX_SMALL_SIZE {
            return Some(class_index(size));
        }
        return None;
    }
    if align > MAX_SMALL_ALIGN || size > MAX_SMALL_SIZE {
        return None;
    }
    // Round up to a multiple of the alignment: that size is itself a class
    // size or lies in a band whose step is a multiple of `align` (module
    // docs), so the chosen class's blocks are `align`-aligned.
    let rounded = (size + align - 1) & !(align - 1);
    if rounded > MAX_SMALL_SIZE {
        return None;
    }
    Some(class_index(if rounded == 0 { align } else { rounded }))
}

/// Largest request served through a heap's direct table (mimalloc's
/// `pages_free_direct`): one slot per 16 bytes of request, holding the
/// head pool of the request's class, so that `malloc` of a small size
/// finds its pool with one shift and one load, without computing the class.
pub const DIRECT_MAX: usize = 1024;
/// Slots of the direct table: sizes 0..=DIRECT_MAX in 16-byte steps.
pub const DIRECT_SLOTS: usize = DIRECT_MAX / 16 + 1;
/// The last class the direct table serves.
pub const DIRECT_LAST_CLASS: usize = class_index(DIRECT_MAX);

/// The direct-table slot of a request of `size <= DIRECT_MAX` bytes
/// (alignment at most 16).
#[inline(always)]
pub const fn direct_index(size: usize) -> usize {
    (size + 15) >> 4
}

/// The direct-table slots of class `class <= DIRECT_LAST_CLASS`: the
/// requests it serves are those above the previous class's size, up to its
/// own (every class size up to `DIRECT_MAX` is a multiple of 16).
pub const fn direct_slots(class: usize) -> core::ops::RangeInclusive<usize> {
    let first = if class == 0 {
        0
    } else {
        class_size(class - 1) / 16 + 1
    };
    first..=class_size(class) / 16
}

// Each slot's requests all fall in one class: class sizes up to the
// direct limit are multiples of the slot width.
const _: () = {
    let mut c = 0;
    while c <= DIRECT_LAST_CLASS {
        assert!(class_size(c) % 16 == 0);
        c += 1;
    }
    assert!(class_size(DIRECT_LAST_CLASS) == DIRECT_MAX);
};

// The arena must hold the largest pool beside its header slot.
const _: () = assert!(pool_slots(NUM_CLASSES - 1) < SLOTS_PER_ARENA);
const _: () = assert!(class_size(NUM_CLASSES - 1) == MAX_SMALL_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_slots_map_to_the_class_of_their_sizes() {
        for size in 0..=DIRECT_MAX {
            let class = class_index(size);
            assert!(
                direct_slots(class).contains(&direct_index(size)),
                "size {size}: class {class}, slot {}",
                direct_index(size)
            );
        }
        assert_eq!(*direct_slots(DIRECT_LAST_CLASS).end(), DIRECT_SLOTS - 1);
    }

    #[test]
    fn classes_are_increasing_and_cover_every_size() {
        for i in 1..NUM_CLASSES {
            assert!(class_size(i) > class_size(i - 1));
        }
        for size in 0..=MAX_SMALL_SIZE {
            let c = class_index(size);
            assert!(class_size(c) >= size, "size {size} -> class {c}");
            if c > 0 {
                assert!(
                    class_size(c - 1) < size.max(1),
                    "size {size} not in smallest class"
                );
            }
        }
    }

    #[test]
    fn waste_is_bounded() {
        for size in 129..=MAX_SMALL_SIZE {
            let block = class_size(class_index(size));
            assert!((block - size) * 8 <= block, "size {size} -> block {block}");
        }
    }

    #[test]
    fn table_matches_formula() {
        for (i, &s) in CLASS_SIZES.iter().enumerate() {
            assert_eq!(s as usize, class_size(i));
        }
        assert_eq!(class_size(0), 16);
        assert_eq!(class_size(7), 128);
        assert_eq!(class_size(8), 144);
        assert_eq!(class_size(15), 256);
        assert_eq!(class_size(16), 288);
    }

    #[test]
    fn aligned_classes_give_aligned_blocks() {
        let mut align = 32;
        while align <= MAX_SMALL_ALIGN {
            for size in [
                1,
                align / 2,
                align,
                align + 1,
                3 * align,
                5 * align + 7,
                MAX_SMALL_SIZE,
            ] {
                if let Some(c) = class_for(size, align) {
                    let block = class_size(c);
                    assert!(block >= size);
                    assert_eq!(
                        block % align,
                        0,
                        "size {size} align {align} -> block {block}"
                    );
                }
            }
            align *= 2;
        }
    }

    #[test]
    fn pools_hold_at_least_eight_blocks_with_small_tail() {
        for c in 0..NUM_CLASSES {
            let bytes = pool_slots(c) * POOL_SIZE;
            assert!(pool_capacity(c) >= 8);
            let tail = bytes - pool_capacity(c) * class_size(c);
            assert!(tail * 8 <= bytes, "class {c}");
        }
    }

    #[test]
    fn large_requests_have_no_class() {
        assert_eq!(class_for(MAX_SMALL_SIZE + 1, 8), None);
        assert_eq!(class_for(16, 2 * MAX_SMALL_ALIGN), None);
        assert!(class_for(MAX_SMALL_SIZE, 8).is_some());
    }
}
