//! Batches of tokens (or embeddings) for many sequences at once, and the outputs a decode of
//! one leaves ([`Context::decode_batch`](crate::Context::decode_batch)).
//!
//! A [`Batch`] owns its `llama_batch_init` allocation and checks every capacity when a token
//! is added (token count, ids per token), so safe code cannot write past it; what depends on the
//! context (sequence ids below its `n_seq_max`, token ids in the vocabulary, positions that
//! continue each sequence's cache, the batch size) is checked by the decode before llama.cpp
//! sees the batch. Each refusal is an [`Error::Batch`] with a
//! [`BatchError`] naming the token and what was wrong.
//!
//! ```no_run
//! use llama_runner::{Backend, Batch, Context, ContextOptions, Model, ModelOptions, Sampler};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions { n_seq_max: 2, ..Default::default() })?;
//! let (a, b) = (model.tokenize("Hello", true)?, model.tokenize("Bonjour", true)?);
//! let mut batch = Batch::new(a.len() + b.len(), 1)?;
//! for (i, &t) in a.iter().enumerate() {
//!     batch.add(t, i as i32, &[0], i + 1 == a.len())?;
//! }
//! for (i, &t) in b.iter().enumerate() {
//!     batch.add(t, i as i32, &[1], i + 1 == b.len())?;
//! }
//! let mut sampler = Sampler::greedy(&model)?;
//! let outputs = ctx.decode_batch(&batch)?;
//! let next_a = outputs.sample(&mut sampler, a.len() - 1)?; // by batch index
//! let next_b = outputs.sample(&mut sampler, batch.len() - 1)?;
//! # let _ = (next_a, next_b);
//! # Ok(()) }
//! ```

use std::ptr::NonNull;

use llama_sys as sys;

use crate::error::{Error, Result};
use crate::model::Token;

/// A sequence id (`llama_seq_id`): 0 up to the context's `n_seq_max` (exclusive).
pub type SeqId = i32;

/// A position in a sequence (`llama_pos`), from 0.
pub type Pos = i32;

/// llama.cpp's `LLAMA_MAX_SEQ` (llama-cparams.h): the most sequences a context can have.
pub const MAX_SEQ: u32 = 256;

