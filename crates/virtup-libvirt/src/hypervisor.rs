//! A libvirt connection and the domain operations virtup needs: list, define, start, stop, tag, addresses.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Once;

use virt::connect::Connect;
use virt::domain::{Domain, DomainState as VirtState};
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

use crate::domain_xml::DomainSpec;
use crate::error::{LibvirtError, Result};
use crate::ffi;
use crate::tag::{VirtupTag, VIRTUP_NS, VIRTUP_PREFIX};

/// Upper bound for one guest-agent round trip; without it a wedged agent blocks forever.
pub const AGENT_TIMEOUT_SECS: i32 = 5;

static QUIET_LIBVIRT: Once = Once::new();

/// An open connection to one libvirt URI.
pub struct Hypervisor {
    pub(crate) conn: Connect,
    uri: String,
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hypervisor")
            .field("uri", &self.uri)
            .finish()
    }
}

/// Run state of a domain, reduced to what virtup decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Paused,
    ShutOff,
    /// Anything else (`shutdown` in progress, `crashed`, `pmsuspended`…), named.
    Other(String),
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainState::Running => f.write_str("running"),
            DomainState::Paused => f.write_str("paused"),
            DomainState::ShutOff => f.write_str("shut off"),
            DomainState::Other(s) => f.write_str(s),
        }
    }
}

/// A domain as observed: identity, state and virtup's tag if it carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    pub persistent: bool,
    pub autostart: bool,
    /// It is shut off with a managed-save image (`virsh managedsave`): its next start resumes it.
    pub saved: bool,
    pub tag: Option<VirtupTag>,
}

impl DomainInfo {
    /// The state as the inventory's `virtup_state` and `virt-up --list` name it: `running`,
    /// `stopped`, `suspended` (shut off with a managed-save image), `paused`, or libvirt's word.
    pub fn state_word(&self) -> String {
        match &self.state {
            DomainState::Running => "running".into(),
            DomainState::ShutOff if self.saved => "suspended".into(),
            DomainState::ShutOff => "stopped".into(),
            DomainState::Paused => "paused".into(),
            DomainState::Other(s) => s.clone(),
        }
    }
}

/// The address sources are virtup-wide; libvirt answers all but `dns`, which the caller resolves itself.
pub use virtup_core::AddressSource;

