//! The `virtup_host` driver: makes the hypervisor's pool and network exist, active and autostarted, and checks that guests can run.
//!
//! Every problem it cannot mend is reported together with its fix, in one failure, so that
//! a user sees all of them at once rather than one per run.

use anyhow::Result;
use serde_json::{json, Value};
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::validate;
use virtup_libvirt::{
    choose_virt_type, choose_virt_type_without_probe, Hypervisor, ImageFormat, NatNetworkSpec,
    VirtType, VirtTypeChoice, VolumeSpec,
};

use crate::context::Context;

/// A problem found on the hypervisor, and what the user should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub problem: String,
    pub fix: String,
}

struct Request {
    uri: String,
    pool: String,
    pool_path: String,
    network: NatNetworkSpec,
    probe_kvm: bool,
}

fn resolve(args: &ModuleArgs, ctx: &Context) -> Result<Request> {
    let common = ctx.config.resolve_common();
    let text = |k: &str| args.str(k).unwrap_or_default().to_owned();
    let pool = args
        .str("pool")
        .map(str::to_owned)
        .or(common.pool)
        .unwrap_or_else(|| "default".into());
    validate::name("pool", &pool)?;
    let network = text("network");
    validate::name("network", &network)?;
    let pool_path = text("pool_path");
    if !pool_path.starts_with('/') {
        anyhow::bail!(
            "invalid value for `pool_path`: {} must be an absolute path",
            validate::Shown(&pool_path)
        );
    }
    for option in [
        "network_address",
        "network_netmask",
        "network_dhcp_start",
        "network_dhcp_end",
    ] {
        let v = text(option);
        if v.parse::<std::net::Ipv4Addr>().is_err() {
            anyhow::bail!(
                "invalid value for `{option}`: {} is not an IPv4 address",
                validate::Shown(&v)
            );
        }
    }
    let bridge = text("network_bridge");
    if bridge.is_empty()
        || bridge.len() > 15
        || !bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!(
            "invalid value for `network_bridge`: {} is not a Linux interface name (1-15 letters, digits, - or _)",
            validate::Shown(&bridge)
        );
    }
    Ok(Request {
        uri: args
            .str("uri")
            .map(str::to_owned)
            .or(common.uri)
            .unwrap_or_else(|| ctx.paths.libvirt_uri.clone()),
        pool,
        pool_path,
        network: NatNetworkSpec {
            name: network,
            bridge,
            address: text("network_address"),
            netmask: text("network_netmask"),
            dhcp_start: text("network_dhcp_start"),
            dhcp_end: text("network_dhcp_end"),
        },
        probe_kvm: args.bool("probe_kvm").unwrap_or(true),
    })
}

/// Resolves and validates the options as a run does, without touching the hypervisor; for fuzzing.
#[doc(hidden)]
pub fn check_options(args: &ModuleArgs, ctx: &Context) -> Result<()> {
    resolve(args, ctx).map(drop)
}

/// What exists now, as the diff shows it.
fn observe(hv: &Hypervisor, req: &Request) -> Result<Value> {
    let pool = match hv.pool(&req.pool)? {
        Some(p) => json!({
            "name": p.name,
            "path": p.path,
            "active": p.active,
            "autostart": hv.pool_autostart(&req.pool)?,
        }),
        None => Value::Null,
    };
    let network = match hv.network(&req.network.name)? {
        Some(n) => json!({
            "name": n.name,
            "bridge": n.bridge,
            "active": n.active,
            "autostart": n.autostart,
        }),
        None => Value::Null,
    };
    Ok(json!({"pool": pool, "network": network}))
}

