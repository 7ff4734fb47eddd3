//! The ownership ledger: which pool volumes virtup made, proven by a record, never by a name.
//!
//! `owned/<scope>.json` in the data dir (scope: an instance name or a template domain `VIRTUP-<t>`)
//! lists the volumes that scope's runs created. An entry goes through two states:
//! - *pending*: written under the scope's lock right before a create, after the name was seen free
//!   in the pool. A volume that exists under that name while the entry is pending was made by the
//!   run that wrote it (the create refuses a taken name, and a failed create removes the entry), so
//!   a killed run's half-made volume is still provably virtup's and the next run deletes it;
//! - *created*: rewritten after the create succeeded, with the volume's libvirt key (its path on
//!   directory pools). A volume is virtup's only while its key is the recorded one.
//!
//! Anything else in the pool, whatever its name, is foreign: never deleted, never replaced.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::datadir::{ensure_private_dir, PRIVATE_MODE};
use crate::datadir::{read_json_if_exists, remove_file_if_exists, write_json, DataDir, DataError};
use crate::validate;

/// One volume a scope made (or is making).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedVolume {
    /// The hypervisor's URI, as the run used it.
    pub uri: String,
    pub pool: String,
    pub name: String,
    /// The volume's libvirt key once created; `None` while the create is pending.
    pub key: Option<String>,
    /// For a pending overlay: the backing file it is created on, checked before the entry proves anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// The domain that uses the volume was defined: from then on the volume is the domain's data,
    /// never a leftover of a killed run (a domain undefined by hand leaves a disk worth keeping).
    #[serde(default)]
    pub attached: bool,
}

/// What a volume observed in a pool is, as far as the ledger can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Created by this scope and still the same object (its key matches).
    Created,
    /// Left by a run of this scope that was killed between its record and its confirmation.
    Pending,
    /// Not provably this scope's: never touch it.
    Foreign,
}

/// The scope of an object's records on a remote hypervisor: `<name>@<id>`, `id` being 8 lowercase
/// hex digits that name the hypervisor (see `virtup_ops::context::template_scope`). `@` never occurs
/// in a name, so such a scope is never another object's.
pub fn remote_scope(name: &str, id: &str) -> String {
    format!("{name}@{id}")
}

/// A scope is a name, or a name and a hypervisor id ([`remote_scope`]); anything else is refused
/// before it becomes a file or directory name (ledgers, host keys).
pub fn check_scope(scope: &str) -> Result<(), DataError> {
    let invalid = |reason: String| DataError::Invalid {
        what: "ownership scope",
        value: scope.to_owned(),
        reason,
    };
    let (name, id) = match scope.split_once('@') {
        Some((name, id)) => (name, Some(id)),
        None => (scope, None),
    };
    validate::name("ownership scope", name).map_err(|e| invalid(e.reason))?;
    match id {
        Some(id)
            if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Err(invalid(format!(
                "`{id}` after `@` is not a hypervisor id (8 lowercase hex digits)"
            )))
        }
        _ => Ok(()),
    }
}

/// The ledger of one scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(skip)]
    scope: String,
    pub volumes: Vec<OwnedVolume>,
}

/// The observed identity of a volume, as libvirt reports it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub backing: Option<&'a str>,
}

impl Ledger {
    fn file(data: &DataDir, scope: &str) -> Result<PathBuf, DataError> {
        check_scope(scope)?;
        Ok(data.root().join("owned").join(format!("{scope}.json")))
    }

    /// The scope's ledger; empty when there is none. A damaged file is an error naming it.
    pub fn read(data: &DataDir, scope: &str) -> Result<Ledger, DataError> {
        let mut ledger: Ledger =
            read_json_if_exists(&Self::file(data, scope)?)?.unwrap_or_default();
        ledger.scope = scope.to_owned();
        Ok(ledger)
    }

    fn write(&self, data: &DataDir) -> Result<(), DataError> {
        let file = Self::file(data, &self.scope)?;
        if self.volumes.is_empty() {
            remove_file_if_exists(&file)?;
            return Ok(());
        }
        ensure_private_dir(file.parent().expect("owned/ has a parent"))?;
        write_json(&file, self, PRIVATE_MODE)
    }

    fn position(&self, uri: &str, pool: &str, name: &str) -> Option<usize> {
        self.volumes
            .iter()
            .position(|v| v.uri == uri && v.pool == pool && v.name == name)
    }

    /// The entry for a volume, if the scope has one.
    pub fn entry(&self, uri: &str, pool: &str, name: &str) -> Option<&OwnedVolume> {
        self.position(uri, pool, name).map(|i| &self.volumes[i])
    }

