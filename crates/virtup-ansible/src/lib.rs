//! The Ansible protocols: a binary module (args file in, one JSON document out) and a dynamic inventory.
//!
//! A binary module is run as `<module> <args file>`. The args file is one flat JSON object
//! of task options plus `_ansible_*` keys (`{"ANSIBLE_MODULE_ARGS": {...}}` is accepted
//! too, for hand testing). [`run_module`] does the whole dance:
//!
//! ```no_run
//! use virtup_ansible::{run_module, ListSplit, ModuleResult, ModuleSpec, OptionSpec};
//!
//! fn main() {
//!     let spec = ModuleSpec::new("virtup_instance", vec![
//!         OptionSpec::str("name").required(),
//!         OptionSpec::int("memory").default_int(2048),
//!         OptionSpec::str("state").choices(&["present", "absent"]).default("present"),
//!         OptionSpec::list("virt_builder_args").split(ListSplit::Shell),
//!         OptionSpec::str("password").no_log(),
//!     ])
//!     .mutually_exclusive(&["image", "os_version"]);
//!     run_module(&spec, |args| {
//!         let name = args.str("name").unwrap_or_default();
//!         Ok::<_, std::io::Error>(ModuleResult::new(false).with_msg(format!("{name} is fine")))
//!     })
//! }
//! ```
//!
//! Invariants, whatever happens (bad JSON, a type error, an `Err`, a panic):
//! - stdout carries exactly one JSON object; failures are `{"failed": true, "changed": …, "msg": …}`
//!   with exit status 1, success exits 0; a failure says `changed: true` only when the body had
//!   called [`mark_changed`] before it failed (bad input never gets that far);
//! - the values of `no_log` options never appear in stdout or in the panic message on stderr:
//!   every occurrence inside every string is replaced with `********`;
//! - module args are never echoed back and no `_ansible_*` key is emitted.
//!
//! The body must not print to stdout itself. [`execute_text`] and [`render_outcome`] are
//! the same pipeline without the process exit, for tests. The inventory side lives in
//! [`inventory`].

mod args;
pub mod inventory;
mod result;
mod spec;

use std::cell::Cell;
use std::ffi::OsStr;
use std::fmt::Display;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Mutex, TryLockError};

use serde_json::Value;

pub use args::{expand_path, parse_args, ArgsError, ModuleArgs};
pub use result::{failure_json, scrub, scrub_str, Diff, ModuleResult, MASK};
pub use spec::{DefaultValue, ListSplit, ModuleSpec, OptionSpec, OptionType};

#[cfg(test)]
mod tests;

/// What a module run prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One JSON document and a newline.
    pub stdout: String,
    pub exit_code: i32,
}

/// Runs a module binary: reads the args file named by `argv[1]`, validates it against
/// `spec`, calls `body`, prints one scrubbed JSON document and exits. Errors are rendered
/// with `{:#}` so an anyhow chain shows every cause.
pub fn run_module<E: Display>(
    spec: &ModuleSpec,
    body: impl FnOnce(&ModuleArgs) -> Result<ModuleResult, E>,
) -> ! {
    install_panic_hook();
    let args_file = std::env::args_os().nth(1);
    // The body is guarded inside `execute_text`; this also covers the error's `Display`.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        execute(spec, args_file.as_deref(), body)
    }))
    .unwrap_or_else(|_| {
        render_outcome(
            Err("module panicked while reporting its result".into()),
            &[],
            &[],
        )
    });
    finish(&outcome)
}

/// Prints the outcome and exits with its code.
pub fn finish(outcome: &Outcome) -> ! {
    let mut stdout = std::io::stdout().lock();
    // Nowhere left to report a failed write to; the exit code still says what happened.
    let _ = stdout
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    std::process::exit(outcome.exit_code)
}

