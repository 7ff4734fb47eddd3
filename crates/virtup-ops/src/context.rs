//! What every operation starts from: paths, config and the data dir of one run, the lock bounds, and the settings every request resolves the same way.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use virtup_core::{validate, Config, DataDir, Fields, Paths};

/// How long a run waits for another run holding the same lock (a template build takes minutes under TCG).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(3600);
/// Short read-modify-write of shared files (macaddrs.json, known_hosts).
pub const SHORT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds to wait for an address and an SSH login against the pinned host key; generous because guests may run under TCG.
pub const DEFAULT_WAIT_TIMEOUT_SECS: u64 = 600;

/// Paths, config and the (possibly not yet existing) data dir of one run. Creating it has no side effect.
pub struct Context {
    pub paths: Paths,
    pub config: Config,
    /// `DataDir::at`: no IO. `open_data_dir` creates it when a real run is about to change something.
    pub data: DataDir,
}

impl Context {
    pub fn load() -> Result<Context> {
        let paths = Paths::from_env()?;
        let config = Config::load(&paths)?;
        let data = DataDir::at(&paths.data_dir);
        Ok(Context {
            paths,
            config,
            data,
        })
    }

    /// Removes what killed runs left in an existing data dir (temp files, scratch dirs), also when this
    /// run has nothing to change: after a kill the next run often finds its work done. Real runs only.
    pub fn tidy(&self) -> Result<()> {
        if self.paths.data_dir.is_dir() {
            self.data.sweep().with_context(|| {
                format!(
                    "failed to tidy data dir `{}`",
                    self.paths.data_dir.display()
                )
            })?;
        }
        Ok(())
    }

    /// The data dir, created (0700) on first use; only real runs call this.
    pub fn open_data_dir(&self) -> Result<DataDir> {
        DataDir::open(&self.paths.data_dir).with_context(|| {
            format!(
                "failed to open data dir `{}`",
                self.paths.data_dir.display()
            )
        })
    }

    /// The directory of a domain's generated secrets (0700; files in it 0600).
    pub fn secrets_dir(&self, domain: &str) -> PathBuf {
        self.paths.data_dir.join("secrets").join(domain)
    }
}

/// Validates the merged settings that come from config files too, naming the option.
pub fn validate_fields(f: &Fields) -> Result<()> {
    if let Some(size) = &f.size {
        validate::parse_size("size", size)?;
    }
    if let Some(user) = &f.username {
        validate::user_name("user", user)?;
    }
    if let Some(domain) = &f.dns_domain {
        validate::dns_domain("dns_domain", domain)?;
    }
    for (option, value) in [("pool", &f.pool), ("network", &f.network)] {
        if let Some(v) = value {
            validate::name(option, v)?;
        }
    }
    for (option, value) in [
        ("os_variant", &f.os_variant),
        ("os_type", &f.os_type),
        ("arch", &f.arch),
        ("graphics", &f.graphics),
    ] {
        if let Some(v) = value {
            validate::tool_word(option, v)?;
        }
    }
    Ok(())
}

/// The libvirt URI: option or config, else `LIBVIRT_DEFAULT_URI`, else `qemu:///system`.
pub fn uri(fields: &Fields, paths: &Paths) -> String {
    fields
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone())
}

/// The hypervisor of a record that names none: virt-up 2.2.0's metadata has no `uri`, and its
/// instances live where virt-up connected, `[common]`'s `uri` or libvirt's default (as the inventory
/// reads them).
pub fn default_uri(config: &Config, paths: &Paths) -> String {
    config
        .common
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone())
}

/// Refuses a URI with a password in it (virtup shows the URI in its results, the inventory and the
/// ssh command line of a hop; the error never repeats it) and one that would trust a hypervisor's
/// host key on first use (see [`virtup_guest::ssh::Hop::check_verified`]).
pub fn check_uri(uri: &str) -> Result<()> {
    if let Some(host) = virtup_libvirt::uri_password_host(uri) {
        anyhow::bail!(
            "`uri` for `{host}` holds a password (`user:password@`): virtup would show it in its \
             results, the inventory and command lines; give the user alone and log in with an ssh key"
        );
    }
    match virtup_guest::ssh::Hop::from_uri(uri) {
        Some(hop) => hop.check_verified(uri).map_err(anyhow::Error::msg),
        None => Ok(()),
    }
}

