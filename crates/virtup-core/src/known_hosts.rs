//! virtup's `known_hosts`: one pinned host key per instance or template, keyed by the name used as `HostKeyAlias` (a remote template's scope, `<name>@<id>`).
//!
//! Lines look like `web1 ssh-ed25519 AAAA… virtup:web1`. Connections use
//! `HostKeyAlias=<name>` with `StrictHostKeyChecking=yes`, so the entry holds
//! whatever address the guest gets. Lines virtup did not write (other hosts,
//! comments, `@cert-authority`, hashed names) are kept byte for byte.

use std::path::Path;
use std::time::Duration;

use ssh_key::PublicKey;

use crate::datadir::{DataDir, DataError, PRIVATE_MODE};

/// The parsed file, kept as lines so that foreign lines survive untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    lines: Vec<String>,
}

impl KnownHosts {
    pub fn parse(text: &str) -> KnownHosts {
        KnownHosts {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// Reads the file; a missing file is empty.
    pub fn load(path: &Path) -> Result<KnownHosts, DataError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHosts::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::default()),
            Err(e) => Err(DataError::io("read", path, e)),
        }
    }

    pub fn render(&self) -> String {
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }

    /// Writes the file atomically (0600). Callers hold the data-dir lock.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        crate::datadir::write_atomic(path, self.render().as_bytes(), PRIVATE_MODE)
    }

    /// The pinned key of `name` (`ssh-ed25519 AAAA…`, without comment).
    pub fn get(&self, name: &str) -> Option<String> {
        self.lines.iter().find(|l| is_entry_for(l, name)).map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    /// Pins `public_openssh` (`ssh-ed25519 AAAA… [comment]`) for `name`,
    /// replacing its previous entries in place. Returns whether anything changed.
    pub fn set(&mut self, name: &str, public_openssh: &str) -> Result<bool, DataError> {
        let line = entry_line(name, public_openssh)?;
        let before = self.lines.clone();
        let position = self.lines.iter().position(|l| is_entry_for(l, name));
        self.lines.retain(|l| !is_entry_for(l, name));
        match position {
            Some(i) => self.lines.insert(i, line),
            None => self.lines.push(line),
        }
        Ok(self.lines != before)
    }

    /// Drops every entry of `name`. Returns whether anything changed.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| !is_entry_for(l, name));
        self.lines.len() != before
    }
}

/// The line virtup writes for `name`: an instance or template name, or a remote template's scope
/// (`<name>@<id>`, [`crate::ownership::remote_scope`]; ssh takes the `@` literally in a host field
/// and in `HostKeyAlias`), so that one template name on several hypervisors has a pin on each.
pub fn entry_line(name: &str, public_openssh: &str) -> Result<String, DataError> {
    crate::ownership::check_scope(name)?;
    let key = PublicKey::from_openssh(public_openssh.trim()).map_err(|e| DataError::Invalid {
        what: "public key for",
        value: name.to_string(),
        reason: e.to_string(),
    })?;
    let mut parts = public_openssh.split_whitespace();
    let (Some(algorithm), Some(blob)) = (parts.next(), parts.next()) else {
        unreachable!("a parsed public key has an algorithm and a blob");
    };
    debug_assert_eq!(algorithm, key.algorithm().as_str());
    Ok(format!("{name} {algorithm} {blob} virtup:{name}"))
}

/// A line is `name`'s entry when its host field is exactly `name`; marker
/// lines (`@revoked`), comments and lists naming other hosts are not.
fn is_entry_for(line: &str, name: &str) -> bool {
    line.split_whitespace().next() == Some(name)
}

/// Pins `name`'s host key in the data dir's `known_hosts` under the data-dir lock.
pub fn set(
    data_dir: &DataDir,
    name: &str,
    public_openssh: &str,
    timeout: Duration,
) -> Result<bool, DataError> {
    let line = entry_line(name, public_openssh)?;
    let path = data_dir.known_hosts_file();
    if KnownHosts::load(&path)?.lines.contains(&line) {
        return Ok(false);
    }
    let _lock = data_dir.lock_data_dir(timeout)?;
    let mut hosts = KnownHosts::load(&path)?;
    let changed = hosts.set(name, public_openssh)?;
    if changed {
        hosts.save(&path)?;
    }
    Ok(changed)
}

