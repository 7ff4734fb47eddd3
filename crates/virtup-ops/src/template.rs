//! The template operation: resolve options into a request, observe libvirt and the data dir, plan
//! (`virtup_core::template`), and apply in apply mode; plus what clones need of a template.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use virtup_core::config::Settings;
use virtup_core::hold::{self, HoldState};
use virtup_core::ownership::{self, Ledger, Proof};
use virtup_core::template::{
    domain_name, plan, volume_generation, volume_name, ObservedDomain, Plan, Source, Step,
    TemplateDesired, TemplateObserved, TemplateState,
};
use virtup_core::vocab::config_disk_volume;
use virtup_core::{keys, known_hosts, validate, DataDir, Fields, LockGuard};
use virtup_guest::checksum;
use virtup_libvirt::{DomainState, Hypervisor, ImageFormat, TagKind, VirtType};

use crate::context::{self, Context, Waited, LOCK_TIMEOUT, SHORT_LOCK_TIMEOUT};
use crate::{reach, Mode, Reporter};

mod build;
mod image;
#[cfg(test)]
mod tests;

use image::parse_checksum_spec;

/// What a caller asks of one template, before the config and the defaults: the module's options,
/// or `virt-up`'s flags. (No `Debug`: it carries passwords.)
#[derive(Clone)]
pub struct TemplateOptions {
    pub name: String,
    pub state: TemplateState,
    /// The options that are also config keys (source, pool, memory, user, …): the top config layer.
    pub layer: Fields,
    pub checksum_gpg_key: Option<String>,
    /// Folded into the digest: a new revision builds a new generation.
    pub revision: Option<String>,
    /// The playbook the caller customizes the template with (an absolute path): its sha256 is folded
    /// into the digest, and it wins over the config's `template-playbook`.
    pub playbook: Option<PathBuf>,
    /// The customization session this call starts or belongs to (see [`virtup_core::hold`]).
    pub hold: Option<SessionHold>,
    pub wait_timeout: Duration,
    pub password: Option<String>,
    pub root_password: Option<String>,
    /// Keep a warm image of the current generation (see [`crate::warm`]).
    pub warm: bool,
}

impl TemplateOptions {
    /// The options of a task that names only `name` and `state`: every other one at its default.
    pub fn new(name: &str, state: TemplateState) -> TemplateOptions {
        TemplateOptions {
            name: name.to_owned(),
            state,
            layer: Fields::default(),
            checksum_gpg_key: None,
            revision: None,
            playbook: None,
            hold: None,
            wait_timeout: Duration::from_secs(context::DEFAULT_WAIT_TIMEOUT_SECS),
            password: None,
            root_password: None,
            warm: false,
        }
    }
}

/// How a call takes part in a customization session: a template built to be customized by a
/// playbook is *held* from its build to its seal, over several calls (see [`virtup_core::hold`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionHold {
    /// Start a session with this fresh token if the template has a playbook and this call builds it,
    /// takes over an interrupted customization, or re-seals it after it was left running (when no
    /// clone uses it); otherwise there is none.
    Start(String),
    /// Go on with the session of this token: its later calls (boot, seal) use the revision it
    /// pinned at the build instead of reading the playbook again.
    Continue(String),
}

impl SessionHold {
    /// A session to start, with a fresh token: 24 random lowercase letters and digits.
    pub fn start() -> Result<SessionHold> {
        use std::io::Read as _;
        let mut bytes = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| anyhow!("failed to read /dev/urandom: {e}"))?;
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        Ok(SessionHold::Start(
            bytes
                .iter()
                .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
                .collect(),
        ))
    }

    pub fn token(&self) -> &str {
        match self {
            SessionHold::Start(t) | SessionHold::Continue(t) => t,
        }
    }
}

/// A template request, resolved and validated; building it has had no side effect.
pub struct Request {
    pub desired: TemplateDesired,
    /// The libvirt domain, `VIRTUP-<name>`.
    pub domain: String,
    /// The key of the template's records on `uri` (see [`context::template_scope`]).
    pub scope: String,
    pub uri: String,
    pub pool: String,
    pub format: String,
    /// `desired.fields` with every default applied.
    pub settings: Settings,
    pub wait_timeout: Duration,
    /// The token of the customization session this call belongs to (see [`virtup_core::hold`]).
    pub hold: Option<String>,
    /// The call starts that session ([`SessionHold::Start`] with a playbook): what it builds or
    /// re-seals, the caller customizes next, so the session holds the template from then on.
    pub starts_session: bool,
    /// The playbook that customizes the template: the caller's, else the config's
    /// `template-playbook` (see [`template_playbook`]); not for `absent`.
    pub playbook: Option<PathBuf>,
    password: Option<String>,
    root_password: Option<String>,
    /// What it was resolved from: a real run resolves it again under the lock, after the wait for
    /// another session, so that the digest names the user's key made there and the playbook as it is then.
    options: TemplateOptions,
}

