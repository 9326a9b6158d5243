//! Process and thread life cycle of `libstrata.so` under `LD_PRELOAD`
//! (`tests/c/lifecycle.c`, one child process per case): the first
//! allocation must not wait on the libc lock it was called under, exiting
//! threads must not leave pools behind, a huge `STRATA_PURGE_DELAY` is
//! clamped, a wild free aborts with a reason instead of writing into an
//! arena header, a double free or an interior pointer of a small block
//! aborts naming it (release builds included), with the `secure` feature
//! so does a free-list link overwritten after free, while heavy correct use
//! trips no check, and the library also works `dlopen`ed.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `libstrata.so` Cargo built for this test run.
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|dir| dir.join("libstrata.so"))
        .find(|lib| lib.exists())
        .expect("libstrata.so not built")
}

/// The compiled test program, or `None` (test skipped) without a C compiler.
fn program() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/lifecycle.c");
            let bin = std::env::temp_dir().join(format!("strata-lifecycle-{}", std::process::id()));
            let status = Command::new("cc")
                .args(["-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
                .arg(&bin)
                .arg(&src)
                .arg("-ldl")
                .status();
            match status {
                Ok(status) => {
                    assert!(status.success(), "cc failed");
                    Some(bin)
                }
                Err(e) => {
                    eprintln!("skipped: no C compiler ({e})");
                    None
                }
            }
        })
        .clone()
}

/// Runs the program in `mode` under the preload with `env`, killing it
/// after `limit` (a hang is the failure some cases look for).
fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Option<Output> {
    let bin = program()?;
    let mut child = Command::new(bin)
        .args(args)
        .env("LD_PRELOAD", library())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!(
                "`lifecycle {}` did not finish in {limit:?}: hung",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

fn assert_ok(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.ends_with("ok\n"), "{what}: {stdout}");
}

/// glibc holds its atfork lock while it mallocs to grow the handler list;
/// if that malloc is strata's first, strata must not register its own
/// `fork` handlers from inside it (49 handlers are the first that grow it).
#[test]
fn first_malloc_inside_pthread_atfork_does_not_hang() {
    for n in ["49", "200"] {
        if let Some(out) = run(&["atfork", n], &[], Duration::from_secs(30)) {
            assert_ok(&out, &format!("{n} pthread_atfork handlers"));
        }
    }
}

/// The same for `atexit`, which `STRATA_SHOW_STATS=1` uses.
#[test]
fn first_malloc_inside_atexit_does_not_hang() {
    let env = [("STRATA_SHOW_STATS", "1")];
    if let Some(out) = run(&["atexit", "40"], &env, Duration::from_secs(30)) {
        assert_ok(&out, "40 atexit handlers");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("strata-alloc stats"),
            "no report at exit:\n{stderr}"
        );
    }
}

/// glibc frees a thread's dlerror buffer after every key destructor ran,
/// so after strata abandoned the thread's heap: that free must not adopt a
/// pool again (one pool per thread, never returned, was the leak).
#[test]
fn exiting_threads_leave_no_pools_behind() {
    let Some(out) = run(&["threads", "5000"], &[], Duration::from_secs(120)) else {
        return;
    };
    assert_ok(&out, "5000 threads with a failing dlopen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rss: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("rss "))
        .map(|kib| kib.parse().unwrap())
        .collect();
    assert_eq!(rss.len(), 2, "{stdout}");
    // 4000 more threads leaked ~32 MiB before the fix; glibc grows by 0.
    let growth_kib = rss[1] - rss[0];
    assert!(
        growth_kib < 4096,
        "RSS grew by {growth_kib} KiB over 4000 threads"
    );
}

/// `STRATA_PURGE_DELAY=u64::MAX` once overflowed `now + delay` (a panic
/// inside the allocator in debug builds): it is clamped, with a warning.
#[test]
fn huge_purge_delay_is_clamped() {
    let env = [("STRATA_PURGE_DELAY", "18446744073709551615")];
    if let Some(out) = run(&["churn"], &env, Duration::from_secs(60)) {
        assert_ok(&out, "churn with STRATA_PURGE_DELAY=u64::MAX");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("STRATA_PURGE_DELAY is at most"), "{stderr}");
    }
}

/// Blocks of a fresh pool come in address order, except at secure level 2
/// (with the `secure` feature), which links each carve in a random order.
#[test]
fn fresh_blocks_are_shuffled_at_level_2_only() {
    let mut levels = vec![(None, true)];
    if cfg!(feature = "secure") {
        levels.extend([(Some("0"), true), (Some("1"), true), (Some("2"), false)]);
    }
    for (level, in_order) in levels {
        let env: Vec<(&str, &str)> = level.iter().map(|l| ("STRATA_SECURE", *l)).collect();
        let Some(out) = run(&["order"], &env, Duration::from_secs(30)) else {
            return;
        };
        assert_ok(&out, "order");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let neighbours: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("neighbours "))
            .and_then(|n| n.parse().ok())
            .expect("the program counted neighbours");
        if in_order {
            assert_eq!(neighbours, 63, "{level:?}: {stdout}");
        } else {
            assert!(neighbours < 16, "{level:?}: {neighbours} of 63 in order");
        }
    }
}

