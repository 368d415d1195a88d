//! Embeddings: the runner's vectors against llama.cpp's own (a reference program using llama.h
//! only, linked against the same libraries) on generated models and the real model, and every
//! refusal of `llama_runner::embeddings`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{real_model, trial};
use libtest_mimic::Trial;
use llama_runner::{
    Backend, Context, ContextOptions, Dialect, EmbedError, Error, Model, ModelOptions, Normalize, Pooling, RunOptions,
    flags,
};
use tiny_gguf::ModelSpec;

const THREADS: u32 = 2;
const TEXTS: [&str; 3] = ["Hello world", "The quick brown fox jumps over the lazy dog.", "a"];

/// Compiles `tests/reference/embedding.cpp` (llama.h only) against llama-runner's libraries.
fn reference_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| common::compile_reference("embedding", &[], &[]))
}

/// What the reference printed.
struct Reference {
    tokens: Vec<Vec<i32>>,
    pooling: i32,
    /// Pooled: one vector per text; pooling none: one per token, texts concatenated.
    vectors: Vec<Vec<f32>>,
}

fn reference(model: &Path, pooling: Pooling, norm: Normalize, n_ctx: u32, n_ubatch: u32, texts: &[&str]) -> Reference {
    let c = pooling.c_value().expect("a pooling of this commit");
    let out = Command::new(reference_binary())
        .arg(model)
        .args([c.to_string(), norm.llama_value().to_string(), n_ctx.to_string(), n_ubatch.to_string()])
        .arg(THREADS.to_string())
        .args(texts)
        .output()
        .expect("run the embedding reference");
    assert!(out.status.success(), "reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = Reference { tokens: Vec::new(), pooling: -2, vectors: Vec::new() };
    for line in text.lines() {
        let (head, values) = line.split_once(':').expect("a reference line");
        let values = values.split_whitespace();
        if head.starts_with("tokens") {
            r.tokens.push(values.map(|v| v.parse().unwrap()).collect());
        } else if head == "pooling" {
            r.pooling = values.last().unwrap().parse().unwrap();
        } else if head.starts_with("embd") {
            r.vectors.push(values.map(|v| v.parse().unwrap()).collect());
        }
    }
    r
}

fn load(path: &Path) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

fn opts(pooling: Pooling, n_ctx: u32, n_ubatch: u32, n_seq_max: u32) -> ContextOptions {
    ContextOptions {
        n_ctx,
        n_batch: n_ubatch,
        n_ubatch,
        n_seq_max,
        kv_unified: true,
        n_threads: Some(THREADS),
        embeddings: true,
        pooling,
        ..Default::default()
    }
}

/// Largest relative difference, elementwise (relative to the larger magnitude, absolute below 1e-30).
fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector widths");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (f64::from(x) - f64::from(y)).abs();
            let m = f64::from(x.abs()).max(f64::from(y.abs()));
            if m < 1e-30 { d } else { d / m }
        })
        .fold(0.0, f64::max)
}

/// The runner's vectors for `texts` (pooled, or per token flattened), with the tokens.
fn runner(
    model: &Model,
    pooling: Pooling,
    norm: Normalize,
    n_ctx: u32,
    n_ubatch: u32,
    texts: &[&str],
) -> (Vec<Vec<i32>>, Vec<Vec<f32>>) {
    let tokens: Vec<Vec<i32>> = texts.iter().map(|t| model.tokenize(t, true).unwrap()).collect();
    let refs: Vec<&[i32]> = tokens.iter().map(Vec::as_slice).collect();
    let mut ctx = Context::new(model, &opts(pooling, n_ctx, n_ubatch, texts.len() as u32)).unwrap();
    let vectors = if ctx.pooling() == Pooling::None {
        ctx.embed_tokens(&refs, norm).unwrap().into_iter().flatten().collect()
    } else {
        ctx.embed(&refs, norm).unwrap()
    };
    assert_eq!(ctx.n_past(), 0, "the cache is cleared after the call");
    (tokens, vectors)
}

