//! Quantization of generated models: the output loads, has the types asked for, and its
//! logits stay close to the F16 model's; every refusal is a clear error that leaves nothing at
//! the output path; and the checks that prevent an abort are shown to be needed, by calling
//! llama.cpp without them in a child process.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use llama_runner::quantize::{
    Fallback, QuantType, QuantizeError, QuantizeOptions, QuantizeProgress, Quantized, quantize,
};
use llama_runner::{Backend, Batch, Context, ContextOptions, Error, Model, ModelOptions};
use tiny_gguf::ModelSpec;

/// A fresh directory for one test's outputs.
fn dir(test: &str) -> PathBuf {
    let d = common::scratch().join("quantize").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f16_model() -> PathBuf {
    common::model(&ModelSpec::tiny_llama())
}

/// A model whose rows (n_embd 256, n_ff 512) fit the K-quants' blocks of 256.
fn wide_model() -> PathBuf {
    common::model(&ModelSpec { n_embd: 256, n_ff: 512, n_head: 8, n_head_kv: 4, seed: 7, ..ModelSpec::tiny_llama() })
}

fn run(input: &Path, output: &Path, options: &QuantizeOptions) -> llama_runner::Result<Quantized> {
    quantize(Backend::get().unwrap(), input, output, options, |_| ())
}

/// The type of each tensor of a GGUF file, read from its header.
fn types(path: &Path) -> Vec<(String, String)> {
    let header = tiny_gguf::read_header(path).unwrap();
    header
        .tensors
        .iter()
        .map(|t| (t.name.clone(), llama_runner::TensorType::from_id(t.ggml_type).unwrap().name().to_string()))
        .collect()
}

fn type_of(path: &Path, tensor: &str) -> String {
    types(path).into_iter().find(|(n, _)| n == tensor).unwrap_or_else(|| panic!("no tensor {tensor}")).1
}

/// The logits of every position of a fixed prompt (82 tokens), decoded in one batch.
fn logits(path: &Path) -> Vec<Vec<f32>> {
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    let o = ContextOptions { n_ctx: 256, n_threads: Some(2), ..Default::default() };
    let mut ctx = Context::new(&model, &o).unwrap();
    let text = "The quick brown fox jumps over the lazy dog and then some more words follow here";
    let prompt = model.tokenize(text, true).unwrap();
    let mut batch = Batch::new(prompt.len(), 1).unwrap();
    for (i, &t) in prompt.iter().enumerate() {
        batch.add(t, i as i32, &[0], true).unwrap();
    }
    let out = ctx.decode_batch(&batch).unwrap();
    (0..prompt.len()).map(|i| out.logits(i).unwrap().to_vec()).collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |m, i| if v[i] > v[m] { i } else { m })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / norm(a) / norm(b)
}

/// (positions whose most likely token agrees, positions, smallest cosine of the logits).
fn closeness(base: &[Vec<f32>], other: &Path) -> (usize, usize, f32) {
    let q = logits(other);
    let agree = base.iter().zip(&q).filter(|(a, b)| argmax(a) == argmax(b)).count();
    let min_cos = base.iter().zip(&q).map(|(a, b)| cosine(a, b)).fold(1.0, f32::min);
    (agree, base.len(), min_cos)
}

/// Nothing but `keep` in `dir`: no output, no temporary file.
fn assert_nothing_left(dir: &Path, keep: &[&Path]) {
    let left: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| !keep.contains(&p.as_path())).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn quantize_error(r: llama_runner::Result<Quantized>) -> QuantizeError {
    match r {
        Err(Error::Quantize(e)) => e,
        other => panic!("expected a quantize error, got {other:?}"),
    }
}

