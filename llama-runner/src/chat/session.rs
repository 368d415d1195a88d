//! A multi-turn conversation held in one context: each turn renders the whole conversation,
//! keeps the longest prefix of it that the KV cache already holds and decodes only the rest.

use crate::context::{CancelHandle, Context, Generation};
use crate::error::{Error, Result};
use crate::model::Token;
use crate::sampling::Sampler;
use crate::speculative::{Drafter, SpecStats};
use crate::stream::{Event, StopConditions, StopReason, Stream};

use super::{ChatMessage, ChatTemplate, RenderOptions};

/// How the prompt of one turn was processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TurnStats {
    /// Tokens of the rendered conversation (the whole prompt of this turn).
    pub n_prompt: usize,
    /// Of those, tokens the cache already held from earlier turns (not decoded again).
    pub n_reused: usize,
    /// Tokens decoded for this turn's prompt (`n_prompt - n_reused`).
    pub n_decoded: usize,
}

/// A finished turn ([`ChatSession::reply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    /// The assistant's text (also appended to the conversation).
    pub text: String,
    /// How the prompt was processed.
    pub stats: TurnStats,
    /// Generated tokens and timings.
    pub generation: Generation,
    /// Why generation stopped.
    pub reason: StopReason,
}

/// A conversation in a context: the messages so far, and the tokens the KV cache holds for
/// them.
///
/// Each turn ([`respond`](Self::respond), [`generate`](Self::generate)) renders the whole
/// conversation with the template, tokenizes it, keeps the cached tokens it starts with and
/// decodes only the rest, as llama.cpp's server reuses its cache: a second turn processes its
/// own new tokens (and the few of the previous answer whose re-tokenization differs from the
/// sampled tokens), not the history. When the cache cannot be cut at that point (a model with
/// sliding-window attention whose window has already moved past it, a recurrent memory) the
/// whole prompt is decoded again.
///
/// ```no_run
/// use llama_runner::chat::{ChatSession, ChatTemplate};
/// use llama_runner::stream::StopConditions;
/// use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Sampler};
///
/// # fn main() -> llama_runner::Result<()> {
/// let model = Model::load(Backend::get()?, "gemma-3-270m.gguf", &ModelOptions::default())?;
/// let ctx = Context::new(&model, &ContextOptions { n_ctx: 4096, ..Default::default() })?;
/// let mut chat = ChatSession::new(ctx, ChatTemplate::builtin("gemma")?.for_model(&model));
/// let mut sampler = Sampler::greedy(&model)?;
/// for question in ["Name a colour.", "And another one?"] {
///     let reply = chat.reply(question, &mut sampler, StopConditions::max_tokens(64))?;
///     println!("{} ({} new prompt tokens)", reply.text, reply.stats.n_decoded);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChatSession<'m> {
    ctx: Context<'m>,
    template: ChatTemplate,
    options: RenderOptions,
    messages: Vec<ChatMessage>,
    /// The tokens at positions `0..len` of sequence 0.
    cached: Vec<Token>,
}

impl<'m> ChatSession<'m> {
    /// A conversation with no messages in `ctx` (its cache is cleared) rendered with
    /// `template`.
    pub fn new(mut ctx: Context<'m>, template: ChatTemplate) -> Self {
        ctx.clear();
        ChatSession { ctx, template, options: RenderOptions::generation(), messages: Vec::new(), cached: Vec::new() }
    }

    /// Tool definitions (JSON, see [`RenderOptions::tools`]) and extra template variables for
    /// every turn; `add_generation_prompt` is always on.
    pub fn with_render_options(mut self, options: RenderOptions) -> Self {
        self.options = RenderOptions { add_generation_prompt: true, ..options };
        self
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The context (its cache holds [`cached_tokens`](Self::cached_tokens)).
    pub fn context(&self) -> &Context<'m> {
        &self.ctx
    }

    /// A handle that cancels the running turn from another thread ([`Error::Aborted`]).
    pub fn cancel_handle(&self) -> CancelHandle {
        self.ctx.cancel_handle()
    }

