//! The reader and the validator on a small hand-written model header: it passes, and no
//! truncation or single-byte corruption of it makes either panic.

use llama_gguf::{Error, Gguf, Value, check_file, validate};

fn s(b: &mut Vec<u8>, x: &str) {
    b.extend_from_slice(&(x.len() as u64).to_le_bytes());
    b.extend_from_slice(x.as_bytes());
}

fn kv_u32(b: &mut Vec<u8>, k: &str, v: u32) {
    s(b, k);
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&v.to_le_bytes());
}

/// A `llama` model with two tokens and one 32x2 f32 tensor.
fn model() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&10u64.to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "llama");
    kv_u32(&mut b, "llama.context_length", 64);
    kv_u32(&mut b, "llama.embedding_length", 32);
    kv_u32(&mut b, "llama.block_count", 1);
    kv_u32(&mut b, "llama.attention.head_count", 1);
    s(&mut b, "llama.attention.layer_norm_rms_epsilon");
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&1e-5f32.to_le_bytes());
    s(&mut b, "tokenizer.ggml.model");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    s(&mut b, "<unk>");
    s(&mut b, "a");
    s(&mut b, "tokenizer.ggml.scores");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[0u8; 8]);
    s(&mut b, "tokenizer.ggml.add_bos_token");
    b.extend_from_slice(&7u32.to_le_bytes());
    b.push(1);
    s(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&32u64.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.resize(b.len().next_multiple_of(32), 0);
    b.resize(b.len() + 32 * 2 * 4, 0);
    b
}

#[test]
fn the_model_passes_and_reads_back() {
    let b = model();
    let g = Gguf::parse(&b).unwrap();
    validate(&g).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("llama"));
    let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap();
    assert_eq!(g.strings(tokens).collect::<Vec<_>>(), [&b"<unk>"[..], b"a"]);
    assert_eq!(g.tensors()[0].nbytes(), Some(256));
    assert_eq!(g.data_end(), Some(b.len() as u64));
    let path = std::env::temp_dir().join(format!("llama-gguf-robust-{}.gguf", std::process::id()));
    std::fs::write(&path, &b).unwrap();
    check_file(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(matches!(check_file(&path), Err(Error::Io { .. })));
}

#[test]
fn no_truncation_or_corruption_panics() {
    let b = model();
    let header = Gguf::parse(&b).unwrap().data_offset() as usize;
    for n in 0..b.len() {
        let r = Gguf::parse(&b[..n]).and_then(|g| validate(&g));
        assert!(r.is_err(), "prefix {n} should be refused");
    }
    for i in 0..header {
        for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut c = b.clone();
            c[i] = x;
            if let Ok(g) = Gguf::parse(&c) {
                let _ = validate(&g);
            }
            c[i] ^= 0x55;
            if let Ok(g) = Gguf::parse(&c) {
                let _ = validate(&g);
            }
        }
    }
}
