//! Deterministic normal samples from ChaCha8.
//!
//! Portability: the uniform variates come from raw ChaCha8 output words (value-stable across
//! platforms and `rand_chacha` releases) and the normal transform is Marsaglia's polar method
//! computed with IEEE arithmetic and `sqrt` only (both correctly rounded everywhere; Rust never
//! fuses multiply-adds on its own), with this module's own logarithm instead of the platform's
//! `ln`, so the same inputs give the same floats on every platform.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Domain separation for the key: changing it changes every generated weight.
const KEY_TAG: &[u8; 24] = b"tiny-gguf weights v1\0\0\0\0";

/// 64-bit FNV-1a hash, used to give every tensor its own ChaCha stream.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Natural logarithm of a positive, finite, normal `x`, accurate to about 1e-13 relative
/// (ample for f32 weights), using only basic IEEE operations so that its result is the same on
/// every platform.
///
/// `x = 2^k * m` with `m` in `[sqrt(1/2), sqrt(2))`; `ln(m) = 2 atanh(t)` with
/// `t = (m - 1) / (m + 1)`, `|t| < 0.172`, summed as an odd power series up to `t^15`.
#[inline]
pub(crate) fn ln(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    const SQRT2: f64 = std::f64::consts::SQRT_2;
    let bits = x.to_bits();
    let k = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > SQRT2;
    let (m, k) = if big { (m * 0.5, k + 1) } else { (m, k) };
    let f = m - 1.0;
    let t = f / (2.0 + f);
    let z = t * t;
    // 1/3 + z/5 + z^2/7 + ... + z^6/15, by Horner's rule.
    let mut p = 1.0 / 15.0;
    for d in [13.0, 11.0, 9.0, 7.0, 5.0, 3.0] {
        p = p * z + 1.0 / d;
    }
    f64::from(k) * LN2 + (2.0 * t + 2.0 * t * z * p)
}

/// `2^-31`: maps a `u32` to `[0, 2)`.
const U32_SCALE: f64 = 1.0 / 2_147_483_648.0;

/// The two uniforms in `[-1, 1)` drawn from one 64-bit word, and `s = u^2 + v^2`.
#[inline]
fn polar_candidate(r: u64) -> (f64, f64, f64) {
    let u = f64::from((r >> 32) as u32) * U32_SCALE - 1.0;
    let v = f64::from(r as u32) * U32_SCALE - 1.0;
    (u, v, u * u + v * v)
}

/// Standard-normal samples for one chunk of one tensor, by Marsaglia's polar method.
///
/// The sequence is defined by the scalar algorithm: draw a 64-bit word `r`, take `u` from its
/// high and `v` from its low 32 bits, accept when `0 < s = u^2 + v^2 < 1`, and emit
/// `u * f, v * f` with `f = sqrt(-2 ln(s) / s)`. [`Normal::fill`] computes the same values in
/// batches so that the CPU can overlap the independent candidates.
pub(crate) struct Normal {
    rng: ChaCha8Rng,
}

impl Normal {
    /// Generator for chunk `chunk` of the tensor whose stream id is `stream`.
    ///
    /// Chunks start 2^32 ChaCha words apart, far more than one chunk consumes, so every chunk
    /// can be generated independently (and in parallel) with identical results.
    pub(crate) fn new(seed: u64, stream: u64, chunk: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..].copy_from_slice(KEY_TAG);
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        rng.set_word_pos(u128::from(chunk) << 32);
        Normal { rng }
    }

    /// Appends the next `n` samples, each multiplied by `scale` and rounded to f32, to `out`.
    pub(crate) fn fill(&mut self, n: usize, scale: f64, out: &mut Vec<f32>) {
        const B: usize = 8;
        let target = out.len() + n;
        let mut pairs = [0.0f64; 2 * B];
        while out.len() < target {
            let mut u = [0.0f64; B];
            let mut v = [0.0f64; B];
            let mut s = [0.5f64; B];
            let mut ok = [false; B];
            for j in 0..B {
                let (uj, vj, sj) = polar_candidate(self.rng.next_u64());
                u[j] = uj;
                v[j] = vj;
                ok[j] = sj > 0.0 && sj < 1.0;
                if ok[j] {
                    s[j] = sj;
                }
            }
            let mut f = [0.0f64; B];
            for j in 0..B {
                f[j] = ln(s[j]);
            }
            for j in 0..B {
                f[j] = (-2.0 * f[j] / s[j]).sqrt();
            }
            let mut k = 0;
            for j in 0..B {
                pairs[k] = u[j] * f[j];
                pairs[k + 1] = v[j] * f[j];
                k += 2 * usize::from(ok[j]);
            }
            let take = k.min(target - out.len());
            out.extend(pairs[..take].iter().map(|&x| (x * scale) as f32));
        }
    }

    /// The scalar definition of the sequence (reference for tests).
    #[cfg(test)]
    fn sample_pair(&mut self) -> (f64, f64) {
        loop {
            let (u, v, s) = polar_candidate(self.rng.next_u64());
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * ln(s) / s).sqrt();
                return (u * f, v * f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std() {
        let mut x = 1e-19f64;
        while x < 1e6 {
            let (a, b) = (ln(x), x.ln());
            assert!((a - b).abs() <= 1e-13 * b.abs().max(1.0), "{x}: {a} vs {b}");
            x *= 1.0137;
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn moments_are_standard_normal() {
        let n = 200_000;
        let mut xs = Vec::new();
        Normal::new(7, 1, 0).fill(n as usize, 1.0, &mut xs);
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in xs.into_iter().map(f64::from) {
            s1 += x;
            s2 += x * x;
        }
        let mean = s1 / f64::from(n);
        let var = s2 / f64::from(n) - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn batched_fill_matches_scalar_definition() {
        for n in [0, 1, 2, 7, 15, 16, 17, 1000, 4097] {
            let mut batched = Vec::new();
            Normal::new(3, 9, 1).fill(n, 0.02, &mut batched);
            let mut g = Normal::new(3, 9, 1);
            let mut scalar = Vec::new();
            while scalar.len() < n {
                let (a, b) = g.sample_pair();
                scalar.push((a * 0.02) as f32);
                scalar.push((b * 0.02) as f32);
            }
            scalar.truncate(n);
            assert_eq!(batched, scalar, "n = {n}");
        }
        // Appends rather than overwrites.
        let mut v = vec![5.0];
        Normal::new(3, 9, 1).fill(3, 1.0, &mut v);
        assert_eq!((v.len(), v[0]), (4, 5.0));
    }

    #[test]
    fn streams_and_chunks_differ() {
        let first = |seed, stream, chunk| Normal::new(seed, stream, chunk).sample_pair().0;
        let a = first(1, 2, 3);
        assert_eq!(a, first(1, 2, 3));
        assert_ne!(a, first(2, 2, 3));
        assert_ne!(a, first(1, 3, 3));
        assert_ne!(a, first(1, 2, 4));
    }

    #[test]
    fn known_first_values() {
        // Pins the generator: a change here changes every generated model, so bump
        // GENERATOR_VERSION together with these values.
        let mut got = Vec::new();
        Normal::new(42, fnv1a(b"token_embd.weight"), 0).fill(4, 1.0, &mut got);
        assert_eq!(got, PINNED);
    }

    const PINNED: [f32; 4] = [-2.066_614_6, -0.698_318_7, 0.887_187_6, -0.628_479];
}
