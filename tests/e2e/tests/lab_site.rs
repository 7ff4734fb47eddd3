//! Lab: the README's main flow, `ansible-playbook playbooks/site.yml` on the shipped example inventory, then the dynamic inventory.
//!
//! One test, because every step needs the previous one's guests: check mode on a fresh lab
//! changes nothing, the real run brings up 1 template and 3 configured instances, ansible
//! reaches them through `virtup_inventory` with strict host key checking, a second run changes
//! nothing, and teardown removes everything (also when an assertion fails, via a guard).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use virtup_e2e::{in_repo, lab_home, pool_volumes, run, virsh, Sandbox};

const INSTANCES: [&str; 3] = ["db1", "web1", "web2"];
const TEMPLATE_DOMAIN: &str = "VIRTUP-debian-12";

/// What the site run makes on the hypervisor: its domains and their volumes (other tests' domains may
/// come and go meanwhile when tests run by hand beside each other).
fn hypervisor_state() -> (BTreeSet<String>, BTreeSet<String>) {
    let ours = |name: &str| {
        INSTANCES.iter().chain(&[TEMPLATE_DOMAIN]).any(|n| {
            name == *n || name.starts_with(&format!("{n}.")) || name.starts_with(&format!("{n}-"))
        })
    };
    let domains = virsh(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| ours(l))
        .map(str::to_owned)
        .collect();
    let volumes = pool_volumes().into_iter().filter(|v| ours(v)).collect();
    (domains, volumes)
}

struct Site {
    sandbox: Sandbox,
}

impl Site {
    fn command(&self, program: &str) -> Command {
        let mut c = in_repo(lab_home().join("venv/bin").join(program));
        c.env("VIRTUP_DATA_HOME", self.sandbox.data())
            .env("VIRTUP_CONFIG_HOME", self.sandbox.config())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0");
        c
    }

    fn playbook(&self, args: &[&str], limit: Duration) -> virtup_e2e::Run {
        let r = run(self.command("ansible-playbook").args(args), limit);
        println!(
            "ansible-playbook {} took {:.1}s\n{}",
            args.join(" "),
            r.elapsed.as_secs_f64(),
            recap(&r.stdout)
        );
        r
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // Always leave the lab as it was, even when an assertion failed half-way.
        let r = self.playbook(&["playbooks/teardown.yml"], Duration::from_secs(900));
        if !r.status.success() {
            eprintln!(
                "teardown failed:\n{}\n{}",
                tail(&r.stdout, 60),
                tail(&r.stderr, 20)
            );
        }
    }
}

fn recap(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `host -> (changed, failed, unreachable)` from a PLAY RECAP.
fn recap_counts(out: &str) -> Vec<(String, u32, u32, u32)> {
    recap(out)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (host, rest) = l.split_once(':')?;
            let num = |key: &str| -> u32 {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u32::MAX)
            };
            Some((
                host.trim().to_owned(),
                num("changed"),
                num("failed"),
                num("unreachable"),
            ))
        })
        .collect()
}

fn inventory_list(site: &Site, ansible_inventory: &Path) -> (Value, String) {
    let r = run(
        Command::new(ansible_inventory)
            .current_dir(virtup_e2e::repo_root())
            .args(["-i", "virtup_inventory", "--list"])
            .env("VIRTUP_DATA_HOME", site.sandbox.data())
            .env("VIRTUP_CONFIG_HOME", site.sandbox.config())
            .env("ANSIBLE_NOCOLOR", "1"),
        Duration::from_secs(120),
    )
    .assert_ok("ansible-inventory --list");
    (
        serde_json::from_str(&r.stdout).expect("ansible-inventory prints JSON"),
        r.stderr,
    )
}

/// A host var as text; ansible-inventory keeps the inventory's unsafe marking in its JSON.
fn text(v: &Value) -> &str {
    v.get("__ansible_unsafe")
        .unwrap_or(v)
        .as_str()
        .unwrap_or_default()
}

