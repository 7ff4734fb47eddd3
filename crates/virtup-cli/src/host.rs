//! The `virtup_host` module's adapter: module options → [`HostRequest`], [`HostReport`] → module result.
//!
//! The operation itself (observe → plan → apply) is `virtup_ops::host`.

use anyhow::Result;
use serde_json::json;
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::validate;
use virtup_libvirt::{Hypervisor, NatNetworkSpec};
use virtup_ops::host::{converge, HostReport, HostRequest};

use crate::context::Context;
use crate::module::{mode, ModuleReporter};

pub(crate) fn resolve(args: &ModuleArgs, ctx: &Context) -> Result<HostRequest> {
    let common = ctx.config.resolve_common();
    let text = |k: &str| args.str(k).unwrap_or_default().to_owned();
    let pool = args
        .str("pool")
        .map(str::to_owned)
        .unwrap_or_else(|| common.settings().pool);
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
    let uri = args
        .str("uri")
        .map(str::to_owned)
        .or(common.uri)
        .unwrap_or_else(|| ctx.paths.libvirt_uri.clone());
    virtup_ops::context::check_uri(&uri)?;
    Ok(HostRequest {
        uri,
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

pub fn run(args: &ModuleArgs) -> Result<ModuleResult> {
    let ctx = Context::load()?;
    let req = resolve(args, &ctx)?;
    let hv = match Hypervisor::connect(&req.uri) {
        Ok(hv) => hv,
        Err(e) => anyhow::bail!(
            "{e}. Fix: start the libvirt daemon (`systemctl enable --now libvirtd` on systemd hosts) \
             and make sure this user may use `{}` (root, or the `libvirt` group)",
            req.uri
        ),
    };
    let report = converge(&hv, &req, mode(args), &ModuleReporter)?;
    Ok(module_result(&report, args.diff()))
}

/// The report as the module returns it (plugins/modules/virtup_host.yml, RETURN).
fn module_result(report: &HostReport, with_diff: bool) -> ModuleResult {
    let changed = report.changed();
    let mut result = ModuleResult::new(changed)
        .with_msg(if changed {
            report.actions.join("; ")
        } else {
            format!("`{}` is ready", report.uri)
        })
        .with(
            "host",
            json!({
                "uri": report.uri,
                "pool": report.after.pool,
                "pool_writable": report.pool_writable,
                "network": report.after.network,
                "virt_type": report.virt.virt_type.map(|v| v.as_str()),
                "virt_type_reason": report.virt.reason,
                "free_memory_mib": report.free_memory_mib,
            }),
        )
        .with("actions", json!(report.actions));
    if with_diff {
        result = result.with_diff(Diff::new(json!(report.before), json!(report.desired)));
    }
    for w in &report.warnings {
        result = result.with_warning(w.clone());
    }
    result
}
