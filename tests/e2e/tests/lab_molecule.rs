//! Layer 5: Molecule on the lab. docs/molecule.md's journey (a role of the user's own, in a directory outside the
//! repository, tested on two virtup platforms with virtup's `platform` files copied as the page says) builds the
//! template and then runs again on it; scenario `default` (the project's roles end to end) then runs on it too,
//! without building it again. Each `molecule test` must pass and leave nothing of its own behind but the shared
//! template.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use virtup_e2e::{lab_home, pool_volumes, repo_root, venv_bin, virsh, Sandbox};

/// The template the journey and scenario `default` declare (docs/molecule.md, molecule/default/molecule.yml).
const TEMPLATE: &str = "mol-debian-12";
/// The template's libvirt domain, which also prefixes its volumes.
const TEMPLATE_DOMAIN: &str = "VIRTUP-mol-debian-12";
/// The platforms of docs/molecule.md's journey and of scenario `default` (its molecule.yml).
const JOURNEY: &[&str] = &["myrole-1", "myrole-2"];
const DEFAULT: &[&str] = &["mol-d1", "mol-d2"];

/// Removes every instance the scenarios make and then the template, however the test ends.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for name in JOURNEY.iter().chain(DEFAULT) {
            let _ = self.0.module(
                "virtup_instance",
                &json!({"name": name, "state": "absent", "wait_timeout": 120}),
            );
        }
        let _ = self.0.module(
            "virtup_template",
            &json!({"name": TEMPLATE, "state": "absent", "wait_timeout": 120}),
        );
    }
}

/// `molecule test -s SCENARIO` in the sandbox (see [`virtup_e2e::molecule_test`]).
fn molecule_test(sb: &Sandbox, scenario: &str) -> virtup_e2e::Run {
    virtup_e2e::molecule_test(sb, scenario, &ephemeral(sb, scenario))
}

fn ephemeral(sb: &Sandbox, scenario: &str) -> PathBuf {
    sb.path().join(format!("molecule-{scenario}"))
}

/// Every step passed; the project's scenario `default` also has a side effect (a changed greeting restarts the service,
/// molecule/default/side_effect.yml).
fn assert_passed(out: &virtup_e2e::Run, scenario: &str, side_effect: bool) {
    let mut steps = vec!["create", "converge", "idempotence", "verify", "destroy"];
    if side_effect {
        steps.push("side_effect");
    }
    virtup_e2e::assert_molecule_passed(out, scenario, &steps);
}

/// What the template task reported in a run's create step: `Some(true)` when it built something.
fn template_changed(out: &virtup_e2e::Run) -> Option<bool> {
    virtup_e2e::template_task_changed(out, TEMPLATE)
        .first()
        .copied()
}

/// The template's volumes with (inode, size, mtime): a rebuild makes a new file or a new generation.
fn template_volumes() -> BTreeMap<String, (u64, u64, i64)> {
    pool_volumes()
        .into_iter()
        .filter(|v| v.starts_with(&format!("{TEMPLATE_DOMAIN}-")))
        .map(|v| {
            let path = virsh(&["vol-path", "--pool", "default", &v]);
            let meta = std::fs::metadata(path.trim())
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.trim()));
            (v, (meta.ino(), meta.size(), meta.mtime()))
        })
        .collect()
}

