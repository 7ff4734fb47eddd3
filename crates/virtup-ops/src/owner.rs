//! Whether a virtup-tagged domain is this data dir's: the one place that decides it, from the
//! tag's owner id and, for tags written before owner ids existed, from this data dir's records.

use anyhow::{bail, Result};
use virtup_core::ownership::Ledger;
use virtup_core::{DataDir, InstanceMeta};
use virtup_libvirt::{Hypervisor, TagKind, VirtupTag};

/// Whether the data dir may treat the domain whose records are keyed `scope` (an instance's name,
/// a template's [`crate::context::template_scope`]) on `hv`, tagged `tag`, as its own. A tag naming an owner
/// proves the domain to that owner only. A tag without one (virtup before owner ids) proves nothing
/// by itself: the domain is this data dir's only while this data dir keeps a record of it on that
/// hypervisor, so a fresh or unrelated data dir never deletes, rebuilds or adopts it.
pub fn proves(data: &DataDir, hv: &Hypervisor, tag: &VirtupTag, scope: &str) -> Result<bool> {
    match tag.names_owner(data.owner_id()?.as_deref()) {
        Some(mine) => Ok(mine),
        None => has_record(data, hv.uri(), scope),
    }
}

/// Whether this data dir holds a record of `domain` on `uri` (spelled as the run spells it):
/// instance metadata naming that URI, or volumes in its ledger on it. Metadata without a URI was
/// written by virt-up 2.2.0, whose domains carry no tag at all; secrets and keys name no
/// hypervisor: they prove nothing.
fn has_record(data: &DataDir, uri: &str, domain: &str) -> Result<bool> {
    // A record that cannot be read proves nothing; the module reports it when it reads it itself.
    if let Ok(Some(meta)) = InstanceMeta::read(data, domain) {
        if meta.uri.as_deref() == Some(uri) {
            return Ok(true);
        }
    }
    Ok(Ledger::read(data, domain)?
        .volumes
        .iter()
        .any(|v| v.uri == uri))
}

/// Whether template `name` exists on `hv` as this data dir's: false when there is no such tagged
/// domain, an error naming the other owner's domain when it exists but is not this data dir's.
pub fn template_is_ours(data: &DataDir, hv: &Hypervisor, name: &str) -> Result<bool> {
    let domain = virtup_core::template::domain_name(name);
    let Some(tag) = hv
        .domain(&domain)?
        .and_then(|d| d.tag)
        .filter(|t| t.is(TagKind::Template, name))
    else {
        return Ok(false);
    };
    if !proves(
        data,
        hv,
        &tag,
        &crate::context::template_scope(name, hv.uri()),
    )? {
        bail!(
            "template `{name}` (domain `{domain}`) was not made by virtup with this data dir: \
             manage it with the data dir that made it, and give your own template another name"
        );
    }
    Ok(true)
}