/// `STRATA_SECURE` gets one warning line when malformed (with the `secure`
/// feature) or when set without the feature, and the program runs on.
#[test]
fn strata_secure_warns_once_when_it_cannot_be_followed() {
    let (value, warning) = if cfg!(feature = "secure") {
        (
            "7",
            "strata-alloc: STRATA_SECURE must be 0, 1 or 2; using 1",
        )
    } else {
        (
            "1",
            "strata-alloc: STRATA_SECURE needs a build with the secure feature; ignored",
        )
    };
    let env = [("STRATA_SECURE", value)];
    if let Some(out) = run(&["churn"], &env, Duration::from_secs(60)) {
        assert_ok(&out, "churn with STRATA_SECURE");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    }
}

/// A pointer into an arena's header slot is no block: freeing it aborts
/// with a reason (it used to be pushed onto an unused pool record, writing
/// into the header).
#[test]
fn wild_free_into_an_arena_header_aborts() {
    let Some(out) = run(&["wild-free"], &[], Duration::from_secs(30)) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the wild free was accepted:\n{stdout}"
    );
    assert!(!stdout.contains("returned"), "{stdout}");
    assert!(
        stderr.contains("strata-alloc: free of a pointer into no pool"),
        "{stderr}"
    );
}

/// Pointers malloc never returned — on the stack, in a static, in a
/// mapping of the program's own — are reported by name, in release builds
/// too, and never read: strata finds its chunks in its chunk map, so an
/// address in no mapping of its own cannot fault inside `free`.
#[test]
fn foreign_pointers_abort_with_a_reason() {
    for what in [
        "free-stack",
        "free-static",
        "free-mmap",
        "realloc-mmap",
        "usable-static",
    ] {
        let Some(out) = run(&["foreign", what], &[], Duration::from_secs(30)) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} was accepted:\n{stdout}");
        assert!(!stdout.contains("returned"), "{what}: {stdout}");
        assert!(
            stderr.contains("strata-alloc: free, realloc or malloc_usable_size of a pointer strata never handed out: 0x"),
            "{what}: {stderr}"
        );
    }
}

/// Misuse of small blocks aborts with a line naming the pointer the
/// program printed (`pointer 0x...`), in every build: double frees by the
/// owner (at once, after other frees, after another thread's free) and by
/// another thread, and a pointer 16 bytes into a 48-byte block.
#[test]
fn small_block_misuse_aborts_naming_the_pointer() {
    for (what, message) in [
        ("double-free", "strata-alloc: double free of 0x"),
        ("double-free-later", "strata-alloc: double free of 0x"),
        ("double-free-remote", "strata-alloc: double free of 0x"),
        (
            "double-free-after-remote",
            "strata-alloc: double free of 0x",
        ),
        (
            "interior",
            "strata-alloc: free of a pointer that is not a block start: 0x",
        ),
    ] {
        let Some(out) = run(&["misuse", what], &[], Duration::from_secs(30)) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{what}: {stdout}\n{stderr}"
        );
        assert!(!stdout.contains("returned"), "{what}: {stdout}");
        let pointer = stdout
            .lines()
            .find_map(|l| l.strip_prefix("pointer 0x"))
            .expect("the program printed its pointer");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(message))
            .unwrap_or_else(|| panic!("{what}: no one-line message: {stderr}"));
        assert!(line.ends_with(pointer), "{what}: {line} names {pointer}");
    }
}

/// With the `secure` feature, a free-list link overwritten after its block
/// was freed aborts the `malloc` that would follow it, with one line
/// naming the pool, the block and the bad link (the program prints what
/// the line must start with; the link's decoded value is random).
#[test]
#[cfg(feature = "secure")]
fn overwritten_free_list_link_aborts_naming_the_pool() {
    for level in [None, Some("1"), Some("2")] {
        let env: Vec<(&str, &str)> = level.iter().map(|l| ("STRATA_SECURE", *l)).collect();
        let Some(out) = run(&["overwrite-link"], &env, Duration::from_secs(30)) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{level:?}: {stdout}\n{stderr}"
        );
        assert!(!stdout.contains("returned"), "{level:?}: {stdout}");
        let expected = stdout
            .lines()
            .find_map(|l| l.strip_prefix("expect "))
            .expect("the program printed the line to expect");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(expected))
            .unwrap_or_else(|| panic!("{level:?}: no line {expected:?} in: {stderr}"));
        let link = &line[expected.len()..];
        assert!(
            link.len() == 16 && link.bytes().all(|b| b.is_ascii_hexdigit()),
            "{level:?}: {line}"
        );
    }
}

