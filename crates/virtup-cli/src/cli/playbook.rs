//! `virt-up NAME --playbook PLAYBOOK`: `ansible-playbook -i virtup_inventory --limit NAME PLAYBOOK`.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};

use anyhow::{bail, Context as _, Result};
use virtup_core::Paths;
use virtup_guest::Cmd;
use virtup_ops::template::TemplateFacts;

use super::{operate, progress, Global};

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

/// Runs the playbook on the instance (started and reachable first); ansible-playbook's exit status.
pub fn run_playbook(paths: &Paths, name: &str, playbook: &str, global: &Global) -> Result<i32> {
    let meta = operate::existing_meta(paths, name)?;
    if !meta.inventory {
        bail!("instance `{name}` was created with --no-inventory, so the inventory does not list it and no playbook can reach it");
    }
    let playbook = virtup_ops::playbook::find(paths, Path::new(playbook))?;
    let inventory = inventory_executable()?;
    operate::ensure_running(paths, name, global)?;
    let program = on_path("ansible-playbook").context("cannot find `ansible-playbook` on PATH")?;
    progress::stage(&format!(
        "`{name}`: ansible-playbook {}",
        playbook.display()
    ));
    progress::finish_line();
    let status = Cmd::new(&program)
        .arg("-i")
        .arg(&inventory)
        .args(["--limit", name])
        .arg(&playbook)
        .status()?;
    Ok(exit_code(status))
}

/// A signal has no exit code; 128 + signal is what shells report.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    })
}

/// Runs `playbook` against a booted template, described by the `template` document of
/// `virtup_template state=running`: a private inventory (0600, in a scratch dir of the data dir)
/// holds that one host, group `virtup_templates`, reached with its pinned host key as the
/// inventory reaches it, and the vars `virtup_template_name` and `virtup_template_domain` (as the
/// role `virtup_template` gives them). Returns ansible-playbook's exit status.
pub fn run_on_template(
    paths: &Paths,
    template: &TemplateFacts,
    uri: &str,
    playbook: &Path,
) -> Result<i32> {
    let vars = template_host_vars(template, uri)?;
    let host = vars["virtup_template_domain"].clone();
    let inventory = serde_json::json!({"all": {"children": {"virtup_templates": {"hosts": {
        host.as_str().unwrap_or_default(): vars
    }}}}});
    let program = on_path("ansible-playbook").context("cannot find `ansible-playbook` on PATH")?;
    let data = virtup_core::DataDir::at(&paths.data_dir);
    let scratch = data.scratch()?;
    // YAML is a superset of JSON; the `.yml` name is what the yaml inventory plugin accepts.
    let file = scratch.path().join("inventory.yml");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("failed to write `{}`", file.display()))?;
        f.write_all(inventory.to_string().as_bytes())?;
    }
    progress::finish_line();
    let status = Cmd::new(&program)
        .arg("-i")
        .arg(&file)
        .arg(playbook)
        .status()?;
    Ok(exit_code(status))
}

/// The host vars of a booted template, from what the template operation returned.
fn template_host_vars(template: &TemplateFacts, uri: &str) -> Result<serde_json::Value> {
    use crate::inventory::{Host, HostKind};
    let login = template.login.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "template `{}` was not left running: no address to run its playbook on",
            template.name
        )
    })?;
    let key = login.ssh_private_key_file.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "template `{}` runs but its user `{}` has no key",
            template.name,
            template.user
        )
    })?;
    let host = Host {
        name: template.domain.clone(),
        kind: HostKind::Template,
        domain: template.domain.clone(),
        template: template.name.clone(),
        generation: template.generation,
        state: "running".into(),
        address: Some(login.address.clone()),
        user: Some(template.user.clone()),
        ssh_private_key_file: Some(key),
        known_hosts_file: login.known_hosts_file.clone(),
        host_key_alias: login.host_key_alias.clone(),
        uri: uri.to_owned(),
        mac: None,
        reserved_address: None,
        nic_model: None,
        extra_nics: Vec::new(),
        groups: Vec::new(),
    };
    Ok(serde_json::json!({
        "ansible_host": host.address,
        "ansible_user": host.user,
        "ansible_ssh_private_key_file": host.ssh_private_key_file,
        "ansible_ssh_common_args": host.ssh_common_args(),
        // The pin holds whatever the user's host_key_checking says (see `inventory::host_vars`).
        "ansible_host_key_checking": true,
        "virtup_template_name": host.template,
        "virtup_template_domain": host.domain,
    }))
}

pub fn playbook(paths: &Paths, name: &str, playbook: &Path, global: &Global) -> Result<ExitCode> {
    let code = run_playbook(paths, name, &playbook.to_string_lossy(), global)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtup_ops::template::TemplateLogin;

    /// A template playbook reaches the booted template only with its pinned key, never by trust on
    /// first use or a system-wide known_hosts entry.
    #[test]
    fn template_host_vars_pin_the_host_key() {
        let mut facts = TemplateFacts {
            name: "t".into(),
            domain: "VIRTUP-t".into(),
            disk: None,
            generation: 2,
            digest: "sha256:feed".into(),
            source: None,
            user: "virt".into(),
            playbook: Some("/p.yml".into()),
            login: Some(TemplateLogin {
                address: "192.168.122.9".into(),
                ssh_private_key_file: Some("/d/sshkeys/virt/id_ed25519".into()),
                known_hosts_file: "/d/known hosts".into(),
                host_key_alias: "VIRTUP-t".into(),
                ssh_common_args: String::new(),
            }),
            warm: None,
        };
        let vars = template_host_vars(&facts, "qemu:///system").unwrap();
        assert_eq!(vars["ansible_host"], "192.168.122.9");
        assert_eq!(vars["ansible_user"], "virt");
        assert_eq!(vars["virtup_template_name"], "t");
        assert_eq!(vars["virtup_template_domain"], "VIRTUP-t");
        let args = shell_words::split(vars["ansible_ssh_common_args"].as_str().unwrap()).unwrap();
        for want in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/d/known hosts",
            "HostKeyAlias=VIRTUP-t",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        facts.login = None;
        let e = template_host_vars(&facts, "qemu:///system").unwrap_err();
        assert!(e.to_string().contains("not left running"), "{e}");
    }
}
