//! Streams a sampled generation with speculative decoding: n-gram lookup drafts from the
//! prompt (no second model), the target verifies each draft in one batch, and every emitted
//! token is the sampler chain's own choice (llama.cpp's acceptance rule).
//!
//! `cargo run -p llama-runner --example speculative -- MODEL.gguf "PROMPT" [MAX_TOKENS] [TEMP]`

use std::io::Write;

use llama_runner::speculative::NgramDraft;
use llama_runner::{
    Backend, Context, ContextOptions, Event, Model, ModelOptions, Sampler, SamplingOptions, StopConditions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: speculative MODEL.gguf PROMPT [MAX_TOKENS] [TEMPERATURE]";
    let path = args.next().ok_or(usage)?;
    let prompt = args.next().ok_or(usage)?;
    let max_tokens = args.next().map(|n| n.parse()).transpose()?.unwrap_or(64);
    let temp = args.next().map(|t| t.parse()).transpose()?.unwrap_or(0.7);

    let model = Model::load(Backend::get()?, &path, &ModelOptions::default())?;
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
    let mut sampler = Sampler::new(&model, &SamplingOptions { temp, seed: 42, ..Default::default() })?;
    // The last 2 tokens looked up earlier in the text; up to 6 drafted.
    let mut drafter = NgramDraft { ngram: 2, n_max: 6, n_min: 1 };
    let tokens = model.tokenize(&prompt, true)?;
    let stop = StopConditions { max_tokens, ..Default::default() };

    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    let mut stream = ctx.stream_speculative(&mut sampler, &[], &tokens, stop, &mut drafter)?;
    for event in stream.by_ref() {
        match event? {
            Event::Done { generation, reason } => {
                writeln!(
                    out,
                    "\n[{reason:?}: {} tokens, {:.1} tokens/s]",
                    generation.tokens.len(),
                    generation.gen_tps()
                )?;
            }
            event => {
                write!(out, "{}", event.text())?;
                out.flush()?;
            }
        }
    }
    if let Some(s) = stream.speculation() {
        writeln!(
            out,
            "[drafted {}, accepted {} ({:.0}%) in {} verification batches, {} plain steps]",
            s.drafted,
            s.accepted,
            100.0 * s.acceptance(),
            s.verified,
            s.plain
        )?;
    }
    Ok(())
}
