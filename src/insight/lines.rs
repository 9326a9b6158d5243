//! Insight layer: line-by-line profiles of functions marked
//! `#[strata_alloc::profile]` (the probe the attribute puts in them, and
//! the reports it delivers). Re-exported as `strata_alloc::profile::lines`;
//! the module documentation is there.

use core::fmt;
use std::cell::Cell;
use std::sync::{Mutex, MutexGuard};

use crate::core::thread;
use crate::insight::stats::Bytes;

/// What a profiled function's static says about it (written by the
/// attribute; not for hand use).
#[doc(hidden)]
#[derive(Debug)]
pub struct __Meta {
    pub function: &'static str,
    pub module: &'static str,
    pub file: &'static str,
    pub manifest_dir: Option<&'static str>,
    pub line: u32,
    pub stmts: &'static [__Stmt],
}

/// One instrumented statement: its first line and its text from tokens.
#[doc(hidden)]
#[derive(Debug)]
pub struct __Stmt {
    pub line: u32,
    pub text: &'static str,
}

/// A statement's figures so far in one call.
#[derive(Clone, Copy, Default)]
struct Acc {
    allocated: usize,
    freed: usize,
    occurrences: u64,
    mem_after: isize,
}

/// No statement has run yet.
const NONE: usize = usize::MAX;

