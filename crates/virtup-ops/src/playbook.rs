//! Playbooks a config names: found as virt-up searches them (as given, else in the config's `playbooks/` dirs), with their digest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use virtup_core::Paths;
use virtup_guest::checksum;

use crate::context::Context;

/// The playbook as given, else in the config's `playbooks/` dirs (user, then system), as virt-up searches.
pub fn find(paths: &Paths, playbook: &Path) -> Result<PathBuf> {
    let mut searched = vec![playbook.to_path_buf()];
    if playbook.is_file() {
        return Ok(playbook.to_path_buf());
    }
    if playbook.is_relative() {
        for dir in paths.playbook_dirs() {
            let p = dir.join(playbook);
            if p.is_file() {
                return Ok(p);
            }
            searched.push(p);
        }
    }
    let list: Vec<String> = searched
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect();
    bail!(
        "playbook `{}` not found (searched {})",
        playbook.display(),
        list.join(", ")
    )
}

/// A playbook the config names under `key` (`template-playbook`, `instance-playbook`) for template
/// `template` (its section, else `[common]`), whose resolved value is `value`: found as given, else
/// in the config's `playbooks/` dirs (as virt-up searches), as an absolute path, with the sha256 of
/// the file. A playbook that is named but not found is an error naming the key and where it is set.
pub fn configured(
    ctx: &Context,
    key: &str,
    template: &str,
    value: Option<&str>,
    set_in: impl Fn(&virtup_core::config::Fields) -> bool,
) -> Result<Option<(PathBuf, String)>> {
    let Some((found, context)) = locate(ctx, key, template, value, set_in)? else {
        return Ok(None);
    };
    let sha256 = checksum::hash_file(&found, checksum::Algorithm::Sha256).with_context(context)?;
    Ok(Some((found, sha256)))
}

/// As [`configured`], without reading the file: where it is (for a session whose digest is pinned).
pub fn configured_path(
    ctx: &Context,
    key: &str,
    template: &str,
    value: Option<&str>,
    set_in: impl Fn(&virtup_core::config::Fields) -> bool,
) -> Result<Option<PathBuf>> {
    Ok(locate(ctx, key, template, value, set_in)?.map(|(found, _)| found))
}

/// The configured playbook found, and how to name its setting in errors.
fn locate(
    ctx: &Context,
    key: &str,
    template: &str,
    value: Option<&str>,
    set_in: impl Fn(&virtup_core::config::Fields) -> bool,
) -> Result<Option<(PathBuf, impl Fn() -> String)>> {
    let Some(given) = value.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let origin = if ctx.config.templates.get(template).is_some_and(set_in) {
        format!("section `[{template}]` of templates.d")
    } else {
        "`[common]` of settings.cfg".to_owned()
    };
    let (key, template) = (key.to_owned(), template.to_owned());
    let context = move || format!("`{key}` of template `{template}` ({origin})");
    let found = find(&ctx.paths, Path::new(given))
        .and_then(|p| std::path::absolute(&p).map_err(Into::into))
        .with_context(&context)?;
    Ok(Some((found, context)))
}
