//! Streaming generation: text pieces, stop conditions and statistics, on the generated models
//! (byte-level vocabularies, so a model's output is arbitrary bytes) and on the real model
//! when it is there. Expected values come from a first run of the runner itself (runner
//! against runner), never from stored outputs, so they hold on any CPU.

mod common;

use std::path::PathBuf;

use llama_runner::sampling::{self, SamplingOptions};
use llama_runner::{
    Backend, Context, ContextOptions, Error, Event, Generation, Model, ModelOptions, Sampler, StopConditions,
    StopReason,
};
use tiny_gguf::ModelSpec;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";
const MULTIBYTE: &str = "日本語のテキスト 😀 émoji 🦀: ";

/// What a stream produced.
struct Run {
    /// Token events in order, with their text.
    pieces: Vec<(i32, String)>,
    /// The text of every event.
    text: String,
    generation: Generation,
    reason: StopReason,
}

fn ctx_opts() -> ContextOptions {
    ContextOptions { n_ctx: 512, n_threads: Some(2), ..Default::default() }
}

fn run(model: &Model, sampler: &mut Sampler<'_>, prompt: &str, stop: StopConditions) -> Run {
    let mut ctx = Context::new(model, &ctx_opts()).unwrap();
    let prompt = model.tokenize(prompt, true).unwrap();
    run_in(&mut ctx, sampler, &prompt, stop)
}