#[test]
fn q8_0_and_q4_0_load_with_the_types_asked_and_close_logits() {
    let d = dir("q8_q4");
    let src = f16_model();
    let base = logits(&src);
    for (target, want, min_agree, min_cos) in
        [(QuantType::Q8_0, "q8_0", 78, 0.999), (QuantType::Q4_0, "q4_0", 60, 0.95)]
    {
        let out = d.join(format!("{target}.gguf"));
        let mut seen: Vec<QuantizeProgress> = Vec::new();
        let q = quantize(Backend::get().unwrap(), &src, &out, &QuantizeOptions::new(target), |p| seen.push(p.clone()))
            .unwrap();
        // Every 2-D weight has the target's type, except output.weight for Q4_0: llama.cpp's
        // mixture gives it Q6_K, whose blocks of 256 do not divide its 128 columns, so it falls
        // back to Q8_0. Norms stay F32.
        for (name, ty) in types(&out) {
            let expected = if name.ends_with("norm.weight") {
                "f32"
            } else if name == "output.weight" && target == QuantType::Q4_0 {
                "q8_0"
            } else {
                want
            };
            assert_eq!(ty, expected, "{target}: {name}");
        }
        if target == QuantType::Q4_0 {
            let f = Fallback { tensor: "output.weight".into(), wanted: "q6_K".into(), used: "q8_0".into() };
            assert_eq!(q.fallbacks, [f]);
        } else {
            assert!(q.fallbacks.is_empty(), "{:?}", q.fallbacks);
        }
        // What was done, as the headers and the files say.
        assert_eq!(q.input_bytes, std::fs::metadata(&src).unwrap().len());
        assert_eq!(q.output_bytes, std::fs::metadata(&out).unwrap().len());
        assert!(q.output_bytes < q.input_bytes * 6 / 10, "{target}: {} of {} bytes", q.output_bytes, q.input_bytes);
        assert!(q.tensor_bytes_after() < q.tensor_bytes_before());
        assert_eq!(q.tensors.len(), 21);
        assert_eq!(q.tensor("blk.0.attn_q.weight").unwrap().to, want);
        assert_eq!(q.tensor("blk.0.attn_q.weight").unwrap().from, "f16");
        // One progress call per tensor, in order, ending at the whole input.
        assert_eq!(seen.iter().map(|p| p.done).collect::<Vec<_>>(), (1..=21).collect::<Vec<_>>());
        let last = seen.last().unwrap();
        assert_eq!((last.total, last.bytes_done), (21, last.bytes_total));
        assert_eq!(last.bytes_total, q.tensor_bytes_before());
        // It loads, says what it is, and predicts nearly what the F16 model predicts
        // (measured: Q8_0 81 of 82 positions and cosine 0.9998, Q4_0 66 and 0.975).
        let model = Model::load(Backend::get().unwrap(), &out, &ModelOptions::default()).unwrap();
        assert_eq!(model.info().file_type, target.name());
        drop(model);
        let (agree, n, cos) = closeness(&base, &out);
        assert!(agree >= min_agree && cos >= min_cos, "{target}: {agree}/{n} positions agree, min cosine {cos}");
        assert_nothing_left(&d, &[&d.join("Q8_0.gguf"), &d.join("Q4_0.gguf")]);
    }
}

