//! The template model: what the user asked for, what exists, and the pure plan from one to the other.
//!
//! A template is a libvirt domain `VIRTUP-<name>` (virt-up's naming) whose disk is the volume of
//! its current *generation*, `VIRTUP-<name>-g<N>.<format>`. A changed input digest builds
//! generation N+1 beside N; linked clones keep their generation; a generation no clone uses is
//! deleted. Everything here is pure: observation and IO live in the callers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::Fields;
use crate::digest::InputDigest;

/// Bumped whenever virtup prepares templates differently, so existing templates are rebuilt.
pub const RECIPE: &str = "virtup-template-v1";

/// What a template with a warm image needs of its first-boot unit (seed mode, the RNG reseed):
/// part of the digest of those templates only, so turning `warm` on builds a generation that has it,
/// and other templates are not rebuilt when it changes. Bumped when seed mode changes.
pub const SEED_REVISION: &str = "seed-v1";

/// Prefix of template domains and volumes, as virt-up names its base instances.
pub const DOMAIN_PREFIX: &str = "VIRTUP-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateState {
    Present,
    Running,
    Absent,
}

impl TemplateState {
    pub fn parse(s: &str) -> Option<TemplateState> {
        match s {
            "present" => Some(TemplateState::Present),
            "running" => Some(TemplateState::Running),
            "absent" => Some(TemplateState::Absent),
            _ => None,
        }
    }
}

/// Where a template's disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A virt-builder template name.
    OsVersion(String),
    /// A local path or URL of a disk image, with its checksum spec.
    Image {
        location: String,
        checksum: String,
        gpg_key: Option<String>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::OsVersion(v) => write!(f, "os_version:{v}"),
            Source::Image { location, .. } => write!(f, "image:{location}"),
        }
    }
}

/// The libvirt domain name of a template. virt-up ships names like `generic/debian10`, so every
/// character outside `[A-Za-z0-9_.-]` becomes `-`, as virt-up does.
pub fn domain_name(template: &str) -> String {
    let safe: String = template
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{DOMAIN_PREFIX}{safe}")
}

/// The volume holding generation `generation` of a template.
pub fn volume_name(template: &str, generation: u32, format: &str) -> String {
    format!("{}-g{generation}.{format}", domain_name(template))
}

/// The generation a template volume name stands for, if it is one of `template`'s.
pub fn volume_generation(template: &str, volume: &str) -> Option<u32> {
    let rest = volume.strip_prefix(&format!("{}-g", domain_name(template)))?;
    let (number, ext) = rest.split_once('.')?;
    if !matches!(ext, "qcow2" | "raw") || number.starts_with('0') {
        return None;
    }
    number.parse().ok()
}

/// What the user asked for, fully resolved (module options over config over defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateDesired {
    pub name: String,
    pub state: TemplateState,
    /// `None` only for `state: absent`, which needs no source.
    pub source: Option<Source>,
    pub fields: Fields,
    pub revision: Option<String>,
    /// The login user's public key, part of the image.
    pub user_public_key: String,
    /// A customization session holds the template and this is its seal call: the template ran its
    /// playbook online, so it is sealed even when it was shut off already (a playbook may power it
    /// down). Not part of the digest.
    pub seal_pending: bool,
    /// Make a warm image of the current generation now (see `warm_image` for the digest).
    pub warm: bool,
    /// The template keeps warm images: its generations need the first boot of [`SEED_REVISION`]
    /// (in the digest). True through a whole customization session, while `warm` waits for its seal.
    pub warm_image: bool,
}

