//! The only crate that talks to libvirt (through `virt`): domains, volumes, networks and their XML.
//!
//! Pure parts (no libvirt needed): [`DomainSpec::to_xml`], [`parse_domain_xml`], [`VirtupTag`],
//! [`VolumeSpec::to_xml`], [`parse_volume_xml`], [`parse_capabilities`]. Everything else hangs off
//! a [`Hypervisor`] connection. Every string that ends up in XML is escaped by quick-xml and
//! refused if it holds control characters, so names cannot inject XML.

mod domain_xml;
mod error;
mod ffi;
mod host_setup;
mod hypervisor;
mod network_dhcp;
mod save_image;
mod storage;
mod storage_xml;
mod tag;
mod virt_type;
mod warm_xml;
mod xml;

pub use domain_xml::{
    parse_domain_xml, CpuMode, DirectMode, DiskBus, DiskDevice, DiskSpec, DomainSpec, Graphics,
    ImageFormat, Nic, NicModel, NicSpec, OnReboot, ParsedDisk, ParsedDomain, ParsedInterface,
    VirtType, GUEST_AGENT_CHANNEL,
};
pub use error::{LibvirtError, Result};
pub use host_setup::{dir_pool_xml, NatNetworkSpec, NetworkInfo};
pub use hypervisor::{
    AddressLookup, AddressSource, DomainInfo, DomainState, FoundAddress, GuestAddress,
    GuestInterface, Hypervisor, Lease, AGENT_TIMEOUT_SECS,
};
pub use network_dhcp::{
    dhcp_host_xml, mac_bytes, parse_network_dhcp, same_mac, DhcpHost, DhcpSubnet, NetworkDhcp,
};
pub use save_image::{SaveImageHeader, SAVE_HEADER_LEN};
pub use storage_xml::{parse_volume_xml, PoolInfo, VolumeInfo, VolumeSpec};
pub use tag::{TagKind, VirtupTag, VIRTUP_NS, VIRTUP_PREFIX};
pub use virt_type::{
    choose_virt_type, choose_virt_type_with, choose_virt_type_without_probe,
    choose_virt_type_without_probe_with, parse_capabilities, probe_guest, probe_kvm,
    remote_appliance_virt_type, remote_appliance_virt_type_with, uri_is_local, uri_password_host,
    GuestProbe, HostCapabilities, VirtTypeChoice, PROBE_WATCH, VIRT_TYPE_ENV,
};
pub use warm_xml::{persistent_xml_from_live, warm_clone_xml, WarmClone, SEED_FAMILY, SEED_PORT};
