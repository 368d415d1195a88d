//! Sampling: llama.cpp's sampler chain, configured as its command-line tools configure it.
//!
//! [`SamplingOptions`] mirrors llama.cpp's `common_params_sampling` (`common/common.h`) field for
//! field, with its defaults and its default sampler order
//! (`penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature`). [`Sampler`] turns the
//! options into a `llama_sampler` chain exactly as `common_sampler_init` (`common/sampling.cpp`)
//! does: the logit bias first (user biases, then the end-of-generation bans of `ignore_eos`,
//! then the tokens the model asks to suppress), the samplers of [`SamplingOptions::samplers`] in
//! their order, and last the one that picks a token (`dist`, or `adaptive-p` when it is listed);
//! with mirostat, only `temp` and the mirostat sampler.
//!
//! The llama.cpp flags users already write (`--temp 0.7 --top-k 20 ...`) parse into the options
//! with [`parse_flags`] (llama.cpp's value semantics: `std::stof` / `std::stoi`) and render back
//! with [`render_flags`].
//!
//! ```no_run
//! use llama_runner::sampling::{self, Sampler, SamplingOptions};
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
//! let options = sampling::parse_flags(&["--temp", "0.7", "--top-k", "20", "--seed", "42"])?;
//! // or: SamplingOptions::builder().temperature(0.7).top_k(20).seed(42).build()?
//! let mut sampler = Sampler::new(&model, &options)?;
//! let prompt = model.tokenize("Once upon a time", true)?;
//! let out = sampling::generate(&mut ctx, &mut sampler, &prompt, 32)?;
//! println!("{}", model.detokenize(&out.tokens)?);
//! # Ok(()) }
//! ```
//!
//! A token is accepted into the chain once: [`Sampler::sample`] calls `llama_sampler_sample`,
//! which already accepts the token it returns (penalties, DRY, mirostat and adaptive-p update
//! their state from it), so the caller must not accept it again.

mod chain;
mod defaults;
mod flags;
mod grammar;
mod json_schema;

pub use chain::{Sampler, generate};
pub use defaults::SamplingDefaults;
pub use flags::{SAMPLING_FLAGS, is_sampling_flag, parse_flags, parse_flags_onto, render_flags};
pub use grammar::{
    CheckedGbnf, Grammar, GrammarTrigger, MAX_GROUP_NESTING, MAX_PATTERN_TRIGGER_TEXT, MAX_REPETITIONS, MAX_RULE_CHAIN,
    check_gbnf,
};
pub use json_schema::{MAX_SCHEMA_DEPTH, json_schema_to_gbnf};

use crate::error::{Error, Result};
use crate::model::Token;

/// `LLAMA_DEFAULT_SEED`: a seed of this value asks llama.cpp for a random seed.
pub const RANDOM_SEED: u32 = llama_sys::LLAMA_DEFAULT_SEED;

/// The largest `penalty_last_n` / `dry_penalty_last_n` (and a model's training context used for
/// DRY's `-1`) accepted: llama.cpp allocates its history buffers at that size up front, and an
/// allocation failure inside the C++ library cannot be reported, it aborts the process.
pub const MAX_LAST_N: i32 = 1 << 24;

/// The mirostat `m` that `common_sampler_init` passes (the paper's value).
pub const MIROSTAT_M: i32 = 100;

/// One sampler of the chain, with llama.cpp's names for `--samplers` and its letters for
/// `--sampling-seq` (`common_sampler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "&'static str"))]
pub enum SamplerType {
    /// DRY repetition penalty (`dry`, `d`).
    Dry,
    /// Top-k (`top_k`, `k`).
    TopK,
    /// Locally typical sampling (`typ_p`, `y`).
    TypicalP,
    /// Top-p, nucleus sampling (`top_p`, `p`).
    TopP,
    /// Top-n-sigma (`top_n_sigma`, `s`).
    TopNSigma,
    /// Min-p (`min_p`, `m`).
    MinP,
    /// Temperature, with dynamic temperature when `dynatemp_range > 0` (`temperature`, `t`).
    Temperature,
    /// XTC, exclude top choices (`xtc`, `x`).
    Xtc,
    /// Fill-in-the-middle end handling (`infill`, `i`).
    Infill,
    /// Repeat, frequency and presence penalties (`penalties`, `e`).
    Penalties,
    /// Adaptive-p: when listed (anywhere), it replaces `dist` as the last sampler (`adaptive_p`, `a`).
    AdaptiveP,
}

