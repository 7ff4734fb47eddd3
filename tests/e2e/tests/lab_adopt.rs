//! Layer 4: switching from virt-up (docs/migrate-from-virt-up.md) on what virt-up 2.2.0 itself made in the lab (a base
//! domain `VIRTUP-<template>` and one clone, in virtup's own config and data dirs; virt-up 2.2.0 from PyPI, installed
//! offline in a throwaway venv): listed as not adopted, refused, previewed in check mode, adopted with `--adopt` (host key
//! pinned without trusting the network, passwords out of the record), then managed, logged in to and deleted by virtup
//! (its own disk only), while the base stays virt-up's and virt-up 2.2.0 still guards it.
//!
//! The wheels come from cargo's target tmp dir (`virt-up-2.2.0-wheels`), which `cli_virt_up_compat` fills from PyPI
//! outside the lab (the lab's namespace has no route to PyPI). Without them this test fails, saying so; it never skips.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use virtup_e2e::{
    in_repo, lab_home, pool_volumes, repo_root, run, run_ok, ssh_instance, virsh, virsh_quiet,
    wait_for_libvirt, Run, Sandbox,
};

const VIRT_UP: &str = "virt-up==2.2.0";

/// Each virt-up command builds with virt-builder, virt-sysprep and virt-install and boots a guest under TCG
/// (minutes each on the lab's 2 cores); a generous bound that still ends a hung run.
const STEP_LIMIT: Duration = Duration::from_secs(15 * 60);

/// How long virt-up may wait for port 22 after it reported the clone's address. Its own wait is 121 tries (about
/// 4 minutes), and on a stock Debian image its clones' sshd does not start (virt-sysprep removes the host keys,
/// which Debian does not make again; the lab's image does, with `ssh-hostkeys.service`), so it is stopped after this
/// instead: a clone whose sshd works opens port 22 within seconds of its lease, and the clone is complete
/// (metadata, MAC, inventory) before that wait begins.
const SSH_GRACE: Duration = Duration::from_secs(120);

/// The wheels of virt-up 2.2.0 and its dependencies, as `cli_virt_up_compat` keeps them.
fn wheelhouse() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("virt-up-2.2.0-wheels");
    let has_wheel = std::fs::read_dir(&dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("virt_up-2.2.0-")
        })
    });
    assert!(
        has_wheel,
        "{} holds no virt-up 2.2.0 wheel, and the lab cannot reach PyPI: run \
         `cargo nextest run -p virtup-cli --test cli_virt_up_compat` outside the lab first (it fills that directory)",
        dir.display()
    );
    dir
}

/// True when `name` holds `tag` not followed by a digit, so that run 123's tag does not match run 1234's names.
fn holds_tag(name: &str, tag: &str) -> bool {
    name.match_indices(tag)
        .any(|(i, _)| !name[i + tag.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// A run's output lines (stdout and stderr, as they came), each with the seconds since it started.
struct Timed {
    lines: Vec<(f64, String)>,
    /// `None`: stopped by us, `grace` after the line we were waiting for.
    status: Option<ExitStatus>,
    secs: f64,
}

impl Timed {
    /// Seconds at the first line containing `text`.
    fn at(&self, text: &str) -> Option<f64> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(t, _)| *t)
    }

    /// Seconds from the first line containing `from` to the first containing `to`, for the log.
    fn phase(&self, from: &str, to: &str) -> String {
        match (self.at(from), self.at(to)) {
            (Some(a), Some(z)) => format!("{:.1} s", z - a),
            _ => "?".to_owned(),
        }
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|(t, l)| format!("{t:8.2} {l}\n"))
            .collect()
    }
}

