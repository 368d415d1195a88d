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

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use llama_runner::context::Context;
use llama_runner::model::{Model, Token};
use llama_runner::options::ContextOptions;

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
    /// from an empty cache decodes a prompt of `n_prompt` tokens for every sequence (one batch
    /// per sequence, timed together as pp), then `n_gen` steps of one batch holding the next
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
            let t = Instant::now();
            for seq in 0..n {
                let prompt = self.tokens.prompt(n_prompt as usize);
                for (c, part) in prompt.chunks(chunk).enumerate() {
                    batch.clear();
                    for (i, &tok) in part.iter().enumerate() {
                        let pos = c * chunk + i;
                        batch.add(
                            tok,
                            pos as llama_runner::Pos,
                            &[seq as llama_runner::SeqId],
                            pos + 1 == prompt.len(),
                        )?;
                    }
                    self.ctx.decode_batch(&batch)?;
                }
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
    /// Prompt tokens (per turn for multi-turn).
    pub n_prompt: u32,
    /// Generated tokens (per turn for multi-turn).
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
    /// in one batch per step; pp and tg then report aggregate tokens/s over all sequences.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub parallel: u32,
    /// The cost curve: the time of one decode of each of these numbers of tokens, after the
    /// prompt (what speculative decoding's verification of a draft costs against a single
    /// token); recorded in [`WorkloadResult::cost`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_sizes: Vec<u32>,
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
    /// KV cells the workload needs.
    pub fn n_cells(&self) -> u32 {
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
pub fn run_workload(model: &Model, options: &ContextOptions, w: &Workload) -> Result<WorkloadResult> {
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
        let mut o = options.clone();
        o.n_seq_max = w.parallel;
        o.kv_unified = true;
        let mut bench = Bench::new(model, &o, w.n_cells())?;
        let (pp, tg) = bench.run_parallel(w.parallel, w.n_prompt, w.n_gen, w.repetitions)?;
        let stats = |s: &Samples, n: u32| (n > 0).then(|| s.into());
        return Ok(WorkloadResult {
            workload: w.clone(),
            pp: stats(&pp, w.n_prompt),
            tg: stats(&tg, w.n_gen),
            cost: Vec::new(),
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
    Ok(WorkloadResult { workload: w.clone(), pp, tg, cost: Vec::new() })
}