impl SamplerType {
    /// Every sampler type.
    pub const ALL: [SamplerType; 11] = [
        SamplerType::Dry,
        SamplerType::TopK,
        SamplerType::TypicalP,
        SamplerType::TopP,
        SamplerType::TopNSigma,
        SamplerType::MinP,
        SamplerType::Temperature,
        SamplerType::Xtc,
        SamplerType::Infill,
        SamplerType::Penalties,
        SamplerType::AdaptiveP,
    ];

    /// llama.cpp's default order (`common_params_sampling::samplers`).
    pub const DEFAULT_ORDER: [SamplerType; 9] = [
        SamplerType::Penalties,
        SamplerType::Dry,
        SamplerType::TopNSigma,
        SamplerType::TopK,
        SamplerType::TypicalP,
        SamplerType::TopP,
        SamplerType::MinP,
        SamplerType::Xtc,
        SamplerType::Temperature,
    ];

    /// llama.cpp's canonical name (`common_sampler_type_to_str`).
    pub const fn name(self) -> &'static str {
        match self {
            SamplerType::Dry => "dry",
            SamplerType::TopK => "top_k",
            SamplerType::TypicalP => "typ_p",
            SamplerType::TopP => "top_p",
            SamplerType::TopNSigma => "top_n_sigma",
            SamplerType::MinP => "min_p",
            SamplerType::Temperature => "temperature",
            SamplerType::Xtc => "xtc",
            SamplerType::Infill => "infill",
            SamplerType::Penalties => "penalties",
            SamplerType::AdaptiveP => "adaptive_p",
        }
    }

    /// llama.cpp's letter for `--sampling-seq` (`common_sampler_type_to_chr`).
    pub const fn letter(self) -> char {
        match self {
            SamplerType::Dry => 'd',
            SamplerType::TopK => 'k',
            SamplerType::TypicalP => 'y',
            SamplerType::TopP => 'p',
            SamplerType::TopNSigma => 's',
            SamplerType::MinP => 'm',
            SamplerType::Temperature => 't',
            SamplerType::Xtc => 'x',
            SamplerType::Infill => 'i',
            SamplerType::Penalties => 'e',
            SamplerType::AdaptiveP => 'a',
        }
    }

    /// The sampler type of a name as `common_sampler_types_from_names` reads it: case-insensitive,
    /// the canonical name, its kebab-case (`top-k`) and undashed (`topk`) forms, and the aliases
    /// `nucleus`, `temp` and `typ`.
    pub fn from_name(name: &str) -> Option<SamplerType> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "nucleus" => return Some(SamplerType::TopP),
            "temp" => return Some(SamplerType::Temperature),
            "typ" => return Some(SamplerType::TypicalP),
            _ => {}
        }
        SamplerType::ALL.into_iter().find(|t| {
            let canonical = t.name();
            lower == canonical
                || (canonical.contains('_')
                    && (lower == canonical.replace('_', "-") || lower == canonical.replace('_', "")))
        })
    }

    /// The sampler type of a `--sampling-seq` letter (case-sensitive, as in llama.cpp).
    pub fn from_letter(letter: char) -> Option<SamplerType> {
        SamplerType::ALL.into_iter().find(|t| t.letter() == letter)
    }
}

