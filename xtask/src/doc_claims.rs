//! The doc-claims gate: every test docs/annotations*.md cites exists, and every row marked
//! as enforced is backed by traffic. A row of a table with `status` and `enforced by`
//! columns is enforced when its status starts with "supported" and its "enforced by" is
//! neither `—` nor "planned..." / "not enforced...". Such a row must cite a traffic test
//! (`l7::*`: real requests through the proxy; `e2e_*::*`, `datapath_*::*`,
//! `dataplane_apply::*`: packets through the datapath) that exists and whose body contains
//! the row's key, and every traffic test it cites must contain that key. Offline: files only.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// Every problem of every annotations doc, `file:line: problem`; an error when any.
pub fn check(root: &Path) -> Result<()> {
    let src = Sources::read(root)?;
    let mut problems = Vec::new();
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("annotations")))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for doc in docs {
        let text = fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
        let shown = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        for (line, p) in problems_in(&text, &src, markers(&shown)) {
            problems.push(format!("{shown}:{line}: {p}"));
        }
    }
    if !problems.is_empty() {
        bail!("{} doc claim(s) not backed by tests:\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(())
}

/// The Rust sources tests can live in, read once: (path relative to the root, text).
struct Sources(Vec<(String, String)>);

impl Sources {
    fn read(root: &Path) -> Result<Sources> {
        let mut out = Vec::new();
        let mut dirs = vec![root.join("lb-userspace"), root.join("tests")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs" || e == "yaml") {
                    let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
                    out.push((rel, fs::read_to_string(&path)?));
                }
            }
        }
        Ok(Sources(out))
    }

    /// The bodies of the test `name` cites, with the file each is in (several for a
    /// `prefix*` or a module); empty when it does not exist.
    fn bodies(&self, name: &str) -> Vec<(String, String)> {
        if let Some(case) = name.strip_prefix("golden/") {
            let (dir, glob) = case.rsplit_once('/').unwrap_or((case, ""));
            let dir = format!("lb-userspace/tests/golden/{dir}/");
            let prefix = glob.trim_end_matches('*');
            return self
                .0
                .iter()
                .filter(|(p, _)| {
                    p.strip_prefix(&dir).is_some_and(|f| {
                        let Some(stem) = f.strip_suffix(".yaml") else { return false };
                        if glob.ends_with('*') { stem.starts_with(prefix) } else { stem == glob }
                    })
                })
                .cloned()
                .collect();
        }
        let segs: Vec<&str> = name.split("::").collect();
        let (last, scope) = segs.split_last().expect("split yields one segment at least");
        let files: Vec<&(String, String)> =
            self.0.iter().filter(|(p, _)| p.ends_with(".rs") && in_scope(p, segs[0])).collect();
        if *last == "*" {
            // `binary::*`: every test of it, wherever its helpers set things.
            return files.into_iter().cloned().collect();
        }
        let bodies: Vec<(String, String)> =
            files.iter().flat_map(|(p, text)| fn_bodies(text, last).into_iter().map(|b| (p.clone(), b))).collect();
        if !bodies.is_empty() || scope.is_empty() {
            return bodies;
        }
        // A module cited whole (`l7::tls`, `model::l7`, `kube::events::tests`): its files.
        let path = segs.iter().filter(|s| **s != "tests").copied().collect::<Vec<_>>().join("/");
        files
            .iter()
            .filter(|(p, _)| {
                let stem = p.trim_end_matches(".rs").trim_end_matches("/mod").trim_end_matches("/main");
                stem.ends_with(&format!("/{path}")) || p.contains(&format!("/{path}/"))
            })
            .map(|f| (*f).clone())
            .collect()
    }
}

/// Whether a test named from `first` (its first segment) may live in file `p`.
fn in_scope(p: &str, first: &str) -> bool {
    if is_traffic(first) && first != "l7" {
        return p == format!("tests/tests/{first}.rs") || p.starts_with(&format!("tests/tests/{first}/"));
    }
    match first {
        "l7" => p.starts_with("lb-userspace/tests/l7/") || p.starts_with("lb-userspace/src/l7/"),
        "alb_routing" => p.starts_with("lb-userspace/tests/alb_routing/"),
        _ => p.starts_with("lb-userspace/") || p.starts_with("tests/"),
    }
}

/// Tests that drive real requests or packets, by their first segment.
fn is_traffic(first: &str) -> bool {
    first == "l7" || first == "dataplane_apply" || first.starts_with("e2e_") || first.starts_with("datapath_")
}

/// Whether a test found in `path` drives traffic (`l7::` also names the proxy's unit tests).
fn traffic_file(path: &str) -> bool {
    path.starts_with("lb-userspace/tests/l7/") || path.starts_with("tests/tests/")
}

