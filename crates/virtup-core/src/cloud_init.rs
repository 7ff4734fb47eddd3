//! cloud-init data a user passes to an instance's first boot (`cloud_init`): checked, and rendered as the texts of a NoCloud seed.
//!
//! virtup gives every clone its identity (hostname, SSH host keys, machine-id) through its own
//! config disk; cloud-init is told by the template to leave hostname and host keys alone. A user's
//! user-data or vendor-data is merged over that system config, so keys that would take the identity
//! back are refused here, before anything is made. A shell script or a MIME part can still change
//! anything as root: that is the user's own code, and `running` still proves the pinned host key.

use serde_json::{Map, Value};

use crate::validate::{json_kind, Shown, ValidationError};

/// The keys of `cloud_init`, each a NoCloud file.
pub const KEYS: [&str; 3] = ["user_data", "network_config", "vendor_data"];

/// The most bytes one text may have. cloud-init reads the seed into memory at every boot; a
/// larger payload belongs in a file the user-data fetches or a data disk.
pub const MAX_BYTES: usize = 256 * 1024;

/// cloud-config keys that would undo the identity virtup gave the guest: its hostname (cloud-init
/// would set another, or the FQDN), its pinned host keys (deleted, replaced or regenerated). `<<`
/// merges a mapping into the top level, where such a key could hide.
pub const IDENTITY_KEYS: [&str; 8] = [
    "hostname",
    "fqdn",
    "preserve_hostname",
    "prefer_fqdn_over_hostname",
    "ssh_keys",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "<<",
];

/// The texts of the NoCloud files the user gave, as cloud-init reads them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CloudInit {
    /// `user-data`: cloud-config, a script, a MIME multipart document…
    pub user_data: Option<String>,
    /// `network-config`: network config version 1 or 2.
    pub network_config: Option<String>,
    /// `vendor-data`: as user-data, applied before it.
    pub vendor_data: Option<String>,
}

impl std::fmt::Debug for CloudInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // user-data often holds passwords or tokens: only the sizes are shown.
        let size = |t: &Option<String>| t.as_ref().map(String::len);
        f.debug_struct("CloudInit")
            .field("user_data_bytes", &size(&self.user_data))
            .field("network_config_bytes", &size(&self.network_config))
            .field("vendor_data_bytes", &size(&self.vendor_data))
            .finish()
    }
}

impl CloudInit {
    /// The files, named as NoCloud names them, in a fixed order.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        [
            ("user-data", &self.user_data),
            ("network-config", &self.network_config),
            ("vendor-data", &self.vendor_data),
        ]
        .into_iter()
        .filter_map(|(name, text)| text.as_deref().map(|t| (name, t)))
        .collect()
    }

    /// A digest of the texts, kept in the instance's metadata so a later, different `cloud_init`
    /// can be told apart from the same one without keeping the texts.
    pub fn digest(&self) -> String {
        let mut digest = crate::digest::InputDigest::new("virtup-cloud-init-v1");
        digest
            .optional("user-data", self.user_data.as_deref())
            .optional("network-config", self.network_config.as_deref())
            .optional("vendor-data", self.vendor_data.as_deref());
        digest.finish()
    }
}

/// `cloud_init` as the module gets it: a dictionary of `user_data`, `network_config` and
/// `vendor_data`, each a string (the file as is) or a dictionary (written as `#cloud-config` JSON for
/// user-data and vendor-data, as JSON for network-config: JSON is YAML). Errors name `option.key`.
pub fn parse(option: &str, value: &Value) -> Result<CloudInit, ValidationError> {
    let map = crate::validate::dict_item(option, value, "a dictionary", &KEYS)?;
    let mut out = CloudInit::default();
    for key in KEYS {
        let at = format!("{option}.{key}");
        let text = match map.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(m)) => render_mapping(&at, key, m)?,
            Some(other) => {
                return Err(ValidationError::new(
                    &at,
                    format!("must be a string or a dictionary, not {}", json_kind(other)),
                ))
            }
        };
        check_text(&at, key, &text)?;
        match key {
            "user_data" => out.user_data = Some(text),
            "network_config" => out.network_config = Some(text),
            _ => out.vendor_data = Some(text),
        }
    }
    if out.files().is_empty() {
        return Err(ValidationError::new(
            option,
            format!("gives nothing: set one of {}", KEYS.join(", ")),
        ));
    }
    Ok(out)
}

