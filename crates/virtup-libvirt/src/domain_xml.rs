//! Domain XML as pure functions: [`DomainSpec`] renders a definition, [`parse_domain_xml`] reads one back.

use crate::error::{LibvirtError, Result};
use crate::tag::VirtupTag;
use crate::xml::{self, check_text, scaled_bytes, Element, XmlWriter};

/// The accelerator (libvirt's `<domain type=…>`) and disk formats are virtup-wide concepts.
pub use virtup_core::nic::{DirectMode, Nic, NicModel};
pub use virtup_core::{ImageFormat, VirtType};

/// Guest CPU model policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuMode {
    /// No `<cpu>` element: the hypervisor's default model.
    HypervisorDefault,
    HostPassthrough,
    HostModel,
    /// Every feature the accelerator can offer; for TCG this is what lets x86-64-v2+ guests boot.
    Maximum,
}

impl CpuMode {
    /// What [`DomainSpec::new`] picks for an accelerator.
    pub fn default_for(virt_type: VirtType) -> CpuMode {
        match virt_type {
            VirtType::Kvm => CpuMode::HostPassthrough,
            VirtType::Qemu => CpuMode::Maximum,
        }
    }

    pub(crate) fn as_attr(self) -> Option<&'static str> {
        match self {
            CpuMode::HypervisorDefault => None,
            CpuMode::HostPassthrough => Some("host-passthrough"),
            CpuMode::HostModel => Some("host-model"),
            CpuMode::Maximum => Some("maximum"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskDevice {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskBus {
    Virtio,
    Scsi,
    Sata,
}

impl DiskBus {
    fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Scsi => "scsi",
            DiskBus::Sata => "sata",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            DiskBus::Virtio => "vd",
            DiskBus::Scsi | DiskBus::Sata => "sd",
        }
    }
}

/// A file-backed disk; its target name (`vda`, `vdb`, `sda`…) is assigned in order per prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Absolute path on the hypervisor host (a volume's path).
    pub path: String,
    pub format: ImageFormat,
    pub device: DiskDevice,
    pub bus: DiskBus,
    pub readonly: bool,
    /// The disk's serial, which a Linux guest reads in `/sys/block/*/serial` without probing
    /// any device (the first-boot script finds its config disk by it).
    pub serial: Option<String>,
}

impl DiskSpec {
    /// A writable virtio disk.
    pub fn disk(path: impl Into<String>, format: ImageFormat) -> Self {
        DiskSpec {
            path: path.into(),
            format,
            device: DiskDevice::Disk,
            bus: DiskBus::Virtio,
            readonly: false,
            serial: None,
        }
    }

    /// A read-only raw CD-ROM (config ISOs); SCSI because the cloud kernels see no SATA/IDE.
    pub fn cdrom(path: impl Into<String>) -> Self {
        DiskSpec {
            path: path.into(),
            format: ImageFormat::Raw,
            device: DiskDevice::Cdrom,
            bus: DiskBus::Scsi,
            readonly: true,
            serial: None,
        }
    }
}

/// One NIC: on a libvirt network, a host bridge, or a host device (macvtap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub source: Nic,
    /// `None` lets libvirt generate one (52:54:00:…).
    pub mac: Option<String>,
    /// The device the guest sees (virtio unless the instance asks for another).
    pub model: NicModel,
}

