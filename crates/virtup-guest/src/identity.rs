//! `Identity`: what makes one clone a distinct machine, checked before it goes near a guest.
//!
//! Every field ends up in a file that a shell script (or cloud-init) inside the guest reads as
//! root, so validation here is strict and the guest script checks again.

use std::fmt;
use std::path::PathBuf;

use crate::GuestError;

/// The per-instance identity delivered at first boot.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Short host name (one DNS label).
    pub hostname: String,
    pub fqdn: Option<String>,
    /// 32 lowercase hex digits, as in `/etc/machine-id`.
    pub machine_id: String,
    /// Host key pairs generated on the host, so `known_hosts` can pin them before the first connection.
    pub host_keys: Vec<HostKey>,
    /// The login user (created at first boot if the template lacks it), never `root`.
    pub user: String,
    /// Lines of the user's `authorized_keys`.
    pub authorized_keys: Vec<String>,
    /// crypt(3) hashes (`$6$…`); `None` leaves the template's password alone.
    pub root_password_hash: Option<String>,
    pub user_password_hash: Option<String>,
    /// The clone's disk is larger than its template's: the first boot grows the root partition
    /// and filesystem into the space after them.
    pub grow_root: bool,
    /// Filesystems the first boot makes on blank data disks (found by serial) and mounts.
    pub filesystems: Vec<DataFilesystem>,
    /// A static IPv4 configuration the first boot writes for the NIC with this MAC.
    pub static_ipv4: Option<StaticIpv4>,
    /// The user's cloud-init data (`cloud_init`), for the NoCloud seed; not on the VIRTUPCFG disk.
    pub cloud_init: Option<virtup_core::cloud_init::CloudInit>,
}

/// An address configured inside the guest (`address_mode: static`) rather than asked for by DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIpv4 {
    /// The NIC's MAC (lowercase, as libvirt writes it): the guest's network config matches on it.
    pub mac: String,
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<std::net::Ipv4Addr>,
    pub dns: Vec<std::net::Ipv4Addr>,
    /// The link's MTU when the network sets one.
    pub mtu: Option<u32>,
    /// The DNS search domain.
    pub domain: Option<String>,
}

impl StaticIpv4 {
    /// Refuses what the guest's network config cannot hold (the first boot checks again).
    pub fn check(&self) -> Result<(), String> {
        let mac_ok = self.mac.len() == 17
            && self.mac.split(':').count() == 6
            && self
                .mac
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        if !mac_ok {
            return Err(format!("`{}` is not a lowercase MAC address", self.mac));
        }
        // /31 and /32 leave no address beside the network's own for a guest.
        if !(1..=30).contains(&self.prefix) {
            return Err(format!(
                "/{} is not a network prefix a guest can live in",
                self.prefix
            ));
        }
        if self.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return Err(format!("MTU {} is out of range", self.mtu.unwrap_or(0)));
        }
        if let Some(domain) = self
            .domain
            .as_ref()
            .filter(|d| d.len() > 253 || !d.split('.').all(is_dns_label))
        {
            return Err(format!("`{domain}` is not a DNS domain name"));
        }
        Ok(())
    }

    /// `MAC ADDRESS/PREFIX GATEWAY DNS[,DNS] MTU DOMAIN`, `-` for none: the `static-ipv4` file's
    /// one line.
    pub(crate) fn line(&self) -> String {
        let dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
        format!(
            "{} {}/{} {} {} {} {}\n",
            self.mac,
            self.address,
            self.prefix,
            self.gateway.map_or("-".into(), |g| g.to_string()),
            if dns.is_empty() {
                "-".into()
            } else {
                dns.join(",")
            },
            self.mtu.map_or("-".into(), |m| m.to_string()),
            self.domain.as_deref().unwrap_or("-"),
        )
    }
}

/// A filesystem on a data disk: made by the first boot when the disk is blank, then mounted at
/// `mount` (and listed in `/etc/fstab`) when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFilesystem {
    /// The disk's serial (`virtup-data1`), by which the guest finds it.
    pub serial: String,
    pub filesystem: virtup_core::data_disk::Filesystem,
    pub mount: Option<String>,
}

/// One SSH host key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `ed25519`, `ecdsa` or `rsa`: names the files `ssh_host_<algorithm>_key{,.pub}`.
    pub algorithm: String,
    pub private_key: PrivateKey,
    /// The `.pub` line (`ssh-ed25519 AAAA… comment`).
    pub public_key: String,
}

