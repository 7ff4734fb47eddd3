//! The whole module pipeline: one JSON document out, exit codes, no_log scrubbing, panics.

// Re-runs this test binary in a child process; virtup-ansible does not depend on virtup-guest, so the
// child is started with std's `Command` rather than `virtup_guest::Cmd`.
#![allow(clippy::disallowed_types)]

use std::fmt;
use std::io::Write;
use std::process::Command;

use serde_json::{json, Value};

use crate::*;

const SECRET: &str = "hunter2-Secret";

fn spec() -> ModuleSpec {
    ModuleSpec::new(
        "virtup_instance",
        vec![
            OptionSpec::str("name").required(),
            OptionSpec::str("password")
                .no_log()
                .aliases(&["root_password"]),
            OptionSpec::int("pin").no_log(),
        ],
    )
}

fn args_text(password: &str) -> String {
    json!({"name": "web1", "password": password, "_ansible_check_mode": false}).to_string()
}

/// Exactly one JSON object, newline-terminated, and nothing else.
fn one_document(stdout: &str) -> Value {
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    let docs: Vec<Value> = serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not JSON: {e}: {stdout}"));
    assert_eq!(docs.len(), 1, "{stdout}");
    assert!(docs[0].is_object(), "{stdout}");
    docs.into_iter().next().unwrap()
}

fn assert_failed(outcome: &Outcome, msg: &str) {
    assert_eq!(outcome.exit_code, 1);
    let doc = one_document(&outcome.stdout);
    assert_eq!(doc, json!({"failed": true, "changed": false, "msg": msg}));
}

/// Like anyhow: the alternate form shows the cause chain.
struct Chain;
impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "failed to start `web1`: domain is locked")
        } else {
            write!(f, "failed to start `web1`")
        }
    }
}

#[test]
fn success_document_and_exit_code() {
    let outcome = execute_text(&spec(), &args_text("pw"), |args| {
        assert_eq!(args.str("name"), Some("web1"));
        Ok::<_, Chain>(
            ModuleResult::new(true)
                .with_msg("created")
                .with_warning("from the module")
                .with("_ansible_verbose_always", true),
        )
    });
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(
        one_document(&outcome.stdout),
        json!({"changed": true, "msg": "created", "warnings": ["from the module"]})
    );
}

#[test]
fn parse_warnings_reach_the_result() {
    let text = json!({"name": "x", "password": "pw-one", "root_password": "pw-two"}).to_string();
    let outcome = execute_text(&spec(), &text, |_| {
        Ok::<_, Chain>(ModuleResult::new(false).with_warning("own"))
    });
    let doc = one_document(&outcome.stdout);
    assert_eq!(
        doc["warnings"],
        json!([
            "Both option password and its alias root_password are set.",
            "own"
        ])
    );
}

#[test]
fn failures_are_one_document_with_exit_1() {
    let outcome = execute_text(&spec(), &args_text("pw"), |_| Err::<ModuleResult, _>(Chain));
    assert_failed(&outcome, "failed to start `web1`: domain is locked");

    let outcome = execute_text(
        &spec(),
        &args_text("pw"),
        |_| -> Result<ModuleResult, Chain> { panic!("index out of range") },
    );
    assert_failed(&outcome, "module panicked: index out of range");

    let outcome = execute_text(
        &spec(),
        &args_text("pw"),
        |_| -> Result<ModuleResult, Chain> { std::panic::panic_any(42_u8) },
    );
    assert_failed(&outcome, "module panicked: panic payload is not a string");

    // A module may fail with return values of its own; `failed` decides the exit code.
    let outcome = execute_text(&spec(), &args_text("pw"), |_| {
        Ok::<_, Chain>(ModuleResult::new(false).with("failed", true).with("rc", 3))
    });
    assert_eq!(outcome.exit_code, 1);
    assert_eq!(
        one_document(&outcome.stdout),
        json!({"changed": false, "failed": true, "rc": 3})
    );
}

