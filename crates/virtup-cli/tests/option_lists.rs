//! Holds every hand-kept copy of a module's options to the spec in `specs.rs`: the sidecar docs, the role
//! tasks that call the module, and the role's `meta/argument_specs.yml` and `defaults/main.yml`.
//!
//! The spec is the one list; everything else must follow it, so adding a module option fails here until
//! the docs, the role's pass-through and its argument spec have it too. There is no YAML crate in the
//! dependency tree, so the files are read by a small parser of the block YAML they are written in
//! (module `yaml` below); it fails loudly, naming file and line, on anything it does not know.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use virtup_ansible::{DefaultValue, ListSplit, ModuleSpec, OptionSpec, OptionType};
use virtup_cli::specs::{host_spec, instance_spec, template_spec};
use yaml::Node;

/// How a role hands a module its options, and what it deliberately does differently.
struct RoleLink {
    role: &'static str,
    spec: ModuleSpec,
    /// The role variable whose `options:` in the argument spec are the module's options: a list of
    /// dicts (one module call per item) or a dict.
    options_var: &'static str,
    /// What the calling task writes before an option's name to read the user's value of it.
    reads: &'static str,
    /// Module options the role's task sets itself instead of passing the user's value through.
    role_sets: &'static [RoleSets],
    /// Keys of the options variable that are the role's own, not module options.
    role_keys: &'static [RoleKey],
}

/// An exception to "the task passes the user's value through".
struct RoleSets {
    option: &'static str,
    /// Where the role reads the user's value, if users give it at all (then the argument spec declares
    /// it); a string the role's tasks must contain, so the exception cannot outlive its reason.
    user_value_read_at: Option<&'static str>,
    /// Why: for the reader of this list, and in the failure when the exception goes stale.
    why: &'static str,
}

/// A key of the options variable that no module option matches.
struct RoleKey {
    key: &'static str,
    /// A string the role's tasks must contain: where they use the key.
    used_at: &'static str,
    /// Why, as in `RoleSets`.
    why: &'static str,
}

fn links() -> Vec<RoleLink> {
    vec![
        RoleLink {
            role: "virtup_template",
            spec: template_spec(),
            options_var: "virtup_template_templates",
            reads: "virtup_template__opts.",
            role_sets: &[
                RoleSets {
                    option: "state",
                    user_value_read_at: Some("virtup_template__o.state"),
                    why: "around a template's playbook the role boots it (`running`) and then converges it to \
                          the declared state, which seals it; the declared state is the user's `state` or \
                          `virtup_template_force_state`",
                },
                RoleSets {
                    option: "revision",
                    user_value_read_at: Some("virtup_template__o.revision"),
                    why: "the role passes the user's `revision` as the text it always passed (a null as \
                          `None`, an empty one only beside a playbook), so existing templates keep their digests",
                },
                RoleSets {
                    option: "playbook",
                    user_value_read_at: Some("virtup_template__o.playbook"),
                    why: "made absolute against the directory of the playbook that runs the role, and left out \
                          for `absent`",
                },
                RoleSets {
                    option: "hold",
                    user_value_read_at: None,
                    why: "`new` for the first call, then the token of the session the module started, so that \
                          other runs leave the template alone from build to seal; a user has no value to give",
                },
            ],
            role_keys: &[],
        },
        RoleLink {
            role: "virtup_instance",
            spec: instance_spec(),
            options_var: "virtup_instance_instances",
            reads: "virtup_instance__opts.",
            role_sets: &[RoleSets {
                option: "network",
                user_value_read_at: Some("virtup_instance__opts.network"),
                why: "left out when the instance gives `nics` and its `network` comes from \
                      `virtup_instance_defaults`: the first NIC of `nics` is the network then, and the \
                      module refuses both; one the instance gives itself goes through",
            }],
            role_keys: &[
                RoleKey {
                    key: "groups",
                    used_at: "attribute='groups'",
                    why: "in-memory inventory groups the role's add_host puts the instance in",
                },
                RoleKey {
                    key: "hypervisor",
                    used_at: "opts.hypervisor",
                    why: "the play host whose hypervisor runs the instance (placement.yml)",
                },
            ],
        },
        RoleLink {
            role: "virtup_host",
            spec: host_spec(),
            options_var: "virtup_host_options",
            reads: "virtup_host_options.",
            role_sets: &[RoleSets {
                option: "uri",
                user_value_read_at: Some("virtup_host_options.uri"),
                why: "the user's `uri`, else the host's `virtup_hypervisor_uri` (one inventory host per \
                      hypervisor), else the module's default",
            }],
            role_keys: &[],
        },
    ]
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The `*.yml` files of a role's `tasks/`, as (repository-relative path, text), sorted.
fn role_tasks(role: &str) -> Vec<(String, String)> {
    let dir = repo().join("roles").join(role).join("tasks");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|n| format!("roles/{role}/tasks/{n}"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = read(&f);
            (f, text)
        })
        .collect()
}

fn fail_on(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} place(s) disagree with the module specs in crates/virtup-cli/src/specs.rs:\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A flow or block list of scalars (`choices:`), sorted; a single scalar is a one-item list.
fn scalar_list(node: Option<&Node>) -> Vec<String> {
    let mut v: Vec<String> = match node {
        None | Some(Node::Null) => Vec::new(),
        Some(Node::Seq(items)) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("<not a scalar>").to_string())
            .collect(),
        Some(Node::Scalar(s)) => vec![s.clone()],
        Some(Node::Map(_)) => vec!["<a mapping>".into()],
    };
    v.sort();
    v
}

