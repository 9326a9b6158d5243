//! Differential test: random sequences of allocator operations, split over
//! one to three threads that hand blocks to each other through channels,
//! checked against a reference model.
//!
//! The model keeps, for every live block, its layout and a pattern seed:
//! the block's expected bytes are `pattern(seed, 0..size)` (or all zero
//! right after `alloc_zeroed`). Every operation checks the allocator
//! against it:
//!
//! - the pointer honours the alignment and `usable_size(p) >= size`;
//! - no two live blocks overlap (the usable ranges of all live blocks are
//!   kept in one address-ordered map shared by the threads);
//! - `alloc_zeroed` gives zeros; `realloc` keeps the first `min(old, new)`
//!   bytes;
//! - every block's bytes are verified before it is freed or reallocated,
//!   and when it arrives on another thread.
//!
//! The interpreter ([`run`], [`Op`]) is also driven by the fuzz target in
//! `fuzz/` (which includes this file as a module); the proptest front end
//! is `#[cfg(test)]`.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::thread;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// Largest size the operations request (large blocks start at 128 KiB).
pub const MAX_SIZE: usize = 300_000;
/// Largest alignment, as a power of two: 2^16 = 64 KiB.
pub const MAX_ALIGN_LOG2: u8 = 16;

/// One step of a thread's program. Slots index the thread's live blocks
/// modulo their number (an operation on an empty set does nothing).
#[derive(Clone, Debug)]
pub enum Op {
    /// Allocate `size` bytes aligned to `1 << align_log2`, zeroed or not.
    Alloc {
        size: usize,
        align_log2: u8,
        zeroed: bool,
    },
    /// Reallocate a live block to `size` bytes.
    Realloc { slot: usize, size: usize },
    /// Free a live block on this thread.
    Free { slot: usize },
    /// Hand a live block over to thread `to`, which adopts it (it may later
    /// reallocate or free it there, or hand it on).
    Give { slot: usize, to: usize },
    /// Send a live block to thread `to`, which verifies and frees it at once
    /// (a remote free).
    FreeRemote { slot: usize, to: usize },
}

/// A live block and its model: expected bytes are `pattern(seed, 0..size)`,
/// or zeros while `zeroed` (fresh from `alloc_zeroed`, not yet written).
struct Block {
    ptr: *mut u8,
    layout: Layout,
    seed: u64,
    zeroed: bool,
}

// SAFETY: a `Block` owns its allocation exclusively; moving it to another
// thread moves that ownership (cross-thread frees are what is tested).
unsafe impl Send for Block {}

enum Msg {
    Adopt(Block),
    Free(Block),
}

/// Usable ranges of all live blocks of all threads: start -> (end, seed).
static LIVE: Mutex<BTreeMap<usize, (usize, u64)>> = Mutex::new(BTreeMap::new());
static NEXT_SEED: AtomicU64 = AtomicU64::new(1);

fn live_ranges() -> std::sync::MutexGuard<'static, BTreeMap<usize, (usize, u64)>> {
    // A panic on another thread (a failed check) must not hide this one's.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The 8 expected bytes at offset `8 * chunk` of a block with `seed`.
fn pattern_chunk(seed: u64, chunk: usize) -> [u8; 8] {
    mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ chunk as u64).to_le_bytes()
}

/// Writes `pattern(seed, from..len)` into the block at `ptr`.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn fill(ptr: *mut u8, seed: u64, from: usize, len: usize) {
    // SAFETY: `ptr` is valid for `len` bytes (caller); nothing else
    // references the block while its owner fills it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    let start = from / 8 * 8;
    for (k, chunk) in bytes[start..].chunks_mut(8).enumerate() {
        let want = pattern_chunk(seed, start / 8 + k);
        let n = chunk.len();
        chunk.copy_from_slice(&want[..n]);
    }
    // The first chunk may start before `from`: rewriting those bytes with
    // their own pattern is harmless only if they already held it, which is
    // what every caller guarantees (they hold `pattern(seed, 0..from)`).
}

/// Panics unless the `len` bytes at `ptr` are `pattern(seed, ..)` (or zero).
///
/// # Safety
/// `ptr` must be valid for reads of `len` bytes.
unsafe fn verify(ptr: *const u8, seed: u64, zeroed: bool, len: usize, what: &str) {
    // SAFETY: `ptr` is valid for `len` bytes (caller).
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    for (k, chunk) in bytes.chunks(8).enumerate() {
        let want = if zeroed {
            [0; 8]
        } else {
            pattern_chunk(seed, k)
        };
        if chunk != &want[..chunk.len()] {
            let at = k * 8 + chunk.iter().zip(want).position(|(a, b)| *a != b).unwrap();
            panic!(
                "{what}: block {ptr:p} (seed {seed}, {len} bytes{}) differs at byte {at}: \
                 {:#04x} instead of {:#04x}",
                if zeroed { ", zeroed" } else { "" },
                bytes[at],
                want[at % 8],
            );
        }
    }
}

