//! Quality measurement with llama-perplexity's method: the perplexity of a model over a text
//! ([`Context::perplexity`]), and the KL divergence of one configuration against the token
//! probabilities of a base run ([`Context::kl_divergence`]), with the base kept in
//! llama-perplexity's own file format (`--kl-divergence-base`) or in a compact one.
//!
//! ```no_run
//! use llama_runner::quality::{self, BaseFormat, BaseReader, PerplexityOptions};
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
//!
//! # fn main() -> Result<(), quality::QualityError> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let text = std::fs::read_to_string("wiki.test.raw").unwrap();
//! let tokens = quality::tokenize(&model, &text)?;
//! let opts = PerplexityOptions::new(512);
//! // The context llama-perplexity makes for `-c 512 -b 512`.
//! let mut ctx = Context::new(&model, &opts.context_options(&ContextOptions { n_batch: 512, ..Default::default() }))?;
//! let mut base = Vec::new();
//! let ppl = ctx.perplexity_writing_base(&tokens, &opts, BaseFormat::Full, &mut base)?;
//! println!("PPL = {:.4} +/- {:.5}", ppl.ppl, ppl.uncertainty.unwrap_or(f64::NAN));
//! // Another configuration (here the same one) against the base.
//! let kld = ctx.kl_divergence(&mut BaseReader::new(base.as_slice())?)?;
//! println!("mean KLD {:.6} ± {:.6}", kld.kld.value, kld.kld.uncertainty);
//! # Ok(()) }
//! ```
//!
//! # The method (llama-perplexity's, `tools/perplexity/perplexity.cpp`)
//!
//! - The whole text is tokenized once, with the model's BOS when it adds one and special tokens
//!   written in the text read as plain text ([`tokenize`]). The tool needs at least `2 * n_ctx`
//!   tokens, and so does this module ([`QualityError::TextTooShort`]).
//! - The tokens are cut into `n_chunk = n_tokens / n_ctx` chunks of `n_ctx` (or fewer, with
//!   [`PerplexityOptions::n_chunks`]). Each chunk is decoded on an empty cache, positions from
//!   0, its first token replaced by BOS when the model adds one.
//! - Only the second half of a chunk is scored: the logits at positions `first = n_ctx / 2` to
//!   `n_ctx - 2` predict the tokens after them (`n_ctx - 1 - first` per chunk). Logits are asked
//!   for at positions `first..n_ctx`, as the tool asks (the last is not scored).
//! - Chunks are decoded in batches of the context's `n_batch`: when `n_batch < n_ctx` a chunk
//!   takes several decodes; when `n_batch` is a multiple of `n_ctx`, `n_batch / n_ctx` chunks
//!   share one decode, each its own sequence (capped at the context's `n_seq_max`, as the
//!   tool's KL divergence caps it). Any other `n_batch` is refused, as the tool asserts.
//! - PPL = exp(mean negative log-likelihood); its uncertainty is `PPL * sqrt(var / (count - 1))`
//!   with the variance of the per-token negative log-likelihoods, as the tool prints it in
//!   `Final estimate: PPL = … +/- …`.
//!
//! The floating-point steps are the tool's (the log-softmax in `f32` with a `f64` sum, the
//! quantization of the base file, the `f32` products of the KL statistics), summed in token
//! order; the tool sums on several threads in an order that varies, so its last digits may
//! differ from run to run while this module's do not.
//!
//! # Base files
//!
//! [`BaseFormat::Full`] is llama-perplexity's `--kl-divergence-base` file, byte for byte: the
//! magic `_logits_`, `n_ctx`, `n_vocab`, `n_chunk` (`i32` each), the `n_chunk * n_ctx` tokens
//! (`i32`), then for every scored position `nv = 2 * ((n_vocab + 1) / 2) + 4` `u16` values: the
//! `f32` scale and `f32` minimum log-probability in the first four, then each token's
//! log-probability quantized to 16 bits over the 16 nats below the maximum (lower ones are 0),
//! padded with zeros to `nv`. All little-endian. A file llama-perplexity writes reads here and
//! the other way round. It takes `2 * nv` bytes a position: 512 KiB for a vocabulary of
//! 262,144.
//!
//! [`BaseFormat::Compact`] (this crate's own, magic `_topklp_`) keeps, per position, the
//! target token's log-probability, the `k` largest log-probabilities with their tokens, and the
//! log of the remaining mass: `8 + 8 * k` bytes. Its KL divergence is that of the distributions
//! reduced to the `k` tokens plus one bucket for the rest, a lower bound of the full one (see
//! `docs/quality.md` for its size and error on the real model).

use std::io::{Read, Write};
use std::path::Path;

use crate::batch::{Batch, SeqId};
use crate::context::Context;
use crate::model::{Model, Token};
use crate::options::ContextOptions;

/// The magic of llama-perplexity's base file.
pub const FULL_MAGIC: &[u8; 8] = b"_logits_";
/// The magic of the compact base file.
pub const COMPACT_MAGIC: &[u8; 8] = b"_topklp_";