/// The bodies of every `fn name` (or `fn prefix*`) in `text`: from the `fn` line to the
/// closing brace at its indentation (rustfmt's layout).
fn fn_bodies(text: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = ["pub(crate) ", "pub(super) ", "pub "].iter().find_map(|p| t.strip_prefix(p)).unwrap_or(t);
        let Some(rest) = t.strip_prefix("async fn ").or_else(|| t.strip_prefix("fn ")) else { continue };
        let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let hit = match name.strip_suffix('*') {
            Some(prefix) => ident.starts_with(prefix),
            None => ident == name || (name == "*" && !ident.is_empty()),
        };
        if !hit {
            continue;
        }
        let close = format!("{}}}", &line[..line.len() - line.trim_start().len()]);
        let end = lines[i..].iter().position(|l| *l == close).map_or(lines.len(), |n| i + n + 1);
        out.push(lines[i..end].join("\n"));
    }
    out
}

/// A markdown table row's cells; `|` inside backticks does not split.
fn cells(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut code) = (Vec::new(), String::new(), false);
    for c in line.trim().trim_matches('|').chars() {
        match c {
            '`' => {
                code = !code;
                cur.push(c);
            }
            '|' if !code => out.push(std::mem::take(&mut cur).trim().to_owned()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_owned());
    out
}

/// The backticked spans of a cell.
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The test names a cell cites: `a::b`, `a::{b, c}`, `golden/...`, a bare `e2e_x` binary.
fn cited(cell: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in spans(cell) {
        if s.contains(' ') && !s.contains("::{") {
            continue;
        }
        if let Some((head, list)) = s.split_once("::{") {
            out.extend(list.trim_end_matches('}').split(',').map(|n| format!("{head}::{}", n.trim())));
        } else if s.contains("::") || s.starts_with("golden/") {
            out.push(s.to_owned());
        } else if s.starts_with("e2e_") && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            out.push(format!("{s}::*"));
        }
    }
    out
}

/// The strings a test of the row must contain: each backticked key of the first cell, without
/// placeholders (`<service>`) and, for object fields, the field's own name.
fn keys(cell: &str) -> Vec<String> {
    spans(cell)
        .iter()
        .map(|s| {
            let mut k = String::new();
            let mut skip = false;
            for c in s.chars() {
                match c {
                    '<' => skip = true,
                    '>' => skip = false,
                    _ if !skip => k.push(c),
                    _ => {}
                }
            }
            match (k.starts_with("spec.") || k.starts_with("metadata.")).then(|| k.rsplit('.').next()) {
                Some(Some(last)) if !last.is_empty() => last.trim_start_matches("annotations: ").to_owned(),
                // `conditions.<service>`: the prefix names it.
                _ => k.trim_end_matches('.').to_owned(),
            }
        })
        // A full key (`nginx.ingress.kubernetes.io/canary-weight-total`): tests write its
        // suffix through a helper that adds the prefix.
        .flat_map(|k| match k.rsplit_once('/') {
            Some((_, suffix)) if k.contains('.') && !suffix.is_empty() => vec![k.clone(), suffix.to_owned()],
            _ => vec![k],
        })
        .filter(|k| !k.is_empty())
        .collect()
}

fn enforced(status: &str, by: &str) -> bool {
    let by = by.trim();
    status.starts_with("supported")
        && !by.is_empty()
        && by != "—"
        && !by.starts_with("planned")
        && !by.starts_with("not enforced")
}

/// What marks a test as one of `doc`'s objects, and what marks the other kind: the CLB and
/// ALB keys share suffixes (`sticky-session`, `cookie-timeout`), and a test of the one does
/// not back the other.
fn markers(doc: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const CLB: &[&str] = &["alibaba-cloud-loadbalancer-", "clb_service("];
    const ALB: &[&str] = &["alb.ingress.kubernetes.io/", "ingress("];
    if doc.ends_with("annotations-clb.md") {
        (CLB, ALB)
    } else if doc.ends_with("annotations-alb.md") {
        (ALB, CLB)
    } else {
        (&[], &[])
    }
}

/// Whether a test body sets `key` of the doc `markers` are for: it names the key, and the
/// body, or else its file when the file has no object of the other kind, is one of the doc's.
fn sets(file: &str, body: &str, key: &str, (ours, theirs): (&[&str], &[&str])) -> bool {
    let has = |t: &str, ms: &[&str]| ms.iter().any(|m| t.contains(m));
    body.contains(key) && (ours.is_empty() || has(body, ours) || (has(file, ours) && !has(file, theirs)))
}

