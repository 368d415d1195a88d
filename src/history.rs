//! Performance history: result records of one configuration measured against several llama.cpp
//! commits, ordered by the commits' dates, as a markdown table and an SVG plot.
//!
//! The records are the ones `llama-runner bench` writes ([`Record`]); each names the llama.cpp
//! commit it was built against (`build.commit`). The order and dates of the commits come from a
//! snapshot list (`scripts/llama-cpp-snapshots.tsv`: crate version, upstream commit, build
//! number, date); commits missing from it go last, by build number and then by the time the
//! record was made. Several records of the same commit (repeated rounds) are pooled: their
//! per-repetition samples are combined before the mean and standard deviation are taken.
//!
//! The plot has two panels sharing the x axis (one point per commit, labelled with the short
//! hash and date): prompt processing on top, generation below, each with one line per workload
//! and error bars of ± one standard deviation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::compare::compare_samples;
use crate::error::{Error, Result};
use crate::measure::{mean, stddev};
use crate::record::Record;

/// One llama.cpp snapshot of the history: a commit and its date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Full upstream commit hash.
    pub commit: String,
    /// Date of the snapshot (`YYYY-MM-DD`).
    pub date: String,
    /// What the snapshot came from (the crates.io version that bundles it).
    pub source: String,
    /// llama.cpp's build number of the commit (0 when unknown).
    pub build_number: u32,
}

/// Parses a snapshot list: tab-separated `crate_version commit build_number date` lines, `#`
/// comments, oldest first (the format of `scripts/llama-cpp-snapshots.tsv`).
pub fn parse_snapshots(text: &str) -> Vec<Snapshot> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').map(str::trim).collect();
            (f.len() >= 4).then(|| Snapshot {
                commit: f[1].to_string(),
                date: f[3].to_string(),
                source: f[0].to_string(),
                build_number: f[2].parse().unwrap_or(0),
            })
        })
        .collect()
}

/// The snapshot whose commit starts with `prefix` (any case): an error names the list when no
/// commit or several do.
pub fn resolve_snapshot<'a>(snapshots: &'a [Snapshot], prefix: &str) -> Result<&'a Snapshot> {
    let p = prefix.to_ascii_lowercase();
    let found: Vec<&Snapshot> =
        snapshots.iter().filter(|s| !p.is_empty() && s.commit.to_ascii_lowercase().starts_with(&p)).collect();
    match found[..] {
        [one] => Ok(one),
        [] => Err(Error::InvalidOption {
            option: "snapshot".into(),
            reason: format!("no snapshot commit starts with `{prefix}`"),
        }),
        _ => Err(Error::InvalidOption {
            option: "snapshot".into(),
            reason: format!(
                "`{prefix}` is ambiguous: {}",
                found.iter().map(|s| s.commit.as_str()).collect::<Vec<_>>().join(" ")
            ),
        }),
    }
}

/// Reads a snapshot list file (see [`parse_snapshots`]).
pub fn read_snapshots(path: &Path) -> Result<Vec<Snapshot>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    Ok(parse_snapshots(&text))
}

/// The record files named by `paths`: files as given, directories expanded to the `*.json`
/// files directly inside them (sorted).
pub fn record_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| Error::Io { path: p.clone(), source: e })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "json"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Pooled statistics of tokens/s samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// Mean tokens/s.
    pub mean: f64,
    /// Sample standard deviation of tokens/s.
    pub std: f64,
    /// The samples (tokens/s per repetition, over all pooled records).
    pub samples: Vec<f64>,
}

impl Stat {
    fn from_samples(samples: Vec<f64>) -> Option<Stat> {
        (!samples.is_empty()).then(|| Stat { mean: mean(&samples), std: stddev(&samples), samples })
    }
}

/// The measurements of one workload at one commit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Point {
    /// Prompt processing.
    pub pp: Option<Stat>,
    /// Generation.
    pub tg: Option<Stat>,
}

