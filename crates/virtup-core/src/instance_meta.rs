//! Per-instance metadata, `instance/<name>.json` in the data dir: what virtup created and how to reach it.
//!
//! Every field has a default so that files written by older virtup versions,
//! and virt-up 2.2.0's own files, still load; a field of the wrong type is a
//! damaged file. virt-up's files are recognised by `schema == 0` and their
//! `user` object (`{"username": …, "password": …}`) is read for the user
//! name only: the password it holds is never kept.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::datadir::{
    parse_json, read_json, remove_file_if_exists, write_json, DataDir, DataError, PRIVATE_MODE,
};
use crate::validate::{self, Shown};

/// One entry of [`InstanceMeta::list`]: the name and that file's own result.
pub type ListedMeta = (String, Result<InstanceMeta, DataError>);

/// The metadata format virtup writes.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceMeta {
    /// 0 for virt-up 2.2.0 files, [`SCHEMA`] for virtup's.
    pub schema: u32,
    pub name: String,
    pub template: String,
    /// The template generation the disk is cloned from.
    pub generation: u32,
    /// Login user name.
    #[serde(deserialize_with = "user_name_or_virt_up_user")]
    pub user: String,
    pub ssh_private_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// `SHA256:…` of the pinned host key.
    pub host_key_fingerprint: Option<String>,
    pub mac: Option<String>,
    pub address: Option<String>,
    pub uri: Option<String>,
    pub pool: Option<String>,
    /// Volumes virtup created for this instance and may delete with it.
    pub volumes: Vec<String>,
    /// RFC 3339 UTC time of creation.
    pub created: String,
    /// Whether the inventory lists the instance.
    pub inventory: bool,
    /// Last state requested (`running`, `present`, `stopped`).
    pub state: Option<String>,
    /// The DHCP host reservation virtup added for the instance, the only entry it may remove.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Reservation>,
    /// The data disks made with the instance (volume names from [`crate::data_disk::volume_name`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_disks: Vec<crate::data_disk::DataDisk>,
    /// The address its first boot configured in the guest (`address_mode: static`), as
    /// `ADDRESS/PREFIX`: only a new instance changes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_ipv4: Option<String>,
    /// The NICs after the first that the instance was made with (`nics`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_nics: Vec<crate::nic::MadeNic>,
    /// The device model of its first NIC as made (`nics[1].model`; the others' are in `extra_nics`);
    /// `None` in records from before the option, whose NICs are virtio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nic_model: Option<crate::nic::NicModel>,
    /// The digest of the `cloud_init` data it was made with ([`crate::cloud_init::CloudInit::digest`]);
    /// the data itself (it may hold secrets) is kept only on its seed disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init_digest: Option<String>,
    /// The inventory groups it was declared in (`groups`), besides virtup's own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// For a clone virt-up 2.2.0 made and virtup adopted: its base (`VIRTUP-<template>`) and disk
    /// format, under virt-up's own keys, so that virt-up 2.2.0 still refuses to delete the base its
    /// disk rests on (it looks for `from` and `image_format: qcow2` in every record).
    #[serde(rename = "from", skip_serializing_if = "Option::is_none")]
    pub virt_up_from: Option<String>,
    #[serde(rename = "image_format", skip_serializing_if = "Option::is_none")]
    pub virt_up_image_format: Option<String>,
}

/// A DHCP host entry on a libvirt network, written before virtup adds it (`confirmed: false`) and
/// confirmed after libvirt took it. A network entry is virtup's only when it matches this record in
/// all of network, MAC, name and address: an entry someone else made never does, since libvirt
/// refuses a second entry with the same MAC, name or address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub network: String,
    pub mac: String,
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    pub confirmed: bool,
}

impl Default for InstanceMeta {
    fn default() -> InstanceMeta {
        InstanceMeta {
            schema: 0,
            name: String::new(),
            template: String::new(),
            generation: 0,
            user: String::new(),
            ssh_private_key_file: None,
            known_hosts_file: None,
            host_key_fingerprint: None,
            mac: None,
            address: None,
            uri: None,
            pool: None,
            volumes: Vec::new(),
            created: String::new(),
            inventory: true,
            state: None,
            reservation: None,
            data_disks: Vec::new(),
            extra_nics: Vec::new(),
            nic_model: None,
            cloud_init_digest: None,
            groups: Vec::new(),
            static_ipv4: None,
            virt_up_from: None,
            virt_up_image_format: None,
        }
    }
}

impl InstanceMeta {
    /// The known_hosts that pins the instance's key: the one the metadata names, else the data dir's
    /// (virt-up 2.2.0's metadata names none).
    pub fn known_hosts_file_in(&self, data: &DataDir) -> PathBuf {
        self.known_hosts_file
            .clone()
            .unwrap_or_else(|| data.known_hosts_file())
    }

