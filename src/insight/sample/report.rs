//! Insight layer, sampling: reports — the sampled sites with their stacks
//! resolved to symbols, outside the allocator, and diffs between reports.

use super::sites::{profiler, RawCounts};
use super::stack::SAMPLER;
use core::cmp::Reverse;
use core::fmt;
use std::collections::HashMap;

use super::sites::BLOCK_SCALE;
use crate::core::sync::Ordering;
use crate::insight::stats::Bytes;

/// One frame of a site's stack, resolved when the report was taken
/// (inlined functions are frames of their own, sharing an `ip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The return address.
    pub ip: usize,
    /// The function, demangled without its hash, if known.
    pub name: Option<String>,
    /// The source file, if known.
    pub file: Option<String>,
    /// The source line, if known.
    pub line: Option<u32>,
}

impl Frame {
    /// What identifies the frame in a site: its function and source
    /// line, or its address when it was not resolved.
    fn key(&self) -> String {
        match &self.name {
            Some(name) => format!(
                "{name}\0{}:{}",
                self.file.as_deref().unwrap_or(""),
                self.line.unwrap_or(0)
            ),
            None => format!("{:#x}", self.ip),
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name)?,
            None => write!(f, "{:#x}", self.ip)?,
        }
        if let Some(file) = &self.file {
            // The last two path components are enough to recognise it.
            let short: Vec<&str> = file.rsplit('/').take(2).collect();
            write!(
                f,
                " ({}",
                short.into_iter().rev().collect::<Vec<_>>().join("/")
            )?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What was sampled at one call site: estimates (samples times what each
/// stands for) of the bytes and blocks allocated there and still live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The stack, innermost first, without the allocator's own frames
    /// (empty for the "other" site).
    pub frames: Vec<Frame>,
    /// Samples taken at this site.
    pub samples: u64,
    /// Samples not freed yet.
    pub live_samples: u64,
    /// Estimated bytes allocated here.
    pub allocated_bytes: u64,
    /// Estimated blocks allocated here.
    pub allocated_blocks: u64,
    /// Estimated bytes allocated here and not freed.
    pub live_bytes: u64,
    /// Estimated blocks allocated here and not freed.
    pub live_blocks: u64,
    /// Samples whose frees could not be tracked (live table full): counted
    /// as allocated, not as live.
    pub untracked_samples: u64,
    /// Whether this is the "other" site: stacks that found the site table
    /// full.
    pub other: bool,
    /// The source locations identifying the site (see [`Frame::key`]).
    key: Vec<String>,
}

impl Site {
    fn new(frames: Vec<Frame>, key: Vec<String>, c: &RawCounts, other: bool) -> Site {
        let scaled = |b: u64| (b as f64 / BLOCK_SCALE).round() as u64;
        Site {
            frames,
            samples: c.samples,
            live_samples: c.samples.saturating_sub(c.freed_samples),
            allocated_bytes: c.bytes,
            allocated_blocks: scaled(c.blocks),
            live_bytes: c.bytes.saturating_sub(c.freed_bytes),
            live_blocks: scaled(c.blocks.saturating_sub(c.freed_blocks)),
            untracked_samples: c.untracked_samples,
            other,
            key,
        }
    }

    /// The frame that best names the site: the innermost one outside the
    /// standard library (`core`, `alloc`, `std`, `hashbrown`), or else the
    /// innermost.
    pub fn location(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|f| f.name.as_deref().is_some_and(|n| !is_library(n)))
            .or(self.frames.first())
    }

    /// Whether a frame's function name contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.name.as_deref().is_some_and(|n| n.contains(needle)))
    }
}

