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
//! | `--embedding, --embeddings`, `--pooling none\|mean\|cls\|last\|rank` | `context.embeddings`, `context.pooling` |
//! | `--rerank, --reranking` | `context.embeddings` and `context.pooling = rank` |
//! | `-C, --cpu-mask HEX`, `-Cr, --cpu-range LO-HI` | `context.placement.cpu_mask` |
//! | `--cpu-strict 0\|1`, `--prio -1..3`, `--poll 0..100` | `context.placement` |
//! | `--numa distribute\|isolate\|numactl` | `backend.numa` |
//! | `--temp`, `--top-k`, `--samplers`, `-s`, ... (every flag of [`crate::sampling::parse_flags`]) | `sampling` |
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
//! other flag, including llama.cpp flags [`RunOptions`] does not hold (`-n`, `-p`, `-Cb`,
//! `-fitt`, ...), is an error naming it.
//!
//! # Traps in llama.cpp's parser (at 5f55650a)
//!
//! [`parse`] keeps llama.cpp's meaning in each case and adds a warning that says what happened.
//!
//! - **One load mode** (the `--mlock`, `--mmap`, `-dio` and `-lm` options in `common/arg.cpp`): `--mlock`, `--mmap`, `--no-mmap`, `-dio` and `-ndio`
//!   are deprecated aliases that each *assign* the single `load_mode`, so the last one wins:
//!   `--mlock --no-mmap` loads without mmap and **without mlock**, `--no-mmap --mlock` is
//!   `-lm mlock`, and `-ndio` means no mmap either (not "back to mmap"). Since 5f55650a `--mlock`
//!   alone means "read into RAM and lock" (no mmap); before, it meant mmap + mlock
//!   (`-lm mmap+mlock`). llama.cpp itself only warns when an alias is combined with `-lm`
//!   (in `common_params_parse_ex`).
//! - **Numbers are C prefixes**: integer flags go through `std::stoi` (`handler_int`), `--cpu-strict`
//!   and `--poll` through `std::stoul`, `-ts` through `std::stof`. Parsing stops at the first character that does not fit, so `-c 32k` is 32,
//!   `-t 16.5` is 16, `-c 1e3` is 1 and `-c 0x8000` is 0 (the model's training context); `stoul`
//!   takes `-1` as 2^64-1. None of these is range-checked except `--prio`, `-ncmoe` and `-np`.
//! - **`-t`/`-tb` of 0 or less** (the `-t` and `-tb` options) mean `std::thread::hardware_concurrency()`,
//!   every logical CPU, not the default (physical cores); the parsed options hold that number.
//! - **`-C` masks add up** (`parse_cpu_mask` in `common/common.cpp`): each `-C`/`-Cr` ORs CPUs into the mask instead
//!   of replacing it; only the first 128 hex digits are read and only a lower-case `0x` prefix
//!   is skipped; a mask that selects no CPU pins nothing (`ggml_thread_cpumask_next` in ggml-cpu).
//! - **`-tb` splits the placement** (`postprocess_cpu_params`): with `-tb`, prompt threads do not
//!   inherit `-C/--cpu-strict/--prio/--poll` (they have their own `-Cb ...` flags), while this
//!   runner applies one placement to both.
//! - **Placement flags do nothing in llama-server/llama-cli at the pin**: those tools never attach
//!   a threadpool built from `-C/--cpu-strict/--prio/--poll` (llama.cpp issue #26997, fixed after
//!   b10200 by PR #27026); this runner applies them through a ggml threadpool, as llama-bench does.
//! - **`-ot` syntax** (`parse_tensor_buffer_overrides`): rules are split at *every* comma and a rule at its
//!   *first* `=`, so patterns can hold neither; nothing is trimmed, so `-ot "a=CPU, b=CPU"`
//!   makes the pattern ` b` that never matches a tensor name; buffer type names are
//!   case-sensitive and host buffers (`CUDA_Host`) are not among them. Given several times,
//!   `-ot` appends, although llama.cpp then warns that "only last value will be used"
//!   (in `common_params_parse_ex`).
//! - **`-cmoe`/`-ncmoe` are positional** (the `-cmoe` and `-ncmoe` options): they push their overrides where they
//!   appear, and the first matching override wins (the override loop of `llama_model_loader`), so
//!   `-cmoe -ot "exps=CUDA0"` keeps the experts on the CPU. [`RunOptions`] applies
//!   `tensor_overrides` before `cpu_moe`/`n_cpu_moe`, so a `-cmoe`/`-ncmoe` that comes before an
//!   `-ot` is turned into explicit `tensor_overrides` entries at its position. `-ncmoe` given
//!   twice pushes both sets: the larger count applies, whatever the order.
//! - **`-ngl`** (the `-ngl` option): `-1` is `auto` and any value below `-1` is `all`.
//! - **`--numa ""`** is `distribute` (the `--numa` option).
//! - **`-ts`** (the `-ts` option): splits at runs of `,` and `/`; a leading separator is an
//!   error but a trailing one is dropped; 16 values are refused although 16 devices exist.
//! - **`-np`** (the `-np` option): llama-server takes `-1` as "auto" (its own slot count); this
//!   runner needs a number, so `-np` below 1 is an error.
//! - **Environment variables** (`common_arg::get_value_from_env` and `common_params_parse_ex`): `LLAMA_ARG_*` variables are applied
//!   before the flags, in the order arg.cpp defines the options; a switch variable
//!   (`LLAMA_ARG_MLOCK`) acts only on `1/true/on/enabled` and silently does nothing otherwise; a
//!   `LLAMA_ARG_NO_*` variable turns its option off whatever its value (`LLAMA_ARG_NO_MMAP=0`
//!   disables mmap); an `-ot` variable and `-ot` flags are both applied, although llama.cpp says
//!   the variable is overwritten.
//!
//! # Rendering
//!
//! [`render`] writes only the options that differ from llama.cpp's defaults, in a fixed order
//! (model, offload, overrides, load, context, threads, cache, placement, NUMA, then the
//! sampling flags of [`crate::sampling::render_flags`]), and uses `-lm`
//! rather than the deprecated aliases. What the dialect cannot express is left out and listed in
//! [`Rendered::omitted`] (the caller decides whether to log it): environment knobs (they are not
//! flags), override patterns holding `,` or `=`, and for llama-bench the options it does not
//! have (`-c`, `-np`, `-tb`, `--swa-full`, `-kvu`, `-nr`, an `f32` cache). For any options
//! without environment knobs whose strings are writable as flags,
//! `parse(&render(&o, Dialect::Server).to_string())?.options == o`.