/// The pipeline of [`run_module`] from the args file path on, without exiting.
pub fn execute<E: Display>(
    spec: &ModuleSpec,
    args_file: Option<&OsStr>,
    body: impl FnOnce(&ModuleArgs) -> Result<ModuleResult, E>,
) -> Outcome {
    CHANGED.with(|c| c.set(false));
    let Some(path) = args_file.map(Path::new) else {
        let msg = format!(
            "no argument file given: {} expects the path of a JSON args file as its first argument",
            spec.name()
        );
        return render_outcome(Err(msg), &[], &[]);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => execute_text(spec, &text, body),
        Err(e) => {
            let msg = format!("failed to read args file `{}`: {e}", path.display());
            render_outcome(Err(msg), &[], &[])
        }
    }
}

/// The pipeline of [`run_module`] from the args file's text on, without exiting.
pub fn execute_text<E: Display>(
    spec: &ModuleSpec,
    text: &str,
    body: impl FnOnce(&ModuleArgs) -> Result<ModuleResult, E>,
) -> Outcome {
    CHANGED.with(|c| c.set(false));
    let mut secrets = Vec::new();
    let parsed = args::parse_collecting(text, spec, &mut secrets);
    set_panic_secrets(&secrets);
    let args = match parsed {
        Ok(args) => args,
        Err(e) => return render_outcome(Err(e.to_string()), &[], &secrets),
    };
    let result = match panic::catch_unwind(AssertUnwindSafe(|| body(&args))) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(payload) => Err(format!("module panicked: {}", panic_text(payload.as_ref()))),
    };
    render_outcome(result, args.warnings(), &secrets)
}

/// Turns a result or an error message into the document and exit code: adds `warnings`,
/// scrubs `no_log_values`, exit 1 when the document says `failed`. An error says `changed: true`
/// when [`mark_changed`] was called since the body started.
pub fn render_outcome(
    result: Result<ModuleResult, String>,
    warnings: &[String],
    no_log_values: &[String],
) -> Outcome {
    let mut doc = match result {
        Ok(result) => result.to_json(),
        Err(msg) => failure_json(&msg, marked_changed()),
    };
    if !warnings.is_empty() {
        if let Value::Object(map) = &mut doc {
            let mut all: Vec<Value> = warnings.iter().map(|w| Value::from(w.as_str())).collect();
            if let Some(Value::Array(own)) = map.remove("warnings") {
                all.extend(own);
            }
            map.insert("warnings".into(), Value::Array(all));
        }
    }
    scrub(&mut doc, no_log_values);
    let exit_code = i32::from(doc.get("failed") == Some(&Value::Bool(true)));
    Outcome {
        stdout: format!("{doc}\n"),
        exit_code,
    }
}

thread_local! {
    /// Whether the running module body has begun to change something; see [`mark_changed`].
    static CHANGED: Cell<bool> = const { Cell::new(false) };
}

/// Records that this module run has begun to change something, so that a failure from here on is
/// reported with `changed: true`: Ansible (and the user) must not believe that a run that failed
/// halfway left everything as it was. Drivers call it just before their first mutating step, on
/// the thread that runs the module body ([`execute_text`] clears it before it reads the args).
pub fn mark_changed() {
    CHANGED.with(|c| c.set(true));
}

/// Whether [`mark_changed`] was called since the module body started.
pub fn marked_changed() -> bool {
    CHANGED.with(Cell::get)
}

/// The no_log values the panic hook scrubs; set before the module body runs.
static PANIC_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn set_panic_secrets(secrets: &[String]) {
    let mut guard = PANIC_SECRETS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *guard = secrets.to_vec();
}

/// Replaces the default panic hook, which would print a panic message holding a secret to
/// stderr, with one that prints the message scrubbed (or nothing if the secrets are locked).
pub fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let secrets = match PANIC_SECRETS.try_lock() {
            Ok(guard) => guard.clone(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().clone(),
            Err(TryLockError::WouldBlock) => return,
        };
        let line = panic_hook_line(info.payload(), info.location(), &secrets);
        let _ = writeln!(std::io::stderr(), "{line}");
    }));
}

/// What the panic hook writes to stderr.
pub fn panic_hook_line(
    payload: &(dyn std::any::Any + Send),
    location: Option<&panic::Location<'_>>,
    secrets: &[String],
) -> String {
    let at = location
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    scrub_str(
        &format!("module panicked{at}: {}", panic_text(payload)),
        secrets,
    )
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic payload is not a string"
    }
}