thread_local! {
    /// Bytes the probes' own bookkeeping allocated and freed on this
    /// thread (their rows, the reports, delivering them), taken off what
    /// every probe reads, so that a profiled function called from another
    /// (or from itself) does not show in the caller's figures.
    static HIDDEN: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// This thread's identity (the address of its counters) and its
/// allocated and freed bytes, as counted, less the hidden ones.
#[inline]
fn read() -> (usize, usize, usize) {
    let (id, counts) = thread::with_thread_counters(|c| (c as *const _ as usize, c.read()));
    let (hidden_alloc, hidden_freed) = HIDDEN.with(Cell::get);
    (
        id,
        counts.alloc_bytes.wrapping_sub(hidden_alloc),
        counts.free_bytes.wrapping_sub(hidden_freed),
    )
}

/// Runs `f`, hiding what it allocates and frees on this thread from the
/// probes.
fn hidden<R>(f: impl FnOnce() -> R) -> R {
    let before = thread::with_thread_counters(|c| c.read());
    let result = f();
    let after = thread::with_thread_counters(|c| c.read());
    HIDDEN.with(|h| {
        let (a, b) = h.get();
        h.set((
            a.wrapping_add(after.alloc_bytes.wrapping_sub(before.alloc_bytes)),
            b.wrapping_add(after.free_bytes.wrapping_sub(before.free_bytes)),
        ));
    });
    result
}

/// One call's probe: counts while the call runs and reports when it ends
/// (the attribute creates it; not for hand use).
#[doc(hidden)]
pub struct __Probe {
    meta: &'static __Meta,
    acc: Vec<Acc>,
    /// The statement running now, or [`NONE`].
    current: usize,
    /// Where and what the counts were at the last hit.
    thread: usize,
    allocated: usize,
    freed: usize,
    /// Net bytes since entry, of what was attributed.
    net: isize,
}

impl __Probe {
    /// Starts counting (every thread, until the call ends) and the call's
    /// figures.
    pub fn enter(meta: &'static __Meta) -> __Probe {
        thread::start_counting();
        let acc = hidden(|| vec![Acc::default(); meta.stmts.len()]);
        let (thread, allocated, freed) = read();
        __Probe {
            meta,
            acc,
            current: NONE,
            thread,
            allocated,
            freed,
            net: 0,
        }
    }

    /// Statement `index` starts: what happened since the last hit goes to
    /// the statement that ran then.
    #[inline]
    pub fn hit(&mut self, index: usize) {
        self.attribute();
        if let Some(acc) = self.acc.get_mut(index) {
            acc.occurrences += 1;
        }
        self.current = index;
    }

    /// Charges the counts since the last hit to the current statement. On
    /// another thread than the last hit's (an `async fn` resumed
    /// elsewhere) it only starts over from that thread's counts.
    #[inline]
    fn attribute(&mut self) {
        let (thread, allocated, freed) = read();
        if thread == self.thread {
            let a = allocated.wrapping_sub(self.allocated);
            let f = freed.wrapping_sub(self.freed);
            self.net = self.net.wrapping_add(a.wrapping_sub(f) as isize);
            if let Some(acc) = self.acc.get_mut(self.current) {
                acc.allocated = acc.allocated.wrapping_add(a);
                acc.freed = acc.freed.wrapping_add(f);
                acc.mem_after = self.net;
            }
        }
        self.thread = thread;
        self.allocated = allocated;
        self.freed = freed;
    }

    fn report(&self) -> LineReport {
        let sources = source_lines(self.meta);
        let rows = self
            .meta
            .stmts
            .iter()
            .zip(&self.acc)
            .map(|(stmt, acc)| LineRow {
                line: stmt.line,
                mem_usage: acc.mem_after,
                increment: acc.allocated.wrapping_sub(acc.freed) as isize,
                allocated: acc.allocated,
                freed: acc.freed,
                occurrences: acc.occurrences,
                contents: sources
                    .and_then(|lines| lines.get(stmt.line.wrapping_sub(1) as usize))
                    .copied()
                    .filter(|line| same_statement(line, stmt.text))
                    .unwrap_or(stmt.text),
            })
            .collect();
        LineReport {
            function: self.meta.function,
            module: self.meta.module,
            file: self.meta.file,
            line: self.meta.line,
            rows,
        }
    }
}

impl Drop for __Probe {
    /// The call ends (returned, `?`, unwinding, or its future dropped):
    /// the last statement gets what happened since its hit (the drops of
    /// the function's locals included), the report goes out, counting
    /// stops.
    fn drop(&mut self) {
        self.attribute();
        hidden(|| {
            deliver(self.report());
            self.acc = Vec::new();
        });
        thread::stop_counting();
    }
}

/// Whether a source line (read at report time) still holds the statement
/// compiled (its first word), else the file changed since.
fn same_statement(line: &str, text: &str) -> bool {
    let word: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    line.contains(if word.is_empty() {
        text.get(..1).unwrap_or("")
    } else {
        &word
    })
}

/// Source files read so far: their lines, or `None` where none was found.
/// Kept for the process, as `linecache` does for `memory_profiler`.
type Sources = Vec<(&'static str, Option<&'static [&'static str]>)>;

static SOURCES: Mutex<Sources> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lines of the function's source file: `file!()` is relative to the
/// workspace root, which is the current folder under `cargo run` and
/// `cargo test` of a root crate, else an ancestor of the crate's folder.
fn source_lines(meta: &__Meta) -> Option<&'static [&'static str]> {
    let mut sources = lock(&SOURCES);
    if let Some(&(_, lines)) = sources.iter().find(|(f, _)| *f == meta.file) {
        return lines;
    }
    let path = std::path::Path::new(meta.file);
    let candidates = core::iter::once(path.to_path_buf()).chain(
        meta.manifest_dir
            .into_iter()
            .flat_map(|dir| std::path::Path::new(dir).ancestors())
            .map(|dir| dir.join(path)),
    );
    let lines = candidates
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .next()
        .map(|text| {
            let text: &'static str = Box::leak(text.into_boxed_str());
            &*Box::leak(text.lines().map(str::trim_end).collect::<Box<[_]>>())
        });
    sources.push((meta.file, lines));
    lines
}

/// Where reports go ([`set_output`]).
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// Print each report to stderr (the default).
    Stderr,
    /// Keep them for [`take_reports`].
    Collect,
    /// Hand each to a function (on the thread where the call ended).
    Callback(fn(&LineReport)),
}

static OUTPUT: Mutex<Output> = Mutex::new(Output::Stderr);
static REPORTS: Mutex<Vec<LineReport>> = Mutex::new(Vec::new());

/// Sends the reports of calls ending from now on to `output`; returns
/// where they went before.
pub fn set_output(output: Output) -> Output {
    core::mem::replace(&mut *lock(&OUTPUT), output)
}

/// The reports kept under [`Output::Collect`], oldest first (and forgets
/// them).
pub fn take_reports() -> Vec<LineReport> {
    core::mem::take(&mut *lock(&REPORTS))
}

fn deliver(report: LineReport) {
    let output = *lock(&OUTPUT);
    match output {
        Output::Stderr => eprintln!("{report}"),
        Output::Collect => lock(&REPORTS).push(report),
        Output::Callback(f) => f(&report),
    }
}

/// One statement's row of a [`LineReport`]. Bytes are block sizes, as
/// counted by [`crate::profile`], on the calling thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRow {
    /// The statement's first line.
    pub line: u32,
    /// Net bytes of the calling thread since the call's entry, after the
    /// statement's last run (0 if it never ran).
    pub mem_usage: isize,
    /// Net bytes the statement allocated, summed over its runs.
    pub increment: isize,
    /// Bytes it allocated, over its runs.
    pub allocated: usize,
    /// Bytes it freed, over its runs.
    pub freed: usize,
    /// How many times it ran.
    pub occurrences: u64,
    /// The source line, or the statement's text from its tokens when the
    /// source file could not be read.
    pub contents: &'static str,
}

