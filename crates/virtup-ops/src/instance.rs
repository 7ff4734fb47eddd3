//! The instance operation: resolve options into a request, observe libvirt and the data dir, plan (`virtup_core::instance`), and apply in apply mode.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use virtup_core::cloud_init::CloudInit;
use virtup_core::data_disk::{self, DataDisk, DataDiskBus};
use virtup_core::instance::{
    plan, CloneKind, Customize, InstanceDesired, InstanceObserved, InstanceState, ObservedInstance,
    Plan, PlanError, Step,
};
use virtup_core::nic::{self, DirectMode, MadeNic, Nic, NicDevice, NicModel};
use virtup_core::ownership::{self, Ledger, Proof};
use virtup_core::{
    keys, known_hosts, validate, AddressSource, DataDir, Fields, InstanceMeta, LockGuard,
};
use virtup_guest::config_disk::{self, ConfigDiskKind};
use virtup_guest::{sysprep, VirtSysprep};
use virtup_libvirt::{
    parse_domain_xml, DiskBus, DiskDevice, DiskSpec, DomainSpec, DomainState, Graphics, Hypervisor,
    ImageFormat, NicSpec, TagKind, VirtType, VirtupTag, VolumeInfo, VolumeSpec,
};

use crate::context::{self, Context, Waited, LOCK_TIMEOUT, SHORT_LOCK_TIMEOUT};
use crate::identity::{upload_config_disk, GuestIdentity};
use crate::template::{current_disk, wait_for_hold};
use crate::volume_copy::VolumeCopy;
pub use crate::warm::Boot;
use crate::warm::WarmStart;
use crate::{reach, run_tool, Mode, Reporter};

#[cfg(test)]
mod tests;

/// How long a resumed guest's agent has to answer before its clock is left as it is (with a
/// warning): it answers within a second or two of a resume when it runs at all.
const CLOCK_WAIT: Duration = Duration::from_secs(30);

/// Graphics an instance's domain can have; virt-up's `--graphics` offers the same.
pub const GRAPHICS: &[&str] = &["none", "vnc", "spice"];

/// What a caller asks of one instance, before the config and the defaults: the module's options, or
/// `virt-up`'s flags. (No `Debug`: it carries passwords.)
#[derive(Clone)]
pub struct InstanceOptions {
    pub name: String,
    /// The template to clone; the instance's own name when unset (as in virt-up).
    pub template: Option<String>,
    pub state: InstanceState,
    pub clone: CloneKind,
    /// `Auto` takes virt-sysprep only when `virt_sysprep_args` are given; `Sysprep` always does.
    pub customize: Customize,
    /// The options that are also config keys (pool, memory, user, …): the top config layer.
    pub layer: Fields,
    pub wait_timeout: Duration,
    /// Listed by the inventory.
    pub inventory: bool,
    /// `None` leaves autostart as it is.
    pub autostart: Option<bool>,
    /// Adopt the instance first when virt-up 2.2.0 made it (`adopt`): done by the caller with
    /// [`crate::adopt`] before it converges, since the adoption is no step of this plan.
    pub adopt: bool,
    pub password: Option<String>,
    pub root_password: Option<String>,
    /// How a fresh clone first runs: resumed from its template's warm image, or booted.
    pub boot: Boot,
    /// A fixed address: a DHCP host reservation on the instance's network.
    pub address: Option<Ipv4Addr>,
    /// Data disks, made with the instance; `None` leaves an existing instance's as they are.
    pub disks: Option<Vec<DataDisk>>,
    /// `address` is also configured inside the guest (`address_mode: static`), not only reserved.
    pub static_address: bool,
    /// The NICs, the first on the libvirt network virtup reaches the guest through; `None` gives it
    /// one NIC on `network`.
    pub nics: Option<Vec<NicDevice>>,
    /// The user's cloud-init data, given to a new instance on a NoCloud seed disk (`cloud_init`).
    pub cloud_init: Option<CloudInit>,
    /// The inventory groups it is declared in (`groups`); `None` leaves the recorded ones.
    pub groups: Option<Vec<String>>,
}

impl InstanceOptions {
    /// The options of a task that names only `name` and `state`: every other one at its default.
    pub fn new(name: &str, state: InstanceState) -> InstanceOptions {
        InstanceOptions {
            name: name.to_owned(),
            template: None,
            state,
            clone: CloneKind::Linked,
            customize: Customize::Auto,
            layer: Fields::default(),
            wait_timeout: Duration::from_secs(context::DEFAULT_WAIT_TIMEOUT_SECS),
            inventory: true,
            autostart: None,
            adopt: false,
            password: None,
            root_password: None,
            boot: Boot::Auto,
            address: None,
            disks: None,
            static_address: false,
            nics: None,
            cloud_init: None,
            groups: None,
        }
    }

    /// The options that address an existing instance where it was made: its template, URI and pool.
    pub fn for_existing(meta: &InstanceMeta, state: InstanceState) -> InstanceOptions {
        let mut options = InstanceOptions::new(&meta.name, state);
        if !meta.template.is_empty() {
            options.template = Some(meta.template.clone());
        }
        options.layer.uri = meta.uri.clone();
        options.layer.pool = meta.pool.clone();
        options
    }
}

/// An instance request, resolved and validated against the config; making it has had no side effect.
pub struct Request {
    pub desired: InstanceDesired,
    pub uri: String,
    /// Where an instance whose metadata names no hypervisor lives ([`context::default_uri`]).
    pub default_uri: String,
    pub pool: String,
    pub format: ImageFormat,
    pub network: String,
    pub graphics: Graphics,
    pub user: String,
    pub hostname: String,
    pub fqdn: Option<String>,
    pub size: Option<u64>,
    /// `size` is the task's own (option or flag), not a config file's: smaller than the template's
    /// disk, it is refused; a config's applies to every template, and is only a minimum.
    pub size_asked: bool,
    pub sources: Vec<AddressSource>,
    pub wait_timeout: Duration,
    pub inventory: bool,
    /// Extra virt-sysprep arguments (option, the template's section, `[common]`), for the sysprep path.
    pub virt_sysprep_args: Vec<String>,
    /// virt-up's `instance-playbook` of the config, found; returned for whoever runs it after a create.
    pub playbook: Option<PathBuf>,
    password: Option<String>,
    root_password: Option<String>,
    pub boot: Boot,
    /// The `disks` asked for; `None` when the task gives none.
    pub disks: Option<Vec<DataDisk>>,
    /// `address_mode: static`.
    pub static_address: bool,
    /// The `nics` asked for (the first is `network`); `None` when the task gives none.
    pub nics: Option<Vec<NicDevice>>,
    /// `cloud_init`: the NoCloud seed a create attaches.
    pub cloud_init: Option<CloudInit>,
}

impl Request {
    fn disk_volume(&self) -> String {
        format!("{}.{}", self.desired.name, self.format.as_str())
    }
    fn config_volume(&self) -> String {
        virtup_core::vocab::config_disk_volume(&self.desired.name)
    }
    fn seed_volume(&self) -> String {
        virtup_core::vocab::cloud_init_seed_volume(&self.desired.name)
    }
    /// The data disks a create makes (none when the task gives none).
    fn data_disks(&self) -> &[DataDisk] {
        self.disks.as_deref().unwrap_or_default()
    }
    /// The model of the NIC a create makes first (virtio when the task gives no `nics`).
    fn first_nic_model(&self) -> NicModel {
        self.nics
            .as_ref()
            .and_then(|n| n.first())
            .map_or(NicModel::Virtio, |n| n.model)
    }
    /// The NICs after the first that a create adds (none when the task gives no `nics`).
    fn extra_nics(&self) -> &[NicDevice] {
        self.nics
            .as_deref()
            .map_or(&[], |n| n.get(1..).unwrap_or_default())
    }
    /// The volumes a create makes, under these names, in the instance's pool.
    fn volume_names(&self) -> Vec<String> {
        let mut names = vec![self.disk_volume()];
        if self.desired.customize == Customize::Auto {
            names.push(self.config_volume());
        }
        if self.cloud_init.is_some() {
            names.push(self.seed_volume());
        }
        names.extend(
            self.data_disks()
                .iter()
                .enumerate()
                .map(|(i, d)| data_disk::volume_name(&self.desired.name, i, d.format)),
        );
        names
    }
    /// The volumes deleted with the instance: all it makes but the data disks it keeps. Listed in
    /// the domain's tag, which is what a delete goes by.
    fn deleted_with_instance(&self) -> Vec<String> {
        let kept = kept_volumes(&self.desired.name, self.data_disks());
        self.volume_names()
            .into_iter()
            .filter(|v| !kept.contains(v))
            .collect()
    }
}

/// The volumes of the data disks that `keep` says outlive the instance.
fn kept_volumes(name: &str, disks: &[DataDisk]) -> Vec<String> {
    disks
        .iter()
        .enumerate()
        .filter(|(_, d)| d.keep)
        .map(|(i, d)| data_disk::volume_name(name, i, d.format))
        .collect()
}

/// The hypervisor the instance's metadata says it lives on (the default one for virt-up 2.2.0's
/// metadata, which names none); `None` without a readable record (observe reports a damaged one).
fn recorded_uri(ctx: &Context, name: &str) -> Option<String> {
    let meta = InstanceMeta::read(&ctx.data, name).ok().flatten()?;
    Some(
        meta.uri
            .unwrap_or_else(|| context::default_uri(&ctx.config, &ctx.paths)),
    )
}

