//! llama.cpp flag strings ⇄ typed [`RunOptions`].
//!
//! [`parse`] reads a flag string as llama.cpp's own command-line parser (`common/arg.cpp` at the
//! pinned commit 5f55650a) reads it, with shell-style quoting, and gives it the meaning llama.cpp
//! gives it. [`render`] writes [`RunOptions`] back as flags for llama-server / llama-cli
//! ([`Dialect::Server`]) or for llama-bench ([`Dialect::Bench`]).
//!
//! # Flags
//!
//! | flag | option |
//! |---|---|
//! | `-m, --model FNAME` | `model_path` |
//! | `-ot, --override-tensor PATTERN=BUFT,...` | `model.tensor_overrides` (appended, in order) |
//! | `-cmoe, --cpu-moe` / `-ncmoe, --n-cpu-moe N` | `model.cpu_moe` / `model.n_cpu_moe` |
//! | `-lm, --load-mode none\|mmap\|mlock\|mmap+mlock\|dio` | `model.load_mode` |
//! | `--mlock`, `--mmap`, `--no-mmap`, `-dio, --direct-io`, `-ndio, --no-direct-io` | `model.load_mode` (deprecated aliases) |
//! | `-ngl, --gpu-layers, --n-gpu-layers N\|auto\|all` | `model.gpu_layers` |
//! | `-sm, --split-mode none\|layer\|row\|tensor`, `-mg, --main-gpu N` | `model.split_mode`, `model.main_gpu` |
//! | `-ts, --tensor-split 3,1` | `model.tensor_split` |
//! | `-dev, --device CUDA0,CUDA1\|none` | `model.devices` |
//! | `--repack` / `-nr, --no-repack`, `--no-host` | `model.repack`, `model.no_host` |
//! | `-c, --ctx-size`, `-b, --batch-size`, `-ub, --ubatch-size`, `-np, --parallel` | `context.n_ctx`, `n_batch`, `n_ubatch`, `n_seq_max` |
//! | `-t, --threads`, `-tb, --threads-batch` | `context.n_threads`, `n_threads_batch` |
//! | `-fa, --flash-attn on\|off\|auto` (also `enabled\|true\|1`, `disabled\|false\|0`, `-1`) | `context.flash_attn` |
//! | `-ctk, --cache-type-k`, `-ctv, --cache-type-v` | `context.type_k`, `type_v` |
//! | `-kvo, --kv-offload` / `-nkvo, --no-kv-offload` | `context.offload_kqv` |
//! | `--op-offload` / `--no-op-offload` | `context.op_offload` |
//! | `--swa-full` | `context.swa_full` |
//! | `-kvu, --kv-unified` / `-no-kvu, --no-kv-unified` | `context.kv_unified` |
//! | `--perf` / `--no-perf` | `context.perf` |
//! | `-C, --cpu-mask HEX`, `-Cr, --cpu-range LO-HI` | `context.placement.cpu_mask` |
//! | `--cpu-strict 0\|1`, `--prio -1..3`, `--poll 0..100` | `context.placement` |
//! | `--numa distribute\|isolate\|numactl` | `backend.numa` |
//!
//! As in llama.cpp, a long flag may be written with underscores (`--ctx_size`), a flag's value is
//! always the next word (even one starting with `-`), and `--flag=value` is refused (llama.cpp
//! has no such form: `--ctx-size=4096` is "invalid argument" there). [`parse_with_env`] also reads
//! the `LLAMA_ARG_*` environment variables llama.cpp reads for these flags.
//!
//! Ignored with a warning, because they only configure llama-server's HTTP side: `--host`,
//! `--port`, `-a/--alias`, `--api-key`, `--jinja/--no-jinja`, `--ui/--webui/--no-ui/--no-webui`,
//! `--metrics`, `--props`, `--slots/--no-slots`; and `-fit on|off` (this runner never runs
//! llama.cpp's fit step, so `-fit off` is what it always does; `-fit on` gets a warning). Every
//! other flag, including llama.cpp flags [`RunOptions`] does not hold (`-n`, `--temp`, `-Cb`,
//! `-fitt`, ...), is an error naming it.
//!
//! # Traps in llama.cpp's parser (arg.cpp line numbers at 5f55650a)
//!
//! [`parse`] keeps llama.cpp's meaning in each case and adds a warning that says what happened.
//!
//! - **One load mode** (arg.cpp:2547-2586): `--mlock`, `--mmap`, `--no-mmap`, `-dio` and `-ndio`
//!   are deprecated aliases that each *assign* the single `load_mode`, so the last one wins:
//!   `--mlock --no-mmap` loads without mmap and **without mlock**, `--no-mmap --mlock` is
//!   `-lm mlock`, and `-ndio` means no mmap either (not "back to mmap"). Since 5f55650a `--mlock`
//!   alone means "read into RAM and lock" (no mmap); before, it meant mmap + mlock
//!   (`-lm mmap+mlock`). llama.cpp itself only warns when an alias is combined with `-lm`
//!   (arg.cpp:808).
//! - **Numbers are C prefixes**: integer flags go through `std::stoi` (arg.cpp:779), `--cpu-strict`
//!   and `--poll` through `std::stoul` (arg.cpp:1480, 1497), `-ts` through `std::stof`
//!   (arg.cpp:2708). Parsing stops at the first character that does not fit, so `-c 32k` is 32,
//!   `-t 16.5` is 16, `-c 1e3` is 1 and `-c 0x8000` is 0 (the model's training context); `stoul`
//!   takes `-1` as 2^64-1. None of these is range-checked except `--prio`, `-ncmoe` and `-np`.
//! - **`-t`/`-tb` of 0 or less** (arg.cpp:1437-1455) mean `std::thread::hardware_concurrency()`,
//!   every logical CPU, not the default (physical cores); the parsed options hold that number.
//! - **`-C` masks add up** (common.cpp:349-383): each `-C`/`-Cr` ORs CPUs into the mask instead
//!   of replacing it; only the first 128 hex digits are read and only a lower-case `0x` prefix
//!   is skipped; a mask that selects no CPU pins nothing (ggml-cpu.c:2682).
//! - **`-tb` splits the placement** (common.cpp:288-299): with `-tb`, prompt threads do not
//!   inherit `-C/--cpu-strict/--prio/--poll` (they have their own `-Cb ...` flags), while this
//!   runner applies one placement to both.
//! - **Placement flags do nothing in llama-server/llama-cli at the pin**: those tools never attach
//!   a threadpool built from `-C/--cpu-strict/--prio/--poll` (llama.cpp issue #26997, fixed after
//!   b10200 by PR #27026); this runner applies them through a ggml threadpool, as llama-bench does.
//! - **`-ot` syntax** (arg.cpp:250-281): rules are split at *every* comma and a rule at its
//!   *first* `=`, so patterns can hold neither; nothing is trimmed, so `-ot "a=CPU, b=CPU"`
//!   makes the pattern ` b` that never matches a tensor name; buffer type names are
//!   case-sensitive and host buffers (`CUDA_Host`) are not among them. Given several times,
//!   `-ot` appends, although llama.cpp then warns that "only last value will be used"
//!   (arg.cpp:756).
//! - **`-cmoe`/`-ncmoe` are positional** (arg.cpp:2626-2646): they push their overrides where they
//!   appear, and the first matching override wins (llama-model-loader.cpp:1152-1176), so
//!   `-cmoe -ot "exps=CUDA0"` keeps the experts on the CPU. [`RunOptions`] applies
//!   `tensor_overrides` before `cpu_moe`/`n_cpu_moe`, so a `-cmoe`/`-ncmoe` that comes before an
//!   `-ot` is turned into explicit `tensor_overrides` entries at its position. `-ncmoe` given
//!   twice pushes both sets: the larger count applies, whatever the order.
//! - **`-ngl`** (arg.cpp:2650-2666): `-1` is `auto` and any value below `-1` is `all`.
//! - **`--numa ""`** is `distribute` (arg.cpp:2598).
//! - **`-ts`** (arg.cpp:2692-2717): splits at runs of `,` and `/`; a leading separator is an
//!   error but a trailing one is dropped; 16 values are refused although 16 devices exist.
//! - **`-np`** (arg.cpp:2442-2450): llama-server takes `-1` as "auto" (its own slot count); this
//!   runner needs a number, so `-np` below 1 is an error.
//! - **Environment variables** (arg.cpp:121-138, 707-730): `LLAMA_ARG_*` variables are applied
//!   before the flags, in the order arg.cpp defines the options; a switch variable
//!   (`LLAMA_ARG_MLOCK`) acts only on `1/true/on/enabled` and silently does nothing otherwise; a
//!   `LLAMA_ARG_NO_*` variable turns its option off whatever its value (`LLAMA_ARG_NO_MMAP=0`
//!   disables mmap); an `-ot` variable and `-ot` flags are both applied, although llama.cpp says
//!   the variable is overwritten.
//!
//! # Rendering
//!
//! [`render`] writes only the options that differ from llama.cpp's defaults, in a fixed order
//! (model, offload, overrides, load, context, threads, cache, placement, NUMA), and uses `-lm`
//! rather than the deprecated aliases. What the dialect cannot express is left out and listed in
//! [`Rendered::omitted`] (the caller decides whether to log it): environment knobs (they are not
//! flags), override patterns holding `,` or `=`, and for llama-bench the options it does not
//! have (`-c`, `-np`, `-tb`, `--swa-full`, `-kvu`, `-nr`, an `f32` cache). For any options
//! without environment knobs whose strings are writable as flags,
//! `parse(&render(&o, Dialect::Server).to_string())?.options == o`.

