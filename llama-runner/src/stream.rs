//! Streaming generation: an [`Iterator`] of [`Event`]s that yields each token with its text as
//! soon as that text is complete, and stops on the [`StopConditions`].
//!
//! ```no_run
//! use llama_runner::stream::{Event, StopConditions};
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Sampler};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
//! let mut sampler = Sampler::greedy(&model)?;
//! let prompt = model.tokenize("Once upon a time", true)?;
//! let stop = StopConditions { max_tokens: 64, stop_strings: vec!["\n\n".into()], ..Default::default() };
//! for event in ctx.stream(&mut sampler, &prompt, stop)? {
//!     match event? {
//!         Event::Token { text, .. } | Event::Flush { text } => print!("{text}"),
//!         Event::Done { generation, reason } => {
//!             println!("\n[{reason:?}, {:.1} tokens/s]", generation.gen_tps())
//!         }
//!         _ => {} // `Event` is non-exhaustive: later versions may add events
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Text. A token's piece is bytes (`llama_token_to_piece`, special tokens not rendered, as
//! llama.cpp's tools print by default), and a code point may span tokens: bytes are held back
//! until their code point is complete, so no piece splits one. Invalid sequences become U+FFFD
//! exactly as [`String::from_utf8_lossy`] replaces them, so the text of all events together is
//! the lossy decoding of the bytes of all tokens. Text that may be the start of a stop string
//! is held back too, and released when it turns out not to be one; at the end what is still
//! held is released in one [`Event::Flush`] (an incomplete code point as U+FFFD).

use std::collections::VecDeque;
use std::ffi::c_char;
use std::time::{Duration, Instant};

use llama_sys as sys;

use crate::batch::{Batch, Outputs, Pos};
use crate::context::{Context, Generation};
use crate::error::{Error, Result};
use crate::model::{Model, Token};
use crate::sampling::Sampler;
use crate::speculative::{Drafter, SpecStats};

/// When a [`Stream`] stops. The default: no budget of its own (the context's size is the
/// limit), stop at end of generation, no stop strings or tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopConditions {
    /// At most this many tokens are generated (`-n`); `usize::MAX`: until another condition or
    /// a full context.
    pub max_tokens: usize,
    /// Do not stop at end-of-generation tokens: they are generated (and count) like any other
    /// token (`--ignore-eos` also bans them in the sampler: [`Sampler::ignore_eos`], which is
    /// honoured as well).
    pub ignore_eos: bool,
    /// Stop when the text contains one of these, matched across token boundaries; the stop
    /// string and anything after it is not emitted. None may be empty.
    pub stop_strings: Vec<String>,
    /// Stop when one of these tokens is sampled; the token is neither emitted nor counted, as
    /// an end-of-generation token is not.
    pub stop_tokens: Vec<Token>,
}

impl Default for StopConditions {
    fn default() -> Self {
        StopConditions { max_tokens: usize::MAX, ignore_eos: false, stop_strings: Vec::new(), stop_tokens: Vec::new() }
    }
}

impl StopConditions {
    /// At most `max_tokens` tokens, the other conditions off.
    pub fn max_tokens(max_tokens: usize) -> Self {
        StopConditions { max_tokens, ..Default::default() }
    }
}

/// Why a [`Stream`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// An end-of-generation token was sampled (not emitted).
    EndOfGeneration(Token),
    /// The token budget ([`StopConditions::max_tokens`]) was reached.
    MaxTokens,
    /// The text reached the stop string of this index in [`StopConditions::stop_strings`].
    StopString(usize),
    /// A token of [`StopConditions::stop_tokens`] was sampled (not emitted).
    StopToken(Token),
    /// The context has no cell left for the next token.
    ContextFull,
}

/// One step of a [`Stream`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A generated token, and the text that became complete with it: possibly empty (bytes of
    /// an incomplete code point, text that may start a stop string, a special token), possibly
    /// more than its own piece (text held back before).
    Token {
        /// The token id.
        id: Token,
        /// Complete UTF-8 text released with it.
        text: String,
    },
    /// Text still held back when generation ended (the start of a stop string that did not
    /// complete, an incomplete code point as U+FFFD); at most once, just before
    /// [`Done`](Event::Done).
    Flush {
        /// The text.
        text: String,
    },
    /// The last event: the statistics and why generation stopped.
    Done {
        /// Tokens, counts and timings (as [`Context::generate_greedy`] reports them;
        /// [`Generation::stopped_at_eog`] is true for [`StopReason::EndOfGeneration`]).
        generation: Generation,
        /// Why it stopped.
        reason: StopReason,
    },
}

