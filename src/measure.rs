//! Throughput measurement the way llama.cpp's llama-bench does it.
//!
//! One module serves `cargo bench --bench decode`, the `llama-runner bench` command and the
//! bisect step, so the three can never disagree about what "tokens per second" means:
//!
//! * a fresh context per test, with `n_ctx = n_prompt + n_gen + n_depth` unless the options name
//!   a larger one, and the CLI's context defaults (`swa_full` off, timings on);
//! * an untimed warm-up (a full prompt pass for prompt tests, one token for generation tests);
//! * before every repetition the KV cache is cleared and the depth restored (computed once,
//!   then restored from a saved state as llama-bench does);
//! * prompt processing: random tokens (the first is BOS) in chunks of `n_batch`, one sync at the
//!   end; generation: one token per `llama_decode`, a sync after each, no sampling;
//! * per repetition tokens/s, their mean and sample (n-1) standard deviation, raw samples kept.
//!
//! A workload with a [`quality`](Workload::quality) table measures quality instead of speed:
//! the perplexity of the configuration over a text and, against a base file of log-probabilities,
//! its KL divergence, with llama-perplexity's method ([`llama_runner::quality`]; see
//! [`run_workload`]). Its result sits in [`WorkloadResult::quality`], beside the speed workloads
//! of the same record.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use llama_runner::context::Context;
use llama_runner::model::{Model, Token};
use llama_runner::options::ContextOptions;
use llama_runner::quality::{self, BaseFormat, BaseReader, KlDivergence, Perplexity, PerplexityOptions};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestKind {
    /// Prompt processing of `n_prompt` tokens (llama-bench `ppN`).
    Prompt,
    /// Generation of `n_gen` tokens (llama-bench `tgN`).
    Generation,
}

/// One llama-bench style test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Test {
    /// Prompt or generation.
    pub kind: TestKind,
    /// Tokens processed (prompt) or generated.
    pub n_tokens: u32,
    /// Tokens already in the KV cache before the timed part.
    pub n_depth: u32,
    /// Timed repetitions.
    pub repetitions: u32,
}

impl Test {
    /// llama-bench's name for it: `pp512`, `tg128`, `pp512 @ d4096`.
    pub fn name(&self) -> String {
        let base = match self.kind {
            TestKind::Prompt => format!("pp{}", self.n_tokens),
            TestKind::Generation => format!("tg{}", self.n_tokens),
        };
        if self.n_depth > 0 { format!("{base} @ d{}", self.n_depth) } else { base }
    }
}

/// Timed repetitions of a test: raw samples and llama-bench's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// Tokens per repetition.
    pub n_tokens: u64,
    /// Wall time of each repetition, in nanoseconds.
    pub samples_ns: Vec<u64>,
}

impl Samples {
    /// Tokens/s of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        self.samples_ns.iter().map(|&ns| if ns == 0 { 0.0 } else { 1e9 * self.n_tokens as f64 / ns as f64 }).collect()
    }
    /// Mean of the per-repetition tokens/s (not tokens over mean time, as llama-bench).
    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }
    /// Sample standard deviation (n-1) of the per-repetition tokens/s; 0 for one sample.
    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }
    /// Mean repetition time in nanoseconds.
    pub fn avg_ns(&self) -> f64 {
        mean(&self.samples_ns.iter().map(|&v| v as f64).collect::<Vec<_>>())
    }
    /// Sample standard deviation of the repetition time in nanoseconds.
    pub fn stddev_ns(&self) -> f64 {
        stddev(&self.samples_ns.iter().map(|&v| v as f64).collect::<Vec<_>>())
    }
}

/// Arithmetic mean (0 for no values).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Sample standard deviation with n-1 in the denominator (0 for fewer than two values).
pub fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Deterministic random tokens, as llama-bench feeds (its `std::rand() % n_vocab`).
pub struct TokenSource {
    rng: fastrand::Rng,
    n_vocab: u32,
    bos: Option<Token>,
}

impl TokenSource {
    /// Tokens for `model`, from a fixed seed so runs see the same input.
    pub fn new(model: &Model) -> Self {
        TokenSource { rng: fastrand::Rng::with_seed(0x11a3a), n_vocab: model.n_vocab(), bos: model.bos() }
    }
    /// One random token.
    pub fn token(&mut self) -> Token {
        self.rng.u32(0..self.n_vocab.max(1)) as Token
    }
    /// A prompt of `n` tokens, the first being BOS where the model has one.
    pub fn prompt(&mut self, n: usize) -> Vec<Token> {
        let mut v: Vec<Token> = (0..n).map(|_| self.token()).collect();
        if let (Some(first), Some(bos)) = (v.first_mut(), self.bos) {
            *first = bos;
        }
        v
    }
}

