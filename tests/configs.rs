//! Configuration files: every file in configs/, the sweep configurations' flags, TOML errors,
//! the legacy `.env` form and workloads.

use std::path::{Path, PathBuf};

use llama_runner::flags::{self, Dialect};
use llama_runner::options::EXPERTS_REGEX;
use llama_runner::{CacheType, GpuLayers, LoadMode, RunOptions, TensorOverride};
use llama_workbench::Error;
use llama_workbench::config::{self, Config, GeneratedModel, ModelSource, WORKLOAD_PRESETS};
use llama_workbench::error::{FlagsFrom, ModelProblem, WorkloadProblem, chain};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn load(name: &str) -> Config {
    let path = configs_dir().join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The options of a configuration in configs/ with models under `/models`.
fn options(name: &str) -> RunOptions {
    load(name).run_options_in(Some(Path::new("/models"))).unwrap()
}

fn toml(text: &str) -> Result<Config, Error> {
    Config::from_toml_str(text, "/etc/sweeps/test.toml")
}

fn ok(text: &str) -> Config {
    toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The message of a configuration that must not load, checked to name the file and `needles`.
#[track_caller]
fn toml_error(text: &str, needles: &[&str]) -> String {
    let e = toml(text).err().unwrap_or_else(|| panic!("loaded:\n{text}"));
    let msg = chain(&e);
    assert_eq!(e.config_path(), Some(Path::new("/etc/sweeps/test.toml")), "{msg}");
    assert!(msg.contains("test.toml"), "does not name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "`{msg}` does not contain `{n}`");
    }
    msg
}

fn env(text: &str) -> Result<Config, Error> {
    Config::from_env_str(text, "/srv/llama/server.env", &[])
}

fn warned(c: &Config, needle: &str) -> bool {
    c.warnings().iter().any(|w| w.contains(needle))
}

// ---------------------------------------------------------------------------------------------
// configs/

#[test]
fn every_file_in_configs_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!c.name().is_empty(), "{}", path.display());
        assert!(!c.workloads().is_empty(), "{}", path.display());
        match c.model() {
            ModelSource::File(p) => {
                let o = c.run_options_in(Some(Path::new("/models"))).unwrap();
                assert_eq!(o.model_path, Some(Path::new("/models").join(p)), "{}", path.display());
            }
            ModelSource::Generated(g) => {
                let e = c.run_options().unwrap_err();
                assert!(matches!(&e, Error::GeneratedModelPath { model, .. } if model == g), "{e}");
                let e = chain(&e);
                assert!(e.contains(g.name()), "{e}");
                assert_eq!(c.run_options_with_model(PathBuf::from("/tmp/m.gguf")).context, c.options().context);
            }
        }
        // What a configuration holds can be written as llama-server flags and read back.
        let o = c.options();
        let line = flags::render(o, Dialect::Server).to_string();
        let mut back = flags::parse(&line).unwrap_or_else(|e| panic!("{}: `{line}`: {e}", path.display())).options;
        back.backend.env = o.backend.env.clone();
        assert_eq!(&back, o, "{}: `{line}`", path.display());
        n += 1;
    }
    assert!(n >= 7, "only {n} files in configs/");
}

