//! Embeds the XDP object built by `cargo xtask build-ebpf` into `lb`.
//!
//! When the object is absent (a plain `cargo build` or `cargo check` on a machine without the
//! eBPF toolchain), an empty placeholder is embedded and `lb run` says how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = env::var_os("LB_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/lb-ebpf"));
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("lb-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=no eBPF object at {}: run `cargo xtask build-ebpf` (embedding a placeholder)",
                object.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
