//! Layer 3: the built module binaries run with args files, the way Ansible runs them.

// These tests check the built binaries' process-level behaviour (exit code, raw stdout and stderr,
// stdin pipes) with std's `Command`, independently of `virtup_guest::Cmd`, which the binaries use.
#![allow(clippy::disallowed_types)]

mod common;
use common::{own, TEMPLATE_NODE_XML};

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
    // User-data often holds passwords: a refusal names the key or line, never the text.
    for args in [
        json!({"name": "i", "template": "t", "cloud_init": {"user_data": {"hostname": "x", "chpasswd": {"list": secret}}}}),
        json!({"name": "i", "template": "t", "cloud_init": {"user_data": format!("#cloud-config\n{{password: {secret}}}\n")}}),
        json!({"name": "i", "template": "t", "cloud_init": {"user_data": format!("{secret}: x\n")}}),
        json!({"name": "i", "template": "t", "memory": "lots", "cloud_init": {"user_data": {"password": secret}}}),
    ] {
        let (code, doc, stdout, stderr) = sb.run("virtup_instance", &args);
        assert_eq!(code, 1, "{doc}");
        assert!(!stdout.contains(secret), "secret in stdout: {stdout}");
        assert!(!stderr.contains(secret), "secret in stderr: {stderr}");
    }
}

/// `address_source` items may hold several sources, as virt-up's config writes them: the module
/// splits and checks them (no Ansible choices, which would refuse `lease, agent`).
#[test]
fn address_sources_may_share_one_item() {
    let sb = Sandbox::new();
    for sources in [
        json!("lease, agent"),
        json!(["lease agent", "arp"]),
        json!(["dns"]),
    ] {
        let args = json!({"name": "nothing-here", "state": "absent", "address_source": sources});
        let (code, doc, _, _) = sb.run("virtup_instance", &args);
        assert_eq!(code, 0, "{sources}: {doc}");
    }
    let args = json!({"name": "nothing-here", "state": "absent", "address_source": "lease, lease"});
    let (code, doc, _, _) = sb.run("virtup_instance", &args);
    failed_naming(&doc, code, "`address_source`");
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
    // libvirt's test driver reports a fixed free memory (a node file's driver cannot tell: null,
    // which `host_check_mode_boots_nothing` goes through): what placement weighs is passed on.
    assert!(doc["host"]["free_memory_mib"].as_u64().is_some(), "{doc}");
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
        (
            json!({"uri": "qemu+ssh://root:s3/cret@h9/system"}),
            "`uri` for `h9` holds a password",
        ),
    ] {
        let (code, doc, _, _) = sb.run("virtup_host", &args);
        failed_naming(&doc, code, needle);
        assert!(!doc.to_string().contains("s3/cret"), "{doc}");
    }
}

impl Sandbox {
    /// The URI of a test-driver node holding template `t`, private to this sandbox.
    fn template_node_uri(&self) -> String {
        let node = self.dir.path().join("node.xml");
        std::fs::write(&node, TEMPLATE_NODE_XML).unwrap();
        own(&self.data());
        format!("test://{}", node.display())
    }
}

