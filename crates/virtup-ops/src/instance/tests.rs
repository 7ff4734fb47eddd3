//! The instance operation without the lab: option resolution, and converge against libvirt's `test:///default` driver.

use super::*;
use crate::Quiet;

/// `virt-sysprep-args` are never accepted and ignored: given, the clone is prepared by virt-sysprep.
#[test]
fn virt_sysprep_args_take_the_sysprep_path() {
    let args = vec!["--selinux-relabel".to_owned()];
    assert_eq!(customize_path(Customize::Auto, &[]), Customize::Auto);
    assert_eq!(customize_path(Customize::Sysprep, &[]), Customize::Sysprep);
    assert_eq!(customize_path(Customize::Auto, &args), Customize::Sysprep);
    assert_eq!(
        customize_path(Customize::Sysprep, &args),
        Customize::Sysprep
    );
}

use std::cell::RefCell;

use tempfile::TempDir;

use crate::test_support::{context, test_hv, volume_exists, POOL};

fn options(name: &str, state: InstanceState) -> InstanceOptions {
    let mut options = InstanceOptions::new(name, state);
    options.template = Some("tpl".into());
    options.layer.pool = Some(POOL.into());
    options
}

/// What a run told its reporter, in order.
#[derive(Default)]
struct Recorder(RefCell<Vec<String>>);

impl Reporter for Recorder {
    fn changed(&self) {
        self.0.borrow_mut().push("changed".into());
    }
    fn stage(&self, text: &str) {
        self.0.borrow_mut().push(format!("stage {text}"));
    }
}

/// The error of a run that must fail, with its causes (`{:#}`).
fn refusal(ctx: &Context, hv: &Hypervisor, req: &Request, mode: Mode) -> String {
    format!("{:#}", converge(ctx, hv, req, mode, &Quiet).unwrap_err())
}

/// Template `tpl` at generation 1, made by this data dir: its tagged domain uses its volume.
/// Resolves the options and converges them; the run must succeed.
fn run(ctx: &Context, hv: &Hypervisor, o: InstanceOptions, mode: Mode) -> InstanceReport {
    converge(ctx, hv, &resolve(ctx, o).unwrap(), mode, &Quiet).unwrap()
}

fn template(hv: &Hypervisor, ctx: &Context) {
    let volume = virtup_core::template::volume_name("tpl", 1, "qcow2");
    let disk = hv
        .create_volume(POOL, &VolumeSpec::new(&volume, 1 << 20, ImageFormat::Qcow2))
        .unwrap();
    let mut spec = DomainSpec::new(
        virtup_core::template::domain_name("tpl"),
        256,
        1,
        VirtType::Qemu,
    );
    spec.disks = vec![DiskSpec::disk(&disk.path, ImageFormat::Qcow2)];
    let mut tag = VirtupTag::new(TagKind::Template, "tpl");
    tag.generation = 1;
    tag.owner = ctx.data.owner_id().unwrap();
    spec.metadata = Some(tag);
    hv.define(&spec).unwrap();
}

/// Instance `name` as a create leaves it: tagged with `owner`, using `name.qcow2`, listing `owned`.
fn instance(hv: &Hypervisor, name: &str, owner: Option<String>, owned: &[&str]) {
    let disk = hv
        .create_volume(
            POOL,
            &VolumeSpec::new(format!("{name}.qcow2"), 1 << 20, ImageFormat::Qcow2),
        )
        .unwrap();
    let mut spec = DomainSpec::new(name, 256, 1, VirtType::Qemu);
    spec.disks = vec![DiskSpec::disk(&disk.path, ImageFormat::Qcow2)];
    let mut tag = VirtupTag::new(TagKind::Instance, name);
    tag.template = Some("tpl".into());
    tag.generation = 1;
    tag.owner = owner;
    tag.owned_volumes = owned.iter().map(|v| v.to_string()).collect();
    spec.metadata = Some(tag);
    hv.define(&spec).unwrap();
}

#[test]
fn a_check_run_plans_the_clone_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let req = resolve(&ctx, options("web1", InstanceState::Running)).unwrap();
    let report = converge(&ctx, &hv, &req, Mode::Check, &Quiet).unwrap();
    assert!(report.changed);
    assert!(report.msg.contains("clone"), "{}", report.msg);
    let (before, after) = report.diff.expect("a planned run has a diff");
    assert_eq!(before.state, "absent");
    assert_eq!(after.state, "running");
    assert_eq!(after.shape.map(|s| s.generation), Some(Some(1)));
    assert!(report.instance.is_none(), "nothing exists to describe");
    assert!(hv.domain("web1").unwrap().is_none());
    assert!(!volume_exists(&hv, "web1.qcow2"));
    assert!(InstanceMeta::read(&ctx.data, "web1").unwrap().is_none());
}

/// A template whose seal was cut short is no base for a clone: refused before any side effect.
#[test]
fn a_template_whose_seal_did_not_finish_is_not_cloned() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let mut tag = hv.tag("VIRTUP-tpl").unwrap().unwrap();
    tag.digest = Some(crate::template::UNSEALED_DIGEST.into());
    hv.set_tag("VIRTUP-tpl", &tag).unwrap();
    let req = resolve(&ctx, options("web1", InstanceState::Running)).unwrap();
    let e = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap_err();
    assert!(format!("{e:#}").contains("seal did not finish"), "{e:#}");
    assert!(hv.domain("web1").unwrap().is_none());
    assert!(!volume_exists(&hv, "web1.qcow2"));
}

#[test]
fn a_missing_template_is_a_planned_change_in_a_check_run_and_an_error_before_any_side_effect() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, false);
    let hv = test_hv();
    let req = resolve(&ctx, options("web1", InstanceState::Running)).unwrap();
    let report = converge(&ctx, &hv, &req, Mode::Check, &Quiet).unwrap();
    assert!(report.changed);
    assert!(report.diff.is_none());
    assert!(
        report.warnings[0].contains("does not exist yet"),
        "{:?}",
        report.warnings
    );
    let recorder = Recorder::default();
    let e = converge(&ctx, &hv, &req, Mode::Apply, &recorder).unwrap_err();
    assert!(
        format!("{e:#}").contains("template `tpl` does not exist"),
        "{e:#}"
    );
    assert!(recorder.0.borrow().is_empty(), "{:?}", recorder.0.borrow());
    assert!(!ctx.paths.data_dir.exists(), "no data dir was made");
}

/// The tag lists two volumes; the domain uses one, and no ledger proves the other: only the one goes.
#[test]
fn absent_deletes_what_is_proven_and_leaves_a_look_alike_volume() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(
        &hv,
        "web3",
        ctx.data.owner_id().unwrap(),
        &["web3.qcow2", "web3-config.iso"],
    );
    hv.create_volume(
        POOL,
        &VolumeSpec::new("web3-config.iso", 1 << 10, ImageFormat::Raw),
    )
    .unwrap();
    let req = resolve(&ctx, options("web3", InstanceState::Absent)).unwrap();
    let check = converge(&ctx, &hv, &req, Mode::Check, &Quiet).unwrap();
    assert!(check.changed);
    assert!(
        hv.domain("web3").unwrap().is_some(),
        "check changed nothing"
    );
    let recorder = Recorder::default();
    let report = converge(&ctx, &hv, &req, Mode::Apply, &recorder).unwrap();
    assert!(report.changed);
    // Each step is announced, then marked as a change before it touches anything.
    let events = recorder.0.borrow();
    assert!(events[0].starts_with("stage `web3`: "), "{events:?}");
    assert_eq!(events[1], "changed", "{events:?}");
    assert!(hv.domain("web3").unwrap().is_none());
    assert!(!volume_exists(&hv, "web3.qcow2"));
    assert!(
        volume_exists(&hv, "web3-config.iso"),
        "not proven, not deleted"
    );
    let again = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(!again.changed, "{}", again.msg);
}

/// A domain named as virtup would name it, but untagged or another data dir's, is never touched.
#[test]
fn a_look_alike_domain_is_left_alone() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(
        &hv,
        "web4",
        Some("another-data-dir".into()),
        &["web4.qcow2"],
    );
    let absent = resolve(&ctx, options("web4", InstanceState::Absent)).unwrap();
    let report = converge(&ctx, &hv, &absent, Mode::Apply, &Quiet).unwrap();
    assert!(!report.changed, "{}", report.msg);
    assert!(
        report.warnings[0].contains("not made by virtup with this data dir"),
        "{:?}",
        report.warnings
    );
    let present = resolve(&ctx, options("web4", InstanceState::Present)).unwrap();
    let e = converge(&ctx, &hv, &present, Mode::Apply, &Quiet).unwrap_err();
    assert!(format!("{e:#}").contains("refusing to touch it"), "{e:#}");
    assert!(hv.domain("web4").unwrap().is_some());
    assert!(volume_exists(&hv, "web4.qcow2"));
}

