//! Peak and final RSS of one fixed workload under each allocator.
//!
//! The parent re-executes itself once per allocator with
//! `STRATA_RSS_CHILD=<name>`; the child runs the workload through that
//! allocator's `GlobalAlloc` methods directly (the process's own global
//! allocator stays `System`, used only for a few small `Vec`s of pointers)
//! and prints its VmHWM / VmRSS from `/proc/self/status`.
//!
//! Workload (per child): 2 threads each build 100 MiB of live blocks of
//! mixed sizes 16..=4096 B (log-uniform, every byte written), free a random
//! 90 %, then churn 50 MiB more (allocate in 5 MiB batches and free), and
//! exit; the 10 % survivors stay live in the main thread while the final RSS
//! is read.
//!
//! Run: `CARGO_TARGET_DIR=target/bench cargo bench --bench rss_peak`

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::time::Instant;

use mimalloc::MiMalloc;
use snmalloc_rs::SnMalloc;
use strata_alloc::Strata;
use tikv_jemallocator::Jemalloc;

static STRATA: Strata = Strata;
static MIMALLOC: MiMalloc = MiMalloc;
static JEMALLOC: Jemalloc = Jemalloc;
static SNMALLOC: SnMalloc = SnMalloc;
static SYSTEM: System = System;

const ENV: &str = "STRATA_RSS_CHILD";
const ALLOCATORS: [&str; 5] = ["strata", "mimalloc", "jemalloc", "snmalloc", "system"];
const THREADS: usize = 2;
const BUILD_PER_THREAD: usize = 100 << 20;
const CHURN_PER_THREAD: usize = 50 << 20;
const CHURN_BATCH: usize = 5 << 20;
const ALIGN: usize = 8;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Log-uniform 16..=4096: pick an octave, then a size inside it.
    fn size(&mut self) -> usize {
        let lo = 16usize << (self.next() % 8);
        (lo + (self.next() as usize % (lo + 1))).min(4096)
    }
}

/// Reads a `kB` field such as `VmHWM` from /proc/self/status.
fn status_kb(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Allocates a block of `size`, writes every byte, stores the size in the
/// first word.
fn alloc_block<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    let l = Layout::from_size_align(size, ALIGN).expect("layout");
    // SAFETY: size >= 16, non-zero.
    let p = unsafe { a.alloc(l) };
    assert!(!p.is_null(), "allocation of {size} B failed");
    // SAFETY: `p` holds `size` >= 16 bytes, aligned for usize.
    unsafe {
        p.write_bytes(0xa5, size);
        p.cast::<usize>().write(size);
    }
    p
}

/// # Safety
/// `p` must be a live block from `alloc_block(a, _)`.
unsafe fn free_block<A: GlobalAlloc>(a: &A, p: *mut u8) {
    // SAFETY: the first word is the size the block was allocated with.
    unsafe {
        let size = p.cast::<usize>().read();
        a.dealloc(p, Layout::from_size_align_unchecked(size, ALIGN));
    }
}

/// One thread's share; returns the surviving 10 % (as addresses, to cross
/// threads).
fn worker<A: GlobalAlloc>(a: &A, seed: u64) -> Vec<usize> {
    let mut rng = Rng(seed);
    let mut live = Vec::new();
    let mut bytes = 0;
    while bytes < BUILD_PER_THREAD {
        let size = rng.size();
        live.push(alloc_block(a, size));
        bytes += size;
    }
    let mut keep = Vec::with_capacity(live.len() / 9);
    for p in live.drain(..) {
        if rng.next() % 10 == 0 {
            keep.push(p as usize);
        } else {
            // SAFETY: `p` is a live block from `alloc_block`.
            unsafe { free_block(a, p) };
        }
    }
    let mut churned = 0;
    while churned < CHURN_PER_THREAD {
        let mut batch = 0;
        while batch < CHURN_BATCH {
            let size = rng.size();
            live.push(alloc_block(a, size));
            batch += size;
        }
        for p in live.drain(..) {
            // SAFETY: `p` is a live block from `alloc_block`.
            unsafe { free_block(a, p) };
        }
        churned += batch;
    }
    keep
}

fn child<A: GlobalAlloc + Sync>(name: &str, a: &'static A) {
    let base = status_kb("VmRSS");
    let start = Instant::now();
    let survivors: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| s.spawn(move || worker(a, 0x9e37_79b9 + t as u64)))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let ms = start.elapsed().as_millis();
    let peak = status_kb("VmHWM");
    let final_rss = status_kb("VmRSS");
    let released = if name == "strata" {
        strata_alloc::release_memory();
        status_kb("VmRSS")
    } else {
        final_rss
    };
    println!("RSS {name} {base} {peak} {final_rss} {released} {ms}");
    for p in survivors {
        // SAFETY: every survivor is a live block from `alloc_block(a, _)`.
        unsafe { free_block(a, p as *mut u8) };
    }
}

/// One child's report, in kB (and ms).
struct Row {
    name: &'static str,
    base: usize,
    peak: usize,
    fin: usize,
    released: usize,
    ms: usize,
}

fn mib(kb: usize) -> f64 {
    kb as f64 / 1024.0
}

fn main() {
    if let Ok(name) = std::env::var(ENV) {
        match name.as_str() {
            "strata" => child(&name, &STRATA),
            "mimalloc" => child(&name, &MIMALLOC),
            "jemalloc" => child(&name, &JEMALLOC),
            "snmalloc" => child(&name, &SNMALLOC),
            "system" => child(&name, &SYSTEM),
            other => panic!("unknown allocator {other}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too:
    // only do the (slow) work under `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut rows: Vec<Row> = Vec::new();
    for name in ALLOCATORS {
        let out = Command::new(&exe)
            .env(ENV, name)
            .output()
            .expect("spawn child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("RSS "));
        match (out.status.success(), line) {
            (true, Some(line)) => {
                let f: Vec<usize> = line
                    .split_whitespace()
                    .skip(2)
                    .map(|v| v.parse().unwrap())
                    .collect();
                rows.push(Row {
                    name,
                    base: f[0],
                    peak: f[1],
                    fin: f[2],
                    released: f[3],
                    ms: f[4],
                });
            }
            _ => eprintln!(
                "{name}: child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    let best = |col: fn(&Row) -> usize| {
        rows.iter()
            .filter(|r| r.name == "mimalloc" || r.name == "jemalloc")
            .map(col)
            .min()
            .unwrap_or(1)
            .max(1) as f64
    };
    let best_peak = best(|r| r.peak);
    let best_final = best(|r| r.fin);
    println!(
        "\nWorkload: {THREADS} threads x ({} MiB build, free 90 %, {} MiB churn), 10 % kept live",
        BUILD_PER_THREAD >> 20,
        CHURN_PER_THREAD >> 20
    );
    println!("Ratios are vs the smaller of mimalloc/jemalloc (lower is better).\n");
    println!("| allocator | base MiB | peak MiB (VmHWM) | final MiB | after release_memory | time ms | peak ratio | final ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let Row {
            name,
            base,
            peak,
            fin,
            released,
            ms,
        } = *r;
        let rel = if name == "strata" {
            format!("{:.1}", mib(released))
        } else {
            "-".into()
        };
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {rel} | {ms} | {:.2} | {:.2} |",
            mib(base),
            mib(peak),
            mib(fin),
            peak as f64 / best_peak,
            fin as f64 / best_final
        );
    }
}
