//! Customization holds: a template that a playbook run is customizing stays that run's until it is sealed.
//!
//! Customizing a template takes three module calls (build, boot, seal) with a playbook run between
//! them, and each call is its own short process, so the template lock cannot cover the whole of it.
//! Without a hold, a concurrent run could seal (power off) the template under the playbook, or clone
//! it half-customized; a linked clone made then would see its backing file change under it.
//!
//! A hold file (`locks/<name>.hold`) carries the session's token and its holder: the outermost
//! `ansible-playbook` process of the calls (with its start time, so a reused pid is not taken for
//! it), else the caller's parent. Other runs wait while the holder lives; a hold whose holder is
//! gone marks a customization that was interrupted, which the next run with a token takes over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::datadir::{self, DataDir, DataError, PRIVATE_MODE};

/// The process whose life the hold lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// The contents of a hold file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub token: String,
    pub holder: Holder,
    /// Seconds since the epoch when the hold was taken, for people reading the file.
    pub since: u64,
    /// The template's revision (with its playbook's digest) as the session's build read it: the
    /// session's later calls use it instead of reading the playbook again, so that editing the
    /// playbook meanwhile cannot make the seal build a new, uncustomized generation. Holds written
    /// before virtup pinned it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// What a caller with `token` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldState {
    /// No hold: the template is free.
    Free,
    /// The caller's own session holds it.
    Ours,
    /// Another live session is customizing it: wait.
    Live(Hold),
    /// A session that is gone (or a damaged hold file): its customization was interrupted.
    Interrupted,
}

impl DataDir {
    /// Path of the hold file for `name`, beside the lock files.
    pub fn hold_path(&self, name: &str) -> Result<PathBuf, DataError> {
        let lock = self.lock_path(name)?;
        Ok(lock.with_extension("hold"))
    }
}

/// Reads the hold on `name` as seen by a caller with `token` (or none).
pub fn state(data: &DataDir, name: &str, token: Option<&str>) -> Result<HoldState, DataError> {
    let path = data.hold_path(name)?;
    // Hold files are written atomically, so a damaged one was tampered with: never trust it, and treat
    // it like an interrupted customization, which the next run repeats.
    let hold = match datadir::read_json_if_exists::<Hold>(&path) {
        Ok(None) => return Ok(HoldState::Free),
        Ok(Some(h)) => h,
        Err(DataError::Damaged { .. }) => return Ok(HoldState::Interrupted),
        Err(e) => return Err(e),
    };
    Ok(if token == Some(hold.token.as_str()) {
        HoldState::Ours
    } else if alive(&hold.holder) {
        HoldState::Live(hold)
    } else {
        HoldState::Interrupted
    })
}

/// Takes (or takes over) the hold on `name` for `token`, held by this run, pinning `revision`.
pub fn take(
    data: &DataDir,
    name: &str,
    token: &str,
    revision: Option<&str>,
) -> Result<(), DataError> {
    let hold = Hold {
        token: token.to_owned(),
        holder: holder_of_this_run(),
        since: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        revision: revision.map(str::to_owned),
    };
    data.write_json(&data.hold_path(name)?, &hold, PRIVATE_MODE)
}