/// The context options llama-bench would use for a test needing `n_needed` cells: the given
/// options, with `n_ctx` set to exactly what the test needs when the options leave it at 0 (or
/// give less), and libllama's perf timings off.
pub fn bench_context_options(base: &ContextOptions, n_needed: u32) -> ContextOptions {
    let mut o = base.clone();
    // llama-bench leaves llama_context_default_params()'s no_perf = true: no timing calls in
    // decode and synchronize.
    o.perf = false;
    if o.n_ctx < n_needed {
        o.n_ctx = n_needed;
    }
    o
}

/// A context ready for measurements, with the depth prefix saved for fast restores.
pub struct Bench<'m> {
    ctx: Context<'m>,
    tokens: TokenSource,
    depth: Option<(u32, llama_runner::SavedState)>,
}

impl<'m> Bench<'m> {
    /// Creates the context for tests needing up to `n_needed` cells (see
    /// [`bench_context_options`]).
    pub fn new(model: &'m Model, options: &ContextOptions, n_needed: u32) -> Result<Self> {
        let ctx = Context::new(model, &bench_context_options(options, n_needed))?;
        Ok(Bench { tokens: TokenSource::new(model), ctx, depth: None })
    }

    /// The context.
    pub fn context(&self) -> &Context<'m> {
        &self.ctx
    }

    /// Clears the cache and brings it to `n_depth` tokens (untimed).
    pub fn reset(&mut self, n_depth: u32) -> Result<()> {
        self.ctx.clear();
        if n_depth == 0 {
            return Ok(());
        }
        match &self.depth {
            Some((d, state)) if *d == n_depth => Ok(self.ctx.restore_state(state)?),
            _ => {
                let prompt = self.tokens.prompt(n_depth as usize);
                self.ctx.decode(&prompt)?;
                self.depth = Some((n_depth, self.ctx.save_state()));
                Ok(())
            }
        }
    }

    /// Processes `n` random prompt tokens (chunks of n_batch, one sync); returns nanoseconds.
    pub fn time_prompt(&mut self, n: u32) -> Result<u64> {
        let prompt = self.tokens.prompt(n as usize);
        let t = Instant::now();
        self.ctx.decode(&prompt)?;
        Ok(t.elapsed().as_nanos() as u64)
    }

    /// Generates `n` tokens one at a time (decode + sync each, no sampling); returns nanoseconds.
    pub fn time_generation(&mut self, n: u32) -> Result<u64> {
        let mut tok = self.ctx.model().bos().unwrap_or_else(|| self.tokens.token());
        let t = Instant::now();
        for _ in 0..n {
            self.ctx.decode(&[tok])?;
            tok = self.tokens.token();
        }
        Ok(t.elapsed().as_nanos() as u64)
    }

    /// Runs a test: warm-up, then `repetitions` timed runs, each from a reset cache.
    pub fn run(&mut self, test: &Test) -> Result<Samples> {
        if test.repetitions == 0 {
            return Err(Error::InvalidOption { option: "repetitions".into(), reason: "must be at least 1".into() });
        }
        // Untimed warm-up, as llama-bench: a full prompt pass, or one generated token.
        self.reset(test.n_depth)?;
        match test.kind {
            TestKind::Prompt => self.time_prompt(test.n_tokens)?,
            TestKind::Generation => self.time_generation(1)?,
        };
        let mut samples_ns = Vec::with_capacity(test.repetitions as usize);
        for _ in 0..test.repetitions {
            self.reset(test.n_depth)?;
            samples_ns.push(match test.kind {
                TestKind::Prompt => self.time_prompt(test.n_tokens)?,
                TestKind::Generation => self.time_generation(test.n_tokens)?,
            });
        }
        Ok(Samples { n_tokens: test.n_tokens as u64, samples_ns })
    }

    /// `parallel` sequences at once, as llama-batched-bench measures them: each repetition
    /// from an empty cache decodes a prompt of `n_prompt` tokens for every sequence (all of them
    /// in one batch, decoded in views of `n_batch` tokens, timed as pp), then `n_gen` steps of one batch holding the next
    /// token of every sequence (tg). Returns the prompt and generation samples (aggregate).
    pub fn run_parallel(
        &mut self,
        parallel: u32,
        n_prompt: u32,
        n_gen: u32,
        repetitions: u32,
    ) -> Result<(Samples, Samples)> {
        let n = parallel as usize;
        let mut pp = Samples { n_tokens: u64::from(parallel) * u64::from(n_prompt), samples_ns: Vec::new() };
        let mut tg = Samples { n_tokens: u64::from(parallel) * u64::from(n_gen), samples_ns: Vec::new() };
        let chunk = self.ctx.n_batch().max(1) as usize;
        let mut batch = llama_runner::Batch::new(chunk.max(n), 1)?;
        for rep in 0..=repetitions {
            self.ctx.clear();
            let prompts: Vec<Vec<Token>> = (0..n).map(|_| self.tokens.prompt(n_prompt as usize)).collect();
            let t = Instant::now();
            // As llama-batched-bench: every sequence's prompt in one batch, decoded in views of
            // n_batch tokens (a view may hold the end of one prompt and the start of the next).
            batch.clear();
            for (seq, prompt) in prompts.iter().enumerate() {
                for (pos, &tok) in prompt.iter().enumerate() {
                    if batch.len() == chunk {
                        self.ctx.decode_batch(&batch)?;
                        batch.clear();
                    }
                    let last = pos + 1 == prompt.len();
                    batch.add(tok, pos as llama_runner::Pos, &[seq as llama_runner::SeqId], last)?;
                }
            }
            if !batch.is_empty() {
                self.ctx.decode_batch(&batch)?;
            }
            self.ctx.synchronize();
            let p_ns = t.elapsed().as_nanos() as u64;
            let t = Instant::now();
            for step in 0..n_gen {
                batch.clear();
                for seq in 0..n {
                    let pos = (n_prompt + step) as llama_runner::Pos;
                    batch.add(self.tokens.token(), pos, &[seq as llama_runner::SeqId], true)?;
                }
                self.ctx.decode_batch(&batch)?;
            }
            self.ctx.synchronize();
            let g_ns = t.elapsed().as_nanos() as u64;
            if rep > 0 {
                // repetition 0 is the warm-up
                pp.samples_ns.push(p_ns);
                tg.samples_ns.push(g_ns);
            }
        }
        Ok((pp, tg))
    }

    /// The cost curve: after `n_depth + n_prompt` tokens, the time of one decode of each size
    /// in `sizes` (all its tokens outputting logits, as a draft's verification does), the cache
    /// cut back after each; one warm-up round, then `repetitions` samples per size.
    pub fn run_cost_curve(&mut self, n_before: u32, sizes: &[u32], repetitions: u32) -> Result<Vec<(u32, Samples)>> {
        let largest = sizes.iter().copied().max().unwrap_or(1) as usize;
        let mut batch = llama_runner::Batch::new(largest.max(1), 1)?;
        self.reset(0)?;
        let prompt = self.tokens.prompt(n_before as usize);
        if !prompt.is_empty() {
            self.ctx.decode(&prompt)?;
        }
        let mut out: Vec<(u32, Samples)> =
            sizes.iter().map(|&k| (k, Samples { n_tokens: u64::from(k), samples_ns: Vec::new() })).collect();
        for rep in 0..=repetitions {
            for (k, samples) in out.iter_mut() {
                batch.clear();
                for i in 0..*k {
                    batch.add(self.tokens.token(), (n_before + i) as llama_runner::Pos, &[0], true)?;
                }
                let t = Instant::now();
                self.ctx.decode_batch(&batch)?;
                self.ctx.synchronize();
                let ns = t.elapsed().as_nanos() as u64;
                self.ctx.seq_remove(0, n_before as llama_runner::Pos..)?;
                if rep > 0 {
                    samples.samples_ns.push(ns);
                }
            }
        }
        Ok(out)
    }

    /// A multi-turn conversation, as a chat server sees it: each turn appends `n_prompt` tokens
    /// (the user's message) and generates `n_gen`, keeping the cache across turns. Returns the
    /// prompt and generation samples, one per repetition, over all turns.
    pub fn run_turns(&mut self, turns: u32, n_prompt: u32, n_gen: u32, repetitions: u32) -> Result<(Samples, Samples)> {
        let mut pp = Samples { n_tokens: u64::from(turns) * u64::from(n_prompt), samples_ns: Vec::new() };
        let mut tg = Samples { n_tokens: u64::from(turns) * u64::from(n_gen), samples_ns: Vec::new() };
        for rep in 0..=repetitions {
            self.reset(0)?;
            let (mut p_ns, mut g_ns) = (0, 0);
            for _ in 0..turns {
                p_ns += self.time_prompt(n_prompt)?;
                g_ns += self.time_generation(n_gen)?;
            }
            if rep > 0 {
                // repetition 0 is the warm-up
                pp.samples_ns.push(p_ns);
                tg.samples_ns.push(g_ns);
            }
        }
        Ok((pp, tg))
    }
}

