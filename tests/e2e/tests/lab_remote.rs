//! Layer 4 on two hypervisors: a template built on the controller and uploaded to a remote pool over
//! `qemu+ssh://`, customized there by its playbook and sealed through libvirt's volume streams, a clone
//! there prepared by virt-sysprep on a copy brought down and written back, its config's
//! `instance-playbook` run through the hypervisor, the clone proven through it, Ansible reaching it
//! with both SSH hops
//! checked strictly, a template name on two hypervisors with records apart, an instance name on one,
//! and a teardown that leaves nothing on either host.
//!
//! Needs `tests/lab/lab up --hosts 2` (`tests/run` brings the lab up so): the lab's `VIRTUP_LAB_URIS`
//! names the second hypervisor. Without it the test fails, it never skips.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command`; this black-box
// crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{
    in_repo, lab_home, pool_volumes_on, recap_counts, run, run_ok, tail, venv_bin, virsh_on,
    Sandbox,
};

const TEMPLATE: &str = "e2e-remote";
const INSTANCE: &str = "e2e-r1";

/// The lab's second hypervisor, as `lab up --hosts 2` wrote it into the lab env.
fn remote_uri() -> String {
    lab_home();
    let uris = std::env::var("VIRTUP_LAB_URIS").unwrap_or_default();
    uris.split_whitespace()
        .find(|u| u.starts_with("qemu+ssh://"))
        .unwrap_or_else(|| {
            panic!("VIRTUP_LAB_URIS=`{uris}` names no remote hypervisor: run `tests/lab/lab up --hosts 2`")
        })
        .to_owned()
}

/// The lab's own hypervisor.
const LOCAL: &str = "qemu:///system";

/// Removes what the test made on both hypervisors, however it ends.
struct Cleanup<'a> {
    sb: &'a Sandbox,
    uri: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        // A removal that fails is said (a domain left behind would be foreign to the next run's sandbox).
        let say = |what: &str, (doc, _): (Value, virtup_e2e::Run)| {
            if doc["failed"] == json!(true) {
                eprintln!("cleanup: removing {what} failed: {doc}");
            }
        };
        say(
            INSTANCE,
            self.sb.module(
                "virtup_instance",
                &json!({"name": INSTANCE, "state": "absent", "uri": self.uri, "wait_timeout": 120}),
            ),
        );
        for uri in [self.uri.as_str(), LOCAL] {
            say(
                &format!("{TEMPLATE} on {uri}"),
                self.sb.module(
                    "virtup_template",
                    &json!({"name": TEMPLATE, "state": "absent", "uri": uri}),
                ),
            );
        }
    }
}

/// How many host keys the data dir's known_hosts pins under a remote scope of the template.
fn remote_template_pins(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.data().join("known_hosts"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("VIRTUP-{TEMPLATE}@")))
        .count()
}

