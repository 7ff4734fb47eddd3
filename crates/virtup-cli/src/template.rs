//! The `virtup_template` module: resolve options, observe libvirt, plan (virtup_core::template), apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::config::Settings;
use virtup_core::hold::{self, HoldState};
use virtup_core::ownership::{self, Ledger, Proof};
use virtup_core::template::{
    domain_name, plan, volume_generation, volume_name, ObservedDomain, Plan, Source, Step,
    TemplateDesired, TemplateObserved, TemplateState,
};
use virtup_core::vocab::config_disk_volume;
use virtup_core::{keys, known_hosts, validate, DataDir};
use virtup_guest::checksum::{self, Checksum};
use virtup_guest::libguestfs;
use virtup_guest::virt_install::{InstallDisk, InstallNetwork};
use virtup_guest::{
    firstboot, gpg, qemu_img, xz, Cmd, CustomizeOp, VirtBuilder, VirtCustomize, VirtInstall,
};
use virtup_libvirt::{DomainState, Hypervisor, TagKind, VirtType, VirtupTag};
use virtup_ops::identity::{upload_config_disk, GuestIdentity};
use virtup_ops::reach;

use crate::context::{self, Context, Waited, LOCK_TIMEOUT, SHORT_LOCK_TIMEOUT};
use crate::module::ModuleReporter;

/// A template request, resolved and validated; building it has had no side effect.
pub struct Request {
    pub desired: TemplateDesired,
    pub domain: String,
    pub uri: String,
    pub pool: String,
    pub format: String,
    /// `desired.fields` with every default applied.
    pub settings: Settings,
    pub wait_timeout: Duration,
    /// The customization session this call belongs to (see [`virtup_core::hold`]).
    pub hold: Option<String>,
    /// The config's `template-playbook`, found (see [`template_playbook`]); not for `absent`.
    pub playbook: Option<PathBuf>,
    password: Option<String>,
    root_password: Option<String>,
}

/// Module options over the template's config section over `[common]` over built-in defaults.
pub fn resolve(
    args: &ModuleArgs,
    ctx: &Context,
    user_public_key: impl FnOnce(&str) -> Result<String>,
) -> Result<Request> {
    let name = args.str("name").unwrap_or_default().to_owned();
    let state = TemplateState::parse(args.str("state").unwrap_or("present"))
        .ok_or_else(|| anyhow!("invalid value for `state`"))?;
    if state == TemplateState::Absent {
        // Removing needs no hostname: leftovers of names earlier versions accepted can still go.
        validate::removable_template_name("name", &name)?;
    } else {
        // Its hostname derives from the name: refused here, not after a whole virt-builder run.
        validate::template_name("name", &name)?;
    }
    let module = context::module_layer(args)?;
    let mut base = ctx
        .config
        .resolve_template(&name)
        .unwrap_or_else(|| ctx.config.resolve_common());
    // A source given as an option replaces any source the config names.
    if module.os_version.is_some() || module.image.is_some() {
        base.os_version = None;
        base.image = None;
        base.checksum = None;
    }
    let fields = base.overlay(&module);
    context::validate_fields(&fields)?;
    let source = match (&fields.os_version, &fields.image) {
        (Some(_), Some(_)) => bail!(
            "template `{name}` names both `os-version` and `image` in its config; \
             parameters are mutually exclusive: os_version|image"
        ),
        (Some(v), None) => Some(Source::OsVersion(v.clone())),
        (None, Some(image)) => {
            let checksum = fields.checksum.clone().ok_or_else(|| {
                anyhow!("missing `checksum` for image `{image}`: give sha256:<hex>, sha512:<hex> or a checksum file")
            })?;
            parse_checksum_spec(&checksum)?;
            Some(Source::Image {
                location: image.clone(),
                checksum,
                gpg_key: args.str("checksum_gpg_key").map(str::to_owned),
            })
        }
        (None, None) if state == TemplateState::Absent => None,
        (None, None) => bail!(
            "template `{name}` has no source: give `os_version` or `image` \
             (or define os-version in a templates.d section named `{name}`)"
        ),
    };
    let settings = fields.settings();
    let user = settings.user.clone();
    let user_public_key = if state == TemplateState::Absent {
        String::new()
    } else {
        user_public_key(&user)?
    };
    let playbook = match state {
        TemplateState::Absent => None,
        _ => template_playbook(ctx, &name, &fields)?,
    };
    let revision = with_playbook_digest(args.str("revision"), playbook.as_ref());
    Ok(Request {
        playbook: playbook.map(|(path, _)| path),
        domain: domain_name(&name),
        uri: context::uri(&fields, &ctx.paths),
        pool: settings.pool.clone(),
        format: settings.image_format.as_str().to_owned(),
        settings,
        wait_timeout: context::wait_timeout(args)?,
        hold: args
            .str("hold")
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        password: args.str("password").map(str::to_owned),
        root_password: args.str("root_password").map(str::to_owned),
        desired: TemplateDesired {
            name,
            state,
            source,
            fields,
            revision,
            user_public_key,
        },
    })
}

/// virt-up's `template-playbook` of the template's config section (or `[common]`); see [`config_playbook`].
fn template_playbook(
    ctx: &Context,
    name: &str,
    fields: &virtup_core::config::Fields,
) -> Result<Option<(PathBuf, String)>> {
    config_playbook(
        ctx,
        "template-playbook",
        name,
        fields.template_playbook.as_deref(),
        |f| f.template_playbook.is_some(),
    )
}

/// A playbook the config names under `key` (`template-playbook`, `instance-playbook`) for template
/// `template` (its section, else `[common]`), whose resolved value is `value`: found as given, else
/// in the config's `playbooks/` dirs (as virt-up searches), as an absolute path, with the sha256 of
/// the file. A playbook that is named but not found is an error naming the key and where it is set.
pub(crate) fn config_playbook(
    ctx: &Context,
    key: &str,
    template: &str,
    value: Option<&str>,
    set_in: impl Fn(&virtup_core::config::Fields) -> bool,
) -> Result<Option<(PathBuf, String)>> {
    let Some(given) = value.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let origin = if ctx.config.templates.get(template).is_some_and(set_in) {
        format!("section `[{template}]` of templates.d")
    } else {
        "`[common]` of settings.cfg".to_owned()
    };
    let context = || format!("`{key}` of template `{template}` ({origin})");
    let found = crate::cli::playbook::find_playbook(&ctx.paths, Path::new(given))
        .and_then(|p| std::path::absolute(&p).map_err(Into::into))
        .with_context(context)?;
    let sha256 = checksum::hash_file(&found, checksum::Algorithm::Sha256).with_context(context)?;
    Ok(Some((found, sha256)))
}

