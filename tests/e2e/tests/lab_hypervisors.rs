//! Lab: `playbooks/site.yml` across two hypervisors, the example inventory `examples/hypervisors` (the lab's
//! own and h2 over `qemu+ssh://`), then the dynamic inventory and Ansible through it.
//!
//! One test, because every step needs the previous one's guests: the first run builds the template on both
//! hypervisors at once and places four instances (two named, two spread), each on one hypervisor, and h2's
//! libvirtd is killed once db2's QEMU runs on h2: the run fails h2's hosts only and finishes the lab's
//! hypervisor; once h2 is back, the second run converges, changing nothing the first finished and moving
//! nothing; Ansible pings all four through `virtup_inventory` with strict keys on both hops; the third run
//! changes nothing anywhere and moves nothing; Molecule scenario `hypervisors` puts a platform on each
//! hypervisor; teardown leaves nothing on either hypervisor (also when an assertion fails, via a guard).
//!
//! Needs `tests/lab/lab up --hosts 2` (`tests/run` brings the lab up so); without h2 it fails, never skips.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command`; this black-box
// crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use virtup_e2e::{
    in_repo, lab_home, pool_volumes_on, recap, recap_counts, run, run_ok, tail, venv_bin, virsh_on,
    Sandbox,
};

const INSTANCES: [&str; 4] = ["db1", "db2", "web1", "web2"];
/// The platforms of Molecule scenario `hypervisors` (molecule/hypervisors/molecule.yml), on LOCAL and REMOTE.
const PLATFORMS: [&str; 2] = ["mol-h1", "mol-h2"];
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
        self.playbook_with(playbook, &[])
    }

    /// The same, with more arguments after the playbook.
    fn playbook_with(&self, playbook: &str, extra: &[&str]) -> virtup_e2e::Run {
        let r = run(
            self.command("ansible-playbook")
                .args([
                    "-i",
                    "examples/hypervisors",
                    "-i",
                    "virtup_inventory",
                    playbook,
                ])
                .args(extra),
            Duration::from_secs(1800),
        );
        println!(
            "ansible-playbook {playbook} {} took {:.1}s\n{}",
            extra.join(" "),
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
        // Always leave both hypervisors as they were, even when an assertion failed half-way: Molecule's
        // platforms first (a template with clones is never removed), then the site.
        for (name, uri) in PLATFORMS.into_iter().zip([LOCAL, REMOTE]) {
            // Never a second panic here (that would abort before the teardown below).
            let gone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.sandbox.module(
                    "virtup_instance",
                    &serde_json::json!({"name": name, "uri": uri, "state": "absent", "wait_timeout": 120}),
                )
            }));
            match gone {
                Ok((r, _)) if r["failed"] != true => {}
                Ok((r, _)) => eprintln!("removing {name} on {uri} failed: {r}; teardown goes on"),
                Err(_) => eprintln!("removing {name} on {uri} failed; teardown goes on"),
            }
        }
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

/// Tells the watcher thread to stop when dropped, a panic included.
struct StopWatcher<'a>(&'a AtomicBool);