/// YAML 1.1 truth, as Ansible reads `required: yes` and friends.
fn truthy(node: Option<&Node>) -> bool {
    matches!(
        node.and_then(Node::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("true" | "yes" | "on")
    )
}

/// A default as YAML would print it, for comparing with a doc's `default:`.
fn default_text(d: DefaultValue) -> String {
    match d {
        DefaultValue::Str(s) => s.to_string(),
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::List(items) => format!("[{}]", items.join(", ")),
    }
}

fn doc_default_text(node: Option<&Node>) -> Option<String> {
    match node? {
        Node::Null => None,
        Node::Scalar(s) => Some(match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => "true".into(),
            "false" | "no" | "off" => "false".into(),
            _ => s.clone(),
        }),
        Node::Seq(items) => Some(format!(
            "[{}]",
            items
                .iter()
                .map(|i| i.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Node::Map(_) => Some("<a mapping>".into()),
    }
}

/// Type, elements, choices, default and required of one documented option against the spec. `role`
/// selects the role argument spec's reading of a shell-split list (below); `no_log` is compared when the
/// document carries it meaningfully (role argument specs: it keeps a secret out of validation errors).
fn option_problems(
    opt: &OptionSpec,
    doc: &Node,
    module: &str,
    file: &str,
    role: bool,
) -> Vec<String> {
    let name = opt.name();
    let mut problems = Vec::new();
    let mut say = |what: String| {
        problems.push(format!(
            "{module} option `{name}`: {what}; edit {file} (or specs.rs)"
        ))
    };
    // In a role argument spec, `list` would document a comma-split string, while the module splits a
    // string for these options like a shell would; `raw` (list or string, described) is the honest type.
    let expected_type = match opt.kind() {
        OptionType::List if role && opt.list_split() == ListSplit::Shell => "raw",
        kind => kind.ansible_name(),
    };
    let doc_type = doc.get("type").and_then(Node::as_str).unwrap_or("str");
    if doc_type != expected_type {
        say(format!(
            "the spec's type is `{expected_type}`, {file} says `{doc_type}`"
        ));
    }
    if expected_type == "list" {
        let want = match opt.kind() {
            OptionType::Dicts => "dict",
            _ => "str",
        };
        let elements = doc.get("elements").and_then(Node::as_str);
        if elements != Some(want) {
            say(format!(
                "the module takes a list of `{want}`, {file} says `elements: {}`",
                elements.unwrap_or("<none>")
            ));
        }
    }
    let (want, got) = (sorted(opt.choices_list()), scalar_list(doc.get("choices")));
    if want != got {
        say(format!(
            "the spec's choices are {want:?}, {file} lists {got:?}"
        ));
    }
    // A role argument spec may leave a default out (the module's, or virt-up's config, applies); one it
    // gives must be the module's, or ansible-doc of the role would tell a different story.
    if !role || doc.get("default").is_some() {
        let want = opt.default_value().map(default_text);
        let got = doc_default_text(doc.get("default"));
        if want != got {
            say(format!(
                "the spec's default is {want:?}, {file} says {got:?}"
            ));
        }
    }
    if opt.is_required() != truthy(doc.get("required")) {
        say(format!(
            "the spec says required: {}, {file} says required: {}",
            opt.is_required(),
            truthy(doc.get("required"))
        ));
    }
    if role && opt.is_no_log() != truthy(doc.get("no_log")) {
        say(format!(
            "the spec says no_log: {}, {file} says no_log: {} (a secret must not show in a validation error)",
            opt.is_no_log(),
            truthy(doc.get("no_log"))
        ));
    }
    problems
}

/// The sidecar docs of `spec`'s module (`file`, `text`) against the spec: the same options, each with the
/// same type, elements, choices, default and required.
fn sidecar_problems(spec: &ModuleSpec, file: &str, text: &str) -> Vec<String> {
    let module = spec.name();
    let doc = yaml::parse(file, text);
    let mut problems = Vec::new();
    let Some(options) = doc.get("DOCUMENTATION").and_then(|d| d.get("options")) else {
        return vec![format!("{module}: {file} has no DOCUMENTATION.options")];
    };
    for opt in spec.options() {
        match options.get(opt.name()) {
            None => problems.push(format!(
                "{module} option `{}` is not documented; add it under DOCUMENTATION.options in {file}",
                opt.name()
            )),
            Some(d) => problems.extend(option_problems(opt, d, module, file, false)),
        }
    }
    for (name, _) in options.entries() {
        if spec.option(name).is_none() {
            problems.push(format!(
                "{module} has no option `{name}`, yet {file} documents it; remove it there or add it to specs.rs"
            ));
        }
    }
    // A flow mapping with an unquoted comma in a description silently becomes extra keys (YAML reads
    // `{description: a, b, type: str}` as keys `description` and `b`); ansible-doc then shows `a` only.
    let fields = [
        "description",
        "returned",
        "type",
        "elements",
        "contains",
        "sample",
        "version_added",
    ];
    let mut stack: Vec<(String, &Node)> =
        vec![("RETURN".into(), doc.get("RETURN").unwrap_or(&Node::Null))];
    while let Some((path, node)) = stack.pop() {
        for (key, value) in node.entries() {
            let unknown: Vec<&str> = value
                .entries()
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !fields.contains(k))
                .collect();
            if !unknown.is_empty() {
                problems.push(format!(
                    "{module}: {path}.{key} in {file} has keys {unknown:?} that are no return-value fields \
                     (quote a description that holds a comma)"
                ));
            }
            if let Some(contains) = value.get("contains") {
                stack.push((format!("{path}.{key}.contains"), contains));
            }
        }
    }
    problems
}

/// A task that calls one of the modules.
struct Call<'a> {
    file: String,
    task: String,
    module: String,
    args: &'a Node,
}

const MODULES: [&str; 3] = ["virtup_template", "virtup_instance", "virtup_host"];

/// Every task in a task list, blocks opened.
fn tasks_of(list: &Node) -> Vec<&Node> {
    let mut out = Vec::new();
    for task in list.items() {
        out.push(task);
        for section in ["block", "rescue", "always"] {
            if let Some(inner) = task.get(section) {
                out.extend(tasks_of(inner));
            }
        }
    }
    out
}

fn calls<'a>(file: &str, tasks: &'a Node) -> Vec<Call<'a>> {
    let mut out = Vec::new();
    for task in tasks_of(tasks) {
        for (key, args) in task.entries() {
            let module = key.strip_prefix("virtup.virtup.").unwrap_or(key);
            if MODULES.contains(&module) {
                out.push(Call {
                    file: file.to_string(),
                    task: task
                        .get("name")
                        .and_then(Node::as_str)
                        .unwrap_or("<unnamed>")
                        .to_string(),
                    module: module.to_string(),
                    args,
                });
            }
        }
    }
    out
}