/// The remote template through the role `virtup_template`, with a playbook that leaves a mark in it.
fn remote_template_role(sb: &Sandbox, remote: &str) -> virtup_e2e::Run {
    let mark = sb.path().join("mark.yml");
    std::fs::write(
        &mark,
        r#"- name: Leave a mark in the template
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: Write the mark
      ansible.builtin.copy:
        dest: /etc/virtup-remote-mark
        content: "customized through the hypervisor\n"
        mode: "0644"
    # The seal deletes /var/lib/dhcp/* (the template's leases): a clone without this file was sealed.
    - name: Make the leases directory (this guest's DHCP client keeps its leases elsewhere)
      ansible.builtin.file:
        path: /var/lib/dhcp
        state: directory
        mode: "0755"
    - name: Write a file only the seal removes
      ansible.builtin.copy:
        dest: /var/lib/dhcp/virtup-seal-probe
        content: "unsealed\n"
        mode: "0644"
    - name: Say so
      ansible.builtin.debug:
        msg: virtup-remote-mark written
"#,
    )
    .unwrap();
    let play = sb.path().join("remote-template.yml");
    let templates = json!([{"name": TEMPLATE, "os_version": "debian-12", "uri": remote,
                            "wait_timeout": 900, "playbook": mark}]);
    std::fs::write(
        &play,
        format!(
            "- name: The remote template\n  hosts: localhost\n  connection: local\n  gather_facts: false\n  \
             roles:\n    - role: virtup.virtup.virtup_template\n      \
             vars: {{virtup_template_templates: {templates}}}\n"
        ),
    )
    .unwrap();
    let mut cmd = ansible_playbook(sb);
    // The nested run prints the template playbook's output at -v.
    cmd.arg("-v").arg(&play);
    run(&mut cmd, Duration::from_secs(1800))
}

/// The remote clone through the role `virtup_instance`, with the config's `instance-playbook` (in the
/// template's `templates.d` section, found in the config's `playbooks/` dir as virt-up searches).
fn remote_instance_role(sb: &Sandbox, instance: &Value) -> virtup_e2e::Run {
    let config = sb.config();
    std::fs::create_dir_all(config.join("templates.d")).unwrap();
    std::fs::create_dir_all(config.join("playbooks")).unwrap();
    std::fs::write(
        config.join("templates.d/remote.cfg"),
        format!("[{TEMPLATE}]\ninstance-playbook = imark.yml\n"),
    )
    .unwrap();
    std::fs::write(
        config.join("playbooks/imark.yml"),
        r#"- name: Leave a mark in the new instance
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: Write the mark
      ansible.builtin.copy:
        dest: /etc/virtup-instance-mark
        content: "{{ inventory_hostname }} from its instance-playbook\n"
        mode: "0644"
    - name: Say so
      ansible.builtin.debug:
        msg: virtup-instance-mark written
"#,
    )
    .unwrap();
    let play = sb.path().join("remote-instance.yml");
    std::fs::write(
        &play,
        format!(
            "- name: The remote instance\n  hosts: localhost\n  connection: local\n  gather_facts: false\n  \
             roles:\n    - role: virtup.virtup.virtup_instance\n      \
             vars: {{virtup_instance_instances: [{instance}]}}\n"
        ),
    )
    .unwrap();
    let mut cmd = ansible_playbook(sb);
    // The nested run prints the instance-playbook's output at -v.
    cmd.arg("-v").arg(&play);
    run(&mut cmd, Duration::from_secs(1800))
}

/// The role run again: the template task is `ok` and nothing changed.
fn assert_role_changes_nothing(sb: &Sandbox, remote: &str, what: &str) {
    let again = remote_template_role(sb, remote);
    assert!(
        again.status.success()
            && recap_counts(&again.stdout)
                .iter()
                .all(|(_, changed, failed, _)| *changed == 0 && *failed == 0),
        "{what}:\n{}\n{}",
        tail(&again.stdout, 60),
        tail(&again.stderr, 20)
    );
}

fn ansible_playbook(sb: &Sandbox) -> Command {
    let mut c = in_repo(venv_bin("ansible-playbook"));
    c.env("VIRTUP_CONFIG_HOME", sb.config())
        .env("VIRTUP_DATA_HOME", sb.data())
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_NOCOLOR", "1");
    c
}

fn ansible(sb: &Sandbox) -> Command {
    let mut c = in_repo(venv_bin("ansible"));
    c.env("VIRTUP_CONFIG_HOME", sb.config())
        .env("VIRTUP_DATA_HOME", sb.data())
        .env("ANSIBLE_HOST_KEY_CHECKING", "True");
    c
}

#[test]
fn a_remote_hypervisor_gets_its_template_and_clone_through_libvirt_and_ssh_hops() {
    let remote = remote_uri();
    let sb = Sandbox::new();
    let _cleanup = Cleanup {
        sb: &sb,
        uri: remote.clone(),
    };

    // 1. The template is built here and uploaded into the remote pool, booted there, customized by its
    // playbook through the hypervisor (both hops pinned), and sealed through libvirt's volume streams
    // (the pool has no path here); a second run changes nothing.
    let built = remote_template_role(&sb, &remote);
    let counts = recap_counts(&built.stdout);
    assert!(
        built.status.success()
            && counts
                .iter()
                .any(|(h, changed, failed, _)| h == "localhost" && *changed > 0 && *failed == 0)
            && built.stdout.contains("virtup-remote-mark written"),
        "the remote template through the role:\n{}\n{}",
        tail(&built.stdout, 80),
        tail(&built.stderr, 20)
    );
    println!(
        "template built, uploaded, customized and sealed remotely in {:?}",
        built.elapsed
    );
    assert!(
        remote_template_pins(&sb) == 1,
        "the remote template's key is pinned under its scope `VIRTUP-{TEMPLATE}@<id>`"
    );
    let info = virsh_on(&remote, &["dominfo", &format!("VIRTUP-{TEMPLATE}")]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("State:") && l.contains("shut off")),
        "the sealed template is shut off: {info}"
    );
    let volume = format!("VIRTUP-{TEMPLATE}-g1.qcow2");
    assert!(
        pool_volumes_on(&remote).contains(&volume),
        "{volume} on {remote}"
    );
    assert!(
        !pool_volumes_on(LOCAL).contains(&volume),
        "the template went to the remote pool only"
    );
    let info = virsh_on(&remote, &["vol-dumpxml", &volume, "--pool", "default"]);
    assert!(
        info.contains("<format type='qcow2'/>"),
        "the uploaded image is seen as qcow2: {info}"
    );
    assert_role_changes_nothing(&sb, &remote, "a second run of the role");
    // Each remote hypervisor keeps a template's records apart: the same name is built on the lab's
    // own hypervisor too, and removing it there leaves the remote one, its records and its secrets
    // whole (the remote run still has nothing to do).
    let local_args =
        json!({"name": TEMPLATE, "os_version": "debian-12", "uri": LOCAL, "wait_timeout": 900});
    let (local, out) = sb.module("virtup_template", &local_args);
    assert!(
        out.status.success() && local["changed"] == json!(true),
        "{local}\n{}",
        out.stderr
    );
    println!("the same template built on {LOCAL} in {:?}", out.elapsed);
    assert!(
        pool_volumes_on(LOCAL).contains(&volume),
        "{volume} on {LOCAL}"
    );
    let doc = inventory_list(&sb, "virtup_inventory --list with the template on both");
    let templates = doc["virtup_templates"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        templates.len() == 2
            && templates.contains(&json!(format!("VIRTUP-{TEMPLATE}")))
            && templates.iter().any(|h| h
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("VIRTUP-{TEMPLATE}@"))),
        "one template host per hypervisor: {doc}"
    );
    let gone = sb.ok(
        "virtup_template",
        &json!({"name": TEMPLATE, "state": "absent", "uri": LOCAL}),
    );
    assert_eq!(gone["changed"], json!(true), "{gone}");
    assert!(
        !pool_volumes_on(LOCAL).contains(&volume),
        "removed from {LOCAL}"
    );
    assert!(
        pool_volumes_on(&remote).contains(&volume),
        "still on {remote}"
    );
    assert_role_changes_nothing(&sb, &remote, "the role after the local template went");

    // 2. A clone on the remote hypervisor through the role, proven through it (the guest's NAT
    // address is reachable only from there). It takes the sysprep path: virt-sysprep runs here on a
    // copy of its overlay (pointed at a copy of the generation), which goes back into the same remote
    // volume. The config's `instance-playbook` then runs on it through the hypervisor.
    let instance_args = json!({"name": INSTANCE, "template": TEMPLATE, "uri": remote,
                               "customize": "sysprep", "wait_timeout": 900});
    let made = remote_instance_role(&sb, &instance_args);
    assert!(
        made.status.success()
            && recap_counts(&made.stdout)
                .iter()
                .any(|(h, changed, failed, _)| h == "localhost" && *changed > 0 && *failed == 0)
            && made.stdout.contains("virtup-instance-mark written"),
        "the remote sysprep clone and its instance-playbook through the role:\n{}\n{}",
        tail(&made.stdout, 80),
        tail(&made.stderr, 20)
    );
    println!(
        "sysprep clone made, proven over two hops and its instance-playbook run in {:?}",
        made.elapsed
    );
    assert!(virsh_on(&remote, &["list", "--name"])
        .lines()
        .any(|l| l.trim() == INSTANCE));
    assert!(!virsh_on(LOCAL, &["list", "--all", "--name"])
        .lines()
        .any(|l| l.trim() == INSTANCE));
    let disks = virsh_on(&remote, &["domblklist", INSTANCE]);
    assert!(
        disks
            .lines()
            .filter(|l| l.trim_start().starts_with("vd"))
            .count()
            == 1,
        "a sysprep clone has its own disk and no config disk: {disks}"
    );
    let overlay = virsh_on(
        &remote,
        &[
            "vol-dumpxml",
            &format!("{INSTANCE}.qcow2"),
            "--pool",
            "default",
        ],
    );
    assert!(
        overlay.contains("<backingStore>") && overlay.contains(&format!("/{volume}</path>")),
        "the overlay written back is still linked to the generation on the hypervisor: {overlay}"
    );
    let scratch: Vec<_> = std::fs::read_dir(sb.data().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        scratch
            .iter()
            .all(|n| !n.to_string_lossy().starts_with("run-")),
        "the copies brought down for virt-sysprep are gone: {scratch:?}"
    );
    let again = sb.ok("virtup_instance", &instance_args);
    assert_eq!(again["changed"], json!(false), "{again}");

    // 3. The same name on the other hypervisor is refused, before anything is made there.
    let (doc, _) = sb.module(
        "virtup_instance",
        &json!({"name": INSTANCE, "template": TEMPLATE, "uri": LOCAL}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(
        doc["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("lives on `{remote}`")),
        "{doc}"
    );

    // 4. Ansible reaches the guest through the dynamic inventory: the hypervisor hop and the guest
    // are both checked strictly against pinned keys.
    let doc = inventory_list(&sb, "virtup_inventory --list");
    let args = doc["_meta"]["hostvars"][INSTANCE]["ansible_ssh_common_args"]["__ansible_unsafe"]
        .as_str()
        .unwrap_or_else(|| panic!("no ssh args for {INSTANCE}: {doc}"))
        .to_owned();
    let host = remote
        .trim_start_matches("qemu+ssh://")
        .rsplit('@')
        .next()
        .and_then(|h| h.split(['/', ':']).next())
        .unwrap();
    assert_eq!(
        group_hosts(&doc, host),
        [format!("VIRTUP-{TEMPLATE}@"), INSTANCE.to_owned()],
        "a group per hypervisor, the remote template named by its records' scope: {doc}"
    );
    assert!(args.contains("StrictHostKeyChecking=yes"), "{args}");
    assert!(
        args.contains("ProxyCommand=") && args.matches("StrictHostKeyChecking=yes").count() == 2,
        "both hops are checked strictly: {args}"
    );
    // The clone carries what the template playbook wrote (the sealed image came back up intact) and
    // not what the seal removes (the seal ran on the remote template's image).
    let mark = run(
        ansible(&sb).args([
            "-i",
            "virtup_inventory",
            INSTANCE,
            "-m",
            "shell",
            "-a",
            "cat /etc/virtup-remote-mark /etc/virtup-instance-mark; test -e /var/lib/dhcp/virtup-seal-probe || echo seal-probe-gone",
        ]),
        Duration::from_secs(300),
    );
    assert!(
        mark.status.success()
            && mark.stdout.contains(&format!("{INSTANCE} | CHANGED"))
            && mark.stdout.contains("customized through the hypervisor")
            && mark.stdout.contains(&format!("{INSTANCE} from its instance-playbook"))
            && mark.stdout.contains("seal-probe-gone"),
        "a command through the hypervisor failed, a mark (template's, instance-playbook's) is missing or it was not sealed:\n{}\n{}",
        mark.stdout,
        mark.stderr
    );

    // 5. The remote libvirtd crashes: the inventory still answers, with a warning naming the host
    // and the instance in state `unknown`; a module call there fails naming the URI and changes
    // nothing; once the daemon is back, the next run converges with nothing to do.
    let host_name = host.to_owned();
    let pid_file = lab_home().join(format!("hosts/{host_name}/run/libvirtd.pid"));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    run_ok(
        Command::new("kill").args(["-KILL", pid.trim()]),
        Duration::from_secs(30),
        "kill the remote libvirtd",
    );
    let restart = Restart(host_name.clone());
    let doc = inventory_list(&sb, "virtup_inventory --list with the remote libvirtd down");
    let warnings = doc["_meta"]["virtup_warnings"].to_string();
    assert!(
        warnings.contains(&format!("cannot list `{remote}`")),
        "{warnings}"
    );
    assert_eq!(
        doc["_meta"]["hostvars"][INSTANCE]["virtup_state"]["__ansible_unsafe"],
        json!("unknown"),
        "{doc}"
    );
    let (failed, _) = sb.module("virtup_instance", &instance_args);
    assert_eq!(failed["failed"], json!(true), "{failed}");
    assert_eq!(failed["changed"], json!(false), "{failed}");
    assert!(
        failed["msg"].as_str().unwrap().contains(&remote),
        "{failed}"
    );
    drop(restart);
    let again = sb.ok("virtup_instance", &instance_args);
    assert_eq!(again["changed"], json!(false), "{again}");

    // 6. Removal without a `uri` goes where the instance lives. The template, now without a clone,
    // is known to be remote only from its ownership record: the inventory still lists it in its
    // hypervisor's group, and `virt-up --delete --all` finds it there and deletes it.
    let gone = sb.ok(
        "virtup_instance",
        &json!({"name": INSTANCE, "state": "absent", "wait_timeout": 300}),
    );
    assert_eq!(gone["changed"], json!(true), "{gone}");
    let doc = inventory_list(
        &sb,
        "virtup_inventory --list with only the remote template left",
    );
    assert_eq!(
        group_hosts(&doc, host),
        [format!("VIRTUP-{TEMPLATE}@")],
        "a remote template without clones is still listed: {doc}"
    );
    let deleted = run(
        in_repo(virtup_e2e::repo_root().join("bin/virt-up"))
            .args(["--delete", "--all", "--yes"])
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data()),
        Duration::from_secs(300),
    );
    assert!(
        deleted.status.success()
            && format!("{}{}", deleted.stdout, deleted.stderr).contains(TEMPLATE),
        "virt-up --delete --all: {}\n{}\n{}",
        deleted.status,
        deleted.stdout,
        deleted.stderr
    );
    let left: Vec<String> = pool_volumes_on(&remote)
        .into_iter()
        .filter(|v| v.contains(TEMPLATE) || v.contains(INSTANCE))
        .collect();
    assert!(left.is_empty(), "left on {remote}: {left:?}");
    assert_eq!(
        remote_template_pins(&sb),
        0,
        "the remote template's pin went with it"
    );
    let domains = virsh_on(&remote, &["list", "--all", "--name"]);
    assert!(
        !domains.contains(INSTANCE) && !domains.contains(TEMPLATE),
        "domains left on {remote}: {domains}"
    );
}

/// Starts a lab hypervisor's libvirtd again, however the test goes on (running guests survive).
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        let lab = virtup_e2e::repo_root().join("tests/lab/lab");
        let r = run(
            Command::new(lab).args(["restart-libvirtd", "--host", &self.0]),
            Duration::from_secs(300),
        );
        assert!(
            r.status.success() || std::thread::panicking(),
            "restart-libvirtd --host {}: {}",
            self.0,
            r.stderr
        );
    }
}

