//! Storage pools and volumes, always through libvirt's pool API so `virsh vol-list` sees everything.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use crate::domain_xml::ImageFormat;
use crate::error::{LibvirtError, Result};
use crate::hypervisor::Hypervisor;
use crate::storage_xml::{parse_pool_xml, parse_volume_xml, PoolInfo, VolumeInfo, VolumeSpec};

const UPLOAD_CHUNK: usize = 256 * 1024;

/// `pool/volume`, the object name used in volume error messages.
fn vol_id(pool: &str, volume: &str) -> String {
    format!("{pool}/{volume}")
}

/// The action of an upload's stream failing after its volume was created (see
/// [`LibvirtError::created_a_volume`]).
const UPLOAD_INTO_VOLUME: &str = "upload into volume";

impl LibvirtError {
    /// An [`Hypervisor::upload_volume`] error that came after the volume was created: only then
    /// can a volume of that name be the upload's own (if removing it failed too).
    pub fn created_a_volume(&self) -> bool {
        matches!(self, LibvirtError::Call { action, .. } if action == UPLOAD_INTO_VOLUME)
    }
}

impl Hypervisor {
    fn find_pool(&self, name: &str) -> Result<Option<StoragePool>> {
        match self.conn.lookup_storage_pool_by_name(name) {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.code().is(ErrorNumber::NoStoragePool) => Ok(None),
            Err(e) => Err(LibvirtError::call("look up storage pool", name, &e)),
        }
    }

    pub(crate) fn lookup_pool(&self, name: &str) -> Result<StoragePool> {
        self.find_pool(name)?
            .ok_or_else(|| LibvirtError::PoolNotFound(name.to_owned()))
    }