/// Runner and reference agree: same tokens, same pooling, same vectors (bit-equal expected:
/// the same libraries decode the same batch).
fn check_parity(path: &Path, pooling: Pooling, norm: Normalize, n_ctx: u32, n_ubatch: u32) {
    let model = load(path);
    let (tokens, ours) = runner(&model, pooling, norm, n_ctx, n_ubatch, &TEXTS);
    let r = reference(path, pooling, norm, n_ctx, n_ubatch, &TEXTS);
    assert_eq!(tokens, r.tokens, "tokenization");
    let ctx = Context::new(&model, &opts(pooling, n_ctx, n_ubatch, 1)).unwrap();
    assert_eq!(ctx.pooling().c_value(), Some(r.pooling), "the context's pooling");
    drop(ctx);
    assert_eq!(ours.len(), r.vectors.len(), "number of vectors ({pooling})");
    for (i, (a, b)) in ours.iter().zip(&r.vectors).enumerate() {
        let d = max_rel_diff(a, b);
        assert!(d <= 1e-5, "{pooling} {norm:?} vector {i}: max relative difference {d:e}");
        assert_eq!(a, b, "{pooling} {norm:?} vector {i}: not bit-equal (max relative difference {d:e})");
    }
}

fn generated() -> Vec<(&'static str, ModelSpec)> {
    vec![
        ("tiny_llama", ModelSpec::tiny_llama()),
        ("tiny_swa", ModelSpec::tiny_swa()),
        ("tiny_moe", ModelSpec::tiny_moe()),
    ]
}

const POOLINGS: [Pooling; 4] = [Pooling::Mean, Pooling::Cls, Pooling::Last, Pooling::None];

fn parity_trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (name, spec) in generated() {
        for pooling in POOLINGS {
            let spec = spec.clone();
            trials.push(Trial::test(format!("parity::{name}::{pooling}"), move || {
                check_parity(&common::model(&spec), pooling, Normalize::Euclidean, 256, 96);
                Ok(())
            }));
        }
    }
    for norm in [Normalize::None, Normalize::MaxAbsInt16, Normalize::Taxicab, Normalize::PNorm(3)] {
        trials.push(Trial::test(format!("parity::tiny_llama::mean::normalize_{}", norm.llama_value()), move || {
            check_parity(&common::model(&ModelSpec::tiny_llama()), Pooling::Mean, norm, 256, 96);
            Ok(())
        }));
    }
    trials.push(Trial::test("parity::tiny_llama::unspecified_is_none", || {
        // A model without a pooling type: unspecified means none, in both.
        check_parity(&common::model(&ModelSpec::tiny_llama()), Pooling::Unspecified, Normalize::None, 256, 96);
        Ok(())
    }));
    for pooling in POOLINGS {
        trials.push(trial(&format!("parity::real_model::{pooling}"), real_model(), move |path| {
            check_parity(&path, pooling, Normalize::Euclidean, 512, 384);
        }));
    }
    trials
}

/// The rows of a generated F32 reranker's classifier head (`cls.output.weight`, {n_embd,
/// n_out}): row j is output j's weights, read from the file by hand.
fn classifier_rows(path: &Path) -> Vec<Vec<f32>> {
    let h = tiny_gguf::read_header(path).unwrap();
    let t = h.tensors.iter().find(|t| t.name == "cls.output.weight").expect("a classifier head");
    assert_eq!(t.ggml_type, 0, "an F32 head");
    let (n_embd, n_out) = (t.dims[0] as usize, t.dims[1] as usize);
    let bytes = std::fs::read(path).unwrap();
    let start = (h.data_offset + t.offset) as usize;
    let values: Vec<f32> = bytes[start..start + 4 * n_embd * n_out]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    values.chunks(n_embd).map(<[f32]>::to_vec).collect()
}

