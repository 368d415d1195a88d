//! The `llama-runner` command end to end: bench records, compare, sweep (its interruption, and
//! records that never replace each other).

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

/// A process group a test started (the sweep and the benches it runs): SIGKILLed when dropped,
/// so that a failing test leaves nothing running either.
struct Group {
    child: std::process::Child,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group.
    fn spawn(cmd: &mut Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group { child: cmd.process_group(0).spawn().unwrap() }
    }

    fn id(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to every process of the group.
    fn kill_all(&self, signal: i32) {
        // SAFETY: kill(2) with a negative pid signals the process group of that id; it touches
        // no memory of this process. The group is the sweep's, started by this test.
        let rc = unsafe { libc::kill(-self.id(), signal) };
        assert!(rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH));
    }

    /// The processes of the group still alive (zombies waiting for a parent do not count).
    fn alive(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
            let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[2] == self.id().to_string() && fields[0] != "Z" {
                out.push(format!("{head}) {}", fields[0]));
            }
        }
        out
    }

    /// Waits until no process of the group is alive.
    #[track_caller]
    fn assert_gone(&self) {
        let start = Instant::now();
        while !self.alive().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.alive().is_empty(), "still running: {:?}", self.alive());
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_all(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A sweep of four configurations slow enough to interrupt, in its own process group.
fn slow_sweep(dir: &Path) -> Group {
    Group::spawn(
        exe()
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
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
}

/// Waits for the first record of a sweep (while the next configuration runs).
fn first_record(dir: &Path) {
    let start = Instant::now();
    while records_in(dir).is_empty() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_sweep_keeps_finished_records() {
    let dir = out_dir("sweep");
    let mut sweep = slow_sweep(&dir);
    first_record(&dir);
    // The whole tree: the sweep and the bench it is running.
    sweep.kill_all(libc::SIGKILL);
    let _ = sweep.child.wait();
    sweep.assert_gone();
    let records = records_in(&dir);
    assert!(!records.is_empty(), "no record was written before the interruption");
    assert!(records.len() < 4, "the sweep finished before it was interrupted");
    for r in &records {
        Record::read_json(r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    }
}

#[test]
fn a_stopped_sweep_stops_its_bench() {
    let dir = out_dir("sweep-term");
    let mut sweep = slow_sweep(&dir);
    first_record(&dir);
    // Only the sweep is told; it must stop the bench it runs, then exit as stopped by SIGTERM.
    // SAFETY: kill(2) on the sweep's own pid, a child of this test that has not been waited for.
    assert_eq!(unsafe { libc::kill(sweep.id(), libc::SIGTERM) }, 0);
    let status = sweep.child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
    sweep.assert_gone();
    let records = records_in(&dir);
    assert!(!records.is_empty() && records.len() < 4, "{records:?}");
    for r in &records {
        Record::read_json(r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    }
}

#[test]
fn records_of_one_name_never_replace_each_other() {
    // Two configurations with one file stem, one of them listed twice: three records.
    let dir = out_dir("stems");
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(workspace().join("configs/cpu-tiny.toml"), copy.join("cpu-tiny.toml")).unwrap();
    let out = exe()
        .current_dir(workspace())
        .env("LLAMA_MODELS_DIR", models_dir())
        .args(["sweep", "configs/cpu-tiny.toml", "configs/cpu-tiny.toml"])
        .arg(copy.join("cpu-tiny.toml"))
        .args(["--workload", "tiny", "--repetitions", "1", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "sweep failed: {}", String::from_utf8_lossy(&out.stderr));
    let records = records_in(&dir);
    assert_eq!(records.len(), 3, "{records:?}");
    let names: Vec<String> = records.iter().map(|r| r.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.starts_with("cpu-tiny-2-")) && names.iter().any(|n| n.starts_with("cpu-tiny-3-")));
    for r in &records {
        Record::read_json(r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
        assert!(r.with_extension("jsonl").is_file(), "{}", r.display());
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().filter(|l| l.starts_with("| cpu-tiny")).count(), 3, "{table}");

    // Two benches of one configuration at once, without --record: two records.
    let dir = out_dir("same-second");
    let run = || {
        exe()
            .current_dir(workspace())
            .env("LLAMA_MODELS_DIR", models_dir())
            .args(["bench", "--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--repetitions", "1", "--out"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (run(), run());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let records = records_in(&dir);
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        Record::read_json(r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    }

    // --no-clobber refuses an existing file instead of replacing it.
    let taken = dir.join("taken.json");
    std::fs::write(&taken, "keep").unwrap();
    let out = exe()
        .current_dir(workspace())
        .env("LLAMA_MODELS_DIR", models_dir())
        .args(["bench", "--config", "configs/cpu-tiny.toml", "--workload", "tiny", "--repetitions", "1"])
        .arg("--record")
        .arg(&taken)
        .arg("--no-clobber")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken.json"));
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "keep");
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

/// `bench` with a parallel workload and a cost curve: the record keeps them and the table
/// shows aggregate columns and the curve.
#[test]
fn throughput_workloads_reach_the_record_and_the_table() {
    let dir = out_dir("throughput");
    let record = dir.join("r.json");
    let out = exe()
        .current_dir(workspace())
        .env("LLAMA_MODELS_DIR", models_dir())
        .args(["bench", "--config", "configs/cpu-tiny-throughput.toml", "--record"])
        .arg(&record)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("par4 tg t/s (4 seqs, total)"), "{stdout}");
    assert!(stdout.contains("Cost of one decode") && stdout.contains("k=16"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let workloads = v["workloads"].as_array().unwrap();
    let par = workloads.iter().find(|w| w["workload"]["name"] == "par4").unwrap();
    assert_eq!(par["workload"]["parallel"], 4);
    assert_eq!(par["tg"]["n_tokens"], 32);
    let cost = workloads.iter().find(|w| w["workload"]["name"] == "cost").unwrap();
    assert_eq!(cost["cost"].as_array().unwrap().len(), 5);
    assert_eq!(cost["cost"][0]["relative"], 1.0);
}

/// Every command that takes a model, a flag string, a config, a record or a text refuses bad
/// ones with `error: ...` and exit status 2: malformed and truncated model files, a directory,
/// the new flags (adapters, speculative decoding, chat templates), bad workloads and records.
/// Never a panic or an abort.
#[test]
fn every_command_refuses_bad_input_with_exit_2() {
    let dir = out_dir("bad-inputs");
    let model = tiny_gguf::cached(&tiny_gguf::ModelSpec::tiny_llama(), &models_dir()).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xffjunk").unwrap();
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "a short text").unwrap();
    let bad_record = dir.join("bad.json");
    std::fs::write(&bad_record, "{\"not\": \"a record\"}").unwrap();
    let bad_config = dir.join("bad.toml");
    std::fs::write(
        &bad_config,
        "generated = \"tiny-llama\"\n[[workload]]\nname = \"w\"\nn_prompt = 4\nn_gen = 4\nparallel = 0\n",
    )
    .unwrap();
    let m = model.display().to_string();
    let d = dir.display().to_string();
    let mut cases: Vec<Vec<String>> = Vec::new();
    for bad in [&truncated, &garbage, &empty, &dir] {
        let b = bad.display().to_string();
        cases.push(vec!["generate".into(), "--flags".into(), format!("-m {b}"), "-p".into(), "x".into()]);
        cases.push(vec!["chat".into(), "--flags".into(), format!("-m {b}"), "--chat-template".into(), "chatml".into()]);
        cases.push(vec!["embed".into(), "--flags".into(), format!("-m {b}"), "-f".into(), text.display().to_string()]);
        cases.push(vec![
            "perplexity".into(),
            "--flags".into(),
            format!("-m {b}"),
            "-f".into(),
            text.display().to_string(),
        ]);
        cases.push(vec!["bench".into(), "--flags".into(), format!("-m {b} -t 1"), "--repetitions".into(), "1".into()]);
    }
    for flags in [
        format!("-m {m} --lora {m}"),
        format!("-m {m} --lora-scaled {m}"),
        format!("-m {m} --lora-scaled a:b:c"),
        format!("-m {m} --control-vector {d}/none.gguf"),
        format!("-m {m} --control-vector-layer-range 1"),
        format!("-m {m} --spec-type draft-simple --temp 0"),
        format!("-m {m} --spec-type ngram-simple --spec-draft-n-min 5 --spec-ngram-simple-size-m 4"),
        format!("-m {m} -md {m} --spec-draft-n-min 5 --spec-draft-n-max 2"),
        format!("-m {m} --spec-type ngram-simple --spec-draft-n-min 5 --spec-draft-n-max 2"),
        format!("-m {m} --spec-type eagle"),
        format!("-m {m} -md {d}/none.gguf --temp 0"),
        format!("-m {m} --spec-draft-n-max -3"),
        format!("-m {m} --samplers warp"),
        format!("-m {m} -c 999999999"),
        // Found by an independent test set: OpenMP crashed on these, std::regex hung, NaN passed.
        format!("-m {m} -t 100000"),
        format!("-m {m} -t 2 -tb 70000"),
        format!("-m {m} -ot '(.*.*.*.*)*z=CPU'"),
        format!("-m {m} --spec-type ngram-simple --spec-draft-p-min nan"),
        format!("-m {m} --grammar 'root ::= \"\\U00110000\"'"),
    ] {
        cases.push(vec!["generate".into(), "--flags".into(), flags, "-p".into(), "x".into(), "-n".into(), "2".into()]);
    }
    for extra in [
        vec!["--chat-template", "{% if %}"],
        vec!["--chat-template-file", "/nonexistent/t.jinja"],
        vec!["--chat-template", "nonsense", "--no-jinja"],
        vec!["--chat-template", "nosuchformat"],
    ] {
        let mut c: Vec<String> = vec!["chat".into(), "--flags".into(), format!("-m {m}")];
        c.extend(extra.iter().map(|s| s.to_string()));
        cases.push(c);
    }
    cases.push(vec![
        "perplexity".into(),
        "--flags".into(),
        format!("-m {m} -c 64"),
        "-f".into(),
        text.display().to_string(),
    ]);
    cases.push(vec!["perplexity".into(), "--flags".into(), format!("-m {m}"), "-f".into(), "/nonexistent.txt".into()]);
    cases.push(vec![
        "perplexity".into(),
        "--flags".into(),
        format!("-m {m} -c 64"),
        "-f".into(),
        text.display().to_string(),
        "--kl-divergence-base".into(),
        bad_record.display().to_string(),
        "--kl-divergence".into(),
    ]);
    cases.push(vec!["bench".into(), "--config".into(), bad_config.display().to_string()]);
    // A model trained for 2^30 tokens asked for all of them: a KV cache larger than any memory,
    // refused before it is allocated (the process is not killed later).
    let long = tiny_gguf::cached(
        &tiny_gguf::ModelSpec { context_length: 1 << 30, ..tiny_gguf::ModelSpec::tiny_llama() },
        &models_dir(),
    )
    .unwrap();
    let long_flags = format!("-m {} -c {}", long.display(), 1u32 << 30);
    cases.push(vec!["generate".into(), "--flags".into(), long_flags, "-p".into(), "x".into(), "-n".into(), "2".into()]);
    cases.push(vec!["compare".into(), bad_record.display().to_string(), bad_record.display().to_string()]);
    cases.push(vec!["history".into(), bad_record.display().to_string()]);
    for args in &cases {
        let out = exe()
            .current_dir(workspace())
            .env("LLAMA_MODELS_DIR", models_dir())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.lines().any(|l| l.starts_with("error:")), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        // A usage error from the argument parser would pass the checks above for the wrong
        // reason: every case is a well-formed command line.
        assert!(!stderr.contains("Usage:"), "{args:?}: {stderr}");
        eprintln!(
            "{:?} -> {}",
            args.iter().take(3).collect::<Vec<_>>(),
            stderr.lines().find(|l| l.starts_with("error:")).unwrap_or("")
        );
    }
}