impl NicSpec {
    /// A NIC on libvirt network `network`.
    pub fn network(network: impl Into<String>, mac: Option<String>) -> NicSpec {
        NicSpec {
            source: Nic::Network(network.into()),
            mac,
            model: NicModel::Virtio,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Graphics {
    None,
    /// Listens on 127.0.0.1 only.
    Vnc,
    /// Listens on 127.0.0.1 only.
    Spice,
}

/// What the guest's reboot does; the KVM probe uses `Destroy` so a looping guest cannot linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnReboot {
    Restart,
    Destroy,
}

/// Everything virtup decides about a domain; [`DomainSpec::to_xml`] renders libvirt's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: String,
    pub uuid: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub virt_type: VirtType,
    pub cpu: CpuMode,
    /// `None`: the hypervisor's default guest architecture.
    pub arch: Option<String>,
    /// `None`: the hypervisor's default machine type.
    pub machine: Option<String>,
    pub disks: Vec<DiskSpec>,
    /// In order: the guest names them in PCI order, and the first is the one virtup reaches.
    pub nics: Vec<NicSpec>,
    pub graphics: Graphics,
    /// A pty serial port with a console on it (`virsh console`).
    pub serial_console: bool,
    /// The virtio-serial channel `org.qemu.guest_agent.0`.
    pub guest_agent: bool,
    /// virtio-rng fed from the host's /dev/urandom.
    pub rng: bool,
    pub on_reboot: OnReboot,
    pub metadata: Option<VirtupTag>,
    /// A VM generation ID device (`<genid/>`: libvirt picks the value). A guest resumed from a
    /// memory image under a new one knows it is a copy and reseeds its random number generator.
    pub genid: bool,
    /// SMBIOS system family, as the guest reads it from /sys/class/dmi/id/product_family.
    pub smbios_family: Option<String>,
    /// Extra virtio-serial ports by name (unix channels libvirt places), after the agent's.
    pub ports: Vec<String>,
}

/// Name of the guest agent channel, as qemu-guest-agent expects it.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

impl DomainSpec {
    /// A headless domain with serial console, guest agent channel and rng, no disks and no NIC.
    pub fn new(name: impl Into<String>, memory_mib: u64, vcpus: u32, virt_type: VirtType) -> Self {
        DomainSpec {
            name: name.into(),
            uuid: None,
            memory_mib,
            vcpus,
            virt_type,
            cpu: CpuMode::default_for(virt_type),
            arch: None,
            machine: None,
            disks: Vec::new(),
            nics: Vec::new(),
            graphics: Graphics::None,
            serial_console: true,
            guest_agent: true,
            rng: true,
            on_reboot: OnReboot::Restart,
            metadata: None,
            genid: false,
            smbios_family: None,
            ports: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        check_text("domain name", &self.name)?;
        if self.name.is_empty() {
            return Err(LibvirtError::invalid(
                "domain name",
                "",
                "must not be empty",
            ));
        }
        if let Some(uuid) = &self.uuid {
            let hex = uuid.chars().filter(|&c| c != '-').collect::<String>();
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(LibvirtError::invalid(
                    "uuid",
                    uuid,
                    "expected 32 hex digits",
                ));
            }
        }
        if self.memory_mib == 0 {
            return Err(LibvirtError::invalid(
                "memory",
                "0",
                "must be at least 1 MiB",
            ));
        }
        if self.vcpus == 0 {
            return Err(LibvirtError::invalid("vcpus", "0", "must be at least 1"));
        }
        for (what, v) in [("arch", &self.arch), ("machine type", &self.machine)] {
            if let Some(v) = v {
                check_text(what, v)?;
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(LibvirtError::invalid(what, v, "must be one word"));
                }
            }
        }
        for disk in &self.disks {
            check_text("disk path", &disk.path)?;
            if !disk.path.starts_with('/') {
                return Err(LibvirtError::invalid(
                    "disk path",
                    &disk.path,
                    "must be absolute",
                ));
            }
            if disk.device == DiskDevice::Cdrom && disk.bus == DiskBus::Virtio {
                return Err(LibvirtError::invalid(
                    "disk bus",
                    "virtio",
                    format!("a cdrom cannot sit on virtio (`{}`)", disk.path),
                ));
            }
        }
        for nic in &self.nics {
            nic.validate()?;
        }
        if let Some(tag) = &self.metadata {
            tag.validate()?;
        }
        if let Some(family) = &self.smbios_family {
            check_text("SMBIOS family", family)?;
        }
        for port in &self.ports {
            check_text("port name", port)?;
            if port.is_empty() {
                return Err(LibvirtError::invalid("port name", "", "must not be empty"));
            }
        }
        Ok(())
    }

    /// Target device names in disk order (`vda`, `vdb`, `sda`…).
    pub fn disk_targets(&self) -> Vec<String> {
        let mut next = [0usize; 2];
        self.disks
            .iter()
            .map(|d| {
                let slot = usize::from(d.bus.target_prefix() == "sd");
                let index = next[slot];
                next[slot] += 1;
                format!("{}{}", d.bus.target_prefix(), disk_letters(index))
            })
            .collect()
    }

