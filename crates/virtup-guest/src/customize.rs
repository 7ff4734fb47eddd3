//! virt-customize: the customization operations shared by virt-builder, virt-customize and virt-sysprep.
//!
//! The three tools accept the same customization options, and apply them in the order given on the
//! command line, so one `CustomizeOp` list renders identically for each.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{Cmd, GuestError};

/// One customization option of virt-builder / virt-customize / virt-sysprep.
///
/// Everything here ends up on argv, which every local user can read: only `Upload`,
/// `RootPassword`, `Password` and `Run` take secrets, and they take them as 0600 files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomizeOp {
    /// `--run-command CMD`: a shell command run inside the guest.
    RunCommand(String),
    /// `--run SCRIPT`: a local script run inside the guest.
    Run(PathBuf),
    /// `--upload LOCAL:REMOTE`: copies a local file in, keeping its mode (and owner).
    Upload { local: PathBuf, remote: String },
    /// `--copy-in LOCAL:REMOTEDIR`: copies a local file or directory into a guest directory.
    CopyIn { local: PathBuf, remote_dir: String },
    /// `--write PATH:CONTENT`: the content goes on argv, so never use it for a secret.
    Write { path: String, content: String },
    /// `--mkdir DIR` (like `mkdir -p`).
    Mkdir(String),
    /// `--chmod MODE:PATH`, `mode` rendered in octal.
    Chmod { mode: u32, path: String },
    /// `--link TARGET:LINK`: makes `link` a symlink to `target`.
    Link { target: String, link: String },
    /// `--delete PATH` (recursive).
    Delete(String),
    /// `--truncate PATH`: empties a file (e.g. `/etc/machine-id`).
    Truncate(String),
    /// `--touch PATH`.
    Touch(String),
    /// `--hostname NAME`.
    Hostname(String),
    /// `--timezone TZ`.
    Timezone(String),
    /// `--install PKG,PKG…`.
    Install(Vec<String>),
    /// `--root-password file:PATH`: the first line of a 0600 file is the password.
    RootPassword(PathBuf),
    /// `--root-password disabled`: no password login for root at all.
    RootPasswordDisabled,
    /// `--password USER:file:PATH`.
    Password { user: String, file: PathBuf },
    /// `--ssh-inject USER:file:PATH`: appends a public key to the user's authorized_keys with the
    /// right owner, modes and SELinux label.
    SshInjectFile { user: String, pubkey_file: PathBuf },
    /// `--ssh-inject USER:string:KEY`: a public key given inline (public keys are not secret).
    SshInjectKey { user: String, key: String },
    /// `--firstboot SCRIPT`: run once at the guest's first boot by libguestfs' own firstboot service.
    Firstboot(PathBuf),
    /// `--firstboot-command CMD`.
    FirstbootCommand(String),
    /// `--selinux-relabel`: relabel the filesystem (needed on SELinux guests after uploads).
    SelinuxRelabel,
    /// Arguments passed through untouched (from `virt_customize_args` and friends).
    Raw(Vec<String>),
}

