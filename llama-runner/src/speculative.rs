//! Speculative generation: a [`Drafter`] proposes tokens to follow the text (n-gram lookup in
//! the prompt and the text so far, [`NgramDraft`], or a smaller model, [`DraftModel`]); the
//! target decodes the last token and the whole draft in one batch and keeps the draft as far as
//! its own choice agrees, plus its next token. Rejected positions are removed from the cache
//! again.
//!
//! [`Context::stream_speculative`] does this for any sampler chain, with llama.cpp's acceptance
//! rule (every emitted token is the chain's sample from the target's logits at its position),
//! stop conditions, streamed text and cancellation; [`Context::generate_speculative_greedy`]
//! runs it greedily to the end. Greedy output is plain greedy generation's, token for token,
//! and a sampled one plain sampling's with the same seed, as long as a batch of tokens yields
//! the same logits as single-token decodes (llama.cpp's CPU kernels are not guaranteed
//! bit-identical across batch sizes; the tests check exactness on the generated and the real
//! model, explain every divergence as a near-tie, and test the sampled distribution).
//!
//! ```no_run
//! use llama_runner::speculative::NgramDraft;
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Sampler, SamplingOptions, StopConditions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! let prompt = model.tokenize("Repeat after me: the quick brown fox jumps over the lazy dog.", true)?;
//! let out = ctx.generate_speculative_greedy(&prompt, 64, &NgramDraft::default())?;
//! println!("accepted {} of {} drafted", out.stats.accepted, out.stats.drafted);
//!
//! // Any sampler chain, streamed, stopped at a string, drafting from the prompt:
//! let options = SamplingOptions { temp: 0.7, seed: 42, ..Default::default() };
//! let mut sampler = Sampler::new(&model, &options)?;
//! let mut drafter = NgramDraft::default();
//! ctx.clear();
//! let stop = StopConditions { max_tokens: 64, stop_strings: vec!["dog.".into()], ..Default::default() };
//! let mut stream = ctx.stream_speculative(&mut sampler, &[], &prompt, stop, &mut drafter)?;
//! for event in stream.by_ref() {
//!     print!("{}", event?.text());
//! }
//! println!("\n{:?}", stream.speculation());
//! # Ok(()) }
//! ```

use std::time::Duration;

use crate::batch::{Batch, Pos};
use crate::context::{Context, Generation};
use crate::error::{Error, Result};
use crate::model::Token;
use crate::sampling::Sampler;
use crate::stream::{Event, StopConditions};

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

/// A source of drafts for [`Context::generate_speculative_greedy_with`]: n-gram lookup
/// ([`NgramDraft`]) or a draft model ([`DraftModel`]).
pub trait Drafter {
    /// A generation starts after `history` (what the cache holds and the prompt): drafters
    /// with state keep what still applies (llama.cpp's `common_speculative_begin`). The
    /// default does nothing.
    fn begin(&mut self, history: &[Token]) {
        let _ = history;
    }

    /// Up to `limit` tokens proposed to follow `history` (the prompt and every token generated
    /// so far, the last one included).
    fn propose(&mut self, history: &[Token], limit: usize) -> Result<Vec<Token>>;

    /// The target accepted `n` tokens of the last draft it verified (llama.cpp's
    /// `common_speculative_accept`). The default does nothing.
    fn accepted(&mut self, n: usize) {
        let _ = n;
    }

    /// The most tokens proposed per step (`--spec-draft-n-max`).
    fn n_max(&self) -> usize;

    /// Drafts shorter than this are not verified (`--spec-draft-n-min`).
    fn n_min(&self) -> usize;
}

impl Drafter for NgramDraft {
    fn propose(&mut self, history: &[Token], limit: usize) -> Result<Vec<Token>> {
        Ok(self.draft(history, limit))
    }

    fn n_max(&self) -> usize {
        self.n_max
    }

    fn n_min(&self) -> usize {
        self.n_min
    }
}

