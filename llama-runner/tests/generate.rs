//! Loading and greedy generation on generated models, checked against llama.cpp itself.

mod common;

use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions};
use tiny_gguf::ModelSpec;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";

fn ctx_opts(threads: u32) -> ContextOptions {
    ContextOptions { n_ctx: 256, n_threads: Some(threads), ..Default::default() }
}

fn generate(model: &Model, threads: u32, n: usize) -> Vec<i32> {
    let mut ctx = Context::new(model, &ctx_opts(threads)).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    ctx.generate_greedy(&prompt, n).unwrap().tokens
}

#[test]
fn metadata_of_generated_models() {
    for (spec, arch, experts) in [
        (ModelSpec::tiny_llama(), "llama", 0),
        (ModelSpec::tiny_moe(), "qwen3moe", 4),
        (ModelSpec::tiny_swa(), "gemma3", 0),
    ] {
        let model = Model::load(Backend::get().unwrap(), common::model(&spec), &ModelOptions::default()).unwrap();
        let info = model.info();
        assert_eq!(info.architecture, arch);
        assert_eq!(info.n_layer, spec.n_layer);
        assert_eq!(info.n_embd, spec.n_embd);
        assert_eq!(info.n_vocab, tiny_gguf::N_VOCAB);
        assert_eq!(info.n_expert, experts);
        assert_eq!(info.n_params, spec.n_params().unwrap());
        assert!(info.size_bytes > 0 && info.size_bytes <= std::fs::metadata(model.path()).unwrap().len());
    }
}

#[test]
fn tokenize_round_trips() {
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let toks = model.tokenize("héllo wörld", true).unwrap();
    assert_eq!(toks[0], model.bos().unwrap());
    assert_eq!(model.detokenize(&toks[1..]).unwrap(), "héllo wörld");
    assert!(matches!(model.detokenize(&[100_000]), Err(Error::InvalidToken { .. })));
}

#[test]
fn greedy_generation_is_deterministic_and_matches_llama_cpp() {
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
        let path = common::model(&spec);
        let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
        let a = generate(&model, 1, 24);
        let b = generate(&model, 1, 24);
        let c = generate(&model, 2, 24);
        assert_eq!(a, b, "{}: two runs differ", spec.file_stem());
        assert_eq!(a, c, "{}: thread count changes the output", spec.file_stem());
        assert!(!a.is_empty());
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 1, "{}: output is one repeated token {a:?}", spec.file_stem());

        let (ref_prompt, ref_gen) = common::reference_generate(&path, PROMPT, 24, 1, 256);
        assert_eq!(model.tokenize(PROMPT, true).unwrap(), ref_prompt);
        assert_eq!(a, ref_gen, "{}: runner and llama.cpp reference differ", spec.file_stem());
    }
}

#[test]
fn clearing_the_cache_restarts_generation() {
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let mut ctx = Context::new(&model, &ctx_opts(2)).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    let first = ctx.generate_greedy(&prompt, 8).unwrap();
    assert_eq!(ctx.n_past(), prompt.len() + 7);
    ctx.clear();
    assert_eq!(ctx.n_past(), 0);
    let second = ctx.generate_greedy(&prompt, 8).unwrap();
    assert_eq!(first.tokens, second.tokens);
    assert!(second.prompt_time > std::time::Duration::ZERO && second.gen_time > std::time::Duration::ZERO);
    assert!(second.prompt_tps() > 0.0 && second.gen_tps() > 0.0);
    let perf = ctx.perf();
    assert!(perf.n_eval > 0 && perf.n_prompt > 0, "llama.cpp kept no timings: {perf:?}");
}

#[test]
fn perf_timings_follow_the_option() {
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    let timed = |opts: &ContextOptions| {
        let mut ctx = Context::new(&model, opts).unwrap();
        ctx.generate_greedy(&prompt, 8).unwrap();
        let perf = ctx.perf();
        assert!(perf.n_prompt > 0 && perf.n_eval > 0, "llama.cpp counts tokens either way: {perf:?}");
        perf.prompt_ms > 0.0 && perf.eval_ms > 0.0
    };
    let on = ctx_opts(2);
    assert!(on.perf, "on by default, as in llama.cpp's tools");
    assert!(timed(&on), "--perf: llama.cpp times evaluation");
    assert!(!timed(&ContextOptions { perf: false, ..on }), "--no-perf: no timings");
}

