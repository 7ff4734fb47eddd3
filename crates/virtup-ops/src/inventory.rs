//! What virtup made, from its metadata and libvirt: the hosts the inventory lists and `virt-up --list` shows.
//!
//! The inventory runs on every ansible command, so it must be fast, quiet and robust: one
//! damaged metadata file or one unreachable hypervisor becomes a warning in the listing, never a
//! failure of every ansible command (only a data dir that cannot be read fails). It never asks a guest agent: addresses come from the metadata (validated by the
//! module when it last ran), then DHCP leases and the ARP table, which libvirt answers without
//! the guest's help. Rendering the listing for Ansible is the binaries' business.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use virtup_core::config::Config;
use virtup_core::ownership::Ledger;
use virtup_core::{template, DataDir, InstanceMeta, Paths};
use virtup_guest::ssh::Hop;
use virtup_libvirt::{parse_domain_xml, AddressSource, DomainInfo, Hypervisor, TagKind};

/// Environment variable naming the hypervisors to list (space- or comma-separated URIs).
pub const URIS_ENV: &str = "VIRTUP_INVENTORY_URIS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Template,
    Instance,
}

impl HostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Template => "template",
            HostKind::Instance => "instance",
        }
    }
}

/// One inventory host: an instance (named as the instance) or a template (named as its records'
/// scope: its domain `VIRTUP-<name>` on this machine, `VIRTUP-<name>@<id>` on a remote hypervisor;
/// so a template and an instance of the same name never collide, nor one template on two hypervisors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub kind: HostKind,
    pub domain: String,
    /// The template an instance was cloned from; a template's own name.
    pub template: String,
    pub generation: u32,
    /// `running`, `stopped`, `paused`, another libvirt state, or `unknown` when the hypervisor
    /// could not be asked.
    pub state: String,
    pub address: Option<String>,
    pub user: Option<String>,
    pub ssh_private_key_file: Option<PathBuf>,
    pub known_hosts_file: PathBuf,
    /// The name the pinned host key is filed under in `known_hosts`.
    pub host_key_alias: String,
    pub uri: String,
    pub mac: Option<String>,
    /// The address reserved for an instance on its libvirt network (DHCP host entry).
    pub reserved_address: Option<String>,
    /// The device model of an instance's first NIC, as recorded (`None` before `model`).
    pub nic_model: Option<virtup_core::nic::NicModel>,
    /// An instance's NICs after the first (`nics`), as made.
    pub extra_nics: Vec<virtup_core::nic::MadeNic>,
    /// The inventory groups an instance is declared in (`groups`), besides virtup's own.
    pub groups: Vec<String>,
}

impl Host {
    /// [`guest_ssh_options`] for this host.
    pub fn ssh_options(&self) -> Vec<String> {
        guest_ssh_options(&self.known_hosts_file, &self.host_key_alias, &self.uri)
    }

    /// [`Host::ssh_options`] as one shell-quoted string, as `ansible_ssh_common_args` wants it.
    pub fn ssh_common_args(&self) -> String {
        shell_words::join(self.ssh_options())
    }
}

/// The ssh options that make Ansible (or ssh) verify a guest's pinned host key against virtup's
/// known_hosts only (never a system-wide file), and jump through its hypervisor `uri` when that is
/// remote. The inventory's hosts and the module's `instance` return (Molecule's connection) use it.
pub fn guest_ssh_options(known_hosts: &std::path::Path, alias: &str, uri: &str) -> Vec<String> {
    let mut opts = virtup_guest::ssh::pinned_host_key_options(known_hosts, alias);
    if let Some(hop) = Hop::from_uri(uri) {
        opts.extend(hop.options());
        // Guests on different hypervisors can have the same address (every default NAT
        // network is 192.168.122.0/24), and Ansible names its shared connections by address,
        // port and user: one guest's tasks could run over another's connection. No sharing
        // through a hop (Ansible adds no ControlPath when one is given).
        opts.extend(["-o".into(), "ControlPath=none".into()]);
    }
    opts
}

/// Everything the inventory found, hosts sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub hosts: Vec<Host>,
    pub warnings: Vec<String>,
    /// Every instance this data dir has metadata for that is no host of the listing (hidden, or its
    /// create stopped before its domain was defined), and the URI of the hypervisor the metadata
    /// records: it still lives there, for the roles' placement. Hosts carry their own `virtup_uri`.
    pub recorded_uris: BTreeMap<String, String>,
}

