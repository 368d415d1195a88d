//! Embeddings and reranking: a context in embedding mode ([`ContextOptions::embeddings`]) turns
//! token sequences into vectors, pooled per sequence ([`Context::embed`]) or one per token
//! ([`Context::embed_tokens`]), and a reranking model's classifier head scores query/document
//! pairs ([`Context::rerank`]).
//!
//! Many texts go into one batch, each its own sequence, as llama.cpp's embedding tool does;
//! when they do not fit one batch they are split over several. The cache is cleared before each
//! batch and after the call, so the vectors of a text never depend on what the context held.
//!
//! ```no_run
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Normalize, Pooling};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let opts = ContextOptions {
//!     n_ctx: 2048,
//!     n_seq_max: 8,
//!     kv_unified: true,
//!     embeddings: true,
//!     pooling: Pooling::Mean,
//!     ..Default::default()
//! };
//! let mut ctx = Context::new(&model, &opts)?;
//! let (a, b) = (model.tokenize("a cat", true)?, model.tokenize("a dog", true)?);
//! let v = ctx.embed(&[&a, &b], Normalize::Euclidean)?;
//! let cosine: f32 = v[0].iter().zip(&v[1]).map(|(x, y)| x * y).sum();
//! # let _ = cosine;
//! # Ok(()) }
//! ```
//!
//! # What is checked before llama.cpp sees a batch
//!
//! - The context is in embedding mode ([`EmbedError::NotEmbeddingContext`]), and its pooling
//!   fits the call: [`Context::embed`] needs pooling, [`Context::embed_tokens`] needs
//!   [`Pooling::None`] (`llama_get_embeddings_seq` has nothing for pooling none, and
//!   `llama_get_embeddings_ith` nothing useful for pooled contexts), [`Context::rerank`] needs
//!   [`Pooling::Rank`].
//! - Rank pooling needs a classifier head (`cls` / `cls.output` tensors): without one
//!   llama.cpp pools anyway and returns the first values of a pooled hidden state as "scores".
//!   [`Context::new`] refuses such a context ([`EmbedError::NoClassifierHead`]).
//! - Each text is non-empty, in the vocabulary, and fits one micro-batch (pooled) or one decode
//!   (per token): llama.cpp pools per micro-batch, so a sequence split over two micro-batches
//!   would get the pooled vector of its last part, and a non-causal model asserts that a batch
//!   fits `n_ubatch`. A pooled batch is therefore never larger than `n_ubatch`.
//! - Contexts whose sequences have separate caches (`kv_unified` off with `n_seq_max > 1`)
//!   split batches into equal-length pieces per sequence (`split_equal`), which would cut
//!   sequences apart; there each text is decoded on its own. Set `kv_unified` to batch them.
//!
//! Every token of an embedding batch is an output, as llama.cpp requires
//! (`pooled embedding requires that all tokens are output`).

use std::ffi::CStr;

use llama_sys as sys;

use crate::batch::{Batch, SeqId};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Model, Token};
use crate::options::ContextOptions;
pub use crate::options::Pooling;

