//! Layer 3 through real Ansible: ansible-playbook calls both modules by short name and by FQCN, ansible-doc renders them.

// End-to-end tests drive the built binaries and the lab's tools with std's `Command` (and keep some
// children running); this black-box crate depends on none of virtup's crates, so not on `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

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

/// The roles never print a user-set password, at any verbosity: the template role's calls, the instance
/// role's jobs and its waits for them (whose loop items once were the jobs' registered results, which
/// carry each instance's options). The instances exist nowhere, so the modules change nothing.
#[test]
fn roles_never_print_user_set_passwords() {
    assert_modules_built();
    let (user_pw, root_pw) = ("Role-user-pw-never-shown", "Role-root-pw-never-shown");
    let play = Play::new(&format!(
        r#"
- name: Converge with user-set passwords
  hosts: localhost
  gather_facts: false
  vars:
    # The instance jobs run through async_wrapper, a Python script: the one running Ansible has what it needs.
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  roles:
    - role: virtup.virtup.virtup_template
      vars:
        virtup_template_templates:
          - {{name: nothing-here, state: absent, password: "{user_pw}", root_password: "{root_pw}"}}
    - role: virtup.virtup.virtup_instance
      vars:
        virtup_instance_poll_interval: 1
        virtup_instance_defaults: {{root_password: "{root_pw}"}}
        virtup_instance_instances:
          - {{name: nothing-here, state: absent, password: "{user_pw}"}}
          - {{name: nothing-there, state: absent}}
"#
    ));
    for verbosity in ["-v", "-vvv"] {
        let out = run_ok(
            &mut play.ansible_playbook(&[verbosity]),
            Duration::from_secs(300),
            "ansible-playbook with the virtup roles",
        );
        assert!(
            out.stdout
                .contains("Wait until every instance job has finished"),
            "the instances ran as jobs:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains("failed=0"), "{}", out.stdout);
        for (text, stream) in [(&out.stdout, "stdout"), (&out.stderr, "stderr")] {
            for pw in [user_pw, root_pw] {
                assert!(
                    !text.contains(pw),
                    "a user-set password leaked into Ansible's {stream} at {verbosity}:\n{text}"
                );
            }
        }
    }
}

/// virt-up's `template-playbook` in the config files is picked up by the role `virtup_template` (the
/// module finds it and returns it), and a named playbook that does not exist fails the role naming the
/// key and its section, before anything is built.
#[test]
fn template_role_takes_the_template_playbook_of_the_config_files() {
    assert_modules_built();
    let play = Play::new(
        r#"
- name: Templates with a template-playbook in templates.d
  hosts: localhost
  gather_facts: false
  roles:
    - role: virtup.virtup.virtup_template
      vars:
        virtup_template_templates: "{{ templates }}"
  post_tasks:
    - name: The module returned the playbook of the config files
      ansible.builtin.assert:
        that:
          - virtup_template_results.cfgpb.playbook is string
          - virtup_template_results.cfgpb.playbook is match('/.*/config/playbooks/custom[.]yml$')
          # The role took it as the template's playbook; check mode built nothing, so no session holds it.
          - virtup_template__playbook == virtup_template_results.cfgpb.playbook
          - virtup_template__hold == ''
"#,
    );
    let config = play.dir.path().join("config");
    std::fs::create_dir_all(config.join("templates.d")).unwrap();
    std::fs::create_dir_all(config.join("playbooks")).unwrap();
    std::fs::write(
        config.join("templates.d/t.cfg"),
        "[cfgpb]\nos-version = debian-12\ntemplate-playbook = custom.yml\n\n\
         [cfgmissing]\nos-version = debian-12\ntemplate-playbook = missing.yml\n",
    )
    .unwrap();
    std::fs::write(
        config.join("playbooks/custom.yml"),
        "- hosts: all\n  tasks: []\n",
    )
    .unwrap();
    let out = run_ok(
        &mut play.ansible_playbook(&["--check", "-e", r#"{"templates": [{"name": "cfgpb"}]}"#]),
        Duration::from_secs(300),
        "ansible-playbook --check with a template-playbook in templates.d",
    );
    assert!(out.stdout.contains("failed=0"), "{}", out.stdout);
    let failed = run(
        &mut play.ansible_playbook(&[
            "--check",
            "-e",
            r#"{"templates": [{"name": "cfgmissing"}]}"#,
        ]),
        Duration::from_secs(300),
    );
    assert!(!failed.status.success(), "{}", failed.stdout);
    assert!(
        failed.stdout.contains(
            "`template-playbook` of template `cfgmissing` (section `[cfgmissing]` of templates.d): playbook `missing.yml` not found"
        ),
        "{}",
        failed.stdout
    );
}

/// The module reads the role's playbook itself now; the digests stay what they were when the role
/// hashed the playbook in Jinja and passed `revision`, so no existing template is rebuilt. For each
/// shape of `revision` (unset, empty, text, null), with and without a playbook, the role's digest
/// (check mode) equals the module's for the revision the role used to compute, given directly.
#[test]
fn the_role_keeps_the_digests_it_computed_in_jinja() {
    assert_modules_built();
    let play = Play::new(
        r#"
- name: Digests of the role and of the old revision text
  hosts: localhost
  gather_facts: false
  vars:
    shapes:
      - {name: d-unset-pb, playbook: pb.yml}
      - {name: d-empty-pb, playbook: pb.yml, revision: ""}
      - {name: d-text-pb, playbook: pb.yml, revision: "r 2"}
      - {name: d-null-pb, playbook: pb.yml, revision: null}
      - {name: d-unset}
      - {name: d-empty, revision: ""}
      - {name: d-text, revision: "r 2"}
      - {name: d-null, revision: null}
  roles:
    - role: virtup.virtup.virtup_template
      vars:
        virtup_template_defaults: {os_version: debian-12}
        virtup_template_templates: "{{ shapes }}"
  post_tasks:
    - name: Call the module with the revision text the role computed before
      virtup.virtup.virtup_template:
        name: "{{ item.name }}"
        os_version: debian-12
        revision: "{{ old if old | length > 0 else omit }}"
      vars:
        old: >-
          {{ (([item.revision] if item.revision is defined else [])
              + (['playbook-sha256:' ~ (lookup('ansible.builtin.file', playbook_dir ~ '/' ~ item.playbook, rstrip=false)
                  | hash('sha256'))] if item.playbook is defined else []))
             | join(' ') }}
      loop: "{{ shapes }}"
      register: old_digests

    - name: The role's digest is the old one for every shape
      ansible.builtin.assert:
        that: virtup_template_results[item.item.name].digest == item.template.digest
        fail_msg: "{{ item.item.name }}: role {{ virtup_template_results[item.item.name].digest }}, old {{ item.template.digest }}"
      loop: "{{ old_digests.results }}"
      loop_control:
        label: "{{ item.item.name }}"

    - name: The playbook changes the digest
      ansible.builtin.assert:
        that: virtup_template_results['d-text-pb'].digest != virtup_template_results['d-text'].digest
"#,
    );
    std::fs::write(
        play.dir.path().join("pb.yml"),
        "- hosts: all\n  tasks: []\n",
    )
    .unwrap();
    let out = run_ok(
        &mut play.ansible_playbook(&["--check"]),
        Duration::from_secs(300),
        "ansible-playbook --check comparing the role's digests with the old ones",
    );
    assert!(out.stdout.contains("failed=0"), "{}", out.stdout);
    assert_eq!(
        out.stdout
            .matches("The role's digest is the old one")
            .count(),
        1,
        "{}",
        out.stdout
    );
}

/// The roles' placement (roles/virtup_instance/tasks/placement.yml) on four hypervisor hosts whose free
/// memory is given, one of them down: an instance that names its hypervisor goes there, one the inventory
/// lists stays where it lives (on the down host too), and the others go, in name order, where the most
/// whole GiB are free after what this run placed, then to the fewest instances. Every host works the same
/// placement out and keeps its share and the templates it needs.
#[test]
fn placement_is_named_then_sticky_then_spread_by_free_memory_then_load() {
    let play = Play::new(
        r#"
- name: Place instances on four hypervisors, one down
  hosts: virtup_hypervisors
  gather_facts: false
  tasks:
    - name: The fourth hypervisor is down
      ansible.builtin.fail:
        msg: down
      when: inventory_hostname == 'hv4'

    - name: Place
      ansible.builtin.include_role:
        name: virtup.virtup.virtup_instance
        tasks_from: placement
      vars:
        virtup_instance_defaults: {template: t, memory: 2048}
        virtup_instance_instances:
          - {name: n5}
          - {name: a1, hypervisor: hv3, memory: 1024}
          - {name: old1}
          - {name: gone1}
          - {name: n1}
          - {name: n2}
          - {name: n3, template: t2}
          - {name: n4}
          - {name: half1}

    - name: Write what each host keeps
      ansible.builtin.copy:
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        content: "{{ {'all': virtup_instance_placed_on, 'here': virtup_instance_placed, 'templates': virtup_instance_placed_templates} | to_json }}"
        mode: "0600"
      delegate_to: localhost

    - name: Place instances that give their own uri, one of them to be removed
      ansible.builtin.include_role:
        name: virtup.virtup.virtup_instance
        tasks_from: placement
      vars:
        virtup_instance_instances:
          - {name: z1, uri: "qemu+ssh://root@h3/system", template: t3}
          - {name: z2, uri: "qemu+ssh://root@h2/system", state: absent}

    - name: Write the second placement
      ansible.builtin.copy:
        dest: "{{ out }}/{{ inventory_hostname }}-uri.json"
        content: "{{ {'all': virtup_instance_placed_on, 'templates': virtup_instance_placed_templates} | to_json }}"
        mode: "0600"
      delegate_to: localhost

# A play on a host outside virtup_hypervisors is the only hypervisor of its instances.
- name: Place on localhost alone
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Place
      ansible.builtin.include_role:
        name: virtup.virtup.virtup_instance
        tasks_from: placement
      vars:
        virtup_instance_instances: [{name: old1}, {name: n9}]

    - name: Write the placement
      ansible.builtin.copy:
        dest: "{{ out }}/localhost.json"
        content: "{{ virtup_instance_placed_on | to_json }}"
        mode: "0600"
"#,
    );
    let dir = play.dir.path();
    std::fs::write(
        dir.join("hosts.yml"),
        r#"
all:
  children:
    virtup_hypervisors:
      vars: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
      hosts:
        hv1: {virtup_hypervisor_uri: "qemu:///system", virtup_host_result: {host: {free_memory_mib: 4096}}}
        hv2: {virtup_hypervisor_uri: "qemu+ssh://root@h2/system", virtup_host_result: {host: {free_memory_mib: 8192}}}
        hv3: {virtup_hypervisor_uri: "qemu+ssh://root@h3/system", virtup_host_result: {host: {free_memory_mib: 2048}}}
        hv4: {virtup_hypervisor_uri: "qemu+ssh://root@h4/system", virtup_host_result: {host: {free_memory_mib: 99999}}}
    others:
      hosts:
        localhost: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
    # As the dynamic inventory lists instances that exist.
    virtup_instances:
      hosts:
        old1: {virtup_uri: "qemu+ssh://root@h3/system"}
        gone1: {virtup_uri: "qemu+ssh://root@h4/system"}
  # As the dynamic inventory records every instance's hypervisor: half1's create stopped before its domain
  # was defined, so it is no host and stays where its metadata says.
  vars:
    virtup_recorded_uris: {old1: "qemu+ssh://root@h3/system", gone1: "qemu+ssh://root@h4/system", half1: "qemu+ssh://root@h3/system"}
"#,
    )
    .unwrap();
    let mut cmd = in_repo(venv_bin("ansible-playbook"));
    cmd.arg("-i")
        .arg(dir.join("hosts.yml"))
        .arg("-e")
        .arg(format!("out={}", dir.display()))
        .arg(dir.join("play.yml"))
        .env("ANSIBLE_NOCOLOR", "1");
    let r = run(&mut cmd, Duration::from_secs(300));
    // hv4 failed on purpose; everything else ran.
    assert!(
        r.stdout.contains("hv4") && r.stdout.contains("failed=1"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let read = |h: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join(format!("{h}.json")))
            .unwrap_or_else(|e| panic!("{h}: {e}\n{}\n{}", r.stdout, r.stderr));
        serde_json::from_str(&text).unwrap()
    };
    // a1 named hv3 (2048 - 1024 = 1 GiB left there); old1 lives on hv3, gone1 on the down hv4, half1 (no
    // domain yet) where its metadata says, hv3. The new
    // ones, 2 GiB each, by name: n1 hv2 (8 → 6), n2 hv2 (6 → 4), n3 a tie at 4 GiB → hv1 with fewer
    // instances (4 → 2), n4 hv2 (4 → 2), n5 a tie at 2 GiB → hv1 (1 instance against hv2's 3).
    let want = serde_json::json!({
        "a1": "hv3", "old1": "hv3", "gone1": "hv4", "half1": "hv3",
        "n1": "hv2", "n2": "hv2", "n3": "hv1", "n4": "hv2", "n5": "hv1"
    });
    for h in ["hv1", "hv2", "hv3"] {
        assert_eq!(read(h)["all"], want, "{h} works out the same placement");
    }
    let here = |h: &str| -> Vec<String> {
        let mut v: Vec<String> = read(h)["here"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(here("hv1"), ["n3", "n5"]);
    assert_eq!(here("hv2"), ["n1", "n2", "n4"]);
    assert_eq!(here("hv3"), ["a1", "half1", "old1"]);
    let mut t1: Vec<String> = serde_json::from_value(read("hv1")["templates"].clone()).unwrap();
    t1.sort();
    assert_eq!(t1, ["t", "t2"], "hv1 builds what its instances clone");
    assert_eq!(read("hv2")["templates"], serde_json::json!(["t"]));
    // An instance's own `uri` pins it to the host of that URI; one to be removed needs no template.
    assert_eq!(
        read("hv3-uri"),
        serde_json::json!({"all": {"z1": "hv3", "z2": "hv2"}, "templates": ["t3"]})
    );
    assert_eq!(read("hv2-uri")["templates"], serde_json::json!([]));
    assert_eq!(
        read("localhost"),
        serde_json::json!({"old1": "localhost", "n9": "localhost"}),
        "a play outside the group converges all of its instances"
    );
}
