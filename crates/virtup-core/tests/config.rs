//! Config loading from real directories: virt-up 2.2.0's own files, system/user precedence, file order, errors.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use virtup_core::{AddressSource, Config, ConfigError, Fields, ImageFormat, Paths};

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/virt-up-2.2.0")
        .join(dir)
}

fn args(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

/// One template as virt-up 2.2.0's `Settings` resolves it.
#[derive(Debug, Deserialize)]
struct VirtUpSettings {
    address_source: String,
    arch: String,
    cp_args: Vec<String>,
    desc: String,
    dns_domain: String,
    graphics: String,
    image_format: String,
    instance_playbook: String,
    memory: String,
    network: String,
    os_variant: String,
    os_version: String,
    password_length: u32,
    pool: String,
    template_playbook: String,
    vcpus: String,
    virt_builder_args: Vec<String>,
    virt_install_args: Vec<String>,
    virt_sysprep_args: Vec<String>,
}

fn load_fixture() -> Config {
    Config::load_dirs(&[fixture("system"), fixture("user")]).unwrap_or_else(|e| panic!("{e}"))
}

fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

#[test]
fn virt_up_2_2_0_files_load_unchanged_and_resolve_like_virt_up() {
    let config = load_fixture();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.files.len(), 10);
    assert!(config.files[0].ends_with("system/settings.cfg"));
    assert!(config.files[1].ends_with("user/settings.cfg"));

    let expected: BTreeMap<String, VirtUpSettings> =
        serde_json::from_str(&fs::read_to_string(fixture("expected-settings.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = config.template_names().collect();
    assert_eq!(
        names,
        expected.keys().map(String::as_str).collect::<Vec<_>>()
    );

    for (name, want) in &expected {
        let got = config.resolve_template(name).unwrap();
        let ctx = format!("template `{name}`");
        // virt-up reads only hyphenated keys; `debian12` was written by its
        // `init template` with underscore keys, which virtup honours.
        let deviates = name == "debian12";

        assert_eq!(text(&got.desc), want.desc, "{ctx}");
        assert_eq!(text(&got.os_version), want.os_version, "{ctx}");
        assert_eq!(text(&got.os_variant), want.os_variant, "{ctx}");
        assert_eq!(text(&got.arch), want.arch, "{ctx}");
        assert_eq!(text(&got.pool), want.pool, "{ctx}");
        assert_eq!(text(&got.graphics), want.graphics, "{ctx}");
        assert_eq!(text(&got.network), want.network, "{ctx}");
        assert_eq!(
            text(&got.template_playbook),
            want.template_playbook,
            "{ctx}"
        );
        assert_eq!(
            text(&got.instance_playbook),
            want.instance_playbook,
            "{ctx}"
        );
        assert_eq!(got.memory.unwrap().to_string(), want.memory, "{ctx}");
        assert_eq!(got.vcpus.unwrap().to_string(), want.vcpus, "{ctx}");
        assert_eq!(got.password_length, Some(want.password_length), "{ctx}");
        assert_eq!(
            got.address_source,
            Some(AddressSource::parse_list("x", &want.address_source).unwrap()),
            "{ctx}"
        );
        assert_eq!(
            got.virt_install_args.unwrap_or_default(),
            want.virt_install_args,
            "{ctx}"
        );
        assert_eq!(
            got.virt_sysprep_args.unwrap_or_default(),
            want.virt_sysprep_args,
            "{ctx}"
        );
        assert_eq!(got.cp_args.unwrap_or_default(), want.cp_args, "{ctx}");
        if deviates {
            assert_eq!(want.image_format, "qcow2");
            assert_eq!(got.image_format, Some(ImageFormat::Raw), "{ctx}");
            assert_eq!(want.dns_domain, "example.com");
            assert_eq!(text(&got.dns_domain), "lab.example.com", "{ctx}");
            assert!(want.virt_builder_args.is_empty());
            assert_eq!(
                got.virt_builder_args,
                args(&[
                    "--install",
                    "sudo,qemu-guest-agent",
                    "--run-command",
                    "systemctl enable serial-getty@ttyS0.service"
                ]),
                "{ctx}"
            );
            assert_eq!(text(&got.username), "ansible", "{ctx}");
        } else {
            assert_eq!(
                got.image_format.unwrap().as_str(),
                want.image_format,
                "{ctx}"
            );
            assert_eq!(text(&got.dns_domain), want.dns_domain, "{ctx}");
            assert_eq!(
                got.virt_builder_args.unwrap_or_default(),
                want.virt_builder_args,
                "{ctx}"
            );
            assert_eq!(text(&got.username), "alice", "{ctx}");
        }
    }
}

#[test]
fn fixture_common_section_merges_system_and_user() {
    let config = load_fixture();
    let common = &config.common;
    // system: user alice, dns example.com, memory 1024, address-source agent;
    // user: pool fastpool, memory 2048, vcpus 2, address-source lease.
    assert_eq!(text(&common.username), "alice");
    assert_eq!(text(&common.dns_domain), "example.com");
    assert_eq!(text(&common.pool), "fastpool");
    assert_eq!(common.memory, Some(2048));
    assert_eq!(common.vcpus, Some(2));
    assert_eq!(common.address_source, Some(vec![AddressSource::Lease]));
    // The user's copy of `default` overrides the system's, field by field.
    let default = &config.templates["default"];
    assert_eq!(
        default.virt_builder_args,
        args(&[
            "--install",
            "sudo,qemu-guest-agent",
            "--firstboot",
            "/home/alice/.config/virt-up/scripts/fixup-network-interfaces.sh"
        ])
    );
    assert_eq!(config.resolve_template("nope"), None);
}

struct Tree(tempfile::TempDir);

impl Tree {
    fn new(files: &[(&str, &str)]) -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = tmp.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        Tree(tmp)
    }
    fn dir(&self, d: &str) -> PathBuf {
        self.0.path().join(d)
    }
    fn load(&self) -> Result<Config, ConfigError> {
        Config::load_dirs(&[self.dir("sys"), self.dir("usr")])
    }
}

#[test]
fn precedence_table() {
    let tree = Tree::new(&[
        (
            "sys/settings.cfg",
            "[common]\npool = syspool\nmemory = 1024\ngraphics = spice\n",
        ),
        ("usr/settings.cfg", "[common]\nmemory = 4096\n"),
        (
            "sys/templates.d/10-base.cfg",
            "[web]\ndesc = system web\nos-version = debian-12\nvcpus = 2\n[db]\ndesc = system db\n",
        ),
        ("sys/templates.d/20-more.cfg", "[web]\nvcpus = 3\n"),
        (
            "usr/templates.d/00-web.cfg",
            "[web]\ndesc = user web\ngraphics = vnc\n",
        ),
        ("usr/templates.d/.hidden.cfg", "[web]\ndesc = hidden\n"),
        ("usr/templates.d/notes.txt", "not ini at all"),
        (
            "usr/templates.d/dir.cfg/x",
            "ignored: a directory named *.cfg",
        ),
    ]);
    let config = tree.load().unwrap();
    let web = config.resolve_template("web").unwrap();
    let db = config.resolve_template("db").unwrap();
    // (what, got, want): built-in < system common < user common < system template < user template.
    let table: &[(&str, String, &str)] = &[
        (
            "web desc: user template wins",
            text(&web.desc).into(),
            "user web",
        ),
        (
            "web os-version: system template kept",
            text(&web.os_version).into(),
            "debian-12",
        ),
        (
            "web vcpus: later system file wins",
            web.vcpus.unwrap().to_string(),
            "3",
        ),
        (
            "web graphics: template over common",
            text(&web.graphics).into(),
            "vnc",
        ),
        (
            "web memory: user common over system common",
            web.memory.unwrap().to_string(),
            "4096",
        ),
        ("web pool: system common", text(&web.pool).into(), "syspool"),
        (
            "web username: built-in default",
            text(&web.username).into(),
            "virt",
        ),
        (
            "db graphics: system common",
            text(&db.graphics).into(),
            "spice",
        ),
        (
            "db vcpus: built-in default",
            db.vcpus.unwrap().to_string(),
            "1",
        ),
        (
            "db image-format: built-in default",
            db.image_format.unwrap().to_string(),
            "qcow2",
        ),
    ];
    for (what, got, want) in table {
        assert_eq!(got, want, "{what}");
    }
    let files: Vec<String> = config
        .files
        .iter()
        .map(|p| p.strip_prefix(tree.0.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "sys/settings.cfg",
            "usr/settings.cfg",
            "sys/templates.d/10-base.cfg",
            "sys/templates.d/20-more.cfg",
            "usr/templates.d/00-web.cfg"
        ]
    );
    // The resolved layer is what module options are laid over.
    let module = Fields {
        memory: Some(512),
        ..Fields::default()
    };
    assert_eq!(web.overlay(&module).memory, Some(512));
}

#[test]
fn load_through_paths() {
    let tree = Tree::new(&[
        ("sys/settings.cfg", "[common]\npool = a\n"),
        ("usr/settings.cfg", "[common]\npool = b\n"),
    ]);
    let paths = Paths::new(
        tree.dir("sys"),
        tree.dir("usr"),
        tree.dir("data"),
        "test:///default",
    );
    assert_eq!(
        Config::load(&paths).unwrap().common.pool.as_deref(),
        Some("b")
    );
    let empty = Paths::new(tree.dir("none1"), tree.dir("none2"), tree.dir("data"), "x");
    assert_eq!(Config::load(&empty).unwrap(), Config::default());
}

#[test]
fn malformed_files_name_the_file_and_line() {
    let table: &[(&str, &str, usize, &str)] = &[
        (
            "usr/templates.d/web.cfg",
            "[web]\ndesc = x\nvirt-builder-args = --install sudo\n  --run-command 'unterminated\n",
            3,
            "section `[web]`, key `virt-builder-args`: unbalanced quotes",
        ),
        (
            "sys/settings.cfg",
            "# comment\n[common]\nmemory = 2G\n",
            3,
            "`2G` is not a whole number of MiB",
        ),
        (
            "usr/settings.cfg",
            "[common]\nimage-format = vmdk\n",
            2,
            "`vmdk` is not an image format",
        ),
        (
            "sys/templates.d/a.cfg",
            "[a]\ndesc = 100% done\n",
            2,
            "`%` must be followed by `%` or `(`",
        ),
        (
            "sys/templates.d/a.cfg",
            "pool = x\n",
            1,
            "outside any section",
        ),
        (
            "sys/templates.d/a.cfg",
            "[a]\n\n\nno delimiter here\n",
            4,
            "expected `key = value`",
        ),
    ];
    for (file, content, line, want) in table {
        let tree = Tree::new(&[(file, content)]);
        let e = tree.load().expect_err(file);
        let path = tree.dir(file);
        assert_eq!(e.location(), Some((path.as_path(), *line)), "{file}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("`{}` line {line}", path.display())),
            "{file}: {msg}"
        );
        assert!(msg.contains(want), "{file}: {msg}");
    }
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let tree = Tree::new(&[("usr/settings.cfg", "[common]\n\u{0}")]);
    fs::write(tree.dir("usr/settings.cfg"), [0xff, 0xfe, b'[']).unwrap();
    let e = tree.load().unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "failed to read `{}`",
            tree.dir("usr/settings.cfg").display()
        )),
        "{e}"
    );
}