#[test]
fn a_failure_after_a_change_reports_changed() {
    let failed_changed = |outcome: &Outcome, msg: &str| {
        assert_eq!(outcome.exit_code, 1);
        assert_eq!(
            one_document(&outcome.stdout),
            json!({"failed": true, "changed": true, "msg": msg})
        );
    };
    let outcome = execute_text(&spec(), &args_text("pw"), |_| {
        mark_changed();
        Err::<ModuleResult, _>(Chain)
    });
    failed_changed(&outcome, "failed to start `web1`: domain is locked");

    let outcome = execute_text(
        &spec(),
        &args_text("pw"),
        |_| -> Result<ModuleResult, Chain> {
            mark_changed();
            panic!("half done")
        },
    );
    failed_changed(&outcome, "module panicked: half done");

    // The mark belongs to one run: the next one starts unchanged, and bad args never see it.
    let outcome = execute_text(&spec(), &args_text("pw"), |_| Err::<ModuleResult, _>(Chain));
    assert_failed(&outcome, "failed to start `web1`: domain is locked");
    mark_changed();
    let outcome = execute_text(&spec(), "{", |_| Ok::<_, Chain>(ModuleResult::new(false)));
    assert_eq!(one_document(&outcome.stdout)["changed"], json!(false));
    let outcome = execute_text(&spec(), &args_text("pw"), |_| {
        assert!(!marked_changed());
        Err::<ModuleResult, _>(Chain)
    });
    assert_failed(&outcome, "failed to start `web1`: domain is locked");
}