/// Options over the template's config section (else `[common]`) over the built-in defaults.
pub fn resolve(ctx: &Context, options: InstanceOptions) -> Result<Request> {
    let InstanceOptions {
        name,
        template,
        state,
        clone,
        customize,
        layer,
        wait_timeout,
        inventory,
        autostart,
        // The caller's: see the field.
        adopt: _,
        password,
        root_password,
        boot,
        address,
        disks,
        static_address,
        nics,
        cloud_init,
        groups,
    } = options;
    let template = template.unwrap_or_else(|| name.clone());
    if state == InstanceState::Absent {
        // Removing needs no hostname: leftovers of names earlier versions accepted can still go.
        validate::removable_instance_name("name", &name)?;
        validate::removable_template_name("template", &template)?;
    } else {
        // The name becomes the hostname: refused here, not after the disk and keys are made.
        validate::instance_name("name", &name)?;
        validate::template_name("template", &template)?;
    }
    let base = ctx
        .config
        .resolve_template(&template)
        .unwrap_or_else(|| ctx.config.resolve_common());
    let layer_size = layer.size.is_some();
    let fields = base.overlay(&layer);
    context::validate_fields(&fields)?;
    let settings = fields.settings();
    let virt_sysprep_args = settings.virt_sysprep_args.clone();
    let customize = customize_path(customize, &virt_sysprep_args);
    let playbook = match state {
        InstanceState::Absent => None,
        _ => crate::playbook::configured(
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
    let uri = match recorded_uri(ctx, &name) {
        // A removal that names no hypervisor goes where the instance is.
        Some(recorded) if state == InstanceState::Absent && layer.uri.is_none() => recorded,
        _ => context::uri(&fields, &ctx.paths),
    };
    context::check_uri(&uri)?;
    if customize == Customize::Sysprep
        && state != InstanceState::Absent
        && settings.image_format == ImageFormat::Raw
        && !virtup_libvirt::uri_is_local(&uri)
    {
        // virt-sysprep works on a copy here that goes back up whole: a raw disk's holes would be
        // written as zeros, allocating every byte of it in the remote pool.
        bail!(
            "`customize: sysprep` (or `virt_sysprep_args`) on the remote hypervisor `{uri}` needs a \
             qcow2 clone: virt-sysprep works on a copy here, and writing a raw disk back through \
             libvirt allocates all of it in the remote pool; use `image_format: qcow2` or \
             `customize: auto`"
        );
    }
    if customize == Customize::Sysprep
        && state != InstanceState::Absent
        && disks.iter().flatten().any(|d| d.filesystem.is_some())
    {
        // The first boot makes the filesystems, from the config disk the sysprep path has none of.
        bail!(
            "invalid value for `disks`: a `filesystem` is made by the clone's first boot from its \
             config disk, which the sysprep path (`customize: sysprep` or `virt_sysprep_args`) does \
             not use; leave `filesystem` out (the disk stays blank) or use `customize: auto`"
        );
    }
    if static_address && address.is_none() && state != InstanceState::Absent {
        bail!("invalid value for `address_mode`: `static` configures `address` in the guest; give one");
    }
    let network = match nics.as_ref().and_then(|n| n.first()).map(|n| &n.nic) {
        Some(_) if layer.network.is_some() => bail!(
            "invalid value for `network`: `nics` is given too, and its first NIC is the network the \
             instance is reached through; give one of the two"
        ),
        Some(Nic::Network(first)) => first.clone(),
        // `nic::parse_list` refuses a first NIC on anything else.
        Some(other) => bail!(
            "invalid value for `nics`: the first NIC is {}, not a libvirt network",
            other.describe()
        ),
        None => settings.network,
    };
    Ok(Request {
        uri,
        default_uri: context::default_uri(&ctx.config, &ctx.paths),
        pool: settings.pool,
        format: settings.image_format,
        network,
        graphics: graphics(&settings.graphics)?,
        user: settings.user,
        hostname: name.clone(),
        fqdn,
        size,
        size_asked: layer_size,
        sources: settings.address_source,
        wait_timeout,
        inventory,
        virt_sysprep_args,
        playbook,
        password,
        root_password,
        boot,
        disks,
        static_address,
        nics,
        cloud_init,
        desired: InstanceDesired {
            name,
            template,
            state,
            clone,
            customize,
            memory_mib: settings.memory_mib,
            vcpus: settings.vcpus,
            autostart,
            address,
            // Not looked at by a removal, which must work whatever the declarations hold.
            groups: match state {
                InstanceState::Absent => None,
                _ => groups
                    .map(|g| validate::inventory_groups("groups", &g))
                    .transpose()?,
            },
        },
    })
}

/// The domain's graphics. The module's option is checked against [`GRAPHICS`] by its spec; a
/// config file is not, so the word is checked here, naming where it came from.
fn graphics(word: &str) -> Result<Graphics> {
    match word {
        "none" => Ok(Graphics::None),
        "vnc" => Ok(Graphics::Vnc),
        "spice" => Ok(Graphics::Spice),
        _ => bail!(
            "invalid value for `graphics`: {} (from the config); choose from {}",
            validate::Shown(word),
            GRAPHICS.join(", ")
        ),
    }
}

/// How a clone gets its identity. As in virt-up, `virt-sysprep-args` are arguments of the
/// virt-sysprep run that prepares each clone: when any are given (option or config), `auto` takes
/// the sysprep path so that they apply; otherwise `auto` is the config disk, with no virt-sysprep.
fn customize_path(asked: Customize, virt_sysprep_args: &[String]) -> Customize {
    match asked {
        Customize::Sysprep => Customize::Sysprep,
        Customize::Auto if !virt_sysprep_args.is_empty() => Customize::Sysprep,
        Customize::Auto => Customize::Auto,
    }
}

/// The template's current disk, when creating needs it.
#[derive(Clone)]
struct TemplateDisk {
    generation: u32,
    volume: String,
    path: String,
    /// Its virtual size: a clone's disk is never smaller.
    capacity_bytes: u64,
    /// The revision of the first boot installed in it ([`virtup_guest::firstboot::REVISION`]).
    firstboot: u32,
}

struct Observation {
    model: InstanceObserved,
    template: Option<TemplateDisk>,
    mac: Option<String>,
    /// The libvirt network of the instance's NIC (the request's until the domain exists): where its
    /// reservation goes.
    network: String,
    /// Whether the metadata's reservation record is proved by the network (`None`: no record).
    reservation_proven: Option<bool>,
    /// The data disks the metadata records the instance was made with.
    recorded_disks: Vec<DataDisk>,
    /// The NICs the instance was made with, in order (the first on `network`).
    recorded_nics: Vec<NicDevice>,
    /// The digest of the `cloud_init` data it was made with.
    recorded_cloud_init: Option<String>,
    /// What the template's disk said of cloud-init, for a create with `cloud_init`.
    cloud_init_look: Option<crate::cloud_init::Look>,
    /// What the check of a create's NIC sources could not confirm.
    nic_warnings: Vec<String>,
    /// Under `absent`: the volumes of data disks that stay (`keep` as recorded, or as this task
    /// asks: keeping is the safe direction, so a `keep` added at the delete is honoured).
    kept: Vec<String>,
    /// The static address its guest was given (`ADDRESS/PREFIX`), if any.
    recorded_static: Option<String>,
}

fn observe(hv: &Hypervisor, data: &DataDir, req: &Request) -> Result<Observation> {
    let name = &req.desired.name;
    let mut model = InstanceObserved::default();
    let ledger = Ledger::read(data, name)?;
    // A damaged owner id fails the run here, in check mode too: the real run needs it.
    data.owner_id()?;
    let proof = |v: &VolumeInfo| volume_proof(&ledger, req, v);
    let mut mac = None;
    let mut network = req.network.clone();
    let mut interfaces = Vec::new();
    match hv.domain(name)? {
        None => {}
        // A tag proves a domain to the data dir that wrote it, not to every data dir on the host.
        Some(dom) => match dom.tag.clone() {
            Some(tag)
                if tag.is(TagKind::Instance, name)
                    && crate::owner::proves(data, hv, &tag, name)? =>
            {
                let (observed, nics) = observe_domain(hv, req, &dom, tag, &proof)?;
                model.domain = Some(observed);
                if let Some(nic) = nics.first().cloned() {
                    mac = nic.mac;
                    network = nic.network.unwrap_or(network);
                }
                interfaces = nics;
            }
            _ => model.foreign_domain = true,
        },
    }
    // A damaged metadata file is reported, never trusted.
    let meta = InstanceMeta::read(data, name)?;
    let in_ledger = context::recorded(data, name, &req.uri);
    let recorded = meta
        .as_ref()
        .map(|m| m.uri.as_deref().unwrap_or(&req.default_uri))
        .or(in_ledger.elsewhere.first().map(String::as_str));
    if let Some(recorded) = recorded {
        // Names are unique across hypervisors (the inventory lists instances by name), and the
        // record of an instance on one must never be removed by a run on another.
        if !context::same_hypervisor(recorded, &req.uri) {
            bail!(
                "instance `{name}` lives on `{recorded}`, not on `{}`: instance names are unique \
                 across hypervisors; use another name, or remove it there first (`state: absent`, \
                 `uri: {recorded}`)",
                req.uri
            );
        }
    }
    let record = meta.as_ref().and_then(|m| m.reservation.as_ref());
    let mut reservation_proven = None;
    let want_address = (req.desired.state != InstanceState::Absent)
        .then_some(req.desired.address)
        .flatten();
    if record.is_some() || want_address.is_some() {
        // A clone made again keeps its MAC (`macaddrs.json`): an entry for it is checked too.
        let stable_mac = match &mac {
            Some(m) => Some(m.clone()),
            None => virtup_core::macaddrs::MacAddrs::load(&data.macaddrs_file())?
                .get(name)
                .map(str::to_owned),
        };
        let seen = crate::reservation::observe(
            hv,
            &network,
            name,
            stable_mac.as_deref(),
            record,
            want_address,
        )?;
        model.reserved = seen.reserved;
        model.reservation_misplaced = seen.misplaced;
        model.address_refusal = seen.refusal;
        reservation_proven = seen.proven;
    }
    let recorded_disks = meta
        .as_ref()
        .map(|m| m.data_disks.clone())
        .unwrap_or_default();
    let recorded_static = meta.as_ref().and_then(|m| m.static_ipv4.clone());
    // The NICs it was made with: the first on its network, then those `nics` added; each of the
    // model its domain runs it as (found by MAC), else the one recorded (virtio before `model`).
    let model_of = |mac: Option<&str>, recorded: NicModel| {
        mac.and_then(|mac| {
            interfaces.iter().find(|i| {
                i.mac
                    .as_deref()
                    .is_some_and(|m| virtup_libvirt::same_mac(m, mac))
            })
        })
        .and_then(|i| i.model.as_deref())
        .and_then(NicModel::parse)
        .unwrap_or(recorded)
    };
    let recorded_nics = std::iter::once(NicDevice {
        nic: Nic::Network(network.clone()),
        model: model_of(
            mac.as_deref(),
            meta.as_ref().and_then(|m| m.nic_model).unwrap_or_default(),
        ),
    })
    .chain(meta.iter().flat_map(|m| {
        m.extra_nics.iter().map(|n| NicDevice {
            nic: n.nic.clone(),
            model: model_of(Some(&n.mac), n.model),
        })
    }))
    .collect();
    let mut kept = Vec::new();
    if req.desired.state == InstanceState::Absent && hv.pool(&req.pool)?.is_some() {
        // Disk N asked to be kept at the delete is disk N as it was made (its recorded format).
        let asked = req.data_disks().iter().enumerate().filter(|(_, d)| d.keep);
        let asked = asked.map(|(i, d)| {
            let format = recorded_disks.get(i).map_or(d.format, |r| r.format);
            data_disk::volume_name(name, i, format)
        });
        for v in kept_volumes(name, &recorded_disks).into_iter().chain(asked) {
            // Only a disk that is there and was the instance's (its domain is there, or the
            // ledger says it had one): what a killed create made and never attached is a
            // leftover, kept by nobody. Not by the ledger alone: a delete that failed after
            // letting go of the disk leaves the domain, and the disk is still kept.
            if !kept.contains(&v)
                && (model.domain.is_some() || ledger.is_attached(&req.uri, &req.pool, &v))
                && hv.volume_info(&req.pool, &v)?.is_some()
            {
                kept.push(v);
            }
        }
        if let Some(dom) = model.domain.as_mut() {
            dom.owned_volumes.retain(|v| !kept.contains(v));
        }
        model.keeps_disks = !kept.is_empty();
    }
    if let (Some(cidr), Some(want), Some(_), false) = (
        &recorded_static,
        req.desired.address,
        &model.domain,
        req.desired.state == InstanceState::Absent,
    ) {
        // Moving the reservation would leave the guest on its old, static address, unreachable.
        if static_host(cidr) != Some(want) {
            bail!(
                "invalid value for `address`: `{name}` has the static address {cidr} in its guest \
                 (`address_mode: static`), which only a new instance changes; remove it (`state: \
                 absent`) and make it again, or leave `address` as it was"
            );
        }
    }
    // A ledger without a domain (a delete killed after its volumes went) is a record to forget too.
    model.has_metadata = meta.is_some() || (model.domain.is_none() && !ledger.volumes.is_empty());
    model.recorded_groups = meta.as_ref().map(|m| m.groups.clone()).unwrap_or_default();
    let mut nic_warnings = Vec::new();
    let mut cloud_init_look = None;
    let mut template = None;
    if req.desired.state != InstanceState::Absent && model.domain.is_none() {
        if hv.pool(&req.pool)?.is_none() {
            bail!(
                "invalid value for `pool`: storage pool `{}` does not exist on `{}`",
                req.pool,
                req.uri
            );
        }
        nic_warnings = check_nic_sources(hv, req)?;
        hv.refresh_pool(&req.pool)?;
        if let Some(current) = current_disk(hv, data, &req.pool, &req.desired.template)? {
            model.template_generation = Some(current.generation);
            model.template_running = current.running;
            let capacity_bytes = hv
                .volume_info(&req.pool, &current.volume)?
                .map_or(0, |v| v.capacity_bytes);
            if let Some(size) = req.size.filter(|&s| s < capacity_bytes && req.size_asked) {
                // A disk cannot shrink under the template's filesystem: refused before anything is made.
                bail!(
                    "invalid value for `size`: {} is smaller than the disk of template `{}` ({}); a \
                     clone's disk is at least its template's",
                    validate::show_bytes(size),
                    req.desired.template,
                    validate::show_bytes(capacity_bytes)
                );
            }
            if req.data_disks().iter().any(|d| d.filesystem.is_some())
                && current.firstboot < virtup_guest::firstboot::MAKES_FILESYSTEMS
            {
                // Its first boot would leave the disks blank: refused before anything is made.
                bail!(
                    "invalid value for `disks`: template `{}` was built by a virtup whose first boot \
                     makes no filesystem on a data disk; build a new generation (change its \
                     `revision`), or leave `filesystem` out",
                    req.desired.template
                );
            }
            // The sysprep path installs this virtup's first boot into the clone: only a config
            // disk is read by the template's own.
            if req.static_address
                && req.desired.customize == Customize::Auto
                && current.firstboot < virtup_guest::firstboot::CONFIGURES_STATIC_ADDRESS
            {
                bail!(
                    "invalid value for `address_mode`: template `{}` was built by a virtup whose first \
                     boot configures no static address; build a new generation (change its \
                     `revision`), or use `address_mode: dhcp` (the reservation alone)",
                    req.desired.template
                );
            }
            if let Some(cloud) = &req.cloud_init {
                let (warnings, look) = check_cloud_init(data, hv, req, cloud, &current)?;
                nic_warnings.extend(warnings);
                cloud_init_look = look;
            }
            template = Some(TemplateDisk {
                generation: current.generation,
                volume: current.volume,
                path: current.path,
                capacity_bytes,
                firstboot: current.firstboot,
            });
        }
    }
    if model.domain.is_none() && hv.pool(&req.pool)?.is_some() {
        // Volumes the ledger proves a killed run of this instance made before it could define the
        // domain are leftovers; a volume under a name the create needs that virtup cannot prove it
        // made is in the way, and stays.
        let wanted = req.volume_names();
        let absent = req.desired.state == InstanceState::Absent;
        // A data disk to keep outlives its instance even when the domain went first (undefined by
        // hand): `absent` lets go of it rather than delete it as a leftover. Only one that was
        // attached: a disk of a create that never defined its domain was never anyone's to keep.
        for v in hv.list_volumes(&req.pool)? {
            match proof(&v) {
                Proof::Created if absent && kept.contains(&v.name) => {}
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
        mac,
        network,
        reservation_proven,
        recorded_disks,
        recorded_nics,
        recorded_cloud_init: meta.as_ref().and_then(|m| m.cloud_init_digest.clone()),
        cloud_init_look,
        nic_warnings,
        kept,
        recorded_static,
    })
}

/// What the ledger proves of a volume in the instance's pool.
fn volume_proof(ledger: &Ledger, req: &Request, v: &VolumeInfo) -> Proof {
    ledger.proof(
        &req.uri,
        &req.pool,
        ownership::Observed {
            name: &v.name,
            key: &v.key,
            backing: v.backing.as_deref(),
        },
    )
}

/// The instance's own domain as the plan sees it, and its NICs (the first's MAC a re-create keeps).
fn observe_domain(
    hv: &Hypervisor,
    req: &Request,
    dom: &virtup_libvirt::DomainInfo,
    tag: VirtupTag,
    proof: &dyn Fn(&VolumeInfo) -> Proof,
) -> Result<(ObservedInstance, Vec<virtup_libvirt::ParsedInterface>)> {
    let name = &req.desired.name;
    let parsed = parse_domain_xml(&hv.inactive_xml(name)?)?;
    // The tag was written after its volumes were made; a listed volume is deleted with the domain
    // only while it is still the one the domain uses (or the ledger's).
    let disks: BTreeSet<&str> = parsed
        .disks
        .iter()
        .filter_map(|d| d.path.as_deref())
        .collect();
    let mut owned_volumes = Vec::new();
    if hv.pool(&req.pool)?.is_some() {
        for v in &tag.owned_volumes {
            if let Some(info) = hv.volume_info(&req.pool, v)? {
                if disks.contains(info.path.as_str()) || proof(&info) != Proof::Foreign {
                    owned_volumes.push(v.clone());
                }
            }
        }
    }
    let observed = ObservedInstance {
        running: dom.state != DomainState::ShutOff,
        saved: dom.saved && dom.state == DomainState::ShutOff,
        memory_mib: parsed.memory_mib,
        vcpus: parsed.vcpus,
        autostart: dom.autostart,
        template: tag.template.unwrap_or_default(),
        generation: tag.generation,
        owned_volumes,
    };
    Ok((observed, parsed.interfaces))
}

/// An instance's state as `--diff` shows it: the state word, and its shape unless it is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub state: &'static str,
    #[serde(flatten)]
    pub shape: Option<InstanceShape>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceShape {
    #[serde(rename = "memory")]
    pub memory_mib: u64,
    pub vcpus: u32,
    pub autostart: bool,
    pub template: String,
    /// The template generation it is (or would be) cloned from; unknown before the template exists.
    pub generation: Option<u32>,
    /// The address reserved for it on its network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its data disks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DataDiskView>,
    /// Its NICs in order (`network default`, `bridge br0`, …), when it has more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<String>,
    /// The inventory groups it is declared in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// What a run found and left: the instance as the module returns it (`instance`) and the inventory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceFacts {
    pub name: String,
    pub address: Option<String>,
    pub user: String,
    pub ssh_private_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// The pinned key is stored under the instance's name: ssh needs `-o HostKeyAlias=<this>`.
    pub host_key_alias: String,
    /// Every ssh option a connection to the guest needs (the pinned key, the hop through a remote
    /// hypervisor), shell-quoted as `ansible_ssh_common_args` wants it; once the guest has a known_hosts.
    pub ssh_common_args: Option<String>,
    pub host_key_fingerprint: Option<String>,
    pub mac: Option<String>,
    /// The address reserved for it on its libvirt network (DHCP host entry), if it has one.
    pub reserved_address: Option<String>,
    pub disk: Option<String>,
    /// Its data disks, as made.
    pub data_disks: Vec<DataDiskView>,
    /// The address configured inside its guest (`address_mode: static`), `ADDRESS/PREFIX`.
    pub static_address: Option<String>,
    /// The NICs after the first (`nics`), as made.
    pub extra_nics: Vec<NicView>,
    /// The device model of its first NIC, as made (the others' are in `extra_nics`).
    pub nic_model: Option<&'static str>,
    /// The inventory groups it is declared in (`groups`), besides virtup's own.
    pub groups: Vec<String>,
    pub template: String,
    pub generation: Option<u32>,
    pub state: &'static str,
    /// Set by a real run only.
    #[serde(flatten)]
    pub outcome: Option<Outcome>,
}

/// What a real run did that its caller may act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// This run cloned the instance (virt-up runs the `instance-playbook` on new instances).
    pub created: bool,
    /// The config's `instance-playbook`, found.
    pub playbook: Option<PathBuf>,
}

/// The result of one converge.
#[derive(Debug, Clone)]
pub struct InstanceReport {
    pub changed: bool,
    /// The plan in words.
    pub msg: String,
    pub warnings: Vec<String>,
    pub waited: Waited,
    /// Before and after; `None` when nothing could be planned (a check run before the template exists).
    pub diff: Option<(InstanceView, InstanceView)>,
    /// The instance after the run; `None` when it is absent (in a check run: when it does not exist yet).
    pub instance: Option<InstanceFacts>,
}

/// Brings the instance to the request on `hv` (connected to `req.uri`): observe, plan, and in
/// [`Mode::Apply`] apply under its lock. Bad input and refusals fail at the first plan, before any
/// side effect.
pub fn converge(
    ctx: &Context,
    hv: &Hypervisor,
    req: &Request,
    mode: Mode,
    reporter: &dyn Reporter,
) -> Result<InstanceReport> {
    if mode == Mode::Apply {
        ctx.tidy()?;
    }
    if let Some(report) = virt_up_made(ctx, hv, req)? {
        return Ok(report);
    }
    let obs = observe(hv, &ctx.data, req)?;
    match mode {
        Mode::Check => check(ctx, hv, req, &obs),
        Mode::Apply => apply_mode(ctx, hv, req, obs, reporter),
    }
}

/// An instance virt-up 2.2.0 made and virtup has not adopted is never planned for: deleting it
/// leaves it (with a warning), anything else is refused, naming the way to adopt it. Its record is
/// never replaced nor removed: one with no domain here may be virt-up's instance on another
/// hypervisor.
fn virt_up_made(ctx: &Context, hv: &Hypervisor, req: &Request) -> Result<Option<InstanceReport>> {
    let name = &req.desired.name;
    let absent = req.desired.state == InstanceState::Absent;
    if crate::adopt::pending(ctx, hv, name)? {
        let adopt = format!(
            "adopt it (`adopt: true`, or `virt-up {name} --adopt`; see docs/migrate-from-virt-up.md)"
        );
        if !absent {
            bail!("instance `{name}` was made by virt-up 2.2.0 and is not adopted: {adopt} to manage it with virtup");
        }
        return Ok(Some(InstanceReport {
            changed: false,
            msg: "nothing to do".into(),
            warnings: vec![format!(
                "instance `{name}` was made by virt-up 2.2.0 and is not adopted: virtup deletes only what it \
                 owns, so it is left as it is; {adopt} first, or delete it with virt-up 2.2.0"
            )],
            waited: Waited::default(),
            diff: None,
            instance: None,
        }));
    }
    let legacy = InstanceMeta::read(&ctx.data, name)?.is_some_and(|m| m.is_virt_up_record());
    if legacy && absent && hv.domain(name)?.is_none() {
        // It may be virt-up's instance on another hypervisor: its record (its only copy of the
        // guest's passwords) is virt-up's to remove.
        return Ok(Some(InstanceReport {
            changed: false,
            msg: "nothing to do".into(),
            warnings: vec![format!(
                "instance `{name}` has virt-up 2.2.0's record in `{}` but no domain on `{}`: the record is \
                 left as it is (virt-up 2.2.0's default hypervisor is qemu:///session; remove the record \
                 yourself if its instance is gone)",
                ctx.paths.data_dir.display(),
                req.uri
            )],
            waited: Waited::default(),
            diff: None,
            instance: None,
        }));
    }
    if legacy && !absent && hv.domain(name)?.is_none() {
        bail!(
            "instance `{name}` has virt-up 2.2.0's record in `{}` but no domain on `{}`: virtup neither \
             replaces virt-up's record nor makes a new instance over it (virt-up 2.2.0's default hypervisor \
             is qemu:///session: give virtup that URI to adopt it there, or remove the record)",
            ctx.paths.data_dir.display(),
            req.uri
        );
    }
    Ok(None)
}

/// What a real run would do, from the first observation; nothing is written.
fn check(
    ctx: &Context,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
) -> Result<InstanceReport> {
    let the_plan = match plan(&req.desired, &obs.model) {
        // In a check run of a whole site the template task only pretended to build the template, so a
        // missing template is the change this run would make, not an error.
        Err(PlanError::NoTemplate(t)) => {
            return Ok(InstanceReport {
                changed: true,
                msg: format!("clone from template `{t}` once it is built"),
                warnings: vec![format!(
                    "template `{t}` does not exist yet; a real run fails unless it is built first"
                )],
                waited: Waited::default(),
                diff: None,
                instance: None,
            })
        }
        other => other?,
    };
    // `boot: warm` that a real run could not honour fails here too, as it would there.
    refuse_unfit_warm(&ctx.data, hv, req, obs, &the_plan)?;
    let mut report = report(req, obs, &the_plan, Waited::default());
    if obs.model.domain.is_some() && req.desired.state != InstanceState::Absent {
        let meta = InstanceMeta::read(&ctx.data, &req.desired.name)?;
        let mut instance = describe(&ctx.data, hv, req, meta.as_ref(), None)?;
        // The groups a real run would record: the role files the host under them in a check run too.
        if let Some(groups) = &req.desired.groups {
            instance.groups = groups.clone();
        }
        report.instance = Some(instance);
    }
    Ok(report)
}

/// `boot: warm` for a clone that cannot resume is bad input: refused before the plan's first step
/// (a reservation comes before the clone), in check mode as in a real run.
fn refuse_unfit_warm(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    the_plan: &Plan,
) -> Result<()> {
    let creating = the_plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Create { .. }));
    if let (Boot::Warm, true, Some(tpl)) = (req.boot, creating, &obs.template) {
        let accel = crate::virt_choice::choose(hv, data)?.virt_type;
        warm_choice(data, hv, req, tpl, accel, &crate::Quiet)?;
    }
    Ok(())
}

