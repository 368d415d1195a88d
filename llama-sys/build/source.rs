//! Where the llama.cpp sources are, and which upstream commit they are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::options::Options;

/// Name of the file that provisioning scripts write at the root of a llama.cpp tree that is not
/// a git checkout, recording which upstream commit the files are.
pub const MARKER: &str = ".llama-cpp-source";

/// The llama.cpp tree to build and what is known about it.
pub struct Source {
    /// Root of the llama.cpp tree (holds `CMakeLists.txt`, `include/llama.h`).
    pub dir: PathBuf,
    /// Full upstream commit hash.
    pub commit: String,
    /// Upstream build number (`b<N>`), 0 when unknown.
    pub build_number: u32,
    /// How the commit was determined (for the build log and the Rust items).
    pub commit_origin: &'static str,
}

/// The pin file: the workspace's one record of the llama.cpp commit it is built against.
pub struct Pin {
    pub commit: String,
    pub build_number: u32,
    pub crate_name: String,
    pub crate_version: String,
}

/// The workspace's default llama.cpp tree: the submodule at `<workspace>/vendor/llama.cpp`.
///
/// This is the only place the build script computes that path.
fn vendor_dir(opts: &Options) -> PathBuf {
    opts.manifest_dir.join("../vendor/llama.cpp")
}

fn pin_path(opts: &Options) -> PathBuf {
    vendor_dir(opts).with_file_name("llama.cpp.pin")
}

/// Reads `vendor/llama.cpp.pin`.
pub fn read_pin(opts: &Options) -> Pin {
    let path = pin_path(opts);
    println!("cargo:rerun-if-changed={}", path.display());
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read the pin file {}: {e}", path.display()));
    let get = |key: &str| {
        key_value(&text, key).unwrap_or_else(|| panic!("the pin file {} has no {key}= line", path.display()))
    };
    Pin {
        commit: get("LLAMA_CPP_COMMIT"),
        build_number: get("LLAMA_CPP_BUILD_NUMBER")
            .parse()
            .unwrap_or_else(|e| panic!("LLAMA_CPP_BUILD_NUMBER in {}: {e}", path.display())),
        crate_name: get("LLAMA_CPP_CRATE"),
        crate_version: get("LLAMA_CPP_CRATE_VERSION"),
    }
}

/// Finds the value of `KEY=value` in a shell-style file (comments and blank lines ignored).
fn key_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// Locates the sources (`LLAMA_CPP_DIR` or the submodule) and identifies their commit.
pub fn locate(pin: &Pin, opts: &Options) -> Source {
    let (dir, from_env) = match &opts.llama_cpp_dir {
        Some(d) => (d.clone(), true),
        None => (vendor_dir(opts), false),
    };
    if !dir.join("include/llama.h").is_file() || !dir.join("CMakeLists.txt").is_file() {
        if from_env {
            panic!(
                "\n\nLLAMA_CPP_DIR={} is not a llama.cpp source tree (no include/llama.h or CMakeLists.txt).\n\
                 Point it at the root of a llama.cpp checkout, or unset it to use vendor/llama.cpp.\n",
                dir.display()
            );
        }
        panic!(
            "\n\nThe llama.cpp sources are missing: {} is empty.\n\
             Fetch them (the submodule, or offline the crates.io copy of the pinned commit) with:\n\n    \
             scripts/provision-llama-cpp.sh\n\n\
             or point LLAMA_CPP_DIR at another llama.cpp tree.\n",
            dir.display()
        );
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let (commit, build_number, commit_origin) = identify(&dir, pin, opts);
    Source { dir, commit, build_number, commit_origin }
}

/// Determines the commit of a tree: explicit override, the provisioning marker, then git.
fn identify(dir: &Path, pin: &Pin, opts: &Options) -> (String, u32, &'static str) {
    let number_for = |commit: &str, fallback: u32| {
        if commit == pin.commit { pin.build_number } else { fallback }
    };
    if let Some(commit) = &opts.build_commit {
        let number = opts.build_number.unwrap_or_else(|| number_for(commit, 0));
        return (commit.clone(), number, "LLAMA_SYS_BUILD_COMMIT");
    }
    let marker = dir.join(MARKER);
    println!("cargo:rerun-if-changed={}", marker.display());
    if let Ok(text) = fs::read_to_string(&marker) {
        let commit = key_value(&text, "commit").unwrap_or_else(|| panic!("{} has no commit= line", marker.display()));
        let number =
            key_value(&text, "build_number").and_then(|n| n.parse().ok()).unwrap_or_else(|| number_for(&commit, 0));
        return (commit, number, "marker file");
    }
    if let Some((commit, count)) = git_identify(dir) {
        let number = number_for(&commit, count);
        return (commit, number, "git");
    }
    panic!(
        "\n\nCannot tell which llama.cpp commit {} is: it is not a git checkout and has no {MARKER} file.\n\
         Provision it with scripts/provision-llama-cpp.sh, or say which commit it is:\n\n    \
         LLAMA_SYS_BUILD_COMMIT=<sha> [LLAMA_SYS_BUILD_NUMBER=<n>] cargo build\n",
        dir.display()
    );
}

/// `git rev-parse HEAD` and the commit count, only if `dir` is itself the top of a git work tree
/// (not merely inside the workspace's own repository).
fn git_identify(dir: &Path) -> Option<(String, u32)> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "HEAD"])?;
    // Rebuild when HEAD moves (a bisect step) even if no watched file changed.
    if let Some(head) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={head}/HEAD");
    }
    let shallow = git(&["rev-parse", "--is-shallow-repository"]).as_deref() == Some("true");
    let count = if shallow { 0 } else { git(&["rev-list", "--count", "HEAD"])?.parse().ok()? };
    Some((commit, count))
}

/// Directories (not files) whose changes rebuild llama.cpp; Cargo scans them recursively.
pub fn watch(dir: &Path) {
    for sub in ["include", "src", "ggml/include", "ggml/src", "ggml/CMakeLists.txt", "cmake", "CMakeLists.txt"] {
        println!("cargo:rerun-if-changed={}", dir.join(sub).display());
    }
}

/// The version the tree's ggml reports through `ggml_version()`: `major.minor.patch` from
/// `ggml/CMakeLists.txt`, or, in trees before ggml had its own version (2025, up to 3d4053f7),
/// `0.0.<build number>` as those trees derive it.
pub fn ggml_version(dir: &Path, build_number: u32) -> String {
    let text = fs::read_to_string(dir.join("ggml/CMakeLists.txt")).unwrap_or_default();
    let part = |name: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(&format!("set({name} "))?.strip_suffix(')').map(str::to_string))
    };
    match (part("GGML_VERSION_MAJOR"), part("GGML_VERSION_MINOR"), part("GGML_VERSION_PATCH")) {
        (Some(major), Some(minor), Some(patch)) => format!("{major}.{minor}.{patch}"),
        _ if text.contains("set(GGML_INSTALL_VERSION 0.0.${GGML_BUILD_NUMBER})") => format!("0.0.{build_number}"),
        _ => "?.?.?".into(),
    }
}
