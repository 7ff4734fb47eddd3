//! Building a template generation: the image from virt-builder or a verified download, the first
//! customization, the domain definition, and the seal that removes the identity again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::ownership::Ledger;
use virtup_core::template::{volume_name, Source};
use virtup_core::vocab::config_disk_volume;
use virtup_core::{keys, known_hosts, validate, DataDir};
use virtup_guest::config_disk::ConfigDiskKind;
use virtup_guest::virt_install::{InstallDisk, InstallNetwork};
use virtup_guest::{firstboot, CustomizeOp, VirtBuilder, VirtCustomize, VirtInstall};
use virtup_libvirt::{Hypervisor, TagKind, VirtType, VirtupTag};

use super::image::{fetch_image, file_name, import_image, import_partial, verify_image};
use super::{Apply, Observation, Request};
use crate::context::{Context, SHORT_LOCK_TIMEOUT};
use crate::identity::{upload_config_disk, GuestIdentity};
use crate::run_tool;
use crate::volume_copy::VolumeCopy;

/// The generated (or given) secret of `what` as a 0600 file, for tools that read secrets from files.
fn secret(ctx: &Context, domain: &str, what: &str, given: Option<&str>) -> Result<PathBuf> {
    let dir = ctx.secrets_dir(domain);
    crate::identity::secret(&dir, what, given)?;
    Ok(dir.join(what))
}

/// Where the user's public key waits in the image until [`account_command`] moves it into place.
const STAGED_USER_KEY: &str = "/tmp/virtup-user-key.pub";

/// The customizations every template gets, from either source, in one appliance run.
fn prepare_ops(req: &Request, password_file: &Path, public_key: &str) -> Vec<CustomizeOp> {
    let f = &req.desired.fields;
    let user = &req.settings.user;
    let sudoers = format!("/etc/sudoers.d/90-virtup-{user}");
    let mut ops = vec![
        // `--write` takes everything after the path's colon as it is, so a key comment with
        // colons or quotes needs no escaping; the command below moves it into place.
        CustomizeOp::Write {
            path: STAGED_USER_KEY.into(),
            content: format!("{}\n", public_key.trim_end()),
        },
        CustomizeOp::RunCommand(account_command(user, &hostname(req))),
        CustomizeOp::Password {
            user: user.clone(),
            file: password_file.to_owned(),
        },
        CustomizeOp::Mkdir("/etc/sudoers.d".into()),
        CustomizeOp::Write {
            path: sudoers.clone(),
            content: format!("{user} ALL=(ALL) NOPASSWD:ALL\n"),
        },
        CustomizeOp::Chmod {
            mode: 0o440,
            path: sudoers,
        },
    ];
    ops.extend(firstboot::install_ops());
    if let Some(extra) = &f.virt_customize_args {
        ops.push(CustomizeOp::Raw(extra.clone()));
    }
    // After the user's own customizations, which may install what is missing.
    ops.push(CustomizeOp::RunCommand(GUEST_REQUIREMENTS.into()));
    ops.extend(identity_removal_ops());
    ops
}

/// A build refused by [`GUEST_REQUIREMENTS`] in the words of its check, naming the option that chose
/// the image (the tool's own message repeats the whole command); any other failure as it is.
fn lacking(e: anyhow::Error, option: &str, value: &str) -> anyhow::Error {
    const SAID: &str = "virtup: this image has no ";
    let text = format!("{e:#}");
    // Only what the check says names one of the two (its own text, which the tool's error line
    // repeats, cut short, says `$missing` instead): another failure keeps its own words.
    let said = text
        .match_indices(SAID)
        .filter_map(|(at, _)| text[at + "virtup: ".len()..].lines().next())
        .find(|said| {
            let what = &said["this image has no ".len()..];
            what.starts_with("systemd (") || what.starts_with("an OpenSSH server (")
        });
    match said {
        Some(said) => anyhow!("invalid value for `{option}`: `{value}`: {said}"),
        None => e,
    }
}