/// A private key in OpenSSH (or PEM) text form, from a 0600 file or from memory.
#[derive(Clone, PartialEq, Eq)]
pub enum PrivateKey {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl PrivateKey {
    pub(crate) fn read(&self) -> Result<Vec<u8>, GuestError> {
        match self {
            PrivateKey::File(path) => std::fs::read(path).map_err(|e| GuestError::read(path, e)),
            PrivateKey::Bytes(bytes) => Ok(bytes.clone()),
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivateKey::File(path) => f.debug_tuple("File").field(path).finish(),
            PrivateKey::Bytes(_) => f.write_str("Bytes(<redacted>)"),
        }
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKey")
            .field("algorithm", &self.algorithm)
            .field("private_key", &self.private_key)
            .field("public_key", &self.public_key)
            .finish()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |h: &Option<String>| h.as_ref().map(|_| "<redacted>");
        f.debug_struct("Identity")
            .field("hostname", &self.hostname)
            .field("fqdn", &self.fqdn)
            .field("machine_id", &self.machine_id)
            .field("host_keys", &self.host_keys)
            .field("user", &self.user)
            .field("authorized_keys", &self.authorized_keys)
            .field("root_password_hash", &redact(&self.root_password_hash))
            .field("user_password_hash", &redact(&self.user_password_hash))
            .field("grow_root", &self.grow_root)
            .field("filesystems", &self.filesystems)
            .field("static_ipv4", &self.static_ipv4)
            .field("cloud_init", &self.cloud_init)
            .finish()
    }
}

impl Identity {
    /// Checks every field against what the guest side accepts; the first problem is the error.
    pub fn validate(&self) -> Result<(), GuestError> {
        let bad = |field: &'static str, reason: String| GuestError::InvalidIdentity {
            hostname: self.hostname.clone(),
            field,
            reason,
        };
        if !is_dns_label(&self.hostname) {
            return Err(bad(
                "hostname",
                format!(
                    "`{}` is not a host name (letters, digits and inner hyphens, at most 63)",
                    self.hostname
                ),
            ));
        }
        if let Some(fqdn) = &self.fqdn {
            if fqdn.len() > 253 || !fqdn.split('.').all(is_dns_label) {
                return Err(bad("fqdn", format!("`{fqdn}` is not a domain name")));
            }
        }
        if !is_machine_id(&self.machine_id) {
            return Err(bad(
                "machine_id",
                format!("`{}` is not 32 lowercase hex digits", self.machine_id),
            ));
        }
        if !is_user_name(&self.user) {
            return Err(bad(
                "user",
                format!(
                    "`{}` must match [a-z_][a-z0-9_-]*, at most 32 characters, and not be root",
                    self.user
                ),
            ));
        }
        let mut seen = Vec::new();
        for key in &self.host_keys {
            let prefix = match key.algorithm.as_str() {
                "ed25519" => "ssh-ed25519 ",
                "ecdsa" => "ecdsa-sha2-",
                "rsa" => "ssh-rsa ",
                other => {
                    return Err(bad(
                        "host_keys",
                        format!("unknown algorithm `{other}` (ed25519, ecdsa or rsa)"),
                    ))
                }
            };
            if seen.contains(&key.algorithm) {
                return Err(bad(
                    "host_keys",
                    format!("two `{}` host keys", key.algorithm),
                ));
            }
            seen.push(key.algorithm.clone());
            if !key.public_key.starts_with(prefix) || !is_single_line(&key.public_key) {
                return Err(bad(
                    "host_keys",
                    format!(
                        "the `{}` public key must be one line starting with `{}`",
                        key.algorithm,
                        prefix.trim_end()
                    ),
                ));
            }
        }
        for line in &self.authorized_keys {
            if line.trim().is_empty() || !is_single_line(line) || line.len() > 16 * 1024 {
                return Err(bad(
                    "authorized_keys",
                    "each entry must be one non-empty line".into(),
                ));
            }
        }
        for (field, hash) in [
            ("root_password_hash", &self.root_password_hash),
            ("user_password_hash", &self.user_password_hash),
        ] {
            if let Some(hash) = hash {
                if !is_crypt_hash(hash) {
                    // The value is a secret: name the problem, not the hash.
                    return Err(bad(field, "not a crypt(3) hash like `$6$salt$hash`".into()));
                }
            }
        }
        if let Some(ip) = &self.static_ipv4 {
            ip.check().map_err(|reason| bad("static_ipv4", reason))?;
        }
        for fs in &self.filesystems {
            let plain = |s: &str| {
                !s.is_empty()
                    && s.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-')
                    })
            };
            // The guest script splits the line on spaces and writes the mount point into fstab.
            if !plain(&fs.serial) || fs.serial.len() > 20 {
                return Err(bad(
                    "filesystems",
                    format!("`{}` is not a disk serial", fs.serial),
                ));
            }
            if let Some(m) = &fs.mount {
                if !m.starts_with('/') || !plain(m) {
                    return Err(bad("filesystems", format!("`{m}` is not a mount point")));
                }
            }
        }
        Ok(())
    }

    /// `SERIAL FILESYSTEM MOUNT` lines (`-` for no mount) of the `filesystems` file.
    pub(crate) fn filesystem_lines(&self) -> String {
        self.filesystems
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}\n",
                    f.serial,
                    f.filesystem.as_str(),
                    f.mount.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    /// `NAME:HASH` lines for `chpasswd -e`; empty when no hash is set.
    pub(crate) fn shadow_lines(&self) -> String {
        let mut out = String::new();
        if let Some(hash) = &self.root_password_hash {
            out.push_str(&format!("root:{hash}\n"));
        }
        if let Some(hash) = &self.user_password_hash {
            out.push_str(&format!("{}:{hash}\n", self.user));
        }
        out
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_machine_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

fn is_user_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s != "root"
        && s.len() <= 32
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_single_line(s: &str) -> bool {
    !s.contains(['\n', '\r', '\0'])
}

/// `$id$…` with only the characters crypt(3) hashes use; the guest script accepts the same set.
fn is_crypt_hash(s: &str) -> bool {
    s.len() > 3
        && s.starts_with('$')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./=,$".contains(&b))
}

/// A fresh random machine-id (32 lowercase hex digits).
pub fn random_machine_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// SHA-512 crypt (`$6$<16-char salt>$…`, 5000 rounds) of `password`, for `/etc/shadow`.
pub fn hash_password(password: &str) -> Result<String, GuestError> {
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(|e| {
        GuestError::PasswordHash {
            reason: format!("{e:?}"),
        }
    })?;
    sha_crypt::sha512_simple(password, &params).map_err(|e| GuestError::PasswordHash {
        reason: format!("{e:?}"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Identity {
        Identity {
            hostname: "web1".into(),
            fqdn: Some("web1.lab.example".into()),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            host_keys: vec![HostKey {
                algorithm: "ed25519".into(),
                private_key: PrivateKey::Bytes(
                    b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
                        .to_vec(),
                ),
                public_key: "ssh-ed25519 AAAAC3Nza host@web1".into(),
            }],
            user: "virt".into(),
            authorized_keys: vec!["ssh-ed25519 AAAAuser virt@host".into()],
            root_password_hash: Some("$6$saltsalt$abc./DEF".into()),
            user_password_hash: Some("$6$rounds=6000$s$xyz".into()),
            grow_root: false,
            filesystems: Vec::new(),
            static_ipv4: None,
            cloud_init: None,
        }
    }

    #[test]
    fn valid_sample() {
        sample().validate().unwrap();
    }

    #[test]
    fn a_static_address_is_one_checked_line() {
        let mut id = sample();
        id.static_ipv4 = Some(StaticIpv4 {
            mac: "52:54:00:ab:cd:ef".into(),
            address: "192.168.122.60".parse().unwrap(),
            prefix: 24,
            gateway: Some("192.168.122.1".parse().unwrap()),
            dns: vec![
                "192.168.122.1".parse().unwrap(),
                "10.0.0.53".parse().unwrap(),
            ],
            mtu: Some(1400),
            domain: Some("lab.test".into()),
        });
        id.validate().unwrap();
        assert_eq!(
            id.static_ipv4.as_ref().unwrap().line(),
            "52:54:00:ab:cd:ef 192.168.122.60/24 192.168.122.1 192.168.122.1,10.0.0.53 1400 lab.test\n"
        );
        let bare = StaticIpv4 {
            gateway: None,
            dns: Vec::new(),
            mtu: None,
            domain: None,
            ..id.static_ipv4.clone().unwrap()
        };
        assert_eq!(bare.line(), "52:54:00:ab:cd:ef 192.168.122.60/24 - - - -\n");
        for (mac, prefix) in [
            ("52:54:00:AB:CD:EF", 24),
            ("52:54:00:ab:cd", 24),
            ("52:54:00:ab:cd:ef", 0),
            ("52:54:00:ab:cd:ef", 33),
            ("52:54:00:ab:cd:ef", 31),
        ] {
            id.static_ipv4 = Some(StaticIpv4 {
                mac: mac.into(),
                prefix,
                ..bare.clone()
            });
            assert!(id.validate().is_err(), "{mac} /{prefix}");
        }
        for bad in [
            StaticIpv4 {
                mtu: Some(67),
                ..bare.clone()
            },
            StaticIpv4 {
                domain: Some("lab_test".into()),
                ..bare.clone()
            },
            StaticIpv4 {
                domain: Some("lab.test.".into()),
                ..bare.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            id.static_ipv4 = Some(bad);
            assert!(id.validate().is_err());
        }
    }

    #[test]
    fn filesystems_are_plain_lines_or_refused() {
        use virtup_core::data_disk::Filesystem;
        let mut id = sample();
        id.filesystems = vec![
            DataFilesystem {
                serial: "virtup-data1".into(),
                filesystem: Filesystem::Ext4,
                mount: Some("/srv/data".into()),
            },
            DataFilesystem {
                serial: "virtup-data2".into(),
                filesystem: Filesystem::Xfs,
                mount: None,
            },
        ];
        id.validate().unwrap();
        assert_eq!(
            id.filesystem_lines(),
            "virtup-data1 ext4 /srv/data\nvirtup-data2 xfs -\n"
        );
        for (serial, mount) in [
            ("a b", None),
            ("", None),
            ("virtup-data1", Some("/srv/a b")),
            ("virtup-data1", Some("srv")),
            ("virtup-data1", Some("/srv\n/etc")),
        ] {
            id.filesystems[0].serial = serial.into();
            id.filesystems[0].mount = mount.map(str::to_owned);
            assert!(id.validate().is_err(), "{serial:?} {mount:?}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutate = fn(&mut Identity);
        let cases: Vec<(Mutate, &str)> = vec![
            (|i| i.hostname = "web_1".into(), "invalid hostname"),
            (|i| i.hostname = "-web".into(), "invalid hostname"),
            (|i| i.hostname = "a.b".into(), "invalid hostname"),
            (|i| i.fqdn = Some("web1..lab".into()), "invalid fqdn"),
            (|i| i.machine_id = "0123".into(), "invalid machine_id"),
            (|i| i.machine_id = "0".repeat(32), "invalid machine_id"),
            (
                |i| i.machine_id = "0123456789ABCDEF0123456789abcdef".into(),
                "invalid machine_id",
            ),
            (|i| i.user = "root".into(), "invalid user"),
            (|i| i.user = "Virt".into(), "invalid user"),
            (|i| i.user = "vi rt".into(), "invalid user"),
            (|i| i.user = "$(reboot)".into(), "invalid user"),
            (
                |i| i.host_keys[0].algorithm = "dsa".into(),
                "invalid host_keys",
            ),
            (
                |i| i.host_keys[0].public_key = "ssh-rsa AAAA".into(),
                "invalid host_keys",
            ),
            (
                |i| i.host_keys.push(i.host_keys[0].clone()),
                "invalid host_keys",
            ),
            (
                |i| i.authorized_keys.push("a\nb".into()),
                "invalid authorized_keys",
            ),
            (
                |i| i.authorized_keys.push(" ".into()),
                "invalid authorized_keys",
            ),
            (
                |i| i.root_password_hash = Some("plain text".into()),
                "invalid root_password_hash",
            ),
            (
                |i| i.user_password_hash = Some("$6$a:b".into()),
                "invalid user_password_hash",
            ),
        ];
        for (mutate, want) in cases {
            let mut identity = sample();
            mutate(&mut identity);
            let err = identity.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
        let mut identity = sample();
        identity.root_password_hash = Some("hunter2 secret".into());
        let err = identity.validate().unwrap_err().to_string();
        assert!(
            !err.contains("hunter2"),
            "a rejected hash must not be echoed: {err}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("BEGIN OPENSSH"));
        assert!(!text.contains("saltsalt"));
        assert!(text.contains("web1"));
    }

    #[test]
    fn machine_ids_are_valid_and_distinct() {
        let a = random_machine_id();
        let b = random_machine_id();
        assert!(is_machine_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn password_hash_is_sha512_crypt() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$6$"), "{hash}");
        assert!(is_crypt_hash(&hash));
        assert_eq!(hash.split('$').count(), 4, "{hash}");
        sha_crypt::sha512_check("correct horse", &hash).unwrap();
        assert!(sha_crypt::sha512_check("wrong", &hash).is_err());
    }

    #[test]
    fn shadow_lines_for_chpasswd() {
        assert_eq!(
            sample().shadow_lines(),
            "root:$6$saltsalt$abc./DEF\nvirt:$6$rounds=6000$s$xyz\n"
        );
    }
}