#[test]
fn sweep_configurations_render_to_their_flags() {
    let control = options("control.toml");
    assert_eq!(
        flags::render(&control, Dialect::Server).to_string(),
        "-m /models/Qwen3-30B-A3B-Q8_0.gguf -ngl all -ot 'exps=CPU' -lm none -c 32768 -t 16 -ctk q8_0 -ctv q8_0"
    );
    let flags_cfg = options("flags.toml");
    let r = flags::render(&flags_cfg, Dialect::Server);
    assert_eq!(
        r.to_string(),
        "-m /models/Qwen3-30B-A3B-Q8_0.gguf -ngl all -cmoe -lm mlock -c 32768 -t 16 -ctk q8_0 -ctv q8_0 --swa-full"
    );
    assert_eq!(r.omitted, vec!["environment knobs are not flags: set `GGML_CUDA_GRAPH_OPT=1` in the environment"]);
    let udq8 = options("udq8.toml");
    assert_eq!(
        flags::render(&udq8, Dialect::Server).to_string(),
        "-m /models/Qwen3-30B-A3B-UD-Q8_K_XL.gguf -ngl all -cmoe -lm mlock -c 32768 -t 16 -ctk q8_0 -ctv q8_0 --swa-full"
    );

    // What the flags mean.
    assert_eq!(control.model.gpu_layers, GpuLayers::All);
    assert_eq!(control.model.tensor_overrides, vec![TensorOverride::cpu("exps")]);
    assert_eq!(control.model.load_mode, LoadMode::None);
    assert_eq!((control.context.type_k, control.context.type_v), (CacheType::Q8_0, CacheType::Q8_0));
    assert_eq!((control.context.n_threads, control.context.n_ctx), (Some(16), 32768));
    // flags = control with -cmoe instead of -ot, mlock (no mmap and locked), --swa-full, graph opt.
    let mut expected = control.clone();
    expected.model.tensor_overrides.clear();
    expected.model.cpu_moe = true;
    expected.model.load_mode = LoadMode::Mlock;
    expected.context.swa_full = true;
    expected.backend.env.cuda_graph_opt = Some(true);
    assert_eq!(flags_cfg, expected);
    assert_eq!(flags_cfg.model.effective_overrides(), vec![TensorOverride::cpu(EXPERTS_REGEX)]);
    expected.model_path = Some("/models/Qwen3-30B-A3B-UD-Q8_K_XL.gguf".into());
    assert_eq!(udq8, expected);

    for name in ["control.toml", "flags.toml", "udq8.toml"] {
        let c = load(name);
        let names: Vec<_> = c.workloads().iter().map(|w| w.name.clone()).collect();
        assert_eq!(names, WORKLOAD_PRESETS, "{name}");
        // The files spell the load mode out, so they load without a warning.
        assert!(c.warnings().is_empty(), "{name}: {:?}", c.warnings());
    }
}

#[test]
fn legacy_env_form_of_control_is_control() {
    let legacy = load("legacy-control.env");
    let control = load("control.toml");
    assert_eq!(legacy.name(), "legacy-control");
    assert_eq!(
        legacy.run_options_in(Some(Path::new("/models"))).unwrap(),
        control.run_options_in(Some(Path::new("/models"))).unwrap()
    );
    // Both resolve against the configs/ directory without LLAMA_MODELS_DIR.
    assert_eq!(legacy.model_path_in(None), control.model_path_in(None));
    assert_eq!(legacy.model_path_in(None).unwrap(), configs_dir().join("Qwen3-30B-A3B-Q8_0.gguf"));
    assert_eq!(legacy.workloads(), control.workloads());
    // The legacy file uses the deprecated --no-mmap, which is warned about.
    assert!(warned(&legacy, "deprecated alias"), "{:?}", legacy.warnings());
}

#[test]
fn generated_models_on_the_cpu() {
    let tiny = load("cpu-tiny.toml");
    assert_eq!(tiny.model(), &ModelSource::Generated(GeneratedModel::TinyMoe));
    assert_eq!(tiny.options().context.n_threads, Some(2));
    let bench = load("cpu-bench-moe.toml");
    let cmoe = load("cpu-bench-moe-cmoe.toml");
    assert_eq!(bench.model(), &ModelSource::Generated(GeneratedModel::BenchMoe));
    assert_eq!(bench.workloads(), cmoe.workloads());
    let mut expected = bench.options().clone();
    expected.model.cpu_moe = true;
    assert_eq!(cmoe.options(), &expected);
    let turns: Vec<_> = bench.workloads().iter().map(|w| w.turns).collect();
    assert_eq!(turns, [1, 1, 1, 4]);
}

// ---------------------------------------------------------------------------------------------
// TOML

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let base = "model_path = \"m.gguf\"\n";
    for (text, key) in [
        ("nmae = \"x\"\n", "nmae"),
        ("[context]\nn_ctxx = 4096\n", "n_ctxx"),
        ("[model]\ngpu_layer = 3\n", "gpu_layer"),
        ("[context.placement]\ncpumask = \"0xff\"\n", "cpumask"),
        ("[env]\nGGML_CUDA_GRAPH_OTP = true\n", "GGML_CUDA_GRAPH_OTP"),
        ("[backend]\nnuma_mode = \"isolate\"\n", "numa_mode"),
        ("[backend.env]\nGGML_CUDA_GRAPHS = true\n", "GGML_CUDA_GRAPHS"),
        ("[[workload]]\nname = \"w\"\nn_prompt = 1\nn_gen = 1\nreps = 3\n", "reps"),
        ("[[model.tensor_overrides]]\npattern = \"x\"\ntarget = \"CPU\"\nfirst = true\n", "first"),
    ] {
        toml_error(&format!("{base}{text}"), &[key, "unknown field"]);
    }
}