/// What is wrong with a batch ([`Error::Batch`]); indices are batch
/// indices (the order tokens were added in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A batch needs room for at least one token.
    #[error("a batch needs a capacity of at least 1 token")]
    ZeroCapacity,
    /// A capacity llama.cpp's `int32_t` sizes cannot hold.
    #[error("a capacity of {capacity} tokens is too large")]
    CapacityTooLarge {
        /// The capacity asked for.
        capacity: usize,
    },
    /// Ids per token outside 1..=[`MAX_SEQ`].
    #[error("{n_seq_max} sequence ids per token is outside 1..={MAX_SEQ} (LLAMA_MAX_SEQ)")]
    BadSeqCapacity {
        /// The count asked for.
        n_seq_max: usize,
    },
    /// An embedding width of 0.
    #[error("an embedding batch needs a width of at least 1")]
    ZeroEmbdWidth,
    /// The batch holds as many tokens as it was made for.
    #[error("the batch is full ({capacity} tokens)")]
    Full {
        /// Its capacity.
        capacity: usize,
    },
    /// A token with no sequence id.
    #[error("token {index} has no sequence id")]
    NoSeqId {
        /// The batch index it would have had.
        index: usize,
    },
    /// A token with more sequence ids than the batch was made for (llama.cpp allocates that
    /// many per token).
    #[error("token {index} has {given} sequence ids, the batch was made for at most {max} per token")]
    TooManySeqIds {
        /// The batch index.
        index: usize,
        /// Ids given.
        given: usize,
        /// The batch's `n_seq_max`.
        max: usize,
    },
    /// The same sequence id twice for one token.
    #[error("token {index} names sequence {seq} twice")]
    DuplicateSeqId {
        /// The batch index.
        index: usize,
        /// The id.
        seq: SeqId,
    },
    /// A negative sequence id.
    #[error("token {index} has the negative sequence id {seq}")]
    NegativeSeqId {
        /// The batch index.
        index: usize,
        /// The id.
        seq: SeqId,
    },
    /// A negative position.
    #[error("token {index} has the negative position {pos}")]
    NegativePos {
        /// The batch index.
        index: usize,
        /// The position.
        pos: Pos,
    },
    /// An embedding of the wrong width.
    #[error("embedding {index} has {given} values, the batch holds embeddings of {width}")]
    EmbdWidth {
        /// The batch index.
        index: usize,
        /// Values given.
        given: usize,
        /// The batch's width.
        width: usize,
    },
    /// A token added to an embedding batch, or an embedding to a token batch.
    #[error("this batch holds {holds}, not {given}")]
    WrongKind {
        /// What the batch holds (`tokens`, `embeddings`).
        holds: &'static str,
        /// What was added.
        given: &'static str,
    },
    /// Decoding an empty batch.
    #[error("the batch is empty")]
    Empty,
    /// A sequence id not below the context's `n_seq_max`.
    #[error("token {index}: sequence id {seq} is not below the context's n_seq_max {n_seq_max}")]
    SeqOutOfRange {
        /// The batch index.
        index: usize,
        /// The id.
        seq: SeqId,
        /// The context's `n_seq_max`.
        n_seq_max: u32,
    },
    /// A token id outside the model's vocabulary.
    #[error("token {index}: id {token} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfVocab {
        /// The batch index.
        index: usize,
        /// The token id.
        token: Token,
        /// The vocabulary size.
        n_vocab: u32,
    },
    /// An embedding batch whose width is not the model's input embedding size.
    #[error("the batch holds embeddings of {width} values, the model takes {n_embd}")]
    EmbdWidthModel {
        /// The batch's width.
        width: usize,
        /// The model's input embedding size.
        n_embd: usize,
    },
    /// More tokens than one decode takes (llama.cpp asserts `n_tokens <= n_batch`; for
    /// non-causal models the micro-batch is the limit).
    #[error("{n_tokens} tokens in one batch, the context takes at most {max} per decode ({limit})")]
    TooLarge {
        /// Tokens in the batch.
        n_tokens: usize,
        /// The most it takes.
        max: usize,
        /// Which size limits it (`n_batch`, or `n_ubatch` for non-causal attention).
        limit: &'static str,
    },
    /// A sequence's first position in the batch does not follow its last one in the cache.
    #[error(
        "sequence {seq}: the cache ends at position {cache_last}, so its tokens in the batch must start at {}, \
         not {first}",
        .cache_last + 1
    )]
    PositionGap {
        /// The sequence.
        seq: SeqId,
        /// The last position the cache holds for it.
        cache_last: Pos,
        /// The first position the batch gives it.
        first: Pos,
    },
    /// A sequence's positions in the batch leave a hole.
    #[error("sequence {seq}: its positions in the batch ({first}..={last}) are not continuous")]
    NotContinuous {
        /// The sequence.
        seq: SeqId,
        /// Its smallest position in the batch.
        first: Pos,
        /// Its largest.
        last: Pos,
    },
    /// A sequence's positions go down within the batch.
    #[error("token {index}: sequence {seq} goes back from position {prev} to {pos}")]
    Decreasing {
        /// The batch index.
        index: usize,
        /// The sequence.
        seq: SeqId,
        /// Its previous position in the batch.
        prev: Pos,
        /// This token's.
        pos: Pos,
    },
    /// Tokens shared by two sequences whose caches hold different position ranges.
    #[error("sequences {a} and {b} share tokens in the batch but their caches have diverged")]
    CoupledDiverged {
        /// One sequence.
        a: SeqId,
        /// The other.
        b: SeqId,
    },
    /// A sequence whose tokens belong to sets of sequences with nothing in common.
    #[error("token {index}: sequence {seq} belongs to incompatible sequence sets in this batch")]
    IncompatibleSets {
        /// The batch index.
        index: usize,
        /// The sequence.
        seq: SeqId,
    },
    /// A model whose positions have several components (M-RoPE), which this batch type does
    /// not lay out.
    #[error("the model uses multi-component positions (M-RoPE), which Batch does not support")]
    MultiPosition,
    /// A batch index with no output (out of range, or its output flag was off).
    #[error("batch index {index} has no output (the batch has {n_tokens} tokens; outputs at {outputs:?})")]
    NoOutput {
        /// The index asked for.
        index: usize,
        /// Tokens in the batch.
        n_tokens: usize,
        /// The indices that have outputs (at most the first 16).
        outputs: Vec<usize>,
    },
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        Error::Batch(e)
    }
}

