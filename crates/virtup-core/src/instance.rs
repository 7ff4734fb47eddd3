//! The instance model: desired and observed instance, and the pure plan between them.
//!
//! An instance is a libvirt domain tagged by virtup, cloned from a template generation, with the
//! volumes it owns listed in its tag. Only those volumes are ever deleted with it.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Running,
    Present,
    Stopped,
    /// Its memory saved by libvirt (managed save) and its domain shut off; `running` resumes it.
    Suspended,
    Absent,
}

impl InstanceState {
    pub fn parse(s: &str) -> Option<InstanceState> {
        match s {
            "running" => Some(InstanceState::Running),
            "present" => Some(InstanceState::Present),
            "stopped" => Some(InstanceState::Stopped),
            "suspended" => Some(InstanceState::Suspended),
            "absent" => Some(InstanceState::Absent),
            _ => None,
        }
    }

    /// The word `parse` reads, as the metadata and the module's `state` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Running => "running",
            InstanceState::Present => "present",
            InstanceState::Stopped => "stopped",
            InstanceState::Suspended => "suspended",
            InstanceState::Absent => "absent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    /// A qcow2 overlay on the template generation.
    Linked,
    /// An independent copy.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Customize {
    /// Identity on a config disk read at first boot; no appliance on the host.
    Auto,
    /// virt-sysprep writes the identity into the disk (slow, for images that cannot be prepared).
    Sysprep,
}

/// What the user asked for, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDesired {
    pub name: String,
    pub template: String,
    pub state: InstanceState,
    pub clone: CloneKind,
    pub customize: Customize,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// `None` leaves autostart as it is.
    pub autostart: Option<bool>,
    /// A fixed address, as a DHCP host reservation on the instance's libvirt network; `None` leaves
    /// the reservation (if any) as it is.
    pub address: Option<Ipv4Addr>,
    /// The inventory groups it is declared in; `None` leaves the recorded ones as they are.
    pub groups: Option<Vec<String>>,
}

