//! A safe runner over llama.cpp with typed options for everything people tune.
//!
//! ```no_run
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let backend = Backend::get()?;
//! let model = Model::load(backend, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
//! let prompt = model.tokenize("Once upon a time", true)?;
//! let out = ctx.generate_greedy(&prompt, 32)?;
//! println!("{} ({:.1} tokens/s)", model.detokenize(&out.tokens)?, out.gen_tps());
//! # Ok(()) }
//! ```
//!
//! Ownership: a [`Model`] owns every pointer handed to llama.cpp when it was loaded (override
//! patterns and arrays, device lists); a [`Context`] borrows its model, so it cannot outlive it.
//! llama.cpp's log goes to the [`log`] crate under the target `llama.cpp` and is silent unless
//! the application installs a logger.

pub mod adapter;
pub mod backend;
pub mod batch;
pub mod chat;
pub mod context;
pub mod embeddings;
pub mod error;
pub mod flags;
pub mod gguf_check;
mod imatrix;
pub mod knobs;
pub mod logging;
pub mod memory;
pub mod model;
pub mod options;
pub mod parallel;
pub mod params;
pub mod quality;
pub mod quantize;
pub mod regex;
pub mod sampling;
pub mod sequences;
pub mod session;
pub mod speculative;
pub mod stream;
pub mod validate;

pub use adapter::{AdapterError, ControlVector, LoadedAdapters, LoraAdapter};
pub use backend::{Backend, BackendOptions, Device, Numa};
pub use batch::{Batch, BatchError, Outputs, Pos, SeqId};
pub use chat::{ChatMessage, ChatSession, ChatTemplate, RenderOptions};
pub use context::{CancelHandle, Context, Generation, PerfCounters, SavedState};
pub use embeddings::{EmbedError, Normalize, Pooling};
pub use error::{Error, Reason, Result};
pub use flags::{Dialect, Parsed, Rendered};
pub use gguf_check::{LoadOptions, check_gguf};
pub use knobs::EnvKnobs;
pub use logging::Recorder;
pub use model::{Model, ModelInfo, Token};
pub use options::{
    AdapterOptions, BufferTarget, CacheType, ContextOptions, CpuMask, DeviceKind, FlashAttn, GpuLayers, LoadMode,
    ModelOptions, NgramMapSizes, Opt, Priority, RunOptions, ScaledPath, SpecType, SpeculativeOptions, SplitMode,
    TensorOverride, TensorSplit, ThreadPlacement,
};
pub use quality::{BaseFormat, BaseReader, KlDivergence, Perplexity, PerplexityOptions, QualityError};
pub use quantize::{QuantType, QuantizeError, QuantizeOptions, Quantized, TensorType, quantize};
pub use sampling::{LogitBias, Mirostat, Sampler, SamplerType, SamplingBuilder, SamplingOptions};
pub use stream::{Event, StopConditions, StopReason, Stream};

/// The GGUF metadata reader and validator [`Model::load`] runs ([`check_gguf`]).
pub use llama_gguf as gguf;

/// The llama.cpp build this crate is linked against.
pub use llama_sys::build_info;