impl std::fmt::Display for SamplerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SamplerType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        SamplerType::from_name(s).ok_or_else(|| {
            format!(
                "unknown sampler `{s}`; known: {}",
                SamplerType::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

impl TryFrom<String> for SamplerType {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<SamplerType> for &'static str {
    fn from(t: SamplerType) -> &'static str {
        t.name()
    }
}

/// Mirostat mode (`--mirostat N`): when on, the chain is only `temp` and the mirostat sampler,
/// and the samplers of [`SamplingOptions::samplers`] are not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "u8", into = "u8"))]
pub enum Mirostat {
    /// Off (0, the default).
    #[default]
    Off,
    /// Mirostat 1.0 (1).
    V1,
    /// Mirostat 2.0 (2).
    V2,
}

impl Mirostat {
    /// llama.cpp's number for it.
    pub const fn number(self) -> u8 {
        match self {
            Mirostat::Off => 0,
            Mirostat::V1 => 1,
            Mirostat::V2 => 2,
        }
    }
}

impl TryFrom<u8> for Mirostat {
    type Error = String;

    fn try_from(n: u8) -> std::result::Result<Self, String> {
        match n {
            0 => Ok(Mirostat::Off),
            1 => Ok(Mirostat::V1),
            2 => Ok(Mirostat::V2),
            _ => Err(format!("mirostat {n} does not exist (0 = off, 1 = Mirostat, 2 = Mirostat 2.0)")),
        }
    }
}

impl From<Mirostat> for u8 {
    fn from(m: Mirostat) -> u8 {
        m.number()
    }
}

/// A bias added to one token's logit (`--logit-bias TOKEN+BIAS`); `-inf` bans the token.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LogitBias {
    /// The token id (checked against the model's vocabulary by [`Sampler::new`]).
    pub token: Token,
    /// Added to the token's logit.
    pub bias: f32,
}

/// The sampling options of llama.cpp's `common_params_sampling`, with its defaults.
///
/// Plain data; with the `serde` feature a configuration deserializes into it, missing fields
/// taking llama.cpp's defaults. `n_probs`, `n_prev`, the reasoning budget and backend sampling
/// are not here (yet). [`SamplingOptions::validate`] (called by [`Sampler::new`] and the builder) refuses the
/// values llama.cpp aborts on or mishandles.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct SamplingOptions {
    /// RNG seed of `dist`, XTC, mirostat and adaptive-p (`-s`, `--seed`); [`RANDOM_SEED`]
    /// (the default) asks for a random one.
    pub seed: u32,
    /// Samplers keep at least this many candidates (0: no minimum). No flag in llama.cpp.
    pub min_keep: u32,
    /// Top-k (`--top-k`, default 40; `<= 0` disables it).
    pub top_k: i32,
    /// Top-p (`--top-p`, default 0.95; `1.0` disables it).
    pub top_p: f32,
    /// Min-p (`--min-p`, default 0.05; `0.0` disables it).
    pub min_p: f32,
    /// XTC probability (`--xtc-probability`, default 0.0 = off).
    pub xtc_probability: f32,
    /// XTC threshold (`--xtc-threshold`, default 0.1; above 0.5 disables XTC).
    pub xtc_threshold: f32,
    /// Locally typical p (`--typical`, default 1.0 = off).
    pub typ_p: f32,
    /// Temperature (`--temp`, default 0.8); `<= 0` keeps only the most likely token (greedy).
    /// The flag clamps negative values to 0, as llama.cpp does.
    pub temp: f32,
    /// Dynamic temperature range (`--dynatemp-range`, default 0.0 = off): the temperature moves
    /// within `temp ± range` with the entropy.
    pub dynatemp_range: f32,
    /// Dynamic temperature exponent (`--dynatemp-exp`, default 1.0).
    pub dynatemp_exponent: f32,
    /// Tokens the penalties look back over (`--repeat-last-n`, default 64; 0 disables them).
    /// llama.cpp documents -1 as "the context size", but at this commit its sampler clamps -1
    /// to 0, which disables the penalties; this crate does the same, for parity.
    pub penalty_last_n: i32,
    /// Repeat penalty (`--repeat-penalty`, default 1.0 = off); must be positive.
    pub penalty_repeat: f32,
    /// Frequency penalty (`--frequency-penalty`, default 0.0 = off).
    pub penalty_freq: f32,
    /// Presence penalty (`--presence-penalty`, default 0.0 = off).
    pub penalty_present: f32,
    /// DRY multiplier (`--dry-multiplier`, default 0.0 = off).
    pub dry_multiplier: f32,
    /// DRY base (`--dry-base`, default 1.75); below 1 disables DRY (the flag ignores such values).
    pub dry_base: f32,
    /// Repetitions up to this length are not penalized by DRY (`--dry-allowed-length`, default 2).
    pub dry_allowed_length: i32,
    /// Tokens DRY scans (`--dry-penalty-last-n`, default -1 = the model's training context;
    /// 0 disables DRY).
    pub dry_penalty_last_n: i32,
    /// Strings that break DRY's repetition matching (`--dry-sequence-breaker`, default
    /// `"\n"`, `":"`, `"\""`, `"*"`).
    pub dry_sequence_breakers: Vec<String>,
    /// Adaptive-p target probability (`--adaptive-target`, default -1.0; negative: adaptive-p
    /// samples like `dist`). Used only when [`SamplerType::AdaptiveP`] is in `samplers`.
    pub adaptive_target: f32,
    /// Adaptive-p decay (`--adaptive-decay`, default 0.9; llama.cpp clamps it to 0.0..=0.99).
    pub adaptive_decay: f32,
    /// Mirostat (`--mirostat`, default off).
    pub mirostat: Mirostat,
    /// Top-n-sigma (`--top-n-sigma`, default -1.0; `<= 0` disables it).
    pub top_n_sigma: f32,
    /// Mirostat target entropy tau (`--mirostat-ent`, default 5.0).
    pub mirostat_tau: f32,
    /// Mirostat learning rate eta (`--mirostat-lr`, default 0.1).
    pub mirostat_eta: f32,
    /// Never produce an end-of-generation token (`--ignore-eos`): every EOG token gets a
    /// `-inf` bias, as llama.cpp's `common_init_from_params` adds. Ignored, as there, when the
    /// model has no EOS token.
    pub ignore_eos: bool,
    /// No sampler timings (`llama_sampler_chain_params::no_perf`).
    pub no_perf: bool,
    /// The samplers, in order (`--samplers`, `--sampling-seq`). Repeats are allowed, as in
    /// llama.cpp.
    pub samplers: Vec<SamplerType>,
    /// Logit biases (`-l`, `--logit-bias`), applied first.
    pub logit_bias: Vec<LogitBias>,
    /// A grammar the output must follow (`--grammar`, `--grammar-file`, `-j`, `-jf`), start
    /// rule `root`; `None` (the default) or an empty GBNF text: no grammar. It is applied as
    /// llama.cpp's common sampler applies it: beside the chain, checked against the token the
    /// chain picked, and the chain run again with the grammar first when it refuses it.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub grammar: Option<Grammar>,
    /// The grammar waits for one of [`grammar_triggers`](Self::grammar_triggers) before it
    /// constrains anything (llama.cpp's lazy grammars). No flag in llama.cpp.
    pub grammar_lazy: bool,
    /// What starts a lazy grammar. Unused unless `grammar_lazy`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub grammar_triggers: Vec<GrammarTrigger>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            seed: RANDOM_SEED,
            min_keep: 0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            xtc_probability: 0.0,
            xtc_threshold: 0.10,
            typ_p: 1.0,
            temp: 0.80,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
            penalty_last_n: 64,
            penalty_repeat: 1.0,
            penalty_freq: 0.0,
            penalty_present: 0.0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
            adaptive_target: -1.0,
            adaptive_decay: 0.90,
            mirostat: Mirostat::Off,
            top_n_sigma: -1.0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            ignore_eos: false,
            no_perf: false,
            samplers: SamplerType::DEFAULT_ORDER.to_vec(),
            logit_bias: Vec::new(),
            grammar: None,
            grammar_lazy: false,
            grammar_triggers: Vec::new(),
        }
    }
}

