//! The dynamic inventory's documents (`--list`, `--host`) and virt-up's static `inventory.yaml`, rendered from
//! the listing `virtup_ops::inventory::collect` reads.
//!
//! A warning of the listing (a damaged metadata file, an unreachable hypervisor) goes inside the
//! document (`_meta.virtup_warnings` and the `virtup_inventory_warnings` variable of group `all`),
//! never fails every ansible command.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{json, Map, Value};
use virtup_ansible::inventory::{unsafe_value, Inventory};
use virtup_core::config::Config;
use virtup_core::{datadir, DataDir, Paths};
pub use virtup_ops::inventory::{collect, uris, Host, HostKind, Listing, URIS_ENV};

/// Groups every listing has, even when empty, so that playbooks can target them unconditionally.
pub const GROUP_ALL: &str = "virtup";
pub const GROUP_INSTANCES: &str = "virtup_instances";
pub const GROUP_TEMPLATES: &str = "virtup_templates";
pub const GROUP_RUNNING: &str = "virtup_running";
pub const GROUP_STOPPED: &str = "virtup_stopped";
/// Hosts whose memory libvirt saved (an instance's `state: suspended`, or a managed save by hand or by
/// libvirt-guests); an instance's `state: running` resumes it.
pub const GROUP_SUSPENDED: &str = "virtup_suspended";
/// Prefix of the per-template groups (`virtup_template_debian_12`).
pub const TEMPLATE_GROUP_PREFIX: &str = "virtup_template_";

/// Group names allow letters, digits and `_` only (others draw a warning from Ansible).
pub fn template_group(template: &str) -> String {
    let safe: String = template
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{TEMPLATE_GROUP_PREFIX}{safe}")
}

/// Prefix of the per-hypervisor groups (`virtup_hypervisor_h2`, `virtup_hypervisor_localhost`).
pub const HYPERVISOR_GROUP_PREFIX: &str = "virtup_hypervisor_";

/// The group of the hypervisor at `uri`: its host name (`localhost` for this machine's), made a
/// valid group name.
pub fn hypervisor_group(uri: &str) -> String {
    let authority = uri
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let safe: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{HYPERVISOR_GROUP_PREFIX}{safe}")
}

