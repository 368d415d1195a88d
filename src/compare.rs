//! Comparison of result records: the table a configuration sweep ends with.
//!
//! Rows are records (configurations), columns are workloads; each cell shows prompt and
//! generation tokens/s as mean ± standard deviation, and for every record after the first the
//! change against the first in percent with a verdict:
//!
//! * **faster** / **slower**: Welch's t-test on the per-repetition samples rejects "same mean" at
//!   the 5% level *and* the means differ by at least [`MIN_EFFECT`] (2%). Both are needed: with
//!   a handful of very steady repetitions a t-test alone calls a 0.3% drift significant, and two
//!   runs of the same configuration in different processes routinely differ by that much;
//! * **within noise** otherwise.
//!
//! A quality workload ([`Workload::quality`](crate::measure::Workload::quality)) has three
//! columns instead: the perplexity, the mean KL divergence against its base file and the rate of
//! same top tokens, each ± its uncertainty. For every record after the first, the mean KLD's
//! difference from the first record's gets a quality verdict ([`compare_kld`]):
//!
//! * **worse** / **better**: the difference is larger than its uncertainty, `sqrt(e1² + e2²)`
//!   of the two means' standard errors, *and* at least [`MIN_KLD`] (1e-4), a floor far below
//!   what a change of cache type costs (q8_0 K/V ≈ 0.008 on the real model) and far above the
//!   base file's own 16-bit rounding (≈ 1e-6);
//! * **same** otherwise.
//!
//! A record whose quality workload wrote the base counts as KLD 0 ± 0 against it (it *is* the
//! base). Records measured against different base files are not compared ("other base"). The
//! two KLDs were measured over the same tokens, so their errors are positively correlated and
//! `sqrt(e1² + e2²)` overstates the difference's: the verdict errs towards "same".
//!
//! Neither verdict changes an exit status: `llama-runner compare` exits 0 whenever it prints
//! the table and `sweep` 1 only when a configuration failed to run, as before quality
//! workloads existed; a gate on speed is `llama-runner judge`.
//!
//! [`pareto`] and [`pareto_svg`] draw each record's speed against its mean KLD, the records
//! that no other beats on both marked (the Pareto front).

use std::fmt::Write as _;

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::error::{Error, Result};
use crate::history::{COLOURS, axis_range, esc, fmt_tick, svg_open};
use crate::measure::{Estimate, QualityResult, SampleStats, WorkloadResult};
use crate::record::Record;

/// Smallest relative change reported as faster or slower.
pub const MIN_EFFECT: f64 = 0.02;
/// Significance level of the t-test.
pub const ALPHA: f64 = 0.05;
/// Smallest difference of mean KLD reported as worse or better.
pub const MIN_KLD: f64 = 1e-4;

/// When a change counts as faster or slower: the t-test's significance level and the smallest
/// relative change (`llama-runner compare --alpha --min-effect`); when a difference of mean
/// KLD counts as worse or better (`--min-kld`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Smallest relative change called faster or slower (0.02 = 2%).
    pub min_effect: f64,
    /// Significance level of Welch's t-test.
    pub alpha: f64,
    /// Smallest difference of mean KLD called worse or better (besides exceeding its
    /// uncertainty).
    pub min_kld: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { min_effect: MIN_EFFECT, alpha: ALPHA, min_kld: MIN_KLD }
    }
}

/// The outcome of comparing two sample sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Significantly and materially faster.
    Faster,
    /// Significantly and materially slower.
    Slower,
    /// Not distinguishable from run-to-run noise.
    WithinNoise,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::WithinNoise => "within noise",
        })
    }
}

/// Change of `new` against `base`: relative difference of the means, the two-sided p-value of
/// Welch's t-test, and the verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// (new − base) / base.
    pub relative: f64,
    /// Two-sided p-value (1 when it cannot be computed).
    pub p_value: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The quality verdict of a difference of mean KLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityVerdict {
    /// A larger KLD than the baseline's, beyond its uncertainty and [`Thresholds::min_kld`].
    Worse,
    /// A smaller KLD than the baseline's, beyond its uncertainty and [`Thresholds::min_kld`].
    Better,
    /// Not distinguishable from the baseline.
    Same,
}

