//! Layer 2/3: the `virtup_inventory` executable against libvirt's test driver loaded with virtup-tagged domains.

// These tests check the built binaries' process-level behaviour (exit code, raw stdout and stderr,
// stdin pipes) with std's `Command`, independently of `virtup_guest::Cmd`, which the binaries use.
#![allow(clippy::disallowed_types)]

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// A test-driver node: a running virtup instance `web1`, a stopped one `db1`, a template, and a
/// foreign domain and another data dir's template (owner `bbbb…`), which must never be listed.
const NODE_XML: &str = include_str!("../../../tests/fixtures/inventory-node.xml");

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(f.node(), NODE_XML).unwrap();
        let inst = f.data().join("instance");
        std::fs::create_dir_all(&inst).unwrap();
        std::fs::write(
            f.data().join("owner-id"),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        // As virtup writes it: with the hypervisor's URI (db1's tag has no owner; this record proves it).
        let uri = format!("test://{}", f.node().display());
        let meta = |name: &str, address: Option<&str>| {
            json!({"schema": 1, "name": name, "template": "debian-12", "generation": 1, "user": "virt",
                   "mac": "52:54:00:00:00:01", "address": address, "inventory": true, "state": "running",
                   "uri": uri})
        };
        let write = |name: &str, v: &Value| {
            std::fs::write(inst.join(format!("{name}.json")), v.to_string()).unwrap()
        };
        write("web1", &meta("web1", Some("192.168.122.10")));
        write("db1", &meta("db1", None));
        // Metadata whose domain is gone, a damaged file, and one hidden from the inventory.
        write("gone", &meta("gone", Some("192.168.122.11")));
        std::fs::write(
            inst.join("broken.json"),
            "{\"name\": \"broken\", \"user\": 7",
        )
        .unwrap();
        let mut hidden = meta("foreign", None);
        hidden["inventory"] = json!(false);
        write("foreign", &hidden);
        f
    }
    fn node(&self) -> std::path::PathBuf {
        self.dir.path().join("node.xml")
    }
    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_virtup_inventory"))
            .args(args)
            .env("VIRTUP_DATA_HOME", self.data())
            .env("VIRTUP_CONFIG_HOME", self.dir.path().join("config"))
            .env(
                "LIBVIRT_DEFAULT_URI",
                format!("test://{}", self.node().display()),
            )
            .env_remove(virtup_cli::inventory::URIS_ENV)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

fn hosts(doc: &Value, group: &str) -> Vec<String> {
    serde_json::from_value(doc[group]["hosts"].clone()).unwrap_or_default()
}

