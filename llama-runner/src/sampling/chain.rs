//! The `llama_sampler` chain built from [`SamplingOptions`], and the generation loop over it.

use std::ffi::{CStr, CString, c_char};
use std::ptr::NonNull;
use std::time::Instant;

use llama_sys as sys;

use super::grammar::GrammarSampler;
use super::{MAX_LAST_N, MIROSTAT_M, Mirostat, SamplerType, SamplingOptions, field, invalid};
use crate::context::{Context, Generation};
use crate::error::{Error, Result};
use crate::model::{Model, Token};

/// A llama.cpp sampler chain, built as `common_sampler_init` builds it, for one [`Model`].
///
/// It borrows the model whose vocabulary DRY, the logit bias and infill use, so it cannot
/// outlive it, and samples only from contexts of that model. Frees the chain on drop.
///
/// Each token is accepted once: [`sample`](Self::sample) returns a token the chain has already
/// accepted (llama.cpp's `llama_sampler_sample` does), so the caller must not accept it again;
/// [`accept`](Self::accept) is for tokens the chain did not pick (a prompt whose tokens the
/// penalties should count, a forced token).
///
/// Used while its model lives, it compiles:
///
/// ```no_run
/// # use llama_runner::{Backend, Model, ModelOptions};
/// # use llama_runner::sampling::{Sampler, SamplingOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let sampler = Sampler::new(&model, &SamplingOptions::default())?;
/// println!("{:?}", sampler.names());
/// drop(sampler);
/// drop(model);
/// # Ok(()) }
/// ```
///
/// Outliving it, it does not:
///
/// ```compile_fail
/// # use llama_runner::{Backend, Model, ModelOptions};
/// # use llama_runner::sampling::{Sampler, SamplingOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let sampler = Sampler::new(&model, &SamplingOptions::default())?;
/// drop(model); // the model goes while the sampler still borrows it
/// println!("{:?}", sampler.names());
/// # Ok(()) }
/// ```
pub struct Sampler<'m> {
    raw: NonNull<sys::llama_sampler>,
    /// The grammar sampler, beside the chain as in llama.cpp's common sampler (not in it).
    grammar: Option<GrammarSampler>,
    /// The candidates buffer of grammar-constrained sampling.
    cur: Vec<sys::llama_token_data>,
    model: &'m Model,
    options: SamplingOptions,
    ignore_eos: bool,
}

// SAFETY: a llama_sampler chain is a plain heap object (its samplers' state: RNGs, histories,
// buffers) with no thread affinity and no thread-local state; llama-server creates samplers on
// one thread and uses them on its slot threads. Every call that mutates it takes `&mut self`,
// and `Sampler` is not `Sync` (the raw pointer keeps the auto trait off). The borrowed `Model`
// is `Sync`.
unsafe impl Send for Sampler<'_> {}

/// The chain while it is being built: freed on an early return.
struct Building(NonNull<sys::llama_sampler>);

impl Building {
    /// Adds a sampler returned by a `llama_sampler_init_*`, which the chain then owns.
    fn add(&mut self, smpl: *mut sys::llama_sampler, what: &'static str) -> Result<()> {
        if smpl.is_null() {
            return Err(Error::SamplerInit { sampler: what });
        }
        // SAFETY: both pointers are valid; the chain takes ownership of `smpl`, which is not
        // used again here.
        unsafe { sys::llama_sampler_chain_add(self.0.as_ptr(), smpl) };
        Ok(())
    }

    fn finish(self) -> NonNull<sys::llama_sampler> {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_chain_init, never handed out, freed once (with the
        // samplers added so far).
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) }
    }
}

fn chain_init(no_perf: bool) -> Result<Building> {
    // SAFETY: returns a struct by value.
    let mut params = unsafe { sys::llama_sampler_chain_default_params() };
    params.no_perf = no_perf;
    // SAFETY: a plain constructor taking its parameters by value.
    let raw = unsafe { sys::llama_sampler_chain_init(params) };
    NonNull::new(raw).map(Building).ok_or(Error::SamplerInit { sampler: "chain" })
}

