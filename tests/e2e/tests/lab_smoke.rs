//! Layer 4: the lab itself: the local signed virt-builder repository, and both offline images booting to SSH + Ansible.

use std::time::Duration;

use virtup_e2e::{in_repo, lab_home, run_ok};

#[test]
fn virt_builder_sees_only_the_signed_local_repository() {
    lab_home();
    let out = run_ok(
        in_repo("virt-builder").args(["--list", "--list-format", "json"]),
        Duration::from_secs(300),
        "virt-builder --list",
    );
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("virt-builder json");
    let templates = list["templates"].as_array().expect("templates");
    let names: Vec<&str> = templates
        .iter()
        .filter_map(|t| t["os-version"].as_str())
        .collect();
    assert_eq!(names, ["debian-12"], "only the lab's template is offered");
    // Signature checking is on: the source carries the lab's key.
    let sources = list["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1, "only the lab's source: {sources:?}");
    assert!(
        sources[0]["key"]
            .as_str()
            .is_some_and(|k| k.ends_with("/key.pub")),
        "{sources:?}"
    );
}

#[test]
fn both_images_boot_to_ssh_and_answer_ansible() {
    lab_home();
    let out = run_ok(
        &mut in_repo("tests/lab/smoke"),
        Duration::from_secs(1500),
        "tests/lab/smoke",
    );
    // Boot-to-SSH times, for the log.
    for line in out.stdout.lines().filter(|l| l.starts_with("smoke:")) {
        println!("{line}");
    }
    assert!(out.stdout.contains("smoke: ok"), "{}", out.stdout);
}
