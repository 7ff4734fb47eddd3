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
    Ok(if key == "network_config" {
        format!("{json}\n")
    } else {
        format!("#cloud-config\n{json}\n")
    })
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
        let keys = top_level_keys(at, text)?;
        if !keys.iter().any(|k| k == "version" || k == "network") {
            return Err(ValidationError::new(
                at,
                "has no `version` (cloud-init's network config version 1 or 2)",
            ));
        }
        return Ok(());
    }
    if text.starts_with("#!") {
        // A script: the user's own code, run as root by cloud-init; nothing here to read.
        return Ok(());
    }
    for k in top_level_keys(at, text)? {
        if IDENTITY_KEYS.contains(&k.as_str()) {
            return Err(ValidationError::new(
                at,
                format!(
                    "sets {}, which would undo the identity virtup gives the instance (its hostname \
                     and pinned SSH host keys); leave it out ({} are refused)",
                    Shown(&k),
                    IDENTITY_KEYS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The keys at the top level of a YAML (or JSON) document: JSON is parsed; YAML's block style is
/// read line by line (a key starts in column 0). What this reading cannot see through (a flow
/// mapping, a complex key, a tag, an anchor or alias as a key, an escape in a quoted key) is
/// refused rather than guessed at.
fn top_level_keys(at: &str, text: &str) -> Result<Vec<String>, ValidationError> {
    let body = text
        .strip_prefix("#cloud-config")
        .map_or(text, |rest| rest.split_once('\n').map_or("", |(_, b)| b));
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        return Ok(map.keys().cloned().collect());
    }
    let unreadable = |line: usize, why: &str| {
        ValidationError::new(
            at,
            format!(
                "line {line} {why}; write this document in YAML's block style (`key: value` from \
                 the first column) or give it as a dictionary"
            ),
        )
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let Some(first) = line.chars().next() else {
            continue;
        };
        if first.is_whitespace() || matches!(first, '#' | '-') || line == "..." {
            // Indented (inside a value), a comment, a list item, a document marker.
            continue;
        }
        if matches!(first, '{' | '[' | '?' | '!' | '&' | '*' | '%' | '|' | '>') {
            return Err(unreadable(n, "is not a plain `key: value`"));
        }
        let Some((raw, _)) = line.split_once(':') else {
            // A MIME header or body line, a continued scalar: no key here.
            continue;
        };
        let key = raw.trim();
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
                json!({"user_data": "Content-Type: multipart/mixed\n\n--b\nContent-Type: text/cloud-config\n\nssh_genkeytypes: [rsa]\n--b--\n"}),
                "ssh_genkeytypes",
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
        ] {
            let e = err(json!({"user_data": text}));
            assert!(e.contains("block style"), "{e}");
        }
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
    }
}