mod apply;
pub(crate) mod cnum;
mod lex;
mod reason;
mod render;

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};
use crate::options::RunOptions;
use apply::State;
use lex::{SPECS, arg_items, env_items, neg_env};

pub use cnum::c_atoi;
pub use reason::{CParser, DeviceProblem, FlagReason, RuleProblem};
pub use render::render;

/// The options a flag string stands for, and what llama.cpp would have done differently from
/// what the user probably meant.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The options, with llama.cpp's meaning.
    pub options: RunOptions,
    /// One sentence per trap or ignored flag (each also logged with `log::warn!`).
    pub warnings: Vec<String>,
    /// The sampling flags among the flags, with their values, in order (`["--temp", "0.7"]`):
    /// what [`SamplingOptions::for_model`](crate::SamplingOptions::for_model) applies over a
    /// model's own sampling defaults, as llama.cpp's tools do.
    pub sampling_flags: Vec<String>,
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
    let mut sampling = Vec::new();
    items.extend(arg_items(args, &mut sampling)?);
    for item in &items {
        state.apply(item)?;
    }
    let mut parsed = state.finish()?;
    crate::sampling::parse_flags_onto(&mut parsed.options.sampling, &sampling)?;
    parsed.sampling_flags = sampling;
    Ok(parsed)
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
        reason: FlagReason::UnbalancedQuote,
    })
}
