//! The `virtup_instance` module: resolve options, observe libvirt and the data dir, plan, apply.

use std::collections::BTreeSet;
use std::net::IpAddr;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::instance::{
    plan, CloneKind, Customize, InstanceDesired, InstanceObserved, InstanceState, ObservedInstance,
    Plan, PlanError, Step,
};
use virtup_core::ownership::{self, Ledger, Proof};
use virtup_core::{keys, known_hosts, validate, AddressSource, DataDir, InstanceMeta, LockGuard};
use virtup_guest::config_disk::{self, ConfigDiskKind};
use virtup_guest::libguestfs;
use virtup_guest::{sysprep, Cmd, VirtSysprep};
use virtup_libvirt::{
    parse_domain_xml, DiskBus, DiskDevice, DiskSpec, DomainSpec, DomainState, Graphics, Hypervisor,
    ImageFormat, NicSpec, TagKind, VirtType, VirtupTag, VolumeInfo, VolumeSpec,
};
use virtup_ops::identity::{upload_config_disk, GuestIdentity};
use virtup_ops::reach;

use crate::context::{self, Context, Waited, LOCK_TIMEOUT, SHORT_LOCK_TIMEOUT};
use crate::module::ModuleReporter;
use crate::template::current_disk;

pub struct Request {
    pub desired: InstanceDesired,
    pub uri: String,
    pub pool: String,
    pub format: String,
    pub network: String,
    pub graphics: String,
    pub user: String,
    pub hostname: String,
    pub fqdn: Option<String>,
    pub size: Option<u64>,
    pub sources: Vec<AddressSource>,
    pub wait_timeout: Duration,
    pub inventory: bool,
    /// Extra virt-sysprep arguments (option, the template's section, `[common]`), for the sysprep path.
    pub virt_sysprep_args: Vec<String>,
    /// virt-up's `instance-playbook` of the config, found; returned for whoever runs it after a create.
    pub playbook: Option<std::path::PathBuf>,
    password: Option<String>,
    root_password: Option<String>,
}

impl Request {
    fn disk_volume(&self) -> String {
        format!("{}.{}", self.desired.name, self.format)
    }
    fn config_volume(&self) -> String {
        virtup_core::vocab::config_disk_volume(&self.desired.name)
    }
    /// The volumes a create makes, under these names, in the instance's pool.
    fn volume_names(&self) -> Vec<String> {
        let mut names = vec![self.disk_volume()];
        if self.desired.customize == Customize::Auto {
            names.push(self.config_volume());
        }
        names
    }
}

