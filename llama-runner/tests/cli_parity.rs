//! CLI parity: for the same flags, the C structs the runner lowers its typed options to equal
//! what llama.cpp's own argument parser builds.
//!
//! `tests/reference/params.cpp` runs llama.cpp's `common_params_parse` on a flag string, converts
//! the result with `common_model_params_to_llama` / `common_context_params_to_llama` (and the
//! CPU placement with `ggml_threadpool_params_from_cpu_params`), and prints every field as
//! `key=value`. Here the same flag string goes through the runner's own parser
//! (`llama_runner::flags::parse`) and lowering (`llama_runner::params::{model_params,
//! context_params, threadpool_params}`) and is printed the same way from the lowered structs;
//! the two dumps must agree key by key, except for the documented, deliberate differences listed
//! with each case.

mod common;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::Path;
use std::process::Command;

use llama_runner::options::{EXPERTS_REGEX, layer_experts_regex};
use llama_runner::{Backend, CacheType, RunOptions};
use tiny_gguf::ModelSpec;

type Dump = BTreeMap<String, String>;

/// What llama.cpp's parser builds for `flags` (`-m MODEL` is added: its parser requires one).
fn llama_cpp<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(model: &Path, flags: &[S]) -> Dump {
    let mut cmd = Command::new(common::params_reference_binary());
    cmd.arg("-m").arg(model).args(flags);
    // The parser also reads LLAMA_ARG_* variables; the comparison is about flags only.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LLAMA_ARG_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run the params reference");
    assert!(
        out.status.success(),
        "llama.cpp rejected {flags:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not key=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn b(v: bool) -> String {
    v.to_string()
}

/// The runner's lowering of `o`, printed as params.cpp prints llama.cpp's.
fn runner(o: &RunOptions) -> Dump {
    Backend::get().unwrap();
    let mut d = Dump::new();
    let mut put = |k: &str, v: String| {
        d.insert(k.to_string(), v);
    };

    let mp = llama_runner::params::describe_model_params(Backend::get().unwrap(), &o.model)
        .expect("lower the model options");
    match &mp.devices {
        None => put("devices", "default".into()),
        Some(names) => put("devices", format!("[{}]", names.join(","))),
    }
    for (n, (pattern, buft)) in mp.tensor_buft_overrides.iter().enumerate() {
        put(&format!("override.{n}"), format!("{pattern}={buft}"));
    }
    put("overrides", mp.tensor_buft_overrides.len().to_string());
    // SAFETY: a pure function.
    let max = unsafe { llama_sys::llama_max_devices() };
    let split: Vec<String> =
        (0..max).map(|i| mp.tensor_split.get(i).copied().unwrap_or(0.0)).map(|v| format!("{v}")).collect();
    put("tensor_split", split.join(","));
    put("n_gpu_layers", mp.n_gpu_layers.to_string());
    put("split_mode", mp.split_mode.to_string());
    put("main_gpu", mp.main_gpu.to_string());
    put("load_mode", mp.load_mode.to_string());
    put("use_extra_bufts", b(mp.use_extra_bufts));
    put("no_host", b(mp.no_host));
    put("check_tensors", b(mp.check_tensors));
    put("vocab_only", b(mp.vocab_only));
    put("no_alloc", b(mp.no_alloc));

    let cp = llama_runner::params::context_params(&o.context).expect("lower the context options");
    put("n_ctx", cp.n_ctx.to_string());
    put("n_batch", cp.n_batch.to_string());
    put("n_ubatch", cp.n_ubatch.to_string());
    put("n_seq_max", cp.n_seq_max.to_string());
    put("n_threads", cp.n_threads.to_string());
    put("n_threads_batch", cp.n_threads_batch.to_string());
    put("flash_attn_type", cp.flash_attn_type.to_string());
    // SAFETY: ggml_type_name returns a static string for any valid type.
    let type_name = |t| unsafe { CStr::from_ptr(llama_sys::ggml_type_name(t)) }.to_string_lossy().into_owned();
    put("type_k", type_name(cp.type_k));
    put("type_v", type_name(cp.type_v));
    put("offload_kqv", b(cp.offload_kqv));
    put("op_offload", b(cp.op_offload));
    put("swa_full", b(cp.swa_full));
    put("kv_unified", b(cp.kv_unified));
    put("no_perf", b(cp.no_perf));
    put("embeddings", b(cp.embeddings));

    // The two threadpools a context creates: generation, and prompt processing (the same
    // parameters when the thread counts agree, as llama.cpp's tools then share one pool).
    let c = &o.context;
    for (prefix, threads) in [("pool", c.threads()), ("pool_batch", c.threads_batch())] {
        let p = llama_runner::params::threadpool_params(threads, &c.placement).expect("lower the placement");
        let cpus: Vec<String> = (0..p.cpumask.len()).filter(|&i| p.cpumask[i]).map(|i| i.to_string()).collect();
        put(&format!("{prefix}.n_threads"), p.n_threads.to_string());
        put(&format!("{prefix}.cpumask"), if cpus.is_empty() { "none".into() } else { cpus.join(",") });
        put(&format!("{prefix}.strict_cpu"), b(p.strict_cpu));
        put(&format!("{prefix}.prio"), p.prio.to_string());
        put(&format!("{prefix}.poll"), p.poll.to_string());
    }
    d
}

/// A key where the runner differs from llama.cpp on purpose.
#[derive(Clone, Copy)]
struct Differs {
    key: &'static str,
    /// `true`: the values must differ (the difference is real and documented); `false`: they
    /// may differ, depending on the machine.
    always: bool,
    why: &'static str,
}

/// The runner's default thread count is the number of physical cores (sysinfo); llama.cpp's is
/// `cpu_get_num_math()`, physical cores minus efficiency cores on hybrid Intel CPUs. They agree
/// except on hybrid CPUs.
const DEFAULT_THREADS: &[Differs] = &[
    Differs { key: "n_threads", always: false, why: "physical cores vs. llama.cpp's math cores" },
    Differs { key: "n_threads_batch", always: false, why: "physical cores vs. llama.cpp's math cores" },
    Differs { key: "pool.n_threads", always: false, why: "physical cores vs. llama.cpp's math cores" },
    Differs { key: "pool_batch.n_threads", always: false, why: "physical cores vs. llama.cpp's math cores" },
];

/// One case: a flag string and the documented differences.
struct Case {
    flags: &'static str,
    differs: Vec<Differs>,
}

fn case(flags: &'static str) -> Case {
    Case { flags, differs: Vec::new() }
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = [
        "",
        // Overrides: syntax, order (explicit, -cmoe, -ncmoe as they appear; first match wins).
        "-ot exps=CPU",
        r"-ot 'blk\.0\.=CPU,exps=CPU'",
        r"-ot 'blk\.0\.=CPU' -ot exps=CPU",
        "-cmoe",
        "-ncmoe 2",
        r"-ot 'blk\.1\.ffn_up=CPU' -cmoe -ncmoe 1",
        "-cmoe -ot exps=CPU",
        // Load modes, including the deprecated aliases (the last one wins).
        "--no-mmap",
        "--mmap",
        "--mlock",
        "--mlock --no-mmap",
        "--no-mmap --mlock",
        "-lm none",
        "-lm mmap",
        "-lm mlock",
        "-lm mmap+mlock",
        "-lm dio",
        "-dio",
        "-ndio",
        // Offload.
        "-ngl 0",
        "-ngl 7",
        "-ngl all",
        "-ngl auto",
        "-ngl -1",
        "-sm none -mg 1",
        "-sm row",
        "-sm tensor",
        "-ts 3,1",
        "-ts 3/1",
        "-ts 0.5,0.25,0.25",
        "-dev none",
        "--no-host",
        "-nr",
        "--repack",
        // Context.
        "-c 1024 -b 256 -ub 128",
        "--ctx_size 512 --batch_size 64 --ubatch_size 32",
        "-c 32k",
        "-c 0",
        "-np 2",
        "-np 4 -kvu",
        "-no-kvu",
        "-t 3",
        "-t 3 -tb 5",
        "-tb 1",
        "-t 0",
        "-t -1",
        "-fa on",
        "-fa off",
        "-fa auto",
        "-fa 1",
        "-ctk q8_0 -ctv q8_0 -fa on",
        "-nkvo",
        "-kvo",
        "--no-op-offload",
        "--op-offload",
        "--swa-full",
        "-kvu",
        "--no-perf",
        "--no-perf --perf",
        // CPU placement.
        "-C 0x3 --cpu-strict 1 --prio 2 --poll 0 -t 2",
        "-C f0 --prio -1 --poll 100 -t 4",
        "-C 0x1 -C 0x2",
        "-Cr 0-1",
        "--cpu-strict 1",
    ]
    .into_iter()
    .map(case)
    .collect();
    // Every cache type llama.cpp's -ctk/-ctv accept, K and V alike.
    for t in CacheType::ALL {
        v.push(case(Box::leak(format!("-ctk {t} -ctv {t} -fa on").into_boxed_str())));
    }
    // Same placement, different lists. RunOptions holds `-cmoe` and `-ncmoe N` as two settings
    // applied in a fixed order (all experts, then layer by layer), so `-ncmoe 1 -cmoe` lowers
    // to the same two CPU rules in the other order; both send every expert to the CPU, which the
    // placement check above confirms tensor by tensor.
    let cpu_rules = "both rules target the CPU, so their order does not matter";
    v.push(Case {
        flags: "-ncmoe 1 -cmoe",
        differs: vec![
            Differs { key: "override.0", always: true, why: cpu_rules },
            Differs { key: "override.1", always: true, why: cpu_rules },
        ],
    });
    // `-ncmoe 2 -ncmoe 1` makes llama.cpp push the rules of layers 0-1 and then layer 0 again;
    // RunOptions keeps the larger count, without the shadowed duplicate.
    let duplicate = "llama.cpp repeats a rule that can never match first";
    v.push(Case {
        flags: "-ncmoe 2 -ncmoe 1",
        differs: vec![
            Differs { key: "overrides", always: true, why: duplicate },
            Differs { key: "override.2", always: true, why: duplicate },
        ],
    });
    // Any negative n_gpu_layers means "all layers" to llama_model_params; the runner writes -2
    // (llama.cpp's own value for `-ngl all`) for every value below -1.
    v.push(Case {
        flags: "-ngl -5",
        differs: vec![Differs { key: "n_gpu_layers", always: true, why: "-5 and -2 both mean all layers" }],
    });
    // Deliberate difference: with -tb, llama.cpp's prompt threads keep their own placement
    // (-Cb, --cpu-strict-batch, --prio-batch, --poll-batch, all unset here) instead of
    // inheriting -C/--cpu-strict (common.cpp: postprocess_cpu_params); the runner has one
    // placement for both pools.
    let mut split = case("-C 0x1 --cpu-strict 1 -t 1 -tb 2");
    split.differs = vec![
        Differs { key: "pool_batch.cpumask", always: true, why: "one placement for both pools" },
        Differs { key: "pool_batch.strict_cpu", always: true, why: "one placement for both pools" },
    ];
    v.push(split);
    for c in &mut v {
        if parse(c.flags).context.n_threads.is_none() {
            c.differs.extend_from_slice(DEFAULT_THREADS);
        }
    }
    v
}

/// The runner's own parser: the same flag string, read by `llama_runner::flags`.
fn parse(flags: &str) -> RunOptions {
    llama_runner::flags::parse(flags).unwrap_or_else(|e| panic!("`{flags}`: {e}")).options
}

/// Tensor names of MoE and dense models, for checking where override lists put them.
fn tensor_names() -> Vec<String> {
    let mut names = vec!["token_embd.weight".to_string(), "output.weight".into(), "output_norm.weight".into()];
    for i in 0..12 {
        for t in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_norm",
            "ffn_norm",
            "ffn_gate_inp",
            "ffn_gate_exps",
            "ffn_up_exps",
            "ffn_down_exps",
            "ffn_gate_up_exps",
            "ffn_up_chexps",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{i}.{t}.weight"));
        }
        names.push(format!("blk.{i}.ffn_up_exps.bias"));
    }
    names
}

