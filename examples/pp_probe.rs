//! Diagnostic: prompt-processing speed through this crate's benchmark path (`measure::Bench`)
//! and through a raw llama-bench-style loop (llama.cpp's default context parameters, one
//! threadpool, `llama_batch_get_one`, one sync) on the same model in the same process,
//! interleaved round by round. Separates wrapper overhead from differences between processes.
//!
//! cargo run --release -p llama-workbench --example pp_probe -- MODEL [THREADS] [ROUNDS] [N_PROMPT] [N_GEN]
//!
//! With N_GEN > 0 it also compares generation (N_GEN single-token decodes, a sync after each).

use std::time::Instant;

use llama_runner::{Backend, ContextOptions, Model, ModelOptions};
use llama_sys as sys;
use llama_workbench::measure::{Bench, Test, TestKind};

/// Tokens/s per repetition of a raw prompt test (`gen` false: `n` tokens in one batch) or
/// generation test (`gen` true: `n` single-token decodes, a sync after each).
fn raw_test(
    model: &Model,
    threads: i32,
    n: usize,
    generation: bool,
    reps: usize,
    seed: &mut u64,
) -> Result<Vec<f64>, String> {
    let n_prompt = n;
    // SAFETY: default constructors and a valid model; the context and pool created here are
    // checked for null and freed here, the context first; the token buffer outlives each decode.
    unsafe {
        let mut cp = sys::llama_context_default_params();
        cp.n_ctx = n_prompt as u32;
        cp.n_batch = 2048;
        cp.n_ubatch = 512;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.swa_full = false;
        let ctx = sys::llama_init_from_model(model.as_ptr(), cp);
        if ctx.is_null() {
            return Err("llama_init_from_model failed".into());
        }
        let mut tpp = sys::ggml_threadpool_params_default(threads);
        tpp.poll = 50;
        let tp = sys::ggml_threadpool_new(&mut tpp);
        if tp.is_null() {
            sys::llama_free(ctx);
            return Err("ggml_threadpool_new failed".into());
        }
        sys::llama_attach_threadpool(ctx, tp, std::ptr::null_mut());
        let n_vocab = model.n_vocab() as u64;
        let bos = model.bos();
        let mut tokens = vec![0i32; n_prompt];
        let mut run = |seed: &mut u64| {
            for (i, t) in tokens.iter_mut().enumerate() {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *t = if i == 0 { bos.unwrap_or(1) } else { ((*seed >> 33) % n_vocab) as i32 };
            }
            let t0 = Instant::now();
            let mut r = 0;
            if generation {
                for i in 0..n_prompt {
                    r = sys::llama_decode(ctx, sys::llama_batch_get_one(tokens.as_mut_ptr().add(i), 1));
                    sys::llama_synchronize(ctx);
                    if r != 0 {
                        break;
                    }
                }
            } else {
                r = sys::llama_decode(ctx, sys::llama_batch_get_one(tokens.as_mut_ptr(), n_prompt as i32));
                sys::llama_synchronize(ctx);
            }
            (r, t0.elapsed().as_secs_f64())
        };
        let mut out = Vec::new();
        let mut status = 0;
        for rep in 0..=reps {
            sys::llama_memory_clear(sys::llama_get_memory(ctx), false);
            let (r, secs) = run(seed);
            status = r;
            if r != 0 {
                break;
            }
            if rep > 0 {
                out.push(n_prompt as f64 / secs); // repetition 0 is the warm-up (full length, as ours for pp)
            }
        }
        sys::llama_free(ctx);
        sys::ggml_threadpool_free(tp);
        if status != 0 { Err(format!("llama_decode returned {status}")) } else { Ok(out) }
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str, default: T) -> Result<T, String> {
    args.get(i).map_or(Ok(default), |s| s.parse().map_err(|_| format!("{name}: `{s}` is not a number")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: pp_probe MODEL [THREADS] [ROUNDS] [N_PROMPT]")?;
    let threads: u32 = arg(&args, 2, "THREADS", 2)?;
    let rounds: usize = arg(&args, 3, "ROUNDS", 6)?;
    let n_prompt: u32 = arg(&args, 4, "N_PROMPT", 512)?;
    let n_gen: u32 = arg(&args, 5, "N_GEN", 0)?;
    if threads == 0 || n_prompt == 0 || n_prompt > 2048 || n_gen > 4096 {
        return Err("THREADS must be at least 1, N_PROMPT in 1..=2048 (one batch), N_GEN at most 4096".into());
    }
    let model = Model::load(Backend::init(&Default::default())?, path, &ModelOptions::default())?;
    let opts = ContextOptions { n_threads: Some(threads), ..Default::default() };
    let mut seed = 1u64;
    let mut tests = vec![("pp", TestKind::Prompt, n_prompt)];
    if n_gen > 0 {
        tests.push(("tg", TestKind::Generation, n_gen));
    }
    for (label, kind, n) in tests {
        let test = Test { kind, n_tokens: n, n_depth: 0, repetitions: 5 };
        let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let a: Vec<f64> = Bench::new(&model, &opts, n)?.run(&test)?.samples_ts();
            let b = raw_test(&model, threads as i32, n as usize, kind == TestKind::Generation, 5, &mut seed)?;
            println!(
                "{label}{n} round {round}: runner {:8.1}  raw {:8.1}  ratio {:.3}",
                mean(&a),
                mean(&b),
                mean(&a) / mean(&b)
            );
            all_a.extend(a);
            all_b.extend(b);
        }
        let (ma, mb) = (mean(&all_a), mean(&all_b));
        println!("{label}{n} all: runner {ma:8.1}  raw {mb:8.1}  ratio {:.3}", ma / mb);
    }
    Ok(())
}
