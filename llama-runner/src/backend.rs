//! Process-wide llama.cpp initialisation, done once.

use std::ffi::CStr;
use std::sync::OnceLock;

use llama_sys as sys;

use crate::error::{Error, Result};

/// Proof that the llama.cpp backend is initialised; every load takes one.
///
/// Initialisation happens once per process: environment knobs are written, the log is routed
/// to the [`log`] crate, NUMA placement is applied, and llama.cpp's backends register their
/// devices.
#[derive(Debug)]
pub struct Backend {
    options: BackendOptions,
}

/// Settings llama.cpp takes once per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BackendOptions {
    /// NUMA strategy (`--numa`).
    pub numa: Numa,
    /// Environment knobs read once per process (`GGML_CUDA_GRAPH_OPT=1`, ...).
    pub env: crate::knobs::EnvKnobs,
}

pub use crate::options::Numa;

/// The backend, or why the loaded llama.cpp libraries cannot be used.
static BACKEND: OnceLock<std::result::Result<Backend, sys::LibraryMismatch>> = OnceLock::new();

impl Backend {
    /// The backend: the one already initialised, or initialised now with default settings (no
    /// NUMA strategy, the environment as the process found it).
    ///
    /// Fails with [`Error::LibraryMismatch`], before any other llama.cpp call, if the llama.cpp
    /// libraries loaded at run time (`dynamic-link`) are of another commit than the one this
    /// crate was compiled against.
    pub fn get() -> Result<&'static Backend> {
        BACKEND.get_or_init(|| Backend::start(BackendOptions::default())).as_ref().map_err(Error::from)
    }

    /// Initialises the backend with once-per-process settings, or returns the one already
    /// initialised with the same settings.
    ///
    /// Environment knobs are *checked*, not written: each knob in `options.env` must already
    /// have its value in the process environment (set by the shell, a launcher, or a parent
    /// process such as `llama-runner sweep`, which sets them on its children); otherwise this
    /// fails with [`Error::EnvKnob`] naming the variable. Writing the environment of a running
    /// process is unsound while another thread may read it, so that is left to
    /// [`Backend::init_setting_env`], whose caller promises there is no such thread.
    ///
    /// Fails, naming the setting, if the backend was already initialised with other settings
    /// (llama.cpp would silently ignore them), and with [`Error::LibraryMismatch`] as
    /// [`Backend::get`] does.
    pub fn init(options: &BackendOptions) -> Result<&'static Backend> {
        options.env.check_environment()?;
        Self::init_checked(options)
    }

    /// [`Backend::init`] after writing the environment knobs of `options` into the process
    /// environment (`std::env::set_var`, and `remove_var` for knobs set to off).
    ///
    /// # Safety
    ///
    /// No other thread may read or write the process environment while this runs: call it at
    /// the start of `main`, before any thread is spawned (by the program or by a library it
    /// initialised). This is the contract of [`std::env::set_var`]; llama.cpp reads the knobs
    /// with `getenv` from its own threads later, which is safe once the writes are done.
    pub unsafe fn init_setting_env(options: &BackendOptions) -> Result<&'static Backend> {
        if !Self::is_initialised() {
            // SAFETY: the caller guarantees that no other thread touches the environment.
            unsafe { options.env.apply() };
        }
        Self::init(options)
    }

    fn init_checked(options: &BackendOptions) -> Result<&'static Backend> {
        let b = BACKEND.get_or_init(|| Backend::start(options.clone())).as_ref().map_err(Error::from)?;
        if b.options.numa != options.numa {
            return Err(Error::AfterInit {
                what: format!("--numa {:?} (initialised with {:?})", options.numa, b.options.numa),
            });
        }
        if b.options.env != options.env {
            let wanted = options.env.to_shell();
            return Err(Error::AfterInit {
                what: format!(
                    "environment knobs `{}` (initialised with `{}`)",
                    if wanted.is_empty() { "none" } else { &wanted },
                    b.options.env.to_shell()
                ),
            });
        }
        Ok(b)
    }

    /// The settings it was initialised with.
    pub fn options(&self) -> &BackendOptions {
        &self.options
    }

    /// Whether the backend has been initialised in this process.
    pub fn is_initialised() -> bool {
        BACKEND.get().is_some()
    }

    /// Every registered device, with its current memory.
    pub fn devices(&self) -> Vec<Device> {
        devices()
    }

    /// Names of every registered device.
    pub fn device_names(&self) -> Vec<String> {
        self.devices().into_iter().map(|d| d.name).collect()
    }

    /// The backends llama.cpp registered at run time (`CPU`, `CUDA`).
    pub fn backend_names(&self) -> Vec<String> {
        // SAFETY: the registry is initialised (`self` proves it); indices below the count are valid.
        let n = unsafe { sys::ggml_backend_reg_count() };
        (0..n)
            // SAFETY: `i < count`; names are static strings.
            .map(|i| unsafe { cstr(sys::ggml_backend_reg_name(sys::ggml_backend_reg_get(i))) })
            .collect()
    }

    fn start(options: BackendOptions) -> std::result::Result<Backend, sys::LibraryMismatch> {
        // First, before any call whose signature or structs could differ between commits.
        sys::check_library_commit()?;
        let numa = options.numa;
        crate::logging::install();
        // SAFETY: called exactly once per process (inside OnceLock::get_or_init), before any
        // other llama.cpp call of this crate.
        unsafe {
            sys::llama_backend_init();
            if let (true, Some(strategy)) = (numa != Numa::Disabled, numa.c_value()) {
                sys::llama_numa_init(strategy);
            }
        }
        Ok(Backend { options })
    }
}