/// Reranking on a generated Qwen3 reranker: each score equals, computed by hand from the last
/// token's hidden state (a last-pooling context) and the head's weights read from the file,
/// softmax(W h)[0] (llama.cpp's qwen3 rank pooling), for prompts built as llama-server's
/// /rerank builds them; the labels are the file's.
fn rerank_by_hand(spec: &ModelSpec, template: Option<&str>) {
    let path = common::model(spec);
    let model = load(&path);
    assert_eq!(
        llama_runner::embeddings::classifier_labels(&model),
        vec![Some("yes".to_string()), Some("no".to_string())]
    );
    let query = "Where is the fox?";
    let docs = ["The quick brown fox jumps over the lazy dog.", "Hello world", "fox"];
    let mut rank = Context::new(&model, &opts(Pooling::Unspecified, 256, 96, 1)).unwrap();
    assert_eq!(rank.pooling(), Pooling::Rank, "the model's own pooling type");
    assert_eq!(rank.embedding_width(), 2);
    let scores = rank.rerank(query, &docs).unwrap();

    let rows = classifier_rows(&path);
    let mut last = Context::new(&model, &opts(Pooling::Last, 256, 96, 1)).unwrap();
    for (doc, &score) in docs.iter().zip(&scores) {
        let prompt = llama_runner::embeddings::rerank_prompt(&model, query, doc).unwrap();
        let expected_prompt = match template {
            Some(t) => model.tokenize(&t.replace("{query}", query).replace("{document}", doc), false),
            // BOS query doc: the generated vocabulary adds BOS only (no EOS, no SEP).
            None => Ok([vec![1], model.tokenize(query, false).unwrap(), model.tokenize(doc, false).unwrap()].concat()),
        }
        .unwrap();
        assert_eq!(prompt, expected_prompt, "the rerank prompt for {doc:?}");
        let h = last.embed(&[&prompt], Normalize::None).unwrap().remove(0);
        let logits: Vec<f64> =
            rows.iter().map(|w| w.iter().zip(&h).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()).collect();
        let by_hand = 1.0 / (1.0 + (logits[1] - logits[0]).exp());
        assert!(
            (f64::from(score) - by_hand).abs() < 1e-5,
            "{doc:?}: rerank score {score}, by hand softmax(W h)[0] = {by_hand} (logits {logits:?})"
        );
        // Both outputs, as embed returns them, sum to one.
        let both = rank.embed(&[&prompt], Normalize::None).unwrap().remove(0);
        assert_eq!(both[0], score, "rerank returns the first output of embed");
        assert!((both[0] + both[1] - 1.0).abs() < 1e-6, "softmax outputs {both:?}");
    }
    assert!(scores.windows(2).any(|w| (w[0] - w[1]).abs() > 1e-4), "the documents score differently: {scores:?}");
    // Batched: several documents in one call with more sequences give the same scores.
    let mut wide = Context::new(&model, &opts(Pooling::Rank, 256, 96, 3)).unwrap();
    let batched = wide.rerank(query, &docs).unwrap();
    for (a, b) in batched.iter().zip(&scores) {
        assert!((a - b).abs() < 1e-5, "batched {batched:?} vs one by one {scores:?}");
    }
}

fn tiny() -> Model {
    load(&common::model(&ModelSpec::tiny_llama()))
}

fn tokens(model: &Model, texts: &[&str]) -> Vec<Vec<i32>> {
    texts.iter().map(|t| model.tokenize(t, true).unwrap()).collect()
}

fn slices(t: &[Vec<i32>]) -> Vec<&[i32]> {
    t.iter().map(Vec::as_slice).collect()
}

fn embed_err(e: Error) -> EmbedError {
    match e {
        Error::Embedding(e) => e,
        other => panic!("expected Error::Embedding, got {other:?}"),
    }
}

/// Many texts over several batches (n_ubatch 32, 2 sequences per batch) give each text's own
/// vector: the same as the reference computes for it alone.
fn split_batches() {
    let path = common::model(&ModelSpec::tiny_llama());
    let model = load(&path);
    let texts: Vec<String> = (0..7).map(|i| format!("text {i} {}", "x".repeat(i * 2))).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let toks = tokens(&model, &texts);
    assert!(toks.iter().map(Vec::len).sum::<usize>() > 32, "the texts need several batches");
    let mut ctx = Context::new(&model, &opts(Pooling::Mean, 256, 32, 2)).unwrap();
    let ours = ctx.embed(&slices(&toks), Normalize::Euclidean).unwrap();
    assert_eq!(ours.len(), texts.len());
    let mut worst = 0.0f64;
    for (i, t) in texts.iter().enumerate() {
        let r = reference(&path, Pooling::Mean, Normalize::Euclidean, 256, 32, &[t]);
        let d = max_rel_diff(&ours[i], &r.vectors[0]);
        worst = worst.max(d);
        assert!(d <= 1e-5, "text {i}: max relative difference {d:e}");
    }
    println!("split batches: max relative difference to one-text references {worst:e}");
}

