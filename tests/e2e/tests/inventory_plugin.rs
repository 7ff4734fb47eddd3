//! Layer 3 through real Ansible: the inventory plugin `virtup.virtup.virtup` on libvirt's test driver, each of its
//! options through `ansible-inventory`, against the `virtup_inventory` script on the same records.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{repo_root, run, venv_bin, Run};

/// A test-driver node (each connection loads it afresh), shared with the script's own tests: instances `web1`
/// and `db1` of template `debian-12`, the template, another data dir's template and a foreign domain, which must
/// never be listed.
const NODE_XML: &str = include_str!("../../fixtures/inventory-node.xml");

/// A data dir with the two instances' records (web1 declared in group `web`, db1 in `db`) and a damaged record.
struct Records {
    dir: tempfile::TempDir,
}

impl Records {
    fn new() -> Records {
        let r = Records {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(r.node(), NODE_XML).unwrap();
        let inst = r.data().join("instance");
        std::fs::create_dir_all(&inst).unwrap();
        std::fs::create_dir_all(r.dir.path().join("config")).unwrap();
        std::fs::write(
            r.data().join("owner-id"),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        for (name, address, group) in [("web1", Some("192.168.122.10"), "web"), ("db1", None, "db")]
        {
            let meta = json!({"schema": 1, "name": name, "template": "debian-12", "generation": 1,
                "user": "virt", "mac": "52:54:00:00:00:01", "address": address, "inventory": true,
                "state": "running", "uri": r.uri(), "groups": [group]});
            std::fs::write(inst.join(format!("{name}.json")), meta.to_string()).unwrap();
        }
        std::fs::write(
            inst.join("broken.json"),
            "{\"name\": \"broken\", \"user\": 7",
        )
        .unwrap();
        r
    }
    fn node(&self) -> PathBuf {
        self.dir.path().join("node.xml")
    }
    fn uri(&self) -> String {
        format!("test://{}", self.node().display())
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A plugin configuration `NAME.virtup.yml`: the records' options, then `extra` (YAML lines).
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.virtup.yml"));
        let text = format!(
            "plugin: virtup.virtup.virtup\nuris: ['{}']\ndata_home: '{}'\nconfig_home: '{}'\n{extra}",
            self.uri(),
            self.data().display(),
            self.dir.path().join("config").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `ansible-inventory ARGS` with the repository's collection, no Ansible setting of the caller's, and an
    /// Ansible home inside the records' directory.
    fn ansible_inventory(&self, args: &[&str]) -> Run {
        let mut cmd = self.ansible("ansible-inventory");
        cmd.args(args);
        run(&mut cmd, Duration::from_secs(300))
    }

    /// The lab venv's `program` in the records' directory, with the repository's collection, no Ansible or virtup
    /// setting of the caller's, an Ansible home inside the records' directory and the node as default hypervisor.
    fn ansible(&self, program: &str) -> Command {
        let mut cmd = Command::new(venv_bin(program));
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("ANSIBLE_") || key_text.starts_with("VIRTUP_") {
                cmd.env_remove(&key);
            }
        }
        cmd.current_dir(self.dir.path())
            .env("ANSIBLE_COLLECTIONS_PATH", repo_root().join("collections"))
            .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("LIBVIRT_DEFAULT_URI", self.uri());
        cmd
    }

    /// `ansible HOST -m ping -vvvv` through inventory `source` with host key checking off in the caller's Ansible
    /// config, aimed at a closed port on loopback: the run fails at once, and `-vvvv` shows ssh's command line.
    fn ping_with_checking_off(&self, source: &Path, host: &str) -> Run {
        let mut cmd = self.ansible("ansible");
        cmd.args([host, "-m", "ansible.builtin.ping", "-vvvv", "-i"])
            .arg(source)
            .args(["-e", "ansible_host=127.0.0.1", "-e", "ansible_port=9"])
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("VIRTUP_DATA_HOME", self.data())
            .env("VIRTUP_CONFIG_HOME", self.dir.path().join("config"));
        run(&mut cmd, Duration::from_secs(300))
    }

    fn list(&self, config: &Path) -> Value {
        let out = self
            .ansible_inventory(&["-i", config.to_str().unwrap(), "--list"])
            .assert_ok("ansible-inventory --list");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }
}

fn assert_built() {
    let p = repo_root().join("virtup_inventory");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build first",
        p.display()
    );
}

/// Values without Ansible's unsafe marks: the script's plain strings are trusted, the plugin marks every value
/// unsafe (none is ever templated), and either reads the same once used.
fn plain(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("__ansible_unsafe") => {
            m["__ansible_unsafe"].clone()
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), plain(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(plain).collect()),
        other => other.clone(),
    }
}

fn hosts(doc: &Value, group: &str) -> Vec<String> {
    let mut h: Vec<String> =
        serde_json::from_value(doc[group]["hosts"].clone()).unwrap_or_default();
    h.sort();
    h
}

#[test]
fn the_plugin_lists_what_the_script_lists_and_warns_as_ansible_does() {
    assert_built();
    let r = Records::new();
    let config = r.config("plain", "");
    let from_plugin = r
        .ansible_inventory(&["-i", config.to_str().unwrap(), "--list"])
        .assert_ok("the plugin");
    let plugin: Value = serde_json::from_str(&from_plugin.stdout).unwrap();
    // The script as a user runs it: its settings in the environment.
    let mut cmd = Command::new(venv_bin("ansible-inventory"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANSIBLE_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args([
        "-i",
        repo_root().join("virtup_inventory").to_str().unwrap(),
        "--list",
    ])
    .current_dir(r.dir.path())
    .env("ANSIBLE_HOME", r.dir.path().join("ansible-home"))
    .env("VIRTUP_DATA_HOME", r.data())
    .env("VIRTUP_CONFIG_HOME", r.dir.path().join("config"))
    .env("VIRTUP_INVENTORY_URIS", r.uri());
    let from_script = run(&mut cmd, Duration::from_secs(300)).assert_ok("the script");
    let script: Value = serde_json::from_str(&from_script.stdout).unwrap();
    assert_eq!(plain(&plugin), plain(&script));
    assert_eq!(hosts(&plugin, "virtup_instances"), ["db1", "web1"]);
    assert_eq!(hosts(&plugin, "virtup_templates"), ["VIRTUP-debian-12"]);
    assert_eq!(hosts(&plugin, "web"), ["web1"], "a declared group");
    assert_eq!(hosts(&plugin, "db"), ["db1"], "a declared group");
    assert_eq!(
        plain(&plugin["_meta"]["hostvars"]["web1"]["ansible_host"]),
        json!("192.168.122.10")
    );
    // Values from records stay unsafe: never templated.
    assert_eq!(
        plugin["_meta"]["hostvars"]["web1"]["ansible_user"],
        json!({"__ansible_unsafe": "virt"})
    );
    assert!(
        from_plugin
            .stderr
            .contains("[WARNING]: virtup inventory: instance `broken` is skipped"),
        "{}",
        from_plugin.stderr
    );
}

#[test]
fn constructed_options_compose_groups_keyed_groups_leading_separator_and_strict() {
    assert_built();
    let r = Records::new();
    let config = r.config(
        "constructed",
        "compose:\n  virtup_short: inventory_hostname[:2]\n\
         groups:\n  webs: \"'web' in inventory_hostname\"\n  short_we: virtup_short == 'we'\n  \
         warned: virtup_inventory_warnings | length > 0\n\
         keyed_groups:\n  - key: virtup_template\n    prefix: tpl\n  - key: virtup_kind\n    prefix: ''\n",
    );
    let doc = r.list(&config);
    let web1 = &doc["_meta"]["hostvars"]["web1"];
    // Group vars of `all` (the listing's warnings) are seen, as ansible.builtin.constructed sees them.
    assert_eq!(
        hosts(&doc, "warned"),
        ["VIRTUP-debian-12", "db1", "web1"],
        "{doc}"
    );
    assert_eq!(plain(&web1["virtup_short"]), json!("we"), "{web1}");
    assert_eq!(hosts(&doc, "webs"), ["web1"]);
    assert_eq!(
        hosts(&doc, "short_we"),
        ["web1"],
        "groups see composed vars"
    );
    assert_eq!(
        hosts(&doc, "tpl_debian_12"),
        ["VIRTUP-debian-12", "db1", "web1"]
    );
    // An empty prefix: Ansible's default leading separator, then without it.
    assert_eq!(hosts(&doc, "_instance"), ["db1", "web1"], "{doc}");
    let config = r.config(
        "no-leading",
        "leading_separator: false\nkeyed_groups:\n  - key: virtup_kind\n    prefix: ''\n",
    );
    let doc = r.list(&config);
    assert_eq!(hosts(&doc, "instance"), ["db1", "web1"], "{doc}");
    assert_eq!(hosts(&doc, "template"), ["VIRTUP-debian-12"]);

    // strict: an expression on a variable no host has is skipped, or fails naming it.
    let lenient = r.config(
        "lenient",
        "compose:\n  virtup_odd: no_such_var + 1\ngroups:\n  odd: no_such_var\n",
    );
    let doc = r.list(&lenient);
    assert!(doc["_meta"]["hostvars"]["web1"].get("virtup_odd").is_none());
    assert!(doc.get("odd").is_none(), "{doc}");
    let strict = r.config(
        "strict",
        "strict: true\ncompose:\n  virtup_odd: no_such_var + 1\n",
    );
    let out = r.ansible_inventory(&["-i", strict.to_str().unwrap(), "--list"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("Could not set virtup_odd for host")
            && all.contains("'no_such_var' is undefined"),
        "{all}"
    );
    assert!(
        !all.contains("\"web1\""),
        "strict must refuse the source: {all}"
    );
}

#[test]
fn the_cache_answers_until_flushed() {
    assert_built();
    let r = Records::new();
    let cache_dir = r.dir.path().join("cache");
    let config = r.config(
        "cached",
        &format!(
            "cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: '{}'\ncache_timeout: 3600\n",
            cache_dir.display()
        ),
    );
    // A listing with a warning (here the damaged record) is not kept: the next run asks again.
    let warned = r.list(&config);
    assert_eq!(hosts(&warned, "virtup_instances"), ["db1", "web1"]);
    assert_eq!(
        std::fs::read_dir(&cache_dir)
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "a listing with warnings was cached"
    );
    std::fs::remove_file(r.data().join("instance/broken.json")).unwrap();
    let first = r.list(&config);
    assert_eq!(hosts(&first, "virtup_instances"), ["db1", "web1"]);
    assert!(
        std::fs::read_dir(&cache_dir).unwrap().count() > 0,
        "no cache file in {}",
        cache_dir.display()
    );
    // db1 is deleted behind the cache's back: the cache still answers, a flush asks virtup again.
    std::fs::remove_file(r.data().join("instance/db1.json")).unwrap();
    let cached = r.list(&config);
    assert_eq!(hosts(&cached, "virtup_instances"), ["db1", "web1"]);
    let out = r
        .ansible_inventory(&["-i", config.to_str().unwrap(), "--list", "--flush-cache"])
        .assert_ok("--flush-cache");
    let fresh: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(hosts(&fresh, "virtup_instances"), ["web1"], "{fresh}");
    // The same file over another data dir is never answered from this one's cache.
    let other = Records::new();
    std::fs::remove_file(other.data().join("instance/broken.json")).unwrap();
    std::fs::remove_file(other.data().join("instance/web1.json")).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &r.data().display().to_string(),
            &other.data().display().to_string(),
        )
        .replace(&r.uri(), &other.uri());
    std::fs::write(&config, text).unwrap();
    let elsewhere = r.list(&config);
    assert_eq!(
        hosts(&elsewhere, "virtup_instances"),
        ["db1"],
        "{elsewhere}"
    );
}

#[test]
fn a_binary_that_cannot_run_or_a_wrong_file_name_is_named() {
    assert_built();
    let r = Records::new();
    let config = r.config("missing", "executable: /nonexistent/virtup_inventory\n");
    let out = r.ansible_inventory(&["-i", config.to_str().unwrap(), "--list"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("cannot run /nonexistent/virtup_inventory"),
        "{all}"
    );
    // A name the plugin does not claim: Ansible's auto plugin says it is not this plugin's file.
    let other = r.dir.path().join("virtup.yml");
    std::fs::copy(r.config("x", ""), &other).unwrap();
    let out = r.ansible_inventory(&["-i", other.to_str().unwrap(), "--list"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("\"web1\""), "{all}");
    assert!(
        all.contains("could not be verified by inventory plugin 'virtup.virtup.virtup'"),
        "{all}"
    );
}

/// A user whose Ansible config turns host key checking off still gets virtup's pin checked: Ansible would put the
/// ssh option that turns checking off before the host's own options (and ssh keeps the first value it reads), so
/// each host of the script and of the plugin says `ansible_host_key_checking: true`.
#[test]
fn host_key_checking_off_in_the_callers_config_does_not_unpin_a_host() {
    assert_built();
    let r = Records::new();
    for source in [repo_root().join("virtup_inventory"), r.config("pin", "")] {
        let out = r.ping_with_checking_off(&source, "web1");
        let all = format!("{}{}", out.stdout, out.stderr);
        let exec = all
            .lines()
            .find(|l| l.contains("SSH: EXEC ssh"))
            .unwrap_or_else(|| panic!("{}: no ssh command line in {all}", source.display()));
        assert!(
            exec.contains("StrictHostKeyChecking=yes")
                && !exec.contains(concat!("StrictHostKeyChecking=", "no")),
            "{}: {exec}",
            source.display()
        );
        assert!(!out.status.success(), "{all}");
    }
}