/// Where a dump's override list puts `tensor`: the buffer type of the first pattern that
/// `std::regex_search` finds in the name (llama.cpp's rule), or `None` for "not overridden".
fn placement(dump: &Dump, tensor: &str) -> Option<String> {
    let n: usize = dump["overrides"].parse().unwrap();
    (0..n).find_map(|i| {
        let (pattern, buft) = dump[&format!("override.{i}")].rsplit_once('=').unwrap();
        llama_runner::regex::search(pattern, tensor).unwrap().then(|| buft.to_string())
    })
}

/// `harness = false`: both tests need llama.cpp's common library (its argument parser), which
/// llama-sys builds only with `LLAMA_SYS_BUILD_COMMON=ON`; without it they are reported ignored
/// with the reason. A new test here must be added to this list (`#[test]` is not run).
fn main() {
    let tests: [(&str, fn()); 2] = [
        ("lowered_structs_equal_llama_cpp_parser_output", lowered_structs_equal_llama_cpp_parser_output),
        ("llama_cpp_parser_output_reflects_the_flags", llama_cpp_parser_output_reflects_the_flags),
    ];
    common::run_trials(
        tests.into_iter().map(|(name, test)| common::trial(name, common::llama_common(), move |()| test())).collect(),
    );
}

fn lowered_structs_equal_llama_cpp_parser_output() {
    let model = common::model(&ModelSpec::tiny_moe());
    let mut failures = Vec::new();
    for c in cases() {
        let words = llama_runner::flags::split(c.flags).unwrap();
        let theirs = llama_cpp(&model, &words);
        let ours = runner(&parse(c.flags));
        let keys: std::collections::BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
        let absent = "<absent>".to_string();
        for key in keys {
            let want = theirs.get(key).unwrap_or(&absent);
            let got = ours.get(key).unwrap_or(&absent);
            match c.differs.iter().find(|d| d.key == key) {
                Some(d) if d.always && got == want => failures.push(format!(
                    "`{}`: {key} = {got} on both sides, but a difference is documented ({})",
                    c.flags, d.why
                )),
                Some(_) => {}
                None if got != want => failures.push(format!("`{}`: {key}: llama.cpp {want}, runner {got}", c.flags)),
                None => {}
            }
        }
        // Whatever the lists look like, every tensor must land where llama.cpp would put it.
        for name in tensor_names() {
            let (a, b) = (placement(&theirs, &name), placement(&ours, &name));
            if a != b {
                failures.push(format!("`{}`: {name} goes to {a:?} in llama.cpp, {b:?} in the runner", c.flags));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// The dumps are not vacuous: the fields the cases set really show up in llama.cpp's output.
fn llama_cpp_parser_output_reflects_the_flags() {
    let model = common::model(&ModelSpec::tiny_moe());
    let d = llama_cpp(
        &model,
        &["-ot", "exps=CPU", "-cmoe", "-ncmoe", "1", "-ctk", "q4_0", "-fa", "on", "-kvu", "-ngl", "all"],
    );
    assert_eq!(d["overrides"], "3");
    assert_eq!(d["override.0"], "exps=CPU");
    assert_eq!(d["override.1"], format!("{EXPERTS_REGEX}=CPU"));
    assert_eq!(d["override.2"], format!("{}=CPU", layer_experts_regex(0)));
    assert_eq!((d["type_k"].as_str(), d["flash_attn_type"].as_str()), ("q4_0", "1"));
    assert_eq!((d["kv_unified"].as_str(), d["n_gpu_layers"].as_str()), ("true", "-2"));
    let d = llama_cpp(&model, &["-C", "0x5", "--cpu-strict", "1", "-t", "2"]);
    assert_eq!((d["pool.cpumask"].as_str(), d["pool.strict_cpu"].as_str()), ("0,2", "true"));
}
