//! The one way the build script reads its environment.

use std::ffi::OsString;

/// Reads an environment variable, registers it for rebuilds and logs its value.
///
/// Every knob of this build script goes through here, so a changed variable always triggers a
/// rebuild and the build log (`cargo build -vv`) says what each one was.
pub fn var(name: &str) -> Option<String> {
    var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// [`var`] for values that may not be UTF-8 (paths).
pub fn var_os(name: &str) -> Option<OsString> {
    println!("cargo:rerun-if-env-changed={name}");
    let value = std::env::var_os(name).filter(|v| !v.is_empty());
    match &value {
        Some(v) => println!("llama-sys: {name}={}", v.to_string_lossy()),
        None => println!("llama-sys: {name} unset"),
    }
    value
}

/// A variable Cargo sets for build scripts (not registered: Cargo reruns on its own changes).
pub fn cargo(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("Cargo did not set {name} for the build script"))
}

/// Whether a Cargo feature of llama-sys is enabled.
pub fn feature(name: &str) -> bool {
    let key = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
    std::env::var_os(key).is_some()
}
