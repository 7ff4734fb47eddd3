//! Fuzz target: bytes as virt-up config files (settings.cfg, then templates.d/*.cfg, split at NUL bytes), loaded and resolved as the modules do.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use virtup_cli::context::validate_fields;
use virtup_core::Config;

/// More files add nothing the merge of two does not already exercise.
const MAX_FILES: usize = 4;

fuzz_target!(|data: &[u8]| {
    // Config files are read with read_to_string: non-UTF-8 is a read error, not parsed.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(MAX_FILES, '\0');
    let settings_text = parts.next().unwrap_or_default();
    let template_texts: Vec<&str> = parts.collect();
    let settings_path = PathBuf::from("/etc/virt-up/settings.cfg");
    let template_paths: Vec<PathBuf> = (0..template_texts.len())
        .map(|i| PathBuf::from(format!("/etc/virt-up/templates.d/{i}.cfg")))
        .collect();
    let templates: Vec<(&std::path::Path, &str)> = template_paths
        .iter()
        .map(PathBuf::as_path)
        .zip(template_texts.iter().copied())
        .collect();
    let config = match Config::from_texts(&[(settings_path.as_path(), settings_text)], &templates) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.to_string();
            let _ = e.location();
            return;
        }
    };
    for warning in &config.warnings {
        let _ = warning.to_string();
    }
    let common = config.resolve_common();
    let _ = validate_fields(&common).map_err(|e| format!("{e:#}"));
    let _ = common.set_keys();
    for name in config.template_names() {
        let fields = config
            .resolve_template(name)
            .expect("a listed template resolves");
        let _ = validate_fields(&fields).map_err(|e| format!("{e:#}"));
    }
});