/// What the calling task should say for `opt`: the user's value or, unless it is required, nothing.
fn pass_through(link: &RoleLink, opt: &OptionSpec) -> String {
    if opt.is_required() {
        format!("{{{{ {}{} }}}}", link.reads, opt.name())
    } else {
        format!("{{{{ {}{} | default(omit) }}}}", link.reads, opt.name())
    }
}

/// The calls of a role's tasks (`files`: path and text) against the module spec: each call passes every
/// option through, as `pass_through` spells it, except the options the role sets itself.
fn call_problems(link: &RoleLink, files: &[(String, String)]) -> Vec<String> {
    let module = link.spec.name();
    let parsed: Vec<(String, Node)> = files
        .iter()
        .map(|(f, t)| (f.clone(), yaml::parse(f, t)))
        .collect();
    let all: Vec<Call> = parsed.iter().flat_map(|(f, n)| calls(f, n)).collect();
    let mut problems = Vec::new();
    if !all.iter().any(|c| c.module == module) {
        problems.push(format!(
            "roles/{}/tasks has no task that calls virtup.virtup.{module}",
            link.role
        ));
    }
    for call in &all {
        let file = &call.file;
        let task = &call.task;
        if call.module != module {
            problems.push(format!(
                "{file}: task `{task}` calls {}, which this test does not link to role {}; \
                 add a RoleLink for it in crates/virtup-cli/tests/option_lists.rs",
                call.module, link.role
            ));
            continue;
        }
        for opt in link.spec.options() {
            let name = opt.name();
            let given = call.args.get(name);
            let sets = link.role_sets.iter().find(|s| s.option == name);
            match (given, sets) {
                (None, Some(s)) => problems.push(format!(
                    "{module} option `{name}`: {file}: task `{task}` no longer sets it, yet the exception list \
                     of crates/virtup-cli/tests/option_lists.rs says the role does ({}); pass it or drop the \
                     exception",
                    s.why
                )),
                (None, None) => problems.push(format!(
                    "{module} option `{name}`: {file}: task `{task}` does not pass it; add `{name}: \"{}\"`",
                    pass_through(link, opt)
                )),
                (Some(_), Some(_)) => {}
                (Some(value), None) => {
                    let want = pass_through(link, opt);
                    let got = value.as_str().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
                    if got.as_deref() != Some(want.as_str()) {
                        problems.push(format!(
                            "{module} option `{name}`: {file}: task `{task}` passes {value:?}, not the user's \
                             value `{want}`; pass it through, or list the option in the exception list of \
                             crates/virtup-cli/tests/option_lists.rs with the reason"
                        ));
                    }
                }
            }
        }
        for (key, _) in call.args.entries() {
            if link.spec.option(key).is_none() {
                problems.push(format!(
                    "{module} has no option `{key}`, yet {file}: task `{task}` passes it; remove it there"
                ));
            }
        }
    }
    problems
}

/// Identifiers in every scalar of `node` (map keys are names being defined, not uses).
fn identifiers_in(node: &Node, out: &mut BTreeSet<String>) {
    match node {
        Node::Scalar(s) => {
            for word in s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.is_empty() {
                    out.insert(word.to_string());
                }
            }
        }
        Node::Seq(items) => items.iter().for_each(|i| identifiers_in(i, out)),
        Node::Map(entries) => entries.iter().for_each(|(_, v)| identifiers_in(v, out)),
        Node::Null => {}
    }
}

/// Variables a role's tasks define for later tasks or for its caller (`register`, `set_fact`).
fn defined_by_tasks(tasks: &Node, out: &mut BTreeSet<String>) {
    for task in tasks_of(tasks) {
        if let Some(name) = task.get("register").and_then(Node::as_str) {
            out.insert(name.to_string());
        }
        for key in ["ansible.builtin.set_fact", "set_fact"] {
            if let Some(facts) = task.get(key) {
                out.extend(facts.entries().iter().map(|(k, _)| k.clone()));
            }
        }
    }
}