    /// Renders the libvirt domain XML; refuses values that could not be represented faithfully.
    pub fn to_xml(&self) -> Result<String> {
        self.validate()?;
        let mut w = XmlWriter::new();
        w.open("domain", &[("type", self.virt_type.as_str())]);
        w.leaf("name", &[], &self.name);
        if let Some(uuid) = &self.uuid {
            w.leaf("uuid", &[], uuid);
        }
        if self.genid {
            w.empty("genid", &[]);
        }
        if let Some(tag) = &self.metadata {
            w.open("metadata", &[]);
            tag.write(&mut w, true);
            w.close("metadata");
        }
        let memory = self.memory_mib.to_string();
        w.leaf("memory", &[("unit", "MiB")], &memory);
        w.leaf("currentMemory", &[("unit", "MiB")], &memory);
        w.leaf("vcpu", &[("placement", "static")], &self.vcpus.to_string());
        if let Some(family) = &self.smbios_family {
            w.open("sysinfo", &[("type", "smbios")]);
            w.open("system", &[]);
            w.leaf("entry", &[("name", "family")], family);
            w.close("system");
            w.close("sysinfo");
        }

        let mut os_type = Vec::new();
        if let Some(arch) = &self.arch {
            os_type.push(("arch", arch.as_str()));
        }
        if let Some(machine) = &self.machine {
            os_type.push(("machine", machine.as_str()));
        }
        w.open("os", &[]);
        w.leaf("type", &os_type, "hvm");
        if self.smbios_family.is_some() {
            w.empty("smbios", &[("mode", "sysinfo")]);
        }
        w.close("os");

        w.open("features", &[]);
        w.empty("acpi", &[]);
        // APIC exists only on x86; other architectures reject the element.
        let x86 = self
            .arch
            .as_deref()
            .is_none_or(|a| matches!(a, "x86_64" | "i686" | "i386"));
        if x86 {
            w.empty("apic", &[]);
        }
        w.close("features");

        if let Some(mode) = self.cpu.as_attr() {
            w.empty("cpu", &[("mode", mode), ("check", "none")]);
        }
        w.empty("clock", &[("offset", "utc")]);
        w.leaf("on_poweroff", &[], "destroy");
        w.leaf(
            "on_reboot",
            &[],
            match self.on_reboot {
                OnReboot::Restart => "restart",
                OnReboot::Destroy => "destroy",
            },
        );
        w.leaf("on_crash", &[], "destroy");

        w.open("devices", &[]);
        self.write_disks(&mut w);
        for nic in &self.nics {
            nic.write(&mut w);
        }
        if self.serial_console {
            w.open("serial", &[("type", "pty")]);
            w.empty("target", &[("port", "0")]);
            w.close("serial");
            w.open("console", &[("type", "pty")]);
            w.empty("target", &[("type", "serial"), ("port", "0")]);
            w.close("console");
        }
        if self.guest_agent {
            w.open("channel", &[("type", "unix")]);
            w.empty(
                "target",
                &[("type", "virtio"), ("name", GUEST_AGENT_CHANNEL)],
            );
            w.close("channel");
        }
        for port in &self.ports {
            w.open("channel", &[("type", "unix")]);
            w.empty("target", &[("type", "virtio"), ("name", port)]);
            w.close("channel");
        }
        let graphics = match self.graphics {
            Graphics::None => None,
            Graphics::Vnc => Some("vnc"),
            Graphics::Spice => Some("spice"),
        };
        if let Some(kind) = graphics {
            w.open("graphics", &[("type", kind), ("autoport", "yes")]);
            w.empty("listen", &[("type", "address"), ("address", "127.0.0.1")]);
            w.close("graphics");
        }
        if self.rng {
            w.open("rng", &[("model", "virtio")]);
            w.leaf("backend", &[("model", "random")], "/dev/urandom");
            w.close("rng");
        }
        w.close("devices");
        w.close("domain");
        Ok(w.finish())
    }

    fn write_disks(&self, w: &mut XmlWriter) {
        if self.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
            w.empty(
                "controller",
                &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")],
            );
        }
        // Boot from the first real disk; per-device order keeps a cdrom from being tried first.
        let boot_disk = self.disks.iter().position(|d| d.device == DiskDevice::Disk);
        for (i, (disk, target)) in self.disks.iter().zip(self.disk_targets()).enumerate() {
            disk.write(w, &target, boot_disk == Some(i));
        }
    }
}

