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
    if text.is_null() {
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
    // Never unwind into C: a panicking logger is dropped silently.
    let _ = std::panic::catch_unwind(|| receive(level, &text));
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

    fn call(level: sys::ggml_log_level, text: &str) {
        let c = CString::new(text).unwrap();
        callback(level, c.as_ptr(), std::ptr::null_mut());
    }

    #[test]
    fn unheard_debug_lines_are_dropped_with_their_continuations() {
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
