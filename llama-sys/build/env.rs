//! The one way the build script reads its environment.

use std::ffi::OsString;

/// Reads a knob: registers it for rebuilds and logs its value. An empty value counts as unset.
///
/// Every knob of this build script goes through here (from `Options::read`, once), so a changed
/// variable always triggers a rebuild and the build log (`cargo build -vv`) says what each one was.
pub fn knob(name: &str) -> Option<OsString> {
    println!("cargo:rerun-if-env-changed={name}");
    let value = std::env::var_os(name).filter(|v| !v.is_empty());
    match &value {
        Some(v) => println!("llama-sys: {name}={}", v.to_string_lossy()),
        None => println!("llama-sys: {name} unset"),
    }
    value
}

/// Reads a variable without registering it: what Cargo sets for build scripts (features,
/// `OUT_DIR`; Cargo reruns on its own changes) and `PATH`.
pub fn plain(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}