/// Names of functions that are part of allocating, not of the program:
/// dropped from the top of sampled stacks.
fn is_allocator_machinery(name: Option<&str>) -> bool {
    let Some(name) = name else { return true };
    let name = name.trim_start_matches('<');
    [
        "backtrace::",
        "strata_alloc::",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rg_",
        "__rdl_",
        "_Unwind_",
        "alloc::alloc::",
        "alloc::raw_vec::",
        "std::alloc::",
        "core::alloc::",
        "std::thread::local::",
        "std::sys::thread_local::",
        "core::ops::function::",
        "core::cell::",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Names of standard-library functions (passed over by [`Site::location`]):
/// paths in `core`, `alloc`, `std` or `hashbrown`, and methods of types
/// there or of primitive types (`<u64 as core::fmt::Display>::fmt`, but
/// not `<app::Config as core::clone::Clone>::clone`).
fn is_library(name: &str) -> bool {
    const LIBRARY: [&str; 4] = ["core::", "alloc::", "std::", "hashbrown::"];
    let Some(qualified) = name.strip_prefix('<') else {
        return LIBRARY.iter().any(|p| name.starts_with(p));
    };
    // `<Type as Trait>::f` or `<Type>::f`: the implementing type decides.
    let ty = qualified.trim_start_matches(['&', '*', '[', '(', '<']);
    let ty = ty
        .strip_prefix("mut ")
        .or_else(|| ty.strip_prefix("const "))
        .or_else(|| ty.strip_prefix("dyn "))
        .unwrap_or(ty);
    let path_end = ty.find([' ', '<', '>', ';', ']', ')']).unwrap_or(ty.len());
    let path = &ty[..path_end];
    !path.contains("::") || LIBRARY.iter().any(|p| path.starts_with(p))
}

/// Resolves `ip` to its frames (innermost inlined function first).
fn resolve(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    #[cfg(not(miri))]
    backtrace::resolve(ip as *mut core::ffi::c_void, |symbol| {
        frames.push(Frame {
            ip,
            name: symbol.name().map(|n| format!("{n:#}")),
            file: symbol.filename().map(|p| p.display().to_string()),
            line: symbol.lineno(),
        })
    });
    if frames.is_empty() {
        frames.push(Frame {
            ip,
            name: None,
            file: None,
            line: None,
        });
    }
    frames
}

/// Turns raw stacks into sites: resolves them (each address once), drops
/// the allocator's frames from their tops, and merges stacks that then
/// agree, line for line (a site reached through different allocator
/// paths, unrolled copies of one call, a stack recorded twice in a race).
fn build_sites(
    raw: Vec<(Vec<usize>, RawCounts, bool)>,
    mut resolve: impl FnMut(usize) -> Vec<Frame>,
) -> Vec<Site> {
    let mut symbols: HashMap<usize, Vec<Frame>> = HashMap::new();
    let mut merged: HashMap<(Vec<String>, bool), (Vec<Frame>, RawCounts)> = HashMap::new();
    for (stack, counts, other) in raw {
        let mut frames = Vec::new();
        let mut kept = false;
        for &ip in &stack {
            let resolved = symbols.entry(ip).or_insert_with(|| resolve(ip));
            let start = if !kept {
                // Keep from the first frame that is not allocator machinery.
                match resolved
                    .iter()
                    .position(|f| !is_allocator_machinery(f.name.as_deref()))
                {
                    Some(i) => i,
                    None => continue,
                }
            } else {
                0
            };
            frames.extend_from_slice(&resolved[start..]);
            kept = true;
        }
        if !kept {
            // Nothing but allocator frames (or no symbols at all): keep
            // the whole stack rather than nothing.
            for &ip in &stack {
                frames.extend_from_slice(&symbols[&ip]);
            }
        }
        // Stacks through the same source lines are one site (copies of a
        // call made by unrolling or inlining have different addresses).
        let key = frames.iter().map(Frame::key).collect();
        let entry = merged
            .entry((key, other))
            .or_insert_with(|| (frames, RawCounts::default()));
        entry.1.add(&counts);
    }
    let mut sites: Vec<Site> = merged
        .into_iter()
        .map(|((key, other), (frames, counts))| Site::new(frames, key, &counts, other))
        .collect();
    sites.sort_by(|a, b| {
        (Reverse(a.live_bytes), Reverse(a.allocated_bytes), &a.key).cmp(&(
            Reverse(b.live_bytes),
            Reverse(b.allocated_bytes),
            &b.key,
        ))
    });
    sites
}

/// The sampled sites of the current (or last) session, resolved, largest
/// estimated live bytes first. `Display` renders the top 10 as a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The mean sampling interval of the session reported on (0 if none
    /// ever ran).
    pub interval: usize,
    /// Every site with samples, by estimated live bytes, then allocated
    /// bytes, largest first.
    pub sites: Vec<Site>,
}

impl Report {
    /// Reads and resolves the sampled sites of the running session, or
    /// of the last one once its guards are dropped (blocks freed since
    /// then are not taken off). Allocates, and may take a while: symbols
    /// are read from the binary's debug information the first time. The
    /// calling thread's allocations meanwhile are not sampled.
    pub fn take() -> Report {
        SAMPLER.with(|s| {
            s.paused(|| Report {
                interval: profiler().session_interval.load(Ordering::Relaxed),
                sites: build_sites(profiler().sites.read(), resolve),
            })
        })
    }

    /// Estimated bytes allocated and not freed, all sites.
    pub fn live_bytes(&self) -> u64 {
        self.sites.iter().map(|s| s.live_bytes).sum()
    }

    /// Estimated bytes allocated, all sites.
    pub fn allocated_bytes(&self) -> u64 {
        self.sites.iter().map(|s| s.allocated_bytes).sum()
    }

    /// Samples, all sites.
    pub fn samples(&self) -> u64 {
        self.sites.iter().map(|s| s.samples).sum()
    }

    /// The `n` sites with the most estimated live bytes.
    pub fn top_live(&self, n: usize) -> Vec<&Site> {
        self.sites.iter().take(n).collect()
    }

    /// The `n` sites with the most estimated allocated bytes (freed or
    /// not).
    pub fn top_allocated(&self, n: usize) -> Vec<&Site> {
        let mut sites: Vec<&Site> = self.sites.iter().collect();
        sites.sort_by_key(|s| (Reverse(s.allocated_bytes), Reverse(s.live_bytes)));
        sites.truncate(n);
        sites
    }

    /// The sites whose stack mentions a function containing `needle`.
    pub fn sites_mentioning(&self, needle: &str) -> Vec<&Site> {
        self.sites.iter().filter(|s| s.mentions(needle)).collect()
    }

    /// What changed from `self` to `later`, by site (`tracemalloc`'s
    /// `compare_to(.., 'traceback')`): biggest change in live bytes first.
    /// Both reports must come from the same session to be comparable.
    pub fn diff(&self, later: &Report) -> ReportDiff {
        let before: HashMap<(&[String], bool), &Site> = self
            .sites
            .iter()
            .map(|s| ((s.key.as_slice(), s.other), s))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<SiteDiff> = later
            .sites
            .iter()
            .map(|s| {
                seen.insert((s.key.as_slice(), s.other));
                SiteDiff::new(before.get(&(s.key.as_slice(), s.other)).copied(), s)
            })
            .collect();
        for s in &self.sites {
            if !seen.contains(&(s.key.as_slice(), s.other)) {
                let gone = Site {
                    live_samples: 0,
                    live_bytes: 0,
                    live_blocks: 0,
                    ..s.clone()
                };
                rows.push(SiteDiff::new(Some(s), &gone));
            }
        }
        rows.retain(|r| r.live_bytes_diff != 0 || r.allocated_bytes_diff != 0);
        rows.sort_by_key(|r| {
            (
                Reverse(r.live_bytes_diff.unsigned_abs()),
                Reverse(r.allocated_bytes_diff.unsigned_abs()),
            )
        });
        ReportDiff { rows }
    }

    /// Renders the top `n` sites by live bytes, with up to `depth` frames
    /// each.
    pub fn display(&self, n: usize, depth: usize) -> impl fmt::Display + '_ {
        DisplayReport {
            report: self,
            n,
            depth,
        }
    }
}

