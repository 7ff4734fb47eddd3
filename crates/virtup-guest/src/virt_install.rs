//! virt-install in `--import --print-xml` mode: domain XML from virt-install's defaults, defined by us.
//!
//! virt-install knows per-OS defaults (machine type, devices) that virtup should not reinvent, but
//! defining the domain is left to virtup-libvirt, which reads this XML, adds virtup's metadata and
//! defines it in one step.

use std::path::PathBuf;

use crate::{Cmd, GuestError};

/// `virt-install --import --print-xml …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtInstall {
    /// `--connect URI`; `None` lets virt-install use `LIBVIRT_DEFAULT_URI` or its default.
    pub connect: Option<String>,
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The first disk is the boot disk.
    pub disks: Vec<InstallDisk>,
    pub networks: Vec<InstallNetwork>,
    /// `--graphics` value: `none`, `vnc`, `spice`…
    pub graphics: String,
    /// An osinfo short id (`debian11`); `None` → `detect=on,require=off`, since the host's
    /// osinfo-db may not know the OS (this lab's knows `debian11` but not `debian12`).
    pub osinfo: Option<String>,
    /// `--virt-type` (`kvm`, or `qemu` for TCG where KVM is unusable).
    pub virt_type: Option<String>,
    pub arch: Option<String>,
    /// Adds the qemu-guest-agent channel (`address_source: agent` needs it).
    pub guest_agent: bool,
    /// Passed through last (`virt_install_args`).
    pub extra_args: Vec<String>,
}

/// One `--disk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallDisk {
    pub path: PathBuf,
    /// `qcow2`, `raw`; always give it, so libvirt does not probe.
    pub format: String,
    /// `virtio` (the cloud kernel has virtio drivers only), `scsi`, `sata`…
    pub bus: String,
    /// `disk` or `cdrom`.
    pub device: String,
    pub readonly: bool,
    /// The disk's serial (see `virtup_libvirt::DiskSpec::serial`).
    pub serial: Option<String>,
}

impl InstallDisk {
    /// A writable virtio disk.
    pub fn virtio(path: impl Into<PathBuf>, format: &str) -> InstallDisk {
        InstallDisk {
            path: path.into(),
            format: format.into(),
            bus: "virtio".into(),
            device: "disk".into(),
            readonly: false,
            serial: None,
        }
    }

    /// The config disk: a read-only raw virtio disk. Not a cdrom: an IDE/SATA cdrom is invisible
    /// to kernels with virtio drivers only, and virtio has no cdrom.
    pub fn config_disk(path: impl Into<PathBuf>) -> InstallDisk {
        InstallDisk {
            readonly: true,
            serial: Some(crate::firstboot::CONFIG_LABEL.into()),
            ..InstallDisk::virtio(path, "raw")
        }
    }

    fn arg(&self) -> Result<String, GuestError> {
        let path = self.path.to_str().ok_or_else(|| {
            GuestError::invalid("disk path", self.path.to_string_lossy(), "must be UTF-8")
        })?;
        let mut arg = format!(
            "path={},format={},bus={},device={}",
            sub_value("disk path", path)?,
            sub_value("disk format", &self.format)?,
            sub_value("disk bus", &self.bus)?,
            sub_value("disk device", &self.device)?
        );
        if self.readonly {
            arg.push_str(",readonly=on");
        }
        if let Some(serial) = &self.serial {
            arg.push_str(&format!(",serial={}", sub_value("disk serial", serial)?));
        }
        Ok(arg)
    }
}

/// Where a NIC is plugged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkSource {
    /// A libvirt network by name (`default`).
    Network(String),
    /// A host bridge (`br0`).
    Bridge(String),
}

/// One `--network`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallNetwork {
    pub source: NetworkSource,
    /// `virtio` (see [`InstallDisk::bus`] for why).
    pub model: String,
    /// Stable per instance name (`macaddrs.json`), `None` for libvirt's random one.
    pub mac: Option<String>,
}

impl InstallNetwork {
    pub fn network(name: &str, mac: Option<&str>) -> InstallNetwork {
        InstallNetwork {
            source: NetworkSource::Network(name.into()),
            model: "virtio".into(),
            mac: mac.map(Into::into),
        }
    }

    fn arg(&self) -> Result<String, GuestError> {
        let mut arg = match &self.source {
            NetworkSource::Network(n) => format!("network={}", sub_value("network", n)?),
            NetworkSource::Bridge(b) => format!("bridge={}", sub_value("bridge", b)?),
        };
        arg += &format!(",model={}", sub_value("network model", &self.model)?);
        if let Some(mac) = &self.mac {
            if !is_mac(mac) {
                return Err(GuestError::invalid(
                    "mac address",
                    mac,
                    "must look like 52:54:00:12:34:56",
                ));
            }
            arg += &format!(",mac={mac}");
        }
        Ok(arg)
    }
}

