//! The dynamic inventory protocol: the `--list` document, unsafe-wrapped values, quiet output.
//!
//! Ansible runs the inventory on every command and shows anything on stderr as an error,
//! so [`emit`] writes one JSON document to stdout and nothing else. The [`Inventory`]
//! builder keeps the rules Ansible's script plugin silently depends on: every group
//! carries at least one of `hosts`/`vars`/`children` (a bare `{}` turns the group name
//! into a host), and `_meta.hostvars` is always there (otherwise Ansible calls `--host`
//! once per host).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde_json::{Map, Value};

/// Wraps a string so Ansible never evaluates it as a Jinja template.
pub fn unsafe_value(s: &str) -> Value {
    let mut map = Map::new();
    map.insert("__ansible_unsafe".into(), s.into());
    Value::Object(map)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "invalid group name `{0}`: use letters, digits and underscores, not starting with a digit"
    )]
    GroupName(String),
    #[error("invalid group name `_meta`: it is reserved for host variables")]
    ReservedGroup,
    #[error("invalid host name `{0}`: it must be non-empty and without whitespace")]
    HostName(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Group {
    hosts: BTreeSet<String>,
    children: BTreeSet<String>,
    vars: Map<String, Value>,
}

/// A `--list` document under construction. Output is sorted, hence stable across runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    groups: BTreeMap<String, Group>,
    hostvars: BTreeMap<String, Map<String, Value>>,
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a group; it is emitted even when it stays empty.
    pub fn add_group(&mut self, group: &str) -> Result<(), InventoryError> {
        self.group(group).map(|_| ())
    }

    pub fn add_host(&mut self, group: &str, host: &str) -> Result<(), InventoryError> {
        check_host(host)?;
        self.group(group)?.hosts.insert(host.to_string());
        self.hostvars.entry(host.to_string()).or_default();
        Ok(())
    }

    pub fn add_child(&mut self, parent: &str, child: &str) -> Result<(), InventoryError> {
        self.group(child)?;
        self.group(parent)?.children.insert(child.to_string());
        Ok(())
    }

    pub fn set_group_var(
        &mut self,
        group: &str,
        key: &str,
        value: Value,
    ) -> Result<(), InventoryError> {
        self.group(group)?.vars.insert(key.to_string(), value);
        Ok(())
    }

    /// Sets a host variable; a host that ends up in no group is listed under `ungrouped`,
    /// because Ansible ignores hosts that only appear in `_meta.hostvars`.
    pub fn set_host_var(
        &mut self,
        host: &str,
        key: &str,
        value: Value,
    ) -> Result<(), InventoryError> {
        check_host(host)?;
        self.hostvars
            .entry(host.to_string())
            .or_default()
            .insert(key.to_string(), value);
        Ok(())
    }

    /// The answer to `--host <name>`: its variables, `{}` for an unknown host.
    pub fn host_vars(&self, host: &str) -> Value {
        Value::Object(self.hostvars.get(host).cloned().unwrap_or_default())
    }

    /// The answer to `--list`.
    pub fn to_json(&self) -> Value {
        let mut groups = self.groups.clone();
        let grouped: BTreeSet<&String> = groups.values().flat_map(|g| &g.hosts).collect();
        let strays: Vec<String> = self
            .hostvars
            .keys()
            .filter(|h| !grouped.contains(h))
            .cloned()
            .collect();
        if !strays.is_empty() {
            groups
                .entry("ungrouped".into())
                .or_default()
                .hosts
                .extend(strays);
        }

        let mut doc = Map::new();
        for (name, group) in groups {
            let mut entry = Map::new();
            if !group.hosts.is_empty() || (group.children.is_empty() && group.vars.is_empty()) {
                entry.insert("hosts".into(), group.hosts.into_iter().collect());
            }
            if !group.children.is_empty() {
                entry.insert("children".into(), group.children.into_iter().collect());
            }
            if !group.vars.is_empty() {
                entry.insert("vars".into(), Value::Object(group.vars));
            }
            doc.insert(name, Value::Object(entry));
        }
        let hostvars: Map<String, Value> = self
            .hostvars
            .iter()
            .map(|(h, vars)| (h.clone(), Value::Object(vars.clone())))
            .collect();
        let mut meta = Map::new();
        meta.insert("hostvars".into(), Value::Object(hostvars));
        doc.insert("_meta".into(), Value::Object(meta));
        Value::Object(doc)
    }

    fn group(&mut self, name: &str) -> Result<&mut Group, InventoryError> {
        check_group(name)?;
        Ok(self.groups.entry(name.to_string()).or_default())
    }
}

/// Ansible warns on every command about group names that are not identifiers.
fn check_group(name: &str) -> Result<(), InventoryError> {
    if name == "_meta" {
        return Err(InventoryError::ReservedGroup);
    }
    let mut chars = name.chars();
    let head_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if head_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(InventoryError::GroupName(name.to_string()))
    }
}

fn check_host(name: &str) -> Result<(), InventoryError> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        Err(InventoryError::HostName(name.to_string()))
    } else {
        Ok(())
    }
}