/// Why a quality measurement was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QualityError {
    /// The library refused something (a decode, a token, the context).
    #[error(transparent)]
    Library(#[from] crate::Error),
    /// Reading or writing a base file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A chunk size this method cannot use.
    #[error("n_ctx {n_ctx}: {reason}")]
    InvalidNCtx {
        /// The chunk size.
        n_ctx: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `n_chunks` of zero.
    #[error("n_chunks is 0: at least one chunk must be scored")]
    NoChunks,
    /// The text has too few tokens for the chunk size.
    #[error(
        "the text has {n_tokens} tokens, llama-perplexity's method needs at least {needed} (2 * n_ctx) \
         for n_ctx {n_ctx}: give a longer text or a smaller n_ctx"
    )]
    TextTooShort {
        /// Tokens of the text.
        n_tokens: usize,
        /// The chunk size.
        n_ctx: u32,
        /// Tokens needed.
        needed: usize,
    },
    /// An `n_batch` that is neither below `n_ctx` nor a multiple of it.
    #[error(
        "the context's n_batch {n_batch} is neither smaller than n_ctx {n_ctx} nor a multiple of it \
         (llama-perplexity asserts n_batch < n_ctx || n_batch % n_ctx == 0)"
    )]
    BatchNotMultiple {
        /// The context's batch size.
        n_batch: u32,
        /// The chunk size.
        n_ctx: u32,
    },
    /// The context cannot hold the chunks of one decode.
    #[error(
        "the context holds {n_ctx_ctx} cells ({n_ctx_seq} per sequence), {n_seq} chunks of n_ctx {n_ctx} need \
         {needed}: create it with PerplexityOptions::context_options"
    )]
    ContextTooSmall {
        /// The chunk size.
        n_ctx: u32,
        /// Chunks per decode.
        n_seq: u32,
        /// Cells needed.
        needed: u64,
        /// The context's size.
        n_ctx_ctx: u32,
        /// Cells per sequence.
        n_ctx_seq: u32,
    },
    /// A context in embedding mode: its outputs are not the next-token logits of every
    /// position asked for.
    #[error("the context is in embedding mode: perplexity needs a context with logits (embeddings off)")]
    EmbeddingContext,
    /// A model without causal attention: its logits see the tokens they would predict.
    #[error("the model {model} has no causal attention: perplexity needs a causal language model")]
    NonCausal {
        /// The model file.
        model: String,
    },
    /// A vocabulary that appends EOS when tokenizing (llama-perplexity asserts it does not).
    #[error("the model's vocabulary adds an EOS token to every text (add_eos_token): llama-perplexity refuses it")]
    AddsEos,
    /// A vocabulary that asks for BOS but has none.
    #[error("the model's vocabulary asks for a BOS token but has none")]
    NoBos,
    /// A compact base with `k` outside `1..=n_vocab`.
    #[error("compact base: top-k {top_k} must be between 1 and the vocabulary size {n_vocab}")]
    InvalidTopK {
        /// The k asked for.
        top_k: usize,
        /// The vocabulary size.
        n_vocab: u32,
    },
    /// The file does not start with a known magic.
    #[error("not a base file of log-probabilities: it starts with {found:?}, not \"_logits_\" or \"_topklp_\"")]
    NotABaseFile {
        /// Its first bytes (as text, lossily).
        found: String,
    },
    /// A header value that cannot be right.
    #[error("malformed base file: {reason}")]
    BaseMalformed {
        /// What is wrong.
        reason: String,
    },
    /// The file ends early.
    #[error("truncated base file: it ends in {what}")]
    BaseTruncated {
        /// Where it ends.
        what: String,
    },
    /// Bytes after the last position.
    #[error("malformed base file: data after the last of its {n_chunk} chunks")]
    BaseTrailing {
        /// Its chunks.
        n_chunk: u32,
    },
    /// [`Context::kl_divergence_many`] without bases.
    #[error("no base file to compare against")]
    NoBases,
    /// A base of another vocabulary.
    #[error("the base file is for a vocabulary of {file} tokens, the model has {model}")]
    BaseVocab {
        /// The file's vocabulary size.
        file: u32,
        /// The model's.
        model: u32,
    },
    /// A base of another chunk size.
    #[error("the base file was computed with n_ctx {file}, {expected} was asked for")]
    BaseNCtx {
        /// The file's chunk size.
        file: u32,
        /// The one asked for.
        expected: u32,
    },
    /// A base of other tokens.
    #[error("the base file's tokens differ from the text's at token {index} (file {file}, text {text:?})")]
    BaseTokens {
        /// The first index that differs.
        index: usize,
        /// The file's token.
        file: Token,
        /// The text's token there (`None`: the text is shorter).
        text: Option<Token>,
    },
    /// A base token outside the model's vocabulary.
    #[error("the base file holds token {token} at {index}, outside the vocabulary of {n_vocab}")]
    BaseTokenRange {
        /// Its index.
        index: usize,
        /// The token.
        token: Token,
        /// The vocabulary size.
        n_vocab: u32,
    },
}

/// The result type of this module.
pub type QualityResult<T> = std::result::Result<T, QualityError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> QualityError {
    let what = what.into();
    move |source| QualityError::Io { what, source }
}

/// Tokenizes `text` as llama-perplexity does (`common_tokenize(ctx, text, true)`): BOS first
/// when the model adds it, special tokens written in the text taken as plain text.
pub fn tokenize(model: &Model, text: &str) -> crate::Result<Vec<Token>> {
    model.tokenize_with(text, true, false)
}

/// How a text is cut and scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per chunk (llama-perplexity's `-c`): even, at least 4.
    pub n_ctx: u32,
    /// At most this many chunks (`--chunks`); `None`: all that fit.
    pub n_chunks: Option<usize>,
}

impl PerplexityOptions {
    /// Chunks of `n_ctx` tokens, all that fit.
    pub fn new(n_ctx: u32) -> PerplexityOptions {
        PerplexityOptions { n_ctx, n_chunks: None }
    }

    /// The context llama-perplexity creates for `-c n_ctx -b n_batch` (`n_batch` taken from
    /// `base`): `n_seq_max = max(1, n_batch / n_ctx)` sequences of `n_ctx` cells each
    /// (`n_ctx = n_seq_max * n_ctx`), `n_batch` at most the context size and `n_ubatch` at
    /// most `n_batch` (as llama.cpp clamps them). The other options are `base`'s.
    pub fn context_options(&self, base: &ContextOptions) -> ContextOptions {
        let n_seq = (base.n_batch / self.n_ctx.max(1)).max(1);
        let n_ctx = n_seq.saturating_mul(self.n_ctx);
        let n_batch = base.n_batch.min(n_ctx);
        ContextOptions { n_ctx, n_seq_max: n_seq, n_batch, n_ubatch: base.n_ubatch.min(n_batch), ..base.clone() }
    }
}

impl PerplexityOptions {
    /// Checks the chunk size before a context is made for it: even, at least 4, and with
    /// `base`'s `n_batch` asking for no more than 256 sequences (`n_batch / n_ctx` chunks are
    /// decoded side by side, each its own sequence).
    pub fn check(&self, base: &ContextOptions) -> QualityResult<()> {
        check_n_ctx(self.n_ctx)?;
        if base.n_batch / self.n_ctx > 256 {
            return Err(QualityError::InvalidNCtx {
                n_ctx: self.n_ctx,
                reason: "with this n_batch (-b) it asks for more than 256 chunks side by side (n_batch / n_ctx \
                         sequences): raise -c or lower -b",
            });
        }
        Ok(())
    }
}

fn check_n_ctx(n_ctx: u32) -> QualityResult<()> {
    if n_ctx % 2 == 1 {
        return Err(QualityError::InvalidNCtx {
            n_ctx,
            reason: "must be even (the second half of each chunk is scored)",
        });
    }
    if n_ctx < 4 {
        return Err(QualityError::InvalidNCtx {
            n_ctx,
            reason: "must be at least 4 (a chunk of n_ctx scores n_ctx/2 - 1 tokens)",
        });
    }
    if n_ctx > i32::MAX as u32 {
        return Err(QualityError::InvalidNCtx { n_ctx, reason: "too large" });
    }
    Ok(())
}

/// How the chunks are decoded.
#[derive(Debug, Clone, Copy)]
struct Plan {
    n_ctx: usize,
    n_chunk: usize,
    n_batch: usize,
    n_seq: usize,
    bos: Option<Token>,
}

impl Plan {
    fn first(&self) -> usize {
        self.n_ctx / 2
    }
    fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }
}

/// The checks of the model and context every measurement makes, and the plan for `n_chunk`
/// chunks of `n_ctx`.
fn plan(ctx: &Context<'_>, n_ctx: u32, n_chunk: usize) -> QualityResult<Plan> {
    check_n_ctx(n_ctx)?;
    let model = ctx.model();
    if ctx.options().embeddings {
        return Err(QualityError::EmbeddingContext);
    }
    if !crate::sequences::causal_attention(model) {
        return Err(QualityError::NonCausal { model: model.path().display().to_string() });
    }
    if model.adds_eos() {
        return Err(QualityError::AddsEos);
    }
    let bos = if model.adds_bos() { Some(model.bos().ok_or(QualityError::NoBos)?) } else { None };
    let n_batch = ctx.n_batch();
    if n_batch >= n_ctx && !n_batch.is_multiple_of(n_ctx) {
        return Err(QualityError::BatchNotMultiple { n_batch, n_ctx });
    }
    let n_seq = (n_batch / n_ctx).max(1).min(ctx.n_seq_max().max(1));
    let needed = u64::from(n_seq) * u64::from(n_ctx);
    let (n_ctx_ctx, n_ctx_seq) = (ctx.n_ctx(), ctx.n_ctx_seq());
    if u64::from(n_ctx_ctx) < needed || n_ctx_seq < n_ctx {
        return Err(QualityError::ContextTooSmall { n_ctx, n_seq, needed, n_ctx_ctx, n_ctx_seq });
    }
    Ok(Plan { n_ctx: n_ctx as usize, n_chunk, n_batch: n_batch as usize, n_seq: n_seq as usize, bos })
}