impl std::fmt::Display for QualityVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QualityVerdict::Worse => "worse",
            QualityVerdict::Better => "better",
            QualityVerdict::Same => "same",
        })
    }
}

/// The mean KLD of `new` against that of `base`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityChange {
    /// new − base.
    pub difference: f64,
    /// Its uncertainty, `sqrt(e_base² + e_new²)`.
    pub uncertainty: f64,
    /// The verdict.
    pub verdict: QualityVerdict,
}

/// Compares two mean KLDs against the same base (see the module documentation).
pub fn compare_kld(base: Estimate, new: Estimate, t: &Thresholds) -> QualityChange {
    let difference = new.value - base.value;
    let uncertainty = base.uncertainty.hypot(new.uncertainty);
    let verdict = if difference.abs() > uncertainty && difference.abs() >= t.min_kld {
        if difference > 0.0 { QualityVerdict::Worse } else { QualityVerdict::Better }
    } else {
        QualityVerdict::Same
    };
    QualityChange { difference, uncertainty, verdict }
}

/// Welch's two-sided t-test p-value for samples `a` and `b`.
pub fn welch_p_value(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    if a.len() < 2 || b.len() < 2 {
        return 1.0;
    }
    let (ma, mb) = (crate::measure::mean(a), crate::measure::mean(b));
    let (va, vb) = (crate::measure::stddev(a).powi(2), crate::measure::stddev(b).powi(2));
    let se2 = va / na + vb / nb;
    if se2 == 0.0 {
        return if ma == mb { 1.0 } else { 0.0 };
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2.powi(2) / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) => 2.0 * (1.0 - dist.cdf(t.abs())),
        Err(_) => 1.0,
    }
}

/// Compares two sample sets of tokens/s (higher is faster) with the default [`Thresholds`].
pub fn compare_samples(base: &[f64], new: &[f64]) -> Change {
    compare_samples_with(base, new, &Thresholds::default())
}

/// Compares two sample sets of tokens/s (higher is faster).
pub fn compare_samples_with(base: &[f64], new: &[f64], t: &Thresholds) -> Change {
    let (mb, mn) = (crate::measure::mean(base), crate::measure::mean(new));
    let relative = if mb == 0.0 { 0.0 } else { (mn - mb) / mb };
    let p_value = welch_p_value(base, new);
    let verdict = if p_value < t.alpha && relative.abs() >= t.min_effect {
        if relative > 0.0 { Verdict::Faster } else { Verdict::Slower }
    } else {
        Verdict::WithinNoise
    };
    Change { relative, p_value, verdict }
}

/// The first or second sample set of a workload's row.
type Pick = dyn Fn(&WorkloadResult) -> Option<SampleStats>;

fn cell(s: &Option<SampleStats>) -> String {
    s.as_ref().map_or("–".into(), |s| format!("{:.2} ± {:.2}", s.avg_ts, s.stddev_ts))
}

fn change_text(base: &Option<SampleStats>, new: &Option<SampleStats>, t: &Thresholds) -> String {
    match (base, new) {
        (Some(b), Some(n)) => {
            let c = compare_samples_with(&b.samples_ts, &n.samples_ts, t);
            format!("{:+.1}% {}", c.relative * 100.0, c.verdict)
        }
        _ => "–".into(),
    }
}

fn find<'a>(r: &'a Record, name: &str) -> Option<&'a WorkloadResult> {
    r.workloads.iter().find(|w| w.workload.name == name)
}

/// The markdown comparison table of `records` (the first is the baseline), default thresholds.
pub fn markdown_table(records: &[Record]) -> String {
    markdown_table_with(records, &Thresholds::default())
}