/// `present` with another size on a domain that is off: resized in place, reported, then nothing to do.
#[test]
fn present_resizes_in_place_and_describes_the_instance() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(&hv, "web5", ctx.data.owner_id().unwrap(), &["web5.qcow2"]);
    let mut opts = options("web5", InstanceState::Present);
    opts.layer.memory = Some(512);
    opts.layer.vcpus = Some(2);
    let req = resolve(&ctx, opts).unwrap();
    let report = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(report.changed, "{}", report.msg);
    let (before, after) = report.diff.unwrap();
    assert_eq!(before.shape.unwrap().memory_mib, 256);
    assert_eq!(after.shape.unwrap().memory_mib, 512);
    let facts = report.instance.expect("a present instance is described");
    assert_eq!(facts.state, "present");
    assert_eq!(facts.host_key_alias, "web5");
    assert_eq!(facts.disk.as_deref(), Some("/default-pool/web5.qcow2"));
    assert_eq!(
        facts.outcome,
        Some(Outcome {
            created: false,
            playbook: None
        })
    );
    let again = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(!again.changed, "{}", again.msg);
}

// Clones with scripted tool runs: virt-sysprep cannot run without the lab, so the test answers it
// (virtup_guest::script) and checks what it was asked; everything else is the real code on the test driver.

use virtup_core::ownership::Ledger;
use virtup_guest::script::{Reply, Script};

/// `web6` cloned from `tpl` by the sysprep path, with an explicit password and extra sysprep arguments.
fn sysprep_clone(ctx: &Context) -> Request {
    let mut o = options("web6", InstanceState::Present);
    o.customize = Customize::Sysprep;
    o.password = Some("Clone-S3cret".into());
    o.root_password = Some("Root-S3cret".into());
    o.layer.virt_sysprep_args = Some(vec!["--timezone".into(), "UTC".into()]);
    resolve(ctx, o).unwrap()
}

#[test]
fn a_sysprep_clone_prepares_its_own_overlay_and_defines_the_tagged_domain() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    // What virt-sysprep would copy into the guest, read while it "runs": the staged identity.
    let staged = std::rc::Rc::new(RefCell::new(Vec::<(String, Vec<u8>)>::new()));
    let seen = staged.clone();
    let script = Script::install(move |cmd| {
        if cmd.get_program() != "virt-sysprep" {
            return None;
        }
        let argv = cmd.argv();
        let copy_in = argv.windows(2).find(|w| w[0] == "--copy-in")?;
        let dir = copy_in[1].split(':').next()?;
        for entry in std::fs::read_dir(dir).ok()? {
            let entry = entry.ok()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            seen.borrow_mut()
                .push((name, std::fs::read(entry.path()).ok()?));
        }
        Some(Reply::ok())
    });
    let req = sysprep_clone(&ctx);
    let report = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(report.changed, "{}", report.msg);
    let staged = staged.borrow();
    let file = |name: &str| {
        staged
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_else(|| panic!("`{name}` not staged: {staged:?}"))
    };
    assert_eq!(file("hostname").trim(), "web6");
    let shadow = file("shadow");
    assert!(shadow.starts_with("root:$6$"), "hashes only: {shadow}");
    assert!(!shadow.contains("S3cret"), "{shadow}");

    let runs = script.runs();
    assert_eq!(runs.len(), 1, "one virt-sysprep run, nothing else scripted");
    let argv = runs[0].argv();
    assert_eq!(argv[0], "virt-sysprep");
    let disk = argv.windows(2).find(|w| w[0] == "-a").map(|w| w[1].clone());
    assert_eq!(
        disk.as_deref(),
        Some("/default-pool/web6.qcow2"),
        "the clone's own disk, never the template's: {argv:?}"
    );
    assert!(
        argv.ends_with(&["--timezone".into(), "UTC".into()]),
        "{argv:?}"
    );
    let copy_in = argv.windows(2).find(|w| w[0] == "--copy-in").unwrap();
    let staged_dir = copy_in[1].split(':').next().unwrap();
    assert!(
        !std::path::Path::new(staged_dir).exists(),
        "the staged identity (host private key) is removed after the run"
    );
    let joined = argv.join(" ");
    assert!(
        !joined.contains("Clone-S3cret") && !joined.contains("Root-S3cret"),
        "secrets reach virt-sysprep through files: {argv:?}"
    );
    assert_eq!(
        runs[0].get_env("LIBGUESTFS_BACKEND"),
        Some(Some(std::ffi::OsStr::new("direct"))),
        "the test driver has no KVM: the appliance runs under TCG"
    );

    let overlay = hv.volume_info(POOL, "web6.qcow2").unwrap().unwrap();
    let template_volume = virtup_core::template::volume_name("tpl", 1, "qcow2");
    assert_eq!(
        overlay.backing,
        Some(format!("/default-pool/{template_volume}")),
        "linked to the template's generation"
    );
    let tag = hv.tag("web6").unwrap().expect("the clone is tagged");
    assert_eq!(tag.template.as_deref(), Some("tpl"));
    assert_eq!(tag.generation, 1);
    assert_eq!(tag.owner, ctx.data.owner_id().unwrap());
    assert_eq!(tag.owned_volumes, ["web6.qcow2"]);
    assert!(
        !volume_exists(&hv, "web6-config.iso"),
        "the sysprep path has no config disk"
    );
    let ledger = Ledger::read(&ctx.data, "web6").unwrap();
    assert!(ledger.is_attached(&req.uri, POOL, "web6.qcow2"));
    let meta = InstanceMeta::read(&ctx.data, "web6").unwrap().unwrap();
    assert_eq!(meta.state.as_deref(), Some("present"));
    assert_eq!(meta.volumes, ["web6.qcow2"]);

    let again = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(!again.changed, "{}", again.msg);
    assert_eq!(script.runs().len(), 1, "nothing is prepared twice");
}

/// virt-sysprep fails: the error names it with its stderr, no domain exists, and the next run
/// deletes the half-made overlay (the ledger proves it) and clones again.
#[test]
fn a_failed_sysprep_is_reported_and_the_next_run_finishes_the_clone() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let req = sysprep_clone(&ctx);
    {
        let _script = Script::install(|cmd| {
            (cmd.get_program() == "virt-sysprep")
                .then(|| Reply::fail(1, "virt-sysprep: error: no operating systems were found"))
        });
        let e = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("virt-sysprep could not prepare the clone"),
            "{e}"
        );
        assert!(e.contains("no operating systems were found"), "{e}");
    }
    assert!(hv.domain("web6").unwrap().is_none());
    let ledger = Ledger::read(&ctx.data, "web6").unwrap();
    assert!(
        ledger.entry(&req.uri, POOL, "web6.qcow2").is_some(),
        "the half-made overlay is recorded as virtup's"
    );

    let script = Script::install(|cmd| (cmd.get_program() == "virt-sysprep").then(Reply::ok));
    let report = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(report.changed, "{}", report.msg);
    assert_eq!(
        report.msg,
        "delete leftover volumes web6.qcow2; clone from template generation 1"
    );
    assert_eq!(script.runs().len(), 1);
    assert!(hv.domain("web6").unwrap().is_some());
    assert!(volume_exists(&hv, "web6.qcow2"));
}

/// An instance lives where its metadata says: a run for the same name on another hypervisor is
/// refused before it changes anything, and a removal that names no hypervisor goes there.
#[test]
fn an_instance_name_lives_on_one_hypervisor() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    let data = ctx.open_data_dir().unwrap();
    let mut meta = InstanceMeta::new("web1", "tpl");
    meta.uri = Some("qemu+ssh://root@hv2/system".into());
    meta.write(&data).unwrap();
    let mut here = options("web1", InstanceState::Running);
    here.layer.uri = Some("test:///default".into());
    let req = resolve(&ctx, here).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let e = converge(&ctx, &hv, &req, mode, &Quiet).unwrap_err();
        assert!(
            format!("{e:#}").contains("instance `web1` lives on `qemu+ssh://root@hv2/system`"),
            "{e:#}"
        );
    }
    assert!(hv.domain("web1").unwrap().is_none());
    // A removal naming this hypervisor would drop the record of the other one's instance: refused.
    let mut remove_here = options("web1", InstanceState::Absent);
    remove_here.layer.uri = Some("test:///default".into());
    let req = resolve(&ctx, remove_here).unwrap();
    let e = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap_err();
    assert!(
        format!("{e:#}").contains("instance `web1` lives on `qemu+ssh://root@hv2/system`"),
        "{e:#}"
    );
    assert!(InstanceMeta::read(&data, "web1").unwrap().is_some());
    // Without a `uri`, the removal is addressed to where the instance lives.
    let req = resolve(&ctx, options("web1", InstanceState::Absent)).unwrap();
    assert_eq!(req.uri, "qemu+ssh://root@hv2/system");
}

