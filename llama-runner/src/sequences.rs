//! Per-sequence operations on a context's cache: what a sequence holds, removing a position
//! range, copying, keeping one sequence, shifting positions, and sharing a decoded prefix
//! between sequences.
//!
//! Every operation checks what llama.cpp's memory modules assert on (a sequence id outside
//! the context's `n_seq_max`, a shift where the memory cannot shift, a division by zero, a
//! partial copy between the separate buffers of non-unified sequences) and returns an
//! [`Error::Sequence`] instead. The context re-reads what sequence 0
//! holds after each ([`Context::n_past`]); the position range of any sequence comes from
//! llama.cpp's memory itself ([`Context::seq_range`]), so the two never disagree.
//!
//! ```no_run
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions { n_seq_max: 4, ..Default::default() })?;
//! let system = model.tokenize("You are a helpful assistant.", true)?;
//! ctx.decode_prefix(&system, &[0, 1, 2, 3])?; // decoded once, held by four sequences
//! assert_eq!(ctx.seq_range(3)?, Some(0..system.len() as i32));
//! # Ok(()) }
//! ```

use std::ops::{Bound, Range, RangeBounds};

use llama_sys as sys;

use crate::batch::{Batch, MAX_SEQ, Pos, SeqId};
use crate::context::Context;
use crate::error::{Error, Reason, Result};
use crate::model::{Model, Token};
use crate::options::{ContextOptions, Opt};

/// Why a sequence operation was refused ([`Error::Sequence`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeqError {
    /// A sequence id not below the context's `n_seq_max`.
    #[error("sequence id {seq} is not below the context's n_seq_max {n_seq_max}")]
    OutOfRange {
        /// The id.
        seq: SeqId,
        /// The context's `n_seq_max`.
        n_seq_max: u32,
    },
    /// The memory cannot shift positions (llama.cpp aborts on the K-shift then): a model with
    /// multi-component positions, or sliding-window layers with a smaller cache (`swa_full`
    /// off), among others (`llama_memory_can_shift`).
    #[error("this context's memory cannot shift positions (llama_memory_can_shift is false)")]
    CannotShift,
    /// A divisor below 1.
    #[error("positions can only be divided by 1 or more, not {divisor}")]
    BadDivisor {
        /// The divisor.
        divisor: i32,
    },
    /// A range of positions that does not fit llama.cpp's `llama_pos` or is reversed.
    #[error("position range {start}..{end} is not a valid range")]
    BadRange {
        /// Its start.
        start: i64,
        /// Its end (exclusive).
        end: i64,
    },
    /// The memory refused to remove a range (a recurrent model's memory removes only whole
    /// sequences or their tail, for example).
    #[error("the memory cannot remove positions {start}..{end} of sequence {seq}")]
    RemoveRefused {
        /// The sequence.
        seq: SeqId,
        /// The range's start.
        start: Pos,
        /// Its end (`Pos::MAX`: to the end).
        end: Pos,
    },
    /// A partial copy between sequences in separate buffers (`kv_unified` off with several
    /// sequences): llama.cpp copies only whole sequences there (and asserts otherwise).
    #[error(
        "sequences {src} and {dst} are in separate cache buffers (kv_unified off): only a whole sequence can be \
         copied, not positions {start}..{end}"
    )]
    PartialCopy {
        /// The source.
        src: SeqId,
        /// The destination.
        dst: SeqId,
        /// The range's start.
        start: Pos,
        /// Its end.
        end: Pos,
    },
    /// A shift that would move a position past `llama_pos`'s range.
    #[error("shifting sequence {seq} by {delta} overflows its positions")]
    ShiftOverflow {
        /// The sequence.
        seq: SeqId,
        /// The shift.
        delta: Pos,
    },
    /// A prefix shared with no sequence.
    #[error("a shared prefix needs at least one sequence")]
    NoSequences,
}

impl From<SeqError> for Error {
    fn from(e: SeqError) -> Self {
        Error::Sequence(e)
    }
}

/// Checks the sequence-related context options that llama.cpp would abort on or refuse:
/// `n_seq_max` within 1..=[`MAX_SEQ`], and not more sequences than `n_batch` (llama.cpp
/// reserves an output row per sequence and asserts that they fit one batch:
/// `GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)` in `output_reserve`).
pub fn check_context_options(o: &ContextOptions) -> Result<()> {
    let invalid = |value: u32, max: u32, limit| Error::InvalidOption {
        option: Opt::NSeqMax,
        value: value.to_string(),
        reason: Reason::OutOfRange { value: i64::from(value), min: 1, max: i64::from(max), limit: Some(limit) },
    };
    if o.n_seq_max == 0 || o.n_seq_max > MAX_SEQ {
        return Err(invalid(o.n_seq_max, MAX_SEQ, "LLAMA_MAX_SEQ"));
    }
    if o.n_batch > 0 && o.n_seq_max > o.n_batch {
        return Err(invalid(o.n_seq_max, o.n_batch, "n_batch: one output row per sequence must fit a batch"));
    }
    Ok(())
}