/// One commit of the history with its measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Full commit hash.
    pub commit: String,
    /// Snapshot date, when the snapshot list knows the commit.
    pub date: Option<String>,
    /// llama.cpp build number (0 = unknown).
    pub build_number: u32,
    /// Records pooled into this entry.
    pub n_records: usize,
    /// Per workload name.
    pub points: BTreeMap<String, Point>,
}

impl Entry {
    /// The commit shortened to 8 hex digits.
    pub fn short(&self) -> &str {
        self.commit.get(..8).unwrap_or(&self.commit)
    }

    /// `short (date)` or just the short hash.
    pub fn label(&self) -> String {
        match &self.date {
            Some(d) => format!("{} ({d})", self.short()),
            None => self.short().to_string(),
        }
    }
}

/// A performance history: entries oldest first, and the workloads in first-seen order.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Configuration names of the records (normally one).
    pub configs: Vec<String>,
    /// Workload names, in the order the records list them.
    pub workloads: Vec<String>,
    /// Workload descriptions (`pp32 + tg8`), by name.
    pub workload_shapes: BTreeMap<String, String>,
    /// One entry per commit, oldest first.
    pub entries: Vec<Entry>,
}

/// Builds the history of `records`, ordered by `snapshots` (see the module documentation).
/// `only` keeps just the named workloads (all when empty).
pub fn build(records: &[Record], snapshots: &[Snapshot], only: &[String]) -> Result<History> {
    if records.is_empty() {
        return Err(Error::InvalidOption { option: "records".into(), reason: "no records given".into() });
    }
    let mut configs: Vec<String> = Vec::new();
    let mut workloads: Vec<String> = Vec::new();
    let mut shapes = BTreeMap::new();
    // commit -> (build number, earliest start, records, workload -> (pp samples, tg samples))
    type Pool = BTreeMap<String, (Vec<f64>, Vec<f64>)>;
    let mut by_commit: BTreeMap<String, (u32, String, usize, Pool)> = BTreeMap::new();
    for r in records {
        if !configs.contains(&r.config) {
            configs.push(r.config.clone());
        }
        let slot = by_commit
            .entry(r.build.commit.clone())
            .or_insert_with(|| (r.build.build_number, r.started_at.clone(), 0, BTreeMap::new()));
        slot.2 += 1;
        if r.started_at < slot.1 {
            slot.1 = r.started_at.clone();
        }
        for w in &r.workloads {
            let name = &w.workload.name;
            // Quality workloads have no speed to plot.
            if w.workload.quality.is_some() || (!only.is_empty() && !only.contains(name)) {
                continue;
            }
            if !workloads.contains(name) {
                workloads.push(name.clone());
                let wl = &w.workload;
                let mut shape = format!("pp{} + tg{}", wl.n_prompt, wl.n_gen);
                if wl.turns > 1 {
                    let _ = write!(shape, " × {} turns", wl.turns);
                }
                if wl.n_depth > 0 {
                    let _ = write!(shape, " @ d{}", wl.n_depth);
                }
                shapes.insert(name.clone(), shape);
            }
            let pool = slot.3.entry(name.clone()).or_default();
            if let Some(pp) = &w.pp {
                pool.0.extend(&pp.samples_ts);
            }
            if let Some(tg) = &w.tg {
                pool.1.extend(&tg.samples_ts);
            }
        }
    }
    if let Some(missing) = only.iter().find(|n| !workloads.contains(n)) {
        return Err(Error::InvalidOption {
            option: "workload".into(),
            reason: format!("no record has a workload named `{missing}`"),
        });
    }
    let position = |commit: &str| snapshots.iter().position(|s| s.commit == commit);
    let mut entries: Vec<(Option<usize>, u32, String, Entry)> = by_commit
        .into_iter()
        .map(|(commit, (build_number, started, n_records, pool))| {
            let points = pool
                .into_iter()
                .map(|(name, (pp, tg))| (name, Point { pp: Stat::from_samples(pp), tg: Stat::from_samples(tg) }))
                .collect();
            let pos = position(&commit);
            let date = pos.map(|i| snapshots[i].date.clone());
            (pos, build_number, started, Entry { commit, date, build_number, n_records, points })
        })
        .collect();
    // Known snapshots in list order, then the rest by build number (0 = unknown last) and time.
    entries.sort_by(|a, b| {
        let key = |e: &(Option<usize>, u32, String, Entry)| {
            (e.0.unwrap_or(usize::MAX), if e.1 == 0 { u32::MAX } else { e.1 }, e.2.clone())
        };
        key(a).cmp(&key(b))
    });
    Ok(History { configs, workloads, workload_shapes: shapes, entries: entries.into_iter().map(|e| e.3).collect() })
}

