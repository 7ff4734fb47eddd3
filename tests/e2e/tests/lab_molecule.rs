//! Layer 5: Molecule on the lab. Scenario `platform` (virtup as the platform for a role) builds the template;
//! scenario `default` (the project's roles end to end) then runs on it without building it again. Each
//! `molecule test` must pass and leave nothing of its own behind but the shared template.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use virtup_e2e::{lab_home, pool_volumes, virsh, Sandbox};

/// The template both scenarios declare (molecule/*/molecule.yml, `virtup_template_templates`).
const TEMPLATE: &str = "mol-debian-12";
/// The template's libvirt domain, which also prefixes its volumes.
const TEMPLATE_DOMAIN: &str = "VIRTUP-mol-debian-12";
/// The platforms of each scenario (their molecule.yml).
const PLATFORM: &[&str] = &["mol-p1"];
const DEFAULT: &[&str] = &["mol-d1", "mol-d2"];

/// Removes every instance the scenarios make and then the template, however the test ends.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for name in PLATFORM.iter().chain(DEFAULT) {
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

/// Every step passed; scenario `default` also has a side effect (a changed greeting restarts the service,
/// molecule/default/side_effect.yml).
fn assert_passed(out: &virtup_e2e::Run, scenario: &str) {
    let mut steps = vec!["create", "converge", "idempotence", "verify", "destroy"];
    if scenario == "default" {
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
fn assert_only_template_left(sb: &Sandbox, scenario: &str, instances: &[&str]) {
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
    let config = ephemeral(sb, scenario).join("instance_config.yml");
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
        .filter(|d| *d == TEMPLATE_DOMAIN || PLATFORM.contains(d) || DEFAULT.contains(d))
        .collect();
    assert!(
        stale.is_empty(),
        "domains {stale:?} exist before the test started: another run or a developer's molecule uses them"
    );
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[test]
fn molecule_scenarios_pass_and_the_second_reuses_the_template() {
    lab_home();
    assert_no_leftover_from_earlier_runs();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(&sb);

    // First platform run: builds the template, then the whole default sequence.
    let first = molecule_test(&sb, "platform");
    assert_passed(&first, "platform");
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "platform"));
    assert_only_template_left(&sb, "platform", PLATFORM);
    let built = template_changed(&first);
    assert_eq!(built, Some(true), "the first run must build the template");
    let volumes_after_first = template_volumes();

    // The project's own scenario, the second `molecule test` in this data dir: the template is there,
    // unchanged, and is not built again. (A second run of `platform` proved the same at two minutes of CI;
    // lab_hypervisors also runs scenario `hypervisors` on site.yml's templates.)
    let default = molecule_test(&sb, "default");
    assert_passed(&default, "default");
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "default"));
    assert_only_template_left(&sb, "default", DEFAULT);
    let rebuilt = template_changed(&default);
    println!(
        "platform: {:.1}s (template built: {}); default: {:.1}s (template rebuilt: {})",
        secs(first.elapsed),
        built == Some(true),
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
