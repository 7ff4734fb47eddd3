//! Reaching a booted guest: address sources polled in order, then proof that the guest holds the pinned host key.
//!
//! The proof is a completed SSH login with virtup's user key and `StrictHostKeyChecking=yes` against
//! virtup's known_hosts only ([`virtup_guest::ssh`]): a server that merely *offers* the pinned public
//! key (all `ssh-keyscan` could show) fails it.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use virtup_core::DataDir;
use virtup_guest::ssh::{Hop, ProofError, Refusal};
use virtup_libvirt::{AddressSource, Hypervisor};

use crate::Reporter;

/// Bound on one SSH proof: a first login on a guest without KVM takes seconds, never this long.
const PROOF_TIMEOUT: Duration = Duration::from_secs(30);

/// Who logs in to prove a guest: the pinned key's name and virtup's user and key.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// Name of the pinned key in virtup's known_hosts (`HostKeyAlias`).
    pub alias: &'a str,
    /// The login user.
    pub user: &'a str,
    /// virtup's private key for `user`.
    pub identity: &'a Path,
}

/// A guest to wait for.
pub struct Target<'a> {
    /// libvirt domain name.
    pub domain: &'a str,
    pub login: Login<'a>,
    pub mac: Option<&'a str>,
    pub sources: &'a [AddressSource],
    /// Name to resolve for the `dns` source.
    pub dns_name: &'a str,
    /// An address the guest configured itself (`address_mode: static`): it asks no DHCP server, so
    /// no lease names it; tried after what the sources found.
    pub known: Option<IpAddr>,
    pub timeout: Duration,
}

