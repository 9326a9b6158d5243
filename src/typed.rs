//! Typed size classes: `TypedPool<T>`, a pool whose blocks are exactly one
//! `T` (its size rounded to its alignment), with a bounded free list of
//! recycled blocks — CPython's per-type free lists (floats, tuples,
//! frames) on top of pymalloc, so the hottest objects skip even the
//! size-class lookup.
//!
//! Blocks come from chunks: arena slot runs of one pool each, carved in
//! `T`-sized steps. Freed blocks go to the pool's free list while it holds
//! fewer than its cache limit, else back to their chunk, and a chunk with
//! no live block returns to its arena. A `PoolBox` dropped on another
//! thread pushes its block onto an atomic list the pool's user collects,
//! like a pool's `thread_free`.

use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of, ManuallyDrop};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use crate::arena::{registry, POOL_SIZE};
use crate::pool::{push_atomic, Block, Pool};
use crate::size_class::MAX_SMALL_ALIGN;

/// Free-list length a pool keeps by default (CPython keeps 100 floats).
pub const DEFAULT_CACHE: usize = 256;

std::thread_local! {
    static THREAD_TOKEN: u8 = const { 0 };
}

/// A token unique among live threads (the address of a thread-local).
fn thread_token() -> usize {
    THREAD_TOKEN.with(|t| t as *const u8 as usize)
}

struct Local {
    /// Recycled blocks, at most `cache_limit` of them.
    cached: *mut Block,
    cached_len: usize,
    cache_limit: usize,
    /// The chunk blocks are carved from, and every chunk (linked through
    /// the pools' `next`/`prev`).
    chunks: *mut Pool,
    chunk_count: usize,
    /// Zero-sized boxes alive (they have no block to count).
    zst_live: usize,
}

/// A typed pool of `T` blocks. See the module docs.
///
/// ```
/// use strata_alloc::TypedPool;
///
/// let pool = TypedPool::<[u64; 3]>::new();
/// let a = pool.alloc([1, 2, 3]);
/// let b = pool.alloc([4, 5, 6]);
/// assert_eq!(a[0] + b[2], 7);
/// drop(a); // its block waits in the pool's free list for the next alloc
/// assert_eq!(pool.stats().live, 1);
/// assert_eq!(pool.stats().cached, 1);
/// ```
pub struct TypedPool<T> {
    local: UnsafeCell<Local>,
    /// Blocks of boxes dropped on another thread.
    remote_free: AtomicPtr<Block>,
    /// Token of the thread using the pool (it is `!Sync`, so one at a time).
    user: AtomicUsize,
    /// Zero-sized boxes dropped on another thread (they have no block to
    /// push), folded into `zst_live` by the pool's thread.
    remote_zst_drops: AtomicUsize,
    /// `!Sync`, and owns `T`s.
    _marker: PhantomData<(Cell<()>, T)>,
}

// SAFETY: the pool's blocks and chunks belong to the pool value, not to a
// thread; moving it (with no `PoolBox` alive: they borrow it) moves them.
unsafe impl<T: Send> Send for TypedPool<T> {}

/// A `T` in a [`TypedPool`]: derefs like `Box<T>`, returns its block to
/// the pool when dropped.
pub struct PoolBox<'pool, T> {
    value: NonNull<T>,
    pool: &'pool TypedPool<T>,
}

// SAFETY: on another thread a `PoolBox` touches only the `T` (hence
// `T: Send`) and, when dropped, the pool's atomic `remote_free` and
// `user` fields; the borrow keeps the pool alive and in place.
unsafe impl<T: Send> Send for PoolBox<'_, T> {}
// SAFETY: `&PoolBox` only gives `&T`.
unsafe impl<T: Sync> Sync for PoolBox<'_, T> {}

/// Figures of one typed pool, from [`TypedPool::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypedPoolStats {
    /// `PoolBox`es alive.
    pub live: usize,
    /// Blocks in the free list, ready for the next `alloc`.
    pub cached: usize,
    /// Bytes of the pool's chunks.
    pub bytes: usize,
    /// Bytes per block.
    pub block_size: usize,
}

