//! Attaching the datapath: XDP (with `lb_tc_nic` and `lb_tc_egress`) on the NICs, the tc
//! datapath on bridges, overlay devices and pod veths, and letting go of attachments whose
//! interface is gone. With pins (`pin.rs`) every attachment is a pinned link that outlives
//! `lb`; a restarted `lb` swaps its programs into the links it finds
//! ([`finish_adoption`](Dataplane::finish_adoption)) instead of attaching anew.
use std::{any::Any, fs, path::PathBuf};

use aya::programs::{
    TcAttachType, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::{
    Dataplane,
    error::{DataplaneError, Result},
    maps::{program, tc_program},
};

/// Where a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Xdp,
    Tc(TcAttachType),
}

/// One attachment: a link this process holds (dropping it detaches the program unless the
/// link is pinned), or a pinned link of the previous generation still running its programs
/// until [`finish_adoption`](Dataplane::finish_adoption) swaps ours in.
pub(super) struct Attached {
    iface: String,
    ifindex: u32,
    program: &'static str,
    hook: Hook,
    link: Held,
}

enum Held {
    Link(#[allow(dead_code)] Box<dyn Any>),
    Pending(PathBuf),
}

impl Dataplane {
    /// Attach XDP to the NIC `iface` in driver mode, or in generic mode (with a warning)
    /// where the driver has no XDP support, `lb_tc_nic` to its tc ingress (it sends on the
    /// frames XDP hands over) and `lb_tc_egress` to its tc egress (the node's own
    /// connections to VIPs). Returns the XDP mode used, or `None` where the previous
    /// generation's pinned link is kept until [`finish_adoption`](Self::finish_adoption).
    pub fn attach(&mut self, iface: &str) -> Result<Option<XdpMode>> {
        let mode = self.attach_program(iface, lb_common::XDP_PROGRAM, Hook::Xdp)?;
        self.attach_tc_program(iface, lb_common::TC_NIC_PROGRAM, TcAttachType::Ingress)?;
        self.attach_tc_program(iface, lb_common::TC_EGRESS_PROGRAM, TcAttachType::Egress)?;
        Ok(mode)
    }

    /// Run the tc datapath (`lb_tc`) on `iface`'s ingress: a bridge, overlay device or pod
    /// veth that backends or local clients are reached through. Idempotent while the
    /// interface keeps its ifindex; a re-created interface is attached again.
    pub fn attach_tc(&mut self, iface: &str) -> Result<bool> {
        self.attach_tc_program(iface, lb_common::TC_PROGRAM, TcAttachType::Ingress)
    }

    fn attach_tc_program(&mut self, iface: &str, name: &'static str, hook: TcAttachType) -> Result<bool> {
        let ifindex = nix::net::if_::if_nametoindex(iface).unwrap_or(0);
        if self.attached.iter().any(|a| a.iface == iface && a.ifindex == ifindex && a.program == name) {
            return Ok(false);
        }
        // A stale attachment (the interface was re-created): forget it.
        self.attached.retain(|a| !(a.iface == iface && a.program == name));
        self.attach_program(iface, name, Hook::Tc(hook))?;
        Ok(true)
    }

    /// Attach `name` to `iface` at `hook`, or note the previous generation's pinned link for
    /// it while adopting. Returns the XDP mode of a fresh XDP attachment.
    fn attach_program(&mut self, iface: &str, name: &'static str, hook: Hook) -> Result<Option<XdpMode>> {
        let ifindex = nix::net::if_::if_nametoindex(iface).unwrap_or(0);
        let pending = self.pins.as_ref().filter(|_| self.adopting).map(|p| p.link(iface, name)).filter(|p| p.exists());
        let (link, mode) = match pending {
            Some(path) => (Held::Pending(path), None),
            None => {
                let (link, mode) = self.attach_fresh(iface, name, hook)?;
                (Held::Link(link), mode)
            }
        };
        self.attached.push(Attached { iface: iface.to_string(), ifindex, program: name, hook, link });
        self.fit_mtu_of(iface)?;
        Ok(mode)
    }

    /// A new link of `name` on `iface`, pinned when pinning (a stale pin there is replaced).
    fn attach_fresh(&mut self, iface: &str, name: &'static str, hook: Hook) -> Result<(Box<dyn Any>, Option<XdpMode>)> {
        let pin = self.pins.as_ref().map(|p| p.link(iface, name));
        if let Some(path) = &pin {
            let _ = fs::remove_file(path);
        }
        let named = |source| DataplaneError::NamedProgram { name, source };
        match hook {
            Hook::Xdp => {
                let prog = program(&mut self.ebpf)?;
                let (id, mode) = match prog.attach(iface, XdpMode::Driver) {
                    Ok(id) => (id, XdpMode::Driver),
                    Err(e) => {
                        tracing::warn!(iface, error = %e, "native XDP unavailable, falling back to generic mode (slower)");
                        (prog.attach(iface, XdpMode::Skb)?, XdpMode::Skb)
                    }
                };
                let link = prog.take_link(id).map_err(named)?;
                Ok((hold(link, pin.as_ref())?, Some(mode)))
            }
            Hook::Tc(at) => {
                let tcx =
                    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
                if !tcx {
                    // Before TCX, tc programs hang off a clsact qdisc (already there is fine).
                    let _ = aya::programs::tc::qdisc_add_clsact(iface);
                }
                let prog = tc_program(&mut self.ebpf, name)?;
                let id = prog.attach(iface, at).map_err(named)?;
                let link = prog.take_link(id).map_err(named)?;
                Ok((hold(link, pin.as_ref())?, None))
            }
        }
    }

