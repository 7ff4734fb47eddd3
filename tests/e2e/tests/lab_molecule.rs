//! Layer 5: Molecule on the lab. docs/molecule.md's journey (a role of the user's own, in a directory outside the
//! repository, tested on two virtup platforms with virtup's `platform` files copied as the page says) builds the
//! template; the same journey with the collection installed from its archive (no checkout) then runs on it, and
//! scenario `default` (the project's roles end to end) too, neither building it again. Each `molecule test` must pass and leave nothing of its own behind but the shared
//! template.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use virtup_e2e::{journey, lab_home, pool_volumes, virsh, Sandbox};

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
        let instances: Vec<&str> = JOURNEY.iter().chain(DEFAULT).copied().collect();
        self.0.remove_all(&instances, &[TEMPLATE]);
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

/// A reader's shell for a journey's `run` step in `dir`: the lab venv's tools first on `PATH`.
fn reader_shell(dir: &Path, step: &journey::Step) -> std::process::Command {
    let mut cmd = journey::shell(dir, step);
    cmd.env("PATH", journey::venv_path());
    cmd
}

/// docs/molecule.md's journey in `dir` up to its `molecule test`, which it returns (unrun): files written,
/// commands run and edits made as a reader makes them.
fn prepare_journey(dir: &Path, steps: &[journey::Step]) -> journey::Step {
    let (molecule, before) = steps.split_last().expect("a journey");
    assert!(
        molecule.kind == "run" && molecule.body.contains("molecule test"),
        "the page's last step is its `molecule test`: {molecule:?}"
    );
    for step in before {
        match step.kind.as_str() {
            "run" => {
                virtup_e2e::run_ok(
                    &mut reader_shell(dir, step),
                    Duration::from_secs(120),
                    &step.body,
                );
            }
            _ => journey::write(dir, step),
        }
    }
    molecule.clone()
}

/// The journey's `molecule test` in `dir` (the user's directory), in the sandbox's data dir; `name` names its
/// Molecule ephemeral dir.
fn journey_molecule(sb: &Sandbox, dir: &Path, step: &journey::Step, name: &str) -> virtup_e2e::Run {
    virtup_e2e::run(
        reader_shell(dir, step)
            .env("VIRTUP_DATA_HOME", sb.data())
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("MOLECULE_EPHEMERAL_DIRECTORY", ephemeral(sb, name))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("PY_COLORS", "0")
            .env("NO_COLOR", "1"),
        Duration::from_secs(3600),
    )
}

/// The page's journey as a reader with the collection installed takes it: the install first, step 2's copy from the
/// installed collection in place of the checkout's, and no `collections_path` edit in step 3.
fn installed_journey(steps: &[journey::Step]) -> Vec<journey::Step> {
    let variant = journey::steps("docs/molecule.md", "installed");
    let [install, copy] = &variant[..] else {
        panic!("the installed variant is an install and a copy: {variant:?}");
    };
    assert!(
        install.kind == "run" && install.body.contains("ansible-galaxy collection install"),
        "{install:?}"
    );
    let mut out = vec![install.clone()];
    let (mut copied, mut skipped) = (0, 0);
    for step in steps {
        if step.kind == "run" && step.body.contains("/molecule/platform/") {
            out.push(copy.clone());
            copied += 1;
        } else if step.kind == "edit" && step.body.contains("collections_path") {
            // Only the `ansible.cfg.defaults.collections_path` edit is left out, never one that also sets more.
            let keys: Vec<&str> = step
                .body
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| l.split(':').next().unwrap_or_default())
                .collect();
            assert_eq!(
                keys,
                ["ansible", "cfg", "defaults", "collections_path"],
                "{step:?}"
            );
            skipped += 1;
        } else {
            out.push(step.clone());
        }
    }
    assert_eq!(
        (copied, skipped),
        (1, 1),
        "one copy replaced, one edit left out"
    );
    out
}

