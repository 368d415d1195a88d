//! Regression hunting: `llama-runner judge` (the verdict of a bisect step), the argument checks
//! of `scripts/bisect-step.sh` (`llama-runner bisect-step`), and the end-to-end demo (`scripts/bisect-demo.sh`: a local
//! llama.cpp history with a planted slowdown, bisected), ignored unless asked for:
//! `cargo test -p llama-workbench --test bisect -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use llama_workbench::record::Record;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).canonicalize().unwrap()
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bisect-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A record of configs/cpu-tiny.toml, measured once for all tests.
fn tiny_record() -> &'static Path {
    static RECORD: OnceLock<PathBuf> = OnceLock::new();
    RECORD.get_or_init(|| {
        let path = scratch().join("tiny.json");
        let out = Command::new(env!("CARGO_BIN_EXE_llama-runner"))
            .current_dir(workspace())
            .env("LLAMA_MODELS_DIR", scratch().join("models"))
            .args(["bench", "--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--record"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
        path
    })
}

/// A copy of `record` with every tokens/s of `metric` (`pp` or `tg`) multiplied by `factor`.
fn scaled(record: &Path, metric: &str, factor: f64, name: &str) -> PathBuf {
    let mut r = Record::read_json(record).unwrap();
    for w in &mut r.workloads {
        let s = if metric == "pp" { w.pp.as_mut() } else { w.tg.as_mut() }.unwrap();
        s.avg_ts *= factor;
        s.stddev_ts *= factor;
        for v in &mut s.samples_ts {
            *v *= factor;
        }
    }
    let path = scratch().join(name);
    r.write_json(&path).unwrap();
    path
}

fn judge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llama-runner")).arg("judge").args(args).output().unwrap()
}

