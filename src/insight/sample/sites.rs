//! Insight layer, sampling: the site table and the live table, and the
//! weights that make samples unbiased estimates.

use crate::core::sync::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The default mean sampling interval: 512 KiB, jemalloc's
/// `lg_prof_sample:19`.
pub const DEFAULT_INTERVAL: usize = 512 << 10;

/// Frames kept per sampled stack (return addresses, counted from the
/// sampler itself: the allocator's own frames, usually 4 to 10, are among
/// them and are dropped when a report is taken).
pub const MAX_FRAMES: usize = 40;

/// Distinct stacks the site table holds; samples of further stacks count
/// in one "other" site.
pub const MAX_SITES: usize = 2048;

/// Buckets of the live table (sampled blocks not yet freed).
pub const LIVE_BUCKETS: usize = 4096;

/// Sampled blocks per live-table bucket (one cache line of addresses).
pub const BUCKET_SLOTS: usize = 8;

/// Fixed-point scale of estimated block counts (a sample stands for a
/// fractional number of blocks).
pub(super) const BLOCK_SCALE: f64 = 1024.0;

// ---------------------------------------------------------------------------
// Weights and the countdown
// ---------------------------------------------------------------------------

/// The estimate a sampled block of `bytes` stands for at mean interval
/// `interval`: (bytes, blocks scaled by [`BLOCK_SCALE`]), i.e. `bytes / p`
/// and `1 / p` with `p = 1 - exp(-bytes / interval)` its chance of being
/// sampled.
pub(super) fn weights(bytes: usize, interval: usize) -> Weight {
    let ratio = bytes.max(1) as f64 / interval.max(1) as f64;
    let p = -(-ratio).exp_m1();
    if p <= 0.0 || p.is_nan() {
        return (bytes as u64, BLOCK_SCALE as u64);
    }
    (
        (bytes as f64 / p).round() as u64,
        (BLOCK_SCALE / p).round() as u64,
    )
}