/// With the `secure` feature, a large block has a guard page after it: a
/// write one byte past its usable end faults, fresh, from the cache,
/// grown or shrunk by `realloc` (the guard moves with the end), at levels
/// 1 and 2; every byte before it is writable. At level 0 (no guard) the
/// program maps the page after the block itself and the write lands
/// there: what faults is the guard, not an unmapped neighbour.
#[test]
#[cfg(feature = "secure")]
fn write_past_a_large_block_hits_its_guard_page() {
    use std::os::unix::process::ExitStatusExt;
    for how in ["fresh", "grown"] {
        let env = [("STRATA_SECURE", "0")];
        let Some(out) = run(&["overflow-large", how], &env, Duration::from_secs(30)) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "level 0 {how}: {stdout}");
        assert!(
            stdout.contains("neighbour mapped") && stdout.contains("overflow returned"),
            "level 0 {how}: {stdout}"
        );
    }
    for level in [None, Some("2")] {
        let env: Vec<(&str, &str)> = level.iter().map(|l| ("STRATA_SECURE", *l)).collect();
        for how in ["fresh", "reused", "grown", "shrunk"] {
            let Some(out) = run(&["overflow-large", how], &env, Duration::from_secs(30)) else {
                return;
            };
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGSEGV),
                "{level:?} {how}: {stdout}\n{stderr}"
            );
            let usable: usize = stdout
                .lines()
                .find_map(|l| l.strip_prefix("usable "))
                .expect("the program printed the usable size")
                .parse()
                .unwrap();
            assert!(usable >= 600 << 10, "{level:?} {how}: {usable}");
            assert!(!stdout.contains("returned"), "{level:?} {how}: {stdout}");
            assert!(!stdout.contains("neighbour"), "{level:?} {how}: {stdout}");
        }
    }
}

/// With the `secure` feature at level 2, a freed small block is zeroed
/// (but its link and tag words): the `malloc` right after, of the same
/// size on the same thread, gets the block back and reads zeros; at
/// level 1 it reads what was written before the free.
#[test]
#[cfg(feature = "secure")]
fn freed_blocks_are_zeroed_at_level_2() {
    for size in ["40", "100", "3000"] {
        for level in ["1", "2"] {
            let env = [("STRATA_SECURE", level)];
            let Some(out) = run(&["reuse", size], &env, Duration::from_secs(30)) else {
                return;
            };
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{level} {size}: {stdout}");
            assert!(stdout.contains("same"), "{level} {size}: {stdout}");
            let nonzero: usize = stdout
                .lines()
                .find_map(|l| l.strip_prefix("nonzero "))
                .expect("the program counted")
                .parse()
                .unwrap();
            let written = size.parse::<usize>().unwrap() - 16;
            let expected = if level == "2" { 0 } else { written };
            assert_eq!(nonzero, expected, "{level} {size}: {stdout}");
        }
    }
}

/// With the `secure` feature, the last slot of every arena is a guard: a
/// read there faults at levels 1 and 2, and is an ordinary read of the
/// arena's reservation at level 0.
#[test]
#[cfg(feature = "secure")]
fn the_last_slot_of_an_arena_is_a_guard() {
    use std::os::unix::process::ExitStatusExt;
    for level in ["0", "1", "2"] {
        let env = [("STRATA_SECURE", level)];
        let Some(out) = run(&["arena-guard"], &env, Duration::from_secs(30)) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if level == "0" {
            assert!(out.status.success(), "level 0: {stdout}");
            assert!(stdout.contains("read returned"), "level 0: {stdout}");
        } else {
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGSEGV),
                "{level}: {stdout}"
            );
            assert!(!stdout.contains("returned"), "{level}: {stdout}");
        }
    }
}

/// Four threads mallocing, reallocing and freeing each other's blocks,
/// filled with what free-list links look like, trip no check.
#[test]
fn heavy_use_trips_no_check() {
    if let Some(out) = run(&["stress"], &[], Duration::from_secs(120)) {
        assert_ok(&out, "stress");
    }
}

/// A program may `dlopen` the library rather than preload it: its
/// thread-locals must not need the static TLS block (an initial-exec slot
/// marked the library `STATIC_TLS`, and `dlopen` then failed with "cannot
/// allocate memory in static TLS block").
#[test]
fn dlopened_library_serves_threads() {
    let Some(bin) = program() else {
        return;
    };
    let out = Command::new(bin)
        .arg("dlopen")
        .arg(library())
        .output()
        .unwrap();
    assert_ok(&out, "malloc through a dlopened libstrata.so");
}
