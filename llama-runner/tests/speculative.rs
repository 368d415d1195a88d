//! Speculative greedy generation with n-gram drafting and with a draft model: the output
//! equals plain greedy generation token for token (generated models and the real model), a
//! model drafting for itself is accepted (nearly) always and another generated model rarely,
//! the statistics add up, and bad options and incompatible vocabularies are errors. On the real model a quoting prompt shows the gain (printed, not
//! asserted: speeds are measurements, not tests).

mod common;

use std::path::Path;
use std::time::Instant;

use common::Prerequisite;
use llama_runner::speculative::{DraftModel, NgramDraft};
use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions};
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
        let room = 2.min(plain.len() - i);
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

fn main() {
    common::run_trials(vec![
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
    ])
}
