//! Layer 4: the `virt-up` command line on real guests: create (with passwords from files), list, log in,
//! run a playbook through the dynamic inventory, delete; deleting a template that still has a clone is
//! refused; the given passwords appear in no output and on no command line.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use virtup_e2e::audit::CmdlineSampler;
use virtup_e2e::{
    in_repo, lab_home, pool_volumes, repo_root, run, virsh, Run, Sandbox, BASE_TEMPLATE,
};

/// `bin/virt-up`, as scripts/build installs it (with `bin/virtup_inventory` beside it).
fn virt_up_exe() -> PathBuf {
    let exe = repo_root().join("bin/virt-up");
    assert!(
        exe.exists() && repo_root().join("bin/virtup_inventory").exists(),
        "{} is missing: run scripts/build",
        exe.display()
    );
    exe
}

/// Runs `virt-up ARGS` in the sandbox's config and data dirs, from the repository root.
fn virt_up(sb: &Sandbox, args: &[&str], limit: Duration) -> Run {
    run(
        in_repo(virt_up_exe())
            .args(args)
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data()),
        limit,
    )
}

fn show(r: &Run) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        r.status, r.stdout, r.stderr
    )
}

/// Deletes the instance through the CLI however the test ends (the module as a fallback).
struct Cleanup<'a>(&'a Sandbox, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let r = virt_up(
            self.0,
            &[self.1, "--delete", "--yes", "--quiet"],
            Duration::from_secs(300),
        );
        if !r.status.success() {
            let _ = self.0.module(
                "virtup_instance",
                &serde_json::json!({"name": self.1, "state": "absent", "wait_timeout": 120}),
            );
        }
    }
}

/// The `--list` row of `name`, split into its columns.
fn row(list: &str, name: &str) -> Option<Vec<String>> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
}

