//! What every module run starts from: paths, config, the data dir, and module options turned into a config layer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use virtup_ansible::ModuleArgs;
use virtup_core::config::{AddressSource, ImageFormat};
use virtup_core::{validate, Config, DataDir, Fields, Paths};

/// How long a run waits for another run holding the same lock (a template build takes minutes under TCG).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(3600);
/// Short read-modify-write of shared files (macaddrs.json, known_hosts).
pub const SHORT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths, config and the (possibly not yet existing) data dir of one run. Creating it has no side effect.
pub struct Context {
    pub paths: Paths,
    pub config: Config,
    /// `DataDir::at`: no IO. `open_data_dir` creates it when a real run is about to change something.
    pub data: DataDir,
}

impl Context {
    pub fn load() -> Result<Context> {
        let paths = Paths::from_env()?;
        let config = Config::load(&paths)?;
        let data = DataDir::at(&paths.data_dir);
        Ok(Context {
            paths,
            config,
            data,
        })
    }

    /// Removes what killed runs left in an existing data dir (temp files, scratch dirs), also when this
    /// run has nothing to change: after a kill the next run often finds its work done. Real runs only.
    pub fn tidy(&self) -> Result<()> {
        if self.paths.data_dir.is_dir() {
            self.data.sweep().with_context(|| {
                format!(
                    "failed to tidy data dir `{}`",
                    self.paths.data_dir.display()
                )
            })?;
        }
        Ok(())
    }

    /// The data dir, created (0700) on first use; only real runs call this.
    pub fn open_data_dir(&self) -> Result<DataDir> {
        DataDir::open(&self.paths.data_dir).with_context(|| {
            format!(
                "failed to open data dir `{}`",
                self.paths.data_dir.display()
            )
        })
    }

    /// The directory of a domain's generated secrets (0700; files in it 0600).
    pub fn secrets_dir(&self, domain: &str) -> PathBuf {
        self.paths.data_dir.join("secrets").join(domain)
    }
}

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

/// Validates the merged settings that come from config files too, naming the option.
pub fn validate_fields(f: &Fields) -> Result<()> {
    if let Some(size) = &f.size {
        validate::parse_size("size", size)?;
    }
    if let Some(user) = &f.username {
        validate::user_name("user", user)?;
    }
    if let Some(domain) = &f.dns_domain {
        validate::dns_domain("dns_domain", domain)?;
    }
    for (option, value) in [("pool", &f.pool), ("network", &f.network)] {
        if let Some(v) = value {
            validate::name(option, v)?;
        }
    }
    for (option, value) in [
        ("os_variant", &f.os_variant),
        ("os_type", &f.os_type),
        ("arch", &f.arch),
        ("graphics", &f.graphics),
    ] {
        if let Some(v) = value {
            validate::tool_word(option, v)?;
        }
    }
    Ok(())
}

/// The libvirt URI: option or config, else `LIBVIRT_DEFAULT_URI`, else `qemu:///system`.
pub fn uri(fields: &Fields, paths: &Paths) -> String {
    fields
        .uri
        .clone()
        .unwrap_or_else(|| paths.libvirt_uri.clone())
}

/// A positive `wait_timeout` as a duration.
pub fn wait_timeout(args: &ModuleArgs) -> Result<Duration> {
    match args.int("wait_timeout") {
        Some(s) => Ok(Duration::from_secs(validate::wait_timeout_secs(
            "wait_timeout",
            s,
        )?)),
        None => Ok(Duration::from_secs(
            crate::specs::DEFAULT_WAIT_TIMEOUT as u64,
        )),
    }
}

/// How long this call waited for other runs: the collisions the proving ground reports.
#[derive(Default)]
pub struct Waited {
    pub lock: Duration,
    pub hold: Duration,
}

impl Waited {
    pub fn to_json(&self) -> serde_json::Value {
        let secs = |d: Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
        serde_json::json!({"lock_seconds": secs(self.lock), "hold_seconds": secs(self.hold)})
    }
}
