//! The flag table (every spelling, arity and `LLAMA_ARG_*` variable) and lexing: argv words
//! and environment variables become [`Item`]s.

use super::FlagReason;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opt {
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
    Pooling,
    Embeddings,
    Rerank,
    Lora,
    LoraScaled,
    ControlVector,
    ControlVectorScaled,
    ControlVectorLayerRange,
    SpecType,
    SpecDraftModel,
    SpecNMax,
    SpecNMin,
    SpecPMin,
    SpecNgramN,
    SpecNgramM,
    SpecMapKN,
    SpecMapKM,
    SpecMapKHits,
    SpecMapK4vN,
    SpecMapK4vM,
    SpecMapK4vHits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arity {
    /// A flag without value (`handler_void`).
    Switch,
    /// A positive and a negative spelling (`handler_bool`).
    Toggle,
    /// One value (`handler_int` / `handler_string`).
    Value,
    /// Two values (`handler_str_str`).
    Pair,
}

pub(super) struct Spec {
    pub(super) opt: Opt,
    pub(super) names: &'static [&'static str],
    pub(super) negs: &'static [&'static str],
    pub(super) arity: Arity,
    pub(super) env: Option<&'static str>,
}

pub(super) const fn spec(opt: Opt, names: &'static [&'static str], arity: Arity, env: Option<&'static str>) -> Spec {
    Spec { opt, names, negs: &[], arity, env }
}

pub(super) const fn toggle(
    opt: Opt,
    names: &'static [&'static str],
    negs: &'static [&'static str],
    env: Option<&'static str>,
) -> Spec {
    Spec { opt, names, negs, arity: Arity::Toggle, env }
}

use Arity::{Pair, Switch, Value};

/// In arg.cpp's definition order, which is the order llama.cpp applies environment variables in.
pub(super) const SPECS: &[Spec] = &[
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
    spec(Opt::Pooling, &["--pooling"], Value, Some("LLAMA_ARG_POOLING")),
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
    spec(Opt::Lora, &["--lora"], Value, None),
    spec(Opt::LoraScaled, &["--lora-scaled"], Value, None),
    spec(Opt::ControlVector, &["--control-vector"], Value, None),
    spec(Opt::ControlVectorScaled, &["--control-vector-scaled"], Value, None),
    spec(Opt::ControlVectorLayerRange, &["--control-vector-layer-range"], Pair, None),
    spec(Opt::ServerOnly, &["-a", "--alias"], Value, Some("LLAMA_ARG_ALIAS")),
    spec(Opt::Model, &["-m", "--model"], Value, Some("LLAMA_ARG_MODEL")),
    spec(Opt::ServerOnly, &["--host"], Value, Some("LLAMA_ARG_HOST")),
    spec(Opt::ServerOnly, &["--port"], Value, Some("LLAMA_ARG_PORT")),
    toggle(Opt::ServerOnly, &["--ui", "--webui"], &["--no-ui", "--no-webui"], Some("LLAMA_ARG_UI")),
    spec(Opt::Embeddings, &["--embedding", "--embeddings"], Switch, Some("LLAMA_ARG_EMBEDDINGS")),
    spec(Opt::Rerank, &["--rerank", "--reranking"], Switch, Some("LLAMA_ARG_RERANKING")),
    spec(Opt::ServerOnly, &["--api-key"], Value, Some("LLAMA_API_KEY")),
    spec(Opt::ServerOnly, &["--metrics"], Switch, Some("LLAMA_ARG_ENDPOINT_METRICS")),
    spec(Opt::ServerOnly, &["--props"], Switch, Some("LLAMA_ARG_ENDPOINT_PROPS")),
    toggle(Opt::ServerOnly, &["--slots"], &["--no-slots"], Some("LLAMA_ARG_ENDPOINT_SLOTS")),
    toggle(Opt::ServerOnly, &["--jinja"], &["--no-jinja"], Some("LLAMA_ARG_JINJA")),
    spec(Opt::SpecNMax, &["--spec-draft-n-max"], Value, Some("LLAMA_ARG_SPEC_DRAFT_N_MAX")),
    spec(Opt::SpecNMin, &["--spec-draft-n-min"], Value, Some("LLAMA_ARG_SPEC_DRAFT_N_MIN")),
    spec(Opt::SpecPMin, &["--spec-draft-p-min", "--draft-p-min"], Value, Some("LLAMA_ARG_SPEC_DRAFT_P_MIN")),
    spec(
        Opt::SpecDraftModel,
        &["--spec-draft-model", "-md", "--model-draft"],
        Value,
        Some("LLAMA_ARG_SPEC_DRAFT_MODEL"),
    ),
    spec(Opt::SpecType, &["--spec-type"], Value, Some("LLAMA_ARG_SPEC_TYPE")),
    spec(Opt::SpecNgramN, &["--spec-ngram-simple-size-n"], Value, None),
    spec(Opt::SpecNgramM, &["--spec-ngram-simple-size-m"], Value, None),
    spec(Opt::SpecMapKN, &["--spec-ngram-map-k-size-n"], Value, None),
    spec(Opt::SpecMapKM, &["--spec-ngram-map-k-size-m"], Value, None),
    spec(Opt::SpecMapKHits, &["--spec-ngram-map-k-min-hits"], Value, None),
    spec(Opt::SpecMapK4vN, &["--spec-ngram-map-k4v-size-n"], Value, None),
    spec(Opt::SpecMapK4vM, &["--spec-ngram-map-k4v-size-m"], Value, None),
    spec(Opt::SpecMapK4vHits, &["--spec-ngram-map-k4v-min-hits"], Value, None),
];