impl Event {
    /// The text the event carries (empty for [`Done`](Event::Done)).
    pub fn text(&self) -> &str {
        match self {
            Event::Token { text, .. } | Event::Flush { text } => text,
            Event::Done { .. } => "",
        }
    }
}

/// A running generation ([`Context::stream`]): yields [`Event`]s, ending with
/// [`Event::Done`] or an error, after which it yields nothing.
///
/// Each step decodes the previous token, samples the next and checks the stop conditions;
/// the last token sampled is not decoded (as in [`Context::generate_greedy`]), so afterwards
/// the cache holds the prompt and every generated token but the last. A step cancelled through
/// the context's [`CancelHandle`](crate::context::CancelHandle) returns [`Error::Aborted`]; the
/// token it was decoding (the last one emitted) is then not in the cache, the others are, and
/// the sampler has accepted all emitted tokens. Dropping a stream early is fine: the cache
/// holds what was decoded.
pub struct Stream<'s, 'm> {
    ctx: &'s mut Context<'m>,
    /// The sampler, whatever the lifetime of its model borrow (`&mut` would make it invariant).
    sampler: &'s mut (dyn Pick + 's),
    stop: StopConditions,
    ignore_eos: bool,
    /// The last token emitted, decoded at the start of the next step.
    to_decode: Option<Token>,
    text: TextOut,
    tokens: Vec<Token>,
    n_prompt: usize,
    prompt_time: Duration,
    gen_start: Instant,
    queue: VecDeque<Event>,
    finished: bool,
    /// Drafting and verification, for [`Context::stream_speculative`].
    spec: Option<Speculation<'s>>,
}

/// What a speculative [`Stream`] keeps.
struct Speculation<'s> {
    drafter: &'s mut (dyn Drafter + 's),
    /// What the drafter sees: the tokens before the prompt, the prompt, every emitted token.
    history: Vec<Token>,
    batch: Batch,
    stats: SpecStats,
}

/// What a [`Stream`] needs of its [`Sampler`].
trait Pick {
    fn pick(&mut self, ctx: &mut Context<'_>) -> Result<Token>;
    fn pick_at(&mut self, out: &Outputs<'_, '_>, index: usize) -> Result<Token>;
}

impl Pick for Sampler<'_> {
    fn pick(&mut self, ctx: &mut Context<'_>) -> Result<Token> {
        self.sample(ctx)
    }

    fn pick_at(&mut self, out: &Outputs<'_, '_>, index: usize) -> Result<Token> {
        out.sample(self, index)
    }
}