/// A compute device llama.cpp knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Device {
    /// Name used in options (`CPU`, `CUDA0`).
    pub name: String,
    /// Human-readable description (the CPU or GPU model).
    pub description: String,
    /// CPU, GPU, integrated GPU or another accelerator.
    pub kind: crate::options::DeviceKind,
    /// Free memory in bytes, as the device reports it.
    pub memory_free: u64,
    /// Total memory in bytes.
    pub memory_total: u64,
}

/// Every registered device; only called with the backend initialised.
pub(crate) fn devices() -> Vec<Device> {
    // SAFETY: the registry is initialised (callers hold a Backend); indices below the count
    // are valid.
    let n = unsafe { sys::ggml_backend_dev_count() };
    (0..n)
        .filter_map(|i| {
            // SAFETY: `i < count`.
            let dev = unsafe { sys::ggml_backend_dev_get(i) };
            (!dev.is_null()).then(|| device_info(dev))
        })
        .collect()
}

fn device_info(dev: sys::ggml_backend_dev_t) -> Device {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: `dev` is a valid registered device; the out-pointers are valid.
    unsafe { sys::ggml_backend_dev_memory(dev, &mut free, &mut total) };
    // SAFETY: as above.
    let kind = crate::options::DeviceKind::of(unsafe { sys::ggml_backend_dev_type(dev) });

    Device {
        // SAFETY: llama.cpp returns static NUL-terminated strings for a registered device.
        name: unsafe { cstr(sys::ggml_backend_dev_name(dev)) },
        // SAFETY: as above.
        description: unsafe { cstr(sys::ggml_backend_dev_description(dev)) },
        kind,
        memory_free: free as u64,
        memory_total: total as u64,
    }
}

/// Names of every registered device; only called with the backend initialised.
pub(crate) fn device_names() -> Vec<String> {
    devices().into_iter().map(|d| d.name).collect()
}

/// The commit the linked ggml library reports about itself (`ggml_commit()`), which the build
/// set from the same source as [`llama_sys::build_info::COMMIT`].
pub fn library_commit() -> String {
    // SAFETY: returns a static string.
    unsafe { cstr(sys::ggml_commit()) }
}

/// The ggml version the linked library reports (`ggml_version()`).
pub fn library_ggml_version() -> String {
    // SAFETY: returns a static string.
    unsafe { cstr(sys::ggml_version()) }
}

/// llama.cpp's description of the CPU features compiled in and detected.
pub fn system_info() -> String {
    // SAFETY: returns a static string.
    unsafe { cstr(sys::llama_print_system_info()) }
}

/// # Safety
/// `p` is null or a valid NUL-terminated string.
pub(crate) unsafe fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees validity.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
