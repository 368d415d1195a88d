//! Peer comparison samples and their table (`llama-runner peer-samples`, `llama-runner
//! peer-table`, used by `scripts/peer-compare.sh` and `scripts/gpu-bench.sh`).
//!
//! A sample is one repetition's tokens/s of one runner (llama-runner, llama-bench, the
//! `llama-cpp-2` peer) on one test (`pp512`, `tg128`) of one model, with the round of the
//! interleaved runs it came from. Samples are kept as tab-separated lines,
//! `model runner test tokens/s [round]`, so that several invocations can be pooled.

use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::measure::{mean, stddev};

/// One repetition of one test of one runner on one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The model's label (a path; the table shows its file name).
    pub model: String,
    /// The runner.
    pub runner: String,
    /// The test: `pp<N>` or `tg<N>`.
    pub test: String,
    /// Tokens per second of the repetition.
    pub tps: f64,
    /// The round of the interleaved runs, where known.
    pub round: Option<String>,
}

/// The format of a runner's output that [`samples_from`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleFormat {
    /// llama-bench's JSONL (`-o jsonl`), also written by `llama-runner bench` beside its record:
    /// `n_prompt`, `n_gen` and `samples_ts` per line.
    LlamaBench,
    /// The `llama-cpp-2` peer's JSON lines: `test` (`pp512`) and `samples_ns` per line.
    Peer,
    /// llama-batched-bench's JSONL (`--output-format jsonl`): one line per run of one `-npl`
    /// value, `pl`, `speed_pp` and `speed_tg`; tests `S_PP npl<N>` and `S_TG npl<N>`. The
    /// first line of each `pl` is a warm-up and dropped (as llama-runner drops its first
    /// repetition).
    BatchedBench,
    /// A `llama-runner bench` record (JSON): each workload's pp and tg samples as tests
    /// `S_PP npl<N>` and `S_TG npl<N>`, N its `parallel` (llama-batched-bench's names, for
    /// comparing the two).
    Record,
}

fn invalid(what: &str, reason: String) -> Error {
    Error::InvalidOption { option: what.to_string(), reason }
}

/// The samples of one output file's text (`what` names it in errors).
pub fn samples_from(
    text: &str,
    format: SampleFormat,
    model: &str,
    runner: &str,
    round: Option<&str>,
    what: &str,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let sample = |test: String, tps: f64| Sample {
        model: model.to_string(),
        runner: runner.to_string(),
        test,
        tps,
        round: round.map(str::to_string),
    };
    if format == SampleFormat::Record {
        let record: crate::record::Record =
            serde_json::from_str(text).map_err(|e| invalid(what, format!("not a record: {e}")))?;
        for w in &record.workloads {
            let n = w.workload.parallel;
            for (name, stats) in [("S_PP", &w.pp), ("S_TG", &w.tg)] {
                for &tps in stats.iter().flat_map(|s| &s.samples_ts) {
                    out.push(sample(format!("{name} npl{n}"), tps));
                }
            }
        }
        return Ok(out);
    }
    let mut warmed: Vec<u64> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if format == SampleFormat::BatchedBench && !line.trim_start().starts_with('{') {
            continue; // its table and log lines
        }
        let bad = |reason: String| invalid(what, format!("line {}: {reason}", i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let numbers = |key: &str| -> Result<Vec<f64>> {
            v.get(key)
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad(format!("no `{key}` list")))?
                .iter()
                .map(|x| x.as_f64().ok_or_else(|| bad(format!("`{key}` holds a non-number"))))
                .collect()
        };
        let (test, tps) = match format {
            SampleFormat::LlamaBench => {
                let count = |key: &str| v.get(key).and_then(|n| n.as_u64()).ok_or_else(|| bad(format!("no `{key}`")));
                let (n_prompt, n_gen) = (count("n_prompt")?, count("n_gen")?);
                let test = if n_prompt > 0 { format!("pp{n_prompt}") } else { format!("tg{n_gen}") };
                (test, numbers("samples_ts")?)
            }
            SampleFormat::BatchedBench => {
                let field = |key: &str| v.get(key).and_then(|x| x.as_f64()).ok_or_else(|| bad(format!("no `{key}`")));
                let pl = v.get("pl").and_then(|x| x.as_u64()).ok_or_else(|| bad("no `pl`".into()))?;
                let (pp, tg) = (field("speed_pp")?, field("speed_tg")?);
                if !warmed.contains(&pl) {
                    warmed.push(pl);
                    continue;
                }
                out.push(sample(format!("S_PP npl{pl}"), pp));
                out.push(sample(format!("S_TG npl{pl}"), tg));
                continue;
            }
            SampleFormat::Record => unreachable!("read above"),
            SampleFormat::Peer => {
                // Lines without a test (progress, notes) are not samples.
                let Some(test) = v.get("test").and_then(|t| t.as_str()) else { continue };
                let tokens: f64 = test
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .parse()
                    .map_err(|_| bad(format!("test `{test}` names no token count")))?;
                let tps = numbers("samples_ns")?.iter().map(|ns| 1e9 * tokens / ns).collect();
                (test.to_string(), tps)
            }
        };
        out.extend(tps.into_iter().map(|tps| sample(test.clone(), tps)));
    }
    Ok(out)
}

