//! Sessions on disk: one sequence's cache and the tokens it holds, saved to a file and loaded
//! into a context of the same model in another process, so a conversation resumes without
//! computing its prompt again.
//!
//! ```no_run
//! use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! let tokens = model.tokenize("A long system prompt ...", true)?;
//! ctx.decode(&tokens)?;
//! ctx.save_session("chat.session", 0, &tokens)?;
//! // Later, in another process:
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! let tokens = ctx.load_session("chat.session", 0)?; // the cache holds them again
//! # let _ = tokens;
//! # Ok(()) }
//! ```
//!
//! The file is this crate's own format around llama.cpp's sequence state
//! (`llama_state_seq_get_data`): a magic, a format version, the llama.cpp commit that wrote
//! it, a fingerprint of the model, the tokens, the state and a checksum of everything. A file
//! from another model or another llama.cpp commit, a truncated or altered file, or anything
//! that is not a session is an error naming the file and what is wrong, found before llama.cpp
//! reads the state; llama.cpp then checks the state against the context (cache types, free
//! cells). Saving writes a temporary file beside the target and renames it, so an existing
//! session is replaced only by a complete one.

use std::path::{Path, PathBuf};

use llama_sys as sys;

use crate::batch::SeqId;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Model, Token};

const MAGIC: &[u8; 8] = b"LRSESSN\0";
const VERSION: u32 = 1;
const COMMIT_LEN: usize = 40;

/// FNV-1a, 64 bits: the checksum and the model fingerprint (not a defence against a forger,
/// who could recompute it: a session file is trusted data once it matches).
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// What identifies a model's weights and shapes for a saved state.
fn fingerprint(model: &Model) -> u64 {
    let i = model.info();
    let text = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        i.architecture, i.description, i.file_type, i.n_params, i.size_bytes, i.n_layer, i.n_embd, i.n_vocab
    );
    fnv1a(text.as_bytes(), FNV_OFFSET)
}

fn commit_bytes() -> [u8; COMMIT_LEN] {
    let mut out = [b'0'; COMMIT_LEN];
    for (o, b) in out.iter_mut().zip(sys::build_info::COMMIT.bytes()) {
        *o = b;
    }
    out
}

fn session_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::Session { path: path.to_path_buf(), problem: problem.into() }
}

/// A reader over the file's bytes that reports truncation instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, the file has {}",
                self.at,
                self.bytes.len()
            ));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

impl Context<'_> {
    fn check_session_seq(&self, path: &Path, seq: SeqId) -> Result<()> {
        if seq < 0 || seq as u32 >= self.n_seq_max() {
            return Err(session_error(path, format!("sequence {seq} is not below n_seq_max {}", self.n_seq_max())));
        }
        Ok(())
    }

    /// Saves what sequence `seq` holds, with `tokens` (the tokens it holds, in order: their
    /// count must be the number of positions the sequence holds), to `path`.
    pub fn save_session(&mut self, path: impl AsRef<Path>, seq: SeqId, tokens: &[Token]) -> Result<()> {
        let path = path.as_ref();
        self.check_session_seq(path, seq)?;
        let held = self.seq_range_raw(seq).map_or(0, |(_, max)| max as usize + 1);
        if tokens.len() != held {
            return Err(session_error(
                path,
                format!(
                    "{} tokens given, sequence {seq} holds {held} positions: give the tokens it holds",
                    tokens.len()
                ),
            ));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(session_error(path, "too many tokens"));
        }
        // SAFETY: valid context; `seq` is below n_seq_max (checked).
        let size = unsafe { sys::llama_state_seq_get_size(self.raw().as_ptr(), seq) };
        let mut state = vec![0u8; size];
        // SAFETY: the buffer is valid for `size` bytes; `seq` is below n_seq_max.
        let written =
            unsafe { sys::llama_state_seq_get_data(self.raw().as_ptr(), state.as_mut_ptr(), state.len(), seq) };
        crate::logging::resume_panic();
        state.truncate(written);

        let mut out = Vec::with_capacity(state.len() + tokens.len() * 4 + 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&commit_bytes());
        out.extend_from_slice(&fingerprint(self.model()).to_le_bytes());
        out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
        for t in tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(state.len() as u64).to_le_bytes());
        out.extend_from_slice(&state);
        let sum = fnv1a(&out, FNV_OFFSET);
        out.extend_from_slice(&sum.to_le_bytes());

        let tmp = temp_path(path);
        std::fs::write(&tmp, &out).map_err(|e| session_error(path, format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            session_error(path, format!("cannot replace the file: {e}"))
        })
    }

    /// Loads a session saved by [`save_session`](Self::save_session) into sequence `seq`
    /// (emptied first) and returns its tokens; the next token goes at position
    /// `tokens.len()`. There are no logits until the next decode. On error the sequence is
    /// empty and nothing else changed.
    pub fn load_session(&mut self, path: impl AsRef<Path>, seq: SeqId) -> Result<Vec<Token>> {
        let path = path.as_ref();
        self.check_session_seq(path, seq)?;
        let bytes = std::fs::read(path).map_err(|e| session_error(path, format!("cannot read the file: {e}")))?;
        let (tokens, state) = parse(&bytes, self.model()).map_err(|p| session_error(path, p))?;
        if tokens.len() > self.n_ctx_seq() as usize {
            return Err(session_error(
                path,
                format!("{} tokens do not fit this context ({} cells per sequence)", tokens.len(), self.n_ctx_seq()),
            ));
        }
        let n_vocab = self.model().n_vocab();
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(session_error(path, format!("token {t} is outside the vocabulary (0..{n_vocab})")));
        }
        // SAFETY: valid model; both only read it.
        let plain_cache = unsafe {
            !sys::llama_model_is_recurrent(self.model().raw().as_ptr())
                && !sys::llama_model_is_hybrid(self.model().raw().as_ptr())
        };
        if plain_cache && !state.is_empty() {
            check_state_head(state, self.n_ctx_seq()).map_err(|p| session_error(path, p))?;
        }
        self.memory_seq_rm(seq, -1, -1);
        self.drop_logits();
        crate::logging::clear_errors();
        // SAFETY: valid context; `seq` is below n_seq_max; the state was written by
        // llama_state_seq_get_data of this llama.cpp commit for this model (checked above with
        // the checksum), and llama.cpp checks it against this context, returning 0 on a mismatch.
        let read = unsafe { sys::llama_state_seq_set_data(self.raw().as_ptr(), state.as_ptr(), state.len(), seq) };
        crate::logging::resume_panic();
        let held = self.seq_range_raw(seq).map_or(0, |(_, max)| max as usize + 1);
        let failed = (read == 0 && !state.is_empty()) || held != tokens.len();
        if failed {
            let log = crate::logging::take_errors();
            self.memory_seq_rm(seq, -1, -1);
            self.sync_seq0();
            let why = if log.is_empty() {
                "llama.cpp refused the state for this context".to_string()
            } else {
                log.join("; ")
            };
            return Err(session_error(path, why));
        }
        self.sync_seq0();
        Ok(tokens)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// `io_magic` of llama-context.cpp: the first four bytes of a sequence state.
