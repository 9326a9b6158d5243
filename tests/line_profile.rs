//! `#[strata_alloc::profile]` through the global allocator: a statement's
//! row shows what it allocated, kept and freed and how often it ran; loop
//! bodies and match arms have rows of their own; methods, generic and
//! `async` functions (also resumed on another thread) are profiled; early
//! returns, `?` and panics still deliver the report; recursion gives a
//! report per call without the inner calls' bookkeeping in the outer ones;
//! the JSON parses. The `cost` test (ignored; run it with `--release --
//! --ignored --nocapture cost`) measures what the probe costs a call.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use strata_alloc::profile::lines::{self, LineReport, LineRow, Output};
use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

/// The output and the kept reports are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    lines::set_output(Output::Collect);
    lines::take_reports();
    guard
}

/// The reports of `function` kept since the last call.
fn reports_of(function: &str) -> Vec<LineReport> {
    let reports: Vec<LineReport> = lines::take_reports()
        .into_iter()
        .filter(|r| r.function == function)
        .collect();
    assert!(!reports.is_empty(), "no report of {function}");
    reports
}

/// The row whose source line contains `text` (which also checks that the
/// row's line number is the statement's: `contents` is read from it).
fn row<'a>(report: &'a LineReport, text: &str) -> &'a LineRow {
    report
        .rows
        .iter()
        .find(|r| r.contents.contains(text))
        .unwrap_or_else(|| panic!("no row holds {text:?}:\n{report}"))
}

const N: usize = 1 << 20;

#[strata_alloc::profile]
fn keep_then_drop() -> usize {
    let big = vec![0u8; N];
    let len = big.len();
    drop(big);
    len
}

#[test]
fn a_statement_shows_what_it_allocates_and_frees() {
    let _guard = serial();
    assert_eq!(keep_then_drop(), N);
    let report = &reports_of("keep_then_drop")[0];
    assert_eq!(report.file, "tests/line_profile.rs");
    assert_eq!(report.rows.len(), 4, "{report}");
    let alloc = row(report, "let big = vec![0u8; N];");
    assert!(
        alloc.allocated >= N && alloc.increment >= N as isize,
        "{report}"
    );
    assert!(alloc.mem_usage >= N as isize, "{report}");
    assert_eq!(alloc.occurrences, 1);
    let freeing = row(report, "drop(big);");
    assert!(
        freeing.freed >= N && freeing.increment <= -(N as isize),
        "{report}"
    );
    assert!(freeing.mem_usage < 4096, "{report}");
    let len = row(report, "let len = big.len();");
    assert_eq!(
        (len.allocated, len.freed, len.increment),
        (0, 0, 0),
        "{report}"
    );
    assert!(
        !strata_alloc::profile::is_counting(),
        "counting outlived the call"
    );
    let text = report.to_string();
    assert!(text.contains(
        "Line #   Mem usage   Increment   Allocated       Freed  Occurrences  Line Contents"
    ));
    assert!(
        text.contains("+1.0 MiB") && text.contains("-1.0 MiB"),
        "{text}"
    );
}

#[strata_alloc::profile]
fn loops(k: u64) -> Vec<String> {
    let mut out = Vec::with_capacity(k as usize);
    let mut thirds = 0;
    let mut ones = 0;
    for i in 0..k {
        out.push(i.to_string());
        match i % 3 {
            0 => {
                thirds += 1;
            }
            1 => {
                ones += 1;
            }
            _ => {}
        }
    }
    let mut j = 0;
    while j < 5 {
        j += 1;
    }
    loop {
        if j == 0 {
            break;
        }
        j -= 1;
    }
    assert_eq!(thirds + ones, k.div_ceil(3) + (k + 1) / 3);
    out
}

