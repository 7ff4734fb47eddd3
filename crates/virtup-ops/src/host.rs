//! The host operation: makes the hypervisor's pool and network exist, active and autostarted, and checks that guests can run.
//!
//! observe → pure [`plan`] → [`apply`] (apply mode only). Every problem it cannot mend is reported
//! together with its fix, in one failure, so that a user sees all of them at once rather than one
//! per run.

use std::fmt;

use anyhow::{bail, Result};
use serde::Serialize;
use virtup_libvirt::{
    choose_virt_type, choose_virt_type_without_probe, Hypervisor, ImageFormat, NatNetworkSpec,
    VirtType, VirtTypeChoice, VolumeSpec,
};

use crate::{Mode, Reporter};

/// What the caller wants: the pool and network to exist, and (optionally) to know whether KVM works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRequest {
    pub uri: String,
    pub pool: String,
    /// Where a new pool goes; an existing pool keeps its own path.
    pub pool_path: String,
    pub network: NatNetworkSpec,
    /// Boot a tiny test guest when the capabilities cannot tell whether KVM runs a guest.
    pub probe_kvm: bool,
}

/// A storage pool as the report and the diff show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolState {
    pub name: String,
    pub path: Option<String>,
    pub active: bool,
    pub autostart: bool,
}

/// A virtual network as the report and the diff show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkState {
    pub name: String,
    pub bridge: Option<String>,
    pub active: bool,
    pub autostart: bool,
}

/// The request's pool and network as the hypervisor has them (`None`: not defined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostState {
    pub pool: Option<PoolState>,
    pub network: Option<NetworkState>,
}

impl HostState {
    pub fn observe(hv: &Hypervisor, req: &HostRequest) -> Result<HostState> {
        let pool = match hv.pool(&req.pool)? {
            Some(p) => Some(PoolState {
                autostart: hv.pool_autostart(&req.pool)?,
                name: p.name,
                path: p.path,
                active: p.active,
            }),
            None => None,
        };
        let network = hv.network(&req.network.name)?.map(|n| NetworkState {
            name: n.name,
            bridge: n.bridge,
            active: n.active,
            autostart: n.autostart,
        });
        Ok(HostState { pool, network })
    }

    /// The state a successful apply leaves: what exists keeps its path and bridge as libvirt has
    /// them (a pool without a target path keeps none), the rest is as requested; everything active
    /// and autostarted. The diff's "after" side, in both modes.
    pub fn desired(req: &HostRequest, observed: &HostState) -> HostState {
        HostState {
            pool: Some(PoolState {
                name: req.pool.clone(),
                path: match &observed.pool {
                    Some(p) => p.path.clone(),
                    None => Some(req.pool_path.clone()),
                },
                active: true,
                autostart: true,
            }),
            network: Some(NetworkState {
                name: req.network.name.clone(),
                bridge: match &observed.network {
                    Some(n) => n.bridge.clone(),
                    None => Some(req.network.bridge.clone()),
                },
                active: true,
                autostart: true,
            }),
        }
    }
}

/// One change to the hypervisor; its `Display` is the action the result lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStep {
    DefinePool { name: String, path: String },
    StartPool(String),
    AutostartPool(String),
    DefineNetwork(NatNetworkSpec),
    StartNetwork(NatNetworkSpec),
    AutostartNetwork(String),
}

impl fmt::Display for HostStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostStep::DefinePool { name, path } => {
                write!(f, "define directory pool `{name}` at `{path}`")
            }
            HostStep::StartPool(name) => write!(f, "start pool `{name}`"),
            HostStep::AutostartPool(name) => write!(f, "autostart pool `{name}`"),
            HostStep::DefineNetwork(n) => write!(
                f,
                "define NAT network `{}` on bridge `{}` ({}/{})",
                n.name, n.bridge, n.address, n.netmask
            ),
            HostStep::StartNetwork(n) => write!(f, "start network `{}`", n.name),
            HostStep::AutostartNetwork(name) => write!(f, "autostart network `{name}`"),
        }
    }
}

