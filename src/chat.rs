//! The `chat` command: an interactive conversation on standard input, rendered with the model's
//! chat template (or a named one), the history kept in the KV cache so each turn decodes only
//! what it adds. `/reset` forgets the conversation, `/exit` (or end of input) ends it; Ctrl-C
//! stops the answer being written and keeps what it had said, Ctrl-C between answers ends the
//! command.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use llama_runner::chat::{self, ChatMessage, ChatSession, ChatTemplate};
use llama_runner::stream::{Event, StopConditions};
use llama_runner::{Backend, CancelHandle, Context, Model, RunOptions, Sampler};

use crate::error::{Error, Result};

/// Arguments of `llama-runner chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// llama.cpp flags: model (`-m`), context (`-c`), sampling (`--temp 0.7 --top-k 40 -s 42`,
    /// `--temp 0` for greedy), threads.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub flags: String,
    /// Model file (overrides -m in --flags).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// The chat template: a built-in name of llama.cpp (`chatml`, `gemma`, `llama3`, ...) or a
    /// Jinja template text. Default: the model's own (`tokenizer.chat_template`).
    #[arg(long, conflicts_with = "chat_template_file")]
    pub chat_template: Option<String>,
    /// Read the (Jinja) chat template from this file.
    #[arg(long, value_name = "FILE")]
    pub chat_template_file: Option<PathBuf>,
    /// Render with llama.cpp's built-in formatter instead of the Jinja engine (it must
    /// recognise the template).
    #[arg(long)]
    pub no_jinja: bool,
    /// A system message that starts the conversation (kept by `/reset`).
    #[arg(long = "system-prompt", visible_alias = "sys", short_alias = 's')]
    pub system_prompt: Option<String>,
    /// Tokens per answer at most (-1: until end of generation or a full context).
    #[arg(short = 'n', long, default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Stop an answer when its text contains this string; may be given several times.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl ChatArgs {
    /// The run options: `--flags` parsed (warnings printed on stderr) and `--model` applied.
    pub fn options(&self) -> Result<RunOptions> {
        crate::generate::run_options(&self.flags, self.model.as_ref())
    }

    /// The template these arguments name, for `model`.
    pub fn template(&self, model: &Model) -> Result<ChatTemplate> {
        let invalid = |reason: String| Error::InvalidOption { option: "chat template".into(), reason };
        let text = match (&self.chat_template, &self.chat_template_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => {
                Some(std::fs::read_to_string(f).map_err(|source| Error::Io { path: f.clone(), source })?)
            }
            (None, None) => None,
        };
        let is_name = |t: &str| chat::builtin_templates().iter().any(|n| n == t);
        let template = match text {
            Some(t) if self.no_jinja || is_name(&t) => ChatTemplate::builtin(&t)?,
            // A misspelt name would otherwise be a template whose every rendering is that word.
            Some(t) if !t.contains("{{") && !t.contains("{%") => {
                return Err(invalid(format!(
                    "`{}` is neither a built-in template name ({}) nor a Jinja template (it has no {{{{ or {{%)",
                    t.chars().take(60).collect::<String>(),
                    chat::builtin_templates().join(", ")
                )));
            }
            Some(t) => ChatTemplate::jinja(&t)?,
            None => {
                let Some(own) = model.chat_template(None) else {
                    return Err(invalid(format!(
                        "the model has no chat template (tokenizer.chat_template): pass --chat-template NAME \
                         (built-in: {})",
                        chat::builtin_templates().join(", ")
                    )));
                };
                if self.no_jinja { ChatTemplate::builtin(&own)? } else { ChatTemplate::jinja(&own)? }
            }
        };
        Ok(template.for_model(model))
    }
}

