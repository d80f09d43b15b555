//! `lb node-prep`: every privileged setting of the node the datapath needs, applied once and
//! idempotently, so that `lb run` needs neither a writable /proc/sys nor CAP_SYS_ADMIN (the
//! DaemonSet's init container runs this; `lb run` then finds everything set and writes
//! nothing).
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::netif::{Iface, NodeChanges};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted on a node.
const BPFFS: &str = "/sys/fs/bpf";

/// What [`prepare`] sets.
pub struct NodePrep<'a> {
    /// The NICs `lb run --iface` gets.
    pub ifaces: &'a [String],
    /// `lb run --snat-ports`.
    pub snat_ports: (u16, u16),
    /// `lb run --pin-dir`, unless it runs with `--no-pin`.
    pub pin_dir: Option<&'a Path>,
}

/// Apply every node setting `lb run` needs:
/// - IPv4 forwarding on every interface (`conf.all`; a Kubernetes node forwards anyway) and
///   IPv4 and IPv6 forwarding on interfaces created later (`conf.default`: the tc datapath
///   serves pod devices that appear while it runs), on the `--iface` NICs and on every
///   Ethernet device there is now (bridges, pod veths, overlay devices: where backends and
///   local clients may be; `accept_ra` 1 → 2 where IPv6 forwards, so router advertisements
///   are still taken);
/// - the full-NAT source ports in `net.ipv4.ip_local_reserved_ports`;
/// - a bpffs at /sys/fs/bpf when the pin directory is under it, and the pin directory.
///
/// Returns what it did, one line each (nothing when everything was set already).
pub fn prepare(p: &NodePrep) -> Result<Vec<String>> {
    let mut node = NodeChanges::default();
    let mut done = Vec::new();
    for path in [
        "/proc/sys/net/ipv4/conf/all/forwarding",
        "/proc/sys/net/ipv4/conf/default/forwarding",
        "/proc/sys/net/ipv6/conf/default/forwarding",
    ] {
        if node.set_sysctl(path, "1")? {
            done.push(format!("{path} = 1"));
        }
    }
    for name in p.ifaces {
        let iface = Iface::lookup(name).with_context(|| format!("--iface {name}"))?;
        if node.enable_forwarding(&iface.name, iface.ipv6.is_some())? {
            done.push(format!("forwarding on for {}", iface.name));
        }
    }
    // The devices the tc datapath may serve (bridges, pod veths, overlay devices: any
    // Ethernet device backends or local clients are reached through) that exist already;
    // those created later take the defaults above.
    for dev in ethernet_devices()? {
        let ipv6 = Iface::lookup(&dev).is_ok_and(|i| i.ipv6.is_some());
        if node.enable_forwarding(&dev, ipv6)? {
            done.push(format!("forwarding on for {dev}"));
        }
    }
    let (first, last) = p.snat_ports;
    if node.reserve_ports(first, last)? {
        done.push(format!("ports {first}-{last} reserved"));
    }
    if let Some(dir) = p.pin_dir {
        if dir.starts_with(BPFFS) && !on_bpffs(Path::new(BPFFS)) {
            std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
            nix::mount::mount(Some("bpf"), BPFFS, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
                .with_context(|| format!("mounting a bpffs at {BPFFS}"))?;
            done.push(format!("bpffs mounted at {BPFFS}"));
        }
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            done.push(format!("{} created", dir.display()));
        }
        if !on_bpffs(dir) {
            bail!("{} is not on a bpffs: mount one there, or run lb with --no-pin", dir.display());
        }
    }
    // Nothing is undone: these are the node's settings from now on (`lb uninstall` releases
    // the ports).
    node.keep_datapath_settings();
    Ok(done)
}

fn on_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Every Ethernet device of the node that is up (link type 1; not loopback).
fn ethernet_devices() -> Result<Vec<String>> {
    let mut devs = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").context("listing /sys/class/net")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}")).unwrap_or_default();
        let up = u32::from_str_radix(read("flags").trim().trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 != 0);
        if read("type").trim() == "1" && up {
            devs.push(name);
        }
    }
    devs.sort();
    Ok(devs)
}
