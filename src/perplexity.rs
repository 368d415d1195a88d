//! The `perplexity` command: llama-perplexity's perplexity and KL divergence
//! ([`llama_runner::quality`]) with its flags and a similar printout.
//!
//! ```text
//! llama-runner perplexity --flags "-m MODEL -c 512 -b 512" -f TEXT                       # PPL
//! llama-runner perplexity --flags "..." -f TEXT --kl-divergence-base BASE                # PPL, writes BASE
//! llama-runner perplexity --flags "..." --kl-divergence-base BASE --kl-divergence [-f TEXT]  # KLD
//! ```
//!
//! As the tool: `-c` is the chunk size (512 when not given), `-b` the batch (chunks share a
//! decode when it is a multiple of `-c`), `--chunks N` scores at most N chunks. The KL
//! divergence takes chunk size, chunks and tokens from the base file; a `-c` or a text that
//! does not fit it is an error (the tool carries on with a warning). `--compact-top-k K`
//! writes (and reads back) the compact base instead of the tool's format.
//!
//! Results go to standard output, what the run is about to do to standard error.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use llama_runner::quality::{self, BaseFormat, BaseReader, KlDivergence, Perplexity, PerplexityOptions};
use llama_runner::{Backend, Context, RunOptions};

/// llama-perplexity's default chunk size.
pub const DEFAULT_N_CTX: u32 = 512;

/// Arguments of `llama-runner perplexity`.
#[derive(Debug, Clone, clap::Args)]
pub struct PerplexityArgs {
    /// llama.cpp flags: model (`-m`), chunk size `-c` (default 512), batch `-b`, threads, cache
    /// types and the other context and model flags.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub flags: String,
    /// Model file (overrides -m in --flags).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// The text (required for the perplexity; with --kl-divergence it is checked against the
    /// base's tokens).
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Base file of log-probabilities: written by the perplexity run, read by --kl-divergence.
    #[arg(long)]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compute the KL divergence against --kl-divergence-base.
    #[arg(long)]
    pub kl_divergence: bool,
    /// Score at most this many chunks (perplexity only; the KL divergence scores the base's).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Write the compact base (top-K log-probabilities and the rest's mass) instead of
    /// llama-perplexity's format.
    #[arg(long)]
    pub compact_top_k: Option<usize>,
}

impl PerplexityArgs {
    /// The run options: `--flags` parsed, `--model` applied.
    pub fn options(&self) -> Result<RunOptions> {
        Ok(crate::generate::run_options(&self.flags, self.model.as_ref())?)
    }
}

