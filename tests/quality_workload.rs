//! Quality workloads (`[[workload]]` with a `quality` table) end to end: the checks at load,
//! a base written by the first run and the KL divergence against it in the second, old records
//! without the field, and on the real model a sweep whose table shows speed and quality side
//! by side with the quality verdicts, and its Pareto plot.
//!
//! `harness = false`: without the real model (`scripts/fetch-real-model.sh`, or
//! `LLAMA_TEST_REAL_MODEL`) its trial is reported ignored with the reason; with
//! `LLAMA_REQUIRE_REAL_MODEL=1` (CI) it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use llama_workbench::Error;
use llama_workbench::config::Config;
use llama_workbench::error::{WorkloadProblem, chain};
use llama_workbench::record::Record;

fn main() {
    let test = |name: &str, f: fn()| {
        Trial::test(name, move || {
            f();
            Ok(())
        })
    };
    let trials = vec![
        test("quality_tables_are_checked_at_load", quality_tables_are_checked_at_load),
        test(
            "a_quality_workload_writes_its_base_then_measures_against_it",
            a_quality_workload_writes_its_base_then_measures_against_it,
        ),
        test("records_without_quality_results_still_read", records_without_quality_results_still_read),
        Trial::ignorable_test("a_sweep_shows_speed_and_quality_side_by_side_on_the_real_model", || {
            match real_model() {
                Ok(path) => {
                    a_sweep_shows_speed_and_quality_side_by_side(&path);
                    Ok(Completion::Completed)
                }
                Err((reason, true)) => Err(Failed::from(reason)),
                Err((reason, false)) => Ok(Completion::ignored_with(reason)),
            }
        }),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// The real model: `LLAMA_TEST_REAL_MODEL`, else `gemma-3-270m-q4_k_m.gguf` in
/// `LLAMA_MODELS_DIR` or `.cache/models`. When it is missing: why, and whether that is a
/// failure (`LLAMA_REQUIRE_REAL_MODEL=1`) rather than a reason to skip.
fn real_model() -> Result<PathBuf, (String, bool)> {
    let path = std::env::var_os("LLAMA_TEST_REAL_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("LLAMA_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join(".cache/models"))
            .join("gemma-3-270m-q4_k_m.gguf")
    });
    if path.is_file() {
        Ok(std::fs::canonicalize(&path).unwrap())
    } else if std::env::var("LLAMA_REQUIRE_REAL_MODEL").as_deref() == Ok("1") {
        Err((
            format!("LLAMA_REQUIRE_REAL_MODEL=1 but {} is missing: run scripts/fetch-real-model.sh", path.display()),
            true,
        ))
    } else {
        Err((format!("real model {} not fetched: scripts/fetch-real-model.sh", path.display()), false))
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quality-workload").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llama-runner"))
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An English text long enough for a few chunks of 64 tokens of the generated (byte) vocabulary.
fn write_text(path: &Path) {
    let t = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of \
             foolishness, it was the epoch of belief, it was the epoch of incredulity. ";
    std::fs::write(path, t.repeat(4)).unwrap();
}