pub fn resolve(args: &ModuleArgs, ctx: &Context) -> Result<Request> {
    let name = args.str("name").unwrap_or_default().to_owned();
    let template = args.str("template").unwrap_or(&name).to_owned();
    let state = InstanceState::parse(args.str("state").unwrap_or("running"))
        .ok_or_else(|| anyhow!("invalid value for `state`"))?;
    if state == InstanceState::Absent {
        // Removing needs no hostname: leftovers of names earlier versions accepted can still go.
        validate::removable_instance_name("name", &name)?;
        validate::removable_template_name("template", &template)?;
    } else {
        // The name becomes the hostname: refused here, not after the disk and keys are made.
        validate::instance_name("name", &name)?;
        validate::template_name("template", &template)?;
    }
    let clone = match args.str("clone") {
        Some("full") => CloneKind::Full,
        _ => CloneKind::Linked,
    };
    let module = context::module_layer(args)?;
    let base = ctx
        .config
        .resolve_template(&template)
        .unwrap_or_else(|| ctx.config.resolve_common());
    let fields = base.overlay(&module);
    context::validate_fields(&fields)?;
    let settings = fields.settings();
    let virt_sysprep_args = settings.virt_sysprep_args.clone();
    let customize = customize_path(args.str("customize"), &virt_sysprep_args);
    let playbook = match state {
        InstanceState::Absent => None,
        _ => crate::template::config_playbook(
            ctx,
            "instance-playbook",
            &template,
            fields.instance_playbook.as_deref(),
            |f| f.instance_playbook.is_some(),
        )?
        .map(|(path, _)| path),
    };
    let size = fields
        .size
        .as_deref()
        .map(|s| validate::parse_size("size", s))
        .transpose()?;
    if let (Some(domain), false) = (&fields.dns_domain, state == InstanceState::Absent) {
        validate::fqdn("dns_domain", &name, domain)?;
    }
    let fqdn = fields.dns_domain.as_ref().map(|d| format!("{name}.{d}"));
    Ok(Request {
        uri: context::uri(&fields, &ctx.paths),
        pool: settings.pool,
        format: settings.image_format.as_str().to_owned(),
        network: settings.network,
        graphics: {
            let g = settings.graphics;
            // The option is checked against these choices by its spec; a config file is not.
            if !crate::specs::INSTANCE_GRAPHICS.contains(&g.as_str()) {
                bail!(
                    "invalid value for `graphics`: {} (from the config); choose from {}",
                    validate::Shown(&g),
                    crate::specs::INSTANCE_GRAPHICS.join(", ")
                );
            }
            g
        },
        user: settings.user,
        hostname: name.clone(),
        fqdn,
        size,
        sources: settings.address_source,
        wait_timeout: context::wait_timeout(args)?,
        inventory: args.bool("inventory").unwrap_or(true),
        virt_sysprep_args,
        playbook,
        password: args.str("password").map(str::to_owned),
        root_password: args.str("root_password").map(str::to_owned),
        desired: InstanceDesired {
            name,
            template,
            state,
            clone,
            customize,
            memory_mib: settings.memory_mib,
            vcpus: settings.vcpus,
            autostart: args.bool("autostart"),
        },
    })
}

/// How a clone gets its identity. As in virt-up, `virt-sysprep-args` are arguments of the
/// virt-sysprep run that prepares each clone: when any are given (option or config), `auto` takes
/// the sysprep path so that they apply; otherwise `auto` is the config disk, with no virt-sysprep.
fn customize_path(option: Option<&str>, virt_sysprep_args: &[String]) -> Customize {
    match option {
        Some("sysprep") => Customize::Sysprep,
        _ if !virt_sysprep_args.is_empty() => Customize::Sysprep,
        _ => Customize::Auto,
    }
}

/// The template's current disk, when creating needs it.
struct TemplateDisk {
    generation: u32,
    volume: String,
    path: String,
}

pub struct Observation {
    model: InstanceObserved,
    template: Option<TemplateDisk>,
    meta: Option<InstanceMeta>,
    mac: Option<String>,
}