impl Block {
    /// # Safety
    /// The block must be live.
    unsafe fn verify(&self, what: &str) {
        // SAFETY: a live block is valid for `layout.size()` bytes (caller).
        unsafe { verify(self.ptr, self.seed, self.zeroed, self.layout.size(), what) }
    }
}

/// Checks a block fresh from the allocator (alignment, usable size, no
/// overlap with any live block) and records its usable range.
fn claim(ptr: *mut u8, layout: Layout, seed: u64, what: &str) {
    assert!(!ptr.is_null(), "{what}: {layout:?} returned null");
    assert_eq!(
        ptr as usize % layout.align(),
        0,
        "{what}: {ptr:p} is not aligned to {}",
        layout.align()
    );
    // SAFETY: `ptr` is a live block allocated by Strata.
    let usable = unsafe { strata_alloc::usable_size(ptr) };
    assert!(
        usable >= layout.size(),
        "{what}: usable_size({ptr:p}) = {usable} < {}",
        layout.size()
    );
    let (start, end) = (ptr as usize, ptr as usize + usable);
    let mut live = live_ranges();
    if let Some((&s, &(e, other))) = live.range(..end).next_back() {
        assert!(
            e <= start,
            "{what}: new block {start:#x}..{end:#x} ({layout:?}) overlaps live block \
             {s:#x}..{e:#x} (seed {other})"
        );
    }
    live.insert(start, (end, seed));
}

/// Forgets a block's range; called before the block is freed, so another
/// thread that gets the same address next does not see a stale range.
fn unclaim(ptr: *mut u8) {
    let removed = live_ranges().remove(&(ptr as usize));
    assert!(removed.is_some(), "{ptr:p} was not live");
}

/// Verifies and frees a block.
fn free(block: Block, what: &str) {
    // SAFETY: the block is live and owned by the caller.
    unsafe { block.verify(what) };
    unclaim(block.ptr);
    // SAFETY: the block was allocated by Strata with `layout` and is freed
    // once: `block` is consumed.
    unsafe { Strata.dealloc(block.ptr, block.layout) };
}

fn new_seed() -> u64 {
    NEXT_SEED.fetch_add(1, Ordering::Relaxed)
}

fn alloc(size: usize, align_log2: u8, zeroed: bool) -> Block {
    let layout = Layout::from_size_align(size.clamp(1, MAX_SIZE), 1 << align_log2.min(16))
        .expect("valid layout");
    let seed = new_seed();
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe {
        if zeroed {
            Strata.alloc_zeroed(layout)
        } else {
            Strata.alloc(layout)
        }
    };
    claim(ptr, layout, seed, "alloc");
    let block = Block {
        ptr,
        layout,
        seed,
        zeroed,
    };
    if zeroed {
        // SAFETY: the block is live.
        unsafe { block.verify("alloc_zeroed") };
    }
    // SAFETY: the block is live and `layout.size()` bytes long.
    unsafe { fill(ptr, seed, 0, layout.size()) };
    Block {
        zeroed: false,
        ..block
    }
}

fn realloc(block: &mut Block, new_size: usize) {
    let new_size = new_size.clamp(1, MAX_SIZE);
    // SAFETY: the block is live.
    unsafe { block.verify("before realloc") };
    let old = block.layout.size();
    unclaim(block.ptr);
    // SAFETY: the block is live with this layout; `new_size` is non-zero
    // and, rounded up to the alignment (at most 64 KiB), does not overflow
    // `isize`.
    let ptr = unsafe { Strata.realloc(block.ptr, block.layout, new_size) };
    let layout = Layout::from_size_align(new_size, block.layout.align()).expect("valid layout");
    claim(ptr, layout, block.seed, "realloc");
    // SAFETY: the new block is live and at least `min(old, new_size)` bytes.
    unsafe { verify(ptr, block.seed, false, old.min(new_size), "after realloc") };
    if new_size > old {
        // SAFETY: the new block is `new_size` bytes and holds the pattern
        // up to `old`.
        unsafe { fill(ptr, block.seed, old, new_size) };
    }
    block.ptr = ptr;
    block.layout = layout;
}

/// Adopts or frees blocks that arrived from other threads.
fn receive(msg: Msg, live: &mut Vec<Block>) {
    match msg {
        Msg::Adopt(block) => {
            // SAFETY: the sender handed the live block over.
            unsafe { block.verify("received block") };
            live.push(block);
        }
        Msg::Free(block) => free(block, "remote free"),
    }
}

