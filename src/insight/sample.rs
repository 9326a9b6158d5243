//! Sampled call-site profiling (feature `sampling`), the machinery behind
//! [`crate::profile::sampling`].
//!
//! Like jemalloc's heap profiler (`prof.c`, `lg_prof_sample`), a thread
//! samples one allocation about every `interval` bytes it allocates: its
//! counters keep a countdown of bytes until the next sample, drawn from an
//! exponential distribution of mean `interval` by a small per-thread PRNG,
//! so that the samples are a Poisson process over allocated bytes and
//! periodic allocation patterns are not aliased. An allocation of `s`
//! bytes is then sampled with probability `p = 1 - exp(-s / interval)`,
//! and a sample stands for `s / p` bytes and `1 / p` blocks: unbiased
//! estimates for small and large blocks alike (jemalloc's "unbiasing").
//!
//! Sampling rides on counting: a [`Sampling`] guard also turns counting
//! on, and the out-of-line `Counters::count_alloc` / `count_free` call
//! [`ThreadSampler::on_alloc`] and [`on_free`]. When sampling is on and no
//! sample is due, an allocation costs a few relaxed loads and a
//! subtraction; a free, one load from an 8 KiB table of bucket counts.
//!
//! Taking a sample runs inside `malloc`, so it never allocates and never
//! locks: the raw return addresses of the stack are captured with
//! `backtrace::trace_unsynchronized` (no symbol resolution) into a stack
//! array, and recorded in two fixed-size tables in static memory, updated
//! with atomics only (so a `fork` in the middle leaves nothing locked):
//!
//! - the **site table** ([`MAX_SITES`] stacks of up to [`MAX_FRAMES`]
//!   frames, open addressing keyed by the stack): per site, samples and
//!   estimated bytes and blocks allocated and freed. When it is full, new
//!   stacks count in one "other" site, so totals are never lost;
//! - the **live table** ([`LIVE_BUCKETS`] buckets of [`BUCKET_SLOTS`]
//!   sampled blocks, keyed by address), so that freeing a sampled block
//!   subtracts its weight from its site. A sample whose bucket is full is
//!   counted as allocated but not as live ("untracked").
//!
//! Both tables are about 1.8 MiB of zeroed static memory, touched (made
//! resident) only as far as they are used. Symbols are resolved when a
//! [`Report`] is taken, outside the allocator, where allocating is fine.
//! A per-thread flag keeps allocations made while sampling (or while a
//! report is built) from being sampled.

use core::cmp::Reverse;
use core::fmt;
use core::sync::atomic as owner_only;
use std::collections::HashMap;

use crate::core::hooks::{self, SamplerHooks};
use crate::core::sync::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, RawLock};
use crate::core::thread;
use crate::insight::stats::Bytes;

/// `const fn` items, plain `fn`s under `cfg(loom)` (loom's atomics have no
/// `const` constructor): the tables are built the same way in both, the
/// process's in a `static`, a loom model's per execution.
macro_rules! const_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $($rest)*
        #[cfg(loom)]
        $(#[$attr])* $vis fn $($rest)*
    };
}

/// `[value; N]` for a non-`Copy` atomic `value`: an inline-`const` array
/// (zeroed static memory), or under `cfg(loom)` one built element by
/// element.
#[cfg(not(loom))]
macro_rules! atomic_array {
    ($value:expr; $n:expr) => {
        [const { $value }; $n]
    };
}

#[cfg(loom)]
macro_rules! atomic_array {
    ($value:expr; $n:expr) => {
        core::array::from_fn(|_| $value)
    };
}

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
const BLOCK_SCALE: f64 = 1024.0;

// ---------------------------------------------------------------------------
// Weights and the countdown
// ---------------------------------------------------------------------------

