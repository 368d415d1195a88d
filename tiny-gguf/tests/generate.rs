//! Generated files: layout, metadata, determinism, validation and caching.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tiny_gguf::{
    Arch, Error, GENERATOR_VERSION, MetaValue, ModelSpec, N_VOCAB, WeightType, cached, read_header, write_gguf,
};

/// A fresh, empty directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-gguf-tests").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn generate(spec: &ModelSpec, dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    write_gguf(spec, &path).unwrap();
    fs::read(path).unwrap()
}

fn tiny_specs() -> Vec<ModelSpec> {
    let mut specs = Vec::new();
    for base in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa(), ModelSpec::tiny_rerank()] {
        for weight_type in WeightType::ALL {
            specs.push(ModelSpec { weight_type, ..base.clone() });
        }
    }
    specs
}

/// Tensor names, ggml types and shapes, written out independently of the library's plan.
fn expected_tensors(s: &ModelSpec) -> Vec<(String, u32, Vec<u64>)> {
    let w = s.weight_type.ggml_type();
    let (e, hd) = (u64::from(s.n_embd), u64::from(s.n_embd / s.n_head));
    let (q, kv, v) = (u64::from(s.n_head) * hd, u64::from(s.n_head_kv) * hd, u64::from(N_VOCAB));
    let mut t = vec![
        ("token_embd.weight".to_string(), w, vec![e, v]),
        ("output_norm.weight".to_string(), 0, vec![e]),
        ("output.weight".to_string(), w, vec![e, v]),
    ];
    if !s.classifier_labels.is_empty() {
        t.push(("cls.output.weight".to_string(), w, vec![e, s.classifier_labels.len() as u64]));
    }
    for il in 0..s.n_layer {
        let mut add = |name: &str, ty: u32, ne: Vec<u64>| t.push((format!("blk.{il}.{name}"), ty, ne));
        add("attn_norm.weight", 0, vec![e]);
        add("attn_q.weight", w, vec![e, q]);
        add("attn_k.weight", w, vec![e, kv]);
        add("attn_v.weight", w, vec![e, kv]);
        add("attn_output.weight", w, vec![q, e]);
        if s.arch != Arch::Llama {
            add("attn_q_norm.weight", 0, vec![hd]);
            add("attn_k_norm.weight", 0, vec![hd]);
        }
        if s.arch == Arch::Gemma3 {
            add("post_attention_norm.weight", 0, vec![e]);
        }
        add("ffn_norm.weight", 0, vec![e]);
        if s.arch == Arch::Qwen3Moe {
            let (f, x) = (u64::from(s.n_ff_exp), u64::from(s.n_expert));
            add("ffn_gate_inp.weight", 0, vec![e, x]);
            add("ffn_gate_exps.weight", w, vec![e, f, x]);
            add("ffn_up_exps.weight", w, vec![e, f, x]);
            add("ffn_down_exps.weight", w, vec![f, e, x]);
        } else {
            let f = u64::from(s.n_ff);
            add("ffn_gate.weight", w, vec![e, f]);
            add("ffn_up.weight", w, vec![e, f]);
            add("ffn_down.weight", w, vec![f, e]);
        }
        if s.arch == Arch::Gemma3 {
            add("post_ffw_norm.weight", 0, vec![e]);
        }
    }
    t
}