    /// Swap this generation's programs into the previous generation's pinned links (one
    /// atomic update each: no packet meets no program), once the maps carry the model:
    /// publish this generation's ids, unpin the links of interfaces no longer served, and
    /// let the ids the model no longer uses go into quarantine. Returns the links adopted.
    pub fn finish_adoption(&mut self) -> Result<usize> {
        let Some(pins) = self.pins.clone() else { return Ok(0) };
        pins.stage_config(&self.ebpf)?;
        let mut adopted = 0;
        let (mut failed, mut kept) = (Vec::new(), Vec::new());
        for i in 0..self.attached.len() {
            let Held::Pending(path) = &self.attached[i].link else { continue };
            let (path, name, hook) = (path.clone(), self.attached[i].program, self.attached[i].hook);
            let iface = self.attached[i].iface.clone();
            let link = match self.swap(&path, name, hook) {
                Ok(link) => {
                    adopted += 1;
                    link
                }
                // The link's interface is gone (re-created under its name): a new link.
                Err(e) => match self.attach_fresh(&iface, name, hook) {
                    Ok((link, _)) => {
                        tracing::warn!(iface, program = name, error = %e, "pinned link not adoptable: attached anew");
                        link
                    }
                    Err(again) => {
                        // A tc device is tried again by the next path sync; an XDP NIC keeps
                        // what runs there now.
                        tracing::error!(iface, program = name, error = %e, again = %again, "cannot take over the pinned link");
                        failed.push(i);
                        kept.push(path);
                        continue;
                    }
                },
            };
            self.attached[i].link = Held::Link(link);
        }
        for i in failed.into_iter().rev() {
            self.attached.remove(i);
        }
        pins.commit_config()?;
        let mut ours: Vec<PathBuf> = self.attached.iter().map(|a| pins.link(&a.iface, a.program)).collect();
        ours.extend(kept);
        for stale in pins.links().into_iter().filter(|p| !ours.contains(p)) {
            tracing::info!(link = %stale.display(), "pinned link of an interface no longer served: removed");
            let _ = fs::remove_file(&stale);
        }
        if self.adopting {
            self.release_unclaimed_ids();
            tracing::info!(links = adopted, "adopted pinned datapath");
        }
        self.adopting = false;
        Ok(adopted)
    }

    /// Put `name` into the link pinned at `path`.
    fn swap(&mut self, path: &PathBuf, name: &'static str, hook: Hook) -> Result<Box<dyn Any>> {
        let named = |source| DataplaneError::NamedProgram { name, source };
        let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Pin(format!("{}: {e}", path.display())))?;
        let fd = FdLink::from(pinned);
        let link_err = |e: LinkError| DataplaneError::Pin(format!("{}: {e}", path.display()));
        Ok(match hook {
            Hook::Xdp => {
                let prog = program(&mut self.ebpf)?;
                let id = prog.attach_to_link(XdpLink::try_from(fd).map_err(link_err)?)?;
                Box::new(prog.take_link(id).map_err(named)?)
            }
            Hook::Tc(_) => {
                let prog = tc_program(&mut self.ebpf, name)?;
                let id = prog.attach_to_link(SchedClassifierLink::try_from(fd).map_err(link_err)?).map_err(named)?;
                Box::new(prog.take_link(id).map_err(named)?)
            }
        })
    }

    /// Forget the tc attachments of interfaces that are gone (a pod's veth when the pod
    /// goes): the kernel detached them; their links (and pins) would otherwise stay.
    pub fn forget_gone_tc(&mut self) {
        let (gone, kept): (Vec<Attached>, Vec<Attached>) = std::mem::take(&mut self.attached)
            .into_iter()
            .partition(|a| nix::net::if_::if_nametoindex(a.iface.as_str()).ok() != Some(a.ifindex));
        self.attached = kept;
        for a in gone {
            if let Some(p) = &self.pins {
                let _ = fs::remove_file(p.link(&a.iface, a.program));
            }
            match a.hook {
                Hook::Xdp => {
                    tracing::info!(iface = a.iface, program = a.program, "interface gone: XDP attachment forgotten")
                }
                Hook::Tc(_) => {
                    tracing::info!(iface = a.iface, program = a.program, "interface gone: tc attachment forgotten")
                }
            }
        }
    }

    /// Let go of every attachment: unpinned programs leave their interfaces; pinned ones
    /// stay attached and keep forwarding until an `lb` adopts them or `lb uninstall` runs.
    pub fn detach_all(&mut self) {
        self.attached.clear();
    }

    /// Whether the datapath stays attached when this process ends.
    pub fn pinned(&self) -> bool {
        self.pins.is_some()
    }
}

/// Hold `link`: pinned at `pin` (then dropping it leaves the program attached), else as is
/// (dropping it detaches the program).
fn hold<L>(link: L, pin: Option<&PathBuf>) -> Result<Box<dyn Any>>
where
    L: Any,
    FdLink: TryFrom<L, Error = LinkError>,
{
    let Some(path) = pin else { return Ok(Box::new(link)) };
    let fd = FdLink::try_from(link).map_err(|e| {
        DataplaneError::Pin(format!(
            "{}: this kernel attaches without BPF links ({e}): run with --no-pin",
            path.display()
        ))
    })?;
    let pinned = fd.pin(path).map_err(|e| DataplaneError::Pin(format!("{}: {e:?}", path.display())))?;
    Ok(Box::new(pinned))
}
