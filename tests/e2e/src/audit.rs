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

/// Spellings that turn SSH host key checking off (or trust whatever key comes first), found in `text`
/// case-insensitively with any run of spaces, `=`, `:`, quotes or backticks between key and value:
/// StrictHostKeyChecking set to no or off (ssh options, ssh_config), UserKnownHostsFile set to the null
/// device, Ansible's host_key_checking set to a false value (ansible.cfg, the environment, the host var)
/// and, outside the tests and benchmarks, StrictHostKeyChecking set to accept-new (trust on first use).
/// Returns `line: text` for each. A test that must name a spelling (say, to assert it is absent) splits
/// it, like `concat!("UserKnownHostsFile=", "/dev/null")`.
pub fn host_key_checking_offences(path: &str, text: &str) -> Vec<String> {
    let product = !(path.starts_with("tests/")
        || path.starts_with("bench/")
        || (path.starts_with("crates/") && path.split('/').nth(2) == Some("tests")));
    let falsy: &[&str] = &["false", "no", "off", "0", "n", "f"];
    let mut rules: Vec<(&str, &[&str])> = vec![
        ("stricthostkeychecking", &["no", "off"]),
        ("userknownhostsfile", &["/dev/null"]),
        ("host_key_checking", falsy),
    ];
    if product {
        rules.push(("stricthostkeychecking", &["accept-new"]));
    }
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        let hit = rules.iter().any(|(key, values)| {
            lower.match_indices(key).any(|(at, _)| {
                let rest = lower[at + key.len()..]
                    .trim_start_matches(|c: char| c.is_whitespace() || "=:\"'`".contains(c));
                values.iter().any(|v| {
                    rest.strip_prefix(v).is_some_and(|after| {
                        !after.starts_with(|c: char| {
                            c.is_ascii_alphanumeric() || c == '_' || c == '-'
                        })
                    })
                })
            })
        });
        if hit {
            found.push(format!("{}: {}", n + 1, line.trim()));
        }
    }
    found
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
    fn host_key_checking_offences_in_every_spelling() {
        // Built from pieces, so this file does not hold them whole.
        let [strict, users, checking] = [
            "StrictHost".to_owned() + "KeyChecking",
            "UserKnown".to_owned() + "HostsFile",
            "host_key".to_owned() + "_checking",
        ];
        let bad = [
            format!("ssh -o {strict}=no host"),
            format!("ssh -o '{strict} no' host"),
            format!("    {strict} No"),
            format!("-o {strict}=off"),
            format!("{{\"{strict}\": \"no\"}}"),
            format!("-o {users}=/dev/null"),
            format!("{users} /dev/null"),
            format!("{checking} = False"),
            format!("ANSIBLE_{}=false", checking.to_uppercase()),
            format!("ansible_{checking}: no"),
            format!("{checking}=0"),
        ];
        for line in &bad {
            let text = format!("first line\n{line}\n");
            assert_eq!(
                host_key_checking_offences("roles/x.yml", &text),
                [format!("2: {}", line.trim())],
                "{line}"
            );
            assert_eq!(host_key_checking_offences("tests/x.rs", &text).len(), 1);
        }
        let tofu = format!("-o {strict}=accept-new");
        assert_eq!(
            host_key_checking_offences("crates/a/src/b.rs", &tofu).len(),
            1
        );
        assert_eq!(host_key_checking_offences("molecule/x.yml", &tofu).len(), 1);
        for test_file in ["tests/lab/smoke", "bench/clone", "crates/a/tests/b.rs"] {
            assert!(
                host_key_checking_offences(test_file, &tofu).is_empty(),
                "{test_file}"
            );
        }
        let good = [
            format!("-o {strict}=yes -o {users}=/d/known_hosts"),
            "-o GlobalKnownHostsFile=/dev/null".to_owned(),
            format!("({strict}=yes, never `no`)"),
            format!("{strict}=nothing"),
            format!("{users}=/dev/nullified"),
            format!("{checking} = True"),
            format!("{checking}: {{{{ x }}}}, no"),
        ];
        for line in &good {
            assert!(
                host_key_checking_offences("roles/x.yml", line).is_empty(),
                "{line}"
            );
        }
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