/// llama.cpp's `ngram-map-k` and `ngram-map-k4v` drafters (`common/ngram-map.cpp`), token for
/// token: the last `size_n` tokens (the key) are looked up earlier in the text (through a hash
/// of every key seen, then by scanning back), and the `size_m` tokens that followed the match
/// are the draft, cut to as many as the target accepted the last time this key drafted.
/// `ngram-map-k4v` also counts the up to 4 different continuations seen after the key and
/// drafts only once the key was seen `min_hits` times and its most frequent continuation is at
/// least twice as frequent as the others together (the draft is still the text after the
/// match, as llama.cpp takes it). The state follows the text across generations:
/// [`Drafter::begin`] forgets what lies past a history that was cut.
#[derive(Clone)]
pub struct NgramMap {
    size_n: usize,
    size_m: usize,
    key_only: bool,
    min_hits: u16,
    n_min: usize,
    keys: Vec<MapKey>,
    /// The history's length at the last `begin`.
    size_last_begin: usize,
    /// The key and value slot of the last draft, until `accepted`.
    last_draft: Option<(usize, usize)>,
    /// The history's length at the last look-up.
    idx_last_check: usize,
    /// Hash of a key (mod the size) to the index of a key with that hash (0: none).
    key_map: Vec<u32>,
    /// Keys at indices up to this one are in `key_map`.
    key_map_last_idx: usize,
}

impl std::fmt::Debug for NgramMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the 2^18-entry hash map.
        f.debug_struct("NgramMap")
            .field("key_only", &self.key_only)
            .field("size_n", &self.size_n)
            .field("size_m", &self.size_m)
            .field("min_hits", &self.min_hits)
            .field("n_min", &self.n_min)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A key seen in the text, with the continuations seen after it (`common_ngram_map_key`).
#[derive(Debug, Clone)]
struct MapKey {
    key_idx: usize,
    /// Continuations are counted up to this index.
    stat_idx: usize,
    key_num: u16,
    values: [MapValue; MAP_VALUES],
}

/// One continuation of a key (`common_ngram_map_value`).
#[derive(Debug, Clone, Copy, Default)]
struct MapValue {
    /// Where it starts in the text (0: slot unused).
    value_idx: usize,
    value_num: u16,
    /// Tokens of it the target accepted the last time it drafted (`size_m` at first).
    n_accepted: usize,
}

/// Continuations kept per key (`COMMON_NGRAM_MAX_VALUES`).
const MAP_VALUES: usize = 4;
/// Entries of the key hash map (`COMMON_NGRAM_HASH_MAP_SIZE`).
const MAP_HASH_SIZE: usize = 1 << 18;
/// Counts saturate here (`COMMON_NGRAM_MAX_VALUE_COUNT`).
const MAP_MAX_COUNT: u16 = 16380;

impl NgramMap {
    /// `ngram-map-k` (`key_only`) or `ngram-map-k4v`, with llama.cpp's sizes
    /// (`--spec-ngram-map-k-size-n`, `-size-m`, `-min-hits`) and the shortest draft verified
    /// (`--spec-draft-n-min`). Sizes must be 1 to 1024 and `min_hits` at least 1, as
    /// llama.cpp's parser requires, and `n_min` at most `size_m`.
    pub fn new(key_only: bool, size_n: usize, size_m: usize, min_hits: u16, n_min: usize) -> Result<NgramMap> {
        let bad = |what: String| Error::Speculative { problem: what };
        let name = if key_only { "ngram-map-k" } else { "ngram-map-k4v" };
        for (what, v) in [("size-n", size_n), ("size-m", size_m)] {
            if !(1..=1024).contains(&v) {
                return Err(bad(format!("--spec-{name}-{what} {v} is not between 1 and 1024")));
            }
        }
        if min_hits == 0 {
            return Err(bad(format!("--spec-{name}-min-hits must be at least 1")));
        }
        if n_min > size_m {
            return Err(bad(format!(
                "n_min {n_min} (--spec-draft-n-min) is above the draft size {size_m} (--spec-{name}-size-m)"
            )));
        }
        Ok(NgramMap {
            size_n,
            size_m,
            key_only,
            min_hits,
            n_min,
            keys: Vec::new(),
            size_last_begin: 0,
            last_draft: None,
            idx_last_check: 0,
            key_map: vec![0; MAP_HASH_SIZE],
            key_map_last_idx: 0,
        })
    }