impl CustomizeOp {
    /// This operation's command-line arguments; fails when a value cannot be expressed
    /// (virt-customize splits `A:B` arguments at the first colon).
    pub fn args(&self) -> Result<Vec<OsString>, GuestError> {
        let pair = |flag: &str, value: String| vec![OsString::from(flag), OsString::from(value)];
        Ok(match self {
            CustomizeOp::RunCommand(cmd) => pair("--run-command", cmd.clone()),
            CustomizeOp::Run(script) => vec!["--run".into(), script.clone().into()],
            CustomizeOp::Upload { local, remote } => pair(
                "--upload",
                format!("{}:{remote}", colon_free_path("upload source", local)?),
            ),
            CustomizeOp::CopyIn { local, remote_dir } => pair(
                "--copy-in",
                format!("{}:{remote_dir}", colon_free_path("copy-in source", local)?),
            ),
            CustomizeOp::Write { path, content } => {
                colon_free("write destination", path)?;
                pair("--write", format!("{path}:{content}"))
            }
            CustomizeOp::Mkdir(dir) => pair("--mkdir", dir.clone()),
            CustomizeOp::Chmod { mode, path } => pair("--chmod", format!("{mode:04o}:{path}")),
            CustomizeOp::Link { target, link } => {
                colon_free("link target", target)?;
                colon_free("link name", link)?;
                pair("--link", format!("{target}:{link}"))
            }
            CustomizeOp::Delete(path) => pair("--delete", path.clone()),
            CustomizeOp::Truncate(path) => pair("--truncate", path.clone()),
            CustomizeOp::Touch(path) => pair("--touch", path.clone()),
            CustomizeOp::Hostname(name) => pair("--hostname", name.clone()),
            CustomizeOp::Timezone(tz) => pair("--timezone", tz.clone()),
            CustomizeOp::Install(packages) => {
                for p in packages {
                    if p.is_empty() || p.contains(',') {
                        return Err(GuestError::invalid(
                            "package name",
                            p,
                            "must be non-empty and hold no comma",
                        ));
                    }
                }
                pair("--install", packages.join(","))
            }
            CustomizeOp::RootPassword(file) => {
                pair("--root-password", format!("file:{}", utf8(file)?))
            }
            CustomizeOp::RootPasswordDisabled => pair("--root-password", "disabled".into()),
            CustomizeOp::Password { user, file } => {
                colon_free("user name", user)?;
                pair("--password", format!("{user}:file:{}", utf8(file)?))
            }
            CustomizeOp::SshInjectFile { user, pubkey_file } => {
                colon_free("user name", user)?;
                pair(
                    "--ssh-inject",
                    format!("{user}:file:{}", utf8(pubkey_file)?),
                )
            }
            CustomizeOp::SshInjectKey { user, key } => {
                colon_free("user name", user)?;
                // virt-customize 1.48 refuses a `string:` selector with another colon (as in a
                // comment such as `virtup:web1`): give such a key as a file instead.
                colon_free("public key", key)?;
                if key.contains(['\n', '\r']) {
                    return Err(GuestError::invalid(
                        "public key",
                        key,
                        "must be a single line",
                    ));
                }
                pair("--ssh-inject", format!("{user}:string:{key}"))
            }
            CustomizeOp::Firstboot(script) => vec!["--firstboot".into(), script.clone().into()],
            CustomizeOp::FirstbootCommand(cmd) => pair("--firstboot-command", cmd.clone()),
            CustomizeOp::SelinuxRelabel => vec!["--selinux-relabel".into()],
            CustomizeOp::Raw(args) => args.iter().map(OsString::from).collect(),
        })
    }
}

/// Renders `ops` in order.
pub fn ops_args(ops: &[CustomizeOp]) -> Result<Vec<OsString>, GuestError> {
    let mut args = Vec::new();
    for op in ops {
        args.extend(op.args()?);
    }
    Ok(args)
}

fn colon_free<'a>(what: &'static str, value: &'a str) -> Result<&'a str, GuestError> {
    if value.contains(':') {
        return Err(GuestError::invalid(
            what,
            value,
            "virt-customize cannot take a colon here",
        ));
    }
    Ok(value)
}

fn colon_free_path<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, GuestError> {
    colon_free(what, utf8(path)?)
}

fn utf8(path: &Path) -> Result<&str, GuestError> {
    path.to_str().ok_or_else(|| {
        GuestError::invalid(
            "path",
            path.to_string_lossy(),
            "libguestfs tools need UTF-8 paths",
        )
    })
}

/// `virt-customize -a DISK [--format FMT] OPS… EXTRA…`: changes a disk image in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtCustomize {
    pub disk: PathBuf,
    /// The disk's format (`qcow2`, `raw`); autodetection is refused for raw by libguestfs' safety rules.
    pub format: Option<String>,
    pub ops: Vec<CustomizeOp>,
    /// Passed through after the operations (`virt_customize_args`).
    pub extra_args: Vec<String>,
}

impl VirtCustomize {
    pub fn new(disk: impl Into<PathBuf>) -> VirtCustomize {
        VirtCustomize {
            disk: disk.into(),
            ..VirtCustomize::default()
        }
    }

