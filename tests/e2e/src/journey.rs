//! Documented journeys as tests: the marked blocks of a Markdown page, taken in order as a reader takes them.
//!
//! A marker `<!-- journey[ NAME]: KIND [PATH] -->` precedes a fenced block. KIND is `file` (write the block to
//! PATH), `edit` (merge the block's YAML mappings into the YAML file PATH; lists replace lists) or `run` (a shell
//! command). `/path/to/virtup` in a block stands for this checkout. A page may hold several journeys, told apart by
//! NAME.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{repo_root, run_ok, venv_bin};

/// One marked step.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: String,
    pub path: String,
    /// The block, unindented as a reader copies it, with the checkout's path in place of `/path/to/virtup`.
    pub body: String,
}

/// The steps of journey `name` (`""` for unnamed markers) of `page` (relative to the repository), in order.
/// Panics on a marker without a block or of an unknown kind, and when the journey has no step.
pub fn steps(page: &str, name: &str) -> Vec<Step> {
    let text = std::fs::read_to_string(repo_root().join(page)).unwrap();
    let checkout = repo_root().display().to_string();
    let mut steps = Vec::new();
    let mut lines = text.lines();
    let mut caption = "";
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        // A comment that looks meant as a marker but is not one would drop a step unnoticed.
        if trimmed.starts_with("<!--") && trimmed.to_ascii_lowercase().contains("journ") {
            assert!(
                trimmed.starts_with("<!-- journey") && trimmed.ends_with("-->"),
                "{page}: a malformed journey marker: {line}"
            );
        }
        let Some(marker) = trimmed
            .strip_prefix("<!-- journey")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            if !trimmed.is_empty() {
                caption = trimmed;
            }
            continue;
        };
        let (label, what) = marker
            .split_once(':')
            .unwrap_or_else(|| panic!("{page}: a journey marker without `:`: {line}"));
        let label = label.trim();
        assert!(
            label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{page}: a malformed journey name in {line}"
        );
        let words: Vec<&str> = what.split_whitespace().collect();
        let (kind, path) = match words[..] {
            ["run"] => ("run", ""),
            [k @ ("file" | "edit"), p] => (k, p),
            _ => panic!("{page}: a journey marker is `run`, `file PATH` or `edit PATH`: {line}"),
        };
        // The reader sees the rendered page, not the marker: the file's name must be shown there.
        assert!(
            path.is_empty() || caption.contains(&format!("`{path}`")),
            "{page}: the line before {line} does not name `{path}` for the reader: {caption}"
        );
        if label != name {
            continue;
        }
        let (kind, path) = (kind.to_owned(), path.to_owned());
        let fence = lines
            .by_ref()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("{page}: no block after {line}"));
        assert!(
            fence.trim_start().starts_with("```"),
            "{page}: no block after {line}"
        );
        let indent = fence.len() - fence.trim_start().len();
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            let (margin, rest) = l.split_at(indent.min(l.len()));
            assert!(
                margin.chars().all(|c| c == ' ') && (rest.is_empty() || l.len() > indent),
                "{page}: a line of the block after {line} is indented less than its fence: {l:?}"
            );
            body += rest;
            body += "\n";
        }
        assert!(closed, "{page}: the block after {line} is not closed");
        steps.push(Step {
            kind,
            path,
            body: body.replace("/path/to/virtup", &checkout),
        });
    }
    assert!(!steps.is_empty(), "{page} has no journey `{name}`");
    steps
}

/// Takes one `file` or `edit` step in `dir`. (`run` steps need the caller's environment: see [`shell`].)
pub fn write(dir: &Path, step: &Step) {
    let path = dir.join(&step.path);
    match step.kind.as_str() {
        "file" => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &step.body).unwrap();
        }
        "edit" => {
            run_ok(
                Command::new(venv_bin("python"))
                    .args(["-c", MERGE_YAML])
                    .arg(&path)
                    .arg(&step.body),
                Duration::from_secs(60),
                &format!("edit {}", step.path),
            );
        }
        other => panic!("`{other}` is not a file step"),
    }
}

/// A `run` step as `bash -euc`, in `dir`; the caller adds its environment.
pub fn shell(dir: &Path, step: &Step) -> Command {
    assert_eq!(step.kind, "run");
    let mut cmd = Command::new("bash");
    cmd.args(["-euc", &step.body]).current_dir(dir);
    cmd
}

/// `PATH` with the lab's venv first (ansible-playbook, molecule), as a reader's shell would have them.
pub fn venv_path() -> std::ffi::OsString {
    let venv = venv_bin("ansible-playbook").parent().unwrap().to_owned();
    let mut paths = vec![venv];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// A fresh directory outside the repository, for a journey that must not lean on the checkout's files.
pub fn outside_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert!(!dir.path().starts_with(repo_root()));
    dir
}

/// The files under `dir`, relative to it, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Merges the YAML in argv[2] into the file argv[1].
const MERGE_YAML: &str = r#"
import sys, yaml
path, block = sys.argv[1], yaml.safe_load(sys.argv[2])
doc = yaml.safe_load(open(path))
def merge(into, new):
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
merge(doc, block)
yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
"#;
