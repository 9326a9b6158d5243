//! Insight layer: plots.
//!
//! Memory-over-time plots (feature `plot`): record what the allocator
//! holds while a program runs and draw it as an SVG chart.
//!
//! This is a user-level layer on top of [`crate::stats`]: it owns nothing
//! inside the allocator and is never called by it, so it allocates like any
//! other code (its samples live in the global allocator it observes; a
//! sample is 32 bytes).
//!
//! A [`Recorder`] keeps timestamped [`Sample`]s of three figures — the
//! process's RSS as the OS sees it, the bytes strata has committed, and the
//! bytes of blocks in use — plus labelled [`Mark`]s ("gen 2 collection",
//! "cache built") drawn as numbered vertical lines. It samples when asked
//! ([`Recorder::sample`]) and, if started with [`Recorder::sampling_every`],
//! from a background thread until [`Recorder::stop`] or drop.
//! [`Recorder::write_svg`] draws the chart with plotters: one line per
//! figure, seconds across, MiB up, a legend, and a numbered key of the
//! marks under the chart.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: strata_alloc::Strata = strata_alloc::Strata;
//!
//! use std::time::Duration;
//! use strata_alloc::plot::Recorder;
//!
//! let mut recorder = Recorder::sampling_every(Duration::from_millis(20));
//! let buffer = vec![1u8; 64 << 20];
//! recorder.mark("64 MiB allocated");
//! drop(buffer);
//! recorder.mark("freed");
//! recorder.stop(); // takes a last sample and ends the sampling thread
//! recorder.write_svg("target/memory.svg")?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Each sample calls [`crate::stats`], which walks the arenas under the
//! registry lock (and briefly holds up threads fetching a pool): sampling
//! tens of times a second costs little; thousands would not. The recorder
//! keeps every sample, which suits runs of seconds to hours (an hour at
//! 20 ms is 180 000 samples, 5.5 MiB).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One measurement of the allocator and the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Time since the recorder was created.
    pub at: Duration,
    /// The process's resident set size (what `top` shows), from
    /// [`crate::Stats::resident_bytes`]: includes memory not managed by
    /// strata (code, stacks, other allocators).
    pub resident_bytes: usize,
    /// Bytes strata may have committed ([`crate::Stats::committed_bytes`]):
    /// what strata holds from the OS, used or not.
    pub committed_bytes: usize,
    /// Bytes of blocks in use ([`crate::Stats::in_use_bytes`]): what the
    /// program holds. Committed minus in use is strata's overhead and
    /// free memory not yet returned.
    pub in_use_bytes: usize,
}

/// A labelled moment, drawn as a vertical line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Time since the recorder was created.
    pub at: Duration,
    /// What happened.
    pub label: String,
}

/// What the recorder and its handles share.
#[derive(Debug, Default)]
struct Recording {
    samples: Vec<Sample>,
    marks: Vec<Mark>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    recording: Mutex<Recording>,
}

impl Shared {
    /// The recording; a panic while it was held (in user code that
    /// cannot reach inside) leaves it consistent, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.recording
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sample(&self) -> Sample {
        // Read the stats outside the lock: they take the allocator's
        // registry lock, and a marker should never wait for that walk.
        let stats = crate::insight::stats::snapshot();
        let sample = Sample {
            at: self.start.elapsed(),
            resident_bytes: stats.resident_bytes,
            committed_bytes: stats.committed_bytes(),
            in_use_bytes: stats.in_use_bytes(),
        };
        let mut recording = self.lock();
        // Two threads may sample at once; keep the samples in time order.
        let at = recording
            .samples
            .iter()
            .rposition(|s| s.at <= sample.at)
            .map_or(0, |i| i + 1);
        recording.samples.insert(at, sample);
        sample
    }

    fn mark(&self, label: String) {
        let mut recording = self.lock();
        // Timed under the lock, so marks from several threads stay in
        // time order (their numbers on the chart follow it).
        let at = self.start.elapsed();
        recording.marks.push(Mark { at, label });
    }
}

