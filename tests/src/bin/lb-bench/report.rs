//! The report: markdown for each suite that ran (figures, ratios, notes) and the datapath
//! chart (SVG); the L7 section and charts are in `l7_report`.
use std::fmt::Write as _;

pub fn markdown(r: &serde_json::Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(s, "# lb benchmark{}\n", if r["quick"].as_bool() == Some(true) { " (--quick)" } else { "" });
    let _ = writeln!(s, "Machine: {} ({} CPUs), kernel {}, lb {}.\n", m["cpu"], m["cpus"], m["kernel"], m["lb"]);
    if r.get("datapath_ns_per_packet").is_some() {
        datapath_markdown(
            &mut s,
            &r["datapath_ns_per_packet"],
            "Datapath cost: XDP (BPF_PROG_TEST_RUN, ns per packet, same run)",
        );
        let _ = writeln!(
            s,
            "\nHow: `test_run ns` is BPF_PROG_TEST_RUN's own time per packet: for the floor and the not-ours rows the kernel's loop over one packet (`repeat`, the program leaves it unchanged); for every other row one call per packet (a repeated run would get the packet it rewrote), which includes the call's fixed cost, so those rows are compared with the floor measured one packet per call. `program ns` is the program's own run time, bpf_stats `run_time_ns / run_cnt` over the same runs (tail-called programs included), against the floor's measured the same way. New-flow rows: a distinct flow per packet; the flows are forgotten after each repeat, so every repeat finds free source ports. The 16,000-flow row: as many UDP flows as the veth runs' many-flows case, opened first, then one packet of each per call in a fixed shuffled order, so each lookup meets a conntrack entry (and hash bucket) the CPU's caches and TLB do not hold, as under real traffic; against the one-flow row above it, that is what the table's memory costs."
        );
    }
    if r.get("tc_datapath_ns_per_packet").is_some() {
        let _ = writeln!(s, "\nChart (XDP and tc, log scale): [datapath](datapath.svg).");
        datapath_markdown(
            &mut s,
            &r["tc_datapath_ns_per_packet"],
            "Datapath cost: tc, for pods and local clients (BPF_PROG_TEST_RUN, ns per packet, against a tc floor, same run)",
        );
    }
    if r.get("control_plane").is_some() {
        control_markdown(&mut s, r);
    }
    if r.get("throughput").is_some() {
        throughput_markdown(&mut s, r);
    }
    if r.get("connection_rate").is_some() {
        connections_markdown(&mut s, r);
    }
    if let Some(l7) = r.get("l7") {
        crate::l7_report::markdown(&mut s, l7);
    }
    let _ = writeln!(
        s,
        "\nNot measured yet: {}.",
        r["not_measured_yet"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    s
}

fn datapath_markdown(s: &mut String, cases: &serde_json::Value, title: &str) {
    let _ = writeln!(s, "\n## {title}\n");
    let _ = writeln!(
        s,
        "| case | test_run ns: min / median / max | × floor | program ns (bpf_stats): min / median / max | × floor |\n|---|---:|---:|---:|---:|"
    );
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    for c in cases.as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {:.0} / **{:.0}** / {:.0} | {:.2} | {:.1} / **{:.1}** / {:.1} | {:.2} |",
            c["case"].as_str().unwrap_or(""),
            f(&c["ns"]["min"]),
            f(&c["ns"]["median"]),
            f(&c["ns"]["max"]),
            f(&c["ratio_to_floor"]),
            f(&c["prog_ns"]["min"]),
            f(&c["prog_ns"]["median"]),
            f(&c["prog_ns"]["max"]),
            f(&c["prog_ratio_to_floor"]),
        );
    }
}