/// virt-sysprep on a remote clone works on a copy written back whole: a qcow2 clone goes there, a
/// raw one (whose holes would be allocated in the remote pool) is refused before anything happens,
/// naming the way out; a removal is never refused for it.
#[test]
fn a_raw_sysprep_clone_on_a_remote_hypervisor_is_refused_before_anything_happens() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let remote = "qemu+ssh://root@hv2/system";
    let with = |format: ImageFormat, customize: Customize, state: InstanceState| {
        let mut o = options("web1", state);
        o.layer.uri = Some(remote.into());
        o.layer.image_format = Some(format);
        o.customize = customize;
        resolve(&ctx, o)
    };
    // (A request holds secrets and prints nothing, so no unwrap_err.)
    let e = match with(ImageFormat::Raw, Customize::Sysprep, InstanceState::Running) {
        Err(e) => e,
        Ok(_) => panic!("a raw sysprep clone on a remote hypervisor was accepted"),
    };
    let msg = format!("{e:#}");
    assert!(
        msg.contains(remote)
            && msg.contains("image_format: qcow2")
            && msg.contains("customize: auto"),
        "{msg}"
    );
    assert!(with(
        ImageFormat::Qcow2,
        Customize::Sysprep,
        InstanceState::Running
    )
    .is_ok());
    assert!(with(ImageFormat::Raw, Customize::Auto, InstanceState::Running).is_ok());
    assert!(with(ImageFormat::Raw, Customize::Sysprep, InstanceState::Absent).is_ok());
    assert!(!dir.path().join("data/instance/web1.json").exists());
}

/// virt-up 2.2.0's metadata names no hypervisor: its instance lives on the default one, and a run
/// on another hypervisor neither forgets its records nor clones the name there.
#[test]
fn metadata_without_a_uri_lives_on_the_default_hypervisor() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    let data = ctx.open_data_dir().unwrap();
    let mut meta = InstanceMeta::new("web1", "tpl");
    meta.uri = None;
    meta.write(&data).unwrap();
    let default = context::default_uri(&ctx.config, &ctx.paths);
    for state in [InstanceState::Absent, InstanceState::Present] {
        let mut there = options("web1", state);
        there.layer.uri = Some("qemu+ssh://root@hv2/system".into());
        let req = resolve(&ctx, there).unwrap();
        // The connection is to `test:///default`; the request says hv2, as a real run would connect.
        let e = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("instance `web1` lives on `{default}`")),
            "{state:?}: {e:#}"
        );
        assert!(InstanceMeta::read(&data, "web1").unwrap().is_some());
    }
    assert!(hv.domain("web1").unwrap().is_none());
    // Without a `uri`, the removal goes to the default hypervisor.
    let req = resolve(&ctx, options("web1", InstanceState::Absent)).unwrap();
    assert_eq!(req.uri, default);
}

/// Instance `name` made by this data dir with metadata naming `mac` (not written yet).
fn instance_with_mac(hv: &Hypervisor, ctx: &Context, name: &str, mac: &str) -> InstanceMeta {
    instance(
        hv,
        name,
        ctx.data.owner_id().unwrap(),
        &[&format!("{name}.qcow2")],
    );
    let mut meta = InstanceMeta::new(name, "tpl");
    meta.mac = Some(mac.into());
    meta
}

/// `address` on the test driver's `default` network: a look-alike entry is refused and left, the
/// reservation is added once (check mode first), moved, described, and removed with the instance.
#[test]
fn a_fixed_address_is_reserved_moved_and_removed_and_a_look_alike_entry_is_never_touched() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance_with_mac(&hv, &ctx, "web7", "52:54:00:77:77:77")
        .write(&ctx.data)
        .unwrap();
    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
    // Someone else's entry holds .60.
    hv.add_dhcp_host("default", "52:54:00:aa:aa:aa", "db", ip("192.168.122.60"))
        .unwrap();
    let entries = |hv: &Hypervisor| -> Vec<String> {
        let mut v: Vec<String> = hv
            .network_dhcp("default")
            .unwrap()
            .hosts()
            .map(|h| h.describe())
            .collect();
        v.sort();
        v
    };
    let foreign = entries(&hv);
    let with_address = |a: &str| {
        let mut o = options("web7", InstanceState::Present);
        o.address = Some(ip(a));
        resolve(&ctx, o).unwrap()
    };

    let e = converge(
        &ctx,
        &hv,
        &with_address("192.168.122.60"),
        Mode::Apply,
        &Quiet,
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("`address`")
            && e.contains("already reserved")
            && e.contains("52:54:00:aa:aa:aa"),
        "{e}"
    );
    assert_eq!(entries(&hv), foreign, "a refusal changes nothing");

    let req = with_address("192.168.122.50");
    let check = converge(&ctx, &hv, &req, Mode::Check, &Quiet).unwrap();
    assert!(
        check.changed && check.msg.contains("reserve address 192.168.122.50"),
        "{}",
        check.msg
    );
    let (before, after) = check.diff.unwrap();
    assert_eq!(before.shape.unwrap().address, None);
    assert_eq!(
        after.shape.unwrap().address.as_deref(),
        Some("192.168.122.50")
    );
    assert_eq!(entries(&hv), foreign, "check mode changes nothing");

    let report = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(report.changed);
    let facts = report.instance.unwrap();
    assert_eq!(facts.reserved_address.as_deref(), Some("192.168.122.50"));
    assert!(hv.network_dhcp("default").unwrap().has(
        "52:54:00:77:77:77",
        ip("192.168.122.50"),
        "web7"
    ));
    let record = InstanceMeta::read(&ctx.data, "web7")
        .unwrap()
        .unwrap()
        .reservation;
    assert!(record.is_some_and(|r| r.confirmed && r.network == "default"));
    let again = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(!again.changed, "{}", again.msg);
    // Without `address` the reservation stays.
    let plain = resolve(&ctx, options("web7", InstanceState::Present)).unwrap();
    assert!(
        !converge(&ctx, &hv, &plain, Mode::Apply, &Quiet)
            .unwrap()
            .changed
    );

    let moved = converge(
        &ctx,
        &hv,
        &with_address("192.168.122.51"),
        Mode::Apply,
        &Quiet,
    )
    .unwrap();
    assert!(moved.changed, "{}", moved.msg);
    let now = entries(&hv);
    assert!(now.iter().any(|e| e.contains("192.168.122.51")), "{now:?}");
    assert!(!now.iter().any(|e| e.contains("192.168.122.50")), "{now:?}");

    let absent = resolve(&ctx, options("web7", InstanceState::Absent)).unwrap();
    converge(&ctx, &hv, &absent, Mode::Apply, &Quiet).unwrap();
    assert_eq!(entries(&hv), foreign, "only virtup's entry went");
}

/// An entry with the instance's name that virtup did not add is in the way of its reservation, and
/// a deleted instance's record never lets virtup remove it.
#[test]
fn an_entry_named_like_the_instance_is_refused_and_survives_its_delete() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    let mut meta = instance_with_mac(&hv, &ctx, "web8", "52:54:00:88:88:88");
    // A record of a reservation that is not there (a run killed before libvirt took it) proves nothing.
    meta.reservation = Some(virtup_core::Reservation {
        network: "default".into(),
        mac: "52:54:00:88:88:88".into(),
        name: "web8".into(),
        ip: "192.168.122.80".parse().unwrap(),
        confirmed: false,
    });
    meta.write(&ctx.data).unwrap();
    let look_alike: Ipv4Addr = "192.168.122.80".parse().unwrap();
    hv.add_dhcp_host("default", "52:54:00:bb:bb:bb", "web8", look_alike)
        .unwrap();
    let mut o = options("web8", InstanceState::Present);
    o.address = Some("192.168.122.81".parse().unwrap());
    let e = converge(&ctx, &hv, &resolve(&ctx, o).unwrap(), Mode::Check, &Quiet).unwrap_err();
    assert!(format!("{e:#}").contains("named `web8`"), "{e:#}");
    let absent = resolve(&ctx, options("web8", InstanceState::Absent)).unwrap();
    let report = converge(&ctx, &hv, &absent, Mode::Apply, &Quiet).unwrap();
    assert!(!report.msg.contains("reservation"), "{}", report.msg);
    assert!(hv
        .network_dhcp("default")
        .unwrap()
        .has("52:54:00:bb:bb:bb", look_alike, "web8"));
}

