//! The reference XDP programs the veth runs measure lb against (the XDP_DROP sink, the
//! minimal forwarder: MAC rewrite + devmap redirect) and the backend's UDP sink, attached for
//! as long as a guard lives, and the bpf_stats (`run_time_ns`, `run_cnt`) of whatever XDP
//! program an interface runs.
use anyhow::{Context, Result, anyhow};
use aya::maps::{Array, DevMap, MapData, PerCpuArray};
use lb_common::{Counter, map_names, stat};
use lb_tests::netns::Netns;
use lb_userspace::dataplane::{FLOOR_PROGRAM, MIN_FORWARDER_PROGRAM, UDP_SINK_PROGRAM, load_floor};

/// Which reference program to attach.
pub enum Reference {
    /// Count, drop.
    Sink,
    /// Write `dmac`/`smac`, redirect to the interface `out_ifindex` (in the same namespace).
    MinForwarder { out_ifindex: u32, dmac: [u8; 6], smac: [u8; 6] },
    /// At tc ingress: count IPv4 UDP and drop it; pass anything else (the backend of the
    /// veth runs).
    UdpSink,
}

/// The program's counter of what it received (`STATS[RX]`, summed over CPUs).
type Received = PerCpuArray<MapData, Counter>;

/// A reference program attached to an interface in a namespace, detached on drop.
pub struct XdpGuard {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    received: Received,
}

impl XdpGuard {
    pub fn attach(ns: &Netns, iface: &str, what: Reference) -> Result<XdpGuard> {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<Received, String>>();
        let iface = iface.to_string();
        // Inside the namespace: the devmap resolves the ifindex in the caller's namespace.
        let thread = ns.spawn(move || {
            let attached = (|| -> Result<(aya::Ebpf, Received)> {
                let mut ebpf = load_floor()?;
                let name = match what {
                    Reference::Sink => FLOOR_PROGRAM,
                    Reference::MinForwarder { out_ifindex, dmac, smac } => {
                        let mut macs: Array<_, [u8; 12]> =
                            Array::try_from(ebpf.map_mut(map_names::MIN_FWD_MACS).context("MIN_FWD_MACS")?)?;
                        let mut value = [0u8; 12];
                        value[..6].copy_from_slice(&dmac);
                        value[6..].copy_from_slice(&smac);
                        macs.set(0, value, 0)?;
                        let mut tx = DevMap::try_from(ebpf.map_mut(map_names::MIN_FWD_TX).context("MIN_FWD_TX")?)?;
                        tx.set(0, out_ifindex, None, 0)?;
                        let prog: &mut aya::programs::Xdp =
                            ebpf.program_mut(MIN_FORWARDER_PROGRAM).context(MIN_FORWARDER_PROGRAM)?.try_into()?;
                        prog.load()?;
                        MIN_FORWARDER_PROGRAM
                    }
                    Reference::UdpSink => {
                        let prog: &mut aya::programs::SchedClassifier =
                            ebpf.program_mut(UDP_SINK_PROGRAM).context(UDP_SINK_PROGRAM)?.try_into()?;
                        prog.load()?;
                        // TCX needs no qdisc; an older kernel's tc attach needs clsact.
                        let _ = aya::programs::tc::qdisc_add_clsact(&iface);
                        prog.attach(&iface, aya::programs::TcAttachType::Ingress)?;
                        let received = Received::try_from(ebpf.take_map(map_names::STATS).context("STATS")?)?;
                        return Ok((ebpf, received));
                    }
                };
                let prog: &mut aya::programs::Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
                prog.attach(&iface, aya::programs::XdpMode::Driver)?;
                let received = Received::try_from(ebpf.take_map(map_names::STATS).context("STATS")?)?;
                Ok((ebpf, received))
            })();
            match attached {
                Ok((ebpf, received)) => {
                    let _ = ready_tx.send(Ok(received));
                    let _ = wait.recv();
                    drop(ebpf);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
        });
        let received = ready.recv()?.map_err(|e| anyhow!(e))?;
        Ok(XdpGuard { stop, thread: Some(thread), received })
    }

    /// Packets the program counted as received (the sinks: all they dropped).
    pub fn received(&self) -> Result<u64> {
        Ok(self.received.get(&stat::RX, 0)?.iter().map(|c| c.packets).sum())
    }
}

impl Drop for XdpGuard {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `iface`'s index in `ns`.
pub fn ifindex(ns: &Netns, iface: &str) -> Result<u32> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{iface}/ifindex")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The bpf_stats of the XDP program attached to `iface` in `ns`: (run_time_ns, run_cnt)
/// (tail-called programs count in their caller's time). Needs bpf_stats enabled.
pub fn xdp_stats(ns: &Netns, iface: &str) -> Result<(u64, u64)> {
    let out = ns.exec(&["ip", "-j", "link", "show", "dev", iface])?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = prog_id(&links[0]["xdp"]).with_context(|| format!("no XDP program on {iface}"))?;
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .with_context(|| format!("XDP program {id} not loaded"))?;
    Ok((info.run_time().as_nanos() as u64, info.run_count()))
}

/// The first program id under `ip -j link`'s `xdp` object.
fn prog_id(xdp: &serde_json::Value) -> Option<u32> {
    if let Some(id) = xdp["prog"]["id"].as_u64() {
        return Some(id as u32);
    }
    xdp["attached"].as_array()?.iter().find_map(|a| a["prog"]["id"].as_u64().or(a["id"].as_u64())).map(|i| i as u32)
}
