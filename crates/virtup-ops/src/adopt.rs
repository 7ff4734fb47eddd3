//! Adopting an instance virt-up 2.2.0 made: checked against virt-up's own records first, then made virtup's without trusting the network.
//!
//! [`check`] has no side effect: it reads virt-up's record, `macaddrs.json`, the domain, the pool and
//! the other domains and ledgers, and refuses (naming the mismatch) anything that is not exactly what
//! virt-up would have left, and anything virtup could not manage afterwards.
//! [`apply`] then, with the guest shut down, replaces its SSH host keys with one generated here and
//! appends virtup's login key to the user's `authorized_keys`, offline (virt-customize), so that its
//! next boot is verified against a key that never crossed the network. Nothing else in the guest
//! changes. Only then does virtup record the disk as its own, tag the domain and, last, replace
//! virt-up's record with its own (the clear-text passwords move into 0600 files). Until that record is
//! written the instance is [`pending`]: every operation refuses it (or, deleting, leaves it), and the
//! next adoption finishes a killed one.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use virtup_core::ownership::Ledger;
use virtup_core::virt_up_record::VirtUpRecord;
use virtup_core::{keys, known_hosts, DataDir, InstanceMeta, MacAddrs};
use virtup_guest::{CustomizeOp, VirtCustomize};
use virtup_libvirt::{parse_domain_xml, DomainState, Hypervisor, TagKind, VirtupTag};

use crate::context::{Context, LOCK_TIMEOUT, SHORT_LOCK_TIMEOUT};
use crate::Reporter;

/// What [`check`] found: an instance of virt-up 2.2.0 that matches its records, and what adopting it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub name: String,
    pub uri: String,
    pub template: String,
    /// The base domain it is a clone of (`VIRTUP-<template>`), which stays virt-up's.
    pub base: String,
    pub pool: String,
    /// Its disk: the one volume virtup will own and delete with it.
    pub volume: String,
    pub disk_path: String,
    /// The disk's format, as virt-up recorded it (`qcow2`: a linked clone of the base).
    pub format: String,
    /// The MAC of its one NIC, as the domain spells it.
    pub mac: String,
    pub user: String,
    /// It runs now: adopting shuts it down, and the caller starts it again.
    pub running: bool,
}

impl Adoption {
    /// What adopting changes, for the caller's confirmation and check mode.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.running {
            lines.push(format!(
                "shut `{}` down (ACPI; never a hard stop), then start it again",
                self.name
            ));
        }
        lines.push(format!(
            "replace its SSH host keys with one made here, and add virtup's key to `{}`'s authorized_keys, \
             in its disk `{}`, offline (an SELinux guest relabels at its next boot); nothing else in the guest changes",
            self.user, self.disk_path
        ));
        lines.push(format!(
            "record volume `{}` in pool `{}` as the instance's own (deleted with it); its base `{}` stays virt-up's",
            self.volume, self.pool, self.base
        ));
        lines.push(
            "move the root and user passwords out of its record into 0600 files, and replace the record with virtup's"
                .to_owned(),
        );
        lines
    }
}

/// Whether `name` waits to be adopted: virt-up 2.2.0's record, and a domain of that name with no
/// virtup tag, or this data dir's (a killed adoption tagged it). No side effect; whether it matches
/// virt-up's records is [`check`]'s question. Every operation on the name asks this first.
pub fn pending(ctx: &Context, hv: &Hypervisor, name: &str) -> Result<bool> {
    let Some(meta) = InstanceMeta::read(&ctx.data, name)? else {
        return Ok(false);
    };
    if !meta.is_virt_up_record() {
        return Ok(false);
    }
    Ok(match hv.domain(name)? {
        None => false,
        Some(d) => match d.tag {
            None => true,
            Some(tag) => left_by_adoption(&ctx.data, &tag, name)?,
        },
    })
}

/// Whether `tag` on domain `name` is one an interrupted adoption wrote: an adoption always writes
/// this data dir's owner id into the tag.
fn left_by_adoption(data: &DataDir, tag: &VirtupTag, name: &str) -> Result<bool> {
    Ok(tag.is(TagKind::Instance, name)
        && tag.names_owner(data.owner_id()?.as_deref()) == Some(true))
}