    /// The tokens the KV cache holds for the conversation.
    pub fn cached_tokens(&self) -> &[Token] {
        &self.cached
    }

    /// Appends a message without generating (a system prompt, an earlier conversation, a
    /// tool's result); the next turn decodes it.
    pub fn push(&mut self, message: ChatMessage) {
        self.messages.push(message);
    }

    /// Forgets the conversation and empties the cache (`/reset`).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.cached.clear();
        self.ctx.clear();
    }

    /// Gives the context back.
    pub fn into_context(self) -> Context<'m> {
        self.ctx
    }

    /// Appends the user message `text` and streams the assistant's answer ([`generate`]).
    /// When the turn cannot start (an error before anything is generated), the message is
    /// taken back out.
    ///
    /// [`generate`]: Self::generate
    pub fn respond<'s>(
        &'s mut self,
        text: impl Into<String>,
        sampler: &'s mut Sampler<'_>,
        stop: StopConditions,
    ) -> Result<ChatStream<'s, 'm>> {
        self.messages.push(ChatMessage::user(text));
        self.start(sampler, stop, true, None)
    }

    /// [`respond`](Self::respond) with speculative decoding
    /// ([`Context::stream_speculative`]): `drafter` sees the whole conversation and the answer
    /// so far; its statistics are in [`ChatStream::speculation`]. A [`DraftModel`] keeps its
    /// cache across turns as the session does (the prefix it shares with the new turn).
    ///
    /// [`DraftModel`]: crate::speculative::DraftModel
    pub fn respond_speculative<'s>(
        &'s mut self,
        text: impl Into<String>,
        sampler: &'s mut Sampler<'_>,
        stop: StopConditions,
        drafter: &'s mut (dyn Drafter + 's),
    ) -> Result<ChatStream<'s, 'm>> {
        self.messages.push(ChatMessage::user(text));
        self.start(sampler, stop, true, Some(drafter))
    }

    /// Streams the assistant's answer to the conversation as it stands: renders it (with the
    /// generation prompt), reuses the cached prefix, decodes the rest and generates with
    /// `sampler` until `stop`. The answer is appended to the conversation as an `assistant`
    /// message when the stream ends or is dropped, with the text it had emitted, cancelled or
    /// not; the cache then holds the conversation and the answer.
    pub fn generate<'s>(
        &'s mut self,
        sampler: &'s mut Sampler<'_>,
        stop: StopConditions,
    ) -> Result<ChatStream<'s, 'm>> {
        self.start(sampler, stop, false, None)
    }

    /// [`respond`](Self::respond), run to the end.
    pub fn reply(
        &mut self,
        text: impl Into<String>,
        sampler: &mut Sampler<'_>,
        stop: StopConditions,
    ) -> Result<ChatReply> {
        let mut stream = self.respond(text, sampler, stop)?;
        let stats = stream.stats();
        while let Some(event) = stream.next() {
            if let Event::Done { generation, reason } = event? {
                return Ok(ChatReply { text: stream.text.clone(), stats, generation, reason });
            }
        }
        // Unreachable in practice: a stream ends with `Done` or an error.
        Err(Error::Aborted)
    }

    /// Renders, tokenizes and cuts the cache back to the prefix it shares with the new
    /// prompt; returns the prompt and what is reused.
    fn prepare(&mut self) -> Result<(Vec<Token>, TurnStats)> {
        let model = self.ctx.model();
        if self.messages.is_empty() {
            return Err(Error::EmptyInput { what: "chat messages" });
        }
        let text = self.template.prompt(&self.messages, &self.options)?;
        // At least one cell is left for the answer; a conversation far too long for the
        // context is refused without tokenizing it (see Model::tokenize_at_most).
        let n_ctx = self.ctx.n_ctx() as usize;
        let tokens = model.tokenize_at_most(&text, true, n_ctx.saturating_sub(1))?;
        if tokens.is_empty() {
            return Err(Error::EmptyInput { what: "rendered chat prompt" });
        }
        // The cached prefix that stays: at least one token is decoded, for its logits.
        let mut keep = self.cached.iter().zip(&tokens).take_while(|(a, b)| a == b).count().min(tokens.len() - 1);
        if keep < self.cached.len() {
            let cut = self.ctx.seq_remove(0, keep as i32..).is_ok();
            // With sliding-window attention the cells before `keep - n_swa` may be gone.
            let n_swa = model.n_swa() as usize;
            let window_ok = n_swa == 0
                || self.ctx.seq_range(0).ok().flatten().is_none_or(|r| r.start as usize <= keep.saturating_sub(n_swa));
            if !cut || !window_ok {
                keep = 0;
            }
        }
        if keep == 0 {
            self.ctx.clear();
        }
        self.cached.truncate(keep);
        let stats = TurnStats { n_prompt: tokens.len(), n_reused: keep, n_decoded: tokens.len() - keep };
        Ok((tokens, stats))
    }

    fn start<'s>(
        &'s mut self,
        sampler: &'s mut Sampler<'_>,
        stop: StopConditions,
        pop_on_error: bool,
        drafter: Option<&'s mut (dyn Drafter + 's)>,
    ) -> Result<ChatStream<'s, 'm>> {
        let (tokens, stats) = match self.prepare() {
            Ok(p) => p,
            Err(e) => {
                if pop_on_error {
                    self.messages.pop();
                }
                return Err(e);
            }
        };
        let ChatSession { ctx, messages, cached, .. } = self;
        let (before, prompt) = tokens.split_at(stats.n_reused);
        let stream = match drafter {
            Some(d) => ctx.stream_speculative(sampler, before, prompt, stop, d),
            None => ctx.stream(sampler, prompt, stop),
        };
        match stream {
            Ok(stream) => Ok(ChatStream { stream, messages, cached, tokens, stats, text: String::new() }),
            Err(e) => {
                // The cache holds the reused prefix (a failed prompt decode is rolled back).
                if pop_on_error {
                    messages.pop();
                }
                Err(e)
            }
        }
    }
}

