//! Helpers for the end-to-end tests: find the repo and the lab, run commands with bounded waits, fail loudly outside the lab.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

pub mod audit;
pub mod journey;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The lab's home directory, as `tests/lab/lab exec` exports it.
///
/// End-to-end tests cannot run without the lab; they must fail loudly rather than skip, so that a CI run
/// that lost its lab is red.
pub fn lab_home() -> PathBuf {
    let home = std::env::var_os("VIRTUP_LAB_HOME").unwrap_or_else(|| {
        panic!("VIRTUP_LAB_HOME is not set: end-to-end tests run inside the lab (`tests/lab/lab exec cargo nextest run`)")
    });
    let netns = std::env::var("VIRTUP_LAB_NETNS").unwrap_or_default();
    let here = Command::new("ip")
        .args(["netns", "identify", &std::process::id().to_string()])
        .output()
        .expect("run `ip netns identify`");
    let here = String::from_utf8_lossy(&here.stdout).trim().to_string();
    assert!(
        !netns.is_empty() && here == netns,
        "end-to-end tests must run inside the lab's network namespace `{netns}` (this process is in `{here}`)"
    );
    PathBuf::from(home)
}

/// A path to a program in the lab's Python venv (ansible-playbook, ansible-doc, molecule).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = lab_home().join("venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `tests/lab/lab up`",
        p.display()
    );
    p
}

/// The result of a finished command, with both streams as text.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Panics with the whole output unless the command succeeded.
    pub fn assert_ok(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs a command to completion, killing it after `limit` so that no test can hang CI.
pub fn run(cmd: &mut Command, limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    // Readers on threads keep the pipes drained while we poll for exit.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            let status = child.wait().expect("reap killed child");
            let (o, e) = (t_out.join().unwrap(), t_err.join().unwrap());
            panic!("{cmd:?} did not finish within {limit:?} ({status}):\n--- stdout\n{o}\n--- stderr\n{e}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// Shorthand for `run(..).assert_ok(..)`.
pub fn run_ok(cmd: &mut Command, limit: Duration, what: &str) -> Run {
    run(cmd, limit).assert_ok(what)
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A command run from the repository root, so the repo's `ansible.cfg` applies.
pub fn in_repo(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.current_dir(repo_root());
    c
}

/// A virtup config and data dir, and a way to run the shipped module binaries in it.
pub struct Sandbox {
    root: PathBuf,
    /// Deletes a private sandbox when dropped; `None` for the shared one.
    _guard: Option<tempfile::TempDir>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A private sandbox, deleted when dropped.
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("virtup-e2e-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        Sandbox {
            root: dir.path().to_owned(),
            _guard: Some(dir),
        }
    }

    /// The sandbox the lab tests share: its data dir holds the key the base template was built
    /// with, so the template is built once per run. `tests/run` removes it when the run ends.
    pub fn shared() -> Sandbox {
        let root = lab_home().join("e2e");
        std::fs::create_dir_all(root.join("config")).unwrap();
        Sandbox { root, _guard: None }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Runs a module binary from `plugins/modules` (what Ansible would upload) with `args`; returns its JSON.
    pub fn module(&self, module: &str, args: &serde_json::Value) -> (serde_json::Value, Run) {
        self.module_without_env(module, args, &[])
    }

    /// The command that runs module binary `module` from `plugins/modules` (what Ansible would
    /// upload) on an args file holding `args`, in this sandbox's config and data dirs; the file
    /// must live as long as the run.
    fn module_command(
        &self,
        module: &str,
        args: &serde_json::Value,
    ) -> (Command, tempfile::NamedTempFile) {
        let exe = repo_root().join("plugins/modules").join(module);
        assert!(
            exe.exists(),
            "{} is missing: run scripts/build",
            exe.display()
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), serde_json::to_vec(args).unwrap()).unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg(file.path())
            .env("VIRTUP_CONFIG_HOME", self.config())
            .env("VIRTUP_DATA_HOME", self.data());
        (cmd, file)
    }

    /// Like `module`, with the variables named in `unset` taken out of its environment.
    pub fn module_without_env(
        &self,
        module: &str,
        args: &serde_json::Value,
        unset: &[&str],
    ) -> (serde_json::Value, Run) {
        let (mut cmd, _file) = self.module_command(module, args);
        for name in unset {
            cmd.env_remove(name);
        }
        let out = run(&mut cmd, Duration::from_secs(1800));
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{module} printed no JSON document ({e}):\n{}\n{}",
                out.stdout, out.stderr
            )
        });
        (doc, out)
    }

    /// Starts a module binary as [`Sandbox::module`] runs it, without waiting for it (its stdout
    /// and stderr piped); the args file must live as long as the run.
    pub fn spawn_module(
        &self,
        module: &str,
        args: &serde_json::Value,
    ) -> (std::process::Child, tempfile::NamedTempFile) {
        let (mut cmd, file) = self.module_command(module, args);
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (child, file)
    }

    /// Like `module`, but panics unless the module succeeded.
    pub fn ok(&self, module: &str, args: &serde_json::Value) -> serde_json::Value {
        let (doc, out) = self.module(module, args);
        assert!(
            doc["failed"] != serde_json::json!(true) && out.status.success(),
            "{module} {args} failed: {doc}\nstderr: {}",
            out.stderr
        );
        doc
    }

    /// Best-effort removal of what a test made, for its cleanup (a `Drop` that must not panic): the
    /// instances first, then the templates, each with `state: absent` in this sandbox.
    pub fn remove_all(&self, instances: &[&str], templates: &[&str]) {
        for (module, names) in [
            ("virtup_instance", instances),
            ("virtup_template", templates),
        ] {
            for name in names {
                let _ = self.module(
                    module,
                    &serde_json::json!({"name": name, "state": "absent", "wait_timeout": 120}),
                );
            }
        }
    }

    /// Builds (or finds) the shared base template from the lab's virt-builder repository.
    pub fn base_template(&self) -> serde_json::Value {
        self.ok(
            "virtup_template",
            &serde_json::json!({"name": BASE_TEMPLATE, "os_version": "debian-12", "wait_timeout": 900}),
        )
    }
}