/// After a scenario's destroy: none of its domains, volumes, metadata or pinned keys remain; the template does.
fn assert_only_template_left(sb: &Sandbox, ephemeral: &Path, scenario: &str, instances: &[&str]) {
    let domains: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let volumes = pool_volumes();
    let data = sb.data();
    let known_hosts = std::fs::read_to_string(data.join("known_hosts")).unwrap_or_default();
    let inventory = std::fs::read_to_string(data.join("inventory.yaml")).unwrap_or_default();
    for name in instances {
        assert!(
            !domains.iter().any(|d| d == name),
            "{scenario}: domain {name} is left: {domains:?}"
        );
        let own: Vec<&String> = volumes
            .iter()
            .filter(|v| v.starts_with(&format!("{name}.")) || v.starts_with(&format!("{name}-")))
            .collect();
        assert!(
            own.is_empty(),
            "{scenario}: volumes of {name} are left: {own:?}"
        );
        for left in [
            data.join("instance").join(format!("{name}.json")),
            data.join("hostkeys").join(name),
            data.join("secrets").join(name),
        ] {
            assert!(!left.exists(), "{scenario}: {} is left", left.display());
        }
        let pinned: Vec<&str> = known_hosts
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|hosts| hosts.split(',').any(|h| h == *name))
            })
            .collect();
        assert!(
            pinned.is_empty(),
            "{scenario}: {name} is still pinned: {pinned:?}"
        );
        assert!(
            !inventory.contains(name),
            "{scenario}: {name} is still in inventory.yaml:\n{inventory}"
        );
    }
    // Molecule's instance config is pruned or empty.
    let config = ephemeral.join("instance_config.yml");
    if let Ok(text) = std::fs::read_to_string(&config) {
        assert_eq!(text.trim(), "[]", "{}: {text}", config.display());
    }
    assert!(
        domains.iter().any(|d| d == TEMPLATE_DOMAIN),
        "{scenario}: the template domain is gone: {domains:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with(&format!("{TEMPLATE_DOMAIN}-g"))),
        "{scenario}: the template disk is gone: {volumes:?}"
    );
}

fn assert_no_leftover_from_earlier_runs() {
    let domains = virsh(&["list", "--all", "--name"]);
    let stale: Vec<&str> = domains
        .lines()
        .map(str::trim)
        .filter(|d| *d == TEMPLATE_DOMAIN || JOURNEY.contains(d) || DEFAULT.contains(d))
        .collect();
    assert!(
        stale.is_empty(),
        "domains {stale:?} exist before the test started: another run or a developer's molecule uses them"
    );
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One marked step of docs/molecule.md: `<!-- journey: KIND [PATH] -->` before a fenced block.
#[derive(Debug)]
struct Step {
    /// `file` (write the block to PATH), `edit` (merge the block's YAML into PATH), `run` (a shell command).
    kind: String,
    path: String,
    body: String,
}

/// The journey's steps, in the page's order, with the blocks unindented as a reader copies them.
fn journey_steps() -> Vec<Step> {
    let page = repo_root().join("docs/molecule.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let mut steps = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .trim()
            .strip_prefix("<!-- journey:")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            continue;
        };
        let mut words = marker.split_whitespace();
        let kind = words
            .next()
            .expect("a journey marker names its kind")
            .to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        let fence = lines
            .by_ref()
            .find(|l| !l.trim().is_empty())
            .expect("a journey marker is followed by a block");
        assert!(
            fence.trim_start().starts_with("```"),
            "no block after {line}"
        );
        let indent = fence.len() - fence.trim_start().len();
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body += l.get(indent..).unwrap_or_else(|| l.trim_start());
            body += "\n";
        }
        steps.push(Step { kind, path, body });
    }
    assert!(
        steps
            .iter()
            .any(|s| s.kind == "run" && s.body.contains("molecule test")),
        "docs/molecule.md has no marked `molecule test`: {steps:?}"
    );
    steps
}

