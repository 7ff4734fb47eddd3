//! `virt-up NAME [--template T] …`: build the template when it is missing, clone the instance, wait for SSH.
//!
//! As in virt-up, a missing template is built first from its definition in the config files, and
//! an existing instance is just started. The create options shape the instance; a template
//! built on the way takes its settings from the config (with `--no-clone` they shape the template).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};

use virtup_core::instance::InstanceState;
use virtup_core::template::TemplateState;
use virtup_core::{validate, Config, Fields, Paths};
use virtup_libvirt::Hypervisor;
use virtup_ops::instance::InstanceOptions;
use virtup_ops::template::{SessionHold, TemplateOptions, TemplateReport};

use super::operate;
use super::secret::{self, SecretSource};
use super::{progress, say, warn, CreateOpts, Global};
use crate::context::Context;

/// Passwords the user gave (from files or stdin), read before anything else happens.
#[derive(Default)]
struct Secrets {
    password: Option<String>,
    root_password: Option<String>,
}

fn secrets(opts: &CreateOpts) -> Result<Secrets> {
    let both_stdin = opts.root_password == Some(SecretSource::Stdin)
        && opts.password == Some(SecretSource::Stdin);
    let mut secrets = Secrets::default();
    if let Some(source) = &opts.root_password {
        secrets.root_password = Some(secret::read("--root-password", source, "root password: ")?);
    }
    if let Some(source) = &opts.password {
        let prompt = if both_stdin {
            "login user's password: "
        } else {
            "password: "
        };
        secrets.password = Some(secret::read("--password", source, prompt)?);
    }
    Ok(secrets)
}

/// The create options as the instance's top config layer, checked as the module checks them.
fn layer(opts: &CreateOpts) -> Result<Fields> {
    Ok(Fields {
        username: opts.user.clone(),
        size: opts.size.clone(),
        memory: opts
            .memory
            .map(|m| validate::memory_mib("memory", m))
            .transpose()?,
        vcpus: opts
            .vcpus
            .map(|v| validate::vcpus("vcpus", v.into()))
            .transpose()?,
        graphics: opts.graphics.clone(),
        dns_domain: opts.dns_domain.clone(),
        ..Fields::default()
    })
}

/// The create options as `virtup_template`'s, for template `name` shaped by them (`--no-clone`).
fn template_options(name: &str, opts: &CreateOpts, secrets: Secrets) -> Result<TemplateOptions> {
    let mut options = TemplateOptions::new(name, TemplateState::Present);
    options.layer = layer(opts)?;
    options.password = secrets.password;
    options.root_password = secrets.root_password;
    Ok(options)
}

/// Builds template `name` with the module when no such template exists; `false` when it existed.
fn ensure_template(
    paths: &Paths,
    hv: &Hypervisor,
    config: &Config,
    options: TemplateOptions,
    global: &Global,
) -> Result<bool> {
    let name = &options.name.clone();
    if virtup_ops::owner::template_is_ours(&virtup_core::DataDir::at(&paths.data_dir), hv, name)? {
        return Ok(false);
    }
    if config.resolve_template(name).is_none() {
        bail!(
            "template `{name}` does not exist and no templates.d section defines it \
             (see `virt-up --show-templates`, `virt-up --init`)"
        );
    }
    // The module's own checks, before anything is shown or built (a missing template-playbook too).
    let req =
        virtup_ops::template::resolve(&Context::load()?, options.clone(), |_| Ok(String::new()))?;
    progress::stage(&format!(
        "template `{name}`: building (virt-builder or image, then the first-boot setup); this takes minutes"
    ));
    match &req.playbook {
        None => {
            operate::template(options, global)
                .with_context(|| format!("failed to build template `{name}`"))?;
        }
        Some(playbook) => customize(paths, options, &req.uri, playbook, global)?,
    }
    Ok(true)
}

/// virt-up's `template-playbook`: the template is built and booted, the playbook runs against it,
/// and it is sealed, all in one customization session (a hold, as the role `virtup_template`
/// takes), so other runs and clones wait meanwhile. When the boot, the playbook or the seal fails,
/// the template is removed again: no clone is ever made from a half-customized template.
fn customize(
    paths: &Paths,
    mut options: TemplateOptions,
    uri: &str,
    playbook: &std::path::Path,
    global: &Global,
) -> Result<()> {
    let name = options.name.clone();
    let session = SessionHold::start()?;
    let token = session.token().to_owned();
    options.hold = Some(session);
    let mut call = |state: TemplateState| {
        options.state = state;
        let report = operate::template(options.clone(), global);
        // The session's later calls go on with it, under the revision its build pinned.
        options.hold = Some(SessionHold::Continue(token.clone()));
        report
    };
    let failure = match call(TemplateState::Running) {
        Err(e) => Some(format!("{e:#}")),
        Ok(TemplateReport { template: None, .. }) => {
            Some("the template operation returned no template".to_owned())
        }
        Ok(TemplateReport {
            template: Some(template),
            ..
        }) => {
            progress::stage(&format!(
                "template `{name}`: running template-playbook `{}`",
                playbook.display()
            ));
            match super::playbook::run_on_template(paths, &template, uri, playbook) {
                Ok(0) => None,
                Ok(code) => Some(format!(
                    "template-playbook `{}` failed (exit status {code})",
                    playbook.display()
                )),
                Err(e) => Some(format!(
                    "template-playbook `{}` could not run: {e:#}",
                    playbook.display()
                )),
            }
        }
    };
    if let Some(why) = failure {
        let removed = match call(TemplateState::Absent) {
            Ok(_) => {
                "it was removed again, so that nothing is cloned from it half-customized".to_owned()
            }
            Err(e) => format!("removing it failed too: {e:#}"),
        };
        bail!("failed to build template `{name}` with its template-playbook: {why}; {removed}");
    }
    progress::stage(&format!("template `{name}`: sealing"));
    if let Err(e) = call(TemplateState::Present) {
        // The session's holder is this command's parent (the shell), which lives on: left held, the
        // template would make every later run wait. A seal that did not finish leaves the template
        // marked unsealed, so it is removed like one whose playbook failed.
        let removed = match call(TemplateState::Absent) {
            Ok(_) => "it was removed again, so that nothing is cloned from it".to_owned(),
            Err(e) => format!("removing it failed too: {e:#}"),
        };
        bail!("failed to seal template `{name}`: {e:#}; {removed}");
    }
    Ok(())
}