/// `n` addresses of the lab's network that no lease and no reservation holds, for tests of fixed
/// addresses (leases outlive their guests, and dnsmasq never hands a leased address to another MAC).
pub fn free_addresses(n: usize) -> Vec<String> {
    let taken = virsh(&["net-dhcp-leases", "default"]) + &virsh(&["net-dumpxml", "default"]);
    (200..254)
        .rev()
        .map(|i| format!("192.168.122.{i}"))
        .filter(|a| !taken.contains(&format!("{a}/")) && !taken.contains(&format!("'{a}'")))
        .take(n)
        .collect()
}

/// `virsh -c qemu:///system ARGS` output, for assertions about what exists.
pub fn virsh(args: &[&str]) -> String {
    virsh_on("qemu:///system", args)
}

/// `virsh ARGS` on the lab's system hypervisor, for cleanup: whether it succeeded, nothing asserted.
pub fn virsh_quiet(args: &[&str]) -> bool {
    run(
        Command::new("virsh")
            .arg("-c")
            .arg("qemu:///system")
            .args(args),
        Duration::from_secs(120),
    )
    .status
    .success()
}

/// `virsh -c URI ARGS` output: the same on any of the lab's hypervisors.
pub fn virsh_on(uri: &str, args: &[&str]) -> String {
    run_ok(
        Command::new("virsh").arg("-c").arg(uri).args(args),
        Duration::from_secs(120),
        "virsh",
    )
    .stdout
}

/// Waits until libvirtd answers: fault tests restart it on purpose, and a missing daemon must not
/// read as a missing domain in a test running beside them.
pub fn wait_for_libvirt() {
    wait_for("libvirtd to answer", Duration::from_secs(600), || {
        run(
            Command::new("virsh").args(["-c", "qemu:///system", "version"]),
            Duration::from_secs(60),
        )
        .status
        .success()
        .then_some(())
    });
}

/// Names of the volumes in the lab's `default` pool.
pub fn pool_volumes() -> Vec<String> {
    pool_volumes_on("qemu:///system")
}

