//! [`TensorSplit`]: checked proportions of the model per GPU (`-ts`), and llama.cpp's limits.

use llama_sys as sys;

/// How many devices llama.cpp's model parameters can name (`llama_max_devices()`), the length
/// of `llama_model_params::tensor_split`.
pub fn max_devices() -> usize {
    // SAFETY: a pure function without arguments.
    unsafe { sys::llama_max_devices() }
}

/// How many tensor overrides llama.cpp takes, leaving one slot of
/// `llama_max_tensor_buft_overrides()` for the terminating entry (as `common/arg.cpp` pads its
/// list to that size).
pub fn max_tensor_overrides() -> usize {
    #[cfg(llama_negative_ngl_is_all)]
    // SAFETY: a pure function without arguments (present from 1051ecd2 on, which the cfg probes).
    let slots = unsafe { sys::llama_max_tensor_buft_overrides() };
    // Before 1051ecd2 there was no such function; its value has always been 4096.
    #[cfg(not(llama_negative_ngl_is_all))]
    let slots = 4096;
    slots - 1
}

/// Proportions of the model per GPU: finite, not negative, at most [`max_devices`] values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorSplit(Vec<f32>);

/// Why a tensor split was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorSplitError {
    /// A value is NaN, infinite or negative.
    #[error("{value} (value {index}): values must be finite and not negative")]
    NotFiniteOrNegative {
        /// Its position.
        index: usize,
        /// The value.
        value: f32,
    },
    /// More values than devices.
    #[error("{count} values, llama.cpp takes at most {max}")]
    TooMany {
        /// Values given.
        count: usize,
        /// `llama_max_devices()`.
        max: usize,
    },
}

impl TensorSplit {
    /// Checks `values`; empty means "proportional to free memory".
    pub fn new(values: &[f32]) -> Result<TensorSplit, TensorSplitError> {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(TensorSplitError::NotFiniteOrNegative { index, value });
        }
        let max = max_devices();
        if values.len() > max {
            return Err(TensorSplitError::TooMany { count: values.len(), max });
        }
        Ok(TensorSplit(values.to_vec()))
    }

    /// The proportions.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Whether none is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The proportions padded with zeros to [`max_devices`] values, as llama.cpp reads them.
    pub fn padded(&self) -> Vec<f32> {
        let mut v = self.0.clone();
        v.resize(max_devices(), 0.0);
        v
    }
}