/// The background sampling thread and the channel that stops it.
#[derive(Debug)]
struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// Records memory over time; see the [module documentation](self).
///
/// Dropping a recorder stops its sampling thread (if any) and discards the
/// recording: write it first.
#[derive(Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
    sampler: Option<Sampler>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder that samples only when [`sample`](Recorder::sample) is
    /// called. Time 0 is now.
    pub fn new() -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                start: Instant::now(),
                recording: Mutex::new(Recording::default()),
            }),
            sampler: None,
        }
    }

    /// A recorder that samples now and then every `interval` from a
    /// background thread (named `strata-plot`) until [`stop`] or drop.
    /// 10 to 100 ms suits most programs; the interval is clamped to at
    /// least 1 ms.
    ///
    /// # Panics
    ///
    /// If the OS cannot start a thread (as [`std::thread::spawn`] does).
    ///
    /// [`stop`]: Recorder::stop
    pub fn sampling_every(interval: Duration) -> Recorder {
        let mut recorder = Recorder::new();
        let interval = interval.max(Duration::from_millis(1));
        let shared = Arc::clone(&recorder.shared);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("strata-plot".into())
            .spawn(move || loop {
                shared.sample();
                // A message or a dropped sender both mean stop.
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            })
            .expect("could not start the strata-plot sampling thread");
        recorder.sampler = Some(Sampler { stop, thread });
        recorder
    }

    /// Takes a sample now and returns it (it is also recorded).
    pub fn sample(&self) -> Sample {
        self.shared.sample()
    }

    /// Records a labelled moment (a phase of the program, a collection),
    /// drawn as a numbered vertical line with the label in the key. Cheap:
    /// it takes no sample, so it may be called from a collection callback.
    pub fn mark(&self, label: impl Into<String>) {
        self.shared.mark(label.into());
    }

    /// A handle that can mark and sample from elsewhere — another thread
    /// or a `'static` callback such as a GC collection callback — while
    /// this recorder keeps ownership of the recording.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops background sampling (if running) and takes a last sample, so
    /// the plot ends now. Marks and samples can still be added.
    pub fn stop(&mut self) {
        self.stop_sampler();
        self.shared.sample();
    }

    /// Whether a background thread is sampling.
    pub fn is_sampling(&self) -> bool {
        self.sampler.is_some()
    }

    /// Time since the recorder was created (the x coordinate of a sample
    /// or mark taken now).
    pub fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// The samples so far, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.shared.lock().samples.clone()
    }

    /// The marks so far, in the order they were made.
    pub fn marks(&self) -> Vec<Mark> {
        self.shared.lock().marks.clone()
    }

    /// The highest RSS, committed and in-use figures of the samples so far
    /// (each its own maximum), or `None` before the first sample.
    pub fn peak(&self) -> Option<Sample> {
        let recording = self.shared.lock();
        let last = recording.samples.last()?;
        Some(recording.samples.iter().fold(*last, |peak, s| Sample {
            at: peak.at,
            resident_bytes: peak.resident_bytes.max(s.resident_bytes),
            committed_bytes: peak.committed_bytes.max(s.committed_bytes),
            in_use_bytes: peak.in_use_bytes.max(s.in_use_bytes),
        }))
    }

    /// The chart as an SVG document (see [`write_svg`](Recorder::write_svg)).
    pub fn to_svg(&self) -> String {
        let (samples, marks) = {
            let recording = self.shared.lock();
            (recording.samples.clone(), recording.marks.clone())
        };
        render(&samples, &marks)
    }

    /// Writes the chart to `path` as SVG: RSS, committed and in-use bytes
    /// in MiB against seconds, with a legend and the marks. The recording
    /// goes on (call [`stop`](Recorder::stop) first for a chart that ends
    /// now). The parent folder must exist.
    ///
    /// # Errors
    ///
    /// If the file cannot be written; the message names the path.
    pub fn write_svg(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_svg()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("could not write the memory plot to {}: {e}", path.display()),
            )
        })
    }

    fn stop_sampler(&mut self) {
        if let Some(Sampler { stop, thread }) = self.sampler.take() {
            // The thread may have gone already; then there is no one to tell.
            let _ = stop.send(());
            // A panic in the sampling thread would be a bug in `stats`;
            // the recording stays usable either way.
            let _ = thread.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop_sampler();
    }
}

/// Marks and samples a [`Recorder`]'s recording from elsewhere (from
/// [`Recorder::handle`]). `Clone`, `Send` and `Sync`; outliving the
/// recorder is harmless (what it adds is then never drawn).
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// As [`Recorder::mark`].
    pub fn mark(&self, label: impl Into<String>) {
        self.shared.mark(label.into());
    }

    /// As [`Recorder::sample`].
    pub fn sample(&self) -> Sample {
        self.shared.sample()
    }
}

