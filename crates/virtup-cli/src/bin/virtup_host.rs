//! The `virtup_host` Ansible module: prepares a hypervisor's pool and network and checks it can run guests (see plugins/modules/virtup_host.yml).

fn main() {
    virtup_ansible::run_module(&virtup_cli::specs::host_spec(), |args| {
        virtup_cli::host::run(args).map_err(|e| format!("{e:#}"))
    })
}
