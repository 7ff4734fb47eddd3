//! Layer 4: data safety. Foreign volumes and domains in the pool, some named like virtup's own, stay
//! byte-for-byte untouched across a whole template and instance lifecycle, and a template generation
//! that a clone still uses is never deleted.
//!
//! lab_lifecycle.rs already shows that generation 1 outlives generation 2 while its clone exists and
//! that the clone still boots; this test adds the foreign objects and checks the generation point
//! after every step through the clone's backing chain.
//!
//! A private template is built (twice: two generations) because a new generation of the shared
//! base template would change what every other lab test clones from.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{lab_home, run, virsh, virsh_quiet, Sandbox};

const TEMPLATE: &str = "ds-tpl";
const TEMPLATE_DOMAIN: &str = "VIRTUP-ds-tpl";
const GEN1: &str = "VIRTUP-ds-tpl-g1.qcow2";
const LINKED: &str = "ds-l1";
const FULL: &str = "ds-f1";
/// An untagged domain named the way a virtup instance would be.
const GHOST: &str = "ds-ghost";
/// A plain foreign domain.
const FOREIGN_DOMAIN: &str = "ds-foreign-vm";

/// Foreign volumes: (name, format). Several look like virtup's own names but are none of them.
const FOREIGN_VOLUMES: &[(&str, &str)] = &[
    ("ds-foreign.raw", "raw"),
    ("ds-foreign.qcow2", "qcow2"),
    // The template domain's name with `.part`: virtup's partials are `VIRTUP-<t>-g<N>.<fmt>.part`.
    ("VIRTUP-ds-tpl.part", "raw"),
    ("VIRTUP-ds-tpl-g1.qcow2.bak", "qcow2"),
    ("VIRTUP-ds-tpl-gx.qcow2", "qcow2"),
    ("VIRTUP-ds-other-g1.qcow2", "qcow2"),
    ("VIRTUP-something.qcow2", "qcow2"),
    // Names that start with the instances' names, or look like their config disks.
    ("ds-l1.raw", "raw"),
    ("ds-l1.qcow2.orig", "qcow2"),
    ("ds-l1-data.qcow2", "qcow2"),
    ("ds-l1-config.iso.old", "raw"),
    ("ds-f1-config.iso~", "raw"),
    ("ds-ghost-config.iso", "raw"),
    ("ds-ghost.qcow2", "qcow2"),
    // Exactly the names virtup derives (issue 14): an instance's disk, another's config disk, the
    // generation the second build would take, and a partial build's name.
    ("ds-taken.qcow2", "qcow2"),
    ("ds-taken2-config.iso", "raw"),
    ("VIRTUP-ds-tpl-g2.qcow2", "qcow2"),
    ("VIRTUP-ds-tpl-g4.qcow2.part", "raw"),
];
/// Instances whose derived volume names foreign volumes hold.
const TAKEN: &[(&str, &str)] = &[
    ("ds-taken", "ds-taken.qcow2"),
    ("ds-taken2", "ds-taken2-config.iso"),
];

const POOL_DIR: &str = "/var/lib/libvirt/images";

/// Everything that identifies a foreign object's content and definition.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Print {
    Volume {
        path: String,
        len: u64,
        mtime: std::time::SystemTime,
        capacity: String,
        sha256: String,
    },
    Domain {
        xml: String,
        state: String,
    },
}

fn volume_print(name: &str) -> Option<Print> {
    let path = PathBuf::from(POOL_DIR).join(name);
    let meta = std::fs::metadata(&path).ok()?;
    let info = virsh(&["vol-info", "--pool", "default", name]);
    let capacity = info
        .lines()
        .find(|l| l.starts_with("Capacity:"))
        .unwrap_or_default()
        .to_owned();
    let sum = run(
        Command::new("sha256sum").arg(&path),
        Duration::from_secs(120),
    )
    .assert_ok("sha256sum")
    .stdout;
    Some(Print::Volume {
        path: virsh(&["vol-path", "--pool", "default", name])
            .trim()
            .to_owned(),
        len: meta.len(),
        mtime: meta.modified().unwrap(),
        capacity,
        sha256: sum.split_whitespace().next().unwrap().to_owned(),
    })
}