    /// The LCG hash llama.cpp keys its map by (a uint32_t, wrapping).
    fn hash(tokens: &[Token]) -> usize {
        tokens.iter().fold(0u32, |h, &t| h.wrapping_mul(2_654_435_761).wrapping_add(t as u32)) as usize % MAP_HASH_SIZE
    }

    /// `common_ngram_map_begin`: a generation starts after `tokens`; keys and continuations
    /// past what it still shares with the last begin are dropped.
    fn start(&mut self, tokens: &[Token]) {
        let (n, m) = (self.size_n, self.size_m);
        let size_begin = tokens.len();
        let mut cleanup = self.size_last_begin;
        if cleanup > size_begin {
            cleanup = size_begin.saturating_sub(n + m);
        }
        if size_begin < self.idx_last_check {
            for e in self.key_map.iter_mut().filter(|e| **e != 0 && **e as usize >= cleanup) {
                *e = 0;
            }
            self.key_map_last_idx = cleanup.saturating_sub(1);
            let key_only = self.key_only;
            self.keys.retain_mut(|key| {
                if key.key_idx >= cleanup {
                    return false;
                }
                if key_only {
                    return true;
                }
                for j in (0..MAP_VALUES).rev() {
                    if key.values[j].value_idx != 0 && key.values[j].value_idx >= cleanup {
                        key.values.copy_within(j + 1.., j);
                        let last = &mut key.values[MAP_VALUES - 1];
                        (last.value_idx, last.value_num) = (0, 0);
                    }
                }
                key.values[0].value_idx != 0
            });
        }
        self.idx_last_check = size_begin;
        self.size_last_begin = size_begin;
    }

