//! The gates `cargo xtask test` passes before it builds anything (and `cargo xtask lint` runs
//! alone): the code is formatted and clippy has nothing to say, on the host workspace and on
//! lb-ebpf (its own workspace, for bpfel-unknown-none); README and docs link only inside the
//! repository; the tests docs/annotations*.md cite exist and set their row's annotation;
//! deploy/Dockerfile keeps its pins and passes hadolint.
use anyhow::{Context, Result};

use crate::{cargo, deploy_check, doc_claims, doc_links, ebpf_cargo, exec, root, setup};

/// Every gate in turn; the first failing one fails the task, named in the error.
pub fn gates() -> Result<()> {
    gate("links (README.md, docs/)", "fix the links listed", || doc_links::check(&root()))?;
    gate(
        "doc claims (docs/annotations*.md)",
        "cite a test that sets the annotation, or mark the row not enforced",
        || doc_claims::check(&root()),
    )?;
    gate("deploy/Dockerfile pins", "fix the Dockerfile", || deploy_check::check(&root()))?;
    gate("hadolint (deploy/Dockerfile)", "fix the findings printed above", || {
        exec(std::process::Command::new(setup::ensure_hadolint()?).arg(root().join("deploy/Dockerfile")))
    })?;
    gate("rustfmt (host workspace)", "run `cargo fmt --all`", || exec(cargo().args(["fmt", "--all", "--check"])))?;
    gate("rustfmt (lb-ebpf)", "run `cargo fmt --all` in lb-ebpf/", || {
        exec(cargo().current_dir(root().join("lb-ebpf")).args(["fmt", "--all", "--check"]))
    })?;
    // --release: the dependencies' build scripts and proc macros are the release build's.
    gate("clippy (host workspace)", "fix the lints printed above", || {
        exec(cargo().args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"]))
    })?;
    gate("clippy (lb-ebpf)", "fix the lints printed above", clippy_ebpf)?;
    println!("xtask: gates passed: links, Dockerfile, rustfmt and clippy (host workspace and lb-ebpf)");
    Ok(())
}

fn gate(name: &str, fix: &str, run: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("xtask: gate: {name}");
    run().with_context(|| format!("gate `{name}` failed: {fix}"))
}

/// Clippy on lb-ebpf with the environment and flags `cargo xtask build-ebpf` builds it with
/// (Debian's cargo, rustc and clippy; bpfel-unknown-none, build-std core, release, into
/// target/ebpf), every warning an error. Only the program itself: no test harness exists for
/// a `no_std` BPF target, so no `--all-targets`.
pub fn clippy_ebpf() -> Result<()> {
    exec(ebpf_cargo("clippy").args(["--", "-D", "warnings"]))
}