impl<T> TypedPool<T> {
    /// Bytes per block: `T`'s size rounded to its alignment, and at least a
    /// pointer (a free block holds a link).
    pub const BLOCK_SIZE: usize = {
        let align = if align_of::<T>() > align_of::<usize>() {
            align_of::<T>()
        } else {
            align_of::<usize>()
        };
        let size = if size_of::<T>() > size_of::<usize>() {
            size_of::<T>()
        } else {
            size_of::<usize>()
        };
        size.div_ceil(align) * align
    };

    const ZERO_SIZED: bool = size_of::<T>() == 0;

    /// An empty pool with the default free-list bound.
    ///
    /// # Panics
    /// If `T` is larger than a pool can hold (64 KiB) or aligned to more
    /// than 64 KiB: use `Box` for such types.
    pub fn new() -> Self {
        Self::with_cache_limit(DEFAULT_CACHE)
    }

    /// An empty pool keeping at most `limit` freed blocks for reuse.
    pub fn with_cache_limit(limit: usize) -> Self {
        assert!(
            Self::ZERO_SIZED || (Self::BLOCK_SIZE <= POOL_SIZE && align_of::<T>() <= MAX_SMALL_ALIGN),
            "TypedPool<{}>: blocks larger than 64 KiB or aligned to more than 64 KiB are not supported; use Box",
            core::any::type_name::<T>()
        );
        TypedPool {
            local: UnsafeCell::new(Local {
                cached: ptr::null_mut(),
                cached_len: 0,
                cache_limit: limit,
                chunks: ptr::null_mut(),
                chunk_count: 0,
                zst_live: 0,
            }),
            remote_free: AtomicPtr::new(ptr::null_mut()),
            user: AtomicUsize::new(0),
            remote_zst_drops: AtomicUsize::new(0),
            _marker: PhantomData,
        }
    }

    /// A pool with room for `n` values before it needs another chunk, and a
    /// free list bounded at `max(n, DEFAULT_CACHE)`.
    pub fn with_capacity(n: usize) -> Self {
        let pool = Self::with_cache_limit(n.max(DEFAULT_CACHE));
        if !Self::ZERO_SIZED {
            let per_chunk = POOL_SIZE / Self::BLOCK_SIZE;
            for _ in 0..n.div_ceil(per_chunk) {
                // SAFETY: `&self`-only access from the pool's thread.
                if unsafe { pool.add_chunk() }.is_null() {
                    break;
                }
            }
        }
        pool
    }