/// A batch of tokens (or embeddings) with their positions, sequence ids and output flags,
/// owning llama.cpp's allocation (`llama_batch_init`; freed on drop).
///
/// Made for at most `capacity` tokens of at most `n_seq_max` sequence ids each; [`add`] refuses
/// what does not fit. See the [module](self) for an example.
///
/// [`add`]: Batch::add
pub struct Batch {
    /// Invariant: made by `llama_batch_init(capacity, embd, n_seq_max)`; `n_tokens` entries of
    /// every array are written (each `seq_id[i]` holds `n_seq_id[i] <= n_seq_max` ids).
    raw: sys::llama_batch,
    capacity: usize,
    n_seq_max: usize,
    /// Embedding width; 0 for a token batch.
    embd: usize,
}

// SAFETY: the batch owns plain heap arrays (malloc'd by llama_batch_init) with no thread
// affinity; every mutation takes `&mut self`, and `&self` methods only read them.
unsafe impl Send for Batch {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Batch {}

impl Batch {
    /// A batch of up to `capacity` tokens, each in up to `n_seq_max` sequences (1 when every
    /// token belongs to one sequence; the context's `n_seq_max` for prefixes shared by all).
    pub fn new(capacity: usize, n_seq_max: usize) -> Result<Batch> {
        Self::alloc(capacity, 0, n_seq_max)
    }

    /// A batch of up to `capacity` input embeddings of `width` values each (the model's
    /// `n_embd_inp`), each in up to `n_seq_max` sequences.
    pub fn embeddings(capacity: usize, width: usize, n_seq_max: usize) -> Result<Batch> {
        if width == 0 {
            return Err(BatchError::ZeroEmbdWidth.into());
        }
        Self::alloc(capacity, width, n_seq_max)
    }

    fn alloc(capacity: usize, embd: usize, n_seq_max: usize) -> Result<Batch> {
        if capacity == 0 {
            return Err(BatchError::ZeroCapacity.into());
        }
        if !(1..=MAX_SEQ as usize).contains(&n_seq_max) {
            return Err(BatchError::BadSeqCapacity { n_seq_max }.into());
        }
        // llama_batch_init computes sizeof * n as size_t from int32 values; keep both the count
        // and count * width within i32 so nothing wraps.
        let cap = i32::try_from(capacity).map_err(|_| BatchError::CapacityTooLarge { capacity })?;
        let width = i32::try_from(embd).map_err(|_| BatchError::CapacityTooLarge { capacity })?;
        if capacity.checked_mul(embd.max(1)).is_none_or(|n| i32::try_from(n).is_err()) {
            return Err(BatchError::CapacityTooLarge { capacity }.into());
        }
        // SAFETY: positive sizes within i32 (checked above); llama_batch_init mallocs the arrays.
        let raw = unsafe { sys::llama_batch_init(cap, width, n_seq_max as i32) };
        let ok = [
            NonNull::new(raw.pos).is_some(),
            NonNull::new(raw.n_seq_id).is_some(),
            NonNull::new(raw.seq_id).is_some(),
            NonNull::new(raw.logits).is_some(),
            if embd == 0 { !raw.token.is_null() } else { !raw.embd.is_null() },
        ];
        let batch = Batch { raw, capacity, n_seq_max, embd };
        if ok.contains(&false) {
            // Dropping frees what was allocated (llama_batch_free skips null arrays; malloc
            // failures of the per-token id arrays are not detectable through its API, so they
            // are checked below).
            return Err(Error::ContextCreate { log: vec!["llama_batch_init could not allocate the batch".into()] });
        }
        // SAFETY: seq_id has capacity + 1 entries (the last a null terminator).
        let ids = unsafe { std::slice::from_raw_parts(batch.raw.seq_id, capacity) };
        if ids.iter().any(|p| p.is_null()) {
            return Err(Error::ContextCreate { log: vec!["llama_batch_init could not allocate the batch".into()] });
        }
        Ok(batch)
    }