fn control_markdown(s: &mut String, r: &serde_json::Value) {
    let c = &r["control_plane"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let _ = writeln!(s, "\n## Control plane (through `lb run`)\n");
    let _ = writeln!(
        s,
        "{} Services, {} endpoints written as manifests (one file per Service) into a staging directory, then renamed in a burst ({:.0} ms) into the directory a running `lb run` reads: in the maps, next hops resolved, {:.0} ms after the first file was renamed in (lb's last apply, from the poll that read the directory: {:.0} ms); one endpoint change applied in {:.2} ms (median of {}, slowest {:.2} ms; from the read of the changed file, which inotify wakes the agent for, to the maps filled); agent RSS {:.0} MiB (peak {:.0} MiB).",
        c["services"],
        c["endpoints"],
        f(&c["apply_all_moves_ms"]),
        f(&c["apply_all_ms"]),
        f(&c["apply_all_last_poll_ms"]),
        f(&c["one_endpoint_change_ms"]),
        crate::control::CHANGES,
        f(&c["one_endpoint_change_max_ms"]),
        f(&c["agent_rss_mib"]),
        f(&c["agent_peak_rss_mib"]),
    );
    if let (Some(all), Some(one)) = (c["apply_all_last_phases"].as_str(), c["one_endpoint_change_phases"].as_str()) {
        let _ = writeln!(
            s,
            "\nWhere `lb run`'s time went (its `model applied` log line, ms per step: reading the directory, building the model, routes to backends, health checks, L7, the maps): the last apply {all}; the median change {one}."
        );
    }
    let p = &c["in_process"];
    if p.is_object() {
        let _ = writeln!(
            s,
            "\nThe same steps in the bench's own process (where the time goes): parse {:.0} ms, validate {:.0} ms, apply to the maps {:.0} ms, one endpoint change {:.2} ms.",
            f(&p["parse_ms"]),
            f(&p["validate_ms"]),
            f(&p["apply_all_ms"]),
            f(&p["one_endpoint_change_ms"]),
        );
    }
}

fn throughput_markdown(s: &mut String, r: &serde_json::Value) {
    let _ = writeln!(s, "\n## Throughput on the veth topology (trafgen, 60-byte UDP, one CPU)\n");
    let _ = writeln!(
        s,
        "The generator, the forwarder and the receiver share one CPU path (a veth runs its peer's receive in the sender's softirq), so forwarders are compared by their marginal cost per packet over an XDP_DROP sink on the node's receiving interface, measured in the same run, on the same topology (the bridge rows cross a wire switch to the node, so their sink is that topology's). The backend counts and drops the packets at tc ingress on its own interface, before its IP stack, the same in every mode: what is left of its receive (an skb, GRO, the tc program) is in every forwarding mode's marginal cost, and lb's and the minimal forwarder's frames also pay the skb built from an XDP frame, which iptables' packets, already skbs, do not.\n"
    );
    let _ = writeln!(
        s,
        "| backend | mode | flows | Mpps (median) | marginal µs/pkt | × minimal forwarder | × iptables DNAT | program ns/pkt (bpf_stats) | delivered (lowest) | lb's drops (its counters, all runs) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    let ratio = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.2}×")).unwrap_or_else(|| "—".into());
    for t in r["throughput"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.2} | {} | {} | {} | {:.1}% | {} |",
            t["backend"].as_str().unwrap_or("routed host (XDP both ways)"),
            t["mode"].as_str().unwrap_or(""),
            t["flows"].as_str().unwrap_or(""),
            t["mpps"].as_f64().unwrap_or(0.0),
            t["marginal_us_per_packet"].as_f64().unwrap_or(0.0),
            ratio(&t["vs_min_forwarder"]),
            ratio(&t["vs_iptables"]),
            t["program_ns_per_packet"].as_f64().map(|x| format!("{x:.0}")).unwrap_or_else(|| "—".into()),
            t["delivered"].as_f64().unwrap_or(0.0) * 100.0,
            drops_text(&t["lb_drops"]),
        );
    }
    let _ = writeln!(
        s,
        "\nThe ratios are lb's marginal cost over the peer's, same topology and flows. `program ns/pkt` is the XDP program's own run time on the receiving interface under the live traffic (bpf_stats `run_time_ns / run_cnt`, tail calls included); the rest of the marginal cost is the redirect, the veth hop and the backend's receive up to its tc ingress. Delivered: what the backend's tc program counted; lb's drops: its own datapath's drop counters summed over the runs, so a shortfall it does not count was lost on the way (a veth queue, the bridge), not by lb. The minimal forwarder (MAC rewrite + devmap redirect, no address or port rewrite) runs only towards the routed backend: a bridge takes no XDP redirect. With 16,000 flows (source ports drawn at random from 16,000) most packets of a short run open a flow: lb's full NAT takes a source port per flow from `--snat-ports` (default 10000-29999: 20,000 flows at once per backend and node address). Above 100%: a trafgen chunk that failed to flush was sent again."
    );
}

/// lb's drop counters of a throughput row: `—` for another mode, `none`, or `counter n, ...`.
fn drops_text(v: &serde_json::Value) -> String {
    match v.as_object() {
        None => "—".into(),
        Some(m) if m.is_empty() => "none".into(),
        Some(m) => m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
    }
}

