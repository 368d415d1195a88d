//! LoRA adapter and control-vector files for the generated models.
//!
//! # LoRA adapters
//!
//! A [`LoraSpec`] describes an adapter for the model of a [`ModelSpec`]: its rank, its
//! `adapter.lora.alpha`, and one A/B pair per adapted ("target") tensor of the model. The file
//! is what `llama_adapter_lora_init` (llama.cpp `src/llama-adapter.cpp`) loads: the metadata
//! `general.type = adapter`, `general.architecture` (the model's), `adapter.type = lora` and
//! `adapter.lora.alpha` (F32), and the F32 tensors `<target>.lora_a` / `<target>.lora_b`.
//!
//! Shapes, in ggml order (`ne[0]` first, contiguous), for a target of shape `[n_in, n_out, ...]`:
//! A is `[n_in, rank, ...]` and B is `[rank, n_out, ...]` (the trailing dimensions, such as the
//! expert count of `ffn_*_exps`, are the target's). llama.cpp then adds
//! `scale * alpha / rank * B·(A·x)` to the target's product `W·x` (just `scale * B·(A·x)` when
//! alpha is 0). `token_embd.weight` (`[n_embd, n_vocab]`) is the exception llama.cpp makes: A is
//! `[rank, n_vocab]` (a row of A per token) and B `[rank, n_embd]`, and the row of A of the
//! token is multiplied by B.
//!
//! Values: all zeros ([`LoraWeights::Zeros`]), seeded normal values ([`LoraWeights::Random`]),
//! or given by the caller ([`LoraWeights::Given`], element `i` of a tensor is `ne[0]`-index
//! `i % ne[0]`, and so on), so a test can compute the expected effect by hand.
//!
//! # Control vectors
//!
//! A [`ControlVectorSpec`] is the file llama.cpp's `common_control_vector_load`
//! (`common/common.cpp`) reads: one F32 tensor `direction.<layer>` of `n_embd` values per layer
//! (layers from 1; llama.cpp adds the direction of layer `il` to the output of block `il`).
//!
//! ```
//! use tiny_gguf::{ControlVectorSpec, LoraSpec, ModelSpec, write_control_vector, write_lora};
//!
//! # fn main() -> Result<(), tiny_gguf::Error> {
//! let dir = std::env::temp_dir().join(format!("tiny-gguf-adapter-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let lora = LoraSpec::random(ModelSpec::tiny_llama(), 4, 7, &["blk.0.attn_q.weight", "output.weight"]);
//! write_lora(&lora, &dir.join("lora.gguf"))?;
//! let cvec = ControlVectorSpec::random(&ModelSpec::tiny_llama(), 1..=1, 7, 0.1);
//! write_control_vector(&cvec, &dir.join("cvec.gguf"))?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::rng::{Normal, fnv1a};
use crate::spec::{ModelSpec, N_VOCAB};
use crate::writer::{Meta, TEMP_COUNTER, TempGuard, gguf_type, pad, tensor_plan};
use crate::{Error, GGUF_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION};

/// `GGML_TYPE_F32`.
const GGML_F32: u32 = 0;

/// The values of a [`LoraSpec`]'s tensors.
#[derive(Clone, Debug, PartialEq)]
pub enum LoraWeights {
    /// A and B all zero for each named target: an adapter that changes nothing.
    Zeros {
        /// The adapted tensors of the model, e.g. `blk.0.attn_q.weight`.
        targets: Vec<String>,
    },
    /// A and B normal(0, `std`) for each named target, from the seeded generator of the model
    /// weights (every tensor its own stream, keyed by its name).
    Random {
        /// The adapted tensors of the model.
        targets: Vec<String>,
        /// The seed.
        seed: u64,
        /// The standard deviation.
        std: f32,
    },
    /// The caller's values.
    Given(Vec<LoraTensor>),
}