/// A clone's disk is at least its template's: a smaller `size` fails before anything is made, in
/// check mode too; a larger one on the sysprep path is said to leave the filesystem as it is.
#[test]
fn a_smaller_size_is_refused_and_a_larger_one_on_the_sysprep_path_is_warned_about() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let mut small = options("web9", InstanceState::Present);
    small.layer.size = Some("512K".into());
    let req = resolve(&ctx, small).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &req, mode);
        assert!(e.contains("`size`: 512 KiB is smaller"), "{e}");
        assert!(e.contains("template `tpl` (1 MiB)"), "{e}");
    }
    assert!(hv.domain("web9").unwrap().is_none());
    assert!(!volume_exists(&hv, "web9.qcow2"));
    assert!(InstanceMeta::read(&ctx.data, "web9").unwrap().is_none());

    // A template whose tag predates the first-boot revision: its first boot cannot grow the root.
    let mut auto = options("web9", InstanceState::Present);
    auto.layer.size = Some("2M".into());
    let warnings = |o: InstanceOptions| run(&ctx, &hv, o, Mode::Check).warnings;
    let said = warnings(auto.clone());
    assert!(
        said.iter().any(|w| w.contains("change its `revision`")),
        "{said:?}"
    );
    let mut tag = hv.tag("VIRTUP-tpl").unwrap().unwrap();
    tag.firstboot = Some(virtup_guest::firstboot::REVISION);
    hv.set_tag("VIRTUP-tpl", &tag).unwrap();
    let said = warnings(auto);
    assert!(
        !said.iter().any(|w| w.contains("root filesystem")),
        "{said:?}"
    );
    let mut big = options("web9", InstanceState::Present);
    big.layer.size = Some("2M".into());
    big.customize = Customize::Sysprep;
    let report = run(&ctx, &hv, big, Mode::Check);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("2 MiB disk") && w.contains("stays the template's 1 MiB")),
        "{:?}",
        report.warnings
    );
}

/// A reservation libvirt refuses (another run took the address between the check and the add)
/// leaves no metadata for an instance that had none, and the other entry as it was.
#[test]
fn a_refused_reservation_of_a_new_instance_leaves_no_record() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    let ip: Ipv4Addr = "192.168.122.70".parse().unwrap();
    hv.add_dhcp_host("default", "52:54:00:aa:aa:70", "other", ip)
        .unwrap();
    let target = crate::reservation::Target {
        name: "web10",
        template: "tpl",
        uri: "test:///default",
        pool: POOL,
        network: "default",
        nic_mac: None,
    };
    let e = crate::reservation::reserve(&ctx.data, &hv, &target, ip).unwrap_err();
    assert!(format!("{e:#}").contains("DHCP host reservation"), "{e:#}");
    assert!(InstanceMeta::read(&ctx.data, "web10").unwrap().is_none());
    let dhcp = hv.network_dhcp("default").unwrap();
    assert_eq!(dhcp.hosts().count(), 1);
    assert!(dhcp.has("52:54:00:aa:aa:70", ip, "other"));
}

/// The template's tag says its first boot makes filesystems on data disks.
fn with_current_firstboot(hv: &Hypervisor) {
    let mut tag = hv.tag("VIRTUP-tpl").unwrap().unwrap();
    tag.firstboot = Some(virtup_guest::firstboot::REVISION);
    hv.set_tag("VIRTUP-tpl", &tag).unwrap();
}

/// A blank qcow2 virtio data disk of `size` bytes, not kept.
fn blank(size: u64) -> DataDisk {
    DataDisk {
        size,
        format: ImageFormat::Qcow2,
        bus: DataDiskBus::Virtio,
        filesystem: None,
        mount: None,
        keep: false,
    }
}

/// `blank` with a filesystem mounted at `mount`.
fn formatted(size: u64, fs: virtup_core::data_disk::Filesystem, mount: &str) -> DataDisk {
    DataDisk {
        filesystem: Some(fs),
        mount: Some(mount.into()),
        ..blank(size)
    }
}

#[test]
fn data_disks_are_owned_and_deleted_with_the_instance_and_a_kept_one_is_let_go() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    with_current_firstboot(&hv);
    let kept = DataDisk {
        format: ImageFormat::Raw,
        bus: DataDiskBus::Scsi,
        keep: true,
        ..blank(1 << 20)
    };
    let mut o = options("web10", InstanceState::Present);
    o.disks = Some(vec![
        formatted(
            2 << 20,
            virtup_core::data_disk::Filesystem::Ext4,
            "/srv/data",
        ),
        kept.clone(),
    ]);
    let check = run(&ctx, &hv, o.clone(), Mode::Check);
    let after = check.diff.unwrap().1.shape.unwrap();
    let shown: Vec<String> = after.disks.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "web10.data1.qcow2 (2 MiB, virtio, ext4 on /srv/data)",
            "web10.data2.raw (1 MiB, scsi, kept)"
        ]
    );
    assert!(
        !volume_exists(&hv, "web10.data1.qcow2"),
        "a check run makes nothing"
    );

    // Made on the sysprep path (the test driver cannot upload a config disk), so with no filesystem.
    let _script = Script::install(|cmd| (cmd.get_program() == "virt-sysprep").then(Reply::ok));
    o.customize = Customize::Sysprep;
    o.disks = Some(vec![blank(2 << 20), kept]);
    let req = resolve(&ctx, o.clone()).unwrap();
    let made = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(made.changed, "{}", made.msg);
    let data1 = hv.volume_info(POOL, "web10.data1.qcow2").unwrap().unwrap();
    assert_eq!(data1.capacity_bytes, 2 << 20);
    assert_eq!(data1.backing, None, "a data disk is blank, not an overlay");
    let data2 = hv.volume_info(POOL, "web10.data2.raw").unwrap().unwrap();
    assert_eq!(data2.format.as_deref(), Some("raw"));
    let xml = hv.inactive_xml("web10").unwrap();
    for needle in [
        "<serial>virtup-data1</serial>",
        "<serial>virtup-data2</serial>",
        "bus='scsi'",
        "model='virtio-scsi'",
        &data1.path,
        &data2.path,
    ] {
        assert!(xml.contains(needle), "{needle}: {xml}");
    }
    let tag = hv.tag("web10").unwrap().unwrap();
    assert_eq!(
        tag.owned_volumes,
        ["web10.qcow2", "web10.data1.qcow2"],
        "a kept disk is never listed for deletion"
    );
    let ledger = Ledger::read(&ctx.data, "web10").unwrap();
    assert!(ledger.is_attached(&req.uri, POOL, "web10.data2.raw"));
    let facts = made.instance.unwrap();
    assert_eq!(facts.data_disks.len(), 2);
    assert_eq!(facts.data_disks[1].serial, "virtup-data2");
    assert!(facts.data_disks[1].keep);

    // The same list again: nothing to do, nothing said. Another list: said, not done.
    let again = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(
        !again.changed && again.warnings.is_empty(),
        "{:?}",
        again.warnings
    );
    let mut other = o.clone();
    other.disks = Some(vec![blank(1 << 30)]);
    let said = run(&ctx, &hv, other, Mode::Apply);
    assert!(!said.changed);
    assert!(
        said.warnings
            .iter()
            .any(|w| w.contains("keeps the data disks it was made with (web10.data1.qcow2 (2 MiB")),
        "{:?}",
        said.warnings
    );
    let still = hv.volume_info(POOL, "web10.data1.qcow2").unwrap().unwrap();
    assert_eq!(still.capacity_bytes, 2 << 20, "the disk is as it was made");

    // Removed: its disks go, the kept one stays and is no longer virtup's.
    let gone = run(
        &ctx,
        &hv,
        options("web10", InstanceState::Absent),
        Mode::Apply,
    );
    assert!(
        gone.warnings
            .iter()
            .any(|w| w.contains("`web10.data2.raw` of `web10` stays")),
        "{:?}",
        gone.warnings
    );
    assert!(!volume_exists(&hv, "web10.data1.qcow2"));
    assert!(volume_exists(&hv, "web10.data2.raw"));
    assert!(Ledger::read(&ctx.data, "web10").unwrap().volumes.is_empty());
    // Made again, the kept volume is in the way: refused, naming it, and left as it is.
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &req, mode);
        assert!(
            e.contains("`web10.data2.raw`") && e.contains("never touches"),
            "{e}"
        );
    }
    assert!(volume_exists(&hv, "web10.data2.raw"));
    assert!(hv.domain("web10").unwrap().is_none());
}

