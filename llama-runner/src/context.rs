//! A context: KV cache and compute state tied to one model.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llama_sys as sys;

use crate::batch::{Batch, BatchError, Outputs, Pos, SeqId};
use crate::error::{Error, Result};
use crate::model::{Model, Token};
use crate::options::ContextOptions;

/// A llama.cpp context over a borrowed [`Model`]. Frees itself on drop.
///
/// # Threads and lifetimes
///
/// A context borrows its model, so it cannot outlive it; it may move to another thread
/// (`Send`), but it cannot be shared between threads (not `Sync`): llama.cpp allows one call at
/// a time on a context. Each `compile_fail` example below has a twin that differs only in the
/// marked line and compiles, so the failure is the one described.
///
/// Moving a context into another thread compiles:
///
/// ```no_run
/// # use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let mut ctx = Context::new(&model, &ContextOptions::default())?;
/// std::thread::scope(|s| {
///     s.spawn(move || ctx.clear()); // moved: fine
/// });
/// # Ok(()) }
/// ```
///
/// Sharing one between threads does not:
///
/// ```compile_fail
/// # use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let ctx = Context::new(&model, &ContextOptions::default())?;
/// std::thread::scope(|s| {
///     s.spawn(|| ctx.n_ctx()); // shared: `Context` is not `Sync`
///     s.spawn(|| ctx.n_ctx());
/// });
/// # Ok(()) }
/// ```
///
/// A context used while its model lives compiles:
///
/// ```no_run
/// # use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let ctx = Context::new(&model, &ContextOptions::default())?;
/// println!("{}", ctx.n_ctx());
/// drop(ctx);
/// drop(model);
/// # Ok(()) }
/// ```
///
/// A context outliving its model does not:
///
/// ```compile_fail
/// # use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let ctx = Context::new(&model, &ContextOptions::default())?;
/// drop(model); // the model goes while the context still borrows it
/// println!("{}", ctx.n_ctx());
/// # Ok(()) }
/// ```
pub struct Context<'m> {
    raw: NonNull<sys::llama_context>,
    model: &'m Model,
    options: ContextOptions,
    sampler: Sampler,
    /// Tokens currently in the KV cache (sequence 0).
    n_past: usize,
    /// Whether the last decode left logits for its last token. False on a fresh context, after
    /// [`clear`](Context::clear), [`restore_state`](Context::restore_state) and a failed
    /// decode: llama.cpp aborts (`GGML_ASSERT(logits != nullptr)`) when sampling then.
    has_logits: bool,
    /// Threadpools attached to the context; dropped after it (see `Drop`).
    _pools: Vec<ThreadPool>,
    /// The cancel flag of [`CancelHandle`]s, read by llama.cpp's abort callback: its address
    /// is the callback's data, so it lives (here) until the context is freed.
    cancel: Arc<AtomicBool>,
}

/// A handle that cancels the prompt evaluation or generation running on a [`Context`], from
/// any thread ([`Context::cancel_handle`]).
///
/// [`cancel`](Self::cancel) sets a flag that the context reads before each llama.cpp decode
/// call and that llama.cpp's abort callback reads between the nodes of each compute graph (the
/// CPU backend consults it there; GPU backends do not, so on them a decode already running
/// finishes and the next chunk or token is not started). The call that sees it returns
/// [`Error::Aborted`] and clears the flag; the cache is left as it was before the call (see
/// [`Context::decode`]).
///
/// A cancel that arrives while nothing runs is not lost: the next decode (or the next
/// [`Stream`](crate::stream::Stream) step) returns [`Error::Aborted`] at once, without touching
/// the cache.
///
/// ```no_run
/// # use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions};
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
/// let mut ctx = Context::new(&model, &ContextOptions::default())?;
/// let cancel = ctx.cancel_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_millis(100));
///     cancel.cancel();
/// });
/// let prompt = model.tokenize(&"a long document ".repeat(200), true)?;
/// match ctx.decode(&prompt) {
///     Err(Error::Aborted) => assert_eq!(ctx.n_past(), 0), // as before the call
///     other => other?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Asks the context to stop the running (or else the next) decode.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a cancel is pending: asked for, and not yet consumed by a call that returned
    /// [`Error::Aborted`].
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Withdraws a pending cancel (one asked for after the work it was meant for had ended),
    /// so that it does not stop the next call.
    pub fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle").field("cancelled", &self.is_cancelled()).finish()
    }
}

