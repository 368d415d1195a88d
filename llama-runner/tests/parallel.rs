//! Continuous batching ([`Parallel`]): many requests in one context, each with its own sampler
//! and stop conditions, give the events each gives alone through [`Context::stream`]; requests
//! finish at different times and queued ones take the freed slots; one request's error ends
//! only that request.

mod common;

use std::path::Path;

use common::Prerequisite;
use llama_runner::parallel::{Parallel, Request};
use llama_runner::sampling::{self, SamplingOptions};
use llama_runner::stream::{Event, StopConditions, StopReason};
use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions, Sampler};
use tiny_gguf::ModelSpec;

const PROMPTS: [&str; 6] = [
    "The quick brown fox",
    "Once upon a time there was",
    "1, 2, 3, 4,",
    "Paris is the capital of",
    "def fibonacci(n):",
    "The weather today is",
];

fn load(path: &Path) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

fn ctx(model: &Model, n_seq_max: u32) -> Context<'_> {
    let o = ContextOptions { n_ctx: 2048, n_batch: 512, n_seq_max, n_threads: Some(2), ..Default::default() };
    Context::new(model, &o).unwrap()
}

/// The stop conditions of request `i`: budgets and stop strings that end requests at
/// different times.
fn stop_of(i: usize) -> StopConditions {
    let mut s = StopConditions::max_tokens(40 - 5 * i);
    if i % 3 == 2 {
        s.stop_strings = vec!["e".into()];
    }
    s
}

fn sampler_of<'m>(model: &'m Model, i: usize) -> Sampler<'m> {
    if i.is_multiple_of(2) {
        Sampler::greedy(model).unwrap()
    } else {
        let o = SamplingOptions::builder().seed(100 + i as u32).temperature(0.8).build().unwrap();
        Sampler::new(model, &o).unwrap()
    }
}

/// Events of a request with the timing-only fields blanked.
fn normalized(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Done { generation, reason } => {
                format!(
                    "done {:?} {:?} eog={} n_prompt={}",
                    generation.tokens, reason, generation.stopped_at_eog, generation.n_prompt
                )
            }
            other => format!("{other:?}"),
        })
        .collect()
}

fn alone(model: &Model, i: usize) -> Vec<String> {
    let mut c = ctx(model, 1);
    let mut s = sampler_of(model, i);
    let prompt = model.tokenize(PROMPTS[i], true).unwrap();
    normalized(c.stream(&mut s, &prompt, stop_of(i)).unwrap().map(Result::unwrap).collect())
}

/// Six requests through `slots` slots equal the six generated alone. Sampling at a
/// temperature reads the probabilities, which a batch of several sequences rounds a little
/// differently from one sequence alone (other matrix shapes): on the real model a seeded
/// request may then take another token where two are nearly equally likely, and on an AVX-512
/// Xeon (2026-12-04) the generated models' seeded request 1 did too at its 14th token with 3
/// slots (exact on an AMD EPYC). With `seeded_exact` off, seeded requests are checked to
/// repeat exactly over two runs instead; greedy requests always equal their runs alone.
fn requests_equal_streams_alone(path: &Path, slots: u32, seeded_exact: bool) {
    let model = load(path);
    let expected: Vec<Vec<String>> = (0..PROMPTS.len()).map(|i| alone(&model, i)).collect();
    let first = run_all(&model, slots);
    for (i, (got, want)) in first.events.iter().zip(&expected).enumerate() {
        if seeded_exact || i.is_multiple_of(2) {
            assert_eq!(got, want, "request {i} with {slots} slots");
        }
    }
    if !seeded_exact {
        let again = run_all(&model, slots);
        assert_eq!(again.events, first.events, "{slots} slots: a second run repeats the first");
    }
    if slots > 1 {
        assert_ne!(
            first.finished_order,
            (0..PROMPTS.len() as u64).collect::<Vec<_>>(),
            "requests finish at different times"
        );
    }
    eprintln!("{} slots: {} steps, finished in order {:?}", slots, first.steps, first.finished_order);
}

struct AllRun {
    events: Vec<Vec<String>>,
    finished_order: Vec<u64>,
    steps: usize,
}

fn run_all(model: &Model, slots: u32) -> AllRun {
    let mut c = ctx(model, slots);
    let mut p = Parallel::new(&mut c).unwrap();
    for (i, text) in PROMPTS.iter().enumerate() {
        let prompt = model.tokenize(text, true).unwrap();
        assert_eq!(p.submit(Request::new(prompt, sampler_of(model, i), stop_of(i))).unwrap(), i as u64);
    }
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); PROMPTS.len()];
    let mut max_active = 0;
    let mut finished_order = Vec::new();
    let mut steps = 0;
    while !p.is_idle() {
        for u in p.step().unwrap() {
            let e = u.event.unwrap();
            if matches!(e, Event::Done { .. }) {
                finished_order.push(u.request);
            }
            events[u.request as usize].push(e);
        }
        max_active = max_active.max(p.active());
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    assert!(max_active <= slots as usize);
    assert_eq!(finished_order.len(), PROMPTS.len());
    AllRun { events: events.into_iter().map(normalized).collect(), finished_order, steps }
}

fn on_generated(_: ()) {
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe()] {
        let path = common::model(&spec);
        for slots in [1, 3, 8] {
            // One slot decodes the shapes a request alone decodes: seeded ones equal too.
            requests_equal_streams_alone(&path, slots, slots == 1);
        }
    }
}

fn on_real_model(path: std::path::PathBuf) {
    requests_equal_streams_alone(&path, 1, true);
    requests_equal_streams_alone(&path, 4, false);
}

