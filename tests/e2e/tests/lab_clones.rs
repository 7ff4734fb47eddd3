//! Layer 4: clones of the shared base template: parallel linked and full clones with their own identity
//! (two with a larger `size`, whose root filesystem their first boot grows; one with data disks on both
//! buses, made, formatted and mounted by its first boot, one kept after the delete; one with a static
//! address configured in its guest and three NICs: network, bridge, macvtap), the virt-sysprep path,
//! and a guest that never answers.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{lab_home, run, ssh_instance, virsh, virsh_quiet, Sandbox, BASE_TEMPLATE};

/// Deletes the named instances however the test ends.
struct Instances<'a>(&'a Sandbox, Vec<String>);

impl Drop for Instances<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.module(
                "virtup_instance",
                &json!({"name": name, "state": "absent", "wait_timeout": 120}),
            );
        }
    }
}

/// e2e-l2's data disks: ext4 on virtio mounted, xfs on virtio-scsi mounted and kept, a blank one.
fn data_disks() -> Value {
    json!([
        {"size": "1G", "filesystem": "ext4", "mount": "/srv/data"},
        {"size": "512M", "bus": "scsi", "filesystem": "xfs", "mount": "/srv/logs", "keep": true},
        {"size": "64M", "format": "raw"},
    ])
}
const KEPT_DISK: &str = "e2e-l2.data2.qcow2";

/// Deletes the volume e2e-l2 keeps however the test ends (virtup lets go of it by design); made
/// only when no volume has that name yet, so what it deletes is this run's.
struct KeptVolume;

impl KeptVolume {
    fn new() -> KeptVolume {
        assert!(
            !virsh_quiet(&["vol-info", "--pool", "default", KEPT_DISK]),
            "pool `default` already holds `{KEPT_DISK}` (left by an earlier run?): the test would \
             delete it; remove it by hand"
        );
        KeptVolume
    }
}

impl Drop for KeptVolume {
    fn drop(&mut self) {
        virsh_quiet(&["vol-delete", "--pool", "default", KEPT_DISK]);
    }
}

/// `ip -o link show FILTER…` in the lab's namespace, one link a line.
fn ip_links(filter: &[&str]) -> String {
    run(
        Command::new("ip").args(["-o", "link", "show"]).args(filter),
        Duration::from_secs(30),
    )
    .assert_ok(&format!("ip link show {}", filter.join(" ")))
    .stdout
}

/// Host-side clone time the module reports on stderr ("created `x` in 0.412s").
fn host_side_secs(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("virtup_instance: created"))
        .expect("creation line");
    line.rsplit(" in ")
        .next()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap()
}

