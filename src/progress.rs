//! The command line's progress bar for model loads: nothing for a load that ends within a
//! second (a generated test model, a file in the page cache), a bar on standard error from then
//! on (a 90 GB model read from disk), fed by llama.cpp's progress callback through
//! [`Model::load_with_progress`].
//!
//! The bar is drawn only when standard error is a terminal (indicatif hides it otherwise), so
//! logs and the tests' captured output never see it.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llama_runner::{Backend, LoadOptions, Model, ModelOptions};

/// How long a load runs before its bar appears.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A progress bar that appears only once its work has run for a while (and only on a
/// terminal: indicatif draws nothing elsewhere); the load and quantize bars are built on it.
pub struct DelayedBar {
    started: Instant,
    delay: Duration,
    template: &'static str,
    target: Option<ProgressDrawTarget>,
    bar: Option<ProgressBar>,
}

impl DelayedBar {
    /// A bar with indicatif's `template`, drawn on `target` once `delay` has passed.
    pub fn new(delay: Duration, template: &'static str, target: ProgressDrawTarget) -> DelayedBar {
        DelayedBar { started: Instant::now(), delay, template, target: Some(target), bar: None }
    }

    /// The bar, created with length `total` when the delay has passed; `None` before.
    pub fn due(&mut self, total: u64) -> Option<&ProgressBar> {
        if self.bar.is_none()
            && self.started.elapsed() >= self.delay
            && let Some(target) = self.target.take()
        {
            let bar = ProgressBar::with_draw_target(Some(total), target);
            // The templates are constants; they parse.
            if let Ok(style) = ProgressStyle::with_template(self.template) {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        }
        self.bar.as_ref()
    }

    /// Whether the bar has appeared.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Where the bar stands (0 before it appears).
    pub fn position(&self) -> u64 {
        self.bar.as_ref().map_or(0, ProgressBar::position)
    }

    /// Removes the bar from the terminal.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The progress of one model load, shown as a bar once the load has run for a while.
pub struct LoadBar {
    label: String,
    total: u64,
    bar: DelayedBar,
}

impl LoadBar {
    /// A bar for loading the file at `path` (its size is the bar's length), drawn on standard
    /// error after [`SHOW_AFTER`].
    pub fn new(path: &Path) -> LoadBar {
        LoadBar::with_target(path, SHOW_AFTER, ProgressDrawTarget::stderr())
    }

    /// A bar drawn on `target` once `delay` has passed.
    pub fn with_target(path: &Path, delay: Duration, target: ProgressDrawTarget) -> LoadBar {
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        LoadBar {
            label: format!("loading {name}"),
            total: std::fs::metadata(path).map_or(0, |m| m.len()),
            bar: DelayedBar::new(delay, "{msg} {bar:30} {binary_bytes}/{binary_total_bytes} {elapsed}", target),
        }
    }

    /// Records that `fraction` (0.0 to 1.0) of the model is loaded; shows the bar when the load
    /// has taken longer than the delay. Returns `true`: the bar never cancels a load.
    pub fn update(&mut self, fraction: f32) -> bool {
        let position = (f64::from(fraction.clamp(0.0, 1.0)) * self.total as f64) as u64;
        if let Some(bar) = self.bar.due(self.total) {
            bar.set_message(self.label.clone());
            bar.set_position(position);
        }
        true
    }

    /// Whether the bar has appeared (the load took longer than the delay).
    pub fn shown(&self) -> bool {
        self.bar.shown()
    }

    /// Where the bar stands, in bytes of the file (0 before it appears).
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Removes the bar from the terminal.
    pub fn finish(self) {
        self.bar.finish();
    }
}

/// [`Model::load`] with a [`LoadBar`] on standard error for loads longer than a second.
pub fn load_model(backend: &Backend, path: &Path, options: &ModelOptions) -> llama_runner::Result<Model> {
    let mut bar = LoadBar::new(path);
    let model = Model::load_with_progress(backend, path, options, &LoadOptions::default(), |f| bar.update(f));
    bar.finish();
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch file of `len` bytes (the bar's length is the file's size).
    fn file(len: usize) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("load-bar-{}-{n}.gguf", std::process::id()));
        std::fs::write(&p, vec![0u8; len]).unwrap();
        p
    }

    #[test]
    fn a_quick_load_shows_no_bar() {
        let f = file(1000);
        let mut bar = LoadBar::with_target(&f, Duration::from_secs(3600), ProgressDrawTarget::hidden());
        for i in 0..=10 {
            assert!(bar.update(i as f32 / 10.0));
        }
        assert!(!bar.shown());
        assert_eq!(bar.position(), 0);
        bar.finish();
        std::fs::remove_file(f).ok();
    }

    #[test]
    fn a_slow_load_shows_the_bytes_loaded() {
        let f = file(1000);
        let mut bar = LoadBar::with_target(&f, Duration::ZERO, ProgressDrawTarget::hidden());
        assert!(bar.update(0.25));
        assert!(bar.shown());
        assert_eq!(bar.position(), 250);
        assert!(bar.update(2.0), "clamped");
        assert_eq!(bar.position(), 1000);
        bar.finish();
        std::fs::remove_file(f).ok();
    }
}