impl DiskSpec {
    fn write(&self, w: &mut XmlWriter, target: &str, boot: bool) {
        let device = match self.device {
            DiskDevice::Disk => "disk",
            DiskDevice::Cdrom => "cdrom",
        };
        w.open("disk", &[("type", "file"), ("device", device)]);
        w.empty(
            "driver",
            &[("name", "qemu"), ("type", self.format.as_str())],
        );
        w.empty("source", &[("file", &self.path)]);
        w.empty("target", &[("dev", target), ("bus", self.bus.as_str())]);
        if self.readonly {
            w.empty("readonly", &[]);
        }
        if let Some(serial) = &self.serial {
            w.leaf("serial", &[], serial);
        }
        if boot {
            w.empty("boot", &[("order", "1")]);
        }
        w.close("disk");
    }

    /// The `<disk>` element alone, as a hot-plug (`virDomainAttachDevice`) takes it.
    pub fn device_xml(&self, target: &str) -> Result<String> {
        check_text("disk path", &self.path)?;
        check_text("disk target", target)?;
        if let Some(serial) = &self.serial {
            check_text("disk serial", serial)?;
        }
        let mut w = XmlWriter::new();
        self.write(&mut w, target, false);
        Ok(w.finish())
    }
}

impl NicSpec {
    fn validate(&self) -> Result<()> {
        let what = match &self.source {
            Nic::Network(_) => "network name",
            Nic::Bridge(_) => "bridge name",
            Nic::Direct { .. } => "host device name",
        };
        let name = self.source.source();
        check_text(what, name)?;
        if name.is_empty() {
            return Err(LibvirtError::invalid(what, "", "must not be empty"));
        }
        if let Some(mac) = &self.mac {
            validate_mac(mac)?;
        }
        Ok(())
    }

    fn write(&self, w: &mut XmlWriter) {
        // `<interface type>` is the source's kind, and so is the `<source>` attribute naming it
        // (`network`, `bridge`), but for macvtap, whose `<source>` names a `dev` and its mode.
        let kind = self.source.kind();
        w.open("interface", &[("type", kind)]);
        if let Some(mac) = &self.mac {
            w.empty("mac", &[("address", mac)]);
        }
        match self.source.mode() {
            Some(mode) => w.empty(
                "source",
                &[("dev", self.source.source()), ("mode", mode.as_str())],
            ),
            None => w.empty("source", &[(kind, self.source.source())]),
        }
        w.empty("model", &[("type", self.model.as_str())]);
        w.close("interface");
    }

    /// The `<interface>` element alone, as a hot-plug (`virDomainAttachDevice`) takes it.
    pub fn device_xml(&self) -> Result<String> {
        self.validate()?;
        let mut w = XmlWriter::new();
        self.write(&mut w);
        Ok(w.finish())
    }
}

/// `a`…`z`, `aa`…`az`, … as libvirt names the 1st, 26th, 27th… disk.
fn disk_letters(mut index: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

pub(crate) fn validate_mac(mac: &str) -> Result<()> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(LibvirtError::invalid(
            "mac address",
            &mac.escape_debug().to_string(),
            "expected six hex pairs like 52:54:00:12:34:56",
        ));
    }
    Ok(())
}

/// A disk as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDisk {
    /// `disk`, `cdrom`, …
    pub device: String,
    /// The file or block device path; `None` for an empty cdrom or a network disk.
    pub path: Option<String>,
    /// `(pool, volume)` for `type='volume'` disks.
    pub volume: Option<(String, String)>,
    pub format: Option<String>,
    pub target: Option<String>,
    pub bus: Option<String>,
    pub readonly: bool,
    pub serial: Option<String>,
}

/// A NIC as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedInterface {
    pub mac: Option<String>,
    /// The libvirt network for `type='network'` interfaces.
    pub network: Option<String>,
    /// Where it plugs in, for the kinds virtup makes (network, bridge, direct); `None` for others.
    pub source: Option<Nic>,
    pub model: Option<String>,
    /// The host's end (a tap such as `vnet3`), in a running domain's live XML.
    pub target_dev: Option<String>,
}

