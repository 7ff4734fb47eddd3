//! SSH keys and secrets: the login user's ed25519 key, per-instance host keys, random passwords.
//!
//! The user key lives at `sshkeys/<user>/id_ed25519`, next to where virt-up
//! keeps its `sshkeys/<user>/id_rsa`: one key per login user name, shared by
//! every instance with that user, as in virt-up.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};

use crate::datadir::{
    ensure_private_dir, sync_dir, temp_name, write_atomic, DataError, PRIVATE_MODE, PUBLIC_MODE,
};
use crate::validate;

/// File name of the user key inside `sshkeys/<user>/`.
pub const USER_KEY_FILE: &str = "id_ed25519";
/// File name of the host key inside `hostkeys/<instance>/`.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// The login user's key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    /// `ssh-ed25519 AAAA… virtup:<user>`, ready for `authorized_keys`.
    pub public_openssh: String,
}

/// An instance's SSH host key pair, generated on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeys {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    /// `ssh-ed25519 AAAA… virtup:<instance>`.
    pub public_openssh: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

fn invalid(what: &'static str, value: &str, e: validate::ValidationError) -> DataError {
    DataError::Invalid {
        what,
        value: value.to_string(),
        reason: e.reason,
    }
}

/// Returns the key of login user `user`, creating it once.
///
/// Safe against concurrent runs without a lock: the private key appears by a
/// hard link that fails if another run got there first, and the public key is
/// always derived from whichever private key won.
pub fn ensure_user_key(sshkeys_dir: &Path, user: &str) -> Result<UserKey, DataError> {
    validate::user_name("user", user).map_err(|e| invalid("user name", user, e))?;
    let dir = sshkeys_dir.join(user);
    ensure_private_dir(&dir)?;
    let private_path = dir.join(USER_KEY_FILE);
    ensure_private_key(&private_path, &format!("virtup:{user}"))?;
    let key = read_private_key(&private_path)?;
    let public_openssh = public_openssh(&key, &private_path)?;
    let public_path = pub_path(&private_path);
    write_if_different(&public_path, public_openssh.as_bytes(), PUBLIC_MODE)?;
    Ok(UserKey {
        private_path,
        public_path,
        public_openssh: public_openssh.trim_end().to_string(),
    })
}

/// The user key if it exists, without creating anything (check mode).
pub fn load_user_key(sshkeys_dir: &Path, user: &str) -> Result<Option<UserKey>, DataError> {
    validate::user_name("user", user).map_err(|e| invalid("user name", user, e))?;
    let private_path = sshkeys_dir.join(user).join(USER_KEY_FILE);
    if !private_path.exists() {
        return Ok(None);
    }
    let key = read_private_key(&private_path)?;
    Ok(Some(UserKey {
        public_path: pub_path(&private_path),
        public_openssh: public_openssh(&key, &private_path)?.trim_end().to_string(),
        private_path,
    }))
}

/// Generates a fresh host key pair for `instance` (an instance's name, or a template's records
/// scope, see [`crate::ownership::remote_scope`]) under `hostkeys/<instance>/`, replacing any previous one.
pub fn generate_host_keys(hostkeys_dir: &Path, instance: &str) -> Result<HostKeys, DataError> {
    crate::ownership::check_scope(instance)?;
    let dir = hostkeys_dir.join(instance);
    ensure_private_dir(&dir)?;
    let private_path = dir.join(HOST_KEY_FILE);
    let key = new_key(&format!("virtup:{instance}"), &private_path)?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| key_error("encode", &private_path, e))?;
    write_atomic(&private_path, pem.as_bytes(), PRIVATE_MODE)?;
    let public = public_openssh(&key, &private_path)?;
    write_atomic(&pub_path(&private_path), public.as_bytes(), PUBLIC_MODE)?;
    host_keys(&key, private_path)
}

/// The host keys of `instance` if they exist.
pub fn load_host_keys(hostkeys_dir: &Path, instance: &str) -> Result<Option<HostKeys>, DataError> {
    crate::ownership::check_scope(instance)?;
    let private_path = hostkeys_dir.join(instance).join(HOST_KEY_FILE);
    if !private_path.exists() {
        return Ok(None);
    }
    let key = read_private_key(&private_path)?;
    host_keys(&key, private_path).map(Some)
}