fn worker(ops: Vec<Op>, inbox: Receiver<Msg>, peers: Vec<Sender<Msg>>) {
    let mut live: Vec<Block> = Vec::new();
    for op in ops {
        while let Ok(msg) = inbox.try_recv() {
            receive(msg, &mut live);
        }
        match op {
            Op::Alloc {
                size,
                align_log2,
                zeroed,
            } => live.push(alloc(size, align_log2, zeroed)),
            Op::Realloc { slot, size } if !live.is_empty() => {
                let i = slot % live.len();
                realloc(&mut live[i], size);
            }
            Op::Free { slot } if !live.is_empty() => {
                let block = live.swap_remove(slot % live.len());
                free(block, "free");
            }
            Op::Give { slot, to } if !live.is_empty() => {
                let block = live.swap_remove(slot % live.len());
                // The receiver may already be done; then free it here.
                if let Err(mpsc::SendError(Msg::Adopt(block))) =
                    peers[to % peers.len()].send(Msg::Adopt(block))
                {
                    free(block, "free (receiver gone)");
                }
            }
            Op::FreeRemote { slot, to } if !live.is_empty() => {
                let block = live.swap_remove(slot % live.len());
                if let Err(mpsc::SendError(Msg::Free(block))) =
                    peers[to % peers.len()].send(Msg::Free(block))
                {
                    free(block, "free (receiver gone)");
                }
            }
            _ => {}
        }
    }
    for block in live.drain(..) {
        free(block, "free at end");
    }
    // Stop sending, then free whatever is still on its way here until every
    // thread (including this one) has dropped its senders.
    drop(peers);
    let mut rest = Vec::new();
    for msg in inbox {
        receive(msg, &mut rest);
        for block in rest.drain(..) {
            free(block, "free at end");
        }
    }
}

/// Runs one program per thread (at most a few threads); panics on the first
/// difference from the model.
pub fn run(programs: Vec<Vec<Op>>) {
    let n = programs.len().max(1);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<Msg>()).unzip();
    let handles: Vec<_> = programs
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(i, (ops, inbox))| {
            let peers = senders.clone();
            thread::Builder::new()
                .name(format!("differential-{i}"))
                .spawn(move || worker(ops, inbox, peers))
                .expect("spawn")
        })
        .collect();
    drop(senders);
    let mut failure = None;
    for h in handles {
        if let Err(e) = h.join() {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        std::panic::resume_unwind(e);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Sizes 1..=300_000, mostly small.
    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![
            60 => 1..=128usize,
            25 => 129..=4096usize,
            10 => 4097..=(128usize << 10),
            5 => (128usize << 10) + 1..=MAX_SIZE,
        ]
    }

    /// Alignments 1..=64 KiB, mostly word-sized or less.
    fn align_log2() -> impl Strategy<Value = u8> {
        prop_oneof![8 => 0..=4u8, 2 => 5..=MAX_ALIGN_LOG2]
    }

    fn op() -> impl Strategy<Value = Op> {
        let slot = any::<usize>();
        prop_oneof![
            // One allocation in four is zeroed.
            10 => (size(), align_log2(), prop::bool::weighted(0.25))
                .prop_map(|(size, align_log2, zeroed)| Op::Alloc { size, align_log2, zeroed }),
            4 => (slot, size()).prop_map(|(slot, size)| Op::Realloc { slot, size }),
            4 => slot.prop_map(|slot| Op::Free { slot }),
            2 => (slot, 0..3usize).prop_map(|(slot, to)| Op::Give { slot, to }),
            2 => (slot, 0..3usize).prop_map(|(slot, to)| Op::FreeRemote { slot, to }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn single_thread_matches_the_model(ops in prop::collection::vec(op(), 1..300)) {
            run(vec![ops]);
        }

        #[test]
        fn threads_handing_blocks_over_match_the_model(
            programs in prop::collection::vec(prop::collection::vec(op(), 1..200), 2..=3)
        ) {
            run(programs);
        }
    }

    /// A fixed program that a shrunk failure can be pasted into.
    #[test]
    fn handcrafted_sequence() {
        use Op::*;
        run(vec![
            vec![
                Alloc {
                    size: 100,
                    align_log2: 3,
                    zeroed: true,
                },
                Alloc {
                    size: 200_000,
                    align_log2: 16,
                    zeroed: false,
                },
                Realloc {
                    slot: 0,
                    size: 5_000,
                },
                Realloc {
                    slot: 1,
                    size: 150_000,
                },
                Give { slot: 0, to: 1 },
                Alloc {
                    size: 1,
                    align_log2: 12,
                    zeroed: false,
                },
                FreeRemote { slot: 0, to: 1 },
                Free { slot: 0 },
            ],
            vec![
                Alloc {
                    size: 64,
                    align_log2: 6,
                    zeroed: true,
                },
                Realloc {
                    slot: 0,
                    size: 300_000,
                },
                Realloc { slot: 0, size: 7 },
                Give { slot: 0, to: 0 },
            ],
        ]);
    }
}
