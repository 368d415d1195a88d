//! Generation for many requests at once in one context, as a server's continuous batching does
//! it: each request gets a sequence (a slot) of its own, with its own sampler chain and stop
//! conditions; every step decodes one batch holding the next token of every generating request
//! and as much of the waiting prompts as fits; requests finish at different times, and queued
//! ones are admitted into the slots they free.
//!
//! ```no_run
//! use llama_runner::parallel::{Parallel, Request};
//! use llama_runner::stream::{Event, StopConditions};
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Sampler};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 4096, n_seq_max: 4, ..Default::default() })?;
//! let mut parallel = Parallel::new(&mut ctx)?;
//! for prompt in ["Once upon a time", "The capital of France is", "def fib(n):"] {
//!     let tokens = model.tokenize(prompt, true)?;
//!     parallel.submit(Request::new(tokens, Sampler::greedy(&model)?, StopConditions::max_tokens(32)))?;
//! }
//! while !parallel.is_idle() {
//!     for update in parallel.step()? {
//!         if let Ok(Event::Token { text, .. }) = &update.event {
//!             println!("request {}: {text:?}", update.request);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The events of one request are those [`Context::stream`] yields for it alone ([`Event`]:
//! tokens with their complete text, a flush, the final statistics); an error of one request
//! (a grammar's dead end, say) ends that request only. A failed decode fails the whole step
//! and changes nothing: the step can be retried, or requests [`cancel`](Parallel::cancel)ed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::batch::{Batch, Pos, SeqId};
use crate::context::{Context, Generation};
use crate::error::{Error, Result};
use crate::model::Token;
use crate::sampling::Sampler;
use crate::stream::{Event, Matched, StopConditions, StopReason, TextOut};

/// Identifies a submitted request in [`Update`]s: numbered from 0 in order of submission.
pub type RequestId = u64;

/// A prompt to generate from, with the sampler and the stop conditions of its generation.
pub struct Request<'m> {
    /// The prompt's tokens (not empty).
    pub prompt: Vec<Token>,
    /// The sampler (each generated token is accepted once; the prompt is not fed to it).
    pub sampler: Sampler<'m>,
    /// When the generation stops.
    pub stop: StopConditions,
}

impl<'m> Request<'m> {
    /// A request of `prompt`, sampled with `sampler`, stopped by `stop`.
    pub fn new(prompt: Vec<Token>, sampler: Sampler<'m>, stop: StopConditions) -> Self {
        Request { prompt, sampler, stop }
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("prompt", &self.prompt).field("stop", &self.stop).finish_non_exhaustive()
    }
}

/// What happened to one request in a [`Parallel::step`].
#[derive(Debug)]
pub struct Update {
    /// The request.
    pub request: RequestId,
    /// Its event; an error ends the request (its slot is freed).
    pub event: Result<Event>,
}

/// One request in a slot.
struct Slot<'m> {
    request: RequestId,
    seq: SeqId,
    prompt: Vec<Token>,
    /// Prompt tokens decoded so far.
    decoded: usize,
    sampler: Sampler<'m>,
    stop: StopConditions,
    ignore_eos: bool,
    text: TextOut,
    tokens: Vec<Token>,
    /// The last token sampled, to be decoded in the next step.
    pending: Option<Token>,
    admitted: Instant,
    prompt_time: Duration,
    gen_start: Option<Instant>,
}

/// Many requests generating at once in one context ([module docs](self)). It borrows the
/// context for its lifetime; the context's `n_seq_max` is the number of slots.
pub struct Parallel<'c, 'm> {
    ctx: &'c mut Context<'m>,
    slots: Vec<Option<Slot<'m>>>,
    queue: VecDeque<(RequestId, Request<'m>)>,
    next_id: RequestId,
    batch: Batch,
}

impl<'c, 'm> Parallel<'c, 'm> {
    /// Generation over `ctx`, which is cleared first: one slot per sequence (`n_seq_max`).
    /// Errors: [`Error::Tokenize`] for a model without a vocabulary (requests stream text).
    pub fn new(ctx: &'c mut Context<'m>) -> Result<Self> {
        // Requests stream text, which llama.cpp asserts on without a vocabulary.
        ctx.model().check_vocab()?;
        ctx.clear();
        let n_slots = ctx.n_seq_max() as usize;
        let batch = Batch::new(ctx.max_batch_tokens(), 1)?;
        Ok(Parallel { slots: (0..n_slots).map(|_| None).collect(), queue: VecDeque::new(), next_id: 0, batch, ctx })
    }

