//! The template operation without the lab: converge against libvirt's `test:///default` driver, for
//! what needs no image tool (check runs, removal, refusals).

use tempfile::TempDir;
use virtup_libvirt::{DiskSpec, DomainSpec, ImageFormat, VirtupTag, VolumeSpec};

use super::*;
use crate::test_support::{context, test_hv, volume_exists, POOL};
use crate::Quiet;

/// Converges template `tpl` (from `debian-12`) to `state`.
fn run(ctx: &Context, hv: &Hypervisor, state: TemplateState, mode: Mode) -> Result<TemplateReport> {
    converge(ctx, hv, request(ctx, state), mode, &Quiet)
}

fn request(ctx: &Context, state: TemplateState) -> Request {
    let mut options = TemplateOptions::new("tpl", state);
    options.layer.os_version = Some("debian-12".into());
    options.layer.pool = Some(POOL.into());
    resolve(ctx, options, current_user_key(ctx)).unwrap()
}

/// Template `tpl` at generation 1 as a build leaves it, tagged with `owner`.
fn template(hv: &Hypervisor, owner: Option<String>) {
    template_with_digest(hv, owner, "sha256:old");
}

/// As [`template`], built for `digest`.
fn template_with_digest(hv: &Hypervisor, owner: Option<String>, digest: &str) {
    template_at(hv, owner, digest, 1);
}

/// As [`template`], built for `digest` at `generation`.
fn template_at(hv: &Hypervisor, owner: Option<String>, digest: &str, generation: u32) {
    let volume = volume_name("tpl", generation, "qcow2");
    let disk = hv
        .create_volume(POOL, &VolumeSpec::new(&volume, 1 << 20, ImageFormat::Qcow2))
        .unwrap();
    let mut spec = DomainSpec::new(domain_name("tpl"), 256, 1, VirtType::Qemu);
    spec.disks = vec![DiskSpec::disk(&disk.path, ImageFormat::Qcow2)];
    let mut tag = VirtupTag::new(TagKind::Template, "tpl");
    tag.generation = generation;
    tag.digest = Some(digest.into());
    tag.owner = owner;
    spec.metadata = Some(tag);
    hv.define(&spec).unwrap();
}

#[test]
fn a_check_run_plans_the_first_build_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, false);
    let hv = test_hv();
    let report = run(&ctx, &hv, TemplateState::Present, Mode::Check).unwrap();
    assert!(report.changed);
    assert!(report.msg.contains("build generation 1"), "{}", report.msg);
    assert!(report.waited.is_none(), "a check run waits for nothing");
    let (before, after) = &report.diff;
    assert_eq!(before.state, "absent");
    assert_eq!((after.state, after.generation), ("present", Some(1)));
    let facts = report.template.expect("a check run describes the template");
    assert_eq!(facts.domain, "VIRTUP-tpl");
    assert_eq!(facts.disk, None, "nothing is built yet");
    assert_eq!(facts.source.as_deref(), Some("os_version:debian-12"));
    assert!(hv.domain("VIRTUP-tpl").unwrap().is_none());
    assert!(!ctx.paths.data_dir.exists(), "no data dir was made");
}

/// A changed source is a new generation, planned beside the one clones may use.
#[test]
fn a_check_run_plans_a_new_generation_when_the_digest_changes() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, ctx.data.owner_id().unwrap());
    let req = request(&ctx, TemplateState::Present);
    let report = converge(&ctx, &hv, req, Mode::Check, &Quiet).unwrap();
    assert!(report.changed);
    let (before, after) = &report.diff;
    assert_eq!(before.generation, Some(1));
    assert_eq!(before.digest.as_deref(), Some("sha256:old"));
    assert_eq!(after.generation, Some(2), "{}", report.msg);
}

/// `absent` deletes the domain and the volume its definition proves, not a volume merely named
/// like a generation of it, and a second run has nothing left to do.
#[test]
fn absent_deletes_what_is_proven_and_leaves_a_look_alike_volume() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, ctx.data.owner_id().unwrap());
    let look_alike = volume_name("tpl", 2, "qcow2");
    hv.create_volume(
        POOL,
        &VolumeSpec::new(&look_alike, 1 << 20, ImageFormat::Qcow2),
    )
    .unwrap();
    let report = run(&ctx, &hv, TemplateState::Absent, Mode::Apply).unwrap();
    assert!(report.changed, "{}", report.msg);
    assert!(report.template.is_none());
    assert!(hv.domain("VIRTUP-tpl").unwrap().is_none());
    assert!(!volume_exists(&hv, &volume_name("tpl", 1, "qcow2")));
    assert!(volume_exists(&hv, &look_alike), "not proven, not deleted");
    let again = run(&ctx, &hv, TemplateState::Absent, Mode::Apply).unwrap();
    assert!(!again.changed, "{}", again.msg);
}

