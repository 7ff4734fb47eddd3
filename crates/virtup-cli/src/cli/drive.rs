//! The CLI's way into the module drivers: an option document validated by the module's own spec, then `run`.

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Map, Value};
use virtup_ansible::{parse_args, ModuleArgs, ModuleResult};
use virtup_core::{DataDir, InstanceMeta, Paths};
use virtup_libvirt::{parse_domain_xml, Hypervisor, TagKind};

use super::Global;
use crate::specs::{instance_spec, template_spec};

/// Options of one module run, as a task would give them.
pub type Options = Map<String, Value>;

/// Validates `options` with the spec of `virtup_instance`, exactly as the module does.
pub fn instance_args(options: &Options) -> Result<ModuleArgs> {
    parse_args(
        &Value::Object(options.clone()).to_string(),
        &instance_spec(),
    )
    .map_err(|e| anyhow!("{e}"))
}

/// Validates `options` with the spec of `virtup_template`.
pub fn template_args(options: &Options) -> Result<ModuleArgs> {
    parse_args(
        &Value::Object(options.clone()).to_string(),
        &template_spec(),
    )
    .map_err(|e| anyhow!("{e}"))
}

/// Runs `virtup_instance` and prints its warnings; the module's result document.
pub fn instance(args: &ModuleArgs, global: &Global) -> Result<Value> {
    finish(crate::instance::run(args)?, global)
}

/// Runs `virtup_template` and prints its warnings; the module's result document.
pub fn template(args: &ModuleArgs, global: &Global) -> Result<Value> {
    finish(crate::template::run(args)?, global)
}

fn finish(result: ModuleResult, global: &Global) -> Result<Value> {
    let doc = result.to_json();
    if let Some(warnings) = doc.get("warnings").and_then(Value::as_array) {
        super::progress::finish_line();
        for w in warnings.iter().filter_map(Value::as_str) {
            super::warn(global, w);
        }
    }
    Ok(doc)
}

/// Memory and vCPUs of an existing instance, so that starting it does not also resize it to the
/// config's defaults (the module converges to whatever it is given).
pub fn current_size(hv: &Hypervisor, name: &str) -> Result<Option<(u64, u32)>> {
    let Some(dom) = hv.domain(name)? else {
        return Ok(None);
    };
    if !dom.tag.is_some_and(|t| t.is(TagKind::Instance, name)) {
        return Ok(None);
    }
    let parsed = parse_domain_xml(&hv.inactive_xml(name)?)?;
    Ok(Some((parsed.memory_mib, parsed.vcpus)))
}

/// An existing instance, running and answering on SSH with its pinned key (the module's
/// `state: running`, which starts it when it is off): its `instance` document.
pub fn ensure_running(paths: &Paths, name: &str, global: &Global) -> Result<Value> {
    let meta = existing_meta(paths, name)?;
    let mut options = options_for(&meta);
    options.insert("state".into(), json!("running"));
    let uri = meta
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    let hv = Hypervisor::connect(&uri)?;
    let Some((memory, vcpus)) = current_size(&hv, name)? else {
        bail!("instance `{name}` has metadata but no domain on `{uri}`; delete it with `virt-up {name} --delete`");
    };
    options.insert("memory".into(), json!(memory));
    options.insert("vcpus".into(), json!(vcpus));
    super::progress::stage(&format!(
        "`{name}`: checking that it runs and answers on SSH"
    ));
    let doc = instance(&instance_args(&options)?, global)?;
    doc.get("instance")
        .cloned()
        .ok_or_else(|| anyhow!("virtup_instance returned no instance for `{name}`"))
}

/// The metadata of an instance virtup made; a clear error when there is none.
pub fn existing_meta(paths: &Paths, name: &str) -> Result<InstanceMeta> {
    virtup_core::validate::name("NAME", name)?;
    let data = DataDir::at(&paths.data_dir);
    InstanceMeta::read(&data, name)
        .with_context(|| format!("failed to read the metadata of `{name}`"))?
        .ok_or_else(|| anyhow!("no instance named `{name}` (see `virt-up --list`)"))
}

/// The options that address an existing instance where it was made: its template, URI and pool.
pub fn options_for(meta: &InstanceMeta) -> Options {
    let mut options = Options::new();
    options.insert("name".into(), json!(meta.name));
    if !meta.template.is_empty() {
        options.insert("template".into(), json!(meta.template));
    }
    if let Some(uri) = &meta.uri {
        options.insert("uri".into(), json!(uri));
    }
    if let Some(pool) = &meta.pool {
        options.insert("pool".into(), json!(pool));
    }
    options
}