/// The `--list` document, and every warning it carries (the listing's and its own). Every value
/// that comes from metadata or a guest is marked unsafe so Ansible never evaluates it as a template.
fn to_ansible(listing: &Listing) -> Result<(Inventory, Vec<String>)> {
    let mut inv = Inventory::new();
    for g in [GROUP_RUNNING, GROUP_STOPPED, GROUP_SUSPENDED] {
        inv.add_group(g)?;
    }
    inv.add_child(GROUP_ALL, GROUP_INSTANCES)?;
    inv.add_child(GROUP_ALL, GROUP_TEMPLATES)?;
    let mut warnings = listing.warnings.clone();
    let host_names: std::collections::BTreeSet<&str> =
        listing.hosts.iter().map(|h| h.name.as_str()).collect();
    for host in &listing.hosts {
        let h = host.name.as_str();
        match host.kind {
            HostKind::Instance => {
                inv.add_host(GROUP_INSTANCES, h)?;
                inv.add_host(&template_group(&host.template), h)?;
            }
            HostKind::Template => inv.add_host(GROUP_TEMPLATES, h)?,
        }
        inv.add_host(&hypervisor_group(&host.uri), h)?;
        // The groups it was declared in (checked names, never virtup's own). A group named like a
        // host would hide that host from patterns (Ansible matches groups first): left out, said.
        for g in &host.groups {
            if host_names.contains(g.as_str()) {
                warnings.push(format!(
                    "`{h}` is not put in its declared group `{g}`: a host has that name, and the \
                     group would take its place in host patterns"
                ));
            } else if let Err(e) = inv.add_host(g, h) {
                warnings.push(format!("`{h}` is not put in its declared group `{g}`: {e}"));
            }
        }
        match host.state.as_str() {
            "running" => inv.add_host(GROUP_RUNNING, h)?,
            "stopped" => inv.add_host(GROUP_STOPPED, h)?,
            "suspended" => inv.add_host(GROUP_SUSPENDED, h)?,
            _ => {}
        }
        for (key, value) in host_vars(host) {
            inv.set_host_var(h, &key, value)?;
        }
    }
    if !warnings.is_empty() {
        let list: Vec<Value> = warnings.iter().map(|w| unsafe_value(w)).collect();
        inv.set_group_var("all", "virtup_inventory_warnings", Value::Array(list))?;
    }
    // The virtup_instance role keeps an instance on the hypervisor its metadata records, a host or not.
    if !listing.recorded_uris.is_empty() {
        let map: Map<String, Value> = listing
            .recorded_uris
            .iter()
            .map(|(name, uri)| (name.clone(), unsafe_value(uri)))
            .collect();
        inv.set_group_var("all", "virtup_recorded_uris", Value::Object(map))?;
    }
    Ok((inv, warnings))
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
    // With host key checking off in the user's Ansible config, Ansible puts the ssh option that turns checking off
    // before these options, and ssh keeps the first value it reads: the pin would not be checked. This host says
    // otherwise.
    put("ansible_host_key_checking", json!(true));
    put("virtup_kind", json!(host.kind.as_str()));
    put("virtup_domain", unsafe_value(&host.domain));
    put("virtup_template", unsafe_value(&host.template));
    put("virtup_generation", json!(host.generation));
    put("virtup_state", unsafe_value(&host.state));
    put("virtup_uri", unsafe_value(&host.uri));
    if let Some(m) = &host.mac {
        put("virtup_mac", unsafe_value(m));
    }
    if let Some(a) = &host.reserved_address {
        put("virtup_reserved_address", unsafe_value(a));
    }
    if let Some(model) = host.nic_model {
        put("virtup_nic_model", json!(model.as_str()));
    }
    if !host.extra_nics.is_empty() {
        // As the module returns them (`instance.extra_nics`): type, source, mode (direct), model, MAC.
        let nics = host.extra_nics.iter().map(|made| {
            let view = virtup_ops::instance::NicView::of(made);
            let mut nic = Map::new();
            nic.insert("type".into(), json!(view.kind));
            nic.insert("source".into(), unsafe_value(&view.source));
            if let Some(mode) = view.mode {
                nic.insert("mode".into(), json!(mode));
            }
            nic.insert("model".into(), json!(view.model));
            nic.insert("mac".into(), unsafe_value(&view.mac));
            Value::Object(nic)
        });
        put("virtup_extra_nics", Value::Array(nics.collect()));
    }
    vars
}

