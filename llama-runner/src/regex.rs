//! Tensor-override patterns, checked and matched by the C++ standard library's `std::regex`
//! (ECMAScript), exactly as llama.cpp's loader does.

use std::ffi::{CString, c_char, c_int};

unsafe extern "C" {
    fn llama_runner_regex_check(pattern: *const c_char, err: *mut c_char, err_len: usize) -> c_int;
    fn llama_runner_regex_search(pattern: *const c_char, text: *const c_char) -> c_int;
}

/// Checks that `pattern` compiles as llama.cpp will compile it, and that it has no repeated
/// group that itself repeats without bound (`(a+)+`, `(.*.*)*`): `std::regex` backtracks, and
/// such a pattern takes exponential time on a text it does not match (a tensor name held the
/// loader for minutes). The error says why not.
pub fn check(pattern: &str) -> Result<(), String> {
    nested_repetition(pattern)?;
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

/// Refuses a group repeated without bound (`*`, `+`, `{n,}`) that contains an unbounded
/// repetition itself: the shape whose backtracking explodes. Escapes and bracket expressions
/// are skipped; anything this scanner misreads is left to `std::regex` to judge.
fn nested_repetition(pattern: &str) -> Result<(), String> {
    let b = pattern.as_bytes();
    // Per open group: whether an unbounded repetition occurs inside it.
    let mut groups: Vec<bool> = Vec::new();
    // Whether the atom just closed (a group) contained one, for the quantifier that follows.
    let mut last_group_inner = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let mut closed_group = false;
        match c {
            b'\\' => i += 1,
            b'[' => {
                // A bracket expression: up to the first `]` not escaped (a `]` right after the
                // `[` or `[^` is a member).
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' => groups.push(false),
            b')' => {
                last_group_inner = groups.pop().unwrap_or(false);
                closed_group = true;
            }
            _ => {}
        }
        i += 1;
        let unbounded = match b.get(i) {
            Some(b'*' | b'+') => true,
            Some(b'{') => {
                let close = b[i..].iter().position(|&x| x == b'}').map(|p| i + p);
                close.is_some_and(|e| b[i..e].ends_with(b","))
            }
            _ => false,
        };
        if unbounded {
            if closed_group && last_group_inner {
                return Err(format!(
                    "a group that repeats without bound contains a repetition without bound (`{}`): \
                     std::regex would take exponential time on text that does not match",
                    String::from_utf8_lossy(&b[..=i.min(b.len() - 1)])
                ));
            }
            if let Some(g) = groups.last_mut() {
                *g = true;
            }
        }
        if closed_group && let Some(g) = groups.last_mut() {
            *g |= last_group_inner;
        }
    }
    Ok(())
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

    #[test]
    fn nested_unbounded_repetition_is_refused() {
        // (.*.*.*.*)*z held a tensor-name match for minutes (found by an independent test set).
        for bomb in [r"(.*.*.*.*)*z=CPU", r"(a+)+b", r"((ab)*c)+", r"(x(\d+))*", r"(a*){2,}"] {
            let e = check(bomb).unwrap_err();
            assert!(e.contains("exponential"), "{bomb}: {e}");
        }
        for fine in [
            r"blk\.(\d+)\.ffn_.*_exps",
            r"\.(2[0-9]|3[0-9])\.ffn_(up|down)_exps",
            r"(ab)+c",
            r"[(+*]+",
            r"\(a+\)+",
            r"(a{2,3})+",
        ] {
            check(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }
}