fn observe(hv: &Hypervisor, data: &DataDir, req: &Request) -> Result<Observation> {
    let name = &req.desired.name;
    let mut model = InstanceObserved::default();
    let mut mac = None;
    let ledger = Ledger::read(data, name)?;
    // A damaged owner id fails the run here, in check mode too: the real run needs it.
    data.owner_id()?;
    let proof = |v: &VolumeInfo| {
        ledger.proof(
            &req.uri,
            &req.pool,
            ownership::Observed {
                name: &v.name,
                key: &v.key,
                backing: v.backing.as_deref(),
            },
        )
    };
    if let Some(dom) = hv.domain(name)? {
        // A tag proves a domain to the data dir that wrote it, not to every data dir on the host.
        let ours = match &dom.tag {
            Some(tag) => {
                tag.is(TagKind::Instance, name) && virtup_ops::owner::proves(data, hv, tag, name)?
            }
            None => false,
        };
        match dom.tag {
            Some(tag) if ours => {
                let parsed = parse_domain_xml(&hv.inactive_xml(name)?)?;
                mac = parsed.macs().first().map(|m| m.to_string());
                // The tag was written after its volumes were made; a listed volume is deleted with
                // the domain only while it is still the one the domain uses (or the ledger's).
                let disks: BTreeSet<&str> = parsed
                    .disks
                    .iter()
                    .filter_map(|d| d.path.as_deref())
                    .collect();
                let mut owned_volumes = Vec::new();
                if hv.pool(&req.pool)?.is_some() {
                    for v in &tag.owned_volumes {
                        if let Some(info) = hv.volume_info(&req.pool, v)? {
                            if disks.contains(info.path.as_str()) || proof(&info) != Proof::Foreign
                            {
                                owned_volumes.push(v.clone());
                            }
                        }
                    }
                }
                model.domain = Some(ObservedInstance {
                    running: dom.state != DomainState::ShutOff,
                    memory_mib: parsed.memory_mib,
                    vcpus: parsed.vcpus,
                    autostart: dom.autostart,
                    template: tag.template.unwrap_or_default(),
                    generation: tag.generation,
                    owned_volumes,
                });
            }
            _ => model.foreign_domain = true,
        }
    }
    // A damaged metadata file is reported, never trusted.
    let meta = InstanceMeta::read(data, name)?;
    // A ledger without a domain (a delete killed after its volumes went) is a record to forget too.
    model.has_metadata = meta.is_some() || (model.domain.is_none() && !ledger.volumes.is_empty());
    let mut template = None;
    if req.desired.state != InstanceState::Absent && model.domain.is_none() {
        if hv.pool(&req.pool)?.is_none() {
            bail!(
                "invalid value for `pool`: storage pool `{}` does not exist on `{}`",
                req.pool,
                req.uri
            );
        }
        hv.refresh_pool(&req.pool)?;
        if let Some(current) = current_disk(hv, data, &req.pool, &req.desired.template)? {
            model.template_generation = Some(current.generation);
            model.template_running = current.running;
            template = Some(TemplateDisk {
                generation: current.generation,
                volume: current.volume,
                path: current.path,
            });
        }
    }
    if model.domain.is_none() && hv.pool(&req.pool)?.is_some() {
        // Volumes the ledger proves a killed run of this instance made before it could define the
        // domain are leftovers; a volume under a name the create needs that virtup cannot prove it
        // made is in the way, and stays.
        let wanted = req.volume_names();
        let absent = req.desired.state == InstanceState::Absent;
        for v in hv.list_volumes(&req.pool)? {
            match proof(&v) {
                Proof::Created if !absent && ledger.is_attached(&req.uri, &req.pool, &v.name) => {
                    model.detached_volumes.push(v.name)
                }
                Proof::Created | Proof::Pending => model.leftover_volumes.push(v.name),
                Proof::Foreign if wanted.contains(&v.name) => model.foreign_volumes.push(v.name),
                Proof::Foreign => {}
            }
        }
    }
    Ok(Observation {
        model,
        template,
        meta,
        mac,
    })
}