/// The A and B of one adapted tensor, given by the caller ([`LoraWeights::Given`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTensor {
    /// The adapted tensor of the model, e.g. `output.weight`.
    pub target: String,
    /// A's values in ggml order ([`lora_shapes`] gives the shape).
    pub a: Vec<f32>,
    /// B's values in ggml order.
    pub b: Vec<f32>,
}

/// A LoRA adapter for the model generated from [`LoraSpec::base`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    /// The model the adapter is for: its architecture goes into `general.architecture`, and
    /// its tensors' shapes give the shapes of A and B.
    pub base: ModelSpec,
    /// The rank (A's rows, B's columns); at least 1.
    pub rank: u32,
    /// `adapter.lora.alpha`: llama.cpp scales the product by `alpha / rank`, or not at all
    /// when it is 0.
    pub alpha: f32,
    /// The tensors and their values.
    pub weights: LoraWeights,
}

impl LoraSpec {
    /// An all-zero adapter of rank `rank` on `targets` (alpha = rank, so the scale is 1).
    pub fn zeros(base: ModelSpec, rank: u32, targets: &[&str]) -> LoraSpec {
        let targets = targets.iter().map(|t| t.to_string()).collect();
        LoraSpec { base, rank, alpha: rank as f32, weights: LoraWeights::Zeros { targets } }
    }

    /// A seeded random adapter of rank `rank` on `targets` (normal(0, 0.05) values, alpha =
    /// rank): a change of a few percent of the model's weights.
    pub fn random(base: ModelSpec, rank: u32, seed: u64, targets: &[&str]) -> LoraSpec {
        let targets = targets.iter().map(|t| t.to_string()).collect();
        LoraSpec { base, rank, alpha: rank as f32, weights: LoraWeights::Random { targets, seed, std: 0.05 } }
    }

    /// An adapter with the caller's A and B.
    pub fn given(base: ModelSpec, rank: u32, alpha: f32, tensors: Vec<LoraTensor>) -> LoraSpec {
        LoraSpec { base, rank, alpha, weights: LoraWeights::Given(tensors) }
    }

    /// The targets, in file order.
    pub fn targets(&self) -> Vec<&str> {
        match &self.weights {
            LoraWeights::Zeros { targets } | LoraWeights::Random { targets, .. } => {
                targets.iter().map(String::as_str).collect()
            }
            LoraWeights::Given(tensors) => tensors.iter().map(|t| t.target.as_str()).collect(),
        }
    }
}

/// The shapes llama.cpp's loader and graph expect of A and B for adapting tensor `target` of
/// the model of `base` with rank `rank`: `(A, B)` in ggml order.
///
/// Errors: [`Error::InvalidSpec`] when `base` is invalid, `rank` is 0 or the model has no
/// tensor `target`.
pub fn lora_shapes(base: &ModelSpec, target: &str, rank: u32) -> Result<(Vec<u64>, Vec<u64>), Error> {
    base.validate()?;
    if rank == 0 {
        return Err(Error::invalid("rank", "a LoRA rank must be at least 1".into()));
    }
    let plan = tensor_plan(base)?;
    let t = plan
        .iter()
        .find(|t| t.name == target)
        .ok_or_else(|| Error::invalid("targets", format!("the model has no tensor `{target}`")))?;
    let r = u64::from(rank);
    if target == "token_embd.weight" {
        return Ok((vec![r, u64::from(N_VOCAB)], vec![r, u64::from(base.n_embd)]));
    }
    let mut a = t.ne.clone();
    let mut b = t.ne.clone();
    if a.len() < 2 {
        a.push(1);
        b.push(1);
    }
    a[1] = r;
    b[0] = r;
    Ok((a, b))
}

fn n_elements(shape: &[u64]) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::invalid("rank", format!("tensor shape {shape:?} is too large")))
}

/// One tensor to write: name, shape, F32 values.
struct Planned {
    name: String,
    ne: Vec<u64>,
    data: Vec<f32>,
}

