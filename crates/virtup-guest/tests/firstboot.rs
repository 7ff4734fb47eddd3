//! The first-boot script: syntax, shellcheck, and real runs against a fake root with stub commands.
//!
//! The script is run with `VIRTUP_ROOT` (act below a directory) and `VIRTUP_CONFIG_DIR` (read a
//! staged config instead of mounting a disk); commands that would touch this machine (hostname,
//! useradd, chown, chpasswd, mount…) are stubs that log their calls. When the tests run as root the
//! script runs as `nobody` too, so a path that escaped the fake root would fail instead of
//! changing this host.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtup_guest::config_disk::{self, ConfigDiskKind};
use virtup_guest::{firstboot, Cmd, HostKey, Identity, PrivateKey};

#[test]
fn script_parses_in_posix_shells() {
    for shell in ["sh", "dash", "bash"] {
        Cmd::new(shell)
            .args(["-n", "-c", firstboot::SCRIPT])
            .run()
            .unwrap_or_else(|e| panic!("{shell}: {e}"));
    }
}

#[test]
fn script_passes_shellcheck() {
    assert!(
        virtup_guest::find_program("shellcheck").is_some(),
        "shellcheck is not installed (apt-get install shellcheck): the first-boot script cannot be linted"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("firstboot");
    fs::write(&script, firstboot::SCRIPT).unwrap();
    Cmd::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .arg(&script)
        .run()
        .unwrap();
}

const HOST_KEY: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nbmV3IGtleQ==\n-----END OPENSSH PRIVATE KEY-----\n";
const ROOT_HASH: &str = "$6$saltsaltsalt$rootHASH./abc";
const USER_HASH: &str = "$6$rounds=6000$pepper$userHASH";

fn identity(user: &str) -> Identity {
    Identity {
        hostname: "web1".into(),
        fqdn: Some("web1.lab.test".into()),
        machine_id: "00112233445566778899aabbccddeeff".into(),
        host_keys: vec![HostKey {
            algorithm: "ed25519".into(),
            private_key: PrivateKey::Bytes(HOST_KEY.into()),
            public_key: "ssh-ed25519 AAAAnew root@web1".into(),
        }],
        user: user.into(),
        authorized_keys: vec![
            "ssh-ed25519 AAAAone a@host".into(),
            "ssh-ed25519 AAAAtwo b@host".into(),
        ],
        root_password_hash: Some(ROOT_HASH.into()),
        user_password_hash: Some(USER_HASH.into()),
        grow_root: false,
        filesystems: Vec::new(),
        static_ipv4: None,
        cloud_init: None,
    }
}

/// A fake guest root, a staged config, stub commands, and the script, all under one directory.
struct Guest {
    dir: tempfile::TempDir,
}

const STUB_LOGGING: &str = r#"#!/bin/sh
printf '%s' "${0##*/}" >>"$STUB_LOG"
for a in "$@"; do printf ' %s' "$a" >>"$STUB_LOG"; done
printf '\n' >>"$STUB_LOG"
"#;

impl Guest {
    fn new(identity: &Identity) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let guest = Guest { dir };
        let root = guest.root();
        for d in [
            "etc/ssh",
            "etc/sudoers.d",
            "var/lib/dbus",
            "home/virt",
            "run",
            "dev",
            "stubs",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(
            root.join("etc/hosts"),
            "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n::1\tlocalhost ip6-localhost\n",
        )
        .unwrap();
        fs::write(root.join("etc/hostname"), "template\n").unwrap();
        fs::write(root.join("etc/machine-id"), "").unwrap();
        fs::write(
            root.join("var/lib/dbus/machine-id"),
            "ffffffffffffffffffffffffffffffff\n",
        )
        .unwrap();
        fs::write(root.join("etc/ssh/sshd_config"), "# keep me\n").unwrap();
        for old in [
            "ssh_host_rsa_key",
            "ssh_host_rsa_key.pub",
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
        ] {
            fs::write(root.join("etc/ssh").join(old), "template key\n").unwrap();
        }
        let staged =
            config_disk::stage(identity, ConfigDiskKind::Virtup, guest.dir.path()).unwrap();
        // Keep the staged files: the StagedConfig would remove them on drop.
        copy_dir(staged.path(), &guest.config());
        drop(staged);
        fs::write(guest.dir.path().join("firstboot"), firstboot::SCRIPT).unwrap();

        let stubs = root.join("stubs");
        for logging in ["hostname", "useradd", "chown"] {
            stub(&stubs, logging, STUB_LOGGING);
        }
        stub(
            &stubs,
            "chpasswd",
            &format!("{STUB_LOGGING}cat >>\"$STUB_LOG\"\n"),
        );
        // Users exist when they are `virt`, or once the useradd stub ran for them.
        stub(
            &stubs,
            "getent",
            r#"#!/bin/sh
[ "$1" = passwd ] || exit 2
if [ "$2" = virt ] || grep -qx "useradd --create-home --shell /bin/bash $2" "$STUB_LOG" 2>/dev/null; then
    printf '%s:x:1000:1000::/home/%s:/bin/bash\n' "$2" "$2"
    exit 0
fi
exit 2
"#,
        );
        // udev is idle: its queue is empty, so a missing disk is given up on without waiting.
        stub(&stubs, "udevadm", STUB_LOGGING);
        for forbidden in ["mount", "umount", "mountpoint", "blkid", "sleep"] {
            stub(
                &stubs,
                forbidden,
                &format!("{STUB_LOGGING}echo 'UNEXPECTED {forbidden}' >>\"$STUB_LOG\"\nexit 1\n"),
            );
        }
        guest
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn mode(&self, path: &str) -> u32 {
        fs::symlink_metadata(self.root().join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stub.log")).unwrap_or_default()
    }

    /// Runs the script (as nobody when we are root) with `extra` env; returns (success, stderr).
    fn run(&self, config_dir: Option<&Path>, extra: &[(&str, &str)]) -> (bool, String) {
        run_script(self.dir.path(), config_dir, extra)
    }
}

/// The command line and environment of a script run on the guest directory `dir`: as nobody when
/// we are root (after handing it the directory), with the stubs first on PATH and `extra` env.
fn script_invocation(
    dir: &Path,
    config_dir: Option<&Path>,
    extra: &[(&str, &str)],
) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
    let root = dir.join("root");
    let as_root = Cmd::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut argv: Vec<OsString> = Vec::new();
    if as_root {
        Cmd::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir)
            .run()
            .unwrap();
        argv.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(OsString::from),
        );
    }
    argv.push("sh".into());
    argv.push(dir.join("firstboot").into());
    let mut env: Vec<(OsString, OsString)> = vec![
        (
            "PATH".into(),
            format!("{}:/usr/bin:/bin", root.join("stubs").display()).into(),
        ),
        ("STUB_LOG".into(), dir.join("stub.log").into()),
        ("VIRTUP_ROOT".into(), root.into()),
    ];
    if let Some(config_dir) = config_dir {
        env.push(("VIRTUP_CONFIG_DIR".into(), config_dir.into()));
    }
    for (k, v) in extra {
        env.push((k.into(), v.into()));
    }
    (argv, env)
}