#[test]
fn create_list_login_playbook_and_delete_through_the_cli() {
    lab_home();
    let sb = Sandbox::shared();
    sb.base_template();
    let name = "e2e-cli1";
    let _cleanup = Cleanup(&sb, name);

    // Passwords from 0600 files (`--password file:PATH`), random per run; searched for in every output below.
    let pw_dir = tempfile::tempdir().unwrap();
    let mut given = Vec::new();
    for option in ["password", "root-password"] {
        let value = format!(
            "Cli-{option}-{:x}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let file = pw_dir.path().join(option);
        std::fs::write(&file, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        given.push((option, value, format!("file:{}", file.display())));
    }
    // A fixed address (`--address`: a DHCP reservation virtup adds and removes with the instance).
    let fixed = virtup_e2e::free_addresses(1).remove(0);
    let sampler = CmdlineSampler::start(Duration::from_millis(100));
    let created = virt_up(
        &sb,
        &[
            name,
            "--template",
            BASE_TEMPLATE,
            "--address",
            &fixed,
            "--memory",
            "512",
            "--password",
            &given[0].2,
            "--root-password",
            &given[1].2,
        ],
        Duration::from_secs(1500),
    );
    let (cmdlines, _) = sampler.finish();
    assert!(created.status.success(), "create: {}", show(&created));
    // The module was given them: it keeps the guest's passwords as its secrets.
    for (option, value, _) in &given {
        let stored = sb
            .data()
            .join("secrets")
            .join(name)
            .join(option.replace('-', "_"));
        assert_eq!(
            std::fs::read_to_string(&stored).unwrap_or_default().trim(),
            value,
            "--{option} did not reach {}",
            stored.display()
        );
    }
    let mut outputs = vec![
        (
            "sampled command lines".to_owned(),
            cmdlines.into_iter().collect::<Vec<_>>().join("\n"),
        ),
        ("create".to_owned(), show(&created)),
    ];
    let meta = sb.data().join("instance").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&meta).unwrap_or_else(|e| panic!("{}: {e}", meta.display()));
    outputs.push((meta.display().to_string(), text));
    // virt-up's static inventory, when something refreshed it already.
    let yaml = sb.data().join("inventory.yaml");
    if let Ok(text) = std::fs::read_to_string(&yaml) {
        outputs.push((yaml.display().to_string(), text));
    }
    assert!(
        created
            .stdout
            .contains(&format!("instance `{name}` is up at {fixed} ")),
        "{}",
        show(&created)
    );
    assert!(
        virtup_e2e::virsh(&["net-dumpxml", "default"])
            .contains(&format!("name='{name}' ip='{fixed}'")),
        "the reservation is in the network"
    );

    // --list: running, with an address and the login user.
    let list = virt_up(&sb, &["--list"], Duration::from_secs(120));
    assert!(list.status.success(), "{}", show(&list));
    let cols =
        row(&list.stdout, name).unwrap_or_else(|| panic!("{name} not listed: {}", show(&list)));
    assert_eq!(cols[1], BASE_TEMPLATE, "{}", list.stdout);
    assert_eq!(cols[2], "running", "{}", list.stdout);
    assert_eq!(cols[3], fixed, "{}", list.stdout);
    assert_eq!(cols[4], "virt", "{}", list.stdout);
    assert!(
        row(&list.stdout, &format!("VIRTUP-{BASE_TEMPLATE}")).is_none(),
        "templates only with --all: {}",
        list.stdout
    );
    let all = virt_up(&sb, &["--list", "--all"], Duration::from_secs(120));
    let tcols = row(&all.stdout, &format!("VIRTUP-{BASE_TEMPLATE}"))
        .unwrap_or_else(|| panic!("template not listed with --all: {}", show(&all)));
    assert_eq!(tcols[1], BASE_TEMPLATE);

    // --login --command: pinned host key, virtup's key, the remote exit status passed through.
    let login = virt_up(
        &sb,
        &[name, "--login", "--command", "hostname"],
        Duration::from_secs(300),
    );
    assert!(login.status.success(), "{}", show(&login));
    assert_eq!(login.stdout.trim(), name, "{}", show(&login));
    let failing = virt_up(
        &sb,
        &[name, "--login", "--command", "exit 7"],
        Duration::from_secs(300),
    );
    assert_eq!(failing.status.code(), Some(7), "{}", show(&failing));

    // --playbook: ansible-playbook through virtup_inventory, limited to the instance.
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("mark.yml");
    std::fs::write(
        &playbook,
        "- hosts: all\n  gather_facts: false\n  tasks:\n\
         \x20   - name: Mark the guest\n      become: true\n\
         \x20     ansible.builtin.copy:\n        dest: /etc/virtup-cli-mark\n\
         \x20       content: \"{{ inventory_hostname }} {{ virtup_template }}\\n\"\n        mode: \"0644\"\n",
    )
    .unwrap();
    let played = virt_up(
        &sb,
        &[name, "--playbook", playbook.to_str().unwrap()],
        Duration::from_secs(600),
    );
    assert!(played.status.success(), "{}", show(&played));
    assert!(
        played.stdout.contains(name) && played.stdout.contains("changed=1"),
        "{}",
        show(&played)
    );
    let mark = virt_up(
        &sb,
        &[name, "--login", "--command", "cat /etc/virtup-cli-mark"],
        Duration::from_secs(300),
    );
    assert_eq!(
        mark.stdout.trim(),
        format!("{name} {BASE_TEMPLATE}"),
        "{}",
        show(&mark)
    );

    // --console: the running instance's serial console, attached as a terminal would be (`script`
    // gives virsh the TTY it insists on; the console stays open until `timeout` ends it).
    let console = run(
        Command::new("timeout")
            .args(["10", "script", "-qec"])
            .arg(format!("{} {name} --console", virt_up_exe().display()))
            .arg("/dev/null")
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data()),
        Duration::from_secs(60),
    );
    assert!(
        console
            .stdout
            .contains(&format!("Connected to domain '{name}'")),
        "{}",
        show(&console)
    );

    // The template has a clone: deleting it is refused, naming the clone, and nothing is removed.
    let refused = virt_up(
        &sb,
        &[BASE_TEMPLATE, "--delete", "--yes"],
        Duration::from_secs(300),
    );
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        refused.stderr.contains("is used by") && refused.stderr.contains(name),
        "{}",
        show(&refused)
    );
    virsh(&["dominfo", &format!("VIRTUP-{BASE_TEMPLATE}")]);

    // Without a terminal and without --yes, --delete refuses.
    let unconfirmed = virt_up(&sb, &[name, "--delete"], Duration::from_secs(120));
    assert_eq!(unconfirmed.status.code(), Some(1), "{}", show(&unconfirmed));
    assert!(
        unconfirmed.stderr.contains("pass --yes"),
        "{}",
        show(&unconfirmed)
    );
    virsh(&["dominfo", name]);

    let deleted = virt_up(&sb, &[name, "--delete", "--yes"], Duration::from_secs(300));
    assert!(deleted.status.success(), "{}", show(&deleted));
    assert!(
        !virtup_e2e::virsh(&["net-dumpxml", "default"]).contains(&format!("name='{name}'")),
        "the reservation went with the instance"
    );
    for (label, r) in [
        ("--list", &list),
        ("--list --all", &all),
        ("--login", &login),
        ("--login (failing)", &failing),
        ("--playbook", &played),
        ("--login (mark)", &mark),
        ("--delete (refused)", &refused),
        ("--delete (unconfirmed)", &unconfirmed),
        ("--delete", &deleted),
    ] {
        outputs.push((label.to_owned(), show(r)));
    }
    for (option, value, _) in &given {
        for (label, text) in &outputs {
            assert!(
                !text.contains(value.as_str()),
                "the --{option} given leaked into {label}"
            );
        }
    }
    assert!(
        deleted
            .stdout
            .contains(&format!("deleted instance `{name}`")),
        "{}",
        show(&deleted)
    );
    let gone = run(
        Command::new("virsh").args(["-c", "qemu:///system", "dominfo", name]),
        Duration::from_secs(60),
    );
    assert!(!gone.status.success(), "domain {name} still exists");
    assert!(
        !pool_volumes()
            .iter()
            .any(|v| v.starts_with(&format!("{name}.")) || v.starts_with(&format!("{name}-"))),
        "volumes of {name} left behind"
    );
    assert!(!sb.data().join(format!("instance/{name}.json")).exists());
    let list = virt_up(&sb, &["--list"], Duration::from_secs(120));
    assert!(row(&list.stdout, name).is_none(), "{}", show(&list));
}