fn stat_text(s: Option<&Stat>) -> String {
    s.map_or("–".into(), |s| format!("{:.2} ± {:.2}", s.mean, s.std))
}

fn change_text(prev: Option<&Stat>, cur: Option<&Stat>) -> String {
    match (prev, cur) {
        (Some(p), Some(c)) => {
            let ch = compare_samples(&p.samples, &c.samples);
            format!("{:+.1}% {}", ch.relative * 100.0, ch.verdict)
        }
        _ => "–".into(),
    }
}

/// The history as markdown: per workload a table of commit, date, prompt and generation
/// tokens/s (mean ± standard deviation) and the change against the previous commit.
pub fn markdown(h: &History) -> String {
    let mut out = String::new();
    for name in &h.workloads {
        let shape = h.workload_shapes.get(name).map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "### {name} ({shape})\n");
        let _ = writeln!(out, "| commit | date | records | pp t/s | pp vs previous | tg t/s | tg vs previous |");
        let _ = writeln!(out, "|---|---|---:|---:|---|---:|---|");
        let mut prev: Option<&Point> = None;
        for e in &h.entries {
            let Some(p) = e.points.get(name) else { continue };
            let (dpp, dtg) = match prev {
                Some(q) => (change_text(q.pp.as_ref(), p.pp.as_ref()), change_text(q.tg.as_ref(), p.tg.as_ref())),
                None => ("–".into(), "–".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {dpp} | {} | {dtg} |",
                e.short(),
                e.date.as_deref().unwrap_or("?"),
                e.n_records,
                stat_text(p.pp.as_ref()),
                stat_text(p.tg.as_ref()),
            );
            prev = Some(p);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "t/s: mean ± sample standard deviation over all repetitions of all records of the commit. \
         A change is called faster/slower when Welch's t-test gives p < {} and the means differ by \
         at least {:.0}%, else within noise.",
        crate::compare::ALPHA,
        crate::compare::MIN_EFFECT * 100.0
    );
    out
}

/// Line colours for the workloads (colour-blind safe, Okabe–Ito); the Pareto plot's too.
pub(crate) const COLOURS: &[&str] =
    &["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

/// `s` escaped for SVG text and attributes.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `n` ticks over `range`.
fn nice_step(range: f64, n: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The range and tick step of an axis over values from `lo` to `hi`: from 0 unless the values
/// are all well above it, in which case the axis starts at a round value below the lowest error
/// bar.
pub(crate) fn axis_range(lo: f64, hi: f64) -> (f64, f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo.max(0.0), hi.max(lo)) } else { (0.0, 1.0) };
    let hi = if hi <= 0.0 { 1.0 } else { hi };
    let start = if lo < 0.5 * hi { 0.0 } else { lo - 0.1 * (hi - lo).max(hi * 0.02) };
    let step = nice_step(hi - start, 5.0);
    let y0 = (start / step).floor() * step;
    let y1 = (hi / step).ceil() * step;
    let y1 = if y1 <= y0 { y0 + step } else { y1 };
    (y0, y1, step)
}

/// A tick label with as many decimals as the step needs.
pub(crate) fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{v:.decimals$}")
}

