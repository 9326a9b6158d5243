//! Core layer: pools.
//!
//! Pools: runs of arena slots serving one size class, and their free lists.
//!
//! A pool's blocks are carved lazily from its start (`reserved` counts how
//! far), so a fresh pool touches only the pages it hands out. Freed blocks
//! go to one of three singly linked lists threaded through the blocks
//! themselves (mimalloc's free-list sharding):
//!
//! - `free`: what the owner allocates from (plain pointer pops);
//! - `local_free`: blocks the owner freed (plain pushes), moved to `free`
//!   only when `free` runs dry, so the hot paths never touch the same list;
//! - `thread_free`: blocks other threads freed, an atomic push-only stack
//!   that the owner takes over in one swap.
//!
//! Only the owning thread (`owner` = its heap id) touches `free`,
//! `local_free` and the queue links; anyone may push to `thread_free`.
//! `used` is written by the owner alone but read by stats, so it is an
//! atomic accessed with plain loads and stores.
//!
//! Misuse checks of every build (`Heap::free`): a pointer is a block start
//! when its offset in the pool is a multiple of the block size, tested with
//! a multiply by a per-pool reciprocal ([`Pool::is_block_offset`]); a block
//! freed through a heap carries a tag in its second word until it is handed
//! out again ([`is_tagged_free`]), which tells a double free from a first
//! one at the cost of a load and a store per free and a store per
//! allocation.
//!
//! With the `secure` feature, every link of the three lists is encoded
//! with the process's key and checked where it is followed
//! ([`Pool::next_free`], see `secure`); all link reads and writes go
//! through [`link`] and [`set_link`] (and [`Pool::next_free`]), which are
//! plain pointer moves without the feature.

use core::cell::Cell;
use core::ptr;

use crate::core::arena::{Registry, SlotRun, POOL_SIZE, SLOT_META_SIZE};
use crate::core::secure::{self, Key};
use crate::core::size_class::{pool_capacity, pool_slots, CLASS_SIZES};
use crate::core::sync::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// A free block: its first word links to the next free block.
#[repr(C)]
pub(crate) struct Block {
    pub next: *mut Block,
}

/// The block `block`'s link word links to, decoded with `key`.
///
/// # Safety
/// `block` is a free block of a pool (its first word is the link).
#[inline(always)]
unsafe fn link_with(block: *mut Block, key: Key) -> *mut Block {
    // SAFETY: forwarded contract.
    let word = unsafe { (*block).next };
    if secure::COMPILED {
        // The address changes, the provenance stays: that of `next`.
        word.map_addr(|a| key.decode(a))
    } else {
        word
    }
}

/// Makes free block `block` link to `next`, encoded at the secure level.
///
/// # Safety
/// `block` is a free block of a pool, ours to write.
#[inline(always)]
pub(crate) unsafe fn set_link(block: *mut Block, next: *mut Block) {
    let word = if secure::COMPILED {
        let key = secure::key();
        next.map_addr(|a| key.encode(a))
    } else {
        next
    };
    // SAFETY: forwarded contract.
    unsafe { (*block).next = word };
}

/// The second word of a block freed through a heap is its address plus
/// this: set on every free ([`tag_free`]), cleared when the block is handed
/// out ([`Pool::pop_untagged`]). A live block holds it only if the program
/// stored exactly that value there: an odd number, so never a pointer to
/// anything aligned, 1.3 GiB past the block; the block's address in it
/// makes a copy of another freed block's bytes carry no tag. Adding a
/// 32-bit constant is one instruction (`lea`); a 64-bit xor key made the
/// free two instructions longer (measured). Blocks of size classes are at
/// least 16 bytes, so the word is always theirs (`TypedPool` blocks, which
/// may be 8 bytes, are never tagged).
const FREE_TAG: usize = 0x5346_5245; // "ERFS": strata free