/// The estimate a sampled block of `bytes` stands for at mean interval
/// `interval`: (bytes, blocks scaled by [`BLOCK_SCALE`]), i.e. `bytes / p`
/// and `1 / p` with `p = 1 - exp(-bytes / interval)` its chance of being
/// sampled.
fn weights(bytes: usize, interval: usize) -> Weight {
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
fn mix_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// Bytes until the next sample: exponential with mean `interval`, at
/// least 1.
fn next_countdown(state: &mut u64, interval: usize) -> i64 {
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
struct RawCounts {
    samples: u64,
    bytes: u64,
    blocks: u64,
    freed_samples: u64,
    freed_bytes: u64,
    freed_blocks: u64,
    untracked_samples: u64,
}

impl RawCounts {
    fn add(&mut self, o: &RawCounts) {
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
struct SiteTable<const S: usize, const F: usize> {
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
    fn read(&self) -> Vec<(Vec<usize>, RawCounts, bool)> {
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
type Weight = (u64, u64);

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
struct LiveTable<const B: usize> {
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
    fn len(&self) -> usize {
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
    sites: SiteTable<S, F>,
    live: LiveTable<B>,
    /// Mean bytes between samples; 0 when not sampling.
    interval: AtomicUsize,
    /// The interval of the current or last session (0: none yet).
    session_interval: AtomicUsize,
    /// Sessions started: a thread whose sampler saw an older one draws a
    /// fresh countdown.
    epoch: AtomicUsize,
    /// Samples taken in all sessions.
    samples: AtomicU64,
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
    fn begin(&self, interval: usize) {
        self.sites.clear();
        self.live.clear();
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.session_interval
            .store(interval.max(1), Ordering::Relaxed);
        self.interval.store(interval.max(1), Ordering::Release);
    }

    fn end(&self) {
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
fn profiler() -> &'static GlobalProfiler {
    static PROFILER: GlobalProfiler = Profiler::new();
    &PROFILER
}

/// The profile of the current loom execution.
#[cfg(loom)]
fn profiler() -> &'static GlobalProfiler {
    loom::lazy_static! {
        static ref PROFILER: GlobalProfiler = Profiler::new();
    }
    &PROFILER
}

/// Seeds for the threads' PRNGs (any distinct values do).
static SEEDS: owner_only::AtomicU64 = owner_only::AtomicU64::new(0);

/// Starting and stopping sessions: the lock serialising them (never taken
/// in `malloc`), and the open [`Sampling`] guards, counted under it.
struct Control {
    lock: RawLock,
    active: AtomicUsize,
}

impl Control {
    const_unless_loom! {
        fn new() -> Self {
            Control {
                lock: RawLock::new(),
                active: AtomicUsize::new(0),
            }
        }
    }
}

#[cfg(not(loom))]
fn control() -> &'static Control {
    static CONTROL: Control = Control::new();
    &CONTROL
}

/// The session control of the current loom execution.
#[cfg(loom)]
fn control() -> &'static Control {
    loom::lazy_static! {
        static ref CONTROL: Control = Control::new();
    }
    &CONTROL
}

// ---------------------------------------------------------------------------
// Per-thread state
// ---------------------------------------------------------------------------

/// A thread's sampling state, in a `const`-initialised thread-local
/// without destructor (a plain TLS slot). Only the owner thread touches it
/// (relaxed atomics, i.e. plain loads and stores, as in the thread's
/// counters); being owner-only it is no concurrent protocol, so its
/// atomics are `core`'s, not `crate::core::sync`'s, under loom too.
pub(crate) struct ThreadSampler {
    /// The session the countdown was drawn for.
    epoch: owner_only::AtomicUsize,
    /// Bytes to allocate until the next sample.
    countdown: owner_only::AtomicU64,
    /// xorshift64* state (0: not seeded yet).
    rng: owner_only::AtomicU64,
    /// Set while this thread samples or builds a report: its allocations
    /// then are not sampled.
    busy: owner_only::AtomicBool,
}

impl ThreadSampler {
    pub(crate) const fn new() -> Self {
        ThreadSampler {
            epoch: owner_only::AtomicUsize::new(0),
            countdown: owner_only::AtomicU64::new(0),
            rng: owner_only::AtomicU64::new(0),
            busy: owner_only::AtomicBool::new(false),
        }
    }

    /// A block of `bytes` at `ptr` was allocated by the owner (through
    /// [`HOOKS`], from `Counters::count_alloc`, only while counting).
    #[inline]
    fn on_alloc(&self, ptr: *mut u8, bytes: usize) {
        let profiler = profiler();
        let interval = profiler.interval.load(Ordering::Relaxed);
        if interval != 0 {
            self.step(profiler, ptr, bytes, interval, capture);
        }
    }

    /// Counts `bytes` down; samples the block when the countdown runs out,
    /// with `capture` filling a stack buffer and returning its depth.
    #[inline]
    fn step<const S: usize, const F: usize, const B: usize>(
        &self,
        profiler: &Profiler<S, F, B>,
        ptr: *mut u8,
        bytes: usize,
        interval: usize,
        capture: fn(&mut [usize; F]) -> usize,
    ) {
        let mut left = self.countdown.load(Ordering::Relaxed);
        let epoch = profiler.epoch.load(Ordering::Relaxed);
        if self.epoch.load(Ordering::Relaxed) != epoch {
            // A new session: the exponential distribution is memoryless,
            // so drawing the countdown now is as good as at its start.
            self.epoch.store(epoch, Ordering::Relaxed);
            left = self.draw(interval);
        }
        if left > bytes as u64 {
            self.countdown.store(left - bytes as u64, Ordering::Relaxed);
            return;
        }
        let next = self.draw(interval);
        self.countdown.store(next, Ordering::Relaxed);
        self.sample(profiler, ptr, bytes, interval, capture);
    }

    /// Takes a sample: captures the stack and records the block. Runs
    /// inside `malloc`, within the thread heap's closure: should the
    /// unwinder allocate (libgcc's does not on the paths used here, with
    /// `.eh_frame_hdr` lookups), the nested allocation is served, counted,
    /// and not sampled (`busy`), as with jemalloc's re-entrancy guard.
    #[cold]
    #[inline(never)]
    fn sample<const S: usize, const F: usize, const B: usize>(
        &self,
        profiler: &Profiler<S, F, B>,
        ptr: *mut u8,
        bytes: usize,
        interval: usize,
        capture: fn(&mut [usize; F]) -> usize,
    ) {
        if self.busy.load(Ordering::Relaxed) {
            return;
        }
        self.busy.store(true, Ordering::Relaxed);
        let mut stack = [0usize; F];
        let depth = capture(&mut stack);
        profiler.record(ptr.addr(), bytes, interval, &stack[..depth]);
        self.busy.store(false, Ordering::Relaxed);
    }

    fn draw(&self, interval: usize) -> u64 {
        let mut state = self.rng.load(Ordering::Relaxed);
        if state == 0 {
            // Distinct per thread (its address, and a counter) and, with
            // address-space randomisation, per run.
            let seed = SEEDS.fetch_add(1, Ordering::Relaxed) ^ (self as *const Self).addr() as u64;
            state = mix_seed(seed);
        }
        let next = next_countdown(&mut state, interval) as u64;
        self.rng.store(state, Ordering::Relaxed);
        next
    }

    /// Runs `f` with sampling paused on this thread.
    pub(crate) fn paused<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = self.busy.swap(true, Ordering::Relaxed);
        let result = f();
        self.busy.store(was, Ordering::Relaxed);
        result
    }
}

/// The block at `ptr` is being freed (through [`HOOKS`], from
/// `Counters::count_free`, only while counting).
fn on_free(ptr: *mut u8) {
    profiler().free(ptr.addr());
}

fn on_alloc(ptr: *mut u8, bytes: usize) {
    SAMPLER.with(|s| s.on_alloc(ptr, bytes));
}

/// What the core calls on counted allocations and frees, installed by the
/// first [`Sampling`] guard.
static HOOKS: SamplerHooks = SamplerHooks { on_alloc, on_free };

#[cfg(not(loom))]
std::thread_local! {
    static SAMPLER: ThreadSampler = const { ThreadSampler::new() };
}

#[cfg(loom)]
loom::thread_local! {
    static SAMPLER: ThreadSampler = ThreadSampler::new();
}

/// Fills `stack` with the calling thread's return addresses, innermost
/// first; returns how many. Never allocates nor locks.
#[cfg(not(miri))]
fn capture<const F: usize>(stack: &mut [usize; F]) -> usize {
    let mut depth = 0;
    // SAFETY: `trace_unsynchronized` needs that no other thread unwinds
    // through the backtrace crate's unsynchronised paths at the same time
    // with a non-reentrant unwinder; the system unwinder used on our
    // targets (libgcc's `_Unwind_Backtrace`) is thread-safe, and the
    // callback only stores integers into our own stack array.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            stack[depth] = frame.ip().addr();
            depth += 1;
            depth < F
        })
    };
    depth
}

/// Under Miri, the backtrace crate allocates: stacks are left empty.
#[cfg(miri)]
fn capture<const F: usize>(_stack: &mut [usize; F]) -> usize {
    0
}

// ---------------------------------------------------------------------------
// The public API
// ---------------------------------------------------------------------------

/// Samples allocations by call site while alive (and counts them, like a
/// [`crate::profile::Counting`] guard).
///
/// The first guard starts a new session, forgetting the previous one's
/// sites; guards started while one is alive join its session (and its
/// interval). Sampling stops when the last one drops; take the
/// [`Report`] before, since frees are no longer seen afterwards.
#[derive(Debug)]
#[must_use = "sampling stops when the guard is dropped"]
pub struct Sampling(());

impl Sampling {
    /// Samples one allocation per [`DEFAULT_INTERVAL`] (512 KiB) on
    /// average.
    pub fn start() -> Sampling {
        Sampling::with_interval(DEFAULT_INTERVAL)
    }

    /// Samples one allocation per `mean_bytes` allocated on average
    /// (smaller: more precise, slower).
    pub fn with_interval(mean_bytes: usize) -> Sampling {
        let control = control();
        hooks::install_sampler(&HOOKS);
        control.lock.with(|| {
            if control.active.load(Ordering::Relaxed) == 0 {
                profiler().begin(mean_bytes);
            }
            control.active.fetch_add(1, Ordering::Relaxed);
        });
        thread::start_counting();
        Sampling(())
    }

    /// The mean sampling interval of the running session, if any.
    pub fn interval() -> Option<usize> {
        match profiler().interval.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Samples taken since the process started (all sessions).
    pub fn samples_taken() -> u64 {
        profiler().samples.load(Ordering::Relaxed)
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        thread::stop_counting();
        let control = control();
        control.lock.with(|| {
            if control.active.fetch_sub(1, Ordering::Relaxed) == 1 {
                profiler().end();
            }
        });
    }
}

/// One frame of a site's stack, resolved when the report was taken
/// (inlined functions are frames of their own, sharing an `ip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The return address.
    pub ip: usize,
    /// The function, demangled without its hash, if known.
    pub name: Option<String>,
    /// The source file, if known.
    pub file: Option<String>,
    /// The source line, if known.
    pub line: Option<u32>,
}

impl Frame {
    /// What identifies the frame in a site: its function and source
    /// line, or its address when it was not resolved.
    fn key(&self) -> String {
        match &self.name {
            Some(name) => format!(
                "{name}\0{}:{}",
                self.file.as_deref().unwrap_or(""),
                self.line.unwrap_or(0)
            ),
            None => format!("{:#x}", self.ip),
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name)?,
            None => write!(f, "{:#x}", self.ip)?,
        }
        if let Some(file) = &self.file {
            // The last two path components are enough to recognise it.
            let short: Vec<&str> = file.rsplit('/').take(2).collect();
            write!(
                f,
                " ({}",
                short.into_iter().rev().collect::<Vec<_>>().join("/")
            )?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What was sampled at one call site: estimates (samples times what each
/// stands for) of the bytes and blocks allocated there and still live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The stack, innermost first, without the allocator's own frames
    /// (empty for the "other" site).
    pub frames: Vec<Frame>,
    /// Samples taken at this site.
    pub samples: u64,
    /// Samples not freed yet.
    pub live_samples: u64,
    /// Estimated bytes allocated here.
    pub allocated_bytes: u64,
    /// Estimated blocks allocated here.
    pub allocated_blocks: u64,
    /// Estimated bytes allocated here and not freed.
    pub live_bytes: u64,
    /// Estimated blocks allocated here and not freed.
    pub live_blocks: u64,
    /// Samples whose frees could not be tracked (live table full): counted
    /// as allocated, not as live.
    pub untracked_samples: u64,
    /// Whether this is the "other" site: stacks that found the site table
    /// full.
    pub other: bool,
    /// The source locations identifying the site (see [`Frame::key`]).
    key: Vec<String>,
}

impl Site {
    fn new(frames: Vec<Frame>, key: Vec<String>, c: &RawCounts, other: bool) -> Site {
        let scaled = |b: u64| (b as f64 / BLOCK_SCALE).round() as u64;
        Site {
            frames,
            samples: c.samples,
            live_samples: c.samples.saturating_sub(c.freed_samples),
            allocated_bytes: c.bytes,
            allocated_blocks: scaled(c.blocks),
            live_bytes: c.bytes.saturating_sub(c.freed_bytes),
            live_blocks: scaled(c.blocks.saturating_sub(c.freed_blocks)),
            untracked_samples: c.untracked_samples,
            other,
            key,
        }
    }

    /// The frame that best names the site: the innermost one outside the
    /// standard library (`core`, `alloc`, `std`, `hashbrown`), or else the
    /// innermost.
    pub fn location(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|f| f.name.as_deref().is_some_and(|n| !is_library(n)))
            .or(self.frames.first())
    }

    /// Whether a frame's function name contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.name.as_deref().is_some_and(|n| n.contains(needle)))
    }
}

/// Names of functions that are part of allocating, not of the program:
/// dropped from the top of sampled stacks.
fn is_allocator_machinery(name: Option<&str>) -> bool {
    let Some(name) = name else { return true };
    let name = name.trim_start_matches('<');
    [
        "backtrace::",
        "strata_alloc::",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rg_",
        "__rdl_",
        "_Unwind_",
        "alloc::alloc::",
        "alloc::raw_vec::",
        "std::alloc::",
        "core::alloc::",
        "std::thread::local::",
        "std::sys::thread_local::",
        "core::ops::function::",
        "core::cell::",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Names of standard-library functions (passed over by [`Site::location`]):
/// paths in `core`, `alloc`, `std` or `hashbrown`, and methods of types
/// there or of primitive types (`<u64 as core::fmt::Display>::fmt`, but
/// not `<app::Config as core::clone::Clone>::clone`).
fn is_library(name: &str) -> bool {
    const LIBRARY: [&str; 4] = ["core::", "alloc::", "std::", "hashbrown::"];
    let Some(qualified) = name.strip_prefix('<') else {
        return LIBRARY.iter().any(|p| name.starts_with(p));
    };
    // `<Type as Trait>::f` or `<Type>::f`: the implementing type decides.
    let ty = qualified.trim_start_matches(['&', '*', '[', '(', '<']);
    let ty = ty
        .strip_prefix("mut ")
        .or_else(|| ty.strip_prefix("const "))
        .or_else(|| ty.strip_prefix("dyn "))
        .unwrap_or(ty);
    let path_end = ty.find([' ', '<', '>', ';', ']', ')']).unwrap_or(ty.len());
    let path = &ty[..path_end];
    !path.contains("::") || LIBRARY.iter().any(|p| path.starts_with(p))
}

/// Resolves `ip` to its frames (innermost inlined function first).
fn resolve(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    #[cfg(not(miri))]
    backtrace::resolve(ip as *mut core::ffi::c_void, |symbol| {
        frames.push(Frame {
            ip,
            name: symbol.name().map(|n| format!("{n:#}")),
            file: symbol.filename().map(|p| p.display().to_string()),
            line: symbol.lineno(),
        })
    });
    if frames.is_empty() {
        frames.push(Frame {
            ip,
            name: None,
            file: None,
            line: None,
        });
    }
    frames
}

/// Turns raw stacks into sites: resolves them (each address once), drops
/// the allocator's frames from their tops, and merges stacks that then
/// agree, line for line (a site reached through different allocator
/// paths, unrolled copies of one call, a stack recorded twice in a race).
fn build_sites(
    raw: Vec<(Vec<usize>, RawCounts, bool)>,
    mut resolve: impl FnMut(usize) -> Vec<Frame>,
) -> Vec<Site> {
    let mut symbols: HashMap<usize, Vec<Frame>> = HashMap::new();
    let mut merged: HashMap<(Vec<String>, bool), (Vec<Frame>, RawCounts)> = HashMap::new();
    for (stack, counts, other) in raw {
        let mut frames = Vec::new();
        let mut kept = false;
        for &ip in &stack {
            let resolved = symbols.entry(ip).or_insert_with(|| resolve(ip));
            let start = if !kept {
                // Keep from the first frame that is not allocator machinery.
                match resolved
                    .iter()
                    .position(|f| !is_allocator_machinery(f.name.as_deref()))
                {
                    Some(i) => i,
                    None => continue,
                }
            } else {
                0
            };
            frames.extend_from_slice(&resolved[start..]);
            kept = true;
        }
        if !kept {
            // Nothing but allocator frames (or no symbols at all): keep
            // the whole stack rather than nothing.
            for &ip in &stack {
                frames.extend_from_slice(&symbols[&ip]);
            }
        }
        // Stacks through the same source lines are one site (copies of a
        // call made by unrolling or inlining have different addresses).
        let key = frames.iter().map(Frame::key).collect();
        let entry = merged
            .entry((key, other))
            .or_insert_with(|| (frames, RawCounts::default()));
        entry.1.add(&counts);
    }
    let mut sites: Vec<Site> = merged
        .into_iter()
        .map(|((key, other), (frames, counts))| Site::new(frames, key, &counts, other))
        .collect();
    sites.sort_by(|a, b| {
        (Reverse(a.live_bytes), Reverse(a.allocated_bytes), &a.key).cmp(&(
            Reverse(b.live_bytes),
            Reverse(b.allocated_bytes),
            &b.key,
        ))
    });
    sites
}

/// The sampled sites of the current (or last) session, resolved, largest
/// estimated live bytes first. `Display` renders the top 10 as a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The mean sampling interval of the session reported on (0 if none
    /// ever ran).
    pub interval: usize,
    /// Every site with samples, by estimated live bytes, then allocated
    /// bytes, largest first.
    pub sites: Vec<Site>,
}

impl Report {
    /// Reads and resolves the sampled sites of the running session, or
    /// of the last one once its guards are dropped (blocks freed since
    /// then are not taken off). Allocates, and may take a while: symbols
    /// are read from the binary's debug information the first time. The
    /// calling thread's allocations meanwhile are not sampled.
    pub fn take() -> Report {
        SAMPLER.with(|s| {
            s.paused(|| Report {
                interval: profiler().session_interval.load(Ordering::Relaxed),
                sites: build_sites(profiler().sites.read(), resolve),
            })
        })
    }

    /// Estimated bytes allocated and not freed, all sites.
    pub fn live_bytes(&self) -> u64 {
        self.sites.iter().map(|s| s.live_bytes).sum()
    }

    /// Estimated bytes allocated, all sites.
    pub fn allocated_bytes(&self) -> u64 {
        self.sites.iter().map(|s| s.allocated_bytes).sum()
    }

    /// Samples, all sites.
    pub fn samples(&self) -> u64 {
        self.sites.iter().map(|s| s.samples).sum()
    }

    /// The `n` sites with the most estimated live bytes.
    pub fn top_live(&self, n: usize) -> Vec<&Site> {
        self.sites.iter().take(n).collect()
    }

    /// The `n` sites with the most estimated allocated bytes (freed or
    /// not).
    pub fn top_allocated(&self, n: usize) -> Vec<&Site> {
        let mut sites: Vec<&Site> = self.sites.iter().collect();
        sites.sort_by_key(|s| (Reverse(s.allocated_bytes), Reverse(s.live_bytes)));
        sites.truncate(n);
        sites
    }

    /// The sites whose stack mentions a function containing `needle`.
    pub fn sites_mentioning(&self, needle: &str) -> Vec<&Site> {
        self.sites.iter().filter(|s| s.mentions(needle)).collect()
    }

    /// What changed from `self` to `later`, by site (`tracemalloc`'s
    /// `compare_to(.., 'traceback')`): biggest change in live bytes first.
    /// Both reports must come from the same session to be comparable.
    pub fn diff(&self, later: &Report) -> ReportDiff {
        let before: HashMap<(&[String], bool), &Site> = self
            .sites
            .iter()
            .map(|s| ((s.key.as_slice(), s.other), s))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<SiteDiff> = later
            .sites
            .iter()
            .map(|s| {
                seen.insert((s.key.as_slice(), s.other));
                SiteDiff::new(before.get(&(s.key.as_slice(), s.other)).copied(), s)
            })
            .collect();
        for s in &self.sites {
            if !seen.contains(&(s.key.as_slice(), s.other)) {
                let gone = Site {
                    live_samples: 0,
                    live_bytes: 0,
                    live_blocks: 0,
                    ..s.clone()
                };
                rows.push(SiteDiff::new(Some(s), &gone));
            }
        }
        rows.retain(|r| r.live_bytes_diff != 0 || r.allocated_bytes_diff != 0);
        rows.sort_by_key(|r| {
            (
                Reverse(r.live_bytes_diff.unsigned_abs()),
                Reverse(r.allocated_bytes_diff.unsigned_abs()),
            )
        });
        ReportDiff { rows }
    }

    /// Renders the top `n` sites by live bytes, with up to `depth` frames
    /// each.
    pub fn display(&self, n: usize, depth: usize) -> impl fmt::Display + '_ {
        DisplayReport {
            report: self,
            n,
            depth,
        }
    }
}

struct DisplayReport<'a> {
    report: &'a Report,
    n: usize,
    depth: usize,
}