/// llama.cpp's abort callback (`ggml_abort_callback`): true asks the compute to stop. It only
/// loads an atomic, so it cannot unwind into C.
extern "C" fn abort_requested(data: *mut c_void) -> bool {
    // SAFETY: `data` is `Arc::as_ptr` of the context's `cancel` flag, which the context keeps
    // alive until after `llama_free`, so it is valid whenever llama.cpp calls this.
    unsafe { (*data.cast::<AtomicBool>()).load(Ordering::Relaxed) }
}

// SAFETY: llama.cpp keeps no thread affinity in a context: llama-server creates contexts on one
// thread and decodes on another, and the ggml threadpools and the sampler it owns are plain heap
// objects (the pool's workers synchronise through atomics). What llama.cpp does not allow is two
// calls on one context at the same time; `Context` is therefore not `Sync` (the raw pointer
// keeps the auto trait off), every mutating method takes `&mut self`, and the `&self` methods
// only read sizes and counters. The borrowed `Model` is `Sync` (see there).
unsafe impl Send for Context<'_> {}

/// A saved KV cache state of sequence 0 ([`Context::save_state`]), restorable into a context of
/// the same model ([`Context::restore_state`]). Opaque: its bytes are llama.cpp's own format,
/// which llama.cpp does not check thoroughly enough to take from untrusted sources.
#[derive(Clone)]
pub struct SavedState {
    data: Vec<u8>,
    /// The id of the model it was saved from.
    model: u64,
    n_tokens: usize,
}

impl SavedState {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the state holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Tokens the cache held when it was saved.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }
}

impl std::fmt::Debug for SavedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedState").field("bytes", &self.data.len()).field("n_tokens", &self.n_tokens).finish()
    }
}

/// The result of a greedy generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids (the end-of-generation token, if reached, is not included).
    pub tokens: Vec<Token>,
    /// Whether generation stopped at an end-of-generation token.
    pub stopped_at_eog: bool,
    /// Prompt tokens processed.
    pub n_prompt: usize,
    /// Wall time of prompt processing (chunks of n_batch, one sync at the end).
    pub prompt_time: Duration,
    /// Wall time of generation (one token at a time, sampling included).
    pub gen_time: Duration,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        rate(self.n_prompt, self.prompt_time)
    }
    /// Generated tokens per second.
    pub fn gen_tps(&self) -> f64 {
        rate(self.tokens.len(), self.gen_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() { 0.0 } else { n as f64 / t.as_secs_f64() }
}

/// llama.cpp's own counters (`llama_perf_context`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerfCounters {
    /// Milliseconds of prompt evaluation.
    pub prompt_ms: f64,
    /// Prompt tokens evaluated.
    pub n_prompt: i32,
    /// Milliseconds of single-token evaluation.
    pub eval_ms: f64,
    /// Single tokens evaluated.
    pub n_eval: i32,
    /// Graph reuses.
    pub n_reused: i32,
}

