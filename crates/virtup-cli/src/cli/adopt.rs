//! `virt-up NAME --adopt`: an instance virt-up 2.2.0 made becomes virtup's, after its records are checked and the user confirmed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use virtup_core::Paths;
use virtup_libvirt::Hypervisor;

use super::progress::{self, Progress};
use super::{confirm_to, operate, say, Global};
use crate::context::Context;

/// How long a guest gets to shut down on its own (ACPI); generous, since guests may run under TCG.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

pub fn adopt(paths: &Paths, name: &str, global: &Global) -> Result<ExitCode> {
    let ctx = Context::load()?;
    // virt-up 2.2.0's records name no hypervisor: virtup looks on its default one (virt-up's own
    // default is qemu:///session; `check` says so when the domain is not there).
    let uri = virtup_ops::context::default_uri(&ctx.config, paths);
    let hv = Hypervisor::connect(&uri)?;
    let plan = virtup_ops::adopt::check(&ctx, &hv, name)?;
    if !global.quiet() {
        eprintln!("virt-up: `{name}` was made by virt-up 2.2.0 and matches its records; adopting it will:");
        for line in plan.describe() {
            eprintln!("  - {line}");
        }
    }
    confirm_to("adopt", &format!("instance `{name}`"), global)?;
    let Some(plan) = virtup_ops::adopt::apply(&ctx, &hv, name, SHUTDOWN_TIMEOUT, &Progress)? else {
        progress::finish_line();
        say(
            global,
            format!("instance `{name}` was adopted meanwhile (another run)"),
        );
        return Ok(ExitCode::SUCCESS);
    };
    progress::finish_line();
    if plan.running {
        // Started again the way every virtup instance is: its SSH login proven against the key pinned above.
        operate::ensure_running(paths, name, global)?;
        progress::finish_line();
    }
    say(
        global,
        format!(
            "adopted instance `{name}`{}",
            if plan.running {
                ": it runs, and its new host key is pinned"
            } else {
                " (stopped): its new host key is pinned"
            }
        ),
    );
    Ok(ExitCode::SUCCESS)
}