    /// Appends a token at position `pos` of each sequence in `seq_ids`; `output` asks for its
    /// logits. Fails when the batch is full, `seq_ids` is empty, longer than the batch's
    /// `n_seq_max`, repeats an id or has a negative one, or `pos` is negative; the batch is
    /// unchanged then.
    pub fn add(&mut self, token: Token, pos: Pos, seq_ids: &[SeqId], output: bool) -> Result<()> {
        if self.embd != 0 {
            return Err(BatchError::WrongKind { holds: "embeddings", given: "a token" }.into());
        }
        let i = self.check_entry(pos, seq_ids)?;
        // SAFETY: `i < capacity` (check_entry) and the token array has `capacity` entries.
        unsafe { *self.raw.token.add(i) = token };
        self.write_entry(i, pos, seq_ids, output);
        Ok(())
    }

    /// Appends an input embedding (as [`add`](Self::add) does a token); it must have the
    /// batch's width.
    pub fn add_embedding(&mut self, embd: &[f32], pos: Pos, seq_ids: &[SeqId], output: bool) -> Result<()> {
        if self.embd == 0 {
            return Err(BatchError::WrongKind { holds: "tokens", given: "an embedding" }.into());
        }
        let index = self.len();
        if embd.len() != self.embd {
            return Err(BatchError::EmbdWidth { index, given: embd.len(), width: self.embd }.into());
        }
        let i = self.check_entry(pos, seq_ids)?;
        // SAFETY: the embedding array has capacity * width floats and `i < capacity`.
        unsafe { std::ptr::copy_nonoverlapping(embd.as_ptr(), self.raw.embd.add(i * self.embd), self.embd) };
        self.write_entry(i, pos, seq_ids, output);
        Ok(())
    }

    fn check_entry(&self, pos: Pos, seq_ids: &[SeqId]) -> Result<usize> {
        let index = self.len();
        if index >= self.capacity {
            return Err(BatchError::Full { capacity: self.capacity }.into());
        }
        if seq_ids.is_empty() {
            return Err(BatchError::NoSeqId { index }.into());
        }
        if seq_ids.len() > self.n_seq_max {
            return Err(BatchError::TooManySeqIds { index, given: seq_ids.len(), max: self.n_seq_max }.into());
        }
        for (k, &seq) in seq_ids.iter().enumerate() {
            if seq < 0 {
                return Err(BatchError::NegativeSeqId { index, seq }.into());
            }
            if seq_ids[..k].contains(&seq) {
                return Err(BatchError::DuplicateSeqId { index, seq }.into());
            }
        }
        if pos < 0 {
            return Err(BatchError::NegativePos { index, pos }.into());
        }
        Ok(index)
    }