impl<'m> Context<'m> {
    /// Creates a context. Options are validated against the model first, so combinations that
    /// llama.cpp would reject or abort on get a clear error.
    pub fn new(model: &'m Model, options: &ContextOptions) -> Result<Context<'m>> {
        let checked = crate::validate::context_options(model, options)?;
        crate::sequences::check_context_options(options)?;
        let params = crate::params::context_params(options)?;
        crate::memory::check(model, params)?;
        let sampler = Sampler::greedy()?;
        crate::logging::clear_errors();
        let raw = {
            // Context creation reads the model's adapter set (reserving the graph).
            let _adapters = crate::adapter::adapters_read();
            // SAFETY: the model is valid and outlives the context (borrow); params hold no
            // pointers; no adapter of the model is being loaded or freed (the lock).
            unsafe { sys::llama_init_from_model(model.raw().as_ptr(), params) }
        };
        let log = crate::logging::take_errors();
        // Owned before a logger's panic may be resumed or a threadpool fails, so that either
        // frees it.
        let ctx = NonNull::new(raw).map(|raw| Context {
            raw,
            model,
            options: options.clone(),
            sampler,
            n_past: 0,
            has_logits: false,
            _pools: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        crate::logging::resume_panic();
        let mut ctx = ctx.ok_or(Error::ContextCreate { log })?;
        ctx.attach_threadpools(&checked)?;
        let flag = Arc::as_ptr(&ctx.cancel).cast_mut().cast::<c_void>();
        // SAFETY: valid context; the callback only reads the atomic behind `flag`, which the
        // context owns (`cancel`) and frees only after llama_free (fields drop after `Drop`).
        unsafe { sys::llama_set_abort_callback(ctx.raw.as_ptr(), Some(abort_requested), flag) };
        Ok(ctx)
    }

    /// Creates the CPU threadpools (one, or two when prompt and generation thread counts
    /// differ) with the placement options and attaches them, as llama-bench does.
    fn attach_threadpools(&mut self, checked: &crate::validate::CheckedContextOptions<'_>) -> Result<()> {
        let (n, n_batch, mask) = (checked.n_threads, checked.n_threads_batch, checked.cpu_mask.as_ref());
        let placement = &checked.options.placement;
        let pool = ThreadPool::new(n, mask, placement)?;
        let batch = (n_batch != n).then(|| ThreadPool::new(n_batch, mask, placement)).transpose()?;
        // SAFETY: valid context and pools; the pools are kept in `self._pools` and freed only
        // after the context (Drop frees the context first).
        unsafe {
            sys::llama_attach_threadpool(
                self.raw.as_ptr(),
                pool.0.as_ptr(),
                batch.as_ref().map_or(std::ptr::null_mut(), |b| b.0.as_ptr()),
            )
        };
        self._pools.push(pool);
        self._pools.extend(batch);
        Ok(())
    }

    /// The raw `llama_context`, for calls this crate does not wrap.
    ///
    /// # Safety
    ///
    /// The pointer is valid while `self` lives. The caller must not free it, must not use it
    /// from another thread while `self` is in use, and must leave the context as this type
    /// expects it: a call that changes the KV cache or the outputs (decode, memory operations,
    /// state loads) through the pointer makes [`n_past`](Self::n_past) and the logits check of
    /// [`sample_greedy`](Self::sample_greedy) wrong, so do such calls only through this type.
    pub unsafe fn as_ptr(&self) -> *mut sys::llama_context {
        self.raw.as_ptr()
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The options it was created with.
    pub fn options(&self) -> &ContextOptions {
        &self.options
    }

    /// Actual context size (llama.cpp may round it).
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { sys::llama_n_ctx(self.raw.as_ptr()) }
    }

    /// Actual logical batch size (llama.cpp clamps it to the context size).
    pub fn n_batch(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { sys::llama_n_batch(self.raw.as_ptr()) }
    }

    /// Actual micro-batch size.
    pub fn n_ubatch(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { sys::llama_n_ubatch(self.raw.as_ptr()) }
    }

    /// Sequences the context holds (`n_seq_max`): sequence ids are `0..n_seq_max`.
    pub fn n_seq_max(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { sys::llama_n_seq_max(self.raw.as_ptr()) }
    }

    /// Cells one sequence can use: the context size, or its share of it (`n_ctx / n_seq_max`,
    /// rounded by llama.cpp) when the sequences do not share one unified buffer.
    pub fn n_ctx_seq(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { sys::llama_n_ctx_seq(self.raw.as_ptr()) }
    }

    /// The most tokens one decode takes: `n_batch`, or `n_ubatch` for a model with non-causal
    /// attention (llama.cpp asserts that such a batch fits one micro-batch).
    pub fn max_batch_tokens(&self) -> usize {
        let n_batch = self.n_batch().max(1) as usize;
        if crate::sequences::causal_attention(self.model) {
            n_batch
        } else {
            n_batch.min(self.n_ubatch().max(1) as usize)
        }
    }

    /// Tokens in the KV cache of sequence 0 (one past its last position).
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Saves the state (KV cache) of sequence 0, to restore it later with
    /// [`restore_state`](Self::restore_state) instead of recomputing it.
    pub fn save_state(&mut self) -> SavedState {
        // SAFETY: valid context; sequence 0 exists.
        let size = unsafe { sys::llama_state_seq_get_size(self.raw.as_ptr(), 0) };
        let mut data = vec![0u8; size];
        // SAFETY: the buffer is valid for `size` bytes.
        let written = unsafe { sys::llama_state_seq_get_data(self.raw.as_ptr(), data.as_mut_ptr(), data.len(), 0) };
        data.truncate(written);
        SavedState { data, model: self.model.id(), n_tokens: self.n_past }
    }

    /// Replaces the KV cache with a state saved by [`save_state`](Self::save_state) from a
    /// context of the same model. Afterwards [`n_past`](Self::n_past) is what llama.cpp reports
    /// the restored cache to hold (its position range), and there are no logits until the next
    /// decode. On failure the cache is empty.
    pub fn restore_state(&mut self, state: &SavedState) -> Result<()> {
        if state.model != self.model.id() {
            return Err(Error::StateRestore { reason: "the state was saved from a context of another model".into() });
        }
        self.clear();
        crate::logging::clear_errors();
        // SAFETY: valid context; the buffer is valid for its length; it was written by
        // llama_state_seq_get_data for this model, and llama.cpp checks it against this context
        // (returning 0 on a mismatch, such as too few free cells).
        let read =
            unsafe { sys::llama_state_seq_set_data(self.raw.as_ptr(), state.data.as_ptr(), state.data.len(), 0) };
        if read == 0 && !state.data.is_empty() {
            let log = crate::logging::take_errors();
            self.clear();
            return Err(Error::StateRestore {
                reason: if log.is_empty() { "llama.cpp rejected the saved state".into() } else { log.join("; ") },
            });
        }
        self.n_past = self.cached_tokens();
        Ok(())
    }

    /// The raw context for this crate's own wrappers (samplers), which keep its invariants.
    #[allow(dead_code)]
    pub(crate) fn raw(&self) -> NonNull<sys::llama_context> {
        self.raw
    }

    /// Whether the last decode left logits for its last token (see [`Error::NoLogits`]).
    pub fn has_logits(&self) -> bool {
        self.has_logits
    }

    /// How many tokens sequence 0 holds, from llama.cpp's memory (`llama_memory_seq_pos_max`).
    fn cached_tokens(&self) -> usize {
        // SAFETY: valid context; the memory handle belongs to it.
        let max = unsafe { sys::llama_memory_seq_pos_max(sys::llama_get_memory(self.raw.as_ptr()), 0) };
        usize::try_from(max + 1).unwrap_or(0)
    }

    /// Empties the KV cache (as llama-bench does before every repetition).
    pub fn clear(&mut self) {
        // SAFETY: valid context; the memory handle belongs to it.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.raw.as_ptr()), false) };
        self.n_past = 0;
        self.has_logits = false;
    }

    /// A handle that cancels this context's running (or next) decode from another thread; all
    /// handles of a context share one flag. See [`CancelHandle`].
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(Arc::clone(&self.cancel))
    }

    /// Consumes a pending cancel: true (and the flag cleared) when one was asked for.
    pub(crate) fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::Relaxed)
    }

