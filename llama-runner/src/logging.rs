//! llama.cpp's log, routed to the [`log`] crate (target `llama.cpp`) and quiet by default.
//!
//! Lines are assembled from llama.cpp's fragments and forwarded whole. Errors logged while this
//! crate calls into llama.cpp are also kept, so a failed load or context creation can say why.
//! [`Recorder`] captures lines in-process, which is how tests and the benchmark read llama.cpp's
//! own accounting (overridden tensors, KV cache sizes, the resolved flash-attention mode).

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use llama_sys as sys;

/// The `log` target of every line llama.cpp prints.
pub const TARGET: &str = "llama.cpp";

thread_local! {
    /// The line being assembled on this thread, and its level.
    static PENDING: RefCell<(String, log::Level)> = const { RefCell::new((String::new(), log::Level::Info)) };
    /// Error lines logged on this thread since [`take_errors`] was last called.
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// A debug line nobody listens to is being skipped (until its newline).
    static SKIPPING: Cell<bool> = const { Cell::new(false) };
    /// The first panic caught in the log callback on this thread, to be resumed when control is
    /// back in this crate's Rust code on the same thread (see [`resume_panic`]).
    static PANIC: RefCell<Option<Box<dyn std::any::Any + Send>>> = const { RefCell::new(None) };
    /// This thread's llama.cpp lines are dropped while a [`Quiet`] lives (a dry run's lines
    /// would read as the real context's to a [`Recorder`]).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Drops the llama.cpp lines logged on this thread while it lives.
pub(crate) struct Quiet {
    was: bool,
}

impl Quiet {
    pub(crate) fn new() -> Quiet {
        Quiet { was: QUIET.replace(true) }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.set(self.was);
    }
}

/// Panics caught in the log callback since the process started, on any thread.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// How many times a log handler (the application's logger, or a [`Recorder`]'s sink) panicked
/// while llama.cpp was logging.
///
/// A panic must not unwind into C, so the callback catches it. The panic hook has reported it
/// (Rust's default hook prints the message) before it is caught. When the panic happened on a
/// thread that called into llama.cpp through this crate (loading a model, creating a context,
/// decoding), it is resumed as soon as that call returns, as `git2` does with its callbacks; a
/// panic on one of ggml's own worker threads cannot be resumed anywhere and is counted here.
pub fn callback_panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// Resumes a panic caught in the log callback on this thread, if there is one. Called by this
/// crate right after each llama.cpp call that may log, back in Rust.
pub(crate) fn resume_panic() {
    if let Some(payload) = PANIC.with(|p| p.borrow_mut().take()) {
        std::panic::resume_unwind(payload);
    }
}

type Sink = Arc<Mutex<Vec<String>>>;
static RECORDERS: Mutex<Vec<Sink>> = Mutex::new(Vec::new());
/// How many [`Recorder`]s are alive (read on every log call without taking the lock).
static RECORDING: AtomicUsize = AtomicUsize::new(0);

/// Captures every line llama.cpp logs (any level, any thread) while it is alive.
///
/// ```no_run
/// let rec = llama_runner::Recorder::start();
/// // ... load a model ...
/// assert!(rec.lines().iter().any(|l| l.contains("buffer type overridden")));
/// ```
pub struct Recorder {
    sink: Sink,
}

impl Recorder {
    /// Starts capturing.
    pub fn start() -> Self {
        let sink = Sink::default();
        lock(&RECORDERS).push(sink.clone());
        RECORDING.fetch_add(1, Ordering::SeqCst);
        Recorder { sink }
    }

    /// The lines captured so far, without their trailing newline.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.sink).clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        lock(&RECORDERS).retain(|s| !Arc::ptr_eq(s, &self.sink));
        RECORDING.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets earlier error lines of this thread (call before a llama.cpp call that may fail).
pub(crate) fn clear_errors() {
    ERRORS.with(|e| e.borrow_mut().clear());
}

/// The error lines llama.cpp logged on this thread since [`clear_errors`].
pub(crate) fn take_errors() -> Vec<String> {
    ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// Installs the callback for both llama and ggml logs.
pub(crate) fn install() {
    // SAFETY: `callback` is a valid `extern "C"` function for the whole process lifetime and
    // ignores its user data, so a null pointer is fine.
    unsafe {
        sys::llama_log_set(Some(callback), std::ptr::null_mut());
        sys::ggml_log_set(Some(callback), std::ptr::null_mut());
    }
}

extern "C" fn callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() || QUIET.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) };
    // Debug lines come in the hot path (ggml-cuda logs one per decode when it reuses a CUDA
    // graph). When neither a logger nor a Recorder wants them, drop them here, as llama-bench's
    // null callback does, with their continuation fragments.
    // (The rest of a line whose start was dropped goes too, even if a listener came meanwhile.)
    let rest_of_dropped = level == sys::GGML_LOG_LEVEL_CONT && SKIPPING.get();
    let unheard = || RECORDING.load(Ordering::Relaxed) == 0 && !log::log_enabled!(target: TARGET, log::Level::Debug);
    if rest_of_dropped || (level == sys::GGML_LOG_LEVEL_DEBUG && unheard()) {
        SKIPPING.set(text.to_bytes().last() != Some(&b'\n'));
        return;
    }
    SKIPPING.set(false);
    let text = text.to_string_lossy();
    // Never unwind into C: a panic of the logger is caught here, counted, and resumed when this
    // thread is back in this crate's Rust code (see `resume_panic`).
    if let Err(payload) = std::panic::catch_unwind(|| receive(level, &text)) {
        PANICS.fetch_add(1, Ordering::SeqCst);
        // A line left half-assembled by the panic is dropped, not glued to the next one.
        let _ = PENDING.try_with(|p| p.try_borrow_mut().map(|mut p| p.0.clear()));
        let _ = PANIC.try_with(|p| {
            if let Ok(mut slot) = p.try_borrow_mut() {
                slot.get_or_insert(payload);
            }
        });
    }
}

