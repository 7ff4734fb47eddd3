//! Declarative option specs: what a module accepts, shaped like AnsibleModule's `argument_spec`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::args::ArgsError;

/// The type an option's value is coerced to, named as in AnsibleModule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionType {
    Str,
    Int,
    Float,
    Bool,
    /// A list of strings; how a string value is split is [`ListSplit`].
    List,
    /// A string with `$VAR`s and a leading `~` expanded, like Ansible's `path`.
    Path,
    /// Any JSON value, passed through untouched.
    Raw,
    /// A JSON document: a string is parsed as JSON, anything else is taken as is.
    Json,
    /// A list of dictionaries (Ansible's `type: list, elements: dict`); their keys are the module's
    /// to check. A string is parsed as JSON, as templating may leave one.
    Dicts,
}

impl OptionType {
    /// The name AnsibleModule uses in "unable to convert to …" messages.
    pub fn ansible_name(self) -> &'static str {
        match self {
            OptionType::Str => "str",
            OptionType::Int => "int",
            OptionType::Float => "float",
            OptionType::Bool => "bool",
            OptionType::List => "list",
            OptionType::Path => "path",
            OptionType::Raw => "raw",
            OptionType::Json => "json",
            OptionType::Dicts => "list",
        }
    }
}

/// How a string given for a list option becomes a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListSplit {
    /// Split on commas and trim each item, like AnsibleModule (which does not trim; a
    /// stray `" b"` is never what a user meant). Empty items are dropped.
    #[default]
    Comma,
    /// Split like a POSIX shell would (quotes, backslashes): virtup's contract for `*_args`.
    Shell,
}

/// A default value; it goes through the same coercion as a user-supplied one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    Str(&'static str),
    Int(i64),
    Bool(bool),
    List(&'static [&'static str]),
}

impl DefaultValue {
    pub(crate) fn to_value(self) -> Value {
        match self {
            DefaultValue::Str(s) => Value::from(s),
            DefaultValue::Int(i) => Value::from(i),
            DefaultValue::Bool(b) => Value::from(b),
            DefaultValue::List(items) => Value::from(items.to_vec()),
        }
    }
}

/// One option of a module. Built with `const` methods so specs can be `const` items.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionSpec {
    pub(crate) name: &'static str,
    pub(crate) kind: OptionType,
    pub(crate) required: bool,
    pub(crate) default: Option<DefaultValue>,
    pub(crate) choices: &'static [&'static str],
    pub(crate) aliases: &'static [&'static str],
    pub(crate) no_log: bool,
    pub(crate) split: ListSplit,
}

impl OptionSpec {
    pub const fn new(name: &'static str, kind: OptionType) -> Self {
        OptionSpec {
            name,
            kind,
            required: false,
            default: None,
            choices: &[],
            aliases: &[],
            no_log: false,
            split: ListSplit::Comma,
        }
    }
    pub const fn str(name: &'static str) -> Self {
        Self::new(name, OptionType::Str)
    }
    pub const fn int(name: &'static str) -> Self {
        Self::new(name, OptionType::Int)
    }
    pub const fn float(name: &'static str) -> Self {
        Self::new(name, OptionType::Float)
    }
    pub const fn bool(name: &'static str) -> Self {
        Self::new(name, OptionType::Bool)
    }
    pub const fn list(name: &'static str) -> Self {
        Self::new(name, OptionType::List)
    }
    pub const fn path(name: &'static str) -> Self {
        Self::new(name, OptionType::Path)
    }
    pub const fn raw(name: &'static str) -> Self {
        Self::new(name, OptionType::Raw)
    }
    pub const fn json(name: &'static str) -> Self {
        Self::new(name, OptionType::Json)
    }
    pub const fn dicts(name: &'static str) -> Self {
        Self::new(name, OptionType::Dicts)
    }

    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// A default written as the user would write it: `"2048"` works for an int option.
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(DefaultValue::Str(value));
        self
    }
    pub const fn default_int(mut self, value: i64) -> Self {
        self.default = Some(DefaultValue::Int(value));
        self
    }
    pub const fn default_bool(mut self, value: bool) -> Self {
        self.default = Some(DefaultValue::Bool(value));
        self
    }
    pub const fn default_list(mut self, value: &'static [&'static str]) -> Self {
        self.default = Some(DefaultValue::List(value));
        self
    }
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Self {
        self.choices = choices;
        self
    }
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }
    /// The option's value is a secret: it is scrubbed from every output.
    pub const fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }
    pub const fn split(mut self, split: ListSplit) -> Self {
        self.split = split;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn kind(&self) -> OptionType {
        self.kind
    }
    pub fn is_no_log(&self) -> bool {
        self.no_log
    }
    // The getters below let tests hold the docs and roles that mirror a spec to it.
    pub fn is_required(&self) -> bool {
        self.required
    }
    pub fn default_value(&self) -> Option<DefaultValue> {
        self.default
    }
    pub fn choices_list(&self) -> &'static [&'static str] {
        self.choices
    }
    pub fn list_split(&self) -> ListSplit {
        self.split
    }
}

