//! The `quantize` command: `llama-runner quantize INPUT OUTPUT TYPE`, llama-quantize's
//! arguments and flags over [`mod@llama_runner::quantize`], with a progress bar on standard error
//! and a summary (sizes, types, fallbacks, time) on standard output.
//!
//! The bar appears once the run has taken a second (as the load bar of [`crate::progress`]),
//! and only when standard error is a terminal.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::ProgressDrawTarget;
use llama_runner::quantize::{ImportanceMatrix, QuantizeProgress, Quantized, TensorTypeOverride};
use llama_runner::{Backend, QuantType, QuantizeOptions, TensorType};

use crate::error::Result;

/// Arguments of `llama-runner quantize` (llama-quantize's spelling; its thread count is `-t`).
#[derive(Debug, Clone, clap::Args)]
pub struct QuantizeArgs {
    /// The model to quantize (GGUF; F32, F16 or BF16, or quantized with --allow-requantize).
    pub input: PathBuf,
    /// The file to write; an existing one is replaced, but never the input. Written to a
    /// temporary file beside it first, so a failed run leaves nothing here.
    pub output: PathBuf,
    /// The target, by llama-quantize's name (Q4_0, Q4_K_M, Q5_K_S, Q6_K, Q8_0, F16, BF16,
    /// F32, COPY, ...) or its number.
    #[arg(value_name = "TYPE", value_parser = parse::<QuantType>)]
    pub target: QuantType,
    /// Allow requantizing tensors that are already quantized (worse than quantizing from 16 or
    /// 32 bits).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Leave output.weight as it is.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Give every tensor the target's type instead of llama.cpp's mixture.
    #[arg(long)]
    pub pure: bool,
    /// The type of output.weight (a ggml type: q8_0, q6_K, f16, ...).
    #[arg(long, value_name = "TYPE", value_parser = parse::<TensorType>)]
    pub output_tensor_type: Option<TensorType>,
    /// The type of the token embeddings (token_embd.weight).
    #[arg(long, value_name = "TYPE", value_parser = parse::<TensorType>)]
    pub token_embedding_type: Option<TensorType>,
    /// Quantize the tensors whose name the pattern (a regular expression) is found in to TYPE;
    /// repeatable, the first match wins, e.g. `--tensor-type attn_v=q8_0`.
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE", value_parser = parse::<TensorTypeOverride>)]
    pub tensor_types: Vec<TensorTypeOverride>,
    /// Threads (default: one per hardware thread).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<u32>,
    /// An importance matrix (llama-imatrix's output, GGUF or the legacy format).
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Use the importance matrix only for tensors whose name contains NAME (repeatable).
    #[arg(long = "include-weights", value_name = "NAME", requires = "imatrix", conflicts_with = "exclude_weights")]
    pub include_weights: Vec<String>,
    /// Do not use the importance matrix for tensors whose name contains NAME (repeatable).
    #[arg(long = "exclude-weights", value_name = "NAME", requires = "imatrix")]
    pub exclude_weights: Vec<String>,
}

fn parse<T: std::str::FromStr<Err = llama_runner::Error>>(s: &str) -> std::result::Result<T, String> {
    s.parse().map_err(|e: llama_runner::Error| e.to_string())
}

impl QuantizeArgs {
    /// The library's options, the importance matrix read.
    pub fn options(&self) -> Result<QuantizeOptions> {
        let imatrix = match &self.imatrix {
            Some(path) => {
                let mut m = ImportanceMatrix::load(path)?;
                m.retain(&self.include_weights, &self.exclude_weights);
                Some(std::sync::Arc::new(m))
            }
            None => None,
        };
        Ok(QuantizeOptions {
            target: self.target,
            allow_requantize: self.allow_requantize,
            leave_output_tensor: self.leave_output_tensor,
            pure: self.pure,
            output_tensor_type: self.output_tensor_type,
            token_embedding_type: self.token_embedding_type,
            tensor_types: self.tensor_types.clone(),
            n_threads: self.threads,
            imatrix,
        })
    }
}

