//! A tour of strata: the allocator serving a multi-threaded program and
//! giving memory back to the OS, profiling where memory goes, then the
//! cycle collector at work — recorded as a memory-over-time plot.
//!
//! Run it with `cargo run --release --example tour`. It writes its files
//! to `target/strata-tour/` under the current folder: `memory.svg` (the
//! plot), `flamegraph.svg` and `heap.pb.gz` (sampled allocation sites, as
//! a flamegraph and a pprof profile), `cycle.dot` (a Graphviz graph of a
//! cycle) and `backrefs.svg` (what keeps the cycle alive, drawn without
//! Graphviz). Section 6 also shows `#[strata_alloc::profile]`'s
//! line-by-line tables; section 11 the thread-safe `strata_gc::sync`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strata_alloc::plot::Recorder;
use strata_alloc::profile::lines;
use strata_alloc::profile::sampling::{self, Sampling, Weight};
use strata_alloc::profile::{self, Counting, Snapshot};
use strata_alloc::Strata;
use strata_gc::{sync, Finalize, Gc, Phase, Trace};

#[global_allocator]
static GLOBAL: Strata = Strata;

const MIB: f64 = (1 << 20) as f64;

/// Where the tour writes its files (relative to the current folder, like
/// cargo's `target/`).
const OUT_DIR: &str = "target/strata-tour";

/// How often the memory plot samples the allocator's stats.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// Prints a section heading ("7. ...") and marks it on the memory plot
/// ("section 7: ...", which the plot's own mark numbers do not confuse).
fn heading(recorder: &Recorder, title: &str) {
    match title.split_once(". ") {
        Some((number, rest)) => recorder.mark(format!("section {number}: {rest}")),
        None => recorder.mark(title),
    }
    println!("\n== {title} ==");
}

/// A progress bar for a long step, redrawn in place on stderr when stderr
/// is a terminal; either way the step ends with one line on stdout, so a
/// log or a CI run reads the same without the bar.
struct Progress {
    what: &'static str,
    total: usize,
    live: bool,
    shown: Option<usize>,
}

impl Progress {
    const WIDTH: usize = 30;

    fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total: total.max(1),
            live: std::io::stderr().is_terminal(),
            shown: None,
        }
    }

    /// Shows `done` of the total (redraws only when the bar changes).
    fn set(&mut self, done: usize) {
        let filled = done.min(self.total) * Self::WIDTH / self.total;
        if !self.live || self.shown == Some(filled) {
            return;
        }
        self.shown = Some(filled);
        let mut err = std::io::stderr().lock();
        // Progress is decoration: a failed write to stderr is ignored.
        let _ = write!(
            err,
            "\r  {} [{}{}] {:>3}%",
            self.what,
            "#".repeat(filled),
            ".".repeat(Self::WIDTH - filled),
            filled * 100 / Self::WIDTH
        );
        let _ = err.flush();
    }

    /// Clears the bar and prints the step's result line.
    fn finish(self, line: &str) {
        if self.live {
            // Carriage return, then erase the line (ANSI EL).
            eprint!("\r\x1b[2K");
        }
        println!("  {line}");
    }
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

