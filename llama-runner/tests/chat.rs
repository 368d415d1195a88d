//! Chat templates through llama.cpp's built-in formatter: the real model's own template, the
//! built-in ones by name, and bad input as errors (never an abort).

mod common;

use llama_runner::chat::{self, ChatMessage};
use llama_runner::{Backend, Error, Model, ModelOptions};
use tiny_gguf::ModelSpec;

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

fn main() {
    use common::Prerequisite;
    common::run_trials(vec![
        common::trial("real_model/template", common::real_model(), real_model_template),
        common::trial("builtin_templates", Prerequisite::Met(()), builtin_templates),
        common::trial("bad_input_is_an_error", Prerequisite::Met(()), bad_input_is_an_error),
    ])
}