/// A role's argument spec and defaults against its tasks and the module spec: every public role variable
/// the tasks read is declared and has a default, every declared one is used, and the options variable
/// declares exactly the module options users give, typed as the spec types them.
fn argspec_problems(
    link: &RoleLink,
    argspec: (&str, &str),
    defaults: (&str, &str),
    files: &[(String, String)],
) -> Vec<String> {
    let (module, role) = (link.spec.name(), link.role);
    let (spec_file, defaults_file) = (argspec.0, defaults.0);
    let argspec = yaml::parse(argspec.0, argspec.1);
    let defaults = yaml::parse(defaults.0, defaults.1);
    let mut problems = Vec::new();
    let Some(options) = argspec
        .get("argument_specs")
        .and_then(|a| a.get("main"))
        .and_then(|m| m.get("options"))
    else {
        return vec![format!("{spec_file} has no argument_specs.main.options")];
    };
    let declared: BTreeSet<String> = options.entries().iter().map(|(k, _)| k.clone()).collect();
    let defaulted: BTreeSet<String> = defaults.entries().iter().map(|(k, _)| k.clone()).collect();
    for v in declared.difference(&defaulted) {
        problems.push(format!(
            "role {role}: `{v}` is declared in {spec_file} but has no value in {defaults_file}; add one there"
        ));
    }
    for v in defaulted.difference(&declared) {
        problems.push(format!(
            "role {role}: {defaults_file} sets `{v}`, which {spec_file} does not declare; declare it there"
        ));
    }

    let parsed: Vec<(String, Node)> = files
        .iter()
        .map(|(f, t)| (f.clone(), yaml::parse(f, t)))
        .collect();
    let mut used = BTreeSet::new();
    let mut defined = BTreeSet::new();
    for (_, tasks) in &parsed {
        identifiers_in(tasks, &mut used);
        defined_by_tasks(tasks, &mut defined);
    }
    // Public role variables are `<role>_<word>`; `<role>__<word>` are the role's own internals.
    let prefix = format!("{role}_");
    let public = |v: &&String| v.starts_with(&prefix) && !v[prefix.len()..].starts_with('_');
    for v in used.iter().filter(public) {
        if !declared.contains(v) && !defined.contains(v) {
            problems.push(format!(
                "role {role}: its tasks read `{v}`, which {spec_file} does not declare; declare it there \
                 and give it a value in {defaults_file}"
            ));
        }
    }
    for v in &declared {
        if !used.contains(v) {
            problems.push(format!(
                "role {role}: {spec_file} declares `{v}`, which no file in roles/{role}/tasks uses; remove it"
            ));
        }
    }

    let all_text: String = files.iter().map(|(_, t)| t.as_str()).collect();
    let Some(var) = options.get(link.options_var) else {
        problems.push(format!(
            "role {role}: {spec_file} does not declare `{}`, the {module} options",
            link.options_var
        ));
        return problems;
    };
    let Some(subopts) = var.get("options") else {
        problems.push(format!(
            "role {role}: `{}` in {spec_file} has no `options:`; declare the {module} options under it so \
             the role validates them before anything runs",
            link.options_var
        ));
        return problems;
    };
    for opt in link.spec.options() {
        let name = opt.name();
        let sets = link.role_sets.iter().find(|s| s.option == name);
        let exposed = sets.is_none_or(|s| s.user_value_read_at.is_some());
        match (subopts.get(name), exposed) {
            (None, true) => problems.push(format!(
                "{module} option `{name}`: role {role} does not declare it under `{}` in {spec_file}; add it \
                 (type, choices and no_log as in specs.rs)",
                link.options_var
            )),
            (Some(_), false) => problems.push(format!(
                "{module} option `{name}`: the role sets it itself, yet `{}` in {spec_file} declares it for \
                 users; remove it there",
                link.options_var
            )),
            (Some(d), true) => problems.extend(option_problems(opt, d, module, spec_file, true)),
            (None, false) => {}
        }
        if let Some((at, why)) = sets.and_then(|s| Some((s.user_value_read_at?, s.why))) {
            if !all_text.contains(at) {
                problems.push(format!(
                    "{module} option `{name}`: the exception list of crates/virtup-cli/tests/option_lists.rs \
                     says roles/{role}/tasks reads the user's value at `{at}` ({why}), but no task does"
                ));
            }
        }
    }
    for (key, _) in subopts.entries() {
        if link.spec.option(key).is_some() {
            continue;
        }
        match link.role_keys.iter().find(|k| k.key == key) {
            None => problems.push(format!(
                "role {role}: `{}` in {spec_file} declares `{key}`, which is no {module} option nor one the \
                 role lists as its own in crates/virtup-cli/tests/option_lists.rs",
                link.options_var
            )),
            Some(k) if !all_text.contains(k.used_at) => problems.push(format!(
                "role {role}: `{key}` of `{}` in {spec_file} is the role's own ({}), but roles/{role}/tasks \
                 no longer uses it at `{}`",
                link.options_var, k.why, k.used_at
            )),
            Some(_) => {}
        }
    }
    problems
}

fn link_files(link: &RoleLink) -> (String, String, String, String) {
    let spec = format!("roles/{}/meta/argument_specs.yml", link.role);
    let defaults = format!("roles/{}/defaults/main.yml", link.role);
    let (st, dt) = (read(&spec), read(&defaults));
    (spec, st, defaults, dt)
}