/// A benchmark workload: what one row of a comparison table measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Name (`short`, `medium`, `long`, `multi-turn`, or any).
    pub name: String,
    /// Prompt tokens (per turn for multi-turn); 0 (the default) measures no prompt processing.
    #[serde(default)]
    pub n_prompt: u32,
    /// Generated tokens (per turn for multi-turn); 0 (the default) measures no generation.
    #[serde(default)]
    pub n_gen: u32,
    /// Tokens already in the KV cache before the timed part.
    #[serde(default)]
    pub n_depth: u32,
    /// Timed repetitions.
    #[serde(default = "default_repetitions")]
    pub repetitions: u32,
    /// Turns: more than 1 makes a multi-turn conversation that keeps the cache across turns.
    #[serde(default = "one")]
    pub turns: u32,
    /// Sequences decoded together (llama-batched-bench's `-npl`): more than 1 processes a
    /// prompt of `n_prompt` for each sequence, then generates `n_gen` tokens for all of them
    /// in one batch per step; pp and tg then report aggregate tokens/s over all sequences. The
    /// KV cache is one unified buffer with the configuration's `-kvu` (`kv_unified`), else one
    /// stream per sequence, as llama-batched-bench does by default.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub parallel: u32,
    /// The cost curve: the time of one decode of each of these numbers of tokens, after the
    /// prompt (what speculative decoding's verification of a draft costs against a single
    /// token); recorded in [`WorkloadResult::cost`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_sizes: Vec<u32>,
    /// A quality workload: the perplexity over a text and the KL divergence against a base
    /// file, instead of speed (the speed fields then stay 0; `repetitions` does not apply, the
    /// measurement is deterministic); recorded in [`WorkloadResult::quality`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualitySpec>,
    /// A speculative workload (`speculative = { text = "quote", flags = "--spec-type ..." }`):
    /// `n_gen` tokens after a built-in real prompt, greedily, plain and speculative interleaved
    /// in each repetition ([`crate::speculate::run_workload`]); `tg` records the speculative
    /// (effective) tokens/s, [`WorkloadResult::speculative`] both and the drafter's statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative: Option<crate::speculate::SpecWorkload>,
}

