//! A chat loop: user turns from standard input, answers streamed, the conversation kept in the
//! KV cache (each turn decodes only what it adds).
//!
//! `cargo run -p llama-runner --example chat -- MODEL.gguf [TEMPLATE] < questions.txt`
//!
//! TEMPLATE is a built-in name of llama.cpp (`chatml`, `gemma`, `llama3`, ...); without it the
//! model's own template is used (Jinja with the `jinja` feature), or `chatml` when it has none.

use std::io::{BufRead, Write};

use llama_runner::chat::{ChatSession, ChatTemplate};
use llama_runner::{
    Backend, Context, ContextOptions, Event, Model, ModelOptions, Sampler, SamplingOptions, StopConditions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: chat MODEL.gguf [TEMPLATE] < questions")?;
    let model = Model::load(Backend::get()?, &path, &ModelOptions::default())?;
    let template = match args.next() {
        Some(name) => ChatTemplate::builtin(&name)?,
        None if model.chat_template(None).is_some() => ChatTemplate::from_model(&model)?,
        None => ChatTemplate::builtin("chatml")?,
    };
    let ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
    let mut chat = ChatSession::new(ctx, template.for_model(&model));
    let options = SamplingOptions::builder().temperature(0.7).top_k(40).seed(42).build()?;
    let mut sampler = Sampler::new(&model, &options)?;

    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "> {line}")?;
        for event in chat.respond(line, &mut sampler, StopConditions::max_tokens(48))? {
            match event? {
                Event::Done { generation, .. } => {
                    writeln!(out, "\n[{} tokens, {:.1} tokens/s]", generation.tokens.len(), generation.gen_tps())?
                }
                event => {
                    write!(out, "{}", event.text())?;
                    out.flush()?;
                }
            }
        }
        let stats = chat.cached_tokens().len();
        writeln!(out, "[the cache holds {stats} tokens of {} messages]", chat.messages().len())?;
    }
    Ok(())
}