    /// New metadata in the current schema, created now.
    pub fn new(name: &str, template: &str) -> InstanceMeta {
        InstanceMeta {
            schema: SCHEMA,
            name: name.to_string(),
            template: template.to_string(),
            created: now_rfc3339(),
            ..InstanceMeta::default()
        }
    }

    /// Written by virt-up 2.2.0 rather than virtup.
    pub fn is_virt_up_legacy(&self) -> bool {
        self.schema == 0
    }

    /// Virt-up 2.2.0's own record, as adoption and the refusals of unadopted instances read it:
    /// no schema and no hypervisor (virt-up writes neither; virtup always writes both).
    pub fn is_virt_up_record(&self) -> bool {
        self.is_virt_up_legacy() && self.uri.is_none()
    }

    /// Reads `instance/<name>.json`; `None` when there is none.
    pub fn read(data_dir: &DataDir, name: &str) -> Result<Option<InstanceMeta>, DataError> {
        check_name(name)?;
        match read_file(&data_dir.instance_file(name), name) {
            Ok(meta) => Ok(Some(meta)),
            Err(DataError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `instance/<self.name>.json` atomically, 0600.
    pub fn write(&self, data_dir: &DataDir) -> Result<(), DataError> {
        check_name(&self.name)?;
        write_json(&data_dir.instance_file(&self.name), self, PRIVATE_MODE)
    }

    /// Removes `instance/<name>.json`; `false` when there was none.
    pub fn remove(data_dir: &DataDir, name: &str) -> Result<bool, DataError> {
        check_name(name)?;
        remove_file_if_exists(&data_dir.instance_file(name))
    }

    /// Every `instance/*.json`, sorted by name, each with its own result so one
    /// damaged file does not hide the others. A missing directory is empty.
    ///
    /// A file whose name is no valid instance name (a space, `..`, bytes that are not UTF-8, …) is
    /// listed too, with an error, under its name with invisible characters escaped: callers warn
    /// about it like about any damaged file, and never use such a name for anything else.
    /// Dot files (temp files of atomic writes) are skipped.
    pub fn list(data_dir: &DataDir) -> Result<Vec<ListedMeta>, DataError> {
        let dir = data_dir.instance_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DataError::io("list", &dir, e)),
        };
        let mut names = Vec::new();
        let mut bad = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DataError::io("list", &dir, e))?;
            let file_name = entry.file_name();
            if file_name.as_encoded_bytes().starts_with(b".")
                || !file_name.as_encoded_bytes().ends_with(b".json")
            {
                continue;
            }
            let Some(file_name) = file_name.to_str() else {
                let lossy = file_name.to_string_lossy();
                let name = lossy.strip_suffix(".json").unwrap_or(&lossy);
                bad.push(bad_file_name(name, "the file name is not UTF-8".into()));
                continue;
            };
            let name = file_name.strip_suffix(".json").unwrap_or(file_name);
            match check_name(name) {
                Ok(()) => names.push(name.to_string()),
                Err(DataError::Invalid { reason, .. }) => bad.push(bad_file_name(name, reason)),
                Err(e) => bad.push((shown(name), Err(e))),
            }
        }
        names.sort();
        let mut listed: Vec<ListedMeta> = names
            .into_iter()
            .map(|name| {
                let result = read_file(&dir.join(format!("{name}.json")), &name);
                (name, result)
            })
            .collect();
        listed.extend(bad);
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listed)
    }
}

/// `name` with invisible characters escaped, without [`Shown`]'s backquotes.
fn shown(name: &str) -> String {
    let s = Shown(name).to_string();
    s[1..s.len() - 1].to_string()
}

/// The entry [`InstanceMeta::list`] gives a metadata file whose name no instance can have.
fn bad_file_name(name: &str, reason: String) -> ListedMeta {
    let name = shown(name);
    let error = DataError::Invalid {
        what: "metadata file name",
        value: format!("{name}.json"),
        reason: format!("not a valid instance name: {reason}"),
    };
    (name, Err(error))
}

fn check_name(name: &str) -> Result<(), DataError> {
    validate::name("name", name).map_err(|e| DataError::Invalid {
        what: "instance name",
        value: name.to_string(),
        reason: e.reason,
    })
}

fn read_file(path: &Path, name: &str) -> Result<InstanceMeta, DataError> {
    check_file_name(path, name, read_json(path)?)
}

