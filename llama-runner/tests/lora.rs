//! LoRA adapters and control vectors on generated models: what an adapter does to the logits
//! (nothing for zeros or scale 0, exactly what is computed by hand for a known one, undone
//! exactly when removed), and every refusal of `llama_runner::adapter`.

mod common;

use std::path::{Path, PathBuf};

use llama_runner::{
    AdapterError, Backend, Batch, Context, ContextOptions, ControlVector, Error, LoraAdapter, Model, ModelOptions,
    Normalize, Pooling,
};
use tiny_gguf::{ControlVectorSpec, LoraSpec, LoraTensor, ModelSpec, lora_shapes, write_control_vector, write_lora};

/// The prompt every logits comparison decodes.
const PROMPT: [i32; 6] = [1, 75, 104, 108, 108, 111];

fn spec() -> ModelSpec {
    ModelSpec::tiny_llama()
}

fn load(spec: &ModelSpec) -> Model {
    Model::load(Backend::get().unwrap(), common::model(spec), &ModelOptions::default()).unwrap()
}

fn ctx_options() -> ContextOptions {
    ContextOptions { n_ctx: 256, n_threads: Some(2), n_threads_batch: Some(2), ..Default::default() }
}

/// A file in this test binary's own directory.
fn file(name: &str) -> PathBuf {
    let dir = common::scratch().join("lora");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn lora_file(name: &str, spec: &LoraSpec) -> PathBuf {
    let path = file(name);
    write_lora(spec, &path).unwrap();
    path
}

fn cvec_file(name: &str, spec: &ControlVectorSpec) -> PathBuf {
    let path = file(name);
    write_control_vector(spec, &path).unwrap();
    path
}

/// The logits of the last prompt token, decoded from an empty cache.
fn logits(ctx: &mut Context<'_>) -> Vec<f32> {
    ctx.clear();
    let mut batch = Batch::new(PROMPT.len(), 1).unwrap();
    for (i, &t) in PROMPT.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == PROMPT.len()).unwrap();
    }
    let out = ctx.decode_batch(&batch).unwrap();
    out.logits(PROMPT.len() - 1).unwrap().to_vec()
}

