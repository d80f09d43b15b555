//! The docs link gate: README.md and every docs/**/*.md link only inside the repository, and
//! every relative link (and its `#anchor`) resolves. No network: files and headings only.
use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// README.md and docs/**/*.md under `root`.
pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every problem in every file, `file:line: problem`; an error listing them when any.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for file in files(root)? {
        let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        for (line, problem) in problems_in(&file, &text) {
            problems.push(format!("{shown}:{line}: {problem}"));
        }
    }
    if !problems.is_empty() {
        bail!("{} link problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(())
}

/// The text with fenced code blocks and inline code spans blanked (URLs in code are examples,
/// not links), line by line.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return String::new();
            }
            if fenced {
                return String::new();
            }
            let mut out = String::new();
            for (i, part) in line.split('`').enumerate() {
                if i % 2 == 0 {
                    out.push_str(part);
                }
                out.push(' ');
            }
            out
        })
        .collect()
}

/// (line, problem) for one Markdown file at `path`.
pub fn problems_in(path: &Path, text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text).iter().enumerate() {
        let n = n + 1;
        if line.contains("http://") || line.contains("https://") {
            out.push((n, "link outside the repository (link to a page in the repository, or write it as code)".into()));
        }
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with("//") {
                continue; // counted above, or not a file
            }
            if let Err(e) = resolve(path, text, &target) {
                out.push((n, format!("broken link `{target}`: {e}")));
            }
        }
    }
    out
}

/// The targets of `[text](target)` and `![alt](target)` on one line (a title after a space
/// is dropped).
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        rest = &after[end..];
    }
    out
}

/// `target` from the file `from` (whose text is `text`): the file exists, the anchor is one of
/// its headings.
fn resolve(from: &Path, text: &str, target: &str) -> Result<()> {
    let (file, anchor) = match target.split_once('#') {
        Some((f, a)) => (f, Some(a)),
        None => (target, None),
    };
    if file.is_empty() {
        let anchor = anchor.unwrap_or("");
        if !anchors(text).contains(anchor) {
            bail!("no heading `#{anchor}` in this file");
        }
        return Ok(());
    }
    let dest = from.parent().unwrap().join(file);
    if !dest.exists() {
        bail!("{} does not exist", dest.display());
    }
    if let Some(anchor) = anchor {
        if dest.is_dir() || dest.extension().is_none_or(|e| e != "md") {
            bail!("an anchor on something that is not a Markdown file");
        }
        let text = fs::read_to_string(&dest)?;
        if !anchors(&text).contains(anchor) {
            bail!("no heading `#{anchor}` in {}", dest.display());
        }
    }
    Ok(())
}

/// The anchors of a file's headings, as GitHub makes them: lower case, punctuation other than
/// `-` and `_` dropped, spaces to `-`; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let base: String = title
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        let mut slug = base.clone();
        let mut k = 1;
        while seen.contains(&slug) {
            slug = format!("{base}-{k}");
            k += 1;
        }
        seen.insert(slug);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_links_and_broken_relative_links_are_found() {
        let dir = std::env::temp_dir().join(format!("xtask-links-{}", std::process::id()));
        fs::create_dir_all(dir.join("docs")).unwrap();
        fs::write(dir.join("docs/a.md"), "# Title\n## VIP ownership (pools)\n").unwrap();
        let readme = dir.join("README.md");
        let text = "see [a](docs/a.md), [b](docs/a.md#vip-ownership-pools), [t](#top)\n\
                    [out](https://example.com/x)\n\
                    bare http://example.com here\n\
                    code `curl http://NODE:9901/metrics` is fine\n\
                    ```\nhttps://in.a.block\n```\n\
                    [gone](docs/missing.md) [bad](docs/a.md#nope)\n\
                    # Top\n";
        let found = problems_in(&readme, text);
        let lines: Vec<usize> = found.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![2, 3, 8, 8], "{found:?}");
        assert!(found[2].1.contains("docs/missing.md"), "{found:?}");
        assert!(found[3].1.contains("#nope"), "{found:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn anchors_follow_github() {
        let a = anchors("# `lb.dev/proxy-protocol-version`\n## Restarts and upgrades\n## Restarts and upgrades\n");
        for want in ["lbdevproxy-protocol-version", "restarts-and-upgrades", "restarts-and-upgrades-1"] {
            assert!(a.contains(want), "{want} in {a:?}");
        }
    }

    /// The repository's own docs pass (what the gate runs).
    #[test]
    fn the_repository_docs_link_only_inside() {
        check(&crate::root()).unwrap();
    }
}
