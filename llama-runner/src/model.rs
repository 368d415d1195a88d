//! A loaded model.

use std::ffi::{CString, c_char, c_void};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_sys as sys;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::gguf_check::LoadOptions;
use crate::options::ModelOptions;
use crate::params::{self, RawModelParams};

/// What a tokenizer call reports when llama.cpp threw (the shim caught it).
pub(crate) const THREW: &str =
    "llama.cpp's tokenizer failed on this text (the vocabulary lacks a token it needs, e.g. a byte token)";

/// A token id.
pub type Token = sys::llama_token;

/// A model loaded from a GGUF file. Frees itself on drop; contexts borrow it.
pub struct Model {
    raw: NonNull<sys::llama_model>,
    path: PathBuf,
    options: ModelOptions,
    /// Unique in the process (never reused, unlike the pointer): ties saved states to it.
    id: u64,
    /// The same file loaded with `no_alloc`, for dry runs of contexts ([`crate::memory`]),
    /// loaded on first use (`None`: llama.cpp refused it). Declared before `_params`, whose
    /// pointers it was loaded with, so that it is freed first.
    dry: std::sync::OnceLock<Option<crate::memory::DryModel>>,
    /// The longest token piece in bytes, computed on first use ([`Model::tokenize_at_most`]).
    max_piece: std::sync::OnceLock<usize>,
    // Owns every pointer inside the params handed to llama.cpp; lives as long as the model.
    _params: RawModelParams,
}

// SAFETY: a llama_model is immutable after loading and has no thread affinity; llama.cpp
// supports one model serving several contexts on several threads at once (llama-server's slots
// and llama-batched do this), and the whole model is freed only in Drop, which needs ownership.
unsafe impl Send for Model {}
// SAFETY: every method through `&Model` only reads the model or its vocabulary: metadata,
// sizes, and tokenization, which llama.h documents as thread-safe ("Tokenization: The API is
// thread-safe"). The lowered parameters it keeps are never written after loading.
unsafe impl Sync for Model {}

/// What a model is, from its metadata.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModelInfo {
    /// `general.architecture` (`llama`, `qwen3moe`, ...).
    pub architecture: String,
    /// llama.cpp's one-line description (`qwen3moe 30B.A3B Q8_0`).
    pub description: String,
    /// The file type (`Q8_0`, `Q4_K - Medium`).
    pub file_type: String,
    /// Number of parameters.
    pub n_params: u64,
    /// Size of all tensors in bytes.
    pub size_bytes: u64,
    /// Number of layers.
    pub n_layer: u32,
    /// Embedding width.
    pub n_embd: u32,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Vocabulary size.
    pub n_vocab: u32,
    /// Number of experts (0 for dense models).
    pub n_expert: u32,
}

impl Model {
    /// Loads a model. The file is checked first (exists, readable, GGUF magic), so a bad path
    /// gets a clear error rather than whatever llama.cpp makes of it, and then its metadata is
    /// validated against llama.cpp's rules ([`check_gguf`](crate::check_gguf)), so a file
    /// llama.cpp would abort the process on is refused with [`Error::InvalidGguf`].
    pub fn load(backend: &Backend, path: impl AsRef<Path>, options: &ModelOptions) -> Result<Model> {
        Model::load_with(backend, path, options, &LoadOptions::default())
    }

    /// [`Model::load`] with [`LoadOptions`]: `validate_gguf: false` skips the metadata check,
    /// for a caller that has already run [`check_gguf`](crate::check_gguf) on the file.
    pub fn load_with(
        backend: &Backend,
        path: impl AsRef<Path>,
        options: &ModelOptions,
        load: &LoadOptions,
    ) -> Result<Model> {
        load_impl(backend, path.as_ref(), options, load, None)
    }

