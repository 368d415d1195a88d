//! `llama-runner`: run, benchmark, compare and sweep llama.cpp configurations in-process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use llama_runner::flags::{self, Dialect};
use llama_runner::{Backend, build_info};
use llama_workbench::bisect::{Metric, Statistic};
use llama_workbench::cli::{BenchPlan, run_plan, unused_record_path, write_new_record, write_record};
use llama_workbench::compare::{Thresholds, markdown_table, markdown_table_with};
use llama_workbench::config::{GeneratedModel, ModelSource};
use llama_workbench::record::Record;

/// Run, benchmark, compare and sweep llama.cpp configurations in-process.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Print llama.cpp's own log (info level; -vv for debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The llama.cpp build and the devices it sees.
    Info,
    /// Parse a llama.cpp flag string: typed options, warnings, and the flags rendered back.
    Flags {
        /// The flags, e.g. "-ot exps=CPU -ctk q8_0 -c 32768".
        #[arg(allow_hyphen_values = true)]
        flags: String,
        /// Print the options as JSON instead of TOML-like debug output.
        #[arg(long)]
        json: bool,
    },
    /// Generation from a prompt with llama.cpp's sampling flags, streamed as it is produced.
    Generate(llama_workbench::generate::GenerateArgs),
    /// Embeddings of input lines (standard input or -f), printed as JSON.
    Embed(llama_workbench::embed::EmbedArgs),
    /// Quantize a model into another file, with llama-quantize's arguments and flags.
    Quantize(llama_workbench::quantize::QuantizeArgs),
    /// Perplexity over a text and KL divergence against a base run, with llama-perplexity's
    /// method, base file format and printout.
    Perplexity(llama_workbench::perplexity::PerplexityArgs),
    /// An interactive chat on standard input with the model's chat template, the history kept
    /// in the KV cache (`/reset`, `/exit`; Ctrl-C stops an answer).
    Chat(llama_workbench::chat::ChatArgs),
    /// Run a configuration's workloads and write a result record.
    Bench(BenchArgs),
    /// Compare result records: markdown table, change against the first, verdicts (speed, and
    /// quality for quality workloads); the exit status does not depend on the verdicts.
    Compare {
        /// Result records (JSON) written by `bench` or `sweep`; the first is the baseline.
        #[arg(required = true, num_args = 2..)]
        records: Vec<PathBuf>,
        #[command(flatten)]
        verdicts: VerdictArgs,
        #[command(flatten)]
        pareto: ParetoArgs,
    },
    /// Judge a record for `git bisect run`: one line, exit 0 (good) or 1 (bad).
    ///
    /// Bad when the workload's speed is below an absolute floor (--min-tg / --min-pp) or below
    /// the baseline's × (1 − margin) (--baseline); without a criterion it only reports.
    Judge(JudgeArgs),
    /// Performance across llama.cpp commits: records of one configuration measured against
    /// several commits, ordered by snapshot date, as a markdown table and an SVG plot.
    History {
        /// Result records (JSON) written by `bench`, or directories holding them.
        #[arg(required = true)]
        records: Vec<PathBuf>,
        /// Snapshot list giving the commits' order and dates (crate version, commit, build
        /// number, date; tab-separated).
        #[arg(long, default_value = "scripts/llama-cpp-snapshots.tsv")]
        snapshots: PathBuf,
        /// Only these workloads (by name; default all).
        #[arg(long = "workload")]
        workloads: Vec<String>,
        /// Write the markdown table here (default: standard output).
        #[arg(long)]
        md: Option<PathBuf>,
        /// Write the SVG plot here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Title of the plot (default: the configuration name).
        #[arg(long)]
        title: Option<String>,
    },
    /// One step of `git bisect run` over llama.cpp (what scripts/bisect-step.sh runs): builds
    /// the workspace against the tree, benches a workload, judges it; one line, exit 0 good,
    /// 1 bad, 125 skip, 128 misuse. `bisect-step --help` lists the options.
    #[command(disable_help_flag = true)]
    BisectStep {
        /// The step's options (parsed by the step, so that mistakes exit 128 with one line).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The llama.cpp snapshot list (scripts/llama-cpp-snapshots.tsv).
    Snapshots {
        /// The list.
        #[arg(long, default_value = "scripts/llama-cpp-snapshots.tsv", global = true)]
        file: PathBuf,
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Peer comparison samples of one runner's output file, as tab-separated lines
    /// (model, runner, test, tokens/s per repetition, round).
    PeerSamples {
        /// The model's label.
        #[arg(long)]
        model: String,
        /// The runner's name.
        #[arg(long)]
        runner: String,
        /// The round of the interleaved runs.
        #[arg(long)]
        round: Option<String>,
        /// What wrote the file: llama-bench JSONL (also llama-runner's, beside its record) or
        /// the llama-cpp-2 peer's JSON lines.
        #[arg(long, value_enum, default_value = "llama-bench")]
        format: llama_workbench::peer::SampleFormat,
        /// The output file.
        file: PathBuf,
    },
    /// The peer comparison table of sample files, pooled: mean ± standard deviation per runner,
    /// llama-runner's ratio to each peer (per-round mean ± standard error).
    PeerTable {
        /// Sample files (tab-separated lines written by `peer-samples`).
        #[arg(required = true)]
        samples: Vec<PathBuf>,
    },
    /// Run several configurations, each in a fresh process, then compare them.
    Sweep {
        /// Configuration files.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
        /// Directory for the records.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Only these workloads (by name).
        #[arg(long = "workload")]
        workloads: Vec<String>,
        /// Override every workload's repetitions.
        #[arg(long)]
        repetitions: Option<u32>,
        #[command(flatten)]
        verdicts: VerdictArgs,
        #[command(flatten)]
        pareto: ParetoArgs,
    },
}

#[derive(Subcommand)]
enum SnapshotsCommand {
    /// Every snapshot commit, oldest first, one a line.
    List {
        /// Whole rows instead: crate version, commit, build number, date (tab-separated).
        #[arg(long)]
        long: bool,
    },
    /// One snapshot, by a unique commit prefix: commit, date and source (tab-separated), or one
    /// of them.
    Show {
        /// A commit or a unique prefix of one.
        commit: String,
        /// Only this field.
        #[arg(long, value_parser = ["commit", "date", "source"])]
        field: Option<String>,
    },
}

/// When the comparison table calls a change faster or slower.
#[derive(clap::Args)]
struct VerdictArgs {
    /// Smallest change in percent called faster or slower. Raise it on a machine whose
    /// run-to-run spread is larger (compare two records of one configuration to see it).
    #[arg(long, default_value_t = 2.0, value_name = "PERCENT", value_parser = parse_percent)]
    min_effect: f64,
    /// Significance level of Welch's t-test on the per-repetition samples.
    #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
    alpha: f64,
    /// Smallest difference of mean KLD called worse or better (quality workloads), besides
    /// exceeding its uncertainty.
    #[arg(long, default_value_t = llama_workbench::compare::MIN_KLD, value_parser = parse_min_kld)]
    min_kld: f64,
}

impl VerdictArgs {
    fn thresholds(&self) -> Thresholds {
        Thresholds { min_effect: self.min_effect / 100.0, alpha: self.alpha, min_kld: self.min_kld }
    }
}

/// The Pareto view: each record's speed against the mean KLD of its quality workload.
#[derive(clap::Args)]
struct ParetoArgs {
    /// Write an SVG plot of tokens/s against mean KLD here, one point per record, the Pareto
    /// front marked.
    #[arg(long, value_name = "SVG")]
    pareto: Option<PathBuf>,
    /// The speed workload of the plot (its tg, or pp when it generates nothing; default: the
    /// first speed workload).
    #[arg(long, value_name = "WORKLOAD", requires = "pareto")]
    pareto_speed: Option<String>,
    /// The quality workload of the plot (default: the first one).
    #[arg(long, value_name = "WORKLOAD", requires = "pareto")]
    pareto_quality: Option<String>,
}

impl ParetoArgs {
    /// Writes the plot of `records` when one was asked for.
    fn write(&self, records: &[Record]) -> Result<()> {
        use llama_workbench::compare;
        let Some(path) = &self.pareto else { return Ok(()) };
        let p = compare::pareto(records, self.pareto_speed.as_deref(), self.pareto_quality.as_deref())?;
        let title = format!("{} tokens/s against mean KLD", p.metric);
        llama_workbench::record::write_atomic(path, compare::pareto_svg(&p, &title).as_bytes())?;
        if !p.left_out.is_empty() {
            eprintln!(
                "pareto: left out {} (no `{}` or `{}`)",
                p.left_out.join(", "),
                p.speed_workload,
                p.quality_workload
            );
        }
        let front: Vec<&str> = p.points.iter().filter(|q| q.on_front).map(|q| q.config.as_str()).collect();
        eprintln!("pareto: {} (front: {})", path.display(), front.join(", "));
        Ok(())
    }
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Configuration file (TOML, or a legacy .env holding llama.cpp flags).
    #[arg(short, long, conflicts_with = "flags")]
    config: Option<PathBuf>,
    /// llama.cpp flags instead of a configuration file.
    #[arg(long, allow_hyphen_values = true)]
    flags: Option<String>,
    /// Model file (overrides the configuration's).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Name for the record (default: the configuration's name).
    #[arg(long)]
    name: Option<String>,
    /// Only these workloads (by name or preset: short, medium, long, multi-turn).
    #[arg(long = "workload")]
    workloads: Vec<String>,
    /// Override every workload's repetitions.
    #[arg(long)]
    repetitions: Option<u32>,
    /// Directory for the record.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Exact path of the record (instead of a timestamped name in --out, which never replaces
    /// a file: records of one name in one second get a -2, -3, ... suffix).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Fail instead of replacing an existing file at --record.
    #[arg(long, requires = "record")]
    no_clobber: bool,
    /// Hash the model file into the record (reads the whole file).
    #[arg(long)]
    hash: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("criterion").args(["min_tg", "min_pp", "baseline"])))]
