//! virtup's shared vocabulary: one type per concept (image format, address source, accelerator), used by every crate.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate;

/// How a disk image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }

    /// `qcow2` or `raw`, as libvirt and qemu-img spell them.
    pub fn from_name(value: &str) -> Option<ImageFormat> {
        match value {
            "qcow2" => Some(ImageFormat::Qcow2),
            "raw" => Some(ImageFormat::Raw),
            _ => None,
        }
    }

    /// Parses `qcow2` or `raw`, with an error naming the option.
    pub fn parse(option: &str, value: &str) -> Result<ImageFormat, validate::ValidationError> {
        ImageFormat::from_name(value).ok_or_else(|| {
            validate::ValidationError::new(
                option,
                format!(
                    "{} is not an image format (expected `qcow2` or `raw`)",
                    validate::Shown(value)
                ),
            )
        })
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A way to learn a guest's IP address; a list of them is tried in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressSource {
    /// libvirt's DHCP leases.
    Lease,
    /// The QEMU guest agent.
    Agent,
    /// The hypervisor's ARP table.
    Arp,
    /// A DNS lookup of the guest's hostname.
    Dns,
}

impl AddressSource {
    pub const ALL: [AddressSource; 4] = [
        AddressSource::Lease,
        AddressSource::Agent,
        AddressSource::Arp,
        AddressSource::Dns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AddressSource::Lease => "lease",
            AddressSource::Agent => "agent",
            AddressSource::Arp => "arp",
            AddressSource::Dns => "dns",
        }
    }

    /// Parses an ordered list separated by commas and/or whitespace
    /// (`lease, agent arp`); an unknown or repeated method is an error.
    pub fn parse_list(
        option: &str,
        value: &str,
    ) -> Result<Vec<AddressSource>, validate::ValidationError> {
        let mut list = Vec::new();
        for word in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let source = AddressSource::ALL
                .into_iter()
                .find(|s| s.as_str() == word)
                .ok_or_else(|| {
                    validate::ValidationError::new(
                        option,
                        format!(
                            "{} is not an address source (expected `lease`, `agent`, `arp` or `dns`)",
                            validate::Shown(word)
                        ),
                    )
                })?;
            if list.contains(&source) {
                return Err(validate::ValidationError::new(
                    option,
                    format!("`{word}` is listed twice"),
                ));
            }
            list.push(source);
        }
        if list.is_empty() {
            return Err(validate::ValidationError::new(
                option,
                "must list at least one of `lease`, `agent`, `arp`, `dns`",
            ));
        }
        Ok(list)
    }
}

impl fmt::Display for AddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The variable through which the lab (and users on such hosts) say that KVM is unusable:
/// `VIRTUP_VIRT_TYPE=qemu`. libvirt still reports KVM there, so it cannot be read from capabilities.
pub const VIRT_TYPE_ENV: &str = "VIRTUP_VIRT_TYPE";

/// How guests (and libguestfs' appliance) are accelerated: libvirt's `<domain type=…>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    /// Hardware virtualization.
    Kvm,
    /// Plain QEMU (TCG): software emulation, slow, but runs anywhere.
    Qemu,
}

impl VirtType {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
        }
    }

    pub fn parse(s: &str) -> Option<VirtType> {
        match s {
            "kvm" => Some(VirtType::Kvm),
            "qemu" => Some(VirtType::Qemu),
            _ => None,
        }
    }
}

impl fmt::Display for VirtType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The config disk volume (the first boot's ISO, `VIRTUPCFG`) of a domain, template or instance, in its pool.
pub fn config_disk_volume(domain: &str) -> String {
    format!("{domain}-config.iso")
}

/// The NoCloud seed volume (`cidata`) of an instance given `cloud_init`, in its pool.
pub fn cloud_init_seed_volume(domain: &str) -> String {
    format!("{domain}-cidata.iso")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in [ImageFormat::Qcow2, ImageFormat::Raw] {
            assert_eq!(ImageFormat::from_name(f.as_str()), Some(f));
        }
        assert_eq!(ImageFormat::from_name("vmdk"), None);
        for v in [VirtType::Kvm, VirtType::Qemu] {
            assert_eq!(VirtType::parse(v.as_str()), Some(v));
        }
        assert_eq!(VirtType::parse("xen"), None);
        assert_eq!(config_disk_volume("web1"), "web1-config.iso");
        assert_eq!(cloud_init_seed_volume("web1"), "web1-cidata.iso");
    }
}
