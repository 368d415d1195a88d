//! Sessions on disk: a session saved by one process resumes in another (this test binary run
//! again as a child) with only the new tokens decoded and the same continuation; truncated,
//! altered, foreign-model, other-version and non-session files are errors naming the problem,
//! after which the context works.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Prerequisite;
use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions};
use tiny_gguf::ModelSpec;

const PREFIX: &str = "You are a careful assistant. The story so far: a fox met a crow in the forest.";
const SUFFIX: &str = " Then the crow said";
const N_GEN: usize = 12;
const CHILD: &str = "LLAMA_RUNNER_SESSION_CHILD";

fn load(path: &Path) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

fn ctx(model: &Model) -> Context<'_> {
    Context::new(model, &ContextOptions { n_ctx: 512, n_threads: Some(2), ..Default::default() }).unwrap()
}

/// The continuation after the prefix was decoded (in this process, or restored from a file):
/// the suffix decoded, then greedy tokens. Returns them and the prompt tokens evaluated.
fn continue_from(ctx: &mut Context<'_>, model: &Model) -> (Vec<i32>, i32) {
    let suffix = model.tokenize(SUFFIX, false).unwrap();
    ctx.reset_perf();
    let out = ctx.generate_greedy(&suffix, N_GEN).unwrap().tokens;
    (out, ctx.perf().n_prompt)
}

/// Child side: load the session, continue, print the tokens and the prompt tokens evaluated.
fn child(model_path: &Path, session: &Path) {
    let model = load(model_path);
    let mut c = ctx(&model);
    let tokens = c.load_session(session, 0).unwrap();
    assert_eq!(tokens, model.tokenize(PREFIX, true).unwrap());
    assert_eq!(c.n_past(), tokens.len());
    let (out, n_prompt) = continue_from(&mut c, &model);
    println!("child-result: {n_prompt} {}", out.iter().map(i32::to_string).collect::<Vec<_>>().join(" "));
}