/// Names that are valid file and domain names but that a real run cannot use (the hostname, the
/// template's hostname, the login user, the FQDN) or that are virtup's own naming scheme: check mode
/// refuses them as the real run does, before any side effect, naming the option.
#[test]
fn names_a_real_run_cannot_use_are_refused_up_front_in_check_mode_too() {
    let long_domain = format!("{0}.{0}.{0}.{1}", "d".repeat(63), "d".repeat(59));
    let cases: &[(&str, Value, &str)] = &[
        (
            "virtup_instance",
            json!({"name": "db_primary", "template": "t"}),
            "`name`: `db_primary` contains `_`: the instance name becomes the guest's hostname",
        ),
        (
            "virtup_instance",
            json!({"name": "web.1", "template": "t"}),
            "`name`: `web.1` contains `.`",
        ),
        (
            "virtup_instance",
            json!({"name": "web1-", "template": "t"}),
            "`name`: `web1-` ends with `-`",
        ),
        (
            "virtup_instance",
            json!({"name": "VIRTUP-t-g1", "template": "t"}),
            "virtup's naming scheme for templates",
        ),
        (
            "virtup_instance",
            json!({"name": "virtup-t", "template": "t"}),
            "`name`: `virtup-t` starts with `VIRTUP-`",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "t_"}),
            "`template`: `t_` ends with `_`",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "t", "user": "root"}),
            "`user`: `root` is the superuser",
        ),
        (
            "virtup_instance",
            json!({"name": "i1", "template": "t", "dns_domain": long_domain}),
            "`dns_domain`",
        ),
        (
            "virtup_template",
            json!({"name": "t_", "os_version": "debian-12"}),
            "`name`: `t_` ends with `_`",
        ),
        (
            "virtup_template",
            json!({"name": "t.", "os_version": "debian-12"}),
            "`name`: `t.` ends with `.`",
        ),
        (
            "virtup_template",
            json!({"name": "generic/t-", "os_version": "debian-12"}),
            "`name`",
        ),
        (
            "virtup_template",
            json!({"name": "t".repeat(57), "os_version": "debian-12"}),
            "longer than 56 characters",
        ),
        (
            "virtup_template",
            json!({"name": "t", "os_version": "debian-12", "user": "root"}),
            "`user`",
        ),
    ];
    for (module, args, needle) in cases {
        for check in [true, false] {
            let sb = Sandbox::new();
            let mut args = args.clone();
            args["uri"] = json!(sb.template_node_uri());
            args["_ansible_check_mode"] = json!(check);
            let (code, doc, _, _) = sb.run(module, &args);
            failed_naming(&doc, code, needle);
            assert_eq!(doc["changed"], json!(false), "{module} {args}: {doc}");
            // The fixture's owner id is all the data dir may hold.
            let written: Vec<String> = std::fs::read_dir(sb.data())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                written,
                ["owner-id"],
                "{module} {args} wrote to the data dir before failing"
            );
        }
    }
    // The same run with a usable name: check mode promises the clone, which is what differs.
    let sb = Sandbox::new();
    let args = json!({"name": "db-primary", "template": "t", "state": "present",
                      "uri": sb.template_node_uri(), "_ansible_check_mode": true});
    let (code, doc, _, _) = sb.run("virtup_instance", &args);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["changed"], json!(true), "{doc}");
}

/// Removing needs no hostname: names earlier versions accepted can still be cleaned up, but names in
/// virtup's template scheme are refused there too.
#[test]
fn absent_accepts_old_names_but_never_virtups_scheme() {
    let sb = Sandbox::new();
    for name in ["db_primary", "web.1"] {
        let (code, doc, _, _) = sb.run(
            "virtup_instance",
            &json!({"name": name, "state": "absent", "uri": sb.template_node_uri()}),
        );
        assert_eq!(code, 0, "{name}: {doc}");
        assert_eq!(doc["changed"], json!(false), "{name}: {doc}");
    }
    let (code, doc, _, _) = sb.run(
        "virtup_template",
        &json!({"name": "t_", "state": "absent", "uri": sb.template_node_uri()}),
    );
    assert_eq!(code, 0, "{doc}");
    let (code, doc, _, _) = sb.run(
        "virtup_instance",
        &json!({"name": "VIRTUP-t-g1", "state": "absent", "uri": sb.template_node_uri()}),
    );
    failed_naming(&doc, code, "virtup's naming scheme for templates");
}

/// A run that fails after it changed something says `changed: true`; one that fails on its input
/// says `changed: false`.
#[test]
fn a_failure_after_a_side_effect_reports_changed() {
    let sb = Sandbox::new();
    let uri = sb.template_node_uri();
    // The test driver cannot upload volumes: the create fails at the config disk, after the clone's
    // disk, keys and records were made.
    let (code, doc, _, _) = sb.run(
        "virtup_instance",
        &json!({"name": "i1", "template": "t", "state": "present", "uri": uri}),
    );
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert_eq!(
        doc["changed"],
        json!(true),
        "a failure after side effects must say so: {doc}"
    );
    assert!(sb.data().join("hostkeys").join("i1").exists(), "{doc}");

    let sb = Sandbox::new();
    let (code, doc, _, _) = sb.run(
        "virtup_instance",
        &json!({"name": "i_1", "template": "t", "state": "present", "uri": sb.template_node_uri()}),
    );
    failed_naming(&doc, code, "`name`");
    assert_eq!(doc["changed"], json!(false), "{doc}");
}