/// The hosts of hypervisor `host`'s inventory group, a remote template's hypervisor id cut off after
/// its `@` (the id is a digest this black-box test does not compute).
fn group_hosts(doc: &Value, host: &str) -> Vec<String> {
    doc[format!("virtup_hypervisor_{host}")]["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no group for {host}: {doc}"))
        .iter()
        .map(|h| {
            let h = h.as_str().unwrap_or_default();
            match h.split_once('@') {
                Some((name, id)) if id.len() == 8 => format!("{name}@"),
                _ => h.to_owned(),
            }
        })
        .collect()
}

/// `virtup_inventory` at the repository root, as `scripts/build` installs it.
/// `virtup_inventory --list` in the sandbox's dirs: its document, and nothing on stderr (warnings
/// belong in the document).
fn inventory_list(sb: &Sandbox, what: &str) -> Value {
    let listed = run_ok(
        in_repo(repo_inventory())
            .arg("--list")
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data()),
        Duration::from_secs(120),
        what,
    );
    assert!(listed.stderr.is_empty(), "{what}: {}", listed.stderr);
    serde_json::from_str(&listed.stdout).unwrap()
}

fn repo_inventory() -> std::path::PathBuf {
    let p = virtup_e2e::repo_root().join("virtup_inventory");
    assert!(p.exists(), "{} is missing: run scripts/build", p.display());
    p
}