/// Runs `cmd`, timestamping each output line as it comes (and echoing it to stderr, so a CI log shows where the
/// time went). Panics unless it ends within `limit`; with `stop = (text, grace)`, it is killed `grace` after a
/// line containing `text` instead of being waited for. [`virtup_e2e::run`] keeps no times per line, hence this.
fn run_timed(cmd: &mut Command, limit: Duration, stop: Option<(&str, Duration)>) -> Timed {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel::<String>();
    fn forward(stream: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    forward(child.stdout.take().unwrap(), tx.clone());
    forward(child.stderr.take().unwrap(), tx);
    let mut deadline = start + limit;
    let mut stopping = false;
    let mut lines = Vec::new();
    // Until both streams close (the command ends) or the deadline passes.
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let t = start.elapsed().as_secs_f64();
                eprintln!("  virt-up 2.2.0 {t:7.1}s | {line}");
                if let Some((text, grace)) = stop {
                    if !stopping && line.contains(text) {
                        stopping = true;
                        deadline = deadline.min(Instant::now() + grace);
                    }
                }
                lines.push((t, line));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // Its streams closed: it is ending. Otherwise the deadline passed and it is killed.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let timed = Timed {
        lines,
        status,
        secs: start.elapsed().as_secs_f64(),
    };
    assert!(
        timed.status.is_some() || stopping,
        "{cmd:?} did not finish within {limit:?}:\n{}",
        timed.text()
    );
    timed
}

/// virt-up 2.2.0 in a throwaway venv, and what it made with it in the lab: the base domain `VIRTUP-<template>`
/// and the clone, every name holding this run's tag, in `sb`'s config and data dirs (the ones virtup is given
/// too). Dropping it removes those domains and volumes in whatever state they are, then the venv and the sandbox.
struct VirtUp222 {
    /// In every name this run gives libvirt (see [`holds_tag`]).
    tag: String,
    template: String,
    clone: String,
    sb: Sandbox,
    venv: tempfile::TempDir,
}

