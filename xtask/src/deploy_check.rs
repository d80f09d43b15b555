//! The Dockerfile gate: deploy/Dockerfile keeps its pins (base images by digest, the rust
//! image at the workspace's rust-version, bpf-linker at xtask's version, `--locked` builds of
//! `lb` only, no installer piped into a shell), then hadolint lints it.
use std::{fs, path::Path};

use anyhow::{Context, Result, bail};

use crate::setup::BPF_LINKER_VERSION;

/// Every broken pin in the Dockerfile text, given the workspace's rust-version (`1.95`).
pub fn problems(dockerfile: &str, rust_version: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let arg =
        |name: &str| lines.iter().find_map(|l| l.trim().strip_prefix(&format!("ARG {name}=")).map(str::to_string));
    for name in ["RUST_IMAGE", "RUNTIME_IMAGE"] {
        match arg(name) {
            Some(image) if digest_pinned(&image) => {}
            Some(image) => out.push(format!("ARG {name}={image}: not pinned by digest (name:tag@sha256:<64 hex>)")),
            None => out.push(format!("no ARG {name}=<image>@sha256:...")),
        }
    }
    match arg("RUST_IMAGE") {
        Some(image) if image.starts_with(&format!("rust:{rust_version}.")) => {}
        Some(image) => {
            out.push(format!("RUST_IMAGE {image} is not rust:{rust_version}.x (the workspace's rust-version)"))
        }
        None => {}
    }
    match arg("BPF_LINKER_VERSION") {
        Some(v) if v == BPF_LINKER_VERSION => {}
        v => out.push(format!("ARG BPF_LINKER_VERSION={v:?}, but xtask installs {BPF_LINKER_VERSION}")),
    }
    for line in &lines {
        let from = line.trim();
        if let Some(image) = from.strip_prefix("FROM ") {
            let image = image.split_whitespace().next().unwrap_or("");
            if !image.starts_with("${") && !digest_pinned(image) {
                out.push(format!("`{from}`: a base image not pinned by digest"));
            }
        }
    }
    let body = lines.join("\n");
    if body.contains("| sh") || body.contains("|sh") || body.contains("| bash") {
        out.push("an installer piped into a shell: take the toolchain from the pinned image".into());
    }
    for want in ["cargo --locked xtask build-ebpf --locked", "cargo build --locked --release -p lb-userspace --bin lb"]
    {
        if !body.contains(want) {
            out.push(format!("the build step lacks `{want}`"));
        }
    }
    out
}

fn digest_pinned(image: &str) -> bool {
    image
        .split_once("@sha256:")
        .is_some_and(|(name, hex)| name.contains(':') && hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The workspace's `rust-version` from Cargo.toml.
fn rust_version(root: &Path) -> Result<String> {
    let toml = fs::read_to_string(root.join("Cargo.toml"))?;
    toml.lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = ").map(|v| v.trim_matches('"').to_string()))
        .context("no rust-version in Cargo.toml")
}

pub fn check(root: &Path) -> Result<()> {
    let text = fs::read_to_string(root.join("deploy/Dockerfile")).context("reading deploy/Dockerfile")?;
    let found = problems(&text, &rust_version(root)?);
    if !found.is_empty() {
        bail!("deploy/Dockerfile: {}", found.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_dockerfile_keeps_its_pins() {
        check(&crate::root()).unwrap();
    }

    #[test]
    fn unpinned_images_and_installers_are_found() {
        let good = fs::read_to_string(crate::root().join("deploy/Dockerfile")).unwrap();
        assert!(problems(&good, "1.95").is_empty());
        assert!(!problems(&good, "1.96").is_empty(), "the rust image follows rust-version");
        let floating = good.replace("@sha256:e899040a73d36e2b36fa33216943539d9957cba8172b858097c2cabcdb20a3e2", "");
        assert!(problems(&floating, "1.95").iter().any(|p| p.contains("RUNTIME_IMAGE")));
        let curl = format!("{good}\nRUN curl -sSf https://sh.rustup.rs | sh -s -- -y\n");
        assert!(problems(&curl, "1.95").iter().any(|p| p.contains("shell")));
        let unlocked = good.replace("cargo build --locked --release", "cargo build --release");
        assert!(problems(&unlocked, "1.95").iter().any(|p| p.contains("--bin lb")));
        let from = format!("{good}\nFROM debian:bookworm\n");
        assert!(problems(&from, "1.95").iter().any(|p| p.contains("FROM debian:bookworm")));
    }
}
