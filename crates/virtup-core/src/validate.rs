//! Input validation shared by modules, the CLI and the config reader: names, sizes, memory, vcpus, users.
//!
//! Every check takes the option name so that its error reads
//! "invalid value for `memory`: …" and the user knows which input to fix.

use std::fmt;

/// A rejected input, naming the option it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{option}`: {reason}")]
pub struct ValidationError {
    pub option: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(option: &str, reason: impl Into<String>) -> ValidationError {
        ValidationError {
            option: option.to_string(),
            reason: reason.into(),
        }
    }
}

/// Shows a user-supplied value inside backticks with control and invisible characters escaped,
/// so a stray newline, escape sequence, bidi override or zero-width space cannot garble or
/// disguise the message.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`")?;
        for c in self.0.chars() {
            if is_hidden(c) {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        f.write_str("`")
    }
}

/// Characters a reader cannot see as themselves: controls, and what Rust's `escape_debug` would not
/// print (bidi overrides, zero-width and other format characters, combining marks).
fn is_hidden(c: char) -> bool {
    c.is_control() || (c.escape_debug().next() == Some('\\') && !matches!(c, '\\' | '\'' | '"'))
}

/// Longest instance or template name: a DNS label is at most 63 bytes and the
/// name becomes the guest's hostname.
pub const MAX_NAME_LEN: usize = 63;

/// Largest accepted memory size in MiB (16 TiB); anything above is almost
/// certainly a value given in bytes or KiB by mistake.
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;

/// Largest accepted vCPU count (QEMU's q35 limit is in this range).
pub const MAX_VCPUS: u32 = 1024;

/// Most inventory groups one instance may declare.
pub const MAX_GROUPS: usize = 32;

/// Checks the inventory groups an instance declares (`groups`) and returns them sorted, without
/// repeats (their order means nothing to Ansible, so a reordered list is no change). A name is what
/// Ansible takes as a group without transforming it (letters, digits and `_`, not starting with a
/// digit, at most 64 bytes); `all`, `ungrouped` and `_meta` are Ansible's, `localhost` is the
/// implicit host a group of that name would hide, and names that start with `virtup` are the
/// inventory's own (`virtup_running`, `virtup_template_<name>`, …).
pub fn inventory_groups(option: &str, values: &[String]) -> Result<Vec<String>, ValidationError> {
    let mut out: Vec<String> = Vec::new();
    for (i, g) in values.iter().enumerate() {
        let at = format!("{option}[{}]", i + 1);
        let valid = !g.is_empty()
            && g.len() <= 64
            && g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !g.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(ValidationError::new(
                &at,
                format!(
                    "{} is no inventory group name: letters, digits and `_`, not starting with a \
                     digit, at most 64 bytes",
                    Shown(g)
                ),
            ));
        }
        if matches!(g.as_str(), "all" | "ungrouped" | "_meta" | "localhost")
            || g.to_ascii_lowercase().starts_with("virtup")
        {
            return Err(ValidationError::new(
                &at,
                format!(
                    "{} is a name the inventory uses itself (`all`, `ungrouped`, `_meta`, \
                     `localhost`, and names starting with `virtup`)",
                    Shown(g)
                ),
            ));
        }
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    if out.len() > MAX_GROUPS {
        return Err(ValidationError::new(
            option,
            format!("{} groups; at most {MAX_GROUPS}", out.len()),
        ));
    }
    out.sort();
    Ok(out)
}

/// Checks an instance name or a template's domain name.
///
/// The name becomes a libvirt domain name, a file name under the data dir and
/// the guest hostname, so it must be safe for all three: ASCII letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit, at most 63 bytes, no `..`.
pub fn name(option: &str, value: &str) -> Result<(), ValidationError> {
    let err = |why: &str| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return err(&format!("is longer than {MAX_NAME_LEN} characters"));
    }
    let first = value.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return err("must start with a letter or a digit");
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return err(&format!(
            "contains {}; use only letters, digits, `.`, `_` and `-`",
            describe_char(c)
        ));
    }
    if value.contains("..") {
        return err("must not contain `..`");
    }
    Ok(())
}

