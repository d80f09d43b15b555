//! Test support shared by the integration tests and the demo: network namespaces and veth
//! pairs with a unique per-run prefix (removed on drop, even when a test fails), crafted
//! packets, small real servers, and the `lb` daemon as a child process.
pub mod cluster;
pub mod daemon;
pub mod fixture;
pub mod netns;
pub mod packet;
pub mod ppserver;
pub mod proxy_frames;
pub mod scenario;
pub mod servers;
pub mod testbed;
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

/// `in_every_shape!(name, ...)`: for each `fn name(shape: Shape)` in scope, the tests
/// `name::routed`, `name::bridge` and `name::vxlan` (privileged: see [`privileged`]).
#[macro_export]
macro_rules! in_every_shape {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn routed() {
                    if $crate::privileged(concat!(stringify!($name), "::routed")) {
                        super::$name($crate::topology::Shape::Routed)
                    }
                }

                #[test]
                fn bridge() {
                    if $crate::privileged(concat!(stringify!($name), "::bridge")) {
                        super::$name($crate::topology::Shape::Bridge)
                    }
                }

                #[test]
                fn vxlan() {
                    if $crate::privileged(concat!(stringify!($name), "::vxlan")) {
                        super::$name($crate::topology::Shape::Vxlan)
                    }
                }
            }
        )+
    };
}