/// Writes a site's name and up to `depth` frames.
fn write_site(f: &mut fmt::Formatter<'_>, site: &Site, depth: usize, indent: usize) -> fmt::Result {
    if site.other {
        return writeln!(f, "[other stacks: the site table was full]");
    }
    let Some(location) = site.location() else {
        return writeln!(f, "[unknown stack]");
    };
    writeln!(f, "{location}")?;
    let from = site
        .frames
        .iter()
        .position(|fr| core::ptr::eq(fr, location))
        .unwrap_or(0);
    for frame in site
        .frames
        .iter()
        .skip(from + 1)
        .take(depth.saturating_sub(1))
    {
        writeln!(f, "{:indent$}<- {frame}", "")?;
    }
    Ok(())
}

impl fmt::Display for DisplayReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        writeln!(
            f,
            "sampled allocation sites (mean interval {}; {} samples; estimates): \
             {} live, {} allocated",
            Bytes(r.interval),
            r.samples(),
            Bytes(r.live_bytes() as usize),
            Bytes(r.allocated_bytes() as usize),
        )?;
        writeln!(f, "      live   live blocks    allocated  samples  site")?;
        for site in r.sites.iter().take(self.n) {
            write!(
                f,
                "{:>10}  {:>12}  {:>11}  {:>7}  ",
                Bytes(site.live_bytes as usize).to_string(),
                site.live_blocks,
                Bytes(site.allocated_bytes as usize).to_string(),
                site.samples
            )?;
            write_site(f, site, self.depth, 48)?;
        }
        let untracked: u64 = r.sites.iter().map(|s| s.untracked_samples).sum();
        if untracked != 0 {
            writeln!(
                f,
                "({untracked} samples untracked: the live table was full)"
            )?;
        }
        if r.sites.len() > self.n {
            writeln!(f, "... {} more sites", r.sites.len() - self.n)?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display(10, 4).fmt(f)
    }
}