/// What a quality workload measures (`quality = { text = "...", n_ctx = 512, chunks = 8, base = "..." }`):
/// the configuration's perplexity over `text` in chunks of `n_ctx`, and its KL divergence
/// against the log-probabilities in `base`.
///
/// When `base` does not exist, the workload writes it: this configuration *is* the base, and
/// its result has the perplexity only. When it exists, the workload reads it (it must have been
/// computed over the same tokens, `n_ctx`, number of chunks and format) and measures the KL
/// divergence against it. Relative paths in a configuration file resolve against the file's
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    /// The text (a file, read whole; llama-perplexity's `-f`).
    pub text: PathBuf,
    /// Tokens per chunk (llama-perplexity's `-c`): even, at least 4; 512 by default.
    #[serde(default = "default_quality_n_ctx")]
    pub n_ctx: u32,
    /// Score at most this many chunks (`--chunks`); all that fit the text when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<usize>,
    /// The base file of log-probabilities (`--kl-divergence-base`): written when missing, read
    /// when present.
    pub base: PathBuf,
    /// Write (and expect) the compact base of the `k` largest log-probabilities per position
    /// instead of llama-perplexity's full format (`--compact-top-k`): a few KB instead of
    /// 2 bytes per vocabulary entry and position, at the price of a KLD that is a lower bound
    /// (see docs/quality.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_top_k: Option<usize>,
}

