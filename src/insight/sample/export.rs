//! Insight layer, sampling: a [`Report`] in the formats other tools read —
//! the collapsed-stack text of Brendan Gregg's flamegraph scripts, an
//! interactive flamegraph SVG (feature `flamegraph`, drawn by `inferno`)
//! and Google's pprof profile (feature `pprof`), so that `pprof -http`,
//! speedscope or any flamegraph viewer opens a strata profile.

use std::fmt::Write as _;

use super::report::{Frame, Report, Site};

/// Which figure of each site a profile is weighted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// Estimated bytes allocated at the site and not freed yet: what holds
    /// memory now (a heap profile).
    LiveBytes,
    /// Estimated bytes allocated at the site, freed or not: what churns.
    AllocatedBytes,
}

impl Weight {
    fn of(self, site: &Site) -> u64 {
        match self {
            Weight::LiveBytes => site.live_bytes,
            Weight::AllocatedBytes => site.allocated_bytes,
        }
    }

    #[cfg(feature = "flamegraph")]
    fn title(self) -> &'static str {
        match self {
            Weight::LiveBytes => "live bytes by allocation site",
            Weight::AllocatedBytes => "allocated bytes by allocation site",
        }
    }
}

/// The name a frame has in a collapsed stack: its function, or its
/// address when it was not resolved. `;` separates frames and the last
/// space the count, so neither may appear in a name.
fn frame_name(frame: &Frame) -> String {
    let name = match &frame.name {
        Some(name) => name.clone(),
        None => format!("{:#x}", frame.ip),
    };
    name.replace(';', ":").replace(' ', "")
}

impl Report {
    /// The report as collapsed stacks, one line per site with a non-zero
    /// `weight`: its frames outermost first, separated by `;`, then the
    /// weight in bytes (`main;parse;Vec::push 4096`). The format of
    /// `stackcollapse-*.pl`, read by `flamegraph.pl`, inferno, speedscope
    /// and most profilers' importers. The "other" site (stacks that found
    /// the table full) is the single frame `[other]`.
    ///
    /// ```
    /// use strata_alloc::profile::sampling::{Report, Weight};
    /// let text = Report::take().collapsed(Weight::LiveBytes);
    /// assert!(text.lines().all(|l| l.rsplit_once(' ').is_some()));
    /// ```
    pub fn collapsed(&self, weight: Weight) -> String {
        let mut out = String::new();
        for site in &self.sites {
            let w = weight.of(site);
            if w == 0 {
                continue;
            }
            if site.other || site.frames.is_empty() {
                out.push_str("[other]");
            } else {
                let names: Vec<String> = site.frames.iter().rev().map(frame_name).collect();
                out.push_str(&names.join(";"));
            }
            // Writing to a String cannot fail.
            let _ = writeln!(out, " {w}");
        }
        out
    }

    /// An interactive flamegraph SVG of the report (open it in a browser:
    /// click a frame to zoom, type to search), each frame as wide as the
    /// bytes allocated below it. Drawn by the `inferno` crate from
    /// [`Report::collapsed`]; a report without samples gives an SVG that
    /// says so.
    #[cfg(feature = "flamegraph")]
    pub fn flamegraph_svg(&self, weight: Weight) -> String {
        let collapsed = self.collapsed(weight);
        let mut options = inferno::flamegraph::Options::default();
        options.title = format!("strata: {}", weight.title());
        options.count_name = "bytes".to_string();
        let mut svg = Vec::new();
        // Writing to a Vec cannot fail, and inferno reports malformed
        // input lines only through its log, so the result is always an SVG.
        let _ = inferno::flamegraph::from_lines(&mut options, collapsed.lines(), &mut svg);
        String::from_utf8_lossy(&svg).into_owned()
    }

    /// The report as a gzip-compressed pprof profile (`profile.proto`),
    /// the format of Go's heap profiles: every site is one sample with the
    /// values `alloc_objects`, `alloc_space`, `inuse_objects` and
    /// `inuse_space` (estimated blocks and bytes), its stack as locations
    /// (inlined frames are lines of one location, as pprof expects), and
    /// the sampling interval as the period. Write it to a file and run
    /// `pprof -http=: file.pb.gz`; [`pprof::decode`] reads it back.
    #[cfg(feature = "pprof")]
    pub fn pprof(&self) -> Vec<u8> {
        pprof::encode(self)
    }
}

/// The pprof profile format: the messages of `profile.proto` this crate
/// writes, declared for `prost`, and the encoder.
#[cfg(feature = "pprof")]
pub mod pprof {
    use std::collections::HashMap;
    use std::io::{Read, Write};

    use super::super::report::{Frame, Report};