    pub fn cmd(&self) -> Result<Cmd, GuestError> {
        let mut cmd = Cmd::new("virt-customize");
        if let Some(format) = &self.format {
            cmd.args(["--format", format]);
        }
        cmd.arg("-a").arg(&self.disk);
        cmd.args(ops_args(&self.ops)?);
        cmd.args(&self.extra_args);
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(op: CustomizeOp) -> Vec<String> {
        op.args()
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn every_op_renders() {
        let cases: Vec<(CustomizeOp, &[&str])> = vec![
            (
                CustomizeOp::RunCommand("apt-get clean".into()),
                &["--run-command", "apt-get clean"],
            ),
            (CustomizeOp::Run("/s.sh".into()), &["--run", "/s.sh"]),
            (
                CustomizeOp::Upload {
                    local: "/stage/key".into(),
                    remote: "/etc/ssh/k".into(),
                },
                &["--upload", "/stage/key:/etc/ssh/k"],
            ),
            (
                CustomizeOp::CopyIn {
                    local: "/stage/dir".into(),
                    remote_dir: "/opt".into(),
                },
                &["--copy-in", "/stage/dir:/opt"],
            ),
            (
                CustomizeOp::Write {
                    path: "/etc/motd".into(),
                    content: "a:b\n".into(),
                },
                &["--write", "/etc/motd:a:b\n"],
            ),
            (CustomizeOp::Mkdir("/a/b".into()), &["--mkdir", "/a/b"]),
            (
                CustomizeOp::Chmod {
                    mode: 0o755,
                    path: "/x".into(),
                },
                &["--chmod", "0755:/x"],
            ),
            (
                CustomizeOp::Chmod {
                    mode: 0o600,
                    path: "/k".into(),
                },
                &["--chmod", "0600:/k"],
            ),
            (
                CustomizeOp::Link {
                    target: "/t".into(),
                    link: "/l".into(),
                },
                &["--link", "/t:/l"],
            ),
            (CustomizeOp::Delete("/d".into()), &["--delete", "/d"]),
            (
                CustomizeOp::Truncate("/etc/machine-id".into()),
                &["--truncate", "/etc/machine-id"],
            ),
            (CustomizeOp::Touch("/t".into()), &["--touch", "/t"]),
            (
                CustomizeOp::Hostname("web1".into()),
                &["--hostname", "web1"],
            ),
            (CustomizeOp::Timezone("UTC".into()), &["--timezone", "UTC"]),
            (
                CustomizeOp::Install(vec!["sudo".into(), "python3".into()]),
                &["--install", "sudo,python3"],
            ),
            (
                CustomizeOp::RootPassword("/s/root".into()),
                &["--root-password", "file:/s/root"],
            ),
            (
                CustomizeOp::RootPasswordDisabled,
                &["--root-password", "disabled"],
            ),
            (
                CustomizeOp::Password {
                    user: "virt".into(),
                    file: "/s/pw".into(),
                },
                &["--password", "virt:file:/s/pw"],
            ),
            (
                CustomizeOp::SshInjectFile {
                    user: "virt".into(),
                    pubkey_file: "/k.pub".into(),
                },
                &["--ssh-inject", "virt:file:/k.pub"],
            ),
            (
                CustomizeOp::SshInjectKey {
                    user: "virt".into(),
                    key: "ssh-ed25519 AAAA c".into(),
                },
                &["--ssh-inject", "virt:string:ssh-ed25519 AAAA c"],
            ),
            (
                CustomizeOp::Firstboot("/f.sh".into()),
                &["--firstboot", "/f.sh"],
            ),
            (
                CustomizeOp::FirstbootCommand("touch /x".into()),
                &["--firstboot-command", "touch /x"],
            ),
            (CustomizeOp::SelinuxRelabel, &["--selinux-relabel"]),
            (
                CustomizeOp::Raw(vec!["--no-network".into()]),
                &["--no-network"],
            ),
        ];
        for (op, want) in cases {
            assert_eq!(rendered(op.clone()), want, "{op:?}");
        }
    }

    #[test]
    fn unrepresentable_values_are_refused() {
        let bad = [
            CustomizeOp::Upload {
                local: "/a:b".into(),
                remote: "/x".into(),
            },
            CustomizeOp::Write {
                path: "/a:b".into(),
                content: String::new(),
            },
            CustomizeOp::Link {
                target: "/t".into(),
                link: "/l:m".into(),
            },
            CustomizeOp::Install(vec!["a,b".into()]),
            CustomizeOp::SshInjectKey {
                user: "virt".into(),
                key: "ssh-ed25519 A\nssh-rsa B".into(),
            },
            CustomizeOp::SshInjectKey {
                user: "virt".into(),
                key: "ssh-ed25519 AAAA virtup:virt".into(),
            },
        ];
        for op in bad {
            assert!(op.args().is_err(), "{op:?} should be refused");
        }
        let err = CustomizeOp::Upload {
            local: "/a:b".into(),
            remote: "/x".into(),
        }
        .args()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid upload source `/a:b`: virt-customize cannot take a colon here"
        );
    }

    #[test]
    fn virt_customize_argv() {
        let vc = VirtCustomize {
            disk: "/pool/t.qcow2".into(),
            format: Some("qcow2".into()),
            ops: vec![
                CustomizeOp::Hostname("t".into()),
                CustomizeOp::RunCommand("true".into()),
            ],
            extra_args: vec!["--verbose".into()],
        };
        assert_eq!(
            vc.cmd().unwrap().argv(),
            [
                "virt-customize",
                "--format",
                "qcow2",
                "-a",
                "/pool/t.qcow2",
                "--hostname",
                "t",
                "--run-command",
                "true",
                "--verbose"
            ]
        );
    }
}