#[test]
fn k_quants_fall_back_where_their_blocks_do_not_fit() {
    let d = dir("k_quant");
    // n_embd 128: most rows are 128 values, which Q4_K's blocks of 256 do not divide. llama.cpp
    // falls back (Q4_K to Q5_0, Q6_K to Q8_0) and says so; only ffn_down (rows of n_ff = 256)
    // keeps a K-quant.
    let src = f16_model();
    let out = d.join("narrow.gguf");
    let q = run(&src, &out, &QuantizeOptions::new(QuantType::Q4_K_M)).unwrap();
    for (name, ty) in types(&out) {
        if name.ends_with("norm.weight") {
            assert_eq!(ty, "f32");
        } else if name.contains("ffn_down") {
            assert!(ty == "q4_K" || ty == "q6_K", "{name}: {ty}");
        } else if name == "output.weight" {
            // The mixture itself picks Q8_0 for an output whose rows do not fit (no fallback).
            assert_eq!(ty, "q8_0");
        } else {
            assert!(ty == "q5_0" || ty == "q8_0", "{name}: {ty}");
            assert!(q.fallbacks.iter().any(|f| f.tensor == name), "{name} is not listed as a fallback");
        }
    }
    for f in &q.fallbacks {
        assert!(matches!((f.wanted.as_str(), f.used.as_str()), ("q4_K", "q5_0") | ("q6_K", "q8_0")), "{f:?}");
    }
    assert_eq!(q.fallbacks.len(), 13);
    // Measured: 77 of 82 positions agree, min cosine 0.9945.
    let (agree, n, cos) = closeness(&logits(&src), &out);
    assert!(agree >= 70 && cos >= 0.98, "{agree}/{n} positions agree, min cosine {cos}");

    // n_embd 256: everything fits, no fallback, and the mixture's types are K-quants.
    let src = wide_model();
    let out = d.join("wide.gguf");
    let q = run(&src, &out, &QuantizeOptions::new(QuantType::Q4_K_M)).unwrap();
    assert!(q.fallbacks.is_empty(), "{:?}", q.fallbacks);
    for (name, ty) in types(&out) {
        let expected: &[&str] = if name.ends_with("norm.weight") { &["f32"] } else { &["q4_K", "q6_K"] };
        assert!(expected.contains(&ty.as_str()), "{name}: {ty}");
    }
    assert_eq!(type_of(&out, "blk.0.attn_q.weight"), "q4_K");
    assert_eq!(type_of(&out, "output.weight"), "q6_K");
    // Measured: 58 of 82 positions agree, min cosine 0.986.
    let (agree, n, cos) = closeness(&logits(&src), &out);
    assert!(agree >= 45 && cos >= 0.97, "{agree}/{n} positions agree, min cosine {cos}");
}

#[test]
fn tensor_type_options_are_applied() {
    let d = dir("tensor_types");
    let src = f16_model();
    // --leave-output-tensor keeps output.weight as it was.
    let out = d.join("leave.gguf");
    run(&src, &out, &QuantizeOptions { leave_output_tensor: true, ..QuantizeOptions::new(QuantType::Q4_0) }).unwrap();
    assert_eq!(type_of(&out, "output.weight"), "f16");
    assert_eq!(type_of(&out, "token_embd.weight"), "q4_0");
    assert_eq!(type_of(&out, "blk.1.ffn_up.weight"), "q4_0");
    Model::load(Backend::get().unwrap(), &out, &ModelOptions::default()).unwrap();

    // Explicit output and token-embedding types, and per-tensor overrides (first match wins).
    let out = d.join("explicit.gguf");
    let options = QuantizeOptions {
        output_tensor_type: Some("Q8_0".parse().unwrap()),
        token_embedding_type: Some("f16".parse().unwrap()),
        tensor_types: vec!["ATTN_V=q8_0".parse().unwrap(), "blk\\.1\\.=q5_1".parse().unwrap()],
        ..QuantizeOptions::new(QuantType::Q4_0)
    };
    run(&src, &out, &options).unwrap();
    assert_eq!(type_of(&out, "output.weight"), "q8_0");
    assert_eq!(type_of(&out, "token_embd.weight"), "f16");
    assert_eq!(type_of(&out, "blk.0.attn_v.weight"), "q8_0");
    assert_eq!(type_of(&out, "blk.1.attn_v.weight"), "q8_0", "the first matching override wins");
    assert_eq!(type_of(&out, "blk.1.attn_q.weight"), "q5_1");
    assert_eq!(type_of(&out, "blk.0.attn_q.weight"), "q4_0");
    Model::load(Backend::get().unwrap(), &out, &ModelOptions::default()).unwrap();

    // --pure: the default type everywhere it fits (Q6_K's output type is not chosen).
    let src = wide_model();
    let out = d.join("pure.gguf");
    run(&src, &out, &QuantizeOptions { pure: true, ..QuantizeOptions::new(QuantType::Q4_K_M) }).unwrap();
    for (name, ty) in types(&out) {
        assert_eq!(ty, if name.ends_with("norm.weight") { "f32" } else { "q4_K" }, "{name}");
    }
}