/// The hypervisors to list: `$VIRTUP_INVENTORY_URIS`, else `inventory-uris` from the config, else
/// the default URI together with every URI the metadata mentions and every URI on which this data
/// dir's ownership records hold a volume (a template on a remote hypervisor has no instance
/// metadata until it has a clone, and must still be listed and reachable by `--delete`).
pub fn uris(paths: &Paths, config: &Config, metas: &[InstanceMeta]) -> Vec<String> {
    if let Some(list) = std::env::var(URIS_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return dedup(list.split([' ', ',', '\t', '\n']).map(str::to_owned));
    }
    if let Some(list) = config
        .common
        .inventory_uris
        .clone()
        .filter(|l| !l.is_empty())
    {
        return dedup(list);
    }
    let default = config
        .common
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    dedup(
        std::iter::once(default)
            .chain(metas.iter().filter_map(|m| m.uri.clone()))
            .chain(recorded_uris(&DataDir::at(&paths.data_dir))),
    )
}

/// Every URI the data dir's ownership records name, sorted. An unreadable record names no URI here:
/// the commands that act on it report it.
fn recorded_uris(data: &DataDir) -> BTreeSet<String> {
    Ledger::scopes(data)
        .unwrap_or_default()
        .iter()
        .filter_map(|scope| Ledger::read(data, scope).ok())
        .flat_map(|ledger| ledger.volumes.into_iter().map(|v| v.uri))
        .collect()
}

fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && seen.insert(s.clone()))
        .collect()
}

/// Reads metadata and every hypervisor. Fails only when the data dir itself cannot be read;
/// everything narrower becomes a warning.
pub fn collect(paths: &Paths, config: &Config) -> Result<Listing> {
    let data = DataDir::at(&paths.data_dir);
    let mut warnings = Vec::new();
    // Domains another data dir made are not this one's to list. Without a readable owner id none is
    // provably this data dir's: one warning says so, naming the file.
    let id_damaged = data.owner_id().err();
    if let Some(e) = &id_damaged {
        warnings.push(format!("no domain is listed as this data dir's: {e}"));
    }
    let metas = read_metas(&data, &mut warnings)?;
    let default_uri = config
        .common
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    // A URI with a password is neither connected nor shown: the inventory prints every URI it lists.
    let mut listable = Vec::new();
    for uri in uris(paths, config, &metas) {
        match virtup_libvirt::uri_password_host(&uri) {
            Some(host) => warnings.push(format!(
                "a URI for `{host}` is not listed: it holds a password (`user:password@`); give the user alone"
            )),
            None => listable.push(uri),
        }
    }
    for (uri, listed) in list_all(listable) {
        let (hv, domains) = match listed {
            Ok(found) => (Some(found.0), found.1),
            Err(e) => {
                warnings.push(format!(
                    "cannot list `{uri}`: {e}; its instances are listed with state `unknown`"
                ));
                (None, Vec::new())
            }
        };
        let scan = Scan {
            data: &data,
            config,
            uri: &uri,
            hv: hv.as_ref(),
            id_damaged: id_damaged.is_some(),
        };
        let by_name: BTreeMap<&str, &DomainInfo> =
            domains.iter().map(|d| (d.name.as_str(), d)).collect();
        let mine = metas
            .iter()
            .filter(|m| m.inventory && m.uri.as_deref().unwrap_or(&default_uri) == uri);
        for meta in mine {
            let dom = by_name.get(meta.name.as_str()).copied();
            if let Some(host) = scan.instance(meta, dom, &mut warnings) {
                insert(&mut hosts, host, &mut warnings);
            }
        }
        // Instances of other data dirs (other users, other sandboxes) share the hypervisor; only
        // this data dir's metadata says which instances are ours to list. Templates come from libvirt.
        for dom in &domains {
            if let Some(host) = scan.template(dom) {
                insert(&mut hosts, host, &mut warnings);
            }
        }
    }
    // Only instances that are no host: hidden ones (`inventory: false`) and creates that stopped
    // before their domain was defined still live where they were made. A listed host carries its
    // own `virtup_uri`; repeating every host here made the var O(instances) in every host's vars,
    // and `ansible-inventory --list` (which merges group vars into each host) O(instances²):
    // 5 MB for 200 hosts, which `bench/inventory` showed.
    let recorded_uris = metas
        .iter()
        .filter(|m| !hosts.contains_key(&m.name))
        .map(|m| {
            (
                m.name.clone(),
                m.uri.clone().unwrap_or_else(|| default_uri.clone()),
            )
        })
        .filter(|(_, uri)| virtup_libvirt::uri_password_host(uri).is_none())
        .collect();
    Ok(Listing {
        hosts: hosts.into_values().collect(),
        warnings,
        recorded_uris,
    })
}

