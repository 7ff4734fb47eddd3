//! Adopting an instance virt-up 2.2.0 made: checked against virt-up's own records first, then made virtup's without trusting the network.
//!
//! [`check`] has no side effect: it reads virt-up's record, `macaddrs.json`, the domain and the pool,
//! and refuses (naming the mismatch) anything that is not exactly what virt-up would have left.
//! [`apply`] then, with the guest shut down, installs a host key generated here and virtup's first
//! boot into its disk offline (as the sysprep path does), so that its next boot is verified against
//! a key that never crossed the network. Only then does virtup record the disk as its own, tag the
//! domain, and replace virt-up's record (and the clear-text passwords in it) with its own metadata.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::ownership::Ledger;
use virtup_core::virt_up_record::VirtUpRecord;
use virtup_core::{keys, known_hosts, DataDir, InstanceMeta, MacAddrs};
use virtup_guest::config_disk::{self, ConfigDiskKind};
use virtup_guest::{sysprep, VirtCustomize};
use virtup_libvirt::{parse_domain_xml, DomainState, Hypervisor, TagKind, VirtupTag};

use crate::context::{Context, LOCK_TIMEOUT, SHORT_LOCK_TIMEOUT};
use crate::identity::GuestIdentity;
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
    pub format: String,
    pub mac: String,
    pub user: String,
    pub hostname: String,
    /// It runs now: adopting shuts it down, and the caller starts it again.
    pub running: bool,
    /// The public half of the RSA key virt-up logs in with, kept authorized, when it is there.
    pub virt_up_key: Option<PathBuf>,
    /// A killed adoption of this instance got as far as tagging the domain: this one finishes it.
    pub resumed: bool,
}

impl Adoption {
    /// What adopting changes, for the caller's confirmation and the docs.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.running {
            lines.push(format!(
                "shut `{}` down (ACPI), then start it again",
                self.name
            ));
        }
        lines.push(format!(
            "install a new SSH host key (made here) and virtup's first boot into its disk `{}`, offline; \
             its machine-id, hostname `{}`, user `{}` and passwords stay",
            self.disk_path, self.hostname, self.user
        ));
        lines.push(format!(
            "authorize virtup's key for `{}`{}",
            self.user,
            if self.virt_up_key.is_some() {
                " beside virt-up's RSA key"
            } else {
                " (virt-up's RSA public key is not there as one `ssh-rsa` line: it is not kept)"
            }
        ));
        lines.push(format!(
            "record volume `{}` in pool `{}` as the instance's own (deleted with it); base `{}` stays virt-up's",
            self.volume, self.pool, self.base
        ));
        lines.push(
            "move the root and user passwords out of its record into 0600 files, and replace the record with virtup's"
                .to_owned(),
        );
        lines
    }
}

/// Whether `name` is waiting to be adopted: virt-up 2.2.0's record, and a domain of that name with no
/// virtup tag (or this data dir's, left by a killed adoption). No side effect; whether it matches
/// virt-up's records is [`check`]'s question.
pub fn pending(ctx: &Context, hv: &Hypervisor, name: &str) -> Result<bool> {
    let Some(meta) = InstanceMeta::read(&ctx.data, name)? else {
        return Ok(false);
    };
    if !meta.is_virt_up_legacy() {
        return Ok(false);
    }
    Ok(match hv.domain(name)? {
        None => false,
        Some(d) => match d.tag {
            None => true,
            Some(tag) => {
                tag.is(TagKind::Instance, name) && crate::owner::proves(&ctx.data, hv, &tag, name)?
            }
        },
    })
}

