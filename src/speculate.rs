//! Speculative decoding for the `generate` and `chat` commands and the speculative workload:
//! the drafter that `--spec-type`, `-md` and the `--spec-*` sizes ask for, its statistics as
//! printed and reported, and the interleaved plain-against-speculative measurement.

use serde::Serialize;

use llama_runner::speculative::{DraftModel, Drafter, NgramDraft, NgramMap, SpecStats};
use llama_runner::{Backend, Context, ContextOptions, Model, RunOptions, SpecType, Token};

use crate::error::Result;

/// What a speculative run drafts with: a loaded draft model, or n-gram lookup.
pub struct Drafting {
    /// `draft-simple`, `ngram-simple`, `ngram-map-k` or `ngram-map-k4v`.
    pub name: &'static str,
    model: Option<Model>,
    ngram: NgramDraft,
    /// The `ngram-map-k` / `ngram-map-k4v` drafter, fresh (each run starts from its own).
    map: Option<NgramMap>,
    n_max: usize,
    n_min: usize,
    p_min: f32,
}

impl std::fmt::Debug for Drafting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drafting").field("name", &self.name).field("ngram", &self.ngram).finish_non_exhaustive()
    }
}

impl Drafting {
    /// The drafter of `options` (`None` without speculative flags), its draft model loaded
    /// (with the target's model options) for `draft-simple`.
    pub fn new(options: &RunOptions, backend: &Backend) -> Result<Option<Drafting>> {
        let s = &options.speculative;
        let Some(kind) = s.drafter()? else { return Ok(None) };
        let (name, model) = match kind {
            SpecType::DraftSimple => {
                // `drafter()` refuses draft-simple without a model.
                let path = s.draft_model.clone().unwrap_or_default();
                ("draft-simple", Some(crate::progress::load_model(backend, &path, &options.model)?))
            }
            other => (other.name(), None),
        };
        let map = match kind {
            SpecType::NgramMapK | SpecType::NgramMapK4v => {
                let sizes = if kind == SpecType::NgramMapK { s.map_k } else { s.map_k4v };
                // The flags keep min_hits within u16.
                let hits = u16::try_from(sizes.min_hits).unwrap_or(u16::MAX);
                let (n, m) = (sizes.size_n as usize, sizes.size_m as usize);
                Some(NgramMap::new(kind == SpecType::NgramMapK, n, m, hits, s.n_min as usize)?)
            }
            _ => None,
        };
        if kind == SpecType::NgramSimple && s.n_min > s.ngram_size_m {
            return Err(llama_runner::Error::Speculative {
                problem: format!(
                    "--spec-draft-n-min {} is above the n-gram draft size --spec-ngram-simple-size-m {}: no draft \
                     would be verified",
                    s.n_min, s.ngram_size_m
                ),
            }
            .into());
        }
        let ngram =
            NgramDraft { ngram: s.ngram_size_n as usize, n_max: s.ngram_size_m as usize, n_min: s.n_min as usize };
        Ok(Some(Drafting { name, model, ngram, map, n_max: s.n_max as usize, n_min: s.n_min as usize, p_min: s.p_min }))
    }

    /// The draft model's context (`None` for n-gram lookup), with the target's context options.
    pub fn context(&self, options: &ContextOptions) -> Result<Option<Context<'_>>> {
        Ok(match &self.model {
            Some(m) => Some(Context::new(m, options)?),
            None => None,
        })
    }

    /// The drafter for `target`, drafting in `ctx` (from [`context`](Self::context)) for a
    /// draft model. Fails for a vocabulary the target cannot verify, or bad sizes.
    pub fn drafter<'c, 'd: 'c>(
        &self,
        ctx: Option<&'c mut Context<'d>>,
        target: &Model,
    ) -> Result<Box<dyn Drafter + 'c>> {
        Ok(match (ctx, &self.map) {
            (Some(c), _) => Box::new(DraftModel::new(c, target, self.n_max, self.n_min, self.p_min)?),
            (None, Some(map)) => Box::new(map.clone()),
            (None, None) => Box::new(self.ngram.clone()),
        })
    }
}

/// What speculative decoding did, in a command's JSON report and a speculative workload's
/// record.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SpecReport {
    /// `draft-simple`, `ngram-simple`, `ngram-map-k` or `ngram-map-k4v`.
    pub drafter: String,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Accepted over drafted.
    pub acceptance: f64,
    /// Mean draft tokens accepted per verification batch.
    pub mean_accepted: f64,
    /// Batches that verified a draft.
    pub verified: usize,
    /// Steps decoded without a draft.
    pub plain: usize,
    /// Per draft position: drafts that reached it.
    pub drafted_at: Vec<usize>,
    /// Per draft position: drafts accepted up to it.
    pub accepted_at: Vec<usize>,
    /// Seconds spent drafting.
    pub draft_s: f64,
    /// Seconds spent decoding with the target (verification and plain steps).
    pub decode_s: f64,
}

