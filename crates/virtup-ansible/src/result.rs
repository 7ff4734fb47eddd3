//! What a module reports: the result document and the scrubbing of no_log values out of it.

use serde_json::{Map, Value};

/// The text no_log values are replaced with, as Ansible does.
pub const MASK: &str = "********";

/// A module's result. Typed fields win over `extra` keys of the same name; `extra` keys
/// starting with `_ansible_` are dropped because Ansible reserves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleResult {
    pub changed: bool,
    pub msg: Option<String>,
    pub diff: Option<Diff>,
    pub warnings: Vec<String>,
    pub extra: Map<String, Value>,
}

impl ModuleResult {
    pub fn new(changed: bool) -> Self {
        ModuleResult {
            changed,
            ..Self::default()
        }
    }
    pub fn with_msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }
    pub fn with_diff(mut self, diff: Diff) -> Self {
        self.diff = Some(diff);
        self
    }
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
    /// Adds a return value (`path`, `plan`, …).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The JSON object Ansible reads; not yet scrubbed.
    pub fn to_json(&self) -> Value {
        let mut doc: Map<String, Value> = self
            .extra
            .iter()
            .filter(|(key, _)| !key.starts_with("_ansible_"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        doc.insert("changed".into(), self.changed.into());
        if let Some(msg) = &self.msg {
            doc.insert("msg".into(), msg.clone().into());
        }
        if let Some(diff) = &self.diff {
            doc.insert("diff".into(), diff.to_json());
        }
        if !self.warnings.is_empty() {
            doc.insert("warnings".into(), self.warnings.clone().into());
        }
        Value::Object(doc)
    }
}

/// Ansible's diff: strings are shown as a unified diff, objects are diffed as YAML/JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    pub before: Value,
    pub after: Value,
    pub before_header: Option<String>,
    pub after_header: Option<String>,
}

impl Diff {
    pub fn new(before: impl Into<Value>, after: impl Into<Value>) -> Self {
        Diff {
            before: before.into(),
            after: after.into(),
            ..Self::default()
        }
    }
    pub fn with_headers(mut self, before: impl Into<String>, after: impl Into<String>) -> Self {
        self.before_header = Some(before.into());
        self.after_header = Some(after.into());
        self
    }
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("before".into(), self.before.clone());
        doc.insert("after".into(), self.after.clone());
        if let Some(header) = &self.before_header {
            doc.insert("before_header".into(), header.clone().into());
        }
        if let Some(header) = &self.after_header {
            doc.insert("after_header".into(), header.clone().into());
        }
        Value::Object(doc)
    }
}

/// The failure document: `{"failed": true, "changed": …, "msg": …}`; `changed` says whether the
/// run changed something before it failed (see [`crate::mark_changed`]).
pub fn failure_json(msg: &str, changed: bool) -> Value {
    let mut doc = Map::new();
    doc.insert("failed".into(), true.into());
    doc.insert("changed".into(), changed.into());
    doc.insert("msg".into(), msg.into());
    Value::Object(doc)
}

/// Keys of the protocol itself: a short secret must not turn `failed` into `f********iled`.
const PROTOCOL_KEYS: [&str; 13] = [
    "changed",
    "failed",
    "msg",
    "diff",
    "before",
    "after",
    "before_header",
    "after_header",
    "warnings",
    "deprecations",
    "skipped",
    "rc",
    "ansible_facts",
];

/// Replaces every occurrence of every secret in every string of `value` (object keys
/// included, protocol keys excepted) with [`MASK`].
pub fn scrub(value: &mut Value, secrets: &[String]) {
    let secrets = prepare(secrets);
    if !secrets.is_empty() {
        scrub_prepared(value, &secrets);
    }
}

/// [`scrub`] for one string.
pub fn scrub_str(text: &str, secrets: &[String]) -> String {
    replace_all(text, &prepare(secrets))
}

/// Longest first, so a secret that contains another one is masked whole.
fn prepare(secrets: &[String]) -> Vec<&str> {
    let mut prepared: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    prepared.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    prepared.dedup();
    prepared
}

fn replace_all(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |acc, secret| acc.replace(secret, MASK))
}

fn scrub_prepared(value: &mut Value, secrets: &[&str]) {
    match value {
        Value::String(s) => *s = replace_all(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_prepared(v, secrets)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut item) in old {
                scrub_prepared(&mut item, secrets);
                let key = if PROTOCOL_KEYS.contains(&key.as_str()) {
                    key
                } else {
                    replace_all(&key, secrets)
                };
                map.insert(key, item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_document_shape() {
        let cases: Vec<(ModuleResult, Value)> = vec![
            (ModuleResult::new(false), json!({"changed": false})),
            (
                ModuleResult::new(true)
                    .with_msg("created")
                    .with_warning("careful")
                    .with("path", "/x")
                    .with("_ansible_no_log", true)
                    .with("changed", false),
                json!({"changed": true, "msg": "created", "warnings": ["careful"], "path": "/x"}),
            ),
            (
                ModuleResult::new(true)
                    .with_diff(Diff::new("a\n", "b\n").with_headers("old", "new")),
                json!({"changed": true, "diff": {"before": "a\n", "after": "b\n",
                       "before_header": "old", "after_header": "new"}}),
            ),
            (
                ModuleResult::new(true)
                    .with_diff(Diff::new(json!({"memory": 1}), json!({"memory": 2}))),
                json!({"changed": true, "diff": {"before": {"memory": 1}, "after": {"memory": 2}}}),
            ),
        ];
        for (result, expected) in cases {
            assert_eq!(result.to_json(), expected);
        }
    }

    #[test]
    fn scrub_masks_values_keys_and_overlaps() {
        let secrets = vec!["pw".to_string(), "pw-long".to_string(), String::new()];
        let mut doc = json!({
            "failed": true,
            "msg": "bad pw-long and pw",
            "nested": [{"pw": ["x pw y", 3, null]}],
        });
        scrub(&mut doc, &secrets);
        assert_eq!(
            doc,
            json!({"failed": true, "msg": "bad ******** and ********",
                   "nested": [{"********": ["x ******** y", 3, null]}]})
        );
        assert_eq!(scrub_str("xpwx", &secrets), "x********x");
        assert_eq!(scrub_str("nothing", &[]), "nothing");
    }

    #[test]
    fn scrub_leaves_protocol_keys_alone() {
        let mut doc = ModuleResult::new(true)
            .with_msg("a")
            .with_diff(Diff::new("a", "b").with_headers("h", "h"))
            .to_json();
        scrub(&mut doc, &["a".to_string()]);
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["changed", "diff", "msg"]);
        assert_eq!(doc["msg"], MASK);
        assert_eq!(doc["diff"]["before_header"], "h");
        assert_eq!(doc["diff"]["before"], MASK);
    }
}