/// The markdown comparison table of `records` (the first is the baseline).
pub fn markdown_table_with(records: &[Record], t: &Thresholds) -> String {
    let mut names: Vec<String> = Vec::new();
    for r in records {
        for w in &r.workloads {
            if !names.contains(&w.workload.name) {
                names.push(w.workload.name.clone());
            }
        }
    }
    let quality = |n: &str| records.iter().filter_map(|r| find(r, n)).any(|w| w.workload.quality.is_some());
    let speculative = |n: &str| records.iter().filter_map(|r| find(r, n)).any(|w| w.workload.speculative.is_some());
    let mut out = String::new();
    let _ = write!(out, "| configuration | llama.cpp |");
    for n in &names {
        let parallel = records.iter().find_map(|r| find(r, n)).map_or(1, |w| w.workload.parallel);
        if quality(n) {
            let _ = write!(out, " {n} PPL | {n} mean KLD | {n} same top |");
        } else if speculative(n) {
            let _ = write!(out, " {n} plain tg t/s | {n} speculative tg t/s |");
        } else if parallel > 1 {
            let _ = write!(out, " {n} pp t/s ({parallel} seqs, total) | {n} tg t/s ({parallel} seqs, total) |");
        } else {
            let _ = write!(out, " {n} pp t/s | {n} tg t/s |");
        }
    }
    let _ = writeln!(out, " peak memory (MiB) |");
    let _ = write!(out, "|---|---|");
    for n in &names {
        let _ = write!(out, "{}", if quality(n) { "---:|---:|---:|" } else { "---:|---:|" });
    }
    let _ = writeln!(out, "---:|");
    for (i, r) in records.iter().enumerate() {
        let _ = write!(out, "| {} | {} (b{}) |", r.config, r.build.commit.get(..8).unwrap_or(""), r.build.build_number);
        for n in &names {
            let w = find(r, n);
            if quality(n) {
                let base = (i > 0).then(|| find(&records[0], n).and_then(|w| w.quality.as_ref()));
                for text in quality_cells(w.and_then(|w| w.quality.as_ref()), base, t) {
                    let _ = write!(out, " {text} |");
                }
                continue;
            }
            let spec = speculative(n);
            let first = move |w: &WorkloadResult| {
                if spec { w.speculative.as_ref().map(|s| s.plain.clone()) } else { w.pp.clone() }
            };
            let second = |w: &WorkloadResult| w.tg.clone();
            for pick in [&first as &Pick, &second] {
                let stats = w.map(pick).unwrap_or(None);
                let mut text = cell(&stats);
                if i > 0 {
                    let base = find(&records[0], n).map(pick).unwrap_or(None);
                    let _ = write!(text, "<br>{}", change_text(&base, &stats, t));
                }
                let _ = write!(out, " {text} |");
            }
        }
        let _ = writeln!(out, " {} |", memory_text(r));
    }
    let _ = writeln!(
        out,
        "\nChange against the first row; a verdict of faster/slower needs Welch's t-test p < {} and a change of at least {}%.",
        t.alpha,
        t.min_effect * 100.0
    );
    if names.iter().any(|n| quality(n)) {
        let _ = writeln!(
            out,
            "Quality: perplexity, mean KL divergence against the base file and same top token, ± one standard error; \
             the change is the mean KLD's difference from the first row's, worse/better when it exceeds both its \
             uncertainty sqrt(e1² + e2²) and {}. A row that wrote the base is the base (KLD 0).",
            t.min_kld
        );
    }
    cost_tables(records, &names, &mut out);
    spec_tables(records, &names, &mut out);
    out
}

