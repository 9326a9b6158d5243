//! `strata_alloc::plot`: samples against a known allocation, marks,
//! background sampling, and the SVG it writes (parsed as XML).
//!
//! The tests of this file run in parallel in one process and the figures
//! are process-wide, so each keeps its own allocations small except the
//! one that measures a 64 MiB buffer.

use std::hint::black_box;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use strata_alloc::plot::{Recorder, Sample};
use strata_alloc::Strata;

#[global_allocator]
static GLOBAL: Strata = Strata;

const MIB: usize = 1 << 20;

/// A path in the system's temporary folder, unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("strata-plot-{}-{name}", std::process::id()))
}

#[test]
fn samples_reflect_a_known_allocation() {
    let recorder = Recorder::new();
    let before = recorder.sample();
    let buffer = black_box(vec![1u8; 64 * MIB]);
    let during = recorder.sample();
    drop(buffer);
    let after = recorder.sample();

    assert!(
        during.in_use_bytes >= before.in_use_bytes + 64 * MIB,
        "in use rose by less than 64 MiB: {before:?} -> {during:?}"
    );
    assert!(during.committed_bytes >= during.in_use_bytes, "{during:?}");
    // Every page of the buffer was written, so it is resident.
    assert!(
        during.resident_bytes >= before.resident_bytes + 48 * MIB,
        "RSS rose by less than 48 MiB: {before:?} -> {during:?}"
    );
    assert!(
        after.in_use_bytes + 60 * MIB <= during.in_use_bytes,
        "in use did not fall after the free: {during:?} -> {after:?}"
    );

    let samples = recorder.samples();
    assert_eq!(samples, [before, during, after]);
    assert!(samples.windows(2).all(|w| w[0].at <= w[1].at));
    let peak = recorder.peak().unwrap();
    assert_eq!(peak.in_use_bytes, during.in_use_bytes);
}

#[test]
fn background_sampling_marks_and_stop() {
    let mut recorder = Recorder::sampling_every(Duration::from_millis(5));
    assert!(recorder.is_sampling());
    recorder.mark("start");
    let handle = recorder.handle();
    thread::spawn(move || handle.mark("gen 2 collection"))
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(60));
    recorder.stop();
    assert!(!recorder.is_sampling());

    let samples = recorder.samples();
    // The first sample, at least one from the thread's loop on a busy
    // machine, and the one `stop` takes.
    assert!(samples.len() >= 3, "{samples:?}");
    assert!(samples.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(samples.iter().all(|s| s.resident_bytes > 0));

    let marks = recorder.marks();
    let labels: Vec<&str> = marks.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["start", "gen 2 collection"]);
    assert!(marks[0].at <= marks[1].at && marks[1].at <= recorder.elapsed());

    // Stopped: no thread adds samples any more.
    thread::sleep(Duration::from_millis(20));
    assert_eq!(recorder.samples().len(), samples.len());
}

#[test]
fn drop_ends_a_slow_sampling_thread_at_once() {
    // With an hour between samples, this test would hang if drop waited.
    let recorder = Recorder::sampling_every(Duration::from_secs(3600));
    let handle = recorder.handle();
    drop(recorder);
    // A handle outliving its recorder still works; nothing draws it.
    handle.mark("after the recorder");
    let _: Sample = handle.sample();
}

/// Text of every `<text>` element of the SVG.
fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn svg_is_well_formed_with_three_series_legend_axes_and_marks() {
    let recorder = Recorder::new();
    recorder.sample();
    recorder.mark("gen 2 collection");
    let buffer = black_box(vec![7u8; 8 * MIB]);
    recorder.sample();
    // Characters XML must escape, in a label.
    recorder.mark("<cache> & \"friends\"");
    drop(buffer);
    recorder.sample();
    let samples = recorder.samples().len();

    let path = temp_path("memory.svg");
    recorder.write_svg(&path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(svg, recorder.to_svg(), "write_svg writes to_svg");

    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    let root = doc.root_element();
    assert!(root.has_tag_name("svg"));
    assert!(root.attribute("width").is_some() && root.attribute("height").is_some());

    // The three series: one polyline with a point per sample each.
    let series: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("points")
                .is_some_and(|p| p.split_whitespace().count() == samples)
        })
        .collect();
    assert_eq!(series.len(), 3, "{svg}");
    let mut colours: Vec<_> = series
        .iter()
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    colours.sort_unstable();
    colours.dedup();
    assert_eq!(colours.len(), 3, "three colours: {colours:?}");

    let texts = texts(&doc);
    for expected in [
        "RSS",
        "committed",
        "in use",
        "time (s)",
        "MiB",
        "gen 2 collection",
        "<cache> & \"friends\"",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "no text {expected:?} in {texts:?}"
        );
    }
    // The marks' numbers over the chart.
    assert!(texts.iter().any(|t| t == "1" || t == "1-2"), "{texts:?}");
}

#[test]
fn an_empty_recording_still_draws() {
    let svg = Recorder::new().to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(texts(&doc).iter().any(|t| t == "RSS"));
}

#[test]
fn unwritable_paths_are_errors_naming_the_path() {
    let recorder = Recorder::new();
    recorder.sample();

    let missing = temp_path("no-such-folder").join("memory.svg");
    let err = recorder.write_svg(&missing).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let message = err.to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    // A folder is not a file.
    let folder = std::env::temp_dir();
    assert!(recorder.write_svg(&folder).is_err());
}
