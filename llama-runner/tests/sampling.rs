//! Sampling: the runner's chain draws exactly the tokens llama.cpp's own common sampler draws
//! (same seed, chain and prompt), on generated models and on the real model; llama.cpp's flags
//! parse as llama.cpp's parser reads them; defaults are `common_params_sampling`'s.
//!
//! The reference (`tests/reference/sampling.cpp`) links llama.cpp's common library. Its absence
//! and the real model's are never a pass: run as a `harness = false` test (a `[[test]]` entry),
//! they are reported `ignored (reason)` (or failed where required, see `common::real_model`);
//! under the standard harness a missing prerequisite panics with the reason.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Prerequisite;
use llama_runner::sampling::{self, LogitBias, Mirostat, Sampler, SamplerType, SamplingOptions};
use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions};
use tiny_gguf::ModelSpec;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";
const N_CTX: u32 = 256;

/// The chains compared token for token (llama.cpp flags; the seed is added per run).
const CHAINS: &[(&str, &[&str])] = &[
    ("default chain", &[]),
    ("temp 0 (greedy)", &["--temp", "0"]),
    ("top-k only", &["--samplers", "top_k", "--top-k", "20"]),
    ("mirostat 1", &["--mirostat", "1"]),
    ("mirostat 2", &["--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2"]),
    (
        "penalties",
        &[
            "--repeat-penalty",
            "1.5",
            "--repeat-last-n",
            "16",
            "--frequency-penalty",
            "0.3",
            "--presence-penalty",
            "0.4",
        ],
    ),
    (
        "dry",
        &[
            "--dry-multiplier",
            "0.8",
            "--dry-allowed-length",
            "1",
            "--dry-penalty-last-n",
            "32",
            "--dry-sequence-breaker",
            "\n",
            "--dry-sequence-breaker",
            "e",
        ],
    ),
    ("dry over the training context", &["--dry-multiplier", "1.2", "--dry-base", "2"]),
    ("xtc", &["--xtc-probability", "0.5", "--xtc-threshold", "0.05", "--temp", "1.5"]),
    ("typical", &["--typical", "0.8", "--samplers", "typ_p;temperature"]),
    ("dynatemp", &["--dynatemp-range", "0.5", "--dynatemp-exp", "1.5"]),
    ("top-n-sigma", &["--top-n-sigma", "1.0", "--top-k", "0"]),
    ("adaptive-p", &["--samplers", "min_p;adaptive_p", "--adaptive-target", "0.3", "--adaptive-decay", "0.8"]),
    (
        "ignore-eos, logit bias, sampling-seq",
        &["--ignore-eos", "-l", "5+3", "--logit-bias", "6-inf", "--sampling-seq", "kpt"],
    ),
];

// ---------------------------------------------------------------------------------------------
// The reference program.

fn reference() -> &'static Path {
    common::sampling_reference_binary()
}

fn run_reference(args: &[&str]) -> std::process::Output {
    Command::new(reference()).args(args).output().expect("run the sampling reference")
}

/// llama.cpp's parse of `flags`, as `key=value`.
fn reference_dump(model: &Path, flags: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut args = vec!["dump", model.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = run_reference(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn unescape_list(s: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => items.last_mut().unwrap().push('\n'),
                Some(c) => items.last_mut().unwrap().push(c),
                None => {}
            },
            ',' => items.push(String::new()),
            c => items.last_mut().unwrap().push(c),
        }
    }
    if s.is_empty() { Vec::new() } else { items }
}

