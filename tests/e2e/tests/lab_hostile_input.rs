//! Layer 4: hostile names and values (path traversal, shell metacharacters, huge numbers, unicode, empty
//! strings, XML injection) given to the modules and to `virt-up` are rejected naming the option, and
//! leave libvirt and the data dir exactly as they were.
//!
//! Values left out on purpose, because they are legitimately acceptable:
//! - `password` / `root_password`: any text, unicode included, is a valid password; it only ever goes
//!   into a 0600 file and the guest's `chpasswd` over a file, never into XML or a command line.
//! - `revision`: free text by contract, only hashed into the input digest.
//! - `virt_*_args`: argument lists for the libguestfs tools and virt-install by contract (run as argv,
//!   never through a shell); passing options there is their purpose.
//! - template `name` with `/` (`generic/debian10`): virt-up's config ships such names; the domain
//!   name maps `/` to `-`. Traversal through it (`../x`, `/etc/passwd`, `a//b`) is still covered.
//! - `pool_path` of `virtup_host` with quotes or `<`: a legal absolute Linux path; it reaches libvirt
//!   only as escaped XML text. Relative paths and traversal are covered.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use virtup_e2e::{in_repo, lab_home, repo_root, run, virsh, Sandbox};

/// The prefix of every libvirt object this test makes or names.
const PREFIX: &str = "hz-";
/// A domain this test defines, so that a rejected run that wrongly went on would hit something real.
const DECOY: &str = "hz-decoy";
/// A template that never exists: an instance run that slipped past validation stops there, harmlessly.
const NO_TEMPLATE: &str = "hz-none";

/// Characters that must never reach a message raw: they garble or disguise what the user reads.
const INVISIBLE: &[char] = &[
    '\0', '\n', '\r', '\u{1b}', '\u{200b}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}',
    '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{feff}',
];

/// One hostile input: the module, the option it targets, the whole argument set, and what it is.
struct Row {
    module: &'static str,
    option: &'static str,
    args: Value,
    what: String,
}

/// The libvirt state a rejected run must not change, and the files it must not create.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    domains: BTreeSet<String>,
    /// The inactive XML of each domain with our prefix.
    ours: BTreeMap<String, String>,
    volumes: BTreeSet<String>,
    /// `net-list --all` / `pool-list --all` rows: name, state, autostart.
    networks: BTreeSet<String>,
    pools: BTreeSet<String>,
    files: BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
}

fn snapshot(sb: &Sandbox) -> Snapshot {
    virtup_e2e::wait_for_libvirt();
    // One virsh process per snapshot: the table has hundreds of rows on a busy 2-core machine.
    let out = virsh(&[
        "list --all --name; echo @@; pool-refresh default; echo @@; vol-list default; echo @@; \
         net-list --all; echo @@; pool-list --all",
    ]);
    let parts: Vec<&str> = out.split("@@").collect();
    assert_eq!(parts.len(), 5, "unexpected virsh output: {out}");
    let names = |text: &str, skip: usize| -> BTreeSet<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("---"))
            .skip(skip)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let domains = names(parts[0], 0);
    let ours = domains
        .iter()
        .filter(|d| d.starts_with(PREFIX))
        .map(|d| (d.clone(), virsh(&["dumpxml", "--inactive", d])))
        .collect();
    let mut files = BTreeMap::new();
    walk(sb.path(), &mut files);
    Snapshot {
        domains,
        ours,
        volumes: names(parts[2], 1),
        networks: parts[3]
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .skip(2)
            .collect(),
        pools: parts[4]
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .skip(2)
            .collect(),
        files,
    }
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = e.metadata().unwrap();
        out.insert(e.path(), (meta.len(), meta.modified().unwrap()));
        if meta.is_dir() {
            walk(&e.path(), out);
        }
    }
}