/// Architectures whose attention llama.cpp makes non-causal in code, whatever the file says.
const NON_CAUSAL_ARCHS: [&str; 5] = ["gemma-embedding", "rnd1", "dream", "llada", "llada-moe"];

/// Whether the model's attention is causal (`{arch}.attention.causal`, default true; some
/// architectures are non-causal regardless). Non-causal batches must fit one micro-batch.
pub(crate) fn causal_attention(model: &Model) -> bool {
    let Some(arch) = model.meta("general.architecture") else { return true };
    if NON_CAUSAL_ARCHS.contains(&arch.as_str()) {
        return false;
    }
    model.meta(&format!("{arch}.attention.causal")).is_none_or(|v| v != "false")
}

/// Whether the model's positions have several components (M-RoPE: 4 per token), which
/// llama.cpp reads past a `llama_batch_init` position array.
pub(crate) fn multi_position(model: &Model) -> bool {
    // SAFETY: valid model.
    let rope = unsafe { sys::llama_model_rope_type(model.raw().as_ptr()) };
    rope == sys::LLAMA_ROPE_TYPE_MROPE || rope == sys::LLAMA_ROPE_TYPE_IMROPE
}

/// A position range as llama.cpp's `[p0, p1)` (p1 = -1: to the end).
fn bounds(range: &impl RangeBounds<Pos>) -> Result<(Pos, Pos)> {
    let start = match range.start_bound() {
        Bound::Included(&p) => i64::from(p),
        Bound::Excluded(&p) => i64::from(p) + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&p) => i64::from(p) + 1,
        Bound::Excluded(&p) => i64::from(p),
        Bound::Unbounded => -1,
    };
    let bad = SeqError::BadRange { start, end };
    if start < 0 || start > i64::from(Pos::MAX) || end > i64::from(Pos::MAX) || (end >= 0 && end < start) {
        return Err(bad.into());
    }
    Ok((start as Pos, end as Pos))
}

impl<'m> Context<'m> {
    fn check_seq(&self, seq: SeqId) -> Result<()> {
        let n_seq_max = self.n_seq_max();
        if seq < 0 || seq as u32 >= n_seq_max {
            return Err(SeqError::OutOfRange { seq, n_seq_max }.into());
        }
        Ok(())
    }

    /// The positions sequence `seq` holds, `first..last + 1`, or `None` when it is empty
    /// (llama.cpp's `llama_memory_seq_pos_min` / `_max`). With sliding-window attention the
    /// first position rises as old ones leave the window.
    pub fn seq_range(&self, seq: SeqId) -> Result<Option<Range<Pos>>> {
        self.check_seq(seq)?;
        Ok(self.seq_range_raw(seq).map(|(min, max)| min..max + 1))
    }

    /// The position the next token of `seq` goes to: one past its last, 0 when it is empty.
    pub fn seq_next_pos(&self, seq: SeqId) -> Result<Pos> {
        Ok(self.seq_range(seq)?.map_or(0, |r| r.end))
    }

    /// Whether the memory can shift positions ([`seq_shift`](Self::seq_shift),
    /// [`seq_divide`](Self::seq_divide)).
    pub fn can_shift(&self) -> bool {
        // SAFETY: valid memory handle.
        unsafe { sys::llama_memory_can_shift(self.memory()) }
    }

    /// Removes the positions in `range` from sequence `seq` (`..` for all of it). Fails,
    /// changing nothing, when the memory cannot remove that range (a recurrent memory keeps
    /// whole sequences). The logits of the last decode are forgotten.
    pub fn seq_remove(&mut self, seq: SeqId, range: impl RangeBounds<Pos>) -> Result<()> {
        self.check_seq(seq)?;
        let (p0, p1) = bounds(&range)?;
        let ok = self.memory_seq_rm(seq, p0, p1);
        self.after_change();
        if !ok {
            return Err(SeqError::RemoveRefused { seq, start: p0, end: if p1 < 0 { Pos::MAX } else { p1 } }.into());
        }
        Ok(())
    }

    /// Empties sequence `seq`.
    pub fn seq_clear(&mut self, seq: SeqId) -> Result<()> {
        self.seq_remove(seq, ..)
    }

