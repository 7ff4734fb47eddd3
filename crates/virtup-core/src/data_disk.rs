//! An instance's data disks (`disks`): what the user asks for, checked, and how each is named.
//!
//! A data disk is a volume of its own in the instance's pool, made with the instance (owned by
//! record and key, like its root disk) and deleted with it unless it is `keep`. Its name and serial
//! follow from the instance name and its place in the list, so a re-run finds the same disk.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{self, Shown, ValidationError};
use crate::vocab::ImageFormat;

/// The most data disks one instance may have: virtio gives each its own PCI slot (of 32, shared
/// with the NIC and the other devices), and more are rarely what a user meant.
pub const MAX_DATA_DISKS: usize = 16;
/// The smallest data disk: less is a typo (`1K` for `1G`), never a disk anyone can use.
pub const MIN_DATA_DISK_BYTES: u64 = 1 << 20;
/// The smallest disk `mkfs.xfs` accepts (xfsprogs 5.19 and later refuse less than 300 MiB).
pub const MIN_XFS_BYTES: u64 = 300 << 20;

/// How the guest sees the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataDiskBus {
    /// virtio-blk (`/dev/vdX`).
    Virtio,
    /// virtio-scsi (`/dev/sdX`), on a controller virtup adds.
    Scsi,
}

impl DataDiskBus {
    pub const WORDS: [&'static str; 2] = ["virtio", "scsi"];

    pub fn as_str(self) -> &'static str {
        match self {
            DataDiskBus::Virtio => "virtio",
            DataDiskBus::Scsi => "scsi",
        }
    }
}

/// A filesystem the first boot makes on a blank data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
    Xfs,
}

impl Filesystem {
    pub const WORDS: [&'static str; 2] = ["ext4", "xfs"];

    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        }
    }
}

/// One data disk as asked for (and as `instance/<name>.json` records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDisk {
    /// Virtual size in bytes.
    pub size: u64,
    pub format: ImageFormat,
    pub bus: DataDiskBus,
    /// `None`: the disk is left blank.
    pub filesystem: Option<Filesystem>,
    /// Where the filesystem is mounted (and listed in `/etc/fstab`); needs `filesystem`.
    pub mount: Option<String>,
    /// Left in the pool when the instance is deleted: virtup lets go of it (it is the user's then).
    pub keep: bool,
}

/// The volume of data disk `index` (0-based) of `instance`: `<instance>.data<N>.<format>`. Instance
/// names are host names (no `.`), so this never is another instance's disk (`<name>.<format>`) or
/// config disk (`<name>-config.iso`).
pub fn volume_name(instance: &str, index: usize, format: ImageFormat) -> String {
    format!("{instance}.data{}.{}", index + 1, format.as_str())
}

/// What every data disk's serial starts with.
pub const SERIAL_PREFIX: &str = "virtup-data";

/// The serial the guest reads to find data disk `index` (virtio allows 20 bytes).
pub fn serial(index: usize) -> String {
    format!("{SERIAL_PREFIX}{}", index + 1)
}

/// Parses the `disks` option: a list of `{size, format, bus, filesystem, mount, keep}`; every
/// error names the item and the key (`disks[2].mount`).
pub fn parse_list(option: &str, value: &Value) -> Result<Vec<DataDisk>, ValidationError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(ValidationError::new(
                option,
                format!(
                    "must be a list of disks, not {}",
                    validate::json_kind(other)
                ),
            ))
        }
    };
    if items.len() > MAX_DATA_DISKS {
        return Err(ValidationError::new(
            option,
            format!(
                "lists {} disks; at most {MAX_DATA_DISKS} are allowed",
                items.len()
            ),
        ));
    }
    let mut mounts = Vec::new();
    let mut disks = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{option}[{}]", i + 1);
        let disk = parse_one(&at, item)?;
        if let Some(m) = &disk.mount {
            // Nested mounts depend on their order in fstab, which `nofail` and a missing disk upset.
            let inside = |outer: &str, inner: &str| inner.starts_with(&format!("{outer}/"));
            if let Some(other) = mounts
                .iter()
                .find(|o: &&String| *o == m || inside(o, m) || inside(m, o))
            {
                return Err(ValidationError::new(
                    &format!("{at}.mount"),
                    if other == m {
                        format!("{} is the mount point of another disk", Shown(m))
                    } else {
                        format!(
                            "{} and {} of another disk are nested (one disk per directory tree)",
                            Shown(m),
                            Shown(other)
                        )
                    },
                ));
            }
            mounts.push(m.clone());
        }
        disks.push(disk);
    }
    Ok(disks)
}