/// Runs the module: plan without writing anything first (bad input and refusals fail before any
/// side effect), then, when there is work, plan again under the instance's lock and apply.
pub fn run(args: &ModuleArgs) -> Result<ModuleResult> {
    let ctx = Context::load()?;
    // The driver still branches on the mode below; virtup_ops::host shows the shape it is moving to.
    let check = crate::module::mode(args) == virtup_ops::Mode::Check;
    if !check {
        ctx.tidy()?;
    }
    let req = resolve(args, &ctx)?;
    let hv = Hypervisor::connect(&req.uri)?;
    let mut obs = observe(&hv, &ctx.data, &req)?;
    let mut recheck = false;
    let mut the_plan = match plan(&req.desired, &obs.model) {
        // In a check run of a whole site the template task only pretended to build the template, so a
        // missing template is the change this run would make, not an error.
        Err(PlanError::NoTemplate(t)) if check => {
            return Ok(ModuleResult::new(true)
                .with_msg(format!("clone from template `{t}` once it is built"))
                .with_warning(format!(
                    "template `{t}` does not exist yet; a real run fails unless it is built first"
                )));
        }
        // Volumes in the way may be a concurrent run's creation, seen between its create and its
        // define: a real run decides under the instance's lock, where that run has finished.
        Err(PlanError::ForeignVolumes { .. } | PlanError::DetachedVolumes { .. }) if !check => {
            recheck = true;
            Plan::default()
        }
        other => other?,
    };
    let running_wanted = req.desired.state == InstanceState::Running;
    let mut data = ctx.data.clone();
    let mut lock = None;
    let mut template_lock = None;
    let mut waited = Waited::default();
    while !check && (!the_plan.is_empty() || running_wanted || recheck) {
        let cloning = obs.model.domain.is_none() && req.desired.state != InstanceState::Absent;
        if cloning {
            // Never clone a template another run is still customizing: its disk is about to change.
            waited.hold += crate::template::wait_for_hold(&ctx.data, &req.desired.template, None)?;
        }
        data = ctx.open_data_dir()?;
        let started = Instant::now();
        lock = Some(data.lock(&format!("instance-{}", req.desired.name), LOCK_TIMEOUT)?);
        let template_domain = virtup_core::template::domain_name(&req.desired.template);
        if cloning {
            // Held from choosing the template's generation until the clone is defined: a concurrent
            // build deletes the generations no domain uses yet, which would include this clone's.
            template_lock = Some(data.lock(&format!("template-{template_domain}"), LOCK_TIMEOUT)?);
        }
        waited.lock += started.elapsed();
        // A customization may have begun between the wait and the lock: wait for it again.
        if cloning
            && matches!(
                virtup_core::hold::state(&data, &template_domain, None)?,
                virtup_core::hold::HoldState::Live(_)
            )
        {
            template_lock = None;
            lock = None;
            continue;
        }
        obs = observe(&hv, &data, &req)?;
        the_plan = plan(&req.desired, &obs.model)?;
        if obs.model.domain.is_some() {
            // Another run made it while we waited: nothing is cloned, the template is not ours to hold.
            template_lock = None;
        }
        break;
    }
    let mut result = ModuleResult::new(!the_plan.is_empty())
        .with_msg(the_plan.to_string())
        .with("waited", waited.to_json());
    if obs.model.foreign_domain && req.desired.state == InstanceState::Absent {
        // `absent` holds for virtup, but the user may think the domain was theirs: say why it stays.
        result = result.with_warning(format!(
            "domain `{}` exists but was not made by virtup with this data dir; it is left alone",
            req.desired.name
        ));
    }
    if the_plan.needs_reboot_warning(&obs.model) {
        result = result.with_warning(format!(
            "memory and vCPUs of `{}` change at its next boot; it is running now",
            req.desired.name
        ));
    }
    if args.diff() {
        result = result.with_diff(diff(&req, &obs.model));
    }
    if check {
        if obs.model.domain.is_some() && req.desired.state != InstanceState::Absent {
            let meta = InstanceMeta::read(&data, &req.desired.name)?;
            return Ok(result.with("instance", describe(&hv, &req, meta.as_ref(), None)?));
        }
        return Ok(result);
    }
    let address = if lock.is_some() {
        apply(&ctx, &data, &hv, &req, &obs, &the_plan, &mut template_lock)?
    } else {
        None
    };
    drop(lock);
    if req.desired.state == InstanceState::Absent {
        return Ok(result);
    }
    let meta = InstanceMeta::read(&data, &req.desired.name)?;
    let mut instance = describe(&hv, &req, meta.as_ref(), address)?;
    // virt-up runs the `instance-playbook` on an instance it has just cloned: say so to whoever runs it.
    instance["created"] = json!(the_plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Create { .. })));
    instance["playbook"] = json!(req.playbook);
    Ok(result.with("instance", instance))
}

fn state_word(d: Option<&ObservedInstance>) -> &'static str {
    match d {
        None => "absent",
        Some(d) if d.running => "running",
        Some(_) => "present",
    }
}

