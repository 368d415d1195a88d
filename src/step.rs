//! One step of `git bisect run` over llama.cpp (`llama-runner bisect-step`, which
//! `scripts/bisect-step.sh` runs): checks its arguments, finds the llama.cpp tree and its
//! commit, builds this workspace against the tree, benches one workload of a configuration with
//! the command just built, and judges the record ([`crate::bisect::judge`]).
//!
//! The step prints exactly one line on stdout and exits as `git bisect run` reads it:
//! [`GOOD`](crate::bisect::GOOD), [`BAD`](crate::bisect::BAD), [`SKIP`] (the tree does not
//! build, or the bench fails: the model does not load) or [`MISUSE`] (the step itself is misused,
//! which aborts the bisection).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::bisect::{Criterion, Metric, Statistic};
use crate::record::Record;

/// Exit status of a step whose commit cannot be judged (`git bisect skip`).
pub const SKIP: u8 = 125;
/// Exit status of a misused step: `git bisect run` stops the bisection.
pub const MISUSE: u8 = 128;

/// The arguments of a step (the options of `scripts/bisect-step.sh`).
#[derive(Debug, clap::Parser)]
#[command(
    name = "bisect-step",
    no_binary_name = true,
    about = "One step of `git bisect run` over llama.cpp: build this workspace against the tree, \
             bench one workload, judge its speed. Exit 0 good, 1 bad, 125 skip, 128 misuse.",
    group(clap::ArgGroup::new("criterion").args(["baseline", "min_tg", "min_pp", "measure_only"]))
)]
pub struct StepArgs {
    /// The configuration (relative to the workspace root).
    #[arg(long, required = true)]
    pub config: Option<PathBuf>,
    /// The workload of the configuration to measure and judge.
    #[arg(long, required = true)]
    pub workload: Option<String>,
    /// Bad if below this record's speed × (1 − margin).
    #[arg(long, value_name = "RECORD")]
    pub baseline: Option<PathBuf>,
    /// Allowed relative slowdown against the baseline.
    #[arg(long, default_value_t = 0.1, requires = "baseline")]
    pub margin: f64,
    /// Bad if generation is below this many tokens/s.
    #[arg(long, value_name = "TPS")]
    pub min_tg: Option<f64>,
    /// Bad if prompt processing is below this many tokens/s.
    #[arg(long, value_name = "TPS")]
    pub min_pp: Option<f64>,
    /// The speed judged against a baseline: tg or pp.
    #[arg(long, conflicts_with_all = ["min_tg", "min_pp"])]
    pub metric: Option<Metric>,
    /// No verdict (e.g. with --keep-record, to make the baseline at the good commit).
    #[arg(long)]
    pub measure_only: bool,
    /// Statistic of the repetitions compared: mean, median or best (best resists interference
    /// from other work on the machine).
    #[arg(long, default_value = "mean")]
    pub stat: Statistic,
    /// Override the workload's repetitions.
    #[arg(long)]
    pub repetitions: Option<u32>,
    /// Copy the step's record there.
    #[arg(long, value_name = "FILE")]
    pub keep_record: Option<PathBuf>,
    /// Extra cargo features (e.g. llama-runner/cuda); repeatable.
    #[arg(long, value_name = "LIST")]
    pub features: Vec<String>,
    /// Use the checked-in bindings (only the pinned headers match them).
    #[arg(long)]
    pub no_bindgen: bool,
    /// Cargo target dir, never the main build's (default $LLAMA_BISECT_TARGET_DIR, else
    /// target/bisect).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Build and bench output (default `<target dir>/bisect-step.log`).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The llama.cpp tree (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub tree: Option<PathBuf>,
    /// The workspace root, which relative paths (config, baseline, keep-record, log, target
    /// dir) are relative to, so that nothing is ever written into the llama.cpp tree.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// How a step ended: its one line and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The line printed on stdout.
    pub line: String,
    /// The exit status.
    pub code: u8,
}

impl Outcome {
    fn misuse(reason: impl std::fmt::Display) -> Outcome {
        Outcome { line: format!("bisect-step: error: {reason}"), code: MISUSE }
    }
}

