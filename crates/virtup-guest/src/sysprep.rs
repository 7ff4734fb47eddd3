//! virt-sysprep: the `customize: sysprep` path for images that cannot be prepared for the config disk.
//!
//! virt-sysprep's default operations delete the SSH host keys, and Debian does not regenerate them
//! at boot, so sshd then fails ("Start request repeated too quickly"; virt-up 2.2.0 hits this).
//! virtup keeps the default operations (removing the template's keys is right: clones must not
//! share them) and puts the instance's own keys back in the `customize` operation, which
//! virt-sysprep always runs last (its order is 99, after every other operation). It does so by
//! running the same first-boot script that reads the config disk, offline, on a copy of the staged
//! config files, so both paths apply an identity identically. The payload installed alongside
//! includes `virtup-ssh-keygen.service`, which creates keys at boot should none exist at all.

use std::path::PathBuf;

use crate::config_disk::{ConfigDiskKind, StagedConfig};
use crate::customize::{ops_args, CustomizeOp};
use crate::firstboot::{self, SCRIPT_PATH};
use crate::{Cmd, GuestError};

/// `virt-sysprep -a DISK [--format FMT] [--operations OPS] CUSTOMIZE-OPS… EXTRA…`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtSysprep {
    pub disk: PathBuf,
    pub format: Option<String>,
    /// `--operations` list (e.g. `defaults,-ssh-userdir`); `None` keeps virt-sysprep's defaults.
    pub operations: Option<Vec<String>>,
    /// Customizations, applied by the `customize` operation after all others.
    pub ops: Vec<CustomizeOp>,
    /// Passed through last (`virt_sysprep_args`).
    pub extra_args: Vec<String>,
}

impl VirtSysprep {
    pub fn new(disk: impl Into<PathBuf>) -> VirtSysprep {
        VirtSysprep {
            disk: disk.into(),
            ..VirtSysprep::default()
        }
    }

    pub fn cmd(&self) -> Result<Cmd, GuestError> {
        let mut cmd = Cmd::new("virt-sysprep");
        if let Some(format) = &self.format {
            cmd.args(["--format", format]);
        }
        cmd.arg("-a").arg(&self.disk);
        if let Some(operations) = &self.operations {
            let list = operations.join(",");
            if !self.ops.is_empty() && !keeps_customize(operations) {
                return Err(GuestError::invalid(
                    "sysprep operations",
                    list,
                    "customizations are given, so the list must keep `customize` (or `defaults`)",
                ));
            }
            cmd.args(["--operations", &list]);
        }
        cmd.args(ops_args(&self.ops)?);
        cmd.args(&self.extra_args);
        Ok(cmd)
    }
}

/// Whether an `--operations` list leaves the `customize` operation enabled; later entries win.
fn keeps_customize(operations: &[String]) -> bool {
    let mut enabled = false;
    for op in operations {
        match op.as_str() {
            "defaults" | "all" | "customize" => enabled = true,
            "-defaults" | "-all" | "-customize" => enabled = false,
            _ => {}
        }
    }
    enabled
}

/// Where the staged config files are copied inside the guest for the offline run (then deleted).
const OFFLINE_CONFIG_PARENT: &str = "/var/lib/virtup";

/// Customizations that give a disk `staged`'s identity without booting it: install the first-boot
/// payload, copy the staged files in, run the script offline against them, delete the copy. The
/// script marks itself done, so the unit does not run again at boot.
///
/// `staged` must be a [`ConfigDiskKind::Virtup`] staging and must outlive the virt-sysprep run.
pub fn identity_ops(staged: &StagedConfig) -> Result<Vec<CustomizeOp>, GuestError> {
    if staged.kind() != ConfigDiskKind::Virtup {
        return Err(GuestError::invalid(
            "staged config",
            staged.path().display().to_string(),
            "the sysprep path needs the virtup layout, not NoCloud",
        ));
    }
    let name = staged
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            GuestError::invalid(
                "staged config",
                staged.path().display().to_string(),
                "has no UTF-8 directory name",
            )
        })?;
    // The name goes into a shell command below.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(GuestError::invalid(
            "staged config",
            name,
            "the directory name must be plain (letters, digits, `._-`)",
        ));
    }
    let remote = format!("{OFFLINE_CONFIG_PARENT}/{name}");
    let mut ops = firstboot::install_ops();
    ops.push(CustomizeOp::Mkdir(OFFLINE_CONFIG_PARENT.into()));
    ops.push(CustomizeOp::CopyIn {
        local: staged.path().to_owned(),
        remote_dir: OFFLINE_CONFIG_PARENT.into(),
    });
    // The staged files hold hashes and a private key: delete the copy whatever the script did.
    ops.push(CustomizeOp::RunCommand(format!(
        "VIRTUP_OFFLINE=1 VIRTUP_CONFIG_DIR={remote} sh {SCRIPT_PATH}; rc=$?; rm -rf {remote}; exit $rc"
    )));
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_disk::stage;
    use crate::identity::tests::sample;

    #[test]
    fn default_operations_are_left_alone() {
        let mut sp = VirtSysprep::new("/pool/i.qcow2");
        sp.format = Some("qcow2".into());
        sp.ops = vec![CustomizeOp::Hostname("i".into())];
        assert_eq!(
            sp.cmd().unwrap().argv(),
            [
                "virt-sysprep",
                "--format",
                "qcow2",
                "-a",
                "/pool/i.qcow2",
                "--hostname",
                "i"
            ]
        );
    }

    #[test]
    fn operations_must_keep_customize_when_ops_are_given() {
        let mut sp = VirtSysprep::new("/d");
        sp.operations = Some(vec!["defaults".into(), "-ssh-userdir".into()]);
        sp.ops = vec![CustomizeOp::Hostname("i".into())];
        assert_eq!(
            sp.cmd().unwrap().argv(),
            [
                "virt-sysprep",
                "-a",
                "/d",
                "--operations",
                "defaults,-ssh-userdir",
                "--hostname",
                "i"
            ]
        );
        sp.operations = Some(vec!["machine-id".into()]);
        assert!(sp.cmd().is_err());
        sp.operations = Some(vec!["defaults".into(), "-customize".into()]);
        assert!(sp.cmd().is_err());
        sp.ops.clear();
        assert!(sp.cmd().is_ok());
    }

    #[test]
    fn identity_ops_run_the_script_offline_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let staged = stage(&sample(), ConfigDiskKind::Virtup, dir.path()).unwrap();
        let ops = identity_ops(&staged).unwrap();
        let name = staged.path().file_name().unwrap().to_str().unwrap();
        assert!(ops.starts_with(&firstboot::install_ops()));
        assert!(ops.contains(&CustomizeOp::CopyIn {
            local: staged.path().to_owned(),
            remote_dir: "/var/lib/virtup".into()
        }));
        assert_eq!(
            ops.last(),
            Some(&CustomizeOp::RunCommand(format!(
                "VIRTUP_OFFLINE=1 VIRTUP_CONFIG_DIR=/var/lib/virtup/{name} sh /usr/local/lib/virtup/firstboot; rc=$?; rm -rf /var/lib/virtup/{name}; exit $rc"
            )))
        );
        let mut with_seed = sample();
        with_seed.cloud_init = Some(virtup_core::cloud_init::CloudInit {
            user_data: Some("#cloud-config\n".into()),
            ..Default::default()
        });
        let nocloud = stage(&with_seed, ConfigDiskKind::NoCloud, dir.path()).unwrap();
        assert!(identity_ops(&nocloud).is_err());
    }
}