fn domain_print(name: &str) -> Option<Print> {
    if !virsh_quiet(&["dominfo", name]) {
        return None;
    }
    Some(Print::Domain {
        xml: virsh(&["dumpxml", "--inactive", name]),
        state: virsh(&["domstate", name]).trim().to_owned(),
    })
}

fn prints() -> BTreeMap<String, Option<Print>> {
    virtup_e2e::wait_for_libvirt();
    virsh(&["pool-refresh", "default"]);
    let mut all = BTreeMap::new();
    for (v, _) in FOREIGN_VOLUMES {
        all.insert(format!("volume {v}"), volume_print(v));
    }
    for d in [FOREIGN_DOMAIN, GHOST] {
        all.insert(format!("domain {d}"), domain_print(d));
    }
    all
}

/// Creates the foreign objects; their content is random so that any rewrite shows in the hash.
fn make_foreign() {
    for (name, format) in FOREIGN_VOLUMES {
        virsh(&["vol-create-as", "default", name, "2M", "--format", format]);
        if *format == "raw" {
            let path = PathBuf::from(POOL_DIR).join(name);
            let noise: Vec<u8> = (0..2u32 << 20)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ name.len() as u8)
                .collect();
            std::fs::write(&path, noise).unwrap();
        }
    }
    for (domain, disk, format) in [
        (FOREIGN_DOMAIN, "ds-foreign.qcow2", "qcow2"),
        (GHOST, "ds-ghost.qcow2", "qcow2"),
    ] {
        let xml = format!(
            "<domain type='qemu'><name>{domain}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64'>hvm</type></os><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='{format}'/>\
             <source file='{POOL_DIR}/{disk}'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
             <source file='{POOL_DIR}/ds-ghost-config.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
             </devices></domain>"
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), xml).unwrap();
        virsh(&["define", f.path().to_str().unwrap()]);
    }
}

/// Removes the lifecycle's objects through virtup, then the foreign ones, however the test ends.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        virtup_e2e::wait_for_libvirt();
        for i in [LINKED, FULL] {
            let _ = self.0.module(
                "virtup_instance",
                &json!({"name": i, "state": "absent", "wait_timeout": 120}),
            );
        }
        let _ = self.0.module(
            "virtup_template",
            &json!({"name": TEMPLATE, "state": "absent", "wait_timeout": 120}),
        );
        remove_foreign();
    }
}

fn remove_foreign() {
    virtup_e2e::wait_for_libvirt();
    for d in [FOREIGN_DOMAIN, GHOST] {
        virsh_quiet(&["destroy", d]);
        virsh_quiet(&["undefine", d]);
    }
    for (v, _) in FOREIGN_VOLUMES {
        virsh_quiet(&["vol-delete", "--pool", "default", v]);
    }
}

/// The generation point: while `LINKED` exists, generation 1 exists and its backing chain resolves to it.
fn assert_generation_kept(step: &str) {
    if !virsh_quiet(&["dominfo", LINKED]) {
        return;
    }
    let disk = format!("{POOL_DIR}/{LINKED}.qcow2");
    let chain = run(
        Command::new("qemu-img").args(["info", "-U", "--backing-chain", "--output=json", &disk]),
        Duration::from_secs(60),
    )
    .assert_ok(&format!("{step}: qemu-img info --backing-chain {disk}"))
    .stdout;
    let chain: Value = serde_json::from_str(&chain).unwrap();
    let files: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["filename"].as_str())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(GEN1)),
        "{step}: the backing chain of {LINKED} does not reach {GEN1}: {files:?}"
    );
    assert!(
        std::path::Path::new(POOL_DIR).join(GEN1).exists(),
        "{step}: generation 1 was deleted while {LINKED} uses it"
    );
}

/// Asserts every foreign object is exactly as it was, and the generation point; returns the step count.
fn check(step: &str, want: &BTreeMap<String, Option<Print>>, steps: &mut Vec<String>) {
    let now = prints();
    for (k, v) in want {
        assert_eq!(
            now.get(k),
            Some(v),
            "after `{step}`: foreign {k} changed or disappeared"
        );
    }
    assert_generation_kept(step);
    steps.push(step.to_owned());
}

fn changed(doc: &Value) -> bool {
    doc["changed"] == json!(true)
}