/// One table per speculative workload: plain and speculative generation speed, the speed-up
/// with its verdict, and the drafter's acceptance, per record.
fn spec_tables(records: &[Record], names: &[String], out: &mut String) {
    for n in names {
        let rows: Vec<(&Record, &crate::speculate::SpecResult)> =
            records.iter().filter_map(|r| find(r, n).and_then(|w| w.speculative.as_ref()).map(|s| (r, s))).collect();
        if rows.is_empty() {
            continue;
        }
        let _ =
            writeln!(out, "\nSpeculative decoding, `{n}` (plain and speculative interleaved in each repetition):\n");
        let _ = writeln!(
            out,
            "| configuration | drafter | plain t/s | speculative t/s | speed-up | accepted / drafted | per verification | \
             acceptance by draft position | same tokens |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|");
        for (r, s) in rows {
            let st = &s.stats;
            let by_position: Vec<String> = st
                .accepted_at
                .iter()
                .zip(&st.drafted_at)
                .map(|(&a, &d)| if d == 0 { "–".into() } else { format!("{:.0}%", 100.0 * a as f64 / d as f64) })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | **{:.2}x** {} | {} / {} ({:.1}%) | {:.2} | {} | {} |",
                r.config,
                st.drafter,
                s.plain.avg_ts,
                s.plain.stddev_ts,
                s.speculative.avg_ts,
                s.speculative.stddev_ts,
                s.speedup,
                s.verdict,
                st.accepted,
                st.drafted,
                100.0 * st.acceptance,
                st.mean_accepted,
                by_position.join(" "),
                match (s.exact, s.first_difference) {
                    (true, _) => "yes".to_string(),
                    (false, Some(k)) => format!("**no**, from token {k}"),
                    (false, None) => "**no**".to_string(),
                }
            );
        }
    }
}

/// The PPL, mean KLD and same-top cells of a quality workload's result `q`; for a row after
/// the first, `base` is the first row's result (`Some(None)`: it has none), and the KLD cell
/// gets the change against it.
fn quality_cells(q: Option<&QualityResult>, base: Option<Option<&QualityResult>>, t: &Thresholds) -> [String; 3] {
    let Some(q) = q else { return ["–".into(), "–".into(), "–".into()] };
    let ppl = match q.ppl_uncertainty {
        Some(u) => format!("{:.4} ± {u:.4}", q.ppl),
        None => format!("{:.4}", q.ppl),
    };
    let (mut kld, top) = match &q.kld {
        Some(k) => (
            format!("{:.6} ± {:.6}", k.mean.value, k.mean.uncertainty),
            format!("{:.2} ± {:.2} %", 100.0 * k.same_top.value, 100.0 * k.same_top.uncertainty),
        ),
        None => ("0 (base)".to_string(), "100 % (base)".to_string()),
    };
    match base {
        None => {}
        Some(None) => kld.push_str("<br>–"),
        Some(Some(b)) if b.base != q.base => kld.push_str("<br>– (other base)"),
        Some(Some(b)) => {
            let c = compare_kld(b.mean_kld(), q.mean_kld(), t);
            let _ = write!(kld, "<br>{:+.6} ± {:.6} {}", c.difference, c.uncertainty, c.verdict);
        }
    }
    [ppl, kld, top]
}

/// One table per workload with a cost curve: the time of one decode of k tokens (ms, and
/// relative to one token) per record.
fn cost_tables(records: &[Record], names: &[String], out: &mut String) {
    for n in names {
        let mut sizes: Vec<u32> = Vec::new();
        for r in records {
            if let Some(w) = find(r, n) {
                for c in &w.cost {
                    if !sizes.contains(&c.n_tokens) {
                        sizes.push(c.n_tokens);
                    }
                }
            }
        }
        if sizes.is_empty() {
            continue;
        }
        sizes.sort_unstable();
        let _ = writeln!(out, "\nCost of one decode of k tokens after the prompt, `{n}` (ms; × one token's):\n");
        let _ = write!(out, "| configuration |");
        for k in &sizes {
            let _ = write!(out, " k={k} |");
        }
        let _ = writeln!(out);
        let _ = write!(out, "|---|");
        for _ in &sizes {
            let _ = write!(out, "---:|");
        }
        let _ = writeln!(out);
        for r in records {
            let _ = write!(out, "| {} |", r.config);
            for k in &sizes {
                match find(r, n).and_then(|w| w.cost.iter().find(|c| c.n_tokens == *k)) {
                    Some(c) => {
                        let _ = write!(
                            out,
                            " {:.2} ± {:.2} (×{:.2}) |",
                            c.samples.avg_ns / 1e6,
                            c.samples.stddev_ns / 1e6,
                            c.relative
                        );
                    }
                    None => {
                        let _ = write!(out, " – |");
                    }
                }
            }
            let _ = writeln!(out);
        }
    }
}

