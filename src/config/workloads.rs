//! Workloads: the presets, and whether a workload fits the context's KV cells.

use std::fmt;

pub use crate::measure::{QualitySpec, Workload};
use llama_runner::options::ContextOptions;

/// The names of the workload presets, in their usual order.
pub const WORKLOAD_PRESETS: [&str; 4] = ["short", "medium", "long", "multi-turn"];

/// A workload preset by name, each with 5 repetitions and no depth:
///
/// | name | per turn | turns | KV cells |
/// |---|---|---|---|
/// | `short` | pp128 + tg32 | 1 | 160 |
/// | `medium` | pp512 + tg128 | 1 | 640 |
/// | `long` | pp2048 + tg128 | 1 | 2176 |
/// | `multi-turn` | pp128 + tg64 | 4 | 768 |
pub fn preset_workload(name: &str) -> Option<Workload> {
    let (n_prompt, n_gen, turns) = match name {
        "short" => (128, 32, 1),
        "medium" => (512, 128, 1),
        "long" => (2048, 128, 1),
        "multi-turn" => (128, 64, 4),
        _ => return None,
    };
    Some(Workload { turns, ..Workload::new(name, n_prompt, n_gen) })
}

/// The four presets, in [`WORKLOAD_PRESETS`] order: the workloads of a configuration that names
/// none.
pub fn default_workloads() -> Vec<Workload> {
    WORKLOAD_PRESETS.iter().filter_map(|n| preset_workload(n)).collect()
}

/// KV cells one workload's sequence gets, when known.
pub(super) struct Capacity {
    cells: Option<u32>,
    what: String,
}

impl Capacity {
    pub(super) fn of(c: &ContextOptions, known_context_length: Option<u32>) -> Capacity {
        let n_ctx = if c.n_ctx > 0 { Some(c.n_ctx) } else { known_context_length };
        let Some(n) = n_ctx else { return Capacity { cells: None, what: String::new() } };
        let base = if c.n_ctx > 0 { format!("n_ctx {n}") } else { format!("the model's {n}") };
        if c.kv_unified || c.n_seq_max <= 1 {
            Capacity { cells: Some(n), what: base }
        } else {
            let per = n / c.n_seq_max;
            Capacity { cells: Some(per), what: format!("{base} ({per} per sequence with {} sequences)", c.n_seq_max) }
        }
    }

    /// Why `w` does not fit, if it does not.
    pub(super) fn misfit(&self, w: &Workload) -> Option<Misfit> {
        let needed = u64::from(w.n_cells());
        let cells = self.cells?;
        (needed > u64::from(cells)).then(|| Misfit {
            needed,
            parallel: w.parallel,
            n_depth: w.n_depth,
            turns: w.turns,
            n_prompt: w.n_prompt,
            n_gen: w.n_gen,
            cells,
            capacity: self.what.clone(),
        })
    }
}

/// A workload that needs more KV cells than its sequence gets
/// (`n_depth + turns × (n_prompt + n_gen)` against `n_ctx`, or `n_ctx / n_seq_max`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    /// KV cells needed.
    pub needed: u64,
    /// Its `parallel` (sequences).
    pub parallel: u32,
    /// The workload's `n_depth`.
    pub n_depth: u32,
    /// Its `turns`.
    pub turns: u32,
    /// Its `n_prompt`.
    pub n_prompt: u32,
    /// Its `n_gen`.
    pub n_gen: u32,
    /// KV cells one sequence gets.
    pub cells: u32,
    /// Where that number comes from, in words (`n_ctx 1024`, `the model's 2048 (512 per
    /// sequence with 4 sequences)`).
    pub capacity: String,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seqs = if self.parallel > 1 { format!(" × {} sequences", self.parallel) } else { String::new() };
        write!(
            f,
            "needs {} KV cells (n_depth {} + {} turn(s) × (n_prompt {} + n_gen {})){seqs}, more than {}",
            self.needed, self.n_depth, self.turns, self.n_prompt, self.n_gen, self.capacity
        )
    }
}
