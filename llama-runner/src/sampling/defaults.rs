//! Sampling defaults a model file carries (`general.sampling.*`), which llama.cpp's tools
//! apply to every sampling setting the user did not give (`common_init_sampler_from_model`).

use crate::error::{Error, Result};
use crate::model::Model;

use super::{Mirostat, SamplerType, SamplingOptions};

/// What a model's `general.sampling.*` keys say; `None` where a key is absent (or, as
/// llama.cpp reads them, does not start with a number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingDefaults {
    /// `general.sampling.sequence`: sampler names separated by `;`.
    pub samplers: Option<Vec<SamplerType>>,
    /// `general.sampling.top_k`.
    pub top_k: Option<i32>,
    /// `general.sampling.top_p`.
    pub top_p: Option<f32>,
    /// `general.sampling.min_p`.
    pub min_p: Option<f32>,
    /// `general.sampling.xtc_probability`.
    pub xtc_probability: Option<f32>,
    /// `general.sampling.xtc_threshold`.
    pub xtc_threshold: Option<f32>,
    /// `general.sampling.temp`.
    pub temp: Option<f32>,
    /// `general.sampling.penalty_last_n`.
    pub penalty_last_n: Option<i32>,
    /// `general.sampling.penalty_repeat`.
    pub penalty_repeat: Option<f32>,
    /// `general.sampling.mirostat` (0, 1 or 2).
    pub mirostat: Option<Mirostat>,
    /// `general.sampling.mirostat_tau`.
    pub mirostat_tau: Option<f32>,
    /// `general.sampling.mirostat_eta`.
    pub mirostat_eta: Option<f32>,
}

fn bad(key: &str, value: &str, problem: &str) -> Error {
    Error::ModelSamplingDefault { key: key.to_string(), value: value.to_string(), problem: problem.to_string() }
}

impl Model {
    /// The sampling defaults of the model file (`general.sampling.*`), read as llama.cpp reads
    /// them: each value's text, its leading number (`strtol` / `strtof`), a value without one
    /// ignored. Unlike llama.cpp, a sampler name it does not know in the sequence and a
    /// mirostat other than 0, 1 or 2 (on which llama.cpp's sampler aborts) are errors naming
    /// the key.
    pub fn sampling_defaults(&self) -> Result<SamplingDefaults> {
        let key = |k: &str| format!("general.sampling.{k}");
        let int = |k: &str| -> Option<i32> {
            let v = self.meta(&key(k))?;
            let (neg, mag, _) = crate::flags::cnum::c_integer_prefix(&v)?;
            // strtol's long, then the int32_t it is stored in.
            let n = i64::try_from(mag).unwrap_or(i64::MAX);
            Some((if neg { n.wrapping_neg() } else { n }) as i32)
        };
        let float = |k: &str| -> Option<f32> {
            let v = self.meta(&key(k))?;
            crate::flags::cnum::stof(k, &v).ok().map(|n| n.value)
        };
        let samplers = match self.meta(&key("sequence")) {
            None => None,
            Some(seq) => {
                let names: Vec<&str> = seq.split(';').collect();
                let types = names
                    .iter()
                    .map(|n| {
                        SamplerType::from_name(n)
                            .ok_or_else(|| bad(&key("sequence"), &seq, &format!("unknown sampler `{n}`")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(types)
            }
        };
        let mirostat = match int("mirostat") {
            None => None,
            Some(0) => Some(Mirostat::Off),
            Some(1) => Some(Mirostat::V1),
            Some(2) => Some(Mirostat::V2),
            Some(n) => {
                return Err(bad(&key("mirostat"), &n.to_string(), "not 0, 1 or 2 (llama.cpp's sampler aborts on it)"));
            }
        };
        Ok(SamplingDefaults {
            samplers,
            top_k: int("top_k"),
            top_p: float("top_p"),
            min_p: float("min_p"),
            xtc_probability: float("xtc_probability"),
            xtc_threshold: float("xtc_threshold"),
            temp: float("temp"),
            penalty_last_n: int("penalty_last_n"),
            penalty_repeat: float("penalty_repeat"),
            mirostat,
            mirostat_tau: float("mirostat_tau"),
            mirostat_eta: float("mirostat_eta"),
        })
    }
}

impl SamplingDefaults {
    /// Whether the model says nothing.
    pub fn is_empty(&self) -> bool {
        *self == SamplingDefaults::default()
    }

    /// Writes every value the model gives into `options`.
    pub fn apply(&self, options: &mut SamplingOptions) {
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut options.samplers, &self.samplers);
        set(&mut options.top_k, &self.top_k);
        set(&mut options.top_p, &self.top_p);
        set(&mut options.min_p, &self.min_p);
        set(&mut options.xtc_probability, &self.xtc_probability);
        set(&mut options.xtc_threshold, &self.xtc_threshold);
        set(&mut options.temp, &self.temp);
        set(&mut options.penalty_last_n, &self.penalty_last_n);
        set(&mut options.penalty_repeat, &self.penalty_repeat);
        set(&mut options.mirostat, &self.mirostat);
        set(&mut options.mirostat_tau, &self.mirostat_tau);
        set(&mut options.mirostat_eta, &self.mirostat_eta);
    }
}

impl SamplingOptions {
    /// The options llama.cpp's tools sample `model` with for the sampling flags `args`
    /// (`["--temp", "0.7", ...]`, as [`Parsed::sampling_flags`](crate::flags::Parsed) keeps
    /// them): llama.cpp's defaults, then the model's `general.sampling.*` values, then the
    /// flags, so that what the user gives wins and the model's values fill the rest.
    pub fn for_model<S: AsRef<str>>(model: &Model, args: &[S]) -> Result<SamplingOptions> {
        let mut options = SamplingOptions::default();
        model.sampling_defaults()?.apply(&mut options);
        super::parse_flags_onto(&mut options, args)?;
        Ok(options)
    }
}