/// Colours of the three lines (matplotlib's first three: colour-blind
/// distinguishable and familiar) and of the marks.
const RSS_COLOR: RGBColor = RGBColor(214, 39, 40);
const COMMITTED_COLOR: RGBColor = RGBColor(31, 119, 180);
const IN_USE_COLOR: RGBColor = RGBColor(44, 160, 44);
const MARK_COLOR: RGBColor = RGBColor(110, 110, 110);

/// Chart size in pixels; the key of marks adds a line each below it.
const WIDTH: u32 = 1000;
const CHART_HEIGHT: u32 = 560;
const KEY_LINE: u32 = 18;
/// Left edge of the key, in line with the plot's y axis.
const KEY_X: i32 = 76;

const MIB: f64 = (1u64 << 20) as f64;

/// Seconds as the x axis and the key show them.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} s", self.0.as_secs_f64())
    }
}

/// Draws the chart. Plotters reports errors only from the backend, and a
/// string backend cannot fail, so drawing errors are bugs: they panic with
/// the plotters message rather than surface as a write error.
fn render(samples: &[Sample], marks: &[Mark]) -> String {
    let key_lines = if marks.is_empty() { 0 } else { marks.len() + 1 };
    let height = CHART_HEIGHT + KEY_LINE * key_lines as u32 + 10;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(&root, samples, marks).expect("plotters failed to draw into a string");
        root.present()
            .expect("plotters failed to draw into a string");
    }
    svg
}