struct DisplayReport<'a> {
    report: &'a Report,
    n: usize,
    depth: usize,
}

/// Writes a site's name and up to `depth` frames.
fn write_site(f: &mut fmt::Formatter<'_>, site: &Site, depth: usize, indent: usize) -> fmt::Result {
    if site.other {
        return writeln!(f, "[other stacks: the site table was full]");
    }
    let Some(location) = site.location() else {
        return writeln!(f, "[unknown stack]");
    };
    writeln!(f, "{location}")?;
    let from = site
        .frames
        .iter()
        .position(|fr| core::ptr::eq(fr, location))
        .unwrap_or(0);
    for frame in site
        .frames
        .iter()
        .skip(from + 1)
        .take(depth.saturating_sub(1))
    {
        writeln!(f, "{:indent$}<- {frame}", "")?;
    }
    Ok(())
}

impl fmt::Display for DisplayReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        writeln!(
            f,
            "sampled allocation sites (mean interval {}; {} samples; estimates): \
             {} live, {} allocated",
            Bytes(r.interval),
            r.samples(),
            Bytes(r.live_bytes() as usize),
            Bytes(r.allocated_bytes() as usize),
        )?;
        writeln!(f, "      live   live blocks    allocated  samples  site")?;
        for site in r.sites.iter().take(self.n) {
            write!(
                f,
                "{:>10}  {:>12}  {:>11}  {:>7}  ",
                Bytes(site.live_bytes as usize).to_string(),
                site.live_blocks,
                Bytes(site.allocated_bytes as usize).to_string(),
                site.samples
            )?;
            write_site(f, site, self.depth, 48)?;
        }
        let untracked: u64 = r.sites.iter().map(|s| s.untracked_samples).sum();
        if untracked != 0 {
            writeln!(
                f,
                "({untracked} samples untracked: the live table was full)"
            )?;
        }
        if r.sites.len() > self.n {
            writeln!(f, "... {} more sites", r.sites.len() - self.n)?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display(10, 4).fmt(f)
    }
}