use std::borrow::Cow;
use std::fmt;

use crate::backend::Numa;
use crate::error::{Error, Result};
use crate::options::names::{NUMA_NAMES, numa_name};
use crate::options::{
    BufferTarget, CacheType, CpuMask, EXPERTS_REGEX, FlashAttn, GpuLayers, LoadMode, MAX_CPUS, NamedOption, Priority,
    RunOptions, SplitMode, TensorOverride, layer_experts_regex, max_devices, max_tensor_overrides,
};

/// The options a flag string stands for, and what llama.cpp would have done differently from
/// what the user probably meant.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The options, with llama.cpp's meaning.
    pub options: RunOptions,
    /// One sentence per trap or ignored flag (each also logged with `log::warn!`).
    pub warnings: Vec<String>,
}

/// Which tool's spelling [`render`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// llama-server / llama-cli (`common/arg.cpp`): what [`parse`] reads.
    Server,
    /// llama-bench: `-ot` rules separated by `;`, `-fa 1|0`, `-nkvo 1`, `-nopo 1`, `--no-host 1`,
    /// `-ts`/`-dev` lists separated by `/`, `-cmoe` written as its `-ot` rule; no `-c`, `-np`,
    /// `-tb`, `--swa-full`, `-kvu`, `-nr`, and no `f32` cache type.
    Bench,
}

/// Flags written by [`render`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// The arguments, one word each, unquoted.
    pub args: Vec<String>,
    /// What could not be written in this dialect, one sentence each.
    pub omitted: Vec<String>,
}

impl Rendered {
    /// The arguments as one shell-quoted string.
    pub fn command_line(&self) -> String {
        self.args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command_line())
    }
}

/// Shell-quotes one word: as it is when that is safe, else in single quotes (the most readable
/// for regexes), else as shlex quotes it.
fn quote(word: &str) -> String {
    // `render` never emits a word with a NUL byte, the only thing shlex refuses.
    match shlex::try_quote(word) {
        Ok(Cow::Borrowed(same)) => same.to_string(),
        _ if !word.is_empty() && !word.contains('\'') => format!("'{word}'"),
        Ok(quoted) => quoted.into_owned(),
        Err(_) => "''".to_string(),
    }
}

/// Parses a llama.cpp flag string (shell quoting: `-ot "blk\.0\.=CPU"`, `'...'`, `\ `).
pub fn parse(flags: &str) -> Result<Parsed> {
    let args = split(flags)?;
    parse_args(&args)
}

/// Parses flags that are already split into words (an argv without the program name).
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Parsed> {
    parse_with_env_args(&[], args)
}

/// Parses a flag string the way llama.cpp does with `env` in its environment: the `LLAMA_ARG_*`
/// variables of the supported flags (see [`is_flag_env_var`]) are applied first, in arg.cpp's
/// order, then the flags. Other variables in `env` are not looked at.
pub fn parse_with_env(env: &[(String, String)], flags: &str) -> Result<Parsed> {
    let args = split(flags)?;
    parse_with_env_args(env, &args)
}

/// [`parse_with_env`] over words that are already split.
pub fn parse_with_env_args<S: AsRef<str>>(env: &[(String, String)], args: &[S]) -> Result<Parsed> {
    let parsed = parse_quietly(env, args)?;
    for w in &parsed.warnings {
        log::warn!("{w}");
    }
    Ok(parsed)
}

/// [`parse_with_env_args`] without logging the warnings (the caller reports them).
pub fn parse_quietly<S: AsRef<str>>(env: &[(String, String)], args: &[S]) -> Result<Parsed> {
    let mut state = State::default();
    let mut items = env_items(env, &mut state.warnings)?;
    items.extend(arg_items(args)?);
    for item in &items {
        state.apply(item)?;
    }
    state.finish()
}

/// Whether llama.cpp reads `name` as one of the flags this module supports (or as one of the
/// ignored server-only ones), e.g. `LLAMA_ARG_CTX_SIZE` or `LLAMA_ARG_NO_MMAP`.
pub fn is_flag_env_var(name: &str) -> bool {
    SPECS.iter().any(|s| s.env == Some(name) || neg_env(s).as_deref() == Some(name))
}

/// Splits a flag string into words with shell quoting rules.
pub fn split(flags: &str) -> Result<Vec<String>> {
    shlex::split(flags).ok_or_else(|| Error::Flag {
        flag: flags.to_string(),
        value: None,
        reason: "unbalanced quote or trailing backslash".to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// The flag table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Threads,
    ThreadsBatch,
    CpuMask,
    CpuRange,
    CpuStrict,
    Prio,
    Poll,
    CtxSize,
    BatchSize,
    UbatchSize,
    SwaFull,
    KvUnified,
    Perf,
    FlashAttn,
    KvOffload,
    Repack,
    NoHost,
    CacheTypeK,
    CacheTypeV,
    Parallel,
    Mlock,
    Mmap,
    DirectIo,
    LoadMode,
    Numa,
    Device,
    OverrideTensor,
    CpuMoe,
    NCpuMoe,
    GpuLayers,
    SplitMode,
    TensorSplit,
    MainGpu,
    Fit,
    OpOffload,
    Model,
    ServerOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// A flag without value (`handler_void`).
    Switch,
    /// A positive and a negative spelling (`handler_bool`).
    Toggle,
    /// One value (`handler_int` / `handler_string`).
    Value,
}

struct Spec {
    opt: Opt,
    names: &'static [&'static str],
    negs: &'static [&'static str],
    arity: Arity,
    env: Option<&'static str>,
}

const fn spec(opt: Opt, names: &'static [&'static str], arity: Arity, env: Option<&'static str>) -> Spec {
    Spec { opt, names, negs: &[], arity, env }
}

