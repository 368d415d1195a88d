//! Build script of llama-sys: builds llama.cpp with CMake and provides its bindings.
//!
//! The ladder, top to bottom:
//! 1. read every environment knob once into [`options::Options`], stopping on a malformed value;
//! 2. read the pin and locate the sources (`LLAMA_CPP_DIR` or `vendor/llama.cpp`), never fetching,
//!    and identify their commit (override, provisioning marker, or git);
//! 3. bindings (checked-in when the headers match, else bindgen) and the API probes over them:
//!    they need only the headers, so a mismatch stops here, in seconds;
//! 4. check the CUDA toolkit when the `cuda` feature is on;
//! 5. configure and build with CMake (incremental: one build tree per source tree), the long step;
//! 6. link lines, Rust-visible build facts and `DEP_LLAMA_*` metadata.

mod bindings;
mod cmake;
mod cuda_driver;
mod decls;
mod env;
mod link;
mod options;
mod probe;
mod shim;
mod source;

use std::path::Path;

use options::Options;

fn main() {
    // The build script stops with `panic!` carrying a message written for the user (what is
    // wrong, what to set). Print just that message: a backtrace of the build script (shown when
    // RUST_BACKTRACE is set) says nothing to someone building the crate.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let at = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: llama-sys build script{at}: {}", msg.trim_start_matches('\n'));
    }));
    println!("cargo:rerun-if-changed=build");
    let opts =
        Options::read(&options::Lookup { knob: &env::knob, plain: &env::plain }).unwrap_or_else(|e| panic!("{e}"));
    if opts.native_feature && opts.no_native {
        println!("llama-sys: feature `native` is on, LLAMA_SYS_NO_NATIVE turns GGML_NATIVE off");
    }
    let pin = source::read_pin(&opts);
    let src = source::locate(&pin, &opts);
    println!(
        "llama-sys: building llama.cpp {} (b{}, from {}) in {}",
        src.commit,
        src.build_number,
        src.commit_origin,
        src.dir.display()
    );
    source::watch(&src.dir);

    // Before CMake: everything that can fail without compiling llama.cpp.
    let hash = bindings::header_hash(&src.dir);
    let provided = bindings::provide(&src.dir, &hash, &opts);
    probe::emit(&provided.path);
    let toolkit = opts.cuda.as_ref().map(|cuda| {
        // Names the missing piece (toolkit, header, library, architecture).
        let toolkit = link::check_cuda(cuda, &opts);
        println!("llama-sys: CUDA toolkit {} (nvcc {})", toolkit.root.display(), toolkit.nvcc.display());
        toolkit
    });

    let built = cmake::build(&src, &opts, toolkit.as_ref());

    shim::build(&src, &opts);
    // Before libllama, whose symbols it uses.
    shim::link();
    link::emit(&built, &opts, toolkit.as_ref());
    build_facts(&src, &pin, &opts, &hash, provided.origin);

    println!("cargo:root={}", src.dir.display());
    println!("cargo:include={}", built.prefix.join("include").display());
    println!("cargo:lib_dir={}", built.lib_dir.display());
    println!("cargo:commit={}", src.commit);
    println!("cargo:build_number={}", src.build_number);
    println!("cargo:cuda={}", u8::from(opts.cuda_on()));
    println!("cargo:shared={}", u8::from(opts.shared));
    println!("cargo:common={}", u8::from(opts.build_common));
}

/// Exposes what was built as `rustc-env` values that `src/lib.rs` turns into constants.
fn build_facts(src: &source::Source, pin: &source::Pin, opts: &Options, hash: &str, origin: &str) {
    let mut backends = vec!["CPU"];
    if opts.cuda_on() {
        backends.push("CUDA");
    }
    // `native` means native code was generated: the feature, unless LLAMA_SYS_NO_NATIVE said no.
    let mut features = Vec::new();
    for (on, name) in [
        (opts.native, "native"),
        (opts.native && opts.amx, "amx"),
        (opts.cuda_on(), "cuda"),
        (opts.shared, "dynamic-link"),
        (origin == "bindgen", "bindgen"),
    ] {
        if on {
            features.push(name);
        }
    }
    let facts = [
        ("LLAMA_SYS_COMMIT", src.commit.clone()),
        ("LLAMA_SYS_BUILD_NUMBER", src.build_number.to_string()),
        ("LLAMA_SYS_COMMIT_ORIGIN", src.commit_origin.to_string()),
        ("LLAMA_SYS_PIN_COMMIT", pin.commit.clone()),
        ("LLAMA_SYS_PIN_CRATE", format!("{} {}", pin.crate_name, pin.crate_version)),
        ("LLAMA_SYS_GGML_VERSION", source::ggml_version(&src.dir, src.build_number)),
        ("LLAMA_SYS_BACKENDS", backends.join(",")),
        ("LLAMA_SYS_FEATURES", features.join(",")),
        ("LLAMA_SYS_PROFILE", opts.profile.clone()),
        ("LLAMA_SYS_HEADER_SHA256", hash.to_string()),
        ("LLAMA_SYS_BINDINGS_ORIGIN", origin.to_string()),
        ("LLAMA_SYS_SOURCE_DIR", path_str(&src.dir)),
        ("LLAMA_SYS_COMMON_BUILT", u8::from(opts.build_common).to_string()),
    ];
    for (k, v) in facts {
        println!("cargo:rustc-env={k}={v}");
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