/// A hypervisor connected, and its domains; or why not.
type Listed = virtup_libvirt::Result<(Hypervisor, Vec<DomainInfo>)>;

/// Every hypervisor connected and its domains listed at the same time, in the order given: one slow
/// or dead host (an SSH connect timing out) costs its own wait, not the sum of all of them.
fn list_all(uris: Vec<String>) -> Vec<(String, Listed)> {
    std::thread::scope(|s| {
        let pending: Vec<_> = uris
            .into_iter()
            .map(|uri| {
                let handle = s.spawn({
                    let uri = uri.clone();
                    move || {
                        let hv = Hypervisor::connect_read_only(&uri)?;
                        let domains = hv.list_domains()?;
                        Ok((hv, domains))
                    }
                });
                (uri, handle)
            })
            .collect();
        pending
            .into_iter()
            .map(|(uri, handle)| {
                let listed = handle.join().unwrap_or_else(|panic| {
                    std::panic::resume_unwind(panic);
                });
                (uri, listed)
            })
            .collect()
    })
}

/// The instance metadata of the data dir; a damaged record is skipped with a warning.
fn read_metas(data: &DataDir, warnings: &mut Vec<String>) -> Result<Vec<InstanceMeta>> {
    let mut metas = Vec::new();
    for (name, meta) in InstanceMeta::list(data).with_context(|| {
        format!(
            "failed to list the instance metadata in `{}`",
            data.instance_dir().display()
        )
    })? {
        match meta {
            Ok(m) => metas.push(m),
            Err(e) => warnings.push(format!("instance `{name}` is skipped: {e}")),
        }
    }
    Ok(metas)
}

/// One hypervisor as [`collect`] reads it (`hv` is `None` when it could not be listed).
struct Scan<'a> {
    data: &'a DataDir,
    config: &'a Config,
    uri: &'a str,
    hv: Option<&'a Hypervisor>,
    /// The owner id is damaged (already warned about): no domain is provably ours.
    id_damaged: bool,
}

