//! Lab: the README's main flow, `ansible-playbook playbooks/site.yml` on the shipped example inventory, then the dynamic inventory.
//!
//! One test, because every step needs the previous one's guests: check mode on a fresh lab
//! changes nothing; the real run, started twice at once (the shipped inventory and an overlapping
//! one, forks=8, `-vvv`), brings up 1 template and 4 configured instances with each generation and
//! instance made once; the secrets audit finds no generated password or private key, nor the passwords
//! the runs set through the roles (template and instance), in the output, the inventory, sampled command
//! lines or files, and every volume is 0600; ansible reaches the instances through
//! `virtup_inventory` with strict host key checking; a second run changes nothing; teardown
//! removes everything (also when an assertion fails, via a guard).

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::audit::{self, CmdlineSampler, Haystack};
use virtup_e2e::{in_repo, lab_home, pool_volumes, recap, recap_counts, run, tail, virsh, Sandbox};

/// The shipped inventory's instances.
const INSTANCES: [&str; 3] = ["db1", "web1", "web2"];
/// The concurrent run's: two shared with the shipped inventory, one of its own.
const OTHER_INSTANCES: [&str; 3] = ["app1", "db1", "web2"];
const OTHER_ONLY: &str = "app1";
const TEMPLATE_DOMAIN: &str = "VIRTUP-debian-12";