fn apply_mode(
    ctx: &Context,
    hv: &Hypervisor,
    req: &Request,
    obs: Observation,
    reporter: &dyn Reporter,
) -> Result<InstanceReport> {
    let (the_plan, recheck) = match plan(&req.desired, &obs.model) {
        // Volumes in the way may be a concurrent run's creation, seen between its create and its
        // define: the run decides under the instance's lock, where that run has finished.
        Err(PlanError::ForeignVolumes { .. } | PlanError::DetachedVolumes { .. }) => {
            (Plan::default(), true)
        }
        other => (other?, false),
    };
    let running_wanted = req.desired.state == InstanceState::Running;
    if the_plan.is_empty() && !running_wanted && !recheck {
        // Nothing to change and nothing to prove: no lock, no data dir created.
        let report = report(req, &obs, &the_plan, Waited::default());
        return finish(&ctx.data, hv, req, &the_plan, report, None);
    }
    let cloning = obs.model.domain.is_none() && req.desired.state != InstanceState::Absent;
    let mut session = Session::enter(ctx, req, cloning, reporter)?;
    let obs = observe(hv, &session.data, req)?;
    let the_plan = plan(&req.desired, &obs.model)?;
    if obs.model.domain.is_some() {
        // Another run made it while we waited: nothing is cloned, the template is not ours to hold.
        session.template_lock = None;
    }
    refuse_unfit_warm(&session.data, hv, req, &obs, &the_plan)?;
    let mut report = report(req, &obs, &the_plan, session.waited);
    let (address, warnings, finished) =
        apply(ctx, &mut session, hv, req, &obs, &the_plan, reporter)?;
    report.warnings.extend(warnings);
    if finished {
        report.changed = true;
        report.msg =
            "finish the resume an earlier run began (NIC and config disk plugged in)".into();
    }
    let data = session.data.clone();
    drop(session);
    finish(&data, hv, req, &the_plan, report, address)
}