/// Speculative workloads: a built-in text and flags that ask for a drafter, nothing but
/// `n_gen` and `repetitions` besides.
#[test]
fn speculative_workloads_are_checked_at_load() {
    let head = "model_path = \"m.gguf\"\n[[workload]]\nname = \"s\"\n";
    let flags = "--spec-type ngram-simple";
    let c = ok(&format!("{head}n_gen = 32\nspeculative = {{ text = \"quote\", flags = \"{flags}\" }}\n"));
    assert_eq!(c.workloads()[0].speculative.as_ref().unwrap().text, "quote");
    toml_error(
        &format!("{head}n_gen = 32\nspeculative = {{ text = \"poem\", flags = \"{flags}\" }}\n"),
        &["`s`", "poem", "quote, free"],
    );
    toml_error(
        &format!("{head}n_gen = 32\nspeculative = {{ text = \"quote\", flags = \"--temp 0\" }}\n"),
        &["no speculative decoding"],
    );
    toml_error(
        &format!("{head}n_gen = 32\nspeculative = {{ text = \"quote\", flags = \"--spec-type eagle\" }}\n"),
        &["eagle"],
    );
    toml_error(
        &format!("{head}n_gen = 32\nn_prompt = 8\nspeculative = {{ text = \"quote\", flags = \"{flags}\" }}\n"),
        &["built-in prompt"],
    );
    toml_error(&format!("{head}speculative = {{ text = \"quote\", flags = \"{flags}\" }}\n"), &["both 0"]);
    toml_error(&format!("{head}n_gen = 8\nspeculative = {{ text = \"quote\" }}\n"), &["flags"]);
}