/// `keep` is the safe direction: asked only at the delete, it is honoured; and a kept disk of a
/// domain undefined by hand is let go of, not deleted as a leftover.
#[test]
fn a_keep_asked_at_the_delete_is_honoured_and_a_domain_gone_by_hand_leaves_its_kept_disk() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let _script = Script::install(|cmd| (cmd.get_program() == "virt-sysprep").then(Reply::ok));
    let kept = DataDisk {
        keep: true,
        ..blank(1 << 20)
    };
    let mut o = options("web12", InstanceState::Present);
    o.customize = Customize::Sysprep;
    o.disks = Some(vec![blank(2 << 20), kept.clone()]);
    run(&ctx, &hv, o, Mode::Apply);
    let mut absent = options("web12", InstanceState::Absent);
    absent.disks = Some(vec![DataDisk {
        keep: true,
        ..blank(2 << 20)
    }]);
    let gone = run(&ctx, &hv, absent, Mode::Apply);
    assert!(
        gone.warnings
            .iter()
            .any(|w| w
                .contains("data disk `web12.data2.qcow2`, `web12.data1.qcow2` of `web12` stays")),
        "{:?}",
        gone.warnings
    );
    assert!(hv.domain("web12").unwrap().is_none());
    assert!(!volume_exists(&hv, "web12.qcow2"));
    assert!(
        volume_exists(&hv, "web12.data1.qcow2"),
        "kept as the delete asked"
    );
    assert!(volume_exists(&hv, "web12.data2.qcow2"), "kept as recorded");
    assert!(Ledger::read(&ctx.data, "web12").unwrap().volumes.is_empty());

    // A delete that let go of the disk it keeps, then failed before the undefine: the next run
    // with the same `keep` still keeps it, though the ledger no longer vouches for it.
    let mut o = options("web14", InstanceState::Present);
    o.customize = Customize::Sysprep;
    o.disks = Some(vec![blank(2 << 20)]);
    run(&ctx, &hv, o, Mode::Apply);
    let uri = resolve(&ctx, options("web14", InstanceState::Absent))
        .unwrap()
        .uri;
    let mut ledger = Ledger::read(&ctx.data, "web14").unwrap();
    ledger
        .forget(&ctx.data, &uri, POOL, "web14.data1.qcow2")
        .unwrap();
    let mut absent = options("web14", InstanceState::Absent);
    absent.disks = Some(vec![DataDisk {
        keep: true,
        ..blank(2 << 20)
    }]);
    run(&ctx, &hv, absent, Mode::Apply);
    assert!(hv.domain("web14").unwrap().is_none());
    assert!(volume_exists(&hv, "web14.data1.qcow2"), "still kept");
    assert!(!volume_exists(&hv, "web14.qcow2"));

    let mut o = options("web13", InstanceState::Present);
    o.customize = Customize::Sysprep;
    o.disks = Some(vec![kept]);
    run(&ctx, &hv, o, Mode::Apply);
    hv.undefine("web13").unwrap();
    let absent = resolve(&ctx, options("web13", InstanceState::Absent)).unwrap();
    converge(&ctx, &hv, &absent, Mode::Apply, &Quiet).unwrap();
    assert!(!volume_exists(&hv, "web13.qcow2"), "a leftover, proved");
    assert!(
        volume_exists(&hv, "web13.data1.qcow2"),
        "kept, though its domain went first"
    );
    assert!(Ledger::read(&ctx.data, "web13").unwrap().volumes.is_empty());
    assert!(InstanceMeta::read(&ctx.data, "web13").unwrap().is_none());
}

#[test]
fn a_look_alike_data_disk_is_never_touched_and_bad_combinations_are_refused_first() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    // A volume named exactly as web11's first data disk would be, made by someone else.
    hv.create_volume(
        POOL,
        &VolumeSpec::new("web11.data1.qcow2", 1 << 20, ImageFormat::Qcow2),
    )
    .unwrap();
    let mut o = options("web11", InstanceState::Present);
    o.disks = Some(vec![formatted(
        2 << 20,
        virtup_core::data_disk::Filesystem::Xfs,
        "/srv/x",
    )]);
    // The template's first boot predates filesystems on data disks.
    let req = resolve(&ctx, o.clone()).unwrap();
    let e = refusal(&ctx, &hv, &req, Mode::Check);
    assert!(
        e.contains("`disks`") && e.contains("makes no filesystem"),
        "{e}"
    );
    with_current_firstboot(&hv);
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &req, mode);
        assert!(e.contains("`web11.data1.qcow2`"), "{e}");
    }
    let kept = hv.volume_info(POOL, "web11.data1.qcow2").unwrap().unwrap();
    assert_eq!(kept.capacity_bytes, 1 << 20, "the look-alike is as it was");
    assert!(!volume_exists(&hv, "web11.qcow2"));
    assert!(hv.domain("web11").unwrap().is_none());
    assert!(InstanceMeta::read(&ctx.data, "web11").unwrap().is_none());

    // A filesystem needs the first boot's config disk; a warm resume has no SCSI controller.
    let mut sysprep = o.clone();
    sysprep.customize = Customize::Sysprep;
    let e = format!("{:#}", resolve(&ctx, sysprep).err().unwrap());
    assert!(e.contains("`disks`") && e.contains("sysprep"), "{e}");
    let mut warm = options("web12", InstanceState::Running);
    warm.boot = Boot::Warm;
    warm.disks = Some(vec![DataDisk {
        bus: DataDiskBus::Scsi,
        ..blank(2 << 20)
    }]);
    let e = refusal(&ctx, &hv, &resolve(&ctx, warm).unwrap(), Mode::Check);
    assert!(e.contains("`boot`") && e.contains("SCSI data disk"), "{e}");
}

#[test]
fn a_static_address_reaches_the_guest_config_and_only_a_new_instance_changes_it() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    // What virt-sysprep copies into the guest (the test driver cannot upload a config disk).
    let staged = std::rc::Rc::new(RefCell::new(None::<String>));
    let seen = staged.clone();
    let _script = Script::install(move |cmd| {
        if cmd.get_program() != "virt-sysprep" {
            return None;
        }
        let argv = cmd.argv();
        let copy_in = argv.windows(2).find(|w| w[0] == "--copy-in")?;
        let dir = copy_in[1].split(':').next()?;
        *seen.borrow_mut() = std::fs::read_to_string(format!("{dir}/static-ipv4")).ok();
        Some(Reply::ok())
    });
    let static_at = |a: &str| {
        let mut o = options("web13", InstanceState::Present);
        o.customize = Customize::Sysprep;
        o.address = Some(a.parse().unwrap());
        o.static_address = true;
        o
    };
    let req = resolve(&ctx, static_at("192.168.122.61")).unwrap();
    // A template whose first boot predates static addresses: refused before anything is made when
    // its own first boot would read the config disk (the sysprep path installs this virtup's).
    let mut auto = static_at("192.168.122.61");
    auto.customize = Customize::Auto;
    let e = refusal(&ctx, &hv, &resolve(&ctx, auto).unwrap(), Mode::Check);
    assert!(
        e.contains("`address_mode`") && e.contains("no static address"),
        "{e}"
    );
    assert!(InstanceMeta::read(&ctx.data, "web13").unwrap().is_none());
    let made = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(made.changed, "{}", made.msg);
    let mac = InstanceMeta::read(&ctx.data, "web13")
        .unwrap()
        .unwrap()
        .mac
        .unwrap();
    assert_eq!(
        staged.borrow().as_deref(),
        Some(format!("{mac} 192.168.122.61/24 192.168.122.1 192.168.122.1 - -\n").as_str()),
        "the network's prefix, and its own address as gateway (it forwards) and DNS"
    );
    let facts = made.instance.unwrap();
    assert_eq!(facts.static_address.as_deref(), Some("192.168.122.61/24"));
    assert_eq!(facts.reserved_address.as_deref(), Some("192.168.122.61"));

    // Another address would strand the guest on its static one: refused before anything changes.
    let other = resolve(&ctx, static_at("192.168.122.62")).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &other, mode);
        assert!(
            e.contains("`address`") && e.contains("static address 192.168.122.61/24"),
            "{e}"
        );
    }
    let meta = InstanceMeta::read(&ctx.data, "web13").unwrap().unwrap();
    assert_eq!(
        meta.reservation.map(|r| r.ip.to_string()).as_deref(),
        Some("192.168.122.61")
    );
    // The same address again: nothing to do.
    let again = converge(&ctx, &hv, &req, Mode::Apply, &Quiet).unwrap();
    assert!(
        !again.changed && again.warnings.is_empty(),
        "{:?}",
        again.warnings
    );

    // `static` needs an address; asked of an instance made without, it is a warning.
    let mut bare = options("web14", InstanceState::Present);
    bare.static_address = true;
    let e = format!("{:#}", resolve(&ctx, bare).err().unwrap());
    assert!(e.contains("`address_mode`"), "{e}");
    let mut dhcp = static_at("192.168.122.63");
    dhcp.name = "web14".into();
    dhcp.static_address = false;
    run(&ctx, &hv, dhcp.clone(), Mode::Apply);
    dhcp.static_address = true;
    let said = run(&ctx, &hv, dhcp, Mode::Check);
    assert!(
        said.warnings
            .iter()
            .any(|w| w.contains("applies when an instance is made")),
        "{:?}",
        said.warnings
    );
}