fn lora_tensors(spec: &LoraSpec) -> Result<Vec<Planned>, Error> {
    if !spec.alpha.is_finite() {
        return Err(Error::invalid("alpha", format!("alpha {} is not finite", spec.alpha)));
    }
    let targets = spec.targets();
    let mut seen = HashSet::new();
    if let Some(t) = targets.iter().find(|t| !seen.insert(**t)) {
        return Err(Error::invalid("targets", format!("`{t}` is adapted twice")));
    }
    let mut out = Vec::with_capacity(targets.len() * 2);
    for (i, target) in targets.iter().enumerate() {
        let (sa, sb) = lora_shapes(&spec.base, target, spec.rank)?;
        let (na, nb) = (n_elements(&sa)?, n_elements(&sb)?);
        let (a, b) = match &spec.weights {
            LoraWeights::Zeros { .. } => (vec![0.0; na], vec![0.0; nb]),
            LoraWeights::Random { seed, std, .. } => {
                let fill = |suffix: &str, n: usize| {
                    let mut v = Vec::with_capacity(n);
                    Normal::new(*seed, fnv1a(format!("{target}.{suffix}").as_bytes()), 0).fill(
                        n,
                        f64::from(*std),
                        &mut v,
                    );
                    v
                };
                (fill("lora_a", na), fill("lora_b", nb))
            }
            LoraWeights::Given(tensors) => {
                let t = &tensors[i];
                for (what, v, n, shape) in [("a", &t.a, na, &sa), ("b", &t.b, nb, &sb)] {
                    if v.len() != n {
                        return Err(Error::invalid(
                            "weights",
                            format!("{what} of `{target}` has {} values, its shape {shape:?} holds {n}", v.len()),
                        ));
                    }
                }
                (t.a.clone(), t.b.clone())
            }
        };
        out.push(Planned { name: format!("{target}.lora_a"), ne: sa, data: a });
        out.push(Planned { name: format!("{target}.lora_b"), ne: sb, data: b });
    }
    Ok(out)
}

/// The bytes of a GGUF file: header, metadata, tensor infos, aligned F32 data.
fn encode(meta: Meta, tensors: &[Planned]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(GGUF_MAGIC);
    out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta.count.to_le_bytes());
    out.extend_from_slice(&meta.buf);
    let mut offset = 0u64;
    for t in tensors {
        Meta::put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        t.ne.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&GGML_F32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        // The sizes are small (checked to fit usize when planned), so padding cannot overflow.
        offset += pad(t.data.len() as u64 * 4).unwrap_or(0);
    }
    out.resize(out.len().next_multiple_of(GGUF_ALIGNMENT as usize), 0);
    for t in tensors {
        t.data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        out.resize(out.len().next_multiple_of(GGUF_ALIGNMENT as usize), 0);
    }
    out
}

fn new_meta(arch: &str, name: &str) -> Meta {
    let mut m = Meta { buf: Vec::with_capacity(512), count: 0 };
    m.string("general.architecture", arch);
    m.string("general.name", name);
    m.u32("general.alignment", GGUF_ALIGNMENT as u32);
    m
}

/// The bytes of the adapter file for `spec`.
///
/// Errors: [`Error::InvalidSpec`] for an invalid base model, a rank of 0, a target the model
/// does not have or that is named twice, a non-finite alpha, or given values whose number does
/// not fit the shape.
pub fn lora_bytes(spec: &LoraSpec) -> Result<Vec<u8>, Error> {
    let tensors = lora_tensors(spec)?;
    let mut m =
        new_meta(spec.base.arch.name(), &format!("tiny-gguf lora r{} for {}", spec.rank, spec.base.file_stem()));
    m.string("general.type", "adapter");
    m.string("adapter.type", "lora");
    m.f32("adapter.lora.alpha", spec.alpha);
    Ok(encode(m, &tensors))
}

/// Writes the adapter file for `spec` to `path`, atomically (a temporary file renamed into
/// place). Errors as [`lora_bytes`], and [`Error::Io`].
pub fn write_lora(spec: &LoraSpec, path: &Path) -> Result<(), Error> {
    write_atomic(path, &lora_bytes(spec)?)
}

