//! Rendering [`RunOptions`] as flags of a [`Dialect`].

use super::{Dialect, Rendered};
use crate::backend::Numa;
use crate::options::{
    CacheType, EXPERTS_REGEX, FlashAttn, GpuLayers, LoadMode, Pooling, Priority, RunOptions, SplitMode, TensorOverride,
    max_devices,
};

/// Writes `options` as flags of `dialect`; only options that differ from llama.cpp's defaults
/// appear. Never fails: what cannot be written is listed in [`Rendered::omitted`].
pub fn render(options: &RunOptions, dialect: Dialect) -> Rendered {
    let mut out = Out { dialect, r: Rendered::default() };
    out.model(options);
    out.context(options);
    if options.backend.numa != Numa::Disabled {
        out.pair("--numa", options.backend.numa.name());
    }
    out.adapters(&options.adapters);
    out.speculative(&options.speculative);
    let sampling = crate::sampling::render_flags(&options.sampling);
    match dialect {
        Dialect::Server => out.r.args.extend(sampling),
        Dialect::Bench if !sampling.is_empty() => {
            out.omit(format!("llama-bench has no sampling flags: `{}` left out", sampling.join(" ")))
        }
        Dialect::Bench => {}
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

pub(super) struct Out {
    pub(super) dialect: Dialect,
    pub(super) r: Rendered,
}

impl Out {
    pub(super) fn omit(&mut self, note: String) {
        self.r.omitted.push(note);
    }

    pub(super) fn flag(&mut self, f: &str) {
        self.r.args.push(f.to_string());
    }

    pub(super) fn pair(&mut self, f: &str, v: impl Into<String>) {
        let v = v.into();
        if v.contains('\0') {
            self.omit(format!("`{f}`: the value contains a NUL byte"));
            return;
        }
        self.r.args.push(f.to_string());
        self.r.args.push(v);
    }

    /// `--lora`/`--lora-scaled`, `--control-vector`/`--control-vector-scaled` and the layer
    /// range; llama-bench has none of them.
    pub(super) fn adapters(&mut self, a: &crate::options::AdapterOptions) {
        if self.dialect == Dialect::Bench {
            if !a.is_empty() || a.control_vector_layers.is_some() {
                self.omit("LoRA adapters and control vectors: llama-bench has no flags for them".into());
            }
            return;
        }
        for (list, plain, scaled) in
            [(&a.loras, "--lora", "--lora-scaled"), (&a.control_vectors, "--control-vector", "--control-vector-scaled")]
        {
            for sp in list {
                let Some(path) = sp.path.to_str() else {
                    self.omit(format!("{plain} {}: the path is not UTF-8", sp.path.display()));
                    continue;
                };
                // A path is one CSV field: quoted when it holds a comma or starts with a quote.
                let field = if path.contains(',') || path.starts_with('"') {
                    format!("\"{}\"", path.replace('"', "\"\""))
                } else {
                    path.to_string()
                };
                if sp.scale == 1.0 {
                    self.pair(plain, field);
                } else if path.contains(':') {
                    self.omit(format!("{scaled} {path}: llama.cpp splits FNAME:SCALE at every `:`"));
                } else if !sp.scale.is_finite() {
                    self.omit(format!("{scaled} {path}: the scale {} cannot be written", sp.scale));
                } else {
                    self.pair(scaled, format!("{field}:{}", sp.scale));
                }
            }
        }
        if let Some((start, end)) = a.control_vector_layers {
            self.r.args.extend(["--control-vector-layer-range".to_string(), start.to_string(), end.to_string()]);
        }
    }

    /// The speculative decoding flags; llama-bench has none.
    pub(super) fn speculative(&mut self, s: &crate::options::SpeculativeOptions) {
        if *s == crate::options::SpeculativeOptions::default() {
            return;
        }
        if self.dialect == Dialect::Bench {
            self.omit("speculative decoding: llama-bench has no flags for it".into());
            return;
        }
        if !s.types.is_empty() {
            self.pair("--spec-type", s.types.iter().map(|t| t.name()).collect::<Vec<_>>().join(","));
        }
        if let Some(p) = &s.draft_model {
            match p.to_str() {
                Some("") | None => self.omit(format!("draft model path {} cannot be written", p.display())),
                Some(path) => self.pair("-md", path),
            }
        }
        let d = crate::options::SpeculativeOptions::default();
        if s.n_max != d.n_max {
            self.int("--spec-draft-n-max", s.n_max);
        }
        if s.n_min != d.n_min {
            self.int("--spec-draft-n-min", s.n_min);
        }
        if s.p_min.to_bits() != d.p_min.to_bits() {
            if s.p_min.is_finite() {
                self.pair("--spec-draft-p-min", s.p_min.to_string());
            } else {
                self.omit(format!("--spec-draft-p-min {}: not a number llama.cpp reads", s.p_min));
            }
        }
        if s.ngram_size_n != d.ngram_size_n {
            self.int("--spec-ngram-simple-size-n", s.ngram_size_n);
        }
        if s.ngram_size_m != d.ngram_size_m {
            self.int("--spec-ngram-simple-size-m", s.ngram_size_m);
        }
        for (name, m, dm) in [("map-k", &s.map_k, &d.map_k), ("map-k4v", &s.map_k4v, &d.map_k4v)] {
            if m.size_n != dm.size_n {
                self.int(&format!("--spec-ngram-{name}-size-n"), m.size_n);
            }
            if m.size_m != dm.size_m {
                self.int(&format!("--spec-ngram-{name}-size-m"), m.size_m);
            }
            if m.min_hits != dm.min_hits {
                self.int(&format!("--spec-ngram-{name}-min-hits"), m.min_hits);
            }
        }
    }

    /// A number llama.cpp reads with std::stoi.
    pub(super) fn int(&mut self, f: &str, n: u32) {
        if i32::try_from(n).is_err() {
            self.omit(format!("`{f} {n}`: llama.cpp reads it with std::stoi, which refuses values above {}", i32::MAX));
        } else {
            self.pair(f, n.to_string());
        }
    }

    pub(super) fn model(&mut self, o: &RunOptions) {
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

    pub(super) fn overrides(&mut self, o: &RunOptions) {
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

    pub(super) fn context(&mut self, o: &RunOptions) {
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
        if c.embeddings {
            if bench {
                self.omit("--embeddings: llama-bench's embedding mode is not rendered".into());
            } else {
                self.flag("--embeddings");
            }
        }
        if c.pooling != Pooling::Unspecified {
            if bench {
                self.omit(format!("--pooling {}: llama-bench has no pooling flag", c.pooling.name()));
            } else {
                self.pair("--pooling", c.pooling.name());
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