/// The tag word of `block`. An atomic (relaxed: plain loads and stores on
/// x86_64 and aarch64), because a double free on another thread may read it
/// while the owner hands the block out again; the link word stays plain.
/// `core`'s atomics under loom too, like the chunk map: no protocol rests
/// on the tag.
///
/// # Safety
/// `block` is a block of a size class (at least 16 bytes) in a live pool.
#[inline(always)]
unsafe fn tag_word<'a>(block: *mut Block) -> &'a core::sync::atomic::AtomicUsize {
    // SAFETY: the second word is inside the block (caller), aligned, and
    // only ever accessed atomically by the allocator.
    unsafe { core::sync::atomic::AtomicUsize::from_ptr(block.cast::<usize>().add(1)) }
}

/// Whether `block`'s tag word says it is already free (see [`FREE_TAG`]).
///
/// # Safety
/// As for [`tag_word`].
#[inline(always)]
pub(crate) unsafe fn is_tagged_free(block: *mut Block) -> bool {
    // SAFETY: forwarded contract.
    unsafe { tag_word(block) }.load(core::sync::atomic::Ordering::Relaxed)
        == block.addr().wrapping_add(FREE_TAG)
}

/// Marks `block`, being freed through a heap, as free.
///
/// # Safety
/// As for [`tag_word`]; `block` is being freed.
#[inline(always)]
pub(crate) unsafe fn tag_free(block: *mut Block) {
    // SAFETY: forwarded contract.
    unsafe { tag_word(block) }.store(
        block.addr().wrapping_add(FREE_TAG),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// `owner` of a pool whose thread exited (see `abandoned`).
pub(crate) const ABANDONED: usize = usize::MAX;
/// `owner` of a `TypedPool` chunk: no heap frees into it.
pub(crate) const TYPED_OWNER: usize = usize::MAX - 1;
/// `class` of a `TypedPool` chunk (not a size class).
pub(crate) const TYPED_CLASS: u32 = u32::MAX;

/// Carve at most this many bytes of fresh blocks at a time: keeps the
/// first allocation in a pool from touching all of its pages.
const CARVE_BYTES: usize = 4096;
/// The most blocks one carve makes (`TypedPool` blocks may be 8 bytes).
const MAX_CARVED: usize = CARVE_BYTES / 8;

/// Metadata of one pool, stored in its arena's header. The first cache
/// line holds what the owner touches on every allocation and free; the
/// second what other threads touch (`owner`, `thread_free`), so remote
/// frees do not bounce the owner's line between cores.
#[repr(C, align(64))]
pub(crate) struct Pool {
    /// Blocks ready to allocate (owner only).
    pub free: Cell<*mut Block>,
    /// Blocks handed out and not yet returned to `free` or `local_free`
    /// (blocks in `thread_free` still count). Written by the owner only.
    pub used: AtomicU32,
    /// Blocks that fit in the pool.
    pub capacity: u32,
    /// Blocks freed by the owner (owner only).
    pub local_free: Cell<*mut Block>,
    /// Size class and block size.
    pub class: u32,
    pub block_size: u32,
    /// Blocks carved from the pool's memory so far (owner writes, stats
    /// read).
    pub reserved: AtomicU32,
    /// Slots the pool spans.
    pub slots: u32,
    /// First byte of the pool's memory.
    pub start: *mut u8,
    /// Links in the owner heap's class queue, or in the abandoned list.
    pub next: Cell<*mut Pool>,
    pub prev: Cell<*mut Pool>,
    /// Heap id of the owning thread, or `ABANDONED` (second cache line).
    pub owner: AtomicUsize,
    /// Blocks freed by other threads (atomic push, owner swaps it out).
    pub thread_free: AtomicPtr<Block>,
    /// Kept empty by its heap for reuse (owner only; see `heap.rs`).
    pub hot: Cell<bool>,
    /// `u64::MAX / block_size + 1`, the reciprocal that tells a block
    /// start from an interior pointer without a division
    /// ([`Pool::is_block_offset`]); 0 in a record no pool was made in,
    /// which then takes no pointer.
    pub div_magic: u64,
    /// `reserved * block_size`, kept beside it by `carve` so that the
    /// secure level's check of a link ([`Pool::is_free_link`]) bounds it
    /// with one load.
    carved_bytes: AtomicU32,
}

const _: () = assert!(core::mem::size_of::<Pool>() <= SLOT_META_SIZE);

impl Pool {
    /// Turns a fresh slot run into an empty pool of `class` owned by
    /// `owner` and returns its metadata.
    ///
    /// # Safety
    /// `run` must come from the arena registry and hold no live block.
    pub(crate) unsafe fn init(run: &SlotRun, class: usize, owner: usize) -> *mut Pool {
        debug_assert_eq!(run.count, pool_slots(class));
        // The link key is fixed before the first link is written.
        secure::ensure();
        let pool = run.meta().cast::<Pool>();
        // SAFETY: the metadata record is reserved for this pool, suitably
        // sized (const assert above) and aligned (arena header alignment),
        // and nobody else references it while the run is ours.
        unsafe {
            pool.write(Pool {
                free: Cell::new(ptr::null_mut()),
                used: AtomicU32::new(0),
                capacity: pool_capacity(class) as u32,
                local_free: Cell::new(ptr::null_mut()),
                thread_free: AtomicPtr::new(ptr::null_mut()),
                owner: AtomicUsize::new(owner),
                class: class as u32,
                block_size: CLASS_SIZES[class],
                reserved: AtomicU32::new(0),
                slots: run.count as u32,
                start: run.start(),
                next: Cell::new(ptr::null_mut()),
                prev: Cell::new(ptr::null_mut()),
                hot: Cell::new(false),
                div_magic: div_magic(CLASS_SIZES[class]),
                carved_bytes: AtomicU32::new(0),
            });
        }
        pool
    }

    /// Turns a fresh one-slot run into an empty chunk of a `TypedPool`,
    /// carved in `block_size` steps; its `class` is [`TYPED_CLASS`].
    ///
    /// # Safety
    /// As for [`Pool::init`]; `block_size` is between 8 and `POOL_SIZE`.
    pub(crate) unsafe fn init_typed(run: &SlotRun, block_size: usize) -> *mut Pool {
        debug_assert!(run.count == 1 && (8..=POOL_SIZE).contains(&block_size));
        // SAFETY: forwarded contract; class 0 is overwritten below.
        let pool = unsafe { Pool::init(run, 0, TYPED_OWNER) };
        // SAFETY: the record was just written and is ours.
        unsafe {
            (*pool).class = TYPED_CLASS;
            (*pool).block_size = block_size as u32;
            (*pool).div_magic = div_magic(block_size as u32);
            (*pool).capacity = (POOL_SIZE / block_size) as u32;
        }
        pool
    }

    /// The slot run this pool occupies, to give back to the registry.
    pub(crate) fn slot_run(&self) -> SlotRun {
        let arena = crate::core::arena::arena_of(self.start);
        let first = (self.start.addr() - arena.addr()) / POOL_SIZE;
        SlotRun {
            arena,
            first,
            count: self.slots as usize,
        }
    }

    /// [`Pool::pop`] for a heap: a block handed out loses its free tag
    /// (see [`FREE_TAG`]), so that freeing it is not taken for a double
    /// free. One store, into the line the pop just read.
    #[inline(always)]
    pub(crate) fn pop_untagged(&self) -> *mut Block {
        let block = self.pop();
        if !block.is_null() {
            // SAFETY: a block of a size class of this live pool, ours now.
            unsafe { tag_word(block) }.store(0, core::sync::atomic::Ordering::Relaxed);
        }
        block
    }

    /// Pops a block from `free`, or null.
    #[inline(always)]
    pub(crate) fn pop(&self) -> *mut Block {
        let block = self.free.get();
        if !block.is_null() {
            // SAFETY: blocks on `free` are free blocks of this pool whose
            // first word is the link.
            self.free.set(unsafe { self.next_free(block) });
            self.set_used(self.used() + 1);
        }
        block
    }

    /// The block after `block` on a list of this pool: at the secure
    /// level, decoded and checked — it must be null or the start of a block
    /// of this pool carved so far, else the process aborts naming the pool,
    /// the block and its link (a write after free, or a forged link).
    /// Without the feature, a plain load.
    ///
    /// # Safety
    /// `block` is a free block on one of this pool's lists, or one the
    /// caller is about to put there.
    #[inline(always)]
    pub(crate) unsafe fn next_free(&self, block: *mut Block) -> *mut Block {
        let key = secure::key();
        // SAFETY: forwarded contract.
        let next = unsafe { link_with(block, key) };
        if secure::COMPILED && key.checking() && !self.is_free_link(next) {
            bad_link(self, block, next);
        }
        next
    }

    /// Whether `next` may be a link of this pool's lists: null, or the
    /// start of a block carved so far.
    #[inline(always)]
    pub(crate) fn is_free_link(&self, next: *mut Block) -> bool {
        if next.is_null() {
            return true;
        }
        let offset = next.addr().wrapping_sub(self.start.addr());
        let carved = self.carved_bytes.load(Ordering::Relaxed) as usize;
        offset < carved && is_multiple(offset as u64, self.div_magic)
    }

    /// Returns a block freed by the owner. Returns true if the pool became
    /// empty.
    ///
    /// # Safety
    /// `block` must be a block of this pool handed out and not freed since.
    #[inline(always)]
    pub(crate) unsafe fn push_local(&self, block: *mut Block) -> bool {
        // SAFETY: the block is ours to reuse (caller).
        unsafe { set_link(block, self.local_free.get()) };
        self.local_free.set(block);
        let used = self.used() - 1;
        self.set_used(used);
        used == 0
    }

    /// Moves `local_free` to the empty `free` list (owner only); returns
    /// false if there was nothing to move.
    #[inline(always)]
    pub(crate) fn take_local_free(&self) -> bool {
        debug_assert!(self.free.get().is_null());
        let local = self.local_free.replace(ptr::null_mut());
        self.free.set(local);
        !local.is_null()
    }

    /// Pushes a block freed by a thread other than the owner.
    ///
    /// # Safety
    /// `block` must be a block of this pool handed out and not freed since.
    pub(crate) unsafe fn push_thread_free(&self, block: *mut Block) {
        // SAFETY: forwarded contract; `set_link` writes the block's link.
        unsafe { push_linked(&self.thread_free, block, set_link) }
    }

    #[inline(always)]
    pub(crate) fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set_used(&self, used: u32) {
        // Single writer (the owner, or the abandoned-list lock holder): a
        // plain store, no read-modify-write.
        self.used.store(used, Ordering::Relaxed);
    }

    /// Moves `local_free` and `thread_free` into `free` (owner only).
    pub(crate) fn collect(&self) {
        let local = self.local_free.replace(ptr::null_mut());
        if !local.is_null() {
            self.free.set(self.append(local, self.free.get()));
        }
        if !self.thread_free.load(Ordering::Relaxed).is_null() {
            // Acquire pairs with the Release of `push_thread_free`.
            let taken = self.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
            let mut count = 0u32;
            let mut tail = taken;
            // SAFETY: every block on the taken list is a free block of this
            // pool, linked through its first word; the list is ours now.
            unsafe {
                loop {
                    count += 1;
                    let next = self.next_free(tail);
                    if next.is_null() {
                        break;
                    }
                    tail = next;
                }
                set_link(tail, self.free.get());
            }
            self.free.set(taken);
            self.set_used(self.used() - count);
        }
    }

    /// Carves up to `CARVE_BYTES` of never-used blocks onto `free`
    /// (owner only, `free` empty). Returns false if the pool is full.
    pub(crate) fn carve(&self) -> bool {
        debug_assert!(self.free.get().is_null());
        let reserved = self.reserved.load(Ordering::Relaxed);
        let remaining = self.capacity - reserved;
        if remaining == 0 {
            return false;
        }
        let size = self.block_size as usize;
        let count = remaining.min((CARVE_BYTES / size).max(1) as u32) as usize;
        // SAFETY: blocks `reserved..reserved + count` lie inside the pool's
        // memory and have never been handed out.
        unsafe {
            let first = self.start.add(reserved as usize * size);
            if secure::shuffles() && count > 1 {
                self.link_shuffled(first, size, count);
            } else {
                for i in 0..count - 1 {
                    let block = first.add(i * size).cast::<Block>();
                    set_link(block, first.add((i + 1) * size).cast());
                }
                set_link(first.add((count - 1) * size).cast(), ptr::null_mut());
                self.free.set(first.cast());
            }
        }
        // Single writer (the owner); stats read it.
        self.reserved
            .store(reserved + count as u32, Ordering::Relaxed);
        self.carved_bytes.store(
            (reserved as usize + count) as u32 * self.block_size,
            Ordering::Relaxed,
        );
        true
    }

    /// [`Pool::carve`] at secure level 2: links the `count` fresh blocks of
    /// `size` bytes from `first` onto `free` in a random order.
    ///
    /// # Safety
    /// As in [`Pool::carve`]: the blocks are fresh, inside the pool.
    #[cold]
    unsafe fn link_shuffled(&self, first: *mut u8, size: usize, count: usize) {
        let mut order = [0u16; MAX_CARVED];
        let order = &mut order[..count];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i as u16;
        }
        secure::shuffle(order, secure::seed_for(first.addr()));
        let block = |i: u16| first.wrapping_add(i as usize * size).cast::<Block>();
        // SAFETY: every block of `order` is fresh and inside the pool
        // (caller).
        unsafe {
            for pair in order.windows(2) {
                set_link(block(pair[0]), block(pair[1]));
            }
            set_link(block(order[count - 1]), ptr::null_mut());
        }
        self.free.set(block(order[0]));
    }

    /// Whether `p`, a pointer into this pool's slots, is at a multiple of
    /// the block size from its start: the interior-pointer check of every
    /// free. Lemire's divisibility test (Lemire, Kaser, Kurz, "Faster
    /// remainder by direct computation", 2019): for `n` and `d` below 2^32
    /// and `c = u64::MAX / d + 1`, `n % d == 0` exactly when `n * c`
    /// (wrapping) is below `c`: a multiply and a compare instead of a
    /// 20-to-40-cycle division, for every class alike (a power-of-two mask
    /// would save the multiply for the 14 power-of-two classes of 88, at the
    /// price of a branch for all). Offsets inside a pool are below 2^20.
    #[inline(always)]
    pub(crate) fn is_block_offset(&self, p: *const u8) -> bool {
        let offset = p.addr().wrapping_sub(self.start.addr()) as u64;
        is_multiple(offset, self.div_magic)
    }

    /// Whether `p` is the start of a block of this pool carved so far (the
    /// debug-build check, which also refuses blocks never handed out).
    pub(crate) fn is_block_start(&self, p: *const u8) -> bool {
        let offset = p.addr().wrapping_sub(self.start.addr());
        offset < self.reserved.load(Ordering::Relaxed) as usize * self.block_size as usize
            && offset % self.block_size as usize == 0
    }
}

/// The reciprocal of `block_size` for [`Pool::is_block_offset`].
const fn div_magic(block_size: u32) -> u64 {
    u64::MAX / block_size as u64 + 1
}

/// Whether `offset` (below 2^32) is a multiple of the block size whose
/// [`div_magic`] is `magic`.
#[inline(always)]
fn is_multiple(offset: u64, magic: u64) -> bool {
    offset.wrapping_mul(magic) < magic
}

/// Pushes a free block onto an atomic push-only list (a typed pool's
/// remote list: plain links), which its owner takes over whole with an
/// Acquire swap.
///
/// # Safety
/// `block` must be a free block nobody else uses.
pub(crate) unsafe fn push_atomic(list: &AtomicPtr<Block>, block: *mut Block) {
    // SAFETY: forwarded contract.
    unsafe { push_linked(list, block, set_plain_link) }
}

/// Makes free block `block` link to `next`, plain (typed pools' lists).
///
/// # Safety
/// As for [`set_link`].
unsafe fn set_plain_link(block: *mut Block, next: *mut Block) {
    // SAFETY: forwarded contract.
    unsafe { (*block).next = next };
}

/// [`push_atomic`], the link written by `set` (a pool's `thread_free`
/// encodes it).
///
/// # Safety
/// As for [`push_atomic`]; `set(block, next)` writes only `block`'s link.
unsafe fn push_linked(
    list: &AtomicPtr<Block>,
    block: *mut Block,
    set: unsafe fn(*mut Block, *mut Block),
) {
    let mut head = list.load(Ordering::Relaxed);
    loop {
        // SAFETY: the block is ours until the CAS publishes it.
        unsafe { set(block, head) };
        // Release: the owner's Acquire swap sees the link we wrote.
        match list.compare_exchange_weak(head, block, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(current) => head = current,
        }
    }
}

impl Pool {
    /// Links list `head` in front of `rest`, both lists of this pool;
    /// returns the new head.
    fn append(&self, head: *mut Block, rest: *mut Block) -> *mut Block {
        if rest.is_null() {
            return head;
        }
        let mut tail = head;
        // SAFETY: `head` is a non-empty, null-terminated list of free blocks
        // of this pool.
        unsafe {
            loop {
                let next = self.next_free(tail);
                if next.is_null() {
                    break;
                }
                tail = next;
            }
            set_link(tail, rest);
        }
        head
    }
}

/// [`Pool::next_free`] found a link that is no block of the pool.
#[cold]
#[inline(never)]
fn bad_link(pool: &Pool, block: *mut Block, next: *mut Block) -> ! {
    crate::core::diag::abort_with_pointers(&[
        (b"free list corrupted in the pool at ", pool.start),
        (b": block ", block.cast()),
        (b" links to ", next.cast()),
    ])
}

/// Gives an empty pool's slots back to the registry.
///
/// # Safety
/// The pool must hold no live block and be in no list.
pub(crate) unsafe fn release_pool(registry: &Registry, pool: &Pool) {
    debug_assert_eq!(pool.used(), 0);
    let run = pool.slot_run();
    // SAFETY: forwarded contract; the pool record is not used afterwards.
    unsafe { registry.release(run) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::arena::Registry;
    use crate::core::size_class::class_index;

    fn with_pool(class: usize, f: impl FnOnce(&Pool)) {
        let registry = Registry::new();
        let run = registry.acquire(pool_slots(class)).expect("arena");
        // SAFETY: fresh run.
        let pool = unsafe { &*Pool::init(&run, class, 1) };
        f(pool);
        // SAFETY: the test freed nothing it still uses.
        unsafe { registry.release(pool.slot_run()) };
        registry.purge(true);
    }

    #[test]
    fn carve_pop_and_local_free() {
        let class = class_index(64);
        with_pool(class, |pool| {
            assert!(pool.carve());
            let a = pool.pop();
            let b = pool.pop();
            // Level 2 (`STRATA_SECURE=2`) carves in a random order.
            if !secure::shuffles() {
                assert_eq!(b.addr() - a.addr(), 64);
            }
            assert_eq!(pool.used(), 2);
            // SAFETY: `a` and `b` are live blocks of this pool.
            unsafe {
                assert!(!pool.push_local(a));
                assert!(pool.push_local(b), "last block freed empties the pool");
            }
            assert!(pool.is_block_start(a.cast()));
            assert!(!pool.is_block_start(a.cast::<u8>().wrapping_add(8)));
        });
    }

    /// What `next_free` accepts as a link (checked at the secure level): null
    /// or a carved block start of the pool; and a link reads back as
    /// written, encoded in memory when the key is not plain.
    #[test]
    fn links_are_block_starts_of_the_pool() {
        with_pool(class_index(64), |pool| {
            assert!(pool.carve());
            let a = pool.pop();
            let b = pool.pop();
            let carved = pool.reserved.load(Ordering::Relaxed) as usize * 64;
            assert!(pool.is_free_link(ptr::null_mut()));
            assert!(pool.is_free_link(a) && pool.is_free_link(b));
            assert!(!pool.is_free_link(b.wrapping_byte_add(8)), "interior");
            assert!(!pool.is_free_link(b.wrapping_byte_add(1)), "interior");
            let past = pool.start.wrapping_add(carved).cast::<Block>();
            assert!(!pool.is_free_link(past), "never carved");
            let before = pool.start.wrapping_sub(64).cast::<Block>();
            assert!(!pool.is_free_link(before), "outside the pool");
            // SAFETY: `a` is ours (popped); its link word is written and read.
            unsafe {
                set_link(a, b);
                assert_eq!(pool.next_free(a), b);
                let word = (*a).next;
                assert_eq!(word == b, !secure::key().checking(), "encoded in memory");
                set_link(a, ptr::null_mut());
                assert!(pool.next_free(a).is_null());
            }
        });
    }

    /// A shuffled carve (secure level 2) links every fresh block once, in
    /// another order than the addresses', and pops them all.
    #[test]
    fn shuffled_carves_hand_out_every_block_once() {
        with_pool(class_index(48), |pool| {
            let count = CARVE_BYTES / 48;
            // As `carve` does, but always shuffled.
            // SAFETY: the first `count` blocks are fresh, inside the pool.
            unsafe { pool.link_shuffled(pool.start, 48, count) };
            pool.reserved.store(count as u32, Ordering::Relaxed);
            pool.carved_bytes
                .store(count as u32 * 48, Ordering::Relaxed);
            let mut popped = Vec::new();
            loop {
                let b = pool.pop();
                if b.is_null() {
                    break;
                }
                popped.push((b.addr() - pool.start.addr()) / 48);
            }
            let in_order = popped.windows(2).filter(|w| w[1] == w[0] + 1).count();
            assert!(in_order < count / 4, "{in_order} of {count} in order");
            popped.sort_unstable();
            assert_eq!(popped, (0..count).collect::<Vec<_>>());
        });
    }

    /// The reciprocal test agrees with `%` for every offset in a pool of
    /// every class and of sampled `TypedPool` block sizes (under Miri: the
    /// block starts, their neighbours and sampled offsets).
    #[test]
    fn reciprocal_finds_block_starts() {
        let classes = (0..CLASS_SIZES.len()).map(|c| (CLASS_SIZES[c], pool_slots(c)));
        let typed = (8..=POOL_SIZE as u32).step_by(257).map(|size| (size, 1));
        for (size, slots) in classes.chain(typed) {
            let (magic, size64) = (div_magic(size), size as u64);
            let end = (slots * POOL_SIZE) as u64;
            if cfg!(miri) {
                for start in (0..end).step_by(size as usize) {
                    assert!(is_multiple(start, magic));
                    assert!(!is_multiple(start + 1, magic));
                    assert!(!is_multiple(start + size64 / 2, magic));
                    assert!(!is_multiple(start + size64 - 1, magic));
                }
                for offset in (0..end).step_by(4099) {
                    assert_eq!(is_multiple(offset, magic), offset % size64 == 0);
                }
            } else {
                for offset in 0..end {
                    assert_eq!(is_multiple(offset, magic), offset % size64 == 0);
                }
            }
        }
        assert!(!is_multiple(0, 0), "a record with no pool takes no pointer");
    }

    #[test]
    fn thread_free_is_collected() {
        let class = class_index(32);
        with_pool(class, |pool| {
            assert!(pool.carve());
            let blocks: Vec<_> = (0..10).map(|_| pool.pop()).collect();
            assert!(blocks.iter().all(|b| !b.is_null()));
            struct SendPtr(*const Pool, Vec<*mut Block>);
            // SAFETY: the other thread only uses the pool's atomic list.
            unsafe impl Send for SendPtr {}
            let remote = SendPtr(pool, blocks[..5].to_vec());
            std::thread::spawn(move || {
                let remote = remote;
                for &b in &remote.1 {
                    // SAFETY: each block is live and freed once; the pool
                    // outlives the thread (joined below).
                    unsafe { (*remote.0).push_thread_free(b) };
                }
            })
            .join()
            .unwrap();
            // SAFETY: as above.
            unsafe { pool.push_local(blocks[5]) };
            while !pool.free.get().is_null() {
                pool.pop();
            }
            let before = pool.used();
            pool.collect();
            assert_eq!(pool.used(), before - 5);
            let mut seen = 0;
            while !pool.pop().is_null() {
                seen += 1;
            }
            assert_eq!(seen, 6, "5 remote + 1 local block come back");
        });
    }

    #[test]
    fn carving_fills_the_pool_exactly() {
        let class = class_index(3000);
        with_pool(class, |pool| {
            let mut handed = 0;
            while pool.carve() {
                while !pool.pop().is_null() {
                    handed += 1;
                }
            }
            assert_eq!(handed, pool.capacity);
            let end = pool.start.addr() + pool.slots as usize * POOL_SIZE;
            assert!(pool.start.addr() + handed as usize * pool.block_size as usize <= end);
        });
    }
}
