//! llama.cpp flag strings ⇄ typed options: every supported flag, round trips, malformed input,
//! and the traps of llama.cpp's parser (see `llama_runner::flags`).

use std::path::Path;

use llama_runner::backend::Numa;
use llama_runner::flags::{self, CParser, DeviceProblem, Dialect, FlagReason, Parsed, RuleProblem};
use llama_runner::options::{
    EXPERTS_REGEX, MAX_CPUS, NamedOption, layer_experts_regex, max_devices, max_tensor_overrides,
};
use llama_runner::{
    BufferTarget, CacheType, CpuMask, Error, FlashAttn, GpuLayers, LoadMode, Priority, RunOptions, SamplerType,
    ScaledPath, SpecType, SplitMode, TensorOverride,
};

/// Flag strings used in this file: each must survive parse → render → parse.
const SAMPLES: &[&str] = &[
    "",
    "-m /models/x.gguf -ngl all -ot exps=CPU -ctk q8_0 -ctv q8_0 -t 16 -c 32768 --no-mmap",
    "-ngl 99 -cmoe -lm mlock --swa-full -fa on -kvu -nkvo --no-op-offload -nr --no-host",
    "-cmoe -ot exps=CUDA0",
    "-ncmoe 3 -ot 'blk\\.1\\.=CUDA0' -ot x=CPU -ncmoe 2",
    "--mlock --no-mmap",
    "-C 0x0f -C 0xf0 -Cr 8-9 --cpu-strict 1 --prio 2 --poll 0 -t 4",
    "-ts 3,,1/2 -sm row -mg 1 -dev CUDA0,CUDA1 --numa isolate",
    "-dev none -ngl auto -np 4 -b 4096 -ub 1024 -tb 8",
    "--spec-type ngram-simple --spec-ngram-simple-size-n 3 --spec-ngram-simple-size-m 16 --spec-draft-n-min 2",
    "-md draft.gguf --spec-draft-n-max 8 --spec-draft-p-min 0.5 --spec-type draft-simple,none",
    "--lora a.gguf,b.gguf --lora-scaled c.gguf:0.5 --control-vector-scaled '\"x,y.gguf\":2' --control-vector-layer-range 2 5",
    "-c 32k -t 16.5",
    "--host 0.0.0.0 --port 8080 --jinja -a my-model -fit off",
    "-c 4096 --temp 0.5 --top-k 5 -t 2 --ignore-eos -s 42 --samplers 'top_k;temperature' --mirostat 2",
];

fn p(flags: &str) -> Parsed {
    flags::parse(flags).unwrap_or_else(|e| panic!("`{flags}` does not parse: {e}"))
}

fn o(flags: &str) -> RunOptions {
    p(flags).options
}

fn warned(parsed: &Parsed, needle: &str) -> bool {
    parsed.warnings.iter().any(|w| w.contains(needle))
}

#[track_caller]
fn assert_warned(flags: &str, needle: &str) -> Parsed {
    let parsed = p(flags);
    assert!(warned(&parsed, needle), "`{flags}`: no warning containing `{needle}` in {:#?}", parsed.warnings);
    parsed
}

