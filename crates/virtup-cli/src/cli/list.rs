//! `virt-up --list [--all]`: a table of instances (and templates) from the inventory's own collection.

use std::process::ExitCode;

use anyhow::Result;
use virtup_core::virt_up_record::VirtUpRecord;
use virtup_core::{Config, DataDir, InstanceMeta, Paths};
use virtup_libvirt::Hypervisor;

use super::{warn, Global};
use crate::inventory::{self, Host, HostKind};

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub template: String,
    pub state: String,
    pub address: String,
    pub user: String,
}

impl Row {
    fn from_host(h: &Host) -> Row {
        Row {
            name: h.name.clone(),
            template: h.template.clone(),
            state: h.state.clone(),
            address: h.address.clone().unwrap_or_else(|| "-".into()),
            user: h.user.clone().unwrap_or_else(|| "-".into()),
        }
    }
}

/// Aligned columns with a header; `-` for what is unknown.
pub fn render(rows: &[Row]) -> String {
    let header = Row {
        name: "NAME".into(),
        template: "TEMPLATE".into(),
        state: "STATE".into(),
        address: "ADDRESS".into(),
        user: "USER".into(),
    };
    let all: Vec<&Row> = std::iter::once(&header).chain(rows).collect();
    let width = |f: fn(&Row) -> &str| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (wn, wt, ws, wa) = (
        width(|r| &r.name),
        width(|r| &r.template),
        width(|r| &r.state),
        width(|r| &r.address),
    );
    let mut out = String::new();
    for r in all {
        out.push_str(
            format!(
                "{:wn$}  {:wt$}  {:ws$}  {:wa$}  {}",
                r.name, r.template, r.state, r.address, r.user
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}

/// Instances left out of the inventory (`--no-inventory`) are still the user's: list them too.
fn hidden_instances(paths: &Paths, config: &Config) -> Result<Vec<Row>> {
    let data = DataDir::at(&paths.data_dir);
    let default_uri = config
        .common
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone());
    let mut rows = Vec::new();
    for (_, meta) in InstanceMeta::list(&data)? {
        let Ok(meta) = meta else { continue };
        if meta.inventory || meta.is_virt_up_legacy() {
            continue;
        }
        let uri = meta.uri.clone().unwrap_or_else(|| default_uri.clone());
        let state = match Hypervisor::connect_read_only(&uri).and_then(|hv| hv.domain(&meta.name)) {
            Ok(Some(d)) => d.state_word(),
            Ok(None) => "missing".to_owned(),
            Err(_) => "unknown".to_owned(),
        };
        rows.push(Row {
            name: meta.name.clone(),
            template: meta.template.clone(),
            state,
            address: meta.address.clone().unwrap_or_else(|| "-".into()),
            user: if meta.user.is_empty() {
                "-".into()
            } else {
                meta.user.clone()
            },
        });
    }
    Ok(rows)
}

/// What virt-up 2.2.0 made and virtup has not adopted: shown, marked, never listed as virtup's
/// (the inventory leaves them out, with a warning naming the command that adopts a clone). Its
/// bases (`VIRTUP-<template>`) only with `--all`, as templates are.
fn virt_up_rows(paths: &Paths, config: &Config, all: bool) -> Result<Vec<Row>> {
    let data = DataDir::at(&paths.data_dir);
    let uri = virtup_ops::context::default_uri(config, paths);
    let hv = Hypervisor::connect_read_only(&uri).ok();
    let mut rows = Vec::new();
    for (name, meta) in InstanceMeta::list(&data)? {
        let Ok(meta) = meta else { continue };
        if !meta.is_virt_up_legacy() {
            continue;
        }
        let Ok(Some(record)) = VirtUpRecord::read(&data, &name) else {
            continue;
        };
        if !record.is_clone() && !all {
            continue;
        }
        let domain = hv.as_ref().map(|hv| hv.domain(&name));
        let state = match domain {
            Some(Ok(Some(d))) if d.tag.is_none() => d.state_word(),
            // Tagged: adopted (and listed as virtup's), or another data dir's; either way not this row.
            Some(Ok(Some(_))) => continue,
            Some(Ok(None)) => "missing".to_owned(),
            _ => "unknown".to_owned(),
        };
        rows.push(Row {
            name,
            template: record.template,
            state: format!("{state} (virt-up 2.2.0, not adopted)"),
            address: "-".into(),
            user: record.user.username,
        });
    }
    Ok(rows)
}

pub fn list(paths: &Paths, all: bool, global: &Global) -> Result<ExitCode> {
    let config = Config::load(paths)?;
    let listing = inventory::collect(paths, &config)?;
    for w in &listing.warnings {
        warn(global, w);
    }
    let mut rows: Vec<Row> = listing
        .hosts
        .iter()
        .filter(|h| all || h.kind == HostKind::Instance)
        .map(Row::from_host)
        .collect();
    rows.extend(hidden_instances(paths, &config)?);
    rows.extend(virt_up_rows(paths, &config, all)?);
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    print!("{}", render(&rows));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_unknowns_show_as_dashes() {
        let rows = [
            Row {
                name: "web1".into(),
                template: "debian-12".into(),
                state: "running".into(),
                address: "192.168.122.10".into(),
                user: "virt".into(),
            },
            Row {
                name: "VIRTUP-debian-12".into(),
                template: "debian-12".into(),
                state: "stopped".into(),
                address: "-".into(),
                user: "virt".into(),
            },
        ];
        assert_eq!(
            render(&rows),
            "\
NAME              TEMPLATE   STATE    ADDRESS         USER
web1              debian-12  running  192.168.122.10  virt
VIRTUP-debian-12  debian-12  stopped  -               virt
"
        );
    }
}