/// Bad requests are refused at submit; a request whose grammar dead-ends ends with its error
/// while the others complete; cancelled requests produce nothing more.
fn errors_and_cancel(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let other = load(&common::model(&ModelSpec::tiny_moe()));
    let mut c = ctx(&model, 2);
    let prompt = model.tokenize(PROMPTS[0], true).unwrap();
    let mut p = Parallel::new(&mut c).unwrap();
    let g = || Sampler::greedy(&model).unwrap();
    assert!(matches!(p.submit(Request::new(vec![], g(), StopConditions::default())), Err(Error::EmptyInput { .. })));
    assert!(matches!(
        p.submit(Request::new(prompt.clone(), Sampler::greedy(&other).unwrap(), StopConditions::default())),
        Err(Error::SamplerModelMismatch)
    ));
    assert!(matches!(
        p.submit(Request::new(vec![1; 4000], g(), StopConditions::default())),
        Err(Error::ContextFull { .. })
    ));
    assert!(matches!(
        p.submit(Request::new(vec![-1], g(), StopConditions::default())),
        Err(Error::InvalidToken { .. })
    ));
    let bad_stop = StopConditions { stop_strings: vec![String::new()], ..Default::default() };
    assert!(matches!(p.submit(Request::new(prompt.clone(), g(), bad_stop)), Err(Error::EmptyStopString)));
    assert!(p.is_idle(), "refused requests are not queued");

    let dead = sampling::parse_flags(&["--grammar", "root ::= \"a\"", "--ignore-eos", "--temp", "0"]).unwrap();
    let dead_end = p
        .submit(Request::new(prompt.clone(), Sampler::new(&model, &dead).unwrap(), StopConditions::max_tokens(8)))
        .unwrap();
    let fine = p.submit(Request::new(prompt.clone(), g(), StopConditions::max_tokens(12))).unwrap();
    let cancelled = p.submit(Request::new(prompt.clone(), g(), StopConditions::max_tokens(12))).unwrap();
    let zero = p.submit(Request::new(prompt.clone(), g(), StopConditions::max_tokens(0))).unwrap();
    assert_eq!((p.active(), p.queued()), (0, 4));
    assert!(p.cancel(cancelled));
    assert!(!p.cancel(cancelled));
    assert!(!p.cancel(99));
    let done = p.run().unwrap();
    assert_eq!(done.iter().map(|c| c.request).collect::<Vec<_>>(), vec![dead_end, fine, zero]);
    assert!(matches!(done[0].result, Err(Error::GrammarDeadEnd { .. })), "{:?}", done[0].result);
    let (_, generation, reason) = done[1].result.as_ref().unwrap();
    assert_eq!((generation.tokens.len(), reason), (12, &StopReason::MaxTokens));
    let (text, generation, reason) = done[2].result.as_ref().unwrap();
    assert_eq!((text.as_str(), generation.tokens.len(), reason), ("", 0, &StopReason::MaxTokens));
    // Every sequence is free again.
    drop(p);
    for s in 0..2 {
        assert_eq!(c.seq_range(s).unwrap(), None);
    }
}

/// Parallel greedy generation gives each sequence exactly the tokens of a reference program
/// that drives llama.cpp's batch API with the same batch composition. How many sequences also
/// match a solo run is printed: llama.cpp's kernels are not batch-invariant, so a sequence in a
/// batch of several may differ from the same sequence alone where two tokens are nearly tied.
fn greedy_equals_the_batch_api_reference(path: &Path) {
    let model = load(path);
    let n = 24;
    for slots in [2usize, 4] {
        let prompts = &PROMPTS[..slots];
        let theirs = common::reference_parallel(path, prompts, n, 2, 2048, 512);
        let mut c = ctx(&model, slots as u32);
        let mut p = Parallel::new(&mut c).unwrap();
        for text in prompts {
            let prompt = model.tokenize(text, true).unwrap();
            p.submit(Request::new(prompt, Sampler::greedy(&model).unwrap(), StopConditions::max_tokens(n))).unwrap();
        }
        let ours: Vec<Vec<i32>> = p.run().unwrap().into_iter().map(|c| c.result.unwrap().1.tokens).collect();
        assert_eq!(ours, theirs, "{slots} sequences: the tokens differ from llama.cpp's batch API");
        let mut solo_matches = 0;
        for (text, tokens) in prompts.iter().zip(&ours) {
            let mut alone = ctx(&model, 1);
            let prompt = model.tokenize(text, true).unwrap();
            let mut g = Sampler::greedy(&model).unwrap();
            let solo = sampling::generate(&mut alone, &mut g, &prompt, n).unwrap().tokens;
            solo_matches += usize::from(&solo == tokens);
        }
        eprintln!(
            "{}: {slots} sequences equal the batch-API reference; {solo_matches} of {slots} also equal a solo run",
            path.file_name().unwrap().to_string_lossy()
        );
    }
}

fn main() {
    common::run_trials(vec![
        common::trial("generated/requests_equal_streams_alone", Prerequisite::Met(()), on_generated),
        common::trial("real_model/requests_equal_streams_alone", common::real_model(), on_real_model),
        common::trial("generated/greedy_equals_the_batch_api_reference", Prerequisite::Met(()), |()| {
            for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
                greedy_equals_the_batch_api_reference(&common::model(&spec));
            }
        }),
        common::trial("real_model/greedy_equals_the_batch_api_reference", common::real_model(), |p| {
            greedy_equals_the_batch_api_reference(&p)
        }),
        common::trial("errors_and_cancel", Prerequisite::Met(()), errors_and_cancel),
    ])
}
