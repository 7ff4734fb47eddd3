//! virt-up 2.2.0 itself (from PyPI, in a throwaway venv) writes its config with `init`; `virt-up --show-templates`
//! and `--show-paths` read those files and print what virt-up 2.2.0's `show templates` / `show paths` print.
//!
//! PyPI is needed once: the wheels are kept in cargo's target tmp dir
//! (`virt-up-2.2.0-wheels`), so later runs, also inside the lab's network namespace (which has no
//! route to PyPI), install offline from there. Nothing is skipped: without PyPI and without the
//! wheels the test fails, saying how to get them.

// These tests check the built binaries' process-level behaviour (exit code, raw stdout and stderr,
// stdin pipes) with std's `Command`, independently of `virtup_guest::Cmd`, which the binaries use.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VIRT_UP: &str = "virt-up==2.2.0";

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within `limit`; its output.
fn run(cmd: &mut Command, limit: Duration) -> Out {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{cmd:?} did not finish within {limit:?}:\n{}\n{}",
                t_out.join().unwrap(),
                t_err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Out {
        ok: status.success(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn run_ok(cmd: &mut Command, limit: Duration, what: &str) -> Out {
    let out = run(cmd, limit);
    assert!(
        out.ok,
        "{what} failed:\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout, out.stderr
    );
    out
}

fn has_virt_up_wheel(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("virt_up-2.2.0-")
        })
    })
}

/// The wheels of virt-up 2.2.0 and its dependencies (libvirt-python is built here once).
fn wheelhouse(pip: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("virt-up-2.2.0-wheels");
    if has_virt_up_wheel(&dir) {
        return dir;
    }
    // Built aside and renamed, so a concurrent run never sees half a wheelhouse.
    let part = tempfile::Builder::new()
        .prefix("virt-up-wheels-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let out = run(
        Command::new(pip)
            .args(["wheel", "--quiet", "--wheel-dir"])
            .arg(part.path())
            .arg(VIRT_UP),
        Duration::from_secs(900),
    );
    assert!(
        out.ok,
        "cannot get {VIRT_UP} from PyPI ({}): this test needs PyPI once, to fill {}; \
         run `cargo nextest run -p virtup-cli --test cli_virt_up_compat` outside the lab's network namespace first\n{}",
        out.stderr.lines().last().unwrap_or_default(),
        dir.display(),
        out.stderr
    );
    let part = part.keep();
    if std::fs::rename(&part, &dir).is_err() {
        // Another run got there first; its wheelhouse is as good.
        std::fs::remove_dir_all(&part).ok();
    }
    assert!(
        has_virt_up_wheel(&dir),
        "no virt-up wheel in {}",
        dir.display()
    );
    dir
}

/// A throwaway venv with virt-up 2.2.0 installed.
struct VirtUp222 {
    root: tempfile::TempDir,
}

