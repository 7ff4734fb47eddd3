//! Warm clones: a template generation's seed (booted once, waiting for its identity, saved to a memory image) and the clones that resume from it instead of booting.
//!
//! The template module makes the seed ([`make_seed`]): an overlay of the sealed generation, booted as
//! a transient domain with no NIC and no config disk, SMBIOS family `virtup-seed` (its first boot
//! waits for a config disk with no deadline) and the port `dev.virtup.seed` (held open by the guest
//! once it waits), then saved. Both files are pool volumes in the template's ownership ledger and
//! are described by a [`WarmRecord`]. An instance resumes from it ([`resume`]) only when the record
//! matches what the clone would boot as ([`usable`]); otherwise it boots cold.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use virtup_core::datadir::{
    ensure_private_dir, read_json_if_exists, remove_file_if_exists, write_json,
};
use virtup_core::ownership::{check_scope, Ledger, Observed, Proof};
use virtup_core::template::domain_name;
use virtup_core::{DataDir, VirtType};
use virtup_libvirt::{
    warm_clone_xml, DiskSpec, DomainSpec, Hypervisor, ImageFormat, NicSpec, SaveImageHeader,
    TagKind, VirtupTag, VolumeSpec, WarmClone, SEED_FAMILY, SEED_PORT,
};

/// How a fresh clone first runs (`virtup_instance`'s `boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Boot {
    /// Warm when the template has a warm image that fits the clone, else cold.
    #[default]
    Auto,
    /// Warm, or an error before anything is made.
    Warm,
    /// Booted from its disk, as every clone was before warm images.
    Cold,
}

impl Boot {
    pub const WORDS: [&'static str; 3] = ["auto", "warm", "cold"];

    pub fn parse(word: &str) -> Option<Boot> {
        match word {
            "auto" => Some(Boot::Auto),
            "warm" => Some(Boot::Warm),
            "cold" => Some(Boot::Cold),
            _ => None,
        }
    }
}

/// The seed's overlay of a generation: the base every warm clone's disk is an overlay of.
pub fn disk_volume(template: &str, generation: u32) -> String {
    format!("{}-g{generation}-warm.qcow2", domain_name(template))
}

/// The seed's memory image.
pub fn image_volume(template: &str, generation: u32) -> String {
    format!("{}-g{generation}-warm.save", domain_name(template))
}

/// The generation a warm volume name stands for, if it is one of `template`'s.
pub fn volume_generation(template: &str, volume: &str) -> Option<u32> {
    let rest = volume.strip_prefix(&format!("{}-g", domain_name(template)))?;
    let number = rest
        .strip_suffix("-warm.qcow2")
        .or_else(|| rest.strip_suffix("-warm.save"))?;
    if number.starts_with('0') {
        return None;
    }
    number.parse().ok()
}

/// The transient domain a seed runs as while it boots: `@` is in no template's or instance's
/// domain name, so this one is never another object's.
pub fn seed_domain(template: &str) -> String {
    format!("{}@seed", domain_name(template))
}

/// Whether `name` runs as this data dir's seed of `template` (its tag, with the owner id).
fn is_our_seed(hv: &Hypervisor, name: &str, template: &str, owner: &str) -> Result<bool> {
    Ok(hv.domain(name)?.is_some_and(|dom| {
        dom.tag.as_ref().is_some_and(|t| {
            t.is(TagKind::Seed, template) && t.names_owner(Some(owner)) == Some(true)
        })
    }))
}

/// Stops a seed a killed run left running (it is transient: stopped, it is gone). Only this data
/// dir's seed of `template` is touched; anything else under the name is left alone.
pub fn stop_leftover_seed(hv: &Hypervisor, template: &str, owner: &str) -> Result<bool> {
    let name = seed_domain(template);
    if is_our_seed(hv, &name, template, owner)? {
        return match hv.destroy(&name) {
            // A seed that stopped meanwhile (it is transient) is gone already.
            Err(virtup_libvirt::LibvirtError::DomainNotFound(_)) => Ok(false),
            other => other.map(|()| true).map_err(Into::into),
        };
    }
    Ok(false)
}

/// What a warm image was made from and for: a clone resumes from it only when all of it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmRecord {
    pub generation: u32,
    pub uri: String,
    pub pool: String,
    pub disk_volume: String,
    pub disk_path: String,
    pub image_volume: String,
    pub image_path: String,
    /// QEMU's version as libvirt reports it, and libvirt's: a restore needs the same machine model.
    pub hypervisor_version: u64,
    pub libvirt_version: u64,
    pub virt_type: String,
    pub machine: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub image_bytes: u64,
    /// From the seed's start to its saved image.
    pub seconds: f64,
    /// Under KVM, the host's boot: the guest saw the host CPU's features, which a reboot (a new
    /// microcode or kernel) may change. `None` under TCG, whose CPU is QEMU's.
    #[serde(default)]
    pub host_boot_id: Option<String>,
}