fn allocator_tour(recorder: &Recorder) {
    heading(recorder, "1. strata-alloc is the global allocator");
    println!("  #[global_allocator] static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;");
    println!(
        "  {} size classes up to {} KiB; larger blocks map straight from the OS",
        strata_alloc::NUM_CLASSES,
        strata_alloc::MAX_SMALL_SIZE >> 10
    );
    summary("at start");

    heading(recorder, "2. four threads allocate 256 MiB of small blocks");
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
    let mut progress = Progress::new("allocating", 256 << 20);
    let mut received = 0;
    let mut batches: Vec<Vec<Box<[u8]>>> = Vec::new();
    for batch in rx {
        received += batch.iter().map(|b| b.len()).sum::<usize>();
        progress.set(received);
        batches.push(batch);
    }
    for w in workers {
        w.join().unwrap();
    }
    let blocks: usize = batches.iter().map(Vec::len).sum();
    progress.finish(&format!(
        "{blocks} blocks ({}) in {:.0?} (the threads have exited; their pools are abandoned)",
        mib(received),
        start.elapsed()
    ));
    summary("after allocating");

    heading(
        recorder,
        "3. the main thread frees it all; memory goes back to the OS",
    );
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

    heading(
        recorder,
        "4. a 64 MiB buffer grows by mremap, then is unmapped on free",
    );
    let start = Instant::now();
    let mut big: Vec<u8> = Vec::new();
    for _ in 0..64 {
        big.extend_from_slice(&[1u8; 1 << 20]);
    }
    println!("  grew to {} in {:.0?}", mib(big.len()), start.elapsed());
    summary("with the buffer");
    drop(big);
    summary("after dropping it");

    heading(
        recorder,
        "5. the stats table (also printed at exit with STRATA_SHOW_STATS=1)",
    );
    let keep: Vec<Vec<u64>> = (0..2000).map(|i| vec![i; 1 + i as usize % 300]).collect();
    print!("{}", strata_alloc::stats());
    drop(keep);
    strata_alloc::release_memory();
    summary("after release_memory()");
}

/// A loader's pattern: read every entry into one text buffer, then keep
/// the parsed entries. The buffer counts in the peak, not the increment.
fn build_cache(entries: usize) -> HashMap<u64, Box<str>> {
    let text: String = (0..entries)
        .map(|i| {
            format!(
                "{i}=value-{:08x}-{}\n",
                i.wrapping_mul(2_654_435_761) as u32,
                "x".repeat(i % 64)
            )
        })
        .collect();
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.parse().unwrap_or(0), value.into()))
        .collect()
}

fn profile_tour(recorder: &Recorder) {
    heading(
        recorder,
        "6. where did my memory go? profile scopes and snapshot diffs",
    );
    println!("  let _counting = profile::Counting::start();   // tracemalloc.start()");
    let counting = Counting::start();
    let before = Snapshot::take();
    let (cache, report) = profile::measure(|| build_cache(50_000));
    recorder.mark("cache built");
    println!("  profile::measure(|| build_cache(50_000)):");
    println!("    {report}");
    println!(
        "    (the increment is what the cache keeps; the peak adds the text it was parsed from)"
    );

    let diff = before.diff(&Snapshot::take());
    println!("  before.diff(&Snapshot::take()): what changed, by size class, biggest first");
    const ROWS: usize = 8;
    let table = diff.to_string();
    let lines: Vec<&str> = table.lines().collect();
    for line in lines.iter().take(1 + ROWS.min(diff.rows.len())) {
        println!("    {line}");
    }
    if diff.rows.len() > ROWS {
        println!("    ... {} more rows", diff.rows.len() - ROWS);
    }
    if let Some(last) = lines.last() {
        println!("    {last}");
    }

    let ((), report) = profile::measure(|| drop(cache));
    recorder.mark("cache dropped");
    println!("  profile::measure(|| drop(cache)):");
    println!("    {report}");
    drop(counting);
    sampled_sites();
    line_profiles();
}

/// Python's lesson "a generator uses less memory than a list", line by
/// line: the list holds every word until the function returns, the
/// iterator one word at a time.
#[strata_alloc::profile]
fn longest_from_list(n: usize) -> usize {
    let words: Vec<String> = (0..n).map(|i| format!("word-{i:06}")).collect();
    let longest = words.iter().map(|w| w.len()).max().unwrap_or(0);
    longest
}

/// The same with an iterator (Rust's generator): nothing is kept.
#[strata_alloc::profile]
fn longest_from_iterator(n: usize) -> usize {
    let words = (0..n).map(|i| format!("word-{i:06}"));
    let longest = words.map(|w| w.len()).max().unwrap_or(0);
    longest
}

