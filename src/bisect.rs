//! Judging one measurement for `git bisect run`: is this llama.cpp commit good or bad?
//!
//! `scripts/bisect-step.sh` builds the workspace against a llama.cpp tree, runs one workload
//! (`llama-runner bench`), then asks `llama-runner judge`, which uses this module, for the
//! verdict. A [`Criterion`] is either an absolute floor in tokens/s for prompt processing or
//! generation, or a baseline record with a relative margin (bad when the measurement falls
//! below `baseline × (1 − margin)`). The statistic compared ([`Statistic`]) is the mean of the
//! repetitions by default, or their median, or the best repetition (robust against a machine
//! that other work slows down now and then: interference only ever makes a repetition slower).
//!
//! The exit statuses follow `git bisect run`: [`GOOD`] (0), [`BAD`] (1), [`SKIP`] (125, the
//! tree does not build or the model does not load, decided by the step script); anything above
//! 127 aborts the bisection ([`ABORT`], for mistakes in the step's own arguments).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::measure::{SampleStats, WorkloadResult};
use crate::record::Record;

/// Exit status of a good commit.
pub const GOOD: u8 = 0;
/// Exit status of a bad commit.
pub const BAD: u8 = 1;
/// Exit status of a commit that cannot be tested (`git bisect skip`).
pub const SKIP: u8 = 125;
/// Exit status that makes `git bisect run` stop: the step itself is misused.
pub const ABORT: u8 = 128;

/// Which speed is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Prompt processing tokens/s (`pp`).
    Prompt,
    /// Generation tokens/s (`tg`).
    Generation,
}

impl Metric {
    /// `pp` or `tg`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Prompt => "pp",
            Metric::Generation => "tg",
        }
    }

    /// The samples of this metric in a workload's result.
    pub fn stats(self, w: &WorkloadResult) -> Option<&SampleStats> {
        match self {
            Metric::Prompt => w.pp.as_ref(),
            Metric::Generation => w.tg.as_ref(),
        }
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pp" | "prompt" => Ok(Metric::Prompt),
            "tg" | "gen" | "generation" => Ok(Metric::Generation),
            _ => Err(format!("unknown metric `{s}` (pp or tg)")),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the repetitions of a measurement become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Statistic {
    /// Mean tokens/s over repetitions (the number records and `compare` show).
    #[default]
    Mean,
    /// Median tokens/s.
    Median,
    /// The fastest repetition.
    Best,
}

impl Statistic {
    /// `mean`, `median` or `best`.
    pub fn name(self) -> &'static str {
        match self {
            Statistic::Mean => "mean",
            Statistic::Median => "median",
            Statistic::Best => "best",
        }
    }

    /// The statistic of `s`'s per-repetition tokens/s (0 when there are none).
    pub fn of(self, s: &SampleStats) -> f64 {
        let v = &s.samples_ts;
        if v.is_empty() {
            return if self == Statistic::Mean { s.avg_ts } else { 0.0 };
        }
        match self {
            Statistic::Mean => crate::measure::mean(v),
            Statistic::Best => v.iter().copied().fold(f64::MIN, f64::max),
            Statistic::Median => {
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                let n = sorted.len();
                if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
            }
        }
    }
}

impl FromStr for Statistic {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean" => Ok(Statistic::Mean),
            "median" => Ok(Statistic::Median),
            "best" | "max" => Ok(Statistic::Best),
            _ => Err(format!("unknown statistic `{s}` (mean, median or best)")),
        }
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What makes a commit good.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// Good when the metric is at least this many tokens/s.
    AtLeast {
        /// The metric.
        metric: Metric,
        /// The floor in tokens/s.
        min_tps: f64,
    },
    /// Good when the metric is at least `baseline × (1 − margin)`, the baseline being the same
    /// workload and statistic in another record (typically of the last good commit).
    Baseline {
        /// The metric.
        metric: Metric,
        /// The baseline record.
        baseline: Box<Record>,
        /// Allowed relative slowdown, in [0, 1).
        margin: f64,
    },
    /// No verdict: report the measurement only (always "good").
    MeasureOnly {
        /// The metric reported.
        metric: Metric,
    },
}

