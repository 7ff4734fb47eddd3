//! The args file: parsed, validated against a [`ModuleSpec`] and coerced the way AnsibleModule does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::spec::{ListSplit, ModuleSpec, OptionSpec, OptionType};

#[cfg(test)]
mod tests;

/// Why the args do not fit the spec. Messages copy AnsibleModule's wording (hence the
/// capitalised "Unsupported parameters"), so users see what they know from Python modules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("failed to parse module arguments as JSON: {0}")]
    Json(String),
    #[error("module arguments must be a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("Unsupported parameters for ({module}) module: {unsupported}. Supported parameters include: {supported}.")]
    Unsupported {
        module: String,
        unsupported: String,
        supported: String,
    },
    #[error(
        "argument '{name}' is of type {found} and we were unable to convert to {wanted}: {reason}"
    )]
    Type {
        name: String,
        found: &'static str,
        wanted: &'static str,
        reason: String,
    },
    #[error("value of {name} must be one of: {choices}, got: {got}")]
    Choice {
        name: String,
        choices: String,
        got: String,
    },
    #[error("value of {name} must be one or more of: {choices}. Got no match for: {got}")]
    Choices {
        name: String,
        choices: String,
        got: String,
    },
    #[error("missing required arguments: {0}")]
    Missing(String),
    #[error("parameters are mutually exclusive: {0}")]
    MutuallyExclusive(String),
    #[error("one of the following is required: {0}")]
    RequiredOneOf(String),
    #[error("{key} is {value} but {term} of the following are missing: {missing}")]
    RequiredIf {
        key: String,
        value: String,
        term: &'static str,
        missing: String,
    },
    /// The spec itself is wrong: a bug in the module, not in the task.
    #[error("internal error: {0}")]
    Spec(String),
}

/// Validated, coerced option values (defaults filled in) plus the `_ansible_*` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleArgs {
    module_name: String,
    values: BTreeMap<&'static str, Value>,
    supplied: BTreeSet<&'static str>,
    /// Every accepted spelling (canonical name or alias) to the canonical name.
    names: BTreeMap<&'static str, &'static str>,
    check_mode: bool,
    diff: bool,
    no_log_values: Vec<String>,
    warnings: Vec<String>,
    /// The options read so far (canonical names), so a test can find a declared option nothing reads.
    read: ReadLog,
}

/// Which options a module read; not part of the arguments' value (two args are equal whatever was
/// read). A mutex, not a `RefCell`, so that args stay unwind-safe for the panic handling.
#[derive(Debug, Default)]
struct ReadLog(std::sync::Mutex<BTreeSet<&'static str>>);

impl ReadLog {
    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        // A panic while the set was held left it whole (inserts do not panic halfway).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for ReadLog {
    fn clone(&self) -> ReadLog {
        ReadLog(std::sync::Mutex::new(self.set().clone()))
    }
}

impl PartialEq for ReadLog {
    fn eq(&self, _: &ReadLog) -> bool {
        true
    }
}

impl ModuleArgs {
    /// The value of an option given by name or alias, user-supplied or default.
    ///
    /// Panics when the module's spec has no such option: reading an undeclared (misspelt) option
    /// is a bug that would otherwise read as "not given". Every test that runs the read finds it;
    /// in a module, the panic hook turns it into a clean failure.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let Some(canonical) = self.names.get(name) else {
            panic!(
                "internal error: module `{}` reads option `{name}`, which its spec does not declare",
                self.module_name
            );
        };
        self.read.set().insert(canonical);
        self.values.get(canonical)
    }
    /// The declared options nothing has read yet. A test reads a module's arguments the way the
    /// module does and expects none: a declared option that is never read would be accepted and
    /// silently do nothing.
    pub fn unread(&self) -> Vec<&'static str> {
        let read = self.read.set();
        let mut unread: Vec<&'static str> = self
            .names
            .values()
            .copied()
            .filter(|c| !read.contains(c))
            .collect();
        unread.sort_unstable();
        unread.dedup();
        unread
    }
    /// Whether the module's spec declares `name` (as an option or an alias), for code shared by
    /// modules whose option sets differ.
    pub fn declares(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name)?.as_i64()
    }
    pub fn float(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.get(name)?.as_bool()
    }
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        let items = self.get(name)?.as_array()?;
        items.iter().map(|v| v.as_str().map(String::from)).collect()
    }
    /// Whether the task gave the option (under any alias), as opposed to a default filling it.
    pub fn is_set(&self, name: &str) -> bool {
        // Same rule as `get`: an undeclared name is a bug, not "not set".
        let _declared = self.get(name);
        self.names
            .get(name)
            .is_some_and(|c| self.supplied.contains(c))
    }
    pub fn check_mode(&self) -> bool {
        self.check_mode
    }
    pub fn diff(&self) -> bool {
        self.diff
    }
    /// `_ansible_module_name` when Ansible sent it (it may be a FQCN), else the spec's name.
    pub fn module_name(&self) -> &str {
        &self.module_name
    }
    /// The strings that must never appear in any output.
    pub fn no_log_values(&self) -> &[String] {
        &self.no_log_values
    }
    /// Warnings found while parsing; the runner adds them to the module's result.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