/// Module options over the template's config section over `[common]` over built-in defaults.
pub fn resolve(
    ctx: &Context,
    options: TemplateOptions,
    user_public_key: impl FnOnce(&str) -> Result<String>,
) -> Result<Request> {
    let given = options.clone();
    let TemplateOptions {
        name,
        state,
        layer: module,
        checksum_gpg_key,
        wait_timeout,
        password,
        root_password,
        warm: given_warm,
        ..
    } = options;
    if state == TemplateState::Absent {
        // Removing needs no hostname: leftovers of names earlier versions accepted can still go.
        validate::removable_template_name("name", &name)?;
    } else {
        // Its hostname derives from the name: refused here, not after a whole virt-builder run.
        validate::template_name("name", &name)?;
    }
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
    let uri = placed_uri(ctx, &name, state, module.uri.is_some(), &fields)?;
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
                gpg_key: checksum_gpg_key,
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
    let domain = domain_name(&name);
    let scope = context::template_scope(&name, &uri);
    let Customization {
        playbook,
        revision,
        hold,
        held,
    } = customization(ctx, &given, &fields, &scope)?;
    let starts_session = hold.is_some() && matches!(given.hold, Some(SessionHold::Start(_)));
    let local = virtup_libvirt::uri_is_local(&uri);
    // The session's seal call: whatever its playbook did, the template is sealed.
    let seal_pending = held && state == TemplateState::Present;
    Ok(Request {
        options: given,
        playbook,
        domain,
        scope,
        uri,
        pool: settings.pool.clone(),
        format: settings.image_format.as_str().to_owned(),
        settings,
        wait_timeout,
        hold,
        starts_session,
        password,
        root_password,
        desired: TemplateDesired {
            name,
            state,
            source,
            fields,
            revision,
            user_public_key,
            seal_pending,
            // A build a playbook customizes next is seeded once the session seals it; a remote
            // hypervisor gets no warm image (see `report`).
            warm: given_warm && !starts_session && local,
            warm_image: given_warm && local,
        },
    })
}

/// The hypervisor of the request. A template's records (volume ledger, pinned host key, secrets)
/// are keyed by [`context::template_scope`]: each remote hypervisor has its own, while this
/// machine's hypervisors (`qemu:///system`, `qemu:///session`, ...) share the domain name, so there a
/// template lives on one of them and another is refused. A removal that names no `uri` goes where
/// the records are.
fn placed_uri(
    ctx: &Context,
    name: &str,
    state: TemplateState,
    uri_given: bool,
    fields: &virtup_core::Fields,
) -> Result<String> {
    let asked = context::uri(fields, &ctx.paths);
    // Before any message below repeats it.
    context::check_uri(&asked)?;
    let scope = context::template_scope(name, &asked);
    let recorded = context::recorded(&ctx.data, &scope, &asked);
    let uri = if state == TemplateState::Absent && !uri_given && !recorded.here {
        match context::template_uris(&ctx.data, name).as_slice() {
            [] => asked,
            [only] => only.clone(),
            several => bail!(
                "template `{name}` lives on `{}`: give `uri` to say which one to remove",
                several.join("`, `")
            ),
        }
    } else if !recorded.elsewhere.is_empty() {
        return Err(lives_elsewhere(
            &ctx.data,
            &scope,
            name,
            &asked,
            &recorded.elsewhere,
        ));
    } else {
        asked
    };
    if state != TemplateState::Absent {
        check_one_spelling(&ctx.data, name, &uri)?;
    }
    context::check_uri(&uri)?;
    Ok(uri)
}

/// Refuses `uri` when the template is recorded on a URI that may name the same hypervisor in another
/// spelling: the two would keep records of one pool apart, and neither would know the other's. A
/// removal is not refused: it deletes only what its own records prove, and it is the way out.
fn check_one_spelling(data: &DataDir, name: &str, uri: &str) -> Result<()> {
    match context::template_spelled_otherwise(data, name, uri) {
        Some(other) => bail!(
            "template `{name}` is recorded on `{other}`, which may be the hypervisor `{uri}` names \
             (the same machine): give one hypervisor one URI, `{other}`, or remove the template there \
             first (`state: absent`, `uri: {other}`)"
        ),
        None => Ok(()),
    }
}

/// The refusal of a template run on `asked` when the records of its scope put it on `others`.
fn lives_elsewhere(
    data: &DataDir,
    scope: &str,
    name: &str,
    asked: &str,
    others: &[String],
) -> anyhow::Error {
    anyhow::anyhow!(
        "template `{name}` lives on `{}`, not on `{asked}`: this machine's hypervisors share a \
         template's records (e.g. `{}`), so a template name is used on one of them per data dir \
         (each remote hypervisor has its own); use another name there, or remove it first \
         (`state: absent`, `uri: {}`)",
        others.join("`, `"),
        data.root()
            .join("owned")
            .join(format!("{scope}.json"))
            .display(),
        others[0]
    )
}

/// Where [`template_playbook`] is, without reading it.
fn template_playbook_path(
    ctx: &Context,
    name: &str,
    fields: &virtup_core::config::Fields,
) -> Result<Option<PathBuf>> {
    crate::playbook::configured_path(
        ctx,
        "template-playbook",
        name,
        fields.template_playbook.as_deref(),
        |f| f.template_playbook.is_some(),
    )
}

/// virt-up's `template-playbook` of the template's config section (or `[common]`); see [`crate::playbook::configured`].
fn template_playbook(
    ctx: &Context,
    name: &str,
    fields: &virtup_core::config::Fields,
) -> Result<Option<(PathBuf, String)>> {
    crate::playbook::configured(
        ctx,
        "template-playbook",
        name,
        fields.template_playbook.as_deref(),
        |f| f.template_playbook.is_some(),
    )
}

/// What customizes a template: its playbook, the revision its digest folds in, and the token of
/// the customization session the call belongs to.
struct Customization {
    /// The caller's playbook, else the config's `template-playbook`; none for `absent`.
    playbook: Option<PathBuf>,
    revision: Option<String>,
    hold: Option<String>,
    /// The call goes on with a session that holds the template (its revision is pinned).
    held: bool,
}