/// `#[strata_alloc::profile]` tables, collected rather than printed to
/// stderr.
fn line_profiles() {
    println!("  #[strata_alloc::profile] on two functions: memory_profiler's table, per call");
    let before = lines::set_output(lines::Output::Collect);
    let from_list = longest_from_list(100_000);
    let from_iterator = longest_from_iterator(100_000);
    lines::set_output(before);
    assert_eq!(from_list, from_iterator);
    for report in lines::take_reports() {
        println!();
        for line in report.to_string().lines() {
            if line.is_empty() {
                println!();
            } else {
                println!("    {line}");
            }
        }
    }
    println!();
    println!("  (the list holds every word until the function returns; the iterator allocates");
    println!("   as much in all, but holds one word at a time)");
}

/// Which lines hold the memory: sampled stacks, shown as a table and
/// written as a flamegraph and a pprof profile.
fn sampled_sites() {
    println!("  let _sampling = Sampling::with_interval(64 << 10);   // sampled stacks, like jemalloc's prof");
    let sampling = Sampling::with_interval(64 << 10);
    let cache = build_cache(50_000);
    let report = sampling::Report::take();
    drop(sampling);
    println!("  Report::take(): the sites holding the most live bytes");
    for line in report.display(3, 3).to_string().lines() {
        println!("    {line}");
    }
    drop(cache);
    let dir = Path::new(OUT_DIR);
    let svg = dir.join("flamegraph.svg");
    let pb = dir.join("heap.pb.gz");
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&svg, report.flamegraph_svg(Weight::LiveBytes)))
        .and_then(|_| std::fs::write(&pb, report.pprof()));
    match written {
        Ok(()) => println!(
            "  wrote {} (open in a browser) and {} (pprof -http=: {})",
            svg.display(),
            pb.display(),
            pb.display()
        ),
        Err(e) => println!("  could not write the flamegraph or the profile: {e}"),
    }
}

/// A graph node that can take part in cycles.
#[derive(Trace)]
struct Node {
    id: usize,
    edges: RefCell<Vec<Gc<Node>>>,
}

/// An object whose finalizer runs while its cycle is still intact.
#[derive(Trace)]
#[trace(finalize)]
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

fn collector_tour(recorder: &Recorder) {
    // Every full collection becomes a mark on the memory plot (the young
    // ones run hundreds of times a second and would hide the rest).
    let marks = recorder.handle();
    let gc_marks = strata_gc::add_callback(move |phase, info| {
        if phase == Phase::Stop && info.generation == 2 {
            marks.mark(format!("gen 2 collection ({} unreachable)", info.collected));
        }
    });

    heading(
        recorder,
        "7. strata-gc: Gc<T> frees acyclic data at once, like Rc",
    );
    let text = Gc::new(String::from("not tracked: a String can hold no Gc"));
    println!(
        "  Gc<String> tracked by the collector? {}",
        strata_gc::is_tracked(&text)
    );
    drop(text);

    heading(recorder, "8. cycles: generations, thresholds and collect()");
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
    let mut progress = Progress::new("making garbage cycles", 100_000);
    for i in 0..100_000 {
        if i % 1000 == 0 {
            progress.set(i);
        }
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
    progress.finish(&format!(
        "made 100000 garbage 2-cycles in {:.0?}; automatic collections freed them ({} callbacks saw garbage)",
        start.elapsed(),
        calls.get()
    ));
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

    heading(
        recorder,
        "9. what keeps a cycle alive: referrers and a Graphviz DOT file",
    );
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
    let dir = Path::new(OUT_DIR);
    let dot = strata_gc::dot(&a, 3);
    // Drawn in Rust (feature `svg`): no Graphviz needed to look at it.
    let drawn = strata_gc::svg(&strata_gc::backrefs_dot(&a, 3))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    match std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(dir.join("cycle.dot"), dot))
        .and_then(|_| std::fs::write(dir.join("backrefs.svg"), drawn?))
    {
        Ok(()) => println!(
            "  wrote {} (render: dot -Tsvg) and {} (what keeps node {} alive, objgraph's show_backrefs)",
            dir.join("cycle.dot").display(),
            dir.join("backrefs.svg").display(),
            a.id
        ),
        Err(e) => println!("  could not write the graph files: {e}"),
    }
    drop((a, b, c));
    println!(
        "  dropped our handles; collect() frees the 3-cycle: {}",
        strata_gc::collect()
    );

    heading(
        recorder,
        "10. finalizers and weak references (PEP 442 order)",
    );
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
    gc_marks.remove();
}

