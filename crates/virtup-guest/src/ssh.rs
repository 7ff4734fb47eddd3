//! `ssh` as proof that a guest is the one virtup pinned: a completed login with virtup's user key.
//!
//! `ssh-keyscan` only shows which public key a server *offers*, and anyone can offer a copied public
//! key. A completed SSH login needs the server to sign the key exchange with the private half of the
//! host key, and with `StrictHostKeyChecking=yes` against a known_hosts file that holds virtup's pin
//! only (no system-wide file, no user config), ssh refuses any other key. So the proof's login
//! exiting 0 proves both the host key and that virtup's user key logs in; what its command prints
//! is the first boot's notes ([`crate::firstboot::NOTES_PATH`]).
//!
//! [`pinned_host_key_options`] is the one definition of "verify the pinned key" that every SSH
//! option set virtup builds (the proof, the inventory, `virt-up --login`) starts from.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Cmd, CmdError};

/// The options that make ssh accept exactly the host key virtup pinned for `alias` in `known_hosts`:
/// strict checking, virtup's file as the only user file, and no system-wide file, so that an entry in
/// `/etc/ssh/ssh_known_hosts` can never vouch for an instance.
pub fn pinned_host_key_options(known_hosts: &Path, alias: &str) -> Vec<String> {
    vec![
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        format!("HostKeyAlias={alias}"),
    ]
}

/// The hypervisor of a remote libvirt URI reached over SSH (`qemu+ssh://[user@]host[:port]/…`): the
/// first hop to its guests, whose addresses (often a NAT network's) only the hypervisor can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The URI's `keyfile=` parameter, which libvirt's own SSH transport logs in with.
    pub keyfile: Option<PathBuf>,
    /// The URI tells libvirt not to verify the hypervisor's host key (`no_verify=1`, libssh's
    /// `known_hosts_verify=auto|ignore`): [`Hop::check_verified`] refuses it.
    pub unverified: bool,
}

