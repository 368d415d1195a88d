//! The `embed` command: one embedding per input line (standard input or `-f FILE`), printed as
//! JSON, with llama.cpp's context flags (`--pooling`, `-c`, `-ub`, ...) and normalisation
//! (`--embd-normalize`, as llama-embedding's flag). With rank pooling (`--rerank`), a line
//! `query<TAB>document` is scored as a reranking pair: the classifier's outputs for the prompt
//! llama-server's `/rerank` builds.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use llama_runner::embeddings::Normalize;
use llama_runner::{Backend, Context, RunOptions};
use serde::Serialize;

use crate::error::{Error, Result};

/// Arguments of `llama-runner embed`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// llama.cpp flags: model (`-m`), `--pooling mean|cls|last|rank`, context sizes, threads.
    /// `--embedding` is implied.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub flags: String,
    /// Model file (overrides -m in --flags).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Read the texts from this file, one per line (default: standard input).
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Normalisation: -1 none, 0 max-abs to int16, 1 taxicab, 2 euclidean (default), >2 p-norm.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    pub embd_normalize: i64,
}

/// One line's embedding in [`EmbedReport`].
#[derive(Debug, Serialize)]
pub struct EmbedItem {
    /// The line's index among the non-empty input lines.
    pub index: usize,
    /// The line.
    pub text: String,
    /// Its embedding.
    pub embedding: Vec<f32>,
}

/// What `embed` prints.
#[derive(Debug, Serialize)]
pub struct EmbedReport {
    /// The model file.
    pub model: String,
    /// The pooling the context used.
    pub pooling: String,
    /// The embedding width (for rank pooling, the classifier's number of outputs).
    pub n_embd: usize,
    /// Rank pooling: the classifier outputs' labels (an output's index where the model names
    /// none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// One item per non-empty input line, in order.
    pub data: Vec<EmbedItem>,
}

impl EmbedArgs {
    /// The run options: `--flags` parsed, `--model` applied, embeddings on.
    pub fn options(&self) -> Result<RunOptions> {
        let mut options = crate::generate::run_options(&self.flags, self.model.as_ref())?;
        options.context.embeddings = true;
        Ok(options)
    }
}

/// Runs `embed` with `options` (from [`EmbedArgs::options`]).
pub fn run(args: &EmbedArgs, options: &RunOptions, backend: &'static Backend) -> Result<()> {
    let normalize = Normalize::from_llama(args.embd_normalize).ok_or_else(|| Error::InvalidOption {
        option: "--embd-normalize".into(),
        reason: format!("{} is not -1, 0, 1, 2 or a p above 2", args.embd_normalize),
    })?;
    let path = options.model_path.clone().ok_or_else(|| Error::InvalidOption {
        option: "model".into(),
        reason: "no model: pass -m in --flags or --model".into(),
    })?;
    let lines: Vec<String> = match &args.file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|source| Error::Io { path: f.clone(), source })?
            .lines()
            .map(String::from)
            .collect(),
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|source| Error::Io { path: "<stdin>".into(), source })?,
    };
    let texts: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
    if texts.is_empty() {
        return Err(Error::InvalidOption { option: "input".into(), reason: "no non-empty line to embed".into() });
    }
    let model = crate::progress::load_model(backend, &path, &options.model)?;
    let mut ctx = Context::new(&model, &options.context)?;
    let rank = ctx.pooling() == llama_runner::Pooling::Rank;
    // No text may have more tokens than the context has cells: a line far longer than that is
    // refused before llama.cpp tokenizes it (minutes for megabytes on a byte-fallback vocabulary).
    let n_ctx = ctx.n_ctx() as usize;
    let spell = model.max_piece_bytes().saturating_mul(n_ctx).saturating_mul(4);
    if let Some((i, t)) = texts.iter().enumerate().find(|(_, t)| t.len() > spell) {
        return Err(Error::InvalidOption {
            option: "input".into(),
            reason: format!("line {} is {} bytes, more than {n_ctx} tokens (the context) could hold", i + 1, t.len()),
        });
    }
    let tokens: Vec<Vec<i32>> = texts
        .iter()
        .map(|t| match t.split_once('\t') {
            // A reranking pair, as llama-embedding reads them (its --cls-separator default),
            // in the prompt llama-server's /rerank builds.
            Some((query, document)) if rank => llama_runner::embeddings::rerank_prompt(&model, query, document),
            _ => model.tokenize(t, true),
        })
        .collect::<llama_runner::Result<_>>()?;
    let refs: Vec<&[i32]> = tokens.iter().map(Vec::as_slice).collect();
    let vectors = ctx.embed(&refs, normalize)?;
    let report = EmbedReport {
        model: path.display().to_string(),
        pooling: format!("{:?}", ctx.pooling()).to_lowercase(),
        n_embd: ctx.embedding_width(),
        labels: rank.then(|| {
            llama_runner::embeddings::classifier_labels(&model)
                .into_iter()
                .enumerate()
                .map(|(i, l)| l.unwrap_or_else(|| i.to_string()))
                .collect()
        }),
        data: texts
            .into_iter()
            .zip(vectors)
            .enumerate()
            .map(|(index, (text, embedding))| EmbedItem { index, text, embedding })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)
        .map_err(|e| Error::InvalidOption { option: "output".into(), reason: e.to_string() })?;
    writeln!(out).map_err(|source| Error::Io { path: "<stdout>".into(), source })?;
    Ok(())
}
