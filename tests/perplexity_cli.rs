//! `llama-runner perplexity` end to end on a generated model: the printed PPL is the library's,
//! a base file written by one run is read by `--kl-divergence` (full and compact forms), and bad
//! input exits with status 2 and a message naming the problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use llama_runner::quality::{self, PerplexityOptions};
use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("perplexity-cli");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model() -> PathBuf {
    tiny_gguf::cached(&tiny_gguf::ModelSpec::preset("tiny-llama").expect("preset"), &dir()).expect("generated model")
}

/// An English text long enough for a few chunks of 64 tokens of the generated (byte) vocabulary.
fn text(name: &str) -> PathBuf {
    let p = dir().join(format!("{name}-{}.txt", std::process::id()));
    let t = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of \
             foolishness, it was the epoch of belief, it was the epoch of incredulity. ";
    std::fs::write(&p, t.repeat(4)).unwrap();
    p
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llama-runner")).arg("perplexity").args(args).output().unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn prints_the_library_perplexity_and_reads_its_base() {
    let (m, t) = (model(), text("ppl"));
    let flags = format!("-m {} -c 64 -b 64 -t 2", m.display());
    let out = stdout(&run(&["--flags", &flags, "-f", t.to_str().unwrap(), "--chunks", "3"]));

    let model = Model::load(Backend::get().unwrap(), &m, &ModelOptions::default()).unwrap();
    let tokens = quality::tokenize(&model, &std::fs::read_to_string(&t).unwrap()).unwrap();
    let o = PerplexityOptions { n_ctx: 64, n_chunks: Some(3) };
    let copts = o.context_options(&ContextOptions { n_batch: 64, n_threads: Some(2), ..Default::default() });
    let p = Context::new(&model, &copts).unwrap().perplexity(&tokens, &o).unwrap();
    let chunks: String = p.chunks.iter().enumerate().map(|(i, v)| format!("[{}]{v:.4},", i + 1)).collect();
    assert!(out.contains(&chunks), "{out}");
    let last = format!("Final estimate: PPL = {:.4} +/- {:.5}", p.ppl, p.uncertainty.unwrap());
    assert!(out.contains(&last), "{out}\nexpected {last}");

    // A base, then the same configuration against it: KLD 0, the same top token everywhere.
    for compact in [None, Some("8")] {
        let base = dir().join(format!("base-{}-{}.kld", compact.unwrap_or("full"), std::process::id()));
        let mut args = vec!["--flags", &flags, "-f", t.to_str().unwrap(), "--chunks", "4"];
        args.extend(["--kl-divergence-base", base.to_str().unwrap()]);
        if let Some(k) = compact {
            args.extend(["--compact-top-k", k]);
        }
        let written = stdout(&run(&args));
        assert!(written.contains("Final estimate: PPL ="), "{written}");
        let kl = stdout(&run(&[
            "--flags",
            &flags,
            "-f",
            t.to_str().unwrap(),
            "--kl-divergence-base",
            base.to_str().unwrap(),
            "--kl-divergence",
        ]));
        assert!(kl.contains("ln(PPL(Q)/PPL(base))"), "{kl}");
        assert!(kl.contains("====== KL divergence statistics ======"), "{kl}");
        assert!(kl.contains("Mean    KLD:   0.000000") || kl.contains("Mean    KLD:  -0.000000"), "{kl}");
        assert!(kl.contains("Same top p: 100.000 ± 0.000 %"), "{kl}");
        // The chunk size comes from the base; another -c is refused.
        let other = format!("-m {} -c 128 -b 128 -t 2", m.display());
        let e = run(&["--flags", &other, "--kl-divergence-base", base.to_str().unwrap(), "--kl-divergence"]);
        assert_eq!(e.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&e.stderr).contains("n_ctx 64, 128 was asked for"));
        std::fs::remove_file(&base).ok();
    }
}

#[test]
fn bad_input_is_an_error() {
    let (m, t) = (model(), text("bad"));
    let flags = format!("-m {} -c 64 -b 64 -t 2", m.display());
    let short = dir().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let garbage = dir().join("garbage.kld");
    std::fs::write(&garbage, "not a base file at all").unwrap();
    let (t, s, g) = (t.to_str().unwrap(), short.to_str().unwrap(), garbage.to_str().unwrap());
    let odd = format!("-m {} -c 63 -t 2", m.display());
    // -c 1 used to be blamed on -np (2048 sequences of one token); -c 4 -b 2048 asks for 512.
    let one = format!("-m {} -c 1 -t 2", m.display());
    let many = format!("-m {} -c 4 -b 2048 -t 2", m.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--flags", &flags], "no text"),
        (vec!["--flags", &flags, "-f", s], "at least 128"),
        (vec!["--flags", &odd, "-f", t], "must be even"),
        (vec!["--flags", &one, "-f", t], "n_ctx 1"),
        (vec!["--flags", &many, "-f", t], "more than 256 chunks"),
        (vec!["--flags", &flags, "--kl-divergence"], "--kl-divergence-base"),
        (vec!["--flags", &flags, "--kl-divergence-base", g, "--kl-divergence"], "not a base file"),
        (vec!["--flags", &flags, "-f", t, "--compact-top-k", "4"], "--compact-top-k needs"),
        (vec!["--flags", "-c 64", "-f", t], "no model"),
        (vec!["--flags", &flags, "-f", "/nonexistent/text.txt"], "text.txt"),
    ];
    for (args, needle) in cases {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
