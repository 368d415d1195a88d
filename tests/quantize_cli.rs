//! `llama-runner quantize` end to end on a generated model: the file it writes is the
//! library's, with the types asked for, and it loads; bad input exits with status 2, a
//! message, and nothing at the output path.

use std::path::{Path, PathBuf};
use std::process::Command;

use llama_runner::quantize::{QuantType, QuantizeOptions};
use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, TensorType};

fn model() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantize-cli-models");
    tiny_gguf::cached(&tiny_gguf::ModelSpec::preset("tiny-llama").expect("preset"), &dir).expect("generated model")
}

/// A fresh directory for one test's outputs.
fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantize-cli").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quantize(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llama-runner")).arg("quantize").args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn type_of(path: &Path, tensor: &str) -> String {
    let header = tiny_gguf::read_header(path).unwrap();
    let t = header.tensor(tensor).unwrap_or_else(|| panic!("no tensor {tensor}"));
    TensorType::from_id(t.ggml_type).unwrap().name().to_string()
}

fn first_greedy_token(path: &Path) -> i32 {
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    let mut ctx =
        Context::new(&model, &ContextOptions { n_ctx: 256, n_threads: Some(2), ..Default::default() }).unwrap();
    let prompt = model.tokenize("The quick brown fox jumps over the lazy dog", true).unwrap();
    ctx.generate_greedy(&prompt, 1).unwrap().tokens[0]
}

#[test]
fn writes_the_library_quantization_and_a_summary() {
    let d = dir("good");
    let m = model();
    let f16_first = first_greedy_token(&m);
    for (ty, want) in [("Q8_0", "q8_0"), ("q4_0", "q4_0")] {
        let out = d.join(format!("{ty}.gguf"));
        let o = quantize(&[s(&m), s(&out), ty, "-t", "2"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let target: QuantType = ty.parse().unwrap();
        assert!(stdout.contains(&format!("as {target} in")), "{stdout}");
        assert!(stdout.contains("tensors:     21"), "{stdout}");
        assert!(stdout.contains("file size:"), "{stdout}");
        assert_eq!(type_of(&out, "blk.0.ffn_up.weight"), want);
        // The same bytes as the library writes with the same options.
        let lib = d.join(format!("{ty}-lib.gguf"));
        let options = QuantizeOptions { n_threads: Some(2), ..QuantizeOptions::new(target) };
        llama_runner::quantize(Backend::get().unwrap(), &m, &lib, &options, |_| ()).unwrap();
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&lib).unwrap(), "{ty}: the files differ");
        // It loads; its first greedy token is the F16 model's (seen for both types: the
        // logits' cosine to F16 is above 0.97 at every position).
        assert_eq!(first_greedy_token(&out), f16_first, "{ty}");
    }
    // The K-quant mixture on rows of 128 falls back, and the summary lists it.
    let out = d.join("q4_k_m.gguf");
    let o = quantize(&[s(&m), s(&out), "Q4_K_M"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("fallbacks:   13") && stdout.contains("blk.0.attn_q.weight: q4_K -> q5_0"), "{stdout}");
    // Flags: llama-quantize's spelling.
    let out = d.join("flags.gguf");
    let o = quantize(&[
        "--leave-output-tensor",
        "--token-embedding-type",
        "q8_0",
        "--tensor-type",
        "attn_v=q8_0",
        "--tensor-type",
        "ffn_down=f16",
        s(&m),
        s(&out),
        "Q4_0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(type_of(&out, "output.weight"), "f16");
    assert_eq!(type_of(&out, "token_embd.weight"), "q8_0");
    assert_eq!(type_of(&out, "blk.1.attn_v.weight"), "q8_0");
    assert_eq!(type_of(&out, "blk.1.ffn_down.weight"), "f16");
    assert_eq!(type_of(&out, "blk.1.ffn_up.weight"), "q4_0");
    let out2 = d.join("output-type.gguf");
    let o = quantize(&[s(&m), s(&out2), "Q4_0", "--output-tensor-type", "q5_1", "--pure"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(type_of(&out2, "output.weight"), "q5_1");
    first_greedy_token(&out2);
    // Requantizing, allowed.
    let q8 = d.join("Q8_0.gguf");
    let out3 = d.join("requantized.gguf");
    let o = quantize(&["--allow-requantize", s(&q8), s(&out3), "Q4_0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(type_of(&out3, "blk.0.attn_q.weight"), "q4_0");
}

#[test]
fn bad_input_is_an_error_that_leaves_nothing() {
    let d = dir("bad");
    let m = model();
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a model\n").unwrap();
    let q8 = d.join("q8.gguf");
    assert!(quantize(&[s(&m), s(&q8), "Q8_0"]).status.success());
    let out = d.join("out.gguf");
    let missing = d.join("missing.gguf");
    let in_missing_dir = d.join("no/such/out.gguf");
    for (args, needle) in [
        (vec![s(&text), s(&out), "Q8_0"], "not a GGUF model file"),
        (vec![s(&missing), s(&out), "Q8_0"], "does not exist"),
        (vec![s(&m), s(&out), "IQ2_XXS"], "IQ2_XXS needs an importance matrix"),
        (vec![s(&m), s(&out), "Q8_0", "--output-tensor-type", "iq1_s"], "iq1_s needs an importance matrix"),
        (vec![s(&q8), s(&out), "Q4_0"], "--allow-requantize"),
        (vec![s(&m), s(&m), "Q8_0"], "is the input file"),
        (vec![s(&m), s(&in_missing_dir), "Q8_0"], "does not exist"),
        (vec![s(&m), s(&out), "Q4_K_XL"], "unknown quantization type `Q4_K_XL`"),
        (vec![s(&m), s(&out), "Q8_0", "--tensor-type", "attn_q"], "not PATTERN=TYPE"),
        (vec![s(&m), s(&out), "Q8_0", "--tensor-type", "attn_(q=q8_0"], "attn_(q"),
        (vec![s(&m), s(&out), "Q8_0", "--output-tensor-type", "q4_K"], "blocks of 256 do not divide"),
        (vec![s(&m), s(&out), "Q8_0", "-t", "0"], "thread count 0"),
        (vec![s(&m), s(&out), "IQ2_XXS", "--imatrix", s(&text)], "importance matrix"),
        (vec![s(&m), s(&out), "IQ2_XXS", "--imatrix", s(&missing)], "cannot read"),
        (vec![s(&m), s(&out), "Q8_0", "--include-weights", "attn"], "--imatrix"),
    ] {
        let o = quantize(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "notes.txt" && n != "q8.gguf")
            .collect();
        left.sort();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    assert!(first_greedy_token(&m) >= 0, "the input is intact");
}