/// The revision the session of `token` pinned when it took the hold on `name`; `None` when `token`
/// does not hold it (or the hold predates pinning). A missing data dir holds nothing.
pub fn pinned_revision(
    data: &DataDir,
    name: &str,
    token: &str,
) -> Result<Option<String>, DataError> {
    if !data.root().is_dir() {
        return Ok(None);
    }
    match datadir::read_json_if_exists::<Hold>(&data.hold_path(name)?) {
        Ok(Some(hold)) if hold.token == token => Ok(hold.revision),
        // Someone else's, none, or damaged (which `state` reports as interrupted): nothing pinned.
        Ok(_) | Err(DataError::Damaged { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Releases the hold on `name` (no hold is fine).
pub fn release(data: &DataDir, name: &str) -> Result<(), DataError> {
    datadir::remove_file_if_exists(&data.hold_path(name)?).map(|_| ())
}

/// Waits until no live session other than `token`'s holds `name`; `on_wait` is told once who holds
/// it. Returns how long it waited. Polling keeps it simple: holds last minutes, not milliseconds.
pub fn wait_until_free(
    data: &DataDir,
    name: &str,
    token: Option<&str>,
    timeout: Duration,
    mut on_wait: impl FnMut(&Hold),
) -> Result<Duration, DataError> {
    let start = Instant::now();
    let mut told = false;
    loop {
        match state(data, name, token)? {
            HoldState::Live(hold) => {
                if !told {
                    on_wait(&hold);
                    told = true;
                }
                if start.elapsed() >= timeout {
                    return Err(DataError::LockTimeout {
                        path: data.hold_path(name)?,
                        seconds: timeout.as_secs().to_string(),
                    });
                }
                std::thread::sleep(POLL);
            }
            _ => return Ok(start.elapsed()),
        }
    }
}

const POLL: Duration = Duration::from_millis(500);

/// The outermost `ansible-playbook` among this process's ancestors (its workers share its command
/// line but die after each task), else the parent process.
pub fn holder_of_this_run() -> Holder {
    let parent = std::os::unix::process::parent_id();
    let mut chosen = parent;
    let mut pid = parent;
    // Bounded: a process tree deeper than this is not a tree of ansible workers.
    for _ in 0..64 {
        if pid <= 1 {
            break;
        }
        if is_ansible_playbook(pid) {
            chosen = pid;
        }
        match stat_fields(pid) {
            Some((ppid, _)) => pid = ppid,
            None => break,
        }
    }
    Holder {
        pid: chosen,
        start_ticks: stat_fields(chosen).map(|(_, t)| t).unwrap_or(0),
    }
}

/// Alive and the same process that took the hold (not a later one with the same pid).
pub fn alive(holder: &Holder) -> bool {
    stat_fields(holder.pid).is_some_and(|(_, start)| start == holder.start_ticks)
}

fn is_ansible_playbook(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline.split(|b| *b == 0).take(2).any(|arg| {
        Path::new(std::ffi::OsStr::new(&*String::from_utf8_lossy(arg)))
            .file_name()
            .is_some_and(|n| n == "ansible-playbook")
    })
}

/// `(ppid, start_ticks)` of a live, non-zombie process.
fn stat_fields(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields after its last `)` do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (tempfile::TempDir, DataDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        (dir, data)
    }

    /// The revision a session pinned is its own: another token, a released or damaged hold, or a
    /// hold from before pinning pins nothing.
    #[test]
    fn a_session_reads_back_the_revision_it_pinned() {
        let (_d, data) = data();
        assert_eq!(pinned_revision(&data, "VIRTUP-t", "a").unwrap(), None);
        take(&data, "VIRTUP-t", "a", Some("r1 playbook-sha256:ab")).unwrap();
        assert_eq!(
            pinned_revision(&data, "VIRTUP-t", "a").unwrap().as_deref(),
            Some("r1 playbook-sha256:ab")
        );
        assert_eq!(pinned_revision(&data, "VIRTUP-t", "b").unwrap(), None);
        let path = data.hold_path("VIRTUP-t").unwrap();
        std::fs::write(
            &path,
            br#"{"token": "a", "holder": {"pid": 1, "start_ticks": 1}, "since": 0}"#,
        )
        .unwrap();
        assert_eq!(
            pinned_revision(&data, "VIRTUP-t", "a").unwrap(),
            None,
            "older hold"
        );
        std::fs::write(&path, b"{\"token\": ").unwrap();
        assert_eq!(
            pinned_revision(&data, "VIRTUP-t", "a").unwrap(),
            None,
            "damaged"
        );
        release(&data, "VIRTUP-t").unwrap();
        assert_eq!(pinned_revision(&data, "VIRTUP-t", "a").unwrap(), None);
        let gone = DataDir::at(data.root().join("missing"));
        assert_eq!(pinned_revision(&gone, "VIRTUP-t", "a").unwrap(), None);
    }

    #[test]
    fn a_hold_is_ours_for_its_token_and_live_for_others() {
        let (_d, data) = data();
        assert_eq!(
            state(&data, "VIRTUP-t", Some("a")).unwrap(),
            HoldState::Free
        );
        take(&data, "VIRTUP-t", "a", None).unwrap();
        assert_eq!(
            state(&data, "VIRTUP-t", Some("a")).unwrap(),
            HoldState::Ours
        );
        // The holder is this test's parent (cargo's runner), which outlives the test.
        assert!(matches!(
            state(&data, "VIRTUP-t", Some("b")).unwrap(),
            HoldState::Live(h) if h.token == "a"
        ));
        assert!(matches!(
            state(&data, "VIRTUP-t", None).unwrap(),
            HoldState::Live(_)
        ));
        release(&data, "VIRTUP-t").unwrap();
        assert_eq!(state(&data, "VIRTUP-t", None).unwrap(), HoldState::Free);
        release(&data, "VIRTUP-t").unwrap();
    }

    #[test]
    fn a_hold_of_a_gone_or_reused_process_or_a_damaged_file_is_interrupted() {
        let (_d, data) = data();
        let path = data.hold_path("VIRTUP-t").unwrap();
        let me = holder_of_this_run();
        let reused = Hold {
            token: "a".into(),
            holder: Holder {
                pid: me.pid,
                start_ticks: me.start_ticks + 1,
            },
            since: 0,
            revision: None,
        };
        data.write_json(&path, &reused, PRIVATE_MODE).unwrap();
        assert_eq!(
            state(&data, "VIRTUP-t", Some("b")).unwrap(),
            HoldState::Interrupted
        );
        // Its own token still recognises it: the session that took it goes on.
        assert_eq!(
            state(&data, "VIRTUP-t", Some("a")).unwrap(),
            HoldState::Ours
        );
        std::fs::write(&path, b"{\"token\": ").unwrap();
        assert_eq!(
            state(&data, "VIRTUP-t", Some("b")).unwrap(),
            HoldState::Interrupted
        );
    }

    #[test]
    fn waiting_returns_at_once_when_free_and_times_out_on_a_live_hold() {
        let (_d, data) = data();
        let waited = wait_until_free(&data, "VIRTUP-t", None, Duration::ZERO, |_| {
            panic!("nothing holds it")
        })
        .unwrap();
        assert!(waited < Duration::from_secs(5));
        take(&data, "VIRTUP-t", "a", None).unwrap();
        let mut told = 0;
        let err = wait_until_free(&data, "VIRTUP-t", Some("b"), Duration::ZERO, |_| told += 1)
            .unwrap_err();
        assert_eq!(told, 1);
        assert!(err.to_string().contains("VIRTUP-t.hold"), "{err}");
        // The session's own token never waits on itself.
        wait_until_free(&data, "VIRTUP-t", Some("a"), Duration::ZERO, |_| {
            panic!("own hold")
        })
        .unwrap();
    }

    #[test]
    fn the_holder_is_a_live_process() {
        let me = holder_of_this_run();
        assert!(alive(&me), "{me:?}");
        assert!(!alive(&Holder {
            pid: u32::MAX - 1,
            start_ticks: 0
        }));
    }
}