/// The option names and the llama.cpp flags that set them, as errors name them.
pub(crate) mod field {
    pub const TOP_P: (&str, &str) = ("top_p", "--top-p");
    pub const MIN_P: (&str, &str) = ("min_p", "--min-p");
    pub const XTC_PROBABILITY: (&str, &str) = ("xtc_probability", "--xtc-probability");
    pub const XTC_THRESHOLD: (&str, &str) = ("xtc_threshold", "--xtc-threshold");
    pub const TYP_P: (&str, &str) = ("typ_p", "--typical");
    pub const TEMP: (&str, &str) = ("temp", "--temp");
    pub const DYNATEMP_RANGE: (&str, &str) = ("dynatemp_range", "--dynatemp-range");
    pub const DYNATEMP_EXPONENT: (&str, &str) = ("dynatemp_exponent", "--dynatemp-exp");
    pub const PENALTY_LAST_N: (&str, &str) = ("penalty_last_n", "--repeat-last-n");
    pub const PENALTY_REPEAT: (&str, &str) = ("penalty_repeat", "--repeat-penalty");
    pub const PENALTY_FREQ: (&str, &str) = ("penalty_freq", "--frequency-penalty");
    pub const PENALTY_PRESENT: (&str, &str) = ("penalty_present", "--presence-penalty");
    pub const DRY_MULTIPLIER: (&str, &str) = ("dry_multiplier", "--dry-multiplier");
    pub const DRY_BASE: (&str, &str) = ("dry_base", "--dry-base");
    pub const DRY_ALLOWED_LENGTH: (&str, &str) = ("dry_allowed_length", "--dry-allowed-length");
    pub const DRY_PENALTY_LAST_N: (&str, &str) = ("dry_penalty_last_n", "--dry-penalty-last-n");
    pub const DRY_SEQUENCE_BREAKERS: (&str, &str) = ("dry_sequence_breakers", "--dry-sequence-breaker");
    pub const ADAPTIVE_TARGET: (&str, &str) = ("adaptive_target", "--adaptive-target");
    pub const ADAPTIVE_DECAY: (&str, &str) = ("adaptive_decay", "--adaptive-decay");
    pub const TOP_N_SIGMA: (&str, &str) = ("top_n_sigma", "--top-n-sigma");
    pub const MIROSTAT_TAU: (&str, &str) = ("mirostat_tau", "--mirostat-ent");
    pub const MIROSTAT_ETA: (&str, &str) = ("mirostat_eta", "--mirostat-lr");
    pub const LOGIT_BIAS: (&str, &str) = ("logit_bias", "--logit-bias");
    pub const SAMPLERS: (&str, &str) = ("samplers", "--samplers");
}

