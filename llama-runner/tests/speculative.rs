//! Speculative generation with n-gram drafting and with a draft model: greedy output equals
//! plain greedy generation token for token (generated models and the real model), a model
//! drafting for itself is accepted (nearly) always and another generated model rarely, the
//! statistics add up, and bad options and incompatible vocabularies are errors. With a
//! stochastic chain, the same seed gives the plain stream's tokens (a divergence must be a
//! knife-edge draw) and, over many independent seeds, the same distribution (a chi-square test
//! that is shown to tell a small change of temperature apart). On the real model a quoting
//! prompt shows the gain (printed, not asserted: speeds are measurements, not tests).

mod common;

use std::path::Path;
use std::time::Instant;

use common::Prerequisite;
use llama_runner::speculative::{DraftModel, Drafter, NgramDraft, NgramMap};
use llama_runner::stream::{Event, StopConditions};
use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions, Sampler, SamplingOptions};
use tiny_gguf::ModelSpec;

const PASSAGE: &str = "The fox jumped over the fence, ran across the field, and hid under the old oak tree \
    while the farmer searched the barn, the shed and the orchard for the missing hens.";

fn prompts() -> Vec<String> {
    vec![
        format!("Repeat the passage exactly.\nPassage: {PASSAGE}\nRepeated: {}", &PASSAGE[..40]),
        "Once upon a time there was a little fox".to_string(),
        "1 2 3 4 5 6 7 8 9 10 1 2 3 4 5 6 7 8 9 10 1 2 3".to_string(),
    ]
}

fn ctx(model: &Model) -> Context<'_> {
    Context::new(model, &ContextOptions { n_ctx: 1024, n_threads: Some(2), ..Default::default() }).unwrap()
}

fn exact_on(path: &Path, n: usize) {
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut diverged = 0;
    let mut runs = 0;
    for (i, p) in prompts().iter().enumerate() {
        let prompt = model.tokenize(p, true).unwrap();
        let mut plain_ctx = ctx(&model);
        let t = Instant::now();
        let plain = plain_ctx.generate_greedy(&prompt, n).unwrap();
        let plain_s = t.elapsed().as_secs_f64();
        for draft in [
            NgramDraft::default(),
            NgramDraft { ngram: 2, n_max: 4, n_min: 2 },
            NgramDraft { ngram: 1, n_max: 16, n_min: 1 },
        ] {
            runs += 1;
            let mut c = ctx(&model);
            let t = Instant::now();
            let spec = c.generate_speculative_greedy(&prompt, n, &draft).unwrap();
            let spec_s = t.elapsed().as_secs_f64();
            if spec.generation.tokens != plain.tokens {
                explain_divergence(&model, &prompt, &plain.tokens, &spec.generation.tokens, &name);
                diverged += 1;
                continue;
            }
            assert_eq!(spec.generation.stopped_at_eog, plain.stopped_at_eog);
            assert_eq!(c.n_past(), plain_ctx.n_past(), "{name}, prompt {i}: the caches hold the same tokens");
            let s = &spec.stats;
            assert!(s.accepted <= s.drafted);
            assert_eq!(s.accepted_at.iter().sum::<usize>(), s.accepted);
            assert_eq!(s.drafted_at.iter().sum::<usize>(), s.drafted);
            assert!(s.accepted_at.iter().zip(&s.drafted_at).all(|(a, d)| a <= d));
            assert!(s.drafted_at.windows(2).all(|w| w[0] >= w[1]), "later positions are drafted less often");
            eprintln!(
                "{name}, prompt {i}, {draft:?}: {} tokens, drafted {}, accepted {} ({:.0}%), {} verify + {} plain steps, {:.3} s vs {:.3} s plain ({:.2}x)",
                spec.generation.tokens.len(),
                s.drafted,
                s.accepted,
                100.0 * s.acceptance(),
                s.verified,
                s.plain,
                spec_s,
                plain_s,
                plain_s / spec_s
            );
        }
    }
    // llama.cpp's ngram-map drafters (their drafts equal llama.cpp's: ngram_map_equals_llama_cpp).
    for (i, p) in prompts().iter().enumerate() {
        let prompt = model.tokenize(p, true).unwrap();
        let plain = ctx(&model).generate_greedy(&prompt, n).unwrap();
        for key_only in [true, false] {
            runs += 1;
            let mut map = NgramMap::new(key_only, 3, 8, 1, 1).unwrap();
            let mut c = ctx(&model);
            let spec = c.generate_speculative_greedy_with(&prompt, n, &mut map).unwrap();
            if spec.generation.tokens != plain.tokens {
                explain_divergence(&model, &prompt, &plain.tokens, &spec.generation.tokens, &name);
                diverged += 1;
                continue;
            }
            let s = &spec.stats;
            assert!(s.accepted <= s.drafted && s.accepted_at.iter().sum::<usize>() == s.accepted);
            eprintln!(
                "{name}, prompt {i}, ngram-map-{}: drafted {}, accepted {}",
                if key_only { "k" } else { "k4v" },
                s.drafted,
                s.accepted
            );
        }
    }
    eprintln!(
        "{name}: {} of {runs} speculative runs equal plain greedy; {diverged} diverged at a near-tie",
        runs - diverged
    );
}