#[test]
fn loop_bodies_and_match_arms_count_their_runs() {
    let _guard = serial();
    let k = 100;
    let kept = loops(k);
    let report = &reports_of("loops")[0];
    let push = row(report, "out.push(i.to_string());");
    assert_eq!(push.occurrences, k);
    // Each string is at least a 16-byte block, kept.
    assert!(push.allocated >= 16 * k as usize, "{report}");
    assert!(push.increment >= 16 * k as isize, "{report}");
    assert_eq!(row(report, "match i % 3").occurrences, k);
    assert_eq!(row(report, "thirds += 1;").occurrences, k.div_ceil(3));
    assert_eq!(row(report, "ones += 1;").occurrences, (k + 1) / 3);
    assert_eq!(row(report, "for i in 0..k").occurrences, 1);
    assert_eq!(row(report, "j += 1;").occurrences, 5);
    assert_eq!(row(report, "if j == 0").occurrences, 6);
    assert_eq!(row(report, "break;").occurrences, 1);
    assert_eq!(row(report, "j -= 1;").occurrences, 5);
    // The Vec's buffer is the first statement's.
    let first = row(report, "Vec::with_capacity");
    assert!(first.allocated >= 8 * k as usize, "{report}");
    drop(kept);
}

struct Cache {
    entries: Vec<String>,
}

impl Cache {
    #[strata_alloc::profile]
    fn fill(&mut self, n: usize) -> usize {
        for i in 0..n {
            self.entries.push(format!("entry number {i:>10}"));
        }
        self.entries.len()
    }
}

#[strata_alloc::profile]
fn repeat<T: Clone>(item: T, n: usize) -> Vec<T> {
    let all = vec![item; n];
    all
}

#[test]
fn methods_and_generic_functions_are_profiled() {
    let _guard = serial();
    let mut cache = Cache {
        entries: Vec::with_capacity(1000),
    };
    assert_eq!(cache.fill(1000), 1000);
    let report = &reports_of("fill")[0];
    let push = row(report, "self.entries.push");
    assert_eq!(push.occurrences, 1000);
    assert!(push.allocated >= 1000 * 23, "{report}");

    let v = repeat(7u32, 10_000);
    let w = repeat("x".to_string(), 3);
    let reports = reports_of("repeat");
    assert_eq!(reports.len(), 2);
    assert!(
        row(&reports[0], "vec![item; n]").allocated >= 40_000,
        "{}",
        reports[0]
    );
    assert_eq!(row(&reports[1], "vec![item; n]").occurrences, 1);
    drop((v, w));
}

/// Pending once, then ready: an await point.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// Polls `future` once; whether it finished.
fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::new(NoopWake));
    future.poll(&mut Context::from_waker(&waker))
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = poll_once(future.as_mut()) {
            return out;
        }
    }
}

#[strata_alloc::profile]
async fn fetch(n: usize) -> usize {
    let before = vec![1u8; n];
    YieldOnce(false).await;
    let after = vec![2u8; 2 * n];
    before.len() + after.len()
}

#[test]
fn async_functions_are_profiled_across_awaits_and_threads() {
    let _guard = serial();
    assert_eq!(block_on(fetch(N)), 3 * N);
    let report = &reports_of("fetch")[0];
    assert!(row(report, "vec![1u8; n]").allocated >= N, "{report}");
    assert_eq!(row(report, "YieldOnce(false).await").occurrences, 1);
    assert!(
        row(report, "vec![2u8; 2 * n]").allocated >= 2 * N,
        "{report}"
    );

    // Started here, resumed on another thread: the statements after the
    // move count there.
    let mut future = Box::pin(fetch(N));
    assert!(poll_once(future.as_mut()).is_pending());
    let out = std::thread::spawn(move || block_on(future)).join().unwrap();
    assert_eq!(out, 3 * N);
    let report = &reports_of("fetch")[0];
    assert!(row(report, "vec![1u8; n]").allocated >= N, "{report}");
    let after = row(report, "vec![2u8; 2 * n]");
    assert!(
        after.allocated >= 2 * N && after.increment >= 2 * N as isize,
        "{report}"
    );
}

#[strata_alloc::profile]
fn early(fail: bool, text: &str) -> Result<usize, String> {
    let buffer = vec![1u8; 4096];
    if fail {
        return Err("asked to fail".to_string());
    }
    let n: usize = text.parse().map_err(|_| format!("not a number: {text}"))?;
    Ok(buffer.len() + n)
}

#[strata_alloc::profile]
fn panics() {
    let _buffer = vec![1u8; 4096];
    panic!("on purpose");
}

