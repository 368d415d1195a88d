//! Shared test support: generated models and the C++ reference program.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use libtest_mimic::{Arguments, Completion, Trial};
use tiny_gguf::ModelSpec;

/// Where generated models and compiled helpers live for the tests.
pub fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llama-runner-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A generated model file (cached across test runs).
pub fn model(spec: &ModelSpec) -> PathBuf {
    tiny_gguf::cached(spec, &scratch()).expect("generate a test model")
}

/// Whether a test's run-time prerequisite is there.
pub enum Prerequisite<T> {
    /// Present: the test runs with it.
    Met(T),
    /// Absent: the test is ignored, and the reason printed in its line.
    Missing(String),
    /// Absent where it must be present (CI provisions it): the test fails with the reason.
    Required(String),
}

/// A [`Trial`] of `test` that needs `prerequisite`: run when it is met, reported as
/// `ignored (reason)` when it is missing, failed when a required one is missing. A panic in
/// `test` is a failure, as with `#[test]`.
pub fn trial<T: Send + 'static>(
    name: &str,
    prerequisite: Prerequisite<T>,
    test: impl FnOnce(T) + Send + 'static,
) -> Trial {
    Trial::ignorable_test(name, move || match prerequisite {
        Prerequisite::Met(p) => {
            test(p);
            Ok(Completion::Completed)
        }
        Prerequisite::Missing(reason) => Ok(Completion::ignored_with(reason)),
        Prerequisite::Required(reason) => Err(reason.into()),
    })
}

/// Runs `trials` as libtest does (filters, `--ignored`, `--list`, ...) and exits with its status:
/// the `main` of a `harness = false` test file.
pub fn run_trials(trials: Vec<Trial>) -> ! {
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// The real model, when it has been fetched (`scripts/fetch-real-model.sh`) or named by
/// `LLAMA_TEST_REAL_MODEL`. With `LLAMA_REQUIRE_REAL_MODEL=1` (CI), its absence is a failure.
pub fn real_model() -> Prerequisite<PathBuf> {
    let path = std::env::var_os("LLAMA_TEST_REAL_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        let models = std::env::var_os("LLAMA_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"));
        models.join("gemma-3-270m-q4_k_m.gguf")
    });
    if path.is_file() {
        Prerequisite::Met(path)
    } else if std::env::var("LLAMA_REQUIRE_REAL_MODEL").as_deref() == Ok("1") {
        Prerequisite::Required(format!(
            "LLAMA_REQUIRE_REAL_MODEL=1 but {} is missing: run scripts/fetch-real-model.sh",
            path.display()
        ))
    } else {
        Prerequisite::Missing(format!("real model {} not fetched: scripts/fetch-real-model.sh", path.display()))
    }
}

/// The static libraries of llama.cpp's common library (its argument parser), which llama-sys
/// builds only with `LLAMA_SYS_BUILD_COMMON=ON`.
const COMMON_LIBS: [&str; 3] = ["libllama-common.a", "libllama-common-base.a", "libcpp-httplib.a"];

/// Met when llama.cpp's common library was built beside libllama (llama-sys's
/// `build_info::COMMON_BUILT`, and its files where they should be), as
/// [`params_reference_binary`] needs.
pub fn llama_common() -> Prerequisite<()> {
    if !llama_sys::build_info::COMMON_BUILT {
        if std::env::var("LLAMA_REQUIRE_COMMON").as_deref() == Ok("1") {
            return Prerequisite::Required(
                "LLAMA_REQUIRE_COMMON=1 but llama.cpp's common library was not built (LLAMA_SYS_BUILD_COMMON=ON)"
                    .into(),
            );
        }
        return Prerequisite::Missing(
            "llama.cpp's common library was not built: build with LLAMA_SYS_BUILD_COMMON=ON \
             (the workspace's .cargo/config.toml sets it)"
                .into(),
        );
    }
    let lib = Path::new(env!("LLAMA_RUNNER_LLAMA_LIB_DIR"));
    let shared = lib.join("libllama-common.so").is_file();
    match COMMON_LIBS.iter().find(|name| !shared && !lib.join(name).is_file()) {
        None => Prerequisite::Met(()),
        // Built, but not where it should be: a failure, not a reason to skip.
        Some(name) => Prerequisite::Required(format!("{name} is missing from {}", lib.display())),
    }
}

/// Compiles `tests/reference/greedy.cpp` against the libraries llama-runner links (once).
pub fn reference_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| compile_reference("greedy", &[], &[]))
}

/// Compiles `tests/reference/params.cpp`, which runs llama.cpp's own command-line parser (the
/// `llama-common` library llama-sys builds alongside libllama), once.
pub fn params_reference_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| compile_common_reference("params"))
}

/// Compiles `tests/reference/NAME.cpp` with llama.cpp's common library (its headers from the
/// source tree that was built, its static libraries beside libllama). Panics when the common
/// library was not built (see [`llama_common`]).
pub fn compile_common_reference(name: &str) -> PathBuf {
    if let Prerequisite::Missing(reason) | Prerequisite::Required(reason) = llama_common() {
        panic!("{reason}");
    }
    let src = Path::new(llama_sys::build_info::SOURCE_DIR);
    compile_reference(
        name,
        &[format!("-I{}", src.join("common").display()), format!("-I{}", src.join("vendor").display())],
        &["-lllama-common", "-lllama-common-base", "-lcpp-httplib"],
    )
}

