//! Insight layer, sampling: which allocations are sampled (the per-thread
//! countdown) and the capture of their stacks, inside `malloc`.

use super::sites::{mix_seed, next_countdown, profiler, Profiler};
use core::sync::atomic as owner_only;

use crate::core::hooks::SamplerHooks;
use crate::core::sync::Ordering;

/// Seeds for the threads' PRNGs (any distinct values do).
static SEEDS: owner_only::AtomicU64 = owner_only::AtomicU64::new(0);

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
pub(super) static HOOKS: SamplerHooks = SamplerHooks { on_alloc, on_free };

#[cfg(not(loom))]
std::thread_local! {
    pub(super) static SAMPLER: ThreadSampler = const { ThreadSampler::new() };
}

#[cfg(loom)]
loom::thread_local! {
    pub(super) static SAMPLER: ThreadSampler = ThreadSampler::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    type Small = Profiler<8, 4, 4>;

    fn small() -> Box<Small> {
        Box::new(Profiler::new())
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
}
