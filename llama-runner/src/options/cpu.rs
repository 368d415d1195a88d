//! [`CpuMask`]: a checked set of CPUs for a ggml threadpool (`-C`, `-Cr`).

use std::fmt;

/// Number of CPUs a ggml threadpool mask can name (`GGML_MAX_N_THREADS`).
pub const MAX_CPUS: usize = llama_sys::GGML_MAX_N_THREADS as usize;

/// Hex digits of a mask llama.cpp reads (`parse_cpu_mask` stops after this many).
pub const MAX_MASK_DIGITS: usize = MAX_CPUS / 4;

/// A set of CPUs, at most [`MAX_CPUS`], as a ggml threadpool takes it (`cpumask[i]`: CPU `i`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CpuMask {
    cpus: Box<[bool; MAX_CPUS]>,
}

/// Why a CPU mask was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuMaskError {
    /// Nothing after the optional `0x`.
    #[error("`{mask}` has no hex digits")]
    NoHexDigits {
        /// The mask as given.
        mask: String,
    },
    /// More hex digits than [`MAX_CPUS`] CPUs.
    #[error("`{mask}` names more than {MAX_CPUS} CPUs")]
    TooManyCpus {
        /// The mask as given.
        mask: String,
    },
    /// A character that is not a hex digit.
    #[error("`{mask}`: `{digit}` is not a hex digit")]
    NotHex {
        /// The mask as given.
        mask: String,
        /// The first character that is not a hex digit.
        digit: char,
    },
    /// No bit set.
    #[error("`{mask}` selects no CPU")]
    NoCpu {
        /// The mask as given.
        mask: String,
    },
}

impl Default for CpuMask {
    fn default() -> Self {
        CpuMask { cpus: Box::new([false; MAX_CPUS]) }
    }
}

impl CpuMask {
    /// The mask of an option value ([`ThreadPlacement::cpu_mask`](crate::ThreadPlacement)):
    /// hex digits, an optional `0x` or `0X`, the last digit naming CPUs 0-3; at least one CPU.
    /// Stricter than llama.cpp's `-C` (see [`CpuMask::parse_flag`]), which takes what it can.
    pub fn parse(mask: &str) -> Result<CpuMask, CpuMaskError> {
        let hex = mask.strip_prefix("0x").or_else(|| mask.strip_prefix("0X")).unwrap_or(mask);
        if hex.is_empty() {
            return Err(CpuMaskError::NoHexDigits { mask: mask.to_string() });
        }
        if hex.len() > MAX_MASK_DIGITS {
            return Err(CpuMaskError::TooManyCpus { mask: mask.to_string() });
        }
        let m = Self::from_hex_digits(hex).map_err(|digit| CpuMaskError::NotHex { mask: mask.to_string(), digit })?;
        if m.is_empty() {
            return Err(CpuMaskError::NoCpu { mask: mask.to_string() });
        }
        Ok(m)
    }

    /// llama.cpp's `-C` (`parse_cpu_mask` in `common/common.cpp`): only a lower-case `0x` is
    /// skipped, only the first [`MAX_MASK_DIGITS`] digits are read, and a mask may be empty.
    /// Returns the mask, the text as llama.cpp keeps it (with the ignored digits dropped) and
    /// whether digits were dropped.
    pub fn parse_flag(v: &str) -> Result<(CpuMask, String, bool), CpuMaskError> {
        let hex = v.strip_prefix("0x").unwrap_or(v);
        let digits: String = hex.chars().take(MAX_MASK_DIGITS).collect();
        let m = Self::from_hex_digits(&digits).map_err(|digit| CpuMaskError::NotHex { mask: v.to_string(), digit })?;
        let truncated = digits.len() < hex.len();
        let kept = if truncated { format!("0x{digits}") } else { v.to_string() };
        Ok((m, kept, truncated))
    }

    /// CPUs `lo..=hi` (llama.cpp's `-Cr`), both below [`MAX_CPUS`].
    pub fn range(lo: usize, hi: usize) -> CpuMask {
        let mut m = CpuMask::default();
        for (i, c) in m.cpus.iter_mut().enumerate() {
            *c = i >= lo && i <= hi;
        }
        m
    }

    fn from_hex_digits(hex: &str) -> Result<CpuMask, char> {
        let mut m = CpuMask::default();
        for (i, c) in hex.chars().rev().enumerate() {
            let d = c.to_digit(16).ok_or(c)?;
            for bit in 0..4 {
                if let Some(cpu) = m.cpus.get_mut(i * 4 + bit) {
                    *cpu = d & (1 << bit) != 0;
                }
            }
        }
        Ok(m)
    }

    /// Adds the CPUs of `other` (llama.cpp ORs every `-C`/`-Cr` into one mask).
    pub fn union_with(&mut self, other: &CpuMask) {
        for (a, b) in self.cpus.iter_mut().zip(other.cpus.iter()) {
            *a |= *b;
        }
    }

    /// Whether no CPU is selected.
    pub fn is_empty(&self) -> bool {
        !self.cpus.iter().any(|&c| c)
    }

    /// How many CPUs are selected.
    pub fn count(&self) -> usize {
        self.cpus.iter().filter(|&&c| c).count()
    }

    /// One entry per CPU, as `ggml_threadpool_params::cpumask` takes it.
    pub fn as_array(&self) -> &[bool; MAX_CPUS] {
        &self.cpus
    }

    /// The mask in hex with `0x` and no leading zeros (`0x3f`).
    pub fn to_hex(&self) -> String {
        let top = self.cpus.iter().rposition(|&c| c).unwrap_or(0);
        let mut s = String::from("0x");
        for d in (0..=top / 4).rev() {
            let nibble = (0..4).fold(0u32, |acc, bit| acc | (u32::from(self.cpus[d * 4 + bit]) << bit));
            s.push(char::from_digit(nibble, 16).unwrap_or('0'));
        }
        s
    }
}

impl fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuMask({})", self.to_hex())
    }
}

impl fmt::Display for CpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