#[test]
fn bad_values_are_errors() {
    let base = "model_path = \"m.gguf\"\n";
    for (text, needles) in [
        ("generated = \"bench-moee\"", &["bench-moee", "unknown variant"][..]),
        ("[context]\ntype_k = \"q9_0\"", &["q9_0"]),
        ("[context]\nn_ctx = -1", &["n_ctx"]),
        ("[model]\ngpu_layers = \"most\"", &["gpu_layers", "a number of layers (0 or more), \"auto\" or \"all\""]),
        ("flags = \"-ctk q9_0\"", &["`flags`", "-ctk", "q9_0", "unknown cache type"]),
        ("flags = \"-c 1024 --port\"", &["--port", "missing value"]),
        ("workloads = [\"huge\"]", &["huge", "short, medium, long, multi-turn"]),
        ("[[model.tensor_overrides]]\npattern = \"(\"\ntarget = \"CPU\"", &["std::regex"]),
        ("[[workload]]\nname = \"w\"\nn_prompt = 0\nn_gen = 0", &["`w`", "both 0"]),
        ("[[workload]]\nname = \"w\"\nn_prompt = 1\nn_gen = 1\nturns = 2\nn_depth = 5", &["`w`", "n_depth"]),
        ("[[workload]]\nname = \"w\"\nn_prompt = 1\nn_gen = 1\nrepetitions = 0", &["`w`", "repetitions"]),
        ("[[workload]]\nname = \"short\"\nn_prompt = 1\nn_gen = 1", &["`short`", "preset"]),
        ("workloads = [\"short\", \"short\"]", &["`short`", "twice"]),
        ("context = 5", &["context"]),
    ] {
        toml_error(&format!("{base}{text}\n"), needles);
    }
    toml_error("description = \"no model\"\n", &["no model"]);
    // The typed errors behind those messages.
    let model_problem = |text: &str| match toml(text) {
        Err(Error::ConfigModel { problem, .. }) => problem,
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(model_problem("description = \"no model\"\n"), ModelProblem::Missing);
    assert_eq!(model_problem("generated = \"tiny-moe\"\nmodel_path = \"m.gguf\"\n"), ModelProblem::GivenTwice);
    let workload_problem = |text: &str| match toml(&format!("{base}{text}\n")) {
        Err(Error::ConfigWorkload { workload, problem, .. }) => (workload, problem),
        other => panic!("{text}: {other:?}"),
    };
    let (w, p) = workload_problem("[[workload]]\nname = \"w\"\nn_prompt = 0\nn_gen = 0");
    assert_eq!((w.as_str(), p), ("w", WorkloadProblem::NothingToRun));
    let (w, p) = workload_problem("workloads = [\"huge\"]");
    assert!(w == "huge" && matches!(p, WorkloadProblem::UnknownPreset { .. }), "{w} {p:?}");
    let (w, p) = workload_problem("workloads = [\"short\", \"short\"]");
    assert_eq!((w.as_str(), p), ("short", WorkloadProblem::GivenTwice));
    let (w, p) = workload_problem("flags = \"-c 1024\"\nworkloads = [\"long\"]");
    assert!(w == "long" && matches!(&p, WorkloadProblem::DoesNotFit(m) if m.needed == 2176 && m.cells == 1024));
    assert!(matches!(toml(&format!("{base}nmae = 1\n")), Err(Error::ConfigSyntax { .. })));
    assert!(matches!(
        toml(&format!("{base}flags = \"-ctk q9_0\"\n")),
        Err(Error::ConfigFlags { from: FlagsFrom::Key, source, .. }) if matches!(*source, llama_runner::Error::Flag { .. })
    ));
    assert!(matches!(
        toml(&format!("{base}[[model.tensor_overrides]]\npattern = \"(\"\ntarget = \"CPU\"\n")),
        Err(Error::ConfigOption { source, .. }) if matches!(*source, llama_runner::Error::InvalidOption { .. })
    ));
    toml_error("generated = \"tiny-moe\"\nmodel_path = \"m.gguf\"\n", &["once"]);
    toml_error("generated = \"tiny-moe\"\nflags = \"-m m.gguf\"\n", &["once"]);
    toml_error("model_path = \"m.gguf\"\nflags = \"-c 1\"\n[context]\nn_ctx = \"big\"\n", &["n_ctx"]);
}

#[test]
fn workloads_presets_resolve() {
    let c = ok("model_path = \"m.gguf\"\nworkloads = [\"multi-turn\", \"short\"]\n");
    let w = c.workloads();
    assert_eq!(w.len(), 2);
    assert_eq!((w[0].name.as_str(), w[0].n_prompt, w[0].n_gen, w[0].turns), ("multi-turn", 128, 64, 4));
    assert_eq!((w[1].name.as_str(), w[1].n_prompt, w[1].n_gen, w[1].turns), ("short", 128, 32, 1));
    for name in WORKLOAD_PRESETS {
        let p = config::preset_workload(name).unwrap();
        assert_eq!(p.name, name);
        assert_eq!((p.repetitions, p.n_depth), (5, 0));
    }
    assert_eq!(
        [("medium", 512, 128), ("long", 2048, 128)].map(|(n, p, g)| (n, p, g)),
        ["medium", "long"].map(|n| {
            let w = config::preset_workload(n).unwrap();
            (n, w.n_prompt, w.n_gen)
        })
    );
    // No workloads named: the four presets.
    let names: Vec<_> = ok("model_path = \"m.gguf\"\n").workloads().into_iter().map(|w| w.name).collect();
    assert_eq!(names, WORKLOAD_PRESETS);
    assert_eq!(config::default_workloads().len(), 4);
    // Custom workloads come after the named presets; alone, they replace the default.
    let c = ok("model_path = \"m.gguf\"\nworkloads = [\"short\"]\n[[workload]]\nname = \"deep\"\nn_prompt = 64\n\
                n_gen = 16\nn_depth = 1024\nrepetitions = 2\n");
    let w = c.workloads();
    assert_eq!(w.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["short", "deep"]);
    assert_eq!((w[1].n_depth, w[1].repetitions, w[1].turns), (1024, 2, 1));
    let c = ok("model_path = \"m.gguf\"\n[[workload]]\nname = \"pp\"\nn_prompt = 64\nn_gen = 0\n");
    assert_eq!(c.workloads().len(), 1);
    assert_eq!(c.workloads()[0].repetitions, 5);
}

#[test]
fn a_workload_larger_than_the_context_is_an_error() {
    let msg = toml_error(
        "model_path = \"m.gguf\"\nflags = \"-c 1024\"\nworkloads = [\"short\", \"long\"]\n",
        &["workload `long`", "2176", "n_ctx 1024"],
    );
    assert!(!msg.contains("`short`"), "{msg}");
    toml_error("model_path = \"m.gguf\"\nflags = \"-c 512\"\nworkloads = [\"multi-turn\"]\n", &["`multi-turn`", "768"]);
    // Presets used because none were named are left out when they do not fit, with a warning.
    let c = ok("model_path = \"m.gguf\"\nflags = \"-c 1024\"\n");
    let names: Vec<_> = c.workloads().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["short", "medium", "multi-turn"]);
    assert!(warned(&c, "preset workload `long` left out: needs 2176 KV cells"), "{:?}", c.warnings());
    toml_error("model_path = \"m.gguf\"\nflags = \"-c 100\"\n", &["`short`", "no preset fits"]);
    // Exactly full is fine.
    ok("model_path = \"m.gguf\"\nflags = \"-c 2176\"\nworkloads = [\"long\"]\n");
    // Each of several sequences gets n_ctx / n_seq_max cells, unless the cache is unified.
    toml_error(
        "model_path = \"m.gguf\"\nflags = \"-c 4096 -np 4\"\nworkloads = [\"long\"]\n",
        &["`long`", "1024 per sequence with 4 sequences"],
    );
    ok("model_path = \"m.gguf\"\nflags = \"-c 4096 -np 4 -kvu\"\nworkloads = [\"long\"]\n");
    // n_ctx 0 is the model's context: known for generated models.
    ok("model_path = \"m.gguf\"\n[[workload]]\nname = \"w\"\nn_prompt = 100000\nn_gen = 1\n");
    toml_error("generated = \"tiny-moe\"\nworkloads = [\"long\"]\n", &["`long`", "the model's 2048"]);
    ok("generated = \"bench-moe\"\nworkloads = [\"long\"]\n");
    toml_error("generated = \"bench-moe\"\nflags = \"-c 8192\"\nworkloads = [\"short\"]\n", &["8192", "4096"]);
    // The typed table counts, not only flags.
    toml_error("model_path = \"m.gguf\"\nworkloads = [\"medium\"]\n[context]\nn_ctx = 512\n", &["`medium`"]);
}