impl Hop {
    /// The hop of `uri` when its transport is SSH (`ssh`, `libssh`, `libssh2`) and it names a host.
    pub fn from_uri(uri: &str) -> Option<Hop> {
        let (scheme, rest) = uri.split_once("://")?;
        let transport = scheme.split_once('+')?.1;
        if !matches!(transport, "ssh" | "libssh" | "libssh2") {
            return None;
        }
        let (authority, query) = match rest.split_once('?') {
            Some((before, query)) => (before.split('/').next()?, query),
            None => (rest.split('/').next()?, ""),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, hp)) => (Some(percent_decoded(user)).filter(|u| !u.is_empty()), hp),
            None => (None, authority),
        };
        // `[v6 address]:port` or `host:port`.
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            Some(p) if !p.is_empty() => Some(p.parse().ok()?),
            _ => None,
        };
        // As libvirt reads parameters: names without case, `+` for a space, the last value wins.
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    percent_decoded(&v.replace('+', " ")),
                )
            })
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let keyfile = param("keyfile")
            .filter(|k| !k.is_empty())
            .map(PathBuf::from);
        // libvirt's own transport then takes any host key, and writes it where the hop would read it.
        let unverified = match transport {
            "ssh" => param("no_verify").is_some_and(|v| v != "0"),
            _ => {
                param("known_hosts_verify").is_some_and(|v| v != "normal")
                    || param("no_verify").is_some_and(|v| v != "0")
            }
        };
        Some(Hop {
            user,
            host: host.to_owned(),
            port,
            keyfile,
            unverified,
        })
    }

    /// Refuses a hop whose host key libvirt was told not to verify: virtup never trusts a
    /// hypervisor on first use, on either hop.
    pub fn check_verified(&self, uri: &str) -> Result<(), String> {
        if self.unverified {
            return Err(format!(
                "invalid value for `uri`: `{uri}` turns off host key verification \
                 (`no_verify` or `known_hosts_verify`); virtup never trusts a hypervisor's key on \
                 first use: add the key to your known_hosts and drop the parameter"
            ));
        }
        Ok(())
    }

    /// `[user@]host[:port]`, as the hop is shown to people.
    pub fn display(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{user}{host}:{p}"),
            None => format!("{user}{host}"),
        }
    }

    /// The `ProxyCommand` that carries a guest connection through the hypervisor:
    /// `ssh -o BatchMode=yes -o StrictHostKeyChecking=yes … -W [%h]:%p -- HOST`, shell-quoted.
    ///
    /// The hop reads the user's own SSH configuration and known_hosts, where libvirt's SSH transport
    /// already needed the hypervisor's key, and checks that key strictly: a hypervisor whose key is
    /// not known is refused, never trusted on first use. (`ProxyJump` cannot take options for the
    /// jump connection, and under the guest connection's `-F /dev/null` it would read no config.)
    pub fn proxy_command(&self) -> String {
        // ssh expands `%` tokens in the whole command before the shell sees it.
        let escape = |s: &str| s.replace('%', "%%");
        let mut argv = self.ssh_argv(escape);
        // Brackets keep an IPv6 guest address apart from the port; `--` keeps the host an operand.
        argv.extend([
            "-W".into(),
            "[%h]:%p".into(),
            "--".into(),
            escape(&self.host),
        ]);
        shell_words::join(argv)
    }

    /// `ssh` and the hop's options, up to the destination; `escape` is applied to what the URI gave.
    fn ssh_argv(&self, escape: impl Fn(&str) -> String) -> Vec<String> {
        let mut argv: Vec<String> = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ControlPath=none",
            "-o",
        ]
        .map(String::from)
        .into();
        argv.push(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
        if let Some(port) = self.port {
            argv.extend(["-p".into(), port.to_string()]);
        }
        if let Some(key) = &self.keyfile {
            argv.extend(["-i".into(), escape(&key.display().to_string())]);
        }
        if let Some(user) = &self.user {
            argv.extend(["-l".into(), escape(user)]);
        }
        argv
    }

    /// Logs in to the hypervisor the way the hop does (`ssh … -- HOST true`): a hop that cannot work
    /// (an unknown or changed host key, a refused login) is told apart from a guest still booting,
    /// and named, before any wait.
    pub fn check(&self, timeout: Duration) -> Result<(), ProofError> {
        let argv = self.check_argv();
        let mut cmd = Cmd::new(&argv[0]);
        cmd.args(&argv[1..]).timeout(timeout);
        match cmd.output_unchecked() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(self.named(diagnose(
                out.status.code(),
                &String::from_utf8_lossy(&out.stderr),
            ))),
            Err(e) => Err(self.named(ProofError::new(Refusal::Spawn, e.to_string()))),
        }
    }

    /// What [`Hop::check`] runs: the hop's own options and checks, then `-- HOST true`.
    fn check_argv(&self) -> Vec<String> {
        let mut argv = self.ssh_argv(str::to_owned);
        // A `RemoteCommand` of the user's config for this host would refuse `true`.
        argv.extend(["-o", "RemoteCommand=none", "-n", "-T", "--"].map(String::from));
        argv.extend([self.host.clone(), "true".into()]);
        argv
    }

    /// A refusal of the hop, saying that it was the hypervisor's connection that failed.
    fn named(&self, e: ProofError) -> ProofError {
        ProofError {
            detail: format!("hypervisor `{}`: {}", self.display(), e.detail),
            ..e
        }
    }

    /// `-o ProxyCommand=…` for an ssh option list.
    pub fn options(&self) -> [String; 2] {
        [
            "-o".into(),
            format!("ProxyCommand={}", self.proxy_command()),
        ]
    }
}

/// A URI component with its `%XX` escapes decoded, as libvirt reads it; a broken escape stays as it is.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One login to prove: `user@address`, with `identity`, against the key pinned for `alias`.
#[derive(Debug, Clone)]
pub struct Proof<'a> {
    pub known_hosts: &'a Path,
    pub alias: &'a str,
    pub user: &'a str,
    /// virtup's private key for `user`.
    pub identity: &'a Path,
    pub address: IpAddr,
    /// The hypervisor to go through when the guest's address is only reachable from there.
    pub hop: Option<&'a Hop>,
    /// Bound on the whole ssh run (connect, key exchange, login, [`PROOF_COMMAND`]).
    pub timeout: Duration,
}