fn receive(level: sys::ggml_log_level, text: &str) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if level != sys::GGML_LOG_LEVEL_CONT && p.0.is_empty() {
            p.1 = match level {
                sys::GGML_LOG_LEVEL_ERROR => log::Level::Error,
                sys::GGML_LOG_LEVEL_WARN => log::Level::Warn,
                sys::GGML_LOG_LEVEL_INFO => log::Level::Info,
                _ => log::Level::Debug,
            };
        }
        p.0.push_str(text);
        while let Some(nl) = p.0.find('\n') {
            let line: String = p.0.drain(..=nl).collect();
            emit(p.1, line.trim_end());
        }
    });
}

fn emit(level: log::Level, line: &str) {
    if line.is_empty() {
        return;
    }
    log::log!(target: TARGET, level, "{line}");
    if level == log::Level::Error {
        ERRORS.with(|e| e.borrow_mut().push(line.to_string()));
    }
    for sink in lock(&RECORDERS).iter() {
        lock(sink).push(line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// Serialises the tests of this module: Recorders see every line of every thread.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// A sink that panics on a marked line, as a buggy application logger would.
    struct PanickingLogger;

    impl log::Log for PanickingLogger {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.target() == TARGET
        }
        fn log(&self, r: &log::Record<'_>) {
            if r.args().to_string().contains("boom") {
                panic!("logger panicked on purpose");
            }
        }
        fn flush(&self) {}
    }

    #[test]
    fn a_panicking_logger_does_not_unwind_into_c_and_is_resumed_in_rust() {
        let _serial = lock(&SERIAL);
        // The only logger of this unit-test binary; other tests here do not depend on it.
        static LOGGER: PanickingLogger = PanickingLogger;
        log::set_logger(&LOGGER).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        let before = callback_panics();
        // The callback returns normally to its (C) caller although the logger panicked...
        call(sys::GGML_LOG_LEVEL_WARN, "boom\n");
        assert_eq!(callback_panics(), before + 1, "the panic is counted");
        // ...and the panic comes back once this thread is in the crate's Rust code again.
        let resumed = std::panic::catch_unwind(resume_panic).unwrap_err();
        assert_eq!(resumed.downcast_ref::<&str>(), Some(&"logger panicked on purpose"));
        // Nothing is left to resume, and logging goes on.
        resume_panic();
        let rec = Recorder::start();
        call(sys::GGML_LOG_LEVEL_WARN, "fine\n");
        assert_eq!(rec.lines(), ["fine"]);
    }

    fn call(level: sys::ggml_log_level, text: &str) {
        let c = CString::new(text).unwrap();
        callback(level, c.as_ptr(), std::ptr::null_mut());
    }

    #[test]
    fn unheard_debug_lines_are_dropped_with_their_continuations() {
        let _serial = lock(&SERIAL);
        // No logger in unit tests and no Recorder yet: this debug line is dropped, and so is
        // its continuation although a Recorder starts in between.
        call(sys::GGML_LOG_LEVEL_DEBUG, "dropped ");
        let rec = Recorder::start();
        call(sys::GGML_LOG_LEVEL_CONT, "tail\n");
        // With a listener, debug lines and their continuations arrive whole.
        call(sys::GGML_LOG_LEVEL_DEBUG, "kept ");
        call(sys::GGML_LOG_LEVEL_CONT, "too\n");
        call(sys::GGML_LOG_LEVEL_INFO, "info\n");
        assert_eq!(rec.lines(), ["kept too", "info"]);
        drop(rec);
        // Without one again: dropped, while other levels still reach a later Recorder.
        call(sys::GGML_LOG_LEVEL_DEBUG, "gone\n");
        let rec = Recorder::start();
        call(sys::GGML_LOG_LEVEL_WARN, "warn\n");
        assert_eq!(rec.lines(), ["warn"]);
    }
}
