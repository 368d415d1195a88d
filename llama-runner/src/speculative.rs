//! Speculative greedy generation with draftless n-gram drafting (prompt lookup): the last
//! tokens generated are looked up earlier in the prompt and the text so far, and the tokens
//! that followed them there are proposed as a draft; the target verifies the whole draft in one
//! batch and keeps the longest prefix its own greedy choice agrees with, plus its next token.
//! Rejected positions are removed from the cache again.
//!
//! The output is plain greedy generation's, token for token, as long as a batch of tokens
//! yields the same argmax as single-token decodes (llama.cpp's CPU kernels are not guaranteed
//! bit-identical across batch sizes; the tests check exactness on the generated and the real
//! model).
//!
//! ```no_run
//! use llama_runner::speculative::NgramDraft;
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! let prompt = model.tokenize("Repeat after me: the quick brown fox jumps over the lazy dog.", true)?;
//! let out = ctx.generate_speculative_greedy(&prompt, 64, &NgramDraft::default())?;
//! println!("accepted {} of {} drafted", out.stats.accepted, out.stats.drafted);
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use crate::batch::{Batch, Pos};
use crate::context::{Context, Generation};
use crate::error::{Error, Result};
use crate::model::Token;

/// N-gram drafting options (llama.cpp's `--spec-draft-n-max`, `--spec-draft-n-min` and the
/// n-gram size of `ngram-simple`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgramDraft {
    /// Tokens matched: the last `ngram` tokens are looked up earlier in the text.
    pub ngram: usize,
    /// The most tokens drafted per step.
    pub n_max: usize,
    /// Drafts shorter than this are not verified (a plain decode instead).
    pub n_min: usize,
}

impl Default for NgramDraft {
    fn default() -> Self {
        NgramDraft { ngram: 3, n_max: 8, n_min: 1 }
    }
}

impl NgramDraft {
    fn check(&self) -> Result<()> {
        let bad = |what: &str| Error::Speculative { problem: what.to_string() };
        if self.ngram == 0 {
            return Err(bad("the n-gram size must be at least 1"));
        }
        if self.n_max == 0 {
            return Err(bad("n_max (--spec-draft-n-max) must be at least 1"));
        }
        if self.n_min > self.n_max {
            return Err(bad(&format!(
                "n_min {} (--spec-draft-n-min) is above n_max {} (--spec-draft-n-max)",
                self.n_min, self.n_max
            )));
        }
        Ok(())
    }

    /// The draft after `history`: the tokens that followed the latest earlier occurrence of its
    /// last `ngram` tokens, at most `limit`.
    pub fn draft(&self, history: &[Token], limit: usize) -> Vec<Token> {
        let n = self.ngram;
        let limit = limit.min(self.n_max);
        if history.len() <= n || limit == 0 {
            return Vec::new();
        }
        let key = &history[history.len() - n..];
        // The latest occurrence that is not the key itself.
        for start in (0..history.len() - n).rev() {
            if &history[start..start + n] == key {
                let from = start + n;
                let to = (from + limit).min(history.len());
                return history[from..to].to_vec();
            }
        }
        Vec::new()
    }
}

/// What speculation did during a generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecStats {
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens the target accepted.
    pub accepted: usize,
    /// Verification batches (steps with a draft).
    pub verified: usize,
    /// Steps decoded without a draft.
    pub plain: usize,
    /// `accepted_at[i]`: drafts whose token at position `i` was accepted.
    pub accepted_at: Vec<usize>,
    /// `drafted_at[i]`: drafts that had a token at position `i`.
    pub drafted_at: Vec<usize>,
    /// Time spent finding drafts.
    pub draft_time: Duration,
    /// Time spent decoding (verification and plain steps).
    pub decode_time: Duration,
}

impl SpecStats {
    /// Accepted over drafted (0 when nothing was drafted).
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 { 0.0 } else { self.accepted as f64 / self.drafted as f64 }
    }
}

/// A speculative generation: the tokens and timings, and the speculation statistics.
#[derive(Debug, Clone)]
pub struct SpecGeneration {
    /// As [`Context::generate_greedy`] reports it.
    pub generation: Generation,
    /// Drafting and acceptance.
    pub stats: SpecStats,
}