/// The top two logits after `prompt` + `tokens`, decoded one token at a time as plain greedy
/// generation decodes them: ((id, logit), (id, logit)).
fn top_two(model: &Model, prompt: &[i32], tokens: &[i32]) -> Vec<((i32, f32), (i32, f32))> {
    let mut c = ctx(model);
    let mut out = Vec::new();
    let mut batch = llama_runner::Batch::new(prompt.len(), 1).unwrap();
    for (i, &t) in prompt.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == prompt.len()).unwrap();
    }
    let mut idx = prompt.len() - 1;
    for step in 0..=tokens.len() {
        let o = c.decode_batch(&batch).unwrap();
        let l = o.logits(idx).unwrap();
        let mut ids: Vec<usize> = (0..l.len()).collect();
        ids.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        out.push(((ids[0] as i32, l[ids[0]]), (ids[1] as i32, l[ids[1]])));
        drop(o);
        if step == tokens.len() {
            break;
        }
        batch.clear();
        batch.add(tokens[step], (prompt.len() + step) as i32, &[0], true).unwrap();
        idx = 0;
    }
    out
}

/// A speculative output that differs from plain greedy must start at a near-tie of the plain
/// run's logits (the two tokens are its top two, their gap far below the run's typical gap):
/// llama.cpp's kernels are not batch-invariant, and a batch of draft tokens can round the
/// other way there. Anything else is a real difference and fails.
fn explain_divergence(model: &Model, prompt: &[i32], plain: &[i32], spec: &[i32], name: &str) {
    let k = plain.iter().zip(spec).take_while(|(a, b)| a == b).count();
    assert!(
        k < plain.len().min(spec.len()),
        "{name}: outputs of different lengths ({} vs {})",
        plain.len(),
        spec.len()
    );
    let tops = top_two(model, prompt, &plain[..k]);
    let gaps: Vec<f32> = tops.iter().map(|((_, a), (_, b))| a - b).collect();
    let ((t1, l1), (t2, l2)) = tops[k];
    let mut sorted = gaps[..k].to_vec();
    sorted.sort_by(f32::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f32::INFINITY);
    let gap = l1 - l2;
    eprintln!(
        "{name}: speculative output differs from plain greedy at token {k}: plain {} (logit {l1}), speculative {} \
         (the runner-up {t2}, logit {l2}); gap {gap:.6} vs a median top-two gap of {median:.4} over the {k} tokens before",
        plain[k], spec[k]
    );
    assert_eq!((t1, t2), (plain[k], spec[k]), "{name}: at token {k} the two outputs are not the plain run's top two");
    assert!(gap < median / 10.0, "{name}: a gap of {gap} is no near-tie (median {median}): a real difference");
}

