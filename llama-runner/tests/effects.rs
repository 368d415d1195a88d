//! The typed options take effect inside llama.cpp: each test sets an option, then reads
//! llama.cpp's own accounting of what it did from its log (through [`Recorder`]), such as
//!
//! ```text
//! tensor blk.0.ffn_up_exps.weight (0 MiB q4_0) buffer type overridden to CPU_REPACK
//! llama_kv_cache: size =    0.53 MiB (  2048 cells,   2 layers,  1/1 seqs), K (q8_0):    0.27 MiB, V (q8_0):    0.27 MiB
//! load_tensors: loading model tensors, this can take a while... (load_mode = dio)
//! ```
//!
//! A [`Recorder`] sees the lines of every thread, so the tests of this file run one at a time
//! (`serial()`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use llama_runner::options::{EXPERTS_REGEX, layer_experts_regex};
use llama_runner::{
    Backend, BufferTarget, CacheType, Context, ContextOptions, Error, FlashAttn, LoadMode, Model, ModelOptions, Opt,
    Reason, Recorder, TensorOverride, ThreadPlacement,
};
use tiny_gguf::{ModelSpec, WeightType};

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns what it returned with every line llama.cpp logged meanwhile.
fn recorded<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let rec = Recorder::start();
    let out = f();
    (out, rec.lines())
}

fn load(spec: &ModelSpec, opts: &ModelOptions) -> (Model, Vec<String>) {
    let path = common::model(spec);
    let (model, lines) = recorded(|| Model::load(Backend::get().unwrap(), &path, opts));
    (model.unwrap_or_else(|e| panic!("load {} with {opts:?}: {e}", spec.file_stem())), lines)
}

/// A three-layer MoE, so that "the first two layers" is not "all layers".
fn moe3(weight_type: WeightType) -> ModelSpec {
    ModelSpec { n_layer: 3, weight_type, ..ModelSpec::tiny_moe() }
}

/// `tensor NAME (N MiB TYPE) buffer type overridden to TARGET` → NAME → TARGET, each name once.
fn overridden(lines: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in lines {
        let Some(rest) = l.strip_prefix("tensor ") else { continue };
        let Some((head, target)) = rest.split_once(" buffer type overridden to ") else { continue };
        let name = head.split_whitespace().next().unwrap().to_string();
        assert!(out.insert(name.clone(), target.trim().to_string()).is_none(), "{name} reported twice");
    }
    out
}

/// The expert tensors `blk.N.ffn_{gate,up,down}_exps.weight` of the given layers.
fn experts(layers: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    layers.into_iter().flat_map(|i| ["gate", "up", "down"].map(|w| format!("blk.{i}.ffn_{w}_exps.weight"))).collect()
}

fn names(m: &BTreeMap<String, String>) -> BTreeSet<String> {
    m.keys().cloned().collect()
}

fn generate(model: &Model, ctx: &ContextOptions, n: usize) -> Vec<i32> {
    let mut c = Context::new(model, ctx).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    c.generate_greedy(&prompt, n).unwrap().tokens
}

fn small_ctx() -> ContextOptions {
    ContextOptions { n_ctx: 256, n_threads: Some(1), ..Default::default() }
}

#[test]
fn cpu_overrides_place_exactly_the_expert_tensors() {
    let _s = serial();
    let spec = moe3(WeightType::Q8_0);
    let all = experts(0..3);

    let (_m, lines) = load(&spec, &ModelOptions::default());
    assert!(overridden(&lines).is_empty(), "nothing is overridden by default");

    let explicit = ModelOptions { tensor_overrides: vec![TensorOverride::cpu("exps")], ..Default::default() };
    let (_m, lines) = load(&spec, &explicit);
    let by_ot = overridden(&lines);
    assert_eq!(names(&by_ot), all, "-ot exps=CPU");
    // The target of a CPU override is the CPU buffer type llama.cpp picks for the weight type:
    // `CPU`, or `CPU_REPACK` where the CPU has a repacked layout for it (at the pin, x86 has one
    // for Q4_0 but not Q8_0; see `repack_off_turns_cpu_repack_into_cpu`).
    let target = by_ot.values().next().unwrap().clone();
    assert!(by_ot.values().all(|t| *t == target) && ["CPU", "CPU_REPACK"].contains(&target.as_str()), "{by_ot:?}");

    let (_m, lines) = load(&spec, &ModelOptions { cpu_moe: true, ..Default::default() });
    assert_eq!(overridden(&lines), by_ot, "-cmoe overrides the same tensors the same way");
}

