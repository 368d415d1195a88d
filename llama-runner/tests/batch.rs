//! Batches of many sequences and per-sequence cache operations, on generated models and on the
//! real model: a sequence decoded in a batch beside others computes what it computes alone,
//! shared prefixes equal decoding the whole text, and every capacity, id and position llama.cpp
//! would abort on or refuse is an error naming the token, after which the context still works.

mod common;

use std::path::Path;

use common::Prerequisite;
use llama_runner::sampling::{self, SamplingOptions};
use llama_runner::sequences::SeqError;
use llama_runner::{Backend, Batch, BatchError, Context, ContextOptions, Error, Model, ModelOptions, Sampler};
use tiny_gguf::ModelSpec;

fn load(path: &Path) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

fn ctx_with<'m>(model: &'m Model, n_seq_max: u32, kv_unified: bool) -> Context<'m> {
    Context::new(
        model,
        &ContextOptions {
            n_ctx: 1024,
            n_batch: 256,
            n_ubatch: 256,
            n_seq_max,
            kv_unified,
            n_threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Decodes `tokens` into sequence `seq` from position `start`, logits for the last one.
fn decode_seq(ctx: &mut Context<'_>, seq: i32, start: i32, tokens: &[i32]) -> Vec<f32> {
    let mut batch = Batch::new(tokens.len(), 1).unwrap();
    for (i, &t) in tokens.iter().enumerate() {
        batch.add(t, start + i as i32, &[seq], i + 1 == tokens.len()).unwrap();
    }
    let out = ctx.decode_batch(&batch).unwrap();
    out.logits(tokens.len() - 1).unwrap().to_vec()
}

/// The largest difference between two logit rows, relative to the largest logit.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn argmax(v: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as i32
}

const PROMPTS: [&str; 3] = ["The quick brown fox", "Once upon a time there was", "1, 2, 3, 4,"];

/// Three prompts in one batch (each in its own sequence), then a few greedy steps with one
/// token per sequence per batch: every sequence's logits match those of the same sequence
/// decoded alone in its own context, to `tolerance` (relative to the largest logit).
///
/// The real model runs without repacked weights, where batch and alone are bit-equal
/// (tolerance 0). With repacking, llama.cpp's repacked Q4_K/Q8_0 kernels give results that
/// depend on the rows computed together: on an AVX-512 Xeon (2026-12-04) batch and alone
/// differed by 1.7-5.2 % of the largest logit, and each differed from the unrepacked result by
/// as much (3-5.7 %); on an AMD EPYC (no AVX-512) the difference stayed under 2 %.
fn sequences_in_one_batch_compute_what_they_compute_alone(path: &Path, repack: bool, tolerance: f32) {
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions { repack, ..Default::default() }).unwrap();
    for kv_unified in [false, true] {
        let prompts: Vec<Vec<i32>> = PROMPTS.iter().map(|p| model.tokenize(p, true).unwrap()).collect();
        let mut ctx = ctx_with(&model, 3, kv_unified);
        let total: usize = prompts.iter().map(Vec::len).sum();
        let mut batch = Batch::new(total, 1).unwrap();
        let mut last = Vec::new();
        for (s, p) in prompts.iter().enumerate() {
            for (i, &t) in p.iter().enumerate() {
                batch.add(t, i as i32, &[s as i32], i + 1 == p.len()).unwrap();
            }
            last.push(batch.len() - 1);
        }
        let mut rows: Vec<Vec<f32>> = {
            let out = ctx.decode_batch(&batch).unwrap();
            assert_eq!(out.indices(), last.as_slice());
            last.iter().map(|&i| out.logits(i).unwrap().to_vec()).collect()
        };
        // Alone, step by step with the same greedy tokens.
        let mut alone: Vec<(Context<'_>, Vec<f32>)> = prompts
            .iter()
            .map(|p| {
                let mut c = ctx_with(&model, 1, false);
                let l = decode_seq(&mut c, 0, 0, p);
                (c, l)
            })
            .collect();
        for step in 0..4 {
            let mut next = Batch::new(3, 1).unwrap();
            for s in 0..3 {
                let d = rel_diff(&rows[s], &alone[s].1);
                assert!(d <= tolerance, "kv_unified {kv_unified}, step {step}, sequence {s}: logits differ by {d}");
                let t = argmax(&alone[s].1);
                let pos = ctx.seq_next_pos(s as i32).unwrap();
                assert_eq!(pos as usize, prompts[s].len() + step);
                next.add(t, pos, &[s as i32], true).unwrap();
                let (c, l) = &mut alone[s];
                *l = decode_seq(c, 0, pos, &[t]);
            }
            let out = ctx.decode_batch(&next).unwrap();
            rows = (0..3).map(|i| out.logits(i).unwrap().to_vec()).collect();
        }
        for (s, p) in prompts.iter().enumerate() {
            let r = ctx.seq_range(s as i32).unwrap().unwrap();
            assert_eq!(r, 0..(p.len() + 4) as i32, "sequence {s}");
        }
        assert_eq!(ctx.n_past(), prompts[0].len() + 4, "n_past follows sequence 0");
    }
}

/// A system prompt decoded once and shared by four sequences: each continues exactly as the
/// whole text decoded in one sequence (unified cache, so partial copies work too).
fn shared_prefix_equals_decoding_the_whole_text(path: &Path) {
    let model = load(path);
    let system = model.tokenize("You are a helpful assistant. Answer briefly.", true).unwrap();
    let mut ctx = ctx_with(&model, 4, true);
    ctx.decode_prefix(&system, &[0, 1, 2, 3]).unwrap();
    for s in 0..4 {
        assert_eq!(ctx.seq_range(s).unwrap(), Some(0..system.len() as i32));
    }
    for (s, q) in PROMPTS.iter().enumerate() {
        let q = model.tokenize(q, false).unwrap();
        let ours = decode_seq(&mut ctx, s as i32 + 1, system.len() as i32, &q);
        // The same two decodes in a context of one sequence: the copy is the prefix itself.
        let mut alone = ctx_with(&model, 1, false);
        decode_seq(&mut alone, 0, 0, &system);
        let split = decode_seq(&mut alone, 0, system.len() as i32, &q);
        let d = rel_diff(&ours, &split);
        assert!(d < 2e-3, "sequence {}: logits differ from the same decodes alone by {d}", s + 1);
        // And close to the whole text in one decode (other batch shapes round differently).
        let mut whole = ctx_with(&model, 1, false);
        let theirs = decode_seq(&mut whole, 0, 0, &[system.clone(), q].concat());
        let d = rel_diff(&ours, &theirs);
        assert!(d < 5e-2, "sequence {}: logits differ from the whole text by {d}", s + 1);
    }
    // Remove a tail and decode it again: the same logits.
    let q = model.tokenize(PROMPTS[0], false).unwrap();
    let end = system.len() as i32 + q.len() as i32;
    let before = decode_seq(&mut ctx, 0, system.len() as i32, &q);
    ctx.seq_remove(0, system.len() as i32..).unwrap();
    assert_eq!(ctx.seq_range(0).unwrap(), Some(0..system.len() as i32));
    let again = decode_seq(&mut ctx, 0, system.len() as i32, &q);
    assert!(rel_diff(&before, &again) < 1e-3);
    assert_eq!(ctx.seq_next_pos(0).unwrap(), end);
    // A partial copy (the system prompt only) and keep.
    ctx.seq_copy(0, 3, ..system.len() as i32).unwrap();
    assert_eq!(ctx.seq_range(3).unwrap(), Some(0..system.len() as i32));
    ctx.seq_keep(3).unwrap();
    for s in 0..3 {
        assert_eq!(ctx.seq_range(s).unwrap(), None, "sequence {s} after keep(3)");
    }
    assert_eq!(ctx.n_past(), 0);
    ctx.seq_clear(3).unwrap();
    assert_eq!(ctx.seq_range(3).unwrap(), None);
}

/// Shifting positions (as context shifting does) where the memory can shift.
fn shifts_move_positions(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let tokens = model.tokenize(PROMPTS[1], true).unwrap();
    let mut ctx = ctx_with(&model, 2, false);
    decode_seq(&mut ctx, 1, 0, &tokens);
    let n = tokens.len() as i32;
    assert!(ctx.can_shift());
    // Drop the first two positions and move the rest down.
    ctx.seq_remove(1, 0..2).unwrap();
    ctx.seq_shift(1, 2.., -2).unwrap();
    assert_eq!(ctx.seq_range(1).unwrap(), Some(0..n - 2));
    // Decoding continues at the shifted end.
    decode_seq(&mut ctx, 1, n - 2, &tokens[..1]);
    ctx.seq_divide(1, .., 2).unwrap();
    assert_eq!(ctx.seq_range(1).unwrap().map(|r| r.end), Some((n - 2) / 2 + 1));
    assert!(matches!(ctx.seq_divide(1, .., 0), Err(Error::Sequence(SeqError::BadDivisor { divisor: 0 }))));
    assert!(matches!(ctx.seq_shift(1, .., i32::MAX), Err(Error::Sequence(SeqError::ShiftOverflow { .. }))));
    #[allow(clippy::reversed_empty_ranges)] // the point: a reversed range is refused
    let reversed = 5..2;
    assert!(matches!(ctx.seq_remove(1, reversed), Err(Error::Sequence(SeqError::BadRange { .. }))));
    assert!(matches!(ctx.seq_shift(0, -1.., 1), Err(Error::Sequence(SeqError::BadRange { .. }))));
}

/// Everything llama.cpp would abort on or refuse is an error naming the token; nothing is
/// decoded, and the context works afterwards.
fn bad_batches_are_errors(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let n_vocab = model.n_vocab() as i32;
    let batch_err = |r: llama_runner::Result<()>| match r {
        Err(Error::Batch(e)) => e,
        other => panic!("expected a batch error, got {other:?}"),
    };
    // Capacities, on add.
    assert!(matches!(Batch::new(0, 1), Err(Error::Batch(BatchError::ZeroCapacity))));
    assert!(matches!(Batch::new(4, 0), Err(Error::Batch(BatchError::BadSeqCapacity { .. }))));
    assert!(matches!(Batch::new(4, 257), Err(Error::Batch(BatchError::BadSeqCapacity { .. }))));
    assert!(matches!(Batch::new(usize::MAX, 1), Err(Error::Batch(BatchError::CapacityTooLarge { .. }))));
    assert!(matches!(Batch::embeddings(4, 0, 1), Err(Error::Batch(BatchError::ZeroEmbdWidth))));
    assert!(matches!(Batch::embeddings(1 << 20, 1 << 12, 1), Err(Error::Batch(BatchError::CapacityTooLarge { .. }))));
    let mut b = Batch::new(2, 2).unwrap();
    assert!(matches!(batch_err(b.add(1, 0, &[0, 1, 2], false)), BatchError::TooManySeqIds { given: 3, max: 2, .. }));
    assert!(matches!(batch_err(b.add(1, 0, &[], false)), BatchError::NoSeqId { .. }));
    assert!(matches!(batch_err(b.add(1, 0, &[1, 1], false)), BatchError::DuplicateSeqId { seq: 1, .. }));
    assert!(matches!(batch_err(b.add(1, 0, &[-1], false)), BatchError::NegativeSeqId { .. }));
    assert!(matches!(batch_err(b.add(1, -3, &[0], false)), BatchError::NegativePos { pos: -3, .. }));
    assert!(matches!(batch_err(b.add_embedding(&[0.0], 0, &[0], false)), BatchError::WrongKind { .. }));
    assert!(b.is_empty(), "refused tokens are not added");
    b.add(1, 0, &[0], false).unwrap();
    b.add(2, 1, &[0], true).unwrap();
    assert!(matches!(batch_err(b.add(3, 2, &[0], false)), BatchError::Full { capacity: 2 }));
    assert_eq!(
        (b.len(), b.token(1), b.pos(1), b.seq_ids(1), b.output(1)),
        (2, Some(2), Some(1), Some(&[0][..]), Some(true))
    );
    assert_eq!(b.token(2), None);

    // Against the context, on decode.
    let mut ctx = ctx_with(&model, 2, false);
    let decode_err = |ctx: &mut Context<'_>, b: &Batch| match ctx.decode_batch(b) {
        Err(Error::Batch(e)) => e,
        Err(e) => panic!("expected a batch error, got {e:?}"),
        Ok(_) => panic!("decoded a bad batch"),
    };
    let one = |t: i32, pos: i32, seqs: &[i32]| {
        let mut b = Batch::new(1, seqs.len().max(1)).unwrap();
        b.add(t, pos, seqs, true).unwrap();
        b
    };
    assert!(matches!(decode_err(&mut ctx, &Batch::new(1, 1).unwrap()), BatchError::Empty));
    assert!(matches!(decode_err(&mut ctx, &one(1, 0, &[2])), BatchError::SeqOutOfRange { seq: 2, n_seq_max: 2, .. }));
    assert!(matches!(decode_err(&mut ctx, &one(n_vocab, 0, &[0])), BatchError::TokenOutOfVocab { .. }));
    assert!(matches!(decode_err(&mut ctx, &one(-1, 0, &[0])), BatchError::TokenOutOfVocab { .. }));
    let mut big = Batch::new(300, 1).unwrap();
    for i in 0..300 {
        big.add(1, i, &[0], false).unwrap();
    }
    assert!(matches!(decode_err(&mut ctx, &big), BatchError::TooLarge { n_tokens: 300, max: 256, .. }));
    let mut gap = Batch::new(2, 1).unwrap();
    gap.add(1, 0, &[0], false).unwrap();
    gap.add(2, 2, &[0], true).unwrap();
    assert!(matches!(decode_err(&mut ctx, &gap), BatchError::NotContinuous { seq: 0, .. }));
    let mut back = Batch::new(2, 1).unwrap();
    back.add(1, 1, &[0], false).unwrap();
    back.add(2, 0, &[0], true).unwrap();
    assert!(matches!(decode_err(&mut ctx, &back), BatchError::Decreasing { .. }));
    // (An empty sequence may start at any position, as in llama.cpp: after a shift it does.)
    let mut emb = Batch::embeddings(1, 3, 1).unwrap();
    emb.add_embedding(&[0.0; 3], 0, &[0], true).unwrap();
    assert!(matches!(decode_err(&mut ctx, &emb), BatchError::EmbdWidthModel { width: 3, .. }));
    assert_eq!(ctx.seq_range(0).unwrap(), None, "nothing was decoded");

    // A good batch now, then positions that do not continue the cache, and outputs.
    let toks = model.tokenize(PROMPTS[0], true).unwrap();
    decode_seq(&mut ctx, 0, 0, &toks);
    let n = toks.len() as i32;
    assert!(
        matches!(decode_err(&mut ctx, &one(1, n + 3, &[0])), BatchError::PositionGap { cache_last, .. } if cache_last == n - 1)
    );
    assert!(matches!(decode_err(&mut ctx, &one(1, 0, &[0])), BatchError::PositionGap { .. }));
    // Shared by two sequences whose caches differ.
    assert!(matches!(
        decode_err(&mut ctx, &one(1, n, &[0, 1])),
        BatchError::PositionGap { .. } | BatchError::CoupledDiverged { .. }
    ));
    let mut two = Batch::new(2, 1).unwrap();
    two.add(1, n, &[0], false).unwrap();
    two.add(2, 0, &[1], true).unwrap();
    let out = ctx.decode_batch(&two).unwrap();
    assert_eq!(out.indices(), &[1]);
    assert!(matches!(out.logits(0), Err(Error::Batch(BatchError::NoOutput { index: 0, .. }))));
    assert!(matches!(out.logits(7), Err(Error::Batch(BatchError::NoOutput { index: 7, .. }))));
    assert_eq!(out.logits(1).unwrap().len(), n_vocab as usize);
    assert_eq!(out.argmax(1).unwrap(), argmax(out.logits(1).unwrap()));
    // Sequence operations out of range.
    assert!(matches!(ctx.seq_range(2), Err(Error::Sequence(SeqError::OutOfRange { seq: 2, .. }))));
    assert!(matches!(ctx.seq_remove(-1, ..), Err(Error::Sequence(SeqError::OutOfRange { .. }))));
    assert!(matches!(ctx.seq_copy(0, 9, ..), Err(Error::Sequence(SeqError::OutOfRange { .. }))));
    assert!(matches!(ctx.seq_keep(2), Err(Error::Sequence(SeqError::OutOfRange { .. }))));
    assert!(matches!(ctx.decode_prefix(&toks, &[]), Err(Error::Sequence(SeqError::NoSequences))));
    // Separate buffers copy only whole sequences.
    assert!(matches!(ctx.seq_copy(0, 1, 0..2), Err(Error::Sequence(SeqError::PartialCopy { .. }))));
    ctx.seq_copy(0, 1, ..).unwrap();
    assert_eq!(ctx.seq_range(1).unwrap(), ctx.seq_range(0).unwrap());
    // The context still decodes and generates.
    ctx.clear();
    assert!(!ctx.generate_greedy(&toks, 4).unwrap().tokens.is_empty());

    // Context options llama.cpp aborts on.
    for (n_seq_max, n_batch) in [(0, 256), (257, 512), (8, 4)] {
        let o = ContextOptions { n_ctx: 256, n_batch, n_ubatch: n_batch.min(4), n_seq_max, ..Default::default() };
        assert!(
            matches!(Context::new(&model, &o), Err(Error::InvalidOption { .. })),
            "n_seq_max {n_seq_max}, n_batch {n_batch}"
        );
    }
}