/// A context whose sequences have separate caches (kv_unified off) embeds one text per batch,
/// with the same results as a unified one.
fn separate_caches() {
    let model = tiny();
    let toks = tokens(&model, &TEXTS);
    let unified =
        Context::new(&model, &opts(Pooling::Mean, 256, 96, 3)).unwrap().embed(&slices(&toks), Normalize::None);
    let separate = ContextOptions { kv_unified: false, ..opts(Pooling::Mean, 768, 96, 3) };
    let separate = Context::new(&model, &separate).unwrap().embed(&slices(&toks), Normalize::None);
    let (a, b) = (unified.unwrap(), separate.unwrap());
    for (x, y) in a.iter().zip(&b) {
        assert!(max_rel_diff(x, y) <= 1e-5);
    }
}

fn errors() {
    let model = tiny();
    let toks = tokens(&model, &TEXTS);
    let texts = slices(&toks);

    // Not in embedding mode.
    let mut plain =
        Context::new(&model, &ContextOptions { n_ctx: 256, n_threads: Some(1), ..Default::default() }).unwrap();
    assert_eq!(embed_err(plain.embed(&texts, Normalize::None).unwrap_err()), EmbedError::NotEmbeddingContext);
    assert_eq!(embed_err(plain.embed_tokens(&texts, Normalize::None).unwrap_err()), EmbedError::NotEmbeddingContext);
    assert_eq!(embed_err(plain.rerank("q", &["d"]).unwrap_err()), EmbedError::NotEmbeddingContext);

    // Pooling that does not fit the call.
    let mut none = Context::new(&model, &opts(Pooling::None, 256, 96, 3)).unwrap();
    assert_eq!(embed_err(none.embed(&texts, Normalize::None).unwrap_err()), EmbedError::PoolingNone);
    let mut mean = Context::new(&model, &opts(Pooling::Mean, 256, 96, 3)).unwrap();
    assert_eq!(
        embed_err(mean.embed_tokens(&texts, Normalize::None).unwrap_err()),
        EmbedError::Pooled { pooling: Pooling::Mean }
    );

    // Reranking without rank pooling, and rank pooling on a model without a classifier head.
    let e = embed_err(mean.rerank("query", &["doc"]).unwrap_err());
    assert_eq!(e, EmbedError::NotRankPooling { pooling: Pooling::Mean });
    assert!(e.to_string().contains("rank pooling"), "{e}");
    let e = embed_err(Context::new(&model, &opts(Pooling::Rank, 256, 128, 1)).unwrap_err());
    assert!(matches!(e, EmbedError::NoClassifierHead { .. }), "{e:?}");
    assert!(e.to_string().contains("classifier head"), "{e}");
    // Rank pooling without embedding mode is inert in llama.cpp and allowed.
    Context::new(&model, &ContextOptions { embeddings: false, ..opts(Pooling::Rank, 256, 128, 1) }).unwrap();

    // Empty input, empty text, bad token.
    assert!(matches!(mean.embed(&[], Normalize::None), Err(Error::EmptyInput { .. })));
    assert_eq!(
        embed_err(mean.embed(&[texts[0], &[]], Normalize::None).unwrap_err()),
        EmbedError::EmptyText { index: 1 }
    );
    assert!(matches!(mean.embed(&[&[1, 999_999]], Normalize::None), Err(Error::InvalidToken { token: 999_999, .. })));
    assert!(matches!(mean.rerank("q", &[]), Err(Error::Embedding(EmbedError::NotRankPooling { .. }))));

    // A text longer than one micro-batch (llama.cpp pools per micro-batch; a non-causal model
    // would assert): refused, for pooled and, past n_batch, for per-token calls.
    let mut small = Context::new(&model, &ContextOptions { n_batch: 64, ..opts(Pooling::Mean, 256, 16, 2) }).unwrap();
    let long: Vec<i32> = (0..20).map(|i| 3 + i).collect();
    let e = embed_err(small.embed(&[texts[0], &long], Normalize::None).unwrap_err());
    assert!(matches!(e, EmbedError::TextTooLong { index: 1, n_tokens: 20, max: 16, .. }), "{e:?}");
    let mut small_none = Context::new(&model, &opts(Pooling::None, 256, 16, 1)).unwrap();
    let e = embed_err(small_none.embed_tokens(&[&long], Normalize::None).unwrap_err());
    assert!(matches!(e, EmbedError::TextTooLong { index: 0, n_tokens: 20, max: 16, .. }), "{e:?}");

    // After every refusal the contexts still work.
    assert_eq!(mean.embed(&texts, Normalize::Euclidean).unwrap().len(), 3);
    assert_eq!(
        none.embed_tokens(&texts, Normalize::Euclidean).unwrap().iter().map(Vec::len).collect::<Vec<_>>(),
        toks.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// Mean pooling with a reserve micro-batch that is not a multiple of n_seq_max: llama.cpp
/// aborts creating the context (the reference shows it, in its own process); the runner refuses.
fn mean_reserve_not_multiple() {
    let path = common::model(&ModelSpec::tiny_llama());
    let model = load(&path);
    let e = embed_err(Context::new(&model, &opts(Pooling::Mean, 256, 128, 3)).unwrap_err());
    assert_eq!(e, EmbedError::ReserveNotMultiple { pooling: Pooling::Mean, n_tokens: 128, n_seq_max: 3 });
    // n_ctx 100 is padded to 256 by llama.cpp, n_batch clamped to 100: 100 % 3 != 0 either.
    let e = embed_err(Context::new(&model, &opts(Pooling::Mean, 100, 100, 3)).unwrap_err());
    assert!(matches!(e, EmbedError::ReserveNotMultiple { n_tokens: 100, .. }), "{e:?}");
    // CLS, last and none pool without the averaging matrix: fine.
    for pooling in [Pooling::Cls, Pooling::Last, Pooling::None] {
        Context::new(&model, &opts(pooling, 256, 128, 3)).unwrap();
    }
    let c = Pooling::Mean.c_value().unwrap();
    let out = Command::new(reference_binary())
        .arg(&path)
        .args([c.to_string(), "2".into(), "256".into(), "128".into(), "1".into(), "a".into(), "b".into(), "c".into()])
        .env("GGML_NO_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "llama.cpp itself is expected to abort here");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ggml_can_mul_mat"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A context in embedding mode can still generate (llama.cpp keeps logits for every output).
fn generation_still_works() {
    let model = tiny();
    let mut ctx = Context::new(&model, &opts(Pooling::Mean, 256, 128, 1)).unwrap();
    let prompt = model.tokenize("Hello", true).unwrap();
    let out = ctx.generate_greedy(&prompt, 4).unwrap();
    assert!(out.tokens.len() <= 4);
    ctx.clear();
    assert_eq!(ctx.embed(&[&prompt], Normalize::None).unwrap().len(), 1);
}

fn normalize_math() {
    let v = [3.0f32, -4.0];
    let mut e = v;
    Normalize::Euclidean.apply(&mut e);
    assert_eq!(e, [0.6, -0.8]);
    let mut t = v;
    Normalize::Taxicab.apply(&mut t);
    let k = (1.0f64 / 7.0) as f32; // the factor is rounded to f32 first, as in llama.cpp
    assert_eq!(t, [3.0 * k, -4.0 * k]);
    let mut m = v;
    Normalize::MaxAbsInt16.apply(&mut m);
    assert_eq!(m, [24570.0, -32760.0]);
    let mut z = [0.0f32; 3];
    Normalize::Euclidean.apply(&mut z);
    assert_eq!(z, [0.0; 3]);
    for n in [-1, 0, 1, 2, 3, 7] {
        assert_eq!(Normalize::from_llama(n).unwrap().llama_value(), n);
    }
    assert_eq!(Normalize::from_llama(-2), None);
}

fn flag_round_trip() {
    let p = flags::parse("--embeddings --pooling cls").unwrap();
    assert!(p.options.context.embeddings);
    assert_eq!(p.options.context.pooling, Pooling::Cls);
    let p = flags::parse("--embedding").unwrap();
    assert!(p.options.context.embeddings && p.options.context.pooling == Pooling::Unspecified);
    let p = flags::parse("--rerank").unwrap();
    assert!(p.options.context.embeddings && p.options.context.pooling == Pooling::Rank);
    for bad in ["unspecified", "MEAN", "max"] {
        let e = flags::parse(&format!("--pooling {bad}")).unwrap_err();
        assert!(e.to_string().contains("none"), "{bad}: {e}");
    }
    let env = [("LLAMA_ARG_POOLING".to_string(), "last".to_string()), ("LLAMA_ARG_EMBEDDINGS".into(), "1".into())];
    let p = flags::parse_with_env(&env, "").unwrap();
    assert!(p.options.context.embeddings && p.options.context.pooling == Pooling::Last);
    for pooling in [Pooling::None, Pooling::Mean, Pooling::Cls, Pooling::Last, Pooling::Rank, Pooling::Unspecified] {
        for embeddings in [false, true] {
            let mut o = RunOptions::default();
            o.context.embeddings = embeddings;
            o.context.pooling = pooling;
            let r = flags::render(&o, Dialect::Server);
            assert_eq!(flags::parse(&r.to_string()).unwrap().options, o, "{r}");
            let bench = flags::render(&o, Dialect::Bench);
            assert!(!bench.args.iter().any(|a| a == "--pooling" || a == "--embeddings"), "{bench}");
        }
    }
}

fn main() {
    let mut trials = parity_trials();
    trials.push(Trial::test("split_batches", || {
        split_batches();
        Ok(())
    }));
    trials.push(Trial::test("separate_caches", || {
        separate_caches();
        Ok(())
    }));
    trials.push(Trial::test("mean_reserve_not_multiple", || {
        mean_reserve_not_multiple();
        Ok(())
    }));
    trials.push(Trial::test("errors", || {
        errors();
        Ok(())
    }));
    trials.push(Trial::test("generation_still_works", || {
        generation_still_works();
        Ok(())
    }));
    trials.push(Trial::test("normalize_math", || {
        normalize_math();
        Ok(())
    }));
    trials.push(Trial::test("flag_round_trip", || {
        flag_round_trip();
        Ok(())
    }));
    trials.push(Trial::test("parity::tiny_rerank::rank", || {
        // The classifier outputs against llama.cpp's rank pooling, raw and normalised.
        for norm in [Normalize::None, Normalize::Euclidean] {
            check_parity(&common::model(&ModelSpec::tiny_rerank()), Pooling::Rank, norm, 256, 96);
        }
        Ok(())
    }));
    trials.push(Trial::test("rerank::by_hand", || {
        rerank_by_hand(&ModelSpec::tiny_rerank(), None);
        Ok(())
    }));
    trials.push(Trial::test("rerank::by_hand_with_template", || {
        // A model with a rerank prompt template (`tokenizer.chat_template.rerank`, as llama.cpp's
        // conversion writes for Qwen3 rerankers): the prompt is the template filled in.
        let template = "<s>Query: {query}\nDocument: {document}\nRelevant:";
        let spec = ModelSpec {
            extra_metadata: vec![(
                "tokenizer.chat_template.rerank".to_string(),
                tiny_gguf::ExtraValue::String(template.to_string()),
            )],
            ..ModelSpec::tiny_rerank()
        };
        rerank_by_hand(&spec, Some(template));
        Ok(())
    }));
    trials.push(trial("real_model::rerank_refused", real_model(), |path| {
        let model = load(&path);
        let e = embed_err(Context::new(&model, &opts(Pooling::Rank, 512, 512, 1)).unwrap_err());
        assert!(matches!(e, EmbedError::NoClassifierHead { .. }), "{e:?}");
    }));
    common::run_trials(trials);
}
