//! Changing a remote pool's image with a tool that runs here (virt-customize, virt-sysprep): the
//! volume's bytes come down through libvirt into the data dir's scratch space, the tool works on
//! that copy, and the bytes go back up into the *same* volume, so its key (and so the ownership
//! record that proves it virtup's) stays.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::datadir::ScratchDir;
use virtup_core::DataDir;
use virtup_guest::qemu_img;
use virtup_libvirt::Hypervisor;

use crate::run_tool;

/// A pool volume brought down to a private file (0600 in a 0700 scratch dir, removed on drop).
pub(crate) struct VolumeCopy {
    scratch: ScratchDir,
    path: PathBuf,
    volume: String,
    downloaded: u64,
}

impl VolumeCopy {
    /// Brings `volume` of `pool` down.
    pub(crate) fn download(
        data: &DataDir,
        hv: &Hypervisor,
        pool: &str,
        volume: &str,
    ) -> Result<VolumeCopy> {
        let scratch = data.scratch()?;
        let path = scratch.path().join(volume);
        let downloaded = hv.download_volume(pool, volume, &path)?;
        Ok(VolumeCopy {
            scratch,
            path,
            volume: volume.to_owned(),
            downloaded,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the copy. A qcow2 overlay names its backing image by its path on the
    /// hypervisor, which means nothing here: for the run, the copy is pointed at a copy of that
    /// image (`backing_volume`, brought down beside it, only read), and then back at the recorded
    /// path, byte for byte as it was.
    pub(crate) fn work_on(
        &self,
        hv: &Hypervisor,
        pool: &str,
        format: &str,
        backing_volume: &str,
        backing_path: &str,
        work: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let info = qemu_img::info(&self.path, Some(format))?;
        let Some(recorded) = info.backing_filename else {
            return work(&self.path);
        };
        // virtup made the overlay on exactly this generation: anything else is not its clone.
        if recorded != backing_path {
            bail!(
                "volume `{}` is backed by `{recorded}`, not by its template's `{backing_path}`",
                self.volume
            );
        }
        let backing_format = info.backing_filename_format.ok_or_else(|| {
            anyhow!(
                "volume `{}` names no format for its backing image `{recorded}`",
                self.volume
            )
        })?;
        let base = self.scratch.path().join(backing_volume);
        hv.download_volume(pool, backing_volume, &base)?;
        if let Some(deeper) = qemu_img::info(&base, Some(&backing_format))?.backing_filename {
            bail!("template volume `{backing_volume}` is itself backed by `{deeper}`, which virtup never makes");
        }
        let base_name = base
            .to_str()
            .ok_or_else(|| anyhow!("scratch path `{}` is not UTF-8", base.display()))?;
        let rebase = |to: &str| {
            run_tool(
                &qemu_img::rebase_unsafe_cmd(&self.path, to, &backing_format),
                &format!(
                    "qemu-img could not point the copy of `{}` at `{to}`",
                    self.volume
                ),
            )
        };
        rebase(base_name)?;
        work(&self.path)?;
        rebase(&recorded)?;
        // The local base goes now, not with the scratch dir: it may be most of the disk used.
        let _ = std::fs::remove_file(&base);
        Ok(())
    }

    /// Writes the copy back over the volume it came from. `before_write` runs just before the
    /// first byte goes up (a seal marks its template unsealed there).
    pub(crate) fn write_back(
        &self,
        hv: &Hypervisor,
        pool: &str,
        before_write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let changed = std::fs::metadata(&self.path)
            .with_context(|| format!("cannot read `{}`", self.path.display()))?
            .len();
        // The upload writes from the volume's start: a shorter image would leave old bytes at its
        // end. The tools change an image in place, so it never shrinks; say so if it ever did.
        if changed < self.downloaded {
            bail!(
                "the changed copy of `{}` is shorter ({changed} bytes) than the volume ({} bytes), \
                 and an upload cannot shrink it",
                self.volume,
                self.downloaded
            );
        }
        before_write()?;
        hv.overwrite_volume(pool, &self.volume, &self.path)?;
        Ok(())
    }
}
