//! Layer 4 fault injection: runs killed at random points, libvirtd stopped mid-operation and a full pool;
//! after each fault the next run must converge and leave no leaked domain, volume, lock, temp file,
//! scratch dir or process.
//!
//! Trials: by default (CI) 1 template-build kill, 3 clone kills, 2 first-boot kills, 2 delete kills and
//! one libvirtd stop, plus the full-pool test's 2 (a build and a full clone into a full pool);
//! `VIRTUP_FAULT_TRIALS=full` makes it 3 + 10 + 6 + 8 = 27 kill trials (about 20 land before the module ends). Kill times are drawn uniformly from
//! `[0, duration of an unkilled run of the same phase]` by a seeded generator; the seed is printed and
//! `VIRTUP_FAULT_SEED=<n>` replays a run. A module that finishes before its kill time is reported as
//! such and still checked, but not counted as a kill.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use virtup_e2e::{lab_home, repo_root, run, run_ok, virsh, wait_for, Sandbox};

/// Every object this file creates carries this prefix, so leak checks never look at other tests' objects.
const PREFIX: &str = "flt-";
const TEMPLATE: &str = "flt-t";
const TEMPLATE_DOMAIN: &str = "VIRTUP-flt-t";

// --- randomness -----------------------------------------------------------------------------------

