//! Lab: `playbooks/site.yml` across two hypervisors, the example inventory `examples/hypervisors` (the lab's
//! own and h2 over `qemu+ssh://`), then the dynamic inventory and Ansible through it.
//!
//! One test, because every step needs the previous one's guests: the run builds the template on both
//! hypervisors at once and places four instances (two named, two spread), each on one hypervisor; Ansible
//! pings all four through `virtup_inventory` with strict keys on both hops; with h2's libvirtd killed, the
//! second run fails h2 only and finishes the lab's hypervisor with nothing to change; once h2 is back, the
//! third run changes nothing anywhere and moves nothing; teardown leaves nothing on either hypervisor (also
//! when an assertion fails, via a guard).
//!
//! Needs `tests/lab/lab up --hosts 2` (`tests/run` brings the lab up so); without h2 it fails, never skips.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command`; this black-box
// crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use virtup_e2e::{
    in_repo, lab_home, pool_volumes_on, recap, recap_counts, run, run_ok, tail, venv_bin, virsh_on,
    Sandbox,
};

const INSTANCES: [&str; 4] = ["db1", "db2", "web1", "web2"];
const TEMPLATE_DOMAIN: &str = "VIRTUP-debian-12";
/// The example inventory's second hypervisor, which must be the lab's h2.
const REMOTE: &str = "qemu+ssh://root@h2/system";
const LOCAL: &str = "qemu:///system";
/// Each hypervisor's inventory group (`virtup_hypervisor_<host>`).
const GROUPS: [(&str, &str); 2] = [
    ("hv1", "virtup_hypervisor_localhost"),
    ("hv2", "virtup_hypervisor_h2"),
];

struct Site {
    sandbox: Sandbox,
}

impl Site {
    fn command(&self, program: &str) -> Command {
        let mut c = in_repo(venv_bin(program));
        c.env("VIRTUP_DATA_HOME", self.sandbox.data())
            .env("VIRTUP_CONFIG_HOME", self.sandbox.config())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0");
        c
    }

    /// `ansible-playbook -i examples/hypervisors -i virtup_inventory PLAYBOOK`.
    fn playbook(&self, playbook: &str) -> virtup_e2e::Run {
        let r = run(
            self.command("ansible-playbook").args([
                "-i",
                "examples/hypervisors",
                "-i",
                "virtup_inventory",
                playbook,
            ]),
            Duration::from_secs(1800),
        );
        println!(
            "ansible-playbook {playbook} took {:.1}s\n{}",
            r.elapsed.as_secs_f64(),
            recap(&r.stdout)
        );
        r
    }

    /// `virtup_inventory --list` in the sandbox's dirs.
    fn inventory(&self) -> Value {
        let listed = run_ok(
            in_repo(virtup_e2e::repo_root().join("virtup_inventory"))
                .arg("--list")
                .env("VIRTUP_DATA_HOME", self.sandbox.data())
                .env("VIRTUP_CONFIG_HOME", self.sandbox.config()),
            Duration::from_secs(300),
            "virtup_inventory --list",
        );
        serde_json::from_str(&listed.stdout).expect("inventory JSON")
    }

    /// Which example hypervisor host each instance is on, from the inventory's groups.
    fn placement(&self) -> BTreeMap<String, String> {
        let doc = self.inventory();
        let mut at = BTreeMap::new();
        for (host, group) in GROUPS {
            for h in doc[group]["hosts"].as_array().into_iter().flatten() {
                let h = h.as_str().unwrap_or_default();
                if INSTANCES.contains(&h) {
                    assert!(
                        at.insert(h.to_owned(), host.to_owned()).is_none(),
                        "{h} on two hypervisors: {doc}"
                    );
                }
            }
        }
        at
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // Always leave both hypervisors as they were, even when an assertion failed half-way.
        let r = self.playbook("playbooks/teardown.yml");
        if !r.status.success() {
            eprintln!(
                "teardown failed:\n{}\n{}",
                tail(&r.stdout, 60),
                tail(&r.stderr, 20)
            );
        }
    }
}

/// Starts h2's libvirtd again, however the test goes on.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let lab = virtup_e2e::repo_root().join("tests/lab/lab");
        let r = run(
            Command::new(lab).args(["restart-libvirtd", "--host", "h2"]),
            Duration::from_secs(300),
        );
        assert!(
            r.status.success() || std::thread::panicking(),
            "restart-libvirtd --host h2: {}",
            r.stderr
        );
    }
}