#[test]
fn list_groups_vars_and_warnings_with_a_silent_stderr() {
    let f = Fixture::new();
    let (code, out, err) = f.run(&["--list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "stderr must stay empty on success");
    let doc: Value = serde_json::from_str(&out).unwrap();

    assert_eq!(hosts(&doc, "virtup_instances"), ["db1", "web1"]);
    assert_eq!(hosts(&doc, "virtup_templates"), ["VIRTUP-debian-12"]);
    assert_eq!(hosts(&doc, "virtup_template_debian_12"), ["db1", "web1"]);
    assert!(hosts(&doc, "virtup_running").contains(&"web1".to_string()));
    // A hidden instance is named only in `virtup_recorded_uris` (below), as no host of any group.
    let mut without_recorded = doc.clone();
    without_recorded["all"]["vars"]
        .as_object_mut()
        .unwrap()
        .remove("virtup_recorded_uris");
    let listed = without_recorded.to_string();
    assert!(
        !listed.contains("\"foreign\"") && !out.contains("theirs"),
        "untagged, hidden or other data dirs' domains are never listed: {out}"
    );
    let web1 = &doc["_meta"]["hostvars"]["web1"];
    assert_eq!(
        web1["ansible_host"],
        json!({"__ansible_unsafe": "192.168.122.10"})
    );
    assert_eq!(
        web1["virtup_mac"],
        json!({"__ansible_unsafe": "52:54:00:00:00:01"})
    );
    let tpl = &doc["_meta"]["hostvars"]["VIRTUP-debian-12"];
    // Only virtup's pin vouches for a guest: strict checking, virtup's known_hosts, no system-wide file.
    for (host, vars) in [("web1", web1), ("VIRTUP-debian-12", tpl)] {
        let args = vars["ansible_ssh_common_args"]["__ansible_unsafe"]
            .as_str()
            .unwrap_or_default();
        let words = shell_words::split(args).unwrap();
        for want in [
            "StrictHostKeyChecking=yes".to_string(),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            format!("HostKeyAlias={host}"),
        ] {
            assert!(words.contains(&want), "{host}: {want} missing from {args}");
        }
        assert!(
            words
                .iter()
                .any(|w| w.starts_with("UserKnownHostsFile=") && w.ends_with("/known_hosts")),
            "{host}: {args}"
        );
    }
    assert_eq!(
        tpl["ansible_user"],
        json!({"__ansible_unsafe": "admin"}),
        "the template's user comes from its tag"
    );
    assert_eq!(tpl["virtup_generation"], json!(2));

    // Damaged metadata and vanished domains are warnings inside the document, naming the culprit.
    let warnings = doc["_meta"]["virtup_warnings"].to_string();
    assert!(warnings.contains("broken.json"), "{warnings}");
    assert!(
        warnings.contains("instance `gone` is skipped"),
        "{warnings}"
    );
    assert_eq!(
        doc["all"]["vars"]["virtup_inventory_warnings"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Where each instance of the metadata that is no host lives (`gone` has no domain, `foreign` is
    // hidden), for the roles' placement; hosts say it in their own `virtup_uri`.
    let uri = json!({"__ansible_unsafe": format!("test://{}", f.node().display())});
    assert_eq!(
        doc["all"]["vars"]["virtup_recorded_uris"],
        json!({"foreign": uri, "gone": uri}),
        "{doc}"
    );
}

#[test]
fn host_answers_one_host_or_nothing() {
    let f = Fixture::new();
    let (code, out, err) = f.run(&["--host", "web1"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let vars: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        vars["virtup_template"],
        json!({"__ansible_unsafe": "debian-12"})
    );
    let (code, out, _) = f.run(&["--host", "nosuch"]);
    assert_eq!((code, out.trim()), (0, "{}"));
}

#[test]
fn refreshes_virt_up_inventory_yaml_only_when_it_changes() {
    let f = Fixture::new();
    f.run(&["--list"]);
    let path = f.data().join("inventory.yaml");
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(
        first.contains("    virt_up_managed:\n      hosts:\n        \"web1\":\n"),
        "{first}"
    );
    assert!(
        !first.contains("\"db1\""),
        "no address, not listed (as virt-up does): {first}"
    );
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&path);
    f.run(&["--list"]);
    assert_eq!(
        mtime(&path),
        before,
        "an unchanged inventory is not rewritten"
    );
}

/// `virtup_inventory --list` of `uris` alone, with empty config and data dirs under `dir`.
fn list_uris(dir: &tempfile::TempDir, uris: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtup_inventory"))
        .arg("--list")
        .env("VIRTUP_DATA_HOME", dir.path().join("data"))
        .env("VIRTUP_CONFIG_HOME", dir.path().join("config"))
        .env(virtup_cli::inventory::URIS_ENV, uris)
        .output()
        .unwrap()
}

#[test]
fn unreachable_hypervisor_is_a_warning_and_no_data_dir_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let out = list_uris(&dir, "test:///nonexistent/node.xml");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["_meta"]["virtup_warnings"][0]
            .as_str()
            .unwrap()
            .contains("cannot list `test:///nonexistent/node.xml`"),
        "{doc}"
    );
    assert!(!dir.path().join("data").exists());
}

/// A listed URI with a password is a warning naming its host, never connected and never repeated.
#[test]
fn a_uri_with_a_password_is_not_listed_or_shown() {
    let dir = tempfile::tempdir().unwrap();
    let out = list_uris(&dir, "qemu+ssh://root:s3/cret@h9/system");
    assert_eq!(out.status.code(), Some(0));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3/cret"), "{text}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["_meta"]["virtup_warnings"][0],
        "a URI for `h9` is not listed: it holds a password (`user:password@`); give the user alone",
        "{doc}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let f = Fixture::new();
    assert_eq!(f.run(&[]).0, 2);
    assert_eq!(f.run(&["--bogus"]).0, 2);
    assert_eq!(f.run(&["--list", "--host", "x"]).0, 2);
}

/// Metadata files whose names no instance can have (a space, `..`, a newline, bytes that are not
/// UTF-8) are warnings like any damaged file: the inventory and `virt-up --list` still list the rest.
#[test]
fn odd_metadata_file_names_are_warnings_not_failures() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let inst = f.data().join("instance");
    let body = r#"{"schema": 1, "template": "debian-12", "user": "virt", "inventory": true}"#;
    for name in [
        &b"a b.json"[..],
        b"a..b.json",
        b"new\nline.json",
        b"caf\xe9.json",
    ] {
        std::fs::write(inst.join(std::ffi::OsStr::from_bytes(name)), body).unwrap();
    }
    let (code, out, err) = f.run(&["--list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "stderr must stay empty on success");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hosts(&doc, "virtup_instances"), ["db1", "web1"]);
    let warnings: Vec<String> =
        serde_json::from_value(doc["_meta"]["virtup_warnings"].clone()).unwrap();
    for want in [
        "instance `a b` is skipped: invalid metadata file name `a b.json`: not a valid instance name: `a b` contains a space",
        "instance `a..b` is skipped: invalid metadata file name `a..b.json`",
        "instance `new\\nline` is skipped: invalid metadata file name `new\\nline.json`",
        "instance `caf\u{fffd}` is skipped: invalid metadata file name `caf\u{fffd}.json`: not a valid instance name: the file name is not UTF-8",
    ] {
        assert!(
            warnings.iter().any(|w| w.starts_with(want)),
            "no warning starting with {want:?} in {warnings:#?}"
        );
    }
    assert!(warnings.iter().all(|w| !w.contains('\n')), "{warnings:#?}");

    // `virt-up --list` (the same collection): the instances, and the same warnings on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_virt-up"))
        .arg("--list")
        .env("VIRTUP_DATA_HOME", f.data())
        .env("VIRTUP_CONFIG_HOME", f.dir.path().join("config"))
        .env(
            "LIBVIRT_DEFAULT_URI",
            format!("test://{}", f.node().display()),
        )
        .env_remove(virtup_cli::inventory::URIS_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("web1 ")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("instance `a b` is skipped: invalid metadata file name `a b.json`"),
        "{stderr}"
    );
}

#[test]
fn a_damaged_owner_id_is_one_warning_naming_it() {
    let f = Fixture::new();
    std::fs::write(f.data().join("owner-id"), "nope\n").unwrap();
    let (code, out, err) = f.run(&["--list"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let warnings = doc["_meta"]["virtup_warnings"].to_string();
    assert_eq!(warnings.matches("owner-id").count(), 1, "{warnings}");
    assert!(!warnings.contains("not one virtup made"), "{warnings}");
    assert!(hosts(&doc, "virtup_templates").is_empty(), "{out}");
}