impl<'m> Context<'m> {
    /// Processes `prompt` (appended to what the cache holds, as [`decode`](Self::decode) does)
    /// and returns the generation as a [`Stream`] of events, sampled with `sampler` (each
    /// token accepted once; the prompt is not fed to it) and stopped by `stop`.
    ///
    /// Fails before anything is decoded for an empty prompt, a prompt that does not fit, a
    /// sampler of another model, an empty stop string or a stop token outside the vocabulary;
    /// a cancelled prompt evaluation returns [`Error::Aborted`] with the cache as before.
    pub fn stream<'s>(
        &'s mut self,
        sampler: &'s mut Sampler<'_>,
        prompt: &[Token],
        stop: StopConditions,
    ) -> Result<Stream<'s, 'm>> {
        if self.model().id() != sampler.model().id() {
            return Err(Error::SamplerModelMismatch);
        }
        // The stream turns tokens into text, which llama.cpp asserts on without a vocabulary:
        // checked once here, not per token.
        self.model().check_vocab()?;
        if prompt.is_empty() {
            return Err(Error::EmptyInput { what: "prompt" });
        }
        if stop.stop_strings.iter().any(String::is_empty) {
            return Err(Error::EmptyStopString);
        }
        let n_vocab = self.model().n_vocab();
        if let Some(&token) = stop.stop_tokens.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(Error::InvalidToken { token, n_vocab });
        }
        let t0 = Instant::now();
        self.decode(prompt)?;
        let prompt_time = t0.elapsed();
        let ignore_eos = stop.ignore_eos || sampler.ignore_eos();
        let text = TextOut::new(stop.stop_strings.clone());
        Ok(Stream {
            ctx: self,
            sampler,
            stop,
            ignore_eos,
            to_decode: None,
            text,
            tokens: Vec::new(),
            n_prompt: prompt.len(),
            prompt_time,
            gen_start: Instant::now(),
            queue: VecDeque::new(),
            finished: false,
            spec: None,
        })
    }

    /// [`stream`](Self::stream) with speculative decoding: each step asks `drafter` for up to
    /// its `n_max` tokens to follow the text so far (`before`, then `prompt`, then what was
    /// generated; `before` is typically what the cache held before `prompt`, for a drafter
    /// that looks back, and may be empty), decodes the last token and the draft in one batch,
    /// and samples position after position from that batch's logits with `sampler`, going on
    /// while the sampled token is the draft's.
    ///
    /// The acceptance rule is llama.cpp's (`common_sampler_sample_and_accept_n`): every
    /// emitted token is sampled by the chain from the target's logits at its position, exactly
    /// as the plain stream samples it, so the output follows the target's distribution whatever
    /// the drafter proposes (for a draft that is one token per position, as n-gram lookup and
    /// a greedy draft model give, this is the speculative-sampling papers' rejection rule:
    /// accept draft token `d` with probability `p(d)`, else draw from `p` without `d`). With
    /// the same seed it emits the plain stream's tokens, wherever the batch's logits equal
    /// single-token decodes' (llama.cpp's CPU kernels do not promise that). Cache positions of
    /// rejected draft tokens are removed again; the sampler accepts each emitted token once
    /// and nothing else, so grammars and penalties need no rollback.
    ///
    /// Stop conditions, cancellation and the cache afterwards are as for `stream` (a step is
    /// one verification batch: its tokens are queued together). The statistics are in
    /// [`Stream::speculation`]. Fails as `stream` does, and with [`Error::Speculative`] for a
    /// drafter whose `n_min` is above its `n_max`, or whose `n_max` is 0.
    pub fn stream_speculative<'s>(
        &'s mut self,
        sampler: &'s mut Sampler<'_>,
        before: &[Token],
        prompt: &[Token],
        stop: StopConditions,
        drafter: &'s mut (dyn Drafter + 's),
    ) -> Result<Stream<'s, 'm>> {
        let (n_min, n_max) = (drafter.n_min(), drafter.n_max());
        if n_max == 0 || n_min > n_max {
            return Err(Error::Speculative {
                problem: format!("the drafter's limits: n_min {n_min} and n_max {n_max} (1 <= n_min <= n_max)"),
            });
        }
        let n_vocab = self.model().n_vocab();
        if let Some(&token) = before.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(Error::InvalidToken { token, n_vocab });
        }
        // The draft and the token before it in one batch, within what a decode takes.
        let n_max = n_max.min(self.max_batch_tokens().saturating_sub(1)).max(1);
        let batch = Batch::new(n_max + 1, 1)?;
        let mut history = Vec::with_capacity(before.len() + prompt.len() + 256);
        history.extend_from_slice(before);
        history.extend_from_slice(prompt);
        let mut stream = self.stream(sampler, prompt, stop)?;
        drafter.begin(&history);
        stream.spec = Some(Speculation { drafter, history, batch, stats: SpecStats::default() });
        Ok(stream)
    }
}

impl Stream<'_, '_> {
    /// The tokens generated so far.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// What speculation did so far, for a stream from
    /// [`Context::stream_speculative`] (`None` for a plain one).
    pub fn speculation(&self) -> Option<&SpecStats> {
        self.spec.as_ref().map(|s| &s.stats)
    }

    /// The context's [`n_past`](Context::n_past): what its cache holds now.
    pub(crate) fn n_past(&self) -> usize {
        self.ctx.n_past()
    }

    /// Cuts sequence 0 of the cache back to its first `n` positions (all of it, where the
    /// memory cannot cut a range).
    pub(crate) fn truncate_cache(&mut self, n: usize) {
        if self.ctx.seq_remove(0, n as Pos..).is_err() {
            self.ctx.clear();
        }
    }

    /// Queues the held-back text and the final event.
    fn finish(&mut self, reason: StopReason) {
        let text = self.text.finish();
        if !text.is_empty() {
            self.queue.push_back(Event::Flush { text });
        }
        self.done(reason);
    }