    /// Appends tokens to the KV cache in chunks of `n_batch`, with one synchronisation at the
    /// end. Logits are kept for the last token.
    ///
    /// A call that fails leaves the cache as it was before it: llama.cpp removes the positions
    /// of a failed micro-batch itself, and this removes those of the chunks and micro-batches
    /// the call had already added (`llama_memory_seq_rm`), so [`n_past`](Self::n_past) is
    /// again what the memory holds. (A memory that cannot remove a range, a recurrent model's,
    /// is cleared instead.) A call cancelled through a [`CancelHandle`] returns
    /// [`Error::Aborted`]; when the cancel was pending before llama.cpp was called, nothing
    /// changed, logits included; when it stopped llama.cpp's compute, there are no logits.
    pub fn decode(&mut self, tokens: &[Token]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::EmptyInput { what: "tokens to decode" });
        }
        self.check_room(tokens.len())?;
        let n_vocab = self.model.n_vocab();
        if let Some(&token) = tokens.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(Error::InvalidToken { token, n_vocab });
        }
        if self.take_cancel() {
            return Err(Error::Aborted);
        }
        let chunk = self.max_batch_tokens();
        let start = self.n_past;
        self.has_logits = false;
        for (i, part) in tokens.chunks(chunk).enumerate() {
            if i > 0 && self.take_cancel() {
                self.roll_back(start);
                return Err(Error::Aborted);
            }
            // llama_batch_get_one only reads the tokens despite the `*mut` in its signature.
            // SAFETY: `part` is valid for its length, which is ≤ n_batch (larger batches abort),
            // and ≤ n_ubatch for non-causal attention (which asserts it).
            let batch = unsafe { sys::llama_batch_get_one(part.as_ptr().cast_mut(), part.len() as i32) };
            let _adapters = crate::adapter::adapters_read();
            // SAFETY: valid context and batch; the batch's token memory outlives the call; no
            // adapter of the model is being loaded or freed (the lock: a decode may reserve the
            // graph, which reads the model's adapter set).
            let status = unsafe { sys::llama_decode(self.raw.as_ptr(), batch) };
            if status == 0 {
                self.n_past += part.len();
            } else {
                self.roll_back(start);
                if status == 2 {
                    // Consumed: the flag was what stopped the compute.
                    self.cancel.store(false, Ordering::Relaxed);
                }
            }
            crate::logging::resume_panic();
            match status {
                0 => {}
                2 => return Err(Error::Aborted),
                _ => return Err(decode_error(status)),
            }
        }
        self.synchronize();
        // llama_batch_get_one asks for the logits of the last token of each chunk.
        self.has_logits = true;
        Ok(())
    }

    /// Removes every position from `start` on from sequence 0, so the cache holds what it held
    /// when it held `start` tokens; clears the cache when the memory cannot remove a range.
    fn roll_back(&mut self, start: usize) {
        let pos = i32::try_from(start).unwrap_or(i32::MAX);
        // SAFETY: valid context; the memory handle belongs to it; -1 means "to the end".
        let removed = unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.raw.as_ptr()), 0, pos, -1) };
        if removed && self.cached_tokens() == start {
            self.n_past = start;
        } else {
            self.clear();
        }
        self.has_logits = false;
    }

    /// Waits for queued work to finish.
    pub fn synchronize(&mut self) {
        // SAFETY: valid context.
        unsafe { sys::llama_synchronize(self.raw.as_ptr()) };
    }

    /// Picks the most likely next token from the last decoded position (greedy).
    ///
    /// Fails with [`Error::NoLogits`] when there is nothing to sample from: on a fresh context,
    /// after [`clear`](Self::clear) or [`restore_state`](Self::restore_state), and after a
    /// failed decode.
    pub fn sample_greedy(&mut self) -> Result<Token> {
        if !self.has_logits {
            return Err(Error::NoLogits);
        }
        // SAFETY: valid context and sampler; the last decode succeeded and produced logits for
        // its last token, which idx -1 selects.
        Ok(unsafe { sys::llama_sampler_sample(self.sampler.raw.as_ptr(), self.raw.as_ptr(), -1) })
    }

    /// Processes `prompt` (appended to what the cache holds) and then generates up to
    /// `max_tokens` tokens greedily, stopping early at an end-of-generation token.
    pub fn generate_greedy(&mut self, prompt: &[Token], max_tokens: usize) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(Error::EmptyInput { what: "prompt" });
        }
        self.check_room(prompt.len() + max_tokens.saturating_sub(1))?;
        let t0 = Instant::now();
        self.decode(prompt)?;
        let prompt_time = t0.elapsed();

        let t1 = Instant::now();
        let mut tokens = Vec::with_capacity(max_tokens);
        let mut stopped_at_eog = false;
        for i in 0..max_tokens {
            let t = self.sample_greedy()?;
            if self.model.is_eog(t) {
                stopped_at_eog = true;
                break;
            }
            tokens.push(t);
            if i + 1 < max_tokens {
                self.decode(&[t])?;
            }
        }
        Ok(Generation { tokens, stopped_at_eog, n_prompt: prompt.len(), prompt_time, gen_time: t1.elapsed() })
    }

    /// Decodes a [`Batch`]: tokens (or embeddings) of any sequences at the positions it gives,
    /// and returns the logits of the tokens whose output flag was on, by batch index.
    ///
    /// Everything llama.cpp would refuse or abort on is checked first and reported as
    /// [`Error::Batch`]: an empty batch, more tokens than [`max_batch_tokens`](Self::max_batch_tokens)
    /// (larger batches are refused, not split: their outputs would not survive the split),
    /// sequence ids not below [`n_seq_max`](Self::n_seq_max), tokens outside the vocabulary,
    /// an embedding width that is not the model's, and positions that do not continue each
    /// sequence's cache (the first position of a sequence in the batch must be one past its
    /// last cached one, its positions continuous and non-decreasing; tokens shared by several
    /// sequences need caches that agree). Models with multi-component positions (M-RoPE) are
    /// refused.
    ///
    /// A failed or cancelled decode leaves every sequence of the batch as it was before the
    /// call (positions the call added are removed again; a sequence whose range cannot be
    /// removed, in a recurrent memory, is cleared), as [`decode`](Self::decode) does.
    /// Afterwards [`n_past`](Self::n_past) follows sequence 0, and [`sample_greedy`](Self::sample_greedy)
    /// and [`Sampler::sample`](crate::Sampler::sample) sample from the batch's last output.
    pub fn decode_batch(&mut self, batch: &Batch) -> Result<Outputs<'_, 'm>> {
        if batch.is_empty() {
            return Err(BatchError::Empty.into());
        }
        if crate::sequences::multi_position(self.model) {
            return Err(BatchError::MultiPosition.into());
        }
        if let Some(width) = batch.embd_width() {
            // SAFETY: valid model.
            let n_embd = unsafe { sys::llama_model_n_embd_inp(self.model.raw().as_ptr()) }.max(0) as usize;
            if width != n_embd {
                return Err(BatchError::EmbdWidthModel { width, n_embd }.into());
            }
        }
        let max = self.max_batch_tokens();
        if batch.len() > max {
            let limit = if max < self.n_batch() as usize { "n_ubatch, non-causal attention" } else { "n_batch" };
            return Err(BatchError::TooLarge { n_tokens: batch.len(), max, limit }.into());
        }
        let n_seq_max = self.n_seq_max();
        batch.check_against(n_seq_max, self.model.n_vocab(), |s| self.seq_range_raw(s))?;
        if self.take_cancel() {
            return Err(Error::Aborted);
        }
        let mut seqs: Vec<SeqId> = (0..batch.len()).flat_map(|i| batch.seq_ids(i).unwrap_or(&[]).to_vec()).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let before: Vec<(SeqId, Option<(Pos, Pos)>)> = seqs.iter().map(|&s| (s, self.seq_range_raw(s))).collect();
        self.has_logits = false;
        let adapters = crate::adapter::adapters_read();
        // SAFETY: valid context; the batch's arrays are valid for its n_tokens entries (Batch's
        // invariant) and every check llama_batch_allocr::init and llama_decode make (or assert)
        // was made above; no adapter of the model is being loaded or freed (the lock).
        let status = unsafe { sys::llama_decode(self.raw.as_ptr(), batch.raw()) };
        drop(adapters);
        if status != 0 {
            for (seq, range) in before {
                let from = range.map_or(0, |(_, max)| max + 1);
                if !self.memory_seq_rm(seq, from, -1) {
                    self.memory_seq_rm(seq, -1, -1);
                }
            }
            if status == 2 {
                self.cancel.store(false, Ordering::Relaxed);
            }
        }
        self.sync_seq0();
        crate::logging::resume_panic();
        match status {
            0 => {}
            2 => return Err(Error::Aborted),
            _ => return Err(decode_error(status)),
        }
        self.has_logits = batch.output_indices().last().is_some();
        Ok(Outputs::new(self, batch))
    }

    /// The memory handle.
    pub(crate) fn memory(&self) -> sys::llama_memory_t {
        // SAFETY: valid context; the handle belongs to it and lives as long.
        unsafe { sys::llama_get_memory(self.raw.as_ptr()) }
    }

    /// `llama_memory_seq_rm` for a sequence id below n_seq_max (or -1: all).
    pub(crate) fn memory_seq_rm(&mut self, seq: SeqId, p0: Pos, p1: Pos) -> bool {
        debug_assert!(seq >= -1 && seq < self.n_seq_max() as SeqId);
        // SAFETY: valid memory; the id is -1 or below n_seq_max, which the cache's asserts accept.
        unsafe { sys::llama_memory_seq_rm(self.memory(), seq, p0, p1) }
    }

    /// The (first, last) positions sequence `seq` (below n_seq_max) holds, `None` when empty.
    pub(crate) fn seq_range_raw(&self, seq: SeqId) -> Option<(Pos, Pos)> {
        let mem = self.memory();
        // SAFETY: valid memory; `seq` is below n_seq_max (callers check), as its asserts need.
        let (min, max) = unsafe { (sys::llama_memory_seq_pos_min(mem, seq), sys::llama_memory_seq_pos_max(mem, seq)) };
        (min >= 0 && max >= 0).then_some((min, max))
    }

    /// Re-reads what sequence 0 holds into [`n_past`](Self::n_past), after an operation that
    /// may have changed it.
    pub(crate) fn sync_seq0(&mut self) {
        self.n_past = self.cached_tokens();
    }

    /// Forgets the logits of the last decode (the cache they came from changed).
    pub(crate) fn drop_logits(&mut self) {
        self.has_logits = false;
    }

    /// llama.cpp's own timing counters since the last [`reset_perf`](Self::reset_perf).
    pub fn perf(&self) -> PerfCounters {
        // SAFETY: valid context.
        let d = unsafe { sys::llama_perf_context(self.raw.as_ptr()) };
        PerfCounters {
            prompt_ms: d.t_p_eval_ms,
            n_prompt: d.n_p_eval,
            eval_ms: d.t_eval_ms,
            n_eval: d.n_eval,
            n_reused: d.n_reused,
        }
    }

    /// Resets llama.cpp's timing counters.
    pub fn reset_perf(&mut self) {
        // SAFETY: valid context.
        unsafe { sys::llama_perf_context_reset(self.raw.as_ptr()) };
    }

    fn check_room(&self, needed: usize) -> Result<()> {
        let n_ctx = self.n_ctx_seq();
        if self.n_past + needed > n_ctx as usize {
            return Err(Error::ContextFull { needed, used: self.n_past, n_ctx });
        }
        Ok(())
    }
}