/// `virtup_host` in check mode has no side effect at all: no pool, no network, no probe guest.
#[test]
fn host_check_mode_boots_nothing() {
    let sb = Sandbox::new();
    let uri = sb.template_node_uri();
    let args = json!({"pool": "virtup-pool", "pool_path": "/virtup-pool", "network": "virtup-net",
                      "uri": uri, "probe_kvm": true, "_ansible_check_mode": true});
    let (code, doc, _, _) = sb.run("virtup_host", &args);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["changed"], json!(true), "{doc}");
    // The test driver offers no kvm: the capabilities decide without a guest, also in check mode.
    assert_eq!(doc["host"]["virt_type"], json!("qemu"), "{doc}");
    assert_eq!(doc["host"]["pool"], Value::Null, "{doc}");
    assert_eq!(doc["host"]["network"], Value::Null, "{doc}");
}

/// virt-up's `template-playbook` / `instance-playbook` (templates.d or [common]) are never accepted and
/// ignored: found (as given, else in the config's playbooks/), returned for the roles and virt-up to run,
/// the template playbook's content in the input digest; a missing one fails naming the key and where
/// it is set. `virt_sysprep_args` is an option of the instance module (where virt-sysprep runs), not
/// of the template module.
#[test]
fn config_playbooks_are_found_or_refused_never_ignored() {
    let sb = Sandbox::new();
    let tdir = sb.config().join("templates.d");
    let pdir = sb.config().join("playbooks");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        tdir.join("t.cfg"),
        "[tp]\nos-version = debian-12\ntemplate-playbook = custom.yml\ninstance-playbook = after.yml\n\n\
         [tq]\nos-version = debian-12\ntemplate-playbook = missing.yml\n\n\
         [plain]\nos-version = debian-12\n",
    )
    .unwrap();
    std::fs::write(pdir.join("custom.yml"), "- hosts: all\n  tasks: []\n").unwrap();
    std::fs::write(pdir.join("after.yml"), "- hosts: all\n  tasks: []\n").unwrap();
    let check = |module: &str, mut args: Value| {
        args["_ansible_check_mode"] = json!(true);
        sb.run(module, &args)
    };

    let (code, doc, _, _) = check("virtup_template", json!({"name": "tp"}));
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        doc["template"]["playbook"],
        json!(pdir.join("custom.yml")),
        "{doc}"
    );
    let digest = doc["template"]["digest"].clone();
    let (_, plain, _, _) = check("virtup_template", json!({"name": "plain"}));
    assert_eq!(plain["template"]["playbook"], Value::Null, "{plain}");
    // Editing the playbook changes the input digest (a new generation).
    std::fs::write(
        pdir.join("custom.yml"),
        "- hosts: all\n  tasks: [{ping: {}}]\n",
    )
    .unwrap();
    let (_, doc, _, _) = check("virtup_template", json!({"name": "tp"}));
    assert_ne!(doc["template"]["digest"], digest, "{doc}");

    let (code, doc, _, _) = check("virtup_template", json!({"name": "tq"}));
    failed_naming(
        &doc,
        code,
        "`template-playbook` of template `tq` (section `[tq]` of templates.d): playbook `missing.yml` not found",
    );
    // Removing needs no playbook.
    let (code, doc, _, _) = check("virtup_template", json!({"name": "tq", "state": "absent"}));
    assert_eq!(code, 0, "{doc}");

    std::fs::remove_file(pdir.join("after.yml")).unwrap();
    let (code, doc, _, _) = check("virtup_instance", json!({"name": "i1", "template": "tp"}));
    failed_naming(
        &doc,
        code,
        "`instance-playbook` of template `tp` (section `[tp]` of templates.d): playbook `after.yml` not found",
    );
    std::fs::write(
        sb.config().join("settings.cfg"),
        "[common]\npool = default-pool\ninstance-playbook = /nonexistent/common.yml\n",
    )
    .unwrap();
    let (code, doc, _, _) = check(
        "virtup_instance",
        json!({"name": "i1", "template": "plain"}),
    );
    failed_naming(
        &doc,
        code,
        "`instance-playbook` of template `plain` (`[common]` of settings.cfg)",
    );

    let (code, doc, _, _) = check(
        "virtup_template",
        json!({"name": "plain", "virt_sysprep_args": "--selinux-relabel"}),
    );
    failed_naming(
        &doc,
        code,
        "Unsupported parameters for (virtup_template) module: virt_sysprep_args",
    );
    std::fs::write(
        sb.config().join("settings.cfg"),
        "[common]\npool = default-pool\n",
    )
    .unwrap();
    let (code, doc, _, _) = check(
        "virtup_instance",
        json!({"name": "i1", "template": "plain", "virt_sysprep_args": "--run-command 'echo a b'"}),
    );
    assert_eq!(code, 0, "{doc}");
}
