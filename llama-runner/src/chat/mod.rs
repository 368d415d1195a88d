//! Chat: typed messages, chat templates and multi-turn sessions that keep the KV cache.
//!
//! A [`ChatTemplate`] turns messages into a prompt, with one of two engines:
//!
//! * Jinja (feature `jinja`, the `minijinja` crate): the model's own `tokenizer.chat_template`
//!   (or any template text) rendered as Hugging Face's `transformers` and llama.cpp's Jinja
//!   engine render it (`trim_blocks`, `lstrip_blocks`, Python string methods,
//!   `raise_exception`, `strftime_now`), with tool definitions for templates that take them.
//!   Works for templates llama.cpp's built-in list does not know.
//! * llama.cpp's built-in formatter (`llama_chat_apply_template`): the common templates
//!   ([`builtin_templates`]: chatml, llama2/3, gemma, mistral, phi, deepseek, ...) by name, or
//!   recognised from their Jinja text, without a Jinja engine.
//!
//! Where both engines handle a template they render it identically (the crate's tests check
//! every built-in format). A [`ChatSession`] holds a conversation in a context and decodes only
//! what each turn adds.
//!
//! ```no_run
//! use llama_runner::chat::{ChatMessage, ChatTemplate, RenderOptions, apply_template};
//! use llama_runner::{Backend, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let messages = [ChatMessage::system("Be brief."), ChatMessage::user("Hello!")];
//! // The model's own template (Jinja with the `jinja` feature, else llama.cpp's formatter):
//! let template = ChatTemplate::from_model(&model)?;
//! let prompt = template.prompt(&messages, &RenderOptions::generation())?;
//! let tokens = model.tokenize(&prompt, true)?;
//! // Or a built-in template by name:
//! assert!(apply_template("chatml", &messages, true)?.starts_with("<|im_start|>system"));
//! # let _ = tokens;
//! # Ok(()) }
//! ```

use std::ffi::{CStr, CString, c_char};

use llama_sys as sys;

use crate::error::{Error, Result};
use crate::model::Model;

#[cfg(feature = "jinja")]
mod jinja;
mod session;

pub use session::{ChatReply, ChatSession, ChatStream, TurnStats};

/// The most bytes of message text (and template) accepted: llama.cpp returns the formatted
/// length as an `int32_t`.
pub const MAX_CHAT_BYTES: usize = 256 << 20;

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (or what the template knows).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role` with `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A `tool` message (a tool's result handed back to the model).
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }
}

pub(crate) fn chat_error(problem: impl Into<String>) -> Error {
    Error::ChatTemplate { problem: problem.into() }
}

/// The names of llama.cpp's built-in templates (`chatml`, `llama3`, `gemma`, ...), each
/// accepted by [`apply_template`].
pub fn builtin_templates() -> Vec<String> {
    // SAFETY: a null output with length 0 only counts.
    let n = unsafe { sys::llama_chat_builtin_templates(std::ptr::null_mut(), 0) };
    let mut names: Vec<*const c_char> = vec![std::ptr::null(); n.max(0) as usize];
    // SAFETY: `names` has room for `n` pointers; llama.cpp writes at most `len` of them, each a
    // static NUL-terminated string.
    let written = unsafe { sys::llama_chat_builtin_templates(names.as_mut_ptr(), names.len()) };
    names
        .iter()
        .take(written.max(0) as usize)
        .filter(|p| !p.is_null())
        // SAFETY: static NUL-terminated names (checked non-null).
        .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .collect()
}