/// Memory used by the run: per non-CPU device the VRAM taken between "before load" and
/// "after context", else the process's resident memory after context creation.
fn memory_text(r: &Record) -> String {
    let (Some(before), Some(after)) = (r.memory.first(), r.memory.last()) else { return "–".into() };
    let gpus: Vec<String> = after
        .devices
        .iter()
        .filter(|d| d.kind != "cpu")
        .filter_map(|d| {
            let b = before.devices.iter().find(|x| x.name == d.name)?;
            Some(format!("{} {}", d.name, b.memory_free.saturating_sub(d.memory_free) >> 20))
        })
        .collect();
    let rss = format!("RSS {}", after.process_rss >> 20);
    if gpus.is_empty() { rss } else { format!("{}, {rss}", gpus.join(", ")) }
}

/// One record in the Pareto view: its speed against its mean KLD.
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoPoint {
    /// The record's configuration name.
    pub config: String,
    /// Mean tokens/s of the speed workload's metric.
    pub tps: f64,
    /// Their standard deviation over repetitions.
    pub tps_std: f64,
    /// Mean KLD of the quality workload (0 ± 0 for the record that wrote the base).
    pub kld: Estimate,
    /// Whether no other record is at least as fast with at most its KLD (and better in one).
    pub on_front: bool,
}

/// Speed against quality over a set of records ([`pareto`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Pareto {
    /// The speed workload.
    pub speed_workload: String,
    /// Its metric: `tg` (generation) when it has one, else `pp`.
    pub metric: &'static str,
    /// The quality workload.
    pub quality_workload: String,
    /// One point per record that has both workloads, in record order.
    pub points: Vec<ParetoPoint>,
    /// The configurations of records left out (one of the workloads missing).
    pub left_out: Vec<String>,
}

/// Each record's speed (`speed`: a workload's name; default the first speed workload of the
/// records) against its mean KLD (`quality`: default the first quality workload), and the
/// Pareto front of the points. Records with a different base from the first point's are
/// refused: their KLDs are not comparable.
pub fn pareto(records: &[Record], speed: Option<&str>, quality: Option<&str>) -> Result<Pareto> {
    let invalid = |reason: String| Error::InvalidOption { option: "pareto".into(), reason };
    let all = || records.iter().flat_map(|r| r.workloads.iter());
    let pick = |named: Option<&str>, want_quality: bool, what: &str| -> Result<String> {
        let is_kind = |w: &WorkloadResult| w.workload.quality.is_some() == want_quality;
        match named {
            Some(n) => match all().find(|w| w.workload.name == n) {
                Some(w) if is_kind(w) => Ok(n.to_string()),
                Some(_) => Err(invalid(format!("workload `{n}` is not a {what} workload"))),
                None => Err(invalid(format!("no record has a workload named `{n}`"))),
            },
            None => all()
                .find(|w| is_kind(w))
                .map(|w| w.workload.name.clone())
                .ok_or_else(|| invalid(format!("no record has a {what} workload"))),
        }
    };
    let speed_workload = pick(speed, false, "speed")?;
    let quality_workload = pick(quality, true, "quality")?;
    let has_tg = all().any(|w| w.workload.name == speed_workload && w.tg.is_some());
    let metric = if has_tg { "tg" } else { "pp" };
    let mut points = Vec::new();
    let mut left_out = Vec::new();
    let mut first_base = None;
    for r in records {
        let s = find(r, &speed_workload).and_then(|w| if has_tg { w.tg.as_ref() } else { w.pp.as_ref() });
        let q = find(r, &quality_workload).and_then(|w| w.quality.as_ref());
        let (Some(s), Some(q)) = (s, q) else {
            left_out.push(r.config.clone());
            continue;
        };
        match &first_base {
            None => first_base = Some(q.base.clone()),
            Some(b) if *b != q.base => {
                return Err(invalid(format!(
                    "`{}` was measured against {}, the others against {}: KLDs of different bases do not compare",
                    r.config,
                    q.base.display(),
                    b.display()
                )));
            }
            Some(_) => {}
        }
        points.push(ParetoPoint {
            config: r.config.clone(),
            tps: s.avg_ts,
            tps_std: s.stddev_ts,
            kld: q.mean_kld(),
            on_front: false,
        });
    }
    if points.is_empty() {
        return Err(invalid(format!("no record has both `{speed_workload}` and `{quality_workload}`")));
    }
    mark_front(&mut points);
    Ok(Pareto { speed_workload, metric, quality_workload, points, left_out })
}

