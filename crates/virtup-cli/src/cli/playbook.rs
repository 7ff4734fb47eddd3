//! `virt-up NAME --playbook PLAYBOOK`: `ansible-playbook -i virtup_inventory --limit NAME PLAYBOOK`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};
use virtup_core::Paths;

use super::{drive, progress, Global};

/// The inventory executable: beside the running `virt-up` (how `scripts/build` and cargo lay
/// them out), else the first `virtup_inventory` on `PATH`.
pub fn inventory_executable() -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("virtup_inventory")));
    if let Some(p) = beside.filter(|p| is_executable(p)) {
        return Ok(p);
    }
    if let Some(p) = on_path("virtup_inventory") {
        return Ok(p);
    }
    bail!("cannot find the `virtup_inventory` executable beside virt-up or on PATH (scripts/build installs both in bin/)")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

/// The playbook as given, else in the config's `playbooks/` dirs (user, then system), as virt-up searches.
pub fn find_playbook(paths: &Paths, playbook: &Path) -> Result<PathBuf> {
    let mut searched = vec![playbook.to_path_buf()];
    if playbook.is_file() {
        return Ok(playbook.to_path_buf());
    }
    if playbook.is_relative() {
        for dir in paths.playbook_dirs() {
            let p = dir.join(playbook);
            if p.is_file() {
                return Ok(p);
            }
            searched.push(p);
        }
    }
    let list: Vec<String> = searched
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect();
    bail!(
        "playbook `{}` not found (searched {})",
        playbook.display(),
        list.join(", ")
    )
}

/// Runs the playbook on the instance (started and reachable first); ansible-playbook's exit status.
pub fn run_playbook(paths: &Paths, name: &str, playbook: &str, global: &Global) -> Result<i32> {
    let meta = drive::existing_meta(paths, name)?;
    if !meta.inventory {
        bail!("instance `{name}` was created with --no-inventory, so the inventory does not list it and no playbook can reach it");
    }
    let playbook = find_playbook(paths, Path::new(playbook))?;
    let inventory = inventory_executable()?;
    drive::ensure_running(paths, name, global)?;
    let program = on_path("ansible-playbook").context("cannot find `ansible-playbook` on PATH")?;
    progress::stage(&format!(
        "`{name}`: ansible-playbook {}",
        playbook.display()
    ));
    progress::finish_line();
    let status = Command::new(&program)
        .arg("-i")
        .arg(&inventory)
        .args(["--limit", name])
        .arg(&playbook)
        .status()
        .with_context(|| format!("failed to run `{}`", program.display()))?;
    // A signal has no exit code; 128 + signal is what shells report.
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    }))
}

pub fn playbook(paths: &Paths, name: &str, playbook: &Path, global: &Global) -> Result<ExitCode> {
    let code = run_playbook(paths, name, &playbook.to_string_lossy(), global)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
