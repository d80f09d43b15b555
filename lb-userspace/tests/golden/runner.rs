//! Running a family: every case file of a directory, its output compared with the expected
//! JSON (or written, with `LB_BLESS=1`), and the differences reported by JSON path.
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The data directory of the golden tests.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The YAML documents of a case file, as JSON values.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("not YAML: {e}")))
        .collect()
}

/// At most this many differences are listed per case.
const MAX_DIFFS: usize = 40;

/// Runs `run` on every `*.yaml` case of `family` (a directory under `tests/golden`) and
/// compares its output with the sibling `*.json`. Fails naming every case whose output
/// differs, whose expected file is missing, or whose run panicked; an expected file
/// without its case fails too.
pub fn run_family(family: &str, run: impl Fn(&Path, &str) -> Value) {
    let dir = root().join(family);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    let ext = |p: &Path, want: &str| p.extension().is_some_and(|x| x == want);
    let cases: Vec<&PathBuf> = files.iter().filter(|p| ext(p, "yaml")).collect();
    assert!(!cases.is_empty(), "{}: no *.yaml cases", dir.display());
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for p in files.iter().filter(|p| ext(p, "json")) {
        if !p.with_extension("yaml").exists() {
            failures.push(format!("{}: expected output without a case (no .yaml)", show(p)));
        }
    }
    for case in &cases {
        let text = fs::read_to_string(case).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let got = match catch_unwind(AssertUnwindSafe(|| run(case, &text))) {
            Ok(v) => v,
            Err(e) => {
                let msg =
                    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()));
                failures.push(format!("{}: panicked: {}", show(case), msg.unwrap_or_default()));
                continue;
            }
        };
        let expected_path = case.with_extension("json");
        let expected: Option<Value> = fs::read_to_string(&expected_path)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: not JSON: {e}", expected_path.display())));
        if expected.as_ref() == Some(&got) {
            continue;
        }
        if bless {
            let text = serde_json::to_string_pretty(&got).expect("JSON") + "\n";
            fs::write(&expected_path, text).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            eprintln!("blessed {}", show(&expected_path));
            continue;
        }
        let Some(expected) = expected else {
            failures.push(format!("{}: missing (LB_BLESS=1 writes it)", show(&expected_path)));
            continue;
        };
        let mut diffs = Vec::new();
        diff("", &expected, &got, &mut diffs);
        let n = diffs.len();
        diffs.truncate(MAX_DIFFS);
        let more = if n > MAX_DIFFS { format!("\n    ... {} more", n - MAX_DIFFS) } else { String::new() };
        failures.push(format!(
            "{} (case {}): {n} difference(s), expected vs got:\n    {}{more}",
            show(&expected_path),
            show(case),
            diffs.join("\n    ")
        ));
    }
    assert!(
        failures.is_empty(),
        "{family}: {} of {} case(s) failed (LB_BLESS=1 rewrites the expected files; review the diff):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A path relative to the crate, for messages.
fn show(p: &Path) -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.strip_prefix(crate_dir).unwrap_or(p).display().to_string()
}

/// The values that differ between `want` and `got`, by JSON path (`/config/l4/...`).
fn diff(at: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let mut keys: Vec<&String> = w.keys().chain(g.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let at = format!("{at}/{k}");
                match (w.get(k), g.get(k)) {
                    (Some(w), Some(g)) => diff(&at, w, g, out),
                    (Some(w), None) => out.push(format!("{at}: expected {w}, missing")),
                    (None, Some(g)) => out.push(format!("{at}: not expected, got {g}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for i in 0..w.len().max(g.len()) {
                let at = format!("{at}/{i}");
                match (w.get(i), g.get(i)) {
                    (Some(w), Some(g)) => diff(&at, w, g, out),
                    (Some(w), None) => out.push(format!("{at}: expected {w}, missing")),
                    (None, Some(g)) => out.push(format!("{at}: not expected, got {g}")),
                    (None, None) => {}
                }
            }
        }
        _ if want != got => out.push(format!("{}: expected {want}, got {got}", if at.is_empty() { "/" } else { at })),
        _ => {}
    }
}

#[test]
fn diff_names_every_difference() {
    let want = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
    let got = serde_json::json!({"a": {"b": 2, "c": [1]}, "e": true});
    let mut out = Vec::new();
    diff("", &want, &got, &mut out);
    assert_eq!(
        out,
        [
            "/a/b: expected 1, got 2",
            "/a/c/1: expected 2, missing",
            "/d: expected \"x\", missing",
            "/e: not expected, got true"
        ]
    );
}