fn connections_markdown(s: &mut String, r: &serde_json::Value) {
    let _ = writeln!(s, "\n## TCP connection rate (sequential connect, request, response, close)\n");
    let _ = writeln!(
        s,
        "| mode | connections/s (min / median / max) | one connection µs (median / p99 / max) | connections over 200 ms | lb's program per connection (bpf_stats) |\n|---|---:|---:|---:|---:|"
    );
    for c in r["connection_rate"].as_array().into_iter().flatten() {
        let v = &c["connections_per_second"];
        let t = &c["connection_us"];
        let _ = writeln!(
            s,
            "| {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} | {} |",
            c["mode"].as_str().unwrap_or(""),
            v["min"].as_f64().unwrap_or(0.0),
            v["median"].as_f64().unwrap_or(0.0),
            v["max"].as_f64().unwrap_or(0.0),
            t["median"].as_f64().unwrap_or(0.0),
            t["p99"].as_f64().unwrap_or(0.0),
            t["max"].as_f64().unwrap_or(0.0),
            c["stalls_over_200ms"].as_u64().unwrap_or(0),
            match (c["program_ns_per_connection"].as_f64(), c["program_packets_per_connection"].as_f64()) {
                (Some(ns), Some(p)) => format!("{:.1} µs over {p:.1} packets", ns / 1e3),
                _ => "—".into(),
            }
        );
    }
}

/// A horizontal bar chart of the median ns/packet per case.
/// The datapath chart: per case, the program's own time (bpf_stats) and BPF_PROG_TEST_RUN's
/// time per packet, on a log axis (the cases span from the floor's ns to a new flow's µs),
/// with ticks and grid lines; an opaque white background and dark ink, so it reads the same
/// on light and dark pages.
pub fn svg(r: &serde_json::Value) -> String {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0).max(1.0);
    let cases: Vec<(String, f64, f64)> = ["datapath_ns_per_packet", "tc_datapath_ns_per_packet"]
        .iter()
        .flat_map(|k| r[*k].as_array().cloned().unwrap_or_default())
        .map(|c| (c["case"].as_str().unwrap_or("").to_string(), f(&c["prog_ns"]["median"]), f(&c["ns"]["median"])))
        .collect();
    let max = cases.iter().map(|c| c.1.max(c.2)).fold(10.0, f64::max);
    let decades = max.log10().ceil().max(2.0);
    let (w, row, x0, top) = (1000.0, 30.0, 430.0, 60.0);
    let plot = w - x0 - 30.0;
    let x = |v: f64| x0 + plot * v.log10() / decades;
    let h = top + row * cases.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#111\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">Datapath cost per packet, ns (median, log scale)</text>\n<rect x=\"10\" y=\"32\" width=\"12\" height=\"10\" fill=\"#1f5fbf\"/><text x=\"27\" y=\"41\">program (bpf_stats run_time_ns / run_cnt)</text><rect x=\"300\" y=\"32\" width=\"12\" height=\"10\" fill=\"#e08a1e\"/><text x=\"317\" y=\"41\">BPF_PROG_TEST_RUN time per packet</text>\n"
    );
    let bottom = top + row * cases.len() as f64;
    for d in 0..=(decades as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v > 10f64.powf(decades) || v < 1.0 {
                continue;
            }
            let xv = x(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                "<line x1=\"{xv:.1}\" y1=\"{top:.0}\" x2=\"{xv:.1}\" y2=\"{bottom:.0}\" stroke=\"#999\" stroke-width=\"{}\"/><line x1=\"{xv:.1}\" y1=\"{bottom:.0}\" x2=\"{xv:.1}\" y2=\"{:.0}\" stroke=\"#111\"/><text x=\"{xv:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{v}</text>",
                if major { 1.0 } else { 0.4 },
                bottom + 5.0,
                bottom + 18.0
            );
        }
    }
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" y1=\"{bottom:.0}\" x2=\"{:.0}\" y2=\"{bottom:.0}\" stroke=\"#111\"/><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">ns per packet</text>",
        x0 + plot,
        x0 + plot / 2.0,
        bottom + 34.0
    );
    for (i, (name, prog, test_run)) in cases.iter().enumerate() {
        let y = top + row * i as f64 + 4.0;
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"{x0}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"10\" fill=\"#1f5fbf\"/><rect x=\"{x0}\" y=\"{:.0}\" width=\"{:.1}\" height=\"10\" fill=\"#e08a1e\"/><text x=\"{:.1}\" y=\"{:.0}\" font-size=\"10\">{prog:.0} / {test_run:.0}</text>",
            y + 15.0,
            xml(name),
            x(*prog) - x0,
            y + 11.0,
            x(*test_run) - x0,
            x(prog.max(*test_run)) + 4.0,
            y + 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

pub fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