/// A control vector: one direction per layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlVectorSpec {
    /// Written as `controlvector.model_hint` (llama.cpp does not read it).
    pub model_hint: String,
    /// The length of every direction (the model's `n_embd` for a vector that fits it).
    pub n_embd: u32,
    /// `(layer, values)`: the tensor `direction.<layer>`; layers from 1, each `n_embd` values.
    pub directions: Vec<(u32, Vec<f32>)>,
}

impl ControlVectorSpec {
    /// Zero directions for `layers` of the model of `base`.
    pub fn zeros(base: &ModelSpec, layers: RangeInclusive<u32>) -> ControlVectorSpec {
        let n = base.n_embd as usize;
        ControlVectorSpec {
            model_hint: base.arch.name().to_string(),
            n_embd: base.n_embd,
            directions: layers.map(|l| (l, vec![0.0; n])).collect(),
        }
    }

    /// Normal(0, `std`) directions for `layers` of the model of `base`, seeded.
    pub fn random(base: &ModelSpec, layers: RangeInclusive<u32>, seed: u64, std: f32) -> ControlVectorSpec {
        let n = base.n_embd as usize;
        let directions = layers
            .map(|l| {
                let mut v = Vec::with_capacity(n);
                Normal::new(seed, fnv1a(format!("direction.{l}").as_bytes()), 0).fill(n, f64::from(std), &mut v);
                (l, v)
            })
            .collect();
        ControlVectorSpec { model_hint: base.arch.name().to_string(), n_embd: base.n_embd, directions }
    }
}

/// The bytes of the control-vector file for `spec`.
///
/// Errors: [`Error::InvalidSpec`] for an `n_embd` of 0, a layer of 0 or named twice, or a
/// direction whose length is not `n_embd`.
pub fn control_vector_bytes(spec: &ControlVectorSpec) -> Result<Vec<u8>, Error> {
    if spec.n_embd == 0 {
        return Err(Error::invalid("n_embd", "a control vector needs n_embd of at least 1".into()));
    }
    let mut seen = HashSet::new();
    let mut tensors = Vec::with_capacity(spec.directions.len());
    for (layer, values) in &spec.directions {
        if *layer == 0 {
            return Err(Error::invalid("directions", "layer 0 has no direction (llama.cpp refuses it)".into()));
        }
        if !seen.insert(*layer) {
            return Err(Error::invalid("directions", format!("layer {layer} is given twice")));
        }
        if values.len() != spec.n_embd as usize {
            return Err(Error::invalid(
                "directions",
                format!("layer {layer} has {} values, n_embd is {}", values.len(), spec.n_embd),
            ));
        }
        tensors.push(Planned {
            name: format!("direction.{layer}"),
            ne: vec![u64::from(spec.n_embd)],
            data: values.clone(),
        });
    }
    let mut m = new_meta("controlvector", "tiny-gguf control vector");
    m.string("controlvector.model_hint", &spec.model_hint);
    m.key("controlvector.layer_count", gguf_type::INT32);
    m.buf.extend_from_slice(&(spec.directions.len() as i32).to_le_bytes());
    Ok(encode(m, &tensors))
}

/// Writes the control-vector file for `spec` to `path`, atomically. Errors as
/// [`control_vector_bytes`], and [`Error::Io`].
pub fn write_control_vector(spec: &ControlVectorSpec, path: &Path) -> Result<(), Error> {
    write_atomic(path, &control_vector_bytes(spec)?)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { action, path: p, source }
    };
    let name = path.file_name().ok_or_else(|| {
        io("write", path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"))
    })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id()));
    let mut file = File::create_new(&tmp).map_err(io("create", &tmp))?;
    let mut guard = TempGuard { path: tmp.clone(), armed: true };
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    guard.armed = false;
    Ok(())
}
