//! The `virtup_instance` module's adapter: module options → [`InstanceOptions`], [`InstanceReport`] → module result.
//!
//! The operation itself (observe → plan → apply) is `virtup_ops::instance`.

use anyhow::{anyhow, Result};
use serde_json::json;
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::instance::{CloneKind, Customize, InstanceState};
use virtup_core::validate;
use virtup_libvirt::Hypervisor;
use virtup_ops::instance::{converge, InstanceOptions, InstanceReport, Request};

use crate::context::{self, Context};
use crate::module::{mode, ModuleReporter};
use virtup_ops::Mode;

/// The module's options, typed; the config-layer ones validated, naming the option.
pub fn options(args: &ModuleArgs) -> Result<InstanceOptions> {
    let name = args.str("name").unwrap_or_default();
    let state = InstanceState::parse(args.str("state").unwrap_or("running"))
        .ok_or_else(|| anyhow!("invalid value for `state`"))?;
    let mut options = InstanceOptions::new(name, state);
    options.template = args.str("template").map(str::to_owned);
    options.clone = match args.str("clone") {
        Some("full") => CloneKind::Full,
        _ => CloneKind::Linked,
    };
    options.customize = match args.str("customize") {
        Some("sysprep") => Customize::Sysprep,
        _ => Customize::Auto,
    };
    options.layer = context::module_layer(args)?;
    options.wait_timeout = context::wait_timeout(args)?;
    options.inventory = args.bool("inventory").unwrap_or(true);
    options.autostart = args.bool("autostart");
    options.adopt = args.bool("adopt").unwrap_or(false);
    options.boot = virtup_ops::instance::Boot::parse(args.str("boot").unwrap_or("auto"))
        .ok_or_else(|| anyhow!("invalid value for `boot`"))?;
    options.address = args
        .str("address")
        .map(|a| validate::ipv4_address("address", a))
        .transpose()?;
    options.disks = args
        .get("disks")
        .map(|v| virtup_core::data_disk::parse_list("disks", v))
        .transpose()?;
    options.static_address = args.str("address_mode") == Some("static");
    options.nics = args
        .get("nics")
        .map(|v| virtup_core::nic::parse_list("nics", v))
        .transpose()?;
    options.cloud_init = args
        .get("cloud_init")
        .map(|v| virtup_core::cloud_init::parse("cloud_init", v))
        .transpose()?;
    options.groups = args.list("groups");
    options.password = args.str("password").map(str::to_owned);
    options.root_password = args.str("root_password").map(str::to_owned);
    Ok(options)
}

/// The request the module would act on; no side effect (for `virt-up`'s early checks and fuzzing).
pub fn resolve(args: &ModuleArgs, ctx: &Context) -> Result<Request> {
    virtup_ops::instance::resolve(ctx, options(args)?)
}

pub fn run(args: &ModuleArgs) -> Result<ModuleResult> {
    let ctx = Context::load()?;
    let mut options = options(args)?;
    let mut req = virtup_ops::instance::resolve(&ctx, options.clone())?;
    let hv = Hypervisor::connect(&req.uri)?;
    let name = req.desired.name.clone();
    let mut adopted = false;
    if options.adopt
        && req.desired.state != InstanceState::Absent
        && virtup_ops::adopt::pending(&ctx, &hv, &name)?
    {
        // Adopting changes no size: memory and vCPUs the task does not give stay the domain's.
        let parsed = virtup_libvirt::parse_domain_xml(&hv.inactive_xml(&name)?)?;
        options.layer.memory.get_or_insert(parsed.memory_mib);
        options.layer.vcpus.get_or_insert(parsed.vcpus);
        req = virtup_ops::instance::resolve(&ctx, options)?;
        if mode(args) == Mode::Check {
            return adoption_preview(&ctx, &hv, &name, args.diff());
        }
        let plan = virtup_ops::adopt::apply(&ctx, &hv, &name, req.wait_timeout, &ModuleReporter)?;
        // Adopting shut it down; `running` starts it again below, `present` must not leave it off.
        if plan.as_ref().is_some_and(|p| p.running) && req.desired.state == InstanceState::Present {
            hv.start(&name)?;
        }
        adopted = plan.is_some();
    }
    let name = &name;
    let mut report = converge(&ctx, &hv, &req, mode(args), &ModuleReporter)?;
    if adopted {
        report.changed = true;
        report.msg = format!("adopted `{name}` (made by virt-up 2.2.0); {}", report.msg);
    }
    module_result(&report, name, args.diff())
}

/// Check mode's answer for an instance `adopt: true` would adopt: checked as the real run checks it
/// (a mismatch fails here too), reported as a change, nothing done. What `state` then does is
/// planned by the run after the adoption, against the instance as it will be.
fn adoption_preview(
    ctx: &Context,
    hv: &Hypervisor,
    name: &str,
    with_diff: bool,
) -> Result<ModuleResult> {
    let plan = virtup_ops::adopt::check(ctx, hv, name)?;
    let mut result = ModuleResult::new(true)
        .with_msg(format!(
            "would adopt `{name}` (made by virt-up 2.2.0): {}; then converge it to `state`",
            plan.describe().join("; ")
        ))
        .with("waited", context::waited_json(&Default::default()));
    if with_diff {
        result = result.with_diff(
            Diff::new(
                json!({"made_by": "virt-up 2.2.0", "adopted": false}),
                json!({"made_by": "virt-up 2.2.0", "adopted": true, "volumes": [plan.volume]}),
            )
            .with_headers(
                format!("instance {name} (before)"),
                format!("instance {name} (after)"),
            ),
        );
    }
    Ok(result)
}

