//! Cancellation from another thread: prompt evaluation and generation stop with
//! `Error::Aborted`, and the context then computes exactly what a fresh context computes from
//! the same state (runner against runner, so the result holds on any CPU).

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_runner::{Backend, Context, ContextOptions, Error, Event, Model, ModelOptions, Sampler, StopConditions};
use tiny_gguf::ModelSpec;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";

fn model() -> Model {
    Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default()).unwrap()
}

fn opts(n_batch: u32) -> ContextOptions {
    ContextOptions { n_ctx: 2048, n_batch, n_ubatch: n_batch.min(512), n_threads: Some(2), ..Default::default() }
}

/// A prompt of about 1900 tokens (the generated vocabulary is byte level).
fn long_prompt(model: &Model) -> Vec<i32> {
    let mut p = model.tokenize(&format!("{PROMPT}. ").repeat(42), true).unwrap();
    p.truncate(1900);
    p
}

/// Tokens the cache holds as llama.cpp's memory reports them: a saved state restored into
/// another context takes its count from `llama_memory_seq_pos_max`.
fn cached_tokens(model: &Model, ctx: &mut Context<'_>) -> usize {
    let state = ctx.save_state();
    let mut other = Context::new(model, &opts(512)).unwrap();
    other.restore_state(&state).unwrap();
    other.n_past()
}

/// Greedy tokens of a stream (with its text events dropped), or the error that ended it.
fn stream_tokens(ctx: &mut Context<'_>, model: &Model, prompt: &[i32], n: usize) -> Vec<i32> {
    let mut sampler = Sampler::greedy(model).unwrap();
    let events: Vec<Event> =
        ctx.stream(&mut sampler, prompt, StopConditions::max_tokens(n)).unwrap().collect::<Result<_, _>>().unwrap();
    match events.last() {
        Some(Event::Done { generation, .. }) => generation.tokens.clone(),
        other => panic!("no Done event: {other:?}"),
    }
}

#[test]
fn a_pending_cancel_aborts_the_next_call_and_changes_nothing() {
    let model = model();
    let mut ctx = Context::new(&model, &opts(512)).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    ctx.decode(&prompt).unwrap();
    let next = ctx.sample_greedy().unwrap();

    let cancel = ctx.cancel_handle();
    cancel.cancel();
    assert!(cancel.is_cancelled());
    assert!(matches!(ctx.decode(&[next]), Err(Error::Aborted)));
    assert!(!cancel.is_cancelled(), "the aborted call consumes the cancel");
    assert_eq!(ctx.n_past(), prompt.len());
    assert_eq!(cached_tokens(&model, &mut ctx), prompt.len());
    assert!(ctx.has_logits(), "refused before llama.cpp ran: the logits are still there");
    assert_eq!(ctx.sample_greedy().unwrap(), next);
    // The next call runs.
    ctx.decode(&[next]).unwrap();
    assert_eq!(ctx.n_past(), prompt.len() + 1);

    // The same for a stream: the prompt evaluation is refused, the cache untouched.
    let mut sampler = Sampler::greedy(&model).unwrap();
    ctx.cancel_handle().cancel();
    let err = ctx.stream(&mut sampler, &[next], StopConditions::max_tokens(4)).unwrap_err();
    assert!(matches!(err, Error::Aborted), "{err}");
    assert_eq!(ctx.n_past(), prompt.len() + 1);
}

/// Cancels `decode(prompt)` from another thread after `delay`; returns whether it was aborted.
/// When it was not, the cancel came after the call and is still pending.
fn decode_cancelled_after(ctx: &mut Context<'_>, prompt: &[i32], delay: Duration) -> bool {
    let cancel = ctx.cancel_handle();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(delay);
            cancel.cancel();
        });
        match ctx.decode(prompt) {
            Err(Error::Aborted) => true,
            Ok(()) => false,
            Err(e) => panic!("decode failed: {e}"),
        }
    })
}

