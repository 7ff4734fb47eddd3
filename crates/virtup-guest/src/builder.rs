//! virt-builder: building a template disk from a signed OS template, and reading its template list.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use virtup_core::datadir::{sweep_scratch_dirs, ScratchDir};

use crate::customize::{ops_args, CustomizeOp};
use crate::{Cmd, GuestError};

/// Prefix of the scratch dirs virt-builder runs in (its `TMPDIR`), in the system temp dir.
pub const SCRATCH_PREFIX: &str = "virtup-build-";

/// A scratch dir for one virt-builder run, made after sweeping those of killed runs.
///
/// virt-builder makes its temp dir, and a gpg-agent daemon for the signature check, in `TMPDIR`.
/// A killed run leaves both behind, and the daemon has left the process tree, so killing the
/// tree does not reach it. In a dir of our own that names our pid, the next build finds both.
pub fn scratch() -> Result<ScratchDir, GuestError> {
    let parent = std::env::temp_dir();
    sweep_scratch_dirs(&parent, SCRATCH_PREFIX, stop_processes_using)?;
    Ok(ScratchDir::new_in(&parent, SCRATCH_PREFIX)?)
}

/// Runs a libguestfs tool in `scratch`, keeping libguestfs's appliance cache where it was (it
/// defaults to `TMPDIR`, and rebuilding it costs every run half a minute).
pub fn use_scratch(cmd: &mut Cmd, scratch: &Path) {
    let cache = std::env::var_os("LIBGUESTFS_CACHEDIR")
        .or_else(|| std::env::var_os("TMPDIR"))
        .unwrap_or_else(|| "/var/tmp".into());
    cmd.env("LIBGUESTFS_CACHEDIR", cache).env("TMPDIR", scratch);
}

/// Sends SIGTERM to every process whose command line mentions `dir` (a dead build's gpg-agent).
fn stop_processes_using(dir: &Path) {
    let needle = dir.as_os_str().as_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            // ESRCH: it went by itself.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// `virt-builder OS_VERSION -o OUTPUT --format FORMAT …`.
///
/// Signature checking stays on: nothing here adds `--no-check-signature` (a user may still pass
/// it in `extra_args`, on purpose). The root password comes from a 0600 file or is disabled,
/// because without `--root-password` virt-builder prints a random one on stdout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtBuilder {
    pub os_version: String,
    pub output: PathBuf,
    /// `qcow2` or `raw`.
    pub format: String,
    /// Disk size as virt-builder takes it (`20G`); `None` keeps the template's size.
    pub size: Option<String>,
    pub arch: Option<String>,
    /// First line of this 0600 file becomes root's password; `None` disables password login for root.
    pub root_password_file: Option<PathBuf>,
    pub hostname: Option<String>,
    /// Applied in order after the image is built.
    pub ops: Vec<CustomizeOp>,
    /// Passed through last (`virt_builder_args`).
    pub extra_args: Vec<String>,
}

impl VirtBuilder {
    pub fn cmd(&self) -> Result<Cmd, GuestError> {
        if self.os_version.is_empty() || self.os_version.starts_with('-') {
            return Err(GuestError::invalid(
                "os_version",
                &self.os_version,
                "must be a virt-builder template name",
            ));
        }
        let mut cmd = Cmd::new("virt-builder");
        cmd.arg(&self.os_version)
            .arg("-o")
            .arg(&self.output)
            .args(["--format", &self.format])
            // virt-builder fails silently when the disk fills up; the partial output it keeps shows the
            // caller (see [`crate::space`]) why, and the caller deletes it.
            .arg("--no-delete-on-failure");
        if let Some(size) = &self.size {
            cmd.args(["--size", size]);
        }
        if let Some(arch) = &self.arch {
            cmd.args(["--arch", arch]);
        }
        let password = match &self.root_password_file {
            Some(file) => CustomizeOp::RootPassword(file.clone()),
            None => CustomizeOp::RootPasswordDisabled,
        };
        cmd.args(password.args()?);
        if let Some(hostname) = &self.hostname {
            cmd.args(["--hostname", hostname]);
        }
        cmd.args(ops_args(&self.ops)?);
        cmd.args(&self.extra_args);
        Ok(cmd)
    }
}

/// `virt-builder --list --list-format json`.
pub fn list_cmd() -> Cmd {
    let mut cmd = Cmd::new("virt-builder");
    cmd.args(["--list", "--list-format", "json"]);
    cmd
}

/// One entry of virt-builder's template list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TemplateEntry {
    #[serde(rename = "os-version")]
    pub os_version: String,
    #[serde(rename = "full-name", default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub osinfo: Option<String>,
    #[serde(default)]
    pub hidden: bool,
}

#[derive(Deserialize)]
struct ListJson {
    templates: Vec<TemplateEntry>,
}

/// Parses the JSON printed by [`list_cmd`].
pub fn parse_list(json: &[u8]) -> Result<Vec<TemplateEntry>, GuestError> {
    let list: ListJson = serde_json::from_slice(json).map_err(|e| GuestError::Parse {
        cmd: list_cmd().to_string(),
        reason: e.to_string(),
    })?;
    Ok(list.templates)
}

/// The entry for `os_version` (and `arch`, when given) in a parsed list.
pub fn find_template<'a>(
    templates: &'a [TemplateEntry],
    os_version: &str,
    arch: Option<&str>,
) -> Option<&'a TemplateEntry> {
    templates.iter().find(|t| {
        t.os_version == os_version
            && arch.is_none_or(|a| t.arch.as_deref().is_none_or(|ta| ta == a))
    })
}