impl TemplateDesired {
    /// The input digest: everything that shapes the image or the template domain, in a fixed order.
    ///
    /// Passwords are left out on purpose: the digest is stored in libvirt's domain metadata, and a
    /// digest over a weak password could be brute-forced. A new password takes a new `revision`.
    pub fn digest(&self) -> String {
        let f = &self.fields;
        let mut d = InputDigest::new(RECIPE);
        match &self.source {
            Some(Source::OsVersion(v)) => {
                d.field("os-version", v);
            }
            Some(Source::Image {
                location,
                checksum,
                gpg_key,
            }) => {
                d.field("image", location)
                    .field("checksum", checksum)
                    .optional("checksum-gpg-key", gpg_key.as_deref());
            }
            None => {
                d.field("source", "none");
            }
        }
        d.optional("arch", f.arch.as_deref())
            .optional("os-type", f.os_type.as_deref())
            .optional("os-variant", f.os_variant.as_deref())
            .optional("size", f.size.as_deref())
            .optional("image-format", f.image_format.map(|x| x.as_str()))
            .optional("memory", f.memory.map(|m| m.to_string()))
            .optional("vcpus", f.vcpus.map(|v| v.to_string()))
            .optional("graphics", f.graphics.as_deref())
            .optional("network", f.network.as_deref())
            .optional("dns-domain", f.dns_domain.as_deref())
            .optional("username", f.username.as_deref())
            .field("user-public-key", &self.user_public_key)
            .list("virt-builder-args", f.virt_builder_args.iter().flatten())
            .list(
                "virt-customize-args",
                f.virt_customize_args.iter().flatten(),
            )
            .list("virt-sysprep-args", f.virt_sysprep_args.iter().flatten())
            .list("virt-install-args", f.virt_install_args.iter().flatten())
            .optional("revision", self.revision.as_deref())
            .optional("warm", self.warm_image.then_some(SEED_REVISION));
        d.finish()
    }
}

/// The template domain as libvirt shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDomain {
    pub running: bool,
    pub generation: u32,
    pub digest: Option<String>,
}

/// What exists now, read from libvirt and the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateObserved {
    /// The virtup-tagged template domain, if any.
    pub domain: Option<ObservedDomain>,
    /// A domain of the template's name exists but carries no virtup tag: never touch it.
    pub foreign_domain: bool,
    /// Generations with a volume in the pool that the ownership ledger proves virtup built.
    pub generations: BTreeSet<u32>,
    /// Generation numbers whose volume names (or partial names) foreign volumes hold: a new
    /// generation skips them, and they are never deleted.
    pub taken_generations: BTreeSet<u32>,
    /// A foreign volume holds the name of the template's config disk: a build would need it.
    pub foreign_config_disk: Option<String>,
    /// The domain is gone but volumes virtup made for it are left (its config disk, a killed
    /// build's partials): `absent` deletes them.
    pub leftovers: bool,
    /// Instances per generation (from their own tags): those generations must stay.
    pub dependents: BTreeMap<u32, Vec<String>>,
    /// Generations with a warm image that fits this hypervisor as it is now.
    pub warm: BTreeSet<u32>,
    /// Generations with warm volumes virtup made, fitting or not.
    pub warm_volumes: BTreeSet<u32>,
    /// Generations whose warm disk backs clones' disks: it stays until they are gone.
    pub warm_in_use: BTreeSet<u32>,
    /// A foreign volume holds the name of a generation's warm volume: that generation gets none.
    pub foreign_warm: BTreeMap<u32, String>,
}

impl TemplateObserved {
    /// The instances cloned from `generation`.
    pub fn users_of(&self, generation: u32) -> &[String] {
        self.dependents
            .get(&generation)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every instance that depends on any generation of the template, sorted.
    pub fn all_dependents(&self) -> Vec<String> {
        let mut all: Vec<String> = self.dependents.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// One step of a template plan. Steps carry what apply needs and print for check mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Power off the running template (gracefully, then forcibly).
    Stop,
    /// Build the disk of a new generation from the source and prepare it.
    Build { generation: u32 },
    /// Define (or redefine) the template domain on the given generation's disk.
    Define { generation: u32 },
    /// Boot the template and wait until SSH answers.
    Start,
    /// Remove the identity a clone must not inherit, after the template ran online.
    Seal,
    /// Boot the generation once as a seed and save it: the warm image clones resume from.
    Seed { generation: u32 },
    /// Delete a generation's volume that nothing depends on any more.
    DeleteGeneration { generation: u32 },
    /// Remove the template domain.
    Undefine,
    /// Delete what virtup made for a template whose domain is gone.
    DeleteLeftovers,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Stop => write!(f, "stop the template domain"),
            Step::Build { generation } => write!(f, "build generation {generation}"),
            Step::Define { generation } => {
                write!(f, "define the template domain on generation {generation}")
            }
            Step::Start => write!(f, "start the template and wait for SSH"),
            Step::Seal => write!(
                f,
                "seal the template (remove machine-id, host keys, leases)"
            ),
            Step::Seed { generation } => {
                write!(f, "make the warm image of generation {generation}")
            }
            Step::DeleteGeneration { generation } => {
                write!(f, "delete unused generation {generation}")
            }
            Step::Undefine => write!(f, "undefine the template domain"),
            Step::DeleteLeftovers => write!(f, "delete the volumes of an earlier run"),
        }
    }
}

