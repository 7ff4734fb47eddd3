//! Layer 3: the built module binaries run with args files, the way Ansible runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// A private config and data dir per test, so tests never see each other's state or the user's.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let sb = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        // libvirt's test driver names its pool `default-pool`; saying so in settings.cfg also
        // proves that the modules read virt-up's config.
        std::fs::create_dir_all(sb.config()).unwrap();
        std::fs::write(
            sb.config().join("settings.cfg"),
            "[common]\npool = default-pool\n",
        )
        .unwrap();
        sb
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `module` with `args` written to an args file; returns (exit code, parsed stdout, raw stdout, stderr).
    fn run(&self, module: &str, args: &Value) -> (i32, Value, String, String) {
        let file = self.dir.path().join("args");
        std::fs::write(&file, serde_json::to_vec(args).unwrap()).unwrap();
        self.run_file(module, &file)
    }

    fn run_file(&self, module: &str, file: &Path) -> (i32, Value, String, String) {
        let exe = match module {
            "virtup_template" => env!("CARGO_BIN_EXE_virtup_template"),
            "virtup_instance" => env!("CARGO_BIN_EXE_virtup_instance"),
            "virtup_host" => env!("CARGO_BIN_EXE_virtup_host"),
            other => panic!("no module {other}"),
        };
        let out = Command::new(exe)
            .arg(file)
            .env("VIRTUP_CONFIG_HOME", self.config())
            .env("VIRTUP_DATA_HOME", self.data())
            // Layer 3 must not need a hypervisor: libvirt's test driver is a real driver held in memory.
            .env("LIBVIRT_DEFAULT_URI", "test:///default")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("stdout of {module} is not one JSON document ({e}): {stdout:?}")
        });
        (out.status.code().unwrap_or(-1), doc, stdout, stderr)
    }
}

fn failed_naming(doc: &Value, code: i32, needle: &str) {
    assert_eq!(doc["failed"], json!(true), "expected failure: {doc}");
    assert_eq!(code, 1, "a failure exits 1: {doc}");
    let msg = doc["msg"].as_str().expect("msg");
    assert!(msg.contains(needle), "msg should name {needle:?}: {msg}");
}

#[test]
fn bad_input_fails_naming_the_option() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "virtup_template",
            json!({"name": "../x", "os_version": "debian-12"}),
            "name",
        ),
        (
            "virtup_template",
            json!({"name": "a b", "os_version": "debian-12"}),
            "name",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "memory": 0}),
            "memory",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "memory": "lots"}),
            "memory",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "size": "12Q"}),
            "size",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "d", "image": "/x.qcow2"}),
            "image",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "state": "gone"}),
            "state",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "bogus": 1}),
            "Unsupported parameters for (virtup_template) module: bogus",
        ),
        ("virtup_template", json!({"name": "nosuch"}), "os_version"),
        (
            "virtup_template",
            json!({"name": "t", "image": "/srv/x.qcow2"}),
            "checksum",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "vcpus": -1}),
            "vcpus",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "user": "r oot"}),
            "user",
        ),
        (
            "virtup_instance",
            json!({"name": "i/1", "template": "t"}),
            "name",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "nosuch"}),
            "template",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "t", "vcpus": "many"}),
            "vcpus",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "t", "clone": "deep"}),
            "clone",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "t", "address_source": ["lease", "psychic"]}),
            "address_source",
        ),
        ("virtup_instance", json!({}), "name"),
    ];
    for (module, args, needle) in cases {
        let sb = Sandbox::new();
        let (code, doc, _, _) = sb.run(module, args);
        failed_naming(&doc, code, needle);
        // Bad input fails before any side effect: not even the data dir is created.
        assert!(
            !sb.data().exists(),
            "{module} {args} wrote to the data dir before failing"
        );
    }
}

