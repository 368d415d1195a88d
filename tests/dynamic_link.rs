//! Feature `dynamic-link`: the llama.cpp libraries are found at run time, libraries built
//! elsewhere from the same commit work, and libraries of another commit are refused with a
//! message before anything else calls into them.
//!
//! `scripts/dynlink-check.sh` builds the foreign libraries and runs these tests with
//! `LLAMA_FOREIGN_LIB_DIR` set; without it the refusal test is reported ignored with the reason
//! (`harness = false`, built only with the feature: `required-features`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use llama_runner::{Backend, build_info};

fn main() {
    let trials = vec![
        Trial::test(
            "the_libraries_of_this_build_pass_in_process",
            || Ok(the_libraries_of_this_build_pass_in_process()),
        ),
        Trial::test("runs_against_a_copy_of_its_libraries_elsewhere", || {
            Ok(runs_against_a_copy_of_its_libraries_elsewhere())
        }),
        Trial::ignorable_test("refuses_libraries_of_another_commit", || {
            let Some(dir) = std::env::var_os("LLAMA_FOREIGN_LIB_DIR") else {
                return Ok(Completion::ignored_with(
                    "LLAMA_FOREIGN_LIB_DIR (shared llama.cpp libraries of another commit) is not set; \
                     scripts/dynlink-check.sh builds them and sets it",
                ));
            };
            refuses_libraries_of_another_commit(Path::new(&dir));
            Ok::<_, Failed>(Completion::Completed)
        }),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// The directory this test process loaded `libllama.so` from (the build's own libraries, found
/// through the loader's search path: cargo puts the build's library directories in
/// `LD_LIBRARY_PATH`), read from the loader's map of the process.
fn built_lib_dir() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libllama.so")))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("libllama.so is not mapped: is this a dynamic-link build?")
}

fn runner_info(lib_dir: &Path, debug_libs: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-runner"));
    cmd.arg("info").env("LD_LIBRARY_PATH", lib_dir);
    if debug_libs {
        // glibc's loader reports which file each library was loaded from.
        cmd.env("LD_DEBUG", "libs");
    }
    cmd.output().expect("run llama-runner")
}

fn the_libraries_of_this_build_pass_in_process() {
    llama_sys::check_library_commit().expect("own libraries");
    Backend::init(&Default::default()).expect("backend");
}

fn runs_against_a_copy_of_its_libraries_elsewhere() {
    let built = built_lib_dir();
    let copy = std::env::temp_dir().join(format!("llama-dynlink-copy-{}", std::process::id()));
    std::fs::create_dir_all(&copy).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(&built).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".so") {
            // Copies the files the sonames point at, under every name (links followed).
            std::fs::copy(&path, copy.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert!(copied >= 4, "expected libllama/libggml*.so in {}", built.display());
    let out = runner_info(&copy, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&copy).ok();
    assert!(out.status.success(), "info failed against the copy:\n{stdout}\n{}", tail(&stderr));
    assert!(stdout.contains(&format!("library reports commit {}", build_info::COMMIT)), "{stdout}");
    let loaded_from_copy = format!("{}/libllama.so", copy.display());
    assert!(stderr.contains(&loaded_from_copy), "libllama.so was not loaded from the copy:\n{}", tail(&stderr));
}

fn refuses_libraries_of_another_commit(dir: &Path) {
    let out = runner_info(dir, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected a refusal (exit 2), got {:?}:\n{stdout}\n{stderr}", out.status);
    assert!(
        stderr.contains("error: the llama.cpp libraries loaded are of commit") && stderr.contains(build_info::COMMIT),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "nothing may run before the check: {stdout}");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