/// Runs `perplexity` with `options` (from [`PerplexityArgs::options`]).
pub fn run(args: &PerplexityArgs, options: &RunOptions, backend: &'static Backend) -> Result<()> {
    let path = options.model_path.clone().context("no model: pass -m in --flags or --model")?;
    if args.kl_divergence && args.kl_divergence_base.is_none() {
        bail!("--kl-divergence needs --kl-divergence-base FILE (the base run's log-probabilities)");
    }
    if args.kl_divergence && args.chunks.is_some() {
        bail!("--chunks applies to the base run; the KL divergence scores the base file's chunks");
    }
    if !args.kl_divergence && args.file.is_none() {
        bail!("no text: pass -f FILE");
    }
    let text = match &args.file {
        Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let model = crate::progress::load_model(backend, &path, &options.model)?;
    let tokens = text.as_deref().map(|t| quality::tokenize(&model, t)).transpose()?;
    let mut out = std::io::stdout().lock();
    if args.kl_divergence {
        let base_path = args.kl_divergence_base.as_ref().expect("checked above");
        let mut base = BaseReader::open(base_path)?;
        let given = (options.context.n_ctx != 0).then_some(options.context.n_ctx);
        base.header().check_matches(given, tokens.as_deref())?;
        if let (BaseFormat::Compact { top_k }, Some(k)) = (base.header().format, args.compact_top_k)
            && top_k != k
        {
            bail!("{} is a compact base of top-{top_k}, --compact-top-k {k} was given", base_path.display());
        }
        let popts = PerplexityOptions::new(base.header().n_ctx);
        popts.check(&options.context)?;
        let mut ctx = Context::new(&model, &popts.context_options(&options.context))?;
        eprintln!(
            "kl_divergence: computing over {} chunks, n_ctx={}, batch_size={}, n_seq={} ({})",
            base.header().n_chunk,
            popts.n_ctx,
            ctx.n_batch(),
            ctx.n_seq_max(),
            base_path.display()
        );
        let kl = ctx.kl_divergence(&mut base)?;
        print_kld(&mut out, &kl)?;
    } else {
        let tokens = tokens.expect("checked above");
        let n_ctx = if options.context.n_ctx == 0 { DEFAULT_N_CTX } else { options.context.n_ctx };
        let popts = PerplexityOptions { n_ctx, n_chunks: args.chunks };
        popts.check(&options.context)?;
        let mut ctx = Context::new(&model, &popts.context_options(&options.context))?;
        eprintln!(
            "perplexity: {} tokens; calculating perplexity over chunks of n_ctx={}, batch_size={}, n_seq={}",
            tokens.len(),
            n_ctx,
            ctx.n_batch(),
            ctx.n_seq_max()
        );
        let ppl = match &args.kl_divergence_base {
            None => {
                if args.compact_top_k.is_some() {
                    bail!("--compact-top-k needs --kl-divergence-base FILE to write");
                }
                ctx.perplexity(&tokens, &popts)?
            }
            Some(base) => {
                let format = args.compact_top_k.map_or(BaseFormat::Full, |top_k| BaseFormat::Compact { top_k });
                write_base(&mut ctx, &tokens, &popts, format, base)?
            }
        };
        print_ppl(&mut out, &ppl)?;
    }
    Ok(())
}

fn write_base(
    ctx: &mut Context<'_>,
    tokens: &[i32],
    popts: &PerplexityOptions,
    format: BaseFormat,
    path: &Path,
) -> Result<Perplexity> {
    eprintln!("perplexity: saving the log-probabilities to {} ({format:?})", path.display());
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let r = ctx.perplexity_writing_base(tokens, popts, format, std::io::BufWriter::with_capacity(1 << 20, file));
    if r.is_err() {
        // An incomplete base file is no base file.
        let _ = std::fs::remove_file(path);
    }
    Ok(r?)
}

/// Prints a perplexity as llama-perplexity does: the running PPL per chunk, then the final
/// estimate.
pub fn print_ppl(out: &mut dyn Write, p: &Perplexity) -> Result<()> {
    for (i, v) in p.chunks.iter().enumerate() {
        write!(out, "[{}]{v:.4},", i + 1)?;
    }
    writeln!(out)?;
    match p.uncertainty {
        Some(u) => writeln!(out, "Final estimate: PPL = {:.4} +/- {u:.5}", p.ppl)?,
        None => {
            writeln!(out, "Final estimate: PPL = {:.4} (unexpected negative standard deviation of log(prob))", p.ppl)?
        }
    }
    Ok(())
}

/// Prints a KL divergence as `llama-perplexity --kl-divergence` does: the per-chunk table, then
/// (from 100 scored positions on, as the tool) the perplexity, KL divergence and token
/// probability statistics.
pub fn print_kld(out: &mut dyn Write, k: &KlDivergence) -> Result<()> {
    writeln!(
        out,
        "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p"
    )?;
    for (i, c) in k.chunks.iter().enumerate() {
        writeln!(
            out,
            "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
            i + 1,
            c.ppl.value,
            c.ppl.uncertainty,
            c.log_ppl_ratio.value,
            c.log_ppl_ratio.uncertainty,
            c.kld.value,
            c.kld.uncertainty,
            100.0 * c.delta_p_rms.value,
            100.0 * c.delta_p_rms.uncertainty,
            100.0 * c.same_top.value,
            100.0 * c.same_top.uncertainty
        )?;
    }
    writeln!(out)?;
    if k.count < 100 {
        writeln!(out, "({} positions: llama-perplexity prints no statistics below 100)", k.count)?;
        return Ok(());
    }
    let e = |v: &llama_runner::quality::Estimate| (v.value, v.uncertainty);
    writeln!(out, "====== Perplexity statistics ======")?;
    let (v, u) = e(&k.ppl);
    writeln!(out, "Mean PPL(Q)                   : {v:10.6} ± {u:10.6}")?;
    let (v, u) = e(&k.ppl_base);
    writeln!(out, "Mean PPL(base)                : {v:10.6} ± {u:10.6}")?;
    writeln!(out, "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * k.log_ppl_correlation)?;
    let (v, u) = e(&k.log_ppl_ratio);
    writeln!(out, "Mean ln(PPL(Q)/PPL(base))     : {v:10.6} ± {u:10.6}")?;
    let (v, u) = e(&k.ppl_ratio);
    writeln!(out, "Mean PPL(Q)/PPL(base)         : {v:10.6} ± {u:10.6}")?;
    let (v, u) = e(&k.ppl_diff);
    writeln!(out, "Mean PPL(Q)-PPL(base)         : {v:10.6} ± {u:10.6}")?;
    writeln!(out)?;
    writeln!(out, "====== KL divergence statistics ======")?;
    let (v, u) = e(&k.kld);
    writeln!(out, "Mean    KLD: {v:10.6} ± {u:10.6}")?;
    let d = &k.kld_values;
    writeln!(out, "Maximum KLD: {:10.6}", d.max())?;
    for (label, f) in [("99.9%", 0.999f32), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9)] {
        writeln!(out, "{label}   KLD: {:10.6}", d.percentile(f))?;
    }
    writeln!(out, "Median  KLD: {:10.6}", d.median())?;
    for (label, f) in [("10.0%", 0.1f32), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001)] {
        writeln!(out, "{label}   KLD: {:10.6}", d.percentile(f))?;
    }
    writeln!(out, "Minimum KLD: {:10.6}", d.min())?;
    writeln!(out)?;
    writeln!(out, "====== Token probability statistics ======")?;
    let (v, u) = e(&k.delta_p);
    writeln!(out, "Mean    Δp: {:6.3} ± {:5.3} %", 100.0 * v, 100.0 * u)?;
    let p = &k.delta_p_values;
    writeln!(out, "Maximum Δp: {:6.3}%", 100.0 * p.max())?;
    for (label, f) in [("99.9%", 0.999f32), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9), ("75.0%", 0.75)] {
        writeln!(out, "{label}   Δp: {:6.3}%", 100.0 * p.percentile(f))?;
    }
    writeln!(out, "Median  Δp: {:6.3}%", 100.0 * p.median())?;
    for (label, f) in [("25.0%", 0.25f32), ("10.0%", 0.1), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001)] {
        writeln!(out, "{label}   Δp: {:6.3}%", 100.0 * p.percentile(f))?;
    }
    writeln!(out, "Minimum Δp: {:6.3}%", 100.0 * p.min())?;
    let (v, u) = e(&k.delta_p_rms);
    writeln!(out, "RMS Δp    : {:6.3} ± {:5.3} %", 100.0 * v, 100.0 * u)?;
    let (v, u) = e(&k.same_top);
    writeln!(out, "Same top p: {:6.3} ± {:5.3} %", 100.0 * v, 100.0 * u)?;
    Ok(())
}