/// What the decode loop hands the measurements.
trait RowSink {
    /// The logits of one scored position and the token that follows it (positions in order,
    /// chunks in order).
    fn row(&mut self, logits: &[f32], target: Token) -> QualityResult<()>;
    /// Chunk `chunk` (0-based) is done.
    fn chunk_end(&mut self, chunk: usize) -> QualityResult<()>;
}

/// Decodes the chunks as llama-perplexity does and feeds the scored rows to `sink`. The cache
/// is cleared before each group of chunks and at the end (also after a failure).
fn score_chunks(ctx: &mut Context<'_>, tokens: &[Token], p: &Plan, sink: &mut dyn RowSink) -> QualityResult<()> {
    let result = score_chunks_inner(ctx, tokens, p, sink);
    ctx.clear();
    result
}

fn score_chunks_inner(ctx: &mut Context<'_>, tokens: &[Token], p: &Plan, sink: &mut dyn RowSink) -> QualityResult<()> {
    let first = p.first();
    let num_batches = p.n_ctx.div_ceil(p.n_batch);
    let mut batch = Batch::new(p.n_batch.min(p.n_ctx * p.n_seq), 1)?;
    for i in (0..p.n_chunk).step_by(p.n_seq) {
        let n_seq_batch = p.n_seq.min(p.n_chunk - i);
        ctx.clear();
        for j in 0..num_batches {
            let pos0 = j * p.n_batch;
            let batch_size = (p.n_ctx - pos0).min(p.n_batch);
            batch.clear();
            for s in 0..n_seq_batch {
                let chunk = &tokens[(i + s) * p.n_ctx..(i + s + 1) * p.n_ctx];
                for k in 0..batch_size {
                    let pos = pos0 + k;
                    let token = match p.bos {
                        Some(bos) if pos == 0 => bos,
                        _ => chunk[pos],
                    };
                    batch.add(token, pos as i32, &[s as SeqId], pos >= first)?;
                }
            }
            let out = ctx.decode_batch(&batch)?;
            for s in 0..n_seq_batch {
                let chunk = &tokens[(i + s) * p.n_ctx..(i + s + 1) * p.n_ctx];
                for k in 0..batch_size {
                    let pos = pos0 + k;
                    if pos >= first && pos + 1 < p.n_ctx {
                        sink.row(out.logits(s * batch_size + k)?, chunk[pos + 1])?;
                    }
                }
                if j + 1 == num_batches {
                    sink.chunk_end(i + s)?;
                }
            }
        }
    }
    Ok(())
}

/// The perplexity of a text ([`Context::perplexity`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// Tokens per chunk.
    pub n_ctx: u32,
    /// The context's batch size the chunks were decoded with.
    pub n_batch: u32,
    /// Chunks per decode (sequences).
    pub n_seq: u32,
    /// Chunks scored.
    pub n_chunk: usize,
    /// Tokens of the text.
    pub n_tokens: usize,
    /// Tokens scored (`n_chunk * (n_ctx - 1 - n_ctx / 2)`).
    pub count: usize,
    /// The running PPL after each chunk (llama-perplexity's `[1]12.3456,[2]…`).
    pub chunks: Vec<f64>,
    /// The final PPL.
    pub ppl: f64,
    /// Its uncertainty (`PPL * sqrt(var(nll) / (count - 1))`); `None` where the variance is not
    /// positive (llama-perplexity prints "Unexpected negative standard deviation" then).
    pub uncertainty: Option<f64>,
}

/// PPL accumulation: the sums of llama-perplexity's `perplexity()`.
struct PplSink<'w> {
    nll: f64,
    nll2: f64,
    count: usize,
    chunks: Vec<f64>,
    bases: Vec<BaseRowWriter<'w>>,
}

impl RowSink for PplSink<'_> {
    fn row(&mut self, logits: &[f32], target: Token) -> QualityResult<()> {
        // The PPL of the first full base's pass (the tool's when it writes one), else the plain one.
        let st = RowStats::new(logits);
        let mut v = None;
        for w in &mut self.bases {
            let nll = w.write_row(&st, logits, target as usize)?;
            if w.format == BaseFormat::Full && v.is_none() {
                v = Some(nll);
            }
        }
        let v = v.unwrap_or_else(|| nll_of(&st, logits, target as usize));
        self.nll += v;
        self.nll2 += v * v;
        self.count += 1;
        Ok(())
    }
    fn chunk_end(&mut self, _chunk: usize) -> QualityResult<()> {
        self.chunks.push((self.nll / self.count as f64).exp());
        Ok(())
    }
}

/// What every measurement of a row of logits starts from, computed once per row in
/// llama-perplexity's steps: the maximum and the first token holding it, the minimum, the sum
/// of `expf(l - max)` in `f64` and its log in `f32`.
struct RowStats {
    max: f32,
    imax: usize,
    min: f32,
    sum_exp: f64,
    log_sum_exp: f32,
}

impl RowStats {
    fn new(logits: &[f32]) -> RowStats {
        let (mut max, mut imax, mut min) = (logits[0], 0usize, logits[0]);
        for (i, &l) in logits.iter().enumerate().skip(1) {
            if l > max {
                max = l;
                imax = i;
            }
            if l < min {
                min = l;
            }
        }
        let mut sum_exp = 0.0f64;
        for &l in logits {
            sum_exp += f64::from((l - max).exp());
        }
        RowStats { max, imax, min, sum_exp, log_sum_exp: sum_exp.ln() as f32 }
    }

    /// `max + log_sum_exp` in `f32`: the log-probability of token `i` is `l[i]` minus it.
    fn max_lse(&self) -> f32 {
        self.max + self.log_sum_exp
    }
}

/// The negative log-likelihood of `target` as llama-perplexity's `log_softmax` computes it:
/// the shifted logit in `f32`, the log of the `f64` sum in `f64`.
fn nll_of(st: &RowStats, logits: &[f32], target: usize) -> f64 {
    -(f64::from(logits[target] - st.max) - st.sum_exp.ln())
}

/// `nearest_int` of llama-perplexity (round to nearest, ties to even, through the float magic).
fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0f32;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `u16` values per position in a full base file.
fn full_nv(n_vocab: u32) -> usize {
    2 * (n_vocab as usize).div_ceil(2) + 4
}

/// Writes the rows of a base file as they are scored.
struct BaseRowWriter<'w> {
    out: &'w mut dyn Write,
    format: BaseFormat,
    buf: Vec<u8>,
    in_top: Vec<bool>,
}