/// llama-perplexity's default chunk size.
pub const DEFAULT_QUALITY_N_CTX: u32 = 512;

fn default_quality_n_ctx() -> u32 {
    DEFAULT_QUALITY_N_CTX
}

impl QualitySpec {
    /// The base file's format this workload writes and expects.
    pub fn base_format(&self) -> BaseFormat {
        self.compact_top_k.map_or(BaseFormat::Full, |top_k| BaseFormat::Compact { top_k })
    }
}

fn default_repetitions() -> u32 {
    5
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Workload {
    /// KV cells the workload needs (a quality workload: one chunk's, per sequence).
    pub fn n_cells(&self) -> u32 {
        if let Some(q) = &self.quality {
            return q.n_ctx;
        }
        if self.speculative.is_some() {
            // The built-in prompts are under 256 tokens; the workload sizes its own context.
            return self.n_gen.saturating_add(256);
        }
        let per_turn = self.n_prompt.saturating_add(self.n_gen);
        let largest_decode = self.decode_sizes.iter().copied().max().unwrap_or(0);
        let per_seq = self.n_depth.saturating_add(self.turns.max(1).saturating_mul(per_turn));
        per_seq
            .max(self.n_depth.saturating_add(self.n_prompt).saturating_add(largest_decode))
            .saturating_mul(self.parallel.max(1))
    }

    /// A workload with the usual defaults: 5 repetitions, one turn, one sequence, no depth, no
    /// cost curve.
    pub fn new(name: impl Into<String>, n_prompt: u32, n_gen: u32) -> Self {
        Workload {
            name: name.into(),
            n_prompt,
            n_gen,
            n_depth: 0,
            repetitions: default_repetitions(),
            turns: 1,
            parallel: 1,
            decode_sizes: Vec::new(),
            quality: None,
            speculative: None,
        }
    }
}

/// Measured prompt and generation speed of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// The workload.
    pub workload: Workload,
    /// Prompt processing samples (absent when `n_prompt` is 0).
    pub pp: Option<SampleStats>,
    /// Generation samples (absent when `n_gen` is 0).
    pub tg: Option<SampleStats>,
    /// The cost curve ([`Workload::decode_sizes`]): for each size, the time of one decode of
    /// that many tokens after the prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost: Vec<CostPoint>,
    /// What a quality workload measured ([`Workload::quality`]); absent for speed workloads
    /// (and in records written before quality workloads existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityResult>,
    /// What a speculative workload measured ([`Workload::speculative`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative: Option<crate::speculate::SpecResult>,
}

/// A value and its uncertainty (one standard error), as llama-perplexity prints `v ± u`. A
/// value that cannot be computed is NaN (llama-perplexity's `nan`, for the uncertainty of a
/// PPL ratio of identical runs); JSON has no NaN, so records hold `null` and read it back as NaN.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Estimate {
    /// The value.
    #[serde(deserialize_with = "null_as_nan")]
    pub value: f64,
    /// Its uncertainty.
    #[serde(deserialize_with = "null_as_nan")]
    pub uncertainty: f64,
}

/// Reads `null` (what serde_json writes for a NaN) as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl From<quality::Estimate> for Estimate {
    fn from(e: quality::Estimate) -> Self {
        Estimate { value: e.value, uncertainty: e.uncertainty }
    }
}

/// The result of a quality workload: the perplexity and, against an existing base, the KL
/// divergence statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    /// The base file (canonical: records of one base name the same path).
    pub base: PathBuf,
    /// Whether this run wrote the base (this configuration is the base: [`kld`](Self::kld)
    /// is absent, its KL divergence against itself is 0 by definition).
    pub base_written: bool,
    /// The base file's format: `full` (llama-perplexity's) or `compact-top-K`.
    pub base_format: String,
    /// Tokens per chunk.
    pub n_ctx: u32,
    /// Chunks scored.
    pub n_chunk: usize,
    /// Tokens of the text.
    pub n_tokens: usize,
    /// Positions scored (`n_chunk * (n_ctx - 1 - n_ctx / 2)`).
    pub n_scored: usize,
    /// Perplexity over the scored positions (llama-perplexity's `Final estimate`, or
    /// `Mean PPL(Q)` against a base). The uncertainty is absent where the tool prints none.
    pub ppl: f64,
    /// The perplexity's uncertainty.
    pub ppl_uncertainty: Option<f64>,
    /// The KL divergence against the base (absent when this run wrote it).
    pub kld: Option<KldResult>,
    /// Wall time of the measurement (decodes and statistics, base file I/O included), seconds.
    pub seconds: f64,
}