const KEYS: [&str; 6] = ["size", "format", "bus", "filesystem", "mount", "keep"];

fn parse_one(at: &str, item: &Value) -> Result<DataDisk, ValidationError> {
    let map = validate::dict_item(at, item, "a disk (a dictionary with `size`)", &KEYS)?;
    let text = |key: &str| validate::item_text(at, map, key);
    let size_text =
        text("size")?.ok_or_else(|| ValidationError::new(&format!("{at}.size"), "is required"))?;
    let size = validate::parse_size(&format!("{at}.size"), &size_text)?;
    if size < MIN_DATA_DISK_BYTES {
        return Err(ValidationError::new(
            &format!("{at}.size"),
            format!(
                "{} is smaller than {}",
                Shown(&size_text),
                validate::show_bytes(MIN_DATA_DISK_BYTES)
            ),
        ));
    }
    let format = match text("format")? {
        None => ImageFormat::Qcow2,
        Some(f) => ImageFormat::parse(&format!("{at}.format"), &f)?,
    };
    let bus = match text("bus")?.as_deref() {
        None | Some("virtio") => DataDiskBus::Virtio,
        Some("scsi") => DataDiskBus::Scsi,
        Some(other) => {
            return Err(ValidationError::new(
                &format!("{at}.bus"),
                format!(
                    "{} is not offered (expected {}; SATA and IDE need drivers cloud kernels lack)",
                    Shown(other),
                    DataDiskBus::WORDS.join(" or ")
                ),
            ))
        }
    };
    let filesystem = match text("filesystem")?.as_deref() {
        None | Some("none") => None,
        Some("ext4") => Some(Filesystem::Ext4),
        Some("xfs") => Some(Filesystem::Xfs),
        Some(other) => {
            return Err(ValidationError::new(
                &format!("{at}.filesystem"),
                format!(
                    "{} is not offered (expected none, {})",
                    Shown(other),
                    Filesystem::WORDS.join(", ")
                ),
            ))
        }
    };
    if filesystem == Some(Filesystem::Xfs) && size < MIN_XFS_BYTES {
        return Err(ValidationError::new(
            &format!("{at}.size"),
            format!(
                "{} is too small for xfs (mkfs.xfs needs at least {})",
                Shown(&size_text),
                validate::show_bytes(MIN_XFS_BYTES)
            ),
        ));
    }
    let mount = match text("mount")? {
        Some(m) => Some(mount_point(&format!("{at}.mount"), &m)?),
        None => None,
    };
    if mount.is_some() && filesystem.is_none() {
        return Err(ValidationError::new(
            &format!("{at}.mount"),
            "needs a `filesystem` to mount",
        ));
    }
    let keep = match map.get("keep") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        // YAML 1.1 reads `keep: 1` as a number; Ansible's booleans take it, and so do we.
        Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => true,
            "no" | "false" | "off" | "0" => false,
            _ => {
                return Err(ValidationError::new(
                    &format!("{at}.keep"),
                    format!("{} is not a boolean", Shown(s)),
                ))
            }
        },
        Some(other) => {
            return Err(ValidationError::new(
                &format!("{at}.keep"),
                format!("must be a boolean, not {}", validate::json_kind(other)),
            ))
        }
    };
    Ok(DataDisk {
        size,
        format,
        bus,
        filesystem,
        mount,
        keep,
    })
}

