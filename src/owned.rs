//! API layer, over the core: owned heaps.
//!
//! Owned heaps: mimalloc's `mi_heap_new` — a heap that belongs to a value
//! instead of a thread, serves `allocator_api2` collections, and frees
//! everything allocated in it at once.
//!
//! An owned heap has its own pools (from the same arenas as every thread
//! heap), so dropping it or calling [`Heap::reset`] returns whole pools to
//! the arenas without touching a single block. It is `Send` but not
//! `Sync`: collections borrow it (`Vec::new_in(&heap)`), and `reset` takes
//! `&mut self`, so the borrow checker guarantees no collection outlives
//! the memory it points into.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use std::collections::HashSet;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::core::heap;
use crate::core::large;
use crate::core::size_class::{class_for, CLASS_SIZES};

/// A heap owned by a value: allocate in it through [`Allocator`], free
/// everything in it at once with [`Heap::reset`] or by dropping it.
///
/// ```
/// use allocator_api2::vec::Vec;
/// use strata_alloc::Heap;
///
/// let mut heap = Heap::new();
/// {
///     let mut v = Vec::new_in(&heap);
///     v.extend(0..1000u32);
///     assert_eq!(heap.stats().blocks_in_use, 1);
/// } // `v` may be dropped or leaked: `reset` frees its memory either way.
/// heap.reset();
/// assert_eq!(heap.stats().bytes_in_use, 0);
/// ```
pub struct Heap {
    inner: UnsafeCell<heap::Heap>,
    /// Large blocks allocated here, freed on reset.
    large: UnsafeCell<HashSet<*mut u8>>,
    /// Not `Sync`: one thread at a time allocates and frees.
    _not_sync: PhantomData<core::cell::Cell<()>>,
}

// SAFETY: the heap's pools belong to the heap's id, not to a thread, so
// moving the whole heap to another thread moves their ownership with it.
unsafe impl Send for Heap {}

/// What an owned heap holds, from [`Heap::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Pools the heap owns.
    pub pools: usize,
    /// Blocks in use (small and large).
    pub blocks_in_use: usize,
    /// Bytes of the blocks in use (block sizes, large blocks' usable size).
    pub bytes_in_use: usize,
}

impl Heap {
    /// An empty heap; it takes memory from the arenas on first use.
    pub fn new() -> Self {
        crate::core::init::ensure();
        Heap {
            inner: UnsafeCell::new(heap::Heap::new_owned()),
            large: UnsafeCell::new(HashSet::new()),
            _not_sync: PhantomData,
        }
    }

    /// Frees every block allocated in this heap at once, returning its
    /// pools to the arenas (their memory goes back to the OS after the
    /// purge delay). Collections that used the heap must be gone: the
    /// borrow checker enforces it.
    pub fn reset(&mut self) {
        // SAFETY: `&mut self` proves no collection borrows the heap, so no
        // block of it is reachable any more.
        unsafe { self.inner.get_mut().release_all() };
        for block in self.large.get_mut().drain() {
            // SAFETY: every recorded block is a live large block of ours.
            unsafe { large::free(block) };
        }
    }

    /// Pools, blocks and bytes in use in this heap.
    pub fn stats(&self) -> HeapStats {
        // SAFETY: not `Sync`, and no method of ours is running (we are not
        // re-entered from inside the allocator).
        let (pools, blocks, bytes) = unsafe { (*self.inner.get()).usage() };
        // SAFETY: as above.
        let large = unsafe { &*self.large.get() };
        let large_bytes: usize = large
            .iter()
            // SAFETY: recorded blocks are live large blocks.
            .map(|&block| unsafe { large::usable_size(block) })
            .sum();
        HeapStats {
            pools,
            blocks_in_use: blocks + large.len(),
            bytes_in_use: bytes + large_bytes,
        }
    }
}

impl Default for Heap {
    fn default() -> Self {
        Heap::new()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        self.reset();
    }
}

impl core::fmt::Debug for Heap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Heap")
            .field("stats", &self.stats())
            .finish()
    }
}

// SAFETY: blocks are at least `layout.size()` bytes (the returned slice
// says how many), aligned to `layout.align()`, and stay valid until
// deallocated, reset or the heap is dropped — none of which can happen
// while a collection borrows the heap.
unsafe impl Allocator for Heap {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let dangling = NonNull::new(ptr::without_provenance_mut::<u8>(layout.align()))
                .ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let (p, len) = match class_for(layout.size(), layout.align()) {
            // SAFETY: not `Sync` and not re-entered: the `&mut` is unique.
            Some(class) => (
                unsafe { (*self.inner.get()).alloc(class) },
                CLASS_SIZES[class] as usize,
            ),
            None => {
                let p = large::alloc(layout.size(), layout.align(), false);
                if !p.is_null() {
                    // SAFETY: as above; HashSet allocates through the global
                    // allocator, never through this heap.
                    unsafe { (*self.large.get()).insert(p) };
                }
                (p, layout.size())
            }
        };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, len))
            .ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        if class_for(layout.size(), layout.align()).is_some() {
            // SAFETY: a live small block (Allocator contract); the `&mut`
            // is unique as in `allocate`. An owned heap is started at
            // creation: there is nothing to start.
            let _ = unsafe { (*self.inner.get()).free(ptr.as_ptr()) };
        } else {
            // SAFETY: as above.
            let recorded = unsafe { (*self.large.get()).remove(&ptr.as_ptr()) };
            if !recorded {
                crate::core::diag::abort_with_pointer(
                    b"Heap::deallocate of a block this heap does not own: ",
                    ptr.as_ptr(),
                );
            }
            // SAFETY: a live large block of ours.
            unsafe { large::free(ptr.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_reset() {
        let mut heap = Heap::new();
        let layout = Layout::from_size_align(100, 8).unwrap();
        let blocks: Vec<_> = (0..2000).map(|_| heap.allocate(layout).unwrap()).collect();
        assert!(blocks.iter().all(|b| b.len() >= 100));
        let stats = heap.stats();
        assert_eq!(stats.blocks_in_use, 2000);
        assert!(stats.pools >= 3);
        for b in &blocks[..1000] {
            // SAFETY: live blocks of this heap, freed once.
            unsafe { heap.deallocate(b.cast(), layout) };
        }
        assert_eq!(heap.stats().blocks_in_use, 1000);
        let big = Layout::from_size_align(1 << 20, 4096).unwrap();
        let b = heap.allocate(big).unwrap();
        assert_eq!(b.cast::<u8>().as_ptr() as usize % 4096, 0);
        assert_eq!(heap.stats().blocks_in_use, 1001);
        heap.reset();
        assert_eq!(heap.stats(), HeapStats::default());
        let zero = heap
            .allocate(Layout::from_size_align(0, 64).unwrap())
            .unwrap();
        assert_eq!(zero.len(), 0);
    }
}