impl QualityResult {
    /// The mean KLD against the base: the measured one, or 0 ± 0 when this run wrote the base.
    pub fn mean_kld(&self) -> Estimate {
        self.kld.as_ref().map_or_else(Estimate::default, |k| k.mean)
    }
}

/// The KL divergence statistics of a quality workload, as `llama-perplexity --kl-divergence`
/// prints them (probabilities and Δp as fractions, not percent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KldResult {
    /// Mean KL divergence of the token distributions, base to this configuration.
    pub mean: Estimate,
    /// Its median.
    pub median: f64,
    /// Its 99th percentile.
    pub p99: f64,
    /// Its 99.9th percentile.
    pub p999: f64,
    /// Its maximum.
    pub max: f64,
    /// The fraction of positions where both have the same most probable token.
    pub same_top: Estimate,
    /// Root mean square of the change in the target token's probability.
    pub delta_p_rms: Estimate,
    /// The base's perplexity over the same positions.
    pub ppl_base: Estimate,
    /// PPL(Q) / PPL(base).
    pub ppl_ratio: Estimate,
    /// ln(PPL(Q) / PPL(base)).
    pub log_ppl_ratio: Estimate,
}

impl From<&KlDivergence> for KldResult {
    fn from(k: &KlDivergence) -> Self {
        let d = &k.kld_values;
        KldResult {
            mean: k.kld.into(),
            median: f64::from(d.median()),
            p99: f64::from(d.percentile(0.99)),
            p999: f64::from(d.percentile(0.999)),
            max: f64::from(d.max()),
            same_top: k.same_top.into(),
            delta_p_rms: k.delta_p_rms.into(),
            ppl_base: k.ppl_base.into(),
            ppl_ratio: k.ppl_ratio.into(),
            log_ppl_ratio: k.log_ppl_ratio.into(),
        }
    }
}

/// One point of a cost curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostPoint {
    /// Tokens in the decode.
    pub n_tokens: u32,
    /// Its time, one sample per repetition.
    pub samples: SampleStats,
    /// Mean time over the mean time of a one-token decode at the same depth (the first
    /// point's when it is 1 token; else 1 token measured alongside).
    pub relative: f64,
}

/// Samples with their statistics spelled out (for records that are read without this crate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleStats {
    /// Tokens per repetition.
    pub n_tokens: u64,
    /// Mean tokens/s over repetitions.
    pub avg_ts: f64,
    /// Sample standard deviation of tokens/s.
    pub stddev_ts: f64,
    /// Mean nanoseconds per repetition.
    pub avg_ns: f64,
    /// Sample standard deviation of nanoseconds.
    pub stddev_ns: f64,
    /// Raw nanoseconds per repetition.
    pub samples_ns: Vec<u64>,
    /// Raw tokens/s per repetition.
    pub samples_ts: Vec<f64>,
}

impl From<&Samples> for SampleStats {
    fn from(s: &Samples) -> Self {
        SampleStats {
            n_tokens: s.n_tokens,
            avg_ts: s.avg_ts(),
            stddev_ts: s.stddev_ts(),
            avg_ns: s.avg_ns(),
            stddev_ns: s.stddev_ns(),
            samples_ns: s.samples_ns.clone(),
            samples_ts: s.samples_ts(),
        }
    }
}