/// Formats `messages` with `template`: a built-in name ([`builtin_templates`]) or a Jinja
/// template text that llama.cpp recognises (the model's own, usually). `add_assistant` ends the
/// prompt with the start of an assistant turn. An unrecognised template, a role the template
/// cannot place, text with a NUL byte or more than [`MAX_CHAT_BYTES`] are errors.
pub fn apply_template(template: &str, messages: &[ChatMessage], add_assistant: bool) -> Result<String> {
    let total = template.len() + messages.iter().map(|m| m.role.len() + m.content.len()).sum::<usize>();
    if total > MAX_CHAT_BYTES {
        return Err(chat_error(format!("{total} bytes of template and messages; at most {MAX_CHAT_BYTES}")));
    }
    let tmpl = CString::new(template).map_err(|_| chat_error("the template contains a NUL byte"))?;
    let mut owned = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = CString::new(m.role.as_str())
            .map_err(|_| chat_error(format!("message {i}: the role contains a NUL byte")))?;
        let content = CString::new(m.content.as_str())
            .map_err(|_| chat_error(format!("message {i}: the content contains a NUL byte")))?;
        owned.push((role, content));
    }
    let chat: Vec<sys::llama_chat_message> =
        owned.iter().map(|(r, c)| sys::llama_chat_message { role: r.as_ptr(), content: c.as_ptr() }).collect();
    let mut buf: Vec<u8> = vec![0; (2 * total).clamp(256, MAX_CHAT_BYTES)];
    for _ in 0..2 {
        // SAFETY: every pointer is NUL-terminated and outlives the call; `buf` holds
        // `buf.len()` bytes (≤ MAX_CHAT_BYTES < i32::MAX), which llama.cpp writes at most.
        let n = unsafe {
            sys::llama_chat_apply_template(
                tmpl.as_ptr(),
                chat.as_ptr(),
                chat.len(),
                add_assistant,
                buf.as_mut_ptr().cast(),
                buf.len() as i32,
            )
        };
        crate::logging::resume_panic();
        if n < 0 {
            return Err(chat_error(
                "llama.cpp does not recognise this template, or it cannot place these roles (its built-in \
                 formatter knows the templates of builtin_templates(), not arbitrary Jinja)",
            ));
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return String::from_utf8(buf).map_err(|_| chat_error("the formatted prompt is not UTF-8"));
        }
        if n > MAX_CHAT_BYTES {
            return Err(chat_error(format!("the formatted prompt has {n} bytes; at most {MAX_CHAT_BYTES}")));
        }
        buf = vec![0; n];
    }
    Err(chat_error("the formatted prompt changed size between two calls"))
}

impl Model {
    /// The model's chat template (`tokenizer.chat_template`, or `tokenizer.chat_template.NAME`
    /// for a named one such as `tool_use`), if the file has one.
    pub fn chat_template(&self, name: Option<&str>) -> Option<String> {
        let name = name.map(CString::new).transpose().ok()?;
        // SAFETY: valid model; the name is NUL-terminated or null (the default template); the
        // returned string lives in the model's metadata.
        let p = unsafe {
            sys::llama_model_chat_template(self.raw().as_ptr(), name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()))
        };
        // SAFETY: non-null: a NUL-terminated string owned by the model.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// [`apply_template`] with the model's own chat template; an error when it has none.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_assistant: bool) -> Result<String> {
        let template = self
            .chat_template(None)
            .ok_or_else(|| chat_error("the model has no chat template (tokenizer.chat_template)"))?;
        apply_template(&template, messages, add_assistant)
    }
}

/// What one rendering of a [`ChatTemplate`] gets besides the messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// End the prompt with the start of an assistant turn (`add_generation_prompt`).
    pub add_generation_prompt: bool,
    /// Tool (function) definitions as a JSON array, in the OpenAI format templates expect
    /// (`[{"type": "function", "function": {"name": ..., "parameters": {...}}}]`), passed to
    /// the template as `tools`. Jinja only: llama.cpp's built-in formatter takes no tools.
    pub tools: Option<String>,
    /// More template variables as a JSON object (llama.cpp's `--chat-template-kwargs`), e.g.
    /// `{"enable_thinking": false}`. Jinja only.
    pub extra: Option<String>,
}

impl RenderOptions {
    /// Options for a prompt that the model answers: `add_generation_prompt` on.
    pub fn generation() -> Self {
        RenderOptions { add_generation_prompt: true, ..Default::default() }
    }
}

/// A chat template ready to render messages: Jinja or llama.cpp's built-in formatter (see the
/// [module docs](self)), with the model's BOS/EOS token texts when made for a model.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    engine: Engine,
    bos_token: String,
    eos_token: String,
    add_bos: bool,
    add_eos: bool,
}

#[derive(Debug, Clone)]
enum Engine {
    /// A built-in name or a template text llama.cpp recognises.
    Builtin(String),
    #[cfg(feature = "jinja")]
    Jinja(Box<jinja::Jinja>),
}

impl ChatTemplate {
    fn new(engine: Engine) -> Self {
        ChatTemplate { engine, bos_token: String::new(), eos_token: String::new(), add_bos: false, add_eos: false }
    }

    /// llama.cpp's built-in formatter with `template`: a name of [`builtin_templates`] or a
    /// Jinja text llama.cpp recognises. An error when it recognises neither.
    pub fn builtin(template: &str) -> Result<Self> {
        apply_template(template, &[ChatMessage::user("x")], true).map_err(|_| {
            chat_error(format!(
                "llama.cpp's built-in formatter does not know the template {}; the built-in names are {}",
                describe_template(template),
                builtin_templates().join(", ")
            ))
        })?;
        Ok(Self::new(Engine::Builtin(template.to_owned())))
    }