/// `bytes` read as the file `path` of instance `name`, checked as [`InstanceMeta::read`] and
/// [`InstanceMeta::list`] check it; for fuzzing the reader without a data dir.
#[doc(hidden)]
pub fn parse_file(path: &Path, name: &str, bytes: &[u8]) -> Result<InstanceMeta, DataError> {
    check_file_name(path, name, parse_json(path, bytes)?)
}

fn check_file_name(
    path: &Path,
    name: &str,
    mut meta: InstanceMeta,
) -> Result<InstanceMeta, DataError> {
    if meta.name.is_empty() {
        // virt-up names instances by file name only.
        meta.name = name.to_string();
    } else if meta.name != name {
        return Err(DataError::Damaged {
            path: path.to_path_buf(),
            message: format!("it describes instance {}, not `{name}`", Shown(&meta.name)),
        });
    }
    Ok(meta)
}

fn user_name_or_virt_up_user<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct UserVisitor;
    impl<'de> Visitor<'de> for UserVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a user name or virt-up's user object")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let mut username = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "username" {
                    username = Some(map.next_value::<String>()?);
                } else {
                    // Skips the password without keeping it.
                    map.next_value::<IgnoredAny>()?;
                }
            }
            username.ok_or_else(|| de::Error::missing_field("username"))
        }
    }
    d.deserialize_any(UserVisitor)
}

/// The current time as RFC 3339 UTC (`2026-11-22T02:49:55Z`).
pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now())
}

