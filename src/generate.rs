//! The `generate` command: a prompt, llama.cpp's sampling flags, tokens printed as they are
//! produced, Ctrl-C to stop, prompt and generation speed at the end (or everything as JSON).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llama_runner::flags;
use llama_runner::stream::{Event, StopConditions, StopReason};
use llama_runner::{Backend, CancelHandle, Context, Model, RunOptions, Sampler, Token};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::speculate::{Drafting, SpecReport};

/// Arguments of `llama-runner generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// llama.cpp flags: model (`-m`), context and sampling (`--temp 0.7 --top-k 40 -s 42
    /// --samplers ... --ignore-eos`); without sampling flags llama.cpp's default chain with a
    /// random seed, `--temp 0` for greedy.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub flags: String,
    /// Model file (overrides -m in --flags).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// The prompt.
    #[arg(short, long, conflicts_with = "file", required_unless_present = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Tokens to generate at most (-1: until end of generation or a full context).
    #[arg(short = 'n', long, default_value_t = 64, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Stop when the text contains this string (not printed); may be given several times.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Print one JSON object at the end (prompt and generated token ids, text, timings, stop
    /// reason) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Do not print the prompt before the generated text.
    #[arg(long)]
    pub no_echo: bool,
}

/// The run options of a command's `--flags` (warnings printed on stderr), with its
/// `--model` applied over `-m`.
pub fn run_options(flags_text: &str, model: Option<&PathBuf>) -> Result<RunOptions> {
    let parsed = flags::parse_quietly::<String>(&[], &flags::split(flags_text)?)?;
    for w in &parsed.warnings {
        eprintln!("warning: {w}");
    }
    let mut options = parsed.options;
    if let Some(m) = model {
        options.model_path = Some(m.clone());
    }
    Ok(options)
}

/// The sampling options of `flags_text` for `model`, as llama.cpp's tools choose them:
/// llama.cpp's defaults, then the model's `general.sampling.*` values, then the sampling flags.
pub fn model_sampling(model: &Model, flags_text: &str) -> Result<llama_runner::SamplingOptions> {
    let parsed = flags::parse_quietly::<String>(&[], &flags::split(flags_text)?)?;
    Ok(llama_runner::SamplingOptions::for_model(model, &parsed.sampling_flags)?)
}

/// What `generate --json` prints.
#[derive(Debug, Serialize)]
pub struct GenerateReport {
    /// The prompt's token ids (with the model's BOS where it adds one).
    pub prompt_tokens: Vec<Token>,
    /// Generated token ids, in order (stop tokens and end of generation not included; the
    /// tokens that make up a reached stop string are).
    pub tokens: Vec<Token>,
    /// The generated text (the stop string, if one was reached, not included).
    pub text: String,
    /// Prompt processing: tokens and tokens/s.
    pub n_prompt: usize,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Generated tokens.
    pub n_gen: usize,
    /// Generation tokens per second (sampling included).
    pub gen_tps: f64,
    /// Why generation stopped: `end_of_generation`, `max_tokens`, `stop_string`, `stop_token`,
    /// `context_full` or `cancelled`.
    pub stop_reason: &'static str,
    /// The sampler chain, in order, as llama.cpp names its samplers.
    pub samplers: Vec<String>,
    /// The seed the chain used.
    pub seed: u32,
    /// Speculative decoding's statistics, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculative: Option<SpecReport>,
}

impl GenerateArgs {
    /// The run options: `--flags` parsed (warnings printed on stderr) and `--model` applied.
    pub fn options(&self) -> Result<RunOptions> {
        run_options(&self.flags, self.model.as_ref())
    }

    fn prompt(&self) -> Result<String> {
        match (&self.prompt, &self.file) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(f)) => std::fs::read_to_string(f).map_err(|source| Error::Io { path: f.clone(), source }),
            (None, None) => {
                Err(Error::InvalidOption { option: "prompt".into(), reason: "give -p TEXT or -f FILE".into() })
            }
        }
    }
}