fn diff(req: &Request, before: &InstanceObserved) -> Diff {
    let b = match &before.domain {
        None => json!({"state": "absent"}),
        Some(d) => json!({"state": state_word(Some(d)), "memory": d.memory_mib, "vcpus": d.vcpus,
                          "autostart": d.autostart, "template": d.template, "generation": d.generation}),
    };
    let d = &req.desired;
    let a = match d.state {
        InstanceState::Absent => json!({"state": "absent"}),
        s => {
            let state = match (s, &before.domain) {
                (InstanceState::Running, _) => "running",
                (InstanceState::Stopped, _) => "present",
                (_, Some(dom)) => state_word(Some(dom)),
                (_, None) => "present",
            };
            let autostart = d
                .autostart
                .or(before.domain.as_ref().map(|x| x.autostart))
                .unwrap_or(false);
            let generation = before
                .domain
                .as_ref()
                .map(|x| x.generation)
                .or(before.template_generation);
            json!({"state": state, "memory": d.memory_mib, "vcpus": d.vcpus, "autostart": autostart,
                   "template": d.template, "generation": generation})
        }
    };
    Diff::new(b, a).with_headers(
        format!("instance {} (before)", d.name),
        format!("instance {} (after)", d.name),
    )
}

fn describe(
    hv: &Hypervisor,
    req: &Request,
    meta: Option<&InstanceMeta>,
    address: Option<IpAddr>,
) -> Result<Value> {
    let dom = hv.domain(&req.desired.name)?;
    let state = match &dom {
        None => "absent",
        Some(d) if d.state == DomainState::ShutOff => "present",
        Some(_) => "running",
    };
    let disk = hv.volume_path(&req.pool, &req.disk_volume())?;
    Ok(json!({
        "name": req.desired.name,
        "address": address.map(|a| a.to_string()).or_else(|| meta.and_then(|m| m.address.clone())),
        "user": meta.map(|m| m.user.clone()).unwrap_or_else(|| req.user.clone()),
        "ssh_private_key_file": meta.and_then(|m| m.ssh_private_key_file.clone()),
        "known_hosts_file": meta.and_then(|m| m.known_hosts_file.clone()),
        // The pinned key is stored under the instance's name: ssh needs `-o HostKeyAlias=<this>`.
        "host_key_alias": req.desired.name,
        "host_key_fingerprint": meta.and_then(|m| m.host_key_fingerprint.clone()),
        "mac": meta.and_then(|m| m.mac.clone()),
        "disk": disk,
        "template": req.desired.template,
        "generation": meta.map(|m| m.generation),
        "state": state,
    }))
}