impl VirtUp222 {
    /// Installs virt-up 2.2.0 offline and writes the template section virt-up will build from.
    fn install() -> VirtUp222 {
        let wheels = wheelhouse();
        let tag = format!("vmig{}", std::process::id());
        // This run's names must be free: what holds the tag is deleted at the end.
        let volumes = pool_volumes();
        let taken: Vec<&String> = volumes.iter().filter(|v| holds_tag(v, &tag)).collect();
        let domains = virsh(&["list", "--all", "--name"]);
        let taken_domains: Vec<&str> = domains.lines().filter(|d| holds_tag(d, &tag)).collect();
        assert!(
            taken.is_empty() && taken_domains.is_empty(),
            "the lab already holds {taken:?} {taken_domains:?} with this run's tag `{tag}` (left by an earlier run?): \
             the test would delete them; remove them by hand"
        );

        let venv = tempfile::Builder::new()
            .prefix("virt-up-2.2.0-")
            .tempdir()
            .unwrap();
        let t0 = Instant::now();
        run_ok(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv.path()),
            Duration::from_secs(300),
            "python3 -m venv",
        );
        run_ok(
            Command::new(venv.path().join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-index",
                    "--find-links",
                ])
                .arg(&wheels)
                .arg(VIRT_UP),
            Duration::from_secs(600),
            "pip install virt-up 2.2.0 from the wheelhouse",
        );
        eprintln!(
            "lab_adopt: venv with {VIRT_UP} installed offline in {:.1} s",
            t0.elapsed().as_secs_f64()
        );

        let sb = Sandbox::new();
        let template = tag.clone();
        // As bench/clone's peer: the lab's virt-builder image, an os-variant the lab's osinfo-db knows, the
        // address from the DHCP lease (the image has no guest agent configured for virt-up), the lab's
        // accelerator, and a user of virt-up's own (its default is the current user, root here, which it
        // cannot `useradd`).
        let virt_type = std::env::var("VIRTUP_VIRT_TYPE").unwrap_or_else(|_| "kvm".to_owned());
        let cfg = format!(
            "[{template}]\n\
             desc = virt-up 2.2.0 objects for virtup to adopt\n\
             os-version = debian-12\n\
             os-variant = debian11\n\
             username = virt\n\
             address-source = lease\n\
             virt-install-args = --virt-type {virt_type}\n\
             memory = 512\n\
             vcpus = 1\n"
        );
        let dir = sb.config().join("templates.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("adopt.cfg"), cfg).unwrap();
        VirtUp222 {
            clone: format!("{tag}-c"),
            tag,
            template,
            sb,
            venv,
        }
    }

    /// virt-up's base domain for the template.
    fn base(&self) -> String {
        format!("VIRTUP-{}", self.template)
    }

    /// `virt-up ARGS` in the sandbox's config and data dirs, on the lab's system hypervisor (virt-up's
    /// default is `qemu:///session`).
    fn virt_up(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.venv.path().join("bin/virt-up"));
        cmd.args(args)
            .env("VIRTUP_CONFIG_HOME", self.sb.config())
            .env("VIRTUP_DATA_HOME", self.sb.data())
            .env("LIBVIRT_DEFAULT_URI", "qemu:///system")
            // Lines as they happen, so their times are virt-up's.
            .env("PYTHONUNBUFFERED", "1");
        cmd
    }

    /// `virt-up create --template T`: builds, starts and addresses the base domain.
    fn create_base(&self) -> Timed {
        let out = run_timed(
            &mut self.virt_up(&["create", "--template", &self.template]),
            STEP_LIMIT,
            None,
        );
        assert!(
            out.status.is_some_and(|s| s.success()),
            "virt-up 2.2.0 create --template {} failed ({:?}):\n{}",
            self.template,
            out.status,
            out.text()
        );
        eprintln!(
            "lab_adopt: virt-up 2.2.0 base build ({}): {:.1} s (virt-builder {}, virt-install+boot+lease {})",
            self.base(),
            out.secs,
            out.phase("Building image file", "Importing instance"),
            out.phase("Importing instance", "has address"),
        );
        out
    }

    /// `virt-up create NAME --template T`: stops the base, clones it, waits for the clone's address and then its
    /// port 22 (stopped [`SSH_GRACE`] after the address, see there). Returns the run and whether virt-up saw port 22.
    fn create_clone(&self) -> (Timed, bool) {
        let has_address = format!("Instance '{}' has address", self.clone);
        let out = run_timed(
            &mut self.virt_up(&["create", &self.clone, "--template", &self.template]),
            STEP_LIMIT,
            Some((&has_address, SSH_GRACE)),
        );
        let up = out
            .lines
            .iter()
            .any(|(_, l)| l.contains(&format!("Instance '{}' is up", self.clone)));
        assert!(
            out.at(&has_address).is_some() && (up || out.status.is_none()),
            "virt-up 2.2.0 create {} --template {} failed ({:?}):\n{}",
            self.clone,
            self.template,
            out.status,
            out.text()
        );
        let ssh = if up {
            format!("virt-up saw port 22 open after {:.1} s", out.secs)
        } else {
            format!(
                "virt-up did not see port 22 open within {SSH_GRACE:?} of the address (stopped it)"
            )
        };
        eprintln!(
            "lab_adopt: virt-up 2.2.0 clone ({}): address after {:.1} s (stop its base {}, qemu-img {}, virt-sysprep {}, \
             virt-install {}, boot to lease {}); {ssh}",
            self.clone,
            out.at(&has_address).unwrap_or_default(),
            out.phase("Stopping instance", "Cloning"),
            out.phase("Cloning", "Preparing target image"),
            out.phase("Preparing target image", "Importing instance"),
            out.phase("Importing instance", "Waiting for instance"),
            out.phase("Waiting for instance", "has address"),
        );
        (out, up)
    }

    /// virt-up's metadata of instance `name` (`<data>/instance/<name>.json`).
    fn meta(&self, name: &str) -> Value {
        let path = self.sb.data().join(format!("instance/{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
    }

    /// Removes this run's domains and volumes, whatever state they are in (virtup may already have removed some).
    fn remove_objects(&self) {
        wait_for_libvirt();
        // The clone first: its disk is an overlay on the base's.
        for domain in [self.clone.as_str(), &self.base()] {
            virsh_quiet(&["destroy", domain]);
            if !virsh_quiet(&["undefine", "--managed-save", "--nvram", domain]) {
                virsh_quiet(&["undefine", domain]);
            }
        }
        // Whatever holds the tag: virt-up's `<name>.qcow2`, and what virtup made under these names. Overlays before
        // what they are on, by deleting the longer names (the clone's) first.
        let mut volumes: Vec<String> = pool_volumes()
            .into_iter()
            .filter(|v| holds_tag(v, &self.tag))
            .collect();
        volumes.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for v in volumes {
            virsh_quiet(&["vol-delete", "--pool", "default", &v]);
        }
    }
}

impl Drop for VirtUp222 {
    fn drop(&mut self) {
        // No panic may escape a drop that runs while a failed test unwinds. The venv and the sandbox (with any
        // files virtup added to the data dir) go with the fields.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.remove_objects())).is_err()
        {
            eprintln!(
                "lab_adopt: cleanup failed: domains or volumes holding `{}` may be left",
                self.tag
            );
        }
    }
}

/// The clone's one NIC's MAC, from `virsh domiflist` (Interface, Type, Source, Model, MAC).
fn domain_mac(domain: &str) -> String {
    let list = virsh(&["domiflist", domain]);
    list.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(4))
        .next()
        .unwrap_or_else(|| panic!("no NIC in `virsh domiflist {domain}`:\n{list}"))
        .to_owned()
}