/// Another data dir's template of the same name: `absent` leaves it with a warning, `present` refuses.
#[test]
fn another_data_dirs_template_is_left_alone() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, Some("another-data-dir".into()));
    let report = run(&ctx, &hv, TemplateState::Absent, Mode::Apply).unwrap();
    assert!(!report.changed, "{}", report.msg);
    assert!(
        report.warnings[0].contains("not made by virtup with this data dir"),
        "{:?}",
        report.warnings
    );
    let e = run(&ctx, &hv, TemplateState::Present, Mode::Apply).unwrap_err();
    assert!(
        format!("{e:#}").contains("domain `VIRTUP-tpl` exists but was not made by virtup with this data dir; refusing to touch it"),
        "{e:#}"
    );
    assert!(hv.domain("VIRTUP-tpl").unwrap().is_some());
    assert!(volume_exists(&hv, &volume_name("tpl", 1, "qcow2")));
}

// Builds with scripted tool runs: virt-builder, virt-customize and virt-install cannot run without
// the lab, so the test answers them (virtup_guest::script), doing to the pool what the tool would,
// and checks what they were asked. The pool is a directory of the test (`node_with_pool_dir`).

mod scripted {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::rc::Rc;

    use virtup_core::ownership::Ledger;
    use virtup_guest::script::{Reply, Script};
    use virtup_guest::Cmd;

    use super::*;
    use crate::test_support::node_with_pool_dir;

    fn request_on(ctx: &Context, uri: &str) -> Request {
        let mut options = TemplateOptions::new("tpl", TemplateState::Present);
        options.layer.os_version = Some("debian-12".into());
        options.layer.pool = Some(POOL.into());
        options.layer.uri = Some(uri.into());
        options.password = Some("Tpl-S3cret".into());
        options.root_password = Some("Root-S3cret".into());
        resolve(ctx, options, current_user_key(ctx)).unwrap()
    }