/// The final hidden state of the last prompt token (the input of `output.weight`: the
/// embedding of pooling none is `result_norm`, what `build_lora_mm(model.output, cur)` gets).
fn hidden(model: &Model) -> Vec<f32> {
    let opts = ContextOptions { embeddings: true, pooling: Pooling::None, ..ctx_options() };
    let mut ctx = Context::new(model, &opts).unwrap();
    let mut per_token = ctx.embed_tokens(&[&PROMPT], Normalize::None).unwrap().remove(0);
    per_token.pop().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A deterministic, non-trivial A/B pair for `output.weight` of rank `rank`.
fn known_pair(spec: &ModelSpec, rank: u32, phase: f32) -> LoraTensor {
    let (sa, sb) = lora_shapes(spec, "output.weight", rank).unwrap();
    let a = (0..sa.iter().product::<u64>()).map(|k| ((k as f32) * 0.37 + phase).sin() * 0.5).collect();
    let b = (0..sb.iter().product::<u64>()).map(|k| ((k as f32) * 0.11 + 2.0 * phase).cos()).collect();
    LoraTensor { target: "output.weight".into(), a, b }
}

/// `factor * B·(A·h)` for `output.weight` (A `[n_embd, r]`: row j holds n_embd values; B
/// `[r, n_vocab]`: row o holds r values), in f64.
fn delta(t: &LoraTensor, rank: usize, h: &[f32], factor: f64) -> Vec<f64> {
    let n_embd = h.len();
    let ah: Vec<f64> =
        (0..rank).map(|j| (0..n_embd).map(|i| f64::from(t.a[j * n_embd + i]) * f64::from(h[i])).sum()).collect();
    (0..t.b.len() / rank)
        .map(|o| factor * (0..rank).map(|j| f64::from(t.b[o * rank + j]) * ah[j]).sum::<f64>())
        .collect()
}

/// Tolerance of a logit against the hand computation. The base part `W·h` is computed by the
/// same kernel on the same input with and without the adapter, so it cancels exactly; what
/// remains is the f32 rounding of llama.cpp's two F32 products (sums of 128 and of 2-3 terms
/// whose magnitudes stay below ~10, so errors of ~1e-5) and of the final addition (half an ulp
/// of a logit below ~20, 1e-6), plus the hidden state read from an embedding context, which
/// runs the same graph up to `result_norm`. 1e-3 + 1e-4 relative is a hundred times that,
/// and a hundred times smaller than the effect checked (asserted > 0.5).
fn assert_close(got: &[f32], base: &[f32], expected_delta: &[f64]) {
    let biggest = expected_delta.iter().fold(0.0f64, |m, d| m.max(d.abs()));
    assert!(biggest > 0.5, "the adapter's effect ({biggest}) is too small to test");
    for (o, ((&g, &b), &d)) in got.iter().zip(base).zip(expected_delta).enumerate() {
        let want = f64::from(b) + d;
        let tol = 1e-3 + 1e-4 * want.abs();
        assert!((f64::from(g) - want).abs() <= tol, "logit {o}: got {g}, expected {want} (base {b} + delta {d})");
    }
}

#[test]
fn a_zero_adapter_changes_no_logit() {
    let spec = spec();
    let model = load(&spec);
    let targets = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"];
    let zero = LoraAdapter::load(&model, lora_file("zero.gguf", &LoraSpec::zeros(spec.clone(), 4, &targets))).unwrap();
    assert_eq!(zero.targets(), {
        let mut t = targets.map(String::from).to_vec();
        t.sort();
        t
    });
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);
    ctx.set_loras(&[(&zero, 1.0)]).unwrap();
    assert_eq!(logits(&mut ctx), base, "a zero adapter must leave every logit bit-equal");
}

#[test]
fn scale_zero_is_no_adapter_and_removal_restores_the_logits() {
    let spec = spec();
    let model = load(&spec);
    let targets = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"];
    let random =
        LoraAdapter::load(&model, lora_file("random.gguf", &LoraSpec::random(spec.clone(), 4, 9, &targets))).unwrap();
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);

    ctx.set_loras(&[(&random, 0.0)]).unwrap();
    assert_eq!(logits(&mut ctx), base, "scale 0 must be the same as no adapter");

    ctx.set_loras(&[(&random, 1.0)]).unwrap();
    let adapted = logits(&mut ctx);
    assert!(max_abs_diff(&adapted, &base) > 1e-3, "the random adapter must change the logits");

    ctx.clear_loras();
    assert_eq!(logits(&mut ctx), base, "clear_loras must restore the logits exactly");
    ctx.set_loras(&[(&random, 1.0)]).unwrap();
    assert_eq!(logits(&mut ctx), adapted, "setting it again gives the same logits");
    ctx.set_loras(&[]).unwrap();
    assert_eq!(logits(&mut ctx), base, "an empty list must restore the logits exactly");
}

#[test]
fn a_known_adapter_on_the_output_changes_the_logits_as_computed_by_hand() {
    let spec = spec();
    let model = load(&spec);
    let h = hidden(&model);
    let (rank, alpha, scale) = (2u32, 4.0f32, 2.0f32);
    let pair = known_pair(&spec, rank, 0.3);
    let path = lora_file("known.gguf", &LoraSpec::given(spec.clone(), rank, alpha, vec![pair.clone()]));
    let known = LoraAdapter::load(&model, &path).unwrap();
    assert_eq!(known.alpha(), alpha);
    assert_eq!(known.meta("adapter.type").as_deref(), Some("lora"));
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);
    ctx.set_loras(&[(&known, scale)]).unwrap();
    let got = logits(&mut ctx);
    // llama_adapter_lora_weight::get_scale: scale * alpha / rank.
    let factor = f64::from(scale) * f64::from(alpha) / f64::from(rank);
    assert_close(&got, &base, &delta(&pair, rank as usize, &h, factor));
}