const WRAPPER: &str = "ANSIBLE_MODULE_ARGS";

/// Parses and validates the text of an args file.
pub fn parse_args(text: &str, spec: &ModuleSpec) -> Result<ModuleArgs, ArgsError> {
    parse_collecting(text, spec, &mut Vec::new())
}

/// Like [`parse_args`], but pushes no_log values to `secrets` as soon as they are seen, so
/// that even an error about a secret option can be scrubbed.
pub(crate) fn parse_collecting(
    text: &str,
    spec: &ModuleSpec,
    secrets: &mut Vec<String>,
) -> Result<ModuleArgs, ArgsError> {
    spec.validate()?;
    let doc: Value = serde_json::from_str(text).map_err(|e| ArgsError::Json(e.to_string()))?;
    let input = unwrap_wrapper(doc)?;
    for (key, value) in &input {
        if spec.option(key).is_some_and(|o| o.no_log) {
            collect_leaves(value, secrets);
        }
    }

    let flag = |key: &str| match input.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => to_bool(v).map_err(|reason| type_error(key, v, OptionType::Bool, reason)),
    };
    let check_mode = flag("_ansible_check_mode")?;
    let diff = flag("_ansible_diff")?;
    let ignore_unknown = flag("_ansible_ignore_unknown_opts")?;
    let module_name = match input.get("_ansible_module_name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => spec.name.to_string(),
    };

    // Reported first (AnsibleModule reports it last): a misspelt option otherwise surfaces
    // as a confusing "missing required arguments".
    let unknown: Vec<&str> = input
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("_ansible_") && spec.option(k).is_none())
        .collect();
    if !unknown.is_empty() && !ignore_unknown {
        return Err(unsupported(&module_name, spec, unknown));
    }

    // A null counts as "not given": defaults apply and `required` fails, which is what a
    // task author means by `x: null` far more often than AnsibleModule's None-passthrough.
    let mut supplied: BTreeMap<&'static str, &Value> = BTreeMap::new();
    let mut warnings = Vec::new();
    for opt in &spec.options {
        let mut given_as: Option<&str> = None;
        for name in std::iter::once(&opt.name).chain(opt.aliases) {
            let Some(value) = input.get(*name).filter(|v| !v.is_null()) else {
                continue;
            };
            if let Some(first) = given_as {
                warnings.push(format!("Both option {first} and its alias {name} are set."));
            }
            given_as = Some(name);
            supplied.insert(opt.name, value);
        }
    }

    let clashes: Vec<String> = spec
        .mutually_exclusive
        .iter()
        .filter(|group| group.iter().filter(|n| supplied.contains_key(*n)).count() > 1)
        .map(|group| group.join("|"))
        .collect();
    if !clashes.is_empty() {
        return Err(ArgsError::MutuallyExclusive(clashes.join(", ")));
    }

    let mut missing: Vec<&str> = spec
        .options
        .iter()
        .filter(|o| o.required && !supplied.contains_key(o.name))
        .map(|o| o.name)
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(ArgsError::Missing(missing.join(", ")));
    }

    let mut values = BTreeMap::new();
    for opt in &spec.options {
        let raw = match (supplied.get(opt.name), opt.default) {
            (Some(value), _) => (*value).clone(),
            (None, Some(default)) => default.to_value(),
            (None, None) => continue,
        };
        if opt.no_log {
            collect_leaves(&raw, secrets);
        }
        let value =
            coerce(opt, &raw).map_err(|reason| type_error(opt.name, &raw, opt.kind, reason))?;
        if opt.no_log {
            collect_leaves(&value, secrets);
        }
        check_choices(opt, &value)?;
        values.insert(opt.name, value);
    }

    for group in &spec.required_one_of {
        if !group.iter().any(|n| values.contains_key(n)) {
            return Err(ArgsError::RequiredOneOf(group.join(", ")));
        }
    }
    for rule in &spec.required_if {
        if !values
            .get(rule.key)
            .is_some_and(|v| value_is(v, rule.value))
        {
            continue;
        }
        let absent: Vec<&str> = rule
            .requirements
            .iter()
            .copied()
            .filter(|n| !values.contains_key(n))
            .collect();
        let limit = if rule.any { rule.requirements.len() } else { 1 };
        if !absent.is_empty() && absent.len() >= limit {
            return Err(ArgsError::RequiredIf {
                key: rule.key.to_string(),
                value: rule.value.to_string(),
                term: if rule.any { "any" } else { "all" },
                missing: absent.join(", "),
            });
        }
    }

    let names = spec
        .options
        .iter()
        .flat_map(|o| {
            std::iter::once(&o.name)
                .chain(o.aliases)
                .map(move |n| (*n, o.name))
        })
        .collect();
    secrets.sort();
    secrets.dedup();
    Ok(ModuleArgs {
        module_name,
        supplied: supplied.into_keys().collect(),
        values,
        names,
        check_mode,
        diff,
        no_log_values: secrets.clone(),
        warnings,
        read: ReadLog::default(),
    })
}

