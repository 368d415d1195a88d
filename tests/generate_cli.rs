//! `llama-runner generate` end to end on a generated model: sampling flags, `--json`, stop
//! strings, Ctrl-C, and bad input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llama-runner"))
}

fn preset(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generate-cli-models");
    let spec = tiny_gguf::ModelSpec::preset(name).expect("preset");
    tiny_gguf::cached(&spec, &dir).expect("generated model")
}

fn model() -> PathBuf {
    preset("tiny-llama")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = exe().arg("generate").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn ids(v: &serde_json::Value, key: &str) -> Vec<i32> {
    v[key].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect()
}

#[test]
fn temp_zero_is_the_library_greedy_output_and_json_has_the_timings() {
    let m = model();
    let flags = format!("-m {} -c 256 -t 2 --temp 0", m.display());
    let v = json(&["--flags", &flags, "-p", "hello world", "-n", "20"]);
    let model = Model::load(Backend::get().unwrap(), &m, &ModelOptions::default()).unwrap();
    let mut ctx =
        Context::new(&model, &ContextOptions { n_ctx: 256, n_threads: Some(2), ..Default::default() }).unwrap();
    let prompt = model.tokenize("hello world", true).unwrap();
    let greedy = ctx.generate_greedy(&prompt, 20).unwrap();
    assert_eq!(ids(&v, "prompt_tokens"), prompt);
    assert_eq!(ids(&v, "tokens"), greedy.tokens);
    assert_eq!(v["text"].as_str().unwrap(), model.detokenize(&greedy.tokens).unwrap());
    assert_eq!(v["n_prompt"].as_u64(), Some(prompt.len() as u64));
    assert!(v["gen_tps"].as_f64().unwrap() > 0.0 && v["prompt_tps"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["samplers"].as_array().unwrap().last().and_then(|s| s.as_str()), Some("dist"));
}

#[test]
fn sampling_flags_reach_the_chain_and_seeds_repeat() {
    let m = model();
    let flags =
        format!("-m {} -c 256 --samplers top_k;temperature --top-k 5 --temp 1.5 -s 7 --ignore-eos", m.display());
    let a = json(&["--flags", &flags, "-p", "abc", "-n", "24"]);
    let b = json(&["--flags", &flags, "-p", "abc", "-n", "24"]);
    assert_eq!(a["tokens"], b["tokens"], "the same seed gives the same tokens");
    assert_eq!(a["seed"].as_u64(), Some(7));
    let names: Vec<&str> = a["samplers"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(names.contains(&"top-k") && names.contains(&"temp-ext") && !names.contains(&"top-p"), "{names:?}");
    // --ignore-eos: the whole budget is generated.
    assert_eq!(ids(&a, "tokens").len(), 24);
    assert_eq!(a["stop_reason"].as_str(), Some("max_tokens"));
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let m = model();
    let flags = format!("-m {} -c 256 --temp 0 --ignore-eos", m.display());
    let full = json(&["--flags", &flags, "-p", "hello", "-n", "40"]);
    let text = full["text"].as_str().unwrap().to_string();
    // A stop string taken from the middle of the greedy text (at a char boundary).
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 12 {
        panic!("greedy text too short to pick a stop string: {text:?}");
    }
    let stop: String = chars[8..11].iter().collect();
    let stopped = json(&["--flags", &flags, "-p", "hello", "-n", "40", "--stop", &stop]);
    let got = stopped["text"].as_str().unwrap();
    assert_eq!(stopped["stop_reason"].as_str(), Some("stop_string"), "{stopped}");
    assert_eq!(got, &text[..text.find(&stop).unwrap()]);
}

#[test]
fn ctrl_c_stops_generation_and_prints_what_was_produced() {
    // A model slow enough (4096 tokens of context at a few hundred tokens/s) to be interrupted.
    let m = preset("bench-moe");
    let flags = format!("-m {} -c 4096 -t 2 --ignore-eos", m.display());
    let mut child = exe()
        .args(["generate", "--flags", &flags, "-p", "go", "-n", "-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for some generated text, then interrupt.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    while seen.len() < 64 && t0.elapsed() < Duration::from_secs(60) {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.len() >= 64, "no generated text before the timeout");
    // SAFETY: kill(2) on the pid of a child of this test that has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{status}: {err}");
    assert!(err.contains("[cancelled:"), "{err}");
    assert!(err.contains("t/s"), "{err}");
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let m = model();
    let cases: &[(&[&str], &str)] = &[
        (&["--flags", "-c 256", "-p", "x"], "no model"),
        (&["--flags", "-m nonexistent.gguf", "-p", "x"], "nonexistent.gguf"),
        (&["--flags", &format!("-m {} --temp x", m.display()), "-p", "x"], "--temp"),
        (&["--flags", &format!("-m {} --mirostat 5", m.display()), "-p", "x"], "--mirostat"),
        (&["--flags", &format!("-m {} --samplers top_q", m.display()), "-p", "x"], "top_q"),
        (&["--flags", &format!("-m {}", m.display()), "-p", "x", "--stop", ""], "stop string"),
        (&["--flags", &format!("-m {}", m.display()), "-f", "no-such-prompt.txt"], "no-such-prompt.txt"),
    ];
    for (args, needle) in cases {
        let out = exe().arg("generate").args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error:") && err.contains(needle), "{args:?}: `{err}` does not name `{needle}`");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `--lora`, `--lora-scaled`, `--control-vector-scaled` and the layer range reach the context:
/// a zero adapter and scale 0 change nothing, a random adapter and a strong control vector
/// change the greedy tokens, and a file that is no adapter is an error naming it.
#[test]
fn adapter_flags_apply_to_generation() {
    use tiny_gguf::{ControlVectorSpec, LoraSpec, ModelSpec, write_control_vector, write_lora};
    let m = model();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generate-cli-adapters");
    std::fs::create_dir_all(&dir).unwrap();
    let base = ModelSpec::tiny_llama();
    let targets = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"];
    let zero = dir.join("zero.gguf");
    write_lora(&LoraSpec::zeros(base.clone(), 4, &targets), &zero).unwrap();
    let random = dir.join("random.gguf");
    let mut strong = LoraSpec::random(base.clone(), 4, 9, &targets);
    strong.alpha = 64.0;
    write_lora(&strong, &random).unwrap();
    let cvec = dir.join("cvec.gguf");
    write_control_vector(&ControlVectorSpec::random(&base, 1..=1, 3, 5.0), &cvec).unwrap();

    let run = |extra: &str| {
        let flags = format!("-m {} -c 256 -t 2 --temp 0 --ignore-eos {extra}", m.display());
        ids(&json(&["--flags", &flags, "-p", "hello world", "-n", "16"]), "tokens")
    };
    let plain = run("");
    assert_eq!(run(&format!("--lora {}", zero.display())), plain, "a zero adapter changes nothing");
    assert_eq!(run(&format!("--lora-scaled {}:0", random.display())), plain, "scale 0 changes nothing");
    assert_ne!(run(&format!("--lora {}", random.display())), plain, "the adapter is applied");
    assert_ne!(
        run(&format!("--control-vector-scaled {}:4 --control-vector-layer-range 1 1", cvec.display())),
        plain,
        "the control vector is applied"
    );

    let flags = format!("-m {} -c 256 --lora {}", m.display(), m.display());
    let out = exe().args(["generate", "--flags", &flags, "-p", "x", "-n", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("adapter") && stderr.contains(&*m.to_string_lossy()), "{stderr}");
    let flags =
        format!("-m {} -c 256 --control-vector {} --control-vector-layer-range 1 9", m.display(), cvec.display());
    let out = exe().args(["generate", "--flags", &flags, "-p", "x", "-n", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("layer"), "{stderr}");
}

/// A model's `general.sampling.*` keys choose the chain where the flags say nothing, as in
/// llama.cpp's tools; flags win.
#[test]
fn model_sampling_defaults_fill_what_the_flags_leave() {
    use tiny_gguf::{ExtraValue, ModelSpec};
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generate-cli-models");
    let spec = ModelSpec {
        extra_metadata: vec![
            ("general.sampling.sequence".into(), ExtraValue::String("top_k;temperature".into())),
            ("general.sampling.top_k".into(), ExtraValue::I32(1)),
        ],
        ..ModelSpec::tiny_llama()
    };
    let m = tiny_gguf::cached(&spec, &dir).unwrap();
    let names = |extra: &str| {
        let flags = format!("-m {} -c 256 -s 3 {extra}", m.display());
        let v = json(&["--flags", &flags, "-p", "hi", "-n", "4"]);
        let names: Vec<String> =
            v["samplers"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        (names, ids(&v, "tokens"))
    };
    let (from_model, tokens) = names("");
    assert_eq!(from_model, ["top-k", "temp-ext", "dist"]);
    // top-k 1 from the model: the greedy tokens.
    let (_, greedy) = names("--temp 0");
    assert_eq!(tokens, greedy);
    let (from_flags, _) = names("--samplers min_p");
    assert_eq!(from_flags, ["min-p", "dist"]);
}

/// Speculative decoding from the flags: n-gram drafting and a draft model give the plain
/// greedy tokens with their statistics in `--json`, a sampling chain and stop strings work
/// with it; combinations it cannot run exit 2.
#[test]
fn speculative_flags_give_the_greedy_tokens() {
    let m = model();
    let prompt = "abc abc abc abc abc abc";
    let run = |extra: &str| {
        json(&["--flags", &format!("-m {} -c 256 -t 2 --temp 0 {extra}", m.display()), "-p", prompt, "-n", "24"])
    };
    let plain = run("");
    assert!(plain.get("speculative").is_none());
    for extra in [
        "--spec-type ngram-simple --spec-ngram-simple-size-n 2 --spec-ngram-simple-size-m 4",
        &format!("-md {}", m.display()),
    ] {
        let v = run(extra);
        assert_eq!(ids(&v, "tokens"), ids(&plain, "tokens"), "{extra}");
        let s = &v["speculative"];
        assert!(s["drafted"].as_u64().unwrap() >= s["accepted"].as_u64().unwrap(), "{extra}: {s}");
        if extra.starts_with("-md") {
            assert_eq!(s["drafter"], "draft-simple");
            assert_eq!(s["drafted"], s["accepted"], "a model drafting for itself: {s}");
            assert!(s["drafted"].as_u64().unwrap() > 0, "{s}");
        }
    }
    // A sampling chain and a stop string: the tokens are sampled by the chain (the library's
    // tests show they follow its distribution); here: it runs, stops at the string, reports.
    let v = run("--spec-type ngram-simple --spec-ngram-simple-size-n 1 --temp 0.8 -s 7");
    assert!(v["speculative"]["drafted"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["samplers"].as_array().unwrap().last().unwrap(), "dist");
    let stop = exe()
        .args(["generate", "--json", "--flags", &format!("-m {} -c 256 --temp 0 -md {}", m.display(), m.display())])
        .args(["-p", prompt, "-n", "24", "--stop", &plain["text"].as_str().unwrap()[..3]])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let v: serde_json::Value = serde_json::from_slice(&stop.stdout).unwrap();
    assert_eq!(v["stop_reason"], "stop_string", "{v}");
    for (extra, needle) in [
        ("--spec-type ngram-simple --spec-draft-n-min 5 --spec-ngram-simple-size-m 4", "n-min"),
        ("--spec-type draft-simple", "draft model"),
        ("--spec-type ngram-mod", "not supported"),
    ] {
        // The last --temp wins, as in llama.cpp.
        let flags = format!("-m {} -c 256 --temp 0 {extra}", m.display());
        let out = exe().args(["generate", "--flags", &flags, "-p", "x", "-n", "2"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(needle), "{extra}: {stderr}");
    }
}