/// `revision` with the template playbook's digest appended, so that editing the playbook builds a
/// new generation (as the role does for a `playbook` of its own).
fn with_playbook_digest(
    revision: Option<&str>,
    playbook: Option<&(PathBuf, String)>,
) -> Option<String> {
    match (revision, playbook) {
        (revision, None) => revision.map(str::to_owned),
        (None, Some((_, sha256))) => Some(format!("template-playbook-sha256:{sha256}")),
        (Some(r), Some((_, sha256))) => Some(format!("{r} template-playbook-sha256:{sha256}")),
    }
}

/// `sha256:<hex>` / `sha512:<hex>` become a checksum; anything else names a checksum file.
fn parse_checksum_spec(spec: &str) -> Result<Option<Checksum>> {
    for (prefix, algorithm) in [
        ("sha256:", checksum::Algorithm::Sha256),
        ("sha512:", checksum::Algorithm::Sha512),
    ] {
        if let Some(hex) = spec.strip_prefix(prefix) {
            return Checksum::from_hex(algorithm, hex).map(Some).ok_or_else(|| {
                anyhow!(
                    "invalid value for `checksum`: `{prefix}` needs {} hex digits",
                    algorithm.hex_len()
                )
            });
        }
    }
    if spec.contains(':') && !spec.starts_with('/') && !spec.contains("://") {
        bail!("invalid value for `checksum`: expected sha256:<hex>, sha512:<hex> or a checksum file, got `{spec}`");
    }
    Ok(None)
}

/// What exists: the tagged template domain, its generation volumes, and the instances using them.
pub struct Observation {
    pub model: TemplateObserved,
    /// Volume name per generation.
    pub volumes: BTreeMap<u32, String>,
    /// Volumes the ledger proves a killed build made (partials, an unconfirmed generation, a
    /// config disk), deleted under the lock before anything else.
    pub partials: Vec<String>,
    /// The template's config disk, when the ledger proves it virtup's (replaced by a build).
    pub config_disk: Option<String>,
    /// (name, key) of volumes only the template domain's definition proves: recorded under the lock.
    pub adopt: Vec<(String, String)>,
    pub pool_path: Option<PathBuf>,
    pub uuid: Option<String>,
}

pub fn observe(hv: &Hypervisor, data: &DataDir, req: &Request) -> Result<Observation> {
    let mut model = TemplateObserved::default();
    let ledger = Ledger::read(data, &req.domain)?;
    // A damaged owner id fails the run here, in check mode too: the real run needs it.
    data.owner_id()?;
    let mut uuid = None;
    for dom in hv.list_domains()? {
        match &dom.tag {
            Some(tag) if dom.name == req.domain => {
                // A tag proves a template to the data dir that wrote it, not to every data dir.
                if tag.is(TagKind::Template, &req.desired.name)
                    && virtup_ops::owner::proves(data, hv, tag, &req.domain)?
                {
                    model.domain = Some(ObservedDomain {
                        running: dom.state != DomainState::ShutOff,
                        generation: tag.generation,
                        digest: tag.digest.clone(),
                    });
                    uuid = Some(dom.uuid.clone());
                } else {
                    model.foreign_domain = true;
                }
            }
            None if dom.name == req.domain => model.foreign_domain = true,
            // By domain, not by name: `a/b` and `a-b` share `VIRTUP-a-b` and its volumes, so a
            // clone of either keeps the generation it is built on.
            Some(tag)
                if tag.kind == TagKind::Instance
                    && tag.template.as_deref().map(domain_name).as_ref() == Some(&req.domain) =>
            {
                model
                    .dependents
                    .entry(tag.generation)
                    .or_default()
                    .push(dom.name.clone());
            }
            _ => {}
        }
    }
    let mut volumes = BTreeMap::new();
    let mut partials = Vec::new();
    let mut config_disk = None;
    let mut adopt = Vec::new();
    let config_name = config_disk_volume(&req.domain);
    // The disks the tagged template domain itself uses: its definition was written after they
    // were made, so it proves them too (templates built before the ledger existed have no entry).
    let domain_disks: Vec<String> = match &model.domain {
        Some(_) => virtup_libvirt::parse_domain_xml(&hv.inactive_xml(&req.domain)?)?
            .disks
            .into_iter()
            .filter_map(|d| d.path)
            .collect(),
        None => Vec::new(),
    };
    let pool = hv.pool(&req.pool)?;
    let pool_path = match pool {
        Some(p) => {
            hv.refresh_pool(&req.pool)?;
            for v in hv.list_volumes(&req.pool)? {
                let seen = ownership::Observed {
                    name: &v.name,
                    key: &v.key,
                    backing: v.backing.as_deref(),
                };
                // Only the ledger says what is virtup's; a name only says what would collide.
                let generation = volume_generation(&req.desired.name, &v.name);
                let mut proof = ledger.proof(&req.uri, &req.pool, seen);
                if proof == Proof::Foreign
                    && domain_disks.contains(&v.path)
                    && (generation.is_some() || v.name == config_name)
                {
                    adopt.push((v.name.clone(), v.key.clone()));
                    proof = Proof::Created;
                }
                match (proof, generation) {
                    (Proof::Created, Some(g)) => {
                        model.generations.insert(g);
                        volumes.insert(g, v.name);
                    }
                    (Proof::Created, None) if v.name == config_name => config_disk = Some(v.name),
                    (Proof::Pending, _) => partials.push(v.name),
                    (Proof::Foreign, _) if v.name == config_name => {
                        model.foreign_config_disk = Some(v.name)
                    }
                    (Proof::Foreign, _) => {
                        let stem = v.name.trim_end_matches(".part").trim_end_matches(".xz");
                        if let Some(g) = volume_generation(&req.desired.name, stem) {
                            model.taken_generations.insert(g);
                        }
                    }
                    (Proof::Created, None) => {}
                }
            }
            p.path.map(PathBuf::from)
        }
        // Nothing of a template can exist in a pool that does not; only building needs it.
        None if req.desired.state == TemplateState::Absent => None,
        None => bail!(
            "invalid value for `pool`: storage pool `{}` does not exist on `{}`",
            req.pool,
            req.uri
        ),
    };
    model.leftovers = model.domain.is_none() && (config_disk.is_some() || !partials.is_empty());
    Ok(Observation {
        model,
        volumes,
        partials,
        config_disk,
        adopt,
        pool_path,
        uuid,
    })
}

