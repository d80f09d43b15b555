//! `cargo xtask <task>`: the project's self-installing build, test, demo and bench entry points.
mod deploy_check;
mod doc_claims;
mod doc_links;
mod lint;
mod setup;

use std::{
    env,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  setup        install what this machine lacks (Debian packages, bpf-linker, bpffs); idempotent
  build-ebpf   build the XDP object (lb-ebpf) for bpfel-unknown-none; --locked: lb-ebpf/Cargo.lock as it is
  build        build-ebpf, then the `lb` binary (release) with the object embedded
  lint         the gates: rustfmt --check and clippy -D warnings, on the host workspace and lb-ebpf;
               README/docs links (inside the repository, resolving); the tests docs/annotations*.md cite
               exist and set the annotation of their row; deploy/Dockerfile pins and hadolint
  demo         setup + build, then real traffic through a namespace topology; prints a summary
  test         setup + lint + build, then every test, privileged ones included
               (LB_REQUIRE_PRIVILEGED=1); a failing gate fails the task before any build
  bench        measure the datapath, the control plane, veth throughput and the L7 proxy
               against peers in the same run (XDP_DROP floor, iptables DNAT, nginx, haproxy);
               --quick: a smaller run; --only datapath,control,throughput,connections,l7;
               writes target/bench/report.{md,json}, datapath.svg, l7-throughput.svg, l7-latency.svg";

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build-ebpf") => {
            let locked = args[1..].iter().any(|a| a == "--locked");
            setup::ensure_ebpf_toolchain().and_then(|_| build_ebpf(locked))
        }
        Some("build") => build(),
        Some("lint") => setup::ensure_ebpf_toolchain().and_then(|_| lint::gates()),
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

/// The cargo that runs us (rustup's stable), for the user-space crates. Always into
/// `target/` (whatever CARGO_TARGET_DIR says): the tests and the demo find `lb` there.
pub fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).env("CARGO_TARGET_DIR", root().join("target"));
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

/// Debian's cargo in lb-ebpf running `subcommand` for bpfel-unknown-none (release, build-std
/// core, into target/ebpf) with Debian's rustc (it has the library source build-std needs), in
/// an environment cleaned of what rustup and the outer cargo set. `cargo xtask build-ebpf`
/// builds with it and the lint gate runs clippy with it: the same flags, the same artifacts.
pub fn ebpf_cargo(subcommand: &str) -> Command {
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(root().join("lb-ebpf"))
        .args([subcommand, "--release", "-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(root().join("target/ebpf"));
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO") && k != "CARGO_HOME"
            || k.starts_with("RUSTUP")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTFLAGS")
            || k == "RUSTDOC"
        {
            cmd.env_remove(&key);
        }
    }
    let path = env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/bin:{}:{path}", setup::cargo_bin_dir().display()))
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn build_ebpf(locked: bool) -> Result<()> {
    let mut cmd = ebpf_cargo("build");
    if locked {
        cmd.arg("--locked");
    }
    exec(&mut cmd)?;
    println!("xtask: XDP object at {}", ebpf_object().display());
    Ok(())
}

fn build() -> Result<()> {
    setup::ensure_ebpf_toolchain()?;
    build_ebpf(false)?;
    exec(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    println!("xtask: built {}", root().join("target/release/lb").display());
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    setup::run()?;
    build()?;
    exec(
        cargo()
            .args(["run", "--release", "--quiet", "-p", "lb-tests", "--bin", "lb-demo", "--"])
            .args(args)
            .env("LB_BIN", root().join("target/release/lb")),
    )
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    lint::gates()?;
    build()?;
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--workspace"])
        .args(args)
        .env("LB_BIN", root().join("target/release/lb"))
        .env("LB_REQUIRE_PRIVILEGED", "1")
        .stdout(Stdio::piped());
    println!("xtask: $ {}", show(&cmd));
    let mut child = cmd.spawn().context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    // One closing line over every test binary (cargo prints one per binary).
    println!("xtask: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// (passed, failed) from libtest's "test result: ok. 3 passed; 0 failed; ..." line.
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            let part = part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ");
            part.strip_suffix(word).and_then(|n| n.trim().parse::<u64>().ok())
        })
    };
    Some((count(" passed")?, count(" failed")?))
}

fn bench(args: &[String]) -> Result<()> {
    setup::run()?;
    build()?;
    exec(
        cargo()
            .args(["run", "--release", "--quiet", "-p", "lb-tests", "--bin", "lb-bench", "--"])
            .args(args)
            .env("LB_BIN", root().join("target/release/lb")),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_libtest_result_lines() {
        let ok = "test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(super::parse_result_line(ok), Some((8, 0)));
        let bad = "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(super::parse_result_line(bad), Some((0, 1)));
        assert_eq!(super::parse_result_line("running 3 tests"), None);
    }
}
