//! `cargo xtask <task>`: the project's self-installing build, test, demo and bench entry points.
mod setup;

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  setup        install what this machine lacks (Debian packages, bpf-linker, bpffs); idempotent
  build-ebpf   build the XDP object (lb-ebpf) for bpfel-unknown-none
  build        build-ebpf, then the `lb` binary (release) with the object embedded
  demo         setup + build, then real traffic through a namespace topology; prints a summary
  test         setup + build, then every test, privileged ones included (LB_REQUIRE_PRIVILEGED=1)
  bench        measure the datapath, the L7 proxy and the control plane against peers";

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build-ebpf") => setup::ensure_ebpf_toolchain().and_then(|_| build_ebpf()),
        Some("build") => build(),
        Some("demo") => demo(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The cargo that runs us (rustup's stable), for the user-space crates.
fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn exec(cmd: &mut Command) -> Result<()> {
    println!("xtask: $ {}", show(cmd));
    let status = cmd.status().with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Where the XDP object lands (and where lb-userspace's build script looks for it).
pub fn ebpf_object() -> PathBuf {
    root().join("target/ebpf/bpfel-unknown-none/release/lb-ebpf")
}

/// Build lb-ebpf with Debian's rustc (it has the library source build-std needs) in an
/// environment cleaned of what rustup and the outer cargo set.
fn build_ebpf() -> Result<()> {
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(root().join("lb-ebpf"))
        .args(["build", "--release", "-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(root().join("target/ebpf"));
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO") && k != "CARGO_HOME" || k.starts_with("RUSTUP") || k.starts_with("RUSTC") || k.starts_with("RUSTFLAGS") || k == "RUSTDOC" {
            cmd.env_remove(&key);
        }
    }
    let path = env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/bin:{}:{path}", setup::cargo_bin_dir().display()))
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1");
    exec(&mut cmd)?;
    println!("xtask: XDP object at {}", ebpf_object().display());
    Ok(())
}

fn build() -> Result<()> {
    setup::ensure_ebpf_toolchain()?;
    build_ebpf()?;
    exec(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    println!("xtask: built {}", root().join("target/release/lb").display());
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    setup::run()?;
    build()?;
    exec(cargo()
        .args(["run", "--release", "--quiet", "-p", "lb-tests", "--bin", "lb-demo", "--"])
        .args(args)
        .env("LB_BIN", root().join("target/release/lb")))
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    build()?;
    exec(cargo()
        .args(["test", "--release", "--workspace"])
        .args(args)
        .env("LB_BIN", root().join("target/release/lb"))
        .env("LB_REQUIRE_PRIVILEGED", "1"))
}

fn bench(_args: &[String]) -> Result<()> {
    bail!("`cargo xtask bench` is not implemented yet (tracked by the bench issue)")
}
