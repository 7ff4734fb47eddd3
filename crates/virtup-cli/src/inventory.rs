//! What virtup made, read from its metadata and libvirt: the dynamic inventory's `--list`, and virt-up's static `inventory.yaml`.
//!
//! The inventory runs on every ansible command, so it must be fast, quiet and robust: one
//! damaged metadata file or one unreachable hypervisor becomes a warning inside the document
//! (`_meta.virtup_warnings` and the `virtup_inventory_warnings` variable of group `all`), never a
//! failure of every ansible command. It never asks a guest agent: addresses come from the
//! metadata (validated by the module when it last ran), then DHCP leases and the ARP table, which
//! libvirt answers without the guest's help.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::{json, Map, Value};
use virtup_ansible::inventory::{unsafe_value, Inventory};
use virtup_core::config::Config;
use virtup_core::{datadir, template, DataDir, InstanceMeta, Paths};
use virtup_libvirt::{
    parse_domain_xml, AddressSource, DomainInfo, DomainState, Hypervisor, TagKind,
};

/// Environment variable naming the hypervisors to list (space- or comma-separated URIs).
pub const URIS_ENV: &str = "VIRTUP_INVENTORY_URIS";

/// Groups every listing has, even when empty, so that playbooks can target them unconditionally.
pub const GROUP_ALL: &str = "virtup";
pub const GROUP_INSTANCES: &str = "virtup_instances";
pub const GROUP_TEMPLATES: &str = "virtup_templates";
pub const GROUP_RUNNING: &str = "virtup_running";
pub const GROUP_STOPPED: &str = "virtup_stopped";
/// Prefix of the per-template groups (`virtup_template_debian_12`).
pub const TEMPLATE_GROUP_PREFIX: &str = "virtup_template_";

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

/// One inventory host: an instance (named as the instance) or a template (named as its domain,
/// `VIRTUP-<name>`, so that a template and an instance of the same name never collide).
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
}

impl Host {
    /// The ssh options that make Ansible (or ssh) verify the pinned host key against virtup's
    /// known_hosts only (never a system-wide file), and jump through the hypervisor when it is remote.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut opts = virtup_guest::ssh::pinned_host_key_options(
            &self.known_hosts_file,
            &self.host_key_alias,
        );
        if let Some(jump) = proxy_jump(&self.uri) {
            opts.push("-o".to_string());
            opts.push(format!("ProxyJump={jump}"));
        }
        opts
    }

    /// [`Host::ssh_options`] as one shell-quoted string, as `ansible_ssh_common_args` wants it.
    pub fn ssh_common_args(&self) -> String {
        shell_words::join(self.ssh_options())
    }
}

/// Everything the inventory found, hosts sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub hosts: Vec<Host>,
    pub warnings: Vec<String>,
}

/// The hypervisors to list: `$VIRTUP_INVENTORY_URIS`, else `inventory-uris` from the config, else
/// the default URI together with every URI the metadata mentions.
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
    dedup(std::iter::once(default).chain(metas.iter().filter_map(|m| m.uri.clone())))
}

fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && seen.insert(s.clone()))
        .collect()
}