#[test]
fn tables_override_flags_key_by_key() {
    let c = ok("model_path = \"m.gguf\"\nflags = \"-c 4096 -t 8 -C 0xff -ot a=CPU\"\n\
                [context]\nn_ctx = 8192\n[context.placement]\npoll = 10\n[model]\ngpu_layers = \"all\"\n\
                [env]\nGGML_CUDA_GRAPH_OPT = true\n[backend]\nnuma = \"isolate\"\n");
    let o = c.options();
    assert_eq!(o.context.n_ctx, 8192);
    assert_eq!(o.context.n_threads, Some(8));
    assert_eq!(o.context.placement.cpu_mask.as_deref(), Some("0xff"));
    assert_eq!(o.context.placement.poll, 10);
    assert_eq!(o.model.gpu_layers, GpuLayers::All);
    assert_eq!(o.model.tensor_overrides, vec![TensorOverride::cpu("a")]);
    assert_eq!(o.backend.env.cuda_graph_opt, Some(true));
    assert_eq!(o.backend.numa, llama_runner::Numa::Isolate);
    assert!(warned(&c, "[context] n_ctx = 8192 replaces 4096 set by `flags`"), "{:?}", c.warnings());
    assert!(!warned(&c, "poll"), "{:?}", c.warnings());
    // An array replaces.
    let c = ok("model_path = \"m.gguf\"\nflags = \"-ot a=CPU\"\n[[model.tensor_overrides]]\npattern = \"b\"\n\
                target = \"CUDA0\"\n");
    assert_eq!(c.options().model.tensor_overrides.len(), 1);
    assert_eq!(c.options().model.tensor_overrides[0].pattern, "b");
    assert!(warned(&c, "tensor_overrides"));
    // model_path wins over -m.
    let c = ok("model_path = \"m.gguf\"\nflags = \"-m other.gguf\"\n");
    assert_eq!(c.model(), &ModelSource::File("m.gguf".into()));
    assert!(warned(&c, "replaces `-m other.gguf`"));
    // Flag warnings are kept, prefixed.
    assert!(warned(&ok("model_path = \"m.gguf\"\nflags = \"--mlock --no-mmap\"\n"), "flags: `--no-mmap` replaces"));
}