/// Writes `doc` as one JSON document and a newline.
pub fn write_document(out: &mut impl Write, doc: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, doc)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Prints `doc` to stdout (nothing to stderr) and returns the exit code: 0, or 1 when
/// stdout cannot be written.
pub fn emit(doc: &Value) -> i32 {
    i32::from(write_document(&mut std::io::stdout().lock(), doc).is_err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The rule Ansible's script plugin needs: no group is `{}`, `_meta.hostvars` exists.
    fn assert_well_formed(doc: &Value) {
        let map = doc.as_object().expect("the document is an object");
        assert!(map["_meta"]["hostvars"].is_object(), "{doc}");
        for (name, group) in map.iter().filter(|(name, _)| *name != "_meta") {
            let group = group.as_object().expect("a group is an object");
            assert!(
                ["hosts", "vars", "children"]
                    .iter()
                    .any(|k| group.contains_key(*k)),
                "group {name} carries none of hosts/vars/children: {doc}"
            );
            for key in group.keys() {
                assert!(
                    ["hosts", "vars", "children"].contains(&key.as_str()),
                    "{doc}"
                );
            }
        }
    }

    #[test]
    fn empty_inventory_still_has_hostvars() {
        let doc = Inventory::new().to_json();
        assert_eq!(doc, json!({"_meta": {"hostvars": {}}}));
        assert_well_formed(&doc);
    }

    #[test]
    fn groups_hosts_children_vars() {
        let mut inv = Inventory::new();
        inv.add_host("virtup", "web1").unwrap();
        inv.add_host("virtup", "db1").unwrap();
        inv.add_child("all", "virtup").unwrap();
        inv.add_child("virtup", "virtup_stopped").unwrap();
        inv.add_group("virtup_empty").unwrap();
        inv.set_group_var("virtup", "ansible_user", json!("admin"))
            .unwrap();
        inv.set_host_var("web1", "ansible_host", json!("10.0.0.5"))
            .unwrap();
        inv.set_host_var(
            "web1",
            "virtup_note",
            unsafe_value("{{ lookup('pipe','id') }}"),
        )
        .unwrap();
        inv.set_host_var("orphan", "x", json!(1)).unwrap();
        let doc = inv.to_json();
        assert_well_formed(&doc);
        assert_eq!(
            doc,
            json!({
                "all": {"children": ["virtup"]},
                "virtup": {"hosts": ["db1", "web1"], "children": ["virtup_stopped"],
                           "vars": {"ansible_user": "admin"}},
                "virtup_stopped": {"hosts": []},
                "virtup_empty": {"hosts": []},
                "ungrouped": {"hosts": ["orphan"]},
                "_meta": {"hostvars": {
                    "db1": {},
                    "web1": {"ansible_host": "10.0.0.5",
                             "virtup_note": {"__ansible_unsafe": "{{ lookup('pipe','id') }}"}},
                    "orphan": {"x": 1},
                }},
            })
        );
        assert_eq!(inv.host_vars("orphan"), json!({"x": 1}));
        assert_eq!(inv.host_vars("nobody"), json!({}));
    }

    #[test]
    fn vars_only_group_has_no_hosts_key() {
        let mut inv = Inventory::new();
        inv.set_group_var("all", "ansible_python_interpreter", json!("auto"))
            .unwrap();
        let doc = inv.to_json();
        assert_well_formed(&doc);
        assert_eq!(
            doc["all"],
            json!({"vars": {"ansible_python_interpreter": "auto"}})
        );
    }

    #[test]
    fn names_are_checked() {
        let mut inv = Inventory::new();
        let cases: Vec<(Result<(), InventoryError>, InventoryError)> = vec![
            (inv.add_group("_meta"), InventoryError::ReservedGroup),
            (
                inv.add_group("web-servers"),
                InventoryError::GroupName("web-servers".into()),
            ),
            (
                inv.add_group("1st"),
                InventoryError::GroupName("1st".into()),
            ),
            (inv.add_group(""), InventoryError::GroupName(String::new())),
            (
                inv.add_child("ok", "bad name"),
                InventoryError::GroupName("bad name".into()),
            ),
            (
                inv.add_host("ok", ""),
                InventoryError::HostName(String::new()),
            ),
            (
                inv.set_host_var("a b", "k", json!(1)),
                InventoryError::HostName("a b".into()),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want));
        }
        assert_eq!(
            inv,
            Inventory::new(),
            "a rejected call must not change the inventory"
        );
        assert!(inv.add_group("_private_1").is_ok());
    }

    #[test]
    fn unsafe_value_shape() {
        assert_eq!(
            unsafe_value("{{ x }}"),
            json!({"__ansible_unsafe": "{{ x }}"})
        );
    }

    #[test]
    fn write_document_is_one_line_of_json() {
        let mut out = Vec::new();
        write_document(&mut out, &Inventory::new().to_json()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "{\"_meta\":{\"hostvars\":{}}}\n");
    }
}
