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
            "\nHow: `test_run ns` is BPF_PROG_TEST_RUN's own time per packet: for the floor and the not-ours rows the kernel's loop over one packet (`repeat`, the program leaves it unchanged); for every other row one call per packet (a repeated run would get the packet it rewrote), which includes the call's fixed cost, so those rows are compared with the floor measured one packet per call. `program ns` is the program's own run time, bpf_stats `run_time_ns / run_cnt` over the same runs (tail-called programs included), against the floor's measured the same way. New-flow rows: a distinct flow per packet; the flows are forgotten after each repeat, so every repeat finds free source ports."
        );
    }
    if r.get("tc_datapath_ns_per_packet").is_some() {
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
    let _ = writeln!(s, "\n## Control plane\n");
    let _ = writeln!(
        s,
        "{} Services, {} endpoints: parse {:.0} ms, validate {:.0} ms, apply to the maps {:.0} ms; one endpoint change applied in {:.2} ms; agent RSS {:.0} MiB.",
        c["services"],
        c["endpoints"],
        c["parse_ms"].as_f64().unwrap_or(0.0),
        c["validate_ms"].as_f64().unwrap_or(0.0),
        c["apply_all_ms"].as_f64().unwrap_or(0.0),
        c["one_endpoint_change_ms"].as_f64().unwrap_or(0.0),
        c["agent_rss_mib"].as_f64().unwrap_or(0.0)
    );
}

fn throughput_markdown(s: &mut String, r: &serde_json::Value) {
    let _ = writeln!(s, "\n## Throughput on the veth topology (trafgen, 60-byte UDP, one CPU)\n");
    let _ = writeln!(
        s,
        "The generator, the forwarder and the sink share one CPU path, so forwarders are compared by their marginal cost per packet over an XDP_DROP sink measured in the same run, on the same topology (the bridge rows cross a wire switch to the node, so their sink is that topology's).\n"
    );
    let _ = writeln!(
        s,
        "| backend | mode | flows | Mpps (median) | marginal µs/pkt | delivered |\n|---|---|---|---:|---:|---:|"
    );
    for t in r["throughput"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.2} | {:.0}% |",
            t["backend"].as_str().unwrap_or("routed host (XDP both ways)"),
            t["mode"].as_str().unwrap_or(""),
            t["flows"].as_str().unwrap_or(""),
            t["mpps"].as_f64().unwrap_or(0.0),
            t["marginal_us_per_packet"].as_f64().unwrap_or(0.0),
            t["delivered"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    let _ = writeln!(
        s,
        "\nWith many flows every packet opens a flow: lb's full NAT takes a source port per flow from `--snat-ports` (default 61000-65535: 4536 flows at once per backend and node address), so below 100% delivered the port range is exhausted, not the CPU. Above 100%: a trafgen chunk that failed to flush was sent again."
    );
}

fn connections_markdown(s: &mut String, r: &serde_json::Value) {
    let _ = writeln!(s, "\n## TCP connection rate (sequential connect, request, response, close)\n");
    let _ = writeln!(s, "| mode | connections/s (min / median / max) |\n|---|---:|");
    for c in r["connection_rate"].as_array().into_iter().flatten() {
        let v = &c["connections_per_second"];
        let _ = writeln!(
            s,
            "| {} | {:.0} / {:.0} / {:.0} |",
            c["mode"].as_str().unwrap_or(""),
            v["min"].as_f64().unwrap_or(0.0),
            v["median"].as_f64().unwrap_or(0.0),
            v["max"].as_f64().unwrap_or(0.0)
        );
    }
}

/// A horizontal bar chart of the median ns/packet per case.
pub fn svg(r: &serde_json::Value) -> String {
    let cases: Vec<(String, f64)> = r["datapath_ns_per_packet"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["case"].as_str().unwrap_or("").to_string(), c["ns"]["median"].as_f64().unwrap_or(0.0)))
        .collect();
    let max = cases.iter().map(|c| c.1).fold(1.0, f64::max);
    let (w, row) = (900.0, 28.0);
    let h = 40.0 + row * cases.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<text x=\"10\" y=\"22\" font-size=\"15\">Datapath cost, median ns/packet (BPF_PROG_TEST_RUN)</text>\n"
    );
    for (i, (name, v)) in cases.iter().enumerate() {
        let y = 34.0 + row * i as f64;
        let bw = (w - 420.0) * v / max;
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"300\" y=\"{:.0}\" width=\"{bw:.1}\" height=\"18\" fill=\"#4a7bd0\"/><text x=\"{:.0}\" y=\"{:.0}\">{v:.0}</text>",
            y + 14.0,
            xml(name),
            y,
            306.0 + bw,
            y + 14.0
        );
    }
    s.push_str("</svg>\n");
    s
}

pub fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