/// Sets [`ParetoPoint::on_front`]: a point is on the front when no other is at least as fast
/// with at most its mean KLD, and strictly better in one of the two.
pub fn mark_front(points: &mut [ParetoPoint]) {
    let dominated = |p: &ParetoPoint| {
        points
            .iter()
            .any(|o| o.kld.value <= p.kld.value && o.tps >= p.tps && (o.kld.value < p.kld.value || o.tps > p.tps))
    };
    let front: Vec<bool> = points.iter().map(|p| !dominated(p)).collect();
    for (p, f) in points.iter_mut().zip(front) {
        p.on_front = f;
    }
}

/// The Pareto view as an SVG document (the history plot's style): tokens/s against mean KLD,
/// one labelled point per record with error bars (± one standard deviation of tokens/s, ± one
/// standard error of the KLD), the front's points filled and joined by a dashed line.
pub fn pareto_svg(p: &Pareto, title: &str) -> String {
    let (left, right, top, plot_w, plot_h) = (90.0, 40.0, 60.0, 560.0, 360.0);
    let (width, height) = (left + plot_w + right, top + plot_h + 70.0);
    let lo_hi = |v: &mut dyn Iterator<Item = (f64, f64)>| {
        v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)))
    };
    let (xl, xh) =
        lo_hi(&mut p.points.iter().map(|q| (q.kld.value - q.kld.uncertainty, q.kld.value + q.kld.uncertainty)));
    let (yl, yh) = lo_hi(&mut p.points.iter().map(|q| (q.tps - q.tps_std, q.tps + q.tps_std)));
    let (x0, x1, xstep) = axis_range(xl, xh);
    let (y0, y1, ystep) = axis_range(yl, yh);
    let x_of = |v: f64| left + (v.clamp(x0, x1) - x0) / (x1 - x0) * plot_w;
    let y_of = |v: f64| top + plot_h - (v.clamp(y0, y1) - y0) / (y1 - y0) * plot_h;
    let subtitle = format!(
        "{} tokens/s of `{}` (mean ± 1 sd) against mean KLD of `{}` (± 1 se); filled: the Pareto front",
        p.metric, p.speed_workload, p.quality_workload
    );
    let mut s = svg_open(width, height, left + plot_w / 2.0, title, &subtitle);
    let _ =
        writeln!(s, r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##);
    crate::history::y_grid(&mut s, left, plot_w, (y0, y1, ystep), y_of);
    let mut v = x0;
    while v <= x1 + xstep * 1e-6 {
        let x = x_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 18.0,
            fmt_tick(v, xstep)
        );
        v += xstep;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">mean KL divergence against the base (lower is better)</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 42.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{} tokens/s (higher is better)</text>"#,
        left - 60.0,
        top + plot_h / 2.0,
        esc(p.metric)
    );
    let (front_colour, other_colour) = (COLOURS[1], "#777");
    let mut front: Vec<&ParetoPoint> = p.points.iter().filter(|q| q.on_front).collect();
    front.sort_by(|a, b| a.kld.value.total_cmp(&b.kld.value));
    if front.len() > 1 {
        let path: Vec<String> = front.iter().map(|q| format!("{:.1},{:.1}", x_of(q.kld.value), y_of(q.tps))).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{front_colour}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            path.join(" ")
        );
    }
    // Label boxes placed so far (x from, x to, baseline): a label that would overlap one moves
    // down a line.
    let mut placed: Vec<(f64, f64, f64)> = Vec::new();
    for q in &p.points {
        let colour = if q.on_front { front_colour } else { other_colour };
        let (x, y) = (x_of(q.kld.value), y_of(q.tps));
        let (xa, xb) = (x_of(q.kld.value - q.kld.uncertainty), x_of(q.kld.value + q.kld.uncertainty));
        let (ya, yb) = (y_of(q.tps - q.tps_std), y_of(q.tps + q.tps_std));
        let _ = writeln!(
            s,
            r#"<g stroke="{colour}" stroke-width="1.2"><line x1="{x:.1}" y1="{ya:.1}" x2="{x:.1}" y2="{yb:.1}"/><line x1="{xa:.1}" y1="{y:.1}" x2="{xb:.1}" y2="{y:.1}"/></g>"#
        );
        let fill = if q.on_front { colour } else { "white" };
        let _ = writeln!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{fill}" stroke="{colour}" stroke-width="1.5"><title>{}: {:.2} ± {:.2} t/s, KLD {:.6} ± {:.6}</title></circle>"#,
            esc(&q.config),
            q.tps,
            q.tps_std,
            q.kld.value,
            q.kld.uncertainty
        );
        // Labels to the right of their point, or to the left in the plot's right quarter.
        let (lx, anchor) = if x > left + 0.75 * plot_w { (x - 9.0, "end") } else { (x + 9.0, "start") };
        let text_w = 7.0 * q.config.chars().count() as f64;
        let (from, to) = if anchor == "end" { (lx - text_w, lx) } else { (lx, lx + text_w) };
        let mut ly = y - 7.0;
        while placed.iter().any(|&(a, b, py)| from < b && a < to && (py - ly).abs() < 14.0) {
            ly += 14.0;
        }
        placed.push((from, to, ly));
        let _ = writeln!(s, r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="{anchor}">{}</text>"#, esc(&q.config));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_matches_a_known_value() {
        // scipy.stats.ttest_ind(a, b, equal_var=False):
        // statistic = -2.2255, df = 24.5246, pvalue = 0.0354845308300
        let a = [19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0];
        let b = [
            28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0, 23.9, 21.6, 24.3, 20.4,
            23.9, 13.3,
        ];
        let p = welch_p_value(&a, &b);
        assert!((p - 0.035_484_530_83).abs() < 1e-9, "p = {p}");
    }

    #[test]
    fn verdicts() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        assert_eq!(compare_samples(&base, &[80.0, 81.0, 79.0, 80.5, 79.5]).verdict, Verdict::Slower);
        assert_eq!(compare_samples(&base, &[120.0, 121.0, 119.0, 120.5, 119.5]).verdict, Verdict::Faster);
        assert_eq!(compare_samples(&base, &[100.2, 100.8, 99.1, 100.4, 99.9]).verdict, Verdict::WithinNoise);
        // Significant but tiny (0.5%): within noise.
        assert_eq!(compare_samples(&base, &[100.5, 101.5, 99.5, 101.0, 100.0]).verdict, Verdict::WithinNoise);
    }

    #[test]
    fn thresholds_move_the_verdict() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        let new = [96.0, 97.0, 95.0, 96.5, 95.5]; // -4%, p ≈ 3e-5
        let c = compare_samples(&base, &new);
        assert!((c.relative + 0.04).abs() < 1e-12 && c.p_value < 1e-4, "{c:?}");
        assert_eq!(c.verdict, Verdict::Slower);
        let with = |min_effect, alpha| {
            compare_samples_with(&base, &new, &Thresholds { min_effect, alpha, min_kld: MIN_KLD }).verdict
        };
        assert_eq!(with(0.05, ALPHA), Verdict::WithinNoise, "a 5% floor");
        assert_eq!(with(0.03, ALPHA), Verdict::Slower);
        assert_eq!(with(MIN_EFFECT, 1e-6), Verdict::WithinNoise, "a stricter significance level");
    }

    fn est(value: f64, uncertainty: f64) -> Estimate {
        Estimate { value, uncertainty }
    }

    #[test]
    fn quality_verdicts_need_the_uncertainty_and_the_floor() {
        let t = Thresholds::default();
        let v = |base, new| compare_kld(base, new, &t).verdict;
        // q4_0 against f16 on the real model: far beyond both.
        assert_eq!(v(est(0.0076, 0.0003), est(0.1269, 0.0079)), QualityVerdict::Worse);
        assert_eq!(v(est(0.1269, 0.0079), est(0.0076, 0.0003)), QualityVerdict::Better);
        // Within the combined uncertainty: sqrt(0.0003² + 0.0004²) = 0.0005 > 0.0004.
        let c = compare_kld(est(0.0076, 0.0003), est(0.0080, 0.0004), &t);
        assert!((c.uncertainty - 0.0005).abs() < 1e-12 && (c.difference - 0.0004).abs() < 1e-12, "{c:?}");
        assert_eq!(c.verdict, QualityVerdict::Same);
        // Beyond a tiny uncertainty but below the floor: the base file's own rounding.
        assert_eq!(v(est(0.0, 0.0), est(-1.3e-6, 1e-8)), QualityVerdict::Same);
        let no_floor = Thresholds { min_kld: 0.0, ..t };
        assert_eq!(compare_kld(est(0.0, 0.0), est(-1.3e-6, 1e-8), &no_floor).verdict, QualityVerdict::Better);
        assert_eq!(QualityVerdict::Worse.to_string(), "worse");
    }

    fn point(config: &str, tps: f64, kld: f64) -> ParetoPoint {
        ParetoPoint { config: config.into(), tps, tps_std: 0.5, kld: est(kld, kld / 20.0), on_front: false }
    }

    #[test]
    fn the_front_is_the_points_nothing_beats_on_both() {
        let mut points = vec![
            point("base", 40.0, 0.0),
            point("slow-and-worse", 38.0, 0.01),
            point("faster-but-worse", 45.0, 0.12),
            point("as-fast-and-worse", 45.0, 0.2),
            point("fastest", 50.0, 0.3),
        ];
        mark_front(&mut points);
        let front: Vec<&str> = points.iter().filter(|p| p.on_front).map(|p| p.config.as_str()).collect();
        assert_eq!(front, ["base", "faster-but-worse", "fastest"]);
        // Equal points do not dominate each other.
        let mut twins = vec![point("a", 40.0, 0.01), point("b", 40.0, 0.01)];
        mark_front(&mut twins);
        assert!(twins.iter().all(|p| p.on_front));
    }

    #[test]
    fn the_pareto_plot_marks_and_labels_its_points() {
        let p = Pareto {
            speed_workload: "gen".into(),
            metric: "tg",
            quality_workload: "kld".into(),
            points: vec![
                ParetoPoint { on_front: true, ..point("f16", 40.0, 0.0) },
                ParetoPoint { on_front: true, ..point("q4_0", 44.0, 0.12) },
                point("q8<0", 39.0, 0.008),
            ],
            left_out: Vec::new(),
        };
        let svg = pareto_svg(&p, "tg tokens/s against mean KLD");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(">f16<") && svg.contains(">q4_0<") && svg.contains(">q8&lt;0<"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("stroke-dasharray").count(), 1, "one front line");
        assert!(svg.contains("mean KL divergence against the base") && svg.contains("tg tokens/s"));
    }
}
