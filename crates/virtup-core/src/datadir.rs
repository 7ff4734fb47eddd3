//! The data dir (`$VIRTUP_DATA_HOME`): private directories, atomic file writes, strict JSON reads and cross-process locks.
//!
//! Invariants every writer relies on:
//! - a file is replaced by rename of a fully written, fsynced temp file in the
//!   same directory, so a reader sees the old or the new content, never half;
//! - directories are 0700, secrets and keys 0600;
//! - lock files are never deleted: deleting one while another process waits
//!   on it would let two processes hold "the" lock at once;
//! - the data-dir lock (`locks/datadir.lock`) is held only for short
//!   read-modify-write of shared files, and nothing takes another lock while
//!   holding it, so lock order cannot deadlock.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use fs2::FileExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Mode of every directory virtup creates in the data dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of secrets, private keys and metadata.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of public keys.
pub const PUBLIC_MODE: u32 = 0o644;

/// How often a blocked lock is retried.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Name of the lock guarding shared files (`macaddrs.json`, `known_hosts`).
pub const DATA_DIR_LOCK: &str = "datadir";
/// Length of a data dir's owner id (128 random bits in hex).
pub const OWNER_ID_HEX_LEN: usize = 32;

/// Why a data dir operation failed. Each message is complete on its own: an I/O cause is part of the
/// message and deliberately not also a `source()`, which anyhow's `{:#}` would print a second time.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("failed to {action} `{}`: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("`{}` does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("damaged metadata file `{}`: {message}", path.display())]
    Damaged { path: PathBuf, message: String },
    #[error("timed out after {seconds}s waiting for lock `{}` (held by another virtup run)", path.display())]
    LockTimeout { path: PathBuf, seconds: String },
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("failed to {action} ssh key `{}`: {message}", path.display())]
    Key {
        action: &'static str,
        path: PathBuf,
        message: String,
    },
}