impl<'m> Context<'m> {
    /// Greedy generation of up to `max_tokens` tokens after `prompt` (appended to the cache,
    /// as [`generate_greedy`](Self::generate_greedy) does), verifying n-gram drafts in
    /// batches. Stops at end of generation. As with `generate_greedy`, the last token is not
    /// decoded; afterwards the cache holds the prompt and the other generated tokens.
    pub fn generate_speculative_greedy(
        &mut self,
        prompt: &[Token],
        max_tokens: usize,
        draft: &NgramDraft,
    ) -> Result<SpecGeneration> {
        draft.check()?;
        if prompt.is_empty() {
            return Err(Error::EmptyInput { what: "prompt" });
        }
        let model = self.model();
        let t0 = Instant::now();
        self.decode(prompt)?;
        let prompt_time = t0.elapsed();
        let t1 = Instant::now();
        let mut stats = SpecStats::default();
        let mut history: Vec<Token> = prompt.to_vec();
        let mut tokens = Vec::new();
        let mut next = self.sample_greedy()?;
        let n_ctx = self.n_ctx_seq() as usize;
        let mut batch = Batch::new(draft.n_max + 1, 1)?;
        let mut stopped_at_eog = false;
        while tokens.len() < max_tokens {
            if model.is_eog(next) {
                stopped_at_eog = true;
                break;
            }
            tokens.push(next);
            history.push(next);
            if tokens.len() == max_tokens {
                break;
            }
            let pos = self.n_past();
            if pos >= n_ctx {
                break;
            }
            // Room for the draft: the cache, and the tokens still wanted after `next`.
            let room = (n_ctx - pos - 1).min(max_tokens - tokens.len());
            let td = Instant::now();
            let mut d = draft.draft(&history, room);
            stats.draft_time += td.elapsed();
            if d.len() < draft.n_min {
                d.clear();
            }
            batch.clear();
            batch.add(next, pos as Pos, &[0], true)?;
            for (i, &t) in d.iter().enumerate() {
                batch.add(t, (pos + 1 + i) as Pos, &[0], true)?;
            }
            let tv = Instant::now();
            let guesses: Vec<Token> = {
                let out = self.decode_batch(&batch)?;
                (0..batch.len()).map(|i| out.argmax(i)).collect::<Result<_>>()?
            };
            stats.decode_time += tv.elapsed();
            if d.is_empty() {
                stats.plain += 1;
                next = guesses[0];
                continue;
            }
            stats.verified += 1;
            stats.drafted += d.len();
            if stats.drafted_at.len() < d.len() {
                stats.drafted_at.resize(d.len(), 0);
                stats.accepted_at.resize(d.len(), 0);
            }
            let j = d.iter().zip(&guesses).take_while(|(a, b)| a == b).count();
            stats.drafted_at[..d.len()].iter_mut().for_each(|n| *n += 1);
            stats.accepted_at[..j].iter_mut().for_each(|n| *n += 1);
            // Accept d[..j], stopping early at the budget or an end-of-generation token.
            let mut kept = 0;
            let mut budget = false;
            let mut eog = false;
            for &t in &d[..j] {
                if model.is_eog(t) {
                    eog = true;
                    break;
                }
                tokens.push(t);
                history.push(t);
                kept += 1;
                if tokens.len() == max_tokens {
                    budget = true;
                    break;
                }
            }
            stats.accepted += j;
            // Keep `next` and the kept drafts in the cache and remove the rest; at the budget
            // the last token leaves the cache too, as generate_greedy never decodes it.
            let keep = pos + 1 + kept - usize::from(budget);
            self.seq_remove(0, keep as Pos..)?;
            if eog {
                stopped_at_eog = true;
                break;
            }
            if budget {
                break;
            }
            next = guesses[j];
        }
        let gen_time = t1.elapsed();
        Ok(SpecGeneration {
            generation: Generation { tokens, stopped_at_eog, n_prompt: prompt.len(), prompt_time, gen_time },
            stats,
        })
    }
}
