//! Streams a generation to stdout as it goes.
//!
//! `cargo run -p llama-runner --example stream -- MODEL.gguf "PROMPT" [MAX_TOKENS] [STOP]...`

use std::io::Write;

use llama_runner::{Backend, Context, ContextOptions, Event, Model, ModelOptions, Sampler, StopConditions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: stream MODEL.gguf PROMPT [MAX_TOKENS] [STOP_STRING]...";
    let path = args.next().ok_or(usage)?;
    let prompt = args.next().ok_or(usage)?;
    let max_tokens = args.next().map(|n| n.parse()).transpose()?.unwrap_or(128);
    let stop_strings: Vec<String> = args.collect();

    let model = Model::load(Backend::get()?, &path, &ModelOptions::default())?;
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
    let mut sampler = Sampler::greedy(&model)?;
    let tokens = model.tokenize(&prompt, true)?;
    let stop = StopConditions { max_tokens, stop_strings, ..Default::default() };

    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    for event in ctx.stream(&mut sampler, &tokens, stop)? {
        match event? {
            Event::Done { generation, reason } => {
                writeln!(
                    out,
                    "\n[{reason:?}: {} tokens; prompt {:.1} tokens/s, generation {:.1} tokens/s]",
                    generation.tokens.len(),
                    generation.prompt_tps(),
                    generation.gen_tps()
                )?;
            }
            event => {
                write!(out, "{}", event.text())?;
                out.flush()?;
            }
        }
    }
    Ok(())
}
