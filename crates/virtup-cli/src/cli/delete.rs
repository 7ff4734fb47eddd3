//! `virt-up NAME --delete` and `virt-up --delete --all`: the modules' `state: absent`, after a confirmation.
//!
//! NAME is an instance when one of that name exists; otherwise a template, by its name or its
//! domain name (`VIRTUP-<name>`, as `--list --all` shows it). The template module refuses to
//! delete a template while instances are cloned from it, naming them. `--delete --all`, as in
//! virt-up, deletes every instance first and then every template.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use virtup_core::template::DOMAIN_PREFIX;
use virtup_core::{Config, DataDir, InstanceMeta, Paths};
use virtup_libvirt::{Hypervisor, TagKind};

use super::operate;
use super::{confirm, progress, say, warn, Global};
use crate::inventory::{self, HostKind};
use virtup_core::instance::InstanceState;
use virtup_core::template::TemplateState;
use virtup_ops::context;
use virtup_ops::instance::InstanceOptions;
use virtup_ops::template::TemplateOptions;

/// Something `--delete` removes.
enum Target {
    /// Addressed where it was made (`state` is set when it is deleted).
    Instance(Box<InstanceOptions>),
    Template {
        name: String,
        uri: Option<String>,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Instance(o) => format!("instance `{}`", o.name),
            Target::Template { name, .. } => format!("template `{name}`"),
        }
    }

    fn delete(&self, global: &Global) -> Result<()> {
        progress::stage(&format!("deleting {}", self.describe()));
        let changed = match self {
            Target::Instance(options) => {
                let mut options = (**options).clone();
                options.state = InstanceState::Absent;
                operate::instance(options, global)?.changed
            }
            Target::Template { name, uri } => {
                let mut options = TemplateOptions::new(name, TemplateState::Absent);
                options.layer.uri = uri.clone();
                operate::template(options, global)?.changed
            }
        };
        progress::finish_line();
        // Found, but the module had nothing of virtup's to remove: the domain belongs to another data
        // dir (its warning says so). Saying "deleted" would be a lie.
        if !changed {
            bail!(
                "{} was not deleted: it is not virtup's for this data dir",
                self.describe()
            );
        }
        say(global, format!("deleted {}", self.describe()));
        Ok(())
    }
}

fn resolve(paths: &Paths, name: &str) -> Result<Target> {
    let data = DataDir::at(&paths.data_dir);
    if virtup_core::validate::name("NAME", name).is_ok() {
        if let Some(meta) = InstanceMeta::read(&data, name)? {
            return Ok(Target::Instance(Box::new(InstanceOptions::for_existing(
                &meta,
                InstanceState::Absent,
            ))));
        }
    }
    let default = Config::load(paths)?
        .resolve_common()
        .uri
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    // A template this data dir recorded on one other hypervisor only (say, uploaded to a remote
    // one) is looked for there. `VIRTUP-<name>@<id>`, a remote template's inventory host, names
    // its hypervisor by its records' scope.
    let (name, scope) = match name.split_once('@') {
        Some((domain, _)) => (domain, Some(name)),
        None => (name, None),
    };
    let template = name.strip_prefix(DOMAIN_PREFIX).unwrap_or(name);
    let recorded = context::template_uris(&data, template);
    let uri = match (scope, recorded.as_slice()) {
        (Some(scope), _) => recorded
            .iter()
            .find(|u| context::template_scope(template, u) == scope)
            .cloned()
            .ok_or_else(|| anyhow!("`{scope}`: this data dir has no record of that template"))?,
        (None, [only]) if !context::same_hypervisor(only, &default) => only.clone(),
        (None, several)
            if several.len() > 1
                && !several
                    .iter()
                    .any(|u| context::same_hypervisor(u, &default)) =>
        {
            // A remote one by its inventory name; this machine's by the default URI it lives on.
            let names: Vec<String> = several
                .iter()
                .map(|u| match context::template_scope(template, u) {
                    scope if scope.contains('@') => scope,
                    scope => format!("{scope}` with LIBVIRT_DEFAULT_URI={u}"),
                })
                .collect();
            bail!(
                "template `{template}` lives on {} hypervisors: delete one by its inventory name, `{}`",
                several.len(),
                names.join("`, `")
            )
        }
        _ => default,
    };
    // Ownership is proven on this hypervisor, so the module is sent to this one too.
    let hv = Hypervisor::connect_read_only(&uri)?;
    if let Some(tag) = hv.domain(name)?.and_then(|d| d.tag) {
        let target = match tag.kind {
            // A virtup instance whose metadata is gone: the module still removes what the tag says it owns.
            TagKind::Instance if tag.name == name => {
                let mut options = InstanceOptions::new(name, InstanceState::Absent);
                options.layer.uri = Some(hv.uri().to_owned());
                options.template = tag.template.clone();
                Some(Target::Instance(Box::new(options)))
            }
            TagKind::Template if name.starts_with(DOMAIN_PREFIX) => Some(Target::Template {
                name: tag.name.clone(),
                uri: Some(hv.uri().to_owned()),
            }),
            _ => None,
        };
        if let Some(target) = target {
            let records = match tag.kind {
                TagKind::Template => context::template_scope(&tag.name, hv.uri()),
                _ => name.to_owned(),
            };
            if virtup_ops::owner::proves(&data, &hv, &tag, &records)? {
                return Ok(target);
            }
            // Another data dir's domain of this name: this data dir's template `name` may still be meant.
            if !name.starts_with(DOMAIN_PREFIX)
                && virtup_ops::owner::template_is_ours(&data, &hv, name)?
            {
                return Ok(Target::Template {
                    name: name.to_owned(),
                    uri: Some(hv.uri().to_owned()),
                });
            }
            bail!(
                "`{name}` was made by virtup with another data dir, not `{}`: delete it with that \
                 data dir (VIRTUP_DATA_HOME), or with virsh if it is no longer wanted",
                paths.data_dir.display()
            );
        }
    }
    if virtup_ops::owner::template_is_ours(&data, &hv, name)? {
        return Ok(Target::Template {
            name: name.to_owned(),
            uri: Some(hv.uri().to_owned()),
        });
    }
    bail!("no instance or template named `{name}` (see `virt-up --list --all`)")
}

