//! Tensor-override patterns, checked and matched by the C++ standard library's `std::regex`
//! (ECMAScript), exactly as llama.cpp's loader does.

use std::ffi::{CString, c_char, c_int};

unsafe extern "C" {
    fn llama_runner_regex_check(pattern: *const c_char, err: *mut c_char, err_len: usize) -> c_int;
    fn llama_runner_regex_search(pattern: *const c_char, text: *const c_char) -> c_int;
}

/// Checks that `pattern` compiles as llama.cpp will compile it; the error says why not.
pub fn check(pattern: &str) -> Result<(), String> {
    let c = CString::new(pattern).map_err(|_| "the pattern contains a NUL byte".to_string())?;
    let mut err = [0u8; 256];
    // SAFETY: `c` is NUL-terminated; `err` is writable for its length; the shim catches all
    // C++ exceptions.
    let rc = unsafe { llama_runner_regex_check(c.as_ptr(), err.as_mut_ptr().cast(), err.len()) };
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(String::from_utf8_lossy(&err[..end]).into_owned())
}

/// Whether `pattern` is found anywhere in `text` (`std::regex_search`). `None` if the pattern
/// does not compile.
pub fn search(pattern: &str, text: &str) -> Option<bool> {
    let p = CString::new(pattern).ok()?;
    let t = CString::new(text).ok()?;
    // SAFETY: both strings are NUL-terminated; the shim catches all C++ exceptions.
    match unsafe { llama_runner_regex_search(p.as_ptr(), t.as_ptr()) } {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecmascript_semantics() {
        assert!(check(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps").is_ok());
        // Lookahead is ECMAScript but not Rust-regex: llama.cpp accepts it, so must we.
        assert!(check(r"blk\.(?=1)").is_ok());
        assert!(check("ffn_(up").is_err());
        assert!(check("[z-a]").is_err());
        assert_eq!(search("exps", "blk.0.ffn_up_exps.weight"), Some(true));
        assert_eq!(search(r"^exps", "blk.0.ffn_up_exps.weight"), Some(false));
        assert_eq!(search("(", "x"), None);
    }
}