/// A node of a graph that threads share: its links sit behind a `Mutex`.
#[derive(Trace)]
struct Peer {
    id: usize,
    links: Mutex<Vec<sync::Gc<Peer>>>,
}

fn peer(id: usize) -> sync::Gc<Peer> {
    sync::Gc::new(Peer {
        id,
        links: Mutex::new(Vec::new()),
    })
}

fn sync_tour(recorder: &Recorder) {
    heading(
        recorder,
        "11. strata_gc::sync: two threads share a cyclic graph, collected while they run",
    );
    const RING: usize = 10_000;
    let first = peer(0);
    let mut last = first.clone();
    for id in 1..RING {
        let next = peer(id);
        last.links.lock().unwrap().push(next.clone());
        last = next;
    }
    last.links.lock().unwrap().push(first.clone());
    drop(last);
    let before = sync::stats();
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let mut at = first.clone();
            thread::spawn(move || {
                let mut chords = 0;
                for step in 0..50_000 {
                    let next = at.links.lock().unwrap()[0].clone();
                    if step % 100 == t {
                        // A chord from here back to where this walk is:
                        // more cycles through the ring.
                        next.links.lock().unwrap().push(at.clone());
                        chords += 1;
                    }
                    if step % 10 == 0 {
                        // A short-lived two-peer cycle, garbage at once.
                        let (a, b) = (peer(usize::MAX), peer(usize::MAX));
                        a.links.lock().unwrap().push(b.clone());
                        b.links.lock().unwrap().push(a);
                    }
                    at = next;
                }
                chords
            })
        })
        .collect();
    let chords: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    // Waits for an automatic collection still running, then sweeps the rest.
    let swept = sync::collect();
    println!(
        "  a ring of {RING} peers walked by 2 threads (cloning each link), {chords} chords added, 10 000 two-peer cycles dropped"
    );
    println!(
        "  collect() after the walks: {swept} objects the background collector had not reached"
    );
    println!("  the ring survived: we still hold peer #{}", first.id);
    drop(first);
    let found = sync::collect();
    let after = sync::stats();
    println!("  dropped the last handle: collect() -> {found} (the ring, with its chords)");
    println!(
        "  automatic collections during this section: {}, finding {} objects",
        after.collections - before.collections - 2,
        after.collected - before.collected - swept - found
    );
    println!(
        "  longest a mutator could wait on a lock the collector held: {:?}; on an upgrade: {:?}",
        after.longest_lock_hold, after.longest_decision
    );
}

fn plot_tour(mut recorder: Recorder) {
    heading(&recorder, "12. memory over time: the tour as a plot");
    recorder.stop();
    let samples = recorder.samples();
    let peak = recorder.peak().expect("the recorder sampled at its start");
    println!(
        "  let recorder = plot::Recorder::sampling_every({SAMPLE_EVERY:?});   // a background thread"
    );
    println!(
        "  {} samples over {:.2} s and {} marks (sections, full collections)",
        samples.len(),
        recorder.elapsed().as_secs_f64(),
        recorder.marks().len()
    );
    println!(
        "  peaks: RSS {}, committed {}, in use {}",
        mib(peak.resident_bytes),
        mib(peak.committed_bytes),
        mib(peak.in_use_bytes)
    );
    let path = Path::new(OUT_DIR).join("memory.svg");
    match std::fs::create_dir_all(OUT_DIR).and_then(|_| recorder.write_svg(&path)) {
        Ok(()) => println!("  wrote {} (open it in a browser)", path.display()),
        Err(e) => println!("  {e}"),
    }
}

fn main() {
    let recorder = Recorder::sampling_every(SAMPLE_EVERY);
    allocator_tour(&recorder);
    profile_tour(&recorder);
    collector_tour(&recorder);
    sync_tour(&recorder);
    plot_tour(recorder);
}
