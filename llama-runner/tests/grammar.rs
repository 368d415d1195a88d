//! Constrained sampling: GBNF grammars against llama.cpp's own common sampler (the same
//! tokens for the same grammar, chain and seed), grammar output that follows the grammar,
//! malformed grammars refused with errors naming the problem (llama.cpp would print and return
//! NULL, loop, overflow its stack or abort on several), and dead ends during generation as
//! errors instead of llama.cpp's aborts and C++ exceptions.

mod common;

use std::path::{Path, PathBuf};

use common::Prerequisite;
use llama_runner::sampling::{self, GrammarTrigger, SamplingOptions};
use llama_runner::{Backend, Context, ContextOptions, Error, Model, ModelOptions, Sampler};
use tiny_gguf::ModelSpec;

const N_CTX: u32 = 512;
const PROMPT: &str = "Answer the question. Is the sky blue?";

/// Grammars with what their output must look like.
const YES_NO: &str = "root ::= (\"yes\" | \"no\" | \"maybe\") \".\"";
const RECORD: &str = r#"root ::= "{" pair ("," pair){0,3} "}"
pair ::= [a-z]{1,6} ":" [0-9]{1,3}"#;

fn load(path: &Path) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

fn ctx<'m>(model: &'m Model) -> Context<'m> {
    Context::new(model, &ContextOptions { n_ctx: N_CTX, n_threads: Some(1), ..Default::default() }).unwrap()
}

fn runner_run(model: &Model, n: usize, flags: &[String]) -> Vec<i32> {
    let options = sampling::parse_flags(flags).unwrap();
    let mut sampler = Sampler::new(model, &options).unwrap();
    assert!(sampler.has_grammar());
    let mut ctx = ctx(model);
    let prompt = model.tokenize(PROMPT, true).unwrap();
    sampling::generate(&mut ctx, &mut sampler, &prompt, n).unwrap().tokens
}

/// The generated text without the end-of-generation token.
fn text(model: &Model, tokens: &[i32]) -> String {
    let body: Vec<i32> = tokens.iter().copied().filter(|&t| !model.is_eog(t)).collect();
    let mut s = String::new();
    for t in body {
        s.push_str(&model.token_piece(t).unwrap());
    }
    s
}

/// Whether `s` is `{k:v(,k:v){0,3}}` with k in [a-z]{1,6} and v in [0-9]{1,3}.
fn is_record(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else { return false };
    let pairs: Vec<&str> = inner.split(',').collect();
    (1..=4).contains(&pairs.len())
        && pairs.iter().all(|p| {
            p.split_once(':').is_some_and(|(k, v)| {
                (1..=6).contains(&k.len())
                    && k.bytes().all(|b| b.is_ascii_lowercase())
                    && (1..=3).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_digit())
            })
        })
}

/// The grammar's tokens equal llama.cpp's common sampler's (grammar-based rejection sampling,
/// resampling with the grammar first), and the text follows the grammar.
fn parity_on(path: &Path, seeds: &[u32], n: usize) {
    let model = load(path);
    let name = path.file_name().unwrap().to_string_lossy();
    let mut runs = 0;
    for grammar in [YES_NO, RECORD] {
        for chain in [&["--temp", "0"][..], &["--temp", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0"], &[]] {
            for &seed in seeds {
                let mut flags: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
                flags.extend(["--grammar".into(), grammar.into(), "--seed".into(), seed.to_string()]);
                let ours = runner_run(&model, n, &flags);
                let theirs = common::sampling_reference_run(path, n, N_CTX, false, PROMPT, &flags);
                assert_eq!(
                    ours, theirs.tokens,
                    "{name}, {chain:?}, seed {seed}, grammar {grammar:?}: the tokens differ"
                );
                let out = text(&model, &ours);
                if grammar == YES_NO {
                    assert!(["yes.", "no.", "maybe."].contains(&out.as_str()), "{name}, {chain:?}: {out:?}");
                } else if ours.last().is_some_and(|&t| model.is_eog(t)) {
                    assert!(is_record(&out), "{name}, {chain:?}: {out:?} does not follow the grammar");
                }
                runs += 1;
            }
        }
    }
    eprintln!("{name}: {runs} grammar runs equal llama.cpp's common sampler");
}

fn grammar_tokens_equal_llama_cpp_on_generated_models(_: ()) {
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe()] {
        parity_on(&common::model(&spec), &[1, 42], 40);
    }
}