/// `{"ANSIBLE_MODULE_ARGS": {...}}` is what AnsibleModule reads; people write it by hand.
fn unwrap_wrapper(doc: Value) -> Result<Map<String, Value>, ArgsError> {
    let mut map = match doc {
        Value::Object(map) => map,
        other => return Err(ArgsError::NotObject(type_name(&other))),
    };
    if map.len() == 1 {
        if let Some(inner) = map.remove(WRAPPER) {
            return match inner {
                Value::Object(inner) => Ok(inner),
                other => Err(ArgsError::NotObject(type_name(&other))),
            };
        }
    }
    Ok(map)
}

fn unsupported(module: &str, spec: &ModuleSpec, mut unknown: Vec<&str>) -> ArgsError {
    unknown.sort_unstable();
    let mut names: Vec<&str> = spec.options.iter().map(|o| o.name).collect();
    let mut aliases: Vec<&str> = spec
        .options
        .iter()
        .flat_map(|o| o.aliases.iter().copied())
        .collect();
    names.sort_unstable();
    aliases.sort_unstable();
    let mut supported = names.join(", ");
    if !aliases.is_empty() {
        supported.push_str(&format!(" ({})", aliases.join(", ")));
    }
    ArgsError::Unsupported {
        module: module.to_string(),
        unsupported: unknown.join(", "),
        supported,
    }
}

fn type_error(name: &str, value: &Value, wanted: OptionType, reason: String) -> ArgsError {
    ArgsError::Type {
        name: name.to_string(),
        found: type_name(value),
        wanted: wanted.ansible_name(),
        reason,
    }
}

/// Every string and number inside `value`, the way Ansible lists no_log values.
fn collect_leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_leaves(v, out)),
        _ => {}
    }
}

fn coerce(opt: &OptionSpec, value: &Value) -> Result<Value, String> {
    match opt.kind {
        OptionType::Str => to_str(value).map(Value::String),
        OptionType::Path => {
            let path = to_str(value)?;
            Ok(Value::String(expand_path(&path, &|name| {
                std::env::var(name).ok()
            })))
        }
        OptionType::Int => to_int(value).map(Value::from),
        OptionType::Float => to_float(value).map(Value::from),
        OptionType::Bool => to_bool(value).map(Value::Bool),
        OptionType::List => to_list(value, opt.split).map(Value::from),
        OptionType::Raw => Ok(value.clone()),
        OptionType::Dicts => {
            let parsed = match value {
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| format!("failed to parse the string as JSON: {e}"))?,
                other => other.clone(),
            };
            match &parsed {
                Value::Array(items) => match items.iter().find(|i| !i.is_object()) {
                    Some(item) => Err(format!(
                        "{} cannot be converted to a dict (an element of the list)",
                        class(item)
                    )),
                    None => Ok(parsed),
                },
                other => Err(format!("{} cannot be converted to a list", class(other))),
            }
        }
        OptionType::Json => match value {
            Value::String(s) => serde_json::from_str(s)
                .map_err(|e| format!("failed to parse the string as JSON: {e}")),
            other => Ok(other.clone()),
        },
    }
}

/// Python's name for the JSON value's type, as AnsibleModule prints it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn class(value: &Value) -> String {
    format!("<class '{}'>", type_name(value))
}

/// Python's `str()` of a scalar; containers have no sensible string form.
fn py_str(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn py_repr(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => py_str(other).unwrap_or_else(|| other.to_string()),
    }
}