    /// The value after `flag` in a scripted command's argv.
    fn after(cmd: &Cmd, flag: &str) -> String {
        let argv = cmd.argv();
        let at = argv.iter().position(|a| a == flag);
        at.and_then(|i| argv.get(i + 1).cloned())
            .unwrap_or_else(|| panic!("no `{flag}` in {argv:?}"))
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// virt-builder fails after writing a partial image (it runs with `--no-delete-on-failure`):
    /// the error names it with its stderr, and the pool, the ledger and libvirt keep nothing.
    #[test]
    fn a_failed_build_names_virt_builder_and_leaves_nothing_behind() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, false);
        let (uri, hv) = node_with_pool_dir(&dir);
        let script = Script::install(|cmd| {
            if cmd.get_program() != "virt-builder" {
                return None;
            }
            std::fs::write(after(cmd, "-o"), b"half an image").unwrap();
            Some(Reply::fail(
                1,
                "virt-builder: error: appliance closed the connection",
            ))
        });
        let req = request_on(&ctx, &uri);
        let e = converge(&ctx, &hv, req, Mode::Apply, &Quiet).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("virt-builder could not build `debian-12`"),
            "{e}"
        );
        assert!(e.contains("appliance closed the connection"), "{e}");

        let runs = script.runs();
        assert_eq!(runs.len(), 1, "one virt-builder run, nothing else scripted");
        let pool = dir.path().join("pool");
        let part = pool.join(format!("{}.part", volume_name("tpl", 1, "qcow2")));
        assert_eq!(after(&runs[0], "-o"), part.display().to_string());
        assert_eq!(after(&runs[0], "--format"), "qcow2");
        // The hostname and the user's key go in through one command, not augeas-backed options.
        let argv_owned = runs[0].argv();
        let argv: Vec<&str> = argv_owned.iter().map(String::as_str).collect();
        assert!(!argv.contains(&"--hostname") && !argv.contains(&"--ssh-inject"));
        let command = argv
            .windows(2)
            .find(|w| w[0] == "--run-command" && w[1].contains("/etc/hostname"))
            .map(|w| w[1])
            .expect("a command sets the hostname");
        assert!(
            command.contains("printf '%s\\n' tpl > /etc/hostname"),
            "{command}"
        );
        assert!(
            command.contains("useradd -m -s /bin/bash virt"),
            "{command}"
        );
        let staged = argv
            .windows(2)
            .find(|w| w[0] == "--write" && w[1].starts_with("/tmp/virtup-user-key.pub:"))
            .map(|w| w[1])
            .expect("the user's key is staged");
        assert!(staged.contains(":ssh-ed25519 "), "{staged}");
        let secrets = ctx.secrets_dir("VIRTUP-tpl");
        assert_eq!(
            after(&runs[0], "--root-password"),
            format!("file:{}", secrets.join("root_password").display())
        );
        let argv = runs[0].argv().join(" ");
        assert!(
            !argv.contains("S3cret"),
            "secrets reach virt-builder through files: {argv}"
        );
        assert_eq!(
            std::fs::read_to_string(secrets.join("root_password"))
                .unwrap()
                .trim_end(),
            "Root-S3cret",
            "the root password the user set"
        );
        assert_eq!(mode_of(&secrets.join("root_password")), 0o600);
        assert_eq!(mode_of(&secrets), 0o700);

        assert_eq!(
            files_in(&pool),
            Vec::<String>::new(),
            "the partial image is deleted"
        );
        assert!(Ledger::read(&ctx.data, "VIRTUP-tpl")
            .unwrap()
            .volumes
            .is_empty());
        assert!(hv.list_volumes(POOL).unwrap().is_empty());
        assert!(hv.domain("VIRTUP-tpl").unwrap().is_none());
    }

    /// virt-builder succeeds: the image is moved into place private (0600) and recorded by its key
    /// before the config disk. Uploading that is where the test driver stops
    /// (no `virStorageVolUpload`); the lab tests the rest of the build.
    #[test]
    fn a_build_moves_a_private_image_into_place_and_records_it_by_key() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, false);
        let (uri, hv) = node_with_pool_dir(&dir);
        let hv = Rc::new(hv);
        let pool_of_driver = hv.clone();
        let _script = Script::install(move |cmd| {
            if cmd.get_program() != "virt-builder" {
                return None;
            }
            // What the build and a pool refresh leave: the file, and libvirt's volume for it.
            let out = after(cmd, "-o");
            std::fs::write(&out, b"an image").unwrap();
            let name = Path::new(&out).file_name().unwrap().to_string_lossy();
            let name = name.trim_end_matches(".part");
            pool_of_driver
                .create_volume(POOL, &VolumeSpec::new(name, 1 << 20, ImageFormat::Qcow2))
                .unwrap();
            Some(Reply::ok())
        });
        let req = request_on(&ctx, &uri);
        let e = converge(&ctx, &hv, req, Mode::Apply, &Quiet).unwrap_err();
        assert!(format!("{e:#}").contains("virStorageVolUpload"), "{e:#}");

        let pool = dir.path().join("pool");
        let image = pool.join(volume_name("tpl", 1, "qcow2"));
        assert_eq!(
            files_in(&pool),
            [volume_name("tpl", 1, "qcow2")],
            "no `.part` is left"
        );
        assert_eq!(mode_of(&image), 0o600, "the image holds password hashes");
        let ledger = Ledger::read(&ctx.data, "VIRTUP-tpl").unwrap();
        let info = hv
            .volume_info(POOL, &volume_name("tpl", 1, "qcow2"))
            .unwrap()
            .unwrap();
        let entry = ledger
            .entry(&uri, POOL, &volume_name("tpl", 1, "qcow2"))
            .unwrap();
        assert_eq!(
            entry.key.as_deref(),
            Some(info.key.as_str()),
            "proven by its key"
        );
        assert!(
            ledger.entry(&uri, POOL, "VIRTUP-tpl-config.iso").is_none(),
            "a config disk that was never made is not recorded"
        );
    }

    /// The domain comes from virt-install's XML with virtup's tag inside; defined again, it keeps its UUID.
    #[test]
    fn define_tags_virt_install_s_domain_and_keeps_its_uuid() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, true);
        let (uri, hv) = node_with_pool_dir(&dir);
        let script = Script::install(|cmd| {
            (cmd.get_program() == "virt-install").then(|| {
                // As virt-install prints it: `--uuid` becomes the domain's UUID.
                let argv = cmd.argv();
                let uuid = argv
                    .iter()
                    .position(|a| a == "--uuid")
                    .map(|i| format!("<uuid>{}</uuid>", argv[i + 1]));
                Reply::stdout(format!(
                    "<domain type='qemu'><name>{}</name>{}<memory unit='KiB'>1048576</memory>\
                     <vcpu>1</vcpu><os><type>hvm</type></os></domain>",
                    after(cmd, "--name"),
                    uuid.unwrap_or_default()
                ))
            })
        });
        let req = request_on(&ctx, &uri);
        let obs = observe(&hv, &ctx.data, &req).unwrap();
        build::define(&ctx.data, &hv, &req, &obs, 1, VirtType::Qemu).unwrap();
        let tag = hv.tag("VIRTUP-tpl").unwrap().expect("tagged");
        assert!(tag.is(TagKind::Template, "tpl"));
        assert_eq!(tag.generation, 1);
        assert_eq!(tag.digest, Some(req.desired.digest()));
        assert_eq!(tag.owner, ctx.data.owner_id().unwrap());
        assert_eq!(tag.user.as_deref(), Some("virt"));

        let obs = observe(&hv, &ctx.data, &req).unwrap();
        let uuid = obs.uuid.clone().expect("the defined domain has a UUID");
        build::define(&ctx.data, &hv, &req, &obs, 2, VirtType::Qemu).unwrap();
        let runs = script.runs();
        assert_eq!(runs.len(), 2);
        assert_eq!(after(&runs[0], "--connect"), uri);
        assert_eq!(after(&runs[0], "--virt-type"), "qemu");
        assert!(!runs[0].argv().contains(&"--uuid".to_owned()));
        assert_eq!(after(&runs[1], "--uuid"), uuid, "redefined under its UUID");
        let disks: Vec<String> = runs[1]
            .argv()
            .windows(2)
            .filter(|w| w[0] == "--disk")
            .map(|w| w[1].clone())
            .collect();
        let pool = dir.path().join("pool");
        assert!(
            disks[0].starts_with(&format!(
                "path={}",
                pool.join(volume_name("tpl", 2, "qcow2")).display()
            )),
            "{disks:?}"
        );
        assert!(disks[1].contains("VIRTUP-tpl-config.iso"), "{disks:?}");
        assert_eq!(hv.tag("VIRTUP-tpl").unwrap().unwrap().generation, 2);
    }

    /// The seal removes the identity a clone must not inherit, from the current generation's disk.
    #[test]
    fn seal_removes_the_identity_from_the_generation_s_disk() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, true);
        let (uri, hv) = node_with_pool_dir(&dir);
        let req = request_on(&ctx, &uri);
        template_at(&hv, None, "sha256:sealed", 3);
        // A seal cut short leaves the template without a digest: the next run builds anew.
        let failing = Script::install(|cmd| {
            (cmd.get_program() == "virt-customize").then(|| Reply::fail(1, "killed"))
        });
        let obs = observe(&hv, &ctx.data, &req).unwrap();
        build::seal(&hv, &ctx.data, &req, &obs, 3, VirtType::Qemu).unwrap_err();
        drop(failing);
        let mut tag = hv.tag("VIRTUP-tpl").unwrap().unwrap();
        assert_eq!(
            tag.digest.as_deref(),
            Some(crate::template::UNSEALED_DIGEST)
        );
        tag.digest = Some("sha256:sealed".into());
        hv.set_tag("VIRTUP-tpl", &tag).unwrap();
        let script = Script::install(|cmd| (cmd.get_program() == "virt-customize").then(Reply::ok));
        build::seal(&hv, &ctx.data, &req, &obs, 3, VirtType::Qemu).unwrap();
        assert_eq!(
            hv.tag("VIRTUP-tpl").unwrap().unwrap().digest.as_deref(),
            Some("sha256:sealed"),
            "a finished seal gives the digest back"
        );
        let runs = script.runs();
        assert_eq!(runs.len(), 1);
        let disk = dir.path().join("pool").join(volume_name("tpl", 3, "qcow2"));
        assert_eq!(after(&runs[0], "-a"), disk.display().to_string());
        let argv = runs[0].argv();
        for (flag, what) in [
            ("--truncate", "/etc/machine-id"),
            ("--delete", "/etc/ssh/ssh_host_*"),
            ("--delete", "/var/lib/dhcp/*"),
        ] {
            assert!(
                argv.windows(2).any(|w| w[0] == flag && w[1] == what),
                "`{flag} {what}` missing: {argv:?}"
            );
        }
        assert_eq!(
            runs[0].get_env("LIBGUESTFS_BACKEND"),
            Some(Some(std::ffi::OsStr::new("direct")))
        );
    }
}

