//! Layer 4: a template from a cloud image downloaded over HTTP and verified by a GPG-signed checksum
//! file (also downloaded), booted online and cloned, while a sampler watches every process's command
//! line for the generated secrets; wrong, tampered and incomplete checksum files are refused before
//! anything is made. The HTTP server listens on loopback inside the lab's namespace (where the test runs).

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{lab_home, run, ssh_instance, wait_for, Sandbox};

/// A stand-in for a secret in a user's cloud-init data: it must reach the guest and nothing else.
const CLOUD_TOKEN: &str = "e2e-cloud-init-token-7c1f09";

/// The name the lab's image has in its SHA256SUMS, and on the HTTP server.
const IMAGE: &str = "debian-12-cloud.qcow2";

/// `python3 -m http.server` on 127.0.0.1 serving `dir`; killed when dropped, also when the test fails.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        // A free port, then released for the server (nothing else in the namespace races for it).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let server = HttpServer { child, port };
        wait_for(
            "the HTTP server on loopback",
            Duration::from_secs(30),
            || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok(),
        );
        server
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory to serve: the lab's image (a link, not a copy) and whatever checksum files a test adds.
fn served_dir(lab: &Path, sb: &Sandbox) -> PathBuf {
    let dir = sb.path().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(lab.join("images/cloud").join(IMAGE), dir.join(IMAGE)).unwrap();
    dir
}