struct JudgeArgs {
    /// The record to judge (written by `bench`).
    #[arg(long)]
    record: PathBuf,
    /// The workload to judge (needed when the record has several).
    #[arg(long)]
    workload: Option<String>,
    /// Good when generation reaches this many tokens/s.
    #[arg(long, value_name = "TPS")]
    min_tg: Option<f64>,
    /// Good when prompt processing reaches this many tokens/s.
    #[arg(long, value_name = "TPS")]
    min_pp: Option<f64>,
    /// Good when the speed reaches the same workload's in this record × (1 − margin).
    #[arg(long, value_name = "RECORD")]
    baseline: Option<PathBuf>,
    /// Allowed relative slowdown against the baseline.
    #[arg(long, default_value_t = 0.1, requires = "baseline")]
    margin: f64,
    /// The speed judged against a baseline (or reported without criterion): tg or pp.
    #[arg(long, conflicts_with_all = ["min_tg", "min_pp"])]
    metric: Option<Metric>,
    /// How repetitions become one number: mean, median or best.
    #[arg(long, default_value = "mean")]
    stat: Statistic,
    /// Name of the step in the line (default: the record's llama.cpp commit and build number).
    #[arg(long)]
    label: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .filter_module(llama_runner::logging::TARGET, if cli.verbose == 0 { log::LevelFilter::Error } else { level })
        .parse_env("LLAMA_RUNNER_LOG")
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Info => info()?,
        Command::Flags { flags, json } => {
            let parsed = flags::parse(&flags)?;
            for w in &parsed.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&parsed.options)?);
            } else {
                println!("{:#?}", parsed.options);
            }
            println!("llama-server: {}", flags::render(&parsed.options, Dialect::Server));
            let bench = flags::render(&parsed.options, Dialect::Bench);
            println!("llama-bench:  {bench}");
            for o in &bench.omitted {
                println!("  (not expressible in llama-bench: {o})");
            }
        }
        Command::Generate(args) => {
            let options = args.options()?;
            let backend = init_backend(&options.backend)?;
            return Ok(llama_workbench::generate::run(&args, &options, backend)?);
        }
        Command::Embed(args) => {
            let options = args.options()?;
            let backend = init_backend(&options.backend)?;
            llama_workbench::embed::run(&args, &options, backend)?;
        }
        Command::Quantize(args) => {
            let backend = init_backend(&llama_runner::BackendOptions::default())?;
            llama_workbench::quantize::run(&args, backend)?;
        }
        Command::Perplexity(args) => {
            let options = args.options()?;
            let backend = init_backend(&options.backend)?;
            llama_workbench::perplexity::run(&args, &options, backend)?;
        }
        Command::Chat(args) => {
            let options = args.options()?;
            let backend = init_backend(&options.backend)?;
            return Ok(llama_workbench::chat::run(&args, &options, backend)?);
        }
        Command::Bench(args) => bench(args)?,
        Command::Compare { records, verdicts, pareto } => {
            let records = records.iter().map(|p| Record::read_json(p)).collect::<Result<Vec<_>, _>>()?;
            print!("{}", markdown_table_with(&records, &verdicts.thresholds()));
            pareto.write(&records)?;
        }
        Command::Judge(args) => return judge(args),
        Command::History { records, snapshots, workloads, md, svg, title } => {
            history(&records, &snapshots, &workloads, md.as_deref(), svg.as_deref(), title)?
        }
        Command::BisectStep { args } => {
            let outcome = match llama_workbench::step::parse(&args) {
                Ok(step) => {
                    llama_workbench::step::run(step, &std::env::current_dir()?, env!("CARGO_MANIFEST_DIR").as_ref())
                }
                Err(outcome) => outcome,
            };
            if !outcome.line.is_empty() {
                println!("{}", outcome.line);
            }
            return Ok(ExitCode::from(outcome.code));
        }
        Command::Snapshots { file, command } => {
            use llama_workbench::history;
            let snaps = history::read_snapshots(&file)?;
            match command {
                SnapshotsCommand::List { long } => {
                    for s in &snaps {
                        if long {
                            println!("{}\t{}\t{}\t{}", s.source, s.commit, s.build_number, s.date);
                        } else {
                            println!("{}", s.commit);
                        }
                    }
                }
                SnapshotsCommand::Show { commit, field } => {
                    let s = history::resolve_snapshot(&snaps, &commit).with_context(|| file.display().to_string())?;
                    match field.as_deref() {
                        Some("commit") => println!("{}", s.commit),
                        Some("date") => println!("{}", s.date),
                        Some(_) => println!("{}", s.source),
                        None => println!("{}\t{}\t{}", s.commit, s.date, s.source),
                    }
                }
            }
        }
        Command::PeerSamples { model, runner, round, format, file } => {
            let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            let what = file.display().to_string();
            let samples = llama_workbench::peer::samples_from(&text, format, &model, &runner, round.as_deref(), &what)?;
            print!("{}", llama_workbench::peer::to_tsv(&samples));
        }
        Command::PeerTable { samples } => {
            let mut all = Vec::new();
            for f in &samples {
                let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
                all.extend(llama_workbench::peer::parse_tsv(&text, &f.display().to_string())?);
            }
            print!("{}", llama_workbench::peer::table(&all));
        }
        Command::Sweep { configs, out, workloads, repetitions, verdicts, pareto } => {
            return sweep(&configs, &out, &workloads, repetitions, &verdicts.thresholds(), &pareto);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history(
    paths: &[PathBuf],
    snapshots: &std::path::Path,
    workloads: &[String],
    md: Option<&std::path::Path>,
    svg: Option<&std::path::Path>,
    title: Option<String>,
) -> Result<()> {
    use llama_workbench::history;
    let files = history::record_files(paths)?;
    let records = files.iter().map(|p| Record::read_json(p)).collect::<Result<Vec<_>, _>>()?;
    let snaps = if snapshots.is_file() {
        history::read_snapshots(snapshots)?
    } else {
        eprintln!("warning: no snapshot list at {}: commits ordered by build number and time", snapshots.display());
        Vec::new()
    };
    let h = history::build(&records, &snaps, workloads)?;
    let title = title.unwrap_or_else(|| format!("llama.cpp performance history: {}", h.configs.join(", ")));
    let table = format!("## {title}\n\n{}", history::markdown(&h));
    match md {
        Some(p) => {
            llama_workbench::record::write_atomic(p, table.as_bytes())?;
            eprintln!("table: {}", p.display());
        }
        None => print!("{table}"),
    }
    if let Some(p) = svg {
        llama_workbench::record::write_atomic(p, history::svg(&h, &title).as_bytes())?;
        eprintln!("plot: {}", p.display());
    }
    eprintln!("{} records, {} commits, {} workloads", records.len(), h.entries.len(), h.workloads.len());
    Ok(())
}

fn info() -> Result<()> {
    // Refuses libraries of another commit (dynamic-link) before anything else calls into them.
    let backend = Backend::init(&Default::default())?;
    println!("llama.cpp {} (b{}), ggml {}", build_info::COMMIT, build_info::BUILD_NUMBER, build_info::GGML_VERSION);
    println!("  commit from {}, bindings {}", build_info::COMMIT_ORIGIN, build_info::BINDINGS_ORIGIN);
    println!("  library reports commit {}", llama_runner::backend::library_commit());
    println!("  backends compiled: {}; features: {}", build_info::BACKENDS, build_info::FEATURES);
    println!("  C++ profile {}, sources {}", build_info::PROFILE, build_info::SOURCE_DIR);
    for d in backend.devices() {
        println!(
            "device {}: {} ({}), {} / {} MiB free",
            d.name,
            d.description,
            d.kind,
            d.memory_free >> 20,
            d.memory_total >> 20
        );
    }
    println!("{}", llama_runner::backend::system_info());
    Ok(())
}

fn plan(args: &BenchArgs) -> Result<BenchPlan> {
    let (name, config_path, mut options, mut workloads) = if let Some(path) = &args.config {
        let config = llama_workbench::config::Config::load(path)?;
        for w in config.warnings() {
            eprintln!("warning: {}: {w}", path.display());
        }
        let options = match config.model() {
            _ if args.model.is_some() => config.run_options_with_model(args.model.clone()),
            ModelSource::Generated(g) => config.run_options_with_model(generated(*g)?),
            ModelSource::File(_) => config.run_options()?,
        };
        (config.name().to_string(), Some(path.clone()), options, config.workloads())
    } else if let Some(f) = &args.flags {
        let parsed = flags::parse(f)?;
        ("flags".to_string(), None, parsed.options, llama_workbench::config::default_workloads())
    } else {
        bail!("pass --config FILE or --flags \"...\"");
    };
    if let Some(m) = &args.model {
        options.model_path = Some(m.clone());
    }
    if !args.workloads.is_empty() {
        let all = workloads.clone();
        workloads = args
            .workloads
            .iter()
            .map(|n| {
                all.iter()
                    .find(|w| &w.name == n)
                    .cloned()
                    .or_else(|| llama_workbench::config::preset_workload(n))
                    .with_context(|| format!("no workload named `{n}`"))
            })
            .collect::<Result<_>>()?;
    }
    if let Some(r) = args.repetitions {
        for w in &mut workloads {
            w.repetitions = r;
        }
    }
    Ok(BenchPlan { name: args.name.clone().unwrap_or(name), config_path, options, workloads, hash_model: args.hash })
}

/// The file of a generated model preset, generated on first use into
/// `$LLAMA_MODELS_DIR/generated` (or `.cache/models/generated`).
fn generated(g: GeneratedModel) -> Result<PathBuf> {
    let spec = tiny_gguf::ModelSpec::preset(g.name())
        .with_context(|| format!("tiny-gguf has no preset `{g}` (it has {})", tiny_gguf::PRESETS.join(", ")))?;
    let dir = std::env::var_os(llama_workbench::config::MODELS_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(".cache/models"), PathBuf::from)
        .join("generated");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(tiny_gguf::cached(&spec, &dir)?)
}

/// Initialises the backend, writing the configuration's environment knobs first.
fn init_backend(options: &llama_runner::BackendOptions) -> Result<&'static Backend> {
    // SAFETY: the command is single-threaded until the backend starts: argument parsing,
    // env_logger and configuration loading spawn no thread, so nothing reads the environment
    // while it is written (`sweep` sets knobs on its child processes instead).
    Ok(unsafe { Backend::init_setting_env(options) }?)
}