#[test]
fn parallel_linked_and_full_clones_each_have_their_own_identity() {
    lab_home();
    let sb = Sandbox::shared();
    sb.base_template();
    // `size` beyond the template's: the linked e2e-l3 and the full e2e-f1 grow their root at first boot.
    let specs = [
        ("e2e-l1", "linked", None),
        ("e2e-l2", "linked", None),
        ("e2e-l3", "linked", Some("4G")),
        ("e2e-f1", "full", Some("3G")),
    ];
    // Dropped after the instances: the kept disk outlives e2e-l2's delete.
    let _kept = KeptVolume::new();
    // e2e-l1's address, configured in its guest (`address_mode: static`) and reserved.
    let fixed = virtup_e2e::free_addresses(1).remove(0);
    let _guard = Instances(&sb, specs.iter().map(|(n, ..)| n.to_string()).collect());
    // Without the lab's VIRTUP_VIRT_TYPE, as a user runs them: the clones find out for themselves
    // whether KVM works. One test guest answers for all four, and its answer is kept.
    let kept_file = sb.data().join("virt-type.json");
    let _ = std::fs::remove_file(&kept_file);
    let created: Vec<(Value, virtup_e2e::Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .map(|(name, clone, size)| {
                let (sb, fixed) = (&sb, &fixed);
                s.spawn(move || {
                    let mut args = json!({"name": name, "template": BASE_TEMPLATE, "clone": clone, "wait_timeout": 1200});
                    if let Some(size) = size {
                        args["size"] = json!(size);
                    }
                    if *name == "e2e-l2" {
                        args["disks"] = data_disks();
                    }
                    if *name == "e2e-l1" {
                        args["address"] = json!(fixed);
                        args["address_mode"] = json!("static");
                        // The lab's bare bridge and veth (tests/lab/lab): a bridged NIC and a macvtap one.
                        args["nics"] = json!([{"network": "default"}, {"bridge": "vubr0"}, {"direct": "vudir0"}]);
                    }
                    sb.module_without_env("virtup_instance", &args, &["VIRTUP_VIRT_TYPE"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((name, ..), (doc, out)) in specs.iter().zip(&created) {
        assert!(
            out.status.success() && doc["changed"] == json!(true),
            "{name}: {doc}\n{}",
            out.stderr
        );
    }
    let told_kept = created
        .iter()
        .filter(|(_, out)| out.stderr.contains("a test guest's answer kept in"))
        .count();
    let all_stderr = || {
        created
            .iter()
            .map(|(_, out)| out.stderr.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    if std::path::Path::new("/dev/kvm").exists() {
        // libvirt offers kvm here: a test guest decides, as the lab's own did (VIRTUP_LAB_ACCEL).
        let lab = match std::env::var("VIRTUP_LAB_ACCEL").as_deref() {
            Ok("tcg") => "qemu",
            Ok("kvm") => "kvm",
            other => panic!("the lab env says VIRTUP_LAB_ACCEL={other:?}"),
        };
        let kept: Value =
            serde_json::from_str(&std::fs::read_to_string(&kept_file).expect("the answer is kept"))
                .unwrap();
        assert!(
            kept["answers"].as_array().map(Vec::len) == Some(1)
                && kept["answers"][0]["virt_type"] == json!(lab),
            "one answer, the one the lab's own test guest gave ({lab}): {kept}"
        );
        assert_eq!(
            told_kept,
            specs.len() - 1,
            "one clone ran the test guest, the others used its answer:\n{}",
            all_stderr()
        );
    } else {
        // No kvm offered: the capabilities decide, and there is no test guest to keep.
        assert!(!kept_file.exists() && told_kept == 0, "{}", all_stderr());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut root_bytes = std::collections::BTreeMap::new();
    for ((name, clone, _), (doc, out)) in specs.iter().zip(&created) {
        let secs = host_side_secs(&out.stderr);
        println!(
            "{name} ({clone}): host-side {secs:.3}s, to pinned SSH {:?}",
            out.elapsed
        );
        let facts = ssh_instance(
            doc,
            "hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub; \
             grep -lx VIRTUPCFG /sys/block/*/serial; df -B1 --output=size / | tail -n 1",
        );
        let lines: Vec<&str> = facts.lines().collect();
        assert_eq!(lines[0], *name);
        // The config disk carries the serial the first-boot script finds it by without probing.
        assert_eq!(
            lines
                .get(3)
                .map(|l| l.starts_with("/sys/block/vd") && l.ends_with("/serial")),
            Some(true),
            "{name}: {facts}"
        );
        assert_eq!(lines.len(), 5, "{name}: one disk has the serial: {facts}");
        assert_eq!(
            doc["instance"]["data_disks"].as_array().map(Vec::len),
            Some(if *name == "e2e-l2" { 3 } else { 0 }),
            "{name}: {doc}"
        );
        root_bytes.insert(*name, lines[4].trim().parse::<u64>().unwrap());
        for fact in &lines[1..3] {
            assert!(
                seen.insert(
                    fact.split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                "{name} shares {fact}"
            );
        }
    }
    // The full clone has no backing file; linked ones are overlays on the template generation.
    let info = |vol: &str| {
        run(
            Command::new("qemu-img")
                .args(["info", "-U", "--output=json"])
                .arg(format!("/var/lib/libvirt/images/{vol}")),
            Duration::from_secs(60),
        )
        .assert_ok("qemu-img info")
        .stdout
    };
    // The root filesystem fills the larger disks (less what the partition table and ext4 keep).
    const GIB: u64 = 1 << 30;
    let base = root_bytes["e2e-l1"];
    println!("root filesystem bytes: {root_bytes:?}");
    assert!(base < 3 * GIB, "{root_bytes:?}");
    assert!(
        root_bytes["e2e-l3"] > base + 3 * GIB / 2 + GIB / 4,
        "{root_bytes:?}"
    );
    assert!(
        root_bytes["e2e-f1"] > base + GIB / 2 + GIB / 4,
        "{root_bytes:?}"
    );
    assert!(info("e2e-l1.qcow2").contains("backing-filename"));
    assert!(!info("e2e-f1.qcow2").contains("backing-filename"));

    // e2e-l2's data disks, as its first boot left them: found by serial on their bus, each filesystem
    // made, listed in fstab by UUID (nofail) and mounted, the blank one still blank, and writable.
    // e2e-l1 answers at its static address, which its guest has from its own config, not a lease.
    let l1 = &created[0].0;
    assert_eq!(l1["instance"]["address"], json!(fixed), "{l1}");
    assert_eq!(
        l1["instance"]["static_address"],
        json!(format!("{fixed}/24")),
        "{l1}"
    );
    let net = ssh_instance(
        l1,
        "ip -4 -o addr show scope global; grep -h '^Address=' /etc/systemd/network/05-virtup.network",
    );
    println!("e2e-l1 network:\n{net}");
    let with_fixed: Vec<&str> = net
        .lines()
        .filter(|l| l.contains(&format!(" {fixed}/24 ")))
        .collect();
    assert_eq!(with_fixed.len(), 1, "{net}");
    assert!(
        !with_fixed[0].contains("dynamic"),
        "configured, not leased: {net}"
    );
    assert!(net.contains(&format!("Address={fixed}/24")), "{net}");

    // e2e-l1's three NICs, in order, each with its MAC: the first on the network, the second a port
    // of the lab's bridge, the third a macvtap on the lab's veth; the guest sees all three.
    let macs: Vec<String> = std::iter::once(l1["instance"]["mac"].clone())
        .chain(
            l1["instance"]["extra_nics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|n| n["mac"].clone()),
        )
        .map(|m| m.as_str().unwrap_or_default().to_ascii_lowercase())
        .collect();
    assert_eq!(macs.len(), 3, "{l1}");
    assert_eq!(
        l1["instance"]["extra_nics"],
        json!([{"type": "bridge", "source": "vubr0", "model": "virtio", "mac": macs[1]},
               {"type": "direct", "source": "vudir0", "mode": "bridge", "model": "virtio", "mac": macs[2]}]),
        "{l1}"
    );
    let links = ssh_instance(l1, "cat /sys/class/net/*/address");
    for mac in &macs {
        assert!(links.contains(mac.as_str()), "{mac} in the guest: {links}");
    }
    let xml = virsh(&["dumpxml", "e2e-l1"]);
    // Every <mac> of the domain is an interface's, in device order.
    let in_xml: Vec<String> = xml
        .split("<mac address='")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_ascii_lowercase)
        .collect();
    assert_eq!(in_xml, macs, "in order: {xml}");
    assert!(
        xml.contains("<source bridge='vubr0'/>")
            && xml.contains("<source dev='vudir0' mode='bridge'/>"),
        "{xml}"
    );
    let host = ip_links(&["master", "vubr0"]);
    // libvirt gives a tap the guest's MAC with fe: in front.
    let tap_mac = format!("fe{}", &macs[1][2..]);
    assert!(
        host.lines().any(|l| l.contains(&tap_mac)),
        "e2e-l1's second NIC is a port of vubr0 ({tap_mac}): {host}"
    );
    let macvtap = ip_links(&["type", "macvtap"]);
    assert!(
        macvtap
            .lines()
            .any(|l| l.contains("@vudir0") && l.contains(macs[2].as_str())),
        "a macvtap on vudir0 with the third MAC: {macvtap}"
    );

    let l2 = &created[1].0;
    let disks = ssh_instance(
        l2,
        "set -e; for s in virtio-virtup-data1 scsi-0QEMU_QEMU_HARDDISK_virtup-data2 virtio-virtup-data3; do \
           readlink -f /dev/disk/by-id/$s; done; \
         findmnt -n -o FSTYPE,SOURCE /srv/data; findmnt -n -o FSTYPE,SOURCE /srv/logs; \
         findmnt --fstab -n -o SOURCE,OPTIONS /srv/data; findmnt --fstab -n -o SOURCE,OPTIONS /srv/logs; \
         sudo -n blkid -p /dev/disk/by-id/virtio-virtup-data3 >/dev/null && echo data3-not-blank || echo data3-blank; \
         sudo -n sh -c 'echo kept >/srv/logs/proof && sync' && cat /srv/logs/proof",
    );
    println!("e2e-l2 data disks:\n{disks}");
    let lines: Vec<&str> = disks.lines().collect();
    assert_eq!(lines.len(), 9, "{disks}");
    let (data1, data2, data3) = (lines[0], lines[1], lines[2]);
    assert!(
        data1.starts_with("/dev/vd") && data3.starts_with("/dev/vd"),
        "{disks}"
    );
    assert!(data2.starts_with("/dev/sd"), "virtio-scsi: {disks}");
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["ext4", data1]
    );
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        ["xfs", data2]
    );
    for fstab in &lines[5..7] {
        assert!(
            fstab.starts_with("UUID=") && fstab.contains("nofail"),
            "{disks}"
        );
    }
    assert_eq!(lines[7], "data3-blank", "{disks}");
    assert_eq!(lines[8], "kept", "{disks}");

    // Deleted, e2e-l2 takes its disks with it but the kept one, which is no longer virtup's.
    let (gone, out) = sb.module(
        "virtup_instance",
        &json!({"name": "e2e-l2", "state": "absent", "wait_timeout": 120}),
    );
    assert!(out.status.success(), "{gone}\n{}", out.stderr);
    assert!(
        gone["warnings"].to_string().contains(KEPT_DISK),
        "the kept disk is named: {gone}"
    );
    let left = virsh(&["vol-list", "--pool", "default"]);
    assert!(left.contains(KEPT_DISK), "{left}");
    assert!(
        !left.contains("e2e-l2.data1")
            && !left.contains("e2e-l2.data3")
            && !left.contains("e2e-l2.qcow2"),
        "{left}"
    );
}

#[test]
fn sysprep_clone_boots_with_working_sshd() {
    lab_home();
    let sb = Sandbox::shared();
    sb.base_template();
    let _guard = Instances(&sb, vec!["e2e-sp1".into()]);
    let doc = sb.ok(
        "virtup_instance",
        &json!({"name": "e2e-sp1", "template": BASE_TEMPLATE, "customize": "sysprep", "wait_timeout": 1200}),
    );
    let facts = ssh_instance(&doc, "hostname; systemctl is-active ssh");
    assert_eq!(facts.lines().collect::<Vec<_>>(), ["e2e-sp1", "active"]);
    // cloud-init data for a template without cloud-init (the virt-builder image has none) would be
    // ignored in silence: refused, read from the generation's disk, before anything is made.
    let cloud = json!({"name": "e2e-ci0", "template": BASE_TEMPLATE, "state": "present",
                       "cloud_init": {"user_data": {"runcmd": [["true"]]}}});
    for check in [true, false] {
        let mut args = cloud.clone();
        args["_ansible_check_mode"] = json!(check);
        let (refused, _) = sb.module("virtup_instance", &args);
        assert_eq!(refused["failed"], json!(true), "{refused}");
        let msg = refused["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("`cloud_init`") && msg.contains("has no cloud-init"),
            "{msg}"
        );
    }
    assert!(
        !virtup_e2e::pool_volumes()
            .iter()
            .any(|v| v.starts_with("e2e-ci0")),
        "nothing was made for e2e-ci0"
    );
    assert!(!virtup_e2e::virsh(&["list", "--all", "--name"]).contains("e2e-ci0"));
    running_means_a_completed_login(
        &sb,
        json!({"name": "e2e-sp1", "template": BASE_TEMPLATE, "customize": "sysprep", "wait_timeout": 20}),
    );
}

/// `running` is proven by an SSH login against the pinned key, not by the key the server offers: with the
/// right host key but a user key the guest does not accept, the module must not report the instance
/// reachable. (`ssh-keyscan` would see the pinned key here and call it reachable at once.)
fn running_means_a_completed_login(sb: &Sandbox, args: Value) {
    let name = args["name"].as_str().unwrap();
    // Point this instance's metadata (not the shared user key, which other tests use) at a stranger's key.
    let meta_file = sb.data().join("instance").join(format!("{name}.json"));
    let original = std::fs::read(&meta_file).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let stranger = keys.path().join("id_ed25519");
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f"])
            .arg(&stranger),
        Duration::from_secs(30),
    )
    .assert_ok("ssh-keygen");
    let mut meta: Value = serde_json::from_slice(&original).unwrap();
    assert!(meta["ssh_private_key_file"].is_string(), "{meta}");
    meta["ssh_private_key_file"] = json!(stranger);
    std::fs::write(&meta_file, serde_json::to_vec(&meta).unwrap()).unwrap();
    let (doc, out) = sb.module("virtup_instance", &args);
    std::fs::write(&meta_file, &original).unwrap();
    assert_eq!(doc["failed"], json!(true), "{doc}");
    let msg = doc["msg"].as_str().unwrap();
    assert!(msg.contains("within 20s"), "{msg}");
    assert!(msg.contains("auth failed"), "{msg}");
    assert!(msg.contains("Permission denied (publickey"), "{msg}");
    assert!(!msg.contains("host key mismatch"), "{msg}");
    assert!(
        out.elapsed >= Duration::from_secs(20) && out.elapsed < Duration::from_secs(120),
        "took {:?}",
        out.elapsed
    );
    println!(
        "{name} with a stranger's user key: failed after {:?}: {msg}",
        out.elapsed
    );
    // With its own key back, the same call proves the login again and changes nothing.
    let again = sb.ok("virtup_instance", &args);
    assert_eq!(again["changed"], json!(false), "{again}");
}

#[test]
fn a_guest_that_never_answers_fails_within_wait_timeout_saying_what_each_source_saw() {
    lab_home();
    let sb = Sandbox::shared();
    sb.base_template();
    let _guard = Instances(&sb, vec!["e2e-slow".into()]);
    // Nothing can boot and lease an address in 5 s under TCG.
    let (doc, out) = sb.module(
        "virtup_instance",
        &json!({"name": "e2e-slow", "template": BASE_TEMPLATE, "wait_timeout": 5, "address_source": ["lease", "agent"]}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    let msg = doc["msg"].as_str().unwrap();
    assert!(msg.contains("within 5s"), "{msg}");
    // And where to look next: the guest's serial console.
    assert!(msg.contains(" console e2e-slow`"), "{msg}");
    assert!(msg.contains("lease: no lease for 52:54:00:"), "{msg}");
    assert!(msg.contains("agent:"), "{msg}");
    assert!(
        out.elapsed < Duration::from_secs(90),
        "took {:?}",
        out.elapsed
    );
}