/// Removes `name`'s entries from the data dir's `known_hosts` under the data-dir lock.
pub fn remove(data_dir: &DataDir, name: &str, timeout: Duration) -> Result<bool, DataError> {
    let path = data_dir.known_hosts_file();
    if KnownHosts::load(&path)?.get(name).is_none() {
        return Ok(false);
    }
    let _lock = data_dir.lock_data_dir(timeout)?;
    let mut hosts = KnownHosts::load(&path)?;
    let changed = hosts.remove(name);
    if changed {
        hosts.save(&path)?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3mwYtL3sfuUs3Ze2SVTlzBBR6J2aHnPjYeEmtgBRu";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLJzJVcaGA/kyTiZ7HrV6Dmjm5SZx7I3k6LBEpIlyaX";

    #[test]
    fn set_replace_remove_keep_foreign_lines() {
        let foreign = "# my hosts\n192.168.1.5 ssh-rsa AAAAB3Nza\n@revoked web1 ssh-ed25519 AAAAold\nweb1,10.0.0.1 ssh-ed25519 AAAAother\n|1|hash= ssh-ed25519 AAAAh\n";
        let mut hosts = KnownHosts::parse(foreign);
        assert_eq!(hosts.get("web1"), None);

        assert!(hosts.set("web1", &format!("{KEY_A} root@x")).unwrap());
        assert_eq!(
            hosts.render(),
            format!("{foreign}web1 {KEY_A} virtup:web1\n")
        );
        assert_eq!(hosts.get("web1").as_deref(), Some(KEY_A));
        assert!(!hosts.set("web1", KEY_A).unwrap(), "same key: no change");

        assert!(hosts.set("web2", KEY_B).unwrap());
        assert!(hosts.set("web1", KEY_B).unwrap(), "replaced in place");
        assert_eq!(
            hosts.render(),
            format!("{foreign}web1 {KEY_B} virtup:web1\nweb2 {KEY_B} virtup:web2\n")
        );

        assert!(hosts.remove("web1"));
        assert!(!hosts.remove("web1"));
        assert_eq!(
            hosts.render(),
            format!("{foreign}web2 {KEY_B} virtup:web2\n")
        );
        assert!(hosts.remove("web2"));
        assert_eq!(
            hosts.render(),
            foreign,
            "foreign lines survive byte for byte"
        );
    }

    #[test]
    fn bad_input_is_rejected() {
        let mut hosts = KnownHosts::default();
        assert!(hosts.set("bad name", KEY_A).is_err());
        assert!(hosts.set("web1", "ssh-ed25519 notbase64!").is_err());
        assert!(hosts.set("web1", "").is_err());
        // `@` only as a remote template's scope: a name, then 8 hex digits naming the hypervisor.
        for bad in ["t@h2", "t@0123ABCD", "@0123abcd", "t@0123abcd@0123abcd"] {
            assert!(hosts.set(bad, KEY_A).is_err(), "{bad}");
        }
        assert_eq!(hosts.render(), "");
        assert!(hosts.set("VIRTUP-t@0123abcd", KEY_A).unwrap());
        assert_eq!(
            hosts.get("VIRTUP-t@0123abcd").as_deref(),
            Some(KEY_A),
            "a remote template's pin"
        );
    }

    #[test]
    fn data_dir_file_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        let t = Duration::from_secs(5);
        assert!(!remove(&dd, "web1", t).unwrap());
        assert!(set(&dd, "web1", KEY_A, t).unwrap());
        assert!(!set(&dd, "web1", KEY_A, t).unwrap());
        assert!(set(&dd, "web2", KEY_B, t).unwrap());
        let path = dd.known_hosts_file();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("web1 {KEY_A} virtup:web1\nweb2 {KEY_B} virtup:web2\n")
        );
        assert!(remove(&dd, "web1", t).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("web2 {KEY_B} virtup:web2\n")
        );
    }
}
