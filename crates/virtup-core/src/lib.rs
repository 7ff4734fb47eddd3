//! Pure core of virtup: typed options, the virt-up config and data-dir models, digests and plans.
//!
//! Map:
//! - [`paths`]: where config and data live (`Paths`), from the environment;
//! - [`config`]: `settings.cfg` + `templates.d/*.cfg`, read like virt-up 2.2.0 (`Config`, `Fields`);
//! - [`datadir`]: the data dir, atomic writes, strict JSON reads, cross-process locks (`DataDir`);
//! - [`instance`]: the instance model and its pure plan;
//! - [`data_disk`]: an instance's data disks (`disks`), checked and named;
//! - [`instance_meta`]: `instance/<name>.json` (`InstanceMeta`);
//! - [`macaddrs`]: stable MACs per name (`macaddrs.json`);
//! - [`keys`]: user and host SSH keys, random passwords, secret files;
//! - [`known_hosts`]: virtup's pinned host keys;
//! - [`ownership`]: the ledger of volumes virtup made, proven by record and key, never by name;
//! - [`validate`]: checks of names, sizes, memory, vCPUs, users;
//! - [`digest`]: `InputDigest` for template input digests;
//! - [`hold`]: customization holds on templates a playbook run is customizing;
//! - [`template`]: the template model and its pure plan (generations, dependents);
//! - [`vocab`]: one type per shared concept (`ImageFormat`, `AddressSource`, `VirtType`);
//! - [`virt_up_record`]: virt-up 2.2.0's own instance record, read in full only to adopt it.
//!
//! IO in this crate is limited to the data and config dirs; libvirt, guests and
//! subprocesses live in other crates.

pub mod cloud_init;
pub mod config;
pub mod data_disk;
pub mod datadir;
pub mod digest;
pub mod hold;
pub mod instance;
pub mod instance_meta;
pub mod keys;
pub mod known_hosts;
pub mod macaddrs;
pub mod nic;
pub mod ownership;
pub mod paths;
pub mod template;
pub mod validate;
pub mod virt_up_record;
pub mod vocab;

pub use config::{AddressSource, Config, ConfigError, ConfigWarning, Fields, ImageFormat};
pub use datadir::{DataDir, DataError, LockGuard};
pub use digest::InputDigest;
pub use instance_meta::{InstanceMeta, Reservation};
pub use keys::{
    ensure_user_key, generate_host_keys, load_host_keys, load_user_key, random_password,
    read_secret, remove_host_keys, store_secret, HostKeys, UserKey,
};
pub use known_hosts::KnownHosts;
pub use macaddrs::{ensure_mac, MacAddrs};
pub use paths::{Paths, PathsError};
pub use validate::ValidationError;
pub use vocab::{VirtType, VIRT_TYPE_ENV};

/// Any error of this crate, for callers that handle them alike.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Paths(#[from] PathsError),
}