/// This machine's boot id (a new one each boot).
fn host_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

fn record_file(data: &DataDir, scope: &str, generation: u32) -> Result<PathBuf> {
    check_scope(scope)?;
    Ok(data
        .root()
        .join("warm")
        .join(format!("{scope}.g{generation}.json")))
}

impl WarmRecord {
    pub fn read(data: &DataDir, scope: &str, generation: u32) -> Result<Option<WarmRecord>> {
        Ok(read_json_if_exists(&record_file(data, scope, generation)?)?)
    }

    fn write(&self, data: &DataDir, scope: &str) -> Result<()> {
        let file = record_file(data, scope, self.generation)?;
        ensure_private_dir(file.parent().expect("warm/ has a parent"))?;
        Ok(write_json(&file, self, 0o600)?)
    }

    pub fn remove(data: &DataDir, scope: &str, generation: u32) -> Result<()> {
        remove_file_if_exists(&record_file(data, scope, generation)?)?;
        Ok(())
    }

    /// Why a clone asking for this shape on `hv` must not resume from the image, if it must not.
    pub fn mismatch(
        &self,
        hv: &Hypervisor,
        pool: &str,
        virt_type: VirtType,
        memory_mib: u64,
        vcpus: u32,
    ) -> Result<Option<String>> {
        let checks = [
            (self.uri == hv.uri(), "hypervisor"),
            (self.pool == pool, "pool"),
            (
                self.hypervisor_version == hv.hypervisor_version()?,
                "QEMU version",
            ),
            (
                self.libvirt_version == hv.libvirt_version()?,
                "libvirt version",
            ),
            (self.virt_type == virt_type.as_str(), "accelerator"),
            (self.memory_mib == memory_mib, "memory"),
            (self.vcpus == vcpus, "vCPUs"),
            (
                self.host_boot_id.is_none() || self.host_boot_id == host_boot_id(),
                "host boot (the host CPU a KVM guest saw may have changed)",
            ),
        ];
        Ok(checks
            .iter()
            .find(|(same, _)| !same)
            .map(|(_, what)| format!("its {what} differs from this clone's")))
    }