/// Runs the module.
///
/// Observing and planning happen first without any write, so bad input and refusals fail before any
/// side effect and a no-op run costs no lock. A real run with work to do then plans again under the
/// template's lock, so concurrent runs build each generation once: the second one waits, observes
/// the finished template and has nothing left to do.
pub fn run(args: &ModuleArgs) -> Result<ModuleResult> {
    let ctx = Context::load()?;
    // The driver still branches on the mode below; virtup_ops::host shows the shape it is moving to.
    let check = crate::module::mode(args) == virtup_ops::Mode::Check;
    if !check {
        ctx.tidy()?;
    }
    let key_dir = ctx.data.sshkeys_dir();
    // Until a key exists the digest uses a stand-in, so an unbuilt template shows as a change, which it is.
    let read_key = |user: &str| -> Result<String> {
        Ok(keys::load_user_key(&key_dir, user)?
            .map(|k| k.public_openssh)
            .unwrap_or_else(|| "(not generated yet)".into()))
    };
    let mut req = resolve(args, &ctx, read_key)?;
    let hv = Hypervisor::connect(&req.uri)?;
    let token = req.hold.clone();
    let mut waited = Waited::default();
    // Observe and plan until nothing stands in the way: another session customizing the template is
    // waited for (outside any lock), and a hold that appeared while we took the lock sends us round again.
    let (lock, data, before, the_plan, interrupted) = loop {
        if !check {
            waited.hold += wait_for_hold(&ctx.data, &req.desired.name, token.as_deref())?;
        }
        let before = observe(&hv, &ctx.data, &req)?;
        let the_plan = plan(&req.desired, &before.model)?;
        let hold_state = hold::state(&ctx.data, &req.domain, token.as_deref())?;
        if matches!(hold_state, HoldState::Live(_)) && !check {
            continue;
        }
        // An interrupted customization is work for a session that can redo it (it has a token).
        let interrupted = hold_state == HoldState::Interrupted && token.is_some();
        if check || (the_plan.is_empty() && !interrupted) {
            break (None, ctx.data.clone(), before, the_plan, interrupted);
        }
        let data = ctx.open_data_dir()?;
        req = resolve(args, &ctx, |user| {
            Ok(keys::ensure_user_key(&key_dir, user)?.public_openssh)
        })?;
        let started = Instant::now();
        let lock = data.lock(&format!("template-{}", req.domain), LOCK_TIMEOUT)?;
        waited.lock += started.elapsed();
        let hold_state = hold::state(&data, &req.domain, token.as_deref())?;
        if matches!(hold_state, HoldState::Live(_)) {
            drop(lock);
            continue;
        }
        let before = observe(&hv, &data, &req)?;
        let the_plan = plan(&req.desired, &before.model)?;
        let interrupted = hold_state == HoldState::Interrupted && token.is_some();
        break (Some(lock), data, before, the_plan, interrupted);
    };
    let mut result = ModuleResult::new(!the_plan.is_empty() || interrupted).with_msg(if interrupted {
        format!(
            "the customization of template `{}` by an earlier run was interrupted: it is taken over{}{}",
            req.desired.name,
            if the_plan.is_empty() { "" } else { "; " },
            the_plan
        )
    } else {
        the_plan.to_string()
    });
    if before.model.foreign_domain && req.desired.state == TemplateState::Absent {
        // `absent` holds for virtup, but the user may think the domain was theirs: say why it stays.
        result = result.with_warning(format!(
            "domain `{}` exists but was not made by virtup with this data dir; it is left alone",
            req.domain
        ));
    }
    if args.diff() {
        result = result.with_diff(diff(&req, &before.model, &the_plan));
    }
    if check {
        return Ok(if req.desired.state == TemplateState::Absent {
            result
        } else {
            result.with(
                "template",
                describe(&req, &before, the_plan.generation, false),
            )
        });
    }
    result = result.with("waited", waited.to_json());
    if lock.is_some() {
        let builds = the_plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Build { .. }));
        if let Some(token) = &token {
            // Taken before the build, so whoever sees the finished template also sees the hold.
            if builds || interrupted {
                hold::take(&data, &req.domain, token)?;
            }
        }
        let mut warnings = Vec::new();
        let mut ledger = Ledger::read(&data, &req.domain)?;
        for (name, key) in &before.adopt {
            ledger.confirm(&data, &req.uri, &req.pool, name, key)?;
        }
        for partial in &before.partials {
            hv.delete_volume(&req.pool, partial)?;
            ledger.forget(&data, &req.uri, &req.pool, partial)?;
        }
        let applied = apply(&ctx, &data, &hv, &req, &before, &the_plan, &mut warnings);
        let session_over = match &applied {
            // A failed build leaves nothing to customize: others need not wait for this session.
            Err(_) => builds,
            // The session's last call: the template is sealed (or removed).
            Ok(()) => !builds && !interrupted && req.desired.state != TemplateState::Running,
        };
        if session_over && token.is_some() {
            hold::release(&data, &req.domain)?;
        }
        applied?;
        for w in warnings {
            result = result.with_warning(w);
        }
    } else if token.is_some()
        && !check
        && req.desired.state != TemplateState::Running
        && hold::state(&data, &req.domain, token.as_deref())? == HoldState::Ours
    {
        // The seal had nothing left to do (the template was already shut off): the session is over all the same.
        hold::release(&data, &req.domain)?;
    }
    if req.desired.state == TemplateState::Absent {
        hold::release(&data, &req.domain)?;
        if lock.is_some() {
            // Everything the ledger proved is deleted; what it still lists is gone.
            Ledger::discard(&data, &req.domain)?;
        }
        return Ok(result);
    }
    drop(lock);
    let mut template = describe(&req, &before, the_plan.generation, true);
    if req.desired.state == TemplateState::Running {
        // Whoever runs the template playbook needs the address, the key and the pinned host key.
        let ip = address(&hv, &data, &req)?;
        let user = template_user(&req);
        template["address"] = json!(ip.to_string());
        template["ssh_private_key_file"] =
            json!(keys::load_user_key(&data.sshkeys_dir(), &user)?.map(|k| k.private_path));
        template["known_hosts_file"] = json!(data.known_hosts_file());
        template["host_key_alias"] = json!(req.domain);
    }
    Ok(result.with("template", template))
}

