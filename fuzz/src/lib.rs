//! What the fuzz targets share: a fixed, IO-free module context and the no_log leak check.

use std::path::Path;
use std::sync::LazyLock;

use serde_json::Value;
use virtup_ansible::ModuleSpec;
use virtup_cli::context::Context;
use virtup_core::{Config, DataDir, Paths};

/// `[common]` of a user's settings.cfg, every value set so that every key is resolved.
const SETTINGS_CFG: &str = "\
[common]
pool = default
username = virt
dns-domain = example.com
address-source = lease, agent
image-format = qcow2
network = default
memory = 512
vcpus = 1
graphics = none
virt-builder-args = --update
";

/// Like `virt-up --init`'s `templates.d/debian.cfg` (kept apart: `cli::init` is private).
const DEBIAN_CFG: &str = "\
[debian-12]
desc = Debian 12 (bookworm)
os-version = debian-12
os-type = linux
os-variant = debian11
arch = x86_64

[ubuntu-22.04]
os-version = ubuntu-22.04
os-variant = ubuntu22.04
image-format = raw
";

/// A template that takes its source from an image, so resolving it reaches the checksum checks.
const IMAGE_CFG: &str = "\
[DEFAULT]
memory = 1024

[debian-12-cloud]
image = /var/lib/libvirt/images/debian-12-generic-amd64.qcow2
checksum = sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
os-type = linux
size = 10G
virt-customize-args = --install 'sudo,qemu-guest-agent' --run-command 'echo %%done'
";

/// What `Context::load` would give with a full `[common]` and three templates (one from an image),
/// built without reading the environment or the disk: the paths do not exist.
pub static CONTEXT: LazyLock<Context> = LazyLock::new(|| {
    let settings = [(Path::new("/etc/virt-up/settings.cfg"), SETTINGS_CFG)];
    let templates = [
        (Path::new("/etc/virt-up/templates.d/debian.cfg"), DEBIAN_CFG),
        (Path::new("/etc/virt-up/templates.d/image.cfg"), IMAGE_CFG),
    ];
    let config = Config::from_texts(&settings, &templates).expect("the fuzz context's config");
    let data_dir = "/nonexistent/virtup-fuzz/data";
    Context {
        paths: Paths::new(
            "/nonexistent/virtup-fuzz/etc",
            "/nonexistent/virtup-fuzz/config",
            data_dir,
            "qemu:///system",
        ),
        config,
        data: DataDir::at(data_dir),
    }
});

/// The strings and numbers the task gave for `spec`'s no_log options, computed here
/// independently of the args parser so that a parser that loses one is caught too.
pub fn given_secrets(text: &str, spec: &ModuleSpec) -> Vec<String> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    if map.len() == 1 {
        if let Some(Value::Object(inner)) = map.remove("ANSIBLE_MODULE_ARGS") {
            map = inner;
        } else {
            return Vec::new();
        }
    }
    let mut out = Vec::new();
    for (key, value) in &map {
        if spec.option(key).is_some_and(|o| o.is_no_log()) {
            leaves(value, &mut out);
        }
    }
    out
}

fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// Panics when a secret shows in the `msg` or `warnings` of a rendered module document.
///
/// Secrets holding `*` are skipped: masking can legitimately produce them (`q` then the
/// mask spells `q*`), while a secret without `*` can only survive by not being masked.
pub fn assert_no_secret(stdout: &str, secrets: &[String]) {
    let doc: Value = serde_json::from_str(stdout).expect("a module document is JSON");
    let mut shown = Vec::new();
    if let Some(msg) = doc.get("msg").and_then(Value::as_str) {
        shown.push(msg);
    }
    if let Some(Value::Array(warnings)) = doc.get("warnings") {
        shown.extend(warnings.iter().filter_map(Value::as_str));
    }
    for secret in secrets {
        if secret.is_empty() || secret.contains('*') {
            continue;
        }
        for text in &shown {
            assert!(
                !text.contains(secret.as_str()),
                "no_log value {secret:?} shown in {text:?}"
            );
        }
    }
}
