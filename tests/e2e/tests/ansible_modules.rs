//! Layer 3 through real Ansible: ansible-playbook calls both modules by short name and by FQCN, ansible-doc renders them.

use std::process::Command;
use std::time::Duration;

use virtup_e2e::{in_repo, repo_root, run, run_ok, venv_bin};

/// An isolated config/data dir and a playbook file, removed when dropped.
struct Play {
    dir: tempfile::TempDir,
}

impl Play {
    fn new(playbook: &str) -> Play {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        // libvirt's test driver (a real driver held in memory) names its pool `default-pool`.
        std::fs::write(
            dir.path().join("config/settings.cfg"),
            "[common]\npool = default-pool\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("play.yml"), playbook).unwrap();
        Play { dir }
    }

    fn ansible_playbook(&self, extra: &[&str]) -> Command {
        let mut c = in_repo(venv_bin("ansible-playbook"));
        c.args(["-i", "localhost,", "-c", "local"])
            .args(extra)
            .arg(self.dir.path().join("play.yml"))
            .env("VIRTUP_CONFIG_HOME", self.dir.path().join("config"))
            .env("VIRTUP_DATA_HOME", self.dir.path().join("data"))
            .env("LIBVIRT_DEFAULT_URI", "test:///default")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCALHOST_WARNING", "false");
        c
    }
}

fn assert_modules_built() {
    for m in ["virtup_template", "virtup_instance"] {
        let p = repo_root().join("plugins/modules").join(m);
        assert!(
            p.exists(),
            "{} is missing: run scripts/build first",
            p.display()
        );
    }
}

#[test]
fn playbook_calls_both_modules_by_short_name_and_fqcn() {
    assert_modules_built();
    let secret = "Hunter2-never-shown";
    let play = Play::new(&format!(
        r#"
- name: Call the virtup modules
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Short name, nothing to remove
      virtup_template: {{name: nothing-here, state: absent}}
      register: t_short
    - name: FQCN, nothing to remove
      virtup.virtup.virtup_template: {{name: nothing-here, state: absent}}
      register: t_fqcn
    - name: Instance by short name
      virtup_instance: {{name: nothing-here, state: absent}}
      register: i_short
    - name: Instance by FQCN
      virtup.virtup.virtup_instance: {{name: nothing-here, state: absent}}
      register: i_fqcn
    - name: Bad input fails naming the option and hides the password
      virtup.virtup.virtup_instance: {{name: "a b", password: "{secret}"}}
      register: bad
      ignore_errors: true
    - name: Check the results
      ansible.builtin.assert:
        that:
          - t_short is not changed and t_short is not failed
          - t_fqcn is not changed and t_fqcn is not failed
          - i_short is not changed and i_fqcn is not changed
          - bad is failed
          - "'`name`' in bad.msg"
"#
    ));
    let out = run_ok(
        &mut play.ansible_playbook(&["-vvv"]),
        Duration::from_secs(300),
        "ansible-playbook with the virtup modules",
    );
    assert!(
        out.stdout.contains("ok=6"),
        "expected 6 ok tasks:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("ignored=1"), "{}", out.stdout);
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(secret),
            "the password leaked into Ansible's output at -vvv"
        );
    }
}

#[test]
fn check_mode_through_ansible_changes_nothing() {
    assert_modules_built();
    let play = Play::new(
        r#"
- name: Check mode
  hosts: localhost
  gather_facts: false
  tasks:
    - name: A template that does not exist would be built
      virtup_template: {name: wanted, os_version: debian-12}
      register: t
    - name: Check the plan
      ansible.builtin.assert:
        that:
          - t is changed
          - "'build generation 1' in t.msg"
"#,
    );
    run_ok(
        &mut play.ansible_playbook(&["--check", "--diff"]),
        Duration::from_secs(300),
        "ansible-playbook --check",
    );
    assert!(
        !play.dir.path().join("data").exists(),
        "check mode wrote the data dir"
    );
}

#[test]
fn ansible_doc_renders_both_modules() {
    assert_modules_built();
    for (name, option) in [
        ("virtup_instance", "address_source"),
        ("virtup.virtup.virtup_template", "checksum_gpg_key"),
    ] {
        let out = run(
            in_repo(venv_bin("ansible-doc"))
                .arg(name)
                .env("PAGER", "cat")
                .env("ANSIBLE_NOCOLOR", "1"),
            Duration::from_secs(120),
        )
        .assert_ok("ansible-doc");
        assert!(
            out.stdout.contains(option),
            "ansible-doc {name} lacks option {option}:\n{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains("ERROR"),
            "ansible-doc {name} complained:\n{}",
            out.stderr
        );
    }
}
