//! The `virtup_instance` module's adapter: module options → [`InstanceOptions`], [`InstanceReport`] → module result.
//!
//! The operation itself (observe → plan → apply) is `virtup_ops::instance`.

use anyhow::{anyhow, Result};
use serde_json::json;
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::instance::{CloneKind, Customize, InstanceState};
use virtup_libvirt::Hypervisor;
use virtup_ops::instance::{converge, InstanceOptions, InstanceReport, Request};

use crate::context::{self, Context};
use crate::module::{mode, ModuleReporter};

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
    let req = resolve(args, &ctx)?;
    let hv = Hypervisor::connect(&req.uri)?;
    let report = converge(&ctx, &hv, &req, mode(args), &ModuleReporter)?;
    module_result(&report, &req.desired.name, args.diff())
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