/// The report as the module returns it (plugins/modules/virtup_instance.yml, RETURN).
pub fn module_result(report: &InstanceReport, name: &str, with_diff: bool) -> Result<ModuleResult> {
    let mut result = ModuleResult::new(report.changed)
        .with_msg(report.msg.clone())
        .with("waited", context::waited_json(&report.waited));
    for w in &report.warnings {
        result = result.with_warning(w.clone());
    }
    if let (true, Some((before, after))) = (with_diff, &report.diff) {
        result = result.with_diff(Diff::new(json!(before), json!(after)).with_headers(
            format!("instance {name} (before)"),
            format!("instance {name} (after)"),
        ));
    }
    if let Some(instance) = &report.instance {
        result = result.with("instance", serde_json::to_value(instance)?);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    //! The result document the adapter makes of a report: the keys plugins/modules/virtup_instance.yml promises.

    use std::time::Duration;

    use virtup_ops::context::Waited;
    use virtup_ops::instance::{InstanceFacts, InstanceShape, InstanceView, Outcome};

    use super::*;

    fn report(outcome: Option<Outcome>) -> InstanceReport {
        let shape = |memory_mib| InstanceShape {
            memory_mib,
            vcpus: 1,
            autostart: false,
            template: "t".into(),
            generation: Some(2),
            address: None,
            disks: Vec::new(),
            nics: Vec::new(),
            groups: Vec::new(),
        };
        InstanceReport {
            changed: true,
            msg: "set memory".into(),
            warnings: vec!["w".into()],
            waited: Waited {
                lock: Duration::from_millis(1250),
                hold: Duration::ZERO,
            },
            diff: Some((
                InstanceView {
                    state: "present",
                    shape: Some(shape(256)),
                },
                InstanceView {
                    state: "absent",
                    shape: None,
                },
            )),
            instance: Some(InstanceFacts {
                name: "web1".into(),
                address: None,
                user: "virt".into(),
                ssh_private_key_file: Some("/d/sshkeys/virt/id_ed25519".into()),
                known_hosts_file: Some("/d/known_hosts".into()),
                host_key_alias: "web1".into(),
                ssh_common_args: Some("-o StrictHostKeyChecking=yes".into()),
                host_key_fingerprint: None,
                mac: Some("52:54:00:00:00:01".into()),
                reserved_address: None,
                disk: Some("/p/web1.qcow2".into()),
                data_disks: Vec::new(),
                static_address: None,
                extra_nics: Vec::new(),
                nic_model: Some("virtio"),
                groups: Vec::new(),
                template: "t".into(),
                generation: Some(2),
                state: "present",
                outcome,
            }),
        }
    }

    #[test]
    fn the_result_has_the_documented_keys() {
        let doc = module_result(&report(None), "web1", true)
            .unwrap()
            .to_json();
        assert_eq!(doc["changed"], true);
        assert_eq!(doc["warnings"], json!(["w"]));
        assert_eq!(
            doc["waited"],
            json!({"lock_seconds": 1.3, "hold_seconds": 0.0})
        );
        assert_eq!(doc["diff"]["before"]["memory"], 256);
        assert_eq!(doc["diff"]["after"], json!({"state": "absent"}));
        assert_eq!(doc["diff"]["before_header"], "instance web1 (before)");
        let keys: Vec<&str> = doc["instance"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "address",
                "data_disks",
                "disk",
                "extra_nics",
                "generation",
                "groups",
                "host_key_alias",
                "host_key_fingerprint",
                "known_hosts_file",
                "mac",
                "name",
                "nic_model",
                "reserved_address",
                "ssh_common_args",
                "ssh_private_key_file",
                "state",
                "static_address",
                "template",
                "user"
            ]
        );
        assert!(
            doc["instance"]["address"].is_null(),
            "unknown is null, not missing"
        );
        let without_diff = module_result(&report(None), "web1", false)
            .unwrap()
            .to_json();
        assert!(without_diff.get("diff").is_none());
    }

    /// A real run also says whether it created the instance and which instance-playbook follows.
    #[test]
    fn a_real_runs_outcome_is_flattened_into_the_instance() {
        let outcome = Outcome {
            created: true,
            playbook: None,
        };
        let doc = module_result(&report(Some(outcome)), "web1", false)
            .unwrap()
            .to_json();
        assert_eq!(doc["instance"]["created"], true);
        assert!(doc["instance"]["playbook"].is_null());
        assert!(doc["instance"]
            .as_object()
            .unwrap()
            .contains_key("playbook"));
    }
}