/// Why an embedding or reranking call was refused ([`Error::Embedding`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The context was created without [`ContextOptions::embeddings`].
    #[error("the context was not created in embedding mode (ContextOptions::embeddings, --embeddings)")]
    NotEmbeddingContext,
    /// A pooled call on a context with pooling none.
    #[error(
        "the context's pooling is none (the model sets no pooling type), which gives per-token embeddings: \
         use embed_tokens, or set a pooling (ContextOptions::pooling, --pooling mean|cls|last)"
    )]
    PoolingNone,
    /// A per-token call on a pooled context.
    #[error("the context pools embeddings ({pooling}); per-token embeddings need pooling none")]
    Pooled {
        /// The context's pooling.
        pooling: Pooling,
    },
    /// Reranking on a context without rank pooling.
    #[error("reranking needs rank pooling (--pooling rank / --rerank), the context pools with {pooling}")]
    NotRankPooling {
        /// The context's pooling.
        pooling: Pooling,
    },
    /// Rank pooling asked for a model without a classifier head.
    #[error(
        "rank pooling needs a reranking model with a classifier head (tensors cls.weight or cls.output.weight); \
         {model} has none"
    )]
    NoClassifierHead {
        /// The model file.
        model: String,
    },
    /// An empty text.
    #[error("text {index} is empty")]
    EmptyText {
        /// Its index in the input.
        index: usize,
    },
    /// A text longer than one decode may be.
    #[error("text {index} has {n_tokens} tokens, the context embeds at most {max} per text ({limit})")]
    TextTooLong {
        /// Its index in the input.
        index: usize,
        /// Its length.
        n_tokens: usize,
        /// The most one text may have.
        max: usize,
        /// Which size limits it.
        limit: &'static str,
    },
    /// Mean pooling with a reserve micro-batch that is not a multiple of `n_seq_max`: llama.cpp
    /// rounds the tokens of its worst-case graph up to a multiple of the sequences but not its
    /// outputs, and aborts creating the context (`GGML_ASSERT(ggml_can_mul_mat(a, b))` in
    /// `build_pooling`).
    #[error(
        "{pooling} pooling: llama.cpp aborts creating a context whose micro-batch of {n_tokens} tokens \
         (min(n_ctx, n_batch, n_ubatch) after its rounding) is not a multiple of n_seq_max {n_seq_max}; choose an \
         n_seq_max that divides it, or an n_ubatch that is a multiple of n_seq_max"
    )]
    ReserveNotMultiple {
        /// The pooling that averages (mean, or rank on a ModernBERT model).
        pooling: Pooling,
        /// The micro-batch llama.cpp reserves (`min(n_ctx, n_ubatch)` after its clamping).
        n_tokens: u32,
        /// The context's `n_seq_max`.
        n_seq_max: u32,
    },
    /// llama.cpp returned no embedding where one was expected.
    #[error("llama.cpp returned no embedding for {what}")]
    Missing {
        /// Which (sequence or batch index).
        what: String,
    },
    /// A reranking model whose vocabulary lacks what the rerank prompt needs.
    #[error("the model cannot format a rerank prompt: {reason}")]
    NoRerankPrompt {
        /// What is missing.
        reason: &'static str,
    },
}

impl From<EmbedError> for Error {
    fn from(e: EmbedError) -> Self {
        Error::Embedding(e)
    }
}

/// How embeddings are normalised: llama.cpp's `--embd-normalize N`, applied as
/// `common_embd_normalize` does (in the same floating-point steps, so results are bit-equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Normalize {
    /// As computed (`-1`).
    None,
    /// Scaled so the largest magnitude is 32760, the int16 range (`0`).
    MaxAbsInt16,
    /// Divided by the sum of magnitudes (`1`).
    Taxicab,
    /// Divided by the Euclidean length (`2`, llama.cpp's default).
    #[default]
    Euclidean,
    /// Divided by the p-norm, for p above 2 (`p`).
    PNorm(u32),
}

impl Normalize {
    /// llama.cpp's number for it (`--embd-normalize`).
    pub fn llama_value(self) -> i64 {
        match self {
            Normalize::None => -1,
            Normalize::MaxAbsInt16 => 0,
            Normalize::Taxicab => 1,
            Normalize::Euclidean => 2,
            Normalize::PNorm(p) => i64::from(p),
        }
    }

    /// From llama.cpp's number: -1 none, 0 max-abs int16, 1 taxicab, 2 euclidean, more a p-norm;
    /// `None` below -1 (where llama.cpp would take a p-norm with negative p).
    pub fn from_llama(n: i64) -> Option<Normalize> {
        Some(match n {
            -1 => Normalize::None,
            0 => Normalize::MaxAbsInt16,
            1 => Normalize::Taxicab,
            2 => Normalize::Euclidean,
            p if p > 2 => Normalize::PNorm(u32::try_from(p).ok()?),
            _ => return None,
        })
    }

    /// Normalises `v` in place, as `common_embd_normalize(v, v, n, self.llama_value())`: the
    /// sum in `f64` (squares and magnitudes computed in `f32` first, as the C++ does), the
    /// factor `1/sum` rounded to `f32` (0 for a zero vector), each value multiplied in `f32`.
    /// Taxicab goes through `pow(|x|, 1)` as llama.cpp's p-norm branch does.
    pub fn apply(self, v: &mut [f32]) {
        let sum: f64 = match self {
            Normalize::None => 1.0,
            Normalize::MaxAbsInt16 => {
                let mut m = 0.0f64;
                for &x in v.iter() {
                    let a = f64::from(x.abs());
                    if m < a {
                        m = a;
                    }
                }
                m / 32760.0
            }
            Normalize::Euclidean => {
                let mut s = 0.0f64;
                for &x in v.iter() {
                    s += f64::from(x * x);
                }
                s.sqrt()
            }
            Normalize::Taxicab | Normalize::PNorm(_) => {
                let p = self.llama_value() as f64;
                let mut s = 0.0f64;
                for &x in v.iter() {
                    s += f64::from(x.abs()).powf(p);
                }
                s.powf(1.0 / p)
            }
        };
        let norm = if sum > 0.0 { (1.0 / sum) as f32 } else { 0.0 };
        for x in v.iter_mut() {
            *x *= norm;
        }
    }
}