/// The cached downloads in the sandbox's data dir.
fn cached(sb: &Sandbox) -> Vec<String> {
    std::fs::read_dir(sb.data().join("cache"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every distinct command line seen in /proc while `running` is set.
fn sample_cmdlines(running: &AtomicBool) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    while running.load(Ordering::Relaxed) {
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
                    if !raw.is_empty() {
                        seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// Clearsigns `sums` with the lab key into `out`, as a distribution signs its checksum files.
fn sign(lab: &Path, sums: &Path, out: &Path) {
    run(
        Command::new("gpg")
            .arg("--homedir")
            .arg(lab.join("images/gpg"))
            .args(["--batch", "--yes", "--clearsign", "--output"])
            .arg(out)
            .arg(sums),
        Duration::from_secs(60),
    )
    .assert_ok("gpg --clearsign");
}

/// Clearsigns the lab's SHA256SUMS into `out`.
fn sign_sums(lab: &Path, out: &Path) {
    sign(lab, &lab.join("images/cloud/SHA256SUMS"), out);
}

/// The lab image's sha256, from the lab's SHA256SUMS.
fn image_sha256(lab: &Path) -> String {
    let sums = std::fs::read_to_string(lab.join("images/cloud/SHA256SUMS")).unwrap();
    let line = sums.lines().find(|l| l.ends_with(IMAGE)).unwrap();
    line.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn cloud_image_with_signed_checksum_file_builds_boots_and_clones() {
    let lab = lab_home();
    let sb = Sandbox::new();
    // As distributions publish them: the image, and a signed checksum file listing it (binary-mode
    // line) among others, both fetched over HTTP; the sums are looked up by the URL's file name.
    let www = served_dir(&lab, &sb);
    let sums = sb.path().join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!(
            "{}  debian-12-other.qcow2\n{} *{IMAGE}\n",
            "0".repeat(64),
            image_sha256(&lab)
        ),
    )
    .unwrap();
    sign(&lab, &sums, &www.join("SHA256SUMS.asc"));
    let server = HttpServer::start(&www);
    let key = lab.join("images/virt-builder/key.pub");
    let name = "e2e-cloud";
    let base = json!({"name": name, "image": server.url(IMAGE), "checksum": server.url("SHA256SUMS.asc"),
                      "checksum_gpg_key": key, "wait_timeout": 900});

    struct Cleanup<'a>(&'a Sandbox);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.module(
                "virtup_instance",
                &json!({"name": "e2e-cloud-i1", "state": "absent"}),
            );
            let _ = self.0.module(
                "virtup_template",
                &json!({"name": "e2e-cloud", "state": "absent"}),
            );
        }
    }
    let _cleanup = Cleanup(&sb);

    let running = AtomicBool::new(true);
    let (template, instance, cmdlines) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_cmdlines(&running));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Built, then booted for online customization with a pinned host key.
            let mut args = base.clone();
            args["state"] = json!("running");
            let t = sb.ok("virtup_template", &args);
            let downloads = cached(&sb);
            assert!(
                downloads.len() == 1 && downloads[0].ends_with(&format!("-{IMAGE}")),
                "one cached download of the image: {downloads:?}"
            );
            let login = json!({"instance": {
                "name": t["template"]["host_key_alias"], "address": t["template"]["address"],
                "user": t["template"]["user"], "ssh_private_key_file": t["template"]["ssh_private_key_file"],
                "known_hosts_file": t["template"]["known_hosts_file"]}});
            let facts = ssh_instance(&login, "hostname; sudo -n true && echo sudo-ok");
            assert_eq!(facts.lines().collect::<Vec<_>>(), [name, "sudo-ok"]);
            // Sealed, then cloned: the clone keeps the identity its config disk gave, cloud-init or not.
            args["state"] = json!("present");
            sb.ok("virtup_template", &args);
            // A disk larger than the image's (2 GiB): the first boot grows the root (with growpart here).
            // The user's own cloud-init data goes on a NoCloud seed beside virtup's config disk: a
            // user-data (a file with a token, a command), a vendor-data and a network config bound to
            // the NIC's name (an MTU only it sets). virtup's identity still wins (hostname, pinned key).
            let asked = json!({"name": "e2e-cloud-i1", "template": name, "size": "3G", "wait_timeout": 900,
                "cloud_init": {
                    "user_data": {
                        "write_files": [{"path": "/etc/virtup-e2e-cloud", "permissions": "0600",
                                         "content": format!("{CLOUD_TOKEN}\n")}],
                        "runcmd": [["touch", "/var/lib/virtup-e2e-runcmd"]]},
                    "vendor_data": "#cloud-config\nbootcmd:\n  - [sh, -c, 'echo vendor > /run/virtup-e2e-vendor']\n",
                    "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": true, "mtu": 1400}}}}});
            // Whether the template has cloud-init is read from its disk (check mode reads it too, and
            // lab_clones proves its refusal there).
            let i = sb.ok("virtup_instance", &asked);
            let facts = ssh_instance(
                &i,
                "hostname; sudo -n true && echo sudo-ok; df -B1 --output=size / | tail -n 1; \
                 sudo cloud-init status --wait >/dev/null; sudo cloud-init status; \
                 sudo cat /etc/virtup-e2e-cloud; test -f /var/lib/virtup-e2e-runcmd && echo runcmd-ok; \
                 cat /run/virtup-e2e-vendor; cat /sys/class/net/eth0/mtu; \
                 sudo cloud-init query platform; sudo cloud-init query local_hostname",
            );
            let lines: Vec<&str> = facts.lines().collect();
            assert_eq!(lines[..2], ["e2e-cloud-i1", "sudo-ok"], "{facts}");
            let root: u64 = lines[2].trim().parse().unwrap();
            assert!(
                root > (2 << 30) + (1 << 29),
                "the root filesystem grew to the 3 GiB disk: {root}"
            );
            assert_eq!(
                lines[3..],
                [
                    "status: done",
                    CLOUD_TOKEN,
                    "runcmd-ok",
                    "vendor",
                    "1400",
                    "nocloud",
                    "e2e-cloud-i1"
                ],
                "cloud-init applied the seed: {facts}"
            );
            // The seed is a volume of the instance's own, private like every volume virtup makes.
            let seed = PathBuf::from(
                virtup_e2e::virsh(&["vol-path", "--pool", "default", "e2e-cloud-i1-cidata.iso"])
                    .trim(),
            );
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&seed).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", seed.display());
            // The same data again changes nothing; other data is a warning, not a change.
            let again = sb.ok("virtup_instance", &asked);
            assert_eq!(again["changed"], json!(false), "{again}");
            let mut other = asked.clone();
            other["cloud_init"] = json!({"user_data": {"runcmd": [["true"]]}});
            let warned = sb.ok("virtup_instance", &other);
            assert!(
                warned["warnings"]
                    .to_string()
                    .contains("keeps the cloud-init data it was made with"),
                "{warned}"
            );
            (t, i)
        }));
        running.store(false, Ordering::Relaxed);
        let seen = sampler.join().unwrap();
        match result {
            Ok((t, i)) => (t, i, seen),
            Err(p) => std::panic::resume_unwind(p),
        }
    });

    // No generated password and no private key body on any command line, nor in the module output.
    let secrets_root = sb.data().join("secrets");
    let mut secrets: Vec<String> = Vec::new();
    for dir in std::fs::read_dir(&secrets_root).unwrap().flatten() {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            secrets.push(std::fs::read_to_string(f.path()).unwrap().trim().to_owned());
        }
    }
    assert!(
        secrets.len() >= 4,
        "expected root and user passwords for template and instance: {secrets:?}"
    );
    let key_body: Vec<String> = std::fs::read_to_string(sb.data().join("sshkeys/virt/id_ed25519"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    let outputs = format!("{template}{instance}");
    println!(
        "sampled {} distinct command lines during build, boot and clone",
        cmdlines.len()
    );
    secrets.push(CLOUD_TOKEN.to_owned());
    for secret in secrets.iter().chain(&key_body) {
        assert!(
            !outputs.contains(secret.as_str()),
            "a secret is in module output"
        );
        for c in &cmdlines {
            assert!(
                !c.contains(secret.as_str()),
                "a secret was on a command line: {c}"
            );
        }
    }
    let _: &Value = &template;
    // The seed goes with the instance, as its other volumes do.
    sb.ok(
        "virtup_instance",
        &json!({"name": "e2e-cloud-i1", "state": "absent"}),
    );
    let left: Vec<String> = virtup_e2e::pool_volumes()
        .into_iter()
        .filter(|v| v.starts_with("e2e-cloud-i1"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn wrong_or_tampered_checksum_files_are_refused_before_anything_is_made() {
    let lab = lab_home();
    let sb = Sandbox::new();
    // Other lab tests may share the pool: only volumes of these templates' names count.
    let volumes_of = |template: &str| -> Vec<String> {
        virtup_e2e::pool_volumes()
            .into_iter()
            .filter(|v| v.contains(template))
            .collect()
    };

    // Over HTTP: a checksum file with a wrong digest for the image, and one that does not list it.
    let www = served_dir(&lab, &sb);
    std::fs::write(
        www.join("WRONG-SHA256SUMS"),
        format!("{}  {IMAGE}\n", "0".repeat(64)),
    )
    .unwrap();
    std::fs::write(
        www.join("OTHER-SHA256SUMS"),
        format!("SHA256 (debian-12-other.qcow2) = {}\n", image_sha256(&lab)),
    )
    .unwrap();
    let server = HttpServer::start(&www);
    let wrong = server.url("WRONG-SHA256SUMS");
    let (doc, _) = sb.module(
        "virtup_template",
        &json!({"name": "e2e-wrongsum", "image": server.url(IMAGE), "checksum": wrong}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    let msg = doc["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("image `{IMAGE}` failed its `checksum` `{wrong}`"))
            && msg.contains("checksum mismatch"),
        "{doc}"
    );
    assert_eq!(
        cached(&sb),
        Vec::<String>::new(),
        "a download that failed its checksum stays in no cache"
    );
    let other = server.url("OTHER-SHA256SUMS");
    let (doc, _) = sb.module(
        "virtup_template",
        &json!({"name": "e2e-wrongsum", "image": server.url(IMAGE), "checksum": other}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(
        doc["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("no checksum for `{IMAGE}` in `{other}`")),
        "{doc}"
    );
    drop(server);
    assert_eq!(volumes_of("e2e-wrongsum"), Vec::<String>::new());
    assert!(!virtup_e2e::virsh(&["list", "--all", "--name"]).contains("e2e-wrongsum"));

    // A signed checksum file changed after signing.
    let signed = sb.path().join("SHA256SUMS.asc");
    sign_sums(&lab, &signed);
    let text = std::fs::read_to_string(&signed).unwrap();
    // Change the first digit of the checksum itself (the signed body starts after the first blank line).
    let body = text.find("\n\n").unwrap() + 2;
    let digit = if text.as_bytes()[body] == b'0' {
        "1"
    } else {
        "0"
    };
    let tampered = format!("{}{digit}{}", &text[..body], &text[body + 1..]);
    assert_ne!(text, tampered);
    std::fs::write(&signed, tampered).unwrap();
    let (doc, _) = sb.module(
        "virtup_template",
        &json!({"name": "e2e-tampered", "image": lab.join("images/cloud/debian-12-cloud.qcow2"),
                "checksum": signed, "checksum_gpg_key": lab.join("images/virt-builder/key.pub")}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}");
    assert!(
        doc["msg"].as_str().unwrap().contains("checksum_gpg_key"),
        "{doc}"
    );
    assert_eq!(volumes_of("e2e-tampered"), Vec::<String>::new());
    assert!(!virtup_e2e::virsh(&["list", "--all", "--name"]).contains("e2e-tampered"));

    // An image without systemd and sshd (here the lab's, both deleted by the user's own
    // customizations, which run first): refused at the build, naming what it lacks, instead of
    // clones that time out in `running`; no volume or domain of it is left.
    let (doc, out) = sb.module(
        "virtup_template",
        &json!({"name": "e2e-nosystemd", "image": lab.join("images/cloud/debian-12-cloud.qcow2"),
                "checksum": format!("sha256:{}", image_sha256(&lab)),
                "virt_customize_args": ["--delete", "/usr/lib/systemd/systemd", "--delete", "/usr/sbin/sshd"],
                "wait_timeout": 900}),
    );
    assert_eq!(doc["failed"], json!(true), "{doc}\n{}", out.stderr);
    let msg = doc["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("invalid value for `image`: ")
            && msg.contains(": this image has no systemd (/usr/lib/systemd/systemd), which runs virtup's first boot, \
                              and an OpenSSH server (/usr/sbin/sshd), through which virtup proves each clone")
            && !msg.contains("virt-customize -a"),
        "{doc}"
    );
    assert_eq!(volumes_of("e2e-nosystemd"), Vec::<String>::new());
    assert!(!virtup_e2e::virsh(&["list", "--all", "--name"]).contains("e2e-nosystemd"));
}