/// The options a reference dump stands for.
fn options_from_dump(d: &BTreeMap<String, String>) -> SamplingOptions {
    let f = |k: &str| -> f32 { d[k].parse().unwrap_or_else(|_| panic!("{k}={}", d[k])) };
    let i = |k: &str| -> i32 { d[k].parse().unwrap_or_else(|_| panic!("{k}={}", d[k])) };
    SamplingOptions {
        seed: d["seed"].parse().unwrap(),
        min_keep: d["min_keep"].parse().unwrap(),
        top_k: i("top_k"),
        top_p: f("top_p"),
        min_p: f("min_p"),
        xtc_probability: f("xtc_probability"),
        xtc_threshold: f("xtc_threshold"),
        typ_p: f("typ_p"),
        temp: f("temp"),
        dynatemp_range: f("dynatemp_range"),
        dynatemp_exponent: f("dynatemp_exponent"),
        penalty_last_n: i("penalty_last_n"),
        penalty_repeat: f("penalty_repeat"),
        penalty_freq: f("penalty_freq"),
        penalty_present: f("penalty_present"),
        dry_multiplier: f("dry_multiplier"),
        dry_base: f("dry_base"),
        dry_allowed_length: i("dry_allowed_length"),
        dry_penalty_last_n: i("dry_penalty_last_n"),
        dry_sequence_breakers: unescape_list(&d["dry_sequence_breakers"]),
        adaptive_target: f("adaptive_target"),
        adaptive_decay: f("adaptive_decay"),
        mirostat: Mirostat::try_from(d["mirostat"].parse::<u8>().unwrap()).unwrap(),
        top_n_sigma: f("top_n_sigma"),
        mirostat_tau: f("mirostat_tau"),
        mirostat_eta: f("mirostat_eta"),
        ignore_eos: d["ignore_eos"] == "true",
        no_perf: d["no_perf"] == "true",
        samplers: d["samplers"].split(';').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect(),
        logit_bias: d["logit_bias"]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (t, b) = s.split_once(':').unwrap();
                LogitBias { token: t.parse().unwrap(), bias: b.parse().unwrap() }
            })
            .collect(),
        ..SamplingOptions::default()
    }
}

use common::SamplingRun as Run;

fn reference_run(model: &Path, n: usize, accept_prompt: bool, flags: &[String]) -> Run {
    common::sampling_reference_run(model, n, N_CTX, accept_prompt, PROMPT, flags)
}

fn runner_run(model: &Model, n: usize, accept_prompt: bool, flags: &[String]) -> Run {
    let options = sampling::parse_flags(flags).unwrap();
    let mut sampler = Sampler::new(model, &options).unwrap();
    let mut ctx =
        Context::new(model, &ContextOptions { n_ctx: N_CTX, n_threads: Some(1), ..Default::default() }).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    if accept_prompt {
        for &t in &prompt {
            sampler.accept(t).unwrap();
        }
    }
    let out = sampling::generate(&mut ctx, &mut sampler, &prompt, n).unwrap();
    Run { chain: sampler.names(), tokens: out.tokens }
}

