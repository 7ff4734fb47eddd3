//! Table-driven tests of args parsing: coercion, rules, messages, `_ansible_*` handling.

use serde_json::{json, Value};

use super::*;
use crate::spec::{ListSplit, ModuleSpec, OptionSpec};

fn spec() -> ModuleSpec {
    ModuleSpec::new(
        "virtup_instance",
        vec![
            OptionSpec::str("name").required().aliases(&["vm"]),
            OptionSpec::int("memory"),
            OptionSpec::int("cpus").default("2"),
            OptionSpec::bool("start").default_bool(true),
            OptionSpec::str("state")
                .choices(&["present", "absent", "running"])
                .default("present"),
            OptionSpec::list("packages"),
            OptionSpec::list("features").choices(&["a", "b"]),
            OptionSpec::str("image"),
            OptionSpec::str("os_version").aliases(&["os"]),
            OptionSpec::str("password").no_log(),
        ],
    )
    .mutually_exclusive(&["image", "os_version"])
    .required_if("state", "running", &["memory"])
}

fn ok(text: &str) -> ModuleArgs {
    parse_args(text, &spec()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn err(text: &str) -> String {
    match parse_args(text, &spec()) {
        Ok(args) => panic!("{text}: expected an error, got {args:?}"),
        Err(e) => e.to_string(),
    }
}

/// `Ok(value)` or `Err(substring of the reason)`.
type Want = Result<Value, &'static str>;

fn check_coercions(opt: OptionSpec, cases: &[(Value, Want)]) {
    for (input, want) in cases {
        let got = coerce(&opt, input);
        match (want, &got) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "{:?} {input}", opt.kind),
            (Err(want), Err(got)) => assert!(got.contains(want), "{:?} {input}: {got}", opt.kind),
            _ => panic!("{:?} {input}: want {want:?}, got {got:?}", opt.kind),
        }
    }
}

#[test]
fn int_coercion() {
    let not_int = "cannot be converted to an int";
    check_coercions(
        OptionSpec::int("n"),
        &[
            (json!(1024), Ok(json!(1024))),
            (json!(-5), Ok(json!(-5))),
            (json!("1024"), Ok(json!(1024))),
            (json!(" 42 "), Ok(json!(42))),
            (json!("+7"), Ok(json!(7))),
            (json!(1024.0), Ok(json!(1024))),
            (json!("1024.0"), Ok(json!(1024))),
            (json!("1e3"), Ok(json!(1000))),
            (json!("abc"), Err("\"'abc'\" cannot be converted to an int")),
            (
                json!(1024.5),
                Err("\"1024.5\" cannot be converted to an int"),
            ),
            (json!("1024.5"), Err(not_int)),
            (json!(""), Err(not_int)),
            (json!("nan"), Err(not_int)),
            (json!("inf"), Err(not_int)),
            (json!(1e300), Err(not_int)),
            (json!(u64::MAX), Err(not_int)),
            (json!(true), Err(not_int)),
            (json!([1]), Err(not_int)),
        ],
    );
}

#[test]
fn float_coercion() {
    check_coercions(
        OptionSpec::float("f"),
        &[
            (json!(1.5), Ok(json!(1.5))),
            (json!(3), Ok(json!(3.0))),
            (json!("2.25"), Ok(json!(2.25))),
            (json!(" -1 "), Ok(json!(-1.0))),
            (
                json!("x"),
                Err("<class 'str'> cannot be converted to a float"),
            ),
            (json!("inf"), Err("cannot be converted to a float")),
            (
                json!(false),
                Err("<class 'bool'> cannot be converted to a float"),
            ),
        ],
    );
}