/// What the site run makes on the hypervisor: its domains and their volumes (other tests' domains may
/// come and go meanwhile when tests run by hand beside each other).
fn hypervisor_state() -> (BTreeSet<String>, BTreeSet<String>) {
    let ours = |name: &str| {
        INSTANCES
            .iter()
            .chain(&[OTHER_ONLY, TEMPLATE_DOMAIN])
            .any(|n| {
                name == *n
                    || name.starts_with(&format!("{n}."))
                    || name.starts_with(&format!("{n}-"))
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

/// Passwords the concurrent runs set through the roles, searched like the generated ones: the template's
/// (role defaults in an extra-vars file both runs get, so whichever builds it uses them) and those of the
/// overlapping inventory's own instance. Random per run, so old logs never match.
struct GivenPasswords {
    /// `(secrets dir, option, value)`.
    all: Vec<(String, &'static str, String)>,
}

impl GivenPasswords {
    fn new() -> GivenPasswords {
        let mut random = [0u8; 24];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut random,
        )
        .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut all = Vec::new();
        for (i, (dir, option)) in [
            (TEMPLATE_DOMAIN, "password"),
            (TEMPLATE_DOMAIN, "root_password"),
            (OTHER_ONLY, "password"),
            (OTHER_ONLY, "root_password"),
        ]
        .into_iter()
        .enumerate()
        {
            all.push((
                dir.to_owned(),
                option,
                format!("Given-{option}-{}", hex(&random[i * 6..i * 6 + 6])),
            ));
        }
        GivenPasswords { all }
    }

    fn get(&self, dir: &str, option: &str) -> &str {
        let (.., v) = self
            .all
            .iter()
            .find(|(d, o, _)| d == dir && *o == option)
            .unwrap();
        v
    }
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
        // Always leave the lab as it was, even when an assertion failed half-way. The concurrent run's own
        // instance first: the shipped teardown does not know it, and the template is refused while it exists.
        let (doc, out) = self.sandbox.module(
            "virtup_instance",
            &json!({"name": OTHER_ONLY, "state": "absent"}),
        );
        if doc["failed"] == json!(true) {
            eprintln!("removing {OTHER_ONLY} failed: {doc}\n{}", out.stderr);
        }
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
    // app1's second NIC is on the lab's bare bridge, which a lab started before it existed lacks.
    let bridge = run(
        Command::new("ip").args(["link", "show", "vubr0"]),
        Duration::from_secs(30),
    );
    assert!(
        bridge.status.success(),
        "the lab has no bridge vubr0: run `tests/lab/lab up` again\n{}",
        bridge.stderr
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

    // 2. The real run, twice at once: the shipped inventory and an overlapping one (same template, two
    // shared instances, one of its own), forks=8, at -vvv for the secrets audit, while another thread
    // samples every process's command line.
    let given = GivenPasswords::new();
    // app1 (the other inventory's own) has a fixed address, set through the role.
    let fixed = virtup_e2e::free_addresses(1).remove(0);
    let other = other_inventory(&given, &fixed);
    let other_path = other.path().to_str().unwrap().to_owned();
    let extra_vars = format!("@{}", other.path().join("given-passwords.yml").display());
    let sampler = CmdlineSampler::start(Duration::from_millis(100));
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            site.playbook(
                &[
                    "playbooks/site.yml",
                    "--forks",
                    "8",
                    "-vvv",
                    "-e",
                    &extra_vars,
                ],
                Duration::from_secs(3000),
            )
        });
        let b = s.spawn(|| {
            site.playbook(
                &[
                    "-i",
                    &other_path,
                    "-i",
                    "virtup_inventory",
                    "playbooks/site.yml",
                    "--forks",
                    "8",
                    "-vvv",
                    "-e",
                    &extra_vars,
                ],
                Duration::from_secs(3000),
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let (cmdlines, samples) = sampler.finish();
    for (label, r, declared) in [
        ("shipped", &ra, &INSTANCES),
        ("overlapping", &rb, &OTHER_INSTANCES),
    ] {
        assert!(
            r.status.success(),
            "{label} site.yml failed:\n{}\n{}",
            tail(&r.stdout, 150),
            tail(&r.stderr, 40)
        );
        for (host, _, failed, unreachable) in recap_counts(&r.stdout) {
            assert_eq!(
                (failed, unreachable),
                (0, 0),
                "{label}: {host} in\n{}",
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
            declared.iter().map(|s| s.to_string()).collect(),
            "{label}: post-configuration ran on exactly the declared instances"
        );
    }
    let all_instances: BTreeSet<&str> = INSTANCES.iter().chain(&OTHER_INSTANCES).copied().collect();
    check_made_once(&site, &all_instances, &[&ra.stdout, &rb.stdout]);
    report_collisions(&[("shipped", &ra), ("overlapping", &rb)]);
    drop(other);

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

    // 4. The inventory: groups, host vars, no deprecation warning (ansible-core 2.19 and the newest line,
    // which needs a Python 3.12+: these machines have one in pyenv, and the lab builds venv-next with it).
    let (doc, stderr) = inventory_list(&site, &lab_home().join("venv/bin/ansible-inventory"));
    assert!(
        !stderr.contains("DEPRECAT") && !stderr.contains("WARNING") && !stderr.contains("ERROR"),
        "ansible-inventory 2.19 complained:\n{stderr}"
    );
    let instances = group_hosts(&doc, "virtup_instances");
    let app1 = &doc["_meta"]["hostvars"][OTHER_ONLY];
    assert_eq!(text(&app1["virtup_reserved_address"]), fixed, "{app1}");
    assert_eq!(text(&app1["ansible_host"]), fixed, "{app1}");
    // Its second NIC, given through the role, as the inventory reports it.
    assert_eq!(app1["virtup_extra_nics"][0]["type"], "bridge", "{app1}");
    assert_eq!(
        text(&app1["virtup_extra_nics"][0]["source"]),
        "vubr0",
        "{app1}"
    );
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
        assert!(args.contains("GlobalKnownHostsFile=/dev/null"), "{vars}");
        assert!(args.contains(&format!("HostKeyAlias={name}")), "{vars}");
        assert_eq!(text(&vars["virtup_template"]), "debian-12", "{vars}");
        assert_eq!(text(&vars["virtup_state"]), "running", "{vars}");
        assert!(text(&vars["virtup_mac"]).starts_with("52:54:00:"), "{vars}");
    }
    // The groups the example inventory declares, recorded by the module and listed by the inventory.
    for (group, members) in [("web", &["web1", "web2"][..]), ("db", &["db1"][..])] {
        let listed = group_hosts(&doc, group);
        for m in members {
            assert!(listed.contains(*m), "{m} not in group {group}: {doc}");
        }
    }
    assert!(
        group_hosts(&doc, "virtup_templates").contains(TEMPLATE_DOMAIN),
        "{doc}"
    );
    assert!(
        group_hosts(&doc, "virtup_stopped").contains(TEMPLATE_DOMAIN),
        "sealed template is shut off: {doc}"
    );
    let next = std::env::var_os("VIRTUP_LAB_VENV_NEXT").unwrap_or_else(|| {
        panic!(
            "VIRTUP_LAB_VENV_NEXT is not set: the lab found no Python 3.12+ for the newest ansible-core \
             (pyenv has one on these machines; see venv-next in tests/lab/lab and run `tests/lab/lab up`)"
        )
    });
    let exe = PathBuf::from(next).join("bin/ansible-inventory");
    let version = run(Command::new(&exe).arg("--version"), Duration::from_secs(60)).stdout;
    let version = version.lines().next().unwrap_or_default().to_owned();
    let newer = version
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| w.starts_with("2."))
        .and_then(|v| v.split('.').nth(1)?.parse::<u32>().ok())
        .is_some_and(|minor| minor >= 20);
    assert!(
        newer,
        "venv-next is not the newest ansible-core line: {version}"
    );
    let (doc_next, stderr_next) = inventory_list(&site, &exe);
    println!("checked with {version}");
    assert!(
        !stderr_next.contains("DEPRECAT") && !stderr_next.contains("WARNING"),
        "{version} complained:\n{stderr_next}"
    );
    assert_eq!(group_hosts(&doc_next, "virtup_instances"), instances);
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

    // The secrets audit over the whole flow so far.
    secrets_audit(&site, &[&ra, &rb], &cmdlines, samples, &doc, &given);

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

/// The overlapping inventory: the shipped one's hypervisor and template, instances db1 and web2 as the
/// shipped one declares them, and app1 of its own with given passwords and the fixed address `fixed`.
/// Beside it, the extra-vars file both runs get: the template's given passwords as role defaults.
fn other_inventory(given: &GivenPasswords, fixed: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("virtup-site-other-")
        .tempdir()
        .unwrap();
    let root = virtup_e2e::repo_root().join("inventory");
    std::fs::create_dir_all(dir.path().join("group_vars")).unwrap();
    std::fs::copy(root.join("hosts.yml"), dir.path().join("hosts.yml")).unwrap();
    let vars = std::fs::read_to_string(root.join("group_vars/virtup_hypervisors.yml")).unwrap();
    let shipped = "virtup_instance_instances:\n  - name: web1\n    groups: [web]\n  - name: web2\n    groups: [web]\n  - name: db1\n    memory: 768\n    groups: [db]\n";
    assert!(
        vars.contains(shipped),
        "the shipped inventory's instances changed; update this test:\n{vars}"
    );
    let defaults = "virtup_instance_defaults:\n  template: debian-12\n  memory: 512\n";
    assert!(
        vars.contains(defaults),
        "the shipped inventory's instance defaults changed; update this test:\n{vars}"
    );
    // A `network` for every instance, and app1 with NICs of its own (a second one on the lab's bare
    // bridge): the role leaves the default `network` out where an instance names its `nics`.
    let vars = vars.replace(defaults, &format!("{defaults}  network: default\n"));
    let vars = vars.replace(
        shipped,
        &format!(
            "virtup_instance_instances:\n  - name: db1\n    memory: 768\n  - name: web2\n  - name: {OTHER_ONLY}\n    \
             password: \"{}\"\n    root_password: \"{}\"\n    address: \"{fixed}\"\n    \
             nics: [{{network: default}}, {{bridge: vubr0}}]\n",
            given.get(OTHER_ONLY, "password"),
            given.get(OTHER_ONLY, "root_password"),
        ),
    );
    std::fs::write(dir.path().join("group_vars/virtup_hypervisors.yml"), vars).unwrap();
    std::fs::write(
        dir.path().join("given-passwords.yml"),
        format!(
            "virtup_template_defaults:\n  password: \"{}\"\n  root_password: \"{}\"\n",
            given.get(TEMPLATE_DOMAIN, "password"),
            given.get(TEMPLATE_DOMAIN, "root_password"),
        ),
    )
    .unwrap();
    dir
}

/// After the concurrent runs: each domain once, one template generation, no volume that no domain uses,
/// every metadata file parses, one known_hosts line per instance.
fn check_made_once(site: &Site, instances: &BTreeSet<&str>, outputs: &[&str]) {
    let (domains, volumes) = hypervisor_state();
    let expected: BTreeSet<String> = instances
        .iter()
        .copied()
        .chain([TEMPLATE_DOMAIN])
        .map(str::to_owned)
        .collect();
    assert_eq!(domains, expected, "domains after the concurrent runs");
    let generations: Vec<&String> = volumes
        .iter()
        .filter(|v| v.starts_with(&format!("{TEMPLATE_DOMAIN}-g")))
        .collect();
    assert_eq!(
        generations.len(),
        1,
        "template generations: {generations:?}"
    );
    assert!(
        !volumes.iter().any(|v| v.ends_with(".part")),
        "a partial build was left: {volumes:?}"
    );
    let builds: usize = outputs
        .iter()
        .map(|o| o.matches("build generation 1").count())
        .sum();
    // With a password among its options, the role hides the template call's result (no_log).
    let hidden: usize = outputs
        .iter()
        .flat_map(|o| o.split("\nTASK ["))
        .filter(|task| {
            task.starts_with(
                "virtup.virtup.virtup_template : Converge template debian-12 to state present]",
            ) && task.contains("\nchanged: [localhost] => {")
                && task.contains("\"censored\": ")
        })
        .count();
    assert!(
        builds + hidden >= 1,
        "no run reported building the template"
    );
    println!(
        "template build reported {builds} time(s) across both runs' output; {hidden} changing template call(s) hidden by no_log"
    );
    // Every volume is a disk of some domain: nothing is orphaned.
    let mut used = BTreeSet::new();
    for d in &domains {
        for line in virsh(&["domblklist", d, "--details"]).lines().skip(2) {
            if let Some(source) = line.split_whitespace().nth(3) {
                used.insert(
                    Path::new(source)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let orphans: Vec<&String> = volumes.iter().filter(|v| !used.contains(*v)).collect();
    assert!(
        orphans.is_empty(),
        "orphaned volumes: {orphans:?} (used: {used:?})"
    );
    let data = site.sandbox.data();
    for name in instances {
        let file = data.join("instance").join(format!("{name}.json"));
        let meta: Value = serde_json::from_slice(&std::fs::read(&file).unwrap())
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
        assert_eq!(meta["name"], json!(name), "{}", file.display());
    }
    let known = std::fs::read_to_string(data.join("known_hosts")).unwrap();
    for name in instances {
        let lines = known
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .count();
        assert_eq!(lines, 1, "known_hosts lines for {name}:\n{known}");
    }
    println!(
        "concurrency: {} domains, {} volumes (1 template generation), {} metadata files, {} known_hosts lines; no orphan",
        domains.len(),
        volumes.len(),
        instances.len(),
        known.lines().filter(|l| !l.trim().is_empty()).count()
    );
}

/// Prints how often a module call of one run waited for the other (the `waited` each call returns).
fn report_collisions(runs: &[(&str, &virtup_e2e::Run)]) {
    let number_after = |text: &str, key: &str| -> Vec<f64> {
        text.match_indices(key)
            .filter_map(|(i, _)| {
                let rest = text[i + key.len()..].trim_start_matches([' ', ':', '"']);
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            })
            .collect()
    };
    for (label, r) in runs {
        let locks = number_after(&r.stdout, "\"lock_seconds\"");
        let holds = number_after(&r.stdout, "\"hold_seconds\"");
        let lock_waits: Vec<f64> = locks.iter().copied().filter(|s| *s >= 0.1).collect();
        let hold_waits: Vec<f64> = holds.iter().copied().filter(|s| *s > 0.0).collect();
        println!(
            "collisions ({label} run, {:.0}s): of {} virtup module calls, {} waited for a lock ({:.1}s in all), {} for a template being customized ({:.1}s in all)",
            r.elapsed.as_secs_f64(),
            locks.len(),
            lock_waits.len(),
            lock_waits.iter().fold(0.0, |a, b| a + b),
            hold_waits.len(),
            hold_waits.iter().fold(0.0, |a, b| a + b)
        );
    }
}

/// Searches every generated password and private key, and the passwords the runs set through the roles, in
/// the runs' output, the inventory, the sampled command lines and the files virtup and libvirt keep (the
/// secret files themselves excepted).
fn secrets_audit(
    site: &Site,
    runs: &[&virtup_e2e::Run],
    cmdlines: &BTreeSet<String>,
    samples: u64,
    inventory: &Value,
    given: &GivenPasswords,
) {
    let data = site.sandbox.data();
    let mut secrets = audit::secrets_of(&data);
    let passwords = secrets.iter().filter(|s| s.kind == "password").count();
    let keys = secrets.len() - passwords;
    assert!(
        passwords >= 1 && keys >= 5,
        "expected generated passwords and keys (user key, host keys) in {}: {passwords} passwords, {keys} keys",
        data.display()
    );
    let secret_files: BTreeSet<PathBuf> = secrets.iter().map(|s| s.file.clone()).collect();
    // The given passwords reached the modules (which keep what they are given as the guest's secret), and are
    // searched as they were given.
    for (dir, option, value) in &given.all {
        let file = data.join("secrets").join(dir).join(option);
        let stored = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            stored.trim() == value,
            "the {option} given for {dir} through the role is not what {} holds",
            file.display()
        );
        secrets.push(audit::Secret {
            file: format!("{option} given for {dir}").into(),
            kind: "given password",
            needles: vec![value.clone()],
        });
    }
    let mut haystacks = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        haystacks.push(Haystack::new(
            format!("site.yml run {i} stdout (-vvv)"),
            r.stdout.clone(),
        ));
        haystacks.push(Haystack::new(
            format!("site.yml run {i} stderr"),
            r.stderr.clone(),
        ));
    }
    haystacks.push(Haystack::new(
        "ansible-inventory --list",
        inventory.to_string(),
    ));
    let direct = run(
        in_repo("./virtup_inventory")
            .arg("--list")
            .env("VIRTUP_DATA_HOME", site.sandbox.data())
            .env("VIRTUP_CONFIG_HOME", site.sandbox.config()),
        Duration::from_secs(120),
    )
    .assert_ok("virtup_inventory --list");
    haystacks.push(Haystack::new("virtup_inventory --list", direct.stdout));
    haystacks.push(Haystack::new(
        format!("{} sampled command lines", cmdlines.len()),
        cmdlines.iter().cloned().collect::<Vec<_>>().join("\n"),
    ));
    let mut files = 0;
    for root in [
        site.sandbox.path().to_path_buf(),
        PathBuf::from("/var/log/libvirt"),
    ] {
        for f in audit::files_under(&root) {
            if !secret_files.contains(&f) {
                if let Some(h) = Haystack::file(&f) {
                    haystacks.push(h);
                    files += 1;
                }
            }
        }
    }
    let (domains, _) = hypervisor_state();
    for d in &domains {
        haystacks.push(Haystack::new(
            format!("domain XML of {d}"),
            virsh(&["dumpxml", "--inactive", "--security-info", d]),
        ));
    }
    // Every volume is private: config disks carry the guest's host private key to its first boot, template
    // generations and instance disks hold password hashes.
    let (_, volumes) = hypervisor_state();
    let (mut config_disks, mut generations, mut disks) = (0, 0, 0);
    for v in &volumes {
        let path = virsh(&["vol-path", "--pool", "default", v]);
        let mode = std::fs::metadata(path.trim()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "volume {v} has mode {mode:o}");
        if v.ends_with("-config.iso") {
            config_disks += 1;
        } else if v.starts_with(&format!("{TEMPLATE_DOMAIN}-g")) {
            generations += 1;
        } else {
            disks += 1;
        }
    }
    assert!(
        config_disks >= 4 && generations == 1 && disks >= 4,
        "expected the config disks, the template generation and the instance disks: {volumes:?}"
    );
    println!(
        "secrets audit: all {} volumes are 0600 ({config_disks} config disks, {generations} template generation, {disks} instance disks)",
        volumes.len()
    );
    let bytes: usize = haystacks.iter().map(|h| h.text.len()).sum();
    let hits = audit::search(&secrets, &haystacks);
    println!(
        "secrets audit: {passwords} stored passwords, {} passwords given through the roles and {keys} private keys searched in {} places ({files} files, {} domain XMLs, {} distinct command lines from {samples} samples; {:.1} MB): {} found",
        given.all.len(),
        haystacks.len(),
        domains.len(),
        cmdlines.len(),
        bytes as f64 / 1e6,
        hits.len()
    );
    assert!(hits.is_empty(), "secrets found: {hits:#?}");
}

/// No file of the project turns host key checking off, in any spelling (see
/// `audit::host_key_checking_offences`), committed or not yet.
#[test]
fn no_file_disables_host_key_checking() {
    let files = run(
        in_repo("git").args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]),
        Duration::from_secs(60),
    )
    .assert_ok("git ls-files")
    .stdout;
    let mut offenders = Vec::new();
    let mut read = 0;
    for f in files.split('\0').filter(|f| !f.is_empty()) {
        // Files deleted in the work tree are still listed: nothing to read.
        let Ok(bytes) = std::fs::read(virtup_e2e::repo_root().join(f)) else {
            continue;
        };
        read += 1;
        for offence in audit::host_key_checking_offences(f, &String::from_utf8_lossy(&bytes)) {
            offenders.push(format!("{f}:{offence}"));
        }
    }
    assert!(read > 100, "only {read} files read");
    assert!(
        offenders.is_empty(),
        "host key checking turned off in:\n{}",
        offenders.join("\n")
    );
}
