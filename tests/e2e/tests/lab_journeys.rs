//! Layer 4: the README's journeys, taken as a reader takes them: its marked blocks, run in a directory outside the
//! repository with nothing there but what the README makes. "Using the roles": the collection built as an archive
//! and installed beside the reader's playbook, its docs read, a template and two instances from a playbook of the
//! reader's own, then the collection's `teardown.yml` with the same variables; before the teardown, "Using the
//! modules" in the same directory: one more instance from the modules themselves, a command on it, its removal; and
//! docs/cli.md's first session in the same data dir: `virt-up --init`, a clone, a command, the list, the delete.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use virtup_e2e::{journey, lab_home, pool_volumes, ssh_instance, virsh, Sandbox};

/// What the README's `vars.yml` declares.
const TEMPLATE: &str = "debian-12";
const INSTANCES: &[&str] = &["web1", "web2"];
/// What the README's `modules.yml` makes, from the same template.
const MODULE_INSTANCE: &str = "app1";
/// What docs/cli.md's first session makes, from the same template.
const CLI_INSTANCE: &str = "web3";

/// Removes the journey's instances and template, however the test ends.
struct Cleanup<'a>(&'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.remove_all(
            &[INSTANCES, &[MODULE_INSTANCE, CLI_INSTANCE]].concat(),
            &[TEMPLATE],
        );
    }
}

/// What the archive may hold at its top level: what runs and what a reader reads (`scripts/build --collection`).
const SHIPPED: &[&str] = &[
    "COPYING",
    "FILES.json",
    "MANIFEST.json",
    "README.md",
    "THIRD-PARTY.md",
    "bin",
    "docs",
    "examples",
    "inventory",
    "meta",
    "molecule",
    "playbooks",
    "plugins",
    "roles",
    "tests",
    "virtup_inventory",
];

/// The installed collection holds the binaries and their docs, runtime metadata and the action plugins, and none of
/// the sources, tests, fuzz corpus or benchmarks.
fn assert_installed_collection(root: &Path) {
    let mut top: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, SHIPPED, "{}", root.display());
    let molecule: Vec<String> = std::fs::read_dir(root.join("molecule"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(molecule, ["platform"], "only the scenario users copy");
    assert_eq!(
        journey::files(&root.join("tests")),
        ["sanity/ignore-2.19.txt"],
        "of the tests, only ansible-test's ignore file"
    );
    for module in ["virtup_template", "virtup_instance", "virtup_host"] {
        let bin = root.join("plugins/modules").join(module);
        let mode = std::os::unix::fs::PermissionsExt::mode(&bin.metadata().unwrap().permissions());
        assert_eq!(mode & 0o111, 0o111, "{} is not executable", bin.display());
        assert!(root.join(format!("plugins/modules/{module}.yml")).is_file());
        assert!(root.join(format!("plugins/action/{module}.py")).is_file());
    }
    // The crates compiled into the binaries, each with its license, and the project's own license text.
    let third_party = std::fs::read_to_string(root.join("THIRD-PARTY.md")).unwrap();
    for krate in ["| virt | ", "| serde_json | ", "| ssh-key | "] {
        assert!(third_party.contains(krate), "{krate} in {third_party}");
    }
    assert!(!third_party.contains("| virtup-"), "{third_party}");
    assert!(
        third_party.contains("## Licence texts") && third_party.contains("Apache License"),
        "the licence texts themselves"
    );
    assert!(std::fs::read_to_string(root.join("COPYING"))
        .unwrap()
        .contains("GNU GENERAL PUBLIC LICENSE"));
    let runtime = std::fs::read_to_string(root.join("meta/runtime.yml")).unwrap();
    assert!(
        runtime.contains("requires_ansible: \">=2.16.0\""),
        "{runtime}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("MANIFEST.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["collection_info"]["name"],
        json!("virtup"),
        "{manifest}"
    );
    // Built with the checkout and Cargo's home remapped: no path of the building machine rides along.
    let repo = virtup_e2e::repo_root().display().to_string();
    for bin in ["plugins/modules/virtup_instance", "bin/virt-up"] {
        let bytes = std::fs::read(root.join(bin)).unwrap();
        for path in [format!("{repo}/"), "/.cargo/registry".to_string()] {
            assert!(
                !bytes.windows(path.len()).any(|w| w == path.as_bytes()),
                "{bin} names {path}"
            );
        }
    }
    let files = journey::files(root);
    for forbidden in [".rs", "Cargo.toml", "Cargo.lock", ".pyc"] {
        let found: Vec<&String> = files.iter().filter(|f| f.ends_with(forbidden)).collect();
        assert!(found.is_empty(), "the archive carries {found:?}");
    }
}

/// Beside the archive, the source of its binaries (GPL-3.0-or-later): exactly the files git tracks, under one
/// directory named for the version.
fn assert_source_archive() {
    let repo = virtup_e2e::repo_root();
    let listed = virtup_e2e::run_ok(
        std::process::Command::new("tar")
            .arg("-tzf")
            .arg(repo.join("dist/virtup-0.1.0-source.tar.gz")),
        Duration::from_secs(60),
        "tar -tzf",
    );
    let tracked = virtup_e2e::run_ok(
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .arg("ls-files"),
        Duration::from_secs(60),
        "git ls-files",
    );
    let mut want: Vec<String> = tracked
        .stdout
        .lines()
        .filter(|f| repo.join(f).exists())
        .map(|f| format!("virtup-0.1.0/{f}"))
        .collect();
    want.sort();
    let mut got: Vec<String> = listed.stdout.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want, "the source archive against git ls-files");
    assert!(got.iter().any(|f| f == "virtup-0.1.0/Cargo.lock"));
    // Symlinks keep their targets (relative, inside the tree), so they resolve once extracted.
    let verbose = virtup_e2e::run_ok(
        std::process::Command::new("tar")
            .arg("-tvzf")
            .arg(repo.join("dist/virtup-0.1.0-source.tar.gz")),
        Duration::from_secs(60),
        "tar -tvzf",
    );
    let links: Vec<(&str, &str)> = verbose
        .stdout
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .collect();
    assert!(!links.is_empty(), "{}", verbose.stdout);
    for (entry, target) in links {
        let name = entry.rsplit_once(" virtup-0.1.0/").unwrap().1;
        let want = std::fs::read_link(repo.join(name)).unwrap();
        assert_eq!(target, want.to_str().unwrap(), "the link {name}");
    }
}