impl Criterion {
    /// The metric the criterion is about.
    pub fn metric(&self) -> Metric {
        match self {
            Criterion::AtLeast { metric, .. }
            | Criterion::Baseline { metric, .. }
            | Criterion::MeasureOnly { metric } => *metric,
        }
    }
}

/// The verdict on one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At or above the threshold.
    Good,
    /// Below the threshold.
    Bad,
    /// Measured, not judged.
    Measured,
}

impl Verdict {
    /// The exit status `git bisect run` expects ([`GOOD`] for a measurement without criterion).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Good | Verdict::Measured => GOOD,
            Verdict::Bad => BAD,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Measured => "measured",
        })
    }
}

/// The outcome of judging a record: what was measured, against what, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// What the step is about: the caller's label, else the record's commit and build number.
    pub label: String,
    /// Workload judged.
    pub workload: String,
    /// Metric judged.
    pub metric: Metric,
    /// Statistic used.
    pub statistic: Statistic,
    /// Repetitions measured.
    pub repetitions: usize,
    /// The measured value (tokens/s).
    pub measured: f64,
    /// The threshold (tokens/s); `None` without a criterion.
    pub threshold: Option<f64>,
    /// The baseline's value and the margin, when judged against a baseline.
    pub baseline: Option<(f64, f64)>,
    /// The verdict.
    pub verdict: Verdict,
}

impl fmt::Display for Judgement {
    /// The one summary line of a bisect step, e.g.
    /// `1a2b3c4d5e6f: medium-cpu tg 41.20 t/s (mean of 3), threshold 37.08 t/s (baseline 41.20 - 10%): good`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} {:.2} t/s ({} of {})",
            self.label, self.workload, self.metric, self.measured, self.statistic, self.repetitions
        )?;
        match (self.threshold, self.baseline) {
            (Some(t), Some((b, m))) => write!(f, ", threshold {t:.2} t/s (baseline {b:.2} - {:.0}%)", m * 100.0)?,
            (Some(t), None) => write!(f, ", threshold {t:.2} t/s")?,
            _ => {}
        }
        write!(f, ": {}", self.verdict)
    }
}

/// The result of `workload` in `record` (the only one when `workload` is `None`).
pub fn find_workload<'a>(record: &'a Record, workload: Option<&str>) -> Result<&'a WorkloadResult> {
    let invalid = |reason: String| Error::InvalidOption { option: "workload".into(), reason };
    let names = || record.workloads.iter().map(|w| w.workload.name.as_str()).collect::<Vec<_>>().join(", ");
    match workload {
        Some(name) => record.workloads.iter().find(|w| w.workload.name == name).ok_or_else(|| {
            invalid(format!("record of `{}` has no workload `{name}` (it has: {})", record.config, names()))
        }),
        None => match record.workloads.as_slice() {
            [only] => Ok(only),
            _ => Err(invalid(format!(
                "record of `{}` has {} workloads ({}): name one",
                record.config,
                record.workloads.len(),
                names()
            ))),
        },
    }
}

/// The label of a record when the caller gives none: `llama.cpp <commit, 12 digits> b<N>`.
pub fn default_label(record: &Record) -> String {
    let c = &record.build.commit;
    format!("llama.cpp {} b{}", c.get(..12).unwrap_or(c), record.build.build_number)
}