/// The drafts of a known history, counted by hand.
fn drafts_and_accounting(_: ()) {
    let d = NgramDraft { ngram: 2, n_max: 3, n_min: 1 };
    assert_eq!(d.draft(&[1, 2, 3, 4, 5, 1, 2], 8), vec![3, 4, 5]);
    assert_eq!(d.draft(&[1, 2, 3, 4, 5, 1, 2], 2), vec![3, 4]);
    assert_eq!(d.draft(&[1, 2, 9, 1, 2, 7, 1, 2], 8), vec![7, 1, 2], "the latest earlier occurrence");
    assert_eq!(d.draft(&[1, 2, 3], 8), Vec::<i32>::new());
    assert_eq!(d.draft(&[1, 2], 8), Vec::<i32>::new());
    assert_eq!(NgramDraft { ngram: 1, ..d.clone() }.draft(&[5, 6, 5], 8), vec![6, 5]);
    // A model drafting a sequence it repeats: a short run counted by hand on the tiny model.
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let mut c = ctx(&model);
    let prompt = model.tokenize("abcabcabcabc", true).unwrap();
    let plain = ctx(&model).generate_greedy(&prompt, 6).unwrap().tokens;
    let spec = c.generate_speculative_greedy(&prompt, 6, &NgramDraft { ngram: 1, n_max: 2, n_min: 1 }).unwrap();
    assert_eq!(spec.generation.tokens, plain);
    // Replay the drafting by hand: every step drafts from the history so far.
    let mut history = prompt.clone();
    let mut drafted = 0;
    let mut accepted = 0;
    let mut i = 0;
    while i < plain.len() {
        history.push(plain[i]);
        i += 1;
        if i == plain.len() {
            break;
        }
        // A draft of k tokens, all accepted, yields k + 1 with the token sampled after them:
        // the draft leaves room for that one.
        let room = 2.min(plain.len() - i - 1);
        let dr = NgramDraft { ngram: 1, n_max: 2, n_min: 1 }.draft(&history, room);
        drafted += dr.len();
        let j = dr.iter().zip(&plain[i..]).take_while(|(a, b)| a == b).count();
        accepted += j;
        for &t in &plain[i..i + j] {
            history.push(t);
        }
        i += j;
    }
    assert_eq!((spec.stats.drafted, spec.stats.accepted), (drafted, accepted), "{:?}", spec.stats);
}

fn bad_options_are_errors(_: ()) {
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let mut c = ctx(&model);
    for (d, needle) in [
        (NgramDraft { ngram: 3, n_max: 2, n_min: 4 }, "above n_max"),
        (NgramDraft { ngram: 0, n_max: 2, n_min: 1 }, "n-gram size"),
        (NgramDraft { ngram: 2, n_max: 0, n_min: 0 }, "n_max"),
    ] {
        let e = c.generate_speculative_greedy(&[1, 2, 3], 4, &d).unwrap_err();
        assert!(matches!(e, Error::Speculative { .. }) && e.to_string().contains(needle), "{d:?}: {e}");
    }
    assert!(matches!(c.generate_speculative_greedy(&[], 4, &NgramDraft::default()), Err(Error::EmptyInput { .. })));
}

/// Speculative greedy generation on `target` with `draft` drafting (n_max 4): equal to plain
/// greedy generation (a divergence must start at a near-tie, as `explain_divergence` checks);
/// returns the acceptance over all prompts.
fn draft_model_run(target: &Path, draft: &Path, n: usize) -> f64 {
    let tm = Model::load(Backend::get().unwrap(), target, &ModelOptions::default()).unwrap();
    let dm = Model::load(Backend::get().unwrap(), draft, &ModelOptions::default()).unwrap();
    let name = format!(
        "{} drafted by {}",
        target.file_name().unwrap().to_string_lossy(),
        draft.file_name().unwrap().to_string_lossy()
    );
    let mut dctx = ctx(&dm);
    let (mut drafted, mut accepted) = (0, 0);
    for (i, p) in prompts().iter().enumerate() {
        let prompt = tm.tokenize(p, true).unwrap();
        let mut plain_ctx = ctx(&tm);
        let t = Instant::now();
        let plain = plain_ctx.generate_greedy(&prompt, n).unwrap();
        let plain_s = t.elapsed().as_secs_f64();
        let mut c = ctx(&tm);
        let mut drafter = DraftModel::new(&mut dctx, &tm, 4, 1, 0.0).unwrap();
        let t = Instant::now();
        let spec = c.generate_speculative_greedy_with(&prompt, n, &mut drafter).unwrap();
        let spec_s = t.elapsed().as_secs_f64();
        if spec.generation.tokens != plain.tokens {
            explain_divergence(&tm, &prompt, &plain.tokens, &spec.generation.tokens, &name);
            continue;
        }
        assert_eq!(c.n_past(), plain_ctx.n_past(), "{name}, prompt {i}");
        let s = &spec.stats;
        assert!(s.accepted <= s.drafted && s.drafted_at.iter().sum::<usize>() == s.drafted);
        drafted += s.drafted;
        accepted += s.accepted;
        eprintln!(
            "{name}, prompt {i}: {} tokens, drafted {}, accepted {} ({:.0}%), {} verify + {} plain steps, {spec_s:.3} s vs {plain_s:.3} s plain",
            spec.generation.tokens.len(),
            s.drafted,
            s.accepted,
            100.0 * s.acceptance(),
            s.verified,
            s.plain
        );
    }
    assert!(drafted > 0, "{name}: nothing was drafted");
    accepted as f64 / drafted as f64
}