fn to_str(value: &Value) -> Result<String, String> {
    py_str(value).ok_or_else(|| format!("{} cannot be converted to a str", class(value)))
}

/// Integral floats are ints (`1024.0`, `"1e3"`), like AnsibleModule's Decimal check;
/// JSON booleans are not, unlike Python where `True` is an int.
fn to_int(value: &Value) -> Result<i64, String> {
    let integral =
        |f: f64| (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64);
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(integral)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(integral))
        }
        _ => None,
    };
    parsed.ok_or_else(|| format!("\"{}\" cannot be converted to an int", py_repr(value)))
}

fn to_float(value: &Value) -> Result<f64, String> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("{} cannot be converted to a float", class(value)))
}

const TRUE_WORDS: [&str; 6] = ["y", "yes", "on", "1", "true", "t"];
const FALSE_WORDS: [&str; 6] = ["n", "no", "off", "0", "false", "f"];

fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    if TRUE_WORDS.contains(&s.as_str()) {
        Some(true)
    } else if FALSE_WORDS.contains(&s.as_str()) {
        Some(false)
    } else {
        None
    }
}

fn to_bool(value: &Value) -> Result<bool, String> {
    let invalid = |shown: &str| {
        format!(
            "The value '{shown}' is not a valid boolean. Valid booleans include: \
             'y', 'yes', 'on', '1', 'true', 't', 1, 1.0, True, \
             'n', 'no', 'off', '0', 'false', 'f', 0, 0.0, False"
        )
    };
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool(s).ok_or_else(|| invalid(s)),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Ok(true),
            Some(0.0) => Ok(false),
            _ => Err(invalid(&n.to_string())),
        },
        other => Err(format!("{} cannot be converted to a bool", class(other))),
    }
}

fn to_list(value: &Value, split: ListSplit) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items.iter().map(to_str).collect(),
        Value::String(s) => match split {
            ListSplit::Comma => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect()),
            ListSplit::Shell => shell_words::split(s)
                .map_err(|e| format!("failed to split the string like a shell: {e}")),
        },
        Value::Number(n) => Ok(vec![n.to_string()]),
        other => Err(format!("{} cannot be converted to a list", class(other))),
    }
}

fn check_choices(opt: &OptionSpec, value: &Value) -> Result<(), ArgsError> {
    if opt.choices.is_empty() {
        return Ok(());
    }
    let choices = opt.choices.join(", ");
    let name = opt.name.to_string();
    let allowed = |s: &str| opt.choices.contains(&s);
    match value {
        Value::Array(items) => {
            let bad: Vec<String> = items
                .iter()
                .filter_map(py_str)
                .filter(|i| !allowed(i))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(ArgsError::Choices {
                    name,
                    choices,
                    got: visible(&bad.join(", ")),
                })
            }
        }
        other => {
            let got = py_str(other).unwrap_or_else(|| other.to_string());
            if allowed(&got) {
                Ok(())
            } else {
                Err(ArgsError::Choice {
                    name,
                    choices,
                    got: visible(&got),
                })
            }
        }
    }
}

/// A user's value as it may appear in a message: controls and invisible characters (newlines,
/// bidi overrides, zero-width spaces) escaped, so the message stays one honest line.
fn visible(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            let hidden = c.is_control()
                || (c.escape_debug().next() == Some('\\') && !matches!(c, '\\' | '\'' | '"'));
            if hidden {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether a coerced value equals a value written in a spec, for `required_if`.
fn value_is(value: &Value, expected: &str) -> bool {
    match value {
        Value::Bool(b) => parse_bool(expected) == Some(*b),
        other => py_str(other).as_deref() == Some(expected),
    }
}

/// Ansible's `path` expansion: `$VAR`/`${VAR}` that `env` knows (unknown ones stay), then a
/// leading `~` or `~/` from `HOME`. `~user` is left alone: no passwd lookup here.
pub fn expand_path(path: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => braced
                .find('}')
                .map_or(("", 0), |end| (&braced[..end], end + 2)),
            None => {
                let end = after
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match Some(name).filter(|n| !n.is_empty()).and_then(env) {
            Some(value) => {
                out.push_str(&value);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);

    let Some(tail) = out.strip_prefix('~') else {
        return out;
    };
    if !(tail.is_empty() || tail.starts_with('/')) {
        return out;
    }
    match env("HOME") {
        Some(home) => {
            let expanded = format!("{}{tail}", home.trim_end_matches('/'));
            if expanded.is_empty() {
                "/".to_string()
            } else {
                expanded
            }
        }
        None => out,
    }
}