pub fn run(args: &ModuleArgs) -> Result<ModuleResult> {
    let ctx = Context::load()?;
    let req = resolve(args, &ctx)?;
    let check = args.check_mode();
    let hv = match Hypervisor::connect(&req.uri) {
        Ok(hv) => hv,
        Err(e) => anyhow::bail!(
            "{e}. Fix: start the libvirt daemon (`systemctl enable --now libvirtd` on systemd hosts) \
             and make sure this user may use `{}` (root, or the `libvirt` group)",
            req.uri
        ),
    };
    let before = observe(&hv, &req)?;
    let mut actions: Vec<String> = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    // Pool: defined (a directory pool), active, autostarted.
    if before["pool"].is_null() {
        actions.push(format!(
            "define directory pool `{}` at `{}`",
            req.pool, req.pool_path
        ));
        if !check {
            virtup_ansible::mark_changed();
            hv.define_dir_pool(&req.pool, &req.pool_path)?;
        }
    }
    if before["pool"]["active"] != json!(true) {
        actions.push(format!("start pool `{}`", req.pool));
        if !check {
            virtup_ansible::mark_changed();
            hv.start_pool(&req.pool)?;
        }
    }
    if before["pool"]["autostart"] != json!(true) {
        actions.push(format!("autostart pool `{}`", req.pool));
        if !check {
            virtup_ansible::mark_changed();
            hv.set_pool_autostart(&req.pool, true)?;
        }
    }

    // Network: defined, active, autostarted.
    let net = &req.network.name;
    if before["network"].is_null() {
        actions.push(format!(
            "define NAT network `{net}` on bridge `{}` ({}/{})",
            req.network.bridge, req.network.address, req.network.netmask
        ));
        if !check {
            virtup_ansible::mark_changed();
            hv.define_network(&req.network)?;
        }
    }
    if before["network"]["active"] != json!(true) {
        actions.push(format!("start network `{net}`"));
        if !check {
            virtup_ansible::mark_changed();
            if let Err(e) = hv.start_network(net) {
                problems.push(Problem {
                    problem: format!("network `{net}` cannot start: {e}"),
                    fix: format!(
                        "make sure dnsmasq is installed and bridge `{}` or the subnet {} is not already in use; \
                         or choose other `network_bridge`/`network_address` values",
                        req.network.bridge, req.network.address
                    ),
                });
            }
        }
    }
    if before["network"]["autostart"] != json!(true) {
        actions.push(format!("autostart network `{net}`"));
        if !check {
            virtup_ansible::mark_changed();
            hv.set_network_autostart(net, true)?;
        }
    }

    // The pool must take a volume: write one through libvirt (as clones will) and remove it.
    let pool_writable = if check {
        None
    } else {
        Some(check_pool_writable(&hv, &req.pool, &mut problems))
    };

    // Guests must be able to run: KVM for real, or TCG with a warning. Check mode boots nothing.
    let virt = if req.probe_kvm {
        let decided = choose_virt_type_without_probe(&hv)?;
        let (virt, warning) = virt_report(&req.uri, check, decided, || Ok(choose_virt_type(&hv)?))?;
        warnings.extend(warning);
        virt
    } else {
        json!({"virt_type": null, "reason": "not probed (probe_kvm=false)"})
    };

    let after = if check {
        before.clone()
    } else {
        observe(&hv, &req)?
    };
    if !problems.is_empty() {
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{} (fix: {})", p.problem, p.fix))
            .collect();
        anyhow::bail!(
            "the hypervisor `{}` is not ready: {}",
            req.uri,
            text.join("; ")
        );
    }
    let changed = !actions.is_empty();
    let mut result = ModuleResult::new(changed)
        .with_msg(if changed {
            actions.join("; ")
        } else {
            format!("`{}` is ready", req.uri)
        })
        .with(
            "host",
            json!({
                "uri": req.uri,
                "pool": after["pool"],
                "pool_writable": pool_writable,
                "network": after["network"],
                "virt_type": virt["virt_type"],
                "virt_type_reason": virt["reason"],
            }),
        )
        .with("actions", json!(actions));
    if args.diff() {
        let mut planned = after.clone();
        if check {
            planned = json!({
                "pool": {"name": req.pool, "path": before["pool"]["path"].as_str().unwrap_or(&req.pool_path), "active": true, "autostart": true},
                "network": {"name": net, "bridge": before["network"]["bridge"].as_str().unwrap_or(&req.network.bridge), "active": true, "autostart": true},
            });
        }
        result = result.with_diff(Diff::new(before, planned));
    }
    for w in warnings {
        result = result.with_warning(w);
    }
    Ok(result)
}

