//! Invalid options get a clear [`Error::InvalidOption`] naming the option, before llama.cpp sees
//! them, and never a process abort.
//!
//! Where llama.cpp itself aborts on such input, a child process (this test binary again, running
//! only [`child_scenario`]) feeds it the same lowered parameters without the runner's checks and
//! the test asserts that the child really dies; `GGML_NO_BACKTRACE=1` keeps ggml from attaching
//! a debugger to print a backtrace.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use llama_runner::{
    Backend, BufferTarget, CacheType, Context, ContextOptions, Error, FlashAttn, Model, ModelOptions, SplitMode,
    TensorOverride, ThreadPlacement,
};
use tiny_gguf::ModelSpec;

/// A model with head dimension 16 (n_embd 64, 4 heads): too small for the 32-value blocks of the
/// quantized cache types.
fn head_dim_16() -> ModelSpec {
    ModelSpec { n_embd: 64, ..ModelSpec::tiny_llama() }
}

fn model(spec: &ModelSpec) -> Model {
    Model::load(Backend::get().unwrap(), common::model(spec), &ModelOptions::default()).unwrap()
}

/// Asserts `r` is an `InvalidOption` whose option names `option` (field and flag, as its message
/// shows it) and whose reason contains every one of `words`; the message names the option too.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Error>, option: &str, words: &[&str]) {
    match r {
        Err(e @ Error::InvalidOption { .. }) => {
            let Error::InvalidOption { option: o, reason, .. } = &e else { unreachable!() };
            let (o, reason) = (o.to_string(), reason.to_string());
            assert!(o.contains(option), "option `{o}` should name `{option}` ({reason})");
            assert!(e.to_string().contains(&o), "the message `{e}` should name `{o}`");
            for w in words {
                assert!(reason.contains(w), "`{o}`: reason `{reason}` should mention `{w}`");
            }
        }
        other => panic!("expected an invalid `{option}`, got {other:?}"),
    }
}

fn load_with(opts: ModelOptions) -> Result<Model, Error> {
    Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_moe()), &opts)
}

#[test]
fn bad_model_options() {
    // Override patterns are compiled with std::regex (ECMAScript), as llama.cpp's loader does.
    for bad in ["ffn_(up", "[z-a]", "exps)", "*"] {
        let opts = ModelOptions { tensor_overrides: vec![TensorOverride::cpu(bad)], ..Default::default() };
        assert_invalid(load_with(opts), "tensor_overrides (-ot)", &[bad, "std::regex"]);
    }
    let opts = ModelOptions { tensor_overrides: vec![TensorOverride::cpu("")], ..Default::default() };
    assert_invalid(load_with(opts), "tensor_overrides", &["empty"]);
    // ECMAScript that Rust's regex crate would reject is fine.
    let opts = ModelOptions { tensor_overrides: vec![TensorOverride::cpu(r"blk\.(?=0)")], ..Default::default() };
    load_with(opts).unwrap();

    // Buffer types: only those of registered devices, listed in the error (here only `CPU`).
    let opts = ModelOptions {
        tensor_overrides: vec![TensorOverride { pattern: "exps".into(), target: BufferTarget::Device("CUDA0".into()) }],
        ..Default::default()
    };
    assert_invalid(load_with(opts), "tensor_overrides", &["`CUDA0`", "available: CPU"]);

    // Devices (-dev): offload devices only. llama.cpp's parser rejects `-dev CPU` as well.
    let opts = ModelOptions { devices: Some(vec!["CUDA0".into()]), ..Default::default() };
    assert_invalid(load_with(opts), "devices (-dev)", &["`CUDA0` is not a device", "offload devices: none"]);
    let opts = ModelOptions { devices: Some(vec!["CPU".into()]), ..Default::default() };
    assert_invalid(load_with(opts), "devices (-dev)", &["`CPU` is the CPU"]);
    load_with(ModelOptions { devices: Some(vec![]), ..Default::default() }).unwrap(); // -dev none

    assert_invalid(load_with(ModelOptions { main_gpu: u32::MAX, ..Default::default() }), "main_gpu", &["too large"]);

    for split in [vec![1.0, -1.0], vec![f32::NAN], vec![f32::INFINITY, 1.0], vec![1.0; 17]] {
        let opts = ModelOptions { tensor_split: split.clone(), ..Default::default() };
        assert_invalid(load_with(opts), "tensor_split (-ts)", &[]);
    }
    load_with(ModelOptions { tensor_split: vec![3.0, 1.0], ..Default::default() }).unwrap();

    // Split mode `tensor` needs a GPU: on a CPU-only build llama.cpp refuses the load cleanly.
    if Backend::get().unwrap().devices().iter().all(|d| d.kind == "cpu") {
        let err = load_with(ModelOptions { split_mode: SplitMode::Tensor, ..Default::default() }).unwrap_err();
        assert!(matches!(&err, Error::ModelLoad { log, .. } if log.iter().any(|l| l.contains("TENSOR"))), "{err}");
    }
}