/// Runs `quantize`: the bar while it works, then the summary on standard output.
pub fn run(args: &QuantizeArgs, backend: &Backend) -> Result<Quantized> {
    let mut bar = QuantizeBar::new(crate::progress::SHOW_AFTER, ProgressDrawTarget::stderr());
    let options = args.options()?;
    let done = llama_runner::quantize(backend, &args.input, &args.output, &options, |p| bar.update(p));
    bar.finish();
    let done = done?;
    print!("{}", summary(&done));
    Ok(done)
}

/// The summary printed after a run.
pub fn summary(q: &Quantized) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let percent = if q.input_bytes == 0 { 0.0 } else { 100.0 * q.output_bytes as f64 / q.input_bytes as f64 };
    let mut out = format!(
        "quantized {} -> {} as {} in {:.2} s\n",
        q.input.display(),
        q.output.display(),
        q.target,
        q.elapsed.as_secs_f64()
    );
    out += &format!("  file size:   {:.2} MiB -> {:.2} MiB ({percent:.1}%)\n", mib(q.input_bytes), mib(q.output_bytes));
    out +=
        &format!("  tensor data: {:.2} MiB -> {:.2} MiB\n", mib(q.tensor_bytes_before()), mib(q.tensor_bytes_after()));
    let counts: Vec<String> = q.type_counts().iter().map(|(t, n)| format!("{n} {t}")).collect();
    out += &format!("  tensors:     {} ({})\n", q.tensors.len(), counts.join(", "));
    if !q.fallbacks.is_empty() {
        out += &format!("  fallbacks:   {} (rows the type's blocks do not divide)\n", q.fallbacks.len());
        for f in &q.fallbacks {
            out += &format!("    {}: {} -> {}\n", f.tensor, f.wanted, f.used);
        }
    }
    out
}

/// The progress of one quantization, shown as a bar (bytes of input processed, the tensor
/// being written) once the run has taken longer than a delay.
pub struct QuantizeBar {
    bar: crate::progress::DelayedBar,
}

impl QuantizeBar {
    /// A bar drawn on `target` once `delay` has passed.
    pub fn new(delay: Duration, target: ProgressDrawTarget) -> QuantizeBar {
        let template = "quantizing {bar:30} {binary_bytes}/{binary_total_bytes} {elapsed} {msg}";
        QuantizeBar { bar: crate::progress::DelayedBar::new(delay, template, target) }
    }

    /// Records a tensor written; shows the bar when the run has taken longer than the delay.
    pub fn update(&mut self, p: &QuantizeProgress) {
        if let Some(bar) = self.bar.due(p.bytes_total) {
            bar.set_position(p.bytes_done);
            bar.set_message(format!("[{}/{}] {}", p.done, p.total, p.tensor));
        }
    }

    /// Whether the bar has appeared.
    pub fn shown(&self) -> bool {
        self.bar.shown()
    }

    /// Where the bar stands, in bytes of input (0 before it appears).
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Removes the bar from the terminal.
    pub fn finish(self) {
        self.bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(done: usize) -> QuantizeProgress {
        QuantizeProgress { done, total: 4, tensor: format!("t{done}"), bytes_done: done as u64 * 100, bytes_total: 400 }
    }

    #[test]
    fn a_quick_run_shows_no_bar_and_a_slow_one_the_bytes_done() {
        let mut quick = QuantizeBar::new(Duration::from_secs(3600), ProgressDrawTarget::hidden());
        quick.update(&step(1));
        assert!(!quick.shown());
        quick.finish();
        let mut slow = QuantizeBar::new(Duration::ZERO, ProgressDrawTarget::hidden());
        slow.update(&step(1));
        slow.update(&step(3));
        assert!(slow.shown());
        assert_eq!(slow.position(), 300);
        slow.finish();
    }
}
