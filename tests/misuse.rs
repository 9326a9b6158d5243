//! Bad input: a double free, or freeing a pointer that is not the start of
//! a block, aborts with a one-line message naming the pointer, instead of
//! corrupting the heap (small blocks: in debug builds; a large block's
//! double free: in every build). Each case runs in a child process.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

const CHILD: &str = "STRATA_MISUSE_CHILD";

/// Runs test `name` of this binary in a child with `CHILD` set; returns its
/// stderr after checking it died of SIGABRT.
fn run_child(name: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
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
    if !cfg!(debug_assertions) {
        return;
    }
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

#[test]
fn freeing_an_interior_pointer_aborts() {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: deliberately wrong: the pointer is not a block start.
        unsafe {
            let p = Strata.alloc(layout());
            Strata.dealloc(p.add(8), layout());
        }
        return;
    }
    let stderr = run_child("freeing_an_interior_pointer_aborts");
    assert!(
        stderr.contains("strata-alloc: free of a pointer that is not a block start: 0x"),
        "{stderr}"
    );
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