#[test]
fn two_adapters_add_up_with_their_scales() {
    let spec = spec();
    let model = load(&spec);
    let h = hidden(&model);
    let x = known_pair(&spec, 2, 0.3);
    let y = known_pair(&spec, 3, 1.7);
    // Alpha 0: llama.cpp applies the scale as it is (no alpha / rank).
    let ax = LoraAdapter::load(&model, lora_file("x.gguf", &LoraSpec::given(spec.clone(), 2, 4.0, vec![x.clone()])))
        .unwrap();
    let ay = LoraAdapter::load(&model, lora_file("y.gguf", &LoraSpec::given(spec.clone(), 3, 0.0, vec![y.clone()])))
        .unwrap();
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);

    ctx.set_loras(&[(&ax, 0.5), (&ay, -1.5)]).unwrap();
    let both = logits(&mut ctx);
    let expected: Vec<f64> =
        delta(&x, 2, &h, 0.5 * 4.0 / 2.0).iter().zip(delta(&y, 3, &h, -1.5)).map(|(a, b)| a + b).collect();
    assert_close(&both, &base, &expected);

    // Removing one leaves exactly the other.
    ctx.set_loras(&[(&ay, -1.5)]).unwrap();
    let only_y = logits(&mut ctx);
    assert_close(&only_y, &base, &delta(&y, 3, &h, -1.5));
    let mut fresh = Context::new(&model, &ctx_options()).unwrap();
    fresh.set_loras(&[(&ay, -1.5)]).unwrap();
    assert_eq!(logits(&mut fresh), only_y, "removing x gives what y alone gives");
}

fn adapter_error(r: llama_runner::Result<LoraAdapter<'_>>) -> AdapterError {
    match r {
        Err(Error::Adapter(e)) => e,
        Err(e) => panic!("expected an adapter error, got {e}"),
        Ok(a) => panic!("expected an adapter error, loaded {a:?}"),
    }
}

#[test]
fn mismatched_adapters_are_refused_naming_the_mismatch() {
    let spec = spec();
    let model = load(&spec);

    let moe = LoraSpec::zeros(ModelSpec::tiny_moe(), 2, &["blk.0.attn_q.weight"]);
    match adapter_error(LoraAdapter::load(&model, lora_file("moe.gguf", &moe))) {
        AdapterError::Architecture { adapter, model, .. } => {
            assert_eq!((adapter.as_str(), model.as_str()), ("qwen3moe", "llama"))
        }
        e => panic!("{e}"),
    }

    let wide = ModelSpec { n_embd: 256, ..spec.clone() };
    let e = adapter_error(LoraAdapter::load(
        &model,
        lora_file("wide.gguf", &LoraSpec::zeros(wide, 2, &["blk.0.attn_q.weight"])),
    ));
    assert!(matches!(&e, AdapterError::Tensor { tensor, .. } if tensor == "blk.0.attn_q.weight.lora_a"), "{e}");
    assert!(e.to_string().contains("[128, 128, 1, 1]"), "names the model's shape: {e}");

    let deep = ModelSpec { n_layer: 3, ..spec.clone() };
    let e = adapter_error(LoraAdapter::load(
        &model,
        lora_file("deep.gguf", &LoraSpec::zeros(deep, 2, &["blk.2.attn_q.weight"])),
    ));
    assert!(e.to_string().contains("the model has no tensor `blk.2.attn_q.weight`"), "{e}");

    // The model file itself (no general.type), a control vector, a missing file, not GGUF.
    let e = adapter_error(LoraAdapter::load(&model, model.path()));
    assert!(matches!(&e, AdapterError::NotLora { key: "general.type", .. }), "{e}");
    let cvec = cvec_file("as-lora.gguf", &ControlVectorSpec::zeros(&spec, 1..=1));
    assert!(matches!(adapter_error(LoraAdapter::load(&model, &cvec)), AdapterError::NotLora { .. }));
    let missing = file("does-not-exist.gguf");
    assert!(matches!(adapter_error(LoraAdapter::load(&model, &missing)), AdapterError::NotFound { .. }));
    let text = file("text.gguf");
    std::fs::write(&text, "not a gguf file at all").unwrap();
    assert!(matches!(adapter_error(LoraAdapter::load(&model, &text)), AdapterError::Malformed { .. }));
}