fn apply(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    plan: &Plan,
    template_lock: &mut Option<LockGuard>,
) -> Result<Option<IpAddr>> {
    let name = &req.desired.name;
    let mut address = None;
    let mut started = false;
    let deleting = plan.steps.iter().any(|s| matches!(s, Step::Delete { .. }));
    for step in &plan.steps {
        crate::cli::progress::stage(&format!("`{name}`: {step}"));
        // Every step changes something: a failure from here on reports `changed: true`.
        virtup_ansible::mark_changed();
        match step {
            Step::DeleteLeftovers(volumes) => delete_owned(data, hv, req, volumes)?,
            Step::Create { .. } => {
                create(ctx, data, hv, req, obs)?;
                // Defined: the clone now counts as a dependent, so the template may change again.
                template_lock.take();
            }
            Step::Resize { memory_mib, vcpus } => {
                hv.update_memory_vcpus(name, *memory_mib, *vcpus)?
            }
            Step::SetAutostart(on) => hv.set_autostart(name, *on)?,
            Step::Start => {
                hv.start(name)?;
                started = true;
            }
            // A guest whose disk is deleted next gains nothing from a graceful shutdown.
            Step::Stop if deleting => hv.destroy(name)?,
            Step::Stop => virtup_ops::power::stop(hv, name, req.wait_timeout)?,
            Step::Delete { volumes } => {
                // Recorded before the domain goes (volumes of older versions have no record yet):
                // a run killed after the undefine leaves volumes the next `absent` can prove.
                let mut ledger = Ledger::read(data, name)?;
                for v in volumes {
                    if let Some(info) = hv.volume_info(&req.pool, v)? {
                        ledger.confirm(data, &req.uri, &req.pool, v, &info.key)?;
                    }
                }
                ledger.attach(data, &req.uri, &req.pool, volumes)?;
                hv.undefine(name)?;
                delete_owned(data, hv, req, volumes)?;
                forget(ctx, data, name)?;
            }
            Step::Forget => forget(ctx, data, name)?,
        }
    }
    let running_wanted = req.desired.state == InstanceState::Running;
    if running_wanted {
        let meta = InstanceMeta::read(data, name)?
            .ok_or_else(|| anyhow!("metadata of `{name}` vanished"))?;
        // A fresh boot waits the full bound; an instance that was already up gets its cached address
        // re-validated, and a full wait only if that address no longer answers with the pinned key.
        let cached = meta.address.as_deref().and_then(|a| a.parse().ok());
        // The proof logs in as the instance's user with the key its metadata names.
        let identity = meta
            .ssh_private_key_file
            .clone()
            .unwrap_or_else(|| data.user_key_path(&meta.user));
        let login = reach::Login {
            alias: name,
            user: &meta.user,
            identity: &identity,
        };
        let ip = match cached {
            Some(ip) if !started && reach::ssh_answers(data, &login, ip).is_ok() => ip,
            _ => reach::wait_for_ssh(
                hv,
                data,
                &reach::Target {
                    domain: name,
                    login,
                    mac: meta.mac.as_deref(),
                    sources: &req.sources,
                    dns_name: req.fqdn.as_deref().unwrap_or(name),
                    timeout: req.wait_timeout,
                },
                &ModuleReporter,
            )?,
        };
        if meta.address.as_deref() != Some(ip.to_string().as_str()) {
            let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
            let mut meta = meta;
            meta.address = Some(ip.to_string());
            meta.write(data)?;
        }
        address = Some(ip);
    }
    if let Some(mut meta) = InstanceMeta::read(data, name)? {
        let state = match req.desired.state {
            InstanceState::Running => "running",
            InstanceState::Present => "present",
            InstanceState::Stopped => "stopped",
            InstanceState::Absent => "absent",
        };
        if meta.state.as_deref() != Some(state) {
            meta.state = Some(state.into());
            meta.write(data)?;
        }
    }
    Ok(address)
}

/// Deletes volumes observe proved this instance's, and their ledger entries with them.
fn delete_owned(data: &DataDir, hv: &Hypervisor, req: &Request, volumes: &[String]) -> Result<()> {
    let mut ledger = Ledger::read(data, &req.desired.name)?;
    for v in volumes {
        hv.delete_volume(&req.pool, v)?;
        ledger.forget(data, &req.uri, &req.pool, v)?;
    }
    Ok(())
}