fn render_mapping(
    at: &str,
    key: &str,
    map: &Map<String, Value>,
) -> Result<String, ValidationError> {
    if map.is_empty() {
        return Err(ValidationError::new(at, "is an empty dictionary"));
    }
    let json = serde_json::to_string_pretty(map)
        .map_err(|e| ValidationError::new(at, format!("cannot be written as JSON: {e}")))?;
    // JSON is YAML, but for characters YAML does not print (DEL, C1 controls) or reads as line
    // breaks (NEL, U+2028/9): those only occur inside strings here, and are escaped as YAML reads them.
    let json: String = json
        .chars()
        .map(|c| {
            if yaml_printable(c) {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    Ok(if key == "network_config" {
        format!("{json}\n")
    } else {
        format!("#cloud-config\n{json}\n")
    })
}

/// YAML 1.1's printable set, less its line breaks beyond LF and CR.
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{a0}'..='\u{2027}' | '\u{202a}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

fn check_text(at: &str, key: &str, text: &str) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::new(at, "is empty"));
    }
    if text.len() > MAX_BYTES {
        return Err(ValidationError::new(
            at,
            format!(
                "has {} bytes, more than the {MAX_BYTES} a NoCloud seed here may carry",
                text.len()
            ),
        ));
    }
    if text.contains('\0') {
        return Err(ValidationError::new(at, "contains a NUL byte"));
    }
    if key == "network_config" {
        return check_network_config(at, text);
    }
    let keys = if is_mime(text) {
        mime_cloud_config_keys(at, text)?
    } else {
        match sniff(text) {
            Some(kind) => keys_of(at, kind, text, None)?,
            None => {
                return Err(ValidationError::new(
                    at,
                    "does not start with a type cloud-init knows (`#cloud-config`, `#!`, \
                     `#cloud-boothook`, `#include`, `## template: jinja`…) and has no MIME headers, \
                     so cloud-init would ignore it; give a dictionary to have it written as \
                     `#cloud-config`",
                ))
            }
        }
    };
    refuse_identity_keys(at, &keys)
}