/// Exit code and the one stdout line of `judge`.
#[track_caller]
fn verdict(args: &[&str]) -> (i32, String) {
    let out = judge(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap();
    if code <= 1 {
        assert_eq!(stdout.lines().count(), 1, "not one line: {stdout:?}");
    }
    (code, stdout.trim().to_string())
}

fn tg_of(record: &Path) -> f64 {
    Record::read_json(record).unwrap().workloads[0].tg.as_ref().unwrap().avg_ts
}

#[test]
fn judge_exit_codes_follow_git_bisect_run() {
    let rec = tiny_record();
    let r = rec.to_str().unwrap();
    let tg = tg_of(rec);
    assert!(tg > 0.0);
    let low = format!("{}", tg / 2.0);
    let high = format!("{}", tg * 2.0);

    // Absolute floors.
    let (code, line) = verdict(&["--record", r, "--min-tg", &low, "--label", "abc123"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("abc123: tiny tg "), "{line}");
    assert!(line.ends_with(": good"), "{line}");
    assert!(line.contains("threshold"), "{line}");
    let (code, line) = verdict(&["--record", r, "--min-tg", &high]);
    assert_eq!(code, 1, "{line}");
    assert!(line.ends_with(": bad"), "{line}");
    // Without a label the line names the record's llama.cpp commit.
    let commit = &llama_runner::build_info::COMMIT[..12];
    assert!(line.starts_with(&format!("llama.cpp {commit} b")), "{line}");
    let pp = Record::read_json(rec).unwrap().workloads[0].pp.as_ref().unwrap().avg_ts;
    assert_eq!(verdict(&["--record", r, "--min-pp", &format!("{}", pp * 0.5)]).0, 0);
    assert_eq!(verdict(&["--record", r, "--min-pp", &format!("{}", pp * 2.0)]).0, 1);

    // Against a baseline: itself is good at any margin, also with margin 0.
    let (code, line) = verdict(&["--record", r, "--baseline", r, "--margin", "0"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("baseline") && line.contains("- 0%"), "{line}");
    // A baseline twice as fast: 50% slower, bad at 10%, good at 60%.
    let fast = scaled(rec, "tg", 2.0, "fast-tg.json");
    let f = fast.to_str().unwrap();
    let (code, line) = verdict(&["--record", r, "--baseline", f, "--margin", "0.1"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("- 10%") && line.ends_with(": bad"), "{line}");
    assert_eq!(verdict(&["--record", r, "--baseline", f, "--margin", "0.6"]).0, 0);
    // A slower baseline: good. The default margin is 10% and the default metric tg.
    let slow = scaled(rec, "tg", 0.95, "slow-tg.json");
    assert_eq!(verdict(&["--record", r, "--baseline", slow.to_str().unwrap()]).0, 0);
    assert_eq!(verdict(&["--record", r, "--baseline", f]).0, 1);
    // pp judged on its own: the tg-scaled baseline leaves pp equal.
    assert_eq!(verdict(&["--record", r, "--baseline", f, "--metric", "pp"]).0, 0);
    let fast_pp = scaled(rec, "pp", 2.0, "fast-pp.json");
    assert_eq!(verdict(&["--record", r, "--baseline", fast_pp.to_str().unwrap(), "--metric", "pp"]).0, 1);
    // Statistics: the best repetition is at least the mean.
    for stat in ["mean", "median", "best"] {
        let (code, line) = verdict(&["--record", r, "--baseline", r, "--stat", stat]);
        assert_eq!(code, 0, "{stat}: {line}");
        assert!(line.contains(&format!("({stat} of 2)")), "{line}");
    }
    // Measure only: exit 0, no threshold.
    let (code, line) = verdict(&["--record", r]);
    assert_eq!(code, 0);
    assert!(line.ends_with(": measured") && !line.contains("threshold"), "{line}");
}

#[test]
fn judge_mistakes_are_errors_not_verdicts() {
    let rec = tiny_record();
    let r = rec.to_str().unwrap();
    for (args, needle) in [
        (vec!["--record", r, "--workload", "nope", "--min-tg", "1"], "no workload `nope`"),
        (vec!["--record", r, "--baseline", r, "--margin", "1.5"], "margin"),
        (vec!["--record", r, "--min-tg", "0"], "positive"),
        (vec!["--record", "/nonexistent/record.json", "--min-tg", "1"], "record.json"),
        (vec!["--record", r, "--min-tg", "1", "--baseline", r], "cannot be used with"),
        (vec!["--record", r, "--min-tg", "1", "--metric", "pp"], "cannot be used with"),
        (vec!["--record", r, "--margin", "0.2"], "--baseline"),
    ] {
        let out = judge(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A baseline whose workload has other sizes is refused.
    let mut other = Record::read_json(rec).unwrap();
    other.workloads[0].workload.n_gen += 1;
    let path = scratch().join("other-sizes.json");
    other.write_json(&path).unwrap();
    let out = judge(&["--record", r, "--baseline", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs from the baseline"));
}

fn step(args: &[&str], cwd: &Path) -> (i32, String) {
    let out = Command::new(workspace().join("scripts/bisect-step.sh"))
        .args(args)
        .current_dir(cwd)
        // The command under test runs the step (instead of a release build of it).
        .env("LLAMA_RUNNER", env!("CARGO_BIN_EXE_llama-runner"))
        .output()
        .unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn step_misuse_aborts_the_bisection_with_one_line() {
    let ws = workspace();
    let vendor = ws.join("vendor/llama.cpp");
    let cases: &[(&[&str], &str)] = &[
        (&[], "--config is required"),
        (&["--config", "configs/cpu-tiny.toml"], "--workload is required"),
        (&["--config", "configs/none.toml", "--workload", "tiny", "--min-tg", "1"], "no configuration"),
        (&["--config", "configs/cpu-tiny.toml", "--workload", "tiny"], "name a criterion"),
        (&["--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--min-tg"], "--min-tg needs a value"),
        (&["--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--bogus"], "unknown argument: --bogus"),
    ];
    for (args, needle) in cases {
        let (code, stdout) = step(args, &vendor);
        assert_eq!(code, 128, "{args:?}: {stdout}");
        assert_eq!(stdout.lines().count(), 1, "{args:?}: {stdout}");
        assert!(stdout.contains(needle), "{args:?}: {stdout}");
    }
    // Run outside a llama.cpp tree.
    let (code, stdout) =
        step(&["--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--min-tg", "1"], &scratch());
    assert_eq!(code, 128, "{stdout}");
    assert!(stdout.contains("is not a llama.cpp tree"), "{stdout}");
}

/// A stand-in for cargo: "builds" by copying the command under test where the step's build
/// puts it (or fails with `FAKE_CARGO_FAIL`), so that a step runs in seconds.
fn fake_cargo() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = scratch().join("fake-cargo.sh");
    let tmp = scratch().join(format!("fake-cargo.sh.{}", std::process::id()));
    std::fs::write(
        &tmp,
        "#!/bin/sh\necho \"fake cargo $*\"\n[ -z \"$FAKE_CARGO_FAIL\" ] || exit 101\n\
         mkdir -p \"$CARGO_TARGET_DIR/release\" && cp \"$FAKE_CARGO_BIN\" \"$CARGO_TARGET_DIR/release/llama-runner\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A whole step with the fake cargo: (exit status, stdout).
fn fake_step(args: &[&str], fail_build: bool) -> (i32, String) {
    let target = scratch().join("fake-step-target");
    let mut cmd = Command::new(workspace().join("scripts/bisect-step.sh"));
    cmd.args(args)
        .arg("--target-dir")
        .arg(&target)
        .current_dir(workspace().join("vendor/llama.cpp"))
        .env("LLAMA_RUNNER", env!("CARGO_BIN_EXE_llama-runner"))
        .env("CARGO", fake_cargo())
        .env("FAKE_CARGO_BIN", env!("CARGO_BIN_EXE_llama-runner"))
        .env("LLAMA_MODELS_DIR", scratch().join("models"));
    if fail_build {
        cmd.env("FAKE_CARGO_FAIL", "1");
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_step_builds_benches_and_judges_in_one_line() {
    let tiny = ["--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--repetitions", "1"];
    fn with<'a>(tiny: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        tiny.iter().chain(extra).copied().collect()
    }
    let keep = scratch().join("kept.json");
    let _ = std::fs::remove_file(&keep);
    let (code, line) = fake_step(&with(&tiny, &["--min-tg", "0.001", "--keep-record", keep.to_str().unwrap()]), false);
    assert_eq!(code, 0, "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(": tiny tg ") && line.contains(": good [build ") && line.trim_end().ends_with(" s]"),
        "{line}"
    );
    assert_eq!(Record::read_json(&keep).unwrap().workloads[0].workload.name, "tiny");
    let (code, line) = fake_step(&with(&tiny, &["--min-tg", "1e12"]), false);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains(": bad [build "), "{line}");
    let (code, line) = fake_step(&with(&tiny, &["--measure-only"]), false);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains(": measured [build "), "{line}");
    // A tree that does not build, and a bench that fails: skip (125), not bad.
    let (code, line) = fake_step(&with(&tiny, &["--min-tg", "1"]), true);
    assert_eq!(code, 125, "{line}");
    assert!(line.contains(": skip (does not build; see ") && line.contains("bisect-step.log"), "{line}");
    let (code, line) = fake_step(&["--config", "configs/cpu-tiny.toml", "--workload", "nope", "--min-tg", "1"], false);
    assert_eq!(code, 125, "{line}");
    assert!(line.contains(": skip (bench failed: no workload named `nope`; see "), "{line}");
}

/// The demo: minutes (a full build of the demo tree, then a few incremental steps).
#[test]
#[ignore = "minutes of builds, and verdicts that rest on timings: run with --ignored"]
fn demo_bisection_finds_the_planted_commit() {
    let out = Command::new(workspace().join("scripts/bisect-demo.sh"))
        .current_dir(workspace())
        // The outer cargo's choice of target dir must not leak into the step's builds.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("found the planted commit"), "{stdout}");
    // Every step printed its one line, and the bisection had at least one bad and one good step.
    assert!(stdout.lines().any(|l| l.ends_with(" s]") && l.contains(": bad [")), "{stdout}");
    assert!(stdout.lines().any(|l| l.ends_with(" s]") && l.contains(": good [")), "{stdout}");
}