impl VirtUp222 {
    fn install() -> VirtUp222 {
        let root = tempfile::tempdir().unwrap();
        let venv = root.path().join("venv");
        run_ok(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            Duration::from_secs(300),
            "python3 -m venv",
        );
        let pip = venv.join("bin/pip");
        let wheels = wheelhouse(&pip);
        run_ok(
            Command::new(&pip)
                .args(["install", "--quiet", "--no-index", "--find-links"])
                .arg(&wheels)
                .arg(VIRT_UP),
            Duration::from_secs(600),
            "pip install virt-up 2.2.0",
        );
        // virt-up resolves these tools when it is imported; where one is missing, a stub that
        // fails stands in (nothing here asks virt-up to run them).
        let stubs = root.path().join("stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        for tool in [
            "cp",
            "ssh",
            "sftp",
            "ssh-keygen",
            "qemu-img",
            "virt-builder",
            "virt-install",
            "virt-sysprep",
        ] {
            if !on_path(tool) {
                let p = stubs.join(tool);
                std::fs::write(
                    &p,
                    "#!/bin/sh\necho \"$0: stub for virt-up 2.2.0's import\" >&2\nexit 1\n",
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        std::fs::create_dir_all(root.path().join("home")).unwrap();
        VirtUp222 { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The environment both programs run in: HOME and XDG dirs inside the sandbox.
    fn env(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.path("stubs")];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).unwrap())
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env("XDG_DATA_HOME", self.path("xdg-data"))
            .env_remove("VIRTUP_CONFIG_HOME")
            .env_remove("VIRTUP_DATA_HOME")
            .env("LIBVIRT_DEFAULT_URI", "test:///default")
            .env_remove("RUST_BACKTRACE");
    }

    /// Runs virt-up 2.2.0's click CLI. Run as root, its `init config` writes `/etc/virt-up`;
    /// its uid check is answered as for a regular user so it writes to the sandbox instead.
    fn theirs(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(self.path("venv/bin/python"));
        cmd.args([
            "-c",
            "import os, sys; os.geteuid = lambda: 65534; sys.argv[0] = 'virt-up'; \
             from virt_up.cli import main; sys.exit(main())",
        ])
        .args(args);
        self.env(&mut cmd);
        run_ok(
            &mut cmd,
            Duration::from_secs(120),
            &format!("virt-up 2.2.0 {args:?}"),
        )
    }

    fn ours(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_virt-up"));
        cmd.args(args);
        self.env(&mut cmd);
        run(&mut cmd, Duration::from_secs(60))
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn config_written_by_virt_up_2_2_0_init_is_shown_as_virt_up_shows_it() {
    let vu = VirtUp222::install();
    vu.theirs(&[
        "init",
        "config",
        "--memory",
        "2048",
        "--address_source",
        "lease",
    ]);
    vu.theirs(&[
        "init",
        "template",
        "debian12",
        "--os-version",
        "debian-12",
        "--os-type",
        "linux",
        "--os-variant",
        "debian11",
        "--arch",
        "x86_64",
        "--desc",
        "Debian 12 (bookworm)",
        "--memory",
        "1024",
        "--image-format",
        "raw",
        "--user",
        "ansible",
    ]);
    let config_dir = vu.path("xdg-config/virt-up");
    assert!(config_dir.join("settings.cfg").is_file());
    assert!(config_dir.join("templates.d/debian12.cfg").is_file());

    // --show-templates: virt-up's own lines, each continued by virtup's source column.
    let theirs = vu.theirs(&["show", "templates"]).stdout;
    let ours = vu.ours(&["--show-templates"]);
    assert!(ours.ok, "{}\n{}", ours.stdout, ours.stderr);
    let their_lines: Vec<&str> = theirs.lines().collect();
    let our_lines: Vec<&str> = ours.stdout.lines().collect();
    assert!(
        their_lines.len() > 8,
        "virt-up 2.2.0 shows its shipped templates: {theirs}"
    );
    assert_eq!(
        their_lines.len(),
        our_lines.len(),
        "\n--- virt-up 2.2.0\n{theirs}--- virtup\n{}",
        ours.stdout
    );
    assert!(our_lines[0].starts_with(their_lines[0]));
    for line in &their_lines[1..] {
        assert!(
            our_lines.iter().any(|o| o.starts_with(line.trim_end())),
            "virt-up 2.2.0's line {line:?} is not in ours:\n{}",
            ours.stdout
        );
    }
    let debian12 = our_lines
        .iter()
        .find(|l| l.starts_with("debian12 "))
        .expect("debian12 listed");
    assert!(
        debian12.contains("Debian 12 (bookworm)") && debian12.ends_with("os-version:debian-12"),
        "{debian12}"
    );

    // --show-paths: virt-up's five lines, verbatim.
    let theirs = vu.theirs(&["show", "paths"]).stdout;
    let ours = vu.ours(&["--show-paths"]);
    assert!(ours.ok, "{}", ours.stderr);
    let n = theirs.lines().count();
    assert_eq!(n, 5, "{theirs}");
    assert_eq!(
        ours.stdout.lines().take(n).collect::<Vec<_>>(),
        theirs.lines().collect::<Vec<_>>()
    );

    // Our --init does not clobber what virt-up wrote.
    let before = std::fs::read_to_string(config_dir.join("settings.cfg")).unwrap();
    let init = vu.ours(&["--init"]);
    assert!(!init.ok, "{}", init.stdout);
    assert!(
        init.stderr.contains("settings.cfg` exists"),
        "{}",
        init.stderr
    );
    assert_eq!(
        std::fs::read_to_string(config_dir.join("settings.cfg")).unwrap(),
        before
    );
}