    /// Queues a request; it is admitted into the next free slot at a [`step`](Self::step).
    /// Refused at once (and not queued): an empty prompt, a prompt that cannot fit one
    /// sequence's share of the context, a sampler of another model, an empty stop string and a
    /// stop token outside the vocabulary.
    pub fn submit(&mut self, request: Request<'m>) -> Result<RequestId> {
        let model = self.ctx.model();
        if request.sampler.model().id() != model.id() {
            return Err(Error::SamplerModelMismatch);
        }
        if request.prompt.is_empty() {
            return Err(Error::EmptyInput { what: "prompt" });
        }
        let n_vocab = model.n_vocab();
        if let Some(&token) = request.prompt.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(Error::InvalidToken { token, n_vocab });
        }
        if let Some(&token) = request.stop.stop_tokens.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(Error::InvalidToken { token, n_vocab });
        }
        if request.stop.stop_strings.iter().any(String::is_empty) {
            return Err(Error::EmptyStopString);
        }
        let n_ctx = self.ctx.n_ctx_seq();
        if request.prompt.len() >= n_ctx as usize {
            return Err(Error::ContextFull { needed: request.prompt.len() + 1, used: 0, n_ctx });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, request));
        Ok(id)
    }

    /// Whether nothing is queued or generating.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(Option::is_none)
    }

    /// Requests generating (in a slot) now.
    pub fn active(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Removes a queued or generating request; its sequence is cleared. `false` when there is
    /// no such request (it finished, or never was).
    pub fn cancel(&mut self, request: RequestId) -> bool {
        if let Some(i) = self.queue.iter().position(|(id, _)| *id == request) {
            self.queue.remove(i);
            return true;
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| s.as_ref().is_some_and(|s| s.request == request)) {
            let seq = slot.as_ref().map_or(0, |s| s.seq);
            *slot = None;
            // The id is a slot's, below n_seq_max.
            let _ = self.ctx.seq_clear(seq);
            return true;
        }
        false
    }

    /// Admits queued requests into free slots, decodes one batch (the pending token of every
    /// generating request, then prompt tokens as they fit) and samples the requests whose
    /// prompt is complete. Returns what happened to each request; empty when idle.
    ///
    /// A failed decode (a full cache, a cancel through the context's
    /// [`CancelHandle`](crate::context::CancelHandle)) is the step's error and changes
    /// nothing: every request stays where it was.
    pub fn step(&mut self) -> Result<Vec<Update>> {
        let mut updates = Vec::new();
        self.admit(&mut updates);
        self.batch.clear();
        let n_ctx = self.ctx.n_ctx_seq() as usize;
        let cap = self.batch.capacity();
        // Where each slot's tokens go in the batch: (slot, prompt tokens added, output index).
        let mut plan: Vec<(usize, usize, Option<usize>)> = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let Some(t) = s.pending else { continue };
            let pos = (s.prompt.len() + s.tokens.len() - 1) as Pos;
            if pos as usize >= n_ctx {
                let s = slot.take();
                updates.extend(s.map(|s| finish(s, StopReason::ContextFull)).into_iter().flatten());
                let _ = self.ctx.seq_clear(i as SeqId);
                continue;
            }
            self.batch.add(t, pos, &[s.seq], true)?;
            plan.push((i, 0, Some(self.batch.len() - 1)));
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if s.decoded == s.prompt.len() || self.batch.len() >= cap {
                continue;
            }
            let n = (s.prompt.len() - s.decoded).min(cap - self.batch.len());
            for k in 0..n {
                let at = s.decoded + k;
                self.batch.add(s.prompt[at], at as Pos, &[s.seq], at + 1 == s.prompt.len())?;
            }
            let output = (s.decoded + n == s.prompt.len()).then(|| self.batch.len() - 1);
            plan.push((i, n, output));
        }
        if self.batch.is_empty() {
            return Ok(updates);
        }
        let model = self.ctx.model();
        let outputs = self.ctx.decode_batch(&self.batch)?;
        let mut finished = Vec::new();
        for (i, n, output) in plan {
            let Some(s) = self.slots[i].as_mut() else { continue };
            if n > 0 {
                s.decoded += n;
                if s.decoded == s.prompt.len() {
                    s.prompt_time = s.admitted.elapsed();
                    s.gen_start = Some(Instant::now());
                }
            }
            s.pending = None;
            let Some(index) = output else { continue };
            if s.tokens.len() >= s.stop.max_tokens {
                finished.push((i, Ok(StopReason::MaxTokens)));
                continue;
            }
            let t = match outputs.sample(&mut s.sampler, index) {
                Ok(t) => t,
                Err(e) => {
                    finished.push((i, Err(e)));
                    continue;
                }
            };
            if !s.ignore_eos && model.is_eog(t) {
                finished.push((i, Ok(StopReason::EndOfGeneration(t))));
                continue;
            }
            if s.stop.stop_tokens.contains(&t) {
                finished.push((i, Ok(StopReason::StopToken(t))));
                continue;
            }
            s.tokens.push(t);
            match s.text.push(model, t) {
                Ok(Matched::No(text)) => {
                    updates.push(Update { request: s.request, event: Ok(Event::Token { id: t, text }) });
                    if s.tokens.len() >= s.stop.max_tokens {
                        finished.push((i, Ok(StopReason::MaxTokens)));
                    } else {
                        s.pending = Some(t);
                    }
                }
                Ok(Matched::Stop { before, index }) => {
                    updates.push(Update { request: s.request, event: Ok(Event::Token { id: t, text: before }) });
                    finished.push((i, Ok(StopReason::StopString(index))));
                }
                Err(e) => finished.push((i, Err(e))),
            }
        }
        drop(outputs);
        for (i, end) in finished {
            let Some(s) = self.slots[i].take() else { continue };
            let stopped_by_string = matches!(end, Ok(StopReason::StopString(_)));
            match end {
                Ok(reason) if stopped_by_string => updates.push(done(s, reason)),
                Ok(reason) => updates.extend(finish(s, reason)),
                Err(e) => updates.push(Update { request: s.request, event: Err(e) }),
            }
            let _ = self.ctx.seq_clear(i as SeqId);
        }
        Ok(updates)
    }

    /// Steps until every request has finished; returns each request's final text, generation
    /// and stop reason (or its error), in order of submission.
    pub fn run(&mut self) -> Result<Vec<Completion>> {
        let mut done: Vec<Completion> = Vec::new();
        let mut texts: std::collections::HashMap<RequestId, String> = Default::default();
        while !self.is_idle() {
            for u in self.step()? {
                match u.event {
                    Ok(Event::Token { text, .. }) | Ok(Event::Flush { text }) => {
                        texts.entry(u.request).or_default().push_str(&text)
                    }
                    Ok(Event::Done { generation, reason }) => done.push(Completion {
                        request: u.request,
                        result: Ok((texts.remove(&u.request).unwrap_or_default(), generation, reason)),
                    }),
                    Err(e) => done.push(Completion { request: u.request, result: Err(e) }),
                }
            }
        }
        done.sort_by_key(|c| c.request);
        Ok(done)
    }

    fn admit(&mut self, updates: &mut Vec<Update>) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some((id, r)) = self.queue.pop_front() else { break };
            let ignore_eos = r.stop.ignore_eos || r.sampler.ignore_eos();
            let s = Slot {
                request: id,
                seq: i as SeqId,
                text: TextOut::new(r.stop.stop_strings.clone()),
                prompt: r.prompt,
                decoded: 0,
                sampler: r.sampler,
                stop: r.stop,
                ignore_eos,
                tokens: Vec::new(),
                pending: None,
                admitted: Instant::now(),
                prompt_time: Duration::ZERO,
                gen_start: None,
            };
            // Slots are cleared when freed; a sequence can hold nothing here.
            let _ = self.ctx.seq_clear(i as SeqId);
            if s.stop.max_tokens == 0 {
                updates.extend(finish(s, StopReason::MaxTokens));
                continue;
            }
            *slot = Some(s);
        }
    }
}

impl std::fmt::Debug for Parallel<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallel")
            .field("slots", &self.slots.len())
            .field("active", &self.active())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

/// One finished request of [`Parallel::run`].
#[derive(Debug)]
pub struct Completion {
    /// The request.
    pub request: RequestId,
    /// Its whole text, generation and stop reason, or the error that ended it.
    pub result: Result<(String, Generation, StopReason)>,
}

/// The flush (if any) and the final event of a request.
fn finish(mut s: Slot<'_>, reason: StopReason) -> Vec<Update> {
    let mut out = Vec::new();
    let text = s.text.finish();
    if !text.is_empty() {
        out.push(Update { request: s.request, event: Ok(Event::Flush { text }) });
    }
    out.push(done(s, reason));
    out
}

fn done(s: Slot<'_>, reason: StopReason) -> Update {
    let generation = Generation {
        stopped_at_eog: matches!(reason, StopReason::EndOfGeneration(_)),
        n_prompt: s.prompt.len(),
        prompt_time: s.prompt_time,
        gen_time: s.gen_start.map_or(Duration::ZERO, |t| t.elapsed()),
        tokens: s.tokens,
    };
    Update { request: s.request, event: Ok(Event::Done { generation, reason }) }
}