/// virt-install splits option values at commas and has no escape: refuse rather than mis-parse.
fn sub_value<'a>(what: &'static str, value: &'a str) -> Result<&'a str, GuestError> {
    if value.is_empty() || value.contains(',') {
        return Err(GuestError::invalid(
            what,
            value,
            "must be non-empty and hold no comma (virt-install splits at commas)",
        ));
    }
    Ok(value)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl VirtInstall {
    pub fn cmd(&self) -> Result<Cmd, GuestError> {
        if self.disks.is_empty() {
            return Err(GuestError::invalid(
                "virt-install disks",
                "[]",
                "an imported domain needs a boot disk",
            ));
        }
        let mut cmd = Cmd::new("virt-install");
        if let Some(uri) = &self.connect {
            cmd.args(["--connect", uri]);
        }
        cmd.args(["--import", "--print-xml", "--noautoconsole"])
            .args(["--name", &self.name])
            .args(["--memory", &self.memory_mib.to_string()])
            .args(["--vcpus", &self.vcpus.to_string()]);
        for disk in &self.disks {
            cmd.args(["--disk", &disk.arg()?]);
        }
        for network in &self.networks {
            cmd.args(["--network", &network.arg()?]);
        }
        if self.networks.is_empty() {
            cmd.args(["--network", "none"]);
        }
        cmd.args(["--graphics", &self.graphics]);
        match &self.osinfo {
            Some(variant) => cmd.args(["--osinfo", variant]),
            None => cmd.args(["--osinfo", "detect=on,require=off"]),
        };
        if let Some(virt_type) = &self.virt_type {
            cmd.args(["--virt-type", virt_type]);
        }
        if let Some(arch) = &self.arch {
            cmd.args(["--arch", arch]);
        }
        if self.guest_agent {
            cmd.args([
                "--channel",
                "unix,target.type=virtio,target.name=org.qemu.guest_agent.0",
            ]);
        }
        cmd.args(&self.extra_args);
        Ok(cmd)
    }

    /// Runs virt-install and returns the domain XML it printed.
    pub fn print_xml(&self) -> Result<String, GuestError> {
        let cmd = self.cmd()?;
        let output = cmd.output()?;
        String::from_utf8(output.stdout).map_err(|_| GuestError::Parse {
            cmd: cmd.to_string(),
            reason: "the XML is not UTF-8".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VirtInstall {
        VirtInstall {
            connect: Some("qemu:///system".into()),
            name: "web1".into(),
            memory_mib: 1024,
            vcpus: 2,
            disks: vec![
                InstallDisk::virtio("/pool/web1.qcow2", "qcow2"),
                InstallDisk::config_disk("/pool/web1-config.iso"),
            ],
            networks: vec![InstallNetwork::network(
                "default",
                Some("52:54:00:aa:bb:cc"),
            )],
            graphics: "none".into(),
            osinfo: None,
            virt_type: Some("qemu".into()),
            arch: None,
            guest_agent: true,
            extra_args: vec!["--rng".into(), "/dev/urandom".into()],
        }
    }

    #[test]
    fn argv() {
        assert_eq!(
            sample().cmd().unwrap().argv(),
            [
                "virt-install",
                "--connect",
                "qemu:///system",
                "--import",
                "--print-xml",
                "--noautoconsole",
                "--name",
                "web1",
                "--memory",
                "1024",
                "--vcpus",
                "2",
                "--disk",
                "path=/pool/web1.qcow2,format=qcow2,bus=virtio,device=disk",
                "--disk",
                "path=/pool/web1-config.iso,format=raw,bus=virtio,device=disk,readonly=on,serial=VIRTUPCFG",
                "--network",
                "network=default,model=virtio,mac=52:54:00:aa:bb:cc",
                "--graphics",
                "none",
                "--osinfo",
                "detect=on,require=off",
                "--virt-type",
                "qemu",
                "--channel",
                "unix,target.type=virtio,target.name=org.qemu.guest_agent.0",
                "--rng",
                "/dev/urandom"
            ]
        );
    }

    #[test]
    fn variants_and_refusals() {
        let mut vi = sample();
        vi.osinfo = Some("debian11".into());
        vi.networks = vec![InstallNetwork {
            source: NetworkSource::Bridge("br0".into()),
            model: "virtio".into(),
            mac: None,
        }];
        vi.guest_agent = false;
        vi.connect = None;
        let argv = vi.cmd().unwrap().argv();
        assert!(argv.windows(2).any(|w| w == ["--osinfo", "debian11"]));
        assert!(argv
            .windows(2)
            .any(|w| w == ["--network", "bridge=br0,model=virtio"]));
        assert!(!argv.iter().any(|a| a == "--channel" || a == "--connect"));

        vi.networks.clear();
        assert!(vi
            .cmd()
            .unwrap()
            .argv()
            .windows(2)
            .any(|w| w == ["--network", "none"]));

        let mut bad = sample();
        bad.disks[0].path = "/pool/a,b.qcow2".into();
        assert!(bad.cmd().is_err());
        let mut bad = sample();
        bad.networks[0].mac = Some("52:54:00:aa:bb".into());
        assert!(bad.cmd().is_err());
        let mut bad = sample();
        bad.disks.clear();
        assert!(bad.cmd().is_err());
    }
}
