//! A tour of strata: the allocator serving a multi-threaded program and
//! giving memory back to the OS, then the cycle collector at work.
//!
//! Run it with `cargo run --release --example tour`.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

const MIB: f64 = (1 << 20) as f64;

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn heading(title: &str) {
    println!("\n== {title} ==");
}

fn summary(label: &str) {
    let s = strata_alloc::stats();
    println!(
        "  {label:<28} in use {:>10}   committed {:>10}   RSS {:>10}   mapped {:>10}",
        mib(s.in_use_bytes()),
        mib(s.committed_bytes()),
        mib(s.resident_bytes),
        mib(s.mapped_bytes())
    );
}

fn allocator_tour() {
    heading("1. strata-alloc is the global allocator");
    println!("  #[global_allocator] static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;");
    println!(
        "  {} size classes up to {} KiB; larger blocks map straight from the OS",
        strata_alloc::NUM_CLASSES,
        strata_alloc::MAX_SMALL_SIZE >> 10
    );
    summary("at start");

    heading("2. four threads allocate 256 MiB of small blocks");
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let workers: Vec<_> = (0..4u8)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut made = 0usize;
                let mut batch = Vec::with_capacity(8192);
                let mut i = t as usize;
                while made < 64 << 20 {
                    let len = 16 + (i * 131) % 2000;
                    batch.push(vec![t; len].into_boxed_slice());
                    made += len;
                    i += 1;
                    if batch.len() == 8192 {
                        tx.send(std::mem::take(&mut batch)).unwrap();
                    }
                }
                tx.send(batch).unwrap();
            })
        })
        .collect();
    drop(tx);
    let mut batches: Vec<Vec<Box<[u8]>>> = rx.into_iter().collect();
    for w in workers {
        w.join().unwrap();
    }
    let blocks: usize = batches.iter().map(Vec::len).sum();
    println!("  {blocks} blocks in {:.0?} (the threads have exited; their pools are abandoned)", start.elapsed());
    summary("after allocating");

    heading("3. the main thread frees it all; memory goes back to the OS");
    let start = Instant::now();
    batches.clear();
    println!("  freed {blocks} blocks of exited threads in {:.0?}", start.elapsed());
    summary("right after freeing");
    for step in 1..=5 {
        thread::sleep(Duration::from_millis(20));
        // Ordinary work: any allocator slow path runs due purges.
        let scratch: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        drop(scratch);
        summary(&format!("{} ms later", step * 20));
    }

    heading("4. a 64 MiB buffer grows by mremap, then is unmapped on free");
    let start = Instant::now();
    let mut big: Vec<u8> = Vec::new();
    for _ in 0..64 {
        big.extend_from_slice(&[1u8; 1 << 20]);
    }
    println!("  grew to {} in {:.0?}", mib(big.len()), start.elapsed());
    summary("with the buffer");
    drop(big);
    summary("after dropping it");

    heading("5. the stats table (also printed at exit with STRATA_SHOW_STATS=1)");
    let keep: Vec<Vec<u64>> = (0..2000).map(|i| vec![i; 1 + i as usize % 300]).collect();
    print!("{}", strata_alloc::stats());
    drop(keep);
    strata_alloc::release_memory();
    summary("after release_memory()");
}

fn main() {
    allocator_tour();
}