impl DataError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, DataError::NotFound { .. })
    }

    pub(crate) fn io(action: &'static str, path: &Path, error: io::Error) -> DataError {
        DataError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// virtup's data directory and the layout inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Subdirectories created by `open`.
    pub const SUBDIRS: [&'static str; 4] = ["instance", "sshkeys", "hostkeys", "locks"];

    /// Creates (or tightens) the data dir and its subdirectories to 0700 and
    /// removes temp files left behind by killed runs.
    pub fn open(root: impl Into<PathBuf>) -> Result<DataDir, DataError> {
        let dir = DataDir { root: root.into() };
        // The root may be a directory the user shares (their home, say): it is created 0700 when
        // missing but never re-moded; the subdirectories that hold keys and secrets are virtup's.
        if !dir.root.is_dir() {
            ensure_private_dir(&dir.root)?;
        } else {
            // Whoever may write the root may replace `owned/` and make virtup delete what they
            // like: such a root is refused, never silently re-moded.
            let mode = fs::metadata(&dir.root)
                .map_err(|e| DataError::io("inspect", &dir.root, e))?
                .permissions()
                .mode();
            if mode & 0o022 != 0 {
                return Err(DataError::Invalid {
                    what: "data dir",
                    value: dir.root.display().to_string(),
                    reason: format!(
                        "it is writable by group or others (mode {:o}); use a directory only you may \
                         write (e.g. `chmod go-w`), or point VIRTUP_DATA_HOME elsewhere",
                        mode & 0o7777
                    ),
                });
            }
        }
        for sub in DataDir::SUBDIRS {
            ensure_private_dir(&dir.root.join(sub))?;
        }
        dir.sweep()?;
        Ok(dir)
    }

    /// Removes what killed runs left: temp files of dead writers and scratch dirs of dead runs.
    /// Creates nothing, so a run with nothing to change can tidy up too.
    pub fn sweep(&self) -> Result<(), DataError> {
        for sub in [
            "", "instance", "owned", "sshkeys", "hostkeys", "secrets", "locks",
        ] {
            let nested = matches!(sub, "sshkeys" | "hostkeys" | "secrets");
            remove_stale_temp_files(&self.root.join(sub), nested)?;
        }
        sweep_scratch_dirs(&self.tmp_dir(), SCRATCH_PREFIX, |_| {})?;
        Ok(())
    }

    /// Where runs stage files (config disks) in their own scratch dirs.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A private scratch dir of this process under `tmp/`, removed when dropped, and swept by the
    /// next [`DataDir::open`] if this process is killed first.
    pub fn scratch(&self) -> Result<ScratchDir, DataError> {
        ensure_private_dir(&self.tmp_dir())?;
        ScratchDir::new_in(&self.tmp_dir(), SCRATCH_PREFIX)
    }

    /// The data dir at `root` without touching the file system: for readers
    /// (inventory, check mode) that must not create anything.
    pub fn at(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn instance_dir(&self) -> PathBuf {
        self.root.join("instance")
    }
    /// `instance/<name>.json`; `name` must already be validated.
    pub fn instance_file(&self, name: &str) -> PathBuf {
        self.instance_dir().join(format!("{name}.json"))
    }
    pub fn sshkeys_dir(&self) -> PathBuf {
        self.root.join("sshkeys")
    }
    /// `sshkeys/<user>/id_ed25519`: the private key virtup logs in with as `user`.
    pub fn user_key_path(&self, user: &str) -> PathBuf {
        self.sshkeys_dir()
            .join(user)
            .join(crate::keys::USER_KEY_FILE)
    }
    pub fn hostkeys_dir(&self) -> PathBuf {
        self.root.join("hostkeys")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn macaddrs_file(&self) -> PathBuf {
        self.root.join("macaddrs.json")
    }
    pub fn known_hosts_file(&self) -> PathBuf {
        self.root.join("known_hosts")
    }
    pub fn inventory_file(&self) -> PathBuf {
        self.root.join("inventory.yaml")
    }
    /// `owner-id`: the identity this data dir writes into every domain tag it makes, so that
    /// another data dir (another user, another project) never takes those domains for its own.
    pub fn owner_id_file(&self) -> PathBuf {
        self.root.join("owner-id")
    }

    /// This data dir's owner id, when it has one. Readers (check mode, the inventory) never make
    /// one: a data dir without an id has made no domain that carries one.
    pub fn owner_id(&self) -> Result<Option<String>, DataError> {
        let path = self.owner_id_file();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::io("read", &path, e)),
        };
        let id = text.trim_end_matches('\n');
        if id.len() != OWNER_ID_HEX_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DataError::Damaged {
                path,
                message: format!(
                    "expected {OWNER_ID_HEX_LEN} hex digits; restore it from a backup, or remove it \
                     only if no domain made from this data dir exists (they would no longer be yours)"
                ),
            });
        }
        Ok(Some(id.to_ascii_lowercase()))
    }

    /// This data dir's owner id, made (random, 128 bits) the first time a run needs it. Two first
    /// runs at once agree on one id: it is made under the data-dir lock.
    pub fn ensure_owner_id(&self, timeout: Duration) -> Result<String, DataError> {
        if let Some(id) = self.owner_id()? {
            return Ok(id);
        }
        let _lock = self.lock_data_dir(timeout)?;
        if let Some(id) = self.owner_id()? {
            return Ok(id);
        }
        let id = hex::encode(rand::random::<[u8; OWNER_ID_HEX_LEN / 2]>());
        write_atomic(
            &self.owner_id_file(),
            format!("{id}\n").as_bytes(),
            PRIVATE_MODE,
        )?;
        Ok(id)
    }

    /// See [`write_atomic`].
    pub fn write_atomic(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataError> {
        write_atomic(path, bytes, mode)
    }

    /// See [`read_json`].
    pub fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<T, DataError> {
        read_json(path)
    }

    /// See [`write_json`].
    pub fn write_json<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        mode: u32,
    ) -> Result<(), DataError> {
        write_json(path, value, mode)
    }

    /// Path of the lock file for `name` (any text; encoded to a safe file name).
    pub fn lock_path(&self, name: &str) -> Result<PathBuf, DataError> {
        if name.is_empty() {
            return Err(DataError::Invalid {
                what: "lock name",
                value: String::new(),
                reason: "must not be empty".to_string(),
            });
        }
        Ok(self
            .locks_dir()
            .join(format!("{}.lock", encode_lock_name(name))))
    }

    /// Takes the exclusive lock `locks/<name>.lock`, waiting at most `timeout`.
    pub fn lock(&self, name: &str, timeout: Duration) -> Result<LockGuard, DataError> {
        lock_file(&self.lock_path(name)?, timeout)
    }

    /// Takes `locks/<name>.lock` if it is free right now.
    pub fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, DataError> {
        try_lock_file(&self.lock_path(name)?)
    }

    /// The whole-data-dir lock, for short read-modify-write of shared files.
    pub fn lock_data_dir(&self, timeout: Duration) -> Result<LockGuard, DataError> {
        self.lock(DATA_DIR_LOCK, timeout)
    }
}