/// Sampling at batch indices: a chain per sequence, and a grammar-constrained one.
fn samplers_per_sequence(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let mut ctx = ctx_with(&model, 2, false);
    let a = model.tokenize(PROMPTS[0], true).unwrap();
    let b = model.tokenize(PROMPTS[1], true).unwrap();
    let mut greedy = Sampler::greedy(&model).unwrap();
    let mut yes_no = Sampler::new(
        &model,
        &sampling::parse_flags(&["--grammar", "root ::= (\"yes\" | \"no\") \".\"", "--temp", "0"]).unwrap(),
    )
    .unwrap();
    let mut batch = Batch::new(a.len() + b.len(), 1).unwrap();
    for (i, &t) in a.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == a.len()).unwrap();
    }
    for (i, &t) in b.iter().enumerate() {
        batch.add(t, i as i32, &[1], i + 1 == b.len()).unwrap();
    }
    let (mut ia, mut ib) = (a.len() - 1, batch.len() - 1);
    let (mut pa, mut pb) = (a.len() as i32, b.len() as i32);
    let mut text_b = String::new();
    let mut greedy_a = Vec::new();
    let mut b_done = false;
    for _ in 0..8 {
        let out = ctx.decode_batch(&batch).unwrap();
        let ta = out.sample(&mut greedy, ia).unwrap();
        assert_eq!(ta, out.argmax(ia).unwrap());
        greedy_a.push(ta);
        let tb = if b_done { None } else { Some(out.sample(&mut yes_no, ib).unwrap()) };
        batch.clear();
        batch.add(ta, pa, &[0], true).unwrap();
        ia = 0;
        pa += 1;
        if let Some(tb) = tb {
            if model.is_eog(tb) {
                b_done = true;
            } else {
                text_b.push_str(&model.token_piece(tb).unwrap());
                batch.add(tb, pb, &[1], true).unwrap();
                ib = 1;
                pb += 1;
            }
        }
    }
    assert!(b_done, "the grammar ends the sequence: {text_b:?}");
    assert!(["yes.", "no."].contains(&text_b.as_str()), "{text_b:?}");
    // Sequence 0 went on greedily, as alone.
    let mut alone = ctx_with(&model, 1, false);
    let expected = alone.generate_greedy(&a, 8).unwrap().tokens;
    assert_eq!(greedy_a[..expected.len().min(8)], expected[..expected.len().min(8)]);
    // A sampler of another model.
    let other = load(&common::model(&ModelSpec::tiny_moe()));
    let mut foreign = Sampler::new(&other, &SamplingOptions::default()).unwrap();
    let mut one = Batch::new(1, 1).unwrap();
    one.add(a[0], ctx.seq_next_pos(0).unwrap(), &[0], true).unwrap();
    let out = ctx.decode_batch(&one).unwrap();
    assert!(matches!(out.sample(&mut foreign, 0), Err(Error::SamplerModelMismatch)));
}