fn group_hosts(doc: &Value, group: &str) -> BTreeSet<String> {
    doc[group]["hosts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn site_playbook_brings_up_configured_instances_reachable_through_the_inventory() {
    let site = Site {
        sandbox: Sandbox::new(),
    };
    let before = hypervisor_state();
    assert_eq!(
        before,
        Default::default(),
        "the lab already has domains or volumes of the example; this test needs a fresh lab"
    );

    // 1. Check mode on a fresh lab reports the work and does none of it.
    let r = site.playbook(
        &["playbooks/site.yml", "--check", "--diff"],
        Duration::from_secs(600),
    );
    assert!(
        r.status.success(),
        "check run failed:\n{}\n{}",
        tail(&r.stdout, 80),
        r.stderr
    );
    assert!(
        r.stdout.contains("+++ after: template debian-12"),
        "the check run shows the template it would build:\n{}",
        tail(&r.stdout, 80)
    );
    assert_eq!(
        hypervisor_state(),
        before,
        "--check changed libvirt or the pool"
    );
    assert!(
        !site.sandbox.data().exists(),
        "--check created the data dir {}",
        site.sandbox.data().display()
    );

    // 2. The real run: 1 template (built, customized by its playbook, sealed) and 3 configured instances.
    let r = site.playbook(&["playbooks/site.yml"], Duration::from_secs(3000));
    assert!(
        r.status.success(),
        "site.yml failed:\n{}\n{}",
        tail(&r.stdout, 120),
        r.stderr
    );
    for (host, _, failed, unreachable) in recap_counts(&r.stdout) {
        assert_eq!(
            (failed, unreachable),
            (0, 0),
            "{host} in\n{}",
            recap(&r.stdout)
        );
    }
    let configured: BTreeSet<String> = recap_counts(&r.stdout)
        .into_iter()
        .map(|(h, ..)| h)
        .filter(|h| h != "localhost")
        .collect();
    assert_eq!(
        configured,
        INSTANCES.iter().map(|s| s.to_string()).collect(),
        "post-configuration ran on exactly the declared instances"
    );

    // 3. Ansible reaches every running instance through the dynamic inventory, verifying the pinned key.
    let r = run(
        site.command("ansible")
            .args(["-i", "virtup_inventory", "virtup_running", "-m", "ping"]),
        Duration::from_secs(300),
    );
    assert!(
        r.status.success(),
        "ping failed:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    for name in INSTANCES {
        assert!(
            r.stdout.contains(&format!("{name} | SUCCESS")),
            "{name} did not answer the ping:\n{}",
            r.stdout
        );
    }

    // What the template playbook and the post-configuration left inside each guest.
    for name in INSTANCES {
        let r = run(
            site.command("ansible").args([
                "-i",
                "virtup_inventory",
                name,
                "-m",
                "ansible.builtin.shell",
                "-a",
                "hostname; cat /etc/virtup-template /etc/motd; systemctl is-active virtup-example",
            ]),
            Duration::from_secs(300),
        );
        assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
        let lines: Vec<&str> = r.stdout.lines().skip(1).collect();
        assert_eq!(
            lines.first().copied(),
            Some(name),
            "hostname of {name}:\n{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("customized by playbooks/template-debian-12.yml"),
            "the template playbook's file is missing in {name}:\n{}",
            r.stdout
        );
        assert!(
            lines.iter().skip(2).any(|l| l.contains(name)),
            "motd of {name}:\n{}",
            r.stdout
        );
        assert_eq!(
            lines.last().copied(),
            Some("active"),
            "service in {name}:\n{}",
            r.stdout
        );
    }

    // 4. The inventory: groups, host vars, no deprecation warning (ansible-core 2.19 and, where there is
    // a Python 3.12+, the newest line).
    let (doc, stderr) = inventory_list(&site, &lab_home().join("venv/bin/ansible-inventory"));
    assert!(
        !stderr.contains("DEPRECAT") && !stderr.contains("WARNING") && !stderr.contains("ERROR"),
        "ansible-inventory 2.19 complained:\n{stderr}"
    );
    let instances = group_hosts(&doc, "virtup_instances");
    for name in INSTANCES {
        assert!(
            instances.contains(name),
            "{name} not in virtup_instances: {doc}"
        );
        assert!(group_hosts(&doc, "virtup_running").contains(name));
        assert!(group_hosts(&doc, "virtup_template_debian_12").contains(name));
        let vars = &doc["_meta"]["hostvars"][name];
        let args = text(&vars["ansible_ssh_common_args"]);
        assert!(args.contains("StrictHostKeyChecking=yes"), "{vars}");
        assert!(args.contains(&format!("HostKeyAlias={name}")), "{vars}");
        assert_eq!(text(&vars["virtup_template"]), "debian-12", "{vars}");
        assert_eq!(text(&vars["virtup_state"]), "running", "{vars}");
        assert!(text(&vars["virtup_mac"]).starts_with("52:54:00:"), "{vars}");
    }
    assert!(
        group_hosts(&doc, "virtup_templates").contains(TEMPLATE_DOMAIN),
        "{doc}"
    );
    assert!(
        group_hosts(&doc, "virtup_stopped").contains(TEMPLATE_DOMAIN),
        "sealed template is shut off: {doc}"
    );
    if let Some(next) = std::env::var_os("VIRTUP_LAB_VENV_NEXT") {
        let exe = PathBuf::from(next).join("bin/ansible-inventory");
        let version = run(Command::new(&exe).arg("--version"), Duration::from_secs(60)).stdout;
        let (doc_next, stderr_next) = inventory_list(&site, &exe);
        println!(
            "checked with {}",
            version.lines().next().unwrap_or_default()
        );
        assert!(
            !stderr_next.contains("DEPRECAT") && !stderr_next.contains("WARNING"),
            "{} complained:\n{stderr_next}",
            version.lines().next().unwrap_or_default()
        );
        assert_eq!(group_hosts(&doc_next, "virtup_instances"), instances);
    } else {
        println!("the newest ansible-core was not checked: this machine has no Python 3.12+ (see tests/lab/lab)");
    }
    let graph = run(
        site.command("ansible-inventory")
            .args(["-i", "virtup_inventory", "--graph"]),
        Duration::from_secs(120),
    )
    .assert_ok("ansible-inventory --graph");
    for g in [
        "@virtup:",
        "@virtup_instances:",
        "@virtup_templates:",
        "@virtup_running:",
        "@virtup_template_debian_12:",
    ] {
        assert!(
            graph.stdout.contains(g),
            "{g} missing from\n{}",
            graph.stdout
        );
    }
    println!("{}", graph.stdout);

    // virt-up's static inventory is refreshed too.
    let yaml = std::fs::read_to_string(site.sandbox.data().join("inventory.yaml")).unwrap();
    for name in INSTANCES {
        assert!(
            yaml.contains(&format!("\"{name}\":")),
            "{name} missing from inventory.yaml:\n{yaml}"
        );
    }

    // 5. A second run changes nothing on any host.
    let r = site.playbook(&["playbooks/site.yml"], Duration::from_secs(1200));
    assert!(
        r.status.success(),
        "second run failed:\n{}\n{}",
        tail(&r.stdout, 80),
        r.stderr
    );
    let counts = recap_counts(&r.stdout);
    assert_eq!(
        counts.len(),
        4,
        "localhost and 3 instances:\n{}",
        recap(&r.stdout)
    );
    for (host, changed, failed, unreachable) in counts {
        assert_eq!(
            (changed, failed, unreachable),
            (0, 0, 0),
            "{host} in\n{}",
            recap(&r.stdout)
        );
    }
    drop(site);
    assert_eq!(
        hypervisor_state(),
        Default::default(),
        "teardown left domains or volumes behind"
    );
}

/// No file of the project turns host key checking off (the needle is split so this file does not match).
#[test]
fn no_file_disables_host_key_checking() {
    let needle = format!("StrictHostKeyChecking={}", "no");
    let files = run(
        in_repo("git").args(["ls-files", "-z"]),
        Duration::from_secs(60),
    )
    .assert_ok("git ls-files")
    .stdout;
    let offenders: Vec<&str> = files
        .split('\0')
        .filter(|f| !f.is_empty())
        .filter(|f| {
            std::fs::read(virtup_e2e::repo_root().join(f))
                .map(|b| String::from_utf8_lossy(&b).contains(&needle))
                .unwrap_or(false)
        })
        .collect();
    assert!(offenders.is_empty(), "{needle} in {offenders:?}");
}