    /// `common_ngram_map_draft` for the text `inp` and the token `sampled` after it.
    fn lookup(&mut self, inp: &[Token], sampled: Token) -> Vec<Token> {
        self.last_draft = None;
        let (n, m) = (self.size_n, self.size_m);
        let cur_len = inp.len();
        if cur_len < 2 * n + m || cur_len >= u32::MAX as usize {
            return Vec::new();
        }
        if self.idx_last_check > cur_len || self.size_last_begin > cur_len {
            // llama.cpp aborts here (a history shorter than at the last begin): begin again.
            self.start(inp);
        }
        self.idx_last_check = cur_len;
        let mut key = inp[cur_len - n + 1..].to_vec();
        key.push(sampled);
        let at = |j: usize| &inp[j..j + n];
        // Candidate positions: [1, size_last_begin - n - m - 1] and then (size_last_begin,
        // cur_len - n - m - 1], each scanned downwards and above key_map_last_idx.
        let old_top =
            self.size_last_begin.checked_sub(n + m + 1).filter(|&t| t > 0 && self.size_last_begin > n + m + 1);
        let new_top = cur_len - n - m - 1;
        let floor = self.key_map_last_idx;
        let (last_begin, old_floor) = (self.size_last_begin, floor);
        let old_range = move || old_top.into_iter().flat_map(move |top| (old_floor + 1..=top).rev());
        let new_range = move || (last_begin.max(floor) + 1..=new_top).rev();
        let mut match_pos = 0;
        let idx_key = self.key_map[Self::hash(&key)] as usize;
        if idx_key != 0 && idx_key < new_top && at(idx_key) == key.as_slice() {
            match_pos = idx_key;
        }
        if match_pos == 0 {
            match_pos = old_range().find(|&j| at(j) == key.as_slice()).unwrap_or(0);
        }
        if match_pos == 0 {
            match_pos = new_range().find(|&j| at(j) == key.as_slice()).unwrap_or(0);
        }
        for j in old_range().chain(new_range()) {
            let slot = &mut self.key_map[Self::hash(at(j))];
            if *slot == 0 {
                *slot = j as u32;
            }
        }
        self.key_map_last_idx = self.key_map_last_idx.max(new_top);
        if match_pos == 0 {
            return Vec::new();
        }
        // Stored indices are below the text's length since the last begin; `get` keeps a
        // text changed in place (not through `begin`) from indexing past it.
        let offset = match self.keys.iter().position(|k| inp.get(k.key_idx..k.key_idx + n) == Some(&key[..])) {
            Some(i) => i,
            None => {
                let value = MapValue { value_idx: 0, value_num: 0, n_accepted: m };
                self.keys.push(MapKey { key_idx: match_pos, stat_idx: 0, key_num: 0, values: [value; MAP_VALUES] });
                self.keys.len() - 1
            }
        };
        let key_only = self.key_only;
        let min_hits = self.min_hits;
        let curr = &mut self.keys[offset];
        curr.key_num = (curr.key_num + 1).min(MAP_MAX_COUNT);
        let draft = |n_accepted: usize| inp[match_pos + n..match_pos + n + m.min(n_accepted)].to_vec();
        if key_only {
            self.last_draft = Some((offset, 0));
            return draft(curr.values[0].n_accepted);
        }
        if curr.key_num < min_hits {
            return Vec::new();
        }
        // Count the continuations after each occurrence of the key not counted yet.
        for i in curr.stat_idx..=match_pos {
            if inp[i..i + n] != key[..] {
                continue;
            }
            let value_at = i + n;
            let mut found = None;
            for (v, value) in curr.values.iter_mut().enumerate() {
                if value.value_idx == 0 {
                    *value = MapValue { value_idx: value_at, value_num: 0, n_accepted: m };
                    found = Some(v);
                    break;
                }
                if inp.get(value.value_idx..value.value_idx + m) == Some(&inp[value_at..value_at + m]) {
                    found = Some(v);
                    break;
                }
            }
            if let Some(v) = found {
                curr.values[v].value_num = (curr.values[v].value_num + 1).min(MAP_MAX_COUNT);
            }
        }
        curr.stat_idx = match_pos;
        let (mut slot, mut max) = (0, 0);
        for (v, value) in curr.values.iter().enumerate() {
            if value.value_num > max {
                (slot, max) = (v, value.value_num);
            }
        }
        let others: u32 =
            curr.values.iter().enumerate().filter(|(v, _)| *v != slot).map(|(_, x)| u32::from(x.value_num)).sum();
        if others > 0 && u32::from(max) < 2 * others {
            return Vec::new();
        }
        let n_accepted = curr.values[slot].n_accepted;
        self.last_draft = Some((offset, slot));
        draft(n_accepted)
    }
}

impl Drafter for NgramMap {
    fn begin(&mut self, history: &[Token]) {
        self.start(history);
    }

    fn propose(&mut self, history: &[Token], limit: usize) -> Result<Vec<Token>> {
        let Some((&sampled, inp)) = history.split_last() else { return Ok(Vec::new()) };
        let mut draft = self.lookup(inp, sampled);
        draft.truncate(limit);
        Ok(draft)
    }

    fn accepted(&mut self, n: usize) {
        if let Some((key, slot)) = self.last_draft
            && let Some(k) = self.keys.get_mut(key)
        {
            k.values[slot].n_accepted = n;
        }
    }

    fn n_max(&self) -> usize {
        self.size_m
    }

    fn n_min(&self) -> usize {
        self.n_min
    }
}

