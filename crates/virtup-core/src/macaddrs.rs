//! `macaddrs.json`: a stable MAC address per instance name, kept across delete so a re-created guest gets the same DHCP lease.
//!
//! The format is virt-up 2.2.0's: one JSON object mapping names to MAC
//! strings (`{"web1": "52:54:00:12:34:56"}`), written with 4-space indent.
//! virt-up records the MAC libvirt picked; virtup picks it itself, at random
//! under QEMU's `52:54:00` prefix (which, by QEMU's convention, does not set
//! the locally-administered bit), avoiding every MAC already in the file and
//! any the caller saw in libvirt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rand::RngCore;
use serde::Serialize;

use crate::datadir::{
    parse_json, read_json_if_exists, write_atomic, DataDir, DataError, PRIVATE_MODE,
};
use crate::validate::Shown;

/// libvirt's and QEMU's OUI for generated guest MACs.
pub const QEMU_OUI: [u8; 3] = [0x52, 0x54, 0x00];

/// Attempts before giving up on finding a free MAC (2^24 exist).
const MAX_ATTEMPTS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacAddrs {
    entries: BTreeMap<String, String>,
}

impl MacAddrs {
    /// Reads the file; missing is empty; anything but an object of MAC strings
    /// is a damaged file.
    pub fn load(path: &Path) -> Result<MacAddrs, DataError> {
        Self::from_raw(path, read_json_if_exists(path)?.unwrap_or_default())
    }

    /// `bytes` read as the content of `path`, checked as [`MacAddrs::load`] checks it; for
    /// fuzzing the reader without a data dir.
    #[doc(hidden)]
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<MacAddrs, DataError> {
        Self::from_raw(path, parse_json(path, bytes)?)
    }

    fn from_raw(path: &Path, raw: BTreeMap<String, String>) -> Result<MacAddrs, DataError> {
        let mut entries = BTreeMap::new();
        for (name, mac) in raw {
            let Some(normal) = normalize_mac(&mac) else {
                return Err(DataError::Damaged {
                    path: path.to_path_buf(),
                    message: format!(
                        "{} is not a MAC address (entry {})",
                        Shown(&mac),
                        Shown(&name)
                    ),
                });
            };
            entries.insert(name, normal);
        }
        Ok(MacAddrs { entries })
    }

    /// Writes the file atomically in virt-up's layout. Callers hold the data-dir lock.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let mut bytes = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        self.entries
            .serialize(&mut ser)
            .expect("a map of strings always serializes");
        bytes.push(b'\n');
        write_atomic(path, &bytes, PRIVATE_MODE)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }

    /// Records `mac` for `name` (e.g. one libvirt already uses).
    pub fn insert(&mut self, name: &str, mac: &str) -> Result<(), DataError> {
        let normal = normalize_mac(mac).ok_or_else(|| DataError::Invalid {
            what: "MAC address",
            value: mac.to_string(),
            reason: "expected six hex bytes separated by `:`".to_string(),
        })?;
        self.entries.insert(name.to_string(), normal);
        Ok(())
    }

    /// The MAC of `name`, picking a new one if it has none: random under
    /// `52:54:00`, different from every other entry and from `also_taken`.
    /// Returns the MAC and whether the map changed.
    pub fn assign<R: RngCore>(
        &mut self,
        name: &str,
        also_taken: &BTreeSet<String>,
        rng: &mut R,
    ) -> Result<(String, bool), DataError> {
        if let Some(mac) = self.entries.get(name) {
            return Ok((mac.clone(), false));
        }
        let taken: BTreeSet<String> = self
            .entries
            .values()
            .cloned()
            .chain(also_taken.iter().filter_map(|m| normalize_mac(m)))
            .collect();
        for _ in 0..MAX_ATTEMPTS {
            let mac = random_mac(rng);
            if !taken.contains(&mac) {
                self.entries.insert(name.to_string(), mac.clone());
                return Ok((mac, true));
            }
        }
        Err(DataError::Invalid {
            what: "MAC address for",
            value: name.to_string(),
            reason: format!("no free address found under 52:54:00 after {MAX_ATTEMPTS} tries"),
        })
    }
}

/// A random MAC under [`QEMU_OUI`], lowercase like libvirt prints it.
pub fn random_mac<R: RngCore>(rng: &mut R) -> String {
    let n = rng.next_u32();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        QEMU_OUI[0],
        QEMU_OUI[1],
        QEMU_OUI[2],
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, or `None` if `mac` is not a MAC.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| mac.to_ascii_lowercase())
}