/// What the host result says about running guests (`virt_type`, `reason`), and the warning that
/// goes with it. `decided` is what the override or the capabilities settle without a guest; when
/// they do not, a real run calls `probe`, which boots a tiny test guest, and a check run (which has
/// no side effect at all) says that KVM was not probed. There is no cached probe answer to report.
fn virt_report(
    uri: &str,
    check: bool,
    decided: Option<VirtTypeChoice>,
    probe: impl FnOnce() -> Result<VirtTypeChoice>,
) -> Result<(Value, Option<String>)> {
    let choice = match decided {
        Some(choice) => choice,
        None if check => {
            let reason = format!(
                "not probed in check mode: `{uri}` offers kvm, but only a test guest can show that a \
                 guest really runs under it, and check mode boots nothing"
            );
            let warning = format!(
                "whether guests can use KVM on `{uri}` is not probed in check mode; a real run boots a \
                 tiny test guest to find out (or set probe_kvm=false)"
            );
            return Ok((json!({"virt_type": null, "reason": reason}), Some(warning)));
        }
        None => probe()?,
    };
    let warning = (choice.virt_type == VirtType::Qemu).then(|| {
        format!(
            "guests will run under TCG (software emulation, 5-20x slower): {}. Fix for KVM: enable \
             virtualization (VT-x/AMD-V) in the firmware or the parent hypervisor, load `kvm_intel`/`kvm_amd`, \
             and give this user access to /dev/kvm",
            choice.reason
        )
    });
    Ok((
        json!({"virt_type": choice.virt_type.as_str(), "reason": choice.reason}),
        warning,
    ))
}

fn check_pool_writable(hv: &Hypervisor, pool: &str, problems: &mut Vec<Problem>) -> bool {
    let probe = format!(".virtup-write-probe-{}", std::process::id());
    let spec = VolumeSpec::new(&probe, 1 << 20, ImageFormat::Raw);
    match hv.create_volume(pool, &spec) {
        Ok(_) => {
            if let Err(e) = hv.delete_volume(pool, &probe) {
                // The probe volume stays behind: this run changed the pool.
                virtup_ansible::mark_changed();
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
mod tests {
    use super::*;

    fn choice(virt_type: VirtType) -> VirtTypeChoice {
        VirtTypeChoice {
            virt_type,
            reason: "because".into(),
        }
    }

    #[test]
    fn check_mode_never_boots_a_probe() {
        let no_probe = || -> Result<VirtTypeChoice> { panic!("check mode booted the probe guest") };
        // Capabilities alone cannot tell: not probed, with a warning that says so.
        let (virt, warning) = virt_report("qemu:///system", true, None, no_probe).unwrap();
        assert_eq!(virt["virt_type"], Value::Null, "{virt}");
        let reason = virt["reason"].as_str().unwrap();
        assert!(reason.starts_with("not probed in check mode"), "{reason}");
        assert!(
            warning
                .as_deref()
                .is_some_and(|w| w.contains("not probed in check mode")),
            "{warning:?}"
        );
        // What the override or the capabilities decide is reported in check mode too.
        let (virt, warning) = virt_report(
            "test:///default",
            true,
            Some(choice(VirtType::Qemu)),
            no_probe,
        )
        .unwrap();
        assert_eq!(virt["virt_type"], json!("qemu"));
        assert!(warning.unwrap().contains("TCG"));
        let (virt, warning) = virt_report(
            "qemu:///system",
            true,
            Some(choice(VirtType::Kvm)),
            no_probe,
        )
        .unwrap();
        assert_eq!(virt["virt_type"], json!("kvm"));
        assert_eq!(warning, None);
    }

    #[test]
    fn a_real_run_probes_when_the_capabilities_cannot_tell() {
        let mut probed = false;
        let (virt, warning) = virt_report("qemu:///system", false, None, || {
            probed = true;
            Ok(choice(VirtType::Kvm))
        })
        .unwrap();
        assert!(probed);
        assert_eq!(virt["virt_type"], json!("kvm"));
        assert_eq!(warning, None);
        let (virt, _) = virt_report(
            "qemu:///system",
            false,
            Some(choice(VirtType::Qemu)),
            || panic!("decided without a probe"),
        )
        .unwrap();
        assert_eq!(virt["virt_type"], json!("qemu"));
    }
}