#[test]
fn bad_context_options() {
    let m = model(&ModelSpec::tiny_llama());
    let ctx = |o: ContextOptions| Context::new(&m, &o).map(|_| ());
    let base = ContextOptions { n_ctx: 256, n_threads: Some(1), ..Default::default() };

    assert_invalid(ctx(ContextOptions { n_batch: 0, ..base.clone() }), "n_batch (-b)", &[]);
    assert_invalid(ctx(ContextOptions { n_ubatch: 0, ..base.clone() }), "n_ubatch (-ub)", &[]);
    assert_invalid(
        ctx(ContextOptions { n_batch: 64, n_ubatch: 128, ..base.clone() }),
        "n_ubatch (-ub)",
        &["128", "n_batch (-b) 64"],
    );
    for n in [0, 257] {
        assert_invalid(ctx(ContextOptions { n_seq_max: n, ..base.clone() }), "n_seq_max (-np)", &["1..=256"]);
    }
    ctx(ContextOptions { n_seq_max: 4, ..base.clone() }).unwrap();
    assert_invalid(ctx(ContextOptions { n_threads: Some(0), ..base.clone() }), "n_threads (-t)", &[]);
    assert_invalid(ctx(ContextOptions { n_threads_batch: Some(0), ..base.clone() }), "n_threads_batch (-tb)", &[]);
    // 65535 threads crash OpenMP (SIGSEGV in GOMP_parallel, found by an independent test set).
    for n in [513, 65535, 100_000] {
        assert_invalid(ctx(ContextOptions { n_threads: Some(n), ..base.clone() }), "n_threads (-t)", &["1..=512"]);
        let o = ContextOptions { n_threads_batch: Some(n), ..base.clone() };
        assert_invalid(ctx(o), "n_threads_batch (-tb)", &["GGML_MAX_N_THREADS"]);
    }
    ctx(ContextOptions { n_threads: Some(8), n_threads_batch: Some(8), ..base.clone() }).unwrap();
    // The model was trained with 2048 tokens.
    assert_invalid(ctx(ContextOptions { n_ctx: 4096, ..base.clone() }), "n_ctx (-c)", &["4096", "2048"]);
    ctx(ContextOptions { n_ctx: 2048, ..base.clone() }).unwrap();

    for v in CacheType::ALL.into_iter().filter(|t| t.is_quantized()) {
        let o = ContextOptions { type_v: v, flash_attn: FlashAttn::Off, ..base.clone() };
        assert_invalid(ctx(o), "type_v (-ctv)", &[v.name(), "flash attention"]);
        ctx(ContextOptions { type_k: v, type_v: v, flash_attn: FlashAttn::On, ..base.clone() }).unwrap();
    }
    // A quantized K cache works without flash attention (on a head dimension of 32).
    ctx(ContextOptions { type_k: CacheType::Q8_0, flash_attn: FlashAttn::Off, ..base.clone() }).unwrap();

    let placement =
        |cpu_mask: &str, poll: u32| ThreadPlacement { cpu_mask: Some(cpu_mask.into()), poll, ..Default::default() };
    assert_invalid(ctx(ContextOptions { placement: placement("0x1", 101), ..base.clone() }), "poll", &["101"]);
    for (mask, why) in [("0xg", "not a hex digit"), ("", "no hex digits"), ("0x00", "selects no CPU")] {
        let o = ContextOptions { placement: placement(mask, 50), ..base.clone() };
        assert_invalid(ctx(o), "cpu_mask (-C)", &[why]);
    }
}