    fn write_entry(&mut self, i: usize, pos: Pos, seq_ids: &[SeqId], output: bool) {
        // SAFETY: `i < capacity` and every array has `capacity` entries; `seq_id[i]` has
        // `n_seq_max >= seq_ids.len()` entries (check_entry).
        unsafe {
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = seq_ids.len() as i32;
            std::ptr::copy_nonoverlapping(seq_ids.as_ptr(), *self.raw.seq_id.add(i), seq_ids.len());
            *self.raw.logits.add(i) = i8::from(output);
        }
        self.raw.n_tokens += 1;
    }

    /// Empties the batch (keeping its allocation).
    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.raw.n_tokens == 0
    }

    /// The most tokens it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most sequence ids per token.
    pub fn n_seq_max(&self) -> usize {
        self.n_seq_max
    }

    /// The embedding width, `None` for a token batch.
    pub fn embd_width(&self) -> Option<usize> {
        (self.embd != 0).then_some(self.embd)
    }

    /// The token at batch index `i` (`None` past the end or in an embedding batch).
    pub fn token(&self, i: usize) -> Option<Token> {
        // SAFETY: `i < n_tokens <= capacity`, written by `add`.
        (i < self.len() && self.embd == 0).then(|| unsafe { *self.raw.token.add(i) })
    }

    /// The position of batch index `i`.
    pub fn pos(&self, i: usize) -> Option<Pos> {
        // SAFETY: `i < n_tokens`, written by `add`.
        (i < self.len()).then(|| unsafe { *self.raw.pos.add(i) })
    }

    /// The sequence ids of batch index `i`.
    pub fn seq_ids(&self, i: usize) -> Option<&[SeqId]> {
        // SAFETY: `i < n_tokens`; `seq_id[i]` holds `n_seq_id[i]` ids written by `add`, and
        // lives as long as `self`.
        (i < self.len())
            .then(|| unsafe { std::slice::from_raw_parts(*self.raw.seq_id.add(i), *self.raw.n_seq_id.add(i) as usize) })
    }

    /// Whether batch index `i` asks for its output.
    pub fn output(&self, i: usize) -> Option<bool> {
        // SAFETY: `i < n_tokens`, written by `add`.
        (i < self.len()).then(|| unsafe { *self.raw.logits.add(i) != 0 })
    }

    /// The batch indices that ask for outputs, in order.
    pub fn output_indices(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.output(i) == Some(true)).collect()
    }

    /// The raw batch for llama_decode (its arrays stay owned by `self`).
    pub(crate) fn raw(&self) -> sys::llama_batch {
        self.raw
    }

    /// Checks the batch against a context before llama.cpp sees it, as
    /// `llama_batch_allocr::init` would (which logs and fails, or aborts on some of these):
    /// sequence ids below `n_seq_max`, tokens in the vocabulary, each sequence's positions
    /// continuing its cache (`cache_range(seq)`: the (min, max) positions it holds, or None),
    /// continuous and non-decreasing within the batch, and tokens shared by sequences only
    /// where those sequences' caches agree.
    pub(crate) fn check_against(
        &self,
        n_seq_max: u32,
        n_vocab: u32,
        cache_range: impl Fn(SeqId) -> Option<(Pos, Pos)>,
    ) -> Result<()> {
        if self.is_empty() {
            return Err(BatchError::Empty.into());
        }
        let n_seq = n_seq_max as usize;
        let mut first = vec![Pos::MAX; n_seq];
        let mut last = vec![-1 as Pos; n_seq];
        let mut count = vec![0usize; n_seq];
        // Distinct positions per sequence (positions are non-decreasing, checked below, so a
        // new one is one that differs from the last).
        let mut distinct = vec![0usize; n_seq];
        // The intersection of the sequence sets of each sequence's tokens so far.
        let mut common: Vec<Option<SeqSet>> = vec![None; n_seq];
        let mut coupled: Vec<(SeqId, SeqId)> = Vec::new();
        for i in 0..self.len() {
            let ids = self.seq_ids(i).unwrap_or(&[]);
            let pos = self.pos(i).unwrap_or(0);
            if let Some(token) = self.token(i)
                && (token < 0 || token as u32 >= n_vocab)
            {
                return Err(BatchError::TokenOutOfVocab { index: i, token, n_vocab }.into());
            }
            if let Some(&seq) = ids.iter().find(|&&s| s < 0 || s as u32 >= n_seq_max) {
                return Err(BatchError::SeqOutOfRange { index: i, seq, n_seq_max }.into());
            }
            let set = SeqSet::of(ids);
            for (k, &s) in ids.iter().enumerate() {
                let su = s as usize;
                if k > 0 && !coupled.contains(&(ids[0], s)) {
                    coupled.push((ids[0], s));
                }
                let c = common[su].get_or_insert(set);
                *c = c.and(&set);
                if c.is_empty() {
                    return Err(BatchError::IncompatibleSets { index: i, seq: s }.into());
                }
                if count[su] > 0 && pos < last[su] {
                    return Err(BatchError::Decreasing { index: i, seq: s, prev: last[su], pos }.into());
                }
                if count[su] == 0 || pos != last[su] {
                    distinct[su] += 1;
                }
                first[su] = first[su].min(pos);
                last[su] = last[su].max(pos);
                count[su] += 1;
            }
        }
        for s in 0..n_seq {
            if count[s] == 0 {
                continue;
            }
            let seq = s as SeqId;
            if let Some((_, cache_last)) = cache_range(seq)
                && first[s] != cache_last + 1
            {
                return Err(BatchError::PositionGap { seq, cache_last, first: first[s] }.into());
            }
            if (last[s] - first[s]) as usize + 1 > distinct[s] {
                return Err(BatchError::NotContinuous { seq, first: first[s], last: last[s] }.into());
            }
        }
        for (a, b) in coupled {
            if cache_range(a) != cache_range(b) {
                return Err(BatchError::CoupledDiverged { a, b }.into());
            }
        }
        Ok(())
    }
}