fn draft_models(_: ()) {
    let target = common::model(&ModelSpec::tiny_llama());
    let same = draft_model_run(&target, &target, 48);
    let other = common::model(&ModelSpec { seed: 7, ..ModelSpec::tiny_llama() });
    let differs = draft_model_run(&target, &other, 48);
    eprintln!("acceptance: drafting for itself {same:.3}, another generated model {differs:.3}");
    assert!(same > 0.9, "a model drafting for itself: {same}");
    assert!(differs < 0.5 && differs < same, "another model: {differs}");
    // Another architecture with the same vocabulary drafts too.
    draft_model_run(&target, &common::model(&ModelSpec::tiny_moe()), 24);
}

/// p_min, the limits and incompatible vocabularies.
fn draft_model_options(real: Option<std::path::PathBuf>) {
    let tm = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let mut dctx = ctx(&tm);
    let e = |r: llama_runner::Result<DraftModel<'_, '_>>| r.map(|_| ()).unwrap_err().to_string();
    assert!(e(DraftModel::new(&mut dctx, &tm, 2, 3, 0.0)).contains("n_min 3"));
    assert!(e(DraftModel::new(&mut dctx, &tm, 0, 0, 0.0)).contains("n_max"));
    assert!(e(DraftModel::new(&mut dctx, &tm, 4, 1, 1.5)).contains("p_min"));
    // p_min near 1: drafts end at once on a random model (its top probabilities are low).
    let prompt = tm.tokenize(&prompts()[0], true).unwrap();
    let mut drafter = DraftModel::new(&mut dctx, &tm, 4, 1, 0.999).unwrap();
    let spec = ctx(&tm).generate_speculative_greedy_with(&prompt, 16, &mut drafter).unwrap();
    assert_eq!(spec.stats.drafted, 0, "{:?}", spec.stats);
    assert_eq!(spec.generation.tokens, ctx(&tm).generate_greedy(&prompt, 16).unwrap().tokens);
    if let Some(real) = real {
        let rm = Model::load(Backend::get().unwrap(), real, &ModelOptions::default()).unwrap();
        let mut rctx = ctx(&rm);
        let err = e(DraftModel::new(&mut rctx, &tm, 4, 1, 0.0));
        assert!(err.contains("draft model's vocabulary"), "{err}");
        let err = e(DraftModel::new(&mut dctx, &rm, 4, 1, 0.0));
        assert!(err.contains("draft model's vocabulary"), "{err}");
        eprintln!("{err}");
    }
}

/// A stochastic chain with `seed`: repeat and frequency penalties over the history, top-k 8,
/// temperature.
fn chain(seed: u32, temp: f32) -> SamplingOptions {
    use llama_runner::sampling::SamplerType;
    SamplingOptions {
        seed,
        top_k: 8,
        temp,
        penalty_repeat: 1.1,
        penalty_freq: 0.02,
        penalty_last_n: 64,
        samplers: vec![SamplerType::Penalties, SamplerType::TopK, SamplerType::Temperature],
        ..Default::default()
    }
}

/// The tokens of a stream, plain or speculative, from an empty cache.
fn sampled(
    ctx: &mut Context<'_>,
    options: &SamplingOptions,
    prompt: &[i32],
    n: usize,
    drafter: Option<&mut dyn Drafter>,
) -> (Vec<i32>, Option<llama_runner::speculative::SpecStats>) {
    ctx.clear();
    let mut sampler = Sampler::new(ctx.model(), options).unwrap();
    let stop = StopConditions::max_tokens(n);
    let mut stream = match drafter {
        Some(d) => ctx.stream_speculative(&mut sampler, &[], prompt, stop, d).unwrap(),
        None => ctx.stream(&mut sampler, prompt, stop).unwrap(),
    };
    let mut tokens = Vec::new();
    for e in stream.by_ref() {
        match e.unwrap() {
            Event::Token { id, .. } => tokens.push(id),
            Event::Done { generation, .. } => assert_eq!(generation.tokens, tokens),
            _ => {}
        }
    }
    (tokens, stream.speculation().cloned())
}