fn grammar_tokens_equal_llama_cpp_on_the_real_model(path: PathBuf) {
    parity_on(&path, &[42, 7], 40);
}

/// Malformed grammars: each is an `Error::Grammar` naming the problem, from the checker, from
/// `Sampler::new` (before llama.cpp sees the text) and from the `--grammar` flag.
fn malformed_grammars_are_errors(_: ()) {
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
    let mut chain = String::from("root ::= r0\n");
    for i in 0..3000 {
        chain.push_str(&format!("r{i} ::= r{} \"x\"\n", i + 1));
    }
    chain.push_str("r3000 ::= \"y\"\n");
    let cases: Vec<(String, &str)> = vec![
        ("root ::= \"a".into(), "unterminated"),
        ("root ::= [a-".into(), "end of input"),
        ("root ::= [abc".into(), "unterminated character class"),
        ("root := \"a\"".into(), "::="),
        ("root ::= \"\\q\"".into(), "unknown escape"),
        ("root ::= \"\\x4\"".into(), "hexadecimal"),
        ("root ::= \"\\u12\"".into(), "hexadecimal"),
        ("root ::= foo".into(), "`foo`"),
        ("rot ::= \"a\"".into(), "`root`"),
        ("root ::= a\na ::= a \"x\"".into(), "left recursion"),
        ("root ::= root \"x\" | \"y\"".into(), "left recursion"),
        ("root ::= a\na ::= b\nb ::= \"x\"? a".into(), "left recursion"),
        ("root ::= \"a\"{3,1}".into(), "below its minimum"),
        ("root ::= \"a\"{2001}".into(), "2000"),
        ("root ::= \"a\"{99999999999999999999999}".into(), "2000"),
        ("root ::= (\"a\"{0,50}){50}".into(), "nested repetitions"),
        ("root ::= \"a\"{,3}".into(), "integer"),
        ("root ::= \"a\"{2".into(), "`,` or `}`"),
        ("root ::= *".into(), "nothing before"),
        ("root ::= | *".into(), "nothing before"),
        ("root ::= (\"a\"".into(), "`)`"),
        ("root ::= \"a\" )".into(), "newline"),
        ("".into(), "no rules"),
        ("   \n# only a comment\n".into(), "no rules"),
        ("root ::= <[99999999999]>".into(), "out of range"),
        ("root ::= <abc".into(), "unterminated token"),
        ("root ::= \"a\"\0".into(), "NUL"),
        ("::= \"a\"".into(), "rule name"),
        (deep, "nested more than"),
        (chain, "chain"),
    ];
    assert!(cases.len() >= 20);
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    for (g, needle) in &cases {
        let e = sampling::check_gbnf(g).unwrap_err();
        assert!(matches!(e, Error::Grammar { .. }), "{g:?}: {e:?}");
        assert!(e.to_string().contains(needle), "{g:?}: `{e}` does not mention {needle:?}");
        if g.is_empty() {
            continue; // an empty grammar is no grammar for the sampler, as in llama.cpp
        }
        let options = SamplingOptions::builder().grammar(g.clone()).build();
        let e = match options {
            Err(e) => e,
            Ok(o) => Sampler::new(&model, &o).map(|_| ()).unwrap_err(),
        };
        assert!(e.to_string().contains(needle), "Sampler::new, {g:?}: {e}");
        let e = sampling::parse_flags(&["--grammar", g]).unwrap_err().to_string();
        assert!(e.contains("--grammar") && e.contains(needle), "--grammar {g:?}: {e}");
    }
    // Syntax errors say where.
    let e = sampling::check_gbnf("root ::= \"a\"\nx ::= \"b\" ]").unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    // Against the model's vocabulary: token ids and token texts.
    let n_vocab = model.n_vocab();
    for (g, needle) in [
        (format!("root ::= <[{n_vocab}]>"), "not in the vocabulary"),
        ("root ::= <no-such-token-text>".to_string(), "not one token"),
    ] {
        let o = SamplingOptions::builder().grammar(g.clone()).build().unwrap();
        let e = Sampler::new(&model, &o).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(needle), "{g:?}: {e}");
    }
    // Files.
    let e = sampling::parse_flags(&["--grammar-file", "/nonexistent/grammar.gbnf"]).unwrap_err();
    assert!(matches!(e, Error::GrammarFile { .. }), "{e:?}");
    let file = common::scratch().join("bad.gbnf");
    std::fs::write(&file, "root ::= [a-z\n").unwrap();
    let e = sampling::parse_flags(&["--grammar-file", file.to_str().unwrap()]).unwrap_err().to_string();
    assert!(e.contains("--grammar-file") && e.contains("unterminated"), "{e}");
    std::fs::write(&file, YES_NO).unwrap();
    let o = sampling::parse_flags(&["--grammar-file", file.to_str().unwrap()]).unwrap();
    assert_eq!(o.grammar, Some(sampling::Grammar::Gbnf(YES_NO.into())));
    assert_eq!(sampling::parse_flags(&sampling::render_flags(&o)).unwrap(), o, "renders back inline");
    // Trigger patterns llama.cpp's std::regex would throw on, and tokens outside the vocabulary.
    // A pattern is refused when the options are built (no model needed), a token by the
    // sampler (it needs the vocabulary).
    let bad_pattern = GrammarTrigger::Pattern("(unclosed".into());
    let e = SamplingOptions::builder().grammar(YES_NO).lazy_grammar([bad_pattern]).build().unwrap_err();
    assert!(matches!(e, Error::GrammarTrigger { .. }), "{e:?}");
    let trigger = GrammarTrigger::Token(n_vocab as i32);
    let o = SamplingOptions::builder().grammar(YES_NO).lazy_grammar([trigger.clone()]).build().unwrap();
    let e = Sampler::new(&model, &o).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::GrammarTrigger { .. }), "{trigger:?}: {e:?}");
}