/// The caller's playbook and its customization session: digests as the role computed them before
/// the module read the playbook, and the session's later calls under the revision its build pinned.
mod sessions {
    use virtup_guest::script::{Reply, Script};

    use super::*;

    /// sha256 of `PLAYBOOK_V1` and `PLAYBOOK_V2` (by `sha256sum`).
    const PLAYBOOK_V1: &str = "- hosts: all\n  tasks: []\n";
    const SHA_V1: &str = "22cda2efeae903be182ed028f39dc7ccbb7030ba92f15d0f51dcd234e6e34559";
    const PLAYBOOK_V2: &str = "- hosts: all\n  tasks: [{debug: {msg: v2}}]\n";
    const SHA_V2: &str = "f7b10c608e22b4b17bd4517c0e569506ed03b38332986c4819c5830de611d2ae";

    fn options(
        playbook: &Path,
        revision: Option<&str>,
        hold: Option<SessionHold>,
    ) -> TemplateOptions {
        let mut options = TemplateOptions::new("tpl", TemplateState::Present);
        options.layer.os_version = Some("debian-12".into());
        options.layer.pool = Some(POOL.into());
        options.playbook = Some(playbook.to_owned());
        options.revision = revision.map(str::to_owned);
        options.hold = hold;
        options
    }

