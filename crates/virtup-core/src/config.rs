//! The virt-up configuration model: `settings.cfg` and `templates.d/*.cfg`, read the way virt-up 2.2.0 reads them.
//!
//! virt-up reads its INI files with Python's `configparser.ConfigParser()`;
//! what it accepts, this module accepts with the same meaning:
//!
//! - full-line comments start with `#` or `;` (also when indented, also in the
//!   middle of a multi-line value); there are no inline comments, so
//!   `k = v # x` keeps `v # x`;
//! - `key = value` or `key: value`; keys are case-insensitive; a value continues
//!   on following lines indented deeper than its key; the lines are joined with
//!   spaces, as virt-up does before using a value;
//! - quotes are not special to the INI layer: `desc = "x"` keeps the quotes, and
//!   `*-args` values are then split like Python's `shlex.split`, so
//!   `virt-install-args = '--hvm --x'` is ONE argument `--hvm --x`;
//! - `%` interpolation: `%%` is a literal `%`, `%(key)s` is another key of the
//!   same section or of `[DEFAULT]`; any other `%` is an error, as in virt-up;
//! - `[DEFAULT]` keys apply to every section of the same file group;
//! - a duplicate section or key within one file is an error; a later file
//!   overrides an earlier one key by key. Files are read system dir first, then
//!   user dir; within a dir `templates.d/*.cfg` in sorted file-name order.
//!
//! Where virtup deliberately differs from virt-up 2.2.0:
//!
//! - Every field is understood in hyphen and underscore spelling. virt-up's own
//!   `init template` writes `virt_builder_args`, `image_format`, `dns_domain`…
//!   which virt-up then never reads; virtup honours them. In one section the
//!   hyphen spelling wins, as it is the one virt-up would have used.
//! - `user` and `username` are the same field (`user` wins, as in virt-up).
//! - The literal value `None` means "not set": virt-up's `init template` writes
//!   `virt_sysprep_args = None` for options it was not given.
//! - An empty value of a typed field (`memory =`) means "not set" instead of
//!   failing later; an empty string field still overrides (`dns-domain =`).
//! - `address-source` takes a list (`lease, agent`) instead of one method.
//! - Typed fields are checked at load time, with the file and line in the error.
//! - Section names are trimmed (`[ a ]` is `a`), and a section header must end
//!   with `]`; configparser ignores anything after the last `]`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::paths::Paths;
use crate::validate;

pub use crate::vocab::{AddressSource, ImageFormat};

/// How a raw value becomes a field: the parser for each kind of field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Args,
    Memory,
    Vcpus,
    Count,
    Size,
    Format,
    Sources,
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $key:literal, $kind:ident; )*) => {
        /// One layer of settings: built-in defaults, `[common]`, a template
        /// section, or a module's options. `None` means "not set in this layer".
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        pub struct Fields {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        impl Fields {
            /// This layer with `top` laid over it: each field of `top` that is
            /// set wins, the others keep this layer's value.
            pub fn overlay(&self, top: &Fields) -> Fields {
                Fields {
                    $( $field: top.$field.clone().or_else(|| self.$field.clone()), )*
                }
            }

            /// Canonical (hyphenated) names of the fields set in this layer.
            pub fn set_keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$field.is_some() { keys.push($key); } )*
                keys
            }
        }

        /// Canonical key names, in the order of the `Fields` struct.
        pub const FIELD_KEYS: &[&str] = &[$($key),*];

        fn kind_of(key: &str) -> Option<Kind> {
            match key {
                $( $key => Some(Kind::$kind), )*
                _ => None,
            }
        }

        fn store(fields: &mut Fields, key: &str, value: Value) {
            match key {
                $( $key => fields.$field = Some(value.into()), )*
                _ => unreachable!("store() called with unknown key `{key}`"),
            }
        }
    };
}

fields! {
    /// libvirt storage pool for disk images (`default`).
    pool: String = "pool", Text;
    /// Login user created in guests (`user` or `username`; `virt`).
    username: String = "username", Text;
    /// Length of generated passwords (virt-up: 24).
    password_length: u32 = "password-length", Count;
    /// Domain appended to hostnames.
    dns_domain: String = "dns-domain", Text;
    /// Address sources, tried in order.
    address_source: Vec<AddressSource> = "address-source", Sources;
    /// `qcow2` or `raw`.
    image_format: ImageFormat = "image-format", Format;
    virt_builder_args: Vec<String> = "virt-builder-args", Args;
    virt_sysprep_args: Vec<String> = "virt-sysprep-args", Args;
    virt_install_args: Vec<String> = "virt-install-args", Args;
    virt_customize_args: Vec<String> = "virt-customize-args", Args;
    /// Extra `cp` arguments when cloning raw images (virt-up).
    cp_args: Vec<String> = "cp-args", Args;
    template_playbook: String = "template-playbook", Text;
    instance_playbook: String = "instance-playbook", Text;
    desc: String = "desc", Text;
    /// virt-builder template name.
    os_version: String = "os-version", Text;
    os_type: String = "os-type", Text;
    os_variant: String = "os-variant", Text;
    arch: String = "arch", Text;
    /// Memory in MiB.
    memory: u64 = "memory", Memory;
    vcpus: u32 = "vcpus", Vcpus;
    graphics: String = "graphics", Text;
    /// Disk size as written (`10G`); `validate::parse_size` gives bytes.
    size: String = "size", Size;
    /// virt-install `--network` value.
    network: String = "network", Text;
    /// virtup: local path or URL of a disk image to build the template from.
    image: String = "image", Text;
    /// virtup: `sha256:<hex>`, `sha512:<hex>` or a checksum-file URL for `image`.
    checksum: String = "checksum", Text;
    /// virtup: libvirt URI.
    uri: String = "uri", Text;
    /// virtup: the hypervisors `virtup_inventory` lists (space-separated URIs).
    inventory_uris: Vec<String> = "inventory-uris", Args;
}