pub fn delete(paths: &Paths, name: &str, global: &Global) -> Result<ExitCode> {
    let target = resolve(paths, name)?;
    confirm(&target.describe(), global)?;
    target.delete(global)?;
    super::create::refresh_inventory(paths, global);
    Ok(ExitCode::SUCCESS)
}

/// Every instance in the metadata, then every template this data dir's ledger lists; and the
/// listing's warnings about hypervisors it could not list (their templates are not among the targets).
fn everything(paths: &Paths, global: &Global) -> Result<(Vec<Target>, Vec<String>)> {
    let data = DataDir::at(&paths.data_dir);
    // Without a readable owner id no template can be proven this data dir's, and the listing below
    // would only say so in warnings: fail here, naming the file.
    data.owner_id()?;
    let mut targets = Vec::new();
    for (name, meta) in InstanceMeta::list(&data)? {
        match meta {
            // virt-up 2.2.0's (no schema, no hypervisor): not virtup's to delete, adopted or not.
            Ok(meta) if meta.is_virt_up_record() => warn(
                global,
                format!(
                    "`{name}` is skipped: virt-up 2.2.0 made it and virtup has not adopted it \
                     (see docs/migrate-from-virt-up.md)"
                ),
            ),
            Ok(meta) => targets.push(Target::Instance(Box::new(InstanceOptions::for_existing(
                &meta,
                InstanceState::Absent,
            )))),
            Err(e) => warn(global, format!("instance `{name}` is skipped: {e}")),
        }
    }
    let config = Config::load(paths)?;
    let listing = inventory::collect(paths, &config)?;
    let mut templates = Vec::new();
    // Only templates this data dir built (its ownership ledger has them): a template of another
    // user or data dir on the same hypervisor is theirs to delete.
    let ours = virtup_core::ownership::Ledger::scopes(&data)?;
    for host in listing.hosts {
        if host.kind == HostKind::Template
            && ours.contains(&context::template_scope(&host.template, &host.uri))
        {
            templates.push(Target::Template {
                name: host.template,
                uri: Some(host.uri),
            });
        }
    }
    targets.extend(templates);
    let unlisted = listing
        .warnings
        .into_iter()
        .filter(|w| w.starts_with("cannot list"))
        .collect();
    Ok((targets, unlisted))
}

pub fn delete_all(paths: &Paths, global: &Global) -> Result<ExitCode> {
    let (targets, unlisted) = everything(paths, global)?;
    // A hypervisor that could not be listed may hold templates of this data dir: not "all".
    let unlisted_error = || {
        anyhow!(
            "not everything could be found, so not everything was deleted: {}",
            unlisted.join("; ")
        )
    };
    if targets.is_empty() {
        if !unlisted.is_empty() {
            return Err(unlisted_error());
        }
        say(global, "nothing to delete");
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<String> = targets.iter().map(Target::describe).collect();
    confirm(&list.join(", "), global)?;
    let mut failed = Vec::new();
    for t in &targets {
        if let Err(e) = t.delete(global) {
            progress::finish_line();
            eprintln!("virt-up: error: failed to delete {}: {e:#}", t.describe());
            failed.push(t.describe());
        }
    }
    super::create::refresh_inventory(paths, global);
    if !failed.is_empty() {
        return Err(anyhow!(
            "{} of {} could not be deleted: {}",
            failed.len(),
            targets.len(),
            failed.join(", ")
        ));
    }
    if !unlisted.is_empty() {
        return Err(unlisted_error());
    }
    Ok(ExitCode::SUCCESS)
}