/// `nics`: each NIC where it was asked (network, bridge, macvtap), in order, with a MAC of its own
/// that a re-create keeps; a source the host lacks, or `network` given too, is refused before
/// anything is made; a later, different list is a warning, never a silent change.
#[test]
fn nics_are_plugged_in_order_with_stable_macs_and_missing_sources_are_refused_first() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let nics = |second: Nic| {
        Some(vec![
            NicDevice::virtio(Nic::Network("default".into())),
            NicDevice::virtio(second),
            NicDevice::virtio(Nic::Direct {
                dev: "eth1".into(),
                mode: virtup_core::nic::DirectMode::Vepa,
            }),
        ])
    };
    let mut o = options("web11", InstanceState::Present);

    // A source that is not there is refused before anything is made, in check mode as in a real run.
    o.nics = Some(vec![
        NicDevice::virtio(Nic::Network("default".into())),
        NicDevice::virtio(Nic::Network("nonet".into())),
    ]);
    let req = resolve(&ctx, o.clone()).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &req, mode);
        assert!(
            e.contains("`nics[2].network`") && e.contains("network `nonet` does not exist"),
            "{e}"
        );
    }
    assert!(
        !volume_exists(&hv, "web11.qcow2"),
        "refused before the disk"
    );
    assert!(hv.domain("web11").unwrap().is_none());
    // The test driver's host is libvirt's own fiction (one interface, eth1, not a bridge), so it is
    // asked as a remote host is: what it cannot confirm is a warning.
    o.nics = nics(Nic::Bridge("br-none".into()));
    let check = run(&ctx, &hv, o.clone(), Mode::Check);
    assert!(
        check
            .warnings
            .iter()
            .any(|w| w.contains("`nics[2].bridge`: `br-none`")
                && w.contains("interface driver does not list it")),
        "{:?}",
        check.warnings
    );
    o.nics = nics(Nic::Bridge("eth1".into()));
    let check = run(&ctx, &hv, o.clone(), Mode::Check);
    assert!(
        check
            .warnings
            .iter()
            .any(|w| w.contains("lists it as `ethernet`, not as a bridge")),
        "{:?}",
        check.warnings
    );
    let mut both = o.clone();
    both.layer.network = Some("default".into());
    both.nics = nics(Nic::Bridge("eth1".into()));
    let e = resolve(&ctx, both).err().unwrap().to_string();
    assert!(e.contains("`network`") && e.contains("`nics`"), "{e}");

    // The check's diff shows the NICs to be made.
    let after = check.diff.clone().unwrap().1.shape.unwrap();
    assert_eq!(
        after.nics,
        ["network default", "bridge eth1", "direct eth1 (vepa)"]
    );
    let mut warm = o.clone();
    warm.boot = Boot::Warm;
    warm.state = InstanceState::Running;
    let e = refusal(&ctx, &hv, &resolve(&ctx, warm).unwrap(), Mode::Check);
    // More NICs are no reason to boot cold (a resume hot-plugs each); the test template has no warm
    // image, and that is what the refusal says.
    assert!(!e.contains("NIC"), "{e}");
    assert!(e.contains("`boot`"), "{e}");

    // Made on the sysprep path (the test driver cannot upload a config disk).
    let _script = Script::install(|cmd| (cmd.get_program() == "virt-sysprep").then(Reply::ok));
    o.customize = Customize::Sysprep;
    // Each NIC with its own device model (`nics[N].model`), shown by the diff where not virtio.
    let mut modelled = nics(Nic::Bridge("eth1".into())).unwrap();
    modelled[0].model = NicModel::E1000;
    modelled[1].model = NicModel::Rtl8139;
    o.nics = Some(modelled);
    let check = run(&ctx, &hv, o.clone(), Mode::Check);
    let after = check.diff.clone().unwrap().1.shape.unwrap();
    assert_eq!(
        after.nics,
        [
            "network default (e1000)",
            "bridge eth1 (rtl8139)",
            "direct eth1 (vepa)"
        ]
    );
    let made = run(&ctx, &hv, o.clone(), Mode::Apply);
    assert!(made.changed, "{}", made.msg);
    let parsed = virtup_libvirt::parse_domain_xml(&hv.inactive_xml("web11").unwrap()).unwrap();
    let macs: Vec<String> = parsed
        .interfaces
        .iter()
        .map(|i| i.mac.clone().unwrap())
        .collect();
    assert_eq!(macs.len(), 3, "{parsed:?}");
    let models: Vec<Option<&str>> = parsed
        .interfaces
        .iter()
        .map(|i| i.model.as_deref())
        .collect();
    assert_eq!(
        models,
        [Some("e1000"), Some("rtl8139"), Some("virtio")],
        "{parsed:?}"
    );
    assert_eq!(parsed.interfaces[0].network.as_deref(), Some("default"));
    let xml = hv.inactive_xml("web11").unwrap();
    for needle in [
        "<interface type='bridge'>",
        "<source bridge='eth1'/>",
        "<interface type='direct'>",
        "<source dev='eth1' mode='vepa'/>",
    ] {
        assert!(xml.contains(needle), "{needle}: {xml}");
    }
    let file = virtup_core::macaddrs::MacAddrs::load(&ctx.data.macaddrs_file()).unwrap();
    assert_eq!(
        [
            file.get("web11"),
            file.get("web11#nic2"),
            file.get("web11#nic3")
        ],
        [
            Some(macs[0].as_str()),
            Some(macs[1].as_str()),
            Some(macs[2].as_str())
        ]
    );
    let facts = made.instance.unwrap();
    assert_eq!(facts.nic_model, Some("e1000"));
    let shown: Vec<(&str, &str, Option<&str>, &str, &str)> = facts
        .extra_nics
        .iter()
        .map(|n| (n.kind, n.source.as_str(), n.mode, n.model, n.mac.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("bridge", "eth1", None, "rtl8139", macs[1].as_str()),
            ("direct", "eth1", Some("vepa"), "virtio", macs[2].as_str())
        ]
    );

    // The same task again: nothing to do, nothing to say of the NICs; nor with a record from
    // before `model` (no model in it: the domain says which), nor with no record at all.
    let same = run(&ctx, &hv, o.clone(), Mode::Apply);
    assert!(!same.changed, "{}", same.msg);
    assert!(
        !same.warnings.iter().any(|w| w.contains("NIC")),
        "{:?}",
        same.warnings
    );
    // (virtup-ops reads JSON through virtup-core only: the record is edited as text.)
    let file = ctx.data.instance_file("web11");
    let record = std::fs::read_to_string(&file).unwrap();
    // Pretty-printed, one key a line: the model lines go, and a comma left before a `}`.
    let mut kept: Vec<String> = Vec::new();
    for line in record.lines() {
        let key = line.trim_start();
        if key.starts_with("\"model\":") || key.starts_with("\"nic_model\":") {
            continue;
        }
        if key.starts_with('}') {
            if let Some(last) = kept.last_mut() {
                *last = last.trim_end_matches(',').to_owned();
            }
        }
        kept.push(line.to_owned());
    }
    let older_record = kept.join("\n");
    assert!(
        !older_record.contains("model"),
        "every model is out of the record: {older_record}"
    );
    std::fs::write(&file, older_record).unwrap();
    let older = run(&ctx, &hv, o.clone(), Mode::Check);
    assert!(
        !older.warnings.iter().any(|w| w.contains("NIC")),
        "{:?}",
        older.warnings
    );
    let meta = InstanceMeta::read(&ctx.data, "web11").unwrap().unwrap();
    assert_eq!(meta.nic_model, None);
    assert_eq!(
        meta.extra_nics[0].model,
        NicModel::Virtio,
        "as all NICs were"
    );
    // A later task with other NICs changes nothing, and says which NICs the instance keeps.
    let keeps_its_nics = |task: InstanceOptions| {
        let said = run(&ctx, &hv, task, Mode::Apply);
        assert!(!said.changed, "{}", said.msg);
        assert!(
            said.warnings.iter().any(|w| w.contains(
                "keeps the NICs it was made with (network default (e1000), bridge eth1 (rtl8139), direct eth1 (vepa))"
            )),
            "{:?}",
            said.warnings
        );
    };
    // The same NICs with another model: the domain keeps the model it was made with.
    let mut remodelled = o.nics.clone().unwrap();
    remodelled[0].model = NicModel::Virtio;
    let mut other = o.clone();
    other.nics = Some(remodelled);
    keeps_its_nics(other);
    let kept = virtup_libvirt::parse_domain_xml(&hv.inactive_xml("web11").unwrap()).unwrap();
    assert_eq!(kept.interfaces[0].model.as_deref(), Some("e1000"));
    // Asked again with another list.
    o.nics = Some(vec![NicDevice::virtio(Nic::Network("default".into()))]);
    keeps_its_nics(o.clone());

    // Made again after a delete: the same MACs.
    run(
        &ctx,
        &hv,
        options("web11", InstanceState::Absent),
        Mode::Apply,
    );
    o.nics = nics(Nic::Bridge("eth1".into()));
    run(&ctx, &hv, o, Mode::Apply);
    let parsed = virtup_libvirt::parse_domain_xml(&hv.inactive_xml("web11").unwrap()).unwrap();
    let again: Vec<String> = parsed
        .interfaces
        .iter()
        .map(|i| i.mac.clone().unwrap())
        .collect();
    assert_eq!(again, macs, "a re-created instance keeps every NIC's MAC");
}