/// `[user@]host[:port]` of a remote libvirt URI reached over SSH (`qemu+ssh://…`), for `ProxyJump`.
pub fn proxy_jump(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let transport = scheme.split_once('+')?.1;
    if !matches!(transport, "ssh" | "libssh" | "libssh2") {
        return None;
    }
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    if host.is_empty() {
        return None;
    }
    Some(authority.to_owned())
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
    let ours = |hv: &Hypervisor, tag: &virtup_libvirt::VirtupTag, domain: &str| {
        virtup_ops::owner::proves(&data, hv, tag, domain).unwrap_or(false)
    };
    let mut metas = Vec::new();
    for (name, meta) in InstanceMeta::list(&data).with_context(|| {
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
    let default_uri = config
        .common
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    for uri in uris(paths, config, &metas) {
        let listed = Hypervisor::connect_read_only(&uri).and_then(|hv| {
            let domains = hv.list_domains()?;
            Ok((hv, domains))
        });
        let (hv, domains) = match listed {
            Ok(found) => (Some(found.0), found.1),
            Err(e) => {
                warnings.push(format!(
                    "cannot list `{uri}`: {e}; its instances are listed with state `unknown`"
                ));
                (None, Vec::new())
            }
        };
        let by_name: BTreeMap<&str, &DomainInfo> =
            domains.iter().map(|d| (d.name.as_str(), d)).collect();

        for meta in metas
            .iter()
            .filter(|m| m.uri.as_deref().unwrap_or(&default_uri) == uri)
        {
            if !meta.inventory {
                continue;
            }
            let dom = by_name.get(meta.name.as_str()).copied();
            let state = match (&hv, dom) {
                (None, _) => "unknown".to_string(),
                (Some(hv), Some(d))
                    if is_instance_of(d, &meta.name)
                        && d.tag.as_ref().is_some_and(|t| ours(hv, t, &d.name)) =>
                {
                    state_name(&d.state)
                }
                // Already said once: the damaged id proves no domain.
                (Some(_), Some(_)) if id_damaged.is_some() => continue,
                (Some(_), Some(_)) => {
                    warnings.push(format!(
                        "instance `{}` is skipped: domain `{}` on `{uri}` is not one virtup made with this data dir",
                        meta.name, meta.name
                    ));
                    continue;
                }
                (Some(_), None) => {
                    warnings.push(format!(
                        "instance `{}` is skipped: its metadata exists but `{uri}` has no such domain",
                        meta.name
                    ));
                    continue;
                }
            };
            let address = match (&hv, state.as_str()) {
                (Some(hv), "running") => meta
                    .address
                    .clone()
                    .or_else(|| live_address(hv, &meta.name, meta.mac.as_deref())),
                _ => meta.address.clone(),
            };
            let host = Host {
                name: meta.name.clone(),
                kind: HostKind::Instance,
                domain: meta.name.clone(),
                template: meta.template.clone(),
                generation: meta.generation,
                state,
                address,
                user: Some(meta.user.clone()).filter(|u| !u.is_empty()),
                ssh_private_key_file: meta.ssh_private_key_file.clone().or_else(|| {
                    Some(data.user_key_path(&meta.user)).filter(|_| !meta.user.is_empty())
                }),
                known_hosts_file: meta
                    .known_hosts_file
                    .clone()
                    .unwrap_or_else(|| data.known_hosts_file()),
                host_key_alias: meta.name.clone(),
                uri: uri.clone(),
                mac: meta.mac.clone(),
            };
            insert(&mut hosts, host, &mut warnings);
        }

        for dom in &domains {
            let Some(tag) = &dom.tag else { continue };
            match tag.kind {
                // Instances of other data dirs (other users, other sandboxes) share the hypervisor;
                // only this data dir's metadata says which instances are ours to list.
                TagKind::Instance => {}
                TagKind::Template => {
                    let Some(hv) = &hv else { continue };
                    if dom.name != template::domain_name(&tag.name) || !ours(hv, tag, &dom.name) {
                        continue;
                    }
                    let state = state_name(&dom.state);
                    let running = state == "running";
                    let mac = if running {
                        first_mac(hv, &dom.name)
                    } else {
                        None
                    };
                    let user = tag.user.clone().or_else(|| {
                        config
                            .resolve_template(&tag.name)
                            .unwrap_or_else(|| config.resolve_common())
                            .username
                    });
                    let host = Host {
                        name: dom.name.clone(),
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
                        ssh_private_key_file: user.as_ref().map(|u| data.user_key_path(u)),
                        user,
                        known_hosts_file: data.known_hosts_file(),
                        host_key_alias: dom.name.clone(),
                        uri: uri.clone(),
                        mac,
                    };
                    insert(&mut hosts, host, &mut warnings);
                }
            }
        }
    }
    Ok(Listing {
        hosts: hosts.into_values().collect(),
        warnings,
    })
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

fn state_name(state: &DomainState) -> String {
    match state {
        DomainState::Running => "running".into(),
        DomainState::ShutOff => "stopped".into(),
        DomainState::Paused => "paused".into(),
        DomainState::Other(s) => s.clone(),
    }
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

/// Group names allow letters, digits and `_` only (others draw a warning from Ansible).
pub fn template_group(template: &str) -> String {
    let safe: String = template
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{TEMPLATE_GROUP_PREFIX}{safe}")
}

/// The `--list` document. Every value that comes from metadata or a guest is marked unsafe so
/// Ansible never evaluates it as a template.
pub fn to_ansible(listing: &Listing) -> Result<Inventory> {
    let mut inv = Inventory::new();
    for g in [GROUP_RUNNING, GROUP_STOPPED] {
        inv.add_group(g)?;
    }
    inv.add_child(GROUP_ALL, GROUP_INSTANCES)?;
    inv.add_child(GROUP_ALL, GROUP_TEMPLATES)?;
    for host in &listing.hosts {
        let h = host.name.as_str();
        match host.kind {
            HostKind::Instance => {
                inv.add_host(GROUP_INSTANCES, h)?;
                inv.add_host(&template_group(&host.template), h)?;
            }
            HostKind::Template => inv.add_host(GROUP_TEMPLATES, h)?,
        }
        match host.state.as_str() {
            "running" => inv.add_host(GROUP_RUNNING, h)?,
            "stopped" => inv.add_host(GROUP_STOPPED, h)?,
            _ => {}
        }
        for (key, value) in host_vars(host) {
            inv.set_host_var(h, &key, value)?;
        }
    }
    if !listing.warnings.is_empty() {
        let list: Vec<Value> = listing.warnings.iter().map(|w| unsafe_value(w)).collect();
        inv.set_group_var("all", "virtup_inventory_warnings", Value::Array(list))?;
    }
    Ok(inv)
}

/// A host's variables, as `--host` and `_meta.hostvars` give them.
pub fn host_vars(host: &Host) -> Map<String, Value> {
    let mut vars = Map::new();
    let mut put = |k: &str, v: Value| {
        vars.insert(k.to_string(), v);
    };
    if let Some(a) = &host.address {
        put("ansible_host", unsafe_value(a));
    }
    if let Some(u) = &host.user {
        put("ansible_user", unsafe_value(u));
    }
    if let Some(k) = &host.ssh_private_key_file {
        put(
            "ansible_ssh_private_key_file",
            unsafe_value(&k.to_string_lossy()),
        );
    }
    put("ansible_connection", json!("ssh"));
    put(
        "ansible_ssh_common_args",
        unsafe_value(&host.ssh_common_args()),
    );
    put("virtup_kind", json!(host.kind.as_str()));
    put("virtup_domain", unsafe_value(&host.domain));
    put("virtup_template", unsafe_value(&host.template));
    put("virtup_generation", json!(host.generation));
    put("virtup_state", unsafe_value(&host.state));
    put("virtup_uri", unsafe_value(&host.uri));
    if let Some(m) = &host.mac {
        put("virtup_mac", unsafe_value(m));
    }
    vars
}

/// The document with the warnings also under `_meta.virtup_warnings`, where tools that read
/// the JSON directly (rather than through Ansible) find them.
pub fn list_document(listing: &Listing) -> Result<Value> {
    let mut doc = to_ansible(listing)?.to_json();
    if !listing.warnings.is_empty() {
        if let Some(meta) = doc.get_mut("_meta").and_then(Value::as_object_mut) {
            meta.insert("virtup_warnings".into(), json!(listing.warnings));
        }
    }
    Ok(doc)
}

/// virt-up's static inventory: `virt_up_managed` (instances) and `virt_up_templates`, hosts with
/// a known address only, as virt-up 2.2.0 writes it; values are quoted and tagged `!unsafe`.
pub fn virt_up_inventory_yaml(listing: &Listing) -> String {
    let mut out = String::from(
        "---\n# Written by virtup_inventory (virt-up's format); do not edit.\nall:\n  children:\n",
    );
    for (group, kind) in [
        ("virt_up_managed", HostKind::Instance),
        ("virt_up_templates", HostKind::Template),
    ] {
        let hosts: Vec<&Host> = listing
            .hosts
            .iter()
            .filter(|h| h.kind == kind && h.address.is_some() && h.user.is_some())
            .collect();
        out.push_str(&format!("    {group}:\n"));
        if hosts.is_empty() {
            out.push_str("      hosts: {}\n");
            continue;
        }
        out.push_str("      hosts:\n");
        for h in hosts {
            out.push_str(&format!("        {}:\n", yaml_quote(&h.name)));
            let mut put = |k: &str, v: &str| {
                out.push_str(&format!("          {k}: !unsafe {}\n", yaml_quote(v)));
            };
            put("ansible_user", h.user.as_deref().unwrap_or_default());
            put("ansible_host", h.address.as_deref().unwrap_or_default());
            put("ansible_port", "22");
            if let Some(k) = &h.ssh_private_key_file {
                put("ansible_private_key_file", &k.to_string_lossy());
            }
            put("ansible_connection", "ssh");
            put("ansible_ssh_common_args", &h.ssh_common_args());
        }
    }
    out
}

/// A JSON string is a valid YAML double-quoted scalar, escapes included.
fn yaml_quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// What the executable prints: the `--list` document, or one host's variables. Refreshes
/// virt-up's `inventory.yaml` on the way; failing to write it is a warning, not a failure.
pub fn main(host: Option<&str>) -> Result<Value> {
    let paths = Paths::from_env()?;
    let config = Config::load(&paths)?;
    let mut listing = collect(&paths, &config)?;
    if let Err(e) = refresh_virt_up_inventory(&paths.data_dir, &listing) {
        listing.warnings.push(format!("{e:#}"));
    }
    Ok(match host {
        Some(name) => Value::Object(
            listing
                .hosts
                .iter()
                .find(|h| h.name == name)
                .map(host_vars)
                .unwrap_or_default(),
        ),
        None => list_document(&listing)?,
    })
}

/// Rewrites `inventory.yaml` in the data dir when its content changed; never creates the data dir.
pub fn refresh_virt_up_inventory(data_dir: &Path, listing: &Listing) -> Result<bool> {
    if !data_dir.is_dir() {
        return Ok(false);
    }
    let path = DataDir::at(data_dir).inventory_file();
    let text = virt_up_inventory_yaml(listing);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    datadir::write_atomic(&path, text.as_bytes(), datadir::PRIVATE_MODE)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, kind: HostKind, state: &str) -> Host {
        Host {
            name: name.into(),
            kind,
            domain: name.into(),
            template: "debian-12".into(),
            generation: 1,
            state: state.into(),
            address: Some("192.168.122.7".into()),
            user: Some("virt".into()),
            ssh_private_key_file: Some("/d/sshkeys/virt/id_ed25519".into()),
            known_hosts_file: "/d ir/known_hosts".into(),
            host_key_alias: name.into(),
            uri: "qemu:///system".into(),
            mac: Some("52:54:00:00:00:01".into()),
        }
    }

    #[test]
    fn proxy_jump_only_for_ssh_transports() {
        assert_eq!(
            proxy_jump("qemu+ssh://root@hv1.example:2222/system?keyfile=/k"),
            Some("root@hv1.example:2222".into())
        );
        assert_eq!(proxy_jump("qemu+ssh://hv1/system"), Some("hv1".into()));
        assert_eq!(
            proxy_jump("qemu+libssh2://u@hv2/system"),
            Some("u@hv2".into())
        );
        assert_eq!(proxy_jump("qemu:///system"), None);
        assert_eq!(proxy_jump("qemu+tcp://hv1/system"), None);
        assert_eq!(proxy_jump("qemu+ssh:///system"), None);
        assert_eq!(proxy_jump("test:///default"), None);
    }

    #[test]
    fn ssh_args_pin_the_host_key_and_quote_paths() {
        let mut h = host("web1", HostKind::Instance, "running");
        assert_eq!(
            h.ssh_common_args(),
            "-o 'StrictHostKeyChecking=yes' -o 'UserKnownHostsFile=/d ir/known_hosts' -o 'GlobalKnownHostsFile=/dev/null' -o 'HostKeyAlias=web1'"
        );
        h.uri = "qemu+ssh://admin@hv1/system".into();
        assert!(h.ssh_common_args().ends_with("-o 'ProxyJump=admin@hv1'"));
        // Ansible splits the string like a shell: the path survives as one word.
        let words = shell_words::split(&h.ssh_common_args()).unwrap();
        assert!(words.contains(&"UserKnownHostsFile=/d ir/known_hosts".to_string()));
    }

    #[test]
    fn groups_follow_kind_state_and_template() {
        let listing = Listing {
            hosts: vec![
                host("VIRTUP-debian-12", HostKind::Template, "stopped"),
                host("web1", HostKind::Instance, "running"),
                host("web2", HostKind::Instance, "stopped"),
                host("web3", HostKind::Instance, "paused"),
            ],
            warnings: vec![],
        };
        let doc = list_document(&listing).unwrap();
        let hosts = |g: &str| doc[g]["hosts"].clone();
        assert_eq!(
            doc["virtup"]["children"],
            json!(["virtup_instances", "virtup_templates"])
        );
        assert_eq!(hosts("virtup_instances"), json!(["web1", "web2", "web3"]));
        assert_eq!(hosts("virtup_templates"), json!(["VIRTUP-debian-12"]));
        assert_eq!(hosts("virtup_running"), json!(["web1"]));
        assert_eq!(hosts("virtup_stopped"), json!(["VIRTUP-debian-12", "web2"]));
        assert_eq!(
            hosts("virtup_template_debian_12"),
            json!(["web1", "web2", "web3"])
        );
        assert!(doc.get("all").is_none(), "no warnings, no `all` vars");
        let web1 = &doc["_meta"]["hostvars"]["web1"];
        assert_eq!(
            web1["ansible_host"],
            json!({"__ansible_unsafe": "192.168.122.7"})
        );
        assert_eq!(web1["virtup_state"], json!({"__ansible_unsafe": "running"}));
        assert_eq!(web1["virtup_kind"], json!("instance"));
        assert!(web1["ansible_ssh_common_args"]["__ansible_unsafe"]
            .as_str()
            .unwrap()
            .contains("StrictHostKeyChecking=yes"));
    }

    #[test]
    fn empty_listing_still_declares_every_group() {
        let doc = list_document(&Listing::default()).unwrap();
        for g in [
            "virtup",
            "virtup_instances",
            "virtup_templates",
            "virtup_running",
            "virtup_stopped",
        ] {
            assert!(doc.get(g).is_some(), "{g} missing from {doc}");
        }
        assert_eq!(doc["_meta"]["hostvars"], json!({}));
    }

    #[test]
    fn warnings_reach_the_document_as_unsafe_values() {
        let listing = Listing {
            hosts: vec![],
            warnings: vec!["instance `x` is skipped: {{ lookup('pipe', 'id') }}".into()],
        };
        let doc = list_document(&listing).unwrap();
        assert_eq!(
            doc["all"]["vars"]["virtup_inventory_warnings"][0]["__ansible_unsafe"],
            json!(listing.warnings[0])
        );
        assert_eq!(doc["_meta"]["virtup_warnings"], json!(listing.warnings));
    }

    #[test]
    fn template_groups_are_valid_group_names() {
        assert_eq!(template_group("debian-12"), "virtup_template_debian_12");
        assert_eq!(template_group("a.b"), "virtup_template_a_b");
    }

    #[test]
    fn virt_up_yaml_lists_addressed_hosts_with_quoted_unsafe_values() {
        let mut no_addr = host("web2", HostKind::Instance, "stopped");
        no_addr.address = None;
        let listing = Listing {
            hosts: vec![host("web1", HostKind::Instance, "running"), no_addr],
            warnings: vec![],
        };
        let y = virt_up_inventory_yaml(&listing);
        assert!(
            y.contains("    virt_up_managed:\n      hosts:\n        \"web1\":\n"),
            "{y}"
        );
        assert!(
            y.contains("          ansible_host: !unsafe \"192.168.122.7\"\n"),
            "{y}"
        );
        assert!(!y.contains("web2"), "{y}");
        assert!(
            y.contains("    virt_up_templates:\n      hosts: {}\n"),
            "{y}"
        );
        assert!(y.contains("ansible_ssh_common_args: !unsafe \"-o 'StrictHostKeyChecking=yes' -o 'UserKnownHostsFile=/d ir/known_hosts' -o 'GlobalKnownHostsFile=/dev/null' -o 'HostKeyAlias=web1'\""), "{y}");
    }
}