/// What every clone's first boot and virtup's SSH proof need in the image, checked inside it: an
/// image without (Alpine with OpenRC, say) would build, and then each clone would time out in
/// `running`, its first boot never run. The message names what is missing and what to do instead.
const GUEST_REQUIREMENTS: &str = "missing=; \
    [ -x /usr/lib/systemd/systemd ] || [ -x /lib/systemd/systemd ] || missing=\"systemd (/usr/lib/systemd/systemd), which runs virtup's first boot\"; \
    [ -x /usr/sbin/sshd ] || [ -x /usr/bin/sshd ] || missing=\"${missing:+$missing, and }an OpenSSH server (/usr/sbin/sshd), through which virtup proves each clone\"; \
    if [ -n \"$missing\" ]; then \
    echo \"virtup: this image has no $missing: virtup cannot make clones of it (install them with virt_customize_args, or give the image its identity by its own means, such as cloud-init)\" >&2; exit 1; fi";

/// cloud-init settings that leave hostname and SSH host keys to virtup's first-boot unit.
/// Written with printf, so `\\n` (backslash n) separates the lines and the command stays on one line.
const CLOUD_INIT_KEEP: &str = "# virtup: identity comes from the VIRTUPCFG config disk\\n\
ssh_deletekeys: false\\nssh_genkeytypes: []\\npreserve_hostname: true\\nmanage_etc_hosts: false\\n";

/// One shell command for the login user, its authorized key and the template's hostname.
///
/// virt-customize's `--ssh-inject` and `--hostname` each start augeas inside the appliance (about
/// 7.5 s apiece under TCG, `bench/README.md`); plain commands do the same work in well under a
/// second. `user` and `hostname` are validated names (no shell metacharacters). The hosts line is
/// the one the first-boot script writes for clones. As the first-boot script does, a home that is
/// not an absolute path is refused and a symlinked `.ssh` or `authorized_keys` in the image is
/// removed, so the chown and append cannot be sent elsewhere.
fn account_command(user: &str, hostname: &str) -> String {
    format!(
        "set -e; id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}; \
         home=$(getent passwd {user} | cut -d: -f6); group=$(id -g {user}); \
         case $home in /?*) ;; *) echo \"virtup: user {user} has no usable home\" >&2; exit 1 ;; esac; \
         if [ -L \"$home/.ssh\" ]; then rm -f \"$home/.ssh\"; fi; \
         install -d -m 0700 -o {user} -g \"$group\" \"$home/.ssh\"; \
         if [ -L \"$home/.ssh/authorized_keys\" ]; then rm -f \"$home/.ssh/authorized_keys\"; fi; \
         cat {STAGED_USER_KEY} >> \"$home/.ssh/authorized_keys\"; rm -f {STAGED_USER_KEY}; \
         chown {user}:\"$group\" \"$home/.ssh/authorized_keys\"; chmod 0600 \"$home/.ssh/authorized_keys\"; \
         printf '%s\\n' {hostname} > /etc/hostname; \
         if [ -f /etc/hosts ]; then sed -i '/^127\\.0\\.1\\.1[[:space:]]/d' /etc/hosts; fi; \
         printf '127.0.1.1\\t%s\\n' {hostname} >> /etc/hosts"
    )
}

/// What a clone must not inherit: it gets its own at first boot from its config disk. Also
/// (last, at the build and at the seal, so after `virt_customize_args` and the template's own
/// playbook, which may install cloud-init): images with cloud-init keep it for users' own data
/// (`cloud_init`), but it must not undo the identity the config disk gave; on a clone's first boot
/// it would delete the pinned host keys and reset the hostname.
pub(super) fn identity_removal_ops() -> Vec<CustomizeOp> {
    vec![
        CustomizeOp::RunCommand(format!(
            "if command -v cloud-init >/dev/null || [ -d /etc/cloud/cloud.cfg.d ]; then \
             mkdir -p /etc/cloud/cloud.cfg.d && printf '{CLOUD_INIT_KEEP}' > {KEEP_FILE}; fi",
            KEEP_FILE = crate::cloud_init::KEEP_FILE
        )),
        CustomizeOp::Truncate("/etc/machine-id".into()),
        CustomizeOp::Delete("/var/lib/dbus/machine-id".into()),
        CustomizeOp::Delete("/etc/ssh/ssh_host_*".into()),
        CustomizeOp::Delete("/var/lib/dhcp/*".into()),
        CustomizeOp::Delete(firstboot::DONE_PATH.into()),
        CustomizeOp::RunCommand(
            "if command -v cloud-init >/dev/null; then cloud-init clean --logs; fi".into(),
        ),
    ]
}