/// Sample lines: `model runner test tokens/s [round]`, tab-separated.
pub fn to_tsv(samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        let _ = write!(out, "{}\t{}\t{}\t{}", s.model, s.runner, s.test, s.tps);
        if let Some(r) = &s.round {
            let _ = write!(out, "\t{r}");
        }
        out.push('\n');
    }
    out
}

/// Parses sample lines (see [`to_tsv`]); `what` names the text in errors.
pub fn parse_tsv(text: &str, what: &str) -> Result<Vec<Sample>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            let bad = |reason: &str| invalid(what, format!("line {}: {reason}: {l:?}", i + 1));
            if f.len() < 4 {
                return Err(bad("expected model, runner, test, tokens/s and optionally a round"));
            }
            Ok(Sample {
                model: f[0].to_string(),
                runner: f[1].to_string(),
                test: f[2].to_string(),
                tps: f[3].trim().parse().map_err(|_| bad("tokens/s is not a number"))?,
                round: f.get(4).map(|r| r.trim().to_string()).filter(|r| !r.is_empty()),
            })
        })
        .collect()
}

/// Values in first-seen order, each once.
fn ordered<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The runner whose ratios to the others the table gives.
pub const OURS: &str = "llama-runner";

/// The tests the table shows (llama-runner's `medium` workload, llama-bench's defaults).
pub const TESTS: [&str; 2] = ["pp512", "tg128"];