    /// Whether both volumes are still the ones the ledger recorded (by key, never by name).
    pub fn proven(&self, hv: &Hypervisor, ledger: &Ledger) -> Result<bool> {
        for name in [&self.disk_volume, &self.image_volume] {
            let Some(info) = hv.volume_info(&self.pool, name)? else {
                return Ok(false);
            };
            let seen = Observed {
                name,
                key: &info.key,
                backing: info.backing.as_deref(),
            };
            if ledger.proof(&self.uri, &self.pool, seen) != Proof::Created {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What the seed is made of: the template's sealed generation and the shape its clones default to.
pub struct SeedInput<'a> {
    pub template: &'a str,
    /// The template's ownership scope (its ledger and records).
    pub scope: &'a str,
    pub uri: &'a str,
    pub pool: &'a str,
    pub pool_path: &'a Path,
    pub generation: u32,
    pub generation_path: &'a str,
    pub generation_format: ImageFormat,
    pub virt_type: VirtType,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub owner: &'a str,
    pub timeout: Duration,
}

/// Boots the seed until its first boot waits for an identity, saves it, and records the image.
/// Whatever fails, the seed domain is gone and what it made is deleted (by its recorded key).
pub fn make_seed(data: &DataDir, hv: &Hypervisor, seed: &SeedInput<'_>) -> Result<WarmRecord> {
    let started = Instant::now();
    let name = seed_domain(seed.template);
    stop_leftover_seed(hv, seed.template, seed.owner)?;
    if hv.domain(&name)?.is_some() {
        bail!(
            "domain `{name}` exists but is not a seed virtup made with this data dir; \
             virtup needs that name for template `{}`'s warm image: remove it, or set `warm: false`",
            seed.template
        );
    }
    let disk_volume = disk_volume(seed.template, seed.generation);
    let image_volume = image_volume(seed.template, seed.generation);
    let mut ledger = Ledger::read(data, seed.scope)?;
    for volume in [&disk_volume, &image_volume] {
        if let Some(info) = hv.volume_info(seed.pool, volume)? {
            let seen = Observed {
                name: volume,
                key: &info.key,
                backing: info.backing.as_deref(),
            };
            match ledger.proof(seed.uri, seed.pool, seen) {
                Proof::Foreign => bail!(
                    "volume `{volume}` exists in pool `{}` but was not made by virtup for template \
                     `{}`; virtup never touches it: delete it yourself, or set `warm: false`",
                    seed.pool,
                    seed.template
                ),
                // An earlier seed of this generation (stale, or cut short): replaced, unless clones
                // rest on its disk (the planner does not seed then; this holds whoever calls).
                _ if !users_of(hv, seed.pool, &info.path)?.is_empty() => bail!(
                    "the warm disk `{volume}` of template `{}` backs clones; it is replaced once they are gone",
                    seed.template
                ),
                _ => {
                    hv.delete_volume(seed.pool, volume)?;
                    ledger.forget(data, seed.uri, seed.pool, volume)?;
                }
            }
        }
    }
    let made = (|| -> Result<WarmRecord> {
        let capacity = hv
            .volume_info(seed.pool, &volume_for_path(seed.generation_path))?
            .map(|v| v.capacity_bytes)
            .unwrap_or(0);
        let mut spec = VolumeSpec::new(&disk_volume, capacity, ImageFormat::Qcow2);
        spec.backing = Some((seed.generation_path.to_owned(), seed.generation_format));
        let disk = create_recorded(
            data,
            &mut ledger,
            seed,
            &disk_volume,
            Some(seed.generation_path),
            || Ok(hv.create_volume(seed.pool, &spec)?),
        )?;

        let mut dom = DomainSpec::new(&name, seed.memory_mib, seed.vcpus, seed.virt_type);
        dom.disks = vec![DiskSpec::disk(&disk.path, ImageFormat::Qcow2)];
        dom.genid = true;
        dom.smbios_family = Some(SEED_FAMILY.into());
        dom.ports = vec![SEED_PORT.into()];
        let mut tag = VirtupTag::new(TagKind::Seed, seed.template);
        tag.generation = seed.generation;
        tag.owner = Some(seed.owner.to_owned());
        dom.metadata = Some(tag);
        hv.create_transient(&dom)?;
        wait_until_waiting(hv, &name, seed.timeout)?;
        let machine = virtup_libvirt::parse_domain_xml(&hv.xml(&name)?)?.machine;

        // The image's volume is made (and recorded) before libvirt writes it: a name another took
        // meanwhile is refused here, never truncated and claimed by the save.
        let made = create_recorded(data, &mut ledger, seed, &image_volume, None, || {
            Ok(hv.create_volume(
                seed.pool,
                &VolumeSpec::new(&image_volume, 1, ImageFormat::Raw),
            )?)
        })?;
        hv.save(&name, Path::new(&made.path))?;
        hv.refresh_pool(seed.pool)?;
        let image = hv.volume_info(seed.pool, &image_volume)?.ok_or_else(|| {
            anyhow!(
                "the saved image `{image_volume}` is not in pool `{}`",
                seed.pool
            )
        })?;
        ledger.confirm(data, seed.uri, seed.pool, &image_volume, &image.key)?;
        // What a restore will read: a finished image whose header virtup can rewrite.
        SaveImageHeader::read(Path::new(&image.path))?;
        Ok(WarmRecord {
            generation: seed.generation,
            uri: seed.uri.to_owned(),
            pool: seed.pool.to_owned(),
            disk_volume: disk_volume.clone(),
            disk_path: disk.path,
            image_volume: image_volume.clone(),
            image_path: image.path,
            hypervisor_version: hv.hypervisor_version()?,
            libvirt_version: hv.libvirt_version()?,
            virt_type: seed.virt_type.as_str().to_owned(),
            machine,
            memory_mib: seed.memory_mib,
            vcpus: seed.vcpus,
            image_bytes: image.allocation_bytes.max(image.capacity_bytes),
            seconds: started.elapsed().as_secs_f64(),
            host_boot_id: (seed.virt_type == VirtType::Kvm)
                .then(host_boot_id)
                .flatten(),
        })
    })();
    match made {
        Ok(record) => {
            record.write(data, seed.scope)?;
            Ok(record)
        }
        Err(e) => {
            // Best effort: the error that stopped the seed is the one to report. Only our seed
            // is stopped: a domain that took the name meanwhile is not.
            let _ = stop_leftover_seed(hv, seed.template, seed.owner);
            remove(
                data,
                hv,
                seed.scope,
                seed.uri,
                seed.pool,
                seed.template,
                seed.generation,
            )
            .ok();
            Err(e.context(format!(
                "cannot make the warm image of template `{}` generation {}",
                seed.template, seed.generation
            )))
        }
    }
}

/// Creates a volume the template owns: recorded as pending (its name was seen free under the
/// template's lock), created, then recorded with its key. A failed create forgets the record at
/// once, so a volume another made under the name meanwhile is never taken for ours.
fn create_recorded(
    data: &DataDir,
    ledger: &mut Ledger,
    seed: &SeedInput<'_>,
    volume: &str,
    backing: Option<&str>,
    create: impl FnOnce() -> Result<virtup_libvirt::VolumeInfo>,
) -> Result<virtup_libvirt::VolumeInfo> {
    ledger.intend(data, seed.uri, seed.pool, volume, backing)?;
    match create() {
        Ok(info) => {
            ledger.confirm(data, seed.uri, seed.pool, volume, &info.key)?;
            Ok(info)
        }
        Err(e) => {
            ledger.forget(data, seed.uri, seed.pool, volume)?;
            Err(e)
        }
    }
}

/// The pool volume name of a path in a directory pool (its file name).
fn volume_for_path(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Waits until the seed's first boot holds its port open: it waits for an identity, and nothing
/// it does from here on depends on which machine it is.
fn wait_until_waiting(hv: &Hypervisor, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if hv.domain(name)?.is_none() {
            bail!(
                "the seed `{name}` stopped before its first boot waited for an identity: a guest \
                 that cannot make its kernel reseed its random number generator (it needs perl and \
                 Linux 4.17 or later) powers off rather than be copied"
            );
        }
        if hv.port_connected(name, SEED_PORT)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the seed `{name}` did not reach its first boot's wait within {} s (see `virsh console {name}`)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Volumes in `pool` whose backing file is `path`: clones resting on a warm image's disk.
fn users_of(hv: &Hypervisor, pool: &str, path: &str) -> Result<Vec<String>> {
    Ok(hv
        .list_volumes(pool)?
        .into_iter()
        .filter(|v| v.backing.as_deref() == Some(path))
        .map(|v| v.name)
        .collect())
}

/// Deletes a generation's warm volumes the ledger proves virtup's, and their record. While clones
/// rest on the warm disk only the record goes (no new clone resumes from it); the volumes go with
/// the generation, which outlives its clones.
pub fn remove(
    data: &DataDir,
    hv: &Hypervisor,
    scope: &str,
    uri: &str,
    pool: &str,
    template: &str,
    generation: u32,
) -> Result<()> {
    // A volume libvirt has not listed yet must not lose its record.
    hv.refresh_pool(pool)?;
    WarmRecord::remove(data, scope, generation)?;
    if let Some(disk) = hv.volume_info(pool, &disk_volume(template, generation))? {
        if !users_of(hv, pool, &disk.path)?.is_empty() {
            return Ok(());
        }
    }
    let mut ledger = Ledger::read(data, scope)?;
    for volume in [
        image_volume(template, generation),
        disk_volume(template, generation),
    ] {
        if ledger.entry(uri, pool, &volume).is_none() {
            continue;
        }
        if let Some(info) = hv.volume_info(pool, &volume)? {
            let seen = Observed {
                name: &volume,
                key: &info.key,
                backing: info.backing.as_deref(),
            };
            if ledger.proof(uri, pool, seen) != Proof::Foreign {
                hv.delete_volume(pool, &volume)?;
            }
        }
        ledger.forget(data, uri, pool, &volume)?;
    }
    Ok(())
}

/// What a fresh clone resumes with, decided before its first volume is made.
pub struct WarmStart {
    pub record: WarmRecord,
}

/// The template's warm image when a clone of this shape may resume from it; else why not.
// Each argument is one thing the image must match; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn usable(
    data: &DataDir,
    hv: &Hypervisor,
    scope: &str,
    pool: &str,
    generation: u32,
    virt_type: VirtType,
    memory_mib: u64,
    vcpus: u32,
) -> Result<std::result::Result<WarmStart, String>> {
    if !hv.is_local() {
        return Ok(Err(
            "warm images are made and read on the hypervisor's own machine only".into(),
        ));
    }
    let Some(record) = WarmRecord::read(data, scope, generation)? else {
        return Ok(Err(format!(
            "generation {generation} has no warm image (template `warm: true` makes one)"
        )));
    };
    if let Some(why) = record.mismatch(hv, pool, virt_type, memory_mib, vcpus)? {
        return Ok(Err(format!(
            "the warm image of generation {generation} does not fit: {why}"
        )));
    }
    // PCI hot-plug into the root bus needs free slots, which i440fx (`pc`) has; q35 and arm's
    // `virt` need root ports the seed was not given.
    if !record
        .machine
        .as_deref()
        .is_some_and(|m| m == "pc" || m.starts_with("pc-i440fx"))
    {
        return Ok(Err(format!(
            "the warm image of generation {generation} runs machine `{}`, which virtup cannot hot-plug a NIC into (only `pc`)",
            record.machine.as_deref().unwrap_or("unknown")
        )));
    }
    if !record.proven(hv, &Ledger::read(data, scope)?)? {
        return Ok(Err(format!(
            "the warm image of generation {generation} is gone or was replaced by something virtup did not make"
        )));
    }
    Ok(Ok(WarmStart { record }))
}

/// What the defined clone resumes as: its disk, NIC and config disk.
pub struct ResumeInput<'a> {
    pub name: &'a str,
    pub disk_path: &'a str,
    /// The NICs, in order; the first is the one virtup reaches the guest through.
    pub nics: &'a [NicSpec],
    /// The data disks (virtio) with their targets, hot-plugged before the config disk: the first
    /// boot finds them by serial when it applies the identity.
    pub data_disks: &'a [(DiskSpec, String)],
    /// The config disk, hot-plugged last: the guest applies the identity once it sees it.
    pub config_disk: &'a DiskSpec,
    /// Whether the guest is given a static address (`address_mode: static`). It then sends no DHCP
    /// request that a bridge port still learning would drop, so the resume does not wait for the
    /// port: the port's wait overlaps the guest's identity work, and virtup's own connection is
    /// retried until the port forwards. (A guest without systemd-networkd still asks DHCP for its
    /// reserved address; a dropped first request costs it a retransmission, not a wrong address.)
    pub static_address: bool,
}

/// Resumes the defined clone `input.name` from the seed image: a copy of the image whose header
/// names the clone (its UUID, disk, tag, a new VM generation ID) is restored, then the NICs (in
/// order, so the guest names them as a cold boot would) and the config disk are hot-plugged into
/// the running domain only (its definition has them already).
pub fn resume(
    data: &DataDir,
    hv: &Hypervisor,
    warm: &WarmStart,
    input: &ResumeInput<'_>,
) -> Result<()> {
    let name = input.name;
    let dom = hv
        .domain(name)?
        .ok_or_else(|| anyhow!("domain `{name}` vanished before its resume"))?;
    let tag = dom
        .tag
        .clone()
        .ok_or_else(|| anyhow!("domain `{name}` lost its virtup tag before its resume"))?;
    let image = Path::new(&warm.record.image_path);
    let header = SaveImageHeader::read(image)?;
    let genid = random_uuid()?;
    let xml = warm_clone_xml(
        &header.xml,
        &WarmClone {
            name,
            uuid: &dom.uuid,
            genid: &genid,
            disk_path: input.disk_path,
            tag: &tag,
        },
    )?;
    let region = header.with_xml(&xml)?;
    // Private scratch space (0700, swept if this run is killed); libvirtd reads the copy as root.
    let scratch = data.scratch()?;
    let copy = scratch.path().join("resume.save");
    std::fs::copy(image, &copy)
        .with_context(|| format!("cannot copy the warm image `{}`", image.display()))?;
    let file = OpenOptions::new()
        .write(true)
        .open(&copy)
        .with_context(|| format!("cannot open `{}`", copy.display()))?;
    file.write_all_at(&region, 0)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("cannot write the header of `{}`", copy.display()))?;
    drop(file);
    hv.restore(&copy)?;
    drop(scratch);
    // From here the clone runs: if it cannot be given its devices it must not run on, waiting as a
    // seed for a config disk that never comes. Stopped, its next start boots it cold (its definition
    // has both devices).
    let given = (|| -> Result<()> {
        for nic in input.nics {
            hv.attach_live(name, &nic.device_xml()?)?;
        }
        // The first NIC's DHCP request is the one the clone's readiness waits on.
        match input.nics.first() {
            Some(first) if !input.static_address => {
                wait_until_forwarding(hv, name, first.mac.as_deref())
            }
            _ => {}
        }
        for (disk, target) in input.data_disks {
            hv.attach_live(name, &disk.device_xml(target)?)?;
        }
        hv.attach_live(name, &input.config_disk.device_xml("vdb")?)?;
        define_as_running(hv, name, &tag)
    })();
    if let Err(e) = given {
        let _ = hv.destroy(name);
        return Err(e.context(format!(
            "`{name}` was resumed but could not be given its NICs and disks; it is stopped, and its \
             next start boots it cold"
        )));
    }
    Ok(())
}

/// Redefines the resumed clone as it runs (see [`virtup_libvirt::persistent_xml_from_live`]).
fn define_as_running(hv: &Hypervisor, name: &str, tag: &VirtupTag) -> Result<()> {
    let xml = virtup_libvirt::persistent_xml_from_live(&hv.xml(name)?, tag)?;
    hv.define_xml(&xml)?;
    Ok(())
}

/// Finishes a resume a killed run left half done: a running clone that still runs as its seed's
/// copy (its live XML has the seed's port, its definition not yet) gets the NIC and config disk its
/// definition names and is redefined as it runs. Anything else is left as it is. Returns whether
/// it had to act.
pub fn finish_resume(hv: &Hypervisor, name: &str) -> Result<bool> {
    let has_port = |xml: &str| -> Result<bool> {
        let d = virtup_libvirt::parse_domain_xml(xml)?;
        Ok(d.channels.iter().any(|c| c == SEED_PORT))
    };
    let live = hv.xml(name)?;
    let defined = hv.inactive_xml(name)?;
    if !has_port(&live)? || has_port(&defined)? {
        return Ok(false);
    }
    if !hv.port_connected(name, SEED_PORT)? {
        // Its first boot stopped waiting (it gives up after the unit's timeout): given its
        // devices now, nothing would read them. Its definition is still the cold one, so a
        // fresh start boots it as a cold clone.
        hv.destroy(name)?;
        hv.start(name)?;
        return Ok(true);
    }
    let tag = hv
        .tag(name)?
        .ok_or_else(|| anyhow!("domain `{name}` has no virtup tag"))?;
    let live_d = virtup_libvirt::parse_domain_xml(&live)?;
    let def_d = virtup_libvirt::parse_domain_xml(&defined)?;
    // The NICs the defined domain has and the running one lacks, each of the device it was defined
    // with (a resume plugs in what a cold boot would): all known before the first is plugged in.
    let mut missing_nics = Vec::new();
    for nic in &def_d.interfaces {
        let here = live_d.interfaces.iter().any(|l| {
            l.mac.as_deref().map(str::to_ascii_lowercase)
                == nic.mac.as_deref().map(str::to_ascii_lowercase)
        });
        if let (false, Some(source)) = (here, &nic.source) {
            let model = nic.model.as_deref().unwrap_or("virtio");
            missing_nics.push(NicSpec {
                source: source.clone(),
                mac: nic.mac.clone(),
                model: virtup_libvirt::NicModel::parse(model).ok_or_else(|| {
                    anyhow!("domain `{name}` has a NIC of model `{model}`, which virtup does not hot-plug")
                })?,
            });
        }
    }
    for spec in &missing_nics {
        hv.attach_live(name, &spec.device_xml()?)?;
        if matches!(spec.source, virtup_core::nic::Nic::Network(_)) {
            wait_until_forwarding(hv, name, spec.mac.as_deref());
        }
    }
    // Data disks first, then the config disk: the first boot reads the disks it names by serial.
    let serial_of = |d: &virtup_libvirt::ParsedDisk| d.serial.clone().unwrap_or_default();
    let mut missing: Vec<&virtup_libvirt::ParsedDisk> = def_d
        .disks
        .iter()
        .filter(|d| {
            let serial = serial_of(d);
            (serial == virtup_guest::firstboot::CONFIG_LABEL
                || serial.starts_with(virtup_core::data_disk::SERIAL_PREFIX))
                && !live_d.disks.iter().any(|l| serial_of(l) == serial)
        })
        .collect();
    missing.sort_by_key(|d| serial_of(d) == virtup_guest::firstboot::CONFIG_LABEL);
    for disk in missing {
        let (Some(path), Some(target)) = (&disk.path, &disk.target) else {
            continue;
        };
        let format = disk
            .format
            .as_deref()
            .and_then(ImageFormat::from_name)
            .unwrap_or(ImageFormat::Raw);
        let mut spec = DiskSpec::disk(path, format);
        spec.readonly = disk.readonly;
        spec.serial = disk.serial.clone();
        hv.attach_live(name, &spec.device_xml(target)?)?;
    }
    define_as_running(hv, name, &tag)?;
    Ok(true)
}

/// How long a new NIC's bridge port may take to forward: libvirt's networks run STP, and the kernel
/// holds a new port in listening and learning for at least 2 s each.
const FORWARDING_WAIT: Duration = Duration::from_secs(15);

/// Waits until the bridge forwards the hot-plugged NIC's frames, so that the guest's first DHCP
/// request (sent as soon as the identity is applied) is not dropped: a dropped one costs a
/// retransmission, 4-8 s, and under TCG here it made a clone wait 7.8 s for its address. Best
/// effort: a NIC whose port is not on a local bridge, or that does not forward in time, is left to
/// the guest's retries.
fn wait_until_forwarding(hv: &Hypervisor, name: &str, mac: Option<&str>) {
    let tap = hv
        .xml(name)
        .ok()
        .and_then(|xml| virtup_libvirt::parse_domain_xml(&xml).ok())
        .and_then(|d| {
            d.interfaces
                .into_iter()
                .find(|i| {
                    i.mac.as_deref().map(str::to_ascii_lowercase)
                        == mac.map(str::to_ascii_lowercase)
                })
                .and_then(|i| i.target_dev)
        });
    // Only a plain device name: it becomes a /sys path.
    let Some(tap) = tap.filter(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && t != "."
            && t != ".."
    }) else {
        return;
    };
    let state = Path::new("/sys/class/net").join(&tap).join("brport/state");
    let deadline = Instant::now() + FORWARDING_WAIT;
    // 3 is the kernel's BR_STATE_FORWARDING.
    while std::fs::read_to_string(&state).is_ok_and(|s| s.trim() != "3")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A random RFC 4122 version-4 UUID from the kernel's generator.
fn random_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_volume_names_belong_to_their_generation_and_are_no_generation() {
        assert_eq!(disk_volume("t", 3), "VIRTUP-t-g3-warm.qcow2");
        assert_eq!(image_volume("t", 3), "VIRTUP-t-g3-warm.save");
        assert_eq!(volume_generation("t", "VIRTUP-t-g3-warm.qcow2"), Some(3));
        assert_eq!(volume_generation("t", "VIRTUP-t-g3-warm.save"), Some(3));
        assert_eq!(volume_generation("t", "VIRTUP-t-g3.qcow2"), None);
        assert_eq!(volume_generation("t", "VIRTUP-t-g03-warm.save"), None);
        assert_eq!(volume_generation("u", "VIRTUP-t-g3-warm.save"), None);
        assert_eq!(
            virtup_core::template::volume_generation("t", "VIRTUP-t-g3-warm.qcow2"),
            None
        );
    }

    #[test]
    fn a_random_uuid_is_version_4_and_differs() {
        let (a, b) = (random_uuid().unwrap(), random_uuid().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