#[test]
fn bool_coercion() {
    let mut cases: Vec<(Value, Want)> = Vec::new();
    for word in ["yes", "YES", "On", "1", "y", "t", "True", "true", " yes "] {
        cases.push((json!(word), Ok(json!(true))));
    }
    for word in ["no", "No", "off", "0", "n", "f", "FALSE", "false"] {
        cases.push((json!(word), Ok(json!(false))));
    }
    cases.extend([
        (json!(true), Ok(json!(true))),
        (json!(false), Ok(json!(false))),
        (json!(1), Ok(json!(true))),
        (json!(0), Ok(json!(false))),
        (json!(1.0), Ok(json!(true))),
        (json!(0.0), Ok(json!(false))),
        (
            json!(2),
            Err("The value '2' is not a valid boolean. Valid booleans include: 'y', 'yes'"),
        ),
        (
            json!("maybe"),
            Err("The value 'maybe' is not a valid boolean"),
        ),
        (json!(""), Err("The value '' is not a valid boolean")),
        (
            json!([]),
            Err("<class 'list'> cannot be converted to a bool"),
        ),
        (
            json!({}),
            Err("<class 'dict'> cannot be converted to a bool"),
        ),
    ]);
    check_coercions(OptionSpec::bool("b"), &cases);
}

#[test]
fn str_coercion() {
    check_coercions(
        OptionSpec::str("s"),
        &[
            (json!("x"), Ok(json!("x"))),
            (json!(""), Ok(json!(""))),
            (json!(1024), Ok(json!("1024"))),
            (json!(-1), Ok(json!("-1"))),
            (json!(1.5), Ok(json!("1.5"))),
            (json!(true), Ok(json!("True"))),
            (
                json!(["a"]),
                Err("<class 'list'> cannot be converted to a str"),
            ),
            (
                json!({"a": 1}),
                Err("<class 'dict'> cannot be converted to a str"),
            ),
        ],
    );
}

#[test]
fn list_coercion_comma() {
    check_coercions(
        OptionSpec::list("l"),
        &[
            (json!("a,b"), Ok(json!(["a", "b"]))),
            (json!(" a, b ,,c "), Ok(json!(["a", "b", "c"]))),
            (json!("a b"), Ok(json!(["a b"]))),
            (json!(""), Ok(json!([]))),
            (json!([]), Ok(json!([]))),
            (
                json!(["a", 1, 2.5, true, "x,y"]),
                Ok(json!(["a", "1", "2.5", "True", "x,y"])),
            ),
            (json!(5), Ok(json!(["5"]))),
            (
                json!([{"x": 1}]),
                Err("<class 'dict'> cannot be converted to a str"),
            ),
            (
                json!([[1]]),
                Err("<class 'list'> cannot be converted to a str"),
            ),
            (
                json!({}),
                Err("<class 'dict'> cannot be converted to a list"),
            ),
            (
                json!(true),
                Err("<class 'bool'> cannot be converted to a list"),
            ),
        ],
    );
}