/// The playbook and the revision with its digest, read now, or as the session's build read them
/// (pinned in its hold): a session's later calls must not see an edit made meanwhile.
fn customization(
    ctx: &Context,
    options: &TemplateOptions,
    fields: &Fields,
    scope: &str,
) -> Result<Customization> {
    let own_playbook = match options.state {
        // No playbook is needed to remove a template.
        TemplateState::Absent => None,
        _ => options
            .playbook
            .as_deref()
            .map(absolute_playbook)
            .transpose()?,
    };
    let pinned = match &options.hold {
        Some(SessionHold::Continue(token)) => hold::pinned_revision(&ctx.data, scope, token)?,
        _ => None,
    };
    let held = pinned.is_some();
    let (config_playbook, revision) = match (options.state, pinned) {
        (TemplateState::Absent, _) => (None, options.revision.clone()),
        // The session's build read both playbooks; an edit, a move or a removal since is the next
        // run's (a config playbook no longer found names none: the session goes on without it).
        (_, Some(pinned)) => (
            template_playbook_path(ctx, &options.name, fields).unwrap_or(None),
            Some(pinned),
        ),
        (_, None) => {
            let config = template_playbook(ctx, &options.name, fields)?;
            let own = own_playbook.map(playbook_sha256).transpose()?;
            // The caller's playbook first, then the config's, as the role and the module added them.
            let revision = with_playbook_digest(
                with_playbook_digest(options.revision.as_deref(), own.as_ref(), "playbook-sha256")
                    .as_deref(),
                config.as_ref(),
                "template-playbook-sha256",
            );
            (config.map(|(path, _)| path), revision)
        }
    };
    let playbook = own_playbook.map(Path::to_owned).or(config_playbook);
    // A session starts only where a playbook will customize what this call makes.
    let hold = match &options.hold {
        Some(SessionHold::Start(_)) if playbook.is_none() => None,
        hold => hold
            .as_ref()
            .map(|h| h.token().to_owned())
            .filter(|t| !t.is_empty()),
    };
    Ok(Customization {
        playbook,
        revision,
        hold,
        held,
    })
}

/// The caller's playbook path, which must be absolute (the module runs in a directory of Ansible's).
fn absolute_playbook(path: &Path) -> Result<&Path> {
    if !path.is_absolute() {
        bail!(
            "invalid value for `playbook`: {} must be an absolute path",
            validate::Shown(&path.display().to_string())
        );
    }
    Ok(path)
}

/// The caller's playbook with its sha256.
fn playbook_sha256(path: &Path) -> Result<(PathBuf, String)> {
    let sha256 = checksum::hash_file(path, checksum::Algorithm::Sha256)
        .with_context(|| format!("cannot read `playbook` `{}`", path.display()))?;
    Ok((path.to_owned(), sha256))
}

/// `revision` with a playbook's digest appended as `<label>:<sha256>`, joined by a space as the
/// role `virtup_template` joined them before the module read the playbook itself (an empty
/// `revision` with a playbook keeps its leading space), so that existing templates keep their
/// digests and editing the playbook builds a new generation.
fn with_playbook_digest(
    revision: Option<&str>,
    playbook: Option<&(PathBuf, String)>,
    label: &str,
) -> Option<String> {
    match (revision, playbook) {
        (revision, None) => revision.map(str::to_owned),
        (None, Some((_, sha256))) => Some(format!("{label}:{sha256}")),
        (Some(r), Some((_, sha256))) => Some(format!("{r} {label}:{sha256}")),
    }
}