/// How close a draft model's vocabulary must be to the target's, as llama.cpp checks it
/// (`common_speculative_are_compatible`): the sizes differ by at most this many tokens...
pub const MAX_VOCAB_SIZE_DIFFERENCE: u32 = 128;
/// ...and the texts of the tokens from this id on agree.
const VOCAB_CHECK_START: u32 = 5;

/// Drafting with a second (smaller) model: it greedily continues the text in its own context,
/// whose cache follows the accepted text (its longest agreeing prefix kept, the rest decoded),
/// and stops a draft early where its top token's probability is below `p_min`
/// (`--spec-draft-p-min`; llama.cpp's `draft-simple`).
pub struct DraftModel<'c, 'd> {
    ctx: &'c mut Context<'d>,
    n_max: usize,
    n_min: usize,
    p_min: f32,
    /// The target's vocabulary size: draft tokens past it end the draft.
    target_vocab: u32,
    /// The tokens at positions 0.. of the draft context's sequence 0.
    cached: Vec<Token>,
    batch: Batch,
}

impl std::fmt::Debug for DraftModel<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel")
            .field("n_max", &self.n_max)
            .field("n_min", &self.n_min)
            .field("p_min", &self.p_min)
            .finish_non_exhaustive()
    }
}

impl<'c, 'd> DraftModel<'c, 'd> {
    /// Drafts with the model of `ctx` (its cache is cleared) for `target`: at most `n_max`
    /// tokens a step, drafts shorter than `n_min` dropped, a draft ended where the draft
    /// model's top probability is below `p_min` (0 never ends one early).
    ///
    /// Errors ([`Error::Speculative`]): a vocabulary llama.cpp would refuse for speculation
    /// (another tokenizer type, other BOS/EOS handling, sizes more than
    /// [`MAX_VOCAB_SIZE_DIFFERENCE`] apart, a token text that differs, named with its id),
    /// `n_max` 0, `n_min > n_max`, a `p_min` outside 0..=1.
    pub fn new(
        ctx: &'c mut Context<'d>,
        target: &crate::model::Model,
        n_max: usize,
        n_min: usize,
        p_min: f32,
    ) -> Result<Self> {
        let bad = |problem: String| Error::Speculative { problem };
        if n_max == 0 {
            return Err(bad("n_max (--spec-draft-n-max) must be at least 1".into()));
        }
        if n_min > n_max {
            return Err(bad(format!("n_min {n_min} (--spec-draft-n-min) is above n_max {n_max} (--spec-draft-n-max)")));
        }
        if !(0.0..=1.0).contains(&p_min) {
            return Err(bad(format!("p_min {p_min} (--spec-draft-p-min) is not a probability")));
        }
        check_vocabularies(target, ctx.model())?;
        ctx.clear();
        let batch = Batch::new(1, 1)?;
        Ok(DraftModel { ctx, n_max, n_min, p_min, target_vocab: target.n_vocab(), cached: Vec::new(), batch })
    }

    /// Decodes `token` at the end of the draft cache; returns the top token and its
    /// probability.
    fn step(&mut self, token: Token) -> Result<(Token, f32)> {
        let pos = self.cached.len();
        self.batch.clear();
        self.batch.add(token, pos as Pos, &[0], true)?;
        let out = self.ctx.decode_batch(&self.batch)?;
        let logits = out.logits(0)?;
        let top = out.argmax(0)?;
        let max = logits[top as usize];
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        self.cached.push(token);
        Ok((top, (1.0 / sum) as f32))
    }
}