impl BaseRowWriter<'_> {
    /// Writes one position and returns its negative log-likelihood: llama-perplexity's
    /// quantizing `log_softmax` for the full format (its `f32` result, as the tool's PPL is
    /// computed when it writes a base), NaN for the compact one (not used).
    fn write_row(&mut self, st: &RowStats, logits: &[f32], target: usize) -> QualityResult<f64> {
        self.buf.clear();
        let nll = match self.format {
            BaseFormat::Full => quantize_row(st, logits, target, &mut self.buf),
            BaseFormat::Compact { top_k } => {
                let r = compact_row(st, logits, target, top_k, &mut self.in_top);
                self.buf.extend_from_slice(&r.target_lp.to_le_bytes());
                self.buf.extend_from_slice(&r.rest_lp.to_le_bytes());
                for &(id, lp) in &r.top {
                    self.buf.extend_from_slice(&(id as i32).to_le_bytes());
                    self.buf.extend_from_slice(&lp.to_le_bytes());
                }
                f64::NAN
            }
        };
        self.out.write_all(&self.buf).map_err(io_err("writing the base file"))?;
        Ok(nll)
    }
}

/// llama-perplexity's quantizing `log_softmax`: appends the position's `nv` `u16` values (as
/// little-endian bytes) to `buf`, returns `max + log(sum) - logits[target]` in `f32`.
fn quantize_row(st: &RowStats, logits: &[f32], target: usize, buf: &mut Vec<u8>) -> f64 {
    let (max, log_sum_exp) = (st.max, st.log_sum_exp);
    let floor = max - 16.0;
    let min = if st.min < floor { floor } else { st.min };
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0f32;
    buf.extend_from_slice(&scale.to_le_bytes());
    buf.extend_from_slice(&min_log_prob.to_le_bytes());
    let start = buf.len();
    buf.resize(start + 2 * full_nv(logits.len() as u32) - 8, 0);
    if scale != 0.0 {
        let inv_scale = 1.0f32 / scale;
        // Plain index loop: this runs over every token of every scored position, also in
        // unoptimized (test) builds.
        let out = &mut buf[start..];
        let mut i = 0;
        while i < logits.len() {
            let l = logits[i];
            if l > min {
                let q = nearest_int(inv_scale * (l - min)) as u16;
                out[2 * i] = q as u8;
                out[2 * i + 1] = (q >> 8) as u8;
            }
            i += 1;
        }
    }
    f64::from(max + log_sum_exp - logits[target])
}

/// One position of a compact base.
struct CompactRow {
    target_lp: f32,
    rest_lp: f32,
    /// The `k` most likely tokens and their log-probabilities, most likely first (ties: the
    /// lower id first).
    top: Vec<(u32, f32)>,
}

/// A candidate of the top-k selection: ordered by logit, then the lower id as the larger.
#[derive(Clone, Copy, PartialEq)]
struct Candidate(f32, u32);

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// The `k` largest logits (ties: the lower id), largest first: one pass with a min-heap of
/// `k`, so most tokens cost one comparison.
fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Reverse;
    let mut heap: std::collections::BinaryHeap<Reverse<Candidate>> = std::collections::BinaryHeap::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if heap.len() < k {
            heap.push(Reverse(Candidate(l, i as u32)));
            if heap.len() == k {
                floor = heap.peek().map_or(f32::NEG_INFINITY, |r| r.0.0);
            }
        } else if l > floor {
            // A later id with an equal logit ranks lower, so only a larger logit enters.
            heap.pop();
            heap.push(Reverse(Candidate(l, i as u32)));
            floor = heap.peek().map_or(f32::NEG_INFINITY, |r| r.0.0);
        }
    }
    let mut top: Vec<Candidate> = heap.into_iter().map(|r| r.0).collect();
    top.sort_unstable_by(|a, b| b.cmp(a));
    top.into_iter().map(|c| c.1).collect()
}

/// The log-probabilities of one position as [`BaseFormat::Compact`] keeps them: each
/// `l - (max + log(sum))` in `f32` (the tool's steps), the rest's mass summed in `f64`.
fn compact_row(st: &RowStats, logits: &[f32], target: usize, k: usize, in_top: &mut Vec<bool>) -> CompactRow {
    let max_lse = st.max_lse();
    let ids = top_k(logits, k);
    mark(in_top, logits.len(), &ids);
    let top: Vec<(u32, f32)> = ids.iter().map(|&i| (i, logits[i as usize] - max_lse)).collect();
    let rest = rest_mass(logits, max_lse, in_top);
    CompactRow { target_lp: logits[target] - max_lse, rest_lp: rest.ln() as f32, top }
}

/// Sets `in_top` to `n` flags, those of `ids` true.
fn mark(in_top: &mut Vec<bool>, n: usize, ids: &[u32]) {
    in_top.clear();
    in_top.resize(n, false);
    for &i in ids {
        in_top[i as usize] = true;
    }
}

/// The probability of the tokens not flagged in `in_top`, summed directly in `f64` (not as
/// one minus the top's, which would lose a small rest's precision).
fn rest_mass(logits: &[f32], max_lse: f32, in_top: &[bool]) -> f64 {
    let mut r = 0.0f64;
    for (&l, &top) in logits.iter().zip(in_top) {
        if !top {
            r += f64::from((l - max_lse).exp());
        }
    }
    r
}

/// What a base file keeps per scored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseFormat {
    /// llama-perplexity's `--kl-divergence-base` file: every token's log-probability,
    /// quantized to 16 bits (`2 * (2 * ((n_vocab + 1) / 2) + 4)` bytes a position).
    Full,
    /// The `top_k` largest log-probabilities with their tokens, the target token's and the
    /// remaining mass (`8 + 8 * top_k` bytes a position).
    Compact {
        /// How many tokens are kept per position (1 to `n_vocab`).
        top_k: usize,
    },
}

impl BaseFormat {
    /// Bytes per scored position for a vocabulary of `n_vocab`.
    pub fn row_bytes(&self, n_vocab: u32) -> usize {
        match *self {
            BaseFormat::Full => 2 * full_nv(n_vocab),
            BaseFormat::Compact { top_k } => 8 + 8 * top_k,
        }
    }
}

/// The header of a base file: what it was computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseHeader {
    /// Its format.
    pub format: BaseFormat,
    /// Tokens per chunk.
    pub n_ctx: u32,
    /// The vocabulary size.
    pub n_vocab: u32,
    /// Chunks.
    pub n_chunk: u32,
    /// The `n_chunk * n_ctx` tokens scored (as tokenized; BOS replacement is done when decoding).
    pub tokens: Vec<Token>,
}

impl BaseHeader {
    /// Scored positions per chunk (`n_ctx - 1 - n_ctx / 2`).
    pub fn scored_per_chunk(&self) -> usize {
        (self.n_ctx as usize).saturating_sub(1 + self.n_ctx as usize / 2)
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        let head = 8 + 12 + if matches!(self.format, BaseFormat::Compact { .. }) { 4 } else { 0 };
        let rows = self.n_chunk as u64 * self.scored_per_chunk() as u64;
        head + 4 * self.tokens.len() as u64 + rows * self.format.row_bytes(self.n_vocab) as u64
    }

    /// Checks that the base fits `n_ctx` (when given) and the text's `tokens` (when given:
    /// the base's tokens must be their beginning).
    pub fn check_matches(&self, n_ctx: Option<u32>, tokens: Option<&[Token]>) -> QualityResult<()> {
        if let Some(expected) = n_ctx
            && expected != self.n_ctx
        {
            return Err(QualityError::BaseNCtx { file: self.n_ctx, expected });
        }
        if let Some(text) = tokens
            && let Some(index) = self.tokens.iter().enumerate().position(|(i, t)| text.get(i) != Some(t))
        {
            return Err(QualityError::BaseTokens { index, file: self.tokens[index], text: text.get(index).copied() });
        }
        Ok(())
    }

    fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(24 + 4 * self.tokens.len());
        match self.format {
            BaseFormat::Full => b.extend_from_slice(FULL_MAGIC),
            BaseFormat::Compact { .. } => b.extend_from_slice(COMPACT_MAGIC),
        }
        for v in [self.n_ctx, self.n_vocab, self.n_chunk] {
            b.extend_from_slice(&(v as i32).to_le_bytes());
        }
        if let BaseFormat::Compact { top_k } = self.format {
            b.extend_from_slice(&(top_k as i32).to_le_bytes());
        }
        for t in &self.tokens {
            b.extend_from_slice(&t.to_le_bytes());
        }
        out.write_all(&b)
    }
}

/// The largest `n_ctx` a base file may declare (4 Mi tokens).
pub const MAX_BASE_N_CTX: i32 = 1 << 22;
/// The largest vocabulary a base file may declare (16 Mi tokens; real models have up to ~1 Mi).
pub const MAX_BASE_N_VOCAB: i32 = 1 << 24;

/// Reads a base file ([`BaseFormat::Full`] or [`BaseFormat::Compact`], told by its magic):
/// the header at once ([`new`](Self::new)), the positions as [`Context::kl_divergence`] needs
/// them.
pub struct BaseReader<R: Read> {
    input: R,
    header: BaseHeader,
}

impl BaseReader<std::io::BufReader<std::fs::File>> {
    /// Opens a base file.
    pub fn open(path: impl AsRef<Path>) -> QualityResult<Self> {
        let path = path.as_ref();
        let f = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        BaseReader::new(std::io::BufReader::with_capacity(1 << 20, f))
    }
}

fn read_full(input: &mut dyn Read, buf: &mut [u8], what: impl FnOnce() -> String) -> QualityResult<()> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => return Err(QualityError::BaseTruncated { what: what() }),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(QualityError::Io { what: "reading the base file".into(), source: e }),
        }
    }
    Ok(())
}

fn read_i32(input: &mut dyn Read, name: &str) -> QualityResult<i32> {
    let mut b = [0u8; 4];
    read_full(input, &mut b, || format!("the header ({name})"))?;
    Ok(i32::from_le_bytes(b))
}

impl<R: Read> BaseReader<R> {
    /// Reads the header (magic, sizes, tokens) of a base file; the positions are read later.
    /// Errors: [`QualityError::NotABaseFile`], [`QualityError::BaseMalformed`] (sizes that
    /// are zero, negative, or an odd `n_ctx`), [`QualityError::BaseTruncated`].
    pub fn new(mut input: R) -> QualityResult<Self> {
        let mut magic = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            match input.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(QualityError::Io { what: "reading the base file".into(), source: e }),
            }
        }
        let compact = match &magic {
            m if m == FULL_MAGIC => false,
            m if m == COMPACT_MAGIC => true,
            _ => {
                return Err(QualityError::NotABaseFile { found: String::from_utf8_lossy(&magic[..got]).into_owned() });
            }
        };
        let n_ctx = read_i32(&mut input, "n_ctx")?;
        let n_vocab = read_i32(&mut input, "n_vocab")?;
        let n_chunk = read_i32(&mut input, "n_chunk")?;
        let top_k = if compact { Some(read_i32(&mut input, "top_k")?) } else { None };
        let malformed = |reason: String| QualityError::BaseMalformed { reason };
        // Caps far above any real model, so that a corrupt header cannot ask for gigabytes of
        // buffers before the file's end is reached.
        if !(4..=MAX_BASE_N_CTX).contains(&n_ctx) || n_ctx % 2 == 1 {
            return Err(malformed(format!("n_ctx {n_ctx} (an even size from 4 to {MAX_BASE_N_CTX} was expected)")));
        }
        if !(1..=MAX_BASE_N_VOCAB).contains(&n_vocab) {
            return Err(malformed(format!("n_vocab {n_vocab} (1 to {MAX_BASE_N_VOCAB} expected)")));
        }
        if n_chunk < 1 {
            return Err(malformed(format!("n_chunk {n_chunk} (at least one chunk was expected)")));
        }
        let format = match top_k {
            None => BaseFormat::Full,
            Some(k) if k >= 1 && k <= n_vocab => BaseFormat::Compact { top_k: k as usize },
            Some(k) => return Err(malformed(format!("top_k {k} for a vocabulary of {n_vocab}"))),
        };
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as u32, n_vocab as u32, n_chunk as u32);
        // Chunk by chunk, so that a header claiming absurd sizes fails on the file's end
        // rather than on an allocation.
        let mut tokens = Vec::new();
        let mut buf = vec![0u8; 4 * n_ctx as usize];
        for c in 0..n_chunk {
            read_full(&mut input, &mut buf, || format!("the tokens (chunk {c} of {n_chunk})"))?;
            tokens.extend(buf.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        Ok(BaseReader { input, header: BaseHeader { format, n_ctx, n_vocab, n_chunk, tokens } })
    }

    /// The header.
    pub fn header(&self) -> &BaseHeader {
        &self.header
    }

    fn read_row(&mut self, buf: &mut [u8], chunk: usize, pos: usize) -> QualityResult<()> {
        let n_chunk = self.header.n_chunk;
        read_full(&mut self.input, buf, || {
            format!("the log-probabilities of chunk {chunk} of {n_chunk} (position {pos})")
        })
    }

    fn check_end(&mut self) -> QualityResult<()> {
        let mut b = [0u8; 1];
        loop {
            match self.input.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(QualityError::BaseTrailing { n_chunk: self.header.n_chunk }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(QualityError::Io { what: "reading the base file".into(), source: e }),
            }
        }
    }
}

/// A value and its uncertainty (one standard error).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Its uncertainty.
    pub uncertainty: f64,
}

impl Estimate {
    fn new(value: f64, uncertainty: f64) -> Estimate {
        Estimate { value, uncertainty }
    }
}

/// Sorted values with llama-perplexity's percentiles.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Distribution {
    /// The values, ascending.
    pub sorted: Vec<f32>,
}

impl Distribution {
    fn new(mut values: Vec<f32>) -> Distribution {
        values.sort_by(f32::total_cmp);
        Distribution { sorted: values }
    }

    /// The largest value (NaN when empty).
    pub fn max(&self) -> f32 {
        self.sorted.last().copied().unwrap_or(f32::NAN)
    }

    /// The smallest value (NaN when empty).
    pub fn min(&self) -> f32 {
        self.sorted.first().copied().unwrap_or(f32::NAN)
    }

    /// The median: the middle value, or the mean of the two middle ones (in `f32`).
    pub fn median(&self) -> f32 {
        let v = &self.sorted;
        match v.len() {
            0 => f32::NAN,
            n if n % 2 == 0 => 0.5f32 * (v[n / 2] + v[n / 2 - 1]),
            n => v[n / 2],
        }
    }