/// A parsed value on its way into a `Fields` slot.
enum Value {
    Text(String),
    Args(Vec<String>),
    Number(u64),
    Format(ImageFormat),
    Sources(Vec<AddressSource>),
}

impl From<Value> for String {
    fn from(v: Value) -> String {
        match v {
            Value::Text(s) => s,
            _ => unreachable!("field kind mismatch"),
        }
    }
}
impl From<Value> for Vec<String> {
    fn from(v: Value) -> Vec<String> {
        match v {
            Value::Args(a) => a,
            _ => unreachable!("field kind mismatch"),
        }
    }
}
impl From<Value> for u64 {
    fn from(v: Value) -> u64 {
        match v {
            Value::Number(n) => n,
            _ => unreachable!("field kind mismatch"),
        }
    }
}
impl From<Value> for u32 {
    fn from(v: Value) -> u32 {
        match v {
            // Range-checked by the parser for this kind.
            Value::Number(n) => u32::try_from(n).unwrap_or(u32::MAX),
            _ => unreachable!("field kind mismatch"),
        }
    }
}
impl From<Value> for ImageFormat {
    fn from(v: Value) -> ImageFormat {
        match v {
            Value::Format(f) => f,
            _ => unreachable!("field kind mismatch"),
        }
    }
}
impl From<Value> for Vec<AddressSource> {
    fn from(v: Value) -> Vec<AddressSource> {
        match v {
            Value::Sources(s) => s,
            _ => unreachable!("field kind mismatch"),
        }
    }
}

impl Fields {
    /// virtup's built-in defaults, the bottom layer.
    ///
    /// virt-up's address-source default is `agent` alone; virtup tries the
    /// DHCP lease first because it needs no guest cooperation, then the agent.
    pub fn builtin_defaults() -> Fields {
        Fields {
            pool: Some("default".to_string()),
            username: Some(DEFAULT_USER.to_string()),
            password_length: Some(24),
            address_source: Some(vec![AddressSource::Lease, AddressSource::Agent]),
            image_format: Some(ImageFormat::Qcow2),
            memory: Some(512),
            vcpus: Some(1),
            graphics: Some("none".to_string()),
            ..Fields::default()
        }
    }
}

/// [`Fields`] with every default applied, once: what a run reads. Only what has no default (the
/// image source, the DNS domain, the OS variant…) stays in `Fields` as an `Option`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub pool: String,
    pub user: String,
    pub network: String,
    pub graphics: String,
    pub image_format: ImageFormat,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub password_length: u32,
    pub address_source: Vec<AddressSource>,
    pub virt_builder_args: Vec<String>,
    pub virt_install_args: Vec<String>,
    pub virt_sysprep_args: Vec<String>,
}

impl Fields {
    /// These fields over [`Fields::builtin_defaults`] (and libvirt's `default` network, which is not
    /// a config default: an unset network stays out of template digests).
    pub fn settings(&self) -> Settings {
        let f = Fields::builtin_defaults().overlay(self);
        let defaulted = "every field with a built-in default has a value";
        let args = |a: &Option<Vec<String>>| a.clone().unwrap_or_default();
        Settings {
            pool: f.pool.expect(defaulted),
            user: f.username.expect(defaulted),
            network: f.network.unwrap_or_else(|| DEFAULT_NETWORK.into()),
            graphics: f.graphics.expect(defaulted),
            image_format: f.image_format.expect(defaulted),
            memory_mib: f.memory.expect(defaulted),
            vcpus: f.vcpus.expect(defaulted),
            password_length: f.password_length.expect(defaulted),
            address_source: f.address_source.expect(defaulted),
            virt_builder_args: args(&f.virt_builder_args),
            virt_install_args: args(&f.virt_install_args),
            virt_sysprep_args: args(&f.virt_sysprep_args),
        }
    }
}

/// Maps a key as written (lowercased) to its field and the rank of the
/// spelling: 0 is the spelling virt-up reads, 1 an alternative.
fn canonical_key(lower: &str) -> Option<(&'static str, u8)> {
    let hyphen = lower.replace('_', "-");
    match hyphen.as_str() {
        "user" => return Some(("username", 0)),
        "username" => return Some(("username", 1)),
        _ => {}
    }
    let key = FIELD_KEYS.iter().copied().find(|k| *k == hyphen)?;
    Some((key, u8::from(hyphen != lower)))
}

/// Something in the configuration worth telling the user but not fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` line {}: {}",
            self.file.display(),
            self.line,
            self.message
        )
    }
}

/// Why the configuration could not be read. An I/O cause is part of the message and deliberately not
/// also a `source()`, which anyhow's `{:#}` would print a second time.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read `{}`: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("failed to list `{}`: {error}", path.display())]
    List { path: PathBuf, error: io::Error },
    #[error("malformed `{}` line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid `{}` line {line}, section `[{section}]`, key `{key}`: {reason}", path.display())]
    Value {
        path: PathBuf,
        line: usize,
        section: String,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The file and line the error is about, when it is about one line.
    pub fn location(&self) -> Option<(&Path, usize)> {
        match self {
            ConfigError::Syntax { path, line, .. } | ConfigError::Value { path, line, .. } => {
                Some((path, *line))
            }
            _ => None,
        }
    }
}

/// The merged configuration of all config dirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `[common]` of `settings.cfg` (with `[DEFAULT]` folded in).
    pub common: Fields,
    /// One entry per template section of `templates.d/*.cfg`.
    pub templates: BTreeMap<String, Fields>,
    /// The files that were read, in reading order.
    pub files: Vec<PathBuf>,
    /// Unknown keys and ignored sections; virt-up ignores them silently.
    pub warnings: Vec<ConfigWarning>,
}