const fn toggle(
    opt: Opt,
    names: &'static [&'static str],
    negs: &'static [&'static str],
    env: Option<&'static str>,
) -> Spec {
    Spec { opt, names, negs, arity: Arity::Toggle, env }
}

use Arity::{Switch, Value};

/// In arg.cpp's definition order, which is the order llama.cpp applies environment variables in.
const SPECS: &[Spec] = &[
    spec(Opt::Threads, &["-t", "--threads"], Value, Some("LLAMA_ARG_THREADS")),
    spec(Opt::ThreadsBatch, &["-tb", "--threads-batch"], Value, None),
    spec(Opt::CpuMask, &["-C", "--cpu-mask"], Value, None),
    spec(Opt::CpuRange, &["-Cr", "--cpu-range"], Value, None),
    spec(Opt::CpuStrict, &["--cpu-strict"], Value, None),
    spec(Opt::Prio, &["--prio"], Value, None),
    spec(Opt::Poll, &["--poll"], Value, None),
    spec(Opt::CtxSize, &["-c", "--ctx-size"], Value, Some("LLAMA_ARG_CTX_SIZE")),
    spec(Opt::BatchSize, &["-b", "--batch-size"], Value, Some("LLAMA_ARG_BATCH")),
    spec(Opt::UbatchSize, &["-ub", "--ubatch-size"], Value, Some("LLAMA_ARG_UBATCH")),
    spec(Opt::SwaFull, &["--swa-full"], Switch, Some("LLAMA_ARG_SWA_FULL")),
    toggle(Opt::KvUnified, &["-kvu", "--kv-unified"], &["-no-kvu", "--no-kv-unified"], Some("LLAMA_ARG_KV_UNIFIED")),
    spec(Opt::FlashAttn, &["-fa", "--flash-attn"], Value, Some("LLAMA_ARG_FLASH_ATTN")),
    toggle(Opt::Perf, &["--perf"], &["--no-perf"], Some("LLAMA_ARG_PERF")),
    toggle(Opt::KvOffload, &["-kvo", "--kv-offload"], &["-nkvo", "--no-kv-offload"], Some("LLAMA_ARG_KV_OFFLOAD")),
    toggle(Opt::Repack, &["--repack"], &["-nr", "--no-repack"], Some("LLAMA_ARG_REPACK")),
    spec(Opt::NoHost, &["--no-host"], Switch, Some("LLAMA_ARG_NO_HOST")),
    spec(Opt::CacheTypeK, &["-ctk", "--cache-type-k"], Value, Some("LLAMA_ARG_CACHE_TYPE_K")),
    spec(Opt::CacheTypeV, &["-ctv", "--cache-type-v"], Value, Some("LLAMA_ARG_CACHE_TYPE_V")),
    spec(Opt::Parallel, &["-np", "--parallel"], Value, Some("LLAMA_ARG_N_PARALLEL")),
    spec(Opt::Mlock, &["--mlock"], Switch, Some("LLAMA_ARG_MLOCK")),
    toggle(Opt::Mmap, &["--mmap"], &["--no-mmap"], Some("LLAMA_ARG_MMAP")),
    toggle(Opt::DirectIo, &["-dio", "--direct-io"], &["-ndio", "--no-direct-io"], Some("LLAMA_ARG_DIO")),
    spec(Opt::LoadMode, &["-lm", "--load-mode"], Value, Some("LLAMA_ARG_LOAD_MODE")),
    spec(Opt::Numa, &["--numa"], Value, Some("LLAMA_ARG_NUMA")),
    spec(Opt::Device, &["-dev", "--device"], Value, Some("LLAMA_ARG_DEVICE")),
    spec(Opt::OverrideTensor, &["-ot", "--override-tensor"], Value, Some("LLAMA_ARG_OVERRIDE_TENSOR")),
    spec(Opt::CpuMoe, &["-cmoe", "--cpu-moe"], Switch, Some("LLAMA_ARG_CPU_MOE")),
    spec(Opt::NCpuMoe, &["-ncmoe", "--n-cpu-moe"], Value, Some("LLAMA_ARG_N_CPU_MOE")),
    spec(Opt::GpuLayers, &["-ngl", "--gpu-layers", "--n-gpu-layers"], Value, Some("LLAMA_ARG_N_GPU_LAYERS")),
    spec(Opt::SplitMode, &["-sm", "--split-mode"], Value, Some("LLAMA_ARG_SPLIT_MODE")),
    spec(Opt::TensorSplit, &["-ts", "--tensor-split"], Value, Some("LLAMA_ARG_TENSOR_SPLIT")),
    spec(Opt::MainGpu, &["-mg", "--main-gpu"], Value, Some("LLAMA_ARG_MAIN_GPU")),
    spec(Opt::Fit, &["-fit", "--fit"], Value, Some("LLAMA_ARG_FIT")),
    toggle(Opt::OpOffload, &["--op-offload"], &["--no-op-offload"], None),
    spec(Opt::ServerOnly, &["-a", "--alias"], Value, Some("LLAMA_ARG_ALIAS")),
    spec(Opt::Model, &["-m", "--model"], Value, Some("LLAMA_ARG_MODEL")),
    spec(Opt::ServerOnly, &["--host"], Value, Some("LLAMA_ARG_HOST")),
    spec(Opt::ServerOnly, &["--port"], Value, Some("LLAMA_ARG_PORT")),
    toggle(Opt::ServerOnly, &["--ui", "--webui"], &["--no-ui", "--no-webui"], Some("LLAMA_ARG_UI")),
    spec(Opt::ServerOnly, &["--api-key"], Value, Some("LLAMA_API_KEY")),
    spec(Opt::ServerOnly, &["--metrics"], Switch, Some("LLAMA_ARG_ENDPOINT_METRICS")),
    spec(Opt::ServerOnly, &["--props"], Switch, Some("LLAMA_ARG_ENDPOINT_PROPS")),
    toggle(Opt::ServerOnly, &["--slots"], &["--no-slots"], Some("LLAMA_ARG_ENDPOINT_SLOTS")),
    toggle(Opt::ServerOnly, &["--jinja"], &["--no-jinja"], Some("LLAMA_ARG_JINJA")),
];

fn neg_env(s: &Spec) -> Option<String> {
    match (s.arity, s.env) {
        (Arity::Toggle, Some(env)) => Some(env.replacen("LLAMA_ARG_", "LLAMA_ARG_NO_", 1)),
        _ => None,
    }
}

fn lookup(name: &str) -> Option<(&'static Spec, bool)> {
    SPECS.iter().find_map(|s| {
        if s.names.contains(&name) {
            Some((s, true))
        } else if s.negs.contains(&name) {
            Some((s, false))
        } else {
            None
        }
    })
}

/// One flag occurrence, from the command line or from an environment variable.
struct Item {
    spec: &'static Spec,
    /// The flag as written, or the variable's name.
    label: String,
    positive: bool,
    value: Option<String>,
    from_env: bool,
}

fn flag_error(flag: &str, value: Option<&str>, reason: impl Into<String>) -> Error {
    Error::Flag { flag: flag.to_string(), value: value.map(str::to_string), reason: reason.into() }
}

