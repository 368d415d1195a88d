//! Result records: everything needed to explain a number later.
//!
//! A [`Record`] holds the configuration and resolved options (with the equivalent llama.cpp
//! flags), the llama.cpp build, the model file, the state of the machine, memory per device at
//! each stage, warnings about the machine's state, and per workload the raw samples with their
//! statistics (for a quality workload its perplexity and KL divergence instead, which the
//! JSONL leaves out). It is written atomically as JSON, and can be rendered as JSONL lines with
//! llama-bench's field names (`llama-bench -o jsonl`) so the two line up. Fields added later
//! are optional, so older records still read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::{SampleStats, WorkloadResult};
use llama_runner::backend::Device;
use llama_runner::model::ModelInfo;
use llama_runner::options::{FlashAttn, RunOptions};

/// Version of the record format.
pub const SCHEMA: u32 = 1;

/// One benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version ([`SCHEMA`]).
    pub schema: u32,
    /// Configuration name (file stem or given name).
    pub config: String,
    /// The configuration file, if the run came from one.
    pub config_path: Option<PathBuf>,
    /// Resolved options.
    pub options: RunOptions,
    /// The equivalent llama.cpp flags (llama-server spelling).
    pub flags: String,
    /// The llama.cpp build.
    pub build: BuildRecord,
    /// The model.
    pub model: ModelRecord,
    /// The machine and its state when the run started.
    pub machine: Machine,
    /// Memory per device: before load, after load, after context creation.
    pub memory: Vec<MemorySnapshot>,
    /// Conditions that make the numbers less trustworthy.
    pub warnings: Vec<String>,
    /// Results per workload.
    pub workloads: Vec<WorkloadResult>,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// End time, RFC 3339 UTC.
    pub finished_at: String,
}

/// Which llama.cpp produced the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Full commit hash.
    pub commit: String,
    /// Build number (0 = unknown).
    pub build_number: u32,
    /// What the linked library reports (`ggml_commit()`).
    pub library_commit: String,
    /// ggml version.
    pub ggml_version: String,
    /// Backends compiled in.
    pub backends: Vec<String>,
    /// Backends registered at run time.
    pub runtime_backends: Vec<String>,
    /// llama-sys features (`native`, `cuda`, ...).
    pub features: Vec<String>,
    /// CMake build type of the C++ code.
    pub profile: String,
    /// llama.cpp's CPU feature report (`llama_print_system_info`).
    pub system_info: String,
}

impl BuildRecord {
    /// The build this process is linked against.
    pub fn current(backend: &llama_runner::Backend) -> Self {
        use llama_runner::build_info as b;
        let split = |s: &str| s.split(',').filter(|x| !x.is_empty()).map(String::from).collect();
        BuildRecord {
            commit: b::COMMIT.into(),
            build_number: b::BUILD_NUMBER,
            library_commit: llama_runner::backend::library_commit(),
            ggml_version: b::GGML_VERSION.into(),
            backends: split(b::BACKENDS),
            runtime_backends: backend.backend_names(),
            features: split(b::FEATURES),
            profile: b::PROFILE.into(),
            system_info: llama_runner::backend::system_info(),
        }
    }
}

/// The model file and what llama.cpp says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Path as given.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_size: u64,
    /// Modification time, seconds since the Unix epoch (with the size, identifies the file
    /// cheaply; `sha256` when asked for).
    pub mtime: u64,
    /// SHA-256 of the file, when computed.
    pub sha256: Option<String>,
    /// Metadata.
    pub info: ModelInfo,
}

impl ModelRecord {
    /// Describes a model file; hashes it when `hash` is set (reads the whole file).
    pub fn new(path: &Path, info: ModelInfo, hash: bool) -> Result<Self> {
        let io = |e| Error::Io { path: path.to_path_buf(), source: e };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mtime =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        let sha256 = if hash {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            let mut f = std::fs::File::open(path).map_err(io)?;
            std::io::copy(&mut f, &mut h).map_err(io)?;
            Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
        } else {
            None
        };
        Ok(ModelRecord { path: path.to_path_buf(), file_size: meta.len(), mtime, sha256, info })
    }
}

