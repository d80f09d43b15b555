//! The L7 suite in the report: a markdown section (figures, ratios, the arrangement) and two
//! hand-written SVG charts, throughput (median rps, min–max whiskers) and latency (p50 and
//! p99 medians), one row per case and proxy.
use std::fmt::Write as _;

use serde_json::Value;

use crate::report::xml;

const COLORS: [(&str, &str); 3] = [("lb", "#4a7bd0"), ("nginx", "#3a9a5b"), ("haproxy", "#d08a3a")];

fn color(proxy: &str) -> &'static str {
    COLORS.iter().find(|c| c.0 == proxy).map_or("#888888", |c| c.1)
}

fn f(v: &Value, k: &str, s: &str) -> f64 {
    v[k][s].as_f64().unwrap_or(0.0)
}

/// The proxy's CPU µs per request (median rps/core), split into user and kernel time by
/// the median user share; "—" in a report from before the split was measured.
fn per_request_split(c: &Value) -> String {
    let (per_core, user) = (f(c, "rps_per_core", "median"), c["proxy_user_share"]["median"].as_f64());
    match user {
        Some(u) if per_core > 0.0 => format!("{:.1} + {:.1}", 1e6 / per_core * u, 1e6 / per_core * (1.0 - u)),
        _ => "—".to_string(),
    }
}

pub fn markdown(s: &mut String, l7: &Value) {
    let _ = writeln!(s, "\n## L7 proxy vs nginx and haproxy\n");
    let _ = writeln!(s, "Arrangement: {}.\n", l7["arrangement"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "{} repeats of {} s per case and proxy. rps and latency: min / median / max over the repeats; proxy CPU: the proxy's CPU time over the run's wall time (1.00 = its core saturated); rps/core: requests per second of proxy CPU time (what a request costs the proxy, whichever side was the bottleneck); µs/req user + kernel: that cost per request, split by where the proxy's CPU time went (/proc utime and stime; the kernel's part is its syscalls and, on loopback, the TCP receive of what it sends); seg/req: TCP segments sent in the namespace per request, by everyone (on loopback the receiving side's work runs on the sender's core, so a proxy that sends more segments also loads the generator's core); load core: how busy the generator's core was (near 100%: the generator and backend, not the proxy's core, limited rps).\n",
        l7["repeats"], l7["seconds_per_run"]
    );
    let _ = writeln!(
        s,
        "| case | proxy | rps | p50 ms | p99 ms | proxy CPU | rps/core | µs/req user + kernel | seg/req | load core | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in l7["cases"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} / **{:.0}** / {:.0} | {:.2} / **{:.2}** / {:.2} | {:.2} / **{:.2}** / {:.2} | {:.2} | {:.0} | {} | {:.1} | {:.0}% | {} |",
            c["name"].as_str().unwrap_or(""),
            c["proxy"].as_str().unwrap_or(""),
            f(c, "rps", "min"),
            f(c, "rps", "median"),
            f(c, "rps", "max"),
            f(c, "p50_ms", "min"),
            f(c, "p50_ms", "median"),
            f(c, "p50_ms", "max"),
            f(c, "p99_ms", "min"),
            f(c, "p99_ms", "median"),
            f(c, "p99_ms", "max"),
            f(c, "proxy_cpu", "median"),
            f(c, "rps_per_core", "median"),
            per_request_split(c),
            f(c, "segments_per_request", "median"),
            f(c, "load_core_busy", "median") * 100.0,
            c["errors"],
        );
    }
    let _ = writeln!(
        s,
        "\nRatios of medians, lb / peer (rps and rps/core above 1: lb serves more, or spends less CPU per request; latency below 1: lb answers sooner):\n"
    );
    let _ = writeln!(s, "| case | vs | rps | rps/core | p50 | p99 |\n|---|---|---:|---:|---:|---:|");
    for r in l7["ratios"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r["case"].as_str().unwrap_or(""),
            r["vs"].as_str().unwrap_or(""),
            r["rps"].as_f64().unwrap_or(0.0),
            r["rps_per_core"].as_f64().unwrap_or(0.0),
            r["p50"].as_f64().unwrap_or(0.0),
            r["p99"].as_f64().unwrap_or(0.0)
        );
    }
    let sc = &l7["scaling"];
    if sc.is_object() {
        let _ = writeln!(
            s,
            "\nlb on two cores (HTTP/1.1 keep-alive, `{}`): {:.0} rps on one core, {:.0} on two: **{:.2}×** its one-core rps (p99 {:.2} / {:.2} ms).",
            sc["load"].as_str().unwrap_or(""),
            f(&sc["one_core"], "rps", "median"),
            f(&sc["two_cores"], "rps", "median"),
            sc["ratio"].as_f64().unwrap_or(0.0),
            f(&sc["one_core"], "p99_ms", "median"),
            f(&sc["two_cores"], "p99_ms", "median"),
        );
    }
    let loads: Vec<String> = l7["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["proxy"] == "lb")
        .map(|c| format!("{}: `{}`", c["name"].as_str().unwrap_or(""), c["load"].as_str().unwrap_or("")))
        .collect();
    let _ = writeln!(s, "\nLoad: {}.", loads.join("; "));
    let tls: Vec<String> = l7["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["tls"].as_str().is_some_and(|t| !t.is_empty()))
        .map(|c| format!("{} {}", c["proxy"].as_str().unwrap_or(""), c["tls"].as_str().unwrap_or("")))
        .collect();
    if !tls.is_empty() {
        let _ = writeln!(s, "Negotiated: {}.", tls.join("; "));
    }
    for k in l7["skipped"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "\nSkipped: {}", k.as_str().unwrap_or(""));
    }
    let _ = writeln!(s, "\nCharts: [throughput](l7-throughput.svg), [latency](l7-latency.svg).");
}