/// virtup's own prefix for libvirt names: template domains are `VIRTUP-<template>`, their generation
/// volumes `VIRTUP-<template>-g<N>.<format>` and their config disks `VIRTUP-<template>-config.iso`.
/// No instance may be named into that scheme, in any letter case.
pub const RESERVED_PREFIX: &str = crate::template::DOMAIN_PREFIX;

/// Longest template name: its domain `VIRTUP-<name>` must itself be a valid [`name`].
pub const MAX_TEMPLATE_NAME_LEN: usize = MAX_NAME_LEN - RESERVED_PREFIX.len();

/// Checks the name of an instance that is to exist: a valid [`name`] that is also a host name
/// (RFC 1123 label: letters, digits and inner `-`), because it becomes the guest's hostname, and
/// that does not start with `VIRTUP-`, virtup's naming scheme for templates.
pub fn instance_name(option: &str, value: &str) -> Result<(), ValidationError> {
    removable_instance_name(option, value)?;
    host_label(
        option,
        value,
        "the instance name becomes the guest's hostname",
    )
}

/// Checks the name of an instance that is only to be removed (`state: absent`): [`instance_name`]
/// without the host-name rule, so that leftovers of names earlier versions accepted (`db_primary`)
/// can still be cleaned up. Names in virtup's template scheme are refused all the same.
pub fn removable_instance_name(option: &str, value: &str) -> Result<(), ValidationError> {
    name(option, value)?;
    let prefix = RESERVED_PREFIX.as_bytes();
    if value.len() >= prefix.len() && value.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        return Err(ValidationError::new(
            option,
            format!(
                "{} starts with `{RESERVED_PREFIX}` (in any letter case), virtup's naming scheme for \
                 templates (domains `{RESERVED_PREFIX}<template>`, their volumes and config disks); \
                 choose another name",
                Shown(value)
            ),
        ));
    }
    Ok(())
}

/// Checks the name of a template that is to exist: [`removable_template_name`], and the host name
/// derived from it ([`template_hostname`]) must be an RFC 1123 label, so the name must not end
/// with `-`, `_` or `.`.
pub fn template_name(option: &str, value: &str) -> Result<(), ValidationError> {
    removable_template_name(option, value)?;
    let hostname = template_hostname(value);
    let why = format!(
        "the template's hostname is its name with `/`, `_` and `.` turned into `-` ({})",
        Shown(&hostname)
    );
    // What the rules above leave to go wrong: the last character.
    if let Some(last) = value
        .chars()
        .last()
        .filter(|c| matches!(c, '-' | '_' | '.'))
    {
        return Err(ValidationError::new(
            option,
            format!(
                "{} ends with `{last}`: {why}, and a host name must not end with `-`",
                Shown(value)
            ),
        ));
    }
    host_label(option, &hostname, &why)
}

/// Checks the name of a template section in `templates.d/*.cfg`, or of a template that is only
/// to be removed (`state: absent`).
///
/// virt-up 2.2.0 ships sections such as `[generic/debian10]`, so a template name may be several
/// valid names joined by `/`; callers derive the domain name, which must fit in 63 characters.
pub fn removable_template_name(option: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    for segment in value.split('/') {
        name(option, segment).map_err(|e| {
            ValidationError::new(
                option,
                format!("{} has an invalid part: {}", Shown(value), e.reason),
            )
        })?;
    }
    if value.len() > MAX_TEMPLATE_NAME_LEN {
        return Err(ValidationError::new(
            option,
            format!(
                "{} is longer than {MAX_TEMPLATE_NAME_LEN} characters (its domain name \
                 `{RESERVED_PREFIX}<name>` must fit in {MAX_NAME_LEN})",
                Shown(value)
            ),
        ));
    }
    Ok(())
}

/// The hostname of a template: its name with `/`, `_` and `.` turned into `-`
/// (`generic/debian10` → `generic-debian10`). [`template_name`] makes sure it is a host name.
pub fn template_hostname(template: &str) -> String {
    template.replace(['/', '_', '.'], "-")
}

/// A byte count as a person reads it: `2 GiB`, `1536 MiB`, else `N bytes`.
pub fn show_bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    match n {
        0 => "0 bytes".into(),
        n if n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n % 1024 == 0 => format!("{} KiB", n / 1024),
        n => format!("{n} bytes"),
    }
}