    /// A data dir whose user key a build made (the digest names it), a connection, and playbook v1
    /// in the test's directory.
    fn built_with_playbook() -> (TempDir, Context, Hypervisor, PathBuf) {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, true);
        let playbook = dir.path().join("pb.yml");
        std::fs::write(&playbook, PLAYBOOK_V1).unwrap();
        keys::ensure_user_key(&ctx.data.sshkeys_dir(), "virt").unwrap();
        (dir, ctx, test_hv(), playbook)
    }

    fn resolved(ctx: &Context, options: TemplateOptions) -> Request {
        resolve(ctx, options, current_user_key(ctx)).unwrap()
    }

    #[test]
    fn the_playbook_digest_is_joined_to_the_revision_as_the_role_joined_it() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, false);
        let playbook = dir.path().join("pb.yml");
        std::fs::write(&playbook, PLAYBOOK_V1).unwrap();
        for (revision, expected) in [
            (None, format!("playbook-sha256:{SHA_V1}")),
            // The role joined `[revision, label]` with a space: an empty revision kept it.
            (Some(""), format!(" playbook-sha256:{SHA_V1}")),
            (Some("r7"), format!("r7 playbook-sha256:{SHA_V1}")),
        ] {
            let req = resolved(&ctx, options(&playbook, revision, None));
            assert_eq!(req.desired.revision.as_deref(), Some(expected.as_str()));
            assert_eq!(req.playbook.as_deref(), Some(playbook.as_path()));
        }
        let mut no_playbook = options(&playbook, Some(""), None);
        no_playbook.playbook = None;
        let req = resolved(&ctx, no_playbook);
        assert_eq!(
            req.desired.revision.as_deref(),
            Some(""),
            "passed through as given"
        );
    }

    /// A config `template-playbook` beside the caller's: both digests count, the caller's playbook is run.
    #[test]
    fn a_config_template_playbook_keeps_its_label_beside_the_callers() {
        let dir = TempDir::new().unwrap();
        let mut ctx = context(&dir, false);
        let config_playbook = dir.path().join("config-pb.yml");
        std::fs::write(&config_playbook, PLAYBOOK_V2).unwrap();
        ctx.config.common.template_playbook = Some(config_playbook.display().to_string());
        let playbook = dir.path().join("pb.yml");
        std::fs::write(&playbook, PLAYBOOK_V1).unwrap();
        let req = resolved(&ctx, options(&playbook, Some("r"), None));
        assert_eq!(
            req.desired.revision,
            Some(format!(
                "r playbook-sha256:{SHA_V1} template-playbook-sha256:{SHA_V2}"
            ))
        );
        assert_eq!(req.playbook.as_deref(), Some(playbook.as_path()));
    }

    #[test]
    fn a_relative_or_missing_playbook_is_refused_naming_the_option() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, false);
        let e = resolve(
            &ctx,
            options(Path::new("pb.yml"), None, None),
            current_user_key(&ctx),
        );
        let e = format!("{:#}", e.err().unwrap());
        assert!(e.contains("`playbook`") && e.contains("absolute"), "{e}");
        let missing = dir.path().join("missing.yml");
        let e = resolve(&ctx, options(&missing, None, None), current_user_key(&ctx));
        let e = format!("{:#}", e.err().unwrap());
        assert!(
            e.contains("cannot read `playbook`") && e.contains("missing.yml"),
            "{e}"
        );
    }

    /// `Start` makes a session only where a playbook will customize the template.
    #[test]
    fn a_session_starts_only_with_a_playbook() {
        let dir = TempDir::new().unwrap();
        let ctx = context(&dir, false);
        let playbook = dir.path().join("pb.yml");
        std::fs::write(&playbook, PLAYBOOK_V1).unwrap();
        let start = SessionHold::start().unwrap();
        let token = start.token().to_owned();
        assert_eq!(token.len(), 24);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(SessionHold::start().unwrap(), start, "fresh each time");
        let req = resolved(&ctx, options(&playbook, None, Some(start.clone())));
        assert_eq!(req.hold, Some(token));
        let mut no_playbook = options(&playbook, None, Some(start));
        no_playbook.playbook = None;
        assert_eq!(resolved(&ctx, no_playbook).hold, None);
    }

    /// The template was built and booted by session `T`, which pinned its revision; its playbook is
    /// edited while it runs. The seal call of `T` seals that generation; a call of no session would
    /// build a new one (the edit is a new digest), uncustomized.
    #[test]
    fn the_seal_call_of_a_session_uses_the_revision_its_build_pinned() {
        let (dir, ctx, hv, playbook) = built_with_playbook();
        let built = resolved(&ctx, options(&playbook, None, None));
        let pinned = built.desired.revision.clone().unwrap();
        virtup_core::hold::take(&ctx.data, "VIRTUP-tpl", "session-t", Some(&pinned)).unwrap();
        template_with_digest(&hv, ctx.data.owner_id().unwrap(), &built.desired.digest());
        hv.start("VIRTUP-tpl").unwrap();

        std::fs::write(&playbook, PLAYBOOK_V2).unwrap();
        let other = resolved(&ctx, options(&playbook, None, None));
        let check = converge(&ctx, &hv, other, Mode::Check, &Quiet).unwrap();
        assert!(check.msg.contains("build generation 2"), "{}", check.msg);
        // Moved away meanwhile, even: the session does not read it again.
        std::fs::rename(&playbook, dir.path().join("moved.yml")).unwrap();

        let script = Script::install(|cmd| {
            assert_ne!(
                cmd.get_program(),
                "virt-builder",
                "the seal call built a new generation"
            );
            (cmd.get_program() == "virt-customize").then(Reply::ok)
        });
        let seal = options(
            &playbook,
            None,
            Some(SessionHold::Continue("session-t".into())),
        );
        let req = resolved(&ctx, seal);
        assert_eq!(req.desired.revision.as_deref(), Some(pinned.as_str()));
        let report = converge(&ctx, &hv, req, Mode::Apply, &Quiet).unwrap();
        assert!(report.msg.contains("seal the template"), "{}", report.msg);
        assert!(!report.msg.contains("build"), "{}", report.msg);
        assert_eq!(script.argvs_of("virt-customize").len(), 1);
        assert!(
            !ctx.data.hold_path("VIRTUP-tpl").unwrap().exists(),
            "the seal ends the session"
        );
        assert_eq!(report.hold, None, "nothing holds the template any more");
        assert_eq!(hv.tag("VIRTUP-tpl").unwrap().unwrap().generation, 1);
    }

    /// A session whose process is gone left the template held: a call starting a session takes the
    /// customization over, pins its revision in the hold and returns its token, so the role runs the
    /// playbook again and the session's later calls go on with it.
    #[test]
    fn a_new_session_takes_an_interrupted_customization_over_and_pins_its_revision() {
        let (_dir, ctx, hv, playbook) = built_with_playbook();
        let current =
            resolve(&ctx, options(&playbook, None, None), current_user_key(&ctx)).unwrap();
        template_with_digest(&hv, ctx.data.owner_id().unwrap(), &current.desired.digest());
        let hold = ctx.data.hold_path("VIRTUP-tpl").unwrap();
        std::fs::create_dir_all(hold.parent().unwrap()).unwrap();
        // pid 0 is never a process that took a hold: the session is gone.
        std::fs::write(
            &hold,
            r#"{"token": "killed-session", "holder": {"pid": 0, "start_ticks": 1}, "since": 0}"#,
        )
        .unwrap();

        let start = SessionHold::start().unwrap();
        let token = start.token().to_owned();
        let req = resolve(
            &ctx,
            options(&playbook, None, Some(start)),
            current_user_key(&ctx),
        )
        .unwrap();
        let report = converge(&ctx, &hv, req, Mode::Apply, &Quiet).unwrap();
        assert!(report.changed, "{}", report.msg);
        assert!(report.msg.contains("interrupted"), "{}", report.msg);
        assert_eq!(report.hold.as_deref(), Some(token.as_str()));
        assert_eq!(
            hold::pinned_revision(&ctx.data, "VIRTUP-tpl", &token).unwrap(),
            current.desired.revision,
            "held by the new session, with its revision pinned"
        );
    }

    /// A template left running unsealed (a `running` template switched to `present`, one booted by
    /// hand): a call starting a session seals it and holds it, so the caller boots it, runs the
    /// playbook and seals it again, as after a build; the session's seal call ends it.
    #[test]
    fn a_session_that_seals_a_template_left_running_holds_it_for_the_playbook() {
        let (_dir, ctx, hv, playbook) = built_with_playbook();
        let current = resolved(&ctx, options(&playbook, None, None));
        template_with_digest(&hv, ctx.data.owner_id().unwrap(), &current.desired.digest());
        hv.start("VIRTUP-tpl").unwrap();
        let script = Script::install(|cmd| (cmd.get_program() == "virt-customize").then(Reply::ok));

        let start = SessionHold::start().unwrap();
        let token = start.token().to_owned();
        let first = resolved(&ctx, options(&playbook, None, Some(start)));
        let report = converge(&ctx, &hv, first, Mode::Apply, &Quiet).unwrap();
        assert!(report.msg.contains("seal the template"), "{}", report.msg);
        assert_eq!(
            report.hold.as_deref(),
            Some(token.as_str()),
            "held for the playbook"
        );
        assert_eq!(
            hold::pinned_revision(&ctx.data, "VIRTUP-tpl", &token).unwrap(),
            current.desired.revision
        );

        let seal = resolved(
            &ctx,
            options(&playbook, None, Some(SessionHold::Continue(token))),
        );
        hv.start("VIRTUP-tpl").unwrap(); // as the session's boot call leaves it
        let report = converge(&ctx, &hv, seal, Mode::Apply, &Quiet).unwrap();
        assert!(report.msg.contains("seal the template"), "{}", report.msg);
        assert_eq!(report.hold, None);
        assert!(
            !ctx.data.hold_path("VIRTUP-tpl").unwrap().exists(),
            "the seal ends it"
        );
        assert_eq!(script.argvs_of("virt-customize").len(), 2);

        // Without a playbook nothing customizes it: sealing it starts no session.
        hv.start("VIRTUP-tpl").unwrap();
        let mut no_playbook = options(&playbook, None, Some(SessionHold::start().unwrap()));
        no_playbook.playbook = None;
        let req = resolved(&ctx, no_playbook);
        assert_eq!(req.hold, None);
    }

    /// The template's playbook powered it down: the session's seal call still seals it (the
    /// template ran online), and ends the session.
    #[test]
    fn the_seal_call_seals_a_template_its_playbook_shut_off() {
        let (_dir, ctx, hv, playbook) = built_with_playbook();
        let built = resolved(&ctx, options(&playbook, None, None));
        let pinned = built.desired.revision.clone();
        virtup_core::hold::take(&ctx.data, "VIRTUP-tpl", "session-t", pinned.as_deref()).unwrap();
        template_with_digest(&hv, ctx.data.owner_id().unwrap(), &built.desired.digest());
        let script = Script::install(|cmd| (cmd.get_program() == "virt-customize").then(Reply::ok));
        let seal = options(
            &playbook,
            None,
            Some(SessionHold::Continue("session-t".into())),
        );
        let report = converge(&ctx, &hv, resolved(&ctx, seal), Mode::Apply, &Quiet).unwrap();
        assert!(report.changed);
        assert_eq!(
            report.msg,
            "seal the template (remove machine-id, host keys, leases)"
        );
        assert_eq!(script.argvs_of("virt-customize").len(), 1);
        assert!(!ctx.data.hold_path("VIRTUP-tpl").unwrap().exists());
        // Sealed and released: another call finds nothing to do.
        let again = options(
            &playbook,
            None,
            Some(SessionHold::Continue("session-t".into())),
        );
        let report = converge(&ctx, &hv, resolved(&ctx, again), Mode::Apply, &Quiet).unwrap();
        assert!(!report.changed, "{}", report.msg);
    }

    /// Calls that change a template without making it anew start no session: deleting an unused
    /// generation (the template is as it was), or sealing one left running that clones use (it may
    /// not boot for a playbook; booting it would change their backing file).
    #[test]
    fn changes_a_playbook_need_not_follow_start_no_session() {
        let (_dir, ctx, hv, playbook) = built_with_playbook();
        let current = resolved(&ctx, options(&playbook, None, None));
        let owner = ctx.data.owner_id().unwrap();
        template_at(&hv, owner.clone(), &current.desired.digest(), 2);
        let old = volume_name("tpl", 1, "qcow2");
        let info = hv
            .create_volume(POOL, &VolumeSpec::new(&old, 1 << 20, ImageFormat::Qcow2))
            .unwrap();
        let mut ledger = Ledger::read(&ctx.data, "VIRTUP-tpl").unwrap();
        ledger
            .confirm(&ctx.data, &current.uri, POOL, &old, &info.key)
            .unwrap();
        let _script =
            Script::install(|cmd| (cmd.get_program() == "virt-customize").then(Reply::ok));
        let call = |ctx: &Context| {
            let start = SessionHold::start().unwrap();
            let req = resolved(ctx, options(&playbook, None, Some(start)));
            converge(ctx, &hv, req, Mode::Apply, &Quiet).unwrap()
        };

        let report = call(&ctx);
        assert_eq!(report.msg, "delete unused generation 1");
        assert_eq!(report.hold, None);
        assert!(!ctx.data.hold_path("VIRTUP-tpl").unwrap().exists());

        // A clone of generation 2, and the template booted by hand.
        let mut spec = DomainSpec::new("web1", 256, 1, VirtType::Qemu);
        let mut tag = VirtupTag::new(TagKind::Instance, "web1");
        tag.template = Some("tpl".into());
        tag.generation = 2;
        tag.owner = owner;
        spec.metadata = Some(tag);
        hv.define(&spec).unwrap();
        hv.start("VIRTUP-tpl").unwrap();
        let report = call(&ctx);
        assert!(report.msg.contains("seal the template"), "{}", report.msg);
        assert_eq!(
            report.hold, None,
            "a template with clones is not booted for its playbook"
        );
        assert!(!ctx.data.hold_path("VIRTUP-tpl").unwrap().exists());
    }
}