fn main() {
    let tiny = || Prerequisite::Met(common::model(&ModelSpec::tiny_llama()));
    let moe = || Prerequisite::Met(common::model(&ModelSpec::tiny_moe()));
    common::run_trials(vec![
        common::trial("generated/sequences_in_one_batch", tiny(), |p| {
            sequences_in_one_batch_compute_what_they_compute_alone(&p, true, 2e-2)
        }),
        common::trial("generated_moe/sequences_in_one_batch", moe(), |p| {
            sequences_in_one_batch_compute_what_they_compute_alone(&p, true, 2e-2)
        }),
        common::trial("real_model/sequences_in_one_batch", common::real_model(), |p| {
            sequences_in_one_batch_compute_what_they_compute_alone(&p, false, 0.0)
        }),
        common::trial("generated/shared_prefix", tiny(), |p| shared_prefix_equals_decoding_the_whole_text(&p)),
        common::trial("real_model/shared_prefix", common::real_model(), |p| {
            shared_prefix_equals_decoding_the_whole_text(&p)
        }),
        common::trial("shifts_move_positions", Prerequisite::Met(()), shifts_move_positions),
        common::trial("bad_batches_are_errors", Prerequisite::Met(()), bad_batches_are_errors),
        common::trial("samplers_per_sequence", Prerequisite::Met(()), samplers_per_sequence),
    ])
}
