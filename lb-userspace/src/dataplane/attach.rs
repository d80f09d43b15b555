//! Attaching the datapath: XDP (with `lb_tc_nic` and `lb_tc_egress`) on the NICs, the tc
//! datapath on bridges, overlay devices and pod veths, and letting go of attachments whose
//! interface is gone.
use aya::programs::{TcAttachType, XdpMode};

use super::{Dataplane, DataplaneError, Result, tc_program};

impl Dataplane {
    /// Attach XDP to the NIC `iface` in driver mode, or in generic mode (with a warning)
    /// where the driver has no XDP support, `lb_tc_nic` to its tc ingress (it sends on the
    /// frames XDP hands over) and `lb_tc_egress` to its tc egress (the node's own
    /// connections to VIPs). Returns the XDP mode used.
    pub fn attach(&mut self, iface: &str) -> Result<XdpMode> {
        let prog = self.program()?;
        let (id, mode) = match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => (id, XdpMode::Driver),
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP unavailable, falling back to generic mode (slower)");
                (prog.attach(iface, XdpMode::Skb)?, XdpMode::Skb)
            }
        };
        self.links.push((iface.to_string(), id));
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
        if self.tc_links.iter().any(|(i, idx, n, _)| i == iface && *idx == ifindex && *n == name) {
            return Ok(false);
        }
        // A stale attachment (the interface was re-created): forget it.
        self.tc_links.retain(|(i, _, n, _)| !(i == iface && *n == name));
        let tcx = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        if !tcx {
            // Before TCX, tc programs hang off a clsact qdisc (already there is fine).
            let _ = aya::programs::tc::qdisc_add_clsact(iface);
        }
        let prog = tc_program(&mut self.ebpf, name)?;
        let id = prog.attach(iface, hook).map_err(|source| DataplaneError::NamedProgram { name, source })?;
        self.tc_links.push((iface.to_string(), ifindex, name, id));
        Ok(true)
    }

    /// Forget the tc attachments of interfaces that are gone (a pod's veth when the pod
    /// goes): the kernel detached them; their links would otherwise hold a descriptor each.
    pub fn forget_gone_tc(&mut self) {
        let gone: Vec<usize> = self
            .tc_links
            .iter()
            .enumerate()
            .filter(|(_, (iface, ifindex, ..))| nix::net::if_::if_nametoindex(iface.as_str()).ok() != Some(*ifindex))
            .map(|(i, _)| i)
            .collect();
        for i in gone.into_iter().rev() {
            let (iface, _, name, id) = self.tc_links.remove(i);
            if let Ok(prog) = tc_program(&mut self.ebpf, name) {
                let _ = prog.detach(id);
            }
            tracing::info!(iface, "interface gone: tc attachment forgotten");
        }
    }

    /// Detach from every interface.
    pub fn detach_all(&mut self) {
        let links: Vec<_> = self.links.drain(..).collect();
        for (iface, id) in links {
            if let Ok(prog) = self.program()
                && let Err(e) = prog.detach(id)
            {
                tracing::warn!(iface, error = %e, "detach failed");
            }
        }
        for (iface, _, name, id) in std::mem::take(&mut self.tc_links) {
            if let Ok(prog) = tc_program(&mut self.ebpf, name)
                && let Err(e) = prog.detach(id)
            {
                tracing::debug!(iface, error = %e, "tc detach failed (the interface may be gone)");
            }
        }
    }
}