impl Drop for StopWatcher<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
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
        INSTANCES
            .iter()
            .chain(&PLATFORMS)
            .chain(&[TEMPLATE_DOMAIN])
            .any(|n| {
                name == *n
                    || name.starts_with(&format!("{n}."))
                    || name.starts_with(&format!("{n}-"))
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

/// The `guest=` names of every QEMU process on this machine (the lab's and h2's).
fn running_guests() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter_map(|c| {
            let c = String::from_utf8_lossy(&c).into_owned();
            let at = c.find("guest=")? + "guest=".len();
            c[at..].split([',', '\0']).next().map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Kills h2's libvirtd (SIGKILL, as a crash would) as soon as `instance`'s QEMU runs, polling the process
/// table until `done`; how long after the start it did, or None when the instance never ran. Its guests
/// live on, as they do when a real libvirtd crashes.
fn kill_h2_libvirtd_once_running(instance: &str, done: &AtomicBool) -> Option<Duration> {
    let start = Instant::now();
    let marker = format!("guest={instance},");
    while !done.load(Ordering::SeqCst) {
        let running = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
            });
        if running {
            let pid_file = lab_home().join("hosts/h2/run/libvirtd.pid");
            let pid = std::fs::read_to_string(&pid_file)
                .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
            // Which guests ran when h2's libvirtd died: the rerun's path depends on it.
            println!("guests running at the kill: {:?}", running_guests());
            run_ok(
                Command::new("kill").args(["-KILL", pid.trim()]),
                Duration::from_secs(30),
                "kill h2's libvirtd",
            );
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
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
    // dynamic inventory; h2's libvirtd is killed as soon as db2's QEMU runs there (the module is then booting
    // or waiting for it). The run fails h2's hosts alone; the lab's hypervisor finishes its work.
    let restart = Restart;
    let done = AtomicBool::new(false);
    let (first, killed_after) = std::thread::scope(|s| {
        let watcher = s.spawn(|| kill_h2_libvirtd_once_running("db2", &done));
        // Stops the watcher however the run ends: the scope joins it, and would wait for ever.
        let stop = StopWatcher(&done);
        let first = site.playbook("playbooks/site.yml");
        drop(stop);
        (first, watcher.join().expect("watcher"))
    });
    let killed_after = killed_after.unwrap_or_else(|| {
        panic!(
            "db2's QEMU never ran on h2, so h2's libvirtd was not killed mid-run:\n{}\n{}",
            tail(&first.stdout, 120),
            tail(&first.stderr, 30)
        )
    });
    println!(
        "h2's libvirtd killed {:.1}s into the first run",
        killed_after.as_secs_f64()
    );
    let counts = recap_counts(&first.stdout);
    let of = |host: &str| counts.iter().find(|c| c.0 == host).cloned();
    assert!(
        !first.status.success()
            && of("hv2").is_some_and(|(_, _, failed, unreachable)| failed + unreachable > 0)
            && of("hv1").is_some_and(|(_, _, failed, unreachable)| failed + unreachable == 0)
            && of("db1").is_some_and(|(_, _, failed, unreachable)| failed + unreachable == 0),
        "with h2's libvirtd killed mid-run only hv2 and its guests fail:\n{}\n{}",
        tail(&first.stdout, 120),
        tail(&first.stderr, 30)
    );

    // 2. h2 is back: the rerun converges, the template on both hypervisors, four instances running; what
    // the first run finished changes nothing, and what it placed stays where it is.
    drop(restart);
    let before_rerun = site.placement();
    let again = site.playbook("playbooks/site.yml");
    assert!(
        again.status.success(),
        "site.yml after h2's libvirtd came back:\n{}\n{}",
        tail(&again.stdout, 120),
        tail(&again.stderr, 30)
    );
    let counts = recap_counts(&again.stdout);
    for host in ["hv1", "db1"] {
        assert!(
            counts.iter().any(|c| c.0 == host && c.1 == 0),
            "{host} changed in the rerun, after the first run finished it:\n{}",
            recap(&again.stdout)
        );
    }
    let placed = site.placement();
    for (name, host) in &before_rerun {
        assert_eq!(
            placed.get(name),
            Some(host),
            "{name} moved in the rerun: {before_rerun:?} -> {placed:?}"
        );
    }
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

    // 3. Ansible reaches every guest through the dynamic inventory, both hops checked strictly.
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

    // 4. The third run changes nothing on either hypervisor or on h2's guests, and moves nothing. The
    // lab's own guests were post-configured twice already (the first run finished them, the second
    // changed nothing there); h2's, behind the hypervisor whose libvirtd was killed, only once: they
    // take their second post-configuration here, the lab's are left out (about 50 s saved).
    let on_h2: Vec<&str> = placed
        .iter()
        .filter(|(_, host)| host.as_str() == "hv2")
        .map(|(name, _)| name.as_str())
        .collect();
    let limit = std::iter::once("virtup_hypervisors")
        .chain(on_h2.iter().copied())
        .collect::<Vec<_>>()
        .join(":");
    let third = site.playbook_with("playbooks/site.yml", &["--limit", &limit]);
    assert_nothing_changed(&third, "the third site.yml run");
    let hosts: Vec<String> = recap_counts(&third.stdout)
        .into_iter()
        .map(|c| c.0)
        .collect();
    let mut expected: Vec<String> = ["hv1", "hv2"]
        .into_iter()
        .chain(on_h2.iter().copied())
        .map(str::to_owned)
        .collect();
    expected.sort();
    assert_eq!(
        hosts,
        expected,
        "the third run reached both hypervisors and h2's guests:\n{}",
        recap(&third.stdout)
    );
    assert_eq!(site.placement(), placed, "placed once, kept");

    // 5. Molecule with one platform on each hypervisor (scenario `hypervisors`), on the site's templates:
    // the platform on h2 is cloned there (its QEMU log is h2's) and reached through h2.
    let started = std::time::SystemTime::now();
    let ephemeral = site.sandbox.path().join("molecule-hypervisors");
    let mol = virtup_e2e::molecule_test(&site.sandbox, "hypervisors", &ephemeral);
    println!(
        "molecule test -s hypervisors took {:.1}s",
        mol.elapsed.as_secs_f64()
    );
    virtup_e2e::assert_molecule_passed(
        &mol,
        "hypervisors",
        &["create", "converge", "verify", "destroy"],
    );
    virtup_e2e::assert_molecule_checks_host_keys(&ephemeral);
    // h2's /var/log/libvirt is this directory of the lab's (tests/lab/lab).
    let log = lab_home().join("hosts/h2/log/qemu/mol-h2.log");
    let ran = std::fs::metadata(&log)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= started);
    assert!(ran, "mol-h2 did not run on h2: no fresh {}", log.display());
    assert_eq!(
        virtup_e2e::template_task_changed(&mol, "debian-12"),
        [false, false],
        "the scenario found the site's template on both hypervisors as declared:\n{}",
        tail(&mol.stdout, 150)
    );

    // 6. Teardown leaves nothing on either hypervisor.
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