/// The machine and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu_model: String,
    /// Physical cores.
    pub physical_cores: u32,
    /// Logical CPUs (threads).
    pub logical_cpus: u32,
    /// CPU frequency of the first CPU in MHz, as reported.
    pub cpu_mhz: u64,
    /// CPU frequency governor, where readable.
    pub governor: Option<String>,
    /// Total RAM in bytes.
    pub ram_total: u64,
    /// Available RAM in bytes.
    pub ram_available: u64,
    /// Total swap in bytes.
    pub swap_total: u64,
    /// Used swap in bytes.
    pub swap_used: u64,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// Kernel version.
    pub kernel: String,
    /// Operating system.
    pub os: String,
}

impl Machine {
    /// Reads the machine's state now (`sysinfo`).
    pub fn current() -> Self {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_frequency())
                .with_memory(MemoryRefreshKind::everything()),
        );
        let cpu = sys.cpus().first();
        let load = System::load_average();
        let governor = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            .ok()
            .map(|s| s.trim().to_string());
        Machine {
            hostname: System::host_name().unwrap_or_default(),
            cpu_model: cpu.map(|c| c.brand().trim().to_string()).unwrap_or_default(),
            physical_cores: System::physical_core_count().unwrap_or(0) as u32,
            logical_cpus: sys.cpus().len() as u32,
            cpu_mhz: cpu.map_or(0, |c| c.frequency()),
            governor,
            ram_total: sys.total_memory(),
            ram_available: sys.available_memory(),
            swap_total: sys.total_swap(),
            swap_used: sys.used_swap(),
            load_average: [load.one, load.five, load.fifteen],
            kernel: System::kernel_version().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_default(),
        }
    }

    /// Conditions under which measurements are unreliable: swap in use, a busy machine, a
    /// power-saving governor, less free memory than the model needs.
    pub fn warnings(&self, model_bytes: u64) -> Vec<String> {
        let mut w = Vec::new();
        if self.swap_used > 0 {
            w.push(format!("swap in use ({} MiB): memory pressure distorts timings", self.swap_used >> 20));
        }
        let busy = (self.logical_cpus.max(2) as f64) * 0.25;
        if self.load_average[0] > busy {
            w.push(format!(
                "load average {:.2} on {} CPUs: other work competes for the cores",
                self.load_average[0], self.logical_cpus
            ));
        }
        if self.governor.as_deref() == Some("powersave") {
            w.push("CPU frequency governor is powersave: clocks may be low and vary".into());
        }
        if model_bytes > 0 && self.ram_available < model_bytes {
            w.push(format!(
                "available RAM ({} MiB) is less than the model ({} MiB)",
                self.ram_available >> 20,
                model_bytes >> 20
            ));
        }
        w
    }
}

/// Memory of every device at one stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// `before load`, `after load`, `after context`.
    pub stage: String,
    /// Free and total memory per device (VRAM on GPUs, host memory for the CPU).
    pub devices: Vec<Device>,
    /// Resident memory of this process in bytes.
    pub process_rss: u64,
}

impl MemorySnapshot {
    /// Takes a snapshot now.
    pub fn take(backend: &llama_runner::Backend, stage: &str) -> Self {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
        let mut sys = System::new();
        let pid = Pid::from_u32(std::process::id());
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let process_rss = sys.process(pid).map_or(0, |p| p.memory());
        MemorySnapshot { stage: stage.into(), devices: backend.devices(), process_rss }
    }
}