/// Whether the model file has a classifier head llama.cpp's rank pooling applies (`cls.weight`
/// or `cls.output.weight`). A file that cannot be read again counts as having none.
pub fn has_classifier_head(model: &Model) -> bool {
    match llama_gguf::Gguf::open(model.path()) {
        Ok(g) => g.tensor("cls.weight").is_some() || g.tensor("cls.output.weight").is_some(),
        Err(_) => false,
    }
}

/// The labels of the outputs of a model's classifier head (`{arch}.classifier.output_labels`,
/// as `llama_model_cls_label` returns them), one per output (`llama_model_n_cls_out`): `None`
/// where the file names none. A model without a head reports one unnamed output; the scores of
/// [`Context::rerank`] are the first output.
pub fn classifier_labels(model: &Model) -> Vec<Option<String>> {
    let m = model.raw().as_ptr();
    // SAFETY: valid model; the call only reads it.
    let n = unsafe { sys::llama_model_n_cls_out(m) };
    (0..n)
        .map(|i| {
            // SAFETY: valid model, i < n_cls_out; the result is null or a C string owned by the
            // model (its classifier_labels vector, never changed after loading).
            let p = unsafe { sys::llama_model_cls_label(m, i) };
            // SAFETY: non-null: a NUL-terminated string that lives as long as the model.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// The pooling llama.cpp uses for a model when a context leaves it unspecified: the model's
/// `{arch}.pooling_type`, or none.
pub fn model_pooling(model: &Model) -> Pooling {
    let arch = model.meta("general.architecture").unwrap_or_default();
    model
        .meta(&format!("{arch}.pooling_type"))
        .and_then(|v| v.parse::<i32>().ok())
        .and_then(|c| Pooling::from_c_value(c as sys::llama_pooling_type))
        .filter(|p| *p != Pooling::Unspecified)
        .unwrap_or(Pooling::None)
}

/// Checks the embedding options of a context against its model, before it is created: rank
/// pooling (asked for, or the model's default) needs a classifier head.
pub(crate) fn check_context_options(model: &Model, o: &ContextOptions) -> Result<()> {
    if !o.embeddings {
        return Ok(());
    }
    let pooling = if o.pooling == Pooling::Unspecified { model_pooling(model) } else { o.pooling };
    if pooling == Pooling::Rank && !has_classifier_head(model) {
        return Err(EmbedError::NoClassifierHead { model: model.path().display().to_string() }.into());
    }
    let arch = model.meta("general.architecture").unwrap_or_default();
    let averages = pooling == Pooling::Mean || (pooling == Pooling::Rank && arch == "modern-bert");
    if averages && o.n_seq_max > 1 {
        let n_tokens = reserve_ubatch(model, o);
        if !n_tokens.is_multiple_of(o.n_seq_max) {
            return Err(EmbedError::ReserveNotMultiple { pooling, n_tokens, n_seq_max: o.n_seq_max }.into());
        }
    }
    Ok(())
}

/// The micro-batch size llama.cpp reserves its worst-case graph for (`sched_reserve`:
/// `min(n_ctx, n_ubatch)` after the clamping and padding of `llama_context`'s constructor).
fn reserve_ubatch(model: &Model, o: &ContextOptions) -> u32 {
    let pad = |n: u32| n.div_ceil(256).saturating_mul(256);
    let n0 = if o.n_ctx == 0 { model.n_ctx_train() } else { o.n_ctx };
    let n_batch = if crate::sequences::causal_attention(model) { n0.min(o.n_batch) } else { o.n_batch };
    let n_ubatch = n_batch.min(o.n_ubatch);
    let mut n_ctx = pad(n0);
    if !o.kv_unified && o.n_seq_max > 0 {
        n_ctx = pad(n_ctx / o.n_seq_max).saturating_mul(o.n_seq_max);
    }
    n_ctx.min(n_ubatch)
}

/// What one batch of an embedding call yields per text.
enum Kind {
    /// One vector per sequence (`llama_get_embeddings_seq`), of this width.
    Pooled(usize),
    /// One vector per token (`llama_get_embeddings_ith`), of this width.
    PerToken(usize),
}

impl<'m> Context<'m> {
    /// The pooling this context actually uses (`llama_pooling_type`: the option, or the model's
    /// default when it was unspecified).
    pub fn pooling(&self) -> Pooling {
        // SAFETY: valid context; the call only reads it.
        let c = unsafe { sys::llama_pooling_type(self.raw().as_ptr()) };
        Pooling::from_c_value(c).unwrap_or(Pooling::Unspecified)
    }

    /// Whether the context is in embedding mode ([`ContextOptions::embeddings`]).
    pub fn is_embedding(&self) -> bool {
        self.options().embeddings
    }

    /// Width of the vectors this context's embedding calls return: the model's output
    /// embedding size, or for rank pooling the classifier's number of outputs.
    pub fn embedding_width(&self) -> usize {
        let m = self.model().raw().as_ptr();
        // SAFETY: valid model; both only read it.
        let n = unsafe {
            if self.pooling() == Pooling::Rank {
                sys::llama_model_n_cls_out(m) as i64
            } else {
                sys::llama_model_n_embd_out(m) as i64
            }
        };
        n.max(0) as usize
    }

    /// One pooled embedding per text, in order, normalised with `normalize`
    /// ([`Normalize::Euclidean`] is llama.cpp's default).
    ///
    /// Each text is its own sequence, starting at position 0; as many texts as fit go into one
    /// batch (up to `n_seq_max` sequences and `n_ubatch` tokens; one text per batch when the
    /// sequences have separate caches, see the [module](self)). Tokenize with
    /// [`Model::tokenize`]`(text, true)` to get the special tokens the model expects. The cache
    /// is cleared before each batch and after the call (also after a failure), so
    /// [`n_past`](Context::n_past) is 0 afterwards.
    ///
    /// Errors: [`EmbedError`] for a context that is not in embedding mode or does not pool, an
    /// empty or too long text; [`Error::EmptyInput`] for no texts; [`Error::InvalidToken`]; a
    /// failed decode.
    pub fn embed(&mut self, texts: &[&[Token]], normalize: Normalize) -> Result<Vec<Vec<f32>>> {
        match self.pooling() {
            Pooling::None | Pooling::Unspecified => {
                self.check_embedding()?;
                Err(EmbedError::PoolingNone.into())
            }
            _ => {
                let width = self.embedding_width();
                let mut out = self.run(texts, Kind::Pooled(width))?;
                Ok(out.iter_mut().map(|v| finish(v.pop().unwrap_or_default(), normalize)).collect())
            }
        }
    }

    /// The embedding of every token of every text (`out[text][token]`), normalised each with
    /// `normalize`, on a context with [`Pooling::None`]. Batching, cache and errors as in
    /// [`embed`](Self::embed), except that a text may be as long as one decode takes
    /// ([`max_batch_tokens`](Context::max_batch_tokens)).
    pub fn embed_tokens(&mut self, texts: &[&[Token]], normalize: Normalize) -> Result<Vec<Vec<Vec<f32>>>> {
        match self.pooling() {
            Pooling::None => {
                let width = self.embedding_width();
                let out = self.run(texts, Kind::PerToken(width))?;
                Ok(out.into_iter().map(|t| t.into_iter().map(|v| finish(v, normalize)).collect()).collect())
            }
            pooling => {
                self.check_embedding()?;
                Err(EmbedError::Pooled { pooling }.into())
            }
        }
    }

    /// Scores each document against `query` with a reranking model (a context with
    /// [`Pooling::Rank`]): the first output of the classifier head for the prompt
    /// [`rerank_prompt`] builds, as llama-server's `/rerank` does. Higher is more relevant; the
    /// scale is the model's (no normalisation).
    ///
    /// Errors: [`EmbedError::NotRankPooling`] on any other context (a model without a
    /// classifier head cannot get one: [`Context::new`] refuses it with
    /// [`EmbedError::NoClassifierHead`]); [`Error::EmptyInput`] for no documents; otherwise as
    /// [`embed`](Self::embed).
    pub fn rerank(&mut self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        self.check_embedding()?;
        let pooling = self.pooling();
        if pooling != Pooling::Rank {
            return Err(EmbedError::NotRankPooling { pooling }.into());
        }
        if documents.is_empty() {
            return Err(Error::EmptyInput { what: "list of documents" });
        }
        let prompts = documents.iter().map(|d| rerank_prompt(self.model(), query, d)).collect::<Result<Vec<_>>>()?;
        let texts: Vec<&[Token]> = prompts.iter().map(Vec::as_slice).collect();
        let scores = self.embed(&texts, Normalize::None)?;
        scores
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.first().copied().ok_or_else(|| EmbedError::Missing { what: format!("document {i}") }.into())
            })
            .collect()
    }

    fn check_embedding(&self) -> Result<()> {
        if self.is_embedding() { Ok(()) } else { Err(EmbedError::NotEmbeddingContext.into()) }
    }

    /// Decodes `texts` in as few batches as fit and collects, per text, its vectors (one for
    /// pooled kinds, one per token otherwise). Clears the cache before each batch and at the end.
    fn run(&mut self, texts: &[&[Token]], kind: Kind) -> Result<Vec<Vec<Vec<f32>>>> {
        self.check_embedding()?;
        if texts.is_empty() {
            return Err(Error::EmptyInput { what: "list of texts" });
        }
        let n_vocab = self.model().n_vocab();
        let (max, limit) = self.text_limit(&kind);
        for (index, t) in texts.iter().enumerate() {
            if t.is_empty() {
                return Err(EmbedError::EmptyText { index }.into());
            }
            if let Some(&token) = t.iter().find(|&&x| x < 0 || x as u32 >= n_vocab) {
                return Err(Error::InvalidToken { token, n_vocab });
            }
            if t.len() > max {
                return Err(EmbedError::TextTooLong { index, n_tokens: t.len(), max, limit }.into());
            }
        }
        let n_seq = self.n_seq_max() as usize;
        let per_batch = if n_seq > 1 && !self.options().kv_unified { 1 } else { n_seq };
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        let result = loop {
            if start == texts.len() {
                break Ok(());
            }
            let (mut end, mut total) = (start, 0);
            while end < texts.len() && end - start < per_batch && total + texts[end].len() <= max {
                total += texts[end].len();
                end += 1;
            }
            if let Err(e) = self.embed_batch(&texts[start..end], total, &kind, &mut out) {
                break Err(e);
            }
            start = end;
        };
        self.clear();
        result.map(|()| out)
    }

    /// The most tokens one text (and one batch) may have for `kind`, and what limits it.
    fn text_limit(&self, kind: &Kind) -> (usize, &'static str) {
        let n_ctx = self.n_ctx_seq().max(1) as usize;
        let (n, limit) = match kind {
            Kind::Pooled(_) => {
                let n = (self.n_batch().max(1) as usize).min(self.n_ubatch().max(1) as usize);
                (n, "n_ubatch: llama.cpp pools per micro-batch")
            }
            Kind::PerToken(_) => {
                let n = self.max_batch_tokens();
                (n, if n < self.n_batch() as usize { "n_ubatch, non-causal attention" } else { "n_batch" })
            }
        };
        if n_ctx < n { (n_ctx, "the context size per sequence") } else { (n, limit) }
    }

    /// Decodes one batch of `texts` (sequences 0..) on an empty cache and appends their
    /// vectors to `out`.
    fn embed_batch(
        &mut self,
        texts: &[&[Token]],
        total: usize,
        kind: &Kind,
        out: &mut Vec<Vec<Vec<f32>>>,
    ) -> Result<()> {
        let mut batch = Batch::new(total, 1)?;
        for (s, t) in texts.iter().enumerate() {
            for (i, &token) in t.iter().enumerate() {
                batch.add(token, i as i32, &[s as SeqId], true)?;
            }
        }
        self.clear();
        // decode_batch checks the batch (size, sequence ids below n_seq_max, positions) and
        // synchronises when it reads the outputs; the logits it returns are not needed.
        drop(self.decode_batch(&batch)?);
        let ctx = self.raw().as_ptr();
        let mut index = 0usize;
        for (s, t) in texts.iter().enumerate() {
            let vectors = match *kind {
                Kind::Pooled(width) => {
                    // SAFETY: valid context after a successful decode of a batch holding
                    // sequence `s` (below n_seq_max); llama.cpp synchronises, then returns its
                    // pooled vector (n_embd_out floats, or n_cls_out for rank pooling: `width`,
                    // as llama_context::decode sizes it) or null, which is checked.
                    let p = unsafe { sys::llama_get_embeddings_seq(ctx, s as SeqId) };
                    if p.is_null() {
                        return Err(EmbedError::Missing { what: format!("sequence {s}") }.into());
                    }
                    // SAFETY: `p` points to `width` floats owned by the context, which nothing
                    // changes before they are copied here.
                    vec![unsafe { std::slice::from_raw_parts(p, width) }.to_vec()]
                }
                Kind::PerToken(width) => {
                    let mut v = Vec::with_capacity(t.len());
                    for _ in 0..t.len() {
                        // SAFETY: valid context after a successful decode; batch index `index`
                        // is below the batch's length and had its output flag on, so llama.cpp
                        // resolves it to an output row (it returns null on any failure, checked).
                        let p = unsafe { sys::llama_get_embeddings_ith(ctx, index as i32) };
                        if p.is_null() {
                            return Err(EmbedError::Missing { what: format!("batch index {index}") }.into());
                        }
                        // SAFETY: an output row of n_embd_out (`width`) floats in the context's
                        // embedding buffer, unchanged until the next decode.
                        v.push(unsafe { std::slice::from_raw_parts(p, width) }.to_vec());
                        index += 1;
                    }
                    v
                }
            };
            out.push(vectors);
        }
        Ok(())
    }
}

fn finish(mut v: Vec<f32>, normalize: Normalize) -> Vec<f32> {
    normalize.apply(&mut v);
    v
}

/// The tokens of a rerank prompt for `query` and `document`, as llama-server's
/// `format_prompt_rerank` builds them: the model's rerank template
/// (`tokenizer.chat_template.rerank`, with `{query}` and `{document}` replaced, tokenized with
/// special tokens parsed and none added) when it has one, else
/// `[BOS] query [EOS] [SEP] document [EOS]`, each special token where the vocabulary asks for
/// it (`add_bos`, `add_eos`, `add_sep`; SEP stands in for a missing EOS), the texts tokenized
/// without special tokens.
pub fn rerank_prompt(model: &Model, query: &str, document: &str) -> Result<Vec<Token>> {
    let vocab = model.vocab();
    let name = c"rerank";
    // SAFETY: valid model and C string; the result is null or a C string owned by the model.
    let template = unsafe { sys::llama_model_chat_template(model.raw().as_ptr(), name.as_ptr()) };
    if !template.is_null() {
        // SAFETY: non-null, a NUL-terminated string that lives as long as the model.
        let t = unsafe { CStr::from_ptr(template) }.to_string_lossy().into_owned();
        let prompt = t.replace("{query}", query).replace("{document}", document);
        return model.tokenize_with(&prompt, false, true);
    }
    // SAFETY: valid vocabulary; these only read it.
    let (bos, eos, sep, add_bos, add_eos, add_sep) = unsafe {
        (
            sys::llama_vocab_bos(vocab),
            sys::llama_vocab_eos(vocab),
            sys::llama_vocab_sep(vocab),
            sys::llama_vocab_get_add_bos(vocab),
            sys::llama_vocab_get_add_eos(vocab),
            sys::llama_vocab_get_add_sep(vocab),
        )
    };
    let eos = if eos == sys::LLAMA_TOKEN_NULL { sep } else { eos };
    let push = |out: &mut Vec<Token>, t: Token, reason: &'static str| {
        if t == sys::LLAMA_TOKEN_NULL {
            return Err(Error::from(EmbedError::NoRerankPrompt { reason }));
        }
        out.push(t);
        Ok(())
    };
    let no_eos = "the vocabulary asks for an EOS token but has neither EOS nor SEP";
    let mut out = Vec::new();
    if add_bos {
        push(&mut out, bos, "the vocabulary asks for a BOS token but has none")?;
    }
    out.extend(model.tokenize_with(query, false, false)?);
    if add_eos {
        push(&mut out, eos, no_eos)?;
    }
    if add_sep {
        push(&mut out, sep, "the vocabulary asks for a SEP token but has none")?;
    }
    out.extend(model.tokenize_with(document, false, false)?);
    if add_eos {
        push(&mut out, eos, no_eos)?;
    }
    Ok(out)
}