fn arg_items<S: AsRef<str>>(args: &[S]) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let raw = args[i].as_ref();
        // arg.cpp:745-748: underscores in long flags are dashes.
        let name = if raw.starts_with("--") { raw.replace('_', "-") } else { raw.to_string() };
        let Some((spec, positive)) = lookup(&name) else {
            if let Some((flag, _)) = name.split_once('=')
                && flag.starts_with('-')
                && lookup(flag).is_some()
            {
                return Err(flag_error(
                    raw,
                    None,
                    format!("llama.cpp does not accept `{flag}=VALUE`; write `{flag} VALUE`"),
                ));
            }
            if !raw.starts_with('-') {
                return Err(flag_error(raw, None, "not a flag: a value without its flag, or a stray word"));
            }
            return Err(flag_error(raw, None, "unknown flag, or a llama.cpp flag that RunOptions does not hold"));
        };
        let value = if spec.arity == Arity::Value {
            i += 1;
            match args.get(i) {
                Some(v) => Some(v.as_ref().to_string()),
                None => return Err(flag_error(raw, None, "missing value")),
            }
        } else {
            None
        };
        if let Some(v) = &value
            && v.contains('\0')
        {
            return Err(flag_error(raw, None, "the value contains a NUL byte"));
        }
        items.push(Item { spec, label: raw.to_string(), positive, value, from_env: false });
        i += 1;
    }
    Ok(items)
}

/// llama.cpp's `is_truthy` / `is_falsey` (arg.cpp:1257-1263).
fn truthy(v: &str) -> bool {
    matches!(v, "on" | "enabled" | "true" | "1")
}

fn falsey(v: &str) -> bool {
    matches!(v, "off" | "disabled" | "false" | "0")
}