/// A fixed guest address: dotted-quad IPv4 (the form libvirt's DHCP host entries take), one a guest
/// can hold (not unspecified, loopback, link-local, multicast or broadcast). Whether it fits the
/// network is checked against the network itself.
pub fn ipv4_address(option: &str, value: &str) -> Result<std::net::Ipv4Addr, ValidationError> {
    let ip: std::net::Ipv4Addr = value.parse().map_err(|_| {
        ValidationError::new(
            option,
            format!(
                "{} is not an IPv4 address (such as 192.168.122.50)",
                Shown(value)
            ),
        )
    })?;
    let why = if ip.is_unspecified() {
        "is the unspecified address"
    } else if ip.is_loopback() {
        "is a loopback address"
    } else if ip.is_link_local() {
        "is a link-local address"
    } else if ip.is_multicast() || ip.is_broadcast() {
        "is not a unicast address"
    } else {
        return Ok(ip);
    };
    Err(ValidationError::new(
        option,
        format!("{} {why}", Shown(value)),
    ))
}

/// Checks that `name.domain`, an instance's FQDN, fits in 253 characters; both parts are checked
/// on their own by [`instance_name`] and [`dns_domain`]. `option` is the domain's option.
pub fn fqdn(option: &str, name: &str, domain: &str) -> Result<(), ValidationError> {
    let len = name.len() + 1 + domain.len();
    if len > 253 {
        return Err(ValidationError::new(
            option,
            format!(
                "{} makes the host name `{name}.…` {len} characters long; a domain name has at most 253",
                Shown(domain)
            ),
        ));
    }
    Ok(())
}

/// Checks that `value` is an RFC 1123 host name label; `why` says where the host name comes from.
fn host_label(option: &str, value: &str, why: &str) -> Result<(), ValidationError> {
    let err = |what: String| {
        Err(ValidationError::new(
            option,
            format!(
                "{} {what}: {why}, and a host name has only letters, digits and `-`, \
                 neither first nor last, at most {MAX_NAME_LEN} characters",
                Shown(value)
            ),
        ))
    };
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return err(format!("contains {}", describe_char(c)));
    }
    if value.starts_with('-') {
        return err("starts with `-`".to_string());
    }
    if value.ends_with('-') {
        return err("ends with `-`".to_string());
    }
    Ok(())
}

/// Checks a login user name: what `useradd` accepts on common distributions
/// without extra flags (lowercase letters, digits, `_`, `-`, at most 32 bytes), and not `root`,
/// which virtup cannot create.
pub fn user_name(option: &str, value: &str) -> Result<(), ValidationError> {
    let err = |why: &str| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    if value.len() > 32 {
        return err("is longer than 32 characters");
    }
    let first = value.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first == b'_') {
        return err("must start with a lowercase letter or `_`");
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
    {
        return err(&format!(
            "contains {}; use only lowercase letters, digits, `_` and `-`",
            describe_char(c)
        ));
    }
    if value == "root" {
        // The guest's first boot refuses it too, but only after the disk was made.
        return err(
            "is the superuser every guest has; virtup creates the login user, so choose another \
             name (root's password is `root_password`)",
        );
    }
    Ok(())
}

