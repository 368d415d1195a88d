//! Speculative decoding for the `generate` and `chat` commands: the drafter that
//! `--spec-type`, `-md` and the `--spec-*` sizes ask for, and its statistics as printed and
//! reported.

use serde::Serialize;

use llama_runner::speculative::{DraftModel, Drafter, NgramDraft, SpecStats};
use llama_runner::{Backend, Context, ContextOptions, Model, RunOptions, SpecType};

use crate::error::Result;

/// What a speculative run drafts with: a loaded draft model, or n-gram lookup.
pub struct Drafting {
    /// `draft-simple` or `ngram-simple`.
    pub name: &'static str,
    model: Option<Model>,
    ngram: NgramDraft,
    n_max: usize,
    n_min: usize,
    p_min: f32,
}

impl std::fmt::Debug for Drafting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drafting").field("name", &self.name).field("ngram", &self.ngram).finish_non_exhaustive()
    }
}

impl Drafting {
    /// The drafter of `options` (`None` without speculative flags), its draft model loaded
    /// (with the target's model options) for `draft-simple`.
    pub fn new(options: &RunOptions, backend: &Backend) -> Result<Option<Drafting>> {
        let s = &options.speculative;
        let Some(kind) = s.drafter()? else { return Ok(None) };
        let (name, model) = match kind {
            SpecType::DraftSimple => {
                // `drafter()` refuses draft-simple without a model.
                let path = s.draft_model.clone().unwrap_or_default();
                ("draft-simple", Some(crate::progress::load_model(backend, &path, &options.model)?))
            }
            _ => ("ngram-simple", None),
        };
        if kind == SpecType::NgramSimple && s.n_min > s.ngram_size_m {
            return Err(llama_runner::Error::Speculative {
                problem: format!(
                    "--spec-draft-n-min {} is above the n-gram draft size --spec-ngram-simple-size-m {}: no draft \
                     would be verified",
                    s.n_min, s.ngram_size_m
                ),
            }
            .into());
        }
        let ngram =
            NgramDraft { ngram: s.ngram_size_n as usize, n_max: s.ngram_size_m as usize, n_min: s.n_min as usize };
        Ok(Some(Drafting { name, model, ngram, n_max: s.n_max as usize, n_min: s.n_min as usize, p_min: s.p_min }))
    }

    /// The draft model's context (`None` for n-gram lookup), with the target's context options.
    pub fn context(&self, options: &ContextOptions) -> Result<Option<Context<'_>>> {
        Ok(match &self.model {
            Some(m) => Some(Context::new(m, options)?),
            None => None,
        })
    }

    /// The drafter for `target`, drafting in `ctx` (from [`context`](Self::context)) for a
    /// draft model. Fails for a vocabulary the target cannot verify, or bad sizes.
    pub fn drafter<'c, 'd: 'c>(
        &self,
        ctx: Option<&'c mut Context<'d>>,
        target: &Model,
    ) -> Result<Box<dyn Drafter + 'c>> {
        Ok(match ctx {
            Some(c) => Box::new(DraftModel::new(c, target, self.n_max, self.n_min, self.p_min)?),
            None => Box::new(self.ngram.clone()),
        })
    }
}

/// What speculative decoding did, in a command's JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct SpecReport {
    /// `draft-simple` or `ngram-simple`.
    pub drafter: &'static str,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Accepted over drafted.
    pub acceptance: f64,
    /// Mean draft tokens accepted per verification batch.
    pub mean_accepted: f64,
    /// Batches that verified a draft.
    pub verified: usize,
    /// Steps decoded without a draft.
    pub plain: usize,
    /// Per draft position: drafts that reached it.
    pub drafted_at: Vec<usize>,
    /// Per draft position: drafts accepted up to it.
    pub accepted_at: Vec<usize>,
    /// Seconds spent drafting.
    pub draft_s: f64,
    /// Seconds spent decoding with the target (verification and plain steps).
    pub decode_s: f64,
}

impl SpecReport {
    /// The report of `stats` from the drafter `name`.
    pub fn new(name: &'static str, st: &SpecStats) -> SpecReport {
        SpecReport {
            drafter: name,
            drafted: st.drafted,
            accepted: st.accepted,
            acceptance: st.acceptance(),
            mean_accepted: if st.verified == 0 { 0.0 } else { st.accepted as f64 / st.verified as f64 },
            verified: st.verified,
            plain: st.plain,
            drafted_at: st.drafted_at.clone(),
            accepted_at: st.accepted_at.clone(),
            draft_s: st.draft_time.as_secs_f64(),
            decode_s: st.decode_time.as_secs_f64(),
        }
    }

    /// One line for standard error: counts, acceptance per draft position, times.
    pub fn summary(&self) -> String {
        let per_position: Vec<String> = self
            .accepted_at
            .iter()
            .zip(&self.drafted_at)
            .map(|(&a, &d)| if d == 0 { "-".into() } else { format!("{:.0}%", 100.0 * a as f64 / d as f64) })
            .collect();
        format!(
            "speculative ({}): drafted {}, accepted {} ({:.1}%, {:.2} per verification; by draft position {}), {} \
             verify + {} plain steps, drafting {:.3} s, decoding {:.3} s",
            self.drafter,
            self.drafted,
            self.accepted,
            100.0 * self.acceptance,
            self.mean_accepted,
            if per_position.is_empty() { "-".to_string() } else { per_position.join(" ") },
            self.verified,
            self.plain,
            self.draft_s,
            self.decode_s
        )
    }
}
