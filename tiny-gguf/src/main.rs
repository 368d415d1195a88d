//! `tiny-gguf`: writes a generated GGUF model to a file or a cache directory.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Parser, ValueEnum};
use tiny_gguf::{ModelSpec, WeightType};

/// Generate a deterministic, randomly initialised GGUF model that llama.cpp can load.
#[derive(Debug, Parser)]
#[command(name = "tiny-gguf", version, about)]
#[command(group(ArgGroup::new("dest").required(true).args(["out", "out_dir"])))]
struct Cli {
    /// Starting point; the options below override its fields.
    #[arg(long, value_parser = PossibleValuesParser::new(tiny_gguf::PRESETS))]
    preset: String,
    /// Type of the weight matrices.
    #[arg(long, value_enum)]
    weight_type: Option<WeightTypeArg>,
    /// Seed of the weight generator.
    #[arg(long)]
    seed: Option<u64>,
    /// Embedding width (n_embd).
    #[arg(long)]
    embd: Option<u32>,
    /// Number of layers.
    #[arg(long)]
    layers: Option<u32>,
    /// Number of attention heads.
    #[arg(long)]
    heads: Option<u32>,
    /// Number of key/value heads.
    #[arg(long)]
    kv_heads: Option<u32>,
    /// Dense feed-forward width (llama, gemma3).
    #[arg(long)]
    ff: Option<u32>,
    /// Number of experts (qwen3moe).
    #[arg(long)]
    experts: Option<u32>,
    /// Experts used per token (qwen3moe).
    #[arg(long)]
    experts_used: Option<u32>,
    /// Feed-forward width of one expert (qwen3moe).
    #[arg(long)]
    ff_exp: Option<u32>,
    /// Training context length.
    #[arg(long)]
    context: Option<u32>,
    /// Sliding-window size, 0 for none (gemma3).
    #[arg(long)]
    sliding_window: Option<u32>,
    /// Sliding-window pattern: layer i is SWA when i % p < p - 1 (gemma3).
    #[arg(long)]
    swa_pattern: Option<u32>,
    /// A file whose text is written as `tokenizer.chat_template` (a Jinja chat template).
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// Output file (written atomically).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Cache directory: writes DIR/<file stem>.gguf unless already there, and prints the path.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WeightTypeArg {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<WeightTypeArg> for WeightType {
    fn from(w: WeightTypeArg) -> Self {
        match w {
            WeightTypeArg::F32 => WeightType::F32,
            WeightTypeArg::F16 => WeightType::F16,
            WeightTypeArg::Q8_0 => WeightType::Q8_0,
            WeightTypeArg::Q4_0 => WeightType::Q4_0,
        }
    }
}

impl Cli {
    fn spec(&self) -> Result<ModelSpec, tiny_gguf::Error> {
        let mut s = ModelSpec::preset(&self.preset).ok_or_else(|| tiny_gguf::Error::InvalidSpec {
            field: "preset",
            reason: format!("unknown preset `{}` (one of {})", self.preset, tiny_gguf::PRESETS.join(", ")),
        })?;
        let set = |field: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        if let Some(w) = self.weight_type {
            s.weight_type = w.into();
        }
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        set(&mut s.n_embd, self.embd);
        set(&mut s.n_layer, self.layers);
        set(&mut s.n_head, self.heads);
        set(&mut s.n_head_kv, self.kv_heads);
        set(&mut s.n_ff, self.ff);
        set(&mut s.n_expert, self.experts);
        set(&mut s.n_expert_used, self.experts_used);
        set(&mut s.n_ff_exp, self.ff_exp);
        set(&mut s.context_length, self.context);
        set(&mut s.sliding_window, self.sliding_window);
        set(&mut s.sliding_window_pattern, self.swa_pattern);
        if let Some(path) = &self.chat_template {
            let text = std::fs::read_to_string(path).map_err(|source| tiny_gguf::Error::Io {
                action: "read the chat template",
                path: path.clone(),
                source,
            })?;
            s.chat_template = Some(text);
        }
        Ok(s)
    }
}

fn run(cli: &Cli) -> Result<(), tiny_gguf::Error> {
    let spec = cli.spec()?;
    spec.validate()?;
    let start = Instant::now();
    let path = match (&cli.out, &cli.out_dir) {
        (Some(out), _) => {
            tiny_gguf::write_gguf(&spec, out)?;
            out.clone()
        }
        // clap requires one of --out and --out-dir; default to the current directory anyway.
        (None, dir) => tiny_gguf::cached(&spec, dir.as_deref().unwrap_or(Path::new(".")))?,
    };
    eprintln!(
        "{}: {} bytes, {} parameters, {:.2} s",
        spec.file_stem(),
        spec.file_size()?,
        spec.n_params()?,
        start.elapsed().as_secs_f64()
    );
    println!("{}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiny-gguf: error: {e}");
            ExitCode::FAILURE
        }
    }
}
