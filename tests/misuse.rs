//! Bad input: a double free, or freeing a pointer that is not the start of
//! a block, aborts with a one-line message naming the pointer, instead of
//! corrupting the heap, in every build (release included). Each case runs
//! in a child process; heavy correct use, run in this process, never
//! aborts.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

const CHILD: &str = "STRATA_MISUSE_CHILD";

/// Runs test `name` of this binary in a child with `CHILD` set; returns its
/// stderr after checking it died of SIGABRT.
fn run_child(name: &str) -> String {
    run_child_with(name, "1")
}

/// [`run_child`] with `CHILD` set to `case`, for tests with several.
fn run_child_with(name: &str, case: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "child should abort: {:?}",
        out
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks that `stderr` has a line starting with `message` and ending with
/// the pointer the child printed as `pointer 0x...`.
fn assert_names_the_pointer(stderr: &str, message: &str) {
    let pointer = stderr
        .lines()
        .find_map(|l| l.strip_prefix("pointer 0x"))
        .expect("child printed its pointer");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(message))
        .expect("one-line message");
    assert!(
        line.ends_with(pointer),
        "the message names the pointer: {line}"
    );
}

fn layout() -> Layout {
    Layout::from_size_align(48, 8).unwrap()
}

#[test]
fn double_free_aborts_with_the_pointer() {
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: deliberately wrong: the second dealloc is the misuse under test.
        unsafe {
            let p = Strata.alloc(layout());
            eprintln!("pointer {p:p}");
            Strata.dealloc(p, layout());
            Strata.dealloc(p, layout());
        }
        return;
    }
    let stderr = run_child("double_free_aborts_with_the_pointer");
    assert_names_the_pointer(&stderr, "strata-alloc: double free of 0x");
}

/// The second free comes after frees of other blocks of the pool: the
/// block is deep in the owner's list when the tag sends the free to the
/// confirming walk.
#[test]
fn double_free_after_other_frees_aborts() {
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: deliberately wrong: the last dealloc is the misuse under test.
        unsafe {
            let p = Strata.alloc(layout());
            let others: Vec<_> = (0..100).map(|_| Strata.alloc(layout())).collect();
            eprintln!("pointer {p:p}");
            Strata.dealloc(p, layout());
            for &q in &others {
                Strata.dealloc(q, layout());
            }
            Strata.dealloc(p, layout());
        }
        return;
    }
    let stderr = run_child("double_free_after_other_frees_aborts");
    assert_names_the_pointer(&stderr, "strata-alloc: double free of 0x");
}

/// A raw pointer that crosses threads in a test.
struct Sent(*mut u8);
// SAFETY: the tests hand each block to one thread at a time.
unsafe impl Send for Sent {}

/// Freed once by another thread (onto the owner's `thread_free` list),
/// then again by the owner: the owner's walk takes the remote frees in
/// and finds it.
#[test]
fn double_free_after_a_remote_free_aborts() {
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: allocated here, freed once over there.
        let p = unsafe { Strata.alloc(layout()) };
        eprintln!("pointer {p:p}");
        let sent = Sent(p);
        std::thread::spawn(move || {
            let sent = sent;
            // SAFETY: a live block, freed once.
            unsafe { Strata.dealloc(sent.0, layout()) };
        })
        .join()
        .unwrap();
        // SAFETY: deliberately wrong: the second free.
        unsafe { Strata.dealloc(p, layout()) };
        return;
    }
    let stderr = run_child("double_free_after_a_remote_free_aborts");
    assert_names_the_pointer(&stderr, "strata-alloc: double free of 0x");
}

/// Freed twice by a thread that does not own the pool: the tag alone tells
/// (the owner's lists cannot be walked from there).
#[test]
fn remote_double_free_aborts() {
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: allocated here, freed twice over there.
        let p = unsafe { Strata.alloc(layout()) };
        eprintln!("pointer {p:p}");
        let sent = Sent(p);
        std::thread::spawn(move || {
            let sent = sent;
            // SAFETY: deliberately wrong: the second dealloc.
            unsafe {
                Strata.dealloc(sent.0, layout());
                Strata.dealloc(sent.0, layout());
            }
        })
        .join()
        .unwrap();
        return;
    }
    let stderr = run_child("remote_double_free_aborts");
    assert_names_the_pointer(&stderr, "strata-alloc: double free of 0x");
}