    fn find_volume(
        &self,
        pool: &StoragePool,
        pool_name: &str,
        name: &str,
    ) -> Result<Option<StorageVol>> {
        match pool.lookup_storage_vol_by_name(name) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code().is(ErrorNumber::NoStorageVolume) => Ok(None),
            Err(e) => Err(LibvirtError::call(
                "look up volume",
                &vol_id(pool_name, name),
                &e,
            )),
        }
    }

    fn lookup_volume(&self, pool: &StoragePool, pool_name: &str, name: &str) -> Result<StorageVol> {
        self.find_volume(pool, pool_name, name)?
            .ok_or_else(|| LibvirtError::VolumeNotFound {
                pool: pool_name.to_owned(),
                volume: name.to_owned(),
            })
    }

    fn describe(vol: &StorageVol, id: &str) -> Result<VolumeInfo> {
        let xml = vol
            .xml_desc(0)
            .map_err(|e| LibvirtError::call("read XML of volume", id, &e))?;
        parse_volume_xml(&xml)
    }

    fn pool_info(pool: &StoragePool, name: &str) -> Result<PoolInfo> {
        let fail = |e: VirtError| LibvirtError::call("read storage pool", name, &e);
        let active = pool.is_active().map_err(fail)?;
        let xml = pool.xml_desc(0).map_err(fail)?;
        parse_pool_xml(&xml, active)
    }

    /// A storage pool by name, `None` if it does not exist.
    pub fn pool(&self, name: &str) -> Result<Option<PoolInfo>> {
        match self.find_pool(name)? {
            Some(p) => Self::pool_info(&p, name).map(Some),
            None => Ok(None),
        }
    }

    /// All storage pools, active or not.
    pub fn list_pools(&self) -> Result<Vec<PoolInfo>> {
        let pools = self
            .conn
            .list_all_storage_pools(0)
            .map_err(|e| LibvirtError::call("list storage pools on", self.uri(), &e))?;
        let mut out = Vec::with_capacity(pools.len());
        for p in pools {
            let name = p
                .name()
                .map_err(|e| LibvirtError::call("list storage pools on", self.uri(), &e))?;
            out.push(Self::pool_info(&p, &name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Re-reads the pool's directory, so files created behind libvirt's back show up.
    ///
    /// libvirt refuses a refresh while another client's volume job (a clone, an upload) runs in the
    /// pool ("has asynchronous jobs running"); concurrent virtup runs do exactly that, so the refresh
    /// is retried for up to a minute before that error is reported.
    pub fn refresh_pool(&self, pool: &str) -> Result<()> {
        let handle = self.lookup_pool(pool)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match handle.refresh(0) {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.message().contains("asynchronous jobs running")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                Err(e) => return Err(LibvirtError::call("refresh storage pool", pool, &e)),
            }
        }
    }

    /// Every volume of a pool, sorted by name (one XML call per volume).
    pub fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>> {
        let p = self.lookup_pool(pool)?;
        let vols = p
            .list_all_volumes(0)
            .map_err(|e| LibvirtError::call("list volumes of storage pool", pool, &e))?;
        let mut out = Vec::with_capacity(vols.len());
        for v in vols {
            let name = v.name().unwrap_or_default();
            match Self::describe(&v, &vol_id(pool, &name)) {
                Ok(info) => out.push(info),
                // Deleted since the listing.
                Err(_) if self.find_volume(&p, pool, &name)?.is_none() => {}
                // Still being created by another client's job (its file is not there yet), or
                // replaced under us: it is not a volume anyone can use right now.
                Err(e) if e.is_not_found() || e.to_string().contains("no storage vol") => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A volume by name, `None` if the pool has no such volume.
    pub fn volume_info(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>> {
        let p = self.lookup_pool(pool)?;
        match self.find_volume(&p, pool, name)? {
            Some(v) => Self::describe(&v, &vol_id(pool, name)).map(Some),
            None => Ok(None),
        }
    }

    /// The volume's path on the hypervisor host, `None` if the pool has no such volume.
    pub fn volume_path(&self, pool: &str, name: &str) -> Result<Option<String>> {
        let p = self.lookup_pool(pool)?;
        match self.find_volume(&p, pool, name)? {
            Some(v) => v
                .path()
                .map(Some)
                .map_err(|e| LibvirtError::call("read path of volume", &vol_id(pool, name), &e)),
            None => Ok(None),
        }
    }

    /// Creates an empty volume, or a qcow2 overlay when `spec.backing` is set (libvirt runs
    /// `qemu-img create -b` for that on directory pools).
    pub fn create_volume(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeInfo> {
        let xml = spec.to_xml()?;
        let p = self.lookup_pool(pool)?;
        let id = vol_id(pool, &spec.name);
        let vol = StorageVol::create_xml(&p, &xml, 0)
            .map_err(|e| LibvirtError::call("create volume", &id, &e))?;
        Self::describe(&vol, &id)
    }

    /// Full copy of `source` (same pool) into a new volume: a reflink (O(1) copy-on-write
    /// clone) when the filesystem and format allow it, an ordinary copy otherwise. The copy is
    /// at least as large as the source.
    pub fn clone_volume(&self, pool: &str, source: &str, spec: &VolumeSpec) -> Result<VolumeInfo> {
        if spec.backing.is_some() {
            return Err(LibvirtError::invalid(
                "clone spec",
                &spec.name,
                "a full copy cannot have a backing file",
            ));
        }
        let p = self.lookup_pool(pool)?;
        let src = self.lookup_volume(&p, pool, source)?;
        let src_info = Self::describe(&src, &vol_id(pool, source))?;
        let effective = VolumeSpec {
            capacity_bytes: spec.capacity_bytes.max(src_info.capacity_bytes),
            ..spec.clone()
        };
        let xml = effective.to_xml()?;
        let id = vol_id(pool, &spec.name);
        // REFLINK is all-or-nothing in libvirt (raw copies fail on filesystems without
        // FICLONE, qemu-img copies reject the flag), and a failed build leaves no volume
        // behind, so an ordinary copy is the fallback.
        let vol = match StorageVol::create_xml_from(
            &p,
            &xml,
            &src,
            sys::VIR_STORAGE_VOL_CREATE_REFLINK,
        ) {
            Ok(v) => v,
            Err(first) => {
                if self.find_volume(&p, pool, &spec.name)?.is_some() {
                    return Err(LibvirtError::call("clone volume", &id, &first));
                }
                StorageVol::create_xml_from(&p, &xml, &src, 0).map_err(|e| {
                    LibvirtError::call(format!("clone `{source}` into volume"), &id, &e)
                })?
            }
        };
        Self::describe(&vol, &id)
    }

    /// Grows a volume's virtual size; shrinking is refused (it would cut off guest data).
    pub fn resize_volume(&self, pool: &str, name: &str, capacity_bytes: u64) -> Result<()> {
        let p = self.lookup_pool(pool)?;
        let vol = self.lookup_volume(&p, pool, name)?;
        let id = vol_id(pool, name);
        let current = Self::describe(&vol, &id)?.capacity_bytes;
        if capacity_bytes < current {
            return Err(LibvirtError::invalid(
                "volume size",
                &capacity_bytes.to_string(),
                format!("`{id}` is {current} bytes and volumes are never shrunk"),
            ));
        }
        if capacity_bytes == current {
            return Ok(());
        }
        vol.resize(capacity_bytes, 0)
            .map(drop)
            .map_err(|e| LibvirtError::call("resize volume", &id, &e))
    }

    /// Deletes a volume; `Ok(false)` if it was already gone.
    pub fn delete_volume(&self, pool: &str, name: &str) -> Result<bool> {
        let p = self.lookup_pool(pool)?;
        let Some(vol) = self.find_volume(&p, pool, name)? else {
            return Ok(false);
        };
        match vol.delete(0) {
            Ok(()) => Ok(true),
            Err(e) if e.code().is(ErrorNumber::NoStorageVolume) => Ok(false),
            Err(e) => Err(LibvirtError::call("delete volume", &vol_id(pool, name), &e)),
        }
    }

    /// Creates volume `name` from the bytes of a local file (a raw volume of exactly that size),
    /// streaming them through libvirt so it also works on remote hypervisors. An existing volume of
    /// that name is never replaced: only the caller can prove it is its own and delete it first.
    pub fn upload_volume(&self, pool: &str, name: &str, local: &Path) -> Result<VolumeInfo> {
        let io_err = |error| LibvirtError::Io {
            path: local.to_owned(),
            error,
        };
        let mut file = File::open(local).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Err(LibvirtError::invalid(
                "upload source",
                &local.display().to_string(),
                "the file is empty",
            ));
        }
        let id = vol_id(pool, name);
        let p = self.lookup_pool(pool)?;
        if self.find_volume(&p, pool, name)?.is_some() {
            return Err(LibvirtError::invalid(
                "volume",
                &id,
                "exists already and is not replaced",
            ));
        }
        let spec = VolumeSpec::new(name, len, ImageFormat::Raw);
        let vol = StorageVol::create_xml(&p, &spec.to_xml()?, 0)
            .map_err(|e| LibvirtError::call("create volume", &id, &e))?;
        match self.stream_into(&vol, &id, &mut file, len, local) {
            Ok(()) => Self::describe(&vol, &id),
            Err(e) => {
                // Half-written volumes must not look like finished ones.
                let _ = vol.delete(0);
                Err(e)
            }
        }
    }

    /// Copies the bytes of an existing volume (its file, as `virsh vol-download` gives them) into
    /// `local`, a new file of mode 0600: how an image in a remote pool is read without a path on
    /// this machine. Returns the number of bytes. A failure removes the partial file.
    pub fn download_volume(&self, pool: &str, name: &str, local: &Path) -> Result<u64> {
        use std::io::{Seek as _, SeekFrom, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        let id = vol_id(pool, name);
        let vol = self.lookup_volume(&self.lookup_pool(pool)?, pool, name)?;
        let io_err = |error| LibvirtError::Io {
            path: local.to_owned(),
            error,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(local)
            .map_err(io_err)?;
        let fail = |e: VirtError| LibvirtError::call("download volume", &id, &e);
        let copied = (|| {
            let stream = Stream::new(&self.conn, 0).map_err(fail)?;
            vol.download(&stream, 0, 0, 0).map_err(fail)?;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let mut got: u64 = 0;
            loop {
                // A blocking stream: `recv` returns the bytes read, 0 at the end, and any negative
                // return (an error, or "would block") comes back as an error.
                match stream.recv(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
                        // Zeros are skipped, not written: the copy stays as sparse as the volume
                        // (the length is set at the end).
                        let written = if buf[..n].iter().all(|&b| b == 0) {
                            file.seek(SeekFrom::Current(n as i64)).map(drop)
                        } else {
                            file.write_all(&buf[..n])
                        };
                        if let Err(e) = written {
                            let _ = stream.abort();
                            return Err(io_err(e));
                        }
                        got += n as u64;
                    }
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(fail(e));
                    }
                }
            }
            stream.finish().map_err(fail)?;
            file.set_len(got).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            Ok(got)
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(local);
        }
        copied
    }

    /// Writes `local`'s bytes over an existing volume from its start, keeping the volume itself (its
    /// name, its key, the records that own it). Bytes past the end of `local` stay as they were, so
    /// the caller writes content that is never shorter than the volume's (an image changed in place
    /// only grows).
    pub fn overwrite_volume(&self, pool: &str, name: &str, local: &Path) -> Result<()> {
        let id = vol_id(pool, name);
        let vol = self.lookup_volume(&self.lookup_pool(pool)?, pool, name)?;
        let io_err = |error| LibvirtError::Io {
            path: local.to_owned(),
            error,
        };
        let mut file = File::open(local).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        self.stream_into(&vol, &id, &mut file, len, local)
    }

    fn stream_into(
        &self,
        vol: &StorageVol,
        id: &str,
        file: &mut File,
        len: u64,
        local: &Path,
    ) -> Result<()> {
        let fail = |e: VirtError| LibvirtError::call(UPLOAD_INTO_VOLUME, id, &e);
        let stream = Stream::new(&self.conn, 0).map_err(fail)?;
        vol.upload(&stream, 0, len, 0).map_err(fail)?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut sent: u64 = 0;
        let outcome = loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    break Err(LibvirtError::Io {
                        path: local.to_owned(),
                        error,
                    })
                }
            };
            let mut chunk = &buf[..n];
            let mut result = Ok(());
            while !chunk.is_empty() {
                match stream.send(chunk) {
                    Ok(w) if w > 0 => chunk = &chunk[w as usize..],
                    Ok(_) => {
                        result = Err(LibvirtError::Call {
                            action: UPLOAD_INTO_VOLUME.into(),
                            object: id.to_owned(),
                            message: "the stream accepted no data".into(),
                        });
                        break;
                    }
                    Err(e) => {
                        result = Err(fail(e));
                        break;
                    }
                }
            }
            if let Err(e) = result {
                break Err(e);
            }
            sent += n as u64;
        };
        match outcome {
            Ok(()) if sent == len => stream.finish().map_err(fail),
            Ok(()) => {
                let _ = stream.abort();
                Err(LibvirtError::Call {
                    action: UPLOAD_INTO_VOLUME.into(),
                    object: id.to_owned(),
                    message: format!("`{}` changed size while uploading", local.display()),
                })
            }
            Err(e) => {
                let _ = stream.abort();
                Err(e)
            }
        }
    }
}