/// One row of a [`ReportDiff`]: a site and how its estimates changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteDiff {
    /// The site in the later report (with zero live figures if it is
    /// gone from it).
    pub site: Site,
    /// Change in estimated live bytes.
    pub live_bytes_diff: i64,
    /// Change in estimated live blocks.
    pub live_blocks_diff: i64,
    /// Estimated bytes allocated between the two reports.
    pub allocated_bytes_diff: i64,
    /// Samples taken between the two reports.
    pub samples_diff: i64,
}

impl SiteDiff {
    fn new(before: Option<&Site>, after: &Site) -> SiteDiff {
        let d = |f: fn(&Site) -> u64| f(after) as i64 - before.map_or(0, |b| f(b) as i64);
        SiteDiff {
            site: after.clone(),
            live_bytes_diff: d(|s| s.live_bytes),
            live_blocks_diff: d(|s| s.live_blocks),
            allocated_bytes_diff: d(|s| s.allocated_bytes),
            samples_diff: d(|s| s.samples),
        }
    }
}

/// The difference between two [`Report`]s, from [`Report::diff`]. `Display`
/// renders the top 10 rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportDiff {
    /// Sites whose estimates changed, biggest change in live bytes first.
    pub rows: Vec<SiteDiff>,
}

impl ReportDiff {
    /// The change in estimated live bytes, all sites.
    pub fn live_bytes_diff(&self) -> i64 {
        self.rows.iter().map(|r| r.live_bytes_diff).sum()
    }
}