fn quality_tables_are_checked_at_load() {
    let dir = out_dir("load");
    write_text(&dir.join("text.txt"));
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    let origin = dir.join("q.toml");
    let config = |flags: &str, workload: &str| {
        format!("model_path = \"m.gguf\"\nflags = \"{flags}\"\n[[workload]]\nname = \"kld\"\n{workload}\n")
    };
    let load = |text: &str| Config::from_toml_str(text, &origin);

    // Relative paths resolve against the configuration's directory, whatever the working
    // directory; the context's own n_ctx does not limit the chunks.
    let c = load(&config(
        "-c 32 -b 64",
        "quality = { text = \"text.txt\", n_ctx = 64, chunks = 2, base = \"b/base.kld\" }",
    ))
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let q = c.workloads()[0].quality.clone().unwrap();
    assert_eq!((q.text, q.base), (dir.join("text.txt"), dir.join("b/base.kld")));
    assert_eq!((q.n_ctx, q.chunks, q.compact_top_k), (64, Some(2), None));
    // The table form, the defaults (n_ctx 512, all chunks), an absolute path.
    let text = dir.join("text.txt");
    let c = load(&format!(
        "model_path = \"m.gguf\"\n[[workload]]\nname = \"kld\"\n[workload.quality]\ntext = \"{}\"\nbase = \"base.kld\"\n",
        text.display()
    ))
    .unwrap();
    let q = c.workloads()[0].quality.clone().unwrap();
    assert_eq!((q.text, q.n_ctx, q.chunks), (text, 512, None));
    assert_eq!((c.workloads()[0].n_prompt, c.workloads()[0].n_gen), (0, 0));

    let ok_flags = "-b 64";
    let table = |extra: &str| format!("quality = {{ text = \"text.txt\", base = \"base.kld\", n_ctx = 64{extra} }}");
    let cases: Vec<(String, String, WorkloadProblem, &str)> = vec![
        (ok_flags.into(), format!("n_gen = 8\n{}", table("")), WorkloadProblem::QualityWithSpeed, "quality only"),
        (
            ok_flags.into(),
            "quality = { text = \"text.txt\", base = \"base.kld\", n_ctx = 0 }".into(),
            WorkloadProblem::QualityNCtx(0),
            "n_ctx 0 must be even and at least 4",
        ),
        (
            ok_flags.into(),
            "quality = { text = \"text.txt\", base = \"base.kld\", n_ctx = 63 }".into(),
            WorkloadProblem::QualityNCtx(63),
            "n_ctx 63",
        ),
        (ok_flags.into(), table(", chunks = 0"), WorkloadProblem::QualityNoChunks, "chunks must be at least 1"),
        (ok_flags.into(), table(", compact_top_k = 0"), WorkloadProblem::QualityTopK, "compact_top_k"),
        (
            ok_flags.into(),
            "quality = { text = \"missing.txt\", base = \"base.kld\", n_ctx = 64 }".into(),
            WorkloadProblem::QualityText { path: dir.join("missing.txt"), reason: "does not exist" },
            "missing.txt: does not exist",
        ),
        (
            ok_flags.into(),
            "quality = { text = \"\", base = \"base.kld\", n_ctx = 64 }".into(),
            WorkloadProblem::QualityText { path: PathBuf::new(), reason: "the path is empty" },
            "the path is empty",
        ),
        (
            ok_flags.into(),
            "quality = { text = \"text.txt\", base = \"a-directory\", n_ctx = 64 }".into(),
            WorkloadProblem::QualityBase { path: dir.join("a-directory"), reason: "is a directory" },
            "a-directory: is a directory",
        ),
        (
            "-b 100".into(),
            table(""),
            WorkloadProblem::QualityBatch { n_batch: 100, n_ctx: 64 },
            "n_batch 100 is neither smaller than the quality n_ctx 64 nor a multiple of it",
        ),
    ];
    for (flags, workload, expected, needle) in cases {
        let text = config(&flags, &workload);
        match load(&text) {
            Err(e @ Error::ConfigWorkload { .. }) => {
                let msg = chain(&e);
                assert!(msg.contains("q.toml") && msg.contains("`kld`") && msg.contains(needle), "{msg}");
                assert_eq!(e.config_path(), Some(origin.as_path()));
                let Error::ConfigWorkload { problem, .. } = e else { unreachable!() };
                assert_eq!(problem, expected, "{text}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // The table refuses unknown keys and needs its text and base.
    for (workload, needle) in [
        ("quality = { text = \"text.txt\", base = \"b\", n_ctxx = 64 }", "n_ctxx"),
        ("quality = { base = \"b\" }", "missing field `text`"),
        ("quality = { text = \"text.txt\" }", "missing field `base`"),
    ] {
        let e = load(&config(ok_flags, workload)).unwrap_err();
        assert!(matches!(e, Error::ConfigSyntax { .. }), "{e:?}");
        assert!(chain(&e).contains(needle), "{}", chain(&e));
    }
}

/// A configuration with a speed and a quality workload on a generated model, benched twice:
/// the first run writes the base (PPL only), the second measures KLD ≈ 0 against it; the
/// compare table has the speed columns and the quality columns with a verdict; a base of other
/// chunks or another format is refused.
fn a_quality_workload_writes_its_base_then_measures_against_it() {
    let dir = out_dir("base-then-kld");
    let model = tiny_gguf::cached(&tiny_gguf::ModelSpec::tiny_llama(), &dir.join("models")).unwrap();
    write_text(&dir.join("text.txt"));
    let write_config = |name: &str, quality_extra: &str| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "model_path = \"{}\"\nflags = \"-t 2 -c 256 -b 64 -ub 64\"\n\
                 [[workload]]\nname = \"tiny\"\nn_prompt = 16\nn_gen = 8\nrepetitions = 2\n\
                 [[workload]]\nname = \"kld\"\n\
                 quality = {{ text = \"text.txt\", n_ctx = 64, base = \"bases/base.kld\"{quality_extra} }}\n",
                model.display()
            ),
        )
        .unwrap();
        path
    };
    let config = write_config("tiny-quality", ", chunks = 3");
    // From another directory: the paths resolve against the configuration's.
    let bench = |config: &Path, record: &Path| {
        exe()
            .current_dir(workspace())
            .args(["bench", "--config"])
            .arg(config)
            .arg("--record")
            .arg(record)
            .output()
            .unwrap()
    };
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    stdout(&bench(&config, &a));
    let base = dir.join("bases/base.kld");
    assert!(base.is_file(), "the first run writes the base");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("bases")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    let table = stdout(&bench(&config, &b));
    assert!(table.contains("kld PPL") && table.contains("kld mean KLD"), "{table}");

    let (ra, rb) = (Record::read_json(&a).unwrap(), Record::read_json(&b).unwrap());
    let quality = |r: &Record| {
        let w = r.workloads.iter().find(|w| w.workload.name == "kld").unwrap();
        assert!(w.pp.is_none() && w.tg.is_none(), "a quality workload measures no speed");
        w.quality.clone().unwrap()
    };
    let speed = ra.workloads.iter().find(|w| w.workload.name == "tiny").unwrap();
    assert!(speed.quality.is_none() && speed.tg.is_some());
    let (qa, qb) = (quality(&ra), quality(&rb));
    assert!(qa.base_written && qa.kld.is_none(), "{qa:?}");
    assert!(!qb.base_written, "{qb:?}");
    assert_eq!(qa.base, std::fs::canonicalize(&base).unwrap());
    assert_eq!(qa.base, qb.base);
    assert_eq!((qa.n_ctx, qa.n_chunk, qa.n_scored, qa.base_format.as_str()), (64, 3, 3 * 31, "full"));
    assert!(qa.ppl > 1.0 && qa.ppl_uncertainty.is_some(), "{qa:?}");
    // The base pass's PPL comes from the base file's f32 log-sum, the KLD pass's from the logits.
    assert!((qa.ppl - qb.ppl).abs() < 1e-3 * qa.ppl, "{} {}", qa.ppl, qb.ppl);
    let k = qb.kld.clone().unwrap();
    assert!(k.mean.value.abs() < 1e-5 && k.max < 1e-3, "the same configuration: KLD ≈ 0: {k:?}");
    assert_eq!(k.same_top.value, 1.0);
    assert!((k.ppl_base.value - qa.ppl).abs() < 1e-3 * qa.ppl);

    // compare: speed columns and verdicts as before, quality columns with the verdict "same";
    // the exit status does not depend on verdicts.
    let table = stdout(&exe().arg("compare").arg(&a).arg(&b).output().unwrap());
    for needle in ["tiny pp t/s", "tiny tg t/s", "kld PPL", "kld mean KLD", "kld same top", "0 (base)", "100 % (base)"]
    {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| tiny-quality")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[1].contains(" same |") && rows[1].contains("100.00 ± 0.00 %"), "{}", rows[1]);
    assert!(table.contains("worse/better when it exceeds both its uncertainty"), "{table}");
    // The other way round: the record that wrote the base is the candidate.
    let table = stdout(&exe().args(["compare", "--min-kld", "0"]).arg(&b).arg(&a).output().unwrap());
    assert!(table.contains("and 0. A row that wrote"), "{table}");

    // A base of 3 chunks for a workload of 2; a full base for a compact workload.
    for (name, extra, needle) in [
        ("two-chunks", ", chunks = 2", "holds 3 chunks, the workload scores 2"),
        ("compact", ", chunks = 3, compact_top_k = 8", "is full, the workload asks for compact-top-8"),
    ] {
        let out = bench(&write_config(name, extra), &dir.join(format!("{name}.json")));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle) && err.contains("delete"), "{err}");
    }
    // The Pareto view needs a speed and a quality workload; here they are there.
    let svg = dir.join("pareto.svg");
    let out = exe().arg("compare").arg(&a).arg(&b).arg("--pareto").arg(&svg).output().unwrap();
    stdout(&out);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("tiny-quality") && plot.trim_end().ends_with("</svg>"));
    let out = exe().arg("compare").arg(&a).arg(&b).args(["--pareto-quality", "tiny", "--pareto"]).arg(&svg).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`tiny` is not a quality workload"));
}