#[test]
fn invalid_args_never_reach_the_body() {
    let cases = [
        ("{", "failed to parse module arguments as JSON: EOF while parsing an object at line 1 column 1"),
        (r#"{"password": "x"}"#, "missing required arguments: name"),
        (r#"{"name": "x", "pin": "12x"}"#, "argument 'pin' is of type str and we were unable to convert to int: \"'********'\" cannot be converted to an int"),
    ];
    for (text, msg) in cases {
        let mut called = false;
        let outcome = execute_text(&spec(), text, |_| {
            called = true;
            Ok::<_, Chain>(ModuleResult::new(true))
        });
        assert!(!called, "{text}");
        assert_failed(&outcome, msg);
    }
}

#[test]
fn no_log_values_are_scrubbed_from_success_output() {
    let outcome = execute_text(&spec(), &args_text(SECRET), |args| {
        let pw = args.str("password").unwrap();
        Ok::<_, Chain>(
            ModuleResult::new(true)
                .with_msg(format!("set password {pw}"))
                .with_diff(Diff::new(format!("pw={pw}\n"), "pw=\n").with_headers(pw, "after"))
                .with_warning(format!("{pw}!"))
                .with("nested", json!({"list": [pw, 1], pw: "as a key"})),
        )
    });
    assert_eq!(outcome.exit_code, 0);
    assert!(!outcome.stdout.contains(SECRET), "{}", outcome.stdout);
    assert_eq!(
        one_document(&outcome.stdout),
        json!({
            "changed": true,
            "msg": "set password ********",
            "diff": {"before": "pw=********\n", "after": "pw=\n", "before_header": "********", "after_header": "after"},
            "warnings": ["********!"],
            "nested": {"list": ["********", 1], "********": "as a key"},
        })
    );
}

#[test]
fn no_log_values_are_scrubbed_from_errors_and_panics() {
    let via_alias = json!({"name": "x", "root_password": SECRET}).to_string();
    let outcome = execute_text(&spec(), &via_alias, |args| {
        Err::<ModuleResult, _>(format!(
            "virt-customize rejected {}",
            args.str("password").unwrap()
        ))
    });
    assert_failed(&outcome, "virt-customize rejected ********");

    let outcome = execute_text(
        &spec(),
        &args_text(SECRET),
        |args| -> Result<ModuleResult, String> { panic!("oops: {:?}", args.str("password")) },
    );
    assert_failed(&outcome, "module panicked: oops: Some(\"********\")");

    let outcome = execute_text(
        &spec(),
        &json!({"name": "x", "pin": 987654}).to_string(),
        |_| Err::<ModuleResult, _>("pin 987654 refused"),
    );
    assert_failed(&outcome, "pin ******** refused");
}

#[test]
fn module_args_are_not_echoed() {
    let text = json!({"name": "unique-name-7f3a", "_ansible_no_log": true}).to_string();
    let outcome = execute_text(&spec(), &text, |_| Ok::<_, Chain>(ModuleResult::new(false)));
    assert_eq!(one_document(&outcome.stdout), json!({"changed": false}));
    assert!(!outcome.stdout.contains("unique-name-7f3a") && !outcome.stdout.contains("_ansible"));
}

#[test]
fn args_file_handling() {
    let outcome = execute(&spec(), None, |_| Ok::<_, Chain>(ModuleResult::new(true)));
    assert_failed(
        &outcome,
        "no argument file given: virtup_instance expects the path of a JSON args file as its first argument",
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let outcome = execute(&spec(), Some(missing.as_os_str()), |_| {
        Ok::<_, Chain>(ModuleResult::new(true))
    });
    let doc = one_document(&outcome.stdout);
    let msg = doc["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "failed to read args file `{}`: ",
            missing.display()
        )),
        "{msg}"
    );
    assert_eq!(outcome.exit_code, 1);

    let file = dir.path().join("args");
    std::fs::write(&file, args_text("pw")).unwrap();
    let outcome = execute(&spec(), Some(file.as_os_str()), |args| {
        Ok::<_, Chain>(ModuleResult::new(false).with_msg(args.str("name").unwrap().to_string()))
    });
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(
        one_document(&outcome.stdout),
        json!({"changed": false, "msg": "web1"})
    );
}

#[test]
fn panic_hook_line_is_scrubbed() {
    let payload: Box<dyn std::any::Any + Send> = Box::new(format!("bad {SECRET}"));
    let location = std::panic::Location::caller();
    let line = panic_hook_line(payload.as_ref(), Some(location), &[SECRET.to_string()]);
    assert_eq!(
        line,
        format!(
            "module panicked at {}:{}: bad ********",
            location.file(),
            location.line()
        )
    );
    assert_eq!(
        panic_hook_line(&"plain", None, &[]),
        "module panicked: plain"
    );
}

const CHILD_ENV: &str = "VIRTUP_ANSIBLE_TEST_ARGS_FILE";

/// Runs this very test in a child process, which takes the real exit path: panic hook,
/// stdout write, `process::exit`. The child's stdout also carries libtest's banner, so
/// the document is looked for after it.
#[test]
fn real_process_panic_is_scrubbed() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        install_panic_hook();
        finish(&execute(
            &spec(),
            Some(&path),
            |args| -> Result<ModuleResult, String> {
                panic!("boom {}", args.str("password").unwrap())
            },
        ));
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(args_text(SECRET).as_bytes()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::real_process_panic_is_scrubbed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let start = stdout
        .find('{')
        .unwrap_or_else(|| panic!("no document in {stdout:?}"));
    assert_eq!(
        one_document(&stdout[start..]),
        json!({"failed": true, "changed": false, "msg": format!("module panicked: boom ********")})
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("module panicked at ") && stderr.contains("boom ********"),
        "{stderr}"
    );
}

/// `unread` lists the declared options nothing read; a read under an alias counts for the option.
#[test]
fn unread_lists_the_declared_options_nothing_read() {
    let args = parse_args(&args_text(SECRET), &spec()).unwrap();
    assert_eq!(args.unread(), ["name", "password", "pin"]);
    args.str("name");
    args.str("root_password");
    assert_eq!(args.unread(), ["pin"]);
    assert!(!args.declares("naem"), "`declares` is no read");
    args.int("pin");
    assert!(args.unread().is_empty());
}