impl fmt::Display for ReportDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signed = |b: i64| {
            let sign = if b < 0 { "-" } else { "+" };
            format!("{sign}{}", Bytes(b.unsigned_abs() as usize))
        };
        writeln!(
            f,
            "      live         +/-  allocated +/-  samples +/-  site"
        )?;
        for row in self.rows.iter().take(10) {
            write!(
                f,
                "{:>10}  {:>10}  {:>13}  {:>11}  ",
                Bytes(row.site.live_bytes as usize).to_string(),
                signed(row.live_bytes_diff),
                signed(row.allocated_bytes_diff),
                format!("{:+}", row.samples_diff),
            )?;
            write_site(f, &row.site, 2, 52)?;
        }
        if self.rows.len() > 10 {
            writeln!(f, "... {} more sites", self.rows.len() - 10)?;
        }
        write!(f, "live {}", signed(self.live_bytes_diff()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ip: usize, name: &str) -> Frame {
        Frame {
            ip,
            name: Some(name.into()),
            file: None,
            line: None,
        }
    }

    #[test]
    fn library_frames_are_told_from_the_program() {
        for lib in [
            "core::fmt::write",
            "<u64 as core::fmt::Display>::fmt",
            "<core::fmt::rt::Argument>::fmt",
            "<&mut alloc::string::String as core::fmt::Write>::write_fmt",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "<[u8] as alloc::borrow::ToOwned>::to_owned",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
        ] {
            assert!(is_library(lib), "{lib}");
        }
        for app in [
            "app::load",
            "<app::Config as core::clone::Clone>::clone",
            "<&app::Config as core::fmt::Debug>::fmt",
            "<app::Cache<K>>::insert",
            "app::main::{{closure}}",
        ] {
            assert!(!is_library(app), "{app}");
        }
    }

    #[test]
    fn sites_drop_allocator_frames_and_merge() {
        let names: HashMap<usize, Vec<Frame>> = [
            (1, vec![frame(1, "backtrace::trace")]),
            (
                2,
                vec![
                    frame(2, "strata_alloc::alloc_small"),
                    frame(2, "__rust_alloc"),
                ],
            ),
            (3, vec![frame(3, "strata_alloc::alloc_large")]),
            (
                4,
                vec![
                    frame(4, "alloc::alloc::alloc"),
                    frame(4, "alloc::vec::Vec<T>::with_capacity"),
                    frame(4, "app::load"),
                ],
            ),
            (5, vec![frame(5, "app::main")]),
            (6, vec![frame(6, "app::other")]),
        ]
        .into_iter()
        .collect();
        let counts = |bytes| RawCounts {
            samples: 1,
            bytes,
            blocks: 1024,
            ..RawCounts::default()
        };
        let raw = vec![
            (vec![1, 2, 4, 5], counts(100), false),
            // The same site through another allocator path: merged.
            (vec![1, 3, 4, 5], counts(200), false),
            (vec![1, 2, 6, 5], counts(1000), false),
            (vec![], counts(5), true),
        ];
        let sites = build_sites(raw, |ip| names[&ip].clone());
        assert_eq!(sites.len(), 3);
        assert_eq!(
            sites[0].location().unwrap().name.as_deref(),
            Some("app::other")
        );
        let load = &sites[1];
        assert_eq!(load.samples, 2);
        assert_eq!(load.live_bytes, 300);
        assert_eq!(load.allocated_blocks, 2);
        assert_eq!(
            load.frames[0].name.as_deref(),
            Some("alloc::vec::Vec<T>::with_capacity")
        );
        assert_eq!(load.location().unwrap().name.as_deref(), Some("app::load"));
        assert!(sites[2].other);
        let report = Report {
            interval: 1000,
            sites: sites.clone(),
        };
        let text = report.to_string();
        assert!(
            text.contains("app::other") && text.contains("<- app::main"),
            "{text}"
        );
        assert!(text.contains("[other stacks"), "{text}");
        // Diff: `load` grew, `other` vanished.
        let mut later = report.clone();
        later.sites[1].live_bytes += 50;
        later.sites[1].samples += 1;
        later.sites.remove(0);
        let d = report.diff(&later);
        assert_eq!(d.rows.len(), 2);
        assert_eq!(d.rows[0].live_bytes_diff, -1000);
        assert_eq!(d.rows[1].live_bytes_diff, 50);
        assert_eq!(d.live_bytes_diff(), -950);
        let text = d.to_string();
        assert!(text.contains("-1000 B") || text.contains("-1000"), "{text}");
    }
}
