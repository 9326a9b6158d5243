//! Insight layer: statistics.
//!
//! Statistics: a snapshot of what the allocator holds, and the report.
//!
//! Nothing is counted on the fast paths. A snapshot walks the arenas under
//! the registry lock and reads each pool's `used` and `reserved` counters
//! (atomics written only by the pool's owner), so it is exact for blocks
//! and pools; blocks freed by other threads but not yet collected by the
//! owner still count as in use. The figures obey one identity, like
//! CPython's `_debugmallocstats`: every mapped byte is a header, a block in
//! use, a free block, the unusable tail of a pool, a free slot, a
//! `TypedPool` chunk, large-block overhead, or a cached large mapping (see
//! [`Stats::accounted_bytes`]).

use core::fmt;

use crate::core::abandoned;
use crate::core::arena::{registry, POOL_SIZE};
use crate::core::large;
use crate::core::os;
use crate::core::pool::{Pool, TYPED_CLASS};
use crate::core::size_class::{class_size, NUM_CLASSES};
use crate::core::sync::Ordering;

/// Figures for one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Bytes per block.
    pub block_size: usize,
    /// Pools serving the class.
    pub pools: usize,
    /// Blocks handed out (including those freed by another thread and not
    /// yet reclaimed by the pool's owner).
    pub blocks_in_use: usize,
    /// Blocks ready to be handed out (carved or not).
    pub blocks_free: usize,
    /// Bytes at the end of the class's pools too small for a block.
    pub tail_bytes: usize,
}

impl ClassStats {
    /// Bytes of the blocks in use.
    pub fn bytes_in_use(&self) -> usize {
        self.blocks_in_use * self.block_size
    }

    /// Bytes of the free blocks.
    pub fn bytes_free(&self) -> usize {
        self.blocks_free * self.block_size
    }
}

/// A snapshot of the allocator's memory, from [`crate::stats`].
#[derive(Clone, Debug)]
pub struct Stats {
    /// Per size class, indexed by class.
    pub classes: [ClassStats; NUM_CLASSES],
    /// Arenas mapped now.
    pub arenas: usize,
    /// Pools in arenas (owned by threads or abandoned).
    pub pools: usize,
    /// Pools whose thread exited and that no thread has reclaimed yet.
    pub abandoned_pools: usize,
    /// Bytes of arena headers (one slot per arena), and of the guard slots
    /// at the secure level (one more per arena).
    pub header_bytes: usize,
    /// Bytes of free arena slots (no pool).
    pub free_slot_bytes: usize,
    /// Of those, bytes not yet returned to the OS (waiting for the purge
    /// delay).
    pub dirty_bytes: usize,
    /// Bytes of pool memory carved into blocks at least once (an upper
    /// bound of the pool pages the OS has committed).
    pub touched_pool_bytes: usize,
    /// Bytes of `TypedPool` chunks.
    pub typed_pool_bytes: usize,
    /// Large blocks (mapped directly from the OS).
    pub large_blocks: usize,
    /// Usable bytes of the large blocks.
    pub large_bytes: usize,
    /// Mapped bytes of the large blocks (usable + header page + alignment).
    pub large_mapped_bytes: usize,
    /// Bytes of freed large mappings kept for reuse until the purge delay
    /// passes.
    pub large_cached_bytes: usize,
    /// Total bytes returned to the OS by purges since the start.
    pub purged_bytes: usize,
    /// Arenas unmapped since the start.
    pub arenas_unmapped: usize,
    /// The process's resident set size (RSS) as the OS reports it.
    pub resident_bytes: usize,
}

impl Stats {
    /// Bytes of blocks in use, small and large.
    pub fn in_use_bytes(&self) -> usize {
        self.classes
            .iter()
            .map(ClassStats::bytes_in_use)
            .sum::<usize>()
            + self.large_bytes
    }

    /// Bytes of free blocks in pools.
    pub fn free_block_bytes(&self) -> usize {
        self.classes.iter().map(ClassStats::bytes_free).sum()
    }

    /// Bytes of address space mapped: arenas, large blocks and cached
    /// large mappings.
    pub fn mapped_bytes(&self) -> usize {
        self.arenas * crate::core::arena::ARENA_SIZE
            + self.large_mapped_bytes
            + self.large_cached_bytes
    }

    /// Bytes that may be committed (backed by memory): touched pool pages,
    /// free slots not yet purged, header pages and large mappings.
    pub fn committed_bytes(&self) -> usize {
        self.touched_pool_bytes
            + self.typed_pool_bytes
            + self.dirty_bytes
            + self.arenas * os::page_size() * 3
            + self.large_mapped_bytes
    }

    /// Share of committed memory not holding live blocks (0.0 to 1.0).
    pub fn fragmentation(&self) -> f64 {
        let committed = self.committed_bytes();
        if committed == 0 {
            return 0.0;
        }
        1.0 - self.in_use_bytes().min(committed) as f64 / committed as f64
    }

