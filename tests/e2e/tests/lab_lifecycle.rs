//! Layer 4: templates and instances on real libvirt and real guests: build, clone, SSH with pinned keys, lifecycle;
//! the passwords given to the modules appear in none of their output.

// The e2e crate depends on no virtup crate, so it spawns the inventory binary with std.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeSet;

use serde_json::{json, Value};
use virtup_e2e::{lab_home, pool_volumes, ssh_instance, virsh, Sandbox};

/// Removes what a test defined, whatever happens to the test.
struct Cleanup<'a> {
    sb: &'a Sandbox,
    instances: Vec<String>,
    templates: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for i in &self.instances {
            let _ = self.sb.module(
                "virtup_instance",
                &json!({"name": i, "state": "absent", "wait_timeout": 120}),
            );
        }
        for t in &self.templates {
            let _ = self.sb.module(
                "virtup_template",
                &json!({"name": t, "state": "absent", "wait_timeout": 120}),
            );
        }
    }
}

fn changed(doc: &Value) -> bool {
    doc["changed"] == json!(true)
}

/// Every secret file virtup generated for this sandbox.
fn secrets(sb: &Sandbox) -> Vec<String> {
    let mut found = Vec::new();
    let roots = [
        sb.data().join("secrets"),
        sb.data().join("sshkeys"),
        sb.data().join("hostkeys"),
    ];
    for root in roots {
        for entry in walk(&root) {
            let name = entry.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".pub") {
                continue;
            }
            let text = std::fs::read_to_string(&entry).unwrap();
            let meta = std::fs::metadata(&entry).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o077,
                0,
                "{} is readable by others",
                entry.display()
            );
            // Private keys are checked line by line (their base64 body), passwords whole.
            if text.contains("PRIVATE KEY") {
                found.extend(text.lines().filter(|l| l.len() > 40).map(str::to_owned));
            } else {
                found.push(text.trim().to_owned());
            }
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn template_and_instance_lifecycle_on_real_guests() {
    lab_home();
    let sb = Sandbox::new();
    let mut cleanup = Cleanup {
        sb: &sb,
        instances: vec![],
        templates: vec![],
    };
    let tpl = "e2e-deb";
    cleanup.templates.push(tpl.into());
    let foreign = format!("e2e-foreign-{}.qcow2", std::process::id());
    virsh(&[
        "vol-create-as",
        "default",
        &foreign,
        "1M",
        "--format",
        "qcow2",
    ]);

    // Passwords given to the modules (random per run), searched for in everything they print.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let given: Vec<String> = ["tpl-user", "tpl-root", "inst-user", "inst-root"]
        .iter()
        .map(|what| format!("Given-{what}-{:x}-{stamp}", std::process::id()))
        .collect();
    let mut printed = String::new();

    // Template: check → real → check gives changed, changed, unchanged.
    let t_args = json!({"name": tpl, "os_version": "debian-12", "memory": 512,
                        "password": given[0], "root_password": given[1]});
    let mut check = t_args.clone();
    check["_ansible_check_mode"] = json!(true);
    let before = pool_volumes();
    assert!(changed(&sb.ok("virtup_template", &check)));
    assert_eq!(pool_volumes(), before, "check mode touched the pool");
    // Eight concurrent real runs of the same template: one builds, the others wait and find it built.
    let runs: Vec<(Value, virtup_e2e::Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| sb.module("virtup_template", &t_args)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (doc, out) in &runs {
        assert!(
            out.status.success() && doc["failed"] != json!(true),
            "{doc}\n{}",
            out.stderr
        );
        printed += &format!("{doc}\n{}\n{}\n", out.stdout, out.stderr);
    }
    let builders: Vec<&Value> = runs.iter().map(|(d, _)| d).filter(|d| changed(d)).collect();
    assert_eq!(builders.len(), 1, "exactly one of 8 concurrent runs builds");
    let builds = runs
        .iter()
        .filter(|(_, o)| o.stderr.contains("virtup_template: built"))
        .count();
    println!(
        "8 concurrent template runs: {builds} build(s); longest run {:?}",
        runs.iter().map(|(_, o)| o.elapsed).max().unwrap()
    );
    assert_eq!(builds, 1);
    let t1 = builders[0].clone();
    assert_eq!(t1["template"]["generation"], json!(1));
    let t1_check = sb.ok("virtup_template", &check);
    assert!(!changed(&t1_check), "{t1_check}");
    let (again, out) = sb.module("virtup_template", &t_args);
    assert!(!changed(&again));
    println!("template no-op run: {:?}", out.elapsed);

    // Bad inputs fail clearly and leave nothing behind.
    let before = pool_volumes();
    let domains_before = virsh(&["list", "--all", "--name"]);
    for (args, needle) in [
        (
            json!({"name": "e2e-bad1", "os_version": "no-such-os"}),
            "no-such-os",
        ),
        (
            json!({"name": "e2e-bad2", "image": "/nonexistent/disk.qcow2", "checksum": format!("sha256:{}", "0".repeat(64))}),
            "image",
        ),
        (
            json!({"name": "e2e-bad3", "image": lab_home().join("images/cloud/debian-12-cloud.qcow2"), "checksum": format!("sha256:{}", "0".repeat(64))}),
            "checksum",
        ),
    ] {
        let (doc, _) = sb.module("virtup_template", &args);
        assert_eq!(doc["failed"], json!(true), "{args}: {doc}");
        assert!(
            doc["msg"].as_str().unwrap().contains(needle),
            "{args}: {doc}"
        );
    }
    assert_eq!(pool_volumes(), before, "a failed build left volumes");
    assert_eq!(
        virsh(&["list", "--all", "--name"]),
        domains_before,
        "a failed build defined a domain"
    );

    // Instance: check → real → check.
    let name = "e2e-web1";
    cleanup.instances.push(name.into());
    let i_args = json!({"name": name, "template": tpl, "wait_timeout": 900,
                        "password": given[2], "root_password": given[3]});
    let mut i_check = i_args.clone();
    i_check["_ansible_check_mode"] = json!(true);
    assert!(changed(&sb.ok("virtup_instance", &i_check)));
    // Two runs asking for the same instance at once create it once; both end with it reachable.
    let pair: Vec<(Value, virtup_e2e::Run)> = std::thread::scope(|s| {
        let a = s.spawn(|| sb.module("virtup_instance", &i_args));
        let b = s.spawn(|| sb.module("virtup_instance", &i_args));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for (doc, out) in &pair {
        assert!(
            out.status.success() && doc["failed"] != json!(true),
            "{doc}\n{}",
            out.stderr
        );
        printed += &format!("{doc}\n{}\n{}\n", out.stdout, out.stderr);
    }
    assert_eq!(
        pair.iter().filter(|(d, _)| changed(d)).count(),
        1,
        "exactly one of two runs creates"
    );
    let (created, out) = pair.into_iter().find(|(d, _)| changed(d)).unwrap();
    println!(
        "instance create + boot to pinned SSH: {:?}; {}",
        out.elapsed,
        out.stderr.trim()
    );
    assert!(!changed(&sb.ok("virtup_instance", &i_check)));
    let again = sb.ok("virtup_instance", &i_args);
    assert!(!changed(&again), "{again}");
    let mac = created["instance"]["mac"].as_str().unwrap().to_owned();

    // Inside the guest: its own hostname and identity, the login user with passwordless sudo.
    let facts = ssh_instance(&created, "hostname; cat /etc/machine-id; sudo -n true && echo sudo-ok; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
    let lines: Vec<&str> = facts.lines().collect();
    assert_eq!(lines[0], name);
    assert_eq!(lines[1].len(), 32, "machine-id: {facts}");
    assert_eq!(lines[2], "sudo-ok");
    assert!(
        lines[3].contains(
            created["instance"]["host_key_fingerprint"]
                .as_str()
                .unwrap()
        ),
        "{facts}"
    );

    // Secrets appear in no output, and sit only in 0600 files; the given passwords are among them.
    let all_output = format!("{t1}{t1_check}{created}{again}\n{printed}");
    let secrets = secrets(&sb);
    for s in &secrets {
        assert!(
            !all_output.contains(s),
            "a secret leaked into module output"
        );
    }
    for (i, g) in given.iter().enumerate() {
        assert!(
            secrets.contains(g),
            "given password {i} was not kept as a secret"
        );
        assert!(
            !all_output.contains(g.as_str()),
            "given password {i} leaked into module output"
        );
    }

    // Memory changes reach the definition at once and the guest at its next boot, with a warning.
    let mut bigger = i_args.clone();
    bigger["memory"] = json!(640);
    let resized = sb.ok("virtup_instance", &bigger);
    assert!(changed(&resized), "{resized}");
    assert!(
        resized["warnings"].to_string().contains("next boot"),
        "{resized}"
    );
    assert!(virsh(&["dumpxml", "--inactive", name]).contains("<memory unit='KiB'>655360</memory>"));
    assert!(!changed(&sb.ok("virtup_instance", &bigger)));
    // Autostart, idempotently.
    let mut auto = bigger.clone();
    auto["autostart"] = json!(true);
    assert!(changed(&sb.ok("virtup_instance", &auto)));
    assert!(!changed(&sb.ok("virtup_instance", &auto)));
    assert!(virsh(&["dominfo", name])
        .lines()
        .any(|l| l.starts_with("Autostart:") && l.contains("enable")));

    // stop → start, each as check → real → check.
    for state in ["stopped", "running"] {
        let mut a = bigger.clone();
        a["state"] = json!(state);
        let mut c = a.clone();
        c["_ansible_check_mode"] = json!(true);
        assert!(changed(&sb.ok("virtup_instance", &c)), "{state} check");
        assert!(changed(&sb.ok("virtup_instance", &a)), "{state} real");
        assert!(
            !changed(&sb.ok("virtup_instance", &c)),
            "{state} check after"
        );
    }

    // Suspend and resume, each as check → real → check. libvirt keeps the memory (managed save)
    // and the inventory groups the instance as suspended; the resumed guest is the same boot (its
    // boot id), at the same address with the same pinned key, and its clock is the host's again.
    // (A delete of a suspended instance is tested on the test driver: the image goes with the
    // domain.)
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let running_doc = sb.ok("virtup_instance", &bigger);
    let booted = ssh_instance(&running_doc, boot_id);
    let mut suspend = bigger.clone();
    suspend["state"] = json!("suspended");
    let mut suspend_check = suspend.clone();
    suspend_check["_ansible_check_mode"] = json!(true);
    assert!(changed(&sb.ok("virtup_instance", &suspend_check)));
    let suspended = sb.ok("virtup_instance", &suspend);
    let suspended_at = std::time::Instant::now();
    assert!(changed(&suspended), "{suspended}");
    assert_eq!(
        suspended["instance"]["state"],
        json!("suspended"),
        "{suspended}"
    );
    assert!(
        virsh(&["dominfo", name])
            .lines()
            .any(|l| l.starts_with("Managed save:") && l.contains("yes")),
        "libvirt holds no managed-save image"
    );
    assert!(!changed(&sb.ok("virtup_instance", &suspend_check)));
    let listed = virtup_e2e::run(
        std::process::Command::new(virtup_e2e::repo_root().join("bin/virtup_inventory"))
            .arg("--list")
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data()),
        std::time::Duration::from_secs(120),
    )
    .assert_ok("virtup_inventory --list")
    .stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["virtup_suspended"]["hosts"],
        json!([name]),
        "{listed}"
    );
    assert!(
        !listed["virtup_running"]["hosts"].to_string().contains(name),
        "{listed}"
    );
    // A suspension long enough that a clock left alone would be seen to lag: the gap is the
    // input of the clock check, not a wait for anything.
    let gap = std::time::Duration::from_secs(15);
    std::thread::sleep(gap.saturating_sub(suspended_at.elapsed()));
    let mut resume_check = bigger.clone();
    resume_check["_ansible_check_mode"] = json!(true);
    assert!(changed(&sb.ok("virtup_instance", &resume_check)));
    let (resumed, out) = sb.module("virtup_instance", &bigger);
    assert!(changed(&resumed), "{resumed}\n{}", out.stderr);
    println!(
        "resume from managed save to pinned SSH: {:?}; warnings {}",
        out.elapsed, resumed["warnings"]
    );
    assert_eq!(resumed["warnings"], Value::Null, "{resumed}");
    assert!(!changed(&sb.ok("virtup_instance", &resume_check)));
    assert_eq!(
        resumed["instance"]["address"],
        running_doc["instance"]["address"]
    );
    let before = std::time::SystemTime::now();
    let inside = ssh_instance(&resumed, &format!("{boot_id}; date +%s.%N"));
    let after = std::time::SystemTime::now();
    let mut lines = inside.lines();
    assert_eq!(
        lines.next(),
        booted.lines().next(),
        "the guest booted again"
    );
    let guest: f64 = lines.next().unwrap().trim().parse().unwrap();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    assert!(
        guest >= secs(before) - 2.0 && guest <= secs(after) + 2.0,
        "guest clock {guest} is not the host's ({} .. {})",
        secs(before),
        secs(after)
    );

    // Suspended again, then `stopped`: resumed and shut down cleanly, with no image left to bring
    // that memory back over the disk later.
    assert!(changed(&sb.ok("virtup_instance", &suspend)));
    let mut stop = bigger.clone();
    stop["state"] = json!("stopped");
    let mut stop_check = stop.clone();
    stop_check["_ansible_check_mode"] = json!(true);
    assert!(changed(&sb.ok("virtup_instance", &stop_check)));
    let stopped = sb.ok("virtup_instance", &stop);
    assert!(changed(&stopped), "{stopped}");
    assert_eq!(stopped["instance"]["state"], json!("present"), "{stopped}");
    assert_eq!(stopped["warnings"], Value::Null, "{stopped}");
    assert!(!changed(&sb.ok("virtup_instance", &stop_check)));
    let info = virsh(&["dominfo", name]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.contains("no")),
        "{info}"
    );
    // Delete removes exactly its own volumes; the template's and the foreign one stay.
    let vols_before: BTreeSet<String> = pool_volumes().into_iter().collect();
    let del = json!({"name": name, "state": "absent"});
    let mut del_check = del.clone();
    del_check["_ansible_check_mode"] = json!(true);
    assert!(changed(&sb.ok("virtup_instance", &del_check)));
    assert!(changed(&sb.ok("virtup_instance", &del)));
    assert!(!changed(&sb.ok("virtup_instance", &del_check)));
    let vols_after: BTreeSet<String> = pool_volumes().into_iter().collect();
    let gone: Vec<&String> = vols_before.difference(&vols_after).collect();
    assert_eq!(
        gone,
        [&format!("{name}-config.iso"), &format!("{name}.qcow2")]
    );
    assert!(vols_after.contains(&foreign));

    // Re-create reuses the MAC.
    let recreated = sb.ok(
        "virtup_instance",
        &json!({"name": name, "template": tpl, "state": "present"}),
    );
    assert_eq!(recreated["instance"]["mac"].as_str(), Some(mac.as_str()));

    // The template refuses to go while the instance depends on it, naming it.
    let (refused, _) = sb.module("virtup_template", &json!({"name": tpl, "state": "absent"}));
    assert_eq!(refused["failed"], json!(true));
    assert!(refused["msg"].as_str().unwrap().contains(name), "{refused}");

    // A new generation leaves generation 1 to its clone, and removes it once unused.
    let t2 = sb.ok(
        "virtup_template",
        &json!({"name": tpl, "os_version": "debian-12", "memory": 768}),
    );
    assert_eq!(t2["template"]["generation"], json!(2), "{t2}");
    assert!(pool_volumes().contains(&format!("VIRTUP-{tpl}-g1.qcow2")));
    // The clone on generation 1 still boots, its backing disk untouched by generation 2.
    let on_gen1 = sb.ok(
        "virtup_instance",
        &json!({"name": name, "template": tpl, "wait_timeout": 900}),
    );
    assert_eq!(on_gen1["instance"]["generation"], json!(1), "{on_gen1}");
    assert_eq!(ssh_instance(&on_gen1, "hostname").trim(), name);
    sb.ok("virtup_instance", &json!({"name": name, "state": "absent"}));
    let t2_again = sb.ok(
        "virtup_template",
        &json!({"name": tpl, "os_version": "debian-12", "memory": 768}),
    );
    assert!(
        changed(&t2_again),
        "removing unused generation 1 is a change: {t2_again}"
    );
    assert!(!pool_volumes().contains(&format!("VIRTUP-{tpl}-g1.qcow2")));

    virsh(&["vol-delete", "--pool", "default", &foreign]);
    drop(cleanup);
    let left: Vec<String> = pool_volumes()
        .into_iter()
        .filter(|v| v.contains(tpl) || v.contains(name))
        .collect();
    assert!(left.is_empty(), "leftover volumes: {left:?}");
}
