//! Where virtup finds its configuration and data, derived from the environment the way virt-up does.
//!
//! `Paths::from_vars` takes the environment as a function so the rules can be
//! tested with a fake environment; `Paths::from_env` is the only place that
//! reads the real one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// System-wide configuration, overridden by the user's directory.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/virt-up";

/// The hypervisor used when `LIBVIRT_DEFAULT_URI` is not set.
///
/// virt-up defaults to `qemu:///session`; virtup documents the system
/// instance as its default because the lab and Ansible runs use it.
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";

/// The directories and hypervisor URI virtup works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub system_config_dir: PathBuf,
    pub user_config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub libvirt_uri: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathsError {
    #[error("cannot locate the virt-up {what} directory: neither `{var}` nor `HOME` is set")]
    NoHome {
        what: &'static str,
        var: &'static str,
    },
    #[error("`{var}` must be an absolute path, not `{value}`")]
    NotAbsolute { var: &'static str, value: String },
}

impl Paths {
    /// Builds paths from explicit values (tests, `--show-paths` overrides).
    pub fn new(
        system_config_dir: impl Into<PathBuf>,
        user_config_dir: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
        libvirt_uri: impl Into<String>,
    ) -> Paths {
        Paths {
            system_config_dir: system_config_dir.into(),
            user_config_dir: user_config_dir.into(),
            data_dir: data_dir.into(),
            libvirt_uri: libvirt_uri.into(),
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Paths, PathsError> {
        Paths::from_vars(|k| std::env::var_os(k))
    }

    /// Applies virt-up's rules to an environment given as a lookup function:
    ///
    /// - user config: `$VIRTUP_CONFIG_HOME`, else `$XDG_CONFIG_HOME/virt-up`, else `$HOME/.config/virt-up`;
    /// - data: `$VIRTUP_DATA_HOME`, else `$XDG_DATA_HOME/virt-up`, else `$HOME/.local/share/virt-up`;
    /// - hypervisor: `$LIBVIRT_DEFAULT_URI`, else `qemu:///system`.
    ///
    /// Empty variables count as unset. A leading `~` is expanded with `$HOME`, as
    /// virt-up's `expanduser` does. Relative `XDG_*` values are ignored (the XDG
    /// spec says so); a relative `VIRTUP_*` value is an error, because modules run
    /// from temporary working directories and would scatter data.
    pub fn from_vars<F, V>(get: F) -> Result<Paths, PathsError>
    where
        F: Fn(&str) -> Option<V>,
        V: Into<OsString>,
    {
        let var = |name: &str| -> Option<OsString> {
            get(name).map(Into::into).filter(|v| !v.is_empty())
        };
        let home = var("HOME").map(PathBuf::from);
        let user_config_dir = resolve_dir(
            &var,
            home.as_deref(),
            "configuration",
            "VIRTUP_CONFIG_HOME",
            "XDG_CONFIG_HOME",
            ".config",
        )?;
        let data_dir = resolve_dir(
            &var,
            home.as_deref(),
            "data",
            "VIRTUP_DATA_HOME",
            "XDG_DATA_HOME",
            ".local/share",
        )?;
        let libvirt_uri = var("LIBVIRT_DEFAULT_URI")
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_LIBVIRT_URI.to_string());
        Ok(Paths {
            system_config_dir: PathBuf::from(SYSTEM_CONFIG_DIR),
            user_config_dir,
            data_dir,
            libvirt_uri,
        })
    }

    /// Configuration directories in increasing precedence: system, then user.
    pub fn config_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.system_config_dir.clone()];
        if self.user_config_dir != self.system_config_dir {
            dirs.push(self.user_config_dir.clone());
        }
        dirs
    }

    /// Where playbooks named in the config are searched, in virt-up's order
    /// (after the name as given): the user's directory, then the system's.
    pub fn playbook_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.user_config_dir.join("playbooks"),
            self.system_config_dir.join("playbooks"),
        ]
    }
}

fn resolve_dir(
    var: &dyn Fn(&str) -> Option<OsString>,
    home: Option<&Path>,
    what: &'static str,
    virtup_var: &'static str,
    xdg_var: &'static str,
    home_default: &str,
) -> Result<PathBuf, PathsError> {
    if let Some(value) = var(virtup_var) {
        let path = expand_tilde(PathBuf::from(&value), home).ok_or(PathsError::NoHome {
            what,
            var: virtup_var,
        })?;
        if !path.is_absolute() {
            return Err(PathsError::NotAbsolute {
                var: virtup_var,
                value: value.to_string_lossy().into_owned(),
            });
        }
        return Ok(path);
    }
    if let Some(value) = var(xdg_var) {
        if let Some(path) = expand_tilde(PathBuf::from(value), home) {
            if path.is_absolute() {
                return Ok(path.join("virt-up"));
            }
        }
    }
    match home {
        Some(home) => Ok(home.join(home_default).join("virt-up")),
        None => Err(PathsError::NoHome {
            what,
            var: virtup_var,
        }),
    }
}