/// What changed between two snapshots that could be ours. Other agents share this libvirt, so an
/// added or removed domain or volume counts only when its name could come from a row: our prefix,
/// the row's value, or an unusual character of that value.
fn our_changes(before: &Snapshot, after: &Snapshot, row_value: &str) -> Vec<String> {
    let odd = |c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let suspect = |n: &str| {
        n.contains("hz")
            || (row_value.len() >= 3 && n.contains(row_value))
            || n.chars().any(|c| odd(c) && row_value.contains(c))
    };
    let mut changes = Vec::new();
    for (what, b, a) in [
        ("domain", &before.domains, &after.domains),
        ("volume", &before.volumes, &after.volumes),
        ("network", &before.networks, &after.networks),
        ("pool", &before.pools, &after.pools),
    ] {
        let first = |n: &String| n.split_whitespace().next().unwrap_or_default().to_owned();
        for n in a.difference(b).filter(|n| suspect(&first(n))) {
            changes.push(format!("{what} `{n}` appeared"));
        }
        for n in b.difference(a).filter(|n| suspect(&first(n))) {
            changes.push(format!("{what} `{n}` disappeared"));
        }
    }
    if before.ours != after.ours {
        changes.push(format!(
            "the XML of our domains changed: {:?} -> {:?}",
            before.ours, after.ours
        ));
    }
    if before.files != after.files {
        changes.push(format!(
            "the sandbox changed: {:?} -> {:?}",
            before.files.keys().collect::<Vec<_>>(),
            after.files.keys().collect::<Vec<_>>()
        ));
    }
    changes
}

/// The hostile values every free-text option gets, each with a label for the summary.
fn hostile_text(abs: &str) -> Vec<(&'static str, String)> {
    vec![
        ("traversal ../", "../x".into()),
        ("traversal a/../b", "a/../b".into()),
        ("absolute path", abs.into()),
        ("shell ;", "x; rm -rf /".into()),
        ("shell $()", "$(id)".into()),
        ("shell backticks", "`id`".into()),
        ("shell |", "a|b".into()),
        ("newline", "a\nb".into()),
        ("RTL override", "ab\u{202e}cd".into()),
        ("zero-width space", "a\u{200b}b".into()),
        ("emoji", "vm\u{1f600}".into()),
        ("NUL byte", "a\0b".into()),
        ("empty", String::new()),
        (
            "XML attribute break",
            "x'/><devices><disk/></devices>".into(),
        ),
        ("XML CDATA end", "x]]>".into()),
        ("XML entity", "&xxe;".into()),
        ("too long", "a".repeat(300)),
    ]
}