/// The stable MAC of `name` from the data dir's `macaddrs.json`, creating and
/// saving one under the data-dir lock if needed.
pub fn ensure_mac(
    data_dir: &DataDir,
    name: &str,
    also_taken: &BTreeSet<String>,
    timeout: Duration,
) -> Result<String, DataError> {
    let path = data_dir.macaddrs_file();
    // Fast path without the lock: the file is only ever replaced whole.
    if let Some(mac) = MacAddrs::load(&path)?.get(name) {
        return Ok(mac.to_string());
    }
    let _lock = data_dir.lock_data_dir(timeout)?;
    let mut macs = MacAddrs::load(&path)?;
    let (mac, changed) = macs.assign(name, also_taken, &mut rand::rngs::OsRng)?;
    if changed {
        macs.save(&path)?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    #[test]
    fn assign_is_stable_and_avoids_collisions() {
        let mut macs = MacAddrs::default();
        // StepRng yields 0, 1, 2, …: the first candidates are :00:00:00, :00:00:01, …
        let mut rng = StepRng::new(0, 1);
        let taken: BTreeSet<String> = ["52:54:00:00:00:01".to_string(), "52:54:00:00:00:03".into()]
            .into_iter()
            .collect();
        let (a, changed) = macs.assign("a", &taken, &mut rng).unwrap();
        assert_eq!((a.as_str(), changed), ("52:54:00:00:00:00", true));
        let (b, _) = macs.assign("b", &taken, &mut rng).unwrap();
        assert_eq!(b, "52:54:00:00:00:02", "skips the MAC taken in libvirt");
        let mut rng = StepRng::new(0, 1);
        let (c, _) = macs.assign("c", &taken, &mut rng).unwrap();
        assert_eq!(c, "52:54:00:00:00:04", "skips other entries and libvirt's");
        let (a2, changed) = macs.assign("a", &taken, &mut rng).unwrap();
        assert_eq!((a2, changed), (a, false), "an existing entry is kept");

        // Upper-case MACs from libvirt count as taken too.
        let mut macs = MacAddrs::default();
        let taken: BTreeSet<String> = ["52:54:00:00:00:0A".to_string()].into_iter().collect();
        let (m, _) = macs.assign("x", &taken, &mut StepRng::new(10, 1)).unwrap();
        assert_eq!(m, "52:54:00:00:00:0b");
    }

    #[test]
    fn assign_gives_up_when_everything_collides() {
        let mut macs = MacAddrs::default();
        macs.insert("a", "52:54:00:00:00:07").unwrap();
        let e = macs
            .assign("b", &BTreeSet::new(), &mut StepRng::new(7, 0))
            .unwrap_err();
        assert!(e.to_string().contains("no free address"), "{e}");
    }

    #[test]
    fn random_macs_have_the_qemu_prefix() {
        let mut rng = rand::rngs::OsRng;
        for _ in 0..100 {
            let mac = random_mac(&mut rng);
            assert!(mac.starts_with("52:54:00:"), "{mac}");
            assert_eq!(normalize_mac(&mac).as_deref(), Some(mac.as_str()));
        }
    }

    #[test]
    fn reads_virt_up_files_and_writes_its_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("macaddrs.json");
        // As virt-up 2.2.0's json.dump(indent=4) writes it.
        std::fs::write(
            &path,
            "{\n    \"VIRTUP-default\": \"52:54:00:5f:0e:8a\",\n    \"web1\": \"52:54:00:AB:cd:01\"\n}",
        )
        .unwrap();
        let macs = MacAddrs::load(&path).unwrap();
        assert_eq!(macs.get("VIRTUP-default"), Some("52:54:00:5f:0e:8a"));
        assert_eq!(macs.get("web1"), Some("52:54:00:ab:cd:01"));
        macs.save(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n    \"VIRTUP-default\": \"52:54:00:5f:0e:8a\",\n    \"web1\": \"52:54:00:ab:cd:01\"\n}\n"
        );

        for (text, want) in [
            ("[1, 2]", "invalid type: sequence"),
            ("{\"a\": 5}", "invalid type: integer `5`"),
            (
                "{\"a\": \"52:54:00:zz:00:00\"}",
                "`52:54:00:zz:00:00` is not a MAC address (entry `a`)",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let msg = MacAddrs::load(&path).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("damaged metadata file `{}`", path.display())),
                "{msg}"
            );
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }

    #[test]
    fn ensure_mac_persists_and_survives_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        let t = Duration::from_secs(5);
        let none = BTreeSet::new();
        let a = ensure_mac(&dd, "web1", &none, t).unwrap();
        let b = ensure_mac(&dd, "web2", &none, t).unwrap();
        assert_ne!(a, b);
        // Deleting an instance does not touch macaddrs.json; re-creating reuses.
        assert_eq!(ensure_mac(&dd, "web1", &none, t).unwrap(), a);
        assert_eq!(
            MacAddrs::load(&dd.macaddrs_file()).unwrap().entries().len(),
            2
        );
    }

    #[test]
    fn normalize() {
        assert_eq!(
            normalize_mac("52:54:00:AA:bb:0c").as_deref(),
            Some("52:54:00:aa:bb:0c")
        );
        for bad in [
            "",
            "52:54:00:aa:bb",
            "52-54-00-aa-bb-cc",
            "52:54:00:aa:bb:ccc",
            "52:54:00:aa:bb:cg",
        ] {
            assert_eq!(normalize_mac(bad), None, "{bad}");
        }
    }

    /// The fuzzing entry point checks bytes exactly as a load checks the file.
    #[test]
    fn parse_checks_like_load() {
        let path = Path::new("/d/macaddrs.json");
        let macs = MacAddrs::parse(path, br#"{"a": "52:54:00:AB:CD:EF"}"#).unwrap();
        assert_eq!(macs.get("a"), Some("52:54:00:ab:cd:ef"));
        let e = MacAddrs::parse(path, br#"{"a": "52:54:00"}"#).unwrap_err();
        assert!(matches!(e, DataError::Damaged { .. }), "{e}");
        assert!(MacAddrs::parse(path, b"[]").is_err());
    }
}