/// What exists: the tagged template domain, its generation volumes, and the instances using them.
struct Observation {
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

fn observe(hv: &Hypervisor, data: &DataDir, req: &Request) -> Result<Observation> {
    let mut model = TemplateObserved::default();
    let ledger = Ledger::read(data, &req.scope)?;
    // Resolve saw the records before the lock; a run on another hypervisor that held the lock
    // meanwhile may have placed the template there (a real run observes under the lock).
    let recorded = context::recorded(data, &req.scope, &req.uri);
    if !recorded.elsewhere.is_empty() {
        return Err(lives_elsewhere(
            data,
            &req.scope,
            &req.desired.name,
            &req.uri,
            &recorded.elsewhere,
        ));
    }
    if req.desired.state != TemplateState::Absent {
        check_one_spelling(data, &req.desired.name, &req.uri)?;
    }
    // A damaged owner id fails the run here, in check mode too: the real run needs it.
    data.owner_id()?;
    let mut uuid = None;
    for dom in hv.list_domains()? {
        match &dom.tag {
            Some(tag) if dom.name == req.domain => {
                // A tag proves a template to the data dir that wrote it, not to every data dir.
                if tag.is(TagKind::Template, &req.desired.name)
                    && crate::owner::proves(data, hv, tag, &req.scope)?
                {
                    model.domain = Some(ObservedDomain {
                        // Suspended by a managed save (libvirt-guests does it at host shutdown):
                        // its disk's latest state is in its memory. Kept for a seal or a delete,
                        // whose stop resumes it and shuts it down; resumed by `running`'s start.
                        running: dom.state != DomainState::ShutOff
                            || (dom.saved && req.desired.state != TemplateState::Running),
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
    let mut obs = Observation {
        model,
        volumes: BTreeMap::new(),
        partials: Vec::new(),
        config_disk: None,
        adopt: Vec::new(),
        pool_path: None,
        uuid,
    };
    match hv.pool(&req.pool)? {
        Some(p) => {
            hv.refresh_pool(&req.pool)?;
            scan_volumes(hv, req, &ledger, &domain_disks, &mut obs)?;
            obs.pool_path = p.path.map(PathBuf::from);
        }
        // Nothing of a template can exist in a pool that does not; only building needs it.
        None if req.desired.state == TemplateState::Absent => {}
        None => bail!(
            "invalid value for `pool`: storage pool `{}` does not exist on `{}`",
            req.pool,
            req.uri
        ),
    }
    obs.model.leftovers =
        obs.model.domain.is_none() && (obs.config_disk.is_some() || !obs.partials.is_empty());
    if let (Some(dom), true) = (&obs.model.domain, req.desired.warm) {
        // A warm image fits when its record says so; a clone checks its own shape again. Only a
        // warm template asks (the accelerator's choice may boot a test guest once per host boot).
        let fits = match crate::warm::WarmRecord::read(data, &req.scope, dom.generation)? {
            Some(record) if record.proven(hv, &ledger)? => {
                // The accelerator clones would get now, as they decide it (kept per boot).
                let accel = crate::virt_choice::choose(hv, data)?.virt_type;
                record
                    .mismatch(
                        hv,
                        &req.pool,
                        accel,
                        req.settings.memory_mib,
                        req.settings.vcpus,
                    )?
                    .is_none()
            }
            _ => false,
        };
        if fits {
            obs.model.warm.insert(dom.generation);
        }
    }
    Ok(obs)
}

/// Sorts the pool's volumes by what proves them: the ledger, else the template domain's own
/// definition (`domain_disks`); a name alone only says what would collide.
fn scan_volumes(
    hv: &Hypervisor,
    req: &Request,
    ledger: &Ledger,
    domain_disks: &[String],
    obs: &mut Observation,
) -> Result<()> {
    let config_name = config_disk_volume(&req.domain);
    let model = &mut obs.model;
    let volumes = hv.list_volumes(&req.pool)?;
    for v in &volumes {
        // A warm disk that backs another volume backs a clone.
        if let Some(g) = crate::warm::volume_generation(&req.desired.name, &v.name) {
            if v.name == crate::warm::disk_volume(&req.desired.name, g)
                && volumes
                    .iter()
                    .any(|o| o.backing.as_deref() == Some(v.path.as_str()))
            {
                model.warm_in_use.insert(g);
            }
        }
    }
    for v in volumes {
        let seen = ownership::Observed {
            name: &v.name,
            key: &v.key,
            backing: v.backing.as_deref(),
        };
        let generation = volume_generation(&req.desired.name, &v.name);
        let mut proof = ledger.proof(&req.uri, &req.pool, seen);
        if proof == Proof::Foreign
            && domain_disks.contains(&v.path)
            && (generation.is_some() || v.name == config_name)
        {
            obs.adopt.push((v.name.clone(), v.key.clone()));
            proof = Proof::Created;
        }
        let warm_generation = crate::warm::volume_generation(&req.desired.name, &v.name);
        match (proof, generation) {
            (Proof::Created, None) if warm_generation.is_some() => {
                model.warm_volumes.extend(warm_generation);
            }
            (Proof::Created, Some(g)) => {
                model.generations.insert(g);
                obs.volumes.insert(g, v.name);
            }
            (Proof::Created, None) if v.name == config_name => obs.config_disk = Some(v.name),
            (Proof::Pending, _) => obs.partials.push(v.name),
            (Proof::Foreign, _) if v.name == config_name => {
                model.foreign_config_disk = Some(v.name)
            }
            (Proof::Foreign, _) if warm_generation.is_some() => {
                model
                    .foreign_warm
                    .extend(warm_generation.map(|g| (g, v.name.clone())));
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
    Ok(())
}

/// A template's state as `--diff` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateView {
    pub state: &'static str,
    pub generation: Option<u32>,
    pub digest: Option<String>,
    pub generations: Vec<u32>,
    /// The current generation has a warm image that fits.
    pub warm: bool,
}

/// The template as the module returns it (`template`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateFacts {
    pub name: String,
    pub domain: String,
    pub disk: Option<String>,
    pub generation: u32,
    pub digest: String,
    pub source: Option<String>,
    pub user: String,
    pub playbook: Option<PathBuf>,
    /// How to reach it, when it was left running.
    #[serde(flatten)]
    pub login: Option<TemplateLogin>,
    /// The current generation's warm image, when it has one that fits.
    pub warm: Option<WarmFacts>,
}

/// A warm image as the module returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmFacts {
    pub image: String,
    pub disk: String,
    pub image_bytes: u64,
    /// From the seed's start to its saved image, when it was made.
    pub seconds: f64,
}

impl From<crate::warm::WarmRecord> for WarmFacts {
    fn from(r: crate::warm::WarmRecord) -> WarmFacts {
        WarmFacts {
            image: r.image_path,
            disk: r.disk_path,
            image_bytes: r.image_bytes,
            seconds: r.seconds,
        }
    }
}

/// Where a running template answers on SSH, and with which key and pinned host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateLogin {
    pub address: String,
    pub ssh_private_key_file: Option<PathBuf>,
    pub known_hosts_file: PathBuf,
    /// The pinned key is stored under the domain's name.
    pub host_key_alias: String,
    /// Every ssh option a connection to the template needs, shell-quoted: the pinned key and, on a
    /// remote hypervisor, the jump through it (as the inventory's `ansible_ssh_common_args`).
    pub ssh_common_args: String,
}

/// The result of one converge.
#[derive(Debug, Clone)]
pub struct TemplateReport {
    pub changed: bool,
    /// The plan in words.
    pub msg: String,
    pub warnings: Vec<String>,
    /// How long a real run waited for other runs; `None` in a check run.
    pub waited: Option<Waited>,
    pub diff: (TemplateView, TemplateView),
    /// The template after the run; `None` for `absent`.
    pub template: Option<TemplateFacts>,
    /// The token of the customization session that holds the template after this call (one it
    /// started or went on with): the caller passes it to the session's next calls, as
    /// [`SessionHold::Continue`].
    pub hold: Option<String>,
}

/// The public key of `user` as the digest names it, without making one: until a key exists the
/// digest uses a stand-in, so an unbuilt template shows as a change, which it is.
pub fn current_user_key(ctx: &Context) -> impl FnOnce(&str) -> Result<String> + '_ {
    |user| {
        Ok(keys::load_user_key(&ctx.data.sshkeys_dir(), user)?
            .map(|k| k.public_openssh)
            .unwrap_or_else(|| "(not generated yet)".into()))
    }
}

/// Brings the template to the request on `hv` (connected to `req.uri`).
///
/// Observing and planning happen first without any write, so bad input and refusals fail before any
/// side effect and a no-op run costs no lock. In [`Mode::Apply`] with work to do, the run plans
/// again under the template's lock, so concurrent runs build each generation once: the second one
/// waits, observes the finished template and has nothing left to do.
pub fn converge(
    ctx: &Context,
    hv: &Hypervisor,
    req: Request,
    mode: Mode,
    reporter: &dyn Reporter,
) -> Result<TemplateReport> {
    match mode {
        Mode::Check => check(ctx, hv, &req),
        Mode::Apply => {
            ctx.tidy()?;
            apply_mode(ctx, hv, req, reporter)
        }
    }
}

/// What a real run would do; nothing is written, no hold is waited for.
fn check(ctx: &Context, hv: &Hypervisor, req: &Request) -> Result<TemplateReport> {
    let before = observe(hv, &ctx.data, req)?;
    let the_plan = plan(&req.desired, &before.model)?;
    let interrupted = takes_over(
        hold::state(&ctx.data, &req.scope, req.hold.as_deref())?,
        req,
    );
    let mut report = report(req, &before, &the_plan, interrupted);
    if req.desired.state != TemplateState::Absent {
        let mut facts = describe(req, &before, the_plan.generation, false);
        if before.model.warm.contains(&the_plan.generation)
            && !the_plan.steps.contains(&Step::Seed {
                generation: the_plan.generation,
            })
        {
            facts.warm = crate::warm::WarmRecord::read(&ctx.data, &req.scope, the_plan.generation)?
                .map(WarmFacts::from);
        }
        report.template = Some(facts);
    }
    Ok(report)
}

/// An interrupted customization is work for a session that can redo it (it has a token).
fn takes_over(hold: HoldState, req: &Request) -> bool {
    hold == HoldState::Interrupted && req.hold.is_some()
}

fn apply_mode(
    ctx: &Context,
    hv: &Hypervisor,
    req: Request,
    reporter: &dyn Reporter,
) -> Result<TemplateReport> {
    let (session, req) = Session::enter(ctx, hv, req, reporter)?;
    let mut report = report(&req, &session.before, &session.plan, session.interrupted);
    report.waited = Some(session.waited);
    if session.lock.is_some() {
        let warnings = apply_locked(ctx, hv, &req, &session, reporter)?;
        report.warnings.extend(warnings);
    }
    let Session {
        data,
        lock,
        before,
        plan: the_plan,
        ..
    } = session;
    let token = req.hold.as_deref();
    if lock.is_none()
        && token.is_some()
        && req.desired.state != TemplateState::Running
        && hold::state(&data, &req.scope, token)? == HoldState::Ours
    {
        // The seal had nothing left to do (the template was already shut off): the session is over all the same.
        hold::release(&data, &req.scope)?;
    }
    if req.desired.state == TemplateState::Absent {
        hold::release(&data, &req.scope)?;
        if lock.is_some() {
            // Everything the ledger proved is deleted; what it still lists is gone.
            Ledger::discard(&data, &req.scope)?;
        }
        return Ok(report);
    }
    if let Some(token) = token {
        if hold::state(&data, &req.scope, Some(token))? == HoldState::Ours {
            report.hold = Some(token.to_owned());
        }
    }
    drop(lock);
    let mut template = describe(&req, &before, the_plan.generation, true);
    if the_plan.steps.contains(&Step::Seed {
        generation: the_plan.generation,
    }) || before.model.warm.contains(&the_plan.generation)
    {
        template.warm = crate::warm::WarmRecord::read(&data, &req.scope, the_plan.generation)?
            .map(WarmFacts::from);
    }
    if req.desired.state == TemplateState::Running {
        // Whoever runs the template playbook needs the address, the key and the pinned host key.
        let ip = address(hv, &data, &req, reporter)?;
        template.login = Some(TemplateLogin {
            address: ip.to_string(),
            ssh_private_key_file: keys::load_user_key(&data.sshkeys_dir(), &req.settings.user)?
                .map(|k| k.private_path),
            known_hosts_file: data.known_hosts_file(),
            host_key_alias: req.scope.clone(),
            ssh_common_args: shell_words::join(crate::inventory::guest_ssh_options(
                &data.known_hosts_file(),
                &req.scope,
                hv.uri(),
            )),
        });
    }
    report.template = Some(template);
    Ok(report)
}

/// A real run's view of the template once nothing stands in its way: with work to do, under the
/// template's lock; without, with no lock and possibly no data dir.
struct Session {
    data: DataDir,
    lock: Option<LockGuard>,
    before: Observation,
    plan: Plan,
    interrupted: bool,
    waited: Waited,
}

impl Session {
    /// Observes and plans until nothing stands in the way: another session customizing the template
    /// is waited for (outside any lock), and a hold that appeared while the lock was taken sends the
    /// run round again. With work to do, the request is resolved again before the locked plan,
    /// making the user's key, so that the digest names that key and the playbook as it is then.
    fn enter(
        ctx: &Context,
        hv: &Hypervisor,
        mut req: Request,
        reporter: &dyn Reporter,
    ) -> Result<(Session, Request)> {
        let token = req.hold.clone();
        let mut waited = Waited::default();
        loop {
            waited.hold += wait_for_hold(
                &ctx.data,
                &req.desired.name,
                &req.scope,
                token.as_deref(),
                reporter,
            )?;
            let before = observe(hv, &ctx.data, &req)?;
            let the_plan = plan(&req.desired, &before.model)?;
            let hold_state = hold::state(&ctx.data, &req.scope, token.as_deref())?;
            if matches!(hold_state, HoldState::Live(_)) {
                continue;
            }
            let interrupted = takes_over(hold_state, &req);
            if the_plan.is_empty() && !interrupted {
                let session = Session {
                    data: ctx.data.clone(),
                    lock: None,
                    before,
                    plan: the_plan,
                    interrupted,
                    waited,
                };
                return Ok((session, req));
            }
            let data = ctx.open_data_dir()?;
            req = resolve(ctx, req.options.clone(), |user| {
                Ok(keys::ensure_user_key(&data.sshkeys_dir(), user)?.public_openssh)
            })?;
            let started = Instant::now();
            let lock = data.lock(&format!("template-{}", req.scope), LOCK_TIMEOUT)?;
            waited.lock += started.elapsed();
            let hold_state = hold::state(&data, &req.scope, token.as_deref())?;
            if matches!(hold_state, HoldState::Live(_)) {
                continue;
            }
            let before = observe(hv, &data, &req)?;
            let the_plan = plan(&req.desired, &before.model)?;
            let interrupted = takes_over(hold_state, &req);
            let session = Session {
                data,
                lock: Some(lock),
                before,
                plan: the_plan,
                interrupted,
                waited,
            };
            return Ok((session, req));
        }
    }
}

/// Under the lock: the hold is taken for a build, what a killed run left is cleared, the plan is
/// applied, and the hold is released when the session is over. The warnings of the apply.
#[allow(clippy::too_many_arguments)]
fn apply_locked(
    ctx: &Context,
    hv: &Hypervisor,
    req: &Request,
    session: &Session,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    let Session {
        data,
        before,
        plan: the_plan,
        interrupted,
        ..
    } = session;
    let interrupted = *interrupted;
    let token = req.hold.as_deref();
    let builds = the_plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Build { .. }));
    // A new session customizes what its call made, so beside a build (above) it holds a template left
    // running that the call seals: its playbook runs again. Not one that clones use (it may not boot),
    // and not for a call that only deletes unused generations (the template is as it was).
    let reseals = the_plan.steps.contains(&Step::Seal)
        && before.model.users_of(the_plan.generation).is_empty();
    let starts = req.starts_session && reseals;
    if let Some(token) = token {
        // Taken before the build, so whoever sees the finished template also sees the hold.
        if builds || interrupted || starts {
            hold::take(data, &req.scope, token, req.desired.revision.as_deref())?;
        }
    }
    // A seed a killed run left running goes first: its disk may be among the partials below.
    if let Some(owner) = data.owner_id()? {
        if crate::warm::stop_leftover_seed(hv, &req.desired.name, &owner)? {
            reporter.note(&format!(
                "template `{}`: stopped the seed an earlier run left running",
                req.desired.name
            ));
        }
    }
    let mut ledger = Ledger::read(data, &req.scope)?;
    for (name, key) in &before.adopt {
        ledger.confirm(data, &req.uri, &req.pool, name, key)?;
    }
    for partial in &before.partials {
        hv.delete_volume(&req.pool, partial)?;
        ledger.forget(data, &req.uri, &req.pool, partial)?;
    }
    let run = Apply {
        ctx,
        data,
        hv,
        req,
        obs: before,
        reporter,
    };
    let applied = apply(run, the_plan);
    let session_over = match &applied {
        // A failed build leaves nothing to customize: others need not wait for this session.
        Err(_) => builds,
        // The session's last call: the template is sealed (or removed).
        Ok(_) => !builds && !interrupted && !starts && req.desired.state != TemplateState::Running,
    };
    if session_over && token.is_some() {
        hold::release(data, &req.scope)?;
    }
    applied
}

/// The report of a plan, before anything is applied.
fn report(
    req: &Request,
    before: &Observation,
    the_plan: &Plan,
    interrupted: bool,
) -> TemplateReport {
    let msg = if interrupted {
        format!(
            "the customization of template `{}` by an earlier run was interrupted: it is taken over{}{}",
            req.desired.name,
            if the_plan.is_empty() { "" } else { "; " },
            the_plan
        )
    } else {
        the_plan.to_string()
    };
    let mut warnings = Vec::new();
    if req.options.warm && !virtup_libvirt::uri_is_local(&req.uri) {
        warnings.push(format!(
            "template `{}`: no warm image on `{}`: warm images are made and resumed on the \
             hypervisor's own machine only; its clones boot cold",
            req.desired.name, req.uri
        ));
    }
    if before.model.foreign_domain && req.desired.state == TemplateState::Absent {
        // `absent` holds for virtup, but the user may think the domain was theirs: say why it stays.
        warnings.push(format!(
            "domain `{}` exists but was not made by virtup with this data dir; it is left alone",
            req.domain
        ));
    }
    TemplateReport {
        changed: !the_plan.is_empty() || interrupted,
        msg,
        warnings,
        waited: None,
        diff: diff(req, &before.model, the_plan),
        template: None,
        hold: None,
    }
}

/// The template's login user: the option or config, else virt-up's default `virt`.
fn template_user(req: &Request) -> String {
    req.settings.user.clone()
}

/// Waits (up to `wait_timeout`) until the running template answers on SSH with its pinned key.
fn address(
    hv: &Hypervisor,
    data: &DataDir,
    req: &Request,
    reporter: &dyn Reporter,
) -> Result<std::net::IpAddr> {
    let parsed = virtup_libvirt::parse_domain_xml(&hv.xml(&req.domain)?)?;
    let mac = parsed.macs().first().map(|m| m.to_string());
    let sources = req.settings.address_source.clone();
    // The proof logs in as the template's user with virtup's key for that user.
    let user = template_user(req);
    let identity = data.user_key_path(&user);
    // A template's own boots apply no config disk, so its first boot has nothing to note.
    reach::wait_for_ssh(
        hv,
        data,
        &reach::Target {
            domain: &req.domain,
            login: reach::Login {
                alias: &req.scope,
                user: &user,
                identity: &identity,
            },
            mac: mac.as_deref(),
            sources: &sources,
            dns_name: &build::hostname(req),
            known: None,
            timeout: req.wait_timeout,
        },
        reporter,
    )
    .map(|(ip, _notes)| ip)
}

fn diff(req: &Request, before: &TemplateObserved, plan: &Plan) -> (TemplateView, TemplateView) {
    let b = TemplateView {
        state: match &before.domain {
            None => "absent",
            Some(d) if d.running => "running",
            Some(_) => "present",
        },
        generation: before.domain.as_ref().map(|d| d.generation),
        digest: before.domain.as_ref().and_then(|d| d.digest.clone()),
        generations: before.generations.iter().copied().collect(),
        warm: before
            .domain
            .as_ref()
            .is_some_and(|d| before.warm.contains(&d.generation)),
    };
    let a = match req.desired.state {
        TemplateState::Absent => TemplateView {
            state: "absent",
            generation: None,
            digest: None,
            generations: Vec::new(),
            warm: false,
        },
        s => TemplateView {
            state: if s == TemplateState::Running {
                "running"
            } else {
                "present"
            },
            generation: Some(plan.generation),
            digest: Some(req.desired.digest()),
            generations: before
                .generations
                .iter()
                .copied()
                .filter(|g| {
                    !plan
                        .steps
                        .contains(&Step::DeleteGeneration { generation: *g })
                })
                .chain(std::iter::once(plan.generation))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            warm: plan.steps.contains(&Step::Seed {
                generation: plan.generation,
            }) || (before.warm.contains(&plan.generation)
                && !plan
                    .steps
                    .iter()
                    .any(|s| matches!(s, Step::Start | Step::Seal))),
        },
    };
    (b, a)
}

fn describe(req: &Request, obs: &Observation, generation: u32, built: bool) -> TemplateFacts {
    let disk = obs.pool_path.as_ref().map(|p| {
        p.join(volume_name(&req.desired.name, generation, &req.format))
            .display()
            .to_string()
    });
    TemplateFacts {
        name: req.desired.name.clone(),
        domain: req.domain.clone(),
        disk: if built || obs.volumes.contains_key(&generation) {
            disk
        } else {
            None
        },
        generation,
        digest: req.desired.digest(),
        source: req.desired.source.as_ref().map(ToString::to_string),
        user: req.settings.user.clone(),
        playbook: req.playbook.clone(),
        login: None,
        warm: None,
    }
}

/// What the steps of a real run work with.
#[derive(Clone, Copy)]
struct Apply<'a> {
    ctx: &'a Context,
    data: &'a DataDir,
    hv: &'a Hypervisor,
    req: &'a Request,
    obs: &'a Observation,
    reporter: &'a dyn Reporter,
}

/// Applies the plan's steps in order; the warnings they raised.
fn apply(run: Apply<'_>, plan: &Plan) -> Result<Vec<String>> {
    let Apply {
        ctx,
        data,
        hv,
        req,
        obs,
        reporter,
    } = run;
    let mut warnings = Vec::new();
    let accel = accel(hv, data, &mut warnings)?;
    // virt-builder and virt-customize run here, whatever hypervisor the template is for.
    let appliance = crate::appliance_virt_type(hv, || Ok(accel))?;
    if plan.steps.iter().any(|s| matches!(s, Step::Define { .. })) {
        // Made before the build, so that failing to make it leaves nothing behind (define reads it).
        data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    }
    for step in &plan.steps {
        reporter.stage(&format!("template `{}`: {step}", req.desired.name));
        // A failure from here on reports `changed: true`; a build marks it once its image is in
        // the pool, since a build that fails before leaves nothing behind.
        if !matches!(step, Step::Build { .. }) {
            reporter.changed();
        }
        match *step {
            Step::Stop => crate::power::stop(hv, &req.domain, req.wait_timeout)?,
            Step::Build { generation } => build::build(run, generation, appliance)?,
            Step::Define { generation } => build::define(data, hv, req, obs, generation, accel)?,
            Step::Start | Step::Seal => {
                // The generation's disk changes under its warm image's disk: that image is stale.
                drop_warm(run, plan.generation)?;
                if *step == Step::Start {
                    hv.start(&req.domain)?;
                } else {
                    build::seal(hv, data, req, obs, plan.generation, appliance)?;
                }
            }
            Step::Seed { generation } => warnings.extend(seed(run, generation, accel)?),
            Step::DeleteGeneration { generation } => {
                drop_warm(run, generation)?;
                if let Some(volume) = obs.volumes.get(&generation) {
                    hv.delete_volume(&req.pool, volume)?;
                    Ledger::read(data, &req.scope)?.forget(data, &req.uri, &req.pool, volume)?;
                }
            }
            // The domain is gone: only its config disk can be left (partials went before the steps).
            Step::DeleteLeftovers => {
                if let Some(config) = &obs.config_disk {
                    hv.delete_volume(&req.pool, config)?;
                    Ledger::read(data, &req.scope)?.forget(data, &req.uri, &req.pool, config)?;
                }
            }
            Step::Undefine => {
                hv.undefine(&req.domain)?;
                if let Some(config) = &obs.config_disk {
                    hv.delete_volume(&req.pool, config)?;
                    Ledger::read(data, &req.scope)?.forget(data, &req.uri, &req.pool, config)?;
                }
                known_hosts::remove(data, &req.scope, SHORT_LOCK_TIMEOUT)?;
                keys::remove_host_keys(&data.hostkeys_dir(), &req.scope)?;
                std::fs::remove_dir_all(ctx.secrets_dir(&req.scope)).or_else(ignore_not_found)?;
            }
        }
    }
    Ok(warnings)
}

/// Removes a generation's warm image (see [`crate::warm::remove`]), when it has anything of one.
fn drop_warm(run: Apply<'_>, generation: u32) -> Result<()> {
    let Apply {
        data, hv, req, obs, ..
    } = run;
    // What was read from the generation's disk goes with it.
    crate::cloud_init::forget(data, &req.scope, generation)?;
    if obs.model.warm_volumes.contains(&generation)
        || crate::warm::WarmRecord::read(data, &req.scope, generation)?.is_some()
    {
        crate::warm::remove(
            data,
            hv,
            &req.scope,
            &req.uri,
            &req.pool,
            &req.desired.name,
            generation,
        )?;
    }
    Ok(())
}

/// Makes the generation's warm image (see [`crate::warm`]); a hypervisor elsewhere gets none, said
/// as a warning (its clones boot cold).
fn seed(run: Apply<'_>, generation: u32, accel: VirtType) -> Result<Option<String>> {
    let Apply {
        data,
        hv,
        req,
        obs,
        reporter,
        ..
    } = run;
    if !hv.is_local() {
        return Ok(Some(format!(
            "template `{}`: no warm image on `{}`: warm images are made on the hypervisor's own \
             machine only; its clones boot cold",
            req.desired.name, req.uri
        )));
    }
    let pool_path = obs
        .pool_path
        .as_ref()
        .ok_or_else(|| anyhow!("pool `{}` has no path", req.pool))?;
    let volume = volume_name(&req.desired.name, generation, &req.format);
    let generation_path = pool_path.join(&volume).display().to_string();
    let format = ImageFormat::from_name(&req.format).unwrap_or(ImageFormat::Qcow2);
    let owner = data.ensure_owner_id(SHORT_LOCK_TIMEOUT)?;
    let record = crate::warm::make_seed(
        data,
        hv,
        &crate::warm::SeedInput {
            template: &req.desired.name,
            scope: &req.scope,
            uri: &req.uri,
            pool: &req.pool,
            pool_path,
            generation,
            generation_path: &generation_path,
            generation_format: format,
            virt_type: accel,
            memory_mib: req.settings.memory_mib,
            vcpus: req.settings.vcpus,
            owner: &owner,
            timeout: req.wait_timeout,
        },
    )?;
    reporter.note(&format!(
        "virtup_template: warm image of `{}` generation {generation}: {} MB, made in {:.1} s",
        req.desired.name,
        record.image_bytes / 1_000_000,
        record.seconds
    ));
    Ok(None)
}

fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// KVM where it can really run a guest, TCG otherwise (with a warning: it is much slower).
fn accel(hv: &Hypervisor, data: &DataDir, warnings: &mut Vec<String>) -> Result<VirtType> {
    let choice = crate::virt_choice::choose(hv, data)?;
    if choice.virt_type == VirtType::Qemu && std::env::var_os(virtup_core::VIRT_TYPE_ENV).is_none()
    {
        warnings.push(choice.reason);
    }
    Ok(choice.virt_type)
}

/// Waits while another live session customizes `template` (see [`virtup_core::hold`]): before this
/// run changes it, and before an instance clones it.
pub fn wait_for_hold(
    data: &DataDir,
    template: &str,
    scope: &str,
    token: Option<&str>,
    reporter: &dyn Reporter,
) -> Result<Duration> {
    Ok(hold::wait_until_free(
        data,
        scope,
        token,
        LOCK_TIMEOUT,
        |h| {
            reporter.note(&format!(
                "template `{template}` is being customized by another run (process {}); waiting until it is sealed",
                h.holder.pid
            ))
        },
    )?)
}

/// The digest a template's tag holds while its seal writes the image: never a real digest (those are
/// `sha256:…`), so the planner builds anew after a seal cut short, and [`current_disk`] refuses it.
pub const UNSEALED_DIGEST: &str = "unsealed";

/// A template's current generation, as clones need it.
pub struct CurrentDisk {
    pub generation: u32,
    pub volume: String,
    pub path: String,
    /// The template domain is running: its disk is changing.
    pub running: bool,
    /// The revision of the first boot installed in it (1 when its tag predates the record).
    pub firstboot: u32,
    /// The template's input digest, from its tag.
    pub digest: Option<String>,
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
    let scope = context::template_scope(template, hv.uri());
    if !crate::owner::proves(data, hv, &tag, &scope)? {
        bail!(
            "invalid value for `template`: template `{template}` (domain `{domain}`) was not made by \
             virtup with this data dir; build one of your own under another name"
        );
    }
    if tag.digest.as_deref() == Some(UNSEALED_DIGEST) {
        bail!(
            "template `{template}` is not ready to clone: its last seal did not finish (a run was cut \
             short), so its image may be half-written; converge the template again (virtup_template, \
             or `virt-up` with it) to build a new generation"
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
                // A suspended template's disk is not where its memory says it is: no base yet.
                running: dom.state != DomainState::ShutOff || dom.saved,
                firstboot: tag.firstboot.unwrap_or(1),
                digest: tag.digest.clone(),
            }));
        }
    }
    Ok(None)
}