/// What the proof runs once logged in: prints the first boot's notes, if any, and exits 0. Given
/// to `sh` whole, in single quotes, which every login shell (bash, dash, fish, csh, rbash) passes
/// on as one word: the redirect and the exit are `sh`'s to read, not the user's shell's.
pub const PROOF_COMMAND: &str = "sh -c 'cat /run/virtup-firstboot.notes 2>/dev/null; exit 0'";

/// The most notes a proof returns, and the most characters of each: a guest's text, bounded.
const MAX_NOTES: usize = 20;
const MAX_NOTE_CHARS: usize = 300;

/// The first boot's notes in what the proof's command printed: the lines after
/// [`crate::firstboot::NOTE_PREFIX`] only (a shell startup file may print more), in printable
/// ASCII only (a note names serials, paths, devices and addresses; no escape, bidi override or
/// zero-width character of a guest's reaches a terminal), at most [`MAX_NOTES`] of
/// [`MAX_NOTE_CHARS`] characters each.
pub fn notes(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(crate::firstboot::NOTE_PREFIX))
        .map(|l| {
            l.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(MAX_NOTE_CHARS)
                .collect::<String>()
        })
        .filter(|l| !l.trim().is_empty())
        .take(MAX_NOTES)
        .collect()
}

/// Seconds ssh may take to connect (TCP and the SSH banner) before it gives up on its own.
const CONNECT_TIMEOUT_SECS: u64 = 5;

impl Proof<'_> {
    /// `ssh -F /dev/null <pinned options> -o BatchMode=yes … -i KEY -l USER ADDRESS <PROOF_COMMAND>`.
    ///
    /// `-F /dev/null`: neither `~/.ssh/config` nor `/etc/ssh/ssh_config` may redirect, multiplex or
    /// vouch; `IdentitiesOnly`/`IdentityAgent=none`: virtup's key and nothing from an agent;
    /// `BatchMode`: never a prompt.
    pub fn command(&self) -> Cmd {
        let mut cmd = Cmd::new("ssh");
        cmd.args(["-F", "/dev/null"])
            .args(pinned_host_key_options(self.known_hosts, self.alias))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "UpdateHostKeys=no",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "-o",
                "ConnectionAttempts=1",
                "-o",
            ])
            .arg(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"))
            .args(self.hop.iter().flat_map(|h| h.options()))
            .args(["-o", "LogLevel=ERROR", "-n", "-T", "-i"])
            .arg(self.identity)
            .arg("-l")
            .arg(self.user)
            .arg(self.address.to_string())
            .arg(PROOF_COMMAND)
            .timeout(self.timeout);
        match self.hop {
            // The guest login uses virtup's key only (`IdentityAgent=none`); the hop to the
            // hypervisor may need the user's agent, as libvirt's transport did. ssh runs a
            // ProxyCommand with `$SHELL`: the quoting is for a POSIX shell.
            Some(_) => cmd.env("SHELL", "/bin/sh"),
            None => cmd.env_remove("SSH_AUTH_SOCK"),
        };
        cmd
    }

    /// Runs the proof: `Ok` only when the login completed against the pinned key, with the first
    /// boot's notes ([`notes`]).
    pub fn run(&self) -> Result<Vec<String>, ProofError> {
        match std::fs::metadata(self.identity) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(ProofError::new(
                    Refusal::UserKey,
                    format!("`{}` is not a file", self.identity.display()),
                ))
            }
            Err(e) => {
                return Err(ProofError::new(
                    Refusal::UserKey,
                    format!(
                        "`{}`: {}",
                        self.identity.display(),
                        crate::cmd::io_reason(&e)
                    ),
                ))
            }
        }
        match self.command().output_unchecked() {
            Ok(out) if out.status.success() => Ok(notes(&out.stdout)),
            Ok(out) => Err(diagnose(
                out.status.code(),
                &String::from_utf8_lossy(&out.stderr),
            )),
            Err(CmdError::Timeout {
                after, stderr_tail, ..
            }) => Err(ProofError::new(
                Refusal::TimedOut,
                match last_line(&stderr_tail) {
                    Some(l) => format!("no answer within {}s ({l})", after.as_secs()),
                    None => format!("no answer within {}s", after.as_secs()),
                },
            )),
            Err(e) => Err(ProofError::new(Refusal::Spawn, e.to_string())),
        }
    }
}