/// On a remote hypervisor a template may run (for its playbook) and be sealed like a local one; a URI
/// that would trust the hypervisor's key on first use is refused before anything happens.
#[test]
fn a_remote_template_may_run_and_unverified_keys_are_refused() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, false);
    let remote = |state, uri: &str| {
        let mut options = TemplateOptions::new("t", state);
        options.layer.os_version = Some("debian-12".into());
        options.layer.uri = Some(uri.into());
        resolve(&ctx, options, current_user_key(&ctx)).map(|r| r.uri)
    };
    assert_eq!(
        remote(TemplateState::Running, "qemu+ssh://root@hv2/system").unwrap(),
        "qemu+ssh://root@hv2/system"
    );
    assert_eq!(
        remote(TemplateState::Present, "qemu+ssh://root@hv2/system").unwrap(),
        "qemu+ssh://root@hv2/system"
    );
    let e = remote(
        TemplateState::Present,
        "qemu+ssh://root@hv2/system?no_verify=1",
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("turns off host key verification"),
        "{e:#}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was made");
}

/// Two runs of one template name on two hypervisors: the second resolved before the first recorded
/// anything, then waited for the lock. What it observes under the lock refuses it, naming the other.
#[test]
fn a_template_placed_elsewhere_while_a_run_waited_is_refused_when_it_observes() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    let req = request(&ctx, TemplateState::Present);
    assert!(observe(&hv, &ctx.data, &req).is_ok());
    // This machine's hypervisors share a template's records (remote ones each have their own).
    let other = "qemu:///session";
    let mut ledger = Ledger::read(&ctx.data, "VIRTUP-tpl").unwrap();
    ledger
        .intend(&ctx.data, other, "default", "VIRTUP-tpl-1.qcow2", None)
        .unwrap();
    let e = format!("{:#}", observe(&hv, &ctx.data, &req).err().unwrap());
    assert!(
        e.contains(&format!("lives on `{other}`, not on `{}`", req.uri)),
        "{e}"
    );
    assert!(e.contains("VIRTUP-tpl.json"), "names the record: {e}");
}