/// A short table for the terminal.
pub fn short_table(l7: &Value) -> String {
    let mut s = String::from("L7 (medians)       proxy         rps  rps/core  p50 ms  p99 ms\n");
    for c in l7["cases"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<18} {:<8} {:>8.0} {:>9.0} {:>7.2} {:>7.2}",
            c["case"].as_str().unwrap_or(""),
            c["proxy"].as_str().unwrap_or(""),
            f(c, "rps", "median"),
            f(c, "rps_per_core", "median"),
            f(c, "p50_ms", "median"),
            f(c, "p99_ms", "median")
        );
    }
    s
}

struct Row {
    label: String,
    proxy: String,
    /// (value, low whisker, high whisker) per bar, drawn in order (wider first).
    bars: Vec<(f64, f64, f64)>,
}

fn rows(l7: &Value, keys: &[&str]) -> Vec<Row> {
    l7["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Row {
            label: format!("{} — {}", c["case"].as_str().unwrap_or(""), c["proxy"].as_str().unwrap_or("")),
            proxy: c["proxy"].as_str().unwrap_or("").to_string(),
            bars: keys.iter().map(|k| (f(c, k, "median"), f(c, k, "min"), f(c, k, "max"))).collect(),
        })
        .collect()
}

/// Median rps, and rps per proxy core, per case and proxy, with min–max whiskers.
pub fn throughput_svg(l7: &Value) -> String {
    let a = chart("L7 throughput, requests/s (median; whiskers: min–max over repeats)", &rows(l7, &["rps"]), "", 0);
    let b =
        chart("Requests per second of proxy CPU time (median; whiskers: min–max)", &rows(l7, &["rps_per_core"]), "", 0);
    stack(&[a, b])
}

/// Charts one above the other (nested `<svg>` elements).
fn stack(charts: &[String]) -> String {
    let height = |c: &str| {
        c.split("height=\"").nth(1).and_then(|h| h.split('"').next()).and_then(|h| h.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let total: f64 = charts.iter().map(|c| height(c)).sum();
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"{total}\">\n");
    let mut y = 0.0;
    for c in charts {
        s.push_str(&c.replacen("<svg ", &format!("<svg y=\"{y}\" "), 1));
        y += height(c);
    }
    s.push_str("</svg>\n");
    s
}

/// p99 (light) behind p50 (dark), medians, per case and proxy.
pub fn latency_svg(l7: &Value) -> String {
    chart(
        "L7 latency, ms: p50 (dark) and p99 (light), medians over repeats",
        &rows(l7, &["p99_ms", "p50_ms"]),
        " ms",
        2,
    )
}

fn chart(title: &str, rows: &[Row], unit: &str, digits: usize) -> String {
    let max = rows.iter().flat_map(|r| r.bars.iter().map(|b| b.2.max(b.0))).fold(1e-9, f64::max);
    let (w, row, x0) = (960.0, 28.0, 330.0);
    let h = 60.0 + row * rows.len() as f64;
    let scale = (w - x0 - 120.0) / max;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n",
        xml(title)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 34.0 + row * i as f64;
        let _ = write!(s, "<text x=\"10\" y=\"{:.0}\">{}</text>", y + 14.0, xml(&r.label));
        let n = r.bars.len();
        for (j, (v, lo, hi)) in r.bars.iter().enumerate() {
            let opacity = if j + 1 == n { 1.0 } else { 0.4 };
            let _ = write!(
                s,
                "<rect x=\"{x0}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"18\" fill=\"{}\" fill-opacity=\"{opacity}\"/>",
                v * scale,
                color(&r.proxy)
            );
            if n == 1 && hi > lo {
                let (a, b, m) = (x0 + lo * scale, x0 + hi * scale, y + 9.0);
                let _ = write!(
                    s,
                    "<path d=\"M{a:.1} {m:.0}H{b:.1}M{a:.1} {:.0}V{:.0}M{b:.1} {:.0}V{:.0}\" stroke=\"black\" fill=\"none\"/>",
                    m - 5.0,
                    m + 5.0,
                    m - 5.0,
                    m + 5.0
                );
            }
        }
        let end = r.bars.iter().map(|b| b.0.max(b.2)).fold(0.0, f64::max) * scale + x0 + 6.0;
        let label: Vec<String> = r.bars.iter().rev().map(|b| format!("{:.digits$}", b.0)).collect();
        let _ = writeln!(s, "<text x=\"{end:.0}\" y=\"{:.0}\">{}{unit}</text>", y + 14.0, label.join(" / "));
    }
    let legend_y = h - 12.0;
    for (k, (name, c)) in COLORS.iter().enumerate() {
        let x = 10.0 + 110.0 * k as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{c}\"/><text x=\"{:.0}\" y=\"{legend_y:.0}\">{name}</text>",
            legend_y - 11.0,
            x + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}