/// Removes virtup's records of an instance; its MAC stays reserved for a re-create.
fn forget(ctx: &Context, data: &DataDir, name: &str) -> Result<()> {
    known_hosts::remove(data, name, SHORT_LOCK_TIMEOUT)?;
    keys::remove_host_keys(&data.hostkeys_dir(), name)?;
    match std::fs::remove_dir_all(ctx.secrets_dir(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    InstanceMeta::remove(data, name)?;
    // Runs before this one deleted every volume the ledger could prove; what it still lists is gone.
    Ledger::discard(data, name)?;
    Ok(())
}

fn lib_format(format: &str) -> ImageFormat {
    ImageFormat::from_name(format).unwrap_or(ImageFormat::Qcow2)
}

fn create(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
) -> Result<()> {
    let name = &req.desired.name;
    let tpl = obs
        .template
        .as_ref()
        .ok_or_else(|| anyhow!("template `{}` vanished", req.desired.template))?;
    // Made before the first volume, so that failing to make it leaves nothing behind.
    let owner = data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    let started = Instant::now();
    let mac = match &obs.mac {
        Some(m) => m.clone(),
        None => virtup_core::ensure_mac(data, name, &BTreeSet::new(), SHORT_LOCK_TIMEOUT)?,
    };
    let user_key = keys::ensure_user_key(&data.sshkeys_dir(), &req.user)?;
    let host_keys = keys::generate_host_keys(&data.hostkeys_dir(), name)?;
    let disk_volume = req.disk_volume();
    let config_volume = req.config_volume();
    let owned = req.volume_names();
    let mut ledger = Ledger::read(data, name)?;
    let existing = hv
        .list_volumes(&req.pool)?
        .into_iter()
        .map(|v| v.name)
        .collect();
    ledger.prune_pending(data, &req.uri, &req.pool, &existing)?;
    let mut meta = obs
        .meta
        .clone()
        .unwrap_or_else(|| InstanceMeta::new(name, &req.desired.template));
    meta.template = req.desired.template.clone();
    meta.generation = tpl.generation;
    meta.user = req.user.clone();
    meta.ssh_private_key_file = Some(user_key.private_path.clone());
    meta.known_hosts_file = Some(data.known_hosts_file());
    meta.host_key_fingerprint = Some(host_keys.fingerprint.clone());
    meta.mac = Some(mac.clone());
    meta.address = None;
    meta.uri = Some(req.uri.clone());
    meta.pool = Some(req.pool.clone());
    // Filled in once the volumes exist: what a record lists, virtup made.
    meta.volumes = Vec::new();
    meta.inventory = req.inventory;
    meta.state = Some("creating".into());
    meta.write(data)?;

    let format = lib_format(&req.format);
    let template_info = hv
        .volume_info(&req.pool, &tpl.volume)?
        .ok_or_else(|| anyhow!("template volume `{}` vanished", tpl.volume))?;
    let capacity = req.size.unwrap_or(0).max(template_info.capacity_bytes);
    let template_format = lib_format(template_info.format.as_deref().unwrap_or("qcow2"));
    let linked = matches!(
        (req.desired.clone, format),
        (CloneKind::Linked, ImageFormat::Qcow2)
    );
    let disk = create_owned(
        data,
        &mut ledger,
        req,
        &disk_volume,
        linked.then_some(tpl.path.as_str()),
        || {
            if linked {
                let mut spec = VolumeSpec::new(&disk_volume, capacity, ImageFormat::Qcow2);
                spec.backing = Some((tpl.path.clone(), template_format));
                Ok(hv.create_volume(&req.pool, &spec)?)
            } else {
                // A raw disk cannot be an overlay: raw clones are full copies, as in virt-up.
                Ok(hv.clone_volume(
                    &req.pool,
                    &tpl.volume,
                    &VolumeSpec::new(&disk_volume, capacity, format),
                )?)
            }
        },
    )?;
    if !linked && capacity > disk.capacity_bytes {
        hv.resize_volume(&req.pool, &disk_volume, capacity)?;
    }
    let secrets_dir = ctx.secrets_dir(name);
    let identity = GuestIdentity {
        hostname: &req.hostname,
        fqdn: req.fqdn.as_deref(),
        user: &req.user,
        user_key: &user_key,
        host_keys: &host_keys,
        secrets_dir: &secrets_dir,
        password: req.password.as_deref(),
        root_password: req.root_password.as_deref(),
    }
    .build()?;
    let mut disks = vec![DiskSpec::disk(&disk.path, format)];
    match req.desired.customize {
        Customize::Auto => {
            let uploaded = create_owned(data, &mut ledger, req, &config_volume, None, || {
                upload_config_disk(hv, data, &req.pool, &config_volume, &identity)
            })?;
            // A read-only raw virtio disk: kernels with virtio drivers only see no IDE/SATA cdrom.
            disks.push(DiskSpec {
                path: uploaded.path,
                format: ImageFormat::Raw,
                device: DiskDevice::Disk,
                bus: DiskBus::Virtio,
                readonly: true,
            });
        }
        Customize::Sysprep => {
            let tmp = data.root().join("tmp");
            virtup_core::datadir::ensure_private_dir(&tmp)?;
            let staged = config_disk::stage(&identity, ConfigDiskKind::Virtup, &tmp)?;
            let mut sp = VirtSysprep::new(&disk.path);
            sp.ops = sysprep::identity_ops(&staged)?;
            sp.extra_args = req.virt_sysprep_args.clone();
            let mut cmd = sp.cmd()?;
            libguestfs::apply_env(&mut cmd, accel_from(hv)?);
            run_tool(&cmd, "virt-sysprep could not prepare the clone")?;
        }
    }
    let virt_type = virtup_libvirt::choose_virt_type(hv)?.virt_type;
    let mut spec = DomainSpec::new(name, req.desired.memory_mib, req.desired.vcpus, virt_type);
    spec.disks = disks;
    spec.nic = Some(NicSpec {
        network: req.network.clone(),
        mac: Some(mac.clone()),
    });
    spec.graphics = match req.graphics.as_str() {
        "vnc" => Graphics::Vnc,
        "spice" => Graphics::Spice,
        // `resolve` admits nothing else.
        _ => Graphics::None,
    };
    let mut tag = VirtupTag::new(TagKind::Instance, name);
    tag.template = Some(req.desired.template.clone());
    tag.generation = tpl.generation;
    tag.owned_volumes = owned.clone();
    tag.user = Some(req.user.clone());
    tag.owner = Some(owner);
    spec.metadata = Some(tag);
    // Pinned before the define: once the domain exists a later run finds nothing to do, so a run
    // killed in between must not leave an instance whose key nobody trusts. (Killed before the
    // define, the line is replaced when the next run makes the instance with new keys.)
    known_hosts::set(data, name, &host_keys.public_openssh, SHORT_LOCK_TIMEOUT)?;
    hv.define(&spec)?;
    ledger.attach(data, &req.uri, &req.pool, &owned)?;
    meta.state = Some("present".into());
    meta.volumes = req.volume_names();
    meta.write(data)?;
    crate::cli::progress::note(&format!(
        "virtup_instance: created `{name}` in {:.3}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Creates a volume the instance owns: recorded as pending (the name was seen free under the
/// instance's lock), created, then recorded with its key. A failed create leaves no record, so a
/// foreign volume that took the name meanwhile is never claimed.
fn create_owned(
    data: &DataDir,
    ledger: &mut Ledger,
    req: &Request,
    volume: &str,
    backing: Option<&str>,
    create: impl FnOnce() -> Result<VolumeInfo>,
) -> Result<VolumeInfo> {
    ledger.intend(data, &req.uri, &req.pool, volume, backing)?;
    match create() {
        Ok(info) => {
            ledger.confirm(data, &req.uri, &req.pool, volume, &info.key)?;
            Ok(info)
        }
        Err(e) => {
            ledger.forget(data, &req.uri, &req.pool, volume)?;
            Err(e)
        }
    }
}

fn accel_from(hv: &Hypervisor) -> Result<VirtType> {
    Ok(virtup_libvirt::choose_virt_type(hv)?.virt_type)
}

fn run_tool(cmd: &Cmd, what: &str) -> Result<()> {
    cmd.output().map(drop).with_context(|| what.to_owned())
}

#[cfg(test)]
mod customize_tests {
    use super::*;

    /// `virt-sysprep-args` are never accepted and ignored: given, the clone is prepared by virt-sysprep.
    #[test]
    fn virt_sysprep_args_take_the_sysprep_path() {
        let args = vec!["--selinux-relabel".to_owned()];
        assert_eq!(customize_path(None, &[]), Customize::Auto);
        assert_eq!(customize_path(Some("auto"), &[]), Customize::Auto);
        assert_eq!(customize_path(Some("sysprep"), &[]), Customize::Sysprep);
        assert_eq!(customize_path(Some("auto"), &args), Customize::Sysprep);
        assert_eq!(customize_path(None, &args), Customize::Sysprep);
    }
}