/// Checks a DNS domain appended to hostnames (`example.com`).
pub fn dns_domain(option: &str, value: &str) -> Result<(), ValidationError> {
    let err = |why: String| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    if value.len() > 253 {
        return err("is longer than 253 characters".to_string());
    }
    for label in value.split('.') {
        if label.is_empty() {
            return err("has an empty label".to_string());
        }
        if label.len() > 63 {
            return err(format!("has a label longer than 63 characters: `{label}`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err(format!(
                "has a label starting or ending with `-`: `{label}`"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return err(format!("contains {}", describe_char(c)));
        }
    }
    Ok(())
}

/// Longest value accepted for a word handed to a virt tool (`os_variant`, `arch`, `graphics`…).
pub const MAX_TOOL_WORD_LEN: usize = 255;

/// Checks a word that virtup hands to virt-install or virt-builder as one argument (`os_variant`,
/// `os_type`, `arch`, `graphics`): osinfo ids (`debian11`, `http://debian.org/debian/12`) and
/// virt-install option strings (`vnc,listen=127.0.0.1`) pass; quotes, `<`, `&`, shell
/// metacharacters, spaces, `..` and non-ASCII do not, so a typo or an injection fails here
/// instead of minutes later in a half-built template.
pub fn tool_word(option: &str, value: &str) -> Result<(), ValidationError> {
    let err = |why: &str| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    if value.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    if value.len() > MAX_TOOL_WORD_LEN {
        return err(&format!("is longer than {MAX_TOOL_WORD_LEN} characters"));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return err("must start with a letter or a digit");
    }
    if let Some(c) = value.chars().find(|c| {
        !(c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | '-' | ',' | '=' | ':' | '/' | '+' | '@'))
    }) {
        return err(&format!(
            "contains {}; use only letters, digits and `._-,=:/+@`",
            describe_char(c)
        ));
    }
    if value.contains("..") {
        return err("must not contain `..`");
    }
    Ok(())
}

/// Longest accepted `wait_timeout`: a week. Larger values are mistakes (milliseconds?) and
/// overflow deadlines computed from them.
pub const MAX_WAIT_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Checks a timeout in seconds.
pub fn wait_timeout_secs(option: &str, value: i64) -> Result<u64, ValidationError> {
    match u64::try_from(value) {
        Ok(s) if (1..=MAX_WAIT_TIMEOUT_SECS).contains(&s) => Ok(s),
        _ => Err(ValidationError::new(
            option,
            format!("{value} is outside the range 1..={MAX_WAIT_TIMEOUT_SECS} seconds"),
        )),
    }
}

/// Parses a disk size into bytes: plain bytes (`1073741824`), or a number with
/// a binary unit `K`, `M`, `G`, `T`, `P`, `E`, optionally followed by `i`, `B`
/// or `iB` (`10G`, `512M`, `20GiB`), or `B` alone. Units are powers of 1024,
/// as for virt-builder and qemu-img, whatever the spelling.
pub fn parse_size(option: &str, value: &str) -> Result<u64, ValidationError> {
    let err = |why: &str| {
        Err(ValidationError::new(
            option,
            format!("{} {why}", Shown(value)),
        ))
    };
    let text = value.trim();
    if text.is_empty() {
        return Err(ValidationError::new(option, "must not be empty"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return err("is not a size (expected a number with an optional unit, like `10G`)");
    }
    let number: u64 = match digits.parse() {
        Ok(n) => n,
        Err(_) => return err("is too large"),
    };
    let shift = match unit_shift(unit) {
        Some(shift) => shift,
        None => {
            return err(&format!(
                "has an unknown unit {} (expected one of B, K, M, G, T, P, E, optionally followed by iB)",
                Shown(unit)
            ))
        }
    };
    let bytes = match number.checked_mul(1u64 << shift) {
        Some(bytes) => bytes,
        None => return err("is too large"),
    };
    if bytes == 0 {
        return err("must be greater than zero");
    }
    Ok(bytes)
}

fn unit_shift(unit: &str) -> Option<u32> {
    let upper = unit.to_ascii_uppercase();
    if upper.is_empty() || upper == "B" {
        return Some(0);
    }
    let mut chars = upper.chars();
    let prefix = chars.next()?;
    let rest = chars.as_str();
    if !matches!(rest, "" | "I" | "B" | "IB") {
        return None;
    }
    match prefix {
        'K' => Some(10),
        'M' => Some(20),
        'G' => Some(30),
        'T' => Some(40),
        'P' => Some(50),
        'E' => Some(60),
        _ => None,
    }
}

/// Checks a memory size in MiB.
pub fn memory_mib(option: &str, value: u64) -> Result<u64, ValidationError> {
    if value == 0 {
        return Err(ValidationError::new(option, "must be greater than 0 MiB"));
    }
    if value > MAX_MEMORY_MIB {
        return Err(ValidationError::new(
            option,
            format!("{value} MiB is more than the maximum of {MAX_MEMORY_MIB} MiB (16 TiB); memory is given in MiB"),
        ));
    }
    Ok(value)
}

/// Parses a memory size in MiB from text (config files, CLI).
pub fn parse_memory_mib(option: &str, value: &str) -> Result<u64, ValidationError> {
    let n = parse_whole_number(option, value, "a whole number of MiB")?;
    memory_mib(option, n)
}

/// Checks a vCPU count.
pub fn vcpus(option: &str, value: u64) -> Result<u32, ValidationError> {
    if value == 0 || value > u64::from(MAX_VCPUS) {
        return Err(ValidationError::new(
            option,
            format!("{value} is outside the range 1..={MAX_VCPUS}"),
        ));
    }
    Ok(value as u32)
}

/// Parses a vCPU count from text.
pub fn parse_vcpus(option: &str, value: &str) -> Result<u32, ValidationError> {
    let n = parse_whole_number(option, value, "a whole number")?;
    vcpus(option, n)
}

pub(crate) fn parse_whole_number(
    option: &str,
    value: &str,
    expected: &str,
) -> Result<u64, ValidationError> {
    let text = value.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            option,
            format!("{} is not {expected}", Shown(value)),
        ));
    }
    text.parse()
        .map_err(|_| ValidationError::new(option, format!("{} is too large", Shown(value))))
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        '/' => "`/`".to_string(),
        c if c.is_control() => format!("the control character {:?}", c),
        c if is_hidden(c) => format!("the invisible character `{}`", c.escape_debug()),
        c if !c.is_ascii() => format!("the non-ASCII character `{c}`"),
        c => format!("`{c}`"),
    }
}

