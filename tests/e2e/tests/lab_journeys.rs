//! Layer 4: the README's journeys, taken as a reader takes them: its marked blocks, run in a directory outside the
//! repository with nothing there but what the README makes. "Using the roles": a template and two instances from a
//! playbook of the reader's own, then `playbooks/teardown.yml` with the same variables.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use serde_json::json;
use virtup_e2e::{journey, lab_home, pool_volumes, ssh_instance, virsh, Sandbox};

/// What the README's `vars.yml` declares.
const TEMPLATE: &str = "debian-12";
const INSTANCES: &[&str] = &["web1", "web2"];

/// Removes the journey's instances and template, however the test ends.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.remove_all(INSTANCES, &[TEMPLATE]);
    }
}

/// Domains and volumes of the journey's objects on the lab's libvirtd.
fn journey_objects() -> Vec<String> {
    let ours = |n: &str| {
        n == format!("VIRTUP-{TEMPLATE}")
            || n.starts_with(&format!("VIRTUP-{TEMPLATE}-"))
            || INSTANCES.iter().any(|i| {
                n == *i || n.starts_with(&format!("{i}.")) || n.starts_with(&format!("{i}-"))
            })
    };
    virsh(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .map(str::to_owned)
        .chain(pool_volumes())
        .filter(|n| ours(n))
        .collect()
}

#[test]
fn the_readme_roles_journey_makes_and_tears_down_what_it_declares() {
    lab_home();
    assert_eq!(
        journey_objects(),
        Vec::<String>::new(),
        "the journey's names are taken before it starts: another run or a developer uses them"
    );
    let sb = Sandbox::new();
    let _cleanup = Cleanup(&sb);
    let steps = journey::steps("README.md", "roles");
    let home = journey::outside_dir("virtup-readme-roles-");
    let mut files = Vec::new();
    let mut runs = Vec::new();
    for step in &steps {
        if step.kind == "run" {
            runs.push(step);
        } else {
            journey::write(home.path(), step);
            files.push(step.path.clone());
        }
    }
    files.sort();
    assert_eq!(
        journey::files(home.path()),
        files,
        "only what the README makes"
    );
    assert_eq!(
        runs.len(),
        2,
        "a run that makes, a run that tears down: {runs:?}"
    );
    // One shell session: what the first block exports, the second has.
    let exported: String = runs[0]
        .body
        .lines()
        .filter(|l| l.starts_with("export "))
        .map(|l| format!("{l}\n"))
        .collect();
    let session = |step: &journey::Step, before: &str| {
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-euc", &format!("{before}{}", step.body)])
            .current_dir(home.path())
            .env("PATH", journey::venv_path())
            .env("VIRTUP_DATA_HOME", sb.data())
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0");
        virtup_e2e::run_ok(&mut cmd, Duration::from_secs(1800), &step.body)
    };

    let made = session(runs[0], "");
    println!(
        "README roles journey, the playbook: {:.1}s",
        made.elapsed.as_secs_f64()
    );
    let recap = virtup_e2e::recap(&made.stdout);
    assert!(recap.contains("failed=0"), "{recap}");
    // Each instance answers with the key virtup pinned (the module's own proof, then a login of ours).
    for name in INSTANCES {
        let doc = sb.ok(
            "virtup_instance",
            &json!({"name": name, "template": TEMPLATE, "wait_timeout": 900}),
        );
        assert_eq!(doc["changed"], json!(false), "{doc}");
        assert_eq!(ssh_instance(&doc, "hostname").trim(), *name);
    }

    let gone = session(runs[1], &exported);
    println!(
        "README roles journey, the teardown: {:.1}s",
        gone.elapsed.as_secs_f64()
    );
    assert_eq!(journey_objects(), Vec::<String>::new(), "{}", gone.stdout);
    for name in INSTANCES {
        let meta = sb.data().join("instance").join(format!("{name}.json"));
        assert!(!meta.exists(), "{} is left", meta.display());
    }
}