#[test]
fn sidecar_docs_document_the_spec_options() {
    let mut problems = Vec::new();
    for spec in [template_spec(), instance_spec(), host_spec()] {
        let file = format!("plugins/modules/{}.yml", spec.name());
        problems.extend(sidecar_problems(&spec, &file, &read(&file)));
    }
    fail_on(problems);
}

#[test]
fn role_tasks_pass_every_module_option_through() {
    let mut problems = Vec::new();
    for link in links() {
        problems.extend(call_problems(&link, &role_tasks(link.role)));
    }
    fail_on(problems);
}

#[test]
fn role_argument_specs_declare_what_the_roles_use_typed_as_the_specs() {
    let mut problems = Vec::new();
    for link in links() {
        let (spec, st, defaults, dt) = link_files(&link);
        problems.extend(argspec_problems(
            &link,
            (&spec, &st),
            (&defaults, &dt),
            &role_tasks(link.role),
        ));
    }
    fail_on(problems);
}

/// Only the linked roles call the modules, so no role can pass options unchecked.
#[test]
fn every_role_that_calls_a_module_is_linked() {
    let linked: Vec<&str> = links().iter().map(|l| l.role).collect();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(repo().join("roles")).unwrap() {
        let role = entry.unwrap().file_name().into_string().unwrap();
        if linked.contains(&role.as_str())
            || !repo().join("roles").join(&role).join("tasks").is_dir()
        {
            continue;
        }
        for (file, text) in role_tasks(&role) {
            let tasks = yaml::parse(&file, &text);
            for call in calls(&file, &tasks) {
                problems.push(format!(
                    "{}: task `{}` calls {} from role {role}, which crates/virtup-cli/tests/option_lists.rs \
                     does not link; add a RoleLink for it",
                    call.file, call.task, call.module
                ));
            }
        }
    }
    fail_on(problems);
}

// The checks must catch what they are for: each of these breaks one copy of a real file and expects a
// message naming the module, the option and the file to edit.

fn instance_link() -> RoleLink {
    links()
        .into_iter()
        .find(|l| l.role == "virtup_instance")
        .unwrap()
}

fn expect_problem(problems: &[String], needles: &[&str]) {
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "no problem mentions all of {needles:?}; got {problems:#?}"
    );
}

#[test]
fn a_forgotten_pass_through_is_caught() {
    let link = instance_link();
    let mut files = role_tasks(link.role);
    let (file, text) = files
        .iter_mut()
        .find(|(f, _)| f.ends_with("/main.yml"))
        .unwrap();
    *text = text.replace(
        "    vcpus: \"{{ virtup_instance__opts.vcpus | default(omit) }}\"\n",
        "",
    );
    let file = file.clone();
    expect_problem(
        &call_problems(&link, &files),
        &["virtup_instance", "`vcpus`", &file, "does not pass it"],
    );
}

#[test]
fn a_pass_through_of_another_value_is_caught() {
    let link = instance_link();
    let mut files = role_tasks(link.role);
    let (_, text) = files
        .iter_mut()
        .find(|(f, _)| f.ends_with("/main.yml"))
        .unwrap();
    *text = text.replace(
        "virtup_instance__opts.memory | default(omit)",
        "virtup_instance__opts.memory | default(1024)",
    );
    expect_problem(
        &call_problems(&link, &files),
        &["virtup_instance", "`memory`", "not the user's value"],
    );
}

#[test]
fn a_forgotten_or_mistyped_argument_spec_entry_is_caught() {
    let link = instance_link();
    let (spec, st, defaults, dt) = link_files(&link);
    let files = role_tasks(link.role);
    let forgotten = st.replace(
        "          autostart:\n            description: Start the domain when the hypervisor starts.\n            type: bool\n",
        "",
    );
    assert_ne!(
        forgotten, st,
        "the argument spec changed; update this test's copy of it"
    );
    expect_problem(
        &argspec_problems(&link, (&spec, &forgotten), (&defaults, &dt), &files),
        &[
            "virtup_instance",
            "`autostart`",
            &spec,
            "does not declare it",
        ],
    );
    let mistyped = st.replace(
        "          vcpus:\n            description: Number of virtual CPUs.\n            type: int\n",
        "          vcpus:\n            description: Number of virtual CPUs.\n            type: str\n",
    );
    assert_ne!(
        mistyped, st,
        "the argument spec changed; update this test's copy of it"
    );
    expect_problem(
        &argspec_problems(&link, (&spec, &mistyped), (&defaults, &dt), &files),
        &["virtup_instance", "`vcpus`", &spec, "`int`", "`str`"],
    );
    let undefaulted = dt.replace("virtup_instance_poll_interval: 2\n", "");
    assert_ne!(
        undefaulted, dt,
        "the defaults changed; update this test's copy of them"
    );
    expect_problem(
        &argspec_problems(&link, (&spec, &st), (&defaults, &undefaulted), &files),
        &["virtup_instance_poll_interval", &defaults],
    );
}

#[test]
fn an_undocumented_option_is_caught() {
    let spec = host_spec();
    let file = "plugins/modules/virtup_host.yml";
    let text = read(file);
    let start = text.find("\n    probe_kvm:\n").unwrap();
    let end = start + 1 + text[start + 1..].find("\n  notes:").unwrap();
    let cut = format!("{}{}", &text[..start], &text[end..]);
    expect_problem(
        &sidecar_problems(&spec, file, &cut),
        &["virtup_host", "`probe_kvm`", file, "not documented"],
    );
}