/// Why a plan cannot be made; each names what is in the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("template `{template}` is used by {}: delete them first", list(.dependents))]
    HasDependents {
        template: String,
        dependents: Vec<String>,
    },
    #[error(
        "domain `{domain}` exists but was not made by virtup with this data dir; refusing to touch it \
         (manage it with the data dir that made it, or choose another template `name`; if this data dir \
         made it, its `owner-id` file was lost or replaced)"
    )]
    ForeignDomain { domain: String },
    #[error(
        "volume `{volume}` exists in the pool but was not made by virtup for template `{template}`; \
         virtup never touches it: delete it yourself, or choose another template `name`"
    )]
    ForeignVolume { template: String, volume: String },
    #[error(
        "template `{template}` generation {generation} backs the linked clones {}: \
         booting it would change their disk; change an input (e.g. `revision`) to build a new generation",
        list(.dependents)
    )]
    RunningWouldCorruptClones {
        template: String,
        generation: u32,
        dependents: Vec<String>,
    },
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ordered steps that take the observed template to the desired one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The generation the template is on once the plan ran (0: no template).
    pub generation: u32,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return write!(f, "nothing to do");
        }
        let steps: Vec<String> = self.steps.iter().map(Step::to_string).collect();
        write!(f, "{}", steps.join("; "))
    }
}