/// Parses a step's arguments. `Err` is the outcome of a mistake (exit [`MISUSE`], one line), or
/// of `--help` (printed on stderr, exit 0, no line).
pub fn parse(args: &[String]) -> Result<StepArgs, Outcome> {
    use clap::Parser as _;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    StepArgs::try_parse_from(args).map_err(|e| {
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            eprint!("{}", e.render());
            return Outcome { line: String::new(), code: 0 };
        }
        // The option named in the error, without its value name: `--config <CONFIG>` → `--config`.
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s.split(' ').next().unwrap_or_default().to_string(),
            Some(ContextValue::Strings(v)) => v.first().and_then(|s| s.split(' ').next()).unwrap_or_default().into(),
            _ => String::new(),
        };
        let value_given = matches!(e.get(ContextKind::InvalidValue), Some(ContextValue::String(v)) if !v.is_empty());
        Outcome::misuse(match e.kind() {
            ErrorKind::MissingRequiredArgument if arg == "--baseline" => format!("{} needs --baseline", "--margin"),
            ErrorKind::MissingRequiredArgument => format!("{arg} is required"),
            ErrorKind::InvalidValue if !value_given => format!("{arg} needs a value"),
            ErrorKind::UnknownArgument => format!("unknown argument: {arg}"),
            _ => e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string(),
        })
    })
}

/// The llama.cpp tree of a step and the names it goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The tree's directory (canonical).
    pub dir: PathBuf,
    /// Whether `dir` is the top of a git work tree (its HEAD is the commit bisected).
    pub is_git: bool,
    /// Short name: the git HEAD (12 digits), else the provisioning marker's commit, else the
    /// directory's name. The record of the step is named after it.
    pub name: String,
    /// The step's name in its line: the git HEAD plus the upstream commit of the marker
    /// (snapshot history), or `llama.cpp <name>`.
    pub label: String,
}

/// Finds the llama.cpp tree in `dir`: it has `include/llama.h` and `CMakeLists.txt`. Its commit
/// comes from the tree itself (git, or the `commit=` line of its `.llama-cpp-source` marker),
/// never from the caller.
pub fn detect_tree(dir: &Path) -> Result<Tree, String> {
    if !dir.is_dir() {
        return Err(format!("no directory {}", dir.display()));
    }
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    if !(dir.join("include/llama.h").is_file() && dir.join("CMakeLists.txt").is_file()) {
        return Err(format!("{} is not a llama.cpp tree", dir.display()));
    }
    let marker = std::fs::read_to_string(dir.join(".llama-cpp-source"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("commit=")).map(|c| c.trim().to_string()))
        .filter(|c| !c.is_empty());
    let short = |c: &str| c.chars().take(12).collect::<String>();
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(&dir).args(args).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).and_then(|t| Path::new(&t).canonicalize().ok());
    if top.as_deref() == Some(dir.as_path())
        && let Some(head) = git(&["rev-parse", "--short=12", "HEAD"])
    {
        let label = match &marker {
            Some(m) => format!("{head} (llama.cpp {})", short(m)),
            None => head.clone(),
        };
        return Ok(Tree { dir, is_git: true, name: head, label });
    }
    let name = marker.as_deref().map(short).unwrap_or_else(|| {
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "llama.cpp".into())
    });
    Ok(Tree { label: format!("llama.cpp {name}"), dir, is_git: false, name })
}

/// The criterion of a judgement from the options of `judge` and `bisect-step`: a floor
/// (`min_tg`, `min_pp`), a baseline record with a margin, or none (measure only).
pub fn criterion(
    min_tg: Option<f64>,
    min_pp: Option<f64>,
    baseline: Option<&Path>,
    margin: f64,
    metric: Option<Metric>,
) -> crate::Result<Criterion> {
    Ok(if let Some(min_tps) = min_tg {
        Criterion::AtLeast { metric: Metric::Generation, min_tps }
    } else if let Some(min_tps) = min_pp {
        Criterion::AtLeast { metric: Metric::Prompt, min_tps }
    } else if let Some(path) = baseline {
        let baseline = Box::new(Record::read_json(path)?);
        Criterion::Baseline { metric: metric.unwrap_or(Metric::Generation), baseline, margin }
    } else {
        Criterion::MeasureOnly { metric: metric.unwrap_or(Metric::Generation) }
    })
}

/// Runs a step: arguments checked, tree found, build, bench, verdict. `cwd` is where the step
/// was started (the default tree); `default_workspace` the workspace when `--workspace` is not
/// given.
pub fn run(args: StepArgs, cwd: &Path, default_workspace: &Path) -> Outcome {
    match run_checked(args, cwd, default_workspace) {
        Ok(o) | Err(o) => o,
    }
}

