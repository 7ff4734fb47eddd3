//! The secrets audit: every password and private key virtup generated, searched for where none may be.
//!
//! Needles come from the data dir's secret files (passwords under `secrets/`, private keys under
//! `sshkeys/` and `hostkeys/`). A private key is searched line by line (its base64 body), so a key
//! that leaked JSON-escaped, with `\n` instead of newlines, is still found.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One generated secret: where it is stored and the strings that would give it away.
pub struct Secret {
    pub file: PathBuf,
    pub kind: &'static str,
    pub needles: Vec<String>,
}

/// The secrets of a data dir. Panics unless each is a 0600 file in 0700 directories.
pub fn secrets_of(data: &Path) -> Vec<Secret> {
    let mut found = Vec::new();
    for file in files_under(data) {
        let rel = file.strip_prefix(data).unwrap();
        let top = rel.components().next().map(|c| c.as_os_str().to_owned());
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let secret = match top.as_deref().and_then(|t| t.to_str()) {
            Some("secrets") => Some(Secret {
                file: file.clone(),
                kind: "password",
                needles: vec![text.trim().to_owned()],
            }),
            Some("sshkeys" | "hostkeys") if text.contains("PRIVATE KEY-----") => Some(Secret {
                file: file.clone(),
                kind: "private key",
                // The base64 body: every full line is long and random enough to be a needle of its own.
                needles: text
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 24)
                    .map(str::to_owned)
                    .collect(),
            }),
            _ => None,
        };
        if let Some(s) = secret {
            assert!(
                s.needles.iter().all(|n| n.len() >= 8),
                "secret {} is too short to search for: {:?}",
                file.display(),
                s.needles.iter().map(String::len).collect::<Vec<_>>()
            );
            assert_mode(&file, 0o600);
            let mut dir = file.parent();
            while let Some(d) = dir {
                if d == data.parent().unwrap_or(data) {
                    break;
                }
                assert_mode(d, 0o700);
                dir = d.parent();
            }
            found.push(s);
        }
    }
    found
}

fn assert_mode(path: &Path, mode: u32) {
    let actual = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        actual,
        mode,
        "{} has mode {actual:o}, not {mode:o}",
        path.display()
    );
}

/// Every regular file under `root` (symlinks are not followed).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A place searched and what it held.
pub struct Haystack {
    pub place: String,
    pub text: String,
}

impl Haystack {
    pub fn new(place: impl Into<String>, text: impl Into<String>) -> Haystack {
        Haystack {
            place: place.into(),
            text: text.into(),
        }
    }

    /// A file's bytes (lossily as text: needles are ASCII).
    pub fn file(path: &Path) -> Option<Haystack> {
        let bytes = std::fs::read(path).ok()?;
        Some(Haystack::new(
            path.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }
}

/// `(secret file, kind, place)` for every secret found in a haystack.
pub fn search(secrets: &[Secret], haystacks: &[Haystack]) -> Vec<(String, &'static str, String)> {
    let mut hits = Vec::new();
    for h in haystacks {
        for s in secrets {
            if s.needles.iter().any(|n| h.text.contains(n.as_str())) {
                hits.push((s.file.display().to_string(), s.kind, h.place.clone()));
            }
        }
    }
    hits
}

/// Samples every process's command line until stopped, like `ps` run over and over by another user.
pub struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    samples: Arc<Mutex<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl CmdlineSampler {
    pub fn start(every: Duration) -> CmdlineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let samples = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, seen, samples) = (stop.clone(), seen.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = Vec::new();
                    if let Ok(procs) = std::fs::read_dir("/proc") {
                        for p in procs.flatten() {
                            if !p
                                .file_name()
                                .to_string_lossy()
                                .bytes()
                                .all(|b| b.is_ascii_digit())
                            {
                                continue;
                            }
                            if let Ok(raw) = std::fs::read(p.path().join("cmdline")) {
                                if !raw.is_empty() {
                                    batch.push(String::from_utf8_lossy(&raw).replace('\0', " "));
                                }
                            }
                        }
                    }
                    seen.lock().unwrap().extend(batch);
                    *samples.lock().unwrap() += 1;
                    // The sampling period, not a wait for a condition.
                    std::thread::sleep(every);
                }
            })
        };
        CmdlineSampler {
            stop,
            seen,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns the distinct command lines seen and how many samples were taken.
    pub fn finish(mut self) -> (BTreeSet<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let samples = *self.samples.lock().unwrap();
        (seen, samples)
    }
}

impl Drop for CmdlineSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_key_line_and_a_password_and_nothing_else() {
        let secrets = vec![
            Secret {
                file: "p".into(),
                kind: "password",
                needles: vec!["s3cr3tPassw0rd".into()],
            },
            Secret {
                file: "k".into(),
                kind: "private key",
                needles: vec!["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE".into()],
            },
        ];
        let hits = search(
            &secrets,
            &[
                Haystack::new("clean", "nothing to see"),
                Haystack::new(
                    "json",
                    "{\"k\": \"-----BEGIN\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\\n\"}",
                ),
                Haystack::new(
                    "argv",
                    "virt-builder --root-password password:s3cr3tPassw0rd",
                ),
            ],
        );
        assert_eq!(
            hits.iter().map(|h| h.2.as_str()).collect::<Vec<_>>(),
            ["json", "argv"]
        );
    }

    #[test]
    fn the_sampler_sees_its_own_process() {
        let s = CmdlineSampler::start(Duration::from_millis(10));
        crate::wait_for("a sample", Duration::from_secs(60), || {
            (*s.samples.lock().unwrap() > 0).then_some(())
        });
        let (seen, samples) = s.finish();
        assert!(samples > 0);
        let me = std::env::args().next().unwrap();
        assert!(seen.iter().any(|c| c.contains(&me)), "{me} not in {seen:?}");
    }
}