/// The uniform number llama.cpp's `dist` sampler seeded with `seed` draws for its `k`-th
/// sample (each sample draws one), to within 2^-18: read off the index it selects among 2^18
/// equal candidates.
fn dist_draw(seed: u32, k: usize) -> f64 {
    const N: usize = 1 << 18;
    let mut cur: Vec<llama_sys::llama_token_data> =
        (0..N).map(|i| llama_sys::llama_token_data { id: i as i32, logit: 0.0, p: 0.0 }).collect();
    // SAFETY: a plain constructor; freed below.
    let dist = unsafe { llama_sys::llama_sampler_init_dist(seed) };
    assert!(!dist.is_null());
    let mut selected = -1;
    for _ in 0..=k {
        cur.iter_mut().for_each(|d| d.p = 0.0);
        let mut arr =
            llama_sys::llama_token_data_array { data: cur.as_mut_ptr(), size: cur.len(), selected: -1, sorted: false };
        // SAFETY: a live sampler; `arr` points at `cur`'s N candidates, alive for the call.
        unsafe { llama_sys::llama_sampler_apply(dist, &mut arr) };
        selected = arr.selected;
    }
    // SAFETY: the sampler made above, not used afterwards.
    unsafe { llama_sys::llama_sampler_free(dist) };
    // The first index whose running sum (i + 1) reaches N * rnd.
    (selected as f64 + 0.5) / N as f64
}

/// The chain of [`chain`] at temperature 0.7 applied by hand, as llama.cpp's samplers compute
/// it (repeat and frequency penalties over `history`, top-k 8 sorted, temperature, softmax with float exponentials
/// and a double sum): the candidates in the order `dist` walks them, with their logit after the
/// penalty and the cumulative probability at the end of each.
fn chain_by_hand(logits: &[f32], history: &[i32]) -> Vec<(i32, f32, f64)> {
    let mut cand: Vec<(i32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as i32, l)).collect();
    chain_on(&mut cand, history)
}

/// [`chain_by_hand`] on candidates.
fn chain_on(cand: &mut Vec<(i32, f32)>, history: &[i32]) -> Vec<(i32, f32, f64)> {
    for c in cand.iter_mut() {
        let count = history.iter().filter(|&&t| t == c.0).count();
        if count > 0 {
            c.1 = if c.1 <= 0.0 { c.1 * 1.1 } else { c.1 / 1.1 };
            c.1 -= count as f32 * 0.02;
        }
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1));
    cand.truncate(8);
    let max = cand[0].1 / 0.7;
    let p: Vec<f32> = cand.iter().map(|c| (c.1 / 0.7 - max).exp()).collect();
    let sum: f64 = p.iter().map(|&x| f64::from(x)).sum();
    let mut run = 0.0;
    cand.iter()
        .zip(&p)
        .map(|(c, &x)| {
            run += f64::from(x);
            (c.0, c.1, run / sum)
        })
        .collect()
}

/// A speculative sample that differs from the plain stream's with the same seed must come
/// from a knife's edge of the plain run's distribution at that step: with the plain run's
/// logits (single-token decodes, as the plain stream decodes; the chain applied by hand and
/// checked to select the plain token with the sampler's own draw), moving the speculative
/// token's logit by 1e-3 (batch and single-token logits differ by a few 1e-4 on this model)
/// makes the chain select it with the same draw: a draw at the boundary between the two
/// tokens, two tokens in a near-tie that swap places in the sorted order `dist` walks, or a
/// near-tie at top-k's cut. Anything else is a real difference and fails.
fn explain_stochastic_divergence(model: &Model, seed: u32, prompt: &[i32], plain: &[i32], spec: &[i32]) {
    const EPS: f32 = 1e-3;
    let k = plain.iter().zip(spec).take_while(|(a, b)| a == b).count();
    assert!(k < plain.len().min(spec.len()), "seed {seed}: outputs of different lengths");
    // Decoded as the plain stream decodes: the prompt in one batch, then one token at a time.
    let mut c = ctx(model);
    let mut batch = llama_runner::Batch::new(prompt.len(), 1).unwrap();
    for (i, &t) in prompt.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == prompt.len()).unwrap();
    }
    let mut logits = c.decode_batch(&batch).unwrap().logits(prompt.len() - 1).unwrap().to_vec();
    for (i, &t) in plain[..k].iter().enumerate() {
        batch.clear();
        batch.add(t, (prompt.len() + i) as i32, &[0], true).unwrap();
        logits = c.decode_batch(&batch).unwrap().logits(0).unwrap().to_vec();
    }
    let rnd = dist_draw(seed, k);
    let pick = |bias: f32| {
        let mut l = logits.clone();
        l[spec[k] as usize] += bias;
        let cdf = chain_by_hand(&l, &plain[..k]);
        cdf[cdf.iter().position(|&(_, _, cum)| cum >= rnd).unwrap_or(cdf.len() - 1)].0
    };
    assert_eq!(pick(0.0), plain[k], "seed {seed}, token {k}: the chain by hand does not reproduce the plain sample");
    let tipped = [EPS, -EPS].into_iter().find(|&b| pick(b) == spec[k]);
    let cdf = chain_by_hand(&logits, &plain[..k]);
    eprintln!(
        "seed {seed}: speculative sample differs at token {k}: plain {}, speculative {} (draw {rnd:.6}); the speculative \
         token's logit moved by {tipped:?} tips the plain chain to it; candidates (token, logit, cumulative p): {cdf:.4?}",
        plain[k], spec[k]
    );
    assert!(tipped.is_some(), "seed {seed}, token {k}: no knife's edge within {EPS} of the logits: a real difference");
}