impl SpecReport {
    /// The report of `stats` from the drafter `name`.
    pub fn new(name: &'static str, st: &SpecStats) -> SpecReport {
        SpecReport {
            drafter: name.to_string(),
            drafted: st.drafted,
            accepted: st.accepted,
            acceptance: st.acceptance(),
            mean_accepted: if st.verified == 0 { 0.0 } else { st.accepted as f64 / st.verified as f64 },
            verified: st.verified,
            plain: st.plain,
            drafted_at: st.drafted_at.clone(),
            accepted_at: st.accepted_at.clone(),
            draft_s: st.draft_time.as_secs_f64(),
            decode_s: st.decode_time.as_secs_f64(),
        }
    }

    /// One line for standard error: counts, acceptance per draft position, times.
    pub fn summary(&self) -> String {
        let per_position: Vec<String> = self
            .accepted_at
            .iter()
            .zip(&self.drafted_at)
            .map(|(&a, &d)| if d == 0 { "-".into() } else { format!("{:.0}%", 100.0 * a as f64 / d as f64) })
            .collect();
        format!(
            "speculative ({}): drafted {}, accepted {} ({:.1}%, {:.2} per verification; by draft position {}), {} \
             verify + {} plain steps, drafting {:.3} s, decoding {:.3} s",
            self.drafter,
            self.drafted,
            self.accepted,
            100.0 * self.acceptance,
            self.mean_accepted,
            if per_position.is_empty() { "-".to_string() } else { per_position.join(" ") },
            self.verified,
            self.plain,
            self.draft_s,
            self.decode_s
        )
    }
}

/// A passage the quoting prompt asks the model to repeat: real prose, so that n-gram lookup
/// has what a user's editing or summarising request gives it.
const PASSAGE: &str = "The old lighthouse stood at the end of the harbour wall, where the fishing boats \
    turned for home. Every evening the keeper climbed the hundred and twelve steps, trimmed the wick, \
    polished the great lens and wrote the weather in a leather book: wind from the west, a swell \
    from the south, rain before midnight. In forty years he missed one night, the winter his \
    daughter was born, and the harbour master lit the lamp for him.";

/// The built-in prompts of a speculative workload ([`SpecWorkload::text`]).
pub const SPEC_TEXTS: [&str; 2] = ["quote", "free"];

/// The prompt of a built-in text: `quote` asks for a passage to be repeated word for word (an
/// editing or quoting request, where the answer repeats its input), `free` for a story (free
/// continuation).
pub fn spec_prompt(text: &str) -> Option<String> {
    match text {
        "quote" => Some(format!(
            "Repeat the following passage exactly, word for word.\n\nPassage: {PASSAGE}\n\nRepeated passage: "
        )),
        "free" => Some(
            "Write a short story about a lighthouse keeper who finds a message in a bottle. Once upon a time,".into(),
        ),
        _ => None,
    }
}

/// A speculative workload: `n_gen` tokens generated greedily after a real prompt, plainly and
/// with the speculative flags, interleaved repetition by repetition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecWorkload {
    /// A built-in prompt: `quote` or `free` ([`spec_prompt`]).
    pub text: String,
    /// llama.cpp's speculative flags (`--spec-type ngram-simple --spec-ngram-simple-size-n 3`,
    /// `-md DRAFT --spec-draft-n-max 4`).
    pub flags: String,
}

/// What a speculative workload measured.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SpecResult {
    /// Generation tokens/s without speculation, one sample per repetition.
    pub plain: crate::measure::SampleStats,
    /// Effective generation tokens/s with it (drafting and verification included).
    pub speculative: crate::measure::SampleStats,
    /// Mean speculative over mean plain tokens/s.
    pub speedup: f64,
    /// `faster`, `slower` or `within noise`: the two sample sets by Welch's t-test and the
    /// minimum effect of `compare`.
    pub verdict: String,
    /// Whether every speculative run generated the plain run's tokens.
    pub exact: bool,
    /// Where a speculative run first differed from the plain tokens, if one did (llama.cpp's
    /// kernels are not batch-invariant: a near-tie can round the other way in a verification
    /// batch; the library's tests show this for their divergences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<usize>,
    /// The drafter's statistics over all repetitions.
    pub stats: SpecReport,
}