/// xorshift64* step; `state` must not be 0.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// splitmix64, to turn a weak seed into a good non-zero PRNG state.
pub(super) fn mix_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// Bytes until the next sample: exponential with mean `interval`, at
/// least 1.
pub(super) fn next_countdown(state: &mut u64, interval: usize) -> i64 {
    // A uniform number in (0, 1].
    let u = ((next_random(state) >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
    let x = -u.ln() * interval as f64;
    (x as i64).max(1)
}

// ---------------------------------------------------------------------------
// The site table
// ---------------------------------------------------------------------------

const EMPTY: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;

/// What happened at one site: samples, and the estimated bytes and blocks
/// (scaled) they stand for, allocated, freed, and untracked.
#[derive(Default)]
struct SiteCounters {
    samples: AtomicU64,
    bytes: AtomicU64,
    blocks: AtomicU64,
    freed_samples: AtomicU64,
    freed_bytes: AtomicU64,
    freed_blocks: AtomicU64,
    untracked_samples: AtomicU64,
}

impl SiteCounters {
    const_unless_loom! {
        fn new() -> Self {
            SiteCounters {
                samples: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                blocks: AtomicU64::new(0),
                freed_samples: AtomicU64::new(0),
                freed_bytes: AtomicU64::new(0),
                freed_blocks: AtomicU64::new(0),
                untracked_samples: AtomicU64::new(0),
            }
        }
    }

    fn fields(&self) -> [&AtomicU64; 7] {
        [
            &self.samples,
            &self.bytes,
            &self.blocks,
            &self.freed_samples,
            &self.freed_bytes,
            &self.freed_blocks,
            &self.untracked_samples,
        ]
    }

    fn read(&self) -> RawCounts {
        let [a, b, c, d, e, f, g] = self.fields().map(|x| x.load(Ordering::Relaxed));
        RawCounts {
            samples: a,
            bytes: b,
            blocks: c,
            freed_samples: d,
            freed_bytes: e,
            freed_blocks: f,
            untracked_samples: g,
        }
    }

    fn clear(&self) {
        for field in self.fields() {
            // Store only over non-zero values: untouched pages stay clean.
            if field.load(Ordering::Relaxed) != 0 {
                field.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A copy of [`SiteCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RawCounts {
    pub(super) samples: u64,
    pub(super) bytes: u64,
    pub(super) blocks: u64,
    pub(super) freed_samples: u64,
    pub(super) freed_bytes: u64,
    pub(super) freed_blocks: u64,
    pub(super) untracked_samples: u64,
}

impl RawCounts {
    pub(super) fn add(&mut self, o: &RawCounts) {
        self.samples += o.samples;
        self.bytes += o.bytes;
        self.blocks += o.blocks;
        self.freed_samples += o.freed_samples;
        self.freed_bytes += o.freed_bytes;
        self.freed_blocks += o.freed_blocks;
        self.untracked_samples += o.untracked_samples;
    }
}

/// One stack and its counters. A slot goes `EMPTY` -> `WRITING` (claimed
/// by one thread, which writes the stack) -> `READY` (Release: the stack
/// is visible to whoever reads `READY` with Acquire), and back to `EMPTY`
/// only when a new session clears the table.
struct SiteSlot<const F: usize> {
    state: AtomicU32,
    depth: AtomicU32,
    hash: AtomicU64,
    frames: [AtomicUsize; F],
    counts: SiteCounters,
}

impl<const F: usize> SiteSlot<F> {
    const_unless_loom! {
        fn new() -> Self {
            SiteSlot {
                state: AtomicU32::new(EMPTY),
                depth: AtomicU32::new(0),
                hash: AtomicU64::new(0),
                frames: atomic_array![AtomicUsize::new(0); F],
                counts: SiteCounters::new(),
            }
        }
    }

    fn holds(&self, stack: &[usize], hash: u64) -> bool {
        self.hash.load(Ordering::Relaxed) == hash
            && self.depth.load(Ordering::Relaxed) as usize == stack.len()
            && self
                .frames
                .iter()
                .zip(stack)
                .all(|(f, &ip)| f.load(Ordering::Relaxed) == ip)
    }
}

/// Hash of a stack (FxHash-style).
fn stack_hash(stack: &[usize]) -> u64 {
    let mut h = stack.len() as u64;
    for &ip in stack {
        h = (h.rotate_left(5) ^ ip as u64).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
    h ^ (h >> 29)
}

/// `S` stacks of up to `F` frames, plus the "other" site at index `S`.
pub(super) struct SiteTable<const S: usize, const F: usize> {
    slots: [SiteSlot<F>; S],
    other: SiteCounters,
}

impl<const S: usize, const F: usize> SiteTable<S, F> {
    const OTHER: usize = S;

    const_unless_loom! {
        fn new() -> Self {
            SiteTable {
                slots: atomic_array![SiteSlot::new(); S],
                other: SiteCounters::new(),
            }
        }
    }

    /// The index of `stack`'s site (at most `F` frames), claiming a slot
    /// for a new stack; [`Self::OTHER`] when no slot is free. Lock-free:
    /// a slot being written by another thread is passed over, so two
    /// threads recording a new stack at once may make two sites of it,
    /// which reports merge.
    fn site(&self, stack: &[usize]) -> usize {
        let stack = &stack[..stack.len().min(F)];
        let hash = stack_hash(stack);
        let start = (hash % S as u64) as usize;
        for i in 0..S {
            let index = (start + i) % S;
            let slot = &self.slots[index];
            let mut state = slot.state.load(Ordering::Acquire);
            if state == EMPTY {
                match slot.state.compare_exchange(
                    EMPTY,
                    WRITING,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        for (f, &ip) in slot.frames.iter().zip(stack) {
                            f.store(ip, Ordering::Relaxed);
                        }
                        slot.depth.store(stack.len() as u32, Ordering::Relaxed);
                        slot.hash.store(hash, Ordering::Relaxed);
                        slot.state.store(READY, Ordering::Release);
                        return index;
                    }
                    Err(now) => state = now,
                }
            }
            if state == READY && slot.holds(stack, hash) {
                return index;
            }
        }
        Self::OTHER
    }

    fn counts(&self, site: usize) -> &SiteCounters {
        match self.slots.get(site) {
            Some(slot) => &slot.counts,
            None => &self.other,
        }
    }

    /// Adds a sample of `site` standing for `weight`.
    fn add_sample(&self, site: usize, (bytes, blocks): Weight, tracked: bool) {
        let c = self.counts(site);
        c.samples.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        c.blocks.fetch_add(blocks, Ordering::Relaxed);
        if !tracked {
            // Its free will not be seen: count it as gone now rather than
            // live forever.
            c.untracked_samples.fetch_add(1, Ordering::Relaxed);
            self.add_free(site, (bytes, blocks));
        }
    }

    /// Subtracts a freed sample of `site` that stood for `weight`.
    fn add_free(&self, site: usize, (bytes, blocks): Weight) {
        let c = self.counts(site);
        c.freed_samples.fetch_add(1, Ordering::Relaxed);
        c.freed_bytes.fetch_add(bytes, Ordering::Relaxed);
        c.freed_blocks.fetch_add(blocks, Ordering::Relaxed);
    }

    /// Every site with samples: (stack, counts), the "other" site last
    /// with an empty stack.
    pub(super) fn read(&self) -> Vec<(Vec<usize>, RawCounts, bool)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let counts = slot.counts.read();
            if counts.samples == 0 {
                continue;
            }
            let depth = (slot.depth.load(Ordering::Relaxed) as usize).min(F);
            let stack = slot.frames[..depth]
                .iter()
                .map(|f| f.load(Ordering::Relaxed))
                .collect();
            out.push((stack, counts, false));
        }
        let other = self.other.read();
        if other.samples != 0 {
            out.push((Vec::new(), other, true));
        }
        out
    }

    /// Forgets every site (a new session; no sampling is going on).
    fn clear(&self) {
        for slot in &self.slots {
            if slot.state.load(Ordering::Relaxed) != EMPTY {
                slot.counts.clear();
                slot.state.store(EMPTY, Ordering::Release);
            }
        }
        self.other.clear();
    }
}

// ---------------------------------------------------------------------------
// The live table
// ---------------------------------------------------------------------------

/// What a sample stands for: estimated bytes, and blocks scaled by
/// [`BLOCK_SCALE`].
pub(super) type Weight = (u64, u64);

/// A live sampled block's site and weight.
type LiveEntry = (usize, Weight);

/// What a live sampled block stands for, and its site.
struct LiveValue {
    site: AtomicU32,
    bytes: AtomicU64,
    blocks: AtomicU64,
}

impl LiveValue {
    const_unless_loom! {
        fn new() -> Self {
            LiveValue {
                site: AtomicU32::new(0),
                bytes: AtomicU64::new(0),
                blocks: AtomicU64::new(0),
            }
        }
    }
}

/// One cache line of addresses (0: free slot).
#[repr(align(64))]
struct Bucket {
    keys: [AtomicUsize; BUCKET_SLOTS],
}

/// Sampled blocks not freed yet: address -> site and weight, in `B`
/// buckets of [`BUCKET_SLOTS`]. `used[b]` counts the slots of bucket `b`
/// claimed or being claimed, so that a free (of a block almost never
/// sampled) usually reads one entry of a small (8 KiB) array and stops.
pub(super) struct LiveTable<const B: usize> {
    used: [AtomicU16; B],
    buckets: [Bucket; B],
    values: [[LiveValue; BUCKET_SLOTS]; B],
}

impl<const B: usize> LiveTable<B> {
    const_unless_loom! {
        fn new() -> Self {
            LiveTable {
                used: atomic_array![AtomicU16::new(0); B],
                buckets: atomic_array![
                    Bucket {
                        keys: atomic_array![AtomicUsize::new(0); BUCKET_SLOTS],
                    };
                    B
                ],
                values: atomic_array![atomic_array![LiveValue::new(); BUCKET_SLOTS]; B],
            }
        }
    }

    fn bucket_of(addr: usize) -> usize {
        // Blocks are at least 16-byte aligned: drop the low bits, mix.
        ((((addr >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % B as u64) as usize
    }

    /// Records the sampled block at `addr` (non-zero). Returns whether it
    /// found room, and the entry a stale record of the same address left
    /// (a block freed while nobody counted: its address was reused, so it
    /// is gone), which the caller subtracts from its site.
    fn insert(
        &self,
        addr: usize,
        site: usize,
        (bytes, blocks): Weight,
    ) -> (bool, Option<LiveEntry>) {
        let b = Self::bucket_of(addr);
        self.used[b].fetch_add(1, Ordering::AcqRel);
        let stale = self.remove_in(b, addr);
        for (key, value) in self.buckets[b].keys.iter().zip(&self.values[b]) {
            if key.load(Ordering::Relaxed) == 0
                && key
                    .compare_exchange(0, addr, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // The block is not handed out yet: nobody looks its entry
                // up before we return; its free happens after (through the
                // program's own synchronisation), and sees these stores.
                value.site.store(site as u32, Ordering::Relaxed);
                value.bytes.store(bytes, Ordering::Relaxed);
                value.blocks.store(blocks, Ordering::Relaxed);
                return (true, stale);
            }
        }
        self.used[b].fetch_sub(1, Ordering::AcqRel);
        (false, stale)
    }

    /// Forgets the block at `addr` if it was sampled: its site and weight.
    #[inline]
    fn remove(&self, addr: usize) -> Option<LiveEntry> {
        let b = Self::bucket_of(addr);
        if self.used[b].load(Ordering::Acquire) == 0 {
            return None;
        }
        self.remove_in(b, addr)
    }

    fn remove_in(&self, b: usize, addr: usize) -> Option<LiveEntry> {
        for (key, value) in self.buckets[b].keys.iter().zip(&self.values[b]) {
            if key.load(Ordering::Acquire) == addr {
                let found = (
                    value.site.load(Ordering::Relaxed) as usize,
                    (
                        value.bytes.load(Ordering::Relaxed),
                        value.blocks.load(Ordering::Relaxed),
                    ),
                );
                if key
                    .compare_exchange(addr, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.used[b].fetch_sub(1, Ordering::AcqRel);
                    return Some(found);
                }
            }
        }
        None
    }

    /// Forgets every block (a new session).
    fn clear(&self) {
        for (used, bucket) in self.used.iter().zip(&self.buckets) {
            if used.load(Ordering::Relaxed) != 0 {
                for key in &bucket.keys {
                    key.store(0, Ordering::Relaxed);
                }
                used.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Sampled blocks recorded now.
    #[cfg(any(test, loom))]
    pub(super) fn len(&self) -> usize {
        self.used
            .iter()
            .map(|u| u.load(Ordering::Relaxed) as usize)
            .sum()
    }
}

// ---------------------------------------------------------------------------
// The profiler: both tables and the session
// ---------------------------------------------------------------------------

/// Site and live tables of one profile (the process's is [`profiler()`];
/// tests and loom models make small ones).
pub(crate) struct Profiler<const S: usize, const F: usize, const B: usize> {
    pub(super) sites: SiteTable<S, F>,
    pub(super) live: LiveTable<B>,
    /// Mean bytes between samples; 0 when not sampling.
    pub(super) interval: AtomicUsize,
    /// The interval of the current or last session (0: none yet).
    pub(super) session_interval: AtomicUsize,
    /// Sessions started: a thread whose sampler saw an older one draws a
    /// fresh countdown.
    pub(super) epoch: AtomicUsize,
    /// Samples taken in all sessions.
    pub(super) samples: AtomicU64,
}

impl<const S: usize, const F: usize, const B: usize> Profiler<S, F, B> {
    const_unless_loom! {
        pub(crate) fn new() -> Self {
            Profiler {
                sites: SiteTable::new(),
                live: LiveTable::new(),
                interval: AtomicUsize::new(0),
                session_interval: AtomicUsize::new(0),
                epoch: AtomicUsize::new(0),
                samples: AtomicU64::new(0),
            }
        }
    }

    /// Records a sampled block of `bytes` at `addr` allocated from
    /// `stack`.
    pub(crate) fn record(&self, addr: usize, bytes: usize, interval: usize, stack: &[usize]) {
        let weight = weights(bytes, interval);
        let site = self.sites.site(stack);
        let (tracked, stale) = self.live.insert(addr, site, weight);
        if let Some((old_site, old_weight)) = stale {
            self.sites.add_free(old_site, old_weight);
        }
        self.sites.add_sample(site, weight, tracked);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// The block at `addr` is being freed.
    #[inline]
    pub(crate) fn free(&self, addr: usize) {
        if let Some((site, weight)) = self.live.remove(addr) {
            self.sites.add_free(site, weight);
        }
    }

    /// Starts a session: forgets the previous one's sites and blocks.
    pub(super) fn begin(&self, interval: usize) {
        self.sites.clear();
        self.live.clear();
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.session_interval
            .store(interval.max(1), Ordering::Relaxed);
        self.interval.store(interval.max(1), Ordering::Release);
    }

    pub(super) fn end(&self) {
        self.interval.store(0, Ordering::Release);
    }
}

/// One row of what a report reads from the site table.
#[cfg(loom)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// The stack (empty for the "other" site).
    pub stack: Vec<usize>,
    /// Whether this is the "other" site (the table was full).
    pub other: bool,
    /// Samples taken.
    pub samples: u64,
    /// Estimated bytes allocated.
    pub bytes: u64,
    /// Estimated blocks allocated (scaled by 1024).
    pub blocks: u64,
    /// Samples freed (or untracked).
    pub freed_samples: u64,
    /// Estimated bytes freed.
    pub freed_bytes: u64,
    /// Estimated blocks freed (scaled by 1024).
    pub freed_blocks: u64,
    /// Samples the live table had no room for.
    pub untracked_samples: u64,
}

#[cfg(loom)]
impl SiteCounts {
    /// Estimated bytes allocated and not freed.
    pub fn live_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.freed_bytes)
    }
}

/// What `loom_api` reads of a profile: the real readers, nothing more.
#[cfg(loom)]
impl<const S: usize, const F: usize, const B: usize> Profiler<S, F, B> {
    /// Every site with samples, as the report reads them
    /// (`SiteTable::read`), the "other" site last.
    pub(crate) fn loom_sites(&self) -> Vec<SiteCounts> {
        self.sites
            .read()
            .into_iter()
            .map(|(stack, c, other)| SiteCounts {
                stack,
                other,
                samples: c.samples,
                bytes: c.bytes,
                blocks: c.blocks,
                freed_samples: c.freed_samples,
                freed_bytes: c.freed_bytes,
                freed_blocks: c.freed_blocks,
                untracked_samples: c.untracked_samples,
            })
            .collect()
    }

    /// Entries of the live table (the buckets' `used` counts).
    pub(crate) fn loom_live_blocks(&self) -> usize {
        self.live.len()
    }

    /// The live-table bucket of `addr`.
    pub(crate) fn loom_bucket_of(addr: usize) -> usize {
        LiveTable::<B>::bucket_of(addr)
    }
}

#[cfg(not(loom))]
type GlobalProfiler = Profiler<MAX_SITES, MAX_FRAMES, LIVE_BUCKETS>;

/// Under loom the process's profile is a small one: a model builds it
/// (loom atomics and all) in every execution.
#[cfg(loom)]
type GlobalProfiler = Profiler<4, 4, 2>;

/// The process's profile (zeroed static memory).
#[cfg(not(loom))]
#[inline(always)]
pub(super) fn profiler() -> &'static GlobalProfiler {
    static PROFILER: GlobalProfiler = Profiler::new();
    &PROFILER
}

/// The profile of the current loom execution.
#[cfg(loom)]
pub(super) fn profiler() -> &'static GlobalProfiler {
    loom::lazy_static! {
        static ref PROFILER: GlobalProfiler = Profiler::new();
    }
    &PROFILER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_tables_stay_under_2_mib() {
        let size = core::mem::size_of::<GlobalProfiler>();
        assert!(size < 2 << 20, "{size}");
    }

    #[test]
    fn weights_are_unbiased_estimates() {
        // A block much larger than the interval is almost surely sampled:
        // it stands for itself.
        let (bytes, blocks) = weights(64 << 20, 4096);
        assert_eq!(bytes, 64 << 20);
        assert_eq!(blocks, BLOCK_SCALE as u64);
        // A small block stands for about one interval.
        let (bytes, blocks) = weights(16, 1 << 20);
        assert!(bytes.abs_diff(1 << 20) < 16, "{bytes}");
        assert!(
            blocks.abs_diff((1 << 16) * BLOCK_SCALE as u64) < 2048,
            "{blocks}"
        );
        // Equal sizes: one block's bytes per block.
        let (bytes, blocks) = weights(4096, 4096);
        let per_block = bytes as f64 / (blocks as f64 / BLOCK_SCALE);
        assert!((per_block - 4096.0).abs() < 4.0, "{per_block}");
    }

    #[test]
    fn countdown_is_exponential_with_the_interval_as_mean() {
        let mut state = mix_seed(7);
        let n = if cfg!(miri) { 2000 } else { 100_000 };
        let draws: Vec<i64> = (0..n).map(|_| next_countdown(&mut state, 1000)).collect();
        let mean = draws.iter().sum::<i64>() as f64 / n as f64;
        assert!((mean - 1000.0).abs() < 100.0, "{mean}");
        assert!(draws.iter().all(|&d| d >= 1));
        // Memoryless: about e^-1 of the draws exceed the mean.
        let above = draws.iter().filter(|&&d| d > 1000).count() as f64 / n as f64;
        assert!((above - (-1f64).exp()).abs() < 0.05, "{above}");
    }

    #[test]
    fn site_table_finds_claims_and_overflows() {
        let t = SiteTable::<4, 3>::new();
        let a = t.site(&[1, 2, 3]);
        assert_eq!(t.site(&[1, 2, 3]), a);
        // Deeper stacks are cut to F frames.
        assert_eq!(t.site(&[1, 2, 3, 4]), a);
        let b = t.site(&[1, 2]);
        assert_ne!(a, b);
        let c = t.site(&[9]);
        let d = t.site(&[]);
        let mut used = [a, b, c, d];
        used.sort_unstable();
        assert_eq!(used, [0, 1, 2, 3]);
        // Full: new stacks go to "other", known ones still find their site.
        assert_eq!(t.site(&[5, 5]), SiteTable::<4, 3>::OTHER);
        assert_eq!(t.site(&[1, 2]), b);
        t.add_sample(a, (100, 1024), true);
        t.add_sample(SiteTable::<4, 3>::OTHER, (7, 1024), true);
        t.add_sample(b, (50, 512), false);
        let read = t.read();
        assert_eq!(read.len(), 3);
        let other = read.last().unwrap();
        assert!(other.2 && other.0.is_empty() && other.1.bytes == 7);
        let sb = read.iter().find(|r| r.0 == [1, 2]).unwrap();
        assert_eq!(sb.1.untracked_samples, 1);
        assert_eq!(sb.1.freed_bytes, 50);
        t.clear();
        assert!(t.read().is_empty());
        assert_eq!(t.site(&[7]), (stack_hash(&[7]) % 4) as usize);
    }

    #[test]
    fn live_table_inserts_removes_and_bounds_buckets() {
        let t = LiveTable::<2>::new();
        // 16-byte-aligned addresses: fill both buckets.
        let addrs: Vec<usize> = (1..=64).map(|i| i * 16).collect();
        let mut stored = Vec::new();
        for &a in &addrs {
            let (ok, stale) = t.insert(a, a / 16, (a as u64, 1));
            assert!(stale.is_none());
            if ok {
                stored.push(a);
            }
        }
        assert_eq!(stored.len(), 2 * BUCKET_SLOTS);
        assert_eq!(t.len(), 2 * BUCKET_SLOTS);
        for &a in &addrs {
            let got = t.remove(a);
            if stored.contains(&a) {
                assert_eq!(got, Some((a / 16, (a as u64, 1))));
            } else {
                assert_eq!(got, None);
            }
        }
        assert_eq!(t.len(), 0);
        // A stale entry of a reused address is handed back.
        assert!(t.insert(32, 1, (10, 1)).0);
        assert_eq!(t.insert(32, 2, (20, 1)), (true, Some((1, (10, 1)))));
        assert_eq!(t.remove(32), Some((2, (20, 1))));
        assert_eq!(t.remove(32), None);
        assert!(t.insert(48, 1, (10, 1)).0);
        t.clear();
        assert_eq!(t.len(), 0);
        assert_eq!(t.remove(48), None);
    }
}