/// With a stochastic chain and the same seed, speculative output is the plain stream's token
/// for token (each emitted token is drawn by the same chain from the same position's logits,
/// with the same RNG draw): with a draft model drafting for itself and with n-gram drafting,
/// rejections happening (the rejection path is exercised), penalties over the history (a
/// token accepted twice would change them). A divergence must be a knife-edge draw
/// ([`explain_stochastic_divergence`]).
fn stochastic_same_seed(_: ()) {
    let path = common::model(&ModelSpec::tiny_llama());
    let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
    let mut dctx = ctx(&model);
    let mut c = ctx(&model);
    let prompt = model.tokenize(&prompts()[0], true).unwrap();
    let (mut drafted, mut accepted, mut runs, mut diverged) = (0, 0, 0, 0);
    for seed in 1..=16 {
        let o = chain(seed, 0.7);
        let (plain, _) = sampled(&mut c, &o, &prompt, 32, None);
        let mut with_model = DraftModel::new(&mut dctx, &model, 4, 1, 0.0).unwrap();
        let mut ngram = NgramDraft { ngram: 1, n_max: 4, n_min: 1 };
        for d in [&mut with_model as &mut dyn Drafter, &mut ngram] {
            let (spec, stats) = sampled(&mut c, &o, &prompt, 32, Some(d));
            let stats = stats.unwrap();
            runs += 1;
            assert_eq!(stats.accepted_at.iter().sum::<usize>(), stats.accepted);
            drafted += stats.drafted;
            accepted += stats.accepted;
            if spec != plain {
                explain_stochastic_divergence(&model, seed, &prompt, &plain, &spec);
                diverged += 1;
            }
        }
    }
    eprintln!(
        "stochastic chain: {} of {runs} speculative runs equal plain sampling with the same seed, {diverged} \
         diverged at a knife-edge draw; drafted {drafted}, accepted {accepted}",
        runs - diverged
    );
    assert!(accepted > 0 && accepted < drafted, "both acceptance and rejection happen ({accepted} of {drafted})");
    // The random model's top logits lie within a few hundredths of each other, so near-ties
    // are common; most runs still agree token for token.
    assert!(diverged * 2 <= runs, "{diverged} of {runs} runs diverged");
}

/// Pearson's chi-square test of homogeneity of two samples of categories (cells with fewer
/// than 10 pooled observations merged): whether it rejects at alpha 1e-4 (the critical value
/// by the Wilson-Hilferty approximation), with the statistic and degrees of freedom.
fn differ(a: &[i32], b: &[i32]) -> (bool, f64, usize) {
    use std::collections::BTreeMap;
    let mut cells: BTreeMap<i32, (f64, f64)> = BTreeMap::new();
    a.iter().for_each(|&t| cells.entry(t).or_default().0 += 1.0);
    b.iter().for_each(|&t| cells.entry(t).or_default().1 += 1.0);
    let mut merged: Vec<(f64, f64)> = Vec::new();
    let mut rest = (0.0, 0.0);
    for (x, y) in cells.into_values() {
        if x + y >= 10.0 {
            merged.push((x, y));
        } else {
            rest = (rest.0 + x, rest.1 + y);
        }
    }
    if rest.0 + rest.1 > 0.0 {
        merged.push(rest);
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let n = na + nb;
    let chi2: f64 = merged
        .iter()
        .map(|&(x, y)| {
            let col = x + y;
            let (ea, eb) = (na * col / n, nb * col / n);
            (x - ea).powi(2) / ea + (y - eb).powi(2) / eb
        })
        .sum();
    let df = merged.len().saturating_sub(1).max(1);
    let k = df as f64;
    let z = 3.719; // the standard normal's 1 - 1e-4 quantile
    let critical = k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3);
    (chi2 > critical, chi2, df)
}