/// The login user when neither a module option nor the config names one (virt-up's default).
pub const DEFAULT_USER: &str = "virt";
/// The libvirt network guests join when none is configured.
pub const DEFAULT_NETWORK: &str = "default";

/// The section of `settings.cfg` that holds the common settings.
pub const COMMON_SECTION: &str = "common";
/// configparser's section whose keys apply to every section.
const DEFAULT_SECTION: &str = "DEFAULT";

impl Config {
    /// Reads the system dir, then the user dir of `paths`.
    pub fn load(paths: &Paths) -> Result<Config, ConfigError> {
        Config::load_dirs(&paths.config_dirs())
    }

    /// Reads `settings.cfg` and `templates.d/*.cfg` of each dir; later dirs
    /// override earlier ones. Missing dirs and files are fine.
    pub fn load_dirs(dirs: &[PathBuf]) -> Result<Config, ConfigError> {
        let mut settings = Vec::new();
        let mut templates = Vec::new();
        for dir in dirs {
            let path = dir.join("settings.cfg");
            if let Some(text) = read_if_file(&path)? {
                settings.push((path, text));
            }
            for path in list_template_files(&dir.join("templates.d"))? {
                if let Some(text) = read_if_file(&path)? {
                    templates.push((path, text));
                }
            }
        }
        let settings: Vec<(&Path, &str)> = settings
            .iter()
            .map(|(p, t)| (p.as_path(), t.as_str()))
            .collect();
        let templates: Vec<(&Path, &str)> = templates
            .iter()
            .map(|(p, t)| (p.as_path(), t.as_str()))
            .collect();
        Config::from_texts(&settings, &templates)
    }

    /// Builds the configuration from file contents (no IO): `settings` are
    /// `settings.cfg` files, `templates` are `templates.d/*.cfg` files, each in
    /// increasing precedence.
    pub fn from_texts(
        settings: &[(&Path, &str)],
        templates: &[(&Path, &str)],
    ) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let settings_group = Group::read(settings, &mut warnings)?;
        let templates_group = Group::read(templates, &mut warnings)?;

        let common = match settings_group.sections.get(COMMON_SECTION) {
            Some(section) => settings_group.fields(section, &mut warnings)?,
            None => Fields::default(),
        };
        for (name, section) in &settings_group.sections {
            if name != COMMON_SECTION {
                warnings.push(ConfigWarning {
                    file: settings_group.files[section.file].to_path_buf(),
                    line: section.line,
                    message: format!(
                        "section `[{name}]` is ignored; `settings.cfg` only uses `[{COMMON_SECTION}]`"
                    ),
                });
            }
        }
        let mut templates_map = BTreeMap::new();
        for (name, section) in &templates_group.sections {
            templates_map.insert(
                name.clone(),
                templates_group.fields(section, &mut warnings)?,
            );
        }
        let files = settings
            .iter()
            .chain(templates)
            .map(|(p, _)| p.to_path_buf())
            .collect();
        Ok(Config {
            common,
            templates: templates_map,
            files,
            warnings,
        })
    }

    /// Template section names, sorted.
    pub fn template_names(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }

    /// Built-in defaults < `[common]`.
    pub fn resolve_common(&self) -> Fields {
        Fields::builtin_defaults().overlay(&self.common)
    }

    /// Built-in defaults < `[common]` < the template's section; `None` when no
    /// such template is defined. Callers lay module options over the result.
    pub fn resolve_template(&self, name: &str) -> Option<Fields> {
        let template = self.templates.get(name)?;
        Some(self.resolve_common().overlay(template))
    }
}