pub(crate) fn invalid(f: (&'static str, &'static str), value: impl ToString, reason: impl Into<String>) -> Error {
    Error::InvalidSampling { option: f.0, flag: f.1, value: value.to_string(), reason: reason.into() }
}

impl SamplingOptions {
    /// A builder starting from llama.cpp's defaults.
    pub fn builder() -> SamplingBuilder {
        SamplingBuilder { options: SamplingOptions::default() }
    }

    /// Checks what needs no model, before any C call: every number must be finite (NaN and
    /// infinities make llama.cpp's enable checks and arithmetic meaningless), the repeat
    /// penalty positive (it divides by it), `penalty_last_n` and `dry_penalty_last_n` within
    /// `-1..=`[`MAX_LAST_N`] (below -1 DRY's history has no room and its first token throws
    /// inside llama.cpp, which aborts; above, the history allocation may), `dry_allowed_length`
    /// not negative (llama.cpp's DRY subtracts it from repetition lengths in C `int`), breakers
    /// without NUL bytes, and logit biases not NaN or `+inf` (`-inf` bans a token). The
    /// model-dependent checks (token ids, DRY's training context, infill's end token) are made
    /// by [`Sampler::new`].
    pub fn validate(&self) -> Result<()> {
        use field::*;
        for (f, v) in [
            (TOP_P, self.top_p),
            (MIN_P, self.min_p),
            (XTC_PROBABILITY, self.xtc_probability),
            (XTC_THRESHOLD, self.xtc_threshold),
            (TYP_P, self.typ_p),
            (TEMP, self.temp),
            (DYNATEMP_RANGE, self.dynatemp_range),
            (DYNATEMP_EXPONENT, self.dynatemp_exponent),
            (PENALTY_REPEAT, self.penalty_repeat),
            (PENALTY_FREQ, self.penalty_freq),
            (PENALTY_PRESENT, self.penalty_present),
            (DRY_MULTIPLIER, self.dry_multiplier),
            (DRY_BASE, self.dry_base),
            (ADAPTIVE_TARGET, self.adaptive_target),
            (ADAPTIVE_DECAY, self.adaptive_decay),
            (TOP_N_SIGMA, self.top_n_sigma),
            (MIROSTAT_TAU, self.mirostat_tau),
            (MIROSTAT_ETA, self.mirostat_eta),
        ] {
            if !v.is_finite() {
                return Err(invalid(f, v, "must be a finite number"));
            }
        }
        if self.penalty_repeat <= 0.0 {
            return Err(invalid(
                PENALTY_REPEAT,
                self.penalty_repeat,
                "must be greater than 0 (llama.cpp divides logits by it; 1.0 disables it)",
            ));
        }
        for (f, v) in [(PENALTY_LAST_N, self.penalty_last_n), (DRY_PENALTY_LAST_N, self.dry_penalty_last_n)] {
            if !(-1..=MAX_LAST_N).contains(&v) {
                return Err(invalid(
                    f,
                    v,
                    format!("must be within -1..={MAX_LAST_N} (0 disables it, -1 is llama.cpp's \"context size\")"),
                ));
            }
        }
        if self.dry_allowed_length < 0 {
            return Err(invalid(DRY_ALLOWED_LENGTH, self.dry_allowed_length, "must not be negative"));
        }
        if let Some(b) = self.dry_sequence_breakers.iter().find(|b| b.contains('\0')) {
            return Err(invalid(DRY_SEQUENCE_BREAKERS, format!("{b:?}"), "contains a NUL byte"));
        }
        if let Some(b) = self.logit_bias.iter().find(|b| b.bias.is_nan() || b.bias == f32::INFINITY) {
            return Err(invalid(
                LOGIT_BIAS,
                format!("{}{:+}", b.token, b.bias),
                "a bias must be a number or -inf (which bans the token)",
            ));
        }
        self.check_grammar()
    }

