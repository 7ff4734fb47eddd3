//! The per-instance config disks: ISO 9660 volumes carrying an [`Identity`] to the guest's first boot.
//!
//! Two layouts: virtup's own (`VIRTUPCFG`, read by the [`crate::firstboot`] payload), which the
//! modules give every instance and template, also those with cloud-init (cloud-init is told to leave
//! hostname and host keys alone), and a NoCloud seed (`cidata`, read by cloud-init) that carries only
//! what a user gives in `cloud_init` (their user-data, network-config, vendor-data) plus a
//! meta-data naming the clone; never a secret of virtup's. Files are rendered
//! purely ([`render`]), staged in a 0700 directory as 0600 files, packed with xorriso (or
//! genisoimage), and the staging directory is removed. Inside the guest the ISO's files are
//! world-readable, so the first-boot script mounts it on a private directory and unmounts it at
//! once; its secrets are password hashes and the host's private key, which belongs to that guest.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::firstboot::{CONFIG_FORMAT, CONFIG_LABEL};
use crate::{Cmd, GuestError, Identity};

/// Which reader the disk is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigDiskKind {
    /// virtup's first-boot payload; label `VIRTUPCFG`.
    Virtup,
    /// cloud-init's NoCloud datasource, with the user's `cloud_init` data; label `cidata`.
    NoCloud,
}

impl ConfigDiskKind {
    pub fn label(self) -> &'static str {
        match self {
            ConfigDiskKind::Virtup => CONFIG_LABEL,
            ConfigDiskKind::NoCloud => "cidata",
        }
    }
}

/// The program that packs the staging directory into an ISO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsoTool {
    Xorriso,
    Genisoimage,
}

impl IsoTool {
    /// genisoimage when installed, else xorriso, else `None`. Both write the same ISO; genisoimage
    /// takes under 5 ms for a config disk where xorriso takes a steady 100 ms (measured by
    /// bench/clone), and that is most of a clone's host-side time.
    pub fn detect() -> Option<IsoTool> {
        [IsoTool::Genisoimage, IsoTool::Xorriso]
            .into_iter()
            .find(|tool| crate::find_program(tool.program()).is_some())
    }

    pub fn program(self) -> &'static str {
        match self {
            IsoTool::Xorriso => "xorriso",
            IsoTool::Genisoimage => "genisoimage",
        }
    }
}

/// `xorriso -as mkisofs -V LABEL -J -r -o OUT DIR` (or the same with genisoimage): Joliet and
/// Rock Ridge keep the file names as they are.
pub fn iso_cmd(tool: IsoTool, label: &str, staging: &Path, out: &Path) -> Cmd {
    let mut cmd = Cmd::new(tool.program());
    match tool {
        IsoTool::Xorriso => cmd.args(["-as", "mkisofs"]),
        IsoTool::Genisoimage => cmd.arg("-quiet"),
    };
    cmd.args(["-V", label, "-J", "-r", "-o"])
        .arg(out)
        .arg(staging);
    cmd
}

/// One file of a config disk.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub name: String,
    pub content: Vec<u8>,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Some files hold a private key or password hashes.
        write!(f, "ConfigFile({}, {} bytes)", self.name, self.content.len())
    }
}

impl ConfigFile {
    fn new(name: impl Into<String>, content: impl Into<Vec<u8>>) -> ConfigFile {
        ConfigFile {
            name: name.into(),
            content: content.into(),
        }
    }
}

/// The files of a config disk for `identity`, validated first. Reads private keys given as files.
///
/// virtup layout: `format`, `hostname`, `fqdn`?, `machine-id`, `ssh_host_<alg>_key` and `.pub`,
/// `user`, `authorized_keys` (omitted when empty: the template's file then stays), `shadow`
/// (`NAME:HASH` lines for `chpasswd -e`, omitted without hashes).
pub fn render(identity: &Identity, kind: ConfigDiskKind) -> Result<Vec<ConfigFile>, GuestError> {
    identity.validate()?;
    match kind {
        ConfigDiskKind::Virtup => render_virtup(identity),
        ConfigDiskKind::NoCloud => render_nocloud(identity),
    }
}

