//! Layer 4: a template from a cloud image verified by a GPG-signed checksum file, booted online and cloned,
//! while a sampler watches every process's command line for the generated secrets.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{lab_home, run, ssh_instance, Sandbox};

/// Every distinct command line seen in /proc while `running` is set.
fn sample_cmdlines(running: &AtomicBool) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    while running.load(Ordering::Relaxed) {
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
                    if !raw.is_empty() {
                        seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// Clearsigns the lab's SHA256SUMS with the lab key into `out`, as a distribution signs its checksum files.
fn sign_sums(lab: &std::path::Path, out: &std::path::Path) {
    run(
        Command::new("gpg")
            .arg("--homedir")
            .arg(lab.join("images/gpg"))
            .args(["--batch", "--yes", "--clearsign", "--output"])
            .arg(out)
            .arg(lab.join("images/cloud/SHA256SUMS")),
        Duration::from_secs(60),
    )
    .assert_ok("gpg --clearsign");
}

#[test]
fn cloud_image_with_signed_checksum_file_builds_boots_and_clones() {
    let lab = lab_home();
    let sb = Sandbox::new();
    let cloud = lab.join("images/cloud");
    let signed = sb.path().join("SHA256SUMS.asc");
    sign_sums(&lab, &signed);
    let key = lab.join("images/virt-builder/key.pub");
    let image = cloud.join("debian-12-cloud.qcow2");
    let name = "e2e-cloud";
    let base = json!({"name": name, "image": image, "checksum": signed, "checksum_gpg_key": key, "wait_timeout": 900});

    struct Cleanup<'a>(&'a Sandbox);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.module(
                "virtup_instance",
                &json!({"name": "e2e-cloud-i1", "state": "absent"}),
            );
            let _ = self.0.module(
                "virtup_template",
                &json!({"name": "e2e-cloud", "state": "absent"}),
            );
        }
    }
    let _cleanup = Cleanup(&sb);

    let running = AtomicBool::new(true);
    let (template, instance, cmdlines) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_cmdlines(&running));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Built, then booted for online customization with a pinned host key.
            let mut args = base.clone();
            args["state"] = json!("running");
            let t = sb.ok("virtup_template", &args);
            let login = json!({"instance": {
                "name": t["template"]["host_key_alias"], "address": t["template"]["address"],
                "user": t["template"]["user"], "ssh_private_key_file": t["template"]["ssh_private_key_file"],
                "known_hosts_file": t["template"]["known_hosts_file"]}});
            let facts = ssh_instance(&login, "hostname; sudo -n true && echo sudo-ok");
            assert_eq!(facts.lines().collect::<Vec<_>>(), [name, "sudo-ok"]);
            // Sealed, then cloned: the clone keeps the identity its config disk gave, cloud-init or not.
            args["state"] = json!("present");
            sb.ok("virtup_template", &args);
            let i = sb.ok(
                "virtup_instance",
                &json!({"name": "e2e-cloud-i1", "template": name, "wait_timeout": 900}),
            );
            let facts = ssh_instance(&i, "hostname; sudo -n true && echo sudo-ok");
            assert_eq!(
                facts.lines().collect::<Vec<_>>(),
                ["e2e-cloud-i1", "sudo-ok"]
            );
            (t, i)
        }));
        running.store(false, Ordering::Relaxed);
        let seen = sampler.join().unwrap();
        match result {
            Ok((t, i)) => (t, i, seen),
            Err(p) => std::panic::resume_unwind(p),
        }
    });

    // No generated password and no private key body on any command line, nor in the module output.
    let secrets_root = sb.data().join("secrets");
    let mut secrets: Vec<String> = Vec::new();
    for dir in std::fs::read_dir(&secrets_root).unwrap().flatten() {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            secrets.push(std::fs::read_to_string(f.path()).unwrap().trim().to_owned());
        }
    }
    assert!(
        secrets.len() >= 4,
        "expected root and user passwords for template and instance: {secrets:?}"
    );
    let key_body: Vec<String> = std::fs::read_to_string(sb.data().join("sshkeys/virt/id_ed25519"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    let outputs = format!("{template}{instance}");
    println!(
        "sampled {} distinct command lines during build, boot and clone",
        cmdlines.len()
    );
    for secret in secrets.iter().chain(&key_body) {
        assert!(
            !outputs.contains(secret.as_str()),
            "a secret is in module output"
        );
        for c in &cmdlines {
            assert!(
                !c.contains(secret.as_str()),
                "a secret was on a command line: {c}"
            );
        }
    }
    let _: &Value = &template;
}

#[test]
fn a_tampered_signed_checksum_file_is_refused_before_anything_is_made() {
    let lab = lab_home();
    let sb = Sandbox::new();
    let signed = sb.path().join("SHA256SUMS.asc");
    sign_sums(&lab, &signed);
    let text = std::fs::read_to_string(&signed).unwrap();
    // Change the first digit of the checksum itself (the signed body starts after the first blank line).
    let body = text.find("\n\n").unwrap() + 2;
    let digit = if text.as_bytes()[body] == b'0' {
        "1"
    } else {
        "0"
    };
    let tampered = format!("{}{digit}{}", &text[..body], &text[body + 1..]);
    assert_ne!(text, tampered);
    std::fs::write(&signed, tampered).unwrap();
    let before = virtup_e2e::pool_volumes();
    let (doc, _) = sb.module(
        "virtup_template",
        &json!({"name": "e2e-tampered", "image": lab.join("images/cloud/debian-12-cloud.qcow2"),
                "checksum": signed, "checksum_gpg_key": lab.join("images/virt-builder/key.pub")}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(
        doc["msg"].as_str().unwrap().contains("checksum_gpg_key"),
        "{doc}"
    );
    assert_eq!(virtup_e2e::pool_volumes(), before);
    assert!(!virtup_e2e::virsh(&["list", "--all", "--name"]).contains("e2e-tampered"));
}