    /// What of the grammar can be checked without a model: the GBNF text parses as llama.cpp
    /// parses it (a JSON Schema converts), trigger patterns compile, trigger words are not
    /// empty (one would fire at once), and triggers come with a lazy grammar (llama.cpp ignores
    /// them otherwise). Token references are checked against the model by [`Sampler::new`].
    fn check_grammar(&self) -> Result<()> {
        if let Some(g) = &self.grammar {
            grammar::check_gbnf(&g.to_gbnf()?)?;
        }
        let lazy_grammar = self.grammar_lazy && self.grammar.is_some();
        if !self.grammar_triggers.is_empty() && !lazy_grammar {
            return Err(crate::Error::GrammarTrigger {
                trigger: format!("{} trigger(s)", self.grammar_triggers.len()),
                problem: "triggers start a lazy grammar: they need a grammar and grammar_lazy".into(),
            });
        }
        for t in &self.grammar_triggers {
            let (shown, pattern) = match t {
                GrammarTrigger::Word(w) if w.is_empty() => {
                    return Err(crate::Error::GrammarTrigger {
                        trigger: "word \"\"".into(),
                        problem: "an empty word would start the grammar at once".into(),
                    });
                }
                GrammarTrigger::Pattern(p) => (format!("pattern {p:?}"), p),
                GrammarTrigger::PatternFull(p) => (format!("full pattern {p:?}"), p),
                GrammarTrigger::Word(_) | GrammarTrigger::Token(_) => continue,
            };
            crate::regex::check(pattern).map_err(|problem| crate::Error::GrammarTrigger { trigger: shown, problem })?;
        }
        Ok(())
    }

    /// Whether the DRY sampler does anything with these options (llama.cpp's test).
    pub fn dry_enabled(&self) -> bool {
        self.dry_multiplier != 0.0 && self.dry_base >= 1.0 && self.dry_penalty_last_n != 0
    }
}

/// Builds [`SamplingOptions`] from llama.cpp's defaults; [`build`](Self::build) validates.
///
/// ```
/// use llama_runner::sampling::{SamplerType, SamplingOptions};
///
/// let o = SamplingOptions::builder()
///     .seed(7)
///     .temperature(0.7)
///     .top_k(20)
///     .penalties(64, 1.1, 0.0, 0.0)
///     .samplers([SamplerType::Penalties, SamplerType::TopK, SamplerType::Temperature])
///     .build()
///     .unwrap();
/// assert_eq!(o.top_k, 20);
/// assert_eq!(o.top_p, 0.95); // untouched: llama.cpp's default
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct SamplingBuilder {
    options: SamplingOptions,
}