fn render_virtup(identity: &Identity) -> Result<Vec<ConfigFile>, GuestError> {
    let line = |s: &str| format!("{s}\n");
    let mut files = vec![
        ConfigFile::new("format", line(CONFIG_FORMAT)),
        ConfigFile::new("hostname", line(&identity.hostname)),
    ];
    if let Some(fqdn) = &identity.fqdn {
        files.push(ConfigFile::new("fqdn", line(fqdn)));
    }
    files.push(ConfigFile::new("machine-id", line(&identity.machine_id)));
    for key in &identity.host_keys {
        let name = format!("ssh_host_{}_key", key.algorithm);
        files.push(ConfigFile::new(&name, private_key_text(key)?));
        files.push(ConfigFile::new(
            format!("{name}.pub"),
            line(&key.public_key),
        ));
    }
    files.push(ConfigFile::new("user", line(&identity.user)));
    if !identity.authorized_keys.is_empty() {
        let text: String = identity.authorized_keys.iter().map(|k| line(k)).collect();
        files.push(ConfigFile::new("authorized_keys", text));
    }
    let shadow = identity.shadow_lines();
    if !shadow.is_empty() {
        files.push(ConfigFile::new("shadow", shadow));
    }
    files.push(ConfigFile::new("random-seed", random_seed()));
    if identity.grow_root {
        files.push(ConfigFile::new("grow-root", line("yes")));
    }
    if let Some(ip) = &identity.static_ipv4 {
        files.push(ConfigFile::new("static-ipv4", ip.line()));
    }
    if !identity.filesystems.is_empty() {
        files.push(ConfigFile::new("filesystems", identity.filesystem_lines()));
    }
    Ok(files)
}

/// Bytes from the host's CSPRNG, which the first boot mixes into the guest's pool: a clone
/// resumed from a template's memory image starts with its siblings' pool, and a cold clone's
/// early pool is only what the template's saved seed file gave it.
fn random_seed() -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; RANDOM_SEED_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// 512 bits, as systemd-random-seed saves.
const RANDOM_SEED_BYTES: usize = 64;

/// The private key's bytes, ending with a newline (OpenSSH refuses some keys without one).
fn private_key_text(key: &crate::HostKey) -> Result<Vec<u8>, GuestError> {
    let mut bytes = key.private_key.read()?;
    if bytes.is_empty() {
        return Err(GuestError::invalid(
            "host key",
            &key.algorithm,
            "the private key is empty",
        ));
    }
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    Ok(bytes)
}

/// YAML scalars are written as JSON strings, which YAML reads verbatim, so no value can break
/// the document's structure.
fn yaml(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// NoCloud `meta-data`: the instance-id makes cloud-init treat each clone as a new instance.
pub fn nocloud_meta_data(identity: &Identity) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml(&format!("iid-virtup-{}", identity.machine_id)),
        yaml(&identity.hostname)
    )
}

/// The NoCloud seed: `meta-data`, and the user's `cloud_init` files (a `user-data` is always there,
/// since NoCloud needs one; an empty cloud-config when the user gave none). Nothing of virtup's
/// identity beyond the instance-id and hostname: keys and passwords go on the VIRTUPCFG disk only.
fn render_nocloud(identity: &Identity) -> Result<Vec<ConfigFile>, GuestError> {
    let cloud = identity.cloud_init.as_ref().ok_or_else(|| {
        GuestError::invalid(
            "cloud_init",
            &identity.hostname,
            "a NoCloud seed needs cloud_init data",
        )
    })?;
    let mut files = vec![ConfigFile::new("meta-data", nocloud_meta_data(identity))];
    if cloud.user_data.is_none() {
        files.push(ConfigFile::new("user-data", "#cloud-config\n"));
    }
    for (name, text) in cloud.files() {
        files.push(ConfigFile::new(name, text));
    }
    Ok(files)
}

/// A 0700 directory holding a config disk's files as 0600 files; removed when dropped.
pub struct StagedConfig {
    dir: tempfile::TempDir,
    kind: ConfigDiskKind,
}