/// A URI as libvirt reads it: `qemu:///system`, `qemu://localhost/system` and `qemu:///system/`
/// are one; query parameters in any order.
fn normal_uri(uri: &str) -> String {
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let (scheme, rest) = base.split_once("://").unwrap_or(("", base));
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.trim_end_matches('/');
    // A local transport's empty host and `localhost` are this machine.
    let rest = match rest.strip_prefix("localhost") {
        Some(path) if !scheme.contains('+') && path.starts_with('/') => path,
        _ => rest,
    };
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_unstable();
    format!("{scheme}://{rest}?{}", params.join("&"))
}

/// Whether two URIs name the same hypervisor, as libvirt reads them (see [`normal_uri`]).
pub fn same_hypervisor(a: &str, b: &str) -> bool {
    a == b || normal_uri(a) == normal_uri(b)
}

/// The key of template `template`'s records on hypervisor `uri` (ownership ledger, lock, hold,
/// pinned host key, secrets, inventory host name). On this machine's hypervisors it is the domain
/// name, as it always was. On a remote one it is `<domain>@<id>`, `id` a digest of the URI's normal
/// form, so the same template name can live on several remote hypervisors, each with records of its
/// own that a run or a delete on another never touches.
pub fn template_scope(template: &str, uri: &str) -> String {
    let domain = virtup_core::template::domain_name(template);
    let normal = normal_uri(uri);
    let authority = normal.split_once("://").map_or("", |(_, rest)| rest);
    if authority.starts_with('/') {
        return domain;
    }
    let id = virtup_core::digest::InputDigest::new("virtup-hypervisor-v1")
        .field("uri", &normal)
        .finish();
    virtup_core::ownership::remote_scope(&domain, &id[..8])
}

/// Where the ledger of `scope` (a template's or instance's volumes) records volumes: whether on
/// the hypervisor `uri`, and on which others. An object lives on one hypervisor, since its name
/// keys its records.
pub struct Recorded {
    pub here: bool,
    pub elsewhere: Vec<String>,
}

pub fn recorded(data: &DataDir, scope: &str, uri: &str) -> Recorded {
    let mut all: Vec<String> = virtup_core::ownership::Ledger::read(data, scope)
        .map(|l| l.volumes.into_iter().map(|v| v.uri).collect())
        .unwrap_or_default();
    let here = all.iter().any(|u| same_hypervisor(u, uri));
    all.retain(|u| !same_hypervisor(u, uri));
    all.sort();
    all.dedup();
    Recorded {
        here,
        elsewhere: all,
    }
}

/// The hypervisor a URI reaches, to catch one hypervisor spelled two ways: the machine (`""` for this
/// one: no host, or `localhost`, `127.0.0.1`, `::1` on SSH's port), the host in lowercase with its port
/// unless it is SSH's 22, then the daemon's path (`/system`, `/session`); a login names the hypervisor
/// only for `/session`, a per-user daemon.
fn reached_host(uri: &str) -> String {
    let (authority, path) = uri.split_once("://").map_or(("", ""), |(_, rest)| {
        let rest = rest.split('?').next().unwrap_or("");
        rest.split_once('/')
            .map_or((rest, ""), |(a, p)| (a, p.trim_end_matches('/')))
    });
    let (login, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6.split_once(']').unwrap_or((v6, ""));
            (h, rest.strip_prefix(':').unwrap_or(""))
        }
        None => host_port.split_once(':').unwrap_or((host_port, "")),
    };
    let host = host.to_ascii_lowercase();
    let default_port = matches!(port, "" | "22");
    let machine = match host.as_str() {
        "" | "localhost" | "127.0.0.1" | "::1" if default_port => String::new(),
        _ if default_port => host,
        _ => format!("{host}:{port}"),
    };
    let login = if path.ends_with("session") { login } else { "" };
    format!("{login}@{machine}/{path}")
}