/// What sysfs says of an interface decides whether a local bridge or macvtap NIC can work.
#[test]
fn local_interfaces_are_told_apart_by_sysfs() {
    let dir = TempDir::new().unwrap();
    let net = dir.path();
    let make = |name: &str, kind: &str, extra: Option<&str>| {
        std::fs::create_dir_all(net.join(name)).unwrap();
        std::fs::write(net.join(name).join("type"), format!("{kind}\n")).unwrap();
        if let Some(extra) = extra {
            std::fs::create_dir_all(net.join(name).join(extra)).unwrap();
        }
    };
    make("br0", "1", Some("bridge"));
    make("eth0", "1", None);
    make("eth1", "1", Some("brport"));
    make("lo", "772", None);
    assert_eq!(LocalInterface::at(net, "br0"), LocalInterface::Bridge);
    assert_eq!(LocalInterface::at(net, "eth0"), LocalInterface::Ethernet);
    assert_eq!(LocalInterface::at(net, "eth1"), LocalInterface::BridgePort);
    assert_eq!(
        LocalInterface::at(net, "lo"),
        LocalInterface::Other("772".into())
    );
    assert_eq!(LocalInterface::at(net, "none0"), LocalInterface::Missing);
}

#[test]
fn cloud_init_is_checked_before_anything_is_made_and_applies_only_to_a_new_instance() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    // As the module's parser gives them (its own tests cover the parsing).
    let cloud = |user_data: Option<&str>, network_config: Option<&str>| {
        Some(CloudInit {
            user_data: user_data.map(str::to_owned),
            network_config: network_config.map(str::to_owned),
            vendor_data: None,
        })
    };
    let mut o = options("web15", InstanceState::Present);
    o.cloud_init = cloud(Some("#cloud-config\nruncmd: [[\"true\"]]\n"), None);

    // The test driver's disks are libvirt's fiction, as a remote pool is out of reach: whether the
    // template has cloud-init is a warning, not a guess. The create would add the seed volume.
    let check = run(&ctx, &hv, o.clone(), Mode::Check);
    assert!(
        check
            .warnings
            .iter()
            .any(|w| w.contains("`cloud_init`: cannot tell") && w.contains("has cloud-init")),
        "{:?}",
        check.warnings
    );
    let req = resolve(&ctx, o.clone()).unwrap();
    assert!(req.volume_names().contains(&"web15-cidata.iso".to_owned()));
    assert!(req
        .deleted_with_instance()
        .contains(&"web15-cidata.iso".to_owned()));

    // A warm resume cannot give cloud-init its data: refused, in check mode too.
    let mut warm = o.clone();
    warm.boot = Boot::Warm;
    warm.state = InstanceState::Running;
    let e = refusal(&ctx, &hv, &resolve(&ctx, warm).unwrap(), Mode::Check);
    assert!(
        e.contains("`boot`") && e.contains("cloud-init ran in the seed's boot"),
        "{e}"
    );

    // Two writers of the first NIC's config: refused before anything is made.
    let mut both = o.clone();
    both.address = Some("192.168.122.71".parse().unwrap());
    both.static_address = true;
    // The sysprep path installs this virtup's first boot: the test template's own predates static.
    both.customize = Customize::Sysprep;
    both.cloud_init = cloud(None, Some("version: 2\n"));
    let req = resolve(&ctx, both).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &req, mode);
        assert!(
            e.contains("`cloud_init.network_config`") && e.contains("address_mode: static"),
            "{e}"
        );
    }
    assert!(
        !volume_exists(&hv, "web15.qcow2"),
        "refused before the disk"
    );
    assert!(hv.domain("web15").unwrap().is_none());

    // A volume named exactly as the seed would be, made by someone else: in the way, named, kept.
    hv.create_volume(
        POOL,
        &VolumeSpec::new("web16-cidata.iso", 1 << 20, ImageFormat::Raw),
    )
    .unwrap();
    let mut taken = o.clone();
    taken.name = "web16".into();
    let req = resolve(&ctx, taken).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let e = refusal(&ctx, &hv, &req, mode);
        assert!(
            e.contains("`web16-cidata.iso`") && e.contains("never touches"),
            "{e}"
        );
    }
    assert!(volume_exists(&hv, "web16-cidata.iso"));
    assert!(!volume_exists(&hv, "web16.qcow2"));

    // An instance made without it keeps none: asking later is a warning, not a change.
    let _script = Script::install(|cmd| (cmd.get_program() == "virt-sysprep").then(Reply::ok));
    let mut plain = options("web15", InstanceState::Present);
    plain.customize = Customize::Sysprep;
    assert!(run(&ctx, &hv, plain.clone(), Mode::Apply).changed);
    plain.cloud_init = o.cloud_init.clone();
    let again = run(&ctx, &hv, plain, Mode::Apply);
    assert!(!again.changed, "{}", again.msg);
    assert!(
        again
            .warnings
            .iter()
            .any(|w| w.contains("keeps the cloud-init data it was made with (none)")),
        "{:?}",
        again.warnings
    );
    let meta = InstanceMeta::read(&ctx.data, "web15").unwrap().unwrap();
    assert_eq!(meta.cloud_init_digest, None);
}

/// A warm resume hot-plugs virtio data disks; a SCSI one has no controller in the seed.
#[test]
fn only_a_scsi_data_disk_keeps_a_clone_from_resuming_warm() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    with_current_firstboot(&hv);
    let warm_with = |bus: DataDiskBus| {
        let mut o = options("web17", InstanceState::Running);
        o.boot = Boot::Warm;
        o.disks = Some(vec![DataDisk {
            bus,
            ..blank(1 << 20)
        }]);
        resolve(&ctx, o).unwrap()
    };
    let e = refusal(&ctx, &hv, &warm_with(DataDiskBus::Scsi), Mode::Check);
    assert!(e.contains("`boot`") && e.contains("SCSI data disk"), "{e}");
    // A virtio disk is no reason; the test template's missing warm image is.
    let e = refusal(&ctx, &hv, &warm_with(DataDiskBus::Virtio), Mode::Check);
    assert!(e.contains("`boot`") && !e.contains("disk"), "{e}");
}