/// Records written before quality workloads existed (no `quality` fields) still read, and a
/// speed-only record is written without them.
fn records_without_quality_results_still_read() {
    let path = workspace().join("docs/gpu-record/bench-gpu.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("\"quality\""), "the record predates quality workloads");
    let r = Record::read_json(&path).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(!r.workloads.is_empty());
    assert!(r.workloads.iter().all(|w| w.quality.is_none() && w.workload.quality.is_none()));
    let again = serde_json::to_string(&r).unwrap();
    assert!(!again.contains("\"quality\""), "speed-only records are written as before");
}

/// The real model: three configurations (f16 K/V, the same again, q4_0 K/V), each with a speed
/// and a quality workload sharing one base, swept: the first writes the base, the second
/// measures KLD ≈ 0 against it, the third KLD > 0; the sweep's table shows tokens/s and
/// PPL/KLD/same top side by side with the verdicts "same" and "worse"; the Pareto plot has
/// every record.
fn a_sweep_shows_speed_and_quality_side_by_side(model: &Path) {
    let dir = out_dir("real-sweep");
    let text = workspace().join("README.md");
    let configs: Vec<PathBuf> = [("a-f16", ""), ("b-f16", ""), ("c-q4_0", " -ctk q4_0 -ctv q4_0")]
        .iter()
        .map(|(name, kv)| {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!(
                    "model_path = \"{}\"\nflags = \"-t 2 -c 256 -b 128 -ub 128 -fa on{kv}\"\n\
                     [[workload]]\nname = \"gen\"\nn_prompt = 32\nn_gen = 16\nrepetitions = 2\n\
                     [[workload]]\nname = \"kld\"\n\
                     quality = {{ text = \"{}\", n_ctx = 128, chunks = 2, base = \"base-f16.kld\" }}\n",
                    model.display(),
                    text.display()
                ),
            )
            .unwrap();
            path
        })
        .collect();
    let records = dir.join("records");
    let svg = dir.join("pareto.svg");
    let out = exe().arg("sweep").args(&configs).arg("--out").arg(&records).arg("--pareto").arg(&svg).output().unwrap();
    let table = stdout(&out);
    eprintln!("{table}");
    for needle in ["gen pp t/s", "gen tg t/s", "kld PPL", "kld mean KLD", "kld same top", "0 (base)"] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    let row = |name: &str| {
        table.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap_or_else(|| panic!("{name}: {table}"))
    };
    assert!(row("b-f16").contains(" same |"), "{}", row("b-f16"));
    assert!(row("c-q4_0").contains(" worse |"), "{}", row("c-q4_0"));
    for r in ["b-f16", "c-q4_0"] {
        assert!(row(r).contains("within noise") || row(r).contains("faster") || row(r).contains("slower"));
    }

    let mut files: Vec<PathBuf> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let quality: Vec<_> = files
        .iter()
        .map(|f| {
            let r = Record::read_json(f).unwrap();
            let w = r.workloads.iter().find(|w| w.workload.name == "kld").unwrap();
            (r.config.clone(), w.quality.clone().unwrap())
        })
        .collect();
    let names: Vec<&str> = quality.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a-f16", "b-f16", "c-q4_0"]);
    assert!(quality[0].1.base_written && quality[0].1.kld.is_none());
    let same = quality[1].1.kld.clone().unwrap();
    let q4 = quality[2].1.kld.clone().unwrap();
    assert!(same.mean.value.abs() < 1e-4 && same.same_top.value > 0.99, "{same:?}");
    assert!(q4.mean.value > 0.01 && q4.mean.value > 5.0 * q4.mean.uncertainty, "{q4:?}");
    assert!(q4.same_top.value < 0.99 && q4.p99 > q4.mean.value, "{q4:?}");

    let plot = std::fs::read_to_string(&svg).unwrap();
    for name in ["a-f16", "b-f16", "c-q4_0", "Pareto front"] {
        assert!(plot.contains(name), "{name} missing from the plot");
    }
    // The full base of the real model's vocabulary takes 66 MB.
    std::fs::remove_file(dir.join("base-f16.kld")).unwrap();
}