fn run_checked(args: StepArgs, cwd: &Path, default_workspace: &Path) -> Result<Outcome, Outcome> {
    let root = args.workspace.clone().unwrap_or_else(|| default_workspace.to_path_buf());
    let root = root.canonicalize().map_err(|e| Outcome::misuse(format!("workspace {}: {e}", root.display())))?;
    let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    let config = abs(args.config.as_deref().unwrap_or(Path::new("")));
    let workload = args.workload.clone().unwrap_or_default();
    if !config.is_file() {
        return Err(Outcome::misuse(format!("no configuration {}", config.display())));
    }
    let baseline = args.baseline.as_deref().map(abs);
    if !args.measure_only && baseline.is_none() && args.min_tg.is_none() && args.min_pp.is_none() {
        return Err(Outcome::misuse(
            "name a criterion: --baseline RECORD, --min-tg TPS or --min-pp TPS (or --measure-only)",
        ));
    }
    if let Some(b) = baseline.as_deref().filter(|b| !b.is_file()) {
        return Err(Outcome::misuse(format!("no baseline record {}", b.display())));
    }
    let tree = detect_tree(&args.tree.as_deref().map_or_else(|| cwd.to_path_buf(), |t| cwd.join(t)))
        .map_err(Outcome::misuse)?;
    let target = abs(&args.target_dir.clone().unwrap_or_else(|| {
        std::env::var_os("LLAMA_BISECT_TARGET_DIR").map_or_else(|| PathBuf::from("target/bisect"), PathBuf::from)
    }));
    let log_path = abs(&args.log.clone().unwrap_or_else(|| target.join("bisect-step.log")));
    let keep = args.keep_record.as_deref().map(abs);
    for d in [Some(target.as_path()), log_path.parent()].into_iter().flatten() {
        std::fs::create_dir_all(d).map_err(|e| Outcome::misuse(format!("{}: {e}", d.display())))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Outcome::misuse(format!("{}: {e}", log_path.display())))?;
    let log_io = |e: std::io::Error| Outcome::misuse(format!("{}: {e}", log_path.display()));

    // Build noise goes to the log; each step starts with a header there.
    writeln!(log, "\n=== {} step {} in {}", crate::record::now_rfc3339(), tree.label, tree.dir.display())
        .map_err(log_io)?;
    if tree.is_git {
        let _ = Command::new("git")
            .arg("-C")
            .arg(&tree.dir)
            .args(["log", "-1", "--format=    %H %s"])
            .stdout(log.try_clone().map_err(log_io)?)
            .stderr(Stdio::null())
            .status();
    }

    let mut features: Vec<&str> = Vec::new();
    if !args.no_bindgen {
        features.push("llama-runner/bindgen");
    }
    features.extend(args.features.iter().flat_map(|f| f.split(',')).filter(|f| !f.is_empty()));
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.current_dir(&root).args(["build", "--release", "-p", "llama-workbench", "--bin", "llama-runner"]);
    if !features.is_empty() {
        build.arg("--features").arg(features.join(","));
    }
    build
        .env("LLAMA_CPP_DIR", &tree.dir)
        .env("CARGO_TARGET_DIR", &target)
        // A step needs no llama.cpp common library (a third of the build; older trees' common/
        // wants libcurl): the environment beats the workspace's .cargo/config.toml.
        .env("LLAMA_SYS_BUILD_COMMON", "OFF")
        // The commit must come from the tree itself (git or its marker), never from the caller.
        .env_remove("LLAMA_SYS_BUILD_COMMIT")
        .env_remove("LLAMA_SYS_BUILD_NUMBER");
    // Every step changes llama-sys (the commit is a constant in it), so llama-runner and the
    // command recompile each time: incremental compilation makes that about 4 s instead of 30 s
    // (the Rust code is not what is measured; the C++ is always built by CMake in Release).
    if std::env::var_os("CARGO_PROFILE_RELEASE_INCREMENTAL").is_none() {
        build.env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true");
    }
    let t0 = Instant::now();
    let built = build
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(log_io)?)
        .stderr(log.try_clone().map_err(log_io)?)
        .status()
        .is_ok_and(|s| s.success());
    let t_build = t0.elapsed().as_secs();
    if !built {
        return Ok(Outcome {
            line: format!("{}: skip (does not build; see {}) [build {t_build} s]", tree.label, log_path.display()),
            code: SKIP,
        });
    }
    let bin = target.join("release/llama-runner");

    let records = target.join("bisect-records");
    std::fs::create_dir_all(&records).map_err(|e| Outcome::misuse(format!("{}: {e}", records.display())))?;
    let record = records.join(format!("{}.json", tree.name));
    let _ = std::fs::remove_file(&record);
    let log_len = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let t1 = Instant::now();
    let mut bench = Command::new(&bin);
    bench.current_dir(&root).arg("bench").arg("--config").arg(&config).arg("--workload").arg(&workload);
    bench.arg("--record").arg(&record);
    if let Some(r) = args.repetitions {
        bench.arg("--repetitions").arg(r.to_string());
    }
    // A crash (abort, segfault) ends the child; nothing of it reaches the terminal.
    let benched = bench
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(log_io)?)
        .stderr(log.try_clone().map_err(log_io)?)
        .status()
        .is_ok_and(|s| s.success());
    let t_bench = t1.elapsed().as_secs();
    if !benched || !record.is_file() {
        // The bench's last `error:` line, from what it wrote to the log.
        let written = std::fs::read(&log_path).unwrap_or_default();
        let tail = String::from_utf8_lossy(written.get(log_len as usize..).unwrap_or_default()).into_owned();
        let reason = tail.lines().filter_map(|l| l.strip_prefix("error: ")).next_back().map(|r| format!(": {r}"));
        return Ok(Outcome {
            line: format!(
                "{}: skip (bench failed{}; see {}) [build {t_build} s, bench {t_bench} s]",
                tree.label,
                reason.unwrap_or_default(),
                log_path.display()
            ),
            code: SKIP,
        });
    }
    if let Some(keep) = &keep {
        let copied = keep.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::copy(&record, keep));
        copied.map_err(|e| Outcome::misuse(format!("{}: {e}", keep.display())))?;
    }

    let judged = Record::read_json(&record)
        .and_then(|r| {
            let c = criterion(args.min_tg, args.min_pp, baseline.as_deref(), args.margin, args.metric)?;
            crate::bisect::judge(&r, Some(&workload), args.stat, &c, Some(&tree.label))
        })
        .map_err(|e| {
            let _ = writeln!(log, "error: judge: {e}");
            Outcome::misuse(format!("judge failed: {e}"))
        })?;
    Ok(Outcome { line: format!("{judged} [build {t_build} s, bench {t_bench} s]"), code: judged.verdict.exit_code() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mistakes_are_one_line_and_misuse() {
        for (a, needle) in [
            (&[][..], "--config is required"),
            (&["--config", "c.toml"][..], "--workload is required"),
            (&["--config", "c", "--workload", "w", "--min-tg"][..], "--min-tg needs a value"),
            (&["--config", "c", "--workload", "w", "--bogus"][..], "unknown argument: --bogus"),
            (&["--config", "c", "--workload", "w", "--margin", "0.2"][..], "--margin needs --baseline"),
            (&["--config", "c", "--workload", "w", "--min-tg", "1", "--min-pp", "1"][..], "cannot be used with"),
            (&["--config", "c", "--workload", "w", "--min-tg", "x"][..], "invalid value 'x'"),
        ] {
            let o = parse(&args(a)).unwrap_err();
            assert_eq!(o.code, MISUSE, "{a:?}");
            assert!(o.line.starts_with("bisect-step: error: ") && o.line.contains(needle), "{a:?}: {}", o.line);
            assert_eq!(o.line.lines().count(), 1);
        }
        let ok = parse(&args(&["--config", "c", "--workload", "w", "--features", "a", "--features", "b,c"])).unwrap();
        assert_eq!(ok.features, ["a", "b,c"]);
        assert_eq!(ok.stat, Statistic::Mean);
    }

    #[test]
    fn a_tree_is_named_by_its_marker_or_directory() {
        let dir = std::env::temp_dir().join(format!("llama-workbench-step-{}", std::process::id()));
        let tree = dir.join("llama.cpp-x");
        std::fs::create_dir_all(tree.join("include")).unwrap();
        assert!(detect_tree(&tree).unwrap_err().ends_with("is not a llama.cpp tree"));
        std::fs::write(tree.join("include/llama.h"), "").unwrap();
        std::fs::write(tree.join("CMakeLists.txt"), "").unwrap();
        let t = detect_tree(&tree).unwrap();
        if !t.is_git {
            assert_eq!((t.name.as_str(), t.label.as_str()), ("llama.cpp-x", "llama.cpp llama.cpp-x"));
        }
        std::fs::write(tree.join(".llama-cpp-source"), "origin=crates.io\ncommit=0123456789abcdef0123\n").unwrap();
        let t = detect_tree(&tree).unwrap();
        if !t.is_git {
            assert_eq!((t.name.as_str(), t.label.as_str()), ("0123456789ab", "llama.cpp 0123456789ab"));
        }
        assert!(detect_tree(&dir.join("none")).unwrap_err().starts_with("no directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