    fn done(&mut self, reason: StopReason) {
        let generation = Generation {
            tokens: std::mem::take(&mut self.tokens),
            stopped_at_eog: matches!(reason, StopReason::EndOfGeneration(_)),
            n_prompt: self.n_prompt,
            prompt_time: self.prompt_time,
            gen_time: self.gen_start.elapsed(),
        };
        self.queue.push_back(Event::Done { generation, reason });
        self.finished = true;
    }

    fn step(&mut self) -> Result<()> {
        if self.tokens.len() >= self.stop.max_tokens {
            self.finish(StopReason::MaxTokens);
            return Ok(());
        }
        if self.ctx.take_cancel() {
            return Err(Error::Aborted);
        }
        if let Some(t) = self.to_decode {
            if self.ctx.n_past() >= self.ctx.n_ctx() as usize {
                self.finish(StopReason::ContextFull);
                return Ok(());
            }
            if self.spec.is_some() {
                return self.speculative_step(t);
            }
            self.ctx.decode(&[t])?;
            self.to_decode = None;
        }
        let t = self.sampler.pick(self.ctx)?;
        self.emit(t)?;
        Ok(())
    }

    /// Takes a sampled token: ends the stream at an end-of-generation or stop token, else
    /// emits it (ending at a stop string). Returns whether the stream goes on.
    fn emit(&mut self, t: Token) -> Result<bool> {
        let model = self.ctx.model();
        if !self.ignore_eos && model.is_eog(t) {
            self.finish(StopReason::EndOfGeneration(t));
            return Ok(false);
        }
        if self.stop.stop_tokens.contains(&t) {
            self.finish(StopReason::StopToken(t));
            return Ok(false);
        }
        self.tokens.push(t);
        self.to_decode = Some(t);
        if let Some(spec) = &mut self.spec {
            spec.history.push(t);
        }
        match self.text.push(model, t)? {
            Matched::No(text) => self.queue.push_back(Event::Token { id: t, text }),
            Matched::Stop { before, index } => {
                self.queue.push_back(Event::Token { id: t, text: before });
                self.done(StopReason::StopString(index));
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One step of [`Context::stream_speculative`]: `t` (the last emitted token) and a draft
    /// decoded in one batch, then tokens sampled at its positions while they equal the draft.
    fn speculative_step(&mut self, t: Token) -> Result<()> {
        let Some(spec) = self.spec.as_mut() else { return Ok(()) };
        let pos = self.ctx.n_past();
        // Room: the cache (the batch ends at most at its last cell) and the budget (a draft of
        // k tokens, all accepted, yields k + 1 tokens with the one sampled after them).
        let wanted = self.stop.max_tokens.saturating_sub(self.tokens.len());
        let room = (self.ctx.n_ctx() as usize - pos - 1).min(wanted.saturating_sub(1));
        let (n_min, n_max) = (spec.drafter.n_min(), spec.drafter.n_max());
        let limit = room.min(n_max).min(spec.batch.capacity() - 1);
        let t_draft = Instant::now();
        let mut draft = if limit == 0 { Vec::new() } else { spec.drafter.propose(&spec.history, limit)? };
        spec.stats.draft_time += t_draft.elapsed();
        draft.truncate(limit);
        if draft.len() < n_min.max(1) {
            spec.stats.plain += 1;
            let t_decode = Instant::now();
            self.ctx.decode(&[t])?;
            spec.stats.decode_time += t_decode.elapsed();
            self.to_decode = None;
            let next = self.sampler.pick(self.ctx)?;
            self.emit(next)?;
            return Ok(());
        }
        spec.batch.clear();
        spec.batch.add(t, pos as Pos, &[0], true)?;
        for (i, &d) in draft.iter().enumerate() {
            spec.batch.add(d, (pos + 1 + i) as Pos, &[0], true)?;
        }
        let model = self.ctx.model();
        let t_decode = Instant::now();
        let out = self.ctx.decode_batch(&spec.batch)?;
        spec.stats.decode_time += t_decode.elapsed();
        // Sample position after position; the tokens are emitted below (emitting needs the
        // context, which the outputs borrow).
        let mut sampled = Vec::with_capacity(draft.len() + 1);
        for i in 0..=draft.len() {
            let s = self.sampler.pick_at(&out, i)?;
            sampled.push(s);
            // Sampling stops where the stream will end (later tokens would be accepted by the
            // sampler but never emitted), or at the first token that is not the draft's.
            let ends = (!self.ignore_eos && model.is_eog(s)) || self.stop.stop_tokens.contains(&s);
            if ends || draft.get(i) != Some(&s) {
                break;
            }
        }
        drop(out);
        let stats = &mut spec.stats;
        stats.verified += 1;
        stats.drafted += draft.len();
        if stats.drafted_at.len() < draft.len() {
            stats.drafted_at.resize(draft.len(), 0);
            stats.accepted_at.resize(draft.len(), 0);
        }
        let accepted = sampled.iter().zip(&draft).take_while(|(s, d)| s == d).count();
        spec.drafter.accepted(accepted);
        stats.drafted_at[..draft.len()].iter_mut().for_each(|n| *n += 1);
        stats.accepted_at[..accepted].iter_mut().for_each(|n| *n += 1);
        stats.accepted += accepted;
        // Emit in order until the stream ends; the cache keeps `t` and the draft tokens before
        // the last emitted one (that one, sampled from the logits after them, is not decoded).
        let mut kept = 0;
        for (i, &s) in sampled.iter().enumerate() {
            kept = i;
            if !self.emit(s)? || self.tokens.len() >= self.stop.max_tokens {
                break;
            }
        }
        self.ctx.seq_remove(0, (pos + 1 + kept) as Pos..)?;
        Ok(())
    }
}

impl Iterator for Stream<'_, '_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(event) = self.queue.pop_front() {
            return Some(Ok(event));
        }
        if self.finished {
            return None;
        }
        if let Err(e) = self.step() {
            self.finished = true;
            self.queue.clear();
            return Some(Err(e));
        }
        self.queue.pop_front().map(Ok)
    }
}

impl std::iter::FusedIterator for Stream<'_, '_> {}

impl std::fmt::Debug for Stream<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("stop", &self.stop)
            .field("tokens", &self.tokens)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The text side of a generation: token pieces turned into complete UTF-8 text, held back
/// while it may start a stop string ([`Stream`] and [`crate::parallel`] use it).
pub(crate) struct TextOut {
    utf8: Utf8Decoder,
    matcher: StopMatcher,
    piece: Vec<u8>,
}

impl TextOut {
    /// Text that stops at any of `stop_strings` (none empty: callers check).
    pub(crate) fn new(stop_strings: Vec<String>) -> Self {
        TextOut { utf8: Utf8Decoder::default(), matcher: StopMatcher::new(stop_strings), piece: Vec::with_capacity(64) }
    }