/// The same template name on remote hypervisors: each has records of its own, so a run here is not
/// refused, and a removal that names no `uri` goes where the records are, or asks which.
#[test]
fn one_template_name_lives_on_several_remote_hypervisors_with_records_of_its_own() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    let record = |uri: &str| {
        let scope = context::template_scope("tpl", uri);
        Ledger::read(&ctx.data, &scope)
            .unwrap()
            .intend(&ctx.data, uri, "default", "VIRTUP-tpl-g1.qcow2", None)
            .unwrap();
    };
    let absent_without_uri = || {
        let options = TemplateOptions::new("tpl", TemplateState::Absent);
        resolve(&ctx, options, current_user_key(&ctx))
    };
    let h2 = "qemu+ssh://root@h2/system";
    let h3 = "qemu+ssh://root@h3/system";
    record(h2);
    let req = request(&ctx, TemplateState::Present);
    assert_eq!(req.scope, "VIRTUP-tpl");
    assert!(observe(&hv, &ctx.data, &req).is_ok());
    let removal = absent_without_uri().unwrap();
    assert_eq!(
        (removal.uri.as_str(), removal.scope.as_str()),
        (h2, context::template_scope("tpl", h2).as_str())
    );
    record(h3);
    let e = format!("{:#}", absent_without_uri().err().unwrap());
    assert!(
        e.contains(&format!("lives on `{h2}`, `{h3}`: give `uri`")),
        "{e}"
    );
    // Records here win: the removal is this hypervisor's.
    Ledger::read(&ctx.data, "VIRTUP-tpl")
        .unwrap()
        .intend(&ctx.data, &req.uri, "default", "VIRTUP-tpl-g1.qcow2", None)
        .unwrap();
    assert_eq!(absent_without_uri().unwrap().uri, req.uri);
    assert_eq!(
        context::template_uris(&ctx.data, "tpl"),
        vec![h2.to_owned(), h3.to_owned(), req.uri.clone()]
    );
}

