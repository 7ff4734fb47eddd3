//! Layer 3: the module binaries never claim a volume by its name and never clone a template whose disk
//! is changing (issue 14), on libvirt's test driver loaded with a template and foreign volumes named
//! exactly as virtup would name its own.
//!
//! The test driver keeps its state per process, so these tests read what a run *would* do (the plan
//! in check mode, the refusal of a real run) and what it recorded; `lab_data_safety` proves on real
//! libvirt that the volumes survive.

// These tests check the built binaries' process-level behaviour (exit code, raw stdout and stderr,
// stdin pipes) with std's `Command`, independently of `virtup_guest::Cmd`, which the binaries use.
#![allow(clippy::disallowed_types)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

mod common;
use common::{own, FIXTURE_OWNER, TEMPLATE_NODE_XML};

/// Template `t` (generation 1, shut off, its disk in `default-pool`) and foreign volumes that hold
/// an instance's disk name, another instance's config disk name, a generation name and a partial name.
fn node_xml() -> String {
    let foreign: String = [
        ("web9.qcow2", "qcow2"),
        ("web8-config.iso", "raw"),
        ("VIRTUP-t-g2.qcow2", "qcow2"),
        ("VIRTUP-t-g3.qcow2.part", "raw"),
    ]
    .iter()
    .map(|(name, format)| {
        format!(
            r#"<volume type="file"><name>{name}</name><capacity>1048576</capacity><target><path>/default-pool/{name}</path><format type="{format}"/></target></volume>"#
        )
    })
    .collect();
    TEMPLATE_NODE_XML.replace("</pool>", &format!("{foreign}</pool>"))
}

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let n = Node {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(n.dir.path().join("node.xml"), node_xml()).unwrap();
        std::fs::create_dir_all(n.dir.path().join("config")).unwrap();
        own(&n.data());
        std::fs::write(
            n.dir.path().join("config/settings.cfg"),
            "[common]\npool = default-pool\n",
        )
        .unwrap();
        n
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, module: &str, args: Value) -> Value {
        let exe = match module {
            "virtup_template" => env!("CARGO_BIN_EXE_virtup_template"),
            _ => env!("CARGO_BIN_EXE_virtup_instance"),
        };
        let file = self.dir.path().join("args");
        std::fs::write(&file, args.to_string()).unwrap();
        let out = self.command(exe).arg(&file).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{module} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Node {
    /// Runs `virt-up ARGS` against this node and data dir.
    fn virt_up(&self, args: &[&str]) -> std::process::Output {
        self.command(env!("CARGO_BIN_EXE_virt-up"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `exe` with this node's config, data dir and hypervisor.
    fn command(&self, exe: &str) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env("VIRTUP_CONFIG_HOME", self.dir.path().join("config"))
            .env("VIRTUP_DATA_HOME", self.data())
            .env(
                "LIBVIRT_DEFAULT_URI",
                format!("test://{}", self.dir.path().join("node.xml").display()),
            );
        cmd
    }
}

fn msg(doc: &Value) -> &str {
    doc["msg"].as_str().unwrap_or_default()
}

#[test]
fn a_foreign_volume_under_an_instance_name_is_refused_and_never_recorded() {
    let node = Node::new();
    for (name, volume) in [("web9", "web9.qcow2"), ("web8", "web8-config.iso")] {
        for check in [true, false] {
            let doc = node.run(
                "virtup_instance",
                json!({"name": name, "template": "t", "state": "present", "_ansible_check_mode": check}),
            );
            assert_eq!(doc["failed"], json!(true), "{name} check={check}: {doc}");
            assert_eq!(doc["changed"], json!(false), "{name}: {doc}");
            assert!(
                msg(&doc).contains(&format!("`{volume}`"))
                    && msg(&doc).contains("not made by virtup"),
                "{name}: {doc}"
            );
        }
        for record in [
            format!("instance/{name}.json"),
            format!("owned/{name}.json"),
        ] {
            assert!(!node.data().join(&record).exists(), "{name}: left {record}");
        }
        // `absent` has nothing of virtup's to remove.
        let gone = node.run("virtup_instance", json!({"name": name, "state": "absent"}));
        assert_eq!(gone["changed"], json!(false), "{name}: {gone}");
    }
    // A free name clones from the disk the template domain itself uses.
    let doc = node.run(
        "virtup_instance",
        json!({"name": "web7", "template": "t", "state": "present", "_ansible_check_mode": true}),
    );
    assert_eq!(doc["changed"], json!(true), "{doc}");
    assert_eq!(msg(&doc), "clone from template generation 1", "{doc}");
}

#[test]
fn generation_look_alikes_are_neither_counted_nor_deleted() {
    let node = Node::new();
    // Generation 1 is the disk the tagged template domain itself uses: its definition proves it
    // virtup's (templates built before the ledger existed have no entry). The foreign `-g2` and
    // `-g3.qcow2.part` are neither counted nor deleted; a rebuild skips the taken numbers.
    let doc = node.run(
        "virtup_template",
        json!({"name": "t", "os_version": "debian-12", "_ansible_check_mode": true}),
    );
    assert_eq!(doc["changed"], json!(true), "{doc}");
    assert_eq!(
        msg(&doc),
        "build generation 4; define the template domain on generation 4; delete unused generation 1",
        "{doc}"
    );
    let gone = node.run(
        "virtup_template",
        json!({"name": "t", "state": "absent", "_ansible_check_mode": true}),
    );
    assert_eq!(
        msg(&gone),
        "undefine the template domain; delete unused generation 1",
        "{gone}"
    );
    // An instance named after a generation volume is refused before anything else.
    let doc = node.run(
        "virtup_instance",
        json!({"name": "VIRTUP-t-g2", "template": "t", "state": "absent"}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(msg(&doc).contains("`name`"), "{doc}");
}

/// A template that is running (booted for customization, or by hand) has a disk that is changing:
/// a clone is refused naming it, in check mode too, rather than made from a moving disk.
#[test]
fn a_running_template_is_not_cloned() {
    let node = Node::new();
    let running = node_xml().replace(
        "<test:runstate>5</test:runstate>",
        "<test:runstate>1</test:runstate>",
    );
    std::fs::write(node.dir.path().join("node.xml"), running).unwrap();
    for check in [true, false] {
        let doc = node.run(
            "virtup_instance",
            json!({"name": "web7", "template": "t", "state": "present", "_ansible_check_mode": check}),
        );
        assert_eq!(doc["failed"], json!(true), "check={check}: {doc}");
        assert!(msg(&doc).contains("template `t` is running"), "{doc}");
        assert!(!node.data().join("instance/web7.json").exists());
    }
}

/// A disk virtup made for a domain that was later undefined by hand is the instance's data: a
/// create refuses to overwrite it, and only `absent` deletes it. A killed first build's partial
/// (proved by its pending record) goes with the template's `absent`.
#[test]
fn a_detached_disk_is_kept_and_a_killed_builds_partial_is_removed() {
    let node = Node::new();
    let owned = node.data().join("owned");
    std::fs::create_dir_all(&owned).unwrap();
    let uri = format!("test://{}", node.dir.path().join("node.xml").display());
    std::fs::write(
        owned.join("web9.json"),
        json!({"volumes": [{"uri": uri, "pool": "default-pool", "name": "web9.qcow2",
                            "key": "/default-pool/web9.qcow2", "attached": true}]})
        .to_string(),
    )
    .unwrap();
    for check in [true, false] {
        let doc = node.run(
            "virtup_instance",
            json!({"name": "web9", "template": "t", "state": "running", "_ansible_check_mode": check}),
        );
        assert_eq!(doc["failed"], json!(true), "{doc}");
        assert!(
            msg(&doc).contains("domain of instance `web9` is gone"),
            "{doc}"
        );
    }
    let gone = node.run(
        "virtup_instance",
        json!({"name": "web9", "state": "absent", "_ansible_check_mode": true}),
    );
    assert!(
        msg(&gone).starts_with("delete leftover volumes web9.qcow2"),
        "{gone}"
    );
    // Template `u` never got its domain: the killed build's partial is recorded as pending.
    std::fs::write(
        owned.join("VIRTUP-u.json"),
        json!({"volumes": [{"uri": uri, "pool": "default-pool", "name": "VIRTUP-u-g1.qcow2.part",
                            "key": null}]})
        .to_string(),
    )
    .unwrap();
    let xml = node_xml().replace(
        "</pool>",
        r#"<volume type="file"><name>VIRTUP-u-g1.qcow2.part</name><capacity>1048576</capacity><target><path>/default-pool/VIRTUP-u-g1.qcow2.part</path><format type="raw"/></target></volume></pool>"#,
    );
    std::fs::write(node.dir.path().join("node.xml"), xml).unwrap();
    let doc = node.run(
        "virtup_template",
        json!({"name": "u", "state": "absent", "_ansible_check_mode": true}),
    );
    assert_eq!(msg(&doc), "delete the volumes of an earlier run", "{doc}");
}

/// The owner id of the data dir that tagged the domains of [`owned_node_xml`].
const OWNER_A: &str = FIXTURE_OWNER;

/// Template `t` and instance `web1`, both tagged by the data dir whose owner id is [`OWNER_A`].
fn owned_node_xml() -> String {
    let instance = r#"<domain type="test">
    <name>web1</name><memory>65536</memory><os><type>hvm</type></os>
    <metadata><virtup:tag xmlns:virtup="https://virtup.dev/xmlns/domain/1" kind="instance" generation="1"><virtup:name>web1</virtup:name><virtup:template>t</virtup:template><virtup:volume>web1.qcow2</virtup:volume><virtup:owner>0123456789abcdef0123456789abcdef</virtup:owner></virtup:tag></metadata>
    <devices><disk type="file" device="disk"><source file="/default-pool/web1.qcow2"/><target dev="vda"/></disk></devices>
  </domain>
  <pool type="dir">"#;
    TEMPLATE_NODE_XML
        .replacen("<pool type=\"dir\">", instance, 1)
        .replace(
            "</pool>",
            r#"<volume type="file"><name>web1.qcow2</name><capacity>1048576</capacity><target><path>/default-pool/web1.qcow2</path><format type="qcow2"/></target></volume></pool>"#,
        )
}

/// The same domains with tags written before owner ids existed.
fn legacy_node_xml() -> String {
    owned_node_xml().replace(&format!("<virtup:owner>{OWNER_A}</virtup:owner>"), "")
}

#[test]
fn a_tag_proves_a_domain_only_to_the_data_dir_that_wrote_it() {
    let node = Node::new();
    std::fs::write(node.dir.path().join("node.xml"), owned_node_xml()).unwrap();
    let write_owner = |id: Option<&str>| {
        let file = node.data().join("owner-id");
        match id {
            Some(id) => {
                std::fs::create_dir_all(node.data()).unwrap();
                std::fs::write(&file, format!("{id}\n")).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
    };
    // Another data dir (one with no id yet, one with its own): for it, A's domains are not
    // virtup's. `absent` has nothing to remove; anything else is refused and names the reason;
    // in check mode and for real.
    for other in [None, Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")] {
        write_owner(other);
        for check in [true, false] {
            for (module, args) in [
                (
                    "virtup_instance",
                    json!({"name": "web1", "state": "absent"}),
                ),
                ("virtup_template", json!({"name": "t", "state": "absent"})),
            ] {
                let mut args = args;
                args["_ansible_check_mode"] = json!(check);
                let doc = node.run(module, args.clone());
                assert_eq!(doc["failed"], json!(null), "{other:?} {args}: {doc}");
                assert_eq!(doc["changed"], json!(false), "{other:?} {args}: {doc}");
                assert_eq!(msg(&doc), "nothing to do", "{other:?} {args}: {doc}");
                assert!(
                    doc["warnings"].to_string().contains("left alone"),
                    "{other:?} {args}: {doc}"
                );
            }
            for (module, args) in [
                (
                    "virtup_instance",
                    json!({"name": "web1", "template": "t", "state": "present"}),
                ),
                (
                    "virtup_template",
                    json!({"name": "t", "os_version": "debian-12", "revision": "2"}),
                ),
            ] {
                let mut args = args;
                args["_ansible_check_mode"] = json!(check);
                let doc = node.run(module, args.clone());
                assert_eq!(doc["failed"], json!(true), "{other:?} {args}: {doc}");
                assert_eq!(doc["changed"], json!(false), "{other:?} {args}: {doc}");
                assert!(
                    msg(&doc).contains("not made by virtup with this data dir"),
                    "{other:?} {args}: {doc}"
                );
            }
        }
        assert!(
            !node.data().join("owned").exists() && !node.data().join("instance").exists(),
            "{other:?}: a refused run recorded something"
        );
        assert_eq!(
            std::fs::read_to_string(node.data().join("owner-id"))
                .ok()
                .as_deref(),
            other.map(|id| format!("{id}\n")).as_deref(),
            "a refused run made or changed the owner id"
        );
    }
    // The data dir that wrote the tags manages them.
    write_owner(Some(OWNER_A));
    let doc = node.run(
        "virtup_instance",
        json!({"name": "web1", "state": "absent", "_ansible_check_mode": true}),
    );
    assert_eq!(doc["changed"], json!(true), "{doc}");
    let doc = node.run(
        "virtup_template",
        json!({"name": "t", "state": "absent", "_ansible_check_mode": true}),
    );
    assert_eq!(
        (doc["failed"].clone(), msg(&doc)),
        (
            json!(true),
            "template `t` is used by `web1`: delete them first"
        ),
        "t is A's template, and web1 its clone: {doc}"
    );
}

#[test]
fn virt_up_delete_names_the_data_dir_that_owns_the_domain() {
    let node = Node::new();
    std::fs::write(node.dir.path().join("node.xml"), owned_node_xml()).unwrap();
    std::fs::write(
        node.data().join("owner-id"),
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
    )
    .unwrap();
    // By domain name the tag is read up front; by template name (and for an instance this data dir
    // has stale metadata of) the module leaves it alone, and virt-up must not claim a deletion.
    let meta = node.data().join("instance");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("web1.json"),
        r#"{"name": "web1", "template": "t", "user": "virt"}"#,
    )
    .unwrap();
    for (name, want) in [
        ("VIRTUP-t", "made by virtup with another data dir"),
        (
            "t",
            "template `t` (domain `VIRTUP-t`) was not made by virtup with this data dir",
        ),
        (
            "web1",
            "instance `web1` was not deleted: it is not virtup's for this data dir",
        ),
    ] {
        let out = node.virt_up(&[name, "--delete", "--yes"]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
        assert!(!stdout.contains("deleted"), "{name}: {stdout}");
    }
    // Another data dir's instance that happens to be named like this data dir's template does not
    // stand in the way of deleting the template by its name.
    let instance_t = owned_node_xml()
        .replace("<name>web1</name>", "<name>t</name>")
        .replace(
            "<virtup:name>web1</virtup:name><virtup:template>t</virtup:template>",
            "<virtup:name>t</virtup:name><virtup:template>u</virtup:template>",
        )
        .replace(
            "<virtup:volume>web1.qcow2</virtup:volume><virtup:owner>0123456789abcdef0123456789abcdef",
            "<virtup:volume>web1.qcow2</virtup:volume><virtup:owner>bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        );
    assert!(
        instance_t.contains("<name>t</name>") && instance_t.contains("bbbbbbbb"),
        "{instance_t}"
    );
    std::fs::write(node.dir.path().join("node.xml"), instance_t).unwrap();
    own(&node.data());
    std::fs::remove_file(meta.join("web1.json")).unwrap();
    let out = node.virt_up(&["t", "--delete", "--yes"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("deleted template `t`"), "{text}");
}

#[test]
fn virt_up_never_clones_from_or_builds_over_another_data_dirs_template() {
    let node = Node::new();
    std::fs::write(
        node.data().join("owner-id"),
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
    )
    .unwrap();
    let sections = node.dir.path().join("config/templates.d");
    std::fs::create_dir_all(&sections).unwrap();
    std::fs::write(sections.join("t.cfg"), "[t]\nos-version = debian-12\n").unwrap();
    for args in [&["web5", "--template", "t"][..], &["t", "--no-clone"]] {
        let out = node.virt_up(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "template `t` (domain `VIRTUP-t`) was not made by virtup with this data dir"
            ),
            "{args:?}: {stderr}"
        );
    }
    assert!(!node.data().join("instance").exists() && !node.data().join("owned").exists());
}

#[test]
fn a_tag_without_owner_is_this_data_dirs_only_with_a_record_of_it() {
    let node = Node::new();
    std::fs::write(node.dir.path().join("node.xml"), legacy_node_xml()).unwrap();
    // A data dir with its own id but no record of web1 or t (a fresh one, another project's).
    std::fs::write(
        node.data().join("owner-id"),
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
    )
    .unwrap();
    for (module, args, failed) in [
        (
            "virtup_instance",
            json!({"name": "web1", "state": "absent"}),
            false,
        ),
        (
            "virtup_template",
            json!({"name": "t", "state": "absent"}),
            false,
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "revision": "2"}),
            true,
        ),
        (
            "virtup_instance",
            json!({"name": "web5", "template": "t", "state": "present"}),
            true,
        ),
    ] {
        let mut args = args;
        args["_ansible_check_mode"] = json!(true);
        let doc = node.run(module, args.clone());
        assert_eq!(doc["changed"], json!(false), "{args}: {doc}");
        assert_eq!(doc["failed"] == json!(true), failed, "{args}: {doc}");
        if failed {
            assert!(
                msg(&doc).contains("not made by virtup with this data dir"),
                "{args}: {doc}"
            );
        }
    }
    // Records of the same names on another hypervisor, or secrets (which name no hypervisor), prove
    // nothing here.
    let uri = format!("test://{}", node.dir.path().join("node.xml").display());
    let meta = node.data().join("instance");
    std::fs::create_dir_all(&meta).unwrap();
    let write_meta = |uri: Option<&str>| {
        let mut doc = json!({"name": "web1", "template": "t", "user": "virt"});
        if let Some(uri) = uri {
            doc["uri"] = json!(uri);
        }
        std::fs::write(meta.join("web1.json"), doc.to_string()).unwrap();
    };
    let owned = node.data().join("owned");
    std::fs::create_dir_all(&owned).unwrap();
    let write_ledger = |uri: &str| {
        let doc = json!({"volumes": [{"uri": uri, "pool": "default-pool", "name": "VIRTUP-t-g1.qcow2", "key": "/default-pool/VIRTUP-t-g1.qcow2", "attached": true}]});
        std::fs::write(owned.join("VIRTUP-t.json"), doc.to_string()).unwrap();
    };
    // Metadata without a URI is virt-up 2.2.0's, whose domains carry no tag: it proves nothing either.
    write_ledger("qemu+ssh://elsewhere/system");
    std::fs::create_dir_all(node.data().join("secrets/VIRTUP-t")).unwrap();
    std::fs::create_dir_all(node.data().join("secrets/web1")).unwrap();
    for meta_uri in [Some("qemu+ssh://elsewhere/system"), None] {
        write_meta(meta_uri);
        for (module, name) in [("virtup_instance", "web1"), ("virtup_template", "t")] {
            // The URI named, so that no run reaches for the recorded hypervisor.
            let doc = node.run(
                module,
                json!({"name": name, "state": "absent", "uri": uri, "_ansible_check_mode": true}),
            );
            assert_eq!(doc["changed"], json!(false), "{name} {meta_uri:?}: {doc}");
            // An instance recorded on another hypervisor (metadata), or a template (ledger), is
            // that one's: refused here, nothing deleted.
            if module == "virtup_template" || meta_uri.is_some() {
                assert!(
                    msg(&doc).contains("lives on `qemu+ssh://elsewhere/system`"),
                    "{doc}"
                );
            } else {
                assert_eq!(msg(&doc), "nothing to do", "{name} {meta_uri:?}: {doc}");
            }
        }
    }
    // The data dir that keeps a record of them on this hypervisor (metadata or ledger) still
    // manages them.
    write_meta(Some(&uri));
    write_ledger(&uri);
    let doc = node.run(
        "virtup_instance",
        json!({"name": "web1", "state": "absent", "_ansible_check_mode": true}),
    );
    assert_eq!(doc["changed"], json!(true), "{doc}");
    let doc = node.run(
        "virtup_template",
        json!({"name": "t", "state": "absent", "_ansible_check_mode": true}),
    );
    assert_eq!(
        msg(&doc),
        "template `t` is used by `web1`: delete them first",
        "{doc}"
    );
}

#[test]
fn a_damaged_owner_id_fails_every_run_naming_it_and_is_never_replaced() {
    let node = Node::new();
    let file = node.data().join("owner-id");
    std::fs::write(&file, "not an id\n").unwrap();
    for check in [true, false] {
        for (module, args) in [
            (
                "virtup_instance",
                json!({"name": "web7", "template": "t", "state": "present"}),
            ),
            (
                "virtup_instance",
                json!({"name": "web7", "state": "absent"}),
            ),
            (
                "virtup_template",
                json!({"name": "t", "os_version": "debian-12", "revision": "2"}),
            ),
            (
                "virtup_template",
                json!({"name": "new", "os_version": "debian-12"}),
            ),
        ] {
            let mut args = args;
            args["_ansible_check_mode"] = json!(check);
            let doc = node.run(module, args.clone());
            assert_eq!(doc["failed"], json!(true), "{args}: {doc}");
            assert!(
                msg(&doc).contains(&file.display().to_string()),
                "{args}: {doc}"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not an id\n");
    let out = node.virt_up(&["--delete", "--all", "--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("owner-id"), "{stderr}");
}