fn rows(abs: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let tpl = |option: &str, v: Value| {
        let mut a = json!({"name": "hz-t", "os_version": "debian-12"});
        a[option] = v;
        a
    };
    let inst = |option: &str, v: Value| {
        let mut a = json!({"name": DECOY, "template": NO_TEMPLATE, "state": "present"});
        a[option] = v;
        a
    };
    let mut push = |module: &'static str, option: &'static str, args: Value, what: String| {
        rows.push(Row {
            module,
            option,
            args,
            what,
        })
    };
    // Free-text options that end up in file names, domain XML, guest files or tool arguments.
    let text_options_template = [
        "name",
        "dns_domain",
        "os_variant",
        "os_type",
        "arch",
        "graphics",
        "network",
        "pool",
        "user",
        "size",
    ];
    let text_options_instance = [
        "name",
        "template",
        "dns_domain",
        "graphics",
        "network",
        "pool",
        "user",
        "size",
    ];
    for (label, value) in hostile_text(abs) {
        for option in text_options_template {
            push(
                "virtup_template",
                option,
                tpl(option, json!(value)),
                label.into(),
            );
        }
        for option in text_options_instance {
            push(
                "virtup_instance",
                option,
                inst(option, json!(value)),
                label.into(),
            );
        }
    }
    // Numbers: huge, negative, zero, of the wrong type.
    let two_pow_64: Value = serde_json::from_str("18446744073709551616").unwrap();
    let numbers: Vec<(&str, Value)> = vec![
        ("1e30", json!(1e30)),
        ("2^64", two_pow_64),
        ("i64::MAX", json!(i64::MAX)),
        ("-1", json!(-1)),
        ("0", json!(0)),
        ("text", json!("lots")),
        ("shell in number", json!("1; rm -rf /")),
    ];
    for (label, v) in &numbers {
        for option in ["memory", "vcpus", "wait_timeout"] {
            push(
                "virtup_template",
                option,
                tpl(option, v.clone()),
                format!("number {label}"),
            );
            push(
                "virtup_instance",
                option,
                inst(option, v.clone()),
                format!("number {label}"),
            );
        }
    }
    for size in ["99999999999999T", "-1G", "0", "1e9", "16E", "$(id)G"] {
        push(
            "virtup_template",
            "size",
            tpl("size", json!(size)),
            format!("size {size}"),
        );
        push(
            "virtup_instance",
            "size",
            inst("size", json!(size)),
            format!("size {size}"),
        );
    }
    // Choices and lists.
    for (module, option, v) in [
        ("virtup_template", "state", "present; rm -rf /"),
        ("virtup_template", "image_format", "qcow2'/><x>"),
        ("virtup_instance", "state", "running\n"),
        ("virtup_instance", "clone", "full; rm -rf /"),
        ("virtup_instance", "customize", "$(id)"),
        ("virtup_instance", "image_format", "../raw"),
    ] {
        let args = if module == "virtup_template" {
            tpl(option, json!(v))
        } else {
            inst(option, json!(v))
        };
        push(module, option, args, "not a choice".into());
    }
    // Valid file and domain names that a real run still cannot use (the instance's hostname, the
    // template's hostname, the login user) or that are virtup's own naming scheme: check mode must
    // refuse them as the real run does, not promise a clone or a build that fails halfway.
    for (module, option, v, what) in [
        ("virtup_instance", "name", "hz_under", "not a hostname"),
        ("virtup_instance", "name", "hz.dot", "not a hostname"),
        ("virtup_instance", "name", "hz-end-", "not a hostname"),
        ("virtup_instance", "name", "VIRTUP-hz-t-g1", "virtup scheme"),
        ("virtup_instance", "name", "virtup-hz-t", "virtup scheme"),
        ("virtup_instance", "user", "root", "not creatable"),
        ("virtup_template", "name", "hz-t_", "hostname ends with -"),
        ("virtup_template", "name", "hz-t.", "hostname ends with -"),
        ("virtup_template", "name", "hz-t-", "hostname ends with -"),
        ("virtup_template", "user", "root", "not creatable"),
    ] {
        let args = if module == "virtup_template" {
            tpl(option, json!(v))
        } else {
            inst(option, json!(v))
        };
        push(module, option, args, what.into());
    }
    push(
        "virtup_instance",
        "address_source",
        inst("address_source", json!(["lease", "$(id)"])),
        "list item".into(),
    );
    // Data disks: every key of an item, and the list itself; the message names the item's key
    // (`disks[1].mount`).
    let disk = |k: &str, v: Value| {
        let mut d = json!({"size": "1G", "filesystem": "ext4", "mount": "/srv/hz"});
        d[k] = v;
        json!([d])
    };
    for (what, disks) in [
        ("not a list of disks", json!("$(id)")),
        ("item not a dict", json!([["1G"]])),
        ("mount $()", disk("mount", json!("/srv/$(id)"))),
        (
            "mount newline",
            disk(
                "mount",
                json!(
                    "/srv/a
b"
                ),
            ),
        ),
        ("mount traversal", disk("mount", json!("/srv/../etc"))),
        ("mount over /etc", disk("mount", json!("/etc"))),
        ("mount over /home", disk("mount", json!("/home"))),
        ("mount relative", disk("mount", json!("srv/hz"))),
        ("size $()", disk("size", json!("$(id)G"))),
        ("size 2^64", disk("size", json!("99999999999999T"))),
        ("format XML", disk("format", json!("qcow2'/><x>"))),
        ("bus sata", disk("bus", json!("sata"))),
        (
            "filesystem shell",
            disk("filesystem", json!("ext4; rm -rf /")),
        ),
        ("keep not bool", disk("keep", json!("maybe"))),
        ("unknown key", disk("serial", json!("virtup-data1"))),
        ("17 disks", Value::Array(vec![json!({"size": "1G"}); 17])),
    ] {
        push(
            "virtup_instance",
            "disks",
            inst("disks", disks),
            what.into(),
        );
    }
    // NICs: each source key, the mode, the list, and sources the lab's host does not have (refused
    // before anything is made, though libvirt itself would only refuse at the guest's start).
    let net = json!({"network": "default"});
    for (what, nics) in [
        ("not a list of NICs", json!("default")),
        ("empty list", json!([])),
        ("first on a bridge", json!([{"bridge": "vubr0"}])),
        (
            "two sources",
            json!([net, {"bridge": "vubr0", "direct": "vudir0"}]),
        ),
        ("no source", json!([net, {"mode": "vepa"}])),
        ("bridge XML", json!([net, {"bridge": "br'/><x>"}])),
        ("bridge $()", json!([net, {"bridge": "$(id)"}])),
        (
            "bridge too long",
            json!([net, {"bridge": "vubr0-much-too-long"}]),
        ),
        ("direct traversal", json!([net, {"direct": ".."}])),
        (
            "mode not a choice",
            json!([net, {"direct": "vudir0", "mode": "bridge; rm -rf /"}]),
        ),
        (
            "mode on a bridge",
            json!([net, {"bridge": "vubr0", "mode": "vepa"}]),
        ),
        ("network XML", json!([{"network": "default'/><x>"}])),
        (
            "unknown key",
            json!([net, {"bridge": "vubr0", "mac": "52:54:00:00:00:01"}]),
        ),
        (
            "model not a choice",
            json!([net, {"bridge": "vubr0", "model": "e1000'/><interface"}]),
        ),
        (
            "a model QEMU has but virtup does not offer",
            json!([{"network": "default", "model": "ne2k_pci"}]),
        ),
        (
            "model in upper case",
            json!([{"network": "default", "model": "E1000"}]),
        ),
        (
            "model a list",
            json!([net, {"bridge": "vubr0", "model": ["e1000"]}]),
        ),
        ("9 NICs", Value::Array(vec![net.clone(); 9])),
        ("no such bridge", json!([net, {"bridge": "hz-nobr"}])),
        ("no such device", json!([net, {"direct": "hz-nodev"}])),
        ("no such network", json!([{"network": "hz-nonet"}])),
    ] {
        push("virtup_instance", "nics", inst("nics", nics), what.into());
    }
    push(
        "virtup_instance",
        "network",
        {
            let mut a = inst("nics", json!([net]));
            a["network"] = json!("default");
            a
        },
        "network and nics".into(),
    );
    // cloud-init data: the shape, and what would take virtup's identity back or cannot be read.
    for (what, cloud) in [
        ("not a dict", json!("#cloud-config\nruncmd: [[id]]\n")),
        ("nothing given", json!({})),
        ("unknown key", json!({"userdata": "#cloud-config\n"})),
        ("user_data a list", json!({"user_data": [["id"]]})),
        (
            "hostname as a dict",
            json!({"user_data": {"hostname": "hz"}}),
        ),
        (
            "host keys regenerated",
            json!({"user_data": "#cloud-config\nssh_deletekeys: true\n"}),
        ),
        (
            "host keys in vendor_data",
            json!({"vendor_data": {"ssh_keys": {"ed25519_private": "x"}}}),
        ),
        (
            "flow mapping",
            json!({"user_data": "#cloud-config\n{hostname: hz}\n"}),
        ),
        (
            "merge key",
            json!({"user_data": "#cloud-config\nb: &b {fqdn: hz.x}\n<<: *b\n"}),
        ),
        (
            "escaped key",
            json!({"user_data": "#cloud-config\n\"\\x68ostname\": hz\n"}),
        ),
        (
            "network_config without version",
            json!({"network_config": {"ethernets": {}}}),
        ),
        ("NUL", json!({"vendor_data": "#cloud-config\nx: a\u{0}b\n"})),
        (
            "too large",
            json!({"user_data": format!("#!/bin/sh\n#{}\n", "x".repeat(300 * 1024))}),
        ),
    ] {
        push(
            "virtup_instance",
            "cloud_init",
            inst("cloud_init", cloud),
            what.into(),
        );
    }
    // Inventory groups: names Ansible would transform or that are the inventory's own.
    for (what, groups) in [
        ("a dash", json!(["web-1"])),
        ("a shell word", json!(["web; rm -rf /"])),
        ("starting with a digit", json!([1])),
        ("Ansible's own", json!(["all"])),
        ("virtup's own", json!(["virtup_running"])),
        ("a dict", json!([{"web": 1}])),
        (
            "33 groups",
            Value::Array((0..33).map(|i| json!(format!("g{i}"))).collect()),
        ),
    ] {
        push(
            "virtup_instance",
            "groups",
            inst("groups", groups),
            what.into(),
        );
    }
    push(
        "virtup_instance",
        "address_mode",
        inst("address_mode", json!("static; rm -rf /")),
        "not a choice".into(),
    );
    push(
        "virtup_instance",
        "address_mode",
        inst("address_mode", json!("static")),
        "static without address".into(),
    );
    push(
        "virtup_template",
        "checksum",
        json!({"name": "hz-t", "image": "/nonexistent.qcow2", "checksum": "sha256:$(id)"}),
        "checksum $()".into(),
    );
    // virtup_host defines pools and networks: its names and addresses get the same treatment.
    for (option, v) in [
        ("pool", "../x"),
        ("pool", "a/b"),
        ("pool", "x'/><pool>"),
        ("pool", ""),
        ("network", "x'/><devices>"),
        ("network", "$(id)"),
        ("network", "a\u{202e}b"),
        ("network_bridge", "br0; rm -rf /"),
        ("network_bridge", "br\n0"),
        ("network_bridge", "br\u{200b}0"),
        ("network_bridge", "virbr-much-too-long"),
        ("network_address", "$(id)"),
        ("network_address", "192.168.122.1'/><ip>"),
        ("network_netmask", "999.0.0.0"),
        ("network_dhcp_start", ""),
        ("network_dhcp_end", "&xxe;"),
        ("pool_path", "relative/dir"),
        ("pool_path", "../../etc"),
    ] {
        let mut a = json!({"pool": "hz-p", "network": "hz-n", "network_bridge": "hzbr0", "probe_kvm": false});
        a[option] = json!(v);
        push("virtup_host", option, a, format!("{v:?}"));
    }
    rows
}