impl StagedConfig {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn kind(&self) -> ConfigDiskKind {
        self.kind
    }
}

impl fmt::Debug for StagedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedConfig")
            .field("path", &self.path())
            .field("kind", &self.kind)
            .finish()
    }
}

/// Renders `identity` and writes its files into a fresh 0700 directory under `parent`.
pub fn stage(
    identity: &Identity,
    kind: ConfigDiskKind,
    parent: &Path,
) -> Result<StagedConfig, GuestError> {
    let files = render(identity, kind)?;
    let dir = tempfile::Builder::new()
        .prefix(".virtup-stage-")
        .tempdir_in(parent)
        .map_err(|e| GuestError::write(parent, e))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
        .map_err(|e| GuestError::write(dir.path(), e))?;
    for file in &files {
        let path = dir.path().join(&file.name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&file.content))
            .map_err(|e| GuestError::write(&path, e))?;
    }
    Ok(StagedConfig { dir, kind })
}

/// Packs a staged directory into the ISO `out` (0600), atomically: built beside `out` under a
/// temporary name, then renamed.
pub fn write_iso(staged: &StagedConfig, tool: IsoTool, out: &Path) -> Result<(), GuestError> {
    let tmp = temp_sibling(out)?;
    let result = iso_cmd(tool, staged.kind.label(), staged.path(), &tmp)
        .output()
        .map_err(GuestError::from)
        .and_then(|_| {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
                .map_err(|e| GuestError::write(&tmp, e))
        })
        .and_then(|()| fs::rename(&tmp, out).map_err(|e| GuestError::write(out, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Stages `identity` next to `out`, writes the ISO and removes the staging directory.
pub fn write_config_disk(
    identity: &Identity,
    kind: ConfigDiskKind,
    tool: IsoTool,
    out: &Path,
) -> Result<(), GuestError> {
    let parent = parent_dir(out);
    let staged = stage(identity, kind, &parent)?;
    write_iso(&staged, tool, out)?;
    staged.dir.close().map_err(|e| GuestError::write(parent, e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn temp_sibling(out: &Path) -> Result<PathBuf, GuestError> {
    let name = out.file_name().ok_or_else(|| {
        GuestError::invalid("output path", out.display().to_string(), "has no file name")
    })?;
    Ok(parent_dir(out).join(format!(
        ".{}.tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::sample;

    fn file<'a>(files: &'a [ConfigFile], name: &str) -> Option<&'a str> {
        files
            .iter()
            .find(|f| f.name == name)
            .map(|f| std::str::from_utf8(&f.content).unwrap())
    }

    #[test]
    fn virtup_layout() {
        let files = render(&sample(), ConfigDiskKind::Virtup).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "format",
                "hostname",
                "fqdn",
                "machine-id",
                "ssh_host_ed25519_key",
                "ssh_host_ed25519_key.pub",
                "user",
                "authorized_keys",
                "shadow",
                "random-seed"
            ]
        );
        assert_eq!(file(&files, "format"), Some("virtup-config 1\n"));
        assert_eq!(file(&files, "hostname"), Some("web1\n"));
        assert_eq!(file(&files, "fqdn"), Some("web1.lab.example\n"));
        assert_eq!(
            file(&files, "machine-id"),
            Some("0123456789abcdef0123456789abcdef\n")
        );
        assert!(file(&files, "ssh_host_ed25519_key")
            .unwrap()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert_eq!(
            file(&files, "ssh_host_ed25519_key.pub"),
            Some("ssh-ed25519 AAAAC3Nza host@web1\n")
        );
        assert_eq!(
            file(&files, "authorized_keys"),
            Some("ssh-ed25519 AAAAuser virt@host\n")
        );
        assert_eq!(
            file(&files, "shadow"),
            Some("root:$6$saltsalt$abc./DEF\nvirt:$6$rounds=6000$s$xyz\n")
        );
        assert!(!format!("{files:?}").contains("OPENSSH"));
    }

    #[test]
    fn every_config_disk_carries_its_own_random_seed() {
        let seed = |files: Vec<ConfigFile>| {
            files
                .into_iter()
                .find(|f| f.name == "random-seed")
                .expect("a random-seed file")
                .content
        };
        let one = seed(render(&sample(), ConfigDiskKind::Virtup).unwrap());
        let two = seed(render(&sample(), ConfigDiskKind::Virtup).unwrap());
        assert_eq!(one.len(), RANDOM_SEED_BYTES);
        assert_ne!(one, two, "two renders of one identity share a seed");
        assert_ne!(one, vec![0u8; RANDOM_SEED_BYTES]);
    }

    #[test]
    fn optional_files_are_omitted() {
        let mut identity = sample();
        identity.fqdn = None;
        identity.authorized_keys.clear();
        identity.root_password_hash = None;
        identity.user_password_hash = None;
        identity.host_keys.clear();
        let files = render(&identity, ConfigDiskKind::Virtup).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["format", "hostname", "machine-id", "user", "random-seed"]
        );
    }

    #[test]
    fn invalid_identity_renders_nothing() {
        let mut identity = sample();
        identity.user = "x y".into();
        assert!(render(&identity, ConfigDiskKind::Virtup).is_err());
        identity.cloud_init = Some(virtup_core::cloud_init::CloudInit {
            user_data: Some("#cloud-config\n".into()),
            ..Default::default()
        });
        assert!(render(&identity, ConfigDiskKind::NoCloud).is_err());
    }

    #[test]
    fn nocloud_seed_carries_the_users_files_and_no_secret() {
        let mut identity = sample();
        assert!(render(&identity, ConfigDiskKind::NoCloud).is_err());
        identity.cloud_init = Some(virtup_core::cloud_init::CloudInit {
            user_data: None,
            network_config: Some("version: 2\n".into()),
            vendor_data: Some("#cloud-config\nruncmd: [[true]]\n".into()),
        });
        assert_eq!(
            nocloud_meta_data(&identity),
            "instance-id: \"iid-virtup-0123456789abcdef0123456789abcdef\"\nlocal-hostname: \"web1\"\n"
        );
        let files = render(&identity, ConfigDiskKind::NoCloud).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["meta-data", "user-data", "network-config", "vendor-data"]
        );
        assert_eq!(file(&files, "user-data"), Some("#cloud-config\n"));
        assert_eq!(file(&files, "network-config"), Some("version: 2\n"));
        let all: String = files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
            .collect();
        for secret in ["PRIVATE KEY", "$6$", "AAAAuser"] {
            assert!(!all.contains(secret), "the seed carries {secret}");
        }
        identity.cloud_init.as_mut().unwrap().user_data = Some("#!/bin/sh\ntrue\n".into());
        let files = render(&identity, ConfigDiskKind::NoCloud).unwrap();
        assert_eq!(file(&files, "user-data"), Some("#!/bin/sh\ntrue\n"));
        assert_eq!(files.len(), 4);
    }

    #[test]
    fn iso_argv() {
        let cmd = iso_cmd(
            IsoTool::Xorriso,
            "VIRTUPCFG",
            Path::new("/s"),
            Path::new("/o.iso"),
        );
        assert_eq!(
            cmd.argv(),
            [
                "xorriso",
                "-as",
                "mkisofs",
                "-V",
                "VIRTUPCFG",
                "-J",
                "-r",
                "-o",
                "/o.iso",
                "/s"
            ]
        );
        let cmd = iso_cmd(
            IsoTool::Genisoimage,
            "cidata",
            Path::new("/s"),
            Path::new("/o.iso"),
        );
        assert_eq!(
            cmd.argv(),
            [
                "genisoimage",
                "-quiet",
                "-V",
                "cidata",
                "-J",
                "-r",
                "-o",
                "/o.iso",
                "/s"
            ]
        );
        assert_eq!(ConfigDiskKind::Virtup.label(), "VIRTUPCFG");
        assert_eq!(ConfigDiskKind::NoCloud.label(), "cidata");
    }
}