#[test]
fn the_documented_journey_and_the_default_scenario_pass_and_reuse_the_template() {
    lab_home();
    assert_no_leftover_from_earlier_runs();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(&sb);

    // docs/molecule.md's journey, in a directory outside the repository holding only what the page says.
    let steps = journey::steps("docs/molecule.md", "");
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
    let home = journey::outside_dir("virtup-journey-");
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
    assert_eq!(journey::files(home.path()), expected);
    let first = journey_molecule(&sb, home.path(), &command, "journey");
    assert_passed(&first, "default", false);
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "journey"));
    assert_only_template_left(&sb, &ephemeral(&sb, "journey"), "journey", JOURNEY);
    let built = template_changed(&first);
    assert_eq!(built, Some(true), "the first run must build the template");
    // The role's handler ran in the first converge and the idempotence step changed nothing.
    assert!(
        first.stdout.contains("myrole : Restart myrole]"),
        "{}",
        virtup_e2e::tail(&first.stdout, 60)
    );
    let volumes_after_first = template_volumes();

    // The second `molecule test` in this data dir: the same journey with the collection installed from its archive
    // into the role (the page's "With the collection installed"), in a fresh directory. The template is there,
    // unchanged, and only cloned, as in a reader's second run.
    let installed = installed_journey(&steps);
    let dir = journey::outside_dir("virtup-journey-installed-");
    let command = prepare_journey(dir.path(), &installed);
    let collection = "myrole/collections/ansible_collections/virtup/virtup/";
    let (in_collection, others): (Vec<String>, Vec<String>) = journey::files(dir.path())
        .into_iter()
        .partition(|f| f.starts_with(collection));
    assert_eq!(
        others, expected,
        "the installed journey's files, besides the collection"
    );
    assert!(
        in_collection.contains(&format!("{collection}MANIFEST.json"))
            && in_collection.contains(&format!("{collection}plugins/modules/virtup_instance")),
        "{in_collection:?}"
    );
    let second = journey_molecule(&sb, dir.path(), &command, "installed");
    assert_passed(&second, "default", false);
    for name in JOURNEY {
        assert!(
            second.stdout.contains(name),
            "{name} was not made: {}",
            virtup_e2e::tail(&second.stdout, 60)
        );
    }
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "installed"));
    assert_only_template_left(&sb, &ephemeral(&sb, "installed"), "installed", JOURNEY);
    // The roles that ran were the installed copy's (Ansible names an included file by its path), and no setting of
    // the environment could have pointed Ansible at the checkout.
    assert!(
        second.stdout.contains(
            &dir.path()
                .join(collection)
                .join("roles/virtup_instance/tasks")
                .display()
                .to_string()
        ),
        "{}",
        virtup_e2e::tail(&second.stdout, 60)
    );
    for var in [
        "ANSIBLE_COLLECTIONS_PATH",
        "ANSIBLE_COLLECTIONS_PATHS",
        "ANSIBLE_CONFIG",
    ] {
        assert!(std::env::var_os(var).is_none(), "{var} is set");
    }
    let reused = template_changed(&second);
    assert_eq!(
        reused,
        Some(false),
        "the installed journey must reuse the template"
    );

    // The second `molecule test` in this data dir, the project's own scenario, declares the template as the
    // journey does: it is there, unchanged, and only cloned, as in a reader's second run. (A second run of the
    // journey itself proved the same at 111 s of CI. Scenario `platform`, whose files the journey copies, is run
    // by its twin `hypervisors` in lab_hypervisors.)
    let default = molecule_test(&sb, "default");
    assert_passed(&default, "default", true);
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral(&sb, "default"));
    assert_only_template_left(&sb, &ephemeral(&sb, "default"), "default", DEFAULT);
    let rebuilt = template_changed(&default);
    println!(
        "journey: {:.1}s (template built: {}); installed journey: {:.1}s; default: {:.1}s (template rebuilt: {})",
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