/// The instance's domain as libvirt shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    pub running: bool,
    /// Shut off with a managed-save image: its next start resumes it (never `running` too).
    pub saved: bool,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub autostart: bool,
    pub template: String,
    pub generation: u32,
    pub owned_volumes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceObserved {
    pub domain: Option<ObservedInstance>,
    /// A domain of that name that virtup did not make: never touched.
    pub foreign_domain: bool,
    /// Volumes the ownership ledger proves this instance's runs made, left by a run that was
    /// killed before defining the domain.
    pub leftover_volumes: Vec<String>,
    /// Volumes named as this instance's would be that virtup cannot prove it made: a create would
    /// collide with them, so it is refused; they are never deleted.
    pub foreign_volumes: Vec<String>,
    /// Volumes virtup made for this instance's domain, which is gone (undefined by hand, say): the
    /// instance's data, kept unless the instance is to be absent.
    pub detached_volumes: Vec<String>,
    /// The template's domain is running (booted for customization, or by hand): its disk is changing.
    pub template_running: bool,
    /// Data disks the delete keeps (`keep`): a suspended guest is resumed and shut down cleanly
    /// before they are let go, so that what its memory holds reaches them.
    pub keeps_disks: bool,
    /// The template's current generation, if the template exists.
    pub template_generation: Option<u32>,
    /// virtup still has metadata for the instance.
    pub has_metadata: bool,
    /// The inventory groups its metadata records.
    pub recorded_groups: Vec<String>,
    /// The DHCP reservation virtup proved its own: its record in the metadata and the network's
    /// entry agree on network, MAC, name and address.
    pub reserved: Option<Ipv4Addr>,
    /// That reservation is not where the instance's NIC is (another network or MAC): it is replaced
    /// when an `address` is asked for.
    pub reservation_misplaced: bool,
    /// Why `address` cannot be reserved (outside the network, taken by another entry or lease):
    /// looked at only when a reservation would be added.
    pub address_refusal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete volumes a killed run left before its domain existed.
    DeleteLeftovers(Vec<String>),
    /// Clone the disk, write the config disk, define the domain, pin the host key, write metadata.
    Create {
        generation: u32,
    },
    /// New memory/vCPUs in the persistent definition (next boot).
    Resize {
        memory_mib: u64,
        vcpus: u32,
    },
    SetAutostart(bool),
    /// Record the inventory groups it is declared in (its metadata; nothing in libvirt changes).
    SetGroups(Vec<String>),
    /// Add a DHCP host reservation (the instance's MAC and name → the address) to its network.
    Reserve(Ipv4Addr),
    /// Remove the reservation virtup added (exactly that entry).
    Unreserve(Ipv4Addr),
    /// Boot it (and, for `running`, wait for SSH).
    Start,
    /// Resume it from its managed-save image, set its clock, and wait for SSH.
    Resume,
    /// Shut it down cleanly (a suspended one is resumed first, so that its memory reaches its disks).
    Stop,
    /// Save its memory (managed save) and stop it, once it is reachable.
    Suspend,
    /// Remove the domain, its own volumes, its metadata and pinned key.
    Delete {
        volumes: Vec<String>,
    },
    /// Only virtup's records were left (the domain is gone): remove them.
    Forget,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::DeleteLeftovers(v) => write!(f, "delete leftover volumes {}", v.join(", ")),
            Step::Create { generation } => write!(f, "clone from template generation {generation}"),
            Step::Resize { memory_mib, vcpus } => {
                write!(
                    f,
                    "set memory {memory_mib} MiB and {vcpus} vCPUs (from next boot)"
                )
            }
            Step::SetAutostart(on) => write!(f, "set autostart {on}"),
            Step::SetGroups(g) if g.is_empty() => {
                write!(f, "take it out of its declared inventory groups")
            }
            Step::SetGroups(g) => write!(f, "put it in inventory groups {}", g.join(", ")),
            Step::Reserve(ip) => write!(f, "reserve address {ip} on the network"),
            Step::Unreserve(ip) => write!(f, "remove the reservation of {ip}"),
            Step::Start => write!(f, "start and wait for SSH"),
            Step::Resume => write!(f, "resume from its saved memory and wait for SSH"),
            Step::Stop => write!(f, "stop"),
            Step::Suspend => write!(f, "suspend (save its memory)"),
            Step::Delete { volumes } => write!(
                f,
                "delete the domain and its volumes {}",
                volumes.join(", ")
            ),
            Step::Forget => write!(f, "forget virtup's records"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "domain `{0}` exists but was not made by virtup with this data dir; refusing to touch it \
         (manage it with the data dir that made it, or choose another `name`; if this data dir made it, \
         its `owner-id` file was lost or replaced)"
    )]
    ForeignDomain(String),
    #[error("invalid value for `template`: template `{0}` does not exist; build it with virtup_template first")]
    NoTemplate(String),
    #[error("volume {} exists in the pool but was not made by virtup for instance `{name}`; \
             virtup never touches it: delete it yourself, or choose another `name`", quoted(.volumes))]
    ForeignVolumes { name: String, volumes: Vec<String> },
    #[error(
        "the domain of instance `{name}` is gone but its volume {} is still there, with the \
         instance's data; virtup does not overwrite it: remove the instance with `state: absent` \
         (which deletes it), or move the volume away",
        quoted(.volumes)
    )]
    DetachedVolumes { name: String, volumes: Vec<String> },
    #[error(
        "template `{0}` is running (or suspended with its memory saved), so its disk is changing under a clone; seal it first \
             (virtup_template `state: present`) and run again"
    )]
    TemplateRunning(String),
    #[error("invalid value for `address`: {0}")]
    Address(String),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
    /// Changing memory/vCPUs of a running guest takes effect only at its next boot.
    /// A suspended guest resumes with the memory and vCPUs it was saved with.
    pub fn needs_reboot_warning(&self, observed: &InstanceObserved) -> bool {
        observed
            .domain
            .as_ref()
            .is_some_and(|d| d.running || d.saved)
            && self.steps.iter().any(|s| matches!(s, Step::Resize { .. }))
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

/// Plans an instance run. Pure and total.
pub fn plan(desired: &InstanceDesired, observed: &InstanceObserved) -> Result<Plan, PlanError> {
    let mut steps = Vec::new();
    if observed.foreign_domain {
        if desired.state == InstanceState::Absent {
            return Ok(Plan::default());
        }
        return Err(PlanError::ForeignDomain(desired.name.clone()));
    }
    if !observed.leftover_volumes.is_empty() {
        steps.push(Step::DeleteLeftovers(observed.leftover_volumes.clone()));
    }
    match (&observed.domain, desired.state) {
        (None, InstanceState::Absent) => {
            if observed.has_metadata {
                steps.extend(observed.reserved.map(Step::Unreserve));
                steps.push(Step::Forget);
            }
        }
        (Some(dom), InstanceState::Absent) => {
            // First: a removal libvirt refuses (an entry in the way) then leaves the guest as it was.
            steps.extend(observed.reserved.map(Step::Unreserve));
            // A suspended guest's saved memory goes with its disks, unless it keeps one.
            if dom.running || (dom.saved && observed.keeps_disks) {
                steps.push(Step::Stop);
            }
            steps.push(Step::Delete {
                volumes: dom.owned_volumes.clone(),
            });
        }
        (None, state) => {
            if !observed.detached_volumes.is_empty() {
                return Err(PlanError::DetachedVolumes {
                    name: desired.name.clone(),
                    volumes: observed.detached_volumes.clone(),
                });
            }
            if !observed.foreign_volumes.is_empty() {
                return Err(PlanError::ForeignVolumes {
                    name: desired.name.clone(),
                    volumes: observed.foreign_volumes.clone(),
                });
            }
            let generation = observed
                .template_generation
                .ok_or_else(|| PlanError::NoTemplate(desired.template.clone()))?;
            if observed.template_running {
                return Err(PlanError::TemplateRunning(desired.template.clone()));
            }
            // Before the clone's first volume: a refused address, or another run's that took it
            // meanwhile, leaves nothing made; and before the first DHCP request.
            steps.extend(reservation_steps(desired, observed)?);
            steps.push(Step::Create { generation });
            if let Some(true) = desired.autostart {
                steps.push(Step::SetAutostart(true));
            }
            match state {
                InstanceState::Running => steps.push(Step::Start),
                InstanceState::Suspended => steps.extend([Step::Start, Step::Suspend]),
                _ => {}
            }
        }
        (Some(dom), state) => {
            // First: metadata only, and a run that cannot record it changes nothing else.
            if let Some(groups) = desired
                .groups
                .as_ref()
                .filter(|g| **g != observed.recorded_groups)
            {
                steps.push(Step::SetGroups(groups.clone()));
            }
            if dom.memory_mib != desired.memory_mib || dom.vcpus != desired.vcpus {
                steps.push(Step::Resize {
                    memory_mib: desired.memory_mib,
                    vcpus: desired.vcpus,
                });
            }
            if let Some(want) = desired.autostart.filter(|&a| a != dom.autostart) {
                steps.push(Step::SetAutostart(want));
            }
            steps.extend(reservation_steps(desired, observed)?);
            match state {
                InstanceState::Running if dom.saved => steps.push(Step::Resume),
                InstanceState::Running if !dom.running => steps.push(Step::Start),
                // Its saved memory may hold writes its disks do not have yet: `Stop` resumes it
                // and shuts it down cleanly rather than lose them with the image.
                InstanceState::Stopped if dom.running || dom.saved => steps.push(Step::Stop),
                InstanceState::Suspended if dom.running => steps.push(Step::Suspend),
                InstanceState::Suspended if !dom.saved => {
                    steps.extend([Step::Start, Step::Suspend])
                }
                _ => {}
            }
        }
    }
    Ok(Plan { steps })
}

/// The steps that make the reservation the one `address` asks for: none when it is already there
/// or no address is asked for; else the old one (if virtup made one) goes and the new one is added.
fn reservation_steps(
    desired: &InstanceDesired,
    observed: &InstanceObserved,
) -> Result<Vec<Step>, PlanError> {
    let current = observed
        .reserved
        .filter(|_| !observed.reservation_misplaced);
    let Some(want) = desired.address.filter(|&a| current != Some(a)) else {
        return Ok(Vec::new());
    };
    if let Some(why) = &observed.address_refusal {
        return Err(PlanError::Address(why.clone()));
    }
    Ok(observed
        .reserved
        .map(Step::Unreserve)
        .into_iter()
        .chain([Step::Reserve(want)])
        .collect())
}

/// A running guest asks for its address again only when its lease is renewed or it boots: a
/// reservation added or changed now reaches it then.
pub fn reservation_reaches_guest_later(plan: &Plan, observed: &InstanceObserved) -> bool {
    observed
        .domain
        .as_ref()
        .is_some_and(|d| d.running || d.saved)
        && plan.steps.iter().any(|s| matches!(s, Step::Reserve(_)))
        && !plan.steps.iter().any(|s| matches!(s, Step::Stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(state: InstanceState) -> InstanceDesired {
        InstanceDesired {
            name: "web1".into(),
            template: "debian-12".into(),
            state,
            clone: CloneKind::Linked,
            customize: Customize::Auto,
            memory_mib: 512,
            vcpus: 1,
            autostart: None,
            address: None,
            groups: None,
        }
    }

    fn existing(running: bool) -> InstanceObserved {
        InstanceObserved {
            domain: Some(ObservedInstance {
                running,
                saved: false,
                memory_mib: 512,
                vcpus: 1,
                autostart: false,
                template: "debian-12".into(),
                generation: 1,
                owned_volumes: vec!["web1.qcow2".into(), "web1-config.iso".into()],
            }),
            template_generation: Some(1),
            has_metadata: true,
            ..InstanceObserved::default()
        }
    }

    fn saved() -> InstanceObserved {
        let mut o = existing(false);
        o.domain.as_mut().unwrap().saved = true;
        o
    }

    #[test]
    fn plans() {
        use InstanceState::*;
        let fresh = InstanceObserved {
            template_generation: Some(2),
            ..InstanceObserved::default()
        };
        let vols = vec!["web1.qcow2".to_string(), "web1-config.iso".to_string()];
        let mut bigger = want(Running);
        bigger.memory_mib = 1024;
        let mut auto = want(Present);
        auto.autostart = Some(true);
        let cases: Vec<(&str, InstanceDesired, InstanceObserved, Vec<Step>)> = vec![
            (
                "create running",
                want(Running),
                fresh.clone(),
                vec![Step::Create { generation: 2 }, Step::Start],
            ),
            (
                "create present",
                want(Present),
                fresh.clone(),
                vec![Step::Create { generation: 2 }],
            ),
            (
                "create autostart",
                auto.clone(),
                fresh.clone(),
                vec![Step::Create { generation: 2 }, Step::SetAutostart(true)],
            ),
            ("running stays", want(Running), existing(true), vec![]),
            ("start", want(Running), existing(false), vec![Step::Start]),
            ("stop", want(Stopped), existing(true), vec![Step::Stop]),
            ("stopped stays", want(Stopped), existing(false), vec![]),
            (
                "create suspended: made, booted, then saved",
                want(Suspended),
                fresh.clone(),
                vec![Step::Create { generation: 2 }, Step::Start, Step::Suspend],
            ),
            (
                "suspend",
                want(Suspended),
                existing(true),
                vec![Step::Suspend],
            ),
            (
                "suspend a stopped one: booted first",
                want(Suspended),
                existing(false),
                vec![Step::Start, Step::Suspend],
            ),
            ("suspended stays", want(Suspended), saved(), vec![]),
            (
                "groups recorded",
                InstanceDesired {
                    groups: Some(vec!["web".into()]),
                    ..want(Present)
                },
                existing(true),
                vec![Step::SetGroups(vec!["web".into()])],
            ),
            (
                "groups as recorded",
                InstanceDesired {
                    groups: Some(vec!["web".into()]),
                    ..want(Present)
                },
                InstanceObserved {
                    recorded_groups: vec!["web".into()],
                    ..existing(true)
                },
                vec![],
            ),
            (
                "groups not asked: left as recorded",
                want(Present),
                InstanceObserved {
                    recorded_groups: vec!["web".into()],
                    ..existing(true)
                },
                vec![],
            ),
            ("resume", want(Running), saved(), vec![Step::Resume]),
            (
                "stop a suspended one (resumed and shut down cleanly)",
                want(Stopped),
                saved(),
                vec![Step::Stop],
            ),
            (
                "delete a suspended one that keeps a disk: shut down cleanly first",
                want(Absent),
                InstanceObserved {
                    keeps_disks: true,
                    ..saved()
                },
                vec![
                    Step::Stop,
                    Step::Delete {
                        volumes: vols.clone(),
                    },
                ],
            ),
            (
                "present leaves a suspended one",
                want(Present),
                saved(),
                vec![],
            ),
            (
                "delete suspended: nothing to stop",
                want(Absent),
                saved(),
                vec![Step::Delete {
                    volumes: vols.clone(),
                }],
            ),
            (
                "present leaves power alone",
                want(Present),
                existing(true),
                vec![],
            ),
            (
                "resize",
                bigger,
                existing(true),
                vec![Step::Resize {
                    memory_mib: 1024,
                    vcpus: 1,
                }],
            ),
            (
                "autostart on",
                auto,
                existing(false),
                vec![Step::SetAutostart(true)],
            ),
            (
                "delete running",
                want(Absent),
                existing(true),
                vec![
                    Step::Stop,
                    Step::Delete {
                        volumes: vols.clone(),
                    },
                ],
            ),
            (
                "delete stopped",
                want(Absent),
                existing(false),
                vec![Step::Delete { volumes: vols }],
            ),
            (
                "absent already",
                want(Absent),
                InstanceObserved::default(),
                vec![],
            ),
            (
                "forget stale records",
                want(Absent),
                InstanceObserved {
                    has_metadata: true,
                    ..Default::default()
                },
                vec![Step::Forget],
            ),
            (
                "leftovers of a killed run",
                want(Present),
                InstanceObserved {
                    leftover_volumes: vec!["web1.qcow2".into()],
                    ..fresh
                },
                vec![
                    Step::DeleteLeftovers(vec!["web1.qcow2".into()]),
                    Step::Create { generation: 2 },
                ],
            ),
        ];
        for (what, d, o, steps) in cases {
            assert_eq!(plan(&d, &o).unwrap().steps, steps, "{what}");
        }
    }

    #[test]
    fn refusals() {
        let err = plan(&want(InstanceState::Running), &InstanceObserved::default()).unwrap_err();
        assert!(err.to_string().contains("`template`"), "{err}");
        let foreign = InstanceObserved {
            foreign_domain: true,
            ..Default::default()
        };
        assert_eq!(
            plan(&want(InstanceState::Running), &foreign),
            Err(PlanError::ForeignDomain("web1".into()))
        );
        assert!(plan(&want(InstanceState::Absent), &foreign)
            .unwrap()
            .is_empty());
        // A volume named like the instance's disk that virtup cannot prove it made: the create is
        // refused naming it, and `absent` leaves it alone.
        let taken = InstanceObserved {
            foreign_volumes: vec!["web1.qcow2".into()],
            template_generation: Some(1),
            ..Default::default()
        };
        let err = plan(&want(InstanceState::Present), &taken).unwrap_err();
        assert!(
            err.to_string().contains("`web1.qcow2`") && err.to_string().contains("never touches"),
            "{err}"
        );
        assert!(plan(&want(InstanceState::Absent), &taken)
            .unwrap()
            .is_empty());
        let hot = InstanceObserved {
            template_running: true,
            template_generation: Some(1),
            ..Default::default()
        };
        assert_eq!(
            plan(&want(InstanceState::Running), &hot),
            Err(PlanError::TemplateRunning("debian-12".into()))
        );
        // A disk whose domain was undefined by hand is the instance's data, not a leftover.
        let orphan = InstanceObserved {
            detached_volumes: vec!["web1.qcow2".into()],
            template_generation: Some(1),
            ..Default::default()
        };
        let err = plan(&want(InstanceState::Running), &orphan).unwrap_err();
        assert!(err.to_string().contains("`web1.qcow2`"), "{err}");
        // A running template does not matter to an instance that exists already.
        let mut up = existing(true);
        up.template_running = true;
        assert!(plan(&want(InstanceState::Running), &up).unwrap().is_empty());
    }

    #[test]
    fn reservations() {
        use InstanceState::*;
        let a: Ipv4Addr = "192.168.122.50".parse().unwrap();
        let b: Ipv4Addr = "192.168.122.60".parse().unwrap();
        let mut fixed = want(Running);
        fixed.address = Some(a);
        let fresh = InstanceObserved {
            template_generation: Some(1),
            ..InstanceObserved::default()
        };
        assert_eq!(
            plan(&fixed, &fresh).unwrap().steps,
            vec![
                Step::Reserve(a),
                Step::Create { generation: 1 },
                Step::Start
            ]
        );
        // Refused before anything is made, naming why.
        let taken = InstanceObserved {
            address_refusal: Some("192.168.122.50 is leased to 52:54:00:aa:bb:cc".into()),
            ..fresh.clone()
        };
        let err = plan(&fixed, &taken).unwrap_err().to_string();
        assert!(
            err.contains("`address`") && err.contains("leased to"),
            "{err}"
        );
        // Already there: nothing to do, and a refusal computed anyway does not matter.
        let mut held = existing(true);
        held.reserved = Some(a);
        held.address_refusal = Some("ignored".into());
        assert!(plan(&fixed, &held).unwrap().is_empty());
        // No `address`: the reservation is left as it is; `absent` removes it before the domain.
        assert!(plan(&want(Running), &held).unwrap().is_empty());
        assert_eq!(
            plan(&want(Absent), &held).unwrap().steps,
            vec![
                Step::Unreserve(a),
                Step::Stop,
                Step::Delete {
                    volumes: vec!["web1.qcow2".into(), "web1-config.iso".into()]
                }
            ]
        );
        let records_only = InstanceObserved {
            has_metadata: true,
            reserved: Some(a),
            ..Default::default()
        };
        assert_eq!(
            plan(&want(Absent), &records_only).unwrap().steps,
            vec![Step::Unreserve(a), Step::Forget]
        );
        // A new address replaces the old one; a running guest gets it later, and is told so.
        let mut moved = fixed.clone();
        moved.address = Some(b);
        held.address_refusal = None;
        let p = plan(&moved, &held).unwrap();
        assert_eq!(p.steps, vec![Step::Unreserve(a), Step::Reserve(b)]);
        assert!(reservation_reaches_guest_later(&p, &held));
        let p = plan(&fixed, &fresh).unwrap();
        assert!(!reservation_reaches_guest_later(&p, &fresh));
        let mut stopping = moved.clone();
        stopping.state = Stopped;
        assert!(!reservation_reaches_guest_later(
            &plan(&stopping, &held).unwrap(),
            &held
        ));
        // On another network (or for another MAC) the same address is made again where the NIC is.
        let mut elsewhere = held.clone();
        elsewhere.reservation_misplaced = true;
        assert_eq!(
            plan(&fixed, &elsewhere).unwrap().steps,
            vec![Step::Unreserve(a), Step::Reserve(a)]
        );
        assert!(plan(&want(Running), &elsewhere).unwrap().is_empty());
    }

    #[test]
    fn reboot_warning_only_when_running() {
        let mut d = want(InstanceState::Present);
        d.vcpus = 2;
        let running = existing(true);
        assert!(plan(&d, &running).unwrap().needs_reboot_warning(&running));
        let off = existing(false);
        assert!(!plan(&d, &off).unwrap().needs_reboot_warning(&off));
    }
}
