//! Randomised stress: every block gets a pattern derived from its address
//! and id, checked before it is freed or reallocated. Overlapping blocks,
//! lost writes or blocks handed out twice show up as a wrong pattern.

use std::alloc::{GlobalAlloc, Layout};
use std::thread;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// xorshift64*: deterministic, allocation-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Live {
    ptr: *mut u8,
    layout: Layout,
    id: u64,
}

// SAFETY: the block is owned by this record; moving it to another thread
// moves ownership (cross-thread frees are what we test).
unsafe impl Send for Live {}

fn fill(block: &Live) {
    let byte = (block.id % 251) as u8;
    // SAFETY: the block is live and `layout.size()` bytes long.
    unsafe { block.ptr.write_bytes(byte, block.layout.size()) };
}

fn verify(block: &Live) {
    let byte = (block.id % 251) as u8;
    // SAFETY: as in `fill`.
    let bytes = unsafe { std::slice::from_raw_parts(block.ptr, block.layout.size()) };
    if let Some(pos) = bytes.iter().position(|&b| b != byte) {
        panic!(
            "block {} of {} bytes corrupted at {pos}",
            block.id,
            bytes.len()
        );
    }
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(100) {
        0..=59 => 1 + rng.below(128),
        60..=89 => 1 + rng.below(8192),
        90..=97 => 1 + rng.below(128 << 10),
        _ => 1 + rng.below(512 << 10),
    } as usize;
    let align = if rng.below(8) == 0 {
        1 << rng.below(13)
    } else {
        8
    };
    Layout::from_size_align(size, align).unwrap()
}

fn worker(seed: u64, steps: usize, inbox: Vec<Live>) -> Vec<Live> {
    let mut rng = Rng(seed);
    let mut live = inbox;
    for step in 0..steps {
        let id = seed.wrapping_mul(1_000_003).wrapping_add(step as u64);
        match rng.below(10) {
            0..=4 => {
                let layout = random_layout(&mut rng);
                // SAFETY: non-zero size.
                let ptr = unsafe { Strata.alloc(layout) };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % layout.align(), 0);
                let block = Live { ptr, layout, id };
                fill(&block);
                live.push(block);
            }
            5..=7 if !live.is_empty() => {
                let block = live.swap_remove(rng.below(live.len() as u64) as usize);
                verify(&block);
                // SAFETY: live block freed with its layout.
                unsafe { Strata.dealloc(block.ptr, block.layout) };
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                verify(&live[i]);
                let new_size = random_layout(&mut rng).size();
                let old = &live[i];
                // SAFETY: live block reallocated with its layout.
                let ptr = unsafe { Strata.realloc(old.ptr, old.layout, new_size) };
                assert!(!ptr.is_null());
                let keep = old.layout.size().min(new_size);
                let byte = (old.id % 251) as u8;
                // SAFETY: the new block holds at least `keep` bytes.
                let kept = unsafe { std::slice::from_raw_parts(ptr, keep) };
                assert!(kept.iter().all(|&b| b == byte), "realloc lost contents");
                let layout = Layout::from_size_align(new_size, old.layout.align()).unwrap();
                live[i] = Live { ptr, layout, id };
                fill(&live[i]);
            }
            _ => {}
        }
    }
    live
}

#[test]
fn random_operations_across_threads_keep_every_block_intact() {
    let mut carried: Vec<Vec<Live>> = (0..4).map(|_| Vec::new()).collect();
    for round in 0..6u64 {
        let handles: Vec<_> = carried
            .drain(..)
            .enumerate()
            .map(|(t, inbox)| {
                thread::spawn(move || worker(round * 16 + t as u64 + 1, 10_000, inbox))
            })
            .collect();
        let mut results: Vec<Vec<Live>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Hand every thread's survivors to the next thread of the next round.
        results.rotate_left(1);
        carried = results;
    }
    for block in carried.into_iter().flatten() {
        verify(&block);
        // SAFETY: live block freed with its layout.
        unsafe { Strata.dealloc(block.ptr, block.layout) };
    }
}
