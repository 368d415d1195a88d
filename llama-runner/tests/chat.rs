//! Chat templates through llama.cpp's built-in formatter and the Jinja engine (feature
//! `jinja`): the real model's built-in `gemma` template, the built-in ones by name, generated
//! models carrying their own Jinja template, both engines rendering every built-in format the
//! same, multi-turn sessions that decode only what a turn adds (checked against a fresh
//! context decoding the whole conversation), and bad input as errors (never an abort).

mod common;

use llama_runner::chat::{self, ChatMessage, ChatSession, ChatTemplate, RenderOptions};
use llama_runner::{Backend, Context, ContextOptions, Error, Event, Model, ModelOptions, Sampler, StopConditions};
use tiny_gguf::ModelSpec;

/// A ChatML-style Jinja template as Hugging Face models write it (block tags on their own
/// lines, relying on trim_blocks / lstrip_blocks), which llama.cpp recognises as `chatml`.
const CHATML_JINJA: &str = "{% for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' -}}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' -}}
{% endif %}";

/// A template no built-in detection knows: it also uses `bos_token`, Python string methods,
/// `raise_exception`, loop controls and `tools`.
const CUSTOM_JINJA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}
    {% set system = messages[0]['content'] | trim %}
    {% set rest = messages[1:] %}
{% else %}
    {% set system = '' %}
    {% set rest = messages %}
{% endif %}
{% if tools is defined and tools %}
[TOOLS]{% for t in tools %}{{ t.function.name }}({{ t.function.parameters | tojson }});{% endfor %}[/TOOLS]
{% endif %}
{% for m in rest %}
    {% if m.role not in ['user', 'assistant', 'tool'] %}
        {{ raise_exception('unknown role ' + m.role) }}
    {% endif %}
    {% if m.content.startswith('SKIP') %}{% continue %}{% endif %}
>> {{ m.role.upper() }}{% if loop.first and system %} ({{ system }}){% endif %}: {{ m.content.strip() }}
{% endfor %}
{% if add_generation_prompt %}>> ASSISTANT:{% endif %}";

fn chat_model(template: &str) -> ModelSpec {
    ModelSpec { chat_template: Some(template.to_owned()), ..ModelSpec::tiny_llama() }
}

fn load_path(path: &std::path::Path) -> Model {
    Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap()
}

fn ctx_opts() -> ContextOptions {
    ContextOptions { n_ctx: 2048, n_threads: Some(2), ..Default::default() }
}

/// Greedy tokens a fresh context generates from `prompt` (the whole conversation decoded at
/// once): what a session that reuses its cache must also produce.
fn fresh_greedy(model: &Model, prompt: &str, n: usize) -> (Vec<i32>, String) {
    let mut ctx = Context::new(model, &ctx_opts()).unwrap();
    let tokens = model.tokenize(prompt, true).unwrap();
    let mut sampler = Sampler::greedy(model).unwrap();
    let events: Vec<Event> =
        ctx.stream(&mut sampler, &tokens, StopConditions::max_tokens(n)).unwrap().collect::<Result<_, _>>().unwrap();
    let text: String = events.iter().map(Event::text).collect();
    match events.last() {
        Some(Event::Done { generation, .. }) => (generation.tokens.clone(), text),
        other => panic!("no Done event: {other:?}"),
    }
}

/// The computation a session must do, written with the plain context API: the cache cut back
/// to the prefix it shares with the new prompt, the rest decoded in one call, then one token
/// at a time (the last one sampled not decoded). A session's answers equal these bit for bit.
struct Replay<'m> {
    model: &'m Model,
    ctx: Context<'m>,
    cached: Vec<i32>,
}

impl<'m> Replay<'m> {
    fn new(model: &'m Model) -> Self {
        Replay { model, ctx: Context::new(model, &ctx_opts()).unwrap(), cached: Vec::new() }
    }