#[test]
fn malformed_args_file_is_a_clean_failure() {
    let sb = Sandbox::new();
    let file = sb.dir.path().join("args");
    std::fs::write(&file, b"{\"name\": \"t\", ").unwrap();
    let (code, doc, _, _) = sb.run_file("virtup_template", &file);
    assert_eq!(doc["failed"], json!(true));
    assert_eq!(code, 1);
}

#[test]
fn secrets_never_appear_in_output() {
    let secret = "Sup3r-S3cret-Value";
    let sb = Sandbox::new();
    for args in [
        json!({"name": "t", "os_version": "debian-12", "memory": "lots", "password": secret}),
        json!({"name": "t", "os_version": "debian-12", "root_password": secret, "bogus": secret}),
        json!({"name": format!("bad {secret}"), "os_version": "debian-12", "password": secret}),
    ] {
        let (code, doc, stdout, stderr) = sb.run("virtup_template", &args);
        assert_eq!(code, 1, "{doc}");
        assert!(!stdout.contains(secret), "secret in stdout: {stdout}");
        assert!(!stderr.contains(secret), "secret in stderr: {stderr}");
    }
}

#[test]
fn absent_when_nothing_exists_is_unchanged_in_check_and_real_mode() {
    for module in ["virtup_template", "virtup_instance"] {
        for check in [true, false] {
            let sb = Sandbox::new();
            let args = json!({"name": "nothing-here", "state": "absent", "_ansible_check_mode": check,
                              "_ansible_diff": true, "_ansible_some_future_key": {"x": 1}});
            let (code, doc, _, _) = sb.run(module, &args);
            assert_eq!(code, 0, "{module}: {doc}");
            assert_eq!(doc["changed"], json!(false), "{module}: {doc}");
            assert!(
                doc.get("failed").is_none_or(|f| f == &json!(false)),
                "{doc}"
            );
        }
    }
}

#[test]
fn wrapper_form_is_accepted_for_hand_testing() {
    let sb = Sandbox::new();
    let (code, doc, _, _) = sb.run(
        "virtup_instance",
        &json!({"ANSIBLE_MODULE_ARGS": {"name": "nothing-here", "state": "absent"}}),
    );
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["changed"], json!(false));
}

#[test]
fn host_defines_what_is_missing_and_check_mode_only_reports() {
    let sb = Sandbox::new();
    let args = json!({"pool": "virtup-pool", "pool_path": "/virtup-pool", "probe_kvm": false});
    let mut check = args.clone();
    check["_ansible_check_mode"] = json!(true);
    let (code, doc, _, _) = sb.run("virtup_host", &check);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["changed"], json!(true), "{doc}");
    assert_eq!(
        doc["host"]["pool"],
        Value::Null,
        "check mode must not define the pool: {doc}"
    );
    assert_eq!(doc["host"]["pool_writable"], Value::Null, "{doc}");
    assert!(
        doc["actions"][0]
            .as_str()
            .unwrap()
            .contains("define directory pool `virtup-pool`"),
        "{doc}"
    );

    let (code, doc, _, _) = sb.run("virtup_host", &args);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["host"]["pool"]["active"], json!(true), "{doc}");
    assert_eq!(doc["host"]["pool"]["autostart"], json!(true), "{doc}");
    assert_eq!(doc["host"]["pool_writable"], json!(true), "{doc}");
    assert_eq!(doc["host"]["network"]["active"], json!(true), "{doc}");
    assert!(!sb.data().exists(), "virtup_host needs no data dir");
}

#[test]
fn host_bad_input_names_the_option() {
    let sb = Sandbox::new();
    for (args, needle) in [
        (json!({"network_bridge": "bad name!"}), "`network_bridge`"),
        (json!({"network_address": "192.168.1"}), "`network_address`"),
        (json!({"pool_path": "relative/dir"}), "`pool_path`"),
        (json!({"pool": "../x"}), "`pool`"),
        (json!({"probe_kvm": "perhaps"}), "probe_kvm"),
    ] {
        let (code, doc, _, _) = sb.run("virtup_host", &args);
        failed_naming(&doc, code, needle);
    }
}