/// The steps from `observed` to the request's pool and network: pure and total.
pub fn plan(req: &HostRequest, observed: &HostState) -> Vec<HostStep> {
    let mut steps = Vec::new();
    let pool = observed.pool.as_ref();
    if pool.is_none() {
        steps.push(HostStep::DefinePool {
            name: req.pool.clone(),
            path: req.pool_path.clone(),
        });
    }
    if !pool.is_some_and(|p| p.active) {
        steps.push(HostStep::StartPool(req.pool.clone()));
    }
    if !pool.is_some_and(|p| p.autostart) {
        steps.push(HostStep::AutostartPool(req.pool.clone()));
    }
    let network = observed.network.as_ref();
    if network.is_none() {
        steps.push(HostStep::DefineNetwork(req.network.clone()));
    }
    if !network.is_some_and(|n| n.active) {
        steps.push(HostStep::StartNetwork(req.network.clone()));
    }
    if !network.is_some_and(|n| n.autostart) {
        steps.push(HostStep::AutostartNetwork(req.network.name.clone()));
    }
    steps
}

/// A problem found on the hypervisor, and what the user should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub problem: String,
    pub fix: String,
}

/// Runs the steps in order. A network that will not start is a [`Problem`] (its fix depends on the
/// host), gathered with the others; any other failure stops the run.
pub fn apply(
    hv: &Hypervisor,
    steps: &[HostStep],
    reporter: &dyn Reporter,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    for step in steps {
        reporter.changed();
        match step {
            HostStep::DefinePool { name, path } => hv.define_dir_pool(name, path)?,
            HostStep::StartPool(name) => hv.start_pool(name)?,
            HostStep::AutostartPool(name) => hv.set_pool_autostart(name, true)?,
            HostStep::DefineNetwork(spec) => hv.define_network(spec)?,
            HostStep::StartNetwork(spec) => {
                if let Err(e) = hv.start_network(&spec.name) {
                    problems.push(Problem {
                        problem: format!("network `{}` cannot start: {e}", spec.name),
                        fix: format!(
                            "make sure dnsmasq is installed and bridge `{}` or the subnet {} is not already in use; \
                             or choose other `network_bridge`/`network_address` values",
                            spec.bridge, spec.address
                        ),
                    });
                }
            }
            HostStep::AutostartNetwork(name) => hv.set_network_autostart(name, true)?,
        }
    }
    Ok(())
}

/// Whether and how guests run: `virt_type` is `None` when it was not found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtReport {
    pub virt_type: Option<VirtType>,
    pub reason: String,
}

/// What a run found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    pub uri: String,
    /// The actions, planned (check mode) or done (apply mode); empty when nothing changed.
    pub actions: Vec<String>,
    pub before: HostState,
    /// The state the plan leads to; the diff's "after".
    pub desired: HostState,
    /// As read back after applying; `before` in check mode.
    pub after: HostState,
    /// Whether a probe volume could be written and removed; `None` in check mode.
    pub pool_writable: Option<bool>,
    pub virt: VirtReport,
    /// The host's free memory in MiB when the run ended (placement weighs it); `None` when the
    /// driver cannot tell (libvirt's test driver with a node file).
    pub free_memory_mib: Option<u64>,
    pub warnings: Vec<String>,
}

