//! The `llama-runner` command end to end: bench records, compare, sweep (and its interruption).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llama_workbench::record::Record;

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llama-runner"))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests-models")
}

fn bench(config: &str, record: &Path) {
    let out = exe()
        .current_dir(workspace())
        .env("LLAMA_MODELS_DIR", models_dir())
        .args(["bench", "--config", config, "--record"])
        .arg(record)
        .output()
        .unwrap();
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn records_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn bench_writes_a_complete_record_and_llama_bench_jsonl() {
    let dir = out_dir("record");
    let path = dir.join("tiny.json");
    bench("configs/cpu-tiny.toml", &path);
    let r = Record::read_json(&path).unwrap();
    assert_eq!(r.config, "cpu-tiny");
    assert_eq!(r.build.commit, llama_runner::build_info::COMMIT);
    assert_eq!(r.build.library_commit, r.build.commit);
    assert!(r.flags.contains("-t 2"), "{}", r.flags);
    assert_eq!(r.model.info.architecture, "qwen3moe");
    assert!(r.model.file_size > 0 && r.model.mtime > 0);
    assert!(r.machine.logical_cpus > 0 && r.machine.ram_total > 0 && !r.machine.kernel.is_empty());
    let stages: Vec<&str> = r.memory.iter().map(|m| m.stage.as_str()).collect();
    assert_eq!(stages, ["before load", "after load", "after context"]);
    assert!(r.memory.iter().all(|m| m.devices.iter().any(|d| d.name == "CPU")));
    assert_eq!(r.workloads.len(), 2);
    for w in &r.workloads {
        for s in [w.pp.as_ref().unwrap(), w.tg.as_ref().unwrap()] {
            assert_eq!(s.samples_ns.len(), w.workload.repetitions as usize);
            assert!(s.avg_ts > 0.0);
            let mean = s.samples_ts.iter().sum::<f64>() / s.samples_ts.len() as f64;
            assert!((mean - s.avg_ts).abs() < 1e-6 * s.avg_ts);
        }
    }
    // llama-bench's JSONL: one line per test with its field names.
    let jsonl = std::fs::read_to_string(path.with_extension("jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for key in ["build_commit", "build_number", "model_type", "n_prompt", "n_gen", "avg_ts", "stddev_ts", "samples_ns"]
    {
        assert!(lines[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(lines[0]["build_commit"], llama_runner::build_info::short_commit());
}

#[test]
fn compare_prints_the_sweep_table() {
    let dir = out_dir("compare");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    bench("configs/cpu-tiny.toml", &a);
    bench("configs/cpu-tiny.toml", &b);
    let out = exe().arg("compare").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| configuration |"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("| cpu-tiny")).count(), 2, "{table}");
    assert!(
        table.contains('%') && (table.contains("within noise") || table.contains("faster") || table.contains("slower"))
    );

    // The thresholds reach the table (their effect on verdicts: compare.rs's unit tests; two
    // timed records cannot show it deterministically). A record against itself: no change.
    let out = exe().args(["compare", "--min-effect", "5", "--alpha", "0.01"]).arg(&a).arg(&a).output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("p < 0.01 and a change of at least 5%"), "{table}");
    assert!(
        table.contains("+0.0% within noise") && !table.contains("% faster") && !table.contains("% slower"),
        "{table}"
    );

    let missing = exe().arg("compare").arg(&a).arg(dir.join("nope.json")).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.json"));
}

#[test]
fn an_interrupted_sweep_keeps_finished_records() {
    let dir = out_dir("sweep");
    let mut child = exe()
        .current_dir(workspace())
        .env("LLAMA_MODELS_DIR", models_dir())
        .args([
            "sweep",
            "configs/cpu-tiny.toml",
            "configs/cpu-tiny.toml",
            "configs/cpu-tiny.toml",
            "configs/cpu-tiny.toml",
        ])
        // Enough repetitions that each configuration takes a few seconds.
        .args(["--repetitions", "500", "--out"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while records_in(&dir).is_empty() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let records = records_in(&dir);
    assert!(!records.is_empty(), "no record was written before the interruption");
    assert!(records.len() < 4, "the sweep finished before it was interrupted");
    for r in &records {
        Record::read_json(r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    }
}

#[test]
fn bad_inputs_are_errors_not_crashes() {
    for args in [
        vec!["bench", "--config", "does-not-exist.toml"],
        vec!["bench", "--flags", "-m /nonexistent.gguf"],
        vec!["bench", "--flags", "-t banana"],
        vec!["flags", "--no-such-flag"],
        vec!["compare", "Cargo.toml", "Cargo.toml"],
        vec!["compare", "--min-effect", "150", "a.json", "b.json"],
        vec!["compare", "--alpha", "0", "a.json", "b.json"],
    ] {
        let out = exe().current_dir(workspace()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error:"), "{args:?}");
    }
}