/// The start of an SVG document of `width` × `height` on white: the root element, the title
/// Horizontal grid lines with their tick labels left of the plot, from `y0` to `y1` every
/// `step` (`axis`), placed by `y_of`.
pub(crate) fn y_grid(s: &mut String, left: f64, plot_w: f64, axis: (f64, f64, f64), y_of: impl Fn(f64) -> f64) {
    let (y0, y1, step) = axis;
    let mut v = y0;
    while v <= y1 + step * 1e-6 {
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            fmt_tick(v, step)
        );
        v += step;
    }
}

/// and a grey subtitle under it, both centred on `centre_x`. The caller closes it (`</svg>`).
pub(crate) fn svg_open(width: f64, height: f64, centre_x: f64, title: &str, subtitle: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{centre_x:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ =
        writeln!(s, r##"<text x="{centre_x:.1}" y="42" text-anchor="middle" fill="#555">{}</text>"##, esc(subtitle));
    s
}

/// The history as an SVG document: prompt processing (top) and generation (bottom) against the
/// commits in date order, one line per workload, error bars of ± one standard deviation.
pub fn svg(h: &History, title: &str) -> String {
    let n = h.entries.len().max(1);
    let left = 80.0;
    let right = 190.0; // legend
    let step_x = 80.0_f64.max(560.0 / n as f64);
    let plot_w = step_x * n as f64;
    let width = left + plot_w + right;
    let top = 60.0;
    let panel_h = 230.0;
    let gap = 50.0;
    let label_h = 70.0;
    let height = top + 2.0 * panel_h + gap + label_h + 20.0;
    let x_of = |i: usize| left + step_x * (i as f64 + 0.5);

    let mut s = svg_open(
        width,
        height,
        left + plot_w / 2.0,
        title,
        "mean ± 1 standard deviation over repetitions; x: llama.cpp commit (snapshot date), oldest first",
    );

    type Pick = fn(&Point) -> Option<&Stat>;
    let panels: [(&str, Pick); 2] =
        [("prompt processing (pp), tokens/s", |p| p.pp.as_ref()), ("generation (tg), tokens/s", |p| p.tg.as_ref())];
    for (k, (name, pick)) in panels.iter().enumerate() {
        let y_top = top + k as f64 * (panel_h + gap);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for e in &h.entries {
            for w in &h.workloads {
                if let Some(st) = e.points.get(w).and_then(pick) {
                    lo = lo.min(st.mean - st.std);
                    hi = hi.max(st.mean + st.std);
                }
            }
        }
        let (y0, y1, ystep) = axis_range(lo, hi);
        // Values outside the axis (an error bar reaching below 0) are drawn at its edge.
        let y_of = |v: f64| y_top + panel_h - (v.clamp(y0, y1) - y0) / (y1 - y0) * panel_h;
        // Frame, grid and y ticks.
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{y_top}" width="{plot_w:.1}" height="{panel_h}" fill="none" stroke="#333"/>"##
        );
        y_grid(&mut s, left, plot_w, (y0, y1, ystep), y_of);
        for i in 0..h.entries.len() {
            let x = x_of(i);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y_top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
                y_top + panel_h
            );
        }
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            left - 55.0,
            y_top + panel_h / 2.0,
            esc(name)
        );
        // One line per workload, error bars, markers.
        let n_w = h.workloads.len();
        for (wi, w) in h.workloads.iter().enumerate() {
            let colour = COLOURS[wi % COLOURS.len()];
            // Workloads side by side around the commit's x, so their error bars do not overlap.
            let dodge = (wi as f64 - (n_w as f64 - 1.0) / 2.0) * (step_x * 0.5 / n_w as f64).min(8.0);
            let pts: Vec<(f64, &Stat)> = h
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.points.get(w).and_then(pick).map(|st| (x_of(i) + dodge, st)))
                .collect();
            if pts.len() > 1 {
                let path: Vec<String> = pts.iter().map(|(x, st)| format!("{x:.1},{:.1}", y_of(st.mean))).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    path.join(" ")
                );
            }
            for (x, st) in &pts {
                let (ya, yb) = (y_of(st.mean - st.std), y_of(st.mean + st.std));
                let _ = writeln!(
                    s,
                    r#"<g stroke="{colour}" stroke-width="1.5"><line x1="{x:.1}" y1="{ya:.1}" x2="{x:.1}" y2="{yb:.1}"/><line x1="{:.1}" y1="{ya:.1}" x2="{:.1}" y2="{ya:.1}"/><line x1="{:.1}" y1="{yb:.1}" x2="{:.1}" y2="{yb:.1}"/></g>"#,
                    x - 4.0,
                    x + 4.0,
                    x - 4.0,
                    x + 4.0
                );
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{}: {:.2} ± {:.2} t/s</title></circle>"#,
                    y_of(st.mean),
                    esc(w),
                    st.mean,
                    st.std
                );
            }
        }
    }
    // X labels under the lower panel: short hash and date on two lines.
    let y_lab = top + 2.0 * panel_h + gap + 18.0;
    for (i, e) in h.entries.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{y_lab:.1}" text-anchor="middle" font-family="DejaVu Sans Mono, monospace">{}</text>"#,
            esc(e.short())
        );
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            y_lab + 15.0,
            esc(e.date.as_deref().unwrap_or("?"))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">llama.cpp commit</text>"#,
        left + plot_w / 2.0,
        y_lab + 38.0
    );
    // Legend.
    let lx = left + plot_w + 20.0;
    let _ = writeln!(s, r#"<text x="{lx:.1}" y="{:.1}" font-weight="bold">workload</text>"#, top + 10.0);
    for (wi, w) in h.workloads.iter().enumerate() {
        let colour = COLOURS[wi % COLOURS.len()];
        let y = top + 32.0 + wi as f64 * 34.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"/><circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 12.0,
            lx + 30.0,
            y + 4.0,
            esc(w)
        );
        if let Some(shape) = h.workload_shapes.get(w) {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#555" font-size="11">{}</text>"##,
                lx + 30.0,
                y + 18.0,
                esc(shape)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_resolve_by_unique_prefix() {
        let list = parse_snapshots(
            "# crate_version\tupstream_commit\tbuild_number\tdate\n0.1.1\tabc123\t6482\t2025-01-01\n\
             0.1.2\tabd456\t0\t2025-02-01\nshort line\n",
        );
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].source.as_str(), list[0].build_number), ("0.1.1", 6482));
        assert_eq!(resolve_snapshot(&list, "ABC").unwrap().date, "2025-01-01");
        assert_eq!(resolve_snapshot(&list, "abd456").unwrap().commit, "abd456");
        let e = resolve_snapshot(&list, "ab").unwrap_err().to_string();
        assert!(e.contains("`ab` is ambiguous: abc123 abd456"), "{e}");
        assert!(resolve_snapshot(&list, "f").unwrap_err().to_string().contains("no snapshot commit starts with `f`"));
        assert!(resolve_snapshot(&list, "").is_err());
    }

    #[test]
    fn snapshot_list_is_parsed_in_order() {
        let text = "# comment\n0.1.115\taaaa1111\t0\t2025-08-15\n\n0.1.154\tbbbb2222\t10200\t2026-08-15\n";
        let s = parse_snapshots(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].commit.as_str(), s[0].date.as_str()), ("aaaa1111", "2025-08-15"));
        assert_eq!(s[1].source, "0.1.154");
    }

    #[test]
    fn ranges_and_steps_are_round() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        let (y0, y1, st) = axis_range(10.0, 95.0);
        assert_eq!((y0, y1, st), (0.0, 100.0, 20.0));
        // Values far from zero: the axis starts below the lowest one, on a tick.
        let (y0, y1, st) = axis_range(900.0, 1000.0);
        assert!(y0 > 0.0 && y0 <= 890.0 && y1 >= 1000.0 && (y0 / st).fract() == 0.0, "{y0} {y1} {st}");
    }
}