/// A real run's hold on the instance: its lock and, while it clones, its template's.
struct Session {
    data: DataDir,
    _lock: LockGuard,
    /// Held from choosing the template's generation until the clone is defined: a concurrent build
    /// deletes the generations no domain uses yet, which would include this clone's.
    template_lock: Option<LockGuard>,
    waited: Waited,
}

impl Session {
    /// Takes the instance's lock (and the template's, when `cloning`), never while another run
    /// customizes the template: its disk is about to change.
    fn enter(
        ctx: &Context,
        req: &Request,
        cloning: bool,
        reporter: &dyn Reporter,
    ) -> Result<Session> {
        let mut waited = Waited::default();
        let template_scope = crate::context::template_scope(&req.desired.template, &req.uri);
        loop {
            if cloning {
                waited.hold += wait_for_hold(
                    &ctx.data,
                    &req.desired.template,
                    &template_scope,
                    None,
                    reporter,
                )?;
            }
            let data = ctx.open_data_dir()?;
            let started = Instant::now();
            let lock = data.lock(&format!("instance-{}", req.desired.name), LOCK_TIMEOUT)?;
            let template_lock = if cloning {
                Some(data.lock(&format!("template-{template_scope}"), LOCK_TIMEOUT)?)
            } else {
                None
            };
            waited.lock += started.elapsed();
            // A customization may have begun between the wait and the lock: wait for it again.
            if cloning
                && matches!(
                    virtup_core::hold::state(&data, &template_scope, None)?,
                    virtup_core::hold::HoldState::Live(_)
                )
            {
                continue;
            }
            return Ok(Session {
                data,
                _lock: lock,
                template_lock,
                waited,
            });
        }
    }
}

/// The report of a plan, before anything is applied.
fn report(req: &Request, obs: &Observation, the_plan: &Plan, waited: Waited) -> InstanceReport {
    let mut warnings = Vec::new();
    if obs.model.foreign_domain && req.desired.state == InstanceState::Absent {
        // `absent` holds for virtup, but the user may think the domain was theirs: say why it stays.
        warnings.push(format!(
            "domain `{}` exists but was not made by virtup with this data dir; it is left alone",
            req.desired.name
        ));
    }
    let creating = the_plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Create { .. }));
    if let (true, Some(tpl), Some(size)) = (creating, &obs.template, req.size) {
        let why = if req.desired.customize == Customize::Sysprep {
            "on the sysprep path (`customize: sysprep` or `virt_sysprep_args`); only a clone \
             prepared by its first boot (`customize: auto`) grows it"
                .to_owned()
        } else if tpl.firstboot < virtup_guest::firstboot::GROWS_ROOT {
            format!(
                "template `{}` was built by a virtup whose first boot does not grow it; build a new \
                 generation (change its `revision`) to have it grown",
                req.desired.template
            )
        } else {
            String::new()
        };
        if size > tpl.capacity_bytes && !why.is_empty() {
            warnings.push(format!(
                "`{}` gets a {} disk, but its root filesystem stays the template's {}: {why}",
                req.desired.name,
                validate::show_bytes(size),
                validate::show_bytes(tpl.capacity_bytes)
            ));
        }
    }
    if let (Some(asked), Some(_), false) = (&req.disks, &obs.model.domain, creating) {
        if req.desired.state != InstanceState::Absent && *asked != obs.recorded_disks {
            // Attaching, detaching or reshaping disks of an existing instance is not done: say so
            // rather than pretend the list holds.
            warnings.push(format!(
                "`{}` keeps the data disks it was made with ({}): `disks` applies when an instance \
                 is made; remove it (`state: absent`) and run again to make it with these",
                req.desired.name,
                show_disks(&req.desired.name, &obs.recorded_disks)
            ));
        }
    }
    warnings.extend(obs.nic_warnings.iter().cloned());
    if let (Some(asked), Some(_), false) = (&req.nics, &obs.model.domain, creating) {
        if req.desired.state != InstanceState::Absent && *asked != obs.recorded_nics {
            // As with disks: NICs are plugged in when the instance is made, not later.
            warnings.push(format!(
                "`{}` keeps the NICs it was made with ({}): `nics` applies when an instance is made; \
                 remove it (`state: absent`) and run again to make it with these",
                req.desired.name,
                obs.recorded_nics
                    .iter()
                    .map(NicDevice::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let (Some(asked), Some(_), false) = (&req.cloud_init, &obs.model.domain, creating) {
        if req.desired.state != InstanceState::Absent
            && obs.recorded_cloud_init.as_deref() != Some(asked.digest().as_str())
        {
            // cloud-init reads its seed as a new instance's only once.
            warnings.push(format!(
                "`{}` keeps the cloud-init data it was made with{}: `cloud_init` applies when an \
                 instance is made; remove it (`state: absent`) and run again to make it with this data",
                req.desired.name,
                if obs.recorded_cloud_init.is_some() { "" } else { " (none)" }
            ));
        }
    }
    if let (true, Some(_), None, false, false) = (
        req.static_address,
        &obs.model.domain,
        &obs.recorded_static,
        creating,
        req.desired.state == InstanceState::Absent,
    ) {
        warnings.push(format!(
            "`{}` was made without a static address in its guest: `address_mode: static` applies \
             when an instance is made (its address stays a DHCP reservation)",
            req.desired.name
        ));
    }
    let deleting = the_plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Delete { .. } | Step::Forget));
    let kept = &obs.kept;
    if deleting && !kept.is_empty() {
        warnings.push(format!(
            "data disk {} of `{}` stays in pool `{}` (`keep`); virtup lets go of it: it is yours to \
             attach elsewhere or delete",
            kept.iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", "),
            req.desired.name,
            req.pool
        ));
    }
    if virtup_core::instance::reservation_reaches_guest_later(the_plan, &obs.model) {
        let now = if obs.model.domain.as_ref().is_some_and(|d| d.saved) {
            "suspended"
        } else {
            "running"
        };
        warnings.push(format!(
            "`{}` is {now}: it gets its reserved address when it next asks for one (lease \
             renewal or boot); until then it keeps the one it has",
            req.desired.name
        ));
    }
    if the_plan.needs_reboot_warning(&obs.model) {
        let now = if obs.model.domain.as_ref().is_some_and(|d| d.saved) {
            "it is suspended now"
        } else {
            "it is running now"
        };
        warnings.push(format!(
            "memory and vCPUs of `{}` change at its next boot; {now}",
            req.desired.name
        ));
    }
    InstanceReport {
        changed: !the_plan.is_empty(),
        msg: the_plan.to_string(),
        warnings,
        waited,
        diff: Some(diff(req, obs)),
        instance: None,
    }
}

/// Data disks in words: `web.data1.qcow2 (1 GiB, virtio, ext4 on /srv)`, or `none`.
fn show_disks(name: &str, disks: &[DataDisk]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .enumerate()
        .map(|(i, d)| DataDiskView::of(name, i, d).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One NIC after the first, as the module returns it: `type` (network, bridge, direct), `source`
/// (the network, bridge or host device), `mode` (direct only) and its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    pub model: &'static str,
    pub mac: String,
}

impl NicView {
    pub fn of(made: &MadeNic) -> NicView {
        NicView {
            kind: made.nic.kind(),
            source: made.nic.source().to_owned(),
            mode: made.nic.mode().map(DirectMode::as_str),
            model: made.model.as_str(),
            mac: made.mac.clone(),
        }
    }
}

/// One data disk as the module returns it and `--diff` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDiskView {
    pub volume: String,
    pub size: String,
    pub format: &'static str,
    pub bus: &'static str,
    pub serial: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    pub keep: bool,
}

impl DataDiskView {
    fn of(name: &str, index: usize, d: &DataDisk) -> DataDiskView {
        DataDiskView {
            volume: data_disk::volume_name(name, index, d.format),
            size: validate::show_bytes(d.size),
            format: d.format.as_str(),
            bus: d.bus.as_str(),
            serial: data_disk::serial(index),
            filesystem: d.filesystem.map(|f| f.as_str()),
            mount: d.mount.clone(),
            keep: d.keep,
        }
    }

    fn list(name: &str, disks: &[DataDisk]) -> Vec<DataDiskView> {
        disks
            .iter()
            .enumerate()
            .map(|(i, d)| DataDiskView::of(name, i, d))
            .collect()
    }
}

impl std::fmt::Display for DataDiskView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.volume, self.size, self.bus)?;
        if let Some(fs) = self.filesystem {
            write!(f, ", {fs}")?;
        }
        if let Some(m) = &self.mount {
            write!(f, " on {m}")?;
        }
        if self.keep {
            write!(f, ", kept")?;
        }
        write!(f, ")")
    }
}

