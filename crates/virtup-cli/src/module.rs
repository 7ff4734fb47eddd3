//! What the module binaries share around `virtup_ops`: the one place check mode is read, and the reporter that keeps Ansible's `changed` honest.

use virtup_ansible::ModuleArgs;
use virtup_ops::{Mode, Reporter};

use crate::cli::progress;

/// The run's mode, from `_ansible_check_mode`; read here and nowhere below the adapters.
pub fn mode(args: &ModuleArgs) -> Mode {
    if args.check_mode() {
        Mode::Check
    } else {
        Mode::Apply
    }
}

/// Forwards an operation's side effects to the module protocol (a failed run after a change still
/// says `changed`) and its progress to the process's progress display.
pub struct ModuleReporter;

impl Reporter for ModuleReporter {
    fn changed(&self) {
        virtup_ansible::mark_changed();
    }
    fn stage(&self, text: &str) {
        progress::stage(text);
    }
    fn note(&self, text: &str) {
        progress::note(text);
    }
}
