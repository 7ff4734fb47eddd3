//! Lab: customization holds — a template another run is customizing is waited for, never sealed or cloned
//! under it, and a hold whose run is gone is taken over by the next session (see `virtup_core::hold`).
//!
//! Uses the shared base template and writes its hold file by hand: a holder is any live process (here a
//! `sleep`), so no playbook run is needed to stand for the other session.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use virtup_e2e::{repo_root, virsh, wait_for, Sandbox, BASE_TEMPLATE};

const CLONE: &str = "hold-c1";

struct Cleanup<'a> {
    sb: &'a Sandbox,
    hold: PathBuf,
    holder: Option<Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.holder.take() {
            c.kill().ok();
            c.wait().ok();
        }
        std::fs::remove_file(&self.hold).ok();
        let (doc, _) = self.sb.module(
            "virtup_instance",
            &json!({"name": CLONE, "state": "absent"}),
        );
        if doc["failed"] == json!(true) {
            eprintln!("cleanup of {CLONE} failed: {doc}");
        }
    }
}

/// Start time of a process in clock ticks since boot, as the hold records it.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn write_hold(path: &Path, token: &str, pid: u32, ticks: u64) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let doc = json!({"token": token, "holder": {"pid": pid, "start_ticks": ticks}, "since": since});
    std::fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

/// A module run in the background with its stderr in a file, so a test can see it wait.
struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

fn spawn_module(sb: &Sandbox, module: &str, args: &Value) -> Background {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args.json");
    std::fs::write(&args_file, serde_json::to_vec(args).unwrap()).unwrap();
    let (stdout, stderr) = (dir.path().join("out"), dir.path().join("err"));
    let child = Command::new(repo_root().join("plugins/modules").join(module))
        .arg(&args_file)
        .env("VIRTUP_CONFIG_HOME", sb.config())
        .env("VIRTUP_DATA_HOME", sb.data())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    Background {
        child,
        stdout,
        stderr,
        _dir: dir,
    }
}

impl Background {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn finish(mut self, limit: Duration) -> Value {
        let status = wait_for("the module to finish", limit, || {
            self.child.try_wait().unwrap()
        });
        let out = std::fs::read_to_string(&self.stdout).unwrap();
        let doc: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {out}\n{}", self.stderr()));
        assert!(
            status.success() && doc["failed"] != json!(true),
            "{doc}\n{}",
            self.stderr()
        );
        doc
    }
}

fn base_args() -> Value {
    json!({"name": BASE_TEMPLATE, "os_version": "debian-12", "wait_timeout": 900})
}

#[test]
fn a_held_template_is_waited_for_and_an_interrupted_hold_is_taken_over() {
    let sb = Sandbox::shared();
    sb.base_template();
    let hold = sb
        .data()
        .join("locks")
        .join(format!("VIRTUP-{BASE_TEMPLATE}.hold"));
    let mut cleanup = Cleanup {
        sb: &sb,
        hold: hold.clone(),
        holder: None,
    };
    let disk_before = virsh(&["domblklist", &format!("VIRTUP-{BASE_TEMPLATE}")]);

    // 1. Another session, alive, holds the template: a converge of the template and a clone from it wait.
    let holder = Command::new("sleep").arg("900").spawn().unwrap();
    let (pid, ticks) = (holder.id(), start_ticks(holder.id()));
    cleanup.holder = Some(holder);
    write_hold(&hold, "other-session", pid, ticks);
    let template = spawn_module(&sb, "virtup_template", &base_args());
    let clone = spawn_module(
        &sb,
        "virtup_instance",
        &json!({"name": CLONE, "template": BASE_TEMPLATE, "state": "present"}),
    );
    for (what, m) in [("template", &template), ("clone", &clone)] {
        wait_for(
            &format!("the {what} call to say it waits"),
            Duration::from_secs(120),
            || {
                m.stderr()
                    .contains("is being customized by another run")
                    .then_some(())
            },
        );
    }
    let mut template = template;
    let mut clone = clone;
    assert!(
        template.child.try_wait().unwrap().is_none(),
        "{}",
        template.stderr()
    );
    assert!(
        clone.child.try_wait().unwrap().is_none(),
        "{}",
        clone.stderr()
    );
    assert!(
        !virsh(&["list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == CLONE),
        "the clone was made while the template was held"
    );
    // The session ends: its process goes away.
    let mut holder = cleanup.holder.take().unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let t = template.finish(Duration::from_secs(600));
    let c = clone.finish(Duration::from_secs(600));
    println!(
        "held: template call waited {}, clone waited {}",
        t["waited"], c["waited"]
    );
    assert_eq!(t["changed"], json!(false), "{t}");
    assert!(t["waited"]["hold_seconds"].as_f64().unwrap() > 0.0, "{t}");
    assert!(c["waited"]["hold_seconds"].as_f64().unwrap() > 0.0, "{c}");
    assert_eq!(c["instance"]["state"], json!("present"), "{c}");
    assert_eq!(
        virsh(&["domblklist", &format!("VIRTUP-{BASE_TEMPLATE}")]),
        disk_before,
        "the template was rebuilt"
    );

    // 2. The hold's process is gone (the run was killed): the next session with a token takes it over and
    // reports a change, so its playbook would run again; its seal call ends the session.
    write_hold(&hold, "killed-session", pid, ticks);
    let (doc, _) = sb.module("virtup_template", &{
        let mut a = base_args();
        a["hold"] = json!("next-session");
        a
    });
    assert_eq!(doc["changed"], json!(true), "{doc}");
    assert!(
        doc["msg"].as_str().unwrap().contains("interrupted"),
        "{doc}"
    );
    let taken: Value = serde_json::from_slice(&std::fs::read(&hold).unwrap()).unwrap();
    assert_eq!(taken["token"], json!("next-session"), "{taken}");
    let (doc, _) = sb.module("virtup_template", &{
        let mut a = base_args();
        a["hold"] = json!("next-session");
        a["state"] = json!("present");
        a
    });
    assert_eq!(doc["changed"], json!(false), "{doc}");
    assert!(!hold.exists(), "the seal call did not end the session");

    // 3. A damaged hold file is not trusted: it counts as an interrupted customization.
    std::fs::write(&hold, b"{\"token\": ").unwrap();
    let (doc, _) = sb.module("virtup_template", &{
        let mut a = base_args();
        a["hold"] = json!("third-session");
        a
    });
    assert_eq!(doc["changed"], json!(true), "{doc}");
    let (doc, _) = sb.module("virtup_template", &{
        let mut a = base_args();
        a["hold"] = json!("third-session");
        a
    });
    assert_eq!(doc["changed"], json!(false), "{doc}");
    assert!(!hold.exists());
    drop(cleanup);
    assert!(
        !virsh(&["list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == CLONE),
        "cleanup left {CLONE}"
    );
}