/// Polls the address sources in order, then proves the pinned host key by an SSH login, until `timeout`.
/// On timeout the error says what each source saw and what the proof said at each address, e.g.
/// "lease: no lease for 52:54:00:…; agent: …" or "ssh 192.168.122.7: auth failed: … Permission denied (publickey).".
///
/// Returns the address and what the guest's first boot noted it did not do ([`ssh_answers`]).
pub fn wait_for_ssh(
    hv: &Hypervisor,
    data: &DataDir,
    t: &Target,
    reporter: &dyn Reporter,
) -> Result<(IpAddr, Vec<String>)> {
    let deadline = Instant::now() + t.timeout;
    // A remote hypervisor's guests are reached through it, and only it can resolve their names.
    let hop = Hop::from_uri(hv.uri());
    let mut hop_note = None;
    if let Some(hop) = &hop {
        // A hop refused for good (the hypervisor's key unknown or changed, the login refused)
        // fails every proof the same way: said once, not waited out. A busy or slow hypervisor
        // is only noted, and the wait goes on.
        if let Err(e) = hop.check(PROOF_TIMEOUT.min(t.timeout)) {
            if matches!(
                e.kind,
                Refusal::HostKeyMismatch | Refusal::AuthFailed | Refusal::UserKey | Refusal::Spawn
            ) {
                bail!(
                    "cannot reach the guests of `{}` through their hypervisor (the SSH hop virtup, \
                     the inventory and Ansible use; its key must be in your known_hosts): {e}",
                    hv.uri()
                );
            }
            hop_note = Some(format!("hop: {e}"));
        }
    }
    // libvirt answers every source but `dns`, which is resolved here.
    let lib_sources: Vec<AddressSource> = t
        .sources
        .iter()
        .copied()
        .filter(|s| *s != AddressSource::Dns)
        .collect();
    loop {
        let mut notes: Vec<String> = hop_note.take().into_iter().collect();
        let mut candidates: Vec<IpAddr> = Vec::new();
        if !lib_sources.is_empty() {
            let lookup = hv.find_address(t.domain, t.mac, &lib_sources)?;
            notes.extend(lookup.notes.iter().cloned());
            candidates.extend(lookup.candidates.iter().map(|f| f.ip));
        }
        if candidates.is_empty() && t.sources.contains(&AddressSource::Dns) {
            if let Some(hop) = &hop {
                notes.push(format!(
                    "dns: `{}` is not resolved here: the guest is behind `{}`",
                    t.dns_name,
                    hop.display()
                ));
            } else {
                match (t.dns_name, 22).to_socket_addrs() {
                    Ok(addrs) => candidates.extend(addrs.map(|a| a.ip())),
                    Err(e) => notes.push(format!("dns: {}: {e}", t.dns_name)),
                }
            }
        }
        candidates.extend(t.known.filter(|k| !candidates.contains(k)));
        // A re-created guest (same MAC, new DHCP client id) may still have its old lease listed:
        // the pinned host key tells which address is really this guest.
        candidates.dedup();
        reporter.stage(&match candidates.first() {
            None => format!("`{}`: waiting for an address", t.domain),
            Some(ip) => format!("`{}`: waiting for SSH on {ip}", t.domain),
        });
        for ip in candidates {
            match ssh_answers(data, &t.login, ip, hop.as_ref()) {
                Ok(notes) => return Ok((ip, notes)),
                Err(e) => {
                    // A missing key or a missing `ssh` does not fix itself while we wait.
                    if e.downcast_ref::<ProofError>()
                        .is_some_and(|p| p.kind.is_permanent())
                    {
                        bail!("cannot prove the host key of `{}` at {ip}: {e:#}", t.domain);
                    }
                    notes.push(format!("ssh {ip}: {e:#}"))
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "`{}` did not answer on SSH within {}s (`wait_timeout`): {}; its serial console shows \
                 how far it booted: `virsh -c {} console {}`",
                t.domain,
                t.timeout.as_secs(),
                notes.join("; "),
                shell_words::quote(hv.uri()),
                shell_words::quote(t.domain)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The guest at `ip` proves it holds the host key pinned for `login.alias`: an SSH server answers,
/// and a login as `login.user` with `login.identity` completes with strict checking against
/// virtup's known_hosts only, through `hop` when the guest is behind a remote hypervisor. The error
/// says which step failed ("connection refused", "host key mismatch: …", "auth failed: …"). `Ok`
/// holds the notes of the guest's first boot ([`virtup_guest::ssh::notes`]) still in its /run.
pub fn ssh_answers(
    data: &DataDir,
    login: &Login,
    ip: IpAddr,
    hop: Option<&Hop>,
) -> Result<Vec<String>> {
    // A cheap look first, so that a guest still booting costs no ssh process per poll; a guest
    // behind a remote hypervisor cannot be looked at from here.
    if hop.is_none() {
        banner_seen(ip)?;
    }
    let known_hosts = data.known_hosts_file();
    if virtup_core::KnownHosts::load(&known_hosts)?
        .get(login.alias)
        .is_none()
    {
        bail!(
            "no pinned host key for `{}` in `{}`",
            login.alias,
            known_hosts.display()
        );
    }
    Ok(virtup_guest::ssh::Proof {
        known_hosts: &known_hosts,
        alias: login.alias,
        user: login.user,
        identity: login.identity,
        address: ip,
        hop,
        timeout: PROOF_TIMEOUT,
    }
    .run()?)
}

/// An SSH server's banner answers on port 22 of `ip`.
fn banner_seen(ip: IpAddr) -> Result<()> {
    let addr = SocketAddr::new(ip, 22);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| anyhow!("{}", connect_error(&e)))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut banner = [0u8; 4];
    stream
        .read_exact(&mut banner)
        .map_err(|e| anyhow!("no SSH banner: {}", connect_error(&e)))?;
    if &banner != b"SSH-" {
        bail!("not an SSH server");
    }
    Ok(())
}

/// An IO error of the pre-check in the proof's words ("connection refused").
fn connect_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let kind = match e.kind() {
        ErrorKind::ConnectionRefused => Refusal::ConnectionRefused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Refusal::ConnectionTimedOut,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof => {
            Refusal::ConnectionClosed
        }
        _ if e.raw_os_error() == Some(113) => Refusal::NoRoute,
        _ => return format!("no connection: {e}"),
    };
    kind.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_read_like_the_proofs() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            connect_error(&Error::from(ErrorKind::ConnectionRefused)),
            "connection refused"
        );
        assert_eq!(
            connect_error(&Error::from(ErrorKind::TimedOut)),
            "connection timed out"
        );
        assert_eq!(
            connect_error(&Error::from_raw_os_error(113)),
            "no route to host"
        );
        assert_eq!(
            connect_error(&Error::from(ErrorKind::UnexpectedEof)),
            "connection closed"
        );
    }
}
