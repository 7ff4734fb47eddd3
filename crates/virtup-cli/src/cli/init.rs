//! `virt-up --init [--force]`: a commented `settings.cfg` and example `templates.d/*.cfg` in the user config dir.
//!
//! The files are virt-up's format and the modules read them too. `settings.cfg` sets nothing (every
//! line is a comment showing the default), so writing it changes no behaviour; the template files
//! define templates that `virt-up NAME --template debian-12` can build from virt-builder's index.
//! virt-up 2.2.0 writes `/etc/virt-up` when run as root; virtup always writes the user config dir
//! (`VIRTUP_CONFIG_HOME=/etc/virt-up virt-up --init` writes the system one).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use virtup_core::Paths;

use super::{say, Global};

pub const SETTINGS_CFG: &str = "\
# virt-up settings (virtup reads the same files as virt-up 2.2.0).
#
# Read from /etc/virt-up/settings.cfg, then from this file; a key set here wins.
# Template definitions (templates.d/*.cfg) override these per template, and the
# module options or virt-up's command line options override both.
# Every line below is a comment showing the built-in default.

[common]
# libvirt storage pool for disk images.
#pool = default

# Login user created in every guest, with passwordless sudo and virtup's SSH key.
#username = virt

# Length of generated passwords.
#password-length = 24

# DNS domain appended to host names (hostname.example.com).
#dns-domain =

# Where to look for a guest's address, tried in this order: lease, agent, arp, dns.
#address-source = lease, agent

# Disk image format: qcow2 (linked clones) or raw (full copies).
#image-format = qcow2

# libvirt network of new domains.
#network = default

# Memory in MiB and virtual CPUs of new domains.
#memory = 512
#vcpus = 1

# Graphics: none, vnc or spice.
#graphics = none

# Guest architecture (virt-builder --arch).
#arch = x86_64

# Extra arguments, split like a shell would.
#virt-builder-args =
#virt-customize-args =
#virt-sysprep-args =
#virt-install-args =

# Playbooks run on new templates and on new instances (searched in playbooks/ here and in /etc/virt-up).
#template-playbook =
#instance-playbook =

# Hypervisor (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
#uri = qemu:///system

# Hypervisors the dynamic inventory lists (space-separated URIs).
#inventory-uris =
";

pub const DEBIAN_CFG: &str = "\
# Debian templates built with virt-builder from the libguestfs index (see `virt-builder --list`).
# The section name is the template name: `virt-up web1 --template debian-12`.
#
# Keys: desc, os-version (virt-builder name) or image + checksum (a disk image), os-type,
# os-variant (osinfo id, `osinfo-query os`), arch, and any [common] key of settings.cfg.

[debian-12]
desc = Debian 12 (bookworm)
os-version = debian-12
os-type = linux
# Older osinfo databases do not know debian12; debian11 describes the same hardware.
os-variant = debian11
arch = x86_64

[debian-11]
desc = Debian 11 (bullseye)
os-version = debian-11
os-type = linux
os-variant = debian11
arch = x86_64
";

pub const UBUNTU_CFG: &str = "\
# Ubuntu templates built with virt-builder from the libguestfs index.

[ubuntu-22.04]
desc = Ubuntu 22.04 (jammy)
os-version = ubuntu-22.04
os-type = linux
os-variant = ubuntu22.04
arch = x86_64
";

pub const CLOUD_IMAGE_CFG: &str = "\
# A template from a downloaded disk image instead of virt-builder (virtup only).
# Uncomment and adapt: the checksum is sha256:<hex>, sha512:<hex>, or the URL of a
# checksum file (for example the distribution's SHA512SUMS).
#
#[debian-12-cloud]
#desc = Debian 12 generic cloud image
#image = https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2
#checksum = https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS
#os-type = linux
#os-variant = debian11
#arch = x86_64
#size = 10G
";

/// The files `--init` writes, relative to the config dir.
pub fn files() -> [(&'static str, &'static str); 4] {
    [
        ("settings.cfg", SETTINGS_CFG),
        ("templates.d/debian.cfg", DEBIAN_CFG),
        ("templates.d/ubuntu.cfg", UBUNTU_CFG),
        ("templates.d/cloud-image.cfg", CLOUD_IMAGE_CFG),
    ]
}

pub fn init(paths: &Paths, force: bool, global: &Global) -> Result<ExitCode> {
    let dir = &paths.user_config_dir;
    let targets: Vec<(PathBuf, &str)> = files()
        .into_iter()
        .map(|(rel, text)| (dir.join(rel), text))
        .collect();
    if !force {
        // Nothing is written unless nothing would be overwritten.
        if let Some((existing, _)) = targets.iter().find(|(p, _)| p.exists()) {
            bail!(
                "`{}` exists; pass --force to overwrite it (nothing was written)",
                existing.display()
            );
        }
    }
    for (path, text) in &targets {
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create `{}`", parent.display()))?;
        virtup_core::datadir::write_atomic(path, text.as_bytes(), 0o644)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
        say(global, format!("wrote `{}`", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtup_core::Config;

    #[test]
    fn written_files_load_without_warnings_and_change_no_default() {
        let settings = [(std::path::Path::new("settings.cfg"), SETTINGS_CFG)];
        let names: Vec<(std::path::PathBuf, &str)> = files()[1..]
            .iter()
            .map(|(p, t)| (std::path::PathBuf::from(p), *t))
            .collect();
        let templates: Vec<(&std::path::Path, &str)> =
            names.iter().map(|(p, t)| (p.as_path(), *t)).collect();
        let config = Config::from_texts(&settings, &templates).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config.common, virtup_core::Fields::default());
        assert_eq!(
            config.template_names().collect::<Vec<_>>(),
            ["debian-11", "debian-12", "ubuntu-22.04"]
        );
        let d = config.resolve_template("debian-12").unwrap();
        assert_eq!(d.os_version.as_deref(), Some("debian-12"));
        assert_eq!(d.memory, Some(512));
    }
}
