//! `strata_alloc::profile::sampling` through the global allocator: a known
//! amount allocated at a distinct call site is found first, with estimates
//! within a tolerance; frees take it off; threads; large blocks; nothing
//! is sampled when sampling is off. The `overhead` test (ignored; run it
//! with `--release -- --ignored --nocapture overhead`) measures what
//! counting and sampling cost an allocation loop.

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

use strata_alloc::profile::{self, sampling::Report, sampling::Sampling};
use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// Sampling sessions are process-wide: run the tests one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small interval, so that a few MiB give hundreds of samples.
const INTERVAL: usize = 8 << 10;

/// Relative tolerance of estimates: at least four standard deviations
/// for the sample counts used here (200 samples or more: a relative
/// deviation of at most 7 %).
const TOLERANCE: f64 = 0.25;

fn assert_close(estimate: u64, exact: usize, what: &str, report: &Report) {
    let err = (estimate as f64 - exact as f64).abs() / exact as f64;
    assert!(
        err <= TOLERANCE,
        "{what}: estimated {estimate}, exact {exact} ({:.1} % off)\n{report}",
        err * 100.0
    );
}

/// Allocates `n` blocks of `size` bytes into `out` (reserved by the
/// caller, so that the only allocations are the blocks); evaluates to
/// their total usable bytes. A macro, so that the allocating code is the
/// site function's own.
macro_rules! fill {
    ($out:expr, $n:expr, $size:expr) => {{
        let layout = Layout::from_size_align($size, 8).unwrap();
        let mut bytes = 0;
        for _ in 0..$n {
            // SAFETY: non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: a live block of ours.
            bytes += unsafe { strata_alloc::usable_size(p) };
            $out.push(p);
        }
        black_box(bytes)
    }};
}

fn free_all(ptrs: &mut Vec<*mut u8>, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for p in ptrs.drain(..) {
        // SAFETY: allocated by `fill` with this layout.
        unsafe { dealloc(p, layout) };
    }
}

