//! The option enums, each with its llama.cpp spelling, its C value and its serde name in one
//! table: flags, configuration files, records and the lowering all read these tables.
//!
//! `option_enum!` writes, for every enum, the variants, [`NamedOption`] (names, aliases, the
//! C value), `Display` and `FromStr` (llama.cpp's spelling, exact and case-sensitive, as
//! `common/arg.cpp` compares them), and with the `serde` feature `Serialize`/`Deserialize` (the
//! same name; configuration files may also use the `serde aliases` of a variant).

use std::fmt;

use llama_sys as sys;

use crate::error::{Error, Reason};
use crate::options::Opt;

/// What every option enum of this module offers; written by `option_enum!`.
pub trait NamedOption: Copy + Eq + Sized + 'static {
    /// The typed option it is the value of (its field and flag), for messages.
    const OPTION: Opt;
    /// What a value is called in messages (`cache type`).
    const WHAT: &'static str;
    /// Every variant, in table order.
    const VARIANTS: &'static [Self];
    /// The llama.cpp spelling of every variant, in table order.
    const NAMES: &'static [&'static str];

    /// The llama.cpp spelling (`q8_0`, `mmap+mlock`), which is also the serde name.
    fn name(self) -> &'static str;

    /// The variant llama.cpp's parser gives this spelling (the name or one of the flag aliases,
    /// compared exactly).
    fn from_llama(s: &str) -> Option<Self>;
}

/// A value that is not one of an option enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (llama.cpp accepts exactly {})", .accepted.join(", "))]
pub struct UnknownName {
    /// What was parsed (`cache type`).
    pub what: &'static str,
    /// The value given.
    pub value: String,
    /// The spellings accepted.
    pub accepted: &'static [&'static str],
}