/// An `<interface>`'s source as a [`Nic`], for the kinds virtup makes.
fn interface_source(i: &Element) -> Option<Nic> {
    let source = i.child("source")?;
    let text = |attr: &str| source.attr(attr).map(str::to_owned);
    match i.attr("type")? {
        "network" => text("network").map(Nic::Network),
        "bridge" => text("bridge").map(Nic::Bridge),
        "direct" => Some(Nic::Direct {
            dev: text("dev")?,
            // libvirt's default mode is vepa.
            mode: DirectMode::parse(source.attr("mode").unwrap_or("vepa"))?,
        }),
        _ => None,
    }
}

/// What virtup reads back from a domain's XML (live or inactive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDomain {
    pub name: String,
    pub uuid: Option<String>,
    /// `kvm`, `qemu`, `test`…
    pub virt_type: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub arch: Option<String>,
    pub machine: Option<String>,
    pub disks: Vec<ParsedDisk>,
    pub interfaces: Vec<ParsedInterface>,
    /// Names of the virtio-serial channels (the guest agent's, a seed's port).
    pub channels: Vec<String>,
    pub tag: Option<VirtupTag>,
}

impl ParsedDomain {
    pub fn macs(&self) -> Vec<&str> {
        self.interfaces
            .iter()
            .filter_map(|i| i.mac.as_deref())
            .collect()
    }

    pub fn disk_paths(&self) -> Vec<&str> {
        self.disks
            .iter()
            .filter_map(|d| d.path.as_deref())
            .collect()
    }
}