/// Compiles `tests/reference/NAME.cpp` into the scratch directory, linked against the very
/// libraries llama-runner links (`extra_libs` first, as dependents precede dependencies).
pub fn compile_reference(name: &str, includes: &[String], extra_libs: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/reference/{name}.cpp"));
    let out = scratch().join(format!("{name}-{}", llama_runner::build_info::short_commit()));
    let lib = env!("LLAMA_RUNNER_LLAMA_LIB_DIR");
    // Compile next to the final name and rename, so concurrent test binaries never run a
    // half-written executable.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new(std::env::var("CXX").unwrap_or_else(|_| "c++".into()))
        .args(["-O2", "-std=c++17", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg(format!("-I{}", env!("LLAMA_RUNNER_LLAMA_INCLUDE")))
        .args(includes)
        .arg(format!("-L{lib}"))
        .args(extra_libs)
        .args(["-lllama", "-lggml", "-lggml-cpu", "-lggml-base", "-fopenmp", "-lpthread", "-ldl", "-lm"])
        .arg(format!("-Wl,-rpath,{lib}"))
        .status()
        .expect("a C++ compiler (c++) is needed for the reference programs");
    assert!(status.success(), "compiling {} failed", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Runs the reference: returns (prompt tokens, generated tokens).
pub fn reference_generate(
    model: &Path,
    prompt: &str,
    n_predict: usize,
    threads: u32,
    n_ctx: u32,
) -> (Vec<i32>, Vec<i32>) {
    let out = Command::new(reference_binary())
        .arg(model)
        .arg(n_predict.to_string())
        .arg(threads.to_string())
        .arg(n_ctx.to_string())
        .arg(prompt)
        .output()
        .expect("run the reference program");
    assert!(out.status.success(), "reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let ids = |prefix: &str| -> Vec<i32> {
        let line = text.lines().find_map(|l| l.strip_prefix(prefix)).expect("reference output line");
        line.split_whitespace().map(|t| t.parse().unwrap()).collect()
    };
    (ids("prompt:"), ids("generated:"))
}

/// Compiles `tests/reference/sampling.cpp`, which samples with llama.cpp's common sampler
/// (`common_sampler_init` / `_sample` / `_accept`, linked from the `llama-common` library), once.
/// Panics when the common library was not built (see [`llama_common`]).
pub fn sampling_reference_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| compile_common_reference("sampling"))
}

/// What `tests/reference/sampling.cpp run` printed: the chain's sampler names and the tokens.
pub struct SamplingRun {
    /// The chain's sampler names, in order.
    pub chain: Vec<String>,
    /// The generated token ids.
    pub tokens: Vec<i32>,
}

/// Generates `n` tokens with llama.cpp's common sampler built from the llama.cpp sampling
/// `flags` (parsed by llama.cpp's own argument parser): `accept_prompt` feeds the prompt tokens
/// to the sampler first. Panics when the reference fails.
pub fn sampling_reference_run(
    model: &Path,
    n: usize,
    n_ctx: u32,
    accept_prompt: bool,
    prompt: &str,
    flags: &[String],
) -> SamplingRun {
    let out = Command::new(sampling_reference_binary())
        .args(["run", model.to_str().unwrap(), &n.to_string(), &n_ctx.to_string()])
        .arg(if accept_prompt { "1" } else { "0" })
        .arg(prompt)
        .args(flags)
        .output()
        .expect("run the sampling reference");
    assert!(out.status.success(), "reference failed for {flags:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| -> Vec<String> {
        let l = text.lines().find_map(|l| l.strip_prefix(prefix)).expect("reference output line");
        l.split_whitespace().map(str::to_string).collect()
    };
    SamplingRun { chain: line("chain:"), tokens: line("generated:").iter().map(|t| t.parse().unwrap()).collect() }
}

/// Compiles `tests/reference/parallel.cpp` (parallel greedy generation through llama.h's batch
/// API, the batch composition of `llama_runner::parallel::Parallel`), once.
pub fn parallel_reference_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| compile_reference("parallel", &[], &[]))
}

/// Runs the parallel reference: the generated tokens of each prompt.
pub fn reference_parallel(
    model: &Path,
    prompts: &[&str],
    n_predict: usize,
    threads: u32,
    n_ctx: u32,
    n_batch: u32,
) -> Vec<Vec<i32>> {
    let out = Command::new(parallel_reference_binary())
        .arg(model)
        .args([n_predict.to_string(), threads.to_string(), n_ctx.to_string(), n_batch.to_string()])
        .args(prompts)
        .output()
        .expect("run the parallel reference program");
    assert!(out.status.success(), "parallel reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    (0..prompts.len())
        .map(|s| {
            let prefix = format!("seq {s}:");
            let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).expect("a line per sequence");
            line.split_whitespace().map(|t| t.parse().unwrap()).collect()
        })
        .collect()
}
