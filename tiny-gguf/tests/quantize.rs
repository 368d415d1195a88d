//! Quantizer outputs on small vectors, against block bytes derived by hand from ggml's
//! reference algorithms (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`).

use tiny_gguf::{f32_to_f16_bits, quantize_q4_0, quantize_q8_0};

#[test]
fn q8_0_zeros() {
    // amax = 0 -> d = 0 (f16 0x0000), id = 0, every q = 0.
    assert_eq!(quantize_q8_0(&[0.0; 32]), vec![0u8; 34]);
}

#[test]
fn q8_0_ramp() {
    // x_j = j: amax = 31, d = 31/127 = 0.2441 -> f16 0x33D0 (1.953 * 2^-3, mantissa 976),
    // q_j = round(127 j / 31).
    let x: Vec<f32> = (0..32).map(|j| j as f32).collect();
    let mut expected = vec![0xD0, 0x33];
    expected.extend([
        0u8, 4, 8, 12, 16, 20, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 66, 70, 74, 78, 82, 86, 90, 94, 98, 102, 107,
        111, 115, 119, 123, 127,
    ]);
    assert_eq!(quantize_q8_0(&x), expected);
}

#[test]
fn q8_0_negative_max() {
    // x_j = k_j / 4 with k_j = (7 j mod 15) - 7, except x_10 = -4: amax = 4,
    // d = 4/127 -> f16 0x2808, id = 31.75, so q = 8 k for |k| <= 7 and x_10 -> -127 (0x81).
    let mut x: Vec<f32> = (0..32).map(|j| ((7 * j) % 15 - 7) as f32 * 0.25).collect();
    x[10] = -4.0;
    let expected = [
        0x08, 0x28, 0xC8, 0x00, 0x38, 0xF8, 0x30, 0xF0, 0x28, 0xE8, 0x20, 0xE0, 0x81, 0xD8, 0x10, 0xD0, 0x08, 0xC8,
        0x00, 0x38, 0xF8, 0x30, 0xF0, 0x28, 0xE8, 0x20, 0xE0, 0x18, 0xD8, 0x10, 0xD0, 0x08, 0xC8, 0x00,
    ];
    assert_eq!(quantize_q8_0(&x), expected);
}

#[test]
fn q8_0_blocks_are_independent_and_partial_blocks_are_zero_padded() {
    let ramp: Vec<f32> = (0..32).map(|j| j as f32).collect();
    let mut two = ramp.clone();
    two.extend([0.0; 32]);
    let out = quantize_q8_0(&two);
    assert_eq!(out.len(), 68);
    assert_eq!(out[..34], quantize_q8_0(&ramp)[..]);
    assert_eq!(out[34..], [0u8; 34]);

    // 40 values: the second block is x[32..40] followed by 24 zeros.
    let mut partial = ramp.clone();
    partial.extend([1.0; 8]);
    let mut padded = partial.clone();
    padded.resize(64, 0.0);
    assert_eq!(quantize_q8_0(&partial), quantize_q8_0(&padded));
    assert!(quantize_q8_0(&[]).is_empty());
}

#[test]
fn q4_0_zeros() {
    // max = 0, d = 0 / -8 = -0.0 (f16 0x8000, as in ggml), id = 0, q = trunc(0 + 8.5) = 8 in
    // both nibbles.
    let mut expected = vec![0x00, 0x80];
    expected.extend([0x88; 16]);
    assert_eq!(quantize_q4_0(&[0.0; 32]), expected);
}

#[test]
fn q4_0_negative_max() {
    // max = -8 (x_0) -> d = 1 (f16 0x3C00), id = 1, q = min(15, trunc(x + 8.5)).
    // Low nibbles: x_j = j - 8 -> q = j. High nibbles from the second half, annotated.
    let mut x: Vec<f32> = (0..16).map(|j| j as f32 - 8.0).collect();
    x.extend([
        7.4,   // 15.9 -> 15
        7.6,   // 16.1 -> 16, clamped to 15
        -7.6,  // 0.9 -> 0
        0.49,  // 8.99 -> 8
        0.5,   // 9.0 -> 9
        -0.5,  // 8.0 -> 8
        -0.51, // 7.99 -> 7
        3.0,   // 11.5 -> 11
        -3.0,  // 5.5 -> 5
        6.9,   // 15.4 -> 15
        -2.2,  // 6.3 -> 6
        1.1,   // 9.6 -> 9
        0.0,   // 8.5 -> 8
        5.5,   // 14.0 -> 14
        -5.5,  // 3.0 -> 3
        7.0,   // 15.5 -> 15
    ]);
    let expected =
        [0x00, 0x3C, 0xF0, 0xF1, 0x02, 0x83, 0x94, 0x85, 0x76, 0xB7, 0x58, 0xF9, 0x6A, 0x9B, 0x8C, 0xED, 0x3E, 0xFF];
    assert_eq!(quantize_q4_0(&x), expected);
}

#[test]
fn q4_0_positive_max_gives_negative_scale() {
    // x_j = j / 2: max = 15.5 -> d = -1.9375 (f16 0xBFC0), q_j = trunc(8.5 - 0.258 j):
    // 8 8 7 7 7 7 6 6 6 6 5 5 5 5 4 4 | 4 4 3 3 3 3 2 2 2 2 1 1 1 1 0 0.
    let x: Vec<f32> = (0..32).map(|j| j as f32 * 0.5).collect();
    let expected =
        [0xC0, 0xBF, 0x48, 0x48, 0x37, 0x37, 0x37, 0x37, 0x26, 0x26, 0x26, 0x26, 0x15, 0x15, 0x15, 0x15, 0x04, 0x04];
    assert_eq!(quantize_q4_0(&x), expected);
    assert_eq!(quantize_q4_0(&x[..20]).len(), 18);
}

#[test]
fn q4_0_keeps_the_first_of_equal_magnitudes() {
    // +2 comes before -2: max = +2, d = -0.25, so +2 -> trunc(-8 + 8.5) = 0 and -2 -> 16 -> 15.
    let mut x = [0.0f32; 32];
    x[0] = 2.0;
    x[1] = -2.0;
    let out = quantize_q4_0(&x);
    assert_eq!(u16::from_le_bytes([out[0], out[1]]), f32_to_f16_bits(-0.25));
    assert_eq!(out[2] & 0x0F, 0);
    assert_eq!(out[3] & 0x0F, 15);
}