/// The assistant's answer of one turn as it is generated: the [`Event`]s of a
/// [`Stream`](crate::stream::Stream). When it ends or is dropped, the text emitted so far is
/// appended to the conversation as the `assistant` message and the session records what the
/// cache holds.
pub struct ChatStream<'s, 'm> {
    stream: Stream<'s, 'm>,
    messages: &'s mut Vec<ChatMessage>,
    cached: &'s mut Vec<Token>,
    /// The prompt, then each generated token.
    tokens: Vec<Token>,
    stats: TurnStats,
    /// The text emitted so far.
    text: String,
}

impl ChatStream<'_, '_> {
    /// How this turn's prompt was processed.
    pub fn stats(&self) -> TurnStats {
        self.stats
    }

    /// The answer's text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What speculation did so far, for a turn from
    /// [`respond_speculative`](ChatSession::respond_speculative).
    pub fn speculation(&self) -> Option<&SpecStats> {
        self.stream.speculation()
    }
}

impl Iterator for ChatStream<'_, '_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        let event = self.stream.next()?;
        if let Ok(e) = &event {
            if let Event::Token { id, .. } = e {
                self.tokens.push(*id);
            }
            self.text.push_str(e.text());
        }
        Some(event)
    }
}

impl std::iter::FusedIterator for ChatStream<'_, '_> {}

impl Drop for ChatStream<'_, '_> {
    fn drop(&mut self) {
        self.messages.push(ChatMessage::assistant(std::mem::take(&mut self.text)));
        let n_past = self.stream.n_past();
        if n_past > self.tokens.len() {
            // Tokens of a verification batch that were queued but not taken: the cache drops
            // them, so that it holds what the conversation records.
            self.stream.truncate_cache(self.tokens.len());
        }
        let n_past = self.stream.n_past();
        self.tokens.truncate(n_past);
        *self.cached = std::mem::take(&mut self.tokens);
    }
}

impl std::fmt::Debug for ChatStream<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream").field("stats", &self.stats).field("text", &self.text).finish_non_exhaustive()
    }
}
