//! Module options turned into a config layer and the shared values every module run reads; the run's context itself is `virtup_ops::context`.

use std::time::Duration;

use anyhow::Result;
use virtup_ansible::ModuleArgs;
use virtup_core::config::{AddressSource, ImageFormat};
use virtup_core::{validate, Fields};
pub use virtup_ops::context::{
    uri, validate_fields, Context, Waited, DEFAULT_WAIT_TIMEOUT_SECS, LOCK_TIMEOUT,
    SHORT_LOCK_TIMEOUT,
};

/// Config-layer options that only one of `virtup_template` and `virtup_instance` declares; the other
/// reads them as unset. Any other option read below must be declared by both, or the read panics.
pub const ONE_MODULE_ONLY: &[&str] = &[
    "os_version",
    "image",
    "checksum",
    "arch",
    "os_type",
    "os_variant",
    "virt_builder_args",
    "virt_customize_args",
    "virt_install_args",
    "virt_sysprep_args",
    "address_source",
];

/// The module's options as the top config layer, each validated with the option's name in the error.
pub fn module_layer(args: &ModuleArgs) -> Result<Fields> {
    let read = |k: &str| !ONE_MODULE_ONLY.contains(&k) || args.declares(k);
    let text = |k: &str| read(k).then(|| args.str(k)).flatten().map(str::to_owned);
    let list = |k: &str| read(k).then(|| args.list(k)).flatten();
    let mut f = Fields {
        pool: text("pool"),
        username: text("user"),
        dns_domain: text("dns_domain"),
        graphics: text("graphics"),
        network: text("network"),
        uri: text("uri"),
        os_version: text("os_version"),
        image: text("image"),
        checksum: text("checksum"),
        arch: text("arch"),
        os_type: text("os_type"),
        os_variant: text("os_variant"),
        size: text("size"),
        virt_builder_args: list("virt_builder_args"),
        virt_customize_args: list("virt_customize_args"),
        virt_sysprep_args: list("virt_sysprep_args"),
        virt_install_args: list("virt_install_args"),
        ..Fields::default()
    };
    if let Some(memory) = args.int("memory") {
        let memory = u64::try_from(memory).map_err(|_| {
            validate::ValidationError::new("memory", "must be a positive number of MiB")
        })?;
        f.memory = Some(validate::memory_mib("memory", memory)?);
    }
    if let Some(vcpus) = args.int("vcpus") {
        let vcpus = u64::try_from(vcpus)
            .map_err(|_| validate::ValidationError::new("vcpus", "must be a positive number"))?;
        f.vcpus = Some(validate::vcpus("vcpus", vcpus)?);
    }
    if let Some(format) = args.str("image_format") {
        f.image_format = Some(ImageFormat::parse("image_format", format)?);
    }
    if let Some(sources) = list("address_source") {
        f.address_source = Some(AddressSource::parse_list(
            "address_source",
            &sources.join(","),
        )?);
    }
    Ok(f)
}

/// A positive `wait_timeout` as a duration.
pub fn wait_timeout(args: &ModuleArgs) -> Result<Duration> {
    match args.int("wait_timeout") {
        Some(s) => Ok(Duration::from_secs(validate::wait_timeout_secs(
            "wait_timeout",
            s,
        )?)),
        None => Ok(Duration::from_secs(DEFAULT_WAIT_TIMEOUT_SECS)),
    }
}

/// The waits of a run as the modules return them (`waited`), in tenths of a second.
pub fn waited_json(waited: &Waited) -> serde_json::Value {
    let secs = |d: Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
    serde_json::json!({"lock_seconds": secs(waited.lock), "hold_seconds": secs(waited.hold)})
}