/// splitmix64: enough for uniform kill times, and trivially replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("VIRTUP_FAULT_SEED")
            .ok()
            .map(|s| s.trim().parse().expect("VIRTUP_FAULT_SEED is a u64"))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("faults: seed {seed} (replay with VIRTUP_FAULT_SEED={seed})");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, max]`.
    fn upto(&mut self, max: Duration) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        max.mul_f64(unit)
    }
}

/// How many kills per phase: (template build, clone, first boot, delete).
fn trial_counts() -> (usize, usize, usize, usize) {
    match std::env::var("VIRTUP_FAULT_TRIALS").as_deref() {
        Ok("full") => (3, 10, 6, 8),
        _ => (1, 3, 2, 2),
    }
}

// --- processes ------------------------------------------------------------------------------------

/// `(pid, ppid)` of every process, from `/proc/<pid>/stat` (the field after the command's last `)`).
fn process_table() -> Vec<(u32, u32)> {
    let mut table = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            table.push((pid, ppid));
        }
    }
    table
}

fn signal(pids: &BTreeSet<u32>, sig: &str) {
    if pids.is_empty() {
        return;
    }
    // Some may have exited meanwhile; `kill` still signals the rest.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // A zombie has exited; only its parent's wait is missing.
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Kills the run the way an OOM kill of its cgroup or a ctrl-C to its process group does: the module
/// *and everything it started*. Killing the module alone is not a fault a user meets: its children
/// (virt-builder, qemu-img, the libguestfs appliance's qemu) would live on as orphans and keep writing
/// into the volume the next run is about to clean up, and they may sit in process groups of their own
/// (a `Cmd` with a timeout gets one), so neither the group nor the session finds them all; the parent
/// links in /proc do. Everything is stopped first, so no process can fork or be reparented while the
/// tree is walked, then all of it is killed at once. Returns the pids killed.
fn kill_tree(root: &mut Child) -> BTreeSet<u32> {
    let mut tree = BTreeSet::from([root.id()]);
    signal(&tree, "STOP");
    loop {
        let new: BTreeSet<u32> = process_table()
            .into_iter()
            .filter(|(pid, ppid)| tree.contains(ppid) && !tree.contains(pid))
            .map(|(pid, _)| pid)
            .collect();
        if new.is_empty() {
            break;
        }
        signal(&new, "STOP");
        tree.extend(new);
    }
    signal(&tree, "KILL");
    root.wait().expect("reap the killed module");
    tree
}

/// Processes of a trial that outlived it: any of the killed pids, or anything whose command line names
/// the trial's sandbox (virtup's tools get its secrets and keys by path; the appliance's qemu is a child
/// of the tool, so among the killed pids). Object names are no criterion: the guests' qemu carry them.
fn orphans(sb: &Sandbox, killed: &BTreeSet<u32>) -> Vec<String> {
    let me = std::process::id();
    let sandbox = sb.path().to_string_lossy().to_string();
    let mut found = Vec::new();
    for (pid, _) in process_table() {
        if pid == me || !alive(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if killed.contains(&pid) || cmdline.contains(&sandbox) {
            found.push(format!("{pid}: {}", cmdline.trim()));
        }
    }
    found
}

// --- running modules ------------------------------------------------------------------------------

/// The output of a module that finished on its own.
fn finish(mut child: Child) -> (Option<Value>, String) {
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).ok();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).ok();
    child.wait().unwrap();
    (serde_json::from_str(&out).ok(), err)
}

/// Runs `module` and SIGKILLs its whole tree after `delay`, unless it finishes first.
/// Returns the pids killed (empty when it finished before the kill).
fn killed_run(sb: &Sandbox, module: &str, args: &Value, delay: Duration) -> BTreeSet<u32> {
    let (mut child, _args_file) = sb.spawn_module(module, args);
    let start = Instant::now();
    // The randomized kill delay is the one wait that is a time, not a condition; it still ends early
    // when the module exits by itself (the stdout pipe is large enough for its one JSON document).
    while start.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            finish(child);
            return BTreeSet::new();
        }
        std::thread::sleep(Duration::from_millis(5).min(delay.saturating_sub(start.elapsed())));
    }
    kill_tree(&mut child)
}

fn changed(doc: &Value) -> bool {
    doc["changed"] == json!(true)
}

/// The recovery run after a fault: must succeed, and a second identical run must change nothing.
fn converge(sb: &Sandbox, module: &str, args: &Value) -> (Value, Duration) {
    let start = Instant::now();
    let doc = sb.ok(module, args);
    let took = start.elapsed();
    let again = sb.ok(module, args);
    assert!(
        !changed(&again),
        "{module} {args} did not converge: a second run still changes something: {again}"
    );
    (doc, took)
}

// --- what exists ----------------------------------------------------------------------------------

fn ours(name: &str) -> bool {
    name.contains(PREFIX)
}

/// Domains of this file, with their state.
fn domains() -> BTreeMap<String, String> {
    virsh(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && ours(n))
        .map(|n| {
            let state = run(
                Command::new("virsh").args(["-c", "qemu:///system", "domstate", n]),
                Duration::from_secs(60),
            )
            .stdout
            .trim()
            .to_owned();
            (n.to_owned(), state)
        })
        .collect()
}

/// Volumes of this file in `pool`.
fn volumes(pool: &str) -> BTreeSet<String> {
    virsh(&["pool-refresh", pool]);
    virsh(&["vol-list", pool])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours(n))
        .map(str::to_owned)
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A one-line picture of what a fault left behind, for the trial report.
fn snapshot(sb: &Sandbox, pool: &str) -> String {
    let mut files = Vec::new();
    walk(&sb.data(), &mut files);
    let temps = files
        .iter()
        .filter(|p| p.to_string_lossy().contains(".virtup-tmp-"))
        .count();
    let doms: Vec<String> = domains()
        .into_iter()
        .map(|(n, s)| format!("{n}({s})"))
        .collect();
    format!(
        "domains [{}] volumes [{}] temp files {temps}",
        doms.join(" "),
        volumes(pool).into_iter().collect::<Vec<_>>().join(" ")
    )
}

/// Everything that must not be left over once the state is `expected_domains` with `expected_volumes`
/// in `pool`; each problem as a sentence. `hosts` are the names known_hosts must list once each.
fn leaks(
    sb: &Sandbox,
    pool: &str,
    expected_domains: &[&str],
    expected_volumes: &[String],
    killed: &BTreeSet<u32>,
) -> Vec<String> {
    let mut found = Vec::new();
    let doms: BTreeSet<String> = domains().into_keys().collect();
    let want: BTreeSet<String> = expected_domains.iter().map(|s| s.to_string()).collect();
    if doms != want {
        found.push(format!("domains {doms:?}, expected {want:?}"));
    }
    let vols = volumes(pool);
    let want: BTreeSet<String> = expected_volumes.iter().cloned().collect();
    if vols != want {
        found.push(format!("volumes in `{pool}` {vols:?}, expected {want:?}"));
    }
    if pool != "default" {
        let parts: Vec<String> = volumes("default")
            .into_iter()
            .filter(|v| v.ends_with(".part"))
            .collect();
        if !parts.is_empty() {
            found.push(format!("partial volumes in `default`: {parts:?}"));
        }
    }
    let mut files = Vec::new();
    walk(&sb.data(), &mut files);
    for f in &files {
        let name = f.to_string_lossy();
        if name.contains(".virtup-tmp-") {
            found.push(format!("temp file {name}"));
        }
        if name.ends_with(".json") {
            if let Err(e) = serde_json::from_slice::<Value>(&std::fs::read(f).unwrap_or_default()) {
                found.push(format!("{name} does not parse: {e}"));
            }
        }
    }
    // The ownership ledger tells the truth: every virtup volume is recorded with its key, and no
    // entry is left pending or names a volume that is gone.
    let mut recorded = BTreeSet::new();
    // (Temp files of killed writers are reported above; the ledgers are the `*.json` files.)
    for f in files.iter().filter(|f| {
        f.parent().is_some_and(|p| p.ends_with("owned"))
            && f.extension().is_some_and(|e| e == "json")
            && !f.file_name().unwrap().to_string_lossy().starts_with('.')
    }) {
        let doc: Value =
            serde_json::from_slice(&std::fs::read(f).unwrap_or_default()).unwrap_or(Value::Null);
        for v in doc["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            let vpool = v["pool"].as_str().unwrap_or_default();
            if v["key"].is_null() {
                found.push(format!("{} still lists `{name}` as pending", f.display()));
            } else if !volumes(vpool).contains(&name) {
                found.push(format!("{} lists `{name}`, which is gone", f.display()));
            }
            recorded.insert(name);
        }
    }
    // The full-pool trial's filler is the test's own volume, not virtup's.
    for v in expected_volumes.iter().filter(|v| *v != "flt-filler") {
        if !recorded.contains(v) {
            found.push(format!("volume `{v}` is not in any ownership ledger"));
        }
    }
    // Scratch dirs: config disks are staged in the data dir's `tmp/run-*`, virt-builder runs in
    // `/tmp/virtup-build-*` (with its gpg-agent); a dead run's are swept by the next run.
    for d in std::fs::read_dir(sb.data().join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        found.push(format!("scratch dir {} left", d.path().display()));
    }
    for d in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("virtup-build-")
            .and_then(|r| r.split_once('.'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid) || killed.contains(&pid) {
            found.push(format!(
                "build scratch dir {} of a dead run",
                d.path().display()
            ));
        }
        for (p, _) in process_table() {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if alive(p)
                && (!alive(pid) || killed.contains(&pid))
                && String::from_utf8_lossy(&cmdline).contains(&*d.path().to_string_lossy())
            {
                found.push(format!(
                    "process {p} of a dead build: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
            }
        }
    }
    // One pinned key per existing host (the template boots like an instance, so it has one too).
    let known = std::fs::read_to_string(sb.data().join("known_hosts")).unwrap_or_default();
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for l in known.lines().filter(|l| !l.trim().is_empty()) {
        *lines
            .entry(l.split_whitespace().next().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = expected_domains
        .iter()
        .map(|d| (d.to_string(), 1))
        .collect();
    if lines != want {
        found.push(format!("known_hosts lists {lines:?}, expected {want:?}"));
    }
    // Lock files stay by design (deleting a lock file another process has open would let two
    // holders in); none may still be held.
    for f in std::fs::read_dir(sb.data().join("locks"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let held = !Command::new("flock")
            .args(["-n"])
            .arg(f.path())
            .arg("true")
            .status()
            .unwrap()
            .success();
        if held {
            found.push(format!("lock {} is still held", f.path().display()));
        }
    }
    found.extend(
        orphans(sb, killed)
            .into_iter()
            .map(|p| format!("orphan process {p}")),
    );
    found
}

/// The template's objects as its module output names them.
fn template_volumes(doc: &Value) -> Vec<String> {
    let disk = doc["template"]["disk"]
        .as_str()
        .unwrap_or_else(|| panic!("template output names no disk: {doc}"));
    vec![
        Path::new(disk)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string(),
        format!("{TEMPLATE_DOMAIN}-config.iso"),
    ]
}

/// Domains and volumes of the template plus the instances `extra` (`name` owning volumes).
fn expected(
    tvols: &[String],
    extra: &[&'static str],
    name: Option<&str>,
) -> (Vec<&'static str>, Vec<String>) {
    let mut d = vec![TEMPLATE_DOMAIN];
    d.extend_from_slice(extra);
    let mut v = tvols.to_vec();
    if let Some(n) = name {
        v.extend(instance_volumes(n));
    }
    (d, v)
}

fn instance_volumes(name: &str) -> Vec<String> {
    vec![format!("{name}.qcow2"), format!("{name}-config.iso")]
}

// --- the report -----------------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    trials: usize,
    kills: usize,
    /// Trials whose module finished before its kill time: still checked, not counted as kills.
    finished_first: usize,
    libvirtd_stops: usize,
    recovered: usize,
    leaks: Vec<String>,
}

/// What a trial did to the run.
enum Fault {
    /// The module's tree was killed (the pids).
    Killed(BTreeSet<u32>),
    /// libvirtd was stopped under it.
    LibvirtdStopped,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        phase: &str,
        fault: &Fault,
        kill_at: Duration,
        of: Duration,
        found: &str,
        recovery: Duration,
        leaks: Vec<String>,
    ) {
        self.trials += 1;
        // `converge` panics unless the next run succeeds and a second one changes nothing.
        self.recovered += 1;
        let what = match fault {
            Fault::Killed(pids) if pids.is_empty() => {
                self.finished_first += 1;
                "finished before the kill"
            }
            Fault::Killed(_) => {
                self.kills += 1;
                "killed"
            }
            Fault::LibvirtdStopped => {
                self.libvirtd_stops += 1;
                "libvirtd stopped"
            }
        };
        println!(
            "fault trial {:>2} {phase:<10} {what} at {:>7.2}s of {:>7.2}s | after: {found} | recovered in {:.1}s | leaks: {}",
            self.trials,
            kill_at.as_secs_f64(),
            of.as_secs_f64(),
            recovery.as_secs_f64(),
            if leaks.is_empty() { "none".to_owned() } else { leaks.join("; ") }
        );
        self.leaks.extend(
            leaks
                .into_iter()
                .map(|l| format!("trial {} ({phase}): {l}", self.trials)),
        );
    }
    fn summary(&self) {
        println!(
            "faults: {} trials ({} kills, {} finished before the kill, {} libvirtd stops), {} recovered, {} leaks",
            self.trials,
            self.kills,
            self.finished_first,
            self.libvirtd_stops,
            self.recovered,
            self.leaks.len()
        );
        assert!(self.leaks.is_empty(), "leaks:\n{}", self.leaks.join("\n"));
    }
}

/// Removes what this file's tests defined, however they end.
struct Cleanup<'a> {
    sb: &'a Sandbox,
    instances: Vec<(&'static str, Value)>,
    templates: Vec<(&'static str, Value)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        // A failed libvirtd phase may have left the daemon stopped: everything below needs it.
        // (No panic may escape a drop that runs while a failed test unwinds.)
        let _ = std::panic::catch_unwind(ensure_libvirtd);
        for (name, extra) in &self.instances {
            let mut args = json!({"name": name, "state": "absent", "wait_timeout": 120});
            merge(&mut args, extra);
            let _ = self.sb.module("virtup_instance", &args);
        }
        for (name, extra) in &self.templates {
            let mut args = json!({"name": name, "state": "absent", "wait_timeout": 120});
            merge(&mut args, extra);
            let _ = self.sb.module("virtup_template", &args);
        }
    }
}

fn merge(into: &mut Value, extra: &Value) {
    if let (Some(into), Some(extra)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            into.insert(k.clone(), v.clone());
        }
    }
}

// --- libvirtd -------------------------------------------------------------------------------------

fn daemon_pid(name: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(lab_home().join(format!("run/{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == name && alive(pid)).then_some(pid)
}

/// Starts libvirtd again if it is not running, in the daemons' own mount namespace (virtlogd's): the
/// test runs in `lab exec`'s private one, whose mounts a daemon must not inherit.
fn ensure_libvirtd() {
    if daemon_pid("libvirtd").is_some() {
        return;
    }
    let virtlogd = daemon_pid("virtlogd").expect("virtlogd of the lab is running");
    run_ok(
        Command::new("nsenter")
            .args(["-t", &virtlogd.to_string(), "-m", "--"])
            .arg(repo_root().join("tests/lab/lab"))
            .arg("restart-libvirtd"),
        Duration::from_secs(300),
        "tests/lab/lab restart-libvirtd",
    );
}

// --- the tests ------------------------------------------------------------------------------------

#[test]
fn killed_runs_and_a_stopped_libvirtd_leave_a_state_the_next_run_converges_from() {
    lab_home();
    let total = Instant::now();
    let mut rng = Rng::from_env();
    let (n_build, n_clone, n_boot, n_delete) = trial_counts();
    let sb = Sandbox::new();
    let _cleanup = Cleanup {
        sb: &sb,
        instances: ["flt-c", "flt-b", "flt-l"]
            .into_iter()
            .map(|n| (n, json!({})))
            .collect(),
        templates: vec![(TEMPLATE, json!({}))],
    };
    let mut report = Report::default();
    let none = BTreeSet::new();

    // Template build. Each trial asks for a new revision, so a generation is really being built when
    // the kill lands; the recovery builds it and drops the old one (no clone depends on it yet).
    let tpl = |rev: &str| json!({"name": TEMPLATE, "os_version": "debian-12", "revision": rev, "wait_timeout": 900});
    let start = Instant::now();
    let mut tpl_doc = sb.ok("virtup_template", &tpl("r0"));
    let t_build = start.elapsed();
    println!(
        "faults: unkilled template build {:.1}s",
        t_build.as_secs_f64()
    );
    let l = leaks(
        &sb,
        "default",
        &[TEMPLATE_DOMAIN],
        &template_volumes(&tpl_doc),
        &none,
    );
    assert!(l.is_empty(), "an unkilled build leaks: {l:?}");
    for i in 0..n_build {
        let args = tpl(&format!("k{i}"));
        let at = rng.upto(t_build);
        let killed = killed_run(&sb, "virtup_template", &args, at);
        let found = snapshot(&sb, "default");
        let (doc, took) = converge(&sb, "virtup_template", &args);
        tpl_doc = doc;
        let l = leaks(
            &sb,
            "default",
            &[TEMPLATE_DOMAIN],
            &template_volumes(&tpl_doc),
            &killed,
        );
        report.line(
            "build",
            &Fault::Killed(killed),
            at,
            t_build,
            &found,
            took,
            l,
        );
    }
    let tvols = template_volumes(&tpl_doc);
    let with = |extra: &[&'static str], name: Option<&str>| expected(&tvols, extra, name);

    // Clone (host side only: `present` defines the linked clone without booting it).
    let clone = json!({"name": "flt-c", "template": TEMPLATE, "state": "present"});
    let gone = |n: &str| json!({"name": n, "state": "absent", "wait_timeout": 300});
    let start = Instant::now();
    sb.ok("virtup_instance", &clone);
    let t_clone = start.elapsed();
    sb.ok("virtup_instance", &gone("flt-c"));
    println!("faults: unkilled clone {:.2}s", t_clone.as_secs_f64());
    for _ in 0..n_clone {
        let at = rng.upto(t_clone);
        let killed = killed_run(&sb, "virtup_instance", &clone, at);
        let found = snapshot(&sb, "default");
        let (_, took) = converge(&sb, "virtup_instance", &clone);
        let (d, v) = with(&["flt-c"], Some("flt-c"));
        let l = leaks(&sb, "default", &d, &v, &killed);
        report.line(
            "clone",
            &Fault::Killed(killed),
            at,
            t_clone,
            &found,
            took,
            l,
        );
        sb.ok("virtup_instance", &gone("flt-c"));
    }

    // First boot: clone, start and wait for the pinned SSH key; kills land mostly in the wait.
    // Each booted instance is then the subject of a delete trial (or deleted unkilled).
    let boot =
        json!({"name": "flt-b", "template": TEMPLATE, "state": "running", "wait_timeout": 900});
    let start = Instant::now();
    sb.ok("virtup_instance", &boot);
    let t_boot = start.elapsed();
    let start = Instant::now();
    sb.ok("virtup_instance", &gone("flt-b"));
    let t_delete = start.elapsed();
    println!(
        "faults: unkilled first boot {:.1}s, delete {:.2}s",
        t_boot.as_secs_f64(),
        t_delete.as_secs_f64()
    );
    let present = json!({"name": "flt-b", "template": TEMPLATE, "state": "present"});
    for i in 0..n_boot.max(n_delete) {
        if i < n_boot {
            let at = rng.upto(t_boot);
            let killed = killed_run(&sb, "virtup_instance", &boot, at);
            let found = snapshot(&sb, "default");
            let (_, took) = converge(&sb, "virtup_instance", &boot);
            let (d, v) = with(&["flt-b"], Some("flt-b"));
            let l = leaks(&sb, "default", &d, &v, &killed);
            report.line(
                "first boot",
                &Fault::Killed(killed),
                at,
                t_boot,
                &found,
                took,
                l,
            );
        } else {
            sb.ok("virtup_instance", &present);
        }
        if i < n_delete {
            let at = rng.upto(t_delete);
            let killed = killed_run(&sb, "virtup_instance", &gone("flt-b"), at);
            let found = snapshot(&sb, "default");
            let (_, took) = converge(&sb, "virtup_instance", &gone("flt-b"));
            let (d, v) = with(&[], None);
            let l = leaks(&sb, "default", &d, &v, &killed);
            report.line(
                "delete",
                &Fault::Killed(killed),
                at,
                t_delete,
                &found,
                took,
                l,
            );
        } else {
            sb.ok("virtup_instance", &gone("flt-b"));
        }
    }

    // libvirtd stopped while the module waits for a first boot: a clean failure naming libvirt, then
    // (daemon back; the guest survives the restart) the next run converges.
    let lv =
        json!({"name": "flt-l", "template": TEMPLATE, "state": "running", "wait_timeout": 900});
    let (child, _args_file) = sb.spawn_module("virtup_instance", &lv);
    wait_for(
        "flt-l to be defined and started",
        Duration::from_secs(300),
        || (domains().get("flt-l").map(String::as_str) == Some("running")).then_some(()),
    );
    let stopped_at = Instant::now();
    let libvirtd = daemon_pid("libvirtd").expect("libvirtd runs");
    signal(&BTreeSet::from([libvirtd]), "TERM");
    let mut child = child;
    wait_for(
        "the module to give up on a stopped libvirtd",
        Duration::from_secs(300),
        || child.try_wait().unwrap().map(|_| ()),
    );
    let failed_after = stopped_at.elapsed();
    let (doc, stderr) = finish(child);
    let doc =
        doc.unwrap_or_else(|| panic!("no JSON from a module whose libvirtd stopped:\n{stderr}"));
    let msg = doc["msg"].as_str().unwrap_or_default().to_owned();
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(
        !stderr.contains("panicked"),
        "the module panicked:\n{stderr}"
    );
    assert!(
        msg.to_lowercase().contains("libvirt"),
        "the error does not name libvirt: {msg}"
    );
    wait_for("libvirtd to exit", Duration::from_secs(60), || {
        (!alive(libvirtd)).then_some(())
    });
    let found = format!(
        "module failed after {:.1}s: {msg}",
        failed_after.as_secs_f64()
    );
    ensure_libvirtd();
    let (_, took) = converge(&sb, "virtup_instance", &lv);
    let (d, v) = with(&["flt-l"], Some("flt-l"));
    let l = leaks(&sb, "default", &d, &v, &none);
    report.line(
        "libvirtd",
        &Fault::LibvirtdStopped,
        failed_after,
        failed_after,
        &found,
        took,
        l,
    );
    sb.ok("virtup_instance", &gone("flt-l"));

    let (d, v) = with(&[], None);
    let l = leaks(&sb, "default", &d, &v, &none);
    assert!(l.is_empty(), "leaks at the end: {l:?}");
    println!("faults: whole test {:.0}s", total.elapsed().as_secs_f64());
    report.summary();
}

/// A loop-mounted ext4 file system defined as a libvirt dir pool, torn down however the test ends.
struct LoopPool {
    name: String,
    image: PathBuf,
    dir: PathBuf,
    device: Option<String>,
    /// libvirtd's mount namespace is not the test's (`lab exec` runs tests in a private one): the file
    /// system is mounted in both, so the daemon and the modules see the same files.
    libvirtd: u32,
}

impl LoopPool {
    fn new(name: &str, mib: u64) -> LoopPool {
        let home = lab_home();
        let mut pool = LoopPool {
            name: name.to_owned(),
            image: home.join(format!("{name}.img")),
            dir: home.join(format!("{name}.mnt")),
            device: None,
            libvirtd: daemon_pid("libvirtd").expect("libvirtd runs"),
        };
        // Leftovers of an earlier run that could not clean up.
        pool.teardown();
        std::fs::create_dir_all(&pool.dir).unwrap();
        let file = std::fs::File::create(&pool.image).unwrap();
        file.set_len(mib << 20).unwrap();
        let limit = Duration::from_secs(120);
        run_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&pool.image),
            limit,
            "mkfs.ext4",
        );
        let dev = run_ok(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&pool.image),
            limit,
            "losetup",
        )
        .stdout
        .trim()
        .to_owned();
        pool.device = Some(dev.clone());
        run_ok(
            Command::new("mount").arg(&dev).arg(&pool.dir),
            limit,
            "mount",
        );
        run_ok(
            Command::new("nsenter")
                .args(["-t", &pool.libvirtd.to_string(), "-m", "--", "mount"])
                .arg(&dev)
                .arg(&pool.dir),
            limit,
            "mount in libvirtd's namespace",
        );
        virsh(&[
            "pool-define-as",
            name,
            "dir",
            "--target",
            &pool.dir.to_string_lossy(),
        ]);
        virsh(&["pool-start", name]);
        pool
    }

    fn avail(&self) -> u64 {
        let out = run_ok(
            Command::new("df")
                .args(["-B1", "--output=avail"])
                .arg(&self.dir),
            Duration::from_secs(30),
            "df",
        );
        out.stdout.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("flt-filler")
    }

    /// Leaves `room` bytes free.
    fn fill(&self, room: u64) {
        let size = self.avail().saturating_sub(room);
        run_ok(
            Command::new("fallocate")
                .args(["-l", &size.to_string()])
                .arg(self.filler()),
            Duration::from_secs(60),
            "fallocate",
        );
        virsh(&["pool-refresh", &self.name]);
    }

    fn unfill(&self) {
        std::fs::remove_file(self.filler()).unwrap();
        virsh(&["pool-refresh", &self.name]);
    }

    fn teardown(&mut self) {
        let quiet = |c: &mut Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(Command::new("virsh").args(["-c", "qemu:///system", "pool-destroy", &self.name]));
        quiet(Command::new("virsh").args(["-c", "qemu:///system", "pool-undefine", &self.name]));
        quiet(
            Command::new("nsenter")
                .args(["-t", &self.libvirtd.to_string(), "-m", "--", "umount"])
                .arg(&self.dir),
        );
        quiet(Command::new("umount").arg(&self.dir));
        if let Some(dev) = self.device.take() {
            quiet(Command::new("losetup").args(["-d", &dev]));
        }
        // Loop devices of an earlier run of this image.
        let listed = Command::new("losetup")
            .args(["-j"])
            .arg(&self.image)
            .output();
        if let Ok(out) = listed {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(dev) = line.split(':').next() {
                    quiet(Command::new("losetup").args(["-d", dev]));
                }
            }
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for LoopPool {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn says_no_space(msg: &str) -> bool {
    let m = msg.to_lowercase();
    m.contains("no space") || m.contains("not enough space") || m.contains("disk full")
}

#[test]
fn a_full_pool_fails_cleanly_and_the_next_run_converges_once_there_is_room() {
    lab_home();
    // One generation (about 400 MiB under the lab's debian-12) plus a full clone of it.
    let pool = LoopPool::new("flt-pool", 1200);
    let sb = Sandbox::new();
    let in_pool = json!({"pool": "flt-pool"});
    let _cleanup = Cleanup {
        sb: &sb,
        instances: vec![("flt-fp", in_pool.clone())],
        templates: vec![("flt-tp", in_pool.clone())],
    };
    let none = BTreeSet::new();
    let filler = "flt-filler".to_owned();

    // A template build into the full pool.
    let tpl = json!({"name": "flt-tp", "os_version": "debian-12", "pool": "flt-pool", "wait_timeout": 900});
    pool.fill(8 << 20);
    let start = Instant::now();
    let (doc, out) = sb.module("virtup_template", &tpl);
    let msg = doc["msg"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        doc["failed"],
        json!(true),
        "a build into a full pool succeeded: {doc}"
    );
    assert!(
        says_no_space(&msg),
        "the error does not say the pool is full: {msg}"
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    println!(
        "faults: full pool, template build failed after {:.1}s: {msg}",
        start.elapsed().as_secs_f64()
    );
    let l = leaks(&sb, "flt-pool", &[], std::slice::from_ref(&filler), &none);
    assert!(l.is_empty(), "a failed build leaves: {l:?}");
    pool.unfill();
    let (doc, took) = converge(&sb, "virtup_template", &tpl);
    println!(
        "faults: full pool, template build converged in {:.1}s once there was room",
        took.as_secs_f64()
    );
    let mut tvols = template_volumes(&doc);
    tvols[1] = "VIRTUP-flt-tp-config.iso".into();
    let l = leaks(&sb, "flt-pool", &["VIRTUP-flt-tp"], &tvols, &none);
    assert!(l.is_empty(), "{l:?}");

    // A full clone into the full pool.
    let inst = json!({"name": "flt-fp", "template": "flt-tp", "pool": "flt-pool", "clone": "full", "state": "present"});
    pool.fill(8 << 20);
    let (doc, out) = sb.module("virtup_instance", &inst);
    let msg = doc["msg"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        doc["failed"],
        json!(true),
        "a full clone into a full pool succeeded: {doc}"
    );
    assert!(
        says_no_space(&msg),
        "the error does not say the pool is full: {msg}"
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    println!("faults: full pool, full clone failed: {msg}");
    let mut with_filler = tvols.clone();
    with_filler.push(filler);
    let l = leaks(&sb, "flt-pool", &["VIRTUP-flt-tp"], &with_filler, &none);
    assert!(l.is_empty(), "a failed clone leaves: {l:?}");
    pool.unfill();
    let (_, took) = converge(&sb, "virtup_instance", &inst);
    println!(
        "faults: full pool, full clone converged in {:.1}s once there was room",
        took.as_secs_f64()
    );
    let mut all = tvols.clone();
    all.extend(instance_volumes("flt-fp"));
    let l = leaks(&sb, "flt-pool", &["VIRTUP-flt-tp", "flt-fp"], &all, &none);
    assert!(l.is_empty(), "{l:?}");
    println!("faults: full pool: 2 trials (template build, full clone), 2 failed saying so, 2 recovered, 0 leaks");
}
