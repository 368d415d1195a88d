//! `llama-runner embed` end to end on a generated model: the JSON holds the library's
//! embeddings of each non-empty line; bad input exits with status 2 and a message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use llama_runner::embeddings::{Normalize, Pooling};
use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};

fn model() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("embed-cli-models");
    tiny_gguf::cached(&tiny_gguf::ModelSpec::preset("tiny-llama").expect("preset"), &dir).expect("generated model")
}

fn embed(flags: &str, extra: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llama-runner"))
        .args(["embed", "--flags", flags])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its flags exits without reading: a broken pipe is its answer.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn lines_become_the_library_embeddings() {
    let m = model();
    let flags = format!("-m {} --pooling mean -c 256 -t 2", m.display());
    let out = embed(&flags, &[], "hello world\n\n  \nthe quick brown fox\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pooling"], "mean");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "empty lines are skipped");
    assert_eq!(data[1]["text"], "the quick brown fox");
    let model = Model::load(Backend::get().unwrap(), &m, &ModelOptions::default()).unwrap();
    let o = ContextOptions {
        n_ctx: 256,
        n_threads: Some(2),
        embeddings: true,
        pooling: Pooling::Mean,
        ..Default::default()
    };
    let mut ctx = Context::new(&model, &o).unwrap();
    let texts = ["hello world", "the quick brown fox"];
    let tokens: Vec<Vec<i32>> = texts.iter().map(|t| model.tokenize(t, true).unwrap()).collect();
    let refs: Vec<&[i32]> = tokens.iter().map(Vec::as_slice).collect();
    let expected = ctx.embed(&refs, Normalize::Euclidean).unwrap();
    for (item, want) in data.iter().zip(&expected) {
        let got: Vec<f32> = item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got.len(), v["n_embd"].as_u64().unwrap() as usize);
        assert_eq!(&got, want, "the JSON holds the library's embedding exactly");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "euclidean-normalised: {norm}");
    }
    // No normalisation: other values, same direction.
    let raw = embed(&flags, &["--embd-normalize", "-1"], "hello world\n");
    let r: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_ne!(r["data"][0]["embedding"], data[0]["embedding"]);
}

#[test]
fn bad_input_is_an_error() {
    let m = model();
    for (flags, extra, stdin, needle) in [
        (format!("-m {} -c 256", m.display()), vec![], "x\n", "pooling is none"),
        (format!("-m {} --pooling mean", m.display()), vec![], "\n\n", "no non-empty line"),
        (format!("-m {} --pooling mean", m.display()), vec!["--embd-normalize", "-5"], "x\n", "--embd-normalize"),
        ("--pooling mean".to_string(), vec![], "x\n", "no model"),
        (format!("-m {} --pooling sideways", m.display()), vec![], "x\n", "sideways"),
        (format!("-m {} --pooling mean", m.display()), vec!["-f", "/nonexistent/lines.txt"], "", "lines.txt"),
    ] {
        let out = embed(&flags, &extra, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags} {extra:?}: {err}");
        assert!(err.contains(needle), "{flags} {extra:?}: {err}");
    }
    // A 10 MB line: refused at once (llama.cpp's byte-fallback tokenizer took minutes on it;
    // found by an independent test set), with the next line fine.
    let t = std::time::Instant::now();
    let out =
        embed(&format!("-m {} --pooling mean -c 256", m.display()), &[], &format!("{}\nok\n", "a".repeat(10_000_000)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 1 is 10000000 bytes"), "{err}");
    assert!(t.elapsed().as_secs() < 20, "refused without tokenizing");
}

/// With rank pooling a `query<TAB>document` line is a reranking pair: the JSON's first output
/// is the library's `Context::rerank` score, the labels are the model's.
#[test]
fn rank_pairs_are_the_library_rerank_scores() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("embed-cli-models");
    let m = tiny_gguf::cached(&tiny_gguf::ModelSpec::tiny_rerank(), &dir).expect("generated model");
    let flags = format!("-m {} --rerank -c 256 -t 2", m.display());
    let docs = ["the quick brown fox", "hello world"];
    let input: String = docs.iter().map(|d| format!("where is the fox?\t{d}\n")).collect();
    let out = embed(&flags, &["--embd-normalize", "-1"], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pooling"], "rank");
    assert_eq!(v["labels"], serde_json::json!(["yes", "no"]));
    let model = Model::load(Backend::get().unwrap(), &m, &ModelOptions::default()).unwrap();
    let o = ContextOptions {
        n_ctx: 256,
        n_threads: Some(2),
        embeddings: true,
        pooling: Pooling::Rank,
        ..Default::default()
    };
    let scores = Context::new(&model, &o).unwrap().rerank("where is the fox?", &docs).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), docs.len());
    for (item, want) in data.iter().zip(&scores) {
        let got = item["embedding"][0].as_f64().unwrap() as f32;
        assert_eq!(got, *want, "the first output is the rerank score");
    }
    // Without rank pooling the same lines are plain texts: no labels.
    let out = embed(&format!("-m {} --pooling mean -c 256 -t 2", m.display()), &[], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("labels").is_none());
    assert_eq!(v["n_embd"], 128);
}