fn refuse_identity_keys(at: &str, keys: &[String]) -> Result<(), ValidationError> {
    match keys.iter().find(|k| IDENTITY_KEYS.contains(&k.as_str())) {
        Some(k) => Err(ValidationError::new(
            at,
            format!(
                "sets {}, which would undo the identity virtup gives the instance (its hostname \
                 and pinned SSH host keys); leave it out ({} are refused)",
                Shown(k),
                IDENTITY_KEYS.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// A network config names its `version` (at the top, or under `network:`).
fn check_network_config(at: &str, text: &str) -> Result<(), ValidationError> {
    let named = |line: &str| {
        let t = line.trim_start().trim_start_matches(['"', '\'']);
        t.starts_with("version") || t.starts_with("network")
    };
    let json_named = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        v.as_object()
            .map(|m| m.contains_key("version") || m.contains_key("network"))
    });
    if json_named == Some(true) || (json_named.is_none() && text.lines().any(named)) {
        return Ok(());
    }
    Err(ValidationError::new(
        at,
        "has no `version` (cloud-init's network config version 1 or 2)",
    ))
}

/// What cloud-init makes of a text by its start (its `type_from_starts_with`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    CloudConfig,
    /// `## template: jinja`: rendered, then sniffed again.
    Jinja,
    /// A script, boothook, part handler, include list, archive or JSON patch: the user's own code
    /// or references, run or fetched by cloud-init; not read here.
    NotRead,
}

/// As cloud-init 22.4 sniffs a text: lowercased, after leading whitespace, the longest marker first.
fn sniff(text: &str) -> Option<Sniffed> {
    const MARKERS: [(&str, Sniffed); 9] = [
        ("#cloud-config-archive", Sniffed::NotRead),
        ("#cloud-config-jsonp", Sniffed::NotRead),
        ("## template: jinja", Sniffed::Jinja),
        ("#cloud-boothook", Sniffed::NotRead),
        ("#include-once", Sniffed::NotRead),
        ("#cloud-config", Sniffed::CloudConfig),
        ("#part-handler", Sniffed::NotRead),
        ("#include", Sniffed::NotRead),
        ("#!", Sniffed::NotRead),
    ];
    let head: String = text
        .trim_start()
        .chars()
        .take(32)
        .collect::<String>()
        .to_lowercase();
    MARKERS
        .iter()
        .find(|(marker, _)| head.starts_with(marker))
        .map(|&(_, kind)| kind)
}

/// cloud-init reads a text as MIME when `mime-version:` appears in its first 4096 bytes.
fn is_mime(text: &str) -> bool {
    let head = &text.as_bytes()[..text.len().min(4096)];
    head.to_ascii_lowercase()
        .windows(b"mime-version:".len())
        .any(|w| w == b"mime-version:")
}

/// The top-level keys of a sniffed text (of MIME part `part`, for messages).
fn keys_of(
    at: &str,
    kind: Sniffed,
    text: &str,
    part: Option<usize>,
) -> Result<Vec<String>, ValidationError> {
    let (skipped, rest) = after_marker_line(text);
    match kind {
        Sniffed::CloudConfig => yaml_keys(at, rest, skipped, part, false),
        // A template whose rendering is cloud-config: its keys are read with Jinja's own lines
        // (`{% … %}`, `{# … #}`) left out; what it renders as something else is not read.
        Sniffed::Jinja => match sniff(rest) {
            Some(Sniffed::CloudConfig) => {
                let (more, body) = after_marker_line(rest);
                yaml_keys(at, body, skipped + more, part, true)
            }
            _ => Ok(Vec::new()),
        },
        Sniffed::NotRead => Ok(Vec::new()),
    }
}

/// The text after its marker line (and the blank lines before it), and how many lines that was.
fn after_marker_line(text: &str) -> (usize, &str) {
    let trimmed = text.trim_start();
    let blank_lines = text[..text.len() - trimmed.len()].matches('\n').count();
    match trimmed.split_once('\n') {
        Some((_, rest)) => (blank_lines + 1, rest),
        None => (blank_lines + 1, ""),
    }
}

/// The top-level keys of the cloud-config in a MIME document, as cloud-init finds it: the
/// `text/cloud-config` and `text/jinja2` parts, and the `text/plain`, `text/x-not-multipart` and
/// `text/x-shellscript` parts whose start says cloud-config. Refused, as not read here: other
/// transfer encodings than base64, gzip parts, nested multiparts and messages, and MIME this
/// reading would split otherwise than Python's email parser (lone CRs, `From ` lines, boundaries
/// with quotes, escapes or RFC 2231 forms).
fn mime_cloud_config_keys(at: &str, text: &str) -> Result<Vec<String>, ValidationError> {
    let refuse = |why: String| ValidationError::new(at, format!("is MIME, and {why}"));
    if lone_cr(text).is_some() {
        return Err(refuse("has a line break other than LF or CRLF".into()));
    }
    let (headers, body) = mime_headers(text).map_err(refuse)?;
    let top = media_type(&headers);
    let mut parts = Vec::new();
    if top.starts_with("multipart/") {
        let boundary = boundary(&headers).map_err(refuse)?;
        let open = format!("--{boundary}");
        let close = format!("{open}--");
        let mut current: Option<Vec<&str>> = None;
        for line in body.lines() {
            let line_end = line.trim_end();
            if line_end == open || line_end == close {
                if let Some(lines) = current.take() {
                    parts.push(lines.join("\n"));
                }
                if line_end == open {
                    current = Some(Vec::new());
                } else {
                    break;
                }
            } else if let Some(lines) = current.as_mut() {
                lines.push(line);
            }
        }
        if let Some(lines) = current {
            parts.push(lines.join("\n"));
        }
    } else {
        parts.push(text.to_owned());
    }
    let mut keys = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let number = n + 1;
        let whole = parts.len() == 1 && !top.starts_with("multipart/");
        let (headers, payload) = if whole {
            (headers.clone(), body)
        } else {
            mime_headers(part).map_err(|why| refuse(format!("part {number} {why}")))?
        };
        let media = media_type(&headers);
        let read = match media.as_str() {
            m if m.starts_with("multipart/") || m.starts_with("message/") => {
                return Err(refuse(format!(
                    "part {number} is {}, which is not read here",
                    Shown(m)
                )))
            }
            "application/x-gzip"
            | "application/gzip"
            | "application/gzip-compressed"
            | "application/gzipped" => {
                return Err(refuse(format!(
                    "part {number} is gzip, which is not read here; give it uncompressed"
                )))
            }
            "text/cloud-config"
            | "text/jinja2"
            | "text/plain"
            | "text/x-not-multipart"
            | "text/x-shellscript" => true,
            _ => false,
        };
        if !read {
            continue;
        }
        let payload = match header(&headers, "content-transfer-encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("7bit") | Some("8bit") | Some("binary") => payload.to_owned(),
            Some("base64") => {
                let packed: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = <base64ct::Base64 as base64ct::Encoding>::decode_vec(&packed)
                    .map_err(|_| refuse(format!("part {number} does not decode as base64")))?;
                String::from_utf8(bytes)
                    .map_err(|_| refuse(format!("part {number} is base64 of no text")))?
            }
            Some(other) => {
                return Err(refuse(format!(
                    "part {number} is encoded as {}, which is not read here; give it unencoded or \
                     as base64",
                    Shown(other)
                )))
            }
        };
        let kind = match media.as_str() {
            "text/cloud-config" => Some(Sniffed::CloudConfig),
            "text/jinja2" => Some(Sniffed::Jinja),
            _ => sniff(&payload),
        };
        let Some(kind) = kind else { continue };
        if media == "text/cloud-config" && sniff(&payload) != Some(Sniffed::CloudConfig) {
            // A cloud-config part need not repeat its marker: all of it is the document.
            keys.extend(yaml_keys(at, &payload, 0, Some(number), false)?);
        } else {
            keys.extend(keys_of(at, kind, &payload, Some(number))?);
        }
    }
    Ok(keys)
}

/// A MIME entity's headers: lowercased names and their values, in order.
type Headers = Vec<(String, String)>;

/// A MIME entity's headers (names lowercased, folded lines joined) and its body. A line that is no
/// header (a name of printable characters but `:`, then `:`) ends the headers, as in Python's
/// parser; a `From ` line, which that parser handles apart, is refused.
fn mime_headers(entity: &str) -> Result<(Headers, &str), String> {
    let mut headers: Headers = Vec::new();
    let mut rest = entity;
    loop {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return Ok((headers, after));
        }
        if line.starts_with("From ") {
            return Err("has a `From ` line among its headers, which is not read here".into());
        }
        if line.starts_with([' ', '\t']) && !headers.is_empty() {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else {
            match line.split_once(':') {
                Some((name, value))
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| (0x21..=0x7e).contains(&b) && b != b':') =>
                {
                    headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                }
                // Not a header: the body starts here.
                _ => return Ok((headers, rest)),
            }
        }
        if after.is_empty() {
            return Ok((headers, ""));
        }
        rest = after;
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// The media type as Python's `get_content_type` gives it: lowercased, `text/plain` when the
/// header is missing or is not `type/subtype`.
fn media_type(headers: &[(String, String)]) -> String {
    let value = header(headers, "content-type").unwrap_or_default();
    let media = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media.matches('/').count() == 1 {
        media
    } else {
        "text/plain".into()
    }
}

/// The multipart boundary, when it is plain (a token, or quoted without `;`, `"` or `\` inside).
fn boundary(headers: &[(String, String)]) -> Result<String, String> {
    let value = header(headers, "content-type").unwrap_or_default();
    let mut found = None;
    for param in value.split(';').skip(1) {
        let Some((name, v)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name.starts_with("boundary*") {
            return Err("its boundary is in RFC 2231 form, which is not read here".into());
        }
        if name == "boundary" {
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"').ok_or_else(|| {
                    "its boundary is quoted with a `;` or unclosed, which is not read here"
                        .to_owned()
                })?,
                None => v,
            };
            if v.is_empty() || v.contains(['"', '\\']) {
                return Err("its boundary is empty or escaped, which is not read here".into());
            }
            found = Some(v.to_owned());
        }
    }
    found.ok_or_else(|| "its multipart has no boundary".into())
}