/// Names of the volumes in the `default` pool of the hypervisor `uri`.
pub fn pool_volumes_on(uri: &str) -> Vec<String> {
    virsh_on(uri, &["pool-refresh", "default"]);
    virsh_on(uri, &["vol-list", "default", "--details"])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Name of the template the lab tests share (see [`Sandbox::shared`]).
pub const BASE_TEMPLATE: &str = "e2e-base";

/// Runs `command` in an instance over SSH the way the inventory does: virtup's key only, virtup's
/// known_hosts with the instance's pinned key under its name and no system-wide file, strict host
/// key checking, and no ssh config of this machine.
pub fn ssh_instance(instance: &serde_json::Value, command: &str) -> String {
    let i = &instance["instance"];
    let text = |k: &str| {
        i[k].as_str()
            .unwrap_or_else(|| panic!("instance has no {k}: {instance}"))
            .to_owned()
    };
    run(
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=20",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", text("known_hosts_file")))
            .arg("-o")
            .arg(format!("HostKeyAlias={}", text("name")))
            .arg("-i")
            .arg(text("ssh_private_key_file"))
            .arg(format!("{}@{}", text("user"), text("address")))
            .arg(command),
        Duration::from_secs(120),
    )
    .assert_ok(&format!("ssh {command}"))
    .stdout
}

/// The PLAY RECAP of an `ansible-playbook` output.
pub fn recap(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `host -> (changed, failed, unreachable)` from a PLAY RECAP.
pub fn recap_counts(out: &str) -> Vec<(String, u32, u32, u32)> {
    recap(out)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (host, rest) = l.split_once(':')?;
            let num = |key: &str| -> u32 {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u32::MAX)
            };
            Some((
                host.trim().to_owned(),
                num("changed"),
                num("failed"),
                num("unreachable"),
            ))
        })
        .collect()
}

/// `molecule test -s SCENARIO` from the repository root, with the sandbox's data and config dirs and
/// `ephemeral` as Molecule's ephemeral directory; returns the finished run (not yet checked).
pub fn molecule_test(sb: &Sandbox, scenario: &str, ephemeral: &Path) -> Run {
    let venv = venv_bin("molecule").parent().unwrap().to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = Command::new(venv_bin("molecule"));
    cmd.current_dir(repo_root())
        .args(["test", "-s", scenario])
        // molecule runs ansible-playbook and ansible-config from PATH.
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("VIRTUP_DATA_HOME", sb.data())
        .env("VIRTUP_CONFIG_HOME", sb.config())
        .env("MOLECULE_EPHEMERAL_DIRECTORY", ephemeral)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("PY_COLORS", "0")
        .env("NO_COLOR", "1");
    run(&mut cmd, Duration::from_secs(3600))
}

/// Panics with the tail of the output unless `molecule test -s SCENARIO` passed and each of `steps`
/// says "Executed: Successful".
pub fn assert_molecule_passed(out: &Run, scenario: &str, steps: &[&str]) {
    assert!(
        out.status.success(),
        "molecule test -s {scenario} failed ({}):\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        out.status,
        tail(&out.stdout, 150),
        tail(&out.stderr, 150)
    );
    let all = format!("{}\n{}", out.stdout, out.stderr);
    for step in steps {
        assert!(
            all.contains(&format!("[{scenario} > {step}] Executed: Successful")),
            "molecule test -s {scenario}: step {step} did not succeed:\n{}",
            tail(&all, 150)
        );
    }
}

/// For each "Converge template TEMPLATE to state present" task of a run (role virtup_template, on
/// `localhost`), in order: whether it changed something (true) or found the template as declared (false).
pub fn template_task_changed(out: &Run, template: &str) -> Vec<bool> {
    let marker = format!("Converge template {template} to state present]");
    let all = format!("{}\n{}", out.stdout, out.stderr);
    let mut found = Vec::new();
    let mut lines = all.lines();
    while lines.any(|l| l.contains(&marker)) {
        if let Some(l) = lines
            .by_ref()
            .find(|l| l.starts_with("ok: [localhost]") || l.starts_with("changed: [localhost]"))
        {
            found.push(l.starts_with("changed:"));
        }
    }
    found
}

/// Panics unless the ansible.cfg Molecule generated in `ephemeral` keeps host key checking on: with
/// Molecule's default (off), Ansible turns the ssh option off before virtup's `yes`, and ssh
/// keeps the first value, so no pin would be checked.
pub fn assert_molecule_checks_host_keys(ephemeral: &Path) {
    let cfg = ephemeral.join("ansible.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
    let setting: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("host_key_checking"))
        .collect();
    assert_eq!(
        setting,
        ["host_key_checking = True"],
        "{}:\n{text}",
        cfg.display()
    );
}
