//! LoRA adapter and control-vector files: metadata, tensor shapes, values, determinism and
//! the refusals.

use std::fs;
use std::path::{Path, PathBuf};

use tiny_gguf::{
    ControlVectorSpec, Error, GgufHeader, LoraSpec, LoraTensor, MetaValue, ModelSpec, N_VOCAB, control_vector_bytes,
    lora_bytes, lora_shapes, read_header, write_control_vector, write_lora,
};

fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-gguf-adapter-tests").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The F32 values of tensor `name`, read back from the file bytes.
fn values(bytes: &[u8], header: &GgufHeader, name: &str) -> Vec<f32> {
    let t = header.tensor(name).unwrap_or_else(|| panic!("tensor {name}"));
    assert_eq!(t.ggml_type, 0, "{name} is F32");
    let start = (header.data_offset + t.offset) as usize;
    let n = t.n_elements().unwrap() as usize;
    bytes[start..start + 4 * n].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn written(dir: &Path, name: &str, bytes: &[u8]) -> GgufHeader {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    let header = read_header(&path).unwrap();
    // The workspace's reader and llama.cpp's rules for the tensor table agree with the layout.
    llama_gguf::Gguf::open(&path).unwrap();
    assert_eq!(header.data_end(), Some(header.file_size));
    header
}

#[test]
fn lora_files_carry_the_metadata_and_shapes_llama_cpp_reads() {
    let dir = test_dir("shapes");
    let targets = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"];
    let spec = LoraSpec::zeros(ModelSpec::tiny_llama(), 4, &targets);
    let path = dir.join("zeros.gguf");
    write_lora(&spec, &path).unwrap();
    let bytes = fs::read(&path).unwrap();
    let h = read_header(&path).unwrap();
    assert_eq!(h.get_str("general.type"), Some("adapter"));
    assert_eq!(h.get_str("general.architecture"), Some("llama"));
    assert_eq!(h.get_str("adapter.type"), Some("lora"));
    assert_eq!(h.get("adapter.lora.alpha"), Some(&MetaValue::F32(4.0)));
    assert_eq!(h.tensors.len(), 8);
    let v = u64::from(N_VOCAB);
    let expected: [(&str, Vec<u64>, Vec<u64>); 4] = [
        ("token_embd.weight", vec![4, v], vec![4, 128]),
        ("blk.0.attn_q.weight", vec![128, 4], vec![4, 128]),
        ("blk.1.ffn_down.weight", vec![256, 4], vec![4, 128]),
        ("output.weight", vec![128, 4], vec![4, v]),
    ];
    for (target, a, b) in expected {
        assert_eq!(h.tensor(&format!("{target}.lora_a")).unwrap().dims, a, "{target}");
        assert_eq!(h.tensor(&format!("{target}.lora_b")).unwrap().dims, b, "{target}");
        assert_eq!(lora_shapes(&ModelSpec::tiny_llama(), target, 4).unwrap(), (a.clone(), b.clone()));
        assert!(values(&bytes, &h, &format!("{target}.lora_a")).iter().all(|&x| x == 0.0));
        assert!(values(&bytes, &h, &format!("{target}.lora_b")).iter().all(|&x| x == 0.0));
    }
    // Expert tensors keep their expert dimension.
    assert_eq!(
        lora_shapes(&ModelSpec::tiny_moe(), "blk.0.ffn_up_exps.weight", 2).unwrap(),
        (vec![128, 2, 4], vec![2, 256, 4])
    );
    written(&dir, "check.gguf", &bytes);
}

#[test]
fn given_values_are_written_in_ggml_order_and_random_ones_are_seeded() {
    let dir = test_dir("values");
    let base = ModelSpec::tiny_llama();
    let (sa, sb) = lora_shapes(&base, "blk.0.attn_k.weight", 3).unwrap();
    assert_eq!((sa.clone(), sb.clone()), (vec![128, 3], vec![3, 64]));
    let a: Vec<f32> = (0..128 * 3).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..3 * 64).map(|i| -(i as f32) / 8.0).collect();
    let tensor = LoraTensor { target: "blk.0.attn_k.weight".into(), a: a.clone(), b: b.clone() };
    let bytes = lora_bytes(&LoraSpec::given(base.clone(), 3, 0.0, vec![tensor])).unwrap();
    let h = written(&dir, "given.gguf", &bytes);
    assert_eq!(values(&bytes, &h, "blk.0.attn_k.weight.lora_a"), a);
    assert_eq!(values(&bytes, &h, "blk.0.attn_k.weight.lora_b"), b);
    assert_eq!(h.get("adapter.lora.alpha"), Some(&MetaValue::F32(0.0)));

    let random = |seed| lora_bytes(&LoraSpec::random(base.clone(), 2, seed, &["output.weight"])).unwrap();
    assert_eq!(random(1), random(1), "the same seed gives the same bytes");
    assert_ne!(random(1), random(2), "another seed gives other values");
    let bytes = random(1);
    let h = written(&dir, "random.gguf", &bytes);
    let vals = values(&bytes, &h, "output.weight.lora_b");
    let std = (vals.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
    assert!((std - 0.05).abs() < 0.005, "std {std}");
}

fn invalid(r: Result<Vec<u8>, Error>) -> String {
    match r {
        Err(Error::InvalidSpec { reason, .. }) => reason,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[test]
fn bad_lora_specs_are_refused() {
    let base = ModelSpec::tiny_llama();
    assert!(invalid(lora_bytes(&LoraSpec::zeros(base.clone(), 2, &["blk.9.attn_q.weight"]))).contains("blk.9"));
    assert!(invalid(lora_bytes(&LoraSpec::zeros(base.clone(), 0, &["output.weight"]))).contains("at least 1"));
    assert!(
        invalid(lora_bytes(&LoraSpec::zeros(base.clone(), 2, &["output.weight", "output.weight"]))).contains("twice")
    );
    let short = LoraTensor { target: "output.weight".into(), a: vec![0.0; 10], b: vec![0.0; 2 * N_VOCAB as usize] };
    assert!(invalid(lora_bytes(&LoraSpec::given(base.clone(), 2, 1.0, vec![short]))).contains("10 values"));
    let nan = LoraSpec { alpha: f32::NAN, ..LoraSpec::zeros(base, 2, &["output.weight"]) };
    assert!(invalid(lora_bytes(&nan)).contains("not finite"));
}

#[test]
fn control_vector_files_hold_one_direction_per_layer() {
    let dir = test_dir("cvec");
    let base = ModelSpec::tiny_swa();
    let spec = ControlVectorSpec::random(&base, 1..=3, 11, 0.25);
    let path = dir.join("cv.gguf");
    write_control_vector(&spec, &path).unwrap();
    let bytes = fs::read(&path).unwrap();
    let h = written(&dir, "cv-check.gguf", &bytes);
    assert_eq!(h.get_str("controlvector.model_hint"), Some("gemma3"));
    assert_eq!(h.get("controlvector.layer_count"), Some(&MetaValue::I32(3)));
    assert_eq!(h.tensors.len(), 3);
    for (layer, direction) in &spec.directions {
        let name = format!("direction.{layer}");
        assert_eq!(h.tensor(&name).unwrap().dims, vec![128]);
        assert_eq!(&values(&bytes, &h, &name), direction);
    }
    assert_ne!(spec.directions[0].1, spec.directions[1].1, "each layer its own values");
    let zeros = ControlVectorSpec::zeros(&base, 2..=2);
    assert_eq!(zeros.directions, vec![(2, vec![0.0; 128])]);
}

#[test]
fn bad_control_vector_specs_are_refused() {
    let base = ModelSpec::tiny_llama();
    let mut zero_layer = ControlVectorSpec::zeros(&base, 1..=1);
    zero_layer.directions[0].0 = 0;
    assert!(invalid(control_vector_bytes(&zero_layer)).contains("layer 0"));
    let mut twice = ControlVectorSpec::zeros(&base, 1..=2);
    twice.directions[1].0 = 1;
    assert!(invalid(control_vector_bytes(&twice)).contains("twice"));
    let mut short = ControlVectorSpec::zeros(&base, 1..=1);
    short.directions[0].1.pop();
    assert!(invalid(control_vector_bytes(&short)).contains("127 values"));
}