/// Whether `msg` names `option` the way virtup and Ansible do (`x`, 'x', or "x").
fn names_option(msg: &str, option: &str) -> bool {
    [
        format!("`{option}`"),
        // An item of a list option: `disks[2].mount`; a key of a dict option: `cloud_init.user_data`.
        format!("`{option}["),
        format!("`{option}."),
        format!("'{option}'"),
        format!("\"{option}\""),
        // AnsibleModule's wording for choices, which virtup keeps.
        format!("value of {option} must be one of"),
    ]
    .iter()
    .any(|n| msg.contains(n.as_str()))
}

/// Defines the decoy: a small shut-off domain without a disk, so nothing can boot or leak.
fn define_decoy() {
    let xml = format!(
        "<domain type='qemu'><name>{DECOY}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os></domain>"
    );
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), xml).unwrap();
    virsh(&["define", f.path().to_str().unwrap()]);
}

struct Undefine;

impl Drop for Undefine {
    fn drop(&mut self) {
        virtup_e2e::wait_for_libvirt();
        let _ = run(
            Command::new("virsh").args(["-c", "qemu:///system", "undefine", DECOY]),
            Duration::from_secs(60),
        );
    }
}

#[test]
fn hostile_module_inputs_are_rejected_naming_the_option_and_touch_nothing() {
    lab_home();
    let sb = Sandbox::new();
    let abs = format!("/tmp/hz-abs-{}", std::process::id());
    let _ = run(
        Command::new("virsh").args(["-c", "qemu:///system", "undefine", DECOY]),
        Duration::from_secs(60),
    );
    define_decoy();
    let _undefine = Undefine;
    let rows = rows(&abs);
    let mut failures = Vec::new();
    let mut per_module: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for row in &rows {
        let value = row.args[row.option]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| row.args[row.option].to_string());
        let label = format!("{} {}={:?} ({})", row.module, row.option, value, row.what);
        let before = snapshot(&sb);
        // A check run first: a value that slips through validation must not start a real build or define.
        let mut check = row.args.clone();
        check["_ansible_check_mode"] = json!(true);
        let (doc, out) = sb.module(row.module, &check);
        let mut problems = Vec::new();
        if doc["failed"] != json!(true) {
            problems.push(format!("ACCEPTED in check mode: {doc}"));
        } else {
            let (doc, out) = sb.module(row.module, &row.args);
            let msg = doc["msg"].as_str().unwrap_or_default();
            if doc["failed"] != json!(true) {
                problems.push(format!("ACCEPTED: {doc}"));
            }
            if out.status.success() {
                problems.push("exit status 0".into());
            }
            if !names_option(msg, row.option) {
                problems.push(format!("message does not name `{}`: {msg:?}", row.option));
            }
            if let Some(c) = msg.chars().find(|c| INVISIBLE.contains(c)) {
                problems.push(format!("message shows {c:?} raw: {msg:?}"));
            }
            if !out.stderr.is_empty() && out.stderr.chars().any(|c| INVISIBLE[3..].contains(&c)) {
                problems.push(format!(
                    "stderr shows an invisible character raw: {:?}",
                    out.stderr
                ));
            }
        }
        if !out.status.success() && doc["failed"] != json!(true) {
            problems.push("nonzero exit without `failed`".into());
        }
        let after = snapshot(&sb);
        problems.extend(our_changes(&before, &after, &value));
        for p in [
            abs.clone(),
            format!("{abs}.json"),
            format!("{abs}-config.iso"),
        ] {
            if Path::new(&p).exists() {
                problems.push(format!("created `{p}` outside the sandbox"));
            }
        }
        let entry = per_module.entry(row.module).or_default();
        entry.0 += 1;
        if problems.is_empty() {
            entry.1 += 1;
        } else {
            failures.push(format!("{label}:\n    {}", problems.join("\n    ")));
        }
    }
    println!("hostile module inputs: module / rows / rejected cleanly");
    for (module, (n, ok)) in &per_module {
        println!("  {module:<16} {n:>4} {ok:>4}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile rows were not rejected cleanly:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// `bin/virt-up`, as scripts/build installs it.
fn virt_up_exe() -> PathBuf {
    let exe = repo_root().join("bin/virt-up");
    assert!(
        exe.exists(),
        "{} is missing: run scripts/build",
        exe.display()
    );
    exe
}

#[test]
fn hostile_virt_up_flags_are_rejected_naming_the_flag_and_touch_nothing() {
    lab_home();
    let sb = Sandbox::new();
    let _ = run(
        Command::new("virsh").args(["-c", "qemu:///system", "undefine", DECOY]),
        Duration::from_secs(60),
    );
    define_decoy();
    let _undefine = Undefine;
    // Each row: the arguments after `virt-up`, and the word the error must name.
    let rows: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--name", "../x", "--template", NO_TEMPLATE], "name"),
        (vec!["/etc/passwd", "--template", NO_TEMPLATE], "name"),
        (vec!["$(id)", "--template", NO_TEMPLATE], "name"),
        (vec!["a\u{202e}b", "--template", NO_TEMPLATE], "name"),
        (vec!["x'/><devices>", "--template", NO_TEMPLATE], "name"),
        (vec![DECOY, "--template", "../x"], "template"),
        (vec![DECOY, "--template", "x;id"], "template"),
        (
            vec![DECOY, "--template", NO_TEMPLATE, "--memory", "1e30"],
            "memory",
        ),
        (
            vec![DECOY, "--template", NO_TEMPLATE, "--memory=-1"],
            "memory",
        ),
        (
            vec![
                DECOY,
                "--template",
                NO_TEMPLATE,
                "--memory",
                "99999999999999999999",
            ],
            "memory",
        ),
        (
            vec![
                DECOY,
                "--template",
                NO_TEMPLATE,
                "--vcpus",
                "18446744073709551616",
            ],
            "vcpus",
        ),
        (
            vec![DECOY, "--template", NO_TEMPLATE, "--vcpus", "0"],
            "vcpus",
        ),
        (
            vec![
                DECOY,
                "--template",
                NO_TEMPLATE,
                "--size",
                "99999999999999T",
            ],
            "size",
        ),
        (vec![DECOY, "--template", NO_TEMPLATE, "--size=-1G"], "size"),
        (
            vec![
                DECOY,
                "--template",
                NO_TEMPLATE,
                "--dns-domain",
                "x'/><devices>",
            ],
            "dns",
        ),
        (
            vec![DECOY, "--template", NO_TEMPLATE, "--user", "root;id"],
            "user",
        ),
        (vec![DECOY, "--template", NO_TEMPLATE, "--user", ""], "user"),
        (
            vec![DECOY, "--template", NO_TEMPLATE, "--graphics", "x'/>"],
            "graphics",
        ),
    ];
    let mut failures = Vec::new();
    for (args, word) in &rows {
        let before = snapshot(&sb);
        let r = run(
            in_repo(virt_up_exe())
                .args(args)
                .env("VIRTUP_CONFIG_HOME", sb.config())
                .env("VIRTUP_DATA_HOME", sb.data()),
            Duration::from_secs(120),
        );
        let mut problems = Vec::new();
        let code = r.status.code();
        let err_lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if r.status.success() {
            problems.push("ACCEPTED (exit 0)".to_string());
        } else if code == Some(2) {
            // clap's usage errors: several lines, but they must name the flag.
            if !r.stderr.contains(word) {
                problems.push(format!("usage error does not name `{word}`"));
            }
        } else {
            match err_lines.as_slice() {
                [line] if line.starts_with("virt-up: error:") && line.contains(word) => {}
                _ => problems.push(format!(
                    "exit {code:?}: expected one `virt-up: error:` line naming `{word}`"
                )),
            }
        }
        if let Some(c) = r.stderr.chars().find(|c| INVISIBLE[3..].contains(c)) {
            problems.push(format!("stderr shows {c:?} raw"));
        }
        let after = snapshot(&sb);
        problems.extend(our_changes(&before, &after, args[1]));
        println!(
            "  virt-up {args:?}: exit {code:?}, {:?}",
            err_lines.first().unwrap_or(&"")
        );
        if !problems.is_empty() {
            failures.push(format!(
                "virt-up {args:?}: {}\n--- stderr\n{}",
                problems.join("; "),
                r.stderr
            ));
        }
    }
    println!(
        "hostile virt-up flags: {} rows, {} rejected cleanly",
        rows.len(),
        rows.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
