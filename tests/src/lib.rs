//! Test support shared by the integration tests and the demo: network namespaces and veth
//! pairs with a unique per-run prefix (removed on drop, even when a test fails), crafted
//! packets, small real servers, and the `lb` daemon as a child process.
pub mod cluster;
pub mod netns;
pub mod packet;
pub mod ppserver;
pub mod servers;
pub mod testbed;
pub mod daemon;
pub mod scenario;
pub mod topology;

/// True when privileged tests can run here. Without root they are skipped, unless
/// `LB_REQUIRE_PRIVILEGED=1` (set by `cargo xtask test`) turns the skip into a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("LB_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test} needs root (LB_REQUIRE_PRIVILEGED=1 forbids skipping it)");
    }
    eprintln!("skipping {test}: needs root");
    false
}