#[test]
fn foreign_volumes_and_domains_survive_the_whole_lifecycle() {
    lab_home();
    let started = std::time::Instant::now();
    let sb = Sandbox::new();
    // Leftovers of an earlier killed run would make the foreign objects fail to be created.
    remove_foreign();
    let _cleanup = Cleanup(&sb);
    make_foreign();
    let want = prints();
    assert!(
        want.values().all(Option::is_some),
        "foreign objects missing: {want:?}"
    );
    let mut steps = Vec::new();
    check("create foreign objects", &want, &mut steps);

    // The untagged look-alike is neither adopted nor started; `absent` leaves it alone (nothing of virtup's).
    let gone = sb.ok(
        "virtup_instance",
        &json!({"name": GHOST, "state": "absent", "wait_timeout": 60}),
    );
    assert!(!changed(&gone), "{gone}");
    for state in ["running", "stopped", "present"] {
        let (doc, _) = sb.module(
            "virtup_instance",
            &json!({"name": GHOST, "template": TEMPLATE, "state": state, "wait_timeout": 60}),
        );
        assert_eq!(doc["failed"], json!(true), "{GHOST} {state}: {doc}");
        assert!(
            doc["msg"].as_str().unwrap_or_default().contains(GHOST),
            "{GHOST} {state}: {doc}"
        );
    }
    check(
        "instance runs on the untagged look-alike",
        &want,
        &mut steps,
    );

    let t1 = std::time::Instant::now();
    let tpl = sb.ok(
        "virtup_template",
        &json!({"name": TEMPLATE, "os_version": "debian-12", "wait_timeout": 900, "revision": "1"}),
    );
    assert_eq!(tpl["template"]["generation"], json!(1), "{tpl}");
    let build1 = t1.elapsed();
    check("build template generation 1", &want, &mut steps);

    // A name a foreign volume holds: the create is refused naming it, in check mode too, nothing is
    // recorded, and neither a retry nor `absent` touches the volume.
    for (name, volume) in TAKEN {
        for (state, check_mode) in [("present", true), ("present", false), ("running", false)] {
            let (doc, _) = sb.module(
                "virtup_instance",
                &json!({"name": name, "template": TEMPLATE, "state": state,
                        "_ansible_check_mode": check_mode, "wait_timeout": 60}),
            );
            assert_eq!(doc["failed"], json!(true), "{name} {state}: {doc}");
            let msg = doc["msg"].as_str().unwrap_or_default();
            assert!(
                msg.contains(volume) && msg.contains("not made by virtup"),
                "{name}: {doc}"
            );
            assert_eq!(doc["changed"], json!(false), "{name}: {doc}");
        }
        for record in [
            format!("instance/{name}.json"),
            format!("owned/{name}.json"),
        ] {
            assert!(
                !sb.data().join(&record).exists(),
                "{name}: a refused create left `{record}`"
            );
        }
        let gone = sb.ok("virtup_instance", &json!({"name": name, "state": "absent"}));
        assert!(!changed(&gone), "{name}: {gone}");
        check(
            &format!("refused create of {name} (its {volume} is foreign)"),
            &want,
            &mut steps,
        );
    }
    // Instance names in virtup's template naming scheme are refused up front.
    let (doc, _) = sb.module(
        "virtup_instance",
        &json!({"name": "VIRTUP-ds-tpl-g9", "template": TEMPLATE, "state": "present"}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(
        doc["msg"].as_str().unwrap_or_default().contains("`name`"),
        "{doc}"
    );
    check(
        "instance named like a generation volume refused",
        &want,
        &mut steps,
    );

    let linked = json!({"name": LINKED, "template": TEMPLATE, "state": "present"});
    assert!(changed(&sb.ok("virtup_instance", &linked)));
    check("linked clone (defined)", &want, &mut steps);
    assert!(changed(&sb.ok(
        "virtup_instance",
        &json!({"name": FULL, "template": TEMPLATE, "clone": "full", "state": "present"}),
    )));
    check("full clone (defined)", &want, &mut steps);
    let up = sb.ok(
        "virtup_instance",
        &json!({"name": LINKED, "template": TEMPLATE, "state": "running", "wait_timeout": 1500}),
    );
    assert_eq!(up["instance"]["generation"], json!(1), "{up}");
    check("start the linked clone", &want, &mut steps);
    assert!(changed(&sb.ok(
        "virtup_instance",
        &json!({"name": LINKED, "template": TEMPLATE, "state": "stopped"}),
    )));
    check("stop the linked clone", &want, &mut steps);

    // Another data dir on the same host: the tags carry this data dir's owner id, so for the other
    // one the template and the clone are not virtup's. `absent` removes nothing, a build is refused.
    let owner = std::fs::read_to_string(sb.data().join("owner-id")).unwrap();
    let owner = owner.trim();
    for domain in [LINKED, TEMPLATE_DOMAIN] {
        let xml = virtup_e2e::virsh(&["dumpxml", "--inactive", domain]);
        assert!(xml.contains(&format!("owner>{owner}</")), "{domain}: {xml}");
    }
    let other = Sandbox::new();
    for (module, name) in [("virtup_instance", LINKED), ("virtup_template", TEMPLATE)] {
        let gone = other.ok(module, &json!({"name": name, "state": "absent"}));
        assert!(!changed(&gone), "{name}: {gone}");
    }
    let (refused, _) = other.module(
        "virtup_template",
        &json!({"name": TEMPLATE, "os_version": "debian-12", "revision": "2"}),
    );
    assert!(
        refused["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("not made by virtup with this data dir"),
        "{refused}"
    );
    assert!(virsh_quiet(&["dominfo", LINKED]) && virsh_quiet(&["dominfo", TEMPLATE_DOMAIN]));
    check("another data dir's `absent` and build", &want, &mut steps);

    // A new generation while the linked clone still uses generation 1; a foreign volume holds
    // generation 2's name, so the build takes 3 and leaves 2 (and the foreign partial 4) alone.
    let t2 = std::time::Instant::now();
    let tpl2 = sb.ok(
        "virtup_template",
        &json!({"name": TEMPLATE, "os_version": "debian-12", "wait_timeout": 900, "revision": "2"}),
    );
    assert_eq!(tpl2["template"]["generation"], json!(3), "{tpl2}");
    let build2 = t2.elapsed();
    check(
        "build generation 3 beside a clone of 1 and a foreign `-g2`",
        &want,
        &mut steps,
    );
    // The next no-op run must not collect generation 1 either.
    let again = sb.ok(
        "virtup_template",
        &json!({"name": TEMPLATE, "os_version": "debian-12", "wait_timeout": 900, "revision": "2"}),
    );
    assert!(!changed(&again), "{again}");
    check("template no-op run", &want, &mut steps);

    let (refused, out) = sb.module(
        "virtup_template",
        &json!({"name": TEMPLATE, "state": "absent"}),
    );
    assert_eq!(refused["failed"], json!(true), "{refused}");
    assert!(!out.status.success());
    let msg = refused["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(LINKED), "{refused}");
    check("template removal refused", &want, &mut steps);

    for i in [LINKED, FULL] {
        assert!(changed(
            &sb.ok("virtup_instance", &json!({"name": i, "state": "absent"}),)
        ));
        check(&format!("remove {i}"), &want, &mut steps);
    }
    assert!(changed(&sb.ok(
        "virtup_template",
        &json!({"name": TEMPLATE, "state": "absent"}),
    )));
    check("remove the template", &want, &mut steps);
    assert!(!virsh_quiet(&["dominfo", TEMPLATE_DOMAIN]));
    let ours: Vec<String> = virtup_e2e::pool_volumes()
        .into_iter()
        .filter(|v| {
            v.starts_with(&format!("{TEMPLATE_DOMAIN}-g"))
                && !FOREIGN_VOLUMES.iter().any(|(f, _)| f == v)
                || v == &format!("{LINKED}.qcow2")
                || v == &format!("{FULL}.qcow2")
                || v.ends_with("-config.iso") && (v.starts_with(LINKED) || v.starts_with(FULL))
        })
        .collect();
    assert!(ours.is_empty(), "virtup left volumes: {ours:?}");

    println!(
        "data safety: {} foreign volumes + 2 foreign domains unchanged after each of {} steps; \
         template builds {build1:?} and {build2:?}; whole test {:?}",
        FOREIGN_VOLUMES.len(),
        steps.len(),
        started.elapsed()
    );
    for s in &steps {
        println!("  ok: {s}");
    }
}
