//! Changing a remote pool's image with a tool that runs here (virt-customize, virt-sysprep): the
//! volume's bytes come down through libvirt into the data dir's scratch space, the tool works on
//! that copy, and the bytes go back up into the *same* volume, so its key (and so the ownership
//! record that proves it virtup's) stays.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::datadir::ScratchDir;
use virtup_core::DataDir;
use virtup_guest::qemu_img::{self, ImageInfo};
use virtup_libvirt::{Hypervisor, VolumeInfo};

use crate::run_tool;

/// A pool volume brought down to a private file (0600 in a 0700 scratch dir, removed on drop).
pub(crate) struct VolumeCopy {
    scratch: ScratchDir,
    path: PathBuf,
    /// The volume as it was when it came down: written back only while it still is that volume.
    volume: VolumeInfo,
    info: ImageInfo,
    downloaded: u64,
}

impl VolumeCopy {
    /// Brings `volume` of `pool` down and checks that it is an image of `format` that keeps its data
    /// in itself.
    pub(crate) fn download(
        data: &DataDir,
        hv: &Hypervisor,
        pool: &str,
        volume: &str,
        format: &str,
    ) -> Result<VolumeCopy> {
        let described = hv
            .volume_info(pool, volume)?
            .ok_or_else(|| anyhow!("volume `{volume}` vanished from pool `{pool}`"))?;
        let scratch = data.scratch()?;
        let path = scratch.path().join(volume);
        let downloaded = hv.download_volume(pool, volume, &path)?;
        let info = checked_image(&path, volume, format)?;
        Ok(VolumeCopy {
            scratch,
            path,
            volume: described,
            info,
            downloaded,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the copy. A qcow2 overlay names its backing image by its path on the
    /// hypervisor, which means nothing here: for the run, the copy is pointed at a copy of that
    /// image (`backing_volume`, brought down beside it, only read), and then back at the recorded
    /// path and format (qemu-img may lay the header out anew; the names are what count).
    pub(crate) fn work_on(
        &self,
        hv: &Hypervisor,
        pool: &str,
        backing_volume: &str,
        backing_path: &str,
        work: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let Some(recorded) = self.info.backing_filename.as_deref() else {
            return work(&self.path);
        };
        let name = &self.volume.name;
        // virtup made the overlay on exactly this generation: anything else is not its clone.
        if recorded != backing_path {
            bail!(
                "volume `{name}` is backed by `{recorded}`, not by its template's `{backing_path}`"
            );
        }
        let backing_format = self
            .info
            .backing_filename_format
            .as_deref()
            .ok_or_else(|| {
                anyhow!("volume `{name}` names no format for its backing image `{recorded}`")
            })?;
        let base = self.scratch.path().join(backing_volume);
        hv.download_volume(pool, backing_volume, &base)?;
        let base_info = checked_image(&base, backing_volume, backing_format)?;
        if let Some(deeper) = base_info.backing_filename {
            bail!("template volume `{backing_volume}` is itself backed by `{deeper}`, which virtup never makes");
        }
        let base_name = base
            .to_str()
            .ok_or_else(|| anyhow!("scratch path `{}` is not UTF-8", base.display()))?;
        let rebase = |to: &str| {
            run_tool(
                &qemu_img::rebase_unsafe_cmd(&self.path, to, backing_format),
                &format!("qemu-img could not point the copy of `{name}` at `{to}`"),
            )
        };
        rebase(base_name)?;
        work(&self.path)?;
        rebase(recorded)?;
        // The local base goes now, not with the scratch dir: it may be most of the disk used.
        let _ = std::fs::remove_file(&base);
        Ok(())
    }

    /// Writes the copy back over the volume it came from, if that is still the same volume (key and
    /// capacity). `before_write` runs just before the first byte goes up (a seal marks its template
    /// unsealed there).
    pub(crate) fn write_back(
        &self,
        hv: &Hypervisor,
        pool: &str,
        before_write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let name = &self.volume.name;
        let changed = std::fs::metadata(&self.path)
            .with_context(|| format!("cannot read `{}`", self.path.display()))?
            .len();
        // The upload writes from the volume's start: a shorter image would leave old bytes at its
        // end. The tools change an image in place, so it never shrinks; say so if it ever did.
        if changed < self.downloaded {
            bail!(
                "the changed copy of `{name}` is shorter ({changed} bytes) than the volume ({} bytes), \
                 and an upload cannot shrink it",
                self.downloaded
            );
        }
        let now = hv.volume_info(pool, name)?;
        if now.as_ref().map(|v| (&v.key, v.capacity_bytes))
            != Some((&self.volume.key, self.volume.capacity_bytes))
        {
            bail!(
                "volume `{name}` of pool `{pool}` changed while its copy was being worked on here \
                 (key `{}`, {} bytes before); it is left as it is",
                self.volume.key,
                self.volume.capacity_bytes
            );
        }
        before_write()?;
        hv.overwrite_volume(pool, name, &self.path)?;
        Ok(())
    }
}

/// What `qemu-img` says about an image brought down: of the format libvirt and virtup know it by,
/// and holding its own data. A qcow2 header names files by paths on the machine that opens the
/// image; a data file named there would have the tools here write into a file of this machine.
fn checked_image(path: &Path, volume: &str, format: &str) -> Result<ImageInfo> {
    let info = qemu_img::info(path, Some(format))
        .with_context(|| format!("cannot read the copy of volume `{volume}`"))?;
    if info.format != format {
        bail!("volume `{volume}` is {}, not {format}", info.format);
    }
    if let Some(data_file) = info.data_file() {
        bail!(
            "volume `{volume}` keeps its data in an external file `{data_file}`, which virtup never \
             makes; it is not worked on here"
        );
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let mut cmd = virtup_guest::Cmd::new("qemu-img");
        cmd.args(args);
        cmd.output().unwrap();
    }

    #[test]
    fn an_image_from_a_hypervisor_is_worked_on_only_as_the_format_it_is_known_by_and_self_contained(
    ) {
        let dir = tempfile::TempDir::new().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        qemu_img(&["create", "-q", "-f", "qcow2", &p("plain.qcow2"), "1M"]);
        assert_eq!(
            checked_image(dir.path().join("plain.qcow2").as_path(), "v", "qcow2")
                .unwrap()
                .format,
            "qcow2"
        );
        // A header naming a file of this machine as its data: the tools would write into it.
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", p("victim")),
            &p("df.qcow2"),
            "1M",
        ]);
        let e = checked_image(dir.path().join("df.qcow2").as_path(), "v", "qcow2").unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("external file `{}`", p("victim"))),
            "{e:#}"
        );
        // Read as what it is said to be: a raw volume is never taken for the qcow2 it may hold.
        std::fs::write(dir.path().join("raw.img"), [0u8; 4096]).unwrap();
        let e = checked_image(dir.path().join("raw.img").as_path(), "v", "qcow2").unwrap_err();
        assert!(format!("{e:#}").contains("volume `v`"), "{e:#}");
    }
}