/// The current time as RFC 3339 UTC (`2026-11-26T08:53:39Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Record {
    /// Writes the record as pretty JSON, atomically (temporary file + rename): a reader never
    /// sees half a record, and an interrupted run leaves no partial file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("records always serialize");
        write_atomic(path, text.as_bytes())
    }

    /// Reads a record written by [`write_json`](Self::write_json).
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        serde_json::from_str(&text).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a result record: {e}")),
        })
    }

    /// One JSON line per test with llama-bench's field names and order (`llama-bench -o jsonl`).
    pub fn to_llama_bench_jsonl(&self) -> String {
        let mut out = String::new();
        for w in &self.workloads {
            for (stats, n_prompt, n_gen) in [
                (&w.pp, w.workload.n_prompt * w.workload.turns.max(1), 0),
                (&w.tg, 0, w.workload.n_gen * w.workload.turns.max(1)),
            ] {
                if let Some(s) = stats {
                    out.push_str(&self.llama_bench_line(s, n_prompt, n_gen, w.workload.n_depth).to_string());
                    out.push('\n');
                }
            }
        }
        out
    }

    fn llama_bench_line(&self, s: &SampleStats, n_prompt: u32, n_gen: u32, n_depth: u32) -> serde_json::Value {
        let o = &self.options;
        let (m, c) = (&o.model, &o.context);
        let overrides = m.effective_overrides();
        let gpu_info: Vec<String> = self
            .memory
            .first()
            .map(|snap| snap.devices.iter().filter(|d| d.kind != "cpu").map(|d| d.description.clone()).collect())
            .unwrap_or_default();
        serde_json::json!({
            "build_commit": self.build.commit.get(..8).unwrap_or(&self.build.commit),
            "build_number": self.build.build_number,
            "cpu_info": self.machine.cpu_model,
            "gpu_info": gpu_info.join(", "),
            "backends": self.build.runtime_backends.join(","),
            "model_filename": self.model.path.display().to_string(),
            "model_type": self.model.info.description,
            "model_size": self.model.info.size_bytes,
            "model_n_params": self.model.info.n_params,
            "n_batch": c.n_batch,
            "n_ubatch": c.n_ubatch,
            "n_threads": c.threads(),
            "cpu_mask": c.placement.cpu_mask.clone().unwrap_or_else(|| "0x0".into()),
            "cpu_strict": c.placement.strict,
            "poll": c.placement.poll,
            "type_k": c.type_k.name(),
            "type_v": c.type_v.name(),
            "n_gpu_layers": m.gpu_layers.llama_number(),
            "n_cpu_moe": m.n_cpu_moe,
            "split_mode": m.split_mode.name(),
            "main_gpu": m.main_gpu,
            "no_kv_offload": !c.offload_kqv,
            // llama-bench's number (`-fa -1|0|1`).
            "flash_attn": match c.flash_attn { FlashAttn::Auto => -1, FlashAttn::Off => 0, FlashAttn::On => 1 },
            "devices": m.devices.as_ref().map_or("auto".to_string(), |d| if d.is_empty() { "none".into() } else { d.join("/") }),
            "tensor_split": m.tensor_split.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("/"),
            "tensor_buft_overrides": if overrides.is_empty() { "none".to_string() } else {
                overrides.iter().map(|ov| format!("{}={}", ov.pattern, ov.target.name())).collect::<Vec<_>>().join(";")
            },
            "load_mode": m.load_mode.name(),
            "embeddings": false,
            "no_op_offload": !c.op_offload,
            "no_host": m.no_host,
            "n_prompt": n_prompt,
            "n_gen": n_gen,
            "n_depth": n_depth,
            "test_time": self.started_at,
            "avg_ns": s.avg_ns.round() as u64,
            "stddev_ns": s.stddev_ns.round() as u64,
            "avg_ts": s.avg_ts,
            "stddev_ts": s.stddev_ts,
            "samples_ns": s.samples_ns,
            "samples_ts": s.samples_ts,
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |e| Error::Io { path: path.to_path_buf(), source: e };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