/// Where `text` has a CR that is not part of a CRLF: a line break to YAML and to Python's email
/// parser, though not to `str::lines`.
fn lone_cr(text: &str) -> Option<usize> {
    text.char_indices()
        .find(|&(i, c)| c == '\r' && !text[i + 1..].starts_with('\n'))
        .map(|(i, _)| i)
}

/// The keys at the top level of a YAML (or JSON) document: JSON is parsed; YAML's block style is
/// read line by line (a top-level key starts in column 0). What this reading cannot see through is
/// refused rather than guessed at: a flow mapping, a complex key, a tag, an anchor or alias as a
/// key, an escape in a quoted key, a document whose first content is indented or follows `---` on
/// its line, and line breaks other than LF and CRLF (YAML also breaks lines at a lone CR, NEL,
/// U+2028 and U+2029). `first_line` is the number of lines before `body` in the text, for messages;
/// `jinja` leaves Jinja's statement and comment lines out.
fn yaml_keys(
    at: &str,
    body: &str,
    first_line: usize,
    part: Option<usize>,
    jinja: bool,
) -> Result<Vec<String>, ValidationError> {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        return Ok(map.keys().cloned().collect());
    }
    let unreadable = |line: usize, why: &str| {
        let place = match part {
            Some(p) => format!("part {p}, line {}", first_line + line),
            None => format!("line {}", first_line + line),
        };
        ValidationError::new(
            at,
            format!(
                "{place} {why}; write this document in YAML's block style (`key: value` from \
                 the first column) or give it as a dictionary"
            ),
        )
    };
    let unicode_break = body.find(['\u{85}', '\u{2028}', '\u{2029}']);
    let odd_break = match (lone_cr(body), unicode_break) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(i) = odd_break {
        let line = 1 + body[..i].matches('\n').count();
        return Err(unreadable(line, "has a line break other than LF or CRLF"));
    }
    let mut keys = Vec::new();
    // Until the first top-level key of a document, indentation would make the whole document one
    // indented mapping, which YAML allows and a column-0 reading would not see.
    let mut at_root = true;
    for (n, line) in body.lines().enumerate() {
        let n = n + 1;
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') || line == "..." {
            continue;
        }
        if jinja && (line.starts_with("{%") || line.starts_with("{#")) {
            continue;
        }
        if let Some(after) = line.strip_prefix("---") {
            let after = after.trim_start();
            if !after.is_empty() && !after.starts_with('#') {
                return Err(unreadable(n, "has content after `---`"));
            }
            at_root = true;
            continue;
        }
        let first = line.chars().next().unwrap_or(' ');
        if first.is_whitespace() {
            if at_root {
                return Err(unreadable(n, "is indented before any top-level key"));
            }
            continue;
        }
        at_root = false;
        if first == '-' {
            // A list item in column 0 belongs to the key above it.
            continue;
        }
        if matches!(first, '{' | '[' | '?' | '!' | '&' | '*' | '%' | '|' | '>') {
            return Err(unreadable(n, "is not a plain `key: value`"));
        }
        let Some((raw, _)) = line.split_once(':') else {
            // A continued plain scalar: no key here.
            continue;
        };
        let key = raw.trim();
        if jinja && key.contains("{{") {
            return Err(unreadable(n, "makes a key with a Jinja expression"));
        }
        let key = match key.as_bytes().first() {
            Some(b'"') | Some(b'\'') => {
                if key.contains('\\') {
                    return Err(unreadable(n, "has an escape in a quoted key"));
                }
                key.trim_matches(|c| c == '"' || c == '\'')
            }
            _ => key,
        };
        keys.push(key.to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(value: Value) -> String {
        parse("cloud_init", &value).unwrap_err().to_string()
    }

    #[test]
    fn dictionaries_become_cloud_config_and_strings_stay_as_given() {
        let c = parse(
            "cloud_init",
            &json!({
                "user_data": {"packages": ["htop"], "runcmd": [["touch", "/x"]]},
                "network_config": {"version": 2, "ethernets": {"eth1": {"dhcp4": true}}},
                "vendor_data": "#!/bin/sh\necho hi\n",
            }),
        )
        .unwrap();
        let user = c.user_data.as_deref().unwrap();
        assert!(user.starts_with("#cloud-config\n{\n"));
        let back: Value =
            serde_json::from_str(user.strip_prefix("#cloud-config\n").unwrap()).unwrap();
        assert_eq!(back["runcmd"], json!([["touch", "/x"]]));
        let net: Value = serde_json::from_str(c.network_config.as_deref().unwrap()).unwrap();
        assert_eq!(net["version"], 2);
        assert_eq!(c.vendor_data.as_deref(), Some("#!/bin/sh\necho hi\n"));
        let names: Vec<&str> = c.files().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["user-data", "network-config", "vendor-data"]);
        assert!(!format!("{c:?}").contains("htop"));

        let yaml = "#cloud-config\nwrite_files:\n  - path: /etc/x\n    content: |\n      hostname: in a file\nruncmd:\n  - [touch, /y]\n";
        let c = parse("cloud_init", &json!({"user_data": yaml})).unwrap();
        assert_eq!(c.user_data.as_deref(), Some(yaml));
        assert_eq!(c.files().len(), 1);
        // The digest tells texts apart.
        let other = parse(
            "cloud_init",
            &json!({"user_data": format!("{yaml}# more\n")}),
        )
        .unwrap();
        assert_ne!(c.digest(), other.digest());
        assert_eq!(
            c.digest(),
            parse("cloud_init", &json!({"user_data": yaml}))
                .unwrap()
                .digest()
        );
    }

    #[test]
    fn keys_that_take_the_identity_back_are_refused_in_every_form() {
        for (value, key) in [
            (json!({"user_data": {"hostname": "x"}}), "hostname"),
            (
                json!({"vendor_data": {"ssh_deletekeys": true}}),
                "ssh_deletekeys",
            ),
            (json!({"user_data": "#cloud-config\nfqdn: a.b\n"}), "fqdn"),
            (
                json!({"user_data": "#cloud-config\n\"ssh_keys\": {}\n"}),
                "ssh_keys",
            ),
            (
                json!({"user_data": "#cloud-config\n'preserve_hostname' : false\n"}),
                "preserve_hostname",
            ),
            (
                json!({"user_data": "#cloud-config\n{\"prefer_fqdn_over_hostname\": true}"}),
                "prefer_fqdn_over_hostname",
            ),
            (
                json!({"user_data": "#cloud-config\nbase: &b {hostname: x}\n<<: *b\n"}),
                "<<",
            ),
            (
                json!({"user_data": "Content-Type: multipart/mixed; boundary=\"b\"\nMIME-Version: 1.0\n\n--b\nContent-Type: text/cloud-config\n\nssh_genkeytypes: [rsa]\n--b--\n"}),
                "ssh_genkeytypes",
            ),
            // A `#!` line that reads as a header does not hide a MIME document (cloud-init's rule).
            (
                json!({"user_data": "#!X: y\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\n\nhostname: x\n--b--\n"}),
                "hostname",
            ),
            // base64 parts, as `cloud-init devel make-mime` writes them, are read.
            (
                json!({"user_data": "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config; charset=utf-8\nContent-Transfer-Encoding: base64\n\nI2Nsb3VkLWNvbmZpZwpob3N0\nbmFtZTogeAo=\n--b--\n"}),
                "hostname",
            ),
            // A text/plain part that starts as cloud-config is cloud-config.
            (
                json!({"user_data": "MIME-Version: 1.0\nContent-Type: text/plain\n\n#cloud-config\nfqdn: a.b\n"}),
                "fqdn",
            ),
        ] {
            let e = err(value);
            assert!(e.contains(&format!("`{key}`")), "{e}");
            assert!(e.starts_with("invalid value for `cloud_init."), "{e}");
        }
        // What the line reading cannot see through is refused, not guessed at.
        for text in [
            "#cloud-config\n{hostname: x}\n",
            "#cloud-config\n? hostname\n: x\n",
            "#cloud-config\n!!str hostname: x\n",
            "#cloud-config\n\"host\\x6eame\": x\n",
            // The whole document indented is one mapping to YAML.
            "#cloud-config\n  hostname: x\n",
            "#cloud-config\n# note\n\n  hostname: x\n",
            "#cloud-config\n--- {hostname: x}\n",
            "#cloud-config\n---\n  {hostname: x}\n",
            "#cloud-config\n--- !!map\n  hostname: x\n",
            // Line breaks YAML sees and a line-by-line reading would not.
            "#cloud-config\nruncmd: []\rhostname: x\n",
            "#cloud-config\nruncmd: []\u{2028}hostname: x\n",
            "#cloud-config\nruncmd: []\u{85}hostname: x\n",
        ] {
            let e = err(json!({"user_data": text}));
            assert!(e.contains("block style"), "{e}");
        }
        // What cloud-init would ignore is said, not accepted in silence (it keeps no BOM, and a
        // `Content-Type` without `MIME-Version` is no MIME to it).
        for text in [
            "hostname: x\n",
            "\u{feff}#cloud-config\nruncmd: []\n",
            "Content-Type: text/cloud-config\n\nruncmd: []\n",
        ] {
            let e = err(json!({"user_data": text}));
            assert!(
                e.contains("does not start with a type cloud-init knows"),
                "{e}"
            );
        }
        // As cloud-init sniffs: any case, after leading whitespace; and MIME by `mime-version:`
        // anywhere in the first 4096 bytes, its body then sniffed as a part (never as MIME again).
        for (text, key) in [
            ("#Cloud-Config\nhostname: x\n", "hostname"),
            ("\n  #cloud-config\nfqdn: a.b\n", "fqdn"),
            ("#cloud-config\nhostname: x\nwrite_files: [{content: \"mime-version: 1.0\"}]\n", "hostname"),
            ("#cloud-config\nhostname: x\n# mime-version: 1.0\n", "hostname"),
            // A shell-script part that starts as cloud-config is cloud-config (a mistake cloud-init
            // forgives), as is a part whose type is no `type/subtype`.
            ("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/x-shellscript\n\n#cloud-config\nhostname: x\n--b--\n", "hostname"),
            ("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: cloudconfig\n\n#cloud-config\nssh_keys: {}\n--b--\n", "ssh_keys"),
            // A cloud-config part need not repeat its marker.
            ("MIME-Version: 1.0\nContent-Type: text/cloud-config\n\nssh_deletekeys: true\n", "ssh_deletekeys"),
            // A Jinja template rendering cloud-config.
            ("## template: jinja\n#cloud-config\n{% if v1 %}\nhostname: {{ v1.local_hostname }}x\n{% endif %}\n", "hostname"),
        ] {
            let e = err(json!({"user_data": text}));
            assert!(e.contains(&format!("`{key}`")), "{text:?}: {e}");
        }
        // MIME this reading would split otherwise than Python's parser, or does not read: refused.
        for (text, why) in [
            ("MIME-Version: 1.0\rContent-Type: text/cloud-config\r\rhostname: x\r", "line break"),
            ("From bob\nMIME-Version: 1.0\nContent-Type: text/cloud-config\n\nruncmd: []\n", "`From `"),
            ("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"a;b\"\n\n--a;b\nContent-Type: text/cloud-config\n\nhostname: x\n--a;b--\n", "boundary"),
            ("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary*=utf-8''b\n\n--b\n\n--b--\n", "RFC 2231"),
            ("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nContent-Type: text/cloud-config\n\nhostname: x\n--b--\n", "`message/rfc822`"),
            ("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\nH4sIAAAAAAAAA0tMSgIAeGGQhgIAAAA=\n--b--\n", "gzip"),
        ] {
            let e = err(json!({"user_data": text}));
            assert!(e.contains("is MIME, and") && e.contains(why), "{text:?}: {e}");
        }
        // Parts of types not read are not decoded; a line number counts the marker line.
        parse("cloud_init", &json!({"user_data": "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAEC/w==\n--b--\n"})).unwrap();
        let e = err(json!({"user_data": "#cloud-config\n\thostname: x\n"}));
        assert!(e.contains("line 2 is indented"), "{e}");
        // Encodings not read: refused, named.
        let qp = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\nContent-Transfer-Encoding: quoted-printable\n\nhost=6Eame: x\n--b--\n";
        assert!(err(json!({"user_data": qp})).contains("`quoted-printable`"));
        // Scripts and the like in a MIME document are the user's code, not read; CRLF is a line break.
        parse("cloud_init", &json!({"user_data": "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==b==\"\n\n--==b==\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n[ -d /srv ] || mkdir /srv\n--==b==\nContent-Type: text/cloud-config\n\nruncmd: [[true]]\n--==b==--\n"})).unwrap();
        parse(
            "cloud_init",
            &json!({"user_data": "#cloud-boothook\n[ -e /x ] || touch /x\n"}),
        )
        .unwrap();
        parse(
            "cloud_init",
            &json!({"user_data": "#cloud-config\r\nruncmd:\r\n- [touch, /x]\r\n"}),
        )
        .unwrap();
        // Dictionaries with characters YAML would refuse or read as line breaks are escaped.
        let c = parse("cloud_init", &json!({"user_data": {"write_files": [{"path": "/x", "content": "a\u{7f}b\u{85}c\u{2028}d"}]}})).unwrap();
        let text = c.user_data.unwrap();
        assert!(text.contains("a\\u007fb\\u0085c\\u2028d"), "{text}");
        // A key inside a value, a script: accepted.
        parse(
            "cloud_init",
            &json!({"user_data": "#cloud-config\nwrite_files:\n  - content: \"hostname: x\"\n"}),
        )
        .unwrap();
        parse(
            "cloud_init",
            &json!({"user_data": "#!/bin/sh\nhostname: x\n"}),
        )
        .unwrap();
    }

    #[test]
    fn bad_shapes_name_the_key() {
        for (value, want) in [
            (
                json!("text"),
                "`cloud_init`: must be a dictionary, not a string",
            ),
            (json!({}), "`cloud_init`: gives nothing"),
            (json!({"user_data": null}), "`cloud_init`: gives nothing"),
            (json!({"userdata": "x"}), "unknown key `userdata`"),
            (
                json!({"user_data": 1}),
                "`cloud_init.user_data`: must be a string or a dictionary, not a number",
            ),
            (json!({"user_data": ["x"]}), "not a list"),
            (
                json!({"user_data": " \n"}),
                "`cloud_init.user_data`: is empty",
            ),
            (
                json!({"vendor_data": {}}),
                "`cloud_init.vendor_data`: is an empty dictionary",
            ),
            (json!({"user_data": "#cloud-config\na: \u{0}\n"}), "NUL"),
            (
                json!({"user_data": format!("#cloud-config\n#{}\n", "x".repeat(MAX_BYTES))}),
                "more than",
            ),
            (
                json!({"network_config": {"ethernets": {}}}),
                "`cloud_init.network_config`: has no `version`",
            ),
            (
                json!({"network_config": "ethernets:\n  eth0: {}\n"}),
                "has no `version`",
            ),
        ] {
            let e = err(value);
            assert!(e.contains(want), "{e} lacks {want}");
        }
        parse(
            "cloud_init",
            &json!({"network_config": "network:\n  version: 2\n"}),
        )
        .unwrap();
        parse(
            "cloud_init",
            &json!({"network_config": "  network:\n    version: 2\n"}),
        )
        .unwrap();
    }
}
