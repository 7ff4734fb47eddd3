//! The first-boot script: syntax, shellcheck, and real runs against a fake root with stub commands.
//!
//! The script is run with `VIRTUP_ROOT` (act below a directory) and `VIRTUP_CONFIG_DIR` (read a
//! staged config instead of mounting a disk); commands that would touch this machine (hostname,
//! useradd, chown, chpasswd, mount…) are stubs that log their calls. When the tests run as root the
//! script runs as `nobody` too, so a path that escaped the fake root would fail instead of
//! changing this host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// [`Guest::run`] on the guest directory `dir`, for a run on another thread.
fn run_script(dir: &Path, config_dir: Option<&Path>, extra: &[(&str, &str)]) -> (bool, String) {
    let root = dir.join("root");
    {
        let as_root = Cmd::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if as_root {
            Cmd::new("chown")
                .args(["-R", "65534:65534"])
                .arg(dir)
                .run()
                .unwrap();
        }
        let mut cmd = if as_root {
            let mut c = Cmd::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "sh",
            ]);
            c
        } else {
            Cmd::new("sh")
        };
        cmd.arg(dir.join("firstboot"))
            .env_clear_except(&[])
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", root.join("stubs").display()),
            )
            .env("STUB_LOG", dir.join("stub.log"))
            .env("VIRTUP_ROOT", root);
        if let Some(config_dir) = config_dir {
            cmd.env("VIRTUP_CONFIG_DIR", config_dir);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output_unchecked().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
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
    }
}

/// A seed (SMBIOS family virtup-seed) waits for its config disk with no deadline, holding its
/// virtio port open so that the host knows when to save it; a clone resumed from it gets the disk
/// hot-plugged, applies the identity, sets the clock from the RTC, restarts journald, and closes
/// the port, which tells the host that the first boot is over.
#[test]
fn a_seed_waits_holding_its_port_then_applies_the_identity() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let guest = Guest::new(&identity("virt"));
    let stubs = guest.root().join("stubs");
    // Real sleep: a seed waits in steps. The disk "mounts" by copying the staged config.
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
    // No disk by label either while the seed waits (the fallback after /sys).
    stub(&stubs, "blkid", "#!/bin/sh\nexit 2\n");
    // Setting the clock is logged; reading it is the real date's.
    stub(
        &stubs,
        "date",
        &format!(
            "{STUB_LOGGING}case \" $* \" in *' -s '*) ;; *) exec {} \"$@\" ;; esac\n",
            virtup_guest::find_program("date").unwrap().display()
        ),
    );
    let sysfs = guest.dir.path().join("sys");
    fs::create_dir_all(sysfs.join("class/dmi/id")).unwrap();
    fs::write(sysfs.join("class/dmi/id/product_family"), "virtup-seed\n").unwrap();
    fs::create_dir_all(sysfs.join("class/virtio-ports/vport0p1")).unwrap();
    fs::write(
        sysfs.join("class/virtio-ports/vport0p1/name"),
        "org.qemu.guest_agent.0\n",
    )
    .unwrap();
    fs::create_dir_all(sysfs.join("class/virtio-ports/vport0p2")).unwrap();
    fs::write(
        sysfs.join("class/virtio-ports/vport0p2/name"),
        "dev.virtup.seed\n",
    )
    .unwrap();
    fs::create_dir_all(sysfs.join("class/rtc/rtc0")).unwrap();
    fs::write(sysfs.join("class/rtc/rtc0/since_epoch"), "1800000000\n").unwrap();
    fs::create_dir_all(sysfs.join("block/vda")).unwrap();
    fs::write(sysfs.join("block/vda/serial"), "\n").unwrap();
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

    let dir = guest.dir.path().to_owned();
    let sysfs_arg = sysfs.to_str().unwrap().to_owned();
    let config_src = guest.config().to_str().unwrap().to_owned();
    let script = std::thread::spawn(move || {
        run_script(
            &dir,
            None,
            &[
                ("VIRTUP_SYSFS", sysfs_arg.as_str()),
                ("CONFIG_SRC", config_src.as_str()),
                // Were it not a seed, it would give up at once.
                ("VIRTUP_WAIT", "0"),
                ("VIRTUP_WAIT_MAX", "0"),
            ],
        )
    });
    wait_until("the seed opens its port", true);
    // Waiting, well past WAIT_MAX: nothing applied yet.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!script.is_finished(), "the seed stopped waiting");
    assert!(held(&fifo), "the seed let go of its port while waiting");
    assert_eq!(guest.read("etc/hostname"), "template\n");

    // The clone's config disk arrives.
    fs::create_dir_all(sysfs.join("block/vdb")).unwrap();
    fs::write(sysfs.join("block/vdb/serial"), "VIRTUPCFG\n").unwrap();
    wait_until("the port is closed once the identity is applied", false);
    let (ok, stderr) = script.join().unwrap();
    assert!(ok, "script failed: {stderr}\nlog: {}", guest.log());
    assert!(
        stderr.contains("seed: ready to be saved (holding"),
        "{stderr}"
    );
    assert_eq!(guest.read("etc/hostname"), "web1\n");
    assert!(guest.root().join("var/lib/virtup/firstboot.done").is_file());
    let log = guest.log();
    assert!(log.contains("date -u -s @1800000000\n"), "{log}");
    assert!(
        log.contains("systemctl --no-block restart systemd-journald.service\n"),
        "{log}"
    );
    assert!(!log.contains("UNEXPECTED"), "{log}");
}

/// A machine that is no seed neither waits nor sets its clock.
#[test]
fn a_clone_that_is_no_seed_leaves_the_clock_alone() {
    let guest = Guest::new(&identity("virt"));
    stub(&guest.root().join("stubs"), "systemctl", STUB_LOGGING);
    let (ok, stderr) = guest.run(Some(&guest.config()), &[]);
    assert!(ok, "{stderr}");
    let log = guest.log();
    assert!(!log.contains("-s @") && !log.contains("systemctl"), "{log}");
}