/// Parses domain XML as libvirt prints it (canonical units, single quotes, rewritten metadata).
pub fn parse_domain_xml(domain_xml: &str) -> Result<ParsedDomain> {
    let fail = |m: String| LibvirtError::parse("domain XML", m);
    let root = xml::parse(domain_xml).map_err(fail)?;
    if root.name != "domain" || root.ns.is_some() {
        return Err(fail(format!(
            "root element is `{}`, not `domain`",
            root.name
        )));
    }
    let name = root
        .child_text("name")
        .ok_or_else(|| fail("no <name>".into()))?
        .to_owned();
    let memory = root
        .child("memory")
        .ok_or_else(|| fail(format!("domain `{name}` has no <memory>")))?;
    let memory_bytes = scaled_bytes(&memory.text, memory.attr("unit")).ok_or_else(|| {
        fail(format!(
            "domain `{name}` has an unreadable <memory> `{}`",
            memory.text
        ))
    })?;
    let vcpus = root
        .child_text("vcpu")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| fail(format!("domain `{name}` has no readable <vcpu>")))?;
    let os_type = root.path(&["os", "type"]);
    let devices = root.child("devices");
    let disks = devices
        .map(|d| d.children_named("disk").map(parse_disk).collect())
        .unwrap_or_default();
    let interfaces = devices
        .map(|d| {
            d.children_named("interface")
                .map(|i| ParsedInterface {
                    mac: i
                        .child("mac")
                        .and_then(|m| m.attr("address"))
                        .map(str::to_owned),
                    network: i
                        .child("source")
                        .and_then(|s| s.attr("network"))
                        .map(str::to_owned),
                    source: interface_source(i),
                    target_dev: i
                        .child("target")
                        .and_then(|t| t.attr("dev"))
                        .map(str::to_owned),
                    model: i
                        .child("model")
                        .and_then(|m| m.attr("type"))
                        .map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ParsedDomain {
        uuid: root.child_text("uuid").map(|u| u.trim().to_owned()),
        virt_type: root.attr("type").unwrap_or_default().to_owned(),
        memory_mib: memory_bytes >> 20,
        vcpus,
        arch: os_type.and_then(|t| t.attr("arch")).map(str::to_owned),
        machine: os_type.and_then(|t| t.attr("machine")).map(str::to_owned),
        disks,
        interfaces,
        channels: devices
            .map(|d| {
                d.children_named("channel")
                    .filter_map(|c| c.child("target").and_then(|t| t.attr("name")))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        tag: VirtupTag::from_domain_element(&root),
        name,
    })
}

fn parse_disk(d: &Element) -> ParsedDisk {
    let source = d.child("source");
    let src = |k: &str| source.and_then(|s| s.attr(k)).map(str::to_owned);
    let target = d.child("target");
    ParsedDisk {
        device: d.attr("device").unwrap_or("disk").to_owned(),
        path: src("file").or_else(|| src("dev")),
        volume: src("pool").zip(src("volume")),
        format: d
            .child("driver")
            .and_then(|x| x.attr("type"))
            .map(str::to_owned),
        target: target.and_then(|t| t.attr("dev")).map(str::to_owned),
        bus: target.and_then(|t| t.attr("bus")).map(str::to_owned),
        readonly: d.child("readonly").is_some(),
        serial: d.child_text("serial").map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::TagKind;

    fn full_spec() -> DomainSpec {
        let mut spec = DomainSpec::new("web1", 1024, 2, VirtType::Qemu);
        spec.uuid = Some("6695eb01-f6a4-8304-79aa-97f2502e193f".into());
        spec.arch = Some("x86_64".into());
        spec.machine = Some("q35".into());
        spec.disks = vec![
            DiskSpec::disk("/var/lib/libvirt/images/web1.qcow2", ImageFormat::Qcow2),
            DiskSpec::cdrom("/var/lib/libvirt/images/web1-config.iso"),
            DiskSpec {
                serial: Some("VIRTUPCFG".into()),
                ..DiskSpec::disk("/var/lib/libvirt/images/web1-data.raw", ImageFormat::Raw)
            },
        ];
        spec.nics = vec![NicSpec::network(
            "default",
            Some("52:54:00:12:34:56".into()),
        )];
        spec.graphics = Graphics::Vnc;
        let mut tag = VirtupTag::new(TagKind::Instance, "web1");
        tag.template = Some("debian-12".into());
        tag.generation = 2;
        tag.owned_volumes = vec!["web1.qcow2".into(), "web1-config.iso".into()];
        spec.metadata = Some(tag);
        spec
    }

    #[test]
    fn renders_and_parses_back() {
        let spec = full_spec();
        let xml = spec.to_xml().unwrap();
        let parsed = parse_domain_xml(&xml).unwrap();
        assert_eq!(parsed.name, "web1");
        // Only the disk that has a serial says one (the first-boot script looks for it in sysfs).
        assert_eq!(xml.matches("<serial>").count(), 1, "{xml}");
        assert!(xml.contains("<serial>VIRTUPCFG</serial>"), "{xml}");
        assert_eq!(parsed.uuid.as_deref(), spec.uuid.as_deref());
        assert_eq!(parsed.virt_type, "qemu");
        assert_eq!((parsed.memory_mib, parsed.vcpus), (1024, 2));
        assert_eq!(parsed.arch.as_deref(), Some("x86_64"));
        assert_eq!(parsed.machine.as_deref(), Some("q35"));
        assert_eq!(parsed.macs(), vec!["52:54:00:12:34:56"]);
        assert_eq!(parsed.interfaces[0].network.as_deref(), Some("default"));
        assert_eq!(parsed.interfaces[0].model.as_deref(), Some("virtio"));
        assert_eq!(
            parsed.disk_paths(),
            vec![
                "/var/lib/libvirt/images/web1.qcow2",
                "/var/lib/libvirt/images/web1-config.iso",
                "/var/lib/libvirt/images/web1-data.raw",
            ]
        );
        let targets: Vec<_> = parsed
            .disks
            .iter()
            .map(|d| {
                (
                    d.target.as_deref().unwrap(),
                    d.bus.as_deref().unwrap(),
                    d.readonly,
                )
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                ("vda", "virtio", false),
                ("sda", "scsi", true),
                ("vdb", "virtio", false)
            ]
        );
        assert_eq!(parsed.disks[1].device, "cdrom");
        assert_eq!(parsed.disks[0].format.as_deref(), Some("qcow2"));
        assert_eq!(parsed.tag, spec.metadata);
        // Structure checks on the rendered text itself.
        for needle in [
            "<controller type=\"scsi\" index=\"0\" model=\"virtio-scsi\"/>",
            "<cpu mode=\"maximum\" check=\"none\"/>",
            "<target type=\"virtio\" name=\"org.qemu.guest_agent.0\"/>",
            "<backend model=\"random\">/dev/urandom</backend>",
            "<listen type=\"address\" address=\"127.0.0.1\"/>",
            "<console type=\"pty\">",
            "xmlns:virtup=\"https://virtup.dev/xmlns/domain/1\"",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        let root = xml::parse(&xml).unwrap();
        let booting: Vec<_> = root
            .path(&["devices"])
            .unwrap()
            .children_named("disk")
            .filter(|d| d.child("boot").is_some())
            .map(|d| d.child("source").and_then(|s| s.attr("file")).unwrap())
            .collect();
        assert_eq!(booting, vec!["/var/lib/libvirt/images/web1.qcow2"]);
    }

    #[test]
    fn minimal_spec_has_no_optional_devices() {
        let mut spec = DomainSpec::new("probe", 32, 1, VirtType::Kvm);
        spec.serial_console = false;
        spec.guest_agent = false;
        spec.rng = false;
        spec.on_reboot = OnReboot::Destroy;
        let xml = spec.to_xml().unwrap();
        for absent in [
            "<disk",
            "<interface",
            "<serial",
            "<channel",
            "<rng",
            "<graphics",
            "<metadata",
            "<uuid",
            "<controller",
        ] {
            assert!(!xml.contains(absent), "{absent} in\n{xml}");
        }
        assert!(xml.contains("<domain type=\"kvm\">"));
        assert!(xml.contains("<cpu mode=\"host-passthrough\" check=\"none\"/>"));
        assert!(xml.contains("<on_reboot>destroy</on_reboot>"));
        let parsed = parse_domain_xml(&xml).unwrap();
        assert_eq!((parsed.memory_mib, parsed.vcpus, parsed.tag), (32, 1, None));
    }

    #[test]
    fn hostile_names_and_paths_are_escaped() {
        let mut spec = full_spec();
        spec.name = "a\"><evil/>&".into();
        spec.disks[0].path = "/x/'\"><disk device=\"evil\">&amp;.qcow2".into();
        spec.nics[0].source = Nic::Network("n\"/><interface type=\"bridge\">".into());
        let xml = spec.to_xml().unwrap();
        assert!(!xml.contains("<evil/>"));
        let parsed = parse_domain_xml(&xml).unwrap();
        assert_eq!(parsed.name, spec.name);
        assert_eq!(parsed.disks.len(), 3);
        assert_eq!(
            parsed.disks[0].path.as_deref(),
            Some(spec.disks[0].path.as_str())
        );
        assert_eq!(parsed.interfaces.len(), 1);
        assert_eq!(
            parsed.interfaces[0].network.as_deref(),
            Some("n\"/><interface type=\"bridge\">")
        );
    }

    #[test]
    fn nics_keep_their_order_and_kind() {
        let mut spec = full_spec();
        spec.nics.push(NicSpec {
            source: Nic::Bridge("br0".into()),
            mac: Some("52:54:00:00:00:02".into()),
            model: NicModel::E1000,
        });
        spec.nics.push(NicSpec {
            source: Nic::Direct {
                dev: "eth0".into(),
                mode: DirectMode::Vepa,
            },
            mac: Some("52:54:00:00:00:03".into()),
            model: NicModel::Rtl8139,
        });
        let xml = spec.to_xml().unwrap();
        let at = |needle: &str| {
            xml.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {xml}"))
        };
        assert!(at("<source network=\"default\"/>") < at("<source bridge=\"br0\"/>"));
        assert!(at("<source bridge=\"br0\"/>") < at("<source dev=\"eth0\" mode=\"vepa\"/>"));
        assert!(
            xml.contains("<interface type=\"bridge\">")
                && xml.contains("<interface type=\"direct\">")
        );
        let parsed = parse_domain_xml(&xml).unwrap();
        let macs: Vec<_> = parsed.interfaces.iter().map(|i| i.mac.as_deref()).collect();
        let models: Vec<_> = parsed
            .interfaces
            .iter()
            .map(|i| i.model.as_deref())
            .collect();
        assert_eq!(models, [Some("virtio"), Some("e1000"), Some("rtl8139")]);
        assert_eq!(
            macs,
            [
                Some("52:54:00:12:34:56"),
                Some("52:54:00:00:00:02"),
                Some("52:54:00:00:00:03")
            ]
        );
        spec.nics[1].source = Nic::Bridge(String::new());
        assert!(spec
            .to_xml()
            .unwrap_err()
            .to_string()
            .contains("bridge name"));
    }

    #[test]
    fn invalid_specs_are_refused_with_the_value_named() {
        type Mutation = fn(&mut DomainSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.name = String::new(), "invalid domain name ``"),
            (|s| s.name = "a\nb".into(), "invalid domain name `a\\nb`"),
            (|s| s.memory_mib = 0, "invalid memory `0`"),
            (|s| s.vcpus = 0, "invalid vcpus `0`"),
            (|s| s.uuid = Some("nope".into()), "invalid uuid `nope`"),
            (
                |s| s.machine = Some("q35 -x".into()),
                "invalid machine type `q35 -x`",
            ),
            (
                |s| s.disks[0].path = "relative.qcow2".into(),
                "invalid disk path `relative.qcow2`",
            ),
            (
                |s| s.disks[1].bus = DiskBus::Virtio,
                "invalid disk bus `virtio`",
            ),
            (
                |s| s.nics[0].mac = Some("52:54:00:zz:00:01".into()),
                "invalid mac address `52:54:00:zz:00:01`",
            ),
            (
                |s| {
                    s.metadata
                        .as_mut()
                        .unwrap()
                        .owned_volumes
                        .push("v\u{7}".into())
                },
                "invalid owned volume",
            ),
        ];
        for (mutate, want) in cases {
            let mut spec = full_spec();
            mutate(&mut spec);
            let err = spec.to_xml().unwrap_err().to_string();
            assert!(err.starts_with(want), "got {err:?}, want prefix {want:?}");
        }
    }

    #[test]
    fn disk_targets_follow_libvirt_naming() {
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(27), "ab");
        assert_eq!(disk_letters(701), "zz");
        assert_eq!(disk_letters(702), "aaa");
        let mut spec = DomainSpec::new("d", 64, 1, VirtType::Qemu);
        spec.disks = (0..28)
            .map(|i| DiskSpec::disk(format!("/d/{i}"), ImageFormat::Raw))
            .collect();
        spec.disks[1].bus = DiskBus::Sata;
        let targets = spec.disk_targets();
        assert_eq!(&targets[..3], ["vda", "sda", "vdb"]);
        assert_eq!(targets[26], "vdz");
        assert_eq!(targets[27], "vdaa");
        spec.disks.push(DiskSpec::disk("/d/x", ImageFormat::Raw));
        assert_eq!(spec.disk_targets()[28], "vdab");
    }

    #[test]
    fn parses_libvirt_canonical_output() {
        // Shaped like `virsh dumpxml` output from libvirt 11 (KiB units, single quotes, extras).
        let xml = r#"<domain type='kvm' id='3'>
  <name>db&amp;1</name>
  <uuid>a1eb8960-472d-4717-884b-f23a077f388d</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static' current='1'>4</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-10.0'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='default' volume='db1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cd'/>
      <source network='default' portid='x' bridge='virbr0'/>
      <model type='e1000'/>
    </interface>
  </devices>
</domain>"#;
        let p = parse_domain_xml(xml).unwrap();
        assert_eq!(p.name, "db&1");
        assert_eq!((p.memory_mib, p.vcpus), (2048, 4));
        assert_eq!(p.machine.as_deref(), Some("pc-q35-10.0"));
        assert_eq!(
            p.disks[0].volume,
            Some(("default".into(), "db1.qcow2".into()))
        );
        assert_eq!(p.disks[0].path, None);
        assert!(p.disks[1].readonly && p.disks[1].path.is_none());
        assert_eq!(p.macs(), vec!["52:54:00:aa:bb:cc", "52:54:00:aa:bb:cd"]);
        assert_eq!(p.interfaces[0].network, None);
        assert_eq!(p.interfaces[1].network.as_deref(), Some("default"));
        assert_eq!(p.tag, None);
    }

    #[test]
    fn unreadable_domain_xml_is_an_error() {
        for (xml, want) in [
            ("<network/>", "root element is `network`"),
            (
                "<domain><memory>1</memory><vcpu>1</vcpu></domain>",
                "no <name>",
            ),
            (
                "<domain><name>x</name><vcpu>1</vcpu></domain>",
                "domain `x` has no <memory>",
            ),
            (
                "<domain><name>x</name><memory unit='parsec'>1</memory><vcpu>1</vcpu></domain>",
                "unreadable <memory>",
            ),
            (
                "<domain><name>x</name><memory>1</memory></domain>",
                "no readable <vcpu>",
            ),
            ("<domain>", "failed to parse domain XML"),
        ] {
            let err = parse_domain_xml(xml).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