pub(super) fn neg_env(s: &Spec) -> Option<String> {
    match (s.arity, s.env) {
        (Arity::Toggle, Some(env)) => Some(env.replacen("LLAMA_ARG_", "LLAMA_ARG_NO_", 1)),
        _ => None,
    }
}

pub(super) fn lookup(name: &str) -> Option<(&'static Spec, bool)> {
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
pub(super) struct Item {
    pub(super) spec: &'static Spec,
    /// The flag as written, or the variable's name.
    pub(super) label: String,
    pub(super) positive: bool,
    pub(super) value: Option<String>,
    /// The second value of a [`Arity::Pair`] flag.
    pub(super) value2: Option<String>,
    pub(super) from_env: bool,
}

/// The [`Error::Flag`] for `flag` (and its value), refused for `reason`.
pub(super) fn flag_error(flag: &str, value: Option<&str>, reason: FlagReason) -> Error {
    Error::Flag { flag: flag.to_string(), value: value.map(str::to_string), reason }
}

pub(super) fn arg_items<S: AsRef<str>>(args: &[S], sampling: &mut Vec<String>) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let raw = args[i].as_ref();
        // As in `common_params_parse_ex`: underscores in long flags are dashes.
        let name = if raw.starts_with("--") { raw.replace('_', "-") } else { raw.to_string() };
        // Sampling flags (and their value: every one but `--ignore-eos` takes one, always the
        // next word) go to the sampling parser, in order.
        if lookup(&name).is_none() && crate::sampling::is_sampling_flag(raw) {
            sampling.push(raw.to_string());
            if name != "--ignore-eos"
                && let Some(v) = args.get(i + 1)
            {
                sampling.push(v.as_ref().to_string());
                i += 1;
            }
            i += 1;
            continue;
        }
        let Some((spec, positive)) = lookup(&name) else {
            if let Some((flag, _)) = name.split_once('=')
                && flag.starts_with('-')
                && lookup(flag).is_some()
            {
                return Err(flag_error(raw, None, FlagReason::EqualsValue { flag: flag.to_string() }));
            }
            if !raw.starts_with('-') {
                return Err(flag_error(raw, None, FlagReason::NotAFlag));
            }
            return Err(flag_error(raw, None, FlagReason::UnknownFlag));
        };
        let mut next = || {
            i += 1;
            match args.get(i) {
                Some(v) if v.as_ref().contains('\0') => Err(flag_error(raw, None, FlagReason::NulByte)),
                Some(v) => Ok(v.as_ref().to_string()),
                None => Err(flag_error(raw, None, FlagReason::MissingValue)),
            }
        };
        let (value, value2) = match spec.arity {
            Arity::Value => (Some(next()?), None),
            Arity::Pair => (Some(next()?), Some(next()?)),
            Arity::Switch | Arity::Toggle => (None, None),
        };
        items.push(Item { spec, label: raw.to_string(), positive, value, value2, from_env: false });
        i += 1;
    }
    Ok(items)
}

/// llama.cpp's `is_truthy` / `is_falsey` (`common/arg.cpp`).
pub(super) fn truthy(v: &str) -> bool {
    matches!(v, "on" | "enabled" | "true" | "1")
}

pub(super) fn falsey(v: &str) -> bool {
    matches!(v, "off" | "disabled" | "false" | "0")
}

pub(super) fn env_items(env: &[(String, String)], warnings: &mut Vec<String>) -> Result<Vec<Item>> {
    let get = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut items = Vec::new();
    for spec in SPECS {
        let Some(var) = spec.env else { continue };
        if let Some(v) = get(var)
            && v.contains('\0')
        {
            return Err(flag_error(var, None, FlagReason::NulByte));
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
                    items.push(Item { spec, label: neg, positive: false, value: None, value2: None, from_env: true });
                } else if let Some(v) = get(var) {
                    let positive = if truthy(v) {
                        true
                    } else if falsey(v) {
                        false
                    } else {
                        return Err(flag_error(var, Some(v), FlagReason::NotABoolean));
                    };
                    items.push(Item {
                        spec,
                        label: var.to_string(),
                        positive,
                        value: None,
                        value2: None,
                        from_env: true,
                    });
                }
            }
            Arity::Switch => {
                if let Some(v) = get(var) {
                    if truthy(v) {
                        items.push(Item {
                            spec,
                            label: var.to_string(),
                            positive: true,
                            value: None,
                            value2: None,
                            from_env: true,
                        });
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
                        value2: None,
                        from_env: true,
                    });
                }
            }
            // No two-value flag has a variable.
            Arity::Pair => {}
        }
    }
    Ok(items)
}