/// The error of a flag string that must not parse, checked to name `flag` (and `value` when
/// given); returns its message.
#[track_caller]
fn flag_error(flags: &str, flag: &str, value: Option<&str>) -> String {
    match flags::parse(flags) {
        Ok(parsed) => panic!("`{flags}` parsed: {:?}", parsed.options),
        Err(e @ Error::Flag { .. }) => {
            let Error::Flag { flag: f, value: v, .. } = &e else { unreachable!() };
            assert_eq!(f, flag, "`{flags}`: {e}");
            if let Some(value) = value {
                assert_eq!(v.as_deref(), Some(value), "`{flags}`: {e}");
            }
            let msg = e.to_string();
            assert!(msg.contains(flag), "{msg}");
            msg
        }
        Err(e) => panic!("`{flags}`: not a flag error: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Every flag, every spelling.

#[test]
fn every_spelling_of_every_flag() {
    let d = RunOptions::default();
    for f in ["-m", "--model"] {
        assert_eq!(o(&format!("{f} /m/a.gguf")).model_path, Some("/m/a.gguf".into()), "{f}");
    }
    for f in ["-ot", "--override-tensor", "--override_tensor"] {
        assert_eq!(
            o(&format!("{f} a=CPU,b=CUDA0")).model.tensor_overrides,
            vec![
                TensorOverride::cpu("a"),
                TensorOverride { pattern: "b".into(), target: BufferTarget::Device("CUDA0".into()) }
            ],
            "{f}"
        );
    }
    for f in ["-cmoe", "--cpu-moe"] {
        assert!(o(f).model.cpu_moe, "{f}");
    }
    for f in ["-ncmoe", "--n-cpu-moe"] {
        assert_eq!(o(&format!("{f} 7")).model.n_cpu_moe, 7, "{f}");
    }
    for (f, mode) in [
        ("--mlock", LoadMode::Mlock),
        ("--no-mmap", LoadMode::None),
        ("--mmap", LoadMode::Mmap),
        ("-dio", LoadMode::DirectIo),
        ("--direct-io", LoadMode::DirectIo),
        ("-ndio", LoadMode::None),
        ("--no-direct-io", LoadMode::None),
    ] {
        assert_eq!(o(f).model.load_mode, mode, "{f}");
    }
    for f in ["-lm", "--load-mode"] {
        for (v, mode) in [
            ("none", LoadMode::None),
            ("mmap", LoadMode::Mmap),
            ("mlock", LoadMode::Mlock),
            ("mmap+mlock", LoadMode::MmapMlock),
            ("dio", LoadMode::DirectIo),
        ] {
            let parsed = p(&format!("{f} {v}"));
            assert_eq!(parsed.options.model.load_mode, mode, "{f} {v}");
            assert!(parsed.warnings.is_empty(), "{f} {v}: {:?}", parsed.warnings);
        }
    }
    assert!(o("--swa-full").context.swa_full);
    for f in ["-ctk", "--cache-type-k"] {
        for t in CacheType::ALL {
            assert_eq!(o(&format!("{f} {t}")).context.type_k, t);
        }
    }
    for f in ["-ctv", "--cache-type-v"] {
        for t in CacheType::ALL {
            assert_eq!(o(&format!("{f} {t}")).context.type_v, t);
        }
    }
    for f in ["-fa", "--flash-attn"] {
        for (v, fa) in [
            ("on", FlashAttn::On),
            ("enabled", FlashAttn::On),
            ("true", FlashAttn::On),
            ("1", FlashAttn::On),
            ("off", FlashAttn::Off),
            ("disabled", FlashAttn::Off),
            ("false", FlashAttn::Off),
            ("0", FlashAttn::Off),
            ("auto", FlashAttn::Auto),
            ("-1", FlashAttn::Auto),
        ] {
            assert_eq!(o(&format!("-fa on {f} {v}")).context.flash_attn, fa, "{f} {v}");
        }
    }
    for f in ["-t", "--threads"] {
        assert_eq!(o(&format!("{f} 12")).context.n_threads, Some(12));
    }
    for f in ["-tb", "--threads-batch"] {
        assert_eq!(o(&format!("{f} 6")).context.n_threads_batch, Some(6));
    }
    for f in ["-c", "--ctx-size", "--ctx_size"] {
        assert_eq!(o(&format!("{f} 4096")).context.n_ctx, 4096);
    }
    for f in ["-b", "--batch-size"] {
        assert_eq!(o(&format!("{f} 1024")).context.n_batch, 1024);
    }
    for f in ["-ub", "--ubatch-size"] {
        assert_eq!(o(&format!("{f} 128")).context.n_ubatch, 128);
    }
    for f in ["-np", "--parallel"] {
        assert_eq!(o(&format!("{f} 3")).context.n_seq_max, 3);
    }
    for f in ["-ngl", "--gpu-layers", "--n-gpu-layers", "--n_gpu_layers"] {
        assert_eq!(o(&format!("{f} 33")).model.gpu_layers, GpuLayers::Count(33));
        assert_eq!(o(&format!("{f} all")).model.gpu_layers, GpuLayers::All);
        assert_eq!(o(&format!("-ngl 3 {f} auto")).model.gpu_layers, GpuLayers::Auto);
    }
    for f in ["-sm", "--split-mode"] {
        for (v, sm) in [
            ("none", SplitMode::None),
            ("layer", SplitMode::Layer),
            ("row", SplitMode::Row),
            ("tensor", SplitMode::Tensor),
        ] {
            assert_eq!(o(&format!("{f} {v}")).model.split_mode, sm);
        }
    }
    for f in ["-mg", "--main-gpu"] {
        assert_eq!(o(&format!("{f} 2")).model.main_gpu, 2);
    }
    for f in ["-ts", "--tensor-split"] {
        assert_eq!(o(&format!("{f} 3,1")).model.tensor_split, vec![3.0, 1.0]);
    }
    for f in ["-dev", "--device"] {
        assert_eq!(o(&format!("{f} CUDA0,CUDA1")).model.devices, Some(vec!["CUDA0".into(), "CUDA1".into()]));
        assert_eq!(o(&format!("{f} none")).model.devices, Some(vec![]));
    }
    for f in ["-nkvo", "--no-kv-offload"] {
        assert!(!o(f).context.offload_kqv);
        assert!(o(&format!("{f} -kvo")).context.offload_kqv);
        assert!(o(&format!("{f} --kv-offload")).context.offload_kqv);
    }
    assert!(!o("--no-op-offload").context.op_offload);
    assert!(o("--no-op-offload --op-offload").context.op_offload);
    assert!(o("--no-host").model.no_host);
    for f in ["-nr", "--no-repack"] {
        assert!(!o(f).model.repack);
        assert!(o(&format!("{f} --repack")).model.repack);
    }
    for f in ["-kvu", "--kv-unified"] {
        assert!(o(f).context.kv_unified);
    }
    for f in ["-no-kvu", "--no-kv-unified"] {
        assert!(!o(&format!("-kvu {f}")).context.kv_unified);
    }
    assert!(o("").context.perf, "timings are on by default, as in the CLI");
    assert!(!o("--no-perf").context.perf);
    assert!(o("--no-perf --perf").context.perf);
    for (v, numa) in [("distribute", Numa::Distribute), ("isolate", Numa::Isolate), ("numactl", Numa::Numactl)] {
        assert_eq!(o(&format!("--numa {v}")).backend.numa, numa);
    }
    for f in ["-C", "--cpu-mask"] {
        assert_eq!(o(&format!("{f} 0xff")).context.placement.cpu_mask.as_deref(), Some("0xff"));
        assert_eq!(o(&format!("{f} ff00")).context.placement.cpu_mask.as_deref(), Some("ff00"));
    }
    for f in ["-Cr", "--cpu-range"] {
        assert_eq!(o(&format!("{f} 4-7")).context.placement.cpu_mask.as_deref(), Some("0xf0"));
        assert_eq!(o(&format!("{f} -3")).context.placement.cpu_mask.as_deref(), Some("0xf"));
    }
    assert!(o("--cpu-strict 1").context.placement.strict);
    assert!(!o("--cpu-strict 1 --cpu-strict 0").context.placement.strict);
    for (v, prio) in [
        ("-1", Priority::Low),
        ("0", Priority::Normal),
        ("1", Priority::Medium),
        ("2", Priority::High),
        ("3", Priority::Realtime),
    ] {
        assert_eq!(o(&format!("--prio {v}")).context.placement.priority, prio);
    }
    assert_eq!(o("--poll 0").context.placement.poll, 0);
    assert_eq!(o("--poll 100").context.placement.poll, 100);
    assert_eq!(o(""), d);
}

#[test]
fn values_are_the_next_word_and_quotes_are_shell_quotes() {
    // A value may start with `-`, as in llama.cpp.
    assert_eq!(o("-m -model.gguf").model_path, Some("-model.gguf".into()));
    let parsed = o(r#"-ot "blk\.(1[0-9])\.ffn_.*=CPU" -ot 'say "hi"=CUDA0' -m my\ model.gguf"#);
    assert_eq!(parsed.model.tensor_overrides[0].pattern, r"blk\.(1[0-9])\.ffn_.*");
    assert_eq!(parsed.model.tensor_overrides[1].pattern, r#"say "hi""#);
    assert_eq!(parsed.model_path, Some("my model.gguf".into()));
    // A comment at the end, as in a shell.
    assert_eq!(o("-c 512 # the context").context.n_ctx, 512);
    // Already split words.
    let args = ["-ot", "a b=CPU", "-c", "64"];
    let parsed = flags::parse_args(&args).unwrap();
    assert_eq!(parsed.options.model.tensor_overrides, vec![TensorOverride::cpu("a b")]);
    assert_eq!(parsed.options.context.n_ctx, 64);
}

#[test]
fn server_only_flags_are_ignored_with_a_warning() {
    let parsed = p("--host 0.0.0.0 --port 8080 --jinja --no-webui -a name --api-key k --metrics --slots --props");
    assert_eq!(parsed.options, RunOptions::default());
    for f in ["--host", "--port", "--jinja", "--no-webui", "-a", "--api-key", "--metrics", "--slots", "--props"] {
        assert!(warned(&parsed, &format!("`{f}` only configures llama-server")), "{f}: {:?}", parsed.warnings);
    }
    assert!(p("-fit off").warnings.is_empty());
    assert_warned("-fit on", "never runs llama.cpp's fit step");
}

// ---------------------------------------------------------------------------------------------
// Round trips.

/// A small deterministic generator (xorshift64*), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

const PATTERNS: &[&str] = &[
    "exps",
    r"blk\.(1[0-9]|2[0-3])\.ffn_.*_exps",
    "a b",
    "it's",
    r#"say "hi""#,
    r"\$HOME`x`",
    r"^token_embd\.weight$",
    r"ffn_(up|down)_exps\.weight",
    r"[*?]\\",
    "x{2}",
    EXPERTS_REGEX,
    "ü-ñ",
    "#not-a-comment",
    ";semi;colon",
];

/// Options whose every field is expressible as llama-server flags (no environment knobs).
fn random_options(rng: &mut Rng, i: usize) -> RunOptions {
    let mut o = RunOptions {
        model_path: rng
            .pick(&[None, Some("/models/x y.gguf"), Some(r#"rel/it's "q".gguf"#), Some("-dash.gguf")])
            .map(Into::into),
        ..RunOptions::default()
    };
    let m = &mut o.model;
    m.devices = rng.pick(&[
        None,
        Some(vec![]),
        Some(vec!["CUDA0".to_string()]),
        Some(vec!["CUDA0".to_string(), "CUDA1".to_string()]),
        Some(vec!["Vulkan0".to_string()]),
    ]);
    m.gpu_layers =
        [GpuLayers::Auto, GpuLayers::All, GpuLayers::Count(rng.below(200) as u32), GpuLayers::Count(i32::MAX as u32)]
            [i % 4];
    m.split_mode = [SplitMode::None, SplitMode::Layer, SplitMode::Row, SplitMode::Tensor][i % 4];
    m.main_gpu = rng.below(4) as u32;
    let n_split = if rng.flip() { 0 } else { 1 + rng.below(15) };
    m.tensor_split =
        (0..n_split).map(|_| rng.pick(&[0.0f32, 1.0, 3.0, 0.5, 0.1, 2.75, 1e-3, 123_456.78, 1e-30])).collect();
    let n_ot = rng.below(5);
    m.tensor_overrides = (0..n_ot)
        .map(|_| TensorOverride {
            pattern: rng.pick(PATTERNS).to_string(),
            target: rng.pick(&[
                BufferTarget::Cpu,
                BufferTarget::Device("CUDA0".into()),
                BufferTarget::Device("CUDA1".into()),
            ]),
        })
        .collect();
    m.cpu_moe = rng.flip();
    m.n_cpu_moe = rng.pick(&[0, 0, 1, 5, 48]);
    m.load_mode = [LoadMode::None, LoadMode::Mmap, LoadMode::Mlock, LoadMode::MmapMlock, LoadMode::DirectIo][i % 5];
    m.repack = rng.flip();
    m.no_host = rng.flip();
    let c = &mut o.context;
    c.n_ctx = rng.pick(&[0, 512, 32768, 131_072, i32::MAX as u32]);
    c.n_batch = rng.pick(&[1, 512, 2048, 4096]);
    c.n_ubatch = rng.pick(&[1, 256, 512, 2048]);
    c.n_seq_max = rng.pick(&[1, 2, 4, 256]);
    c.n_threads = rng.pick(&[None, Some(1), Some(16), Some(64)]);
    c.n_threads_batch = rng.pick(&[None, Some(2), Some(32)]);
    c.flash_attn = [FlashAttn::Auto, FlashAttn::On, FlashAttn::Off][i % 3];
    c.type_k = CacheType::ALL[i % 9];
    c.type_v = CacheType::ALL[(i / 9) % 9];
    c.offload_kqv = rng.flip();
    c.op_offload = rng.flip();
    c.swa_full = rng.flip();
    c.kv_unified = rng.flip();
    c.perf = rng.flip();
    c.placement.cpu_mask = rng
        .pick(&[
            None,
            Some("0xff"),
            Some("ff"),
            Some("0x1"),
            Some("0xFFFF0000"),
            Some("0x8000000000000000000000000000000000"),
        ])
        .map(Into::into);
    c.placement.strict = rng.flip();
    c.placement.priority =
        [Priority::Low, Priority::Normal, Priority::Medium, Priority::High, Priority::Realtime][i % 5];
    c.placement.poll = rng.pick(&[0, 1, 50, 100, 1000]);
    o.backend.numa = [Numa::Disabled, Numa::Distribute, Numa::Isolate, Numa::Numactl][i % 4];
    let s = &mut o.sampling;
    s.seed = rng.pick(&[s.seed, 0, 42, u32::MAX - 1]);
    s.temp = rng.pick(&[s.temp, 0.0, 0.5, 1.25]);
    s.top_k = rng.pick(&[s.top_k, 0, 1, 100]);
    s.top_p = rng.pick(&[s.top_p, 0.5, 1.0]);
    s.ignore_eos = rng.flip();
    s.samplers = rng.pick(&[s.samplers.clone(), vec![SamplerType::TopK, SamplerType::Temperature], vec![]]);
    let a = &mut o.adapters;
    let scaled = |p: &str, scale: f32| ScaledPath { path: p.into(), scale };
    a.loras =
        rng.pick(&[vec![], vec![scaled("l.gguf", 1.0)], vec![scaled("a,b.gguf", 0.25), scaled("\"q\".gguf", -1.5)]]);
    a.control_vectors = rng.pick(&[vec![], vec![scaled("cv.gguf", 2.0), scaled("cv2.gguf", 1.0)]]);
    a.control_vector_layers = rng.pick(&[None, Some((1, 3)), Some((-1, 0))]);
    o
}

#[test]
fn speculative_flags() {
    let o = o("-md d.gguf --spec-draft-n-max 5 --spec-draft-n-min 1 --draft-p-min 0.25");
    let s = &o.speculative;
    assert_eq!((s.draft_model.as_deref(), s.n_max, s.n_min, s.p_min), (Some(Path::new("d.gguf")), 5, 1, 0.25));
    assert_eq!(s.drafter().unwrap(), Some(SpecType::DraftSimple), "a draft model alone means draft-simple");
    let o = self::o("--spec-type ngram-simple --spec-ngram-simple-size-n 2");
    assert_eq!(o.speculative.drafter().unwrap(), Some(SpecType::NgramSimple));
    assert_eq!(o.speculative.ngram_size_n, 2);
    assert_eq!(self::o("").speculative.drafter().unwrap(), None);
    assert!(self::o("--spec-type draft-simple").speculative.drafter().is_err(), "no draft model");
    assert!(self::o("-md d.gguf --spec-type ngram-simple").speculative.drafter().is_err(), "two drafters");
    assert!(flags::render(&self::o("-md d.gguf"), Dialect::Bench).omitted.iter().any(|w| w.contains("speculative")));
    let o = self::o("--spec-type ngram-map-k4v --spec-ngram-map-k4v-size-n 4 --spec-ngram-map-k4v-min-hits 2");
    assert_eq!(o.speculative.drafter().unwrap(), Some(SpecType::NgramMapK4v));
    assert_eq!(
        (o.speculative.map_k4v.size_n, o.speculative.map_k4v.size_m, o.speculative.map_k4v.min_hits),
        (4, 48, 2)
    );
    let o = self::o("--spec-type ngram-map-k --spec-ngram-map-k-size-m 16");
    assert_eq!(o.speculative.drafter().unwrap(), Some(SpecType::NgramMapK));
    assert_eq!(o.speculative.map_k.size_m, 16);
    let back = flags::parse(&flags::render(&o, Dialect::Server).to_string()).unwrap();
    assert_eq!(back.options.speculative, o.speculative, "renders back");
    let e = self::o("--spec-type ngram-map-k,ngram-simple").speculative.drafter().unwrap_err().to_string();
    assert!(e.contains("one drafter at a time"), "{e}");
    for (flags, flag) in [
        ("--spec-type ngram-mod", "--spec-type"),
        ("--spec-ngram-map-k-size-n 0", "--spec-ngram-map-k-size-n"),
        ("--spec-ngram-map-k4v-size-m 1025", "--spec-ngram-map-k4v-size-m"),
        ("--spec-ngram-map-k-min-hits 0", "--spec-ngram-map-k-min-hits"),
        ("--spec-type warp", "--spec-type"),
        ("--spec-ngram-simple-size-n 0", "--spec-ngram-simple-size-n"),
        ("--spec-ngram-simple-size-m 2000", "--spec-ngram-simple-size-m"),
        ("--spec-draft-n-max -1", "--spec-draft-n-max"),
        ("-md ''", "-md"),
    ] {
        flag_error(flags, flag, None);
    }
}

#[test]
fn lora_and_control_vector_flags() {
    let o = o("--lora a.gguf,b.gguf --lora-scaled c.gguf:0.5,d.gguf:2 --lora e.gguf --control-vector v.gguf \
               --control-vector-scaled '\"w,1.gguf\":-0.5' --control-vector-layer-range 2 5");
    let scaled = |p: &str, scale: f32| ScaledPath { path: p.into(), scale };
    assert_eq!(
        o.adapters.loras,
        [
            scaled("a.gguf", 1.0),
            scaled("b.gguf", 1.0),
            scaled("c.gguf", 0.5),
            scaled("d.gguf", 2.0),
            scaled("e.gguf", 1.0)
        ]
    );
    assert_eq!(o.adapters.control_vectors, [scaled("v.gguf", 1.0), scaled("w,1.gguf", -0.5)]);
    assert_eq!(o.adapters.control_vector_layers, Some((2, 5)));
    let bench = flags::render(&o, Dialect::Bench);
    assert!(bench.omitted.iter().any(|w| w.contains("LoRA")), "{:?}", bench.omitted);
    assert_warned("--lora-scaled a.gguf:0.5x", "read as 0.5");
    for (flags, flag) in [
        ("--lora-scaled a.gguf", "--lora-scaled"),
        ("--lora-scaled a:b:0.5", "--lora-scaled"),
        ("--lora-scaled a.gguf:x", "--lora-scaled"),
        ("--control-vector-scaled v.gguf", "--control-vector-scaled"),
        ("--lora a.gguf,,b.gguf", "--lora"),
        ("--control-vector-layer-range 1", "--control-vector-layer-range"),
        ("--control-vector-layer-range 1 x", "--control-vector-layer-range"),
    ] {
        flag_error(flags, flag, None);
    }
}

#[test]
fn render_then_parse_gives_the_same_options() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000 {
        let o = random_options(&mut rng, i);
        let rendered = flags::render(&o, Dialect::Server);
        assert!(rendered.omitted.is_empty(), "{i}: {:?}", rendered.omitted);
        let line = rendered.to_string();
        let back = flags::parse(&line).unwrap_or_else(|e| panic!("{i}: `{line}` does not parse: {e}"));
        assert_eq!(back.options, o, "{i}: `{line}`");
        assert_eq!(flags::render(&back.options, Dialect::Server).to_string(), line, "{i}");
    }
}

#[test]
fn parse_render_parse_is_stable() {
    for s in SAMPLES {
        let first = o(s);
        let line = flags::render(&first, Dialect::Server).to_string();
        let second = o(&line);
        assert_eq!(second, first, "`{s}` → `{line}`");
        assert_eq!(flags::render(&second, Dialect::Server).to_string(), line, "`{s}`");
    }
}

#[test]
fn render_writes_only_what_differs_from_the_defaults() {
    assert_eq!(flags::render(&RunOptions::default(), Dialect::Server).to_string(), "");
    assert_eq!(flags::render(&RunOptions::default(), Dialect::Bench).to_string(), "");
    let o = o("-m /models/x.gguf -ngl all -ot exps=CPU -ctk q8_0 -ctv q8_0 -t 16 -c 32768 --no-mmap");
    assert_eq!(
        flags::render(&o, Dialect::Server).to_string(),
        "-m /models/x.gguf -ngl all -ot 'exps=CPU' -lm none -c 32768 -t 16 -ctk q8_0 -ctv q8_0"
    );
}

#[test]
fn render_for_llama_bench() {
    let o =
        o("-m /models/x.gguf -ngl all -ot exps=CPU,x=CUDA0 -cmoe -ncmoe 2 -ctk q8_0 -ctv f32 -t 16 -tb 8 -c 32768 \
               --no-mmap -fa on -nkvo --no-op-offload --no-host -ts 3,1 -dev CUDA0,CUDA1 --swa-full -kvu -np 2 -nr \
               -C 0xff --cpu-strict 1 --poll 10 --prio 2 --numa distribute");
    let r = flags::render(&o, Dialect::Bench);
    assert_eq!(
        r.to_string(),
        r"-m /models/x.gguf -ngl 999 -ts 3/1 -dev CUDA0/CUDA1 -ot 'exps=CPU;x=CUDA0;\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU' -ncmoe 2 -lm none --no-host 1 -t 16 -fa 1 -ctk q8_0 -nkvo 1 -nopo 1 -C 0xff --cpu-strict 1 --prio 2 --poll 10 --numa distribute"
    );
    let omitted = r.omitted.join("\n");
    for what in ["-nr", "-c 32768", "-np 2", "-tb 8", "-ctv f32", "--swa-full", "-kvu"] {
        assert!(omitted.contains(what), "{what} not in {omitted}");
    }
    let fa_off = flags::render(&self::o("-fa off"), Dialect::Bench);
    assert_eq!(fa_off.to_string(), "-fa 0");
}

#[test]
fn what_cannot_be_written_is_listed() {
    let mut o = RunOptions::default();
    o.model.tensor_overrides =
        vec![TensorOverride::cpu("a{1,3}"), TensorOverride::cpu("ok"), TensorOverride::cpu("(?=x)")];
    o.backend.env.cuda_graph_opt = Some(true);
    o.backend.env.cuda_pdl = Some(false);
    o.backend.env.cuda_no_pinned = Some(false);
    o.context.n_ctx = u32::MAX;
    let r = flags::render(&o, Dialect::Server);
    assert_eq!(r.to_string(), "-ot 'ok=CPU'");
    let omitted = r.omitted.join("\n");
    assert!(omitted.contains("a{1,3}"), "{omitted}");
    assert!(omitted.contains("(?=x)"), "{omitted}");
    assert!(omitted.contains("GGML_CUDA_GRAPH_OPT=1 GGML_CUDA_PDL=0"), "{omitted}");
    assert!(omitted.contains("unset GGML_CUDA_NO_PINNED"), "{omitted}");
    assert!(omitted.contains("4294967295"), "{omitted}");
    let bench = flags::render(&self::o("-ot 'a;b=CPU'"), Dialect::Bench);
    assert_eq!(bench.to_string(), "");
    assert!(bench.omitted.join("").contains("a;b"));
}

// ---------------------------------------------------------------------------------------------
// Malformed input: an error naming the flag and the value.

/// The typed reason each malformed flag string of
/// [`malformed_flags_are_errors_naming_flag_and_value`] is refused for.
fn expected_reason(flags: &str) -> FlagReason {
    const NP_NOTE: &str = "llama-server's -1 means \"auto\", its own choice of slots; give a number";
    let rule = |rule: &str, problem| FlagReason::OverrideRule { rule: rule.to_string(), problem };
    let device = |name: &str, problem| FlagReason::Device { name: name.to_string(), problem };
    match flags {
        "-ctk q9_0" => FlagReason::UnknownName { what: "cache type", accepted: CacheType::NAMES },
        "--cache-type-v Q8_0" => FlagReason::UnknownName { what: "cache type", accepted: CacheType::NAMES },
        "-ctv" => FlagReason::MissingValue,
        "-c abc" => FlagReason::NotANumber { parser: CParser::Stoi },
        "-c 99999999999" => FlagReason::OutOfRange { parser: CParser::Stoi },
        "-c -5" => FlagReason::TooSmall { value: -5, min: 0, note: None },
        "-b 0" => FlagReason::TooSmall { value: 0, min: 1, note: None },
        "-ub -3" => FlagReason::TooSmall { value: -3, min: 1, note: None },
        "-np 0" => FlagReason::TooSmall { value: 0, min: 1, note: Some(NP_NOTE) },
        "-np -1" => FlagReason::TooSmall { value: -1, min: 1, note: Some(NP_NOTE) },
        "-t x" => FlagReason::NotANumber { parser: CParser::Stoi },
        "-ngl lots" => FlagReason::NotANumber { parser: CParser::Stoi },
        "-sm rows" => FlagReason::NotOneOf { accepted: SplitMode::NAMES, note: None },
        "-lm mmap-mlock" => FlagReason::NotOneOf { accepted: LoadMode::NAMES, note: None },
        "-fa yes" => FlagReason::NotOneOf {
            accepted: &["on", "off", "auto"],
            note: Some("nor enabled/true/1, disabled/false/0, -1"),
        },
        "--numa all" => FlagReason::NotOneOf { accepted: &["distribute", "isolate", "numactl"], note: None },
        "-ot exps" => rule("exps", RuleProblem::NoEquals),
        "-ot =CPU" => rule("=CPU", RuleProblem::EmptyPattern),
        "-ot exps=cpu" => rule("exps=cpu", RuleProblem::CaseSensitive { name: "cpu".into() }),
        "-ot exps=CUDA_Host" => rule("exps=CUDA_Host", RuleProblem::HostBuffer { name: "CUDA_Host".into() }),
        "-ot exps=" => rule("exps=", RuleProblem::EmptyBufferType),
        "-ot a=CPU," => rule("", RuleProblem::NoEquals),
        "-ot a=b=CPU" => rule("a=b=CPU", RuleProblem::SplitName { name: "b=CPU".into() }),
        "-ot (=CPU" => rule("(=CPU", RuleProblem::Regex { message: llama_runner::regex::check("(").unwrap_err() }),
        "-dev ''" => device("", DeviceProblem::EmptyName),
        "-dev none,CUDA0" => device("none", DeviceProblem::NoneNotAlone),
        "-dev CPU" => device("CPU", DeviceProblem::Cpu),
        "-ts abc" => FlagReason::NotANumber { parser: CParser::Stof },
        "-ts ,3" => FlagReason::EmptyProportion,
        "-ts ''" => FlagReason::EmptyProportion,
        "-ts 1,-1" => FlagReason::BadProportion { proportion: "-1".into() },
        "-ts inf" => FlagReason::BadProportion { proportion: "inf".into() },
        "-ts 1e99" => FlagReason::OutOfRange { parser: CParser::Stof },
        "-ts 0x10" => FlagReason::HexFloat,
        "-ts 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1" => FlagReason::TooManyProportions { count: 16, max: max_devices() },
        "--prio 5" => FlagReason::NotInRange { value: 5, what: "priority", min: -1, max: 3 },
        "--prio -2" => FlagReason::NotInRange { value: -2, what: "priority", min: -1, max: 3 },
        "--cpu-strict x" => FlagReason::NotANumber { parser: CParser::Stoul },
        "--poll x" => FlagReason::NotANumber { parser: CParser::Stoul },
        "--poll 99999999999999999999" => FlagReason::OutOfRange { parser: CParser::Stoul },
        "-C 0xZZ" => FlagReason::CpuMask(CpuMask::parse_flag("0xZZ").unwrap_err()),
        "-C 0XFF" => FlagReason::CpuMask(CpuMask::parse_flag("0XFF").unwrap_err()),
        "-Cr 5" => FlagReason::NotARange,
        "-Cr 0-999" => FlagReason::CpuOutOfBounds { cpu: 999, last: MAX_CPUS - 1 },
        "-ncmoe -1" => FlagReason::TooSmall { value: -1, min: 0, note: Some("llama.cpp refuses it too") },
        "-mg -1" => FlagReason::TooSmall { value: -1, min: 0, note: None },
        "-m ''" => FlagReason::EmptyPath,
        "-fit maybe" => FlagReason::NotOneOf { accepted: &["on", "off"], note: None },
        "--bogus" => FlagReason::UnknownFlag,
        "-n 128" => FlagReason::UnknownFlag,
        "-p hello" => FlagReason::UnknownFlag,
        "--temp x" => FlagReason::Other("not a number (llama.cpp's std::stof fails)".into()),
        "-Cb 0xff" => FlagReason::UnknownFlag,
        "stray" => FlagReason::NotAFlag,
        "-c 1 2" => FlagReason::NotAFlag,
        "--ctx-size=4096" => FlagReason::EqualsValue { flag: "--ctx-size".into() },
        "-ncmoe 5000 -ot a=CPU" => FlagReason::NCpuMoeTooLarge { max: max_tensor_overrides() },
        _ => panic!("no expected reason for `{flags}`"),
    }
}

#[test]
fn malformed_flags_are_errors_naming_flag_and_value() {
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("-ctk q9_0", "-ctk", Some("q9_0"), "unknown cache type"),
        ("--cache-type-v Q8_0", "--cache-type-v", Some("Q8_0"), "unknown cache type"),
        ("-ctv", "-ctv", None, "missing value"),
        ("-c abc", "-c", Some("abc"), "not a number"),
        ("-c 99999999999", "-c", Some("99999999999"), "out of range"),
        ("-c -5", "-c", Some("-5"), "negative"),
        ("-b 0", "-b", Some("0"), "less than 1"),
        ("-ub -3", "-ub", Some("-3"), "less than 1"),
        ("-np 0", "-np", Some("0"), "less than 1"),
        ("-np -1", "-np", Some("-1"), "auto"),
        ("-t x", "-t", Some("x"), "not a number"),
        ("-ngl lots", "-ngl", Some("lots"), "not a number"),
        ("-sm rows", "-sm", Some("rows"), "not none, layer, row or tensor"),
        ("-lm mmap-mlock", "-lm", Some("mmap-mlock"), "not none, mmap"),
        ("-fa yes", "-fa", Some("yes"), "not on, off or auto"),
        ("--numa all", "--numa", Some("all"), "not distribute"),
        ("-ot exps", "-ot", Some("exps"), "no `=`"),
        ("-ot =CPU", "-ot", Some("=CPU"), "empty pattern"),
        ("-ot exps=cpu", "-ot", Some("exps=cpu"), "case-sensitive"),
        ("-ot exps=CUDA_Host", "-ot", Some("exps=CUDA_Host"), "host buffer"),
        ("-ot exps=", "-ot", Some("exps="), "empty buffer type"),
        ("-ot a=CPU,", "-ot", Some("a=CPU,"), "no `=`"),
        ("-ot a=b=CPU", "-ot", Some("a=b=CPU"), "first `=`"),
        ("-ot (=CPU", "-ot", Some("(=CPU"), "not a valid std::regex"),
        ("-dev ''", "-dev", Some(""), "empty name"),
        ("-dev none,CUDA0", "-dev", Some("none,CUDA0"), "only entry"),
        ("-dev CPU", "-dev", Some("CPU"), "CPU devices"),
        ("-ts abc", "-ts", Some("abc"), "not a number"),
        ("-ts ,3", "-ts", Some(",3"), "empty proportion"),
        ("-ts ''", "-ts", Some(""), "empty proportion"),
        ("-ts 1,-1", "-ts", Some("1,-1"), "non-negative"),
        ("-ts inf", "-ts", Some("inf"), "finite"),
        ("-ts 1e99", "-ts", Some("1e99"), "out of range"),
        ("-ts 0x10", "-ts", Some("0x10"), "hexadecimal"),
        ("-ts 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "-ts", None, "16 or more"),
        ("--prio 5", "--prio", Some("5"), "priority"),
        ("--prio -2", "--prio", Some("-2"), "priority"),
        ("--cpu-strict x", "--cpu-strict", Some("x"), "not a number"),
        ("--poll x", "--poll", Some("x"), "not a number"),
        ("--poll 99999999999999999999", "--poll", Some("99999999999999999999"), "out of range"),
        ("-C 0xZZ", "-C", Some("0xZZ"), "not a hex digit"),
        ("-C 0XFF", "-C", Some("0XFF"), "not a hex digit"),
        ("-Cr 5", "-Cr", Some("5"), "LO-HI"),
        ("-Cr 0-999", "-Cr", Some("0-999"), "out of bounds"),
        ("-ncmoe -1", "-ncmoe", Some("-1"), "negative"),
        ("-mg -1", "-mg", Some("-1"), "negative"),
        ("-m ''", "-m", Some(""), "empty path"),
        ("-fit maybe", "-fit", Some("maybe"), "not on or off"),
        ("--bogus", "--bogus", None, "unknown flag"),
        ("-n 128", "-n", None, "RunOptions does not hold"),
        ("-p hello", "-p", None, "RunOptions does not hold"),
        ("--temp x", "--temp", Some("x"), "not a number"),
        ("-Cb 0xff", "-Cb", None, "RunOptions does not hold"),
        ("stray", "stray", None, "not a flag"),
        ("-c 1 2", "2", None, "not a flag"),
        ("--ctx-size=4096", "--ctx-size=4096", None, "write `--ctx-size VALUE`"),
        ("-ncmoe 5000 -ot a=CPU", "-ncmoe", Some("5000"), "4095"),
    ];
    for (flags, flag, value, reason) in cases {
        let msg = flag_error(flags, flag, *value);
        assert!(msg.contains(reason), "`{flags}`: `{msg}` does not say `{reason}`");
        // The reason is the typed one, and its message is the one checked above.
        let Err(Error::Flag { reason: got, .. }) = flags::parse(flags) else { unreachable!() };
        let expected = expected_reason(flags);
        assert_eq!(got, expected, "`{flags}`: {expected:?}");
        if let Some(v) = value
            && !v.is_empty()
        {
            assert!(msg.contains(v), "`{flags}`: `{msg}` does not name the value");
        }
    }
    let e = flags::parse("-ot 'unbalanced").unwrap_err();
    assert!(e.to_string().contains("unbalanced quote"), "{e}");
    assert!(matches!(&e, Error::Flag { reason, .. } if *reason == FlagReason::UnbalancedQuote), "{e}");
    let e = flags::parse_with_env(&[("LLAMA_ARG_KV_UNIFIED".into(), "maybe".into())], "").unwrap_err();
    assert!(e.to_string().contains("LLAMA_ARG_KV_UNIFIED") && e.to_string().contains("maybe"), "{e}");
    assert!(matches!(&e, Error::Flag { reason, .. } if *reason == FlagReason::NotABoolean), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Traps: llama.cpp's meaning, plus a warning.

#[test]
fn deprecated_load_mode_aliases_assign_one_mode() {
    let parsed = assert_warned("--mlock --no-mmap", "the last flag wins");
    assert_eq!(parsed.options.model.load_mode, LoadMode::None);
    assert!(warned(&parsed, "for no mmap and mlock write `-lm mlock`"));
    assert_eq!(o("--no-mmap --mlock").model.load_mode, LoadMode::Mlock);
    assert_eq!(assert_warned("--mlock --mmap", "-lm mmap+mlock").options.model.load_mode, LoadMode::Mmap);
    assert_eq!(assert_warned("-dio -ndio", "the last flag wins").options.model.load_mode, LoadMode::None);
    assert_eq!(assert_warned("-lm mmap+mlock --no-mmap", "replaces").options.model.load_mode, LoadMode::None);
    // --mlock alone: read into RAM and lock, no mmap (it kept mmap before 5f55650a).
    let parsed = assert_warned("--mlock", "without mmap");
    assert_eq!(parsed.options.model.load_mode, LoadMode::Mlock);
    assert_warned("--no-mmap", "deprecated alias");
    // The same mode twice: no conflict.
    assert!(!warned(&p("--no-mmap -lm none"), "replaces"));
}

#[test]
fn numbers_are_read_as_c_prefixes() {
    for (flags, get, value) in [
        ("-c 32k", (|o: &RunOptions| o.context.n_ctx) as fn(&RunOptions) -> u32, 32),
        ("-c 1e3", |o| o.context.n_ctx, 1),
        ("-c 0x8000", |o| o.context.n_ctx, 0),
        ("-t 16.5", |o| o.context.n_threads.unwrap_or(0), 16),
        ("-ngl 99x", |o| if let GpuLayers::Count(n) = o.model.gpu_layers { n } else { u32::MAX }, 99),
        ("-ncmoe 4.9", |o| o.model.n_cpu_moe, 4),
    ] {
        let parsed = assert_warned(flags, "std::stoi");
        assert_eq!(get(&parsed.options), value, "{flags}");
    }
    // Leading spaces and a plus sign are fine for std::stoi, and not worth a warning.
    let parsed = flags::parse_args(&["-c", " +64"]).unwrap();
    assert_eq!(parsed.options.context.n_ctx, 64);
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    // std::stoul: any non-zero strictness is strict; -1 wraps.
    let parsed = assert_warned("--cpu-strict 2", "non-zero");
    assert!(parsed.options.context.placement.strict);
    assert_eq!(assert_warned("--poll -1", "32-bit").options.context.placement.poll, u32::MAX);
    assert_eq!(assert_warned("--poll 150", "0..100").options.context.placement.poll, 150);
    assert_eq!(assert_warned("-ts 3x,1", "std::stof").options.model.tensor_split, vec![3.0, 1.0]);
}

#[test]
fn zero_or_negative_threads_mean_every_logical_cpu() {
    let all = std::thread::available_parallelism().unwrap().get() as u32;
    for flags in ["-t 0", "-t -1", "--threads -8"] {
        assert_eq!(assert_warned(flags, "every logical CPU").options.context.n_threads, Some(all));
    }
    assert_eq!(assert_warned("-tb 0", "every logical CPU").options.context.n_threads_batch, Some(all));
}

#[test]
fn cpu_masks_add_up() {
    let parsed = assert_warned("-C 0x0f -C 0xf0", "adds the CPUs");
    assert_eq!(parsed.options.context.placement.cpu_mask.as_deref(), Some("0xff"));
    assert_eq!(o("-Cr 0-3 -C 0x30").context.placement.cpu_mask.as_deref(), Some("0x3f"));
    assert_eq!(o("-Cr 62-65").context.placement.cpu_mask.as_deref(), Some("0x3c000000000000000"));
    let parsed = assert_warned("-C 0x0", "selects no CPU");
    assert_eq!(parsed.options.context.placement.cpu_mask, None);
    assert_eq!(assert_warned("-C ''", "selects no CPU").options.context.placement.cpu_mask, None);
    let long = format!("0x1{}", "0".repeat(129));
    let parsed = assert_warned(&format!("-C {long}"), "first 128 hex digits");
    assert_eq!(parsed.options.context.placement.cpu_mask, Some(format!("0x1{}", "0".repeat(127))));
    // The mask names fewer CPUs than threads: llama.cpp warns too.
    assert_warned("-C 0x3 -t 4", "selects 2 CPUs for 4 threads");
    // With -tb, llama.cpp's prompt threads do not get the placement.
    assert_warned("-C 0xff -tb 4", "only apply to generation threads");
    // The tools at the pin ignore placement flags; this runner does not.
    assert_warned("--prio 1", "issue #26997");
}

#[test]
fn override_tensor_syntax_traps() {
    let parsed = assert_warned("-ot 'a=CPU, b=CUDA0'", "space after a comma");
    assert_eq!(parsed.options.model.tensor_overrides[1].pattern, " b");
    let parsed = assert_warned("-ot a=CPU -ot b=CUDA0", "all rules are kept");
    assert_eq!(
        parsed.options.model.tensor_overrides,
        vec![
            TensorOverride::cpu("a"),
            TensorOverride { pattern: "b".into(), target: BufferTarget::Device("CUDA0".into()) }
        ]
    );
}

#[test]
fn cpu_moe_before_an_override_keeps_its_position() {
    let parsed = assert_warned("-cmoe -ot exps=CUDA0", "first match wins");
    let m = &parsed.options.model;
    assert!(!m.cpu_moe);
    assert_eq!(
        m.tensor_overrides,
        vec![
            TensorOverride::cpu(EXPERTS_REGEX),
            TensorOverride { pattern: "exps".into(), target: BufferTarget::Device("CUDA0".into()) }
        ]
    );
    // The effective order is llama.cpp's: the expert rule first.
    assert_eq!(m.effective_overrides(), m.tensor_overrides);

    // After the -ot rules, -cmoe stays a flag and means the same as llama.cpp's order.
    let parsed = p("-ot exps=CUDA0 -cmoe");
    assert!(parsed.options.model.cpu_moe);
    assert!(!warned(&parsed, "first match wins"));

    let parsed = assert_warned("-ncmoe 2 -ot x=CPU -cmoe -ncmoe 1", "per-layer expert rules");
    let m = &parsed.options.model;
    assert_eq!(
        m.tensor_overrides,
        vec![
            TensorOverride::cpu(layer_experts_regex(0)),
            TensorOverride::cpu(layer_experts_regex(1)),
            TensorOverride::cpu("x")
        ]
    );
    assert!(m.cpu_moe);
    assert_eq!(m.n_cpu_moe, 1);
}

#[test]
fn repeated_n_cpu_moe_takes_the_larger() {
    assert_eq!(assert_warned("-ncmoe 4 -ncmoe 2", "the larger count").options.model.n_cpu_moe, 4);
    assert_eq!(o("-ncmoe 2 -ncmoe 4").model.n_cpu_moe, 4);
}

#[test]
fn other_traps() {
    assert_eq!(assert_warned("-ngl -1", "auto").options.model.gpu_layers, GpuLayers::Auto);
    assert_eq!(assert_warned("-ngl -5", "all layers").options.model.gpu_layers, GpuLayers::All);
    assert_eq!(assert_warned("--numa ''", "distribute").options.backend.numa, Numa::Distribute);
    assert_eq!(o("-ts 3,,1/2").model.tensor_split, vec![3.0, 1.0, 2.0]);
    assert_eq!(o("-ts 3,").model.tensor_split, vec![3.0]);
    assert_eq!(assert_warned("-c 4 -c 8", "the last value wins").options.context.n_ctx, 8);
    assert_eq!(assert_warned("-c 4 --ctx-size 8", "the last value wins").options.context.n_ctx, 8);
}

#[test]
fn llama_arg_environment_variables() {
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let parsed =
        flags::parse_with_env(&env(&[("LLAMA_ARG_CTX_SIZE", "100"), ("LLAMA_ARG_N_GPU_LAYERS", "all")]), "-c 200")
            .unwrap();
    assert_eq!(parsed.options.context.n_ctx, 200);
    assert_eq!(parsed.options.model.gpu_layers, GpuLayers::All);
    assert!(warned(&parsed, "`-c` overrides LLAMA_ARG_CTX_SIZE"), "{:?}", parsed.warnings);

    // LLAMA_ARG_NO_* turns the option off whatever its value.
    let parsed = flags::parse_with_env(&env(&[("LLAMA_ARG_NO_MMAP", "0")]), "").unwrap();
    assert_eq!(parsed.options.model.load_mode, LoadMode::None);
    assert!(warned(&parsed, "only checks that a LLAMA_ARG_NO_* variable is set"));
    // A switch variable acts only on a true value.
    let parsed = flags::parse_with_env(&env(&[("LLAMA_ARG_MLOCK", "yes")]), "").unwrap();
    assert_eq!(parsed.options.model.load_mode, LoadMode::Mmap);
    assert!(warned(&parsed, "does nothing"));
    assert!(flags::parse_with_env(&env(&[("LLAMA_ARG_SWA_FULL", "1")]), "").unwrap().options.context.swa_full);
    assert!(!flags::parse_with_env(&env(&[("LLAMA_ARG_KV_OFFLOAD", "off")]), "").unwrap().options.context.offload_kqv);
    // Environment variables come first, in arg.cpp's order, then the flags.
    let parsed =
        flags::parse_with_env(&env(&[("LLAMA_ARG_OVERRIDE_TENSOR", "a=CPU"), ("LLAMA_ARG_CPU_MOE", "1")]), "-ot b=CPU")
            .unwrap();
    assert_eq!(
        parsed.options.model.tensor_overrides,
        vec![TensorOverride::cpu("a"), TensorOverride::cpu(EXPERTS_REGEX), TensorOverride::cpu("b")]
    );
    assert!(warned(&parsed, "LLAMA_ARG_OVERRIDE_TENSOR and `-ot` are both applied"));
    assert!(flags::is_flag_env_var("LLAMA_ARG_NO_MMAP"));
    assert!(flags::is_flag_env_var("LLAMA_ARG_MODEL"));
    assert!(!flags::is_flag_env_var("LLAMA_ARG_N_PREDICT"));
}

// ---------------------------------------------------------------------------------------------
// No panics on any input, and whatever parses renders back to itself.

#[test]
fn random_token_soup_never_panics_and_parsed_input_round_trips() {
    const TOKENS: &[&str] = &[
        "-m",
        "-ot",
        "-cmoe",
        "-ncmoe",
        "--mlock",
        "--no-mmap",
        "--mmap",
        "-lm",
        "-dio",
        "-ndio",
        "--swa-full",
        "-ctk",
        "-ctv",
        "-fa",
        "-t",
        "-tb",
        "-c",
        "-b",
        "-ub",
        "-np",
        "-ngl",
        "-sm",
        "-mg",
        "-ts",
        "-dev",
        "-nkvo",
        "-kvo",
        "--no-op-offload",
        "--no-host",
        "-nr",
        "--repack",
        "-kvu",
        "-no-kvu",
        "--numa",
        "-C",
        "-Cr",
        "--cpu-strict",
        "--prio",
        "--poll",
        "--port",
        "-fit",
        "0",
        "1",
        "-1",
        "2",
        "99",
        "4096",
        "32k",
        "1e3",
        "16.5",
        "",
        " ",
        "all",
        "auto",
        "on",
        "off",
        "q8_0",
        "f32",
        "none",
        "mlock",
        "mmap+mlock",
        "row",
        "distribute",
        "exps=CPU",
        "a=CPU,b=CUDA0",
        "=",
        "(",
        "a=",
        "0xff",
        "0x",
        "ff",
        "0-3",
        "-",
        "3,1",
        ",",
        "/",
        "inf",
        "nan",
        "CUDA0",
        "CPU",
        "x=y=z",
        "ü",
        "9999999999999999999999",
        "-9999999999",
        "\u{0}",
        "'",
        "\"",
        "\\",
        "#",
    ];
    let mut rng = Rng(42);
    let mut parsed_ok = 0;
    for i in 0..20_000 {
        let n = rng.below(8);
        let args: Vec<&str> = (0..n).map(|_| rng.pick(TOKENS)).collect();
        let env: Vec<(String, String)> = if i % 5 == 0 {
            vec![(
                rng.pick(&[
                    "LLAMA_ARG_CTX_SIZE",
                    "LLAMA_ARG_NO_MMAP",
                    "LLAMA_ARG_MLOCK",
                    "LLAMA_ARG_OVERRIDE_TENSOR",
                    "LLAMA_ARG_KV_UNIFIED",
                ])
                .to_string(),
                rng.pick(TOKENS).to_string(),
            )]
        } else {
            vec![]
        };
        let Ok(parsed) = flags::parse_with_env_args(&env, &args) else { continue };
        parsed_ok += 1;
        let _ = flags::render(&parsed.options, Dialect::Bench);
        let rendered = flags::render(&parsed.options, Dialect::Server);
        assert!(rendered.omitted.is_empty(), "{args:?}: {:?}", rendered.omitted);
        let line = rendered.to_string();
        let back = flags::parse(&line).unwrap_or_else(|e| panic!("{args:?} → `{line}`: {e}"));
        assert_eq!(back.options, parsed.options, "{args:?} → `{line}`");
    }
    assert!(parsed_ok > 2_000, "only {parsed_ok} inputs parsed");
    // Whole strings with shell syntax.
    for _ in 0..5_000 {
        let n = rng.below(10);
        let s: String = (0..n).map(|_| format!("{} ", rng.pick(TOKENS))).collect();
        let _ = flags::parse(&s);
    }
}

#[test]
fn sampling_flags_parse_beside_the_run_flags() {
    let parsed = o("-m m.gguf --temp 0.5 -c 4096 --top-k 5 --ignore-eos -s 42 -t 2 --repeat-penalty 1.1");
    assert_eq!((parsed.context.n_ctx, parsed.context.n_threads), (4096, Some(2)));
    let s = &parsed.sampling;
    assert_eq!((s.temp, s.top_k, s.seed, s.ignore_eos, s.penalty_repeat), (0.5, 5, 42, true, 1.1));
    // The value of a run flag is never taken for a sampling flag, nor the other way round.
    assert_eq!(o("-m --temp").model_path.as_deref(), Some(std::path::Path::new("--temp")));
    let e = flags::parse("--samplers -c").unwrap_err().to_string();
    assert!(e.contains("unknown sampler `-c`"), "the next word is the value, even `-c`: {e}");
    let line = flags::render(&parsed, Dialect::Server).to_string();
    assert!(line.contains("--temp 0.5") && line.contains("--top-k 5") && line.contains("--ignore-eos"), "{line}");
    // llama-bench has no sampling flags: left out, and said so.
    let bench = flags::render(&parsed, Dialect::Bench);
    assert!(!bench.to_string().contains("--temp"), "{bench}");
    assert!(bench.omitted.iter().any(|w| w.contains("--temp 0.5")), "{:?}", bench.omitted);
}