fn problems_in(text: &str, src: &Sources, markers: (&[&str], &[&str])) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if !line.trim_start().starts_with('|') {
            header = None;
            continue;
        }
        let row = cells(line);
        let Some(head) = &header else {
            header = Some(row.iter().map(|c| c.to_lowercase()).collect());
            continue;
        };
        if row.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
            continue;
        }
        let col = |name: &str| head.iter().position(|h| h == name).and_then(|i| row.get(i)).map(String::as_str);
        let mut names: Vec<String> = Vec::new();
        for (i, cell) in row.iter().enumerate().skip(1) {
            if head.get(i).is_some_and(|h| h == "enforced by" || h == "tests" || h == "rules between them (errors)") {
                names.extend(cited(cell));
            }
        }
        let keys = keys(&row[0]);
        // Annotation tables (first column `key` / `suffix`) back their rows with traffic.
        let annotations = matches!(head.first().map(String::as_str), Some("key" | "suffix"));
        let must_back =
            annotations && matches!((col("status"), col("enforced by")), (Some(s), Some(b)) if enforced(s, b));
        let mut backed = false;
        for name in &names {
            let bodies = src.bodies(name);
            if bodies.is_empty() {
                out.push((line_no, format!("`{name}` cited, no such test")));
                continue;
            }
            let traffic = is_traffic(name.split("::").next().unwrap_or(""));
            backed |= traffic
                && bodies.iter().any(|(p, b)| {
                    let file = src.0.iter().find(|(f, _)| f == p).map_or("", |(_, t)| t.as_str());
                    traffic_file(p) && keys.iter().any(|k| sets(file, b, k, markers))
                });
        }
        if must_back && !backed {
            out.push((
                line_no,
                format!("{keys:?} marked enforced; no cited traffic test (l7::, e2e_*::, datapath_*::) sets it"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Sources {
        let l7 = "async fn sets_it() {\n    ingress(&[(\"cookie-timeout\", \"30\")]);\n}\n\nasync fn other() {\n    x();\n}\n";
        Sources(vec![
            ("lb-userspace/tests/l7/balancing.rs".into(), l7.into()),
            ("lb-userspace/src/annotations/clb/http/tests.rs".into(), "fn unit() {\n}\n".into()),
        ])
    }

    #[test]
    fn rows_need_a_traffic_test_that_sets_their_key() {
        let head = "| key | values | status | enforced by | tests |\n|---|---|---|---|---|\n";
        let ok = format!("{head}| `cookie-timeout` | n | supported | L7 | `http::unit`, `l7::balancing::sets_it` |\n");
        assert_eq!(problems_in(&ok, &src(), (&[], &[])), vec![]);
        let unset = format!("{head}| `cookie-timeout` | n | supported | L7 | `l7::balancing::other` |\n");
        assert_eq!(problems_in(&unset, &src(), (&[], &[])).len(), 1, "{:?}", problems_in(&unset, &src(), (&[], &[])));
        let none = format!("{head}| `cookie-timeout` | n | supported | L7 | `http::unit` |\n");
        assert_eq!(problems_in(&none, &src(), (&[], &[])).len(), 1);
        let missing = format!(
            "{head}| `cookie-timeout` | n | supported | L7 | `l7::balancing::gone`, `l7::balancing::sets_it` |\n"
        );
        assert_eq!(
            problems_in(&missing, &src(), (&[], &[])),
            vec![(3, "`l7::balancing::gone` cited, no such test".to_owned())]
        );
        let honest = format!("{head}| `cookie-timeout` | n | supported | not enforced: parsed only | `http::unit` |\n");
        assert_eq!(problems_in(&honest, &src(), (&[], &[])), vec![]);
        let alb_only = format!("{head}| `cookie-timeout` | n | supported | L7 | `l7::balancing::sets_it` |\n");
        assert_eq!(problems_in(&alb_only, &src(), markers("docs/annotations-clb.md")).len(), 1, "a CLB row");
        assert_eq!(problems_in(&alb_only, &src(), markers("docs/annotations-alb.md")), vec![], "an ALB row");
    }

    #[test]
    fn the_repository_docs_are_backed() {
        check(&crate::root()).unwrap();
    }

    #[test]
    fn names_and_keys_are_read_from_cells() {
        assert_eq!(cited("`e2e_x::{a, b}`, `golden/clb/h/*`"), ["e2e_x::a", "e2e_x::b", "golden/clb/h/*"]);
        assert_eq!(cited("see `lb run`, `e2e_l7`"), ["e2e_l7::*"]);
        assert_eq!(keys("`conditions.<service>`"), ["conditions"]);
        assert_eq!(keys("`spec.listeners[].http2Enabled`"), ["http2Enabled"]);
        assert_eq!(keys("`~` / `~*`"), ["~", "~*"]);
        assert_eq!(keys("`nginx.ingress.kubernetes.io/canary`"), ["nginx.ingress.kubernetes.io/canary", "canary"]);
        assert_eq!(cells("| `a|b` | c |"), ["`a|b`", "c"]);
    }
}