/// Runs one workload as llama-bench runs tests: the prompt test and the generation test each on
/// a fresh context sized for that test alone (`n_ctx = depth + tokens`, unless the options ask
/// for more), or for several turns one conversation on a context holding all of them.
///
/// A quality workload runs [`run_quality`] instead.
pub fn run_workload(model: &Model, options: &ContextOptions, w: &Workload) -> Result<WorkloadResult> {
    if let Some(q) = &w.quality {
        return Ok(WorkloadResult {
            workload: w.clone(),
            pp: None,
            tg: None,
            cost: Vec::new(),
            quality: Some(run_quality(model, options, &w.name, q)?),
            speculative: None,
        });
    }
    if let Some(spec) = &w.speculative {
        let result = crate::speculate::run_workload(model, options, spec, w.n_gen, w.repetitions)?;
        return Ok(WorkloadResult {
            workload: w.clone(),
            pp: None,
            tg: Some(result.speculative.clone()),
            cost: Vec::new(),
            quality: None,
            speculative: Some(result),
        });
    }
    let mut result = run_throughput(model, options, w)?;
    if !w.decode_sizes.is_empty() {
        let mut sizes = w.decode_sizes.clone();
        if !sizes.contains(&1) {
            sizes.insert(0, 1);
        }
        let n_before = w.n_depth.saturating_add(w.n_prompt);
        let largest = sizes.iter().copied().max().unwrap_or(1);
        let mut bench = Bench::new(model, options, n_before.saturating_add(largest))?;
        let curve = bench.run_cost_curve(n_before, &sizes, w.repetitions)?;
        let one = curve.iter().find(|(k, _)| *k == 1).map_or(0.0, |(_, s)| s.avg_ns());
        result.cost = curve
            .iter()
            .filter(|(k, _)| w.decode_sizes.contains(k))
            .map(|(k, s)| CostPoint {
                n_tokens: *k,
                samples: s.into(),
                relative: if one > 0.0 { s.avg_ns() / one } else { 0.0 },
            })
            .collect();
    }
    Ok(result)
}

fn run_throughput(model: &Model, options: &ContextOptions, w: &Workload) -> Result<WorkloadResult> {
    if w.parallel > 1 {
        if w.n_depth > 0 || w.turns > 1 {
            return Err(Error::InvalidOption {
                option: format!("workload {}", w.name),
                reason: "parallel sequences cannot be combined with depth or turns".into(),
            });
        }
        // The configuration's -kvu decides the cache's layout, as for llama-batched-bench (off by
        // default: one KV stream per sequence).
        let mut o = options.clone();
        o.n_seq_max = w.parallel;
        let mut bench = Bench::new(model, &o, w.n_cells())?;
        let (pp, tg) = bench.run_parallel(w.parallel, w.n_prompt, w.n_gen, w.repetitions)?;
        let stats = |s: &Samples, n: u32| (n > 0).then(|| s.into());
        return Ok(WorkloadResult {
            workload: w.clone(),
            pp: stats(&pp, w.n_prompt),
            tg: stats(&tg, w.n_gen),
            cost: Vec::new(),
            quality: None,
            speculative: None,
        });
    }
    if w.turns > 1 {
        if w.n_depth > 0 {
            return Err(Error::InvalidOption {
                option: format!("workload {}", w.name),
                reason: "depth and turns cannot be combined".into(),
            });
        }
        let mut bench = Bench::new(model, options, w.n_cells())?;
        let (pp, tg) = bench.run_turns(w.turns, w.n_prompt, w.n_gen, w.repetitions)?;
        return Ok(WorkloadResult {
            workload: w.clone(),
            pp: Some((&pp).into()),
            tg: Some((&tg).into()),
            cost: Vec::new(),
            quality: None,
            speculative: None,
        });
    }
    let test = |kind, n: u32| -> Result<Option<SampleStats>> {
        if n == 0 {
            return Ok(None);
        }
        // A larger cache than the test needs makes attention work over more cells: llama-bench
        // sizes each test's context exactly, and so do we.
        let mut bench = Bench::new(model, options, w.n_depth.saturating_add(n))?;
        let s = bench.run(&Test { kind, n_tokens: n, n_depth: w.n_depth, repetitions: w.repetitions })?;
        Ok(Some((&s).into()))
    };
    let pp = test(TestKind::Prompt, w.n_prompt)?;
    let tg = test(TestKind::Generation, w.n_gen)?;
    Ok(WorkloadResult { workload: w.clone(), pp, tg, cost: Vec::new(), quality: None, speculative: None })
}