/// Removes `hostkeys/<instance>/`; `false` when there was nothing.
pub fn remove_host_keys(hostkeys_dir: &Path, instance: &str) -> Result<bool, DataError> {
    crate::ownership::check_scope(instance)?;
    let dir = hostkeys_dir.join(instance);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DataError::io("remove", &dir, e)),
    }
}

/// A random password of ASCII letters and digits from the OS generator.
pub fn random_password(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Writes a secret to a 0600 file (atomically; exact bytes, no newline).
pub fn store_secret(path: &Path, value: &str) -> Result<(), DataError> {
    write_atomic(path, value.as_bytes(), PRIVATE_MODE)
}

/// Reads a secret written by [`store_secret`].
pub fn read_secret(path: &Path) -> Result<String, DataError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DataError::NotFound {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(DataError::io("read", path, e)),
    }
}

fn pub_path(private_path: &Path) -> PathBuf {
    let mut s = private_path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn key_error(action: &'static str, path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Key {
        action,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn new_key(comment: &str, path: &Path) -> Result<PrivateKey, DataError> {
    let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| key_error("generate", path, e))?;
    key.set_comment(comment);
    Ok(key)
}

/// Creates the private key at `path` unless it exists; never replaces one.
fn ensure_private_key(path: &Path, comment: &str) -> Result<(), DataError> {
    if path.exists() {
        return Ok(());
    }
    let key = new_key(comment, path)?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| key_error("encode", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(temp_name(&name));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .open(&tmp)
            .map_err(|e| DataError::io("create", &tmp, e))?;
        file.write_all(pem.as_bytes())
            .map_err(|e| DataError::io("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| DataError::io("sync", &tmp, e))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another run created it first: theirs is the key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(DataError::io("create", path, e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(dir)
}

fn read_private_key(path: &Path) -> Result<PrivateKey, DataError> {
    let meta = fs::metadata(path).map_err(|e| DataError::io("inspect", path, e))?;
    // ssh refuses a private key others can read.
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, Permissions::from_mode(PRIVATE_MODE))
            .map_err(|e| DataError::io("set permissions of", path, e))?;
    }
    let text = fs::read_to_string(path).map_err(|e| DataError::io("read", path, e))?;
    PrivateKey::from_openssh(text).map_err(|e| key_error("parse", path, e))
}

fn public_openssh(key: &PrivateKey, path: &Path) -> Result<String, DataError> {
    let mut text = key
        .public_key()
        .to_openssh()
        .map_err(|e| key_error("encode", path, e))?;
    text.push('\n');
    Ok(text)
}

fn host_keys(key: &PrivateKey, private_path: PathBuf) -> Result<HostKeys, DataError> {
    Ok(HostKeys {
        public_path: pub_path(&private_path),
        public_openssh: public_openssh(key, &private_path)?.trim_end().to_string(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        private_path,
    })
}

fn write_if_different(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataError> {
    match fs::read(path) {
        Ok(current) if current == bytes => {
            let meta = fs::metadata(path).map_err(|e| DataError::io("inspect", path, e))?;
            if meta.permissions().mode() & 0o7777 == mode {
                return Ok(());
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataError::io("read", path, e)),
    }
    write_atomic(path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::PublicKey;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn user_key_is_created_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sshkeys");
        assert_eq!(load_user_key(&dir, "virt").unwrap(), None);
        let first = ensure_user_key(&dir, "virt").unwrap();
        assert_eq!(first.private_path, dir.join("virt/id_ed25519"));
        assert_eq!(first.public_path, dir.join("virt/id_ed25519.pub"));
        assert_eq!(mode(&first.private_path), 0o600);
        assert_eq!(mode(&first.public_path), 0o644);
        assert_eq!(mode(&dir.join("virt")), 0o700);

        let private = PrivateKey::read_openssh_file(&first.private_path).unwrap();
        assert_eq!(private.algorithm(), Algorithm::Ed25519);
        assert!(!private.is_encrypted());
        let public =
            PublicKey::from_openssh(&fs::read_to_string(&first.public_path).unwrap()).unwrap();
        assert_eq!(&public, private.public_key());
        assert_eq!(public.comment(), "virtup:virt");
        assert!(first.public_openssh.starts_with("ssh-ed25519 AAAA"));
        assert!(first.public_openssh.ends_with(" virtup:virt"));

        let second = ensure_user_key(&dir, "virt").unwrap();
        assert_eq!(second, first, "the key is reused");
        assert_eq!(load_user_key(&dir, "virt").unwrap(), Some(first.clone()));

        // A lost .pub is rebuilt from the private key; loose modes are fixed.
        fs::remove_file(&first.public_path).unwrap();
        fs::set_permissions(&first.private_path, Permissions::from_mode(0o644)).unwrap();
        let third = ensure_user_key(&dir, "virt").unwrap();
        assert_eq!(third, first);
        assert_eq!(mode(&first.private_path), 0o600);

        let other = ensure_user_key(&dir, "ansible").unwrap();
        assert_ne!(other.public_openssh, first.public_openssh);

        let names: Vec<_> = fs::read_dir(dir.join("virt"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
    }

    #[test]
    fn concurrent_user_key_creation_agrees_on_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sshkeys");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || ensure_user_key(&dir, "virt").unwrap())
            })
            .collect();
        let keys: Vec<UserKey> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for k in &keys {
            assert_eq!(k, &keys[0]);
        }
        let on_disk = fs::read_to_string(&keys[0].public_path).unwrap();
        assert_eq!(on_disk.trim_end(), keys[0].public_openssh);
    }

    #[test]
    fn bad_user_names_are_rejected_before_touching_disk() {
        let tmp = tempfile::tempdir().unwrap();
        for user in ["../x", "", "Root", "a/b"] {
            let e = ensure_user_key(tmp.path(), user).unwrap_err();
            assert!(e.to_string().starts_with("invalid user name"), "{e}");
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn damaged_private_key_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("virt");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(USER_KEY_FILE), "not a key").unwrap();
        let e = ensure_user_key(tmp.path(), "virt").unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "failed to parse ssh key `{}`: ",
                dir.join(USER_KEY_FILE).display()
            )),
            "{e}"
        );
    }

    #[test]
    fn host_keys_generate_load_replace_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hostkeys");
        assert_eq!(load_host_keys(&dir, "web1").unwrap(), None);
        let keys = generate_host_keys(&dir, "web1").unwrap();
        assert_eq!(keys.private_path, dir.join("web1/ssh_host_ed25519_key"));
        assert_eq!(keys.public_path, dir.join("web1/ssh_host_ed25519_key.pub"));
        assert_eq!(mode(&keys.private_path), 0o600);
        assert_eq!(mode(&keys.public_path), 0o644);
        assert_eq!(mode(&dir.join("web1")), 0o700);

        let public =
            PublicKey::from_openssh(&fs::read_to_string(&keys.public_path).unwrap()).unwrap();
        assert_eq!(public.algorithm(), Algorithm::Ed25519);
        assert_eq!(public.comment(), "virtup:web1");
        assert_eq!(
            keys.fingerprint,
            public.fingerprint(HashAlg::Sha256).to_string()
        );
        assert!(keys.fingerprint.starts_with("SHA256:"));
        assert_eq!(load_host_keys(&dir, "web1").unwrap(), Some(keys.clone()));

        let again = generate_host_keys(&dir, "web1").unwrap();
        assert_ne!(
            again.fingerprint, keys.fingerprint,
            "generate makes a new key"
        );

        assert!(remove_host_keys(&dir, "web1").unwrap());
        assert!(!remove_host_keys(&dir, "web1").unwrap());
        assert_eq!(load_host_keys(&dir, "web1").unwrap(), None);
        assert!(generate_host_keys(&dir, "../etc").is_err());
    }

    #[test]
    fn passwords_and_secrets() {
        let a = random_password(24);
        let b = random_password(24);
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        assert_eq!(random_password(0), "");

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("root_password");
        store_secret(&path, &a).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_secret(&path).unwrap(), a);
        assert!(read_secret(&tmp.path().join("nope"))
            .unwrap_err()
            .is_not_found());
    }
}