/// One hypervisor spelled two ways (another login, this machine over SSH) would get two sets of records
/// for one pool: the second spelling is refused for a build, naming the first; a removal is not.
#[test]
fn a_template_s_hypervisor_spelled_another_way_is_refused() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let on = |uri: &str, state| {
        let mut options = TemplateOptions::new("tpl", state);
        options.layer.os_version = Some("debian-12".into());
        options.layer.uri = Some(uri.into());
        resolve(&ctx, options, current_user_key(&ctx)).map(|r| r.uri)
    };
    let h2 = "qemu+ssh://root@h2/system";
    Ledger::read(&ctx.data, &context::template_scope("tpl", h2))
        .unwrap()
        .intend(&ctx.data, h2, "default", "VIRTUP-tpl-g1.qcow2", None)
        .unwrap();
    for other in ["qemu+ssh://h2/system", "qemu+ssh://root@H2:22/system"] {
        let e = format!("{:#}", on(other, TemplateState::Present).unwrap_err());
        assert!(
            e.contains(&format!(
                "recorded on `{h2}`, which may be the hypervisor `{other}`"
            )),
            "{e}"
        );
        assert_eq!(on(other, TemplateState::Absent).unwrap(), other);
    }
    assert!(on("qemu+ssh://root@h3/system", TemplateState::Present).is_ok());
    // This machine over SSH is this machine's hypervisor.
    Ledger::read(&ctx.data, "VIRTUP-tpl")
        .unwrap()
        .intend(
            &ctx.data,
            "qemu:///system",
            "default",
            "VIRTUP-tpl-g1.qcow2",
            None,
        )
        .unwrap();
    let e = format!(
        "{:#}",
        on("qemu+ssh://localhost/system", TemplateState::Present).unwrap_err()
    );
    assert!(e.contains("recorded on `qemu:///system`"), "{e}");
}
