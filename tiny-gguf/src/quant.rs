//! Ports of ggml's f32 → f16 conversion and reference block quantizers.
//!
//! Each function follows the scalar reference code of the pinned ggml
//! (`ggml_compute_fp32_to_fp16`, `quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`) operation by
//! operation in f32 arithmetic, so the bytes are identical to ggml's.

/// Elements per quantization block (`QK8_0` = `QK4_0` = 32).
const QK: usize = 32;

/// Bytes of one `block_q8_0`: f16 scale then 32 signed bytes.
pub(crate) const Q8_0_BLOCK_BYTES: usize = 2 + QK;

/// Bytes of one `block_q4_0`: f16 scale then 16 bytes of packed nibbles.
pub(crate) const Q4_0_BLOCK_BYTES: usize = 2 + QK / 2;

/// Converts an f32 to IEEE half-precision bits with round-to-nearest-even, exactly as ggml's
/// portable `ggml_compute_fp32_to_fp16` does (NaN becomes `0x7E00`, overflow becomes infinity).
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let magnitude = if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign };
    // `magnitude` fits in 15 bits for every input; the mask makes the narrowing explicit.
    ((sign >> 16) | (magnitude & 0x7FFF)) as u16
}

/// C's `roundf` (half away from zero) for `|x| < 2^23`, as an integer, without a libm call:
/// `x - trunc(x)` is exact there. NaN gives 0; larger values saturate like `as` casts do.
#[inline]
fn roundf_small(x: f32) -> i32 {
    let i = x as i32;
    let frac = x - i as f32;
    // Branch-free: the comparisons become set-on-condition instructions.
    i.saturating_add(i32::from(frac >= 0.5) - i32::from(frac <= -0.5))
}

/// Appends the blocks of `src` to `out`; a trailing partial block is padded with zeros.
fn for_each_block(src: &[f32], mut f: impl FnMut(&[f32; QK])) {
    let mut chunks = src.chunks_exact(QK);
    for chunk in chunks.by_ref() {
        let mut block = [0.0f32; QK];
        block.copy_from_slice(chunk);
        f(&block);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut block = [0.0f32; QK];
        block[..rest.len()].copy_from_slice(rest);
        f(&block);
    }
}

/// Quantizes `src` to ggml `block_q8_0` bytes (34 bytes per 32 values: little-endian f16 scale
/// `d = max|x| / 127`, then `round(x / d)` as i8), byte-identical to ggml's
/// `quantize_row_q8_0_ref`.
///
/// ggml requires a multiple of 32 values; here a trailing partial block is padded with zeros.
pub fn quantize_q8_0(src: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len().div_ceil(QK) * Q8_0_BLOCK_BYTES);
    quantize_q8_0_into(src, &mut out);
    out
}

/// Like [`quantize_q8_0`], appending to `out`.
pub(crate) fn quantize_q8_0_into(src: &[f32], out: &mut Vec<u8>) {
    for_each_block(src, |x| {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        out.extend(x.iter().map(|&v| (roundf_small(v * id) as i8) as u8));
    });
}

/// Quantizes `src` to ggml `block_q4_0` bytes (18 bytes per 32 values: little-endian f16 scale
/// `d = max / -8` where `max` is the value of largest magnitude, then 16 bytes whose low
/// nibbles hold values 0..16 and high nibbles values 16..32, each `min(15, trunc(x / d + 8.5))`),
/// byte-identical to ggml's `quantize_row_q4_0_ref`.
///
/// ggml requires a multiple of 32 values; here a trailing partial block is padded with zeros.
pub fn quantize_q4_0(src: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len().div_ceil(QK) * Q4_0_BLOCK_BYTES);
    quantize_q4_0_into(src, &mut out);
    out
}

/// Like [`quantize_q4_0`], appending to `out`.
pub(crate) fn quantize_q4_0_into(src: &[f32], out: &mut Vec<u8>) {
    for_each_block(src, |x| {
        // First value of largest magnitude, keeping its sign (strict `<` as in ggml).
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        // C: MIN(15, (int8_t)(x*id + 8.5f)); the cast truncates toward zero.
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..QK / 2 {
            out.push(q(x[j]) | (q(x[j + QK / 2]) << 4));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundf_small_matches_round() {
        let mut x = -300.0f32;
        while x < 300.0 {
            assert_eq!(roundf_small(x), x.round() as i32, "{x}");
            for y in [x.next_up(), x.next_down(), x + 0.5, x - 0.5] {
                assert_eq!(roundf_small(y), y.round() as i32, "{y}");
            }
            x += 0.125;
        }
        assert_eq!(roundf_small(f32::NAN), 0);
    }

    #[test]
    fn f16_known_values() {
        assert_eq!(f32_to_f16_bits(0.0), 0x0000);
        assert_eq!(f32_to_f16_bits(-0.0), 0x8000);
        assert_eq!(f32_to_f16_bits(1.0), 0x3C00);
        assert_eq!(f32_to_f16_bits(-2.0), 0xC000);
        assert_eq!(f32_to_f16_bits(65504.0), 0x7BFF);
        assert_eq!(f32_to_f16_bits(65520.0), 0x7C00); // rounds up to infinity
        assert_eq!(f32_to_f16_bits(f32::INFINITY), 0x7C00);
        assert_eq!(f32_to_f16_bits(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16_bits(f32::NAN), 0x7E00);
        // Smallest subnormal 2^-24, and half of it rounds to even (zero).
        assert_eq!(f32_to_f16_bits(5.960_464_5e-8), 0x0001);
        assert_eq!(f32_to_f16_bits(2.980_232_2e-8), 0x0000);
        // 1 + 2^-11 is a tie between 1.0 and 1 + 2^-10: rounds to even (1.0).
        assert_eq!(f32_to_f16_bits(1.0 + 1.0 / 2048.0), 0x3C00);
        // 1 + 3 * 2^-11 is a tie between 1 + 2^-10 and 1 + 2^-9: rounds to even (1 + 2^-9).
        assert_eq!(f32_to_f16_bits(1.0 + 3.0 / 2048.0), 0x3C02);
        assert_eq!(f32_to_f16_bits(0.1), 0x2E66);
    }

    #[test]
    fn f16_round_trips_every_finite_half() {
        // Every finite f16 value converts back to itself.
        for h in 0u16..=0xFFFF {
            let exp = (h >> 10) & 0x1F;
            if exp == 0x1F {
                continue;
            }
            let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
            let mant = f32::from(h & 0x3FF);
            let v = if exp == 0 {
                sign * mant * 2f32.powi(-24)
            } else {
                sign * (1.0 + mant / 1024.0) * 2f32.powi(i32::from(exp) - 15)
            };
            assert_eq!(f32_to_f16_bits(v), h, "{h:#06x} ({v})");
        }
    }
}