    /// The value at `fraction` (0 to 1) by linear interpolation between neighbours, in `f32`
    /// as llama-perplexity computes it (`0.999` for its "99.9%").
    pub fn percentile(&self, fraction: f32) -> f32 {
        let v = &self.sorted;
        if v.is_empty() {
            return f32::NAN;
        }
        if fraction <= 0.0 {
            return v[0];
        }
        if fraction >= 1.0 {
            return v[v.len() - 1];
        }
        let mut p = fraction * (v.len() - 1) as f32;
        let ip = p as usize;
        p -= ip as f32;
        (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
    }
}

/// The running values after one chunk, the columns llama-perplexity prints per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KlChunk {
    /// PPL(Q) so far.
    pub ppl: Estimate,
    /// ln(PPL(Q)/PPL(base)) so far.
    pub log_ppl_ratio: Estimate,
    /// Mean KL divergence so far.
    pub kld: Estimate,
    /// RMS of Δp so far (a fraction, the tool prints percent).
    pub delta_p_rms: Estimate,
    /// Fraction of positions whose most likely token is the base's so far.
    pub same_top: Estimate,
}

/// What `llama-perplexity --kl-divergence` reports ([`Context::kl_divergence`]).
///
/// Probabilities and Δp are fractions (the tool prints them as percent). llama-perplexity
/// prints the final statistics only from 100 scored positions; they are computed here
/// whatever the count.
#[derive(Debug, Clone, PartialEq)]
pub struct KlDivergence {
    /// Tokens per chunk (the base's).
    pub n_ctx: u32,
    /// Chunks.
    pub n_chunk: usize,
    /// Scored positions.
    pub count: usize,
    /// The base's format.
    pub format: BaseFormat,
    /// The running values after each chunk.
    pub chunks: Vec<KlChunk>,
    /// PPL of this configuration ("Mean PPL(Q)").
    pub ppl: Estimate,
    /// PPL of the base, from the log-probabilities the base file keeps ("Mean PPL(base)").
    pub ppl_base: Estimate,
    /// Cor(ln PPL(Q), ln PPL(base)), a fraction.
    pub log_ppl_correlation: f64,
    /// Mean ln(PPL(Q)/PPL(base)), its uncertainty with the correlation.
    pub log_ppl_ratio: Estimate,
    /// Mean PPL(Q)/PPL(base).
    pub ppl_ratio: Estimate,
    /// Mean PPL(Q) − PPL(base).
    pub ppl_diff: Estimate,
    /// Mean KL divergence (nats).
    pub kld: Estimate,
    /// The per-position KL divergences.
    pub kld_values: Distribution,
    /// Mean Δp = p(Q) − p(base) of the text's next token.
    pub delta_p: Estimate,
    /// The per-position Δp.
    pub delta_p_values: Distribution,
    /// RMS of Δp.
    pub delta_p_rms: Estimate,
    /// Fraction of positions whose most likely token is the base's, with its binomial error.
    pub same_top: Estimate,
}

/// The sums of llama-perplexity's `kl_divergence_result`.
#[derive(Default)]
struct KlSums {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    n_same_top: usize,
    count: usize,
}

impl KlSums {
    /// Adds one position: `nll` and `nll_base` in `f32` (their squares and product in `f32`,
    /// as the tool's), its KL divergence, whether the top tokens agree. Returns Δp.
    fn add(&mut self, nll: f32, nll_base: f32, kld: f64, same_top: bool) -> f32 {
        self.sum_nll += f64::from(nll);
        self.sum_nll2 += f64::from(nll * nll);
        self.sum_nll_base += f64::from(nll_base);
        self.sum_nll_base2 += f64::from(nll_base * nll_base);
        self.sum_nll_nll_base += f64::from(nll * nll_base);
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        self.count += 1;
        self.n_same_top += usize::from(same_top);
        let p_base = (-nll_base).exp();
        let p = (-nll).exp();
        let p_diff = p - p_base;
        self.sum_p_diff += f64::from(p_diff);
        let p_diff2 = f64::from(p_diff * p_diff);
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        p_diff
    }

    fn log_ppl(&self) -> (f64, f64) {
        mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)
    }

    fn log_ppl_base(&self) -> (f64, f64) {
        mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)
    }

    fn cov(&self) -> f64 {
        covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)
    }

    fn log_ratio(&self) -> Estimate {
        let (lp, dlp) = self.log_ppl();
        let (lb, dlb) = self.log_ppl_base();
        Estimate::new(lp - lb, (dlp * dlp + dlb * dlb - 2.0 * self.cov()).sqrt())
    }

    fn rms(&self) -> Estimate {
        let (mse, dmse) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count);
        let rms = mse.sqrt();
        Estimate::new(rms, 0.5 / rms * dmse)
    }

    fn same_top(&self) -> Estimate {
        let p = self.n_same_top as f64 / self.count as f64;
        Estimate::new(p, (p * (1.0 - p) / (self.count as f64 - 1.0)).sqrt())
    }

    fn chunk(&self) -> KlChunk {
        let (lp, dlp) = self.log_ppl();
        let ppl = lp.exp();
        let (k, dk) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count);
        KlChunk {
            ppl: Estimate::new(ppl, ppl * dlp),
            log_ppl_ratio: self.log_ratio(),
            kld: Estimate::new(k, dk),
            delta_p_rms: self.rms(),
            same_top: self.same_top(),
        }
    }
}

/// llama-perplexity's `mean_and_uncertainty`: the mean, and the standard error from 11 values
/// on (0 before, or when the variance is not positive).
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    (f, if df > 0.0 && count > 10 { (df / (n - 1.0)).sqrt() } else { 0.0 })
}

/// llama-perplexity's `covariance` of the means (0 below 10 values).
fn covariance(suma: f64, sumb: f64, sumab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sumab / n - (suma / n) * (sumb / n)) / (n - 1.0)
}

/// KL accumulation over the rows of one base file.
struct KlState<'r, R: Read> {
    base: &'r mut BaseReader<R>,
    sums: KlSums,
    kld_values: Vec<f32>,
    p_diff_values: Vec<f32>,
    chunks: Vec<KlChunk>,
    buf: Vec<u8>,
    /// Compact: which tokens are among the base's top ones (reset for each row).
    in_top: Vec<bool>,
}

/// KL accumulation over several bases of the same tokens.
struct KlSink<'r, R: Read> {
    states: Vec<KlState<'r, R>>,
    chunk: usize,
    pos: usize,
}

impl<R: Read> RowSink for KlSink<'_, R> {
    fn row(&mut self, logits: &[f32], target: Token) -> QualityResult<()> {
        let rs = RowStats::new(logits);
        for st in &mut self.states {
            st.base.read_row(&mut st.buf, self.chunk, self.pos)?;
            let (kld, p_diff) = match st.base.header.format {
                BaseFormat::Full => kl_full(&rs, logits, &st.buf, target as usize, &mut st.sums),
                BaseFormat::Compact { top_k } => {
                    kl_compact(&rs, logits, &st.buf, top_k, target as usize, &mut st.in_top, &mut st.sums)?
                }
            };
            st.kld_values.push(kld as f32);
            st.p_diff_values.push(p_diff);
        }
        self.pos += 1;
        Ok(())
    }
    fn chunk_end(&mut self, _chunk: usize) -> QualityResult<()> {
        for st in &mut self.states {
            st.chunks.push(st.sums.chunk());
        }
        self.chunk += 1;
        self.pos = 0;
        Ok(())
    }
}