/// llama.cpp refuses, with flash attention, a K or V cache type whose block size does not divide
/// the head dimension ("K cache type q8_0 with block size 32 does not divide n_embd_head_k=16",
/// a clean failure). Without flash attention it accepts the combination and then reads the
/// cache through per-head views whose stride (`ggml_row_size(q8_0, 16)` = 17 bytes) is not a
/// block boundary. The runner refuses it in every flash-attention mode, naming the option.
#[test]
fn cache_blocks_must_divide_the_head_dimension() {
    let spec = head_dim_16();
    let m = model(&spec);
    let base = ContextOptions { n_ctx: 256, n_threads: Some(1), ..Default::default() };
    for t in CacheType::ALL {
        for fa in [FlashAttn::Auto, FlashAttn::On, FlashAttn::Off] {
            let o = ContextOptions { type_k: t, flash_attn: fa, ..base.clone() };
            let r = Context::new(&m, &o).map(|_| ());
            if t.is_quantized() {
                assert_invalid(r, "type_k (-ctk)", &[t.name(), "blocks of 32", "n_embd_head_k = 16"]);
            } else {
                r.unwrap();
            }
        }
        if t.is_quantized() {
            let o = ContextOptions { type_v: t, flash_attn: FlashAttn::On, ..base.clone() };
            assert_invalid(Context::new(&m, &o), "type_v (-ctv)", &["n_embd_head_v = 16"]);
        }
    }

    // What llama.cpp does with the same lowered parameters, unchecked.
    let raw = |fa: FlashAttn| {
        let o = ContextOptions { type_k: CacheType::Q8_0, flash_attn: fa, ..base.clone() };
        let p = llama_runner::params::context_params(&o).unwrap();
        // SAFETY: a valid model and plain parameters; a context that comes back is freed.
        unsafe {
            let c = llama_sys::llama_init_from_model(m.as_ptr(), p);
            let ok = !c.is_null();
            if ok {
                llama_sys::llama_free(c);
            }
            ok
        }
    };
    assert!(!raw(FlashAttn::On), "llama.cpp refuses q8_0 K on head dim 16 with flash attention");
    assert!(raw(FlashAttn::Off), "llama.cpp accepts q8_0 K on head dim 16 without flash attention");
}

/// Scenarios that make llama.cpp abort, run in a child process. Does nothing in a normal run.
#[test]
fn child_scenario() {
    let Ok(scenario) = std::env::var("LLAMA_RUNNER_CHILD_SCENARIO") else { return };
    let m = model(&ModelSpec::tiny_llama());
    let base = ContextOptions { n_ctx: 256, n_threads: Some(1), ..Default::default() };
    let opts = match scenario.as_str() {
        "n_batch_0" => ContextOptions { n_batch: 0, ..base },
        "threads_0" => ContextOptions { n_threads: Some(0), n_threads_batch: Some(0), ..base },
        other => panic!("unknown scenario {other}"),
    };
    // The runner's own lowering, without its validation.
    let params = llama_runner::params::context_params(&opts).unwrap();
    let pool = llama_runner::params::threadpool_params(opts.threads(), &opts.placement).unwrap();
    eprintln!("child: creating the context");
    // SAFETY: deliberately invalid parameters, in a process that is expected to die.
    unsafe {
        let ctx = llama_sys::llama_init_from_model(m.as_ptr(), params);
        assert!(!ctx.is_null(), "llama.cpp refused the context cleanly");
        let mut pool = pool;
        let tp = llama_sys::ggml_threadpool_new(&mut pool);
        llama_sys::llama_attach_threadpool(ctx, tp, std::ptr::null_mut());
        let mut tokens = m.tokenize("hello", true).unwrap();
        let status = llama_sys::llama_decode(ctx, llama_sys::llama_batch_get_one(tokens.as_mut_ptr(), 2));
        eprintln!("child: survived, decode returned {status}");
    }
}

