//! The README's library example as a program: greedy generation from a prompt.
//!
//! ```sh
//! cargo run --release -p llama-runner --example generate -- MODEL.gguf "Once upon a time" 32
//! ```

use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: generate MODEL.gguf [PROMPT] [N]")?;
    let prompt = args.next().unwrap_or_else(|| "Once upon a time".into());
    let n: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(32);

    let model = Model::load(Backend::get()?, &path, &ModelOptions::default())?;
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
    let tokens = model.tokenize(&prompt, true)?;
    let out = ctx.generate_greedy(&tokens, n)?;
    println!("{prompt}{}", model.detokenize(&out.tokens)?);
    eprintln!("{} tokens, {:.1} tokens/s", out.tokens.len(), out.gen_tps());
    Ok(())
}