#[test]
fn sampling_comes_from_flags_and_its_table() {
    let c = ok("model_path = \"m.gguf\"\nflags = \"-c 4096 --temp 0.5 --top-k 20 -s 7\"\n\
                [sampling]\ntop_k = 5\nsamplers = [\"top_k\", \"temperature\"]\n");
    let s = &c.options().sampling;
    assert_eq!((s.temp, s.top_k, s.seed), (0.5, 5, 7));
    assert_eq!(s.samplers.len(), 2);
    assert!(warned(&c, "[sampling] top_k = 5 replaces 20 set by `flags`"), "{:?}", c.warnings());
    toml_error("model_path = \"m.gguf\"\n[sampling]\ntopk = 5\n", &["line 3", "topk"]);
    toml_error("model_path = \"m.gguf\"\n[sampling]\nsamplers = [\"top_q\"]\n", &["top_q"]);
    toml_error("model_path = \"m.gguf\"\nflags = \"--mirostat 7\"\n", &["--mirostat", "7"]);
    toml_error(
        "model_path = \"m.gguf\"\n[sampling]\nrepeat_penalty_x = 0\npenalty_repeat = 0.0\n",
        &["repeat_penalty_x"],
    );
    toml_error("model_path = \"m.gguf\"\n[sampling]\npenalty_repeat = 0.0\n", &["--repeat-penalty", "greater than 0"]);
    assert!(warned(&c, "bench measures decoding without sampling"), "{:?}", c.warnings());
    // The grammar and its triggers are checked without a model (found by an independent set:
    // bench took all of these in silence).
    toml_error("model_path = \"m.gguf\"\n[sampling.grammar]\ngbnf = \"root ::= foo\"\n", &["foo"]);
    toml_error("model_path = \"m.gguf\"\n[sampling.grammar]\njson_schema = \"{\"\n", &["JSON"]);
    toml_error(
        "model_path = \"m.gguf\"\n[sampling]\ngrammar_lazy = true\ngrammar = { gbnf = \"root ::= \\\"a\\\"\" }\n\
         grammar_triggers = [{ pattern = \"([\" }]\n",
        &["pattern"],
    );
    toml_error(
        "model_path = \"m.gguf\"\n[sampling]\ngrammar = { gbnf = \"root ::= \\\"a\\\"\" }\n\
         grammar_triggers = [{ word = \"x\" }]\n",
        &["grammar_lazy"],
    );
}

#[test]
fn model_paths_resolve() {
    let c = ok("model_path = \"sub/m.gguf\"\n");
    assert_eq!(c.model_path_in(None), Some(PathBuf::from("/etc/sweeps/sub/m.gguf")));
    assert_eq!(c.model_path_in(Some(Path::new("/models"))), Some(PathBuf::from("/models/sub/m.gguf")));
    let c = ok("model_path = \"/abs/m.gguf\"\n");
    assert_eq!(c.model_path_in(Some(Path::new("/models"))), Some(PathBuf::from("/abs/m.gguf")));
    let c = Config::from_toml_str("model_path = \"m.gguf\"\n", "inline").unwrap();
    assert_eq!(c.model_path_in(None), Some(PathBuf::from("./m.gguf")));
    assert_eq!(c.name(), "inline");
    assert_eq!(ok("name = \"x\"\ndescription = \"d\"\nmodel_path = \"m.gguf\"\n").name(), "x");
    assert_eq!(ok("model_path = \"m.gguf\"\n").name(), "test");
}

// ---------------------------------------------------------------------------------------------
// .env

#[test]
fn env_files_are_read_like_a_shell_reads_them() {
    let c = env("# comment\n\nexport MODEL='/m/my model.gguf'\n\
                 LLAMA_ARGS=\"-ot \\\"blk\\\\.0\\\\.=CPU\\\" \\\n  -c 4096\" # trailing comment\n\
                 GGML_CUDA_GRAPH_OPT=1\n")
    .unwrap();
    assert_eq!(c.model(), &ModelSource::File("/m/my model.gguf".into()));
    let o = c.options();
    assert_eq!(o.model.tensor_overrides, vec![TensorOverride::cpu(r"blk\.0\.")]);
    assert_eq!(o.context.n_ctx, 4096);
    assert_eq!(o.backend.env.cuda_graph_opt, Some(true));
    assert_eq!(c.name(), "server");
    assert_eq!(c.workloads(), config::default_workloads());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    // A quoted value over several lines; an unquoted one with spaces, as docker compose reads it.
    let c = env("MODEL=m.gguf\nEXTRA_ARGS='-c 512\n -t 4'\n").unwrap();
    assert_eq!((c.options().context.n_ctx, c.options().context.n_threads), (512, Some(4)));
    let c = env("MODEL=m.gguf\nLLAMA_ARGS=-ot \"exps=CPU\" -c 512\n").unwrap();
    assert_eq!(c.options().model.tensor_overrides, vec![TensorOverride::cpu("exps")]);
    assert!(warned(&c, "taken literally"), "{:?}", c.warnings());
}