impl SamplingBuilder {
    /// The RNG seed ([`RANDOM_SEED`] for a random one).
    pub fn seed(mut self, seed: u32) -> Self {
        self.options.seed = seed;
        self
    }

    /// The minimum number of candidates samplers keep.
    pub fn min_keep(mut self, n: u32) -> Self {
        self.options.min_keep = n;
        self
    }

    /// Top-k (`<= 0` disables it).
    pub fn top_k(mut self, k: i32) -> Self {
        self.options.top_k = k;
        self
    }

    /// Top-p (`1.0` disables it).
    pub fn top_p(mut self, p: f32) -> Self {
        self.options.top_p = p;
        self
    }

    /// Min-p (`0.0` disables it).
    pub fn min_p(mut self, p: f32) -> Self {
        self.options.min_p = p;
        self
    }

    /// Locally typical p (`1.0` disables it).
    pub fn typical(mut self, p: f32) -> Self {
        self.options.typ_p = p;
        self
    }

    /// Temperature (`<= 0`: greedy).
    pub fn temperature(mut self, t: f32) -> Self {
        self.options.temp = t;
        self
    }

    /// Greedy sampling as llama.cpp's tools spell it: temperature 0.
    pub fn greedy(self) -> Self {
        self.temperature(0.0)
    }

    /// Dynamic temperature: `temp ± range`, following the entropy raised to `exponent`.
    pub fn dynatemp(mut self, range: f32, exponent: f32) -> Self {
        self.options.dynatemp_range = range;
        self.options.dynatemp_exponent = exponent;
        self
    }

    /// XTC: with `probability`, remove the top tokens above `threshold` but the last of them.
    pub fn xtc(mut self, probability: f32, threshold: f32) -> Self {
        self.options.xtc_probability = probability;
        self.options.xtc_threshold = threshold;
        self
    }

    /// Top-n-sigma (`<= 0` disables it).
    pub fn top_n_sigma(mut self, n: f32) -> Self {
        self.options.top_n_sigma = n;
        self
    }

    /// Repeat / frequency / presence penalties over the last `last_n` tokens.
    pub fn penalties(mut self, last_n: i32, repeat: f32, frequency: f32, presence: f32) -> Self {
        self.options.penalty_last_n = last_n;
        self.options.penalty_repeat = repeat;
        self.options.penalty_freq = frequency;
        self.options.penalty_present = presence;
        self
    }

    /// DRY: `multiplier * base^(length - allowed_length)` over the last `last_n` tokens (-1:
    /// the model's training context).
    pub fn dry(mut self, multiplier: f32, base: f32, allowed_length: i32, last_n: i32) -> Self {
        self.options.dry_multiplier = multiplier;
        self.options.dry_base = base;
        self.options.dry_allowed_length = allowed_length;
        self.options.dry_penalty_last_n = last_n;
        self
    }

    /// DRY's sequence breakers (replacing the defaults).
    pub fn dry_sequence_breakers<S: Into<String>>(mut self, breakers: impl IntoIterator<Item = S>) -> Self {
        self.options.dry_sequence_breakers = breakers.into_iter().map(Into::into).collect();
        self
    }

    /// Mirostat 1.0 with target entropy `tau` and learning rate `eta`.
    pub fn mirostat_v1(mut self, tau: f32, eta: f32) -> Self {
        self.options.mirostat = Mirostat::V1;
        self.options.mirostat_tau = tau;
        self.options.mirostat_eta = eta;
        self
    }

    /// Mirostat 2.0 with target entropy `tau` and learning rate `eta`.
    pub fn mirostat_v2(mut self, tau: f32, eta: f32) -> Self {
        self.options.mirostat = Mirostat::V2;
        self.options.mirostat_tau = tau;
        self.options.mirostat_eta = eta;
        self
    }

