//! The `virtup_instance` Ansible module: clones and manages instances (see plugins/modules/virtup_instance.yml).

fn main() {
    virtup_ansible::run_module(&virtup_cli::specs::instance_spec(), |args| {
        virtup_cli::instance::run(args).map_err(|e| format!("{e:#}"))
    })
}