const STATE_MAGIC: u32 = 0xaf14_3cd8;

/// Bytes of the smallest cell record in a KV cache state (position, sequence-id count, one
/// sequence id).
const CELL_RECORD: u64 = 12;

/// The head of llama.cpp's sequence state for a KV cache (`llama_context::state_seq_get_data`
/// and `llama_kv_cache::state_write`): the magic, the sequence id, the stream count, then per
/// stream a cell count and, when it is not zero, the cells and their data. llama.cpp allocates a batch of that many cells before it reads them
/// (`state_read_meta`), so a forged count could ask for gigabytes: the first non-zero count
/// must fit this context's cells, and its cell records the bytes that follow. What comes after
/// is llama.cpp's to check (layer types and sizes against the context: refused cleanly).
fn check_state_head(state: &[u8], max_cells: u32) -> std::result::Result<(), String> {
    let mut r = Reader { bytes: state, at: 0 };
    let magic = r.u32("the state's magic")?;
    if magic != STATE_MAGIC {
        return Err(format!("the state starts with {magic:#010x}, not llama.cpp's sequence-state magic"));
    }
    r.u32("the state's sequence id")?; // llama.cpp reads it and loads into the asked sequence
    let n_stream = r.u32("the state's stream count")?;
    for stream in 0..n_stream {
        let cells = r.u32("a stream's cell count")?;
        if cells == 0 {
            continue;
        }
        let left = (state.len() - r.at) as u64;
        if cells > max_cells || u64::from(cells) * CELL_RECORD > left {
            return Err(format!(
                "the state claims {cells} cells in stream {stream}, this context has {max_cells} per sequence \
                 and {left} bytes of state follow"
            ));
        }
        break;
    }
    Ok(())
}

/// The tokens and the state of a session file, after every check that needs no context.
fn parse<'b>(bytes: &'b [u8], model: &Model) -> std::result::Result<(Vec<Token>, &'b [u8]), String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a llama-runner session file (no session magic at the start)".into());
    }
    let Some(body_len) = bytes.len().checked_sub(8) else { return Err("truncated".into()) };
    let mut r = Reader { bytes: &bytes[..body_len], at: MAGIC.len() };
    let version = r.u32("the format version")?;
    if version != VERSION {
        return Err(format!("format version {version}; this build reads version {VERSION}"));
    }
    let commit = r.take(COMMIT_LEN, "the llama.cpp commit")?;
    if commit != commit_bytes() {
        return Err(format!(
            "written by llama.cpp {}, this build is llama.cpp {} (llama.cpp's state layout changes between commits)",
            String::from_utf8_lossy(commit),
            sys::build_info::COMMIT
        ));
    }
    let fp = r.u64("the model fingerprint")?;
    let n_tokens = r.u32("the token count")? as usize;
    let token_bytes = r.take(n_tokens.saturating_mul(4), "the tokens")?;
    let state_len = r.u64("the state size")?;
    let state = r.take(usize::try_from(state_len).unwrap_or(usize::MAX), "the state")?;
    if r.at != body_len {
        return Err(format!("{} bytes after the state", body_len - r.at));
    }
    let stored = u64::from_le_bytes(bytes[body_len..].try_into().unwrap_or([0; 8]));
    if fnv1a(&bytes[..body_len], FNV_OFFSET) != stored {
        return Err("the checksum does not match: the file is damaged or was altered".into());
    }
    if fp != fingerprint(model) {
        return Err("saved from another model (its fingerprint differs from this model's)".into());
    }
    let tokens = token_bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((tokens, state))
}