/// Checks that `name` is an instance virt-up 2.2.0 made, as its records say, on `hv`; no side effect.
pub fn check(ctx: &Context, hv: &Hypervisor, name: &str) -> Result<Adoption> {
    virtup_core::validate::name("NAME", name)?;
    let data = &ctx.data;
    let meta = InstanceMeta::read(data, name)?.ok_or_else(|| {
        anyhow!(
            "no instance named `{name}` in `{}`: there is nothing to adopt",
            ctx.paths.data_dir.display()
        )
    })?;
    if !meta.is_virt_up_legacy() {
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
    let uri = hv.uri().to_owned();
    let dom = hv.domain(name)?.ok_or_else(|| {
        refuse(format!(
            "virt-up's record names it, but `{uri}` has no domain `{name}`"
        ))
    })?;
    let resumed = match &dom.tag {
        None => false,
        Some(tag) if tag.is(TagKind::Instance, name) && crate::owner::proves(data, hv, tag, name)? => true,
        Some(_) => {
            return Err(refuse(format!(
                "domain `{name}` carries a virtup tag that is not this data dir's: it is not the domain virt-up made"
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
    let nic_macs = parsed.macs();
    match nic_macs.as_slice() {
        [mac] if virtup_libvirt::same_mac(mac, recorded_mac) => {}
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
    }
    let disks: Vec<&str> = parsed
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .filter_map(|d| d.path.as_deref())
        .collect();
    if disks != [record.disk.as_str()] {
        return Err(refuse(format!(
            "virt-up recorded its disk as `{}`, but its domain's disks are {}",
            record.disk,
            show_list(&disks)
        )));
    }
    // The disk must be a volume of a pool: only a volume has the key virtup's ledger records.
    let mut found = None;
    for pool in hv.list_pools()?.into_iter().filter(|p| p.active) {
        if let Some(v) = hv
            .list_volumes(&pool.name)?
            .into_iter()
            .find(|v| v.path == record.disk)
        {
            found = Some((pool.name, v));
            break;
        }
    }
    let (pool, volume) = found.ok_or_else(|| {
        refuse(format!(
            "its disk `{}` is in no storage pool of `{uri}`",
            record.disk
        ))
    })?;
    // A linked clone rests on the base virt-up made for its template: that base's disk, as recorded.
    let base_record = VirtUpRecord::read(data, &base)
        .ok()
        .flatten()
        .filter(|r| !r.is_clone());
    let base_disk = base_record.as_ref().map(|r| r.disk.clone());
    if hv.domain(&base)?.is_none() || base_disk.is_none() {
        return Err(refuse(format!(
            "virt-up recorded it as a clone of `{base}`, but that base has no domain on `{uri}` or no virt-up record"
        )));
    }
    if let Some(backing) = &volume.backing {
        if Some(backing) != base_disk.as_ref() {
            return Err(refuse(format!(
                "its disk rests on `{backing}`, not on its base's disk `{}`",
                base_disk.unwrap_or_default()
            )));
        }
    }
    // virt-up's own key pair (`sshkeys/<user>/id_rsa`): its public half stays authorized when it is
    // one RSA public key line, as virt-up's ssh-keygen writes it; nothing else is put into the guest.
    let virt_up_key = record
        .user
        .ssh_identity
        .as_ref()
        .map(|k| public_half(k))
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| {
                let t = t.trim();
                t.starts_with("ssh-rsa ") && !t.contains('\n') && t.len() < 16 * 1024
            })
        });
    let hostname = record.hostname.clone().unwrap_or_else(|| name.to_owned());
    Ok(Adoption {
        name: name.to_owned(),
        uri,
        template: record.template.clone(),
        base,
        pool,
        volume: volume.name.clone(),
        disk_path: record.disk.clone(),
        format: volume.format.clone().unwrap_or_else(|| "qcow2".into()),
        mac: recorded_mac.to_owned(),
        user: record.user.username.clone(),
        hostname,
        running: dom.state != DomainState::ShutOff,
        virt_up_key,
        resumed,
    })
}

/// `<private key>.pub`, as ssh-keygen (and virt-up) name it.
fn public_half(private: &std::path::Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn show_list(items: &[&str]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adopts what [`check`] found, checking it again under the instance's lock. The guest is left
/// shut down; the caller starts it and proves its pinned key (`state: running`).
pub fn apply(
    ctx: &Context,
    hv: &Hypervisor,
    name: &str,
    stop_timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<Adoption> {
    let data = ctx.open_data_dir()?;
    let _lock = data.lock(&format!("instance-{name}"), LOCK_TIMEOUT)?;
    let plan = check(ctx, hv, name)?;
    let record = VirtUpRecord::read(&data, name)?
        .ok_or_else(|| anyhow!("the record of `{name}` vanished"))?;
    if plan.running {
        reporter.changed();
        reporter.stage(&format!("`{name}`: shutting down to adopt it"));
        shut_down(hv, name, stop_timeout)?;
    }
    let owner = data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    reporter.changed();
    reporter.stage(&format!("`{name}`: installing its new host key offline"));
    install_identity(ctx, &data, hv, &plan, &record)?;
    // From here the guest's key is the one generated here: pinned before anything else records it.
    let host_keys = keys::load_host_keys(&data.hostkeys_dir(), name)?
        .ok_or_else(|| anyhow!("the host key of `{name}` vanished"))?;
    known_hosts::set(&data, name, &host_keys.public_openssh, SHORT_LOCK_TIMEOUT)?;
    let info = hv
        .volume_info(&plan.pool, &plan.volume)?
        .filter(|v| v.path == plan.disk_path)
        .ok_or_else(|| anyhow!("volume `{}` of `{name}` vanished", plan.volume))?;
    let mut ledger = Ledger::read(&data, name)?;
    ledger.confirm(&data, &plan.uri, &plan.pool, &plan.volume, &info.key)?;
    ledger.attach(
        &data,
        &plan.uri,
        &plan.pool,
        std::slice::from_ref(&plan.volume),
    )?;
    let user_key = keys::ensure_user_key(&data.sshkeys_dir(), &plan.user)?;
    let mut tag = VirtupTag::new(TagKind::Instance, name);
    tag.template = Some(plan.template.clone());
    tag.owned_volumes = vec![plan.volume.clone()];
    tag.user = Some(plan.user.clone());
    tag.owner = Some(owner);
    hv.set_tag(name, &tag)?;
    let mut meta = InstanceMeta::new(name, &plan.template);
    meta.user = plan.user.clone();
    meta.ssh_private_key_file = Some(user_key.private_path);
    meta.known_hosts_file = Some(data.known_hosts_file());
    meta.host_key_fingerprint = Some(host_keys.fingerprint);
    meta.mac = Some(plan.mac.clone());
    meta.uri = Some(plan.uri.clone());
    meta.pool = Some(plan.pool.clone());
    meta.volumes = vec![plan.volume.clone()];
    meta.state = Some(if plan.running { "running" } else { "stopped" }.to_owned());
    // The last step: virt-up's record, with its clear-text passwords, is replaced atomically.
    meta.write(&data)?;
    reporter.note(&format!("adopted `{name}`"));
    Ok(plan)
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

/// The instance's identity as virtup would give a clone, applied offline by the first-boot script
/// (virt-customize), keeping what the guest already is: machine-id, hostname, user, passwords.
fn install_identity(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    plan: &Adoption,
    record: &VirtUpRecord,
) -> Result<()> {
    if !hv.is_local() {
        bail!(
            "cannot adopt `{}` on `{}`: its disk is changed offline here, and virt-up 2.2.0 works on local hypervisors only",
            plan.name,
            plan.uri
        );
    }
    let user_key = keys::ensure_user_key(&data.sshkeys_dir(), &plan.user)?;
    let host_keys = keys::generate_host_keys(&data.hostkeys_dir(), &plan.name)?;
    let (short, fqdn) = match plan.hostname.split_once('.') {
        Some((short, _)) => (short.to_owned(), Some(plan.hostname.as_str())),
        None => (plan.hostname.clone(), None),
    };
    let secrets_dir = ctx.secrets_dir(&plan.name);
    let mut identity = GuestIdentity {
        hostname: &short,
        fqdn,
        user: &plan.user,
        user_key: &user_key,
        host_keys: &host_keys,
        secrets_dir: &secrets_dir,
        password: record.user.password.as_deref(),
        root_password: record.root.as_ref().and_then(|r| r.password.as_deref()),
        grow_root: false,
        filesystems: &[],
        static_ipv4: None,
        cloud_init: None,
    }
    .build()?;
    if let Some(public) = &plan.virt_up_key {
        let line = std::fs::read_to_string(public).with_context(|| {
            format!("failed to read virt-up's public key `{}`", public.display())
        })?;
        identity.authorized_keys.push(line.trim().to_owned());
    }
    let stage_dir = data.scratch()?;
    let staged = config_disk::stage(&identity, ConfigDiskKind::Virtup, stage_dir.path())?;
    staged.keep_guest_machine_id()?;
    let mut customize = VirtCustomize::new(&plan.disk_path);
    customize.format = Some(plan.format.clone());
    customize.ops = sysprep::identity_ops(&staged)?;
    let mut cmd = customize.cmd()?;
    let appliance =
        crate::appliance_virt_type(hv, || Ok(crate::virt_choice::choose(hv, data)?.virt_type))?;
    crate::appliance_env(&mut cmd, hv, appliance);
    crate::run_tool(
        &cmd,
        &format!(
            "virt-customize could not install the new identity into `{}`",
            plan.disk_path
        ),
    )
}