    /// The Jinja template `source`, compiled; a syntax error is an error naming it. Without a
    /// model, `bos_token` and `eos_token` are empty: see [`for_model`](Self::for_model).
    #[cfg(feature = "jinja")]
    pub fn jinja(source: &str) -> Result<Self> {
        Ok(Self::new(Engine::Jinja(Box::new(jinja::Jinja::compile(source)?))))
    }

    /// The model's own chat template (`tokenizer.chat_template`): Jinja when the crate is built
    /// with the `jinja` feature, else llama.cpp's built-in formatter (which must recognise
    /// it). An error when the model has none: name a built-in one with
    /// [`builtin`](Self::builtin) (the real Gemma 3 GGUFs carry none; `gemma` formats them).
    pub fn from_model(model: &Model) -> Result<Self> {
        let source = model.chat_template(None).ok_or_else(|| {
            chat_error(
                "the model has no chat template (tokenizer.chat_template); name one, e.g. a built-in such as chatml",
            )
        })?;
        #[cfg(feature = "jinja")]
        let template = Self::jinja(&source)?;
        #[cfg(not(feature = "jinja"))]
        let template = Self::builtin(&source)?;
        Ok(template.for_model(model))
    }

    /// The template with `model`'s BOS and EOS token texts (`bos_token`, `eos_token` in Jinja)
    /// and its tokenizer's choice of adding them: [`prompt`](Self::prompt) then removes a
    /// BOS the template writes when tokenizing adds one anyway, as llama.cpp does.
    pub fn for_model(mut self, model: &Model) -> Self {
        let text = |t: Option<crate::model::Token>| t.and_then(|t| model.token_piece(t).ok()).unwrap_or_default();
        self.bos_token = text(model.bos());
        self.eos_token = text(model.eos());
        self.add_bos = model.adds_bos();
        self.add_eos = model.adds_eos();
        self
    }

    /// Whether the Jinja engine renders this template.
    pub fn is_jinja(&self) -> bool {
        !matches!(self.engine, Engine::Builtin(_))
    }

    /// Renders `messages` as the template writes them.
    pub fn render(&self, messages: &[ChatMessage], options: &RenderOptions) -> Result<String> {
        match &self.engine {
            Engine::Builtin(template) => {
                if options.tools.is_some() || options.extra.is_some() {
                    return Err(chat_error(
                        "llama.cpp's built-in formatter takes no tools or extra variables; use a Jinja template",
                    ));
                }
                apply_template(template, messages, options.add_generation_prompt)
            }
            #[cfg(feature = "jinja")]
            Engine::Jinja(j) => {
                let tools = options.tools.as_deref().map(|t| parse_json("tools", t, true)).transpose()?;
                let extra = match options.extra.as_deref() {
                    None => Vec::new(),
                    Some(e) => {
                        parse_json_object("extra", e)?.iter().map(|(k, v)| (k.clone(), jinja::json_value(v))).collect()
                    }
                };
                j.render(
                    messages,
                    jinja::Inputs {
                        add_generation_prompt: options.add_generation_prompt,
                        bos_token: &self.bos_token,
                        eos_token: &self.eos_token,
                        tools,
                        extra,
                    },
                )
            }
        }
    }

    /// [`render`](Self::render), then the BOS text removed from the start (and the EOS text
    /// from the end) when the model's tokenizer adds that token itself, as llama.cpp's chat
    /// code does: the text to tokenize with `add_special`.
    pub fn prompt(&self, messages: &[ChatMessage], options: &RenderOptions) -> Result<String> {
        let mut text = self.render(messages, options)?;
        if self.add_bos && !self.bos_token.is_empty() && text.starts_with(&self.bos_token) {
            text.drain(..self.bos_token.len());
        }
        if self.add_eos && !self.eos_token.is_empty() && text.ends_with(&self.eos_token) {
            text.truncate(text.len() - self.eos_token.len());
        }
        Ok(text)
    }
}

/// A template for an error message: its name, or the start of its text.
fn describe_template(t: &str) -> String {
    if t.len() <= 40 && !t.contains(['\n', '{']) {
        return format!("`{t}`");
    }
    let head: String = t.chars().take(40).collect();
    format!("starting {head:?}")
}

#[cfg(feature = "jinja")]
fn parse_json(what: &str, text: &str, array: bool) -> Result<minijinja::Value> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| chat_error(format!("{what}: not JSON: {e}")))?;
    if array && !v.is_array() {
        return Err(chat_error(format!("{what}: a JSON array of tool definitions expected")));
    }
    Ok(jinja::json_value(&v))
}

#[cfg(feature = "jinja")]
fn parse_json_object(what: &str, text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text).map_err(|e| chat_error(format!("{what}: not JSON: {e}")))? {
        serde_json::Value::Object(o) => Ok(o),
        _ => Err(chat_error(format!("{what}: a JSON object expected"))),
    }
}