/// Every chain with every seed on `path`: the runner's tokens equal llama.cpp's.
fn parity_on(path: &Path, seeds: &[u32], n: usize) {
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let mut runs = 0;
    for (chain, flags) in CHAINS {
        for &seed in seeds {
            for accept_prompt in [false, true] {
                if accept_prompt && !chain.starts_with("penalties") && !chain.starts_with("dry") {
                    continue;
                }
                let mut flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
                flags.extend(["--seed".to_string(), seed.to_string()]);
                let ours = runner_run(&model, n, accept_prompt, &flags);
                let theirs = reference_run(path, n, accept_prompt, &flags);
                assert_eq!(ours.chain, theirs.chain, "{name}, {chain}, seed {seed}: the chains differ");
                assert_eq!(
                    ours.tokens, theirs.tokens,
                    "{name}, {chain}, seed {seed}, prompt accepted: {accept_prompt}: the tokens differ"
                );
                assert!(!ours.tokens.is_empty(), "{name}, {chain}: nothing generated");
                runs += 1;
            }
        }
    }
    eprintln!("{name}: {runs} runs of {n} tokens equal llama.cpp's common sampler");
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// What a test needs.
#[derive(Clone, Copy)]
enum Needs {
    Nothing,
    Common,
    CommonAndRealModel,
}

struct Env {
    real_model: Option<PathBuf>,
}

type Test = (&'static str, Needs, fn(Env));

const TESTS: &[Test] = &[
    ("model_sampling_defaults_as_llama_cpp", Needs::Common, model_sampling_defaults_as_llama_cpp),
    ("model_sampling_defaults_errors", Needs::Nothing, model_sampling_defaults_errors),
    ("defaults_equal_common_params_sampling", Needs::Common, defaults_equal_common_params_sampling),
    ("flags_parse_as_llama_cpp_parses_them", Needs::Common, flags_parse_as_llama_cpp_parses_them),
    ("flag_errors_name_the_flag", Needs::Nothing, flag_errors_name_the_flag),
    ("flags_render_back", Needs::Nothing, flags_render_back),
    ("sampler_checks_before_calling_llama_cpp", Needs::Nothing, sampler_checks_before_calling_llama_cpp),
    ("seeded_sampling_is_reproducible", Needs::Nothing, seeded_sampling_is_reproducible),
    ("tokens_equal_llama_cpp_on_generated_models", Needs::Common, tokens_equal_llama_cpp_on_generated_models),
    ("tokens_equal_llama_cpp_on_the_real_model", Needs::CommonAndRealModel, tokens_equal_llama_cpp_on_the_real_model),
];

fn prerequisite(needs: Needs) -> Prerequisite<Env> {
    let common = || match common::llama_common() {
        Prerequisite::Met(()) => None,
        Prerequisite::Missing(r) => Some(Prerequisite::Missing(r)),
        Prerequisite::Required(r) => Some(Prerequisite::Required(r)),
    };
    match needs {
        Needs::Nothing => Prerequisite::Met(Env { real_model: None }),
        Needs::Common => common().unwrap_or(Prerequisite::Met(Env { real_model: None })),
        Needs::CommonAndRealModel => {
            if let Some(missing) = common() {
                return missing;
            }
            match common::real_model() {
                Prerequisite::Met(p) => Prerequisite::Met(Env { real_model: Some(p) }),
                Prerequisite::Missing(r) => Prerequisite::Missing(r),
                Prerequisite::Required(r) => Prerequisite::Required(r),
            }
        }
    }
}

/// `harness = false`: every test a trial, a missing prerequisite reported as ignored.
fn main() {
    common::run_trials(
        TESTS.iter().map(|&(name, needs, test)| common::trial(name, prerequisite(needs), test)).collect(),
    );
}

fn tiny() -> PathBuf {
    common::model(&ModelSpec::tiny_llama())
}

/// A generated model carrying `general.sampling.*` keys (typed as real models write them, plus
/// a string-typed one and one without a leading number, which llama.cpp ignores).
fn sampling_model(extra: Vec<(String, tiny_gguf::ExtraValue)>) -> PathBuf {
    common::model(&ModelSpec { extra_metadata: extra, ..ModelSpec::tiny_llama() })
}

fn sampling_keys() -> Vec<(String, tiny_gguf::ExtraValue)> {
    use tiny_gguf::ExtraValue as V;
    [
        ("sequence", V::String("top_k;top-p;temp".into())),
        ("top_k", V::I32(7)),
        ("top_p", V::f32(0.8)),
        ("min_p", V::String(" 0.25 nucleus".into())),
        ("temp", V::f32(1.5)),
        ("penalty_last_n", V::I32(32)),
        ("penalty_repeat", V::f32(1.1)),
        ("mirostat", V::I32(2)),
        ("mirostat_tau", V::f32(4.0)),
        ("xtc_threshold", V::String("none".into())),
    ]
    .into_iter()
    .map(|(k, v)| (format!("general.sampling.{k}"), v))
    .collect()
}

/// The model's sampling defaults fill what the flags leave unset, as llama.cpp's
/// common_init_from_params does: compared with llama.cpp's own result for several flag sets.
fn model_sampling_defaults_as_llama_cpp(_: Env) {
    let path = sampling_model(sampling_keys());
    let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
    let d = model.sampling_defaults().unwrap();
    assert_eq!(d.samplers, Some(vec![SamplerType::TopK, SamplerType::TopP, SamplerType::Temperature]));
    assert_eq!((d.top_k, d.top_p, d.min_p, d.temp), (Some(7), Some(0.8), Some(0.25), Some(1.5)));
    assert_eq!((d.penalty_last_n, d.mirostat, d.xtc_threshold), (Some(32), Some(Mirostat::V2), None));
    for flags in [
        &[][..],
        &["--top-k", "3", "--temp", "0.2"][..],
        &["--samplers", "min_p;temperature", "--mirostat", "0", "--min-p", "0.5"][..],
        &["-s", "9", "--repeat-penalty", "1.3", "--top-p", "1"][..],
    ] {
        let ours = SamplingOptions::for_model(&model, flags).unwrap();
        let mut args = vec!["dump-model", path.to_str().unwrap()];
        args.extend_from_slice(flags);
        let out = run_reference(&args);
        assert!(out.status.success(), "{flags:?}: {}", String::from_utf8_lossy(&out.stderr));
        let dump: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(ours, options_from_dump(&dump), "{flags:?}");
    }
    // A model without the keys: llama.cpp's defaults.
    let plain = Model::load(Backend::get().unwrap(), tiny(), &ModelOptions::default()).unwrap();
    assert!(plain.sampling_defaults().unwrap().is_empty());
    assert_eq!(
        SamplingOptions::for_model(&plain, &["--top-k", "5"]).unwrap(),
        sampling::parse_flags(&["--top-k", "5"]).unwrap()
    );
}

/// Values llama.cpp would abort on or drop without a word are errors naming the key.
fn model_sampling_defaults_errors(_: Env) {
    use tiny_gguf::ExtraValue as V;
    for (key, value, needle) in [
        ("general.sampling.mirostat", V::I32(3), "mirostat"),
        ("general.sampling.sequence", V::String("top_k;warp_speed".into()), "warp_speed"),
    ] {
        let model =
            Model::load(Backend::get().unwrap(), sampling_model(vec![(key.into(), value)]), &ModelOptions::default())
                .unwrap();
        let e = model.sampling_defaults().unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(needle), "{e}");
        assert!(SamplingOptions::for_model(&model, &[] as &[&str]).is_err());
    }
}

fn defaults_equal_common_params_sampling(_: Env) {
    let theirs = options_from_dump(&reference_dump(&tiny(), &[]).unwrap());
    assert_eq!(SamplingOptions::default(), theirs);
    assert_eq!(sampling::parse_flags::<&str>(&[]).unwrap(), theirs);
    assert_eq!(
        SamplingOptions::default().samplers.iter().map(|t| t.name()).collect::<Vec<_>>().join(";"),
        "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature"
    );
}

fn flags_parse_as_llama_cpp_parses_them(_: Env) {
    let model = tiny();
    let cases: &[&[&str]] = &[
        &["--temp", "0.7", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.1", "--seed", "42"],
        &["--temperature", "1.3", "--typical-p", "0.5", "--top-nsigma", "2", "-s", "7"],
        &["--temp", "-1"],
        &["--temp", " 0.7xyz"],
        &["--temp", ".5", "--top-p", "1.", "--min-p", "5e-2"],
        &["--dry-base", "0.5"],
        &["--dry-base", "3", "--dry-multiplier", "0.8", "--dry-allowed-length", "4", "--dry-penalty-last-n", "-1"],
        &["--dry-sequence-breaker", "none"],
        &["--dry-sequence-breaker", "\n", "--dry-sequence-breaker", "ab,c"],
        &["--dry-sequence-breaker", "x", "--dry-sequence-breaker", "none", "--dry-sequence-breaker", "y"],
        &["--seed", "-1"],
        &["--seed", "4294967297"],
        &["--top_k", "5", "--repeat_last_n", "0"],
        &["--samplers", "top-k;TEMP;nucleus;typ;minp;top_n_sigma;xtc;dry;penalties;infill;adaptive-p"],
        &["--samplers", "top_k;;temperature;"],
        &["--samplers", ""],
        &["--sampling-seq", "kt"],
        &["--sampler-seq", "edskypmxt"],
        &["-l", "15+1.5", "--logit-bias", "3-inf", "-l", " 7 - 0.25"],
        &[
            "--repeat-last-n",
            "-1",
            "--repeat-penalty",
            "1.1",
            "--presence-penalty",
            "0.5",
            "--frequency-penalty",
            "0.25",
        ],
        &["--mirostat", "2", "--mirostat-lr", "0.05", "--mirostat-ent", "4"],
        &["--xtc-probability", "0.5", "--xtc-threshold", "0.2", "--dynatemp-range", "0.3", "--dynatemp-exp", "2"],
        &["--adaptive-target", "0.4", "--adaptive-decay", "0.5", "--ignore-eos"],
        &["--top-k", "12abc", "--temp", "0.5", "--temp", "0.9"],
    ];
    for flags in cases {
        let theirs = options_from_dump(&reference_dump(&model, flags).unwrap());
        let ours = sampling::parse_flags(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        assert_eq!(ours, theirs, "{flags:?}");
    }
    // Refused by both.
    for flags in [&["--repeat-last-n", "-2"][..], &["--dry-penalty-last-n", "-5"], &["--top-k", "x"], &["--temp"]] {
        assert!(reference_dump(&model, flags).is_err(), "llama.cpp accepts {flags:?}");
        assert!(sampling::parse_flags(flags).is_err(), "the runner accepts {flags:?}");
    }
}

fn flag_errors_name_the_flag(_: Env) {
    let err = |flags: &[&str]| sampling::parse_flags(flags).unwrap_err().to_string();
    for (flags, needle) in [
        (&["--bogus", "1"][..], "--bogus"),
        (&["--temp"], "--temp"),
        (&["--top-k", "abc"], "--top-k"),
        (&["--mirostat", "3"], "--mirostat"),
        (&["--samplers", "top_k;bogus"], "bogus"),
        (&["--sampling-seq", "kz"], "`z`"),
        (&["--grammar", "root ::= undefined-rule"], "--grammar"),
        (&["--grammar-file", "/nonexistent/g.gbnf"], "--grammar-file"),
        (&["--logit-bias", "15"], "--logit-bias"),
        (&["--repeat-penalty", "0"], "--repeat-penalty"),
        (&["--top-p", "nan"], "--top-p"),
        (&["--min-p", "1e99"], "--min-p"),
        (&["0.7"], "0.7"),
    ] {
        let e = err(flags);
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
    assert!(sampling::is_sampling_flag("--top_k"));
    assert!(!sampling::is_sampling_flag("-c"));
    // On error the options are left as they were.
    let mut o = SamplingOptions::default();
    assert!(sampling::parse_flags_onto(&mut o, &["--temp", "0.1", "--mirostat", "9"]).is_err());
    assert_eq!(o, SamplingOptions::default());
}

fn flags_render_back(_: Env) {
    let all = SamplingOptions {
        seed: 123,
        top_k: 7,
        top_p: 0.8,
        min_p: 0.0,
        xtc_probability: 0.5,
        xtc_threshold: 0.2,
        typ_p: 0.9,
        temp: 1.25,
        dynatemp_range: 0.1,
        dynatemp_exponent: 2.0,
        penalty_last_n: 32,
        penalty_repeat: 1.1,
        penalty_freq: 0.3,
        penalty_present: 0.1,
        dry_multiplier: 0.8,
        dry_base: 2.5,
        dry_allowed_length: 3,
        dry_penalty_last_n: 128,
        dry_sequence_breakers: vec!["\n".into(), "end".into()],
        adaptive_target: 0.3,
        adaptive_decay: 0.5,
        mirostat: Mirostat::V1,
        top_n_sigma: 1.5,
        mirostat_tau: 4.0,
        mirostat_eta: 0.2,
        ignore_eos: true,
        samplers: vec![SamplerType::Dry, SamplerType::TopK, SamplerType::AdaptiveP],
        logit_bias: vec![LogitBias { token: 3, bias: -1.5 }, LogitBias { token: 4, bias: f32::NEG_INFINITY }],
        ..SamplingOptions::default()
    };
    for o in [
        SamplingOptions::default(),
        all,
        SamplingOptions { dry_sequence_breakers: Vec::new(), samplers: Vec::new(), ..Default::default() },
        SamplingOptions::builder().greedy().seed(0).build().unwrap(),
        SamplingOptions::builder().mirostat_v2(3.0, 0.5).top_k(0).build().unwrap(),
        SamplingOptions::builder().adaptive_p(0.2, 0.7).logit_bias(9, 0.0).build().unwrap(),
    ] {
        let flags = sampling::render_flags(&o);
        assert_eq!(sampling::parse_flags(&flags).unwrap(), o, "{flags:?}");
    }
    assert!(sampling::render_flags(&SamplingOptions::default()).is_empty());
    assert_eq!(
        sampling::render_flags(&SamplingOptions::builder().temperature(0.7).top_k(20).build().unwrap()),
        ["--temp", "0.7", "--top-k", "20"]
    );
}

fn sampler_checks_before_calling_llama_cpp(_: Env) {
    let model = Model::load(Backend::get().unwrap(), tiny(), &ModelOptions::default()).unwrap();
    let n_vocab = model.n_vocab();
    let bad_token = SamplingOptions::builder().logit_bias(n_vocab as i32, 1.0).build().unwrap();
    assert!(matches!(Sampler::new(&model, &bad_token), Err(Error::InvalidToken { .. })));
    let negative = SamplingOptions::builder().logit_bias(-1, 1.0).build().unwrap();
    assert!(matches!(Sampler::new(&model, &negative), Err(Error::InvalidToken { .. })));
    let unvalidated = SamplingOptions { dry_multiplier: 1.0, dry_penalty_last_n: -3, ..Default::default() };
    assert!(matches!(Sampler::new(&model, &unvalidated), Err(Error::InvalidSampling { .. })));
    let nan = SamplingOptions { temp: f32::NAN, ..Default::default() };
    assert!(matches!(Sampler::new(&model, &nan), Err(Error::InvalidSampling { flag: "--temp", .. })));

    let mut sampler = Sampler::new(&model, &SamplingOptions::default()).unwrap();
    let mut ctx =
        Context::new(&model, &ContextOptions { n_ctx: N_CTX, n_threads: Some(1), ..Default::default() }).unwrap();
    assert!(matches!(sampler.sample(&mut ctx), Err(Error::NoLogits)));
    assert!(matches!(sampler.accept(n_vocab as i32), Err(Error::InvalidToken { .. })));
    let other =
        Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_moe()), &ModelOptions::default()).unwrap();
    let mut other_ctx =
        Context::new(&other, &ContextOptions { n_ctx: N_CTX, n_threads: Some(1), ..Default::default() }).unwrap();
    other_ctx.decode(&[1, 2, 3]).unwrap();
    assert!(matches!(sampler.sample(&mut other_ctx), Err(Error::SamplerModelMismatch)));
    assert!(matches!(sampling::generate(&mut other_ctx, &mut sampler, &[1], 4), Err(Error::SamplerModelMismatch)));
    assert!(matches!(sampling::generate(&mut ctx, &mut sampler, &[], 4), Err(Error::EmptyInput { .. })));
    assert!(matches!(sampling::generate(&mut ctx, &mut sampler, &[1; 200], 100), Err(Error::ContextFull { .. })));
}

fn seeded_sampling_is_reproducible(_: Env) {
    let model = Model::load(Backend::get().unwrap(), tiny(), &ModelOptions::default()).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    let opts = ContextOptions { n_ctx: N_CTX, n_threads: Some(1), ..Default::default() };
    let options = SamplingOptions::builder().seed(42).temperature(1.5).top_k(0).top_p(1.0).min_p(0.0).build().unwrap();
    let mut sampler = Sampler::new(&model, &options).unwrap();
    assert_eq!(sampler.seed(), 42);
    let mut ctx = Context::new(&model, &opts).unwrap();
    let first = sampling::generate(&mut ctx, &mut sampler, &prompt, 24).unwrap().tokens;
    sampler.reset();
    ctx.clear();
    let second = sampling::generate(&mut ctx, &mut sampler, &prompt, 24).unwrap().tokens;
    assert_eq!(first, second, "reset and a cleared context give the same tokens again");
    let other_seed = Sampler::new(&model, &SamplingOptions { seed: 43, ..options.clone() }).unwrap();
    let mut other_seed = other_seed;
    ctx.clear();
    let third = sampling::generate(&mut ctx, &mut other_seed, &prompt, 24).unwrap().tokens;
    assert_ne!(first, third, "another seed, other tokens (temperature 1.5 over the whole vocabulary)");

    // Greedy: the greedy sampler, temperature 0 and the context's own greedy loop agree.
    ctx.clear();
    let greedy = ctx.generate_greedy(&prompt, 16).unwrap().tokens;
    for mut s in [
        Sampler::greedy(&model).unwrap(),
        Sampler::new(&model, &SamplingOptions::builder().greedy().build().unwrap()).unwrap(),
    ] {
        ctx.clear();
        assert_eq!(sampling::generate(&mut ctx, &mut s, &prompt, 16).unwrap().tokens, greedy, "{:?}", s.names());
    }
    let chain = Sampler::new(&model, &SamplingOptions::default()).unwrap().names();
    assert_eq!(chain.last().map(String::as_str), Some("dist"));
}

fn tokens_equal_llama_cpp_on_generated_models(_: Env) {
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
        parity_on(&common::model(&spec), &[1, 42, 12345], 24);
    }
}

fn tokens_equal_llama_cpp_on_the_real_model(env: Env) {
    parity_on(&env.real_model.unwrap(), &[42], 16);
}