fn resume_in_a_new_process(model_path: PathBuf, name: &str) {
    let session = common::scratch().join(format!("{}.session", model_path.file_stem().unwrap().to_string_lossy()));
    let model = load(&model_path);
    let prefix = model.tokenize(PREFIX, true).unwrap();
    let mut c = ctx(&model);
    c.decode(&prefix).unwrap();
    c.save_session(&session, 0, &prefix).unwrap();
    let (expected, n_prompt_here) = continue_from(&mut c, &model);
    let suffix_len = model.tokenize(SUFFIX, false).unwrap().len() as i32;
    assert_eq!(n_prompt_here, suffix_len);

    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, format!("{}\n{}", model_path.display(), session.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // libtest-mimic prints `test NAME ... ` before the test runs: the result follows on that line.
    let line = stdout.lines().find_map(|l| l.split_once("child-result: ").map(|(_, r)| r)).expect("the child's result");
    let mut nums = line.split_whitespace().map(|t| t.parse::<i32>().unwrap());
    let n_prompt_child = nums.next().unwrap();
    let got: Vec<i32> = nums.collect();
    assert_eq!(
        n_prompt_child,
        suffix_len,
        "the new process decoded only the new tokens, not the {} restored",
        prefix.len()
    );
    assert_eq!(got, expected, "the resumed continuation equals the one without a restart");
}

fn resume_trial(model_path: PathBuf, name: &'static str) {
    if let Ok(spec) = std::env::var(CHILD) {
        let (m, s) = spec.split_once('\n').unwrap();
        child(Path::new(m), Path::new(s));
    } else {
        resume_in_a_new_process(model_path, name);
    }
}

/// Bad session files and bad calls: each an `Error::Session` naming the problem.
fn bad_sessions_are_errors(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let other = load(&common::model(&ModelSpec::tiny_moe()));
    let dir = common::scratch();
    let good = dir.join("good.session");
    let prefix = model.tokenize(PREFIX, true).unwrap();
    let mut c = ctx(&model);
    c.decode(&prefix).unwrap();
    c.save_session(&good, 0, &prefix).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let session_err = |c: &mut Context<'_>, path: &Path| -> String {
        match c.load_session(path, 0) {
            Err(e @ Error::Session { .. }) => e.to_string(),
            other => panic!("{}: expected a session error, got {other:?}", path.display()),
        }
    };
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut fresh = ctx(&model);
    for cut in [0, 4, 8, 12, 52, 60, 64, bytes.len() / 2, bytes.len() - 9, bytes.len() - 1] {
        let p = write("cut.session", &bytes[..cut]);
        let e = session_err(&mut fresh, &p);
        assert!(e.contains("truncated") || e.contains("magic") || e.contains("checksum"), "cut at {cut}: {e}");
        assert_eq!(fresh.seq_range(0).unwrap(), None);
    }
    let mut flipped = bytes.clone();
    let mid = flipped.len() - 100;
    flipped[mid] ^= 0x40;
    assert!(session_err(&mut fresh, &write("flip.session", &flipped)).contains("checksum"));
    let mut version = bytes.clone();
    version[8] = 9;
    assert!(session_err(&mut fresh, &write("version.session", &version)).contains("format version 9"));
    // Another llama.cpp commit, with a checksum that matches.
    let mut commit = bytes.clone();
    commit[12] = if commit[12] == b'f' { b'e' } else { b'f' };
    let n = commit.len() - 8;
    let sum = fnv(&commit[..n]);
    commit[n..].copy_from_slice(&sum.to_le_bytes());
    assert!(session_err(&mut fresh, &write("commit.session", &commit)).contains("written by llama.cpp"));
    // Forged states (the checksum recomputed): a cell count that would have llama.cpp reserve
    // a batch of 2^31 cells, one that reads the records out of step, another magic, garbage
    // in the data; each refused, the context left empty.
    let state_at = 8 + 4 + 40 + 8 + 4 + 4 * prefix.len() + 8;
    let forge = |name: &str, at: usize, with: &[u8]| {
        let mut f = bytes.clone();
        f[state_at + at..state_at + at + with.len()].copy_from_slice(with);
        let n = f.len() - 8;
        let sum = fnv(&f[..n]);
        f[n..].copy_from_slice(&sum.to_le_bytes());
        write(name, &f)
    };
    // magic, sequence id, stream count, then the first stream's cell count.
    assert_eq!(bytes[state_at + 12..state_at + 16], (prefix.len() as u32).to_le_bytes(), "the layout this test forges");
    let t = std::time::Instant::now();
    let e = session_err(&mut fresh, &forge("cells.session", 12, &0x7fff_ffffu32.to_le_bytes()));
    assert!(e.contains("claims 2147483647 cells"), "{e}");
    assert!(t.elapsed().as_secs() < 5, "refused before llama.cpp allocates");
    let e = session_err(&mut fresh, &forge("cells1.session", 12, &(prefix.len() as u32 + 1).to_le_bytes()));
    assert!(!e.is_empty());
    let e = session_err(&mut fresh, &forge("smagic.session", 0, &[0; 4]));
    assert!(e.contains("sequence-state magic"), "{e}");
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let e = session_err(&mut fresh, &forge("garbage.session", 16 + 12 * prefix.len(), &garbage));
    assert!(!e.is_empty());
    assert_eq!(fresh.seq_range(0).unwrap(), None);
    // Not a session: the model file itself, text, nothing.
    assert!(session_err(&mut fresh, &common::model(&ModelSpec::tiny_llama())).contains("magic"));
    assert!(session_err(&mut fresh, &write("text.session", b"hello")).contains("magic"));
    assert!(session_err(&mut fresh, &dir.join("missing.session")).contains("cannot read"));
    // Another model.
    let mut other_ctx = ctx(&other);
    assert!(session_err(&mut other_ctx, &good).contains("another model"));
    // Bad calls; a failed save leaves the existing file as it was.
    assert!(c.save_session(&good, 0, &prefix[1..]).unwrap_err().to_string().contains("holds"));
    assert!(c.save_session(&good, 5, &prefix).is_err());
    assert!(c.save_session(dir.join("no-such-dir/x.session"), 0, &prefix).is_err());
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
    assert!(fresh.load_session(&good, -1).is_err());
    // The good file still loads into the context that refused the bad ones, and it works.
    assert_eq!(fresh.load_session(&good, 0).unwrap(), prefix);
    assert!(!fresh.generate_greedy(&model.tokenize(SUFFIX, false).unwrap(), 4).unwrap().tokens.is_empty());
}

/// The file's checksum (FNV-1a 64), to forge a file whose only fault is elsewhere.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn main() {
    let tiny = common::model(&ModelSpec::tiny_llama());
    let swa = common::model(&ModelSpec::tiny_swa());
    common::run_trials(vec![
        common::trial("generated/resume_in_a_new_process", Prerequisite::Met(tiny), |p| {
            resume_trial(p, "generated/resume_in_a_new_process")
        }),
        common::trial("generated_swa/resume_in_a_new_process", Prerequisite::Met(swa), |p| {
            resume_trial(p, "generated_swa/resume_in_a_new_process")
        }),
        common::trial("real_model/resume_in_a_new_process", common::real_model(), |p| {
            resume_trial(p, "real_model/resume_in_a_new_process")
        }),
        common::trial("bad_sessions_are_errors", Prerequisite::Met(()), bad_sessions_are_errors),
    ])
}