/// The speculative output follows the target's distribution: with independent seeds (so the
/// RNG draws are not shared), the tokens at generated positions 1-3 (position 0 is sampled
/// before any draft) of speculative runs with the model drafting for itself have the same
/// distribution as plain sampling's, by a chi-square test at each position; the same test
/// tells apart plain sampling at temperature 0.16 instead of 0.1 (it has the power to see a
/// wrong acceptance rule, whose effect would be larger).
fn stochastic_distribution(_: ()) {
    const N: u32 = 1500;
    const N_GEN: usize = 4;
    let path = common::model(&ModelSpec::tiny_llama());
    let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
    let mut dctx = ctx(&model);
    let mut c = ctx(&model);
    let prompt = model.tokenize("Once upon a time", true).unwrap();
    let mut plain = vec![Vec::new(); N_GEN];
    let mut spec = vec![Vec::new(); N_GEN];
    let mut hotter = vec![Vec::new(); N_GEN];
    let (mut drafted, mut accepted) = (0, 0);
    let mut drafter = DraftModel::new(&mut dctx, &model, 3, 1, 0.0).unwrap();
    for i in 0..N {
        let (p, _) = sampled(&mut c, &chain(1 + i, 0.1), &prompt, N_GEN, None);
        let (s, stats) = sampled(&mut c, &chain(1_000_001 + i, 0.1), &prompt, N_GEN, Some(&mut drafter));
        let (h, _) = sampled(&mut c, &chain(2_000_001 + i, 0.16), &prompt, N_GEN, None);
        let stats = stats.unwrap();
        drafted += stats.drafted;
        accepted += stats.accepted;
        for (out, toks) in [(&mut plain, p), (&mut spec, s), (&mut hotter, h)] {
            assert_eq!(toks.len(), N_GEN, "no end of generation at top-k 8 on this model");
            toks.iter().zip(out.iter_mut()).for_each(|(&t, o)| o.push(t));
        }
    }
    eprintln!("{N} runs each; speculative: drafted {drafted}, accepted {accepted}");
    assert!(accepted > 0 && accepted < drafted, "both acceptance and rejection happen");
    let mut power = 0;
    for pos in 1..N_GEN {
        let (rejects, chi2, df) = differ(&plain[pos], &spec[pos]);
        let (seen, chi2_h, df_h) = differ(&plain[pos], &hotter[pos]);
        eprintln!(
            "position {pos}: speculative vs plain chi2 {chi2:.1} (df {df}); temperature 0.16 vs 0.1 chi2 {chi2_h:.1} (df {df_h})"
        );
        assert!(!rejects, "position {pos}: speculative sampling changed the distribution (chi2 {chi2:.1}, df {df})");
        power += usize::from(seen);
    }
    assert!(power >= 2, "the test does not tell temperature 0.16 from 0.1: it has no power");
}

/// A speculative stream cancelled through the context's handle ends with `Aborted`, yields
/// nothing after it, and leaves a cache that holds at most the prompt and what was emitted.
fn cancelled_stream(_: ()) {
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    let mut c = ctx(&model);
    let cancel = c.cancel_handle();
    let prompt = model.tokenize(&prompts()[2], true).unwrap();
    let mut sampler = Sampler::greedy(&model).unwrap();
    let mut drafter = NgramDraft { ngram: 1, n_max: 4, n_min: 1 };
    let mut stream =
        c.stream_speculative(&mut sampler, &[], &prompt, StopConditions::max_tokens(64), &mut drafter).unwrap();
    let mut seen = 0;
    while seen < 3 {
        if let Event::Token { .. } = stream.next().unwrap().unwrap() {
            seen += 1;
        }
    }
    cancel.cancel();
    // Events of the batch already verified may still come; then the cancelled step.
    let mut end = None;
    for e in stream.by_ref() {
        if let Err(e) = e {
            end = Some(e);
        }
    }
    assert!(matches!(end, Some(Error::Aborted)), "{end:?}");
    assert!(stream.next().is_none());
    let emitted = stream.tokens().len();
    drop(stream);
    assert!(c.n_past() <= prompt.len() + emitted, "{} > {} + {emitted}", c.n_past(), prompt.len());
}

/// Compiles `tests/reference/ngram_map.cpp` (llama.cpp's common/ngram-map.cpp) once.
fn ngram_map_reference() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| common::compile_common_reference("ngram_map"))
}

/// A text with recurring phrases whose continuations differ (what ngram-map-k4v counts): 600
/// tokens drawn from 8 phrases of 5-9 tokens, in a fixed pseudo-random order.
fn phrase_text() -> Vec<i32> {
    let phrases: Vec<Vec<i32>> = (0..8).map(|p| (0..5 + p % 5).map(|i| 10 + p * 7 + i * 3).collect()).collect();
    let mut state = 0x2545_f491_u32;
    let mut out = Vec::new();
    while out.len() < 600 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Phrase 0 and 1 often, so that keys recur with several continuations.
        let p = [0, 1, 0, 2, 1, 3, 0, 4, 5, 1, 6, 7][(state % 12) as usize];
        out.extend_from_slice(&phrases[p]);
    }
    out
}