/// `key == value` makes `requirements` required (all of them, or any one with `any`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RequiredIf {
    pub(crate) key: &'static str,
    pub(crate) value: &'static str,
    pub(crate) requirements: &'static [&'static str],
    pub(crate) any: bool,
}

/// A module's name and options plus the cross-option rules AnsibleModule knows.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleSpec {
    pub(crate) name: &'static str,
    pub(crate) options: Vec<OptionSpec>,
    pub(crate) mutually_exclusive: Vec<&'static [&'static str]>,
    pub(crate) required_one_of: Vec<&'static [&'static str]>,
    pub(crate) required_if: Vec<RequiredIf>,
}

impl ModuleSpec {
    pub fn new(name: &'static str, options: Vec<OptionSpec>) -> Self {
        ModuleSpec {
            name,
            options,
            mutually_exclusive: Vec::new(),
            required_one_of: Vec::new(),
            required_if: Vec::new(),
        }
    }
    pub fn mutually_exclusive(mut self, group: &'static [&'static str]) -> Self {
        self.mutually_exclusive.push(group);
        self
    }
    pub fn required_one_of(mut self, group: &'static [&'static str]) -> Self {
        self.required_one_of.push(group);
        self
    }
    /// When option `key` equals `value`, every option of `requirements` must be set.
    pub fn required_if(
        mut self,
        key: &'static str,
        value: &'static str,
        requirements: &'static [&'static str],
    ) -> Self {
        self.required_if.push(RequiredIf {
            key,
            value,
            requirements,
            any: false,
        });
        self
    }
    /// When option `key` equals `value`, at least one option of `requirements` must be set.
    pub fn required_if_any(
        mut self,
        key: &'static str,
        value: &'static str,
        requirements: &'static [&'static str],
    ) -> Self {
        self.required_if.push(RequiredIf {
            key,
            value,
            requirements,
            any: true,
        });
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn options(&self) -> &[OptionSpec] {
        &self.options
    }
    /// The option called `name`, by its canonical name or one of its aliases.
    pub fn option(&self, name: &str) -> Option<&OptionSpec> {
        self.options
            .iter()
            .find(|o| o.name == name || o.aliases.contains(&name))
    }

    /// Catches module-author mistakes; AnsibleModule reports these as "internal error".
    pub fn validate(&self) -> Result<(), ArgsError> {
        let internal = |msg: String| Err(ArgsError::Spec(msg));
        let mut seen = BTreeSet::new();
        for opt in &self.options {
            for name in std::iter::once(&opt.name).chain(opt.aliases) {
                if name.is_empty() || name.starts_with("_ansible_") {
                    return internal(format!("invalid option name `{name}`"));
                }
                if !seen.insert(*name) {
                    return internal(format!("option name `{name}` is declared twice"));
                }
            }
            if opt.required && opt.default.is_some() {
                return internal(format!(
                    "required and default are mutually exclusive for {}",
                    opt.name
                ));
            }
        }
        let groups = self.mutually_exclusive.iter().chain(&self.required_one_of);
        let named = groups.flat_map(|g| g.iter()).chain(
            self.required_if
                .iter()
                .flat_map(|r| std::iter::once(&r.key).chain(r.requirements)),
        );
        for name in named {
            if !self.options.iter().any(|o| o.name == *name) {
                return internal(format!("a rule names `{name}`, which is not an option"));
            }
        }
        Ok(())
    }
}