    /// Makes sequence `dst` hold what `src` holds in `range` (`..`: all of it): `dst` is
    /// emptied first, then shares (unified cache) or receives a copy of (separate buffers)
    /// those cells. Sequences in separate buffers (`kv_unified` off, `n_seq_max > 1`) can only
    /// be copied whole.
    pub fn seq_copy(&mut self, src: SeqId, dst: SeqId, range: impl RangeBounds<Pos>) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        let (p0, p1) = bounds(&range)?;
        if src == dst {
            return Ok(());
        }
        let separate = !self.options().kv_unified && self.n_seq_max() > 1;
        if separate && (p0 > 0 || p1 >= 0) {
            return Err(SeqError::PartialCopy { src, dst, start: p0, end: if p1 < 0 { Pos::MAX } else { p1 } }.into());
        }
        self.memory_seq_rm(dst, -1, -1);
        let (p0, p1) = if separate { (-1, -1) } else { (p0, p1) };
        // SAFETY: valid memory; both ids are below n_seq_max; a copy across separate buffers
        // is of the whole sequence (p0 = p1 = -1), which the cache's full-copy assert accepts.
        unsafe { sys::llama_memory_seq_cp(self.memory(), src, dst, p0, p1) };
        // The last decode's logits are still those of the cells it computed.
        self.sync_seq0();
        Ok(())
    }

    /// Removes every sequence but `seq` from the cache.
    pub fn seq_keep(&mut self, seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        // SAFETY: valid memory; the id is below n_seq_max.
        unsafe { sys::llama_memory_seq_keep(self.memory(), seq) };
        self.sync_seq0();
        Ok(())
    }

    /// Adds `delta` to the positions in `range` of sequence `seq` (positions that become
    /// negative are removed), as context shifting does; the keys are re-rotated at the next
    /// decode. Needs a memory that can shift ([`can_shift`](Self::can_shift)).
    pub fn seq_shift(&mut self, seq: SeqId, range: impl RangeBounds<Pos>, delta: Pos) -> Result<()> {
        self.check_seq(seq)?;
        let (p0, p1) = bounds(&range)?;
        if !self.can_shift() {
            return Err(SeqError::CannotShift.into());
        }
        if let Some((_, max)) = self.seq_range_raw(seq)
            && max.checked_add(delta).is_none()
        {
            return Err(SeqError::ShiftOverflow { seq, delta }.into());
        }
        // SAFETY: valid memory; the id is below n_seq_max; the memory can shift (so the
        // K-shift at the next decode does not abort, and n_pos_per_embd is 1).
        unsafe { sys::llama_memory_seq_add(self.memory(), seq, p0, p1, delta) };
        self.after_change();
        Ok(())
    }

    /// Divides the positions in `range` of sequence `seq` by `divisor` (rounding down), as
    /// self-extend does. Needs a memory that can shift and a divisor of at least 1.
    pub fn seq_divide(&mut self, seq: SeqId, range: impl RangeBounds<Pos>, divisor: i32) -> Result<()> {
        self.check_seq(seq)?;
        let (p0, p1) = bounds(&range)?;
        if divisor < 1 {
            return Err(SeqError::BadDivisor { divisor }.into());
        }
        if !self.can_shift() {
            return Err(SeqError::CannotShift.into());
        }
        // SAFETY: valid memory; the id is below n_seq_max; divisor ≥ 1 (no division by zero);
        // the memory can shift.
        unsafe { sys::llama_memory_seq_div(self.memory(), seq, p0, p1, divisor) };
        self.after_change();
        Ok(())
    }

    /// Decodes `tokens` once into the first of `seqs`, appended to what it holds, and copies
    /// the result to the others ([`seq_copy`](Self::seq_copy); each of them is replaced by
    /// the first one's contents): a shared system prompt computed once. The other sequences
    /// must start out equal to the first (usually all empty) for the copy to mean "the same
    /// prefix". Logits are kept for the last token, as [`decode`](Self::decode) keeps them.
    pub fn decode_prefix(&mut self, tokens: &[Token], seqs: &[SeqId]) -> Result<()> {
        let Some(&first) = seqs.first() else { return Err(SeqError::NoSequences.into()) };
        for &s in seqs {
            self.check_seq(s)?;
        }
        if tokens.is_empty() {
            return Err(Error::EmptyInput { what: "prefix" });
        }
        let chunk = self.max_batch_tokens();
        let mut batch = Batch::new(chunk.min(tokens.len()), 1)?;
        let start = self.seq_next_pos(first)?;
        for (c, part) in tokens.chunks(chunk).enumerate() {
            batch.clear();
            let base = start + (c * chunk) as Pos;
            for (i, &t) in part.iter().enumerate() {
                let last = c * chunk + i + 1 == tokens.len();
                batch.add(t, base + i as Pos, &[first], last)?;
            }
            if let Err(e) = self.decode_batch(&batch) {
                // Undo the chunks already decoded.
                let _ = self.seq_remove(first, start..);
                return Err(e);
            }
        }
        for &s in &seqs[1..] {
            self.seq_copy(first, s, ..)?;
        }
        Ok(())
    }

    fn after_change(&mut self) {
        self.sync_seq0();
        self.drop_logits();
    }
}