#[test]
fn n_cpu_moe_moves_only_the_first_layers() {
    let _s = serial();
    let spec = moe3(WeightType::Q8_0);
    for n in 1..=3 {
        let (_m, lines) = load(&spec, &ModelOptions { n_cpu_moe: n, ..Default::default() });
        assert_eq!(names(&overridden(&lines)), experts(0..n), "-ncmoe {n}");
    }
}

#[test]
fn override_targets_must_exist() {
    let _s = serial();
    let path = common::model(&ModelSpec::tiny_moe());
    for target in ["CUDA0", "CPU_REPACK", "cpu"] {
        let opts = ModelOptions {
            tensor_overrides: vec![TensorOverride {
                pattern: "exps".into(),
                target: BufferTarget::Device(target.into()),
            }],
            ..Default::default()
        };
        let err = Model::load(Backend::get().unwrap(), &path, &opts).unwrap_err();
        let Error::InvalidOption { option, value, reason } = &err else { panic!("{err}") };
        assert_eq!(*option, Opt::TensorOverrides, "{err}");
        assert!(option.to_string().contains("tensor_overrides"), "{err}");
        assert_eq!(value, &format!("exps={target}"), "{err}");
        assert!(matches!(reason, Reason::UnknownBufferType { name, .. } if name == target), "{err}");
        // This build has one device, the CPU, whose buffer type is the only target `-ot` knows.
        let reason = reason.to_string();
        assert!(reason.contains(&format!("`{target}`")) && reason.ends_with("available: CPU"), "{err}");
    }
    // `CPU` given as a device name resolves like `BufferTarget::Cpu`.
    let opts = ModelOptions {
        tensor_overrides: vec![TensorOverride { pattern: "exps".into(), target: BufferTarget::Device("CPU".into()) }],
        ..Default::default()
    };
    let (_m, lines) = load(&ModelSpec::tiny_moe(), &opts);
    assert_eq!(names(&overridden(&lines)), experts(0..2));
}

/// llama.cpp tries the overrides in array order and stops at the first pattern that matches
/// (`llama-model-loader.cpp`); the runner lowers them in the order of
/// [`ModelOptions::effective_overrides`]: explicit `-ot` ones, then `-cmoe`, then `-ncmoe`.
#[test]
fn first_matching_override_wins() {
    let _s = serial();
    let spec = moe3(WeightType::Q8_0);
    let opts = ModelOptions {
        tensor_overrides: vec![TensorOverride::cpu(r"blk\.1\.ffn_up"), TensorOverride::cpu(r"blk\.2\.")],
        cpu_moe: true,
        n_cpu_moe: 1,
        ..Default::default()
    };

    // 1. The lowered C array holds the patterns in that order, then the terminator.
    let layer0 = layer_experts_regex(0);
    let want = [r"blk\.1\.ffn_up", r"blk\.2\.", EXPERTS_REGEX, layer0.as_str()];
    let effective: Vec<String> = opts.effective_overrides().into_iter().map(|o| o.pattern).collect();
    assert_eq!(effective, want);
    let lowered: Vec<String> = llama_runner::params::describe_model_params(Backend::get().unwrap(), &opts)
        .unwrap()
        .tensor_buft_overrides
        .into_iter()
        .map(|(pattern, _)| pattern)
        .collect();
    assert_eq!(lowered, want);

    // 2. What llama.cpp did: every tensor some pattern matches (by std::regex search, as
    //    llama.cpp matches) is overridden, and reported once, whichever patterns match it.
    let (_m, lines) = load(&spec, &opts);
    let got = overridden(&lines);
    let first_match = |name: &str| want.iter().position(|p| llama_runner::regex::search(p, name).unwrap());
    let mut by_pattern: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for name in got.keys() {
        by_pattern.entry(first_match(name).expect("an overridden tensor matches a pattern")).or_default().insert(name);
    }
    // blk.1.ffn_up_exps is claimed by the first -ot pattern, all of layer 2 (norms, attention,
    // router, experts) by the second, the remaining experts by -cmoe; -ncmoe 1 is shadowed.
    assert_eq!(by_pattern[&0], BTreeSet::from(["blk.1.ffn_up_exps.weight"]));
    assert!(by_pattern[&1].contains("blk.2.attn_q.weight") && by_pattern[&1].contains("blk.2.ffn_up_exps.weight"));
    assert!(by_pattern[&1].iter().all(|n| n.starts_with("blk.2.")));
    assert_eq!(by_pattern[&2].len(), 5, "{by_pattern:?}"); // 6 experts of layers 0-1 minus blk.1.ffn_up
    assert!(!by_pattern.contains_key(&3), "-ncmoe 1 never wins after -cmoe");

    // 3. llama.cpp really stops at the first match: a later pattern is never even compiled.
    //    An invalid regex after a catch-all loads; the same one first fails the load (cleanly).
    assert!(raw_load_with_patterns(&common::model(&spec), &[".", "("]), "second pattern was consulted");
    assert!(!raw_load_with_patterns(&common::model(&spec), &["(", "."]));
}

