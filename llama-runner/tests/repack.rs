//! `repack: false` (`--no-repack`) takes effect: expert tensors overridden to the CPU land in
//! `CPU` instead of `CPU_REPACK`, and the model still generates.
//!
//! `harness = false`: the test needs a CPU with Q4_0 repacking (the CPU backend's `REPACK` and
//! `AVX2`), known only at run time; elsewhere it is reported ignored with the reason.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Prerequisite;
use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Recorder};
use tiny_gguf::{ModelSpec, WeightType};

fn main() {
    let info = llama_runner::backend::system_info();
    let repacking = if info.contains("REPACK = 1") && info.contains("AVX2 = 1") {
        Prerequisite::Met(())
    } else {
        Prerequisite::Missing(format!("this CPU has no Q4_0 repacking ({info})"))
    };
    common::run_trials(vec![common::trial("repack_off_turns_cpu_repack_into_cpu", repacking, |()| {
        repack_off_turns_cpu_repack_into_cpu()
    })]);
}

fn repack_off_turns_cpu_repack_into_cpu() {
    // Q4_0 weights are repacked (q4_0_8x8) on AVX2 machines; Q8_0 ones are not (see
    // effects.rs's `cpu_overrides_place_exactly_the_expert_tensors`).
    let spec = ModelSpec { n_layer: 3, weight_type: WeightType::Q4_0, ..ModelSpec::tiny_moe() };
    let path = common::model(&spec);
    let mut outputs = Vec::new();
    for repack in [true, false] {
        let opts = ModelOptions { cpu_moe: true, repack, ..Default::default() };
        // The only test of this process: the recorder sees no other test's lines.
        let rec = Recorder::start();
        let model = Model::load(Backend::get().unwrap(), &path, &opts).unwrap_or_else(|e| panic!("{opts:?}: {e}"));
        let lines = rec.lines();
        let got = overridden(&lines);
        assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), experts(0..3));
        let target = if repack { "CPU_REPACK" } else { "CPU" };
        assert!(got.values().all(|t| t == target), "repack {repack}: {got:?}");
        let repack_buffer = lines.iter().any(|l| l.contains("CPU_REPACK model buffer size"));
        assert_eq!(repack_buffer, repack, "repack {repack}");
        let mut ctx =
            Context::new(&model, &ContextOptions { n_ctx: 256, n_threads: Some(1), ..Default::default() }).unwrap();
        let prompt = model.tokenize("The quick brown fox jumps over the lazy dog", true).unwrap();
        outputs.push(ctx.generate_greedy(&prompt, 8).unwrap().tokens);
    }
    assert!(outputs.iter().all(|o| !o.is_empty()));
}

/// `tensor NAME (N MiB TYPE) buffer type overridden to TARGET` → NAME → TARGET, each name once
/// (as effects.rs reads them).
fn overridden(lines: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in lines {
        let Some(rest) = l.strip_prefix("tensor ") else { continue };
        let Some((head, target)) = rest.split_once(" buffer type overridden to ") else { continue };
        let name = head.split_whitespace().next().unwrap().to_string();
        assert!(out.insert(name.clone(), target.trim().to_string()).is_none(), "{name} reported twice");
    }
    out
}

/// The expert tensors `blk.N.ffn_{gate,up,down}_exps.weight` of the given layers.
fn experts(layers: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    layers.into_iter().flat_map(|i| ["gate", "up", "down"].map(|w| format!("blk.{i}.ffn_{w}_exps.weight"))).collect()
}