/// Defines an option enum from its table:
///
/// ```text
/// option_enum! {
///     /// docs
///     #[derive(Default)]
///     pub enum Name: Opt::Field, "what", C type (#[cfg] for commits that have it) {
///         /// docs
///         Variant = "llama-name" [flag aliases] {serde aliases} => @ cfg(...) C value,
///     }
/// }
/// ```
macro_rules! option_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $opt:expr, $what:literal, $(#[$ccfg:meta])* $cty:ty {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $llama:literal
                    $([$($flag_alias:literal),*])?
                    $({$($serde_alias:literal),*})?
                    => $(@ $vcfg:meta)? $c:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every variant, in table order.
            pub const ALL: [$name; [$(stringify!($variant)),*].len()] = [$($name::$variant),*];

            /// The llama.cpp spelling, which is also the serde name.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $llama,)*
                }
            }

            /// The C value llama.cpp takes for it, `None` where the compiled llama.cpp commit has
            /// no such value.
            $(#[$ccfg])*
            #[allow(unreachable_patterns)]
            pub fn c_value(self) -> Option<$cty> {
                match self {
                    $($(#[$vcfg])? $name::$variant => Some($c),)*
                    _ => None,
                }
            }

            /// The variant whose C value is `c`.
            $(#[$ccfg])*
            #[allow(dead_code)]
            pub fn from_c_value(c: $cty) -> Option<$name> {
                $name::ALL.into_iter().find(|v| v.c_value() == Some(c))
            }

            /// The C value, or an [`Error::InvalidOption`] saying that the compiled commit
            /// cannot express it.
            $(#[$ccfg])*
            #[allow(dead_code)]
            pub(crate) fn lower(self) -> crate::error::Result<$cty> {
                self.c_value().ok_or_else(|| unsupported(<$name as NamedOption>::OPTION, self.name()))
            }

            #[cfg(feature = "serde")]
            fn from_serde_name(s: &str) -> Option<$name> {
                match s {
                    $($llama $($(| $serde_alias)*)? => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl NamedOption for $name {
            const OPTION: Opt = $opt;
            const WHAT: &'static str = $what;
            const VARIANTS: &'static [$name] = &$name::ALL;
            const NAMES: &'static [&'static str] = &[$($llama),*];

            fn name(self) -> &'static str {
                $name::name(self)
            }

            fn from_llama(s: &str) -> Option<$name> {
                match s {
                    $($llama $($(| $flag_alias)*)? => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<$name, UnknownName> {
                <$name as NamedOption>::from_llama(s).ok_or_else(|| UnknownName {
                    what: $what,
                    value: s.to_string(),
                    accepted: <$name as NamedOption>::NAMES,
                })
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} ({})", $what, <$name as NamedOption>::NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::from_serde_name(s)
                            .ok_or_else(|| E::unknown_variant(s, <$name as NamedOption>::NAMES))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// An option value the compiled llama.cpp commit cannot express.
pub(crate) fn unsupported(option: Opt, value: &str) -> Error {
    Error::InvalidOption {
        option,
        value: value.to_string(),
        reason: Reason::Unsupported { value: value.to_string(), commit: sys::build_info::COMMIT },
    }
}

option_enum! {
    /// How the model file is brought into memory (`-lm`, or `--mmap`/`--no-mmap`/`--mlock`/`-dio`).
    #[derive(Default)]
    pub enum LoadMode: Opt::LoadMode, "load mode", #[cfg(llama_load_mode)] sys::llama_load_mode {
        /// Read into allocated memory (`--no-mmap`, `-lm none`).
        None = "none" {"no-mmap"} => sys::LLAMA_LOAD_MODE_NONE,
        /// Memory-map the file (the default).
        #[default]
        Mmap = "mmap" => sys::LLAMA_LOAD_MODE_MMAP,
        /// Read and lock in RAM (`--mlock`, `-lm mlock`).
        Mlock = "mlock" => sys::LLAMA_LOAD_MODE_MLOCK,
        /// Memory-map and lock (`-lm mmap+mlock`).
        MmapMlock = "mmap+mlock" => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
        /// Direct I/O, bypassing the page cache (`-dio`, `-lm dio`).
        DirectIo = "dio" {"direct-io"} => sys::LLAMA_LOAD_MODE_DIRECT_IO,
    }
}

option_enum! {
    /// How a model is split over several GPUs (`-sm`).
    #[derive(Default)]
    pub enum SplitMode: Opt::SplitMode, "split mode", sys::llama_split_mode {
        /// One GPU only.
        None = "none" => sys::LLAMA_SPLIT_MODE_NONE,
        /// Split layers and KV across GPUs (the default).
        #[default]
        Layer = "layer" => sys::LLAMA_SPLIT_MODE_LAYER,
        /// Split rows across GPUs.
        Row = "row" => sys::LLAMA_SPLIT_MODE_ROW,
        /// Tensor parallelism (needs flash attention).
        Tensor = "tensor" => @ cfg(llama_split_mode_tensor) sys::LLAMA_SPLIT_MODE_TENSOR,
    }
}

option_enum! {
    /// Flash attention (`-fa`). llama.cpp also reads `enabled`/`true`/`1`, `disabled`/`false`/`0`
    /// and `-1` (auto).
    #[derive(Default)]
    pub enum FlashAttn: Opt::FlashAttn, "flash attention setting", #[cfg(llama_flash_attn_enum)]
        sys::llama_flash_attn_type {
        /// llama.cpp probes the device and decides (the default).
        #[default]
        Auto = "auto" ["-1"] => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
        /// Always on.
        On = "on" ["enabled", "true", "1"] => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        /// Always off (quantized V caches then fail).
        Off = "off" ["disabled", "false", "0"] => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }
}

option_enum! {
    /// Element type of the K or V cache (`-ctk`, `-ctv`): the types llama.cpp's CLI accepts
    /// (`kv_cache_types` in `common/arg.cpp`), by their ggml names, compared case-sensitively.
    #[derive(Default)]
    pub enum CacheType: Opt::TypeK, "cache type", sys::ggml_type {
        /// 32-bit float.
        F32 = "f32" => sys::GGML_TYPE_F32,
        /// 16-bit float (the default).
        #[default]
        F16 = "f16" => sys::GGML_TYPE_F16,
        /// bfloat16.
        Bf16 = "bf16" => sys::GGML_TYPE_BF16,
        /// 8-bit blocks of 32.
        Q8_0 = "q8_0" => sys::GGML_TYPE_Q8_0,
        /// 4-bit blocks of 32.
        Q4_0 = "q4_0" => sys::GGML_TYPE_Q4_0,
        /// 4-bit blocks of 32 with minimum.
        Q4_1 = "q4_1" => sys::GGML_TYPE_Q4_1,
        /// 4-bit non-linear.
        Iq4Nl = "iq4_nl" => sys::GGML_TYPE_IQ4_NL,
        /// 5-bit blocks of 32.
        Q5_0 = "q5_0" => sys::GGML_TYPE_Q5_0,
        /// 5-bit blocks of 32 with minimum.
        Q5_1 = "q5_1" => sys::GGML_TYPE_Q5_1,
    }
}

impl CacheType {
    /// Parses a llama.cpp cache type name exactly, as llama.cpp does (`kv_cache_type_from_str`
    /// compares with `ggml_type_name`, so `Q8_0` is refused).
    pub fn from_name(name: &str) -> Option<Self> {
        <Self as NamedOption>::from_llama(name)
    }

    /// Whether the type is a block-quantized one (needs flash attention for V).
    pub fn is_quantized(self) -> bool {
        !matches!(self, CacheType::F32 | CacheType::F16 | CacheType::Bf16)
    }

    /// The ggml type.
    pub(crate) fn ggml(self) -> sys::ggml_type {
        match self.c_value() {
            Some(t) => t,
            // Every variant has a ggml type at every commit (no arm of the table is cfg-gated).
            None => sys::GGML_TYPE_F16,
        }
    }
}

option_enum! {
    /// Scheduling priority of the compute threads (`--prio`, where llama.cpp reads the C value:
    /// `--prio -1` is `low`, `--prio 3` is `realtime`).
    #[derive(Default)]
    pub enum Priority: Opt::Priority, "priority", sys::ggml_sched_priority {
        /// -1
        Low = "low" => sys::GGML_SCHED_PRIO_LOW,
        /// 0 (the default)
        #[default]
        Normal = "normal" => sys::GGML_SCHED_PRIO_NORMAL,
        /// 1
        Medium = "medium" => sys::GGML_SCHED_PRIO_MEDIUM,
        /// 2
        High = "high" => sys::GGML_SCHED_PRIO_HIGH,
        /// 3
        Realtime = "realtime" => sys::GGML_SCHED_PRIO_REALTIME,
    }
}

impl Priority {
    /// llama.cpp's number for it (`--prio N`), the C value.
    #[allow(clippy::unnecessary_cast)] // `ggml_sched_priority` is the C enum's integer type
    pub fn level(self) -> i32 {
        self.c_value().map_or(0, |p| p as i32)
    }

    /// From llama.cpp's number.
    pub fn from_level(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.level() == n)
    }
}

option_enum! {
    /// What kind of device llama.cpp registered (`ggml_backend_dev_type`).
    pub enum DeviceKind: Opt::Devices, "device kind", sys::ggml_backend_dev_type {
        /// The CPU: always used, never an offload device.
        Cpu = "cpu" => sys::GGML_BACKEND_DEVICE_TYPE_CPU,
        /// A discrete GPU.
        Gpu = "gpu" => sys::GGML_BACKEND_DEVICE_TYPE_GPU,
        /// An integrated GPU (a type of its own from 3d4053f7 on).
        Igpu = "igpu" => @ cfg(ggml_dev_type_igpu) sys::GGML_BACKEND_DEVICE_TYPE_IGPU,
        /// Another accelerator.
        Accel = "accel" => sys::GGML_BACKEND_DEVICE_TYPE_ACCEL,
    }
}

option_enum! {
    /// NUMA strategy (`--numa`), applied once per process when the backend initialises.
    /// `disabled` is the default and no value of llama.cpp's `--numa`.
    #[derive(Default)]
    pub enum Numa: Opt::Numa, "NUMA strategy", sys::ggml_numa_strategy {
        /// No NUMA handling (the default).
        #[default]
        Disabled = "disabled" => sys::GGML_NUMA_STRATEGY_DISABLED,
        /// Spread threads over all nodes.
        Distribute = "distribute" => sys::GGML_NUMA_STRATEGY_DISTRIBUTE,
        /// Stay on the node the process started on.
        Isolate = "isolate" => sys::GGML_NUMA_STRATEGY_ISOLATE,
        /// Use the CPU map numactl gave the process.
        Numactl = "numactl" => sys::GGML_NUMA_STRATEGY_NUMACTL,
    }
}

option_enum! {
    /// How an embedding context pools the per-token outputs of a sequence (`--pooling`;
    /// `enum llama_pooling_type`). llama.cpp's parser takes only `none`, `mean`, `cls`, `last`
    /// and `rank`; `unspecified` (the default) is the model's own pooling type, or none when the
    /// model names none.
    #[derive(Default)]
    pub enum Pooling: Opt::Pooling, "pooling type", sys::llama_pooling_type {
        /// The model's default (`LLAMA_POOLING_TYPE_UNSPECIFIED`, no `--pooling`).
        #[default]
        Unspecified = "unspecified" => sys::LLAMA_POOLING_TYPE_UNSPECIFIED,
        /// No pooling: one embedding per token.
        None = "none" => sys::LLAMA_POOLING_TYPE_NONE,
        /// The mean of the sequence's token embeddings.
        Mean = "mean" => sys::LLAMA_POOLING_TYPE_MEAN,
        /// The embedding of the sequence's first token.
        Cls = "cls" => sys::LLAMA_POOLING_TYPE_CLS,
        /// The embedding of the sequence's last token.
        Last = "last" => sys::LLAMA_POOLING_TYPE_LAST,
        /// The classifier head's scores (reranking models with `cls` tensors).
        Rank = "rank" => sys::LLAMA_POOLING_TYPE_RANK,
    }
}

impl Pooling {
    /// The spellings llama.cpp's `--pooling` accepts (every name but `unspecified`).
    pub const FLAG_NAMES: &'static [&'static str] = &["none", "mean", "cls", "last", "rank"];
}

impl DeviceKind {
    /// The kind of a device type llama.cpp reports; types this crate does not know are
    /// accelerators.
    pub fn of(t: sys::ggml_backend_dev_type) -> Self {
        Self::from_c_value(t).unwrap_or(DeviceKind::Accel)
    }

    /// The kind named by [`Device::kind`](crate::Device::kind) (`cpu`, `gpu`, `igpu`, `accel`).
    pub fn from_device(kind: &str) -> Option<Self> {
        <Self as NamedOption>::from_llama(kind)
    }
}

impl PartialEq<&str> for DeviceKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// How many layers to offload to GPUs (`-ngl`): `auto`, `all` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum GpuLayers {
    /// llama.cpp decides (`-ngl auto`, the CLI default). Without llama.cpp's fit step, which this
    /// runner does not run, the library treats it as all layers.
    #[default]
    Auto,
    /// Every layer (`-ngl all`).
    All,
    /// The first N layers (`-ngl N`); 0 keeps everything on the CPU.
    #[cfg_attr(feature = "serde", serde(untagged))]
    Count(u32),
}

/// `"auto"`, `"all"` or a layer count, with an error that says so (serde's untagged enums
/// answer "data did not match any variant").
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for GpuLayers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GpuLayers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of layers (0 or more), \"auto\" or \"all\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<GpuLayers, E> {
                u32::try_from(v)
                    .map(GpuLayers::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<GpuLayers, E> {
                u32::try_from(v)
                    .map(GpuLayers::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<GpuLayers, E> {
                match v {
                    "auto" => Ok(GpuLayers::Auto),
                    "all" => Ok(GpuLayers::All),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl GpuLayers {
    /// The number llama.cpp's `-ngl` parser stores for it in `common_params::n_gpu_layers`
    /// (`auto` is -1, `all` is -2), which llama-bench's records show.
    pub fn llama_number(self) -> i64 {
        match self {
            GpuLayers::Auto => -1,
            GpuLayers::All => -2,
            GpuLayers::Count(n) => i64::from(n),
        }
    }

    /// From llama.cpp's number: -1 is `auto`, anything below is `all`.
    pub fn from_llama_number(n: i64) -> Self {
        match n {
            -1 => GpuLayers::Auto,
            n if n < -1 => GpuLayers::All,
            n => GpuLayers::Count(u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }

    /// `llama_model_params::n_gpu_layers` at the compiled commit: before 1051ecd2 a negative
    /// value meant no layers, so `auto` and `all` are 999 there (all layers at every commit).
    pub(crate) fn lower(self) -> crate::error::Result<i32> {
        match self {
            GpuLayers::Count(n) => i32::try_from(n).map_err(|_| Error::InvalidOption {
                option: Opt::GpuLayers,
                value: n.to_string(),
                reason: Reason::TooLarge { value: u64::from(n) },
            }),
            GpuLayers::Auto | GpuLayers::All if cfg!(not(llama_negative_ngl_is_all)) => Ok(999),
            other => Ok(other.llama_number() as i32),
        }
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => f.write_str("auto"),
            GpuLayers::All => f.write_str("all"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}
