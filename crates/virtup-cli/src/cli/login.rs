//! `virt-up NAME --login [--sftp | --command CMD]`: ssh or sftp into the instance with virtup's key and pinned host key.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{anyhow, Context as _, Result};
use serde_json::Value;
use virtup_core::{DataDir, Paths};

use super::{drive, progress, Global};
use crate::inventory::{Host, HostKind};

/// How to reach a running instance: the same host record the inventory gives Ansible.
pub fn host(paths: &Paths, name: &str, global: &Global) -> Result<Host> {
    let meta = drive::existing_meta(paths, name)?;
    let i = drive::ensure_running(paths, name, global)?;
    let text = |k: &str| i.get(k).and_then(Value::as_str).map(str::to_owned);
    let address =
        text("address").ok_or_else(|| anyhow!("instance `{name}` runs but has no address"))?;
    let user = text("user").ok_or_else(|| anyhow!("instance `{name}` has no login user"))?;
    let data = DataDir::at(&paths.data_dir);
    Ok(Host {
        name: name.to_owned(),
        kind: HostKind::Instance,
        domain: name.to_owned(),
        template: meta.template.clone(),
        generation: meta.generation,
        state: "running".into(),
        address: Some(address),
        user: Some(user.clone()),
        ssh_private_key_file: Some(
            text("ssh_private_key_file")
                .map(PathBuf::from)
                .unwrap_or_else(|| data.sshkeys_dir().join(&user).join("id_ed25519")),
        ),
        known_hosts_file: text("known_hosts_file")
            .map(PathBuf::from)
            .unwrap_or_else(|| data.known_hosts_file()),
        host_key_alias: text("host_key_alias").unwrap_or_else(|| name.to_owned()),
        uri: meta
            .uri
            .clone()
            .unwrap_or_else(|| paths.libvirt_uri.clone()),
        mac: meta.mac.clone(),
    })
}

/// The ssh (or sftp) command line for `host`: virtup's key only, strict checking against the pinned key.
pub fn ssh_command(program: &str, host: &Host, command: Option<&str>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(key) = &host.ssh_private_key_file {
        cmd.arg("-i").arg(key);
    }
    cmd.args(["-o", "IdentitiesOnly=yes"]);
    cmd.args(host.ssh_options());
    cmd.arg(format!(
        "{}@{}",
        host.user.as_deref().unwrap_or_default(),
        host.address.as_deref().unwrap_or_default()
    ));
    if let Some(c) = command {
        cmd.arg(c);
    }
    cmd
}

pub fn login(
    paths: &Paths,
    name: &str,
    sftp: bool,
    command: Option<&str>,
    global: &Global,
) -> Result<ExitCode> {
    let host = host(paths, name, global)?;
    let program = if sftp { "sftp" } else { "ssh" };
    let mut cmd = ssh_command(program, &host, command);
    progress::finish();
    // exec: the terminal, signals and the exit status all belong to ssh from here on.
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to run `{program}`"))
}