/// A URI this data dir recorded template `template` on that may name the same hypervisor as `uri` in
/// another spelling (another login, the default port written out, this machine over SSH): its records
/// would be kept apart from `uri`'s (see [`template_scope`]), and one pool would have two owners.
pub fn template_spelled_otherwise(data: &DataDir, template: &str, uri: &str) -> Option<String> {
    let scope = template_scope(template, uri);
    let host = reached_host(uri);
    template_uris(data, template).into_iter().find(|other| {
        !same_hypervisor(other, uri)
            && template_scope(template, other) != scope
            && reached_host(other) == host
    })
}

/// Every hypervisor this data dir's records put template `template` on, in all its scopes (see
/// [`template_scope`]), one URI per hypervisor.
pub fn template_uris(data: &DataDir, template: &str) -> Vec<String> {
    use virtup_core::ownership::Ledger;
    let domain = virtup_core::template::domain_name(template);
    let mut uris: Vec<String> = Vec::new();
    let scopes = Ledger::scopes(data).unwrap_or_default();
    let ours = scopes.iter().filter(|s| {
        s.as_str() == domain
            || s.strip_prefix(domain.as_str())
                .is_some_and(|rest| rest.starts_with('@'))
    });
    for scope in ours {
        // An unreadable ledger proves nothing; the run that uses it names it.
        for v in Ledger::read(data, scope)
            .map(|l| l.volumes)
            .unwrap_or_default()
        {
            if !uris.iter().any(|u| same_hypervisor(u, &v.uri)) {
                uris.push(v.uri);
            }
        }
    }
    uris.sort();
    uris
}

/// How long this call waited for other runs: the collisions the proving ground reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Waited {
    pub lock: Duration,
    pub hold: Duration,
}

#[cfg(test)]
mod tests {
    use super::{check_uri, reached_host, same_hypervisor, template_scope};

    #[test]
    fn a_uri_with_a_password_is_refused_without_repeating_it() {
        // Each with its password, which the error must not contain, and the host it must name.
        for (uri, password, host) in [
            ("qemu+ssh://root:s3cret@h2/system", "s3cret", "h2"),
            (
                "qemu+tcp://admin:s3cret@h2/system?no_verify=1",
                "s3cret",
                "h2",
            ),
            ("qemu+ssh://root:@h2/system", "root:@", "h2"),
            ("qemu+ssh://root:s3/cret@h2/system", "s3/cret", "h2"),
            ("qemu+ssh://root:pa?ss@h2/system", "pa?ss", "h2"),
            ("qemu+ssh://root:p@ss@h2/system", "p@ss", "h2"),
            ("qemu+ssh://root:s#3@h2:2222/system", "s#3", "h2:2222"),
            ("qemu+ssh://root:1234@h2/system", "1234", "h2"),
            ("qemu+ssh://root:2024#Secure@h2/system", "Secure", "h2"),
            ("qemu+ssh://root:1234?x@h2/system", "1234?x", "h2"),
            ("qemu+ssh://alice@corp:s3cret@h2/system", "s3cret", "h2"),
            (
                "qemu+ssh://root:s3cret@[fd00::2]/system?keyfile=/k",
                "s3cret",
                "[fd00::2]",
            ),
        ] {
            let err = check_uri(uri).expect_err(uri).to_string();
            assert!(
                err.contains("`uri`") && err.contains(&format!("`{host}`")),
                "{uri}: {err}"
            );
            assert!(!err.contains(password), "{uri}: {err}");
        }
        // A user alone, a port, an `@` or `:` in the path or the query, and local URIs are not passwords.
        for uri in [
            "qemu:///system",
            "qemu+tcp://admin@h2/system",
            "test:///default",
            "qemu:///system?socket=/run/a:b@c",
            "qemu+ssh://root@h2:2222/system",
            "qemu+ssh://root@h2:2222/system?keyfile=/a:b@c",
            "qemu+ssh://h2:2222/system?keyfile=/a@b",
            "qemu+ssh://h2/system?keyfile=/a:b@c",
            "qemu+ssh://root@[fd00::2]:22/system",
            "qemu+ssh://[fd00::2]/system?keyfile=/k/id@lab",
            "qemu+ssh://[fd00::2]:22/system?keyfile=/k/a:b@lab",
        ] {
            assert!(check_uri(uri).is_ok(), "{uri}");
        }
    }

