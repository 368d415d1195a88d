//! [`Opt`]: which typed option a message is about, with its field name and llama.cpp flag.

use std::fmt;

macro_rules! opts {
    ($($(#[$doc:meta])* $variant:ident = $field:literal, $flag:literal;)*) => {
        /// A typed option, named in errors by its field and its llama.cpp flag
        /// (`tensor_overrides (-ot)`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Opt {
            $($(#[$doc])* $variant,)*
        }

        impl Opt {
            /// The field of the typed options (`tensor_overrides`).
            pub const fn field(self) -> &'static str {
                match self {
                    $(Opt::$variant => $field,)*
                }
            }

            /// The llama.cpp flag (`-ot`).
            pub const fn flag(self) -> &'static str {
                match self {
                    $(Opt::$variant => $flag,)*
                }
            }
        }
    };
}

opts! {
    /// `ModelOptions::devices`.
    Devices = "devices", "-dev";
    /// `ModelOptions::gpu_layers`.
    GpuLayers = "gpu_layers", "-ngl";
    /// `ModelOptions::split_mode`.
    SplitMode = "split_mode", "-sm";
    /// `ModelOptions::main_gpu`.
    MainGpu = "main_gpu", "-mg";
    /// `ModelOptions::tensor_split`.
    TensorSplit = "tensor_split", "-ts";
    /// `ModelOptions::tensor_overrides` (with `cpu_moe` and `n_cpu_moe`).
    TensorOverrides = "tensor_overrides", "-ot";
    /// `ModelOptions::load_mode`.
    LoadMode = "load_mode", "-lm";
    /// `ModelOptions::no_host`.
    NoHost = "no_host", "--no-host";
    /// `ContextOptions::n_ctx`.
    NCtx = "n_ctx", "-c";
    /// `ContextOptions::n_batch`.
    NBatch = "n_batch", "-b";
    /// `ContextOptions::n_ubatch`.
    NUbatch = "n_ubatch", "-ub";
    /// `ContextOptions::n_seq_max`.
    NSeqMax = "n_seq_max", "-np";
    /// `ContextOptions::n_threads`.
    NThreads = "n_threads", "-t";
    /// `ContextOptions::n_threads_batch`.
    NThreadsBatch = "n_threads_batch", "-tb";
    /// `ContextOptions::flash_attn`.
    FlashAttn = "flash_attn", "-fa";
    /// `ContextOptions::type_k`.
    TypeK = "type_k", "-ctk";
    /// `ContextOptions::type_v`.
    TypeV = "type_v", "-ctv";
    /// `ContextOptions::embeddings`.
    Embeddings = "embeddings", "--embeddings";
    /// `ContextOptions::pooling`.
    Pooling = "pooling", "--pooling";
    /// `ThreadPlacement::cpu_mask`.
    CpuMask = "cpu_mask", "-C";
    /// `ThreadPlacement::priority`.
    Priority = "priority", "--prio";
    /// `ThreadPlacement::poll`.
    Poll = "poll", "--poll";
    /// `BackendOptions::numa`.
    Numa = "numa", "--numa";
}

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.field(), self.flag())
    }
}
