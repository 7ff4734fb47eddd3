//! The tool wrappers against the real tools: qemu-img, xz, xorriso/genisoimage, gpg, openssl.
//!
//! Each of these tools is part of the lab's install list; a missing one fails its test loudly.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use virtup_guest::checksum::{self, Algorithm, Checksum};
use virtup_guest::config_disk::{self, ConfigDiskKind, IsoTool};
use virtup_guest::identity::{hash_password, random_machine_id};
use virtup_guest::{gpg, qemu_img, xz, Cmd, GuestError, HostKey, Identity, PrivateKey};

const SHA256_OF_TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn write(path: &Path, content: impl AsRef<[u8]>) -> PathBuf {
    fs::write(path, content).unwrap();
    path.to_owned()
}

#[test]
fn file_hashes_match_coreutils() {
    let dir = tempfile::tempdir().unwrap();
    let small = write(&dir.path().join("test"), "test");
    assert_eq!(
        checksum::hash_file(&small, Algorithm::Sha256).unwrap(),
        SHA256_OF_TEST
    );

    // Larger than the read buffer, compared with sha512sum.
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let big_path = write(&dir.path().join("big"), &big);
    let ours = checksum::hash_file(&big_path, Algorithm::Sha512).unwrap();
    let out = Cmd::new("sha512sum").arg(&big_path).output().unwrap();
    let theirs = String::from_utf8(out.stdout).unwrap();
    assert_eq!(theirs.split_whitespace().next(), Some(ours.as_str()));

    let good: Checksum = format!("sha256:{SHA256_OF_TEST}").parse().unwrap();
    checksum::verify_file(&small, &good).unwrap();
    let err = checksum::verify_file(&big_path, &good).unwrap_err();
    assert!(matches!(err, GuestError::ChecksumMismatch { .. }));
    assert!(err.to_string().starts_with(&format!(
        "checksum mismatch for `{}`: expected sha256:{SHA256_OF_TEST}, got sha256:",
        big_path.display()
    )));
    let missing = checksum::hash_file(&dir.path().join("nope"), Algorithm::Sha256).unwrap_err();
    assert!(
        missing
            .to_string()
            .ends_with("/nope`: No such file or directory"),
        "{missing}"
    );
}

#[test]
fn qemu_img_overlay_resize_convert() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let overlay = dir.path().join("clone.qcow2");
    qemu_img::create_cmd(&base, "raw", 1 << 20).run().unwrap();
    qemu_img::create_overlay_cmd(&base, "raw", &overlay, Some(4 << 20))
        .run()
        .unwrap();

    let info = qemu_img::info(&overlay, Some("qcow2")).unwrap();
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, 4 << 20);
    assert_eq!(info.backing_filename.as_deref(), base.to_str());
    assert_eq!(info.backing_filename_format.as_deref(), Some("raw"));

    qemu_img::resize_cmd(&overlay, "qcow2", 8 << 20)
        .run()
        .unwrap();
    assert_eq!(
        qemu_img::info(&overlay, None).unwrap().virtual_size,
        8 << 20
    );
    // Shrinking needs --shrink, which is never passed.
    assert!(qemu_img::resize_cmd(&overlay, "qcow2", 2 << 20)
        .run()
        .is_err());

    let full = dir.path().join("full.raw");
    qemu_img::convert_cmd(&overlay, Some("qcow2"), &full, "raw")
        .run()
        .unwrap();
    let info = qemu_img::info(&full, Some("raw")).unwrap();
    assert_eq!((info.format.as_str(), info.virtual_size), ("raw", 8 << 20));
    assert_eq!(info.backing_filename, None);

    let err = qemu_img::info(&dir.path().join("missing.qcow2"), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("failed with exit status 1: qemu-img: Could not open"),
        "{err}"
    );
}

