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
    let volume = volume_name("tpl", 1, "qcow2");
    let disk = hv
        .create_volume(POOL, &VolumeSpec::new(&volume, 1 << 20, ImageFormat::Qcow2))
        .unwrap();
    let mut spec = DomainSpec::new(domain_name("tpl"), 256, 1, VirtType::Qemu);
    spec.disks = vec![DiskSpec::disk(&disk.path, ImageFormat::Qcow2)];
    let mut tag = VirtupTag::new(TagKind::Template, "tpl");
    tag.generation = 1;
    tag.digest = Some("sha256:old".into());
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