    /// Adaptive-p with `target` and `decay`; adds [`SamplerType::AdaptiveP`] to the samplers
    /// when missing (llama.cpp uses it only when listed).
    pub fn adaptive_p(mut self, target: f32, decay: f32) -> Self {
        self.options.adaptive_target = target;
        self.options.adaptive_decay = decay;
        if !self.options.samplers.contains(&SamplerType::AdaptiveP) {
            self.options.samplers.push(SamplerType::AdaptiveP);
        }
        self
    }

    /// Constrains the output to a GBNF grammar (start rule `root`).
    pub fn grammar(mut self, gbnf: impl Into<String>) -> Self {
        self.options.grammar = Some(Grammar::Gbnf(gbnf.into()));
        self
    }

    /// Constrains the output to JSON following a JSON Schema (its JSON text).
    pub fn json_schema(mut self, schema: impl Into<String>) -> Self {
        self.options.grammar = Some(Grammar::JsonSchema(schema.into()));
        self
    }

    /// Makes the grammar lazy: it constrains nothing until one of `triggers` is generated.
    pub fn lazy_grammar(mut self, triggers: impl IntoIterator<Item = GrammarTrigger>) -> Self {
        self.options.grammar_lazy = true;
        self.options.grammar_triggers = triggers.into_iter().collect();
        self
    }

    /// Adds a logit bias (`-inf` bans the token).
    pub fn logit_bias(mut self, token: Token, bias: f32) -> Self {
        self.options.logit_bias.push(LogitBias { token, bias });
        self
    }

    /// Never produce an end-of-generation token.
    pub fn ignore_eos(mut self, on: bool) -> Self {
        self.options.ignore_eos = on;
        self
    }

    /// No sampler timings.
    pub fn no_perf(mut self, on: bool) -> Self {
        self.options.no_perf = on;
        self
    }

    /// The samplers, in order.
    pub fn samplers(mut self, samplers: impl IntoIterator<Item = SamplerType>) -> Self {
        self.options.samplers = samplers.into_iter().collect();
        self
    }

    /// The options, validated ([`SamplingOptions::validate`]).
    pub fn build(self) -> Result<SamplingOptions> {
        self.options.validate()?;
        Ok(self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_letters_round_trip() {
        for t in SamplerType::ALL {
            assert_eq!(SamplerType::from_name(t.name()), Some(t));
            assert_eq!(SamplerType::from_letter(t.letter()), Some(t));
            assert_eq!(SamplerType::from_name(&t.name().to_uppercase()), Some(t));
        }
        assert_eq!(SamplerType::from_name("top-k"), Some(SamplerType::TopK));
        assert_eq!(SamplerType::from_name("topk"), Some(SamplerType::TopK));
        assert_eq!(SamplerType::from_name("nucleus"), Some(SamplerType::TopP));
        assert_eq!(SamplerType::from_name("temp"), Some(SamplerType::Temperature));
        assert_eq!(SamplerType::from_name("typ"), Some(SamplerType::TypicalP));
        assert_eq!(SamplerType::from_name("d-ry"), None);
        assert_eq!(SamplerType::from_name("tfs_z"), None);
    }

    #[test]
    fn validation_names_option_and_flag() {
        let e = SamplingOptions::builder().temperature(f32::NAN).build().unwrap_err();
        assert!(e.to_string().contains("temp") && e.to_string().contains("--temp"), "{e}");
        let e = SamplingOptions::builder().dry(0.8, 1.75, 2, -2).build().unwrap_err();
        assert!(e.to_string().contains("--dry-penalty-last-n"), "{e}");
        let e = SamplingOptions::builder().penalties(64, 0.0, 0.0, 0.0).build().unwrap_err();
        assert!(e.to_string().contains("--repeat-penalty"), "{e}");
        assert!(SamplingOptions::builder().logit_bias(5, f32::NEG_INFINITY).build().is_ok());
        assert!(SamplingOptions::builder().logit_bias(5, f32::INFINITY).build().is_err());
        assert!(SamplingOptions::builder().dry(0.8, 1.75, -1, 64).build().is_err());
        assert!(SamplingOptions::builder().penalties(MAX_LAST_N + 1, 1.1, 0.0, 0.0).build().is_err());
        assert!(SamplingOptions::default().validate().is_ok());
    }
}
