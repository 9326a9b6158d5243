//! Demonstration that the models catch a broken memory ordering.
//!
//! LOCAL REPLICA, FOR THIS DEMONSTRATION ONLY: a copy of the
//! `Pool::push_thread_free` / `Pool::collect` protocol (CAS push, swap
//! take) over loom's `UnsafeCell`, so loom also tracks the plain link and
//! payload writes that the real code does through raw pointers (which
//! loom cannot see). With the real orderings (Release push, Acquire take)
//! the model passes; weakened to Relaxed, loom finds the interleaving in
//! which the owner reads a link the pusher wrote without happens-before.
#![cfg(loom)]

use std::ptr;
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release};

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicPtr;
use loom::sync::Arc;
use loom::thread;

struct Block {
    next: UnsafeCell<*mut Block>,
    payload: UnsafeCell<usize>,
}

struct ThreadFree {
    head: AtomicPtr<Block>,
}

// SAFETY: blocks are handed over through `head`; whether that hand-over
// orders the accesses is exactly what loom checks here.
unsafe impl Send for ThreadFree {}
// SAFETY: as above.
unsafe impl Sync for ThreadFree {}

impl ThreadFree {
    /// `Pool::push_thread_free` with the success ordering as a parameter.
    fn push(&self, block: *mut Block, success: Ordering) {
        let mut head = self.head.load(Relaxed);
        loop {
            // SAFETY: the block is ours until the CAS publishes it.
            unsafe { (*block).next.with_mut(|n| *n = head) };
            match self
                .head
                .compare_exchange_weak(head, block, success, Relaxed)
            {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    /// `Pool::collect`'s take-over with the swap ordering as a parameter:
    /// walks the taken list, summing payloads.
    fn take(&self, order: Ordering) -> (usize, usize) {
        let mut block = self.head.swap(ptr::null_mut(), order);
        let (mut count, mut sum) = (0, 0);
        while !block.is_null() {
            // SAFETY: the taken list is ours; blocks live until the end.
            unsafe {
                sum += (*block).payload.with(|p| *p);
                count += 1;
                block = (*block).next.with(|n| *n);
            }
        }
        (count, sum)
    }
}

fn run(push: Ordering, take: Ordering) {
    loom::model(move || {
        let list = Arc::new(ThreadFree {
            head: AtomicPtr::new(ptr::null_mut()),
        });
        let blocks: Vec<*mut Block> = (0..2)
            .map(|_| {
                Box::into_raw(Box::new(Block {
                    next: UnsafeCell::new(ptr::null_mut()),
                    payload: UnsafeCell::new(0),
                }))
            })
            .collect();
        let (a, b) = (blocks[0] as usize, blocks[1] as usize);
        let pusher = {
            let list = list.clone();
            thread::spawn(move || {
                for (p, value) in [(a, 1), (b, 2)] {
                    let block = p as *mut Block;
                    // SAFETY: the block is live and ours until pushed; the
                    // payload write is the "user data" of a freed block.
                    unsafe { (*block).payload.with_mut(|v| *v = value) };
                    list.push(block, push);
                }
            })
        };
        let (n1, s1) = list.take(take);
        pusher.join().unwrap();
        let (n2, s2) = list.take(take);
        assert_eq!((n1 + n2, s1 + s2), (2, 3), "every block taken once");
        for block in blocks {
            // SAFETY: made by `Box::into_raw` above, freed once.
            drop(unsafe { Box::from_raw(block) });
        }
    });
}

/// The replica with the orderings the real code uses passes.
#[test]
fn release_acquire_protocol_passes() {
    run(Release, Acquire);
}

/// The same protocol with Relaxed push and take fails: loom reports a
/// causality violation (the owner reads a link/payload written by the
/// pusher with no happens-before edge).
#[test]
#[should_panic(expected = "Causality violation")]
fn relaxed_protocol_is_caught() {
    run(Relaxed, Relaxed);
}
