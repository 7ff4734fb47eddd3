//! `virt-up NAME [--template T] …`: build the template when it is missing, clone the instance, wait for SSH.
//!
//! As in virt-up, a missing template is built first from its definition in the config files, and
//! an existing instance is just started. The create options shape the instance; a template
//! built on the way takes its settings from the config (with `--no-clone` they shape the template).

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use virtup_core::{Config, Paths};
use virtup_libvirt::Hypervisor;

use super::drive::{self, Options};
use super::secret::{self, SecretSource};
use super::{progress, say, warn, CreateOpts, Global};
use crate::context::Context;

/// Reads the secrets (from files or stdin) before anything else happens.
fn secrets(opts: &CreateOpts, options: &mut Options) -> Result<()> {
    let both_stdin = opts.root_password == Some(SecretSource::Stdin)
        && opts.password == Some(SecretSource::Stdin);
    if let Some(source) = &opts.root_password {
        let v = secret::read("--root-password", source, "root password: ")?;
        options.insert("root_password".into(), json!(v));
    }
    if let Some(source) = &opts.password {
        let prompt = if both_stdin {
            "login user's password: "
        } else {
            "password: "
        };
        let v = secret::read("--password", source, prompt)?;
        options.insert("password".into(), json!(v));
    }
    Ok(())
}

/// The create options as module options (what both modules call them).
fn shaping_options(opts: &CreateOpts) -> Result<Options> {
    let mut options = Options::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            options.insert(k.into(), v);
        }
    };
    put("user", opts.user.as_ref().map(|v| json!(v)));
    put("size", opts.size.as_ref().map(|v| json!(v)));
    put("memory", opts.memory.map(|v| json!(v)));
    put("vcpus", opts.vcpus.map(|v| json!(v)));
    put("graphics", opts.graphics.as_ref().map(|v| json!(v)));
    put("dns_domain", opts.dns_domain.as_ref().map(|v| json!(v)));
    secrets(opts, &mut options)?;
    Ok(options)
}

/// Builds template `name` with the module when no such template exists; `false` when it existed.
fn ensure_template(
    paths: &Paths,
    hv: &Hypervisor,
    config: &Config,
    name: &str,
    mut options: Options,
    global: &Global,
) -> Result<bool> {
    if virtup_ops::owner::template_is_ours(&virtup_core::DataDir::at(&paths.data_dir), hv, name)? {
        return Ok(false);
    }
    if config.resolve_template(name).is_none() {
        bail!(
            "template `{name}` does not exist and no templates.d section defines it \
             (see `virt-up --show-templates`, `virt-up --init`)"
        );
    }
    options.insert("name".into(), json!(name));
    options.insert("state".into(), json!("present"));
    let args = drive::template_args(&options)?;
    // The module's own checks, before anything is shown or built (a missing template-playbook too).
    let req = crate::template::resolve(&args, &Context::load()?, |_| Ok(String::new()))?;
    progress::stage(&format!(
        "template `{name}`: building (virt-builder or image, then the first-boot setup); this takes minutes"
    ));
    match &req.playbook {
        None => {
            drive::template(&args, global)
                .with_context(|| format!("failed to build template `{name}`"))?;
        }
        Some(playbook) => customize(paths, options, name, &req.uri, playbook, global)?,
    }
    Ok(true)
}

/// virt-up's `template-playbook`: the template is built and booted, the playbook runs against it,
/// and it is sealed, all in one customization session (a hold, as the role `virtup_template`
/// takes), so other runs and clones wait meanwhile. When the boot or the playbook fails, the
/// template is removed again: no clone is ever made from a half-customized template.
fn customize(
    paths: &Paths,
    mut options: Options,
    name: &str,
    uri: &str,
    playbook: &std::path::Path,
    global: &Global,
) -> Result<()> {
    options.insert("hold".into(), json!(session_token()?));
    let mut call = |state: &str| {
        options.insert("state".into(), json!(state));
        drive::template(&drive::template_args(&options)?, global)
    };
    let failure = match call("running") {
        Err(e) => Some(format!("{e:#}")),
        Ok(doc) => {
            progress::stage(&format!(
                "template `{name}`: running template-playbook `{}`",
                playbook.display()
            ));
            match super::playbook::run_on_template(paths, &doc["template"], uri, playbook) {
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
        let removed = match call("absent") {
            Ok(_) => {
                "it was removed again, so that nothing is cloned from it half-customized".to_owned()
            }
            Err(e) => format!("removing it failed too: {e:#}"),
        };
        bail!("failed to build template `{name}` with its template-playbook: {why}; {removed}");
    }
    progress::stage(&format!("template `{name}`: sealing"));
    call("present").with_context(|| format!("failed to seal template `{name}`"))?;
    Ok(())
}

/// A fresh token for a customization session: 24 random lowercase letters and digits.
fn session_token() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("failed to read /dev/urandom")?;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(bytes
        .iter()
        .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
        .collect())
}

pub fn create(paths: &Paths, opts: &CreateOpts, global: &Global) -> Result<ExitCode> {
    let name = &opts.name;
    let template = opts.template.clone().unwrap_or_else(|| name.clone());
    let mut options = shaping_options(opts)?;
    options.insert("name".into(), json!(name));
    options.insert("template".into(), json!(template));
    options.insert("state".into(), json!("running"));
    options.insert("inventory".into(), json!(opts.inventory));
    // Everything is validated, by the module's own rules, before the first side effect.
    let ctx = Context::load()?;
    let req = crate::instance::resolve(&drive::instance_args(&options)?, &ctx)?;
    let hv = Hypervisor::connect(&req.uri)?;
    let existed = match drive::current_size(&hv, name)? {
        Some((memory, vcpus)) => {
            options.entry("memory").or_insert(json!(memory));
            options.entry("vcpus").or_insert(json!(vcpus));
            true
        }
        None if hv.domain(name)?.is_some() => {
            bail!("domain `{name}` exists but was not made by virtup; refusing to touch it")
        }
        None => {
            ensure_template(paths, &hv, &ctx.config, &template, Options::new(), global)?;
            false
        }
    };
    drop(hv);
    let doc = drive::instance(&drive::instance_args(&options)?, global)?;
    progress::finish_line();
    let i = &doc["instance"];
    let text = |k: &str| i[k].as_str().unwrap_or("-").to_owned();
    say(
        global,
        format!(
            "instance `{name}` is up at {} (user {}); log in with `virt-up {name} --login`",
            text("address"),
            text("user"),
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
    let mut options = shaping_options(opts)?;
    options.insert("name".into(), json!(name));
    options.insert("state".into(), json!("present"));
    let args = drive::template_args(&options)?;
    let ctx = Context::load()?;
    let req = crate::template::resolve(&args, &ctx, |_| Ok(String::new()))?;
    let hv = Hypervisor::connect(&req.uri)?;
    if !ensure_template(paths, &hv, &ctx.config, &name, options, global)? {
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
