//! The `virtup_template` module's adapter: module options → [`TemplateOptions`], [`TemplateReport`] → module result.
//!
//! The operation itself (observe → plan → apply) is `virtup_ops::template`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use serde_json::json;
use virtup_ansible::{Diff, ModuleArgs, ModuleResult};
use virtup_core::template::TemplateState;
use virtup_libvirt::Hypervisor;
use virtup_ops::template::{
    converge, current_user_key, Request, SessionHold, TemplateOptions, TemplateReport,
};

use crate::context::{self, Context};
use crate::module::{mode, ModuleReporter};

/// `hold: new` starts a customization session (see [`SessionHold::Start`]); any other value goes on
/// with the session of that token.
pub const HOLD_NEW: &str = "new";

/// The module's options, typed; the config-layer ones validated, naming the option.
pub fn options(args: &ModuleArgs) -> Result<TemplateOptions> {
    let name = args.str("name").unwrap_or_default();
    let state = TemplateState::parse(args.str("state").unwrap_or("present"))
        .ok_or_else(|| anyhow!("invalid value for `state`"))?;
    let mut options = TemplateOptions::new(name, state);
    options.layer = context::module_layer(args)?;
    options.checksum_gpg_key = args.str("checksum_gpg_key").map(str::to_owned);
    options.revision = args.str("revision").map(str::to_owned);
    options.playbook = args.str("playbook").map(PathBuf::from);
    options.hold = match args.str("hold") {
        None | Some("") => None,
        Some(HOLD_NEW) => Some(SessionHold::start()?),
        Some(token) => Some(SessionHold::Continue(token.to_owned())),
    };
    options.wait_timeout = context::wait_timeout(args)?;
    options.password = args.str("password").map(str::to_owned);
    options.root_password = args.str("root_password").map(str::to_owned);
    options.warm = args.bool("warm").unwrap_or(false);
    Ok(options)
}

/// The request the module would act on, with the user's public key from `user_public_key`; no side
/// effect (for fuzzing).
pub fn resolve(
    args: &ModuleArgs,
    ctx: &Context,
    user_public_key: impl FnOnce(&str) -> Result<String>,
) -> Result<Request> {
    virtup_ops::template::resolve(ctx, options(args)?, user_public_key)
}

pub fn run(args: &ModuleArgs) -> Result<ModuleResult> {
    let ctx = Context::load()?;
    let req = resolve(args, &ctx, current_user_key(&ctx))?;
    let name = req.desired.name.clone();
    let hv = Hypervisor::connect(&req.uri)?;
    let report = converge(&ctx, &hv, req, mode(args), &ModuleReporter)?;
    module_result(&report, &name, args.diff())
}

/// The report as the module returns it (plugins/modules/virtup_template.yml, RETURN).
pub fn module_result(report: &TemplateReport, name: &str, with_diff: bool) -> Result<ModuleResult> {
    let mut result = ModuleResult::new(report.changed).with_msg(report.msg.clone());
    for w in &report.warnings {
        result = result.with_warning(w.clone());
    }
    if with_diff {
        let (before, after) = &report.diff;
        result = result.with_diff(Diff::new(json!(before), json!(after)).with_headers(
            format!("template {name} (before)"),
            format!("template {name} (after)"),
        ));
    }
    if let Some(waited) = &report.waited {
        result = result.with("waited", context::waited_json(waited));
    }
    if let Some(template) = &report.template {
        result = result.with("template", serde_json::to_value(template)?);
    }
    if let Some(token) = &report.hold {
        result = result.with("hold", json!(token));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    //! The result document the adapter makes of a report: the keys plugins/modules/virtup_template.yml promises.

    use virtup_ops::context::Waited;
    use virtup_ops::template::{TemplateFacts, TemplateLogin, TemplateView};

    use super::*;

    fn report(waited: Option<Waited>, login: Option<TemplateLogin>) -> TemplateReport {
        TemplateReport {
            changed: false,
            msg: "nothing to do".into(),
            warnings: Vec::new(),
            waited,
            diff: (
                TemplateView {
                    state: "absent",
                    generation: None,
                    digest: None,
                    generations: Vec::new(),
                    warm: false,
                },
                TemplateView {
                    state: "present",
                    generation: Some(1),
                    digest: Some("sha256:feed".into()),
                    generations: vec![1],
                    warm: false,
                },
            ),
            template: Some(TemplateFacts {
                name: "t".into(),
                domain: "VIRTUP-t".into(),
                disk: None,
                generation: 1,
                digest: "sha256:feed".into(),
                source: Some("os_version:debian-12".into()),
                user: "virt".into(),
                playbook: None,
                login,
                warm: None,
            }),
            hold: None,
        }
    }

    /// A session that holds the template after the call hands its token back; no session, no key.
    #[test]
    fn the_session_token_is_returned_as_hold() {
        let mut held = report(Some(Waited::default()), None);
        held.hold = Some("k3y".into());
        let doc = module_result(&held, "t", false).unwrap().to_json();
        assert_eq!(doc["hold"], "k3y");
        let doc = module_result(&report(None, None), "t", false)
            .unwrap()
            .to_json();
        assert!(doc.get("hold").is_none());
    }

    #[test]
    fn a_check_run_has_no_waited_and_a_null_disk() {
        let doc = module_result(&report(None, None), "t", true)
            .unwrap()
            .to_json();
        assert_eq!(doc["changed"], false);
        assert!(doc.get("waited").is_none());
        assert_eq!(
            doc["diff"]["before"],
            json!({"state": "absent", "generation": null, "digest": null, "generations": [], "warm": false})
        );
        assert_eq!(doc["diff"]["after"]["generations"], json!([1]));
        let t = doc["template"].as_object().unwrap();
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "digest",
                "disk",
                "domain",
                "generation",
                "name",
                "playbook",
                "source",
                "user",
                "warm"
            ]
        );
        assert!(t["disk"].is_null());
    }

    /// A template left running says how to reach it, for whoever runs its playbook.
    #[test]
    fn a_running_template_carries_its_login() {
        let login = TemplateLogin {
            address: "192.168.122.9".into(),
            ssh_private_key_file: Some("/d/sshkeys/virt/id_ed25519".into()),
            known_hosts_file: "/d/known_hosts".into(),
            host_key_alias: "VIRTUP-t".into(),
            ssh_common_args: "-o StrictHostKeyChecking=yes".into(),
        };
        let doc = module_result(&report(Some(Waited::default()), Some(login)), "t", false)
            .unwrap()
            .to_json();
        assert_eq!(
            doc["waited"],
            json!({"lock_seconds": 0.0, "hold_seconds": 0.0})
        );
        assert_eq!(doc["template"]["address"], "192.168.122.9");
        assert_eq!(doc["template"]["host_key_alias"], "VIRTUP-t");
        assert_eq!(doc["template"]["known_hosts_file"], "/d/known_hosts");
        assert_eq!(
            doc["template"]["ssh_common_args"],
            "-o StrictHostKeyChecking=yes"
        );
    }
}
