//! The first-boot payload virtup installs into templates: a script and two systemd units.
//!
//! At clone time virtup starts no libguestfs appliance: it attaches a small config disk (see
//! [`crate::config_disk`]) and this payload, already inside the template, applies it at the first
//! boot. The files live under `crates/virtup-guest/guest/` so they can be linted as what they are.

use crate::customize::CustomizeOp;

/// `/usr/local/lib/virtup/firstboot`: reads the `VIRTUPCFG` disk and applies the identity.
pub const SCRIPT: &str = include_str!("../guest/firstboot.sh");

/// What the installed [`SCRIPT`] can do, recorded in the template's tag: 2 grows the root partition
/// and filesystem when the config disk asks (`grow-root`); 3 makes and mounts filesystems on data
/// disks (`filesystems`); 4 writes a static address into the guest's network config
/// (`static-ipv4`); 5 keeps notes of what it was asked to do and did not ([`NOTES_PATH`]).
/// Templates without a record have 1.
pub const REVISION: u32 = 5;
/// The first revision that grows the root.
pub const GROWS_ROOT: u32 = 2;
/// The first revision that makes filesystems on data disks.
pub const MAKES_FILESYSTEMS: u32 = 3;
/// The first revision that configures a static address.
pub const CONFIGURES_STATIC_ADDRESS: u32 = 4;
/// Runs [`SCRIPT`] once, before the network and sshd.
pub const FIRSTBOOT_UNIT: &str = include_str!("../guest/virtup-firstboot.service");
/// Generates host keys when none exist, so sshd always starts.
pub const KEYGEN_UNIT: &str = include_str!("../guest/virtup-ssh-keygen.service");

pub const SCRIPT_PATH: &str = "/usr/local/lib/virtup/firstboot";
pub const FIRSTBOOT_UNIT_NAME: &str = "virtup-firstboot.service";
pub const KEYGEN_UNIT_NAME: &str = "virtup-ssh-keygen.service";
/// Written by the script when it has applied a config disk; its presence stops later runs.
pub const DONE_PATH: &str = "/var/lib/virtup/firstboot.done";
/// What the first boot was asked to do and did not, a line each after [`NOTE_PREFIX`]: written in
/// /run (so it is this boot's only), world-readable, and read by virtup's SSH proof.
pub const NOTES_PATH: &str = "/run/virtup-firstboot.notes";
/// The start of every line the script logs or notes.
pub const NOTE_PREFIX: &str = "virtup-firstboot: ";
/// The volume label the script looks for.
pub const CONFIG_LABEL: &str = "VIRTUPCFG";
/// The first line of the config disk's `format` file that this script understands.
pub const CONFIG_FORMAT: &str = "virtup-config 1";

const UNIT_DIR: &str = "/etc/systemd/system";
const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";

/// Customizations that install the payload into a template (for virt-builder, virt-customize or
/// virt-sysprep). Enabling is done with symlinks, as `systemctl enable` would, so no guest binary
/// runs. `--write` is fine here: the payload is not secret, and unlike `--upload` it leaves the
/// files owned by root whoever runs the tool.
pub fn install_ops() -> Vec<CustomizeOp> {
    let mut ops = vec![
        CustomizeOp::Mkdir("/usr/local/lib/virtup".into()),
        CustomizeOp::Write {
            path: SCRIPT_PATH.into(),
            content: SCRIPT.into(),
        },
        CustomizeOp::Chmod {
            mode: 0o755,
            path: SCRIPT_PATH.into(),
        },
        CustomizeOp::Mkdir(WANTS_DIR.into()),
    ];
    for (name, content) in [
        (FIRSTBOOT_UNIT_NAME, FIRSTBOOT_UNIT),
        (KEYGEN_UNIT_NAME, KEYGEN_UNIT),
    ] {
        let path = format!("{UNIT_DIR}/{name}");
        ops.push(CustomizeOp::Write {
            path: path.clone(),
            content: content.into(),
        });
        ops.push(CustomizeOp::Chmod {
            mode: 0o644,
            path: path.clone(),
        });
        ops.push(CustomizeOp::Link {
            target: path,
            link: format!("{WANTS_DIR}/{name}"),
        });
    }
    // A template must never carry "done" into its clones.
    ops.push(CustomizeOp::Delete(DONE_PATH.into()));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_consistent() {
        assert!(SCRIPT.starts_with("#!/bin/sh\n"));
        assert!(SCRIPT.contains(&format!("LABEL={CONFIG_LABEL}\n")));
        assert!(SCRIPT.contains(&format!("\"{CONFIG_FORMAT}\"")));
        assert!(SCRIPT.contains("DONE=$ROOT/var/lib/virtup/firstboot.done"));
        assert!(SCRIPT.contains(&format!("NOTES=$ROOT{NOTES_PATH}\n")));
        assert!(SCRIPT.contains(&format!("printf '{NOTE_PREFIX}%s\\n' \"$*\" >>\"$NOTES\"")));
        assert!(FIRSTBOOT_UNIT.contains(&format!("ExecStart={SCRIPT_PATH}\n")));
        assert!(FIRSTBOOT_UNIT.contains(&format!("ConditionPathExists=!{DONE_PATH}\n")));
        assert!(FIRSTBOOT_UNIT.contains("Before=network-pre.target ssh.service"));
        assert!(KEYGEN_UNIT.contains(&format!(
            "After=local-fs.target systemd-remount-fs.service {FIRSTBOOT_UNIT_NAME}"
        )));
        assert!(KEYGEN_UNIT.contains("ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n"));
    }

    #[test]
    fn install_ops_write_enable_and_reset() {
        let ops = install_ops();
        let args: Vec<String> = crate::customize::ops_args(&ops)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let script_write = format!("{SCRIPT_PATH}:{SCRIPT}");
        assert!(args.contains(&script_write));
        assert!(args.contains(&format!("0755:{SCRIPT_PATH}")));
        assert!(args.contains(&format!(
            "/etc/systemd/system/{FIRSTBOOT_UNIT_NAME}:/etc/systemd/system/multi-user.target.wants/{FIRSTBOOT_UNIT_NAME}"
        )));
        assert!(args.contains(&format!(
            "/etc/systemd/system/{KEYGEN_UNIT_NAME}:/etc/systemd/system/multi-user.target.wants/{KEYGEN_UNIT_NAME}"
        )));
        assert_eq!(ops.last(), Some(&CustomizeOp::Delete(DONE_PATH.into())));
        // The wants directory must exist before the links are made.
        let mkdir = ops
            .iter()
            .position(|o| *o == CustomizeOp::Mkdir(WANTS_DIR.into()));
        let first_link = ops
            .iter()
            .position(|o| matches!(o, CustomizeOp::Link { .. }));
        assert!(mkdir.unwrap() < first_link.unwrap());
    }
}