#[test]
fn prompt_longer_than_batch_is_chunked() {
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    // Same micro-batch (so the same compute per ubatch), different logical batch: one context
    // gets the prompt in chunks of 32 tokens, the other in chunks of 256.
    let opts = ContextOptions { n_ctx: 512, n_batch: 32, n_ubatch: 32, n_threads: Some(2), ..Default::default() };
    let mut chunked = Context::new(&model, &opts).unwrap();
    let mut whole = Context::new(&model, &ContextOptions { n_batch: 256, ..opts.clone() }).unwrap();
    let text = PROMPT.repeat(4);
    let prompt = model.tokenize(&text, true).unwrap();
    assert!(prompt.len() > 100);
    assert_eq!(chunked.generate_greedy(&prompt, 8).unwrap().tokens, whole.generate_greedy(&prompt, 8).unwrap().tokens);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let backend = Backend::get().unwrap();
    let dir = common::scratch();
    let missing = dir.join("does-not-exist.gguf");
    let err = Model::load(backend, &missing, &ModelOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");
    assert!(err.to_string().contains("does-not-exist.gguf"));

    let not_gguf = dir.join("not-a-model.gguf");
    std::fs::write(&not_gguf, b"hello world").unwrap();
    assert!(matches!(Model::load(backend, &not_gguf, &ModelOptions::default()), Err(Error::NotGguf { .. })));
    assert!(matches!(Model::load(backend, &dir, &ModelOptions::default()), Err(Error::NotGguf { .. })));

    // A truncated GGUF passes the magic check; the GGUF check refuses it, and without the
    // check llama.cpp itself must fail cleanly.
    let good = std::fs::read(common::model(&ModelSpec::tiny_llama())).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let err = Model::load(backend, &truncated, &ModelOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidGguf { .. }), "{err}");
    let unchecked = llama_runner::LoadOptions { validate_gguf: false };
    let err = Model::load_with(backend, &truncated, &ModelOptions::default(), &unchecked).unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err}");

    let model = Model::load(backend, common::model(&ModelSpec::tiny_llama()), &ModelOptions::default()).unwrap();
    let mut ctx = Context::new(&model, &ctx_opts(1)).unwrap();
    let err = ctx.generate_greedy(&[], 4).unwrap_err();
    assert!(matches!(err, Error::EmptyInput { what: "prompt" }), "{err}");
    assert!(matches!(ctx.decode(&[]), Err(Error::EmptyInput { .. })));
    let long = vec![1; 300];
    assert!(matches!(ctx.generate_greedy(&long, 4), Err(Error::ContextFull { .. })));
    assert!(matches!(ctx.decode(&[1, 99_999]), Err(Error::InvalidToken { token: 99_999, .. })));
    assert!(matches!(model.detokenize(&[-1]), Err(Error::InvalidToken { token: -1, .. })));
}

/// Call orders that made llama.cpp abort (`GGML_ASSERT(logits != nullptr)` in the sampler) or
/// read stale state: each is an error now, and the context stays usable.
#[test]
fn sampling_without_logits_is_an_error_in_any_call_order() {
    let backend = Backend::get().unwrap();
    let model = Model::load(backend, common::model(&ModelSpec::tiny_llama()), &ModelOptions::default()).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();

    // A fresh context has no logits.
    let mut ctx = Context::new(&model, &ctx_opts(1)).unwrap();
    assert!(matches!(ctx.sample_greedy(), Err(Error::NoLogits)));
    // After a decode it has; after clear it has not.
    ctx.decode(&prompt).unwrap();
    let first = ctx.sample_greedy().unwrap();
    ctx.clear();
    assert!(matches!(ctx.sample_greedy(), Err(Error::NoLogits)));
    // A decode refused before llama.cpp sees it changes nothing: the logits are still those of
    // the last decode.
    ctx.decode(&prompt).unwrap();
    assert!(ctx.decode(&[1, 99_999]).is_err());
    assert_eq!(ctx.sample_greedy().unwrap(), first);

    // restore_state: the token count comes from llama.cpp's memory, and there are no logits.
    ctx.clear();
    ctx.decode(&prompt).unwrap();
    let state = ctx.save_state();
    assert_eq!(state.n_tokens(), prompt.len());
    ctx.clear();
    ctx.decode(&prompt[..2]).unwrap();
    ctx.restore_state(&state).unwrap();
    assert_eq!(ctx.n_past(), prompt.len(), "the restored cache holds the saved tokens");
    assert!(matches!(ctx.sample_greedy(), Err(Error::NoLogits)));
    // Decoding the last prompt token again on top of the restored prefix gives the same token
    // as the full prompt did.
    ctx.clear();
    ctx.decode(&prompt[..prompt.len() - 1]).unwrap();
    let prefix = ctx.save_state();
    ctx.clear();
    ctx.restore_state(&prefix).unwrap();
    ctx.decode(&prompt[prompt.len() - 1..]).unwrap();
    assert_eq!(ctx.sample_greedy().unwrap(), first);

    // An empty state (saved from a fresh context) restores to an empty cache.
    let mut fresh = Context::new(&model, &ctx_opts(1)).unwrap();
    let empty = fresh.save_state();
    ctx.restore_state(&empty).unwrap();
    assert_eq!(ctx.n_past(), 0);
    assert!(matches!(ctx.sample_greedy(), Err(Error::NoLogits)));

    // A state from another model is refused before llama.cpp sees it.
    let other = Model::load(backend, common::model(&ModelSpec::tiny_llama()), &ModelOptions::default()).unwrap();
    let mut other_ctx = Context::new(&other, &ctx_opts(1)).unwrap();
    assert!(matches!(other_ctx.restore_state(&state), Err(Error::StateRestore { .. })));

    // A state larger than the context is refused by llama.cpp, cleanly; the cache is empty.
    let mut small = Context::new(&model, &ctx_opts(1)).unwrap();
    let n_small = small.n_ctx() as usize;
    let mut big = Context::new(&model, &ContextOptions { n_ctx: 2 * n_small as u32, ..ctx_opts(1) }).unwrap();
    let long: Vec<i32> = prompt.iter().copied().cycle().take(n_small + 16).collect();
    big.decode(&long).unwrap();
    let big_state = big.save_state();
    assert!(big_state.n_tokens() > n_small);
    let err = small.restore_state(&big_state).unwrap_err();
    assert!(matches!(err, Error::StateRestore { .. }), "{err}");
    assert_eq!(small.n_past(), 0);
    assert!(matches!(small.sample_greedy(), Err(Error::NoLogits)));
    small.decode(&prompt[..4]).unwrap();
    small.sample_greedy().unwrap();
}