#[test]
fn xz_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i / 7).to_be_bytes())
        .collect();
    let plain = write(&dir.path().join("disk.raw"), &data);
    let packed = dir.path().join("disk.raw.xz");
    Cmd::new("xz")
        .args(["--compress", "--stdout", "-T1"])
        .arg(&plain)
        .stdout_file(&packed)
        .run()
        .unwrap();
    assert!(fs::metadata(&packed).unwrap().len() < data.len() as u64 / 4);
    let out = dir.path().join("again.raw");
    xz::decompress_cmd(&packed, &out).run().unwrap();
    assert!(fs::read(&out).unwrap() == data);

    let junk = write(&dir.path().join("junk.xz"), "not xz");
    let err = xz::decompress_cmd(&junk, &dir.path().join("x"))
        .run()
        .unwrap_err();
    assert!(
        err.to_string().contains("File format not recognized"),
        "{err}"
    );
}

#[test]
fn password_hashes_are_glibc_compatible() {
    let hash = hash_password("correct horse battery").unwrap();
    let salt = hash.split('$').nth(2).unwrap();
    // openssl reads the password on stdin, so it never reaches argv.
    let out = Cmd::new("openssl")
        .args(["passwd", "-6", "-salt", salt, "-stdin"])
        .stdin_bytes("correct horse battery\n")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash);
}

fn identity(dir: &Path) -> Identity {
    let key = dir.join("host_key");
    write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----",
    );
    Identity {
        hostname: "web1".into(),
        fqdn: Some("web1.lab.test".into()),
        machine_id: random_machine_id(),
        host_keys: vec![HostKey {
            algorithm: "ed25519".into(),
            private_key: PrivateKey::File(key),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@web1".into(),
        }],
        user: "virt".into(),
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5user virt@host".into()],
        root_password_hash: Some(hash_password("r00t").unwrap()),
        user_password_hash: None,
        grow_root: false,
        filesystems: Vec::new(),
        static_ipv4: None,
        cloud_init: None,
    }
}