fn run_in(ctx: &mut Context<'_>, sampler: &mut Sampler<'_>, prompt: &[i32], stop: StopConditions) -> Run {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut done = None;
    let mut flushes = 0;
    for event in ctx.stream(sampler, prompt, stop).unwrap() {
        let event = event.unwrap();
        assert!(done.is_none(), "an event after Done: {event:?}");
        text.push_str(event.text());
        match event {
            Event::Token { id, text } => {
                assert_eq!(flushes, 0, "a token after the flush");
                pieces.push((id, text));
            }
            Event::Flush { .. } => flushes += 1,
            Event::Done { generation, reason } => done = Some((generation, reason)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(flushes <= 1);
    let (generation, reason) = done.expect("a Done event");
    Run { pieces, text, generation, reason }
}

fn greedy_run(model: &Model, prompt: &str, stop: StopConditions) -> Run {
    run(model, &mut Sampler::greedy(model).unwrap(), prompt, stop)
}

/// A token whose text is `x`, to put in front of generated tokens when detokenizing them:
/// llama.cpp's detokenize drops the leading space of the first token for vocabularies with a
/// space prefix, which a stream in the middle of a text must not do.
fn sentinel(model: &Model) -> i32 {
    model.tokenize("x", false).unwrap().into_iter().find(|&t| model.token_piece(t).unwrap() == "x").unwrap()
}

/// The model's own detokenization of `tokens` (special tokens not rendered), as they read in
/// the middle of a text.
fn detokenized(model: &Model, tokens: &[i32]) -> String {
    let x = sentinel(model);
    let text = model.detokenize(&[&[x], tokens].concat()).unwrap();
    text.strip_prefix('x').expect("the sentinel comes first").to_string()
}

fn load(path: &PathBuf) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

/// Streamed text equals the detokenized tokens; tokens, counts and timings equal the
/// non-streaming loop's.
fn text_and_tokens_match_detokenize_and_generate(path: PathBuf, n: usize) {
    let model = load(&path);
    for prompt in [PROMPT, MULTIBYTE] {
        let r = greedy_run(&model, prompt, StopConditions::max_tokens(n));
        let tokens: Vec<i32> = r.pieces.iter().map(|p| p.0).collect();
        assert_eq!(tokens, r.generation.tokens);
        assert_eq!(r.text, detokenized(&model, &tokens), "{prompt:?}: streamed text differs from detokenize");
        // Each prefix of the text is the lossy decoding of a prefix of the bytes: no piece
        // ends inside a code point that a later token completes.
        let mut so_far = String::new();
        for (i, (_, piece)) in r.pieces.iter().enumerate() {
            so_far.push_str(piece);
            let full = detokenized(&model, &tokens[..=i]);
            let held = full.strip_prefix(so_far.as_str());
            assert!(
                matches!(held, Some("" | "\u{fffd}")),
                "{prompt:?}: after token {i} the stream has {so_far:?}, the tokens say {full:?}"
            );
        }

        // The same tokens as the generation loop, with the same counts.
        let mut ctx = Context::new(&model, &ctx_opts()).unwrap();
        let p = model.tokenize(prompt, true).unwrap();
        let g = sampling::generate(&mut ctx, &mut Sampler::greedy(&model).unwrap(), &p, n).unwrap();
        if r.reason == StopReason::MaxTokens {
            assert_eq!(g.tokens, tokens);
            assert!(!r.generation.stopped_at_eog);
        } else {
            assert!(matches!(r.reason, StopReason::EndOfGeneration(_)), "{:?}", r.reason);
            assert!(r.generation.stopped_at_eog && g.stopped_at_eog);
            assert_eq!(g.tokens, tokens);
        }
        assert_eq!(r.generation.n_prompt, p.len());
        assert!(r.generation.prompt_tps() > 0.0 && r.generation.gen_tps() > 0.0);
    }
}

/// A seeded sampler gives the same tokens through the stream as through `sampling::generate`.
fn seeded_sampler_matches_generate(path: PathBuf) {
    let model = load(&path);
    let options = SamplingOptions::builder().temperature(0.9).top_k(40).seed(1234).build().unwrap();
    let r = run(&model, &mut Sampler::new(&model, &options).unwrap(), PROMPT, StopConditions::max_tokens(24));
    let mut ctx = Context::new(&model, &ctx_opts()).unwrap();
    let p = model.tokenize(PROMPT, true).unwrap();
    let g = sampling::generate(&mut ctx, &mut Sampler::new(&model, &options).unwrap(), &p, 24).unwrap();
    assert_eq!(r.generation.tokens, g.tokens);
}

/// Byte offsets where each token's text starts in the streamed text, when every piece is
/// released at once (no stop strings, valid UTF-8 ends); `None` when a piece was held back.
fn boundaries(r: &Run) -> Vec<usize> {
    let mut at = 0;
    r.pieces
        .iter()
        .map(|(_, p)| {
            let start = at;
            at += p.len();
            start
        })
        .collect()
}

/// Stop strings spanning token boundaries: the text stops right before the stop string's
/// first occurrence, the token that completed it is the last; a stop string that never
/// completes holds text back and releases it.
fn stop_strings_span_tokens(path: PathBuf) {
    let model = load(&path);
    let n = 32;
    let first = greedy_run(&model, PROMPT, StopConditions::max_tokens(n));
    assert_eq!(first.reason, StopReason::MaxTokens, "the model stopped early; pick another prompt");
    let text = &first.text;
    let starts = boundaries(&first);
    // A stop string from the middle of one non-empty piece into the next ones, at character
    // boundaries: three characters starting at the last character of a piece.
    let mut found = None;
    for (i, &s) in starts.iter().enumerate().skip(2) {
        let piece = &first.pieces[i].1;
        if piece.is_empty() {
            continue;
        }
        let last_char = s + piece.char_indices().last().unwrap().0;
        let stop: String = text[last_char..].chars().take(3).collect();
        let end = last_char + stop.len();
        // It must end in a later token and occur first right here.
        let in_later = starts.iter().any(|&b| b > last_char && b < end);
        if stop.chars().count() == 3 && in_later && text.find(&stop) == Some(last_char) {
            found = Some((stop, last_char, end));
            break;
        }
    }
    let (stop, at, end) = found.expect("a stop string spanning tokens in the first run's text");
    let r = greedy_run(
        &model,
        PROMPT,
        StopConditions { max_tokens: n, stop_strings: vec!["\u{1}never".into(), stop.clone()], ..Default::default() },
    );
    assert_eq!(r.reason, StopReason::StopString(1));
    assert_eq!(r.text, text[..at], "the text before the stop string {stop:?}");
    // The last token is the one whose text completed the stop string.
    let last = starts.iter().rposition(|&b| b < end).unwrap();
    assert_eq!(r.generation.tokens, first.generation.tokens[..=last]);

    // A stop string that starts like the text but never completes: held back, then released;
    // the whole text comes out.
    let never = format!("{}\u{0}", &text[at..end]);
    let r =
        greedy_run(&model, PROMPT, StopConditions { max_tokens: n, stop_strings: vec![never], ..Default::default() });
    assert_eq!(r.reason, StopReason::MaxTokens);
    assert_eq!(r.text, *text);
    assert_eq!(r.generation.tokens, first.generation.tokens);
    // Held back: the token that started the match carried less than its own text.
    let started = starts.iter().rposition(|&b| b <= at).unwrap();
    assert!(r.pieces[started].1.len() < first.pieces[started].1.len(), "no text was held back");

    // Stop token ids: the first occurrence of a token stops before it.
    let k = 5;
    let stop_token = first.generation.tokens[k];
    let k = first.generation.tokens.iter().position(|&t| t == stop_token).unwrap();
    let r = greedy_run(
        &model,
        PROMPT,
        StopConditions { max_tokens: n, stop_tokens: vec![stop_token], ..Default::default() },
    );
    assert_eq!(r.reason, StopReason::StopToken(stop_token));
    assert_eq!(r.generation.tokens, first.generation.tokens[..k]);
    assert_eq!(r.text, detokenized(&model, &first.generation.tokens[..k]));

    // Budget: exactly that many tokens; the last one is not decoded (as generate does).
    let mut ctx = Context::new(&model, &ctx_opts()).unwrap();
    let p = model.tokenize(PROMPT, true).unwrap();
    let r = run_in(&mut ctx, &mut Sampler::greedy(&model).unwrap(), &p, StopConditions::max_tokens(5));
    assert_eq!(
        (r.reason.clone(), r.generation.tokens.as_slice()),
        (StopReason::MaxTokens, &first.generation.tokens[..5])
    );
    assert_eq!(ctx.n_past(), p.len() + 4);
    let r = run_in(&mut ctx, &mut Sampler::greedy(&model).unwrap(), &p[..1], StopConditions::max_tokens(0));
    assert!(r.generation.tokens.is_empty() && r.pieces.is_empty() && r.text.is_empty());
}

fn end_of_generation_and_ignore_eos() {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let eos = tiny_gguf::TOKEN_EOS as i32;
    // A bias that makes the end-of-sequence token the greedy choice every time.
    let options = SamplingOptions::builder().greedy().logit_bias(eos, 1000.0).build().unwrap();
    let r = run(&model, &mut Sampler::new(&model, &options).unwrap(), PROMPT, StopConditions::max_tokens(8));
    assert_eq!(r.reason, StopReason::EndOfGeneration(eos));
    assert!(r.generation.stopped_at_eog && r.generation.tokens.is_empty() && r.pieces.is_empty());

    // ignore_eos: it is generated like any token (its text, a control token's, is empty).
    let stop = StopConditions { max_tokens: 4, ignore_eos: true, ..Default::default() };
    let r = run(&model, &mut Sampler::new(&model, &options).unwrap(), PROMPT, stop);
    assert_eq!(r.reason, StopReason::MaxTokens);
    assert_eq!(r.generation.tokens, [eos; 4]);
    assert!(!r.generation.stopped_at_eog && r.text.is_empty());

    // The sampler's ignore_eos (--ignore-eos bans end-of-generation tokens) runs to the budget.
    let banned = SamplingOptions::builder().greedy().logit_bias(eos, 1000.0).ignore_eos(true).build().unwrap();
    let r = run(&model, &mut Sampler::new(&model, &banned).unwrap(), PROMPT, StopConditions::max_tokens(6));
    assert_eq!(r.reason, StopReason::MaxTokens);
    assert_eq!(r.generation.tokens.len(), 6);
    assert!(!r.generation.tokens.contains(&eos));
}

fn a_full_context_stops_the_stream() {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 64, ..ctx_opts() }).unwrap();
    let n_ctx = ctx.n_ctx() as usize;
    let p = model.tokenize(PROMPT, true).unwrap();
    let until_full = StopConditions { ignore_eos: true, ..Default::default() };
    let r = run_in(&mut ctx, &mut Sampler::greedy(&model).unwrap(), &p, until_full);
    assert_eq!(r.reason, StopReason::ContextFull);
    assert_eq!(ctx.n_past(), n_ctx);
    assert_eq!(r.generation.tokens.len(), n_ctx - p.len() + 1, "every cell used, the last token not decoded");
}

fn bad_stream_inputs_are_refused_before_decoding() {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let other = load(&common::model(&ModelSpec::tiny_llama()));
    let mut ctx = Context::new(&model, &ctx_opts()).unwrap();
    let p = model.tokenize(PROMPT, true).unwrap();
    let mut sampler = Sampler::greedy(&model).unwrap();
    let err = |r: Result<llama_runner::Stream<'_, '_>, Error>| r.map(|_| ()).unwrap_err();
    let e = err(ctx.stream(&mut sampler, &[], StopConditions::default()));
    assert!(matches!(e, Error::EmptyInput { what: "prompt" }), "{e}");
    let stop = StopConditions { stop_strings: vec!["ok".into(), String::new()], ..Default::default() };
    assert!(matches!(err(ctx.stream(&mut sampler, &p, stop)), Error::EmptyStopString));
    let stop = StopConditions { stop_tokens: vec![100_000], ..Default::default() };
    assert!(matches!(err(ctx.stream(&mut sampler, &p, stop)), Error::InvalidToken { token: 100_000, .. }));
    let mut foreign = Sampler::greedy(&other).unwrap();
    assert!(matches!(err(ctx.stream(&mut foreign, &p, StopConditions::default())), Error::SamplerModelMismatch));
    assert!(matches!(err(ctx.stream(&mut sampler, &[1; 600], StopConditions::default())), Error::ContextFull { .. }));
    assert_eq!(ctx.n_past(), 0, "nothing was decoded");
}

fn main() {
    use common::{Prerequisite, trial};
    let tiny = || Prerequisite::Met(common::model(&ModelSpec::tiny_llama()));
    let swa = || Prerequisite::Met(common::model(&ModelSpec::tiny_swa()));
    let mut trials = vec![
        trial("generated/text_matches_detokenize", tiny(), |p| text_and_tokens_match_detokenize_and_generate(p, 48)),
        trial("generated_swa/text_matches_detokenize", swa(), |p| text_and_tokens_match_detokenize_and_generate(p, 48)),
        trial("generated/seeded_sampler_matches_generate", tiny(), seeded_sampler_matches_generate),
        trial("generated/stop_conditions", tiny(), stop_strings_span_tokens),
        trial("real_model/text_matches_detokenize", common::real_model(), |p| {
            text_and_tokens_match_detokenize_and_generate(p, 48)
        }),
        trial("real_model/seeded_sampler_matches_generate", common::real_model(), seeded_sampler_matches_generate),
        trial("real_model/stop_conditions", common::real_model(), stop_strings_span_tokens),
    ];
    for (name, test) in [
        ("end_of_generation_and_ignore_eos", end_of_generation_and_ignore_eos as fn()),
        ("a_full_context_stops_the_stream", a_full_context_stops_the_stream),
        ("bad_stream_inputs_are_refused_before_decoding", bad_stream_inputs_are_refused_before_decoding),
    ] {
        trials.push(trial(name, Prerequisite::Met(()), move |()| test()));
    }
    common::run_trials(trials)
}
