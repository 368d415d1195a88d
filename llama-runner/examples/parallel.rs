//! Continuous batching ([`llama_runner::parallel`]) measured the way llama.cpp's
//! `llama-batched-bench` measures: for each number of sequences B, B requests of PP prompt
//! tokens each are submitted at once; the first step decodes every prompt (one batch when
//! `n_batch` holds them), the following steps generate TG tokens per sequence. Unlike
//! batched-bench every token is sampled (greedy) and checked against the stop conditions, as
//! an application's generation does.
//!
//! ```sh
//! cargo run --release -p llama-runner --example parallel -- MODEL.gguf [PP] [TG] [B,B,...] [llama.cpp flags]
//! cargo run --release -p llama-runner --example parallel -- m.gguf 128 128 1,2,4,8 "-t 2 -c 4096 -b 2048"
//! ```
//!
//! Prints one markdown row per B: prompt and generation time, aggregate tokens/s of each
//! phase, and generation tokens/s per sequence.

use std::time::{Duration, Instant};

use llama_runner::parallel::{Parallel, Request};
use llama_runner::stream::{Event, StopConditions};
use llama_runner::{Backend, Context, Model, Sampler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: parallel MODEL.gguf [PP] [TG] [B,B,...] [llama.cpp flags]")?;
    let pp: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(32);
    let tg: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(16);
    let bs: Vec<u32> =
        args.next().unwrap_or_else(|| "1,2,4".into()).split(',').map(str::parse).collect::<Result<_, _>>()?;
    let flags = args.next().unwrap_or_default();
    let b_max = bs.iter().copied().max().unwrap_or(1);

    let mut options = llama_runner::flags::parse(&flags)?.options;
    let defaults = llama_runner::ContextOptions::default();
    if options.context.n_ctx == defaults.n_ctx {
        options.context.n_ctx = ((pp + tg) * b_max as usize).next_multiple_of(256) as u32;
    }
    if options.context.n_batch == defaults.n_batch {
        options.context.n_batch = ((pp * b_max as usize).max(512) as u32).min(options.context.n_ctx);
    }
    options.context.n_ubatch = options.context.n_ubatch.min(options.context.n_batch);
    options.context.n_seq_max = b_max;
    options.context.kv_unified = true;
    let model = Model::load(Backend::get()?, &path, &options.model)?;
    let mut ctx = Context::new(&model, &options.context)?;
    // A prompt of PP tokens of the vocabulary's first words, as batched-bench uses random ones.
    let words = model.tokenize("the quick brown fox jumps over the lazy dog and then", false)?;
    let prompt: Vec<i32> = words.iter().copied().cycle().take(pp).collect();

    println!("|   PP |   TG |  B | T_PP s | S_PP t/s | T_TG s | S_TG t/s | per seq t/s |");
    println!("|------|------|----|--------|----------|--------|----------|-------------|");
    for &b in &bs {
        let mut parallel = Parallel::new(&mut ctx)?;
        for _ in 0..b {
            let stop = StopConditions { max_tokens: tg, ignore_eos: true, ..Default::default() };
            parallel.submit(Request::new(prompt.clone(), Sampler::greedy(&model)?, stop))?;
        }
        let t0 = Instant::now();
        let (mut t_pp, mut first) = (Duration::ZERO, 0usize);
        let mut generated = 0usize;
        while !parallel.is_idle() {
            for u in parallel.step()? {
                if let Event::Token { .. } = u.event? {
                    generated += 1;
                }
            }
            if t_pp.is_zero() && generated > 0 {
                // The step that decoded the prompts also sampled each sequence's first token.
                t_pp = t0.elapsed();
                first = generated;
            }
        }
        let t_tg = t0.elapsed() - t_pp;
        let n_tg = generated - first;
        let s_tg = n_tg as f64 / t_tg.as_secs_f64();
        println!(
            "| {pp:4} | {tg:4} | {b:2} | {:6.3} | {:8.2} | {:6.3} | {:8.2} | {:11.2} |",
            t_pp.as_secs_f64(),
            (pp * b as usize) as f64 / t_pp.as_secs_f64(),
            t_tg.as_secs_f64(),
            s_tg,
            s_tg / f64::from(b)
        );
    }
    Ok(())
}