/// A real run's report with the instance as it is left.
fn finish(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    the_plan: &Plan,
    mut report: InstanceReport,
    address: Option<IpAddr>,
) -> Result<InstanceReport> {
    if req.desired.state == InstanceState::Absent {
        return Ok(report);
    }
    let meta = InstanceMeta::read(data, &req.desired.name)?;
    let mut instance = describe(data, hv, req, meta.as_ref(), address)?;
    instance.outcome = Some(Outcome {
        created: the_plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Create { .. })),
        playbook: req.playbook.clone(),
    });
    report.instance = Some(instance);
    Ok(report)
}

fn state_word(d: &ObservedInstance) -> &'static str {
    if d.running {
        "running"
    } else if d.saved {
        "suspended"
    } else {
        "present"
    }
}

fn diff(req: &Request, obs: &Observation) -> (InstanceView, InstanceView) {
    let (before, recorded_disks) = (&obs.model, obs.recorded_disks.as_slice());
    // One virtio NIC is every instance's, and goes without saying.
    let shown = |nics: &[NicDevice]| -> Vec<String> {
        if nics.len() > 1 || nics.iter().any(|n| !n.model.is_virtio()) {
            nics.iter().map(NicDevice::describe).collect()
        } else {
            Vec::new()
        }
    };
    let b = match &before.domain {
        None => InstanceView {
            state: "absent",
            shape: None,
        },
        Some(d) => InstanceView {
            state: state_word(d),
            shape: Some(InstanceShape {
                memory_mib: d.memory_mib,
                vcpus: d.vcpus,
                autostart: d.autostart,
                template: d.template.clone(),
                generation: Some(d.generation),
                address: before.reserved.map(|a| a.to_string()),
                disks: DataDiskView::list(&req.desired.name, recorded_disks),
                nics: shown(&obs.recorded_nics),
                groups: before.recorded_groups.clone(),
            }),
        },
    };
    let d = &req.desired;
    let a = match d.state {
        InstanceState::Absent => InstanceView {
            state: "absent",
            shape: None,
        },
        s => InstanceView {
            state: match (s, &before.domain) {
                (InstanceState::Running, _) => "running",
                (InstanceState::Stopped, _) => "present",
                (InstanceState::Suspended, _) => "suspended",
                (_, Some(dom)) => state_word(dom),
                (_, None) => "present",
            },
            shape: Some(InstanceShape {
                memory_mib: d.memory_mib,
                vcpus: d.vcpus,
                autostart: d
                    .autostart
                    .or(before.domain.as_ref().map(|x| x.autostart))
                    .unwrap_or(false),
                template: d.template.clone(),
                generation: before
                    .domain
                    .as_ref()
                    .map(|x| x.generation)
                    .or(before.template_generation),
                address: d.address.or(before.reserved).map(|a| a.to_string()),
                // An existing instance keeps the disks it was made with.
                disks: DataDiskView::list(
                    &req.desired.name,
                    match &before.domain {
                        Some(_) => recorded_disks,
                        None => req.data_disks(),
                    },
                ),
                nics: shown(&nics_of(req, obs)),
                groups: d.groups.clone().unwrap_or_else(|| match &before.domain {
                    Some(_) => before.recorded_groups.clone(),
                    None => Vec::new(),
                }),
            }),
        },
    };
    (b, a)
}

fn describe(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    meta: Option<&InstanceMeta>,
    address: Option<IpAddr>,
) -> Result<InstanceFacts> {
    let state = match hv.domain(&req.desired.name)? {
        None => "absent",
        Some(d) if d.state == DomainState::ShutOff && d.saved => "suspended",
        Some(d) if d.state == DomainState::ShutOff => "present",
        Some(_) => "running",
    };
    // Metadata that names no known_hosts (virt-up 2.2.0's) is checked against the data dir's, as the
    // inventory does; without metadata there is no pinned key to check against.
    let known_hosts_file = meta.map(|m| m.known_hosts_file_in(data));
    Ok(InstanceFacts {
        name: req.desired.name.clone(),
        address: address
            .map(|a| a.to_string())
            .or_else(|| meta.and_then(|m| m.address.clone())),
        user: meta
            .map(|m| m.user.clone())
            .unwrap_or_else(|| req.user.clone()),
        ssh_private_key_file: meta.and_then(|m| m.ssh_private_key_file.clone()),
        ssh_common_args: known_hosts_file.as_deref().map(|k| {
            shell_words::join(crate::inventory::guest_ssh_options(
                k,
                &req.desired.name,
                hv.uri(),
            ))
        }),
        known_hosts_file,
        host_key_alias: req.desired.name.clone(),
        host_key_fingerprint: meta.and_then(|m| m.host_key_fingerprint.clone()),
        mac: meta.and_then(|m| m.mac.clone()),
        reserved_address: meta
            .and_then(|m| m.reservation.as_ref())
            .filter(|r| r.confirmed)
            .map(|r| r.ip.to_string()),
        disk: hv.volume_path(&req.pool, &req.disk_volume())?,
        data_disks: meta
            .map(|m| DataDiskView::list(&req.desired.name, &m.data_disks))
            .unwrap_or_default(),
        static_address: meta.and_then(|m| m.static_ipv4.clone()),
        extra_nics: meta
            .map(|m| m.extra_nics.iter().map(NicView::of).collect())
            .unwrap_or_default(),
        nic_model: meta.map(|m| m.nic_model.unwrap_or_default().as_str()),
        groups: meta.map(|m| m.groups.clone()).unwrap_or_default(),
        template: req.desired.template.clone(),
        generation: meta.map(|m| m.generation),
        state,
        outcome: None,
    })
}

/// The NICs the instance has: those it was made with when its domain exists, else those this task
/// makes (never a list left in metadata by an earlier instance of the name).
fn nics_of(req: &Request, obs: &Observation) -> Vec<NicDevice> {
    match (&obs.model.domain, &req.nics) {
        (Some(_), _) => obs.recorded_nics.clone(),
        (None, Some(asked)) => asked.clone(),
        (None, None) => vec![NicDevice::virtio(Nic::Network(req.network.clone()))],
    }
}