#[test]
fn env_variables_mean_what_llama_cpp_and_ggml_make_of_them() {
    let c = env("LLAMA_ARG_MODEL=m.gguf\nLLAMA_ARG_CTX_SIZE=2048\nLLAMA_ARG_NO_MMAP=1\nARGS=-t 3\n\
                 GGML_CUDA_GRAPH_OPT=true\nGGML_CUDA_DISABLE_GRAPHS=0\nGGML_OP_OFFLOAD_MIN_BATCH=64\n\
                 GGML_CUDA_PDL=0\nGGML_CUDA_CUBLAS_COMPUTE_TYPE=f32\nPATH=/usr/bin\nLLAMA_ARG_PORT=8080\n")
    .unwrap();
    let o = c.options();
    assert_eq!(c.model(), &ModelSource::File("m.gguf".into()));
    assert_eq!((o.context.n_ctx, o.context.n_threads, o.model.load_mode), (2048, Some(3), LoadMode::None));
    let k = &o.backend.env;
    assert_eq!(k.cuda_graph_opt, Some(false));
    assert!(warned(&c, "GGML_CUDA_GRAPH_OPT=true means off"), "{:?}", c.warnings());
    assert_eq!(k.cuda_disable_graphs, Some(true));
    assert!(warned(&c, "GGML_CUDA_DISABLE_GRAPHS=0 means on"), "{:?}", c.warnings());
    assert_eq!(k.op_offload_min_batch, Some(64));
    assert_eq!(k.cuda_pdl, Some(false));
    assert_eq!(k.cuda_cublas_compute_type.as_deref(), Some("f32"));
    assert!(warned(&c, "PATH (line 10): not a variable this runner knows"), "{:?}", c.warnings());
    assert!(warned(&c, "`LLAMA_ARG_PORT` only configures llama-server"), "{:?}", c.warnings());
}

#[test]
fn env_flag_variable_rules() {
    let e = chain(&env("MODEL=m.gguf\nLLAMA_ARGS=-c 1\nEXTRA_ARGS=-t 2\n").unwrap_err());
    assert!(e.contains("LLAMA_ARGS, EXTRA_ARGS") && e.contains("server.env"), "{e}");
    let c = Config::from_env_str(
        "MODEL=m.gguf\nLLAMA_ARGS=-c 4096\nEXTRA_ARGS=-t 2\n",
        "x.env",
        &["LLAMA_ARGS", "EXTRA_ARGS"],
    )
    .unwrap();
    assert_eq!((c.options().context.n_ctx, c.options().context.n_threads), (4096, Some(2)));
    let c =
        Config::from_env_str("MODEL=m.gguf\nLLAMA_ARGS=-c 4096\nEXTRA_ARGS=-t 2\n", "x.env", &["LLAMA_ARGS"]).unwrap();
    assert_eq!(c.options().context.n_threads, None);
    assert!(warned(&c, "EXTRA_ARGS (line 3) may hold flags but was not named"), "{:?}", c.warnings());
    let e = chain(&Config::from_env_str("MODEL=m.gguf\n", "x.env", &["ARGS"]).unwrap_err());
    assert!(e.contains("no variable `ARGS`"), "{e}");
    // -m in the flags wins over MODEL.
    let c = env("MODEL=a.gguf\nFLAGS=-m b.gguf\n").unwrap();
    assert_eq!(c.model(), &ModelSource::File("b.gguf".into()));
    assert!(warned(&c, "replaces MODEL=a.gguf"));
    // Errors name the variable, the flag and the file.
    let e = env("MODEL=m.gguf\nLLAMA_ARGS=-ctk q9\n").unwrap_err();
    assert!(
        matches!(&e, Error::ConfigFlags { from: FlagsFrom::Vars(v), source, .. }
            if v == &["LLAMA_ARGS"] && matches!(&**source, llama_runner::Error::Flag { flag, .. } if flag == "-ctk")),
        "{e:?}"
    );
    let e = chain(&e);
    assert!(e.contains("server.env") && e.contains("LLAMA_ARGS") && e.contains("-ctk") && e.contains("q9"), "{e}");
    for (text, needle) in [
        ("LLAMA_ARGS=-c 1\n", "no model"),
        ("MODEL=m.gguf\nnot an assignment\n", "line 2"),
        ("MODEL=m.gguf\nLLAMA_ARGS=\"-c 1\n", "unclosed quote"),
        ("MODEL=m.gguf\n1X=2\n", "not a variable name"),
        ("MODEL=a\nMODEL_PATH=b\n", "several model variables"),
        ("MODEL=m.gguf\nGGML_OP_OFFLOAD_MIN_BATCH=-5\n", "GGML_OP_OFFLOAD_MIN_BATCH"),
        ("MODEL=m.gguf\nLLAMA_ARGS=-c 99\n", "workload `short`"),
    ] {
        let e = env(text).map(|_| ()).unwrap_err();
        assert_eq!(e.config_path(), Some(Path::new("/srv/llama/server.env")), "{text:?}: {e}");
        let e = chain(&e);
        assert!(e.contains(needle) && e.contains("server.env"), "{text:?}: {e}");
    }
    // Set twice: the last value counts.
    let c = env("MODEL=m.gguf\nLLAMA_ARGS=-c 1000\nLLAMA_ARGS=-c 2000\n").unwrap();
    assert_eq!(c.options().context.n_ctx, 2000);
    assert!(warned(&c, "set more than once"));
}