/// A parser of the block YAML the roles and sidecar docs are written in: block mappings and sequences,
/// plain, quoted and block scalars, flow collections, comments. Scalars stay strings (no typing), and
/// anchors, aliases, tags and quoted keys make it panic, naming file and line, rather than misread.
mod yaml {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Node {
        Null,
        Scalar(String),
        Seq(Vec<Node>),
        Map(Vec<(String, Node)>),
    }

    impl Node {
        pub fn get(&self, key: &str) -> Option<&Node> {
            self.entries()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Node::Scalar(s) => Some(s),
                _ => None,
            }
        }
        /// A mapping's entries; nothing for any other node.
        pub fn entries(&self) -> &[(String, Node)] {
            match self {
                Node::Map(m) => m,
                _ => &[],
            }
        }
        /// A sequence's items; nothing for any other node.
        pub fn items(&self) -> &[Node] {
            match self {
                Node::Seq(s) => s,
                _ => &[],
            }
        }
    }

    pub fn parse(file: &str, text: &str) -> Node {
        let mut p = Parser {
            file,
            lines: text.lines().map(str::to_string).collect(),
            pos: 0,
        };
        let node = p.node(0, -1);
        if let Some((i, _)) = p.peek() {
            p.fail(i, "unexpected content (less indented than its block?)");
        }
        node
    }

    struct Parser<'a> {
        file: &'a str,
        lines: Vec<String>,
        pos: usize,
    }

    fn is_seq_item(content: &str) -> bool {
        content == "-" || content.starts_with("- ")
    }

    /// `key: rest` of a block mapping entry, if `content` is one.
    fn split_key(content: &str) -> Option<(String, String)> {
        if content.starts_with([
            '"', '\'', '[', '{', '#', '&', '*', '!', '|', '>', '%', '@', '`',
        ]) || is_seq_item(content)
        {
            return None;
        }
        let bytes = content.as_bytes();
        for i in 0..bytes.len() {
            if bytes[i] == b'#' && i > 0 && bytes[i - 1] == b' ' {
                return None; // a comment before any `: `
            }
            if bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
                let key = content[..i].trim_end();
                return (!key.is_empty()).then(|| (key.to_string(), content[i + 1..].to_string()));
            }
        }
        None
    }

    /// A plain scalar's text without a trailing ` # comment`.
    fn strip_comment(text: &str) -> &str {
        match text.find(" #") {
            Some(i) => text[..i].trim_end(),
            None => text.trim_end(),
        }
    }

    impl Parser<'_> {
        fn fail(&self, line: usize, what: &str) -> ! {
            panic!(
                "{}:{}: {what}: {:?} (option_lists.rs reads a subset of YAML)",
                self.file,
                line + 1,
                self.lines.get(line).map(String::as_str).unwrap_or("<end>")
            )
        }

        /// The next line that carries structure, as (index, indentation); skips blank and comment lines.
        fn peek(&mut self) -> Option<(usize, usize)> {
            while self.pos < self.lines.len() {
                let line = &self.lines[self.pos];
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') || (line.starts_with("---") && t == "---") {
                    self.pos += 1;
                    continue;
                }
                let indent = line.len() - line.trim_start_matches(' ').len();
                if line[indent..].starts_with('\t') {
                    self.fail(self.pos, "a tab in the indentation");
                }
                return Some((self.pos, indent));
            }
            None
        }

        /// The node that starts on the next line, if that is indented at least `min`; `parent` is the
        /// indentation of the owning key or dash (continuation lines of a scalar are deeper than it).
        fn node(&mut self, min: usize, parent: isize) -> Node {
            let Some((i, ind)) = self.peek() else {
                return Node::Null;
            };
            if ind < min {
                return Node::Null;
            }
            let content = self.lines[i][ind..].to_string();
            if is_seq_item(&content) {
                self.seq(ind)
            } else if split_key(&content).is_some() {
                self.map(ind)
            } else {
                self.pos = i + 1;
                self.inline(&content, i, parent)
            }
        }

        fn map(&mut self, ind: usize) -> Node {
            let mut entries: Vec<(String, Node)> = Vec::new();
            while let Some((i, at)) = self.peek() {
                if at < ind {
                    break;
                }
                if at > ind {
                    self.fail(i, "unexpected indentation");
                }
                let content = self.lines[i][ind..].to_string();
                let Some((key, rest)) = split_key(&content) else {
                    self.fail(i, "expected `key:` in a mapping");
                };
                if entries.iter().any(|(k, _)| *k == key) {
                    self.fail(i, "duplicate key");
                }
                self.pos = i + 1;
                let rest = rest.trim();
                let value = if rest.is_empty() || rest.starts_with('#') {
                    // A nested block: deeper, or a sequence at the key's own indentation.
                    match self.peek() {
                        Some((j, at)) if at == ind && is_seq_item(&self.lines[j][at..]) => {
                            self.seq(ind)
                        }
                        _ => self.node(ind + 1, ind as isize),
                    }
                } else {
                    self.inline(rest, i, ind as isize)
                };
                entries.push((key, value));
            }
            Node::Map(entries)
        }

        fn seq(&mut self, ind: usize) -> Node {
            let mut items = Vec::new();
            while let Some((i, at)) = self.peek() {
                if at < ind || !is_seq_item(&self.lines[i][at..]) {
                    break;
                }
                if at > ind {
                    self.fail(i, "unexpected indentation");
                }
                if self.lines[i][at..] == *"-" {
                    self.pos = i + 1;
                    items.push(self.node(ind + 1, ind as isize));
                    continue;
                }
                // With its dash blanked, the item's content sits at its own column, as YAML reads it.
                self.lines[i].replace_range(ind..ind + 1, " ");
                let (_, content_at) = self.peek().unwrap();
                items.push(self.node(content_at, ind as isize));
            }
            Node::Seq(items)
        }

        /// A value written after `key:` or `- ` on line `line` (already consumed), plus its continuation.
        fn inline(&mut self, text: &str, line: usize, parent: isize) -> Node {
            match text.as_bytes()[0] {
                b'|' | b'>' => {
                    let header = strip_comment(text);
                    let ok = header.len() <= 3
                        && header[1..]
                            .chars()
                            .all(|c| matches!(c, '-' | '+' | '1'..='9'));
                    if !ok {
                        self.fail(line, "a block scalar header");
                    }
                    Node::Scalar(self.block_scalar(parent, text.starts_with('>')))
                }
                b'"' | b'\'' => {
                    let mut s = text.to_string();
                    loop {
                        if let Some((value, after)) = unquote(&s) {
                            if !(after.trim().is_empty() || after.starts_with('#')) {
                                self.fail(line, "text after a quoted scalar (a quoted key?)");
                            }
                            return Node::Scalar(value);
                        }
                        if self.pos >= self.lines.len() {
                            self.fail(line, "an unterminated quoted scalar");
                        }
                        s.push(' ');
                        s.push_str(self.lines[self.pos].trim());
                        self.pos += 1;
                    }
                }
                b'[' | b'{' => {
                    let mut s = text.to_string();
                    while !balanced(&s) {
                        if self.pos >= self.lines.len() {
                            self.fail(line, "an unterminated flow collection");
                        }
                        s.push(' ');
                        s.push_str(self.lines[self.pos].trim());
                        self.pos += 1;
                    }
                    let mut f = Flow {
                        chars: s.chars().collect(),
                        at: 0,
                    };
                    let node = f.node().unwrap_or_else(|e| self.fail(line, &e));
                    f.blank();
                    if f.at < f.chars.len() && f.chars[f.at] != '#' {
                        self.fail(line, "text after a flow collection");
                    }
                    node
                }
                b'&' | b'*' | b'!' => {
                    self.fail(line, "anchors, aliases and tags are not supported")
                }
                _ => {
                    let mut s = strip_comment(text).to_string();
                    while let Some((i, at)) = self.peek() {
                        if at as isize <= parent {
                            break;
                        }
                        s.push(' ');
                        s.push_str(strip_comment(self.lines[i].trim()));
                        self.pos = i + 1;
                    }
                    // YAML reads `: ` in a plain scalar as a mapping (`ansible-doc` fails on it), on
                    // a continuation line too, where this reader would otherwise take it as text.
                    if s.contains(": ") || s.ends_with(':') {
                        self.fail(line, "`: ` in a plain scalar (YAML reads a mapping there; reword or quote it)");
                    }
                    Node::Scalar(s)
                }
            }
        }

        /// The lines of a `|` or `>` scalar: blank or deeper than `parent`.
        fn block_scalar(&mut self, parent: isize, folded: bool) -> String {
            let mut body: Vec<String> = Vec::new();
            let mut indent = None;
            while self.pos < self.lines.len() {
                let line = &self.lines[self.pos];
                let at = line.len() - line.trim_start_matches(' ').len();
                if line.trim().is_empty() {
                    body.push(String::new());
                } else if at as isize > parent {
                    let cut = *indent.get_or_insert(at);
                    body.push(line[cut.min(at)..].to_string());
                } else {
                    break;
                }
                self.pos += 1;
            }
            while body.last().is_some_and(String::is_empty) {
                body.pop();
            }
            body.join(if folded { " " } else { "\n" })
        }
    }

    /// Whether every `[`/`{` outside quotes in `s` is closed. A quote opens a quoted scalar only where a
    /// scalar starts (`generation's` in a plain scalar is no quote).
    fn balanced(s: &str) -> bool {
        // `prev`: the last character that is no blank; a scalar starts after one of `[{,:` or at the start.
        let (mut depth, mut quote, mut prev) = (0i32, None, ',');
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if matches!(prev, '[' | '{' | ',' | ':') => quote = Some(c),
                (None, '[' | '{') => depth += 1,
                (None, ']' | '}') => depth -= 1,
                _ => {}
            }
            if c != ' ' {
                prev = c;
            }
        }
        depth <= 0 && quote.is_none()
    }

    /// A quoted scalar at the start of `s`: its value and the text after it, leading blanks skipped.
    fn unquote(s: &str) -> Option<(String, &str)> {
        let q = s.chars().next()?;
        let mut value = String::new();
        let mut it = s.char_indices().skip(1).peekable();
        while let Some((i, c)) = it.next() {
            match (q, c) {
                ('"', '\\') => {
                    let (_, e) = it.next()?;
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
                ('\'', '\'') if it.peek().is_some_and(|(_, n)| *n == '\'') => {
                    it.next();
                    value.push('\'');
                }
                (q, c) if c == q => return Some((value, s[i + 1..].trim_start())),
                (_, c) => value.push(c),
            }
        }
        None
    }

    /// A flow collection, read as YAML does: a plain scalar ends at `,`, `]`, `}` or `: `, so an
    /// unquoted comma splits a description into extra keys, which the sidecar check then sees.
    struct Flow {
        chars: Vec<char>,
        at: usize,
    }

    impl Flow {
        fn blank(&mut self) {
            while self.at < self.chars.len() && self.chars[self.at] == ' ' {
                self.at += 1;
            }
        }
        fn peek(&self) -> Option<char> {
            self.chars.get(self.at).copied()
        }
        fn node(&mut self) -> Result<Node, String> {
            self.blank();
            match self.peek() {
                Some('[') => {
                    self.at += 1;
                    let mut items = Vec::new();
                    loop {
                        self.blank();
                        if self.peek() == Some(']') {
                            self.at += 1;
                            return Ok(Node::Seq(items));
                        }
                        items.push(self.node()?);
                        self.blank();
                        match self.peek() {
                            Some(',') => self.at += 1,
                            Some(']') => {}
                            _ => return Err("expected `,` or `]` in a flow sequence".into()),
                        }
                    }
                }
                Some('{') => {
                    self.at += 1;
                    let mut entries: Vec<(String, Node)> = Vec::new();
                    loop {
                        self.blank();
                        if self.peek() == Some('}') {
                            self.at += 1;
                            return Ok(Node::Map(entries));
                        }
                        let key = match self.node()? {
                            Node::Scalar(k) => k,
                            _ => return Err("a flow mapping key that is no scalar".into()),
                        };
                        self.blank();
                        let value = if self.peek() == Some(':') {
                            self.at += 1;
                            self.node()?
                        } else {
                            Node::Null // `{a, b: c}`: YAML gives `a` a null value
                        };
                        if entries.iter().any(|(k, _)| *k == key) {
                            return Err(format!("duplicate key {key:?}"));
                        }
                        entries.push((key, value));
                        self.blank();
                        match self.peek() {
                            Some(',') => self.at += 1,
                            Some('}') => {}
                            _ => return Err("expected `,` or `}` in a flow mapping".into()),
                        }
                    }
                }
                Some('"' | '\'') => {
                    let rest: String = self.chars[self.at..].iter().collect();
                    let (value, after) = unquote(&rest).ok_or("an unterminated quoted scalar")?;
                    // Step over the quoted text and the blanks `unquote` skipped after it.
                    let consumed = rest.len() - after.len();
                    self.at += rest[..consumed].chars().count();
                    Ok(Node::Scalar(value))
                }
                Some('&' | '*' | '!') => Err("anchors, aliases and tags are not supported".into()),
                Some(',' | ']' | '}') | None => Ok(Node::Null),
                Some(_) => {
                    let start = self.at;
                    while let Some(c) = self.peek() {
                        let next = self.chars.get(self.at + 1).copied();
                        if matches!(c, ',' | ']' | '}')
                            || (c == ':' && matches!(next, None | Some(' ' | ',' | ']' | '}')))
                        {
                            break;
                        }
                        self.at += 1;
                    }
                    let text: String = self.chars[start..self.at].iter().collect();
                    Ok(Node::Scalar(text.trim().to_string()))
                }
            }
        }
    }

    #[test]
    fn reads_the_shapes_the_checks_rely_on() {
        let text = r#"---
# comment
top:
  plain: a value  # a comment
  folded: >-
    one
    two
  list:
  - a
  - "b # not a comment"
  flow: [x, 'it''s', "q"]
  empty: {}
  map_items:
    - name: first
      opts:
        k: v
    - second
  multi: a plain
    continued
tasks:
  - name: >-
      Converge {{ x }}
    virtup.virtup.virtup_host:
      uri: "{{ virtup_host_options.uri | default(omit) }}"
  - block:
      - name: inner
ret: {description: a, b, type: str}
"#;
        let n = parse("t.yml", text);
        let top = n.get("top").unwrap();
        assert_eq!(top.get("plain").unwrap().as_str(), Some("a value"));
        assert_eq!(top.get("folded").unwrap().as_str(), Some("one two"));
        assert_eq!(
            top.get("list").unwrap().items(),
            &[
                Node::Scalar("a".into()),
                Node::Scalar("b # not a comment".into())
            ]
        );
        assert_eq!(
            top.get("flow").unwrap().items(),
            &[
                Node::Scalar("x".into()),
                Node::Scalar("it's".into()),
                Node::Scalar("q".into())
            ]
        );
        assert_eq!(top.get("empty"), Some(&Node::Map(vec![])));
        let items = top.get("map_items").unwrap().items();
        assert_eq!(
            items[0].get("opts").unwrap().get("k").unwrap().as_str(),
            Some("v")
        );
        assert_eq!(items[1].as_str(), Some("second"));
        assert_eq!(
            top.get("multi").unwrap().as_str(),
            Some("a plain continued")
        );
        let tasks = n.get("tasks").unwrap().items();
        assert_eq!(
            tasks[0].get("name").unwrap().as_str(),
            Some("Converge {{ x }}")
        );
        assert_eq!(
            tasks[0]
                .get("virtup.virtup.virtup_host")
                .unwrap()
                .get("uri")
                .unwrap()
                .as_str(),
            Some("{{ virtup_host_options.uri | default(omit) }}")
        );
        assert_eq!(
            tasks[1].get("block").unwrap().items()[0]
                .get("name")
                .unwrap()
                .as_str(),
            Some("inner")
        );
        let ret = n.get("ret").unwrap();
        assert_eq!(ret.get("description").unwrap().as_str(), Some("a"));
        assert_eq!(ret.get("b"), Some(&Node::Null));
    }

    #[test]
    #[should_panic(expected = "t.yml:2: anchors")]
    fn refuses_what_it_does_not_read() {
        parse("t.yml", "a: 1\nb: &x 2\n");
    }
}