/// A grammar that allows only what the chain bans is a dead end: llama.cpp would accept a
/// token the grammar refuses and abort (`GGML_ABORT` on an end-of-generation token with
/// unfinished stacks) or throw. Here it is an error, the context is untouched and a reset
/// sampler works again.
fn dead_ends_are_errors(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let prompt = model.tokenize(PROMPT, true).unwrap();
    // After "a" the grammar allows only the end of generation, which --ignore-eos bans.
    let o = sampling::parse_flags(&["--grammar", "root ::= \"a\"", "--ignore-eos", "--temp", "0"]).unwrap();
    let mut sampler = Sampler::new(&model, &o).unwrap();
    let mut ctx = ctx(&model);
    let e = sampling::generate(&mut ctx, &mut sampler, &prompt, 8).unwrap_err();
    assert!(matches!(e, Error::GrammarDeadEnd { .. }), "{e:?}");
    assert!(e.to_string().contains("allows no next token"), "{e}");
    // Every token the grammar allows biased away: a dead end at the first token.
    let a: Vec<i32> = (0..model.n_vocab() as i32).filter(|&t| model.token_piece(t).unwrap().starts_with('a')).collect();
    let mut b = SamplingOptions::builder().grammar("root ::= \"a\"").greedy();
    for &t in &a {
        b = b.logit_bias(t, f32::NEG_INFINITY);
    }
    let mut banned = Sampler::new(&model, &b.build().unwrap()).unwrap();
    let mut ctx2 = self::ctx(&model);
    let e = sampling::generate(&mut ctx2, &mut banned, &prompt, 4).unwrap_err();
    assert!(matches!(e, Error::GrammarDeadEnd { accepted: 0, .. }), "{e:?}");
    // The sampler is usable again after a reset: without --ignore-eos the same grammar ends.
    let mut fine =
        Sampler::new(&model, &sampling::parse_flags(&["--grammar", "root ::= \"a\"", "--temp", "0"]).unwrap()).unwrap();
    for _ in 0..2 {
        let mut c = self::ctx(&model);
        let g = sampling::generate(&mut c, &mut fine, &prompt, 8).unwrap();
        assert_eq!(text(&model, &g.tokens), "a");
        assert!(g.stopped_at_eog);
        fine.reset();
    }
    sampler.reset();
    let mut c = self::ctx(&model);
    let e = sampling::generate(&mut c, &mut sampler, &prompt, 8).unwrap_err();
    assert!(matches!(e, Error::GrammarDeadEnd { .. }), "the same dead end again after a reset: {e:?}");
}

