//! Applying lexed flags to [`RunOptions`] with llama.cpp's meaning, and the warnings for its
//! traps.

use super::Parsed;
use super::cnum::{stof, stoi, stoul};
use super::lex::{Item, Opt, falsey, flag_error, truthy};
use super::reason::{DeviceProblem, FlagReason, RuleProblem};
use crate::backend::Numa;
use crate::error::Result;
use crate::options::{
    BufferTarget, CacheType, CpuMask, EXPERTS_REGEX, FlashAttn, GpuLayers, LoadMode, MAX_CPUS, NamedOption, Pooling,
    Priority, RunOptions, ScaledPath, SpecType, SplitMode, TensorOverride, layer_experts_regex, max_devices,
    max_tensor_overrides,
};

pub(super) enum OverrideEvent {
    Rules(Vec<TensorOverride>),
    CpuMoe(String),
    NCpuMoe(String, u32),
}

#[derive(Default)]
pub(super) struct Mask {
    pub(super) cpus: CpuMask,
    /// The single `-C` value as written (digits past 128 dropped), kept when it is the only one.
    pub(super) verbatim: Option<String>,
    pub(super) sources: usize,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) o: RunOptions,
    pub(super) warnings: Vec<String>,
    pub(super) overrides: Vec<OverrideEvent>,
    pub(super) loads: Vec<(String, LoadMode)>,
    pub(super) seen: Vec<(Opt, String, bool)>,
    pub(super) mask: Option<Mask>,
    pub(super) placement_flags: Vec<String>,
    pub(super) threads_batch: bool,
}

pub(super) fn value_of(item: &Item) -> &str {
    item.value.as_deref().unwrap_or_default()
}