    /// Moves `value` into a block of the pool.
    ///
    /// # Panics
    /// If the OS refuses memory (like `Box::new`, via `handle_alloc_error`).
    #[inline]
    pub fn alloc(&self, value: T) -> PoolBox<'_, T> {
        let token = thread_token();
        if self.user.load(Ordering::Relaxed) != token {
            self.user.store(token, Ordering::Relaxed);
        }
        let block = if Self::ZERO_SIZED {
            // SAFETY: the pool is `!Sync`: only this thread is in here.
            unsafe { (*self.local.get()).zst_live += 1 };
            NonNull::dangling()
        } else {
            // SAFETY: the pool is `!Sync`: only this thread is in here.
            let p = unsafe { self.take_block() };
            match NonNull::new(p.cast::<T>()) {
                Some(p) => p,
                None => std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>()),
            }
        };
        // SAFETY: the block is `BLOCK_SIZE` bytes aligned for `T` and free.
        unsafe { block.as_ptr().write(value) };
        PoolBox {
            value: block,
            pool: self,
        }
    }

    /// Returns the cached blocks to their chunks and the empty chunks to
    /// the arenas.
    pub fn shrink(&self) {
        // SAFETY: the pool is `!Sync`: only this thread is in here.
        // Fields are reached through the raw pointer, never a long-lived
        // `&mut`: `return_to_chunk` touches them too.
        unsafe {
            self.collect_remote();
            let local = self.local.get();
            while !(*local).cached.is_null() {
                let block = (*local).cached;
                (*local).cached = (*block).next;
                (*local).cached_len -= 1;
                self.return_to_chunk(block);
            }
        }
    }

    /// Live boxes, cached blocks, bytes held.
    pub fn stats(&self) -> TypedPoolStats {
        // SAFETY: the pool is `!Sync`: only this thread is in here.
        unsafe { self.collect_remote() };
        // SAFETY: as above.
        let local = unsafe { &*self.local.get() };
        // Blocks handed out of chunks are alive or cached; boxes dropped on
        // other threads were collected just above.
        let mut carved_out = 0;
        let mut chunk = local.chunks;
        while !chunk.is_null() {
            // SAFETY: listed chunks are live pools of ours.
            unsafe {
                carved_out += (*chunk).used() as usize;
                chunk = (*chunk).next.get();
            }
        }
        TypedPoolStats {
            live: carved_out - local.cached_len + local.zst_live,
            cached: local.cached_len,
            bytes: local.chunk_count * POOL_SIZE,
            block_size: Self::BLOCK_SIZE,
        }
    }

    /// Pops a cached block, collecting remote frees first if needed, else
    /// carves one.
    #[inline]
    unsafe fn take_block(&self) -> *mut u8 {
        let local = self.local.get();
        // SAFETY: exclusive access (caller); fields through the raw pointer
        // because `collect_remote` and `add_chunk` touch them too.
        unsafe {
            if (*local).cached.is_null() {
                self.collect_remote();
            }
            let block = (*local).cached;
            if !block.is_null() {
                // Cached blocks are free blocks linked through their first word.
                (*local).cached = (*block).next;
                (*local).cached_len -= 1;
                return block.cast();
            }
        }
        // SAFETY: as above.
        let mut chunk = unsafe { (*local).chunks };
        // SAFETY: chunks are live pools owned by this pool.
        if chunk.is_null() || unsafe { (*chunk).free.get().is_null() && !(*chunk).carve() } {
            // SAFETY: as above.
            chunk = unsafe { self.add_chunk() };
            if chunk.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: a fresh chunk has blocks to carve.
            unsafe { (*chunk).carve() };
        }
        // SAFETY: the chunk has a free block now.
        unsafe { (*chunk).pop().cast() }
    }

    /// Moves blocks dropped on other threads into the cache (or chunks).
    unsafe fn collect_remote(&self) {
        let zst_drops = self.remote_zst_drops.swap(0, Ordering::Relaxed);
        // SAFETY: exclusive access (caller).
        unsafe { (*self.local.get()).zst_live -= zst_drops };
        if self.remote_free.load(Ordering::Relaxed).is_null() {
            return;
        }
        // Acquire pairs with the Release push in `PoolBox::drop`.
        let mut block = self.remote_free.swap(ptr::null_mut(), Ordering::Acquire);
        while !block.is_null() {
            // SAFETY: remote blocks are free blocks of our chunks.
            let next = unsafe { (*block).next };
            // SAFETY: exclusive access (caller).
            unsafe { self.recycle(block) };
            block = next;
        }
    }

    /// Takes back a free block: into the cache if it has room, else into
    /// its chunk.
    #[inline]
    unsafe fn recycle(&self, block: *mut Block) {
        let local = self.local.get();
        // SAFETY: exclusive access (caller); the block is free and ours.
        let cached = unsafe {
            if (*local).cached_len < (*local).cache_limit {
                (*block).next = (*local).cached;
                (*local).cached = block;
                (*local).cached_len += 1;
                true
            } else {
                false
            }
        };
        if !cached {
            // SAFETY: as above.
            unsafe { self.return_to_chunk(block) };
        }
    }

    /// Frees a block into its chunk; a chunk with no live block left (and
    /// not the one being carved) goes back to its arena.
    unsafe fn return_to_chunk(&self, block: *mut Block) {
        // SAFETY: our blocks live in our chunks, which are arena pools.
        let chunk = unsafe { &*crate::arena::pool_meta_of(block.cast()).cast::<Pool>() };
        // SAFETY: the block is free and belongs to `chunk`.
        if unsafe { chunk.push_local(block) } {
            let raw = chunk as *const Pool as *mut Pool;
            // SAFETY: exclusive access (caller).
            if unsafe { (*self.local.get()).chunks } != raw {
                // SAFETY: the chunk is listed and empty.
                unsafe { self.remove_chunk(raw) };
            }
        }
    }

    /// Adds a chunk at the front of the list; null if the OS refuses.
    unsafe fn add_chunk(&self) -> *mut Pool {
        // SAFETY: a fresh run from the registry becomes a typed pool.
        let init = |run: &_| unsafe { Pool::init_typed(run, Self::BLOCK_SIZE) };
        let Some(chunk) = registry().acquire_with(1, init) else {
            return ptr::null_mut();
        };
        // SAFETY: exclusive access (caller); listed chunks are live.
        unsafe {
            let local = self.local.get();
            (*chunk).next.set((*local).chunks);
            (*chunk).prev.set(ptr::null_mut());
            if !(*local).chunks.is_null() {
                (*(*local).chunks).prev.set(chunk);
            }
            (*local).chunks = chunk;
            (*local).chunk_count += 1;
        }
        chunk
    }

    /// Unlinks an empty chunk and returns it to its arena.
    unsafe fn remove_chunk(&self, chunk: *mut Pool) {
        // SAFETY: exclusive access (caller); the chunk is listed and holds
        // no live block.
        unsafe {
            let local = &mut *self.local.get();
            let (prev, next) = ((*chunk).prev.get(), (*chunk).next.get());
            if prev.is_null() {
                local.chunks = next;
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
            local.chunk_count -= 1;
            registry().release((*chunk).slot_run());
        }
    }
}

