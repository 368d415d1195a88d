//! Importance matrices for quantization: read from llama-imatrix's GGUF and legacy formats as
//! llama-quantize reads them, and quantizing with one gives, byte for byte, the file that
//! llama.cpp's own loader and `llama_model_quantize` give (a reference program linked against
//! llama.cpp's common library); bad matrices are errors naming the problem.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::Prerequisite;
use llama_runner::quantize::{ImportanceMatrix, QuantType, QuantizeError, QuantizeOptions, quantize};
use llama_runner::{Backend, Error};
use tiny_gguf::ModelSpec;

/// A model whose rows (n_embd 256, n_ff 512) fit the 256-blocks of the IQ and K types.
fn wide_model() -> PathBuf {
    common::model(&ModelSpec { n_embd: 256, n_ff: 512, n_head: 8, n_head_kv: 4, seed: 7, ..ModelSpec::tiny_llama() })
}

fn dir(test: &str) -> PathBuf {
    let d = common::scratch().join("imatrix").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The weight matrices of the wide model with their input width (what an importance matrix
/// has one value per).
fn entries() -> Vec<(String, usize)> {
    let mut e = vec![("output.weight".to_string(), 256)];
    for il in 0..2 {
        for (t, n) in [
            ("attn_q", 256),
            ("attn_k", 256),
            ("attn_v", 256),
            ("attn_output", 256),
            ("ffn_gate", 256),
            ("ffn_up", 256),
            ("ffn_down", 512),
        ] {
            e.push((format!("blk.{il}.{t}.weight"), n));
        }
    }
    e
}

/// Sums of squared activations, made up but deterministic and varied.
fn sums(name: &str, n: usize) -> Vec<f32> {
    let seed = name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..n).map(|i| 1.0 + ((seed as usize + i * 37) % 101) as f32 * 0.5).collect()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// An importance matrix in llama-imatrix's GGUF format: `NAME.in_sum2` and `NAME.counts` (f32)
/// per entry, `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`.
fn write_gguf(path: &Path, entries: &[(String, Vec<f32>, Vec<f32>)], metadata: bool) {
    let mut kv = Vec::new();
    let mut n_kv = 0u64;
    if metadata {
        put_str(&mut kv, "imatrix.datasets");
        kv.extend_from_slice(&9u32.to_le_bytes());
        kv.extend_from_slice(&8u32.to_le_bytes());
        kv.extend_from_slice(&1u64.to_le_bytes());
        put_str(&mut kv, "wiki.test.raw");
        for (key, v) in [("imatrix.chunk_count", 12u32), ("imatrix.chunk_size", 512)] {
            put_str(&mut kv, key);
            kv.extend_from_slice(&4u32.to_le_bytes());
            kv.extend_from_slice(&v.to_le_bytes());
        }
        n_kv = 3;
    }
    let tensors: Vec<(String, &Vec<f32>)> =
        entries.iter().flat_map(|(n, s, c)| [(format!("{n}.in_sum2"), s), (format!("{n}.counts"), c)]).collect();
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(&kv);
    let mut offset = 0u64;
    for (name, v) in &tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (v.len() as u64 * 4).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for (_, v) in &tensors {
        let start = out.len();
        v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        out.resize(start + (v.len() * 4).next_multiple_of(32), 0);
    }
    std::fs::write(path, out).unwrap();
}

/// The same matrix in the legacy format: per entry its name, the number of calls and the
/// sums scaled by it (the format stores mean * calls), then the chunk count and the dataset.
fn write_legacy(path: &Path, entries: &[(String, Vec<f32>, f32)]) {
    let mut out = (entries.len() as i32).to_le_bytes().to_vec();
    for (name, values, ncall) in entries {
        out.extend_from_slice(&(name.len() as i32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(*ncall as i32).to_le_bytes());
        out.extend_from_slice(&(values.len() as i32).to_le_bytes());
        values.iter().for_each(|v| out.extend_from_slice(&(v * ncall).to_le_bytes()));
    }
    out.extend_from_slice(&12i32.to_le_bytes());
    out.extend_from_slice(&13i32.to_le_bytes());
    out.extend_from_slice(b"wiki.test.raw");
    std::fs::write(path, out).unwrap();
}

fn gguf_entries() -> Vec<(String, Vec<f32>, Vec<f32>)> {
    entries().into_iter().map(|(n, w)| (n.clone(), sums(&n, w), vec![10.0])).collect()
}

fn quantize_with(
    input: &Path,
    output: &Path,
    target: QuantType,
    imatrix: Option<ImportanceMatrix>,
) -> llama_runner::Result<()> {
    let options =
        QuantizeOptions { n_threads: Some(2), imatrix: imatrix.map(Arc::new), ..QuantizeOptions::new(target) };
    quantize(Backend::get().unwrap(), input, output, &options, |_| ()).map(|_| ())
}

/// The reference program (llama.cpp's loader and quantizer), compiled once.
fn reference() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| common::compile_common_reference("quantize_imatrix"))
}

/// Quantizing with an importance matrix gives llama.cpp's file byte for byte, for a type that
/// needs one (IQ2_XXS) and one that only uses it (Q4_K_M), from both file formats; the matrix
/// changes the result, and the legacy and GGUF forms of one matrix read the same.
fn equals_llama_cpp(_: ()) {
    let d = dir("parity");
    let model = wide_model();
    let gguf = d.join("m.imatrix.gguf");
    write_gguf(&gguf, &gguf_entries(), true);
    let legacy = d.join("m.imatrix.dat");
    write_legacy(
        &legacy,
        &entries()
            .into_iter()
            .map(|(n, w)| (n.clone(), sums(&n, w).iter().map(|s| s / 10.0).collect(), 4.0))
            .collect::<Vec<_>>(),
    );
    let (a, b) = (ImportanceMatrix::load(&gguf).unwrap(), ImportanceMatrix::load(&legacy).unwrap());
    assert_eq!(a.len(), entries().len());
    assert_eq!((a.datasets(), a.chunk_count()), (&["wiki.test.raw".to_string()][..], 12));
    assert_eq!((b.datasets(), b.chunk_count()), (&["wiki.test.raw".to_string()][..], 12));
    for name in a.names() {
        let (x, y) = (a.values(name).unwrap(), b.values(name).unwrap());
        assert!(x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-6 * p.abs()), "{name}: the two formats read the same");
    }
    for target in [QuantType::IQ2_XXS, QuantType::Q4_K_M] {
        for file in [&gguf, &legacy] {
            let ours = d.join(format!("ours-{target}.gguf"));
            quantize_with(&model, &ours, target, Some(ImportanceMatrix::load(file).unwrap())).unwrap();
            let theirs = d.join(format!("theirs-{target}.gguf"));
            let status = std::process::Command::new(reference())
                .arg(&model)
                .arg(&theirs)
                .arg(target.ftype().to_string())
                .arg(file)
                .arg("2")
                .output()
                .unwrap();
            assert!(status.status.success(), "reference: {}", String::from_utf8_lossy(&status.stderr));
            let (o, t) = (std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
            assert!(o == t, "{target} with {}: the runner's file differs from llama.cpp's", file.display());
            eprintln!("{target} with {}: {} bytes, byte-identical to llama.cpp's", file.display(), o.len());
        }
    }
    // The matrix is used: Q4_K_M without one gives other tensor data.
    let plain = d.join("plain.gguf");
    quantize_with(&model, &plain, QuantType::Q4_K_M, None).unwrap();
    let with = d.join("ours-Q4_K_M.gguf");
    let data = |p: &Path| {
        let g = llama_runner::gguf::Gguf::open(p).unwrap();
        std::fs::read(p).unwrap()[g.data_offset() as usize..].to_vec()
    };
    assert_ne!(data(&plain), data(&with), "the importance matrix changes the quantized weights");
    // IQ2_XXS without a matrix is refused by name.
    let e = quantize_with(&model, &d.join("no.gguf"), QuantType::IQ2_XXS, None).unwrap_err();
    assert!(matches!(e, Error::Quantize(QuantizeError::NeedsImatrix { .. })), "{e}");
}

/// Bad matrices: each an error naming the file and the problem, nothing written.
fn bad_matrices_are_errors(_: ()) {
    let d = dir("bad");
    let load_err = |p: &Path| match ImportanceMatrix::load(p) {
        Err(e @ Error::Imatrix { .. }) => e.to_string(),
        other => panic!("{}: expected an importance-matrix error, got {other:?}", p.display()),
    };
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut e = gguf_entries();
    e[0].1[3] = f32::NAN;
    let nan = d.join("nan.gguf");
    write_gguf(&nan, &e, true);
    assert!(load_err(&nan).contains("NaN"));
    let no_meta = d.join("no-meta.gguf");
    write_gguf(&no_meta, &gguf_entries(), false);
    assert!(load_err(&no_meta).contains("imatrix.datasets"));
    let mut e = gguf_entries();
    e[1].2 = vec![1.0, 2.0, 3.0]; // 256 sums do not split into 3 experts
    let split = d.join("split.gguf");
    write_gguf(&split, &e, true);
    assert!(load_err(&split).contains("experts"));
    assert!(load_err(&write("garbage.dat", b"definitely not a matrix")).contains("do not fit"));
    assert!(load_err(&write("empty.dat", &0i32.to_le_bytes())).contains("with entries"));
    assert!(load_err(&d.join("missing.dat")).contains("cannot read"));
    let mut legacy = Vec::new();
    legacy.extend_from_slice(&1i32.to_le_bytes());
    legacy.extend_from_slice(&1_000_000i32.to_le_bytes()); // a name longer than the file
    assert!(load_err(&write("truncated.dat", &legacy)).contains("do not fit"));
    // A matrix whose entry does not fit its tensor: llama.cpp's own clean refusal, named.
    let wrong = d.join("wrong.gguf");
    let mut e = gguf_entries();
    e.iter_mut().filter(|x| x.0 == "blk.0.attn_q.weight").for_each(|x| x.1 = sums(&x.0, 128));
    write_gguf(&wrong, &e, true);
    let out = d.join("out.gguf");
    let err = quantize_with(&wide_model(), &out, QuantType::Q4_K_M, Some(ImportanceMatrix::load(&wrong).unwrap()))
        .unwrap_err();
    assert!(err.to_string().contains("imatrix size 128"), "{err}");
    assert!(!out.exists(), "nothing is left at the output");
    // Filters: what --include-weights / --exclude-weights keep.
    let whole = d.join("m.gguf");
    write_gguf(&whole, &gguf_entries(), true);
    let mut m = ImportanceMatrix::load(&whole).unwrap();
    m.retain(&[], &["ffn_".to_string()]);
    assert!(m.names().all(|n| !n.contains("ffn_")) && m.len() == 9, "{:?}", m.names().collect::<Vec<_>>());
    m.retain(&["attn_q".to_string()], &[]);
    assert_eq!(m.names().collect::<Vec<_>>(), ["blk.0.attn_q.weight", "blk.1.attn_q.weight"]);
}

fn main() {
    common::run_trials(vec![
        common::trial("equals_llama_cpp", common::llama_common(), equals_llama_cpp),
        common::trial("bad_matrices_are_errors", Prerequisite::Met(()), bad_matrices_are_errors),
    ]);
}