    /// `perftools.profiles.Profile`, the fields strata writes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        /// What each value of a sample measures.
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        /// One per allocation site.
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        /// The distinct return addresses of all stacks.
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        /// The distinct functions of all frames.
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Every string of the profile; entry 0 is "".
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        /// What the period counts.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// The mean sampling interval in bytes.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Index of the sample type shown by default (`inuse_space`).
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    /// A measure and its unit, as string-table indices.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        /// Index of the measure's name.
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        /// Index of the unit's name.
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// One allocation site.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// The stack, leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per sample type.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    /// A return address and the source lines it stands for.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        /// Its id, from 1.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// The return address.
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Innermost inlined function first, the caller last.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    /// A source line of a location.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        /// The function's id.
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        /// The line number, 0 if unknown.
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    /// A function.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        /// Its id, from 1.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Index of its demangled name.
        #[prost(int64, tag = "2")]
        pub name: i64,
        /// Index of its name as the linker saw it (the same here).
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        /// Index of its source file's name.
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }

    /// Reads a profile written by [`Report::pprof`] (or any gzip-compressed
    /// pprof profile, keeping the fields above).
    ///
    /// # Errors
    /// When `bytes` is not gzip data or not a profile: the message says which.
    pub fn decode(bytes: &[u8]) -> Result<Profile, String> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| format!("not a gzip-compressed pprof profile: {e}"))?;
        <Profile as prost::Message>::decode(raw.as_slice())
            .map_err(|e| format!("not a pprof profile (profile.proto): {e}"))
    }

    /// Interns strings, functions and locations while the profile is built.
    #[derive(Default)]
    struct Tables {
        strings: Vec<String>,
        string_ids: HashMap<String, i64>,
        functions: Vec<Function>,
        function_ids: HashMap<(i64, i64), u64>,
        locations: Vec<Location>,
        location_ids: HashMap<(usize, Vec<(u64, i64)>), u64>,
    }

    impl Tables {
        fn string(&mut self, s: &str) -> i64 {
            if let Some(&i) = self.string_ids.get(s) {
                return i;
            }
            let i = self.strings.len() as i64;
            self.strings.push(s.to_string());
            self.string_ids.insert(s.to_string(), i);
            i
        }

        fn function(&mut self, frame: &Frame) -> u64 {
            let name = match &frame.name {
                Some(n) => self.string(n),
                None => self.string(&format!("{:#x}", frame.ip)),
            };
            let file = self.string(frame.file.as_deref().unwrap_or(""));
            let next = self.functions.len() as u64 + 1;
            *self.function_ids.entry((name, file)).or_insert_with(|| {
                self.functions.push(Function {
                    id: next,
                    name,
                    system_name: name,
                    filename: file,
                });
                next
            })
        }

        /// The location of `frames`: the frames of one return address, the
        /// innermost inlined function first.
        fn location(&mut self, frames: &[Frame]) -> u64 {
            let lines: Vec<Line> = frames
                .iter()
                .map(|f| Line {
                    function_id: self.function(f),
                    line: i64::from(f.line.unwrap_or(0)),
                })
                .collect();
            let key = (
                frames[0].ip,
                lines.iter().map(|l| (l.function_id, l.line)).collect(),
            );
            let next = self.locations.len() as u64 + 1;
            *self.location_ids.entry(key).or_insert_with(|| {
                self.locations.push(Location {
                    id: next,
                    address: frames[0].ip as u64,
                    line: lines,
                });
                next
            })
        }
    }

    pub(super) fn encode(report: &Report) -> Vec<u8> {
        let mut t = Tables::default();
        t.string("");
        let value_type = |t: &mut Tables, ty: &str, unit: &str| ValueType {
            r#type: t.string(ty),
            unit: t.string(unit),
        };
        let sample_type = vec![
            value_type(&mut t, "alloc_objects", "count"),
            value_type(&mut t, "alloc_space", "bytes"),
            value_type(&mut t, "inuse_objects", "count"),
            value_type(&mut t, "inuse_space", "bytes"),
        ];
        let period_type = Some(value_type(&mut t, "space", "bytes"));
        let mut samples = Vec::with_capacity(report.sites.len());
        for site in &report.sites {
            let location_id = if site.other || site.frames.is_empty() {
                let other = Frame {
                    ip: 0,
                    name: Some("[other]".to_string()),
                    file: None,
                    line: None,
                };
                vec![t.location(std::slice::from_ref(&other))]
            } else {
                site.frames
                    .chunk_by(|a, b| a.ip == b.ip)
                    .map(|frames| t.location(frames))
                    .collect()
            };
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            samples.push(Sample {
                location_id,
                value: vec![
                    clamp(site.allocated_blocks),
                    clamp(site.allocated_bytes),
                    clamp(site.live_blocks),
                    clamp(site.live_bytes),
                ],
            });
        }
        let profile = Profile {
            sample_type,
            sample: samples,
            location: t.locations,
            function: t.functions,
            string_table: t.strings,
            period_type,
            period: report.interval as i64,
            default_sample_type: 3,
        };
        let raw = prost::Message::encode_to_vec(&profile);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or_default()
    }
}
