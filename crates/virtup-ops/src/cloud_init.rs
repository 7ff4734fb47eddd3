//! Whether a template generation has cloud-init, asked of its disk once (a read-only libguestfs look) and remembered in the data dir.
//!
//! `cloud_init` data on a template without cloud-init would be ignored without a word, and on one
//! whose cloud-init is not told to leave virtup's identity alone it would delete the pinned host
//! keys; so a create refuses both first. The template's build cannot answer: virt-builder and
//! virt-customize run commands inside the image but hand nothing back, so the answer is read from
//! the sealed image the first time a clone asks (about 15 s under TCG), then kept per generation
//! and input digest. The look is read-only; the answer is written down only by a run that makes
//! the clone (a check run writes nothing).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use virtup_core::datadir::{ensure_private_dir, read_json_if_exists, write_json};
use virtup_core::{DataDir, ImageFormat, VirtType};
use virtup_guest::Cmd;
use virtup_libvirt::Hypervisor;

use crate::template::CurrentDisk;

/// Where cloud-init's command lives on every distribution that ships it (Debian, Ubuntu, Fedora,
/// the RHEL family, openSUSE).
pub const CLOUD_INIT_BINARY: &str = "/usr/bin/cloud-init";

/// The settings a template build writes for cloud-init: leave hostname and host keys to virtup.
pub const KEEP_FILE: &str = "/etc/cloud/cloud.cfg.d/90-virtup.cfg";

/// What was read from one generation's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    generation: u32,
    /// The template's input digest: a template removed and built again restarts its generations.
    digest: Option<String>,
    volume: String,
    /// [`CLOUD_INIT_BINARY`] is there.
    pub cloud_init: bool,
    /// [`KEEP_FILE`] is there.
    pub keeps_identity: bool,
}

/// The answer for one generation, and whether it is new (to be remembered by a run that acts).
#[derive(Debug, Clone)]
pub struct Look {
    pub facts: Facts,
    fresh: Option<PathBuf>,
}

impl Look {
    /// Writes a freshly read answer down, so the next clone of this generation is not asked again.
    pub fn remember(&self) -> Result<()> {
        if let Some(file) = &self.fresh {
            ensure_private_dir(file.parent().expect("facts/ has a parent"))?;
            write_json(file, &self.facts, 0o600)?;
        }
        Ok(())
    }
}

fn facts_file(data: &DataDir, scope: &str, generation: u32) -> Result<PathBuf> {
    virtup_core::ownership::check_scope(scope)?;
    Ok(data
        .root()
        .join("facts")
        .join(format!("{scope}.g{generation}.json")))
}

/// The answer for `tpl`, or `None` when its disk is out of this machine's reach (a remote
/// hypervisor's pool, libvirt's test driver), where the caller can only warn.
pub fn look(
    data: &DataDir,
    hv: &Hypervisor,
    scope: &str,
    tpl: &CurrentDisk,
    accel: impl FnOnce() -> Result<VirtType>,
) -> Result<Option<Look>> {
    if !hv.is_local() || hv.uri().starts_with("test:") {
        return Ok(None);
    }
    let file = facts_file(data, scope, tpl.generation)?;
    let wanted = |f: &Facts| {
        f.generation == tpl.generation && f.digest == tpl.digest && f.volume == tpl.volume
    };
    // Only a kept answer: a damaged file is asked again, not an error.
    if let Some(facts) = read_json_if_exists::<Facts>(&file)
        .ok()
        .flatten()
        .filter(wanted)
    {
        return Ok(Some(Look { facts, fresh: None }));
    }
    // The format is named, never guessed: a raw image whose first bytes read as a qcow2 header
    // could otherwise send QEMU to files of the host's (libguestfs' own warning).
    let format = tpl
        .volume
        .rsplit_once('.')
        .and_then(|(_, ext)| ImageFormat::from_name(ext))
        .ok_or_else(|| anyhow::anyhow!("template volume `{}` has no known format", tpl.volume))?;
    let appliance = crate::appliance_virt_type(hv, accel)?;
    // Read-only, through a throwaway overlay of libguestfs': the sealed image (and the clones
    // resting on it) are never written.
    let mut cmd = Cmd::new("guestfish");
    cmd.arg("--ro")
        .arg(format!("--format={}", format.as_str()))
        .arg("-a")
        .arg(&tpl.path)
        .args(["-i", "exists", CLOUD_INIT_BINARY, ":", "exists", KEEP_FILE]);
    crate::appliance_env(&mut cmd, hv, appliance);
    let out = cmd.output().with_context(|| {
        format!(
            "cannot look for cloud-init in generation {} of the template (guestfish on `{}`)",
            tpl.generation, tpl.path
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = text.lines().map(str::trim).collect();
    let (cloud_init, keeps_identity) = match answers[..] {
        [a, b] if [a, b].iter().all(|x| *x == "true" || *x == "false") => {
            (a == "true", b == "true")
        }
        _ => anyhow::bail!(
            "cannot look for cloud-init in `{}`: guestfish answered {text:?}",
            tpl.path
        ),
    };
    Ok(Some(Look {
        facts: Facts {
            generation: tpl.generation,
            digest: tpl.digest.clone(),
            volume: tpl.volume.clone(),
            cloud_init,
            keeps_identity,
        },
        fresh: Some(file),
    }))
}

/// Forgets what was read from a generation that is gone or changing.
pub fn forget(data: &DataDir, scope: &str, generation: u32) -> Result<()> {
    virtup_core::datadir::remove_file_if_exists(&facts_file(data, scope, generation)?)?;
    Ok(())
}