pub(super) fn build(run: Apply<'_>, generation: u32, appliance: VirtType) -> Result<()> {
    let Apply {
        ctx,
        data,
        hv,
        req,
        obs,
        reporter,
    } = run;
    let pool_path = obs
        .pool_path
        .as_ref()
        .ok_or_else(|| anyhow!("pool `{}` has no path", req.pool))?;
    let volume = volume_name(&req.desired.name, generation, &req.format);
    // A local pool takes the image in place; a remote hypervisor's pool only through libvirt, so
    // the image is made in a scratch dir here and uploaded.
    let scratch = if hv.is_local() {
        None
    } else {
        Some(data.scratch()?)
    };
    let dir = scratch.as_ref().map_or(pool_path.as_path(), |s| s.path());
    let out = dir.join(&volume);
    let part = dir.join(format!("{volume}.part"));
    let root_pw = secret(
        ctx,
        &req.scope,
        "root_password",
        req.root_password.as_deref(),
    )?;
    let user_pw = secret(ctx, &req.scope, "password", req.password.as_deref())?;
    let user = &req.settings.user;
    let key = keys::ensure_user_key(&data.sshkeys_dir(), user)?;
    let public_key = std::fs::read_to_string(&key.public_path)
        .with_context(|| format!("failed to read `{}`", key.public_path.display()))?;
    let ops = prepare_ops(req, &user_pw, &public_key);
    let started = Instant::now();
    // Every name this build may create in the pool is recorded before it exists (the plan chose
    // names no foreign volume holds), so a killed build's files are provably virtup's for the next run.
    let mut ledger = Ledger::read(data, &req.scope)?;
    let xz_part = import_partial(&part);
    // A remote pool gets the name only at the upload, minutes later: it is recorded then.
    let pending = match scratch {
        None => vec![file_name(&part), file_name(&xz_part), volume.clone()],
        Some(_) => vec![],
    };
    for name in &pending {
        ledger.intend(data, &req.uri, &req.pool, name, None)?;
    }
    let made = make_image(run, &part, &out, ops, &root_pw, appliance);
    if let Err(e) = made {
        // virt-builder does not say when the pool fills up; the partial it kept still fills it.
        let e = match virtup_guest::space::exhausted(&part) {
            Some(full) => e.context(full),
            None => e,
        };
        // A failed build leaves nothing behind in the pool, and no record.
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&xz_part);
        for name in &pending {
            ledger.forget(data, &req.uri, &req.pool, name)?;
        }
        return Err(e);
    }
    if scratch.is_some() {
        upload(run, &mut ledger, &volume, &out)?;
    }
    // The image is in the pool: a failure from here on reports `changed: true`.
    reporter.changed();
    hv.refresh_pool(&req.pool)?;
    let built = hv
        .volume_info(&req.pool, &volume)?
        .ok_or_else(|| anyhow!("volume `{volume}` vanished right after its build"))?;
    ledger.confirm(data, &req.uri, &req.pool, &volume, &built.key)?;
    for name in pending.iter().filter(|n| **n != volume) {
        ledger.forget(data, &req.uri, &req.pool, name)?;
    }
    give_identity(run, &key, &mut ledger)?;
    reporter.note(&format!(
        "virtup_template: built `{volume}` in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Uploads the image made here into the remote pool as `volume`, recorded as pending first. A
/// failed upload whose half-written volume could not be removed (the connection broke) keeps
/// its pending record, so the next run can prove it virtup's and remove it.
fn upload(run: Apply<'_>, ledger: &mut Ledger, volume: &str, image: &Path) -> Result<()> {
    let Apply {
        data,
        hv,
        req,
        reporter,
        ..
    } = run;
    // The plan saw the name free minutes ago: a volume that took it since is not this build's.
    if hv.volume_info(&req.pool, volume)?.is_some() {
        bail!(
            "volume `{volume}` appeared in pool `{}` on `{}` during the build; it is not virtup's \
             and is left alone: run again to build under the next free name",
            req.pool,
            req.uri
        );
    }
    ledger.intend(data, &req.uri, &req.pool, volume, None)?;
    reporter.stage(&format!("uploading `{volume}` to `{}`", req.uri));
    let Err(e) = hv.upload_volume(&req.pool, volume, image) else {
        return Ok(());
    };
    // A volume under the name is this upload's only if the upload created it.
    if e.created_a_volume() && !matches!(hv.volume_info(&req.pool, volume), Ok(None)) {
        reporter.changed();
    } else {
        ledger.forget(data, &req.uri, &req.pool, volume)?;
    }
    Err(anyhow::Error::new(e).context(format!("failed to upload `{volume}` to `{}`", req.uri)))
}

/// Makes the image at `part` (virt-builder, or a verified image customized) and moves it to `out`.
fn make_image(
    run: Apply<'_>,
    part: &Path,
    out: &Path,
    ops: Vec<CustomizeOp>,
    root_pw: &Path,
    appliance: VirtType,
) -> Result<()> {
    let Apply { data, req, hv, .. } = run;
    let f = &req.desired.fields;
    // The image gets password hashes: private (0600, like the volumes libvirt creates) before the
    // tools write into it, and again after them, whatever mode their own files had.
    private_image(part)?;
    match req.desired.source.as_ref().expect("a build has a source") {
        Source::OsVersion(os_version) => {
            let mut cmd = VirtBuilder {
                os_version: os_version.clone(),
                output: part.to_owned(),
                format: req.format.clone(),
                size: f.size.clone(),
                arch: f.arch.clone(),
                root_password_file: Some(root_pw.to_owned()),
                // Set by `account_command`, without virt-builder's augeas pass.
                hostname: None,
                ops,
                extra_args: req.settings.virt_builder_args.clone(),
            }
            .cmd()?;
            crate::appliance_env(&mut cmd, hv, appliance);
            let scratch = virtup_guest::builder::scratch()?;
            virtup_guest::builder::use_scratch(&mut cmd, scratch.path());
            run_tool(
                &cmd,
                &format!("virt-builder could not build `{os_version}`"),
            )
            .map_err(|e| lacking(e, "os_version", os_version))?;
        }
        Source::Image {
            location,
            checksum,
            gpg_key,
        } => {
            let local = fetch_image(data, location)?;
            verify_image(&local, checksum, gpg_key.as_deref(), data)?;
            import_image(&local, part, &req.format, f.size.as_deref())?;
            let mut ops = ops;
            ops.insert(0, CustomizeOp::RootPassword(root_pw.to_owned()));
            let mut cmd = VirtCustomize {
                ops,
                ..VirtCustomize::new(part)
            }
            .cmd()?;
            crate::appliance_env(&mut cmd, hv, appliance);
            run_tool(
                &cmd,
                &format!("virt-customize could not prepare image `{location}`"),
            )
            .map_err(|e| lacking(e, "image", location))?;
        }
    }
    private_image(part)?;
    // A link fails where rename would replace: nothing that took the name meanwhile is lost.
    std::fs::hard_link(part, out)
        .with_context(|| format!("failed to move `{}` into place", part.display()))?;
    std::fs::remove_file(part).with_context(|| format!("failed to remove `{}`", part.display()))?;
    Ok(())
}

/// The template boots (state `running`) like an instance: its identity and pinned host key come
/// from a config disk, so even the template playbook connects with strict checking.
fn give_identity(run: Apply<'_>, key: &keys::UserKey, ledger: &mut Ledger) -> Result<()> {
    let Apply {
        ctx,
        data,
        hv,
        req,
        obs,
        ..
    } = run;
    let user = &req.settings.user;
    let host_keys = keys::generate_host_keys(&data.hostkeys_dir(), &req.scope)?;
    let secrets_dir = ctx.secrets_dir(&req.scope);
    let identity = GuestIdentity {
        hostname: &hostname(req),
        fqdn: None,
        user,
        user_key: key,
        host_keys: &host_keys,
        secrets_dir: &secrets_dir,
        password: req.password.as_deref(),
        root_password: req.root_password.as_deref(),
        grow_root: false,
        filesystems: &[],
        static_ipv4: None,
        cloud_init: None,
    }
    .build()?;
    let config = config_disk_volume(&req.domain);
    if let Some(old) = &obs.config_disk {
        hv.delete_volume(&req.pool, old)?;
        ledger.forget(data, &req.uri, &req.pool, old)?;
    }
    ledger.intend(data, &req.uri, &req.pool, &config, None)?;
    match upload_config_disk(
        hv,
        data,
        &req.pool,
        &config,
        &identity,
        ConfigDiskKind::Virtup,
    ) {
        Ok(info) => ledger.confirm(data, &req.uri, &req.pool, &config, &info.key)?,
        Err(e) => {
            ledger.forget(data, &req.uri, &req.pool, &config)?;
            return Err(e);
        }
    }
    // The pin is for booting the template (its playbook), under its scope: a remote template's pin is
    // its hypervisor's own.
    known_hosts::set(
        data,
        &req.scope,
        &host_keys.public_openssh,
        SHORT_LOCK_TIMEOUT,
    )?;
    Ok(())
}

/// Creates `path` empty if it is missing and makes it 0600. A guest runs from a 0600 root-owned image too:
/// libvirt hands the images of a running domain, backing files included, to the QEMU user.
fn private_image(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .with_context(|| format!("failed to make `{}` private", path.display()))
}

/// Defines the template domain from virt-install's XML with virtup's tag inside, in one define.
pub(super) fn define(
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    generation: u32,
    accel: VirtType,
) -> Result<()> {
    let f = &req.desired.fields;
    let pool_path = obs
        .pool_path
        .as_ref()
        .ok_or_else(|| anyhow!("pool `{}` has no path", req.pool))?;
    let disk = pool_path.join(volume_name(&req.desired.name, generation, &req.format));
    let mut extra = Vec::new();
    // Redefining under the old UUID keeps libvirt from refusing "domain already exists".
    if let Some(uuid) = &obs.uuid {
        extra.extend(["--uuid".to_owned(), uuid.clone()]);
    }
    extra.extend(req.settings.virt_install_args.iter().cloned());
    let cmd = VirtInstall {
        connect: Some(req.uri.clone()),
        name: req.domain.clone(),
        memory_mib: req.settings.memory_mib,
        vcpus: req.settings.vcpus,
        disks: vec![
            InstallDisk::virtio(&disk, &req.format),
            InstallDisk::config_disk(pool_path.join(config_disk_volume(&req.domain))),
        ],
        networks: vec![InstallNetwork::network(&req.settings.network, None)],
        graphics: req.settings.graphics.clone(),
        osinfo: f.os_variant.clone(),
        virt_type: Some(accel.as_str().to_owned()),
        arch: f.arch.clone(),
        guest_agent: true,
        extra_args: extra,
    }
    .cmd()?;
    let out = cmd
        .output()
        .context("virt-install could not describe the template domain")?;
    let xml = String::from_utf8(out.stdout).context("virt-install printed non-UTF-8 XML")?;
    let mut tag = VirtupTag::new(TagKind::Template, &req.desired.name);
    tag.generation = generation;
    tag.digest = Some(req.desired.digest());
    tag.user = Some(super::template_user(req));
    tag.owner = Some(data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?);
    tag.firstboot = Some(virtup_guest::firstboot::REVISION);
    let xml = tag.insert_into_domain_xml(&xml)?;
    hv.define_xml(&xml)?;
    Ok(())
}

/// After the template ran online: remove the identity again, so clones get their own. A remote pool's
/// image has no path here: its bytes come down through libvirt into the data dir's scratch space, are
/// sealed there, and go back up into the same volume (its key, and so its ownership record, stay).
pub(super) fn seal(
    hv: &Hypervisor,
    data: &DataDir,
    req: &Request,
    obs: &Observation,
    generation: u32,
    appliance: VirtType,
) -> Result<()> {
    let volume = volume_name(&req.desired.name, generation, &req.format);
    let seal_file = |disk: &Path| -> Result<()> {
        let mut cmd = VirtCustomize {
            // Named, never probed: a raw image's guest could have written a header that says otherwise.
            format: Some(req.format.clone()),
            ops: identity_removal_ops(),
            ..VirtCustomize::new(disk)
        }
        .cmd()?;
        crate::appliance_env(&mut cmd, hv, appliance);
        run_tool(&cmd, "virt-customize could not seal the template")
    };
    // Until the seal has finished, the generation is not the image the digest describes: from the
    // first write on, the tag says so (UNSEALED_DIGEST), so a seal cut short (a killed run, a link
    // dropped mid-upload) makes the next run build a new generation, and no clone is made on it.
    let tag = hv
        .tag(&req.domain)?
        .ok_or_else(|| anyhow!("template domain `{}` has no virtup tag", req.domain))?;
    let mark_unsealed = || -> Result<()> {
        hv.set_tag(
            &req.domain,
            &VirtupTag {
                digest: Some(super::UNSEALED_DIGEST.into()),
                ..tag.clone()
            },
        )?;
        Ok(())
    };
    seal_volume(hv, data, req, obs, &volume, mark_unsealed, seal_file)?;
    hv.set_tag(&req.domain, &tag)?;
    Ok(())
}

/// Runs `seal_file` on the generation's image: in place in a local pool, else on a copy brought down
/// and written back through libvirt.
fn seal_volume(
    hv: &Hypervisor,
    data: &DataDir,
    req: &Request,
    obs: &Observation,
    volume: &str,
    mark_unsealed: impl FnOnce() -> Result<()>,
    seal_file: impl Fn(&Path) -> Result<()>,
) -> Result<()> {
    if hv.is_local() {
        let pool_path = obs
            .pool_path
            .as_ref()
            .ok_or_else(|| anyhow!("pool `{}` has no path", req.pool))?;
        mark_unsealed()?;
        return seal_file(&pool_path.join(volume));
    }
    let copy = VolumeCopy::download(data, hv, &req.pool, volume, &req.format)?;
    seal_file(copy.path())?;
    copy.write_back(hv, &req.pool, mark_unsealed)
        .with_context(|| {
            format!(
                "cannot seal template `{}` on `{}`",
                req.desired.name, req.uri
            )
        })?;
    Ok(())
}

/// The template's hostname: its name made a valid host name (`generic/debian10` → `generic-debian10`).
pub(super) fn hostname(req: &Request) -> String {
    validate::template_hostname(&req.desired.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_command_parses_as_the_guest_shell_reads_it() {
        let command = account_command("virt", "debian-12");
        // The appliance runs it with `sh -c`: a quoting slip would only show in a lab build.
        virtup_guest::Cmd::new("sh")
            .args(["-n", "-c", &command])
            .run()
            .unwrap_or_else(|e| panic!("sh -n rejects {command}: {e}"));
        assert!(command.starts_with("set -e; "), "{command}");
        assert!(
            command.contains("printf '%s\\n' debian-12 > /etc/hostname"),
            "{command}"
        );
    }

    /// The guest's requirements parse as `sh -c` reads them, and a root without them is told
    /// both, by name (the paths rewritten under an empty directory stand for such an image).
    #[test]
    fn an_image_without_systemd_or_sshd_is_told_what_it_lacks() {
        virtup_guest::Cmd::new("sh")
            .args(["-n", "-c", GUEST_REQUIREMENTS])
            .run()
            .unwrap_or_else(|e| panic!("sh -n rejects {GUEST_REQUIREMENTS}: {e}"));
        let empty = tempfile::TempDir::new().unwrap();
        let root = empty.path().display().to_string();
        let rooted = GUEST_REQUIREMENTS
            .replace("-x /usr/", &format!("-x {root}/usr/"))
            .replace("-x /lib/", &format!("-x {root}/lib/"));
        assert_eq!(rooted.matches(&root).count(), 4, "{rooted}");
        let out = virtup_guest::Cmd::new("sh")
            .args(["-c", &rooted])
            .output_unchecked()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.starts_with("virtup: this image has no systemd (/usr/lib/systemd/systemd)")
                && said.contains(", and an OpenSSH server (/usr/sbin/sshd)")
                && said.contains("virt_customize_args"),
            "{said}"
        );
    }

    /// The tool's error, which repeats the check's command, becomes what the check said.
    #[test]
    fn a_refused_image_is_named_in_the_checks_words() {
        let tool = anyhow!(
            "`virt-customize -a x --run-command 'missing=; … echo \"virtup: this image has no $missing: …\"'` \
             failed with exit status 1: virtup: this image has no systemd (/usr/lib/systemd/systemd), \
             which runs virtup's first boot: virtup cannot make clones of it\nvirt-customize: error: …"
        )
        .context("virt-customize could not prepare image `/i.qcow2`");
        assert_eq!(
            lacking(tool, "image", "/i.qcow2").to_string(),
            "invalid value for `image`: `/i.qcow2`: this image has no systemd \
             (/usr/lib/systemd/systemd), which runs virtup's first boot: virtup cannot make clones of it"
        );
        let other = anyhow!("no space left on device");
        assert_eq!(
            lacking(other, "image", "/i").to_string(),
            "no space left on device"
        );
        // The check failed for another reason, and the tool's error line repeats its command cut
        // short: not read as a refusal.
        let cut = anyhow!(
            "`virt-customize …` failed with exit status 1: /tmp/builder.log: No space left on device\n\
             virt-customize: error: missing=; […] echo \"virtup: this image has no $mi…"
        );
        let kept = lacking(cut, "image", "/i").to_string();
        assert!(kept.contains("No space left on device"), "{kept}");
        assert!(!kept.starts_with("invalid value"), "{kept}");
    }

    /// cloud-init's settings are written where cloud-init is, after whatever installed it
    /// (`virt_customize_args`, the template's playbook): with the identity removal, at the build's
    /// end and at every seal.
    #[test]
    fn cloud_init_is_told_to_leave_the_identity_alone_after_anything_that_installs_it() {
        let ops = identity_removal_ops();
        let Some(CustomizeOp::RunCommand(command)) = ops.first() else {
            panic!("{ops:?}");
        };
        assert!(
            command.contains("command -v cloud-init")
                && command.contains("mkdir -p /etc/cloud/cloud.cfg.d")
                && command.ends_with(&format!("> {}; fi", crate::cloud_init::KEEP_FILE)),
            "{command}"
        );
        virtup_guest::Cmd::new("sh")
            .args(["-n", "-c", command])
            .run()
            .unwrap_or_else(|e| panic!("sh -n rejects {command}: {e}"));
        let written = virtup_guest::Cmd::new("sh")
            .args(["-c", &format!("printf '{CLOUD_INIT_KEEP}'")])
            .output()
            .unwrap()
            .stdout;
        assert_eq!(
            String::from_utf8(written).unwrap(),
            "# virtup: identity comes from the VIRTUPCFG config disk\nssh_deletekeys: false\n\
             ssh_genkeytypes: []\npreserve_hostname: true\nmanage_etc_hosts: false\n"
        );
        // Before cloud-init forgets the template's boot.
        let clean = ops.iter().position(
            |op| matches!(op, CustomizeOp::RunCommand(c) if c.contains("cloud-init clean")),
        );
        assert!(clean.is_some_and(|i| i > 0), "{ops:?}");
    }
}
