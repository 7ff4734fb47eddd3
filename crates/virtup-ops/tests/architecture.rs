//! Checks the boundaries ARCHITECTURE.md states, so that the document stays true: who may import what, and that every test it names exists.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root is two levels above the crate")
        .to_owned()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The crate names a manifest's `[dependencies]` section lists (not dev-dependencies).
fn dependencies(manifest: &Path) -> Vec<String> {
    let mut deps = Vec::new();
    let mut inside = false;
    for line in read(manifest).lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap().trim();
            deps.push(name.to_owned());
        }
    }
    deps
}

fn crate_manifests() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, p.join("Cargo.toml"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn only_virtup_libvirt_imports_virt() {
    for (name, manifest) in crate_manifests() {
        let has_virt = dependencies(&manifest).iter().any(|d| d == "virt");
        assert_eq!(
            has_virt,
            name == "virtup-libvirt",
            "{name}: libvirt is reached only through virtup-libvirt ({})",
            manifest.display()
        );
    }
}

/// The operations know nothing of Ansible's JSON, the command line or the CLI's globals.
#[test]
fn virtup_ops_knows_no_ansible_json_nor_clap() {
    let ops = root().join("crates/virtup-ops");
    let deps = dependencies(&ops.join("Cargo.toml"));
    for banned in ["serde_json", "virtup-ansible", "clap", "virtup-cli"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "virtup-ops depends on {banned}"
        );
    }
    for file in rust_files(&ops.join("src")) {
        let text = read(&file);
        for banned in [
            "serde_json",
            "ModuleArgs",
            "check_mode",
            "crate::cli",
            "virtup_ansible",
        ] {
            assert!(
                !text.contains(banned),
                "{} mentions `{banned}`",
                file.display()
            );
        }
    }
}

/// Check mode is read in one place, `virtup_cli::module::mode`; every other reader goes through it.
#[test]
fn check_mode_is_read_in_one_place() {
    let root = root();
    let mut readers = Vec::new();
    for file in rust_files(&root.join("crates")) {
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        if rel.starts_with("crates/virtup-ansible/") || rel.contains("/tests/") {
            continue; // the protocol parses it; tests set it
        }
        if read(&file).contains(".check_mode()") {
            readers.push(rel);
        }
    }
    assert_eq!(
        readers,
        ["crates/virtup-cli/src/module.rs"],
        "check mode read outside module::mode"
    );
}

/// Below the adapters only an operation's `converge` looks at the mode, and the host's KVM report,
/// which boots a probe guest only in a real run. `converge` sends a check run down its check path
/// (observe, plan, describe) and a real run down its apply path; observe, plan and the report are the
/// same functions on both. No other function takes the mode, compares it, or imports its variants,
/// and `converge` binds nothing from it that it could pass down.
#[test]
fn only_converge_branches_on_the_mode() {
    let root = root();
    let allowed = ["converge", "virt_report"];
    let mut branches = 0;
    for file in rust_files(&root.join("crates/virtup-ops/src")) {
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        if rel.ends_with("/tests.rs") || rel.contains("/tests/") {
            continue;
        }
        let mut current_fn = String::new();
        for line in read(&file).lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // Any declaration: `fn`, `pub fn`, `pub(crate) const fn`, `async fn`, …
            let words: Vec<&str> = code.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "fn") {
                if let Some(name) = words.get(i + 1) {
                    current_fn = name.split(['(', '<']).next().unwrap().to_owned();
                }
            }
            assert!(
                !code.contains("Mode::{") && !code.contains("Mode::*"),
                "{rel}: imports the mode's variants, which hides branches on it: {code}"
            );
            let looks = code.contains("Mode::Check")
                || code.contains("Mode::Apply")
                || code.contains("mode ==")
                || code.contains("== mode")
                || code.contains(": Mode");
            if !looks {
                continue;
            }
            branches += 1;
            assert!(
                allowed.contains(&current_fn.as_str()),
                "{rel}: `{current_fn}` looks at the mode: {code}"
            );
            assert!(
                !code.starts_with("let "),
                "{rel}: `{current_fn}` binds something from the mode, which could be passed down: {code}"
            );
        }
    }
    assert!(
        branches >= 6,
        "found only {branches} looks at the mode: is the scan blind?"
    );
}