/// Checks that `name` is an instance virt-up 2.2.0 made, as its records say, on `hv`, and that
/// virtup can manage it once adopted; no side effect.
pub fn check(ctx: &Context, hv: &Hypervisor, name: &str) -> Result<Adoption> {
    virtup_core::validate::name("NAME", name)?;
    let data = &ctx.data;
    let meta = InstanceMeta::read(data, name)?.ok_or_else(|| {
        anyhow!(
            "no instance named `{name}` in `{}`: there is nothing to adopt",
            ctx.paths.data_dir.display()
        )
    })?;
    if !meta.is_virt_up_record() {
        bail!("instance `{name}` is already virtup's (its record is in virtup's format): there is nothing to adopt");
    }
    let record = VirtUpRecord::read(data, name)?
        .ok_or_else(|| anyhow!("the record of `{name}` vanished"))?;
    let refuse = |why: String| -> anyhow::Error {
        anyhow!("cannot adopt `{name}`: {why}; nothing was changed")
    };
    let Some(base) = record.from.clone().filter(|_| record.is_clone()) else {
        return Err(refuse(
            "it is a virt-up base (a template), not a clone; adopting templates is not supported yet \
             (see docs/migrate-from-virt-up.md)"
                .into(),
        ));
    };
    // What virtup needs to manage it afterwards: a name that is a host name, a user name it accepts.
    virtup_core::validate::instance_name("NAME", name).map_err(|e| {
        refuse(format!(
            "virtup could not manage it afterwards: {}",
            e.reason
        ))
    })?;
    virtup_core::validate::user_name("user", &record.user.username)
        .map_err(|e| refuse(format!("virtup could not log in as its user: {}", e.reason)))?;
    let uri = hv.uri().to_owned();
    if !hv.is_local() {
        return Err(refuse(format!(
            "its disk is changed offline on this machine, and `{uri}` is not local"
        )));
    }
    let dom = hv.domain(name)?.ok_or_else(|| {
        refuse(format!(
            "virt-up's record names it, but `{uri}` has no domain `{name}` (virt-up 2.2.0's own default \
             hypervisor is qemu:///session: give virtup that URI if virt-up made it there)"
        ))
    })?;
    match &dom.tag {
        None => {}
        Some(tag) if left_by_adoption(data, tag, name)? => {}
        Some(_) => {
            return Err(refuse(format!(
                "domain `{name}` carries a virtup tag that is not this data dir's: it is not the domain virt-up made"
            )))
        }
    }
    // Its disk is changed offline: memory saved or held by a paused guest would not match it.
    if dom.saved {
        return Err(refuse(
            "its memory is saved (a managed save, e.g. by libvirt-guests): start it and let it run, \
             or discard the saved state, then adopt it"
                .into(),
        ));
    }
    let running = match dom.state {
        DomainState::ShutOff => false,
        DomainState::Running => true,
        _ => {
            return Err(refuse(format!(
                "it is {}: only a running or shut off guest is adopted",
                dom.state_word()
            )))
        }
    };
    let parsed = parse_domain_xml(&hv.inactive_xml(name)?)?;
    // The MAC virt-up saved for the name is the one the domain has: the same machine, not a namesake.
    let macs = MacAddrs::load(&data.macaddrs_file())?;
    let recorded_mac = macs.get(name).ok_or_else(|| {
        refuse(format!(
            "`{}` has no MAC for it",
            data.macaddrs_file().display()
        ))
    })?;
    let mac = match parsed.macs().as_slice() {
        [mac] if virtup_libvirt::same_mac(mac, recorded_mac) => (*mac).to_owned(),
        [mac] => {
            return Err(refuse(format!(
                "its domain's MAC is {mac}, but virt-up recorded {recorded_mac} in `{}`",
                data.macaddrs_file().display()
            )))
        }
        other => {
            return Err(refuse(format!(
                "its domain has {} NICs; virt-up makes one",
                other.len()
            )))
        }
    };
    // Every disk counts, whatever its kind (file, volume, network): virt-up makes exactly one.
    let disks: Vec<String> = parsed
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .map(|d| {
            d.path
                .clone()
                .or_else(|| {
                    d.volume
                        .as_ref()
                        .map(|(p, v)| format!("volume {v} of pool {p}"))
                })
                .unwrap_or_else(|| "a disk with no file".to_owned())
        })
        .collect();
    if disks != [record.disk.as_str()] {
        return Err(refuse(format!(
            "virt-up recorded its disk as `{}`, but its domain's disks are {}",
            record.disk,
            show_list(&disks)
        )));
    }
    // The disk must be a volume of a pool (only a volume has the key virtup's ledger records), named
    // as virt-up names a clone's disk: `<pool>/<name>.<format>`.
    let format = record.format().unwrap_or("qcow2").to_owned();
    // Every volume of the active pools, read once: the disk is found among them, and nothing else
    // may rest on it (below).
    let mut volumes = Vec::new();
    for pool in hv.list_pools()?.into_iter().filter(|p| p.active) {
        for v in hv.list_volumes(&pool.name)? {
            volumes.push((pool.name.clone(), v));
        }
    }
    let found = volumes.iter().find(|(_, v)| v.path == record.disk).cloned();
    let (pool, volume) = found.ok_or_else(|| {
        refuse(format!(
            "its disk `{}` is in no storage pool of `{uri}`",
            record.disk
        ))
    })?;
    if volume.name != format!("{name}.{format}") {
        return Err(refuse(format!(
            "its disk is volume `{}`, not `{name}.{format}` as virt-up names a clone's disk",
            volume.name
        )));
    }
    // A clone rests on the base virt-up made for its template: that base's disk, as recorded. A qcow2
    // clone is an overlay of it (virt-up's `qemu-img create -b`); a raw one is a copy, on nothing.
    let base_disk = VirtUpRecord::read(data, &base)
        .ok()
        .flatten()
        .filter(|r| !r.is_clone())
        .map(|r| r.disk);
    let Some(base_disk) = base_disk.filter(|_| hv.domain(&base).is_ok_and(|d| d.is_some())) else {
        return Err(refuse(format!(
            "virt-up recorded it as a clone of `{base}`, but that base has no domain on `{uri}` or no virt-up record"
        )));
    };
    if base_disk == record.disk {
        return Err(refuse(format!(
            "its recorded disk `{}` is its base's",
            record.disk
        )));
    }
    match (format.as_str(), volume.backing.as_deref()) {
        ("qcow2", Some(b)) if b == base_disk => {}
        ("raw", None) => {}
        (_, backing) => {
            return Err(refuse(format!(
                "its {format} disk rests on {}, not on {} as virt-up's clones of `{base}` do",
                backing.map_or("nothing".to_owned(), |b| format!("`{b}`")),
                if format == "raw" {
                    "nothing".to_owned()
                } else {
                    format!("its base's disk `{base_disk}`")
                }
            )))
        }
    }
    // Nothing else may use the disk or own it: no other domain, no record of virtup's.
    for other in hv.list_domains()?.into_iter().filter(|d| d.name != name) {
        let xml = parse_domain_xml(&hv.inactive_xml(&other.name)?)?;
        if xml.disks.iter().any(|d| {
            d.path.as_deref() == Some(record.disk.as_str())
                || d.volume
                    .as_ref()
                    .is_some_and(|(p, v)| *p == pool && *v == volume.name)
        }) {
            return Err(refuse(format!(
                "its disk `{}` is also a disk of domain `{}`",
                record.disk, other.name
            )));
        }
    }
    // Nor may anything rest on it: deleting it would pull an overlay's backing file away.
    if let Some((over_pool, over)) = volumes
        .iter()
        .find(|(_, v)| v.backing.as_deref() == Some(record.disk.as_str()))
    {
        return Err(refuse(format!(
            "volume `{}` in pool `{over_pool}` rests on its disk `{}`",
            over.name, record.disk
        )));
    }
    for scope in Ledger::scopes(data)?.into_iter().filter(|s| s != name) {
        if Ledger::read(data, &scope)?
            .volumes
            .iter()
            .any(|v| v.key.as_deref() == Some(volume.key.as_str()))
        {
            return Err(refuse(format!(
                "virtup's records give its disk `{}` to `{scope}`",
                record.disk
            )));
        }
    }
    Ok(Adoption {
        name: name.to_owned(),
        uri,
        template: record.template.clone(),
        base,
        pool,
        volume: volume.name.clone(),
        disk_path: record.disk.clone(),
        format,
        mac,
        user: record.user.username.clone(),
        running,
    })
}