    fn turn(&mut self, prompt: &[i32], n: usize) -> Vec<i32> {
        let keep = self.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        if keep < self.cached.len() {
            self.ctx.seq_remove(0, keep as i32..).unwrap();
        }
        self.cached.truncate(keep);
        self.ctx.decode(&prompt[keep..]).unwrap();
        self.cached.extend_from_slice(&prompt[keep..]);
        let mut out = Vec::new();
        while out.len() < n {
            let t = self.ctx.sample_greedy().unwrap();
            if self.model.is_eog(t) {
                break;
            }
            out.push(t);
            if out.len() < n {
                self.ctx.decode(&[t]).unwrap();
                self.cached.push(t);
            }
        }
        out
    }
}

/// Three turns of a session: each turn's answer equals the [`Replay`] of it, and, where
/// `fresh_equal`, also a fresh context's greedy answer to the whole rendered conversation
/// decoded at once (on a quantized model the answer tokens the cache holds were computed one
/// at a time, in batches of another shape than a fresh context's, so their keys differ in the
/// last bits and near-ties can go the other way); the second and third turns reuse the cache
/// up to at least the previous prompt (the templates here render an assistant turn as the
/// generation prompt followed by the answer) and decode only the rest.
fn multi_turn(model: &Model, template: ChatTemplate, n: usize, fresh_equal: bool) {
    let mut replay = Replay::new(model);
    let ctx = Context::new(model, &ctx_opts()).unwrap();
    let mut chat = ChatSession::new(ctx, template.clone());
    chat.push(ChatMessage::system("You answer in one short sentence."));
    let mut sampler = Sampler::greedy(model).unwrap();
    let mut previous_prompt = 0;
    for (turn, question) in
        ["What is the capital of France?", "And of Italy?", "Which of them is bigger?"].iter().enumerate()
    {
        let mut history = chat.messages().to_vec();
        history.push(ChatMessage::user(*question));
        let rendered = template.prompt(&history, &RenderOptions::generation()).unwrap();
        let all = model.tokenize(&rendered, true).unwrap();
        let (fresh, fresh_text) = fresh_greedy(model, &rendered, n);
        let replayed = replay.turn(&all, n);

        let reply = chat.reply(*question, &mut sampler, StopConditions::max_tokens(n)).unwrap();
        assert_eq!(reply.generation.tokens, replayed, "turn {turn}: the session's answer differs from the replay");
        assert_eq!(chat.cached_tokens(), replay.cached, "turn {turn}: the cache holds other tokens");
        if fresh_equal || turn == 0 {
            assert_eq!(
                reply.generation.tokens, fresh,
                "turn {turn}: the session's answer differs from a fresh context's"
            );
            assert_eq!(reply.text, fresh_text);
        } else if reply.generation.tokens != fresh {
            eprintln!("turn {turn}: a fresh context answers {fresh:?}, the session (as its replay) {replayed:?}");
        }
        assert_eq!(reply.stats.n_prompt, all.len());
        assert_eq!(reply.stats.n_decoded, reply.stats.n_prompt - reply.stats.n_reused);
        assert_eq!(reply.generation.n_prompt, reply.stats.n_decoded, "turn {turn}: tokens processed");
        if turn == 0 {
            assert_eq!(reply.stats.n_reused, 0);
        } else {
            // Everything up to the previous answer is reused; what is decoded is this turn's
            // text and the part of the previous answer whose re-tokenization differs.
            assert!(
                reply.stats.n_reused >= previous_prompt,
                "turn {turn}: reused {} < previous prompt {previous_prompt}",
                reply.stats.n_reused
            );
            let new_text = template.prompt(&history[history.len() - 1..], &RenderOptions::generation()).unwrap();
            let new_tokens = model.tokenize(&new_text, false).unwrap().len();
            eprintln!(
                "turn {turn}: prompt {} tokens, reused {}, decoded {} (the new message alone is {new_tokens})",
                reply.stats.n_prompt, reply.stats.n_reused, reply.stats.n_decoded
            );
            assert!(reply.stats.n_decoded < reply.stats.n_prompt / 2, "turn {turn}: {:?}", reply.stats);
        }
        previous_prompt = reply.stats.n_prompt;
        assert_eq!(chat.messages().last().unwrap(), &ChatMessage::assistant(reply.text.clone()));
        assert_eq!(chat.cached_tokens().len(), chat.context().n_past());
    }
    assert_eq!(chat.messages().len(), 7);
    chat.reset();
    assert!(chat.messages().is_empty());
    assert_eq!(chat.context().n_past(), 0);
}