/// Every metadata key with its GGUF type id (4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
/// 10 u64).
fn expected_keys(s: &ModelSpec) -> BTreeMap<String, u32> {
    let a = s.arch.name();
    let mut k: BTreeMap<String, u32> = [
        ("general.architecture", 8),
        ("general.name", 8),
        ("general.alignment", 4),
        ("general.file_type", 4),
        ("tiny_gguf.generator_version", 4),
        ("tiny_gguf.seed", 10),
        ("tokenizer.ggml.model", 8),
        ("tokenizer.ggml.tokens", 9),
        ("tokenizer.ggml.scores", 9),
        ("tokenizer.ggml.token_type", 9),
        ("tokenizer.ggml.bos_token_id", 4),
        ("tokenizer.ggml.eos_token_id", 4),
        ("tokenizer.ggml.unknown_token_id", 4),
        ("tokenizer.ggml.add_bos_token", 7),
        ("tokenizer.ggml.add_eos_token", 7),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_string(), t))
    .collect();
    let mut arch_keys = vec![
        ("context_length", 4),
        ("embedding_length", 4),
        ("block_count", 4),
        ("feed_forward_length", 4),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 4),
        ("attention.layer_norm_rms_epsilon", 6),
        ("rope.dimension_count", 4),
        ("rope.freq_base", 6),
    ];
    match s.arch {
        Arch::Llama => {}
        Arch::Qwen3Moe => arch_keys.extend([
            ("attention.key_length", 4),
            ("attention.value_length", 4),
            ("expert_count", 4),
            ("expert_used_count", 4),
            ("expert_feed_forward_length", 4),
        ]),
        Arch::Qwen3 => arch_keys.extend([("attention.key_length", 4), ("attention.value_length", 4)]),
        Arch::Gemma3 => arch_keys.extend([
            ("attention.key_length", 4),
            ("attention.value_length", 4),
            ("attention.sliding_window", 4),
            ("attention.sliding_window_pattern", 4),
            ("rope.freq_base_swa", 6),
        ]),
    }
    if !s.classifier_labels.is_empty() {
        arch_keys.extend([("pooling_type", 4), ("classifier.output_labels", 9)]);
    }
    k.extend(arch_keys.into_iter().map(|(n, t)| (format!("{a}.{n}"), t)));
    k
}

#[test]
fn files_parse_back_with_the_expected_layout() {
    let dir = test_dir("layout");
    for spec in tiny_specs() {
        let path = dir.join(format!("{}.gguf", spec.file_stem()));
        write_gguf(&spec, &path).unwrap();
        let h = read_header(&path).unwrap();
        let ctx = spec.file_stem();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"GGUF", "{ctx}");
        assert_eq!(h.version, 3, "{ctx}");
        assert_eq!(h.alignment, 32, "{ctx}");
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), h.tensors.len() as u64);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), h.metadata.len() as u64);

        // Metadata: exactly the expected keys, with the expected types, no duplicates.
        let got: BTreeMap<String, u32> = h.metadata.iter().map(|(k, v)| (k.clone(), v.type_id())).collect();
        assert_eq!(got.len(), h.metadata.len(), "{ctx}: duplicate keys");
        assert_eq!(got, expected_keys(&spec), "{ctx}");

        // Tensors: names, types, shapes in order; offsets contiguous and aligned.
        let got: Vec<(String, u32, Vec<u64>)> =
            h.tensors.iter().map(|t| (t.name.clone(), t.ggml_type, t.dims.clone())).collect();
        assert_eq!(got, expected_tensors(&spec), "{ctx}");
        let mut expect_offset = 0;
        for t in &h.tensors {
            assert_eq!(t.offset, expect_offset, "{ctx}: {}", t.name);
            assert_eq!(t.offset % 32, 0, "{ctx}: {}", t.name);
            assert!(t.name.len() < 64, "{ctx}: {} is too long for ggml", t.name);
            assert_eq!(t.dims[0] % WeightType::from_ggml_type(t.ggml_type).unwrap().block_len(), 0);
            expect_offset += t.nbytes().unwrap().next_multiple_of(32);
        }
        assert_eq!(h.data_offset % 32, 0, "{ctx}");
        assert_eq!(h.data_end(), Some(h.file_size), "{ctx}");
        assert_eq!(h.file_size, bytes.len() as u64, "{ctx}");
        assert_eq!(h.file_size, spec.file_size().unwrap(), "{ctx}");
        // The padding between the tensor infos and the data is zeros.
        let infos_end = h.data_offset as usize - (h.data_offset as usize % 32);
        assert!(bytes[infos_end..h.data_offset as usize].iter().all(|&b| b == 0));
    }
}

