//! The `virtup_template` Ansible module: builds templates (see plugins/modules/virtup_template.yml).

fn main() {
    virtup_ansible::run_module(&virtup_cli::specs::template_spec(), |args| {
        virtup_cli::template::run(args).map_err(|e| format!("{e:#}"))
    })
}