impl HostReport {
    pub fn changed(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// Observes, plans, and in [`Mode::Apply`] applies; then checks that the pool takes a volume and
/// (when asked) that guests can run. All problems it cannot mend come back as one error.
pub fn converge(
    hv: &Hypervisor,
    req: &HostRequest,
    mode: Mode,
    reporter: &dyn Reporter,
) -> Result<HostReport> {
    let before = HostState::observe(hv, req)?;
    let steps = plan(req, &before);
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (after, pool_writable) = match mode {
        Mode::Check => (before.clone(), None),
        Mode::Apply => {
            apply(hv, &steps, reporter, &mut problems)?;
            // The pool must take a volume: write one through libvirt (as clones will) and remove it.
            let writable = check_pool_writable(hv, &req.pool, reporter, &mut problems);
            (HostState::observe(hv, req)?, Some(writable))
        }
    };
    let virt = if req.probe_kvm {
        let decided = choose_virt_type_without_probe(hv)?;
        let (virt, warning) = virt_report(&req.uri, mode, decided, || Ok(choose_virt_type(hv)?))?;
        warnings.extend(warning);
        virt
    } else {
        VirtReport {
            virt_type: None,
            reason: "not probed (probe_kvm=false)".into(),
        }
    };
    if !problems.is_empty() {
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{} (fix: {})", p.problem, p.fix))
            .collect();
        bail!(
            "the hypervisor `{}` is not ready: {}",
            req.uri,
            text.join("; ")
        );
    }
    Ok(HostReport {
        uri: req.uri.clone(),
        actions: steps.iter().map(ToString::to_string).collect(),
        desired: HostState::desired(req, &before),
        before,
        after,
        pool_writable,
        virt,
        free_memory_mib: hv.free_memory_mib().ok(),
        warnings,
    })
}

/// What the report says about running guests, and the warning that goes with it. `decided` is
/// what the override or the capabilities settle without a guest; when they do not, apply mode
/// calls `probe`, which boots a tiny test guest, and check mode (which has no side effect at all)
/// says that KVM was not probed. There is no cached probe answer to report.
fn virt_report(
    uri: &str,
    mode: Mode,
    decided: Option<VirtTypeChoice>,
    probe: impl FnOnce() -> Result<VirtTypeChoice>,
) -> Result<(VirtReport, Option<String>)> {
    let choice = match (decided, mode) {
        (Some(choice), _) => choice,
        (None, Mode::Check) => {
            let reason = format!(
                "not probed in check mode: `{uri}` offers kvm, but only a test guest can show that a \
                 guest really runs under it, and check mode boots nothing"
            );
            let warning = format!(
                "whether guests can use KVM on `{uri}` is not probed in check mode; a real run boots a \
                 tiny test guest to find out (or set probe_kvm=false)"
            );
            let virt = VirtReport {
                virt_type: None,
                reason,
            };
            return Ok((virt, Some(warning)));
        }
        (None, Mode::Apply) => probe()?,
    };
    let warning = (choice.virt_type == VirtType::Qemu).then(|| {
        format!(
            "guests will run under TCG (software emulation, 5-20x slower): {}. Fix for KVM: enable \
             virtualization (VT-x/AMD-V) in the firmware or the parent hypervisor, load `kvm_intel`/`kvm_amd`, \
             and give this user access to /dev/kvm",
            choice.reason
        )
    });
    let virt = VirtReport {
        virt_type: Some(choice.virt_type),
        reason: choice.reason,
    };
    Ok((virt, warning))
}

fn check_pool_writable(
    hv: &Hypervisor,
    pool: &str,
    reporter: &dyn Reporter,
    problems: &mut Vec<Problem>,
) -> bool {
    let probe = format!(".virtup-write-probe-{}", std::process::id());
    let spec = VolumeSpec::new(&probe, 1 << 20, ImageFormat::Raw);
    match hv.create_volume(pool, &spec) {
        Ok(_) => {
            if let Err(e) = hv.delete_volume(pool, &probe) {
                // The probe volume stays behind: this run changed the pool.
                reporter.changed();
                problems.push(Problem {
                    problem: format!(
                        "the write probe `{probe}` could not be removed from pool `{pool}`: {e}"
                    ),
                    fix: format!("remove it with `virsh vol-delete {probe} --pool {pool}`"),
                });
            }
            true
        }
        Err(e) => {
            problems.push(Problem {
                problem: format!("pool `{pool}` is not writable: {e}"),
                fix: "make its directory writable by the libvirt daemon (owner root, mode 0711 or wider), \
                      check free space, or choose another `pool`"
                    .into(),
            });
            false
        }
    }
}

#[cfg(test)]
mod tests;