    #[test]
    fn spellings_of_one_machine_reach_one_host() {
        for (a, b) in [
            ("qemu+ssh://root@h2/system", "qemu+ssh://h2/system"),
            ("qemu+ssh://h2/system", "qemu+ssh://H2:22/system"),
            ("qemu+ssh://localhost/system", "qemu:///system"),
            ("qemu+ssh://root@127.0.0.1/system/", "qemu:///system"),
            ("qemu+ssh://[::1]:22/system", "qemu:///system"),
        ] {
            assert_eq!(reached_host(a), reached_host(b), "{a} vs {b}");
        }
        for (a, b) in [
            ("qemu+ssh://h2/system", "qemu+ssh://h3/system"),
            (
                "qemu+ssh://bastion:2201/system",
                "qemu+ssh://bastion:2202/system",
            ),
            ("qemu+ssh://h2/system", "qemu:///system"),
            // A VM's hypervisor forwarded to a local port is not this machine's.
            ("qemu+ssh://vagrant@127.0.0.1:2222/system", "qemu:///system"),
            // Two daemons on one host, and two users' session daemons.
            ("qemu+ssh://h2/system", "qemu+ssh://h2/session"),
            ("qemu+ssh://alice@h2/session", "qemu+ssh://bob@h2/session"),
            ("qemu:///system", "qemu:///session"),
        ] {
            assert_ne!(reached_host(a), reached_host(b), "{a} vs {b}");
        }
    }

    #[test]
    fn a_template_s_records_are_keyed_per_remote_hypervisor() {
        // This machine's hypervisors keep the domain name, as records always were.
        for uri in [
            "qemu:///system",
            "qemu:///session",
            "qemu://localhost/system",
            "test:///default",
        ] {
            assert_eq!(
                template_scope("debian-12", uri),
                "VIRTUP-debian-12",
                "{uri}"
            );
        }
        let h2 = template_scope("debian-12", "qemu+ssh://root@h2/system");
        assert!(h2.starts_with("VIRTUP-debian-12@"), "{h2}");
        // One hypervisor however spelled; another host or login is another hypervisor.
        assert_eq!(
            h2,
            template_scope("debian-12", "qemu+ssh://root@h2/system/")
        );
        for other in [
            "qemu+ssh://root@h3/system",
            "qemu+ssh://h2/system",
            "qemu+ssh://localhost/system",
        ] {
            assert_ne!(h2, template_scope("debian-12", other), "{other}");
        }
        // virt-up's names with `/` key the same scope as their domain.
        assert_eq!(
            template_scope("generic/debian10", "qemu+ssh://root@h2/system"),
            template_scope("generic-debian10", "qemu+ssh://root@h2/system")
        );
    }

    #[test]
    fn one_hypervisor_has_several_spellings() {
        for (a, b, same) in [
            ("qemu:///system", "qemu:///system", true),
            ("qemu:///system", "qemu://localhost/system", true),
            ("qemu:///system", "qemu:///system/", true),
            ("QEMU:///system", "qemu:///system", true),
            (
                "qemu+ssh://h2/system?a=1&b=2",
                "qemu+ssh://h2/system?b=2&a=1",
                true,
            ),
            ("qemu:///system", "qemu:///session", false),
            ("qemu+ssh://h2/system", "qemu+ssh://h3/system", false),
            // Over SSH, `localhost` is the machine ssh reaches, which may be a tunnel.
            ("qemu+ssh://localhost/system", "qemu:///system", false),
            ("qemu+ssh://root@h2/system", "qemu+ssh://h2/system", false),
        ] {
            assert_eq!(same_hypervisor(a, b), same, "{a} vs {b}");
        }
    }
}