/// Waits while another live session customizes `template` (see [`virtup_core::hold`]): before this
/// run changes it, and before an instance clones it.
pub(crate) fn wait_for_hold(
    data: &DataDir,
    template: &str,
    token: Option<&str>,
) -> Result<Duration> {
    Ok(hold::wait_until_free(
        data,
        &domain_name(template),
        token,
        LOCK_TIMEOUT,
        |h| {
            crate::cli::progress::note(&format!(
                "template `{template}` is being customized by another run (process {}); waiting until it is sealed",
                h.holder.pid
            ))
        },
    )?)
}

/// The template's login user: the option or config, else virt-up's default `virt`.
fn template_user(req: &Request) -> String {
    req.settings.user.clone()
}

/// Waits (up to `wait_timeout`) until the running template answers on SSH with its pinned key.
fn address(hv: &Hypervisor, data: &DataDir, req: &Request) -> Result<std::net::IpAddr> {
    let parsed = virtup_libvirt::parse_domain_xml(&hv.xml(&req.domain)?)?;
    let mac = parsed.macs().first().map(|m| m.to_string());
    let sources = req.settings.address_source.clone();
    // The proof logs in as the template's user with virtup's key for that user.
    let user = template_user(req);
    let identity = data.user_key_path(&user);
    reach::wait_for_ssh(
        hv,
        data,
        &reach::Target {
            domain: &req.domain,
            login: reach::Login {
                alias: &req.domain,
                user: &user,
                identity: &identity,
            },
            mac: mac.as_deref(),
            sources: &sources,
            dns_name: &hostname(req),
            timeout: req.wait_timeout,
        },
        &ModuleReporter,
    )
}

fn diff(req: &Request, before: &TemplateObserved, plan: &Plan) -> Diff {
    let state_of = |d: &Option<ObservedDomain>| match d {
        None => "absent",
        Some(d) if d.running => "running",
        Some(_) => "present",
    };
    let b = json!({
        "state": state_of(&before.domain),
        "generation": before.domain.as_ref().map(|d| d.generation),
        "digest": before.domain.as_ref().and_then(|d| d.digest.clone()),
        "generations": before.generations,
    });
    let a = match req.desired.state {
        TemplateState::Absent => {
            json!({"state": "absent", "generation": null, "digest": null, "generations": []})
        }
        s => {
            let kept: Vec<u32> = before
                .generations
                .iter()
                .copied()
                .filter(|g| {
                    !plan
                        .steps
                        .contains(&Step::DeleteGeneration { generation: *g })
                })
                .chain(std::iter::once(plan.generation))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            json!({
                "state": if s == TemplateState::Running { "running" } else { "present" },
                "generation": plan.generation,
                "digest": req.desired.digest(),
                "generations": kept,
            })
        }
    };
    Diff::new(b, a).with_headers(
        format!("template {} (before)", req.desired.name),
        format!("template {} (after)", req.desired.name),
    )
}

fn describe(req: &Request, obs: &Observation, generation: u32, built: bool) -> Value {
    let disk = obs.pool_path.as_ref().map(|p| {
        p.join(volume_name(&req.desired.name, generation, &req.format))
            .display()
            .to_string()
    });
    json!({
        "name": req.desired.name,
        "domain": req.domain,
        "disk": if built || obs.volumes.contains_key(&generation) { disk } else { None },
        "generation": generation,
        "digest": req.desired.digest(),
        "source": req.desired.source.as_ref().map(ToString::to_string),
        "user": req.settings.user,
        "playbook": req.playbook,
    })
}

fn apply(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    plan: &Plan,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let accel = accel(hv, warnings)?;
    if plan.steps.iter().any(|s| matches!(s, Step::Define { .. })) {
        // Made before the build, so that failing to make it leaves nothing behind (define reads it).
        data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    }
    for step in &plan.steps {
        crate::cli::progress::stage(&format!("template `{}`: {step}", req.desired.name));
        // A failure from here on reports `changed: true`; a build marks it once its image is in
        // the pool, since a build that fails before leaves nothing behind.
        if !matches!(step, Step::Build { .. }) {
            virtup_ansible::mark_changed();
        }
        match *step {
            Step::Stop => virtup_ops::power::stop(hv, &req.domain, req.wait_timeout)?,
            Step::Build { generation } => build(ctx, data, hv, req, obs, generation, accel)?,
            Step::Define { generation } => define(data, hv, req, obs, generation, accel)?,
            Step::Start => {
                hv.start(&req.domain)?;
            }
            Step::Seal => seal(req, obs, plan.generation, accel)?,
            Step::DeleteGeneration { generation } => {
                if let Some(volume) = obs.volumes.get(&generation) {
                    hv.delete_volume(&req.pool, volume)?;
                    Ledger::read(data, &req.domain)?.forget(data, &req.uri, &req.pool, volume)?;
                }
            }
            // The domain is gone: only its config disk can be left (partials went before the steps).
            Step::DeleteLeftovers => {
                if let Some(config) = &obs.config_disk {
                    hv.delete_volume(&req.pool, config)?;
                    Ledger::read(data, &req.domain)?.forget(data, &req.uri, &req.pool, config)?;
                }
            }
            Step::Undefine => {
                hv.undefine(&req.domain)?;
                if let Some(config) = &obs.config_disk {
                    hv.delete_volume(&req.pool, config)?;
                    Ledger::read(data, &req.domain)?.forget(data, &req.uri, &req.pool, config)?;
                }
                known_hosts::remove(data, &req.domain, SHORT_LOCK_TIMEOUT)?;
                keys::remove_host_keys(&data.hostkeys_dir(), &req.domain)?;
                std::fs::remove_dir_all(ctx.secrets_dir(&req.domain)).or_else(ignore_not_found)?;
            }
        }
    }
    Ok(())
}

fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// KVM where it can really run a guest, TCG otherwise (with a warning: it is much slower).
fn accel(hv: &Hypervisor, warnings: &mut Vec<String>) -> Result<VirtType> {
    let choice = virtup_libvirt::choose_virt_type(hv)?;
    if choice.virt_type == VirtType::Qemu && std::env::var_os(virtup_core::VIRT_TYPE_ENV).is_none()
    {
        warnings.push(choice.reason);
    }
    Ok(choice.virt_type)
}

/// The generated (or given) secret of `what` as a 0600 file, for tools that read secrets from files.
fn secret(ctx: &Context, domain: &str, what: &str, given: Option<&str>) -> Result<PathBuf> {
    let dir = ctx.secrets_dir(domain);
    virtup_ops::identity::secret(&dir, what, given)?;
    Ok(dir.join(what))
}

/// The customizations every template gets, from either source, in one appliance run.
fn prepare_ops(req: &Request, password_file: &Path, public_key_file: &Path) -> Vec<CustomizeOp> {
    let f = &req.desired.fields;
    let user = &req.settings.user;
    let sudoers = format!("/etc/sudoers.d/90-virtup-{user}");
    let mut ops = vec![
        CustomizeOp::RunCommand(format!(
            "id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}"
        )),
        CustomizeOp::Password {
            user: user.clone(),
            file: password_file.to_owned(),
        },
        // From the file: virt-customize splits `string:` selectors at colons, and key comments have them.
        CustomizeOp::SshInjectFile {
            user: user.clone(),
            pubkey_file: public_key_file.to_owned(),
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
    // Images with cloud-init keep it for users' own data, but it must not undo the identity the
    // config disk gave: on a clone's first boot it would delete the pinned host keys and reset the hostname.
    ops.push(CustomizeOp::RunCommand(format!(
        "if [ -d /etc/cloud/cloud.cfg.d ]; then printf '{CLOUD_INIT_KEEP}' > /etc/cloud/cloud.cfg.d/90-virtup.cfg; fi"
    )));
    if let Some(extra) = &f.virt_customize_args {
        ops.push(CustomizeOp::Raw(extra.clone()));
    }
    ops.extend(identity_removal_ops());
    ops
}

/// cloud-init settings that leave hostname and SSH host keys to virtup's first-boot unit.
/// Written with printf, so `\\n` (backslash n) separates the lines and the command stays on one line.
const CLOUD_INIT_KEEP: &str = "# virtup: identity comes from the VIRTUPCFG config disk\\n\
ssh_deletekeys: false\\nssh_genkeytypes: []\\npreserve_hostname: true\\nmanage_etc_hosts: false\\n";

/// What a clone must not inherit: it gets its own at first boot from its config disk.
fn identity_removal_ops() -> Vec<CustomizeOp> {
    vec![
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

fn build(
    ctx: &Context,
    data: &DataDir,
    hv: &Hypervisor,
    req: &Request,
    obs: &Observation,
    generation: u32,
    accel: VirtType,
) -> Result<()> {
    let pool_path = obs
        .pool_path
        .as_ref()
        .ok_or_else(|| anyhow!("pool `{}` has no path", req.pool))?;
    let volume = volume_name(&req.desired.name, generation, &req.format);
    let out = pool_path.join(&volume);
    let part = pool_path.join(format!("{volume}.part"));
    let root_pw = secret(
        ctx,
        &req.domain,
        "root_password",
        req.root_password.as_deref(),
    )?;
    let user_pw = secret(ctx, &req.domain, "password", req.password.as_deref())?;
    let user = &req.settings.user;
    let key = keys::ensure_user_key(&data.sshkeys_dir(), user)?;
    let ops = prepare_ops(req, &user_pw, &key.public_path);
    let f = &req.desired.fields;
    let started = Instant::now();
    // Every name this build may create is recorded before it exists (the plan chose names no
    // foreign volume holds), so a killed build's files are provably virtup's for the next run.
    let mut ledger = Ledger::read(data, &req.domain)?;
    let xz_part = import_partial(&part);
    let pending = [file_name(&part), file_name(&xz_part), volume.clone()];
    for name in &pending {
        ledger.intend(data, &req.uri, &req.pool, name, None)?;
    }
    let result = (|| -> Result<()> {
        // The image gets password hashes: private (0600, like the volumes libvirt creates) before the
        // tools write into it, and again after them, whatever mode their own files had.
        private_image(&part)?;
        match req.desired.source.as_ref().expect("a build has a source") {
            Source::OsVersion(os_version) => {
                let mut cmd = VirtBuilder {
                    os_version: os_version.clone(),
                    output: part.clone(),
                    format: req.format.clone(),
                    size: f.size.clone(),
                    arch: f.arch.clone(),
                    root_password_file: Some(root_pw.clone()),
                    hostname: Some(hostname(req)),
                    ops,
                    extra_args: req.settings.virt_builder_args.clone(),
                }
                .cmd()?;
                libguestfs::apply_env(&mut cmd, accel);
                let scratch = virtup_guest::builder::scratch()?;
                virtup_guest::builder::use_scratch(&mut cmd, scratch.path());
                run_tool(
                    &cmd,
                    &format!("virt-builder could not build `{os_version}`"),
                )?;
            }
            Source::Image {
                location,
                checksum,
                gpg_key,
            } => {
                let local = fetch_image(data, location)?;
                verify_image(&local, checksum, gpg_key.as_deref(), data)?;
                import_image(&local, &part, &req.format, f.size.as_deref())?;
                let mut ops = ops;
                ops.insert(0, CustomizeOp::RootPassword(root_pw.clone()));
                ops.insert(1, CustomizeOp::Hostname(hostname(req)));
                let mut cmd = VirtCustomize {
                    ops,
                    ..VirtCustomize::new(&part)
                }
                .cmd()?;
                libguestfs::apply_env(&mut cmd, accel);
                run_tool(
                    &cmd,
                    &format!("virt-customize could not prepare image `{location}`"),
                )?;
            }
        }
        private_image(&part)?;
        // A link fails where rename would replace: nothing that took the name meanwhile is lost.
        std::fs::hard_link(&part, &out)
            .with_context(|| format!("failed to move `{}` into place", part.display()))?;
        std::fs::remove_file(&part)
            .with_context(|| format!("failed to remove `{}`", part.display()))?;
        Ok(())
    })();
    if let Err(e) = result {
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
    // The image is in the pool: a failure from here on reports `changed: true`.
    virtup_ansible::mark_changed();
    hv.refresh_pool(&req.pool)?;
    let built = hv
        .volume_info(&req.pool, &volume)?
        .ok_or_else(|| anyhow!("volume `{volume}` vanished right after its build"))?;
    ledger.confirm(data, &req.uri, &req.pool, &volume, &built.key)?;
    for name in &pending[..2] {
        ledger.forget(data, &req.uri, &req.pool, name)?;
    }
    // The template boots (state `running`) like an instance: its identity and pinned host key
    // come from a config disk, so even the template playbook connects with strict checking.
    let host_keys = keys::generate_host_keys(&data.hostkeys_dir(), &req.domain)?;
    let secrets_dir = ctx.secrets_dir(&req.domain);
    let identity = GuestIdentity {
        hostname: &hostname(req),
        fqdn: None,
        user,
        user_key: &key,
        host_keys: &host_keys,
        secrets_dir: &secrets_dir,
        password: req.password.as_deref(),
        root_password: req.root_password.as_deref(),
    }
    .build()?;
    let config = config_disk_volume(&req.domain);
    if let Some(old) = &obs.config_disk {
        hv.delete_volume(&req.pool, old)?;
        ledger.forget(data, &req.uri, &req.pool, old)?;
    }
    ledger.intend(data, &req.uri, &req.pool, &config, None)?;
    match upload_config_disk(hv, data, &req.pool, &config, &identity) {
        Ok(info) => ledger.confirm(data, &req.uri, &req.pool, &config, &info.key)?,
        Err(e) => {
            ledger.forget(data, &req.uri, &req.pool, &config)?;
            return Err(e);
        }
    }
    known_hosts::set(
        data,
        &req.domain,
        &host_keys.public_openssh,
        SHORT_LOCK_TIMEOUT,
    )?;
    crate::cli::progress::note(&format!(
        "virtup_template: built `{volume}` in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
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

fn run_tool(cmd: &Cmd, what: &str) -> Result<()> {
    cmd.output().map(drop).with_context(|| what.to_owned())
}

/// An image ready to be verified: a local file, or a download in the data dir's `cache/`.
/// Derefs to its path, so the build reads it like any file.
struct Fetched {
    path: PathBuf,
    /// What a checksum file lists the image as: the file name of the path or of the URL (never
    /// the cache's own `<hex>-<name>`).
    name: String,
    /// A cached download: one that fails its checksum is removed, so the next run downloads again.
    cached: bool,
}

impl std::ops::Deref for Fetched {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The last path segment of a URL, without query or fragment: the name sums files list.
fn url_file_name(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let name = url.rsplit('/').next().unwrap_or(url);
    if name.is_empty() {
        "image"
    } else {
        name
    }
}

/// `curl` into `out`: HTTP(S) only, also across redirects; an error status is a failure.
fn download(url: &str, out: &Path, what: &str) -> Result<()> {
    let mut cmd = Cmd::new("curl");
    cmd.args([
        "--fail",
        "--location",
        "--proto",
        "=http,https",
        "--proto-redir",
        "=http,https",
        "--silent",
        "--show-error",
        "--output",
    ])
    .arg(out)
    .arg(url);
    run_tool(&cmd, &format!("failed to download {what} `{url}`"))
}

/// A local path for the image: local paths and `file://` as they are, downloads cached by URL.
/// A download goes to a scratch dir of this run first (swept if the run is killed) and only a
/// complete one is moved into the cache; every build verifies it again.
fn fetch_image(data: &DataDir, location: &str) -> Result<Fetched> {
    let local = |path: &Path| -> Result<Fetched> {
        Ok(Fetched {
            path: existing(path)?,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cached: false,
        })
    };
    if let Some(path) = location.strip_prefix("file://") {
        return local(Path::new(path));
    }
    if !is_url(location) {
        return local(Path::new(location));
    }
    let cache = data.root().join("cache");
    virtup_core::datadir::ensure_private_dir(&cache)?;
    let key = virtup_core::InputDigest::new("virtup-download-v1")
        .field("url", location)
        .finish();
    let name = url_file_name(location);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = cache.join(format!("{}-{safe}", &key[..16]));
    if !path.is_file() {
        let scratch = data.scratch()?;
        let part = scratch.path().join("download");
        download(location, &part, "image")?;
        std::fs::rename(&part, &path)
            .with_context(|| format!("failed to move the download into `{}`", path.display()))?;
    }
    Ok(Fetched {
        path,
        name: name.to_owned(),
        cached: true,
    })
}

fn existing(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "invalid value for `image`: `{}` does not exist or is not a file",
            path.display()
        );
    }
    Ok(path.to_owned())
}

/// Checks the image against a `sha256:`/`sha512:` spec or a (optionally GPG-signed) checksum file,
/// in which the image is looked up by the name it has at its source. A checksum file is read anew
/// on every build (never cached: it is what tells a changed image). A cached download that fails
/// is removed, so no later run finds a file that once failed.
fn verify_image(image: &Fetched, spec: &str, gpg_key: Option<&str>, data: &DataDir) -> Result<()> {
    let expected = expected_sum(image, spec, gpg_key, data)?;
    let verified = checksum::verify_file(&image.path, &expected).with_context(|| {
        format!(
            "image `{}` failed its `checksum` `{spec}`",
            if image.cached {
                &image.name
            } else {
                image.path.to_str().unwrap_or(&image.name)
            }
        )
    });
    if verified.is_err() && image.cached {
        let _ = std::fs::remove_file(&image.path);
    }
    verified
}

/// The digest `spec` gives for `image`: the spec itself, or the entry of the checksum file it names.
fn expected_sum(
    image: &Fetched,
    spec: &str,
    gpg_key: Option<&str>,
    data: &DataDir,
) -> Result<Checksum> {
    if let Some(c) = parse_checksum_spec(spec)? {
        return Ok(c);
    }
    // Kept until the file is read, then removed with the scratch dir.
    let scratch;
    let sums = if is_url(spec) {
        scratch = data.scratch()?;
        let out = scratch.path().join("checksums");
        download(spec, &out, "the checksum file given in `checksum`")?;
        out
    } else {
        let path = Path::new(spec.strip_prefix("file://").unwrap_or(spec));
        if !path.is_file() {
            bail!(
                "invalid value for `checksum`: `{}` does not exist or is not a file",
                path.display()
            );
        }
        path.to_owned()
    };
    let text = match gpg_key {
        Some(key) => {
            let body = gpg::verify_clearsigned(&sums, Path::new(key)).with_context(|| {
                format!("checksum file `{spec}` is not signed by `checksum_gpg_key` `{key}`")
            })?;
            String::from_utf8(body)
                .with_context(|| format!("checksum file `{spec}` is not text"))?
        }
        None => std::fs::read_to_string(&sums)
            .with_context(|| format!("failed to read checksum file `{spec}`"))?,
    };
    checksum::find_sum(&text, &image.name, spec)
        .with_context(|| format!("image `{}` failed its `checksum`", image.name))
}

/// Where an image import decompresses to, beside the build's partial (`<volume>.part` → `<volume>.xz.part`).
fn import_partial(part: &Path) -> PathBuf {
    part.with_extension("xz.part")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Turns the verified image into the template volume's format (decompressing `.xz`), grown to `size`.
fn import_image(src: &Path, out: &Path, format: &str, size: Option<&str>) -> Result<()> {
    // Recorded in the ledger before the build starts, so the next run deletes it if this one is
    // killed while it exists.
    let decompressed = import_partial(out);
    let src = if xz::is_xz(src) {
        let r = xz::decompress_cmd(src, &decompressed).output();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&decompressed);
            return Err(e).context("failed to decompress image");
        }
        decompressed.as_path()
    } else {
        src
    };
    let info = qemu_img::info(src, None)?;
    let converted = qemu_img::convert_cmd(src, Some(&info.format), out, format).output();
    if src == decompressed {
        let _ = std::fs::remove_file(src);
    }
    converted.context("qemu-img could not convert the image")?;
    if let Some(size) = size {
        let bytes = validate::parse_size("size", size)?;
        if bytes > info.virtual_size {
            qemu_img::resize_cmd(out, format, bytes)
                .output()
                .context("qemu-img could not grow the image")?;
        }
    }
    Ok(())
}

/// Defines the template domain from virt-install's XML with virtup's tag inside, in one define.
fn define(
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
    tag.user = Some(template_user(req));
    tag.owner = Some(data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?);
    let xml = tag.insert_into_domain_xml(&xml)?;
    hv.define_xml(&xml)?;
    Ok(())
}

/// After the template ran online: remove the identity again, so clones get their own.
fn seal(req: &Request, obs: &Observation, generation: u32, accel: VirtType) -> Result<()> {
    let pool_path = obs
        .pool_path
        .as_ref()
        .ok_or_else(|| anyhow!("pool `{}` has no path", req.pool))?;
    let disk = pool_path.join(volume_name(&req.desired.name, generation, &req.format));
    let mut cmd = VirtCustomize {
        ops: identity_removal_ops(),
        ..VirtCustomize::new(&disk)
    }
    .cmd()?;
    libguestfs::apply_env(&mut cmd, accel);
    run_tool(&cmd, "virt-customize could not seal the template")
}

/// The template's hostname: its name made a valid host name (`generic/debian10` → `generic-debian10`).
fn hostname(req: &Request) -> String {
    validate::template_hostname(&req.desired.name)
}

/// A template's current generation, as clones need it.
pub struct CurrentDisk {
    pub generation: u32,
    pub volume: String,
    pub path: String,
    /// The template domain is running: its disk is changing.
    pub running: bool,
}

/// For clones: the disk the tagged template domain itself uses (its definition was written after
/// that generation was built, so it is the record that proves which volume is current; a volume
/// merely named like a generation proves nothing).
pub fn current_disk(
    hv: &Hypervisor,
    data: &DataDir,
    pool: &str,
    template: &str,
) -> Result<Option<CurrentDisk>> {
    let domain = domain_name(template);
    let Some(dom) = hv.domain(&domain)? else {
        return Ok(None);
    };
    let Some(tag) = dom.tag.filter(|t| t.is(TagKind::Template, template)) else {
        return Ok(None);
    };
    // A clone pins its base generation: another data dir's template is not this one's to pin.
    if !virtup_ops::owner::proves(data, hv, &tag, &domain)? {
        bail!(
            "invalid value for `template`: template `{template}` (domain `{domain}`) was not made by \
             virtup with this data dir; build one of your own under another name"
        );
    }
    let parsed = virtup_libvirt::parse_domain_xml(&hv.inactive_xml(&domain)?)?;
    let paths: Vec<&str> = parsed
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .filter_map(|d| d.path.as_deref())
        .collect();
    for v in hv.list_volumes(pool)? {
        if volume_generation(template, &v.name) == Some(tag.generation)
            && paths.contains(&v.path.as_str())
        {
            return Ok(Some(CurrentDisk {
                generation: tag.generation,
                volume: v.name,
                path: v.path,
                running: dom.state != DomainState::ShutOff,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod image_source_tests {
    //! `fetch_image` / `verify_image` against a small HTTP server on loopback in this process.
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::{Arc, Mutex};

    use super::*;

    type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

    /// Serves `files` (path → body) over HTTP/1.0 on 127.0.0.1; 404 for anything else.
    fn serve(files: Files) -> String {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = files.lock().unwrap().get(&path).cloned();
                let mut out = &stream;
                let _ = match body {
                    Some(b) => out
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                                .as_bytes(),
                        )
                        .and_then(|()| out.write_all(&b)),
                    None => out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
            }
        });
        base
    }

    const IMAGE: &[u8] = b"not really a disk image, but bytes with a digest\n";

    fn sha256_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        checksum::hash_file(&p, checksum::Algorithm::Sha256).unwrap()
    }

    fn setup() -> (tempfile::TempDir, DataDir, Files, String) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        let files: Files = Arc::default();
        let sum = sha256_of(IMAGE);
        {
            let mut f = files.lock().unwrap();
            f.insert("/d/debian-12.qcow2".into(), IMAGE.to_vec());
            f.insert(
                "/d/SHA256SUMS".into(),
                format!("{}  other.qcow2\n{sum} *debian-12.qcow2\n", "1".repeat(64)).into(),
            );
            f.insert(
                "/d/BSD".into(),
                format!("SHA256 (debian-12.qcow2) = {sum}\n").into(),
            );
            f.insert(
                "/d/WRONG".into(),
                format!("{}  debian-12.qcow2\n", "0".repeat(64)).into(),
            );
            f.insert("/d/OTHER".into(), format!("{sum}  other.qcow2\n").into());
        }
        let base = serve(files.clone());
        (dir, data, files, base)
    }

    fn leftovers(data: &DataDir) -> Vec<String> {
        std::fs::read_dir(data.tmp_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn url_file_names() {
        assert_eq!(url_file_name("https://h/a/b/img.qcow2"), "img.qcow2");
        assert_eq!(url_file_name("https://h/a/img.qcow2?x=1/2#f"), "img.qcow2");
        assert_eq!(url_file_name("https://h/a/"), "image");
    }

    /// The sums file is searched for the name the URL gives, never the cache's `<hex>-<name>`, in
    /// GNU (binary mode) and BSD style.
    #[test]
    fn a_download_is_looked_up_by_its_url_file_name() {
        let (_d, data, _files, base) = setup();
        let image = fetch_image(&data, &format!("{base}/d/debian-12.qcow2")).unwrap();
        assert_eq!(image.name, "debian-12.qcow2");
        assert!(image.cached);
        let cache_name = image.path.file_name().unwrap().to_str().unwrap();
        assert!(cache_name.ends_with("-debian-12.qcow2") && cache_name.len() == 16 + 1 + 15);
        assert_eq!(std::fs::read(&image.path).unwrap(), IMAGE);
        for sums in ["SHA256SUMS", "BSD"] {
            verify_image(&image, &format!("{base}/d/{sums}"), None, &data).unwrap();
        }
        let spec = format!("sha256:{}", sha256_of(IMAGE));
        verify_image(&image, &spec, None, &data).unwrap();
        assert!(image.path.is_file(), "a verified download stays cached");
        assert_eq!(
            leftovers(&data),
            Vec::<String>::new(),
            "no scratch dir is left"
        );
    }

    /// A download that fails is removed from the cache; one that is not listed names the checksum
    /// file; the sums file is fetched anew each time (a corrected one is seen at once).
    #[test]
    fn failed_verification_leaves_nothing_a_later_run_would_trust() {
        let (_d, data, files, base) = setup();
        let url = format!("{base}/d/debian-12.qcow2");
        let image = fetch_image(&data, &url).unwrap();
        let wrong = format!("{base}/d/WRONG");
        let e = format!(
            "{:#}",
            verify_image(&image, &wrong, None, &data).unwrap_err()
        );
        assert!(
            e.starts_with(&format!(
                "image `debian-12.qcow2` failed its `checksum` `{wrong}`: checksum mismatch"
            )),
            "{e}"
        );
        assert!(!image.path.exists(), "the failed download is removed");

        let image = fetch_image(&data, &url).unwrap();
        let other = format!("{base}/d/OTHER");
        let e = format!(
            "{:#}",
            verify_image(&image, &other, None, &data).unwrap_err()
        );
        assert!(
            e.contains(&format!("no checksum for `debian-12.qcow2` in `{other}`")),
            "{e}"
        );
        // The server's checksum file is corrected: the next verification sees it.
        let good = files.lock().unwrap()["/d/SHA256SUMS"].clone();
        files.lock().unwrap().insert("/d/OTHER".into(), good);
        verify_image(&image, &other, None, &data).unwrap();

        // A cached file that changed on disk is verified again, fails, and is removed.
        std::fs::write(&image.path, b"changed").unwrap();
        let again = fetch_image(&data, &url).unwrap();
        assert_eq!(again.path, image.path);
        assert!(verify_image(&again, &other, None, &data).is_err());
        assert!(!again.path.exists());

        let e = format!(
            "{:#}",
            verify_image(&again, &format!("{base}/d/MISSING"), None, &data).unwrap_err()
        );
        assert!(
            e.contains("failed to download the checksum file given in `checksum`"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            fetch_image(&data, &format!("{base}/d/missing.qcow2"))
                .map(drop)
                .unwrap_err()
        );
        assert!(e.contains("failed to download image"), "{e}");
        assert_eq!(
            leftovers(&data),
            Vec::<String>::new(),
            "no scratch dir is left"
        );
        assert_eq!(
            std::fs::read_dir(data.root().join("cache"))
                .unwrap()
                .count(),
            0,
            "no partial download is cached"
        );
    }

    /// Local images are looked up by their own file name, and a local checksum file works too.
    #[test]
    fn local_images_and_checksum_files() {
        let (d, data, _files, _base) = setup();
        let img = d.path().join("debian-12.qcow2");
        std::fs::write(&img, IMAGE).unwrap();
        let sums = d.path().join("SUMS");
        std::fs::write(&sums, format!("{} *debian-12.qcow2\n", sha256_of(IMAGE))).unwrap();
        for location in [
            img.display().to_string(),
            format!("file://{}", img.display()),
        ] {
            let image = fetch_image(&data, &location).unwrap();
            assert!(!image.cached);
            verify_image(&image, sums.to_str().unwrap(), None, &data).unwrap();
        }
        std::fs::write(&sums, format!("{}  debian-12.qcow2\n", "0".repeat(64))).unwrap();
        let image = fetch_image(&data, img.to_str().unwrap()).unwrap();
        assert!(verify_image(&image, sums.to_str().unwrap(), None, &data).is_err());
        assert!(img.exists(), "a local image is never removed");
        let e = format!(
            "{:#}",
            verify_image(&image, "/nonexistent/SUMS", None, &data).unwrap_err()
        );
        assert!(e.contains("invalid value for `checksum`"), "{e}");
    }
}
