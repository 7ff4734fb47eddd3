//! `virt-up NAME --login [--sftp | --command CMD]`: ssh or sftp into the instance with virtup's key and pinned host key; `--console`: its serial console.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use virtup_core::{DataDir, Paths};
use virtup_guest::Cmd;

use super::{operate, progress, Global};
use crate::inventory::{Host, HostKind};

/// How to reach a running instance: the same host record the inventory gives Ansible.
pub fn host(paths: &Paths, name: &str, global: &Global) -> Result<Host> {
    let meta = operate::existing_meta(paths, name)?;
    let i = operate::ensure_running(paths, name, global)?;
    let address = i
        .address
        .ok_or_else(|| anyhow!("instance `{name}` runs but has no address"))?;
    let user = i.user;
    let data = DataDir::at(&paths.data_dir);
    Ok(Host {
        name: name.to_owned(),
        kind: HostKind::Instance,
        domain: name.to_owned(),
        template: meta.template.clone(),
        generation: meta.generation,
        state: "running".into(),
        address: Some(address),
        ssh_private_key_file: Some(
            i.ssh_private_key_file
                .unwrap_or_else(|| data.user_key_path(&user)),
        ),
        user: Some(user),
        known_hosts_file: i
            .known_hosts_file
            .unwrap_or_else(|| data.known_hosts_file()),
        host_key_alias: i.host_key_alias,
        uri: meta
            .uri
            .clone()
            .unwrap_or_else(|| paths.libvirt_uri.clone()),
        mac: meta.mac.clone(),
        reserved_address: None,
        nic_model: meta.nic_model,
        extra_nics: meta.extra_nics.clone(),
        groups: meta.groups.clone(),
    })
}

/// The ssh (or sftp) command line for `host`: virtup's key only, strict checking against the pinned key.
pub fn ssh_command(program: &str, host: &Host, command: Option<&str>) -> Cmd {
    let mut cmd = Cmd::new(program);
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
    let cmd = ssh_command(program, &host, command);
    progress::finish();
    // exec: the terminal, signals and the exit status all belong to ssh from here on.
    Err(cmd.exec_replace().into())
}

/// `virsh -c URI console DOMAIN`: the serial console of the instance's domain (its boot messages
/// and a login prompt on the lab's and cloud images), for when SSH does not answer.
pub fn console_command(uri: &str, domain: &str) -> Cmd {
    let mut cmd = Cmd::new("virsh");
    cmd.args(["-c", uri, "console", domain]);
    cmd
}

pub fn console(paths: &Paths, name: &str) -> Result<ExitCode> {
    let meta = operate::existing_meta(paths, name)?;
    let uri = meta
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    if virtup_libvirt::uri_password_host(&uri).is_some() {
        // virsh would get the password on its command line, where every user sees it.
        return Err(anyhow!(
            "the URI of `{name}` holds a password, which would go on virsh's command line; use \
             keys or a libvirt auth file for that host"
        ));
    }
    let hv = virtup_libvirt::Hypervisor::connect(&uri)?;
    // Only the domain this data dir made for the instance (its tag, and the tag's owner or this data
    // dir's records): another data dir's instance of the same name on a shared hypervisor is not
    // attached to.
    let data = DataDir::at(&paths.data_dir);
    let dom = match hv.domain(name)? {
        Some(d) => match &d.tag {
            Some(t)
                if t.is(virtup_libvirt::TagKind::Instance, name)
                    && virtup_ops::owner::proves(&data, &hv, t, name)? =>
            {
                Some(d)
            }
            _ => None,
        },
        None => None,
    }
    .ok_or_else(|| anyhow!("instance `{name}` has no domain of this data dir's on `{uri}`"))?;
    if dom.state != virtup_libvirt::DomainState::Running {
        return Err(anyhow!(
            "instance `{name}` is not running; start it with `virt-up {name}` (its console shows the boot \
             from another terminal meanwhile)"
        ));
    }
    progress::finish();
    // By UUID: the very domain checked above, even if another is defined under the name meanwhile.
    // exec: the terminal and its escape (Ctrl+]) belong to virsh from here on.
    Err(console_command(&uri, &dom.uuid).exec_replace().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--login` exec's exactly this argv with the environment untouched: virtup's key only,
    /// the pinned host key, then `user@address` and the remote command as one argument.
    #[test]
    fn ssh_command_uses_virtups_key_and_the_pinned_host_key() {
        let host = Host {
            name: "web1".into(),
            kind: HostKind::Instance,
            domain: "web1".into(),
            template: "debian-12".into(),
            generation: 1,
            state: "running".into(),
            address: Some("192.168.122.9".into()),
            user: Some("virt".into()),
            ssh_private_key_file: Some("/d/sshkeys/virt/id_ed25519".into()),
            known_hosts_file: "/d/known_hosts".into(),
            host_key_alias: "web1".into(),
            uri: "qemu:///system".into(),
            mac: None,
            reserved_address: None,
            nic_model: None,
            extra_nics: Vec::new(),
            groups: Vec::new(),
        };
        let cmd = ssh_command("ssh", &host, Some("uname -a"));
        assert_eq!(
            cmd.argv(),
            [
                "ssh",
                "-i",
                "/d/sshkeys/virt/id_ed25519",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/d/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "HostKeyAlias=web1",
                "virt@192.168.122.9",
                "uname -a",
            ]
        );
        assert_eq!(cmd.get_env_keep(), None);
        assert_eq!(cmd.get_cwd(), None);
        assert_eq!(
            ssh_command("sftp", &host, None).argv().last().unwrap(),
            "virt@192.168.122.9"
        );
    }
    #[test]
    fn console_command_is_virsh_console_on_the_instances_hypervisor() {
        assert_eq!(
            console_command("qemu+ssh://root@h2/system", "web1").argv(),
            [
                "virsh",
                "-c",
                "qemu+ssh://root@h2/system",
                "console",
                "web1"
            ]
        );
    }
}