/// One position against a full base row: llama-perplexity's KL `log_softmax`, step for step.
fn kl_full(st: &RowStats, logits: &[f32], row: &[u8], target: usize, sums: &mut KlSums) -> (f64, f32) {
    let (max_logit, imax, log_sum_exp) = (st.max, st.imax, st.log_sum_exp);
    let scale = f32::from_le_bytes([row[0], row[1], row[2], row[3]]);
    let min_log_prob = f32::from_le_bytes([row[4], row[5], row[6], row[7]]);
    let q = &row[8..];
    let nll = max_logit + log_sum_exp - logits[target];
    let nll_base = -(scale * f32::from(u16::from_le_bytes([q[2 * target], q[2 * target + 1]])) + min_log_prob);
    let max_lse = max_logit + log_sum_exp;
    let mut sum = 0.0f64;
    let mut imax_base = 0usize;
    let mut p_log_base_max = 0.0f32;
    // Plain index loop, as in quantize_row.
    let mut i = 0;
    while i < logits.len() {
        let l = logits[i];
        let p_log_base = scale * ((q[2 * i] as u16 | (q[2 * i + 1] as u16) << 8) as f32) + min_log_prob;
        if i == 0 || p_log_base > p_log_base_max {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if p_log_base > -16.0 {
            let p_base = p_log_base.exp();
            sum += f64::from(p_base * (p_log_base - l + max_lse));
        }
        i += 1;
    }
    let p_diff = sums.add(nll, nll_base, sum, imax == imax_base);
    (sum, p_diff)
}

/// One position against a compact base row: the KL divergence of the distributions reduced to
/// the base's top tokens plus the rest.
fn kl_compact(
    st: &RowStats,
    logits: &[f32],
    row: &[u8],
    k: usize,
    target: usize,
    in_top: &mut Vec<bool>,
    sums: &mut KlSums,
) -> QualityResult<(f64, f32)> {
    let f = |o: usize| f32::from_le_bytes([row[o], row[o + 1], row[o + 2], row[o + 3]]);
    let target_lp = f(0);
    let rest_lp = f(4);
    let (max_lse, imax) = (st.max_lse(), st.imax);
    in_top.clear();
    in_top.resize(logits.len(), false);
    let mut kld = 0.0f64;
    let mut first = None;
    for j in 0..k {
        let id = i32::from_le_bytes([row[8 + 8 * j], row[9 + 8 * j], row[10 + 8 * j], row[11 + 8 * j]]);
        let lp = f(12 + 8 * j);
        if id < 0 || id as usize >= logits.len() || in_top[id as usize] {
            return Err(QualityError::BaseMalformed { reason: format!("top token {id} (out of range or repeated)") });
        }
        in_top[id as usize] = true;
        first.get_or_insert(id as usize);
        let lq = logits[id as usize] - max_lse;
        kld += f64::from(lp.exp()) * f64::from(lp - lq);
    }
    if rest_lp.is_finite() {
        let q_rest = rest_mass(logits, max_lse, in_top);
        if q_rest > 0.0 {
            let lq_rest = q_rest.ln() as f32;
            kld += f64::from(rest_lp.exp()) * f64::from(rest_lp - lq_rest);
        }
    }
    let nll = max_lse - logits[target];
    let p_diff = sums.add(nll, -target_lp, kld, first == Some(imax));
    Ok((kld, p_diff))
}

impl Context<'_> {
    /// The perplexity of `tokens` (from [`tokenize`]) with llama-perplexity's method (see the
    /// [module](self)): chunks of `opts.n_ctx`, the second half of each scored, decoded in
    /// batches of the context's `n_batch`. Create the context with
    /// [`PerplexityOptions::context_options`] to get llama-perplexity's.
    ///
    /// The cache is cleared before each chunk and after the call.
    ///
    /// Errors: [`QualityError::InvalidNCtx`], [`QualityError::NoChunks`],
    /// [`QualityError::TextTooShort`], [`QualityError::BatchNotMultiple`],
    /// [`QualityError::ContextTooSmall`], [`QualityError::EmbeddingContext`],
    /// [`QualityError::NonCausal`], [`QualityError::AddsEos`], a token out of the vocabulary,
    /// a failed or cancelled decode.
    pub fn perplexity(&mut self, tokens: &[Token], opts: &PerplexityOptions) -> QualityResult<Perplexity> {
        self.perplexity_impl(tokens, opts, &mut [])
    }

    /// [`perplexity`](Self::perplexity), writing a base file of `format` to `out` as it goes
    /// (llama-perplexity's `--kl-divergence-base FILE` without `--kl-divergence`). With
    /// [`BaseFormat::Full`] the PPL is computed as the tool computes it then (from the `f32`
    /// log-sum of its quantizing pass), so it may differ from [`perplexity`](Self::perplexity)'s
    /// in the last digits. `out` is flushed at the end; a failure leaves it incomplete.
    pub fn perplexity_writing_base(
        &mut self,
        tokens: &[Token],
        opts: &PerplexityOptions,
        format: BaseFormat,
        mut out: impl Write,
    ) -> QualityResult<Perplexity> {
        self.perplexity_writing_bases(tokens, opts, &mut [(format, &mut out)])
    }

    /// [`perplexity_writing_base`](Self::perplexity_writing_base) with several bases written
    /// in one pass (say a full and a compact one, from the same decodes). The PPL is that of
    /// the first full base's pass, or [`perplexity`](Self::perplexity)'s when all are compact.
    pub fn perplexity_writing_bases(
        &mut self,
        tokens: &[Token],
        opts: &PerplexityOptions,
        outs: &mut [(BaseFormat, &mut dyn Write)],
    ) -> QualityResult<Perplexity> {
        let n_vocab = self.model().n_vocab();
        for (format, _) in outs.iter() {
            if let BaseFormat::Compact { top_k } = *format
                && !(1..=n_vocab as usize).contains(&top_k)
            {
                return Err(QualityError::InvalidTopK { top_k, n_vocab });
            }
        }
        let r = self.perplexity_impl(tokens, opts, outs)?;
        for (_, out) in outs.iter_mut() {
            out.flush().map_err(io_err("writing the base file"))?;
        }
        Ok(r)
    }

    fn perplexity_impl(
        &mut self,
        tokens: &[Token],
        opts: &PerplexityOptions,
        outs: &mut [(BaseFormat, &mut dyn Write)],
    ) -> QualityResult<Perplexity> {
        check_n_ctx(opts.n_ctx)?;
        if opts.n_chunks == Some(0) {
            return Err(QualityError::NoChunks);
        }
        let n_ctx = opts.n_ctx as usize;
        if tokens.len() < 2 * n_ctx {
            return Err(QualityError::TextTooShort { n_tokens: tokens.len(), n_ctx: opts.n_ctx, needed: 2 * n_ctx });
        }
        let max_chunks = tokens.len() / n_ctx;
        let n_chunk = opts.n_chunks.map_or(max_chunks, |n| n.min(max_chunks));
        let p = plan(self, opts.n_ctx, n_chunk)?;
        let n_vocab = self.model().n_vocab();
        let mut bases = Vec::with_capacity(outs.len());
        for (format, out) in outs.iter_mut() {
            let header = BaseHeader {
                format: *format,
                n_ctx: opts.n_ctx,
                n_vocab,
                n_chunk: n_chunk as u32,
                tokens: tokens[..n_chunk * n_ctx].to_vec(),
            };
            header.write(&mut **out).map_err(io_err("writing the base file"))?;
            bases.push(BaseRowWriter { out: &mut **out, format: *format, buf: Vec::new(), in_top: Vec::new() });
        }
        let mut sink = PplSink { nll: 0.0, nll2: 0.0, count: 0, chunks: Vec::with_capacity(n_chunk), bases };
        score_chunks(self, tokens, &p, &mut sink)?;
        let count = sink.count as f64;
        let nll = sink.nll / count;
        let ppl = nll.exp();
        let var = sink.nll2 / count - nll * nll;
        Ok(Perplexity {
            n_ctx: opts.n_ctx,
            n_batch: p.n_batch as u32,
            n_seq: p.n_seq as u32,
            n_chunk,
            n_tokens: tokens.len(),
            count: sink.count,
            chunks: sink.chunks,
            ppl,
            uncertainty: (var > 0.0).then(|| (var / (count - 1.0)).sqrt() * ppl),
        })
    }

    /// The KL divergence of this context's model and configuration against `base` (a base
    /// file's reader, its header already read), over the base's tokens and chunks, decoded as
    /// [`perplexity`](Self::perplexity) decodes them: what `llama-perplexity --kl-divergence`
    /// reports. Check the base against the text and chunk size first with
    /// [`BaseHeader::check_matches`] where they are known.
    ///
    /// Errors: [`QualityError::BaseVocab`] for a base of another vocabulary,
    /// [`QualityError::BaseTokenRange`], [`QualityError::BaseTruncated`],
    /// [`QualityError::BaseTrailing`], [`QualityError::BaseMalformed`], and those of
    /// [`perplexity`](Self::perplexity) about the context and model.
    pub fn kl_divergence<R: Read>(&mut self, base: &mut BaseReader<R>) -> QualityResult<KlDivergence> {
        let mut v = self.kl_divergence_many(&mut [base])?;
        Ok(v.remove(0))
    }

    /// [`kl_divergence`](Self::kl_divergence) against several bases of the same tokens and
    /// chunk size (say a full and a compact one), from one pass of decodes; the results in
    /// the order of `bases`.
    ///
    /// Errors: as [`kl_divergence`](Self::kl_divergence); [`QualityError::BaseNCtx`] or
    /// [`QualityError::BaseTokens`] for bases that differ from the first; [`QualityError::NoBases`].
    pub fn kl_divergence_many<R: Read>(
        &mut self,
        bases: &mut [&mut BaseReader<R>],
    ) -> QualityResult<Vec<KlDivergence>> {
        let n_vocab = self.model().n_vocab();
        let Some(first) = bases.first() else { return Err(QualityError::NoBases) };
        let h = first.header().clone();
        for b in bases.iter() {
            let other = b.header();
            if other.n_vocab != n_vocab {
                return Err(QualityError::BaseVocab { file: other.n_vocab, model: n_vocab });
            }
            other.check_matches(Some(h.n_ctx), Some(&h.tokens))?;
            if other.tokens.len() != h.tokens.len() {
                let index = h.tokens.len().min(other.tokens.len());
                return Err(QualityError::BaseTokens {
                    index,
                    file: other.tokens.get(index).copied().unwrap_or(-1),
                    text: h.tokens.get(index).copied(),
                });
            }
        }
        if let Some((index, &token)) = h.tokens.iter().enumerate().find(|&(_, &t)| t < 0 || t as u32 >= n_vocab) {
            return Err(QualityError::BaseTokenRange { index, token, n_vocab });
        }
        let p = plan(self, h.n_ctx, h.n_chunk as usize)?;
        let total = p.n_chunk * p.scored_per_chunk();
        let states = bases
            .iter_mut()
            .map(|base| {
                let row = base.header().format.row_bytes(n_vocab);
                KlState {
                    base: &mut **base,
                    sums: KlSums::default(),
                    kld_values: Vec::with_capacity(total),
                    p_diff_values: Vec::with_capacity(total),
                    chunks: Vec::with_capacity(p.n_chunk),
                    buf: vec![0u8; row],
                    in_top: Vec::new(),
                }
            })
            .collect();
        let mut sink = KlSink { states, chunk: 0, pos: 0 };
        score_chunks(self, &h.tokens, &p, &mut sink)?;
        let mut out = Vec::with_capacity(sink.states.len());
        for st in sink.states {
            st.base.check_end()?;
            out.push(kl_result(
                &h,
                p.n_chunk,
                st.base.header().format,
                st.sums,
                st.chunks,
                st.kld_values,
                st.p_diff_values,
            ));
        }
        Ok(out)
    }
}