/// Judges `workload` of `record` by `criterion`, comparing `statistic` of the repetitions.
///
/// Errors (which should abort a bisection, not mark a commit): the workload or metric is missing
/// from a record, the baseline's workload has other sizes than the measured one, or the margin
/// or floor is out of range.
pub fn judge(
    record: &Record,
    workload: Option<&str>,
    statistic: Statistic,
    criterion: &Criterion,
    label: Option<&str>,
) -> Result<Judgement> {
    let invalid = |option: &str, reason: String| Error::InvalidOption { option: option.into(), reason };
    let metric = criterion.metric();
    let w = find_workload(record, workload)?;
    let stats = metric.stats(w).ok_or_else(|| {
        invalid("metric", format!("workload `{}` has no {metric} measurement (0 tokens)", w.workload.name))
    })?;
    let measured = statistic.of(stats);
    let (threshold, baseline) = match criterion {
        Criterion::AtLeast { min_tps, .. } => {
            if !(min_tps.is_finite() && *min_tps > 0.0) {
                return Err(invalid("min", format!("the floor must be a positive number of tokens/s, not {min_tps}")));
            }
            (Some(*min_tps), None)
        }
        Criterion::Baseline { baseline, margin, .. } => {
            if !(0.0..1.0).contains(margin) {
                return Err(invalid("margin", format!("must be at least 0 and below 1, not {margin}")));
            }
            let bw = find_workload(baseline, Some(&w.workload.name))?;
            let (a, b) = (&w.workload, &bw.workload);
            if (a.n_prompt, a.n_gen, a.n_depth, a.turns) != (b.n_prompt, b.n_gen, b.n_depth, b.turns) {
                return Err(invalid(
                    "baseline",
                    format!(
                        "workload `{}` differs from the baseline's (pp{} tg{} depth {} turns {} against pp{} tg{} depth {} turns {})",
                        a.name, a.n_prompt, a.n_gen, a.n_depth, a.turns, b.n_prompt, b.n_gen, b.n_depth, b.turns
                    ),
                ));
            }
            let bs = metric.stats(bw).ok_or_else(|| {
                invalid("baseline", format!("the baseline's workload `{}` has no {metric} measurement", b.name))
            })?;
            let base = statistic.of(bs);
            (Some(base * (1.0 - margin)), Some((base, *margin)))
        }
        Criterion::MeasureOnly { .. } => (None, None),
    };
    let verdict = match threshold {
        None => Verdict::Measured,
        Some(t) if measured >= t => Verdict::Good,
        Some(_) => Verdict::Bad,
    };
    Ok(Judgement {
        label: label.map_or_else(|| default_label(record), str::to_string),
        workload: w.workload.name.clone(),
        metric,
        statistic,
        repetitions: stats.samples_ts.len(),
        measured,
        threshold,
        baseline,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ts: &[f64]) -> SampleStats {
        SampleStats {
            n_tokens: 10,
            avg_ts: crate::measure::mean(ts),
            stddev_ts: crate::measure::stddev(ts),
            avg_ns: 0.0,
            stddev_ns: 0.0,
            samples_ns: vec![1; ts.len()],
            samples_ts: ts.to_vec(),
        }
    }

    #[test]
    fn statistics() {
        let s = stats(&[10.0, 30.0, 20.0, 40.0]);
        assert_eq!(Statistic::Mean.of(&s), 25.0);
        assert_eq!(Statistic::Median.of(&s), 25.0);
        assert_eq!(Statistic::Best.of(&s), 40.0);
        let s = stats(&[10.0, 30.0, 20.0]);
        assert_eq!(Statistic::Median.of(&s), 20.0);
    }

    #[test]
    fn names_parse() {
        assert_eq!("tg".parse::<Metric>(), Ok(Metric::Generation));
        assert_eq!("pp".parse::<Metric>(), Ok(Metric::Prompt));
        assert!("xx".parse::<Metric>().is_err());
        assert_eq!("best".parse::<Statistic>(), Ok(Statistic::Best));
        assert!("avg".parse::<Statistic>().is_err());
        assert_eq!(Verdict::Bad.exit_code(), BAD);
        assert_eq!(Verdict::Good.exit_code(), GOOD);
        assert_eq!(Verdict::Measured.exit_code(), GOOD);
    }
}
