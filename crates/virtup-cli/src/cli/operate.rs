//! The CLI's calls into `virtup_ops`: typed options in, a real run with `virt-up`'s progress, its
//! warnings printed, the typed report out.

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::instance::InstanceState;
use virtup_core::{validate, DataDir, InstanceMeta, Paths};
use virtup_libvirt::{parse_domain_xml, Hypervisor, TagKind};
use virtup_ops::instance::{InstanceFacts, InstanceOptions, InstanceReport};
use virtup_ops::template::{current_user_key, TemplateOptions, TemplateReport};
use virtup_ops::Mode;

use super::progress::Progress;
use super::Global;
use crate::context::Context;

/// Runs the instance operation (a real run, with `virt-up`'s progress) and prints its warnings.
pub fn instance(options: InstanceOptions, global: &Global) -> Result<InstanceReport> {
    let ctx = Context::load()?;
    let req = virtup_ops::instance::resolve(&ctx, options)?;
    let hv = Hypervisor::connect(&req.uri)?;
    let report = virtup_ops::instance::converge(&ctx, &hv, &req, Mode::Apply, &Progress)?;
    warn_all(&report.warnings, global);
    Ok(report)
}

/// Runs the template operation (a real run, with `virt-up`'s progress) and prints its warnings.
pub fn template(options: TemplateOptions, global: &Global) -> Result<TemplateReport> {
    let ctx = Context::load()?;
    let req = virtup_ops::template::resolve(&ctx, options, current_user_key(&ctx))?;
    let hv = Hypervisor::connect(&req.uri)?;
    let report = virtup_ops::template::converge(&ctx, &hv, req, Mode::Apply, &Progress)?;
    warn_all(&report.warnings, global);
    Ok(report)
}

fn warn_all(warnings: &[String], global: &Global) {
    if warnings.is_empty() {
        return;
    }
    super::progress::finish_line();
    for w in warnings {
        super::warn(global, w);
    }
}

/// Memory and vCPUs of an existing instance, so that starting it does not also resize it to the
/// config's defaults (the operation converges to whatever it is given).
pub fn current_size(hv: &Hypervisor, name: &str) -> Result<Option<(u64, u32)>> {
    let Some(dom) = hv.domain(name)? else {
        return Ok(None);
    };
    if !dom.tag.is_some_and(|t| t.is(TagKind::Instance, name)) {
        return Ok(None);
    }
    let parsed = parse_domain_xml(&hv.inactive_xml(name)?)?;
    // Checked as the module checks these options: a domain resized out of bounds is refused, not converged.
    Ok(Some((
        validate::memory_mib("memory", parsed.memory_mib)?,
        validate::vcpus("vcpus", parsed.vcpus.into())?,
    )))
}

/// An existing instance, running and answering on SSH with its pinned key (the module's
/// `state: running`, which starts it when it is off), as it is left.
pub fn ensure_running(paths: &Paths, name: &str, global: &Global) -> Result<InstanceFacts> {
    let meta = existing_meta(paths, name)?;
    let mut options = InstanceOptions::for_existing(&meta, InstanceState::Running);
    let uri = meta
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    let hv = Hypervisor::connect(&uri)?;
    let Some((memory, vcpus)) = current_size(&hv, name)? else {
        let Some(dom) = hv.domain(name)? else {
            if meta.is_virt_up_record() {
                bail!(
                    "instance `{name}` has virt-up 2.2.0's record but no domain on `{uri}` (virt-up 2.2.0's \
                     default hypervisor is qemu:///session: give virtup that URI to adopt it there)"
                );
            }
            bail!("instance `{name}` has metadata but no domain on `{uri}`; delete it with `virt-up {name} --delete`");
        };
        // A domain of that name that virtup did not make: saying it is missing, and pointing at a delete, would be false.
        let whose = if meta.is_virt_up_legacy() && dom.tag.is_none() {
            format!(
                "its record here is in virt-up 2.2.0's format and the domain carries no virtup tag: probably \
                 virt-up 2.2.0 made it, and virtup manages it only once adopted (`virt-up {name} --adopt`)"
            )
        } else {
            "the domain is not the one virtup made for it with this data dir; virtup leaves it alone".to_owned()
        };
        bail!("instance `{name}`: domain `{name}` exists on `{uri}`, but {whose}");
    };
    options.layer.memory = Some(memory);
    options.layer.vcpus = Some(vcpus);
    super::progress::stage(&format!(
        "`{name}`: checking that it runs and answers on SSH"
    ));
    instance(options, global)?
        .instance
        .ok_or_else(|| anyhow!("the instance operation returned no instance for `{name}`"))
}

/// The metadata of an instance virtup made; a clear error when there is none.
pub fn existing_meta(paths: &Paths, name: &str) -> Result<InstanceMeta> {
    virtup_core::validate::name("NAME", name)?;
    let data = DataDir::at(&paths.data_dir);
    InstanceMeta::read(&data, name)
        .with_context(|| format!("failed to read the metadata of `{name}`"))?
        .ok_or_else(|| anyhow!("no instance named `{name}` (see `virt-up --list`)"))
}