/// A lazy grammar constrains nothing before its trigger: with a trigger that never comes, the
/// tokens are those of the unconstrained chain.
fn lazy_grammar_waits_for_its_trigger(_: ()) {
    let model = load(&common::model(&ModelSpec::tiny_llama()));
    let prompt = model.tokenize(PROMPT, true).unwrap();
    let base = SamplingOptions::builder().seed(3).temperature(1.0).build().unwrap();
    let mut plain = Sampler::new(&model, &base).unwrap();
    let expected = sampling::generate(&mut ctx(&model), &mut plain, &prompt, 24).unwrap().tokens;
    for trigger in [GrammarTrigger::Word("\u{1F980}never".into()), GrammarTrigger::Pattern("^zq{7}x$".into())] {
        let o = SamplingOptions { grammar: Some(sampling::Grammar::Gbnf(YES_NO.into())), ..base.clone() };
        let o = SamplingOptions { grammar_lazy: true, grammar_triggers: vec![trigger.clone()], ..o };
        let mut lazy = Sampler::new(&model, &o).unwrap();
        let got = sampling::generate(&mut ctx(&model), &mut lazy, &prompt, 24).unwrap().tokens;
        assert_eq!(got, expected, "{trigger:?}");
    }
}

const PERSON: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 20},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "colour": {"enum": ["red", "green", "blue"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    "married": {"type": "boolean"}
  },
  "required": ["name", "age", "colour"]
}"#;

/// Whether `v` follows [`PERSON`] (checked by hand: every keyword the schema uses).
fn follows_person(v: &serde_json::Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    for key in o.keys() {
        if !["name", "age", "colour", "tags", "married"].contains(&key.as_str()) {
            return Err(format!("unexpected property {key}"));
        }
    }
    let name = o.get("name").and_then(|n| n.as_str()).ok_or("name: a string is required")?;
    if !(1..=20).contains(&name.chars().count()) {
        return Err(format!("name {name:?}: length"));
    }
    let age = o.get("age").and_then(|a| a.as_i64()).ok_or("age: an integer is required")?;
    if !(0..=150).contains(&age) {
        return Err(format!("age {age} out of range"));
    }
    let colour = o.get("colour").and_then(|c| c.as_str()).ok_or("colour is required")?;
    if !["red", "green", "blue"].contains(&colour) {
        return Err(format!("colour {colour:?}"));
    }
    if let Some(tags) = o.get("tags") {
        let tags = tags.as_array().ok_or("tags: not an array")?;
        if tags.len() > 3 || tags.iter().any(|t| t.as_str().is_none_or(|t| t.chars().count() > 10)) {
            return Err(format!("tags {tags:?}"));
        }
    }
    if o.get("married").is_some_and(|m| !m.is_boolean()) {
        return Err("married: not a boolean".into());
    }
    Ok(())
}

