//! Where a configuration's model comes from: a GGUF file (resolved against `LLAMA_MODELS_DIR`
//! by [`Config::model_path`](super::Config::model_path)) or a tiny-gguf preset.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The environment variable naming the directory relative model paths resolve against.
pub const MODELS_DIR_ENV: &str = "LLAMA_MODELS_DIR";

/// A model made by the tiny-gguf generator (`tiny-gguf --preset NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratedModel {
    /// Dense llama, F16, 2 layers (about 0.7 MB).
    TinyLlama,
    /// qwen3moe, Q8_0, 4 experts (about 1 MB).
    TinyMoe,
    /// gemma3 with sliding-window layers, Q8_0 (about 0.6 MB).
    TinySwa,
    /// qwen3 reranker: a classifier head and rank pooling, F32 (about 1.5 MB).
    TinyRerank,
    /// qwen3moe, Q8_0, 6 layers, 8 experts (about 65 MB).
    BenchMoe,
    /// qwen3moe, Q8_0, 6 layers, 16 wide experts (about 300 MB).
    LargeMoe,
}

impl GeneratedModel {
    /// Every preset.
    pub const ALL: [GeneratedModel; 6] = [
        GeneratedModel::TinyLlama,
        GeneratedModel::TinyMoe,
        GeneratedModel::TinySwa,
        GeneratedModel::TinyRerank,
        GeneratedModel::BenchMoe,
        GeneratedModel::LargeMoe,
    ];

    /// The preset's name (`bench-moe`), as tiny-gguf spells it.
    pub fn name(self) -> &'static str {
        match self {
            GeneratedModel::TinyLlama => "tiny-llama",
            GeneratedModel::TinyMoe => "tiny-moe",
            GeneratedModel::TinySwa => "tiny-swa",
            GeneratedModel::TinyRerank => "tiny-rerank",
            GeneratedModel::BenchMoe => "bench-moe",
            GeneratedModel::LargeMoe => "large-moe",
        }
    }

    /// The training context the generator writes (`n_ctx = 0` means this many tokens).
    pub fn context_length(self) -> u32 {
        match self {
            GeneratedModel::TinyLlama
            | GeneratedModel::TinyMoe
            | GeneratedModel::TinySwa
            | GeneratedModel::TinyRerank => 2048,
            GeneratedModel::BenchMoe | GeneratedModel::LargeMoe => 4096,
        }
    }
}

impl FromStr for GeneratedModel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
            format!("unknown generated model `{s}` (one of {})", names.join(", "))
        })
    }
}

impl fmt::Display for GeneratedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a configuration's model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file, as written in the configuration (see [`Config::model_path`](crate::config::Config::model_path) for resolution).
    File(PathBuf),
    /// A tiny-gguf preset the caller generates.
    Generated(GeneratedModel),
}