/// Formats a time as RFC 3339 UTC with whole seconds.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn sample(name: &str) -> InstanceMeta {
        InstanceMeta {
            generation: 3,
            user: "virt".into(),
            ssh_private_key_file: Some("/d/sshkeys/virt/id_ed25519".into()),
            known_hosts_file: Some("/d/known_hosts".into()),
            host_key_fingerprint: Some("SHA256:abc".into()),
            mac: Some("52:54:00:01:02:03".into()),
            address: Some("192.168.122.10".into()),
            uri: Some("qemu:///system".into()),
            pool: Some("default".into()),
            volumes: vec![format!("{name}.qcow2"), format!("{name}-config.iso")],
            state: Some("running".into()),
            ..InstanceMeta::new(name, "debian12")
        }
    }

    #[test]
    fn write_read_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        assert_eq!(InstanceMeta::read(&dd, "web1").unwrap(), None);
        assert!(InstanceMeta::list(&dd).unwrap().is_empty());

        let web1 = sample("web1");
        let web2 = sample("web2");
        web2.write(&dd).unwrap();
        web1.write(&dd).unwrap();
        let path = dd.instance_file("web1");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(InstanceMeta::read(&dd, "web1").unwrap(), Some(web1.clone()));

        // One damaged file does not hide the others.
        std::fs::write(dd.instance_file("broken"), "{\"generation\": \"three\"}").unwrap();
        std::fs::write(
            dd.instance_dir()
                .join(".web3.json.virtup-tmp-1-0000000000000000"),
            "x",
        )
        .unwrap();
        std::fs::write(dd.instance_dir().join("notes.txt"), "x").unwrap();
        let listed = InstanceMeta::list(&dd).unwrap();
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["broken", "web1", "web2"]);
        let broken = listed[0].1.as_ref().unwrap_err().to_string();
        assert!(
            broken.starts_with(&format!(
                "damaged metadata file `{}`: invalid type: string \"three\", expected u32",
                dd.instance_file("broken").display()
            )),
            "{broken}"
        );
        assert_eq!(listed[1].1.as_ref().unwrap(), &web1);
        assert_eq!(listed[2].1.as_ref().unwrap(), &web2);

        assert!(InstanceMeta::remove(&dd, "web1").unwrap());
        assert!(!InstanceMeta::remove(&dd, "web1").unwrap());
        assert_eq!(InstanceMeta::read(&dd, "web1").unwrap(), None);
    }

    #[test]
    fn names_are_checked_and_must_match_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        assert!(InstanceMeta::read(&dd, "../etc/passwd").is_err());
        assert!(sample("a/b").write(&dd).is_err());
        std::fs::write(dd.instance_file("x"), "{\"name\": \"y\"}").unwrap();
        let e = InstanceMeta::read(&dd, "x").unwrap_err().to_string();
        assert!(e.ends_with("it describes instance `y`, not `x`"), "{e}");
    }

    /// A file name no instance can have is one listed error among the others, never a failure of
    /// the whole list, and it is shown with invisible characters escaped.
    #[test]
    fn odd_file_names_are_listed_as_errors() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        // One sample, written and compared: its `created` is the clock's, and two would differ
        // across a second boundary.
        let web1 = sample("web1");
        web1.write(&dd).unwrap();
        let dir = dd.instance_dir();
        let odd: [&[u8]; 5] = [
            b"a b.json",
            b"a..b.json",
            b"-x.json",
            b"new\nline.json",
            b"caf\xe9.json",
        ];
        for name in odd {
            std::fs::write(dir.join(std::ffi::OsStr::from_bytes(name)), "{}").unwrap();
        }
        // Skipped as before: dot files (temp files of atomic writes) and other extensions.
        std::fs::write(dir.join("..json"), "{}").unwrap();
        std::fs::write(dir.join("a b.txt"), "{}").unwrap();
        let listed = InstanceMeta::list(&dd).unwrap();
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["-x", "a b", "a..b", "caf\u{fffd}", "new\\nline", "web1"]
        );
        assert_eq!(listed[5].1.as_ref().unwrap(), &web1);
        let err = |i: usize| listed[i].1.as_ref().unwrap_err().to_string();
        assert_eq!(
            err(1),
            "invalid metadata file name `a b.json`: not a valid instance name: `a b` contains \
             a space; use only letters, digits, `.`, `_` and `-`"
        );
        assert!(err(2).ends_with("must not contain `..`"), "{}", err(2));
        assert!(
            err(0).ends_with("must start with a letter or a digit"),
            "{}",
            err(0)
        );
        assert_eq!(
            err(3),
            "invalid metadata file name `caf\u{fffd}.json`: not a valid instance name: the file \
             name is not UTF-8"
        );
        assert!(
            err(4).starts_with("invalid metadata file name `new\\nline.json`"),
            "{}",
            err(4)
        );
        assert!(!err(4).contains('\n'), "{}", err(4));
    }

    /// The fuzzing entry point checks bytes exactly as a read checks the file.
    #[test]
    fn parse_file_checks_like_read() {
        let path = Path::new("/d/instance/x.json");
        let meta = parse_file(path, "x", b"{\"schema\": 1, \"template\": \"t\"}").unwrap();
        assert_eq!((meta.name.as_str(), meta.template.as_str()), ("x", "t"));
        let e = parse_file(path, "x", b"{\"name\": \"y\"}").unwrap_err();
        assert!(e.to_string().ends_with("not `x`"), "{e}");
        let e = parse_file(path, "x", b"{\"generation\": -1}").unwrap_err();
        assert!(matches!(e, DataError::Damaged { .. }), "{e}");
    }

    #[test]
    fn unknown_fields_tolerated_and_defaults_filled() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        std::fs::write(
            dd.instance_file("web1"),
            r#"{"schema": 1, "name": "web1", "template": "t", "user": "virt", "from_the_future": {"x": 1}}"#,
        )
        .unwrap();
        let meta = InstanceMeta::read(&dd, "web1").unwrap().unwrap();
        assert_eq!(meta.template, "t");
        assert!(meta.inventory, "inventory defaults to true");
        assert!(meta.volumes.is_empty());
        assert!(!meta.is_virt_up_legacy());
    }

    #[test]
    fn reads_virt_up_2_2_0_metadata_without_keeping_the_password() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        // Shape of virt-up 2.2.0's clone metadata. Its ssh_options value `no` is JSON-escaped (`n\u006f`):
        // no file of the project may hold a spelling that turns host key checking off (lab_site.rs).
        let text = r#"{
    "template": "default",
    "created": "2021-03-04 12:34:56.123456",
    "os_version": "debian-10",
    "os_variant": "debian10",
    "hostname": "web1",
    "disk": "/var/lib/libvirt/images/web1.qcow2",
    "image_format": "qcow2",
    "memory": 512,
    "vcpus": "1",
    "graphics": "none",
    "root": {"username": "root", "password": "s3cret-root", "ssh_identity": "/h/sshkeys/root/id_rsa"},
    "user": {"username": "alice", "password": "s3cret", "ssh_identity": "/h/sshkeys/alice/id_rsa"},
    "address-source": "agent",
    "ssh_options": {"StrictHostKeyChecking": "n\u006f"},
    "address": "192.168.122.7",
    "cloned": "2021-03-04 12:40:00.000000",
    "from": "VIRTUP-default",
    "format": "qcow2"
}"#;
        std::fs::write(dd.instance_file("web1"), text).unwrap();
        let meta = InstanceMeta::read(&dd, "web1").unwrap().unwrap();
        assert!(meta.is_virt_up_legacy());
        assert_eq!(meta.name, "web1");
        assert_eq!(meta.user, "alice");
        assert_eq!(meta.template, "default");
        assert_eq!(meta.address.as_deref(), Some("192.168.122.7"));
        assert!(!format!("{meta:?}").contains("s3cret"));
    }

    #[test]
    fn rfc3339() {
        let table = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ];
        for (secs, want) in table {
            assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
        assert_eq!(now_rfc3339().len(), 20);
    }
}