fn decode_error(status: i32) -> Error {
    let meaning = match status {
        1 => "no KV cache slot for the batch (context full)",
        2 => "aborted",
        -1 => "invalid batch",
        _ => "fatal error during compute",
    };
    Error::Decode { status, meaning }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model and freed once.
        unsafe { sys::llama_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("options", &self.options).field("n_past", &self.n_past).finish_non_exhaustive()
    }
}

/// A ggml CPU threadpool owned by a context.
struct ThreadPool(NonNull<sys::ggml_threadpool>);

impl ThreadPool {
    fn new(
        n_threads: u32,
        mask: Option<&crate::options::CpuMask>,
        placement: &crate::options::ThreadPlacement,
    ) -> Result<ThreadPool> {
        let mut params = crate::params::threadpool_params_checked(n_threads, mask, placement)?;
        // SAFETY: `params` is a fully initialised struct that ggml copies.
        let raw = unsafe { sys::ggml_threadpool_new(&mut params) };
        NonNull::new(raw).map(ThreadPool).ok_or_else(|| Error::ContextCreate {
            log: vec![format!("ggml_threadpool_new({n_threads} threads) failed")],
        })
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // SAFETY: created by ggml_threadpool_new, freed once, after the context using it.
        unsafe { sys::ggml_threadpool_free(self.0.as_ptr()) }
    }
}

/// A sampler chain owned by a context.
struct Sampler {
    raw: NonNull<sys::llama_sampler>,
}

impl Sampler {
    fn greedy() -> Result<Sampler> {
        // SAFETY: a plain constructor.
        let chain = unsafe { sys::llama_sampler_chain_init(sys::llama_sampler_chain_default_params()) };
        let chain = NonNull::new(chain).ok_or(Error::ContextCreate { log: vec!["no sampler chain".into()] })?;
        // SAFETY: a plain constructor.
        let greedy = unsafe { sys::llama_sampler_init_greedy() };
        if greedy.is_null() {
            // SAFETY: created above and freed once.
            unsafe { sys::llama_sampler_free(chain.as_ptr()) };
            return Err(Error::ContextCreate { log: vec!["no greedy sampler".into()] });
        }
        // SAFETY: both are valid; the chain takes ownership of the greedy sampler.
        unsafe { sys::llama_sampler_chain_add(chain.as_ptr(), greedy) };
        Ok(Sampler { raw: chain })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_chain_init, freed once (frees its members too).
        unsafe { sys::llama_sampler_free(self.raw.as_ptr()) }
    }
}