#[test]
fn early_returns_question_marks_and_panics_deliver_the_report() {
    let _guard = serial();
    assert!(early(true, "1").is_err());
    let report = &reports_of("early")[0];
    assert_eq!(row(report, "return Err").occurrences, 1);
    assert_eq!(row(report, "Ok(buffer.len() + n)").occurrences, 0);
    // The buffer's free, when the function returns, is the last
    // statement run's.
    assert!(row(report, "return Err").freed >= 4096, "{report}");

    assert!(early(false, "x").is_err());
    let report = &reports_of("early")[0];
    assert_eq!(row(report, "text.parse()").occurrences, 1);
    assert_eq!(row(report, "Ok(buffer.len() + n)").occurrences, 0);

    assert_eq!(early(false, "2"), Ok(4098));
    assert_eq!(
        row(&reports_of("early")[0], "Ok(buffer.len() + n)").occurrences,
        1
    );

    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(panics);
    std::panic::set_hook(hook);
    assert!(caught.is_err());
    let report = &reports_of("panics")[0];
    assert!(row(report, "vec![1u8; 4096]").allocated >= 4096, "{report}");
    assert_eq!(row(report, "panic!").occurrences, 1);
}

#[strata_alloc::profile]
fn depth(n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let below = depth(n - 1);
    below + 1
}

#[test]
fn recursion_gives_a_report_per_call_without_bookkeeping() {
    let _guard = serial();
    assert_eq!(depth(3), 3);
    let reports = reports_of("depth");
    assert_eq!(reports.len(), 4);
    // Innermost first; nothing allocates, not even the inner probes.
    for report in &reports {
        for r in &report.rows {
            assert_eq!((r.allocated, r.freed), (0, 0), "{report}");
        }
    }
    assert_eq!(row(&reports[0], "return 0;").occurrences, 1);
    assert_eq!(row(&reports[3], "depth(n - 1)").occurrences, 1);
}

#[test]
fn json_round_trips() {
    let _guard = serial();
    keep_then_drop();
    let report = &reports_of("keep_then_drop")[0];
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["function"], "keep_then_drop");
    assert_eq!(json["file"], report.file);
    assert_eq!(json["line"], report.line);
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), report.rows.len());
    for (j, r) in rows.iter().zip(&report.rows) {
        assert_eq!(j["line"], r.line);
        assert_eq!(j["mem_usage"], r.mem_usage as i64);
        assert_eq!(j["increment"], r.increment as i64);
        assert_eq!(j["allocated"], r.allocated as u64);
        assert_eq!(j["freed"], r.freed as u64);
        assert_eq!(j["occurrences"], r.occurrences);
        assert_eq!(j["contents"], r.contents);
    }
}

#[test]
fn callbacks_get_the_reports() {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let _guard = serial();
    lines::set_output(Output::Callback(|r| SEEN.lock().unwrap().push(r.function)));
    keep_then_drop();
    lines::set_output(Output::Collect);
    assert_eq!(*SEEN.lock().unwrap(), ["keep_then_drop"]);
    assert!(lines::take_reports().is_empty());
}

/// 1000 iterations of a small statement, profiled and not.
#[strata_alloc::profile]
fn sum_profiled(data: &[u64]) -> u64 {
    let mut total = 0u64;
    for &x in data {
        total = total.wrapping_add(x * 3);
    }
    total
}

fn sum_plain(data: &[u64]) -> u64 {
    let mut total = 0u64;
    for &x in data {
        total = total.wrapping_add(x * 3);
    }
    total
}

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture cost"]
fn cost() {
    let _guard = serial();
    lines::set_output(Output::Callback(|r| {
        black_box(r);
    }));
    let data: Vec<u64> = (0..1000).collect();
    const CALLS: u32 = 20_000;
    let time = |f: fn(&[u64]) -> u64| {
        let mut best = f64::MAX;
        for _ in 0..7 {
            let start = Instant::now();
            for _ in 0..CALLS {
                black_box(f(black_box(&data)));
            }
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(CALLS));
        }
        best
    };
    let plain = time(sum_plain);
    let profiled = time(sum_profiled);
    println!(
        "1000-iteration loop: plain {plain:.0} ns/call, profiled {profiled:.0} ns/call \
         ({:.1} ns per statement run, {:.0} ns for a call of one statement)",
        (profiled - plain) / 1002.0,
        time(|_| empty_profiled()) - time(|_| 0)
    );
    lines::set_output(Output::Collect);
}

#[strata_alloc::profile]
fn empty_profiled() -> u64 {
    0
}
