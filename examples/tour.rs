//! A tour of strata: the allocator serving a multi-threaded program and
//! giving memory back to the OS, then the cycle collector at work.
//!
//! Run it with `cargo run --release --example tour`.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use std::cell::RefCell;

use strata_alloc::Strata;
use strata_gc::{Finalize, Gc, Phase, Trace};

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
    println!(
        "  {blocks} blocks in {:.0?} (the threads have exited; their pools are abandoned)",
        start.elapsed()
    );
    summary("after allocating");

    heading("3. the main thread frees it all; memory goes back to the OS");
    let start = Instant::now();
    batches.clear();
    println!(
        "  freed {blocks} blocks of exited threads in {:.0?}",
        start.elapsed()
    );
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

/// A graph node that can take part in cycles.
#[derive(Trace, Finalize)]
struct Node {
    id: usize,
    edges: RefCell<Vec<Gc<Node>>>,
}

/// An object whose finalizer runs while its cycle is still intact.
#[derive(Trace)]
struct Resource {
    name: &'static str,
    peer: RefCell<Option<Gc<Resource>>>,
}

impl Finalize for Resource {
    fn finalize(&self) {
        let peer = self.peer.borrow().as_ref().map(|p| p.name).unwrap_or("-");
        println!(
            "  finalize {} (its peer {} is still intact)",
            self.name, peer
        );
    }
}

fn collector_tour() {
    heading("6. strata-gc: Gc<T> frees acyclic data at once, like Rc");
    let text = Gc::new(String::from("not tracked: a String can hold no Gc"));
    println!(
        "  Gc<String> tracked by the collector? {}",
        strata_gc::is_tracked(&text)
    );
    drop(text);

    heading("7. cycles: generations, thresholds and collect()");
    strata_gc::collect();
    let calls = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let seen = calls.clone();
    let callback = strata_gc::add_callback(move |phase, info| {
        if phase == Phase::Stop && info.collected > 0 {
            seen.set(seen.get() + 1);
        }
    });
    println!(
        "  thresholds {:?}, counts {:?}",
        strata_gc::threshold(),
        strata_gc::count()
    );
    let start = Instant::now();
    for i in 0..100_000 {
        // Two-node cycles that become garbage at once.
        let a = Gc::new(Node {
            id: i,
            edges: RefCell::new(Vec::new()),
        });
        let b = Gc::new(Node {
            id: i + 1,
            edges: RefCell::new(vec![a.clone()]),
        });
        a.edges.borrow_mut().push(b);
    }
    println!(
        "  made 100000 garbage 2-cycles in {:.0?}; automatic collections freed them ({} callbacks saw garbage)",
        start.elapsed(),
        calls.get()
    );
    let keep: Vec<Gc<Node>> = (0..10_000)
        .map(|i| {
            Gc::new(Node {
                id: i,
                edges: RefCell::new(Vec::new()),
            })
        })
        .collect();
    for pair in keep.windows(2) {
        pair[0].edges.borrow_mut().push(pair[1].clone());
    }
    let cyclic = Gc::new(Node {
        id: 0,
        edges: RefCell::new(Vec::new()),
    });
    cyclic.edges.borrow_mut().push(cyclic.clone());
    drop(cyclic);
    println!(
        "  counts now {:?}; collect() finds {} unreachable object(s)",
        strata_gc::count(),
        strata_gc::collect()
    );
    for (generation, s) in strata_gc::stats().iter().enumerate() {
        println!(
            "  generation {generation}: {:>5} collections, {:>7} collected, {:.1?} total",
            s.collections, s.collected, s.duration
        );
    }
    println!(
        "  the 10000 live nodes sit in generation {:?}",
        strata_gc::generation_of(&keep[0])
    );
    println!(
        "  live tracked objects by type: {:?}",
        strata_gc::objects_by_type()
    );
    println!(
        "  (first node id {}, last id {})",
        keep[0].id,
        keep[keep.len() - 1].id
    );
    drop(keep);
    callback.remove();

    heading("8. what keeps a cycle alive: referrers and a Graphviz DOT file");
    let a = Gc::new(Node {
        id: 1,
        edges: RefCell::new(Vec::new()),
    });
    let b = Gc::new(Node {
        id: 2,
        edges: RefCell::new(vec![a.clone()]),
    });
    let c = Gc::new(Node {
        id: 3,
        edges: RefCell::new(vec![b.clone()]),
    });
    a.edges.borrow_mut().push(c.clone()); // a -> c -> b -> a
    let referrers: Vec<String> = strata_gc::referrers(&a)
        .iter()
        .map(|o| o.type_name.to_string())
        .collect();
    println!(
        "  node {} is referred to by {:?} (node {} among them)",
        a.id, referrers, b.id
    );
    let dir = std::path::Path::new("target/strata-tour");
    match std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(dir.join("cycle.dot"), strata_gc::dot(&a, 3)))
    {
        Ok(()) => println!(
            "  wrote {} (render: dot -Tsvg)",
            dir.join("cycle.dot").display()
        ),
        Err(e) => println!("  could not write the DOT file: {e}"),
    }
    drop((a, b, c));
    println!(
        "  dropped our handles; collect() frees the 3-cycle: {}",
        strata_gc::collect()
    );

    heading("9. finalizers and weak references (PEP 442 order)");
    let a = Gc::new(Resource {
        name: "socket",
        peer: RefCell::new(None),
    });
    let b = Gc::new(Resource {
        name: "buffer",
        peer: RefCell::new(Some(a.clone())),
    });
    *a.peer.borrow_mut() = Some(b.clone());
    let watch = Gc::downgrade(&a);
    drop((a, b));
    println!(
        "  weak pointer alive before collect: {}",
        watch.upgrade().is_some()
    );
    let found = strata_gc::collect();
    println!(
        "  collect() -> {found}; weak pointer alive after: {}",
        watch.upgrade().is_some()
    );
    summary("allocator after the GC tour");
}

fn main() {
    allocator_tour();
    collector_tour();
}
