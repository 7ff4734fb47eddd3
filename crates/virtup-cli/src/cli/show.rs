//! `virt-up --show-templates` and `--show-paths`, in virt-up 2.2.0's formats (`show templates`, `show paths`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use virtup_core::{Config, DataDir, Paths};

use super::{warn, Global};

/// virt-up's columns (`{name: <24} {desc: <30} {arch}`), then where the template comes from.
pub fn template_lines(config: &Config) -> Vec<String> {
    let line = |name: &str, desc: &str, arch: &str, source: &str| {
        format!("{name: <24} {desc: <30} {arch: <8} {source}")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![line("# template", "description", "arch", "source")];
    for name in config.template_names() {
        let f = config.resolve_template(name).unwrap_or_default();
        let source = match (&f.os_version, &f.image) {
            (Some(v), _) if !v.is_empty() => format!("os-version:{v}"),
            (_, Some(i)) if !i.is_empty() => format!("image:{i}"),
            _ => "-".to_owned(),
        };
        lines.push(line(
            name,
            f.desc.as_deref().unwrap_or_default(),
            f.arch.as_deref().unwrap_or_default(),
            &source,
        ));
    }
    lines
}

pub fn templates(paths: &Paths, global: &Global) -> Result<ExitCode> {
    let config = Config::load(paths)?;
    for w in &config.warnings {
        warn(global, w);
    }
    for l in template_lines(&config) {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Like Python's `Path.resolve()`: symlinks resolved as far as the path exists.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// virt-up's five `show paths` lines, then virtup's additions, as shell assignments.
pub fn path_lines(paths: &Paths) -> Vec<String> {
    let config = resolve(&paths.user_config_dir);
    let data_dir = resolve(&paths.data_dir);
    let data = DataDir::at(&data_dir);
    [
        ("VIRTUP_CONFIG_HOME", config.clone()),
        ("VIRTUP_DATA_HOME", data_dir.clone()),
        ("VIRTUP_SSHKEYS", data.sshkeys_dir()),
        ("VIRTUP_PLAYBOOKS", config.join("playbooks")),
        ("VIRTUP_INVENTORY", data.inventory_file()),
        ("VIRTUP_KNOWN_HOSTS", data.known_hosts_file()),
        ("VIRTUP_SYSTEM_CONFIG", paths.system_config_dir.clone()),
    ]
    .into_iter()
    .map(|(k, v)| format!("{k}=\"{}\"", v.display()))
    .chain(std::iter::once(format!(
        "LIBVIRT_DEFAULT_URI=\"{}\"",
        paths.libvirt_uri
    )))
    .collect()
}

pub fn paths(paths: &Paths) -> Result<ExitCode> {
    for l in path_lines(paths) {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_lines_keep_virt_up_columns() {
        let config = Config::from_texts(
            &[],
            &[(
                Path::new("t.cfg"),
                "[generic/debian10]\ndesc = Debian 10 (buster)\nos-version = debian-10\narch = x86_64\n",
            )],
        )
        .unwrap();
        let lines = template_lines(&config);
        assert_eq!(
            lines[0],
            "# template               description                    arch     source"
        );
        assert_eq!(
            lines[1],
            "generic/debian10         Debian 10 (buster)             x86_64   os-version:debian-10"
        );
        // virt-up 2.2.0's own line is a prefix of ours.
        assert!(lines[1].starts_with(&format!(
            "{: <24} {: <30} {}",
            "generic/debian10", "Debian 10 (buster)", "x86_64"
        )));
    }

    #[test]
    fn path_lines_start_with_virt_ups_five() {
        let p = Paths::new(
            "/etc/virt-up",
            "/nonexistent/c",
            "/nonexistent/d",
            "test:///default",
        );
        let lines = path_lines(&p);
        assert_eq!(
            lines[..5],
            [
                "VIRTUP_CONFIG_HOME=\"/nonexistent/c\"",
                "VIRTUP_DATA_HOME=\"/nonexistent/d\"",
                "VIRTUP_SSHKEYS=\"/nonexistent/d/sshkeys\"",
                "VIRTUP_PLAYBOOKS=\"/nonexistent/c/playbooks\"",
                "VIRTUP_INVENTORY=\"/nonexistent/d/inventory.yaml\"",
            ]
        );
        assert_eq!(lines[7], "LIBVIRT_DEFAULT_URI=\"test:///default\"");
    }
}