    /// [`Model::load_with`], reporting progress: llama.cpp calls `progress` on this thread with
    /// the fraction of the tensor data loaded so far (0.0 to 1.0, non-decreasing; 1.0 last, once
    /// the data is in place), about once per tensor. Returning `false` cancels the load:
    /// llama.cpp frees what it had allocated and this returns [`Error::LoadCancelled`]. A panic
    /// inside `progress` never unwinds through llama.cpp: it is caught, the load is cancelled,
    /// and this returns [`Error::ProgressPanicked`] with the panic's message (after the panic
    /// hook has reported it, as for any panic). After a `false` or a panic `progress` is not
    /// called again.
    ///
    /// ```no_run
    /// # fn main() -> llama_runner::Result<()> {
    /// use llama_runner::{Backend, LoadOptions, Model, ModelOptions};
    /// let backend = Backend::get()?;
    /// let (options, load) = (ModelOptions::default(), LoadOptions::default());
    /// let model = Model::load_with_progress(backend, "model.gguf", &options, &load, |f| {
    ///     eprint!("\r{:3.0}%", f * 100.0);
    ///     true // false cancels the load
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn load_with_progress(
        backend: &Backend,
        path: impl AsRef<Path>,
        options: &ModelOptions,
        load: &LoadOptions,
        mut progress: impl FnMut(f32) -> bool,
    ) -> Result<Model> {
        load_impl(backend, path.as_ref(), options, load, Some(&mut progress))
    }

    /// The raw `llama_model`, for calls this crate does not wrap.
    ///
    /// # Safety
    ///
    /// The pointer is valid while `self` lives. The caller must not free it and may use it only
    /// for calls that read the model (llama.cpp shares a loaded model between threads on that
    /// basis, and [`Model`] is `Sync` because of it).
    pub unsafe fn as_ptr(&self) -> *mut sys::llama_model {
        self.raw.as_ptr()
    }

    pub(crate) fn raw(&self) -> NonNull<sys::llama_model> {
        self.raw
    }

    /// Identifies this model among all models loaded by the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The lowered parameters it was loaded with.
    pub(crate) fn raw_params(&self) -> &RawModelParams {
        &self._params
    }

    /// The model loaded again with `no_alloc` ([`crate::memory`]), once.
    pub(crate) fn dry_model(&self) -> Option<&crate::memory::DryModel> {
        self.dry.get_or_init(|| crate::memory::DryModel::load(self)).as_ref()
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    pub(crate) fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: the model is valid.
        unsafe { sys::llama_model_get_vocab(self.raw.as_ptr()) }
    }

    /// A metadata value as a string (`general.name`), if present.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: the buffer is valid for `buf.len()` bytes.
            let n = unsafe {
                sys::llama_model_meta_val_str(self.raw.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
    }

    /// Metadata summary.
    pub fn info(&self) -> ModelInfo {
        let m = self.raw.as_ptr();
        let mut desc = [0u8; 256];
        // SAFETY: valid model and buffer of the given size.
        let n = unsafe { sys::llama_model_desc(m, desc.as_mut_ptr().cast(), desc.len()) };
        let description = String::from_utf8_lossy(&desc[..(n.max(0) as usize).min(desc.len())]).into_owned();
        let architecture = self.meta("general.architecture").unwrap_or_default();
        let n_expert = self.meta(&format!("{architecture}.expert_count")).and_then(|v| v.parse().ok()).unwrap_or(0);
        // SAFETY: all of these only read the valid model.
        unsafe {
            ModelInfo {
                file_type: file_type(m),
                n_params: sys::llama_model_n_params(m),
                size_bytes: sys::llama_model_size(m),
                n_layer: sys::llama_model_n_layer(m).max(0) as u32,
                n_embd: sys::llama_model_n_embd(m).max(0) as u32,
                n_ctx_train: sys::llama_model_n_ctx_train(m) as u32, // a uint32_t returned as int32_t
                n_vocab: sys::llama_vocab_n_tokens(self.vocab()).max(0) as u32,
                n_expert,
                architecture,
                description,
            }
        }
    }

    /// Tokenizes text. `add_special` adds BOS where the model wants it; special tokens written
    /// in the text (`<s>`) are parsed as such.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>> {
        self.tokenize_with(text, add_special, true)
    }

    /// Refuses text work on a model without a vocabulary (`tokenizer.ggml.model` `no_vocab`):
    /// llama.cpp builds no tokenizer for it and asserts (a process abort) when asked to use one.
    pub(crate) fn check_vocab(&self) -> Result<()> {
        // SAFETY: valid vocabulary of the live model; the call only reads it.
        if unsafe { sys::llama_vocab_type(self.vocab()) } == sys::LLAMA_VOCAB_TYPE_NONE {
            return Err(Error::Tokenize(
                "the model has no vocabulary (tokenizer.ggml.model is no_vocab): it takes token ids, not text".into(),
            ));
        }
        Ok(())
    }