/// Runs `generate` with `options` (from [`GenerateArgs::options`]) on an initialised backend.
///
/// Ctrl-C (SIGINT) cancels the prompt evaluation or the generation through the context's
/// [`CancelHandle`]: what was produced is printed with the speeds, and the command ends with
/// status 130; a second Ctrl-C ends the process at once.
pub fn run(args: &GenerateArgs, options: &RunOptions, backend: &'static Backend) -> Result<std::process::ExitCode> {
    let path = options.model_path.clone().ok_or_else(|| Error::InvalidOption {
        option: "model".into(),
        reason: "no model: pass -m in --flags or --model".into(),
    })?;
    let prompt_text = args.prompt()?;
    let model: Model = crate::progress::load_model(backend, &path, &options.model)?;
    // Declared before the context: it borrows the adapters set on it.
    let adapters = options.adapters.load(&model)?;
    let mut ctx = Context::new(&model, &options.context)?;
    adapters.apply(&mut ctx)?;
    let sampling = crate::generate::model_sampling(&model, &args.flags)?;
    let mut sampler = Sampler::new(&model, &sampling)?;
    // A prompt far longer than the context is refused before llama.cpp tokenizes it.
    let prompt = model.tokenize_at_most(&prompt_text, true, ctx.n_ctx() as usize)?;
    // Declared before what borrows them: the draft model, its context, the drafter.
    let drafting = Drafting::new(options, backend)?;
    let mut draft_ctx = match &drafting {
        Some(d) => d.context(&options.context)?,
        None => None,
    };
    let mut drafter = match &drafting {
        Some(d) => Some(d.drafter(draft_ctx.as_mut(), &model)?),
        None => None,
    };
    let stop = StopConditions {
        max_tokens: usize::try_from(args.n_predict).unwrap_or(usize::MAX),
        stop_strings: args.stop.clone(),
        ..Default::default()
    };
    let _watch = CtrlC::watch(ctx.cancel_handle())?;

    let mut out = std::io::stdout().lock();
    if !args.json && !args.no_echo {
        write_out(&mut out, &prompt_text)?;
    }
    let mut tokens = Vec::new();
    let mut text = String::new();
    let t0 = Instant::now();
    let mut summary: Option<(llama_runner::Generation, StopReason)> = None;
    let mut cancelled = false;
    let mut speculative = None;
    let stream = match drafter.as_deref_mut() {
        Some(d) => ctx.stream_speculative(&mut sampler, &[], &prompt, stop, d),
        None => ctx.stream(&mut sampler, &prompt, stop),
    };
    match stream {
        Err(llama_runner::Error::Aborted) => cancelled = true,
        Err(e) => return Err(e.into()),
        Ok(mut stream) => {
            for event in stream.by_ref() {
                match event {
                    Err(llama_runner::Error::Aborted) => {
                        cancelled = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                    Ok(Event::Done { generation, reason }) => summary = Some((generation, reason)),
                    Ok(event) => {
                        if let Event::Token { id, .. } = &event {
                            tokens.push(*id);
                        }
                        text.push_str(event.text());
                        if !args.json {
                            write_out(&mut out, event.text())?;
                        }
                    }
                }
            }
            if let (Some(d), Some(stats)) = (&drafting, stream.speculation()) {
                speculative = Some(SpecReport::new(d.name, stats));
            }
        }
    }
    let elapsed = t0.elapsed();
    let (n_prompt, prompt_tps, gen_tps, reason) = match &summary {
        Some((g, r)) => (g.n_prompt, g.prompt_tps(), g.gen_tps(), reason_name(r)),
        // Cancelled: the prompt's own time is not known apart; the rate is over the whole run.
        None => (prompt.len(), f64::NAN, tps(tokens.len(), elapsed), "cancelled"),
    };
    if args.json {
        let report = GenerateReport {
            prompt_tokens: prompt.clone(),
            n_gen: tokens.len(),
            tokens,
            text,
            n_prompt,
            prompt_tps,
            gen_tps,
            stop_reason: reason,
            samplers: sampler.names(),
            seed: sampler.seed(),
            speculative: speculative.clone(),
        };
        serde_json::to_writer_pretty(&mut out, &report).map_err(|e| stdout_error(e.into()))?;
        writeln!(out).map_err(stdout_error)?;
    } else {
        writeln!(out).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    if cancelled {
        eprintln!(
            "[cancelled: {} tokens generated in {:.2} s]",
            tokens_len(&summary, &ctx, &prompt),
            elapsed.as_secs_f64()
        );
    }
    match &summary {
        Some((g, _)) => eprintln!(
            "prompt: {} tokens, {:.2} t/s; generated: {} tokens, {:.2} t/s; stop: {reason}",
            g.n_prompt,
            g.prompt_tps(),
            g.tokens.len(),
            g.gen_tps()
        ),
        None => eprintln!("prompt: {} tokens; generated: {:.2} t/s over the whole run", prompt.len(), gen_tps),
    }
    if let Some(s) = &speculative {
        eprintln!("{}", s.summary());
    }
    Ok(if cancelled { std::process::ExitCode::from(130) } else { std::process::ExitCode::SUCCESS })
}

/// Tokens generated by a run that may have been cancelled: those after the prompt in the cache.
fn tokens_len(summary: &Option<(llama_runner::Generation, StopReason)>, ctx: &Context<'_>, prompt: &[Token]) -> usize {
    match summary {
        Some((g, _)) => g.tokens.len(),
        None => ctx.n_past().saturating_sub(prompt.len()),
    }
}

fn tps(n: usize, d: Duration) -> f64 {
    if d.is_zero() { 0.0 } else { n as f64 / d.as_secs_f64() }
}

fn reason_name(r: &StopReason) -> &'static str {
    match r {
        StopReason::EndOfGeneration(_) => "end_of_generation",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopString(_) => "stop_string",
        StopReason::StopToken(_) => "stop_token",
        StopReason::ContextFull => "context_full",
        _ => "other",
    }
}

fn write_out(out: &mut impl Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stdout_error)
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io { path: PathBuf::from("<stdout>"), source }
}

/// Cancels a context's work on SIGINT; a second SIGINT terminates the process (the default
/// action is restored once the first has been seen). Unregisters on drop.
struct CtrlC {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    ids: Vec<signal_hook::SigId>,
}

impl CtrlC {
    fn watch(cancel: CancelHandle) -> Result<CtrlC> {
        use signal_hook::consts::SIGINT;
        let seen = Arc::new(AtomicBool::new(false));
        let io = |source| Error::Io { path: PathBuf::from("<signal handler>"), source };
        // Terminates on a SIGINT that arrives when `seen` is already set.
        let id = signal_hook::flag::register_conditional_default(SIGINT, Arc::clone(&seen)).map_err(io)?;
        let mut signals = signal_hook::iterator::Signals::new([SIGINT]).map_err(io)?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            for _ in signals.forever() {
                seen.store(true, Ordering::SeqCst);
                cancel.cancel();
            }
        });
        Ok(CtrlC { handle, thread: Some(thread), ids: vec![id] })
    }
}

impl Drop for CtrlC {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
