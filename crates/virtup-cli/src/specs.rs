//! The option sets of the modules, declared once; `plugins/modules/*.yml` and the roles follow them
//! (`tests/option_lists.rs` fails when they do not).

use virtup_ansible::{ListSplit, ModuleSpec, OptionSpec};

/// States of `virtup_template`.
pub const TEMPLATE_STATES: &[&str] = &["present", "running", "absent"];
/// States of `virtup_instance`.
pub const INSTANCE_STATES: &[&str] = &["running", "present", "stopped", "suspended", "absent"];
pub const IMAGE_FORMATS: &[&str] = &["qcow2", "raw"];
/// `wait_timeout`'s default (see `virtup_ops::context`).
pub const DEFAULT_WAIT_TIMEOUT: i64 = virtup_ops::context::DEFAULT_WAIT_TIMEOUT_SECS as i64;

/// Options both modules share, with the same meaning.
fn common_options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::str("name").required(),
        OptionSpec::str("image_format").choices(IMAGE_FORMATS),
        OptionSpec::int("memory"),
        OptionSpec::int("vcpus"),
        OptionSpec::str("size"),
        OptionSpec::str("graphics"),
        OptionSpec::str("network"),
        OptionSpec::str("dns_domain"),
        OptionSpec::str("user"),
        OptionSpec::str("password").no_log(),
        OptionSpec::str("root_password").no_log(),
        OptionSpec::int("wait_timeout").default_int(DEFAULT_WAIT_TIMEOUT),
        OptionSpec::str("uri"),
        OptionSpec::str("pool"),
    ]
}

pub fn template_spec() -> ModuleSpec {
    let mut options = common_options();
    options.extend([
        OptionSpec::str("state")
            .choices(TEMPLATE_STATES)
            .default("present"),
        OptionSpec::str("os_version"),
        OptionSpec::str("image"),
        OptionSpec::str("checksum"),
        OptionSpec::path("checksum_gpg_key"),
        OptionSpec::str("arch"),
        OptionSpec::str("os_type"),
        OptionSpec::str("os_variant"),
        // virt-up's config writes these as one shell-quoted string; a list is taken as is.
        OptionSpec::list("virt_builder_args").split(ListSplit::Shell),
        OptionSpec::list("virt_customize_args").split(ListSplit::Shell),
        // No `virt_sysprep_args`: virt-sysprep prepares clones, so it is `virtup_instance`'s option.
        OptionSpec::list("virt_install_args").split(ListSplit::Shell),
        OptionSpec::str("revision"),
        // A string, not a `path`: the role makes it absolute, and `$` in it is no variable.
        OptionSpec::str("playbook"),
        OptionSpec::str("hold"),
        OptionSpec::bool("warm").default_bool(false),
    ]);
    ModuleSpec::new("virtup_template", options).mutually_exclusive(&["os_version", "image"])
}

/// `virtup_host`: the hypervisor's pool and network, and whether KVM can run a guest.
pub fn host_spec() -> ModuleSpec {
    ModuleSpec::new(
        "virtup_host",
        vec![
            OptionSpec::str("uri"),
            OptionSpec::str("pool"),
            OptionSpec::path("pool_path").default("/var/lib/libvirt/images"),
            OptionSpec::str("network").default("default"),
            OptionSpec::str("network_bridge").default("virbr0"),
            OptionSpec::str("network_address").default("192.168.122.1"),
            OptionSpec::str("network_netmask").default("255.255.255.0"),
            OptionSpec::str("network_dhcp_start").default("192.168.122.2"),
            OptionSpec::str("network_dhcp_end").default("192.168.122.254"),
            OptionSpec::bool("probe_kvm").default_bool(true),
        ],
    )
}

/// Graphics an instance's domain can have (`virtup_ops::instance::GRAPHICS`); virt-up's `--graphics` offers the same.
pub use virtup_ops::instance::GRAPHICS as INSTANCE_GRAPHICS;