#[test]
fn requantizing_needs_allow_requantize() {
    let d = dir("requantize");
    let q8 = d.join("q8.gguf");
    run(&f16_model(), &q8, &QuantizeOptions::new(QuantType::Q8_0)).unwrap();
    let out = d.join("q4.gguf");
    let e = quantize_error(run(&q8, &out, &QuantizeOptions::new(QuantType::Q4_0)));
    assert!(matches!(&e, QuantizeError::Requantize { type_name, .. } if type_name == "q8_0"), "{e:?}");
    assert!(e.to_string().contains("--allow-requantize"), "{e}");
    assert_nothing_left(&d, &[&q8]);
    // Allowed, it works; COPY converts nothing, so it needs no permission.
    run(&q8, &out, &QuantizeOptions { allow_requantize: true, ..QuantizeOptions::new(QuantType::Q4_0) }).unwrap();
    assert_eq!(type_of(&out, "blk.0.attn_q.weight"), "q4_0");
    let copy = d.join("copy.gguf");
    run(&q8, &copy, &QuantizeOptions::new(QuantType::COPY)).unwrap();
    assert_eq!(types(&copy), types(&q8));
    Model::load(Backend::get().unwrap(), &copy, &ModelOptions::default()).unwrap();
}

#[test]
fn bad_inputs_and_outputs_are_clear_errors_that_leave_nothing() {
    let d = dir("errors");
    let src = f16_model();
    let out = d.join("out.gguf");
    let q8 = QuantizeOptions::new(QuantType::Q8_0);

    // Not a model.
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a model\n").unwrap();
    let e = run(&text, &out, &q8).unwrap_err();
    assert!(matches!(e, Error::NotGguf { .. }), "{e:?}");
    let truncated = d.join("truncated.gguf");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = run(&truncated, &out, &q8).unwrap_err();
    assert!(matches!(e, Error::InvalidGguf { .. }), "{e:?}");
    // A missing file.
    let e = run(&d.join("missing.gguf"), &out, &q8).unwrap_err();
    assert!(matches!(e, Error::ModelNotFound { .. }), "{e:?}");
    // A type that needs an importance matrix, named.
    for (target, pure) in
        [(QuantType::IQ2_XXS, false), (QuantType::IQ1_S, false), (QuantType::Q2_K_S, true), (QuantType::IQ3_XS, false)]
    {
        let e = quantize_error(run(&src, &out, &QuantizeOptions { pure, ..QuantizeOptions::new(target) }));
        assert!(e.to_string().contains(&format!("{target} needs an importance matrix")), "{e}");
    }
    // The output is the input, or a link to it.
    let e = quantize_error(run(&src, &src, &q8));
    assert!(matches!(e, QuantizeError::SameFile { .. }), "{e:?}");
    let link = d.join("link.gguf");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    let e = quantize_error(run(&src, &link, &q8));
    assert!(matches!(e, QuantizeError::SameFile { .. }), "{e:?}");
    // A missing directory; a directory as the output.
    let e = quantize_error(run(&src, &d.join("no/such/dir/out.gguf"), &q8));
    assert!(matches!(e, QuantizeError::OutputDir { .. }), "{e}");
    let e = quantize_error(run(&src, &d, &q8));
    assert!(matches!(e, QuantizeError::OutputIsDir { .. }), "{e}");
    // Explicit types that would make llama.cpp abort (see the child-process tests).
    let explicit = |t: &str| QuantizeOptions { output_tensor_type: Some(t.parse().unwrap()), ..q8.clone() };
    let e = quantize_error(run(&src, &out, &explicit("q4_K")));
    assert!(
        matches!(&e, QuantizeError::BlockSize { tensor, ncols: 128, block: 256, .. } if tensor == "output.weight"),
        "{e}"
    );
    let e = quantize_error(run(&src, &out, &explicit("iq2_xxs")));
    assert!(e.to_string().contains("iq2_xxs needs an importance matrix"), "{e}");
    let e = quantize_error(run(&src, &out, &explicit("q8_K")));
    assert!(matches!(e, QuantizeError::CannotQuantizeTo { .. }), "{e}");
    let bad_regex = QuantizeOptions { tensor_types: vec!["ffn_(up=q8_0".parse().unwrap()], ..q8.clone() };
    let e = quantize_error(run(&src, &out, &bad_regex));
    assert!(matches!(e, QuantizeError::Pattern { .. }), "{e}");
    assert_nothing_left(&d, &[&text, &truncated, &link]);

    // llama.cpp's own refusal (a caught exception): Q8_0 for rows of 40 values, which no
    // fallback fits. A clear error, and nothing left.
    let odd =
        common::model(&ModelSpec { n_embd: 40, n_ff: 96, n_head: 4, n_head_kv: 2, seed: 7, ..ModelSpec::tiny_llama() });
    let e = quantize_error(run(&odd, &out, &q8));
    let text_of = e.to_string();
    assert!(matches!(e, QuantizeError::Failed { .. }), "{e:?}");
    assert!(text_of.contains("no tensor type fallback is defined for type q8_0"), "{text_of}");
    assert!(text_of.contains("output.weight"), "{text_of}");
    assert_nothing_left(&d, &[&d.join("notes.txt"), &truncated, &link]);
    // An existing output is untouched by a failed run and replaced by a good one.
    std::fs::write(&out, "old").unwrap();
    quantize_error(run(&odd, &out, &q8));
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    run(&src, &out, &q8).unwrap();
    assert_eq!(type_of(&out, "output.weight"), "q8_0");
}