/// The markdown tables of pooled samples: per model and runner, mean ± n-1 standard deviation
/// of every repetition of every round, and tg's relative standard deviation; then
/// llama-runner's ratio to each other runner: the ratio of the pooled means and, where two or
/// more rounds have both runners, the mean ± standard error of the per-round ratios (each
/// round's means; rounds run minutes apart, so they are the independent measurements).
pub fn table(samples: &[Sample]) -> String {
    let models = ordered(samples.iter().map(|s| s.model.as_str()));
    let runners = ordered(samples.iter().map(|s| s.runner.as_str()));
    let rounds = ordered(samples.iter().filter_map(|s| s.round.as_deref()));
    let select = |model: &str, runner: &str, test: &str, round: Option<&str>| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.model == model && s.runner == runner && s.test == test)
            .filter(|s| round.is_none() || s.round.as_deref() == round)
            .map(|s| s.tps)
            .collect()
    };
    let file_name = |m: &str| m.rsplit('/').next().unwrap_or(m).to_string();
    // llama-bench's two tests with tg's relative deviation, or whatever tests the samples hold.
    let found = ordered(samples.iter().map(|s| s.test.as_str()));
    let classic = found.iter().all(|t| TESTS.contains(t));
    let tests: Vec<&str> = if classic { TESTS.to_vec() } else { found };
    let mut out = String::from("| model | runner |");
    for t in &tests {
        let _ = write!(out, " {t} t/s |");
    }
    out.push_str(if classic { " tg RSD |\n|---|---|" } else { "\n|---|---|" });
    out.push_str(&"---:|".repeat(tests.len() + usize::from(classic)));
    out.push('\n');
    for m in &models {
        for r in &runners {
            let cell = |v: &[f64]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.2} ± {:.2} (n={})", mean(v), stddev(v), v.len())
                }
            };
            let _ = write!(out, "| {} | {r} |", file_name(m));
            for t in &tests {
                let _ = write!(out, " {} |", cell(&select(m, r, t, None)));
            }
            if classic {
                let tg = select(m, r, TESTS[1], None);
                let rsd =
                    if tg.is_empty() { "-".to_string() } else { format!("{:.1}%", 100.0 * stddev(&tg) / mean(&tg)) };
                let _ = write!(out, " {rsd} |");
            }
            out.push('\n');
        }
    }
    out.push_str("\n| model | ratio |");
    for t in &tests {
        let _ = write!(out, " {t} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(tests.len()));
    out.push('\n');
    for m in &models {
        for peer in runners.iter().filter(|r| **r != OURS) {
            let ratio = |test: &str| {
                let (a, b) = (select(m, OURS, test, None), select(m, peer, test, None));
                if a.is_empty() || b.is_empty() {
                    return "-".to_string();
                }
                let pooled = mean(&a) / mean(&b);
                let per_round: Vec<f64> = rounds
                    .iter()
                    .filter_map(|k| {
                        let (a, b) = (select(m, OURS, test, Some(k)), select(m, peer, test, Some(k)));
                        (!a.is_empty() && !b.is_empty()).then(|| mean(&a) / mean(&b))
                    })
                    .collect();
                if per_round.len() < 2 {
                    return format!("{pooled:.3}");
                }
                let se = stddev(&per_round) / (per_round.len() as f64).sqrt();
                format!("{pooled:.3} ({:.3} ± {se:.3}, {} rounds)", mean(&per_round), per_round.len())
            };
            let _ = write!(out, "| {} | {OURS} / {peer} |", file_name(m));
            for t in &tests {
                let _ = write!(out, " {} |", ratio(t));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(model: &str, runner: &str, test: &str, tps: f64, round: &str) -> Sample {
        Sample {
            model: model.into(),
            runner: runner.into(),
            test: test.into(),
            tps,
            round: (!round.is_empty()).then(|| round.into()),
        }
    }

    #[test]
    fn the_outputs_of_each_runner_become_samples() {
        let jsonl = r#"{"build_commit": "abc", "n_prompt": 512, "n_gen": 0, "avg_ts": 2.0, "samples_ts": [1.5, 2.5]}
{"build_commit": "abc", "n_prompt": 0, "n_gen": 128, "samples_ts": [3.0]}"#;
        let got = samples_from(jsonl, SampleFormat::LlamaBench, "m.gguf", "llama-bench", Some("2"), "x").unwrap();
        assert_eq!(
            got,
            [
                s("m.gguf", "llama-bench", "pp512", 1.5, "2"),
                s("m.gguf", "llama-bench", "pp512", 2.5, "2"),
                s("m.gguf", "llama-bench", "tg128", 3.0, "2")
            ]
        );
        let peer = "{\"note\": \"warm-up\"}\n{\"test\":\"tg128\",\"samples_ns\":[1000000000, 2000000000]}\n";
        let got = samples_from(peer, SampleFormat::Peer, "m", "llama-cpp-2", None, "x").unwrap();
        assert_eq!(got, [s("m", "llama-cpp-2", "tg128", 128.0, ""), s("m", "llama-cpp-2", "tg128", 64.0, "")]);
        assert_eq!(parse_tsv(&to_tsv(&got), "tsv").unwrap(), got);
        let err = samples_from("{\"n_prompt\": 1}", SampleFormat::LlamaBench, "m", "r", None, "f.jsonl").unwrap_err();
        assert!(err.to_string().contains("f.jsonl: line 1: no `n_gen`"), "{err}");
        assert!(parse_tsv("a\tb\tc\tfast\n", "s.tsv").unwrap_err().to_string().contains("not a number"));
    }

    #[test]
    fn batched_bench_lines_and_records_become_samples_by_sequence_count() {
        let line = |pl: u32, pp: f64, tg: f64| {
            format!("{{\"pp\": 128, \"tg\": 64, \"pl\": {pl}, \"speed_pp\": {pp}, \"speed_tg\": {tg}}}")
        };
        let text = [
            "main: n_kv_max = 2048".to_string(),
            line(1, 9.0, 9.0),
            line(1, 500.0, 60.0),
            line(8, 9.0, 9.0),
            line(8, 520.0, 130.0),
        ]
        .join("\n");
        let got = samples_from(&text, SampleFormat::BatchedBench, "m", "bb", Some("1"), "x").unwrap();
        assert_eq!(
            got,
            [
                s("m", "bb", "S_PP npl1", 500.0, "1"),
                s("m", "bb", "S_TG npl1", 60.0, "1"),
                s("m", "bb", "S_PP npl8", 520.0, "1"),
                s("m", "bb", "S_TG npl8", 130.0, "1")
            ],
            "the first line of each npl is the warm-up"
        );
        assert!(
            samples_from(
                &line(1, 1.0, 1.0).replace("\"pl\"", "\"p\""),
                SampleFormat::BatchedBench,
                "m",
                "b",
                None,
                "f"
            )
            .unwrap_err()
            .to_string()
            .contains("no `pl`")
        );
        let t = table(&got);
        assert!(
            t.starts_with("| model | runner | S_PP npl1 t/s | S_TG npl1 t/s | S_PP npl8 t/s | S_TG npl8 t/s |"),
            "{t}"
        );
        let record =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/gpu-record/bench-gpu.json")).unwrap();
        let got = samples_from(&record, SampleFormat::Record, "m", "llama-runner", None, "rec").unwrap();
        assert!(got.iter().any(|x| x.test == "S_PP npl1") && got.iter().any(|x| x.test == "S_TG npl1"), "{got:?}");
        let bad = samples_from("{}", SampleFormat::Record, "m", "r", None, "rec.json").unwrap_err();
        assert!(bad.to_string().contains("rec.json: not a record"), "{bad}");
    }

    #[test]
    fn the_table_pools_repetitions_and_gives_per_round_ratios() {
        let mut v = Vec::new();
        // Round 1: runner 10 and 12 (mean 11) vs peer 10; round 2: runner 9 vs peer 10 and 8 (9).
        for (r, t, k) in [("llama-runner", 10.0, "1"), ("llama-runner", 12.0, "1"), ("llama-runner", 9.0, "2")] {
            v.push(s("dir/m.gguf", r, "tg128", t, k));
        }
        for (t, k) in [(10.0, "1"), (10.0, "2"), (8.0, "2")] {
            v.push(s("dir/m.gguf", "peer", "tg128", t, k));
        }
        let t = table(&v);
        // Pooled: runner 31/3, sd sqrt(7/3); peer 28/3, sd sqrt(4/3).
        assert!(t.contains("| m.gguf | llama-runner | - | 10.33 ± 1.53 (n=3) | 14.8% |"), "{t}");
        assert!(t.contains("| m.gguf | peer | - | 9.33 ± 1.15 (n=3) | 12.4% |"), "{t}");
        // Per round: 1.1 and 1.0: mean 1.05, standard error 0.05; pooled 31/28.
        assert!(t.contains("| m.gguf | llama-runner / peer | - | 1.107 (1.050 ± 0.050, 2 rounds) |"), "{t}");
        // Without rounds: the pooled ratio alone.
        let flat: Vec<Sample> = v.into_iter().map(|x| Sample { round: None, ..x }).collect();
        assert!(table(&flat).contains("| m.gguf | llama-runner / peer | - | 1.107 |"), "{}", table(&flat));
    }
}
