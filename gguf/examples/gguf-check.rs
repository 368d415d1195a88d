//! Validates GGUF files and times it: `cargo run --release -p llama-gguf --example gguf-check -- FILE...`.
//!
//! Prints, per file, the metadata size and the best of 20 runs of reading plus validating.

use std::time::{Duration, Instant};

fn main() {
    let mut failed = false;
    for arg in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(arg);
        let mut best = Duration::MAX;
        let mut result = None;
        for _ in 0..20 {
            let t = Instant::now();
            let r = llama_gguf::check_file(&path);
            best = best.min(t.elapsed());
            result = Some(r);
        }
        match result {
            Some(Ok(g)) => {
                let mb = g.data_offset() as f64 / 1e6;
                let ms = best.as_secs_f64() * 1e3;
                println!(
                    "{}: ok, {} keys, {} tensors, {mb:.2} MB of metadata, {ms:.3} ms ({:.3} ms/MB)",
                    path.display(),
                    g.kvs().len(),
                    g.tensors().len(),
                    ms / mb
                );
            }
            Some(Err(e)) => {
                failed = true;
                println!("{}: {e}", path.display());
            }
            None => {}
        }
    }
    std::process::exit(i32::from(failed));
}