/// The final statistics of one base's sums.
fn kl_result(
    h: &BaseHeader,
    n_chunk: usize,
    format: BaseFormat,
    s: KlSums,
    chunks: Vec<KlChunk>,
    kld_values: Vec<f32>,
    p_diff_values: Vec<f32>,
) -> KlDivergence {
    let (lp, dlp) = s.log_ppl();
    let (lb, dlb) = s.log_ppl_base();
    let (ppl, ppl_base) = (lp.exp(), lb.exp());
    let cov = s.cov();
    let log_ratio = s.log_ratio();
    let ratio = log_ratio.value.exp();
    let (ppl_unc, base_unc) = (ppl * dlp, ppl_base * dlb);
    let (k, dk) = mean_and_uncertainty(s.sum_kld, s.sum_kld2, s.count);
    let (pd, dpd) = mean_and_uncertainty(s.sum_p_diff, s.sum_p_diff2, s.count);
    KlDivergence {
        n_ctx: h.n_ctx,
        n_chunk,
        count: s.count,
        format,
        ppl: Estimate::new(ppl, ppl_unc),
        ppl_base: Estimate::new(ppl_base, base_unc),
        log_ppl_correlation: cov / (dlp * dlb),
        log_ppl_ratio: log_ratio,
        ppl_ratio: Estimate::new(ratio, ratio * log_ratio.uncertainty),
        ppl_diff: Estimate::new(
            ppl - ppl_base,
            (ppl_unc * ppl_unc + base_unc * base_unc - 2.0 * ppl * ppl_base * cov).sqrt(),
        ),
        kld: Estimate::new(k, dk),
        delta_p: Estimate::new(pd, dpd),
        delta_p_rms: s.rms(),
        same_top: s.same_top(),
        chunks,
        kld_values: Distribution::new(kld_values),
        delta_p_values: Distribution::new(p_diff_values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(65534.6), 65535);
        assert_eq!(nearest_int(-0.4), 0);
    }

    #[test]
    fn percentiles_as_the_tool() {
        let d = Distribution::new(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!(d.median(), 2.5);
        assert_eq!(d.percentile(0.0), 1.0);
        assert_eq!(d.percentile(1.0), 4.0);
        assert_eq!(d.percentile(0.5), 2.5);
        assert_eq!(d.min(), 1.0);
        assert_eq!(d.max(), 4.0);
    }

    #[test]
    fn quantized_row_layout() {
        let logits = [0.0f32, -1.0, -20.0];
        let mut buf = Vec::new();
        let st = RowStats::new(&logits);
        let nll = quantize_row(&st, &logits, 1, &mut buf);
        assert_eq!(buf.len(), 2 * full_nv(3));
        let scale = f32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert!((scale - 16.0 / 65535.0).abs() < 1e-9);
        assert_eq!(u16::from_le_bytes([buf[8], buf[9]]), 65535);
        assert_eq!(u16::from_le_bytes([buf[12], buf[13]]), 0, "below the 16-nat floor");
        assert_eq!(&buf[14..16], &[0, 0], "padding");
        assert!((nll - nll_of(&st, &logits, 1)).abs() < 1e-6);
    }
}
