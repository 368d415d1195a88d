//! pp/tg tokens/s through llama-cpp-2, measured the way llama-bench (and llama-runner) do:
//! random tokens, prompt in n_batch chunks, generation one token per decode, an untimed warm-up,
//! the cache cleared before each repetition, mean and n-1 standard deviation of per-repetition
//! tokens/s. Prints one JSON line per test.
//!
//! usage: llama-cpp-2-bench MODEL THREADS N_PROMPT N_GEN REPETITIONS

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: {} MODEL THREADS N_PROMPT N_GEN REPETITIONS", args[0]);
        std::process::exit(2);
    }
    let num = |i: usize| args[i].parse::<u32>().unwrap_or_else(|_| panic!("argument {i} is not a number"));
    let (threads, n_prompt, n_gen, reps) = (num(2), num(3), num(4), num(5));

    let mut backend = LlamaBackend::init().expect("backend");
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, &args[1], &LlamaModelParams::default()).expect("load");
    let n_vocab = model.n_vocab() as u32;
    let bos = model.token_bos();
    let mut rng = fastrand::Rng::with_seed(0x11a3a);

    for (kind, n) in [("pp", n_prompt), ("tg", n_gen)] {
        if n == 0 {
            continue;
        }
        // llama-bench's context: n_ctx = tokens of the test, swa_full off, CLI batch sizes.
        let cparams = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n + 1))
            .with_n_batch(2048)
            .with_n_ubatch(512)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32)
            .with_swa_full(false);
        let mut ctx = model.new_context(&backend, cparams).expect("context");
        let n_batch = ctx.n_batch() as usize;
        let mut run = |rng: &mut fastrand::Rng, ctx: &mut llama_cpp_2::context::LlamaContext, n: u32| -> u64 {
            ctx.clear_kv_cache();
            let t = Instant::now();
            if kind == "pp" {
                let mut toks: Vec<LlamaToken> = (0..n).map(|_| LlamaToken(rng.u32(0..n_vocab) as i32)).collect();
                toks[0] = bos;
                let mut pos = 0;
                for chunk in toks.chunks(n_batch) {
                    let mut batch = LlamaBatch::new(chunk.len(), 1);
                    for (i, &tok) in chunk.iter().enumerate() {
                        batch.add(tok, (pos + i) as i32, &[0], pos + i + 1 == toks.len()).unwrap();
                    }
                    ctx.decode(&mut batch).expect("decode");
                    pos += chunk.len();
                }
            } else {
                let mut tok = bos;
                let mut batch = LlamaBatch::new(1, 1);
                for i in 0..n {
                    batch.clear();
                    batch.add(tok, i as i32, &[0], true).unwrap();
                    ctx.decode(&mut batch).expect("decode");
                    tok = LlamaToken(rng.u32(0..n_vocab) as i32);
                }
            }
            t.elapsed().as_nanos() as u64
        };
        run(&mut rng, &mut ctx, if kind == "pp" { n } else { 1 }); // warm-up
        let samples: Vec<u64> = (0..reps).map(|_| run(&mut rng, &mut ctx, n)).collect();
        let ts: Vec<f64> = samples.iter().map(|&ns| 1e9 * n as f64 / ns as f64).collect();
        let mean = ts.iter().sum::<f64>() / ts.len() as f64;
        let sd = if ts.len() > 1 {
            (ts.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (ts.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        println!(
            "{{\"runner\":\"llama-cpp-2\",\"test\":\"{kind}{n}\",\"n_threads\":{threads},\"avg_ts\":{mean:.3},\"stddev_ts\":{sd:.3},\"samples_ns\":{samples:?}}}"
        );
    }
}