/// The document with the warnings also under `_meta.virtup_warnings`, where tools that read
/// the JSON directly (rather than through Ansible) find them.
pub fn list_document(listing: &Listing) -> Result<Value> {
    let (inv, warnings) = to_ansible(listing)?;
    let mut doc = inv.to_json();
    if !warnings.is_empty() {
        if let Some(meta) = doc.get_mut("_meta").and_then(Value::as_object_mut) {
            meta.insert("virtup_warnings".into(), json!(warnings));
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
            // As in the dynamic inventory: the pin holds whatever the user's host_key_checking says.
            out.push_str("          ansible_host_key_checking: true\n");
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
            reserved_address: None,
            nic_model: None,
            extra_nics: Vec::new(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_hypervisor_known_only_from_a_template_record_is_listed() {
        // A template uploaded to h2 has no clone yet, so no instance metadata names h2; its ownership
        // record does, and the inventory (and `virt-up --delete`) must still look there.
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            system_config_dir: dir.path().join("etc"),
            user_config_dir: dir.path().join("config"),
            data_dir: dir.path().join("data"),
            libvirt_uri: "qemu:///system".into(),
        };
        let data = DataDir::open(&paths.data_dir).unwrap();
        let remote = "qemu+ssh://root@h2/system";
        let mut ledger = virtup_core::ownership::Ledger::read(&data, "VIRTUP-t").unwrap();
        ledger
            .intend(&data, remote, "default", "VIRTUP-t.qcow2", None)
            .unwrap();
        std::env::remove_var(URIS_ENV);
        let config = Config::default();
        assert_eq!(uris(&paths, &config, &[]), ["qemu:///system", remote]);
    }

    #[test]
    fn each_hypervisor_has_a_group_named_after_its_host() {
        for (uri, group) in [
            ("qemu:///system", "virtup_hypervisor_localhost"),
            ("qemu+ssh://root@h2/system", "virtup_hypervisor_h2"),
            (
                "qemu+ssh://admin@hv-1.example:2222/system?keyfile=/k",
                "virtup_hypervisor_hv_1_example",
            ),
            (
                "qemu+tcp://[fd00::2]:16509/system",
                "virtup_hypervisor_fd00__2",
            ),
            ("test:///default", "virtup_hypervisor_localhost"),
        ] {
            assert_eq!(hypervisor_group(uri), group, "{uri}");
        }
    }

    #[test]
    fn ssh_args_pin_the_host_key_and_quote_paths() {
        let mut h = host("web1", HostKind::Instance, "running");
        assert_eq!(
            h.ssh_common_args(),
            "-o 'StrictHostKeyChecking=yes' -o 'UserKnownHostsFile=/d ir/known_hosts' -o 'GlobalKnownHostsFile=/dev/null' -o 'HostKeyAlias=web1'"
        );
        h.uri = "qemu+ssh://admin@hv1/system".into();
        // A remote guest is reached through its hypervisor, whose own key is checked strictly too.
        let words = shell_words::split(&h.ssh_common_args()).unwrap();
        // Never a connection shared by address: two hypervisors' guests may have the same one.
        assert_eq!(words[words.len() - 2..], ["-o", "ControlPath=none"]);
        let proxy = words[words.len() - 3]
            .strip_prefix("ProxyCommand=")
            .unwrap();
        assert_eq!(
            shell_words::split(proxy).unwrap(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ControlPath=none",
                "-o",
                "ConnectTimeout=5",
                "-l",
                "admin",
                "-W",
                "[%h]:%p",
                "--",
                "hv1"
            ]
        );
        // Ansible splits the string like a shell: the path survives as one word.
        let words = shell_words::split(&h.ssh_common_args()).unwrap();
        assert!(words.contains(&"UserKnownHostsFile=/d ir/known_hosts".to_string()));
    }

    #[test]
    fn extra_nics_are_host_vars_with_unsafe_names_and_none_means_no_var() {
        let mut h = host("web1", HostKind::Instance, "running");
        assert!(!host_vars(&h).contains_key("virtup_extra_nics"));
        assert!(!host_vars(&h).contains_key("virtup_nic_model"));
        h.nic_model = Some(virtup_core::nic::NicModel::E1000e);
        assert_eq!(host_vars(&h)["virtup_nic_model"], "e1000e");
        h.extra_nics = vec![
            virtup_core::nic::MadeNic {
                nic: virtup_core::nic::Nic::Bridge("br0".into()),
                mac: "52:54:00:00:00:02".into(),
                model: virtup_core::nic::NicModel::E1000,
            },
            virtup_core::nic::MadeNic {
                nic: virtup_core::nic::Nic::Direct {
                    dev: "eth1".into(),
                    mode: virtup_core::nic::DirectMode::Vepa,
                },
                mac: "52:54:00:00:00:03".into(),
                model: Default::default(),
            },
        ];
        assert_eq!(
            host_vars(&h)["virtup_extra_nics"],
            json!([
                {"type": "bridge", "source": {"__ansible_unsafe": "br0"}, "model": "e1000", "mac": {"__ansible_unsafe": "52:54:00:00:00:02"}},
                {"type": "direct", "source": {"__ansible_unsafe": "eth1"}, "mode": "vepa", "model": "virtio", "mac": {"__ansible_unsafe": "52:54:00:00:00:03"}}
            ])
        );
    }

    #[test]
    fn groups_follow_kind_state_and_template() {
        let listing = Listing {
            hosts: vec![
                host("VIRTUP-debian-12", HostKind::Template, "stopped"),
                Host {
                    groups: vec!["web".into(), "prod".into()],
                    ..host("web1", HostKind::Instance, "running")
                },
                Host {
                    groups: vec!["web".into()],
                    ..host("web2", HostKind::Instance, "stopped")
                },
                host("web3", HostKind::Instance, "paused"),
                host("web4", HostKind::Instance, "suspended"),
            ],
            ..Default::default()
        };
        let doc = list_document(&listing).unwrap();
        let hosts = |g: &str| doc[g]["hosts"].clone();
        assert_eq!(
            doc["virtup"]["children"],
            json!(["virtup_instances", "virtup_templates"])
        );
        assert_eq!(
            hosts("virtup_instances"),
            json!(["web1", "web2", "web3", "web4"])
        );
        assert_eq!(hosts("virtup_templates"), json!(["VIRTUP-debian-12"]));
        assert_eq!(hosts("virtup_running"), json!(["web1"]));
        assert_eq!(hosts("virtup_stopped"), json!(["VIRTUP-debian-12", "web2"]));
        assert_eq!(hosts("virtup_suspended"), json!(["web4"]));
        // Declared groups, as top-level groups of their own.
        assert_eq!(hosts("web"), json!(["web1", "web2"]));
        assert_eq!(hosts("prod"), json!(["web1"]));
        assert_eq!(
            hosts("virtup_template_debian_12"),
            json!(["web1", "web2", "web3", "web4"])
        );
        assert!(doc.get("all").is_none(), "no warnings, no `all` vars");
        let web1 = &doc["_meta"]["hostvars"]["web1"];
        assert_eq!(
            web1["ansible_host"],
            json!({"__ansible_unsafe": "192.168.122.7"})
        );
        assert_eq!(web1["virtup_state"], json!({"__ansible_unsafe": "running"}));
        assert_eq!(web1["virtup_kind"], json!("instance"));
        assert_eq!(web1["ansible_host_key_checking"], json!(true));
        assert!(web1["ansible_ssh_common_args"]["__ansible_unsafe"]
            .as_str()
            .unwrap()
            .contains("StrictHostKeyChecking=yes"));
    }

    /// A declared group named like a host, or one Ansible's document cannot hold (a hand-edited
    /// record), is left out with a warning; the listing itself stands.
    #[test]
    fn a_declared_group_that_would_hide_a_host_or_break_the_document_is_left_out() {
        let listing = Listing {
            hosts: vec![
                Host {
                    groups: vec!["db".into(), "_meta".into(), "web".into()],
                    ..host("replica", HostKind::Instance, "running")
                },
                host("db", HostKind::Instance, "running"),
            ],
            ..Default::default()
        };
        let doc = list_document(&listing).unwrap();
        assert_eq!(doc["db"]["hosts"], Value::Null, "{doc}");
        assert_eq!(doc["web"]["hosts"], json!(["replica"]));
        assert_eq!(doc["virtup_running"]["hosts"], json!(["db", "replica"]));
        let warnings = doc["_meta"]["virtup_warnings"].to_string();
        assert!(warnings.contains("a host has that name"), "{warnings}");
        assert!(warnings.contains("`_meta`"), "{warnings}");
        assert_eq!(
            doc["all"]["vars"]["virtup_inventory_warnings"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
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
            "virtup_suspended",
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
            ..Default::default()
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
            ..Default::default()
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
        assert!(
            y.contains("\n          ansible_host_key_checking: true\n"),
            "{y}"
        );
    }
}
