//! virt-builder: building a template disk from a signed OS template, and reading its template list.

use std::path::PathBuf;

use serde::Deserialize;

use crate::customize::{ops_args, CustomizeOp};
use crate::{Cmd, GuestError};

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
            .args(["--format", &self.format]);
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
}