/// The bytes of a valid adapter with `edit` applied.
fn patched(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let spec = LoraSpec::zeros(spec(), 2, &["blk.0.attn_q.weight"]);
    let mut bytes = tiny_gguf::lora_bytes(&spec).unwrap();
    edit(&mut bytes);
    let path = file(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).expect("needle in the file")
}

#[test]
fn files_llama_cpp_would_abort_on_are_refused_first() {
    let model = load(&spec());
    // gguf_get_val_f32 asserts that adapter.lora.alpha is an f32: store it as a u32.
    let path = patched("alpha-u32.gguf", |b| {
        let at = find(b, b"adapter.lora.alpha") + "adapter.lora.alpha".len();
        b[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    });
    let e = adapter_error(LoraAdapter::load(&model, &path));
    assert!(matches!(&e, AdapterError::Key { key, .. } if key == "adapter.lora.alpha"), "{e}");
    // gguf_init_from_file divides by every dimension: make ne[1] of lora_a 0.
    let path = patched("zero-dim.gguf", |b| {
        let at = find(b, b"blk.0.attn_q.weight.lora_a") + "blk.0.attn_q.weight.lora_a".len() + 4 + 8;
        b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    });
    let e = adapter_error(LoraAdapter::load(&model, &path));
    assert!(e.to_string().contains("dimension 1 is 0"), "{e}");
    // An I32 lora_b, which the CPU cannot multiply.
    let path = patched("i32.gguf", |b| {
        let at = find(b, b"blk.0.attn_q.weight.lora_b") + "blk.0.attn_q.weight.lora_b".len() + 4 + 16;
        b[at..at + 4].copy_from_slice(&26u32.to_le_bytes());
    });
    let e = adapter_error(LoraAdapter::load(&model, &path));
    assert!(e.to_string().contains("type i32 is not one of"), "{e}");
}

#[test]
fn set_loras_refuses_foreign_duplicate_and_non_finite() {
    let spec = spec();
    let (model, other) = (load(&spec), load(&spec));
    let path = lora_file("set.gguf", &LoraSpec::random(spec.clone(), 2, 3, &["output.weight"]));
    let mine = LoraAdapter::load(&model, &path).unwrap();
    let foreign = LoraAdapter::load(&other, &path).unwrap();
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);
    let err = |r: llama_runner::Result<()>| match r {
        Err(Error::Adapter(e)) => e,
        other => panic!("expected an adapter error, got {other:?}"),
    };
    assert!(matches!(err(ctx.set_loras(&[(&foreign, 1.0)])), AdapterError::OtherModel { .. }));
    assert!(matches!(err(ctx.set_loras(&[(&mine, 1.0), (&mine, 0.5)])), AdapterError::Duplicate { .. }));
    assert!(matches!(err(ctx.set_loras(&[(&mine, f32::NAN)])), AdapterError::Scale { .. }));
    assert_eq!(logits(&mut ctx), base, "a refused call changes nothing");
}