/// Creates `path` (and missing parents) as 0700 and sets an existing
/// directory to 0700.
pub fn ensure_private_dir(path: &Path) -> Result<(), DataError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
    {
        Ok(()) => {}
        Err(e) => return Err(DataError::io("create directory", path, e)),
    }
    let meta = fs::metadata(path).map_err(|e| DataError::io("inspect", path, e))?;
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
            .map_err(|e| DataError::io("set permissions of", path, e))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: a temp file in the same directory
/// is written, fsynced and given `mode`, then renamed over `path`, and the
/// directory is fsynced so the rename survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataError> {
    let (dir, name) = split_path(path)?;
    let tmp = dir.join(temp_name(name));
    let result = (|| {
        // Created 0600 whatever the final mode: nobody may read a half-written secret.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .open(&tmp)
            .map_err(|e| DataError::io("create", &tmp, e))?;
        // Held until the rename: a sweeper that can take this lock knows the writer is gone, at once
        // and whatever the pid namespace. Not getting it only makes the sweep more careful.
        let _ = FileExt::try_lock_exclusive(&file);
        file.write_all(bytes)
            .map_err(|e| DataError::io("write", &tmp, e))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| DataError::io("set permissions of", &tmp, e))?;
        file.sync_all()
            .map_err(|e| DataError::io("sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| DataError::io("replace", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Serializes `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<(), DataError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| DataError::Invalid {
        what: "value for",
        value: path.display().to_string(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, mode)
}

/// Reads a JSON file. Unknown fields are ignored (older virtup reading newer
/// files), but a wrong type or bad syntax is a `Damaged` error naming the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DataError::NotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(DataError::io("read", path, e)),
    };
    parse_json(path, &bytes)
}