fn show_list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adopts what [`check`] finds, checked again under the instance's lock; `None` when another run
/// adopted it meanwhile. The guest is left shut down; the caller starts it and proves its pinned key
/// (`state: running`). A failure after the shutdown starts it again, as it was.
pub fn apply(
    ctx: &Context,
    hv: &Hypervisor,
    name: &str,
    stop_timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<Option<Adoption>> {
    let data = ctx.open_data_dir()?;
    let _lock = data.lock(&format!("instance-{name}"), LOCK_TIMEOUT)?;
    if !pending(ctx, hv, name)? {
        return Ok(None);
    }
    let plan = check(ctx, hv, name)?;
    let record = VirtUpRecord::read(&data, name)?
        .ok_or_else(|| anyhow!("the record of `{name}` vanished"))?;
    if plan.running {
        reporter.changed();
        reporter.stage(&format!("`{name}`: shutting down to adopt it"));
        shut_down(hv, name, stop_timeout)?;
    }
    match adopt_stopped(ctx, &data, hv, &plan, &record, reporter) {
        Ok(()) => Ok(Some(plan)),
        Err(e) if plan.running => {
            // Back as it was found: running, whatever this run got to.
            let again = match hv.start(name) {
                Ok(()) => "it was started again, as it was".to_owned(),
                Err(s) => format!("starting it again failed too ({s:#})"),
            };
            Err(e.context(format!("adopting `{name}` failed; {again}")))
        }
        Err(e) => Err(e),
    }
}

/// The adoption proper, the guest shut down.
fn adopt_stopped(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    plan: &Adoption,
    record: &VirtUpRecord,
    reporter: &dyn Reporter,
) -> Result<()> {
    let name = &plan.name;
    let owner = data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    reporter.changed();
    reporter.stage(&format!("`{name}`: installing its new host key offline"));
    let user_key = keys::ensure_user_key(&data.sshkeys_dir(), &plan.user)?;
    let host_keys = keys::generate_host_keys(&data.hostkeys_dir(), name)?;
    install_keys(data, hv, plan, &host_keys, &user_key)?;
    // From here the guest's key is the one generated here: pinned before anything else records it.
    known_hosts::set(data, name, &host_keys.public_openssh, SHORT_LOCK_TIMEOUT)?;
    // The passwords, as virt-up set them, into 0600 files (the guest keeps them as they are).
    let secrets_dir = ctx.secrets_dir(name);
    if let Some(pw) = record.user.password.as_deref() {
        crate::identity::secret(&secrets_dir, "password", Some(pw))?;
    }
    if let Some(pw) = record.root.as_ref().and_then(|r| r.password.as_deref()) {
        crate::identity::secret(&secrets_dir, "root_password", Some(pw))?;
    }
    let info = hv
        .volume_info(&plan.pool, &plan.volume)?
        .filter(|v| v.path == plan.disk_path)
        .ok_or_else(|| anyhow!("volume `{}` of `{name}` vanished", plan.volume))?;
    let mut ledger = Ledger::read(data, name)?;
    ledger.confirm(data, &plan.uri, &plan.pool, &plan.volume, &info.key)?;
    ledger.attach(
        data,
        &plan.uri,
        &plan.pool,
        std::slice::from_ref(&plan.volume),
    )?;
    let mut tag = VirtupTag::new(TagKind::Instance, name);
    tag.template = Some(plan.template.clone());
    tag.owned_volumes = vec![plan.volume.clone()];
    tag.user = Some(plan.user.clone());
    tag.owner = Some(owner);
    hv.set_tag(name, &tag)?;
    let mut meta = InstanceMeta::new(name, &plan.template);
    meta.user = plan.user.clone();
    meta.ssh_private_key_file = Some(user_key.private_path.clone());
    meta.known_hosts_file = Some(data.known_hosts_file());
    meta.host_key_fingerprint = Some(host_keys.fingerprint.clone());
    meta.mac = Some(plan.mac.clone());
    meta.uri = Some(plan.uri.clone());
    meta.pool = Some(plan.pool.clone());
    meta.volumes = vec![plan.volume.clone()];
    meta.state = Some(if plan.running { "running" } else { "stopped" }.to_owned());
    meta.virt_up_from = Some(plan.base.clone());
    meta.virt_up_image_format = Some(plan.format.clone());
    // The last step: virt-up's record, with its clear-text passwords, is replaced atomically.
    let _meta_lock = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
    meta.write(data)?;
    reporter.note(&format!("adopted `{name}`"));
    Ok(())
}

/// ACPI shutdown within `timeout`, never a hard stop: an instance that does not stop is refused.
fn shut_down(hv: &Hypervisor, name: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut asked = None::<Instant>;
    loop {
        let off = hv
            .domain(name)?
            .is_none_or(|d| d.state == DomainState::ShutOff);
        if off {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "cannot adopt `{name}`: it did not shut down within {}s of an ACPI request, and virtup \
                 does not pull the plug on a guest it does not own yet; nothing was changed: shut it down \
                 yourself (`virsh shutdown {name}`) and adopt it again",
                timeout.as_secs()
            );
        }
        // A guest still booting may miss the ACPI event, so it is repeated while we wait.
        if asked.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            let _ = hv.shutdown(name);
            asked = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Replaces the guest's SSH host keys with `host_keys` and appends virtup's login key to the user's
/// `authorized_keys`, offline. The private key goes in as a 0600 file (`--upload`), never on argv.
fn install_keys(
    data: &DataDir,
    hv: &Hypervisor,
    plan: &Adoption,
    host_keys: &keys::HostKeys,
    user_key: &keys::UserKey,
) -> Result<()> {
    let private = "/etc/ssh/ssh_host_ed25519_key";
    let mut customize = VirtCustomize::new(&plan.disk_path);
    customize.format = Some(plan.format.clone());
    customize.ops = vec![
        // The old keys go, all of them (virt-up's template's, shared by its clones). A guest whose
        // boot makes missing key types (RHEL's sshd-keygen) makes new ones; the pinned one is ed25519.
        CustomizeOp::RunCommand("rm -f /etc/ssh/ssh_host_*".into()),
        CustomizeOp::Upload {
            local: host_keys.private_path.clone(),
            remote: private.into(),
        },
        CustomizeOp::Chmod {
            mode: 0o600,
            path: private.into(),
        },
        CustomizeOp::Upload {
            local: host_keys.public_path.clone(),
            remote: format!("{private}.pub"),
        },
        CustomizeOp::Chmod {
            mode: 0o644,
            path: format!("{private}.pub"),
        },
        // Appended, with the right owner and modes: the keys the user put there stay. (From the file:
        // virt-customize splits an inline key at the colon of its comment, `virtup:<user>`.)
        CustomizeOp::SshInjectFile {
            user: plan.user.clone(),
            pubkey_file: user_key.public_path.clone(),
        },
        // Files written offline carry no SELinux label: an SELinux guest relabels at its next boot.
        CustomizeOp::RunCommand(
            "if [ -f /etc/selinux/config ] && ! grep -q '^SELINUX=disabled' /etc/selinux/config; then \
             touch /.autorelabel; fi"
                .into(),
        ),
    ];
    let mut cmd = customize.cmd()?;
    let appliance =
        crate::appliance_virt_type(hv, || Ok(crate::virt_choice::choose(hv, data)?.virt_type))?;
    crate::appliance_env(&mut cmd, hv, appliance);
    crate::run_tool(
        &cmd,
        &format!(
            "virt-customize could not install the new host key into `{}`",
            plan.disk_path
        ),
    )
}
