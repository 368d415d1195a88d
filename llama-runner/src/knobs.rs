//! Environment knobs that llama.cpp reads once per process, as typed options.
//!
//! ggml reads these with `getenv`, most of them once (the first time a backend or context needs
//! them), so they must be in the environment before the backend initialises. [`EnvKnobs`] are
//! checked by [`Backend::init`](crate::Backend::init) (the environment must already hold them) or
//! written by the `unsafe` [`Backend::init_setting_env`](crate::Backend::init_setting_env);
//! asking for different knobs after initialisation is an error, not a silent no-op. A/B tests of knobs need separate processes (`llama-runner sweep`
//! runs each configuration in its own).

/// Environment knobs. `None` leaves the variable as the process found it; `Some(true)` sets it
/// to `1`; `Some(false)` removes it (several are checked for presence, not value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct EnvKnobs {
    /// `GGML_CUDA_GRAPH_OPT`: CUDA graph optimisation / stream concurrency (one GPU only).
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_GRAPH_OPT", skip_serializing_if = "Option::is_none"))]
    pub cuda_graph_opt: Option<bool>,
    /// `GGML_CUDA_DISABLE_GRAPHS`: no CUDA graphs (they matter for generation speed).
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_DISABLE_GRAPHS", skip_serializing_if = "Option::is_none"))]
    pub cuda_disable_graphs: Option<bool>,
    /// `GGML_CUDA_DISABLE_FUSION`: no CUDA op fusion.
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_DISABLE_FUSION", skip_serializing_if = "Option::is_none"))]
    pub cuda_disable_fusion: Option<bool>,
    /// `GGML_CUDA_PDL`: programmatic dependent launch (`false` writes `0`, turning it off).
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_PDL", skip_serializing_if = "Option::is_none"))]
    pub cuda_pdl: Option<bool>,
    /// `GGML_CUDA_ENABLE_UNIFIED_MEMORY`: managed memory, VRAM may spill into system RAM.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "GGML_CUDA_ENABLE_UNIFIED_MEMORY", skip_serializing_if = "Option::is_none")
    )]
    pub cuda_unified_memory: Option<bool>,
    /// `GGML_CUDA_NO_PINNED`: no pinned host buffers (affects expert-on-CPU prompt uploads).
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_NO_PINNED", skip_serializing_if = "Option::is_none"))]
    pub cuda_no_pinned: Option<bool>,
    /// `GGML_CUDA_REGISTER_HOST`: `cudaHostRegister` on memory-mapped model memory.
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_REGISTER_HOST", skip_serializing_if = "Option::is_none"))]
    pub cuda_register_host: Option<bool>,
    /// `GGML_CUDA_P2P`: peer access between GPUs.
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CUDA_P2P", skip_serializing_if = "Option::is_none"))]
    pub cuda_p2p: Option<bool>,
    /// `GGML_OP_OFFLOAD_MIN_BATCH`: smallest batch for which host-resident ops (experts on the
    /// CPU) are offloaded to the GPU (llama.cpp's default 32).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "GGML_OP_OFFLOAD_MIN_BATCH", skip_serializing_if = "Option::is_none")
    )]
    pub op_offload_min_batch: Option<u32>,
    /// `GGML_CUDA_CUBLAS_COMPUTE_TYPE`: cuBLAS compute type (`f32`, `f16`, ...).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "GGML_CUDA_CUBLAS_COMPUTE_TYPE", skip_serializing_if = "Option::is_none")
    )]
    pub cuda_cublas_compute_type: Option<String>,
    /// `GGML_CPU_DISABLE_FUSION`: no CPU op fusion.
    #[cfg_attr(feature = "serde", serde(rename = "GGML_CPU_DISABLE_FUSION", skip_serializing_if = "Option::is_none"))]
    pub cpu_disable_fusion: Option<bool>,
    /// `LLAMA_GRAPH_REUSE_DISABLE`: no compute-graph reuse between decode calls.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "LLAMA_GRAPH_REUSE_DISABLE", skip_serializing_if = "Option::is_none")
    )]
    pub graph_reuse_disable: Option<bool>,
    /// `LLAMA_ATTN_ROT_DISABLE`: no Hadamard rotation for quantized KV caches.
    #[cfg_attr(feature = "serde", serde(rename = "LLAMA_ATTN_ROT_DISABLE", skip_serializing_if = "Option::is_none"))]
    pub attn_rot_disable: Option<bool>,
}

impl EnvKnobs {
    /// `(variable, value)` for every knob that is set; `None` as value means "remove".
    pub fn vars(&self) -> Vec<(&'static str, Option<String>)> {
        let flag = |b: &Option<bool>| b.map(|on| on.then(|| "1".to_string()));
        let mut v: Vec<(&'static str, Option<Option<String>>)> = vec![
            ("GGML_CUDA_GRAPH_OPT", flag(&self.cuda_graph_opt)),
            ("GGML_CUDA_DISABLE_GRAPHS", flag(&self.cuda_disable_graphs)),
            ("GGML_CUDA_DISABLE_FUSION", flag(&self.cuda_disable_fusion)),
            ("GGML_CUDA_PDL", self.cuda_pdl.map(|on| Some(if on { "1" } else { "0" }.to_string()))),
            ("GGML_CUDA_ENABLE_UNIFIED_MEMORY", flag(&self.cuda_unified_memory)),
            ("GGML_CUDA_NO_PINNED", flag(&self.cuda_no_pinned)),
            ("GGML_CUDA_REGISTER_HOST", flag(&self.cuda_register_host)),
            ("GGML_CUDA_P2P", flag(&self.cuda_p2p)),
            ("GGML_OP_OFFLOAD_MIN_BATCH", self.op_offload_min_batch.map(|n| Some(n.to_string()))),
            ("GGML_CUDA_CUBLAS_COMPUTE_TYPE", self.cuda_cublas_compute_type.clone().map(Some)),
            ("GGML_CPU_DISABLE_FUSION", flag(&self.cpu_disable_fusion)),
            ("LLAMA_GRAPH_REUSE_DISABLE", flag(&self.graph_reuse_disable)),
            ("LLAMA_ATTN_ROT_DISABLE", flag(&self.attn_rot_disable)),
        ];
        v.retain(|(_, val)| val.is_some());
        v.into_iter().map(|(k, val)| (k, val.flatten())).collect()
    }

    /// Whether no knob is set.
    pub fn is_empty(&self) -> bool {
        self.vars().is_empty()
    }

    /// `NAME=value` pairs as a shell would write them (removed ones as `NAME=`... omitted).
    pub fn to_shell(&self) -> String {
        self.vars().into_iter().filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
    }

    /// Checks that the process environment already holds every knob: a variable set to a value
    /// has exactly that value, a variable switched off is absent.
    pub fn check_environment(&self) -> crate::Result<()> {
        for (name, wanted) in self.vars() {
            let found = std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
            if found != wanted {
                return Err(crate::Error::EnvKnob { name, wanted, found });
            }
        }
        Ok(())
    }

    /// Writes the knobs into the process environment.
    ///
    /// # Safety
    /// No other thread may read or write the environment at the same time (`std::env::set_var`).
    /// [`Backend::init_setting_env`](crate::Backend::init_setting_env) calls this, passing its
    /// caller's promise on.
    pub(crate) unsafe fn apply(&self) {
        for (k, v) in self.vars() {
            match v {
                // SAFETY: the caller guarantees no concurrent environment access.
                Some(v) => unsafe { std::env::set_var(k, v) },
                // SAFETY: as above.
                None => unsafe { std::env::remove_var(k) },
            }
        }
    }
}