/// [`Guest::run`] on the guest directory `dir`: runs the script to its end.
fn run_script(dir: &Path, config_dir: Option<&Path>, extra: &[(&str, &str)]) -> (bool, String) {
    let (argv, env) = script_invocation(dir, config_dir, extra);
    let mut cmd = Cmd::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear_except(&[]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output_unchecked().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The script running in the background (a seed that waits), killed when dropped: a failed
/// assertion then neither leaves a seed waiting forever nor makes the test wait for it.
struct Running {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Running {
    /// Starts the script as [`run_script`] runs it, its stderr going to a file beside the guest
    /// (a file, not a pipe: nobody has to drain it while the test looks at the port).
    // `Cmd` only runs a program to its end; this test must act while the script runs, and own the
    // child to kill it.
    #[allow(clippy::disallowed_types)]
    fn start(dir: &Path, extra: &[(&str, &str)]) -> Running {
        let (argv, env) = script_invocation(dir, None, extra);
        let stderr = dir.join("stderr");
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running { child, stderr }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the script to end; returns (success, stderr).
    fn finish(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the script did not end within {limit:?}: {}",
                fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
        (status.success(), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Both fail harmlessly once the child has been waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stub(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn applies_a_full_identity() {
    let guest = Guest::new(&identity("virt"));
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "script failed: {stderr}\nlog: {}", guest.log());

    assert_eq!(guest.read("etc/hostname"), "web1\n");
    assert_eq!(
        guest.read("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tweb1.lab.test web1\n::1\tlocalhost ip6-localhost\n"
    );
    assert_eq!(
        guest.read("etc/machine-id"),
        "00112233445566778899aabbccddeeff\n"
    );
    assert_eq!(guest.mode("etc/machine-id"), 0o444);
    assert_eq!(
        guest.read("var/lib/dbus/machine-id"),
        "00112233445566778899aabbccddeeff\n"
    );

    let mut ssh: Vec<String> = fs::read_dir(guest.root().join("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ssh.sort();
    assert_eq!(
        ssh,
        [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "sshd_config"
        ]
    );
    assert_eq!(guest.read("etc/ssh/ssh_host_ed25519_key"), HOST_KEY);
    assert_eq!(guest.mode("etc/ssh/ssh_host_ed25519_key"), 0o600);
    assert_eq!(
        guest.read("etc/ssh/ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAAnew root@web1\n"
    );
    assert_eq!(guest.mode("etc/ssh/ssh_host_ed25519_key.pub"), 0o644);
    assert_eq!(guest.read("etc/ssh/sshd_config"), "# keep me\n");

    assert_eq!(
        guest.read("home/virt/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAone a@host\nssh-ed25519 AAAAtwo b@host\n"
    );
    assert_eq!(guest.mode("home/virt/.ssh"), 0o700);
    assert_eq!(guest.mode("home/virt/.ssh/authorized_keys"), 0o600);
    assert_eq!(
        guest.read("etc/sudoers.d/virtup-virt"),
        "virt ALL=(ALL) NOPASSWD:ALL\n"
    );
    assert_eq!(guest.mode("etc/sudoers.d/virtup-virt"), 0o440);
    assert!(guest.root().join("var/lib/virtup/firstboot.done").is_file());
    assert_eq!(guest.mode("var/lib/virtup"), 0o755);
    // The host's random bytes reach the kernel's pool (here a file, since /dev is the fake root's).
    let seed = fs::read(guest.config().join("random-seed")).unwrap();
    assert_eq!(seed.len(), 64);
    assert_eq!(fs::read(guest.root().join("dev/urandom")).unwrap(), seed);

    let root = guest.root();
    let log = guest.log();
    let want = format!(
        "hostname web1\n\
         chown 1000:1000 {home}/.ssh {home}/.ssh/authorized_keys\n\
         chpasswd -e\n\
         root:{ROOT_HASH}\n\
         virt:{USER_HASH}\n",
        home = root.join("home/virt").display()
    );
    assert_eq!(log, want);

    // Nothing secret on stderr (the journal), and no temp files left beside what was written.
    assert!(
        !stderr.contains("saltsalt") && !stderr.contains("bmV3IGtleQ"),
        "{stderr}"
    );
    assert!(stderr.contains("virtup-firstboot: done"), "{stderr}");
    for dir in ["etc", "etc/ssh", "home/virt/.ssh"] {
        for entry in fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(".virtup."), "leftover {dir}/{name}");
        }
    }
}

#[test]
fn creates_a_missing_user() {
    let guest = Guest::new(&identity("alice"));
    fs::create_dir_all(guest.root().join("home/alice")).unwrap();
    let (ok, stderr) = guest.run(Some(&guest.config()), &[("VIRTUP_OFFLINE", "1")]);
    assert!(ok, "script failed: {stderr}\nlog: {}", guest.log());
    let log = guest.log();
    assert!(
        log.starts_with("useradd --create-home --shell /bin/bash alice\n"),
        "{log}"
    );
    // Offline (virt-sysprep's chroot): the running system's hostname is left alone.
    assert!(!log.contains("hostname"), "{log}");
    assert_eq!(
        guest.read("etc/sudoers.d/virtup-alice"),
        "alice ALL=(ALL) NOPASSWD:ALL\n"
    );
    assert!(guest
        .root()
        .join("home/alice/.ssh/authorized_keys")
        .is_file());
}

#[test]
fn without_a_config_disk_nothing_changes() {
    let guest = Guest::new(&identity("virt"));
    // No VIRTUP_CONFIG_DIR: it looks for the disk (stub blkid finds nothing) and gives up at once.
    let sysfs = guest.dir.path().join("sys");
    fs::create_dir_all(sysfs.join("block/vda")).unwrap();
    fs::write(sysfs.join("block/vda/serial"), "\n").unwrap();
    let sysfs = sysfs.to_str().unwrap();
    let (ok, stderr) = guest.run(None, &[("VIRTUP_WAIT", "0"), ("VIRTUP_SYSFS", sysfs)]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no disk labelled VIRTUPCFG"), "{stderr}");
    assert_eq!(guest.read("etc/hostname"), "template\n");
    assert!(!guest.root().join("var/lib/virtup/firstboot.done").exists());
    let log = guest.log();
    assert!(!log.contains("mount"), "{log}");
    assert!(
        log.contains("udevadm settle --timeout=0"),
        "asked udev once: {log}"
    );
    assert!(
        !log.contains("UNEXPECTED sleep"),
        "gave up without sleeping: {log}"
    );
}

#[test]
fn a_udev_that_never_goes_idle_does_not_hold_the_boot() {
    let guest = Guest::new(&identity("virt"));
    // udev's queue never empties (settle --timeout=0 fails): only WAIT_MAX ends the search.
    stub(
        &guest.root().join("stubs"),
        "udevadm",
        &format!("{STUB_LOGGING}exit 1\n"),
    );
    let started = std::time::Instant::now();
    let (ok, stderr) = guest.run(None, &[("VIRTUP_WAIT", "0"), ("VIRTUP_WAIT_MAX", "2")]);
    let took = started.elapsed();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no disk labelled VIRTUPCFG"), "{stderr}");
    // The busy queue kept it looking (WAIT 0 alone would have ended at once), and the cap ended it.
    assert!(took >= std::time::Duration::from_secs(1), "{took:?}");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    assert!(guest.log().matches("udevadm settle --timeout=0").count() > 1);
    assert!(!guest.root().join("var/lib/virtup/firstboot.done").exists());
}

#[test]
fn the_config_disk_is_found_by_its_serial_without_probing() {
    let guest = Guest::new(&identity("virt"));
    let sysfs = guest.dir.path().join("sys");
    for (disk, serial) in [("vda", ""), ("vdb", "VIRTUPCFG")] {
        fs::create_dir_all(sysfs.join("block").join(disk)).unwrap();
        fs::write(
            sysfs.join("block").join(disk).join("serial"),
            format!("{serial}\n"),
        )
        .unwrap();
    }
    let sysfs = sysfs.to_str().unwrap();
    // The mount stub fails, which shows which device the script chose, before anything changed.
    let (ok, stderr) = guest.run(None, &[("VIRTUP_SYSFS", sysfs)]);
    assert!(!ok);
    assert!(stderr.contains("cannot mount /dev/vdb"), "{stderr}");
    let log = guest.log();
    assert!(
        !log.contains("blkid") && !log.contains("udevadm"),
        "no probing, no waiting: {log}"
    );
    assert_eq!(guest.read("etc/hostname"), "template\n");
    assert!(!guest.root().join("var/lib/virtup/firstboot.done").exists());
}

#[test]
fn refuses_bad_config_before_marking_done() {
    let cases: [(&str, &str, &str); 6] = [
        ("format", "virtup-config 2\n", "unknown config format"),
        ("hostname", "web1;reboot\n", "invalid hostname"),
        ("user", "root\n", "invalid user name"),
        ("shadow", "daemon:$6$x$y\n", "unexpected account 'daemon'"),
        // A last line without a newline is never read by the checking loop, but chpasswd would read it.
        (
            "shadow",
            "root:$6$x$y\ndaemon:$6$x$y",
            "shadow does not end with a newline",
        ),
        (
            "shadow",
            "virt:plain-text",
            "shadow does not end with a newline",
        ),
    ];
    for (file, content, want) in cases {
        let guest = Guest::new(&identity("virt"));
        fs::write(guest.config().join(file), content).unwrap();
        let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
        assert!(!ok, "{file}: should fail");
        assert!(stderr.contains(want), "{file}: {stderr}");
        assert!(
            !guest.root().join("var/lib/virtup/firstboot.done").exists(),
            "{file}"
        );
        assert!(!guest.log().contains("chpasswd"), "{file}: {}", guest.log());
        // The error is a note for the SSH proof (sshd may start with the keys made so far).
        let notes =
            fs::read_to_string(guest.root().join("run/virtup-firstboot.notes")).unwrap_or_default();
        let read = virtup_guest::ssh::notes(notes.as_bytes());
        assert!(
            read.len() == 1 && read[0].starts_with("error: ") && read[0].contains(want),
            "{file}: {notes}"
        );
        assert!(!notes.contains("$6$"), "{file}: no hash is a note: {notes}");
    }
}

/// Stubs for a run that finds its config disk in a fake /sys: `mount` copies the staged config
/// (`CONFIG_SRC`) to the mount point, `umount` and `systemctl` are logged, and so is every `date`,
/// of which one that sets the clock does nothing more, `date +%s` reads `DATE_NOW` when that is set,
/// and any other is the real date's. Sleeping is real: a seed waits in steps.
fn disk_stubs(guest: &Guest) {
    let stubs = guest.root().join("stubs");
    fs::remove_file(stubs.join("sleep")).unwrap();
    std::os::unix::fs::symlink(
        virtup_guest::find_program("sleep").unwrap(),
        stubs.join("sleep"),
    )
    .unwrap();
    stub(
        &stubs,
        "mount",
        &format!("{STUB_LOGGING}for last; do :; done\ncp \"$CONFIG_SRC\"/* \"$last\"/\n"),
    );
    stub(&stubs, "umount", STUB_LOGGING);
    stub(&stubs, "systemctl", STUB_LOGGING);
    // The reseed: perl issues the ioctl (a real one would fail on the fake root's regular file).
    stub(&stubs, "perl", STUB_LOGGING);
    // No disk by label either while a seed waits (the fallback after /sys).
    stub(&stubs, "blkid", "#!/bin/sh\nexit 2\n");
    stub(
        &stubs,
        "date",
        &format!(
            "{STUB_LOGGING}if [ \"$*\" = +%s ] && [ -n \"${{DATE_NOW:-}}\" ]; then\n    \
             printf '%s\\n' \"$DATE_NOW\"\n    exit 0\nfi\n\
             case \" $* \" in *' -s '*) ;; *) exec {} \"$@\" ;; esac\n",
            virtup_guest::find_program("date").unwrap().display()
        ),
    );
}

/// Runs the script in `guest` with a fake /sys of SMBIOS family `family` and RTC `rtc` (see
/// [`fake_sysfs`]) whose config disk is there at once (a seed neither waits nor opens its port),
/// `date +%s` reading `now`.
fn run_with_disk_at_once(
    guest: &Guest,
    family: &str,
    rtc: Option<&str>,
    now: &str,
) -> (bool, String) {
    let sysfs = fake_sysfs(guest, family, rtc);
    plug_config_disk(&sysfs);
    let config_src = guest.config();
    guest.run(
        None,
        &[
            ("VIRTUP_SYSFS", sysfs.to_str().unwrap()),
            ("CONFIG_SRC", config_src.to_str().unwrap()),
            ("DATE_NOW", now),
        ],
    )
}

/// A fake /sys: SMBIOS family `family`, a guest agent port and the seed's port (`vport0p2`), an RTC
/// reading `rtc` (none at all when `None`), and a system disk without a serial.
fn fake_sysfs(guest: &Guest, family: &str, rtc: Option<&str>) -> PathBuf {
    let sysfs = guest.dir.path().join("sys");
    fs::create_dir_all(sysfs.join("class/dmi/id")).unwrap();
    fs::write(
        sysfs.join("class/dmi/id/product_family"),
        format!("{family}\n"),
    )
    .unwrap();
    for (port, name) in [
        ("vport0p1", "org.qemu.guest_agent.0"),
        ("vport0p2", "dev.virtup.seed"),
    ] {
        let dir = sysfs.join("class/virtio-ports").join(port);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    }
    fs::create_dir_all(sysfs.join("class/rtc/rtc0")).unwrap();
    if let Some(rtc) = rtc {
        fs::write(sysfs.join("class/rtc/rtc0/since_epoch"), rtc).unwrap();
    }
    fs::create_dir_all(sysfs.join("block/vda")).unwrap();
    fs::write(sysfs.join("block/vda/serial"), "\n").unwrap();
    sysfs
}

/// Plugs the config disk `vdb` into the fake /sys: its directory is made aside, serial included,
/// then renamed into place, so a script looking meanwhile sees the whole disk or none of it.
fn plug_config_disk(sysfs: &Path) {
    let aside = sysfs.join("vdb.plugging");
    fs::create_dir(&aside).unwrap();
    fs::write(aside.join("serial"), "VIRTUPCFG\n").unwrap();
    fs::rename(&aside, sysfs.join("block/vdb")).unwrap();
}

/// The identity of [`identity`] is in place and the script marked itself done.
fn assert_identity_applied(guest: &Guest, what: &str) {
    assert_eq!(guest.read("etc/hostname"), "web1\n", "{what}");
    assert_eq!(
        guest.read("etc/machine-id"),
        "00112233445566778899aabbccddeeff\n",
        "{what}"
    );
    assert_eq!(
        guest.read("etc/ssh/ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAAnew root@web1\n",
        "{what}"
    );
    assert!(
        guest
            .root()
            .join("home/virt/.ssh/authorized_keys")
            .is_file(),
        "{what}"
    );
    assert!(
        guest.root().join("var/lib/virtup/firstboot.done").is_file(),
        "{what}"
    );
}

/// The `date` calls of the stub log other than the one that stamps the done file.
fn clock_calls(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.starts_with("date") && *l != "date -u +%Y-%m-%dT%H:%M:%SZ")
        .collect()
}

/// A seed (SMBIOS family virtup-seed) waits for its config disk with no deadline, holding its
/// virtio port open so that the host knows when to save it; a clone resumed from it gets the disk
/// hot-plugged, sets the clock forward from the RTC before anything else, applies the identity,
/// restarts journald, and closes the port, which tells the host that the first boot is over.
#[test]
fn a_seed_waits_holding_its_port_then_applies_the_identity() {
    use std::io::Read;
    let guest = Guest::new(&identity("virt"));
    disk_stubs(&guest);
    let sysfs = fake_sysfs(&guest, "virtup-seed", Some("1800000000\n"));
    // The port is a FIFO: opening it for reading returns once the script opened it for writing,
    // and reading reaches end-of-file only once the script (every holder) closed it.
    let port = guest.root().join("dev/vport0p2");
    Cmd::new("mkfifo").arg(&port).run().unwrap();

    // Opened before the script runs, without blocking: a read then says "end of file" while no
    // writer holds the FIFO and "would block" while one does.
    let fifo = fs::File::from(
        rustix::fs::open(
            &port,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .unwrap(),
    );
    let held = |fifo: &fs::File| {
        let mut byte = [0u8; 1];
        match (&*fifo).read(&mut byte) {
            Ok(0) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            other => panic!("unexpected read from the port: {other:?}"),
        }
    };
    let wait_until = |what: &str, want: bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while held(&fifo) != want {
            assert!(Instant::now() < deadline, "{what}: not within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let config_src = guest.config();
    let mut script = Running::start(
        guest.dir.path(),
        &[
            ("VIRTUP_SYSFS", sysfs.to_str().unwrap()),
            ("CONFIG_SRC", config_src.to_str().unwrap()),
            // Before the RTC's time: the clock is to be moved forward.
            ("DATE_NOW", "1700000000"),
            // Were it not a seed, it would give up at once.
            ("VIRTUP_WAIT", "0"),
            ("VIRTUP_WAIT_MAX", "0"),
        ],
    );
    wait_until("the seed opens its port", true);
    // Waiting, well past WAIT_MAX: nothing applied yet.
    std::thread::sleep(Duration::from_secs(2));
    assert!(script.is_running(), "the seed stopped waiting");
    assert!(held(&fifo), "the seed let go of its port while waiting");
    assert_eq!(guest.read("etc/hostname"), "template\n");
    assert!(clock_calls(&guest.log()).is_empty(), "{}", guest.log());

    // The clone's config disk arrives.
    plug_config_disk(&sysfs);
    wait_until("the port is closed once the identity is applied", false);
    let (ok, stderr) = script.finish(Duration::from_secs(30));
    assert!(ok, "script failed: {stderr}\nlog: {}", guest.log());
    assert!(
        stderr.contains("seed: ready to be saved (holding"),
        "{stderr}"
    );
    assert!(
        stderr.contains("clock set forward from the RTC (1700000000 -> 1800000000)"),
        "{stderr}"
    );
    assert_identity_applied(&guest, "resumed seed");
    let log = guest.log();
    assert_eq!(
        clock_calls(&log),
        ["date +%s", "date -u -s @1800000000.5"],
        "{log}"
    );
    // The clock before the disk is even mounted, so before any identity file is written.
    let at = |what: &str| log.find(what).unwrap_or_else(|| panic!("{what}: {log}"));
    assert!(at("date -u -s @") < at("mount "), "{log}");
    assert!(at("mount ") < at("hostname web1"), "{log}");
    // The kernel's RNG is reseeded (after the host's bytes) before any identity is written.
    assert!(at("random-seed\n") < at("hostname web1"), "{log}");
    assert!(log.contains("dev/urandom "), "{log}");
    assert!(
        log.contains("systemctl restart systemd-journald.service\n"),
        "{log}"
    );
    assert!(!log.contains("UNEXPECTED"), "{log}");
}

/// A seed whose port cannot be opened keeps waiting (a failed `exec 3>` would end a POSIX shell
/// without a word), says so once rather than five times a second, and still applies the identity
/// when its disk comes.
#[test]
fn a_seed_that_cannot_open_its_port_says_so_once_and_goes_on() {
    let guest = Guest::new(&identity("virt"));
    disk_stubs(&guest);
    let sysfs = fake_sysfs(&guest, "virtup-seed", Some("1800000000\n"));
    // A FIFO nobody may open (the script runs as its owner, never as root): the open fails at once.
    let port = guest.root().join("dev/vport0p2");
    Cmd::new("mkfifo")
        .args(["-m", "000"])
        .arg(&port)
        .run()
        .unwrap();
    let config_src = guest.config();
    let mut script = Running::start(
        guest.dir.path(),
        &[
            ("VIRTUP_SYSFS", sysfs.to_str().unwrap()),
            ("CONFIG_SRC", config_src.to_str().unwrap()),
            ("DATE_NOW", "1700000000"),
            ("VIRTUP_WAIT", "0"),
            ("VIRTUP_WAIT_MAX", "0"),
        ],
    );
    let stderr_file = guest.dir.path().join("stderr");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&stderr_file)
        .unwrap_or_default()
        .contains("seed: cannot open")
    {
        assert!(script.is_running(), "the seed ended: {}", guest.log());
        assert!(Instant::now() < deadline, "no word of the port in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Many more tries (every 0.2 s) while it waits on.
    std::thread::sleep(Duration::from_secs(1));
    assert!(script.is_running(), "the seed stopped waiting");

    plug_config_disk(&sysfs);
    let (ok, stderr) = script.finish(Duration::from_secs(60));
    assert!(ok, "script failed: {stderr}\nlog: {}", guest.log());
    assert_eq!(
        stderr.matches("seed: cannot open").count(),
        1,
        "logged once: {stderr}"
    );
    assert!(!stderr.contains("ready to be saved"), "{stderr}");
    assert_identity_applied(&guest, "seed without its port");
}

/// A seed whose RTC is missing or reads no time still gets its whole identity and marks itself
/// done: the clock is only logged as not set (it used to end the script half way).
#[test]
fn a_seed_without_a_usable_rtc_still_applies_its_identity() {
    let cases: [(&str, Option<&str>); 5] = [
        ("no RTC", None),
        ("garbage", Some("garbage\n")),
        ("empty", Some("")),
        ("digits and more", Some("1800000000x\n")),
        ("too many digits", Some("180000000000000000000000\n")),
    ];
    for (what, rtc) in cases {
        let guest = Guest::new(&identity("virt"));
        disk_stubs(&guest);
        let (ok, stderr) = run_with_disk_at_once(&guest, "virtup-seed", rtc, "1700000000");
        assert!(ok, "{what}: script failed: {stderr}\nlog: {}", guest.log());
        assert!(
            stderr.contains("clock not set: no time in"),
            "{what}: {stderr}"
        );
        assert_identity_applied(&guest, what);
        let log = guest.log();
        assert!(!log.contains(" -s "), "{what}: {log}");
        assert!(
            log.contains("systemctl restart systemd-journald.service\n"),
            "{what}: {log}"
        );
    }
}

/// A resumed seed whose kernel cannot be made to reseed stops before its host keys are in place:
/// its SSH never answers with the pinned key, so virtup never calls a clone with a shared RNG running.
#[test]
fn a_resumed_seed_that_cannot_reseed_stops_before_its_host_keys() {
    let guest = Guest::new(&identity("virt"));
    disk_stubs(&guest);
    let stubs = guest.root().join("stubs");
    // The seed's own check (no file) passes; the reseed with the host's bytes fails.
    stub(
        &stubs,
        "perl",
        &format!("{STUB_LOGGING}case \"$*\" in *random-seed*) exit 1 ;; esac\n"),
    );
    let (ok, stderr) =
        run_with_disk_at_once(&guest, "virtup-seed", Some("1800000000\n"), "1700000000");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("error: cannot make the kernel reseed"),
        "{stderr}"
    );
    let key = fs::read_to_string(guest.root().join("etc/ssh/ssh_host_ed25519_key.pub"));
    assert!(
        !key.as_deref().unwrap_or_default().contains("AAAAnew"),
        "the pinned host key is in place: {key:?}"
    );
    assert_ne!(guest.read("etc/hostname"), "web1\n");
    assert!(!guest.root().join("var/lib/virtup/firstboot.done").exists());
}

/// A seed's clock only ever moves forward: an RTC behind the system clock, or level with it, is
/// left unused.
#[test]
fn a_seed_never_moves_the_clock_backward() {
    for rtc in ["1799999999", "1800000000"] {
        let guest = Guest::new(&identity("virt"));
        disk_stubs(&guest);
        let (ok, stderr) = run_with_disk_at_once(
            &guest,
            "virtup-seed",
            Some(&format!("{rtc}\n")),
            "1800000000",
        );
        assert!(ok, "{rtc}: script failed: {stderr}\nlog: {}", guest.log());
        assert!(
            stderr.contains(&format!(
                "clock not set: the RTC ({rtc}) is not ahead of the system clock (1800000000)"
            )),
            "{rtc}: {stderr}"
        );
        assert_eq!(clock_calls(&guest.log()), ["date +%s"], "{rtc}");
        assert_identity_applied(&guest, rtc);
    }
}

/// A machine that is no seed finds its disk in /sys too, and neither reads nor sets its clock nor
/// restarts journald, whatever its RTC says.
#[test]
fn a_clone_that_is_no_seed_leaves_the_clock_alone() {
    let guest = Guest::new(&identity("virt"));
    disk_stubs(&guest);
    let (ok, stderr) =
        run_with_disk_at_once(&guest, "virtup-clone", Some("1800000000\n"), "1700000000");
    assert!(ok, "script failed: {stderr}\nlog: {}", guest.log());
    assert_identity_applied(&guest, "no seed");
    let log = guest.log();
    // It went through the disk search: found by serial, mounted.
    assert!(log.contains("mount -t iso9660"), "{log}");
    assert!(clock_calls(&log).is_empty(), "{log}");
    assert!(!log.contains("systemctl"), "{log}");
    assert!(
        !stderr.contains("seed:") && !stderr.contains("clock"),
        "{stderr}"
    );
    assert!(!log.contains("UNEXPECTED"), "{log}");
}

/// A staged config (virt-sysprep's offline run, `VIRTUP_CONFIG_DIR`) is never a seed's: no clock,
/// no journald restart.
#[test]
fn a_staged_config_leaves_the_clock_alone() {
    let guest = Guest::new(&identity("virt"));
    stub(&guest.root().join("stubs"), "systemctl", STUB_LOGGING);
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "{stderr}");
    let log = guest.log();
    assert!(!log.contains("-s @") && !log.contains("systemctl"), "{log}");
}

/// A guest whose root is `/dev/vda1` (of type `fstype`) in a fake /proc and /sys, asked to grow
/// it; `tools` are the stubbed partitioning and filesystem tools it has (each logs its call, and
/// growpart and sfdisk make the partition larger in /sys). Btrfs shows an anonymous device in
/// mountinfo, as it does.
fn growing_guest(fstype: &str, tools: &[&str]) -> (Guest, PathBuf) {
    let mut id = identity("virt");
    id.grow_root = true;
    let guest = Guest::new(&id);
    let root = guest.root();
    let majmin = if fstype == "btrfs" { "0:33" } else { "254:1" };
    fs::create_dir_all(root.join("proc/self")).unwrap();
    fs::write(
        root.join("proc/self/mountinfo"),
        format!(
            "21 1 0:20 / /proc rw,nosuid - proc proc rw\n\
             27 1 {majmin} / / rw,relatime shared:1 - {fstype} /dev/vda1 rw\n\
             30 27 254:2 / /boot rw - ext4 /dev/vda2 rw\n"
        ),
    )
    .unwrap();
    let sysfs = guest.dir.path().join("sys");
    let vda1 = sysfs.join("devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda1");
    fs::create_dir_all(&vda1).unwrap();
    fs::write(vda1.join("partition"), "1\n").unwrap();
    fs::write(vda1.join("size"), "4194304\n").unwrap();
    fs::create_dir_all(sysfs.join("dev/block")).unwrap();
    std::os::unix::fs::symlink(&vda1, sysfs.join("dev/block/254:1")).unwrap();
    fs::create_dir_all(sysfs.join("class/block")).unwrap();
    std::os::unix::fs::symlink(&vda1, sysfs.join("class/block/vda1")).unwrap();
    let stubs = root.join("stubs");
    let grow = format!("echo 8388608 >'{}'\n", vda1.join("size").display());
    for tool in tools {
        match *tool {
            "growpart" | "sfdisk" => stub(&stubs, tool, &format!("{STUB_LOGGING}{grow}")),
            // A partitioning tool that finds no room: it changes nothing.
            "growpart-nochange" => stub(&stubs, "growpart", &format!("{STUB_LOGGING}exit 1\n")),
            _ => stub(&stubs, tool, STUB_LOGGING),
        }
    }
    (guest, sysfs)
}

fn run_growing(guest: &Guest, sysfs: &Path) -> (bool, String) {
    guest.run(
        Some(&guest.config()),
        &[("VIRTUP_SYSFS", sysfs.to_str().unwrap())],
    )
}

#[test]
fn a_larger_disk_grows_the_root_partition_then_its_filesystem() {
    // sfdisk (installed systems): the partition, then the kernel told, then ext4 grown online.
    let (guest, sysfs) = growing_guest("ext4", &["sfdisk", "partx", "resize2fs"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}\n{}", guest.log());
    let log = guest.log();
    let at = |what: &str| log.find(what).unwrap_or_else(|| panic!("{what}: {log}"));
    assert!(
        at("sfdisk --quiet --no-reread --no-tell-kernel -N 1 /dev/vda\n")
            < at("partx --update --nr 1 /dev/vda\n")
    );
    assert!(at("partx --update") < at("resize2fs /dev/vda1\n"));
    assert!(
        stderr.contains("root partition /dev/vda1 and its ext4 filesystem grown"),
        "{stderr}"
    );
    assert_identity_applied(&guest, "sfdisk");

    // growpart (cloud images) is preferred; xfs grows through its mount point.
    let (guest, sysfs) = growing_guest("xfs", &["growpart", "sfdisk", "partx", "xfs_growfs"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    let log = guest.log();
    assert!(log.contains("growpart /dev/vda 1\nxfs_growfs /\n"), "{log}");
    assert!(!log.contains("sfdisk"), "{log}");

    // Btrfs: found through its source, grown through its mount point.
    let (guest, sysfs) = growing_guest("btrfs", &["growpart", "btrfs"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    let log = guest.log();
    assert!(
        log.contains("growpart /dev/vda 1\nbtrfs filesystem resize max /\n"),
        "{log}"
    );
}

#[test]
fn a_root_that_cannot_grow_is_logged_and_the_clone_still_gets_its_identity() {
    // No partitioning tool at all (the lab's minimal image before fdisk): logged, identity applied.
    let (guest, sysfs) = growing_guest("ext4", &["resize2fs"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("neither growpart nor sfdisk is installed"),
        "{stderr}"
    );
    assert!(!guest.log().contains("resize2fs"), "{}", guest.log());
    assert_identity_applied(&guest, "no tool");

    // A filesystem it cannot grow: the partition is, the filesystem is said not to be.
    let (guest, sysfs) = growing_guest("zfs", &["growpart"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("/dev/vda1 grown, but not its zfs filesystem"),
        "{stderr}"
    );

    // No room after the partition (another one follows): nothing is said to be grown.
    let (guest, sysfs) = growing_guest("ext4", &["growpart-nochange", "resize2fs"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("no free space right after /dev/vda1"),
        "{stderr}"
    );
    assert!(!guest.log().contains("resize2fs"), "{}", guest.log());

    // Root not on a partition (LVM, a whole disk): left alone.
    let (guest, sysfs) = growing_guest("ext4", &["growpart", "resize2fs"]);
    fs::remove_file(sysfs.join("devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda1/partition"))
        .unwrap();
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("not on a disk partition"), "{stderr}");
    assert!(!guest.log().contains("growpart"), "{}", guest.log());

    // Offline (virt-sysprep's chroot) nothing is grown; without the request neither.
    let (guest, sysfs) = growing_guest("ext4", &["growpart", "resize2fs"]);
    let (ok, stderr) = guest.run(
        Some(&guest.config()),
        &[
            ("VIRTUP_SYSFS", sysfs.to_str().unwrap()),
            ("VIRTUP_OFFLINE", "1"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("growpart"), "{}", guest.log());
    let (guest, sysfs) = growing_guest("ext4", &["growpart", "resize2fs"]);
    fs::remove_file(guest.config().join("grow-root")).unwrap();
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("growpart"), "{}", guest.log());
    assert_identity_applied(&guest, "no request");
}

/// A guest with data disks `vdc` (serial virtup-data1) and `vdd` (virtup-data2) in a fake /sys, asked
/// to make ext4 on the first (mounted on /srv/data) and xfs on the second (not mounted); `blank` says
/// which disks `blkid -p` finds nothing on. mkfs, mount and udevadm are stubs that log their calls.
fn guest_with_data_disks(blank: &[&str], tools: &[&str]) -> (Guest, PathBuf) {
    use virtup_core::data_disk::Filesystem;
    let mut id = identity("virt");
    id.filesystems = vec![
        virtup_guest::DataFilesystem {
            serial: "virtup-data1".into(),
            filesystem: Filesystem::Ext4,
            mount: Some("/srv/data".into()),
        },
        virtup_guest::DataFilesystem {
            serial: "virtup-data2".into(),
            filesystem: Filesystem::Xfs,
            mount: None,
        },
    ];
    let guest = Guest::new(&id);
    let root = guest.root();
    let sysfs = guest.dir.path().join("sys");
    for (dev, serial) in [("vdc", "virtup-data1"), ("vdd", "virtup-data2")] {
        fs::create_dir_all(sysfs.join("block").join(dev)).unwrap();
        fs::write(sysfs.join("block").join(dev).join("serial"), serial).unwrap();
        // The script reads a sector before it trusts blkid's "nothing found".
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::write(root.join("dev").join(dev), vec![0u8; 512]).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/fstab"),
        // A line for this disk, as a first boot cut short after it would leave.
        "/dev/vda1\t/\text4\tdefaults\t0\t1\nUUID=1111-2222\t/srv/data\text4\tdefaults\t0\t2\n",
    )
    .unwrap();
    let stubs = root.join("stubs");
    // The device paths the script finds through the fake /sys are under the fake root.
    let blank_devs: Vec<String> = blank
        .iter()
        .map(|d| format!("{}/dev/{d}", root.display()))
        .collect();
    // `blkid -p DEV` finds nothing on a blank disk; on another, `-s TYPE` says ext4.
    stub(
        &stubs,
        "blkid",
        &format!(
            "{STUB_LOGGING}case \"$1\" in\n  -p) for last; do :; done; case \" {} \" in *\" $last \"*) exit 2 ;; esac; [ \"$2\" = -s ] && echo ext4; exit 0 ;;\n  -s) echo 1111-2222 ;;\nesac\n",
            blank_devs.join(" ")
        ),
    );
    for tool in tools {
        stub(&stubs, tool, STUB_LOGGING);
    }
    (guest, sysfs)
}

#[test]
fn blank_data_disks_get_their_filesystem_listed_by_uuid_and_mounted() {
    let (guest, sysfs) = guest_with_data_disks(
        &["vdc", "vdd"],
        &["udevadm", "mkfs.ext4", "mkfs.xfs", "mount"],
    );
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}\n{}", guest.log());
    let log = guest.log();
    let root = guest.root().display().to_string();
    let at = |what: &str| log.find(what).unwrap_or_else(|| panic!("{what}: {log}"));
    let mkfs_ext4 = format!("mkfs.ext4 -q {root}/dev/vdc\n");
    assert!(at("udevadm settle") < at(&mkfs_ext4));
    let mount = format!("mount -t ext4 UUID=1111-2222 {root}/srv/data\n");
    assert!(at(&mkfs_ext4) < at(&mount));
    assert!(
        log.contains(&format!("mkfs.xfs -q {root}/dev/vdd\n")),
        "{log}"
    );
    // One mount only: the xfs disk has no mount point.
    assert_eq!(log.matches("mount -t").count(), 1, "{log}");
    // Made readable by all, though the script runs with umask 077.
    let mode = fs::metadata(guest.root().join("srv/data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // The line this disk had is replaced, the others kept.
    let fstab = fs::read_to_string(guest.root().join("etc/fstab")).unwrap();
    assert_eq!(
        fstab,
        "/dev/vda1\t/\text4\tdefaults\t0\t1\nUUID=1111-2222\t/srv/data\text4\tdefaults,nofail\t0\t2\n"
    );
    assert!(
        stderr.contains(&format!(
            "data disk virtup-data1 ({root}/dev/vdc) mounted on /srv/data"
        )),
        "{stderr}"
    );
    // All done as asked: nothing for the module to warn of.
    assert!(!guest.root().join("run/virtup-firstboot.notes").exists());

    assert_identity_applied(&guest, "data disks");
}

#[test]
fn a_data_disk_that_is_not_blank_missing_or_without_its_mkfs_is_logged_and_never_formatted() {
    // The stubs come first on PATH, then /usr/bin and /bin: a real mkfs.xfs there would be found.
    for dir in ["/usr/bin", "/bin"] {
        assert!(
            !Path::new(dir).join("mkfs.xfs").exists(),
            "precondition: {dir}/mkfs.xfs would stand in for the missing one"
        );
    }
    // vdc holds ext4 already (a first boot cut short after its mkfs): no mkfs, but mounted;
    // mkfs.xfs is not installed.
    let (guest, sysfs) = guest_with_data_disks(&["vdd"], &["udevadm", "mkfs.ext4", "mount"]);
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    let log = guest.log();
    assert!(!log.contains("mkfs"), "{log}");
    assert!(log.contains("mount -t ext4 UUID=1111-2222"), "{log}");
    assert!(stderr.contains("/dev/vdc) already holds ext4"), "{stderr}");
    assert!(stderr.contains("mkfs.xfs is not installed"), "{stderr}");
    assert_identity_applied(&guest, "not blank");

    // vdc holds something else: left alone, neither formatted nor mounted nor listed.
    let (guest, sysfs) = guest_with_data_disks(&["vdd"], &["udevadm", "mkfs.ext4", "mount"]);
    stub(
        &guest.root().join("stubs"),
        "blkid",
        &format!("{STUB_LOGGING}case \"$1\" in\n  -p) [ \"$2\" = -s ] && echo LVM2_member; exit 0 ;;\n  -s) echo 1111-2222 ;;\nesac\n"),
    );
    let fstab_before = fs::read_to_string(guest.root().join("etc/fstab")).unwrap();
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("mount -t"), "{}", guest.log());
    assert!(
        stderr.contains("/dev/vdc) is not blank (LVM2_member): left as it is"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(guest.root().join("etc/fstab")).unwrap(),
        fstab_before
    );

    // Mount points the script must leave alone, each prepared in a fresh guest: nothing made on the
    // disk, nothing mounted, /etc/fstab as it was, and the reason in the log.
    type Prepare = fn(&Path);
    let cases: [(&str, Prepare, &str); 3] = [
        (
            "a directory that holds files",
            |root| {
                fs::create_dir_all(root.join("srv/data")).unwrap();
                fs::write(root.join("srv/data/index.html"), "hello").unwrap();
            },
            "/srv/data is in use",
        ),
        (
            "an fstab line of the image's own (a share mounted later)",
            |root| {
                fs::write(
                    root.join("etc/fstab"),
                    "/dev/vda1\t/\text4\tdefaults\t0\t1\nnas:/data\t/srv/data\tnfs\tdefaults\t0\t0\n",
                )
                .unwrap();
            },
            "/etc/fstab lists /srv/data for something else",
        ),
        (
            "a path through a link (as /var/run is /run)",
            |root| {
                fs::create_dir_all(root.join("run/elsewhere")).unwrap();
                fs::create_dir_all(root.join("srv")).unwrap();
                std::os::unix::fs::symlink("../run/elsewhere", root.join("srv/data")).unwrap();
            },
            "/srv/data is reached through a link",
        ),
    ];
    for (case, prepare, said) in cases {
        let (guest, sysfs) = guest_with_data_disks(
            &["vdc", "vdd"],
            &["udevadm", "mkfs.ext4", "mkfs.xfs", "mount"],
        );
        prepare(&guest.root());
        let fstab_before = fs::read_to_string(guest.root().join("etc/fstab")).unwrap();
        let (ok, stderr) = run_growing(&guest, &sysfs);
        assert!(ok, "{case}: {stderr}");
        let log = guest.log();
        assert!(
            !log.contains("mkfs.ext4") && !log.contains("mount -t"),
            "{case}: {log}"
        );
        assert!(stderr.contains(said), "{case}: {stderr}");
        assert_eq!(
            fs::read_to_string(guest.root().join("etc/fstab")).unwrap(),
            fstab_before,
            "{case}"
        );
        // Kept for the SSH proof, which reports it as the module's warning: this note only (the
        // other disk was made as asked), world-readable, in /run.
        let notes_file = guest.root().join("run/virtup-firstboot.notes");
        let notes = fs::read_to_string(&notes_file).unwrap_or_default();
        assert_eq!(
            virtup_guest::ssh::notes(notes.as_bytes()).len(),
            1,
            "{case}: {notes}"
        );
        assert!(
            notes.contains(said) && notes.contains("not mounted"),
            "{case}: {notes}"
        );
        assert_eq!(
            guest.mode("run/virtup-firstboot.notes") & 0o777,
            0o644,
            "{case}"
        );
    }

    // blkid that cannot tell (an I/O error, an ambiguous probe): nothing made on either disk.
    let (guest, sysfs) = guest_with_data_disks(&[], &["udevadm", "mkfs.ext4", "mkfs.xfs", "mount"]);
    stub(
        &guest.root().join("stubs"),
        "blkid",
        &format!("{STUB_LOGGING}case \"$1\" in\n  -p) exit 4 ;;\n  -s) echo 1111-2222 ;;\nesac\n"),
    );
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("mkfs"), "{}", guest.log());
    assert_eq!(
        stderr.matches("blkid could not tell").count(),
        2,
        "{stderr}"
    );

    // A device that cannot be read (blkid says "nothing found" for it too): never formatted.
    let (guest, sysfs) = guest_with_data_disks(
        &["vdc", "vdd"],
        &["udevadm", "mkfs.ext4", "mkfs.xfs", "mount"],
    );
    fs::remove_file(guest.root().join("dev/vdc")).unwrap();
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("mkfs.ext4"), "{}", guest.log());
    assert!(guest.log().contains("mkfs.xfs"), "{}", guest.log());
    assert!(stderr.contains("/dev/vdc) cannot be read"), "{stderr}");

    // A disk that is not there: logged, the identity still applied.
    let (guest, sysfs) =
        guest_with_data_disks(&["vdc", "vdd"], &["mkfs.ext4", "mkfs.xfs", "mount"]);
    fs::remove_dir_all(sysfs.join("block/vdd")).unwrap();
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("data disk virtup-data2 not found"),
        "{stderr}"
    );
    assert!(!guest.log().contains("mkfs.xfs"), "{}", guest.log());
    assert_identity_applied(&guest, "missing disk");

    // Offline (virt-sysprep's chroot): nothing is made.
    let (guest, sysfs) =
        guest_with_data_disks(&["vdc", "vdd"], &["mkfs.ext4", "mkfs.xfs", "mount"]);
    let (ok, stderr) = guest.run(
        Some(&guest.config()),
        &[
            ("VIRTUP_SYSFS", sysfs.to_str().unwrap()),
            ("VIRTUP_OFFLINE", "1"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("mkfs"), "{}", guest.log());
}

/// The script checks the lines again: a mount point with `..` or a bad serial is logged and skipped.
#[test]
fn the_script_refuses_filesystem_lines_it_cannot_trust() {
    let (guest, sysfs) = guest_with_data_disks(
        &["vdc", "vdd"],
        &["udevadm", "mkfs.ext4", "mkfs.xfs", "mount"],
    );
    fs::write(
        guest.config().join("filesystems"),
        "virtup-data1 ext4 /srv/../etc\nvirt$up ext4 /srv\nvirtup-data2 btrfs -\nvirtup-data1 ext4 srv\n",
    )
    .unwrap();
    let (ok, stderr) = run_growing(&guest, &sysfs);
    assert!(ok, "{stderr}");
    assert!(!guest.log().contains("mkfs"), "{}", guest.log());
    assert_eq!(stderr.matches("invalid mount point").count(), 2, "{stderr}");
    assert!(stderr.contains("invalid serial"), "{stderr}");
    assert!(stderr.contains("unknown filesystem 'btrfs'"), "{stderr}");
}

fn with_static_address(gateway: bool) -> Guest {
    let mut id = identity("virt");
    id.static_ipv4 = Some(virtup_guest::StaticIpv4 {
        mac: "52:54:00:12:34:56".into(),
        address: "192.168.122.60".parse().unwrap(),
        prefix: 24,
        gateway: gateway.then(|| "192.168.122.1".parse().unwrap()),
        dns: if gateway {
            vec![
                "192.168.122.1".parse().unwrap(),
                "10.0.0.53".parse().unwrap(),
            ]
        } else {
            Vec::new()
        },
        mtu: gateway.then_some(1400),
        domain: gateway.then(|| "lab.test".into()),
    });
    Guest::new(&id)
}

/// A guest that runs systemd-networkd (its binary, and enabled by a wants link).
fn give_networkd(guest: &Guest) {
    let root = guest.root();
    fs::create_dir_all(root.join("lib/systemd")).unwrap();
    stub(&root.join("lib/systemd"), "systemd-networkd", "#!/bin/sh\n");
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/systemd-networkd.service",
        wants.join("systemd-networkd.service"),
    )
    .unwrap();
}

#[test]
fn a_static_address_becomes_a_networkd_file_matching_the_mac() {
    let guest = with_static_address(true);
    give_networkd(&guest);
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(
        guest.read("etc/systemd/network/05-virtup.network"),
        "# Written by virtup's first boot: this instance's static address (address_mode: static).\n\
         [Match]\nMACAddress=52:54:00:12:34:56\nType=ether\n\n[Link]\nMTUBytes=1400\n\n\
         [Network]\nAddress=192.168.122.60/24\nGateway=192.168.122.1\nDNS=192.168.122.1\n\
         DNS=10.0.0.53\nDomains=lab.test\n"
    );
    assert!(
        stderr.contains("static address 192.168.122.60/24 for 52:54:00:12:34:56"),
        "{stderr}"
    );
    assert_identity_applied(&guest, "static");

    // Without a gateway or DNS servers, only the address.
    let guest = with_static_address(false);
    give_networkd(&guest);
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "{stderr}");
    let file = guest.read("etc/systemd/network/05-virtup.network");
    assert!(
        file.ends_with("Type=ether\n\n[Network]\nAddress=192.168.122.60/24\n"),
        "{file}"
    );
    // networkd runs as systemd-network: the directory the script made is readable by it.
    let mode = fs::metadata(guest.root().join("etc/systemd/network"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Masked, or with NetworkManager enabled beside it: nothing written, said why.
    for (case, said) in [
        ("masked", "does not run systemd-networkd"),
        ("nm", "NetworkManager manages"),
    ] {
        let guest = with_static_address(true);
        give_networkd(&guest);
        let system = guest.root().join("etc/systemd/system");
        match case {
            "masked" => {
                std::os::unix::fs::symlink("/dev/null", system.join("systemd-networkd.service"))
            }
            _ => std::os::unix::fs::symlink(
                "/lib/systemd/system/NetworkManager.service",
                system.join("multi-user.target.wants/NetworkManager.service"),
            ),
        }
        .unwrap();
        let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
        assert!(ok, "{case}: {stderr}");
        assert!(
            !guest
                .root()
                .join("etc/systemd/network/05-virtup.network")
                .exists(),
            "{case}"
        );
        assert!(stderr.contains(said), "{case}: {stderr}");
    }
}

/// A guest asked for a static address that has networkd installed but not enabled (an ifupdown guest).
fn without_networkd_running() -> Guest {
    let guest = with_static_address(true);
    fs::create_dir_all(guest.root().join("lib/systemd")).unwrap();
    stub(
        &guest.root().join("lib/systemd"),
        "systemd-networkd",
        "#!/bin/sh\n",
    );
    guest
}

#[test]
fn a_guest_without_networkd_is_told_and_a_bad_line_stops_before_done() {
    // networkd installed but not enabled (an ifupdown guest): nothing written, said why.
    let guest = without_networkd_running();
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "{stderr}");
    assert!(!guest
        .root()
        .join("etc/systemd/network/05-virtup.network")
        .exists());
    assert!(stderr.contains("does not run systemd-networkd"), "{stderr}");
    assert_identity_applied(&guest, "no networkd");
    let notes = fs::read_to_string(guest.root().join("run/virtup-firstboot.notes")).unwrap();
    assert!(notes.contains("does not run systemd-networkd"), "{notes}");
    // Offline (virt-sysprep's chroot) the same is logged, and no note is left in the image's /run,
    // which no booted guest's proof would read.
    let guest = without_networkd_running();
    let (ok, stderr) = guest.run(Some(&guest.config()), &[("VIRTUP_OFFLINE", "1")]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("does not run systemd-networkd"), "{stderr}");
    assert!(!guest.root().join("run/virtup-firstboot.notes").exists());

    for line in [
        "52:54:00:12:34:5 192.168.122.60/24 - - - -",
        "52:54:00:12:34:56 192.168.122.60 - - - -",
        "52:54:00:12:34:56 192.168.122.60/24 1.2.3.4;reboot - - -",
        "52:54:00:12:34:56 192.168.122.60/24 - 1.1.1.1] - -",
        "52:54:00:12:34:56 192.168.122.60/24/8 - - - -",
        "52:54:00:12:34:56 192.168.122.60/24 - - 1400x -",
        "52:54:00:12:34:56 192.168.122.60/24 - - 1-2 -",
        "52:54:00:12:34:56 192.168.122.60/24 -- - - -",
        "52:54:00:12:34:56 192.168.122.60/24 - 1.1.1.1,,2.2.2.2 - -",
        "52:54:00:12:34:56 192.168.122.60/24 - - - lab..test",
        "52:54:00:12:34:56 192.168.122.60/24 - - - lab.test [Match]",
        "52:54:00:12:34:56 192.168.122.60/24 - -",
    ] {
        let guest = with_static_address(true);
        give_networkd(&guest);
        fs::write(guest.config().join("static-ipv4"), format!("{line}\n")).unwrap();
        let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
        assert!(!ok, "{line}: {stderr}");
        assert!(
            !guest
                .root()
                .join("etc/systemd/network/05-virtup.network")
                .exists(),
            "{line}"
        );
        assert!(
            !guest.root().join("var/lib/virtup/firstboot.done").exists(),
            "{line}"
        );
    }
    // Only the first line is read: a second one never reaches the file.
    let guest = with_static_address(true);
    give_networkd(&guest);
    fs::write(
        guest.config().join("static-ipv4"),
        "52:54:00:12:34:56 192.168.122.60/24 - - - -\n[Match]\nName=*\n",
    )
    .unwrap();
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "{stderr}");
    let file = guest.read("etc/systemd/network/05-virtup.network");
    assert_eq!(file.matches("[Match]").count(), 1, "{file}");
    assert!(!file.contains("Name="), "{file}");
}