/// Calls llama.cpp's quantization directly, without this crate's checks, in a child process:
/// the output type given by `LLAMA_QUANTIZE_CHILD`. Does nothing in a normal run.
#[test]
fn child_scenario() {
    let Ok(output_type) = std::env::var("LLAMA_QUANTIZE_CHILD") else { return };
    let ty: llama_runner::TensorType = output_type.parse().unwrap();
    Backend::get().unwrap();
    let input = std::ffi::CString::new(f16_model().into_os_string().into_encoded_bytes()).unwrap();
    let out = common::scratch().join(format!("quantize-child-{output_type}.gguf"));
    let output = std::ffi::CString::new(out.into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: deliberately unchecked parameters, in a process that is expected to die.
    unsafe {
        let mut params = llama_sys::llama_model_quantize_default_params();
        params.ftype = llama_sys::LLAMA_FTYPE_MOSTLY_Q8_0;
        params.nthread = 1;
        params.output_tensor_type = ty.id();
        let status = llama_sys::llama_model_quantize(input.as_ptr(), output.as_ptr(), &params);
        eprintln!("child: survived, status {status}");
    }
}

fn run_child(output_type: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
        .env("LLAMA_QUANTIZE_CHILD", output_type)
        .env("GGML_NO_BACKTRACE", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(common::scratch().join(format!("quantize-child-{output_type}.gguf")));
    (out.status.signal(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const SIGABRT: i32 = 6;

#[test]
fn explicit_types_the_checks_refuse_abort_llama_cpp() {
    for (ty, assert) in [
        ("q4_K", "tensor row size not divisible by block size of new type"),
        ("iq2_xxs", "GGML_ASSERT(imatrix != NULL) failed"),
        ("q8_K", "GGML_ASSERT(result == nrows * row_size) failed"),
    ] {
        let (signal, stderr) = run_child(ty);
        assert_eq!(signal, Some(SIGABRT), "{ty}: {stderr}");
        assert!(stderr.contains(assert), "{ty}: {stderr}");
        assert!(!stderr.contains("child: survived"), "{ty}: {stderr}");
    }
}

#[test]
fn a_panicking_progress_callback_leaves_nothing() {
    let d = dir("panic");
    let out = d.join("out.gguf");
    let options = QuantizeOptions::new(QuantType::Q8_0);
    let r = std::panic::catch_unwind(|| {
        quantize(Backend::get().unwrap(), f16_model(), &out, &options, |p| assert!(p.done < 3, "the callback panics"))
    });
    assert!(r.is_err(), "the panic reaches the caller");
    assert_nothing_left(&d, &[]);
    // Later runs are not affected.
    run(&f16_model(), &out, &options).unwrap();
    assert_eq!(type_of(&out, "output.weight"), "q8_0");
}