    /// Adds the piece of `token`: the text released, or the text before a stop string.
    pub(crate) fn push(&mut self, model: &Model, token: Token) -> Result<Matched> {
        token_bytes(model, token, &mut self.piece)?;
        let complete = self.utf8.push(&self.piece);
        Ok(self.matcher.push(&complete))
    }

    /// What is still held back (an incomplete code point as U+FFFD), released at the end.
    pub(crate) fn finish(&mut self) -> String {
        let mut text = self.utf8.finish();
        text.insert_str(0, &self.matcher.take_held());
        text
    }
}

/// The bytes of a token's piece (`llama_token_to_piece`, no leading-space strip, special
/// tokens not rendered) into `buf`.
fn token_bytes(model: &Model, token: Token, buf: &mut Vec<u8>) -> Result<()> {
    let n_vocab = model.n_vocab();
    if token < 0 || token as u32 >= n_vocab {
        return Err(Error::InvalidToken { token, n_vocab });
    }
    buf.resize(buf.capacity().max(64), 0);
    for _ in 0..2 {
        let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: the vocab belongs to the live model; the buffer is valid for `len` bytes;
        // the token is in the vocabulary.
        let n = unsafe {
            sys::token_to_piece_nothrow(model.vocab(), token, buf.as_mut_ptr().cast::<c_char>(), len, 0, false)
        }
        .map_err(|_| Error::Tokenize(crate::model::THREW.into()))?;
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(());
        }
        buf.resize(n.unsigned_abs() as usize, 0);
    }
    Err(Error::Tokenize(format!("the piece of token {token} changed size between calls")))
}

/// Turns bytes arriving in pieces into complete UTF-8 text, holding back an incomplete code
/// point and replacing invalid sequences as [`String::from_utf8_lossy`] does.
#[derive(Debug, Default)]
struct Utf8Decoder {
    held: Vec<u8>,
}

impl Utf8Decoder {
    /// The text that is complete after `bytes`.
    fn push(&mut self, bytes: &[u8]) -> String {
        self.held.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest = &self.held[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by `valid_up_to`.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.held.len() - keep;
        self.held.drain(..start);
        out
    }

    /// The held-back bytes, replaced (an incomplete sequence is one U+FFFD).
    fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.held).into_owned();
        self.held.clear();
        out
    }
}