impl Scan<'_> {
    fn ours(&self, hv: &Hypervisor, tag: &virtup_libvirt::VirtupTag, scope: &str) -> bool {
        crate::owner::proves(self.data, hv, tag, scope).unwrap_or(false)
    }

    /// The host of instance `meta` whose domain is `dom`; `None` (with a warning) when the domain
    /// is missing or not provably this data dir's.
    fn instance(
        &self,
        meta: &InstanceMeta,
        dom: Option<&DomainInfo>,
        warnings: &mut Vec<String>,
    ) -> Option<Host> {
        let uri = self.uri;
        let state = match (self.hv, dom) {
            (None, _) => "unknown".to_string(),
            (Some(hv), Some(d))
                if is_instance_of(d, &meta.name)
                    && d.tag.as_ref().is_some_and(|t| self.ours(hv, t, &d.name)) =>
            {
                d.state_word()
            }
            // Already said once: the damaged id proves no domain.
            (Some(_), Some(_)) if self.id_damaged => return None,
            (Some(_), Some(d)) if meta.is_virt_up_legacy() && d.tag.is_none() => {
                // Its record says whether it is a clone (adoptable) or a base (a template).
                let clone = virtup_core::virt_up_record::VirtUpRecord::read(self.data, &meta.name)
                    .ok()
                    .flatten()
                    .map(|r| r.is_clone());
                let next = match clone {
                    Some(true) => format!(
                        "to manage it with virtup, adopt it: `virt-up {} --adopt`",
                        meta.name
                    ),
                    Some(false) => "it is virt-up's base of a template; virtup does not adopt \
                                    templates yet"
                        .to_owned(),
                    None => "its record lacks what virt-up 2.2.0 writes, so it cannot be adopted"
                        .to_owned(),
                };
                warnings.push(format!(
                    "instance `{}` is skipped: probably virt-up 2.2.0 made it (its record is in virt-up 2.2.0's \
                     format and domain `{}` on `{uri}` carries no virtup tag); {next}",
                    meta.name, meta.name
                ));
                return None;
            }
            (Some(_), Some(_)) => {
                warnings.push(format!(
                    "instance `{}` is skipped: domain `{}` on `{uri}` is not one virtup made with this data dir",
                    meta.name, meta.name
                ));
                return None;
            }
            (Some(_), None) => {
                warnings.push(format!(
                    "instance `{}` is skipped: its metadata exists but `{uri}` has no such domain",
                    meta.name
                ));
                return None;
            }
        };
        let address = match (self.hv, state.as_str()) {
            (Some(hv), "running") => meta
                .address
                .clone()
                .or_else(|| live_address(hv, &meta.name, meta.mac.as_deref())),
            _ => meta.address.clone(),
        };
        // Checked again: the metadata is a file anyone may have edited.
        let groups = match virtup_core::validate::inventory_groups("groups", &meta.groups) {
            Ok(g) => g,
            Err(e) => {
                warnings.push(format!(
                    "instance `{}` is listed without its declared groups: its metadata's {e}",
                    meta.name
                ));
                Vec::new()
            }
        };
        Some(Host {
            name: meta.name.clone(),
            kind: HostKind::Instance,
            domain: meta.name.clone(),
            template: meta.template.clone(),
            generation: meta.generation,
            state,
            address,
            user: Some(meta.user.clone()).filter(|u| !u.is_empty()),
            ssh_private_key_file: meta.ssh_private_key_file.clone().or_else(|| {
                Some(self.data.user_key_path(&meta.user)).filter(|_| !meta.user.is_empty())
            }),
            known_hosts_file: meta.known_hosts_file_in(self.data),
            host_key_alias: meta.name.clone(),
            uri: uri.to_owned(),
            mac: meta.mac.clone(),
            reserved_address: meta
                .reservation
                .as_ref()
                .filter(|r| r.confirmed)
                .map(|r| r.ip.to_string()),
            nic_model: meta.nic_model,
            extra_nics: meta.extra_nics.clone(),
            groups,
        })
    }

    /// The host of `dom` when it is a template domain this data dir made.
    fn template(&self, dom: &DomainInfo) -> Option<Host> {
        let tag = dom.tag.as_ref().filter(|t| t.kind == TagKind::Template)?;
        let hv = self.hv?;
        // Named by its records' scope: the same template on two remote hypervisors is two hosts.
        let scope = crate::context::template_scope(&tag.name, self.uri);
        if dom.name != template::domain_name(&tag.name) || !self.ours(hv, tag, &scope) {
            return None;
        }
        let state = dom.state_word();
        let running = state == "running";
        let mac = if running {
            first_mac(hv, &dom.name)
        } else {
            None
        };
        let user = tag.user.clone().or_else(|| {
            self.config
                .resolve_template(&tag.name)
                .unwrap_or_else(|| self.config.resolve_common())
                .username
        });
        Some(Host {
            name: scope.clone(),
            kind: HostKind::Template,
            domain: dom.name.clone(),
            template: tag.name.clone(),
            generation: tag.generation,
            address: if running {
                live_address(hv, &dom.name, mac.as_deref())
            } else {
                None
            },
            state,
            ssh_private_key_file: user.as_ref().map(|u| self.data.user_key_path(u)),
            user,
            known_hosts_file: self.data.known_hosts_file(),
            // Pinned under the template's scope: its own name on this machine's hypervisors.
            host_key_alias: scope,
            uri: self.uri.to_owned(),
            mac,
            reserved_address: None,
            nic_model: None,
            extra_nics: Vec::new(),
            groups: Vec::new(),
        })
    }
}

fn insert(hosts: &mut BTreeMap<String, Host>, host: Host, warnings: &mut Vec<String>) {
    if let Some(first) = hosts.get(&host.name) {
        warnings.push(format!(
            "`{}` on `{}` is skipped: `{}` already has a host of that name",
            host.name, host.uri, first.uri
        ));
        return;
    }
    hosts.insert(host.name.clone(), host);
}

fn is_instance_of(dom: &DomainInfo, name: &str) -> bool {
    dom.tag
        .as_ref()
        .is_some_and(|t| t.is(TagKind::Instance, name))
}

fn first_mac(hv: &Hypervisor, domain: &str) -> Option<String> {
    let xml = hv.xml(domain).ok()?;
    let parsed = parse_domain_xml(&xml).ok()?;
    parsed.macs().first().map(|m| m.to_string())
}

/// An address from sources that need no guest cooperation (never the agent, which can hang).
fn live_address(hv: &Hypervisor, domain: &str, mac: Option<&str>) -> Option<String> {
    let lookup = hv
        .find_address(domain, mac, &[AddressSource::Lease, AddressSource::Arp])
        .ok()?;
    lookup.found.map(|f| f.ip.to_string())
}
