//! Layer 4: warm clones. A template's warm image is made once (a look-alike volume is skipped and kept, a
//! killed seeding is recovered), two clones resume from it in parallel with their own identity, random
//! state and clock, an image that does not fit is never restored, and a warm clone boots cold later.
//! One clone has a fixed address (`address`: a DHCP reservation virtup adds and removes), configured
//! in its guest (`address_mode: static`, so its resume does not wait for the bridge port), that holds
//! across its cold restart; an address held by someone else's entry is refused and that entry kept.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use virtup_e2e::{
    free_addresses, lab_home, pool_volumes, run, ssh_instance, virsh, wait_for, Sandbox,
};

const TEMPLATE: &str = "wm-t";
const SEED_DOMAIN: &str = "VIRTUP-wm-t@seed";
/// A look-alike planted under the name generation 1's image would have: the template skips that number.
const LOOK_ALIKE: &str = "VIRTUP-wm-t-g1-warm.save";
const WARM_IMAGE: &str = "VIRTUP-wm-t-g2-warm.save";
const WARM_DISK: &str = "VIRTUP-wm-t-g2-warm.qcow2";
const CLONES: [&str; 2] = ["wm-a", "wm-b"];
/// The MAC of a reservation someone else made on the lab's network, for an instance name virtup would use.
const FOREIGN_MAC: &str = "52:54:00:fe:fe:01";

/// Removes what the test made however it ends, and a look-alike volume it planted.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for name in CLONES.iter().chain(&["wm-stale", "wm-k"]) {
            let _ = self.0.module(
                "virtup_instance",
                &json!({"name": name, "state": "absent", "wait_timeout": 120}),
            );
        }
        let _ = self.0.module(
            "virtup_template",
            &json!({"name": TEMPLATE, "state": "absent", "wait_timeout": 120}),
        );
        if let Some(entry) = foreign_entry_in_network() {
            let _ = Command::new("virsh")
                .args(["-c", "qemu:///system", "net-update", "default", "delete"])
                .args(["ip-dhcp-host", &entry, "--live", "--config"])
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
        let _ = Command::new("virsh")
            .args(["-c", "qemu:///system", "destroy", SEED_DOMAIN])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
        let _ = Command::new("virsh")
            .args([
                "-c",
                "qemu:///system",
                "vol-delete",
                LOOK_ALIKE,
                "--pool",
                "default",
            ])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
}

fn ours() -> BTreeSet<String> {
    pool_volumes()
        .into_iter()
        .filter(|v| v.contains("wm-"))
        .collect()
}