#[test]
fn list_coercion_shell() {
    check_coercions(
        OptionSpec::list("l").split(ListSplit::Shell),
        &[
            (
                json!("--size 10G --root-password 'file:/run/x y'"),
                Ok(json!(["--size", "10G", "--root-password", "file:/run/x y"])),
            ),
            (json!("a,b"), Ok(json!(["a,b"]))),
            (
                json!(r#"--run-command "echo \"hi\"" \$HOME"#),
                Ok(json!(["--run-command", "echo \"hi\"", "$HOME"])),
            ),
            (json!("   "), Ok(json!([]))),
            (json!(["x y", "z"]), Ok(json!(["x y", "z"]))),
            (json!(7), Ok(json!(["7"]))),
            (
                json!("'unterminated"),
                Err("failed to split the string like a shell: missing closing quote"),
            ),
        ],
    );
}

#[test]
fn raw_json_path_coercion() {
    check_coercions(
        OptionSpec::raw("r"),
        &[
            (json!({"a": [1]}), Ok(json!({"a": [1]}))),
            (json!("1"), Ok(json!("1"))),
        ],
    );
    check_coercions(
        OptionSpec::json("j"),
        &[
            (json!("{\"a\": 1}"), Ok(json!({"a": 1}))),
            (json!("[1, 2]"), Ok(json!([1, 2]))),
            (json!([1]), Ok(json!([1]))),
            (json!({"b": true}), Ok(json!({"b": true}))),
            (json!("{"), Err("failed to parse the string as JSON")),
        ],
    );
    check_coercions(
        OptionSpec::dicts("d"),
        &[
            (json!([{"size": "1G"}]), Ok(json!([{"size": "1G"}]))),
            (json!([]), Ok(json!([]))),
            (json!("[{\"size\": 1}]"), Ok(json!([{"size": 1}]))),
            (
                json!({"size": "1G"}),
                Err("<class 'dict'> cannot be converted to a list"),
            ),
            (
                json!(["1G"]),
                Err("<class 'str'> cannot be converted to a dict"),
            ),
            (json!("1G"), Err("failed to parse the string as JSON")),
        ],
    );
    check_coercions(
        OptionSpec::path("p"),
        &[
            (json!("/var/lib/virtup"), Ok(json!("/var/lib/virtup"))),
            (json!("rel/dir"), Ok(json!("rel/dir"))),
            (json!(5), Ok(json!("5"))),
            (
                json!([]),
                Err("<class 'list'> cannot be converted to a str"),
            ),
        ],
    );
}

#[test]
fn path_expansion() {
    let env = |name: &str| match name {
        "HOME" => Some("/home/u".to_string()),
        "POOL" => Some("/var/pool".to_string()),
        _ => None,
    };
    let cases = [
        ("~", "/home/u"),
        ("~/x", "/home/u/x"),
        ("~root/x", "~root/x"),
        ("x/~", "x/~"),
        ("$HOME/.ssh", "/home/u/.ssh"),
        ("${HOME}/a", "/home/u/a"),
        ("$HOME-x", "/home/u-x"),
        ("$HOMEx", "$HOMEx"),
        ("$POOL/img/$POOL", "/var/pool/img//var/pool"),
        ("$UNSET/x", "$UNSET/x"),
        ("a$", "a$"),
        ("${HOME", "${HOME"),
        ("${}", "${}"),
        ("/plain", "/plain"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(expand_path(input, &env), want, "{input}");
    }
    let root_home = |name: &str| (name == "HOME").then(|| "/".to_string());
    assert_eq!(expand_path("~", &root_home), "/");
    assert_eq!(expand_path("~/a", &root_home), "/a");
    assert_eq!(expand_path("~/a", &|_| None), "~/a");
}

#[test]
fn exact_error_messages() {
    let supported =
        "Supported parameters include: cpus, features, image, memory, name, os_version, \
                     packages, password, start, state (os, vm).";
    let cases: Vec<(&str, String)> = vec![
        (r#"{"memory": 1}"#, "missing required arguments: name".into()),
        (r#"{"name": null}"#, "missing required arguments: name".into()),
        (
            r#"{"name": "x", "bogus": 1, "another": 2}"#,
            format!("Unsupported parameters for (virtup_instance) module: another, bogus. {supported}"),
        ),
        (
            r#"{"name": "x", "bogus": 1, "_ansible_module_name": "virtup.virtup.virtup_instance"}"#,
            format!("Unsupported parameters for (virtup.virtup.virtup_instance) module: bogus. {supported}"),
        ),
        (
            r#"{"name": "x", "memory": "lots"}"#,
            "argument 'memory' is of type str and we were unable to convert to int: \"'lots'\" cannot be converted to an int".into(),
        ),
        (
            r#"{"name": "x", "start": [1]}"#,
            "argument 'start' is of type list and we were unable to convert to bool: <class 'list'> cannot be converted to a bool".into(),
        ),
        (
            r#"{"name": "x", "state": "foo"}"#,
            "value of state must be one of: present, absent, running, got: foo".into(),
        ),
        // A hostile value cannot break the message into lines or hide behind a bidi override.
        (
            r#"{"name": "x", "state": "present\nPLAY RECAP"}"#,
            "value of state must be one of: present, absent, running, got: present\\nPLAY RECAP".into(),
        ),
        (
            r#"{"name": "x", "state": "ab\u202ecd"}"#,
            "value of state must be one of: present, absent, running, got: ab\\u{202e}cd".into(),
        ),
        (
            r#"{"name": "x", "features": "a,c,d"}"#,
            "value of features must be one or more of: a, b. Got no match for: c, d".into(),
        ),
        (
            r#"{"name": "x", "image": "i", "os": "debian-12"}"#,
            "parameters are mutually exclusive: image|os_version".into(),
        ),
        (
            r#"{"name": "x", "state": "running"}"#,
            "state is running but all of the following are missing: memory".into(),
        ),
        (
            r#"{"name": "x", "_ansible_check_mode": "perhaps"}"#,
            "argument '_ansible_check_mode' is of type str and we were unable to convert to bool: The value 'perhaps' is not a valid boolean. Valid booleans include: 'y', 'yes', 'on', '1', 'true', 't', 1, 1.0, True, 'n', 'no', 'off', '0', 'false', 'f', 0, 0.0, False".into(),
        ),
        ("[1, 2]", "module arguments must be a JSON object, got list".into()),
        (r#""x""#, "module arguments must be a JSON object, got str".into()),
        (r#"{"ANSIBLE_MODULE_ARGS": 3}"#, "module arguments must be a JSON object, got int".into()),
        ("", "failed to parse module arguments as JSON: EOF while parsing a value at line 1 column 0".into()),
        ("{\"name\": ", "failed to parse module arguments as JSON: EOF while parsing a value at line 1 column 9".into()),
        ("{} {}", "failed to parse module arguments as JSON: trailing characters at line 1 column 4".into()),
    ];
    for (text, want) in cases {
        assert_eq!(err(text), want, "{text}");
    }
}

#[test]
fn group_rules() {
    let spec = ModuleSpec::new(
        "m",
        vec![
            OptionSpec::str("image"),
            OptionSpec::str("os_version"),
            OptionSpec::str("state").default("present"),
            OptionSpec::str("a"),
            OptionSpec::str("b"),
            OptionSpec::str("c"),
            OptionSpec::bool("wipe"),
        ],
    )
    .mutually_exclusive(&["image", "os_version"])
    .mutually_exclusive(&["a", "b"])
    .required_one_of(&["image", "os_version"])
    .required_if_any("state", "present", &["a", "c"])
    .required_if("wipe", "yes", &["a", "b"]);
    let cases: Vec<(&str, Result<(), &str>)> = vec![
        (r#"{"image": "i", "a": "1"}"#, Ok(())),
        (r#"{"os_version": "d", "c": "1"}"#, Ok(())),
        (r#"{"image": "i", "state": "absent"}"#, Ok(())),
        (
            r#"{}"#,
            Err("one of the following is required: image, os_version"),
        ),
        (
            r#"{"image": null, "os_version": null}"#,
            Err("one of the following is required: image, os_version"),
        ),
        (
            r#"{"image": "i", "os_version": "d", "a": "1", "b": "2"}"#,
            Err("parameters are mutually exclusive: image|os_version, a|b"),
        ),
        (
            r#"{"image": "i"}"#,
            Err("state is present but any of the following are missing: a, c"),
        ),
        (
            r#"{"image": "i", "c": "1", "wipe": true}"#,
            Err("wipe is yes but all of the following are missing: a, b"),
        ),
        (
            r#"{"image": "i", "a": "1", "wipe": "on"}"#,
            Err("wipe is yes but all of the following are missing: b"),
        ),
        (r#"{"image": "i", "a": "1", "wipe": false}"#, Ok(())),
    ];
    for (text, want) in cases {
        let got = parse_args(text, &spec)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(String::from), "{text}");
    }
}

#[test]
fn defaults_aliases_and_accessors() {
    let args =
        ok(r#"{"vm": "web1", "memory": "2048", "packages": "vim,git", "password": "s3cret"}"#);
    assert_eq!(args.str("name"), Some("web1"));
    assert_eq!(
        args.str("vm"),
        Some("web1"),
        "aliases resolve to the canonical option"
    );
    assert!(args.is_set("name") && args.is_set("vm"));
    assert_eq!(args.int("memory"), Some(2048));
    assert_eq!(args.get("memory"), Some(&json!(2048)));
    assert_eq!(args.int("cpus"), Some(2), "string default coerced to int");
    assert!(!args.is_set("cpus"));
    assert_eq!(args.bool("start"), Some(true));
    assert!(!args.is_set("start"));
    assert_eq!(args.str("state"), Some("present"));
    assert_eq!(
        args.list("packages"),
        Some(vec!["vim".to_string(), "git".to_string()])
    );
    assert_eq!(args.list("features"), None);
    assert_eq!(args.str("image"), None);
    assert!(!args.is_set("image"));
    assert_eq!(args.int("name"), None, "typed accessors do not convert");
    assert!(!args.declares("no_such_option") && args.declares("name"));
    // Reading an option the spec does not declare is a bug in the module, not "not given".
    let misspelt = std::panic::catch_unwind(|| args.get("no_such_option").is_none());
    assert!(misspelt.is_err(), "an undeclared option read as unset");
    let misspelt = std::panic::catch_unwind(|| args.is_set("no_such_option"));
    assert!(misspelt.is_err(), "an undeclared option read as not set");
    assert_eq!(args.module_name(), "virtup_instance");
    assert_eq!(args.no_log_values(), ["s3cret"]);
    assert!(args.warnings().is_empty());
    assert!(!args.check_mode() && !args.diff());
}

#[test]
fn option_and_alias_both_given_warns_and_alias_wins() {
    let args = ok(r#"{"name": "a", "vm": "b"}"#);
    assert_eq!(args.str("name"), Some("b"));
    assert_eq!(
        args.warnings(),
        ["Both option name and its alias vm are set."]
    );
}

#[test]
fn wrapper_and_ansible_keys() {
    let args = ok(r#"{"ANSIBLE_MODULE_ARGS": {"name": "x", "_ansible_check_mode": true}}"#);
    assert_eq!(args.str("name"), Some("x"));
    assert!(args.check_mode());

    // What ansible-core 2.19 writes, plus a key from some future release.
    let args = ok(r#"{
        "name": "x",
        "_ansible_check_mode": false, "_ansible_no_log": false, "_ansible_debug": false,
        "_ansible_diff": true, "_ansible_verbosity": 3, "_ansible_version": "2.19.14",
        "_ansible_module_name": "virtup_instance", "_ansible_syslog_facility": "LOG_USER",
        "_ansible_selinux_special_fs": ["fuse", "nfs"], "_ansible_string_conversion_action": "warn",
        "_ansible_socket": null, "_ansible_shell_executable": "/bin/sh",
        "_ansible_keep_remote_files": false, "_ansible_tmpdir": null,
        "_ansible_remote_tmp": "~/.ansible/tmp", "_ansible_ignore_unknown_opts": false,
        "_ansible_target_log_info": null, "_ansible_tracebacks_for": [],
        "_ansible_something_new": {"nested": 1}
    }"#);
    assert!(args.diff() && !args.check_mode());
    assert!(
        !args.declares("_ansible_diff"),
        "_ansible_* keys are not options"
    );

    // A wrapper beside other keys is not a wrapper: it is an unknown option.
    assert!(err(r#"{"ANSIBLE_MODULE_ARGS": {}, "name": "x"}"#)
        .starts_with("Unsupported parameters for (virtup_instance) module: ANSIBLE_MODULE_ARGS."));
}

#[test]
fn check_mode_and_diff_flags() {
    let cases: [(&str, bool); 10] = [
        ("true", true),
        ("false", false),
        ("\"True\"", true),
        ("\"yes\"", true),
        ("\"no\"", false),
        ("\"0\"", false),
        ("1", true),
        ("0", false),
        ("null", false),
        ("\"on\"", true),
    ];
    for (raw, want) in cases {
        let args = ok(&format!(
            r#"{{"name": "x", "_ansible_check_mode": {raw}, "_ansible_diff": {raw}}}"#
        ));
        assert_eq!((args.check_mode(), args.diff()), (want, want), "{raw}");
    }
    let args = ok(r#"{"name": "x"}"#);
    assert!(!args.check_mode() && !args.diff());
}

#[test]
fn ignore_unknown_opts() {
    for flag in ["true", "\"yes\""] {
        let args = ok(&format!(
            r#"{{"name": "x", "bogus": 1, "_ansible_ignore_unknown_opts": {flag}}}"#
        ));
        assert!(
            !args.declares("bogus"),
            "an ignored unknown option became one"
        );
        assert_eq!(args.str("name"), Some("x"));
    }
    assert!(
        err(r#"{"name": "x", "bogus": 1, "_ansible_ignore_unknown_opts": false}"#)
            .starts_with("Unsupported parameters")
    );
}

#[test]
fn no_log_values_are_collected_before_errors() {
    let spec = ModuleSpec::new(
        "m",
        vec![
            OptionSpec::int("pin").no_log().aliases(&["code"]),
            OptionSpec::list("keys").no_log(),
            OptionSpec::str("token").no_log().default("dflt-token"),
            OptionSpec::str("flag").no_log(),
        ],
    );
    let mut secrets = Vec::new();
    let got = parse_collecting(
        r#"{"code": "abcd", "keys": ["k1", 7], "flag": ""}"#,
        &spec,
        &mut secrets,
    );
    assert!(matches!(got, Err(ArgsError::Type { .. })), "{got:?}");
    assert!(secrets.contains(&"abcd".to_string()), "{secrets:?}");

    let args = parse_args(r#"{"pin": 1234, "keys": "a b,c"}"#, &spec).unwrap();
    assert_eq!(
        args.no_log_values(),
        ["1234", "a b", "a b,c", "c", "dflt-token"]
    );
}

#[test]
fn spec_mistakes_are_internal_errors() {
    let cases: Vec<(ModuleSpec, &str)> = vec![
        (
            ModuleSpec::new("m", vec![OptionSpec::str("x").required().default("d")]),
            "internal error: required and default are mutually exclusive for x",
        ),
        (
            ModuleSpec::new(
                "m",
                vec![OptionSpec::str("x"), OptionSpec::str("y").aliases(&["x"])],
            ),
            "internal error: option name `x` is declared twice",
        ),
        (
            ModuleSpec::new("m", vec![OptionSpec::str("_ansible_x")]),
            "internal error: invalid option name `_ansible_x`",
        ),
        (
            ModuleSpec::new("m", vec![OptionSpec::str("x")]).mutually_exclusive(&["x", "y"]),
            "internal error: a rule names `y`, which is not an option",
        ),
        (
            ModuleSpec::new("m", vec![OptionSpec::str("x")]).required_if("z", "1", &["x"]),
            "internal error: a rule names `z`, which is not an option",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(parse_args("{}", &spec).unwrap_err().to_string(), want);
    }
}

#[test]
fn specs_can_be_const() {
    const OPTIONS: [OptionSpec; 3] = [
        OptionSpec::str("name").required().aliases(&["vm"]),
        OptionSpec::list("virt_builder_args")
            .split(ListSplit::Shell)
            .default_list(&["--quiet"]),
        OptionSpec::str("password").no_log(),
    ];
    let spec = ModuleSpec::new("m", OPTIONS.to_vec());
    assert_eq!(spec.option("vm").map(OptionSpec::name), Some("name"));
    assert!(spec.option("password").is_some_and(OptionSpec::is_no_log));
    let args = parse_args(r#"{"name": "x"}"#, &spec).unwrap();
    assert_eq!(
        args.list("virt_builder_args"),
        Some(vec!["--quiet".to_string()])
    );
}
