//! The run-time check that the loaded llama.cpp libraries are of the commit compiled against.

use llama_sys::{build_info, check_library_commit, commits_match};

#[test]
fn the_libraries_of_this_build_pass() {
    check_library_commit().expect("the libraries this crate was built with report its commit");
}

#[test]
fn commits_match_by_prefix_of_at_least_seven_digits() {
    let full = "5f55650a78f92aff4d48d671423e888fac0469ff";
    assert!(commits_match(full, full));
    assert!(commits_match(full, "5f55650a"), "llama.cpp's own builds record a short hash");
    assert!(commits_match(full, "5f55650"));
    assert!(commits_match(full, "5F55650A-dirty"));
    assert!(commits_match("5f55650a", full));
    assert!(!commits_match(full, "5f5565"), "too short to identify a commit");
    assert!(!commits_match(full, "9e3b928fd8c9d14dbf15a8768b9fdd7e5c721d66"));
    assert!(!commits_match(full, "deadbeef"));
    assert!(!commits_match(full, "unknown"));
    assert!(!commits_match(full, ""));
    assert!(!commits_match("unknown", "unknown"), "two unknown commits prove nothing");
    assert!(commits_match("my-fork", "my-fork"), "a hand-set name matches only itself");
}

#[test]
fn the_refusal_names_both_commits_and_the_remedy() {
    let m = llama_sys::LibraryMismatch { expected: build_info::COMMIT, found: "deadbeef".into() };
    let text = m.to_string();
    assert!(text.contains("deadbeef") && text.contains(build_info::COMMIT), "{text}");
    assert!(text.contains("LD_LIBRARY_PATH"), "{text}");
}