fn bench(args: BenchArgs) -> Result<()> {
    let plan = plan(&args)?;
    init_backend(&plan.options.backend)?;
    let record = run_plan(&plan, |w| eprintln!("{}: workload {w}", plan.name))?;
    let path = match &args.record {
        Some(path) => {
            write_record(path, &record, args.no_clobber)?;
            path.clone()
        }
        None => write_new_record(&args.out, &plan.name, &record)?,
    };
    let jsonl = path.with_extension("jsonl");
    for w in &record.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", markdown_table(std::slice::from_ref(&record)));
    eprintln!("record: {} (llama-bench JSONL: {})", path.display(), jsonl.display());
    Ok(())
}

fn judge(args: JudgeArgs) -> Result<ExitCode> {
    let record = Record::read_json(&args.record)?;
    let criterion =
        llama_workbench::step::criterion(args.min_tg, args.min_pp, args.baseline.as_deref(), args.margin, args.metric)?;
    let j = llama_workbench::bisect::judge(
        &record,
        args.workload.as_deref(),
        args.stat,
        &criterion,
        args.label.as_deref(),
    )?;
    println!("{j}");
    Ok(ExitCode::from(j.verdict.exit_code()))
}

fn sweep(
    configs: &[PathBuf],
    out: &std::path::Path,
    workloads: &[String],
    repetitions: Option<u32>,
    thresholds: &Thresholds,
    pareto: &ParetoArgs,
) -> Result<ExitCode> {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Check every configuration before spending time on the first.
    for c in configs {
        llama_workbench::config::Config::load(c)?;
    }
    // Told to stop, the sweep stops its child (the bench) too, then itself. The handler only
    // stores the signal's number (async-signal-safe); the loop below acts on it.
    let stop = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register_usize(signal, Arc::clone(&stop), signal as usize)?;
    }
    let exe = std::env::current_exe()?;
    let bar = ProgressBar::new(configs.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")?);
    let mut written = Vec::new();
    let mut taken: Vec<PathBuf> = Vec::new();
    let mut failed = 0;
    for (c, name) in configs.iter().zip(sweep_stems(configs)) {
        if stop.load(Ordering::SeqCst) != 0 {
            break;
        }
        bar.set_message(c.display().to_string());
        // A name no file has yet, nor another configuration of this sweep; `--no-clobber` makes
        // the child refuse, rather than replace, a file another process created meanwhile.
        let record = unused_record_path(out, &name, &taken);
        taken.push(record.clone());
        // A fresh process per configuration: environment knobs are read once per process.
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("bench").arg("--config").arg(c).arg("--record").arg(&record).arg("--no-clobber");
        for w in workloads {
            cmd.arg("--workload").arg(w);
        }
        if let Some(r) = repetitions {
            cmd.arg("--repetitions").arg(r.to_string());
        }
        let status = bar.suspend(|| -> Result<_> {
            let mut child = cmd.stdout(std::process::Stdio::null()).spawn()?;
            loop {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                if stop.load(Ordering::SeqCst) != 0 {
                    child.kill()?;
                    return Ok(child.wait()?);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })?;
        if stop.load(Ordering::SeqCst) != 0 {
            break;
        }
        if status.success() && record.is_file() {
            written.push(record);
        } else {
            failed += 1;
            bar.suspend(|| eprintln!("{}: failed ({status})", c.display()));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    for r in &written {
        eprintln!("record: {}", r.display());
    }
    let signal = stop.load(Ordering::SeqCst);
    if signal != 0 {
        eprintln!("sweep stopped by signal {signal}: {} of {} configurations measured", written.len(), configs.len());
        // The shell's convention for a process ended by a signal.
        return Ok(ExitCode::from(128 + signal as u8));
    }
    if written.len() >= 2 {
        let records = written.iter().map(|p| Record::read_json(p)).collect::<Result<Vec<_>, _>>()?;
        print!("{}", markdown_table_with(&records, thresholds));
        pareto.write(&records)?;
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The record name of each configuration of a sweep: its file stem, with `-2`, `-3`, ... where
/// an earlier configuration of the sweep has the same stem (`a/x.toml b/x.toml`, or one file
/// listed twice).
fn sweep_stems(configs: &[PathBuf]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    configs
        .iter()
        .map(|c| {
            let stem = c.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let name = std::iter::once(stem.clone())
                .chain((2..).map(|n| format!("{stem}-{n}")))
                .find(|n| !used.contains(n))
                .expect("an unused name");
            used.insert(name.clone());
            name
        })
        .collect()
}

/// `--min-effect`: a percentage in [0, 100).
fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..100.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not a percentage in [0, 100)")) }
}

/// `--min-kld`: a non-negative number.
fn parse_min_kld(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v >= 0.0 && v.is_finite() { Ok(v) } else { Err(format!("{v} is not a KLD difference (0 or more)")) }
}

/// `--alpha`: a probability in (0, 1).
fn parse_alpha(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v > 0.0 && v < 1.0 { Ok(v) } else { Err(format!("{v} is not a significance level in (0, 1)")) }
}
