//! Whether a template generation has cloud-init, asked of its disk once (a read-only libguestfs look) and remembered in the data dir.
//!
//! `cloud_init` data on a template without cloud-init would be ignored without a word, so a create
//! refuses it first. The template's build cannot answer: virt-builder and virt-customize run
//! commands inside the image but hand nothing back, so the answer is read from the sealed image the
//! first time a clone asks (about 15 s under TCG), then kept per generation and input digest.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use virtup_core::datadir::{ensure_private_dir, read_json_if_exists, write_json};
use virtup_core::{DataDir, VirtType};
use virtup_guest::Cmd;
use virtup_libvirt::Hypervisor;

use crate::template::CurrentDisk;

/// Where cloud-init's command lives on every distribution that ships it (Debian, Ubuntu, Fedora,
/// the RHEL family, openSUSE).
pub const CLOUD_INIT_BINARY: &str = "/usr/bin/cloud-init";

/// What was read from one generation's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Facts {
    generation: u32,
    /// The template's input digest: a template removed and built again restarts its generations.
    digest: Option<String>,
    volume: String,
    cloud_init: bool,
}

fn facts_file(data: &DataDir, scope: &str, generation: u32) -> Result<PathBuf> {
    virtup_core::ownership::check_scope(scope)?;
    Ok(data
        .root()
        .join("facts")
        .join(format!("{scope}.g{generation}.json")))
}

/// The answer for `tpl`: `Some(true|false)`, or `None` when its disk is out of this machine's reach
/// (a remote hypervisor's pool, libvirt's test driver), where the caller can only warn.
pub fn template_has_cloud_init(
    data: &DataDir,
    hv: &Hypervisor,
    scope: &str,
    tpl: &CurrentDisk,
    accel: impl FnOnce() -> Result<VirtType>,
) -> Result<Option<bool>> {
    if !hv.is_local() || hv.uri().starts_with("test:") {
        return Ok(None);
    }
    let file = facts_file(data, scope, tpl.generation)?;
    let wanted = |f: &Facts| {
        f.generation == tpl.generation && f.digest == tpl.digest && f.volume == tpl.volume
    };
    if let Some(facts) = read_json_if_exists::<Facts>(&file)?.filter(wanted) {
        return Ok(Some(facts.cloud_init));
    }
    let appliance = crate::appliance_virt_type(hv, accel)?;
    // Read-only, through a throwaway overlay of libguestfs': the sealed image (and the clones
    // resting on it) are never written.
    let mut cmd = Cmd::new("guestfish");
    cmd.args(["--ro", "-a"])
        .arg(&tpl.path)
        .args(["-i", "exists", CLOUD_INIT_BINARY]);
    crate::appliance_env(&mut cmd, hv, appliance);
    let out = cmd.output().with_context(|| {
        format!(
            "cannot look for cloud-init in generation {} of the template (guestfish on `{}`)",
            tpl.generation, tpl.path
        )
    })?;
    let answer = match String::from_utf8_lossy(&out.stdout).trim() {
        "true" => true,
        "false" => false,
        other => anyhow::bail!(
            "cannot look for cloud-init in `{}`: guestfish answered {other:?}",
            tpl.path
        ),
    };
    ensure_private_dir(file.parent().expect("facts/ has a parent"))?;
    write_json(
        &file,
        &Facts {
            generation: tpl.generation,
            digest: tpl.digest.clone(),
            volume: tpl.volume.clone(),
            cloud_init: answer,
        },
        0o600,
    )?;
    Ok(Some(answer))
}

/// Forgets what was read from a generation that is gone.
pub fn forget(data: &DataDir, scope: &str, generation: u32) -> Result<()> {
    virtup_core::datadir::remove_file_if_exists(&facts_file(data, scope, generation)?)?;
    Ok(())
}