    /// [`tokenize`](Self::tokenize) for a text that must come to at most `max_tokens` tokens
    /// (what a context or a batch can take): [`Error::TextTooLong`] when it does not, found
    /// without tokenizing when the text is longer than that many of the vocabulary's longest
    /// pieces could spell, four times over (normalisation may shorten a text). llama.cpp's
    /// tokenizers can take minutes on megabytes of text (its SentencePiece byte fallback is
    /// quadratic), so text from outside should come through here.
    pub fn tokenize_at_most(&self, text: &str, add_special: bool, max_tokens: usize) -> Result<Vec<Token>> {
        self.check_vocab()?;
        let spell = self.max_piece_bytes().saturating_mul(max_tokens).saturating_mul(4).saturating_add(16);
        if text.len() > spell {
            return Err(Error::TextTooLong { bytes: text.len(), max_tokens, n_tokens: None });
        }
        let tokens = self.tokenize(text, add_special)?;
        if tokens.len() > max_tokens {
            return Err(Error::TextTooLong { bytes: text.len(), max_tokens, n_tokens: Some(tokens.len()) });
        }
        Ok(tokens)
    }

    /// The longest piece of any token, in bytes (special tokens rendered), at least 1:
    /// `n` tokens spell at most `n` times this many bytes. Computed once per model; 1 for a
    /// model without a vocabulary (llama.cpp asserts on a piece of one).
    pub fn max_piece_bytes(&self) -> usize {
        *self.max_piece.get_or_init(|| {
            if self.check_vocab().is_err() {
                return 1;
            }
            let mut buf = vec![0u8; 256];
            let mut longest = 1;
            for t in 0..self.n_vocab() as Token {
                // SAFETY: valid vocabulary and token id; the buffer is valid for its length.
                let n = unsafe {
                    sys::token_to_piece_nothrow(
                        self.vocab(),
                        t,
                        buf.as_mut_ptr().cast::<c_char>(),
                        buf.len() as i32,
                        0,
                        true,
                    )
                };
                // A piece longer than the buffer reports its length negated.
                longest = longest.max(n.map_or(0, |n| n.unsigned_abs() as usize));
            }
            longest
        })
    }

    /// `llama_tokenize` with both of its flags: `parse_special` reads special tokens written in
    /// the text (`<s>`) as such.
    pub(crate) fn tokenize_with(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        let too_long = || Error::Tokenize("text longer than 2 GiB".into());
        let len = i32::try_from(text.len()).map_err(|_| too_long())?;
        let cap = i32::try_from(text.len() + 2).map_err(|_| too_long())?;
        self.check_vocab()?;
        let mut tokens: Vec<Token> = vec![0; cap as usize];
        for _ in 0..2 {
            // SAFETY: text is valid for `len` bytes, `tokens` for its length (at most i32::MAX).
            let n = unsafe {
                sys::tokenize_nothrow(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    tokens.len() as i32,
                    add_special,
                    parse_special,
                )
            }
            .map_err(|_| Error::Tokenize(THREW.into()))?;
            if n >= 0 {
                tokens.truncate(n as usize);
                return Ok(tokens);
            }
            if n == i32::MIN {
                return Err(Error::Tokenize("too many tokens".into()));
            }
            tokens.resize((-n) as usize, 0);
        }
        Err(Error::Tokenize("token count changed between calls".into()))
    }