/// A mount point the first boot can put in `/etc/fstab` as it is: absolute, plain characters (fstab
/// would need octal escapes for a space), no `.`/`..` parts, and not a directory the system (or the
/// login user's SSH key) needs. Returned in its one spelling (`/srv//data/` is `/srv/data`), so that
/// two spellings of one place are seen as one.
fn mount_point(option: &str, value: &str) -> Result<String, ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    if !value.starts_with('/') {
        return bad("is not an absolute path");
    }
    if value.len() > 255 {
        return bad("is longer than 255 bytes");
    }
    if value
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-')))
    {
        return bad("has a character other than letters, digits, `/`, `.`, `_` and `-`");
    }
    let parts: Vec<&str> = value.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return bad("has a `.` or `..` part");
    }
    // Mounted over, these hide what the system runs on; `/home` and `/root` hide the login
    // user's authorized keys, so the instance could no longer be reached. Below `/var`, `/srv`,
    // `/opt`, `/mnt`, `/home/<dir>` and the like is where data belongs.
    const TOP: [&str; 17] = [
        "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "proc", "root",
        "run", "sbin", "sys", "tmp", "usr", "var",
    ];
    const TREES: [&str; 13] = [
        "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin",
        "sys", "usr",
    ];
    match parts.as_slice() {
        [] => bad("is the root directory"),
        // The first boot's record of being done: on a data disk, a boot without it would run the
        // first boot again (new passwords, keys, network config).
        ["var", "lib", "virtup", ..] => bad("would hide virtup's own record in the guest"),
        // Never empty in an image, so the first boot would leave the disk unmounted (it mounts
        // over no files): a directory below them is the place.
        ["var", "lib" | "log" | "cache" | "spool" | "mail" | "backups"] => {
            bad("holds the system's files already (mount a directory below it)")
        }
        [top] if TOP.contains(top) => bad("would hide a directory the system needs"),
        [first, ..] if TREES.contains(first) => bad("is inside a directory the system manages"),
        _ => Ok(format!("/{}", parts.join("/"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_full_list_parses_with_defaults_filled_in() {
        let disks = parse_list(
            "disks",
            &json!([
                {"size": "1G"},
                {"size": "2G", "format": "raw", "bus": "scsi", "filesystem": "ext4",
                 "mount": "/srv/data", "keep": "yes"},
                {"size": 314572800, "filesystem": "xfs", "mount": "/var/lib//pg/", "keep": 0},
            ]),
        )
        .unwrap();
        assert_eq!(
            disks[0],
            DataDisk {
                size: 1 << 30,
                format: ImageFormat::Qcow2,
                bus: DataDiskBus::Virtio,
                filesystem: None,
                mount: None,
                keep: false,
            }
        );
        assert_eq!(disks[1].format, ImageFormat::Raw);
        assert_eq!(disks[1].bus, DataDiskBus::Scsi);
        assert_eq!(disks[1].filesystem, Some(Filesystem::Ext4));
        assert_eq!(disks[1].mount.as_deref(), Some("/srv/data"));
        assert!(disks[1].keep);
        assert_eq!(disks[2].size, 300 << 20);
        assert_eq!(disks[2].filesystem, Some(Filesystem::Xfs));
        // One spelling of a mount point, and `keep: 0` as YAML reads `no` written as a number.
        assert_eq!(disks[2].mount.as_deref(), Some("/var/lib/pg"));
        assert!(!disks[2].keep);
        assert_eq!(parse_list("disks", &json!([])).unwrap(), vec![]);
        assert_eq!(parse_list("disks", &Value::Null).unwrap(), vec![]);
    }

    #[test]
    fn each_bad_value_is_named_by_item_and_key() {
        let rows = [
            (json!("1G"), "disks", "must be a list"),
            (json!(["1G"]), "disks[1]", "must be a disk"),
            (json!([{}]), "disks[1].size", "is required"),
            (json!([{"size": "1X"}]), "disks[1].size", "unknown unit"),
            (json!([{"size": "10K"}]), "disks[1].size", "smaller than"),
            (
                json!([{"size": "1G", "sise": 1}]),
                "disks[1]",
                "unknown key `sise`",
            ),
            (
                json!([{"size": "1G", "format": "vmdk"}]),
                "disks[1].format",
                "not an image format",
            ),
            (
                json!([{"size": "1G", "bus": "sata"}]),
                "disks[1].bus",
                "not offered",
            ),
            (
                json!([{"size": "1G", "filesystem": "ntfs"}]),
                "disks[1].filesystem",
                "not offered",
            ),
            (
                json!([{"size": "1G", "mount": "/srv"}]),
                "disks[1].mount",
                "needs a `filesystem`",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "srv"}]),
                "disks[1].mount",
                "absolute",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/"}]),
                "disks[1].mount",
                "root directory",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/etc"}]),
                "disks[1].mount",
                "system needs",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/proc/x"}]),
                "disks[1].mount",
                "manages",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv/../etc"}]),
                "disks[1].mount",
                "`..`",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv/my data"}]),
                "disks[1].mount",
                "character",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv/a\nb"}]),
                "disks[1].mount",
                "character",
            ),
            (
                json!([{"size": "1G", "keep": "maybe"}]),
                "disks[1].keep",
                "not a boolean",
            ),
            (
                json!([{"size": "1G", "keep": []}]),
                "disks[1].keep",
                "must be a boolean",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/home"}]),
                "disks[1].mount",
                "system needs",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/root/"}]),
                "disks[1].mount",
                "system needs",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/usr/local"}]),
                "disks[1].mount",
                "manages",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/etc/app"}]),
                "disks[1].mount",
                "manages",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/lib64/x"}]),
                "disks[1].mount",
                "manages",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/var/lib/virtup"}]),
                "disks[1].mount",
                "virtup's own record",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/var/log/"}]),
                "disks[1].mount",
                "mount a directory below it",
            ),
            (
                json!([{"size": "299M", "filesystem": "xfs"}]),
                "disks[1].size",
                "too small for xfs",
            ),
            (
                json!([{"size": "1G", "keep": 2}]),
                "disks[1].keep",
                "must be a boolean",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv/"},
                       {"size": "1G", "filesystem": "xfs", "mount": "//srv"}]),
                "disks[2].mount",
                "another disk",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv/data/logs"},
                       {"size": "1G", "filesystem": "xfs", "mount": "/srv/data"}]),
                "disks[2].mount",
                "nested",
            ),
            (
                json!([{"size": ["1G"]}]),
                "disks[1].size",
                "must be a string",
            ),
            (
                json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv"},
                       {"size": "1G", "filesystem": "xfs", "mount": "/srv"}]),
                "disks[2].mount",
                "another disk",
            ),
        ];
        for (value, option, needle) in rows {
            let e = parse_list("disks", &value).expect_err(&value.to_string());
            assert_eq!(e.option, option, "{value}");
            assert!(e.reason.contains(needle), "{value}: {}", e.reason);
        }
        let many = Value::Array(vec![json!({"size": "1G"}); MAX_DATA_DISKS + 1]);
        assert!(parse_list("disks", &many)
            .unwrap_err()
            .reason
            .contains("at most"));
    }

    #[test]
    fn names_cannot_be_another_instances_disks() {
        assert_eq!(volume_name("web", 0, ImageFormat::Qcow2), "web.data1.qcow2");
        assert_eq!(volume_name("web", 1, ImageFormat::Raw), "web.data2.raw");
        // Instance names are host names: a `.` in a volume name is never an instance's own disk.
        assert!(crate::validate::instance_name("name", "web.data1").is_err());
        assert!(serial(MAX_DATA_DISKS - 1).len() <= 20);
    }
}