/// Takes the journey in `dir` up to its `molecule test`, which it returns (unrun): files written, commands run
/// and edits made as a reader makes them, with `/path/to/virtup` being this checkout.
fn prepare_journey(dir: &Path, steps: &[Step]) -> String {
    let checkout = repo_root().display().to_string();
    let mut molecule = None;
    for step in steps {
        let body = step.body.replace("/path/to/virtup", &checkout);
        match step.kind.as_str() {
            "file" => {
                let path = dir.join(&step.path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, body).unwrap();
            }
            "run" if body.contains("molecule test") => molecule = Some(body),
            "run" => {
                virtup_e2e::run_ok(
                    Command::new("bash").args(["-euc", &body]).current_dir(dir),
                    Duration::from_secs(60),
                    &body,
                );
            }
            // Merged as a reader edits: the block's mappings replace or add keys, its lists replace lists.
            "edit" => {
                virtup_e2e::run_ok(
                    Command::new(venv_bin("python"))
                        .args(["-c", MERGE_YAML])
                        .arg(dir.join(&step.path))
                        .arg(&body),
                    Duration::from_secs(60),
                    &format!("edit {}", step.path),
                );
            }
            other => panic!("unknown journey step `{other}`"),
        }
    }
    molecule.expect("a marked `molecule test`")
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

/// The journey's `molecule test` in `dir` (the user's directory), in the sandbox's data dir.
fn journey_molecule(sb: &Sandbox, dir: &Path, command: &str) -> virtup_e2e::Run {
    let venv = venv_bin("molecule").parent().unwrap().to_owned();
    let mut paths = vec![venv];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    virtup_e2e::run(
        Command::new("bash")
            .args(["-euc", command])
            .current_dir(dir)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env("VIRTUP_DATA_HOME", sb.data())
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("MOLECULE_EPHEMERAL_DIRECTORY", ephemeral(sb, "journey"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("PY_COLORS", "0")
            .env("NO_COLOR", "1"),
        Duration::from_secs(3600),
    )
}

#[test]
fn the_documented_journey_and_the_default_scenario_pass_and_reuse_the_template() {
    lab_home();
    assert_no_leftover_from_earlier_runs();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(&sb);

    // docs/molecule.md's journey, in a directory outside the repository holding only what the page says.
    let steps = journey_steps();
    let platforms = steps
        .iter()
        .find(|s| s.kind == "edit" && s.body.starts_with("platforms:"))
        .expect("the page edits `platforms`");
    for name in JOURNEY {
        assert!(
            platforms.body.contains(&format!("name: {name}\n")),
            "the page's platforms are not {JOURNEY:?}: {}",
            platforms.body
        );
    }
    let home = tempfile::Builder::new()
        .prefix("virtup-journey-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert!(!home.path().starts_with(repo_root()));
    let command = prepare_journey(home.path(), &steps);
    // Nothing but the page's files and the three it copies.
    let mut expected: Vec<String> = steps
        .iter()
        .filter(|s| s.kind == "file")
        .map(|s| s.path.clone())
        .chain(
            ["create", "destroy", "molecule"].map(|f| format!("myrole/molecule/default/{f}.yml")),
        )
        .collect();
    expected.sort();
    assert_eq!(walk(home.path()), expected);
    let first = journey_molecule(&sb, home.path(), &command);
    assert_passed(&first, "default", false);
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "journey"));
    assert_only_template_left(&sb, &ephemeral(&sb, "journey"), "journey", JOURNEY);
    let built = template_changed(&first);
    assert_eq!(built, Some(true), "the first run must build the template");
    // The role's handler ran in the first converge and the idempotence step changed nothing.
    assert!(
        first
            .stdout
            .contains("RUNNING HANDLER [myrole : Restart myrole]"),
        "{}",
        virtup_e2e::tail(&first.stdout, 60)
    );
    let volumes_after_first = template_volumes();

    // The same `molecule test` again: the template is there, unchanged, and only cloned.
    let second = journey_molecule(&sb, home.path(), &command);
    assert_passed(&second, "default", false);
    assert_only_template_left(&sb, &ephemeral(&sb, "journey"), "journey", JOURNEY);
    assert_eq!(
        template_changed(&second),
        Some(false),
        "the second journey run must reuse the template"
    );
    assert_eq!(volumes_after_first, template_volumes());

    // The project's own scenario, the third `molecule test` in this data dir: the template is reused too.
    // (Scenario `platform`, whose files the journey copies, is run by lab_hypervisors' twin `hypervisors`.)
    let default = molecule_test(&sb, "default");
    assert_passed(&default, "default", true);
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "default"));
    assert_only_template_left(&sb, &ephemeral(&sb, "default"), "default", DEFAULT);
    let rebuilt = template_changed(&default);
    println!(
        "journey: {:.1}s (template built: {}), again: {:.1}s; default: {:.1}s (template rebuilt: {})",
        secs(first.elapsed),
        built == Some(true),
        secs(second.elapsed),
        secs(default.elapsed),
        rebuilt != Some(false)
    );
    assert_eq!(
        rebuilt,
        Some(false),
        "scenario default must reuse the template"
    );
    assert_eq!(
        volumes_after_first,
        template_volumes(),
        "the template's volumes changed between the runs"
    );
}

/// The files under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
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