/// The runner's `ngram-map-k` / `ngram-map-k4v` drafts equal llama.cpp's own
/// (`common_ngram_map_begin` / `_draft` / `_accept`, through a reference program) at every
/// step of a scripted generation: the target text is known, a draft is accepted as far as it
/// agrees with it, and generations begin again after a longer and after a cut history.
fn ngram_map_equals_llama_cpp(_: ()) {
    let text = phrase_text();
    for (key_only, n, m, hits) in
        [(true, 3, 8, 1), (true, 2, 4, 1), (false, 3, 8, 1), (false, 2, 6, 2), (true, 12, 48, 1)]
    {
        let mut map = NgramMap::new(key_only, n, m, hits, 0).unwrap();
        let mut script = String::new();
        let mut ours = Vec::new();
        let (mut drafted, mut accepted) = (0, 0);
        // Three generations: from 40 tokens to 300, from 300 to 500, then from a cut at 200.
        for (start, end) in [(40, 300), (300, 500), (200, 400)] {
            let begin = &text[..start];
            map.begin(begin);
            script.push_str(&format!("b {}\n", join(begin)));
            // The begun text and the token sampled after it (llama.cpp drafts after the text in
            // the cache and the sampled token not yet decoded).
            let mut pos = start;
            while pos < end {
                let history = &text[..=pos];
                let draft = map.propose(history, usize::MAX).unwrap();
                script.push_str(&format!("d {}\n", join(history)));
                let ok = draft.iter().zip(&text[pos + 1..]).take_while(|(d, t)| d == t).count();
                if !draft.is_empty() {
                    map.accepted(ok);
                    script.push_str(&format!("a {ok}\n"));
                }
                drafted += draft.len();
                accepted += ok;
                ours.push(draft);
                pos += ok + 1;
            }
        }
        let mut child = std::process::Command::new(ngram_map_reference())
            .args([n.to_string(), m.to_string(), u8::from(key_only).to_string(), hits.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the reference failed");
        let theirs: Vec<Vec<i32>> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.strip_prefix("draft:").unwrap().split_whitespace().map(|t| t.parse().unwrap()).collect())
            .collect();
        assert_eq!(theirs.len(), ours.len(), "steps");
        for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "key_only {key_only} n {n} m {m} min_hits {hits}: step {step}");
        }
        eprintln!(
            "ngram-map{} n={n} m={m} min_hits={hits}: {} steps, {drafted} drafted, {accepted} accepted: as llama.cpp",
            if key_only { "-k" } else { "-k4v" },
            ours.len()
        );
        assert!(accepted > 0 && drafted > accepted, "the script exercises drafts, acceptance and rejection");
    }
}

fn join(tokens: &[i32]) -> String {
    tokens.iter().map(i32::to_string).collect::<Vec<_>>().join(" ")
}

fn main() {
    common::run_trials(vec![
        common::trial("ngram_map_equals_llama_cpp", common::llama_common(), ngram_map_equals_llama_cpp),
        common::trial("generated/output_equals_plain_greedy", Prerequisite::Met(()), |()| {
            for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
                exact_on(&common::model(&spec), 48);
            }
        }),
        common::trial("real_model/output_equals_plain_greedy", common::real_model(), |p| exact_on(&p, 64)),
        common::trial("drafts_and_accounting", Prerequisite::Met(()), drafts_and_accounting),
        common::trial("generated/draft_models", Prerequisite::Met(()), draft_models),
        common::trial("draft_model_options", Prerequisite::Met(()), |()| draft_model_options(None)),
        common::trial("real_model/draft_model_vocabulary", common::real_model(), |p| draft_model_options(Some(p))),
        common::trial("real_model/draft_model_equals_plain_greedy", common::real_model(), |p| {
            let acceptance = draft_model_run(&p, &p, 48);
            assert!(acceptance > 0.8, "the real model drafting for itself: {acceptance}");
        }),
        common::trial("bad_options_are_errors", Prerequisite::Met(()), bad_options_are_errors),
        common::trial("generated/cancelled_stream", Prerequisite::Met(()), cancelled_stream),
        common::trial("generated/stochastic_same_seed", Prerequisite::Met(()), stochastic_same_seed),
        common::trial("generated/stochastic_distribution", Prerequisite::Met(()), stochastic_distribution),
    ])
}