    /// The text of one token.
    pub fn token_piece(&self, token: Token) -> Result<String> {
        self.check_token(token)?;
        self.check_vocab()?;
        let mut buf = vec![0u8; 64];
        loop {
            // SAFETY: the buffer is valid for its length; the token is in range.
            let n = unsafe {
                sys::token_to_piece_nothrow(
                    self.vocab(),
                    token,
                    buf.as_mut_ptr().cast::<c_char>(),
                    buf.len() as i32,
                    0,
                    true,
                )
            }
            .map_err(|_| Error::Tokenize(THREW.into()))?;
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// Turns tokens back into text (special tokens removed).
    pub fn detokenize(&self, tokens: &[Token]) -> Result<String> {
        for &t in tokens {
            self.check_token(t)?;
        }
        self.check_vocab()?;
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        loop {
            // SAFETY: tokens and buffer valid for the given lengths; tokens are in range.
            let n = unsafe {
                sys::detokenize_nothrow(
                    self.vocab(),
                    tokens.as_ptr(),
                    tokens.len() as i32,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    true,
                    false,
                )
            }
            .map_err(|_| Error::Tokenize(THREW.into()))?;
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// Whether a token ends generation (EOS, EOT, ...).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: the vocab is valid; out-of-range ids return false.
        unsafe { sys::llama_vocab_is_eog(self.vocab(), token) }
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: the vocab is valid.
        let t = unsafe { sys::llama_vocab_bos(self.vocab()) };
        (t >= 0).then_some(t)
    }

    /// The end-of-sequence token, if the model has one.
    pub fn eos(&self) -> Option<Token> {
        // SAFETY: the vocab is valid.
        let t = unsafe { sys::llama_vocab_eos(self.vocab()) };
        (t >= 0).then_some(t)
    }

    /// Whether tokenizing with `add_special` puts the BOS token first
    /// (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        // SAFETY: the vocab is valid.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab()) }
    }

    /// Whether tokenizing with `add_special` puts the EOS token last
    /// (`tokenizer.ggml.add_eos_token`).
    pub fn adds_eos(&self) -> bool {
        // SAFETY: the vocab is valid.
        unsafe { sys::llama_vocab_get_add_eos(self.vocab()) }
    }

    /// The tokenizer type (`llama_vocab_type`: 1 SentencePiece, 2 BPE, 3 WordPiece, ...).
    pub fn vocab_type(&self) -> i32 {
        // SAFETY: the vocab is valid.
        unsafe { sys::llama_vocab_type(self.vocab()) as i32 }
    }

    /// The raw text of a token in the vocabulary (`llama_vocab_get_text`; `▁` for spaces in
    /// SentencePiece vocabularies), or `None` outside it.
    pub fn token_text(&self, token: Token) -> Option<String> {
        self.check_token(token).ok()?;
        // SAFETY: the vocab is valid and the id in range; the text is NUL-terminated and owned
        // by the vocabulary.
        let p = unsafe { sys::llama_vocab_get_text(self.vocab(), token) };
        // SAFETY: non-null: a NUL-terminated string that lives as long as the model.
        (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// The sliding-window size of the model's attention, 0 when it has none
    /// (`llama_model_n_swa`).
    pub fn n_swa(&self) -> u32 {
        // SAFETY: the model is valid.
        unsafe { sys::llama_model_n_swa(self.raw.as_ptr()) }.max(0) as u32
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> u32 {
        // SAFETY: the vocab is valid.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) }.max(0) as u32
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: the model is valid. llama.cpp keeps it as a uint32_t and returns it as
        // int32_t: the cast gives back values of 2^31 and above.
        (unsafe { sys::llama_model_n_ctx_train(self.raw.as_ptr()) }) as u32
    }

    fn check_token(&self, t: Token) -> Result<()> {
        if t < 0 || t as u32 >= self.n_vocab() {
            return Err(Error::InvalidToken { token: t, n_vocab: self.n_vocab() });
        }
        Ok(())
    }
}

/// What the progress trampoline shares with [`load_impl`] during one load.
struct Progress<'a> {
    callback: &'a mut dyn FnMut(f32) -> bool,
    /// The callback returned `false`.
    cancelled: bool,
    /// The callback panicked: its message.
    panicked: Option<String>,
}

/// The `llama_progress_callback` handed to llama.cpp: calls the user's callback, never lets a
/// panic unwind into C, and keeps saying `false` once the load is to stop.
///
/// # Safety
///
/// `user_data` is the `Progress` of the [`load_impl`] call in progress on this thread, which
/// holds no other reference to it while llama.cpp runs.
unsafe extern "C" fn progress_trampoline(fraction: f32, user_data: *mut c_void) -> bool {
    // SAFETY: see the function's contract; llama.cpp calls it on the loading thread only,
    // inside llama_model_load_from_file, while `load_impl` is blocked in that call.
    let state = unsafe { &mut *user_data.cast::<Progress<'_>>() };
    if state.cancelled || state.panicked.is_some() {
        return false;
    }
    // A model without tensor data would report 0/0; keep the promise of 0.0 to 1.0.
    let fraction = if fraction.is_nan() { 1.0 } else { fraction.clamp(0.0, 1.0) };
    let callback = &mut *state.callback;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(fraction))) {
        Ok(true) => true,
        Ok(false) => {
            state.cancelled = true;
            false
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a text message".to_owned());
            state.panicked = Some(message);
            false
        }
    }
}

fn load_impl(
    _backend: &Backend,
    path: &Path,
    options: &ModelOptions,
    load: &LoadOptions,
    progress: Option<&mut dyn FnMut(f32) -> bool>,
) -> Result<Model> {
    let path = path.to_path_buf();
    check_file(&path)?;
    if load.validate_gguf {
        crate::gguf_check::check_gguf(&path)?;
    }
    let checked = crate::validate::model_options(options)?;
    let raw_params = params::model_params(&checked)?;
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error::ModelUnreadable {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })?;
    let mut state = progress.map(|callback| Progress { callback, cancelled: false, panicked: None });
    let c_params = match state.as_mut() {
        Some(state) => raw_params.with_progress(progress_trampoline, std::ptr::from_mut(state).cast()),
        None => raw_params.get(),
    };
    crate::logging::clear_errors();
    // SAFETY: `cpath` is a valid C string; the params' pointers are owned by `raw_params`,
    // which the returned Model keeps alive; the progress user data, when set, is `state`,
    // alive and not otherwise borrowed until the call returns (llama.cpp keeps no copy of the
    // callback after loading).
    let raw = unsafe { sys::llama_model_load_from_file(cpath.as_ptr(), c_params) };
    let log = crate::logging::take_errors();
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Owned before a logger's panic may be resumed, so that unwinding frees it.
    let model = NonNull::new(raw).map(|raw| Model {
        raw,
        path: path.clone(),
        options: options.clone(),
        id,
        _params: raw_params,
        dry: std::sync::OnceLock::new(),
        max_piece: std::sync::OnceLock::new(),
    });
    crate::logging::resume_panic();
    match state {
        // The last call (1.0) may cancel too; llama.cpp then frees the model and returns null.
        Some(Progress { panicked: Some(message), .. }) => {
            drop(model);
            Err(Error::ProgressPanicked { path, message })
        }
        Some(Progress { cancelled: true, .. }) => {
            drop(model);
            Err(Error::LoadCancelled { path })
        }
        _ => model.ok_or(Error::ModelLoad { path, log }),
    }
}

#[cfg(llama_ftype_name)]
fn file_type(m: *const sys::llama_model) -> String {
    // SAFETY: valid model; the name is a static string.
    unsafe { crate::backend::cstr(sys::llama_ftype_name(sys::llama_model_ftype(m))) }
}

#[cfg(not(llama_ftype_name))]
fn file_type(_: *const sys::llama_model) -> String {
    String::new()
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and is freed once; contexts
        // borrow the model, so none outlives it.
        unsafe { sys::llama_model_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Checks that `path` is a readable GGUF file before llama.cpp sees it (also what
/// [`crate::quantize`] checks of its input).
pub(crate) fn check_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ModelNotFound { path: path.to_path_buf() },
        _ => Error::ModelUnreadable { path: path.to_path_buf(), source: e },
    })?;
    if meta.is_dir() {
        return Err(Error::NotGguf { path: path.to_path_buf(), reason: "it is a directory".into() });
    }
    let mut magic = [0u8; 4];
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::ModelUnreadable { path: path.to_path_buf(), source: e })?;
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(Error::NotGguf {
            path: path.to_path_buf(),
            reason: format!("it starts with {magic:02x?}, not \"GGUF\""),
        }),
        Err(_) => Err(Error::NotGguf { path: path.to_path_buf(), reason: format!("only {} bytes long", meta.len()) }),
    }
}