/// JSON Schemas as grammars: what the real model generates parses as JSON and follows the
/// schema, greedy and at a temperature; `-j` and `-jf` read schemas, bad ones are errors.
fn json_schema_output_follows_the_schema(path: PathBuf) {
    let model = load(&path);
    let prompt = model.tokenize("Write a JSON record of a person:\n", true).unwrap();
    for flags in [
        vec!["--temp", "0"],
        vec!["--temp", "0.9", "--seed", "1"],
        vec!["--temp", "1.2", "--seed", "2", "--top-k", "0"],
        vec!["--temp", "0.7", "--seed", "3"],
    ] {
        let mut all: Vec<&str> = flags.clone();
        all.extend(["-j", PERSON]);
        let options = sampling::parse_flags(&all).unwrap();
        let mut sampler = Sampler::new(&model, &options).unwrap();
        let mut ctx =
            Context::new(&model, &ContextOptions { n_ctx: 1024, n_threads: Some(2), ..Default::default() }).unwrap();
        let g = sampling::generate(&mut ctx, &mut sampler, &prompt, 200).unwrap();
        let out = text(&model, &g.tokens);
        assert!(g.stopped_at_eog, "{flags:?}: the grammar completes within 200 tokens: {out:?}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{flags:?}: {out:?}: {e}"));
        follows_person(&v).unwrap_or_else(|e| panic!("{flags:?}: {out}: {e}"));
        eprintln!("{flags:?}: {out}");
    }
    let file = common::scratch().join("person.schema.json");
    std::fs::write(&file, PERSON).unwrap();
    let o = sampling::parse_flags(&["-jf", file.to_str().unwrap()]).unwrap();
    assert_eq!(o.grammar, Some(sampling::Grammar::JsonSchema(PERSON.into())));
    for (schema, needle) in [
        ("{\"type\": \"strin\"}", "strin"),
        ("{\"type\": \"object\", \"required\": 3}", "required"),
        ("{\"type\": \"string\", \"pattern\": \"^a+$\"}", "pattern"),
        ("{\"type\": \"string\", \"minLength\": 5, \"maxLength\": 2}", "maxLength"),
        ("{\"$ref\": \"#/$defs/missing\"}", "missing"),
        ("{not json", "JSON"),
    ] {
        let e = sampling::parse_flags(&["-j", schema]).unwrap_err();
        assert!(matches!(e, Error::JsonSchema { .. }), "{schema}: {e:?}");
        assert!(e.to_string().contains(needle), "{schema}: {e}");
    }
}

fn main() {
    let common_met = || match common::llama_common() {
        Prerequisite::Met(()) => Prerequisite::Met(()),
        Prerequisite::Missing(r) => Prerequisite::Missing(r),
        Prerequisite::Required(r) => Prerequisite::Required(r),
    };
    let real = || match (common::llama_common(), common::real_model()) {
        (Prerequisite::Met(()), Prerequisite::Met(p)) => Prerequisite::Met(p),
        (Prerequisite::Required(r), _) | (_, Prerequisite::Required(r)) => Prerequisite::Required(r),
        (Prerequisite::Missing(r), _) | (_, Prerequisite::Missing(r)) => Prerequisite::Missing(r),
    };
    common::run_trials(vec![
        common::trial(
            "generated/grammar_tokens_equal_llama_cpp",
            common_met(),
            grammar_tokens_equal_llama_cpp_on_generated_models,
        ),
        common::trial(
            "real_model/grammar_tokens_equal_llama_cpp",
            real(),
            grammar_tokens_equal_llama_cpp_on_the_real_model,
        ),
        common::trial(
            "real_model/json_schema_output_follows_the_schema",
            if cfg!(feature = "json-schema") {
                common::real_model()
            } else {
                Prerequisite::Missing("llama-runner built without the json-schema feature".into())
            },
            json_schema_output_follows_the_schema,
        ),
        common::trial("malformed_grammars_are_errors", Prerequisite::Met(()), malformed_grammars_are_errors),
        common::trial("dead_ends_are_errors", Prerequisite::Met(()), dead_ends_are_errors),
        common::trial("lazy_grammar_waits_for_its_trigger", Prerequisite::Met(()), lazy_grammar_waits_for_its_trigger),
    ])
}