/// A module whose libvirt library cannot load fails naming the library and the fix, not with Ansible's
/// "Module result deserialization failed". The library is hidden in a mount namespace of this command only.
fn assert_missing_libvirt_is_named(home: &Path, ansible_home: &Path) {
    let module =
        home.join("collections/ansible_collections/virtup/virtup/plugins/modules/virtup_instance");
    let ldd = virtup_e2e::run_ok(
        std::process::Command::new("ldd").arg(&module),
        Duration::from_secs(60),
        "ldd",
    );
    let lib = ldd
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("libvirt.so.0 => "))
        .and_then(|l| l.split(" (").next())
        .unwrap_or_else(|| panic!("no libvirt.so.0 in {}", ldd.stdout));
    let lib = std::fs::canonicalize(lib).unwrap();
    let script = format!(
        "mount --bind /dev/null '{}' && exec ansible localhost -i localhost, -c local --check \
         -m virtup.virtup.virtup_instance -a 'name=virtup-journey-none state=absent'",
        lib.display()
    );
    let run = virtup_e2e::run(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .current_dir(home)
            .env("PATH", journey::venv_path())
            .env("ANSIBLE_HOME", ansible_home)
            .env("ANSIBLE_PLAYBOOK_DIR", home)
            .env("ANSIBLE_NOCOLOR", "1"),
        Duration::from_secs(300),
    );
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains("virtup_instance could not start on localhost")
            && out.contains("libvirt.so.0")
            && out.contains("apt install libvirt0"),
        "{out}"
    );
    assert!(!out.contains("deserialization failed"), "{out}");
}