/// Expands `~` and `~/…`; `None` when that needs a home that is not known.
fn expand_tilde(path: PathBuf, home: Option<&Path>) -> Option<PathBuf> {
    match path.strip_prefix("~") {
        Ok(rest) => home.map(|h| h.join(rest)),
        Err(_) => Some(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn paths(vars: &[(&str, &str)]) -> Result<Paths, PathsError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        Paths::from_vars(|k| map.get(k).copied())
    }

    #[test]
    fn precedence_table() {
        // (environment, user config dir, data dir, uri)
        type Env<'a> = &'a [(&'a str, &'a str)];
        let table: &[(Env, &str, &str, &str)] = &[
            (
                &[("HOME", "/home/a")],
                "/home/a/.config/virt-up",
                "/home/a/.local/share/virt-up",
                "qemu:///system",
            ),
            (
                &[
                    ("HOME", "/home/a"),
                    ("XDG_CONFIG_HOME", "/xdg/c"),
                    ("XDG_DATA_HOME", "/xdg/d"),
                ],
                "/xdg/c/virt-up",
                "/xdg/d/virt-up",
                "qemu:///system",
            ),
            (
                &[
                    ("HOME", "/home/a"),
                    ("XDG_CONFIG_HOME", "/xdg/c"),
                    ("XDG_DATA_HOME", "/xdg/d"),
                    ("VIRTUP_CONFIG_HOME", "/v/c"),
                    ("VIRTUP_DATA_HOME", "/v/d"),
                    ("LIBVIRT_DEFAULT_URI", "qemu+ssh://h/system"),
                ],
                "/v/c",
                "/v/d",
                "qemu+ssh://h/system",
            ),
            (
                // Empty means unset; relative XDG values are ignored.
                &[
                    ("HOME", "/home/a"),
                    ("XDG_CONFIG_HOME", ""),
                    ("XDG_DATA_HOME", "rel/data"),
                    ("VIRTUP_CONFIG_HOME", ""),
                    ("LIBVIRT_DEFAULT_URI", ""),
                ],
                "/home/a/.config/virt-up",
                "/home/a/.local/share/virt-up",
                "qemu:///system",
            ),
            (
                &[
                    ("HOME", "/home/a"),
                    ("VIRTUP_CONFIG_HOME", "~/cfg"),
                    ("XDG_DATA_HOME", "~"),
                ],
                "/home/a/cfg",
                "/home/a/virt-up",
                "qemu:///system",
            ),
            (
                // No HOME is fine when everything is explicit.
                &[("VIRTUP_CONFIG_HOME", "/c"), ("XDG_DATA_HOME", "/d")],
                "/c",
                "/d/virt-up",
                "qemu:///system",
            ),
        ];
        for (env, config, data, uri) in table {
            let p = paths(env).unwrap_or_else(|e| panic!("{env:?}: {e}"));
            assert_eq!(p.system_config_dir, Path::new("/etc/virt-up"), "{env:?}");
            assert_eq!(p.user_config_dir, Path::new(config), "{env:?}");
            assert_eq!(p.data_dir, Path::new(data), "{env:?}");
            assert_eq!(p.libvirt_uri, *uri, "{env:?}");
        }
    }

    #[test]
    fn errors() {
        let e = paths(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot locate the virt-up configuration directory: neither `VIRTUP_CONFIG_HOME` nor `HOME` is set"
        );
        let e = paths(&[("HOME", "/h"), ("VIRTUP_DATA_HOME", "data")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`VIRTUP_DATA_HOME` must be an absolute path, not `data`"
        );
        let e = paths(&[("VIRTUP_CONFIG_HOME", "~/x"), ("VIRTUP_DATA_HOME", "/d")]).unwrap_err();
        assert!(matches!(e, PathsError::NoHome { .. }), "{e}");
    }

    #[test]
    fn dirs_in_precedence_order() {
        let p = Paths::new("/etc/virt-up", "/u", "/d", "test:///default");
        assert_eq!(
            p.config_dirs(),
            vec![PathBuf::from("/etc/virt-up"), PathBuf::from("/u")]
        );
        assert_eq!(
            p.playbook_dirs(),
            vec![
                PathBuf::from("/u/playbooks"),
                PathBuf::from("/etc/virt-up/playbooks")
            ]
        );
        let same = Paths::new("/etc/virt-up", "/etc/virt-up", "/d", "x");
        assert_eq!(same.config_dirs().len(), 1);
    }
}