/// Matches stop strings across pushes, holding back text that may begin one.
#[derive(Debug)]
struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

pub(crate) enum Matched {
    /// No stop string: this text is released.
    No(String),
    /// The stop string `index` begins after `before` (released); the rest is dropped.
    Stop { before: String, index: usize },
}

impl StopMatcher {
    fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops, held: String::new() }
    }

    fn push(&mut self, text: &str) -> Matched {
        self.held.push_str(text);
        // The earliest occurrence wins; at one position, the first listed.
        let found =
            self.stops.iter().enumerate().filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i))).min();
        if let Some((at, index)) = found {
            self.held.truncate(at);
            return Matched::Stop { before: std::mem::take(&mut self.held), index };
        }
        // Hold back the longest suffix that is a proper prefix of a stop string; an occurrence
        // can only begin there or later.
        let keep_from = self
            .held
            .char_indices()
            .map(|(at, _)| at)
            .find(|&at| {
                let tail = &self.held[at..];
                self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let tail = self.held.split_off(keep_from);
        Matched::No(std::mem::replace(&mut self.held, tail))
    }

    fn take_held(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` pushed in the pieces cut at `cuts`.
    fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut d = Utf8Decoder::default();
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            out.push(d.push(&bytes[last..c]));
            last = c;
        }
        out.push(d.finish());
        out
    }

    #[test]
    fn utf8_pieces_never_split_a_code_point_and_match_lossy_decoding() {
        let cases: Vec<Vec<u8>> = vec![
            "日本語のテキスト 😀 é".as_bytes().to_vec(),
            b"ab\xff\xfecd".to_vec(),
            b"\xe6\x97".to_vec(),              // an incomplete code point at the end
            b"\xe6\x97x\xf0\x9f\x98".to_vec(), // incomplete, then invalidated
            b"\xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80".to_vec(), // surrogate, overlong, > U+10FFFF
            b"\xf0\x9f\x98\x80\x80".to_vec(),  // a stray continuation byte
        ];
        for bytes in cases {
            let whole = String::from_utf8_lossy(&bytes).into_owned();
            // Every single cut point and every byte on its own.
            let mut cut_sets: Vec<Vec<usize>> = (0..=bytes.len()).map(|c| vec![c]).collect();
            cut_sets.push((1..bytes.len()).collect());
            for cuts in cut_sets {
                let pieces = decode_in_pieces(&bytes, &cuts);
                assert_eq!(pieces.concat(), whole, "{bytes:?} cut at {cuts:?}");
            }
        }
    }

    fn run_matcher(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<usize>, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            match m.push(p) {
                Matched::No(t) => out.push(t),
                Matched::Stop { before, index } => {
                    out.push(before);
                    return (out, Some(index), String::new());
                }
            }
        }
        let held = m.take_held();
        (out, None, held)
    }

    #[test]
    fn stop_strings_match_across_pieces_and_release_what_is_not_one() {
        // Spanning three pieces; the stop text and what follows it are dropped.
        let (out, stop, _) = run_matcher(&["END"], &["abc E", "N", "Dxyz"]);
        assert_eq!((out.concat(), stop), ("abc ".to_string(), Some(0)));
        assert_eq!(out, ["abc ", "", ""]);
        // A false start is released once it cannot be a stop.
        let (out, stop, held) = run_matcher(&["END"], &["x E", "Nd", " E"]);
        assert_eq!(out, ["x ", "ENd", " "]);
        assert_eq!((stop, held.as_str()), (None, "E"));
        // The earliest occurrence wins over the first listed.
        let (out, stop, _) = run_matcher(&["b c", "a"], &["xa b c"]);
        assert_eq!((out.concat(), stop), ("x".to_string(), Some(1)));
        // Multi-byte text is held back at character boundaries only.
        let (out, stop, held) = run_matcher(&["語の終"], &["日本語", "の", "テ"]);
        assert_eq!((out.concat(), stop, held.as_str()), ("日本語のテ".to_string(), None, ""));
        // No stop strings: everything passes.
        let (out, _, held) = run_matcher(&[], &["a", "b"]);
        assert_eq!((out, held.as_str()), (vec!["a".to_string(), "b".to_string()], ""));
    }
}