/// One item of a list-of-dictionaries option (`disks[2]`, `nics[1]`): the dictionary, holding no
/// key but `keys`; `what` says what the item must be (`a disk (a dictionary with `size`)`).
pub fn dict_item<'a>(
    at: &str,
    item: &'a serde_json::Value,
    what: &str,
    keys: &[&str],
) -> Result<&'a serde_json::Map<String, serde_json::Value>, ValidationError> {
    let serde_json::Value::Object(map) = item else {
        return Err(ValidationError::new(
            at,
            format!("must be {what}, not {}", json_kind(item)),
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(ValidationError::new(
            at,
            format!(
                "has an unknown key {} (expected {})",
                Shown(unknown),
                keys.join(", ")
            ),
        ));
    }
    Ok(map)
}

/// Key `key` of such an item as text (a number as its digits); absent or null is `None`, as
/// Ansible's `omit` and YAML's `~` mean.
pub fn item_text(
    at: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<String>, ValidationError> {
    use serde_json::Value;
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ValidationError::new(
            &format!("{at}.{key}"),
            format!("must be a string, not {}", json_kind(other)),
        )),
    }
}

/// A JSON value's kind, in words, for messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dictionary",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn inventory_groups_are_ansible_names_and_not_the_inventorys_own() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            inventory_groups("groups", &v(&["web", "_x", "db2", "web"])).unwrap(),
            v(&["_x", "db2", "web"])
        );
        for (bad, needle) in [
            ("", "no inventory group name"),
            ("2web", "no inventory group name"),
            ("web-1", "no inventory group name"),
            ("we b", "no inventory group name"),
            ("web\n", "no inventory group name"),
            ("all", "uses itself"),
            ("ungrouped", "uses itself"),
            ("_meta", "uses itself"),
            ("localhost", "uses itself"),
            ("virtup_running", "uses itself"),
            ("VirtUp", "uses itself"),
        ] {
            let err = inventory_groups("groups", &v(&["ok", bad])).unwrap_err();
            assert_eq!(err.option, "groups[2]", "{bad:?}");
            assert!(err.reason.contains(needle), "{bad:?}: {err}");
        }
        assert!(inventory_groups("groups", &v(&[&"g".repeat(65)])).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("g{i}")).collect();
        assert!(inventory_groups("groups", &many)
            .unwrap_err()
            .reason
            .contains("at most 32"));
    }
    use super::*;

    #[test]
    fn byte_counts_read_as_people_write_sizes() {
        assert_eq!(show_bytes(2 << 30), "2 GiB");
        assert_eq!(show_bytes(1536 << 20), "1536 MiB");
        assert_eq!(show_bytes(512 << 10), "512 KiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }

    #[test]
    fn guest_addresses() {
        assert_eq!(
            ipv4_address("address", "192.168.122.50").unwrap(),
            std::net::Ipv4Addr::new(192, 168, 122, 50)
        );
        for (bad, says) in [
            ("192.168.122", "not an IPv4 address"),
            ("fd00::5", "not an IPv4 address"),
            (" 10.0.0.5", "not an IPv4 address"),
            ("0.0.0.0", "unspecified"),
            ("127.0.0.9", "loopback"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "not a unicast"),
            ("255.255.255.255", "not a unicast"),
        ] {
            let err = ipv4_address("address", bad).unwrap_err().to_string();
            assert!(
                err.contains("`address`") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn names() {
        let ok = [
            "web1",
            "a",
            "Web-1.example",
            "db_primary",
            "9lives",
            &"x".repeat(63),
        ];
        for v in ok {
            assert_eq!(name("name", v), Ok(()), "{v:?} should be accepted");
        }
        let bad: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("../x", "must start with a letter or a digit"),
            ("a/b", "contains `/`"),
            ("a b", "contains a space"),
            ("-a", "must start with a letter or a digit"),
            (".a", "must start with a letter or a digit"),
            ("a..b", "must not contain `..`"),
            ("caf\u{e9}", "non-ASCII character"),
            ("a\nb", "control character"),
            (&"x".repeat(64), "longer than 63"),
            ("a:b", "contains `:`"),
            ("ab\u{202e}cd", "invisible character `\\u{202e}`"),
            ("a\u{200b}b", "invisible character `\\u{200b}`"),
            ("vm\u{1f600}", "non-ASCII character"),
        ];
        for (v, want) in bad {
            let e = name("name", v).expect_err(v);
            let msg = e.to_string();
            assert!(
                msg.starts_with("invalid value for `name`: "),
                "{v:?}: {msg}"
            );
            assert!(msg.contains(want), "{v:?}: {msg:?} lacks {want:?}");
            assert!(!msg.contains('\n'), "{v:?}: message must stay on one line");
            assert!(
                !msg.contains(['\u{202e}', '\u{200b}']),
                "{v:?}: an invisible character is shown raw: {msg:?}"
            );
        }
    }

    #[test]
    fn tool_words() {
        for v in [
            "debian11",
            "http://debian.org/debian/12",
            "vnc,listen=127.0.0.1",
            "x86_64",
            "linux",
        ] {
            assert_eq!(tool_word("os_variant", v), Ok(()), "{v:?}");
        }
        for v in [
            "",
            "x'/><devices>",
            "&xxe;",
            "x]]>",
            "$(id)",
            "a;b",
            "a b",
            "a\nb",
            "a\0b",
            "ab\u{202e}cd",
            "../x",
            "a/../b",
            "/etc/passwd",
            &"a".repeat(256),
        ] {
            let e = tool_word("os_variant", v).expect_err(v);
            assert_eq!(e.option, "os_variant");
            assert!(!e.to_string().contains(['\n', '\0', '\u{202e}']), "{e}");
        }
    }

    #[test]
    fn wait_timeouts() {
        assert_eq!(wait_timeout_secs("wait_timeout", 600), Ok(600));
        for v in [0, -1, i64::MAX, MAX_WAIT_TIMEOUT_SECS as i64 + 1] {
            let e = wait_timeout_secs("wait_timeout", v).expect_err("out of range");
            assert!(
                e.to_string()
                    .starts_with("invalid value for `wait_timeout`"),
                "{e}"
            );
        }
    }

    #[test]
    fn template_names() {
        for v in ["default", "generic/debian10", "a/b/c"] {
            assert_eq!(template_name("name", v), Ok(()), "{v:?}");
        }
        for v in ["", "/a", "a/", "a//b", "../a", "a/..", "a b/c"] {
            assert!(
                template_name("name", v).is_err(),
                "{v:?} should be rejected"
            );
        }
    }

    /// (value, accepted to exist, accepted for removal, what the refusal says).
    type NameRow<'a> = (&'a str, bool, bool, &'a str);

    fn check_names(
        rows: &[NameRow],
        strict: fn(&str, &str) -> Result<(), ValidationError>,
        lenient: fn(&str, &str) -> Result<(), ValidationError>,
    ) {
        for (v, ok, removable, want) in rows {
            for (rule, accepted, which) in [
                (strict, ok, "to exist"),
                (lenient, removable, "for removal"),
            ] {
                match rule("name", v) {
                    Ok(()) => assert!(*accepted, "{v:?} should be refused {which}"),
                    Err(e) => {
                        assert!(!*accepted, "{v:?} should be accepted {which}: {e}");
                        let msg = e.to_string();
                        assert!(
                            msg.starts_with("invalid value for `name`: "),
                            "{v:?}: {msg}"
                        );
                        assert!(
                            msg.contains(want),
                            "{v:?} ({which}): {msg:?} lacks {want:?}"
                        );
                        assert!(!msg.contains('\n'), "{v:?}: {msg:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn instance_names_are_host_names_outside_virtups_scheme() {
        let long = "x".repeat(63);
        let rows: &[NameRow] = &[
            ("web1", true, true, ""),
            ("Web-1", true, true, ""),
            ("9lives", true, true, ""),
            ("a", true, true, ""),
            (&long, true, true, ""),
            ("virtupper", true, true, ""),
            ("my-VIRTUP-x", true, true, ""),
            // Valid libvirt and file names, but never a hostname: refused up front, not after the disk
            // is made; still removable, as earlier versions left such leftovers behind.
            (
                "db_primary",
                false,
                true,
                "contains `_`: the instance name becomes the guest's hostname",
            ),
            (
                "web.1",
                false,
                true,
                "contains `.`: the instance name becomes the guest's hostname",
            ),
            (
                "web1-",
                false,
                true,
                "`web1-` ends with `-`: the instance name becomes",
            ),
            ("web1.", false, true, "contains `.`"),
            // virtup's own scheme: template domains, generation volumes, config disks.
            ("VIRTUP-debian-12", false, false, "starts with `VIRTUP-`"),
            (
                "VIRTUP-debian-12-g1",
                false,
                false,
                "virtup's naming scheme for templates",
            ),
            ("virtup-debian-12", false, false, "in any letter case"),
            ("Virtup-x", false, false, "starts with `VIRTUP-`"),
            ("VIRTUP-", false, false, "starts with `VIRTUP-`"),
            (
                "virtup-kvm-probe-1-2",
                false,
                false,
                "starts with `VIRTUP-`",
            ),
            // Still refused by the general rules.
            ("", false, false, "must not be empty"),
            ("-a", false, false, "must start with a letter or a digit"),
            ("a/b", false, false, "contains `/`"),
            ("a..b", false, false, "must not contain `..`"),
            (&"x".repeat(64), false, false, "longer than 63"),
            ("ab\u{202e}cd", false, false, "invisible character"),
        ];
        check_names(rows, instance_name, removable_instance_name);
    }

    #[test]
    fn template_names_give_host_names_and_fitting_domains() {
        let longest = "t".repeat(MAX_TEMPLATE_NAME_LEN);
        let too_long = "t".repeat(MAX_TEMPLATE_NAME_LEN + 1);
        let rows: &[NameRow] = &[
            ("debian-12", true, true, ""),
            ("generic/debian10", true, true, ""),
            ("db_base", true, true, ""),
            ("deb.12", true, true, ""),
            ("a_/b", true, true, ""),
            ("VIRTUP-x", true, true, ""),
            (&longest, true, true, ""),
            // The hostname `<name with / _ . as ->` would end with `-`: virt-builder would run for
            // minutes and the first-boot setup would refuse it afterwards.
            ("debian-", false, true, "ends with `-`"),
            (
                "debian_",
                false,
                true,
                "ends with `_`: the template's hostname is its name",
            ),
            ("debian.", false, true, "ends with `.`"),
            ("generic/debian_", false, true, "(`generic-debian-`)"),
            // `VIRTUP-<name>` is a domain name and a data dir file name: at most 63 characters.
            (&too_long, false, false, "longer than 56 characters"),
            ("", false, false, "must not be empty"),
            ("a//b", false, false, "has an invalid part"),
            ("../a", false, false, "has an invalid part"),
        ];
        check_names(rows, template_name, removable_template_name);
        assert_eq!(
            template_hostname("generic/debian_10.x"),
            "generic-debian-10-x"
        );
    }

    #[test]
    fn fqdns() {
        let domain = format!(
            "{}.{}.{}.{}",
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(59)
        );
        assert_eq!(domain.len(), 251);
        assert_eq!(dns_domain("dns_domain", &domain), Ok(()));
        assert_eq!(fqdn("dns_domain", "a", &domain), Ok(()));
        let e = fqdn("dns_domain", "ab", &domain).expect_err("254 characters");
        assert_eq!(e.option, "dns_domain");
        assert!(e.to_string().contains("254 characters"), "{e}");
    }

    #[test]
    fn user_names() {
        for v in ["virt", "_svc", "ansible-user", "u1", &"a".repeat(32)] {
            assert_eq!(user_name("user", v), Ok(()), "{v:?}");
        }
        for v in [
            "",
            "Virt",
            "root",
            "1user",
            "-x",
            "a b",
            "a:b",
            "us\u{e9}r",
            &"a".repeat(33),
        ] {
            let e = user_name("user", v).expect_err(v);
            assert_eq!(e.option, "user");
        }
    }

    #[test]
    fn dns_domains() {
        for v in ["example.com", "lab", "a-b.c1.example"] {
            assert_eq!(dns_domain("dns_domain", v), Ok(()), "{v:?}");
        }
        for v in [
            "",
            ".example.com",
            "example..com",
            "-a.com",
            "a-.com",
            "a_b.com",
            "ex ample",
        ] {
            assert!(dns_domain("dns_domain", v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn sizes() {
        let table: &[(&str, u64)] = &[
            ("1", 1),
            ("1073741824", 1 << 30),
            ("512B", 512),
            ("4K", 4 << 10),
            ("512M", 512 << 20),
            ("512m", 512 << 20),
            ("10G", 10 << 30),
            ("20GiB", 20 << 30),
            ("20Gi", 20 << 30),
            ("20GB", 20 << 30),
            ("2T", 2 << 40),
            ("1P", 1 << 50),
            ("3E", 3 << 60),
            (" 10G ", 10 << 30),
        ];
        for (v, want) in table {
            assert_eq!(parse_size("size", v), Ok(*want), "{v:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("12Q", "unknown unit `Q`"),
            ("G", "is not a size"),
            ("1.5G", "unknown unit `.5G`"),
            ("-1G", "is not a size"),
            ("0", "greater than zero"),
            ("0G", "greater than zero"),
            ("10 G", "unknown unit"),
            ("10GiBs", "unknown unit"),
            ("16E", "too large"),
            ("99999999999999999999", "too large"),
        ];
        for (v, want) in bad {
            let msg = parse_size("size", v).expect_err(v).to_string();
            assert!(msg.starts_with("invalid value for `size`"), "{msg}");
            assert!(msg.contains(want), "{v:?}: {msg:?} lacks {want:?}");
        }
    }

    #[test]
    fn memory_and_vcpus() {
        assert_eq!(parse_memory_mib("memory", "512"), Ok(512));
        assert_eq!(parse_memory_mib("memory", " 2048 "), Ok(2048));
        assert_eq!(parse_memory_mib("memory", "16777216"), Ok(MAX_MEMORY_MIB));
        for (v, want) in [
            ("0", "greater than 0"),
            ("", "not a whole number of MiB"),
            ("2G", "not a whole number of MiB"),
            ("-1", "not a whole number of MiB"),
            ("16777217", "more than the maximum"),
            ("99999999999999999999999", "too large"),
        ] {
            let msg = parse_memory_mib("memory", v).expect_err(v).to_string();
            assert!(msg.starts_with("invalid value for `memory`"), "{msg}");
            assert!(msg.contains(want), "{v:?}: {msg:?} lacks {want:?}");
        }
        assert_eq!(parse_vcpus("vcpus", "1"), Ok(1));
        assert_eq!(parse_vcpus("vcpus", "1024"), Ok(1024));
        for v in ["0", "1025", "two", "", "1.5"] {
            let e = parse_vcpus("vcpus", v).expect_err(v);
            assert_eq!(e.option, "vcpus");
        }
    }
}
