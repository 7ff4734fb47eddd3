//! Whether a virtup-tagged domain is this data dir's: the one place that decides it, from the
//! tag's owner id and, for tags written before owner ids existed, from this data dir's records.

use anyhow::Result;
use virtup_core::ownership::Ledger;
use virtup_core::DataDir;
use virtup_libvirt::VirtupTag;

/// Whether the data dir may treat `domain`, tagged `tag`, as its own. A tag naming an owner proves
/// the domain to that owner only. A tag without one (virtup before owner ids) proves nothing by
/// itself: the domain is this data dir's only while this data dir keeps a record of it, so a fresh
/// or unrelated data dir never deletes, rebuilds or adopts it.
pub fn proves(data: &DataDir, tag: &VirtupTag, domain: &str) -> Result<bool> {
    match tag.names_owner(data.owner_id()?.as_deref()) {
        Some(mine) => Ok(mine),
        None => has_record(data, domain),
    }
}

/// Whether this data dir holds a record of `domain`: volumes in its ledger, instance metadata (which
/// virt-up 2.2.0 wrote too) or secrets a virtup build or clone made for it.
fn has_record(data: &DataDir, domain: &str) -> Result<bool> {
    Ok(data.instance_dir().join(format!("{domain}.json")).is_file()
        || data.root().join("secrets").join(domain).is_dir()
        || !Ledger::read(data, domain)?.volumes.is_empty())
}