    /// Pure: what the ledger proves about an observed volume of `pool` on `uri`.
    pub fn proof(&self, uri: &str, pool: &str, seen: Observed<'_>) -> Proof {
        match self.entry(uri, pool, seen.name) {
            Some(OwnedVolume { key: Some(k), .. }) if k == seen.key => Proof::Created,
            Some(OwnedVolume {
                key: None, backing, ..
            }) if backing.is_none() || backing.as_deref() == seen.backing => Proof::Pending,
            _ => Proof::Foreign,
        }
    }

    /// Records that this scope is about to create `name` (the caller holds the scope's lock and
    /// has seen the name free). Written to disk before the create starts.
    pub fn intend(
        &mut self,
        data: &DataDir,
        uri: &str,
        pool: &str,
        name: &str,
        backing: Option<&str>,
    ) -> Result<(), DataError> {
        let entry = OwnedVolume {
            uri: uri.to_owned(),
            pool: pool.to_owned(),
            name: name.to_owned(),
            key: None,
            backing: backing.map(str::to_owned),
            attached: false,
        };
        match self.position(uri, pool, name) {
            Some(i) => self.volumes[i] = entry,
            None => self.volumes.push(entry),
        }
        self.write(data)
    }

    /// Records that the create succeeded, with the volume's key.
    pub fn confirm(
        &mut self,
        data: &DataDir,
        uri: &str,
        pool: &str,
        name: &str,
        key: &str,
    ) -> Result<(), DataError> {
        let entry = OwnedVolume {
            uri: uri.to_owned(),
            pool: pool.to_owned(),
            name: name.to_owned(),
            key: Some(key.to_owned()),
            backing: None,
            attached: false,
        };
        match self.position(uri, pool, name) {
            Some(i) => {
                let attached = self.volumes[i].attached && self.volumes[i].key == entry.key;
                self.volumes[i] = OwnedVolume { attached, ..entry }
            }
            None => self.volumes.push(entry),
        }
        self.write(data)
    }

    /// Records that the domain using these volumes is defined (see [`OwnedVolume::attached`]).
    pub fn attach(
        &mut self,
        data: &DataDir,
        uri: &str,
        pool: &str,
        names: &[String],
    ) -> Result<(), DataError> {
        for name in names {
            if let Some(i) = self.position(uri, pool, name) {
                self.volumes[i].attached = true;
            }
        }
        self.write(data)
    }

    /// Whether the recorded volume belonged to a defined domain.
    pub fn is_attached(&self, uri: &str, pool: &str, name: &str) -> bool {
        self.entry(uri, pool, name).is_some_and(|v| v.attached)
    }

    /// Drops pending entries of `pool` whose volume never appeared (the run was killed before its
    /// create): left standing, they would vouch for whatever later takes the name. The caller
    /// holds the scope's lock and passes the pool's current volume names.
    pub fn prune_pending(
        &mut self,
        data: &DataDir,
        uri: &str,
        pool: &str,
        existing: &std::collections::BTreeSet<String>,
    ) -> Result<(), DataError> {
        let before = self.volumes.len();
        self.volumes.retain(|v| {
            !(v.key.is_none() && v.uri == uri && v.pool == pool && !existing.contains(&v.name))
        });
        if self.volumes.len() != before {
            self.write(data)?;
        }
        Ok(())
    }

    /// Drops the entry of a volume that was deleted, or whose create failed.
    pub fn forget(
        &mut self,
        data: &DataDir,
        uri: &str,
        pool: &str,
        name: &str,
    ) -> Result<(), DataError> {
        if let Some(i) = self.position(uri, pool, name) {
            self.volumes.remove(i);
            self.write(data)?;
        }
        Ok(())
    }

    /// Removes the scope's ledger (its objects are gone).
    pub fn discard(data: &DataDir, scope: &str) -> Result<(), DataError> {
        remove_file_if_exists(&Self::file(data, scope)?).map(drop)
    }