/// Loads with llama.cpp directly (no validation), every pattern targeting the CPU.
fn raw_load_with_patterns(path: &std::path::Path, patterns: &[&str]) -> bool {
    Backend::get().unwrap();
    let c: Vec<std::ffi::CString> = patterns.iter().map(|p| std::ffi::CString::new(*p).unwrap()).collect();
    // SAFETY: plain constructors and a load whose pointers (`c`, `ovs`) outlive the call.
    unsafe {
        let cpu = llama_sys::ggml_backend_cpu_buffer_type();
        let mut ovs: Vec<_> =
            c.iter().map(|p| llama_sys::llama_model_tensor_buft_override { pattern: p.as_ptr(), buft: cpu }).collect();
        ovs.push(llama_sys::llama_model_tensor_buft_override { pattern: std::ptr::null(), buft: std::ptr::null_mut() });
        let mut mp = llama_sys::llama_model_default_params();
        mp.tensor_buft_overrides = ovs.as_ptr();
        let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let m = llama_sys::llama_model_load_from_file(path.as_ptr(), mp);
        if m.is_null() {
            return false;
        }
        llama_sys::llama_model_free(m);
        true
    }
}

/// One `llama_kv_cache: size = ...` line.
#[derive(Debug, Clone, PartialEq)]
struct KvLine {
    mib: f64,
    cells: u32,
    layers: u32,
    k_type: String,
    k_mib: f64,
    v_type: String,
    v_mib: f64,
}

/// `llama_kv_cache: size =    0.53 MiB (  2048 cells,   2 layers,  1/1 seqs), K (q8_0):    0.27 MiB, V (q8_0):    0.27 MiB`
fn kv_lines(lines: &[String]) -> Vec<KvLine> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("llama_kv_cache: size ="))
        .map(|rest| {
            let words: Vec<&str> =
                rest.split(|c: char| c.is_whitespace() || "(),:".contains(c)).filter(|w| !w.is_empty()).collect();
            // [0.53, MiB, 2048, cells, 2, layers, 1/1, seqs, K, q8_0, 0.27, MiB, V, q8_0, 0.27, MiB]
            let num = |i: usize| words[i].parse::<f64>().unwrap_or_else(|_| panic!("{rest}: word {i}"));
            assert_eq!((words[3], words[5], words[8], words[12]), ("cells", "layers", "K", "V"), "{rest}");
            KvLine {
                mib: num(0),
                cells: num(2) as u32,
                layers: num(4) as u32,
                k_type: words[9].into(),
                k_mib: num(10),
                v_type: words[13].into(),
                v_mib: num(14),
            }
        })
        .collect()
}

