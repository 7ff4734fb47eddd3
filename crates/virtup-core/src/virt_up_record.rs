//! virt-up 2.2.0's own record of an instance (`instance/<name>.json` with no `schema`), read in full only to adopt it.
//!
//! [`crate::InstanceMeta`] reads such a file for what virtup needs to list it and never keeps its
//! passwords. Adoption needs more: the disk virt-up made, the base it was cloned from, the login
//! user's RSA key and the two passwords, which move into 0600 secret files. The passwords are held
//! here only until then, and nothing here prints them (no `Debug`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::datadir::{DataDir, DataError};
use crate::validate;

/// The fields of virt-up 2.2.0's record that adoption checks or moves (it writes them in
/// `Instance.build` and `Instance.clone`); everything else in the file is ignored.
#[derive(Deserialize)]
pub struct VirtUpRecord {
    /// Written by virtup, never by virt-up: a record that has it is not virt-up's.
    #[serde(default)]
    pub schema: Option<u32>,
    pub template: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// The path of the disk virt-up made for it.
    pub disk: String,
    /// The base domain it was cloned from (`VIRTUP-<template>`); absent for a base itself.
    #[serde(default)]
    pub from: Option<String>,
    /// When it was cloned; its presence is what makes it a clone for virt-up.
    #[serde(default)]
    pub cloned: Option<String>,
    /// A clone's disk format (`format`, from the config when it was cloned), else its base's
    /// (`image_format`, copied from the base's record).
    #[serde(default, rename = "format")]
    clone_format: Option<String>,
    #[serde(default)]
    image_format: Option<String>,
    pub user: VirtUpCredentials,
    #[serde(default)]
    pub root: Option<VirtUpCredentials>,
}

/// One `Creds` object of virt-up's: the password is in clear, the key is an RSA key in the data dir.
#[derive(Deserialize)]
pub struct VirtUpCredentials {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ssh_identity: Option<PathBuf>,
}

impl VirtUpRecord {
    /// Reads `instance/<name>.json` as virt-up's record; `None` when there is no such file. A file
    /// that virtup wrote, or that lacks what virt-up always writes, is an error naming the file.
    pub fn read(data: &DataDir, name: &str) -> Result<Option<VirtUpRecord>, DataError> {
        validate::name("name", name).map_err(|e| DataError::Invalid {
            what: "instance name",
            value: name.to_owned(),
            reason: e.reason,
        })?;
        let path = data.instance_file(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::io("read", &path, e)),
        };
        let damaged = |message: &str| DataError::Damaged {
            path: path.clone(),
            message: message.to_owned(),
        };
        // serde's message may quote the value it did not expect, and this file holds passwords: only
        // where it failed is said.
        let record: VirtUpRecord = serde_json::from_slice(&bytes).map_err(|e| {
            damaged(&format!(
                "it is not a record virt-up 2.2.0 writes (a field is missing or of the wrong type, or the \
                 JSON is broken, at line {} column {})",
                e.line(),
                e.column()
            ))
        })?;
        if record.schema.is_some_and(|s| s != 0) {
            return Err(damaged("it is virtup's record, not virt-up 2.2.0's"));
        }
        if record.disk.is_empty() || record.user.username.is_empty() {
            return Err(damaged(
                "virt-up 2.2.0's record names its `disk` and `user`",
            ));
        }
        Ok(Some(record))
    }

    /// The format of its disk as virt-up recorded it (`qcow2` or `raw`).
    pub fn format(&self) -> Option<&str> {
        self.clone_format
            .as_deref()
            .or(self.image_format.as_deref())
    }

    /// A clone (`virt-up create NAME --template T`), not a base (`VIRTUP-<T>`).
    pub fn is_clone(&self) -> bool {
        self.cloned.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As virt-up 2.2.0's `Instance.clone` writes it (json.dump, indent 4), trimmed of what is not read.
    const CLONE: &str = r#"{
    "template": "vmig",
    "created": "2026-12-02 10:00:00.000000",
    "os_version": "debian-12",
    "hostname": "vu1",
    "disk": "/var/lib/libvirt/images/vu1.qcow2",
    "image_format": "qcow2",
    "root": {"username": "root", "password": "R00tpw", "ssh_identity": "/d/sshkeys/root/id_rsa"},
    "user": {"username": "virt", "password": "Us3rpw", "ssh_identity": "/d/sshkeys/virt/id_rsa"},
    "cloned": "2026-12-02 10:01:00.000000",
    "from": "VIRTUP-vmig",
    "format": "qcow2"
}"#;

    fn data_with(name: &str, text: &str) -> (tempfile::TempDir, DataDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("d")).unwrap();
        std::fs::create_dir_all(data.instance_dir()).unwrap();
        std::fs::write(data.instance_file(name), text).unwrap();
        (dir, data)
    }

    #[test]
    fn a_virt_up_clone_record_is_read_in_full() {
        let (_d, data) = data_with("vu1", CLONE);
        let r = VirtUpRecord::read(&data, "vu1").unwrap().unwrap();
        assert!(r.is_clone());
        assert_eq!(r.from.as_deref(), Some("VIRTUP-vmig"));
        assert_eq!(r.disk, "/var/lib/libvirt/images/vu1.qcow2");
        assert_eq!(r.user.username, "virt");
        assert_eq!(r.user.password.as_deref(), Some("Us3rpw"));
        assert_eq!(r.root.as_ref().unwrap().password.as_deref(), Some("R00tpw"));
        assert_eq!(r.format(), Some("qcow2"));
        assert!(VirtUpRecord::read(&data, "other").unwrap().is_none());
    }

    #[test]
    fn virtups_own_record_or_a_partial_one_is_refused_naming_the_file() {
        for (text, why) in [
            (
                r#"{"schema": 1, "template": "t", "disk": "/p", "user": {"username": "u"}}"#,
                "virtup's record",
            ),
            (
                r#"{"template": "t", "disk": "", "user": {"username": "u"}}"#,
                "names its `disk`",
            ),
            (r#"{"template": "t", "user": {"username": "u"}}"#, "line 1"),
            // The value serde did not expect is a password: it is never repeated.
            (
                r#"{"template": "t", "disk": "/p", "user": {"username": "u", "password": 987654321}}"#,
                "wrong type",
            ),
        ] {
            let (_d, data) = data_with("vu1", text);
            let e = VirtUpRecord::read(&data, "vu1").err().unwrap().to_string();
            assert!(e.contains(why) && e.contains("vu1.json"), "{text}: {e}");
            assert!(!e.contains("987654321"), "{e}");
        }
    }
}