impl State {
    pub(super) fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// `stoi` plus a warning when llama.cpp dropped part of the value.
    pub(super) fn int(&mut self, item: &Item) -> Result<i32> {
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

    /// `stoi`, refusing numbers below `min` (0 or more); `note` says what llama.cpp makes of
    /// them when that is worth saying.
    pub(super) fn at_least(&mut self, item: &Item, min: i32, note: Option<&'static str>) -> Result<u32> {
        let n = self.int(item)?;
        let too_small = || flag_error(&item.label, item.value.as_deref(), FlagReason::TooSmall { value: n, min, note });
        if n < min {
            return Err(too_small());
        }
        u32::try_from(n).map_err(|_| too_small())
    }

    pub(super) fn note_repeat(&mut self, item: &Item) {
        let group = match item.spec.opt {
            Opt::Mlock | Opt::Mmap | Opt::DirectIo | Opt::LoadMode | Opt::ServerOnly | Opt::Fit => return,
            // Each adds to a list, as in llama.cpp.
            Opt::Lora | Opt::LoraScaled | Opt::ControlVector | Opt::ControlVectorScaled | Opt::SpecType => return,
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

    pub(super) fn load_mode(&mut self, item: &Item, mode: LoadMode) {
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

    pub(super) fn apply(&mut self, item: &Item) -> Result<()> {
        self.note_repeat(item);
        let flag = item.label.as_str();
        let v = value_of(item);
        let bad = |reason: FlagReason| flag_error(flag, item.value.as_deref(), reason);
        match item.spec.opt {
            Opt::Model => {
                if v.is_empty() {
                    return Err(bad(FlagReason::EmptyPath));
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
                    CpuMask::parse_flag(v).map_err(|e| flag_error(flag, Some(v), e.into()))?;
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
                self.o.context.placement.priority = Priority::from_level(n)
                    .ok_or_else(|| bad(FlagReason::NotInRange { value: n, what: "priority", min: -1, max: 3 }))?;
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
            Opt::CtxSize => self.o.context.n_ctx = self.at_least(item, 0, None)?,
            Opt::BatchSize => self.o.context.n_batch = self.at_least(item, 1, None)?,
            Opt::UbatchSize => self.o.context.n_ubatch = self.at_least(item, 1, None)?,
            Opt::Parallel => {
                self.o.context.n_seq_max = self.at_least(
                    item,
                    1,
                    Some("llama-server's -1 means \"auto\", its own choice of slots; give a number"),
                )?;
            }
            Opt::MainGpu => self.o.model.main_gpu = self.at_least(item, 0, None)?,
            Opt::NCpuMoe => {
                let n = self.at_least(item, 0, Some("llama.cpp refuses it too"))?;
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
                self.o.context.flash_attn = FlashAttn::from_llama(v).ok_or_else(|| {
                    bad(FlagReason::NotOneOf {
                        accepted: &["on", "off", "auto"],
                        note: Some("nor enabled/true/1, disabled/false/0, -1"),
                    })
                })?;
            }
            Opt::CacheTypeK | Opt::CacheTypeV => {
                let t = CacheType::from_llama(v).ok_or_else(|| {
                    bad(FlagReason::UnknownName { what: CacheType::WHAT, accepted: CacheType::NAMES })
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
                let mode = LoadMode::from_llama(v)
                    .ok_or_else(|| bad(FlagReason::NotOneOf { accepted: LoadMode::NAMES, note: None }))?;
                self.load_mode(item, mode);
            }
            Opt::Numa => {
                // `--numa disabled` is not a value llama.cpp's parser takes; "" is distribute.
                let numa = Numa::ALL.into_iter().find(|n| n.name() == v && *n != Numa::Disabled);
                self.o.backend.numa = match numa {
                    Some(n) => n,
                    None if v.is_empty() => {
                        self.warn(format!("`{flag} \"\"` means distribute in llama.cpp"));
                        Numa::Distribute
                    }
                    None => {
                        return Err(bad(FlagReason::NotOneOf {
                            accepted: &["distribute", "isolate", "numactl"],
                            note: None,
                        }));
                    }
                };
            }
            Opt::SplitMode => {
                self.o.model.split_mode = SplitMode::from_llama(v)
                    .ok_or_else(|| bad(FlagReason::NotOneOf { accepted: SplitMode::NAMES, note: None }))?;
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
                    return Err(bad(FlagReason::NotOneOf { accepted: &["on", "off"], note: None }));
                }
            }
            Opt::ServerOnly => {
                self.warn(format!("`{flag}` only configures llama-server's HTTP side; ignored"));
            }
            Opt::Pooling => {
                // arg.cpp compares exactly with the five names; "unspecified" is not one of them.
                self.o.context.pooling = Pooling::from_llama(v)
                    .filter(|p| *p != Pooling::Unspecified)
                    .ok_or_else(|| bad(FlagReason::NotOneOf { accepted: Pooling::FLAG_NAMES, note: None }))?;
            }
            Opt::Embeddings => self.o.context.embeddings = true,
            Opt::Lora | Opt::ControlVector | Opt::LoraScaled | Opt::ControlVectorScaled => {
                let scaled = matches!(item.spec.opt, Opt::LoraScaled | Opt::ControlVectorScaled);
                let mut list = Vec::new();
                for field in csv_row(v) {
                    let (path, scale) = if scaled {
                        let parts: Vec<&str> = field.split(':').collect();
                        let [path, scale] = parts[..] else {
                            return Err(bad(FlagReason::Other(format!(
                                "`{field}` is not FNAME:SCALE (exactly one `:`, as llama.cpp splits at every `:`)"
                            ))));
                        };
                        let n = stof(flag, scale)?;
                        if !n.exact {
                            self.warn(format!(
                                "`{flag} {field}`: the scale is read as {} (std::stof stops at the first character \
                                 that is not part of a number)",
                                n.value
                            ));
                        }
                        (path.to_string(), n.value)
                    } else {
                        (field, 1.0)
                    };
                    if path.is_empty() {
                        return Err(bad(FlagReason::EmptyPath));
                    }
                    list.push(ScaledPath { path: path.into(), scale });
                }
                let a = &mut self.o.adapters;
                let target = if matches!(item.spec.opt, Opt::Lora | Opt::LoraScaled) {
                    &mut a.loras
                } else {
                    &mut a.control_vectors
                };
                target.extend(list);
            }
            Opt::SpecType => {
                // Appended, as arg.cpp inserts the names into its list.
                for name in v.split(',') {
                    let t = match name {
                        "none" => SpecType::None,
                        "draft-simple" => SpecType::DraftSimple,
                        "ngram-simple" => SpecType::NgramSimple,
                        "ngram-map-k" => SpecType::NgramMapK,
                        "ngram-map-k4v" => SpecType::NgramMapK4v,
                        "draft-eagle3" | "draft-mtp" | "draft-dflash" | "draft-dspark" | "ngram-mod"
                        | "ngram-cache" => {
                            return Err(bad(FlagReason::Unsupported { by: "llama-runner's speculative decoding" }));
                        }
                        _ => {
                            return Err(bad(FlagReason::NotOneOf {
                                accepted: &[
                                    "none",
                                    "draft-simple",
                                    "draft-eagle3",
                                    "draft-mtp",
                                    "draft-dflash",
                                    "draft-dspark",
                                    "ngram-simple",
                                    "ngram-map-k",
                                    "ngram-map-k4v",
                                    "ngram-mod",
                                    "ngram-cache",
                                ],
                                note: None,
                            }));
                        }
                    };
                    self.o.speculative.types.push(t);
                }
            }
            Opt::SpecDraftModel => {
                if v.is_empty() {
                    return Err(bad(FlagReason::EmptyPath));
                }
                self.o.speculative.draft_model = Some(v.into());
            }
            Opt::SpecNMax => self.o.speculative.n_max = self.at_least(item, 0, None)?,
            Opt::SpecNMin => self.o.speculative.n_min = self.at_least(item, 0, None)?,
            Opt::SpecPMin => {
                let n = stof(flag, v)?;
                self.o.speculative.p_min = n.value;
            }
            Opt::SpecNgramN
            | Opt::SpecNgramM
            | Opt::SpecMapKN
            | Opt::SpecMapKM
            | Opt::SpecMapK4vN
            | Opt::SpecMapK4vM => {
                // arg.cpp takes n-gram sizes from 1 to 1024.
                let n = self.at_least(item, 1, None)?;
                if n > 1024 {
                    return Err(bad(FlagReason::NotInRange {
                        value: n as i32,
                        what: "n-gram size",
                        min: 1,
                        max: 1024,
                    }));
                }
                let s = &mut self.o.speculative;
                match item.spec.opt {
                    Opt::SpecNgramN => s.ngram_size_n = n,
                    Opt::SpecNgramM => s.ngram_size_m = n,
                    Opt::SpecMapKN => s.map_k.size_n = n,
                    Opt::SpecMapKM => s.map_k.size_m = n,
                    Opt::SpecMapK4vN => s.map_k4v.size_n = n,
                    _ => s.map_k4v.size_m = n,
                }
            }
            Opt::SpecMapKHits | Opt::SpecMapK4vHits => {
                let n = self.at_least(item, 1, None)?;
                if n > u32::from(u16::MAX) {
                    return Err(bad(FlagReason::NotInRange {
                        value: n as i32,
                        what: "minimum hits",
                        min: 1,
                        max: i32::from(u16::MAX),
                    }));
                }
                let s = &mut self.o.speculative;
                if item.spec.opt == Opt::SpecMapKHits {
                    s.map_k.min_hits = n;
                } else {
                    s.map_k4v.min_hits = n;
                }
            }
            Opt::ControlVectorLayerRange => {
                let start = stoi(flag, v)?.value;
                let end = stoi(flag, item.value2.as_deref().unwrap_or_default())?.value;
                self.o.adapters.control_vector_layers = Some((start, end));
            }
            Opt::Rerank => {
                self.o.context.embeddings = true;
                self.o.context.pooling = Pooling::Rank;
            }
        }
        Ok(())
    }

    pub(super) fn tensor_split(&mut self, item: &Item) -> Result<Vec<f32>> {
        let flag = item.label.as_str();
        let v = value_of(item);
        // As the `-ts` option does: std::sregex_token_iterator over `[,/]+`: a leading separator gives an
        // empty first piece (which stof refuses), a trailing one gives nothing.
        let mut pieces: Vec<&str> = v.split([',', '/']).collect();
        let leading_empty = pieces.first().is_some_and(|p| p.is_empty()) && v.starts_with([',', '/']);
        pieces.retain(|p| !p.is_empty());
        if leading_empty || pieces.is_empty() {
            return Err(flag_error(flag, Some(v), FlagReason::EmptyProportion));
        }
        let max = max_devices();
        if pieces.len() >= max {
            return Err(flag_error(flag, Some(v), FlagReason::TooManyProportions { count: pieces.len(), max }));
        }
        let mut out = Vec::with_capacity(pieces.len());
        for p in pieces {
            let n = stof(flag, p)?;
            if !n.value.is_finite() || n.value < 0.0 {
                return Err(flag_error(flag, Some(v), FlagReason::BadProportion { proportion: p.to_string() }));
            }
            if !n.exact {
                self.warn(format!("`{flag}`: proportion `{p}` is read as {} (std::stof stops early)", n.value));
            }
            out.push(n.value);
        }
        Ok(out)
    }

    pub(super) fn finish(mut self) -> Result<Parsed> {
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
        Ok(Parsed { options: self.o, warnings: self.warnings, sampling_flags: Vec::new() })
    }

    /// Turns the positional `-ot`/`-cmoe`/`-ncmoe` events into typed options with the same
    /// first-match-wins order.
    pub(super) fn finish_overrides(&mut self) -> Result<()> {
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
                            FlagReason::NCpuMoeTooLarge { max: max_overrides },
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
                    FlagReason::TooManyOverrides { count: list.len(), max: max_overrides },
                ));
            }
        }
        self.o.model.tensor_overrides = list;
        Ok(())
    }
}

pub(super) fn parse_override_rules(flag: &str, v: &str, warnings: &mut Vec<String>) -> Result<Vec<TensorOverride>> {
    let mut rules = Vec::new();
    for rule in v.split(',') {
        let bad = |problem: RuleProblem| {
            flag_error(flag, Some(v), FlagReason::OverrideRule { rule: rule.to_string(), problem })
        };
        let Some((pattern, target)) = rule.split_once('=') else {
            return Err(bad(RuleProblem::NoEquals));
        };
        if pattern.is_empty() {
            return Err(bad(RuleProblem::EmptyPattern));
        }
        crate::regex::check(pattern).map_err(|message| bad(RuleProblem::Regex { message }))?;
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

pub(super) fn parse_buffer_target(name: &str) -> std::result::Result<BufferTarget, RuleProblem> {
    if name == "CPU" {
        return Ok(BufferTarget::Cpu);
    }
    if name.is_empty() {
        return Err(RuleProblem::EmptyBufferType);
    }
    if name.eq_ignore_ascii_case("cpu") {
        return Err(RuleProblem::CaseSensitive { name: name.to_string() });
    }
    if name.contains(['=', ' ', '\t', ',']) {
        return Err(RuleProblem::SplitName { name: name.to_string() });
    }
    if name.ends_with("_Host") {
        return Err(RuleProblem::HostBuffer { name: name.to_string() });
    }
    Ok(BufferTarget::Device(name.to_string()))
}

pub(super) fn parse_devices(flag: &str, v: &str) -> Result<Vec<String>> {
    let names: Vec<&str> = v.split(',').collect();
    if names == ["none"] {
        return Ok(Vec::new());
    }
    for name in &names {
        let bad = |problem| flag_error(flag, Some(v), FlagReason::Device { name: name.to_string(), problem });
        if name.is_empty() {
            return Err(bad(DeviceProblem::EmptyName));
        }
        if *name == "none" {
            return Err(bad(DeviceProblem::NoneNotAlone));
        }
        if *name == "CPU" {
            return Err(bad(DeviceProblem::Cpu));
        }
    }
    Ok(names.into_iter().map(str::to_string).collect())
}

/// llama.cpp's `parse_cpu_range` (`common/common.cpp`): `lo-hi`, either end may be left out.
pub(super) fn parse_cpu_range(flag: &str, v: &str) -> Result<CpuMask> {
    let Some((lo, hi)) = v.split_once('-') else {
        return Err(flag_error(flag, Some(v), FlagReason::NotARange));
    };
    let bound = |s: &str, default: u64| -> Result<u64> {
        if s.is_empty() {
            return Ok(default);
        }
        let n = stoul(flag, s)?.value;
        if n >= MAX_CPUS as u64 {
            return Err(flag_error(flag, Some(v), FlagReason::CpuOutOfBounds { cpu: n, last: MAX_CPUS - 1 }));
        }
        Ok(n)
    };
    let (lo, hi) = (bound(lo, 0)?, bound(hi, MAX_CPUS as u64 - 1)?);
    // Both bounds are below MAX_CPUS here.
    Ok(CpuMask::range(lo as usize, hi as usize))
}

/// llama.cpp's `parse_csv_row` (`common/arg.cpp`): fields split at commas; a field that starts
/// with `"` is quoted (commas inside kept, `""` an escaped quote); a quote elsewhere is literal;
/// empty fields are kept.
pub(super) fn csv_row(input: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if !in_quotes && field.is_empty() => in_quotes = true,
            '"' if !in_quotes => field.push('"'),
            '"' if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => in_quotes = false,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}
