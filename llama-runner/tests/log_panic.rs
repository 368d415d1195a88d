//! A panic in the application's logger while llama.cpp logs (from C) never unwinds into C: it
//! is caught in the callback and resumed once the library call returns to Rust.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use llama_runner::{Backend, Model, ModelOptions};
use tiny_gguf::ModelSpec;

static ARMED: AtomicBool = AtomicBool::new(false);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == llama_runner::logging::TARGET
    }
    fn log(&self, r: &log::Record<'_>) {
        if ARMED.load(Ordering::SeqCst) && r.args().to_string().contains("llama_model_loader") {
            panic!("application logger failed");
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

#[test]
fn logger_panic_during_model_load_is_resumed_after_the_call() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let backend = Backend::get().unwrap();
    let path = common::model(&ModelSpec::tiny_llama());

    ARMED.store(true, Ordering::SeqCst);
    let before = llama_runner::logging::callback_panics();
    let caught = std::panic::catch_unwind(|| Model::load(backend, &path, &ModelOptions::default()));
    ARMED.store(false, Ordering::SeqCst);
    let payload = caught.expect_err("the logger's panic reaches the caller of Model::load");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"application logger failed"));
    assert!(llama_runner::logging::callback_panics() > before, "counted");

    // The process and the library carry on.
    let model = Model::load(backend, &path, &ModelOptions::default()).unwrap();
    assert!(model.n_vocab() > 0);
}