    /// The sum of every category of mapped bytes; equals
    /// [`Stats::mapped_bytes`] (the accounting identity).
    pub fn accounted_bytes(&self) -> usize {
        let tails: usize = self.classes.iter().map(|c| c.tail_bytes).sum();
        self.header_bytes
            + self.in_use_bytes()
            + self.free_block_bytes()
            + tails
            + self.free_slot_bytes
            + self.typed_pool_bytes
            + (self.large_mapped_bytes - self.large_bytes)
            + self.large_cached_bytes
    }
}

/// Takes a snapshot.
pub(crate) fn snapshot() -> Stats {
    let mut classes = [ClassStats::default(); NUM_CLASSES];
    for (i, c) in classes.iter_mut().enumerate() {
        c.block_size = class_size(i);
    }
    let mut pools = 0;
    let mut touched = 0;
    let mut typed_bytes = 0;
    let page = os::page_size();
    let totals = registry().for_each_pool(|meta, slots| {
        // SAFETY: the registry lock is held, so the pool record is live;
        // we read only fields fixed at creation and single-writer atomics.
        let pool = unsafe { &*meta.cast::<Pool>() };
        if pool.class == TYPED_CLASS {
            typed_bytes += slots * POOL_SIZE;
            return;
        }
        let c = &mut classes[pool.class as usize];
        let used = pool.used.load(Ordering::Relaxed) as usize;
        let reserved = pool.reserved.load(Ordering::Relaxed) as usize;
        pools += 1;
        c.pools += 1;
        c.blocks_in_use += used;
        c.blocks_free += pool.capacity as usize - used;
        c.tail_bytes += slots * POOL_SIZE - pool.capacity as usize * c.block_size;
        touched += (reserved * c.block_size).div_ceil(page) * page;
    });
    Stats {
        classes,
        arenas: totals.arenas,
        pools,
        abandoned_pools: abandoned::abandoned().count(),
        header_bytes: totals.reserved_slots * POOL_SIZE,
        free_slot_bytes: totals.free_slots * POOL_SIZE,
        dirty_bytes: totals.dirty_slots * POOL_SIZE,
        touched_pool_bytes: touched,
        typed_pool_bytes: typed_bytes,
        large_blocks: large::LARGE_BLOCKS.load(Ordering::Relaxed),
        large_bytes: large::LARGE_USABLE.load(Ordering::Relaxed),
        large_mapped_bytes: large::LARGE_MAPPED.load(Ordering::Relaxed),
        large_cached_bytes: crate::core::large_cache::cache().cached_bytes(),
        purged_bytes: totals.purged_bytes,
        arenas_unmapped: totals.arenas_unmapped,
        resident_bytes: os::resident_bytes(),
    }
}

/// Bytes as a short human figure ("12.3 MiB").
pub(crate) struct Bytes(pub(crate) usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

impl fmt::Display for Stats {
    /// The report: a `_debugmallocstats`-style table of the classes in use,
    /// then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "class  block size  pools  blocks in use  blocks free    bytes in use"
        )?;
        for (i, c) in self.classes.iter().enumerate().filter(|(_, c)| c.pools > 0) {
            writeln!(
                f,
                "{i:>5}  {:>10}  {:>5}  {:>13}  {:>11}  {:>14}",
                c.block_size,
                c.pools,
                c.blocks_in_use,
                c.blocks_free,
                c.bytes_in_use()
            )?;
        }
        writeln!(
            f,
            "large blocks: {} ({} usable)",
            self.large_blocks,
            Bytes(self.large_bytes)
        )?;
        writeln!(
            f,
            "arenas: {} mapped ({}), {} unmapped so far; pools: {} ({} abandoned)",
            self.arenas,
            Bytes(self.arenas * crate::core::arena::ARENA_SIZE),
            self.arenas_unmapped,
            self.pools,
            self.abandoned_pools
        )?;
        writeln!(
            f,
            "in use: {}  free blocks: {}  free slots: {} ({} not yet purged)",
            Bytes(self.in_use_bytes()),
            Bytes(self.free_block_bytes()),
            Bytes(self.free_slot_bytes),
            Bytes(self.dirty_bytes)
        )?;
        writeln!(
            f,
            "committed (est.): {}  returned to the OS so far: {}  fragmentation: {:.1} %  RSS: {}",
            Bytes(self.committed_bytes()),
            Bytes(self.purged_bytes),
            self.fragmentation() * 100.0,
            Bytes(self.resident_bytes)
        )
    }
}

/// Prints the report to stderr without allocating.
pub(crate) fn print() {
    use core::fmt::Write;
    let stats = snapshot();
    let mut out = crate::core::diag::StderrWriter::new();
    let _ = write!(out, "strata-alloc stats\n{stats}");
}
