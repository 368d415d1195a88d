//! Cancels a generation from another thread after a time limit, then generates again on the
//! same context.
//!
//! `cargo run -p llama-runner --example cancel -- MODEL.gguf "PROMPT" [MILLISECONDS]`

use std::io::Write;
use std::time::Duration;

use llama_runner::{Backend, Context, ContextOptions, Error, Event, Model, ModelOptions, Sampler, StopConditions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: cancel MODEL.gguf PROMPT [MILLISECONDS]";
    let path = args.next().ok_or(usage)?;
    let prompt = args.next().ok_or(usage)?;
    let limit = Duration::from_millis(args.next().map(|n| n.parse()).transpose()?.unwrap_or(500));

    let model = Model::load(Backend::get()?, &path, &ModelOptions::default())?;
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
    let mut sampler = Sampler::greedy(&model)?;
    let tokens = model.tokenize(&prompt, true)?;

    // A watchdog thread: cancels whatever the context runs when the time is up.
    let cancel = ctx.cancel_handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            cancel.cancel();
        }
    });

    let mut out = std::io::stdout().lock();
    let stop = StopConditions { ignore_eos: true, ..Default::default() };
    let mut last = None;
    let result = ctx.stream(&mut sampler, &tokens, stop).and_then(|stream| {
        for event in stream {
            match event? {
                Event::Token { id, text } => {
                    last = Some(id);
                    write!(out, "{text}").ok();
                    out.flush().ok();
                }
                Event::Flush { text } => write!(out, "{text}").unwrap_or(()),
                Event::Done { reason, .. } => writeln!(out, "\n[done: {reason:?}]").unwrap_or(()),
                _ => {}
            }
        }
        Ok(())
    });
    let _ = done_tx.send(());
    watchdog.join().map_err(|_| "the watchdog thread panicked")?;
    match result {
        Err(Error::Aborted) => writeln!(out, "\n[cancelled after {limit:?}; the cache holds {} tokens]", ctx.n_past())?,
        other => other?,
    }

    // The context is usable: continue from the last token emitted (it was not decoded).
    if let Some(last) = last {
        let more = ctx.stream(&mut sampler, &[last], StopConditions::max_tokens(16))?;
        for event in more {
            write!(out, "{}", event?.text())?;
        }
        writeln!(out)?;
    }
    Ok(())
}