/// The `<host/>` entry with [`FOREIGN_MAC`] in the network's definition, as it is written there.
fn foreign_entry_in_network() -> Option<String> {
    virsh(&["net-dumpxml", "default"])
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("<host ") && l.contains(FOREIGN_MAC))
        .map(str::to_owned)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn warm_clones_resume_from_one_image_each_with_its_own_identity() {
    lab_home();
    let sb = Sandbox::new();
    let _cleanup = Cleanup(&sb);
    let template =
        json!({"name": TEMPLATE, "os_version": "debian-12", "warm": true, "wait_timeout": 900});

    // A volume named exactly as generation 1's warm image would be, made by someone else: the
    // template takes the next number and never touches it.
    virsh(&[
        "vol-create-as",
        "default",
        LOOK_ALIKE,
        "1M",
        "--format",
        "raw",
    ]);
    let look_alike_before = virsh(&["vol-info", LOOK_ALIKE, "--pool", "default"]);

    // A run killed while its seed boots (after building the generation): the next run stops that
    // seed (its own, by its tag) and makes the image anew.
    let (mut child, _args_file) = sb.spawn_module("virtup_template", &template);
    wait_for("the seed to boot", Duration::from_secs(600), || {
        virsh(&["list", "--name"])
            .lines()
            .any(|l| l.trim() == SEED_DOMAIN)
            .then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    let doc = sb.ok("virtup_template", &template);
    let warm = &doc["template"]["warm"];
    println!(
        "warm: image made in {:.1}s ({} bytes) after a killed seeding; the run took {:.1}s",
        warm["seconds"].as_f64().unwrap_or(-1.0),
        warm["image_bytes"],
        start.elapsed().as_secs_f64()
    );
    assert!(
        warm["image_bytes"].as_u64().unwrap_or(0) > 10_000_000,
        "the template reports its image: {doc}"
    );
    assert!(!virsh(&["list", "--all", "--name"]).contains(SEED_DOMAIN));
    assert_eq!(
        ours(),
        set(&[
            LOOK_ALIKE,
            WARM_IMAGE,
            WARM_DISK,
            "VIRTUP-wm-t-g2.qcow2",
            "VIRTUP-wm-t-config.iso"
        ])
    );
    assert_eq!(
        virsh(&["vol-info", LOOK_ALIKE, "--pool", "default"]),
        look_alike_before,
        "the look-alike is as it was"
    );
    let again = sb.ok("virtup_template", &template);
    assert_eq!(again["changed"], json!(false), "{again}");

    // An image made for other memory is never restored: `boot: warm` fails before anything is made.
    let (doc, out) = sb.module(
        "virtup_instance",
        &json!({"name": "wm-stale", "template": TEMPLATE, "boot": "warm", "memory": 768}),
    );
    let msg = doc["msg"].as_str().unwrap_or_default();
    assert!(
        !out.status.success() && msg.contains("memory") && msg.contains("boot"),
        "{doc}\n{}",
        out.stderr
    );
    assert!(!ours().iter().any(|v| v.starts_with("wm-stale")));
    assert!(!virsh(&["list", "--all", "--name"]).contains("wm-stale"));

    // An address someone else's entry holds (named as virtup would name the instance): refused
    // before anything is made, the entry kept.
    let free = free_addresses(2);
    let (fixed, foreign_ip) = (free[0].clone(), free[1].clone());
    virsh(&[
        "net-update",
        "default",
        "add",
        "ip-dhcp-host",
        &format!("<host mac='{FOREIGN_MAC}' name='wm-c' ip='{foreign_ip}'/>"),
        "--live",
        "--config",
    ]);
    let foreign_before = foreign_entry_in_network().expect("the foreign entry is in the network");
    let (doc, out) = sb.module(
        "virtup_instance",
        &json!({"name": "wm-c", "template": TEMPLATE, "address": foreign_ip}),
    );
    let msg = doc["msg"].as_str().unwrap_or_default();
    assert!(
        !out.status.success()
            && msg.contains("`address`")
            && msg.contains("already reserved")
            && msg.contains(FOREIGN_MAC),
        "{doc}\n{}",
        out.stderr
    );
    assert!(!ours().iter().any(|v| v.starts_with("wm-c")));
    assert!(!virsh(&["list", "--all", "--name"]).contains("wm-c"));

    // Two clones at once, each read right after `running` returned; the first with a fixed address.
    let probe = "hostname; cat /etc/machine-id; head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; \
                 cat /proc/sys/kernel/random/uuid; date +%s.%N; \
                 sudo journalctl -b -q --no-pager | grep -c 'virtup-firstboot: done'";
    let results: Vec<(Value, String, f64, f64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = CLONES
            .iter()
            .map(|name| {
                let (sb, fixed) = (&sb, &fixed);
                s.spawn(move || {
                    let start = Instant::now();
                    let mut args = json!({"name": name, "template": TEMPLATE, "boot": "warm", "wait_timeout": 900});
                    if *name == CLONES[0] {
                        // Configured in the guest too: the resume does not wait for the bridge port.
                        args["address"] = json!(fixed);
                        args["address_mode"] = json!("static");
                    } else {
                        // A second NIC, on the lab's bridge, and a data disk with a filesystem:
                        // hot-plugged too, the NICs in order, the disk before the config disk.
                        // A third NIC, e1000 (`model`): hot-plugged as the model defined.
                        args["nics"] = json!([{"network": "default"}, {"bridge": "vubr0"}, {"bridge": "vubr0", "model": "e1000"}]);
                        // A second disk asks for a mount point the image already uses: the
                        // first boot leaves it alone, and the module says so.
                        args["disks"] = json!([
                            {"size": "64M", "filesystem": "ext4", "mount": "/srv/wm"},
                            {"size": "64M", "filesystem": "ext4", "mount": "/var/lib/apt"}
                        ]);
                    }
                    let (doc, out) = sb.module("virtup_instance", &args);
                    let took = start.elapsed();
                    assert!(
                        out.status.success() && out.stderr.contains("resumed from the warm image"),
                        "{name}: {doc}\n{}",
                        out.stderr
                    );
                    let before = now();
                    let facts = ssh_instance(&doc, probe);
                    (doc, facts, before, now(), took)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = BTreeSet::new();
    for (name, (doc, facts, before, after, took)) in CLONES.iter().zip(&results) {
        println!(
            "warm: {name} running (pinned SSH proven) in {:.1}s{}",
            took.as_secs_f64(),
            if *name == CLONES[0] {
                " with a static, reserved address"
            } else {
                ""
            }
        );
        let lines: Vec<&str> = facts.lines().collect();
        assert_eq!(lines.len(), 6, "{name}: {facts}");
        assert_eq!(lines[0], *name);
        let clock: f64 = lines[4].parse().unwrap();
        assert!(
            clock >= before - 1.0 && clock <= after + 1.0,
            "{name}: guest clock {clock} is not within 1 s of the host's [{before}, {after}]"
        );
        assert_eq!(
            lines[5], "1",
            "{name}: its journal holds its first boot: {facts}"
        );
        let i = &doc["instance"];
        for fact in [
            lines[1].to_owned(),
            lines[2].to_owned(),
            lines[3].to_owned(),
            i["mac"].to_string(),
            i["address"].to_string(),
            i["host_key_fingerprint"].to_string(),
        ] {
            assert!(seen.insert(fact.clone()), "{name} shares {fact}");
        }
        // The clone's disk rests on the seed's, which rests on the generation.
        let info = run(
            Command::new("qemu-img")
                .args(["info", "-U", "--output=json"])
                .arg(Path::new("/var/lib/libvirt/images").join(format!("{name}.qcow2"))),
            Duration::from_secs(60),
        )
        .assert_ok("qemu-img info")
        .stdout;
        assert!(info.contains(WARM_DISK), "{name}: {info}");
    }

    // wm-b's two NICs, named by the guest in the order a cold boot gives them: the first is the one
    // virtup reached it through.
    let b_doc = &results[1].0;
    let second_mac = b_doc["instance"]["extra_nics"][0]["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("wm-b reports its second NIC: {b_doc}"))
        .to_owned();
    let macs = ssh_instance(
        b_doc,
        "cat /sys/class/net/eth0/address /sys/class/net/eth1/address",
    );
    assert_eq!(
        macs.lines().collect::<Vec<_>>(),
        [
            b_doc["instance"]["mac"].as_str().unwrap(),
            second_mac.as_str()
        ],
        "wm-b: {b_doc}"
    );
    // Its third NIC is an Intel 82540EM (e1000, PCI 8086:100e), hot-plugged into the resumed guest,
    // whose kernel (Debian's cloud flavour) has no driver for it: the guest sees the device on its
    // PCI bus, with no network interface.
    assert_eq!(b_doc["instance"]["nic_model"], json!("virtio"), "{b_doc}");
    assert_eq!(
        b_doc["instance"]["extra_nics"][1]["model"],
        json!("e1000"),
        "{b_doc}"
    );
    let pci = ssh_instance(
        b_doc,
        "cd /sys/bus/pci/devices && for d in *; do echo \"$(cat $d/vendor):$(cat $d/device)\"; done; ls /sys/class/net",
    );
    assert_eq!(
        pci.lines().filter(|l| *l == "0x8086:0x100e").count(),
        1,
        "wm-b's PCI devices, then its interfaces: {pci}"
    );
    let interfaces: Vec<&str> = pci.lines().filter(|l| !l.starts_with("0x")).collect();
    assert_eq!(
        interfaces,
        ["eth0", "eth1", "lo"],
        "no interface for the e1000 (the docs say the cloud kernel has no driver for it): {pci}"
    );
    assert_eq!(
        pci.lines().filter(|l| *l == "0x1af4:0x1000").count(),
        2,
        "wm-b's two virtio NICs (1af4:1000) beside it: {pci}"
    );
    // Its data disk was there for its first boot, which made the filesystem and mounted it.
    let mounted = ssh_instance(
        b_doc,
        "findmnt -n -o FSTYPE /srv/wm; readlink -f /dev/disk/by-id/virtio-virtup-data1",
    );
    assert_eq!(
        mounted.lines().next(),
        Some("ext4"),
        "wm-b's data disk: {mounted}"
    );
    // What its first boot did not do is the module's warning, once: wm-a's did all it was asked.
    let said: Vec<&str> = b_doc["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let noted: Vec<&&str> = said
        .iter()
        .filter(|w| w.starts_with("`wm-b`'s first boot: "))
        .collect();
    assert!(
        noted.len() == 1
            && noted[0].contains("data disk virtup-data2")
            && noted[0].contains(
                "/var/lib/apt is in use (not an empty directory): nothing made, not mounted"
            ),
        "wm-b's warnings: {said:?}"
    );
    assert!(
        !results[0].0["warnings"].to_string().contains("first boot"),
        "wm-a: {}",
        results[0].0
    );
    let apt = ssh_instance(b_doc, "findmnt -n /var/lib/apt || echo not mounted");
    assert_eq!(apt.trim(), "not mounted", "wm-b's /var/lib/apt");
    // Said once: a later run proves the same guest (its notes still in /run) and says nothing.
    let (again, out) = sb.module(
        "virtup_instance",
        &json!({"name": "wm-b", "template": TEMPLATE, "wait_timeout": 900}),
    );
    assert!(out.status.success(), "{again}\n{}", out.stderr);
    assert_eq!(again["changed"], json!(false), "{again}");
    assert!(
        !again["warnings"].to_string().contains("first boot"),
        "{again}"
    );
    let defined = virsh(&["dumpxml", "--inactive", "wm-b"]);
    assert!(
        defined.contains("<source bridge='vubr0'/>"),
        "wm-b's definition keeps its second NIC: {defined}"
    );
    assert_eq!(
        defined.matches("<model type='e1000'/>").count(),
        1,
        "wm-b's third NIC is defined e1000: {defined}"
    );
    let live = virsh(&["dumpxml", "wm-b"]);
    assert_eq!(
        live.matches("<model type='e1000'/>").count(),
        1,
        "wm-b runs its third NIC as e1000: {live}"
    );

    // The fixed address: reported, held by the guest, in the network as virtup's entry, and in the
    // inventory.
    let a_doc = &results[0].0;
    assert_eq!(
        a_doc["instance"]["reserved_address"],
        json!(fixed),
        "{a_doc}"
    );
    assert_eq!(a_doc["instance"]["address"], json!(fixed), "{a_doc}");
    let held = ssh_instance(a_doc, "ip -4 -o addr show scope global");
    assert!(
        held.lines()
            .any(|l| l.contains(&format!(" {fixed}/")) && !l.contains("dynamic")),
        "wm-a holds {fixed}, configured by its first boot, not leased: {held}"
    );
    assert_eq!(
        a_doc["instance"]["static_address"],
        json!(format!("{fixed}/24")),
        "{a_doc}"
    );
    let net = virsh(&["net-dumpxml", "default"]);
    assert!(
        net.contains(&format!("name='wm-a' ip='{fixed}'")),
        "the reservation is in the network: {net}"
    );
    let host = run(
        Command::new(virtup_e2e::repo_root().join("bin/virtup_inventory"))
            .args(["--host", "wm-a"])
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data()),
        Duration::from_secs(120),
    )
    .assert_ok("virtup_inventory --host wm-a")
    .stdout;
    let host: Value = serde_json::from_str(&host).unwrap();
    assert_eq!(
        host["virtup_reserved_address"]["__ansible_unsafe"],
        json!(fixed),
        "{host}"
    );

    // A run killed once the clone runs, before it got its NIC and config disk: the next run plugs
    // them in and the clone comes up as if nothing happened.
    // Its second NIC an rtl8139: plugged in by whichever run gets there, as the model defined.
    let k = json!({"name": "wm-k", "template": TEMPLATE, "boot": "warm", "wait_timeout": 900,
                   "nics": [{"network": "default"}, {"bridge": "vubr0", "model": "rtl8139"}]});
    let (mut child, _args_file) = sb.spawn_module("virtup_instance", &k);
    wait_for("wm-k to run", Duration::from_secs(600), || {
        virsh(&["list", "--name"])
            .lines()
            .any(|l| l.trim() == "wm-k")
            .then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (doc, out) = sb.module("virtup_instance", &k);
    assert!(out.status.success(), "{doc}\n{}", out.stderr);
    assert_eq!(ssh_instance(&doc, "hostname").trim(), "wm-k");
    let live = virsh(&["dumpxml", "wm-k"]);
    assert!(
        live.matches("<model type='rtl8139'/>").count() == 1
            && live.matches("<model type='virtio'/>").count() >= 1,
        "wm-k runs its second NIC as rtl8139: {live}"
    );
    println!(
        "warm: a resume killed once the clone ran; the next run {}",
        if out.stderr.contains("did not finish") {
            "finished it"
        } else {
            "found it finished (the kill came after the hot-plugs)"
        }
    );
    sb.ok(
        "virtup_instance",
        &json!({"name": "wm-k", "state": "absent", "wait_timeout": 300}),
    );

    // Later starts are cold boots of the clone's own disk, with every device where it was when it
    // resumed (a NIC in another PCI slot gets another name): it comes back with its pinned key.
    let a = json!({"name": "wm-a", "template": TEMPLATE, "wait_timeout": 900});
    let nics = "ls /sys/class/net | grep -v '^lo$'";
    let before = ssh_instance(&results[0].0, nics);
    let mut stop = a.clone();
    stop["state"] = json!("stopped");
    sb.ok("virtup_instance", &stop);
    let doc = sb.ok("virtup_instance", &a);
    assert_eq!(ssh_instance(&doc, "hostname").trim(), "wm-a");
    assert_eq!(ssh_instance(&doc, nics), before, "the NIC keeps its name");
    // Without `address` in the task the reservation stays, and the cold boot gets it again.
    assert_eq!(doc["instance"]["address"], json!(fixed), "{doc}");

    // The image goes with its generation.
    for name in CLONES {
        sb.ok(
            "virtup_instance",
            &json!({"name": name, "state": "absent", "wait_timeout": 300}),
        );
    }
    sb.ok(
        "virtup_template",
        &json!({"name": TEMPLATE, "state": "absent", "wait_timeout": 300}),
    );
    assert_eq!(ours(), set(&[LOOK_ALIKE]), "only the look-alike is left");
    let net = virsh(&["net-dumpxml", "default"]);
    assert!(
        !net.contains("name='wm-a'"),
        "wm-a's reservation went: {net}"
    );
    assert_eq!(
        foreign_entry_in_network().as_deref(),
        Some(foreign_before.as_str()),
        "the foreign entry is as it was"
    );
    let records = sb.data().join("warm");
    assert!(
        std::fs::read_dir(&records).map_or(true, |mut d| d.next().is_none()),
        "no warm record is left in {}",
        records.display()
    );
}