/// The parsing half of [`read_json`]: `bytes` as the content of `path`, which errors name.
pub fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, DataError> {
    serde_json::from_slice(bytes).map_err(|e| DataError::Damaged {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Like [`read_json`], with a missing file as `None`.
pub fn read_json_if_exists<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, DataError> {
    match read_json(path) {
        Ok(value) => Ok(Some(value)),
        Err(DataError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; `false` when it did not exist.
pub fn remove_file_if_exists(path: &Path) -> Result<bool, DataError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DataError::io("remove", path, e)),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), DataError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DataError::io("sync directory", dir, e))
}

fn split_path(path: &Path) -> Result<(&Path, &str), DataError> {
    let invalid = |reason: &str| DataError::Invalid {
        what: "file path",
        value: path.display().to_string(),
        reason: reason.to_string(),
    };
    let name = path
        .file_name()
        .ok_or_else(|| invalid("has no file name"))?
        .to_str()
        .ok_or_else(|| invalid("is not valid UTF-8"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

const TEMP_MARK: &str = ".virtup-tmp-";

/// `.<name>.virtup-tmp-<pid>-<random>`: hidden, never matching `*.json`, and
/// carrying the writer's pid so leftovers of dead writers can be recognised.
pub(crate) fn temp_name(name: &str) -> String {
    format!(
        ".{name}{TEMP_MARK}{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// A temp file whose lock is free is stale when its writer's pid is gone, or when
/// it is this old (the writer may live in a pid namespace `/proc` does not show).
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Removes temp files of [`write_atomic`] whose writer process no longer exists.
pub fn remove_stale_temp_files(dir: &Path, nested: bool) -> Result<usize, DataError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(DataError::io("list", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if nested {
                removed += remove_stale_temp_files(&path, false)?;
            }
            continue;
        }
        let Some(pid) = temp_file_pid(&name) else {
            continue;
        };
        let writer_alive = Path::new("/proc").join(pid.to_string()).exists();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        // A live writer holds the temp file's lock until its rename (see `write_atomic`).
        let locked = match File::open(&path) {
            Ok(f) => FileExt::try_lock_exclusive(&f).is_err(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(DataError::io("open", &path, e)),
        };
        if !locked && (!writer_alive || old) && remove_file_if_exists(&path)? {
            removed += 1;
        }
    }
    Ok(removed)
}

fn temp_file_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, tail) = name.rsplit_once(TEMP_MARK)?;
    let (pid, random) = tail.split_once('-')?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Lock names become file names: letters, digits, `_`, `-` and inner `.` stay,
/// anything else is `%XX`-encoded, so every name has its own file.
fn encode_lock_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prefix of the scratch dirs under the data dir's `tmp/`.
const SCRATCH_PREFIX: &str = "run-";

/// A private (0700) working directory of this process, `<parent>/<prefix><pid>.<hex>`, removed
/// when dropped. The pid in its name lets [`sweep_scratch_dirs`] recognise one a killed run left.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates the dir; `parent` must exist (it may be shared, like `/tmp`: it is not touched).
    pub fn new_in(parent: &Path, prefix: &str) -> Result<ScratchDir, DataError> {
        let path = parent.join(format!(
            "{prefix}{}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&path)
            .map_err(|e| DataError::io("create directory", &path, e))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes the scratch dirs under `parent` (named by [`ScratchDir::new_in`] with `prefix`, owned by
/// this user) whose process is gone. `before_removal` runs first on each, to stop what the dead
/// run left running in it. Returns how many were removed.
pub fn sweep_scratch_dirs(
    parent: &Path,
    prefix: &str,
    mut before_removal: impl FnMut(&Path),
) -> Result<usize, DataError> {
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(DataError::io("list", parent, e)),
    };
    // `/proc/self` belongs to this process's effective user.
    let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('.'))
            .filter(|(_, hex)| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_dir() || Some(meta.uid()) != me {
            continue;
        }
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        before_removal(&entry.path());
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DataError::io("remove", &entry.path(), e)),
        }
    }
    Ok(removed)
}

/// An exclusive `flock` on a lock file, released on drop.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the
        // release independent of other handles to the same open file.
        let _ = FileExt::unlock(&self.file);
    }
}

fn open_lock_file(path: &Path) -> Result<File, DataError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_MODE)
        .open(path)
        .map_err(|e| DataError::io("open lock file", path, e))
}

/// Takes an exclusive lock on `path` (created if missing), polling every
/// 50 ms until `timeout` has passed.
pub fn lock_file(path: &Path, timeout: Duration) -> Result<LockGuard, DataError> {
    let file = open_lock_file(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => {
                return Ok(LockGuard {
                    file,
                    path: path.to_path_buf(),
                })
            }
            Err(e) if is_contended(&e) => {}
            Err(e) => return Err(DataError::io("lock", path, e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(DataError::LockTimeout {
                path: path.to_path_buf(),
                seconds: format_seconds(timeout),
            });
        }
        std::thread::sleep(LOCK_POLL.min(deadline - now));
    }
}

/// Takes the lock on `path` only if it is free now.
pub fn try_lock_file(path: &Path) -> Result<Option<LockGuard>, DataError> {
    let file = open_lock_file(path)?;
    match FileExt::try_lock_exclusive(&file) {
        Ok(()) => Ok(Some(LockGuard {
            file,
            path: path.to_path_buf(),
        })),
        Err(e) if is_contended(&e) => Ok(None),
        Err(e) => Err(DataError::io("lock", path, e)),
    }
}

fn is_contended(e: &io::Error) -> bool {
    e.kind() == fs2::lock_contended_error().kind()
        || e.kind() == io::ErrorKind::WouldBlock
        || e.kind() == io::ErrorKind::Interrupted
}

fn format_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    /// How often `needle` appears in what a user sees: anyhow's `{:#}`, the rendering of `virt-up`'s
    /// error line and of a module's `msg`.
    fn shown_times(err: impl Into<anyhow::Error>, needle: &str) -> usize {
        format!("{:#}", err.into()).matches(needle).count()
    }

    #[test]
    fn an_io_cause_is_shown_once() {
        let err = || {
            DataError::io(
                "read",
                Path::new("/d/x.json"),
                io::Error::other("disk on fire"),
            )
        };
        assert_eq!(
            err().to_string(),
            "failed to read `/d/x.json`: disk on fire"
        );
        assert_eq!(shown_times(err(), "disk on fire"), 1);
        // As it usually travels: inside the crate's transparent error.
        assert_eq!(shown_times(crate::Error::from(err()), "disk on fire"), 1);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn owner_id_is_made_once_private_and_never_by_readers() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("data")).unwrap();
        assert_eq!(dd.owner_id().unwrap(), None, "a reader makes no id");
        assert!(!dd.owner_id_file().exists());
        let id = dd.ensure_owner_id(Duration::from_secs(5)).unwrap();
        assert_eq!(id.len(), OWNER_ID_HEX_LEN);
        assert_eq!(mode(&dd.owner_id_file()), 0o600);
        assert_eq!(dd.ensure_owner_id(Duration::from_secs(5)).unwrap(), id);
        assert_eq!(dd.owner_id().unwrap().as_deref(), Some(id.as_str()));
        // Another data dir is another owner.
        let other = DataDir::open(tmp.path().join("other")).unwrap();
        assert_ne!(other.ensure_owner_id(Duration::from_secs(5)).unwrap(), id);
        // A damaged id is an error naming the file, never silently replaced.
        fs::write(dd.owner_id_file(), "not-an-id\n").unwrap();
        let err = dd
            .ensure_owner_id(Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("owner-id") && err.contains("hex digits"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dd.owner_id_file()).unwrap(),
            "not-an-id\n"
        );
    }

    #[test]
    fn open_creates_private_dirs_and_tightens_its_own_subdirs_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/virt-up");
        let dd = DataDir::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        for sub in DataDir::SUBDIRS {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
        }
        assert_eq!(
            names(&root),
            vec!["hostkeys", "instance", "locks", "sshkeys"]
        );

        // A virt-up 2.2.0 data dir is 0755: opening it tightens the subdirs that hold metadata,
        // keys and secrets, but an existing root (it may be a directory the user shares, such as
        // their home) keeps its mode.
        fs::set_permissions(dd.instance_dir(), Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        DataDir::open(&root).unwrap();
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&dd.instance_dir()), 0o700);
        // A root others may write is refused, naming it, and left as it is.
        fs::set_permissions(&root, Permissions::from_mode(0o777)).unwrap();
        let err = DataDir::open(&root).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        assert_eq!(mode(&root), 0o777);
    }

    #[test]
    fn at_touches_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::at(tmp.path().join("nope"));
        assert!(!dd.root().exists());
        assert_eq!(
            dd.instance_file("web1"),
            tmp.path().join("nope/instance/web1.json")
        );
        assert_eq!(dd.macaddrs_file(), tmp.path().join("nope/macaddrs.json"));
        assert_eq!(dd.known_hosts_file(), tmp.path().join("nope/known_hosts"));
        assert_eq!(dd.inventory_file(), tmp.path().join("nope/inventory.yaml"));
    }

    #[test]
    fn write_atomic_sets_mode_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        for (file, mode_wanted) in [("secret", 0o600), ("public", 0o644), ("odd", 0o640)] {
            let path = dd.root().join(file);
            dd.write_atomic(&path, b"one", mode_wanted).unwrap();
            dd.write_atomic(&path, b"two", mode_wanted).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"two");
            assert_eq!(mode(&path), mode_wanted, "{file}");
        }
        assert_eq!(
            names(dd.root()),
            vec!["hostkeys", "instance", "locks", "odd", "public", "secret", "sshkeys"]
        );
    }

    #[test]
    fn write_atomic_into_missing_dir_fails_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing/file");
        let e = write_atomic(&path, b"x", 0o600).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("failed to create `"), "{msg}");
        assert!(
            msg.contains(
                &tmp.path()
                    .join("missing/.file.virtup-tmp-")
                    .display()
                    .to_string()
            ),
            "{msg}"
        );
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        name: String,
        count: u32,
    }

    #[test]
    fn json_round_trip_and_strictness() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.json");
        let value = Sample {
            name: "a".into(),
            count: 3,
        };
        write_json(&path, &value, 0o600).unwrap();
        assert_eq!(read_json::<Sample>(&path).unwrap(), value);
        assert!(fs::read_to_string(&path).unwrap().ends_with("}\n"));

        fs::write(&path, r#"{"name": "a", "count": 3, "future": [1]}"#).unwrap();
        assert_eq!(
            read_json::<Sample>(&path).unwrap(),
            value,
            "unknown fields are tolerated"
        );

        let p = path.display().to_string();
        for (text, want) in [
            (
                r#"{"name": "a", "count": "3"}"#,
                "invalid type: string \"3\", expected u32",
            ),
            (r#"{"name": "a""#, "EOF while parsing"),
            ("", "EOF while parsing"),
            (r#"{"name": "a"}"#, "missing field `count`"),
        ] {
            fs::write(&path, text).unwrap();
            let msg = read_json::<Sample>(&path).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("damaged metadata file `{p}`: ")),
                "{msg}"
            );
            assert!(msg.contains(want), "{text:?}: {msg}");
        }

        let missing = tmp.path().join("missing.json");
        let e = read_json::<Sample>(&missing).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(read_json_if_exists::<Sample>(&missing).unwrap(), None);
    }

    #[test]
    fn lock_times_out_while_held_and_succeeds_after_release() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        let held = dd.lock("template-debian", Duration::from_secs(5)).unwrap();
        assert_eq!(mode(held.path()), 0o600);

        // flock conflicts between open file descriptions even in one process;
        // a thread stands in for a second virtup run.
        let dd2 = dd.clone();
        let started = Instant::now();
        let err = std::thread::spawn(move || {
            dd2.lock("template-debian", Duration::from_millis(200))
                .map(|_| ())
        })
        .join()
        .unwrap()
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            err.to_string(),
            format!(
                "timed out after 0.2s waiting for lock `{}` (held by another virtup run)",
                dd.locks_dir().join("template-debian.lock").display()
            )
        );
        assert!(dd.try_lock("template-debian").unwrap().is_none());
        // Other names are independent.
        assert!(dd.try_lock("template-other").unwrap().is_some());

        // Released on drop; a waiter then gets it.
        let dd3 = dd.clone();
        let waiter = std::thread::spawn(move || {
            dd3.lock("template-debian", Duration::from_secs(30))
                .map(|_| ())
        });
        drop(held);
        waiter.join().unwrap().unwrap();
        // The lock file stays.
        assert!(dd.locks_dir().join("template-debian.lock").exists());
    }

    #[test]
    fn lock_timeout_message_whole_seconds() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path()).unwrap();
        let _held = dd.lock_data_dir(Duration::ZERO).unwrap();
        let path = dd.locks_dir().join("datadir.lock");
        // A second handle in this thread conflicts too.
        let e = lock_file(&path, Duration::ZERO).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "timed out after 0s waiting for lock `{}` (held by another virtup run)",
                path.display()
            )
        );
        assert_eq!(format_seconds(Duration::from_secs(300)), "300");
        assert_eq!(format_seconds(Duration::from_millis(1500)), "1.5");
    }

    #[test]
    fn lock_names_are_encoded_injectively() {
        let dd = DataDir::at("/d");
        let table = [
            ("instance-web1", "instance-web1.lock"),
            ("generic/debian10", "generic%2Fdebian10.lock"),
            ("..", "%2E..lock"),
            ("a%2Fb", "a%252Fb.lock"),
            ("x y", "x%20y.lock"),
        ];
        for (name, file) in table {
            assert_eq!(
                dd.lock_path(name).unwrap(),
                Path::new("/d/locks").join(file),
                "{name}"
            );
        }
        assert!(dd.lock_path("").is_err());
    }

    #[test]
    fn stale_temp_files_of_dead_writers_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        let dd = DataDir::open(&root).unwrap();
        // pid 0 never names a live writer; our own pid does.
        let dead = dd
            .instance_dir()
            .join(".web1.json.virtup-tmp-0-00000000000000ab");
        let live = dd.instance_dir().join(format!(
            ".web2.json.virtup-tmp-{}-00000000000000cd",
            std::process::id()
        ));
        let nested = dd.sshkeys_dir().join("virt");
        ensure_private_dir(&nested).unwrap();
        let dead_nested = nested.join(".id_ed25519.virtup-tmp-0-00000000000000ef");
        let fresh_dead = dd
            .root()
            .join(".macaddrs.json.virtup-tmp-0-0000000000000001");
        // A writer in another pid namespace: its pid means nothing here, but it holds the lock.
        let foreign_ns = dd.root().join(".known_hosts.virtup-tmp-0-0000000000000002");
        let secret_dir = dd.root().join("secrets").join("VIRTUP-t");
        ensure_private_dir(&dd.root().join("secrets")).unwrap();
        ensure_private_dir(&secret_dir).unwrap();
        let dead_secret = secret_dir.join(".password.virtup-tmp-0-0000000000000003");
        for p in [
            &dead,
            &live,
            &dead_nested,
            &fresh_dead,
            &foreign_ns,
            &dead_secret,
        ] {
            fs::write(p, b"partial").unwrap();
        }
        let old = SystemTime::now() - Duration::from_secs(3600);
        for p in [&dead, &live, &dead_nested, &foreign_ns] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let writer = File::open(&live).unwrap();
        FileExt::try_lock_exclusive(&writer).unwrap();
        let other_ns_writer = File::open(&foreign_ns).unwrap();
        FileExt::try_lock_exclusive(&other_ns_writer).unwrap();
        DataDir::open(&root).unwrap();
        assert!(!dead.exists());
        assert!(!dead_nested.exists());
        assert!(!dead_secret.exists(), "secrets/ is swept too");
        assert!(
            !fresh_dead.exists(),
            "a dead writer's temp file goes at once: the next run right after a kill finds none"
        );
        assert!(live.exists(), "a live writer's temp file is kept");
        assert!(
            foreign_ns.exists(),
            "a locked temp file is kept, whatever its pid"
        );
        drop((writer, other_ns_writer));
        assert_eq!(
            temp_file_pid(".a.json.virtup-tmp-12-0123456789abcdef"),
            Some(12)
        );
        assert_eq!(temp_file_pid("a.json"), None);
    }

    #[test]
    fn scratch_dirs_go_on_drop_and_a_dead_runs_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        let scratch = dd.scratch().unwrap();
        let mine = scratch.path().to_owned();
        assert_eq!(
            fs::metadata(&mine).unwrap().permissions().mode() & 0o777,
            DIR_MODE
        );
        fs::write(mine.join("staged.iso"), b"x").unwrap();
        // A killed run's dir: pid 0 is never alive. Its contents go with it.
        let dead = dd.tmp_dir().join("run-0.0000abcd");
        fs::create_dir_all(dead.join("inner")).unwrap();
        let unrelated = dd.tmp_dir().join("run-notapid");
        fs::create_dir_all(&unrelated).unwrap();
        let mut seen = Vec::new();
        let n =
            sweep_scratch_dirs(&dd.tmp_dir(), SCRATCH_PREFIX, |p| seen.push(p.to_owned())).unwrap();
        assert_eq!((n, seen), (1, vec![dead.clone()]));
        assert!(!dead.exists());
        assert!(mine.exists(), "a live run's scratch dir is kept");
        assert!(
            unrelated.exists(),
            "names not made by ScratchDir are left alone"
        );
        drop(scratch);
        assert!(!mine.exists());
    }
}