/// A line of the chart: its legend label, colour and figure.
type Series = (&'static str, RGBColor, fn(&Sample) -> usize);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<io::Error>>;

fn draw(root: &Area<'_>, samples: &[Sample], marks: &[Mark]) -> DrawResult {
    root.fill(&WHITE)?;
    let (chart_area, key_area) = root.split_vertically(CHART_HEIGHT);
    // The title above the band of mark numbers (a ChartBuilder caption
    // would sit below the band: builders apply margins first).
    let chart_area = chart_area.titled("memory over time (strata)", ("sans-serif", 22))?;

    let end = samples
        .iter()
        .map(|s| s.at)
        .chain(marks.iter().map(|m| m.at))
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    // Never an empty range: plotters needs one, and a single sample at
    // time 0 still gets a readable chart.
    let x_max = end.max(0.001) * 1.02;
    let top = samples
        .iter()
        .map(|s| s.resident_bytes.max(s.committed_bytes).max(s.in_use_bytes))
        .max()
        .unwrap_or(0) as f64
        / MIB;
    let y_max = (top * 1.12).max(1.0);

    let mut chart = ChartBuilder::on(&chart_area)
        .margin(12)
        // Room for the mark numbers between the caption and the plot.
        .margin_top(LABEL_ROWS as i32 * LABEL_ROW + 8)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("MiB")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    // Marks first, so the lines are drawn over them.
    for mark in marks {
        let x = mark.at.as_secs_f64();
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, y_max)],
            MARK_COLOR.mix(0.5).stroke_width(1),
        )))?;
    }
    let label_style = ("sans-serif", 12)
        .into_font()
        .color(&MARK_COLOR)
        .pos(Pos::new(HPos::Center, VPos::Top));
    let plot_top = chart.backend_coord(&(0.0, y_max)).1;
    let pixel_x = |m: &Mark| chart.backend_coord(&(m.at.as_secs_f64(), y_max)).0;
    for label in mark_labels(marks, pixel_x) {
        // Row 0 sits just above the plot, later rows above it.
        let y = plot_top - 2 - LABEL_ROW * (label.row as i32 + 1);
        // `root`: backend coordinates are the root area's own.
        root.draw(&Text::new(label.text, (label.x, y), label_style.clone()))?;
    }

    let lines: [Series; 3] = [
        ("RSS", RSS_COLOR, |s| s.resident_bytes),
        ("committed", COMMITTED_COLOR, |s| s.committed_bytes),
        ("in use", IN_USE_COLOR, |s| s.in_use_bytes),
    ];
    for (label, color, figure) in lines {
        chart
            .draw_series(LineSeries::new(
                samples
                    .iter()
                    .map(|s| (s.at.as_secs_f64(), figure(s) as f64 / MIB)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;

    if !marks.is_empty() {
        // Three columns (number, time, label): SVG collapses the spaces
        // that would align them in one string.
        let left = ("sans-serif", 13).into_font().color(&BLACK);
        let right = left.pos(Pos::new(HPos::Right, VPos::Top));
        key_area.draw(&Text::new("marks", (KEY_X, 0), left.clone()))?;
        for (i, mark) in marks.iter().enumerate() {
            let y = KEY_LINE as i32 * (i as i32 + 1);
            let number = format!("{}", i + 1);
            key_area.draw(&Text::new(number, (KEY_X + 20, y), right.clone()))?;
            let time = Seconds(mark.at).to_string();
            key_area.draw(&Text::new(time, (KEY_X + 90, y), right.clone()))?;
            let label = mark.label.as_str();
            key_area.draw(&Text::new(label, (KEY_X + 104, y), left.clone()))?;
        }
    }
    Ok(())
}

/// Marks closer than this many pixels share one number label ("3-7").
const MARK_MERGE_PX: i32 = 12;
/// Rows of mark labels at the top of the chart, and their height.
const LABEL_ROWS: usize = 3;
const LABEL_ROW: i32 = 14;

/// A number label over one mark or a run of marks close together.
#[derive(Debug, PartialEq, Eq)]
struct MarkLabel {
    text: String,
    /// Pixel x of the centre.
    x: i32,
    row: usize,
}

/// Places the number labels of `marks` (in time order) so they do not
/// overlap: marks within [`MARK_MERGE_PX`] of the first of a run share a
/// label, and each label takes the first row where it clears the previous
/// label (the least crowded row if none does).
fn mark_labels(marks: &[Mark], pixel_x: impl Fn(&Mark) -> i32) -> Vec<MarkLabel> {
    let mut labels = Vec::new();
    let mut row_ends = [i32::MIN; LABEL_ROWS];
    let mut i = 0;
    while i < marks.len() {
        let x0 = pixel_x(&marks[i]);
        let mut j = i + 1;
        while j < marks.len() && pixel_x(&marks[j]) - x0 < MARK_MERGE_PX {
            j += 1;
        }
        let x = (x0 + pixel_x(&marks[j - 1])) / 2;
        let text = if j - i == 1 {
            format!("{}", i + 1)
        } else {
            format!("{}-{}", i + 1, j)
        };
        // The naive width of the font plotters estimates without fonts.
        let half_width = 4 * text.len() as i32 + 2;
        let row = (0..LABEL_ROWS)
            .find(|&r| row_ends[r] < x - half_width)
            .unwrap_or_else(|| (0..LABEL_ROWS).min_by_key(|&r| row_ends[r]).unwrap_or(0));
        row_ends[row] = x + half_width;
        labels.push(MarkLabel { text, x, row });
        i = j;
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, mib: usize) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            resident_bytes: (mib + 2) << 20,
            committed_bytes: (mib + 1) << 20,
            in_use_bytes: mib << 20,
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "safe drawing code, slow under Miri")]
    fn renders_empty_and_single_sample() {
        assert!(render(&[], &[]).contains("<svg"));
        let one = render(&[sample(0, 0)], &[]);
        assert!(one.contains("RSS") && one.contains("in use"), "{one}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "safe drawing code, slow under Miri")]
    fn key_lists_marks_in_order() {
        let marks = [
            Mark {
                at: Duration::from_millis(100),
                label: "first".into(),
            },
            Mark {
                at: Duration::from_millis(200),
                label: "second".into(),
            },
        ];
        let svg = render(&[sample(0, 1), sample(300, 5)], &marks);
        let first = svg.find("first").unwrap();
        let second = svg.find("second").unwrap();
        assert!(first < second);
        assert!(svg.contains("0.10 s"), "{svg}");
    }

    #[test]
    fn close_marks_share_a_label_and_labels_stagger() {
        let marks: Vec<Mark> = [0, 5, 8, 30, 42, 200]
            .iter()
            .map(|&ms| Mark {
                at: Duration::from_millis(ms),
                label: String::new(),
            })
            .collect();
        // One pixel per millisecond.
        let labels = mark_labels(&marks, |m| m.at.as_millis() as i32);
        let texts: Vec<(&str, usize)> = labels.iter().map(|l| (l.text.as_str(), l.row)).collect();
        assert_eq!(texts, [("1-3", 0), ("4", 0), ("5", 1), ("6", 0)]);
    }
}