/// One row of a [`ReportDiff`]: a site and how its estimates changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteDiff {
    /// The site in the later report (with zero live figures if it is
    /// gone from it).
    pub site: Site,
    /// Change in estimated live bytes.
    pub live_bytes_diff: i64,
    /// Change in estimated live blocks.
    pub live_blocks_diff: i64,
    /// Estimated bytes allocated between the two reports.
    pub allocated_bytes_diff: i64,
    /// Samples taken between the two reports.
    pub samples_diff: i64,
}

impl SiteDiff {
    fn new(before: Option<&Site>, after: &Site) -> SiteDiff {
        let d = |f: fn(&Site) -> u64| f(after) as i64 - before.map_or(0, |b| f(b) as i64);
        SiteDiff {
            site: after.clone(),
            live_bytes_diff: d(|s| s.live_bytes),
            live_blocks_diff: d(|s| s.live_blocks),
            allocated_bytes_diff: d(|s| s.allocated_bytes),
            samples_diff: d(|s| s.samples),
        }
    }
}

/// The difference between two [`Report`]s, from [`Report::diff`]. `Display`
/// renders the top 10 rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportDiff {
    /// Sites whose estimates changed, biggest change in live bytes first.
    pub rows: Vec<SiteDiff>,
}

impl ReportDiff {
    /// The change in estimated live bytes, all sites.
    pub fn live_bytes_diff(&self) -> i64 {
        self.rows.iter().map(|r| r.live_bytes_diff).sum()
    }
}