    /// Every scope that has a ledger in this data dir (for `--delete --all`).
    pub fn scopes(data: &DataDir) -> Result<Vec<String>, DataError> {
        let dir = data.root().join("owned");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DataError::Io {
                    action: "list",
                    path: dir,
                    error: e,
                })
            }
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "qemu:///system";

    fn seen<'a>(name: &'a str, key: &'a str) -> Observed<'a> {
        Observed {
            name,
            key,
            backing: None,
        }
    }

    #[test]
    fn a_volume_is_ours_only_by_record_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("d")).unwrap();
        let mut l = Ledger::read(&data, "web1").unwrap();
        let path = "/p/web1.qcow2";
        // No record: a volume named exactly like virtup's is foreign.
        assert_eq!(
            l.proof(URI, "default", seen("web1.qcow2", path)),
            Proof::Foreign
        );
        l.intend(&data, URI, "default", "web1.qcow2", Some("/p/base"))
            .unwrap();
        // Pending: the backing file must be the one the run was creating on.
        let mut s = seen("web1.qcow2", path);
        assert_eq!(l.proof(URI, "default", s), Proof::Foreign);
        s.backing = Some("/p/base");
        assert_eq!(l.proof(URI, "default", s), Proof::Pending);
        l.confirm(&data, URI, "default", "web1.qcow2", path)
            .unwrap();
        // Survives a re-read; other pool, other URI, other key: foreign.
        let l = Ledger::read(&data, "web1").unwrap();
        assert_eq!(
            l.proof(URI, "default", seen("web1.qcow2", path)),
            Proof::Created
        );
        assert_eq!(
            l.proof(URI, "other", seen("web1.qcow2", path)),
            Proof::Foreign
        );
        assert_eq!(
            l.proof("qemu+ssh://h/system", "default", seen("web1.qcow2", path)),
            Proof::Foreign
        );
        assert_eq!(
            l.proof(URI, "default", seen("web1.qcow2", "/elsewhere/web1.qcow2")),
            Proof::Foreign
        );
        assert_eq!(Ledger::scopes(&data).unwrap(), vec!["web1".to_owned()]);
    }

    #[test]
    fn attached_and_stale_pending_entries() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("d")).unwrap();
        let mut l = Ledger::read(&data, "web1").unwrap();
        l.confirm(&data, URI, "default", "web1.qcow2", "/p/web1.qcow2")
            .unwrap();
        l.intend(&data, URI, "default", "web1-config.iso", None)
            .unwrap();
        assert!(!l.is_attached(URI, "default", "web1.qcow2"));
        l.attach(&data, URI, "default", &["web1.qcow2".into()])
            .unwrap();
        let mut l = Ledger::read(&data, "web1").unwrap();
        assert!(l.is_attached(URI, "default", "web1.qcow2"));
        // The killed create never made the config disk: its pending entry goes, the disk's stays.
        let existing = ["web1.qcow2".to_owned()].into();
        l.prune_pending(&data, URI, "default", &existing).unwrap();
        let l = Ledger::read(&data, "web1").unwrap();
        assert_eq!(l.volumes.len(), 1);
        assert!(l.is_attached(URI, "default", "web1.qcow2"));
    }

    #[test]
    fn forgetting_the_last_volume_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("d")).unwrap();
        let mut l = Ledger::read(&data, "VIRTUP-t").unwrap();
        l.confirm(&data, URI, "default", "VIRTUP-t-g1.qcow2", "/p/x")
            .unwrap();
        assert!(data.root().join("owned/VIRTUP-t.json").exists());
        l.forget(&data, URI, "default", "VIRTUP-t-g1.qcow2")
            .unwrap();
        assert!(!data.root().join("owned/VIRTUP-t.json").exists());
        assert!(Ledger::scopes(&data).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_ledger_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("d")).unwrap();
        std::fs::create_dir_all(data.root().join("owned")).unwrap();
        std::fs::write(data.root().join("owned/web1.json"), "{not json").unwrap();
        let err = Ledger::read(&data, "web1").unwrap_err().to_string();
        assert!(err.contains("owned/web1.json"), "{err}");
        assert!(Ledger::read(&data, "../etc").is_err());
    }

    #[test]
    fn a_remote_scope_is_a_name_and_a_hypervisor_id_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("d")).unwrap();
        let scope = remote_scope("VIRTUP-t", "0123abcd");
        let mut l = Ledger::read(&data, &scope).unwrap();
        l.intend(&data, URI, "default", "VIRTUP-t-g1.qcow2", None)
            .unwrap();
        assert!(data.root().join("owned/VIRTUP-t@0123abcd.json").exists());
        assert_eq!(Ledger::scopes(&data).unwrap(), vec![scope]);
        // The domain's own scope is another ledger.
        assert!(Ledger::read(&data, "VIRTUP-t").unwrap().volumes.is_empty());
        for bad in [
            "VIRTUP-t@",
            "VIRTUP-t@0123ABCD",
            "VIRTUP-t@0123abc",
            "VIRTUP-t@0123abcd@0123abcd",
            "VIRTUP-t@../../x",
            "@0123abcd",
        ] {
            assert!(Ledger::read(&data, bad).is_err(), "{bad}");
        }
    }
}