impl<T> Default for TypedPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for TypedPool<T> {
    fn drop(&mut self) {
        // No `PoolBox` is alive (they borrow the pool): every block is free.
        let local = self.local.get_mut();
        let mut chunk = local.chunks;
        while !chunk.is_null() {
            // SAFETY: listed chunks are live and hold no live block.
            unsafe {
                let next = (*chunk).next.get();
                registry().release((*chunk).slot_run());
                chunk = next;
            }
        }
    }
}

impl<T> fmt::Debug for TypedPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedPool")
            .field("type", &core::any::type_name::<T>())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<T> PoolBox<'_, T> {
    /// Moves the value out, returning the block to the pool.
    pub fn into_inner(this: Self) -> T {
        let this = ManuallyDrop::new(this);
        // SAFETY: the value is initialised and read once; the block is
        // released below without dropping the value again.
        let value = unsafe { this.value.as_ptr().read() };
        // SAFETY: the block is ours and its value moved out.
        unsafe { this.release_block() };
        value
    }

    /// Gives the block back to the pool (its value already dropped or moved).
    #[inline]
    unsafe fn release_block(&self) {
        let pool = self.pool;
        let on_pool_thread = pool.user.load(Ordering::Relaxed) == thread_token();
        if on_pool_thread {
            // SAFETY: on the pool's thread: exclusive access.
            unsafe {
                if TypedPool::<T>::ZERO_SIZED {
                    (*pool.local.get()).zst_live -= 1;
                } else {
                    pool.recycle(self.value.as_ptr().cast());
                }
            }
        } else if TypedPool::<T>::ZERO_SIZED {
            pool.remote_zst_drops.fetch_add(1, Ordering::Relaxed);
        } else {
            // Another thread: push onto the atomic list; the pool's thread
            // collects it.
            // SAFETY: the block is ours and its value gone.
            unsafe { push_atomic(&pool.remote_free, self.value.as_ptr().cast()) };
        }
    }
}

impl<T> Deref for PoolBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the block holds an initialised `T` while the box lives.
        unsafe { self.value.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` is unique.
        unsafe { self.value.as_mut() }
    }
}

impl<T> Drop for PoolBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped once.
        unsafe { ptr::drop_in_place(self.value.as_ptr()) };
        // SAFETY: the block is ours and its value dropped.
        unsafe { self.release_block() };
    }
}

impl<T: fmt::Debug> fmt::Debug for PoolBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_recycle_remote_drop_and_shrink() {
        let pool = TypedPool::<[u64; 2]>::with_cache_limit(2);
        let boxes: Vec<_> = (0..6u64).map(|i| pool.alloc([i, i + 1])).collect();
        assert_eq!(boxes[5][1], 6);
        std::thread::scope(|s| {
            let mut boxes = boxes;
            let remote = boxes.split_off(3);
            s.spawn(move || drop(remote));
            drop(boxes);
        });
        let stats = pool.stats();
        assert_eq!((stats.live, stats.cached), (0, 2));
        let again = pool.alloc([9, 9]);
        assert_eq!(PoolBox::into_inner(again), [9, 9]);
        pool.shrink();
        assert_eq!(pool.stats().cached, 0);
        let units = TypedPool::<()>::new();
        let unit = units.alloc(());
        std::thread::scope(|s| {
            s.spawn(move || drop(unit));
        });
        assert_eq!(units.stats().live, 0);
    }
}
