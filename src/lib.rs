//! The workbench over [`llama_runner`]: measuring, records, comparisons, sweeps, regression
//! hunting and the `llama-runner` command line.
//!
//! Everything about measuring and tooling lives here, so the library stays lean:
//!
//! | module | what |
//! |---|---|
//! | [`measure`] | llama-bench's method: workloads, repetitions, per-repetition tokens/s; quality workloads (perplexity, KL divergence against a base) |
//! | [`record`] | result records (JSON) with build, model, machine and memory, and llama-bench's JSONL |
//! | [`compare`] | the comparison table and its verdicts (Welch's t-test plus a minimum effect; mean KLD against its uncertainty), the Pareto plot |
//! | [`config`] | configuration files (TOML and the legacy `.env` form) with workloads and generated models |
//! | [`bisect`] | the judge of a `git bisect run` step |
//! | [`history`] | performance across llama.cpp commits: table and SVG, the snapshot list |
//! | [`peer`] | peer comparison samples (llama-bench, llama-cpp-2) and their table |
//! | [`step`] | one `git bisect run` step: the tree, its commit, build, bench and verdict |
//! | [`cli`] | the glue of `llama-runner bench` |
//! | [`embed`] | `llama-runner embed`: embeddings of input lines as JSON |
//! | [`progress`] | the progress bar of model loads longer than a second |
//! | [`quantize`] | `llama-runner quantize`: llama-quantize's command over the library |
//! | [`speculate`] | the drafter of the speculative flags, and its statistics, for `generate` and `chat` |

pub mod bisect;
pub mod chat;
pub mod cli;
pub mod compare;
pub mod config;
pub mod embed;
pub mod error;
pub mod generate;
pub mod history;
pub mod measure;
pub mod peer;
pub mod perplexity;
pub mod progress;
pub mod quantize;
pub mod record;
pub mod speculate;
pub mod step;

pub use error::{Error, Result};