/// `suspended` saves a running instance's memory (libvirt's managed save) and says so in the
/// diff, the facts and a check run; `stopped` resumes it first and shuts it down; `absent`
/// removes the saved image with the domain.
#[test]
fn suspended_saves_the_memory_and_stopped_or_absent_never_just_drops_it() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(&hv, "web9", ctx.data.owner_id().unwrap(), &["web9.qcow2"]);
    hv.start("web9").unwrap();
    // The shape `instance` defines, so that only the power state is planned.
    let options = |name: &str, state| {
        let mut o = options(name, state);
        o.layer.memory = Some(256);
        o.layer.vcpus = Some(1);
        o
    };
    let suspend = resolve(&ctx, options("web9", InstanceState::Suspended)).unwrap();
    let check = converge(&ctx, &hv, &suspend, Mode::Check, &Quiet).unwrap();
    assert!(check.changed);
    assert_eq!(check.msg, "suspend (save its memory)");
    assert!(
        !hv.domain("web9").unwrap().unwrap().saved,
        "check mode saved"
    );
    let real = converge(&ctx, &hv, &suspend, Mode::Apply, &Quiet).unwrap();
    assert!(real.changed, "{}", real.msg);
    let (before, after) = real.diff.unwrap();
    assert_eq!((before.state, after.state), ("running", "suspended"));
    assert_eq!(real.instance.unwrap().state, "suspended");
    let dom = hv.domain("web9").unwrap().unwrap();
    assert!(dom.saved && dom.state == DomainState::ShutOff, "{dom:?}");
    assert_eq!(dom.state_word(), "suspended");
    assert!(hv
        .list_domains()
        .unwrap()
        .iter()
        .any(|d| d.name == "web9" && d.saved));
    let again = converge(&ctx, &hv, &suspend, Mode::Check, &Quiet).unwrap();
    assert!(!again.changed, "{}", again.msg);
    let present = run(
        &ctx,
        &hv,
        options("web9", InstanceState::Present),
        Mode::Apply,
    );
    assert!(!present.changed, "present resumed it: {}", present.msg);

    // Resized while suspended: the saved guest keeps its old shape until its next boot.
    let mut bigger = options("web9", InstanceState::Suspended);
    bigger.layer.memory = Some(512);
    let resized = run(&ctx, &hv, bigger, Mode::Apply);
    assert!(
        resized.warnings.iter().any(|w| w.contains("suspended now")),
        "{:?}",
        resized.warnings
    );

    let mut stop = options("web9", InstanceState::Stopped);
    stop.layer.memory = Some(512);
    let stop = resolve(&ctx, stop).unwrap();
    let planned = converge(&ctx, &hv, &stop, Mode::Check, &Quiet).unwrap();
    assert_eq!(planned.msg, "stop");
    let stopped = converge(&ctx, &hv, &stop, Mode::Apply, &Quiet).unwrap();
    assert!(stopped.warnings.is_empty(), "{:?}", stopped.warnings);
    // Resumed and shut down: no image is left to bring that memory back later.
    let dom = hv.domain("web9").unwrap().unwrap();
    assert!(!dom.saved && dom.state == DomainState::ShutOff, "{dom:?}");

    hv.start("web9").unwrap();
    let mut suspend = options("web9", InstanceState::Suspended);
    suspend.layer.memory = Some(512);
    run(&ctx, &hv, suspend, Mode::Apply);
    assert!(hv.domain("web9").unwrap().unwrap().saved);
    let gone = run(
        &ctx,
        &hv,
        options("web9", InstanceState::Absent),
        Mode::Apply,
    );
    assert!(gone.changed);
    assert!(hv.domain("web9").unwrap().is_none());
    assert!(!volume_exists(&hv, "web9.qcow2"));
}

/// A resumed guest's clock is set to the host's through its agent: the test driver's guest clock
/// stands in 1989 until it is set.
#[test]
fn a_resumed_clock_is_set_to_the_hosts() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(&hv, "web10", ctx.data.owner_id().unwrap(), &["web10.qcow2"]);
    hv.start("web10").unwrap();
    assert!(hv.guest_clock_offset("web10").unwrap().unwrap() < -1e8);
    let warning = crate::power::set_resumed_clock(&hv, "web10", Duration::from_secs(5));
    assert_eq!(warning, None);
    let off = hv.guest_clock_offset("web10").unwrap().unwrap();
    assert!(off.abs() <= crate::power::CLOCK_TOLERANCE_SECS, "{off}");
}

/// A template suspended by a managed save (libvirt-guests does it at host shutdown) is no base for
/// a clone: its disk's latest state is in its saved memory. Refused before anything is made.
#[test]
fn a_suspended_template_is_not_cloned() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    template(&hv, &ctx);
    let domain = virtup_core::template::domain_name("tpl");
    hv.start(&domain).unwrap();
    hv.managed_save(&domain).unwrap();
    let req = resolve(&ctx, options("web11", InstanceState::Present)).unwrap();
    for mode in [Mode::Check, Mode::Apply] {
        let why = refusal(&ctx, &hv, &req, mode);
        assert!(why.contains("suspended with its memory saved"), "{why}");
    }
    assert!(hv.domain("web11").unwrap().is_none());
    assert!(!volume_exists(&hv, "web11.qcow2"));
}

/// A stop of a suspended domain resumes it first and shuts it down; the image is gone after.
#[test]
fn stopping_a_suspended_domain_resumes_and_shuts_it_down() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(&hv, "web12", ctx.data.owner_id().unwrap(), &["web12.qcow2"]);
    hv.start("web12").unwrap();
    hv.managed_save("web12").unwrap();
    crate::power::stop(&hv, "web12", Duration::from_secs(30)).unwrap();
    let dom = hv.domain("web12").unwrap().unwrap();
    assert!(!dom.saved && dom.state == DomainState::ShutOff, "{dom:?}");
}

/// `groups` are recorded in the metadata (check mode first), returned, shown in the diff, changed
/// on an existing instance, left alone when not given, and refused, naming the item, when they are
/// no inventory group or one of the inventory's own.
#[test]
fn declared_groups_are_recorded_and_checked() {
    let dir = TempDir::new().unwrap();
    let ctx = context(&dir, true);
    let hv = test_hv();
    instance(&hv, "web13", ctx.data.owner_id().unwrap(), &["web13.qcow2"]);
    InstanceMeta::new("web13", "tpl").write(&ctx.data).unwrap();
    let with = |groups: &[&str]| {
        let mut o = options("web13", InstanceState::Present);
        o.layer.memory = Some(256);
        o.layer.vcpus = Some(1);
        o.groups = Some(groups.iter().map(|g| g.to_string()).collect());
        o
    };
    let check = run(&ctx, &hv, with(&["web", "db"]), Mode::Check);
    assert!(check.changed);
    assert_eq!(check.msg, "put it in inventory groups db, web");
    assert_eq!(
        check.instance.unwrap().groups,
        ["db", "web"],
        "as a real run records them"
    );
    assert!(InstanceMeta::read(&ctx.data, "web13")
        .unwrap()
        .unwrap()
        .groups
        .is_empty());
    let real = run(&ctx, &hv, with(&["web", "db"]), Mode::Apply);
    assert!(real.changed);
    let (before, after) = real.diff.unwrap();
    assert!(before.shape.unwrap().groups.is_empty());
    assert_eq!(after.shape.unwrap().groups, ["db", "web"]);
    assert_eq!(real.instance.unwrap().groups, ["db", "web"]);
    assert_eq!(
        InstanceMeta::read(&ctx.data, "web13")
            .unwrap()
            .unwrap()
            .groups,
        ["db", "web"]
    );
    // The order means nothing to Ansible: no change.
    assert!(!run(&ctx, &hv, with(&["web", "db"]), Mode::Apply).changed);
    let mut none = with(&[]);
    none.groups = None;
    assert!(
        !run(&ctx, &hv, none, Mode::Apply).changed,
        "no `groups`: left as recorded"
    );
    assert!(run(&ctx, &hv, with(&["db"]), Mode::Apply).changed);
    // A removal looks at no declaration: one that no longer passes does not stand in its way.
    let mut gone = with(&["web-1"]);
    gone.state = InstanceState::Absent;
    assert!(resolve(&ctx, gone).is_ok());
    for (bad, needle) in [("web-1", "groups[2]"), ("virtup_running", "groups[2]")] {
        let err = match resolve(&ctx, with(&["ok", bad])) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("{bad} accepted"),
        };
        assert!(err.contains(needle), "{err}");
    }
    assert_eq!(
        InstanceMeta::read(&ctx.data, "web13")
            .unwrap()
            .unwrap()
            .groups,
        ["db"]
    );
}