/// Files in the ISO, by name, extracted with xorriso; plus the volume label blkid sees.
fn read_iso(iso: &Path) -> (String, Vec<(String, Vec<u8>)>) {
    let out = Cmd::new("blkid")
        .args(["-p", "-o", "value", "-s", "LABEL"])
        .arg(iso)
        .output()
        .unwrap();
    let label = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    Cmd::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/"])
        .arg(dir.path().join("x"))
        .run()
        .unwrap();
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir.path().join("x"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    (label, files)
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

fn content<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a str {
    let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn virtup_config_disk_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let identity = identity(dir.path());
    let pool = dir.path().join("pool");
    fs::create_dir(&pool).unwrap();
    let iso = pool.join("web1-config.iso");
    config_disk::write_config_disk(&identity, ConfigDiskKind::Virtup, IsoTool::Xorriso, &iso)
        .unwrap();

    assert_eq!(
        fs::metadata(&iso).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let left: Vec<_> = fs::read_dir(&pool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        ["web1-config.iso"],
        "staging dir or temp file left behind"
    );

    let (label, files) = read_iso(&iso);
    assert_eq!(label, "VIRTUPCFG");
    assert_eq!(
        names(&files),
        [
            "authorized_keys",
            "format",
            "fqdn",
            "hostname",
            "machine-id",
            "random-seed",
            "shadow",
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "user"
        ]
    );
    assert_eq!(content(&files, "hostname"), "web1\n");
    assert_eq!(
        content(&files, "machine-id"),
        format!("{}\n", identity.machine_id)
    );
    assert_eq!(
        content(&files, "shadow"),
        format!("root:{}\n", identity.root_password_hash.as_ref().unwrap())
    );
    assert!(
        content(&files, "ssh_host_ed25519_key").ends_with("-----END OPENSSH PRIVATE KEY-----\n")
    );
}

#[test]
fn nocloud_disk_with_genisoimage_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut identity = identity(dir.path());
    identity.cloud_init = Some(virtup_core::cloud_init::CloudInit {
        user_data: Some("#cloud-config\nruncmd: [[touch, /x]]\n".into()),
        ..Default::default()
    });
    let iso = dir.path().join("seed.iso");
    config_disk::write_config_disk(
        &identity,
        ConfigDiskKind::NoCloud,
        IsoTool::Genisoimage,
        &iso,
    )
    .unwrap();
    let (label, files) = read_iso(&iso);
    assert_eq!(label, "cidata");
    assert_eq!(names(&files), ["meta-data", "user-data"]);
    assert_eq!(
        content(&files, "user-data"),
        "#cloud-config\nruncmd: [[touch, /x]]\n"
    );
    assert!(content(&files, "meta-data").contains(&identity.machine_id));
}

#[test]
fn staging_is_private_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let identity = identity(dir.path());
    let staged = config_disk::stage(&identity, ConfigDiskKind::Virtup, dir.path()).unwrap();
    let path = staged.path().to_owned();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in fs::read_dir(&path).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    drop(staged);
    assert!(!path.exists());

    // An unusable destination fails before anything is written.
    let out = dir.path().join("missing-dir").join("x.iso");
    assert!(config_disk::write_config_disk(
        &identity,
        ConfigDiskKind::Virtup,
        IsoTool::Xorriso,
        &out
    )
    .is_err());
    assert!(IsoTool::detect().is_some());
}

/// A throwaway GNUPGHOME with one signing key; the agent it starts is stopped on drop.
struct Signer {
    home: tempfile::TempDir,
}

impl Signer {
    fn new(uid: &str) -> Signer {
        let home = tempfile::Builder::new().prefix("gpgt").tempdir().unwrap();
        let signer = Signer { home };
        signer
            .gpg()
            .args([
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
            ])
            .run()
            .unwrap();
        signer
    }

    fn gpg(&self) -> Cmd {
        let mut cmd = Cmd::new("gpg");
        cmd.arg("--homedir").arg(self.home.path()).args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    fn export(&self, out: &Path) {
        self.gpg()
            .args(["--armor", "--output"])
            .arg(out)
            .arg("--export")
            .run()
            .unwrap();
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Cmd::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .run();
    }
}

#[test]
fn gpg_clearsigned_and_detached_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("virtup test <test@virtup.invalid>");
    let key = dir.path().join("key.asc");
    signer.export(&key);
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));

    let sums = write(
        &dir.path().join("SHA256SUMS"),
        format!("{SHA256_OF_TEST}  debian-12.qcow2\n"),
    );
    let signed = dir.path().join("SHA256SUMS.asc");
    signer
        .gpg()
        .arg("--output")
        .arg(&signed)
        .arg("--clearsign")
        .arg(&sums)
        .run()
        .unwrap();

    // Good signature: only the signed text comes back, and it parses.
    let mut with_extra = fs::read_to_string(&signed).unwrap();
    with_extra.push_str(&format!("{}  evil.qcow2\n", "0".repeat(64)));
    let signed_extra = write(&dir.path().join("extra.asc"), &with_extra);
    let text = gpg::verify_clearsigned(&signed_extra, &key).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(
        checksum::find_sum(&text, "debian-12.qcow2", "SHA256SUMS.asc")
            .unwrap()
            .hex,
        SHA256_OF_TEST
    );
    assert!(checksum::find_sum(&text, "evil.qcow2", "SHA256SUMS.asc").is_err());

    // Tampered signed text: refused, naming the file.
    let tampered = write(
        &dir.path().join("tampered.asc"),
        fs::read_to_string(&signed)
            .unwrap()
            .replace("9f86d0", "9f86d1"),
    );
    let err = gpg::verify_clearsigned(&tampered, &key).unwrap_err();
    assert!(matches!(err, GuestError::Signature { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!(
        "failed to verify the signature of `{}`: ",
        tampered.display()
    )));
    assert!(err.to_string().contains("BAD signature"), "{err}");

    // Another key: refused.
    let other = Signer::new("someone else <other@virtup.invalid>");
    let other_key = dir.path().join("other.asc");
    other.export(&other_key);
    assert!(gpg::verify_clearsigned(&signed, &other_key).is_err());

    // Detached, armored signature.
    let sig = dir.path().join("SHA256SUMS.sig");
    signer
        .gpg()
        .args(["--armor", "--output"])
        .arg(&sig)
        .arg("--detach-sign")
        .arg(&sums)
        .run()
        .unwrap();
    gpg::verify_detached(&sums, &sig, &key).unwrap();
    let changed = write(
        &dir.path().join("changed"),
        format!("{SHA256_OF_TEST}  other.qcow2\n"),
    );
    assert!(gpg::verify_detached(&changed, &sig, &key).is_err());
    assert!(gpg::verify_detached(&sums, &sig, &other_key).is_err());
}