#[test]
fn load_picks_the_form_by_name_or_content() {
    let dir = std::env::temp_dir().join(format!("llama-runner-configs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_text = "MODEL=m.gguf\nLLAMA_ARGS=\"-c 4096\"\n";
    let toml_text = "model_path = \"m.gguf\"\nflags = \"-c 4096\"\n";
    for (name, text) in [
        (".env", env_text),
        ("a.env", env_text),
        (".env.local", env_text),
        ("conf", env_text),
        ("c.toml", toml_text),
        ("conf2", toml_text),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.options().context.n_ctx, 4096, "{name}");
        assert_eq!(c.model_path_in(None), Some(dir.join("m.gguf")), "{name}");
    }
    assert_eq!(Config::load(dir.join(".env.local")).unwrap().name(), "local");
    let missing = Config::load(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(&missing, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{missing}");
    let missing = chain(&missing);
    assert!(missing.contains("missing.toml"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_never_panics() {
    const PIECES: &[&str] = &[
        "model_path = \"m.gguf\"\n",
        "generated = \"tiny-moe\"\n",
        "flags = \"-c 512 -ot a=CPU\"\n",
        "[context]\n",
        "n_ctx = 4096\n",
        "[model]\n",
        "gpu_layers = 3\n",
        "[env]\n",
        "GGML_CUDA_GRAPH_OPT = true\n",
        "[[workload]]\n",
        "name = \"w\"\n",
        "n_prompt = 9\n",
        "n_gen = 1\n",
        "turns = 3\n",
        "workloads = [\"short\"]\n",
        "=\n",
        "[\n",
        "\"\n",
        "MODEL=m.gguf\n",
        "LLAMA_ARGS=\"-c 1024\n",
        "export A='x\n",
        "\\\n",
        "LLAMA_ARG_NO_MMAP=\n",
        "GGML_OP_OFFLOAD_MIN_BATCH=9x\n",
        "# c\n",
        "ü=1\n",
        "\u{feff}",
        "\r\n",
        "[backend]\nnuma = \"isolate\"\n",
    ];
    let mut state = 7u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5_000 {
        let n = (next() % 8) as usize;
        let text: String = (0..n).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
        let _ = Config::from_toml_str(&text, "fuzz.toml");
        let _ = Config::from_env_str(&text, "fuzz.env", &[]);
    }
}

/// Every generated-model name a configuration accepts is a tiny-gguf preset, and the training
/// context the runner assumes for it (used to validate `n_ctx`) is the one the generator writes.
#[test]
fn generated_models_are_tiny_gguf_presets() {
    let names: Vec<&str> = GeneratedModel::ALL.iter().map(|g| g.name()).collect();
    assert_eq!(names, tiny_gguf::PRESETS);
    for g in GeneratedModel::ALL {
        let spec = tiny_gguf::ModelSpec::preset(g.name()).unwrap_or_else(|| panic!("no preset {g}"));
        assert_eq!(spec.context_length, g.context_length(), "{g}");
        assert_eq!(g.name().parse::<GeneratedModel>(), Ok(g));
    }
    assert!(tiny_gguf::ModelSpec::preset("huge-moe").is_none());
    assert!("tiny".parse::<GeneratedModel>().unwrap_err().contains("bench-moe"));
}