/// One call's line-by-line table. `Display` renders it as
/// `memory_profiler` does; [`LineReport::to_json`] writes it as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineReport {
    /// The function's name.
    pub function: &'static str,
    /// Its module path.
    pub module: &'static str,
    /// Its file, as `file!()` gives it.
    pub file: &'static str,
    /// The line of its name.
    pub line: u32,
    /// One row per statement, in source order (nested blocks' statements
    /// after the statement holding them).
    pub rows: Vec<LineRow>,
}

impl LineReport {
    /// The first row of line `line`.
    pub fn row(&self, line: u32) -> Option<&LineRow> {
        self.rows.iter().find(|r| r.line == line)
    }

    /// The report as one JSON object: `function`, `module`, `file`,
    /// `line`, and `rows`, each with `line`, `mem_usage`, `increment`,
    /// `allocated`, `freed`, `occurrences` and `contents` (bytes as
    /// integers).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        out += &format!(
            "\"function\":{},\"module\":{},\"file\":{},\"line\":{},\"rows\":[",
            Json(self.function),
            Json(self.module),
            Json(self.file),
            self.line
        );
        for (i, r) in self.rows.iter().enumerate() {
            out += &format!(
                "{}{{\"line\":{},\"mem_usage\":{},\"increment\":{},\"allocated\":{},\
                 \"freed\":{},\"occurrences\":{},\"contents\":{}}}",
                if i == 0 { "" } else { "," },
                r.line,
                r.mem_usage,
                r.increment,
                r.allocated,
                r.freed,
                r.occurrences,
                Json(r.contents)
            );
        }
        out + "]}"
    }
}

/// A JSON string literal.
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// A signed byte count: "+1.0 MiB", "-16 B", "0 B"; `plus` puts the sign
/// on positive figures.
struct Signed(isize, bool);

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.0 {
            n if n < 0 => "-",
            n if n > 0 && self.1 => "+",
            _ => "",
        };
        f.pad(&format!("{sign}{}", Bytes(self.0.unsigned_abs())))
    }
}

impl fmt::Display for LineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Filename: {}  (fn {}, line {})",
            self.file, self.function, self.line
        )?;
        writeln!(f)?;
        let header =
            "Line #   Mem usage   Increment   Allocated       Freed  Occurrences  Line Contents";
        writeln!(f, "{header}")?;
        write!(f, "{}", "=".repeat(header.len()))?;
        for r in &self.rows {
            writeln!(f)?;
            if r.occurrences == 0 {
                write!(f, "{:>6}  {:56}  {}", r.line, "", r.contents)?;
                continue;
            }
            write!(
                f,
                "{:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>11}  {}",
                r.line,
                Signed(r.mem_usage, false),
                Signed(r.increment, true),
                Bytes(r.allocated).to_string(),
                Bytes(r.freed).to_string(),
                r.occurrences,
                r.contents
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> LineReport {
        LineReport {
            function: "f",
            module: "m",
            file: "src/a \"b\".rs",
            line: 3,
            rows: vec![
                LineRow {
                    line: 4,
                    mem_usage: 1 << 20,
                    increment: 1 << 20,
                    allocated: 1 << 20,
                    freed: 0,
                    occurrences: 1,
                    contents: "    let v = vec![0u8; 1 << 20];\t// \\",
                },
                LineRow {
                    line: 5,
                    mem_usage: 0,
                    increment: -(1 << 20),
                    allocated: 0,
                    freed: 1 << 20,
                    occurrences: 2,
                    contents: "    drop(v);",
                },
                LineRow {
                    line: 6,
                    mem_usage: 0,
                    increment: 0,
                    allocated: 0,
                    freed: 0,
                    occurrences: 0,
                    contents: "    unreached();",
                },
            ],
        }
    }

    #[test]
    fn table_has_memory_profilers_columns() {
        let text = report().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("src/a \"b\".rs") && lines[0].contains("fn f"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("Line #   Mem usage   Increment   Allocated"),
            "{text}"
        );
        assert!(
            lines[4].contains("1.0 MiB") && lines[4].contains("+1.0 MiB"),
            "{text}"
        );
        assert!(
            lines[5].contains("-1.0 MiB") && lines[5].contains("  2  "),
            "{text}"
        );
        assert!(
            !lines[6].contains('B') && lines[6].ends_with("unreached();"),
            "{text}"
        );
    }

    #[test]
    fn json_escapes_strings() {
        let json = report().to_json();
        assert!(json
            .starts_with("{\"function\":\"f\",\"module\":\"m\",\"file\":\"src/a \\\"b\\\".rs\""));
        assert!(
            json.contains("\"contents\":\"    let v = vec![0u8; 1 << 20];\\t// \\\\\""),
            "{json}"
        );
        assert!(json.contains(
            "\"increment\":-1048576,\"allocated\":0,\"freed\":1048576,\"occurrences\":2"
        ));
        assert_eq!(Json("\u{1}").to_string(), "\"\\u0001\"");
    }
}