#[test]
fn metadata_values_match_the_spec() {
    let dir = test_dir("metadata");
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
        let path = dir.join("m.gguf");
        write_gguf(&spec, &path).unwrap();
        let h = read_header(&path).unwrap();
        let a = spec.arch.name();
        let u = |k: &str| h.get_u32(k).unwrap_or_else(|| panic!("{k} missing or not u32"));
        assert_eq!(h.get_str("general.architecture"), Some(a));
        assert_eq!(u("general.file_type"), spec.weight_type.file_type());
        assert_eq!(u("general.alignment"), 32);
        assert_eq!(u("tiny_gguf.generator_version"), GENERATOR_VERSION);
        assert_eq!(u(&format!("{a}.embedding_length")), spec.n_embd);
        assert_eq!(u(&format!("{a}.block_count")), spec.n_layer);
        assert_eq!(u(&format!("{a}.context_length")), spec.context_length);
        assert_eq!(u(&format!("{a}.attention.head_count")), spec.n_head);
        assert_eq!(u(&format!("{a}.attention.head_count_kv")), spec.n_head_kv);
        assert_eq!(u(&format!("{a}.rope.dimension_count")), spec.head_dim());
        assert!(matches!(
            h.get(&format!("{a}.attention.layer_norm_rms_epsilon")),
            Some(MetaValue::F32(e)) if *e > 0.0 && *e < 1e-4
        ));
        match spec.arch {
            Arch::Qwen3Moe => {
                assert_eq!(u("qwen3moe.expert_count"), spec.n_expert);
                assert_eq!(u("qwen3moe.expert_used_count"), spec.n_expert_used);
                assert_eq!(u("qwen3moe.expert_feed_forward_length"), spec.n_ff_exp);
            }
            Arch::Gemma3 => {
                assert_eq!(u("gemma3.attention.sliding_window"), spec.sliding_window);
                assert_eq!(u("gemma3.attention.sliding_window_pattern"), spec.sliding_window_pattern);
                assert_eq!(u("gemma3.feed_forward_length"), spec.n_ff);
            }
            Arch::Llama => assert_eq!(u("llama.feed_forward_length"), spec.n_ff),
            Arch::Qwen3 => assert_eq!(u("qwen3.feed_forward_length"), spec.n_ff),
        }
        if !spec.classifier_labels.is_empty() {
            assert_eq!(u(&format!("{a}.pooling_type")), 4);
            let labels: Vec<MetaValue> = spec.classifier_labels.iter().map(|l| MetaValue::String(l.clone())).collect();
            assert_eq!(h.get(&format!("{a}.classifier.output_labels")), Some(&MetaValue::Array(8, labels)));
        }

        // Vocabulary.
        assert_eq!(h.get_str("tokenizer.ggml.model"), Some("llama"));
        let Some(MetaValue::Array(8, tokens)) = h.get("tokenizer.ggml.tokens") else { panic!("tokens") };
        assert_eq!(tokens.len(), N_VOCAB as usize);
        assert_eq!(tokens[0], MetaValue::String("<unk>".into()));
        assert_eq!(tokens[1], MetaValue::String("<s>".into()));
        assert_eq!(tokens[2], MetaValue::String("</s>".into()));
        assert_eq!(tokens[3], MetaValue::String("<0x00>".into()));
        assert_eq!(tokens[3 + 0x41], MetaValue::String("<0x41>".into()));
        assert_eq!(tokens[258], MetaValue::String("<0xFF>".into()));
        let Some(MetaValue::Array(6, scores)) = h.get("tokenizer.ggml.scores") else {
            panic!("scores must be an f32 array")
        };
        assert_eq!(scores.len(), N_VOCAB as usize);
        assert!(scores.iter().all(|s| *s == MetaValue::F32(0.0)));
        let Some(MetaValue::Array(5, types)) = h.get("tokenizer.ggml.token_type") else {
            panic!("token_type must be an i32 array")
        };
        let types: Vec<i32> = types
            .iter()
            .map(|t| match t {
                MetaValue::I32(v) => *v,
                _ => panic!("not i32"),
            })
            .collect();
        assert_eq!(types[..3], [2, 3, 3]);
        assert!(types[3..259].iter().all(|&t| t == 6));
        assert_eq!(types[259], 1, "the word-boundary token is a normal token");
        assert_eq!(types.len(), N_VOCAB as usize);
        assert_eq!(u("tokenizer.ggml.bos_token_id"), 1);
        assert_eq!(u("tokenizer.ggml.eos_token_id"), 2);
        assert_eq!(u("tokenizer.ggml.unknown_token_id"), 0);
        assert_eq!(h.get("tokenizer.ggml.add_bos_token"), Some(&MetaValue::Bool(true)));
    }
}