impl<'m> Sampler<'m> {
    /// Builds the chain for `options` as `common_sampler_init` does at the llama.cpp commit
    /// this crate is built against (grammar and reasoning budget aside).
    ///
    /// The options are validated first ([`SamplingOptions::validate`]), then against the
    /// model: logit-bias token ids must be in the vocabulary, DRY's `-1` needs a training
    /// context of 1..=[`MAX_LAST_N`] tokens, and infill needs an EOT or EOS token; so nothing
    /// reaches llama.cpp that it would abort on.
    pub fn new(model: &'m Model, options: &SamplingOptions) -> Result<Sampler<'m>> {
        options.validate()?;
        let n_vocab = model.n_vocab();
        if let Some(b) = options.logit_bias.iter().find(|b| b.token < 0 || b.token as u32 >= n_vocab) {
            return Err(Error::InvalidToken { token: b.token, n_vocab });
        }
        let n_ctx_train = i32::try_from(model.n_ctx_train()).unwrap_or(i32::MAX);
        let uses = |t: SamplerType| options.mirostat == Mirostat::Off && options.samplers.contains(&t);
        if uses(SamplerType::Dry)
            && options.dry_enabled()
            && options.dry_penalty_last_n == -1
            && !(1..=MAX_LAST_N).contains(&n_ctx_train)
        {
            return Err(invalid(
                field::DRY_PENALTY_LAST_N,
                -1,
                format!(
                    "-1 stands for the model's training context, {n_ctx_train} tokens, which is not within \
                     1..={MAX_LAST_N}; give a count"
                ),
            ));
        }
        let vocab = model.vocab();
        // SAFETY: the vocabulary is valid while the model lives.
        let (eos, eot) = unsafe { (sys::llama_vocab_eos(vocab), sys::llama_vocab_eot(vocab)) };
        if uses(SamplerType::Infill) && eos == sys::LLAMA_TOKEN_NULL && eot == sys::LLAMA_TOKEN_NULL {
            return Err(invalid(
                field::SAMPLERS,
                "infill",
                "the infill sampler needs an EOT or EOS token, and the model has neither",
            ));
        }
        let breakers = options
            .dry_sequence_breakers
            .iter()
            .map(|b| CString::new(b.as_str()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| invalid(field::DRY_SEQUENCE_BREAKERS, "", "contains a NUL byte"))?;
        // llama.cpp's common_init_from_params drops --ignore-eos when there is no EOS token.
        let ignore_eos = options.ignore_eos && eos != sys::LLAMA_TOKEN_NULL;
        // The grammar first, as common_sampler_init builds it (an error before any chain).
        let grammar = match &options.grammar {
            Some(g) => GrammarSampler::new(model, &g.to_gbnf()?, options.grammar_lazy, &options.grammar_triggers)?,
            None => None,
        };

        let mut chain = chain_init(options.no_perf)?;
        let seed = options.seed;
        let min_keep = options.min_keep as usize;

        // The logit bias: the user's, then -inf for every EOG token (ignore_eos), then -inf for
        // the tokens the model suppresses.
        let mut biases: Vec<sys::llama_logit_bias> =
            options.logit_bias.iter().map(|b| sys::llama_logit_bias { token: b.token, bias: b.bias }).collect();
        if ignore_eos {
            biases.extend(
                (0..n_vocab as Token)
                    .filter(|&t| model.is_eog(t))
                    .map(|token| sys::llama_logit_bias { token, bias: f32::NEG_INFINITY }),
            );
        }
        let mut n_suppress = 0i32;
        // SAFETY: valid vocabulary; llama.cpp writes the count and returns a pointer into the
        // vocabulary (or null with a count of 0), valid while the model lives.
        let suppress = unsafe { sys::llama_vocab_get_suppress_tokens(vocab, &mut n_suppress) };
        if !suppress.is_null() && n_suppress > 0 {
            // SAFETY: llama.cpp returned `n_suppress` tokens at `suppress`.
            let tokens = unsafe { std::slice::from_raw_parts(suppress, n_suppress as usize) };
            biases.extend(tokens.iter().map(|&token| sys::llama_logit_bias { token, bias: f32::NEG_INFINITY }));
        }
        if !biases.is_empty() {
            let n = i32::try_from(biases.len())
                .map_err(|_| invalid(field::LOGIT_BIAS, biases.len(), "too many logit biases"))?;
            // SAFETY: `biases` holds `n` entries, whose token ids are in the vocabulary
            // (checked above, or taken from it); llama.cpp copies them.
            let smpl = unsafe { sys::llama_sampler_init_logit_bias(n_vocab as i32, n, biases.as_ptr()) };
            chain.add(smpl, "logit-bias")?;
        }

        let o = options;
        match o.mirostat {
            Mirostat::Off => {
                let mut adaptive = false;
                for &t in &o.samplers {
                    // SAFETY: every constructor below is a plain constructors taking values that
                    // validation and the checks above keep within what llama.cpp handles; the
                    // vocabulary is valid while the model (borrowed by the sampler) lives.
                    let smpl = unsafe {
                        match t {
                            SamplerType::Dry => {
                                let mut ptrs: Vec<*const c_char> = breakers.iter().map(|b| b.as_ptr()).collect();
                                // The breakers are read (tokenized) during the call only.
                                sys::llama_sampler_init_dry(
                                    vocab,
                                    n_ctx_train,
                                    o.dry_multiplier,
                                    o.dry_base,
                                    o.dry_allowed_length,
                                    o.dry_penalty_last_n,
                                    ptrs.as_mut_ptr(),
                                    ptrs.len(),
                                )
                            }
                            SamplerType::TopK => sys::llama_sampler_init_top_k(o.top_k),
                            SamplerType::TopP => sys::llama_sampler_init_top_p(o.top_p, min_keep),
                            SamplerType::TopNSigma => sys::llama_sampler_init_top_n_sigma(o.top_n_sigma),
                            SamplerType::MinP => sys::llama_sampler_init_min_p(o.min_p, min_keep),
                            SamplerType::Xtc => {
                                sys::llama_sampler_init_xtc(o.xtc_probability, o.xtc_threshold, min_keep, seed)
                            }
                            SamplerType::TypicalP => sys::llama_sampler_init_typical(o.typ_p, min_keep),
                            SamplerType::Temperature => {
                                sys::llama_sampler_init_temp_ext(o.temp, o.dynatemp_range, o.dynatemp_exponent)
                            }
                            SamplerType::Infill => sys::llama_sampler_init_infill(vocab),
                            SamplerType::Penalties => sys::llama_sampler_init_penalties(
                                o.penalty_last_n,
                                o.penalty_repeat,
                                o.penalty_freq,
                                o.penalty_present,
                            ),
                            SamplerType::AdaptiveP => {
                                // Like dist and mirostat it picks the token: added last.
                                adaptive = true;
                                continue;
                            }
                        }
                    };
                    chain.add(smpl, t.name())?;
                }
                if adaptive {
                    // SAFETY: a plain constructor; llama.cpp clamps the decay.
                    let smpl = unsafe { sys::llama_sampler_init_adaptive_p(o.adaptive_target, o.adaptive_decay, seed) };
                    chain.add(smpl, "adaptive_p")?;
                } else {
                    // SAFETY: a plain constructor.
                    chain.add(unsafe { sys::llama_sampler_init_dist(seed) }, "dist")?;
                }
            }
            Mirostat::V1 => {
                // SAFETY: a plain constructor.
                chain.add(unsafe { sys::llama_sampler_init_temp(o.temp) }, "temp")?;
                // SAFETY: a plain constructor; n_vocab is the model's.
                let smpl = unsafe {
                    sys::llama_sampler_init_mirostat(n_vocab as i32, seed, o.mirostat_tau, o.mirostat_eta, MIROSTAT_M)
                };
                chain.add(smpl, "mirostat")?;
            }
            Mirostat::V2 => {
                // SAFETY: a plain constructor.
                chain.add(unsafe { sys::llama_sampler_init_temp(o.temp) }, "temp")?;
                // SAFETY: a plain constructor.
                let smpl = unsafe { sys::llama_sampler_init_mirostat_v2(seed, o.mirostat_tau, o.mirostat_eta) };
                chain.add(smpl, "mirostat_v2")?;
            }
        }
        crate::logging::resume_panic();
        Ok(Sampler { raw: chain.finish(), grammar, cur: Vec::new(), model, options: options.clone(), ignore_eos })
    }

    /// A chain of llama.cpp's `greedy` sampler alone: the most likely token, no RNG. (llama.cpp's
    /// tools spell greedy as temperature 0, which keeps one candidate for `dist`: the same
    /// token.)
    pub fn greedy(model: &'m Model) -> Result<Sampler<'m>> {
        let mut chain = chain_init(false)?;
        // SAFETY: a plain constructor.
        chain.add(unsafe { sys::llama_sampler_init_greedy() }, "greedy")?;
        let options = SamplingOptions { temp: 0.0, samplers: Vec::new(), ..SamplingOptions::default() };
        Ok(Sampler { raw: chain.finish(), grammar: None, cur: Vec::new(), model, options, ignore_eos: false })
    }

    /// Samples the next token from the logits of the context's last decoded token, and accepts
    /// it into the chain (llama.cpp's `llama_sampler_sample`): do not [`accept`](Self::accept)
    /// it again.
    ///
    /// Fails with [`Error::NoLogits`] when the context has no logits (fresh, cleared, restored,
    /// or after a failed decode), and with [`Error::SamplerModelMismatch`] for a context of
    /// another model.
    pub fn sample(&mut self, ctx: &mut Context<'_>) -> Result<Token> {
        if ctx.model().id() != self.model.id() {
            return Err(Error::SamplerModelMismatch);
        }
        if !ctx.has_logits() {
            return Err(Error::NoLogits);
        }
        if self.grammar.is_some() {
            // SAFETY: a context of this sampler's model whose last decode left logits for its
            // last token (checked above), not used elsewhere while borrowed.
            return unsafe { self.sample_constrained(ctx.raw(), -1) };
        }
        // SAFETY: valid chain and context; the last decode succeeded and left logits for its
        // last token, which idx -1 selects (llama.cpp aborts otherwise); the chain ends with a
        // sampler that selects a token (dist, adaptive-p, mirostat or greedy), so its selection
        // assert holds; the context's model is the one the chain was built for.
        let token = unsafe { sys::llama_sampler_sample(self.raw.as_ptr(), ctx.raw().as_ptr(), -1) };
        crate::logging::resume_panic();
        Ok(token)
    }

    /// Feeds a token the chain did not sample into its history (penalties, DRY, adaptive-p),
    /// as `common_sampler_accept` does for prompt tokens. Not for tokens returned by
    /// [`sample`](Self::sample), which are accepted already.
    pub fn accept(&mut self, token: Token) -> Result<()> {
        let n_vocab = self.model.n_vocab();
        if token < 0 || token as u32 >= n_vocab {
            return Err(Error::InvalidToken { token, n_vocab });
        }
        // SAFETY: valid chain; the token is in the vocabulary.
        unsafe { sys::llama_sampler_accept(self.raw.as_ptr(), token) };
        Ok(())
    }

    /// Forgets the history (penalties, DRY, mirostat's mu, adaptive-p) and reseeds the RNGs
    /// with the seed (a new random one for [`RANDOM_SEED`](super::RANDOM_SEED)); a grammar
    /// starts again from its root (a lazy one waits for its trigger again), also after a
    /// [`GrammarDeadEnd`](Error::GrammarDeadEnd). (llama.cpp's `common_sampler_reset` resets
    /// only the chain.)
    pub fn reset(&mut self) {
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_reset(self.raw.as_ptr()) }
        if let Some(g) = &mut self.grammar {
            g.reset();
        }
    }

    /// Whether a grammar constrains the tokens ([`SamplingOptions::grammar`]).
    pub fn has_grammar(&self) -> bool {
        self.grammar.is_some()
    }

    /// `common_sampler_sample` followed by `common_sampler_accept`: the chain picks a token
    /// from the unconstrained candidates; if the grammar refuses it, the candidates are built
    /// again, the grammar applied first and the chain run once more (so the chain's RNG may
    /// advance twice, as in llama.cpp); then the grammar and the chain accept the token.
    /// Where llama.cpp would go on with no allowed token (and abort or throw later), this is
    /// [`Error::GrammarDeadEnd`] with nothing accepted.
    ///
    /// # Safety
    /// `ctx` is a valid context of this sampler's model whose last decode left logits for
    /// batch index `idx` (`-1`: the last token), not used elsewhere during the call.
    pub(crate) unsafe fn sample_constrained(&mut self, ctx: NonNull<sys::llama_context>, idx: i32) -> Result<Token> {
        let Some(grammar) = self.grammar.as_mut() else {
            return Err(Error::SamplerInit { sampler: "grammar" });
        };
        grammar.check_usable()?;
        let n_vocab = self.model.n_vocab() as usize;
        let fill = |cur: &mut Vec<sys::llama_token_data>| -> Result<sys::llama_token_data_array> {
            // SAFETY: the caller's contract: logits exist for `idx`; llama.cpp returns null
            // (it does not abort) for an index without them.
            let logits = unsafe { sys::llama_get_logits_ith(ctx.as_ptr(), idx) };
            if logits.is_null() {
                return Err(Error::NoLogits);
            }
            // SAFETY: llama.cpp's logits row holds n_vocab floats.
            let logits = unsafe { std::slice::from_raw_parts(logits, n_vocab) };
            cur.clear();
            cur.extend(logits.iter().enumerate().map(|(i, &logit)| sys::llama_token_data {
                id: i as Token,
                logit,
                p: 0.0,
            }));
            Ok(sys::llama_token_data_array { data: cur.as_mut_ptr(), size: cur.len(), selected: -1, sorted: false })
        };
        let chain = self.raw;
        // The chosen candidate after the chain ran: its token and whether its logit survived.
        let pick = |arr: &mut sys::llama_token_data_array| -> Option<(Token, bool)> {
            // SAFETY: valid chain; `arr` holds the model's candidates (samplers may shrink
            // and reorder them in place).
            unsafe { sys::llama_sampler_apply(chain.as_ptr(), arr) };
            let sel = usize::try_from(arr.selected).ok().filter(|&s| s < arr.size)?;
            // SAFETY: `sel` is within the array llama.cpp left.
            let d = unsafe { *arr.data.add(sel) };
            Some((d.id, d.logit != f32::NEG_INFINITY))
        };

        let mut arr = fill(&mut self.cur)?;
        let first = pick(&mut arr);
        let token = match first {
            Some((t, true)) if grammar.allows(t) => t,
            _ => {
                // Resampling: the grammar first, then the chain.
                let mut arr = fill(&mut self.cur)?;
                // SAFETY: the candidates of this model's vocabulary.
                unsafe { grammar.apply(&mut arr) };
                if !self.cur.iter().any(|d| d.logit != f32::NEG_INFINITY) {
                    return Err(grammar.dead_end(None));
                }
                match pick(&mut arr) {
                    Some((t, true)) if grammar.allows(t) => t,
                    _ => {
                        return Err(grammar.dead_end(Some(
                            "the tokens the grammar allows are all removed by the sampler chain (a logit bias, \
                             ignore_eos)"
                                .into(),
                        )));
                    }
                }
            }
        };
        grammar.accept(self.model, token)?;
        // SAFETY: valid chain; the token is in the vocabulary.
        unsafe { sys::llama_sampler_accept(self.raw.as_ptr(), token) };
        crate::logging::resume_panic();
        Ok(token)
    }

    /// The seed the chain's RNG uses: the one given, or the random one picked for
    /// [`RANDOM_SEED`](super::RANDOM_SEED).
    pub fn seed(&self) -> u32 {
        // SAFETY: valid chain; only read.
        unsafe { sys::llama_sampler_get_seed(self.raw.as_ptr()) }
    }

    /// llama.cpp's names of the samplers in the chain, in order (`logit-bias`, `penalties`,
    /// `top-k`, ..., `dist`); disabled ones are named with a leading `?` (`?top-p`).
    pub fn names(&self) -> Vec<String> {
        // SAFETY: valid chain; only read.
        let n = unsafe { sys::llama_sampler_chain_n(self.raw.as_ptr()) };
        (0..n)
            .map(|i| {
                // SAFETY: `i` is within the chain; the name is a C string owned by the sampler,
                // copied before anything can free it.
                unsafe {
                    let smpl = sys::llama_sampler_chain_get(self.raw.as_ptr(), i);
                    let name = sys::llama_sampler_name(smpl);
                    if name.is_null() { String::new() } else { CStr::from_ptr(name).to_string_lossy().into_owned() }
                }
            })
            .collect()
    }

    /// The options it was built from.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// The model it samples for.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Whether end-of-generation tokens are banned (`ignore_eos`, when the model has an EOS
    /// token): generation then runs to its length.
    pub fn ignore_eos(&self) -> bool {
        self.ignore_eos
    }

    /// The chain, for sampling at a batch index ([`crate::batch::Outputs::sample`]); callers
    /// keep its invariants (valid while `self` lives, ends with a selecting sampler).
    pub(crate) fn raw_chain(&self) -> NonNull<sys::llama_sampler> {
        self.raw
    }
}

impl Drop for Sampler<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_chain_init and freed once, with its samplers.
        unsafe { sys::llama_sampler_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Sampler<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("chain", &self.names()).field("options", &self.options).finish_non_exhaustive()
    }
}

/// Processes `prompt` (appended to what the context holds), then samples up to `max_tokens`
/// tokens with `sampler`, decoding each, and stops early at an end-of-generation token unless
/// the sampler ignores EOS. The prompt is not fed to the sampler (call
/// [`Sampler::accept`] first for penalties over it); each sampled token is accepted once.
///
/// The one generation loop for tests and users; [`Generation::tokens`] excludes the EOG token.
pub fn generate(
    ctx: &mut Context<'_>,
    sampler: &mut Sampler<'_>,
    prompt: &[Token],
    max_tokens: usize,
) -> Result<Generation> {
    if ctx.model().id() != sampler.model.id() {
        return Err(Error::SamplerModelMismatch);
    }
    if prompt.is_empty() {
        return Err(Error::EmptyInput { what: "prompt" });
    }
    let needed = prompt.len() + max_tokens.saturating_sub(1);
    let n_ctx = ctx.n_ctx();
    if ctx.n_past() + needed > n_ctx as usize {
        return Err(Error::ContextFull { needed, used: ctx.n_past(), n_ctx });
    }
    let model = ctx.model();
    let t0 = Instant::now();
    ctx.decode(prompt)?;
    let prompt_time = t0.elapsed();

    let t1 = Instant::now();
    let mut tokens = Vec::with_capacity(max_tokens);
    let mut stopped_at_eog = false;
    for i in 0..max_tokens {
        let t = sampler.sample(ctx)?;
        if !sampler.ignore_eos && model.is_eog(t) {
            stopped_at_eog = true;
            break;
        }
        tokens.push(t);
        if i + 1 < max_tokens {
            ctx.decode(&[t])?;
        }
    }
    Ok(Generation { tokens, stopped_at_eog, n_prompt: prompt.len(), prompt_time, gen_time: t1.elapsed() })
}