/// Runs `cmd` (normally [`list_cmd`], perhaps with env changes for an offline repository) and
/// returns the template list.
pub fn list(cmd: &Cmd) -> Result<Vec<TemplateEntry>, GuestError> {
    let output = cmd.output()?;
    parse_list(&output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_argv() {
        let vb = VirtBuilder {
            os_version: "debian-12".into(),
            output: "/pool/t.qcow2".into(),
            format: "qcow2".into(),
            size: Some("10G".into()),
            arch: Some("x86_64".into()),
            root_password_file: Some("/run/virtup/x/root".into()),
            hostname: Some("t".into()),
            ops: vec![CustomizeOp::RunCommand("useradd -m virt".into())],
            extra_args: vec!["--smp".into(), "2".into()],
        };
        let argv = vb.cmd().unwrap().argv();
        assert_eq!(
            argv,
            [
                "virt-builder",
                "debian-12",
                "-o",
                "/pool/t.qcow2",
                "--format",
                "qcow2",
                "--no-delete-on-failure",
                "--size",
                "10G",
                "--arch",
                "x86_64",
                "--root-password",
                "file:/run/virtup/x/root",
                "--hostname",
                "t",
                "--run-command",
                "useradd -m virt",
                "--smp",
                "2"
            ]
        );
        assert!(!argv.iter().any(|a| a == "--no-check-signature"));
    }

    #[test]
    fn builder_without_password_file_disables_root_password() {
        let vb = VirtBuilder {
            os_version: "debian-12".into(),
            output: "/o.raw".into(),
            format: "raw".into(),
            ..VirtBuilder::default()
        };
        assert_eq!(
            vb.cmd().unwrap().argv(),
            [
                "virt-builder",
                "debian-12",
                "-o",
                "/o.raw",
                "--format",
                "raw",
                "--no-delete-on-failure",
                "--root-password",
                "disabled"
            ]
        );
        let bad = VirtBuilder {
            os_version: "--list".into(),
            ..vb
        };
        assert!(bad.cmd().is_err());
    }

    // Captured from virt-builder 1.48 with a local repository.
    const LIST: &str = r#"{
      "version": 1,
      "sources": [ { "uri": "file:///tmp/repo/index" } ],
      "templates": [
        { "os-version": "debian-12", "full-name": "Debian 12 (lab)", "arch": "x86_64",
          "size": 2147483648, "osinfo": "debian11", "hidden": false },
        { "os-version": "fedora-40", "full-name": "Fedora 40", "arch": "aarch64",
          "size": 6442450944, "notes": { "C": "x" }, "hidden": false }
      ]
    }"#;

    #[test]
    fn list_parsing() {
        assert_eq!(
            list_cmd().argv(),
            ["virt-builder", "--list", "--list-format", "json"]
        );
        let templates = parse_list(LIST.as_bytes()).unwrap();
        assert_eq!(templates.len(), 2);
        let debian = find_template(&templates, "debian-12", Some("x86_64")).unwrap();
        assert_eq!(debian.size, Some(2147483648));
        assert_eq!(debian.osinfo.as_deref(), Some("debian11"));
        assert!(find_template(&templates, "debian-12", None).is_some());
        assert!(find_template(&templates, "fedora-40", Some("x86_64")).is_none());
        assert!(find_template(&templates, "debian-13", None).is_none());
        let err = parse_list(b"not json").unwrap_err();
        assert!(err.to_string().starts_with(
            "failed to parse the output of `virt-builder --list --list-format json`: "
        ));
    }

    // The stand-in daemon must stay alive while the sweep runs and hold a stdin pipe the test owns,
    // a spawn-and-keep that `Cmd` (which always runs to completion) deliberately does not offer.
    #[allow(clippy::disallowed_types)]
    #[test]
    fn a_dead_builds_scratch_dir_and_the_daemon_in_it_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join(format!("{SCRATCH_PREFIX}0.0000beef"));
        std::fs::create_dir(&dead).unwrap();
        // Stands for the gpg-agent a killed virt-builder left: a process naming the dir. It waits in the
        // shell's own `read` on a pipe this test holds open, so no child of it outlives the test.
        let mut daemon = std::process::Command::new("sh")
            .arg("-c")
            .arg("read line; : \"$0\"")
            .arg(&dead)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is still the test's.
        let proc_cmdline = format!("/proc/{}/cmdline", daemon.id());
        let named = || {
            std::fs::read(&proc_cmdline)
                .map(|c| {
                    c.windows(dead.as_os_str().len())
                        .any(|w| w == dead.as_os_str().as_bytes())
                })
                .unwrap_or(false)
        };
        let start = std::time::Instant::now();
        while !named() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "the stand-in daemon never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let n = sweep_scratch_dirs(parent.path(), SCRATCH_PREFIX, stop_processes_using).unwrap();
        assert_eq!(n, 1);
        assert!(!dead.exists());
        let status = daemon.wait().unwrap();
        assert!(!status.success(), "the daemon was stopped: {status}");
        let mut cmd = Cmd::new("virt-builder");
        use_scratch(&mut cmd, Path::new("/x/scratch"));
        assert_eq!(
            cmd.get_env("TMPDIR"),
            Some(Some(std::ffi::OsStr::new("/x/scratch")))
        );
        assert!(matches!(cmd.get_env("LIBGUESTFS_CACHEDIR"), Some(Some(_))));
    }
}