#[test]
fn same_spec_gives_identical_bytes_and_any_change_differs() {
    let dir = test_dir("determinism");
    for spec in tiny_specs() {
        let a = generate(&spec, &dir, "a.gguf");
        let b = generate(&spec, &dir, "b.gguf");
        assert!(a == b, "{}: two runs differ", spec.file_stem());
        let reseeded = ModelSpec { seed: spec.seed + 1, ..spec.clone() };
        let c = generate(&reseeded, &dir, "c.gguf");
        assert_eq!(a.len(), c.len());
        assert!(a != c, "{}: seed does not matter", spec.file_stem());
        // Only tensor data and the name/seed keys differ, not the layout.
        let (ha, hc) = (read_header(&dir.join("a.gguf")).unwrap(), read_header(&dir.join("c.gguf")).unwrap());
        assert_eq!(ha.tensors, hc.tensors);
    }
}

#[test]
fn weights_are_random_and_norms_are_ones() {
    let dir = test_dir("values");
    let spec = ModelSpec { weight_type: WeightType::F32, ..ModelSpec::tiny_moe() };
    let path = dir.join("f32.gguf");
    write_gguf(&spec, &path).unwrap();
    let h = read_header(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    let values = |name: &str| -> Vec<f32> {
        let t = h.tensor(name).unwrap();
        let start = (h.data_offset + t.offset) as usize;
        bytes[start..start + t.nbytes().unwrap() as usize]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert!(values("output_norm.weight").iter().all(|&v| v == 1.0));
    assert!(values("blk.1.attn_k_norm.weight").iter().all(|&v| v == 1.0));
    for name in ["token_embd.weight", "output.weight", "blk.0.ffn_gate_inp.weight", "blk.1.ffn_down_exps.weight"] {
        let v = values(name);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let std = (v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.002, "{name}: mean {mean}");
        assert!((std - 0.02).abs() < 0.002, "{name}: std {std}");
    }
    // Separate streams: the embedding and the output matrix are not the same values.
    assert_ne!(values("token_embd.weight"), values("output.weight"));
}

#[test]
fn ignored_fields_change_nothing() {
    let dir = test_dir("ignored");
    let moe = ModelSpec::tiny_moe();
    let moe2 = ModelSpec { n_ff: 999, sliding_window: 5, sliding_window_pattern: 3, ..moe.clone() };
    assert_eq!(moe.file_stem(), moe2.file_stem());
    assert!(generate(&moe, &dir, "a") == generate(&moe2, &dir, "b"));
    let llama = ModelSpec::tiny_llama();
    let llama2 = ModelSpec { n_expert: 7, n_expert_used: 9, n_ff_exp: 3, ..llama.clone() };
    assert_eq!(llama.file_stem(), llama2.file_stem());
    assert!(generate(&llama, &dir, "a") == generate(&llama2, &dir, "b"));
}

#[test]
fn file_stems_are_distinct_and_stable() {
    assert_eq!(ModelSpec::bench_moe().file_stem(), "qwen3moe-q8_0-e512-l6-h8-kv4-x8u2-f768-c4096-s42");
    assert_eq!(ModelSpec::tiny_llama().file_stem(), "llama-f16-e128-l2-h4-kv2-f256-c2048-s42");
    assert_eq!(ModelSpec::tiny_swa().file_stem(), "gemma3-q8_0-e128-l4-h4-kv2-f256-w128p2-c2048-s42");
    let base = ModelSpec::tiny_swa();
    let variants = [
        ModelSpec { weight_type: WeightType::Q4_0, ..base.clone() },
        ModelSpec { seed: 1, ..base.clone() },
        ModelSpec { n_embd: 256, ..base.clone() },
        ModelSpec { n_layer: 3, ..base.clone() },
        ModelSpec { n_head: 8, ..base.clone() },
        ModelSpec { n_head_kv: 4, ..base.clone() },
        ModelSpec { n_ff: 512, ..base.clone() },
        ModelSpec { context_length: 4096, ..base.clone() },
        ModelSpec { sliding_window: 64, ..base.clone() },
        ModelSpec { sliding_window_pattern: 3, ..base.clone() },
        ModelSpec { arch: Arch::Llama, ..base.clone() },
    ];
    let mut stems: Vec<String> = variants.iter().map(ModelSpec::file_stem).collect();
    stems.push(base.file_stem());
    let n = stems.len();
    stems.sort();
    stems.dedup();
    assert_eq!(stems.len(), n);
    let moe = ModelSpec::tiny_moe();
    for v in [
        ModelSpec { n_expert: 8, ..moe.clone() },
        ModelSpec { n_expert_used: 1, ..moe.clone() },
        ModelSpec { n_ff_exp: 512, ..moe.clone() },
    ] {
        assert_ne!(v.file_stem(), moe.file_stem());
    }
}

#[test]
fn presets_are_valid_and_sized_as_documented() {
    let mb = |s: &ModelSpec| s.file_size().unwrap() as f64 / 1e6;
    assert!(mb(&ModelSpec::tiny_llama()) < 2.0);
    assert!(mb(&ModelSpec::tiny_moe()) < 4.0);
    assert!(mb(&ModelSpec::tiny_swa()) < 2.0);
    assert!((50.0..80.0).contains(&mb(&ModelSpec::bench_moe())));
    assert!((250.0..350.0).contains(&mb(&ModelSpec::large_moe())));
    for s in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
        assert_eq!(s.head_dim(), 32);
    }
    // The SWA preset has both kinds of layers.
    let swa = ModelSpec::tiny_swa();
    let kinds: Vec<bool> = (0..swa.n_layer).map(|il| swa.is_swa_layer(il)).collect();
    assert!(kinds.contains(&true) && kinds.contains(&false), "{kinds:?}");
    assert!(!ModelSpec::tiny_llama().is_swa_layer(0));
}

fn rejected(spec: ModelSpec, field: &str) {
    match spec.validate() {
        Err(e @ Error::InvalidSpec { field: f, .. }) => {
            assert_eq!(f, field, "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
        other => panic!("expected {field} to be rejected, got {other:?}"),
    }
}

#[test]
fn validate_rejects_bad_specs_naming_the_field() {
    let l = ModelSpec::tiny_llama();
    let m = ModelSpec::tiny_moe();
    let g = ModelSpec::tiny_swa();
    rejected(ModelSpec { n_embd: 0, ..l.clone() }, "n_embd");
    rejected(ModelSpec { n_layer: 0, ..l.clone() }, "n_layer");
    rejected(ModelSpec { n_layer: 513, ..l.clone() }, "n_layer");
    rejected(ModelSpec { n_head: 0, ..l.clone() }, "n_head");
    rejected(ModelSpec { n_head: 3, n_head_kv: 1, ..l.clone() }, "n_head"); // 128 % 3
    rejected(ModelSpec { n_embd: 96, n_head: 32, n_head_kv: 32, ..l.clone() }, "n_head"); // odd head dim
    rejected(ModelSpec { n_head_kv: 0, ..l.clone() }, "n_head_kv");
    rejected(ModelSpec { n_head_kv: 3, ..l.clone() }, "n_head_kv");
    rejected(ModelSpec { n_ff: 0, ..l.clone() }, "n_ff");
    rejected(ModelSpec { context_length: 0, ..l.clone() }, "context_length");
    rejected(ModelSpec { weight_type: WeightType::Q8_0, n_ff: 200, ..l.clone() }, "n_ff");
    rejected(ModelSpec { weight_type: WeightType::Q4_0, n_embd: 144, n_head: 4, ..l.clone() }, "n_embd");
    rejected(ModelSpec { n_ff: 0, ..g.clone() }, "n_ff");
    rejected(ModelSpec { sliding_window_pattern: 0, ..g.clone() }, "sliding_window_pattern");
    rejected(ModelSpec { n_expert: 0, ..m.clone() }, "n_expert");
    rejected(ModelSpec { n_expert: 513, ..m.clone() }, "n_expert");
    rejected(ModelSpec { n_expert_used: 0, ..m.clone() }, "n_expert_used");
    rejected(ModelSpec { n_expert_used: 5, ..m.clone() }, "n_expert_used");
    rejected(ModelSpec { n_ff_exp: 0, ..m.clone() }, "n_ff_exp");
    rejected(ModelSpec { n_ff_exp: 100, ..m.clone() }, "n_ff_exp");
    rejected(
        ModelSpec {
            n_embd: u32::MAX - 31,
            n_head: 1,
            n_head_kv: 1,
            n_expert: 512,
            n_ff_exp: u32::MAX - 31,
            ..m.clone()
        },
        "n_embd",
    );

    // Accepted: float types have no multiple-of-32 rule, and a head dimension of 16 is allowed
    // (llama.cpp loads it; only quantized KV caches refuse it).
    ModelSpec { weight_type: WeightType::F16, n_ff: 200, ..l.clone() }.validate().unwrap();
    ModelSpec { n_embd: 64, ..l.clone() }.validate().unwrap();
    ModelSpec { sliding_window: 0, sliding_window_pattern: 0, ..g.clone() }.validate().unwrap();

    // Nothing is written for an invalid spec.
    let dir = test_dir("invalid");
    let err = write_gguf(&ModelSpec { n_head_kv: 3, ..l.clone() }, &dir.join("x.gguf")).unwrap_err();
    assert!(err.to_string().contains("n_head_kv"), "{err}");
    assert!(cached(&ModelSpec { n_layer: 0, ..l }, &dir).is_err());
    assert!(files_in(&dir).is_empty());
}

#[test]
fn parsing_weight_types_and_archs() {
    assert_eq!("q8_0".parse::<WeightType>().unwrap(), WeightType::Q8_0);
    assert_eq!("F16".parse::<WeightType>().unwrap(), WeightType::F16);
    assert_eq!("gemma3".parse::<Arch>().unwrap(), Arch::Gemma3);
    let e = "q5_k".parse::<WeightType>().unwrap_err();
    assert!(matches!(e, Error::InvalidSpec { field: "weight_type", .. }), "{e}");
    assert!("mistral".parse::<Arch>().is_err());
}

#[test]
fn cached_generates_once_and_leaves_no_temp_files() {
    let dir = test_dir("cached").join("nested");
    let spec = ModelSpec::tiny_moe();
    let path = cached(&spec, &dir).unwrap();
    assert_eq!(path, dir.join(format!("{}.gguf", spec.file_stem())));
    let m1 = fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(cached(&spec, &dir).unwrap(), path);
    let m2 = fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(m1, m2, "the second call rewrote the file");
    assert_eq!(files_in(&dir), vec![format!("{}.gguf", spec.file_stem())]);

    // A second spec in the same directory.
    let other = cached(&ModelSpec::tiny_llama(), &dir).unwrap();
    assert_ne!(other, path);
    assert_eq!(files_in(&dir).len(), 2);

    // A truncated or stale file is regenerated.
    let good = fs::read(&path).unwrap();
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    cached(&spec, &dir).unwrap();
    assert!(fs::read(&path).unwrap() == good);
    let mut stale = good.clone();
    let pos = stale.windows(4).position(|w| w == b"tiny").unwrap(); // "tiny-gguf <stem>" name
    stale[pos] = b'T';
    fs::write(&path, &stale).unwrap();
    cached(&spec, &dir).unwrap();
    assert!(fs::read(&path).unwrap() == good);
    assert_eq!(files_in(&dir).len(), 2);
}

#[test]
fn concurrent_cached_calls_agree() {
    let dir = test_dir("race");
    let spec = ModelSpec::tiny_swa();
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| cached(&spec, &dir).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(files_in(&dir), vec![format!("{}.gguf", spec.file_stem())]);
    assert_eq!(fs::metadata(&paths[0]).unwrap().len(), spec.file_size().unwrap());
}

#[test]
fn write_errors_are_reported_with_the_path_and_leave_nothing() {
    let dir = test_dir("errors");
    let missing = dir.join("no-such-dir").join("m.gguf");
    let err = write_gguf(&ModelSpec::tiny_llama(), &missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    // Writing over a directory fails at the rename; the temporary file is removed.
    fs::create_dir(dir.join("taken.gguf")).unwrap();
    let err = write_gguf(&ModelSpec::tiny_llama(), &dir.join("taken.gguf")).unwrap_err();
    assert!(err.to_string().contains("taken.gguf"), "{err}");
    assert_eq!(files_in(&dir), vec!["taken.gguf".to_string()]);
    // Overwriting an existing file replaces it.
    let target = dir.join("m.gguf");
    fs::write(&target, b"old").unwrap();
    write_gguf(&ModelSpec::tiny_llama(), &target).unwrap();
    assert_eq!(fs::metadata(&target).unwrap().len(), ModelSpec::tiny_llama().file_size().unwrap());
}

#[test]
fn read_header_rejects_malformed_files() {
    let dir = test_dir("malformed");
    let good_path = dir.join("good.gguf");
    write_gguf(&ModelSpec::tiny_llama(), &good_path).unwrap();
    let good = fs::read(&good_path).unwrap();
    let check = |name: &str, bytes: &[u8], needle: &str| {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        let err = read_header(&p).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{name}: {err}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
    };
    check("empty", b"", "end of file");
    check("magic", b"GGML\x03\0\0\0", "magic");
    let mut v = good.clone();
    v[4] = 9;
    check("version", &v, "version 9");
    check("truncated", &good[..1000], "does not fit in the file");
    check("truncated-later", &good[..h_len(&good_path) - 40], "end of file");
    let mut huge = good[..24].to_vec();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    check("huge-count", &huge, "count");
    // The header alone (without data) still parses; data_end then exceeds the file size.
    let h = read_header(&good_path).unwrap();
    let p = dir.join("nodata.gguf");
    fs::write(&p, &good[..h.data_offset as usize]).unwrap();
    let h2 = read_header(&p).unwrap();
    assert!(h2.data_end().unwrap() > h2.file_size);
    let err = read_header(&dir.join("absent.gguf")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

/// Length of the metadata and tensor infos (the data offset before padding, give or take).
fn h_len(path: &Path) -> usize {
    read_header(path).unwrap().data_offset as usize
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiny-gguf"))
}

#[test]
fn cli_writes_files_and_rejects_bad_arguments() {
    let dir = test_dir("cli");
    let out = dir.join("x.gguf");
    let o = bin()
        .args(["--preset", "tiny-moe", "--weight-type", "q4_0", "--seed", "7", "--layers", "1", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = ModelSpec { weight_type: WeightType::Q4_0, seed: 7, n_layer: 1, ..ModelSpec::tiny_moe() };
    assert!(fs::read(&out).unwrap() == generate(&spec, &dir, "lib.gguf"));

    let o = bin().args(["--preset", "tiny-swa", "--out-dir"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8(o.stdout).unwrap();
    let expected = dir.join(format!("{}.gguf", ModelSpec::tiny_swa().file_stem()));
    assert_eq!(printed.trim(), expected.to_str().unwrap());
    assert!(expected.is_file());

    let bad: [&[&str]; 6] = [
        &["--preset", "tiny-llama", "--heads", "3", "-o", "y.gguf"],
        &["--preset", "nope", "-o", "y.gguf"],
        &["--preset", "tiny-llama"],
        &["--preset", "tiny-llama", "--layers", "-1", "-o", "y.gguf"],
        &["--preset", "tiny-moe", "--experts-used", "9", "-o", "y.gguf"],
        &["--preset", "tiny-llama", "--weight-type", "q5_k", "-o", "y.gguf"],
    ];
    for args in bad {
        let o = bin().args(args).current_dir(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
    }
    let o = bin().args(["--preset", "tiny-llama", "--heads", "3", "-o", "y.gguf"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("n_head"));
    assert!(!dir.join("y.gguf").exists());
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[test]
fn golden_file_hashes() {
    // The exact bytes are part of the contract (same spec -> same file on every platform and
    // run). If a change here is intended, bump GENERATOR_VERSION and update the hashes.
    let dir = test_dir("golden");
    let got: Vec<(String, u64)> = [
        ModelSpec::tiny_llama(),
        ModelSpec::tiny_moe(),
        ModelSpec::tiny_swa(),
        ModelSpec { weight_type: WeightType::Q4_0, ..ModelSpec::tiny_llama() },
    ]
    .iter()
    .map(|s| (s.file_stem(), fnv1a(&generate(s, &dir, "g.gguf"))))
    .collect();
    let expected = [
        ("llama-f16-e128-l2-h4-kv2-f256-c2048-s42", 0x0ECE_17FC_9A8E_832Fu64),
        ("qwen3moe-q8_0-e128-l2-h4-kv2-x4u2-f256-c2048-s42", 0x5021_6127_8024_1C2B),
        ("gemma3-q8_0-e128-l4-h4-kv2-f256-w128p2-c2048-s42", 0xA402_291E_39FA_0417),
        ("llama-q4_0-e128-l2-h4-kv2-f256-c2048-s42", 0x2897_D78E_D288_FE89),
    ]
    .map(|(s, h)| (s.to_string(), h));
    assert_eq!(got, expected, "generator output changed");
}

#[test]
fn chat_template_is_written_and_named() {
    let dir = test_dir("chat-template");
    let template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}".to_string();
    let plain = ModelSpec::tiny_llama();
    let with = ModelSpec { chat_template: Some(template.clone()), ..plain.clone() };
    let other = ModelSpec { chat_template: Some(format!("{template} ")), ..plain.clone() };
    assert!(with.file_stem().starts_with(&plain.file_stem()), "{}", with.file_stem());
    assert!(with.file_stem().contains("-t"), "{}", with.file_stem());
    assert_ne!(with.file_stem(), other.file_stem());
    // Stable across platforms and releases: the hash is FNV-1a, not std's hasher.
    assert_eq!(
        ModelSpec { chat_template: Some("x".into()), ..plain.clone() }.file_stem(),
        "llama-f16-e128-l2-h4-kv2-f256-c2048-s42-taf63f54c86021707"
    );
    let path = tiny_gguf::cached(&with, &dir).unwrap();
    let header = tiny_gguf::read_header(&path).unwrap();
    assert_eq!(header.get_str("tokenizer.chat_template"), Some(template.as_str()));
    assert_eq!(header.file_size, with.file_size().unwrap());
    let path = tiny_gguf::cached(&plain, &dir).unwrap();
    assert_eq!(tiny_gguf::read_header(&path).unwrap().get_str("tokenizer.chat_template"), None);
}