/// Port 22 at `address`, asked once from this (the lab's) namespace, for the log: open with its banner, or why not.
fn port22(address: &str) -> String {
    let addr: std::net::SocketAddr = format!("{address}:22").parse().unwrap();
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut banner = [0u8; 64];
            let n = s.read(&mut banner).unwrap_or(0);
            format!(
                "open, banner {:?}",
                String::from_utf8_lossy(&banner[..n]).trim()
            )
        }
        Err(e) => format!("closed ({e})"),
    }
}

/// `bin/virt-up` (virtup's, as scripts/build installs it) in the sandbox's config and data dirs.
fn virtup(sb: &Sandbox, args: &[&str]) -> Run {
    let exe = repo_root().join("bin/virt-up");
    assert!(
        exe.exists(),
        "{} is missing: run scripts/build",
        exe.display()
    );
    run(
        in_repo(exe)
            .args(args)
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("VIRTUP_DATA_HOME", sb.data())
            .env("LIBVIRT_DEFAULT_URI", "qemu:///system")
            .stdin(std::process::Stdio::null()),
        STEP_LIMIT,
    )
}

fn show(r: &Run) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        r.status, r.stdout, r.stderr
    )
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn virt_up_objects_are_adoptable() {
    lab_home();
    let start = Instant::now();
    let vu = VirtUp222::install();
    let (base, clone) = (vu.base(), vu.clone.clone());
    vu.create_base();
    let (_, virt_up_saw_ssh) = vu.create_clone();
    eprintln!(
        "lab_adopt: virt-up 2.2.0 setup done after {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // What virt-up 2.2.0 leaves: the clone running (and autostarted), the base stopped (virt-up stops it to
    // clone it), and in the data dir their metadata and MACs.
    assert_eq!(virsh(&["domstate", &clone]).trim(), "running");
    assert_eq!(virsh(&["domstate", &base]).trim(), "shut off");
    let meta = vu.meta(&clone);
    assert!(meta["cloned"].is_string(), "{meta}");
    assert_eq!(meta["from"], Value::from(base.as_str()), "{meta}");
    let disk = meta["disk"].as_str().unwrap_or_else(|| panic!("{meta}"));
    assert!(
        disk.ends_with(&format!("/{clone}.qcow2")) && Path::new(disk).is_file(),
        "{meta}"
    );
    assert!(
        pool_volumes().contains(&format!("{clone}.qcow2")),
        "the clone's disk is a volume of pool `default`"
    );
    let base_meta = vu.meta(&base);
    assert!(base_meta.get("cloned").is_none(), "{base_meta}");
    let macs: Value =
        serde_json::from_str(&std::fs::read_to_string(vu.sb.data().join("macaddrs.json")).unwrap())
            .unwrap();
    assert_eq!(
        macs[&clone],
        Value::from(domain_mac(&clone)),
        "macaddrs.json: {macs}"
    );

    // How the clone is reachable, for the log (with the lab's image, which makes missing host keys, its sshd runs).
    let address = meta["address"].as_str().unwrap_or_else(|| panic!("{meta}"));
    let lease = virsh(&["domifaddr", &clone, "--source", "lease"]);
    eprintln!(
        "lab_adopt: clone {clone}: virt-up's address {address}; lease:\n{}",
        lease.trim_end()
    );
    eprintln!(
        "lab_adopt: clone {clone}: virt-up saw port 22: {virt_up_saw_ssh}; port 22 now: {}",
        port22(address)
    );

    // --- virtup, pointed at the same config and data dirs -------------------------------------------
    let user_pw = meta["user"]["password"].as_str().unwrap().to_owned();
    let root_pw = meta["root"]["password"].as_str().unwrap().to_owned();
    let base_disk = vu.meta(&base)["disk"].as_str().unwrap().to_owned();

    // Said as what it is: listed, marked, never as virtup's; the warning names the command that adopts it.
    let list = virtup(&vu.sb, &["--list", "--all"]);
    assert!(list.status.success(), "{}", show(&list));
    let row = |name: &str| {
        list.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {}", show(&list)))
            .to_owned()
    };
    assert!(
        row(&clone).contains("running (virt-up 2.2.0, not adopted)"),
        "{}",
        show(&list)
    );
    assert!(
        row(&base).contains("(virt-up 2.2.0, not adopted)"),
        "{}",
        show(&list)
    );
    assert!(
        list.stderr.contains(&format!("`virt-up {clone} --adopt`")),
        "{}",
        show(&list)
    );
    let inventory = run(
        in_repo(repo_root().join("bin/virtup_inventory"))
            .arg("--list")
            .env("VIRTUP_CONFIG_HOME", vu.sb.config())
            .env("VIRTUP_DATA_HOME", vu.sb.data()),
        Duration::from_secs(120),
    )
    .assert_ok("virtup_inventory --list");
    let inventory: Value = serde_json::from_str(&inventory.stdout).unwrap();
    assert!(
        inventory["_meta"]["hostvars"].get(&clone).is_none()
            && !inventory["virtup_instances"]["hosts"]
                .as_array()
                .unwrap()
                .contains(&Value::from(clone.as_str())),
        "not listed as virtup's: {inventory}"
    );
    let warned = inventory["_meta"]["virtup_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w.as_str()
                .unwrap()
                .contains(&format!("`virt-up {clone} --adopt`"))
        })
        .count();
    assert_eq!(
        warned, 1,
        "one warning names the command that adopts it: {inventory}"
    );

    // The module says what it is, and with `adopt: true` in check mode reports the adoption and makes none.
    let args =
        json!({"name": clone, "template": vu.template, "state": "running", "wait_timeout": 600});
    let (doc, _) = vu.sb.module("virtup_instance", &args);
    assert!(
        doc["failed"] == json!(true)
            && doc["msg"]
                .as_str()
                .unwrap()
                .contains("made by virt-up 2.2.0")
            && doc["msg"].as_str().unwrap().contains("adopt: true"),
        "{doc}"
    );
    let mut check = args.clone();
    check["adopt"] = json!(true);
    check["_ansible_check_mode"] = json!(true);
    check["_ansible_diff"] = json!(true);
    let doc = vu.sb.ok("virtup_instance", &check);
    assert!(
        doc["changed"] == json!(true) && doc["msg"].as_str().unwrap().starts_with("would adopt"),
        "{doc}"
    );
    assert_eq!(doc["diff"]["after"]["adopted"], json!(true), "{doc}");
    assert_eq!(
        vu.meta(&clone),
        meta,
        "check mode left virt-up's record as it was"
    );
    assert!(
        virsh(&["dumpxml", &clone]).find("virtup").is_none(),
        "check mode tagged nothing"
    );
    assert_eq!(
        virsh(&["domstate", &clone]).trim(),
        "running",
        "check mode stopped nothing"
    );

    // No terminal and no --yes: refused, and nothing changed.
    let unasked = virtup(&vu.sb, &[&clone, "--adopt"]);
    assert!(
        !unasked.status.success() && unasked.stderr.contains("pass --yes"),
        "{}",
        show(&unasked)
    );
    assert_eq!(
        vu.meta(&clone),
        meta,
        "the refused adoption left virt-up's record as it was"
    );

    // What adoption must keep: the guest's machine-id (read from its disk while it runs: virt-cat only reads) and so
    // its DHCP client id and address.
    let machine_id = run_ok(
        Command::new("virt-cat").args(["-d", &clone, "/etc/machine-id"]),
        Duration::from_secs(300),
        "virt-cat /etc/machine-id",
    )
    .stdout;
    assert_eq!(machine_id.trim().len(), 32, "{machine_id:?}");
    let t = Instant::now();
    let adopted = virtup(&vu.sb, &[&clone, "--adopt", "--yes"]);
    assert!(adopted.status.success(), "{}", show(&adopted));
    assert!(
        adopted
            .stdout
            .contains(&format!("adopted instance `{clone}`")),
        "{}",
        show(&adopted)
    );
    eprintln!("lab_adopt: virtup adopted {clone} (shut down, key installed offline, started, login proven) in {:.1} s", t.elapsed().as_secs_f64());
    for secret in [&user_pw, &root_pw] {
        assert!(
            !adopted.stdout.contains(secret.as_str()) && !adopted.stderr.contains(secret.as_str())
        );
    }

    // Secrets audit: the passwords are in 0600 files under secrets/, in no other file of the data dir.
    let mut holders = Vec::new();
    for entry in walk(&vu.sb.data()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        if text.contains(user_pw.as_str()) || text.contains(root_pw.as_str()) {
            holders.push(entry);
        }
    }
    let secrets = vu.sb.data().join("secrets").join(&clone);
    holders.sort();
    assert_eq!(
        holders,
        vec![secrets.join("password"), secrets.join("root_password")],
        "only the 0600 secret files hold the passwords"
    );
    for f in &holders {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(secrets.join("password")).unwrap(),
        user_pw
    );
    let record = vu.meta(&clone);
    assert_eq!(record["schema"], Value::from(1), "{record}");
    // virt-up's own keys stay in virtup's record, so that virt-up 2.2.0 still refuses to delete the base the
    // adopted clone rests on: asked to, by virt-up 2.2.0 itself.
    assert_eq!(record["from"], Value::from(base.as_str()), "{record}");
    assert_eq!(record["image_format"], Value::from("qcow2"), "{record}");
    let refused = run(&mut vu.virt_up(&["destroy", &base]), STEP_LIMIT);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("in use by"),
        "virt-up 2.2.0 destroy {base}: {}",
        show(&refused)
    );
    assert!(
        virsh_quiet(&["dominfo", &base]),
        "virt-up 2.2.0 kept the base"
    );

    // It is virtup's now: the module finds it as it is (changed twice false, `adopt: true` a no-op),
    // and the login is verified against the key pinned at the adoption (StrictHostKeyChecking=yes).
    let mut args = args;
    args["adopt"] = json!(true);
    for run_no in 1..=2 {
        let doc = vu.sb.ok("virtup_instance", &args);
        assert_eq!(doc["changed"], Value::Bool(false), "run {run_no}: {doc}");
        if run_no == 2 {
            let hostname = ssh_instance(
                &doc,
                "hostname; cat /etc/ssh/ssh_host_ed25519_key.pub; cat /etc/machine-id",
            );
            assert!(hostname.starts_with(&clone), "{hostname}");
            assert_eq!(
                hostname.lines().nth(2),
                Some(machine_id.trim()),
                "its machine-id stays"
            );
            assert_eq!(
                doc["instance"]["address"],
                Value::from(address),
                "its address stays: {doc}"
            );
            let pinned = std::fs::read_to_string(vu.sb.data().join("known_hosts")).unwrap();
            let guest_key: Vec<&str> = hostname
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect();
            assert!(
                pinned.contains(&guest_key.join(" ")),
                "the guest's key is the pinned one:\n{pinned}\n{hostname}"
            );
        }
    }
    // virt-up's RSA key still logs in (adoption appends to authorized_keys, never replaces it), checked against
    // the pinned key too.
    let rsa = meta["user"]["ssh_identity"].as_str().unwrap();
    let doc = vu.sb.ok("virtup_instance", &args);
    let mut with_rsa = doc.clone();
    with_rsa["instance"]["ssh_private_key_file"] = Value::from(rsa);
    assert_eq!(ssh_instance(&with_rsa, "id -un").trim(), "virt");

    // Deleted by virtup: its own disk only; the base and the base's disk stay virt-up's.
    let deleted = virtup(&vu.sb, &[&clone, "--delete", "--yes"]);
    assert!(deleted.status.success(), "{}", show(&deleted));
    assert!(
        !virsh_quiet(&["dominfo", &clone]),
        "the adopted domain is gone"
    );
    let volumes = pool_volumes();
    assert!(!volumes.contains(&format!("{clone}.qcow2")), "{volumes:?}");
    assert!(virsh_quiet(&["dominfo", &base]), "the base stays");
    assert!(Path::new(&base_disk).is_file(), "the base's disk stays");
    assert_eq!(
        vu.meta(&base)["disk"],
        Value::from(base_disk.as_str()),
        "the base's record stays"
    );

    eprintln!(
        "lab_adopt: test body done after {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