impl fmt::Display for ReportDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signed = |b: i64| {
            let sign = if b < 0 { "-" } else { "+" };
            format!("{sign}{}", Bytes(b.unsigned_abs() as usize))
        };
        writeln!(
            f,
            "      live         +/-  allocated +/-  samples +/-  site"
        )?;
        for row in self.rows.iter().take(10) {
            write!(
                f,
                "{:>10}  {:>10}  {:>13}  {:>11}  ",
                Bytes(row.site.live_bytes as usize).to_string(),
                signed(row.live_bytes_diff),
                signed(row.allocated_bytes_diff),
                format!("{:+}", row.samples_diff),
            )?;
            write_site(f, &row.site, 2, 52)?;
        }
        if self.rows.len() > 10 {
            writeln!(f, "... {} more sites", self.rows.len() - 10)?;
        }
        write!(f, "live {}", signed(self.live_bytes_diff()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Small = Profiler<8, 4, 4>;

    fn small() -> Box<Small> {
        Box::new(Profiler::new())
    }

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

    fn fake_stack<const F: usize>(stack: &mut [usize; F]) -> usize {
        let depth = F.min(3);
        stack[..depth].copy_from_slice(&[0x1000, 0x2000, 0x3000][..depth]);
        depth
    }

    #[test]
    fn sampler_estimates_and_frees() {
        let p = small();
        p.begin(1000);
        let s = ThreadSampler::new();
        let n = if cfg!(miri) { 2_000 } else { 50_000 };
        for i in 0..n {
            // Distinct 16-byte-aligned fake addresses, 100 bytes each.
            s.step(
                &*p,
                core::ptr::without_provenance_mut((i + 1) * 16),
                100,
                1000,
                fake_stack,
            );
        }
        let raw = p.sites.read();
        assert_eq!(raw.len(), 1);
        let counts = raw[0].1;
        let expect = (n * 100) as f64;
        let rel = (counts.bytes as f64 - expect).abs() / expect;
        assert!(rel < 0.15, "estimated {} of {expect}", counts.bytes);
        // Few of the samples fit in the 4 x 8 live table: the rest are
        // untracked, counted as gone.
        assert!(counts.untracked_samples > 0);
        assert_eq!(
            p.live.len() as u64,
            counts.samples - counts.untracked_samples
        );
        // Free every block: nothing stays live.
        for i in 0..n {
            p.free((i + 1) * 16);
        }
        let counts = p.sites.read()[0].1;
        assert_eq!(counts.freed_samples, counts.samples);
        assert_eq!(counts.freed_bytes, counts.bytes);
        assert_eq!(counts.freed_blocks, counts.blocks);
        assert_eq!(p.live.len(), 0);
        // Paused: nothing sampled.
        let before = p.samples.load(Ordering::Relaxed);
        s.paused(|| {
            for i in 0..1000 {
                s.step(
                    &*p,
                    core::ptr::without_provenance_mut((i + 1) * 16),
                    100,
                    1000,
                    fake_stack,
                );
            }
        });
        assert_eq!(p.samples.load(Ordering::Relaxed), before);
        // A new session forgets the old one.
        p.begin(1000);
        assert!(p.sites.read().is_empty());
    }

    fn frame(ip: usize, name: &str) -> Frame {
        Frame {
            ip,
            name: Some(name.into()),
            file: None,
            line: None,
        }
    }

    #[test]
    fn library_frames_are_told_from_the_program() {
        for lib in [
            "core::fmt::write",
            "<u64 as core::fmt::Display>::fmt",
            "<core::fmt::rt::Argument>::fmt",
            "<&mut alloc::string::String as core::fmt::Write>::write_fmt",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "<[u8] as alloc::borrow::ToOwned>::to_owned",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
        ] {
            assert!(is_library(lib), "{lib}");
        }
        for app in [
            "app::load",
            "<app::Config as core::clone::Clone>::clone",
            "<&app::Config as core::fmt::Debug>::fmt",
            "<app::Cache<K>>::insert",
            "app::main::{{closure}}",
        ] {
            assert!(!is_library(app), "{app}");
        }
    }

    #[test]
    fn sites_drop_allocator_frames_and_merge() {
        let names: HashMap<usize, Vec<Frame>> = [
            (1, vec![frame(1, "backtrace::trace")]),
            (
                2,
                vec![
                    frame(2, "strata_alloc::alloc_small"),
                    frame(2, "__rust_alloc"),
                ],
            ),
            (3, vec![frame(3, "strata_alloc::alloc_large")]),
            (
                4,
                vec![
                    frame(4, "alloc::alloc::alloc"),
                    frame(4, "alloc::vec::Vec<T>::with_capacity"),
                    frame(4, "app::load"),
                ],
            ),
            (5, vec![frame(5, "app::main")]),
            (6, vec![frame(6, "app::other")]),
        ]
        .into_iter()
        .collect();
        let counts = |bytes| RawCounts {
            samples: 1,
            bytes,
            blocks: 1024,
            ..RawCounts::default()
        };
        let raw = vec![
            (vec![1, 2, 4, 5], counts(100), false),
            // The same site through another allocator path: merged.
            (vec![1, 3, 4, 5], counts(200), false),
            (vec![1, 2, 6, 5], counts(1000), false),
            (vec![], counts(5), true),
        ];
        let sites = build_sites(raw, |ip| names[&ip].clone());
        assert_eq!(sites.len(), 3);
        assert_eq!(
            sites[0].location().unwrap().name.as_deref(),
            Some("app::other")
        );
        let load = &sites[1];
        assert_eq!(load.samples, 2);
        assert_eq!(load.live_bytes, 300);
        assert_eq!(load.allocated_blocks, 2);
        assert_eq!(
            load.frames[0].name.as_deref(),
            Some("alloc::vec::Vec<T>::with_capacity")
        );
        assert_eq!(load.location().unwrap().name.as_deref(), Some("app::load"));
        assert!(sites[2].other);
        let report = Report {
            interval: 1000,
            sites: sites.clone(),
        };
        let text = report.to_string();
        assert!(
            text.contains("app::other") && text.contains("<- app::main"),
            "{text}"
        );
        assert!(text.contains("[other stacks"), "{text}");
        // Diff: `load` grew, `other` vanished.
        let mut later = report.clone();
        later.sites[1].live_bytes += 50;
        later.sites[1].samples += 1;
        later.sites.remove(0);
        let d = report.diff(&later);
        assert_eq!(d.rows.len(), 2);
        assert_eq!(d.rows[0].live_bytes_diff, -1000);
        assert_eq!(d.rows[1].live_bytes_diff, 50);
        assert_eq!(d.live_bytes_diff(), -950);
        let text = d.to_string();
        assert!(text.contains("-1000 B") || text.contains("-1000"), "{text}");
    }
}