/// A set of sequence ids below [`MAX_SEQ`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct SeqSet([u64; (MAX_SEQ as usize).div_ceil(64)]);

impl SeqSet {
    /// The set of `ids`, each in `0..MAX_SEQ` (checked by the caller).
    fn of(ids: &[SeqId]) -> SeqSet {
        let mut set = SeqSet([0; (MAX_SEQ as usize).div_ceil(64)]);
        for &s in ids {
            let s = s as usize;
            set.0[s / 64] |= 1 << (s % 64);
        }
        set
    }

    fn and(&self, other: &SeqSet) -> SeqSet {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0) {
            *a &= b;
        }
        out
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: made by llama_batch_init and freed once; llama_batch_free frees each array
        // (the per-token id arrays up to the null terminator llama_batch_init wrote).
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("n_seq_max", &self.n_seq_max)
            .field("embd", &self.embd)
            .finish()
    }
}

/// The outputs of one [`Context::decode_batch`](crate::Context::decode_batch): the logits of
/// each batch token whose output flag was on, by batch index.
///
/// It borrows the context, so it cannot be read after the next decode (or any other change to
/// the context), which would overwrite the logits:
///
/// ```compile_fail
/// # use llama_runner::{Backend, Batch, Context, ContextOptions, Model, ModelOptions};
/// # fn main() -> llama_runner::Result<()> {
/// # let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// # let mut ctx = Context::new(&model, &ContextOptions::default())?;
/// # let mut batch = Batch::new(1, 1)?;
/// # batch.add(1, 0, &[0], true)?;
/// let outputs = ctx.decode_batch(&batch)?;
/// ctx.clear(); // the context changes while the outputs still borrow it
/// println!("{:?}", outputs.logits(0)?.len());
/// # Ok(()) }
/// ```
pub struct Outputs<'c, 'm> {
    ctx: &'c crate::Context<'m>,
    /// Batch indices with an output, ascending (the order of llama.cpp's output rows).
    indices: Vec<usize>,
    n_tokens: usize,
    /// `llama_get_logits` after the decode (rows reordered into batch order), or null.
    logits: *const f32,
    n_vocab: usize,
}