#[inline(never)]
fn sampling_site_alpha_unique(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_site_beta_unique(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_site_gamma_unique(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_site_large_unique(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_site_export_unique(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_thread_site_0(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_thread_site_1(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

#[inline(never)]
fn sampling_thread_site_2(out: &mut Vec<*mut u8>, n: usize, size: usize) -> usize {
    fill!(out, n, size)
}

/// The one site whose stack mentions `name`.
fn site<'a>(report: &'a Report, name: &str) -> &'a strata_alloc::profile::sampling::Site {
    let sites = report.sites_mentioning(name);
    assert!(
        sites.len() == 1,
        "{} sites mention {name}\n{report}",
        sites.len()
    );
    sites[0]
}

#[test]
fn a_known_site_comes_first_with_its_bytes() {
    let _guard = serial();
    const N: usize = 2000;
    const SIZE: usize = 4000;
    let mut ptrs = Vec::with_capacity(N);
    let sampling = Sampling::with_interval(INTERVAL);
    assert_eq!(Sampling::interval(), Some(INTERVAL));
    assert!(profile::is_counting());
    let bytes = sampling_site_alpha_unique(&mut ptrs, N, SIZE);
    let report = Report::take();
    let top = &report.sites[0];
    assert!(top.mentions("sampling_site_alpha_unique"), "{report}");
    let location = top.location().expect("a resolved frame");
    assert!(
        location
            .name
            .as_deref()
            .is_some_and(|n| n.contains("sampling_site_alpha_unique")),
        "the site is named by its function, not by the allocator: {location}\n{report}"
    );
    assert_close(top.live_bytes, bytes, "live bytes", &report);
    assert_close(top.allocated_bytes, bytes, "allocated bytes", &report);
    assert_close(top.live_blocks, N, "live blocks", &report);
    assert_eq!(top.untracked_samples, 0);
    assert!(top.samples > 100, "{report}");
    let text = report.to_string();
    assert!(text.contains("sampling_site_alpha_unique"), "{text}");
    assert!(
        !text.contains("strata_alloc::"),
        "allocator frames shown:\n{text}"
    );

    // Frees take the site's blocks off: half of them, then all.
    let half = ptrs.split_off(N / 2);
    let mut half = half;
    free_all(&mut half, SIZE);
    let after_half = Report::take();
    let alpha = site(&after_half, "sampling_site_alpha_unique");
    assert_close(
        alpha.live_bytes,
        bytes / 2,
        "live bytes after half",
        &after_half,
    );
    assert_eq!(alpha.allocated_bytes, top.allocated_bytes);
    let diff = report.diff(&after_half);
    assert!(
        diff.rows[0].site.mentions("sampling_site_alpha_unique"),
        "{diff}"
    );
    assert!(diff.rows[0].live_bytes_diff < 0, "{diff}");
    assert_eq!(diff.rows[0].allocated_bytes_diff, 0);
    println!("{diff}");

    free_all(&mut ptrs, SIZE);
    let after_all = Report::take();
    let alpha = site(&after_all, "sampling_site_alpha_unique");
    assert_eq!(alpha.live_bytes, 0, "{after_all}");
    assert_eq!(alpha.live_samples, 0);
    assert_eq!(alpha.samples, top.samples);
    drop(sampling);
    assert_eq!(Sampling::interval(), None);
}

#[test]
fn sites_are_told_apart_and_sorted() {
    let _guard = serial();
    let mut a = Vec::with_capacity(4000);
    let mut b = Vec::with_capacity(16000);
    let sampling = Sampling::with_interval(INTERVAL);
    // beta: 16000 x 1 KiB, 16 MiB; alpha: 4000 x 1 KiB, 4 MiB.
    let beta = sampling_site_beta_unique(&mut b, 16000, 1024);
    let alpha = sampling_site_alpha_unique(&mut a, 4000, 1024);
    let report = Report::take();
    assert!(
        report.sites[0].mentions("sampling_site_beta_unique"),
        "{report}"
    );
    assert_close(
        site(&report, "beta_unique").live_bytes,
        beta,
        "beta",
        &report,
    );
    assert_close(
        site(&report, "alpha_unique").live_bytes,
        alpha,
        "alpha",
        &report,
    );
    // beta's blocks freed: by allocated bytes it stays first, by live
    // bytes alpha overtakes it.
    free_all(&mut b, 1024);
    let report = Report::take();
    assert!(report.top_live(1)[0].mentions("alpha_unique"), "{report}");
    assert!(
        report.top_allocated(1)[0].mentions("beta_unique"),
        "{report}"
    );
    drop(sampling);
    free_all(&mut a, 1024);
}

#[test]
fn threads_are_sampled_and_their_blocks_freed_elsewhere() {
    let _guard = serial();
    type Site = fn(&mut Vec<*mut u8>, usize, usize) -> usize;
    const SITES: [(&str, Site); 3] = [
        ("sampling_thread_site_0", sampling_thread_site_0),
        ("sampling_thread_site_1", sampling_thread_site_1),
        ("sampling_thread_site_2", sampling_thread_site_2),
    ];
    let sampling = Sampling::with_interval(INTERVAL);
    let results: Vec<(Vec<usize>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = SITES
            .iter()
            .enumerate()
            .map(|(i, &(_, f))| {
                s.spawn(move || {
                    let n = 2000 * (i + 1);
                    let mut out = Vec::with_capacity(n);
                    let bytes = f(&mut out, n, 2000);
                    (out.into_iter().map(|p| p as usize).collect(), bytes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let report = Report::take();
    for ((name, _), (_, bytes)) in SITES.iter().zip(&results) {
        assert_close(site(&report, name).live_bytes, *bytes, name, &report);
    }
    // The biggest thread's site first.
    assert!(
        report.sites[0].mentions("sampling_thread_site_2"),
        "{report}"
    );
    for (ptrs, _) in results {
        let mut ptrs: Vec<*mut u8> = ptrs.into_iter().map(|p| p as *mut u8).collect();
        free_all(&mut ptrs, 2000);
    }
    let report = Report::take();
    for (name, _) in SITES {
        assert_eq!(site(&report, name).live_bytes, 0, "{report}");
    }
    drop(sampling);
}

#[test]
fn large_blocks_stand_for_themselves() {
    let _guard = serial();
    const SIZE: usize = 3 << 20;
    let mut ptrs = Vec::with_capacity(4);
    let sampling = Sampling::with_interval(INTERVAL);
    let bytes = sampling_site_large_unique(&mut ptrs, 4, SIZE);
    let report = Report::take();
    let large = site(&report, "sampling_site_large_unique");
    // Blocks 200 times the interval are always sampled, each for itself.
    assert_eq!(large.samples, 4);
    assert_eq!(large.live_bytes as usize, bytes, "{report}");
    assert_eq!(large.live_blocks, 4);
    free_all(&mut ptrs, SIZE);
    let report = Report::take();
    assert_eq!(site(&report, "sampling_site_large_unique").live_bytes, 0);
    drop(sampling);
}

#[test]
fn nothing_is_sampled_without_a_session() {
    let _guard = serial();
    assert_eq!(Sampling::interval(), None);
    let before = Sampling::samples_taken();
    let mut ptrs = Vec::with_capacity(2000);
    {
        // Counting alone does not sample.
        let _counting = profile::Counting::start();
        sampling_site_gamma_unique(&mut ptrs, 2000, 4000);
    }
    assert_eq!(Sampling::samples_taken(), before);
    let report = Report::take();
    assert_eq!(
        report.sites_mentioning("sampling_site_gamma_unique").len(),
        0
    );
    free_all(&mut ptrs, 4000);
    // Nor does anything once the session is over.
    drop(Sampling::with_interval(INTERVAL));
    let before = Sampling::samples_taken();
    sampling_site_gamma_unique(&mut ptrs, 2000, 4000);
    assert_eq!(Sampling::samples_taken(), before);
    free_all(&mut ptrs, 4000);
}

#[test]
fn a_new_session_starts_afresh_and_guards_nest() {
    let _guard = serial();
    let mut ptrs = Vec::with_capacity(1000);
    let outer = Sampling::with_interval(INTERVAL);
    sampling_site_beta_unique(&mut ptrs, 1000, 4000);
    // A nested guard joins the session (and keeps its interval).
    let inner = Sampling::with_interval(1 << 30);
    assert_eq!(Sampling::interval(), Some(INTERVAL));
    drop(inner);
    assert_eq!(Sampling::interval(), Some(INTERVAL));
    assert!(Report::take().sites_mentioning("beta_unique").len() == 1);
    drop(outer);
    free_all(&mut ptrs, 4000);
    let fresh = Sampling::with_interval(INTERVAL);
    let report = Report::take();
    assert_eq!(report.sites_mentioning("beta_unique").len(), 0, "{report}");
    drop(fresh);
}

#[inline(never)]
fn sampling_site_map_unique(n: u64) -> std::collections::HashMap<u64, String> {
    let map = (0..n)
        .map(|i| (i, format!("value number {i:>40}")))
        .collect();
    // Not a tail call: this frame stays on the stack while the table grows.
    black_box(map)
}

#[test]
fn std_collections_are_attributed_to_their_caller() {
    let _guard = serial();
    let sampling = Sampling::with_interval(INTERVAL);
    // `measure` counts exactly what the closure keeps.
    let (map, exact) = profile::measure(|| sampling_site_map_unique(50_000));
    let report = Report::take();
    let sites = report.sites_mentioning("sampling_site_map_unique");
    // The strings and the table (grown by reallocation) are two or more
    // sites, each named by the function that built them.
    assert!(sites.len() >= 2, "{report}");
    for site in &sites {
        let location = site.location().and_then(|f| f.name.as_deref());
        assert!(
            location.is_some_and(|n| n.contains("sampling_site_map_unique")),
            "{location:?}\n{}",
            report.display(10, 12)
        );
    }
    let live: u64 = sites.iter().map(|s| s.live_bytes).sum();
    assert_close(live, exact.net_bytes as usize, "map live bytes", &report);
    drop(map);
    let report = Report::take();
    let live: u64 = report
        .sites_mentioning("sampling_site_map_unique")
        .iter()
        .map(|s| s.live_bytes)
        .sum();
    assert_eq!(live, 0, "{report}");
    drop(sampling);
}

#[inline(never)]
fn sampling_site_contended_unique(steps: usize, keep: usize, kept: &mut Vec<usize>) {
    let layout = Layout::from_size_align(48, 8).unwrap();
    for i in 0..steps {
        // SAFETY: non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        if i % (steps / keep) == 0 && kept.len() < keep {
            kept.push(p as usize);
        } else {
            // SAFETY: just allocated with this layout.
            unsafe { dealloc(p, layout) };
        }
    }
}

#[test]
fn every_allocation_sampled_by_racing_threads() {
    let _guard = serial();
    // An interval of one byte samples every block: the lock-free tables
    // take four threads recording and forgetting blocks at once, and
    // blocks freed by another thread.
    const STEPS: usize = 20_000;
    const KEEP: usize = 100;
    let sampling = Sampling::with_interval(1);
    let kept: Vec<Vec<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut kept = Vec::with_capacity(KEEP);
                    sampling_site_contended_unique(STEPS, KEEP, &mut kept);
                    kept
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let report = Report::take();
    let sites = report.sites_mentioning("sampling_site_contended_unique");
    let samples: u64 = sites.iter().map(|s| s.samples).sum();
    let live: u64 = sites.iter().map(|s| s.live_samples).sum();
    assert_eq!(samples, 4 * STEPS as u64, "{report}");
    assert_eq!(live, 4 * KEEP as u64, "{report}");
    let layout = Layout::from_size_align(48, 8).unwrap();
    for p in kept.into_iter().flatten() {
        // SAFETY: allocated with this layout and kept.
        unsafe { dealloc(p as *mut u8, layout) };
    }
    let report = Report::take();
    let live: u64 = report
        .sites_mentioning("sampling_site_contended_unique")
        .iter()
        .map(|s| s.live_bytes)
        .sum();
    assert_eq!(live, 0, "{report}");
    drop(sampling);
}

/// Allocation/free loop: a ring of 64 live blocks of varied small sizes;
/// each step frees the oldest and allocates a new one.
#[inline(never)]
fn churn(steps: usize) -> f64 {
    const RING: usize = 64;
    let mut ring: [(usize, usize); RING] = [(0, 0); RING];
    let start = Instant::now();
    for i in 0..steps {
        let slot = i % RING;
        let (p, size) = ring[slot];
        if p != 0 {
            // SAFETY: allocated below with this layout.
            unsafe { dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, 8)) };
        }
        let size = 16 + (i * 7919) % 496;
        // SAFETY: non-zero size.
        let p = unsafe { alloc(Layout::from_size_align_unchecked(size, 8)) };
        ring[slot] = (black_box(p) as usize, size);
    }
    let elapsed = start.elapsed();
    for (p, size) in ring {
        if p != 0 {
            // SAFETY: as above.
            unsafe { dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, 8)) };
        }
    }
    elapsed.as_nanos() as f64 / steps as f64
}

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture overhead"]
fn overhead() {
    let _guard = serial();
    const STEPS: usize = 4_000_000;
    const ROUNDS: usize = 7;
    let modes = [
        "off",
        "counting",
        "sampling 1 GiB",
        "sampling 512 KiB",
        "sampling 64 KiB",
    ];
    let mut times = vec![Vec::new(); modes.len()];
    churn(STEPS); // warm up
    for _ in 0..ROUNDS {
        for (mode, t) in times.iter_mut().enumerate() {
            let guard: Box<dyn std::any::Any> = match mode {
                0 => Box::new(()),
                1 => Box::new(profile::Counting::start()),
                // Practically no samples: the countdown and free checks.
                2 => Box::new(Sampling::with_interval(1 << 30)),
                3 => Box::new(Sampling::start()),
                _ => Box::new(Sampling::with_interval(64 << 10)),
            };
            t.push(churn(STEPS));
            drop(guard);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!("alloc+free pair, median of {ROUNDS} rounds of {STEPS} steps:");
    for (mode, m) in modes.iter().zip(&medians) {
        println!(
            "  {mode:<18} {m:6.2} ns  x{:.2} of off  x{:.2} of counting",
            m / medians[0],
            m / medians[1]
        );
    }
    // The cost of one sample: sample every allocation.
    let samples = Sampling::samples_taken();
    let every = Sampling::with_interval(1);
    let per_step = churn(100_000);
    let taken = Sampling::samples_taken() - samples;
    println!("  sampling every allocation: {per_step:.0} ns per step ({taken} samples)");
    let report = Report::take();
    drop(every);
    println!("{}", report.display(3, 3));
}

/// A known site, exported: its collapsed line carries its live bytes, the
/// flamegraph SVG names it, and the pprof profile read back holds the
/// report's figures with the site's function in its stack.
#[test]
fn reports_export_as_collapsed_stacks_flamegraphs_and_pprof() {
    use strata_alloc::profile::sampling::{pprof, Weight};
    let _guard = serial();
    const N: usize = 2000;
    const SIZE: usize = 4000;
    let mut ptrs = Vec::with_capacity(N);
    let sampling = Sampling::with_interval(INTERVAL);
    let bytes = sampling_site_export_unique(&mut ptrs, N, SIZE);
    let report = Report::take();
    drop(sampling);
    let exported = site(&report, "sampling_site_export_unique");

    let collapsed = report.collapsed(Weight::LiveBytes);
    let line = collapsed
        .lines()
        .find(|l| l.contains("sampling_site_export_unique"))
        .unwrap_or_else(|| panic!("no collapsed line for the site:\n{collapsed}"));
    let (stack, weight) = line.rsplit_once(' ').expect("a weight after the stack");
    assert_eq!(
        weight.parse::<u64>().unwrap(),
        exported.live_bytes,
        "{line}"
    );
    assert_close(exported.live_bytes, bytes, "live bytes", &report);
    // Outermost first: the test function calls the site function.
    let frames: Vec<&str> = stack.split(';').collect();
    let at = |needle: &str| frames.iter().position(|f| f.contains(needle));
    assert!(
        at("reports_export_as") < at("sampling_site_export_unique"),
        "caller before callee: {line}"
    );
    let total: u64 = collapsed
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, report.live_bytes());

    let svg = report.flamegraph_svg(Weight::AllocatedBytes);
    assert!(
        svg.trim_start().starts_with("<?xml"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("sampling_site_export_unique"));
    assert!(
        xml_elements(&svg) > 10,
        "a flamegraph has a frame per stack entry"
    );

    let profile = pprof::decode(&report.pprof()).expect("the profile reads back");
    let names: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| profile.string_table[t.r#type as usize].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(profile.period, INTERVAL as i64);
    assert_eq!(profile.sample.len(), report.sites.len());
    let inuse: i64 = profile.sample.iter().map(|s| s.value[3]).sum();
    assert_eq!(inuse as u64, report.live_bytes());
    let function_name = |id: u64| {
        let f = profile.function.iter().find(|f| f.id == id).unwrap();
        profile.string_table[f.name as usize].as_str()
    };
    let mentions_site = |s: &pprof::Sample| {
        s.location_id.iter().any(|id| {
            let loc = profile.location.iter().find(|l| l.id == *id).unwrap();
            loc.line
                .iter()
                .any(|l| function_name(l.function_id).contains("sampling_site_export_unique"))
        })
    };
    let sample = profile
        .sample
        .iter()
        .find(|s| mentions_site(s))
        .expect("a sample whose stack has the site's function");
    assert_eq!(sample.value[3] as u64, exported.live_bytes);
    assert_eq!(sample.value[1] as u64, exported.allocated_bytes);
    assert!(pprof::decode(b"not gzip").unwrap_err().contains("gzip"));
    free_all(&mut ptrs, SIZE);
}

/// Parses `svg` as XML (every tag closed by its own name) and returns how
/// many elements it has: the file opens in a browser, not just looks like SVG.
fn xml_elements(svg: &str) -> usize {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let (mut elements, mut depth) = (0, 0i64);
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                elements += 1;
                depth += 1;
            }
            Ok(Event::Empty(_)) => elements += 1,
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    elements
}