/// The real model with llama.cpp's built-in `gemma` template: three turns, the cache reused.
fn real_model_session(path: std::path::PathBuf) {
    let model = load_path(&path);
    let template = ChatTemplate::builtin("gemma").unwrap().for_model(&model);
    assert!(!template.is_jinja());
    multi_turn(&model, template, 24, true);
}

/// Turn 2 decodes exactly what turn 1 did not leave in the cache: its own tokens and the end
/// of the first answer (`<end_of_turn>`, not decoded when it stopped generation).
fn real_model_second_turn_decodes_only_new_tokens(path: std::path::PathBuf) {
    let model = load_path(&path);
    let template = ChatTemplate::builtin("gemma").unwrap().for_model(&model);
    let mut chat = ChatSession::new(Context::new(&model, &ctx_opts()).unwrap(), template.clone());
    let mut sampler = Sampler::greedy(&model).unwrap();
    let first = chat.reply("Say hello.", &mut sampler, StopConditions::max_tokens(48)).unwrap();
    let cached = chat.cached_tokens().to_vec();
    assert_eq!(
        cached.len(),
        first.stats.n_prompt + first.generation.tokens.len() - usize::from(!first.generation.stopped_at_eog)
    );
    let second = chat.reply("Now say goodbye.", &mut sampler, StopConditions::max_tokens(8)).unwrap();
    let full =
        model.tokenize(&template.prompt(&chat.messages()[..3], &RenderOptions::generation()).unwrap(), true).unwrap();
    let shared = cached.iter().zip(&full).take_while(|(a, b)| a == b).count();
    assert_eq!(second.stats.n_reused, shared);
    assert_eq!(second.stats.n_decoded, full.len() - shared);
    eprintln!(
        "first turn: {} prompt tokens, {} generated ({:?}); second turn: {} prompt tokens, {} reused, {} decoded",
        first.stats.n_prompt,
        first.generation.tokens.len(),
        first.reason,
        second.stats.n_prompt,
        second.stats.n_reused,
        second.stats.n_decoded
    );
    if first.generation.stopped_at_eog {
        // The whole first answer round-trips through the template: only the new turn is decoded.
        assert_eq!(shared, cached.len(), "the answer's tokens re-tokenize differently");
    }
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello!"),
        ChatMessage::new("assistant", "Hi."),
        ChatMessage::new("user", "Name a colour."),
    ]
}

/// The real model (Gemma 3 270M) ships without `tokenizer.chat_template`: llama.cpp's
/// built-in `gemma` template formats its turns (the system prompt goes into the first user
/// turn), and the turn markers are single special tokens of its vocabulary.
fn real_model_template(path: std::path::PathBuf) {
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    assert_eq!(model.chat_template(None), None);
    assert!(model.apply_chat_template(&messages(), true).unwrap_err().to_string().contains("no chat template"));
    let prompt = chat::apply_template("gemma", &messages(), true).unwrap();
    assert_eq!(
        prompt,
        "<start_of_turn>user\nBe brief.\n\nHello!<end_of_turn>\n<start_of_turn>model\nHi.<end_of_turn>\n\
         <start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
    );
    let without = chat::apply_template("gemma", &messages(), false).unwrap();
    assert_eq!(format!("{without}<start_of_turn>model\n"), prompt);
    let start = model.tokenize("<start_of_turn>", false).unwrap();
    assert_eq!(start.len(), 1, "{start:?}");
    let tokens = model.tokenize(&prompt, true).unwrap();
    assert_eq!(tokens.iter().filter(|&&t| t == start[0]).count(), 4);
}