pub fn instance_spec() -> ModuleSpec {
    let mut options = common_options();
    // Anything else would silently become `none` in the domain definition.
    for o in &mut options {
        if o.name() == "graphics" {
            *o = o.choices(INSTANCE_GRAPHICS);
        }
    }
    options.extend([
        OptionSpec::str("template"),
        OptionSpec::str("state")
            .choices(INSTANCE_STATES)
            .default("running"),
        OptionSpec::str("clone")
            .choices(&["linked", "full"])
            .default("linked"),
        OptionSpec::str("customize")
            .choices(&["auto", "sysprep"])
            .default("auto"),
        // No choices: one item may hold several sources (`lease, agent`, `lease agent`), as virt-up's
        // config writes them; `AddressSource::parse_list` checks each, naming the option.
        OptionSpec::list("address_source"),
        // As virt-up's `virt-sysprep-args`: arguments of the virt-sysprep run that prepares the clone.
        OptionSpec::list("virt_sysprep_args").split(ListSplit::Shell),
        OptionSpec::bool("inventory").default_bool(true),
        // Inventory groups besides virtup's own (`web` or `web,db`); the role passes each instance's `groups`.
        OptionSpec::list("groups"),
        OptionSpec::bool("autostart"),
        // An instance virt-up 2.2.0 made becomes virtup's first (`virtup_ops::adopt`); a no-op once it is.
        OptionSpec::bool("adopt").default_bool(false),
        OptionSpec::str("boot")
            .choices(&virtup_ops::instance::Boot::WORDS)
            .default("auto"),
        // Checked as an IPv4 address by `instance::options`, against the network by observe.
        OptionSpec::str("address"),
        OptionSpec::str("address_mode")
            .choices(&["dhcp", "static"])
            .default("dhcp"),
        // A list of dictionaries, checked key by key by `data_disk::parse_list` (naming `disks[N].key`).
        OptionSpec::dicts("disks"),
        // The same for `nic::parse_list` (naming `nics[N].key`); the first NIC is `network`'s.
        OptionSpec::dicts("nics"),
        // A dictionary of NoCloud files, checked by `cloud_init::parse` (naming `cloud_init.key`).
        // Not no_log: scrubbing every string in it would garble all output; the module never
        // returns or prints it.
        OptionSpec::raw("cloud_init"),
    ]);
    ModuleSpec::new("virtup_instance", options)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use virtup_ansible::ModuleArgs;

    use super::*;
    use crate::context::Context;

    /// The shared config layer reads these only where declared: each must be declared by exactly
    /// one of the two modules, so that a misspelt entry fails here.
    #[test]
    fn one_module_only_options_are_declared_by_exactly_one_module() {
        let (t, i) = (template_spec(), instance_spec());
        for option in crate::context::ONE_MODULE_ONLY {
            let declared = [&t, &i]
                .iter()
                .filter(|s| s.option(option).is_some())
                .count();
            assert_eq!(declared, 1, "`{option}` is declared by {declared} modules");
        }
    }

    #[test]
    fn specs_are_well_formed() {
        template_spec().validate().unwrap();
        instance_spec().validate().unwrap();
        host_spec().validate().unwrap();
    }

    /// A valid value for every option of `spec` but those in `leave_out`, as a task would give them.
    fn every_option(spec: &ModuleSpec, leave_out: &[&str]) -> ModuleArgs {
        use virtup_ansible::OptionType;
        let mut task = serde_json::Map::new();
        for o in spec
            .options()
            .iter()
            .filter(|o| !leave_out.contains(&o.name()))
        {
            let value = match (o.name(), o.kind(), o.choices_list()) {
                (_, _, [first, ..]) => json!(first),
                ("memory", ..) => json!(1024),
                ("vcpus", ..) => json!(2),
                (_, OptionType::Int, _) => json!(60),
                (_, OptionType::Bool, _) => json!(true),
                ("address_source", ..) => json!(["lease"]),
                ("groups", ..) => json!(["web"]),
                ("disks", ..) => json!([{"size": "1G", "filesystem": "ext4", "mount": "/srv"}]),
                ("nics", ..) => json!([{"network": "default"}, {"bridge": "br0"}]),
                ("cloud_init", ..) => json!({"user_data": {"runcmd": [["true"]]}}),
                (_, OptionType::List, _) => json!(["--verbose"]),
                (_, OptionType::Path, _) => json!("/var/lib/virtup-test/file"),
                ("uri", ..) => json!("test:///default"),
                ("size", ..) => json!("10G"),
                ("address", ..) => json!("192.168.122.50"),
                ("network_bridge", ..) => json!("virbr9"),
                (name, ..) if name.starts_with("network_") => json!("192.168.123.1"),
                (_, _, _) => json!("t1"),
            };
            task.insert(o.name().to_owned(), value);
        }
        virtup_ansible::parse_args(&serde_json::Value::Object(task).to_string(), spec)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.name()))
    }

    fn context(dir: &tempfile::TempDir) -> Context {
        let paths = virtup_core::Paths::new(
            dir.path().join("etc"),
            dir.path().join("config"),
            dir.path().join("data"),
            "test:///default",
        );
        Context {
            data: virtup_core::DataDir::at(&paths.data_dir),
            paths,
            config: Default::default(),
        }
    }

    /// Declaring an option is the one edit that adds it; this catches the adapter that forgets to
    /// read it (the option would be accepted and do nothing), and `ModuleArgs::get` panics on a
    /// read of an option no spec declares. The docs, the roles' pass-through tasks and their argument
    /// specs are held to these specs by tests/option_lists.rs.
    #[test]
    fn every_declared_option_is_read_by_its_module() {
        let dir = tempfile::TempDir::new().unwrap();
        let ctx = context(&dir);
        // `os_version` and `image` exclude each other: one task has each, and an option is read if
        // either task reads it.
        let template: Vec<Vec<&str>> = [["image"], ["os_version"]]
            .iter()
            .map(|leave_out| {
                let args = every_option(&template_spec(), leave_out);
                crate::template::options(&args).unwrap();
                args.unread()
                    .into_iter()
                    .filter(|o| !leave_out.contains(o))
                    .collect()
            })
            .collect();
        let unread: Vec<&&str> = template[0]
            .iter()
            .filter(|o| template[1].contains(o))
            .collect();
        assert!(unread.is_empty(), "virtup_template never reads {unread:?}");

        let args = every_option(&instance_spec(), &[]);
        crate::instance::options(&args).unwrap();
        assert_eq!(
            args.unread(),
            Vec::<&str>::new(),
            "virtup_instance never reads these"
        );

        let args = every_option(&host_spec(), &[]);
        crate::host::resolve(&args, &ctx).unwrap();
        assert_eq!(
            args.unread(),
            Vec::<&str>::new(),
            "virtup_host never reads these"
        );
    }
}
