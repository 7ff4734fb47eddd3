//! Fuzz target: bytes as a module args file, validated against the real specs of virtup_template, virtup_instance and virtup_host, then resolved into each module's typed request.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use virtup_ansible::{execute_text, parse_args, render_outcome, ModuleResult, ModuleSpec};
use virtup_cli::{host, instance, specs, template};
use virtup_fuzz::{assert_no_secret, given_secrets, CONTEXT};

#[derive(Clone, Copy)]
enum Module {
    Template,
    Instance,
    Host,
}

static SPECS: LazyLock<[(Module, ModuleSpec); 3]> = LazyLock::new(|| {
    [
        (Module::Template, specs::template_spec()),
        (Module::Instance, specs::instance_spec()),
        (Module::Host, specs::host_spec()),
    ]
});

const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzz fuzz@virtup";

/// The drivers' option resolution, stopped before anything touches libvirt or the disk.
fn resolve(module: Module, args: &virtup_ansible::ModuleArgs) -> Result<(), String> {
    let ctx = &*CONTEXT;
    let result = match module {
        Module::Template => {
            template::resolve(args, ctx, |_user| Ok(PUBLIC_KEY.to_string())).map(drop)
        }
        Module::Instance => instance::resolve(args, ctx).map(drop),
        Module::Host => host::check_options(args, ctx),
    };
    result.map_err(|e| format!("{e:#}"))
}

fuzz_target!(|data: &[u8]| {
    // The binaries read the args file with read_to_string: non-UTF-8 never gets further.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (module, spec) in SPECS.iter() {
        let mut secrets = given_secrets(text, spec);
        let outcome = match parse_args(text, spec) {
            Ok(args) => {
                secrets.extend(args.no_log_values().iter().cloned());
                let result = resolve(*module, &args).map(|()| ModuleResult::new(false));
                render_outcome(result, args.warnings(), args.no_log_values())
            }
            // The error path of the runner, which scrubs what it saw before failing.
            Err(e) => {
                let _ = e.to_string();
                execute_text(spec, text, |_| Ok::<_, String>(ModuleResult::new(false)))
            }
        };
        assert_no_secret(&outcome.stdout, &secrets);
    }
});