/// libvirt's constant for a source; `None` for `dns`, which libvirt does not answer.
fn raw_source(source: AddressSource) -> Option<sys::virDomainInterfaceAddressesSource> {
    match source {
        AddressSource::Lease => Some(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
        AddressSource::Agent => Some(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
        AddressSource::Arp => Some(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
        AddressSource::Dns => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAddress {
    pub ip: IpAddr,
    pub prefix: u8,
}

/// One guest NIC with the addresses a source reported for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInterface {
    pub name: String,
    pub mac: Option<String>,
    pub addrs: Vec<GuestAddress>,
}

/// The address virtup would connect to, and from which source it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAddress {
    pub ip: IpAddr,
    pub prefix: u8,
    pub source: AddressSource,
    pub interface: String,
}

/// Result of asking several sources in turn; `notes` says why each earlier source gave nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressLookup {
    pub found: Option<FoundAddress>,
    /// Every usable address of the first source that had any, best first (IPv4 before IPv6). A
    /// re-created guest can hold a stale lease beside its current one, so callers that can tell
    /// the right guest apart (by its pinned SSH host key) try them all.
    pub candidates: Vec<FoundAddress>,
    /// One line per source that yielded nothing, e.g. "agent: QEMU guest agent is not connected".
    pub notes: Vec<String>,
}

impl AddressLookup {
    /// The notes on one line: "lease: no lease for 52:54:00:…; agent: …; arp: …".
    pub fn summary(&self) -> String {
        self.notes.join("; ")
    }
}

/// One DHCP lease of a libvirt network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: String,
    pub ip: IpAddr,
    pub prefix: u32,
    pub hostname: Option<String>,
    /// Unix time the lease expires.
    pub expiry: i64,
    /// The network's bridge device.
    pub iface: Option<String>,
}

/// True when libvirt says "I don't know this call or flag", so a simpler call may still work.
pub(crate) fn is_unsupported(e: &VirtError) -> bool {
    let code = e.code();
    code.is(ErrorNumber::NoSupport)
        || code.is(ErrorNumber::ArgumentUnsupported)
        || (code.is(ErrorNumber::InvalidArg) && e.message().contains("unsupported flags"))
}

fn map_state(state: VirtState, reason: String) -> DomainState {
    match state {
        VirtState::Running | VirtState::Blocked => DomainState::Running,
        VirtState::Paused => DomainState::Paused,
        VirtState::Shutoff => DomainState::ShutOff,
        VirtState::Shutdown => DomainState::Other("shutting down".into()),
        VirtState::Crashed => DomainState::Other("crashed".into()),
        VirtState::PMSuspended => DomainState::Other("pmsuspended".into()),
        VirtState::NoState => DomainState::Other(if reason.is_empty() {
            "no state".into()
        } else {
            reason
        }),
    }
}

fn parse_ip(addr: &str) -> Option<IpAddr> {
    // Agents report link-local IPv6 with a zone ("fe80::1%eth0"); the zone is not part of the address.
    addr.split('%').next()?.parse().ok()
}

fn is_usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

impl Hypervisor {
    /// Opens a read-write connection, e.g. `qemu:///system`.
    pub fn connect(uri: &str) -> Result<Hypervisor> {
        Self::open(uri, false)
    }

    /// Opens a read-only connection: enough for listing and reading XML, never for changes.
    pub fn connect_read_only(uri: &str) -> Result<Hypervisor> {
        Self::open(uri, true)
    }

    fn open(uri: &str, read_only: bool) -> Result<Hypervisor> {
        // libvirt prints every error to stderr by default, including the expected ones
        // ("no metadata") virtup asks for on each foreign domain; errors reach callers as values.
        QUIET_LIBVIRT.call_once(virt::error::clear_error_callback);
        let fail = |message: String| LibvirtError::Connect {
            uri: uri.to_owned(),
            message,
        };
        // Every caller shows the URI in its errors and results: one with a password never gets that far.
        if let Some(host) = crate::virt_type::uri_password_host(uri) {
            return Err(LibvirtError::Connect {
                uri: format!("(the URI for {host})"),
                message: "it holds a password (`user:password@`); give the user alone and log in with an ssh key".into(),
            });
        }
        if uri.contains('\0') {
            return Err(fail("the URI contains a NUL byte".into()));
        }
        let conn = if read_only {
            Connect::open_read_only(Some(uri))
        } else {
            Connect::open(Some(uri))
        }
        .map_err(|e| fail(e.message().to_owned()))?;
        Ok(Hypervisor {
            conn,
            uri: uri.to_owned(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether the hypervisor is this machine (its pools are local directories); a remote one is
    /// reached only through libvirt.
    pub fn is_local(&self) -> bool {
        crate::virt_type::uri_is_local(&self.uri)
    }

    /// The memory the hypervisor's host has free, in MiB (what placement weighs).
    pub fn free_memory_mib(&self) -> Result<u64> {
        self.conn
            .free_memory()
            .map(|bytes| bytes / (1024 * 1024))
            .map_err(|e| LibvirtError::call("read free memory of", &self.uri, &e))
    }

    /// libvirt's version number of the hypervisor (QEMU's for the qemu driver: 10.0.2 is 10000002).
    pub fn hypervisor_version(&self) -> Result<u64> {
        self.conn
            .hyp_version()
            .map(u64::from)
            .map_err(|e| LibvirtError::call("read the hypervisor version of", &self.uri, &e))
    }

    /// The version number of the libvirt daemon serving this connection.
    pub fn libvirt_version(&self) -> Result<u64> {
        self.conn
            .lib_version()
            .map(u64::from)
            .map_err(|e| LibvirtError::call("read the libvirt version of", &self.uri, &e))
    }

    /// The hypervisor's capabilities XML (guest architectures and accelerators).
    pub fn capabilities_xml(&self) -> Result<String> {
        self.conn
            .capabilities()
            .map_err(|e| LibvirtError::call("read capabilities of", &self.uri, &e))
    }

    pub(crate) fn find_domain(&self, name: &str) -> Result<Option<Domain>> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code().is(ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(LibvirtError::call("look up domain", name, &e)),
        }
    }

    pub(crate) fn lookup_domain(&self, name: &str) -> Result<Domain> {
        self.find_domain(name)?
            .ok_or_else(|| LibvirtError::DomainNotFound(name.to_owned()))
    }

    /// `Ok(None)` when the domain has no virtup tag (or it is malformed).
    fn read_tag(dom: &Domain, name: &str) -> Result<Option<VirtupTag>> {
        match dom.metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(VIRTUP_NS), 0) {
            Ok(xml) => Ok(VirtupTag::from_metadata_element(&xml)),
            Err(e) if e.code().is(ErrorNumber::NoDomainMetadata) => Ok(None),
            Err(e) => Err(LibvirtError::call("read metadata of domain", name, &e)),
        }
    }

    fn uuids(&self, flags: sys::virConnectListAllDomainsFlags) -> Result<HashSet<String>> {
        let doms = self
            .conn
            .list_all_domains(flags)
            .map_err(|e| LibvirtError::call("list domains on", &self.uri, &e))?;
        Ok(doms.iter().filter_map(|d| d.uuid_string().ok()).collect())
    }

    /// Every domain, virtup's or not, with its tag.
    ///
    /// Cost: seven list calls plus one metadata call per domain; state, persistence and autostart
    /// come from list filters so that hundreds of domains stay fast over a remote connection.
    pub fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let all = self
            .conn
            .list_all_domains(0)
            .map_err(|e| LibvirtError::call("list domains on", &self.uri, &e))?;
        let persistent = self.uuids(sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT)?;
        let autostart = self.uuids(sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?;
        let running = self.uuids(sys::VIR_CONNECT_LIST_DOMAINS_RUNNING)?;
        let paused = self.uuids(sys::VIR_CONNECT_LIST_DOMAINS_PAUSED)?;
        let shutoff = self.uuids(sys::VIR_CONNECT_LIST_DOMAINS_SHUTOFF)?;
        let saved = self.uuids(sys::VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)?;
        let mut out = Vec::with_capacity(all.len());
        for dom in all {
            let (Ok(name), Ok(uuid)) = (dom.name(), dom.uuid_string()) else {
                continue;
            };
            let state = if running.contains(&uuid) {
                DomainState::Running
            } else if paused.contains(&uuid) {
                DomainState::Paused
            } else if shutoff.contains(&uuid) {
                DomainState::ShutOff
            } else {
                match Self::state_of(&dom, &name) {
                    Ok(s) => s,
                    // Gone since the listing: it is not there any more.
                    Err(LibvirtError::DomainNotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            let tag = match Self::read_tag(&dom, &name) {
                Ok(tag) => tag,
                Err(_) if self.find_domain(&name)?.is_none() => continue,
                Err(e) => return Err(e),
            };
            out.push(DomainInfo {
                persistent: persistent.contains(&uuid),
                autostart: autostart.contains(&uuid),
                saved: saved.contains(&uuid),
                name,
                uuid,
                state,
                tag,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn state_of(dom: &Domain, name: &str) -> Result<DomainState> {
        // virt 0.5 swallows virDomainGetState's error; is_active tells "gone" apart first.
        match dom.is_active() {
            Err(e) if e.code().is(ErrorNumber::NoDomain) => {
                return Err(LibvirtError::DomainNotFound(name.to_owned()))
            }
            Err(e) => return Err(LibvirtError::call("read state of domain", name, &e)),
            Ok(_) => {}
        }
        let (state, reason) = dom
            .state()
            .map_err(|e| LibvirtError::call("read state of domain", name, &e))?;
        Ok(match state {
            virt::enumutil::Enum::Known(s) => map_state(s, String::new()),
            virt::enumutil::Enum::Unknown(raw) => {
                DomainState::Other(format!("unknown state {raw} ({reason:?})"))
            }
        })
    }

    /// One domain by name, `None` if it does not exist.
    pub fn domain(&self, name: &str) -> Result<Option<DomainInfo>> {
        let Some(dom) = self.find_domain(name)? else {
            return Ok(None);
        };
        let err = |action: &str, e: VirtError| -> LibvirtError {
            if e.code().is(ErrorNumber::NoDomain) {
                LibvirtError::DomainNotFound(name.to_owned())
            } else {
                LibvirtError::call(action, name, &e)
            }
        };
        let info = (|| {
            Ok(DomainInfo {
                name: name.to_owned(),
                uuid: dom
                    .uuid_string()
                    .map_err(|e| err("read uuid of domain", e))?,
                state: Self::state_of(&dom, name)?,
                persistent: dom
                    .is_persistent()
                    .map_err(|e| err("read persistence of domain", e))?,
                autostart: dom
                    .autostart()
                    .map_err(|e| err("read autostart of domain", e))?,
                saved: dom
                    .has_managed_save(0)
                    .map_err(|e| err("read the managed-save image of domain", e))?,
                tag: Self::read_tag(&dom, name)?,
            })
        })();
        match info {
            Err(LibvirtError::DomainNotFound(_)) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Defines (or redefines) a persistent domain from a spec. Without `spec.uuid`, an existing
    /// domain of that name keeps its UUID (libvirt refuses a redefinition under a new one).
    pub fn define(&self, spec: &DomainSpec) -> Result<()> {
        let xml = match (&spec.uuid, self.find_domain(&spec.name)?) {
            (None, Some(existing)) => {
                let uuid = existing
                    .uuid_string()
                    .map_err(|e| LibvirtError::call("read uuid of domain", &spec.name, &e))?;
                DomainSpec {
                    uuid: Some(uuid),
                    ..spec.clone()
                }
                .to_xml()?
            }
            _ => spec.to_xml()?,
        };
        self.define_named(&spec.name, &xml)
    }

    /// Defines (or redefines) a persistent domain from XML.
    pub fn define_xml(&self, xml: &str) -> Result<()> {
        let name = crate::xml::parse(xml)
            .ok()
            .and_then(|root| root.child_text("name").map(str::to_owned))
            .unwrap_or_else(|| "<unnamed>".to_owned());
        self.define_named(&name, xml)
    }

    fn define_named(&self, name: &str, xml: &str) -> Result<()> {
        // Schema validation catches XML libvirt would otherwise silently drop.
        let first = self
            .conn
            .define_domain_xml_flags(xml, sys::VIR_DOMAIN_DEFINE_VALIDATE);
        let result = match first {
            Err(e) if is_unsupported(&e) => self.conn.define_domain_xml(xml),
            other => other,
        };
        result
            .map(drop)
            .map_err(|e| LibvirtError::call("define domain", name, &e))
    }

    pub fn start(&self, name: &str) -> Result<()> {
        self.lookup_domain(name)?
            .create()
            .map(drop)
            .map_err(|e| LibvirtError::call("start domain", name, &e))
    }

    /// Saves the running (or paused) domain's memory to libvirt's managed-save image and stops it;
    /// its next start resumes it running where it was.
    pub fn managed_save(&self, name: &str) -> Result<()> {
        self.lookup_domain(name)?
            .managed_save(sys::VIR_DOMAIN_SAVE_RUNNING)
            .map_err(|e| LibvirtError::call("suspend (managed save) domain", name, &e))
    }

    /// Sets the guest's system clock to the host's through its guest agent (a resumed guest's
    /// clock stands where it was saved), bounded by [`AGENT_TIMEOUT_SECS`].
    pub fn set_guest_time_to_now(&self, name: &str) -> Result<()> {
        let dom = self.lookup_domain(name)?;
        let _ = ffi::agent_set_response_timeout(&dom, AGENT_TIMEOUT_SECS);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| LibvirtError::invalid("host clock", "before 1970", "cannot be sent"))?;
        let secs = i64::try_from(now.as_secs())
            .map_err(|_| LibvirtError::invalid("host clock", "after 2262", "cannot be sent"))?;
        // subsec_nanos() < 1e9 always fits.
        let nanos = i32::try_from(now.subsec_nanos()).unwrap_or(0);
        dom.set_time(secs, nanos, 0)
            .map_err(|e| LibvirtError::call("set the guest clock of domain", name, &e))
    }

    /// How far the guest's system clock is ahead of the host's (negative: behind), in seconds, as
    /// its guest agent reads it; `None` when the domain has no agent channel or the driver cannot
    /// ask (an agent that does not answer yet is an error: it may later).
    pub fn guest_clock_offset(&self, name: &str) -> Result<Option<f64>> {
        let dom = self.lookup_domain(name)?;
        let _ = ffi::agent_set_response_timeout(&dom, AGENT_TIMEOUT_SECS);
        let (secs, nanos) = match ffi::domain_get_time(&dom) {
            Ok(t) => t,
            Err(e) if is_unsupported(&e) => return Ok(None),
            Err(e) => {
                return Err(LibvirtError::call(
                    "read the guest clock of domain",
                    name,
                    &e,
                ))
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| {
                LibvirtError::invalid("host clock", "before 1970", "cannot be compared")
            })?;
        Ok(Some(
            secs as f64 + f64::from(nanos) / 1e9 - now.as_secs_f64(),
        ))
    }

    /// Asks the guest to power off by ACPI power button; returns once the request is delivered.
    pub fn shutdown(&self, name: &str) -> Result<()> {
        let dom = self.lookup_domain(name)?;
        let result = match dom.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) {
            Err(e) if is_unsupported(&e) => dom.shutdown().map(drop),
            other => other,
        };
        result.map_err(|e| LibvirtError::call("shut down domain", name, &e))
    }

    /// Powers the domain off at once; a domain that is not running is left as it is, and one that
    /// goes away meanwhile (a transient domain that stopped by itself) is gone already.
    pub fn destroy(&self, name: &str) -> Result<()> {
        let dom = self.lookup_domain(name)?;
        let gone = |e: &VirtError| e.code().is(ErrorNumber::NoDomain);
        match dom.is_active() {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(LibvirtError::call("destroy domain", name, &e)),
        }
        match dom.destroy() {
            Err(e) if gone(&e) => Ok(()),
            other => other.map_err(|e| LibvirtError::call("destroy domain", name, &e)),
        }
    }

    /// Removes the definition with its managed-save image, snapshot/checkpoint metadata and
    /// NVRAM; drivers that do not know a flag are retried without it. Volumes are untouched.
    pub fn undefine(&self, name: &str) -> Result<()> {
        let dom = self.lookup_domain(name)?;
        let save_and_snapshots =
            sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        let attempts = [
            save_and_snapshots
                | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                | sys::VIR_DOMAIN_UNDEFINE_NVRAM,
            save_and_snapshots | sys::VIR_DOMAIN_UNDEFINE_NVRAM,
            save_and_snapshots,
            0,
        ];
        let mut last = None;
        for flags in attempts {
            match dom.undefine_flags(flags) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(&e) => last = Some(e),
                Err(e) => return Err(LibvirtError::call("undefine domain", name, &e)),
            }
        }
        let e = last.expect("at least one undefine attempt ran");
        Err(LibvirtError::call("undefine domain", name, &e))
    }

    /// Starts a transient domain (gone once it stops), e.g. a template's seed.
    pub fn create_transient(&self, spec: &DomainSpec) -> Result<()> {
        let xml = spec.to_xml()?;
        self.conn
            .create_domain_xml(&xml, 0)
            .map(drop)
            .map_err(|e| LibvirtError::call("start transient domain", &spec.name, &e))
    }

    /// Whether the guest holds the virtio port `port` open (libvirt's channel `state`).
    pub fn port_connected(&self, name: &str, port: &str) -> Result<bool> {
        let xml = self.xml(name)?;
        let root = crate::xml::parse(&xml).map_err(|e| LibvirtError::Parse {
            what: format!("live XML of domain `{name}`"),
            message: e,
        })?;
        let connected = root
            .path(&["devices"])
            .into_iter()
            .flat_map(|d| d.children_named("channel"))
            .filter_map(|c| c.child("target"))
            .any(|t| t.attr("name") == Some(port) && t.attr("state") == Some("connected"));
        Ok(connected)
    }

    /// Saves the running domain's memory into `path` (a file the daemon writes) and stops it;
    /// a restore resumes it running.
    pub fn save(&self, name: &str, path: &std::path::Path) -> Result<()> {
        let dom = self.lookup_domain(name)?;
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            LibvirtError::invalid(
                "save path",
                &path.display().to_string(),
                "contains a NUL byte",
            )
        })?;
        crate::ffi::domain_save(&dom, &c_path, sys::VIR_DOMAIN_SAVE_RUNNING)
            .map_err(|e| LibvirtError::call("save domain", name, &e))
    }

    /// Resumes the domain a save image holds, running, under the XML in the image's header (a
    /// defined domain of the same name and UUID keeps its persistent definition).
    pub fn restore(&self, path: &std::path::Path) -> Result<()> {
        let shown = path.display().to_string();
        let text = path
            .to_str()
            .ok_or_else(|| LibvirtError::invalid("save image path", &shown, "is not UTF-8"))?;
        self.conn
            .restore_domain_flags(text, None, sys::VIR_DOMAIN_SAVE_RUNNING)
            .map_err(|e| LibvirtError::call("restore a domain from", &shown, &e))
    }

    /// Adds a device (`<disk>`, `<interface>`) to the running domain only; its persistent
    /// definition is left as it is.
    pub fn attach_live(&self, name: &str, device_xml: &str) -> Result<()> {
        self.lookup_domain(name)?
            .attach_device_flags(device_xml, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| LibvirtError::call("hot-plug a device into domain", name, &e))
    }

    pub fn set_autostart(&self, name: &str, autostart: bool) -> Result<()> {
        self.lookup_domain(name)?
            .set_autostart(autostart)
            .map(drop)
            .map_err(|e| LibvirtError::call("set autostart of domain", name, &e))
    }

    /// The current XML (live if running).
    pub fn xml(&self, name: &str) -> Result<String> {
        self.lookup_domain(name)?
            .xml_desc(0)
            .map_err(|e| LibvirtError::call("read XML of domain", name, &e))
    }

    /// The persistent configuration, i.e. what the next boot will use.
    pub fn inactive_xml(&self, name: &str) -> Result<String> {
        self.lookup_domain(name)?
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| LibvirtError::call("read XML of domain", name, &e))
    }

    /// virtup's tag on a domain, `None` if it has none.
    pub fn tag(&self, name: &str) -> Result<Option<VirtupTag>> {
        let dom = self.lookup_domain(name)?;
        Self::read_tag(&dom, name)
    }

    /// Replaces the tag in place (config, and the live state too if running), without a redefine.
    pub fn set_tag(&self, name: &str, tag: &VirtupTag) -> Result<()> {
        let element = tag.to_metadata_element()?;
        let dom = self.lookup_domain(name)?;
        let fail = |e: VirtError| LibvirtError::call("set metadata of domain", name, &e);
        let mut flags = 0;
        if dom.is_persistent().map_err(fail)? {
            flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
        }
        if dom.is_active().map_err(fail)? {
            flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        dom.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&element),
            Some(VIRTUP_PREFIX),
            Some(VIRTUP_NS),
            flags,
        )
        .map_err(fail)
    }

    /// Sets memory and vCPUs in the persistent config; a running guest sees them at next boot.
    pub fn update_memory_vcpus(&self, name: &str, memory_mib: u64, vcpus: u32) -> Result<()> {
        if memory_mib == 0 {
            return Err(LibvirtError::invalid(
                "memory",
                "0",
                "must be at least 1 MiB",
            ));
        }
        if vcpus == 0 {
            return Err(LibvirtError::invalid("vcpus", "0", "must be at least 1"));
        }
        let kib = memory_mib
            .checked_mul(1024)
            .ok_or_else(|| LibvirtError::invalid("memory", &memory_mib.to_string(), "too large"))?;
        let dom = self.lookup_domain(name)?;
        let fail = |e: VirtError| LibvirtError::call("update memory and vcpus of domain", name, &e);
        // Maximum first: libvirt lowers the current value with it and refuses current > maximum.
        dom.set_memory_flags(
            kib,
            sys::VIR_DOMAIN_MEM_CONFIG | sys::VIR_DOMAIN_MEM_MAXIMUM,
        )
        .map_err(fail)?;
        dom.set_memory_flags(kib, sys::VIR_DOMAIN_MEM_CONFIG)
            .map_err(fail)?;
        dom.set_vcpus_flags(
            vcpus,
            sys::VIR_DOMAIN_VCPU_CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM,
        )
        .map_err(fail)?;
        dom.set_vcpus_flags(vcpus, sys::VIR_DOMAIN_VCPU_CONFIG)
            .map_err(fail)
    }

    fn raw_addresses(
        dom: &Domain,
        source: AddressSource,
    ) -> std::result::Result<Vec<GuestInterface>, VirtError> {
        if source == AddressSource::Agent {
            // Older daemons lack the call; the agent's own 5 s sync timeout still applies then.
            let _ = ffi::agent_set_response_timeout(dom, AGENT_TIMEOUT_SECS);
        }
        let Some(raw) = raw_source(source) else {
            return Ok(Vec::new());
        };
        let ifaces = dom.interface_addresses(raw, 0)?;
        Ok(ifaces
            .into_iter()
            .map(|i| GuestInterface {
                name: i.name,
                mac: i.hwaddr,
                addrs: i
                    .addrs
                    .iter()
                    .filter_map(|a| {
                        Some(GuestAddress {
                            ip: parse_ip(&a.addr)?,
                            prefix: u8::try_from(a.prefix).ok()?,
                        })
                    })
                    .collect(),
            })
            .collect())
    }

    /// Addresses of a running domain according to one source. Agent calls are bounded by
    /// [`AGENT_TIMEOUT_SECS`] (set on the domain with `virDomainAgentSetResponseTimeout`, where
    /// it stays for later agent users of that running domain).
    pub fn interface_addresses(
        &self,
        name: &str,
        source: AddressSource,
    ) -> Result<Vec<GuestInterface>> {
        let dom = self.lookup_domain(name)?;
        Self::raw_addresses(&dom, source)
            .map_err(|e| LibvirtError::call(format!("read {source} addresses of domain"), name, &e))
    }

    /// Asks `sources` in order for a usable address (IPv4 first, then global IPv6) of the NIC
    /// with `mac` (any NIC if `None`). Source failures become notes, not errors.
    pub fn find_address(
        &self,
        name: &str,
        mac: Option<&str>,
        sources: &[AddressSource],
    ) -> Result<AddressLookup> {
        let dom = self.lookup_domain(name)?;
        let mut lookup = AddressLookup::default();
        for &source in sources {
            if source == AddressSource::Dns {
                lookup.notes.push("dns: not a libvirt source".into());
                continue;
            }
            let ifaces = match Self::raw_addresses(&dom, source) {
                Ok(i) => i,
                Err(e) if e.code().is(ErrorNumber::NoDomain) => {
                    return Err(LibvirtError::DomainNotFound(name.to_owned()))
                }
                Err(e) => {
                    lookup.notes.push(format!("{source}: {}", e.message()));
                    continue;
                }
            };
            let wanted = ifaces.iter().filter(|i| match (mac, &i.mac) {
                (None, _) => true,
                (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                (Some(_), None) => false,
            });
            let candidates: Vec<(&GuestInterface, &GuestAddress)> = wanted
                .flat_map(|i| i.addrs.iter().map(move |a| (i, a)))
                .filter(|(_, a)| is_usable(&a.ip))
                .collect();
            let mut ordered: Vec<FoundAddress> = candidates
                .iter()
                .map(|(iface, addr)| FoundAddress {
                    ip: addr.ip,
                    prefix: addr.prefix,
                    source,
                    interface: iface.name.clone(),
                })
                .collect();
            // Stable: IPv4 first, otherwise in the order the source reported them.
            ordered.sort_by_key(|f| !f.ip.is_ipv4());
            if let Some(best) = ordered.first() {
                lookup.found = Some(best.clone());
                lookup.candidates = ordered;
                return Ok(lookup);
            }
            let what = match source {
                AddressSource::Lease => "no lease",
                AddressSource::Agent | AddressSource::Arp | AddressSource::Dns => "no address",
            };
            lookup.notes.push(match mac {
                Some(m) => format!("{source}: {what} for {m}"),
                None => format!("{source}: {what} reported"),
            });
        }
        Ok(lookup)
    }

    /// The DHCP leases libvirt's dnsmasq handed out on a network.
    pub fn network_dhcp_leases(&self, network: &str) -> Result<Vec<Lease>> {
        let net = self.network_named(network)?;
        let raw = ffi::network_dhcp_leases(&net)
            .map_err(|e| LibvirtError::call("read DHCP leases of network", network, &e))?;
        Ok(leases_from(raw))
    }

    /// [`Hypervisor::network_dhcp_leases`], or `None` from a driver that keeps no leases (libvirt's
    /// test driver): nothing is known about them there.
    pub fn network_dhcp_leases_if_kept(&self, network: &str) -> Result<Option<Vec<Lease>>> {
        let net = self.network_named(network)?;
        match ffi::network_dhcp_leases(&net) {
            Ok(raw) => Ok(Some(leases_from(raw))),
            Err(e) if is_unsupported(&e) => Ok(None),
            Err(e) => Err(LibvirtError::call(
                "read DHCP leases of network",
                network,
                &e,
            )),
        }
    }
}

fn leases_from(raw: Vec<ffi::RawLease>) -> Vec<Lease> {
    raw.into_iter()
        .filter_map(|l| {
            // IPv6 leases may carry no MAC (they are keyed by DUID/IAID): nothing to match on.
            let ip = parse_ip(l.ipaddr.as_deref()?)?;
            Some(Lease {
                mac: l.mac?,
                ip,
                prefix: l.prefix,
                hostname: l.hostname.filter(|h| !h.is_empty()),
                expiry: l.expiry_time,
                iface: l.iface,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last guard: whatever path a URI took, one with a password is never connected or shown.
    #[test]
    fn a_uri_with_a_password_is_not_connected_or_shown() {
        let Err(err) = Hypervisor::connect_read_only("test://root:s3/cret@h9/default") else {
            panic!("connected");
        };
        let err = err.to_string();
        assert!(err.contains("h9") && err.contains("password"), "{err}");
        assert!(!err.contains("s3/cret"), "{err}");
    }

    #[test]
    fn usable_addresses_skip_loopback_and_link_local() {
        let ok = |s: &str| is_usable(&parse_ip(s).unwrap());
        assert!(ok("192.168.122.10"));
        assert!(ok("2001:db8::5"));
        assert!(!ok("127.0.0.1"));
        assert!(!ok("169.254.3.4"));
        assert!(!ok("::1"));
        assert!(!ok("fe80::5054:ff:fe12:3456%eth0"));
        assert_eq!(parse_ip("fe80::1%eth0"), "fe80::1".parse().ok());
        assert_eq!(parse_ip("garbage"), None);
    }

    #[test]
    fn summary_joins_notes() {
        let l = AddressLookup {
            found: None,
            candidates: vec![],
            notes: vec![
                "lease: no lease for 52:54:00:00:00:01".into(),
                "agent: not connected".into(),
            ],
        };
        assert_eq!(
            l.summary(),
            "lease: no lease for 52:54:00:00:00:01; agent: not connected"
        );
    }
}