/// Pointers 8 bytes into a 48-byte block, and 16 (a multiple of 16, not of
/// 48: the reciprocal test, not an alignment mask, refuses it).
#[test]
fn freeing_an_interior_pointer_aborts() {
    for offset in ["8", "16", "47"] {
        if std::env::var(CHILD).as_deref() == Ok(offset) {
            let offset: usize = offset.parse().unwrap();
            // SAFETY: deliberately wrong: the pointer is not a block start.
            unsafe {
                let p = Strata.alloc(layout()).add(offset);
                eprintln!("pointer {p:p}");
                Strata.dealloc(p, layout());
            }
            return;
        }
    }
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    for offset in ["8", "16", "47"] {
        let stderr = run_child_with("freeing_an_interior_pointer_aborts", offset);
        assert_names_the_pointer(
            &stderr,
            "strata-alloc: free of a pointer that is not a block start: 0x",
        );
    }
}

/// A live block whose second word happens to hold the free tag (its
/// address plus `FREE_TAG` of `core/pool.rs`): the owner's walk does not
/// find it on any list, so the free goes on and the block is reused.
#[test]
fn a_live_block_holding_the_tag_frees_normally() {
    let blocks: Vec<_> = (0..64)
        // SAFETY: live blocks of 48 bytes.
        .map(|_| unsafe { Strata.alloc(layout()) })
        .collect();
    for &p in &blocks {
        // SAFETY: the block is ours, 48 bytes, aligned to 8.
        unsafe { p.cast::<usize>().add(1).write(p as usize + 0x5346_5245) };
    }
    for &p in blocks
        .iter()
        .step_by(2)
        .chain(blocks.iter().skip(1).step_by(2))
    {
        // SAFETY: each live block freed once.
        unsafe { Strata.dealloc(p, layout()) };
    }
    // SAFETY: fresh blocks, freed once each.
    unsafe {
        let again: Vec<_> = (0..64).map(|_| Strata.alloc(layout())).collect();
        for p in again {
            Strata.dealloc(p, layout());
        }
    }
}

/// Heavy correct use never trips a check: blocks of every small class and
/// some large ones, freed in shuffled order by their own thread and by
/// others, holding the data most likely to look like a free block (null,
/// links to other blocks of their pool, their own address, fresh and
/// reused blocks alike).
#[test]
fn heavy_use_never_aborts() {
    let sizes: Vec<usize> = (0..120).map(|i| 1 + i * i * 11 + i % 7).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    let rounds = if cfg!(debug_assertions) { 4 } else { 12 };
    for _ in 0..rounds {
        let mut live: Vec<(Sent, Layout)> = Vec::new();
        for i in 0..6000 {
            let size = sizes[next() % sizes.len()];
            let layout = Layout::from_size_align(size, 1 << (next() % 5)).unwrap();
            // SAFETY: a non-zero layout.
            let p = unsafe { Strata.alloc(layout) };
            assert!(!p.is_null());
            if size >= 16 {
                let word = match i % 4 {
                    0 => 0,
                    1 => p as usize,
                    2 => live.last().map_or(0, |(q, _)| q.0 as usize),
                    _ => p as usize + 48,
                };
                // SAFETY: at least 16 bytes; unaligned writes for the byte
                // alignments.
                unsafe {
                    p.cast::<usize>().write_unaligned(word);
                    p.add(8).cast::<usize>().write_unaligned(word);
                }
            }
            live.push((Sent(p), layout));
            if next() % 3 == 0 {
                let (q, layout) = live.swap_remove(next() % live.len());
                // SAFETY: a live block, freed once.
                unsafe { Strata.dealloc(q.0, layout) };
            }
        }
        let (mine, theirs): (Vec<_>, Vec<_>) = live.into_iter().partition(|_| next() % 2 == 0);
        let remote = std::thread::spawn(move || {
            for (q, layout) in theirs {
                // SAFETY: a live block, freed once, by another thread.
                unsafe { Strata.dealloc(q.0, layout) };
            }
        });
        for (q, layout) in mine {
            // SAFETY: a live block, freed once.
            unsafe { Strata.dealloc(q.0, layout) };
        }
        remote.join().unwrap();
    }
}

/// A large block freed twice: its mapping waits in the cache with its
/// header marked freed, so the second free aborts (in every build) rather
/// than caching the mapping twice and handing it to two owners.
#[test]
fn double_free_of_a_large_block_aborts() {
    let large = Layout::from_size_align(1 << 20, 8).unwrap();
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: deliberately wrong: the second dealloc is the misuse under test.
        unsafe {
            let p = Strata.alloc(large);
            eprintln!("pointer {p:p}");
            Strata.dealloc(p, large);
            Strata.dealloc(p, large);
        }
        return;
    }
    let stderr = run_child("double_free_of_a_large_block_aborts");
    assert_names_the_pointer(
        &stderr,
        "strata-alloc: double free (or use after free) of large block 0x",
    );
}