/// Why a proof failed, in words the wait loop's error can list per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server's host key is not the pinned one (or is of a type with no pinned key).
    HostKeyMismatch,
    /// The host key was right, but the server refused virtup's user key.
    AuthFailed,
    ConnectionRefused,
    ConnectionTimedOut,
    NoRoute,
    /// The server closed or reset the connection before the login (sshd still starting, or overloaded).
    ConnectionClosed,
    /// virtup's user key is missing or unusable.
    UserKey,
    /// The login got through but its command did not exit 0 (a disabled account, a forced command).
    CommandFailed,
    /// The whole ssh run exceeded its bound.
    TimedOut,
    /// `ssh` could not be started at all.
    Spawn,
    Other,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HostKeyMismatch => "host key mismatch",
            Refusal::AuthFailed => "auth failed",
            Refusal::ConnectionRefused => "connection refused",
            Refusal::ConnectionTimedOut => "connection timed out",
            Refusal::NoRoute => "no route to host",
            Refusal::ConnectionClosed => "connection closed",
            Refusal::UserKey => "user key unusable",
            Refusal::CommandFailed => "login works but its command failed",
            Refusal::TimedOut => "ssh timed out",
            Refusal::Spawn => "cannot run ssh",
            Refusal::Other => "ssh failed",
        }
    }

    /// Waiting cannot help: the next attempt fails the same way for a reason on this host.
    pub fn is_permanent(self) -> bool {
        matches!(self, Refusal::UserKey | Refusal::Spawn)
    }
}

/// A failed proof: the kind, and ssh's own words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", .kind.as_str())]
pub struct ProofError {
    pub kind: Refusal,
    pub detail: String,
}

impl ProofError {
    pub fn new(kind: Refusal, detail: impl Into<String>) -> ProofError {
        ProofError {
            kind,
            detail: detail.into(),
        }
    }
}