/// Runs a quality workload as `llama-runner perplexity` does, on a context of `options` shaped
/// by [`PerplexityOptions::context_options`] (`n_batch` from the options: chunks of `n_ctx`
/// share a decode when it is a multiple of `n_ctx`):
///
/// - no file at `q.base`: the perplexity over the text, writing the base as it goes (to a
///   temporary file beside it, renamed when complete, so a failed run leaves no base);
/// - a base file: its header is checked against the text's tokens, `n_ctx`, the number of
///   chunks the workload scores and the format it names, then the KL divergence is measured
///   against it (the perplexity is that pass's `Mean PPL(Q)`).
///
/// `name` (the workload's) goes into the error messages.
pub fn run_quality(model: &Model, options: &ContextOptions, name: &str, q: &QualitySpec) -> Result<QualityResult> {
    let failed = |source| Error::Quality { workload: name.to_string(), source: Box::new(source) };
    let mismatch = |reason: String| Error::InvalidOption {
        option: format!("workload {name}"),
        reason: format!("{reason}; delete {} to write it again from this configuration", q.base.display()),
    };
    let text = std::fs::read_to_string(&q.text).map_err(|e| Error::Io { path: q.text.clone(), source: e })?;
    let tokens = quality::tokenize(model, &text)?;
    let popts = PerplexityOptions { n_ctx: q.n_ctx, n_chunks: q.chunks };
    let mut ctx = Context::new(model, &popts.context_options(options))?;
    let format = q.base_format();
    let format_name = |f: BaseFormat| match f {
        BaseFormat::Full => "full".to_string(),
        BaseFormat::Compact { top_k } => format!("compact-top-{top_k}"),
    };
    let t = Instant::now();
    if !q.base.exists() {
        let ppl = write_base(&mut ctx, &tokens, &popts, format, &q.base, failed)?;
        return Ok(QualityResult {
            base: std::fs::canonicalize(&q.base).unwrap_or_else(|_| q.base.clone()),
            base_written: true,
            base_format: format_name(format),
            n_ctx: ppl.n_ctx,
            n_chunk: ppl.n_chunk,
            n_tokens: tokens.len(),
            n_scored: ppl.count,
            ppl: ppl.ppl,
            ppl_uncertainty: ppl.uncertainty,
            kld: None,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    let mut base = BaseReader::open(&q.base).map_err(failed)?;
    let header = base.header();
    header.check_matches(Some(q.n_ctx), Some(&tokens)).map_err(failed)?;
    let n_chunk = (tokens.len() / q.n_ctx.max(1) as usize).min(q.chunks.unwrap_or(usize::MAX));
    if header.n_chunk as usize != n_chunk {
        return Err(mismatch(format!(
            "the base file {} holds {} chunks, the workload scores {n_chunk}",
            q.base.display(),
            header.n_chunk
        )));
    }
    if header.format != format {
        return Err(mismatch(format!(
            "the base file {} is {}, the workload asks for {}",
            q.base.display(),
            format_name(header.format),
            format_name(format)
        )));
    }
    let kl = ctx.kl_divergence(&mut base).map_err(failed)?;
    Ok(QualityResult {
        base: std::fs::canonicalize(&q.base).unwrap_or_else(|_| q.base.clone()),
        base_written: false,
        base_format: format_name(format),
        n_ctx: kl.n_ctx,
        n_chunk: kl.n_chunk,
        n_tokens: tokens.len(),
        n_scored: kl.count,
        ppl: kl.ppl.value,
        ppl_uncertainty: Some(kl.ppl.uncertainty),
        kld: Some((&kl).into()),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The perplexity pass writing the base into a temporary file beside `path`, renamed to it once
/// complete: an interrupted or failed run leaves no base behind to be read as one.
fn write_base(
    ctx: &mut Context<'_>,
    tokens: &[Token],
    popts: &PerplexityOptions,
    format: BaseFormat,
    path: &Path,
    failed: impl FnOnce(quality::QualityError) -> Error,
) -> Result<Perplexity> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::Io { path: p, source: e }
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let out = std::io::BufWriter::with_capacity(1 << 20, file);
        let ppl = ctx.perplexity_writing_base(tokens, popts, format, out).map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        Ok(ppl)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_that_cannot_be_computed_survive_a_record() {
        let e = Estimate { value: 1.0, uncertainty: f64::NAN };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"value":1.0,"uncertainty":null}"#);
        let back: Estimate = serde_json::from_str(&json).unwrap();
        assert!(back.value == 1.0 && back.uncertainty.is_nan());
    }

    #[test]
    fn speed_results_are_written_and_read_without_quality_fields() {
        let w = WorkloadResult {
            workload: Workload::new("w", 8, 4),
            pp: None,
            tg: None,
            cost: Vec::new(),
            quality: None,
            speculative: None,
        };
        let json = serde_json::to_string(&w).unwrap();
        assert!(!json.contains("quality"), "{json}");
        assert_eq!(serde_json::from_str::<WorkloadResult>(&json).unwrap(), w);
    }
}