/// virtup-core is the bottom layer: no libvirt, no tools, no protocol.
#[test]
fn virtup_core_depends_on_no_other_virtup_crate() {
    let deps = dependencies(&root().join("crates/virtup-core/Cargo.toml"));
    for banned in [
        "virt",
        "virtup-libvirt",
        "virtup-guest",
        "virtup-ansible",
        "virtup-ops",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "virtup-core depends on {banned}"
        );
    }
}

/// Scripted tool runs (`virtup_guest::script`) are for tests: only a dev-dependency turns the feature
/// on (inline, as a `[dev-dependencies.x]` table, or a multi-line list there), never a dependency, a
/// workspace dependency or another feature, in any manifest of the workspace, so
/// `cargo build --bins` (scripts/build) makes binaries without the hook. (Test builds unify
/// features; there nothing but a test's `Script::install` activates it.)
#[test]
fn only_dev_dependencies_turn_on_scripted_tool_runs() {
    let mut manifests: Vec<PathBuf> = crate_manifests().into_iter().map(|(_, m)| m).collect();
    manifests
        .extend(["Cargo.toml", "fuzz/Cargo.toml", "tests/e2e/Cargo.toml"].map(|m| root().join(m)));
    let guest = root().join("crates/virtup-guest/Cargo.toml");
    let mut dev_uses = 0;
    for manifest in manifests {
        let mut section = String::new();
        for line in read(&manifest).lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            // `"script"`, `'script'`, `"virtup-guest/script"`, `"guest?/script"`, …
            let names_feature = ["\"", "'", "/"].iter().any(|before| {
                line.contains(&format!("{before}script\""))
                    || line.contains(&format!("{before}script'"))
            });
            let defines_it =
                manifest == guest && section == "[features]" && line.starts_with("script =");
            if !names_feature || defines_it {
                continue;
            }
            assert!(
                section.starts_with("[dev-dependencies"),
                "{}: `{line}` in {section} turns on `script`",
                manifest.display()
            );
            dev_uses += 1;
        }
    }
    assert!(
        dev_uses >= 1,
        "no crate uses scripted runs: is the scan blind?"
    );
}

#[test]
fn every_rust_file_opens_with_what_it_is_for() {
    let root = root();
    let mut missing = Vec::new();
    for dir in ["crates", "tests/e2e", "fuzz/fuzz_targets", "fuzz/src"] {
        for file in rust_files(&root.join(dir)) {
            if !read(&file).starts_with("//!") {
                missing.push(file.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "no `//!` first line: {missing:?}");
}

/// Every test ARCHITECTURE.md names beside an invariant (`file::test_name`) exists.
#[test]
fn the_tests_architecture_md_names_exist() {
    let root = root();
    let doc = read(&root.join("ARCHITECTURE.md"));
    let sources: Vec<String> = ["crates", "tests/e2e"]
        .iter()
        .flat_map(|d| rust_files(&root.join(d)))
        .map(|f| read(&f))
        .collect();
    let mut named = 0;
    for (i, quoted) in doc.split('`').enumerate() {
        // Odd pieces are inside backticks; a test is `a::b::snake_case_name` with two underscores or more.
        let Some(name) = (i % 2 == 1).then(|| quoted.rsplit("::").next()).flatten() else {
            continue;
        };
        let is_test_name = quoted.contains("::")
            && name.matches('_').count() >= 2
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !is_test_name {
            continue;
        }
        named += 1;
        let defined = format!("fn {name}(");
        assert!(
            sources.iter().any(|s| s.contains(&defined)),
            "ARCHITECTURE.md names `{quoted}`, but no `fn {name}` exists"
        );
    }
    assert!(named >= 10, "ARCHITECTURE.md names only {named} tests");
}