impl<'c, 'm> Outputs<'c, 'm> {
    pub(crate) fn new(ctx: &'c crate::Context<'m>, batch: &Batch) -> Outputs<'c, 'm> {
        // SAFETY: valid context after a successful decode; llama_get_logits synchronises and
        // reorders the output rows into batch order once (later calls find nothing to swap),
        // so the pointer stays valid and its rows fixed until the context changes, which the
        // borrow of `ctx` prevents while `Outputs` lives.
        let logits = unsafe { sys::llama_get_logits(ctx.raw().as_ptr()) };
        Outputs {
            ctx,
            // In embedding mode llama.cpp outputs every token, whatever the flags say.
            indices: if ctx.options().embeddings { (0..batch.len()).collect() } else { batch.output_indices() },
            n_tokens: batch.len(),
            logits,
            n_vocab: ctx.model().n_vocab() as usize,
        }
    }

    /// The batch indices that have outputs, ascending.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// How many outputs there are.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch asked for no output.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    fn row(&self, index: usize) -> Result<usize> {
        self.indices.binary_search(&index).map_err(|_| {
            BatchError::NoOutput {
                index,
                n_tokens: self.n_tokens,
                outputs: self.indices.iter().take(16).copied().collect(),
            }
            .into()
        })
    }

    /// The logits (one per vocabulary entry) of batch index `index`; an error when that token
    /// had no output.
    pub fn logits(&self, index: usize) -> Result<&[f32]> {
        let row = self.row(index)?;
        if self.logits.is_null() {
            return Err(Error::NoLogits);
        }
        // SAFETY: llama.cpp's logits buffer holds n_outputs rows of n_vocab floats in batch
        // order, and `row < n_outputs` (the row of an output index); it is not written while
        // `self` borrows the context.
        Ok(unsafe { std::slice::from_raw_parts(self.logits.add(row * self.n_vocab), self.n_vocab) })
    }

    /// The most likely token at batch index `index` (the first of equal maxima, as llama.cpp's
    /// greedy sampler picks).
    pub fn argmax(&self, index: usize) -> Result<Token> {
        let logits = self.logits(index)?;
        let mut best = 0usize;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        Ok(best as Token)
    }

    /// Samples from the logits of batch index `index` with `sampler`, which accepts the token
    /// (as [`Sampler::sample`](crate::Sampler::sample) does for the last token, its grammar
    /// included).
    pub fn sample(&self, sampler: &mut crate::Sampler<'_>, index: usize) -> Result<Token> {
        if sampler.model().id() != self.ctx.model().id() {
            return Err(Error::SamplerModelMismatch);
        }
        self.row(index)?;
        if self.logits.is_null() {
            return Err(Error::NoLogits);
        }
        let idx = i32::try_from(index).map_err(|_| BatchError::Full { capacity: self.n_tokens })?;
        if sampler.has_grammar() {
            // SAFETY: a context of the sampler's model (checked) whose last decode left logits
            // for batch index `idx` (checked); borrowed, so nothing else uses it meanwhile.
            return unsafe { sampler.sample_constrained(self.ctx.raw(), idx) };
        }
        // SAFETY: valid chain and context of the chain's model; batch index `idx` had an
        // output in the last decode (checked), so llama_get_logits_ith finds its row and
        // llama_sampler_sample's logits assert holds; the chain ends with a selecting sampler
        // (Sampler's invariant). Nothing else uses the context meanwhile (it is borrowed).
        let token = unsafe { sys::llama_sampler_sample(sampler.raw_chain().as_ptr(), self.ctx.raw().as_ptr(), idx) };
        crate::logging::resume_panic();
        Ok(token)
    }
}

impl std::fmt::Debug for Outputs<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs").field("indices", &self.indices).field("n_tokens", &self.n_tokens).finish()
    }
}