impl Drafter for DraftModel<'_, '_> {
    fn propose(&mut self, history: &[Token], limit: usize) -> Result<Vec<Token>> {
        let limit = limit.min(self.n_max);
        let Some((&last, before)) = history.split_last() else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Keep the cached prefix the history still starts with; the last history token is
        // decoded again below in any case, for its logits.
        let keep = self.cached.iter().zip(before).take_while(|(a, b)| a == b).count();
        if keep < self.cached.len() && self.ctx.seq_remove(0, keep as Pos..).is_err() {
            self.ctx.clear();
            self.cached.clear();
        }
        self.cached.truncate(keep.min(self.cached.len()));
        let rest = &before[self.cached.len()..];
        if self.cached.len() + rest.len() + limit + 1 > self.ctx.n_ctx_seq() as usize {
            // The draft context is full: no draft (the target goes on alone).
            return Ok(Vec::new());
        }
        if !rest.is_empty() {
            self.ctx.decode(rest)?;
            self.cached.extend_from_slice(rest);
        }
        let mut draft = Vec::new();
        let (mut top, mut p) = self.step(last)?;
        loop {
            if p < self.p_min || top < 0 || top as u32 >= self.target_vocab {
                break;
            }
            draft.push(top);
            if draft.len() == limit {
                break;
            }
            (top, p) = self.step(top)?;
        }
        Ok(draft)
    }

    fn n_max(&self) -> usize {
        self.n_max
    }

    fn n_min(&self) -> usize {
        self.n_min
    }
}

/// llama.cpp's `common_speculative_are_compatible`, as an error naming the difference.
fn check_vocabularies(target: &crate::model::Model, draft: &crate::model::Model) -> Result<()> {
    let bad = |problem: String| Err(Error::Speculative { problem: format!("the draft model's vocabulary: {problem}") });
    let (vt, vd) = (target.vocab_type(), draft.vocab_type());
    if vt != vd {
        return bad(format!("tokenizer type {vd}, the target's is {vt}"));
    }
    if target.adds_bos() != draft.adds_bos() || (target.adds_bos() && target.bos() != draft.bos()) {
        return bad(format!(
            "BOS {:?} (added: {}), the target's is {:?} (added: {})",
            draft.bos(),
            draft.adds_bos(),
            target.bos(),
            target.adds_bos()
        ));
    }
    if target.adds_eos() != draft.adds_eos() || (target.adds_eos() && target.eos() != draft.eos()) {
        return bad(format!(
            "EOS {:?} (added: {}), the target's is {:?} (added: {})",
            draft.eos(),
            draft.adds_eos(),
            target.eos(),
            target.adds_eos()
        ));
    }
    let (nt, nd) = (target.n_vocab(), draft.n_vocab());
    if nt.abs_diff(nd) > MAX_VOCAB_SIZE_DIFFERENCE {
        return bad(format!("{nd} tokens, the target has {nt} (at most {MAX_VOCAB_SIZE_DIFFERENCE} apart)"));
    }
    for id in VOCAB_CHECK_START..nt.min(nd) {
        let (a, b) = (target.token_text(id as Token), draft.token_text(id as Token));
        if a != b {
            return bad(format!("token {id} is {b:?}, the target's is {a:?}"));
        }
    }
    Ok(())
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
        self.generate_speculative_greedy_with(prompt, max_tokens, &mut draft.clone())
    }

    /// [`generate_speculative_greedy`](Self::generate_speculative_greedy) with any
    /// [`Drafter`]: n-gram lookup, or a draft model ([`DraftModel`]). It runs
    /// [`stream_speculative`](Self::stream_speculative) with a greedy sampler to the end; use
    /// that for a sampler chain, stop strings or streamed text.
    pub fn generate_speculative_greedy_with(
        &mut self,
        prompt: &[Token],
        max_tokens: usize,
        drafter: &mut dyn Drafter,
    ) -> Result<SpecGeneration> {
        let mut sampler = Sampler::greedy(self.model())?;
        let stop = StopConditions::max_tokens(max_tokens);
        let mut stream = self.stream_speculative(&mut sampler, &[], prompt, stop, drafter)?;
        for event in stream.by_ref() {
            if let Event::Done { generation, .. } = event? {
                let stats = stream.speculation().cloned().unwrap_or_default();
                return Ok(SpecGeneration { generation, stats });
            }
        }
        // A stream ends with `Done` or an error.
        Err(Error::Aborted)
    }
}