/// `llama_kv_cache_iswa: creating     SWA KV cache, size = 768 cells`
fn swa_cells(lines: &[String]) -> Option<u32> {
    lines.iter().find_map(|l| {
        l.strip_prefix("llama_kv_cache_iswa: creating")?
            .trim_start()
            .strip_prefix("SWA KV cache, size = ")?
            .strip_suffix(" cells")?
            .parse()
            .ok()
    })
}

/// Bytes of one cache (K or V) as llama.cpp sizes it: cells × layers × (KV heads × head dim)
/// elements of `t`, in blocks.
fn cache_bytes(spec: &ModelSpec, cells: u32, layers: u32, t: CacheType) -> f64 {
    let (block, block_bytes) = match t {
        CacheType::F16 => (1, 2),
        CacheType::F32 => (1, 4),
        CacheType::Q8_0 => (32, 34),
        CacheType::Q4_0 => (32, 18),
        other => panic!("{other} not used here"),
    };
    let per_row = spec.n_head_kv * spec.head_dim();
    (cells as u64 * layers as u64 * (per_row / block) as u64 * block_bytes) as f64
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// llama.cpp prints MiB with two decimals.
fn assert_mib(printed: f64, bytes: f64, what: &str) {
    assert!((printed - mib(bytes)).abs() <= 0.0051, "{what}: printed {printed} MiB, expected {:.4}", mib(bytes));
}

#[test]
fn swa_full_sizes_the_sliding_window_cache() {
    let _s = serial();
    let spec = ModelSpec::tiny_swa(); // gemma3, window 128, layers 0 and 2 SWA, 1 and 3 full
    let (model, _) = load(&spec, &ModelOptions::default());
    // (n_ctx, n_ubatch, SWA cells without swa_full) with SWA cells = pad256(min(n_ctx, n_swa + n_ubatch)).
    for (n_ctx, n_ubatch, swa) in [(2048, 512, 768), (512, 128, 256), (2048, 64, 256)] {
        let mut sizes = Vec::new();
        for swa_full in [false, true] {
            let opts = ContextOptions { n_ctx, n_ubatch, swa_full, n_threads: Some(1), ..Default::default() };
            let (ctx, lines) = recorded(|| Context::new(&model, &opts).unwrap());
            let kv = kv_lines(&lines);
            assert_eq!(kv.len(), 2, "a non-SWA and a SWA cache: {kv:?}");
            let (full, window) = (&kv[0], &kv[1]);
            assert_eq!((full.cells, full.layers), (n_ctx, 2), "non-SWA cache");
            let want = if swa_full { n_ctx } else { swa };
            assert_eq!(
                swa_cells(&lines),
                Some(want),
                "SWA cells (n_ctx {n_ctx}, n_ubatch {n_ubatch}, swa_full {swa_full})"
            );
            assert_eq!((window.cells, window.layers), (want, 2));
            for c in [full, window] {
                assert_mib(c.k_mib, cache_bytes(&spec, c.cells, c.layers, CacheType::F16), "K");
                assert_mib(c.v_mib, cache_bytes(&spec, c.cells, c.layers, CacheType::F16), "V");
            }
            drop(ctx);
            sizes.push(window.mib);
        }
        assert!(sizes[1] > sizes[0], "swa_full must enlarge the SWA cache: {sizes:?}");
    }
}

#[test]
fn quantized_kv_cache_is_smaller_than_f16() {
    let _s = serial();
    let spec = ModelSpec::tiny_llama(); // 2 layers, 2 KV heads of 32
    let (model, _) = load(&spec, &ModelOptions::default());
    let mut totals = BTreeMap::new();
    for (k, v) in [
        (CacheType::F16, CacheType::F16),
        (CacheType::Q8_0, CacheType::Q8_0),
        (CacheType::Q4_0, CacheType::Q4_0),
        (CacheType::Q8_0, CacheType::F16),
    ] {
        let opts = ContextOptions {
            n_ctx: 2048,
            flash_attn: FlashAttn::On,
            type_k: k,
            type_v: v,
            n_threads: Some(1),
            ..Default::default()
        };
        let (ctx, lines) = recorded(|| Context::new(&model, &opts).unwrap());
        let kv = kv_lines(&lines);
        assert_eq!(kv.len(), 1);
        let kv = &kv[0];
        assert_eq!((kv.cells, kv.layers), (2048, 2));
        assert_eq!((kv.k_type.as_str(), kv.v_type.as_str()), (k.name(), v.name()));
        assert_mib(kv.k_mib, cache_bytes(&spec, 2048, 2, k), "K");
        assert_mib(kv.v_mib, cache_bytes(&spec, 2048, 2, v), "V");
        // The cache works: generation runs with it.
        let prompt = model.tokenize(PROMPT, true).unwrap();
        let mut ctx = ctx;
        assert!(!ctx.generate_greedy(&prompt, 4).unwrap().tokens.is_empty());
        totals.insert((k.name(), v.name()), kv.mib);
    }
    let f16 = totals[&("f16", "f16")];
    let q8 = totals[&("q8_0", "q8_0")];
    let q4 = totals[&("q4_0", "q4_0")];
    let mixed = totals[&("q8_0", "f16")];
    assert!(q4 < q8 && q8 < mixed && mixed < f16, "{totals:?}");
    assert_eq!(f16, 1.0); // 2048 cells × 2 layers × 64 × 2 bytes × (K + V)
}

#[test]
fn every_load_mode_loads_and_generates_the_same_tokens() {
    let _s = serial();
    let spec = ModelSpec::tiny_llama();
    let (reference, _) = load(&spec, &ModelOptions::default());
    let want = generate(&reference, &small_ctx(), 16);
    drop(reference);
    for (mode, name, mapped) in [
        (LoadMode::None, "none", false),
        (LoadMode::Mmap, "mmap", true),
        (LoadMode::Mlock, "mlock", false),
        (LoadMode::MmapMlock, "mmap+mlock", true),
        (LoadMode::DirectIo, "dio", false),
    ] {
        // mlock may fail under RLIMIT_MEMLOCK: llama.cpp then only warns and loads.
        let (model, lines) = load(&spec, &ModelOptions { load_mode: mode, ..Default::default() });
        let said = lines.iter().find_map(|l| l.strip_prefix("load_tensors: loading model tensors")).unwrap();
        assert!(said.ends_with(&format!("(load_mode = {name})")), "{mode:?}: {said}");
        // A memory-mapped model lives in a `CPU_Mapped` buffer, a read one in a `CPU` buffer.
        let buffers: Vec<&String> = lines.iter().filter(|l| l.contains("model buffer size")).collect();
        assert_eq!(buffers.iter().any(|l| l.contains("CPU_Mapped")), mapped, "{mode:?}: {buffers:?}");
        assert_eq!(generate(&model, &small_ctx(), 16), want, "{mode:?}");
    }
}

#[test]
fn thread_placement_pins_without_changing_the_output() {
    let _s = serial();
    let (model, _) = load(&ModelSpec::tiny_llama(), &ModelOptions::default());
    let want = generate(&model, &small_ctx(), 16);
    // One thread per CPU of the mask: more threads than CPUs would spin against each other
    // (2 threads pinned to one CPU take seconds for these 16 tokens).
    let mut cases = vec![("0x1", true, 1), ("1", false, 1)];
    if std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) {
        cases.push(("0x3", true, 2));
    }
    for (mask, strict, threads) in cases {
        let ctx = ContextOptions {
            n_threads: Some(threads),
            placement: ThreadPlacement { cpu_mask: Some(mask.into()), strict, poll: 0, ..Default::default() },
            ..small_ctx()
        };
        assert_eq!(generate(&model, &ctx, 16), want, "-C {mask} --cpu-strict {strict} -t {threads}");
    }
    let too_long = "f".repeat(129);
    for bad in ["0xZZ", "0x", "0x0", too_long.as_str()] {
        let ctx = ContextOptions {
            placement: ThreadPlacement { cpu_mask: Some(bad.to_string()), ..Default::default() },
            ..small_ctx()
        };
        let err = Context::new(&model, &ctx).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { option, value, reason: Reason::CpuMask(_) }
                if option.to_string().contains("cpu_mask") && value == bad),
            "{bad}: {err}"
        );
    }
}
