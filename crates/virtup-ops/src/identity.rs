//! A guest's identity from the host side: keys, passwords (0600 secrets) and the config disk carrying them to first boot.

use std::path::Path;

use anyhow::{anyhow, Result};
use virtup_core::{keys, DataDir, HostKeys, UserKey};
use virtup_guest::config_disk::{self, ConfigDiskKind, IsoTool};
use virtup_guest::identity::{hash_password, random_machine_id};
use virtup_guest::{HostKey, Identity, PrivateKey};
use virtup_libvirt::{Hypervisor, VolumeInfo};

/// The given secret, else the one stored before, else a new random one; kept 0600 under `secrets_dir` (0700).
pub fn secret(secrets_dir: &Path, what: &str, given: Option<&str>) -> Result<String> {
    virtup_core::datadir::ensure_private_dir(secrets_dir.parent().unwrap_or(secrets_dir))?;
    virtup_core::datadir::ensure_private_dir(secrets_dir)?;
    let path = secrets_dir.join(what);
    let value = match given {
        Some(v) => v.to_owned(),
        None if path.exists() => keys::read_secret(&path)?,
        None => keys::random_password(24),
    };
    keys::store_secret(&path, &value)?;
    Ok(value)
}

/// Everything a guest learns at first boot.
pub struct GuestIdentity<'a> {
    pub hostname: &'a str,
    pub fqdn: Option<&'a str>,
    pub user: &'a str,
    pub user_key: &'a UserKey,
    pub host_keys: &'a HostKeys,
    pub secrets_dir: &'a Path,
    pub password: Option<&'a str>,
    pub root_password: Option<&'a str>,
    /// The first boot grows the root partition and filesystem (the disk is larger than the template's).
    pub grow_root: bool,
    /// Filesystems the first boot makes on the data disks.
    pub filesystems: &'a [virtup_guest::DataFilesystem],
    /// The static address the first boot configures (`address_mode: static`).
    pub static_ipv4: Option<virtup_guest::StaticIpv4>,
    /// The user's cloud-init data, for the NoCloud seed (`cloud_init`).
    pub cloud_init: Option<&'a virtup_core::cloud_init::CloudInit>,
}

impl GuestIdentity<'_> {
    /// The identity with password hashes (never the passwords) and a fresh machine-id.
    pub fn build(&self) -> Result<Identity> {
        Ok(Identity {
            hostname: self.hostname.to_owned(),
            fqdn: self.fqdn.map(str::to_owned),
            machine_id: random_machine_id(),
            host_keys: vec![HostKey {
                algorithm: "ed25519".into(),
                private_key: PrivateKey::File(self.host_keys.private_path.clone()),
                public_key: self.host_keys.public_openssh.clone(),
            }],
            user: self.user.to_owned(),
            authorized_keys: vec![self.user_key.public_openssh.clone()],
            root_password_hash: Some(hash_password(&secret(
                self.secrets_dir,
                "root_password",
                self.root_password,
            )?)?),
            user_password_hash: Some(hash_password(&secret(
                self.secrets_dir,
                "password",
                self.password,
            )?)?),
            grow_root: self.grow_root,
            filesystems: self.filesystems.to_vec(),
            static_ipv4: self.static_ipv4.clone(),
            cloud_init: self.cloud_init.cloned(),
        })
    }
}

/// Writes a config disk (ISO 9660, label VIRTUPCFG, or the NoCloud seed `cidata`) and uploads it as `volume` through libvirt,
/// so it shows in `virsh vol-list` and works on remote hypervisors too.
pub fn upload_config_disk(
    hv: &Hypervisor,
    data: &DataDir,
    pool: &str,
    volume: &str,
    identity: &Identity,
    kind: ConfigDiskKind,
) -> Result<VolumeInfo> {
    let tool =
        IsoTool::detect().ok_or_else(|| anyhow!("neither xorriso nor genisoimage is installed"))?;
    // The staged files hold the guest's host private key: a scratch dir of this run, which the next
    // run sweeps if this one is killed before it is removed.
    let scratch = data.scratch()?;
    let iso = scratch.path().join(volume);
    config_disk::write_config_disk(identity, kind, tool, &iso)?;
    Ok(hv.upload_volume(pool, volume, &iso)?)
}