fn read_if_file(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        // Removed between the two calls: as if it had never been there.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// `templates.d/*.cfg` as Python's glob sees it (no dot files), sorted.
fn list_template_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(ConfigError::List {
                path: dir.to_path_buf(),
                error,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| ConfigError::List {
            path: dir.to_path_buf(),
            error,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".cfg") {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------
// Reading one group of files (all `settings.cfg`, or all `templates.d/*.cfg`)
// into one merged set of sections, like one `configparser` reading them all.

/// A raw value and where it was set.
#[derive(Debug, Clone)]
struct Raw {
    value: String,
    /// The key as written, lowercased (for messages).
    key: String,
    file: usize,
    line: usize,
    rank: u8,
    /// The section the line is in (`DEFAULT` for inherited values).
    section: String,
}

#[derive(Debug, Default)]
struct RawSection {
    /// By canonical key for known fields, by lowercased key otherwise.
    entries: BTreeMap<String, Raw>,
    /// Where the section was last declared (for warnings).
    file: usize,
    line: usize,
}

struct Group<'a> {
    files: Vec<&'a Path>,
    defaults: RawSection,
    sections: BTreeMap<String, RawSection>,
}

impl<'a> Group<'a> {
    fn read(
        sources: &[(&'a Path, &str)],
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<Group<'a>, ConfigError> {
        let mut group = Group {
            files: Vec::new(),
            defaults: RawSection::default(),
            sections: BTreeMap::new(),
        };
        for (index, (path, text)) in sources.iter().enumerate() {
            group.files.push(path);
            for section in parse_file(path, text)? {
                let target = if section.name == DEFAULT_SECTION {
                    &mut group.defaults
                } else {
                    group.sections.entry(section.name.clone()).or_default()
                };
                target.file = index;
                target.line = section.line;
                for (key, line, value) in section.entries {
                    let (lookup, rank) = match canonical_key(&key) {
                        Some((canonical, rank)) => (canonical.to_string(), rank),
                        None => {
                            warnings.push(ConfigWarning {
                                file: path.to_path_buf(),
                                line,
                                message: format!(
                                    "unknown key `{key}` in section `[{}]` is ignored",
                                    section.name
                                ),
                            });
                            (key.clone(), 0)
                        }
                    };
                    let raw = Raw {
                        value,
                        key,
                        file: index,
                        line,
                        rank,
                        section: section.name.clone(),
                    };
                    match target.entries.get(&lookup) {
                        // Both spellings in one section of one file: the
                        // preferred spelling wins, wherever it is.
                        Some(old) if old.file == index && old.rank <= raw.rank => {}
                        _ => {
                            target.entries.insert(lookup, raw);
                        }
                    }
                }
            }
        }
        Ok(group)
    }

    /// Interpolates and converts one section (with `[DEFAULT]` under it).
    fn fields(
        &self,
        section: &RawSection,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<Fields, ConfigError> {
        let mut merged: BTreeMap<&str, &Raw> = self
            .defaults
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        for (k, v) in &section.entries {
            merged.insert(k.as_str(), v);
        }
        let mut fields = Fields::default();
        // Every value is interpolated, known or not, as configparser's
        // `items()` does: a bad `%` anywhere in a section is an error.
        for (key, raw) in &merged {
            let mut value = String::new();
            interpolate(&raw.value, &merged, 1, &mut value)
                .map_err(|reason| self.value_error(raw, &raw.section, reason))?;
            let Some(kind) = kind_of(key) else { continue };
            // virt-up joins continuation lines with spaces before use.
            let value = value.replace('\n', " ");
            let value = value.trim();
            match convert(kind, &raw.key, value) {
                Ok(Some(v)) => {
                    if let Value::Args(words) = &v {
                        self.warn_if_quoted_whole(raw, value, words, warnings);
                    }
                    store(&mut fields, key, v)
                }
                Ok(None) => {}
                Err(reason) => return Err(self.value_error(raw, &raw.section, reason)),
            }
        }
        Ok(fields)
    }

    /// `virt-install-args = '--hvm --x'` is one argument for virt-up (and
    /// virtup); that is rarely what was meant, so say so once per line.
    fn warn_if_quoted_whole(
        &self,
        raw: &Raw,
        value: &str,
        words: &[String],
        warnings: &mut Vec<ConfigWarning>,
    ) {
        let quoted = ['\'', '"']
            .iter()
            .any(|q| value.len() > 1 && value.starts_with(*q) && value.ends_with(*q));
        let [word] = words else { return };
        if !quoted || !word.contains(char::is_whitespace) {
            return;
        }
        let file = self.files[raw.file].to_path_buf();
        if warnings
            .iter()
            .any(|w| w.file == file && w.line == raw.line)
        {
            return;
        }
        warnings.push(ConfigWarning {
            file,
            line: raw.line,
            message: format!(
                "`{}` is quoted as a whole, so it is passed as the single argument {}, as virt-up does; remove the outer quotes to pass several arguments",
                raw.key,
                validate::Shown(word)
            ),
        });
    }

    fn value_error(&self, raw: &Raw, section: &str, reason: String) -> ConfigError {
        ConfigError::Value {
            path: self.files[raw.file].to_path_buf(),
            line: raw.line,
            section: section.to_string(),
            key: raw.key.clone(),
            reason,
        }
    }
}

/// Converts an interpolated, joined value; `Ok(None)` means "not set".
fn convert(kind: Kind, key: &str, value: &str) -> Result<Option<Value>, String> {
    if value == "None" {
        return Ok(None);
    }
    let reason = |e: validate::ValidationError| e.reason;
    let typed_empty = value.is_empty() && !matches!(kind, Kind::Text | Kind::Args);
    if typed_empty {
        return Ok(None);
    }
    Ok(Some(match kind {
        Kind::Text => Value::Text(value.to_string()),
        Kind::Args => Value::Args(split_args(value).map_err(|e| e.to_string())?),
        Kind::Memory => Value::Number(validate::parse_memory_mib(key, value).map_err(reason)?),
        Kind::Vcpus => Value::Number(u64::from(
            validate::parse_vcpus(key, value).map_err(reason)?,
        )),
        Kind::Count => {
            let n = validate::parse_whole_number(key, value, "a whole number").map_err(reason)?;
            if n == 0 || n > 4096 {
                return Err(format!("{n} is outside the range 1..=4096"));
            }
            Value::Number(n)
        }
        Kind::Size => {
            validate::parse_size(key, value).map_err(reason)?;
            Value::Text(value.to_string())
        }
        Kind::Format => Value::Format(ImageFormat::parse(key, value).map_err(reason)?),
        Kind::Sources => Value::Sources(AddressSource::parse_list(key, value).map_err(reason)?),
    }))
}

/// A quoting error in an `*-args` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unbalanced quotes in {}", validate::Shown(.0))]
pub struct SplitError(pub String);

/// Splits an argument string the way virt-up does with Python's `shlex.split`.
///
/// shell-words does the splitting; the one difference that matters, `#`
/// starting a comment in shell-words but not in `shlex.split`, is removed by
/// hiding `#` from it.
pub fn split_args(value: &str) -> Result<Vec<String>, SplitError> {
    const HASH_STANDIN: char = '\u{e000}';
    if value.contains(HASH_STANDIN) {
        return shell_words::split(value).map_err(|_| SplitError(value.to_string()));
    }
    let hidden = value.replace('#', "\u{e000}");
    let words = shell_words::split(&hidden).map_err(|_| SplitError(value.to_string()))?;
    Ok(words
        .into_iter()
        .map(|w| w.replace(HASH_STANDIN, "#"))
        .collect())
}

/// configparser's limit on nested `%(key)s` references.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// configparser's `BasicInterpolation`.
fn interpolate(
    value: &str,
    vars: &BTreeMap<&str, &Raw>,
    depth: usize,
    out: &mut String,
) -> Result<(), String> {
    let lookup = |reference: &str| {
        let lower = reference.to_lowercase();
        let key = canonical_key(&lower).map_or(lower, |(k, _)| k.to_string());
        vars.get(key.as_str()).map(|raw| raw.value.clone())
    };
    if depth > MAX_INTERPOLATION_DEPTH {
        return Err(format!(
            "`%(…)s` references nest deeper than {MAX_INTERPOLATION_DEPTH} levels (a loop?)"
        ));
    }
    let mut rest = value;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let after = &rest[1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            let reference = inner
                .find(')')
                .filter(|&close| close > 0 && inner[close + 1..].starts_with('s'));
            let Some(close) = reference else {
                return Err(format!(
                    "bad `%(key)s` reference {}; write `%%` for a literal `%`",
                    validate::Shown(snippet(rest))
                ));
            };
            let name = &inner[..close];
            rest = &inner[close + 2..];
            let Some(v) = lookup(name) else {
                return Err(format!(
                    "`%({name})s` refers to a key set neither in this section nor in `[DEFAULT]`"
                ));
            };
            if v.contains('%') {
                interpolate(&v, vars, depth + 1, out)?;
            } else {
                out.push_str(&v);
            }
        } else {
            return Err(format!(
                "`%` must be followed by `%` or `(`, found {}; write `%%` for a literal `%`",
                validate::Shown(snippet(rest))
            ));
        }
    }
    out.push_str(rest);
    Ok(())
}

fn snippet(s: &str) -> &str {
    match s.char_indices().nth(20) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------
// One file: a line scanner applies configparser's structure rules and writes a
// canonical text with the same line numbers, which rust-ini then parses.

struct ParsedSection {
    name: String,
    line: usize,
    /// (lowercased key, line, raw multi-line value)
    entries: Vec<(String, usize, String)>,
}

fn parse_file(path: &Path, text: &str) -> Result<Vec<ParsedSection>, ConfigError> {
    let (canonical, mut sections) = scan(path, text)?;
    let options = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        enabled_preserve_key_leading_whitespace: false,
    };
    let parsed =
        ini::Ini::load_from_str_opt(&canonical, options).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.line,
            message: e.msg.to_string(),
        })?;
    for section in &mut sections {
        let props = parsed.section(Some(section.name.as_str()));
        let count = props.map_or(0, |p| p.len());
        for (key, line, value) in &mut section.entries {
            match props.and_then(|p| p.get(key.as_str())) {
                Some(v) => *value = v.to_string(),
                None => {
                    return Err(ConfigError::Syntax {
                        path: path.to_path_buf(),
                        line: *line,
                        message: format!("cannot parse key `{key}`"),
                    })
                }
            }
        }
        if count != section.entries.len() {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line: section.line,
                message: format!("cannot parse section `[{}]`", section.name),
            });
        }
    }
    Ok(sections)
}

/// Checks the structure line by line and returns a canonical text for rust-ini:
/// comments blanked (configparser skips them even inside multi-line values),
/// keys lowercased and unindented, only continuation lines indented.
fn scan(path: &Path, text: &str) -> Result<(String, Vec<ParsedSection>), ConfigError> {
    let syntax = |line: usize, message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + 64);
    let mut sections: Vec<ParsedSection> = Vec::new();
    let mut section_lines: HashMap<String, usize> = HashMap::new();
    let mut key_lines: HashMap<String, usize> = HashMap::new();
    // Indentation of the current key line; deeper lines continue its value.
    let mut option_indent: Option<usize> = None;

    for (index, line) in text.split('\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let stripped = line.trim();
        if stripped.is_empty() || stripped.starts_with('#') || stripped.starts_with(';') {
            out.push('\n');
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if option_indent.is_some_and(|key_indent| indent > key_indent) {
            out.push_str(line.trim_end());
            keep_trailing_backslash(&mut out);
            out.push('\n');
            continue;
        }
        if let Some(header) = stripped.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return Err(syntax(
                    line_no,
                    format!(
                        "a section header must end with `]`: {}",
                        validate::Shown(stripped)
                    ),
                ));
            };
            let name = name.trim();
            if name.is_empty() || name.contains(']') || name.contains('[') {
                return Err(syntax(
                    line_no,
                    format!("invalid section header {}", validate::Shown(stripped)),
                ));
            }
            if let Some(first) = section_lines.insert(name.to_string(), line_no) {
                return Err(syntax(
                    line_no,
                    format!("duplicate section `[{name}]` (first on line {first})"),
                ));
            }
            key_lines.clear();
            sections.push(ParsedSection {
                name: name.to_string(),
                line: line_no,
                entries: Vec::new(),
            });
            out.push('[');
            out.push_str(name);
            out.push(']');
            out.push('\n');
            option_indent = None;
            continue;
        }
        let Some(delimiter) = stripped.find(['=', ':']) else {
            return Err(syntax(
                line_no,
                format!(
                    "expected `key = value`, `[section]` or a comment, found {}",
                    validate::Shown(stripped)
                ),
            ));
        };
        let key = stripped[..delimiter].trim();
        if key.is_empty() {
            return Err(syntax(line_no, "missing key before `=`".to_string()));
        }
        let Some(section) = sections.last_mut() else {
            return Err(syntax(
                line_no,
                format!("key `{key}` is outside any section; the file must start with a `[section]` header"),
            ));
        };
        let lower = key.to_lowercase();
        if let Some(first) = key_lines.insert(lower.clone(), line_no) {
            return Err(syntax(
                line_no,
                format!(
                    "duplicate key `{lower}` in section `[{}]` (first on line {first})",
                    section.name
                ),
            ));
        }
        section
            .entries
            .push((lower.clone(), line_no, String::new()));
        out.push_str(&lower);
        out.push('=');
        out.push_str(stripped[delimiter + 1..].trim());
        keep_trailing_backslash(&mut out);
        out.push('\n');
        option_indent = Some(indent);
    }
    Ok((out, sections))
}