/// Runs a speculative workload on `model`: after an untimed warm-up of each, `repetitions`
/// rounds of one plain greedy generation of `n_gen` tokens and one speculative one, each on a
/// fresh context from `options` (end of generation ignored, so both produce `n_gen` tokens).
pub fn run_workload(
    model: &Model,
    options: &ContextOptions,
    spec: &SpecWorkload,
    n_gen: u32,
    repetitions: u32,
) -> Result<SpecResult> {
    let bad = |reason: String| crate::Error::InvalidOption { option: "speculative workload".into(), reason };
    let prompt_text = spec_prompt(&spec.text)
        .ok_or_else(|| bad(format!("text `{}`: the built-in texts are {}", spec.text, SPEC_TEXTS.join(", "))))?;
    let parsed = llama_runner::flags::parse_quietly::<String>(&[], &llama_runner::flags::split(&spec.flags)?)?;
    let mut run = parsed.options;
    if run.speculative.drafter()?.is_none() {
        return Err(bad(format!("flags `{}` ask for no speculative decoding (--spec-type, -md)", spec.flags)));
    }
    run.model = model.options().clone();
    run.context = options.clone();
    let backend = Backend::get()?;
    let drafting = Drafting::new(&run, backend)?.ok_or_else(|| bad("no drafter".into()))?;
    let prompt = model.tokenize(&prompt_text, true)?;
    let n = n_gen as usize;
    let mut ctx_options = options.clone();
    let needed = u32::try_from(prompt.len()).unwrap_or(u32::MAX).saturating_add(n_gen).saturating_add(16);
    ctx_options.n_ctx = ctx_options.n_ctx.max(needed);
    let stop = llama_runner::StopConditions { max_tokens: n, ignore_eos: true, ..Default::default() };
    let plain_run = || -> Result<(Vec<Token>, f64)> {
        let mut ctx = Context::new(model, &ctx_options)?;
        let mut sampler = llama_runner::Sampler::greedy(model)?;
        let mut tokens = Vec::with_capacity(n);
        let mut tps = 0.0;
        for e in ctx.stream(&mut sampler, &prompt, stop.clone())? {
            match e? {
                llama_runner::Event::Token { id, .. } => tokens.push(id),
                llama_runner::Event::Done { generation, .. } => tps = generation.gen_tps(),
                _ => {}
            }
        }
        Ok((tokens, tps))
    };
    let spec_run = |totals: &mut SpecStats| -> Result<(Vec<Token>, f64)> {
        let mut ctx = Context::new(model, &ctx_options)?;
        let mut draft_ctx = drafting.context(&ctx_options)?;
        let mut drafter = drafting.drafter(draft_ctx.as_mut(), model)?;
        let mut sampler = llama_runner::Sampler::greedy(model)?;
        let mut tokens = Vec::with_capacity(n);
        let mut tps = 0.0;
        let mut stream = ctx.stream_speculative(&mut sampler, &[], &prompt, stop.clone(), drafter.as_mut())?;
        for e in stream.by_ref() {
            match e? {
                llama_runner::Event::Token { id, .. } => tokens.push(id),
                llama_runner::Event::Done { generation, .. } => tps = generation.gen_tps(),
                _ => {}
            }
        }
        if let Some(s) = stream.speculation() {
            add_stats(totals, s);
        }
        Ok((tokens, tps))
    };
    // Warm-up, untimed.
    let (reference, _) = plain_run()?;
    spec_run(&mut SpecStats::default())?;
    let (mut plain_ns, mut spec_ns) = (Vec::new(), Vec::new());
    let mut totals = SpecStats::default();
    let mut first_difference: Option<usize> = None;
    let differs =
        |a: &[Token]| (a != reference.as_slice()).then(|| a.iter().zip(&reference).take_while(|(x, y)| x == y).count());
    for _ in 0..repetitions.max(1) {
        let (p, p_tps) = plain_run()?;
        let (s, s_tps) = spec_run(&mut totals)?;
        for at in [differs(&p), differs(&s)].into_iter().flatten() {
            first_difference = Some(first_difference.map_or(at, |f| f.min(at)));
        }
        plain_ns.push(ns_of(n, p_tps));
        spec_ns.push(ns_of(n, s_tps));
    }
    let samples = |ns: Vec<u64>| {
        crate::measure::SampleStats::from(&crate::measure::Samples { n_tokens: n as u64, samples_ns: ns })
    };
    let (plain, speculative) = (samples(plain_ns), samples(spec_ns));
    let change = crate::compare::compare_samples(&plain.samples_ts, &speculative.samples_ts);
    Ok(SpecResult {
        speedup: if plain.avg_ts > 0.0 { speculative.avg_ts / plain.avg_ts } else { 0.0 },
        verdict: change.verdict.to_string(),
        plain,
        speculative,
        exact: first_difference.is_none(),
        first_difference,
        stats: SpecReport::new(drafting.name, &totals),
    })
}

/// Nanoseconds of `n` tokens at `tps` tokens/s.
fn ns_of(n: usize, tps: f64) -> u64 {
    if tps > 0.0 { (1e9 * n as f64 / tps) as u64 } else { 0 }
}

fn add_stats(total: &mut SpecStats, s: &SpecStats) {
    total.drafted += s.drafted;
    total.accepted += s.accepted;
    total.verified += s.verified;
    total.plain += s.plain;
    for (v, add) in [(&mut total.drafted_at, &s.drafted_at), (&mut total.accepted_at, &s.accepted_at)] {
        if v.len() < add.len() {
            v.resize(add.len(), 0);
        }
        v.iter_mut().zip(add).for_each(|(a, b)| *a += b);
    }
    total.draft_time += s.draft_time;
    total.decode_time += s.decode_time;
}