#[test]
fn control_vectors_of_zeros_change_nothing_and_others_do() {
    let spec = spec();
    let model = load(&spec);
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);

    let zeros = ControlVector::load(cvec_file("cv-zero.gguf", &ControlVectorSpec::zeros(&spec, 1..=1))).unwrap();
    ctx.set_control_vector(&zeros, None).unwrap();
    assert_eq!(logits(&mut ctx), base, "a zero control vector must leave every logit bit-equal");

    let path = cvec_file("cv-random.gguf", &ControlVectorSpec::random(&spec, 1..=1, 5, 0.5));
    let random = ControlVector::load(&path).unwrap();
    ctx.set_control_vector(&random, Some(1..=1)).unwrap();
    let steered = logits(&mut ctx);
    assert!(max_abs_diff(&steered, &base) > 1e-3, "a nonzero control vector must change the logits");
    // Block 2 does not exist in a 2-layer model and block 0 never gets a direction: layer
    // range 2..=2 applies nothing.
    ctx.set_control_vector(&random, Some(2..=2)).unwrap();
    assert_eq!(logits(&mut ctx), base, "a range without directions changes nothing");
    ctx.set_control_vector(&random, None).unwrap();
    assert_eq!(logits(&mut ctx), steered, "the default range is every layer");
    ctx.clear_control_vector();
    assert_eq!(logits(&mut ctx), base, "clearing restores the logits exactly");

    // Strengths scale and files add up, as common_control_vector_load does: v - v is zero.
    let cancelled = ControlVector::load_scaled(&[(&path, 1.0), (&path, -1.0)]).unwrap();
    assert!(cancelled.direction(1).unwrap().iter().all(|&x| x == 0.0));
    ctx.set_control_vector(&cancelled, None).unwrap();
    assert_eq!(logits(&mut ctx), base);
    let mixed = ControlVector::load_scaled(&[(&path, 0.5), (&path, 2.0)]).unwrap();
    for (m, r) in mixed.direction(1).unwrap().iter().zip(random.direction(1).unwrap()) {
        assert_eq!(*m, r * 0.5 + r * 2.0);
    }
}

#[test]
fn bad_control_vectors_and_layer_ranges_are_refused() {
    let spec = spec();
    let model = load(&spec);
    let mut ctx = Context::new(&model, &ctx_options()).unwrap();
    let base = logits(&mut ctx);
    let v = ControlVector::load(cvec_file("cv-range.gguf", &ControlVectorSpec::random(&spec, 1..=2, 5, 0.5))).unwrap();
    // 2..=1 is the reversed range a caller may pass: refused as empty.
    #[allow(clippy::reversed_empty_ranges)]
    let ranges = [0..=1, 2..=1, 1..=3];
    for range in ranges {
        match ctx.set_control_vector(&v, Some(range.clone())) {
            Err(Error::Adapter(AdapterError::LayerRange { start, end, n_layer: 2 })) => {
                assert_eq!((start, end), (*range.start(), *range.end()))
            }
            other => panic!("{range:?}: {other:?}"),
        }
    }
    let wide = ModelSpec { n_embd: 256, ..spec.clone() };
    let wide = ControlVector::load(cvec_file("cv-wide.gguf", &ControlVectorSpec::zeros(&wide, 1..=1))).unwrap();
    assert!(matches!(
        ctx.set_control_vector(&wide, None),
        Err(Error::Adapter(AdapterError::Width { n_embd: 256, expected: 128, .. }))
    ));
    assert_eq!(logits(&mut ctx), base, "refused calls change nothing");

    let narrow = ModelSpec { n_embd: 64, ..spec.clone() };
    let a = cvec_file("cv-a.gguf", &ControlVectorSpec::zeros(&spec, 1..=1));
    let b = cvec_file("cv-b.gguf", &ControlVectorSpec::zeros(&narrow, 1..=1));
    assert!(matches!(
        ControlVector::load_scaled(&[(&a, 1.0), (&b, 1.0)]),
        Err(Error::Adapter(AdapterError::Width { .. }))
    ));
    assert!(matches!(
        ControlVector::load_scaled(&[(&a, f32::INFINITY)]),
        Err(Error::Adapter(AdapterError::Scale { .. }))
    ));
    assert!(matches!(ControlVector::load_scaled::<&Path>(&[]), Err(Error::Adapter(AdapterError::NoControlVectors))));
    let lora = lora_file("lora-as-cv.gguf", &LoraSpec::zeros(spec.clone(), 2, &["output.weight"]));
    assert!(matches!(ControlVector::load(&lora), Err(Error::Adapter(AdapterError::Tensor { .. }))));
    assert!(matches!(ControlVector::load(file("nope.gguf")), Err(Error::Adapter(AdapterError::NotFound { .. }))));
}