fn env_items(env: &[(String, String)], warnings: &mut Vec<String>) -> Result<Vec<Item>> {
    let get = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut items = Vec::new();
    for spec in SPECS {
        let Some(var) = spec.env else { continue };
        if let Some(v) = get(var)
            && v.contains('\0')
        {
            return Err(flag_error(var, None, "the value contains a NUL byte"));
        }
        match spec.arity {
            Arity::Toggle => {
                let neg = neg_env(spec).unwrap_or_default();
                if let Some(v) = get(&neg) {
                    if falsey(v) || v.is_empty() {
                        warnings.push(format!(
                            "{neg}={v} turns the option off all the same: llama.cpp only checks that a LLAMA_ARG_NO_* \
                             variable is set"
                        ));
                    }
                    items.push(Item { spec, label: neg, positive: false, value: None, from_env: true });
                } else if let Some(v) = get(var) {
                    let positive = if truthy(v) {
                        true
                    } else if falsey(v) {
                        false
                    } else {
                        return Err(flag_error(
                            var,
                            Some(v),
                            "not a boolean llama.cpp reads (on/off, enabled/disabled, true/false, 1/0)",
                        ));
                    };
                    items.push(Item { spec, label: var.to_string(), positive, value: None, from_env: true });
                }
            }
            Arity::Switch => {
                if let Some(v) = get(var) {
                    if truthy(v) {
                        items.push(Item { spec, label: var.to_string(), positive: true, value: None, from_env: true });
                    } else if !falsey(v) {
                        warnings.push(format!(
                            "{var}={v} does nothing: llama.cpp applies a switch variable only for 1, true, on or \
                             enabled"
                        ));
                    }
                }
            }
            Arity::Value => {
                if let Some(v) = get(var) {
                    items.push(Item {
                        spec,
                        label: var.to_string(),
                        positive: true,
                        value: Some(v.to_string()),
                        from_env: true,
                    });
                }
            }
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------
// C number parsing, as llama.cpp's std::stoi / std::stoul / std::stof do it.

/// A number read from the start of a value, and whether the whole value was used.
struct CNum<T> {
    value: T,
    exact: bool,
}

fn skip_c_space(s: &str) -> &str {
    s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
}

/// The sign, the magnitude (saturated) and the rest of `strtol`'s base-10 prefix, or `None`
/// when there is no digit.
fn c_integer_prefix(s: &str) -> Option<(bool, u128, &str)> {
    let s = skip_c_space(s);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let mut mag: u128 = 0;
    for b in digits[..n].bytes() {
        mag = mag.saturating_mul(10).saturating_add(u128::from(b - b'0'));
    }
    Some((neg, mag, &digits[n..]))
}

/// C `atoi`: the leading decimal number (after spaces and a sign), 0 when there is none.
pub fn c_atoi(v: &str) -> i64 {
    match c_integer_prefix(v) {
        Some((neg, mag, _)) => {
            let m = i64::try_from(mag).unwrap_or(i64::MAX);
            if neg { -m } else { m }
        }
        None => 0,
    }
}

/// `std::stoi`.
fn stoi(flag: &str, v: &str) -> Result<CNum<i32>> {
    let (neg, mag, rest) =
        c_integer_prefix(v).ok_or_else(|| flag_error(flag, Some(v), "not a number (llama.cpp's std::stoi fails)"))?;
    let signed = if neg { -i128::try_from(mag).unwrap_or(i128::MAX) } else { i128::try_from(mag).unwrap_or(i128::MAX) };
    let value = i32::try_from(signed)
        .map_err(|_| flag_error(flag, Some(v), "out of range for a C int (llama.cpp's std::stoi fails)"))?;
    Ok(CNum { value, exact: rest.is_empty() })
}

/// `std::stoul` (64-bit `unsigned long`): a leading `-` negates modulo 2^64.
fn stoul(flag: &str, v: &str) -> Result<CNum<u64>> {
    let (neg, mag, rest) =
        c_integer_prefix(v).ok_or_else(|| flag_error(flag, Some(v), "not a number (llama.cpp's std::stoul fails)"))?;
    let mag =
        u64::try_from(mag).map_err(|_| flag_error(flag, Some(v), "out of range (llama.cpp's std::stoul fails)"))?;
    let value = if neg { mag.wrapping_neg() } else { mag };
    Ok(CNum { value, exact: rest.is_empty() })
}

/// `std::stof` for decimal numbers, `inf` and `nan`; hexadecimal floats are refused.
fn stof(flag: &str, v: &str) -> Result<CNum<f32>> {
    let s = skip_c_space(v);
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0f32, &s[1..]),
        Some(b'+') => (1.0f32, &s[1..]),
        _ => (1.0f32, s),
    };
    let lower = body.to_ascii_lowercase();
    for (word, value) in [("infinity", f32::INFINITY), ("inf", f32::INFINITY), ("nan", f32::NAN)] {
        if lower.starts_with(word) {
            return Ok(CNum { value: sign * value, exact: body.len() == word.len() });
        }
    }
    if lower.starts_with("0x") {
        return Err(flag_error(flag, Some(v), "hexadecimal floating-point numbers are not supported here"));
    }
    let bytes = body.as_bytes();
    let mut end = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut digits = end;
    if bytes.get(end) == Some(&b'.') {
        let frac = bytes[end + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        digits += frac;
        end += 1 + frac;
    }
    if digits == 0 {
        return Err(flag_error(flag, Some(v), "not a number (llama.cpp's std::stof fails)"));
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(bytes.get(e), Some(b'+' | b'-')) {
            e += 1;
        }
        let n = bytes[e.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 {
            end = e + n;
        }
    }
    let magnitude: f32 =
        body[..end].parse().map_err(|_| flag_error(flag, Some(v), "not a number (llama.cpp's std::stof fails)"))?;
    let has_nonzero_digit =
        body[..end].bytes().take_while(|b| *b != b'e' && *b != b'E').any(|b| matches!(b, b'1'..=b'9'));
    if magnitude.is_infinite() || (has_nonzero_digit && (magnitude == 0.0 || magnitude.is_subnormal())) {
        return Err(flag_error(flag, Some(v), "out of range for a float (llama.cpp's std::stof fails)"));
    }
    Ok(CNum { value: sign * magnitude, exact: end == body.len() })
}

// ---------------------------------------------------------------------------------------------
// Applying flags.

enum OverrideEvent {
    Rules(Vec<TensorOverride>),
    CpuMoe(String),
    NCpuMoe(String, u32),
}

#[derive(Default)]
struct Mask {
    cpus: CpuMask,
    /// The single `-C` value as written (digits past 128 dropped), kept when it is the only one.
    verbatim: Option<String>,
    sources: usize,
}

#[derive(Default)]
struct State {
    o: RunOptions,
    warnings: Vec<String>,
    overrides: Vec<OverrideEvent>,
    loads: Vec<(String, LoadMode)>,
    seen: Vec<(Opt, String, bool)>,
    mask: Option<Mask>,
    placement_flags: Vec<String>,
    threads_batch: bool,
}

fn value_of(item: &Item) -> &str {
    item.value.as_deref().unwrap_or_default()
}

impl State {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// `stoi` plus a warning when llama.cpp dropped part of the value.
    fn int(&mut self, item: &Item) -> Result<i32> {
        let v = value_of(item);
        let n = stoi(&item.label, v)?;
        if !n.exact {
            self.warn(format!(
                "`{} {v}` is read as {}: llama.cpp parses it with std::stoi, which stops at the first character \
                 that is not a digit",
                item.label, n.value
            ));
        }
        Ok(n.value)
    }

    fn non_negative(&mut self, item: &Item, min: i32, what: &str) -> Result<u32> {
        let n = self.int(item)?;
        if n < min {
            return Err(flag_error(&item.label, item.value.as_deref(), format!("{n} {what}")));
        }
        u32::try_from(n).map_err(|_| flag_error(&item.label, item.value.as_deref(), "must not be negative"))
    }

    fn note_repeat(&mut self, item: &Item) {
        let group = match item.spec.opt {
            Opt::Mlock | Opt::Mmap | Opt::DirectIo | Opt::LoadMode | Opt::ServerOnly | Opt::Fit => return,
            Opt::CpuRange => Opt::CpuMask,
            o => o,
        };
        let previous = self.seen.iter().find(|(o, _, _)| *o == group).map(|(_, l, e)| (l.clone(), *e));
        self.seen.push((group, item.label.clone(), item.from_env));
        let Some((prev, prev_env)) = previous else { return };
        let this = &item.label;
        let w = match group {
            Opt::OverrideTensor if prev_env && !item.from_env => format!(
                "{prev} and `{this}` are both applied, the variable's rules first (llama.cpp says the variable is \
                 overwritten, but it appends)"
            ),
            Opt::OverrideTensor => format!(
                "`{this}` given again: all rules are kept, in order (llama.cpp appends them, although it warns that \
                 only the last value is used)"
            ),
            Opt::CpuMask => format!(
                "`{this}` after `{prev}`: llama.cpp adds the CPUs of every -C/-Cr to one mask instead of replacing it"
            ),
            Opt::NCpuMoe => format!(
                "`{this}` after `{prev}`: llama.cpp pushes the expert overrides of both, so the larger count applies \
                 whatever the order"
            ),
            Opt::CpuMoe => format!("`{this}` given again: no further effect"),
            _ if prev_env && !item.from_env => format!("`{this}` overrides {prev}, as in llama.cpp"),
            _ => format!("`{this}` given again (after `{prev}`): the last value wins, as in llama.cpp"),
        };
        self.warn(w);
    }

    fn load_mode(&mut self, item: &Item, mode: LoadMode) {
        let alias = item.spec.opt != Opt::LoadMode;
        if alias && !self.loads.iter().any(|(l, _)| *l == item.label) {
            let meaning = match mode {
                LoadMode::Mlock => {
                    "-lm mlock: read into RAM and lock it, without mmap (before 5f55650a, --mlock kept mmap: that \
                     is -lm mmap+mlock now)"
                }
                LoadMode::None => "-lm none: read into RAM, no mmap and no mlock",
                LoadMode::Mmap => "-lm mmap: memory-map, no mlock",
                LoadMode::DirectIo => "-lm dio",
                LoadMode::MmapMlock => "-lm mmap+mlock",
            };
            self.warn(format!("`{}` is a deprecated alias: it sets the load mode to {meaning}", item.label));
        }
        if let Some((prev, prev_mode)) = self.loads.last().cloned()
            && prev_mode != mode
        {
            let tip = match (prev_mode, mode) {
                (LoadMode::Mlock, LoadMode::None) | (LoadMode::None, LoadMode::Mlock) => {
                    "; for no mmap and mlock write `-lm mlock`"
                }
                (LoadMode::Mlock, LoadMode::Mmap) | (LoadMode::Mmap, LoadMode::Mlock) => {
                    "; for mmap and mlock write `-lm mmap+mlock`"
                }
                _ => "",
            };
            self.warn(format!(
                "`{}` replaces the earlier `{prev}`: llama.cpp keeps a single load mode and the last flag wins, so \
                 the model is loaded with `{}`{tip}",
                item.label,
                mode.name()
            ));
        }
        self.loads.push((item.label.clone(), mode));
        self.o.model.load_mode = mode;
    }

    fn apply(&mut self, item: &Item) -> Result<()> {
        self.note_repeat(item);
        let flag = item.label.as_str();
        let v = value_of(item);
        let bad = |reason: String| flag_error(flag, item.value.as_deref(), reason);
        match item.spec.opt {
            Opt::Model => {
                if v.is_empty() {
                    return Err(bad("empty path".into()));
                }
                self.o.model_path = Some(v.into());
            }
            Opt::Threads | Opt::ThreadsBatch => {
                let n = self.int(item)?;
                let threads = if n <= 0 {
                    let all = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                    self.warn(format!(
                        "`{flag} {v}` means every logical CPU in llama.cpp (std::thread::hardware_concurrency(), {all} \
                         here), not the default of one thread per physical core"
                    ));
                    all
                } else {
                    n.unsigned_abs()
                };
                if item.spec.opt == Opt::Threads {
                    self.o.context.n_threads = Some(threads);
                } else {
                    self.threads_batch = true;
                    self.o.context.n_threads_batch = Some(threads);
                }
            }
            Opt::CpuMask => {
                self.placement_flags.push(flag.to_string());
                let (cpus, digits, truncated) =
                    CpuMask::parse_flag(v).map_err(|e| flag_error(flag, Some(v), e.to_string()))?;
                if truncated {
                    self.warn(format!(
                        "`{flag}`: llama.cpp reads only the first 128 hex digits of a mask, so the mask is {digits}"
                    ));
                }
                let mask = self.mask.get_or_insert_with(Mask::default);
                mask.sources += 1;
                mask.verbatim = Some(digits);
                mask.cpus.union_with(&cpus);
            }
            Opt::CpuRange => {
                self.placement_flags.push(flag.to_string());
                let cpus = parse_cpu_range(flag, v)?;
                let mask = self.mask.get_or_insert_with(Mask::default);
                mask.sources += 2; // never kept verbatim
                mask.cpus.union_with(&cpus);
            }
            Opt::CpuStrict => {
                self.placement_flags.push(flag.to_string());
                let n = stoul(flag, v)?;
                if !n.exact || n.value > 1 {
                    self.warn(format!(
                        "`{flag} {v}` is read as strict = {}: llama.cpp parses it with std::stoul and takes any \
                         non-zero number as 1",
                        n.value != 0
                    ));
                }
                self.o.context.placement.strict = n.value != 0;
            }
            Opt::Prio => {
                self.placement_flags.push(flag.to_string());
                let n = self.int(item)?;
                self.o.context.placement.priority =
                    Priority::from_level(n).ok_or_else(|| bad(format!("{n} is not a priority from -1 to 3")))?;
            }
            Opt::Poll => {
                self.placement_flags.push(flag.to_string());
                let n = stoul(flag, v)?;
                // `cpuparams.poll` is a uint32_t.
                let poll = n.value as u32;
                if !n.exact || u64::from(poll) != n.value || poll > 100 {
                    self.warn(format!(
                        "`{flag} {v}` is read as {poll}: llama.cpp parses it with std::stoul into a 32-bit field and \
                         does not check the documented 0..100 range (this runner refuses more than 100 when it \
                         creates a context)"
                    ));
                }
                self.o.context.placement.poll = poll;
            }
            Opt::CtxSize => self.o.context.n_ctx = self.non_negative(item, 0, "is negative")?,
            Opt::BatchSize => self.o.context.n_batch = self.non_negative(item, 1, "is less than 1")?,
            Opt::UbatchSize => self.o.context.n_ubatch = self.non_negative(item, 1, "is less than 1")?,
            Opt::Parallel => {
                self.o.context.n_seq_max = self.non_negative(
                    item,
                    1,
                    "is less than 1 (llama-server's -1 means \"auto\", its own choice of slots; give a number)",
                )?;
            }
            Opt::MainGpu => self.o.model.main_gpu = self.non_negative(item, 0, "is negative")?,
            Opt::NCpuMoe => {
                let n = self.non_negative(item, 0, "is negative (llama.cpp refuses it too)")?;
                self.overrides.push(OverrideEvent::NCpuMoe(flag.to_string(), n));
            }
            Opt::CpuMoe => self.overrides.push(OverrideEvent::CpuMoe(flag.to_string())),
            Opt::SwaFull => self.o.context.swa_full = true,
            Opt::NoHost => self.o.model.no_host = true,
            Opt::KvUnified => self.o.context.kv_unified = item.positive,
            Opt::Perf => self.o.context.perf = item.positive,
            Opt::KvOffload => self.o.context.offload_kqv = item.positive,
            Opt::Repack => self.o.model.repack = item.positive,
            Opt::OpOffload => self.o.context.op_offload = item.positive,
            Opt::FlashAttn => {
                self.o.context.flash_attn = FlashAttn::from_llama(v)
                    .ok_or_else(|| bad("not on, off or auto (nor enabled/true/1, disabled/false/0, -1)".into()))?;
            }
            Opt::CacheTypeK | Opt::CacheTypeV => {
                let t = CacheType::from_llama(v).ok_or_else(|| {
                    bad(format!("unknown cache type (llama.cpp accepts exactly {})", CacheType::NAMES.join(", ")))
                })?;
                if item.spec.opt == Opt::CacheTypeK {
                    self.o.context.type_k = t;
                } else {
                    self.o.context.type_v = t;
                }
            }
            Opt::Mlock => self.load_mode(item, LoadMode::Mlock),
            Opt::Mmap => self.load_mode(item, if item.positive { LoadMode::Mmap } else { LoadMode::None }),
            Opt::DirectIo => self.load_mode(item, if item.positive { LoadMode::DirectIo } else { LoadMode::None }),
            Opt::LoadMode => {
                let mode = LoadMode::from_llama(v).ok_or_else(|| bad(format!("not {}", or_list(LoadMode::NAMES))))?;
                self.load_mode(item, mode);
            }
            Opt::Numa => {
                // `--numa disabled` is not a value llama.cpp's parser takes; "" is distribute.
                let numa = NUMA_NAMES.iter().find(|(n, name)| *name == v && *n != Numa::Disabled).map(|(n, _)| *n);
                self.o.backend.numa = match numa {
                    Some(n) => n,
                    None if v.is_empty() => {
                        self.warn(format!("`{flag} \"\"` means distribute in llama.cpp"));
                        Numa::Distribute
                    }
                    None => return Err(bad("not distribute, isolate or numactl".into())),
                };
            }
            Opt::SplitMode => {
                self.o.model.split_mode =
                    SplitMode::from_llama(v).ok_or_else(|| bad(format!("not {}", or_list(SplitMode::NAMES))))?;
            }
            Opt::GpuLayers => {
                self.o.model.gpu_layers = match v {
                    "auto" => GpuLayers::Auto,
                    "all" => GpuLayers::All,
                    _ => {
                        let n = self.int(item)?;
                        if n == -1 {
                            self.warn(format!("`{flag} -1` means auto in llama.cpp"));
                        } else if n < -1 {
                            self.warn(format!("`{flag} {n}`: any value below -1 means all layers in llama.cpp"));
                        }
                        GpuLayers::from_llama_number(i64::from(n))
                    }
                };
            }
            Opt::TensorSplit => self.o.model.tensor_split = self.tensor_split(item)?,
            Opt::Device => self.o.model.devices = Some(parse_devices(flag, v)?),
            Opt::OverrideTensor => {
                let rules = parse_override_rules(flag, v, &mut self.warnings)?;
                self.overrides.push(OverrideEvent::Rules(rules));
            }
            Opt::Fit => {
                if truthy(v) {
                    self.warn(format!(
                        "`{flag} {v}`: this runner never runs llama.cpp's fit step (as with -fit off); options left \
                         at their defaults are not adjusted to free memory"
                    ));
                } else if !falsey(v) {
                    return Err(bad("not on or off".into()));
                }
            }
            Opt::ServerOnly => {
                self.warn(format!("`{flag}` only configures llama-server's HTTP side; ignored"));
            }
        }
        Ok(())
    }

    fn tensor_split(&mut self, item: &Item) -> Result<Vec<f32>> {
        let flag = item.label.as_str();
        let v = value_of(item);
        // arg.cpp:2698-2701: std::sregex_token_iterator over `[,/]+`: a leading separator gives an
        // empty first piece (which stof refuses), a trailing one gives nothing.
        let mut pieces: Vec<&str> = v.split([',', '/']).collect();
        let leading_empty = pieces.first().is_some_and(|p| p.is_empty()) && v.starts_with([',', '/']);
        pieces.retain(|p| !p.is_empty());
        if leading_empty || pieces.is_empty() {
            return Err(flag_error(flag, Some(v), "an empty proportion (llama.cpp's std::stof fails)"));
        }
        let max = max_devices();
        if pieces.len() >= max {
            return Err(flag_error(
                flag,
                Some(v),
                format!("{} proportions: llama.cpp refuses {max} or more (llama_max_devices() is {max})", pieces.len()),
            ));
        }
        let mut out = Vec::with_capacity(pieces.len());
        for p in pieces {
            let n = stof(flag, p)?;
            if !n.value.is_finite() || n.value < 0.0 {
                return Err(flag_error(
                    flag,
                    Some(v),
                    format!("proportion `{p}` is not a finite, non-negative number"),
                ));
            }
            if !n.exact {
                self.warn(format!("`{flag}`: proportion `{p}` is read as {} (std::stof stops early)", n.value));
            }
            out.push(n.value);
        }
        Ok(out)
    }

    fn finish(mut self) -> Result<Parsed> {
        self.finish_overrides()?;
        if let Some(mask) = self.mask.take() {
            if mask.cpus.is_empty() {
                self.warn(
                    "the CPU mask selects no CPU, so llama.cpp pins nothing (ggml ignores an empty mask)".to_string(),
                );
                self.o.context.placement.cpu_mask = None;
            } else if mask.sources == 1 {
                self.o.context.placement.cpu_mask = mask.verbatim;
            } else {
                self.o.context.placement.cpu_mask = Some(mask.cpus.to_hex());
            }
            let set = mask.cpus.count();
            if let Some(t) = self.o.context.n_threads
                && set > 0
                && set < t as usize
            {
                self.warn(format!(
                    "the CPU mask selects {set} CPUs for {t} threads (llama.cpp warns: not enough set bits)"
                ));
            }
        }
        if !self.placement_flags.is_empty() {
            let flags = self.placement_flags.join(", ");
            if self.threads_batch {
                self.warn(format!(
                    "with -tb, llama.cpp gives prompt-processing threads their own placement (-Cb, --cpu-strict-batch, \
                     ...), so {flags} only apply to generation threads there; this runner applies them to both"
                ));
            }
            self.warn(format!(
                "llama-server and llama-cli at the pinned build do not apply {flags} (llama.cpp issue #26997, fixed \
                 by PR #27026 after b10200); this runner applies them through a ggml threadpool, as llama-bench does"
            ));
        }
        Ok(Parsed { options: self.o, warnings: self.warnings })
    }

    /// Turns the positional `-ot`/`-cmoe`/`-ncmoe` events into typed options with the same
    /// first-match-wins order.
    fn finish_overrides(&mut self) -> Result<()> {
        let events = std::mem::take(&mut self.overrides);
        let last_rules = events.iter().rposition(|e| matches!(e, OverrideEvent::Rules(_)));
        let max_overrides = max_tensor_overrides();
        let mut list = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let before_rules = last_rules.is_some_and(|l| i < l);
            match event {
                OverrideEvent::Rules(rules) => list.extend(rules),
                OverrideEvent::CpuMoe(flag) if before_rules => {
                    self.warnings.push(format!(
                        "`{flag}` comes before an -ot: llama.cpp tries overrides in command-line order and the first \
                         match wins, so the expert rule goes before the later -ot rules; kept as the explicit \
                         override `{EXPERTS_REGEX}=CPU` at that position"
                    ));
                    list.push(TensorOverride::cpu(EXPERTS_REGEX));
                }
                OverrideEvent::NCpuMoe(flag, n) if before_rules => {
                    if n as usize > max_overrides {
                        return Err(flag_error(
                            &flag,
                            Some(&n.to_string()),
                            format!("more than llama.cpp's {max_overrides} tensor overrides"),
                        ));
                    }
                    if n > 0 {
                        self.warnings.push(format!(
                            "`{flag} {n}` comes before an -ot: llama.cpp tries overrides in command-line order and the \
                             first match wins, so its {n} per-layer expert rules go before the later -ot rules; kept as \
                             explicit overrides at that position"
                        ));
                    }
                    list.extend((0..n).map(|l| TensorOverride::cpu(layer_experts_regex(l))));
                }
                OverrideEvent::CpuMoe(_) => self.o.model.cpu_moe = true,
                OverrideEvent::NCpuMoe(_, n) => self.o.model.n_cpu_moe = self.o.model.n_cpu_moe.max(n),
            }
            if list.len() > max_overrides {
                return Err(flag_error(
                    "-ot",
                    None,
                    format!("{} tensor overrides, more than llama.cpp's {max_overrides}", list.len()),
                ));
            }
        }
        self.o.model.tensor_overrides = list;
        Ok(())
    }
}

fn parse_override_rules(flag: &str, v: &str, warnings: &mut Vec<String>) -> Result<Vec<TensorOverride>> {
    let mut rules = Vec::new();
    for rule in v.split(',') {
        let bad = |reason: String| flag_error(flag, Some(v), format!("rule `{rule}`: {reason}"));
        let Some((pattern, target)) = rule.split_once('=') else {
            return Err(bad("no `=` between the tensor name pattern and the buffer type".into()));
        };
        if pattern.is_empty() {
            return Err(bad("empty pattern (it would match every tensor)".into()));
        }
        crate::regex::check(pattern).map_err(|e| bad(format!("the pattern is not a valid std::regex: {e}")))?;
        if pattern.trim() != pattern {
            warnings.push(format!(
                "`{flag}`: pattern `{pattern}` has leading or trailing spaces, which llama.cpp keeps (tensor names \
                 have no spaces, so it may never match); a space after a comma in -ot is the usual cause"
            ));
        }
        let target = parse_buffer_target(target).map_err(bad)?;
        rules.push(TensorOverride { pattern: pattern.to_string(), target });
    }
    Ok(rules)
}

fn parse_buffer_target(name: &str) -> std::result::Result<BufferTarget, String> {
    if name == "CPU" {
        return Ok(BufferTarget::Cpu);
    }
    if name.is_empty() {
        return Err("empty buffer type".into());
    }
    if name.eq_ignore_ascii_case("cpu") {
        return Err(format!("unknown buffer type `{name}`: llama.cpp's names are case-sensitive (`CPU`)"));
    }
    if name.contains(['=', ' ', '\t', ',']) {
        return Err(format!(
            "unknown buffer type `{name}` (llama.cpp splits a rule at its first `=`, so patterns cannot hold `=`, \
             and does not trim spaces)"
        ));
    }
    if name.ends_with("_Host") {
        return Err(format!("`{name}` is a host buffer type, which llama.cpp's -ot does not offer; use `CPU`"));
    }
    Ok(BufferTarget::Device(name.to_string()))
}

fn parse_devices(flag: &str, v: &str) -> Result<Vec<String>> {
    let names: Vec<&str> = v.split(',').collect();
    if names == ["none"] {
        return Ok(Vec::new());
    }
    for name in &names {
        let bad = |reason: &str| flag_error(flag, Some(v), format!("device `{name}`: {reason}"));
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        if *name == "none" {
            return Err(bad("`none` must be the only entry"));
        }
        if *name == "CPU" {
            return Err(bad("llama.cpp refuses CPU devices in -dev (they are always used)"));
        }
    }
    Ok(names.into_iter().map(str::to_string).collect())
}

/// llama.cpp's `parse_cpu_range` (`common/common.cpp`): `lo-hi`, either end may be left out.
fn parse_cpu_range(flag: &str, v: &str) -> Result<CpuMask> {
    let Some((lo, hi)) = v.split_once('-') else {
        return Err(flag_error(flag, Some(v), "not a range LO-HI"));
    };
    let bound = |s: &str, default: u64| -> Result<u64> {
        if s.is_empty() {
            return Ok(default);
        }
        let n = stoul(flag, s)?.value;
        if n >= MAX_CPUS as u64 {
            return Err(flag_error(flag, Some(v), format!("CPU {n} is out of bounds (0..{})", MAX_CPUS - 1)));
        }
        Ok(n)
    };
    let (lo, hi) = (bound(lo, 0)?, bound(hi, MAX_CPUS as u64 - 1)?);
    // Both bounds are below MAX_CPUS here.
    Ok(CpuMask::range(lo as usize, hi as usize))
}

/// `a, b or c`.
fn or_list(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Writes `options` as flags of `dialect`; only options that differ from llama.cpp's defaults
/// appear. Never fails: what cannot be written is listed in [`Rendered::omitted`].
pub fn render(options: &RunOptions, dialect: Dialect) -> Rendered {
    let mut out = Out { dialect, r: Rendered::default() };
    out.model(options);
    out.context(options);
    if options.backend.numa != Numa::Disabled {
        out.pair("--numa", numa_name(options.backend.numa));
    }
    let env = options.backend.env.to_shell();
    let removed: Vec<_> = options.backend.env.vars().into_iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
    if !env.is_empty() || !removed.is_empty() {
        let mut what = Vec::new();
        if !env.is_empty() {
            what.push(format!("set `{env}`"));
        }
        if !removed.is_empty() {
            what.push(format!("unset {}", removed.join(", ")));
        }
        out.omit(format!("environment knobs are not flags: {} in the environment", what.join(" and ")));
    }
    out.r
}

struct Out {
    dialect: Dialect,
    r: Rendered,
}

impl Out {
    fn omit(&mut self, note: String) {
        self.r.omitted.push(note);
    }

    fn flag(&mut self, f: &str) {
        self.r.args.push(f.to_string());
    }

    fn pair(&mut self, f: &str, v: impl Into<String>) {
        let v = v.into();
        if v.contains('\0') {
            self.omit(format!("`{f}`: the value contains a NUL byte"));
            return;
        }
        self.r.args.push(f.to_string());
        self.r.args.push(v);
    }

    /// A number llama.cpp reads with std::stoi.
    fn int(&mut self, f: &str, n: u32) {
        if i32::try_from(n).is_err() {
            self.omit(format!("`{f} {n}`: llama.cpp reads it with std::stoi, which refuses values above {}", i32::MAX));
        } else {
            self.pair(f, n.to_string());
        }
    }

    fn model(&mut self, o: &RunOptions) {
        let bench = self.dialect == Dialect::Bench;
        if let Some(p) = &o.model_path {
            match p.to_str() {
                Some("") => self.omit("an empty model path".into()),
                Some(s) if bench && s.contains(',') => {
                    self.omit(format!("model `{s}`: llama-bench splits -m at commas"));
                }
                Some(s) => self.pair("-m", s),
                None => self.omit(format!("model path {} is not UTF-8", p.display())),
            }
        }
        let m = &o.model;
        match m.gpu_layers {
            GpuLayers::Auto => {}
            GpuLayers::All if bench => self.pair("-ngl", "999"),
            GpuLayers::All => self.pair("-ngl", "all"),
            GpuLayers::Count(n) => self.int("-ngl", n),
        }
        if m.split_mode != SplitMode::Layer {
            self.pair("-sm", m.split_mode.name());
        }
        if m.main_gpu != 0 {
            self.int("-mg", m.main_gpu);
        }
        if !m.tensor_split.is_empty() {
            let sep = if bench { "/" } else { "," };
            let max = max_devices() - 1;
            if m.tensor_split.len() > max || m.tensor_split.iter().any(|x| !x.is_finite() || *x < 0.0) {
                self.omit(format!(
                    "tensor split {:?}: llama.cpp takes at most {max} finite, non-negative proportions",
                    m.tensor_split
                ));
            } else {
                self.pair("-ts", m.tensor_split.iter().map(f32::to_string).collect::<Vec<_>>().join(sep));
            }
        }
        if let Some(devs) = &m.devices {
            let sep = if bench { "/" } else { "," };
            if devs.is_empty() {
                self.pair("-dev", "none");
            } else if devs.iter().any(|d| d.is_empty() || d == "none" || d.contains([',', '/'])) {
                self.omit(format!("devices {devs:?}: a name is empty, `none`, or holds `,` or `/`"));
            } else {
                self.pair("-dev", devs.join(sep));
            }
        }
        self.overrides(o);
        if m.load_mode != LoadMode::Mmap {
            self.pair("-lm", m.load_mode.name());
        }
        if !m.repack {
            if bench {
                self.omit("-nr (no repacked CPU buffers): llama-bench has no such flag".into());
            } else {
                self.flag("-nr");
            }
        }
        if m.no_host {
            if bench {
                self.pair("--no-host", "1");
            } else {
                self.flag("--no-host");
            }
        }
    }

    fn overrides(&mut self, o: &RunOptions) {
        let m = &o.model;
        let bench = self.dialect == Dialect::Bench;
        let mut rules = m.tensor_overrides.clone();
        if bench && m.cpu_moe {
            // llama-bench has no -cmoe; its rule, appended after the others, means the same.
            rules.push(TensorOverride::cpu(EXPERTS_REGEX));
        }
        let forbidden: &[char] = if bench { &[',', ';', '='] } else { &[',', '='] };
        let mut written = Vec::new();
        for r in &rules {
            let target = r.target.name();
            if r.pattern.is_empty() || r.pattern.contains(forbidden) || target.is_empty() || target.contains(forbidden)
            {
                self.omit(format!(
                    "override `{}` → `{target}`: an -ot rule cannot hold {} in its pattern or buffer type, nor be empty",
                    r.pattern,
                    if bench { "`,`, `;` or `=`" } else { "`,` or `=`" }
                ));
            } else {
                written.push(format!("{}={target}", r.pattern));
            }
        }
        if !written.is_empty() {
            self.pair("-ot", written.join(if bench { ";" } else { "," }));
        }
        if m.cpu_moe && !bench {
            self.flag("-cmoe");
        }
        if m.n_cpu_moe > 0 {
            self.int("-ncmoe", m.n_cpu_moe);
        }
    }

    fn context(&mut self, o: &RunOptions) {
        let c = &o.context;
        let bench = self.dialect == Dialect::Bench;
        if c.n_ctx != 0 {
            if bench {
                self.omit(format!(
                    "-c {}: llama-bench sizes each test's context as n_prompt + n_gen + n_depth",
                    c.n_ctx
                ));
            } else {
                self.int("-c", c.n_ctx);
            }
        }
        for (f, n, default) in [("-b", c.n_batch, 2048), ("-ub", c.n_ubatch, 512)] {
            if n == 0 {
                self.omit(format!("`{f} 0`: llama.cpp needs at least 1"));
            } else if n != default {
                self.int(f, n);
            }
        }
        if c.n_seq_max != 1 {
            if bench {
                self.omit(format!("-np {}: llama-bench runs one sequence", c.n_seq_max));
            } else if c.n_seq_max == 0 {
                self.omit("`-np 0`: llama.cpp needs at least 1".into());
            } else {
                self.int("-np", c.n_seq_max);
            }
        }
        for (f, n) in [("-t", c.n_threads), ("-tb", c.n_threads_batch)] {
            match n {
                None => {}
                Some(0) => self.omit(format!("`{f} 0`: llama.cpp reads 0 as every logical CPU")),
                Some(n) if bench && f == "-tb" => {
                    self.omit(format!("-tb {n}: llama-bench uses one thread count (-t) for both phases"));
                }
                Some(n) => self.int(f, n),
            }
        }
        match (c.flash_attn, bench) {
            (FlashAttn::Auto, _) => {}
            (fa, false) => self.pair("-fa", fa.name()),
            (FlashAttn::On, true) => self.pair("-fa", "1"),
            (FlashAttn::Off, true) => self.pair("-fa", "0"),
        }
        for (f, t) in [("-ctk", c.type_k), ("-ctv", c.type_v)] {
            if t != CacheType::F16 {
                if bench && t == CacheType::F32 {
                    self.omit(format!("{f} f32: llama-bench does not accept f32 cache types"));
                } else {
                    self.pair(f, t.name());
                }
            }
        }
        if !c.offload_kqv {
            if bench {
                self.pair("-nkvo", "1");
            } else {
                self.flag("-nkvo");
            }
        }
        if !c.op_offload {
            if bench {
                self.pair("-nopo", "1");
            } else {
                self.flag("--no-op-offload");
            }
        }
        if c.swa_full {
            if bench {
                self.omit("--swa-full: llama-bench always uses swa_full = false".into());
            } else {
                self.flag("--swa-full");
            }
        }
        // llama-bench's contexts always run without perf timings; it has no flag for them.
        if !c.perf && !bench {
            self.flag("--no-perf");
        }
        if c.kv_unified {
            if bench {
                self.omit("-kvu: llama-bench has no unified KV cache flag".into());
            } else {
                self.flag("-kvu");
            }
        }
        let p = &c.placement;
        if let Some(mask) = &p.cpu_mask {
            let mask = match mask.strip_prefix("0X") {
                Some(rest) => format!("0x{rest}"),
                None => mask.clone(),
            };
            if mask.is_empty() || (bench && mask.contains(',')) {
                self.omit(format!("cpu mask `{mask}` cannot be written"));
            } else {
                self.pair("-C", mask);
            }
        }
        if p.strict {
            self.pair("--cpu-strict", "1");
        }
        if p.priority != Priority::Normal {
            self.pair("--prio", p.priority.level().to_string());
        }
        if p.poll != 50 {
            self.pair("--poll", p.poll.to_string());
        }
    }
}
