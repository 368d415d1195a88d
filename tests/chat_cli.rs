//! `llama-runner chat` end to end on a generated model carrying a chat template: turns read
//! from standard input, answers equal the library's session, the cache reused across turns,
//! `/reset`, and bad templates as errors (exit 2, never a crash).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use llama_runner::chat::{ChatSession, ChatTemplate};
use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions, Sampler, StopConditions};

const CHATML: &str = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}\
                      {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-cli")
}

fn model(template: Option<&str>) -> PathBuf {
    let spec =
        tiny_gguf::ModelSpec { chat_template: template.map(str::to_owned), ..tiny_gguf::ModelSpec::tiny_llama() };
    tiny_gguf::cached(&spec, &dir()).expect("generated model")
}

fn chat(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llama-runner"))
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its flags exits without reading: a broken pipe is its answer.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// The `[prompt: N tokens (R reused from the cache, D decoded) ...]` lines of stderr.
fn turn_stats(stderr: &str) -> Vec<(usize, usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("[prompt: "))
        .map(|l| {
            let nums: Vec<usize> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .take(3)
                .map(|s| s.parse().unwrap())
                .collect();
            (nums[0], nums[1], nums[2])
        })
        .collect()
}

#[test]
fn answers_equal_the_library_session_and_the_cache_is_reused() {
    let m = model(Some(CHATML));
    let flags = format!("-m {} -c 1024 -t 2 --temp 0", m.display());
    let out = chat(&["--flags", &flags, "-n", "6", "--system-prompt", "Be brief."], "Hello\nAnd now?\n/reset\nHello\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stats = turn_stats(&stderr);
    assert_eq!(stats.len(), 3, "{stderr}");
    assert_eq!(stats[0].1, 0, "the first turn reuses nothing: {stderr}");
    assert!(stats[1].1 >= stats[0].0, "the second turn reuses the first prompt: {stderr}");
    assert_eq!(stats[1].2, stats[1].0 - stats[1].1);
    assert_eq!(stats[2], stats[0], "after /reset the conversation starts again: {stderr}");
    assert!(stderr.contains("[conversation reset]"));

    // The same turns through the library.
    let model = Model::load(Backend::get().unwrap(), &m, &ModelOptions::default()).unwrap();
    let ctx = Context::new(&model, &ContextOptions { n_ctx: 1024, n_threads: Some(2), ..Default::default() }).unwrap();
    let mut session = ChatSession::new(ctx, ChatTemplate::jinja(CHATML).unwrap().for_model(&model));
    session.push(llama_runner::ChatMessage::system("Be brief."));
    let mut sampler = Sampler::greedy(&model).unwrap();
    let a = session.reply("Hello", &mut sampler, StopConditions::max_tokens(6)).unwrap();
    let b = session.reply("And now?", &mut sampler, StopConditions::max_tokens(6)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, format!("{}\n{}\n{}\n", a.text, b.text, a.text));
    assert_eq!((a.stats.n_prompt, a.stats.n_reused, a.stats.n_decoded), stats[0]);
    assert_eq!((b.stats.n_prompt, b.stats.n_reused, b.stats.n_decoded), stats[1]);
}

/// The speculative flags: greedy answers equal the plain chat's, with the acceptance line
/// after each turn; a draft model with n-min above n-max is refused (exit 2).
#[test]
fn speculative_flags_give_the_plain_answers() {
    let m = model(Some(CHATML));
    let turns = "abc abc abc abc\nabc abc abc abc abc\n";
    let base = format!("-m {} -c 1024 -t 2 --temp 0", m.display());
    let plain = chat(&["--flags", &base, "-n", "12"], turns);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    for extra in ["--spec-type ngram-simple --spec-ngram-simple-size-n 2 --spec-ngram-simple-size-m 4", "-md MODEL"] {
        let extra = extra.replace("MODEL", &m.display().to_string());
        let out = chat(&["--flags", &format!("{base} {extra}"), "-n", "12"], turns);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra}: {stderr}");
        assert_eq!(out.stdout, plain.stdout, "{extra}: {stderr}");
        assert_eq!(stderr.matches("[speculative (").count(), 2, "{extra}: {stderr}");
    }
    let bad = format!("{base} -md {} --spec-draft-n-min 5 --spec-draft-n-max 2", m.display());
    let out = chat(&["--flags", &bad], "hi\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("n_min 5"), "{stderr}");
}

#[test]
fn a_named_or_file_template_and_no_jinja() {
    let m = model(None);
    let flags = format!("-m {} -c 512 -t 2 --temp 0", m.display());
    // No template in the model: an error naming the way out.
    let out = chat(&["--flags", &flags, "-n", "2"], "Hi\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no chat template") && stderr.contains("--chat-template"), "{stderr}");
    // A built-in name, the same template as Jinja text, and as a file with --no-jinja all
    // give the same answer.
    let named = chat(&["--flags", &flags, "-n", "4", "--chat-template", "chatml"], "Hi\n");
    assert!(named.status.success(), "{}", String::from_utf8_lossy(&named.stderr));
    let jinja = chat(&["--flags", &flags, "-n", "4", "--chat-template", CHATML], "Hi\n");
    assert!(jinja.status.success(), "{}", String::from_utf8_lossy(&jinja.stderr));
    std::fs::create_dir_all(dir()).unwrap();
    let file = dir().join("chatml.jinja");
    std::fs::write(&file, CHATML).unwrap();
    let builtin =
        chat(&["--flags", &flags, "-n", "4", "--chat-template-file", file.to_str().unwrap(), "--no-jinja"], "Hi\n");
    assert!(builtin.status.success(), "{}", String::from_utf8_lossy(&builtin.stderr));
    assert_eq!(named.stdout, jinja.stdout);
    assert_eq!(named.stdout, builtin.stdout);
    assert!(!named.stdout.is_empty());
}

#[test]
fn bad_templates_exit_2_naming_the_problem() {
    let m = model(None);
    let flags = format!("-m {} -c 512 -t 2 --temp 0", m.display());
    let cases: &[(&[&str], &str)] = &[
        (&["--chat-template", "{% for m in messages %}"], "does not parse"),
        (&["--chat-template", "{{ raise_exception('no way') }}"], "no way"),
        (&["--chat-template", "not-a-template", "--no-jinja"], "does not know the template"),
        (&["--chat-template-file", "/nonexistent/t.jinja"], "t.jinja"),
        // A misspelt built-in name is not taken as a template that renders that word.
        (&["--chat-template", "chatml2"], "neither a built-in template name"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--flags", flags.as_str(), "-n", "2"];
        all.extend_from_slice(args);
        let out = chat(&all, "Hi\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