/// Domains and volumes named like the example's on `uri`.
fn leftovers(uri: &str) -> Vec<String> {
    let ours = |name: &str| {
        INSTANCES.iter().chain(&[TEMPLATE_DOMAIN]).any(|n| {
            name == *n || name.starts_with(&format!("{n}.")) || name.starts_with(&format!("{n}-"))
        })
    };
    virsh_on(uri, &["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .map(str::to_owned)
        .chain(pool_volumes_on(uri))
        .filter(|n| ours(n))
        .collect()
}

/// Every recap line of `out`: host → changed (and no failure), for a run that must change nothing.
fn assert_nothing_changed(r: &virtup_e2e::Run, what: &str) {
    let counts = recap_counts(&r.stdout);
    assert!(
        r.status.success() && !counts.is_empty(),
        "{what}:\n{}\n{}",
        tail(&r.stdout, 80),
        tail(&r.stderr, 20)
    );
    for (host, changed, failed, unreachable) in counts {
        assert_eq!(
            (changed, failed, unreachable),
            (0, 0, 0),
            "{what}: {host} changed or failed:\n{}",
            recap(&r.stdout)
        );
    }
}

#[test]
fn site_yml_places_instances_on_two_hypervisors_and_keeps_them_there() {
    lab_home();
    let uris = std::env::var("VIRTUP_LAB_URIS").unwrap_or_default();
    assert!(
        uris.split_whitespace().any(|u| u == REMOTE),
        "VIRTUP_LAB_URIS=`{uris}` has no `{REMOTE}`, the example's second hypervisor: run `tests/lab/lab up --hosts 2`"
    );
    for uri in [LOCAL, REMOTE] {
        let left = leftovers(uri);
        assert!(
            left.is_empty(),
            "{uri} already has {left:?}: a run before this one left them"
        );
    }
    let site = Site {
        sandbox: Sandbox::new(),
    };

    // 1. One run: the template on both hypervisors at once, four instances, post-configuration through the
    // dynamic inventory.
    let first = site.playbook("playbooks/site.yml");
    assert!(
        first.status.success(),
        "site.yml across two hypervisors:\n{}\n{}",
        tail(&first.stdout, 120),
        tail(&first.stderr, 30)
    );
    let placed = site.placement();
    assert_eq!(
        placed.keys().map(String::as_str).collect::<Vec<_>>(),
        INSTANCES,
        "every instance is on one hypervisor: {placed:?}"
    );
    assert_eq!(placed["db1"], "hv1", "named: {placed:?}");
    assert_eq!(placed["db2"], "hv2", "named: {placed:?}");
    for uri in [LOCAL, REMOTE] {
        let left = leftovers(uri);
        assert!(
            left.iter().any(|n| n == TEMPLATE_DOMAIN),
            "the template was built on {uri}: {left:?}"
        );
    }
    let doc = site.inventory();
    let running: Vec<&str> = doc["virtup_running"]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(running, INSTANCES, "all four run: {doc}");

    // 2. Ansible reaches every guest through the dynamic inventory, both hops checked strictly.
    let ping = run(
        site.command("ansible")
            .args(["-i", "virtup_inventory", "virtup_running", "-m", "ping"])
            .env("ANSIBLE_HOST_KEY_CHECKING", "True"),
        Duration::from_secs(600),
    );
    for name in INSTANCES {
        assert!(
            ping.stdout.contains(&format!("{name} | SUCCESS")),
            "ping {name}:\n{}\n{}",
            ping.stdout,
            ping.stderr
        );
    }

    // 3. h2's libvirtd dies: the second run fails h2 alone; the lab's hypervisor finishes with nothing to
    // change. Once h2 is back, the third run changes nothing anywhere and every instance is where it was
    // placed (one run fewer than a separate idempotence run: CI time).
    let pid_file = lab_home().join("hosts/h2/run/libvirtd.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    run_ok(
        Command::new("kill").args(["-KILL", pid.trim()]),
        Duration::from_secs(30),
        "kill h2's libvirtd",
    );
    let restart = Restart;
    let down = site.playbook("playbooks/site.yml");
    let counts = recap_counts(&down.stdout);
    let of = |host: &str| counts.iter().find(|c| c.0 == host).cloned();
    assert!(
        !down.status.success()
            && of("hv2").is_some_and(|(_, _, failed, unreachable)| failed + unreachable > 0)
            && of("hv1").is_some_and(|(_, changed, failed, _)| changed == 0 && failed == 0),
        "with h2 down only hv2 fails:\n{}\n{}",
        tail(&down.stdout, 120),
        tail(&down.stderr, 30)
    );
    drop(restart);
    let back = site.playbook("playbooks/site.yml");
    assert_nothing_changed(&back, "site.yml with h2 back");
    assert_eq!(
        site.placement(),
        placed,
        "placed once, kept, also while h2 was down"
    );

    // 4. Teardown leaves nothing on either hypervisor.
    let gone = site.playbook("playbooks/teardown.yml");
    assert!(
        gone.status.success(),
        "teardown:\n{}\n{}",
        tail(&gone.stdout, 80),
        tail(&gone.stderr, 20)
    );
    for uri in [LOCAL, REMOTE] {
        let left = leftovers(uri);
        assert!(left.is_empty(), "left on {uri}: {left:?}");
    }
}
