//! Load progress ([`Model::load_with_progress`]): llama.cpp's progress callback reaches the
//! caller's closure, returning `false` cancels the load with [`Error::LoadCancelled`], a panic
//! in the closure comes back as [`Error::ProgressPanicked`] (it never unwinds through C), and
//! neither leaks what llama.cpp had allocated. All on generated models, against real llama.cpp.

mod common;

use llama_runner::{Backend, Context, ContextOptions, Error, LoadMode, LoadOptions, Model, ModelOptions};
use tiny_gguf::ModelSpec;

fn path() -> std::path::PathBuf {
    common::model(&ModelSpec::tiny_moe())
}

/// Read into memory rather than mapped: a leaked load shows in the resident set.
fn no_mmap() -> ModelOptions {
    ModelOptions { load_mode: LoadMode::None, ..Default::default() }
}

fn load(progress: impl FnMut(f32) -> bool) -> Result<Model, Error> {
    Model::load_with_progress(Backend::get().unwrap(), path(), &no_mmap(), &LoadOptions::default(), progress)
}

fn greedy(model: &Model) -> Vec<i32> {
    let mut ctx =
        Context::new(model, &ContextOptions { n_ctx: 128, n_threads: Some(1), ..Default::default() }).unwrap();
    let prompt = model.tokenize("hello world", true).unwrap();
    ctx.generate_greedy(&prompt, 8).unwrap().tokens
}

#[test]
fn progress_rises_to_one_and_the_model_is_the_same() {
    let mut seen = Vec::new();
    let model = load(|f| {
        seen.push(f);
        true
    })
    .unwrap();
    let n_tensors = llama_runner::gguf::Gguf::open(&path()).unwrap().tensors().len();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.len() <= n_tensors + 1, "about once per tensor: {} calls, {n_tensors} tensors", seen.len());
    assert!(seen.iter().all(|f| (0.0..=1.0).contains(f)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "non-decreasing: {seen:?}");
    assert_eq!(seen.first(), Some(&0.0));
    assert_eq!(seen.last(), Some(&1.0));
    let plain = Model::load(Backend::get().unwrap(), path(), &no_mmap()).unwrap();
    assert_eq!(greedy(&model), greedy(&plain));
}

#[test]
fn returning_false_cancels_at_any_point() {
    let total = {
        let mut n = 0;
        load(|_| {
            n += 1;
            true
        })
        .unwrap();
        n
    };
    // First call, half way, and the very last call (1.0, after the data is in place).
    for stop_at in [1, total / 2, total] {
        let mut calls = 0;
        let err = load(|_| {
            calls += 1;
            calls < stop_at
        })
        .unwrap_err();
        assert!(matches!(&err, Error::LoadCancelled { path: p } if *p == path()), "{err:?}");
        assert_eq!(calls, stop_at, "not called again after it said false");
        assert!(err.to_string().contains("cancelled"), "{err}");
    }
    // The process and the library are fine afterwards.
    let model = load(|_| true).unwrap();
    assert_eq!(greedy(&model).len(), 8);
}

#[test]
fn a_panic_in_the_callback_is_an_error_not_an_unwind_through_c() {
    let mut calls = 0;
    let err = load(|f| {
        calls += 1;
        if f > 0.3 {
            panic!("progress callback exploded at {f}");
        }
        true
    })
    .unwrap_err();
    match &err {
        Error::ProgressPanicked { path: p, message } => {
            assert_eq!(*p, path());
            assert!(message.starts_with("progress callback exploded at"), "{message}");
        }
        other => panic!("expected ProgressPanicked, got {other:?}"),
    }
    assert!(err.to_string().contains("panicked"), "{err}");
    let after_panic = calls;
    assert!(after_panic >= 2);

    // A payload that is not text.
    let err = load(|_| std::panic::panic_any(42u32)).unwrap_err();
    assert!(matches!(&err, Error::ProgressPanicked { message, .. } if message.contains("without a text")), "{err:?}");
    assert_eq!(calls, after_panic, "the first closure was not called again");

    let model = load(|_| true).unwrap();
    assert_eq!(greedy(&model).len(), 8);
}

/// Resident memory of this process, in bytes (`/proc/self/statm`).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn cancelled_and_panicked_loads_free_what_they_allocated() {
    let size = std::fs::metadata(path()).unwrap().len();
    let cycle = || {
        let mut calls = 0;
        assert!(matches!(
            load(|_| {
                calls += 1;
                calls < 4
            }),
            Err(Error::LoadCancelled { .. })
        ));
        assert!(matches!(
            load(|f| if f >= 1.0 { panic!("at the end") } else { true }),
            Err(Error::ProgressPanicked { .. })
        ));
    };
    for _ in 0..5 {
        cycle();
    }
    let before = rss();
    let n = 60;
    for _ in 0..n {
        cycle();
    }
    let grown = rss().saturating_sub(before);
    // 120 loads of the whole model read into memory; a leak of one per load would be > 120 x size.
    assert!(grown < 10 * size, "resident memory grew by {grown} bytes over {n} cycles (model: {size} bytes)");
}