/// Classifies a failed ssh run by its exit code and stderr. ssh exits 255 for its own errors; any
/// other non-zero code is the remote command's, so the login itself worked.
pub fn diagnose(code: Option<i32>, stderr: &str) -> ProofError {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect();
    let find = |needles: &[&str]| -> Option<&str> {
        lines
            .iter()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .copied()
    };
    let fallback = || last_line(stderr).unwrap_or("no message").to_owned();
    if code.is_some() && code != Some(255) {
        return ProofError::new(
            Refusal::CommandFailed,
            format!(
                "exit status {}: {}",
                code.unwrap_or_default(),
                last_line(stderr).unwrap_or("no message")
            ),
        );
    }
    if let Some(detail) = find(&[
        "Host key verification failed",
        "HOST IDENTIFICATION HAS CHANGED",
    ]) {
        // The specific line ("Host key for X has changed …", "No ED25519 host key is known for X …").
        let specific = find(&[
            "has changed and you have requested",
            "host key is known for",
        ]);
        return ProofError::new(Refusal::HostKeyMismatch, specific.unwrap_or(detail));
    }
    if let Some(l) = find(&[
        "Load key",
        "UNPROTECTED PRIVATE KEY FILE",
        "bad permissions",
        "Identity file",
    ]) {
        return ProofError::new(Refusal::UserKey, l);
    }
    let table: [(&[&str], Refusal); 5] = [
        (
            &["Permission denied", "Too many authentication failures"],
            Refusal::AuthFailed,
        ),
        (&["Connection refused"], Refusal::ConnectionRefused),
        (
            &["Connection timed out", "Operation timed out"],
            Refusal::ConnectionTimedOut,
        ),
        (
            &["No route to host", "Network is unreachable"],
            Refusal::NoRoute,
        ),
        (
            &[
                "Connection closed",
                "Connection reset",
                "kex_exchange_identification",
                "Broken pipe",
            ],
            Refusal::ConnectionClosed,
        ),
    ];
    for (needles, kind) in table {
        if let Some(l) = find(needles) {
            return ProofError::new(kind, l);
        }
    }
    ProofError::new(Refusal::Other, fallback())
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof() -> Proof<'static> {
        Proof {
            known_hosts: Path::new("/d/known_hosts"),
            alias: "web1",
            user: "virt",
            identity: Path::new("/d/sshkeys/virt/id_ed25519"),
            address: "192.168.122.7".parse().unwrap(),
            hop: None,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn hops_come_from_ssh_transports_only() {
        let hop = Hop::from_uri("qemu+ssh://root@hv1.example:2222/system?keyfile=/k/id&no_tty=1")
            .unwrap();
        assert_eq!(
            hop,
            Hop {
                user: Some("root".into()),
                host: "hv1.example".into(),
                port: Some(2222),
                keyfile: Some("/k/id".into()),
                unverified: false,
            }
        );
        assert_eq!(hop.display(), "root@hv1.example:2222");
        let plain = Hop::from_uri("qemu+ssh://hv1/system").unwrap();
        assert_eq!(
            (plain.display(), plain.user, plain.port),
            ("hv1".into(), None, None)
        );
        assert_eq!(
            Hop::from_uri("qemu+libssh2://u@[fd00::2]:22/system")
                .unwrap()
                .display(),
            "u@[fd00::2]:22"
        );
        // As libvirt reads parameters: any case, the last value wins.
        let hop = Hop::from_uri("qemu+ssh://h/system?KeyFile=/a&keyfile=/b+c").unwrap();
        assert_eq!(hop.keyfile, Some("/b c".into()));
        for (uri, refused) in [
            ("qemu+ssh://h/system?no_verify=1", true),
            ("qemu+ssh://h/system?No_Verify=1", true),
            ("qemu+ssh://h/system?no_verify=0", false),
            ("qemu+libssh://h/system?known_hosts_verify=ignore", true),
            ("qemu+libssh://h/system?known_hosts_verify=auto", true),
            ("qemu+libssh://h/system?known_hosts_verify=normal", false),
            ("qemu+ssh://h/system", false),
        ] {
            let check = Hop::from_uri(uri).unwrap().check_verified(uri);
            assert_eq!(check.is_err(), refused, "{uri}: {check:?}");
        }
        for local in [
            "qemu:///system",
            "qemu+tcp://hv1/system",
            "qemu+ssh:///system",
            "test:///default",
            "qemu+ssh://hv1:notaport/system",
        ] {
            assert_eq!(Hop::from_uri(local), None, "{local}");
        }
    }

    #[test]
    fn the_hop_check_logs_in_as_the_hop_does_and_names_the_hypervisor() {
        let hop = Hop::from_uri("qemu+ssh://admin@hv1:2222/system?keyfile=/k/my%20key").unwrap();
        let argv = hop.check_argv();
        // The same options as the ProxyCommand (unescaped: no shell between), so a check that passes
        // means the hop's login and host key check pass too.
        let proxy = shell_words::split(&hop.proxy_command()).unwrap();
        let shared = proxy.iter().position(|a| a == "-W").unwrap();
        assert_eq!(argv[..shared], proxy[..shared]);
        assert_eq!(
            argv[shared..],
            ["-o", "RemoteCommand=none", "-n", "-T", "--", "hv1", "true"]
        );
        let e = hop.named(diagnose(Some(255), "Host key verification failed.\n"));
        assert_eq!(e.kind, Refusal::HostKeyMismatch);
        assert!(e.detail.starts_with("hypervisor `"), "{}", e.detail);
        assert!(e.detail.contains("hv1"), "{}", e.detail);
    }

    #[test]
    fn the_hop_checks_the_hypervisors_key_strictly_and_survives_the_shell() {
        let hop =
            Hop::from_uri("qemu+ssh://ad%20min@hv1:2222/system?keyfile=/k/my%20key%25s").unwrap();
        let command = hop.proxy_command();
        assert_eq!(
            shell_words::split(&command).unwrap(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ControlPath=none",
                "-o",
                "ConnectTimeout=5",
                "-p",
                "2222",
                "-i",
                "/k/my key%%s",
                "-l",
                "ad min",
                "-W",
                "[%h]:%p",
                "--",
                "hv1",
            ]
        );
        let mut p = proof();
        p.hop = Some(&hop);
        let argv = p.command().argv();
        let at = argv
            .iter()
            .position(|a| a.starts_with("ProxyCommand="))
            .unwrap();
        assert_eq!(argv[at - 1], "-o");
        assert_eq!(argv[at], format!("ProxyCommand={command}"));
        // The guest connection itself still reads no config and trusts only the pin.
        assert_eq!(&argv[1..3], ["-F", "/dev/null"]);
    }

    #[test]
    fn pinned_options_trust_virtups_file_only() {
        assert_eq!(
            pinned_host_key_options(Path::new("/d/known_hosts"), "web1"),
            [
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/d/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "HostKeyAlias=web1",
            ]
        );
    }

    #[test]
    fn proof_argv_logs_in_with_virtups_key_against_the_pin_only() {
        let cmd = proof().command();
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(
            cmd.argv(),
            [
                "ssh",
                "-F",
                "/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/d/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "HostKeyAlias=web1",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "UpdateHostKeys=no",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "-o",
                "ConnectionAttempts=1",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                "-n",
                "-T",
                "-i",
                "/d/sshkeys/virt/id_ed25519",
                "-l",
                "virt",
                "192.168.122.7",
                PROOF_COMMAND,
            ]
        );
        assert_eq!(cmd.get_timeout(), Some(Duration::from_secs(30)));
        // An agent never offers keys of its own.
        assert_eq!(cmd.get_env("SSH_AUTH_SOCK"), Some(None));
    }

    #[test]
    fn the_proof_reads_the_first_boots_notes_and_only_them() {
        assert!(PROOF_COMMAND.contains(crate::firstboot::NOTES_PATH));
        let printed = format!(
            "Welcome!\n{p}data disk virtup-data2 (/dev/vdc): /var/lib/apt is in use\n\
             {p}\n{p}a\u{1b}[31mred\u{7}\u{202e}\u{200b}\nvirtup-firstbootx: not a note\n{p}{long}\n",
            p = crate::firstboot::NOTE_PREFIX,
            long = "x".repeat(400)
        );
        let notes = notes(printed.as_bytes());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(
            notes[0],
            "data disk virtup-data2 (/dev/vdc): /var/lib/apt is in use"
        );
        assert_eq!(notes[1], "a[31mred");
        assert_eq!(notes[2].len(), MAX_NOTE_CHARS);
        let many = crate::firstboot::NOTE_PREFIX.repeat(2) + "\n";
        assert_eq!(super::notes(many.repeat(50).as_bytes()).len(), MAX_NOTES);
        assert!(super::notes(b"").is_empty());
    }

    #[test]
    fn proof_argv_never_turns_checking_off() {
        let argv = proof().command().argv().join(" ");
        // Spelled in parts: no file of the project holds a spelling that turns checking off (lab_site.rs).
        for bad in [
            concat!("StrictHostKeyChecking=", "no"),
            "accept-new",
            concat!("UserKnownHostsFile=", "/dev/null"),
        ] {
            assert!(!argv.contains(bad), "{argv}");
        }
    }

    #[test]
    fn ipv6_addresses_are_passed_bare() {
        let mut p = proof();
        p.address = "fe80::1".parse().unwrap();
        let argv = p.command().argv();
        assert_eq!(argv[argv.len() - 2], "fe80::1");
    }

    #[test]
    fn a_missing_user_key_fails_before_ssh_runs() {
        let mut p = proof();
        p.identity = Path::new("/nonexistent/virtup/id_ed25519");
        let e = p.run().unwrap_err();
        assert_eq!(e.kind, Refusal::UserKey);
        assert!(e.kind.is_permanent());
        assert!(
            e.to_string()
                .starts_with("user key unusable: `/nonexistent/virtup/id_ed25519`"),
            "{e}"
        );
    }

    // What OpenSSH 9.2 prints with LogLevel=ERROR, per failure.
    const CHANGED: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r
Someone could be eavesdropping on you right now (man-in-the-middle attack)!\r
It is also possible that a host key has just been changed.\r
The fingerprint for the ED25519 key sent by the remote host is\r
SHA256:abc.\r
Please contact your system administrator.\r
Add correct host key in /d/known_hosts to get rid of this message.\r
Offending ED25519 key in /d/known_hosts:3\r
Host key for web1 has changed and you have requested strict checking.\r
Host key verification failed.\r
";

    #[test]
    fn stderr_is_classified() {
        let cases: [(&str, Refusal, &str); 9] = [
            (
                CHANGED,
                Refusal::HostKeyMismatch,
                "Host key for web1 has changed and you have requested strict checking.",
            ),
            (
                "No ED25519 host key is known for web1 and you have requested strict checking.\r\nHost key verification failed.\r\n",
                Refusal::HostKeyMismatch,
                "No ED25519 host key is known for web1 and you have requested strict checking.",
            ),
            (
                "virt@192.168.122.7: Permission denied (publickey).\r\n",
                Refusal::AuthFailed,
                "virt@192.168.122.7: Permission denied (publickey).",
            ),
            (
                "ssh: connect to host 192.168.122.7 port 22: Connection refused\r\n",
                Refusal::ConnectionRefused,
                "ssh: connect to host 192.168.122.7 port 22: Connection refused",
            ),
            (
                "ssh: connect to host 192.168.122.7 port 22: Connection timed out\r\n",
                Refusal::ConnectionTimedOut,
                "ssh: connect to host 192.168.122.7 port 22: Connection timed out",
            ),
            (
                "ssh: connect to host 192.168.122.7 port 22: No route to host\r\n",
                Refusal::NoRoute,
                "ssh: connect to host 192.168.122.7 port 22: No route to host",
            ),
            (
                "kex_exchange_identification: read: Connection reset by peer\r\nConnection reset by 192.168.122.7 port 22\r\n",
                Refusal::ConnectionClosed,
                "kex_exchange_identification: read: Connection reset by peer",
            ),
            (
                "Load key \"/d/sshkeys/virt/id_ed25519\": invalid format\r\nvirt@192.168.122.7: Permission denied (publickey).\r\n",
                Refusal::UserKey,
                "Load key \"/d/sshkeys/virt/id_ed25519\": invalid format",
            ),
            ("something new\r\n", Refusal::Other, "something new"),
        ];
        for (stderr, kind, detail) in cases {
            let e = diagnose(Some(255), stderr);
            assert_eq!((e.kind, e.detail.as_str()), (kind, detail), "{stderr}");
        }
        assert_eq!(
            diagnose(Some(255), CHANGED).to_string(),
            "host key mismatch: Host key for web1 has changed and you have requested strict checking."
        );
        assert_eq!(diagnose(Some(255), "").detail, "no message");
    }

    #[test]
    fn a_remote_exit_status_means_the_login_itself_worked() {
        let e = diagnose(Some(1), "This account is currently not available.\n");
        assert_eq!(e.kind, Refusal::CommandFailed);
        assert_eq!(
            e.to_string(),
            "login works but its command failed: exit status 1: This account is currently not available."
        );
    }
}