pub fn create(paths: &Paths, opts: &CreateOpts, global: &Global) -> Result<ExitCode> {
    let name = &opts.name;
    let template = opts.template.clone().unwrap_or_else(|| name.clone());
    let secrets = secrets(opts)?;
    let mut options = InstanceOptions::new(name, InstanceState::Running);
    options.template = Some(template.clone());
    options.inventory = opts.inventory;
    options.address = opts.address;
    options.layer = layer(opts)?;
    options.password = secrets.password;
    options.root_password = secrets.root_password;
    // Everything is validated, by the module's own rules, before the first side effect.
    let ctx = Context::load()?;
    let req = virtup_ops::instance::resolve(&ctx, options.clone())?;
    let hv = Hypervisor::connect(&req.uri)?;
    let existed = match operate::current_size(&hv, name)? {
        Some((memory, vcpus)) => {
            options.layer.memory.get_or_insert(memory);
            options.layer.vcpus.get_or_insert(vcpus);
            true
        }
        None if hv.domain(name)?.is_some() => {
            bail!("domain `{name}` exists but was not made by virtup with this data dir; refusing to touch it")
        }
        None => {
            ensure_template(
                paths,
                &hv,
                &ctx.config,
                TemplateOptions::new(&template, TemplateState::Present),
                global,
            )?;
            false
        }
    };
    drop(hv);
    let report = operate::instance(options, global)?;
    progress::finish_line();
    let i = report
        .instance
        .ok_or_else(|| anyhow!("the instance operation returned no instance for `{name}`"))?;
    say(
        global,
        format!(
            "instance `{name}` is up at {} (user {}); log in with `virt-up {name} --login`",
            i.address.as_deref().unwrap_or("-"),
            i.user,
        ),
    );
    refresh_inventory(paths, global);
    if !existed && opts.inventory {
        if let Some(playbook) = instance_playbook(&ctx.config, &template) {
            progress::stage(&format!("`{name}`: running instance-playbook `{playbook}`"));
            let code = super::playbook::run_playbook(paths, name, &playbook, global)?;
            if code != 0 {
                anyhow::bail!(
                    "instance-playbook `{playbook}` failed on `{name}` (exit status {code})"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// virt-up runs the template's (or `[common]`'s) `instance-playbook` on each new instance.
fn instance_playbook(config: &Config, template: &str) -> Option<String> {
    config
        .resolve_template(template)
        .unwrap_or_else(|| config.resolve_common())
        .instance_playbook
        .filter(|p| !p.trim().is_empty())
}

/// `--no-clone`: the template only, shaped by the create options.
pub fn build_template(paths: &Paths, opts: &CreateOpts, global: &Global) -> Result<ExitCode> {
    let name = opts.template.clone().unwrap_or_else(|| opts.name.clone());
    let options = template_options(&name, opts, secrets(opts)?)?;
    let ctx = Context::load()?;
    let req = virtup_ops::template::resolve(&ctx, options.clone(), |_| Ok(String::new()))?;
    let hv = Hypervisor::connect(&req.uri)?;
    if !ensure_template(paths, &hv, &ctx.config, options, global)? {
        say(
            global,
            format!("template `{name}` exists already; nothing to do"),
        );
        return Ok(ExitCode::SUCCESS);
    }
    progress::finish_line();
    say(global, format!("template `{name}` is built"));
    refresh_inventory(paths, global);
    Ok(ExitCode::SUCCESS)
}

/// Keeps virt-up's static `inventory.yaml` current, as virt-up does after every change.
pub fn refresh_inventory(paths: &Paths, global: &Global) {
    let result = Config::load(paths)
        .map_err(anyhow::Error::from)
        .and_then(|config| crate::inventory::collect(paths, &config))
        .and_then(|listing| crate::inventory::refresh_virt_up_inventory(&paths.data_dir, &listing));
    if let Err(e) = result {
        warn(global, format!("inventory.yaml was not refreshed: {e:#}"));
    }
}