/// A start libvirt refused, with the way out when its NICs can be the cause: a libvirt network of
/// theirs that is not running is named (`virsh net-start`); otherwise, for an instance with NICs
/// beyond the first (plugged in when it is made: a bridge or device the host lost, or one the
/// check could only warn about on a remote host, fails every later start the same way), it is
/// made again.
fn start_failed(
    e: virtup_libvirt::LibvirtError,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
) -> anyhow::Error {
    let nics = nics_of(req, obs);
    let stopped = nics.iter().find_map(|nic| match &nic.nic {
        Nic::Network(n) => matches!(hv.network(n), Ok(Some(info)) if !info.active).then_some(n),
        _ => None,
    });
    let name = &req.desired.name;
    let hint = match stopped {
        Some(n) => format!(
            "`{name}` could not start: its libvirt network `{n}` is not active (`virsh net-start {n}`)"
        ),
        None if nics.len() > 1 => format!(
            "`{name}` is defined but could not start; if one of its NICs ({}) is the cause, remove \
             it (`state: absent`) and make it again with NICs the host has: `nics` applies only \
             when an instance is made",
            nics.iter()
                .map(NicDevice::describe)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => return e.into(),
    };
    anyhow::Error::from(e).context(hint)
}

fn apply(
    ctx: &Context,
    session: &mut Session,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    plan: &Plan,
    reporter: &dyn Reporter,
) -> Result<(Option<IpAddr>, Vec<String>, bool)> {
    let data = &session.data;
    let name = &req.desired.name;
    let mut started = false;
    let mut warnings = Vec::new();
    let mut resume = None;
    let deleting = plan.steps.iter().any(|s| matches!(s, Step::Delete { .. }));
    // A run killed in the middle of a resume left the clone waiting for its devices: given them
    // now (or, if it gave up waiting, started afresh as a cold clone), it applies its identity like
    // a fresh clone, so its address is waited for afresh. First, so that a resize in this run is
    // made to the definition that results.
    if let Some(proven) = obs.reservation_proven {
        crate::reservation::settle(data, name, proven)?;
    }
    // Before a suspend too: a clone still waiting for its devices must not be saved so.
    let finished = matches!(
        req.desired.state,
        InstanceState::Running | InstanceState::Suspended
    ) && obs.model.domain.is_some()
        && crate::warm::finish_resume(hv, name)?;
    if finished {
        reporter.changed();
        reporter.note(&format!(
            "virtup_instance: `{name}` was resumed by a run that did not finish; its NIC and config disk are plugged in now"
        ));
        started = true;
    }
    for step in &plan.steps {
        reporter.stage(&format!("`{name}`: {step}"));
        // Every step changes something: a failure from here on reports `changed: true`.
        reporter.changed();
        match step {
            Step::DeleteLeftovers(volumes) => delete_owned(data, hv, req, volumes)?,
            Step::Create { .. } => {
                let (warning, warm) = create(ctx, data, hv, req, obs, reporter)?;
                warnings.extend(warning);
                resume = warm;
                // Defined: the clone now counts as a dependent, so the template may change again.
                session.template_lock = None;
            }
            Step::Resize { memory_mib, vcpus } => {
                hv.update_memory_vcpus(name, *memory_mib, *vcpus)?
            }
            Step::SetAutostart(on) => hv.set_autostart(name, *on)?,
            Step::SetGroups(groups) => {
                let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
                let mut meta = InstanceMeta::read(data, name)?.ok_or_else(|| {
                    anyhow!("instance `{name}` has no metadata to record its groups in")
                })?;
                meta.groups = groups.clone();
                meta.write(data)?;
            }
            Step::Reserve(ip) => crate::reservation::reserve(
                data,
                hv,
                &crate::reservation::Target {
                    name,
                    template: &req.desired.template,
                    uri: &req.uri,
                    pool: &req.pool,
                    network: &obs.network,
                    nic_mac: obs.mac.as_deref(),
                },
                *ip,
            )?,
            Step::Unreserve(_) => crate::reservation::unreserve(data, hv, name)?,
            Step::Resume => {
                // libvirt resumes it from its managed-save image; its address and the proof of
                // its key still hold, so the address it had is tried first (not `started`).
                hv.start(name).map_err(|e| {
                    anyhow::Error::from(e).context(format!(
                        "`{name}` could not resume from its saved memory (libvirt's managed-save \
                         image; one saved by another QEMU or libvirt version may not load): to \
                         boot it afresh instead, losing what that memory held, remove the image \
                         (`virsh managedsave-remove {name}`) and run again"
                    ))
                })?;
                warnings.extend(crate::power::set_resumed_clock(hv, name, CLOCK_WAIT));
            }
            Step::Start => {
                match resume.take() {
                    Some(r) => {
                        if let Err(e) = resume_warm(data, hv, name, &r, reporter) {
                            if req.boot != Boot::Auto {
                                return Err(e);
                            }
                            // Its definition is a cold clone's: `auto` boots it so.
                            warnings.push(format!("{e:#}; booting it cold (`boot: auto`)"));
                            hv.start(name)?;
                        }
                    }
                    None => hv.start(name).map_err(|e| start_failed(e, hv, req, obs))?,
                }
                started = true;
            }
            // A guest whose disks are all deleted next gains nothing from a graceful shutdown; one
            // with a data disk it keeps shuts down cleanly (within `wait_timeout`), so that the
            // disk's filesystem is whole. A guest that is not running (paused, crashed) cannot
            // shut down: it is powered off.
            Step::Stop
                if deleting
                    && (obs.kept.is_empty()
                        || !(running(hv, name)?
                            || obs.model.domain.as_ref().is_some_and(|d| d.saved))) =>
            {
                hv.destroy(name)?
            }
            Step::Stop => crate::power::stop(hv, name, req.wait_timeout)?,
            Step::Suspend => {
                // A clone booted by this run is proven (its key pinned, its address recorded)
                // before its memory is saved, so that it resumes as a finished instance.
                if started {
                    warnings.extend(reachable(data, hv, req, true, reporter)?.1);
                }
                hv.managed_save(name)?;
            }
            Step::Delete { volumes } => delete(ctx, data, hv, req, volumes)?,
            Step::Forget => forget(ctx, data, name)?,
        }
    }
    let address = if req.desired.state == InstanceState::Running {
        let (ip, notes) = reachable(data, hv, req, started, reporter)?;
        warnings.extend(notes);
        Some(ip)
    } else {
        None
    };
    if let Some(mut meta) = InstanceMeta::read(data, name)? {
        let state = req.desired.state.as_str();
        if meta.state.as_deref() != Some(state) {
            meta.state = Some(state.into());
            meta.write(data)?;
        }
    }
    Ok((address, warnings, finished))
}

/// The address of a recorded static configuration (`ADDRESS/PREFIX`, `meta.static_ipv4`).
fn static_host(cidr: &str) -> Option<std::net::Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

/// Whether the domain runs (a paused or crashed guest ignores a shutdown request).
fn running(hv: &Hypervisor, name: &str) -> Result<bool> {
    Ok(hv
        .domain(name)?
        .is_some_and(|d| d.state == virtup_libvirt::DomainState::Running))
}

/// Undefines the domain and deletes the volumes observe proved its own, then forgets it.
fn delete(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    volumes: &[String],
) -> Result<()> {
    let name = &req.desired.name;
    // Recorded before the domain goes (volumes of older versions have no record yet): a run killed
    // after the undefine leaves volumes the next `absent` can prove.
    let mut ledger = Ledger::read(data, name)?;
    for v in volumes {
        if let Some(info) = hv.volume_info(&req.pool, v)? {
            ledger.confirm(data, &req.uri, &req.pool, v, &info.key)?;
        }
    }
    ledger.attach(data, &req.uri, &req.pool, volumes)?;
    // What this delete leaves (a data disk to keep) is let go of before anything goes: a run
    // killed from here on must find no record that proves it virtup's, or a later `absent` would
    // delete it as a leftover.
    let let_go: Vec<String> = ledger
        .volumes
        .iter()
        .filter(|v| v.uri == req.uri && v.pool == req.pool && !volumes.contains(&v.name))
        .map(|v| v.name.clone())
        .collect();
    for v in &let_go {
        ledger.forget(data, &req.uri, &req.pool, v)?;
    }
    hv.undefine(name)?;
    delete_owned(data, hv, req, volumes)?;
    forget(ctx, data, name)
}

/// The address where the running instance answers on SSH with its pinned key, kept in its metadata;
/// and, for a guest this run booted, what its first boot noted it did not do, as warnings.
fn reachable(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    started: bool,
    reporter: &dyn Reporter,
) -> Result<(IpAddr, Vec<String>)> {
    let name = &req.desired.name;
    let meta =
        InstanceMeta::read(data, name)?.ok_or_else(|| anyhow!("metadata of `{name}` vanished"))?;
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
    let still_there = match cached {
        Some(ip) if !started => reach::ssh_answers(
            data,
            &login,
            ip,
            virtup_guest::ssh::Hop::from_uri(hv.uri()).as_ref(),
        )
        .ok()
        .map(|notes| (ip, notes)),
        _ => None,
    };
    let (ip, notes) = match still_there {
        Some(proven) => proven,
        None => reach::wait_for_ssh(
            hv,
            data,
            &reach::Target {
                domain: name,
                login,
                mac: meta.mac.as_deref(),
                sources: &req.sources,
                dns_name: req.fqdn.as_deref().unwrap_or(name),
                known: meta
                    .static_ipv4
                    .as_deref()
                    .and_then(static_host)
                    .map(IpAddr::V4),
                timeout: req.wait_timeout,
            },
            reporter,
        )?,
    };
    let first_proof = meta.address.is_none();
    if meta.address.as_deref() != Some(ip.to_string().as_str()) {
        let _g = data.lock(&format!("meta-{name}"), SHORT_LOCK_TIMEOUT)?;
        let mut meta = meta;
        meta.address = Some(ip.to_string());
        meta.write(data)?;
    }
    // The notes are in the guest's /run: a guest this run booted has just made them (at its first
    // boot, or none at a later one); one that was up already told them to the run that proved it
    // first, which recorded its address (a run killed before that proof left none).
    let warnings = match started || first_proof {
        true => notes
            .into_iter()
            .map(|n| format!("`{name}`'s first boot: {n}"))
            .collect(),
        false => Vec::new(),
    };
    Ok((ip, warnings))
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
    // Runs before this one deleted every volume the ledger could prove; what it still lists is gone
    // or let go of. Discarded before the metadata: a run killed in between leaves the metadata, and
    // the next `absent` forgets again, rather than a ledger whose kept disk no record explains.
    Ledger::discard(data, name)?;
    InstanceMeta::remove(data, name)?;
    Ok(())
}

/// A fresh warm clone's first start: the image and what to hot-plug once it runs.
struct Resume {
    warm: WarmStart,
    disk_path: String,
    nics: Vec<NicSpec>,
    data_disks: Vec<(DiskSpec, String)>,
    config_disk: DiskSpec,
    static_address: bool,
}

fn resume_warm(
    data: &DataDir,
    hv: &Hypervisor,
    name: &str,
    r: &Resume,
    reporter: &dyn Reporter,
) -> Result<()> {
    let started = Instant::now();
    crate::warm::resume(
        data,
        hv,
        &r.warm,
        &crate::warm::ResumeInput {
            name,
            disk_path: &r.disk_path,
            nics: &r.nics,
            data_disks: &r.data_disks,
            config_disk: &r.config_disk,
            static_address: r.static_address,
        },
    )
    .with_context(|| format!("cannot resume `{name}` from its template's warm image"))?;
    reporter.note(&format!(
        "virtup_instance: `{name}` resumed from the warm image of generation {} in {:.1}s",
        r.warm.record.generation,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `cloud_init` can work on this instance: its template has cloud-init, told to leave virtup's
/// identity alone (read from the generation's disk, once), and its network config leaves the
/// guest's first NIC to one writer. Checked before anything is made. What cannot be read from here
/// (a remote hypervisor's pool) is a warning. Returns the warnings and the look, which a create
/// remembers.
fn check_cloud_init(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    cloud: &CloudInit,
    tpl: &crate::template::CurrentDisk,
) -> Result<(Vec<String>, Option<crate::cloud_init::Look>)> {
    if cloud.network_config.is_some() && req.static_address {
        bail!(
            "invalid value for `cloud_init.network_config`: `address_mode: static` has the first boot \
             write the guest's network config, and cloud-init would write another; give the address \
             in your network_config (keep `address` as a reservation with `address_mode: dhcp`), or \
             leave network_config out"
        );
    }
    if tpl.running {
        // Its disk is changing (the plan refuses to clone it): nothing to read yet.
        return Ok((Vec::new(), None));
    }
    let scope = context::template_scope(&req.desired.template, &req.uri);
    let accel = || Ok(crate::virt_choice::choose(hv, data)?.virt_type);
    let Some(look) = crate::cloud_init::look(data, hv, &scope, tpl, accel)? else {
        return Ok((
            vec![format!(
                "`cloud_init`: cannot tell from here whether template `{}` on `{}` has cloud-init \
                 (its disk is out of this machine's reach); without it the data is ignored",
                req.desired.template, req.uri
            )],
            None,
        ));
    };
    if !look.facts.cloud_init {
        bail!(
            "invalid value for `cloud_init`: template `{}` has no cloud-init (generation {} has no \
             {}), so nothing in the guest would read this data; use a template made from a cloud \
             image or one whose build installs cloud-init, or leave `cloud_init` out",
            req.desired.template,
            tpl.generation,
            crate::cloud_init::CLOUD_INIT_BINARY
        );
    }
    if !look.facts.keeps_identity {
        bail!(
            "invalid value for `cloud_init`: template `{}` has cloud-init but not {} (it was \
             installed after virtup's settings were written, by an older virtup or by hand), so \
             cloud-init would replace the instance's pinned SSH host keys; build a new generation \
             (change its `revision`), or leave `cloud_init` out",
            req.desired.template,
            crate::cloud_init::KEEP_FILE
        );
    }
    Ok((Vec::new(), Some(look)))
}

/// Every NIC of `nics` has somewhere to plug in on the hypervisor: its libvirt network (active, for a
/// guest to start now), a Linux bridge, an Ethernet device for macvtap. Checked before anything is
/// made, since libvirt itself would only refuse when the guest starts, after the disks and the
/// definition exist. On this machine's hypervisor sysfs says what each interface is; a remote one
/// is asked through libvirt's interface driver, whose answer is only a hint (see
/// [`Hypervisor::host_interface_type`]): what it cannot confirm is a warning, not a refusal.
fn check_nic_sources(hv: &Hypervisor, req: &Request) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    // libvirt's test driver is local by its URI, but its host is its own fiction: ask it.
    let this_machine = hv.is_local() && !hv.uri().starts_with("test:");
    for (i, nic) in req.nics.iter().flatten().enumerate() {
        let at = format!("nics[{}]", i + 1);
        let refuse = |key: &str, why: String| -> Result<Vec<String>> {
            bail!("invalid value for `{at}.{key}`: {why} on `{}`", req.uri)
        };
        match &nic.nic {
            Nic::Network(n) => match hv.network(n)? {
                None => return refuse("network", format!("libvirt network `{n}` does not exist")),
                Some(info)
                    if !info.active
                        && matches!(
                            req.desired.state,
                            InstanceState::Running | InstanceState::Suspended
                        ) =>
                {
                    return refuse(
                        "network",
                        format!(
                            "libvirt network `{n}` is not active, so the guest could not start \
                             (`virsh net-start {n}`)"
                        ),
                    )
                }
                Some(_) => {}
            },
            Nic::Bridge(b) if this_machine => match LocalInterface::of(b) {
                LocalInterface::Bridge => {}
                LocalInterface::Missing => match hv.host_interface_type(b) {
                    Ok(Some(_)) => warnings.push(not_in_sysfs(&at, "bridge", b)),
                    _ => return refuse("bridge", format!("the host has no interface `{b}`")),
                },
                _ => {
                    return refuse(
                        "bridge",
                        format!(
                            "`{b}` is not a Linux bridge (an Open vSwitch bridge or a plain device \
                             is not offered; a device goes in `direct`)"
                        ),
                    )
                }
            },
            Nic::Direct { dev, .. } if this_machine => match LocalInterface::of(dev) {
                LocalInterface::Ethernet | LocalInterface::Bridge => {}
                LocalInterface::Missing => match hv.host_interface_type(dev) {
                    Ok(Some(_)) => warnings.push(not_in_sysfs(&at, "direct", dev)),
                    _ => return refuse("direct", format!("the host has no interface `{dev}`")),
                },
                LocalInterface::BridgePort => {
                    return refuse(
                        "direct",
                        format!(
                        "`{dev}` is a port of a bridge, which macvtap cannot share; put the NIC \
                             on that bridge (`bridge`)"
                    ),
                    )
                }
                LocalInterface::Other(kind) => {
                    return refuse(
                        "direct",
                        format!("`{dev}` is not an Ethernet device (link type {kind})"),
                    )
                }
            },
            Nic::Bridge(name) | Nic::Direct { dev: name, .. } => {
                let key = nic.nic.kind();
                let doubt = match hv.host_interface_type(name) {
                    Ok(Some(kind)) if key == "bridge" && kind != "bridge" => {
                        Some(format!("libvirt lists it as `{kind}`, not as a bridge"))
                    }
                    Ok(Some(_)) => None,
                    Ok(None) => Some("libvirt's interface driver does not list it".to_owned()),
                    Err(e) => Some(format!("libvirt cannot say ({e})")),
                };
                if let Some(doubt) = doubt {
                    warnings.push(format!(
                        "`{at}.{key}`: `{name}` on `{}` is not confirmed: {doubt}; the guest's \
                         start will tell",
                        req.uri
                    ));
                }
            }
        }
    }
    Ok(warnings)
}

/// The warning for an interface libvirt lists but this process's sysfs does not show: virtup runs
/// in another network namespace than libvirtd (a container with the host's socket, say), so what
/// sysfs says of the host's interfaces is not to be trusted; the guest's start will tell.
fn not_in_sysfs(at: &str, key: &str, name: &str) -> String {
    format!(
        "`{at}.{key}`: `{name}` is listed by libvirt but not in this machine's /sys/class/net (is \
         virtup running in another network namespace than libvirtd?); the guest's start will tell"
    )
}

/// What this machine's sysfs says of a network interface (the name is a checked interface name,
/// so it is one path component).
#[derive(Debug, PartialEq, Eq)]
enum LocalInterface {
    Missing,
    Bridge,
    /// Enslaved to a bridge.
    BridgePort,
    /// Link type 1 (ARPHRD_ETHER), not a bridge or its port.
    Ethernet,
    /// Another link type (loopback 772, tunnels, …).
    Other(String),
}

impl LocalInterface {
    fn of(name: &str) -> LocalInterface {
        Self::at(Path::new("/sys/class/net"), name)
    }

    fn at(sysfs_net: &Path, name: &str) -> LocalInterface {
        let dir = sysfs_net.join(name);
        if !dir.exists() {
            LocalInterface::Missing
        } else if dir.join("bridge").is_dir() {
            LocalInterface::Bridge
        } else if dir.join("brport").exists() {
            LocalInterface::BridgePort
        } else {
            match std::fs::read_to_string(dir.join("type")) {
                Ok(t) if t.trim() == "1" => LocalInterface::Ethernet,
                Ok(t) => LocalInterface::Other(t.trim().to_owned()),
                Err(_) => LocalInterface::Other("unknown".into()),
            }
        }
    }
}

/// Whether a fresh clone resumes warm: `Ok(None)` boots it cold. `boot: warm` that cannot be
/// honoured is an error here, before the clone's first volume.
fn warm_choice(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    tpl: &TemplateDisk,
    accel: VirtType,
    reporter: &dyn Reporter,
) -> Result<Option<WarmStart>> {
    if req.boot == Boot::Cold {
        return Ok(None);
    }
    let scope = context::template_scope(&req.desired.template, &req.uri);
    // A template without a warm image is the common case: `auto` boots cold without a word.
    if req.boot == Boot::Auto
        && crate::warm::WarmRecord::read(data, &scope, tpl.generation)?.is_none()
    {
        return Ok(None);
    }
    let why_not = if req.desired.state != InstanceState::Running {
        Err("it is not started now (`state: running` resumes it)".to_owned())
    } else if req.desired.customize != Customize::Auto {
        Err("virt-sysprep prepares its disk (a config disk gives a warm clone its identity)".into())
    } else if req.desired.clone != CloneKind::Linked || req.format != ImageFormat::Qcow2 {
        Err("a warm clone is a linked qcow2 clone (its disk rests on the seed's)".into())
    } else if req
        .data_disks()
        .iter()
        .any(|d| d.bus != DataDiskBus::Virtio)
    {
        Err("it has a SCSI data disk, and the seed has no SCSI controller to plug it into".into())
    } else if req.cloud_init.is_some() {
        Err("cloud-init ran in the seed's boot already, before `cloud_init`'s data existed".into())
    } else if req.graphics != Graphics::None {
        Err("the seed has no graphics to resume with (`graphics: none` resumes warm)".into())
    } else if req.size.is_some_and(|size| {
        hv.volume_info(&req.pool, &tpl.volume)
            .ok()
            .flatten()
            .is_some_and(|t| size > t.capacity_bytes)
    }) {
        Err("a disk larger than the template's would not be seen by the resumed kernel".into())
    } else {
        crate::warm::usable(
            data,
            hv,
            &scope,
            &req.pool,
            tpl.generation,
            accel,
            req.desired.memory_mib,
            req.desired.vcpus,
        )?
    };
    match (why_not, req.boot) {
        (Ok(warm), _) => Ok(Some(warm)),
        (Err(why), Boot::Warm) => bail!(
            "invalid value for `boot`: `{}` cannot resume warm: {why}",
            req.desired.name
        ),
        (Err(why), _) => {
            reporter.note(&format!(
                "virtup_instance: `{}` boots cold: {why}",
                req.desired.name
            ));
            Ok(None)
        }
    }
}

fn create(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    reporter: &dyn Reporter,
) -> Result<(Option<String>, Option<Resume>)> {
    let name = &req.desired.name;
    let tpl = obs
        .template
        .as_ref()
        .ok_or_else(|| anyhow!("template `{}` vanished", req.desired.template))?;
    // Made before the first volume, so that failing to make it leaves nothing behind.
    let owner = data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    if let Some(look) = &obs.cloud_init_look {
        look.remember()?;
    }
    let started = Instant::now();
    // Before the first volume too: the clone's domain (and virt-sysprep here) run under it.
    let choice = crate::virt_choice::choose(hv, data)?;
    reporter.note(&format!(
        "virtup_instance: guests of `{}` run under {}: {}",
        req.uri,
        choice.virt_type.as_str(),
        choice.reason
    ));
    // Said as a warning too (as a template build does), unless the user chose TCG.
    let warning = (choice.virt_type == VirtType::Qemu
        && std::env::var_os(virtup_core::VIRT_TYPE_ENV).is_none())
    .then(|| choice.reason.clone());
    let accel = choice.virt_type;
    let warm = warm_choice(data, hv, req, tpl, accel, reporter)?;
    // A reservation made just before (this run's first step) wrote the metadata and chose the MAC.
    let on_disk = InstanceMeta::read(data, name)?;
    let mac = match (&obs.mac, on_disk.as_ref().and_then(|m| m.mac.clone())) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m,
        (None, None) => virtup_core::ensure_mac(data, name, &BTreeSet::new(), SHORT_LOCK_TIMEOUT)?,
    };
    // Before the first volume: a network that changed since observe fails the run here.
    let static_ipv4 = static_ipv4(hv, req, &obs.network, &mac)?;
    // Each further NIC keeps its MAC across a re-create too, under its own key.
    let extra_macs = (1..=req.extra_nics().len())
        .map(|i| {
            virtup_core::ensure_mac(
                data,
                &nic::mac_key(name, i),
                &BTreeSet::from([mac.clone()]),
                SHORT_LOCK_TIMEOUT,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let user_key = keys::ensure_user_key(&data.sshkeys_dir(), &req.user)?;
    let host_keys = keys::generate_host_keys(&data.hostkeys_dir(), name)?;
    let mut ledger = Ledger::read(data, name)?;
    let existing = hv
        .list_volumes(&req.pool)?
        .into_iter()
        .map(|v| v.name)
        .collect();
    ledger.prune_pending(data, &req.uri, &req.pool, &existing)?;
    let mut meta = on_disk.unwrap_or_else(|| InstanceMeta::new(name, &req.desired.template));
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
    // Recorded with "creating": a run killed after the define leaves a record of what the guest
    // was given (a kept disk counts only once the ledger has it attached).
    meta.data_disks = req.data_disks().to_vec();
    meta.static_ipv4 = static_ipv4
        .as_ref()
        .map(|s| format!("{}/{}", s.address, s.prefix));
    meta.extra_nics = req
        .extra_nics()
        .iter()
        .zip(&extra_macs)
        .map(|(nic, mac)| MadeNic {
            nic: nic.nic.clone(),
            mac: mac.clone(),
            model: nic.model,
        })
        .collect();
    meta.nic_model = Some(req.first_nic_model());
    meta.cloud_init_digest = req.cloud_init.as_ref().map(CloudInit::digest);
    meta.inventory = req.inventory;
    // A new instance is in the groups its task declares, never in those an earlier instance of
    // the name left in the records (as the diff shows it).
    meta.groups = req.desired.groups.clone().unwrap_or_default();
    meta.state = Some("creating".into());
    meta.write(data)?;

    // A warm clone's disk rests on the seed's disk (itself an overlay of the generation).
    let base = match &warm {
        Some(w) => TemplateDisk {
            generation: tpl.generation,
            volume: w.record.disk_volume.clone(),
            path: w.record.disk_path.clone(),
            capacity_bytes: tpl.capacity_bytes,
            firstboot: tpl.firstboot,
        },
        None => tpl.clone(),
    };
    let disk = clone_disk(data, hv, req, &mut ledger, &base)?;
    let (data_disks, filesystems) = make_data_disks(data, hv, req, &mut ledger)?;
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
        grow_root: req.size.is_some_and(|s| s > tpl.capacity_bytes),
        filesystems: &filesystems,
        static_ipv4: static_ipv4.clone(),
        cloud_init: req.cloud_init.as_ref(),
    }
    .build()?;
    let mut disks = identity_disks(data, hv, req, &mut ledger, &disk, tpl, &identity, accel)?;
    // After the config disk, which is the second (a warm resume plugs it in after the data disks).
    disks.extend(data_disks);
    let spec = domain_spec(req, tpl, disks, &mac, &extra_macs, owner, accel)?;
    let resume = match warm {
        Some(warm) => Some(Resume {
            warm,
            disk_path: disk.path.clone(),
            nics: spec.nics.clone(),
            // After the root and config disks, in the definition's order and targets.
            data_disks: spec
                .disks
                .iter()
                .cloned()
                .zip(spec.disk_targets())
                .skip(2)
                .collect(),
            config_disk: spec
                .disks
                .get(1)
                .cloned()
                .ok_or_else(|| anyhow!("a warm clone has a config disk"))?,
            static_address: static_ipv4.is_some(),
        }),
        None => None,
    };
    // Pinned before the define: once the domain exists a later run finds nothing to do, so a run
    // killed in between must not leave an instance whose key nobody trusts. (Killed before the
    // define, the line is replaced when the next run makes the instance with new keys.)
    known_hosts::set(data, name, &host_keys.public_openssh, SHORT_LOCK_TIMEOUT)?;
    hv.define(&spec)?;
    ledger.attach(data, &req.uri, &req.pool, &req.volume_names())?;
    meta.state = Some("present".into());
    meta.volumes = req.deleted_with_instance();
    meta.write(data)?;
    reporter.note(&format!(
        "virtup_instance: created `{name}` in {:.3}s",
        started.elapsed().as_secs_f64()
    ));
    Ok((warning, resume))
}

/// The clone's disk: an overlay on the template's generation (linked qcow2), else a full copy,
/// at least as large as the template and `size`.
fn clone_disk(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    ledger: &mut Ledger,
    tpl: &TemplateDisk,
) -> Result<VolumeInfo> {
    let disk_volume = req.disk_volume();
    let format = req.format;
    let template_info = hv
        .volume_info(&req.pool, &tpl.volume)?
        .ok_or_else(|| anyhow!("template volume `{}` vanished", tpl.volume))?;
    let capacity = req.size.unwrap_or(0).max(template_info.capacity_bytes);
    let template_format = template_info
        .format
        .as_deref()
        .and_then(ImageFormat::from_name)
        .unwrap_or(ImageFormat::Qcow2);
    let linked = matches!(
        (req.desired.clone, format),
        (CloneKind::Linked, ImageFormat::Qcow2)
    );
    let disk = create_owned(
        data,
        ledger,
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
    Ok(disk)
}

/// The guest's static address (`address_mode: static`): `address` in the subnet of the instance's
/// libvirt network that holds it, with the network's own address as gateway and DNS server (its
/// dnsmasq answers DNS), as DHCP would have given them. Its reservation keeps the address from
/// being handed to another guest, and gives it to this one should its network config not apply.
fn static_ipv4(
    hv: &Hypervisor,
    req: &Request,
    network: &str,
    mac: &str,
) -> Result<Option<virtup_guest::StaticIpv4>> {
    let (true, Some(address)) = (req.static_address, req.desired.address) else {
        return Ok(None);
    };
    let dhcp = hv.network_dhcp(network)?;
    let subnet = dhcp
        .live
        .iter()
        .find(|s| s.contains(address))
        .ok_or_else(|| anyhow!("{address} is not in network `{network}` (it was a moment ago)"))?;
    // What libvirt's dnsmasq would have handed the guest with a lease, no more: no router on an
    // isolated network, no DNS server where the network's DNS is off.
    let options = &dhcp.options;
    let config = virtup_guest::StaticIpv4 {
        mac: mac.to_ascii_lowercase(),
        address,
        prefix: subnet.prefix,
        gateway: options.router.then_some(subnet.address),
        dns: if options.dns {
            vec![subnet.address]
        } else {
            Vec::new()
        },
        mtu: options.mtu,
        domain: options.domain.clone(),
    };
    // Checked here, before the first volume (the config disk checks it again).
    config.check().map_err(|e| {
        anyhow!(
            "invalid value for `address_mode`: the guest cannot be given network `{network}`'s \
             settings by hand: {e}; use `address_mode: dhcp`"
        )
    })?;
    Ok(Some(config))
}

/// The instance's data disks: blank volumes it owns (recorded before, confirmed after each is
/// made), attached by serial; and the filesystems its first boot makes on them.
fn make_data_disks(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    ledger: &mut Ledger,
) -> Result<(Vec<DiskSpec>, Vec<virtup_guest::DataFilesystem>)> {
    let mut specs = Vec::new();
    let mut filesystems = Vec::new();
    for (i, d) in req.data_disks().iter().enumerate() {
        let volume = data_disk::volume_name(&req.desired.name, i, d.format);
        let made = create_owned(data, ledger, req, &volume, None, || {
            Ok(hv.create_volume(&req.pool, &VolumeSpec::new(&volume, d.size, d.format))?)
        })?;
        let serial = data_disk::serial(i);
        specs.push(DiskSpec {
            path: made.path,
            format: d.format,
            device: DiskDevice::Disk,
            bus: match d.bus {
                DataDiskBus::Virtio => DiskBus::Virtio,
                DataDiskBus::Scsi => DiskBus::Scsi,
            },
            readonly: false,
            serial: Some(serial.clone()),
        });
        if let Some(filesystem) = d.filesystem {
            filesystems.push(virtup_guest::DataFilesystem {
                serial,
                filesystem,
                mount: d.mount.clone(),
            });
        }
    }
    Ok((specs, filesystems))
}

/// The disks that give the clone its identity: a config disk beside its own, or virt-sysprep
/// writing the identity into it.
// Each argument is a separate part of the create (records, connection, request, the two disks, the
// identity, the accelerator); bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
fn identity_disks(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    ledger: &mut Ledger,
    disk: &VolumeInfo,
    tpl: &TemplateDisk,
    identity: &virtup_guest::Identity,
    accel: VirtType,
) -> Result<Vec<DiskSpec>> {
    let config_volume = req.config_volume();
    let mut disks = vec![DiskSpec::disk(&disk.path, req.format)];
    match req.desired.customize {
        Customize::Auto => {
            disks.push(config_disk(
                data,
                hv,
                req,
                ledger,
                &config_volume,
                identity,
                ConfigDiskKind::Virtup,
            )?);
        }
        Customize::Sysprep => {
            // Private (0700, swept if this run is killed): the staged files hold host private keys.
            let stage_dir = data.scratch()?;
            let staged = config_disk::stage(identity, ConfigDiskKind::Virtup, stage_dir.path())?;
            // virt-sysprep runs here, whatever hypervisor the clone is for.
            let appliance = crate::appliance_virt_type(hv, || Ok(accel))?;
            let sysprep_file = |path: &Path| -> Result<()> {
                let mut sp = VirtSysprep::new(path);
                sp.format = Some(req.format.as_str().to_owned());
                sp.ops = sysprep::identity_ops(&staged)?;
                sp.extra_args = req.virt_sysprep_args.clone();
                let mut cmd = sp.cmd()?;
                crate::appliance_env(&mut cmd, hv, appliance);
                run_tool(&cmd, "virt-sysprep could not prepare the clone")
            };
            if hv.is_local() {
                sysprep_file(Path::new(&disk.path))?;
            } else {
                // A remote pool's file is out of virt-sysprep's reach: it works on a copy (linked to
                // a copy of the generation), which goes back into the same volume.
                let volume = req.disk_volume();
                (|| {
                    let copy =
                        VolumeCopy::download(data, hv, &req.pool, &volume, req.format.as_str())?;
                    copy.work_on(hv, &req.pool, &tpl.volume, &tpl.path, sysprep_file)?;
                    copy.write_back(hv, &req.pool, || Ok(()))
                })()
                .with_context(|| {
                    format!(
                        "cannot prepare instance `{}` on `{}` with virt-sysprep (run here on a copy \
                         of `{volume}` in the data dir)",
                        req.desired.name, req.uri
                    )
                })?;
            }
        }
    }
    if req.cloud_init.is_some() {
        // The user's cloud-init data on a disk of its own, labelled `cidata` as NoCloud looks for:
        // cloud-init never reads the VIRTUPCFG disk, which holds the guest's secrets.
        disks.push(config_disk(
            data,
            hv,
            req,
            ledger,
            &req.seed_volume(),
            identity,
            ConfigDiskKind::NoCloud,
        )?);
    }
    Ok(disks)
}

/// A config disk of `kind`, made as an owned volume and attached as a read-only raw virtio disk
/// whose serial is its label: kernels with virtio drivers only see no IDE/SATA cdrom.
fn config_disk(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    ledger: &mut Ledger,
    volume: &str,
    identity: &virtup_guest::Identity,
    kind: ConfigDiskKind,
) -> Result<DiskSpec> {
    let uploaded = create_owned(data, ledger, req, volume, None, || {
        upload_config_disk(hv, data, &req.pool, volume, identity, kind)
    })?;
    Ok(DiskSpec {
        path: uploaded.path,
        format: ImageFormat::Raw,
        device: DiskDevice::Disk,
        bus: DiskBus::Virtio,
        readonly: true,
        serial: Some(kind.label().into()),
    })
}

/// The clone's domain, tagged with what proves it this data dir's: its template, generation,
/// volumes, user and owner id.
fn domain_spec(
    req: &Request,
    tpl: &TemplateDisk,
    disks: Vec<DiskSpec>,
    mac: &str,
    extra_macs: &[String],
    owner: String,
    virt_type: VirtType,
) -> Result<DomainSpec> {
    let name = &req.desired.name;
    let mut spec = DomainSpec::new(name, req.desired.memory_mib, req.desired.vcpus, virt_type);
    spec.disks = disks;
    let first = NicDevice {
        nic: Nic::Network(req.network.clone()),
        model: req.first_nic_model(),
    };
    spec.nics = std::iter::once((&first, mac))
        .chain(
            req.extra_nics()
                .iter()
                .zip(extra_macs.iter().map(String::as_str)),
        )
        .map(|(nic, mac)| NicSpec {
            source: nic.nic.clone(),
            mac: Some(mac.to_owned()),
            model: nic.model,
        })
        .collect();
    spec.graphics = req.graphics;
    let mut tag = VirtupTag::new(TagKind::Instance, name);
    tag.template = Some(req.desired.template.clone());
    tag.generation = tpl.generation;
    tag.owned_volumes = req.deleted_with_instance();
    tag.user = Some(req.user.clone());
    tag.owner = Some(owner);
    spec.metadata = Some(tag);
    Ok(spec)
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