/// Cancels mid-prompt with `n_batch` tokens per decode call (the whole prompt in one call:
/// only llama.cpp's abort callback can stop it; small batches: many calls, the cancel seen by
/// the callback or between calls), then checks the cache and what the context computes next.
fn cancel_mid_prompt(n_batch: u32) {
    let model = model();
    let prompt = long_prompt(&model);
    let prefix = model.tokenize("Once upon a time", true).unwrap();
    let rest = &prompt[1..];

    // How long the evaluation takes uncancelled, on this machine.
    let mut timing = Context::new(&model, &opts(n_batch)).unwrap();
    timing.decode(&prefix).unwrap();
    let t0 = Instant::now();
    timing.decode(rest).unwrap();
    let full = t0.elapsed();

    let mut ctx = Context::new(&model, &opts(n_batch)).unwrap();
    ctx.decode(&prefix).unwrap();
    let mut aborted = false;
    for attempt in 0..6 {
        // A third of the way in, and earlier on each retry (a busy machine may be slower).
        let delay = full / (3 << attempt);
        let t = Instant::now();
        if decode_cancelled_after(&mut ctx, rest, delay) {
            assert!(t.elapsed() < full * 3, "the abort took as long as the whole evaluation");
            aborted = true;
            break;
        }
        // Finished before the cancel (now pending): start again in a new context.
        ctx = Context::new(&model, &opts(n_batch)).unwrap();
        ctx.decode(&prefix).unwrap();
    }
    assert!(aborted, "no attempt was cancelled before the evaluation ({full:?}) finished");
    assert!(!ctx.cancel_handle().is_cancelled(), "the aborted call consumes the cancel");
    // As before the call: the prefix, in the memory too.
    assert_eq!(ctx.n_past(), prefix.len());
    assert_eq!(cached_tokens(&model, &mut ctx), prefix.len());
    assert!(matches!(ctx.sample_greedy(), Err(Error::NoLogits)), "the aborted compute left no logits");

    // And it computes what a fresh context computes from the prefix.
    let mut fresh = Context::new(&model, &opts(n_batch)).unwrap();
    fresh.decode(&prefix).unwrap();
    assert_eq!(stream_tokens(&mut ctx, &model, rest, 16), stream_tokens(&mut fresh, &model, rest, 16));
    assert_eq!(ctx.n_past(), fresh.n_past());
}

#[test]
fn cancel_mid_prompt_in_one_decode_call() {
    cancel_mid_prompt(2048);
}

#[test]
fn cancel_mid_prompt_of_many_decode_calls() {
    cancel_mid_prompt(32);
}

/// Cancels a stream from another thread once it has emitted `after` tokens: the helper thread
/// hears of each token through a channel and cancels at the `after`-th without waiting, so the
/// cancel lands while the stream goes on (mid-decode or between steps).
fn cancelled_stream(ctx: &mut Context<'_>, model: &Model, prompt: &[i32], after: usize) -> Vec<i32> {
    let mut sampler = Sampler::greedy(model).unwrap();
    let cancel = ctx.cancel_handle();
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            for _ in 0..after {
                if rx.recv().is_err() {
                    return;
                }
            }
            cancel.cancel();
        });
        let mut emitted = Vec::new();
        for event in ctx.stream(&mut sampler, prompt, StopConditions::max_tokens(1500)).unwrap() {
            match event {
                Ok(Event::Token { id, .. }) => {
                    emitted.push(id);
                    let _ = tx.send(());
                }
                Ok(Event::Done { .. }) => panic!("the stream ended before it was cancelled"),
                Ok(_) => {}
                Err(Error::Aborted) => return emitted,
                Err(e) => panic!("stream failed: {e}"),
            }
        }
        panic!("the stream ended without Done or an error")
    })
}

#[test]
fn cancel_mid_generation_from_another_thread() {
    let model = model();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    let mut ctx = Context::new(&model, &opts(512)).unwrap();
    let emitted = cancelled_stream(&mut ctx, &model, &prompt, 5);
    assert!(emitted.len() >= 5, "cancelled after {} tokens", emitted.len());
    assert!(!ctx.cancel_handle().is_cancelled(), "the aborted step consumes the cancel");
    // The cache holds the prompt and every emitted token but the last (which was being
    // decoded, or about to be).
    let n = prompt.len() + emitted.len() - 1;
    assert_eq!(ctx.n_past(), n);
    assert_eq!(cached_tokens(&model, &mut ctx), n);

    // Continuing from the last emitted token gives what an uncancelled run gives: the same
    // decode calls (the prompt, then one token at a time) in a fresh context.
    let last = *emitted.last().unwrap();
    let continued = stream_tokens(&mut ctx, &model, &[last], 12);
    let mut fresh = Context::new(&model, &opts(512)).unwrap();
    let whole = stream_tokens(&mut fresh, &model, &prompt, emitted.len() + 12);
    assert_eq!([emitted.as_slice(), &continued].concat(), whole);
    assert_eq!(ctx.n_past(), fresh.n_past());
}