/// docs/cli.md's first session, in the data dir where the README's journey made `debian-12`: `--init` and the
/// templates it declares, a clone, a command over the pinned key, the list and paths, a playbook through
/// `--playbook`, the delete. `virt-up` is found on `PATH` in the checkout's `bin/`, as the page says.
fn cli_journey(sb: &Sandbox) {
    let steps = journey::steps("docs/cli.md", "cli");
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["run", "run", "run", "file", "run", "run"],
        "init, create, login and list, a playbook and its run, delete: {steps:?}"
    );
    let home = journey::outside_dir("virtup-cli-journey-");
    let mut path = vec![virtup_e2e::repo_root().join("bin")];
    path.extend(std::env::split_paths(&journey::venv_path()));
    let run = |step: &journey::Step| {
        let mut cmd = journey::shell(home.path(), step);
        cmd.env("PATH", std::env::join_paths(&path).unwrap())
            .env("VIRTUP_DATA_HOME", sb.data())
            .env("VIRTUP_CONFIG_HOME", sb.config());
        virtup_e2e::run_ok(&mut cmd, Duration::from_secs(1200), &step.body)
    };
    let started = std::time::Instant::now();
    let init = run(&steps[0]);
    assert!(
        init.stdout.lines().any(|l| l.starts_with("debian-12 ")
            && l.trim_end().ends_with(" os-version:debian-12")),
        "--show-templates: {}",
        init.stdout
    );
    for file in ["settings.cfg", "templates.d/debian.cfg"] {
        assert!(sb.config().join(file).is_file(), "--init wrote no {file}");
    }
    let up = run(&steps[1]);
    assert!(
        up.stdout
            .contains(&format!("instance `{CLI_INSTANCE}` is up at ")),
        "{}{}",
        up.stdout,
        up.stderr
    );
    let seen = run(&steps[2]);
    let (hostname, table) = seen.stdout.split_once('\n').unwrap_or_default();
    assert_eq!(hostname, CLI_INSTANCE, "{}", seen.stdout);
    assert!(table.starts_with("NAME "), "{}", seen.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in {}", seen.stdout))
            .to_owned()
    };
    assert!(row(CLI_INSTANCE).contains(" running "), "{}", seen.stdout);
    row(&format!("VIRTUP-{TEMPLATE}"));
    let data_home = format!(
        "VIRTUP_DATA_HOME=\"{}\"",
        std::fs::canonicalize(sb.data()).unwrap().display()
    );
    assert!(
        table.lines().any(|l| l.contains(&data_home)),
        "--show-paths: {}",
        seen.stdout
    );
    journey::write(home.path(), &steps[3]);
    let played = run(&steps[4]);
    assert!(
        played
            .stdout
            .contains(&format!("\"msg\": \"hello from {CLI_INSTANCE}\"")),
        "{}",
        played.stdout
    );
    assert!(
        virtup_e2e::recap(&played.stdout).contains("failed=0"),
        "{}",
        played.stdout
    );
    run(&steps[5]);
    assert_instance_gone(sb, CLI_INSTANCE);
    println!(
        "docs/cli.md journey (init, a clone from the existing template, login, list, a playbook, delete): {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Nothing of instance `name` is left: no domain or volume of its name on the lab's libvirtd, no metadata.
fn assert_instance_gone(sb: &Sandbox, name: &str) {
    assert!(
        !journey_objects()
            .iter()
            .any(|n| n == name || n.starts_with(&format!("{name}."))),
        "{name} is left: {:?}",
        journey_objects()
    );
    let meta = sb.data().join("instance").join(format!("{name}.json"));
    assert!(!meta.exists(), "{} is left", meta.display());
}

/// Domains and volumes of the journey's objects on the lab's libvirtd.
fn journey_objects() -> Vec<String> {
    let ours = |n: &str| {
        n == format!("VIRTUP-{TEMPLATE}")
            || n.starts_with(&format!("VIRTUP-{TEMPLATE}-"))
            || INSTANCES
                .iter()
                .chain([&MODULE_INSTANCE, &CLI_INSTANCE])
                .any(|i| {
                    n == *i || n.starts_with(&format!("{i}.")) || n.starts_with(&format!("{i}-"))
                })
    };
    virsh(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .map(str::to_owned)
        .chain(pool_volumes())
        .filter(|n| ours(n))
        .collect()
}

#[test]
fn the_readme_roles_journey_makes_and_tears_down_what_it_declares() {
    lab_home();
    assert_eq!(
        journey_objects(),
        Vec::<String>::new(),
        "the journey's names are taken before it starts: another run or a developer uses them"
    );
    let sb = Sandbox::new();
    let _cleanup = Cleanup(&sb);
    let steps = journey::steps("README.md", "roles");
    let home = journey::outside_dir("virtup-readme-roles-");
    let mut files = Vec::new();
    let mut runs = Vec::new();
    for step in &steps {
        if step.kind == "run" {
            runs.push(step);
        } else {
            journey::write(home.path(), step);
            files.push(step.path.clone());
        }
    }
    files.sort();
    assert_eq!(
        journey::files(home.path()),
        files,
        "only what the README makes"
    );
    assert_eq!(
        runs.len(),
        4,
        "install, read the docs, make, tear down: {runs:?}"
    );
    // A reader's shell: no Ansible setting of the lab's, and an Ansible home of its own, so the only virtup.virtup
    // Ansible can find is the one installed beside the playbook (not a checkout, not ~/.ansible/collections).
    let ansible_home = journey::outside_dir("virtup-readme-ansible-home-");
    let session = |step: &journey::Step| {
        let mut cmd = journey::shell(home.path(), step);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ANSIBLE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PATH", journey::venv_path())
            .env("ANSIBLE_HOME", ansible_home.path())
            .env("VIRTUP_DATA_HOME", sb.data())
            .env("VIRTUP_CONFIG_HOME", sb.config())
            .env("ANSIBLE_NOCOLOR", "1");
        virtup_e2e::run_ok(&mut cmd, Duration::from_secs(1800), &step.body)
    };

    let installed = session(runs[0]);
    println!(
        "README roles journey, build and install the collection: {:.1}s",
        installed.elapsed.as_secs_f64()
    );
    let collection = home
        .path()
        .join("collections/ansible_collections/virtup/virtup");
    assert_installed_collection(&collection);
    assert_source_archive();
    let doc = session(runs[1]);
    assert!(
        doc.stdout.contains("virtup.virtup.virtup_instance")
            && doc
                .stdout
                .contains(&collection.join("plugins/modules").display().to_string())
            && doc.stdout.contains("wait_timeout"),
        "{}",
        doc.stdout
    );
    assert_missing_libvirt_is_named(home.path(), ansible_home.path());

    let made = session(runs[2]);
    println!(
        "README roles journey, the playbook: {:.1}s",
        made.elapsed.as_secs_f64()
    );
    let recap = virtup_e2e::recap(&made.stdout);
    assert!(recap.contains("failed=0"), "{recap}");
    // Each instance answers with the key virtup pinned (the module's own proof, then a login of ours).
    for name in INSTANCES {
        let doc = sb.ok(
            "virtup_instance",
            &json!({"name": name, "template": TEMPLATE, "wait_timeout": 900}),
        );
        assert_eq!(doc["changed"], json!(false), "{doc}");
        assert_eq!(ssh_instance(&doc, "hostname").trim(), *name);
    }

    // "Using the modules", in the same directory: the template is there, so only the clone is made.
    let module_steps = journey::steps("README.md", "modules");
    let module_runs: Vec<&journey::Step> =
        module_steps.iter().filter(|s| s.kind == "run").collect();
    assert_eq!(module_runs.len(), 1, "{module_steps:?}");
    for step in module_steps.iter().filter(|s| s.kind != "run") {
        journey::write(home.path(), step);
    }
    let modules = session(module_runs[0]);
    println!(
        "README modules journey (a clone from the existing template, a command, its removal): {:.1}s",
        modules.elapsed.as_secs_f64()
    );
    let recap = virtup_e2e::recap(&modules.stdout);
    assert!(recap.contains("failed=0"), "{recap}");
    let template_task = modules
        .stdout
        .split("TASK [The template")
        .nth(1)
        .and_then(|t| t.split("TASK [").next())
        .unwrap_or_default();
    assert!(
        template_task.contains("ok: [localhost]") && !template_task.contains("changed:"),
        "the template task changed something: {}",
        modules.stdout
    );
    assert!(
        modules.stdout.contains("\"msg\": \"app1 runs "),
        "{}",
        modules.stdout
    );
    assert!(
        modules.stdout.contains("localhost | CHANGED"),
        "the ad-hoc removal: {}",
        modules.stdout
    );
    assert_instance_gone(&sb, MODULE_INSTANCE);

    cli_journey(&sb);

    let gone = session(runs[3]);
    println!(
        "README roles journey, the teardown: {:.1}s",
        gone.elapsed.as_secs_f64()
    );
    assert_eq!(journey_objects(), Vec::<String>::new(), "{}", gone.stdout);
    for name in INSTANCES {
        let meta = sb.data().join("instance").join(format!("{name}.json"));
        assert!(!meta.exists(), "{} is left", meta.display());
    }
}