/// Runs `chat` with `options` (from [`ChatArgs::options`]) on an initialised backend, reading
/// user turns from standard input.
pub fn run(args: &ChatArgs, options: &RunOptions, backend: &'static Backend) -> Result<std::process::ExitCode> {
    let path = options.model_path.clone().ok_or_else(|| Error::InvalidOption {
        option: "model".into(),
        reason: "no model: pass -m in --flags or --model".into(),
    })?;
    let model: Model = crate::progress::load_model(backend, &path, &options.model)?;
    let template = args.template(&model)?;
    // Declared before what borrows them: the draft model, its context, the drafter.
    let drafting = crate::speculate::Drafting::new(options, backend)?;
    let mut draft_ctx = match &drafting {
        Some(d) => d.context(&options.context)?,
        None => None,
    };
    let mut drafter = match &drafting {
        Some(d) => Some((d.name, d.drafter(draft_ctx.as_mut(), &model)?)),
        None => None,
    };
    let sampling = crate::generate::model_sampling(&model, &args.flags)?;
    let mut sampler = Sampler::new(&model, &sampling)?;
    // Declared before the context: it borrows the adapters set on it.
    let adapters = options.adapters.load(&model)?;
    let mut ctx = Context::new(&model, &options.context)?;
    adapters.apply(&mut ctx)?;
    let mut session = ChatSession::new(ctx, template);
    if let Some(system) = &args.system_prompt {
        session.push(ChatMessage::system(system.clone()));
    }
    let stop = StopConditions {
        max_tokens: usize::try_from(args.n_predict).unwrap_or(usize::MAX),
        stop_strings: args.stop.clone(),
        ..Default::default()
    };
    let turns = Turns::watch(session.cancel_handle())?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chat: /reset forgets the conversation, /exit ends it; Ctrl-C stops an answer");
    }
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    let stdin = std::io::stdin();
    loop {
        if interactive {
            eprint!("> ");
        }
        line.clear();
        if stdin.lock().read_line(&mut line).map_err(|source| Error::Io { path: "<stdin>".into(), source })? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        match text.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset();
                if let Some(system) = &args.system_prompt {
                    session.push(ChatMessage::system(system.clone()));
                }
                eprintln!("[conversation reset]");
                continue;
            }
            _ => {}
        }
        turns.begin();
        let drafting =
            drafter.as_mut().map(|(name, d)| (*name, d.as_mut() as &mut dyn llama_runner::speculative::Drafter));
        let result = answer(&mut session, text, &mut sampler, stop.clone(), drafting, &mut out);
        turns.end();
        match result {
            Ok(summary) => eprintln!("{summary}"),
            Err(Error::Library(llama_runner::Error::Aborted)) => eprintln!("[answer stopped]"),
            Err(e) => return Err(e),
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One turn: streams the answer to `out`, drafting with `drafter` when given; returns the
/// statistics lines.
fn answer(
    session: &mut ChatSession<'_>,
    text: &str,
    sampler: &mut Sampler<'_>,
    stop: StopConditions,
    drafter: Option<(&'static str, &mut dyn llama_runner::speculative::Drafter)>,
    out: &mut impl Write,
) -> Result<String> {
    let (name, mut stream) = match drafter {
        Some((name, d)) => (Some(name), session.respond_speculative(text, sampler, stop, d)?),
        None => (None, session.respond(text, sampler, stop)?),
    };
    let stats = stream.stats();
    let write = |out: &mut dyn Write, t: &str| {
        out.write_all(t.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|source| Error::Io { path: "<stdout>".into(), source })
    };
    for event in stream.by_ref() {
        match event {
            Ok(Event::Done { generation, reason }) => {
                write(out, "\n")?;
                let mut summary = format!(
                    "[prompt: {} tokens ({} reused from the cache, {} decoded), {:.2} t/s; generated: {} tokens, \
                     {:.2} t/s; stop: {reason:?}]",
                    stats.n_prompt,
                    stats.n_reused,
                    stats.n_decoded,
                    generation.prompt_tps(),
                    generation.tokens.len(),
                    generation.gen_tps(),
                );
                if let (Some(name), Some(spec)) = (name, stream.speculation()) {
                    summary.push_str(&format!("\n[{}]", crate::speculate::SpecReport::new(name, spec).summary()));
                }
                return Ok(summary);
            }
            Ok(e) => write(out, e.text())?,
            Err(e) => {
                write(out, "\n")?;
                return Err(e.into());
            }
        }
    }
    Err(llama_runner::Error::Aborted.into())
}

/// SIGINT handling for a conversation: during an answer it cancels the answer (a second one
/// ends the process); between answers it ends the process with status 130.
struct Turns {
    busy: Arc<AtomicBool>,
    cancel: CancelHandle,
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Turns {
    fn watch(cancel: CancelHandle) -> Result<Turns> {
        let busy = Arc::new(AtomicBool::new(false));
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
            .map_err(|source| Error::Io { path: PathBuf::from("<signal handler>"), source })?;
        let handle = signals.handle();
        let (b, c) = (Arc::clone(&busy), cancel.clone());
        let thread = std::thread::spawn(move || {
            for _ in signals.forever() {
                // Cancel the answer once; a second Ctrl-C, or one at the prompt, ends the chat.
                if b.swap(false, Ordering::SeqCst) {
                    c.cancel();
                } else {
                    eprintln!();
                    std::process::exit(130);
                }
            }
        });
        Ok(Turns { busy, cancel, handle, thread: Some(thread) })
    }

    fn begin(&self) {
        self.cancel.clear();
        self.busy.store(true, Ordering::SeqCst);
    }

    fn end(&self) {
        self.busy.store(false, Ordering::SeqCst);
        // A Ctrl-C that came as the answer ended must not stop the next one.
        self.cancel.clear();
    }
}

impl Drop for Turns {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