/// Plans a template run. Pure and total: every (desired, observed) pair gets a plan or an error.
pub fn plan(desired: &TemplateDesired, observed: &TemplateObserved) -> Result<Plan, PlanError> {
    let domain = domain_name(&desired.name);
    if observed.foreign_domain {
        if desired.state == TemplateState::Absent {
            // Not ours, so for virtup the template is absent already.
            return Ok(Plan::default());
        }
        return Err(PlanError::ForeignDomain { domain });
    }
    let mut steps = Vec::new();
    if desired.state == TemplateState::Absent {
        let dependents = observed.all_dependents();
        if !dependents.is_empty() {
            return Err(PlanError::HasDependents {
                template: desired.name.clone(),
                dependents,
            });
        }
        if let Some(dom) = &observed.domain {
            if dom.running {
                steps.push(Step::Stop);
            }
            steps.push(Step::Undefine);
        } else if observed.leftovers {
            steps.push(Step::DeleteLeftovers);
        }
        steps.extend(
            observed
                .generations
                .iter()
                .map(|&generation| Step::DeleteGeneration { generation }),
        );
        return Ok(Plan {
            steps,
            generation: 0,
        });
    }

    let digest = desired.digest();
    let current = observed.domain.as_ref().filter(|d| {
        d.digest.as_deref() == Some(digest.as_str()) && observed.generations.contains(&d.generation)
    });
    let running_now = observed.domain.as_ref().is_some_and(|d| d.running);
    let generation = match current {
        Some(dom) => {
            match (desired.state, dom.running) {
                (TemplateState::Running, false) => {
                    let users = observed.users_of(dom.generation);
                    if !users.is_empty() {
                        return Err(PlanError::RunningWouldCorruptClones {
                            template: desired.name.clone(),
                            generation: dom.generation,
                            dependents: users.to_vec(),
                        });
                    }
                    steps.push(Step::Start);
                }
                // Whatever ran online on the template is kept; its identity must go.
                (TemplateState::Present, true) => steps.extend([Step::Stop, Step::Seal]),
                (TemplateState::Present, false) if desired.seal_pending => steps.push(Step::Seal),
                _ => {}
            }
            dom.generation
        }
        None => {
            let newest = observed
                .generations
                .iter()
                .copied()
                .chain(observed.domain.as_ref().map(|d| d.generation))
                .max()
                .unwrap_or(0);
            // Numbers whose names foreign volumes hold are skipped: virtup picks its own names.
            // A look-alike of a warm volume takes its generation's number too, for a warm template.
            let generation = (newest + 1..)
                .find(|g| {
                    !(observed.taken_generations.contains(g)
                        || desired.warm_image && observed.foreign_warm.contains_key(g))
                })
                .expect("a free generation number");
            if let Some(volume) = &observed.foreign_config_disk {
                return Err(PlanError::ForeignVolume {
                    template: desired.name.clone(),
                    volume: volume.clone(),
                });
            }
            if running_now {
                steps.push(Step::Stop);
            }
            steps.push(Step::Build { generation });
            steps.push(Step::Define { generation });
            if desired.state == TemplateState::Running {
                steps.push(Step::Start);
            }
            generation
        }
    };
    // A generation gets its warm image once; a stale one is replaced only while no clone can be
    // resting on its disk (warm clones' disks are overlays of it).
    // A boot or a seal of the generation changes the disk the seed's disk rests on: its image goes
    // (apply removes it first) and a new one is made.
    let disk_changes = steps.iter().any(|s| matches!(s, Step::Start | Step::Seal));
    if desired.warm
        && desired.state == TemplateState::Present
        && (disk_changes || !observed.warm.contains(&generation))
        && !observed.warm_in_use.contains(&generation)
    {
        if let Some(volume) = observed.foreign_warm.get(&generation) {
            return Err(PlanError::ForeignVolume {
                template: desired.name.clone(),
                volume: volume.clone(),
            });
        }
        steps.push(Step::Seed { generation });
    }
    // Old generations nobody uses any more go, in check mode too (it reports them).
    steps.extend(
        observed
            .generations
            .iter()
            .filter(|&&g| g != generation && observed.users_of(g).is_empty())
            .map(|&generation| Step::DeleteGeneration { generation }),
    );
    Ok(Plan { steps, generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(state: TemplateState, memory: u64) -> TemplateDesired {
        TemplateDesired {
            name: "debian-12".into(),
            state,
            source: Some(Source::OsVersion("debian-12".into())),
            fields: Fields {
                memory: Some(memory),
                ..Fields::builtin_defaults()
            },
            revision: None,
            user_public_key: "ssh-ed25519 AAAA test".into(),
            seal_pending: false,
            warm: false,
            warm_image: false,
        }
    }

    fn observed_at(generation: u32, digest: &str, running: bool) -> TemplateObserved {
        TemplateObserved {
            domain: Some(ObservedDomain {
                running,
                generation,
                digest: Some(digest.into()),
            }),
            generations: [generation].into(),
            ..TemplateObserved::default()
        }
    }

    #[test]
    fn names_follow_virt_up() {
        assert_eq!(domain_name("generic/debian10"), "VIRTUP-generic-debian10");
        assert_eq!(
            volume_name("debian-12", 3, "qcow2"),
            "VIRTUP-debian-12-g3.qcow2"
        );
        assert_eq!(
            volume_generation("debian-12", "VIRTUP-debian-12-g3.qcow2"),
            Some(3)
        );
        for foreign in [
            "VIRTUP-debian-12-g03.qcow2",
            "VIRTUP-debian-12-g3.img",
            "VIRTUP-debian-1-g3.qcow2",
            "other.qcow2",
        ] {
            assert_eq!(volume_generation("debian-12", foreign), None, "{foreign}");
        }
    }

    #[test]
    fn digest_changes_with_every_input_but_not_with_state() {
        let base = desired(TemplateState::Present, 512);
        let d0 = base.digest();
        assert_eq!(d0, desired(TemplateState::Running, 512).digest());
        let mut variants = vec![desired(TemplateState::Present, 1024)];
        let mut v = base.clone();
        v.revision = Some("r2".into());
        variants.push(v);
        let mut v = base.clone();
        v.user_public_key = "ssh-ed25519 BBBB test".into();
        variants.push(v);
        let mut v = base.clone();
        v.fields.virt_customize_args = Some(vec!["--install".into(), "curl".into()]);
        variants.push(v);
        let mut v = base.clone();
        v.source = Some(Source::Image {
            location: "/x.qcow2".into(),
            checksum: "sha256:00".into(),
            gpg_key: None,
        });
        variants.push(v);
        for v in variants {
            assert_ne!(v.digest(), d0, "{v:?}");
        }
    }

    #[test]
    fn plans() {
        let want = desired(TemplateState::Present, 512);
        let digest = want.digest();
        let gen1_users = |g: u32| TemplateObserved {
            dependents: [(g, vec!["web1".to_string()])].into(),
            ..observed_at(g, "old", false)
        };
        let cases: Vec<(&str, TemplateDesired, TemplateObserved, Vec<Step>)> = vec![
            (
                "fresh build",
                want.clone(),
                TemplateObserved::default(),
                vec![
                    Step::Build { generation: 1 },
                    Step::Define { generation: 1 },
                ],
            ),
            (
                "up to date",
                want.clone(),
                observed_at(1, &digest, false),
                vec![],
            ),
            (
                "changed digest, unused old generation goes",
                want.clone(),
                observed_at(1, "old", false),
                vec![
                    Step::Build { generation: 2 },
                    Step::Define { generation: 2 },
                    Step::DeleteGeneration { generation: 1 },
                ],
            ),
            (
                "changed digest, used old generation stays",
                want.clone(),
                gen1_users(1),
                vec![
                    Step::Build { generation: 2 },
                    Step::Define { generation: 2 },
                ],
            ),
            (
                "running wanted",
                desired(TemplateState::Running, 512),
                observed_at(1, &digest, false),
                vec![Step::Start],
            ),
            (
                "present after running seals",
                want.clone(),
                observed_at(1, &digest, true),
                vec![Step::Stop, Step::Seal],
            ),
            (
                "a session's seal call seals a template its playbook shut off",
                TemplateDesired {
                    seal_pending: true,
                    ..want.clone()
                },
                observed_at(1, &digest, false),
                vec![Step::Seal],
            ),
            (
                "shut off and no session: nothing to seal",
                want.clone(),
                observed_at(1, &digest, false),
                vec![],
            ),
            (
                "absent removes all",
                desired(TemplateState::Absent, 512),
                TemplateObserved {
                    generations: [1, 2].into(),
                    ..observed_at(2, &digest, true)
                },
                vec![
                    Step::Stop,
                    Step::Undefine,
                    Step::DeleteGeneration { generation: 1 },
                    Step::DeleteGeneration { generation: 2 },
                ],
            ),
            (
                "absent when nothing exists",
                desired(TemplateState::Absent, 512),
                TemplateObserved::default(),
                vec![],
            ),
            (
                "volume lost: rebuild",
                want.clone(),
                TemplateObserved {
                    generations: BTreeSet::new(),
                    ..observed_at(1, &digest, false)
                },
                vec![
                    Step::Build { generation: 2 },
                    Step::Define { generation: 2 },
                ],
            ),
        ];
        for (what, want, seen, steps) in cases {
            let plan = plan(&want, &seen).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(plan.steps, steps, "{what}");
        }
    }

    #[test]
    fn a_warm_template_seeds_each_generation_once_and_never_under_its_clones() {
        let want = TemplateDesired {
            warm: true,
            warm_image: true,
            ..desired(TemplateState::Present, 512)
        };
        let digest = want.digest();
        // A generation a warm image is made of has the seed's first boot: turning `warm` on
        // builds one; a session's build (warm image wanted, none made yet) has the same digest.
        assert_ne!(digest, desired(TemplateState::Present, 512).digest());
        let in_session = TemplateDesired {
            warm: false,
            ..want.clone()
        };
        assert_eq!(in_session.digest(), digest);
        let seed = |g| Step::Seed { generation: g };
        // A fresh generation is seeded after it is built.
        let fresh = plan(&want, &TemplateObserved::default()).unwrap();
        assert_eq!(fresh.steps.last(), Some(&seed(1)));
        // A current, fitting image: nothing to do.
        let warm = TemplateObserved {
            warm: [1].into(),
            warm_volumes: [1].into(),
            ..observed_at(1, &digest, false)
        };
        assert!(plan(&want, &warm).unwrap().is_empty());
        // No image yet, or a stale one nobody rests on: seeded (again).
        for warm_volumes in [BTreeSet::new(), [1].into()] {
            let seen = TemplateObserved {
                warm_volumes,
                ..observed_at(1, &digest, false)
            };
            assert_eq!(plan(&want, &seen).unwrap().steps, vec![seed(1)]);
        }
        // A stale image under clones stays: replacing it would pull a disk from under them.
        let under_clones = TemplateObserved {
            warm_volumes: [1].into(),
            warm_in_use: [1].into(),
            dependents: [(1, vec!["web1".into()])].into(),
            ..observed_at(1, &digest, false)
        };
        assert!(plan(&want, &under_clones).unwrap().is_empty());
        // A look-alike under the name of a new generation's image: that number is skipped; under
        // the current generation's: refused, before anything is made.
        let look_alike = TemplateObserved {
            foreign_warm: [(1, "VIRTUP-debian-12-g1-warm.save".to_owned())].into(),
            ..TemplateObserved::default()
        };
        let built = plan(&want, &look_alike).unwrap();
        assert_eq!(built.generation, 2, "{built}");
        let current = TemplateObserved {
            foreign_warm: [(1, "VIRTUP-debian-12-g1-warm.save".to_owned())].into(),
            ..observed_at(1, &digest, false)
        };
        assert!(matches!(
            plan(&want, &current),
            Err(PlanError::ForeignVolume { volume, .. }) if volume == "VIRTUP-debian-12-g1-warm.save"
        ));
        // Cold clones of the generation do not rest on it: it is replaced.
        let cold_clones = TemplateObserved {
            warm_volumes: [1].into(),
            dependents: [(1, vec!["web1".into()])].into(),
            ..observed_at(1, &digest, false)
        };
        assert_eq!(plan(&want, &cold_clones).unwrap().steps, vec![seed(1)]);
        // A seal (the template ran) changes the disk under the image: a new one is made after it.
        let ran = TemplateObserved {
            warm: [1].into(),
            warm_volumes: [1].into(),
            ..observed_at(1, &digest, true)
        };
        assert_eq!(
            plan(&want, &ran).unwrap().steps,
            vec![Step::Stop, Step::Seal, seed(1)]
        );
        // Not asked for, or the template left running: no seed.
        assert!(plan(&in_session, &observed_at(1, &digest, false))
            .unwrap()
            .is_empty());
        let running = TemplateDesired {
            state: TemplateState::Running,
            ..want.clone()
        };
        assert!(!plan(&running, &observed_at(1, &digest, true))
            .unwrap()
            .steps
            .iter()
            .any(|s| matches!(s, Step::Seed { .. })));
    }

    #[test]
    fn refusals_name_what_is_in_the_way() {
        let seen = TemplateObserved {
            dependents: [(1, vec!["web2".into(), "web1".into()])].into(),
            ..observed_at(1, "x", false)
        };
        let err = plan(&desired(TemplateState::Absent, 512), &seen).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template `debian-12` is used by `web1`, `web2`: delete them first"
        );

        let want = desired(TemplateState::Running, 512);
        let seen = TemplateObserved {
            dependents: [(1, vec!["web1".into()])].into(),
            ..observed_at(1, &want.digest(), false)
        };
        assert!(matches!(
            plan(&want, &seen),
            Err(PlanError::RunningWouldCorruptClones { .. })
        ));

        let seen = TemplateObserved {
            foreign_domain: true,
            ..TemplateObserved::default()
        };
        assert!(matches!(
            plan(&desired(TemplateState::Present, 512), &seen),
            Err(PlanError::ForeignDomain { .. })
        ));
        assert!(plan(&desired(TemplateState::Absent, 512), &seen)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn foreign_look_alikes_are_skipped_or_refused_never_deleted() {
        // A foreign volume holds generation 2's name: the rebuild makes generation 3, and the
        // foreign one is neither a generation to delete nor one to count.
        let want = desired(TemplateState::Present, 1024);
        let seen = TemplateObserved {
            taken_generations: [2, 9].into(),
            ..observed_at(1, "old", false)
        };
        let p = plan(&want, &seen).unwrap();
        assert_eq!(p.generation, 3);
        assert!(!p.steps.contains(&Step::DeleteGeneration { generation: 2 }));
        assert!(!p.steps.contains(&Step::DeleteGeneration { generation: 9 }));
        // Nothing to build, nothing to say about foreign names (an instance named `VIRTUP-…-g9`).
        let same = TemplateObserved {
            taken_generations: [9].into(),
            ..observed_at(1, &want.digest(), false)
        };
        assert!(plan(&want, &same).unwrap().is_empty());
        let gone = desired(TemplateState::Absent, 1024);
        assert_eq!(
            plan(&gone, &same).unwrap().steps,
            vec![Step::Undefine, Step::DeleteGeneration { generation: 1 }]
        );
        // A build needs the config disk's name.
        let blocked = TemplateObserved {
            foreign_config_disk: Some("VIRTUP-debian-12-config.iso".into()),
            ..observed_at(1, "old", false)
        };
        let err = plan(&want, &blocked).unwrap_err().to_string();
        assert!(err.contains("`VIRTUP-debian-12-config.iso`"), "{err}");
        // `absent` after a killed first build: the domain never existed, its volumes go.
        let killed = TemplateObserved {
            leftovers: true,
            ..TemplateObserved::default()
        };
        assert_eq!(
            plan(&gone, &killed).unwrap().steps,
            vec![Step::DeleteLeftovers]
        );
    }
}