/// Runs [`child_scenario`] in a child process: (signal, stderr).
fn run_child(scenario: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
        .env("LLAMA_RUNNER_CHILD_SCENARIO", scenario)
        .env("GGML_NO_BACKTRACE", "1")
        .output()
        .unwrap();
    (out.status.signal(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const SIGABRT: i32 = 6;

#[test]
fn n_batch_0_aborts_llama_cpp_but_not_the_runner() {
    let (signal, stderr) = run_child("n_batch_0");
    assert_eq!(signal, Some(SIGABRT), "{stderr}");
    assert!(stderr.contains("GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max) failed"), "{stderr}");
    assert!(!stderr.contains("child: survived"));

    let m = model(&ModelSpec::tiny_llama());
    let r = Context::new(&m, &ContextOptions { n_ctx: 256, n_batch: 0, ..Default::default() });
    assert_invalid(r, "n_batch (-b)", &["at least 1"]);
}

/// llama.cpp itself takes 0 threads in its parameters, but the runner computes with a ggml
/// threadpool (for thread placement), and a pool of 0 threads aborts the first decode.
#[test]
fn zero_threads_abort_ggml_but_not_the_runner() {
    let (signal, stderr) = run_child("threads_0");
    assert_eq!(signal, Some(SIGABRT), "{stderr}");
    assert!(stderr.contains("GGML_ASSERT(cplan->n_threads > 0) failed"), "{stderr}");
    assert!(!stderr.contains("child: survived"), "{stderr}");

    let m = model(&ModelSpec::tiny_llama());
    let r = Context::new(&m, &ContextOptions { n_ctx: 256, n_threads: Some(0), ..Default::default() });
    assert_invalid(r, "n_threads (-t)", &["at least 1"]);
}

/// Bytes of memory the system has available (`MemAvailable` plus `SwapFree`).
#[cfg(target_os = "linux")]
fn available_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().unwrap()
    };
    (kib("MemAvailable:") + kib("SwapFree:")) * 1024
}

/// A context whose KV cache alone exceeds the memory available is refused before anything is
/// allocated, with llama.cpp's dry-run numbers in the error (on Linux an allocation that large
/// can succeed and the process be killed when the pages are touched); so is one whose cell
/// bookkeeping alone would not fit, without a dry run. The model stays usable.
#[cfg(target_os = "linux")]
#[test]
fn a_context_larger_than_memory_is_refused_before_allocating() {
    // 8 layers x (K + V) x 8 KV heads x 64 dims in f16: 16 KiB a token. Ask for at least 1.5
    // times the available memory in KV cache alone.
    let per_token = 8 * 2 * 8 * 64 * 2;
    let n_ctx = (available_bytes() / per_token * 3 / 2).next_power_of_two();
    let n_ctx = u32::try_from(n_ctx).expect("available memory below 2^32 * 16 KiB");
    let spec = ModelSpec {
        n_embd: 512,
        n_head: 8,
        n_head_kv: 8,
        n_layer: 8,
        n_ff: 512,
        context_length: n_ctx,
        ..ModelSpec::tiny_llama()
    };
    let m = model(&spec);
    let before = available_bytes();
    let refused =
        |n_ctx: u32| match Context::new(&m, &ContextOptions { n_ctx, n_threads: Some(2), ..Default::default() }) {
            Err(e @ Error::ContextMemory { .. }) => e,
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("a context of {n_ctx} cells was created with {before} bytes available"),
        };
    let e = refused(n_ctx);
    let Error::ContextMemory { ref place, needed, context, compute, free, n_ctx: asked, dry_run, .. } = e else {
        unreachable!()
    };
    assert!(dry_run, "{e}");
    assert_eq!((place.as_str(), asked), ("host", n_ctx));
    assert!(context >= u64::from(n_ctx) * per_token, "the KV cache: {context} bytes");
    assert!(compute > 0, "the dry run's compute buffers");
    assert!(needed > free, "{needed} > {free}");
    assert!(e.to_string().contains("MiB of host memory"), "{e}");
    eprintln!("{e}");
    // The estimate of a small context: its KV cache, on the host, with what is free.
    let small = ContextOptions { n_ctx: 256, n_threads: Some(2), ..Default::default() };
    let needs = llama_runner::memory::estimate(&m, &small).unwrap().expect("the dry run at the pinned commit");
    assert_eq!(needs[0].place, "host");
    assert!(needs[0].context >= 256 * per_token && needs[0].free.is_some() && !needs[0].exceeds(), "{needs:?}");
    // Nothing was kept: the memory is still there, and the model still makes contexts.
    assert!(available_bytes() + (1 << 30) > before);
    let mut c = Context::new(&m, &ContextOptions { n_ctx: 256, n_threads: Some(2), ..Default::default() }).unwrap();
    assert_eq!(c.generate_greedy(&[1, 2, 3], 4).unwrap().tokens.len(), 4);
    drop(c);
    // Cells whose bookkeeping alone does not fit: refused before any dry run.
    let huge = ModelSpec { context_length: u32::MAX / 2, ..ModelSpec::tiny_llama() };
    let m = model(&huge);
    let t = std::time::Instant::now();
    let e = Context::new(&m, &ContextOptions { n_ctx: u32::MAX / 2, ..Default::default() }).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::ContextMemory { compute: 0, dry_run: false, .. }), "{e}");
    assert!(e.to_string().contains("bookkeeping"), "{e}");
    assert!(t.elapsed().as_secs() < 5, "no dry run: {:?}", t.elapsed());
}
