//! Chat prompts: the model's chat template (`tokenizer.chat_template` in the GGUF) and
//! llama.cpp's built-in template formatter (`llama_chat_apply_template`), which recognises the
//! common templates (chatml, llama2/3, gemma, mistral, phi, deepseek, ...) by name or by their
//! Jinja text and formats messages without a Jinja engine.
//!
//! ```no_run
//! use llama_runner::chat::{ChatMessage, apply_template};
//! use llama_runner::{Backend, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let messages = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hello!")];
//! let prompt = model.apply_chat_template(&messages, true)?;
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
}

fn chat_error(problem: impl Into<String>) -> Error {
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