fn builtin_templates(_: ()) {
    let names = chat::builtin_templates();
    assert!(names.len() > 20, "{names:?}");
    for n in ["chatml", "llama3", "gemma", "mistral-v7", "phi3"] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert_eq!(
        chat::apply_template("chatml", &messages()[..2], true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    );
    // Every built-in formats a plain chat or says it cannot; none aborts.
    let mut ok = 0;
    for n in &names {
        match chat::apply_template(n, &messages(), true) {
            Ok(p) => {
                assert!(p.contains("Name a colour."), "{n}: {p:?}");
                ok += 1;
            }
            Err(e) => assert!(matches!(e, Error::ChatTemplate { .. }), "{n}: {e:?}"),
        }
    }
    assert!(ok > 20, "{ok} of {} built-ins formatted the chat", names.len());
    // A long chat grows the buffer.
    let long = vec![ChatMessage::new("user", "x".repeat(100_000))];
    assert_eq!(
        chat::apply_template("chatml", &long, false).unwrap().len(),
        100_000 + "<|im_start|>user\n<|im_end|>\n".len()
    );
}

/// Speculative turns (n-gram drafting from the whole conversation, greedy) answer exactly as
/// plain turns do, over two turns that quote the conversation, and leave the same cache; a
/// speculative answer dropped after a few events leaves the cache holding what the
/// conversation records.
fn real_model_speculative_session(path: std::path::PathBuf) {
    use llama_runner::speculative::NgramDraft;
    let model = load_path(&path);
    let template = ChatTemplate::builtin("gemma").unwrap().for_model(&model);
    let mut plain = ChatSession::new(Context::new(&model, &ctx_opts()).unwrap(), template.clone());
    let mut spec = ChatSession::new(Context::new(&model, &ctx_opts()).unwrap(), template.clone());
    let mut sampler = Sampler::greedy(&model).unwrap();
    let mut drafter = NgramDraft::default();
    let turns = [
        "Repeat this sentence exactly: the fox jumped over the fence, ran across the field and hid under the old oak tree.",
        "Repeat it once more, exactly.",
    ];
    let (mut drafted, mut accepted) = (0, 0);
    for turn in turns {
        let a = plain.reply(turn, &mut sampler, StopConditions::max_tokens(40)).unwrap();
        let mut stream =
            spec.respond_speculative(turn, &mut sampler, StopConditions::max_tokens(40), &mut drafter).unwrap();
        let mut done = None;
        for e in stream.by_ref() {
            if let Event::Done { generation, .. } = e.unwrap() {
                done = Some(generation);
            }
        }
        let stats = stream.speculation().cloned().unwrap();
        let text = stream.text().to_string();
        drop(stream);
        assert_eq!(text, a.text, "turn {turn:?}");
        assert_eq!(done.unwrap().tokens, a.generation.tokens);
        assert_eq!(spec.cached_tokens(), plain.cached_tokens());
        assert_eq!(spec.context().n_past(), spec.cached_tokens().len());
        drafted += stats.drafted;
        accepted += stats.accepted;
        eprintln!("{turn:?}: {:?} — drafted {}, accepted {}", a.text, stats.drafted, stats.accepted);
    }
    assert!(accepted > 0, "quoting the conversation: nothing accepted of {drafted}");
    // Dropped early: the events of a verification batch not taken leave the cache too.
    let mut stream =
        spec.respond_speculative(turns[0], &mut sampler, StopConditions::max_tokens(40), &mut drafter).unwrap();
    for _ in 0..3 {
        stream.next().unwrap().unwrap();
    }
    drop(stream);
    assert_eq!(spec.context().n_past(), spec.cached_tokens().len());
    let text = &spec.messages().last().unwrap().content;
    assert!(!text.is_empty());
}

fn bad_input_is_an_error(_: ()) {
    let e = |r: llama_runner::Result<String>| r.unwrap_err().to_string();
    assert!(
        e(chat::apply_template("{% for m in messages %}{{ m.unknown }}{% endfor %}", &messages(), true))
            .contains("does not recognise")
    );
    assert!(e(chat::apply_template("", &messages(), true)).contains("chat template"));
    assert!(e(chat::apply_template("chat\0ml", &messages(), true)).contains("NUL"));
    assert!(e(chat::apply_template("chatml", &[ChatMessage::new("user", "a\0b")], true)).contains("message 0"));
    assert!(e(chat::apply_template("chatml", &[ChatMessage::new("us\0er", "ab")], true)).contains("role"));
    // A model without a template.
    let model = Model::load(Backend::get().unwrap(), common::model(&ModelSpec::tiny_llama()), &ModelOptions::default())
        .unwrap();
    assert_eq!(model.chat_template(None), None);
    assert!(e(model.apply_chat_template(&messages(), true)).contains("no chat template"));
    assert_eq!(model.chat_template(Some("a\0b")), None);
}

/// A session on a generated model that carries a ChatML Jinja template: rendered with the
/// built-in formatter (llama.cpp recognises it) and, with the feature, with Jinja.
fn generated_model_session(_: ()) {
    let model = load_path(&common::model(&chat_model(CHATML_JINJA)));
    assert_eq!(model.chat_template(None).as_deref(), Some(CHATML_JINJA));
    let builtin = ChatTemplate::builtin(&model.chat_template(None).unwrap()).unwrap().for_model(&model);
    multi_turn(&model, builtin.clone(), 12, true);
    let from_model = ChatTemplate::from_model(&model).unwrap();
    assert_eq!(from_model.is_jinja(), cfg!(feature = "jinja"));
    for add in [false, true] {
        let o = RenderOptions { add_generation_prompt: add, ..Default::default() };
        assert_eq!(from_model.render(&messages(), &o).unwrap(), builtin.render(&messages(), &o).unwrap());
    }
    multi_turn(&model, from_model, 12, true);
}

/// Cancelling an answer from another thread: the stream ends with `Aborted`, the partial
/// answer is kept, and the next turn's answer equals a fresh context's.
fn cancelled_turn_keeps_the_session_usable(_: ()) {
    let model = load_path(&common::model(&chat_model(CHATML_JINJA)));
    let template = ChatTemplate::builtin("chatml").unwrap().for_model(&model);
    let mut chat = ChatSession::new(Context::new(&model, &ctx_opts()).unwrap(), template.clone());
    let mut sampler = Sampler::greedy(&model).unwrap();
    let cancel = chat.cancel_handle();
    let mut stream = chat.respond("Tell me a long story.", &mut sampler, StopConditions::max_tokens(1000)).unwrap();
    let mut n = 0;
    let err = loop {
        match stream.next().unwrap() {
            Ok(Event::Token { .. }) => {
                n += 1;
                if n == 5 {
                    // As another thread would: the flag is shared.
                    std::thread::scope(|s| {
                        s.spawn(|| cancel.cancel());
                    });
                }
            }
            Ok(e) => panic!("unexpected {e:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Aborted), "{err}");
    let partial = stream.text().to_owned();
    drop(stream);
    assert_eq!(chat.messages().last().unwrap(), &ChatMessage::assistant(partial));
    assert_eq!(chat.cached_tokens().len(), chat.context().n_past());

    let mut history = chat.messages().to_vec();
    history.push(ChatMessage::user("Shorter, please."));
    let (expected, _) = fresh_greedy(&model, &template.prompt(&history, &RenderOptions::generation()).unwrap(), 10);
    let reply = chat.reply("Shorter, please.", &mut sampler, StopConditions::max_tokens(10)).unwrap();
    assert_eq!(reply.generation.tokens, expected);
    assert!(reply.stats.n_reused > 0);
}

/// Errors: a model without a template, a template that fails, tools without Jinja, a
/// conversation that does not fit, and a session with no messages; the failed turn leaves the
/// conversation as it was.
fn session_errors(_: ()) {
    let plain = load_path(&common::model(&ModelSpec::tiny_llama()));
    let e = ChatTemplate::from_model(&plain).unwrap_err().to_string();
    assert!(e.contains("no chat template"), "{e}");
    let e = ChatTemplate::builtin("not-a-template").unwrap_err().to_string();
    assert!(e.contains("`not-a-template`") && e.contains("chatml"), "{e}");
    let chatml = ChatTemplate::builtin("chatml").unwrap();
    let tools = RenderOptions { tools: Some("[]".into()), ..RenderOptions::generation() };
    assert!(chatml.render(&[ChatMessage::user("x")], &tools).unwrap_err().to_string().contains("no tools"));

    let small = ContextOptions { n_ctx: 64, ..ctx_opts() };
    let mut chat = ChatSession::new(Context::new(&plain, &small).unwrap(), chatml.for_model(&plain));
    let mut sampler = Sampler::greedy(&plain).unwrap();
    assert!(matches!(chat.generate(&mut sampler, StopConditions::max_tokens(4)), Err(Error::EmptyInput { .. })));
    // Far too long to fit: refused by its length, without tokenizing it (llama.cpp's byte
    // fallback takes minutes on megabytes); a little too long: tokenized, then refused.
    let t = std::time::Instant::now();
    let e = chat.reply("x".repeat(10_000_000), &mut sampler, StopConditions::max_tokens(4)).unwrap_err();
    assert!(matches!(e, Error::TextTooLong { n_tokens: None, .. }), "{e}");
    assert!(t.elapsed().as_secs() < 5, "refused at once");
    assert!(chat.messages().is_empty(), "the refused message was taken back");
    let e = chat.reply("x".repeat(400), &mut sampler, StopConditions::max_tokens(4)).unwrap_err();
    assert!(matches!(e, Error::TextTooLong { max_tokens, n_tokens: Some(n), .. } if n > max_tokens), "{e}");
    assert!(chat.messages().is_empty(), "the refused message was taken back");
    let e = chat
        .respond("hi", &mut sampler, StopConditions { stop_strings: vec![String::new()], ..Default::default() })
        .unwrap_err();
    assert!(matches!(e, Error::EmptyStopString), "{e}");
    assert!(chat.messages().is_empty());
    let ok = chat.reply("hi", &mut sampler, StopConditions::max_tokens(3)).unwrap();
    assert_eq!(ok.generation.tokens.len(), 3);
    assert_eq!(chat.messages().len(), 2);
}

#[cfg(feature = "jinja")]
mod jinja {
    use super::*;

    /// The model's own (non-standard) template through Jinja: `bos_token`, string methods,
    /// loop controls, `raise_exception`, tools and extra variables; the BOS the template
    /// writes is not doubled by tokenizing.
    pub fn model_template(_: ()) {
        let model = load_path(&common::model(&chat_model(CUSTOM_JINJA)));
        let template = ChatTemplate::from_model(&model).unwrap();
        assert!(template.is_jinja());
        assert!(ChatTemplate::builtin(CUSTOM_JINJA).is_err(), "llama.cpp's formatter does not know it");
        let messages = [
            ChatMessage::system("  Be brief.  "),
            ChatMessage::user(" Hi "),
            ChatMessage::user("SKIP this"),
            ChatMessage::assistant("Hello."),
        ];
        let rendered = template.render(&messages, &RenderOptions::generation()).unwrap();
        assert_eq!(rendered, "<s>>> USER (Be brief.): Hi\n>> ASSISTANT: Hello.\n>> ASSISTANT:");
        let prompt = template.prompt(&messages, &RenderOptions::generation()).unwrap();
        assert_eq!(prompt, &rendered["<s>".len()..], "BOS removed: the tokenizer adds it");
        let tokens = model.tokenize(&prompt, true).unwrap();
        assert_eq!(tokens.iter().filter(|&&t| t == 1).count(), 1, "one BOS");
        assert_eq!(
            template.render(&messages, &RenderOptions::default()).unwrap(),
            rendered.strip_suffix(">> ASSISTANT:").unwrap()
        );

        let tools = r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;
        let with_tools = RenderOptions { tools: Some(tools.into()), ..RenderOptions::generation() };
        let out = template.render(&[ChatMessage::user("Weather in Paris?")], &with_tools).unwrap();
        assert!(
            out.contains(r#"[TOOLS]get_weather({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});[/TOOLS]"#),
            "{out}"
        );
        let e = template.render(&[ChatMessage::new("robot", "x")], &RenderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("unknown role robot"), "{e}");
        for (tools, problem) in [("{", "not JSON"), (r#"{"a": 1}"#, "JSON array")] {
            let o = RenderOptions { tools: Some(tools.into()), ..Default::default() };
            let e = template.render(&messages, &o).unwrap_err().to_string();
            assert!(e.contains(problem), "{tools}: {e}");
        }
        let extra = RenderOptions { extra: Some(r#"{"bos_token": "[BOS]"}"#.into()), ..Default::default() };
        assert!(template.render(&messages, &extra).unwrap().starts_with("[BOS]>> USER"));
        let extra = RenderOptions { extra: Some("[1]".into()), ..Default::default() };
        assert!(template.render(&messages, &extra).unwrap_err().to_string().contains("JSON object"));

        // A session with it.
        super::multi_turn(&model, template, 8, true);
    }

    /// Every built-in format of llama.cpp, as a Jinja text (tests/chat_templates/, written for
    /// this workspace): Jinja renders it exactly as llama.cpp's formatter does by name, on this
    /// machine's build; llama.cpp also recognises the text as that format (except the two its
    /// detection cannot return, which the fixtures name); and the stored outputs still hold.
    pub fn every_builtin_format_renders_the_same(_: ()) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_templates");
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
        let sets: Vec<Vec<ChatMessage>> = cases["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| {
                set.as_array()
                    .unwrap()
                    .iter()
                    .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                    .collect()
            })
            .collect();
        // As the fixtures were written: llama.cpp's formatter writes these literally.
        let tokens = Some(r#"{"bos_token": "<s>", "eos_token": "</s>"}"#.to_string());
        let names = chat::builtin_templates();
        let missing: Vec<&String> = names.iter().filter(|n| !dir.join(format!("{n}.jinja")).is_file()).collect();
        assert!(missing.is_empty(), "built-in formats without a Jinja fixture: {missing:?}");
        let mut undetectable = Vec::new();
        for name in &names {
            let source = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
            let template = ChatTemplate::jinja(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
            let fixture = &cases["templates"][name.as_str()];
            let detection = fixture.get("detection");
            for (i, set) in sets.iter().enumerate() {
                for add in [false, true] {
                    let by_name = chat::apply_template(name, set, add).unwrap();
                    let o = RenderOptions { add_generation_prompt: add, extra: tokens.clone(), ..Default::default() };
                    let jinja = template.render(set, &o).unwrap_or_else(|e| panic!("{name} case {i}: {e}"));
                    assert_eq!(jinja, by_name, "{name}, case {i}, add_generation_prompt {add}: Jinja vs llama.cpp");
                    let stored = fixture["expected"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["case"] == i && e["add_generation_prompt"] == add)
                        .unwrap_or_else(|| panic!("{name}: no stored output for case {i}"));
                    assert_eq!(stored["output"].as_str().unwrap(), by_name, "{name}, case {i}: the fixture is stale");
                    match detection {
                        None => assert_eq!(
                            chat::apply_template(&source, set, add).unwrap_or_else(|e| panic!("{name}: {e}")),
                            by_name,
                            "{name}: llama.cpp does not detect the text as {name}"
                        ),
                        Some(d) => {
                            // The text is detected as another format, or not at all: never as this one.
                            let detected = chat::apply_template(&source, set, add).ok();
                            if i == 1 && !add {
                                assert_ne!(detected.as_deref(), Some(by_name.as_str()), "{name} became detectable");
                                undetectable.push(format!("{name} ({})", d["detects_as"]));
                            }
                        }
                    }
                }
            }
        }
        eprintln!(
            "{} built-in formats rendered identically by Jinja and llama.cpp; detection from the text works for all but {}",
            names.len(),
            undetectable.join(", ")
        );
        assert!(undetectable.len() <= 2, "{undetectable:?}");
    }

    /// A generated model (sliding-window gemma3, Q8_0) carrying the Gemma-format Jinja
    /// template: the session renders it with Jinja, and its answers equal the replay's.
    pub fn gemma_format_session(_: ()) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_templates");
        let source = std::fs::read_to_string(dir.join("gemma.jinja")).unwrap();
        let model = load_path(&common::model(&ModelSpec { chat_template: Some(source), ..ModelSpec::tiny_swa() }));
        let template = ChatTemplate::from_model(&model).unwrap();
        assert!(template.is_jinja());
        assert_eq!(
            template.render(&messages(), &RenderOptions::generation()).unwrap(),
            chat::apply_template("gemma", &messages(), true).unwrap()
        );
        super::multi_turn(&model, template, 8, false);
    }

    /// Hostile or broken templates are errors naming the problem, never a crash, a hang or
    /// an out-of-memory abort.
    pub fn bad_templates_are_errors(_: ()) {
        let m = [ChatMessage::user("hi")];
        let cases: &[(&str, &str)] = &[
            ("{% for m in messages %}", "does not parse"),
            ("{{ messages[0].content ", "does not parse"),
            ("{% if %}x{% endif %}", "does not parse"),
            ("{% endfor %}", "does not parse"),
            ("{{ 'a' ~ }}", "does not parse"),
            ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion"),
            ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "instructions"),
            ("{{ 'x' * 100000000000 }}", ""),
            (
                "{% set s = namespace(v='x') %}{% for i in range(60) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}",
                "",
            ),
            ("{{ range(10000000000) }}", "too many"),
            ("{{ raise_exception('no system prompt allowed') }}", "no system prompt allowed"),
            ("{{ messages[5].content }}", "render"),
            ("{{ messages.content.upper() }}", "render"),
            ("{{ strftime_now('%Q') }}", "not supported"),
            ("{{ 1 / 0 }}", "render"),
            ("{{ messages | unknownfilter }}", "unknownfilter"),
            ("{% include 'other' %}", "render"),
        ];
        for (source, needle) in cases {
            let t0 = std::time::Instant::now();
            let result = ChatTemplate::jinja(source).and_then(|t| t.render(&m, &RenderOptions::generation()));
            let e = result.expect_err(source).to_string();
            assert!(e.contains(needle), "{source}: {e}");
            assert!(e.starts_with("chat template: "), "{source}: {e}");
            eprintln!("{:>8.1} ms  {source}: {e}", t0.elapsed().as_secs_f64() * 1e3);
        }
        // Deep nesting in the parser is refused, not a stack overflow.
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
        assert!(ChatTemplate::jinja(&deep).is_err());
        // strftime_now works (Llama 3 templates date their system prompt with it).
        let t = ChatTemplate::jinja("{{ strftime_now('%d %b %Y') }}").unwrap();
        let date = t.render(&m, &RenderOptions::default()).unwrap();
        assert_eq!(date.len(), 11, "{date}");
    }
}

fn jinja_trial(name: &str, test: fn(())) -> libtest_mimic::Trial {
    let prerequisite = if cfg!(feature = "jinja") {
        common::Prerequisite::Met(())
    } else {
        common::Prerequisite::Missing("llama-runner built without the jinja feature".into())
    };
    common::trial(name, prerequisite, test)
}

#[cfg(not(feature = "jinja"))]
mod jinja {
    pub fn model_template(_: ()) {}
    pub fn bad_templates_are_errors(_: ()) {}
    pub fn every_builtin_format_renders_the_same(_: ()) {}
    pub fn gemma_format_session(_: ()) {}
}

fn main() {
    use common::Prerequisite;
    common::run_trials(vec![
        common::trial("real_model/template", common::real_model(), real_model_template),
        common::trial("real_model/session", common::real_model(), real_model_session),
        common::trial("real_model/speculative_session", common::real_model(), real_model_speculative_session),
        common::trial(
            "real_model/second_turn_decodes_only_new_tokens",
            common::real_model(),
            real_model_second_turn_decodes_only_new_tokens,
        ),
        common::trial("builtin_templates", Prerequisite::Met(()), builtin_templates),
        common::trial("bad_input_is_an_error", Prerequisite::Met(()), bad_input_is_an_error),
        common::trial("generated_model_session", Prerequisite::Met(()), generated_model_session),
        common::trial(
            "cancelled_turn_keeps_the_session_usable",
            Prerequisite::Met(()),
            cancelled_turn_keeps_the_session_usable,
        ),
        common::trial("session_errors", Prerequisite::Met(()), session_errors),
        jinja_trial("jinja/model_template", jinja::model_template),
        jinja_trial("jinja/bad_templates_are_errors", jinja::bad_templates_are_errors),
        jinja_trial("jinja/every_builtin_format_renders_the_same", jinja::every_builtin_format_renders_the_same),
        jinja_trial("jinja/gemma_format_session", jinja::gemma_format_session),
    ])
}
