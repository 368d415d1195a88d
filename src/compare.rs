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

use std::fmt::Write as _;

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::measure::{SampleStats, WorkloadResult};
use crate::record::Record;

/// Smallest relative change reported as faster or slower.
pub const MIN_EFFECT: f64 = 0.02;
/// Significance level of the t-test.
pub const ALPHA: f64 = 0.05;

/// When a change counts as faster or slower: the t-test's significance level and the smallest
/// relative change (`llama-runner compare --alpha --min-effect`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Smallest relative change called faster or slower (0.02 = 2%).
    pub min_effect: f64,
    /// Significance level of Welch's t-test.
    pub alpha: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { min_effect: MIN_EFFECT, alpha: ALPHA }
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
    let mut out = String::new();
    let _ = write!(out, "| configuration | llama.cpp |");
    for n in &names {
        let parallel = records.iter().find_map(|r| find(r, n)).map_or(1, |w| w.workload.parallel);
        if parallel > 1 {
            let _ = write!(out, " {n} pp t/s ({parallel} seqs, total) | {n} tg t/s ({parallel} seqs, total) |");
        } else {
            let _ = write!(out, " {n} pp t/s | {n} tg t/s |");
        }
    }
    let _ = writeln!(out, " peak memory (MiB) |");
    let _ = write!(out, "|---|---|");
    for _ in &names {
        let _ = write!(out, "---:|---:|");
    }
    let _ = writeln!(out, "---:|");
    for (i, r) in records.iter().enumerate() {
        let _ = write!(out, "| {} | {} (b{}) |", r.config, r.build.commit.get(..8).unwrap_or(""), r.build.build_number);
        for n in &names {
            let w = find(r, n);
            for pick in [|w: &WorkloadResult| w.pp.clone(), |w: &WorkloadResult| w.tg.clone()] {
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
    cost_tables(records, &names, &mut out);
    out
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
        let with = |min_effect, alpha| compare_samples_with(&base, &new, &Thresholds { min_effect, alpha }).verdict;
        assert_eq!(with(0.05, ALPHA), Verdict::WithinNoise, "a 5% floor");
        assert_eq!(with(0.03, ALPHA), Verdict::Slower);
        assert_eq!(with(MIN_EFFECT, 1e-6), Verdict::WithinNoise, "a stricter significance level");
    }
}
