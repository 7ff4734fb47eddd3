//! Reaching a booted guest: address sources polled in order, then the SSH banner with the pinned host key.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use virtup_core::config::AddressSource as ConfigSource;
use virtup_core::DataDir;
use virtup_guest::Cmd;
use virtup_libvirt::{AddressSource, Hypervisor};

/// A guest to wait for.
pub struct Target<'a> {
    /// libvirt domain name.
    pub domain: &'a str,
    /// Name of its pinned key in virtup's known_hosts (`HostKeyAlias`).
    pub alias: &'a str,
    pub mac: Option<&'a str>,
    pub sources: &'a [ConfigSource],
    /// Name to resolve for the `dns` source.
    pub dns_name: &'a str,
    pub timeout: Duration,
}

/// Polls the address sources in order, then the SSH banner and the pinned host key, until `timeout`.
/// On timeout the error says what each source saw, e.g. "lease: no lease for 52:54:00:…; agent: …".
pub fn wait_for_ssh(hv: &Hypervisor, data: &DataDir, t: &Target) -> Result<IpAddr> {
    let deadline = Instant::now() + t.timeout;
    let lib_sources: Vec<AddressSource> = t
        .sources
        .iter()
        .filter_map(|s| match s {
            ConfigSource::Lease => Some(AddressSource::Lease),
            ConfigSource::Agent => Some(AddressSource::Agent),
            ConfigSource::Arp => Some(AddressSource::Arp),
            ConfigSource::Dns => None,
        })
        .collect();
    loop {
        let mut notes = Vec::new();
        let mut candidates: Vec<IpAddr> = Vec::new();
        if !lib_sources.is_empty() {
            let lookup = hv.find_address(t.domain, t.mac, &lib_sources)?;
            notes.extend(lookup.notes.iter().cloned());
            candidates.extend(lookup.candidates.iter().map(|f| f.ip));
        }
        if candidates.is_empty() && t.sources.contains(&ConfigSource::Dns) {
            match (t.dns_name, 22).to_socket_addrs() {
                Ok(addrs) => candidates.extend(addrs.map(|a| a.ip())),
                Err(e) => notes.push(format!("dns: {}: {e}", t.dns_name)),
            }
        }
        // A re-created guest (same MAC, new DHCP client id) may still have its old lease listed:
        // the pinned host key tells which address is really this guest.
        candidates.dedup();
        crate::cli::progress::stage(&match candidates.first() {
            None => format!("`{}`: waiting for an address", t.domain),
            Some(ip) => format!("`{}`: waiting for SSH on {ip}", t.domain),
        });
        for ip in candidates {
            match ssh_answers(data, t.alias, ip) {
                Ok(()) => return Ok(ip),
                Err(e) => notes.push(format!("ssh {ip}: {e:#}")),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "`{}` did not answer on SSH within {}s (`wait_timeout`): {}",
                t.domain,
                t.timeout.as_secs(),
                notes.join("; ")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The SSH server at `ip` answers and presents exactly the host key pinned for `alias`.
pub fn ssh_answers(data: &DataDir, alias: &str, ip: IpAddr) -> Result<()> {
    let addr = SocketAddr::new(ip, 22);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).context("no connection")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut banner = [0u8; 4];
    stream.read_exact(&mut banner).context("no banner")?;
    if &banner != b"SSH-" {
        bail!("not an SSH server");
    }
    drop(stream);
    let pinned = virtup_core::KnownHosts::load(&data.known_hosts_file())?
        .get(alias)
        .ok_or_else(|| anyhow!("no pinned host key for `{alias}`"))?;
    let want = pinned
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut scan = Cmd::new("ssh-keyscan");
    scan.args(["-T", "5", "-t", "ed25519", &ip.to_string()])
        .timeout(Duration::from_secs(15));
    let out = scan.output().context("ssh-keyscan failed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let seen: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    if seen.contains(&want.as_str()) {
        Ok(())
    } else if seen.is_empty() {
        bail!("no host key offered yet")
    } else {
        bail!("host key does not match the pinned one")
    }
}