/// rust-ini joins a line ending in `\` with the next one; configparser keeps
/// the backslash and does not join. A trailing space (trimmed by rust-ini)
/// keeps the two in step.
fn keep_trailing_backslash(out: &mut String) {
    if out.ends_with('\\') {
        out.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_every_default_once() {
        let s = Fields::default().settings();
        assert_eq!(
            (s.pool.as_str(), s.user.as_str()),
            ("default", DEFAULT_USER)
        );
        assert_eq!(
            (s.network.as_str(), s.graphics.as_str()),
            (DEFAULT_NETWORK, "none")
        );
        assert_eq!(
            (s.image_format, s.memory_mib, s.vcpus),
            (ImageFormat::Qcow2, 512, 1)
        );
        assert_eq!(
            s.address_source,
            [AddressSource::Lease, AddressSource::Agent]
        );
        assert!(s.virt_install_args.is_empty());
        let set = Fields {
            pool: Some("fast".into()),
            network: Some("lab".into()),
            memory: Some(2048),
            virt_sysprep_args: Some(vec!["--quiet".into()]),
            ..Fields::default()
        }
        .settings();
        assert_eq!(
            (set.pool.as_str(), set.network.as_str(), set.memory_mib),
            ("fast", "lab", 2048)
        );
        assert_eq!(set.virt_sysprep_args, ["--quiet"]);
        // The network default is not a config layer: it stays out of the fields a digest reads.
        assert_eq!(Fields::builtin_defaults().network, None);
    }

    fn load(settings: &str, templates: &[&str]) -> Result<Config, ConfigError> {
        let tpaths: Vec<PathBuf> = (0..templates.len())
            .map(|i| PathBuf::from(format!("/t/{i}.cfg")))
            .collect();
        let t: Vec<(&Path, &str)> = tpaths
            .iter()
            .zip(templates)
            .map(|(p, t)| (p.as_path(), *t))
            .collect();
        Config::from_texts(&[(Path::new("/s/settings.cfg"), settings)], &t)
    }

    /// How often `needle` appears in what a user sees: anyhow's `{:#}`, the rendering of `virt-up`'s
    /// error line and of a module's `msg`.
    fn shown_times(err: impl Into<anyhow::Error>, needle: &str) -> usize {
        format!("{:#}", err.into()).matches(needle).count()
    }

    #[test]
    fn an_io_cause_is_shown_once() {
        let read = ConfigError::Read {
            path: "/c/settings.cfg".into(),
            error: io::Error::other("disk on fire"),
        };
        assert_eq!(
            read.to_string(),
            "failed to read `/c/settings.cfg`: disk on fire"
        );
        assert_eq!(shown_times(read, "disk on fire"), 1);
        // A real one: `templates.d` that is a file cannot be listed.
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("templates.d");
        std::fs::write(&not_a_dir, "").unwrap();
        let list = list_template_files(&not_a_dir).unwrap_err();
        assert!(matches!(list, ConfigError::List { .. }), "{list}");
        let reason = io::Error::from_raw_os_error(libc::ENOTDIR).to_string();
        assert_eq!(shown_times(crate::Error::from(list), &reason), 1);
    }

    fn template(text: &str, name: &str) -> Fields {
        let config = load("", &[text]).unwrap_or_else(|e| panic!("{e}"));
        config.templates.get(name).cloned().expect("template")
    }

    fn args(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn split_args_like_shlex() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            ("--a b", &["--a", "b"]),
            (
                "--install \"sudo,qemu-guest-agent\"",
                &["--install", "sudo,qemu-guest-agent"],
            ),
            ("'--hvm --x'", &["--hvm --x"]),
            ("--x #y z", &["--x", "#y", "z"]),
            ("--edit '/f:s/#a/b/'", &["--edit", "/f:s/#a/b/"]),
            ("a\\ b", &["a b"]),
        ];
        for (input, want) in table {
            let got = split_args(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, *want, "{input:?}");
        }
        assert_eq!(
            split_args("--x 'abc").unwrap_err().to_string(),
            "unbalanced quotes in `--x 'abc`"
        );
    }

    #[test]
    fn interpolation() {
        let t = template(
            "[a]\nbase = /srv\nvirt-builder-args = --firstboot %(BASE)s/x.sh 100%%\ndesc = %(os-version)s box\nos_version = debian-12\n",
            "a",
        );
        assert_eq!(
            t.virt_builder_args,
            args(&["--firstboot", "/srv/x.sh", "100%"])
        );
        assert_eq!(t.desc.as_deref(), Some("debian-12 box"));
        let t = template(
            "[DEFAULT]\nroot = /x\n[a]\ndesc = %(root)s/%(sub)s\nsub = y%%\n",
            "a",
        );
        assert_eq!(t.desc.as_deref(), Some("/x/y%"));

        let errors: &[(&str, &str)] = &[
            (
                "[a]\ndesc = 50% done\n",
                "`%` must be followed by `%` or `(`, found `% done`",
            ),
            (
                "[a]\ndesc = %(nope)s\n",
                "`%(nope)s` refers to a key set neither",
            ),
            ("[a]\ndesc = %(nope)\n", "bad `%(key)s` reference `%(nope)`"),
            ("[a]\ndesc = %(b)s\nb = %(desc)s\n", "nest deeper than 10"),
            ("[a]\nunknown = 5%\n", "`%` must be followed"),
        ];
        for (text, want) in errors {
            let e = load("", &[text]).expect_err(text);
            let msg = e.to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(msg.starts_with("invalid `/t/0.cfg` line "), "{msg}");
        }
    }

    #[test]
    fn spellings_and_precedence_in_one_section() {
        let t = template(
            "[a]\nvirt_builder_args = --u\nvirt-builder-args = --h\nimage_format = raw\nusername = x\nuser = y\nDNS_Domain = d.example\n",
            "a",
        );
        assert_eq!(t.virt_builder_args, args(&["--h"]), "hyphen spelling wins");
        assert_eq!(t.image_format, Some(ImageFormat::Raw));
        assert_eq!(
            t.username.as_deref(),
            Some("y"),
            "`user` wins over `username`"
        );
        assert_eq!(
            t.dns_domain.as_deref(),
            Some("d.example"),
            "keys are case-insensitive"
        );
        // Order in the file does not matter.
        let t = template(
            "[a]\nvirt-builder-args = --h\nvirt_builder_args = --u\n",
            "a",
        );
        assert_eq!(t.virt_builder_args, args(&["--h"]));
    }

    #[test]
    fn seed_doc_xen_examples_split_like_virt_up() {
        // Expected values are Python's shlex.split of what configparser reads.
        let text = r#"[xen]
virt-install-args = '--hvm --foo'
virt-sysprep-args = '--hvm'
virt-builder-args = --install sudo
  --edit "/etc/default/grub:s/GRUB_CMDLINE_LINUX=\"\"/GRUB_CMDLINE_LINUX=\"xen_emul_unplug=never\"/"
  --run-command 'grub-mkconfig -o /boot/grub/grub.cfg'
"#;
        let config = load("", &[text]).unwrap();
        let t = &config.templates["xen"];
        assert_eq!(t.virt_install_args, args(&["--hvm --foo"]));
        assert_eq!(t.virt_sysprep_args, args(&["--hvm"]));
        assert_eq!(
            t.virt_builder_args,
            args(&[
                "--install",
                "sudo",
                "--edit",
                r#"/etc/default/grub:s/GRUB_CMDLINE_LINUX=""/GRUB_CMDLINE_LINUX="xen_emul_unplug=never"/"#,
                "--run-command",
                "grub-mkconfig -o /boot/grub/grub.cfg",
            ])
        );
        let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            ["`/t/0.cfg` line 2: `virt-install-args` is quoted as a whole, so it is passed as the single argument `--hvm --foo`, as virt-up does; remove the outer quotes to pass several arguments"]
        );
        // From [DEFAULT], one warning for the line, not one per section.
        let config = load(
            "",
            &["[DEFAULT]\nvirt-install-args = \"--a --b\"\n[x]\n[y]\n"],
        )
        .unwrap();
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    }

    #[test]
    fn none_and_empty_values() {
        let t = template(
            "[a]\nvirt_sysprep_args = None\nmemory =\ndns-domain =\nvirt-install-args =\n",
            "a",
        );
        assert_eq!(t.virt_sysprep_args, None);
        assert_eq!(t.memory, None);
        assert_eq!(t.dns_domain.as_deref(), Some(""));
        assert_eq!(t.virt_install_args, args(&[]));
    }

    #[test]
    fn configparser_layout_rules() {
        let t = template(
            "# leading comment\n[a]\n  desc: indented key\nvirt-builder-args =\n    --a\n# comment inside\n    --b\n  ; indented comment\n\n    --c 'x # y'\nos-type = linux ; not a comment\narch = x86_64 \\\nos-variant = debian11\n",
            "a",
        );
        assert_eq!(t.desc.as_deref(), Some("indented key"));
        assert_eq!(t.virt_builder_args, args(&["--a", "--b", "--c", "x # y"]));
        assert_eq!(t.os_type.as_deref(), Some("linux ; not a comment"));
        assert_eq!(
            t.arch.as_deref(),
            Some("x86_64 \\"),
            "a trailing backslash does not join lines"
        );
        assert_eq!(t.os_variant.as_deref(), Some("debian11"));
    }

    #[test]
    fn crlf_and_bom() {
        let t = template(
            "\u{feff}[a]\r\ndesc = x\r\nvirt-builder-args = --a\r\n  --b\r\n",
            "a",
        );
        assert_eq!(t.desc.as_deref(), Some("x"));
        assert_eq!(t.virt_builder_args, args(&["--a", "--b"]));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let table: &[(&str, usize, &str)] = &[
            ("desc = x\n", 1, "outside any section"),
            ("[a]\njunk line\n", 2, "expected `key = value`"),
            ("[a]\n= v\n", 2, "missing key"),
            (
                "[a]\nx = 1\ny = 2\nX = 3\n",
                4,
                "duplicate key `x` in section `[a]` (first on line 2)",
            ),
            (
                "[a]\nx = 1\n[b]\n[a]\n",
                4,
                "duplicate section `[a]` (first on line 1)",
            ),
            ("\n\n[a\n", 3, "must end with `]`"),
            ("[a] trailing\n", 1, "must end with `]`"),
            ("[]\n", 1, "invalid section header"),
            ("[a]b]\n", 1, "invalid section header"),
        ];
        for (text, line, want) in table {
            let e = load("", &[text]).expect_err(text);
            assert_eq!(
                e.location(),
                Some((Path::new("/t/0.cfg"), *line)),
                "{text:?}: {e}"
            );
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("malformed `/t/0.cfg` line {line}: ")),
                "{msg}"
            );
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
    }

    #[test]
    fn value_errors_name_file_line_section_key() {
        let table: &[(&str, usize, &str, &str)] = &[
            (
                "[a]\nmemory = lots\n",
                2,
                "memory",
                "`lots` is not a whole number of MiB",
            ),
            ("[a]\n\nMEMORY = 0\n", 3, "memory", "greater than 0"),
            ("[a]\nvcpus = 0\n", 2, "vcpus", "outside the range"),
            (
                "[a]\nimage-format = vmdk\n",
                2,
                "image-format",
                "`vmdk` is not an image format",
            ),
            (
                "[a]\nimage_format = QCOW2\n",
                2,
                "image_format",
                "not an image format",
            ),
            (
                "[a]\naddress-source = lease,carrier-pigeon\n",
                2,
                "address-source",
                "`carrier-pigeon` is not an address source",
            ),
            (
                "[a]\naddress-source = agent agent\n",
                2,
                "address-source",
                "listed twice",
            ),
            ("[a]\nsize = 12Q\n", 2, "size", "unknown unit `Q`"),
            (
                "[a]\npassword-length = 0\n",
                2,
                "password-length",
                "outside the range",
            ),
            (
                "[a]\ndesc = x\nvirt-builder-args = --a\n  --b 'c\n",
                3,
                "virt-builder-args",
                "unbalanced quotes",
            ),
        ];
        for (text, line, key, want) in table {
            let e = load("", &[text]).expect_err(text);
            match &e {
                ConfigError::Value {
                    path,
                    line: l,
                    section,
                    key: k,
                    reason,
                } => {
                    assert_eq!(path, Path::new("/t/0.cfg"));
                    assert_eq!(
                        (l, section.as_str(), k.as_str()),
                        (line, "a", *key),
                        "{text:?}"
                    );
                    assert!(reason.contains(want), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: unexpected {other:?}"),
            }
            assert!(e.to_string().starts_with(&format!(
                "invalid `/t/0.cfg` line {line}, section `[a]`, key `{key}`: "
            )));
        }
    }

    #[test]
    fn default_section_and_errors_in_it() {
        let config = load(
            "[DEFAULT]\npool = p\n[common]\nmemory = 1024\n",
            &["[DEFAULT]\narch = aarch64\n[a]\n[b]\narch = x86_64\n"],
        )
        .unwrap();
        assert_eq!(config.common.pool.as_deref(), Some("p"));
        assert_eq!(config.templates["a"].arch.as_deref(), Some("aarch64"));
        assert_eq!(config.templates["b"].arch.as_deref(), Some("x86_64"));
        assert!(!config.templates.contains_key("DEFAULT"));

        let e = load("", &["[DEFAULT]\nmemory = x\n[a]\n"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid `/t/0.cfg` line 2, section `[DEFAULT]`, key `memory`"),
            "{e}"
        );
    }

    #[test]
    fn warnings_for_unknown_keys_and_sections() {
        let config = load(
            "[common]\nfavourite-colour = blue\n[extra]\npool = x\n",
            &["[a]\nos-version = debian-12\nosversion = typo\n"],
        )
        .unwrap();
        let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "`/s/settings.cfg` line 2: unknown key `favourite-colour` in section `[common]` is ignored",
                "`/t/0.cfg` line 3: unknown key `osversion` in section `[a]` is ignored",
                "`/s/settings.cfg` line 3: section `[extra]` is ignored; `settings.cfg` only uses `[common]`",
            ]
        );
        assert_eq!(
            config.common.pool, None,
            "other sections of settings.cfg are ignored"
        );
    }

    #[test]
    fn overlay_and_defaults() {
        let bottom = Fields {
            pool: Some("a".into()),
            memory: Some(1),
            desc: Some("bottom".into()),
            ..Fields::default()
        };
        let top = Fields {
            memory: Some(2),
            dns_domain: Some(String::new()),
            ..Fields::default()
        };
        let merged = bottom.overlay(&top);
        assert_eq!(merged.pool.as_deref(), Some("a"));
        assert_eq!(merged.memory, Some(2));
        assert_eq!(merged.dns_domain.as_deref(), Some(""));
        assert_eq!(merged.desc.as_deref(), Some("bottom"));
        assert_eq!(
            merged.set_keys(),
            vec!["pool", "dns-domain", "desc", "memory"]
        );

        let d = Fields::builtin_defaults();
        assert_eq!(d.pool.as_deref(), Some("default"));
        assert_eq!(d.username.as_deref(), Some("virt"));
        assert_eq!(
            d.address_source,
            Some(vec![AddressSource::Lease, AddressSource::Agent])
        );
        assert_eq!(d.image_format, Some(ImageFormat::Qcow2));
        assert_eq!((d.memory, d.vcpus), (Some(512), Some(1)));
        assert_eq!(d.graphics.as_deref(), Some("none"));
    }

    #[test]
    fn every_field_in_both_spellings() {
        let value = |key: &str| match kind_of(key).unwrap() {
            Kind::Text => "text",
            Kind::Args => "--flag",
            Kind::Memory => "2048",
            Kind::Vcpus | Kind::Count => "4",
            Kind::Size => "10G",
            Kind::Format => "raw",
            Kind::Sources => "arp, dns",
        };
        for spelling in ["hyphen", "underscore"] {
            let mut text = String::from("[a]\n");
            for key in FIELD_KEYS {
                let written = if spelling == "hyphen" {
                    key.to_string()
                } else {
                    key.replace('-', "_")
                };
                text.push_str(&format!("{written} = {}\n", value(key)));
            }
            let config = load("", &[&text]).unwrap();
            assert!(
                config.warnings.is_empty(),
                "{spelling}: {:?}",
                config.warnings
            );
            let t = &config.templates["a"];
            assert_eq!(t.set_keys(), FIELD_KEYS.to_vec(), "{spelling}");
            assert_eq!(t.memory, Some(2048));
            assert_eq!(t.vcpus, Some(4));
            assert_eq!(t.password_length, Some(4));
            assert_eq!(t.size.as_deref(), Some("10G"));
            assert_eq!(
                t.address_source,
                Some(vec![AddressSource::Arp, AddressSource::Dns])
            );
            assert_eq!(t.virt_customize_args, args(&["--flag"]));
            assert_eq!(t.checksum.as_deref(), Some("text"));
        }
    }

    #[test]
    fn address_source_lists() {
        let table: &[(&str, &[AddressSource])] = &[
            ("agent", &[AddressSource::Agent]),
            ("lease,agent", &[AddressSource::Lease, AddressSource::Agent]),
            (
                "dns arp , lease",
                &[AddressSource::Dns, AddressSource::Arp, AddressSource::Lease],
            ),
        ];
        for (text, want) in table {
            assert_eq!(
                AddressSource::parse_list("address_source", text).unwrap(),
                *want
            );
        }
        let e = AddressSource::parse_list("address_source", " , ").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for `address_source`: must list at least one of `lease`, `agent`, `arp`, `dns`"
        );
    }
}
