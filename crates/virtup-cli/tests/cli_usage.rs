//! The built `virt-up` binary: help, exit codes, usage errors, secrets refused on argv, `--init`, `--show-paths`, confirmations.
//!
//! No guest is needed: whatever talks to libvirt uses the in-memory test driver (`test:///default`).

// These tests check the built binaries' process-level behaviour (exit code, raw stdout and stderr,
// stdin pipes) with std's `Command`, independently of `virtup_guest::Cmd`, which the binaries use.
#![allow(clippy::disallowed_types)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A private config and data dir per test.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_virt-up"));
        c.args(args)
            .env("VIRTUP_CONFIG_HOME", self.config())
            .env("VIRTUP_DATA_HOME", self.data())
            .env("LIBVIRT_DEFAULT_URI", "test:///default")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Out {
        Out::from(self.cmd(args).output().unwrap())
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(o.stdout).unwrap(),
            stderr: String::from_utf8(o.stderr).unwrap(),
        }
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

#[test]
fn help_shows_the_seed_usage_and_every_flag() {
    let sb = Sandbox::new();
    for flag in ["--help", "-h"] {
        let out = sb.run(&[flag]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
        for line in [
            "virt-up [--name] <NAME> [--template <TEMPLATE>] [create options]",
            "virt-up [--name] <NAME> --login [--sftp | --command \"<COMMAND>\"]",
            "virt-up [--name] <NAME> --playbook <PLAYBOOK>",
            "virt-up [--name] <NAME> --delete | --delete --all",
            "virt-up --init [--force]",
            "virt-up --list [--all]",
            "virt-up --show-templates | --show-paths",
        ] {
            assert!(out.stdout.contains(line), "{line:?} missing: {out:?}");
        }
        for f in [
            "--init",
            "--list",
            "--show-templates",
            "--show-paths",
            "--delete",
            "--login",
            "--playbook",
            "--template",
            "--root-password",
            "--user",
            "--password",
            "--size",
            "--memory",
            "--vcpus",
            "--graphics",
            "--dns-domain",
            "--no-clone",
            "--no-inventory",
            "--sftp",
            "--command",
            "--all",
            "--yes",
            "--quiet",
            "--debug",
            "--force",
            "--version",
        ] {
            assert!(out.stdout.contains(f), "{f} missing from --help: {out:?}");
        }
        assert!(out.stdout.contains("file:PATH"), "{out:?}");
    }
}

#[test]
fn version_prints_name_and_version() {
    let out = Sandbox::new().run(&["--version"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("virt-up {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_flags_are_usage_errors_with_exit_2() {
    let sb = Sandbox::new();
    for argv in [
        &["--bogus"][..],
        &[],
        &["--list", "--init"],
        &["--list", "web1"],
        &["web1", "--memory", "lots"],
        &["web1", "--graphics", "sdl"],
        &["web1", "--sftp"],
        &["--login"],
        &["--delete", "--all", "web1"],
        &["--show-paths", "--template", "x"],
        &["web1", "--force"],
    ] {
        let out = sb.run(argv);
        assert_eq!(out.code, 2, "{argv:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{argv:?}: {out:?}");
        assert!(out.stderr.contains("--help"), "{argv:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{argv:?}: {out:?}");
    }
}

#[test]
fn a_password_on_the_command_line_is_refused_and_never_echoed() {
    let sb = Sandbox::new();
    for (flag, value) in [
        ("--password", "Sup3r-S3cret"),
        ("--root-password", "password:Sup3r-S3cret"),
    ] {
        let out = sb.run(&["web1", flag, value]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.contains(&format!("{flag} takes `file:PATH`")),
            "{out:?}"
        );
        assert!(out.stderr.contains("`-`"), "{out:?}");
        assert!(!out.stderr.contains("Sup3r-S3cret"), "{out:?}");
        assert!(!sb.data().exists(), "nothing may be written: {out:?}");
    }
}

#[test]
fn password_files_and_stdin_are_read_before_anything_else() {
    let sb = Sandbox::new();
    let missing = sb.dir.path().join("no-such-file");
    let out = sb.run(&["web1", "--password", &format!("file:{}", missing.display())]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("virt-up: error: failed to read --password from `"),
        "{out:?}"
    );
    // Read from stdin, the password is accepted; what fails next is the missing template.
    let mut child = sb
        .cmd(&["web1", "--password", "-", "--template", "nosuch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"Sup3r-S3cret\n").unwrap();
    let out = Out::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("template `nosuch` does not exist"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("Sup3r-S3cret"), "{out:?}");
    // An empty line is no password.
    let mut child = sb
        .cmd(&["web1", "--root-password", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"\n").unwrap();
    let out = Out::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--root-password is empty"), "{out:?}");
}

#[test]
fn init_writes_commented_config_and_refuses_to_overwrite_without_force() {
    let sb = Sandbox::new();
    let out = sb.run(&["--init"]);
    assert_eq!(out.code, 0, "{out:?}");
    let settings = sb.config().join("settings.cfg");
    for f in [
        settings.clone(),
        sb.config().join("templates.d/debian.cfg"),
        sb.config().join("templates.d/ubuntu.cfg"),
        sb.config().join("templates.d/cloud-image.cfg"),
    ] {
        assert!(f.is_file(), "{} missing: {out:?}", f.display());
        assert!(out.stdout.contains(&f.display().to_string()), "{out:?}");
    }
    let text = std::fs::read_to_string(&settings).unwrap();
    assert!(
        text.contains("[common]") && text.contains("#pool = default"),
        "{text}"
    );

    // The modules' config loader reads what was written.
    let shown = sb.run(&["--show-templates"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stderr.is_empty(), "no config warnings: {shown:?}");
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("debian-12 ") && l.contains("Debian 12 (bookworm)")),
        "{shown:?}"
    );

    std::fs::write(&settings, "[common]\npool = mine\n").unwrap();
    let again = sb.run(&["--init"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("`{}` exists", settings.display())),
        "{again:?}"
    );
    assert!(again.stderr.contains("--force"), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "[common]\npool = mine\n",
        "nothing may be overwritten without --force"
    );

    let forced = sb.run(&["--init", "--force", "--quiet"]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(forced.stdout.is_empty(), "--quiet: {forced:?}");
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), text);
}

#[test]
fn show_paths_prints_virt_up_assignments() {
    let sb = Sandbox::new();
    let out = sb.run(&["--show-paths"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (c, d) = (sb.config(), sb.data());
    let c = c.display();
    let d = d.display();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..5],
        [
            format!("VIRTUP_CONFIG_HOME=\"{c}\""),
            format!("VIRTUP_DATA_HOME=\"{d}\""),
            format!("VIRTUP_SSHKEYS=\"{d}/sshkeys\""),
            format!("VIRTUP_PLAYBOOKS=\"{c}/playbooks\""),
            format!("VIRTUP_INVENTORY=\"{d}/inventory.yaml\""),
        ]
    );
    assert!(
        lines.contains(&"LIBVIRT_DEFAULT_URI=\"test:///default\""),
        "{out:?}"
    );
    assert!(!sb.data().exists(), "--show-paths creates nothing");
}

#[test]
fn list_prints_a_table_header_even_when_empty() {
    let out = Sandbox::new().run(&["--list", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout
            .lines()
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "TEMPLATE", "STATE", "ADDRESS", "USER"])
    );
}

#[test]
fn unknown_names_are_one_readable_error_line() {
    let sb = Sandbox::new();
    for (argv, want) in [
        (
            &["ghost", "--delete", "--yes"][..],
            "no instance or template named `ghost`",
        ),
        (&["ghost", "--login"], "no instance named `ghost`"),
        (
            &["ghost", "--playbook", "site.yml"],
            "no instance named `ghost`",
        ),
    ] {
        let out = sb.run(argv);
        assert_eq!(out.code, 1, "{argv:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{argv:?}: {out:?}");
        assert!(
            out.stderr.starts_with("virt-up: error: ") && out.stderr.contains(want),
            "{argv:?}: {out:?}"
        );
    }
}

#[test]
fn delete_without_a_terminal_or_yes_refuses_and_keeps_everything() {
    let sb = Sandbox::new();
    // An instance as virtup records it; the refusal comes before libvirt is asked to do anything.
    let meta_dir = sb.data().join("instance");
    std::fs::create_dir_all(&meta_dir).unwrap();
    let meta = meta_dir.join("web1.json");
    std::fs::write(
        &meta,
        r#"{"schema": 1, "name": "web1", "template": "debian-12", "user": "virt"}"#,
    )
    .unwrap();
    let out = sb.run(&["web1", "--delete"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("instance `web1`"), "{out:?}");
    assert!(out.stderr.contains("pass --yes"), "{out:?}");
    assert!(meta.exists(), "refused means nothing deleted");

    let all = sb.run(&["--delete", "--all"]);
    assert_eq!(all.code, 1, "{all:?}");
    assert!(all.stderr.contains("pass --yes"), "{all:?}");
    assert!(meta.exists());
}

#[test]
fn debug_shows_every_cause_quiet_shows_only_errors() {
    let sb = Sandbox::new();
    let missing = sb.dir.path().join("no-such-file");
    let pw = format!("file:{}", missing.display());
    let plain = sb.run(&["web1", "--password", &pw]);
    assert_eq!(plain.code, 1, "{plain:?}");
    assert_eq!(plain.stderr.lines().count(), 1, "{plain:?}");
    assert!(
        plain.stderr.contains("No such file or directory"),
        "{plain:?}"
    );
    let debug = sb.run(&["web1", "--password", &pw, "--debug"]);
    assert_eq!(debug.code, 1, "{debug:?}");
    let lines: Vec<&str> = debug.stderr.lines().collect();
    assert!(
        lines[0].starts_with("virt-up: error: failed to read --password"),
        "{debug:?}"
    );
    assert!(
        lines[1].starts_with("  caused by: No such file or directory"),
        "{debug:?}"
    );
    assert!(!debug.stderr.contains("backtrace"), "{debug:?}");

    std::fs::create_dir_all(sb.config()).unwrap();
    std::fs::write(
        sb.config().join("settings.cfg"),
        "[common]\nmemory = lots\n",
    )
    .unwrap();
    let out = sb.run(&["--show-templates", "--quiet"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.contains("settings.cfg") && out.stderr.contains("memory"),
        "{out:?}"
    );
}

#[test]
fn a_domain_virtup_did_not_make_is_never_touched() {
    let sb = Sandbox::new();
    // libvirt's test driver always has a domain named `test`.
    let out = sb.run(&["test", "--template", "debian-12"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("domain `test` exists but was not made by virtup with this data dir; refusing to touch it"),
        "{out:?}"
    );
    let del = sb.run(&["test", "--delete", "--yes"]);
    assert_eq!(del.code, 1, "{del:?}");
    assert!(
        del.stderr.contains("no instance or template named `test`"),
        "{del:?}"
    );
}

/// `--delete --all` deletes only the templates this data dir's ownership ledger lists: a template
/// of another user or data dir on the same hypervisor is theirs (issue 14).
#[test]
fn delete_all_leaves_templates_of_other_data_dirs_alone() {
    let sb = Sandbox::new();
    let node = sb.dir.path().join("node.xml");
    std::fs::write(
        &node,
        r#"<node>
  <domain type="test">
    <name>VIRTUP-theirs</name><memory>65536</memory><os><type>hvm</type></os>
    <metadata><virtup:tag xmlns:virtup="https://virtup.dev/xmlns/domain/1" kind="template" generation="1"><virtup:name>theirs</virtup:name></virtup:tag></metadata>
  </domain>
</node>"#,
    )
    .unwrap();
    let uri = format!("test://{}", node.display());
    let run = |args: &[&str]| {
        Out::from(
            sb.cmd(args)
                .env("LIBVIRT_DEFAULT_URI", &uri)
                .output()
                .unwrap(),
        )
    };
    let out = run(&["--delete", "--all", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to delete"), "{out:?}");
    assert!(!format!("{out:?}").contains("theirs"), "{out:?}");
    // A record of it on another hypervisor proves nothing here (its tag is from before owner ids).
    let owned = sb.data().join("owned");
    std::fs::create_dir_all(&owned).unwrap();
    let record = |uri: &str| {
        let doc = serde_json::json!({"volumes": [{"uri": uri, "pool": "default", "name": "VIRTUP-theirs-g1.qcow2", "key": "/k"}]});
        std::fs::write(owned.join("VIRTUP-theirs.json"), doc.to_string()).unwrap();
    };
    // (The other hypervisor is libvirt's built-in test driver: it answers, with no such template.)
    record("test:///default");
    let out = run(&["--delete", "--all", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to delete"), "{out:?}");
    // A recorded hypervisor that cannot be listed may hold the template: "all" is not claimed.
    let gone = format!(
        "test://{}",
        sb.dir.path().join("no-such-node.xml").display()
    );
    record(&gone);
    let out = run(&["--delete", "--all", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("not everything could be found") && out.stderr.contains(&gone),
        "{out:?}"
    );
    // With this data dir's record of the template on this hypervisor, it is this data dir's to delete.
    record(&uri);
    let out = run(&["--delete", "--all", "--yes"]);
    assert!(format!("{out:?}").contains("template `theirs`"), "{out:?}");
    // Deleting it by name from another default hypervisor goes where the record puts it (the
    // record again: the test driver forgets the deletion, the ledger does not).
    record(&uri);
    let out = Out::from(
        sb.cmd(&["theirs", "--delete", "--yes"])
            .env("LIBVIRT_DEFAULT_URI", "test:///default")
            .output()
            .unwrap(),
    );
    assert!(
        format!("{out:?}").contains("template `theirs`")
            && !out.stderr.contains("no instance or template named"),
        "{out:?}"
    );
    // Recorded on two remote hypervisors and not on the default one: which to delete is asked, by
    // the inventory names, before any connection.
    let _ = std::fs::remove_file(owned.join("VIRTUP-theirs.json"));
    for (id, host) in [("0000000a", "h8"), ("0000000b", "h9")] {
        let doc = serde_json::json!({"volumes": [{"uri": format!("qemu+ssh://root@{host}/system"), "pool": "default", "name": "VIRTUP-theirs-g1.qcow2", "key": "/k", "attached": true}]});
        std::fs::write(
            owned.join(format!("VIRTUP-theirs@{id}.json")),
            doc.to_string(),
        )
        .unwrap();
    }
    let out = run(&["theirs", "--delete", "--yes"]);
    assert!(
        out.stderr
            .contains("template `theirs` lives on 2 hypervisors")
            && out.stderr.matches("`VIRTUP-theirs@").count() == 2,
        "{out:?}"
    );
}

#[test]
fn names_the_modules_refuse_are_refused_by_the_cli_before_anything_happens() {
    let sb = Sandbox::new();
    for (argv, want) in [
        (&["db_primary"][..], "`db_primary` contains `_`"),
        (&["VIRTUP-x-g1"], "virtup's naming scheme for templates"),
        (
            &["x", "--template", "deb_", "--no-clone"],
            "`deb_` ends with `_`",
        ),
        (&["x", "--user", "root"], "`root` is the superuser"),
    ] {
        let out = sb.run(argv);
        assert_eq!(out.code, 1, "{argv:?}: {out:?}");
        assert!(
            out.stderr
                .starts_with("virt-up: error: invalid value for `")
                && out.stderr.contains(want),
            "{argv:?}: {out:?}"
        );
        assert!(!sb.data().exists(), "{argv:?} wrote to the data dir");
    }
}

#[test]
fn a_domain_virtup_did_not_make_is_named_as_it_is_never_as_missing() {
    let sb = Sandbox::new();
    let inst = sb.data().join("instance");
    std::fs::create_dir_all(&inst).unwrap();
    // The test driver's own domain `test` (no virtup tag), recorded here in virt-up 2.2.0's format (no schema).
    let legacy = r#"{"template": "default", "hostname": "test", "memory": 512, "vcpus": "1",
        "user": {"username": "alice", "ssh_identity": "/h/sshkeys/alice/id_rsa"}, "from": "VIRTUP-default"}"#;
    std::fs::write(inst.join("test.json"), legacy).unwrap();
    let out = sb.run(&["test", "--login", "--command", "true"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("domain `test` exists on `test:///default`")
            && out.stderr.contains("virt-up 2.2.0's format")
            && out.stderr.contains("virt-up test --adopt"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("no domain"), "{out:?}");
    assert!(!out.stderr.contains("--delete"), "{out:?}");
    let list = sb.run(&["--list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stderr
            .contains("instance `test` is skipped: probably virt-up 2.2.0 made it"),
        "{list:?}"
    );
    // Recorded in virtup's own format, the same foreign domain is still never called missing.
    let virtup = r#"{"schema": 1, "name": "test", "template": "t", "user": "virt", "uri": "test:///default"}"#;
    std::fs::write(inst.join("test.json"), virtup).unwrap();
    let out = sb.run(&["test", "--login", "--command", "true"]);
    assert!(
        out.stderr
            .contains("is not the one virtup made for it with this data dir"),
        "{out:?}"
    );
    // A domain that is really gone is said so.
    std::fs::write(
        inst.join("ghost2.json"),
        virtup.replace("\"test\"", "\"ghost2\""),
    )
    .unwrap();
    let out = sb.run(&["ghost2", "--login", "--command", "true"]);
    assert!(out.stderr.contains("has metadata but no domain"), "{out:?}");
}

/// `--adopt` checks virt-up's records against the domain before anything changes, and names each
/// mismatch; the test driver's domain `test` (MAC aa:bb:cc:dd:ee:ff, disk /guest/diskimage1) plays
/// a clone virt-up 2.2.0 made. (The adoption itself is proven on a real guest in `lab_adopt`.)
#[test]
fn adopt_refuses_what_does_not_match_virt_ups_records_and_changes_nothing() {
    let sb = Sandbox::new();
    let inst = sb.data().join("instance");
    std::fs::create_dir_all(&inst).unwrap();
    let clone = |disk: &str| {
        format!(
            r#"{{"template": "vmig", "hostname": "test", "disk": "{disk}", "cloned": "2026-12-02 10:01:00",
            "from": "VIRTUP-vmig", "user": {{"username": "alice", "password": "pw-in-clear"}}}}"#
        )
    };
    let adopt = |want: &str| {
        let before = std::fs::read(inst.join("test.json")).unwrap();
        let out = sb.run(&["test", "--adopt", "--yes"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr.contains("cannot adopt `test`") && out.stderr.contains(want),
            "want {want:?}: {out:?}"
        );
        assert!(out.stderr.contains("nothing was changed"), "{out:?}");
        assert!(!out.stderr.contains("pw-in-clear"), "{out:?}");
        assert_eq!(
            std::fs::read(inst.join("test.json")).unwrap(),
            before,
            "the record is untouched"
        );
    };
    std::fs::write(inst.join("test.json"), clone("/guest/diskimage1")).unwrap();
    adopt("has no MAC for it");
    let macs = sb.data().join("macaddrs.json");
    std::fs::write(&macs, r#"{"test": "52:54:00:00:00:01"}"#).unwrap();
    adopt("its domain's MAC is aa:bb:cc:dd:ee:ff, but virt-up recorded 52:54:00:00:00:01");
    std::fs::write(&macs, r#"{"test": "AA:BB:CC:DD:EE:FF"}"#).unwrap();
    std::fs::write(inst.join("test.json"), clone("/pool/test.qcow2")).unwrap();
    adopt("virt-up recorded its disk as `/pool/test.qcow2`, but its domain's disks are `/guest/diskimage1`");
    // The test driver's disk is in no pool: only a pool's volume has the key the ledger records.
    std::fs::write(inst.join("test.json"), clone("/guest/diskimage1")).unwrap();
    adopt("its disk `/guest/diskimage1` is in no storage pool");
    // A base (no `cloned`) is a template.
    std::fs::write(
        inst.join("test.json"),
        r#"{"template": "vmig", "disk": "/guest/diskimage1", "user": {"username": "alice"}}"#,
    )
    .unwrap();
    adopt("adopting templates is not supported yet");
    // Already virtup's, or not there: nothing to adopt.
    std::fs::write(
        inst.join("test.json"),
        r#"{"schema": 1, "name": "test", "template": "t", "user": "virt", "uri": "test:///default"}"#,
    )
    .unwrap();
    let out = sb.run(&["test", "--adopt", "--yes"]);
    assert!(out.stderr.contains("is already virtup's"), "{out:?}");
    let out = sb.run(&["nosuch", "--adopt", "--yes"]);
    assert!(out.stderr.contains("no instance named `nosuch`"), "{out:?}");
    // Without --yes and without a terminal, nothing is asked and nothing done.
    std::fs::write(inst.join("test.json"), clone("/guest/diskimage1")).unwrap();
    let out = sb.run(&["test", "--adopt"]);
    assert_ne!(out.code, 0, "{out:?}");
    // Not adopted, it is never deleted, and its record stays as virt-up wrote it.
    let out = sb.run(&["test", "--delete", "--yes"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("made by virt-up 2.2.0 and is not adopted"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(inst.join("test.json")).unwrap(),
        clone("/guest/diskimage1")
    );
    // A virt-up record with no domain here (virt-up's default hypervisor is qemu:///session) is never
    // removed: it is virt-up's only copy of that guest's passwords.
    std::fs::write(inst.join("gone.json"), clone("/p/gone.qcow2")).unwrap();
    let out = sb.run(&["gone", "--login", "--command", "true"]);
    assert!(
        out.stderr.contains("virt-up 2.2.0's record but no domain")
            && !out.stderr.contains("--delete"),
        "{out:?}"
    );
    sb.run(&["gone", "--delete", "--yes"]);
    let all = sb.run(&["--delete", "--all", "--yes"]);
    assert!(
        all.stderr
            .contains("`gone` is skipped: virt-up 2.2.0 made it"),
        "{all:?}"
    );
    assert_eq!(
        std::fs::read_to_string(inst.join("gone.json")).unwrap(),
        clone("/p/gone.qcow2")
    );
    // A name virtup could not manage afterwards is refused before anything happens.
    std::fs::write(inst.join("my_vm.json"), clone("/guest/diskimage1")).unwrap();
    let out = sb.run(&["my_vm", "--adopt", "--yes"]);
    assert!(
        out.stderr
            .contains("cannot adopt `my_vm`: virtup could not manage it afterwards"),
        "{out:?}"
    );
    // A damaged record: where, never the value (it may be a password).
    std::fs::write(
        inst.join("test.json"),
        r#"{"template": "t", "disk": "/p", "cloned": "x", "from": "VIRTUP-t", "user": {"username": "alice", "password": 987654321}}"#,
    )
    .unwrap();
    let out = sb.run(&["test", "--adopt", "--yes"]);
    assert!(out.stderr.contains("line 1 column"), "{out:?}");
    assert!(!out.stderr.contains("987654321"), "{out:?}");
}
